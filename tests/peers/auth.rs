//! Authentication and authorization with the real `dolt` CLI and a real
//! `dolt sql-server` behind doltgate:
//! - a SQL user with no CLONE_ADMIN or SUPER on Dolt clones and pushes
//!   through doltgate because policy grants it (and cannot push directly);
//! - wrong passwords and missing grants get doltgate's own messages;
//! - a static user (Argon2 hash in the config) is read-only by policy;
//! - `dolt creds` keys registered in the config authenticate a plain
//!   `dolt clone`, and an unregistered key is refused;
//! - a whole clone costs a handful of SQL logins, not one per call;
//! - with `upstream_credentials = "passthrough"` Dolt sees (and checks) the
//!   client's own credential;
//! - real ghz calls with a bearer JWT from a configured issuer pass, and
//!   with an expired one are refused; the same through `auth.token_header`.

use std::path::{Path, PathBuf};

use crate::support::*;

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-pass-1";
const EVE: &str = "eve";
const EVE_PASSWORD: &str = "eves-pass-1";
const CAROL: &str = "carol";
const CAROL_PASSWORD: &str = "carols static password";
const JWT_SECRET: &str = "a-shared-secret-for-the-ci-issuer-0123";

struct Setup {
    env: DoltEnv,
    server: DoltServer,
    gateway: Doltgate,
    admin_port: u16,
    /// A client home whose `dolt creds` key is registered for user dana.
    dana: DoltEnv,
    /// A client home with a key nobody registered.
    stranger: DoltEnv,
}

/// A fresh client home with its own `dolt creds` key; returns the public key.
fn client_with_key() -> (DoltEnv, String) {
    let client = DoltEnv::new();
    client.ok(client.path(), &["creds", "new"]);
    let listing = strip_ansi(&client.ok(client.path(), &["creds", "ls", "-v"]));
    let key = listing
        .split_whitespace()
        .find(|word| word.len() == 52 && word.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)))
        .unwrap_or_else(|| panic!("no public key in `dolt creds ls -v`:\n{listing}"))
        .to_owned();
    (client, key)
}

impl Setup {
    fn new() -> Setup {
        Setup::with_upstream_credentials("service")
    }

    /// `upstream_credentials = mode`. In either mode the admin user
    /// (`USER`, with SUPER on Dolt) may write to every database by policy.
    fn with_upstream_credentials(mode: &str) -> Setup {
        Setup::with_config(mode, "", "")
    }

    /// `extra` is appended to the configuration (e.g. a `[limits]` table);
    /// `seed_sql` runs in the database before the server starts.
    fn with_config(mode: &str, extra: &str, seed_sql: &str) -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        let db = data.join("shop");
        env.seed_items_database(&db);
        if !seed_sql.is_empty() {
            env.ok(&db, &["sql", "-q", seed_sql]);
            env.ok(&db, &["commit", "-Am", "seeded"]);
        }
        // Plain logins: no CLONE_ADMIN, no SUPER.
        let users = format!(
            "CREATE USER '{BOB}'@'%' IDENTIFIED BY '{BOB_PASSWORD}'; CREATE USER '{EVE}'@'%' IDENTIFIED BY '{EVE_PASSWORD}';"
        );
        env.ok(&data, &["sql", "-q", &users]);
        // DoltServer::start also creates the admin user alice, doltgate's service user here.
        let server = DoltServer::start(&env, &data);
        let (dana, dana_key) = client_with_key();
        let (stranger, _) = client_with_key();
        let admin_port = free_port();
        let config = env.path().join("doltgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[admin]
address = "127.0.0.1:{admin_port}"

{cluster}

[auth]
upstream_credentials = "{mode}"
token_header = "x-doltgate-token"
dolt_key_audiences = ["127.0.0.1"]

[[auth.users]]
name = "{CAROL}"
password_hash = "{carol_hash}"
groups = ["readers"]

[[auth.users]]
name = "dana"
dolt_keys = ["{dana_key}"]
groups = ["writers"]

[[auth.jwt]]
name = "ci-issuer"
issuer = "https://ci.example"
audiences = ["doltgate"]
algorithms = ["HS256"]
secret_env = "JWT_SECRET"

[[auth.grants]]
databases = ["shop"]
users = ["{BOB}", "ci-issuer:ci-bot"]
permission = "write"

[[auth.grants]]
databases = ["*"]
groups = ["readers"]
permission = "read"

[[auth.grants]]
databases = ["sh*"]
groups = ["writers"]
permission = "write"

[[auth.grants]]
databases = ["*"]
users = ["{USER}"]
permission = "write"
{extra}
"#,
                cluster = service_cluster_config(&server),
                carol_hash = hash_password(CAROL_PASSWORD),
            ),
        )
        .unwrap();
        let gateway = Doltgate::start_with_config_env(
            env.path(),
            &config,
            &[("SERVICE_PASSWORD", PASSWORD), ("JWT_SECRET", JWT_SECRET)],
        );
        Setup { env, server, gateway, admin_port, dana, stranger }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/shop", self.gateway.port)
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.env.path().join(name)
    }

    fn clone_as(&self, user: &str, password: &str, name: &str) -> std::process::Output {
        let dest = self.dest(name);
        let args = ["clone", "--user", user, &self.url(), dest.to_str().unwrap()];
        self.env.run(self.env.path(), &args, &[("DOLT_REMOTE_PASSWORD", password)])
    }

    /// The server's branches, read over SQL.
    fn server_branches(&self) -> String {
        self.server.sql(&self.env, "SELECT name FROM shop.dolt_branches ORDER BY name")
    }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn commit_on_new_branch(env: &DoltEnv, repo: &Path, branch: &str) {
    env.ok(repo, &["checkout", "-b", branch]);
    env.ok(repo, &["sql", "-q", &format!("REPLACE INTO items VALUES (100, '{branch}')")]);
    env.ok(repo, &["commit", "-am", branch]);
}

