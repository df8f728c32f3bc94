//! The request entry point: tells gRPC from table-file traffic the way Dolt's
//! own server does (HTTP/2 with `content-type: application/grpc*` is gRPC,
//! everything else is a table file) and hands each to its proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::authn::Authenticator;
use crate::authz::Grants;
use crate::cluster::{Cluster, ConnectionAffinity};
use crate::config::auth::UpstreamCredentials;
use crate::config::{AuthConfig, ClusterConfig, Config, FileUrlConfig};
use crate::error::GatewayError;
use crate::file_url::UrlSigner;
use crate::grpc::fairness::{Limit, UserSlots};
use crate::route::Router;
use crate::{files, grpc, BoxError};

pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The gateway in effect; a reload swaps in a new one while requests that
/// started on the old one finish with it.
pub type SharedGateway = Arc<arc_swap::ArcSwap<Gateway>>;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// Which members this connection's reads stick to.
    pub affinity: Arc<ConnectionAffinity>,
}

/// Everything a request needs, built once from the configuration.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) router: Router,
    clusters: HashMap<String, Arc<Cluster>>,
    /// Endpoint name (as in table-file URLs) -> its cluster and index there.
    endpoints: HashMap<String, (Arc<Cluster>, usize)>,
    public_url: Option<String>,
    pub(crate) max_message_bytes: usize,
    pub(crate) request_read_timeout: std::time::Duration,
    pub(crate) stream_idle_timeout: std::time::Duration,
    pub(crate) stream_slots: UserSlots,
    pub(crate) call_slots: UserSlots,
    pub(crate) transfer_slots: UserSlots,
    /// `None`: clients' credentials pass through for Dolt to check.
    pub(crate) auth: Option<Auth>,
    pub(crate) url_signer: Arc<UrlSigner>,
    pub(crate) uploads: crate::uploads::UploadSettings,
    /// The URL key is configured, so other replicas may have verified an upload.
    pub(crate) peers_share_url_key: bool,
}

/// Authentication and authorization in effect.
#[derive(Debug)]
pub struct Auth {
    pub(crate) authenticator: Authenticator,
    pub(crate) grants: Grants,
    pub(crate) push_rules: crate::push::rules::PushRules,
    /// Pushes must also pass the upstream's `dolt_branch_control` rows.
    pub(crate) mirrors_branch_control: bool,
    branch_control_poll_interval: std::time::Duration,
    pub(crate) upstream_credentials: UpstreamCredentials,
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Gateway, String> {
        let (cluster_configs, routes) = config.topology();
        let mut clusters = HashMap::new();
        let mut endpoints = HashMap::new();
        for (name, cluster_config) in &cluster_configs {
            let password = sql_password(name, cluster_config)?;
            let cluster = Arc::new(Cluster::new(name, cluster_config, password.as_deref())?);
            for (index, endpoint) in cluster.endpoints.iter().enumerate() {
                endpoints.insert(endpoint.name.clone(), (cluster.clone(), index));
            }
            clusters.insert(name.clone(), cluster);
        }
        Ok(Gateway {
            router: Router::new(&routes),
            clusters,
            endpoints,
            public_url: config.listener.public_url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
            max_message_bytes: config.limits.max_message_bytes,
            request_read_timeout: config.limits.request_read_timeout,
            stream_idle_timeout: config.limits.stream_idle_timeout,
            stream_slots: UserSlots::new(Limit::Streams, config.limits.max_streams_per_user, config.limits.queue_wait),
            call_slots: UserSlots::new(Limit::Calls, config.limits.max_calls_per_user, config.limits.queue_wait),
            transfer_slots: UserSlots::new(
                Limit::Transfers,
                config.limits.max_transfers_per_user,
                config.limits.queue_wait,
            ),
            auth: config
                .auth
                .as_ref()
                .map(|auth| Auth::new(auth, config.listener.public_url.as_deref()))
                .transpose()?,
            url_signer: Arc::new(url_signer(&config.file_urls)?),
            uploads: crate::uploads::UploadSettings::new(&config.uploads),
            peers_share_url_key: config.file_urls.key_env.is_some() || config.file_urls.key_file.is_some(),
        })
    }

    /// Starts polling member roles (needs a Tokio runtime).
    pub fn start_discovery(&self) {
        for cluster in self.clusters.values() {
            crate::cluster::discovery::spawn_pollers(cluster);
            if let Some(auth) = self.auth.as_ref().filter(|auth| auth.mirrors_branch_control) {
                crate::push::branch_control::spawn_poller(cluster, auth.branch_control_poll_interval);
            }
        }
    }

    pub fn cluster(&self, name: &str) -> &Arc<Cluster> {
        self.clusters.get(name).expect("routes name configured clusters (validated)")
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }

    /// Why the gateway should not get traffic now; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        self.clusters.values().filter_map(|cluster| cluster.not_ready_reason()).collect()
    }

    /// The endpoint a table-file URL names.
    pub fn endpoint(&self, name: &str) -> Option<&(Arc<Cluster>, usize)> {
        self.endpoints.get(name)
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let in_flight = crate::metrics::InFlight::start();
        // The proxies' futures are boxed: hyper moves this future into a new
        // task per request, and inline they made it ~5 KiB, copied on every
        // spawn and poll (memmove led the unary-load profile).
        let grpc = is_grpc(&request);
        let dispatched = async {
            if !grpc {
                return Box::pin(files::proxy(&self, request)).await;
            }
            if request.version() != Version::HTTP_2 {
                return GatewayError::GrpcNeedsHttp2(request.version()).to_http_response().map(full_body);
            }
            let origin = self.client_origin(&request, &connection);
            Box::pin(grpc::proxy(&self, request, &connection, origin)).await
        };
        let response = answer_even_if_it_panics(grpc, dispatched).await;
        // In flight until the last byte of the answer has gone out.
        Ok(response.map(|body| ObservedBody::new(body, Box::new(move |_, _| drop(in_flight))).boxed_unsync()))
    }

    /// `scheme://authority` under which this client reaches doltgate, for the
    /// table-file URLs handed back to it.
    fn client_origin<B>(&self, request: &Request<B>, connection: &ConnectionInfo) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let scheme = if connection.tls { "https" } else { "http" };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{scheme}://{authority}")
    }
}

