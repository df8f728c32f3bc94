//! The configuration file: its shape, defaults and validation.
//!
//! One TOML file (documented example: `config/doltgate.toml`). Unknown keys are
//! errors, and every semantic check names the key it is about, so
//! `doltgate check-config FILE` tells an operator exactly what to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod auth;
pub use auth::{AuthConfig, FileUrlConfig, Permission};

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
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self { spool_dir: None, max_file_bytes: default_max_file_bytes() }
    }
}

/// Dolt's pushes write archives of up to about 1 GiB; leave room above that.
fn default_max_file_bytes() -> u64 {
    4 << 30
}

/// The smallest sensible bound: Dolt's own archive target.
const MIN_MAX_FILE_BYTES: u64 = 1 << 30;

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

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
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
    pub fn topology(&self) -> (BTreeMap<String, ClusterConfig>, Vec<RouteConfig>) {
        let Some(upstream) = &self.upstream else { return (self.clusters.clone(), self.routes.clone()) };
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
        (BTreeMap::from([("default".to_owned(), cluster)]), vec![route])
    }

    /// Checks everything a running gateway relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.upstream, self.clusters.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    "upstream",
                    "missing: set [upstream] address or [clusters.NAME], or pass --upstream HOST:PORT",
                ))
            }
            (Some(_), false) => {
                return Err(invalid("upstream", "cannot be combined with [clusters]; describe it as a cluster instead"))
            }
            (Some(upstream), true) => {
                if !self.routes.is_empty() {
                    return Err(invalid("routes", "routes need [clusters]; [upstream] serves every database"));
                }
                validate_name(&upstream.name).map_err(|reason| invalid("upstream.name", reason))?;
                parse_authority(&upstream.address).map_err(|reason| invalid("upstream.address", reason))?;
                validate_transport("upstream", &upstream.transport())?;
            }
            (None, false) => {
                validate_clusters(&self.clusters)?;
                validate_routes(&self.routes, &self.clusters)?;
            }
        }
        if let Some(url) = &self.listener.public_url {
            validate_public_url(url).map_err(|reason| invalid("listener.public_url", reason))?;
        }
        if let Some(tls) = &self.listener.tls {
            for (key, path) in [("listener.tls.cert", &tls.cert), ("listener.tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(invalid(key, format!("{} is not a readable file", path.display())));
                }
            }
        }
        if self.limits.max_message_bytes < DOLT_MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_message_bytes",
                format!("must be at least {DOLT_MAX_MESSAGE_BYTES} (Dolt sends messages up to 128 MiB)"),
            ));
        }
        if self.limits.max_message_bytes > u32::MAX as usize {
            return Err(invalid("limits.max_message_bytes", "must fit the 4-byte gRPC length prefix"));
        }
        if self.limits.request_read_timeout.is_zero() {
            return Err(invalid("limits.request_read_timeout", "must be greater than zero"));
        }
        if self.limits.protocol_deadline.is_zero() {
            return Err(invalid("limits.protocol_deadline", "must be greater than zero"));
        }
        if self.limits.stream_idle_timeout.is_zero() {
            return Err(invalid("limits.stream_idle_timeout", "must be greater than zero"));
        }
        for (key, value) in [
            ("limits.max_streams_per_user", self.limits.max_streams_per_user),
            ("limits.max_calls_per_user", self.limits.max_calls_per_user),
            ("limits.max_transfers_per_user", self.limits.max_transfers_per_user),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be greater than zero"));
        }
        if self.limits.max_concurrent_streams == 0 {
            return Err(invalid("limits.max_concurrent_streams", "must be greater than zero"));
        }
        if self.limits.max_header_bytes < 8 * 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        if let Some(auth) = &self.auth {
            auth.validate(|| self.cluster_without_service_user())?;
            let has_keys = auth.users.iter().any(|user| !user.dolt_keys.is_empty());
            if has_keys && crate::authn::dolt_key_audiences(auth, self.listener.public_url.as_deref()).is_empty() {
                return Err(invalid(
                    "auth.dolt_key_audiences",
                    "users have dolt_keys: name the hosts clients use in their remote URLs (or set listener.public_url), so a token a client signed for another server is not accepted here",
                ));
            }
        }
        for (key, path) in [("file_urls.key_file", &self.file_urls.key_file)] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(key, format!("{} is not a readable file", path.display())));
                }
            }
        }
        if self.file_urls.key_env.is_some() && self.file_urls.key_file.is_some() {
            return Err(invalid("file_urls.key_env", "set at most one of key_env, key_file"));
        }
        if self.uploads.max_file_bytes < MIN_MAX_FILE_BYTES {
            return Err(invalid(
                "uploads.max_file_bytes",
                format!("must be at least {MIN_MAX_FILE_BYTES} (Dolt writes archives of up to 1 GiB)"),
            ));
        }
        if let Some(dir) = &self.uploads.spool_dir {
            if !dir.is_dir() {
                return Err(invalid("uploads.spool_dir", format!("{} is not a directory", dir.display())));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }
}

