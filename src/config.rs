//! The configuration file: its shape, defaults and validation.
//!
//! One TOML file (documented example: `config/doltgate.toml`). Unknown keys are
//! errors, and every semantic check names the key it is about, so
//! `doltgate check-config FILE` tells an operator exactly what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Dolt's own client and server both allow gRPC messages up to 128 MiB.
pub const DOLT_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listener: ListenerConfig,
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
}

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
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self { address: default_listen(), public_url: None, tls: None }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
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
}

impl UpstreamConfig {
    pub fn at(address: impl Into<String>) -> Self {
        Self {
            name: default_upstream_name(),
            address: address.into(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
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
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
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

    /// Checks everything a running gateway relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let upstream = self
            .upstream
            .as_ref()
            .ok_or_else(|| invalid("upstream", "missing: set [upstream] address, or pass --upstream HOST:PORT"))?;
        validate_name(&upstream.name).map_err(|reason| invalid("upstream.name", reason))?;
        parse_authority(&upstream.address).map_err(|reason| invalid("upstream.address", reason))?;
        if upstream.connect_timeout.is_zero() {
            return Err(invalid("upstream.connect_timeout", "must be greater than zero"));
        }
        if upstream.request_timeout.is_zero() {
            return Err(invalid("upstream.request_timeout", "must be greater than zero"));
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
        if self.limits.max_concurrent_streams == 0 {
            return Err(invalid("limits.max_concurrent_streams", "must be greater than zero"));
        }
        if self.limits.max_header_bytes < 8 * 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }
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

    fn key_of(err: ConfigError) -> &'static str {
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
