//! Per-branch push rules with the real `dolt` CLI pushing through doltgate
//! to a real `dolt sql-server` whose database has 130 branches (a ref map of
//! several tree levels). The users have no grants on Dolt beyond a login;
//! doltgate inspects every Commit and enforces:
//!
//! - `features`: dan and mia may do anything to `feature/*`;
//! - `protect-main`: only mia may touch `main`, and only fast-forward;
//! - `release-tags`: only mia may create `v*` tags (never move them);
//! - defaults elsewhere: create and fast-forward branches, create tags.
//!
//! Refused pushes leave the server's refs as they were; every push leaves
//! an audit line; an upload through one doltgate and the Commit through
//! another (sharing config and URL key) are judged the same; with
//! `branch_control = "mirror"`, Dolt's own `dolt_branch_control` and
//! `dolt_branch_namespace_control` rows bind pushes too.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

const URL_KEY: &str = "push-rules-test-url-key-0123456789abcdef";
const USERS: [(&str, &str); 2] = [("dan", "dans-pass-1"), ("mia", "mias-pass-1")];

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(name, _)| *name == user).map(|(_, pw)| *pw).expect("a test user")
}

pub(crate) struct Setup {
    pub(crate) env: DoltEnv,
    pub(crate) server: DoltServer,
    pub(crate) gateway: Doltgate,
}

fn config_text(server: &DoltServer, public_url: Option<&str>, auth_options: &str) -> String {
    let listener = public_url.map(|url| format!("[listener]\npublic_url = \"{url}\"\n")).unwrap_or_default();
    format!(
        r#"{listener}
{cluster}

[file_urls]
key_env = "URL_KEY"

[auth]
{auth_options}

[[auth.grants]]
databases = ["shop"]
users = ["dan", "mia"]
permission = "write"

[[auth.push_rules]]
name = "features"
branches = ["feature/*"]
users = ["dan", "mia"]
allow = ["create", "fast_forward", "force", "delete"]

[[auth.push_rules]]
name = "protect-main"
branches = ["main"]
users = ["mia"]
allow = ["fast_forward"]

[[auth.push_rules]]
name = "release-tags"
tags = ["v*"]
users = ["mia"]
allow = ["create"]
"#,
        cluster = service_cluster_config(server),
    )
}

impl Setup {
    fn new() -> Setup {
        Setup::with_auth_options("", "")
    }

    /// `server_sql` runs as the local superuser before the server starts.
    pub(crate) fn with_auth_options(auth_options: &str, server_sql: &str) -> Setup {
        let env = DoltEnv::new();
        let data = env.path().join("server");
        let db = data.join("shop");
        env.seed_items_database(&db);
        let branches: String = (0..130).map(|i| format!("CALL dolt_branch('b{i:03}');")).collect();
        env.ok(&db, &["sql", "-q", &branches]);
        let users: String =
            USERS.iter().map(|(user, pw)| format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}';")).collect();
        env.ok(&data, &["sql", "-q", &users]);
        if !server_sql.is_empty() {
            env.ok(&data, &["sql", "-q", server_sql]);
        }
        let server = DoltServer::start(&env, &data);
        let config = env.path().join("doltgate.toml");
        std::fs::write(&config, config_text(&server, None, auth_options)).unwrap();
        let gateway = start_gateway(&env, &config);
        Setup { env, server, gateway }
    }

    fn url(&self, gateway: &Doltgate) -> String {
        format!("http://127.0.0.1:{}/shop", gateway.port)
    }

    pub(crate) fn clone_as(&self, user: &str) -> PathBuf {
        let dest = self.env.path().join(format!("clone-{user}"));
        let args = ["clone", "--user", user, &self.url(&self.gateway), dest.to_str().unwrap()];
        self.env.ok_with(self.env.path(), &args, &[("DOLT_REMOTE_PASSWORD", password(user))]);
        dest
    }

    pub(crate) fn push(&self, repo: &Path, user: &str, args: &[&str]) -> Output {
        let mut all = vec!["push", "--user", user];
        all.extend_from_slice(args);
        self.env.run(repo, &all, &[("DOLT_REMOTE_PASSWORD", password(user))])
    }

    pub(crate) fn push_ok(&self, repo: &Path, user: &str, args: &[&str]) {
        let out = self.push(repo, user, args);
        assert!(out.status.success(), "push {args:?} as {user} failed:\n{}", output(&out));
    }

