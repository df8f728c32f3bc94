//! Integrity against a pusher with a write grant who tries to move a
//! protected branch without an allowed Commit, against a real
//! `dolt sql-server` behind doltgate:
//!
//! - a table file that files other bytes under the address of `main`'s head
//!   commit is refused when uploaded (422 naming the address) and never
//!   reaches Dolt's store; registering it is refused too;
//! - upload locations are refused for the chunk journal's name, for ids that
//!   are not 20 bytes and for suffixes Dolt does not write;
//! - a file that reached the store around doltgate cannot be registered
//!   through it, by `AddTableFiles` or a Commit, while honest pushes (archives
//!   and table files) go through and files the store lists stay registrable;
//! - `shop/main`, `SHOP`, `shop@main` and `shop/` all reach `shop`'s store on
//!   Dolt: a push through any of them is refused, naming `shop`, so a rule
//!   that names `shop` cannot be stepped around by spelling;
//! - a pushed `MAIN` (which Dolt's case-insensitive lookups would resolve in
//!   place of `main`) and names Dolt would not create are refused;
//! - a maintainer who may only fast-forward `main` cannot `--force` an
//!   unchanged head over the server's uncommitted changes, while a plain
//!   push over a clean working set goes through;
//! - a crafted commit whose stored closure claims `main`'s head as an
//!   ancestor, though its parents fork below it, is refused for its lineage,
//!   as are commits whose height or closure differ from what Dolt would write
//!   on any branch; refs that point at the wrong kind of object (a branch at
//!   a root value, a tag at a commit) are refused.
//!
//! This gateway has no shared URL key, so it is the only replica, and its own
//! record of verified uploads is the whole truth.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::support::*;
use base64::Engine;
use doltgate::remotesapi::proto::chunk_store_service_client::ChunkStoreServiceClient;
use doltgate::remotesapi::proto::*;
use doltgate::storage::ancestry::closure_keys_from;
use doltgate::storage::message::{ClosureKey, Commit, RootValue, Table};
use doltgate::storage::refs::read_refs;
use doltgate::storage::source::get_one;
use doltgate::storage::{build, Address, DirectorySource};
use sha2::{Digest, Sha512};
use tonic::transport::Channel;
use tonic::{Code, Request};

pub(crate) const ATTACKER: (&str, &str) = ("bob", "bobs-pass-1");
/// The one user `protect-main` lets fast-forward `main`, and nothing more.
pub(crate) const MAINTAINER: (&str, &str) = ("mia", "mias-pass-1");

pub(crate) struct Setup {
    pub(crate) env: DoltEnv,
    pub(crate) server: DoltServer,
    pub(crate) gateway: Doltgate,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_config("")
    }

    /// With `extra` appended to the gateway's configuration.
    pub(crate) fn with_config(extra: &str) -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        env.seed_items_database(&data.join("shop"));
        let (user, password) = ATTACKER;
        let (maintainer, maintainer_password) = MAINTAINER;
        let users = format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; CREATE USER '{maintainer}'@'%' IDENTIFIED BY '{maintainer_password}';"
        );
        env.ok(&data, &["sql", "-q", &users]);
        let server = DoltServer::start(&env, &data);
        let config = env.path().join("doltgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"{cluster}
[auth]

[[auth.grants]]
databases = ["*"]
users = ["{user}", "{maintainer}"]
permission = "write"

[[auth.push_rules]]
name = "protect-main"
databases = ["shop"]
branches = ["main"]
users = ["{maintainer}"]
allow = ["fast_forward"]
{extra}
"#,
                cluster = service_cluster_config(&server),
            ),
        )
        .unwrap();
        let gateway = Doltgate::start_with_config_env(env.path(), &config, &[("SERVICE_PASSWORD", PASSWORD)]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Setup { env, server, gateway, runtime }
    }

    fn client(&self) -> ChunkStoreServiceClient<Channel> {
        let endpoint = format!("http://127.0.0.1:{}", self.gateway.port);
        let channel = self.runtime.block_on(Channel::from_shared(endpoint).unwrap().connect()).unwrap();
        ChunkStoreServiceClient::new(channel).max_decoding_message_size(256 << 20)
    }

    pub(crate) fn noms(&self) -> PathBuf {
        self.server.data_dir.join("shop/.dolt/noms")
    }

    pub(crate) fn main_head(&self) -> String {
        let out = self.server.sql(&self.env, "SELECT hash FROM shop.dolt_branches WHERE name = 'main'");
        out.lines().nth(1).expect("a main branch").trim().to_owned()
    }

    fn upload_locations(&self, details: Vec<TableFileDetails>) -> Result<GetUploadLocsResponse, tonic::Status> {
        let request =
            GetUploadLocsRequest { repo_path: "shop".into(), table_file_details: details, ..Default::default() };
        self.runtime.block_on(self.client().get_upload_locations(as_attacker(request))).map(|r| r.into_inner())
    }

    fn add_table_files(&self, files: Vec<ChunkTableInfo>) -> Result<AddTableFilesResponse, tonic::Status> {
        let request = AddTableFilesRequest {
            repo_path: "shop".into(),
            client_repo_format: format(),
            chunk_table_info: files,
            ..Default::default()
        };
        self.runtime.block_on(self.client().add_table_files(as_attacker(request))).map(|r| r.into_inner())
    }
}

