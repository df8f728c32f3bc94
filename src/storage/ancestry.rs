//! Fast-forward or rewrite: is the old head of a branch an ancestor of the new one?
//!
//! Every commit stores its height and the address of its parent closure, a
//! `CMCL` prolly tree keyed by (height, address) of every strict ancestor
//! (`go/store/datas/commit_closure.go`). The closure is written by whoever
//! pushes the commit, so it is only a hint here: the answer is proven by
//! following parent addresses (which are hashes, so they cannot lie) down from
//! the new head to the old one. The closure's entries above the old head's
//! height name the commits that walk should meet, so they are fetched in one
//! batch up front and an honest push costs a few round trips, not one per commit.
//! A height is also the pusher's word; a false one can only hide a path, so
//! a lie makes a fast-forward look like a rewrite, never the other way round.

use std::collections::{BinaryHeap, HashMap, HashSet};

use super::message::{ClosureKey, Commit, CommitClosureNode, Tag, WorkingSet};
use super::source::{get_all, get_one, ChunkSource};
use super::{Address, Result, StorageError};

/// The most commits a fast-forward proof reads. Past it the update counts as
/// a rewrite (a `force`), which rules that allow force still let through.
pub const MAX_WALK: usize = 50_000;

/// Whether `old` is `new` or one of its ancestors: true for a fast-forward.
pub async fn is_ancestor<S: ChunkSource>(source: &S, old: &Address, new: &Address) -> Result<bool> {
    if old == new {
        return Ok(true);
    }
    let chunks = get_all(source, &[*old, *new]).await?;
    let (old_commit, new_commit) = (Commit::parse(old, &chunks[old])?, Commit::parse(new, &chunks[new])?);
    if old_commit.height >= new_commit.height {
        return Ok(false);
    }
    if new_commit.parents.contains(old) {
        return Ok(true);
    }
    let above = ClosureKey { height: old_commit.height.saturating_add(1), commit: Address([0; 20]) };
    let hinted = match new_commit.parent_closure {
        Some(closure) => closure_keys_from(source, &closure, &above, MAX_WALK).await?,
        None => Vec::new(),
    };
    let mut known: HashMap<Address, Commit> = HashMap::new();
    let hinted: Vec<Address> = hinted.into_iter().map(|key| key.commit).collect();
    fetch_commits(source, &hinted, &mut known).await?;
    walk_parents(source, old, old_commit.height, new_commit.parents, known).await
}

/// Breadth-first down the parents of the new head, pruned at the old head's
/// height; commits not fetched yet are fetched a level at a time.
async fn walk_parents<S: ChunkSource>(
    source: &S,
    old: &Address,
    old_height: u64,
    start: Vec<Address>,
    mut known: HashMap<Address, Commit>,
) -> Result<bool> {
    let mut seen: HashSet<Address> = start.iter().copied().collect();
    let mut frontier = start;
    while !frontier.is_empty() {
        if frontier.contains(old) {
            return Ok(true);
        }
        if seen.len() > MAX_WALK {
            tracing::warn!(%old, "history longer than {MAX_WALK} commits: update treated as a rewrite");
            return Ok(false);
        }
        let missing: Vec<Address> = frontier.iter().filter(|a| !known.contains_key(*a)).copied().collect();
        fetch_commits(source, &missing, &mut known).await?;
        let mut next = Vec::new();
        for address in &frontier {
            let commit = &known[address];
            if commit.height <= old_height {
                continue;
            }
            next.extend(commit.parents.iter().filter(|parent| seen.insert(**parent)).copied());
        }
        frontier = next;
    }
    Ok(false)
}

/// Reads and parses the commits at `addresses` (repeats allowed) into `into`.
pub async fn fetch_commits<S: ChunkSource>(
    source: &S,
    addresses: &[Address],
    into: &mut HashMap<Address, Commit>,
) -> Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    for (address, chunk) in get_all(source, addresses).await? {
        into.insert(address, Commit::parse(&address, &chunk)?);
    }
    Ok(())
}

