//! The real `dolt` CLI cloning, pushing, fetching and pulling through
//! doltgate to a real `dolt sql-server`, plus the refusals a user meets.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

/// A sql-server holding database `shop` (two tables, several commits) with doltgate in front.
struct Setup {
    env: DoltEnv,
    server: DoltServer,
    gateway: Doltgate,
    /// `http` or `https`, as clients reach the gateway.
    scheme: &'static str,
}

impl Setup {
    fn new() -> Setup {
        Setup::build(false)
    }

    /// With `tls`, doltgate terminates TLS with a certificate from a CA the
    /// test makes; dolt trusts that CA through `SSL_CERT_FILE`.
    fn build(tls: bool) -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        let db = data.join("shop");
        env.init_repo(&db);
        env.ok(&db, &["sql", "-q", "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64), price DECIMAL(10,2));"]);
        env.ok(&db, &["sql", "-q", "INSERT INTO items VALUES (1, 'apple', 0.50), (2, 'pear', 0.75);"]);
        env.ok(&db, &["commit", "-Am", "items"]);
        env.ok(&db, &["sql", "-q", "CREATE TABLE orders (id INT PRIMARY KEY, item INT, qty INT);"]);
        env.ok(&db, &["sql", "-q", "INSERT INTO orders VALUES (1, 1, 3), (2, 2, 5), (3, 1, 1);"]);
        env.ok(&db, &["commit", "-Am", "orders"]);
        env.ok(&db, &["sql", "-q", "UPDATE items SET price = 0.55 WHERE id = 1;"]);
        env.ok(&db, &["commit", "-Am", "reprice"]);
        let server = DoltServer::start(&env, &data);
        let (gateway, scheme) = if tls {
            let config = write_tls_config(env.path());
            let config = config.to_str().unwrap().to_owned();
            (Doltgate::start(env.path(), &server.remotesapi_addr(), &["--config", &config]), "https")
        } else {
            (Doltgate::start(env.path(), &server.remotesapi_addr(), &[]), "http")
        };
        Setup { env, server, gateway, scheme }
    }

    fn url(&self, db: &str) -> String {
        format!("{}://127.0.0.1:{}/{db}", self.scheme, self.gateway.port)
    }

    /// Runs an authenticated dolt command (trusting the test CA, over TLS).
    fn dolt_auth(&self, cwd: &std::path::Path, args: &[&str]) -> String {
        let ca = self.env.path().join("ca.pem");
        let mut vars = vec![("DOLT_REMOTE_PASSWORD", PASSWORD)];
        if self.scheme == "https" {
            vars.push(("SSL_CERT_FILE", ca.to_str().unwrap()));
        }
        self.env.ok_with(cwd, args, &vars)
    }

    fn source(&self) -> PathBuf {
        self.server.data_dir.join("shop")
    }

    fn clone_through_gateway(&self, name: &str) -> PathBuf {
        let dest = self.env.path().join(name);
        self.dolt_auth(self.env.path(), &["clone", "--user", USER, &self.url("shop"), dest.to_str().unwrap()]);
        dest
    }
}

#[test]
fn clone_push_fetch_and_pull_through_doltgate() {
    clone_push_fetch_and_pull(&Setup::new());
}

#[test]
fn clone_push_fetch_and_pull_over_tls() {
    clone_push_fetch_and_pull(&Setup::build(true));
}

