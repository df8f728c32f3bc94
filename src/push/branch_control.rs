//! Dolt's own branch permissions, mirrored: the rows of `dolt_branch_control`
//! and `dolt_branch_namespace_control`, polled over SQL, applied to pushes
//! the way Dolt applies them to SQL writes (go/libraries/doltcore/branch_control
//! in Dolt's source):
//!
//! - patterns are SQL `LIKE` expressions (`%`, `_`, `\` escapes); database,
//!   branch and host compare case-insensitively, user exactly;
//! - for a branch, the matching access rows with the most literal characters
//!   decide and equally long ones combine; `admin` implies `write`;
//! - updating or deleting a branch needs `write` (or `admin`);
//! - creating one is refused when namespace rows claim the name (the longest
//!   matching branch patterns) and none of them names the user and host.
//!
//! A push passes only when doltgate's rules and these rows both allow it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::cluster::Cluster;
use crate::config::auth::PushOp;

const ACCESS_QUERY: &str =
    "SELECT `database`, `branch`, `user`, `host`, CAST(`permissions` AS CHAR) FROM dolt_branch_control";
const NAMESPACE_QUERY: &str = "SELECT `database`, `branch`, `user`, `host` FROM dolt_branch_namespace_control";
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub admin: bool,
    pub write: bool,
}

impl Permissions {
    /// Reads the `permissions` SET column, e.g. `admin,write`.
    pub fn parse(text: &str) -> Permissions {
        let has = |name: &str| text.split(',').any(|p| p.trim().eq_ignore_ascii_case(name));
        Permissions { admin: has("admin"), write: has("write") }
    }

    fn or(self, other: Permissions) -> Permissions {
        Permissions { admin: self.admin || other.admin, write: self.write || other.write }
    }

    fn may_write(self) -> bool {
        self.admin || self.write
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    pub database: String,
    pub branch: String,
    pub user: String,
    pub host: String,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRow {
    pub database: String,
    pub branch: String,
    pub user: String,
    pub host: String,
}

/// One snapshot of both tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchControl {
    pub access: Vec<AccessRow>,
    pub namespace: Vec<NamespaceRow>,
}

/// Who is pushing, as Dolt would name them.
pub struct Pusher<'a> {
    pub user: &'a str,
    pub host: &'a str,
}

impl BranchControl {
    /// The permissions `pusher` holds on `branch` of `database`.
    pub fn permissions(&self, database: &str, branch: &str, pusher: &Pusher<'_>) -> Permissions {
        let mut best: Option<(usize, Permissions)> = None;
        for row in &self.access {
            let matched = like(&row.database, database, true)
                && like(&row.branch, branch, true)
                && like(&row.user, pusher.user, false)
                && like(&row.host, pusher.host, true);
            if !matched {
                continue;
            }
            let length =
                literal_len(&row.database) + literal_len(&row.branch) + literal_len(&row.user) + literal_len(&row.host);
            best = match best {
                Some((longest, perms)) if longest > length => Some((longest, perms)),
                Some((longest, perms)) if longest == length => Some((longest, perms.or(row.permissions))),
                _ => Some((length, row.permissions)),
            };
        }
        best.map(|(_, perms)| perms).unwrap_or_default()
    }

    /// Whether the namespace rows let `pusher` create `branch`.
    pub fn can_create(&self, database: &str, branch: &str, pusher: &Pusher<'_>) -> bool {
        let claiming: Vec<&NamespaceRow> = self
            .namespace
            .iter()
            .filter(|row| like(&row.database, database, true) && like(&row.branch, branch, true))
            .collect();
        let Some(longest) = claiming.iter().map(|row| row.branch.chars().count()).max() else { return true };
        claiming
            .iter()
            .filter(|row| row.branch.chars().count() == longest)
            .any(|row| like(&row.user, pusher.user, false) && like(&row.host, pusher.host, true))
    }

    /// Dolt's verdict on one branch operation, and why.
    pub fn decide(&self, database: &str, branch: &str, op: PushOp, pusher: &Pusher<'_>) -> (bool, String) {
        if op == PushOp::Create {
            let allowed = self.can_create(database, branch, pusher);
            return (allowed, "dolt_branch_namespace_control".into());
        }
        let perms = self.permissions(database, branch, pusher);
        (perms.may_write(), "dolt_branch_control (needs write or admin)".into())
    }
}

/// Reads both tables from the first member that answers (the primary first).
pub async fn read(cluster: &Cluster) -> Result<BranchControl, String> {
    let (user, password) = cluster.service_login.clone().ok_or("the cluster has no sql_user")?;
    let addresses = cluster.sql_addresses();
    if addresses.is_empty() {
        return Err(format!("cluster {:?} has no SQL address (endpoints[].sql)", cluster.name));
    }
    let mut last_error = String::new();
    for address in addresses {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(address.host().to_owned())
            .tcp_port(address.port_u16().unwrap_or(3306))
            .user(Some(user.clone()))
            .pass(Some(password.clone()))
            .prefer_socket(false);
        match tokio::time::timeout(READ_TIMEOUT, read_from(opts)).await {
            Ok(Ok(control)) => return Ok(control),
            Ok(Err(err)) => last_error = format!("{address}: {err}"),
            Err(_) => last_error = format!("{address}: no answer within {READ_TIMEOUT:?}"),
        }
    }
    Err(last_error)
}

