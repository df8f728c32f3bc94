//! The `doltgate` command line: `check-config` and `explain` verdicts and exit codes.

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

/// `doltgate explain` answers through the routes and the proxy's own rule
/// evaluation: exit 0 allowed, 1 refused, 2 for a question that cannot be asked.
#[test]
fn explain_gives_the_verdict_and_the_deciding_rule() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/auth.toml");
    let explain = |args: &[&str]| {
        let mut all = vec!["--config", config, "explain"];
        all.extend_from_slice(args);
        doltgate(&all)
    };
    // `ci` is a listed user, in group maintainers.
    let (code, text) = explain(&["--user", "ci", "--database", "app_orders", "--ref", "main", "--op", "fast_forward"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("allowed: fast_forward of refs/heads/main in database \"app_orders\" by ci"), "{text}");
    assert!(text.contains("decided by rule \"protect-main\" (allows fast_forward)"), "{text}");
    let (code, text) = explain(&["--user", "ci", "--database", "app_orders", "--ref", "main", "--op", "force"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("refused: force of refs/heads/main"), "{text}");

    // The database is judged as Dolt resolves it, whatever the spelling.
    let sso_dev = ["--user", "corp-sso:ann", "--group", "corp-sso:developers"];
    let (code, text) =
        explain(&[&sso_dev[..], &["--database", "APP_orders/main", "--ref", "feature/x", "--op", "force"]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("in database \"app_orders\"") && text.contains("\"features\""), "{text}");

    // A rule in evaluate mode: allowed, and what it would do.
    let (code, text) =
        explain(&[&sso_dev[..], &["--database", "app_x", "--ref", "hotfix/1", "--op", "create"]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("evaluate mode: would be refused by rule \"hotfixes-by-maintainers\""), "{text}");

    // An explicit deny.
    let contractor = ["--user", "corp-sso:cy", "--group", "corp-sso:contractors", "--group", "corp-sso:developers"];
    let (code, text) =
        explain(&[&contractor[..], &["--database", "app_x", "--ref", "feature/x", "--op", "delete"]].concat());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("rule \"contractors-never-rewrite\" (denies delete, force)"), "{text}");

    // Table rules: ci (a maintainer) may change schemas but not prices' rows.
    let main_ff = ["--user", "ci", "--database", "app_orders", "--ref", "main", "--op", "fast_forward"];
    let (code, text) = explain(&[&main_ff[..], &["--table", "Prices", "--change", "data"]].concat());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("refused: fast_forward of refs/heads/main with a data change to table \"Prices\""),
        "{text}"
    );
    assert!(text.contains("rule \"prices-by-pricing\" (which does not let this user change the data"), "{text}");
    let (code, text) = explain(&[&main_ff[..], &["--table", "prices", "--change", "schema"]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("rule \"schema-by-maintainers\" (lets this user change the schema"), "{text}");
    let (code, text) = explain(&[&main_ff[..], &["--table", "orders", "--change", "data"]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no table rule covers that table"), "{text}");
    let (code, text) = explain(&[&main_ff[..], &["--table", "prices"]].concat());
    assert_eq!(code, 2, "{text}");

    // Questions no push could raise.
    let (code, text) =
        explain(&["--user", "ci", "--database", "app_x", "--ref", "refs/tags/v1", "--op", "fast_forward"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("a push makes no fast_forward of a ref like this one"), "{text}");
    let (code, text) = explain(&["--user", "ci", "--database", "app_x", "--ref", "main", "--op", "rebase"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("\"rebase\" is not one of"), "{text}");
}
