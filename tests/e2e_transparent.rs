//! The real `dolt` CLI cloning, pushing, fetching and pulling through
//! doltgate to a real `dolt sql-server`, plus the refusals a user meets.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

/// A sql-server holding database `shop` (two tables, several commits) with doltgate in front.
struct Setup {
    env: DoltEnv,
    server: DoltServer,
    gateway: Doltgate,
}

impl Setup {
    fn new() -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        let db = data.join("shop");
        env.init_repo(&db);
        env.ok(
            &db,
            &[
                "sql",
                "-q",
                "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64), price DECIMAL(10,2));",
            ],
        );
        env.ok(
            &db,
            &[
                "sql",
                "-q",
                "INSERT INTO items VALUES (1, 'apple', 0.50), (2, 'pear', 0.75);",
            ],
        );
        env.ok(&db, &["commit", "-Am", "items"]);
        env.ok(
            &db,
            &[
                "sql",
                "-q",
                "CREATE TABLE orders (id INT PRIMARY KEY, item INT, qty INT);",
            ],
        );
        env.ok(
            &db,
            &[
                "sql",
                "-q",
                "INSERT INTO orders VALUES (1, 1, 3), (2, 2, 5), (3, 1, 1);",
            ],
        );
        env.ok(&db, &["commit", "-Am", "orders"]);
        env.ok(
            &db,
            &["sql", "-q", "UPDATE items SET price = 0.55 WHERE id = 1;"],
        );
        env.ok(&db, &["commit", "-Am", "reprice"]);
        let server = DoltServer::start(&env, &data);
        let gateway = Doltgate::start(env.path(), &server.remotesapi_addr(), &[]);
        Setup {
            env,
            server,
            gateway,
        }
    }

    fn source(&self) -> PathBuf {
        self.server.data_dir.join("shop")
    }

    fn clone_through_gateway(&self, name: &str) -> PathBuf {
        let dest = self.env.path().join(name);
        let url = self.gateway.url("shop");
        self.env.ok_with(
            self.env.path(),
            &["clone", "--user", USER, &url, dest.to_str().unwrap()],
            &password_env(),
        );
        dest
    }
}

#[test]
fn clone_push_fetch_and_pull_through_doltgate() {
    let s = Setup::new();
    let env = &s.env;

    // Clone: same history and same rows as the source.
    let alice = s.clone_through_gateway("alice");
    assert_eq!(
        env.log_hashes(&alice, "main"),
        env.log_hashes(&s.source(), "main")
    );
    assert_eq!(env.log_hashes(&alice, "main").len(), 4, "init + 3 commits");
    let query = "SELECT * FROM items ORDER BY id; SELECT * FROM orders ORDER BY id;";
    assert_eq!(
        env.query_csv(&alice, query),
        env.query_csv(&s.source(), query)
    );

    // A second clone, made before the pushes, to fetch and pull them later.
    let bob = s.clone_through_gateway("bob");

    // Push a new branch.
    env.ok(&alice, &["checkout", "-b", "feature"]);
    env.ok(
        &alice,
        &["sql", "-q", "INSERT INTO items VALUES (3, 'plum', 1.10);"],
    );
    env.ok(&alice, &["commit", "-Am", "plum"]);
    env.ok_with(
        &alice,
        &["push", "--user", USER, "origin", "feature"],
        &password_env(),
    );
    assert_eq!(
        env.log_hashes(&s.source(), "feature"),
        env.log_hashes(&alice, "feature")
    );

    // Push a fast-forward to it.
    env.ok(
        &alice,
        &["sql", "-q", "INSERT INTO items VALUES (4, 'fig', 2.00);"],
    );
    env.ok(&alice, &["commit", "-Am", "fig"]);
    env.ok_with(
        &alice,
        &["push", "--user", USER, "origin", "feature"],
        &password_env(),
    );
    let pushed = env.log_hashes(&alice, "feature");
    assert_eq!(env.log_hashes(&s.source(), "feature"), pushed);
    assert_eq!(
        env.query_csv(
            &s.source(),
            "SELECT id FROM items AS OF 'feature' ORDER BY id"
        ),
        "id\n1\n2\n3\n4\n"
    );

    // Push main too (fast-forward), then the other clone fetches and pulls both.
    env.ok(&alice, &["checkout", "main"]);
    env.ok(
        &alice,
        &["sql", "-q", "INSERT INTO orders VALUES (4, 2, 9);"],
    );
    env.ok(&alice, &["commit", "-Am", "order 4"]);
    env.ok_with(
        &alice,
        &["push", "--user", USER, "origin", "main"],
        &password_env(),
    );

    env.ok_with(&bob, &["fetch", "--user", USER, "origin"], &password_env());
    assert_eq!(env.log_hashes(&bob, "remotes/origin/feature"), pushed);
    env.ok_with(
        &bob,
        &["pull", "--user", USER, "origin", "main"],
        &password_env(),
    );
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
    assert!(
        out.contains("--user"),
        "message should tell the user what to do: {out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "UNAUTHENTICATED must not be retried"
    );

    // A wrong password: the upstream's refusal passes through.
    let out = env.fails(
        env.path(),
        &["clone", "--user", USER, &url, "badpw"],
        &[("DOLT_REMOTE_PASSWORD", "wrong")],
    );
    assert!(out.contains("code = Unauthenticated"), "{out}");
    assert!(out.contains("Access denied for user 'alice'"), "{out}");

    // An unknown database: NOT_FOUND naming it, not five retries of UNKNOWN.
    let started = Instant::now();
    let out = env.fails(
        env.path(),
        &[
            "clone",
            "--user",
            USER,
            &s.gateway.url("nosuchdb"),
            "nosuch",
        ],
        &password_env(),
    );
    assert!(out.contains("code = NotFound"), "{out}");
    assert!(out.contains("\"nosuchdb\""), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "NOT_FOUND must not be retried"
    );

    // Nothing was created on the server by any of this.
    assert!(!s.server.data_dir.join("nosuchdb").exists());
}

#[test]
fn upstream_down_is_unavailable_naming_the_address() {
    let env = DoltEnv::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let gateway = Doltgate::start(env.path(), &dead, &[]);
    let out = env.fails(
        env.path(),
        &["clone", "--user", USER, &gateway.url("shop"), "x"],
        &password_env(),
    );
    assert!(out.contains("code = Unavailable"), "{out}");
    assert!(
        out.contains(&dead),
        "message should name the upstream: {out}"
    );
}
