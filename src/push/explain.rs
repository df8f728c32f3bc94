//! `doltgate explain`: the verdict push rules give one ref change (and,
//! asked about a table, table rules give a change to it), and the rule that
//! decided it, reached through [`judge`](super::judge) — the code a
//! Commit's inspection uses — so an operator can try a rule change before a
//! push meets it.

use std::fmt;

use crate::authn::Principal;
use crate::config::auth::{PushOp, TableChangeKind};
use crate::storage::refs::RefKind;
use crate::storage::tables::TableChange;

use super::rules::{Decision, PushRules};
use super::tables::{apply, judge_tables};
use super::{judge, Change, Judges};

/// One hypothetical ref change.
#[derive(Debug, Clone)]
pub struct Question {
    pub user: String,
    /// The user's groups, as the identity source names them (`corp-sso:ops`).
    pub groups: Vec<String>,
    /// The database as a client names it; the routes resolve it.
    pub database: String,
    /// A full ref name (`refs/heads/main`, `refs/tags/v1`,
    /// `workingSets/heads/main`), or a bare name, read as a branch.
    pub reference: String,
    pub op: PushOp,
    /// A change to a table on the branch, judged by the table rules too.
    pub table: Option<(String, TableChangeKind)>,
}

/// The verdict, and what it was reached on.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The database the rules judged (what Dolt resolves the name to).
    pub database: String,
    pub reference: String,
    pub user: String,
    pub op: PushOp,
    pub table: Option<(String, TableChangeKind)>,
    /// The table rules' verdict on `table`, `None` when no table rule covers it.
    pub table_decision: Option<Decision>,
    pub decision: Decision,
    /// `dolt_branch_control` rows are mirrored, which explain does not read.
    pub mirrored_rows_apply: bool,
}

/// Judges `question` on `database` (already resolved by the routes).
pub fn answer(
    rules: &PushRules,
    mirrored_rows_apply: bool,
    database: &str,
    question: &Question,
) -> Result<Answer, String> {
    let reference = full_ref_name(&question.reference);
    let kind = RefKind::of(&reference).0;
    check_op(kind, question.op)?;
    let principal =
        Principal { name: question.user.clone(), groups: question.groups.clone(), expires: None, email: None };
    let change = Change { name: reference.clone(), kind, old: None, new: None, op: question.op };
    let judges = Judges { rules, branch_control: None, principal: &principal };
    let mut decision = judge(&judges, database, database, std::slice::from_ref(&change)).remove(0);
    let mut table_decision = None;
    if let Some((table, change)) = &question.table {
        if !matches!(kind, RefKind::Branch | RefKind::WorkingSet) {
            return Err("table rules cover branches and their working sets only".into());
        }
        let touched = TableChange {
            name: table.clone(),
            schema_name: None,
            data: *change == TableChangeKind::Data,
            schema: *change == TableChangeKind::Schema,
        };
        let review = judge_tables(rules, &principal, database, RefKind::of(&reference).1, vec![touched]);
        apply(&mut decision, &review);
        table_decision = review.decisions.into_iter().next();
    }
    Ok(Answer {
        database: database.to_owned(),
        reference,
        user: question.user.clone(),
        op: question.op,
        table: question.table.clone(),
        table_decision,
        decision,
        mirrored_rows_apply: mirrored_rows_apply && matches!(kind, RefKind::Branch | RefKind::WorkingSet),
    })
}

fn full_ref_name(name: &str) -> String {
    match RefKind::of(name).0 {
        RefKind::Other if !name.starts_with("refs/") => format!("refs/heads/{name}"),
        _ => name.to_owned(),
    }
}

/// The operations a push can make to a ref of `kind` (see `push::classify`).
fn check_op(kind: RefKind, op: PushOp) -> Result<(), String> {
    let fits = match kind {
        RefKind::Branch => op != PushOp::Move,
        RefKind::WorkingSet => op != PushOp::FastForward,
        _ => !matches!(op, PushOp::FastForward | PushOp::Force),
    };
    match fits {
        true => Ok(()),
        false => Err(format!("a push makes no {op} of a ref like this one")),
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.decision.allowed { "allowed" } else { "refused" };
        let table = match &self.table {
            Some((table, change)) => format!(" with a {change} change to table {table:?}"),
            None => String::new(),
        };
        writeln!(
            f,
            "{verdict}: {} of {}{table} in database {:?} by {}",
            self.op, self.reference, self.database, self.user
        )?;
        writeln!(f, "decided by {}", self.decision.rule)?;
        match (&self.table, &self.table_decision) {
            (Some(_), None) => writeln!(f, "no table rule covers that table on this branch")?,
            (Some(_), Some(table)) if table.allowed => writeln!(f, "the table change: allowed by {}", table.rule)?,
            _ => {}
        }
        if let Some(refusal) = &self.decision.bypassed {
            writeln!(f, "bypass: {} may bypass what refused it: {}", self.user, refusal.rule)?;
        }
        if let Some(would) = &self.decision.would_refuse {
            writeln!(f, "evaluate mode: would be refused by {}", would.rule)?;
        }
        if self.mirrored_rows_apply && self.decision.allowed {
            writeln!(f, "also needed: the upstream's dolt_branch_control rows allow it (mirrored; not read here)")?;
        }
        Ok(())
    }
}
