//! Faults with real peers: the upstream `dolt sql-server` is killed (SIGKILL)
//! while a real `dolt clone` moves table files through doltgate, then started
//! again on the same ports; then the same during a `dolt push`.
//!
//! - the clone in flight fails with a clear error (or, if Dolt's own retries
//!   outlast the outage, completes intact), and never leaves a corrupt copy;
//! - doltgate stays up, and a retried clone succeeds once the upstream is
//!   back, with the server's history;
//! - doltgate's open file descriptors and resident memory return to what they
//!   were after a warm-up clone (a small allowance for allocator slack).
//!
//! - then the same during a push's table-file upload: the push fails, no ref
//!   on the server moved, and the retried push lands with the client's hash.
//!
//! - SIGHUP (configuration reloads) while a clone downloads and while a push
//!   uploads: both complete as if nothing happened, with the server's and the
//!   client's hashes.
//!
//! Bounded in time: every wait has a deadline.

use std::path::Path;
use std::process::{Command, Output};

use std::time::{Duration, Instant};

use crate::support::*;

/// Starts `dolt sql-server` over `data` on fixed ports (so a restart is the
/// same upstream to doltgate).
fn start_server(env: &DoltEnv, data: &Path, sql_port: u16, remotesapi_port: u16, run: usize) -> ChildGuard {
    let log = env.path().join(format!("dolt-sql-server-run{run}.log"));
    DoltServer::launch(env, data, sql_port, remotesapi_port, &log)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn clone_command(env: &DoltEnv, url: &str, dest: &Path) -> Command {
    let mut clone = env.command(env.path(), &["clone", "--user", USER, url, dest.to_str().unwrap()]);
    clone.env("DOLT_REMOTE_PASSWORD", PASSWORD);
    clone
}

/// Waits until `ok()` holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// A `faulty` database of about 20 MB under `data`, and the test user with
/// Dolt's clone and push grants; returns `main`'s history.
fn seed_faulty_database(env: &DoltEnv, data: &Path) -> Vec<String> {
    let db = data.join("faulty");
    env.init_repo(&db);
    let csv = env.path().join("rows.csv");
    write_csv(&csv, 20_000, 1000);
    env.ok(&db, &["sql", "-q", "CREATE TABLE big (id INT PRIMARY KEY, payload TEXT NOT NULL);"]);
    env.ok(&db, &["table", "import", "-u", "big", csv.to_str().unwrap()]);
    env.ok(&db, &["commit", "-Am", "rows"]);
    let grants = format!(
        "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT CLONE_ADMIN, SUPER ON *.* TO '{USER}'@'%';"
    );
    env.ok(data, &["sql", "-q", &grants]);
    env.log_hashes(&db, "main")
}

/// A new branch `name` in `repo` with a table of about 16 MB of fresh rows,
/// committed; returns its head.
fn commit_big_branch(env: &DoltEnv, repo: &Path, name: &str) -> String {
    let extra = env.path().join(format!("{name}.csv"));
    write_csv(&extra, 16_000, 1000);
    env.ok(repo, &["checkout", "-b", name]);
    env.ok(repo, &["sql", "-q", "CREATE TABLE more (id INT PRIMARY KEY, payload TEXT NOT NULL);"]);
    env.ok(repo, &["table", "import", "-u", "more", extra.to_str().unwrap()]);
    env.ok(repo, &["commit", "-Am", "more rows"]);
    env.log_hashes(repo, name)[0].clone()
}

/// `name,hash` of every branch of `faulty`, read over SQL.
fn server_branches(env: &DoltEnv, sql_port: u16) -> String {
    let port = sql_port.to_string();
    let args = ["--host", "127.0.0.1", "--port", &port, "--user", USER, "--password", PASSWORD, "--no-tls"];
    let query = "SELECT name, hash FROM faulty.dolt_branches ORDER BY name";
    env.ok(env.path(), &[&args[..], &["sql", "-r", "csv", "-q", query]].concat())
}

/// Whether a clone's progress output says chunks are being downloaded.
fn downloading(progress: &std::sync::Mutex<Vec<u8>>) -> bool {
    let seen = String::from_utf8_lossy(&progress.lock().unwrap()).into_owned();
    seen.split(" chunks being downloaded").any(|before| before.ends_with(|c: char| c.is_ascii_digit() && c != '0'))
}

/// One whole clone through doltgate, so its pools and buffers are warm
/// before a baseline of its fds and memory is taken.
fn warm_up(env: &DoltEnv, url: &str) {
    let warm = env.path().join("warm");
    let out = clone_command(env, url, &warm).output().unwrap();
    assert!(out.status.success(), "warm-up clone failed: {}", text(&out));
    std::thread::sleep(Duration::from_millis(500));
}

type Pipe = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Starts a clone of `url` into `dest` and returns once its table-file
/// download has begun (its progress line says so) or it has ended, with what
/// it printed so far and goes on printing.
fn clone_until_downloading(env: &DoltEnv, url: &str, dest: &Path) -> (std::process::Child, Pipe, Pipe) {
    let mut clone = clone_command(env, url, dest)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let progress = watch(clone.stdout.take().unwrap());
    let errors = watch(clone.stderr.take().unwrap());
    let moving =
        eventually_fast(Duration::from_secs(60), || downloading(&progress) || clone.try_wait().unwrap().is_some());
    assert!(moving, "the clone never started downloading");
    (clone, progress, errors)
}

#[test]
fn upstream_killed_mid_clone_then_restarted() {
    let started = Instant::now();
    let env = DoltEnv::new();
    let data = env.path().join("server");
    let expected = seed_faulty_database(&env, &data);
    let (sql_port, remotesapi_port) = (free_port(), free_port());
    let mut server = start_server(&env, &data, sql_port, remotesapi_port, 1);

    let admin = free_port();
    let upstream = format!("127.0.0.1:{remotesapi_port}");
    let gateway = Doltgate::start(env.path(), &upstream, &["--admin", &format!("127.0.0.1:{admin}")]);
    let pid = gateway.process.pid();
    let url = gateway.url("faulty");

    warm_up(&env, &url);
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));
    let downloaded = |samples: &std::collections::HashMap<String, f64>| {
        total(samples, "doltgate_file_bytes_total", &[("direction", "download")])
    };
    let bytes_before = downloaded(&scrape(admin));

    // The fault: SIGKILL the upstream as soon as the clone reports that its
    // table-file download has begun (its progress line), long before 20 MB
    // can have gone through.
    let cut = env.path().join("cut");
    let (mut clone, progress, errors) = clone_until_downloading(&env, &url, &cut);
    assert!(clone.try_wait().unwrap().is_none(), "the clone finished before the upstream could be killed");
    server.stop();
    let killed_at = Instant::now();
    let bytes_at_kill = downloaded(&scrape(admin)) - bytes_before;

    let clone_done = eventually(Duration::from_secs(240), || clone.try_wait().unwrap().is_some());
    assert!(clone_done, "the clone neither failed nor finished within 240s of the upstream dying");
    let status = clone.wait().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&progress.lock().unwrap()),
        String::from_utf8_lossy(&errors.lock().unwrap())
    );
    let last_lines: Vec<&str> = output.lines().rev().take(3).collect();
    println!(
        "clone across the outage: exited {status} {} after the kill ({bytes_at_kill} bytes counted by then); last: {last_lines:?}",
        humanize(killed_at.elapsed())
    );
    if status.success() {
        // Dolt's own retries may outlast a short outage; then the copy must be whole.
        assert_eq!(env.log_hashes(&cut, "main"), expected);
        env.ok(&cut, &["fsck"]);
    } else {
        let clear = ["unavailable", "unreachable", "connection refused", "upstream"]
            .iter()
            .any(|needle| output.to_lowercase().contains(needle));
        assert!(clear, "the failed clone's error does not say the remote is unavailable:\n{output}");
    }
    // While it is down doltgate stays up and answers its admin port.
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_ok(), "doltgate exited:\n{}", gateway.process.log());

    // Back up on the same ports: a retried clone succeeds through the same doltgate.
    let mut server = start_server(&env, &data, sql_port, remotesapi_port, 2);
    let again = env.path().join("again");
    let mut attempts = 0;
    let recovered = eventually(Duration::from_secs(120), || {
        attempts += 1;
        let _ = std::fs::remove_dir_all(&again);
        clone_command(&env, &url, &again).output().unwrap().status.success()
    });
    assert!(recovered, "no clone succeeded after the upstream came back ({attempts} attempts)");
    assert_eq!(env.log_hashes(&again, "main"), expected);
    env.ok(&again, &["fsck"]);

    // Second fault: SIGKILL the upstream while a push uploads its table file
    // (right after doltgate answered GetUploadLocations). The push fails, and
    // once the server is back no ref has moved; the retried push lands with
    // the client's hash.
    let pushed = commit_big_branch(&env, &again, "big-push");
    let branches = |env: &DoltEnv| server_branches(env, sql_port);
    let branches_before = branches(&env);
    let push_env = [("DOLT_REMOTE_PASSWORD", PASSWORD)];
    let log_len = gateway.process.log().len();
    let mut push = env.command(&again, &["push", "--user", USER, "origin", "big-push"]);
    push.envs(push_env).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut push = push.spawn().unwrap();
    let push_out = watch(push.stdout.take().unwrap());
    let push_err = watch(push.stderr.take().unwrap());
    let uploading = eventually_fast(Duration::from_secs(60), || {
        gateway.process.log_so_far()[log_len..].contains("GetUploadLocations") || push.try_wait().unwrap().is_some()
    });
    assert!(uploading, "the push never asked for upload locations");
    assert!(push.try_wait().unwrap().is_none(), "the push finished before the upstream could be killed");
    server.stop();
    let push_done = eventually(Duration::from_secs(240), || push.try_wait().unwrap().is_some());
    assert!(push_done, "the push neither failed nor finished within 240s of the upstream dying");
    let push_status = push.wait().unwrap();
    let push_output = format!(
        "{}{}",
        String::from_utf8_lossy(&push_out.lock().unwrap()),
        String::from_utf8_lossy(&push_err.lock().unwrap())
    );
    let said = push_output.split(['\n', '\u{8}']).rfind(|l| l.to_lowercase().contains("error"));
    println!("push across the outage: exited {push_status}; said: {said:?}");
    let _server = start_server(&env, &data, sql_port, remotesapi_port, 3);
    if push_status.success() {
        assert!(branches(&env).contains(&pushed), "a push the client saw succeed is not on the server");
    } else {
        let clear = ["unavailable", "unreachable", "connection refused", "upstream"]
            .iter()
            .any(|needle| push_output.to_lowercase().contains(needle));
        assert!(clear, "the failed push's error does not say the remote is unavailable:\n{push_output}");
        assert_eq!(branches(&env), branches_before, "a failed push moved a ref");
    }
    let mut push_attempts = 0;
    let landed = eventually(Duration::from_secs(120), || {
        push_attempts += 1;
        env.run(&again, &["push", "--user", USER, "origin", "big-push"], &push_env).status.success()
    });
    assert!(landed, "no push succeeded after the upstream came back ({push_attempts} attempts)");
    let after = branches(&env);
    assert!(after.contains(&format!("big-push,{pushed}")), "the retried push is not on the server as pushed:\n{after}");

    // Resources return to the warm baseline: no leaked sockets or buffers.
    let fds_settled = eventually(Duration::from_secs(30), || open_fds(pid) <= fds_before + 4);
    let (fds_after, rss_after) = (open_fds(pid), rss_kib(pid));
    println!(
        "faults survived: 2 (upstream SIGKILL mid-clone and mid-push, restarts); fds {fds_before} -> {fds_after}; \
         RSS {rss_before} KiB -> {rss_after} KiB; {} clone attempt(s) after the restart; {} in all",
        attempts,
        humanize(started.elapsed())
    );
    assert!(fds_settled, "doltgate holds {fds_after} fds, {fds_before} before the fault");
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "doltgate's RSS grew from {rss_before} KiB to {rss_after} KiB across the fault"
    );
}