#[test]
fn a_user_without_dolt_grants_clones_and_pushes_when_policy_allows() {
    let s = Setup::new();
    let out = s.clone_as(BOB, BOB_PASSWORD, "bob");
    assert!(out.status.success(), "{}", text(&out));
    let log = s.gateway.process.log();
    assert!(
        log.lines().any(|l| l.contains("table-file request") && l.contains("user=bob") && l.contains("database=shop")),
        "table-file transfers are logged with the user their URL was issued to:\n{log}"
    );
    assert!(!log.contains(BOB_PASSWORD), "the password never reaches the log");
    let repo = s.dest("bob");
    commit_on_new_branch(&s.env, &repo, "bobs-feature");
    let env = [("DOLT_REMOTE_PASSWORD", BOB_PASSWORD)];
    s.env.ok_with(&repo, &["push", "--user", BOB, "origin", "bobs-feature"], &env);
    assert!(s.server_branches().contains("bobs-feature"), "the push landed: {}", s.server_branches());

    // The same user straight at Dolt: no SUPER, so Dolt itself refuses the push.
    let direct = format!("http://{}/shop", s.server.remotesapi_addr());
    s.env.ok(&repo, &["remote", "add", "direct", &direct]);
    commit_on_new_branch(&s.env, &repo, "bobs-direct");
    let refused = s.env.fails(&repo, &["push", "--user", BOB, "direct", "bobs-direct"], &env);
    assert!(refused.contains("SuperUser") || refused.contains("PermissionDenied"), "{refused}");
    assert!(!s.server_branches().contains("bobs-direct"));
}

#[test]
fn passthrough_lets_dolt_check_the_clients_own_credentials_too() {
    let s = Setup::with_upstream_credentials("passthrough");
    // bob passes doltgate's policy, but Dolt now sees bob, who has no CLONE_ADMIN.
    let out = s.clone_as(BOB, BOB_PASSWORD, "bob");
    assert!(!out.status.success(), "Dolt must refuse bob's own credential: {}", text(&out));
    assert!(text(&out).contains("bob has not been granted CLONE_ADMIN"), "Dolt's own refusal: {}", text(&out));
    assert!(!s.dest("bob").join(".dolt").exists());
    // The admin user passes both doltgate and Dolt.
    let out = s.clone_as(USER, PASSWORD, "admin");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn wrong_password_and_missing_grants_get_doltgates_messages() {
    let s = Setup::new();
    let out = s.clone_as(BOB, "not-bobs-password", "wrong");
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong password for user \"bob\""), "{}", text(&out));

    let out = s.clone_as(EVE, EVE_PASSWORD, "eve");
    assert!(!out.status.success());
    assert!(text(&out).contains("user \"eve\" has no read permission on database \"shop\""), "{}", text(&out));

    let out = s.clone_as("nobody", "x", "nobody");
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong password for user \"nobody\""), "{}", text(&out));
}

