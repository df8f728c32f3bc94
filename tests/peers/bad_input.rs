//! A bad-input corpus against a running doltgate binary with a real
//! `dolt sql-server` behind it, authentication configured (a service user
//! talks to Dolt; SQL users, a static user, a registered `dolt creds` key and
//! a JWT issuer; per-database grants).
//!
//! Every case asserts the exact gRPC status or HTTP status doltgate answers,
//! and that nothing reached the upstream that should not have: for refused
//! calls the count of calls doltgate forwarded (`doltgate_grpc_requests_total`
//! with the endpoint label set) does not move, refused table-file requests are
//! answered by doltgate itself (its `doltgate:` body), and at the end the
//! server's branches and root are what they were.
//!
//! All cases run in one test against one server (starting Dolt is the slow
//! part); mismatches are collected and reported together, and the number of
//! cases tried is printed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;
use base64::Engine;
use bytes::Bytes;
use doltgate::remotesapi::proto::chunk_store_service_client::ChunkStoreServiceClient;
use doltgate::remotesapi::proto::*;
use http_body_util::BodyExt;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-pass-1";
const EVE: &str = "eve";
const EVE_PASSWORD: &str = "eves-pass-1";
const CAROL: &str = "carol";
const CAROL_PASSWORD: &str = "carols static password";
const JWT_SECRET: &str = "a-shared-secret-for-the-ci-issuer-0123";
const URL_KEY: &str = "bad-input-test-url-key-0123456789abcdef";
const ISSUER: &str = "https://ci.example";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// An HS256 token with a header of our own (jsonwebtoken's has no `crit`).
fn hs256_with_header(header: &str, claims: &serde_json::Value) -> String {
    let signing_input = format!("{}.{}", b64url(header.as_bytes()), b64url(claims.to_string().as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let signature = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(signature.as_ref()))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An Ed25519 key pair the way `dolt creds new` makes one: (PKCS#8 DER, public key text, key id).
fn dolt_key() -> (Vec<u8>, String, String) {
    use ring::signature::KeyPair;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
    let text = spec.encoding().unwrap().encode(&public);
    let id = doltgate::authn::dolt_keys::key_id(&public);
    (pkcs8.as_ref().to_vec(), text, id)
}

/// A token as Dolt's CLI signs it with a `dolt creds` key.
fn dolt_token(pkcs8: &[u8], kid: &str, aud: &str, expires_in: i64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let claims = serde_json::json!({
        "iss": "dolt-client.dolthub.com",
        "sub": format!("doltClientCredentials/{kid}"),
        "aud": aud,
        "exp": now() + expires_in,
        "iat": now(),
    });
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(pkcs8)).unwrap()
}

struct Setup {
    env: DoltEnv,
    server: DoltServer,
    gateway: Doltgate,
    admin_port: u16,
    /// The registered `dolt creds` key (PKCS#8) and its id.
    dana_key: (Vec<u8>, String),
}

impl Setup {
    fn new() -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        let db = data.join("shop");
        env.init_repo(&db);
        env.ok(&db, &["sql", "-q", "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64));"]);
        env.ok(&db, &["sql", "-q", "INSERT INTO items VALUES (1, 'apple'), (2, 'pear');"]);
        env.ok(&db, &["commit", "-Am", "items"]);
        env.ok(&db, &["branch", "release"]);
        // A database nobody in this test may read.
        let secret = data.join("secret");
        env.init_repo(&secret);
        env.ok(&secret, &["sql", "-q", "CREATE TABLE s (id INT PRIMARY KEY); INSERT INTO s VALUES (42);"]);
        env.ok(&secret, &["commit", "-Am", "secret"]);
        let users = format!(
            "CREATE USER '{BOB}'@'%' IDENTIFIED BY '{BOB_PASSWORD}'; CREATE USER '{EVE}'@'%' IDENTIFIED BY '{EVE_PASSWORD}';"
        );
        env.ok(&data, &["sql", "-q", &users]);
        // DoltServer::start also creates alice, doltgate's service user here.
        let server = DoltServer::start(&env, &data);
        let (pkcs8, dana_public, dana_id) = dolt_key();
        let admin_port = free_port();
        let config = env.path().join("doltgate.toml");
        let carol_hash = hash_password(CAROL_PASSWORD);
        std::fs::write(
            &config,
            format!(
                r#"
[admin]
address = "127.0.0.1:{admin_port}"

[file_urls]
key_env = "URL_KEY"

[limits]
request_read_timeout = "5s"

{cluster}

[auth]
upstream_credentials = "service"
dolt_key_audiences = ["127.0.0.1"]

# Every case below comes from one address; the corpus is not a flood.
[auth.failed_logins]
per_address = 100000

[[auth.users]]
name = "{CAROL}"
password_hash = "{carol_hash}"
groups = ["readers"]

[[auth.users]]
name = "dana"
dolt_keys = ["{dana_public}"]
groups = ["readers"]

[[auth.jwt]]
name = "ci-issuer"
issuer = "{ISSUER}"
audiences = ["doltgate"]
algorithms = ["HS256"]
secret_env = "JWT_SECRET"

[[auth.grants]]
databases = ["shop"]
users = ["{BOB}"]
permission = "write"

[[auth.grants]]
databases = ["shop"]
groups = ["readers"]
permission = "read"

[[auth.grants]]
databases = ["shop*"]
users = ["ci-issuer:ci-bot"]
permission = "read"
"#,
                cluster = service_cluster_config(&server),
            ),
        )
        .unwrap();
        let gateway = Doltgate::start_with_config_env(
            env.path(),
            &config,
            &[("SERVICE_PASSWORD", PASSWORD), ("JWT_SECRET", JWT_SECRET), ("URL_KEY", URL_KEY)],
        );
        Setup { env, server, gateway, admin_port, dana_key: (pkcs8, dana_id) }
    }

    /// `name,hash` of every branch, read over SQL from the server itself.
    fn server_branches(&self) -> String {
        self.server.sql(&self.env, "SELECT name, hash FROM shop.dolt_branches ORDER BY name")
    }

    /// How many calls doltgate has forwarded to the upstream (and seen finish).
    fn forwarded(&self) -> f64 {
        total(&scrape(self.admin_port), "doltgate_grpc_requests_total", &[("endpoint", "dolt")])
    }
}

/// Collects every case's outcome, counted by category (the `// ----`
/// sections below); mismatches are reported together at the end.
#[derive(Default)]
struct Corpus {
    tried: usize,
    failures: Vec<String>,
    category: &'static str,
    by_category: Vec<(&'static str, usize)>,
}

impl Corpus {
    /// Cases from here on count toward `name`.
    fn category(&mut self, name: &'static str) {
        self.category = name;
        self.by_category.push((name, 0));
    }

    fn check<T: std::fmt::Debug + PartialEq>(&mut self, name: &str, got: T, want: T) {
        self.tried += 1;
        if let Some((_, count)) = self.by_category.last_mut() {
            *count += 1;
        }
        if got != want {
            self.failures.push(format!("[{}] {name}: got {got:?}, want {want:?}", self.category));
        }
    }

    fn holds(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("{name}: {}", detail()));
        }
    }
}

