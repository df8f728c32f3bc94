//! The push rule language: which ref changes a user may make.
//!
//! For one ref, the matching rules with the most specific patterns decide
//! (most literal characters in the ref pattern, then in the database
//! pattern), and equally specific ones combine. A user those rules do not
//! name may do nothing to the ref: naming `main` in a rule protects it from
//! everyone else. Refs no rule matches fall to the built-in default: create
//! and fast-forward branches, create tags, nothing else.

use std::collections::HashSet;

use crate::authn::Principal;
use crate::config::auth::{PushOp, PushRuleConfig};
use crate::config::{invalid, ConfigError};

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
    allow: HashSet<PushOp>,
}

/// Which rules decided, for messages and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// e.g. `rule "protect-main" (allows fast_forward)`, or the default.
    pub rule: String,
}

#[derive(Debug, Default)]
pub struct PushRules(Vec<Rule>);

/// Dolt finds branches and tags ignoring case (`strings.EqualFold`), so a
/// rule about `release/*` is about `RELEASE/x` too.
const IGNORING_CASE: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: false, require_literal_separator: false, require_literal_leading_dot: false };

const DEFAULT_BRANCH: &[PushOp] = &[PushOp::Create, PushOp::FastForward];
const DEFAULT_TAG: &[PushOp] = &[PushOp::Create];

impl FromIterator<Rule> for PushRules {
    fn from_iter<I: IntoIterator<Item = Rule>>(rules: I) -> PushRules {
        PushRules(rules.into_iter().collect())
    }
}

impl Rule {
    fn build(key: &str, index: usize, rule: &PushRuleConfig) -> Result<Rule, ConfigError> {
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
        if rule.users.is_empty() && rule.groups.is_empty() {
            return Err(invalid(key, "applies to nobody: set users or groups (a rule with allow = [] protects refs)"));
        }
        // Database names compare case-insensitively, as Dolt resolves them.
        let compile = |field: &str, patterns: &[String], lowercase: bool| {
            patterns
                .iter()
                .map(|p| {
                    glob::Pattern::new(&if lowercase { p.to_lowercase() } else { p.clone() })
                        .map_err(|e| invalid(format!("{key}.{field}"), format!("{p:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rule {
            name: rule.name.clone().unwrap_or_else(|| format!("push_rules[{index}]")),
            family,
            patterns: compile(field, patterns, false)?,
            databases: compile("databases", &rule.databases, true)?,
            users: rule.users.clone(),
            groups: rule.groups.clone(),
            allow: rule.allow.iter().copied().collect(),
        })
    }
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
    /// The rules `[[auth.push_rules]]` describe, or the first that cannot hold.
    pub fn build(config: &[PushRuleConfig]) -> Result<PushRules, ConfigError> {
        config.iter().enumerate().map(|(i, rule)| Rule::build(&format!("auth.push_rules[{i}]"), i, rule)).collect()
    }

    /// May `principal` make `op` on `target` in `database`?
    pub fn decide(&self, principal: &Principal, database: &str, target: Target<'_>, op: PushOp) -> Decision {
        let database = database.to_lowercase();
        let (family, name) = match target {
            Target::Branch(name) => (Family::Branches, name),
            Target::Tag(name) => (Family::Tags, name),
            Target::Other(name) => (Family::Refs, name),
        };
        let matching: Vec<(&Rule, (usize, usize))> = self
            .0
            .iter()
            .filter(|rule| rule.family == family)
            .filter_map(|rule| {
                let by_ref =
                    rule.patterns.iter().filter(|p| p.matches_with(name, IGNORING_CASE)).map(specificity).max()?;
                let by_db = rule.databases.iter().filter(|p| p.matches(&database)).map(specificity).max()?;
                Some((rule, (by_ref, by_db)))
            })
            .collect();
        let Some(best) = matching.iter().map(|(_, s)| *s).max() else {
            let default = match family {
                Family::Branches => DEFAULT_BRANCH,
                Family::Tags => DEFAULT_TAG,
                Family::Refs => &[],
            };
            let rule = format!("the default rule (allows {})", describe(default.iter().copied()));
            return Decision { allowed: default.contains(&op), rule };
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
        Decision { allowed: allowed_ops.contains(&op), rule }
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
    fn applies_to(&self, principal: &Principal) -> bool {
        self.users.iter().any(|u| u == &principal.name) || self.groups.iter().any(|g| principal.groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(toml: &str) -> PushRules {
        let text = format!("[upstream]\naddress = \"h:1\"\n[auth]\nupstream_credentials = \"passthrough\"\n{toml}");
        let config = Config::parse(&text).unwrap();
        PushRules::build(&config.auth.unwrap().push_rules).unwrap()
    }

    fn who(name: &str, groups: &[&str]) -> Principal {
        Principal { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), expires: None }
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
        let text = "[upstream]\naddress = \"h:1\"\n[auth]\nupstream_credentials = \"passthrough\"\n[[auth.push_rules]]\ntags = [\"v*\"]\nusers = [\"a\"]\nallow = [\"force\"]\n";
        let config = Config::parse(text).unwrap();
        let err = PushRules::build(&config.auth.unwrap().push_rules).unwrap_err().to_string();
        assert!(err.contains("auth.push_rules[0].allow") && err.contains("force does not apply to tags"), "{err}");
    }
}
