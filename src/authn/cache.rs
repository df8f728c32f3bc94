//! Recent authentication verdicts, keyed by a digest of the credential (never
//! the credential itself), bounded in size and time. Refusals are kept for a
//! shorter time than acceptances, so a corrected password works soon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Principal;
use crate::config::auth::AuthCacheConfig;

pub type Key = [u8; 32];

/// A digest of the parts that decide a verdict, each length-prefixed so that
/// no two different part lists collide.
pub fn key(parts: &[&[u8]]) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part);
    }
    context.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

type Verdict = Result<Principal, String>;

pub struct VerdictCache {
    entries: Mutex<HashMap<Key, (Instant, Verdict)>>,
    ttl: Duration,
    failure_ttl: Duration,
    max_entries: usize,
}

impl VerdictCache {
    pub fn new(config: &AuthCacheConfig) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl: config.ttl,
            failure_ttl: config.failure_ttl,
            max_entries: config.max_entries,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Verdict> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = match entries.get(key) {
            Some((until, verdict)) if *until > Instant::now() => Some(verdict.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        let result = if found.is_some() { "hit" } else { "miss" };
        crate::metrics::metrics().auth_cache.with_label_values(&[result]).inc();
        found
    }

    pub fn remember_success(&self, key: Key, principal: &Principal) {
        let ttl = super::trust_for(self.ttl, principal.expires);
        self.insert(key, ttl, Ok(principal.clone()));
    }

    pub fn remember_failure(&self, key: Key, reason: &str) {
        self.insert(key, self.failure_ttl, Err(reason.to_owned()));
    }

    fn insert(&self, key: Key, ttl: Duration, verdict: Verdict) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries {
            entries.retain(|_, (until, _)| *until > now);
        }
        // Still full of live entries: drop the one closest to expiring.
        if entries.len() >= self.max_entries {
            if let Some(oldest) = entries.iter().min_by_key(|(_, (until, _))| *until).map(|(k, _)| *k) {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now + ttl, verdict));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize) -> VerdictCache {
        VerdictCache::new(&AuthCacheConfig {
            ttl: Duration::from_secs(60),
            failure_ttl: Duration::from_millis(30),
            max_entries,
        })
    }

    fn alice() -> Principal {
        Principal { name: "alice".into(), groups: vec![], expires: None, email: None }
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(key(&[b"a"]), key(&[b"a"]));
    }

    #[test]
    fn failures_expire_sooner_than_successes() {
        let cache = cache(10);
        cache.remember_success(key(&[b"good"]), &alice());
        cache.remember_failure(key(&[b"bad"]), "wrong password");
        assert_eq!(cache.get(&key(&[b"good"])).unwrap().unwrap(), alice());
        assert_eq!(cache.get(&key(&[b"bad"])).unwrap().unwrap_err(), "wrong password");
        std::thread::sleep(Duration::from_millis(50));
        assert!(cache.get(&key(&[b"bad"])).is_none());
        assert!(cache.get(&key(&[b"good"])).is_some());
    }

    #[test]
    fn size_is_bounded() {
        let cache = cache(3);
        for i in 0u32..10 {
            cache.remember_success(key(&[&i.to_le_bytes()]), &alice());
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn expired_proofs_are_not_kept() {
        let cache = cache(3);
        let expired = Principal { expires: Some(std::time::SystemTime::UNIX_EPOCH), ..alice() };
        cache.remember_success(key(&[b"old"]), &expired);
        assert!(cache.get(&key(&[b"old"])).is_none());
    }
}
