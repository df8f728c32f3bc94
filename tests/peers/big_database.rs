//! A database of well over 50 MB pushed and cloned through doltgate with the
//! real `dolt` CLI: pushes upload archive files (PUT), clones download whole
//! files (GET without Range), fetches read chunks (ranged GETs). The result
//! must carry the same commit hashes as direct access, pass `dolt fsck`, and
//! doltgate's memory must stay far below the data it moved.

use std::path::Path;

use crate::support::*;

const ROWS: usize = 60_000;
const PAYLOAD_BYTES: usize = 1000;

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

fn files_with_suffix(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(suffix))
        .count()
}

#[test]
fn big_database_push_and_clone_match_direct() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    env.init_repo(&data.join("big"));
    let server = DoltServer::start(&env, &data);
    let gateway = Doltgate::start(env.path(), &server.remotesapi_addr(), &[]);
    let auth = password_env();

    // Build the big commit in a clone made through doltgate, then push it back through doltgate.
    let work = env.path().join("work");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("big"), work.to_str().unwrap()], &auth);
    // The footprint of a warm process (runtime, TLS, metrics, pools) is not what
    // this test judges; the growth while moving the big data is.
    let warm_kib = gateway.peak_rss_kib();
    let csv = env.path().join("big.csv");
    write_csv(&csv, ROWS, PAYLOAD_BYTES);
    env.ok(&work, &["sql", "-q", "CREATE TABLE big (id INT PRIMARY KEY, payload TEXT NOT NULL);"]);
    env.ok(&work, &["table", "import", "-u", "big", csv.to_str().unwrap()]);
    env.ok(&work, &["commit", "-Am", "sixty thousand rows"]);
    let stored = dir_size(&work.join(".dolt/noms"));
    println!("local table data: {} MB", stored / 1_000_000);
    assert!(stored >= 50_000_000, "test database must hold at least 50 MB of table data, has {stored} bytes");

    env.ok_with(&work, &["push", "--user", USER, "origin", "main"], &auth);
    let pushed = env.log_hashes(&work, "main");
    assert_eq!(env.log_hashes(&data.join("big"), "main"), pushed, "server has the pushed commits");
    let server_noms = data.join("big/.dolt/noms");
    assert!(files_with_suffix(&server_noms, ".darc") > 0, "the push should have uploaded archive files");

    // Clone through doltgate and directly: same hashes, intact data.
    let via_gateway = env.path().join("via-gateway");
    let direct = env.path().join("direct");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("big"), via_gateway.to_str().unwrap()], &auth);
    let direct_url = format!("http://127.0.0.1:{}/big", server.remotesapi_port);
    env.ok_with(env.path(), &["clone", "--user", USER, &direct_url, direct.to_str().unwrap()], &auth);
    assert_eq!(env.log_hashes(&via_gateway, "main"), pushed);
    assert_eq!(env.log_hashes(&direct, "main"), pushed);
    env.ok(&via_gateway, &["fsck"]);
    let full_rows = format!("SELECT COUNT(*) AS n FROM big WHERE LENGTH(payload) = {PAYLOAD_BYTES}");
    assert_eq!(env.query_csv(&via_gateway, &full_rows), format!("n\n{ROWS}\n"));

    // A small change fetched by the gateway clone reads chunks with ranged GETs.
    env.ok(&work, &["sql", "-q", "UPDATE big SET payload = 'changed' WHERE id % 1000 = 0;"]);
    env.ok(&work, &["commit", "-Am", "touch sixty rows"]);
    env.ok_with(&work, &["push", "--user", USER, "origin", "main"], &auth);
    env.ok_with(&via_gateway, &["pull", "--user", USER, "origin", "main"], &auth);
    assert_eq!(env.log_hashes(&via_gateway, "main"), env.log_hashes(&work, "main"));
    env.ok(&via_gateway, &["fsck"]);

    // The transfers really took all three shapes through doltgate.
    let log = gateway.process.log();
    let file_requests: Vec<&str> = log.lines().filter(|l| l.contains("table-file request")).collect();
    let count = |pred: &dyn Fn(&str) -> bool| file_requests.iter().filter(|l| pred(l)).count();
    let uploads = count(&|l| l.contains("method=PUT") && l.contains("status=200"));
    let whole_gets = count(&|l| l.contains("method=GET") && l.contains("range=none") && l.contains("status=200"));
    let ranged_gets = count(&|l| l.contains("method=GET") && l.contains("range=bytes=") && l.contains("status=206"));
    let archive_gets = count(&|l| l.contains("method=GET") && l.contains(".darc"));
    println!("through doltgate: {uploads} uploads, {whole_gets} whole-file GETs, {ranged_gets} ranged GETs, {archive_gets} archive GETs");
    assert!(uploads > 0 && whole_gets > 0 && ranged_gets > 0 && archive_gets > 0, "log tail:\n{}", tail(&log));
    assert!(!log.contains("refused"), "no request should have been refused; log tail:\n{}", tail(&log));

    let peak_kib = gateway.peak_rss_kib();
    let growth_kib = peak_kib.saturating_sub(warm_kib);
    println!(
        "doltgate peak RSS: {} MiB ({} MiB warm, +{} MiB) while moving {} MB",
        peak_kib / 1024,
        warm_kib / 1024,
        growth_kib / 1024,
        stored / 1_000_000
    );
    // Buffering even one whole file of the push would grow by tens of MB.
    assert!(
        growth_kib * 1024 < stored / 4,
        "doltgate peak RSS grew by {growth_kib} KiB while moving the {stored}-byte database: \
         something buffers whole files"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
