//! Registered keys, kept in a Dolt table on a configured cluster so every
//! replica sees every registration (and Dolt's own replication keeps them):
//! database `login.database`, table `registered_keys`, created on first use
//! by the cluster's service user. Lookups go through a short cache, so a
//! revoked key is refused within `login.cache_ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use mysql_async::prelude::Queryable;

use crate::authn::dolt_keys::{parse_public_key, KeyDirectory, RegisteredKey};
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::sql::SqlError;

const TABLE: &str = "registered_keys";
const SQL_TIMEOUT: Duration = Duration::from_secs(5);
/// An unknown key is looked up again after this; short, so `dolt login`
/// (which polls every 5 s) succeeds soon after a registration.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// One row of the table, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub public_key: String,
    pub user: String,
    /// The e-mail the identity provider vouched for (`[login.oidc]` sign-ins).
    pub email: Option<String>,
    pub registered_at: String,
    pub revoked_at: Option<String>,
}

/// A cached lookup: when it was made and what it found (`None`: no live key).
type Lookup = (Instant, Option<Arc<RegisteredKey>>);

pub struct KeyStore {
    cluster: Arc<Cluster>,
    database: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, Lookup>>,
    schema_ready: tokio::sync::OnceCell<()>,
}

impl KeyStore {
    pub fn new(cluster: Arc<Cluster>, database: &str, ttl: Duration) -> KeyStore {
        KeyStore {
            cluster,
            database: database.to_owned(),
            ttl,
            cache: Mutex::new(HashMap::new()),
            schema_ready: tokio::sync::OnceCell::new(),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Registers `public_key` (Dolt's base32) for `user`, with the e-mail an
    /// identity provider vouched for if any, replacing an earlier registration
    /// of the same key. Returns the key id.
    pub async fn register(&self, public_key: &str, user: &str, email: Option<&str>) -> Result<String, GatewayError> {
        let public = parse_public_key(public_key).map_err(GatewayError::BadLoginRequest)?;
        let key_id = crate::authn::dolt_keys::key_id(&public);
        let statement = format!(
            "REPLACE INTO {} (key_id, public_key, user_name, email, registered_at, revoked_at) VALUES (?, ?, ?, ?, NOW(), NULL)",
            self.table()
        );
        let params = (key_id.clone(), public_key.trim().to_owned(), user.to_owned(), email.map(str::to_owned));
        self.run(async move |conn| conn.exec_drop(statement, params).await).await?;
        self.forget(&key_id);
        Ok(key_id)
    }

    /// Marks `key_id` revoked; false when no live key has that id.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, GatewayError> {
        let statement =
            format!("UPDATE {} SET revoked_at = NOW() WHERE key_id = ? AND revoked_at IS NULL", self.table());
        let key = key_id.to_owned();
        let changed = self
            .run(async move |conn| {
                conn.exec_drop(statement, (key,)).await?;
                Ok(conn.affected_rows())
            })
            .await?;
        self.forget(key_id);
        Ok(changed > 0)
    }

    pub async fn list(&self) -> Result<Vec<KeyRecord>, GatewayError> {
        let query = format!(
            "SELECT key_id, public_key, user_name, email, CAST(registered_at AS CHAR), CAST(revoked_at AS CHAR) FROM {} ORDER BY registered_at",
            self.table()
        );
        self.run(async move |conn| {
            conn.query_map(query, |(key_id, public_key, user, email, registered_at, revoked_at)| KeyRecord {
                key_id,
                public_key,
                user,
                email,
                registered_at,
                revoked_at,
            })
            .await
        })
        .await
    }

    /// The live key with id `key_id`, from the cache while it is fresh.
    async fn lookup(&self, key_id: &str) -> Result<Option<Arc<RegisteredKey>>, GatewayError> {
        if let Some(cached) = self.cached(key_id) {
            return Ok(cached);
        }
        let query = format!(
            "SELECT public_key, user_name, email FROM {} WHERE key_id = ? AND revoked_at IS NULL",
            self.table()
        );
        let key = key_id.to_owned();
        let row: Option<(String, String, Option<String>)> =
            self.run(async move |conn| conn.exec_first(query, (key,)).await).await?;
        let found = match row {
            Some((public_key, user, email)) => {
                let public = parse_public_key(&public_key).map_err(GatewayError::Internal)?;
                let key = RegisteredKey::new(&public, user, Vec::new()).map_err(GatewayError::Internal)?;
                Some(Arc::new(key.with_email(email)))
            }
            None => None,
        };
        self.cache.lock().expect("not poisoned").insert(key_id.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }

    fn cached(&self, key_id: &str) -> Option<Option<Arc<RegisteredKey>>> {
        let cache = self.cache.lock().expect("not poisoned");
        let (at, found) = cache.get(key_id)?;
        let ttl = if found.is_some() { self.ttl } else { NEGATIVE_TTL.min(self.ttl) };
        (at.elapsed() < ttl).then(|| found.clone())
    }

    fn forget(&self, key_id: &str) {
        self.cache.lock().expect("not poisoned").remove(key_id);
    }

    fn table(&self) -> String {
        format!("`{}`.`{TABLE}`", self.database.replace('`', "``"))
    }

    /// Runs `exchange` as the cluster's service user on the first member
    /// that answers (the primary first), creating the table on first use.
    async fn run<T: Send>(
        &self,
        exchange: impl AsyncFnOnce(&mut mysql_async::Conn) -> Result<T, mysql_async::Error> + Clone,
    ) -> Result<T, GatewayError> {
        self.schema_ready.get_or_try_init(|| self.create_schema()).await?;
        self.on_cluster(exchange).await
    }

    async fn create_schema(&self) -> Result<(), GatewayError> {
        let database = format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database.replace('`', "``"));
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {} (key_id VARCHAR(64) PRIMARY KEY, public_key VARCHAR(64) NOT NULL, \
             user_name VARCHAR(255) NOT NULL, email VARCHAR(255) NULL, registered_at DATETIME NOT NULL, \
             revoked_at DATETIME NULL)",
            self.table()
        );
        // Tables made before e-mails were kept lack the column.
        let has_email = "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? \
             AND column_name = 'email'";
        let add_email = format!("ALTER TABLE {} ADD COLUMN email VARCHAR(255) NULL", self.table());
        let schema = self.database.clone();
        self.on_cluster(async move |conn| {
            conn.query_drop(database).await?;
            conn.query_drop(table).await?;
            let columns: Option<u64> = conn.exec_first(has_email, (schema, TABLE)).await?;
            if columns == Some(0) {
                conn.query_drop(add_email).await?;
            }
            Ok(())
        })
        .await
    }

    async fn on_cluster<T>(
        &self,
        exchange: impl AsyncFnOnce(&mut mysql_async::Conn) -> Result<T, mysql_async::Error> + Clone,
    ) -> Result<T, GatewayError> {
        let unavailable =
            |reason: String| GatewayError::UpstreamUnreachable { address: "login key store".into(), reason };
        let login =
            self.cluster.service_login().ok_or_else(|| unavailable("the cluster has no sql_user".to_owned()))?;
        let mut last = String::from("the cluster has no SQL address (endpoints[].sql)");
        for address in self.cluster.sql_addresses() {
            match crate::sql::with_login(&address, &login.user, &login.password, SQL_TIMEOUT, exchange.clone()).await {
                Ok(value) => return Ok(value),
                Err(SqlError::Denied(reason)) => return Err(unavailable(format!("{address}: {reason}"))),
                Err(other) => last = format!("{address}: {other}"),
            }
        }
        Err(unavailable(last))
    }
}

impl KeyDirectory for KeyStore {
    fn find<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<Option<Arc<RegisteredKey>>, GatewayError>> {
        Box::pin(self.lookup(key_id))
    }
}
