//! The edge cache with a real `dolt sql-server` and the real `dolt` CLI: a
//! clone through a warm cache reads no table-file bytes from Dolt and matches
//! a direct clone; concurrent cold clones fetch each file once; a small cache
//! evicts and stays correct, and an unusable directory leaves clones uncached
//! but working; a doltgate killed mid-fill leaves no half file;
//! a corrupted upstream read is never cached; a pull after a push sees the
//! new files; replicas share fills through a real S3 server (versitygw), and
//! a damaged object in it is refused, deleted and refetched from Dolt. Data sits in the archives `dolt push` uploads, not the journal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const ROWS: usize = 20_000;
const PAYLOAD_BYTES: usize = 500;

struct Setup {
    env: DoltEnv,
    server: DoltServer,
    /// A clone that pushes new data to the server directly.
    work: PathBuf,
    cache_dir: PathBuf,
}

impl Setup {
    /// A server whose database `db` holds one pushed archive of several MB.
    fn new() -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        env.init_repo(&data.join("db"));
        let server = DoltServer::start(&env, &data);
        let work = env.path().join("work");
        let direct = format!("http://127.0.0.1:{}/db", server.remotesapi_port);
        env.ok_with(env.path(), &["clone", "--user", USER, &direct, work.to_str().unwrap()], &password_env());
        let setup = Setup { cache_dir: env.path().join("cache"), env, server, work };
        setup.push_rows("first", ROWS);
        setup
    }

    /// Commits `rows` new rows in table `name` and pushes them directly.
    fn push_rows(&self, name: &str, rows: usize) {
        let csv = self.env.path().join(format!("{name}.csv"));
        write_csv(&csv, rows, PAYLOAD_BYTES);
        let create = format!("CREATE TABLE {name} (id INT PRIMARY KEY, payload TEXT NOT NULL);");
        self.env.ok(&self.work, &["sql", "-q", &create]);
        self.env.ok(&self.work, &["table", "import", "-u", name, csv.to_str().unwrap()]);
        self.env.ok(&self.work, &["commit", "-Am", name]);
        self.env.ok_with(&self.work, &["push", "--user", USER, "origin", "main"], &password_env());
    }

    fn server_noms(&self) -> PathBuf {
        self.server.data_dir.join("db/.dolt/noms")
    }

    /// Table files and archives in the server's store (not the journal), by name.
    fn server_files(&self) -> HashMap<String, u64> {
        let mut files = HashMap::new();
        for dir in [self.server_noms(), self.server_noms().join("oldgen")] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".darc").unwrap_or(&name);
                if stem.len() == 32 && stem != "v".repeat(32) && entry.file_type().unwrap().is_file() {
                    files.insert(name, entry.metadata().unwrap().len());
                }
            }
        }
        files
    }

    fn config(&self, upstream: &str, admin: u16, cache: &Path, max_bytes: u64, extra: &str) -> PathBuf {
        let path = self.env.path().join(format!("cache-{admin}.toml"));
        let text = format!(
            "[upstream]\naddress = \"{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
             [cache]\ndir = \"{}\"\nmax_bytes = {max_bytes}\n\n{extra}",
            cache.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn gateway(&self, upstream: &str, max_bytes: u64) -> (Doltgate, u16) {
        let admin = free_port();
        let config = self.config(upstream, admin, &self.cache_dir, max_bytes, "");
        (Doltgate::start_with_config(self.env.path(), &config), admin)
    }

    /// A replica with a disk cache of its own in front of the shared tier `s3`.
    fn replica(&self, name: &str, s3: &S3Server) -> (Doltgate, u16) {
        let admin = free_port();
        let dir = self.env.path().join(format!("cache-{name}"));
        let config = self.config(&self.server.remotesapi_addr(), admin, &dir, 1 << 30, &s3.shared_tier_config("edge"));
        (Doltgate::start_with_config_env(self.env.path(), &config, &s3_env()), admin)
    }

    fn clone_through(&self, gateway: &Doltgate, name: &str) -> PathBuf {
        let dest = self.env.path().join(name);
        let args = ["clone", "--user", USER, &gateway.url("db"), dest.to_str().unwrap()];
        self.env.ok_with(self.env.path(), &args, &password_env());
        dest
    }

    /// The clone has the server's history and its data is whole.
    fn assert_same_as_server(&self, clone: &Path) {
        assert_eq!(self.env.log_hashes(clone, "main"), self.env.log_hashes(&self.work, "main"));
        self.env.ok(clone, &["fsck"]);
        let full = format!("SELECT COUNT(*) AS n FROM first WHERE LENGTH(payload) = {PAYLOAD_BYTES}");
        assert_eq!(self.env.query_csv(clone, &full), format!("n\n{ROWS}\n"));
    }

    /// Every file in the cache is byte for byte the server's file of that name.
    fn assert_cache_holds_only_server_bytes(&self) -> usize {
        self.assert_holds_only_server_bytes(&self.cache_dir)
    }

    fn assert_holds_only_server_bytes(&self, cache_dir: &Path) -> usize {
        let mut checked = 0;
        for path in files_under(&cache_dir.join("v1/files")) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let server_copy = [self.server_noms(), self.server_noms().join("oldgen")]
                .iter()
                .map(|dir| dir.join(&name))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("cached {name} is not in the server's store"));
            assert!(std::fs::read(&path).unwrap() == std::fs::read(server_copy).unwrap(), "cached {name} differs");
            checked += 1;
        }
        checked
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            files.extend(files_under(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

fn metric(admin: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    total(&scrape(admin), name, labels)
}

fn upstream_bytes(admin: u16) -> f64 {
    metric(admin, "doltgate_upstream_file_bytes_total", &[])
}

fn cache_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_doltgate")).arg("cache").args(args).output().unwrap();
    assert!(out.status.success(), "doltgate cache {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_warm_cache_serves_clones_without_reading_table_files_from_dolt() {
    let s = Setup::new();
    let stored: u64 = s.server_files().values().sum();
    assert!(stored > 3_000_000, "the pushed data sits in table files: {:?}", s.server_files());
    let (gateway, admin) = s.gateway(&s.server.remotesapi_addr(), 1 << 30);
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_owned()));

    let before = upstream_bytes(admin);
    let cold = s.clone_through(&gateway, "cold");
    let cold_bytes = upstream_bytes(admin) - before;
    s.assert_same_as_server(&cold);
    assert!(cold_bytes >= stored as f64, "a cold clone reads every file from Dolt: {cold_bytes} of {stored}");
    assert!(metric(admin, "doltgate_cache_fills_total", &[("outcome", "stored")]) >= 1.0);

    let before = upstream_bytes(admin);
    let warm = s.clone_through(&gateway, "warm");
    let warm_bytes = upstream_bytes(admin) - before;
    s.assert_same_as_server(&warm);
    // The same database as a direct clone sees it, branch by branch and table by table.
    let direct = s.env.path().join("direct");
    let direct_url = format!("http://127.0.0.1:{}/db", s.server.remotesapi_port);
    s.env.ok_with(s.env.path(), &["clone", "--user", USER, &direct_url, direct.to_str().unwrap()], &password_env());
    let hashes = "SELECT name, hash FROM dolt_branches ORDER BY name";
    assert_eq!(s.env.query_csv(&warm, hashes), s.env.query_csv(&direct, hashes));
    let tables = "SELECT table_name, dolt_hashof_table(table_name) FROM information_schema.tables WHERE table_schema = database() ORDER BY 1";
    let table_hashes = s.env.query_csv(&warm, tables);
    assert!(table_hashes.contains("\nfirst,"), "{table_hashes}");
    assert_eq!(table_hashes, s.env.query_csv(&direct, tables));
    println!("table-file bytes from Dolt: cold clone {cold_bytes}, warm clone {warm_bytes}");
    assert!(
        warm_bytes < cold_bytes * 0.02,
        "a warm clone reads (almost) nothing from Dolt: {warm_bytes} of {cold_bytes}"
    );
    assert!(metric(admin, "doltgate_cache_requests_total", &[("result", "hit")]) >= 1.0);
    assert_eq!(s.assert_cache_holds_only_server_bytes(), s.server_files().len(), "every table file is cached");

    let listed = cache_cli(&["stats", "--dir", s.cache_dir.to_str().unwrap()]);
    assert!(listed.contains("db/.dolt/noms"), "{listed}");
    capabilities_guard_cached_files(&s, &gateway, admin);

    // A pull after a push sees the new files: ranged reads pass through, then fill.
    s.push_rows("second", 2_000);
    let pull = ["pull", "--user", USER, "origin", "main"];
    s.env.ok_with(&warm, &pull, &password_env());
    assert_eq!(s.env.log_hashes(&warm, "main"), s.env.log_hashes(&s.work, "main"));
    s.env.ok(&warm, &["fsck"]);
    // The pull's ranged reads of the new archive passed through; the whole file followed in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.assert_cache_holds_only_server_bytes() < s.server_files().len() {
        assert!(Instant::now() < deadline, "the pushed archive was never filled after the pull's ranged reads");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Purged under a running doltgate, then a storm of cold clones: each file is fetched once.
    let purged = cache_cli(&["purge", "--dir", s.cache_dir.to_str().unwrap()]);
    assert!(purged.starts_with("removed "), "{purged}");
    let stored: u64 = s.server_files().values().sum();
    let before = upstream_bytes(admin);
    let storm: Vec<_> = (0..3)
        .map(|i| {
            // Concurrent clones each start in a directory of their own.
            let cwd = s.env.path().join(format!("storm-{i}-cwd"));
            std::fs::create_dir_all(&cwd).unwrap();
            let dest = cwd.join("clone");
            let mut clone = s.env.command(&cwd, &["clone", "--user", USER, &gateway.url("db")]);
            clone.arg(&dest).env("DOLT_REMOTE_PASSWORD", PASSWORD);
            (clone.spawn().unwrap(), dest)
        })
        .collect();
    for (mut child, dest) in storm {
        assert!(child.wait().unwrap().success(), "storm clone into {}", dest.display());
        assert_eq!(s.env.log_hashes(&dest, "main"), s.env.log_hashes(&s.work, "main"));
    }
    let storm_bytes = upstream_bytes(admin) - before;
    println!("three concurrent cold clones read {storm_bytes} bytes of {stored} from Dolt");
    assert!(storm_bytes < stored as f64 * 1.5, "each file once, not once per clone: {storm_bytes} of {stored}");
    s.assert_cache_holds_only_server_bytes();
    drop(gateway);

    // Restarted on the same directory with one transfer per user: the cache is still warm, and
    // its hits wait for the user's transfer slot like any transfer.
    let admin = free_port();
    let limits = "[limits]\nmax_transfers_per_user = 1\nqueue_wait = \"60s\"\n";
    let config = s.config(&s.server.remotesapi_addr(), admin, &s.cache_dir, 1 << 30, limits);
    let gateway = Doltgate::start_with_config(s.env.path(), &config);
    let clones: Vec<_> = (0..2)
        .map(|i| {
            let cwd = s.env.path().join(format!("limited-{i}-cwd"));
            std::fs::create_dir_all(&cwd).unwrap();
            let mut clone = s.env.command(&cwd, &["clone", "--user", USER, &gateway.url("db"), "clone"]);
            (clone.env("DOLT_REMOTE_PASSWORD", PASSWORD).spawn().unwrap(), cwd.join("clone"))
        })
        .collect();
    for (mut child, dest) in clones {
        assert!(child.wait().unwrap().success(), "limited clone into {}", dest.display());
        s.assert_same_as_server(&dest);
    }
    assert!(upstream_bytes(admin) < stored as f64 * 0.02, "the restarted cache served the clones");
    assert!(metric(admin, "doltgate_cache_requests_total", &[("result", "hit")]) >= 2.0);
    drop(gateway);

    // A cached answer holds the user's slot until its last byte: while one is stalled, the
    // user's next transfer waits out queue_wait and gets 429.
    let admin = free_port();
    let limits = "[limits]\nmax_transfers_per_user = 1\nqueue_wait = \"1s\"\n";
    let config = s.config(&s.server.remotesapi_addr(), admin, &s.cache_dir, 1 << 30, limits);
    let gateway = Doltgate::start_with_config(s.env.path(), &config);
    let (largest, _) = s.server_files().into_iter().max_by_key(|(_, len)| *len).unwrap();
    let path = listed_path(&gateway, &largest);
    let stalled = stalled_get(gateway.port, &path);
    let (status, _) = file_get(gateway.port, &path, Some("bytes=0-99"));
    assert_eq!(status, 429, "the stalled cached answer still holds the user's one slot");
    assert_eq!(metric(admin, "doltgate_user_limit_total", &[("limit", "transfers"), ("outcome", "refused")]), 1.0);
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = file_get(gateway.port, &path, Some("bytes=0-99"));
        if status == 206 {
            assert_eq!(body.len(), 100);
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A whole-file GET whose client reads nothing, through a socket with a tiny
/// receive buffer, so doltgate's answer stalls partway.
fn stalled_get(port: u16, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    // Long enough for doltgate to start answering and fill the buffers.
    std::thread::sleep(Duration::from_millis(500));
    stream
}

#[test]
fn a_small_cache_evicts_and_clones_stay_correct() {
    let s = Setup::new();
    s.push_rows("second", ROWS);
    let sizes = s.server_files();
    let largest = *sizes.values().max().unwrap();
    let stored: u64 = sizes.values().sum();
    assert!(sizes.len() >= 2 && largest < stored, "two pushes, two files at least: {sizes:?}");
    // Room for the largest file, not for all of them.
    let (gateway, admin) = s.gateway(&s.server.remotesapi_addr(), largest + 1);
    for name in ["one", "two", "three"] {
        let clone = s.clone_through(&gateway, name);
        s.assert_same_as_server(&clone);
    }
    assert!(metric(admin, "doltgate_cache_evictions_total", &[]) >= 1.0, "files were evicted");
    assert!(metric(admin, "doltgate_cache_size_bytes", &[]) <= (largest + 1) as f64);
    s.assert_cache_holds_only_server_bytes();

    // A second doltgate on the same directory finds it in use and serves uncached.
    let (second, second_admin) = s.gateway(&s.server.remotesapi_addr(), 1 << 30);
    let (status, body) = http_get(second_admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("in use by another doltgate process"), "{body}");
    s.assert_same_as_server(&s.clone_through(&second, "beside"));
    drop((gateway, second));

    // A cache directory that cannot be used: ready but degraded, and clones still work, uncached.
    std::fs::remove_dir_all(&s.cache_dir).unwrap();
    std::fs::write(&s.cache_dir, "a file, not a directory").unwrap();
    let (gateway, admin) = s.gateway(&s.server.remotesapi_addr(), 1 << 30);
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\ndegraded: edge cache off: cache.dir "), "{body}");
    let clone = s.clone_through(&gateway, "uncached");
    s.assert_same_as_server(&clone);
    assert_eq!(metric(admin, "doltgate_cache_requests_total", &[("result", "hit")]), 0.0);
}

#[test]
fn a_doltgate_killed_mid_fill_leaves_no_half_file_and_a_corrupt_read_is_never_cached() {
    let s = Setup::new();
    let tmp = s.cache_dir.join("v1/tmp");
    {
        // Dolt's answers slowed, so the kill lands while the archive is being filled.
        let slow = Relay::start(&s.server.remotesapi_addr(), Fault::Throttle { bytes_per_second: 2_000_000 });
        let (gateway, admin) = s.gateway(&slow.addr(), 1 << 30);
        let dest = s.env.path().join("killed");
        let mut clone = s.env.command(s.env.path(), &["clone", "--user", USER, &gateway.url("db")]);
        let mut clone = clone.arg(&dest).env("DOLT_REMOTE_PASSWORD", PASSWORD).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while upstream_bytes(admin) < 1_000_000.0 {
            assert!(Instant::now() < deadline, "the fill never got going");
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway.signal("KILL");
        let _ = clone.wait();
        let half: Vec<_> = files_under(&tmp);
        assert!(!half.is_empty(), "the kill should land mid-fill, leaving a temporary file");
        // What is in place (small files filled before the kill) is whole.
        s.assert_cache_holds_only_server_bytes();
        let largest = s.server_files().into_iter().max_by_key(|(_, len)| *len).unwrap().0;
        let cached: Vec<_> = files_under(&s.cache_dir.join("v1/files"));
        assert!(!cached.iter().any(|p| p.ends_with(&largest)), "the file being filled is not in place");
    }

    // Restarted on the same directory, behind a relay that corrupts one byte of a whole-file answer.
    let corrupting = Relay::start(&s.server.remotesapi_addr(), Fault::CorruptOnce { after: 256 * 1024 });
    let (gateway, admin) = s.gateway(&corrupting.addr(), 1 << 30);
    assert!(files_under(&tmp).is_empty(), "a restart removes unfinished fills");
    let clone = s.clone_through(&gateway, "after-restart");
    s.assert_same_as_server(&clone);
    assert!(corrupting.corrupted.load(std::sync::atomic::Ordering::SeqCst), "the relay corrupted a download");
    assert_eq!(metric(admin, "doltgate_cache_fills_total", &[("outcome", "corrupt")]), 1.0);
    assert!(s.assert_cache_holds_only_server_bytes() >= 1, "the retried fill is cached, the corrupt one is not");
    let again = s.clone_through(&gateway, "from-cache");
    s.assert_same_as_server(&again);
}

/// Waits until `admin`'s doltgate has stored `count` files in the shared tier.
fn await_shared_stores(admin: u16, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(admin, "doltgate_cache_shared_total", &[("event", "stored")]) < count {
        assert!(Instant::now() < deadline, "the files never reached the shared tier");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replicas_share_fills_through_an_s3_bucket_and_a_bad_object_is_never_served() {
    let s = Setup::new();
    let s3 = S3Server::start(s.env.path());
    let files = s.server_files();
    let stored: u64 = files.values().sum();

    // Replica A fills from Dolt and stores every file in the bucket.
    let (a, a_admin) = s.replica("a", &s3);
    s.assert_same_as_server(&s.clone_through(&a, "via-a"));
    await_shared_stores(a_admin, files.len() as f64);
    let (largest, _) = files.iter().max_by_key(|(_, len)| **len).unwrap();
    assert_eq!(s3.objects_named(largest).len(), 1, "the archive is in the bucket");

    // Replica B, cold on disk, clones from the bucket: (almost) nothing from Dolt.
    let (b, b_admin) = s.replica("b", &s3);
    let before = upstream_bytes(b_admin);
    s.assert_same_as_server(&s.clone_through(&b, "via-b"));
    let from_dolt = upstream_bytes(b_admin) - before;
    let from_bucket = metric(b_admin, "doltgate_cache_shared_read_bytes_total", &[]);
    println!("replica B read {from_dolt} bytes from Dolt and {from_bucket} from the bucket ({stored} stored)");
    assert!(from_dolt < stored as f64 * 0.02, "B read table files from Dolt: {from_dolt} of {stored}");
    assert!(from_bucket >= stored as f64, "B filled from the bucket: {from_bucket} of {stored}");
    assert!(metric(b_admin, "doltgate_cache_shared_total", &[("event", "hit")]) >= files.len() as f64);
    assert_eq!(s.assert_holds_only_server_bytes(&s.env.path().join("cache-b")), files.len());
    drop((a, b));

    // A damaged object: replica C verifies it, refuses it, deletes it and falls back to Dolt.
    let object = s3.objects_named(largest).pop().unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let (c, c_admin) = s.replica("c", &s3);
    s.assert_same_as_server(&s.clone_through(&c, "via-c"));
    assert_eq!(metric(c_admin, "doltgate_cache_shared_total", &[("event", "corrupt")]), 1.0);
    assert_eq!(s.assert_holds_only_server_bytes(&s.env.path().join("cache-c")), files.len());
    // C stored Dolt's copy in place of the damaged one.
    await_shared_stores(c_admin, 1.0);
    let replaced = s3.objects_named(largest).pop().expect("stored again");
    let server_copy = s.server_noms().join(largest);
    assert!(std::fs::read(replaced).unwrap() == std::fs::read(server_copy).unwrap(), "the bucket holds Dolt's bytes");
    drop(c);
}

/// A cached file is served, whole or by range, only under a capability
/// doltgate signed for it; an altered one gets 403 and nothing from the cache.
fn capabilities_guard_cached_files(s: &Setup, gateway: &Doltgate, admin: u16) {
    let (largest, _) = s.server_files().into_iter().max_by_key(|(_, len)| *len).unwrap();
    let on_server = std::fs::read(s.server_noms().join(&largest)).unwrap();
    let path = &listed_path(gateway, &largest);
    let hits = || metric(admin, "doltgate_cache_requests_total", &[("result", "hit")]);
    let (hits_before, upstream_before) = (hits(), upstream_bytes(admin));

    let (status, body) = file_get(gateway.port, path, None);
    assert_eq!(status, 200);
    assert!(body == on_server, "the whole cached file is the server's");
    let (status, body) = file_get(gateway.port, path, Some("bytes=100-4195"));
    assert_eq!(status, 206);
    assert!(body == on_server[100..4196], "a range of the cached file is the server's");
    assert_eq!(hits(), hits_before + 2.0);
    // At most a 1-byte length check went to Dolt.
    assert!(upstream_bytes(admin) - upstream_before <= 1.0);

    let capability_at = "/_doltgate/files/".len() + 10;
    let mut altered = path.as_bytes().to_vec();
    altered[capability_at] = if altered[capability_at] == b'A' { b'B' } else { b'A' };
    let (status, _) = file_get(gateway.port, std::str::from_utf8(&altered).unwrap(), None);
    assert_eq!(status, 403, "an altered capability is refused before the cache");
    assert_eq!(hits(), hits_before + 2.0, "nothing was served from the cache");
}

/// The path (with query) of the table-file URL doltgate lists for the file `name`.
fn listed_path(gateway: &Doltgate, name: &str) -> String {
    use doltgate::remotesapi::proto::chunk_store_service_client::ChunkStoreServiceClient;
    use doltgate::remotesapi::proto::ListTableFilesRequest;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = runtime.block_on(async {
        let endpoint = format!("http://127.0.0.1:{}", gateway.port);
        let channel = tonic::transport::Channel::from_shared(endpoint).unwrap().connect().await.unwrap();
        let mut request = tonic::Request::new(ListTableFilesRequest { repo_path: "db".into(), ..Default::default() });
        let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
        request.metadata_mut().insert("authorization", format!("Basic {basic}").parse().unwrap());
        let listed = ChunkStoreServiceClient::new(channel).list_table_files(request).await.unwrap().into_inner();
        let file = listed.table_file_info.into_iter().find(|f| f.url.split('?').next().unwrap().ends_with(name));
        file.expect("the file is listed").url
    });
    url[url.find("/_doltgate/files/").expect("a doltgate URL")..].to_owned()
}

/// A table-file GET over HTTP/1.1 (`Connection: close`); (status, body).
fn file_get(port: u16, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{range}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}