async fn read_from(opts: mysql_async::OptsBuilder) -> Result<BranchControl, mysql_async::Error> {
    let mut conn = mysql_async::Conn::new(opts).await?;
    // The tables are server-wide but only visible with a database selected.
    let databases: Vec<String> = conn.query("SHOW DATABASES").await?;
    if let Some(database) = databases.iter().find(|d| !matches!(d.as_str(), "information_schema" | "mysql")) {
        conn.query_drop(format!("USE `{}`", database.replace('`', "``"))).await?;
    }
    let access = conn
        .query_map(
            ACCESS_QUERY,
            |(database, branch, user, host, permissions): (String, String, String, String, String)| AccessRow {
                database,
                branch,
                user,
                host,
                permissions: Permissions::parse(&permissions),
            },
        )
        .await?;
    let namespace = conn
        .query_map(NAMESPACE_QUERY, |(database, branch, user, host)| NamespaceRow { database, branch, user, host })
        .await?;
    let _ = conn.disconnect().await;
    Ok(BranchControl { access, namespace })
}

/// Keeps `cluster.branch_control` fresh until the cluster is dropped.
pub fn spawn_poller(cluster: &Arc<Cluster>, interval: Duration) {
    tokio::spawn(poll(Arc::downgrade(cluster), interval));
}

async fn poll(cluster: Weak<Cluster>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(cluster) = cluster.upgrade() else { break };
        let result = read(&cluster).await;
        if let Err(err) = &result {
            tracing::warn!(cluster = %cluster.name, error = %err, "cannot read dolt_branch_control; branch pushes are refused until it can be read");
        }
        cluster.branch_control.store(Arc::new(result));
    }
}

/// Literal characters of a LIKE pattern: how specific it is.
fn literal_len(pattern: &str) -> usize {
    let mut count = 0;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' | '_' => {}
            '\\' => {
                chars.next();
                count += 1;
            }
            _ => count += 1,
        }
    }
    count
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Literal(char),
    One,
    Any,
}

fn tokens(pattern: &str, fold: bool) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            other => Token::Literal(other),
        });
    }
    if fold {
        out.iter_mut().for_each(|t| {
            if let Token::Literal(c) = t {
                *c = c.to_lowercase().next().unwrap_or(*c);
            }
        });
    }
    out
}

/// SQL `LIKE`, iteratively with backtracking to the last `%` (linear in
/// practice, never exponential).
fn like(pattern: &str, text: &str, fold: bool) -> bool {
    let pattern = tokens(pattern, fold);
    let text: Vec<char> =
        if fold { text.chars().flat_map(char::to_lowercase).collect() } else { text.chars().collect() };
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Any) => {
                resume = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                p += 1;
                t += 1;
            }
            Some(Token::Literal(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((any, at)) => {
                    p = any + 1;
                    t = at + 1;
                    resume = Some((any, at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(database: &str, branch: &str, user: &str, permissions: &str) -> AccessRow {
        AccessRow {
            database: database.into(),
            branch: branch.into(),
            user: user.into(),
            host: "%".into(),
            permissions: Permissions::parse(permissions),
        }
    }

    fn pusher(user: &str) -> Pusher<'_> {
        Pusher { user, host: "127.0.0.1" }
    }

    #[test]
    fn like_patterns() {
        assert!(like("%", "anything", true));
        assert!(like("feat%", "Feature/x", true));
        assert!(like("b_1", "b01", true));
        assert!(!like("b_1", "b001", true));
        assert!(like("a\\%b", "a%b", true));
        assert!(!like("a\\%b", "axb", true));
        assert!(like("%x%y%", "aaxbbycc", true));
        assert!(!like("Dan", "dan", false), "user names compare exactly");
    }

    #[test]
    fn the_longest_access_match_decides_and_ties_combine() {
        let control = BranchControl {
            access: vec![
                access("%", "%", "%", "write"),
                access("shop", "main", "%", "read"),
                access("shop", "main", "mia", "admin"),
            ],
            namespace: vec![],
        };
        assert!(control.permissions("shop", "feature", &pusher("dan")).may_write());
        assert!(!control.permissions("shop", "main", &pusher("dan")).may_write(), "main is read-only for most");
        assert!(control.permissions("SHOP", "main", &pusher("mia")).may_write());
        let (allowed, why) = control.decide("shop", "main", PushOp::FastForward, &pusher("dan"));
        assert!(!allowed && why.contains("dolt_branch_control"));
    }

    #[test]
    fn namespaces_claim_branch_names() {
        let row = |branch: &str, user: &str| NamespaceRow {
            database: "%".into(),
            branch: branch.into(),
            user: user.into(),
            host: "%".into(),
        };
        let control =
            BranchControl { access: vec![], namespace: vec![row("release%", "rita"), row("release-eu%", "eve")] };
        assert!(control.can_create("shop", "feature", &pusher("dan")), "unclaimed names are free");
        assert!(control.can_create("shop", "release-1", &pusher("rita")));
        assert!(!control.can_create("shop", "release-1", &pusher("dan")));
        assert!(control.can_create("shop", "release-eu-1", &pusher("eve")), "the longest claim decides");
        assert!(!control.can_create("shop", "release-eu-1", &pusher("rita")));
    }
}
