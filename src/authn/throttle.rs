//! What failed credential checks may cost. A check that misses the verdict
//! cache runs Argon2 (a static user) or logs in to Dolt (a SQL user), both
//! expensive by design, so:
//!
//! - Argon2 runs on the blocking pool, [`ARGON2_AT_ONCE`] at a time, never on
//!   the async workers that serve everyone else's calls;
//! - SQL logins run [`SQL_LOGINS_AT_ONCE`] at a time per process;
//! - a source address whose checks failed `auth.failed_logins.per_address`
//!   times within its `window` gets its further checks refused at once
//!   (`UNAVAILABLE`, which clients retry) until `backoff` has passed: a flood from one place burns
//!   neither CPU nor Dolt logins. The backoff is per address, so the real user
//!   elsewhere is not locked out; a user name that fails often from many
//!   places is slowed ([`USER_DELAY`] per check), not refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::auth::FailedLoginsConfig;
use crate::error::GatewayError;

pub const ARGON2_AT_ONCE: usize = 1;
pub const SQL_LOGINS_AT_ONCE: usize = 4;
/// Failures of one user name, from anywhere, before its checks are slowed.
pub const USER_FAILURES_ALLOWED: u32 = 30;
pub const USER_DELAY: Duration = Duration::from_secs(1);
/// Addresses and names remembered at most; the oldest are forgotten first.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures { count: 0, since: now, blocked_until: None }
    }
}

pub struct Throttle {
    settings: Mutex<FailedLoginsConfig>,
    argon2: Semaphore,
    sql_logins: Semaphore,
    by_address: Mutex<HashMap<IpAddr, Failures>>,
    by_user: Mutex<HashMap<String, Failures>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            settings: Mutex::new(FailedLoginsConfig::default()),
            argon2: Semaphore::new(ARGON2_AT_ONCE),
            sql_logins: Semaphore::new(SQL_LOGINS_AT_ONCE),
            by_address: Mutex::default(),
            by_user: Mutex::default(),
        }
    }
}

/// The one throttle of this process, with `settings` from the configuration
/// now in force: counts and slots survive configuration reloads.
pub fn shared(settings: &FailedLoginsConfig) -> std::sync::Arc<Throttle> {
    static SHARED: std::sync::OnceLock<std::sync::Arc<Throttle>> = std::sync::OnceLock::new();
    let throttle = SHARED.get_or_init(Default::default).clone();
    *throttle.settings.lock().expect("throttle") = settings.clone();
    throttle
}

impl Throttle {
    /// Before a fresh check from `from` for `user`: refused while `from` is in
    /// backoff, delayed while `user` fails too often.
    pub async fn admit(&self, from: IpAddr, user: Option<&str>) -> Result<(), GatewayError> {
        let now = Instant::now();
        if let Some(until) = self.by_address.lock().expect("throttle").get(&from).and_then(|f| f.blocked_until) {
            if until > now {
                crate::metrics::metrics().auth_throttled.with_label_values(&["address"]).inc();
                return Err(GatewayError::TooManyFailedLogins { from, retry_after: until - now });
            }
        }
        let window = self.settings.lock().expect("throttle").window;
        let slowed = user.is_some_and(|user| {
            let users = self.by_user.lock().expect("throttle");
            users.get(user).is_some_and(|f| f.count >= USER_FAILURES_ALLOWED && now - f.since < window)
        });
        if slowed {
            crate::metrics::metrics().auth_throttled.with_label_values(&["user"]).inc();
            tokio::time::sleep(USER_DELAY).await;
        }
        Ok(())
    }

    /// After a check that refused the credential.
    pub fn record_failure(&self, from: IpAddr, user: Option<&str>) {
        let now = Instant::now();
        let settings = self.settings.lock().expect("throttle").clone();
        let mut addresses = self.by_address.lock().expect("throttle");
        let failures = count_failure(&mut addresses, from, now, settings.window);
        if failures.count >= settings.per_address && failures.blocked_until.is_none_or(|until| until <= now) {
            failures.blocked_until = Some(now + settings.backoff);
            tracing::warn!(%from, failures = failures.count, backoff = ?settings.backoff, "too many failed logins: checks from this address refused for a while");
        }
        drop(addresses);
        if let Some(user) = user {
            count_failure(&mut self.by_user.lock().expect("throttle"), user.to_owned(), now, settings.window);
        }
    }

    /// Runs an Argon2 verification off the async workers, one slot at a time.
    pub async fn argon2<T: Send + 'static>(&self, verify: impl FnOnce() -> T + Send + 'static) -> T {
        let _slot = self.argon2.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(verify).await.expect("Argon2 verification does not panic")
    }

    /// Runs a SQL login in one of a few slots.
    pub async fn sql_login<T>(&self, login: impl std::future::Future<Output = T>) -> T {
        let _slot = self.sql_logins.acquire().await.expect("never closed");
        login.await
    }
}

/// Counts a failure for `key` in its current window (a new window once the
/// last one is over), forgetting the stalest keys when too many are known.
fn count_failure<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Failures>,
    key: K,
    now: Instant,
    window: Duration,
) -> &mut Failures {
    if map.len() >= REMEMBERED && !map.contains_key(&key) {
        map.retain(|_, f| now - f.since < window || f.blocked_until.is_some_and(|until| until > now));
        if map.len() >= REMEMBERED {
            map.clear();
        }
    }
    let failures = map.entry(key).or_insert_with(|| Failures::new(now));
    if now - failures.since >= window && failures.blocked_until.is_none_or(|until| until <= now) {
        *failures = Failures::new(now);
    }
    failures.count += 1;
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_that_keeps_failing_is_refused_others_are_not() {
        let throttle = Throttle::default();
        let (attacker, user): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        for _ in 0..FailedLoginsConfig::default().per_address {
            throttle.admit(attacker, Some("ci")).await.unwrap();
            throttle.record_failure(attacker, Some("ci"));
        }
        let refused = throttle.admit(attacker, Some("someone")).await.unwrap_err();
        assert!(matches!(refused, GatewayError::TooManyFailedLogins { .. }), "{refused}");
        assert_eq!(refused.grpc_code(), tonic::Code::Unavailable, "clients retry; not a lock-out");
        throttle.admit(user, Some("ci")).await.expect("the real user's address is not refused");
    }
}
