//! The push rule language: which ref changes a user may make.
//!
//! For one ref, the matching rules with the most specific patterns decide
//! (most literal characters in the ref pattern, then in the database
//! pattern), and equally specific ones combine. A user those rules do not
//! name may do nothing to the ref: naming `main` in a rule protects it from
//! everyone else. Refs no rule matches fall to the built-in default: create
//! and fast-forward branches, create tags, nothing else. An operation a
//! matching rule `deny`s to the user is refused whatever the others allow;
//! a rule that only denies takes no other part in the verdict.
//!
//! Rules in `evaluate` mode take no part in the verdict: it is reached as if
//! they were absent, and again with them, and where only the second refuses,
//! the decision carries that refusal for the audit log and the metrics.

use std::collections::HashSet;

use crate::authn::Principal;
use std::sync::Arc;

use super::authorship::AuthorEmails;
use super::signatures::Signers;
use crate::config::auth::{AuthConfig, PushOp, PushRuleConfig, RuleMode, TableChangeKind, TableRuleConfig};
use crate::config::{invalid, ConfigError};
use crate::storage::message::Commit;
use crate::storage::Address;

/// What a ref is, for matching: branch and tag rules match the short name,
/// `refs` rules the full one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Branch(&'a str),
    Tag(&'a str),
    Other(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Branches,
    Tags,
    Refs,
}

impl Family {
    /// What a rule of this family can allow: branches move by fast-forward
    /// or force; tags and other refs just move.
    fn operations(self) -> &'static [PushOp] {
        match self {
            Family::Branches => &[PushOp::Create, PushOp::FastForward, PushOp::Force, PushOp::Delete],
            Family::Tags | Family::Refs => &[PushOp::Create, PushOp::Move, PushOp::Delete],
        }
    }
}

#[derive(Debug)]
struct Rule {
    name: String,
    family: Family,
    patterns: Vec<glob::Pattern>,
    databases: Vec<glob::Pattern>,
    users: Vec<String>,
    groups: Vec<String>,
    everyone: bool,
    allow: HashSet<PushOp>,
    deny: HashSet<PushOp>,
    mode: RuleMode,
    commits: CommitRules,
    bypass_users: Vec<String>,
    bypass_groups: Vec<String>,
    /// Set for table rules: which tables and kinds of change the rule is
    /// about. A table rule says nothing about refs, a ref rule nothing about tables.
    tables: Option<TableScope>,
}

/// The tables a table rule covers, and the kinds of change it governs.
#[derive(Debug)]
struct TableScope {
    /// Each pattern, and whether it may name Dolt's system tables.
    patterns: Vec<(glob::Pattern, bool)>,
    changes: HashSet<TableChangeKind>,
}

impl TableScope {
    fn new(patterns: Vec<glob::Pattern>, changes: &[TableChangeKind]) -> TableScope {
        let patterns = patterns.into_iter().map(|pattern| {
            let names_system = is_system_table(pattern.as_str());
            (pattern, names_system)
        });
        TableScope { patterns: patterns.collect(), changes: changes.iter().copied().collect() }
    }

    /// How specifically the rule names `table` (its most literal pattern
    /// that matches); `None` when none does. Dolt's system tables
    /// (`dolt_*`) match only patterns that start with `dolt_` themselves, so
    /// `*` protects the user's tables, not `dolt_ignore` or `dolt_docs`.
    fn specificity_for(&self, table: &str) -> Option<usize> {
        let system = is_system_table(table);
        self.patterns
            .iter()
            .filter(|(pattern, names_system)| (!system || *names_system) && pattern.matches_with(table, IGNORING_CASE))
            .map(|(pattern, _)| specificity(pattern))
            .max()
    }
}

/// Whether a table name (or a pattern's literal start) is in Dolt's `dolt_` namespace, in any case.
fn is_system_table(name: &str) -> bool {
    name.get(..SYSTEM_TABLE_PREFIX.len()).is_some_and(|start| start.eq_ignore_ascii_case(SYSTEM_TABLE_PREFIX))
}

const SYSTEM_TABLE_PREFIX: &str = "dolt_";

/// What a rule asks of every commit a push adds to a matching branch.
#[derive(Debug, Default)]
pub struct CommitRules {
    /// No merge commits.
    pub linear_history: bool,
    author_emails: Option<AuthorEmails>,
    message_patterns: Vec<glob::Pattern>,
    forbidden_message_patterns: Vec<glob::Pattern>,
    signed: Option<SignedCommits>,
}

/// A rule's `signed_commits`, with the keys it trusts.
#[derive(Debug)]
struct SignedCommits {
    signers: Arc<Signers>,
    unsigned_merges: bool,
}

impl CommitRules {
    fn is_empty(&self) -> bool {
        !self.linear_history
            && self.author_emails.is_none()
            && self.message_patterns.is_empty()
            && self.forbidden_message_patterns.is_empty()
            && self.signed.is_none()
    }

    /// Whether judging a commit needs its first parent's root value.
    pub fn needs_parent_root(&self) -> bool {
        self.signed.is_some()
    }

