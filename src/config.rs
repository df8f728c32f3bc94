//! The configuration file: its shape and defaults, and the value checks
//! several sections share.
//!
//! One TOML file (documented example: `config/doltgate.toml`). Unknown keys
//! are errors here; every other check happens where a section is turned into
//! its runtime form (see `gateway::build`) and names the key it is about, so
//! `doltgate check-config FILE` tells an operator exactly what to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod auth;
pub mod secrets;
pub use auth::{AuthConfig, FileUrlConfig, Permission};
pub use secrets::{SecretSource, Secrets};

/// Dolt's own client and server both allow gRPC messages up to 128 MiB.
pub const DOLT_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Shorthand for one Dolt server that is always the primary and serves
    /// every database: a cluster named `default` with one endpoint and a
    /// catch-all route. Not combinable with `clusters`.
    pub upstream: Option<UpstreamConfig>,
    /// Named sets of Dolt endpoints (members of one Dolt cluster, or one server).
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Database -> cluster, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Authentication and authorization; unset: clients' credentials pass through to Dolt.
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub file_urls: FileUrlConfig,
    #[serde(default)]
    pub uploads: UploadsConfig,
    /// Self-hosted `dolt login`: a page that registers the keys the CLI makes,
    /// and `WhoAmI` for them. Needs `[auth]`.
    pub login: Option<LoginConfig>,
    /// The edge cache: table files and archives kept on local disk and served
    /// to later clones without asking Dolt for their bytes. Unset: no cache.
    pub cache: Option<CacheConfig>,
}

/// `[cache]`: where cached table files live and how much room they may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// A directory doltgate owns (one doltgate process per directory).
    pub dir: PathBuf,
    /// Cached bytes kept at most; least recently used files go first. A file
    /// larger than this is streamed uncached.
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: u64,
    /// How long a cached file is served before its length is checked against
    /// the upstream's again (one 1-byte ranged read).
    #[serde(default = "default_cache_revalidate_after", with = "humantime_serde")]
    pub revalidate_after: Duration,
    /// A bucket every replica's cache fills and reads, so N replicas fetch a
    /// file from Dolt once between them.
    pub shared: Option<SharedTierConfig>,
}

/// `[cache.shared]`: an S3-compatible bucket behind the disk cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedTierConfig {
    /// The S3 API's URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio:9000`.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Object names start with this (no leading or trailing `/`).
    #[serde(default)]
    pub prefix: String,
    pub access_key_id_env: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_cache_max_bytes() -> u64 {
    10 << 30
}

fn default_cache_revalidate_after() -> Duration {
    Duration::from_secs(60)
}

/// `[login]`: where the page is, where registered keys are kept, and what
/// `WhoAmI` tells the CLI about a key's user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Path of the page on the listener; `dolt login --login-url` points here.
    #[serde(default = "default_login_path")]
    pub path: String,
    /// The cluster whose Dolt keeps the registered keys (its `sql_user` owns them).
    pub cluster: String,
    /// The database doltgate creates there for them; never served through doltgate.
    #[serde(default = "default_login_database")]
    pub database: String,
    /// How long a key lookup is trusted: a revoked key is refused within this.
    #[serde(default = "default_login_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The e-mail `WhoAmI` answers (Dolt stores it as `user.email`); `{user}`
    /// is replaced by the user's name.
    #[serde(default = "default_login_email")]
    pub email_template: String,
    /// Signing in with an OpenID Connect provider on the page, beside the password.
    pub oidc: Option<OidcLoginConfig>,
}

