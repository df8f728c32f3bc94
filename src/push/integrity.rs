//! What holds for every Commit, whoever pushes it and whatever the rules say:
//!
//! - a new branch or tag has a name Dolt itself would create
//!   (`go/libraries/doltcore/ref/branchname.go`, `tag_ref.go`,
//!   `go/store/datas/dataset.go` `ValidateDatasetId`);
//! - a new ref does not differ from an existing one of its kind only in case:
//!   Dolt finds branches and tags with `strings.EqualFold`, first match in byte
//!   order (`go/libraries/doltcore/doltdb/doltdb.go` `HasBranch`), so `MAIN`
//!   would shadow `main` for everything that resolves names that way;
//! - every ref points at the kind of object Dolt expects under its name:
//!   branches at commits, tags at tags that name commits, working sets at
//!   working sets whose roots exist;
//! - every commit the push adds to a branch's or tag's history carries the
//!   height and parent closure Dolt would write (`storage::lineage`), since
//!   Dolt's merges trust both.

use std::collections::HashMap;

use super::Change;
use crate::config::auth::PushOp;
use crate::error::GatewayError;
use crate::storage::ancestry::{new_commits, tag_commit, MAX_WALK};
use crate::storage::lineage::check_lineage;
use crate::storage::message::{file_id, Commit, Tag, WorkingSet};
use crate::storage::refs::{branch_heads, read_refs, RefKind};
use crate::storage::source::get_all;
use crate::storage::{Address, ChunkSource, StorageError};

/// Checks `changes` (a Commit's, classified) against the old root's refs.
pub async fn check<S: ChunkSource>(source: &S, old_root: &Address, changes: &[Change]) -> Result<(), GatewayError> {
    for change in changes.iter().filter(|c| c.op == PushOp::Create) {
        check_new_name(change)?;
    }
    check_case_collisions(source, old_root, changes).await?;
    check_kinds(source, changes).await?;
    check_new_lineage(source, old_root, changes).await
}

fn refused(reason: String) -> GatewayError {
    GatewayError::RefNotAllowed(reason)
}

fn check_new_name(change: &Change) -> Result<(), GatewayError> {
    let (kind, short) = RefKind::of(&change.name);
    let problem = match kind {
        RefKind::Branch | RefKind::WorkingSet => branch_name_problem(short),
        RefKind::Tag => tag_name_problem(short),
        _ => None,
    }
    .or_else(|| dataset_id_problem(&change.name));
    match problem {
        Some(why) => Err(refused(format!("{} is not a name Dolt allows: {why}", crate::authn::shown(&change.name)))),
        None => Ok(()),
    }
}

/// Dolt's `IsValidUserBranchName` beyond the dataset-id rules. Every case
/// of `head` is refused, not just `HEAD` and `head`: Dolt reads any of them
/// as `HEAD` in a commit spec, so such a branch could not be named.
fn branch_name_problem(name: &str) -> Option<&'static str> {
    if name.eq_ignore_ascii_case("head") {
        return Some("HEAD names the current commit");
    }
    common_ref_problem(name)
}

/// Dolt's `IsValidTagName` and `IsValidTagRef`.
fn tag_name_problem(name: &str) -> Option<&'static str> {
    if name == "head" {
        return Some("head names the current commit");
    }
    if name.contains(['\t', ' ']) {
        return Some("tag names have no spaces");
    }
    common_ref_problem(name)
}

/// Rules branch and tag names share.
fn common_ref_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "HEAD" || name == "-" {
        return Some("empty, HEAD and - are reserved");
    }
    if name.len() == 32 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)) {
        return Some("it would read as a commit hash");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("empty path components");
    }
    None
}

/// `ValidateDatasetId` (git's ref rules, per `/`-separated component).
fn dataset_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id == "@" {
        return Some("empty, or @");
    }
    if !id.is_ascii() {
        return Some("only ASCII characters");
    }
    if id.bytes().any(|b| b < 0x20 || b == 0x7f || b" *:?[\\^~".contains(&b)) {
        return Some("no control characters, spaces or any of * : ? [ \\ ^ ~");
    }
    if id.contains("..") || id.contains("@{") {
        return Some("no .. or @{");
    }
    if id.ends_with('/') || id.ends_with('.') {
        return Some("it may not end with / or .");
    }
    if id.split('/').any(|component| component.starts_with('.') || component.ends_with(".lock")) {
        return Some("no component starting with . or ending in .lock");
    }
    None
}

