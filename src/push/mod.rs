//! Per-branch push permissions: every Commit (the RPC that swaps a database's
//! whole root) is read before it is forwarded. doltgate registers the
//! Commit's table files upstream, reads the old (`last`) and new (`current`)
//! roots through the upstream, diffs their ref maps node by node, classifies
//! each change (branch create / fast-forward / force / delete, tag create /
//! move / delete, working set, other refs), checks what must hold for any
//! push ([`integrity`]) and judges each change by the [`rules`] (and, when
//! mirrored, Dolt's own [`branch_control`] rows). Any refused change refuses
//! the whole Commit; any failure to inspect refuses it too (fail closed).
//! Every Commit leaves one audit line.

mod authorship;
pub mod branch_control;
mod collation;
pub mod explain;
mod history;
pub mod integrity;
pub mod rules;
mod signatures;
mod tables;

use bytes::Bytes;
use http::HeaderValue;
use prost::Message;

use crate::authn::Principal;
use crate::cluster::Endpoint;
use crate::config::auth::PushOp;
use crate::error::GatewayError;
use crate::remotesapi::proto::CommitRequest;
use crate::storage::refs::{diff, RefChange, RefKind};
use crate::storage::source::CachingSource;
use crate::storage::{ancestry, Address, ChunkSource, StorageError};
use crate::upstream::repo::{UpstreamChunks, UpstreamRepo};
use rules::{Decision, PushRules, Target};

/// One ref change of a Commit, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub kind: RefKind,
    pub old: Option<Address>,
    pub new: Option<Address>,
    pub op: PushOp,
}

impl Change {
    /// How a person would say it: "force-push to refs/heads/main".
    pub fn describe(&self) -> String {
        let verb = match (self.kind, self.op) {
            (_, PushOp::Create) => "create",
            (_, PushOp::Delete) => "delete",
            (_, PushOp::FastForward) => "fast-forward",
            (RefKind::WorkingSet, PushOp::Force) => "discard the uncommitted changes of",
            (_, PushOp::Force) => "force-push to",
            (RefKind::WorkingSet, PushOp::Move) => "update",
            (_, PushOp::Move) => "move",
        };
        format!("{verb} {}", self.name)
    }
}

/// Classifies each change. A branch update is a fast-forward only if the
/// old commit is proven an ancestor of the new one. A working set that moves
/// is a `force` when the one it replaces holds uncommitted changes, else a
/// plain `move`.
pub async fn classify<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    changes: &[RefChange],
) -> Result<Vec<Change>, StorageError> {
    let mut classified = Vec::with_capacity(changes.len());
    for change in changes {
        let (kind, short) = RefKind::of(&change.name);
        let op = match (change.old, change.new) {
            (None, Some(_)) => PushOp::Create,
            (Some(_), None) => PushOp::Delete,
            (Some(old), Some(new)) if kind == RefKind::Branch => {
                if ancestry::is_ancestor(source, &old, &new).await? {
                    PushOp::FastForward
                } else {
                    PushOp::Force
                }
            }
            (Some(old), Some(_)) if kind == RefKind::WorkingSet => {
                match working_set_is_dirty(source, old_root, short, &old, changes).await? {
                    true => PushOp::Force,
                    false => PushOp::Move,
                }
            }
            _ => PushOp::Move,
        };
        classified.push(Change { name: change.name.clone(), kind, old: change.old, new: change.new, op });
    }
    Ok(classified)
}

/// Dolt's own test before a push replaces a working set
/// (`go/store/datas/database_common.go`, `doFastForward`): dirty when its
/// staged root differs from its working root or from the branch head's root.
/// Dolt lets a plain push past a working set whose only changes are new
/// tables that `dolt_ignore` ignores; doltgate does not read table data, so
/// such a working set counts as dirty here (fail closed: it takes `force`).
async fn working_set_is_dirty<S: ChunkSource>(
    source: &S,
    old_root: &Address,
    branch: &str,
    working_set: &Address,
    changes: &[RefChange],
) -> Result<bool, StorageError> {
    let set = ancestry::read_working_set(source, working_set).await?;
    let moved = changes.iter().map(|c| (c.name.as_str(), c.old, c.new));
    let Some(head) = branch_head(source, old_root, branch, moved, Side::Before).await? else { return Ok(true) };
    let head_root = ancestry::read_commit(source, &head).await?.root;
    let staged = set.staged_root.unwrap_or(Address::EMPTY);
    Ok(head_root != Some(staged) || set.working_root != Some(staged))
}

/// Which root a ref is read from: the store's before the push, or the new one.
#[derive(Clone, Copy)]
enum Side {
    Before,
    After,
}

/// The head of `branch` before or after the push: as this Commit moves it
/// (`changes`: each ref's name, old and new target), else as the store has
/// it (then the same on both sides).
async fn branch_head<'c, S: ChunkSource>(
    source: &S,
    old_root: &Address,
    branch: &str,
    mut changes: impl Iterator<Item = (&'c str, Option<Address>, Option<Address>)>,
    side: Side,
) -> Result<Option<Address>, StorageError> {
    let name = format!("refs/heads/{branch}");
    match changes.find(|(n, _, _)| *n == name) {
        Some((_, old, new)) => Ok(match side {
            Side::Before => old,
            Side::After => new,
        }),
        None => Ok(crate::storage::refs::read_refs(source, old_root).await?.get(&name)),
    }
}

