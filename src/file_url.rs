//! The table-file URLs doltgate hands to clients, and their way back.
//!
//! The upstream seals every table-file URL with a key only that process holds,
//! so a GET or PUT must reach the very endpoint that issued it. doltgate
//! replaces the scheme and authority of each URL in a response with its own
//! public origin and puts a signed capability in front of the upstream path:
//! `{origin}/_doltgate/files/{capability}{upstream path}?{query}`. The
//! upstream path and query travel byte for byte, because the upstream checks
//! them against what it sealed.
//!
//! The capability binds the endpoint, the database, the principal, read or
//! write, and an expiry no later than the upstream's own, under an HMAC that
//! also covers the upstream path and query. Any replica holding the same key
//! accepts it: nothing is remembered between the RPC and the transfer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;

use crate::config::{invalid, ConfigError, FileUrlConfig, SecretSource, Secrets};
use crate::error::GatewayError;

pub const PREFIX: &str = "/_doltgate/files/";
const VERSION: u8 = 1;
/// Separates this use of the key from any other.
const CONTEXT: &[u8] = b"doltgate table-file url v1\0";
const TAG_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 32;

/// What a table-file URL lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The configured name of the upstream endpoint that sealed the URL.
    pub endpoint: String,
    pub database: String,
    pub principal: String,
    /// Upload URLs (PUT/POST) are write capabilities; download URLs read ones.
    pub write: bool,
    /// Unix seconds.
    pub expires: u64,
}

/// Signs and checks capabilities.
pub struct UrlSigner {
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// Where an incoming table-file request must go, once its capability holds.
#[derive(Debug, PartialEq, Eq)]
pub struct FileTarget<'a> {
    pub capability: Capability,
    /// The upstream's own path and query, exactly as it issued them.
    pub upstream_path_and_query: &'a str,
}

impl UrlSigner {
    /// The signer `[file_urls]` describes: its key read through `secrets`, or
    /// one random key for the life of the process (kept across reloads, so
    /// URLs handed out before one still work).
    pub fn build(config: &FileUrlConfig, secrets: &Secrets) -> Result<UrlSigner, ConfigError> {
        static PROCESS_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let configured = secrets.one_of(&[
            ("file_urls.key_env".into(), config.key_env.as_deref().map(SecretSource::Env)),
            ("file_urls.key_file".into(), config.key_file.as_deref().map(SecretSource::File)),
        ])?;
        let key_name = if config.key_env.is_some() { "file_urls.key_env" } else { "file_urls.key_file" };
        let key = configured.unwrap_or_else(|| {
            PROCESS_KEY
                .get_or_init(|| {
                    let mut key = [0u8; 32];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("randomness");
                    key
                })
                .to_vec()
        });
        UrlSigner::new(&key, config.ttl()).map_err(|reason| invalid(key_name, reason))
    }

