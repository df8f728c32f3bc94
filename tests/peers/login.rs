//! Self-hosted `dolt login` with the real pieces: the real `dolt login`
//! against doltgate's WhoAmI, the login page driven in headless Chromium (a
//! screenshot is kept in `target/test-artifacts/`), then a plain `dolt clone`
//! and `dolt push` with no `--user` and no password, as the user who
//! registered the key and with that user's grants; the key through a second
//! replica; revocation; a wrong password on the page; a page request from
//! another site; the key store's database unreachable through doltgate.
//! And signing in with a real OpenID Connect provider instead of a password,
//! its answer replayed without the sign-in's cookie.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-pw-1";

struct Setup {
    env: DoltEnv,
    server: DoltServer,
    gateway: Doltgate,
    admin_port: u16,
    config: PathBuf,
    replica_config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        env.seed_items_database(&data.join("shop"));
        env.ok(&data, &["sql", "-q", &format!("CREATE USER '{BOB}'@'%' IDENTIFIED BY '{BOB_PASSWORD}';")]);
        let server = DoltServer::start(&env, &data);
        let admin_port = free_port();
        let body = format!(
            r#"{cluster}
[auth]
upstream_credentials = "service"
dolt_key_audiences = ["127.0.0.1"]

[[auth.grants]]
databases = ["shop"]
users = ["{BOB}"]
permission = "write"

[login]
cluster = "main"
cache_ttl = "2s"
email_template = "{{user}}@example.test"
"#,
            cluster = service_cluster_config(&server),
        );
        let config = env.path().join("doltgate.toml");
        std::fs::write(&config, format!("[admin]\naddress = \"127.0.0.1:{admin_port}\"\n\n{body}")).unwrap();
        let replica_config = env.path().join("replica.toml");
        std::fs::write(&replica_config, &body).unwrap();
        let gateway = start(&env, &config);
        Setup { env, server, gateway, admin_port, config, replica_config }
    }

    fn login_url(&self) -> String {
        format!("http://127.0.0.1:{}/login", self.gateway.port)
    }
}

fn start(env: &DoltEnv, config: &Path) -> Doltgate {
    Doltgate::start_with_config_env(env.path(), config, &[("SERVICE_PASSWORD", PASSWORD)])
}

fn doltgate_cli(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_doltgate"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .env("SERVICE_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A bodiless POST over HTTP/1.1; the whole answer, status line first.
fn post(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The key id of the one key in a client's creds directory (`<id>.jwk`).
fn key_id_of(client: &DoltEnv) -> String {
    let creds = client.home().join(".dolt/creds");
    let names: Vec<String> = std::fs::read_dir(&creds)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".jwk").map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 1, "one key in {}: {names:?}", creds.display());
    names[0].clone()
}