fn as_attacker<T>(message: T) -> Request<T> {
    as_user(ATTACKER, message)
}

fn as_user<T>((user, password): (&str, &str), message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
    request.metadata_mut().insert("authorization", value.parse().unwrap());
    request
}

fn format() -> Option<ClientRepoFormat> {
    Some(ClientRepoFormat { nbf_version: "__DOLT__".into(), nbs_version: "5".into() })
}

/// A classic table file whose index files `bytes` under `addresses` (one
/// record each), named the way Dolt names table files: the first 20 bytes of
/// the SHA-512 of the address suffixes in record order.
fn table_file(records: &[(Address, &[u8])]) -> (Vec<u8>, Address) {
    let mut file = Vec::new();
    let mut lengths = Vec::new();
    for (_, bytes) in records {
        let mut record = snap::raw::Encoder::new().compress_vec(bytes).unwrap();
        record.extend_from_slice(&crc32c::crc32c(&record).to_be_bytes());
        lengths.push(record.len() as u32);
        file.extend_from_slice(&record);
    }
    let mut tuples: Vec<(u64, u32)> = records.iter().enumerate().map(|(i, (a, _))| (a.prefix(), i as u32)).collect();
    tuples.sort();
    for (prefix, ordinal) in tuples {
        file.extend_from_slice(&prefix.to_be_bytes());
        file.extend_from_slice(&ordinal.to_be_bytes());
    }
    lengths.iter().for_each(|length| file.extend_from_slice(&length.to_be_bytes()));
    let suffixes: Vec<u8> = records.iter().flat_map(|(a, _)| a.suffix().to_vec()).collect();
    file.extend_from_slice(&suffixes);
    file.extend_from_slice(&(records.len() as u32).to_be_bytes());
    let uncompressed: u64 = records.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    file.extend_from_slice(&uncompressed.to_be_bytes());
    file.extend_from_slice(&[0xff, 0xb5, 0xd8, 0xc2, 0x24, 0x63, 0xee, 0x50]);
    let name = Address::from_slice(&Sha512::digest(&suffixes)[..20]).unwrap();
    (file, name)
}

fn details(name: &Address, file: &[u8], chunks: u64) -> TableFileDetails {
    TableFileDetails {
        id: name.as_bytes().to_vec().into(),
        content_length: file.len() as u64,
        num_chunks: chunks,
        suffix: String::new(),
        ..Default::default()
    }
}

/// A PUT over plain HTTP/1.1, as Dolt's client sends one: (status, body).
fn http_put(url: &str, body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

fn upload_url(response: &GetUploadLocsResponse) -> String {
    match &response.locs[0].location {
        Some(upload_loc::Location::HttpPost(post)) => post.url.clone(),
        None => panic!("no upload location in {response:?}"),
    }
}

pub(crate) fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(needle), "no {needle:?} in {:?}", status.message());
        }
        Ok(answer) => panic!("expected {code:?} ({needle}), got {answer:?}"),
    }
}

#[test]
fn a_forged_chunk_never_reaches_the_store() {
    let s = Setup::new();
    let head_text = s.main_head();
    let head: Address = head_text.parse().unwrap();
    let forged = b"\x1b\x00\x00\x10not the commit main points at".as_slice();
    let (file, name) = table_file(&[(head, forged)]);

    let locations = s.upload_locations(vec![details(&name, &file, 1)]).expect("upload location for a fresh name");
    let (status, body) = http_put(&upload_url(&locations), &file);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&head_text) && body.contains(&name.to_string()), "names the file and the address: {body}");
    assert!(!s.noms().join(name.to_string()).exists(), "the forged file is not in Dolt's store");

    refused(
        s.add_table_files(vec![ChunkTableInfo { hash: name.as_bytes().to_vec().into(), chunk_count: 1 }]),
        Code::FailedPrecondition,
        "not verified",
    );
    assert_eq!(s.main_head(), head_text, "main did not move");
    let clone = s.env.path().join("fresh-clone");
    let (user, password) = ATTACKER;
    let url = format!("http://127.0.0.1:{}/shop", s.gateway.port);
    s.env.ok_with(
        s.env.path(),
        &["clone", "--user", user, &url, clone.to_str().unwrap()],
        &[("DOLT_REMOTE_PASSWORD", password)],
    );
    assert_eq!(s.env.log_hashes(&clone, "main")[0], head_text, "a fresh clone sees the real history");
}

