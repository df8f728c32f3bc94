//! The `[auth]` and `[file_urls]` sections: who may call, how doltgate
//! checks it, what each user may do, and the keys behind table-file URLs.
//!
//! Without `[auth]` doltgate authenticates nobody and forwards each client's
//! own credentials, leaving every check to Dolt (the transparent mode).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

fn default_max_token_lifetime() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// What doltgate presents upstream: `service` (the cluster's `sql_user`,
    /// which needs SUPER and CLONE_ADMIN on Dolt) or `passthrough` (the
    /// client's own `authorization`, so Dolt checks it too).
    #[serde(default)]
    pub upstream_credentials: UpstreamCredentials,
    /// Check Basic passwords by logging in to the routed cluster's SQL port as
    /// that user. Static `[[auth.users]]` with a `password_hash` are checked first.
    #[serde(default = "yes")]
    pub sql_passwords: bool,
    /// A header read instead of `authorization` when present, for Dolt's
    /// `remotesapi.credential_helper`, which may not set `authorization`.
    /// Its value is `Basic ...` or `Bearer ...`, like `authorization`.
    pub token_header: Option<String>,
    /// Accepted `aud` values of Dolt client-key tokens. Empty: the host the
    /// client dialled (Dolt sets `aud` to it), from `listener.public_url` or
    /// the request's authority.
    #[serde(default)]
    pub dolt_key_audiences: Vec<String>,
    /// The longest a token may still be valid when it is presented (its
    /// `exp` at most this far ahead): a leaked long-lived token is refused.
    /// At least 30s, the lifetime Dolt gives its own client tokens.
    #[serde(default = "default_max_token_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub jwt: Vec<JwtProviderConfig>,
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
    /// Which ref changes a Commit may make; see [`PushRuleConfig`].
    #[serde(default)]
    pub push_rules: Vec<PushRuleConfig>,
    /// Who may change which tables on matching branches; see [`TableRuleConfig`].
    #[serde(default)]
    pub table_rules: Vec<TableRuleConfig>,
    /// OpenPGP keys trusted to sign commits, for rules with `signed_commits`;
    /// see [`SigningKeyConfig`].
    #[serde(default)]
    pub signing_keys: Vec<SigningKeyConfig>,
    /// `mirror`: also apply the upstream's own `dolt_branch_control` and
    /// `dolt_branch_namespace_control` rows to branch pushes (a push must
    /// pass both), read over SQL as the cluster's `sql_user`. `ignore`: only
    /// `push_rules` apply.
    #[serde(default)]
    pub branch_control: BranchControlMode,
    /// How often the mirrored rows are read again.
    #[serde(default = "default_branch_control_poll", with = "humantime_serde")]
    pub branch_control_poll_interval: Duration,
    #[serde(default)]
    pub cache: AuthCacheConfig,
    #[serde(default)]
    pub failed_logins: FailedLoginsConfig,
}

/// How a source address that keeps failing credential checks is slowed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedLoginsConfig {
    /// Failed checks from one address within `window` before it backs off.
    #[serde(default = "default_failures_per_address")]
    pub per_address: u32,
    #[serde(default = "default_failure_window", with = "humantime_serde")]
    pub window: Duration,
    /// How long an address that failed too often has its checks refused.
    #[serde(default = "default_failure_window", with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for FailedLoginsConfig {
    fn default() -> Self {
        Self {
            per_address: default_failures_per_address(),
            window: default_failure_window(),
            backoff: default_failure_window(),
        }
    }
}

fn default_failures_per_address() -> u32 {
    10
}
fn default_failure_window() -> Duration {
    Duration::from_secs(10)
}