    /// Asserts the push is refused with a message containing every needle,
    /// and that the server's refs did not move.
    pub(crate) fn push_refused(&self, repo: &Path, user: &str, args: &[&str], needles: &[&str]) {
        let before = self.server_refs();
        let out = self.push(repo, user, args);
        let text = output(&out);
        assert!(!out.status.success(), "push {args:?} as {user} should have been refused:\n{text}");
        for needle in needles {
            assert!(text.contains(needle), "push {args:?} as {user}: no {needle:?} in:\n{text}");
        }
        assert_eq!(self.server_refs(), before, "a refused push moved no ref");
    }

    /// Every branch and tag on the server with its hash.
    fn server_refs(&self) -> String {
        let branches = self.server.sql(&self.env, "SELECT name, hash FROM shop.dolt_branches ORDER BY name");
        let tags = self.server.sql(&self.env, "SELECT tag_name, tag_hash FROM shop.dolt_tags ORDER BY tag_name");
        format!("{branches}{tags}")
    }

    pub(crate) fn server_hash(&self, branch: &str) -> Option<String> {
        let query = format!("SELECT hash FROM shop.dolt_branches WHERE name = '{branch}'");
        self.server.sql(&self.env, &query).lines().nth(1).map(str::to_owned)
    }

    pub(crate) fn head(&self, repo: &Path) -> String {
        self.env.log_hashes(repo, "HEAD")[0].clone()
    }

    /// Extra `[auth]` rules, and an admin port to scrape.
    pub(crate) fn with_rules_and_admin(rules: &str) -> (Setup, u16) {
        let admin_port = free_port();
        let options = format!("{rules}\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n");
        (Setup::with_auth_options(&options, ""), admin_port)
    }

    /// A commit on `feature/side` and one on `main`, merged into `main` with a merge commit.
    fn merge_a_side_branch(&self, repo: &Path, first_id: u32) {
        self.env.ok(repo, &["checkout", "-b", "feature/side"]);
        self.commit(repo, first_id, "on the side");
        self.env.ok(repo, &["checkout", "main"]);
        self.commit(repo, first_id + 1, "on main");
        self.env.ok(repo, &["merge", "-m", "merge the side", "feature/side"]);
    }

    pub(crate) fn commit(&self, repo: &Path, id: u32, what: &str) {
        self.env.ok(repo, &["sql", "-q", &format!("REPLACE INTO items VALUES ({id}, '{what}')")]);
        self.env.ok(repo, &["commit", "-am", what]);
    }
}

fn start_gateway(env: &DoltEnv, config: &Path) -> Doltgate {
    Doltgate::start_with_config_env(env.path(), config, &[("SERVICE_PASSWORD", PASSWORD), ("URL_KEY", URL_KEY)])
}

fn output(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn branch_rules_hold_for_real_pushes() {
    let s = Setup::new();
    let dan = s.clone_as("dan");
    s.env.ok(&dan, &["checkout", "-b", "feature/a"]);
    s.commit(&dan, 10, "dan feature");
    s.push_ok(&dan, "dan", &["origin", "feature/a"]);
    assert_eq!(s.server_hash("feature/a"), Some(s.head(&dan)), "a new feature branch is allowed");

    s.env.ok(&dan, &["checkout", "main"]);
    s.commit(&dan, 11, "dan on main");
    s.push_refused(
        &dan,
        "dan",
        &["origin", "main"],
        &["fast-forward refs/heads/main is not allowed for user \"dan\"", "protect-main"],
    );

    let mia = s.clone_as("mia");
    s.commit(&mia, 12, "mia on main");
    s.push_ok(&mia, "mia", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&mia)), "maintainers fast-forward main");

    s.env.ok(&mia, &["reset", "--hard", "HEAD~1"]);
    s.commit(&mia, 13, "mia rewrites main");
    s.push_refused(&mia, "mia", &["--force", "origin", "main"], &["force-push to refs/heads/main", "protect-main"]);

    s.env.ok(&dan, &["checkout", "feature/a"]);
    s.env.ok(&dan, &["reset", "--hard", "HEAD~1"]);
    s.commit(&dan, 14, "dan rewrites his feature");
    s.push_ok(&dan, "dan", &["--force", "origin", "feature/a"]);
    assert_eq!(s.server_hash("feature/a"), Some(s.head(&dan)), "force is allowed on features");

    s.push_ok(&dan, "dan", &["origin", ":feature/a"]);
    assert_eq!(s.server_hash("feature/a"), None, "deleting a feature branch is allowed");
    s.push_refused(&dan, "dan", &["origin", ":b007"], &["delete refs/heads/b007", "the default rule"]);

    let log = s.gateway_log();
    assert!(log.contains("verdict=allowed") && log.contains("verdict=refused"), "audit lines:\n{log}");
    assert!(log.contains("refs/heads/main") && log.contains("force"), "the audit names refs and kinds");
}