fn with_auth<T>(message: T, authorization: &[&str]) -> Request<T> {
    let mut request = Request::new(message);
    for value in authorization {
        let value = MetadataValue::try_from(*value).expect("an ASCII header value");
        request.metadata_mut().append("authorization", value);
    }
    request
}

fn root_request(repo_path: &str) -> RootRequest {
    RootRequest { repo_path: repo_path.into(), ..Default::default() }
}

fn format() -> Option<ClientRepoFormat> {
    Some(ClientRepoFormat { nbf_version: "__DOLT__".into(), nbs_version: "5".into() })
}

/// The outcome of one gRPC call: its status code (OK included).
fn code_of<T>(result: &Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// One unary call over raw HTTP/2: returns (HTTP status, grpc-status, grpc-message),
/// or the transport error. The body is sent as given, framing and all.
async fn raw_grpc(
    port: u16,
    path: &str,
    headers: &[(&str, Vec<u8>)],
    body: Vec<u8>,
) -> Result<(u16, Option<i32>, String), String> {
    raw_grpc_held(port, path, headers, body, Duration::ZERO).await
}

/// Like [`raw_grpc`], keeping the request stream open for `hold` after the body.
async fn raw_grpc_held(
    port: u16,
    path: &str,
    headers: &[(&str, Vec<u8>)],
    body: Vec<u8>,
    hold: Duration,
) -> Result<(u16, Option<i32>, String), String> {
    use futures_util::StreamExt;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, http::HeaderValue::from_bytes(value).map_err(|e| e.to_string())?);
    }
    let first = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(body)))
    });
    let rest = futures_util::stream::once(async move {
        tokio::time::sleep(hold).await;
        Ok(http_body::Frame::data(Bytes::new()))
    })
    .filter(move |_| std::future::ready(!hold.is_zero()));
    let request = request.body(http_body_util::StreamBody::new(Box::pin(first.chain(rest)))).unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let head = response.headers().clone();
    let collected = response.into_body().collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| head.get(name).or_else(|| trailers.get(name)).map(|v| v.to_str().unwrap_or("").to_owned());
    let code = field("grpc-status").and_then(|c| c.parse().ok());
    Ok((status, code, field("grpc-message").unwrap_or_default()))
}

/// A gRPC length-prefixed frame.
fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

const ROOT_PATH: &str = "/dolt.services.remotesapi.v1alpha1.ChunkStoreService/Root";