/// What users may do to matching refs when they push. For each ref a push
/// changes, the most specific matching rules decide (the most literal
/// characters in the ref pattern, then in the database pattern); ties
/// combine. Users those rules do not name may do nothing to that ref. With
/// no matching rule, the built-in default lets anyone with write access
/// create and fast-forward branches and create tags, and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRuleConfig {
    /// Named in refusals; default `push_rules[N]`.
    pub name: Option<String>,
    /// Database globs, case-insensitive.
    #[serde(default = "every_database")]
    pub databases: Vec<String>,
    /// Branch name globs (`main`, `release/*`). Exactly one of branches, tags, refs.
    pub branches: Option<Vec<String>>,
    /// Tag name globs.
    pub tags: Option<Vec<String>>,
    /// Full ref name globs for everything else (`refs/internal/*`, ...).
    pub refs: Option<Vec<String>>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The rule names every user (instead of `users`/`groups`).
    #[serde(default)]
    pub everyone: bool,
    /// Branches: create, fast_forward, force, delete. Tags: create, move,
    /// delete. Other refs: create, move, delete. Empty: nothing (protects).
    #[serde(default)]
    pub allow: Vec<PushOp>,
    /// Operations refused to the users the rule names, whatever any other
    /// matching rule allows, however specific. A rule with `deny` and no
    /// `allow` takes no other part in verdicts (it protects nothing).
    #[serde(default)]
    pub deny: Vec<PushOp>,
    /// `enforce` (default), or `evaluate`: the rule refuses nothing; pushes
    /// it would refuse are logged and counted.
    #[serde(default)]
    pub mode: RuleMode,
    /// Branch rules only: no push by anyone may add a merge commit to the
    /// matching branches (the commits reachable from the new head and from no
    /// ref the store had are checked).
    #[serde(default)]
    pub linear_history: bool,
    /// Branch rules only: every commit a push adds to matching branches must
    /// carry an author e-mail matching this glob, compared ignoring case;
    /// `{user}` stands for the pusher's name without its source
    /// (`corp-sso:ann` is `ann`) and `{email}` for the e-mail the pusher's
    /// identity provider vouched for, e.g. `"{user}@example.com"`.
    pub author_email: Option<String>,
    /// Branch rules only: `author_email` per identity source, by a JWT
    /// provider's namespace or `local` (users without one); a source not
    /// listed takes `author_email`, or is refused when that is unset.
    #[serde(default)]
    pub author_email_by_source: std::collections::BTreeMap<String, String>,
    /// Branch rules only: every commit a push adds to matching branches must
    /// carry a valid `dolt commit -S` signature from a key in
    /// `[[auth.signing_keys]]` listed for its author e-mail, signed for that
    /// very commit (same root, parent root, message, name and e-mail).
    #[serde(default)]
    pub signed_commits: bool,
    /// With `signed_commits`: a merge commit may come unsigned (Dolt signs
    /// only `dolt commit`, not `dolt merge`); the commits it merges are
    /// still judged on their own. Off: merge commits must be signed too.
    #[serde(default)]
    pub unsigned_merges: bool,
    /// Branch rules only: every added commit's message matches one of these globs.
    #[serde(default)]
    pub message_patterns: Vec<String>,
    /// Branch rules only: no added commit's message matches any of these globs.
    #[serde(default)]
    pub forbidden_message_patterns: Vec<String>,
    /// Users and groups this rule never refuses: what it would refuse them
    /// goes through, with a warning on the audit log and a `bypassed` count.
    #[serde(default)]
    pub bypass_users: Vec<String>,
    #[serde(default)]
    pub bypass_groups: Vec<String>,
}

/// An OpenPGP public key trusted to sign the commits of the authors it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Author e-mails (as `dolt commit` records them, compared ignoring
    /// case) whose commits this key may sign.
    pub emails: Vec<String>,
    /// ASCII-armored public keys (`gpg --armor --export KEY`); every key in
    /// the file is trusted for `emails`.
    pub public_key_file: PathBuf,
}

/// Whether a push rule's refusals take effect.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    #[default]
    Enforce,
    Evaluate,
}

/// Who may change matching tables on matching branches, in data, schema or
/// both (see `storage::tables` and the README for which is which). For each
/// table a push changes on a branch (or its working set), and each kind of
/// change, the most specific matching rules decide (the most literal
/// characters in the table pattern, then the branch pattern, then the
/// database pattern); ties combine. Users those rules do not name may not make
/// that change. A table no rule matches is left to the push rules alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRuleConfig {
    /// Named in refusals; default `table_rules[N]`.
    pub name: Option<String>,
    /// Database globs, case-insensitive.
    #[serde(default = "every_database")]
    pub databases: Vec<String>,
    /// Branch name globs; the branches' working sets are covered too.
    pub branches: Vec<String>,
    /// Table name globs, case-insensitive as Dolt's table names are. Dolt's
    /// versioned system tables (`dolt_ignore`, `dolt_docs`, ...) match only a
    /// pattern that itself starts with `dolt_`.
    pub tables: Vec<String>,
    /// The kinds of change the rule governs: `data`, `schema` (default both).
    #[serde(default = "every_table_change")]
    pub changes: Vec<TableChangeKind>,
    /// Who may make those changes.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub everyone: bool,
    /// `enforce` (default), or `evaluate`: log and count, refuse nothing.
    #[serde(default)]
    pub mode: RuleMode,
    /// Users and groups this rule never refuses, audited when they use it.
    #[serde(default)]
    pub bypass_users: Vec<String>,
    #[serde(default)]
    pub bypass_groups: Vec<String>,
}

/// What a push does to a table: its rows or its shape.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TableChangeKind {
    Data,
    Schema,
}

impl std::str::FromStr for TableChangeKind {
    type Err = String;

    fn from_str(name: &str) -> Result<TableChangeKind, String> {
        match name {
            "data" => Ok(TableChangeKind::Data),
            "schema" => Ok(TableChangeKind::Schema),
            _ => Err(format!("{name:?} is not one of data, schema")),
        }
    }
}

