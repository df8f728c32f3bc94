//! Upstream clusters: the Dolt endpoints behind a route, what role each one
//! plays right now, and which of them a read or a write goes to.
//!
//! Writes go only to the primary: the member that says `primary` with the
//! highest epoch. While there is none (mid-failover every member is briefly a
//! standby) writes wait for one, up to `write_wait`; a sidecar setup refuses
//! them at once instead. Reads follow the route's policy and fall back to any
//! member, so they keep working through a failover.

pub mod discovery;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{
    authority_at, check_name, check_positive, invalid, origin_url, ClusterConfig, ClusterKeys, ConfigError,
    EndpointConfig, NoPrimary, ReadPolicy, SecretSource, Secrets, StaticRole,
};
use crate::error::GatewayError;
use crate::upstream::Upstream;

/// A member's role as Dolt reports it (`@@global.dolt_cluster_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
    /// Two members claimed primary at the same epoch; Dolt refuses writes there.
    DetectedBrokenConfig,
    /// Not learned yet, or the last poll failed.
    Unknown,
}

impl Role {
    pub fn parse(text: &str) -> Role {
        match text {
            "primary" => Role::Primary,
            "standby" => Role::Standby,
            "detected_broken_config" => Role::DetectedBrokenConfig,
            _ => Role::Unknown,
        }
    }
}

/// What doltgate currently believes about one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub role: Role,
    pub epoch: u64,
    /// Consecutive failed polls or connections.
    pub failures: u32,
    pub last_error: Option<String>,
    /// A transport failure takes the endpoint out of read rotation until then.
    pub avoid_until: Option<Instant>,
}

impl EndpointStatus {
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.failures == 0 || self.avoid_until.is_some_and(|until| now >= until)
    }
}

pub struct Endpoint {
    pub name: String,
    pub upstream: Upstream,
    /// Where to ask for the role; `None` for a fixed role.
    pub(crate) sql: Option<mysql_async::Pool>,
    /// The member's SQL port, also where passwords are checked.
    pub(crate) sql_address: Option<http::uri::Authority>,
    status: Mutex<EndpointStatus>,
}

impl Endpoint {
    fn build(
        keys: &ClusterKeys,
        index: usize,
        config: &EndpointConfig,
        cluster: &ClusterConfig,
        login: Option<&ServiceLogin>,
    ) -> Result<Endpoint, ConfigError> {
        check_name(&keys.endpoint(index, "name"), &config.name)?;
        let upstream = Upstream::build(
            &config.name,
            (&keys.endpoint(index, "remotesapi"), &config.remotesapi),
            (&keys.transport(), &cluster.transport),
        )?;
        let sql_address =
            config.sql.as_deref().map(|sql| authority_at(&keys.endpoint(index, "sql"), sql)).transpose()?;
        let (role, sql) = match (config.role, &sql_address, login) {
            (Some(StaticRole::Primary), _, _) => (Role::Primary, None),
            (Some(StaticRole::Standby), _, _) => (Role::Standby, None),
            (None, Some(address), Some(login)) => {
                (Role::Unknown, Some(crate::sql::pool(address, &login.user, &login.password)))
            }
            (None, _, _) => {
                return Err(invalid(
                    keys.endpoint(index, "sql").trim_end_matches(".sql"),
                    "set sql = \"HOST:PORT\" (to poll the member's cluster role) or a fixed role = \"primary\"",
                ))
            }
        };
        let status = EndpointStatus { role, epoch: 0, failures: 0, last_error: None, avoid_until: None };
        Ok(Endpoint { name: config.name.clone(), upstream, sql, sql_address, status: Mutex::new(status) })
    }

    pub fn status(&self) -> EndpointStatus {
        lock(&self.status).clone()
    }

    fn is_healthy(&self) -> bool {
        lock(&self.status).is_healthy(Instant::now())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("name", &self.name).field("status", &self.status()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// doltgate's own SQL user on a cluster (`sql_user` and its password).
#[derive(Clone)]
pub struct ServiceLogin {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for ServiceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLogin").field("user", &self.user).finish_non_exhaustive()
    }
}

pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Index of the current primary, if any; writers wait on changes.
    primary: watch::Sender<Option<usize>>,
    write_wait: Duration,
    no_primary: NoPrimary,
    writes_url: Option<String>,
    pub(crate) poll_interval: Duration,
    /// doltgate's SQL user and password: role polls log in with it, and
    /// `[auth]` presents it upstream and reads Dolt's tables with it.
    service_login: Option<ServiceLogin>,
    /// Spreads new connections across members for `any` and `prefer_standby`.
    next: AtomicUsize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).field("endpoints", &self.endpoints).finish()
    }
}

