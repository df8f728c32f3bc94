//! A root's refs, and what changed between two roots.
//!
//! The ref map is an `ADRM` prolly tree whose root node is embedded in the
//! `StoreRoot`; past roughly 80 refs it spans several chunks. It is read and
//! diffed by [`address_map`](super::address_map), which skips what both
//! roots share: a push that moves one branch among a thousand reads the two
//! roots and a few nodes per level. The old root is the upstream's current
//! state and is trusted as far as it is shared with the new one.

use super::address_map::{diff_maps, read_map};
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
    let node = match root.is_empty() {
        true => AddressMapNode::default(),
        false => StoreRoot::parse(root, &get_one(&counting, root).await?)?.refs,
    };
    let entries = read_map(&counting, root, &node).await?;
    let refs = entries.into_iter().map(|(key, target)| Ok(Ref { name: ref_name(root, key)?, target }));
    Ok(RefMap { refs: refs.collect::<Result<_>>()?, chunks_read: counting.chunks() })
}

/// The heads of every branch of `root`.
pub async fn branch_heads<S: ChunkSource>(source: &S, root: &Address) -> Result<Vec<Address>> {
    let refs = read_refs(source, root).await?;
    Ok(refs.refs.iter().filter(|r| RefKind::of(&r.name).0 == RefKind::Branch).map(|r| r.target).collect())
}

/// Every ref `new_root` adds, removes or moves relative to `old_root`.
pub async fn diff<S: ChunkSource>(source: &S, old_root: &Address, new_root: &Address) -> Result<RefDiff> {
    if old_root == new_root {
        return Ok(RefDiff { changes: Vec::new(), chunks_read: 0, batches: 0 });
    }
    let counting = CountingSource::new(source);
    let roots: Vec<Address> = [old_root, new_root].into_iter().filter(|a| !a.is_empty()).copied().collect();
    let chunks = get_all(&counting, &roots).await?;
    let ref_map = |root: &Address| match root.is_empty() {
        true => Ok(AddressMapNode::default()),
        false => StoreRoot::parse(root, &chunks[root]).map(|r| r.refs),
    };
    let (old, new) = (ref_map(old_root)?, ref_map(new_root)?);
    let entries = diff_maps(&counting, (old_root, &old), (new_root, &new)).await?;
    let changes = entries.into_iter().map(|(key, old, new)| Ok(RefChange { name: ref_name(new_root, key)?, old, new }));
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