    /// What is wrong with `commit` (at `address`) pushed by `pusher`, if
    /// anything; `parent_root` is its first parent's root value.
    pub fn problem(
        &self,
        pusher: &Principal,
        address: &Address,
        commit: &Commit,
        parent_root: Option<&Address>,
    ) -> Option<String> {
        if self.linear_history && commit.parents.len() > 1 {
            return Some(format!("linear history: adds merge commit {address}"));
        }
        if let Some(problem) = self.author_emails.as_ref().and_then(|a| a.problem(pusher, address, commit)) {
            return Some(problem);
        }
        let message = commit.description.trim_end();
        if !self.message_patterns.is_empty() && !self.message_patterns.iter().any(|p| p.matches(message)) {
            return Some(format!("the message of commit {address} matches no required pattern"));
        }
        if let Some(forbidden) = self.forbidden_message_patterns.iter().find(|p| p.matches(message)) {
            return Some(format!("the message of commit {address} matches forbidden {:?}", forbidden.as_str()));
        }
        let signed = self.signed.as_ref()?;
        if signed.unsigned_merges && commit.parents.len() > 1 && commit.signature.is_empty() {
            return None;
        }
        signed.signers.problem(address, commit, parent_root).map(|why| format!("signed commits: {why}"))
    }
}

/// Which rules decided, for messages and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// e.g. `rule "protect-main" (allows fast_forward)`, or the default.
    pub rule: String,
    /// The names of the rules that decided (`default` for the built-in one),
    /// for the per-rule verdict counter.
    pub rule_names: Vec<String>,
    /// Set when rules in `evaluate` mode would have refused what the
    /// enforced ones allow: which rules, described like [`Decision::rule`].
    pub would_refuse: Option<Box<Decision>>,
    /// Set when the user may bypass every rule that refused: the refusal
    /// that was let through.
    pub bypassed: Option<Box<Decision>>,
}

impl Decision {
    /// A verdict by one named source (a rule, the default, the mirrored rows).
    pub fn from(source: &str, allowed: bool, rule: String) -> Decision {
        Decision::by(vec![source.to_owned()], allowed, rule)
    }

    /// A verdict by the rules named.
    fn by(rule_names: Vec<String>, allowed: bool, rule: String) -> Decision {
        Decision { allowed, rule, rule_names, would_refuse: None, bypassed: None }
    }
}

#[derive(Debug, Default)]
pub struct PushRules(Vec<Rule>);

/// Dolt finds branches and tags ignoring case (`strings.EqualFold`), so a
/// rule about `release/*` is about `RELEASE/x` too.
pub(super) const IGNORING_CASE: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: false, require_literal_separator: false, require_literal_leading_dot: false };

const DEFAULT_BRANCH: &[PushOp] = &[PushOp::Create, PushOp::FastForward];
const DEFAULT_TAG: &[PushOp] = &[PushOp::Create];

impl FromIterator<Rule> for PushRules {
    fn from_iter<I: IntoIterator<Item = Rule>>(rules: I) -> PushRules {
        PushRules(rules.into_iter().collect())
    }
}

impl Rule {
    fn build(key: &str, index: usize, rule: &PushRuleConfig, signers: &Arc<Signers>) -> Result<Rule, ConfigError> {
        let (family, field, patterns) = match (&rule.branches, &rule.tags, &rule.refs) {
            (Some(p), None, None) => (Family::Branches, "branches", p),
            (None, Some(p), None) => (Family::Tags, "tags", p),
            (None, None, Some(p)) => (Family::Refs, "refs", p),
            _ => return Err(invalid(key, "set exactly one of branches, tags, refs")),
        };
        if patterns.is_empty() {
            return Err(invalid(format!("{key}.{field}"), "name at least one pattern"));
        }
        let allowed = family.operations();
        if let Some(op) = rule.allow.iter().find(|op| !allowed.contains(op)) {
            let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            return Err(invalid(
                format!("{key}.allow"),
                format!("{op} does not apply to {field}; use {}", names.join(", ")),
            ));
        }
        check_subject(key, rule.everyone, &rule.users, &rule.groups, "a rule with allow = [] protects refs")?;
        let commits = CommitRules {
            linear_history: rule.linear_history,
            author_emails: AuthorEmails::build(key, rule.author_email.as_ref(), &rule.author_email_by_source)?,
            message_patterns: compile_globs(&format!("{key}.message_patterns"), &rule.message_patterns)?,
            forbidden_message_patterns: compile_globs(
                &format!("{key}.forbidden_message_patterns"),
                &rule.forbidden_message_patterns,
            )?,
            signed: rule
                .signed_commits
                .then(|| SignedCommits { signers: Arc::clone(signers), unsigned_merges: rule.unsigned_merges }),
        };
        if rule.signed_commits && signers.is_empty() {
            return Err(invalid(key, "signed_commits needs at least one [[auth.signing_keys]]"));
        }
        if rule.unsigned_merges && !rule.signed_commits {
            return Err(invalid(format!("{key}.unsigned_merges"), "applies only with signed_commits = true"));
        }
        if !commits.is_empty() && family != Family::Branches {
            return Err(invalid(
                key,
                "linear_history, author_email, message patterns and signed_commits apply to branches only",
            ));
        }
        if !commits.is_empty() && rule.mode == RuleMode::Evaluate {
            return Err(invalid(key, "rules on commits are enforced only; drop mode = \"evaluate\""));
        }
        if let Some(op) = rule.deny.iter().find(|op| !allowed.contains(op)) {
            return Err(invalid(format!("{key}.deny"), format!("{op} does not apply to {field}")));
        }
        if let Some(op) = rule.deny.iter().find(|op| rule.allow.contains(op)) {
            return Err(invalid(key, format!("{op} is both allowed and denied")));
        }
        Ok(Rule {
            name: rule.name.clone().unwrap_or_else(|| format!("push_rules[{index}]")),
            family,
            patterns: compile_globs(&format!("{key}.{field}"), patterns)?,
            databases: compile_databases(key, &rule.databases)?,
            users: rule.users.clone(),
            groups: rule.groups.clone(),
            everyone: rule.everyone,
            allow: rule.allow.iter().copied().collect(),
            deny: rule.deny.iter().copied().collect(),
            mode: rule.mode,
            commits,
            bypass_users: rule.bypass_users.clone(),
            bypass_groups: rule.bypass_groups.clone(),
            tables: None,
        })
    }

