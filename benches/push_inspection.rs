//! What inspecting one push costs on a database with 1,000 branches.
//!
//! The fixture is a real Dolt database, written by the real `dolt` CLI (`$DOLT`,
//! whose path `scripts/install-peers dolt` prints): 1,000 branches spread over
//! ten commits, all pushed to a `file://` remote, then one more commit on one
//! branch pushed as a fast-forward. The remote's directory then holds two roots that
//! differ in exactly one ref, which is what the gateway sees on a typical Commit.
//!
//! Measured, with every chunk read from memory ([`DirectorySource`] loads the
//! remote's files at open) and counted ([`CountingSource`]):
//!
//! - `diff`: `refs::diff` of the old root against the new one;
//! - `read_refs`: reading every ref of the new root, the naive way to find out
//!   what a push changed (a naive diff reads both roots, twice this);
//! - `is_ancestor`: whether the moved branch's old head is an ancestor of its new
//!   one (here its parent, which the commit itself answers);
//! - `is_ancestor_deep`: the same question for the first commit of the history,
//!   which takes a lookup in the new head's parent closure.
//!
//! The fixture is built once and kept under the peers cache
//! (`$HOME/.cache/doltgate-peers/bench-1000-branches/`, or beside
//! `$DOLTGATE_PEERS_DIR` / `$XDG_CACHE_HOME` as `scripts/install-peers` has it);
//! delete that directory to rebuild it.
//!
//! Run: `DOLT=$(scripts/install-peers dolt) cargo bench --bench push_inspection`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::Criterion;
use doltgate::storage::ancestry::{is_ancestor, read_commit};
use doltgate::storage::message::StoreRoot;
use doltgate::storage::refs::{diff, read_refs};
use doltgate::storage::source::{get_one, ChunkSource, CountingSource};
use doltgate::storage::{Address, DirectorySource};

const BRANCHES: usize = 1000;
/// Commits on `main` the branches are spread over, `BRANCHES / COMMITS` at each.
const COMMITS: usize = 10;
/// The branch the second push moves forward.
const MOVED: &str = "b0500";
/// Bump when the fixture's recipe changes, so an old cached copy is rebuilt.
const FIXTURE_VERSION: &str = "1";

/// The fixture on disk: the remote's store and what the two pushes left there.
struct Fixture {
    remote: PathBuf,
    old_root: Address,
    new_root: Address,
}

fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let peers = var("DOLTGATE_PEERS_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|cache| cache.join("doltgate-peers")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/doltgate-peers")))
        .expect("neither $HOME nor $XDG_CACHE_HOME nor $DOLTGATE_PEERS_DIR is set: nowhere to keep the fixture");
    peers.join("bench-1000-branches")
}

fn dolt_binary() -> PathBuf {
    let dolt = std::env::var_os("DOLT").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "$DOLT is not set: this benchmark builds its fixture with the real dolt CLI. \
             Run it as `DOLT=$(scripts/install-peers dolt) cargo bench --bench push_inspection`."
        )
    });
    assert!(dolt.is_file(), "$DOLT points at {}, which does not exist", dolt.display());
    dolt
}

