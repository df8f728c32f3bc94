//! A root's refs, and what changed between two roots.
//!
//! The ref map is an `ADRM` prolly tree whose root node is embedded in the
//! `StoreRoot`; past roughly 80 refs it spans several chunks. Both reading and
//! diffing expand the tree one level at a time, fetching all the nodes that
//! level needs in one batch. The diff expands only subtrees that differ: a
//! subtree with the same address covering the same key range on both sides
//! holds the same refs, so it is skipped unread. A push that moves one branch
//! among a thousand reads the two roots and a few nodes per level.
//!
//! Hostile trees: every node read is checked to be ordered, to sit inside the
//! key range its parent gives it, to end exactly at its parent's separator key,
//! and to be one level below its parent. The old root is the upstream's current
//! state and is trusted as far as it is shared with the new one.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::message::{AddressMapNode, StoreRoot};
use super::source::{get_all, get_one, ChunkSource, CountingSource};
use super::{Address, Result, StorageError};

/// What a ref name is for (`go/libraries/doltcore/ref/ref.go`,
/// `workingset_ref.go`), and the part of the name after its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `refs/heads/<branch>` → a commit.
    Branch,
    /// `refs/tags/<tag>` → a tag, which names a commit.
    Tag,
    /// `workingSets/heads/<branch>` → that branch's working set.
    WorkingSet,
    /// `refs/remotes/<remote>/<branch>`.
    Remote,
    /// `refs/internal/<name>`, e.g. `refs/internal/create`.
    Internal,
    /// `refs/workspaces/<name>`.
    Workspace,
    /// `workingSets/workspaces/<name>`.
    WorkspaceWorkingSet,
    /// `refs/stashes/<name>`.
    Stash,
    /// `refs/statistics/<name>`.
    Statistics,
    /// `refs/tuples/<key>`.
    Tuple,
    /// Anything else: a name this module does not know the meaning of.
    Other,
}

const PREFIXES: &[(&str, RefKind)] = &[
    ("refs/heads/", RefKind::Branch),
    ("refs/tags/", RefKind::Tag),
    ("workingSets/heads/", RefKind::WorkingSet),
    ("refs/remotes/", RefKind::Remote),
    ("refs/internal/", RefKind::Internal),
    ("refs/workspaces/", RefKind::Workspace),
    ("workingSets/workspaces/", RefKind::WorkspaceWorkingSet),
    ("refs/stashes/", RefKind::Stash),
    ("refs/statistics/", RefKind::Statistics),
    ("refs/tuples/", RefKind::Tuple),
];