impl Config {
    /// The key of the first cluster doltgate has no SQL user for.
    fn cluster_without_service_user(&self) -> Option<String> {
        if self.upstream.is_some() {
            return Some("upstream".into());
        }
        self.clusters.iter().find(|(_, c)| c.sql_user.is_none()).map(|(name, _)| format!("clusters.{name}.sql_user"))
    }
}

fn validate_transport(key: &str, transport: &TransportConfig) -> Result<(), ConfigError> {
    if transport.connect_timeout.is_zero() {
        return Err(invalid(format!("{key}.connect_timeout"), "must be greater than zero"));
    }
    if transport.request_timeout.is_zero() {
        return Err(invalid(format!("{key}.request_timeout"), "must be greater than zero"));
    }
    if !(1..=DOLT_MAX_STREAMS_PER_CONNECTION).contains(&transport.max_streams_per_connection) {
        return Err(invalid(
            format!("{key}.max_streams_per_connection"),
            format!("must be between 1 and {DOLT_MAX_STREAMS_PER_CONNECTION}, the most Dolt serves on one connection"),
        ));
    }
    Ok(())
}

fn validate_clusters(clusters: &BTreeMap<String, ClusterConfig>) -> Result<(), ConfigError> {
    let mut endpoint_names = std::collections::HashSet::new();
    for (name, cluster) in clusters {
        let key = format!("clusters.{name}");
        validate_name(name).map_err(|reason| invalid(&key, reason))?;
        if cluster.endpoints.is_empty() {
            return Err(invalid(format!("{key}.endpoints"), "a cluster needs at least one endpoint"));
        }
        for (i, endpoint) in cluster.endpoints.iter().enumerate() {
            let key = format!("{key}.endpoints[{i}]");
            validate_name(&endpoint.name).map_err(|reason| invalid(format!("{key}.name"), reason))?;
            if !endpoint_names.insert(endpoint.name.clone()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice; endpoint names are unique across clusters", endpoint.name),
                ));
            }
            parse_authority(&endpoint.remotesapi).map_err(|reason| invalid(format!("{key}.remotesapi"), reason))?;
            match (&endpoint.sql, endpoint.role) {
                (Some(sql), _) => {
                    parse_authority(sql).map_err(|reason| invalid(format!("{key}.sql"), reason))?;
                }
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(invalid(
                        &key,
                        "set sql = \"HOST:PORT\" (to poll the member's cluster role) or a fixed role = \"primary\"",
                    ))
                }
            }
        }
        let polls = cluster.endpoints.iter().any(|e| e.role.is_none());
        if polls && cluster.sql_user.is_none() {
            return Err(invalid(format!("{key}.sql_user"), "required to poll member roles over SQL"));
        }
        let password_sources =
            [cluster.sql_password.is_some(), cluster.sql_password_env.is_some(), cluster.sql_password_file.is_some()];
        if password_sources.iter().filter(|set| **set).count() > 1 {
            return Err(invalid(
                format!("{key}.sql_password"),
                "set at most one of sql_password, sql_password_env, sql_password_file",
            ));
        }
        if cluster.role_poll_interval.is_zero() {
            return Err(invalid(format!("{key}.role_poll_interval"), "must be greater than zero"));
        }
        if let Some(url) = &cluster.writes_url {
            validate_public_url(url).map_err(|reason| invalid(format!("{key}.writes_url"), reason))?;
        }
        validate_transport(&format!("{key}.transport"), &cluster.transport)?;
    }
    Ok(())
}

