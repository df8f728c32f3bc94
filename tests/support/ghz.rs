//! The real ghz load generator.

use std::path::PathBuf;
use std::process::Command;

use super::*;

pub fn ghz_binary() -> PathBuf {
    let path = std::env::var_os("GHZ").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ghz"));
    assert!(
        Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success()),
        "real peer ghz not found at {}: set $GHZ or run scripts/install-peers (never skipped)",
        path.display()
    );
    path
}

/// Runs the real ghz (authenticated as the test user) and returns
/// (OK responses, total responses, requests per second).
pub fn ghz(target: &str, call: &str, data: &str, load: &[&str]) -> (u64, u64, f64) {
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    ghz_as(&format!("Basic {auth}"), target, call, data, load)
}

/// Like [`ghz`], sending `authorization` as given.
pub fn ghz_as(authorization: &str, target: &str, call: &str, data: &str, load: &[&str]) -> (u64, u64, f64) {
    ghz_with_metadata(&[("authorization", authorization)], target, call, data, load)
}

/// Like [`ghz_as`], with the call's metadata (headers) given pair by pair.
pub fn ghz_with_metadata(
    metadata: &[(&str, &str)],
    target: &str,
    call: &str,
    data: &str,
    load: &[&str],
) -> (u64, u64, f64) {
    let metadata = serde_json::Value::Object(
        metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect(),
    );
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/dolt/services/remotesapi/v1alpha1/chunkstore.proto");
    let imports = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let out = Command::new(ghz_binary())
        .args(["--insecure", "--proto", proto, "--import-paths", imports])
        .args(["--call", &format!("dolt.services.remotesapi.v1alpha1.ChunkStoreService/{call}")])
        .args(["-d", data, "-m", &metadata.to_string()])
        .args(load)
        .args(["--format", "json", target])
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