impl RefKind {
    /// The kind of `name` and the rest of it: `("refs/heads/main")` is
    /// `(Branch, "main")`; an unknown name is `(Other, name)`.
    pub fn of(name: &str) -> (RefKind, &str) {
        PREFIXES
            .iter()
            .find_map(|&(prefix, kind)| name.strip_prefix(prefix).map(|rest| (kind, rest)))
            .unwrap_or((RefKind::Other, name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub target: Address,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefMap {
    /// Sorted by name (byte order, as Dolt sorts them).
    pub refs: Vec<Ref>,
    /// Chunks fetched to read them, the `StoreRoot` included.
    pub chunks_read: usize,
}

impl RefMap {
    pub fn get(&self, name: &str) -> Option<Address> {
        let found = self.refs.binary_search_by(|r| r.name.as_bytes().cmp(name.as_bytes()));
        found.ok().map(|i| self.refs[i].target)
    }
}

/// One ref that a new root adds (`old` is `None`), removes (`new` is `None`) or moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    pub name: String,
    pub old: Option<Address>,
    pub new: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefDiff {
    /// Sorted by name.
    pub changes: Vec<RefChange>,
    /// Chunks fetched, both `StoreRoot`s included.
    pub chunks_read: usize,
    /// Calls to the source: one per tree level, plus the roots.
    pub batches: usize,
}

/// Every ref of the root `root` (all zeros: an empty database).
pub async fn read_refs<S: ChunkSource>(source: &S, root: &Address) -> Result<RefMap> {
    let counting = CountingSource::new(source);
    let (_, entries) = expand_pair(&counting, Vec::new(), root_items(&counting, root).await?).await?;
    let refs = entries.into_iter().map(|(key, target)| Ok(Ref { name: ref_name(root, key)?, target }));
    Ok(RefMap { refs: refs.collect::<Result<_>>()?, chunks_read: counting.chunks() })
}

/// Every ref `new_root` adds, removes or moves relative to `old_root`.
pub async fn diff<S: ChunkSource>(source: &S, old_root: &Address, new_root: &Address) -> Result<RefDiff> {
    if old_root == new_root {
        return Ok(RefDiff { changes: Vec::new(), chunks_read: 0, batches: 0 });
    }
    let counting = CountingSource::new(source);
    let roots: Vec<Address> = [old_root, new_root].into_iter().filter(|a| !a.is_empty()).copied().collect();
    let chunks = get_all(&counting, &roots).await?;
    let old = root_items_from(&chunks, old_root)?;
    let new = root_items_from(&chunks, new_root)?;
    let (old, new) = expand_pair(&counting, old, new).await?;
    let changes = merge(old, new).map(|(key, old, new)| Ok(RefChange { name: ref_name(new_root, key)?, old, new }));
    Ok(RefDiff {
        changes: changes.collect::<Result<_>>()?,
        chunks_read: counting.chunks(),
        batches: counting.batches(),
    })
}

fn ref_name(root: &Address, key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|e| StorageError::BadTree {
        address: *root,
        reason: format!("ref name {:?} is not UTF-8", String::from_utf8_lossy(e.as_bytes())),
    })
}

type Key = Vec<u8>;

/// A leaf entry, or a subtree not yet read that holds exactly the keys in
/// `(low, high]` (`low` `None`: from the start; `high` `None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Entry(Key, Address),
    Subtree { address: Address, level: u8, low: Option<Key>, high: Option<Key> },
}

async fn root_items<S: ChunkSource>(source: &S, root: &Address) -> Result<Vec<Item>> {
    if root.is_empty() {
        return Ok(Vec::new());
    }
    let chunk = get_one(source, root).await?;
    root_items_from(&HashMap::from([(*root, chunk)]), root)
}

fn root_items_from(chunks: &HashMap<Address, Bytes>, root: &Address) -> Result<Vec<Item>> {
    if root.is_empty() {
        return Ok(Vec::new());
    }
    let node = StoreRoot::parse(root, &chunks[root])?.refs;
    items(root, &node, None, None, None)
}

/// The items of `node`, after checking it fits where its parent put it.
fn items(
    address: &Address,
    node: &AddressMapNode,
    expected_level: Option<u8>,
    low: Option<Key>,
    high: Option<Key>,
) -> Result<Vec<Item>> {
    let bad = |reason: String| StorageError::BadTree { address: *address, reason };
    if expected_level.is_some_and(|level| level != node.level) {
        return Err(bad(format!("level {} under a parent expecting {}", node.level, expected_level.unwrap_or(0))));
    }
    if low.as_ref().zip(node.keys.first()).is_some_and(|(low, first)| first <= low) {
        return Err(bad("a key is not above the parent's previous separator".to_owned()));
    }
    if high.is_some() && node.keys.last() != high.as_ref() {
        return Err(bad("the last key is not the parent's separator".to_owned()));
    }
    if node.level == 0 {
        let entries = node.keys.iter().zip(&node.addresses);
        return Ok(entries.map(|(key, address)| Item::Entry(key.clone(), *address)).collect());
    }
    let mut previous = low;
    let mut children = Vec::with_capacity(node.keys.len());
    for (key, child) in node.keys.iter().zip(&node.addresses) {
        let high = Some(key.clone());
        children.push(Item::Subtree { address: *child, level: node.level - 1, low: previous, high: high.clone() });
        previous = high;
    }
    Ok(children)
}

/// Expands both sides level by level until only entries remain, dropping
/// subtrees the two sides share; each round is one batched fetch.
async fn expand_pair<S: ChunkSource>(
    source: &S,
    mut old: Vec<Item>,
    mut new: Vec<Item>,
) -> Result<(Vec<(Key, Address)>, Vec<(Key, Address)>)> {
    loop {
        let old_subtrees: HashSet<Item> = old.iter().filter(|i| is_subtree(i)).cloned().collect();
        let shared: HashSet<Item> = new.iter().filter(|i| old_subtrees.contains(*i)).cloned().collect();
        old.retain(|i| !shared.contains(i));
        new.retain(|i| !shared.contains(i));
        let mut wanted: Vec<Address> = old.iter().chain(&new).filter_map(subtree_address).collect();
        if wanted.is_empty() {
            return Ok((entries(old), entries(new)));
        }
        wanted.sort();
        wanted.dedup();
        let chunks = get_all(source, &wanted).await?;
        let nodes = parse_nodes(&chunks)?;
        old = expand(old, &nodes)?;
        new = expand(new, &nodes)?;
    }
}

fn is_subtree(item: &Item) -> bool {
    matches!(item, Item::Subtree { .. })
}

fn subtree_address(item: &Item) -> Option<Address> {
    match item {
        Item::Subtree { address, .. } => Some(*address),
        Item::Entry(..) => None,
    }
}

fn parse_nodes(chunks: &HashMap<Address, Bytes>) -> Result<HashMap<Address, AddressMapNode>> {
    chunks.iter().map(|(address, chunk)| Ok((*address, AddressMapNode::parse(address, chunk)?))).collect()
}

fn expand(items: Vec<Item>, nodes: &HashMap<Address, AddressMapNode>) -> Result<Vec<Item>> {
    let mut expanded = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Subtree { address, level, low, high } => {
                expanded.extend(self::items(&address, &nodes[&address], Some(level), low, high)?)
            }
            entry => expanded.push(entry),
        }
    }
    Ok(expanded)
}

