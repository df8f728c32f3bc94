//! Connections to one Dolt remotesapi endpoint: a multiplexed HTTP/2 (h2c)
//! client for gRPC and a pooled HTTP/1.1 client for table files, with connect
//! and response timeouts, and transport failures turned into [`GatewayError`]s
//! that name the endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{parse_authority, TransportConfig};
use crate::error::GatewayError;
use crate::BoxError;

pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// HTTP/2 flow-control windows toward the upstream. Large enough that a
/// 128 MiB message or a burst of chunk locations is not throttled by
/// round trips on loopback or a data-center link.
const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

pub struct Upstream {
    name: String,
    authority: http::uri::Authority,
    grpc: Client<HttpConnector, UpstreamBody>,
    files: Client<HttpConnector, UpstreamBody>,
    request_timeout: Duration,
}

impl Upstream {
    pub fn new(name: &str, address: &str, config: &TransportConfig) -> Result<Upstream, String> {
        let authority = parse_authority(address)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));

        let grpc = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .http2_max_frame_size(1024 * 1024)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector.clone());
        let files = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream { name: name.to_owned(), authority, grpc, files, request_timeout: config.request_timeout })
    }

    /// The configured name, as it appears in table-file URLs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` of the endpoint, for messages and logs.
    pub fn address(&self) -> &str {
        self.authority.as_str()
    }

    pub fn uri(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::NotAFileUrl(format!("invalid path: {e}")))
    }

    /// Sends a gRPC call. Unary calls get the response-header timeout; streams
    /// run as long as the client keeps them open.
    pub async fn send_grpc(
        &self,
        request: Request<UpstreamBody>,
        unary: bool,
    ) -> Result<Response<Incoming>, GatewayError> {
        let timeout = unary.then_some(self.request_timeout);
        self.send(&self.grpc, request, timeout).await
    }

    /// Sends a table-file request. Uploads are not timed: their answer comes
    /// only after the whole body, which may be gigabytes.
    pub async fn send_file(&self, request: Request<UpstreamBody>) -> Result<Response<Incoming>, GatewayError> {
        let timeout = (request.method() == http::Method::GET).then_some(self.request_timeout);
        self.send(&self.files, request, timeout).await
    }

    async fn send(
        &self,
        client: &Client<HttpConnector, UpstreamBody>,
        request: Request<UpstreamBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let call = client.request(request);
        let result = match timeout {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| GatewayError::UpstreamTimeout { address: self.address().to_owned(), after })?,
            None => call.await,
        };
        result.map_err(|err| self.transport_error(&err))
    }

    fn transport_error(&self, err: &hyper_util::client::legacy::Error) -> GatewayError {
        let reason = root_cause(err);
        if err.is_connect() {
            GatewayError::UpstreamUnreachable { address: self.address().to_owned(), reason }
        } else {
            GatewayError::UpstreamFailed { address: self.address().to_owned(), reason }
        }
    }
}

/// The innermost error's text: "connection refused" rather than "client error (Connect)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("address", &self.address()).finish()
    }
}
