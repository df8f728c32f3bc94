//! The `doltgate` command line: `check-config` verdicts and exit codes.

use std::process::Command;

fn doltgate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doltgate")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_accepts_every_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, text) = doltgate(&["check-config", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {text}", path.display());
            assert!(text.contains("ok"), "{text}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected the example configs, found {checked}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[upstream]\naddress = \"127.0.0.1:1\"\nconect_timeout = \"1s\"\n", "conect_timeout"),
        ("[upstream]\naddress = \"no-port\"\n", "upstream.address"),
        ("[upstream]\naddress = \"127.0.0.1:1\"\n[limits]\nmax_message_bytes = 10\n", "limits.max_message_bytes"),
        ("[listener]\naddress = \"127.0.0.1:1\"\n", "upstream"),
        ("[upstream]\naddress = \"127.0.0.1:1\"\nconnect_timeout = \"soon\"\n", "connect_timeout"),
        (
            "[clusters.c]\nendpoints = [{ name = \"a\", remotesapi = \"h:1\" }]\n[[routes]]\ndatabase = \"x\"\ncluster = \"c\"\n",
            "clusters.c.endpoints[0]",
        ),
        (
            "[clusters.c]\nendpoints = [{ name = \"a\", remotesapi = \"h:1\", role = \"primary\" }]\n[[routes]]\ndatabase = \"x\"\ncluster = \"d\"\n",
            "routes[0].cluster",
        ),
        (
            "[clusters.c]\nendpoints = [{ name = \"a\", remotesapi = \"h:1\", role = \"primary\" }]\n[[routes]]\ndatabase_glob = \"*\"\ncluster = \"c\"\n[[routes]]\ndatabase = \"x\"\ncluster = \"c\"\n",
            "routes[1]: can never match: routes[0]",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, out) = doltgate(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{text} -> {out}");
        assert!(out.contains(key), "expected {key:?} in: {out}");
    }
}

#[test]
fn flags_fill_in_what_the_file_leaves_out() {
    let (code, text) = doltgate(&["--upstream", "127.0.0.1:50052", "check-config"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = doltgate(&["check-config"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--upstream"), "{text}");
}
