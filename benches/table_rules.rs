//! What table rules add to judging one push: a push that changes 1,000
//! tables (data in 800, schema in 200) of a 10,000-table root.
//!
//! With table rules off, a push is judged on its refs alone; with them on,
//! doltgate also diffs the two root values' table maps, reads the two
//! `DTBL` chunks of each changed table, and judges each change. That extra
//! work is what is measured here, in process, with every chunk in memory:
//!
//! - `changed_tables`: the diff of the two root values;
//! - `judged`: that diff and a table-rule verdict on every change it finds
//!   (what a push pays with table rules on, over the same push without).
//!
//! The roots are built with doltgate's own encoders (`storage::build`) in the
//! shapes Dolt writes: a two-level table map of 100-entry leaves, tables whose
//! embedded row-index node is 1 KiB. The target is ≤ 20 ms median for `judged`.
//!
//! Run: `cargo bench --bench table_rules`.

use std::time::{Duration, Instant};

use criterion::Criterion;
use doltgate::authn::Principal;
use doltgate::config::auth::TableChangeKind;
use doltgate::config::Config;
use doltgate::push::rules::PushRules;
use doltgate::storage::build::{address_map, root_value, table};
use doltgate::storage::tables::{changed_tables, TableChange};
use doltgate::storage::{Address, MemorySource};

const TABLES: usize = 10_000;
const CHANGED_EVERY: usize = 10;
const SCHEMA_EVERY: usize = 50;
const PER_LEAF: usize = 100;

fn name(i: usize) -> String {
    format!("table_{i:05}")
}

/// A table whose rows (and, for some, schema) differ by `version`.
fn table_chunk(i: usize, data_version: usize, schema_version: usize) -> Vec<u8> {
    let mut rows = vec![0u8; 1024];
    rows[..16].copy_from_slice(format!("{i:08}{data_version:08}").as_bytes());
    table(Address::of(format!("schema {i} {schema_version}").as_bytes()), &rows, data_version as u64)
}

/// A root value over every table, the `changed` ones at their second version.
fn root(source: &mut MemorySource, changed: bool) -> Address {
    let leaves: Vec<(String, Address)> = (0..TABLES)
        .collect::<Vec<_>>()
        .chunks(PER_LEAF)
        .map(|leaf| {
            let entries: Vec<(String, Address)> = leaf
                .iter()
                .map(|&i| {
                    let touched = changed && i % CHANGED_EVERY == 0;
                    let schema = usize::from(touched && i % SCHEMA_EVERY == 0);
                    (name(i), source.insert(table_chunk(i, usize::from(touched), schema)))
                })
                .collect();
            let keyed: Vec<(&[u8], Address)> = entries.iter().map(|(n, a)| (n.as_bytes(), *a)).collect();
            (entries.last().expect("a full leaf").0.clone(), source.insert(address_map(0, &keyed)))
        })
        .collect();
    let keyed: Vec<(&[u8], Address)> = leaves.iter().map(|(n, a)| (n.as_bytes(), *a)).collect();
    source.insert(root_value(&address_map(1, &keyed), None))
}

const RULES: &str = r#"
[upstream]
address = "127.0.0.1:1"
[auth]
[[auth.table_rules]]
name = "some-tables"
branches = ["main"]
tables = ["table_0*"]
changes = ["data"]
users = ["ann"]
[[auth.table_rules]]
name = "schemas"
branches = ["main"]
tables = ["*"]
changes = ["schema"]
groups = ["maintainers"]
"#;

struct Prepared {
    runtime: tokio::runtime::Runtime,
    source: MemorySource,
    old: Address,
    new: Address,
    rules: PushRules,
    pusher: Principal,
}

fn prepare() -> Prepared {
    let mut source = MemorySource::new();
    let (old, new) = (root(&mut source, false), root(&mut source, true));
    let auth = Config::parse(RULES).expect("bench config").auth.expect("[auth]");
    let rules = PushRules::build(&auth).expect("bench rules");
    let pusher = Principal { name: "ann".into(), groups: vec!["maintainers".into()], expires: None, email: None };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let prepared = Prepared { runtime, source, old, new, rules, pusher };
    let changes = prepared.runtime.block_on(changed_tables(&prepared.source, &old, &new)).unwrap();
    assert_eq!(changes.len(), TABLES / CHANGED_EVERY, "one table in ten changed");
    assert_eq!(changes.iter().filter(|c| c.schema).count(), TABLES / SCHEMA_EVERY, "one in fifty in schema");
    assert_eq!(judge(&prepared), TABLES / CHANGED_EVERY + TABLES / SCHEMA_EVERY, "a verdict per change");
    prepared
}

/// The table diff and a verdict on each change; the number of verdicts.
fn judge(p: &Prepared) -> usize {
    let changes: Vec<TableChange> = p.runtime.block_on(changed_tables(&p.source, &p.old, &p.new)).unwrap();
    let mut verdicts = 0;
    for change in &changes {
        for (changed, kind) in [(change.schema, TableChangeKind::Schema), (change.data, TableChangeKind::Data)] {
            if changed {
                let decision = p.rules.decide_table(&p.pusher, "db", "main", &change.name, kind);
                verdicts += usize::from(decision.is_some_and(|d| d.allowed));
            }
        }
    }
    verdicts
}

/// The median of `runs` timings of `judge`, in milliseconds.
fn median_ms(p: &Prepared, runs: usize) -> f64 {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(judge(p));
            started.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2].as_secs_f64() * 1000.0
}

/// Not `criterion_main!`, for the reason `benches/push_inspection.rs` gives:
/// run by `cargo test --all-targets`, this checks the fixture once and stops.
fn main() {
    let prepared = prepare();
    if !std::env::args().skip(1).any(|arg| arg == "--bench") {
        println!("table_rules: checked once (run `cargo bench --bench table_rules` to time it)");
        return;
    }
    let median = median_ms(&prepared, 21);
    println!("judging 1,000 changed tables of {TABLES}: {median:.2} ms median of 21 (target: at most 20 ms)");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
        .configure_from_args();
    let mut group = criterion.benchmark_group("table_rules");
    group.bench_function("changed_tables", |b| {
        b.iter(|| prepared.runtime.block_on(changed_tables(&prepared.source, &prepared.old, &prepared.new)).unwrap())
    });
    group.bench_function("judged", |b| b.iter(|| judge(&prepared)));
    group.finish();
    criterion.final_summary();
}
