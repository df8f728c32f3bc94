//! Hot reload with real peers: SIGHUP with a changed route while ghz keeps
//! calling through doltgate (no call fails, the new route works), then
//! SIGHUP with an invalid file (rejected and logged, the running
//! configuration kept).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

fn write_config(path: &Path, upstream: &str, databases: &[&str]) {
    let mut text = format!(
        "[clusters.main]\nendpoints = [{{ name = \"dolt-0\", remotesapi = \"{upstream}\", role = \"primary\" }}]\n"
    );
    for db in databases {
        text.push_str(&format!("[[routes]]\ndatabase = \"{db}\"\ncluster = \"main\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn wait_for_log(gateway: &Doltgate, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.process.log_so_far().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "doltgate never logged {needle:?}:\n{}", gateway.process.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_applies_a_valid_config_without_failing_calls_and_keeps_the_old_one_otherwise() {
    let env = DoltEnv::new();
    let data = env.path().join("server");
    for db in ["orders", "billing"] {
        env.init_repo(&data.join(db));
    }
    let server = DoltServer::start(&env, &data);
    let upstream = server.remotesapi_addr();
    let config = env.path().join("doltgate.toml");
    write_config(&config, &upstream, &["orders"]);
    let gateway = Doltgate::start_with_config(env.path(), &config);
    let auth = password_env();

    let out = env.fails(env.path(), &["clone", "--user", USER, &gateway.url("billing"), "before"], &auth);
    assert!(out.contains("code = NotFound"), "billing is not routed yet: {out}");

    // Calls keep flowing while the configuration changes under them. (A fixed count, not
    // `-z`: ghz cancels the calls in flight when a duration ends, even against Dolt itself.)
    let target = format!("127.0.0.1:{}", gateway.port);
    let load = std::thread::spawn(move || {
        let data = r#"{"repo_path":"orders","client_repo_format":{"nbf_version":"__DOLT__","nbs_version":"5"}}"#;
        ghz(&target, "GetRepoMetadata", data, &["-n", "2500", "-c", "5"])
    });
    std::thread::sleep(Duration::from_secs(1));
    write_config(&config, &upstream, &["orders", "billing"]);
    gateway.signal("HUP");
    wait_for_log(&gateway, "configuration reloaded", 1);
    std::thread::sleep(Duration::from_millis(500));
    gateway.signal("HUP"); // a second reload mid-load, same file
    let (ok, total, _) = load.join().unwrap();
    assert!(total > 50, "the load ran ({total} calls)");
    assert_eq!(ok, total, "no call failed across two reloads");
    wait_for_log(&gateway, "configuration reloaded", 2);

    let billing = env.path().join("billing-clone");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("billing"), billing.to_str().unwrap()], &auth);

    // An invalid file is rejected, logged, and changes nothing.
    std::fs::write(&config, "[clusters.main]\nendpoints = []\n").unwrap();
    gateway.signal("HUP");
    wait_for_log(&gateway, "configuration reload rejected", 1);
    assert!(gateway.process.log().contains("clusters.main.endpoints"), "the log names the bad key");
    let orders = env.path().join("orders-clone");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("orders"), orders.to_str().unwrap()], &auth);
    let again = env.path().join("billing-again");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("billing"), again.to_str().unwrap()], &auth);
}
