//! Rules about the commits a push adds, not only the refs it moves: linear
//! history keeps merge commits off matching branches; author e-mails and
//! messages must match what the rules ask.
//!
//! "Added" is judged against what the branch held: a moved branch is judged
//! on the commits reachable from its new head and not from its old one (so a
//! commit pushed to a feature branch first is still judged when a protected
//! branch is fast-forwarded to it); a new branch on those reachable from no
//! branch of the store, since judging history every branch already shares
//! would refuse a branch made from an unprotected one. Who may create a
//! protected branch at all is the push rules' `create`.

use std::collections::HashMap;

use crate::authn::Principal;
use crate::storage::ancestry::{fetch_commits, new_commits, MAX_WALK};
use crate::storage::message::Commit;
use crate::storage::refs::{branch_heads, RefKind};
use crate::storage::source::ChunkSource;
use crate::storage::{Address, StorageError};

use super::rules::{Decision, PushRules};
use super::Change;

/// Refuses, in `decisions`, every allowed branch change that adds a commit
/// a rule on commits of that branch refuses (the first such commit decides).
pub async fn check_new_commits<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[Change],
    decisions: &mut [Decision],
    rules: &PushRules,
    database: &str,
    pusher: &Principal,
) -> Result<(), StorageError> {
    let mut old_branches: Option<Vec<Address>> = None;
    for (change, decision) in changes.iter().zip(decisions.iter_mut()) {
        let (RefKind::Branch, Some(new)) = (change.kind, change.new) else { continue };
        let asked = rules.commit_rules(database, RefKind::of(&change.name).1);
        if asked.is_empty() || !decision.allowed {
            continue;
        }
        let heads: &[Address] = match &change.old {
            Some(old) => std::slice::from_ref(old),
            None => {
                if old_branches.is_none() {
                    old_branches = Some(branch_heads(source, old_root).await?);
                }
                old_branches.as_deref().unwrap_or_default()
            }
        };
        let added = new_commits(source, &new, heads, MAX_WALK).await?;
        let parent_roots = match &added {
            Some(added) if asked.iter().any(|(_, commits)| commits.needs_parent_root()) => {
                first_parent_roots(source, added).await?
            }
            _ => HashMap::new(),
        };
        let refusal = asked.iter().find_map(|(rule, commits)| {
            let problem = match &added {
                None => Some(format!("more than {MAX_WALK} new commits to check")),
                Some(added) => added.iter().find_map(|(address, commit)| {
                    let parent_root = commit.parents.first().and_then(|parent| parent_roots.get(parent));
                    commits.problem(pusher, address, commit, parent_root)
                }),
            };
            problem.map(|problem| Decision::from(rule, false, format!("rule {rule:?} ({problem})")))
        });
        if let Some(refusal) = refusal {
            *decision = rules.bypass(pusher, refusal);
        }
    }
    Ok(())
}

/// The root value of each added commit's first parent, by parent address:
/// read from `added` where the parent is new too, else from the store.
async fn first_parent_roots<S: ChunkSource>(
    source: &S,
    added: &[(Address, Commit)],
) -> Result<HashMap<Address, Address>, StorageError> {
    let mut commits: HashMap<Address, Commit> = added.iter().cloned().collect();
    let missing: Vec<Address> =
        added.iter().filter_map(|(_, c)| c.parents.first()).filter(|p| !commits.contains_key(*p)).copied().collect();
    fetch_commits(source, &missing, &mut commits).await?;
    Ok(commits.into_iter().filter_map(|(address, commit)| commit.root.map(|root| (address, root))).collect())
}
