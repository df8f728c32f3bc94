//! Learning each member's cluster role: doltgate logs in to the member's SQL
//! port and reads `@@global.dolt_cluster_role` and `..._epoch` on a timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts};

use super::{Cluster, Role};
use crate::config::{parse_authority, ClusterConfig};

const ROLE_QUERY: &str = "SELECT @@global.dolt_cluster_role, @@global.dolt_cluster_role_epoch";

/// A small pool toward one member's SQL port (connections are made lazily).
pub(crate) fn pool(address: &str, config: &ClusterConfig, password: Option<&str>) -> Result<Pool, String> {
    let authority = parse_authority(address)?;
    let constraints = PoolConstraints::new(0, 2).expect("0 <= 2");
    let opts = OptsBuilder::default()
        .ip_or_hostname(authority.host().to_owned())
        .tcp_port(authority.port_u16().unwrap_or(3306))
        .user(config.sql_user.clone())
        .pass(password.map(str::to_owned))
        .prefer_socket(false)
        .pool_opts(
            PoolOpts::default().with_constraints(constraints).with_inactive_connection_ttl(Duration::from_secs(60)),
        );
    Ok(Pool::new(opts))
}

/// One role query, bounded in time.
pub async fn query_role(pool: &Pool) -> Result<(Role, u64), String> {
    let query = async {
        let mut conn = pool.get_conn().await.map_err(|e| format!("cannot log in over SQL: {e}"))?;
        let row: Option<(Option<String>, Option<u64>)> = conn.query_first(ROLE_QUERY).await.map_err(|e| {
            format!("role query failed: {e} (for a server that is not in a Dolt cluster, set a fixed role)")
        })?;
        let (role, epoch) = row.ok_or("role query returned no row")?;
        Ok((Role::parse(role.as_deref().unwrap_or_default()), epoch.unwrap_or(0)))
    };
    tokio::time::timeout(Duration::from_secs(5), query).await.map_err(|_| "role query timed out after 5s".to_owned())?
}

/// Polls every member with a SQL address until the cluster is dropped.
pub fn spawn_pollers(cluster: &Arc<Cluster>) {
    for (index, endpoint) in cluster.endpoints.iter().enumerate() {
        let Some(pool) = endpoint.sql.clone() else { continue };
        let weak = Arc::downgrade(cluster);
        let interval = cluster.poll_interval;
        tokio::spawn(poll_loop(weak, index, pool, interval));
    }
}

async fn poll_loop(cluster: Weak<Cluster>, index: usize, pool: Pool, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = query_role(&pool).await;
        let Some(cluster) = cluster.upgrade() else { break };
        cluster.record_role(index, result);
    }
    let _ = pool.disconnect().await;
}
