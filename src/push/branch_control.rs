//! Dolt's own branch permissions, mirrored: the rows of `dolt_branch_control`
//! and `dolt_branch_namespace_control`, polled over SQL, applied to pushes
//! the way Dolt applies them to SQL writes (go/libraries/doltcore/branch_control
//! in Dolt's source):
//!
//! - patterns are SQL `LIKE` expressions (`%`, `_`, `\` escapes), first
//!   folded to their shortest form (`%%` is `%`, `%_` is `_%`); database,
//!   branch and host compare under `utf8mb4_0900_ai_ci` (case- and
//!   accent-insensitive, rune by rune: `collation`), user exactly;
//! - for a branch, the matching access rows with the longest patterns decide
//!   (every literal, `_` and `%` counts one) and equally long ones combine;
//!   `admin` implies `write`, and `merge` or `read` alone do not allow a push;
//! - updating or deleting a branch needs `write` (or `admin`);
//! - creating one is refused when namespace rows claim the name (the longest
//!   matching branch patterns) and none of them names the user and host.
//!
//! A push passes only when doltgate's rules and these rows both allow it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_async::prelude::Queryable;

use super::collation::collate;
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
    /// What Dolt matches the rows' host column against: for a SQL session, the
    /// host of the account the user logged in with (`'dan'@'%'` presents `%`),
    /// not the client's address.
    pub host: &'a str,
}

impl<'a> Pusher<'a> {
    /// A pusher as doltgate presents one: its name, and the host `%`, which
    /// is what an account created as `'name'@'%'` (the usual remote account,
    /// and the only kind a principal without a SQL account could stand for)
    /// presents. So rows naming a specific host bind pushes no more than they
    /// bind such a user's SQL sessions.
    pub fn named(user: &'a str) -> Pusher<'a> {
        Pusher { user, host: "%" }
    }
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
                element_len(&row.database) + element_len(&row.branch) + element_len(&row.user) + element_len(&row.host);
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
        // Dolt measures these in bytes of the folded pattern.
        let length = |row: &&NamespaceRow| fold_expression(&row.branch).len();
        let Some(longest) = claiming.iter().map(length).max() else { return true };
        claiming
            .iter()
            .filter(|row| length(row) == longest)
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
    let login = cluster.service_login().ok_or("the cluster has no sql_user")?;
    let addresses = cluster.sql_addresses();
    if addresses.is_empty() {
        return Err(format!("cluster {:?} has no SQL address (endpoints[].sql)", cluster.name));
    }
    let mut last_error = String::new();
    for address in addresses {
        match crate::sql::with_login(&address, &login.user, &login.password, READ_TIMEOUT, read_tables).await {
            Ok(control) => return Ok(control),
            Err(err) => last_error = format!("{address}: {err}"),
        }
    }
    Err(last_error)
}

async fn read_tables(conn: &mut mysql_async::Conn) -> Result<BranchControl, mysql_async::Error> {
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
    Ok(BranchControl { access, namespace })
}

/// What the mirrored tables say on each cluster: the last rows read, or why
/// there are none (then branch pushes are refused: failing closed).
pub type MirroredRows = Result<BranchControl, String>;

/// The `dolt_branch_control` mirror of every cluster, each kept fresh by its
/// own poller while its cluster is in use.
#[derive(Debug)]
pub struct Mirror {
    interval: Duration,
    by_cluster: HashMap<String, Arc<ArcSwap<MirroredRows>>>,
}

impl Mirror {
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>, interval: Duration) -> Mirror {
        let not_yet = || Arc::new(ArcSwap::from_pointee(Err("not read yet".to_owned())));
        Mirror { interval, by_cluster: clusters.into_iter().map(|name| (name.to_owned(), not_yet())).collect() }
    }

    /// The rows in effect for `cluster`.
    pub fn rows(&self, cluster: &str) -> Arc<MirroredRows> {
        match self.by_cluster.get(cluster) {
            Some(rows) => rows.load_full(),
            None => Arc::new(Err(format!("no mirror for cluster {cluster:?}"))),
        }
    }

    /// Polls each cluster's tables until the cluster is dropped (a reload
    /// builds new clusters, and with them new pollers).
    pub fn spawn_pollers<'a>(&self, clusters: impl IntoIterator<Item = &'a Arc<Cluster>>) {
        for cluster in clusters {
            if let Some(rows) = self.by_cluster.get(&cluster.name) {
                tokio::spawn(poll(Arc::downgrade(cluster), rows.clone(), self.interval));
            }
        }
    }
}

async fn poll(cluster: Weak<Cluster>, rows: Arc<ArcSwap<MirroredRows>>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(cluster) = cluster.upgrade() else { break };
        let result = read(&cluster).await;
        if let Err(err) = &result {
            tracing::warn!(cluster = %cluster.name, error = %err, "cannot read dolt_branch_control; branch pushes are refused until it can be read");
        }
        rows.store(Arc::new(result));
    }
}