    fn build_table(key: &str, index: usize, rule: &TableRuleConfig) -> Result<Rule, ConfigError> {
        for (field, patterns) in [("branches", &rule.branches), ("tables", &rule.tables)] {
            if patterns.is_empty() {
                return Err(invalid(format!("{key}.{field}"), "name at least one pattern"));
            }
        }
        if rule.changes.is_empty() {
            return Err(invalid(format!("{key}.changes"), "name data, schema or both"));
        }
        check_subject(key, rule.everyone, &rule.users, &rule.groups, "name who may change these tables")?;
        Ok(Rule {
            name: rule.name.clone().unwrap_or_else(|| format!("table_rules[{index}]")),
            family: Family::Branches,
            patterns: compile_globs(&format!("{key}.branches"), &rule.branches)?,
            databases: compile_databases(key, &rule.databases)?,
            users: rule.users.clone(),
            groups: rule.groups.clone(),
            everyone: rule.everyone,
            allow: HashSet::new(),
            deny: HashSet::new(),
            mode: rule.mode,
            commits: CommitRules::default(),
            bypass_users: rule.bypass_users.clone(),
            bypass_groups: rule.bypass_groups.clone(),
            tables: Some(TableScope::new(compile_globs(&format!("{key}.tables"), &rule.tables)?, &rule.changes)),
        })
    }
}

/// A rule names users, groups, or everyone: not none, not both.
fn check_subject(
    key: &str,
    everyone: bool,
    users: &[String],
    groups: &[String],
    hint: &str,
) -> Result<(), ConfigError> {
    match (everyone, users.is_empty() && groups.is_empty()) {
        (false, true) => Err(invalid(key, format!("applies to nobody: set users, groups or everyone = true ({hint})"))),
        (true, false) => Err(invalid(key, "everyone = true already names every user: drop users and groups")),
        _ => Ok(()),
    }
}

/// Database names compare case-insensitively, as Dolt resolves them.
fn compile_databases(key: &str, patterns: &[String]) -> Result<Vec<glob::Pattern>, ConfigError> {
    let lowered: Vec<String> = patterns.iter().map(|p| p.to_lowercase()).collect();
    compile_globs(&format!("{key}.databases"), &lowered)
}

fn compile_globs(key: &str, patterns: &[String]) -> Result<Vec<glob::Pattern>, ConfigError> {
    patterns.iter().map(|p| glob::Pattern::new(p).map_err(|e| invalid(key, format!("{p:?}: {e}")))).collect()
}

/// Literal characters of a pattern: how specific it is.
fn specificity(pattern: &glob::Pattern) -> usize {
    pattern.as_str().chars().filter(|c| !matches!(c, '*' | '?' | '[' | ']')).count()
}

