//! Whether a commit new in a push carries the height and parent closure Dolt
//! itself would have written for it.
//!
//! doltgate proves ancestry by parent hashes and never trusts either field
//! (see `ancestry`), but Dolt does: its merge base and ancestor queries walk
//! heights and closures (`go/store/datas/commit.go` `FindCommonAncestor`). A
//! pushed commit whose closure names a commit that is not its ancestor, or
//! leaves one out, makes later merges on the server pick the wrong base and
//! silently drop or revive changes. So every new commit must have:
//!
//! - height = 1 + the highest parent's height (`commit_flatbuffer`);
//! - no closure when it has no parents, else a closure holding exactly each
//!   parent's (height, address) and every entry of each parent's closure
//!   (`commit_closure.go` `writeFbCommitParentClosure`).
//!
//! The closure is checked by diffing it against the first parent's closure,
//! which reads only the nodes that differ: for an ordinary commit, the path
//! to the one entry it adds.

use std::collections::{BTreeSet, HashMap};

use futures_util::future::try_join_all;

use super::address_map::{diff_trees, Key};
use super::ancestry::{closure_contains, fetch_commits};
use super::message::{AddressMapNode, ClosureKey, Commit, CommitClosureNode};
use super::source::ChunkSource;
use super::{Address, Result, StorageError};

/// How many commits have their closures diffed at once.
const CONCURRENT_CHECKS: usize = 16;

/// Checks every commit of `commits` (address, parsed commit), reading the
/// parents that are not among them from `source`.
pub async fn check_lineage<S: ChunkSource>(source: &S, commits: &[(Address, Commit)]) -> Result<()> {
    let mut known: HashMap<Address, Commit> = commits.iter().cloned().collect();
    let missing: Vec<Address> =
        commits.iter().flat_map(|(_, c)| c.parents.iter().copied()).filter(|p| !known.contains_key(p)).collect();
    fetch_commits(source, &missing, &mut known).await?;
    for batch in commits.chunks(CONCURRENT_CHECKS) {
        try_join_all(batch.iter().map(|(address, commit)| check_commit(source, address, commit, &known))).await?;
    }
    Ok(())
}

async fn check_commit<S: ChunkSource>(
    source: &S,
    address: &Address,
    commit: &Commit,
    known: &HashMap<Address, Commit>,
) -> Result<()> {
    let false_lineage = |reason: String| StorageError::FalseLineage { address: *address, reason };
    let parents: Vec<(Address, &Commit)> = commit.parents.iter().map(|p| (*p, &known[p])).collect();
    let height = parents.iter().map(|(_, parent)| parent.height).max().unwrap_or(0).saturating_add(1);
    if commit.height != height {
        return Err(false_lineage(format!("height {} where its parents make it {height}", commit.height)));
    }
    let Some((&(first_address, first), others)) = parents.split_first() else {
        return match commit.parent_closure {
            None => Ok(()),
            Some(closure) => Err(false_lineage(format!("no parents, yet a parent closure {closure}"))),
        };
    };
    let (dropped, added) = closure_diff(source, first.parent_closure, commit.parent_closure).await?;
    if let Some(key) = dropped.first() {
        return Err(false_lineage(format!("its closure leaves out {}, an ancestor of its first parent", key.commit)));
    }
    let expected = expected_additions(source, (first_address, first), others).await?;
    let added: BTreeSet<ClosureKey> = added.into_iter().collect();
    if let Some(key) = added.difference(&expected).next() {
        return Err(false_lineage(format!(
            "its closure names {} (height {}), not an ancestor",
            key.commit, key.height
        )));
    }
    if let Some(key) = expected.difference(&added).next() {
        return Err(false_lineage(format!("its closure leaves out its ancestor {}", key.commit)));
    }
    Ok(())
}