impl std::fmt::Display for TableChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableChangeKind::Data => "data",
            TableChangeKind::Schema => "schema",
        })
    }
}

fn every_table_change() -> Vec<TableChangeKind> {
    vec![TableChangeKind::Data, TableChangeKind::Schema]
}

fn every_database() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PushOp {
    Create,
    FastForward,
    Force,
    Delete,
    Move,
}

impl std::str::FromStr for PushOp {
    type Err = String;

    fn from_str(name: &str) -> Result<PushOp, String> {
        [PushOp::Create, PushOp::FastForward, PushOp::Force, PushOp::Delete, PushOp::Move]
            .into_iter()
            .find(|op| op.to_string() == name)
            .ok_or_else(|| format!("{name:?} is not one of create, fast_forward, force, delete, move"))
    }
}

impl std::fmt::Display for PushOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushOp::Create => "create",
            PushOp::FastForward => "fast_forward",
            PushOp::Force => "force",
            PushOp::Delete => "delete",
            PushOp::Move => "move",
        })
    }
}

fn yes() -> bool {
    true
}

fn default_branch_control_poll() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BranchControlMode {
    #[default]
    Ignore,
    Mirror,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamCredentials {
    #[default]
    Service,
    Passthrough,
}

/// A user known to doltgate itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A PHC-format Argon2 hash, as printed by `doltgate hash-password`.
    pub password_hash: Option<String>,
    /// Dolt client public keys (the first column of `dolt creds ls -v`): a
    /// plain `dolt clone` signed by one of them authenticates as this user.
    #[serde(default)]
    pub dolt_keys: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One issuer of bearer JWTs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    pub name: String,
    /// Required `iss`; also how a token finds its provider.
    pub issuer: String,
    /// Accepted `aud` values (at least one must match).
    pub audiences: Vec<String>,
    /// Accepted `alg` values; all of one family matching the key.
    pub algorithms: Vec<String>,
    /// HMAC secret, inline (prefer `secret_env`).
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    /// PEM public key (RSA, EC or Ed25519).
    pub key_file: Option<PathBuf>,
    /// A JWK Set on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWK Set over HTTPS (or HTTP, on a trusted network); fetched when the
    /// first token arrives and again when a token names an unknown `kid` (at
    /// most once per `jwks_min_refresh`).
    pub jwks_url: Option<String>,
    /// PEM certificates trusted for an `https://` `jwks_url` instead of the
    /// system's roots (an identity provider behind a private CA).
    pub jwks_ca_file: Option<PathBuf>,
    /// Allow a plain `http://` `jwks_url`, whose keys anyone on the path can
    /// swap: for tests and networks you control, with a warning at start.
    #[serde(default)]
    pub jwks_allow_http: bool,
    #[serde(default = "default_jwks_min_refresh", with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// Clock skew forgiven on `exp` and `nbf` (at most 5m).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim naming the user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// What this provider's users and groups are called in grants and rules:
    /// `"<namespace>:<claim>"`, by default the provider's `name` (so
    /// `corp-sso:erin`, `corp-sso:developers`). An identity provider's claim
    /// never takes a static or SQL user's grants; set `namespace = ""` to let
    /// this provider's names stand alone, when it is the one source of users.
    pub namespace: Option<String>,
    /// Claim holding the user's groups (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim holding the user's e-mail, which `{email}` in `author_email`
    /// templates stands for; ignored when the token's `email_verified` is false.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
}

fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_email_claim() -> String {
    "email".into()
}

/// Grants a permission on databases to users and groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Database globs (`*`, `?`), case-insensitive, as clients name them.
    pub databases: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub permission: Permission,
}

/// `write` includes `read`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
        })
    }
}

/// Remembered verdicts, so a clone's many calls cost one password check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCacheConfig {
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Refusals are remembered for less time, so a fixed password works soon.
    #[serde(default = "default_failure_ttl", with = "humantime_serde")]
    pub failure_ttl: Duration,
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        Self { ttl: default_cache_ttl(), failure_ttl: default_failure_ttl(), max_entries: default_cache_entries() }
    }
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_failure_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_cache_entries() -> usize {
    10_000
}

/// The table-file URLs doltgate hands out carry a token signed with this key.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileUrlConfig {
    /// Environment variable holding the key (at least 32 bytes). Replicas
    /// behind one Service must share it. Unset (and no `key_file`): a random
    /// key per process, so URLs only work on the replica that issued them.
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    /// Longest life of a URL (the upstream's own expiry may be shorter).
    #[serde(default = "default_url_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_url_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

impl FileUrlConfig {
    pub fn ttl(&self) -> Duration {
        if self.ttl.is_zero() {
            default_url_ttl()
        } else {
            self.ttl
        }
    }
}