impl Cluster {
    /// The cluster `[clusters.NAME]` describes (its fields at `keys`), its
    /// service user's password read through `secrets`.
    pub fn build(
        name: &str,
        keys: &ClusterKeys,
        config: &ClusterConfig,
        secrets: &Secrets,
    ) -> Result<Cluster, ConfigError> {
        check_name(keys.section(), name)?;
        if config.endpoints.is_empty() {
            return Err(invalid(keys.field("endpoints"), "a cluster needs at least one endpoint"));
        }
        let polls = config.endpoints.iter().any(|e| e.role.is_none() && e.sql.is_some());
        if polls && config.sql_user.is_none() {
            return Err(invalid(keys.field("sql_user"), "required to poll member roles over SQL"));
        }
        check_positive(&keys.field("role_poll_interval"), config.role_poll_interval)?;
        let writes_url =
            config.writes_url.as_deref().map(|url| origin_url(&keys.field("writes_url"), url)).transpose()?;
        let password = secrets.one_of(&[
            (keys.field("sql_password"), config.sql_password.as_deref().map(SecretSource::Inline)),
            (keys.field("sql_password_env"), config.sql_password_env.as_deref().map(SecretSource::Env)),
            (keys.field("sql_password_file"), config.sql_password_file.as_deref().map(SecretSource::File)),
        ])?;
        let password = String::from_utf8(password.unwrap_or_default())
            .map_err(|_| invalid(keys.field("sql_password"), "is not UTF-8"))?;
        let service_login = config.sql_user.clone().map(|user| ServiceLogin { user, password });
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| Endpoint::build(keys, i, endpoint, config, service_login.as_ref()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Cluster {
            name: name.to_owned(),
            endpoints,
            primary: watch::Sender::new(None),
            write_wait: config.write_wait,
            no_primary: config.no_primary,
            writes_url,
            poll_interval: config.role_poll_interval,
            service_login,
            next: AtomicUsize::new(0),
        };
        cluster.recompute_primary();
        Ok(cluster)
    }

    /// doltgate's own SQL login on this cluster, if configured.
    pub fn service_login(&self) -> Option<&ServiceLogin> {
        self.service_login.as_ref()
    }

    /// Records a role poll's result for endpoint `index`.
    pub fn record_role(&self, index: usize, result: Result<(Role, u64), String>) {
        let endpoint = &self.endpoints[index];
        {
            let mut status = lock(&endpoint.status);
            match result {
                Ok((role, epoch)) => {
                    if status.role != role || status.epoch != epoch {
                        tracing::info!(cluster = %self.name, endpoint = %endpoint.name, ?role, epoch, "member role");
                    }
                    *status = EndpointStatus { role, epoch, failures: 0, last_error: None, avoid_until: None };
                }
                Err(error) => {
                    if status.failures == 0 {
                        tracing::warn!(cluster = %self.name, endpoint = %endpoint.name, %error, "role poll failed");
                    }
                    status.role = Role::Unknown;
                    status.failures = status.failures.saturating_add(1);
                    status.last_error = Some(error);
                }
            }
        }
        self.recompute_primary();
    }

    /// Why this cluster cannot serve as it should, if it cannot.
    pub fn not_ready_reason(&self) -> Option<String> {
        let now = Instant::now();
        if !self.endpoints.iter().any(|e| lock(&e.status).is_healthy(now)) {
            return Some(format!("cluster {}: no reachable member", self.name));
        }
        if self.current_primary().is_none() && self.no_primary == NoPrimary::Hold {
            return Some(format!("cluster {}: no primary", self.name));
        }
        None
    }

    fn publish(&self) {
        let m = crate::metrics::metrics();
        let now = Instant::now();
        let primary = self.current_primary();
        for (i, e) in self.endpoints.iter().enumerate() {
            let labels = [self.name.as_str(), e.name.as_str()];
            m.endpoint_healthy.with_label_values(&labels).set(lock(&e.status).is_healthy(now) as i64);
            m.endpoint_primary.with_label_values(&labels).set((primary == Some(i)) as i64);
        }
    }

    /// A connection to the endpoint failed: skip it for reads for a while.
    pub fn record_unreachable(&self, index: usize, error: &GatewayError) {
        let endpoint = &self.endpoints[index];
        let mut status = lock(&endpoint.status);
        status.failures = status.failures.saturating_add(1);
        status.last_error = Some(error.to_string());
        status.avoid_until = Some(Instant::now() + self.poll_interval.max(Duration::from_secs(1)));
        drop(status);
        self.publish();
    }

    /// The primary is the member that says `primary` at the highest epoch
    /// any member has reported. A claim at an older epoch is stale, two
    /// claims at the same epoch are Dolt's broken configuration, and a member
    /// that cannot be polled is not trusted: in each case there is none.
    fn recompute_primary(&self) {
        let statuses: Vec<(EndpointStatus, bool)> =
            self.endpoints.iter().map(|e| (e.status(), e.sql.is_none())).collect();
        let newest = statuses.iter().map(|(s, _)| s.epoch).max().unwrap_or(0);
        let claims: Vec<usize> = statuses
            .iter()
            .enumerate()
            .filter(|(_, (s, fixed))| s.role == Role::Primary && s.epoch == newest && (s.failures == 0 || *fixed))
            .map(|(i, _)| i)
            .collect();
        let primary = match claims.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        self.primary.send_if_modified(|current| {
            let changed = *current != primary;
            if changed {
                let name = primary.map(|i| self.endpoints[i].name.as_str()).unwrap_or("none");
                tracing::info!(cluster = %self.name, primary = name, "primary changed");
                crate::metrics::metrics().primary_changes.with_label_values(&[self.name.as_str()]).inc();
                *current = primary;
            }
            changed
        });
        self.publish();
    }

    /// SQL ports to check passwords at: the primary's first.
    pub fn sql_addresses(&self) -> Vec<http::uri::Authority> {
        let primary = self.current_primary();
        let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
        order.sort_by_key(|&i| Some(i) != primary);
        order.into_iter().filter_map(|i| self.endpoints[i].sql_address.clone()).collect()
    }

    pub fn current_primary(&self) -> Option<usize> {
        *self.primary.borrow()
    }

    /// The endpoint a write goes to, waiting up to `write_wait` for a primary.
    pub async fn primary_for_write(&self) -> Result<usize, GatewayError> {
        if let Some(index) = self.current_primary() {
            return Ok(index);
        }
        if self.no_primary == NoPrimary::Refuse {
            let endpoint = self.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(GatewayError::StandbyRefusesWrites { endpoint, writes_url: self.writes_url.clone() });
        }
        let mut changes = self.primary.subscribe();
        let waited = tokio::time::timeout(self.write_wait, changes.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(primary)) => Ok(primary.expect("waited for Some")),
            _ => Err(GatewayError::NoPrimary { cluster: self.name.clone(), waited: self.write_wait }),
        }
    }