/// Runs dolt in `cwd` with its global config kept in `home`; panics with its output on failure.
fn dolt(dolt: &Path, home: &Path, cwd: &Path, args: &[&str]) -> String {
    let output = Command::new(dolt)
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("DOLT_ROOT_PATH", home)
        .env("NO_COLOR", "1")
        .env("DOLT_DISABLE_EVENT_FLUSH", "1") // no `dolt send-metrics` left running (see tests/support/dolt.rs)
        .env_remove("DOLT_REMOTE_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", dolt.display()));
    assert!(
        output.status.success(),
        "dolt {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The SQL that makes the history: a table, then `COMMITS` commits with
/// `BRANCHES / COMMITS` branches created at each, all in one session.
fn history_script() -> String {
    let mut script = String::from(
        "create table t (id int primary key, v varchar(200));
         insert into t with recursive s(n) as (select 1 union all select n + 1 from s where n < 2000)
           select n, concat('value-', n) from s;
         call dolt_commit('-Am', 'rows');",
    );
    let per_commit = BRANCHES / COMMITS;
    for commit in 0..COMMITS {
        script.push_str(&format!(
            "update t set v = concat(v, 'x') where id % {COMMITS} = {commit}; call dolt_commit('-am', 'update {commit}');"
        ));
        for branch in commit * per_commit + 1..=(commit + 1) * per_commit {
            script.push_str(&format!("call dolt_branch('b{branch:04}');"));
        }
    }
    script
}

fn open(noms: &Path) -> DirectorySource {
    DirectorySource::open(noms).unwrap_or_else(|e| panic!("{}: {e}", noms.display()))
}

/// Builds the fixture in `dir` (which must not exist yet); returns the two roots.
fn build(dolt_bin: &Path, dir: &Path) -> (Address, Address) {
    let (home, repo, remote) = (dir.join("home"), dir.join("db"), dir.join("remote"));
    for path in [&home, &repo, &remote] {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let run = |cwd: &Path, args: &[&str]| dolt(dolt_bin, &home, cwd, args);
    for (key, value) in
        [("user.name", "doltgate bench"), ("user.email", "bench@example.com"), ("metrics.disabled", "true")]
    {
        run(&home, &["config", "--global", "--add", key, value]);
    }
    run(&repo, &["init"]);
    run(&repo, &["sql", "-q", &history_script()]);
    run(&repo, &["remote", "add", "origin", &format!("file://{}", remote.display())]);
    run(&repo, &["push", "--silent", "--all", "origin"]);
    let old_root = open(&remote).root();

    let forward = format!(
        "call dolt_checkout('{MOVED}'); update t set v = 'moved' where id = 1; call dolt_commit('-am', 'move {MOVED}');"
    );
    run(&repo, &["sql", "-q", &forward]);
    run(&repo, &["push", "--silent", "origin", MOVED]);
    let new_root = open(&remote).root();
    (old_root, new_root)
}

/// The cached fixture, built first when it is missing or from another recipe.
fn fixture() -> Fixture {
    // Required even when the fixture is cached: the fixture is only ever what this dolt writes.
    let dolt_bin = dolt_binary();
    let dir = cache_dir();
    let marker = dir.join("roots");
    let read_marker = || -> Option<(Address, Address)> {
        let text = std::fs::read_to_string(&marker).ok()?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields[..] {
            [version, old, new] if version == FIXTURE_VERSION => Some((old.parse().ok()?, new.parse().ok()?)),
            _ => None,
        }
    };
    let (old_root, new_root) = match read_marker() {
        Some(roots) => roots,
        None => {
            eprintln!("building the fixture in {} (once; a minute or two)", dir.display());
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            }
            let building = dir.with_extension(format!("building-{}", std::process::id()));
            if building.exists() {
                std::fs::remove_dir_all(&building).unwrap_or_else(|e| panic!("{}: {e}", building.display()));
            }
            let started = std::time::Instant::now();
            let (old, new) = build(&dolt_bin, &building);
            eprintln!("built the fixture in {:.0?}", started.elapsed());
            std::fs::write(building.join("roots"), format!("{FIXTURE_VERSION} {old} {new}\n")).unwrap();
            // Another run may have finished first; either copy serves.
            if std::fs::rename(&building, &dir).is_err() {
                std::fs::remove_dir_all(&building).ok();
            }
            read_marker().expect("the fixture was just written")
        }
    };
    Fixture { remote: dir.join("remote"), old_root, new_root }
}

fn block_on<F: std::future::Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    runtime.block_on(future)
}

/// Chunks and calls one operation makes on `source`.
fn counted<S: ChunkSource, T>(
    runtime: &tokio::runtime::Runtime,
    source: &S,
    operation: impl AsyncFnOnce(&CountingSource<&S>) -> T,
) -> (T, usize, usize) {
    let counting = CountingSource::new(source);
    let value = block_on(runtime, operation(&counting));
    (value, counting.chunks(), counting.batches())
}

/// The fixture opened and checked, with what the measured calls need.
struct Prepared {
    runtime: tokio::runtime::Runtime,
    source: DirectorySource,
    old_root: Address,
    new_root: Address,
    old_head: Address,
    new_head: Address,
    /// The history's first commit (`dolt init`'s), an ancestor but not a parent of `new_head`.
    first: Address,
}

