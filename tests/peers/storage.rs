//! The storage readers against databases the real `dolt` CLI writes: its chunk
//! journal, the archives `dolt gc` makes, and what `dolt push` uploads to a
//! `file://` remote. Every ref, tag, working set and ancestry answer is checked
//! against what dolt itself reports.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::DoltEnv;
use doltgate::storage::ancestry::{is_ancestor, read_commit, read_working_set, tag_commit};
use doltgate::storage::message::StoreRoot;
use doltgate::storage::refs::{diff, read_refs, RefKind, RefMap};
use doltgate::storage::source::{get_one, ChunkFile, DirectorySource};
use doltgate::storage::{decode_range_chunk, Address, Archive, TableFile};

const BRANCHES: usize = 1000;
/// How many of them the push test sends to its remote, one Commit each.
const PUSHED: usize = 125;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

/// A database with enough history for archives with dictionaries (thousands of
/// chunks), `BRANCHES` branches plus `feature` (forked from `main~5`, one
/// commit of its own), three tags and uncommitted work on `main`.
fn build_repo(env: &DoltEnv, repo: &Path) {
    env.init_repo(repo);
    let mut script = String::from(
        "create table t (id int primary key, v varchar(200));
         insert into t with recursive s(n) as (select 1 union all select n + 1 from s where n < 5000)
           select n, concat('value-', n, '-', repeat('z', 40)) from s;
         call dolt_commit('-Am', 'rows');",
    );
    for i in 0..30 {
        script.push_str(&format!(
            "update t set v = concat(v, 'x') where id % 30 = {i}; call dolt_commit('-am', 'update {i}');"
        ));
    }
    for i in 0..BRANCHES {
        script.push_str(&format!("call dolt_branch('branch-{i:03}');"));
    }
    script.push_str(
        "call dolt_tag('v1', 'HEAD~2'); call dolt_tag('v2', 'HEAD', '-m', 'annotated');
         call dolt_branch('feature', 'HEAD~5');",
    );
    env.ok(repo, &["sql", "-q", &script]);
    env.ok(repo, &["checkout", "feature"]);
    env.ok(repo, &["sql", "-q", "update t set v = 'feature' where id = 1; call dolt_commit('-am', 'on feature');"]);
    env.ok(repo, &["checkout", "main"]);
    env.ok(repo, &["tag", "v3", "feature"]);
    env.ok(repo, &["sql", "-q", "create table uncommitted (id int primary key)"]);
}

/// `name → hash` rows from a two-column query.
fn csv_map(env: &DoltEnv, repo: &Path, query: &str) -> BTreeMap<String, Address> {
    let text = env.query_csv(repo, query);
    text.lines()
        .skip(1)
        .map(|line| {
            let (name, hash) = line.split_once(',').unwrap_or_else(|| panic!("not two columns: {line:?}"));
            (name.to_owned(), hash.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}")))
        })
        .collect()
}

fn refs_of_kind(map: &RefMap, wanted: RefKind) -> BTreeMap<String, Address> {
    map.refs
        .iter()
        .filter_map(|r| match RefKind::of(&r.name) {
            (kind, rest) if kind == wanted => Some((rest.to_owned(), r.target)),
            _ => None,
        })
        .collect()
}

fn open(noms: &Path) -> (DirectorySource, RefMap) {
    let source = DirectorySource::open(noms).unwrap_or_else(|e| panic!("{}: {e}", noms.display()));
    let refs = block_on(read_refs(&source, &source.root())).unwrap();
    (source, refs)
}

/// How many levels the root's ref map has below its root node.
fn ref_map_level(source: &DirectorySource) -> u8 {
    let chunk = block_on(get_one(source, &source.root())).unwrap();
    StoreRoot::parse(&source.root(), &chunk).unwrap().refs.level
}

