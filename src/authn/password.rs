//! Password proofs: a static user's Argon2 hash from the config, or a real
//! login to the cluster's SQL port as the user (Dolt's own user table decides,
//! host patterns and all).

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{unauthenticated, Principal};
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::sql::SqlError;

/// A login that has not answered by then says nothing about the password.
const SQL_LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct StaticUser {
    hash: String,
    groups: Vec<String>,
}

impl StaticUser {
    pub fn new(hash: &str, groups: &[String]) -> Self {
        Self { hash: hash.to_owned(), groups: groups.to_vec() }
    }

    pub fn verify(&self, user: &str, password: &str) -> Result<Principal, GatewayError> {
        let hash = PasswordHash::new(&self.hash).map_err(|_| unauthenticated("stored hash is unreadable"))?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .map_err(|_| unauthenticated(format!("wrong password for user {:?}", super::shown(user))))?;
        Ok(Principal { name: user.to_owned(), groups: self.groups.clone(), expires: None, email: None })
    }
}

/// A PHC-format Argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).map_err(|_| "no randomness")?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| e.to_string())?.to_string())
}

/// Logs in to the cluster's SQL port as `user`: the primary first, then the
/// other members (users replicate across a Dolt cluster).
pub async fn check_sql_login(cluster: &Cluster, user: &str, password: &str) -> Result<Principal, GatewayError> {
    let addresses = cluster.sql_addresses();
    if addresses.is_empty() {
        return Err(unauthenticated(format!(
            "cannot check the password of {:?}: cluster {:?} has no SQL address (set endpoints[].sql) and no static user matches",
            super::shown(user),
            cluster.name
        )));
    }
    let mut last_error = String::new();
    for address in addresses {
        let login = crate::sql::with_login(&address, user, password, SQL_LOGIN_TIMEOUT, async |_| Ok(())).await;
        match login {
            Ok(()) => {
                crate::metrics::metrics().auth_sql_logins.with_label_values(&["accepted"]).inc();
                return Ok(Principal { name: user.to_owned(), groups: Vec::new(), expires: None, email: None });
            }
            Err(SqlError::Denied(message)) => {
                crate::metrics::metrics().auth_sql_logins.with_label_values(&["refused"]).inc();
                tracing::debug!(user = %super::shown(user), message = %super::shown(&message), "SQL login refused");
                return Err(unauthenticated(format!(
                    "wrong password for user {:?} (or no such user)",
                    super::shown(user)
                )));
            }
            Err(unreachable) => {
                crate::metrics::metrics().auth_sql_logins.with_label_values(&["error"]).inc();
                last_error = format!("{address}: {unreachable}");
            }
        }
    }
    Err(GatewayError::UpstreamUnreachable {
        address: "SQL port".into(),
        reason: format!("cannot check passwords: {last_error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_hashes_verify_only_their_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
        let user = StaticUser::new(&hash, &["ops".to_owned()]);
        let principal = user.verify("ci", "correct horse").unwrap();
        assert_eq!(principal.groups, ["ops"]);
        let err = user.verify("ci", "battery staple").unwrap_err().to_string();
        assert!(err.contains("wrong password for user \"ci\""), "{err}");
        assert!(!err.contains("battery"), "never echo the password");
    }
}
