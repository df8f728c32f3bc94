//! Concurrent load from the real ghz client through doltgate to a real
//! `dolt sql-server`: every call must succeed. Throughput is printed for
//! information only; targets live in benchmarks, not tests.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

fn ghz_binary() -> PathBuf {
    let path = std::env::var_os("GHZ").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ghz"));
    assert!(
        Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success()),
        "real peer ghz not found at {}: set $GHZ or run scripts/install-peers (never skipped)",
        path.display()
    );
    path
}

/// Runs ghz and returns (ok responses, total, requests per second).
fn ghz(target: &str, call: &str, data: &str, total: u32, concurrency: u32) -> (u64, u64, f64) {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/dolt/services/remotesapi/v1alpha1/chunkstore.proto");
    let imports = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    let out = Command::new(ghz_binary())
        .args(["--insecure", "--proto", proto, "--import-paths", imports])
        .args(["--call", &format!("dolt.services.remotesapi.v1alpha1.ChunkStoreService/{call}")])
        .args(["-d", data, "-m", &format!(r#"{{"authorization":"Basic {auth}"}}"#)])
        .args(["-n", &total.to_string(), "-c", &concurrency.to_string(), "--format", "json", target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() || !text.is_empty(), "ghz failed: {}", String::from_utf8_lossy(&out.stderr));
    let number = |key: &str| -> f64 {
        let at = text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in ghz output: {text}"));
        let rest = &text[at + key.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].trim().parse().unwrap()
    };
    let ok = text.find("\"statusCodeDistribution\":{\"OK\":").map(|at| {
        let rest = &text[at + "\"statusCodeDistribution\":{\"OK\":".len()..];
        rest[..rest.find([',', '}']).unwrap()].parse::<u64>().unwrap()
    });
    (ok.unwrap_or(0), number("count") as u64, number("rps"))
}

#[test]
fn unary_load_through_doltgate_all_succeeds() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    env.init_repo(&data.join("load"));
    let server = DoltServer::start(&env, &data);
    let gateway = Doltgate::start(env.path(), &server.remotesapi_addr(), &[]);
    let via_gateway = format!("127.0.0.1:{}", gateway.port);
    let direct = server.remotesapi_addr();

    let metadata = r#"{"repo_path":"load","client_repo_format":{"nbf_version":"__DOLT__","nbs_version":"5"}}"#;
    let has_chunks = r#"{"repo_path":"load","hashes":["AAAAAAAAAAAAAAAAAAAAAAAAAAA=","AQEBAQEBAQEBAQEBAQEBAQEBAQE="]}"#;
    for (call, data) in [("GetRepoMetadata", metadata), ("Root", r#"{"repo_path":"load"}"#), ("HasChunks", has_chunks)]
    {
        let (ok, count, rps) = ghz(&via_gateway, call, data, 600, 10);
        assert_eq!((ok, count), (600, 600), "{call}: every call through doltgate must succeed");
        let (_, _, direct_rps) = ghz(&direct, call, data, 600, 10);
        println!("{call}: {rps:.0} rps through doltgate, {direct_rps:.0} direct (debug build, shared cores)");
    }
}