#[test]
fn static_users_read_but_do_not_write_without_a_grant() {
    let s = Setup::new();
    let out = s.clone_as(CAROL, CAROL_PASSWORD, "carol");
    assert!(out.status.success(), "{}", text(&out));
    let repo = s.dest("carol");
    commit_on_new_branch(&s.env, &repo, "carols");
    let env = [("DOLT_REMOTE_PASSWORD", CAROL_PASSWORD)];
    let refused = s.env.fails(&repo, &["push", "--user", CAROL, "origin", "carols"], &env);
    assert!(refused.contains("user \"carol\" has no write permission on database \"shop\""), "{refused}");
    assert!(!s.server_branches().contains("carols"));
}

#[test]
fn registered_dolt_keys_authenticate_a_plain_clone() {
    let s = Setup::new();
    let dest = s.dana.path().join("clone");
    s.dana.ok(s.dana.path(), &["clone", &s.url(), dest.to_str().unwrap()]);
    commit_on_new_branch(&s.dana, &dest, "danas");
    s.dana.ok(&dest, &["push", "origin", "danas"]);
    assert!(s.server_branches().contains("danas"));

    let dest = s.stranger.path().join("clone");
    let refused = s.stranger.fails(s.stranger.path(), &["clone", &s.url(), dest.to_str().unwrap()], &[]);
    assert!(refused.contains("unknown Dolt client key"), "{refused}");
}

#[test]
fn a_clone_costs_a_few_sql_logins_not_one_per_call() {
    let s = Setup::new();
    let out = s.clone_as(BOB, BOB_PASSWORD, "counted");
    assert!(out.status.success(), "{}", text(&out));
    s.env.ok_with(&s.dest("counted"), &["fetch", "--user", BOB, "origin"], &[("DOLT_REMOTE_PASSWORD", BOB_PASSWORD)]);
    let samples = scrape(s.admin_port);
    let logins = total(&samples, "doltgate_auth_sql_logins_total", &[]);
    let calls = total(&samples, "doltgate_grpc_requests_total", &[]);
    println!("{calls} gRPC calls, {logins} SQL logins");
    assert!(logins >= 1.0, "the password was checked over SQL");
    assert!(calls >= 5.0 * logins, "{calls} calls cost {logins} SQL logins");
    assert!(total(&samples, "doltgate_auth_cache_total", &[("result", "hit")]) >= 4.0);
}

