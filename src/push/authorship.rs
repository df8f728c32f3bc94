//! Author e-mail rules: which e-mail the commits a pusher adds must carry,
//! derived from who the pusher is and where that identity comes from.
//!
//! A template is a glob in which `{user}` stands for the pusher's name
//! without its source (`corp-sso:ann` is `ann`) and `{email}` for the
//! verified e-mail their identity provider vouched for (a JWT's `email`
//! claim, unless `email_verified` is false). Both are escaped, so a name
//! cannot widen the pattern. Templates can differ per identity source: a
//! JWT provider's namespace, or `local` for users without one (static,
//! SQL-password, Dolt client-key and `dolt login` users).

use std::collections::BTreeMap;

use super::rules::IGNORING_CASE;
use crate::authn::Principal;
use crate::config::{invalid, ConfigError};
use crate::storage::message::Commit;
use crate::storage::Address;

/// The source name of users whose names carry no `namespace:` prefix.
pub const LOCAL_SOURCE: &str = "local";

/// A rule's author e-mail templates.
#[derive(Debug)]
pub struct AuthorEmails {
    default: Option<String>,
    by_source: BTreeMap<String, String>,
}

impl AuthorEmails {
    /// From a rule's `author_email` and `author_email_by_source` (at `key`);
    /// `None` when it sets neither.
    pub fn build(
        key: &str,
        default: Option<&String>,
        by_source: &BTreeMap<String, String>,
    ) -> Result<Option<AuthorEmails>, ConfigError> {
        if let Some(template) = default {
            check_template(&format!("{key}.author_email"), template)?;
        }
        for (source, template) in by_source {
            check_template(&format!("{key}.author_email_by_source.{source}"), template)?;
        }
        if default.is_none() && by_source.is_empty() {
            return Ok(None);
        }
        Ok(Some(AuthorEmails { default: default.cloned(), by_source: by_source.clone() }))
    }

    /// What is wrong with the author e-mail of `commit` (at `address`)
    /// pushed by `pusher`, if anything.
    pub fn problem(&self, pusher: &Principal, address: &Address, commit: &Commit) -> Option<String> {
        let (source, user) = source_and_user(&pusher.name);
        let Some(template) = self.by_source.get(source).or(self.default.as_ref()) else {
            return Some(format!("no author e-mail is set for identity source {source:?}"));
        };
        if template.contains("{email}") && pusher.email.is_none() {
            return Some(format!("the rule wants the pusher's e-mail, and {} has none", pusher.name));
        }
        let pattern = pattern(template, user, pusher.email.as_deref().unwrap_or_default());
        if pattern.as_ref().is_ok_and(|p| p.matches_with(&commit.email, IGNORING_CASE)) {
            return None;
        }
        let wanted = pattern.map(|p| p.as_str().to_owned()).unwrap_or_else(|e| e.to_string());
        Some(format!(
            "author e-mail {:?} of commit {address} does not match {wanted:?}",
            crate::authn::shown(&commit.email)
        ))
    }
}

/// A principal's identity source and its name within it.
fn source_and_user(name: &str) -> (&str, &str) {
    match name.split_once(':') {
        Some((source, user)) => (source, user),
        None => (LOCAL_SOURCE, name),
    }
}

fn pattern(template: &str, user: &str, email: &str) -> Result<glob::Pattern, glob::PatternError> {
    let filled =
        template.replace("{user}", &glob::Pattern::escape(user)).replace("{email}", &glob::Pattern::escape(email));
    glob::Pattern::new(&filled)
}

fn check_template(key: &str, template: &str) -> Result<(), ConfigError> {
    pattern(template, "someone", "someone@example.com")
        .map(drop)
        .map_err(|e| invalid(key, format!("{template:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, email: Option<&str>) -> Principal {
        Principal { name: name.into(), groups: Vec::new(), expires: None, email: email.map(Into::into) }
    }

    fn by(email: &str) -> Commit {
        Commit { email: email.into(), ..Commit::default() }
    }

    #[test]
    fn templates_follow_the_identity_source() {
        let by_source = BTreeMap::from([
            ("corp-sso".to_owned(), "{email}".to_owned()),
            (LOCAL_SOURCE.to_owned(), "{user}@db.example".to_owned()),
        ]);
        let rules = AuthorEmails::build("r", None, &by_source).unwrap().unwrap();
        let at = Address::EMPTY;
        let erin = who("corp-sso:erin", Some("Erin.Ng@corp.example"));
        assert_eq!(rules.problem(&erin, &at, &by("erin.ng@corp.example")), None, "{{email}}, ignoring case");
        assert!(rules.problem(&erin, &at, &by("erin@db.example")).unwrap().contains("does not match"));
        assert!(rules.problem(&who("corp-sso:erin", None), &at, &by("x")).unwrap().contains("has none"));
        assert_eq!(rules.problem(&who("ann", None), &at, &by("ann@db.example")), None);
        let other = rules.problem(&who("partner:bo", Some("bo@p.example")), &at, &by("bo@p.example")).unwrap();
        assert!(other.contains("no author e-mail is set for identity source \"partner\""), "{other}");
        // A claim cannot widen the pattern it is put into.
        assert!(rules.problem(&who("corp-sso:eve", Some("*")), &at, &by("ceo@corp.example")).is_some());
    }

    #[test]
    fn the_default_covers_sources_not_listed_and_bad_templates_name_their_key() {
        let rules =
            AuthorEmails::build("r", Some(&"{user}@example.com".to_owned()), &BTreeMap::new()).unwrap().unwrap();
        assert_eq!(rules.problem(&who("partner:bo", None), &Address::EMPTY, &by("bo@example.com")), None);
        assert!(AuthorEmails::build("r", None, &BTreeMap::new()).unwrap().is_none());
        let bad = BTreeMap::from([("corp-sso".to_owned(), "[{email}".to_owned())]);
        let error = AuthorEmails::build("r", None, &bad).unwrap_err().to_string();
        assert!(error.contains("r.author_email_by_source.corp-sso"), "{error}");
    }
}
