//! Concurrent load from the real ghz client through doltgate to a real
//! `dolt sql-server`: every call must succeed. Throughput is printed for
//! information only; targets live in benchmarks, not tests.

use crate::support::*;

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
        let (ok, count, rps) = ghz(&via_gateway, call, data, &["-n", "600", "-c", "10"]);
        assert_eq!((ok, count), (600, 600), "{call}: every call through doltgate must succeed");
        let (_, _, direct_rps) = ghz(&direct, call, data, &["-n", "600", "-c", "10"]);
        println!("{call}: {rps:.0} rps through doltgate, {direct_rps:.0} direct (debug build, shared cores)");
    }
}