/// What Dolt adds to the first parent's closure: the other parents'
/// closure entries and every parent itself, less what it already holds. The
/// first parent is never in its own closure (hashes allow no cycles).
async fn expected_additions<S: ChunkSource>(
    source: &S,
    first: (Address, &Commit),
    others: &[(Address, &Commit)],
) -> Result<BTreeSet<ClosureKey>> {
    let key_of = |(address, parent): &(Address, &Commit)| ClosureKey { height: parent.height, commit: *address };
    let mut expected = BTreeSet::from([key_of(&first)]);
    for other in others {
        expected.extend(closure_diff(source, first.1.parent_closure, other.1.parent_closure).await?.1);
        let key = key_of(other);
        let held = match first.1.parent_closure {
            Some(root) => closure_contains(source, &root, &key).await?,
            None => false,
        };
        if !held {
            expected.insert(key);
        }
    }
    Ok(expected)
}

/// The keys only `old` holds and the keys only `new` holds.
async fn closure_diff<S: ChunkSource>(
    source: &S,
    old: Option<Address>,
    new: Option<Address>,
) -> Result<(Vec<ClosureKey>, Vec<ClosureKey>)> {
    let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
    for (key, before, after) in diff_trees(source, old, new, closure_node).await? {
        let key = key_from_bytes(&key);
        match (before, after) {
            (Some(_), None) => only_old.push(key),
            (None, Some(_)) => only_new.push(key),
            _ => {}
        }
    }
    Ok((only_old, only_new))
}

/// A closure node in the shape of an address map: keys as bytes that sort
/// the way Dolt orders them (height big-endian, then address), leaves with
/// an empty address per key.
fn closure_node(address: &Address, chunk: &[u8]) -> Result<AddressMapNode> {
    let node = CommitClosureNode::parse(address, chunk)?;
    let keys: Vec<Key> = node.keys.iter().map(key_bytes).collect();
    let addresses = if node.level == 0 { vec![Address::EMPTY; keys.len()] } else { node.children };
    Ok(AddressMapNode { level: node.level, tree_count: node.tree_count, keys, addresses, subtree_counts: Vec::new() })
}

fn key_bytes(key: &ClosureKey) -> Key {
    key.height.to_be_bytes().iter().chain(&key.commit.0).copied().collect()
}

