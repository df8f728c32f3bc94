//! Table rules with the real `dolt` CLI pushing through doltgate to a real
//! `dolt sql-server`: on `main` of `shop`, only mia may change the rows of
//! `prices` and only mia may change any table's schema; dan may fast-forward
//! `main` with everything else. Each refusal names the table, the kind of
//! change and the rule, and leaves the server's refs as they were.

use std::path::Path;

use crate::push_rules::Setup;
use crate::support::*;

const TABLES: &str = "USE shop; \
    CREATE TABLE prices (id INT AUTO_INCREMENT PRIMARY KEY, amount INT); \
    CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item INT, note VARCHAR(20)); \
    INSERT INTO prices (amount) VALUES (10), (20); INSERT INTO orders (item) VALUES (1); \
    CALL dolt_commit('-Am', 'prices and orders');";

const RULES: &str = r#"
[[auth.push_rules]]
name = "dan-on-main"
branches = ["main"]
users = ["dan"]
allow = ["fast_forward"]

[[auth.table_rules]]
name = "prices-by-mia"
branches = ["main"]
tables = ["Prices"]
changes = ["data"]
users = ["mia"]

[[auth.table_rules]]
name = "schema-by-mia"
branches = ["main"]
tables = ["*"]
changes = ["schema"]
users = ["mia"]

[[auth.table_rules]]
name = "watch-items"
branches = ["main"]
tables = ["items"]
changes = ["data"]
users = ["mia"]
mode = "evaluate"
"#;

fn sql(s: &Setup, repo: &Path, query: &str, message: &str) {
    s.env.ok(repo, &["sql", "-q", query]);
    s.env.ok(repo, &["commit", "-Am", message]);
}

fn undo(s: &Setup, repo: &Path) {
    s.env.ok(repo, &["reset", "--hard", "HEAD~1"]);
}

#[test]
fn table_rules_judge_each_table_by_data_and_schema() {
    let admin_port = free_port();
    let options = format!("{RULES}\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n");
    let s = Setup::with_auth_options(&options, TABLES);
    let dan = s.clone_as("dan");

    // Inserting into an auto-increment table moves its counter: data, not schema.
    sql(&s, &dan, "INSERT INTO orders (item) VALUES (2)", "an order");
    s.push_ok(&dan, "dan", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&dan)), "orders' data is anyone's");

    sql(&s, &dan, "UPDATE prices SET amount = 1 WHERE id = 1", "cheaper");
    let data = ["change the data of table \"prices\"", "prices-by-mia", "fast-forward refs/heads/main"];
    s.push_refused(&dan, "dan", &["origin", "main"], &data);
    // By way of a branch no table rule covers: main is still judged from its own old head.
    s.env.ok(&dan, &["checkout", "-b", "feature/cheaper"]);
    s.push_ok(&dan, "dan", &["origin", "feature/cheaper"]);
    s.env.ok(&dan, &["checkout", "main"]);
    s.push_refused(&dan, "dan", &["origin", "main"], &data);
    undo(&s, &dan);

    let schema = |table: &str| format!("change the schema of table \"{table}\"");
    sql(&s, &dan, "ALTER TABLE orders ADD COLUMN qty INT", "a column");
    s.push_refused(&dan, "dan", &["origin", "main"], &[&schema("orders"), "schema-by-mia"]);
    undo(&s, &dan);
    sql(&s, &dan, "RENAME TABLE orders TO purchases", "a rename");
    s.push_refused(&dan, "dan", &["origin", "main"], &[&schema("orders"), "schema-by-mia"]);
    undo(&s, &dan);
    sql(&s, &dan, "CREATE INDEX by_item ON orders (item)", "an index");
    s.push_refused(&dan, "dan", &["origin", "main"], &[&schema("orders")]);
    undo(&s, &dan);
    // A foreign key lives at the root, not in either table: it is a schema change to both.
    sql(&s, &dan, "ALTER TABLE orders ADD CONSTRAINT fk_price FOREIGN KEY (item) REFERENCES prices (id)", "a key");
    s.push_refused(&dan, "dan", &["origin", "main"], &[&schema("orders"), "schema-by-mia"]);
    undo(&s, &dan);
    let recreate = "DROP TABLE prices; CREATE TABLE prices (id INT AUTO_INCREMENT PRIMARY KEY, amount INT)";
    sql(&s, &dan, recreate, "drop and recreate");
    s.push_refused(&dan, "dan", &["origin", "main"], &["table \"prices\"", "prices-by-mia"]);
    undo(&s, &dan);

    // An evaluated rule on items refuses nothing, but says so.
    sql(&s, &dan, "INSERT INTO items VALUES (9, 'plum')", "a plum");
    s.push_ok(&dan, "dan", &["origin", "main"]);
    let log = s.gateway_log();
    assert!(
        log.contains("would be refused by rule \"watch-items\"") && log.contains("[tables: items (data)]"),
        "the audit line lists changed tables and the evaluated verdict:\n{log}"
    );

    let mia = s.clone_as("mia");
    sql(&s, &mia, "ALTER TABLE orders ADD COLUMN qty INT; UPDATE prices SET amount = 5", "mia's changes");
    s.push_ok(&mia, "mia", &["origin", "main"]);
    assert_eq!(s.server_hash("main"), Some(s.head(&mia)), "mia may change prices and schemas");
    let log = s.gateway_log();
    assert!(log.contains("orders (data, schema)") || log.contains("orders (schema)"), "{log}");
    assert!(log.contains("prices (data)"), "{log}");

    let samples = scrape(admin_port);
    let count = |rule: &str, verdict: &str| {
        total(&samples, "doltgate_push_rule_verdicts_total", &[("rule", rule), ("verdict", verdict)])
    };
    assert!(count("prices-by-mia", "refused") >= 2.0 && count("prices-by-mia", "allowed") >= 1.0, "{samples:?}");
    assert!(count("schema-by-mia", "refused") >= 4.0 && count("watch-items", "would_refuse") >= 1.0);
}