/// A pattern in its shortest equivalent form, as Dolt stores and ranks it
/// (`go/libraries/doltcore/branch_control/expr_parser.go`, `FoldExpression`):
/// a run of `%` is one `%`, and `%_` becomes `_%`, repeated until nothing changes.
pub fn fold_expression(pattern: &str) -> String {
    let mut current = pattern.to_owned();
    loop {
        let mut out = String::with_capacity(current.len());
        let mut chars = current.chars();
        let mut pending_any = false;
        while let Some(c) = chars.next() {
            match (pending_any, c) {
                (true, '%') => {}
                (true, '_') => {
                    out.push('_');
                    continue;
                }
                (true, other) => {
                    out.push('%');
                    pending_any = false;
                    push_literal_or_escape(&mut out, other, &mut chars);
                    continue;
                }
                (false, '%') => pending_any = true,
                (false, other) => push_literal_or_escape(&mut out, other, &mut chars),
            }
        }
        if pending_any {
            out.push('%');
        }
        if out == current {
            return out;
        }
        current = out;
    }
}

/// An escape keeps the character after it as it is.
fn push_literal_or_escape(out: &mut String, c: char, rest: &mut std::str::Chars<'_>) {
    out.push(c);
    if c == '\\' {
        if let Some(escaped) = rest.next() {
            out.push(escaped);
        }
    }
}

/// How long a pattern is for ranking matches: its elements after folding.
fn element_len(pattern: &str) -> usize {
    tokens(&fold_expression(pattern), false).len()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Literal(char),
    One,
    Any,
}

/// A pattern's or a name's elements. Dolt reads the names it matches the
/// same way as the patterns (`parseExpression` in
/// `go/libraries/doltcore/branch_control/expr_parser_node.go`): a `%` or `_`
/// in a name is a wildcard there too, which only a wildcard in the pattern
/// accepts, and `\` escapes.
fn tokens(text: &str, collated: bool) -> Vec<Token> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            other => Token::Literal(other),
        });
    }
    if collated {
        out.iter_mut().for_each(|t| {
            if let Token::Literal(c) = t {
                *c = collate(*c);
            }
        });
    }
    out
}

/// Dolt's match of a name against a `LIKE` pattern, iteratively with
/// backtracking to the last `%` (linear in practice, never exponential). A
/// pattern's `_` takes any element of the name but a `%`; a literal takes
/// only the same literal.
fn like(pattern: &str, text: &str, collated: bool) -> bool {
    let pattern = tokens(&fold_expression(pattern), collated);
    let text = tokens(text, collated);
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(Token::Any) => {
                resume = Some((p, t));
                p += 1;
                continue;
            }
            Some(Token::One) => text[t] != Token::Any,
            Some(literal) => *literal == text[t],
            None => false,
        };
        if step {
            p += 1;
            t += 1;
            continue;
        }
        match resume {
            Some((any, at)) => {
                p = any + 1;
                t = at + 1;
                resume = Some((any, at + 1));
            }
            None => return false,
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
        assert!(!like("a\\%b", "axb", true));
        // Dolt reads names like patterns: a `_` or `%` in a name is a wildcard,
        // which an escaped (literal) one in a pattern does not take.
        assert!(!like("a\\%b", "a%b", true));
        assert!(like("a\\%b", "a\\%b", true));
        assert!(like("b_1", "b_1", true));
        assert!(!like("b\\_1", "b_1", true));
        assert!(!like("bx1", "b_1", true));
        assert!(!like("_", "%", true), "an account host of % is taken only by %");
        assert!(like("%", "%", true));
        assert!(like("%x%y%", "aaxbbycc", true));
        assert!(!like("Dan", "dan", false), "user names compare exactly");
    }

    #[test]
    fn patterns_fold_to_their_shortest_form() {
        for (pattern, folded) in
            [("%%", "%"), ("%_", "_%"), ("a%%%b", "a%b"), ("%_%_", "__%"), ("a\\%%", "a\\%%"), ("%\\_x", "%\\_x")]
        {
            assert_eq!(fold_expression(pattern), folded, "{pattern}");
        }
        // Every element counts, wildcards included: `m%` is as long as `ma`.
        assert_eq!(element_len("m%"), element_len("ma"));
        assert_eq!(element_len("ma%%%"), 3);
    }

    #[test]
    fn accents_and_case_do_not_matter_but_user_case_does() {
        assert!(like("m\u{e4}in", "main", true));
        assert!(like("MAIN", "main", true));
        assert!(like("r\u{e9}lease-%", "release-1", true));
        assert!(!like("r\u{e9}lease-%", "release-1", false));
        assert!(like("127.0.0.%", "127.0.0.1", true));
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
