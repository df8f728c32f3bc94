//! Table rules: on branches a table rule covers, which tables a push changes,
//! in data or schema, judged table by table.
//!
//! What a push changes on a branch is measured from the newest commit the
//! store already had on the way to the new head: the old head when the
//! branch moves (fast-forward or force), the fork point when it is created
//! (the highest old commit among the new commits' parents; nothing at all
//! for an unrelated history). Commits in between that cancel out do not
//! count. A branch's working set is measured from the working set it
//! replaces (working root against working root, staged against staged), or
//! for a new one from its branch head. See [`crate::storage::tables`] for
//! what is data and what is schema.

use std::collections::HashSet;

use crate::authn::Principal;
use crate::config::auth::TableChangeKind;
use crate::storage::ancestry::{new_commits, read_commit, read_working_set, MAX_WALK};
use crate::storage::refs::{branch_heads, RefKind};
use crate::storage::source::ChunkSource;
use crate::storage::tables::{changed_tables, merge, TableChange};
use crate::storage::{Address, StorageError};

use super::rules::{Decision, PushRules};
use super::{branch_head, Change, Side};

/// What the table rules saw of one ref change.
#[derive(Debug, Default)]
pub struct TableReview {
    /// The tables the change touches (empty when no table rule covers the ref).
    pub tables: Vec<TableChange>,
    /// Each table rule verdict reached, for the per-rule counter.
    pub decisions: Vec<Decision>,
}

/// Judges the tables each allowed branch or working-set change touches,
/// replacing its decision in `decisions` with the first table verdict that
/// refuses (or that a bypass or evaluate-mode rule marks); one review per change.
pub async fn check_table_changes<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[Change],
    decisions: &mut [Decision],
    rules: &PushRules,
    database: &str,
    pusher: &Principal,
) -> Result<Vec<TableReview>, StorageError> {
    let mut reviews = Vec::with_capacity(changes.len());
    for (change, decision) in changes.iter().zip(decisions.iter_mut()) {
        let (kind, branch) = RefKind::of(&change.name);
        let covered = matches!(kind, RefKind::Branch | RefKind::WorkingSet)
            && change.new.is_some()
            && decision.allowed
            && rules.has_table_rules(database, branch);
        if !covered {
            reviews.push(TableReview::default());
            continue;
        }
        let tables = match touched_tables(source, old_root, change, changes).await? {
            Some(tables) => tables,
            None => {
                let why = format!("more than {MAX_WALK} new commits to find where branch {branch:?} forks");
                *decision = Decision::from("table rules", false, format!("table rules ({why})"));
                reviews.push(TableReview::default());
                continue;
            }
        };
        let review = judge_tables(rules, pusher, database, branch, tables);
        apply(decision, &review);
        reviews.push(review);
    }
    Ok(reviews)
}

/// Puts the first table verdict that refuses (else one a bypass or an
/// evaluate-mode rule marks) in place of the ref's `decision`.
/// A ref change already refused keeps its own refusal.
pub fn apply(decision: &mut Decision, review: &TableReview) {
    if !decision.allowed {
        return;
    }
    let refusing = review.decisions.iter().find(|d| !d.allowed);
    if let Some(table) = refusing.or_else(|| marked(&review.decisions)) {
        *decision = merged(decision, table);
    }
}

/// Every table verdict on `tables`, in order: per table, schema then data.
pub fn judge_tables(
    rules: &PushRules,
    pusher: &Principal,
    database: &str,
    branch: &str,
    tables: Vec<TableChange>,
) -> TableReview {
    let decisions = tables
        .iter()
        .flat_map(|table| {
            let kinds = [(table.schema, TableChangeKind::Schema), (table.data, TableChangeKind::Data)];
            kinds.into_iter().filter(|(changed, _)| *changed).map(move |(_, kind)| (table, kind))
        })
        .filter_map(|(table, kind)| rules.decide_table(pusher, database, branch, &table.name, kind))
        .collect();
    TableReview { tables, decisions }
}