/// Decodes every chunk of the files in `dir` the way the network side will:
/// from just its byte span (and dictionary span), as a ranged download returns them.
fn decode_as_ranges(dir: &Path) -> usize {
    let mut decoded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !path.is_file() || name == "manifest" || name == "LOCK" {
            continue;
        }
        let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let slice = |offset: u64, len: u64| &bytes[offset as usize..(offset + len) as usize];
        if name.ends_with(".darc") {
            let archive = Archive::parse(bytes.clone()).unwrap();
            for address in archive.addresses() {
                let spans = archive.lookup(&address).unwrap();
                let dictionary = spans.dictionary.map(|d| slice(d.offset, d.len));
                decode_range_chunk(&address, slice(spans.data.offset, spans.data.len), dictionary).unwrap();
                decoded += 1;
            }
        } else if name.len() == 32 {
            let table = TableFile::parse(bytes.clone()).unwrap();
            for address in table.index().addresses() {
                let record = table.index().lookup(&address).unwrap();
                decode_range_chunk(&address, slice(record.offset, record.len.into()), None).unwrap();
                decoded += 1;
            }
        }
    }
    decoded
}

/// Everything this test knows the CLI's answer to, read through `source`.
fn check_against_cli(env: &DoltEnv, repo: &Path, source: &DirectorySource, refs: &RefMap) {
    let branches = csv_map(env, repo, "select name, hash from dolt_branches");
    assert_eq!(branches.len(), BRANCHES + 2);
    assert_eq!(refs_of_kind(refs, RefKind::Branch), branches);

    let tags = csv_map(env, repo, "select tag_name, tag_hash from dolt_tags");
    assert_eq!(tags.len(), 3);
    let tag_refs = refs_of_kind(refs, RefKind::Tag);
    let tagged: BTreeMap<String, Address> =
        tag_refs.iter().map(|(name, tag)| (name.clone(), block_on(tag_commit(source, tag)).unwrap())).collect();
    assert_eq!(tagged, tags);

    let log = env.log_hashes(repo, "main");
    let main: Address = log[0].parse().unwrap();
    assert_eq!(branches["main"], main);
    let head = block_on(read_commit(source, &main)).unwrap();
    assert_eq!(head.height, log.len() as u64, "one commit per log line, init included");
    assert_eq!(head.parents, vec![log[1].parse::<Address>().unwrap()]);
    assert!(head.parent_closure.is_some());

    let working_sets = refs_of_kind(refs, RefKind::WorkingSet);
    assert!(working_sets.contains_key("feature"), "checked out once: {:?}", working_sets.keys());
    let working = block_on(read_working_set(source, &working_sets["main"])).unwrap();
    assert_eq!(working.staged_root, head.root, "nothing staged beyond HEAD");
    assert!(working.working_root.is_some() && working.working_root != working.staged_root, "uncommitted table");

    let ancestor = |old: &Address, new: &Address| block_on(is_ancestor(source, old, new)).unwrap();
    let at = |n: usize| -> Address { log[n].parse().unwrap() };
    assert!(ancestor(&at(1), &main), "fast-forward by one (a parent)");
    assert!(ancestor(&at(20), &main), "fast-forward by twenty (the closure)");
    assert!(ancestor(&at(log.len() - 1), &main), "the first commit");
    assert!(ancestor(&at(5), &branches["feature"]), "feature forked from main~5");
    assert!(!ancestor(&main, &branches["feature"]), "main to feature is a force push");
    assert!(!ancestor(&branches["feature"], &main), "and back again too");
    assert!(!ancestor(&main, &at(3)), "a rewind");
}