fn key_from_bytes(bytes: &[u8]) -> ClosureKey {
    ClosureKey {
        height: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
        commit: Address::from_slice(&bytes[8..]).expect("20 bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::build::{closure_tree, commit};
    use crate::storage::source::get_one;
    use crate::storage::MemorySource;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    /// Commits built the way Dolt builds them, each closure its parents' plus the parents.
    struct History {
        source: MemorySource,
        closures: HashMap<Address, Vec<ClosureKey>>,
        heights: HashMap<Address, u64>,
    }

    impl History {
        fn new() -> History {
            History { source: MemorySource::new(), closures: HashMap::new(), heights: HashMap::new() }
        }

        fn honest_closure(&self, parents: &[Address]) -> Vec<ClosureKey> {
            let mut keys: BTreeSet<ClosureKey> = BTreeSet::new();
            for parent in parents {
                keys.extend(self.closures[parent].iter().copied());
                keys.insert(ClosureKey { height: self.heights[parent], commit: *parent });
            }
            keys.into_iter().collect()
        }

        fn honest_height(&self, parents: &[Address]) -> u64 {
            parents.iter().map(|p| self.heights[p]).max().unwrap_or(0) + 1
        }

        fn commit(&mut self, parents: &[Address]) -> Address {
            let keys = self.honest_closure(parents);
            self.commit_with(parents, self.honest_height(parents), keys)
        }

        fn commit_with(&mut self, parents: &[Address], height: u64, keys: Vec<ClosureKey>) -> Address {
            let closure = closure_tree(&mut self.source, &keys);
            let address = self.source.insert(commit(height, parents, closure));
            self.closures.insert(address, keys);
            self.heights.insert(address, height);
            address
        }

        fn check(&self, address: &Address) -> Result<()> {
            block_on(check_lineage(&self.source, &[(*address, self.read(address))]))
        }

        fn read(&self, address: &Address) -> Commit {
            Commit::parse(address, &block_on(get_one(&self.source, address)).unwrap()).unwrap()
        }

        fn reason(&self, address: &Address) -> String {
            match self.check(address) {
                Err(StorageError::FalseLineage { address: at, reason }) if at == *address => reason,
                other => panic!("expected a false lineage for {address}, got {other:?}"),
            }
        }
    }

    /// main: a - b - c - ... (30 commits, closures past one leaf); side: b - s1 - s2.
    fn history() -> (History, Vec<Address>, Address) {
        let mut h = History::new();
        let mut line = vec![h.commit(&[])];
        for _ in 1..30 {
            let parent = *line.last().unwrap();
            line.push(h.commit(&[parent]));
        }
        // A second parent keeps s1 apart from line[2], which would be the same chunk.
        let s1 = h.commit(&[line[1], line[0]]);
        let s2 = h.commit(&[s1]);
        (h, line, s2)
    }

    #[test]
    fn honest_commits_and_merges_pass() {
        let (mut h, line, side) = history();
        for address in &line {
            h.check(address).unwrap();
        }
        h.check(&side).unwrap();
        let merge = h.commit(&[*line.last().unwrap(), side]);
        h.check(&merge).unwrap();
        let merge_of_an_ancestor = h.commit(&[line[20], line[5]]);
        h.check(&merge_of_an_ancestor).unwrap();
        let all: Vec<(Address, Commit)> = line.iter().map(|a| (*a, h.read(a))).collect();
        block_on(check_lineage(&h.source, &all)).unwrap();
    }

    #[test]
    fn a_false_height_is_refused() {
        let (mut h, line, _) = history();
        let parent = line[10];
        let keys = h.honest_closure(&[parent]);
        let too_high = h.commit_with(&[parent], 40, keys.clone());
        assert_eq!(h.reason(&too_high), "height 40 where its parents make it 12");
        let too_low = h.commit_with(&[parent], 3, keys);
        assert!(h.reason(&too_low).starts_with("height 3"));
    }

    #[test]
    fn a_closure_naming_a_stranger_or_leaving_out_an_ancestor_is_refused() {
        let (mut h, line, side) = history();
        let parent = line[25];
        let height = h.honest_height(&[parent]);
        let mut claims_side = h.honest_closure(&[parent]);
        claims_side.push(ClosureKey { height: h.heights[&side], commit: side });
        claims_side.sort();
        let forged = h.commit_with(&[parent], height, claims_side);
        assert_eq!(h.reason(&forged), format!("its closure names {side} (height 4), not an ancestor"));

        let mut forgets_root = h.honest_closure(&[parent]);
        forgets_root.remove(0);
        let forged = h.commit_with(&[parent], height, forgets_root);
        assert!(h.reason(&forged).contains(&format!("leaves out {}", line[0])), "{}", h.reason(&forged));

        let mut forgets_parent = h.honest_closure(&[parent]);
        forgets_parent.pop();
        let forged = h.commit_with(&[parent], height, forgets_parent);
        assert_eq!(h.reason(&forged), format!("its closure leaves out its ancestor {parent}"));

        let merge_keys = h.honest_closure(&[line[29]]);
        let merge_height = h.honest_height(&[line[29], side]);
        let merge_forgets_side = h.commit_with(&[line[29], side], merge_height, merge_keys);
        assert!(h.reason(&merge_forgets_side).contains("leaves out its ancestor"));

        let rootless = h.commit_with(&[], 1, vec![ClosureKey { height: 1, commit: line[0] }]);
        assert!(h.reason(&rootless).starts_with("no parents, yet a parent closure"));
    }

    #[test]
    fn a_missing_parent_is_an_error_not_a_pass() {
        let mut h = History::new();
        let ghost = Address::of(b"never stored");
        h.heights.insert(ghost, 1);
        h.closures.insert(ghost, Vec::new());
        let orphan = h.commit(&[ghost]);
        assert!(matches!(h.check(&orphan), Err(StorageError::MissingChunk(a)) if a == ghost));
    }
}