fn clone_push_fetch_and_pull(s: &Setup) {
    let env = &s.env;

    // Clone: same history and same rows as the source.
    let alice = s.clone_through_gateway("alice");
    assert_eq!(env.log_hashes(&alice, "main"), env.log_hashes(&s.source(), "main"));
    assert_eq!(env.log_hashes(&alice, "main").len(), 4, "init + 3 commits");
    let query = "SELECT * FROM items ORDER BY id; SELECT * FROM orders ORDER BY id;";
    assert_eq!(env.query_csv(&alice, query), env.query_csv(&s.source(), query));

    // A second clone, made before the pushes, to fetch and pull them later.
    let bob = s.clone_through_gateway("bob");

    // Push a new branch.
    env.ok(&alice, &["checkout", "-b", "feature"]);
    env.ok(&alice, &["sql", "-q", "INSERT INTO items VALUES (3, 'plum', 1.10);"]);
    env.ok(&alice, &["commit", "-Am", "plum"]);
    s.dolt_auth(&alice, &["push", "--user", USER, "origin", "feature"]);
    assert_eq!(env.log_hashes(&s.source(), "feature"), env.log_hashes(&alice, "feature"));

    // Push a fast-forward to it.
    env.ok(&alice, &["sql", "-q", "INSERT INTO items VALUES (4, 'fig', 2.00);"]);
    env.ok(&alice, &["commit", "-Am", "fig"]);
    s.dolt_auth(&alice, &["push", "--user", USER, "origin", "feature"]);
    let pushed = env.log_hashes(&alice, "feature");
    assert_eq!(env.log_hashes(&s.source(), "feature"), pushed);
    assert_eq!(env.query_csv(&s.source(), "SELECT id FROM items AS OF 'feature' ORDER BY id"), "id\n1\n2\n3\n4\n");

    // Push main too (fast-forward), then the other clone fetches and pulls both.
    env.ok(&alice, &["checkout", "main"]);
    env.ok(&alice, &["sql", "-q", "INSERT INTO orders VALUES (4, 2, 9);"]);
    env.ok(&alice, &["commit", "-Am", "order 4"]);
    s.dolt_auth(&alice, &["push", "--user", USER, "origin", "main"]);

    s.dolt_auth(&bob, &["fetch", "--user", USER, "origin"]);
    assert_eq!(env.log_hashes(&bob, "remotes/origin/feature"), pushed);
    s.dolt_auth(&bob, &["pull", "--user", USER, "origin", "main"]);
    assert_eq!(env.log_hashes(&bob, "main"), env.log_hashes(&alice, "main"));
    assert_eq!(
        env.query_csv(&bob, "SELECT * FROM orders ORDER BY id"),
        env.query_csv(&alice, "SELECT * FROM orders ORDER BY id")
    );
}

#[test]
fn refusals_are_clear_and_permanent() {
    let s = Setup::new();
    let env = &s.env;
    let url = s.gateway.url("shop");

    // No credentials: doltgate answers UNAUTHENTICATED itself (the upstream would treat it as root).
    let started = Instant::now();
    let out = env.fails(env.path(), &["clone", &url, "nocreds"], &[]);
    assert!(out.contains("code = Unauthenticated"), "{out}");
    assert!(out.contains("--user"), "message should tell the user what to do: {out}");
    assert!(started.elapsed() < Duration::from_secs(5), "UNAUTHENTICATED must not be retried");

    // A wrong password: the upstream's refusal passes through.
    let out = env.fails(env.path(), &["clone", "--user", USER, &url, "badpw"], &[("DOLT_REMOTE_PASSWORD", "wrong")]);
    assert!(out.contains("code = Unauthenticated"), "{out}");
    assert!(out.contains("Access denied for user 'alice'"), "{out}");

    // An unknown database: NOT_FOUND naming it, not five retries of UNKNOWN.
    let started = Instant::now();
    let out = env.fails(env.path(), &["clone", "--user", USER, &s.gateway.url("nosuchdb"), "nosuch"], &password_env());
    assert!(out.contains("code = NotFound"), "{out}");
    assert!(out.contains("\"nosuchdb\""), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "NOT_FOUND must not be retried");

    // Nothing was created on the server by any of this.
    assert!(!s.server.data_dir.join("nosuchdb").exists());
}

#[test]
fn upstream_down_is_unavailable_naming_the_address() {
    let env = DoltEnv::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let gateway = Doltgate::start(env.path(), &dead, &[]);
    let out = env.fails(env.path(), &["clone", "--user", USER, &gateway.url("shop"), "x"], &password_env());
    assert!(out.contains("code = Unavailable"), "{out}");
    assert!(out.contains(&dead), "message should name the upstream: {out}");
}

/// A doltgate config serving TLS with a certificate for 127.0.0.1 from a test CA (`ca.pem`).
fn write_tls_config(dir: &std::path::Path) -> PathBuf {
    crate::support::write_test_ca(dir);
    let config = dir.join("doltgate-tls.toml");
    std::fs::write(
        &config,
        format!(
            "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
            dir.join("tls.crt").to_str().unwrap(),
            dir.join("tls.key").to_str().unwrap()
        ),
    )
    .unwrap();
    config
}
