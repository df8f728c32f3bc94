//! The admin listener with real traffic: after real `dolt` clones and a push
//! through doltgate, `/metrics` (scraped over HTTP, parsed strictly as
//! Prometheus text format) moved by the right amounts; `/healthz` and
//! `/readyz` answer.

use std::collections::HashMap;

use crate::support::*;

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    total(after, name, labels) - total(before, name, labels)
}

#[test]
fn metrics_move_with_real_traffic() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    let db = data.join("stats");
    env.init_repo(&db);
    env.ok(&db, &["sql", "-q", "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1);"]);
    env.ok(&db, &["commit", "-Am", "t"]);
    let server = DoltServer::start(&env, &data);
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let gateway = Doltgate::start(env.path(), &server.remotesapi_addr(), &["--admin", &admin_addr]);
    let auth = password_env();

    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz").0, 200);
    let start = scrape(admin);
    assert_eq!(total(&start, "doltgate_upstream_primary", &[("cluster", "default"), ("endpoint", "dolt")]), 1.0);

    // A clone and a push.
    let repo = env.path().join("clone");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("stats"), repo.to_str().unwrap()], &auth);
    env.ok(&repo, &["sql", "-q", "INSERT INTO t VALUES (2);"]);
    env.ok(&repo, &["commit", "-Am", "two"]);
    env.ok_with(&repo, &["push", "--user", USER, "origin", "main"], &auth);
    // A refused clone: exactly one call, not retried.
    env.fails(env.path(), &["clone", &gateway.url("stats"), "nocreds"], &[]);

    let end = scrape(admin);
    let grpc =
        |method, code| delta(&start, &end, "doltgate_grpc_requests_total", &[("method", method), ("code", code)]);
    assert!(grpc("GetRepoMetadata", "OK") >= 2.0, "clone and push each open the remote");
    assert_eq!(grpc("Commit", "OK"), 1.0, "one push, one Commit");
    let routed = [("method", "Commit"), ("route", "*"), ("cluster", "default"), ("endpoint", "dolt")];
    assert_eq!(delta(&start, &end, "doltgate_grpc_requests_total", &routed), 1.0, "labelled with where it went");
    assert_eq!(grpc("GetRepoMetadata", "UNAUTHENTICATED"), 1.0);
    let files =
        |method, status| delta(&start, &end, "doltgate_file_requests_total", &[("method", method), ("status", status)]);
    assert!(files("PUT", "200") >= 1.0);
    assert!(files("GET", "200") + files("GET", "206") >= 1.0, "the clone downloaded table files");
    let bytes = |direction| delta(&start, &end, "doltgate_file_bytes_total", &[("direction", direction)]);
    assert!(bytes("download") > 1000.0, "download bytes counted");
    assert!(bytes("upload") > 100.0, "upload bytes counted");
    assert!(delta(&start, &end, "doltgate_file_transfer_duration_seconds_count", &[("method", "PUT")]) >= 1.0);
    assert_eq!(total(&end, "doltgate_grpc_request_duration_seconds_count", &[("method", "Commit")]), 1.0);
    assert_eq!(end.get("doltgate_requests_in_flight"), Some(&0.0), "nothing left in flight");
    assert_eq!(total(&end, "doltgate_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // The access log: one line per call and per table-file request, with the user but no secret.
    let log = gateway.process.log();
    let commit_line = log
        .lines()
        .find(|l| l.contains("grpc call") && l.contains("method=Commit"))
        .unwrap_or_else(|| panic!("no Commit access line:\n{log}"));
    for field in ["code=OK", "user=alice", "database=stats", "endpoint=dolt", "duration_ms="] {
        assert!(commit_line.contains(field), "{field} missing from {commit_line}");
    }
    assert!(log.contains("code=UNAUTHENTICATED"), "refused calls are logged too");
    assert!(log
        .lines()
        .any(|l| l.contains("table-file request") && l.contains("method=PUT") && l.contains("status=200")));
    assert!(!log.contains(PASSWORD), "the password must never reach the log");
}