/// One HTTP/1.1 request written as given; returns (status, body).
async fn raw_http1(port: u16, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn bad_input_is_refused_exactly_and_never_reaches_dolt() {
    let s = Setup::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let branches_before = s.server_branches();
    let mut corpus = Corpus::default();
    runtime.block_on(run(&s, &mut corpus));
    corpus.category("nothing changed or forged afterwards");
    corpus.check("server branches unchanged after the corpus", s.server_branches(), branches_before);
    // A newline in a claimed user name must not start a log line of the client's choosing.
    let log = s.gateway.process.log();
    let forged = log.lines().filter(|l| l.starts_with("INFO doltgate forged_log_line")).count();
    corpus.check("no log line forged through a Basic user name", forged, 0);
    println!("bad-input corpus: {} cases tried, {} mismatches", corpus.tried, corpus.failures.len());
    for (category, count) in &corpus.by_category {
        println!("  {count:4}  {category}");
    }
    assert!(corpus.failures.is_empty(), "mismatches:\n{}", corpus.failures.join("\n"));
    assert!(s.gateway.process.child.id() > 0);
}

async fn run(s: &Setup, corpus: &mut Corpus) {
    let port = s.gateway.port;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = ChunkStoreServiceClient::new(channel);
    let bob_auth = basic(BOB, BOB_PASSWORD);
    let bob = bob_auth.as_str();

    // A call doltgate must forward, and the counter settling on it.
    let mut forwarded = s.forwarded();
    macro_rules! allowed {
        ($name:expr, $call:expr) => {{
            let result = $call.await;
            corpus.check($name, code_of(&result), Code::Ok);
            let deadline = Instant::now() + Duration::from_secs(10);
            while s.forwarded() < forwarded + 1.0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            forwarded = s.forwarded();
            result
        }};
    }
    // A call doltgate must refuse with `$code` without forwarding it.
    macro_rules! refused {
        ($name:expr, $code:expr, $call:expr) => {{
            let result = $call.await;
            corpus.check($name, code_of(&result), $code);
            if let Err(status) = result.as_ref().map(|_| ()).map_err(|e| e.message().to_owned()) {
                if code_of(&result) != $code {
                    corpus.failures.push(format!("  ({} said: {status:.300})", $name));
                }
            }
            let now = s.forwarded();
            corpus.check(&format!("{} (not forwarded)", $name), now, forwarded);
            forwarded = now;
            drop(result);
        }};
    }

    // ---- positive controls: the setup works, so refusals below mean something.
    corpus.category("controls");
    let root = allowed!("control: bob reads the root", client.root(with_auth(root_request("shop"), &[bob])))
        .expect("bob can read")
        .into_inner()
        .root_hash;
    let _ = allowed!(
        "control: carol (static user) reads",
        client.root(with_auth(root_request("shop"), &[basic(CAROL, CAROL_PASSWORD).as_str()]))
    );

    // ---- authorization headers
    corpus.category("authorization headers");
    refused!("no authorization", Code::Unauthenticated, client.root(with_auth(root_request("shop"), &[])));
    refused!(
        "two authorization headers",
        Code::Unauthenticated,
        client.root(with_auth(root_request("shop"), &[bob, bob]))
    );
    refused!(
        "two different authorization headers",
        Code::Unauthenticated,
        client.root(with_auth(root_request("shop"), &[basic(CAROL, CAROL_PASSWORD).as_str(), bob]))
    );
    refused!("empty authorization", Code::Unauthenticated, client.root(with_auth(root_request("shop"), &[""])));
    for (name, value) in [
        ("unknown scheme", "Digest username=\"bob\"".to_owned()),
        ("scheme without a space", format!("Basic{}", &bob[6..])),
        ("Basic not base64", "Basic !!!not*base64!!!".to_owned()),
        ("Basic without a colon", format!("Basic {}", b64url(b"bobwithoutcolon"))),
        ("Basic with an empty user", basic("", "pw")),
        ("Basic with a wrong password", basic(BOB, "not-bobs")),
        ("Basic for an unknown user", basic("mallory", "pw")),
        ("Basic for a static user, wrong password", basic(CAROL, "nope")),
        ("Basic, SQL injection as user", basic("x' OR '1'='1", "pw")),
        ("Basic of 12 kB", basic(&"u".repeat(6_000), &"p".repeat(6_000))),
        ("Basic with a newline in the user name", basic("evil\nINFO doltgate forged_log_line", "pw")),
        // MySQL's handshake stops at the NUL: this would log in as bob under another name.
        ("Basic with a NUL in a real user's name", basic(&format!("{BOB}\0_admin"), BOB_PASSWORD)),
        ("Bearer with no token", "Bearer ".to_owned()),
        ("Bearer garbage", "Bearer abc".to_owned()),
    ] {
        refused!(name, Code::Unauthenticated, client.root(with_auth(root_request("shop"), &[value.as_str()])));
    }
    {
        // Not UTF-8 once decoded: only raw bytes can say it.
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b"bob\xff\xfe:pw"));
        refused!(
            "Basic decoding to non-UTF-8",
            Code::Unauthenticated,
            client.root(with_auth(root_request("shop"), &[value.as_str()]))
        );
        let message = root_request("shop").encode_to_vec();
        let raw = raw_grpc(port, ROOT_PATH, &[("authorization", b"Basic \xff\xfe".to_vec())], frame(0, &message)).await;
        corpus.check("authorization with non-ASCII bytes", raw.map(|r| r.1), Ok(Some(Code::Unauthenticated as i32)));
        corpus.check("authorization with non-ASCII bytes (not forwarded)", s.forwarded(), forwarded);
    }
    refused!(
        "a permitted user on a database without a grant",
        Code::PermissionDenied,
        client.root(with_auth(root_request("other"), &[bob]))
    );
    refused!(
        "a SQL user without any grant",
        Code::PermissionDenied,
        client.root(with_auth(root_request("shop"), &[basic(EVE, EVE_PASSWORD).as_str()]))
    );
    {
        // Above limits.max_header_bytes (64 KiB): the h2 layer refuses the header block.
        let message = root_request("shop").encode_to_vec();
        let huge = format!("Basic {}", "A".repeat(80_000)).into_bytes();
        let raw = raw_grpc(port, ROOT_PATH, &[("authorization", huge)], frame(0, &message)).await;
        corpus.check("authorization of 80 kB (over the header limit)", raw.map(|r| r.0).map_err(|_| ()), Ok(431));
        corpus.check("authorization of 80 kB (not forwarded)", s.forwarded(), forwarded);
    }

    // ---- bearer JWTs from the configured issuer
    corpus.category("bearer JWTs");
    let claims = |overrides: serde_json::Value| {
        let mut claims = serde_json::json!({ "iss": ISSUER, "aud": "doltgate", "sub": "ci-bot", "exp": now() + 300 });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let bearer = |token: String| format!("Bearer {token}");
    let _ = allowed!(
        "control: a valid CI token reads",
        client.root(with_auth(
            root_request("shop"),
            &[bearer(hs256(claims(serde_json::json!({})), JWT_SECRET)).as_str()]
        ))
    );
    let valid = hs256(claims(serde_json::json!({})), JWT_SECRET);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let hs512 = {
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
        jsonwebtoken::encode(&header, &claims(serde_json::json!({})), &key).unwrap()
    };
    let flipped = {
        let mut sig = signature.as_bytes().to_vec();
        sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
        String::from_utf8(sig).unwrap()
    };
    for (name, token) in [
        ("JWT expired", hs256(claims(serde_json::json!({ "exp": now() - 3600 })), JWT_SECRET)),
        ("JWT not yet valid", hs256(claims(serde_json::json!({ "nbf": now() + 3600 })), JWT_SECRET)),
        ("JWT for another audience", hs256(claims(serde_json::json!({ "aud": "someone-else" })), JWT_SECRET)),
        ("JWT from an unknown issuer", hs256(claims(serde_json::json!({ "iss": "https://evil.example" })), JWT_SECRET)),
        ("JWT without an issuer", hs256(claims(serde_json::json!({ "iss": null })), JWT_SECRET)),
        ("JWT without exp", hs256(claims(serde_json::json!({ "exp": null })), JWT_SECRET)),
        ("JWT signed with another secret", hs256(claims(serde_json::json!({})), "not-the-secret-at-all-0123456789")),
        ("JWT with alg none", format!("{none_header}.{payload}.")),
        ("JWT with an algorithm the provider does not allow", hs512),
        ("JWT with a flipped signature byte", format!("{head}.{payload}.{flipped}")),
        ("JWT without a signature", format!("{head}.{payload}")),
        ("JWT truncated", valid[..valid.len() / 2].to_owned()),
        ("JWT with a payload that is not JSON", format!("{head}.{}.{signature}", b64url(b"not json"))),
        ("JWT with a payload that is not base64", format!("{head}.%%%.{signature}")),
        (
            "JWT with a spliced payload",
            format!(
                "{head}.{}.{signature}",
                b64url(br#"{"iss":"https://ci.example","aud":"doltgate","sub":"root","exp":99999999999}"#)
            ),
        ),
        ("JWT of four parts", format!("{valid}.{signature}")),
        // exp = 2^63 once overflowed time arithmetic and panicked the call's task.
        ("JWT with exp 2^63", hs256(claims(serde_json::json!({ "exp": 1u64 << 63 })), JWT_SECRET)),
        ("JWT with exp u64::MAX", hs256(claims(serde_json::json!({ "exp": u64::MAX })), JWT_SECRET)),
        // Valid, but for longer than auth.max_token_lifetime (default 24h).
        ("JWT valid for two days", hs256(claims(serde_json::json!({ "exp": now() + 2 * 86_400 })), JWT_SECRET)),
        (
            "JWT naming a critical extension (crit)",
            hs256_with_header(
                r#"{"alg":"HS256","typ":"JWT","crit":["acme-bound"],"acme-bound":true}"#,
                &claims(serde_json::json!({})),
            ),
        ),
    ] {
        refused!(name, Code::Unauthenticated, client.root(with_auth(root_request("shop"), &[bearer(token).as_str()])));
    }

    // A token whose subject is bob (a SQL user with write on shop) is
    // ci-issuer:bob, who has no grant: claims never take another source's grants.
    refused!(
        "JWT whose subject names a SQL user, writing",
        Code::PermissionDenied,
        client.get_upload_locations(with_auth(
            GetUploadLocsRequest { repo_path: "shop".into(), ..Default::default() },
            &[bearer(hs256(claims(serde_json::json!({ "sub": BOB })), JWT_SECRET)).as_str()]
        ))
    );
    refused!(
        "JWT whose subject names a static user, reading",
        Code::PermissionDenied,
        client.root(with_auth(
            root_request("shop"),
            &[bearer(hs256(claims(serde_json::json!({ "sub": CAROL })), JWT_SECRET)).as_str()]
        ))
    );

    // ---- Dolt client-key tokens (`dolt creds`)
    corpus.category("dolt creds tokens");
    let (dana_pkcs8, dana_id) = &s.dana_key;
    let _ = allowed!(
        "control: the registered dolt creds key reads",
        client.root(with_auth(
            root_request("shop"),
            &[bearer(dolt_token(dana_pkcs8, dana_id, "127.0.0.1", 30)).as_str()]
        ))
    );
    let (stranger_pkcs8, _, stranger_id) = dolt_key();
    for (name, token) in [
        ("dolt creds token from an unregistered key", dolt_token(&stranger_pkcs8, &stranger_id, "127.0.0.1", 30)),
        (
            "forged dolt creds token: registered key id, signed by another key",
            dolt_token(&stranger_pkcs8, dana_id, "127.0.0.1", 30),
        ),
        ("dolt creds token for another host", dolt_token(dana_pkcs8, dana_id, "evil.example", 30)),
        ("dolt creds token expired", dolt_token(dana_pkcs8, dana_id, "127.0.0.1", -600)),
        ("dolt creds token without a key id", {
            let token = dolt_token(dana_pkcs8, dana_id, "127.0.0.1", 30);
            let (_, rest) = token.split_once('.').unwrap();
            format!("{}.{rest}", b64url(br#"{"alg":"EdDSA","typ":"JWT"}"#))
        }),
    ] {
        refused!(name, Code::Unauthenticated, client.root(with_auth(root_request("shop"), &[bearer(token).as_str()])));
    }
    {
        // A token a user's CLI signed for another remote (aud = that host),
        // replayed here with the request's authority set to match: the
        // accepted audiences come from configuration only.
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .origin("http://evil.example".parse().unwrap())
            .connect()
            .await
            .unwrap();
        let mut spoofing = ChunkStoreServiceClient::new(channel);
        let token = bearer(dolt_token(dana_pkcs8, dana_id, "evil.example", 30));
        refused!(
            "dolt creds token for another host, sent with that host as :authority",
            Code::Unauthenticated,
            spoofing.root(with_auth(root_request("shop"), &[token.as_str()]))
        );
    }
    refused!(
        "registered dolt creds key pushing without a write grant",
        Code::PermissionDenied,
        client.commit(with_auth(
            CommitRequest {
                repo_path: "shop".into(),
                current: root.clone(),
                last: root.clone(),
                client_repo_format: format(),
                ..Default::default()
            },
            &[bearer(dolt_token(dana_pkcs8, dana_id, "127.0.0.1", 30)).as_str()]
        ))
    );

    // ---- repo_path
    corpus.category("database names (repo_path)");
    refused!("repo_path empty", Code::InvalidArgument, client.root(with_auth(root_request(""), &[bob])));
    {
        // A stream whose second message names another database: the refusal
        // must reach the client as that permanent status, whether or not Dolt
        // answered the first message before the upstream call was aborted.
        let message = |repo: &str| {
            GetDownloadLocsRequest { repo_path: repo.into(), chunk_hashes: vec![root.clone()], ..Default::default() }
                .encode_to_vec()
        };
        let body = [frame(0, &message("shop")), frame(0, &message("secret"))].concat();
        for attempt in 0..5 {
            let raw = raw_grpc(
                port,
                "/dolt.services.remotesapi.v1alpha1.ChunkStoreService/StreamDownloadLocations",
                &[("authorization", bob.as_bytes().to_vec())],
                body.clone(),
            )
            .await;
            corpus.check(
                &format!("stream switching database, attempt {attempt}"),
                raw.as_ref().map(|r| r.1).map_err(|e| e.clone()),
                Ok(Some(Code::InvalidArgument as i32)),
            );
        }
        // Their first messages went upstream, as a stream's do before its second is read.
        corpus.check("stream switching database (first messages forwarded)", s.forwarded() > forwarded, true);
        forwarded = s.forwarded();
    }

    // Names are judged as the database Dolt resolves them to (lower-cased, cut
    // at / and @): every spelling of "shop" is shop, which bob may read...
    for name in ["shop/", "shop@main", "SHOP", "Shop/main"] {
        let _ = allowed!(&format!("repo_path {name:?} reads shop"), client.root(with_auth(root_request(name), &[bob])));
    }
    // ...and may not write but under its exact name,
    for name in ["SHOP", "shop/main", "shop@main"] {
        let request = GetUploadLocsRequest { repo_path: name.into(), ..Default::default() };
        refused!(
            &format!("write through repo_path {name:?}"),
            Code::InvalidArgument,
            client.get_upload_locations(with_auth(request, &[bob]))
        );
    }
    // while no spelling of "secret" gets past his lack of a grant on it.
    for name in ["SECRET", "secret/main", "secret@x", "Secret/"] {
        refused!(
            &format!("repo_path {name:?}"),
            Code::PermissionDenied,
            client.root(with_auth(root_request(name), &[bob]))
        );
    }
    // Anything that is no spelling of shop is refused before it is forwarded,
    // by the router when no route can match, else by the grants.
    for name in ["a/b", "..", "../shop", "shop\0", "sh%6fp"] {
        refused!(
            &format!("repo_path {name:?}"),
            Code::PermissionDenied,
            client.root(with_auth(root_request(name), &[bob]))
        );
    }
    for name in ["/shop", "@"] {
        refused!(&format!("repo_path {name:?}"), Code::NotFound, client.root(with_auth(root_request(name), &[bob])));
    }
    {
        // ci-bot may read every database whose name starts with "shop": names
        // that only look like it must not reach another database.
        let ci = bearer(hs256(claims(serde_json::json!({})), JWT_SECRET));
        for name in [
            "shop/../secret",
            "shop/../../server/secret",
            "shop/..",
            "shop@secret",
            "shop\\..\\secret",
            "shop%2f..%2fsecret",
        ] {
            let result = client.root(with_auth(root_request(name), &[ci.as_str()])).await;
            corpus.check(&format!("repo_path {name:?} under a shop* grant"), code_of(&result), Code::NotFound);
        }
        let message = [vec![0x1a, 5], b"shop\xff".to_vec()].concat();
        let raw = raw_grpc(port, ROOT_PATH, &[("authorization", ci.as_bytes().to_vec())], frame(0, &message)).await;
        // Refused here, never matched lossily against a grant or forwarded.
        let raw = raw.map(|r| (r.1, r.2.contains("not UTF-8")));
        corpus.check("repo_path not UTF-8 under a shop* grant", raw, Ok((Some(Code::InvalidArgument as i32), true)));
        forwarded = s.forwarded();
    }
    refused!(
        "repo_path of 10 kB",
        Code::PermissionDenied,
        client.root(with_auth(root_request(&"s".repeat(10_000)), &[bob]))
    );
    {
        // repo_path (field 3) that is not UTF-8.
        let message = [vec![0x1a, 4], b"sh\xffp".to_vec()].concat();
        let raw = raw_grpc(port, ROOT_PATH, &[("authorization", bob.as_bytes().to_vec())], frame(0, &message)).await;
        corpus.check("repo_path not UTF-8", raw.map(|r| r.1), Ok(Some(Code::InvalidArgument as i32)));
        corpus.check("repo_path not UTF-8 (not forwarded)", s.forwarded(), forwarded);
    }

    // ---- gRPC framing, raw HTTP/2
    corpus.category("gRPC framing and raw HTTP/2");
    let auth = [("authorization", bob.as_bytes().to_vec())];
    let message = root_request("shop").encode_to_vec();
    let framing: Vec<(&str, Vec<u8>, Code)> = vec![
        ("frame header cut short", vec![0, 0, 0], Code::InvalidArgument),
        (
            "frame shorter than it declares",
            [vec![0], 100u32.to_be_bytes().to_vec(), vec![1, 2, 3]].concat(),
            Code::InvalidArgument,
        ),
        ("message cut short", frame(0, &message)[..message.len()].to_vec(), Code::InvalidArgument),
        ("compressed-flag frame", frame(1, &message), Code::Unimplemented),
        ("frame flag neither 0 nor 1", frame(0x80, &message), Code::InvalidArgument),
        ("two messages on a unary call", [frame(0, &message), frame(0, &message)].concat(), Code::InvalidArgument),
        ("no message at all", Vec::new(), Code::InvalidArgument),
        ("a message that is not protobuf", frame(0, &[0xff; 16]), Code::InvalidArgument),
        (
            "a message declaring 4 GiB",
            [vec![0], u32::MAX.to_be_bytes().to_vec(), vec![0; 64]].concat(),
            Code::ResourceExhausted,
        ),
        (
            "a message declaring 128 MiB + 1",
            [vec![0], (128u32 * 1024 * 1024 + 1).to_be_bytes().to_vec()].concat(),
            Code::ResourceExhausted,
        ),
    ];
    for (name, body, code) in framing {
        let raw = raw_grpc(port, ROOT_PATH, &auth, body).await;
        corpus.check(name, raw.map(|r| r.1), Ok(Some(code as i32)));
        corpus.check(&format!("{name} (not forwarded)"), s.forwarded(), forwarded);
    }
    {
        let raw = raw_grpc(
            port,
            "/dolt.services.remotesapi.v1alpha1.ChunkStoreService/DropDatabase",
            &auth,
            frame(0, &message),
        )
        .await;
        corpus.check("unknown method", raw.map(|r| r.1), Ok(Some(Code::Unimplemented as i32)));
        let raw = raw_grpc(
            port,
            "/../../dolt.services.remotesapi.v1alpha1.ChunkStoreService/Root",
            &auth,
            frame(0, &message),
        )
        .await;
        corpus.check("method path with ..", raw.map(|r| r.1), Ok(Some(Code::Unimplemented as i32)));
        corpus.check("odd methods (not forwarded)", s.forwarded(), forwarded);
    }
    {
        // Many streams each declaring a 128 MiB message and sending 5 bytes of it:
        // memory must stay bounded by what arrives, not what is declared.
        let rss_before = rss_kib(s.gateway.process.pid());
        let declared = [vec![0], (128u32 * 1024 * 1024 - 16).to_be_bytes().to_vec(), vec![0x1a, 4]].concat();
        let mut calls = Vec::new();
        for _ in 0..64 {
            let auth = auth.clone();
            let declared = declared.clone();
            calls.push(tokio::spawn(async move {
                let hold = Duration::from_secs(3);
                tokio::time::timeout(Duration::from_secs(20), raw_grpc_held(port, ROOT_PATH, &auth, declared, hold))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let grown = rss_kib(s.gateway.process.pid()).saturating_sub(rss_before);
        let mut answered = 0;
        for call in calls {
            if let Ok(Ok(Ok((_, Some(code), _)))) = call.await {
                answered += usize::from(code == Code::InvalidArgument as i32);
            }
        }
        corpus.check("64 streams declaring 128 MiB each, then ending: all refused as truncated", answered, 64);
        corpus.holds("64 streams declaring 128 MiB: RSS stays bounded", grown < 64 * 1024, || {
            format!("RSS grew {grown} KiB")
        });
        corpus.tried += 1;
    }
    {
        // A slow or stalled client: half a message, then nothing. The call is
        // refused when limits.request_read_timeout (5 s here) passes, long
        // before the client would give up, and nothing is forwarded.
        let forwarded = s.forwarded();
        let started = Instant::now();
        let half = frame(0, &root_request("shop").encode_to_vec())[..7].to_vec();
        let held = raw_grpc_held(port, ROOT_PATH, &auth, half, Duration::from_secs(30)).await;
        let waited = started.elapsed();
        corpus.check(
            "a stalled request message: DEADLINE_EXCEEDED naming the limit",
            held.map(|r| (r.1, r.2.contains("limits.request_read_timeout"))),
            Ok((Some(Code::DeadlineExceeded as i32), true)),
        );
        corpus.holds(
            "a stalled request message is refused after the limit, not the client's hold",
            waited < Duration::from_secs(20),
            || format!("answered after {waited:?}"),
        );
        corpus.check("a stalled request message (not forwarded)", s.forwarded(), forwarded);
        corpus.tried += 1;
    }

    // ---- Commit that must not reach Dolt
    corpus.category("Commits that must not reach Dolt");
    let commit = |current: Vec<u8>, last: Vec<u8>| CommitRequest {
        repo_path: "shop".into(),
        current: current.into(),
        last: last.into(),
        client_repo_format: format(),
        ..Default::default()
    };
    let missing = vec![0x5a; 20];
    refused!(
        "Commit whose current is a missing chunk",
        Code::FailedPrecondition,
        client.commit(with_auth(commit(missing.clone(), root.to_vec()), &[bob]))
    );
    refused!(
        "Commit whose current is 19 bytes",
        Code::FailedPrecondition,
        client.commit(with_auth(commit(vec![1; 19], root.to_vec()), &[bob]))
    );
    refused!(
        "Commit whose last is empty",
        Code::FailedPrecondition,
        client.commit(with_auth(commit(missing.clone(), Vec::new()), &[bob]))
    );
    {
        // A chunk that exists but is a commit, not a store root.
        let head = s.server.sql(&s.env, "SELECT hash FROM shop.dolt_branches WHERE name = 'main'");
        let head: doltgate::storage::Address = head.lines().nth(1).unwrap().trim().parse().unwrap();
        refused!(
            "Commit whose current is a commit chunk, not a root",
            Code::FailedPrecondition,
            client.commit(with_auth(commit(head.as_bytes().to_vec(), root.to_vec()), &[bob]))
        );
    }
    {
        let mut request = commit(missing.clone(), root.to_vec());
        request.chunk_table_info = vec![ChunkTableInfo { hash: vec![0x33; 20].into(), chunk_count: 3 }];
        // Dolt refuses the inspector's AddTableFiles; that stays a permanent refusal.
        refused!(
            "Commit naming a table file that was never uploaded",
            Code::FailedPrecondition,
            client.commit(with_auth(request, &[bob]))
        );
    }
    refused!(
        "Commit by a read-only static user",
        Code::PermissionDenied,
        client.commit(with_auth(commit(missing.clone(), root.to_vec()), &[basic(CAROL, CAROL_PASSWORD).as_str()]))
    );
    let root_after = allowed!("control: root after the Commits", client.root(with_auth(root_request("shop"), &[bob])))
        .unwrap()
        .into_inner()
        .root_hash;
    corpus.check("server root unchanged after refused Commits", root_after, root.clone());

    // ---- table-file URLs
    corpus.category("table-file URLs");
    let download = allowed!(
        "control: download locations",
        client.get_download_locations(with_auth(
            GetDownloadLocsRequest { repo_path: "shop".into(), chunk_hashes: vec![root.clone()], ..Default::default() },
            &[bob]
        ))
    )
    .unwrap()
    .into_inner();
    let Some(download_loc::Location::HttpGetRange(range)) = download.locs.first().and_then(|l| l.location.clone())
    else {
        panic!("no ranged download location for the root: {download:?}");
    };
    let chunk = range.ranges.first().expect("a range for the root chunk").clone();
    let path_of =
        |url: &str| url.strip_prefix(&format!("http://127.0.0.1:{port}")).unwrap_or_else(|| panic!("{url}")).to_owned();
    let download_path = path_of(&range.url);
    let range_header = format!("Range: bytes={}-{}\r\n", chunk.offset, chunk.offset + u64::from(chunk.length) - 1);
    let get_range = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{range_header}Connection: close\r\n\r\n").into_bytes()
    };
    let (status, _) = raw_http1(port, &get_range(&download_path)).await;
    corpus.check("control: the download URL fetches its range", status, 206);

    let upload = allowed!(
        "control: upload locations",
        client.get_upload_locations(with_auth(
            GetUploadLocsRequest {
                repo_path: "shop".into(),
                table_file_details: vec![TableFileDetails {
                    id: vec![0x44; 20].into(),
                    content_length: 1234,
                    content_hash: vec![0x55; 16].into(),
                    num_chunks: 2,
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[bob]
        ))
    )
    .unwrap()
    .into_inner();
    let Some(upload_loc::Location::HttpPost(post)) = upload.locs.first().and_then(|l| l.location.clone()) else {
        panic!("no upload location: {upload:?}");
    };
    let upload_path = path_of(&post.url);

    // Capabilities minted with the shared key, for what a client cannot otherwise obtain.
    let signer = doltgate::file_url::UrlSigner::new(URL_KEY.as_bytes(), Duration::from_secs(600)).unwrap();
    let upstream_part = {
        let rest = download_path.strip_prefix(doltgate::file_url::PREFIX).unwrap();
        rest[rest.find('/').unwrap()..].to_owned()
    };
    let mint = |signer: &doltgate::file_url::UrlSigner, endpoint: &str, upstream: &str| {
        let grant = doltgate::file_url::CapabilityGrant { endpoint, database: "shop", principal: BOB, write: false };
        path_of(
            &signer
                .to_client_url(&format!("http://upstream{upstream}"), &grant, &format!("http://127.0.0.1:{port}"))
                .unwrap(),
        )
    };
    let with_exp = |exp_ms: u64| {
        let (path, query) = upstream_part.split_once('?').unwrap_or((&upstream_part, ""));
        let kept: Vec<&str> = query.split('&').filter(|p| !p.starts_with("exp=") && !p.is_empty()).collect();
        format!(
            "{path}?{}",
            [format!("exp={exp_ms}")]
                .into_iter()
                .chain(kept.iter().map(|s| s.to_string()))
                .collect::<Vec<_>>()
                .join("&")
        )
    };
    let other_key =
        doltgate::file_url::UrlSigner::new(b"some other key, also long enough 0123", Duration::from_secs(600)).unwrap();
    let capability_of = |path: &str| {
        let rest = path.strip_prefix(doltgate::file_url::PREFIX).unwrap();
        rest[..rest.find('/').unwrap()].to_owned()
    };
    let flip = |path: &str, at: usize| {
        let mut bytes = path.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let cap_start = doltgate::file_url::PREFIX.len();
    let forbidden: Vec<(&str, Vec<u8>)> = vec![
        ("capability with a flipped byte", get_range(&flip(&download_path, cap_start + 10))),
        (
            "capability truncated",
            get_range(&download_path.replacen(&capability_of(&download_path), &capability_of(&download_path)[..20], 1)),
        ),
        (
            "upstream path altered",
            get_range(&flip(&download_path, download_path.find('?').unwrap_or(download_path.len()) - 1)),
        ),
        (
            "upstream path with /../ appended",
            get_range(&format!("{}/../../etc/passwd", download_path.split('?').next().unwrap())),
        ),
        ("query dropped", get_range(download_path.split('?').next().unwrap())),
        ("query extended", get_range(&format!("{download_path}&extra=1"))),
        (
            "download URL used for an upload",
            format!(
                "PUT {download_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd"
            )
            .into_bytes(),
        ),
        ("upload URL used for a download", get(&upload_path)),
        (
            "upload capability spliced onto the download path",
            get_range(&format!("{}{}{}", doltgate::file_url::PREFIX, capability_of(&upload_path), upstream_part)),
        ),
        (
            "download capability spliced onto another database's path",
            get_range(&download_path.replacen("/shop/", "/other/", 1)),
        ),
        ("capability expired", get_range(&mint(&signer, "dolt", &with_exp(1_000)))),
        ("capability signed with another key", get_range(&mint(&other_key, "dolt", &upstream_part))),
        ("capability as .. ", get(&format!("{}../x", doltgate::file_url::PREFIX))),
        ("capability as %2e%2e", get(&format!("{}%2e%2e/%2e%2e/etc/passwd", doltgate::file_url::PREFIX))),
        ("capability of 30 kB", get(&format!("{}{}/x", doltgate::file_url::PREFIX, "A".repeat(30_000)))),
    ];
    for (name, request) in forbidden {
        let (status, body) = raw_http1(port, &request).await;
        corpus.check(name, status, 403);
        corpus
            .holds(name, body.starts_with("doltgate: table-file URL refused"), || format!("answered by: {body:.200}"));
    }
    for (name, request, want) in [
        ("capability for an endpoint that does not exist", get_range(&mint(&signer, "elsewhere", &upstream_part)), 404),
        ("no capability at all", get(doltgate::file_url::PREFIX), 404),
        ("a path outside doltgate's files", get("/../../etc/passwd"), 404),
        ("a path outside doltgate's files, encoded", get("/%2e%2e/%2e%2e/etc/passwd"), 404),
        ("the bare root", get("/"), 404),
        ("DELETE on a valid URL", format!("DELETE {download_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes(), 405),
        ("gRPC over HTTP/1.1", format!("POST {ROOT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(), 505),
    ] {
        let (status, body) = raw_http1(port, &request).await;
        corpus.check(name, status, want);
        corpus.holds(name, body.starts_with("doltgate: "), || format!("answered by: {body:.200}"));
    }
    {
        let (status, _) = raw_http1(port, &get(&format!("/_doltgate/files/{}", "A".repeat(100_000)))).await;
        corpus.check("a 100 kB request line (over the header limit)", status, 414);
    }
    let (status, _) = raw_http1(port, &get_range(&download_path)).await;
    corpus.check("control: the download URL still works after all that", status, 206);
    corpus.check("no gRPC call forwarded since the last control", s.forwarded(), forwarded);
}