/// Starts `dolt login` against doltgate on `port`; it opens the page with
/// xdg-open, whose stand-in records the URL. Returns the process and that URL.
fn start_dolt_login(client: &DoltEnv, port: u16, login_url: &str) -> (std::process::Child, String) {
    let bin = client.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = client.path().join("opened-url");
    std::fs::write(bin.join("xdg-open"), format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", opened.display())).unwrap();
    std::process::Command::new("chmod").args(["+x", bin.join("xdg-open").to_str().unwrap()]).status().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let endpoint = format!("127.0.0.1:{port}");
    let login = client
        .command(client.path(), &["login", "-e", &endpoint, "-i", "--login-url", login_url])
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !opened.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = std::fs::read_to_string(&opened).expect("dolt login opened the login page");
    assert!(url.starts_with(&format!("{login_url}#")), "{url}");
    (login, url)
}

/// Waits for `dolt login` (it polls WhoAmI every 5 s and ends once the key is
/// registered); what it printed.
fn finish_dolt_login(mut login: std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = login.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = login.kill();
            panic!("dolt login did not finish: {}", text(&login.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut printed = String::new();
    login.stdout.take().unwrap().read_to_string(&mut printed).unwrap();
    assert!(status.success(), "dolt login failed: {printed}");
    printed
}

/// Runs the login page at `url` in the browser: waits for the key id it
/// shows, fills in the form, submits, and returns (key id, outcome text).
async fn use_login_page(browser: &mut Browser, url: &str, user: &str, password: &str, shot: &str) -> (String, String) {
    browser.navigate(url).await;
    let shown = browser
        .wait_for(
            "(function(){var t=document.getElementById('key-id');return t&&t.textContent.length==45?t.textContent:''})()",
            Duration::from_secs(20),
        )
        .await;
    let fill = format!(
        "document.getElementById('user').value={user:?};document.getElementById('password').value={password:?};\
         document.getElementById('submit').click();true"
    );
    browser.evaluate(&fill).await;
    let outcome = browser
        .wait_for(
            "(function(){var r=document.getElementById('result');return r.className&&r.textContent.indexOf('\u{2026}')<0?r.textContent:''})()",
            Duration::from_secs(20),
        )
        .await;
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts").join(shot);
    browser.screenshot(&artifact).await;
    (shown.as_str().unwrap().to_owned(), outcome.as_str().unwrap().to_owned())
}

#[test]
fn dolt_login_through_the_page_then_clone_and_push_without_a_password() {
    let s = Setup::new();
    let client = DoltEnv::new();
    let (login, url) = start_dolt_login(&client, s.gateway.port, &s.login_url());
    let key_id = key_id_of(&client);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (shown, outcome) = runtime.block_on(async {
        let mut browser = Browser::launch(client.path()).await;
        use_login_page(&mut browser, &url, BOB, BOB_PASSWORD, "login-page.png").await
    });
    assert_eq!(shown, key_id, "the page shows the id of the key dolt login made");
    assert!(outcome.contains("Registered key") && outcome.contains(BOB), "{outcome}");

    let printed = finish_dolt_login(login);
    assert!(
        printed.contains(&format!("Key successfully associated with user: {BOB} email {BOB}@example.test")),
        "{printed}"
    );

    // No --user, no password: the registered key is who the clone is.
    let clone = client.path().join("shop");
    client.ok(client.path(), &["clone", &s.gateway.url("shop"), clone.to_str().unwrap()]);
    assert_eq!(client.log_hashes(&clone, "main"), client.log_hashes(&s.env.path().join("server/shop"), "main"));
    client.ok(&clone, &["checkout", "-b", "from-login"]);
    client.ok(&clone, &["sql", "-q", "INSERT INTO items VALUES (900, 'pushed with a registered key')"]);
    client.ok(&clone, &["commit", "-Am", "with a registered key"]);
    client.ok(&clone, &["push", "origin", "from-login"]);
    let branches = s.server.sql(&s.env, "SELECT name FROM shop.dolt_branches");
    assert!(branches.contains("from-login"), "the push landed: {branches}");

    // The key store's database is doltgate's own: no route serves it.
    let hidden = client.run(client.path(), &["clone", &s.gateway.url("doltgate_keys"), "keys-copy"], &[]);
    assert!(!hidden.status.success(), "the key store must not be cloneable");
    assert!(text(&hidden).contains("no route"), "{}", text(&hidden));

    // Every replica sees the registration: it lives in Dolt, not in a process.
    let replica = start(&s.env, &s.replica_config);
    let via_replica = client.path().join("via-replica");
    client.ok(client.path(), &["clone", &replica.url("shop"), via_replica.to_str().unwrap()]);

    // Listed on the admin port and by the CLI; revoked, it is refused within the cache TTL.
    let (status, listed) = http_get(s.admin_port, "/keys");
    assert_eq!(status, 200, "{listed}");
    assert!(listed.contains(&key_id) && listed.contains(BOB), "{listed}");
    let listing = doltgate_cli(&s.config, &["keys", "list"]);
    assert!(listing.status.success() && text(&listing).contains(&key_id), "{}", text(&listing));
    let unknown = doltgate_cli(&s.config, &["keys", "revoke", "0000"]);
    assert!(!unknown.status.success() && text(&unknown).contains("no live key"), "{}", text(&unknown));
    let revoked = post(s.admin_port, &format!("/keys/{key_id}/revoke"));
    assert!(revoked.starts_with("HTTP/1.1 200") && revoked.contains(r#""revoked":true"#), "{revoked}");
    std::thread::sleep(Duration::from_secs(3));
    for (name, gateway) in [("first", &s.gateway), ("replica", &replica)] {
        let refused = client.run(client.path(), &["clone", &gateway.url("shop"), &format!("after-revoke-{name}")], &[]);
        assert!(!refused.status.success(), "a revoked key still cloned through the {name} gateway");
        assert!(text(&refused).contains("unknown Dolt client key"), "{}", text(&refused));
    }
    let metrics = scrape(s.admin_port);
    assert!(total(&metrics, "doltgate_login_keys_total", &[("event", "registered")]) >= 1.0);
    assert!(total(&metrics, "doltgate_login_keys_total", &[("event", "revoked")]) >= 1.0);
    let log = s.gateway.process.log();
    assert!(log.contains("key registered") && log.contains("key revoked"), "registrations and revocations are audited");
}

#[test]
fn a_wrong_password_or_another_site_registers_nothing() {
    let s = Setup::new();
    let client = DoltEnv::new();
    client.ok(client.path(), &["creds", "new"]);
    let listing = strip_ansi(&client.ok(client.path(), &["creds", "ls", "-v"]));
    let public_key = listing
        .split_whitespace()
        .find(|word| word.len() == 52 && word.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)))
        .unwrap_or_else(|| panic!("no public key in `dolt creds ls -v`:\n{listing}"))
        .to_owned();
    let url = format!("{}#{public_key}", s.login_url());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_, outcome) = runtime.block_on(async {
        let mut browser = Browser::launch(client.path()).await;
        use_login_page(&mut browser, &url, BOB, "not-bobs-password", "login-wrong-password.png").await
    });
    assert!(outcome.contains("wrong password"), "the page says why: {outcome}");

    // A request from another site carries neither the page's token nor its cookie.
    let body = format!(r#"{{"public_key":"{public_key}","user":"{BOB}","password":"{BOB_PASSWORD}"}}"#);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
    write!(
        stream,
        "POST /login/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    let clone = client.run(client.path(), &["clone", &s.gateway.url("shop"), "shop"], &[]);
    assert!(!clone.status.success(), "nothing was registered, so the key proves nothing");
    assert!(text(&clone).contains("unknown Dolt client key"), "{}", text(&clone));
    let metrics = scrape(s.admin_port);
    assert!(total(&metrics, "doltgate_login_keys_total", &[("event", "refused")]) >= 1.0);
    assert_eq!(total(&metrics, "doltgate_login_keys_total", &[("event", "registered")]), 0.0);
}

const ERIN: &str = "erin";
const ERIN_PASSWORD: &str = "erins-sso-pw";
const ERIN_EMAIL: &str = "erin@sso.test";

#[test]
fn dolt_login_by_signing_in_with_an_openid_provider() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    env.seed_items_database(&data.join("shop"));
    let server = DoltServer::start(&env, &data);
    // A key store an earlier doltgate made, before e-mails were kept: upgraded in place.
    server.sql(
        &env,
        "CREATE DATABASE doltgate_keys; CREATE TABLE doltgate_keys.registered_keys (key_id VARCHAR(64) PRIMARY KEY, \
         public_key VARCHAR(64) NOT NULL, user_name VARCHAR(255) NOT NULL, registered_at DATETIME NOT NULL, \
         revoked_at DATETIME NULL)",
    );
    let (port, admin_port) = (free_port(), free_port());
    let callback = format!("http://127.0.0.1:{port}/login/oidc/callback");
    let provider = OidcProvider::start(env.path(), &callback, &[(ERIN, ERIN_PASSWORD, ERIN_EMAIL)]);
    let issuer = provider.issuer();
    let config = env.path().join("doltgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[admin]
address = "127.0.0.1:{admin_port}"

{cluster}
[auth]
upstream_credentials = "service"
dolt_key_audiences = ["127.0.0.1"]

# The provider's ID tokens are judged here; "doltgate-api" is the audience of
# bearer tokens, which ID tokens (audience: the client id) are not.
[[auth.jwt]]
name = "sso"
issuer = "{issuer}"
audiences = ["doltgate-api"]
algorithms = ["RS256"]
jwks_url = "{issuer}keys"
jwks_allow_http = true
user_claim = "preferred_username"

[[auth.grants]]
databases = ["shop"]
users = ["sso:{ERIN}"]
permission = "write"

[login]
cluster = "main"
cache_ttl = "2s"
email_template = "{{user}}@template.test"

[login.oidc]
provider = "sso"
discovery_url = "{issuer}.well-known/openid-configuration"
client_id = "web"
client_secret = "secret"
redirect_url = "{callback}"
label = "Sign in with the test SSO"
allow_http = true
"#,
            cluster = service_cluster_config(&server),
        ),
    )
    .unwrap();
    let gateway = Doltgate::start_with_config_on(env.path(), &config, port, &[("SERVICE_PASSWORD", PASSWORD)]);
    let client = DoltEnv::new();
    let (login, url) = start_dolt_login(&client, gateway.port, &format!("http://127.0.0.1:{port}/login"));
    let key_id = key_id_of(&client);

    // The page, then the provider's own login form, then back to doltgate.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (shown, outcome, landed_at) = runtime.block_on(async {
        let mut browser = Browser::launch(client.path()).await;
        browser.navigate(&url).await;
        let shown = browser
            .wait_for(
                "(function(){var t=document.getElementById('key-id');var b=document.getElementById('oidc');\
                 return t&&b&&!b.disabled&&t.textContent.length==45?t.textContent:''})()",
                Duration::from_secs(20),
            )
            .await;
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        browser.screenshot(&artifacts.join("login-oidc-page.png")).await;
        browser.evaluate("document.getElementById('oidc').click();true").await;
        browser
            .wait_for(
                "location.host.indexOf('localhost:')==0&&document.getElementById('username')?'form':''",
                Duration::from_secs(20),
            )
            .await;
        let sign_in = format!(
            "document.getElementById('username').value={ERIN:?};document.getElementById('password').value={ERIN_PASSWORD:?};\
             document.querySelector('form').submit();true"
        );
        browser.evaluate(&sign_in).await;
        let outcome = browser
            .wait_for(
                "(function(){var r=document.getElementById('result');\
                 return location.pathname=='/login/oidc/callback'&&r&&r.className?r.textContent:''})()",
                Duration::from_secs(20),
            )
            .await;
        browser.screenshot(&artifacts.join("login-oidc.png")).await;
        let landed_at = browser.evaluate("location.href").await;
        (shown.as_str().unwrap().to_owned(), outcome.as_str().unwrap().to_owned(), landed_at.as_str().unwrap().to_owned())
    });
    assert_eq!(shown, key_id, "the page shows the id of the key dolt login made");
    assert!(outcome.contains(&format!("Registered key {key_id} for sso:{ERIN}")), "{outcome}");

    // WhoAmI answers with the provider's name for the user and its verified e-mail.
    let printed = finish_dolt_login(login);
    assert!(
        printed.contains(&format!("Key successfully associated with user: sso:{ERIN} email {ERIN_EMAIL}")),
        "{printed}"
    );

    // No --user, no password: the key is sso:erin, with sso:erin's grant.
    let clone = client.path().join("shop");
    client.ok(client.path(), &["clone", &gateway.url("shop"), clone.to_str().unwrap()]);
    client.ok(&clone, &["checkout", "-b", "from-sso"]);
    client.ok(&clone, &["sql", "-q", "INSERT INTO items VALUES (901, 'pushed after signing in with SSO')"]);
    client.ok(&clone, &["commit", "-Am", "after an SSO sign-in"]);
    client.ok(&clone, &["push", "origin", "from-sso"]);
    let branches = server.sql(&env, "SELECT name FROM shop.dolt_branches");
    assert!(branches.contains("from-sso"), "the push landed: {branches}");

    // The provider's answer replayed from anywhere but the browser that began
    // the sign-in carries no flow cookie: refused before the code is redeemed.
    let callback_path = landed_at.strip_prefix(&format!("http://127.0.0.1:{port}")).expect("back on doltgate");
    assert!(callback_path.contains("code=") && callback_path.contains("state="), "{callback_path}");
    let (status, page) = http_get(port, callback_path);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("started no sign-in"), "{page}");
    let metrics = scrape(admin_port);
    assert_eq!(total(&metrics, "doltgate_login_keys_total", &[("event", "registered")]), 1.0);
    assert!(total(&metrics, "doltgate_login_keys_total", &[("event", "refused")]) >= 1.0);
    let log = gateway.process.log();
    assert!(log.contains("key registered") && log.contains("sso:erin"), "the registration is audited");
}
