//! Fast-forward or rewrite: is the old head of a branch an ancestor of the new one?
//!
//! Every commit stores its height and the address of its parent closure, a
//! `CMCL` prolly tree keyed by (height, address) of every strict ancestor
//! (`go/store/datas/commit_closure.go`). So the answer is one point lookup
//! down that tree, a handful of chunks, never a walk over history.
//!
//! Trust: the closure is written by whoever pushes the new commit. A crafted
//! closure can list a commit that its parents do not lead to; this module
//! answers what the closure says, which is also what Dolt itself will believe
//! when it merges.

use super::message::{ClosureKey, Commit, CommitClosureNode, Tag, WorkingSet};
use super::source::{get_all, get_one, ChunkSource};
use super::{Address, Result, StorageError};

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
    let Some(closure) = new_commit.parent_closure else { return Ok(false) };
    closure_contains(source, &closure, &ClosureKey { height: old_commit.height, commit: *old }).await
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
    use crate::storage::message::tests::{closure_node, commit, message, Value};
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

    fn closure_tree(source: &mut MemorySource, keys: &[ClosureKey]) -> Address {
        if keys.is_empty() {
            return Address::EMPTY;
        }
        let leaves: Vec<(ClosureKey, Address)> =
            keys.chunks(8).map(|leaf| (*leaf.last().unwrap(), source.insert(closure_node(0, leaf, &[])))).collect();
        let (separators, children): (Vec<ClosureKey>, Vec<Address>) = leaves.into_iter().unzip();
        source.insert(closure_node(1, &separators, &children))
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
    fn a_closure_lookup_reads_one_path() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 40);
        let counting = CountingSource::new(&source);
        assert!(block_on(is_ancestor(&counting, &commits[5], &commits[39])).unwrap());
        // Both commits, the closure root, one leaf.
        assert_eq!(counting.chunks(), 4);
    }

    #[test]
    fn reads_tags_and_working_sets() {
        let mut source = MemorySource::new();
        let (commits, _) = history(&mut source, 4);
        let tag = source.insert(message("DTAG", &[(4, Value::Bytes(&commits[1].0))]));
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