/// Who pushes, by doltgate's rules and (when mirrored) by Dolt's own rows.
pub struct Judges<'a> {
    pub rules: &'a PushRules,
    /// `Some` when `dolt_branch_control` is mirrored: its rows, or why they could not be read.
    pub branch_control: Option<&'a Result<branch_control::BranchControl, String>>,
    pub principal: &'a Principal,
}

/// The verdict on each change of one Commit.
/// `database` is the name rules judge; `upstream_database` the one Dolt
/// knows, which mirrored rows name.
pub fn judge(judges: &Judges<'_>, database: &str, upstream_database: &str, changes: &[Change]) -> Vec<Decision> {
    let (rules, principal) = (judges.rules, judges.principal);
    changes
        .iter()
        .map(|change| {
            let (_, short) = RefKind::of(&change.name);
            let ours = match change.kind {
                RefKind::Branch => rules.decide(principal, database, Target::Branch(short), change.op),
                RefKind::Tag => rules.decide(principal, database, Target::Tag(short), change.op),
                // A working set belongs to its branch: whoever may write the branch
                // may move a clean one; creating, deleting or discarding one's
                // uncommitted changes takes that permission on the branch.
                RefKind::WorkingSet => match change.op {
                    PushOp::Move => rules.may_write_branch(principal, database, short),
                    op => rules.decide(principal, database, Target::Branch(short), op),
                },
                _ => rules.decide(principal, database, Target::Other(&change.name), change.op),
            };
            match (change.kind, judges.branch_control) {
                (RefKind::Branch | RefKind::WorkingSet, Some(mirrored)) if ours.allowed => Decision {
                    would_refuse: ours.would_refuse,
                    bypassed: ours.bypassed,
                    ..dolts_verdict(mirrored, upstream_database, short, change, judges)
                },
                _ => ours,
            }
        })
        .collect()
}

/// The mirrored rows' verdict on a change doltgate's rules allow.
fn dolts_verdict(
    mirrored: &Result<branch_control::BranchControl, String>,
    database: &str,
    branch: &str,
    change: &Change,
    judges: &Judges<'_>,
) -> Decision {
    let control = match mirrored {
        Ok(control) => control,
        Err(why) => {
            let rule = format!("dolt_branch_control, which cannot be read ({why})");
            return Decision::from("dolt_branch_control", false, rule);
        }
    };
    let pusher = branch_control::Pusher::named(&judges.principal.name);
    // A clean working set is written with its branch: it needs write on the branch.
    let op = match (change.kind, change.op) {
        (RefKind::WorkingSet, PushOp::Move) => PushOp::FastForward,
        (_, op) => op,
    };
    let (allowed, rule) = control.decide(database, branch, op, &pusher);
    Decision::from("dolt_branch_control", allowed, rule)
}

/// What the push inspector needs to read and judge one Commit.
pub struct CommitUnderReview<'a> {
    pub judges: Judges<'a>,
    /// The database as rules name it: the one Dolt acts on, behind the route's path prefix if any.
    pub database: &'a str,
    /// The database as Dolt knows it (mirrored rows name this).
    pub upstream_database: &'a str,
    pub endpoint: &'a Endpoint,
    /// The request message as it goes upstream (repository renamed).
    pub message: Bytes,
    pub authorization: HeaderValue,
}

/// The most chunk bytes one inspection keeps for its later checks (a typical
/// push reads a few dozen small chunks; a long history walk passes through).
const INSPECTION_CACHE_BYTES: usize = 64 << 20;

/// What inspecting one Commit found: its changes, a verdict on each, and
/// what table rules saw of each.
struct Inspection {
    changes: Vec<Change>,
    decisions: Vec<Decision>,
    tables: Vec<tables::TableReview>,
}