#[test]
fn tag_rules_and_a_thousand_chunk_push() {
    let s = Setup::new();
    let mia = s.clone_as("mia");
    s.env.ok(&mia, &["tag", "v1", "HEAD"]);
    s.push_ok(&mia, "mia", &["origin", "v1"]);
    s.env.ok(&mia, &["tag", "-d", "v1"]);
    s.env.ok(&mia, &["tag", "v1", "HEAD~1"]);
    s.push_refused(&mia, "mia", &["--force", "origin", "v1"], &["move refs/tags/v1", "release-tags"]);

    let dan = s.clone_as("dan");
    s.env.ok(&dan, &["tag", "v2", "HEAD"]);
    s.push_refused(&dan, "dan", &["origin", "v2"], &["create refs/tags/v2", "release-tags"]);
    s.env.ok(&dan, &["tag", "nightly", "HEAD"]);
    s.push_ok(&dan, "dan", &["origin", "nightly"]);

    // A big commit: its upload is an archive of thousands of zstd chunks.
    s.env.ok(&dan, &["checkout", "-b", "feature/big"]);
    s.env.ok(&dan, &["sql", "-q", "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(200));"]);
    let insert = "INSERT INTO big WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199) \
                  SELECT a.i * 1000 + b.i, CONCAT(SHA2(a.i * 1000 + b.i, 256), SHA2(a.i - b.i, 256)) \
                  FROM n AS a CROSS JOIN n AS b;";
    s.env.ok(&dan, &["sql", "-q", insert]);
    s.env.ok(&dan, &["commit", "-Am", "big"]);
    s.push_ok(&dan, "dan", &["origin", "feature/big"]);
    let rows = s.server.sql(&s.env, "SELECT COUNT(*) FROM `shop/feature/big`.big");
    assert!(rows.contains("40000"), "{rows}");
    let largest = largest_archive_chunks(&s.server.data_dir.join("shop/.dolt/noms"));
    assert!(largest >= 1000, "the push's archive held {largest} chunks");
}

#[test]
fn upload_through_one_gateway_and_commit_through_another() {
    let s = Setup::new();
    // The first gateway hands out upload URLs that lead to the second.
    let config = s.env.path().join("front.toml");
    let uploads = &s.gateway;
    let public_url = format!("http://127.0.0.1:{}", uploads.port);
    std::fs::write(&config, config_text(&s.server, Some(&public_url), "")).unwrap();
    let front = start_gateway(&s.env, &config);

    let dan = s.env.path().join("front-clone");
    let args = ["clone", "--user", "dan", &s.url(&front), dan.to_str().unwrap()];
    s.env.ok_with(s.env.path(), &args, &[("DOLT_REMOTE_PASSWORD", password("dan"))]);
    s.env.ok(&dan, &["checkout", "-b", "feature/split"]);
    s.commit(&dan, 20, "split push");
    s.push_ok(&dan, "dan", &["origin", "feature/split"]);
    assert_eq!(s.server_hash("feature/split"), Some(s.head(&dan)));
    s.env.ok(&dan, &["checkout", "main"]);
    s.commit(&dan, 21, "split push to main");
    s.push_refused(&dan, "dan", &["origin", "main"], &["fast-forward refs/heads/main", "protect-main"]);

    let uploads_log = uploads.process.log();
    let front_log = front.process.log();
    assert!(uploads_log.contains("method=PUT"), "uploads went through the second gateway:\n{uploads_log}");
    assert!(!front_log.contains("method=PUT"), "and not through the first");
    assert!(front_log.contains("method=Commit") && front_log.contains("verdict=refused"), "{front_log}");
}

impl Setup {
    pub(crate) fn gateway_log(&self) -> String {
        self.gateway.process.log()
    }
}