/// The keys of the closure tree at `root` that are at least `lower`, read a
/// level at a time; at most `limit` of them (the rest are left out).
pub async fn closure_keys_from<S: ChunkSource>(
    source: &S,
    root: &Address,
    lower: &ClosureKey,
    limit: usize,
) -> Result<Vec<ClosureKey>> {
    let mut level = vec![*root];
    let mut expected_level: Option<u8> = None;
    let mut keys = Vec::new();
    while !level.is_empty() {
        let chunks = get_all(source, &level).await?;
        let mut next = Vec::new();
        for address in &level {
            let node = CommitClosureNode::parse(address, &chunks[address])?;
            if expected_level.is_some_and(|expected| expected != node.level) {
                return Err(StorageError::BadTree {
                    address: *address,
                    reason: format!("level {} where {expected_level:?} was expected", node.level),
                });
            }
            expected_level = Some(node.level.saturating_sub(1));
            if node.level == 0 {
                keys.extend(node.keys.iter().filter(|key| *key >= lower).copied());
            } else {
                // children[i] holds the keys up to keys[i].
                let wanted = node.keys.iter().zip(&node.children).filter(|(key, _)| *key >= lower);
                next.extend(wanted.map(|(_, child)| *child));
            }
            if keys.len() + next.len() > limit {
                keys.truncate(limit);
                return Ok(keys);
            }
        }
        level = next;
    }
    Ok(keys)
}

/// Whether the closure tree rooted at `root` holds `key`: Dolt's lower-bound
/// descent (`go/store/prolly/tree/node_cursor.go`), where an internal node's
/// key is the largest key of its child.
pub async fn closure_contains<S: ChunkSource>(source: &S, root: &Address, key: &ClosureKey) -> Result<bool> {
    let mut address = *root;
    let mut expected_level = None;
    loop {
        let node = CommitClosureNode::parse(&address, &get_one(source, &address).await?)?;
        if expected_level.is_some_and(|level| level != node.level) {
            return Err(StorageError::BadTree {
                address,
                reason: format!("level {} under a parent one level above {:?}", node.level, expected_level),
            });
        }
        let at = node.keys.partition_point(|k| k < key);
        if node.level == 0 {
            return Ok(node.keys.get(at) == Some(key));
        }
        address = node.children[at.min(node.children.len() - 1)];
        expected_level = Some(node.level - 1);
    }
}

/// The commits reachable from `new_head` and from none of `old_heads`: what a
/// push adds to the history, newest first; `None` when there are more than
/// `limit` (or the walk reads more than four times that many commits).
///
/// Both sides are walked down together, highest first, and the walk ends
/// when no commit still queued can be new. A commit counts as old only when
/// an old head reaches it through parent hashes, which cannot lie; a false
/// height can only delay that, so an old commit may be counted as new (the
/// rules on new commits then judge more, never less).
pub async fn new_commits<S: ChunkSource>(
    source: &S,
    new_head: &Address,
    old_heads: &[Address],
    limit: usize,
) -> Result<Option<Vec<(Address, Commit)>>> {
    let mut old: HashSet<Address> = old_heads.iter().copied().collect();
    let mut known: HashMap<Address, Commit> = HashMap::new();
    let heads: Vec<Address> = old.iter().copied().chain([*new_head]).collect();
    fetch_commits(source, &heads, &mut known).await?;
    let mut queue: BinaryHeap<(u64, Address)> = heads.iter().map(|a| (known[a].height, *a)).collect();
    let mut queued: HashSet<Address> = heads.into_iter().collect();
    let mut added = Vec::new();
    while queue.iter().any(|(_, address)| !old.contains(address)) {
        let top = queue.peek().expect("not empty").0;
        let mut level = Vec::new();
        while queue.peek().is_some_and(|(height, _)| *height == top) {
            level.push(queue.pop().expect("peeked").1);
        }
        let mut parents = Vec::new();
        for address in &level {
            let commit = &known[address];
            if old.contains(address) {
                old.extend(commit.parents.iter().copied());
            } else {
                added.push((*address, commit.clone()));
                if added.len() > limit {
                    return Ok(None);
                }
            }
            parents.extend(commit.parents.iter().copied().filter(|p| queued.insert(*p)));
        }
        // The old side walks too; an unrelated new history would walk all of it.
        if queued.len() > limit.saturating_mul(4) {
            return Ok(None);
        }
        let missing: Vec<Address> = parents.iter().filter(|a| !known.contains_key(*a)).copied().collect();
        fetch_commits(source, &missing, &mut known).await?;
        queue.extend(parents.iter().map(|a| (known[a].height, *a)));
    }
    Ok(Some(added))
}