fn ci_token(expires_in: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        serde_json::json!({ "iss": "https://ci.example", "aud": "doltgate", "sub": "ci-bot", "exp": now + expires_in });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[test]
fn ghz_with_a_bearer_jwt_reaches_dolt_and_an_expired_one_does_not() {
    let s = Setup::new();
    let target = format!("127.0.0.1:{}", s.gateway.port);
    let data = r#"{"repo_path":"shop","client_repo_format":{"nbf_version":"__DOLT__","nbs_version":"5"}}"#;
    let load = ["-n", "200", "-c", "4"];
    let (ok, count, _) = ghz_as(&format!("Bearer {}", ci_token(300)), &target, "GetRepoMetadata", data, &load);
    assert_eq!((ok, count), (200, 200), "every call with a valid token is answered by Dolt");
    let (ok, count, _) = ghz_as(&format!("Bearer {}", ci_token(-3600)), &target, "GetRepoMetadata", data, &load);
    assert_eq!((ok, count), (0, 200), "an expired token gets nothing");

    // A credential helper's header (`auth.token_header`) stands in for `authorization`.
    let token = format!("Bearer {}", ci_token(300));
    let header = [("x-doltgate-token", token.as_str())];
    let (ok, count, _) = ghz_with_metadata(&header, &target, "GetRepoMetadata", data, &load);
    assert_eq!((ok, count), (200, 200), "the token header alone authenticates");
    let both = [("x-doltgate-token", token.as_str()), ("authorization", "Basic bm9ib2R5Ong=")];
    let (ok, _, _) = ghz_with_metadata(&both, &target, "GetRepoMetadata", data, &load);
    assert_eq!(ok, 200, "the token header wins over a stale authorization");
    let expired = format!("Bearer {}", ci_token(-3600));
    let (ok, _, _) =
        ghz_with_metadata(&[("x-doltgate-token", expired.as_str())], &target, "GetRepoMetadata", data, &load);
    assert_eq!(ok, 0, "the token header is checked like authorization");
    let samples = scrape(s.admin_port);
    assert!(total(&samples, "doltgate_auth_attempts_total", &[("kind", "bearer"), ("outcome", "refused")]) >= 1.0);
}

type Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// An HTTP/2 connection to doltgate from `local` (an address on loopback).
async fn connect_from<B>(local: std::net::IpAddr, port: u16) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    // As gRPC clients do: no Nagle delay between a request's frames.
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// One Root call over its own HTTP/2 connection from `local`: the gRPC
/// status, and how long the call took (connecting included).
async fn root_from(local: std::net::IpAddr, port: u16, authorization: &str) -> (Option<String>, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut sender = connect_from(local, port).await;
    (root_on(&mut sender, port, authorization).await, started.elapsed())
}

/// One Root call on an open connection: its gRPC status.
async fn root_on(sender: &mut Sender, port: u16, authorization: &str) -> Option<String> {
    use http_body_util::BodyExt;
    use prost::Message;
    let message =
        doltgate::remotesapi::proto::RootRequest { repo_path: "shop".into(), ..Default::default() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}/dolt.services.remotesapi.v1alpha1.ChunkStoreService/Root"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", authorization)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let head = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    head.get("grpc-status").or_else(|| trailers.get("grpc-status")).map(|v| v.to_str().unwrap().to_owned())
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn median(mut samples: Vec<std::time::Duration>) -> std::time::Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A flood of wrong passwords (for the static user, whose check is Argon2, and
/// for unknown users, whose check is a SQL login) from another address on
/// loopback does not slow a legitimate user's cached calls past 2x, and costs
/// only a bounded number of SQL logins: the flooding address is refused once
/// it has failed `auth.failed_logins.per_address` times.
#[test]
fn a_password_flood_from_one_address_neither_starves_others_nor_burns_logins() {
    let s = Setup::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let legit: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let flooder: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let port = s.gateway.port;
    let bob = basic(BOB, BOB_PASSWORD);
    let logins = |s: &Setup| total(&scrape(s.admin_port), "doltgate_auth_sql_logins_total", &[]);

    runtime.block_on(async {
        assert_eq!(root_from(legit, port, &bob).await.0.as_deref(), Some("0"), "bob reads (and is cached)");
        let mut unloaded = Vec::new();
        for _ in 0..50 {
            unloaded.push(root_from(legit, port, &bob).await.1);
        }
        let unloaded = median(unloaded);
        let logins_before = logins(&s);

        // 200+ wrong-password calls per second for 3 seconds, from 127.0.0.2.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut flood = Vec::new();
        for worker in 0..8 {
            let (stop, sent) = (stop.clone(), sent.clone());
            flood.push(tokio::spawn(async move {
                // One connection per worker: the flood is calls, not sockets.
                let mut sender = connect_from(flooder, port).await;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let credential = match n % 2 {
                        0 => basic(CAROL, &format!("guess-{worker}-{n}")),
                        _ => basic(&format!("nobody{worker}x{n}"), "guess"),
                    };
                    let _ = root_on(&mut sender, port, &credential).await;
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    n += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut loaded = Vec::new();
        for _ in 0..50 {
            let (status, took) = root_from(legit, port, &bob).await;
            assert_eq!(status.as_deref(), Some("0"), "bob is served during the flood");
            loaded.push(took);
        }
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(3) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in flood {
            task.await.unwrap();
        }
        // Unloaded again, after the flood: other tests share the machine, so the
        // background load can change within seconds; compare with the slower of the two.
        let mut after = Vec::new();
        for _ in 0..50 {
            after.push(root_from(legit, port, &bob).await.1);
        }
        let unloaded = unloaded.max(median(after));
        let loaded = median(loaded);
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        let logins_during = logins(&s) - logins_before;
        println!("flood: {sent} wrong-password calls; bob's median {unloaded:?} unloaded, {loaded:?} during; {logins_during} SQL logins");
        assert!(sent >= 600, "the flood reached 200 calls per second: {sent} in about 3.5 s");
        assert!(loaded <= unloaded * 2, "a legitimate cached call took {loaded:?} during the flood, {unloaded:?} before");
        assert!(logins_during <= 20.0, "the flood cost {logins_during} SQL logins");
        assert!(total(&scrape(s.admin_port), "doltgate_auth_throttled_total", &[("by", "address")]) > 0.0);
        // And a fresh, correct credential from elsewhere still gets in.
        let eve = basic(EVE, EVE_PASSWORD);
        let status = root_from(legit, port, &eve).await.0;
        assert!(status.as_deref() != Some("14"), "eve's address is not throttled: {status:?}");
    });
}

/// Opens `count` StreamDownloadLocations streams as `authorization` over one
/// HTTP/2 connection, each sending one message and then nothing, held open
/// until the returned tasks are aborted.
async fn hold_streams(port: u16, authorization: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use prost::Message;
    let sender = connect_from(std::net::Ipv4Addr::LOCALHOST.into(), port).await;
    let message = doltgate::remotesapi::proto::GetDownloadLocsRequest {
        repo_path: "shop".into(),
        chunk_hashes: vec![vec![1u8; 20].into()],
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    (0..count)
        .map(|_| {
            let mut sender = sender.clone();
            let first = bytes::Bytes::from(framed.clone());
            let authorization = authorization.to_owned();
            tokio::spawn(async move {
                let body = futures_util::stream::once(async move {
                    Ok::<_, std::convert::Infallible>(http_body::Frame::data(first))
                })
                .chain(futures_util::stream::pending());
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!(
                        "http://127.0.0.1:{port}/dolt.services.remotesapi.v1alpha1.ChunkStoreService/StreamDownloadLocations"
                    ))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .header("authorization", authorization)
                    .body(http_body_util::StreamBody::new(Box::pin(body)))
                    .unwrap();
                if let Ok(response) = sender.send_request(request).await {
                    let _held = response;
                    std::future::pending::<()>().await;
                }
            })
        })
        .collect()
}

/// One user holding hundreds of streams (more than the ~250 Dolt allows on
/// the one upstream connection every call shares) cannot delay another
/// user's calls: past `limits.max_streams_per_user` their streams wait and are
/// refused, and another user's median stays within 2x its unloaded median.
#[test]
fn a_user_holding_streams_cannot_starve_another() {
    use futures_util::StreamExt;
    let s = Setup::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let legit: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let port = s.gateway.port;
    let bob = basic(BOB, BOB_PASSWORD);
    let carol = basic(CAROL, CAROL_PASSWORD);
    let call = |who: &str| {
        let who = who.to_owned();
        async move {
            match tokio::time::timeout(std::time::Duration::from_secs(10), root_from(legit, port, &who)).await {
                Ok((status, took)) => {
                    assert_eq!(status.as_deref(), Some("0"));
                    took
                }
                Err(_) => std::time::Duration::from_secs(10),
            }
        }
    };
    runtime.block_on(async {
        call(&bob).await;
        call(&carol).await;
        let mut unloaded = Vec::new();
        for _ in 0..50 {
            unloaded.push(call(&bob).await);
        }
        let unloaded = median(unloaded);
        let mut held = hold_streams(port, &carol, 150).await;
        held.extend(hold_streams(port, &carol, 150).await);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut loaded = Vec::new();
        for _ in 0..50 {
            loaded.push(call(&bob).await);
        }
        let loaded = median(loaded);
        // Streams past the limit are refused once they have waited for a slot
        // (limits.queue_wait, 5 s from each one's arrival).
        let refused_now = || {
            total(&scrape(s.admin_port), "doltgate_user_limit_total", &[("limit", "streams"), ("outcome", "refused")])
        };
        let waited = std::time::Instant::now();
        while refused_now() < 236.0 && waited.elapsed() < std::time::Duration::from_secs(20) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let refused = refused_now();
        held.iter().for_each(|task| task.abort());
        futures_util::stream::iter(held).for_each(|task| async move { drop(task.await) }).await;
        println!(
            "held streams: bob's median {unloaded:?} unloaded, {loaded:?} while carol holds 300; {refused} refused"
        );
        assert!(loaded <= unloaded * 2, "bob's calls took {loaded:?} while carol held streams, {unloaded:?} before");
        assert!(refused >= 236.0, "carol's 236 streams past the limit of 64 were refused: {refused}");
    });
}

/// More streams than Dolt serves on one HTTP/2 connection (about 250), all
/// admitted: doltgate opens more upstream connections rather than letting a
/// call wait inside a full one, so another user's unary calls stay fast.
#[test]
fn streams_past_one_upstream_connection_open_another() {
    let s = Setup::with_config("service", "\n[limits]\nmax_streams_per_user = 400\n", "");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let legit: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let port = s.gateway.port;
    let bob = basic(BOB, BOB_PASSWORD);
    let carol = basic(CAROL, CAROL_PASSWORD);
    let call = |who: String| async move {
        match tokio::time::timeout(std::time::Duration::from_secs(10), root_from(legit, port, &who)).await {
            Ok((status, took)) => {
                assert_eq!(status.as_deref(), Some("0"));
                took
            }
            Err(_) => std::time::Duration::from_secs(10),
        }
    };
    let connections = || total(&scrape(s.admin_port), "doltgate_upstream_connections", &[]);
    runtime.block_on(async {
        call(carol.clone()).await;
        let mut unloaded = Vec::new();
        for _ in 0..50 {
            unloaded.push(call(bob.clone()).await);
        }
        let unloaded = median(unloaded);
        let before = connections();
        let mut held = hold_streams(port, &carol, 150).await;
        held.extend(hold_streams(port, &carol, 150).await);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut loaded = Vec::new();
        for _ in 0..50 {
            loaded.push(call(bob.clone()).await);
        }
        let slowest = loaded.iter().max().copied().unwrap_or_default();
        let loaded = median(loaded);
        let during = connections();
        held.iter().for_each(|task| task.abort());
        // Unloaded again once the streams are gone: other tests share the machine,
        // so compare with the slower of before and after.
        let mut after = Vec::new();
        for _ in 0..50 {
            after.push(call(bob.clone()).await);
        }
        let unloaded = unloaded.max(median(after));
        println!(
            "held 300 streams: upstream connections {before} -> {during}; bob's median {unloaded:?} -> {loaded:?}, slowest {slowest:?}"
        );
        assert!(loaded <= unloaded * 2, "bob's calls took {loaded:?} while 300 streams were held, {unloaded:?} before");
        // A call queued inside a full connection waits for a held stream to end (10 s here, the timeout).
        assert!(slowest < std::time::Duration::from_secs(2), "a call of bob's waited {slowest:?} for a stream slot");
        assert!(during >= 3.0, "300 streams at 128 per connection need 3 upstream connections, had {during}");
    });
}

/// A clone storm: eight clones at once by one user, against a limit of two
/// table-file transfers per user. Transfers past the limit queue instead of
/// piling onto Dolt, and every clone completes with the server's history.
#[test]
fn a_clone_storm_queues_and_every_clone_completes() {
    let blobs = format!(
        "CREATE TABLE blobs (id INT PRIMARY KEY, payload LONGBLOB); SET @@cte_max_recursion_depth = 1000; \
         INSERT INTO blobs WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
         SELECT i, CONCAT({}) FROM n;",
        vec!["RANDOM_BYTES(1024)"; 16].join(", ")
    );
    let s = Setup::with_config("service", "\n[limits]\nmax_transfers_per_user = 2\nqueue_wait = \"30s\"\n", &blobs);
    let head = s.server.sql(&s.env, "SELECT hash FROM shop.dolt_branches WHERE name = 'main'");
    let head = head.lines().nth(1).unwrap().trim().to_owned();
    let clones: Vec<_> = (0..8)
        .map(|i| {
            let dest = s.dest(&format!("storm-{i}"));
            // Each clone from its own directory: concurrent clones sharing a
            // working directory race on Dolt's temp dir there.
            let cwd = s.dest(&format!("storm-{i}-cwd"));
            std::fs::create_dir_all(&cwd).unwrap();
            let mut command = s.env.command(&cwd, &["clone", "--user", BOB, &s.url(), dest.to_str().unwrap()]);
            command.env("DOLT_REMOTE_PASSWORD", BOB_PASSWORD);
            (dest, command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap())
        })
        .collect();
    for (dest, child) in clones {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a clone in the storm failed: {}", text(&out));
        assert_eq!(s.env.log_hashes(&dest, "main")[0], head, "the clone has the server's history");
        let count = s.env.query_csv(&dest, "SELECT COUNT(*) FROM blobs");
        assert!(count.contains("300"), "every row arrived: {count}");
    }
    let queued =
        total(&scrape(s.admin_port), "doltgate_user_limit_total", &[("limit", "transfers"), ("outcome", "queued")]);
    let refused =
        total(&scrape(s.admin_port), "doltgate_user_limit_total", &[("limit", "transfers"), ("outcome", "refused")]);
    println!("clone storm: {queued} transfers queued, {refused} refused");
    assert!(queued > 0.0, "the storm met the limit");
}