/// Chunks in the largest archive of a store directory.
fn largest_archive_chunks(noms: &Path) -> usize {
    std::fs::read_dir(noms)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).ok()?;
            doltgate::storage::Archive::parse(bytes.into()).ok().map(|archive| archive.chunk_count())
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn dolts_own_branch_control_rows_bind_pushes_when_mirrored() {
    let s = Setup::with_auth_options(
        "branch_control = \"mirror\"\nbranch_control_poll_interval = \"200ms\"",
        "USE shop; INSERT INTO dolt_branch_control VALUES ('shop', 'b00%', 'dan', '%', 'read'); \
         INSERT INTO dolt_branch_namespace_control VALUES ('shop', 'rel%', 'mia', '%');",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let dan = s.clone_as("dan");
    s.env.ok(&dan, &["checkout", "b001"]);
    s.commit(&dan, 30, "dan on b001");
    s.push_refused(&dan, "dan", &["origin", "b001"], &["fast-forward refs/heads/b001", "dolt_branch_control"]);
    s.env.ok(&dan, &["checkout", "b100"]);
    s.commit(&dan, 31, "dan on b100");
    s.push_ok(&dan, "dan", &["origin", "b100"]);
    s.env.ok(&dan, &["checkout", "-b", "rel-1"]);
    s.push_refused(&dan, "dan", &["origin", "rel-1"], &["create refs/heads/rel-1", "dolt_branch_namespace_control"]);
    let mia = s.clone_as("mia");
    s.env.ok(&mia, &["checkout", "-b", "rel-2"]);
    s.push_ok(&mia, "mia", &["origin", "rel-2"]);
    assert_eq!(s.server_hash("rel-2"), Some(s.head(&mia)));
}

/// Rollout and exceptions: a rule in `evaluate` mode refuses nothing but
/// leaves an audit note and a `would_refuse` count; a `deny` refuses what a
/// more specific rule allows.
#[test]
fn evaluate_mode_refuses_nothing_and_an_explicit_deny_wins() {
    let rules = r#"
[[auth.push_rules]]
name = "try-freezing-feature-a"
branches = ["feature/a*"]
everyone = true
allow = []
mode = "evaluate"

[[auth.push_rules]]
name = "mia-keeps-branches"
branches = ["*"]
users = ["mia"]
deny = ["delete"]
"#;
    let (s, admin_port) = Setup::with_rules_and_admin(rules);
    let dan = s.clone_as("dan");
    s.env.ok(&dan, &["checkout", "-b", "feature/a1"]);
    s.commit(&dan, 20, "dan feature a1");
    s.push_ok(&dan, "dan", &["origin", "feature/a1"]);
    assert_eq!(s.server_hash("feature/a1"), Some(s.head(&dan)), "evaluate mode refuses nothing");
    let log = s.gateway_log();
    assert!(
        log.contains("allowed by rule \"features\"")
            && log.contains("evaluate mode: would be refused by rule \"try-freezing-feature-a\""),
        "the audit line says what the evaluated rule would do:\n{log}"
    );
    let samples = scrape(admin_port);
    let count = |rule: &str, verdict: &str| {
        total(&samples, "doltgate_push_rule_verdicts_total", &[("rule", rule), ("verdict", verdict)])
    };
    assert!(count("try-freezing-feature-a", "would_refuse") >= 1.0, "{samples:?}");
    assert!(count("features", "allowed") >= 1.0);
    assert_eq!(count("try-freezing-feature-a", "refused"), 0.0);

    let mia = s.clone_as("mia");
    s.env.ok(&mia, &["checkout", "-b", "feature/m"]);
    s.commit(&mia, 21, "mia feature m");
    s.push_ok(&mia, "mia", &["origin", "feature/m"]);
    s.push_refused(&mia, "mia", &["origin", ":feature/m"], &["delete refs/heads/feature/m", "mia-keeps-branches"]);
    assert!(s.server_hash("feature/m").is_some());
    s.push_ok(&dan, "dan", &["origin", ":feature/a1"]);
    assert_eq!(s.server_hash("feature/a1"), None, "the deny binds only the users it names");
    let denied = [("rule", "mia-keeps-branches"), ("verdict", "refused")];
    assert!(total(&scrape(admin_port), "doltgate_push_rule_verdicts_total", &denied) >= 1.0);
}

/// `linear_history`: no merge commit reaches `main`, neither pushed directly
/// nor by way of a feature branch it is then fast-forwarded to; flat history
/// and merges elsewhere go through.
#[test]
fn linear_history_keeps_merge_commits_off_main() {
    let linear = r#"
[[auth.push_rules]]
name = "linear-main"
branches = ["main"]
users = ["mia"]
allow = ["fast_forward"]
linear_history = true
"#;
    let s = Setup::with_auth_options(linear, "");
    let mia = s.clone_as("mia");
    s.merge_a_side_branch(&mia, 30);
    s.push_refused(&mia, "mia", &["origin", "main"], &["linear history: adds merge commit", "linear-main"]);

    // Merges are fine where no rule asks for linear history...
    s.env.ok(&mia, &["checkout", "-b", "feature/merged"]);
    s.push_ok(&mia, "mia", &["origin", "feature/merged"]);
    assert_eq!(s.server_hash("feature/merged"), Some(s.head(&mia)));
    // ...but main cannot take them by way of that branch either.
    s.env.ok(&mia, &["checkout", "main"]);
    s.push_refused(&mia, "mia", &["origin", "main"], &["linear history: adds merge commit", "linear-main"]);

    // The same work without the merge commit goes through.
    s.env.ok(&mia, &["reset", "--hard", "HEAD~1"]);
    s.push_ok(&mia, "mia", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&mia)), "a flat fast-forward of main");
}