/// `[login.oidc]`: the page's "sign in with" button, an authorization-code
/// flow with PKCE against one OpenID Connect provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcLoginConfig {
    /// The `[[auth.jwt]]` entry (by `name`) that judges the provider's ID
    /// tokens: its issuer, keys, algorithms, user and e-mail claims and
    /// namespace. ID tokens must name `client_id` as their audience.
    pub provider: String,
    /// The provider's discovery document (`<issuer>/.well-known/openid-configuration`).
    pub discovery_url: String,
    pub client_id: String,
    /// The client's secret: set exactly one of the three.
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Where the provider sends the browser back, as registered with it:
    /// this listener's `<login.path>/oidc/callback`.
    pub redirect_url: String,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The button's text; by default "Sign in with <provider>".
    pub label: Option<String>,
    /// PEM certificates trusted for the provider instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Allow plain `http://` provider URLs (tests, networks you control).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_login_path() -> String {
    "/login".into()
}
fn default_login_database() -> String {
    "doltgate_keys".into()
}
fn default_login_cache_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_login_email() -> String {
    "{user}@localhost".into()
}

/// How table-file uploads are checked before Dolt may keep them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// Where uploads are spooled while they pass (unset: the system's temporary directory).
    pub spool_dir: Option<PathBuf>,
    /// Largest table file or archive one upload may carry.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Smaller limits for some databases; the smallest that matches applies.
    #[serde(default)]
    pub databases: Vec<DatabaseUploadLimit>,
    /// Spool files kept open between uploads, to be rewritten by the next
    /// ones (0: a new file for every upload).
    #[serde(default = "default_spool_files_kept")]
    pub spool_files_kept: usize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            spool_dir: None,
            max_file_bytes: default_max_file_bytes(),
            databases: Vec::new(),
            spool_files_kept: default_spool_files_kept(),
        }
    }
}

fn default_spool_files_kept() -> usize {
    2
}

/// A tighter upload limit for matching databases. Dolt puts up to about
/// 1 GiB of a push in one archive, so below that a larger `dolt push` fails;
/// the limit is per file, not per push.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseUploadLimit {
    /// Database globs, case-insensitive, matched against the database Dolt resolves.
    pub databases: Vec<String>,
    /// Largest table file or archive one upload to them may carry (bytes).
    pub max_file_bytes: u64,
}

/// Dolt's pushes write archives of up to about 1 GiB; leave room above that.
fn default_max_file_bytes() -> u64 {
    4 << 30
}

/// The smallest sensible bound: Dolt's own archive target.
pub const MIN_MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address for gRPC and table-file traffic alike.
    #[serde(default = "default_listen")]
    pub address: SocketAddr,
    /// `scheme://host[:port]` clients use to reach doltgate, for the table-file
    /// URLs in responses. Unset: the listener's scheme and the request's authority.
    pub public_url: Option<String>,
    pub tls: Option<TlsConfig>,
    /// After SIGTERM, keep serving (new connections too) this long while
    /// `/readyz` says not ready, so load balancers stop sending traffic
    /// before the port closes.
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Then stop accepting and give requests in flight this long to finish.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: default_listen(),
            public_url: None,
            tls: None,
            drain_delay: Duration::ZERO,
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

/// The operator-facing listener: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unset: no admin listener. Keep it off the traffic port and off the internet.
    pub address: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Short name used in table-file URLs and logs (letters, digits, `.`, `_`, `-`).
    #[serde(default = "default_upstream_name")]
    pub name: String,
    /// `host:port` of `dolt sql-server --remotesapi-port`.
    pub address: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for response headers of a unary RPC or a table-file GET.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// gRPC calls one upstream HTTP/2 connection carries at once; another
    /// connection opens when every one is this full.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: usize,
}

impl UpstreamConfig {
    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            max_streams_per_connection: self.max_streams_per_connection,
        }
    }

    pub fn at(address: impl Into<String>) -> Self {
        Self {
            name: default_upstream_name(),
            address: address.into(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            max_streams_per_connection: default_max_streams_per_connection(),
        }
    }
}