#[test]
fn upload_locations_only_for_names_dolt_could_store() {
    let s = Setup::new();
    let file = b"irrelevant".as_slice();
    let journal = Address([0xff; 20]);
    refused(s.upload_locations(vec![details(&journal, file, 1)]), Code::InvalidArgument, "chunk journal");
    let mut short = details(&Address::of(b"x"), file, 1);
    short.id.truncate(19);
    refused(s.upload_locations(vec![short]), Code::InvalidArgument, "19 bytes");
    let mut odd_suffix = details(&Address::of(b"x"), file, 1);
    odd_suffix.suffix = ".tmp".into();
    refused(s.upload_locations(vec![odd_suffix]), Code::InvalidArgument, "suffix");
    #[allow(deprecated)]
    let legacy = GetUploadLocsRequest {
        repo_path: "shop".into(),
        table_file_hashes: vec![journal.as_bytes().to_vec().into()],
        ..Default::default()
    };
    refused(
        s.runtime.block_on(s.client().get_upload_locations(as_attacker(legacy))),
        Code::InvalidArgument,
        "chunk journal",
    );
    // The server is still there, and its journal untouched by any of it.
    assert!(s.upload_locations(vec![details(&Address::of(b"x"), file, 1)]).is_ok());
}

/// `[[uploads.databases]]`: a declared size over the database's limit is
/// refused at `GetUploadLocations`, a body that outgrows it on the PUT, and a
/// real push that needs a bigger file fails, naming the setting.
#[test]
fn a_database_upload_limit_binds_declared_and_actual_sizes() {
    let s = Setup::with_config("[[uploads.databases]]\ndatabases = [\"SHOP\"]\nmax_file_bytes = 4096\n");
    let payload: Vec<u8> = (0..100u32).flat_map(|i| Sha512::digest(i.to_le_bytes())).collect();
    let chunk = [b"\x1b\x00\x5d\xc0".as_slice(), &payload].concat();
    let (file, name) = table_file(&[(Address::of(&chunk), &chunk)]);
    assert!(file.len() > 4096, "the file is {} bytes", file.len());
    let setting = "uploads.databases[0].max_file_bytes (4096 bytes) for database \"shop\"";
    refused(s.upload_locations(vec![details(&name, &file, 1)]), Code::InvalidArgument, setting);

    // Declared small, sent big: the PUT is held to the limit all the same.
    let mut understated = details(&name, &file, 1);
    understated.content_length = 100;
    let locations = s.upload_locations(vec![understated]).expect("a declared size within the limit");
    let (status, body) = http_put(&upload_url(&locations), &file);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(setting), "{body}");
    assert!(!s.noms().join(name.to_string()).exists(), "nothing reached the store");

    // A real push of more than the limit.
    let head = s.main_head();
    let (user, password) = MAINTAINER;
    let clone = s.env.path().join("limited-clone");
    let url = format!("http://127.0.0.1:{}/shop", s.gateway.port);
    let login = [("DOLT_REMOTE_PASSWORD", password)];
    s.env.ok_with(s.env.path(), &["clone", "--user", user, &url, clone.to_str().unwrap()], &login);
    let rows = "INSERT INTO items WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < 2100) \
                SELECT i, SHA2(i, 256) FROM n";
    s.env.ok(&clone, &["sql", "-q", rows]);
    s.env.ok(&clone, &["commit", "-am", "many rows"]);
    let out = s.env.run(&clone, &["push", "--user", user, "origin", "main"], &login);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("max_file_bytes"), "the push fails naming the limit:\n{text}");
    assert_eq!(s.main_head(), head, "main did not move");
}

