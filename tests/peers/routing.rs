//! Routing by database with real peers: two `dolt sql-server`s, each with its
//! own database, behind one doltgate; clones and pushes land on the right
//! server, a path-prefixed route strips its prefix, unknown databases are
//! NOT_FOUND without reaching any upstream.

use std::path::Path;

use crate::support::*;

fn make_db(env: &DoltEnv, dir: &Path, table: &str) {
    env.init_repo(dir);
    env.ok(
        dir,
        &["sql", "-q", &format!("CREATE TABLE {table} (id INT PRIMARY KEY); INSERT INTO {table} VALUES (1), (2);")],
    );
    env.ok(dir, &["commit", "-Am", &format!("create {table}")]);
}

#[test]
fn databases_route_to_their_own_servers() {
    let env = DoltEnv::new();
    let (east_data, west_data) = (env.path().join("east"), env.path().join("west"));
    make_db(&env, &east_data.join("orders"), "orders");
    make_db(&env, &west_data.join("billing"), "invoices");
    let east = DoltServer::start(&env, &east_data);
    let west = DoltServer::start(&env, &west_data);

    let config = env.path().join("doltgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[clusters.east]
endpoints = [{{ name = "east-0", remotesapi = "{east}", role = "primary" }}]

[clusters.west]
endpoints = [{{ name = "west-0", remotesapi = "{west}", role = "primary" }}]

[[routes]]
database = "orders"
cluster = "east"

[[routes]]
database_glob = "bill*"
path_prefix = "finance"
cluster = "west"
"#,
            east = east.remotesapi_addr(),
            west = west.remotesapi_addr()
        ),
    )
    .unwrap();
    let gateway = Doltgate::start_with_config(env.path(), &config);
    let auth = password_env();

    // Each clone comes from its own server.
    let orders = env.path().join("orders-clone");
    env.ok_with(env.path(), &["clone", "--user", USER, &gateway.url("orders"), orders.to_str().unwrap()], &auth);
    assert_eq!(env.log_hashes(&orders, "main"), env.log_hashes(&east_data.join("orders"), "main"));
    let billing = env.path().join("billing-clone");
    env.ok_with(
        env.path(),
        &["clone", "--user", USER, &gateway.url("finance/billing"), billing.to_str().unwrap()],
        &auth,
    );
    assert_eq!(env.log_hashes(&billing, "main"), env.log_hashes(&west_data.join("billing"), "main"));
    assert_eq!(env.query_csv(&billing, "SELECT COUNT(*) AS n FROM invoices"), "n\n2\n");

    // A push through the prefixed route lands on the west server, under its own name.
    env.ok(&billing, &["sql", "-q", "INSERT INTO invoices VALUES (3);"]);
    env.ok(&billing, &["commit", "-Am", "invoice 3"]);
    env.ok_with(&billing, &["push", "--user", USER, "origin", "main"], &auth);
    assert_eq!(env.log_hashes(&west_data.join("billing"), "main"), env.log_hashes(&billing, "main"));

    // Names that no route serves are NOT_FOUND at the gateway, even where a server has them.
    let out = env.fails(env.path(), &["clone", "--user", USER, &gateway.url("billing"), "x1"], &auth);
    assert!(out.contains("code = NotFound") && out.contains("no route for \"billing\""), "{out}");
    let out = env.fails(env.path(), &["clone", "--user", USER, &gateway.url("finance/orders"), "x2"], &auth);
    assert!(out.contains("code = NotFound") && out.contains("finance/orders"), "{out}");
}