/// `author_email_by_source` (here for SQL-password users, the `local`
/// source) and message patterns hold for every commit a push adds to
/// `main`, including commits that reached a feature branch first.
#[test]
fn author_and_message_rules_judge_every_added_commit() {
    let authorship = r#"
[[auth.push_rules]]
name = "main-authorship"
branches = ["main"]
users = ["mia"]
allow = ["fast_forward"]
# SQL-password users are the `local` source; SSO users would have to use the e-mail their token vouches for.
author_email_by_source = { local = "{user}@shop.example", corp-sso = "{email}" }
forbidden_message_patterns = ["WIP*"]
"#;
    let s = Setup::with_auth_options(authorship, "");
    let mia = s.clone_as("mia");
    let commit_as = |id: u32, author: &str, message: &str| {
        s.env.ok(&mia, &["sql", "-q", &format!("REPLACE INTO items VALUES ({id}, 'row {id}')")]);
        s.env.ok(&mia, &["commit", "-am", message, "--author", author]);
    };
    let before = s.server_hash("main");
    commit_as(40, "Someone Else <someone@elsewhere.example>", "add a row");
    s.push_refused(
        &mia,
        "mia",
        &["origin", "main"],
        &["author e-mail \"someone@elsewhere.example\"", "does not match \"mia@shop.example\"", "main-authorship"],
    );
    // Through a feature branch first: pushed there, then refused on main all the same.
    s.env.ok(&mia, &["checkout", "-b", "feature/elsewhere"]);
    s.push_ok(&mia, "mia", &["origin", "feature/elsewhere"]);
    s.env.ok(&mia, &["checkout", "main"]);
    s.push_refused(&mia, "mia", &["origin", "main"], &["does not match \"mia@shop.example\""]);

    s.env.ok(&mia, &["reset", "--hard", "HEAD~1"]);
    commit_as(41, "Mia <mia@shop.example>", "WIP half a row");
    s.push_refused(&mia, "mia", &["origin", "main"], &["matches forbidden \"WIP*\"", "main-authorship"]);
    assert_eq!(s.server_hash("main"), before, "main never moved");

    s.env.ok(&mia, &["reset", "--hard", "HEAD~1"]);
    commit_as(42, "Mia <MIA@Shop.Example>", "add a row, properly");
    s.push_ok(&mia, "mia", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&mia)), "her own address, in any case");
}

/// `bypass_users`: the named user's push goes through what the rule would
/// refuse, with a warning on the audit log and a `bypassed` count; others
/// stay refused.
#[test]
fn a_bypass_goes_through_and_is_audited() {
    let bypass = r#"
[[auth.push_rules]]
name = "flat-main"
branches = ["main"]
users = ["mia", "dan"]
allow = ["fast_forward"]
linear_history = true
bypass_users = ["dan"]
"#;
    let (s, admin_port) = Setup::with_rules_and_admin(bypass);
    let repo = s.clone_as("mia");
    s.merge_a_side_branch(&repo, 50);
    s.push_refused(&repo, "mia", &["origin", "main"], &["linear history: adds merge commit", "flat-main"]);
    s.push_ok(&repo, "dan", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&repo)), "dan may bypass flat-main");
    let log = s.gateway_log();
    assert!(
        log.contains("push rule bypassed") && log.contains("dan's bypass of rule \"flat-main\""),
        "the bypass is on the audit log:\n{log}"
    );
    let bypassed = [("rule", "flat-main"), ("verdict", "bypassed")];
    assert!(total(&scrape(admin_port), "doltgate_push_rule_verdicts_total", &bypassed) >= 1.0);
}