fn default_upstream_name() -> String {
    "dolt".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
/// Below the 250 concurrent streams Dolt's HTTP/2 server allows per
/// connection, so a call never waits inside a full connection.
fn default_max_streams_per_connection() -> usize {
    128
}
/// Dolt's remotesapi server (Go's HTTP/2 defaults) refuses streams past this.
pub const DOLT_MAX_STREAMS_PER_CONNECTION: usize = 250;

/// One Dolt endpoint's transport settings, shared by `[upstream]` and cluster endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for response headers of a unary RPC or a table-file GET.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// gRPC calls one upstream HTTP/2 connection carries at once; another
    /// connection opens when every one is this full.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            max_streams_per_connection: default_max_streams_per_connection(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Members of the cluster; table-file URLs name them, so names are unique across clusters.
    pub endpoints: Vec<EndpointConfig>,
    /// doltgate's own SQL user: it asks each member for its cluster role, and
    /// with `[auth]` it is the identity presented to the remotesapi (grant it
    /// SUPER and CLONE_ADMIN there).
    pub sql_user: Option<String>,
    /// Its password, inline (prefer `sql_password_env` or `sql_password_file`).
    pub sql_password: Option<String>,
    /// Name of an environment variable holding the password.
    pub sql_password_env: Option<String>,
    /// A file holding the password (trailing newline ignored).
    pub sql_password_file: Option<PathBuf>,
    /// How often each member's role is polled.
    #[serde(default = "default_role_poll_interval", with = "humantime_serde")]
    pub role_poll_interval: Duration,
    /// How long a write waits for a primary when none is known (mid-failover),
    /// before it is answered UNAVAILABLE.
    #[serde(default = "default_write_wait", with = "humantime_serde")]
    pub write_wait: Duration,
    /// What a write meets when no member is primary: `hold` (wait `write_wait`,
    /// then UNAVAILABLE) or `refuse` (FAILED_PRECONDITION at once, pointing at
    /// `writes_url`): the sidecar setting.
    #[serde(default)]
    pub no_primary: NoPrimary,
    /// Where writes should go instead, named in `refuse` answers (e.g. the ingress URL).
    pub writes_url: Option<String>,
    #[serde(default)]
    pub transport: TransportConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Letters, digits, `.`, `_`, `-`; appears in table-file URLs.
    pub name: String,
    /// `host:port` of the member's user-facing remotesapi (`remotesapi.port`).
    pub remotesapi: String,
    /// `host:port` of the member's SQL port, polled for its cluster role.
    pub sql: Option<String>,
    /// A fixed role instead of polling, for servers not in a Dolt cluster.
    pub role: Option<StaticRole>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StaticRole {
    Primary,
    Standby,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NoPrimary {
    #[default]
    Hold,
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exactly one of `database`, `database_prefix`, `database_glob` (case-insensitive).
    pub database: Option<String>,
    pub database_prefix: Option<String>,
    /// `*` and `?` wildcards; `"*"` matches every database.
    pub database_glob: Option<String>,
    /// Clients reach these databases as `/<path_prefix>/<database>`; doltgate
    /// strips the prefix before the upstream sees the name.
    pub path_prefix: Option<String>,
    pub cluster: String,
    #[serde(default)]
    pub read_policy: ReadPolicy,
}

/// Where reads go. Writes always go to the primary.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// The primary; standbys only while no primary is reachable.
    #[default]
    Primary,
    /// A healthy standby (the same one for a client connection), else the primary.
    PreferStandby,
    /// Any healthy member, spread across client connections.
    Any,
}

fn default_role_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_write_wait() -> Duration {
    Duration::from_secs(15)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest gRPC message accepted in either direction.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// HTTP/2 streams per client connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Largest request header block a client may send.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// HTTP/1.1 clients must send their request headers within this time.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A call's first request message (a unary call's only one; the one a
    /// stream names its database in) must arrive whole within this time, so
    /// a stalled client cannot hold streams open forever.
    #[serde(default = "default_request_read_timeout", with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// A new connection must send its first bytes (the HTTP/2 preface or an
    /// HTTP/1.1 request line) within this time, or it is closed: silent
    /// connections cannot pin file descriptors.
    #[serde(default = "default_protocol_deadline", with = "humantime_serde")]
    pub protocol_deadline: Duration,
    /// Open client connections at most; more are closed as they arrive.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A stream's client must send its next message within this time (never
    /// applied to waiting for Dolt): a stalled stream frees its upstream slot.
    #[serde(default = "default_stream_idle_timeout", with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// Streams one user (or, without [auth], one client address) may hold open
    /// at once, across connections: below the ~250 Dolt allows on the one
    /// upstream connection every user shares.
    #[serde(default = "default_max_streams_per_user")]
    pub max_streams_per_user: usize,
    /// Unary calls one user, or one address without [auth], has in flight at
    /// once (streams count against `max_streams_per_user`).
    #[serde(default = "default_max_calls_per_user")]
    pub max_calls_per_user: usize,
    /// Table-file transfers (GET or PUT) one user's URLs carry at once.
    #[serde(default = "default_max_transfers_per_user")]
    pub max_transfers_per_user: usize,
    /// How long a call, stream or transfer past its user's limit waits for a
    /// slot before it is refused (UNAVAILABLE, or 503 for a transfer, which
    /// Dolt's client retries).
    #[serde(default = "default_queue_wait", with = "humantime_serde")]
    pub queue_wait: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            request_read_timeout: default_request_read_timeout(),
            protocol_deadline: default_protocol_deadline(),
            max_connections: default_max_connections(),
            stream_idle_timeout: default_stream_idle_timeout(),
            max_streams_per_user: default_max_streams_per_user(),
            max_calls_per_user: default_max_calls_per_user(),
            max_transfers_per_user: default_max_transfers_per_user(),
            queue_wait: default_queue_wait(),
        }
    }
}