/// Decodes every chunk of every file: each one hashes to its address, and
/// is one the upload check would let through (Dolt wrote it, so Dolt can walk it).
fn decode_all(source: &DirectorySource) -> (usize, usize) {
    let (mut chunks, mut with_dictionary) = (0, 0);
    for file in source.files() {
        let addresses: Vec<Address> = match file {
            ChunkFile::Table(table) => table.index().addresses().collect(),
            ChunkFile::Archive(archive) => {
                with_dictionary += archive.dictionary_chunk_count();
                archive.addresses().collect()
            }
        };
        for address in addresses {
            let chunk = file.get(&address).unwrap().expect("an address the index lists");
            if let Err(error) = doltgate::storage::message::check_walkable(&address, &chunk) {
                panic!("a chunk the real dolt wrote is refused: {error}");
            }
            chunks += 1;
        }
    }
    (chunks, with_dictionary)
}

#[test]
fn the_journal_and_gc_archives_read_like_the_cli_says() {
    let env = DoltEnv::new();
    let repo = env.path().join("db");
    build_repo(&env, &repo);
    let noms = repo.join(".dolt/noms");

    let (journal, refs) = open(&noms);
    assert!(journal.journal_chunk_count() > 1000, "the CLI writes to its journal first");
    assert!(ref_map_level(&journal) >= 1, "{} refs span several chunks", refs.refs.len());
    check_against_cli(&env, &repo, &journal, &refs);

    // One branch of a thousand moves: the diff reads a handful of chunks.
    // (Checking out in SQL leaves main's uncommitted table where it is.)
    let commit =
        "call dolt_checkout('branch-042'); update t set v = 'b42' where id = 3; call dolt_commit('-am', 'b42');";
    env.ok(&repo, &["sql", "-q", commit]);
    let (moved, refs) = open(&noms);
    let one = block_on(diff(&moved, &journal.root(), &moved.root())).unwrap();
    let names: Vec<&str> = one.changes.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"refs/heads/branch-042"), "{names:?}");
    assert!(names.iter().all(|n| n.ends_with("/branch-042")), "{names:?}");
    let branch = one.changes.iter().find(|c| c.name == "refs/heads/branch-042").unwrap();
    assert!(block_on(is_ancestor(&moved, &branch.old.unwrap(), &branch.new.unwrap())).unwrap());
    eprintln!(
        "{} refs, a {}-level map: reading them all takes {} chunks; the diff after moving one branch read {} in {} batches",
        refs.refs.len(),
        ref_map_level(&moved) + 1,
        refs.chunks_read,
        one.chunks_read,
        one.batches
    );
    assert!(one.chunks_read * 4 < refs.chunks_read, "{} of {}", one.chunks_read, refs.chunks_read);

    env.ok(&repo, &["gc"]);
    let (collected, after_gc) = open(&noms);
    assert_eq!(collected.journal_chunk_count(), 0);
    assert_eq!(after_gc.refs, refs.refs, "gc moves chunks, never refs");
    check_against_cli(&env, &repo, &collected, &after_gc);
    let (chunks, with_dictionary) = decode_all(&collected);
    let archives = collected.files().iter().filter(|f| matches!(f, ChunkFile::Archive(_))).count();
    eprintln!(
        "after gc: {} files ({archives} archives), {chunks} chunks, {with_dictionary} zstd with a dictionary",
        collected.files().len()
    );
    assert!(archives > 0 && chunks >= 1000 && with_dictionary > 0);
}