fn validate_routes(routes: &[RouteConfig], clusters: &BTreeMap<String, ClusterConfig>) -> Result<(), ConfigError> {
    if routes.is_empty() {
        return Err(invalid("routes", "no routes: add [[routes]] entries mapping databases to clusters"));
    }
    for (i, route) in routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let matchers = [&route.database, &route.database_prefix, &route.database_glob];
        if matchers.iter().filter(|m| m.is_some()).count() != 1 {
            return Err(invalid(&key, "set exactly one of database, database_prefix, database_glob"));
        }
        for (field, value) in [("database", &route.database), ("database_prefix", &route.database_prefix)] {
            if let Some(value) = value {
                if value.is_empty() || value.contains(['/', '@']) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        format!("{value:?} must be non-empty, without '/' or '@'"),
                    ));
                }
            }
        }
        if let Some(glob) = &route.database_glob {
            glob::Pattern::new(glob).map_err(|e| invalid(format!("{key}.database_glob"), e.to_string()))?;
        }
        if let Some(prefix) = &route.path_prefix {
            let ok =
                !prefix.is_empty() && prefix.split('/').all(|segment| !segment.is_empty() && !segment.contains('@'));
            if !ok {
                return Err(invalid(
                    format!("{key}.path_prefix"),
                    format!("{prefix:?} must be one or more non-empty segments separated by '/', without '@'"),
                ));
            }
        }
        if !clusters.contains_key(&route.cluster) {
            return Err(invalid(format!("{key}.cluster"), format!("no cluster named {:?}", route.cluster)));
        }
        if let Some(earlier) = routes[..i].iter().position(|e| crate::route::shadows(e, route)) {
            return Err(invalid(
                &key,
                format!("can never match: routes[{earlier}] matches every database this route names"),
            ));
        }
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1-64 letters, digits, '.', '_' or '-'"))
    }
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

fn validate_public_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("{url:?} must not have a path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/doltgate.toml");
        Config::parse(text).unwrap().validate().unwrap();
    }

    /// A `dolt creds` token names the host its remote URL had; accepting
    /// whatever authority a request came with would accept tokens minted for
    /// any other server.
    #[test]
    fn dolt_keys_need_configured_audiences() {
        let key = "041061050o3gg28a1c60q3gf208h44ok2kb1e60p38dho78u3sg0";
        let auth = format!(
            "[auth]\nupstream_credentials = \"passthrough\"\n[[auth.users]]\nname = \"dana\"\ndolt_keys = [\"{key}\"]\n"
        );
        let bare = format!("[upstream]\naddress = \"h:1\"\n{auth}");
        let err = Config::parse(&bare).unwrap().validate().unwrap_err();
        assert_eq!(key_of(err), "auth.dolt_key_audiences");
        let named = bare.replace("[[auth.users]]", "dolt_key_audiences = [\"dolt.example.com\"]\n[[auth.users]]");
        Config::parse(&named).unwrap().validate().unwrap();
        let public =
            format!("[upstream]\naddress = \"h:1\"\n[listener]\npublic_url = \"https://dolt.example.com\"\n{auth}");
        let config = Config::parse(&public).unwrap();
        config.validate().unwrap();
        let audiences =
            crate::authn::dolt_key_audiences(config.auth.as_ref().unwrap(), config.listener.public_url.as_deref());
        assert_eq!(audiences, vec!["dolt.example.com".to_owned()]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[upstream]\nadress = \"x:1\"\n").unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            ("", "upstream"),
            ("[upstream]\naddress = \"nohost\"\n", "upstream.address"),
            ("[upstream]\naddress = \"h:1\"\nname = \"a/b\"\n", "upstream.name"),
            ("[upstream]\naddress = \"h:1\"\n[limits]\nmax_message_bytes = 1024\n", "limits.max_message_bytes"),
            ("[upstream]\naddress = \"h:1\"\n[listener]\npublic_url = \"ftp://x\"\n", "listener.public_url"),
            ("[upstream]\naddress = \"h:1\"\n[log]\nlevel = \"=[\"\n", "log.level"),
            ("[upstream]\naddress = \"h:1\"\nmax_streams_per_connection = 0\n", "upstream.max_streams_per_connection"),
            (
                "[upstream]\naddress = \"h:1\"\nmax_streams_per_connection = 251\n",
                "upstream.max_streams_per_connection",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap().validate().unwrap_err();
            assert_eq!(key_of(err), key, "{text}");
        }
    }

    #[test]
    fn authority_forms() {
        assert_eq!(parse_authority("127.0.0.1:50051").unwrap().as_str(), "127.0.0.1:50051");
        assert_eq!(parse_authority("http://dolt:50051/").unwrap().as_str(), "dolt:50051");
        assert!(parse_authority("https://dolt:1").is_err());
        assert!(parse_authority("dolt").is_err());
    }
}