fn entries(items: Vec<Item>) -> Vec<(Key, Address)> {
    items
        .into_iter()
        .map(|item| match item {
            Item::Entry(key, address) => (key, address),
            Item::Subtree { .. } => unreachable!("expanded until no subtree is left"),
        })
        .collect()
}

/// The sorted merge of two sorted entry lists: keys only one side has, and
/// keys whose addresses differ.
fn merge(
    old: Vec<(Key, Address)>,
    new: Vec<(Key, Address)>,
) -> impl Iterator<Item = (Key, Option<Address>, Option<Address>)> {
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    std::iter::from_fn(move || loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(o), Some(n)) => o.0.cmp(&n.0),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (key, address) = old.next()?;
                return Some((key, Some(address), None));
            }
            std::cmp::Ordering::Greater => {
                let (key, address) = new.next()?;
                return Some((key, None, Some(address)));
            }
            std::cmp::Ordering::Equal => {
                let ((key, before), (_, after)) = (old.next()?, new.next()?);
                if before != after {
                    return Some((key, Some(before), Some(after)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::build::{address_map, store_root};
    use crate::storage::MemorySource;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn target(name: &str, version: u32) -> Address {
        Address::of(format!("{name}@{version}").as_bytes())
    }

    /// A two-level ref map over `names` (leaves of `per_leaf` refs), stored in
    /// `source`; returns the root address.
    fn build(source: &mut MemorySource, names: &[(String, Address)], per_leaf: usize) -> Address {
        let mut separators = Vec::new();
        for leaf in names.chunks(per_leaf) {
            let entries: Vec<(&[u8], Address)> = leaf.iter().map(|(n, a)| (n.as_bytes(), *a)).collect();
            let address = source.insert(address_map(0, &entries));
            separators.push((leaf.last().unwrap().0.clone(), address));
        }
        let entries: Vec<(&[u8], Address)> = separators.iter().map(|(n, a)| (n.as_bytes(), *a)).collect();
        source.insert(store_root(&address_map(1, &entries)))
    }

    fn branches(count: usize) -> Vec<(String, Address)> {
        let mut names: Vec<(String, Address)> = (0..count)
            .map(|i| format!("refs/heads/branch-{i:04}"))
            .map(|name| (name.clone(), target(&name, 0)))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reads_a_multi_level_map_and_classifies_names() {
        let mut source = MemorySource::new();
        let names = branches(100);
        let root = build(&mut source, &names, 10);
        let map = block_on(read_refs(&source, &root)).unwrap();
        assert_eq!(map.refs.len(), 100);
        assert_eq!(map.get("refs/heads/branch-0042"), Some(target("refs/heads/branch-0042", 0)));
        assert_eq!(map.chunks_read, 11);
        assert_eq!(RefKind::of("refs/heads/feature/x"), (RefKind::Branch, "feature/x"));
        assert_eq!(RefKind::of("workingSets/heads/main"), (RefKind::WorkingSet, "main"));
        assert_eq!(RefKind::of("refs/tags/v1"), (RefKind::Tag, "v1"));
        assert_eq!(RefKind::of("refs/headsx"), (RefKind::Other, "refs/headsx"));
        let empty = block_on(read_refs(&source, &Address::EMPTY)).unwrap();
        assert_eq!((empty.refs.len(), empty.chunks_read), (0, 0));
    }

    #[test]
    fn a_diff_reads_only_what_differs() {
        let mut source = MemorySource::new();
        let names = branches(1000);
        let old_root = build(&mut source, &names, 20);
        let mut moved = names.clone();
        moved[500].1 = target(&moved[500].0, 1);
        let new_root = build(&mut source, &moved, 20);
        let diff = block_on(diff(&source, &old_root, &new_root)).unwrap();
        let name = names[500].0.clone();
        assert_eq!(diff.changes, vec![RefChange { name, old: Some(names[500].1), new: Some(moved[500].1) }]);
        // Two roots, then the one leaf that differs on each side.
        assert_eq!((diff.chunks_read, diff.batches), (4, 2));
    }

    #[test]
    fn a_diff_reports_additions_removals_and_moves() {
        let mut source = MemorySource::new();
        let names = branches(60);
        let old_root = build(&mut source, &names, 7);
        let mut changed = names.clone();
        changed.remove(10);
        changed[30].1 = target(&changed[30].0, 9);
        changed.push(("refs/tags/v1".to_owned(), target("tag", 0)));
        changed.push(("workingSets/heads/main".to_owned(), target("ws", 0)));
        let new_root = build(&mut source, &changed, 5);
        let diff = block_on(diff(&source, &old_root, &new_root)).unwrap();
        let summary: Vec<(&str, bool, bool)> =
            diff.changes.iter().map(|c| (c.name.as_str(), c.old.is_some(), c.new.is_some())).collect();
        assert_eq!(
            summary,
            vec![
                (names[10].0.as_str(), true, false),
                (changed[30].0.as_str(), true, true),
                ("refs/tags/v1", false, true),
                ("workingSets/heads/main", false, true),
            ]
        );
        let same = block_on(super::diff(&source, &new_root, &new_root)).unwrap();
        assert_eq!((same.changes.len(), same.chunks_read), (0, 0));
        let from_empty = block_on(super::diff(&source, &Address::EMPTY, &old_root)).unwrap();
        assert_eq!(from_empty.changes.len(), 60);
        assert!(from_empty.changes.iter().all(|c| c.old.is_none()));
    }

    #[test]
    fn refuses_a_child_outside_its_parents_range() {
        let mut source = MemorySource::new();
        let misplaced = source.insert(address_map(0, &[(b"refs/heads/z", target("z", 0))]));
        let honest = source.insert(address_map(0, &[(b"refs/heads/a", target("a", 0))]));
        // The parent says its second child ends at "refs/heads/b", but that child holds "z".
        let root = source.insert(store_root(&address_map(
            1,
            &[(b"refs/heads/a".as_slice(), honest), (b"refs/heads/b".as_slice(), misplaced)],
        )));
        let error = block_on(read_refs(&source, &root)).unwrap_err();
        assert!(error.to_string().contains("parent's separator"), "{error}");
        let wrong_level = source.insert(store_root(&address_map(2, &[(b"refs/heads/a".as_slice(), honest)])));
        let error = block_on(read_refs(&source, &wrong_level)).unwrap_err();
        assert!(error.to_string().contains("level 0 under a parent expecting 1"), "{error}");
    }

    #[test]
    fn a_missing_node_is_named() {
        let mut source = MemorySource::new();
        let absent = target("absent", 0);
        let root = source.insert(store_root(&address_map(1, &[(b"refs/heads/a".as_slice(), absent)])));
        let error = block_on(read_refs(&source, &root)).unwrap_err();
        assert_eq!(error.to_string(), format!("missing chunk {absent}"));
    }
}
