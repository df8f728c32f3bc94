//! doltgate's one SQL client: every login to a Dolt member's SQL port goes
//! through here — role polls, password checks, reading the mirrored
//! `dolt_branch_control` tables — with one way to build connection options and
//! every exchange bounded in time.

use std::time::Duration;

use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};

/// MySQL's "access denied" error code: a wrong password or an unknown user.
const ER_ACCESS_DENIED: u16 = 1045;

/// Why a SQL exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The server answered and refused the login.
    #[error("{0}")]
    Denied(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Anything else: unreachable, a protocol error, a failed query.
    #[error("{0}")]
    Failed(String),
}

impl From<mysql_async::Error> for SqlError {
    fn from(err: mysql_async::Error) -> SqlError {
        match err {
            mysql_async::Error::Server(server) if server.code == ER_ACCESS_DENIED => SqlError::Denied(server.message),
            other => SqlError::Failed(other.to_string()),
        }
    }
}

/// Options to log in to `address` as `user` over TCP.
fn options(address: &http::uri::Authority, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(address.host().to_owned())
        .tcp_port(address.port_u16().unwrap_or(3306))
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
}

/// A small pool toward one member's SQL port, for queries repeated on a
/// timer; connections are made lazily.
pub fn pool(address: &http::uri::Authority, user: &str, password: &str) -> Pool {
    let constraints = PoolConstraints::new(0, 2).expect("0 <= 2");
    let pool_opts =
        PoolOpts::default().with_constraints(constraints).with_inactive_connection_ttl(Duration::from_secs(60));
    Pool::new(options(address, user, password).pool_opts(pool_opts))
}

/// Runs `exchange` on a fresh connection as `user`, all within `limit`
/// (login included), then closes the connection.
pub async fn with_login<T>(
    address: &http::uri::Authority,
    user: &str,
    password: &str,
    limit: Duration,
    exchange: impl AsyncFnOnce(&mut Conn) -> Result<T, mysql_async::Error>,
) -> Result<T, SqlError> {
    let work = async {
        let mut conn = Conn::new(options(address, user, password)).await?;
        let result = exchange(&mut conn).await;
        let _ = conn.disconnect().await;
        Ok::<T, SqlError>(result?)
    };
    tokio::time::timeout(limit, work).await.map_err(|_| SqlError::Timeout(limit))?
}

/// Runs `exchange` on a connection from `pool`, within `limit`.
pub async fn with_pooled<T>(
    pool: &Pool,
    limit: Duration,
    exchange: impl AsyncFnOnce(&mut Conn) -> Result<T, mysql_async::Error>,
) -> Result<T, SqlError> {
    let work = async {
        let mut conn = pool.get_conn().await?;
        Ok::<T, SqlError>(exchange(&mut conn).await?)
    };
    tokio::time::timeout(limit, work).await.map_err(|_| SqlError::Timeout(limit))?
}
