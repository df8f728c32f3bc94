//! Graceful shutdown with real peers: SIGTERM while a real `dolt clone` runs
//! through doltgate. `/readyz` turns 503 at once, doltgate keeps serving
//! through `drain_delay` (the clone still opens new connections), the clone
//! completes intact, and doltgate then exits cleanly.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn sigterm_mid_clone_lets_the_clone_finish() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    let db = data.join("drain");
    env.init_repo(&db);
    let csv = env.path().join("rows.csv");
    write_csv(&csv, 40_000, 1000);
    env.ok(&db, &["sql", "-q", "CREATE TABLE big (id INT PRIMARY KEY, payload TEXT NOT NULL);"]);
    env.ok(&db, &["table", "import", "-u", "big", csv.to_str().unwrap()]);
    env.ok(&db, &["commit", "-Am", "rows"]);
    let server = DoltServer::start(&env, &data);

    let admin = free_port();
    let config = env.path().join("doltgate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\ndrain_delay = \"6s\"\ndrain_timeout = \"30s\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n[upstream]\naddress = \"{}\"\n",
            server.remotesapi_addr()
        ),
    )
    .unwrap();
    let mut gateway = Doltgate::start_with_config(env.path(), &config);

    let dest = env.path().join("clone");
    let mut clone = env.command(env.path(), &["clone", "--user", USER, &gateway.url("drain"), dest.to_str().unwrap()]);
    clone.env("DOLT_REMOTE_PASSWORD", PASSWORD);
    let clone = std::thread::spawn(move || clone.output().unwrap());
    // Wait until the clone is moving data, then ask doltgate to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gateway.process.log_so_far().contains("table-file request") {
        assert!(Instant::now() < deadline, "the clone never reached the table files");
        std::thread::sleep(Duration::from_millis(20));
    }
    gateway.signal("TERM");
    assert!(!clone.is_finished(), "SIGTERM must land while the clone is running");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_get(admin, "/readyz"), (503, "not ready: shutting down\n".to_owned()));

    let out = clone.join().unwrap();
    assert!(out.status.success(), "clone failed across SIGTERM: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.log_hashes(&dest, "main"), env.log_hashes(&db, "main"));
    env.ok(&dest, &["fsck"]);
    // During the drain delay new connections are still served: a whole new clone works.
    let second = env.path().join("second");
    env.ok_with(
        env.path(),
        &["clone", "--user", USER, &gateway.url("drain"), second.to_str().unwrap()],
        &password_env(),
    );
    assert!(gateway.process.log().contains("shutdown requested"), "doltgate logged the shutdown");

    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = gateway.process.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "doltgate did not exit after draining");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "doltgate exited with {status}");
}