/// The kinds whose names Dolt looks up case-insensitively.
fn folded_kind(kind: RefKind) -> bool {
    matches!(kind, RefKind::Branch | RefKind::Tag | RefKind::WorkingSet)
}

async fn check_case_collisions<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[Change],
) -> Result<(), GatewayError> {
    let created: Vec<&Change> =
        changes.iter().filter(|c| c.op == PushOp::Create && folded_kind(RefKind::of(&c.name).0)).collect();
    if created.is_empty() {
        return Ok(());
    }
    let deleted: Vec<&str> = changes.iter().filter(|c| c.op == PushOp::Delete).map(|c| c.name.as_str()).collect();
    let old = read_refs(source, old_root).await.map_err(super::inspection_error)?;
    // Refs the new root keeps, by folded name: the old ones not deleted, and the created ones.
    let mut kept: HashMap<String, &str> = HashMap::new();
    for name in old.refs.iter().map(|r| r.name.as_str()).filter(|name| !deleted.contains(name)) {
        kept.insert(name.to_ascii_lowercase(), name);
    }
    for change in created {
        let existing = kept.insert(change.name.to_ascii_lowercase(), &change.name);
        if let Some(existing) = existing.filter(|existing| *existing != change.name) {
            return Err(refused(format!(
                "{} differs from {} only in case, and Dolt looks names up ignoring case",
                crate::authn::shown(&change.name),
                crate::authn::shown(existing)
            )));
        }
    }
    Ok(())
}

/// Checks the commits reachable from the commits the changed refs now name
/// and from no branch of `old_root`: those the push adds (and any it re-sends).
async fn check_new_lineage<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[Change],
) -> Result<(), GatewayError> {
    let mut heads = Vec::new();
    for change in changes {
        let Some(new) = change.new else { continue };
        match RefKind::of(&change.name).0 {
            RefKind::Branch | RefKind::Remote | RefKind::Internal | RefKind::Workspace => heads.push(new),
            RefKind::Tag => heads.push(tag_commit(source, &new).await.map_err(super::inspection_error)?),
            _ => {}
        }
    }
    if heads.is_empty() {
        return Ok(());
    }
    let old_heads = match old_root.is_empty() {
        true => Vec::new(),
        false => branch_heads(source, old_root).await.map_err(super::inspection_error)?,
    };
    let mut added: HashMap<Address, Commit> = HashMap::new();
    for head in heads {
        let commits = new_commits(source, &head, &old_heads, MAX_WALK).await.map_err(super::inspection_error)?;
        let Some(commits) = commits else {
            return Err(refused(format!(
                "more than {MAX_WALK} new commits to check in one push; doltgate checks at most that many"
            )));
        };
        added.extend(commits);
    }
    let added: Vec<(Address, Commit)> = added.into_iter().collect();
    check_lineage(source, &added).await.map_err(|err| match err {
        StorageError::FalseLineage { .. } => refused(err.to_string()),
        other => super::inspection_error(other),
    })
}

/// The file id every ref of a kind must point at.
fn expected_file_id(kind: RefKind) -> Option<&'static [u8; 4]> {
    match kind {
        RefKind::Branch | RefKind::Remote | RefKind::Internal | RefKind::Workspace => Some(b"DCMT"),
        RefKind::Tag => Some(b"DTAG"),
        RefKind::WorkingSet | RefKind::WorkspaceWorkingSet => Some(b"WRST"),
        RefKind::Stash => Some(b"SLST"),
        RefKind::Statistics => Some(b"STAT"),
        RefKind::Tuple => Some(b"TUPL"),
        RefKind::Other => None,
    }
}