    pub fn new(key: &[u8], ttl: Duration) -> Result<UrlSigner, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!("the key has {} bytes; use at least {MIN_KEY_BYTES} random bytes", key.len()));
        }
        Ok(UrlSigner { key: hmac::Key::new(hmac::HMAC_SHA256, key), ttl })
    }

    /// Turns a URL issued by the upstream into one that leads back through
    /// doltgate. `origin` is `scheme://authority` as the client reaches doltgate.
    pub fn to_client_url(
        &self,
        upstream_url: &str,
        grant: &CapabilityGrant<'_>,
        origin: &str,
    ) -> Result<String, GatewayError> {
        let path_and_query = upstream_path_and_query(upstream_url)?;
        let expires = expiry(self.ttl, upstream_expiry(path_and_query));
        let capability = Capability {
            endpoint: grant.endpoint.to_owned(),
            database: grant.database.to_owned(),
            principal: grant.principal.to_owned(),
            write: grant.write,
            expires,
        };
        let token = self.seal(&capability, path_and_query);
        Ok(format!("{origin}{PREFIX}{token}{path_and_query}"))
    }

    fn seal(&self, capability: &Capability, path_and_query: &str) -> String {
        let mut payload = vec![VERSION, u8::from(capability.write)];
        payload.extend_from_slice(&capability.expires.to_le_bytes());
        for text in [&capability.endpoint, &capability.database, &capability.principal] {
            let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
            payload.extend_from_slice(&len.to_le_bytes());
            payload.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
        }
        let tag = hmac::sign(&self.key, &signed_bytes(&payload, path_and_query));
        payload.extend_from_slice(tag.as_ref());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
    }

    /// Checks the capability of an incoming table-file request for `method`.
    pub fn open<'a>(&self, path_and_query: &'a str, write: bool) -> Result<FileTarget<'a>, GatewayError> {
        let rest = path_and_query
            .strip_prefix(PREFIX)
            .ok_or_else(|| GatewayError::NotAFileUrl(format!("path does not start with {PREFIX}")))?;
        let slash = rest
            .find('/')
            .filter(|&i| i > 0)
            .ok_or_else(|| GatewayError::NotAFileUrl("no capability in the path".into()))?;
        let (token, upstream_path_and_query) = rest.split_at(slash);
        let capability = self.verify(token, upstream_path_and_query)?;
        if capability.expires < now_secs() {
            return Err(refused("the URL has expired; ask for a new one"));
        }
        if write && !capability.write {
            return Err(refused("this is a download URL; uploads need an upload URL"));
        }
        if !write && capability.write {
            return Err(refused("this is an upload URL; downloads need a download URL"));
        }
        Ok(FileTarget { capability, upstream_path_and_query })
    }

    fn verify(&self, token: &str, path_and_query: &str) -> Result<Capability, GatewayError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| refused("the capability is not base64url"))?;
        let split = raw.len().checked_sub(TAG_BYTES).ok_or_else(|| refused("the capability is truncated"))?;
        let (payload, tag) = raw.split_at(split);
        hmac::verify(&self.key, &signed_bytes(payload, path_and_query), tag)
            .map_err(|_| refused("the URL's signature does not match (altered, or signed with another key)"))?;
        decode_payload(payload).ok_or_else(|| refused("the capability is malformed"))
    }
}

/// What the URLs of one response may do.
pub struct CapabilityGrant<'a> {
    pub endpoint: &'a str,
    pub database: &'a str,
    pub principal: &'a str,
    pub write: bool,
}

fn signed_bytes(payload: &[u8], path_and_query: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CONTEXT.len() + payload.len() + path_and_query.len());
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(path_and_query.as_bytes());
    bytes
}

fn decode_payload(payload: &[u8]) -> Option<Capability> {
    let (&version, rest) = payload.split_first()?;
    let (&write, rest) = rest.split_first()?;
    if version != VERSION || write > 1 {
        return None;
    }
    let (expires, mut rest) = rest.split_at_checked(8)?;
    let mut texts = Vec::with_capacity(3);
    for _ in 0..3 {
        let (len, after) = rest.split_at_checked(2)?;
        let (text, after) = after.split_at_checked(usize::from(u16::from_le_bytes([len[0], len[1]])))?;
        texts.push(String::from_utf8(text.to_vec()).ok()?);
        rest = after;
    }
    if !rest.is_empty() {
        return None;
    }
    let principal = texts.pop()?;
    let database = texts.pop()?;
    let endpoint = texts.pop()?;
    Some(Capability {
        endpoint,
        database,
        principal,
        write: write == 1,
        expires: u64::from_le_bytes(expires.try_into().ok()?),
    })
}