    /// Asks the endpoint for its role right now: a Commit moves refs, and a
    /// member demoted since the last poll would accept it and lose it.
    pub async fn confirm_primary(&self, index: usize) -> bool {
        let Some(pool) = &self.endpoints[index].sql else { return true };
        let result = discovery::query_role(pool).await;
        let confirmed = matches!(result, Ok((Role::Primary, _)));
        self.record_role(index, result);
        confirmed && self.current_primary() == Some(index)
    }

    /// Endpoints to try for a read, best first: the connection's earlier
    /// choice when it still fits, then the policy's preference, healthy
    /// members before unhealthy ones.
    pub fn read_candidates(&self, policy: ReadPolicy, affinity: &ConnectionAffinity) -> Vec<usize> {
        let primary = self.current_primary();
        let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
        let pinned = affinity.get(&self.name);
        let preferred = match (pinned, policy) {
            (Some(Affinity::Primary), _) | (None, ReadPolicy::Primary) => primary,
            (Some(Affinity::Endpoint(i)), _) if i < order.len() && self.endpoints[i].is_healthy() => Some(i),
            (_, ReadPolicy::Primary) => primary,
            (_, ReadPolicy::PreferStandby | ReadPolicy::Any) => {
                let pool: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| self.endpoints[i].is_healthy())
                    .filter(|&i| policy == ReadPolicy::Any || Some(i) != primary)
                    .collect();
                let choice = if pool.is_empty() {
                    primary
                } else {
                    Some(pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()])
                };
                if let Some(i) = choice {
                    affinity.set(&self.name, Affinity::Endpoint(i));
                }
                choice
            }
        };
        // Healthy first, the preferred one at the very front; the primary
        // before standbys otherwise, as it has everything.
        order.sort_by_key(|&i| (Some(i) != preferred, !self.endpoints[i].is_healthy(), Some(i) != primary));
        order
    }
}

/// What a client connection has been bound to, per cluster: reads from the
/// member it started on (one `dolt` command sees one consistent store), and
/// after its first write, reads from the primary (a push compares its root
/// against the primary's).
#[derive(Debug, Default)]
pub struct ConnectionAffinity(Mutex<HashMap<String, Affinity>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Endpoint(usize),
    Primary,
}

impl ConnectionAffinity {
    fn get(&self, cluster: &str) -> Option<Affinity> {
        lock(&self.0).get(cluster).copied()
    }

    fn set(&self, cluster: &str, affinity: Affinity) {
        lock(&self.0).insert(cluster.to_owned(), affinity);
    }

