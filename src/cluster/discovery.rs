//! Learning each member's cluster role: doltgate logs in to the member's SQL
//! port and reads `@@global.dolt_cluster_role` and `..._epoch` on a timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use super::{Cluster, Role};

const ROLE_QUERY: &str = "SELECT @@global.dolt_cluster_role, @@global.dolt_cluster_role_epoch";
const ROLE_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One role query, bounded in time.
pub async fn query_role(pool: &Pool) -> Result<(Role, u64), String> {
    let row: Option<(Option<String>, Option<u64>)> =
        crate::sql::with_pooled(pool, ROLE_QUERY_TIMEOUT, async |conn| conn.query_first(ROLE_QUERY).await)
            .await
            .map_err(|e| match e {
                crate::sql::SqlError::Failed(reason) => format!(
                    "role query failed: {reason} (for a server that is not in a Dolt cluster, set a fixed role)"
                ),
                other => format!("role query failed: {other}"),
            })?;
    let (role, epoch) = row.ok_or("role query returned no row")?;
    Ok((Role::parse(role.as_deref().unwrap_or_default()), epoch.unwrap_or(0)))
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