pub async fn read_commit<S: ChunkSource>(source: &S, address: &Address) -> Result<Commit> {
    Commit::parse(address, &get_one(source, address).await?)
}

pub async fn read_tag<S: ChunkSource>(source: &S, address: &Address) -> Result<Tag> {
    Tag::parse(address, &get_one(source, address).await?)
}

/// The commit a tag names, checked to be a commit.
pub async fn tag_commit<S: ChunkSource>(source: &S, tag: &Address) -> Result<Address> {
    let commit = read_tag(source, tag).await?.commit.ok_or_else(|| StorageError::BadFlatbuffer {
        id: "DTAG",
        address: *tag,
        reason: "the tag names no commit".to_owned(),
    })?;
    read_commit(source, &commit).await?;
    Ok(commit)
}

pub async fn read_working_set<S: ChunkSource>(source: &S, address: &Address) -> Result<WorkingSet> {
    WorkingSet::parse(address, &get_one(source, address).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::build::{closure_tree, commit, message, tag, Value};
    use crate::storage::source::CountingSource;
    use crate::storage::MemorySource;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    /// A linear history of `length` commits with two-level closures (leaves
    /// of 8 keys), plus a side commit forked from commit 3; `length` is at least 4.
    fn history(source: &mut MemorySource, length: usize) -> (Vec<Address>, Address) {
        let mut commits: Vec<Address> = Vec::new();
        let mut keys: Vec<ClosureKey> = Vec::new();
        for height in 1..=length as u64 {
            let closure = closure_tree(source, &keys);
            let parents: Vec<Address> = commits.last().copied().into_iter().collect();
            let address = source.insert(commit(height, &parents, closure));
            keys.push(ClosureKey { height, commit: address });
            keys.sort();
            commits.push(address);
        }
        let side_keys: Vec<ClosureKey> = keys[..3].to_vec();
        let side_closure = closure_tree(source, &side_keys);
        // A second parent keeps it apart from commits[3], which has the same height and closure.
        let side = source.insert(commit(4, &[commits[2], commits[1]], side_closure));
        (commits, side)
    }

    #[test]
    fn parents_and_closures_make_ancestors() {
        let mut source = MemorySource::new();
        let (commits, side) = history(&mut source, 40);
        let check = |old: usize, new: usize| block_on(is_ancestor(&source, &commits[old], &commits[new])).unwrap();
        assert!(check(38, 39), "a parent");
        assert!(check(0, 39), "the first commit, found deep in the closure");
        assert!(check(20, 39));
        assert!(check(39, 39), "a ref that did not move");
        assert!(!check(39, 20), "a rewind");
        assert!(block_on(is_ancestor(&source, &commits[2], &side)).unwrap());
        assert!(!block_on(is_ancestor(&source, &commits[3], &side)).unwrap(), "same height, another line");
        assert!(!block_on(is_ancestor(&source, &side, &commits[39])).unwrap(), "a force push away from the side");
    }

    #[test]
    fn an_honest_history_is_proven_in_a_few_batches() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 40);
        let counting = CountingSource::new(&source);
        assert!(block_on(is_ancestor(&counting, &commits[5], &commits[39])).unwrap());
        // Both heads, the closure's two levels, the hinted commits, the walk's misses.
        assert!(counting.batches() <= 6, "{} batches", counting.batches());
    }

    /// A commit whose closure claims the old head although its parents do not
    /// lead there: the forgery that would pass a rewrite off as a fast-forward.
    #[test]
    fn a_closure_that_lies_proves_nothing() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 10);
        let unrelated = source.insert(commit(1, &[], Address::EMPTY));
        let mut lie: Vec<ClosureKey> =
            (0..9).map(|i| ClosureKey { height: i as u64 + 1, commit: commits[i] }).collect();
        lie.push(ClosureKey { height: 1, commit: unrelated });
        lie.sort();
        let closure = closure_tree(&mut source, &lie);
        let forged = source.insert(commit(11, &[unrelated], closure));
        assert!(block_on(closure_contains(&source, &closure, &ClosureKey { height: 9, commit: commits[8] })).unwrap());
        assert!(!block_on(is_ancestor(&source, &commits[8], &forged)).unwrap(), "the closure's claim is not proof");
        let honest = source.insert(commit(11, &[commits[9]], closure));
        assert!(block_on(is_ancestor(&source, &commits[8], &honest)).unwrap());
    }

    #[test]
    fn new_commits_stop_where_old_history_begins() {
        let mut source = MemorySource::new();
        let (commits, side) = history(&mut source, 10);
        let added = |new: &Address, old: &[Address]| {
            let found = block_on(new_commits(&source, new, old, 100)).unwrap().expect("within the limit");
            found.into_iter().map(|(a, _)| a).collect::<Vec<_>>()
        };
        assert_eq!(added(&commits[9], &[commits[6]]), [commits[9], commits[8], commits[7]], "a fast-forward");
        assert_eq!(added(&commits[9], &[commits[9]]), Vec::<Address>::new(), "nothing new");
        // The side commit merges commits[2] and commits[1]: nothing new under it
        // once main's old head reaches both.
        assert_eq!(added(&side, &[commits[5]]), [side]);
        assert_eq!(added(&side, &[commits[1]]), [side, commits[2]], "commits[2] is new beside an older head");
        assert_eq!(added(&commits[9], &[]).len(), 10, "a new history is new all the way down");
        assert!(block_on(new_commits(&source, &commits[9], &[], 5)).unwrap().is_none(), "past the limit");
        // A merge that claims a height below the old head is still reached and counted.
        let low_merge = source.insert(commit(1, &[commits[9], side], Address::EMPTY));
        let head = source.insert(commit(12, &[low_merge], Address::EMPTY));
        let found = block_on(new_commits(&source, &head, &[commits[9]], 100)).unwrap().unwrap();
        let found: Vec<Address> = found.into_iter().map(|(a, _)| a).collect();
        assert!(found.contains(&low_merge) && found.contains(&side), "{found:?}");
    }

    #[test]
    fn reads_tags_and_working_sets() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 4);
        let tag = source.insert(tag(commits[1]));
        assert_eq!(block_on(tag_commit(&source, &tag)).unwrap(), commits[1]);
        let empty_tag = source.insert(message("DTAG", &[]));
        assert!(block_on(tag_commit(&source, &empty_tag)).unwrap_err().to_string().contains("names no commit"));
        let not_a_commit = source.insert(message("DTAG", &[(4, Value::Bytes(&tag.0))]));
        let error = block_on(tag_commit(&source, &not_a_commit)).unwrap_err();
        assert!(error.to_string().contains("unknown file id \"DTAG\""), "{error}");
        let root = Address::of(b"a root value");
        let working_set = source.insert(message("WRST", &[(4, Value::Bytes(&root.0))]));
        let read = block_on(read_working_set(&source, &working_set)).unwrap();
        assert_eq!((read.working_root, read.staged_root), (Some(root), None));
    }

    #[test]
    fn a_commit_that_is_not_a_commit_is_an_error() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 4);
        let tag = source.insert(message("DTAG", &[]));
        let error = block_on(is_ancestor(&source, &tag, &commits[1])).unwrap_err();
        assert!(matches!(error, StorageError::UnknownFileId { .. }), "{error}");
    }
}