async fn check_kinds<S: ChunkSource>(source: &S, changes: &[Change]) -> Result<(), GatewayError> {
    let targets: Vec<(RefKind, &str, Address)> =
        changes.iter().filter_map(|c| c.new.map(|new| (RefKind::of(&c.name).0, c.name.as_str(), new))).collect();
    let addresses: Vec<Address> = targets.iter().map(|(_, _, a)| *a).collect();
    let chunks = get_all(source, &addresses).await.map_err(super::inspection_error)?;
    let mut referenced: Vec<(Address, &'static [u8; 4])> = Vec::new();
    for (kind, name, address) in &targets {
        let Some(expected) = expected_file_id(*kind) else { continue };
        let chunk = &chunks[address];
        expect_kind(name, address, chunk, expected)?;
        referenced.extend(referenced_by(*kind, address, chunk).map_err(super::inspection_error)?);
    }
    // What commits, tags and working sets name must exist, as the right kind.
    let addresses: Vec<Address> = referenced.iter().map(|(a, _)| *a).collect();
    let named = get_all(source, &addresses).await.map_err(super::inspection_error)?;
    for (address, expected) in &referenced {
        expect_kind(&address.to_string(), address, &named[address], expected)?;
    }
    Ok(())
}

fn expect_kind(what: &str, address: &Address, chunk: &[u8], expected: &[u8; 4]) -> Result<(), GatewayError> {
    let found = file_id(address, chunk).map_err(super::inspection_error)?;
    if &found != expected {
        return Err(GatewayError::InspectionFailed(format!(
            "{} points at a {} message, where Dolt expects {}",
            crate::authn::shown(what),
            String::from_utf8_lossy(&found),
            String::from_utf8_lossy(expected)
        )));
    }
    Ok(())
}

/// A root value's file id (`go/gen/fb/serial/fileidentifiers.go`).
const ROOT_VALUE: &[u8; 4] = b"RTVL";

/// The objects a ref's target names that must exist for the ref to work, and their kinds.
fn referenced_by(
    kind: RefKind,
    address: &Address,
    chunk: &[u8],
) -> Result<Vec<(Address, &'static [u8; 4])>, StorageError> {
    Ok(match kind {
        RefKind::Tag => {
            let commit = Tag::parse(address, chunk)?.commit.ok_or_else(|| StorageError::BadFlatbuffer {
                id: "DTAG",
                address: *address,
                reason: "the tag names no commit".into(),
            })?;
            vec![(commit, b"DCMT")]
        }
        RefKind::WorkingSet | RefKind::WorkspaceWorkingSet => {
            let set = WorkingSet::parse(address, chunk)?;
            let working = set.working_root.ok_or_else(|| StorageError::BadFlatbuffer {
                id: "WRST",
                address: *address,
                reason: "the working set has no working root".into(),
            })?;
            std::iter::once(working).chain(set.staged_root).map(|root| (root, ROOT_VALUE)).collect()
        }
        RefKind::Branch => {
            let commit = Commit::parse(address, chunk)?;
            commit.root.into_iter().map(|root| (root, ROOT_VALUE)).collect()
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str) -> Change {
        Change { name: name.into(), kind: RefKind::of(name).0, old: None, new: None, op: PushOp::Create }
    }

    #[test]
    fn new_names_follow_dolts_rules() {
        for good in ["refs/heads/main", "refs/heads/feature/x-1", "refs/heads/-foo", "refs/tags/v1.2", "refs/tags/a@b"]
        {
            assert!(check_new_name(&change(good)).is_ok(), "{good}");
        }
        let bad = [
            "refs/heads/HEAD",
            "refs/heads/head",
            "refs/heads/Head",
            "refs/heads/-",
            "refs/heads/0123456789abcdefghijklmnopqrstuv",
            "refs/heads/a//b",
            "refs/heads/a/",
            "refs/heads/a..b",
            "refs/heads/a@{1}",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/x.",
            "refs/heads/ma\u{ef}n",
            "refs/heads/a b",
            "refs/heads/a:b",
            "refs/heads/a\u{7f}",
            "refs/tags/v 1",
            "refs/tags/head",
            "refs/tags/HEAD",
            "workingSets/heads/HEAD",
        ];
        for bad in bad {
            let error = check_new_name(&change(bad)).unwrap_err();
            assert!(error.to_string().contains("not a name Dolt allows"), "{bad}: {error}");
        }
    }
}