/// Opens the fixture, checks it is what this benchmark claims, and prints
/// what each measured call reads.
fn prepare() -> Prepared {
    let fixture = fixture();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let source = open(&fixture.remote);
    assert_eq!(source.root(), fixture.new_root, "the remote's root is the one the second push wrote");
    let (old, new) = (&fixture.old_root, &fixture.new_root);

    let (one, diff_chunks, diff_batches) = counted(&runtime, &source, async |s| diff(s, old, new).await.unwrap());
    let names: Vec<&str> = one.changes.iter().map(|c| c.name.as_str()).collect();
    let moved_ref = format!("refs/heads/{MOVED}");
    assert_eq!(names, [moved_ref.as_str()], "the fast-forward moves exactly one ref");
    let (old_head, new_head) = (one.changes[0].old.unwrap(), one.changes[0].new.unwrap());
    let (all, read_chunks, read_batches) = counted(&runtime, &source, async |s| read_refs(s, new).await.unwrap());
    let branches = all.refs.iter().filter(|r| r.name.starts_with("refs/heads/")).count();
    assert_eq!(branches, BRANCHES + 1, "{BRANCHES} branches and main");
    let (forward, ancestry_chunks, ancestry_batches) =
        counted(&runtime, &source, async |s| is_ancestor(s, &old_head, &new_head).await.unwrap());
    assert!(forward, "{MOVED} moved forward");
    let mut first = new_head;
    while let Some(parent) = block_on(&runtime, read_commit(&source, &first)).unwrap().parents.first() {
        first = *parent;
    }
    let (deep, deep_chunks, deep_batches) =
        counted(&runtime, &source, async |s| is_ancestor(s, &first, &new_head).await.unwrap());
    assert!(deep, "the first commit is an ancestor of every branch");
    assert_eq!((one.chunks_read, all.chunks_read), (diff_chunks, read_chunks));
    let root_chunk = block_on(&runtime, get_one(&source, new)).unwrap();
    let levels = StoreRoot::parse(new, &root_chunk).unwrap().refs.level + 1;

    println!("fixture: {} ({} chunk files)", fixture.remote.display(), source.files().len());
    println!("refs in the new root: {} ({branches} branches), a {levels}-level ref map", all.refs.len());
    println!("{:<28} {diff_chunks} chunks in {diff_batches} batches", "diff (one branch moved):");
    println!("{:<28} {read_chunks} chunks in {read_batches} batches", "read_refs (the whole root):");
    println!("{:<28} {ancestry_chunks} chunks in {ancestry_batches} batches", format!("is_ancestor ({MOVED}):"));
    println!("{:<28} {deep_chunks} chunks in {deep_batches} batches", "is_ancestor (first commit):");
    Prepared { runtime, source, old_root: *old, new_root: *new, old_head, new_head, first }
}

fn push_inspection(c: &mut Criterion, prepared: &Prepared) {
    let Prepared { runtime, source, old_root, new_root, old_head, new_head, first } = prepared;
    let counting = CountingSource::new(source);
    let mut group = c.benchmark_group("push_inspection");
    group.bench_function("diff", |b| b.iter(|| block_on(runtime, diff(&counting, old_root, new_root)).unwrap()));
    group.bench_function("read_refs", |b| b.iter(|| block_on(runtime, read_refs(&counting, new_root)).unwrap()));
    group.bench_function("is_ancestor", |b| {
        b.iter(|| block_on(runtime, is_ancestor(&counting, old_head, new_head)).unwrap())
    });
    group.bench_function("is_ancestor_deep", |b| {
        b.iter(|| block_on(runtime, is_ancestor(&counting, first, new_head)).unwrap())
    });
    group.finish();
}

/// Not `criterion_main!`: `cargo test --all-targets` (as `scripts/test` runs
/// it) runs bench targets too, without `--bench` and with libtest's flags such
/// as `--test-threads`, which criterion's argument parser rejects. Run that way,
/// this checks the fixture and each measured call once and stops.
fn main() {
    if !std::env::args().skip(1).any(|arg| arg == "--bench") {
        prepare();
        println!("push_inspection: checked once (run `cargo bench --bench push_inspection` to time it)");
        return;
    }
    let prepared = prepare();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
        .configure_from_args();
    push_inspection(&mut criterion, &prepared);
    criterion.final_summary();
}