#[test]
fn sighup_mid_clone_and_mid_push_changes_nothing_in_flight() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    let expected = seed_faulty_database(&env, &data);
    let server = DoltServer::start(&env, &data);
    let config = env.path().join("doltgate.toml");
    let admin = free_port();
    // Each reload builds a new gateway (routes, clusters, upstream pools) and
    // swaps it in; the transfers in flight keep the one they started on.
    let write_config = |routes: &[&str]| {
        let mut text = format!(
            "[admin]\naddress = \"127.0.0.1:{admin}\"\n[clusters.main]\nendpoints = [{{ name = \"dolt-0\", remotesapi = \"{}\", role = \"primary\" }}]\n",
            server.remotesapi_addr()
        );
        for db in routes {
            text.push_str(&format!("[[routes]]\ndatabase = \"{db}\"\ncluster = \"main\"\n"));
        }
        std::fs::write(&config, text).unwrap();
    };
    write_config(&["faulty"]);
    let gateway = Doltgate::start_with_config(env.path(), &config);
    let pid = gateway.process.pid();
    let url = gateway.url("faulty");
    warm_up(&env, &url);
    let fds_before = open_fds(pid);
    let mut reloads = 0;
    let mut reload = |routes: &[&str]| {
        write_config(routes);
        gateway.signal("HUP");
        reloads += 1;
        let logged = eventually_fast(Duration::from_secs(10), || {
            gateway.process.log_so_far().matches("configuration reloaded").count() >= reloads
        });
        assert!(logged, "reload {reloads} was not applied:\n{}", gateway.process.log());
    };

    // Reloads while the clone downloads its table files.
    let cut = env.path().join("reloaded");
    let (mut clone, _, errors) = clone_until_downloading(&env, &url, &cut);
    let mut during_clone = 0;
    for routes in [&["faulty", "other"][..], &["faulty"], &["faulty", "other"]] {
        if clone.try_wait().unwrap().is_some() {
            break;
        }
        reload(routes);
        during_clone += 1;
    }
    assert!(during_clone >= 1, "the clone finished before a reload could land");
    let status = clone.wait().unwrap();
    assert!(status.success(), "clone across reloads failed: {}", String::from_utf8_lossy(&errors.lock().unwrap()));
    assert_eq!(env.log_hashes(&cut, "main"), expected);
    env.ok(&cut, &["fsck"]);

    // Reloads while a push uploads its table file; the Commit after them lands.
    let pushed = commit_big_branch(&env, &cut, "reload-push");
    let log_len = gateway.process.log().len();
    let mut push = env.command(&cut, &["push", "--user", USER, "origin", "reload-push"]);
    push.env("DOLT_REMOTE_PASSWORD", PASSWORD).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut push = push.spawn().unwrap();
    let push_err = watch(push.stderr.take().unwrap());
    let uploading = eventually_fast(Duration::from_secs(60), || {
        gateway.process.log_so_far()[log_len..].contains("GetUploadLocations") || push.try_wait().unwrap().is_some()
    });
    assert!(uploading, "the push never asked for upload locations");
    let mut during_push = 0;
    for routes in [&["faulty"][..], &["faulty", "other"]] {
        if push.try_wait().unwrap().is_some() {
            break;
        }
        reload(routes);
        during_push += 1;
    }
    let status = push.wait().unwrap();
    assert!(status.success(), "push across reloads failed: {}", String::from_utf8_lossy(&push_err.lock().unwrap()));
    let branches = server_branches(&env, server.sql_port);
    assert!(
        branches.contains(&format!("reload-push,{pushed}")),
        "the push is not on the server as pushed:\n{branches}"
    );

    let fds_settled = eventually(Duration::from_secs(30), || open_fds(pid) <= fds_before + 4);
    println!(
        "reloads survived: {during_clone} mid-clone, {during_push} mid-push; fds {fds_before} -> {}",
        open_fds(pid)
    );
    assert!(fds_settled, "doltgate holds {} fds, {fds_before} before the reloads", open_fds(pid));
}

/// Like [`eventually`], looking every 5 ms.
fn eventually_fast(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    ok()
}

/// Collects everything a pipe yields, as it arrives.
fn watch(mut pipe: impl std::io::Read + Send + 'static) -> Pipe {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

fn humanize(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