fn refused(reason: &str) -> GatewayError {
    GatewayError::FileUrlRefused(reason.to_owned())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `now + ttl`, cut to the upstream's own expiry.
fn expiry(ttl: Duration, upstream: Option<u64>) -> u64 {
    let ours = now_secs().saturating_add(ttl.as_secs());
    upstream.map_or(ours, |theirs| ours.min(theirs))
}

/// Dolt's sealed URLs carry `exp` in Unix milliseconds (remotesrv/sealer.go).
fn upstream_expiry(path_and_query: &str) -> Option<u64> {
    let query = path_and_query.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("exp="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| ms / 1000)
}

fn upstream_path_and_query(upstream_url: &str) -> Result<&str, GatewayError> {
    let after_scheme = upstream_url
        .strip_prefix("http://")
        .or_else(|| upstream_url.strip_prefix("https://"))
        .ok_or_else(|| upstream_url_error(upstream_url, "scheme is not http or https"))?;
    let path_start = after_scheme.find('/').ok_or_else(|| upstream_url_error(upstream_url, "it has no path"))?;
    Ok(&after_scheme[path_start..])
}

fn upstream_url_error(url: &str, why: &str) -> GatewayError {
    GatewayError::UpstreamFailed {
        address: "(table-file URL)".into(),
        reason: format!("upstream issued a table-file URL doltgate cannot route ({why}): {url:.120}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEALED: &str =
        "http://127.0.0.1:4001/single_symmetric_key_sealed_request/db/.dolt/noms/abc?exp=99999999999999&nbf=0&nonce=n%2B&req=x_y-z";
    const ORIGIN: &str = "https://gw.example:8443";

    fn signer() -> UrlSigner {
        UrlSigner::new(&[42u8; 32], Duration::from_secs(600)).unwrap()
    }

    fn grant(write: bool) -> CapabilityGrant<'static> {
        CapabilityGrant { endpoint: "dolt-0", database: "db", principal: "alice", write }
    }

    fn client_path(url: &str) -> &str {
        url.strip_prefix(ORIGIN).unwrap()
    }

    #[test]
    fn url_round_trips_byte_exact() {
        let url = signer().to_client_url(SEALED, &grant(false), ORIGIN).unwrap();
        assert!(url.starts_with("https://gw.example:8443/_doltgate/files/"), "{url}");
        let target = signer().open(client_path(&url), false).unwrap();
        assert_eq!(
            target.upstream_path_and_query,
            "/single_symmetric_key_sealed_request/db/.dolt/noms/abc?exp=99999999999999&nbf=0&nonce=n%2B&req=x_y-z"
        );
        assert_eq!(target.capability.endpoint, "dolt-0");
        assert_eq!(target.capability.principal, "alice");
        assert!(!target.capability.write);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let url = signer().to_client_url(SEALED, &grant(false), ORIGIN).unwrap();
        let path = client_path(&url);
        for i in PREFIX.len()..path.len() {
            let mut bytes = path.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let Ok(tampered) = String::from_utf8(bytes) else { continue };
            if tampered == path {
                continue;
            }
            assert!(signer().open(&tampered, false).is_err(), "byte {i} changed yet accepted: {tampered}");
        }
    }

    #[test]
    fn reads_and_writes_do_not_mix() {
        let read = signer().to_client_url(SEALED, &grant(false), ORIGIN).unwrap();
        let write = signer().to_client_url(SEALED, &grant(true), ORIGIN).unwrap();
        let err = signer().open(client_path(&read), true).unwrap_err().to_string();
        assert!(err.contains("download URL"), "{err}");
        assert!(signer().open(client_path(&write), false).is_err());
        assert!(signer().open(client_path(&write), true).unwrap().capability.write);
    }

    #[test]
    fn another_key_or_an_old_url_is_refused() {
        let url = signer().to_client_url(SEALED, &grant(false), ORIGIN).unwrap();
        let other = UrlSigner::new(&[7u8; 32], Duration::from_secs(600)).unwrap();
        let err = other.open(client_path(&url), false).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
        let expired_upstream = SEALED.replace("exp=99999999999999", "exp=1000");
        let url = signer().to_client_url(&expired_upstream, &grant(false), ORIGIN).unwrap();
        let err = signer().open(client_path(&url), false).unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
        assert!(UrlSigner::new(&[1u8; 16], Duration::from_secs(1)).is_err(), "short keys are refused");
    }

    #[test]
    fn foreign_paths_and_garbage_are_refused() {
        for path in ["/single_symmetric_key_sealed_request/db/x", "/_doltgate/files/", "/_doltgate/files//x", "/"] {
            assert!(matches!(signer().open(path, false), Err(GatewayError::NotAFileUrl(_))), "{path}");
        }
        for path in ["/_doltgate/files/dolt-0/x", "/_doltgate/files/AAAA/x", "/_doltgate/files/!!/x"] {
            assert!(matches!(signer().open(path, false), Err(GatewayError::FileUrlRefused(_))), "{path}");
        }
    }

    #[test]
    fn odd_upstream_urls_are_errors() {
        assert!(signer().to_client_url("ftp://x/y", &grant(false), "http://gw").is_err());
        assert!(signer().to_client_url("http://host-only", &grant(false), "http://gw").is_err());
    }
}