#[test]
fn pushes_write_archives_and_diff_to_exactly_the_refs_they_move() {
    let env = DoltEnv::new();
    let repo = env.path().join("db");
    build_repo(&env, &repo);
    let remote = env.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    env.ok(&repo, &["remote", "add", "origin", &format!("file://{}", remote.display())]);
    let local = csv_map(&env, &repo, "select name, hash from dolt_branches");

    env.ok(&repo, &["push", "origin", "main"]);
    let (pushed, refs) = open(&remote);
    assert_eq!(refs_of_kind(&refs, RefKind::Branch), BTreeMap::from([("main".to_owned(), local["main"])]));
    let (chunks, with_dictionary) = decode_all(&pushed);
    let kinds: Vec<&str> = pushed
        .files()
        .iter()
        .map(|f| match f {
            ChunkFile::Table(_) => "table",
            ChunkFile::Archive(_) => "archive",
        })
        .collect();
    eprintln!("first push: files {kinds:?}, {chunks} chunks, {with_dictionary} zstd with a dictionary");
    assert!(kinds.contains(&"archive") && kinds.contains(&"table"), "{kinds:?}");
    assert!(with_dictionary > 0, "1000+ chunks get a dictionary");
    assert_eq!(decode_as_ranges(&remote), chunks);

    // Every kind of push, each diffed against the root before it.
    let mut root = pushed.root();
    let mut push = |args: &[&str]| {
        let mut full = vec!["push"];
        full.extend_from_slice(args);
        env.ok(&repo, &full);
        let source = DirectorySource::open(&remote).unwrap();
        let changes = block_on(diff(&source, &root, &source.root())).unwrap();
        root = source.root();
        (source, changes)
    };

    let branches: Vec<String> = (0..PUSHED).map(|i| format!("branch-{i:03}")).collect();
    let mut args = vec!["origin"];
    args.extend(branches.iter().map(String::as_str));
    let (source, many) = push(&args);
    let full = block_on(read_refs(&source, &source.root())).unwrap();
    assert!(ref_map_level(&source) >= 1, "{} refs span several chunks", full.refs.len());
    eprintln!(
        "{} refs in a {}-level map: reading all takes {} chunks; the last branch push's diff read {}",
        full.refs.len(),
        ref_map_level(&source) + 1,
        full.chunks_read,
        many.chunks_read
    );

    env.ok(&repo, &["sql", "-q", "update t set v = 'moved' where id = 2; call dolt_commit('-am', 'one more');"]);
    let (source, forward) = push(&["origin", "main"]);
    let names: Vec<&str> = forward.changes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["refs/heads/main"]);
    let change = &forward.changes[0];
    assert!(block_on(is_ancestor(&source, &change.old.unwrap(), &change.new.unwrap())).unwrap());
    eprintln!(
        "fast-forward of one branch among {}: read {} chunks in {} batches",
        PUSHED + 1,
        forward.chunks_read,
        forward.batches
    );
    assert!(forward.chunks_read <= 8, "read {} chunks", forward.chunks_read);

    let (source, forced) = push(&["--force", "origin", "feature:main"]);
    let main = forced.changes.iter().find(|c| c.name == "refs/heads/main").expect("main moved");
    assert_eq!(main.new, Some(local["feature"]));
    assert!(!block_on(is_ancestor(&source, &main.old.unwrap(), &main.new.unwrap())).unwrap());
    let forced_names: Vec<&str> = forced.changes.iter().map(|c| c.name.as_str()).collect();
    assert!(forced_names.contains(&"workingSets/heads/main"), "a force push writes the working set: {forced_names:?}");
    // That working set has no meta at all, which Dolt's schema calls required.
    let written = forced.changes.iter().find(|c| c.name == "workingSets/heads/main").unwrap();
    let working_set = block_on(read_working_set(&source, &written.new.unwrap())).unwrap();
    let commit_root = block_on(read_commit(&source, &local["feature"])).unwrap().root;
    assert_eq!((working_set.working_root, working_set.staged_root), (commit_root, commit_root));

    let (source, tagged) = push(&["origin", "v2"]);
    let tag = &tagged.changes[..];
    assert_eq!(tag.len(), 1);
    assert_eq!((tag[0].name.as_str(), tag[0].old), ("refs/tags/v2", None));
    let tags = csv_map(&env, &repo, "select tag_name, tag_hash from dolt_tags");
    assert_eq!(block_on(tag_commit(&source, &tag[0].new.unwrap())).unwrap(), tags["v2"]);

    let (_, deleted) = push(&["origin", ":branch-007"]);
    let removed: Vec<(&str, bool)> = deleted.changes.iter().map(|c| (c.name.as_str(), c.new.is_none())).collect();
    assert!(removed.contains(&("refs/heads/branch-007", true)), "{removed:?}");
}