#[test]
fn only_verified_or_listed_files_can_be_registered() {
    let s = Setup::new();
    // An honest file that reached the store around doltgate.
    let chunk = b"\x1b\x00\x00\x08an honest chunk".as_slice();
    let (file, name) = table_file(&[(Address::of(chunk), chunk)]);
    std::fs::write(s.noms().join(name.to_string()), &file).unwrap();
    let info = ChunkTableInfo { hash: name.as_bytes().to_vec().into(), chunk_count: 1 };
    refused(s.add_table_files(vec![info.clone()]), Code::FailedPrecondition, &name.to_string());
    let root = s
        .runtime
        .block_on(s.client().root(as_attacker(RootRequest { repo_path: "shop".into(), ..Default::default() })));
    let root = root.unwrap().into_inner().root_hash;
    let commit = CommitRequest {
        repo_path: "shop".into(),
        current: root.clone(),
        last: root,
        chunk_table_info: vec![info],
        client_repo_format: format(),
        ..Default::default()
    };
    refused(s.runtime.block_on(s.client().commit(as_attacker(commit))), Code::FailedPrecondition, "not verified");

    // Honest pushes pass: every file they upload checks out.
    let (user, password) = ATTACKER;
    let repo = s.env.path().join("bob");
    let url = format!("http://127.0.0.1:{}/shop", s.gateway.port);
    let creds = [("DOLT_REMOTE_PASSWORD", password)];
    s.env.ok_with(s.env.path(), &["clone", "--user", user, &url, repo.to_str().unwrap()], &creds);
    s.env.ok(&repo, &["checkout", "-b", "feature/x"]);
    s.env.ok(&repo, &["sql", "-q", "INSERT INTO items SELECT 1000 + id, name FROM items"]);
    s.env.ok(&repo, &["commit", "-Am", "more items"]);
    s.env.ok_with(&repo, &["push", "--user", user, "origin", "feature/x"], &creds);
    let pushed = s.env.log_hashes(&repo, "feature/x")[0].clone();
    let on_server = s.server.sql(&s.env, "SELECT hash FROM shop.dolt_branches WHERE name = 'feature/x'");
    assert!(on_server.contains(&pushed), "{on_server}");

    // A file the store lists may be named again (a retried push does).
    let listed = s.runtime.block_on(
        s.client()
            .list_table_files(as_attacker(ListTableFilesRequest { repo_path: "shop".into(), ..Default::default() })),
    );
    let listed = listed.unwrap().into_inner();
    let again =
        listed.table_file_info.iter().find(|f| f.file_id != "v".repeat(32)).expect("the push's files are listed");
    let id: Address = again.file_id.parse().unwrap();
    let added =
        s.add_table_files(vec![ChunkTableInfo { hash: id.as_bytes().to_vec().into(), chunk_count: again.num_chunks }]);
    assert!(added.expect("a listed file registers").success);
}

impl Setup {
    fn clone_as_attacker(&self, dir: &str) -> PathBuf {
        let (user, password) = ATTACKER;
        let repo = self.env.path().join(dir);
        let url = format!("http://127.0.0.1:{}/shop", self.gateway.port);
        self.env.ok_with(
            self.env.path(),
            &["clone", "--user", user, &url, repo.to_str().unwrap()],
            &[("DOLT_REMOTE_PASSWORD", password)],
        );
        repo
    }

    fn push_as_attacker(&self, repo: &std::path::Path, args: &[&str]) -> (bool, String) {
        self.push_as(ATTACKER, repo, args)
    }

