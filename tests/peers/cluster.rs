//! A real two-member Dolt cluster behind doltgate: pushes go to the primary,
//! a graceful failover (old primary -> standby at epoch 2, then the standby ->
//! primary at epoch 2) is followed without touching doltgate, a push sent
//! while no member is primary waits and lands on the new primary, reads keep
//! working throughout, and a sidecar in front of a standby refuses writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

struct Member {
    env: DoltEnv,
    server: DoltServer,
    remotesapi_port: u16,
}

/// Ports of one member: SQL, user-facing remotesapi, cluster replication.
struct Ports {
    sql: u16,
    remotesapi: u16,
    cluster: u16,
}

/// Each member has its own HOME: Dolt persists the member's role and epoch in
/// the global config, so two members sharing one would share a role.
fn start_member(ports: &Ports, other_cluster_port: u16, role: &str) -> Member {
    let env = DoltEnv::new();
    let data = env.path().join("data");
    let db = data.join("shop");
    env.init_repo(&db);
    env.ok(&db, &["remote", "add", "standby", &format!("http://127.0.0.1:{other_cluster_port}/shop")]);
    DoltServer::create_admin_user(&env, &data);
    let yaml = env.path().join("server.yaml");
    std::fs::write(
        &yaml,
        format!(
            "log_level: info\nlistener:\n  host: 127.0.0.1\n  port: {sql}\nremotesapi:\n  port: {api}\ncluster:\n  standby_remotes:\n  - name: standby\n    remote_url_template: http://127.0.0.1:{other}/{{database}}\n  bootstrap_role: {role}\n  bootstrap_epoch: 1\n  remotesapi:\n    port: {cluster}\n",
            sql = ports.sql,
            api = ports.remotesapi,
            other = other_cluster_port,
            cluster = ports.cluster,
        ),
    )
    .unwrap();
    let server = DoltServer::start_with_config(&env, &data, &yaml, ports.sql, ports.remotesapi);
    Member { env, server, remotesapi_port: ports.remotesapi }
}

impl Member {
    fn sql(&self, query: &str) -> String {
        self.server.sql(&self.env, query)
    }

    fn head(&self) -> String {
        let out = self.sql("SELECT commit_hash FROM shop.dolt_log LIMIT 1");
        out.lines().nth(1).unwrap_or_default().to_owned()
    }