fn default_max_message_bytes() -> usize {
    DOLT_MAX_MESSAGE_BYTES
}
fn default_max_concurrent_streams() -> u32 {
    256
}
fn default_max_header_bytes() -> u32 {
    64 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_protocol_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_stream_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_streams_per_user() -> usize {
    64
}
fn default_max_calls_per_user() -> usize {
    256
}
fn default_max_transfers_per_user() -> usize {
    64
}
fn default_queue_wait() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `doltgate=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::default(), level: default_log_level() }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|err| match err {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.to_owned(), source },
            other => other,
        })
    }

    /// Parses without validating: flags may still fill in what the file leaves out.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: PathBuf::new(), source: Box::new(source) })
    }

    /// The clusters and routes in effect: `[upstream]` expands to a cluster
    /// named `default` with one always-primary endpoint and a catch-all route.
    /// Which of the two forms the file uses is the one thing checked here;
    /// each cluster and route is checked where it is built.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        let upstream = match (&self.upstream, self.clusters.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    "upstream",
                    "missing: set [upstream] address or [clusters.NAME], or pass --upstream HOST:PORT",
                ))
            }
            (Some(_), false) => {
                return Err(invalid("upstream", "cannot be combined with [clusters]; describe it as a cluster instead"))
            }
            (None, false) => {
                return Ok(Topology { clusters: self.clusters.clone(), routes: self.routes.clone(), single: false });
            }
            (Some(upstream), true) => upstream,
        };
        if !self.routes.is_empty() {
            return Err(invalid("routes", "routes need [clusters]; [upstream] serves every database"));
        }
        let cluster = ClusterConfig {
            endpoints: vec![EndpointConfig {
                name: upstream.name.clone(),
                remotesapi: upstream.address.clone(),
                sql: None,
                role: Some(StaticRole::Primary),
            }],
            sql_user: None,
            sql_password: None,
            sql_password_env: None,
            sql_password_file: None,
            role_poll_interval: default_role_poll_interval(),
            write_wait: default_write_wait(),
            no_primary: NoPrimary::Hold,
            writes_url: None,
            transport: upstream.transport(),
        };
        let route = RouteConfig {
            database: None,
            database_prefix: None,
            database_glob: Some("*".into()),
            path_prefix: None,
            cluster: "default".into(),
            read_policy: ReadPolicy::Primary,
        };
        Ok(Topology { clusters: BTreeMap::from([("default".to_owned(), cluster)]), routes: vec![route], single: true })
    }

    /// The key of the first cluster doltgate has no SQL user for.
    pub fn cluster_without_service_user(&self) -> Option<String> {
        if self.upstream.is_some() {
            return Some("upstream".into());
        }
        self.clusters.iter().find(|(_, c)| c.sql_user.is_none()).map(|(name, _)| format!("clusters.{name}.sql_user"))
    }
}

/// The clusters and routes a configuration describes, in either form.
#[derive(Debug, Clone)]
pub struct Topology {
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub routes: Vec<RouteConfig>,
    /// Written as `[upstream]`: keys of its one endpoint are `upstream.*`.
    pub single: bool,
}

impl Topology {
    /// The config keys of cluster `name`'s fields, as the operator wrote them.
    pub fn keys(&self, name: &str) -> ClusterKeys {
        ClusterKeys {
            section: if self.single { "upstream".into() } else { format!("clusters.{name}") },
            single: self.single,
        }
    }
}

/// Where a cluster's fields sit in the file: under `[clusters.NAME]`, or
/// flat in `[upstream]` (whose one endpoint is its `name` and `address`, and
/// whose transport settings are its own keys).
#[derive(Debug, Clone)]
pub struct ClusterKeys {
    section: String,
    single: bool,
}

impl ClusterKeys {
    pub fn section(&self) -> &str {
        &self.section
    }

    /// A cluster-wide field; `[upstream]` has none but its own section.
    pub fn field(&self, field: &str) -> String {
        match self.single {
            true => self.section.clone(),
            false => format!("{}.{field}", self.section),
        }
    }

    /// A field of endpoint `index`.
    pub fn endpoint(&self, index: usize, field: &str) -> String {
        match (self.single, field) {
            (true, "remotesapi") => "upstream.address".into(),
            (true, field) => format!("upstream.{field}"),
            (false, field) => format!("{}.endpoints[{index}].{field}", self.section),
        }
    }

    /// The transport settings.
    pub fn transport(&self) -> String {
        match self.single {
            true => self.section.clone(),
            false => format!("{}.transport", self.section),
        }
    }
}

/// Checks a name that appears in URLs, logs and metric labels.
pub fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{name:?} must be 1-64 letters, digits, '.', '_' or '-'")))
    }
}

/// A positive duration, or an error naming `key`.
pub fn check_positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(())
}

/// A count of at least one, or an error naming `key`.
pub fn check_at_least_one(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// `host:port` at `key`.
pub fn authority_at(key: &str, address: &str) -> Result<http::uri::Authority, ConfigError> {
    parse_authority(address).map_err(|reason| invalid(key, reason))
}

/// A file that must be there, at `key`.
pub fn check_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    if !path.is_file() {
        return Err(invalid(key, format!("{} is not a readable file", path.display())));
    }
    Ok(())
}

/// Accepts `host:port`, optionally written as `http://host:port`.
pub fn parse_authority(address: &str) -> Result<http::uri::Authority, String> {
    let bare = address.strip_prefix("http://").unwrap_or(address).trim_end_matches('/');
    if bare.contains('/') || address.starts_with("https://") {
        return Err(format!("{address:?} must be host:port (TLS upstreams are not supported yet)"));
    }
    let authority: http::uri::Authority = bare.parse().map_err(|e| format!("{address:?} is not host:port: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("{address:?} has no port"));
    }
    Ok(authority)
}

/// `scheme://authority` with no path, at `key`; returned without a trailing slash.
pub fn origin_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let bad = |reason: String| invalid(key, reason);
    let uri: http::Uri = url.parse().map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad(format!("{url:?} must start with http:// or https://"))),
    }
    if uri.authority().is_none() {
        return Err(bad(format!("{url:?} has no host")));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad(format!("{url:?} must not have a path")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[upstream]\nadress = \"x:1\"\n").unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn authority_forms() {
        assert_eq!(parse_authority("127.0.0.1:50051").unwrap().as_str(), "127.0.0.1:50051");
        assert_eq!(parse_authority("http://dolt:50051/").unwrap().as_str(), "dolt:50051");
        assert!(parse_authority("https://dolt:1").is_err());
        assert!(parse_authority("dolt").is_err());
    }
}
