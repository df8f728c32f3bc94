//! Dolt's own client keys. With `dolt creds new` (or `dolt login`) and no
//! `--user`, the CLI signs every call with its Ed25519 key: a JWT with
//! `alg EdDSA`, header `kid` = the key id, `iss dolt-client.dolthub.com`,
//! `sub doltClientCredentials/<kid>`, `aud` = the host it dialled and a 30 s
//! `exp` (go/libraries/doltcore/creds/creds.go and
//! go/libraries/doltcore/env/grpc_dial_provider.go in Dolt's source).
//!
//! Keys are written in Dolt's base32 (`0-9a-v`, no padding): the public key
//! as `dolt creds ls -v` prints it (52 characters), and its id as the base32
//! of SHA-512/224 of the key (45 characters).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use sha2::Digest;

use super::{unauthenticated, Principal};
use crate::config::auth::UserConfig;
use crate::config::{invalid, ConfigError};
use crate::error::GatewayError;

pub const DOLT_CLIENT_ISSUER: &str = "dolt-client.dolthub.com";
const SUBJECT_PREFIX: &str = "doltClientCredentials/";
/// Dolt's client tokens live 30 s; this forgives small clock skew only.
const LEEWAY_SECS: u64 = 30;

fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
    spec.encoding().expect("valid base32 alphabet")
}

/// Reads a public key as `dolt creds ls -v` prints it.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = base32()
        .decode(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a Dolt public key (52 characters of 0-9a-v, from `dolt creds ls -v`)"))?;
    bytes.try_into().map_err(|_| format!("{text:?} does not decode to a 32-byte Ed25519 key"))
}

/// The key id Dolt derives from a public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    base32().encode(&sha2::Sha512_224::digest(public_key))
}

/// A public key and the user it proves.
pub struct RegisteredKey {
    key: DecodingKey,
    user: String,
    groups: Vec<String>,
    /// The e-mail an identity provider vouched for when the key was registered.
    email: Option<String>,
}

impl RegisteredKey {
    pub fn new(public: &[u8; 32], user: String, groups: Vec<String>) -> Result<RegisteredKey, String> {
        let x = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, public);
        let key = DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?;
        Ok(RegisteredKey { key, user, groups, email: None })
    }

    pub fn with_email(self, email: Option<String>) -> RegisteredKey {
        RegisteredKey { email, ..self }
    }
}

/// Keys registered outside the configuration (through the login page), found
/// by key id. `Ok(None)`: no such key, or it was revoked.
pub trait KeyDirectory: Send + Sync {
    fn find<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<Option<Arc<RegisteredKey>>, GatewayError>>;
}

pub struct DoltKeys {
    by_id: HashMap<String, Arc<RegisteredKey>>,
    audiences: Vec<String>,
}

impl DoltKeys {
    /// The keys registered in `[[auth.users]] dolt_keys`, accepted for `audiences`.
    pub fn build(users: &[UserConfig], audiences: &[String]) -> Result<Self, ConfigError> {
        let mut by_id = HashMap::new();
        for (i, user) in users.iter().enumerate() {
            for (k, text) in user.dolt_keys.iter().enumerate() {
                let bad = |reason: String| invalid(format!("auth.users[{i}].dolt_keys[{k}]"), reason);
                let public = parse_public_key(text).map_err(bad)?;
                let key = RegisteredKey::new(&public, user.name.clone(), user.groups.clone()).map_err(bad)?;
                by_id.insert(key_id(&public), Arc::new(key));
            }
        }
        Ok(Self { by_id, audiences: audiences.to_vec() })
    }

    /// Verifies a Dolt client token against the configured keys, then the
    /// registered ones: Dolt puts the host of the remote it signs for in
    /// `aud`, which must be one of the configured audiences.
    pub async fn verify(
        &self,
        token: &str,
        header: &Header,
        registered: Option<&dyn KeyDirectory>,
    ) -> Result<Principal, GatewayError> {
        let kid = header.kid.as_deref().ok_or_else(|| unauthenticated("Dolt client token has no key id"))?;
        let key = match (self.by_id.get(kid), registered) {
            (Some(key), _) => key.clone(),
            (None, Some(directory)) => directory.find(kid).await?.ok_or_else(|| {
                unauthenticated(format!("unknown Dolt client key {kid}: register it with `dolt login`"))
            })?,
            (None, None) => {
                return Err(unauthenticated(format!(
                    "unknown Dolt client key {kid}; register its public key in auth.users[].dolt_keys"
                )))
            }
        };
        self.verify_with(token, kid, &key)
    }

    fn verify_with(&self, token: &str, kid: &str, registered: &RegisteredKey) -> Result<Principal, GatewayError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[DOLT_CLIENT_ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.set_audience(&self.audiences);
        validation.sub = Some(format!("{SUBJECT_PREFIX}{kid}"));
        let data = jsonwebtoken::decode::<super::jwt::Claims>(token, &registered.key, &validation)
            .map_err(|e| unauthenticated(format!("Dolt client token refused: {}", super::jwt::describe(&e))))?;
        Ok(Principal {
            name: registered.user.clone(),
            groups: registered.groups.clone(),
            expires: data.claims.expiry()?,
            email: registered.email.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips_and_ids_have_dolts_length() {
        let key = [7u8; 32];
        let text = base32().encode(&key);
        assert_eq!(text.len(), 52);
        assert_eq!(parse_public_key(&text).unwrap(), key);
        assert_eq!(key_id(&key).len(), 45);
        assert!(parse_public_key("not-a-key").is_err());
        assert!(parse_public_key(&base32().encode(&[1u8; 31])).is_err());
    }
}