    fn push_as(&self, (user, password): (&str, &str), repo: &std::path::Path, args: &[&str]) -> (bool, String) {
        let mut all = vec!["push", "--user", user];
        all.extend_from_slice(args);
        let out = self.env.run(repo, &all, &[("DOLT_REMOTE_PASSWORD", password)]);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

#[test]
fn every_spelling_of_a_database_is_judged_as_the_database() {
    let s = Setup::new();
    let head = s.main_head();
    let repo = s.clone_as_attacker("spellings");
    s.env.ok(&repo, &["sql", "-q", "INSERT INTO items VALUES (77, 'smuggled')"]);
    s.env.ok(&repo, &["commit", "-Am", "onto main by another name"]);
    let (ok, text) = s.push_as_attacker(&repo, &["origin", "main"]);
    assert!(!ok && text.contains("protect-main"), "the rule holds under the plain name:\n{text}");
    for (remote, spelling) in [("upper", "SHOP"), ("revision", "shop/main"), ("at", "shop@main")] {
        let url = format!("http://127.0.0.1:{}/{spelling}", s.gateway.port);
        s.env.ok(&repo, &["remote", "add", remote, &url]);
        let (ok, text) = s.push_as_attacker(&repo, &[remote, "main"]);
        assert!(!ok, "push through {spelling:?} must fail:\n{text}");
        assert!(
            text.contains("InvalidArgument") && text.contains("\"shop\""),
            "{spelling:?}: names the database:\n{text}"
        );
        assert_eq!(s.main_head(), head, "main did not move through {spelling:?}");
    }
    // Every write RPC, by every spelling, whatever the client's URL handling.
    for spelling in ["shop/", "Shop", "shop@main", "SHOP/feature"] {
        let request = GetUploadLocsRequest { repo_path: spelling.into(), ..Default::default() };
        let result = s.runtime.block_on(s.client().get_upload_locations(as_attacker(request)));
        refused(result, Code::InvalidArgument, "names database \"shop\"");
    }
    // Reads by another spelling are judged as shop too, and still work.
    let root = s
        .runtime
        .block_on(s.client().root(as_attacker(RootRequest { repo_path: "SHOP/main".into(), ..Default::default() })));
    assert!(root.is_ok(), "{root:?}");
}

#[test]
fn a_ref_that_folds_onto_another_or_breaks_dolts_naming_is_refused() {
    let s = Setup::new();
    let head = s.main_head();
    let repo = s.clone_as_attacker("case");
    s.env.ok(&repo, &["sql", "-q", "INSERT INTO items VALUES (78, 'shadow')"]);
    s.env.ok(&repo, &["commit", "-Am", "a main by another case"]);
    let (ok, text) = s.push_as_attacker(&repo, &["origin", "main:MAIN"]);
    assert!(!ok, "MAIN must not be created beside main:\n{text}");
    assert!(text.contains("InvalidArgument") && text.contains("only in case"), "{text}");
    let (ok, text) = s.push_as_attacker(&repo, &["origin", "main:Head"]);
    assert!(!ok && text.contains("not a name Dolt allows"), "a branch Dolt would read as HEAD:\n{text}");
    let branches = s.server.sql(&s.env, "SELECT name FROM shop.dolt_branches ORDER BY name");
    assert!(!branches.contains("MAIN") && !branches.contains("Head"), "{branches}");
    assert_eq!(s.main_head(), head);
    // A branch of its own is fine, in any case.
    let (ok, text) = s.push_as_attacker(&repo, &["origin", "main:Feature/Mine"]);
    assert!(ok, "{text}");
}

#[test]
fn uncommitted_changes_on_the_server_need_force_to_discard() {
    let s = Setup::new();
    let repo = s.clone_as_attacker("working-set");
    // Someone works on main over SQL and has not committed yet.
    s.server.sql(&s.env, "INSERT INTO shop.items VALUES (500, 'uncommitted work')");
    let dirty = || s.server.sql(&s.env, "SELECT name FROM shop.items WHERE id = 500");
    assert!(dirty().contains("uncommitted work"));
    // The maintainer's head equals the server's: --force would only reset the working set.
    let (ok, text) = s.push_as(MAINTAINER, &repo, &["--force", "origin", "main"]);
    assert!(!ok, "a fast-forward-only maintainer discarded uncommitted work:\n{text}");
    assert!(text.contains("discard the uncommitted changes of workingSets/heads/main"), "{text}");
    assert!(dirty().contains("uncommitted work"), "the work is still there");
    // Once it is committed, a plain fast-forward goes through and moves the working set with it.
    s.server.sql(&s.env, "USE shop; CALL dolt_commit('-Am', 'the SQL work')");
    s.env.ok_with(
        &repo,
        &["pull", "--user", MAINTAINER.0, "origin", "main"],
        &[("DOLT_REMOTE_PASSWORD", MAINTAINER.1)],
    );
    s.env.ok(&repo, &["sql", "-q", "INSERT INTO items VALUES (501, 'on top')"]);
    s.env.ok(&repo, &["commit", "-Am", "on top"]);
    let (ok, text) = s.push_as(MAINTAINER, &repo, &["origin", "main"]);
    assert!(ok, "{text}");
    assert_eq!(s.main_head(), s.env.log_hashes(&repo, "main")[0]);
}

/// Chunks a pusher crafts against the store as it is now: its current root
/// (as Dolt answers `Root`), its refs, and `main`'s head and that head's parent.
pub(crate) struct Forgery {
    pub(crate) last_root: Vec<u8>,
    pub(crate) refs: Vec<(String, Address)>,
    pub(crate) head: Address,
    pub(crate) head_commit: Commit,
    pub(crate) parent: Address,
    pub(crate) parent_commit: Commit,
}

impl Setup {
    pub(crate) fn forgery(&self) -> Forgery {
        let root = self
            .runtime
            .block_on(self.client().root(as_attacker(RootRequest { repo_path: "shop".into(), ..Default::default() })));
        let last_root: Vec<u8> = root.unwrap().into_inner().root_hash.into();
        let store = DirectorySource::open(&self.noms()).unwrap();
        assert_eq!(store.root().as_bytes().as_slice(), &last_root[..], "the store on disk is the one Dolt serves");
        let refs = self.runtime.block_on(read_refs(&store, &store.root())).unwrap();
        let head = refs.get("refs/heads/main").expect("main");
        let commit = |address: &Address| {
            let chunk = self.runtime.block_on(get_one(&store, address)).unwrap();
            Commit::parse(address, &chunk).unwrap()
        };
        let head_commit = commit(&head);
        let parent = head_commit.parents[0];
        let parent_commit = commit(&parent);
        let refs = refs.refs.into_iter().map(|r| (r.name, r.target)).collect();
        Forgery { last_root, refs, head, head_commit, parent, parent_commit }
    }

    /// Uploads `chunks` in one table file through doltgate as `who`; the file's info for a Commit.
    pub(crate) fn upload_chunks(&self, who: (&str, &str), chunks: &[Vec<u8>]) -> ChunkTableInfo {
        let records: Vec<(Address, &[u8])> = chunks.iter().map(|c| (Address::of(c), c.as_slice())).collect();
        let (file, name) = table_file(&records);
        let request = GetUploadLocsRequest {
            repo_path: "shop".into(),
            table_file_details: vec![details(&name, &file, records.len() as u64)],
            ..Default::default()
        };
        let locations = self.runtime.block_on(self.client().get_upload_locations(as_user(who, request)));
        let (status, body) = http_put(&upload_url(&locations.unwrap().into_inner()), &file);
        assert!((200..300).contains(&status), "a sound file uploads: {body}");
        ChunkTableInfo { hash: name.as_bytes().to_vec().into(), chunk_count: records.len() as u32 }
    }

    pub(crate) fn commit_root(
        &self,
        who: (&str, &str),
        forgery: &Forgery,
        root: &[u8],
        file: &ChunkTableInfo,
    ) -> Result<CommitResponse, tonic::Status> {
        let request = CommitRequest {
            repo_path: "shop".into(),
            current: Address::of(root).as_bytes().to_vec().into(),
            last: forgery.last_root.clone().into(),
            chunk_table_info: vec![file.clone()],
            client_repo_format: format(),
            ..Default::default()
        };
        self.runtime.block_on(self.client().commit(as_user(who, request))).map(|r| r.into_inner())
    }
}

impl Forgery {
    /// A store root with these refs set (`Some`) or removed (`None`) on top of the current ones.
    pub(crate) fn root_with(&self, changes: &[(&str, Option<Address>)]) -> Vec<u8> {
        let mut refs = self.refs.clone();
        for (name, target) in changes {
            refs.retain(|(n, _)| n != name);
            if let Some(target) = target {
                refs.push((name.to_string(), *target));
            }
        }
        refs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let entries: Vec<(&[u8], Address)> = refs.iter().map(|(n, a)| (n.as_bytes(), *a)).collect();
        build::store_root(&build::address_map(0, &entries))
    }
}

#[test]
fn a_rewrite_dressed_as_a_fast_forward_or_a_ref_to_the_wrong_kind_is_refused() {
    let s = Setup::new();
    let before = s.main_head();
    let f = s.forgery();
    assert_eq!(f.head.to_string(), before);

    // A sibling of main's head (same parent, same data) whose closure claims
    // the head itself as an ancestor: trusting the closure, moving main onto
    // it would pass for a fast-forward and drop the head from history.
    let claimed = [
        ClosureKey { height: f.parent_commit.height, commit: f.parent },
        ClosureKey { height: f.head_commit.height, commit: f.head },
    ];
    let mut closure_keys: Vec<ClosureKey> = claimed.to_vec();
    closure_keys.sort();
    let closure = build::closure_node(0, &closure_keys, &[]);
    let root_value = f.head_commit.root.expect("a commit names its root value");
    // One above the head, as a child of the head would be: heights are the pusher's word too.
    let sibling = build::commit_of(root_value, f.head_commit.height + 1, &[f.parent], Address::of(&closure));
    let sibling_address = Address::of(&sibling);
    let rewrite = f.root_with(&[("refs/heads/main", Some(sibling_address))]);
    // A branch at a root value, a tag at a commit: kinds Dolt would choke on later.
    let branch_at_root_value = f.root_with(&[("refs/heads/evil", Some(root_value))]);
    let tag_at_commit = f.root_with(&[("refs/tags/evil", Some(f.head))]);
    let honest_branch = f.root_with(&[("refs/heads/fine", Some(f.head))]);
    let chunks = [sibling, closure, rewrite.clone(), branch_at_root_value.clone(), tag_at_commit.clone()];

    let file = s.upload_chunks(MAINTAINER, &chunks);
    // Refused before any rule is asked: Dolt would have written a lower height and another closure.
    refused(
        s.commit_root(MAINTAINER, &f, &rewrite, &file),
        Code::InvalidArgument,
        &format!("commit {sibling_address} does not carry the lineage Dolt would write for it: height"),
    );
    assert_eq!(s.main_head(), before, "main kept its head");

    refused(
        s.commit_root(ATTACKER, &f, &branch_at_root_value, &file),
        Code::FailedPrecondition,
        "refs/heads/evil points at a RTVL message, where Dolt expects DCMT",
    );
    refused(
        s.commit_root(ATTACKER, &f, &tag_at_commit, &file),
        Code::FailedPrecondition,
        "refs/tags/evil points at a DCMT message, where Dolt expects DTAG",
    );
    let refs =
        s.server.sql(&s.env, "SELECT name FROM shop.dolt_branches UNION ALL SELECT tag_name FROM shop.dolt_tags");
    assert!(!refs.contains("evil"), "no ref of the wrong kind reached Dolt: {refs}");

    // The same path lets a well-formed ref through, so the refusals above are about kinds.
    let file = s.upload_chunks(ATTACKER, std::slice::from_ref(&honest_branch));
    let created = s.commit_root(ATTACKER, &f, &honest_branch, &file).expect("a branch at a commit");
    assert!(created.success, "{created:?}");
    let branches = s.server.sql(&s.env, "SELECT name FROM shop.dolt_branches");
    assert!(branches.contains("fine"), "{branches}");
}

/// Dolt's merges trust each commit's height and parent closure, so a commit
/// whose closure names a commit that is not its ancestor, leaves one out, or
/// whose height is not one above its parent's is refused even on a branch
/// the pusher may create; the same child of `main` with the lineage Dolt
/// would write goes through.
#[test]
fn a_commit_with_a_false_lineage_is_refused() {
    let s = Setup::new();
    let f = s.forgery();
    let store = DirectorySource::open(&s.noms()).unwrap();
    let everything = ClosureKey { height: 0, commit: Address::EMPTY };
    let mut ancestors = match f.head_commit.parent_closure {
        Some(root) => s.runtime.block_on(closure_keys_from(&store, &root, &everything, usize::MAX)).unwrap(),
        None => Vec::new(),
    };
    assert!(!ancestors.is_empty(), "main's head has ancestors: {ancestors:?}");
    ancestors.push(ClosureKey { height: f.head_commit.height, commit: f.head });
    ancestors.sort();
    let root_value = f.head_commit.root.expect("a commit names its root value");
    let height = f.head_commit.height + 1;
    let child = |keys: &[ClosureKey], height: u64| {
        let closure = build::closure_node(0, keys, &[]);
        (build::commit_of(root_value, height, &[f.head], Address::of(&closure)), closure)
    };
    // A commit of its own history, uploaded alongside: Dolt refuses a file whose chunks name missing ones.
    let stranger_commit = build::commit_of(root_value, 1, &[], Address::EMPTY);
    let stranger = ClosureKey { height: 1, commit: Address::of(&stranger_commit) };
    let mut with_stranger: Vec<ClosureKey> = [stranger].into_iter().chain(ancestors.iter().copied()).collect();
    with_stranger.sort();
    let cases = [
        ("lineage-stranger", child(&with_stranger, height), format!("its closure names {}", stranger.commit)),
        ("lineage-forgets", child(&ancestors[1..], height), format!("its closure leaves out {}", ancestors[0].commit)),
        ("lineage-height", child(&ancestors, height + 7), format!("height {} where", height + 7)),
    ];
    for (branch, (commit, closure), reason) in cases {
        let address = Address::of(&commit);
        let root = f.root_with(&[(&format!("refs/heads/{branch}"), Some(address))]);
        let file = s.upload_chunks(ATTACKER, &[commit, closure, stranger_commit.clone(), root.clone()]);
        refused(
            s.commit_root(ATTACKER, &f, &root, &file),
            Code::InvalidArgument,
            &format!("commit {address} does not carry the lineage Dolt would write for it: {reason}"),
        );
    }
    assert_eq!(s.forgery().last_root, f.last_root, "the store root did not move");

    let (commit, closure) = child(&ancestors, height);
    let root = f.root_with(&[("refs/heads/lineage-honest", Some(Address::of(&commit)))]);
    let file = s.upload_chunks(ATTACKER, &[commit, closure, root.clone()]);
    let created = s.commit_root(ATTACKER, &f, &root, &file).expect("the lineage Dolt would write");
    assert!(created.success, "{created:?}");
    // The first read of a branch that has no working set makes Dolt write one, and
    // that write can lose a race with Dolt's own refresh of the store the push just
    // changed ("optimistic lock failed"); the read itself is what is being checked.
    let query = "SELECT count(*) AS n FROM `shop/lineage-honest`.dolt_log";
    let mut read = s.server.sql_as(&s.env, USER, PASSWORD, query);
    for _ in 0..5 {
        if read.status.success() || !String::from_utf8_lossy(&read.stderr).contains("optimistic lock failed") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        read = s.server.sql_as(&s.env, USER, PASSWORD, query);
    }
    let log = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success(), "{query} failed: {}", String::from_utf8_lossy(&read.stderr));
    assert!(log.contains(&(height).to_string()), "Dolt reads the new commit's history: {log}");
}

/// Table rules judge what Dolt would store, not only what `dolt push` sends:
/// a crafted Commit that moves nothing but `main`'s working set, to one whose
/// working root holds other rows of a protected table, is refused by the
/// table rule, and the store root stays where it was.
#[test]
fn a_crafted_working_set_cannot_change_a_protected_table() {
    let frozen = "[[auth.table_rules]]\nname = \"items-frozen\"\nbranches = [\"main\"]\ntables = [\"ITEMS\"]\nusers = [\"carol\"]\n";
    let s = Setup::with_config(frozen);
    let f = s.forgery();
    assert!(f.refs.iter().any(|(name, _)| name == "workingSets/heads/main"), "the server keeps main's working set");
    let store = DirectorySource::open(&s.noms()).unwrap();
    let head_root = f.head_commit.root.expect("a commit names its root value");
    let root_value = RootValue::parse(&head_root, &s.runtime.block_on(get_one(&store, &head_root)).unwrap()).unwrap();
    let at = root_value.tables.keys.iter().position(|k| k == b"items").expect("the items table");
    let items_address = root_value.tables.addresses[at];
    let items = Table::parse(&items_address, &s.runtime.block_on(get_one(&store, &items_address)).unwrap()).unwrap();

    let forged_items = build::table(items.schema.expect("a schema"), b"other rows", 0);
    let mut entries: Vec<(&[u8], Address)> =
        root_value.tables.keys.iter().map(Vec::as_slice).zip(root_value.tables.addresses.iter().copied()).collect();
    entries[at].1 = Address::of(&forged_items);
    let forged_root_value = build::root_value(&build::address_map(0, &entries), root_value.foreign_keys);
    let working_set = build::message(
        "WRST",
        &[(4, build::Value::Bytes(&Address::of(&forged_root_value).0)), (6, build::Value::Bytes(&head_root.0))],
    );
    let new_root = f.root_with(&[("workingSets/heads/main", Some(Address::of(&working_set)))]);
    let file = s.upload_chunks(MAINTAINER, &[forged_items, forged_root_value, working_set, new_root.clone()]);
    refused(
        s.commit_root(MAINTAINER, &f, &new_root, &file),
        Code::PermissionDenied,
        "rule \"items-frozen\" (which does not let this user change the data of table \"items\")",
    );
    assert_eq!(s.forgery().last_root, f.last_root, "the store root did not move");
}

/// Dolt walks every chunk of a file it adds to its store without verifying
/// it, and a table without conflicts (or an address of the wrong length, an
/// address offset past a row node's values, an empty chunk) crashes the
/// whole sql-server there. Such chunks are refused on upload,
/// before Dolt can be asked to add them, and the server keeps serving.
#[test]
fn a_chunk_that_would_crash_dolts_walk_is_refused_on_upload() {
    let s = Setup::new();
    let no_conflicts = build::message(
        "DTBL",
        &[
            (4, build::Value::Bytes(&Address::of(b"schema").0)),
            (14, build::Value::Bytes(&Address::EMPTY.0)),
            (16, build::Value::Bytes(&Address::EMPTY.0)),
        ],
    );
    let tag_without_commit = build::message("DTAG", &[]);
    // A row leaf whose address offset points past its values: Dolt slices there unchecked.
    let row_past_values =
        build::message("TUPM", &[(10, build::Value::Bytes(&[7; 24])), (16, build::Value::U16s(&[8]))]);
    let cases = [
        (no_conflicts, "conflicts is absent"),
        (tag_without_commit, "DTAG.commit_addr is 0 bytes"),
        (row_past_values, "TUPM.value_address_offsets names an address at 8, past the 24 bytes"),
        // Dolt reads the first byte of every chunk it adds, and walks only serial messages safely.
        (Vec::new(), "the chunk is empty"),
        (b"an old-format value".to_vec(), "is not a serial message"),
    ];
    for (chunk, reason) in cases {
        let address = Address::of(&chunk);
        let (file, name) = table_file(&[(address, &chunk)]);
        let locations = s.upload_locations(vec![details(&name, &file, 1)]).expect("an upload location");
        let (status, body) = http_put(&upload_url(&locations), &file);
        assert_eq!(status, 422, "{body}");
        assert!(
            body.contains("would crash Dolt") && body.contains(reason) && body.contains(&address.to_string()),
            "{body}"
        );
        refused(
            s.add_table_files(vec![ChunkTableInfo { hash: name.as_bytes().to_vec().into(), chunk_count: 1 }]),
            Code::FailedPrecondition,
            "not verified",
        );
    }
    // Dolt is still up, and an honest upload still goes through.
    assert!(!s.main_head().is_empty());
    let honest = build::table(Address::of(b"schema"), b"rows", 0);
    let (file, name) = table_file(&[(Address::of(&honest), &honest)]);
    let locations = s.upload_locations(vec![details(&name, &file, 1)]).expect("an upload location");
    let (status, body) = http_put(&upload_url(&locations), &file);
    assert!((200..300).contains(&status), "{body}");
}

/// Spool files are rewritten from one upload to the next
/// (`uploads.spool_files_kept`), so an earlier upload's bytes may still sit
/// past the end of a later one. A later upload is judged on its own bytes
/// only: the honest file's own name, sent again cut short, is refused even
/// though the spool file still holds the missing tail, and Dolt's copy stays
/// whole.
#[test]
fn a_reused_spool_file_judges_only_the_new_upload() {
    let s = Setup::with_config("[uploads]\nspool_files_kept = 1\n");
    let honest = build::table(Address::of(b"schema"), b"rows", 0);
    let (file, name) = table_file(&[(Address::of(&honest), &honest)]);
    let locations = s.upload_locations(vec![details(&name, &file, 1)]).expect("an upload location");
    let (status, body) = http_put(&upload_url(&locations), &file);
    assert!((200..300).contains(&status), "{body}");
    let stored = s.noms().join(name.to_string());
    assert_eq!(std::fs::read(&stored).unwrap(), file, "the honest file is in Dolt's store");

    let cut = &file[..file.len() - 20];
    let (status, body) = http_put(&upload_url(&locations), cut);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&name.to_string()), "names the file: {body}");
    assert_eq!(std::fs::read(&stored).unwrap(), file, "Dolt's copy was not replaced");
}