fn describe(ops: impl IntoIterator<Item = PushOp>) -> String {
    let mut names: Vec<String> = ops.into_iter().map(|op| op.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

impl PushRules {
    /// The rules `[[auth.push_rules]]` and `[[auth.table_rules]]` describe,
    /// or the first that cannot hold.
    /// The rules of an `[auth]` section: push rules, table rules, and the
    /// signing keys push rules may ask for.
    pub fn build(auth: &AuthConfig) -> Result<PushRules, ConfigError> {
        let signers = Arc::new(Signers::build(&auth.signing_keys)?);
        let refs = auth
            .push_rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::build(&format!("auth.push_rules[{i}]"), i, rule, &signers));
        let tables = auth
            .table_rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::build_table(&format!("auth.table_rules[{i}]"), i, rule));
        refs.chain(tables).collect()
    }

    /// May `principal` make `op` on `target` in `database`?
    pub fn decide(&self, principal: &Principal, database: &str, target: Target<'_>, op: PushOp) -> Decision {
        let decision = self.by_mode(|include| Some(self.decide_with(include, principal, database, target, op)));
        self.bypass(principal, decision.expect("ref rules always reach a verdict"))
    }

    /// May `principal` make a `kind` change to `table` on `branch` of
    /// `database`? `None` when no table rule covers it.
    pub fn decide_table(
        &self,
        principal: &Principal,
        database: &str,
        branch: &str,
        table: &str,
        kind: TableChangeKind,
    ) -> Option<Decision> {
        let decision = self.by_mode(|include| self.table_verdict(include, principal, database, branch, table, kind));
        decision.map(|decision| self.bypass(principal, decision))
    }

    /// Whether any table rule covers `branch` of `database`.
    pub fn has_table_rules(&self, database: &str, branch: &str) -> bool {
        let database = database.to_lowercase();
        self.0
            .iter()
            .any(|rule| rule.tables.is_some() && rule.specificity_for(Family::Branches, branch, &database).is_some())
    }

    /// `refusal` let through when `principal` may bypass every rule that
    /// decided it (never the default rule or anything outside the rules).
    pub fn bypass(&self, principal: &Principal, refusal: Decision) -> Decision {
        let bypassable = |name: &String| {
            let mut named = self.0.iter().filter(|rule| &rule.name == name).peekable();
            named.peek().is_some() && named.all(|rule| rule.may_be_bypassed_by(principal))
        };
        if refusal.allowed || refusal.rule_names.is_empty() || !refusal.rule_names.iter().all(bypassable) {
            return refusal;
        }
        let rule = format!("{}'s bypass of {}", principal.name, refusal.rule);
        Decision { bypassed: Some(Box::new(refusal.clone())), ..Decision::by(refusal.rule_names.clone(), true, rule) }
    }

    /// The verdict of the enforced rules, carrying what rules in evaluate
    /// mode would refuse besides. `verdict` judges with the rules its filter keeps.
    fn by_mode(&self, verdict: impl Fn(&dyn Fn(&Rule) -> bool) -> Option<Decision>) -> Option<Decision> {
        let enforced = verdict(&|rule| rule.mode == RuleMode::Enforce);
        if enforced.as_ref().is_some_and(|d| !d.allowed) || self.0.iter().all(|rule| rule.mode == RuleMode::Enforce) {
            return enforced;
        }
        match verdict(&|_| true) {
            Some(evaluated) if !evaluated.allowed => {
                let allowed = enforced.unwrap_or_else(|| Decision::by(Vec::new(), true, "no enforced rule".into()));
                Some(Decision { would_refuse: Some(Box::new(evaluated)), ..allowed })
            }
            _ => enforced,
        }
    }

    /// The verdict of the ref rules `include` keeps.
    fn decide_with(
        &self,
        include: &dyn Fn(&Rule) -> bool,
        principal: &Principal,
        database: &str,
        target: Target<'_>,
        op: PushOp,
    ) -> Decision {
        let database = database.to_lowercase();
        let (family, name) = match target {
            Target::Branch(name) => (Family::Branches, name),
            Target::Tag(name) => (Family::Tags, name),
            Target::Other(name) => (Family::Refs, name),
        };
        let mut matching: Vec<(&Rule, (usize, usize))> = self
            .0
            .iter()
            .filter(|rule| rule.tables.is_none() && include(rule))
            .filter_map(|rule| Some((rule, rule.specificity_for(family, name, &database)?)))
            .collect();
        if let Some((denying, _)) =
            matching.iter().find(|(rule, _)| rule.deny.contains(&op) && rule.applies_to(principal))
        {
            let rule = format!("rule {:?} (denies {})", denying.name, describe(denying.deny.iter().copied()));
            return Decision::from(&denying.name, false, rule);
        }
        // A rule that only denies leaves every other verdict to the rest.
        matching.retain(|(rule, _)| !rule.only_denies());
        let Some(best) = matching.iter().map(|(_, s)| *s).max() else {
            let default = match family {
                Family::Branches => DEFAULT_BRANCH,
                Family::Tags => DEFAULT_TAG,
                Family::Refs => &[],
            };
            let rule = format!("the default rule (allows {})", describe(default.iter().copied()));
            return Decision::from("default", default.contains(&op), rule);
        };
        let deciding: Vec<&Rule> = matching.iter().filter(|(_, s)| *s == best).map(|(rule, _)| *rule).collect();
        let applying: Vec<&Rule> = deciding.iter().copied().filter(|rule| rule.applies_to(principal)).collect();
        let allowed_ops: HashSet<PushOp> = applying.iter().flat_map(|rule| rule.allow.iter().copied()).collect();
        let names: Vec<String> = deciding.iter().map(|rule| format!("{:?}", rule.name)).collect();
        let rule = if applying.is_empty() {
            format!("rule {} (which does not name this user)", names.join(", "))
        } else {
            format!("rule {} (allows {})", names.join(", "), describe(allowed_ops.iter().copied()))
        };
        let rule_names = deciding.iter().map(|rule| rule.name.clone()).collect();
        Decision::by(rule_names, allowed_ops.contains(&op), rule)
    }

    /// The verdict of the table rules `include` keeps, or `None` when none
    /// covers this change.
    fn table_verdict(
        &self,
        include: &dyn Fn(&Rule) -> bool,
        principal: &Principal,
        database: &str,
        branch: &str,
        table: &str,
        kind: TableChangeKind,
    ) -> Option<Decision> {
        let database = database.to_lowercase();
        let matching: Vec<(&Rule, (usize, usize, usize))> = self
            .0
            .iter()
            .filter(|rule| include(rule))
            .filter_map(|rule| {
                let scope = rule.tables.as_ref().filter(|scope| scope.changes.contains(&kind))?;
                let by_table = scope.specificity_for(table)?;
                let (by_branch, by_database) = rule.specificity_for(Family::Branches, branch, &database)?;
                Some((rule, (by_table, by_branch, by_database)))
            })
            .collect();
        let best = matching.iter().map(|(_, s)| *s).max()?;
        let deciding: Vec<&Rule> = matching.iter().filter(|(_, s)| *s == best).map(|(rule, _)| *rule).collect();
        let allowed = deciding.iter().any(|rule| rule.applies_to(principal));
        let names: Vec<String> = deciding.iter().map(|rule| format!("{:?}", rule.name)).collect();
        let (names, lets) = (names.join(", "), if allowed { "lets" } else { "which does not let" });
        let rule = format!("rule {names} ({lets} this user change the {kind} of table {table:?})");
        Some(Decision::by(deciding.iter().map(|rule| rule.name.clone()).collect(), allowed, rule))
    }

    /// Every rule on `branch` of `database` that asks something of the
    /// commits a push adds, with its name.
    pub fn commit_rules(&self, database: &str, branch: &str) -> Vec<(&str, &CommitRules)> {
        let database = database.to_lowercase();
        self.0
            .iter()
            .filter(|rule| !rule.commits.is_empty())
            .filter(|rule| rule.specificity_for(Family::Branches, branch, &database).is_some())
            .map(|rule| (rule.name.as_str(), &rule.commits))
            .collect()
    }

    /// May `principal` write to `branch` at all (for its working set)?
    pub fn may_write_branch(&self, principal: &Principal, database: &str, branch: &str) -> Decision {
        let ops = [PushOp::FastForward, PushOp::Create, PushOp::Force];
        let decisions: Vec<Decision> =
            ops.iter().map(|op| self.decide(principal, database, Target::Branch(branch), *op)).collect();
        decisions.iter().find(|d| d.allowed).cloned().unwrap_or_else(|| decisions[0].clone())
    }
}