    pub fn pin_to_primary(&self, cluster: &str) {
        self.set(cluster, Affinity::Primary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportConfig;

    /// Two polled members (the SQL pools connect lazily; polls are simulated).
    fn cluster(no_primary: NoPrimary, write_wait: Duration) -> Cluster {
        let endpoint = |name: &str| EndpointConfig {
            name: name.into(),
            remotesapi: "127.0.0.1:1".into(),
            sql: Some("127.0.0.1:1".into()),
            role: None,
        };
        let config = ClusterConfig {
            endpoints: vec![endpoint("dolt-0"), endpoint("dolt-1")],
            sql_user: Some("doltgate".into()),
            sql_password: None,
            sql_password_env: None,
            sql_password_file: None,
            role_poll_interval: Duration::from_secs(1),
            write_wait,
            no_primary,
            writes_url: Some("https://dolt.example.com".into()),
            transport: TransportConfig::default(),
        };
        let topology = crate::config::Topology {
            clusters: std::collections::BTreeMap::from([("main".to_owned(), config.clone())]),
            routes: Vec::new(),
            single: false,
        };
        Cluster::build("main", &topology.keys("main"), &config, &Secrets::read()).unwrap()
    }

    #[tokio::test]
    async fn primary_is_the_highest_epoch_primary_and_follows_failover() {
        let c = cluster(NoPrimary::Hold, Duration::from_secs(1));
        assert_eq!(c.current_primary(), None, "nothing known before the first poll");
        c.record_role(0, Ok((Role::Primary, 1)));
        c.record_role(1, Ok((Role::Standby, 1)));
        assert_eq!(c.current_primary(), Some(0));
        // Graceful failover: the old primary steps down first, then the standby takes over.
        c.record_role(0, Ok((Role::Standby, 2)));
        assert_eq!(c.current_primary(), None);
        c.record_role(1, Ok((Role::Primary, 2)));
        assert_eq!(c.current_primary(), Some(1));
        // A stale claim at a lower epoch loses.
        c.record_role(0, Ok((Role::Primary, 1)));
        assert_eq!(c.current_primary(), Some(1));
        // A primary that cannot be polled is not trusted, and the stale claim does not take over.
        c.record_role(1, Err("connection refused".into()));
        assert_eq!(c.current_primary(), None);
        c.record_role(1, Ok((Role::Primary, 2)));
        assert_eq!(c.current_primary(), Some(1));
    }

    #[tokio::test]
    async fn writes_wait_for_a_primary_then_give_up_clearly() {
        let c = Arc::new(cluster(NoPrimary::Hold, Duration::from_secs(5)));
        let later = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.record_role(1, Ok((Role::Primary, 3)));
        });
        assert_eq!(c.primary_for_write().await.unwrap(), 1);

        let c = cluster(NoPrimary::Hold, Duration::from_millis(50));
        let err = c.primary_for_write().await.unwrap_err();
        assert!(matches!(err, GatewayError::NoPrimary { .. }));
        assert!(err.to_string().contains("cluster \"main\" has no primary"), "{err}");
    }

    #[tokio::test]
    async fn sidecar_refuses_writes_at_once_naming_where_to_go() {
        let c = cluster(NoPrimary::Refuse, Duration::from_secs(60));
        c.record_role(0, Ok((Role::Standby, 4)));
        let err = tokio::time::timeout(Duration::from_secs(1), c.primary_for_write()).await.unwrap().unwrap_err();
        assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("https://dolt.example.com"), "{err}");
    }

    #[tokio::test]
    async fn reads_follow_policy_and_stick_to_a_connection() {
        let c = cluster(NoPrimary::Hold, Duration::from_secs(1));
        c.record_role(0, Ok((Role::Primary, 1)));
        c.record_role(1, Ok((Role::Standby, 1)));
        let conn = ConnectionAffinity::default();
        assert_eq!(c.read_candidates(ReadPolicy::Primary, &conn), vec![0, 1]);
        assert_eq!(c.read_candidates(ReadPolicy::PreferStandby, &conn), vec![1, 0]);
        assert_eq!(c.read_candidates(ReadPolicy::PreferStandby, &conn), vec![1, 0], "same member again");
        conn.pin_to_primary("main");
        assert_eq!(c.read_candidates(ReadPolicy::PreferStandby, &conn), vec![0, 1], "after a write: the primary");

        // An unreachable standby drops behind the primary for new connections.
        c.record_unreachable(1, &GatewayError::NoDatabase);
        assert_eq!(c.read_candidates(ReadPolicy::PreferStandby, &ConnectionAffinity::default()), vec![0, 1]);
        // With no primary at all, reads still have somewhere to go.
        c.record_role(0, Ok((Role::Standby, 2)));
        assert_eq!(c.read_candidates(ReadPolicy::Primary, &ConnectionAffinity::default()).len(), 2);
    }
}
