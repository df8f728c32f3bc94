//! `ADRM` prolly trees (name → address maps) whose root node is embedded in
//! another message: a store root's ref map, a root value's table map; and,
//! read through the same shape, other prolly trees such as commit closures.
//!
//! Both reading and diffing expand the tree one level at a time, fetching
//! all the nodes that level needs in one batch. The diff expands only
//! subtrees that differ: a subtree with the same address covering the same
//! key range on both sides holds the same entries, so it is skipped unread.
//!
//! Hostile trees: every node read is checked to be ordered, to sit inside the
//! key range its parent gives it, to end exactly at its parent's separator
//! key, and to be one level below its parent.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::message::AddressMapNode;
use super::source::{get_all, ChunkSource};
use super::{Address, Result, StorageError};

/// Every entry of the map whose root node is `node` (embedded in the
/// message at `holder`, named in errors), sorted by key.
pub async fn read_map<S: ChunkSource>(
    source: &S,
    holder: &Address,
    node: &AddressMapNode,
) -> Result<Vec<(Key, Address)>> {
    let new_items = items(holder, node, None, None, None)?;
    let (_, entries) = expand_pair(source, Vec::new(), new_items, AddressMapNode::parse).await?;
    Ok(entries)
}

/// Every key the map rooted at `new` adds (old `None`), removes (new `None`)
/// or points elsewhere, relative to the map rooted at `old`, sorted by key.
/// Each root node comes with the address of the message it is embedded in.
pub async fn diff_maps<S: ChunkSource>(
    source: &S,
    old: (&Address, &AddressMapNode),
    new: (&Address, &AddressMapNode),
) -> Result<Vec<(Key, Option<Address>, Option<Address>)>> {
    let old_items = items(old.0, old.1, None, None, None)?;
    let new_items = items(new.0, new.1, None, None, None)?;
    let (old, new) = expand_pair(source, old_items, new_items, AddressMapNode::parse).await?;
    Ok(merge(old, new).collect())
}

/// Reads one node of a tree that has the shape of an address map: sorted
/// keys, and one address per key (a child, or a leaf's value).
pub type ParseNode = fn(&Address, &[u8]) -> Result<AddressMapNode>;

/// [`diff_maps`] for trees whose root nodes are chunks of their own
/// (`None`: the empty tree), read with `parse`.
pub async fn diff_trees<S: ChunkSource>(
    source: &S,
    old: Option<Address>,
    new: Option<Address>,
    parse: ParseNode,
) -> Result<Vec<(Key, Option<Address>, Option<Address>)>> {
    let roots: Vec<Address> = old.iter().chain(&new).copied().collect();
    let chunks = get_all(source, &roots).await?;
    let root_items = |root: Option<Address>| -> Result<Vec<Item>> {
        match root {
            Some(address) => items(&address, &parse(&address, &chunks[&address])?, None, None, None),
            None => Ok(Vec::new()),
        }
    };
    let (old, new) = expand_pair(source, root_items(old)?, root_items(new)?, parse).await?;
    Ok(merge(old, new).collect())
}

pub type Key = Vec<u8>;

/// A leaf entry, or a subtree not yet read that holds exactly the keys in
/// `(low, high]` (`low` `None`: from the start; `high` `None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Entry(Key, Address),
    Subtree { address: Address, level: u8, low: Option<Key>, high: Option<Key> },
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
    parse: ParseNode,
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
        let nodes = parse_nodes(&chunks, parse)?;
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

fn parse_nodes(chunks: &HashMap<Address, Bytes>, parse: ParseNode) -> Result<HashMap<Address, AddressMapNode>> {
    chunks.iter().map(|(address, chunk)| Ok((*address, parse(address, chunk)?))).collect()
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