impl Rule {
    /// How specifically the rule matches ref `name` of `family` in
    /// `database` (lower-cased): its most specific ref pattern, then database
    /// pattern; `None` when it does not match.
    fn specificity_for(&self, family: Family, name: &str, database: &str) -> Option<(usize, usize)> {
        if self.family != family {
            return None;
        }
        let by_ref = self.patterns.iter().filter(|p| p.matches_with(name, IGNORING_CASE)).map(specificity).max()?;
        let by_db = self.databases.iter().filter(|p| p.matches(database)).map(specificity).max()?;
        Some((by_ref, by_db))
    }

    fn may_be_bypassed_by(&self, principal: &Principal) -> bool {
        self.bypass_users.iter().any(|u| u == &principal.name)
            || self.bypass_groups.iter().any(|g| principal.groups.contains(g))
    }

    fn only_denies(&self) -> bool {
        self.allow.is_empty() && !self.deny.is_empty()
    }

    fn applies_to(&self, principal: &Principal) -> bool {
        self.everyone
            || self.users.iter().any(|u| u == &principal.name)
            || self.groups.iter().any(|g| principal.groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The rules of an `[auth]` section holding `toml`, or why they cannot be built.
    fn build(toml: &str) -> Result<PushRules, String> {
        let text = format!("[upstream]\naddress = \"h:1\"\n[auth]\nupstream_credentials = \"passthrough\"\n{toml}");
        let auth = Config::parse(&text).unwrap().auth.unwrap();
        PushRules::build(&auth).map_err(|e| e.to_string())
    }

    fn rules(toml: &str) -> PushRules {
        build(toml).unwrap()
    }

    fn who(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            expires: None,
            email: None,
        }
    }

    const POLICY: &str = r#"
[[auth.push_rules]]
name = "everyone-on-features"
branches = ["*"]
groups = ["dev"]
allow = ["create", "fast_forward", "force", "delete"]

[[auth.push_rules]]
name = "protect-main"
branches = ["main"]
groups = ["maintainers"]
allow = ["fast_forward"]

[[auth.push_rules]]
name = "release-managers"
databases = ["prod_*"]
branches = ["release/*"]
users = ["rita"]
allow = ["create", "fast_forward"]

[[auth.push_rules]]
name = "tags"
tags = ["v*"]
groups = ["maintainers"]
allow = ["create"]
"#;

    #[test]
    fn the_most_specific_rule_decides_and_protects() {
        let rules = rules(POLICY);
        let dev = who("dan", &["dev"]);
        let maintainer = who("mia", &["dev", "maintainers"]);
        assert!(rules.decide(&dev, "db", Target::Branch("feature/x"), PushOp::Force).allowed);
        let refused = rules.decide(&dev, "db", Target::Branch("main"), PushOp::FastForward);
        assert!(!refused.allowed);
        assert!(refused.rule.contains("\"protect-main\" (which does not name this user)"), "{}", refused.rule);
        assert!(rules.decide(&maintainer, "db", Target::Branch("main"), PushOp::FastForward).allowed);
        let force = rules.decide(&maintainer, "db", Target::Branch("main"), PushOp::Force);
        assert!(!force.allowed, "main is fast-forward only, even for maintainers");
        assert!(force.rule.contains("allows fast_forward"), "{}", force.rule);
    }

    /// Dolt resolves `MAIN` and `Release/1` to `main` and `release/1` when they
    /// are the only match, so rules about those names hold for every case.
    #[test]
    fn ref_patterns_ignore_case_as_dolt_does() {
        let rules = rules(POLICY);
        let dev = who("dan", &["dev"]);
        for spelling in ["MAIN", "Main", "mAiN"] {
            let decision = rules.decide(&dev, "db", Target::Branch(spelling), PushOp::Create);
            assert!(!decision.allowed && decision.rule.contains("protect-main"), "{spelling}: {}", decision.rule);
        }
        let rita = who("rita", &[]);
        assert!(rules.decide(&rita, "prod_eu", Target::Branch("RELEASE/1"), PushOp::Create).allowed);
    }

    #[test]
    fn an_explicit_deny_wins_over_any_allow() {
        let rules = rules(
            r#"
[[auth.push_rules]]
name = "features"
branches = ["feature/*"]
everyone = true
allow = ["create", "fast_forward", "force", "delete"]

[[auth.push_rules]]
name = "no-deletes-for-interns"
branches = ["*"]
groups = ["interns"]
deny = ["delete"]
"#,
        );
        let intern = who("ivy", &["interns"]);
        let refused = rules.decide(&intern, "db", Target::Branch("feature/x"), PushOp::Delete);
        assert!(!refused.allowed, "the less specific deny still wins");
        assert_eq!(refused.rule, "rule \"no-deletes-for-interns\" (denies delete)");
        assert!(rules.decide(&intern, "db", Target::Branch("feature/x"), PushOp::Force).allowed);
        assert!(rules.decide(&who("anyone", &[]), "db", Target::Branch("feature/x"), PushOp::Delete).allowed);
        // Only denying, the rule protects nothing else: the default decides `main`.
        let default = rules.decide(&intern, "db", Target::Branch("main"), PushOp::FastForward);
        assert!(default.allowed && default.rule.starts_with("the default rule"), "{}", default.rule);
    }

    #[test]
    fn evaluate_mode_reports_what_it_would_refuse_and_refuses_nothing() {
        let rules = rules(
            r#"
[[auth.push_rules]]
name = "try-protecting-main"
branches = ["main"]
groups = ["maintainers"]
allow = ["fast_forward"]
mode = "evaluate"
"#,
        );
        let dev = who("dan", &["dev"]);
        let decision = rules.decide(&dev, "db", Target::Branch("main"), PushOp::FastForward);
        assert!(decision.allowed, "the default rule decides: {}", decision.rule);
        assert_eq!(decision.rule_names, ["default"]);
        let would = decision.would_refuse.expect("the evaluated rule would refuse");
        assert!(would.rule.contains("try-protecting-main") && would.rule_names == ["try-protecting-main"]);
        let maintainer = who("mia", &["maintainers"]);
        let decision = rules.decide(&maintainer, "db", Target::Branch("main"), PushOp::FastForward);
        assert!(decision.allowed && decision.would_refuse.is_none());
        // What the default refuses stays refused: evaluation never allows more.
        assert!(!rules.decide(&maintainer, "db", Target::Branch("main"), PushOp::Force).allowed);
    }

    #[test]
    fn whom_a_rule_names_and_what_it_denies_are_checked_at_start() {
        let error = |toml: &str| build(toml).unwrap_err();
        let both = error("[[auth.push_rules]]\nbranches = [\"main\"]\neveryone = true\nusers = [\"a\"]\n");
        assert!(both.contains("auth.push_rules[0]") && both.contains("already names every user"), "{both}");
        let overlap = error(
            "[[auth.push_rules]]\nbranches = [\"*\"]\neveryone = true\nallow = [\"force\"]\ndeny = [\"force\"]\n",
        );
        assert!(overlap.contains("both allowed and denied"), "{overlap}");
        let tag_ff = error("[[auth.push_rules]]\ntags = [\"v*\"]\neveryone = true\ndeny = [\"fast_forward\"]\n");
        assert!(tag_ff.contains("auth.push_rules[0].deny"), "{tag_ff}");
        let tags_linear = error("[[auth.push_rules]]\ntags = [\"v*\"]\neveryone = true\nlinear_history = true\n");
        assert!(tags_linear.contains("auth.push_rules[0]") && tags_linear.contains("branches only"), "{tags_linear}");
        let mode = "[upstream]\naddress = \"h:1\"\n[auth]\n[[auth.push_rules]]\nbranches = [\"*\"]\neveryone = true\nmode = \"audit\"\n";
        let mode = Config::parse(mode).unwrap_err().to_string();
        assert!(mode.contains("mode") && mode.contains("evaluate"), "{mode}");
    }

    #[test]
    fn signed_commits_need_keys_that_read() {
        let rule = "[[auth.push_rules]]\nbranches = [\"main\"]\neveryone = true\nallow = [\"fast_forward\"]\n";
        let no_keys = build(&format!("{rule}signed_commits = true\n")).unwrap_err();
        assert!(no_keys.contains("auth.push_rules[0]") && no_keys.contains("[[auth.signing_keys]]"), "{no_keys}");
        let merges_alone = build(&format!("{rule}unsigned_merges = true\n")).unwrap_err();
        assert!(merges_alone.contains("auth.push_rules[0].unsigned_merges"), "{merges_alone}");
        let dir = tempfile::tempdir().unwrap();
        let not_a_key = dir.path().join("key.asc");
        std::fs::write(&not_a_key, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n").unwrap();
        let keys = |path: &std::path::Path, emails: &str| {
            format!(
                "{rule}signed_commits = true\n[[auth.signing_keys]]\nemails = {emails}\npublic_key_file = {path:?}\n"
            )
        };
        let garbled = build(&keys(&not_a_key, "[\"a@x\"]")).unwrap_err();
        assert!(garbled.contains("auth.signing_keys[0].public_key_file"), "{garbled}");
        let missing = build(&keys(&dir.path().join("absent.asc"), "[\"a@x\"]")).unwrap_err();
        assert!(
            missing.contains("auth.signing_keys[0].public_key_file") && missing.contains("absent.asc"),
            "{missing}"
        );
        let no_emails = build(&keys(&not_a_key, "[]")).unwrap_err();
        assert!(no_emails.contains("auth.signing_keys[0].emails"), "{no_emails}");
    }

    #[test]
    fn commit_rules_read_author_and_message() {
        let rules = rules(
            r#"
[[auth.push_rules]]
name = "history"
databases = ["app_*"]
branches = ["main"]
everyone = true
allow = ["fast_forward"]
author_email = "{user}@example.com"
message_patterns = ["JIRA-*"]
forbidden_message_patterns = ["*WIP*"]
"#,
        );
        assert!(rules.commit_rules("db", "main").is_empty(), "another database");
        let asked = rules.commit_rules("APP_x", "MAIN");
        let [(name, commits)] = asked.as_slice() else { panic!("one rule: {asked:?}") };
        assert_eq!(*name, "history");
        let commit = |email: &str, message: &str, parents: usize| Commit {
            root: None,
            height: 2,
            parents: vec![Address::EMPTY; parents],
            parent_closure: None,
            name: "x".into(),
            email: email.into(),
            description: message.into(),
            signature: String::new(),
        };
        let at = Address::EMPTY;
        assert_eq!(
            commits.problem(&who("corp-sso:ann", &[]), &at, &commit("Ann@Example.com", "JIRA-1 fix\n", 1), None),
            None
        );
        let wrong = commits.problem(&who("ann", &[]), &at, &commit("bob@example.com", "JIRA-1", 1), None).unwrap();
        assert!(wrong.contains("does not match \"ann@example.com\""), "{wrong}");
        // A name cannot widen the pattern it is put into.
        assert!(commits.problem(&who("*", &[]), &at, &commit("bob@example.com", "JIRA-1", 1), None).is_some());
        assert!(commits
            .problem(&who("ann", &[]), &at, &commit("ann@example.com", "fix", 1), None)
            .unwrap()
            .contains("no required"));
        let wip = commits.problem(&who("ann", &[]), &at, &commit("ann@example.com", "JIRA-2 WIP", 1), None).unwrap();
        assert!(wip.contains("forbidden \"*WIP*\""), "{wip}");
        assert_eq!(
            commits.problem(&who("ann", &[]), &at, &commit("ann@example.com", "JIRA-3", 2), None),
            None,
            "merges allowed here"
        );
    }

    #[test]
    fn a_bypass_lets_through_only_what_the_named_rules_refuse() {
        let rules = rules(
            r#"
[[auth.push_rules]]
name = "protect-main"
branches = ["main"]
groups = ["maintainers"]
allow = ["fast_forward"]
bypass_users = ["oncall"]

[[auth.push_rules]]
name = "no-deletes"
branches = ["*"]
everyone = true
deny = ["delete"]
"#,
        );
        let oncall = who("oncall", &[]);
        let forced = rules.decide(&oncall, "db", Target::Branch("main"), PushOp::Force);
        assert!(forced.allowed, "{}", forced.rule);
        assert!(forced.rule.starts_with("oncall's bypass of rule \"protect-main\""), "{}", forced.rule);
        assert!(forced.bypassed.is_some());
        let delete = rules.decide(&oncall, "db", Target::Branch("main"), PushOp::Delete);
        assert!(!delete.allowed, "no-deletes names no bypass: {}", delete.rule);
        let default = rules.decide(&oncall, "db", Target::Branch("other"), PushOp::Force);
        assert!(!default.allowed && default.bypassed.is_none(), "the default rule is never bypassed");
        let dev = who("dan", &["dev"]);
        assert!(!rules.decide(&dev, "db", Target::Branch("main"), PushOp::Force).allowed);
    }

    #[test]
    fn database_patterns_scope_rules() {
        let rules = rules(POLICY);
        let rita = who("rita", &[]);
        assert!(rules.decide(&rita, "PROD_eu", Target::Branch("release/1"), PushOp::Create).allowed);
        assert!(!rules.decide(&rita, "staging", Target::Branch("release/1"), PushOp::Create).allowed);
    }

    #[test]
    fn tags_and_other_refs_have_safe_defaults() {
        let rules = rules(POLICY);
        let maintainer = who("mia", &["maintainers"]);
        assert!(rules.decide(&maintainer, "db", Target::Tag("v1"), PushOp::Create).allowed);
        assert!(!rules.decide(&maintainer, "db", Target::Tag("v1"), PushOp::Move).allowed);
        let anyone = who("zed", &[]);
        assert!(rules.decide(&anyone, "db", Target::Tag("nightly"), PushOp::Create).allowed, "default: create tags");
        assert!(!rules.decide(&anyone, "db", Target::Tag("nightly"), PushOp::Delete).allowed);
        let none = PushRules::default();
        assert!(none.decide(&anyone, "db", Target::Branch("x"), PushOp::FastForward).allowed);
        assert!(!none.decide(&anyone, "db", Target::Branch("x"), PushOp::Force).allowed);
        assert!(!none.decide(&anyone, "db", Target::Other("refs/internal/create"), PushOp::Create).allowed);
    }

    #[test]
    fn ties_combine() {
        let rules = rules(
            r#"
[[auth.push_rules]]
branches = ["main"]
users = ["a"]
allow = ["fast_forward"]
[[auth.push_rules]]
branches = ["main"]
users = ["a"]
allow = ["delete"]
"#,
        );
        let a = who("a", &[]);
        assert!(rules.decide(&a, "db", Target::Branch("main"), PushOp::FastForward).allowed);
        assert!(rules.decide(&a, "db", Target::Branch("main"), PushOp::Delete).allowed);
        assert!(!rules.decide(&a, "db", Target::Branch("main"), PushOp::Force).allowed);
    }

    #[test]
    fn config_names_the_bad_rule() {
        let err = build("[[auth.push_rules]]\ntags = [\"v*\"]\nusers = [\"a\"]\nallow = [\"force\"]\n").unwrap_err();
        assert!(err.contains("auth.push_rules[0].allow") && err.contains("force does not apply to tags"), "{err}");
    }

    const TABLE_RULES: &str = r#"
[[auth.table_rules]]
name = "prices-by-pricing"
databases = ["app_*"]
branches = ["main"]
tables = ["prices"]
changes = ["data"]
groups = ["pricing"]

[[auth.table_rules]]
name = "schema-by-maintainers"
branches = ["main"]
tables = ["*"]
changes = ["schema"]
groups = ["maintainers"]

[[auth.table_rules]]
name = "docs"
branches = ["main"]
tables = ["dolt_docs"]
users = ["writer"]
mode = "evaluate"
"#;

    #[test]
    fn table_rules_decide_per_table_and_kind() {
        let rules = rules(TABLE_RULES);
        let (pricer, maintainer, other) = (who("p", &["pricing"]), who("m", &["maintainers"]), who("o", &[]));
        let decide = |who: &Principal, db: &str, branch: &str, table: &str, kind| {
            rules.decide_table(who, db, branch, table, kind).map(|d| (d.allowed, d.would_refuse.is_some()))
        };
        use TableChangeKind::{Data, Schema};
        assert_eq!(decide(&pricer, "app_eu", "main", "prices", Data), Some((true, false)));
        // Table names compare ignoring case, as Dolt's do.
        assert_eq!(decide(&other, "APP_eu", "main", "PRICES", Data), Some((false, false)));
        assert_eq!(decide(&pricer, "app_eu", "main", "prices", Schema), Some((false, false)));
        assert_eq!(decide(&maintainer, "app_eu", "main", "orders", Schema), Some((true, false)));
        // Nothing covers data of other tables, other databases' prices, or other branches.
        assert_eq!(decide(&other, "app_eu", "main", "orders", Data), None);
        assert_eq!(decide(&other, "crm", "main", "prices", Data), None);
        assert_eq!(decide(&other, "app_eu", "dev", "prices", Schema), None);
        // `*` leaves Dolt's system tables alone; a rule naming one covers it (here, only evaluated).
        assert_eq!(decide(&other, "app_eu", "main", "dolt_ignore", Schema), None);
        assert_eq!(decide(&other, "app_eu", "main", "dolt_docs", Data), Some((true, true)));
        assert!(rules.has_table_rules("app_eu", "main") && !rules.has_table_rules("app_eu", "dev"));
        // Ref verdicts are not touched by table rules.
        assert!(rules.decide(&other, "app_eu", Target::Branch("main"), PushOp::FastForward).allowed);
        let refusal = rules.decide_table(&other, "app_eu", "main", "prices", Data).unwrap();
        assert_eq!(
            refusal.rule,
            r#"rule "prices-by-pricing" (which does not let this user change the data of table "prices")"#
        );
    }

    #[test]
    fn table_rules_are_checked_at_start() {
        let error = build("[[auth.table_rules]]\nbranches = [\"main\"]\ntables = []\neveryone = true\n").unwrap_err();
        assert!(error.contains("auth.table_rules[0].tables") && error.contains("at least one"), "{error}");
        let error = build("[[auth.table_rules]]\nbranches = [\"main\"]\ntables = [\"t\"]\n").unwrap_err();
        assert!(error.contains("auth.table_rules[0]") && error.contains("applies to nobody"), "{error}");
        let error =
            build("[[auth.table_rules]]\nbranches = [\"main\"]\ntables = [\"t\"]\nchanges = []\neveryone = true\n")
                .unwrap_err();
        assert!(error.contains("auth.table_rules[0].changes"), "{error}");
        let error =
            build("[[auth.table_rules]]\nbranches = [\"main\"]\ntables = [\"[\"]\neveryone = true\n").unwrap_err();
        assert!(error.contains("auth.table_rules[0].tables"), "{error}");
    }
}