    fn role(&self) -> String {
        self.sql("SELECT @@global.dolt_cluster_role AS r, @@global.dolt_cluster_role_epoch AS e")
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn gateway_config(dir: &Path, name: &str, members: &[&Member], extra: &str) -> PathBuf {
    let mut text = format!(
        "[clusters.main]\nsql_user = \"{USER}\"\nsql_password = \"{PASSWORD}\"\nrole_poll_interval = \"200ms\"\n{extra}\n"
    );
    for (i, member) in members.iter().enumerate() {
        text.push_str(&format!(
            "[[clusters.main.endpoints]]\nname = \"dolt-{i}\"\nremotesapi = \"127.0.0.1:{}\"\nsql = \"127.0.0.1:{}\"\n",
            member.remotesapi_port, member.server.sql_port
        ));
    }
    text.push_str("[[routes]]\ndatabase_glob = \"*\"\ncluster = \"main\"\n");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn commit(client: &DoltEnv, repo: &Path, message: &str) -> String {
    client.ok(repo, &["sql", "-q", &format!("INSERT INTO t VALUES ('{message}');")]);
    client.ok(repo, &["commit", "-Am", message]);
    client.log_hashes(repo, "main")[0].clone()
}

#[test]
fn pushes_follow_a_graceful_failover() {
    let (pa, pb) = (
        Ports { sql: free_port(), remotesapi: free_port(), cluster: free_port() },
        Ports { sql: free_port(), remotesapi: free_port(), cluster: free_port() },
    );
    let a = start_member(&pa, pb.cluster, "primary");
    let b = start_member(&pb, pa.cluster, "standby");
    assert_eq!(a.role(), "primary,1");
    assert_eq!(b.role(), "standby,1");

    let client = DoltEnv::new();
    let config = gateway_config(client.path(), "gateway.toml", &[&a, &b], "write_wait = \"60s\"");
    let gateway = Doltgate::start_with_config(client.path(), &config);
    let auth = password_env();

    // Clone and push through doltgate: the push lands on the primary and replicates.
    let repo = client.path().join("work");
    client.ok_with(client.path(), &["clone", "--user", USER, &gateway.url("shop"), repo.to_str().unwrap()], &auth);
    client.ok(&repo, &["sql", "-q", "CREATE TABLE t (msg VARCHAR(32) PRIMARY KEY);"]);
    let first = commit(&client, &repo, "before failover");
    client.ok_with(&repo, &["push", "--user", USER, "origin", "main"], &auth);
    assert_eq!(a.head(), first, "the push went to the primary");
    wait_until("replication to the standby", Duration::from_secs(20), || b.head() == first);

    // Failover, step 1: the primary steps down. Now no member is primary.
    a.sql("CALL dolt_assume_cluster_role('standby', 2)");
    assert_eq!(a.role(), "standby,2");
    std::thread::sleep(Duration::from_millis(800)); // a few role polls

    // Reads keep working while there is no primary.
    let reader = client.path().join("reader");
    client.ok_with(client.path(), &["clone", "--user", USER, &gateway.url("shop"), reader.to_str().unwrap()], &auth);
    assert_eq!(client.log_hashes(&reader, "main")[0], first);

    // A sidecar in front of the old primary (now a standby) refuses writes at once, naming where to go.
    let sidecar_config = gateway_config(
        client.path(),
        "sidecar.toml",
        &[&a],
        "no_primary = \"refuse\"\nwrites_url = \"https://dolt.example.test\"",
    );
    let sidecar = Doltgate::start_with_config(client.path(), &sidecar_config);
    let side_repo = client.path().join("side");
    client.ok_with(client.path(), &["clone", "--user", USER, &sidecar.url("shop"), side_repo.to_str().unwrap()], &auth);
    let doomed = commit(&client, &side_repo, "doomed");
    let started = Instant::now();
    let out = client.fails(&side_repo, &["push", "--user", USER, "origin", "main"], &auth);
    assert!(out.contains("code = FailedPrecondition") && out.contains("https://dolt.example.test"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(20), "a refusal must not be retried for long");

    // A push sent now waits for a primary...
    let second = commit(&client, &repo, "during failover");
    let push = {
        let mut push = client.command(&repo, &["push", "--user", USER, "origin", "main"]);
        push.env("DOLT_REMOTE_PASSWORD", PASSWORD);
        std::thread::spawn(move || push.output().unwrap())
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.head(), first, "nothing may land on a standby");
    assert_eq!(b.head(), first, "nothing may land on a standby");

    // ... and lands on the new primary once step 2 promotes the standby.
    b.sql("CALL dolt_assume_cluster_role('primary', 2)");
    let out = push.join().unwrap();
    assert!(out.status.success(), "push during failover failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.head(), second, "the push landed on the new primary");
    wait_until("replication back to the old primary", Duration::from_secs(20), || a.head() == second);

    // Every acknowledged push is on the new primary, and the refused one is nowhere.
    let history = b.sql("SELECT commit_hash FROM shop.dolt_log");
    assert!(history.contains(&first) && history.contains(&second), "{history}");
    assert!(!history.contains(&doomed) && !a.sql("SELECT commit_hash FROM shop.dolt_log").contains(&doomed));

    // Later pushes go to the new primary without any change to doltgate.
    let third = commit(&client, &repo, "after failover");
    client.ok_with(&repo, &["push", "--user", USER, "origin", "main"], &auth);
    assert_eq!(b.head(), third);
    assert_eq!(a.role(), "standby,2");
    let log = gateway.process.log();
    assert!(log.contains("primary changed cluster=main primary=\"dolt-1\""), "gateway log:\n{log}");
}
