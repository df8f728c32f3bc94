//! Rules about the commits a push adds, not only the refs it moves: linear
//! history keeps merge commits off matching branches.
//!
//! "Added" is judged against what the branch held: a moved branch is judged
//! on the commits reachable from its new head and not from its old one; a
//! new branch on those reachable from no branch a linear-history rule
//! already kept (other branches do not count, or merges pushed to a feature
//! branch first could then be fast-forwarded onto a protected one).

use crate::storage::ancestry::{new_commits, MAX_WALK};
use crate::storage::refs::{read_refs, RefKind};
use crate::storage::source::ChunkSource;
use crate::storage::{Address, StorageError};

use super::rules::{Decision, PushRules};
use super::Change;

/// Refuses, in `decisions`, every allowed branch change that adds a merge
/// commit where a `linear_history` rule applies.
pub async fn check_linear_history<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[Change],
    decisions: &mut [Decision],
    rules: &PushRules,
    database: &str,
) -> Result<(), StorageError> {
    let mut kept_linear: Option<Vec<Address>> = None;
    for (change, decision) in changes.iter().zip(decisions.iter_mut()) {
        let (RefKind::Branch, Some(new)) = (change.kind, change.new) else { continue };
        let Some(rule) = rules.linear_history_rule(database, RefKind::of(&change.name).1) else { continue };
        if !decision.allowed {
            continue;
        }
        let heads = match change.old {
            Some(old) => vec![old],
            None => {
                if kept_linear.is_none() {
                    kept_linear = Some(linear_heads(source, old_root, rules, database).await?);
                }
                kept_linear.clone().unwrap_or_default()
            }
        };
        let problem = match new_commits(source, &new, &heads, MAX_WALK).await? {
            None => Some(format!("more than {MAX_WALK} new commits to check")),
            Some(added) => added
                .iter()
                .find(|(_, commit)| commit.parents.len() > 1)
                .map(|(address, _)| format!("adds merge commit {address}")),
        };
        if let Some(problem) = problem {
            *decision = Decision::from(rule, false, format!("rule {rule:?} (linear history: {problem})"));
        }
    }
    Ok(())
}

/// The heads of the branches of `root` that a linear-history rule covers.
async fn linear_heads<S: ChunkSource>(
    source: &S,
    root: &Address,
    rules: &PushRules,
    database: &str,
) -> Result<Vec<Address>, StorageError> {
    let refs = read_refs(source, root).await?;
    let covered = |name: &str| match RefKind::of(name) {
        (RefKind::Branch, branch) => rules.linear_history_rule(database, branch).is_some(),
        _ => false,
    };
    Ok(refs.refs.iter().filter(|r| covered(&r.name)).map(|r| r.target).collect())
}