/// The first allowed verdict worth carrying to the audit log: a bypass, or
/// what evaluate-mode rules would have refused.
fn marked(decisions: &[Decision]) -> Option<&Decision> {
    decisions.iter().find(|d| d.bypassed.is_some()).or_else(|| decisions.iter().find(|d| d.would_refuse.is_some()))
}

/// `table`'s verdict in place of the ref's, keeping what the ref's verdict
/// already marked when the table's marks nothing of its own.
fn merged(reference: &Decision, table: &Decision) -> Decision {
    let mut decision = table.clone();
    if decision.allowed {
        decision.would_refuse = decision.would_refuse.or_else(|| reference.would_refuse.clone());
        decision.bypassed = decision.bypassed.or_else(|| reference.bypassed.clone());
    }
    decision
}

/// The tables `change` touches; `None` when a new branch's fork point lies
/// further back than the walk may go.
async fn touched_tables<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    change: &Change,
    changes: &[Change],
) -> Result<Option<Vec<TableChange>>, StorageError> {
    let Some(new) = change.new else { return Ok(Some(Vec::new())) };
    let (kind, branch) = RefKind::of(&change.name);
    let pairs = if kind == RefKind::Branch {
        let base = match change.old {
            Some(old) => Some(old),
            None => match fork_point(source, old_root, &new).await? {
                ForkPoint::Commit(commit) => Some(commit),
                ForkPoint::Unrelated => None,
                ForkPoint::TooFar => return Ok(None),
            },
        };
        vec![(commit_root(source, base).await?, commit_root(source, Some(new)).await?)]
    } else {
        let after = read_working_set(source, &new).await?;
        let (working, staged) = match change.old {
            Some(old) => {
                let before = read_working_set(source, &old).await?;
                (before.working_root, before.staged_root)
            }
            None => {
                let head = commit_root(
                    source,
                    branch_head(
                        source,
                        old_root,
                        branch,
                        changes.iter().map(|c| (c.name.as_str(), c.old, c.new)),
                        Side::After,
                    )
                    .await?,
                )
                .await?;
                (Some(head), Some(head))
            }
        };
        vec![(working, after.working_root), (staged, after.staged_root)]
            .into_iter()
            .map(|(before, after)| (before.unwrap_or(Address::EMPTY), after.unwrap_or(Address::EMPTY)))
            .collect()
    };
    let mut touched = Vec::new();
    for (before, after) in pairs {
        touched.extend(changed_tables(source, &before, &after).await?);
    }
    Ok(Some(merge(touched)))
}

enum ForkPoint {
    Commit(Address),
    /// The new history shares no commit with the store.
    Unrelated,
    TooFar,
}

/// The newest commit the store already had among the new history's parents
/// (the new head itself, when it is not new).
async fn fork_point<S: ChunkSource>(source: &S, old_root: &Address, head: &Address) -> Result<ForkPoint, StorageError> {
    let heads = branch_heads(source, old_root).await?;
    let Some(added) = new_commits(source, head, &heads, MAX_WALK).await? else { return Ok(ForkPoint::TooFar) };
    if added.is_empty() {
        return Ok(ForkPoint::Commit(*head));
    }
    let new: HashSet<Address> = added.iter().map(|(address, _)| *address).collect();
    let mut newest: Option<(u64, Address)> = None;
    for parent in added.iter().flat_map(|(_, commit)| &commit.parents).filter(|p| !new.contains(*p)) {
        let height = read_commit(source, parent).await?.height;
        newest = newest.max(Some((height, *parent)));
    }
    Ok(newest.map_or(ForkPoint::Unrelated, |(_, commit)| ForkPoint::Commit(commit)))
}

