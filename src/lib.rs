//! doltgate: a protocol-aware reverse proxy for Dolt's remotesapi.
//!
//! A request travels through these modules, in order:
//!
//! | module        | owns                                                                   |
//! |---------------|------------------------------------------------------------------------|
//! | `listener`  | TCP/TLS accept, HTTP/1.1 + HTTP/2 on one port, connection bounds, drain |
//! | `dispatch`  | the hyper service: gRPC or table file, and the panic net under both    |
//! | `grpc`      | a call's phases: read and route, admit, choose, inspect, send, relay   |
//! | `files`     | table-file GET/PUT/POST to the endpoint that sealed their URL          |
//! | [`authn`]     | who is calling: credentials read, proven, cached, throttled            |
//! | [`route`]     | which cluster serves the database a request names                      |
//! | `authz`     | what they may do: read/write grants per database                       |
//! | [`push`]      | what a Commit changes (ref diff of old and new root), push rules       |
//! | `uploads`   | upload names, spooling and verifying uploads, trusted registrations    |
//! | [`cache`]     | table files kept on disk and served to later clones (the edge cache)   |
//! | `cluster`   | members' roles, which member a read or write goes to                   |
//! | `upstream`  | connections to a Dolt remotesapi endpoint, and doltgate's own calls    |
//!
//! Beside them: `gateway` (the state in effect, built from the config by
//! `gateway::build`, one section per module), [`config`] (the file's shape
//! and its secrets), `limits` (per-call and per-user bounds), [`storage`]
//! (decoding Dolt's chunks: table files, archives, flatbuffers, refs),
//! [`remotesapi`] (what the protocol's messages and frames look like),
//! [`file_url`] (doltgate's signed table-file URLs), `sql` (every login to
//! a Dolt SQL port), `access` (the access log), [`log_output`] (log lines
//! to stderr in batches), `plumbing` (HTTP bodies and headers both proxies
//! share), [`error`] (every refusal and its gRPC/HTTP status, mapped once),
//! [`metrics`], `admin`, [`tls`].

mod access;
mod admin;
pub mod authn;
mod authz;
pub mod cache;
mod cluster;
pub mod config;
mod dispatch;
pub mod error;
pub mod file_url;
mod files;
mod gateway;
mod grpc;
mod limits;
mod listener;
pub mod log_output;
mod login;
pub use login::KeyRecord;
pub mod metrics;
mod plumbing;
pub mod push;
pub mod remotesapi;
pub mod route;
mod sql;
pub mod storage;
pub mod tls;
mod uploads;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Checks `config` the way serving it would, without reading secrets or
/// binding anything: the gateway builds, the listener's part holds, the log
/// filter parses.
pub fn check(config: &config::Config) -> Result<(), StartError> {
    gateway::Gateway::build(config, gateway::Purpose::Check)?;
    listener::check(config)?;
    check_log_level(config)?;
    Ok(())
}

/// The verdict the push rules of `config` give one ref change, and the rule
/// that decided it (for `doltgate explain`). A user `[[auth.users]]` lists
/// has its configured groups besides the question's.
pub fn explain_push(
    config: &config::Config,
    question: &push::explain::Question,
) -> Result<push::explain::Answer, String> {
    let gateway = gateway::Gateway::build(config, gateway::Purpose::Check).map_err(|e| e.to_string())?;
    let mut question = question.clone();
    let listed = config.auth.iter().flat_map(|auth| &auth.users).find(|user| user.name == question.user);
    question.groups.extend(listed.iter().flat_map(|user| user.groups.iter().cloned()));
    gateway.explain_push(&question)
}

/// The keys registered through `[login]` (for `doltgate keys list`).
pub async fn list_keys(config: &config::Config) -> Result<Vec<KeyRecord>, String> {
    let gateway = gateway::Gateway::build(config, gateway::Purpose::Serve).map_err(|e| e.to_string())?;
    let login = gateway.login().ok_or("the configuration has no [login] section")?;
    login.store().list().await.map_err(|e| e.to_string())
}

/// Revokes a registered key (for `doltgate keys revoke`); false when no live
/// key has that id.
pub async fn revoke_key(config: &config::Config, key_id: &str) -> Result<bool, String> {
    let gateway = gateway::Gateway::build(config, gateway::Purpose::Serve).map_err(|e| e.to_string())?;
    let login = gateway.login().ok_or("the configuration has no [login] section")?;
    login.revoke(key_id, "command line").await.map_err(|e| e.to_string())
}

/// `log.level` parses as a tracing filter.
pub fn check_log_level(config: &config::Config) -> Result<(), config::ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .map(drop)
        .map_err(|e| config::invalid("log.level", format!("not a valid filter: {e}")))
}

/// A configured gateway, bound to its port and ready to serve.
pub struct Server {
    listener: listener::Listener,
    admin: Option<admin::AdminListener>,
    gateway: gateway::SharedGateway,
    draining: Arc<std::sync::atomic::AtomicBool>,
    drain_delay: Duration,
    drain_timeout: Duration,
}

/// Applies a new configuration to a running server.
#[derive(Clone)]
pub struct Reloader {
    gateway: gateway::SharedGateway,
}

impl Reloader {
    /// Builds a new gateway from `config` and swaps it in.
    /// Requests in flight finish on the old one; on error nothing changes.
    /// The listener and admin addresses, TLS and connection limits are read
    /// only at start.
    pub fn apply(&self, config: &config::Config) -> Result<(), StartError> {
        check_log_level(config)?;
        let fresh = Arc::new(gateway::Gateway::build(config, gateway::Purpose::Serve)?);
        fresh.start_background();
        self.gateway.store(fresh);
        Ok(())
    }
}

impl Server {
    /// Builds the gateway `config` describes and binds the listener.
    pub async fn bind(config: &config::Config) -> Result<Server, StartError> {
        check_log_level(config)?;
        let built = Arc::new(gateway::Gateway::build(config, gateway::Purpose::Serve)?);
        built.start_background();
        let gateway: gateway::SharedGateway = Arc::new(arc_swap::ArcSwap::new(built));
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin = match config.admin.address {
            Some(address) => Some(admin::AdminListener::bind(address, gateway.clone(), draining.clone()).await?),
            None => None,
        };
        let listener = listener::Listener::bind(config, gateway.clone()).await?;
        Ok(Server {
            listener,
            admin,
            gateway,
            draining,
            drain_delay: config.listener.drain_delay,
            drain_timeout: config.listener.drain_timeout,
        })
    }

    pub fn reloader(&self) -> Reloader {
        Reloader { gateway: self.gateway.clone() }
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(admin::AdminListener::local_addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.listener.is_tls()
    }

    /// Serves until `shutdown` resolves; then reports not ready and keeps
    /// serving for `listener.drain_delay`, then stops accepting and lets
    /// requests in flight finish for up to `listener.drain_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        if let Some(admin) = self.admin {
            tokio::spawn(admin.serve());
        }
        let (draining, delay) = (self.draining, self.drain_delay);
        let stop_accepting = async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(?delay, "shutdown requested: not ready; serving on until the drain delay passes");
            tokio::time::sleep(delay).await;
        };
        self.listener.serve(stop_accepting, self.drain_timeout).await
    }
}
