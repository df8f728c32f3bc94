//! What an authenticated caller may do to a database: `[[auth.grants]]`
//! give `read` or `write` on database globs to users and groups. Writes are
//! the three write RPCs and table-file uploads; everything else is a read.
//! No grant, no access.

use crate::authn::Principal;
use crate::config::auth::GrantConfig;
use crate::config::{invalid, ConfigError, Permission};
use crate::error::GatewayError;

#[derive(Debug)]
pub struct Grants(Vec<Grant>);

impl FromIterator<Grant> for Grants {
    fn from_iter<I: IntoIterator<Item = Grant>>(grants: I) -> Grants {
        Grants(grants.into_iter().collect())
    }
}

#[derive(Debug)]
struct Grant {
    databases: Vec<glob::Pattern>,
    users: Vec<String>,
    groups: Vec<String>,
    permission: Permission,
}

impl Grants {
    /// The grants `[[auth.grants]]` describe, or the first that cannot hold.
    pub fn build(config: &[GrantConfig]) -> Result<Grants, ConfigError> {
        config.iter().enumerate().map(|(i, grant)| Grant::build(&format!("auth.grants[{i}]"), grant)).collect()
    }

    /// The strongest permission `principal` holds on `database`.
    pub fn permission(&self, principal: &Principal, database: &str) -> Option<Permission> {
        let database = database.to_lowercase();
        self.0
            .iter()
            .filter(|g| g.applies_to(principal) && g.databases.iter().any(|p| p.matches(&database)))
            .map(|g| g.permission)
            .max()
    }

    pub fn check(&self, principal: &Principal, database: &str, needed: Permission) -> Result<(), GatewayError> {
        if self.permission(principal, database).is_some_and(|held| held >= needed) {
            return Ok(());
        }
        crate::metrics::metrics().authz_denied.with_label_values(&[&needed.to_string()]).inc();
        Err(GatewayError::PermissionDenied { user: principal.name.clone(), database: database.to_owned(), needed })
    }
}

impl Grant {
    fn build(key: &str, grant: &GrantConfig) -> Result<Grant, ConfigError> {
        if grant.databases.is_empty() {
            return Err(invalid(format!("{key}.databases"), "name at least one database glob (\"*\" for all)"));
        }
        if grant.users.is_empty() && grant.groups.is_empty() {
            return Err(invalid(key, "grants to nobody: set users or groups"));
        }
        // Database names match case-insensitively, as Dolt's do.
        let databases = grant
            .databases
            .iter()
            .map(|glob| {
                glob::Pattern::new(&glob.to_lowercase())
                    .map_err(|e| invalid(format!("{key}.databases"), format!("{glob:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Grant { databases, users: grant.users.clone(), groups: grant.groups.clone(), permission: grant.permission })
    }

    fn applies_to(&self, principal: &Principal) -> bool {
        self.users.iter().any(|u| u == &principal.name) || self.groups.iter().any(|g| principal.groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(databases: &[&str], users: &[&str], groups: &[&str], permission: Permission) -> GrantConfig {
        GrantConfig {
            databases: databases.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            permission,
        }
    }

    fn who(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            expires: None,
            email: None,
        }
    }

    #[test]
    fn strongest_matching_grant_wins_and_write_implies_read() {
        let grants = Grants::build(&[
            grant(&["*"], &[], &["staff"], Permission::Read),
            grant(&["team_*"], &["bob"], &[], Permission::Write),
        ])
        .unwrap();
        let bob = who("bob", &["staff"]);
        assert_eq!(grants.permission(&bob, "Team_A"), Some(Permission::Write));
        assert!(grants.check(&bob, "team_a", Permission::Read).is_ok());
        assert!(grants.check(&bob, "other", Permission::Read).is_ok());
        let err = grants.check(&bob, "other", Permission::Write).unwrap_err();
        assert_eq!(err.grpc_code(), tonic::Code::PermissionDenied);
        assert!(err.to_string().contains("\"bob\"") && err.to_string().contains("write"), "{err}");
    }

    #[test]
    fn no_grant_means_no_access() {
        let grants = Grants::build(&[grant(&["db"], &["alice"], &[], Permission::Write)]).unwrap();
        assert!(grants.check(&who("mallory", &[]), "db", Permission::Read).is_err());
        assert!(grants.check(&who("alice", &[]), "db2", Permission::Read).is_err());
    }
}