impl Auth {
    fn new(config: &AuthConfig, public_url: Option<&str>) -> Result<Auth, String> {
        Ok(Auth {
            authenticator: Authenticator::new(config, public_url)?,
            grants: Grants::new(&config.grants),
            push_rules: crate::push::rules::PushRules::new(&config.push_rules),
            mirrors_branch_control: config.branch_control == crate::config::auth::BranchControlMode::Mirror,
            branch_control_poll_interval: config.branch_control_poll_interval,
            upstream_credentials: config.upstream_credentials,
        })
    }
}

/// Runs a request's handling; a panic in it becomes an INTERNAL answer (500
/// for table files), counted and logged, instead of a connection torn down
/// with no status. Nothing a client sends should panic; this is the net.
pub async fn answer_even_if_it_panics(
    grpc: bool,
    handling: impl Future<Output = Response<ResponseBody>>,
) -> Response<ResponseBody> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => internal_answer(grpc, &panic),
    }
}

/// The answer to a request whose handling panicked.
pub fn internal_answer(grpc: bool, panic: &(dyn std::any::Any + Send)) -> Response<ResponseBody> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    crate::metrics::metrics().panics.with_label_values(&[if grpc { "grpc" } else { "file" }]).inc();
    tracing::error!(panic = %what, "request handling panicked; answered INTERNAL");
    let err = GatewayError::Internal("the request could not be handled (an internal error, logged)".into());
    match grpc {
        true => grpc::status::error_response(&err).map(full_body),
        false => err.to_http_response().map(full_body),
    }
}

/// The table-file URL key: configured, or one random key for the life of the
/// process (kept across reloads, so URLs handed out before one still work).
fn url_signer(config: &FileUrlConfig) -> Result<UrlSigner, String> {
    static PROCESS_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = if let Some(var) = &config.key_env {
        std::env::var(var)
            .map_err(|_| format!("file_urls.key_env: environment variable {var} is not set"))?
            .into_bytes()
    } else if let Some(path) = &config.key_file {
        let bytes =
            std::fs::read(path).map_err(|e| format!("file_urls.key_file: cannot read {}: {e}", path.display()))?;
        bytes.trim_ascii_end().to_vec()
    } else {
        PROCESS_KEY
            .get_or_init(|| {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("randomness");
                key
            })
            .to_vec()
    };
    let key_name = if config.key_env.is_some() { "file_urls.key_env" } else { "file_urls.key_file" };
    UrlSigner::new(&key, config.ttl()).map_err(|reason| format!("{key_name}: {reason}"))
}

/// The SQL password for role polling, from the file, the environment or inline.
fn sql_password(cluster: &str, config: &ClusterConfig) -> Result<Option<String>, String> {
    if let Some(var) = &config.sql_password_env {
        let value = std::env::var(var)
            .map_err(|_| format!("clusters.{cluster}.sql_password_env: environment variable {var} is not set"))?;
        return Ok(Some(value));
    }
    if let Some(path) = &config.sql_password_file {
        let value = std::fs::read_to_string(path)
            .map_err(|e| format!("clusters.{cluster}.sql_password_file: cannot read {}: {e}", path.display()))?;
        return Ok(Some(value.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(config.sql_password.clone())
}

/// Runs a callback once when a body ends, with its trailers if it had any
/// (else `None`, also when dropped early: the peer went away) and the
/// number of data bytes that passed.
pub(crate) struct ObservedBody<B> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

pub(crate) type OnEnd = Box<dyn FnOnce(Option<&http::HeaderMap>, u64) + Send>;

impl<B> ObservedBody<B> {
    pub(crate) fn new(inner: B, on_end: OnEnd) -> Self {
        Self { inner, bytes: 0, on_end: Some(on_end) }
    }

    fn end(&mut self, trailers: Option<&http::HeaderMap>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(trailers, self.bytes);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl<B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin> http_body::Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    self.end(Some(trailers));
                }
            }
            std::task::Poll::Ready(_) => self.end(None),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that is all there in memory.
pub(crate) fn full_body(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Headers that describe one hop of a connection and must not be forwarded.
pub(crate) fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te" | "host" | "trailer"
    )
}

/// Removes the hop-by-hop headers of a message about to be forwarded.
pub(crate) fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    let hop: Vec<_> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn panics() -> &'static prometheus::IntCounterVec {
        &crate::metrics::metrics().panics
    }

    #[tokio::test]
    async fn a_panic_in_handling_is_an_internal_answer_counted_and_logged() {
        let before = panics().with_label_values(&["grpc"]).get();
        let response = answer_even_if_it_panics(true, async { panic!("a bug reached by input") }).await;
        assert_eq!(response.status(), StatusCode::OK, "gRPC answers in its trailers-only status");
        assert_eq!(response.headers()["grpc-status"], "13", "INTERNAL");
        assert_eq!(panics().with_label_values(&["grpc"]).get(), before + 1);

        let before = panics().with_label_values(&["file"]).get();
        let response = answer_even_if_it_panics(false, async { panic!("another") }).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panics().with_label_values(&["file"]).get(), before + 1);

        let fine = answer_even_if_it_panics(false, async { Response::new(full_body(Bytes::from_static(b"ok"))) }).await;
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