/// Reads, judges and audits one Commit; `Ok` means forward it.
pub async fn review(commit: CommitUnderReview<'_>) -> Result<(), GatewayError> {
    let started = std::time::Instant::now();
    let result = inspect(&commit).await;
    let (verdict, detail, changes) = match &result {
        Ok(inspection) => match refusal(&commit, inspection) {
            Some(err) => ("refused", err.to_string(), summary(inspection)),
            None => ("allowed", String::new(), summary(inspection)),
        },
        Err(err) => ("error", err.to_string(), String::new()),
    };
    tracing::info!(
        target: "doltgate::audit",
        user = %commit.judges.principal.name,
        database = %commit.database,
        %verdict,
        changes = %changes,
        detail = %detail,
        duration_ms = started.elapsed().as_millis() as u64,
        "push"
    );
    crate::metrics::metrics().push_verdicts.with_label_values(&[verdict]).inc();
    let inspection = result?;
    let table_decisions = inspection.tables.iter().flat_map(|review| &review.decisions);
    count_rule_verdicts(inspection.decisions.iter().chain(table_decisions));
    for (change, decision) in inspection.changes.iter().zip(&inspection.decisions) {
        if let (true, Some(refusal)) = (decision.allowed, &decision.bypassed) {
            tracing::warn!(
                target: "doltgate::audit",
                user = %commit.judges.principal.name,
                database = %commit.database,
                change = %change.describe(),
                refused_by = %refusal.rule,
                "push rule bypassed"
            );
        }
    }
    match refusal(&commit, &inspection) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

async fn inspect(commit: &CommitUnderReview<'_>) -> Result<Inspection, GatewayError> {
    let request = CommitRequest::decode(commit.message.clone())
        .map_err(|e| GatewayError::InspectionFailed(format!("unreadable Commit request: {e}")))?;
    let address = |bytes: &Bytes, field: &str| {
        Address::from_slice(bytes).ok_or_else(|| {
            GatewayError::InspectionFailed(format!("Commit {field} is {} bytes, not a 20-byte address", bytes.len()))
        })
    };
    let (current, last) = (address(&request.current, "current")?, address(&request.last, "last")?);
    let repo = UpstreamRepo {
        upstream: &commit.endpoint.upstream,
        repo_id: request.repo_id.clone(),
        repo_path: request.repo_path.clone(),
        authorization: commit.authorization.clone(),
    };
    repo.register_table_files(&request.chunk_table_info, request.client_repo_format.clone()).await?;
    // Every check below walks the same store; each chunk crosses the network once.
    let source = CachingSource::new(UpstreamChunks::new(&repo), INSPECTION_CACHE_BYTES);
    let ref_diff = diff(&source, &last, &current).await.map_err(inspection_error)?;
    let changes = classify(&source, &last, &ref_diff.changes).await.map_err(inspection_error)?;
    integrity::check(&source, &last, &changes).await?;
    let mut decisions = judge(&commit.judges, commit.database, commit.upstream_database, &changes);
    let (rules, pusher) = (commit.judges.rules, commit.judges.principal);
    history::check_new_commits(&source, &last, &changes, &mut decisions, rules, commit.database, pusher)
        .await
        .map_err(inspection_error)?;
    let tables = tables::check_table_changes(&source, &last, &changes, &mut decisions, rules, commit.database, pusher)
        .await
        .map_err(inspection_error)?;
    Ok(Inspection { changes, decisions, tables })
}

/// The refusal for the first refused change, if any.
fn refusal(commit: &CommitUnderReview<'_>, inspection: &Inspection) -> Option<GatewayError> {
    let mut judged = inspection.changes.iter().zip(&inspection.decisions);
    judged.find(|(_, d)| !d.allowed).map(|(change, decision)| GatewayError::PushRefused {
        what: change.describe(),
        user: commit.judges.principal.name.clone(),
        rule: decision.rule.clone(),
    })
}

/// Per rule: what it decided, and what rules in `evaluate` mode would have refused.
fn count_rule_verdicts<'d>(decisions: impl Iterator<Item = &'d Decision>) {
    let counter = &crate::metrics::metrics().push_rule_verdicts;
    for decision in decisions {
        let verdict = match (decision.allowed, &decision.bypassed) {
            (true, Some(_)) => "bypassed",
            (true, None) => "allowed",
            (false, _) => "refused",
        };
        decision.rule_names.iter().for_each(|rule| counter.with_label_values(&[rule, verdict]).inc());
        for rule in decision.would_refuse.iter().flat_map(|d| &d.rule_names) {
            counter.with_label_values(&[rule, "would_refuse"]).inc();
        }
    }
}

/// One entry per change: name, ends, operation, verdict, and the tables it touches when table rules cover it.
fn summary(inspection: &Inspection) -> String {
    let short = |a: &Option<Address>| a.map(|a| a.to_string()[..8].to_owned()).unwrap_or_else(|| "none".into());
    let judged = inspection.changes.iter().zip(&inspection.decisions).zip(&inspection.tables);
    judged
        .map(|((c, d), review)| {
            let verdict = if d.allowed { "allowed" } else { "refused" };
            let evaluated = match &d.would_refuse {
                Some(would) => format!(" (evaluate mode: would be refused by {})", would.rule),
                None => String::new(),
            };
            let tables = match review.tables.is_empty() {
                true => String::new(),
                false => {
                    let touched: Vec<String> = review.tables.iter().map(|t| t.describe()).collect();
                    format!(" [tables: {}]", touched.join(", "))
                }
            };
            let (old, new) = (short(&c.old), short(&c.new));
            format!("{} {old}..{new} {} {verdict} by {}{evaluated}{tables}", c.name, c.op, d.rule)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Storage errors while inspecting: the upstream being away is transient,
/// anything else (missing or corrupt chunks) is the push's fault.
fn inspection_error(err: StorageError) -> GatewayError {
    match err {
        StorageError::Unavailable(reason) => GatewayError::InspectionUnavailable(reason),
        other => GatewayError::InspectionFailed(other.to_string()),
    }
}