/// The root value of `commit`; all zeros (no tables) for no commit.
async fn commit_root<S: ChunkSource>(source: &S, commit: Option<Address>) -> Result<Address, StorageError> {
    match commit {
        Some(commit) => Ok(read_commit(source, &commit).await?.root.unwrap_or(Address::EMPTY)),
        None => Ok(Address::EMPTY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::PushOp;
    use crate::config::Config;
    use crate::storage::build::{address_map, commit_of, message, root_value, store_root, table, Value};
    use crate::storage::MemorySource;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn rules() -> PushRules {
        let text = "[upstream]\naddress = \"h:1\"\n[auth]\n[[auth.table_rules]]\nname = \"prices\"\n\
                    branches = [\"main\", \"rel*\"]\ntables = [\"prices\"]\nusers = [\"mia\"]\n";
        let auth = Config::parse(text).unwrap().auth.unwrap();
        PushRules::build(&auth).unwrap()
    }

    /// A root value with one `prices` table at `version`.
    fn prices(source: &mut MemorySource, version: u8) -> Address {
        let table = source.insert(table(Address::of(b"schema"), &[version; 8], 0));
        source.insert(root_value(&address_map(0, &[(b"prices".as_slice(), table)]), None))
    }

    fn working_set(source: &mut MemorySource, working: Address, staged: Address) -> Address {
        source.insert(message("WRST", &[(4, Value::Bytes(&working.0)), (6, Value::Bytes(&staged.0))]))
    }

    fn change(name: &str, old: Option<Address>, new: Option<Address>, op: PushOp) -> Change {
        Change { name: name.into(), kind: RefKind::of(name).0, old, new, op }
    }

    fn judged(source: &MemorySource, old_root: &Address, changes: &[Change]) -> Vec<Decision> {
        let dan = Principal { name: "dan".into(), groups: Vec::new(), expires: None, email: None };
        let mut decisions: Vec<Decision> =
            changes.iter().map(|_| Decision::from("default", true, "the default rule".into())).collect();
        block_on(check_table_changes(source, old_root, changes, &mut decisions, &rules(), "db", &dan)).unwrap();
        decisions
    }

    /// A crafted Commit that moves only `main`'s working set still changes
    /// `prices` on `main`, working and staged roots alike.
    #[test]
    fn a_working_set_is_judged_against_the_one_it_replaces() {
        let mut source = MemorySource::new();
        let (v1, v2) = (prices(&mut source, 1), prices(&mut source, 2));
        let old_set = working_set(&mut source, v1, v1);
        for new_set in [working_set(&mut source, v2, v1), working_set(&mut source, v1, v2)] {
            let moved = change("workingSets/heads/main", Some(old_set), Some(new_set), PushOp::Force);
            let decision = &judged(&source, &Address::EMPTY, &[moved])[0];
            assert!(!decision.allowed && decision.rule.contains("data of table \"prices\""), "{decision:?}");
        }
        let same =
            change("workingSets/heads/main", Some(old_set), Some(working_set(&mut source, v1, v1)), PushOp::Move);
        assert!(judged(&source, &Address::EMPTY, &[same])[0].allowed);
    }

    /// A new protected branch is measured from its fork point: one made at
    /// an existing commit changes nothing; one with a new commit on top changes what that commit does.
    #[test]
    fn a_new_branch_is_judged_from_its_fork_point() {
        let mut source = MemorySource::new();
        let (v1, v2) = (prices(&mut source, 1), prices(&mut source, 2));
        let base = source.insert(commit_of(v1, 1, &[], Address::EMPTY));
        let on_top = source.insert(commit_of(v2, 2, &[base], Address::EMPTY));
        let store = source.insert(store_root(&address_map(0, &[(b"refs/heads/dev".as_slice(), base)])));
        let at_base = change("refs/heads/rel1", None, Some(base), PushOp::Create);
        assert!(judged(&source, &store, &[at_base])[0].allowed, "a branch at an existing commit changes nothing");
        let ahead = change("refs/heads/rel2", None, Some(on_top), PushOp::Create);
        let decision = &judged(&source, &store, &[ahead])[0];
        assert!(!decision.allowed && decision.rule.contains("prices"), "{decision:?}");
        let unrelated = source.insert(commit_of(v1, 1, &[], Address::EMPTY));
        let fresh_store = source.insert(store_root(&address_map(0, &[])));
        let new_history = change("refs/heads/rel3", None, Some(unrelated), PushOp::Create);
        assert!(!judged(&source, &fresh_store, &[new_history])[0].allowed, "an unrelated history creates prices");
    }
}
