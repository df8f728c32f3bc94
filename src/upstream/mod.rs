//! Connections to one Dolt remotesapi endpoint: multiplexed HTTP/2 (h2c)
//! connections for gRPC (`grpc_connections`) and a pooled HTTP/1.1 client
//! for table files, with connect and response timeouts, and transport
//! failures turned into [`GatewayError`]s that name the endpoint.

mod call;
mod grpc_connections;
pub mod repo;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{
    authority_at, check_positive, invalid, ConfigError, TransportConfig, DOLT_MAX_STREAMS_PER_CONNECTION,
};
use crate::error::GatewayError;
use crate::BoxError;

pub use grpc_connections::LeasedBody;
use grpc_connections::{GrpcConnections, SendError};

pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

pub struct Upstream {
    name: String,
    authority: http::uri::Authority,
    grpc: GrpcConnections,
    files: Client<HttpConnector, UpstreamBody>,
    request_timeout: Duration,
}

impl Upstream {
    /// An endpoint at `address` (config key `address_key`) with the
    /// transport settings at `transport_key`.
    pub fn build(
        name: &str,
        (address_key, address): (&str, &str),
        (transport_key, config): (&str, &TransportConfig),
    ) -> Result<Upstream, ConfigError> {
        let authority = authority_at(address_key, address)?;
        check_transport(transport_key, config)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));

        let grpc = GrpcConnections::new(
            name,
            &authority,
            connector.clone(),
            config.max_streams_per_connection,
            config.pool_idle_timeout,
        );
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
    ) -> Result<Response<LeasedBody>, GatewayError> {
        let call = self.grpc.send(request);
        let result = match unary {
            true => self.timed(self.request_timeout, call).await?,
            false => call.await,
        };
        result.map_err(|err| match err {
            SendError::Connect(reason) => {
                GatewayError::UpstreamUnreachable { address: self.address().to_owned(), reason }
            }
            SendError::Failed(reason) => GatewayError::UpstreamFailed { address: self.address().to_owned(), reason },
        })
    }

    /// HTTP/2 connections open for gRPC calls.
    pub fn grpc_connections(&self) -> usize {
        self.grpc.open_connections()
    }

    /// Sends a table-file request. Uploads are not timed: their answer comes
    /// only after the whole body, which may be gigabytes.
    pub async fn send_file(&self, request: Request<UpstreamBody>) -> Result<Response<Incoming>, GatewayError> {
        let request_is_get = request.method() == http::Method::GET;
        let call = self.files.request(request);
        let result = match request_is_get {
            true => self.timed(self.request_timeout, call).await?,
            false => call.await,
        };
        result.map_err(|err| self.transport_error(&err))
    }

    async fn timed<T>(&self, after: Duration, work: impl std::future::Future<Output = T>) -> Result<T, GatewayError> {
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| GatewayError::UpstreamTimeout { address: self.address().to_owned(), after })
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

fn check_transport(key: &str, transport: &TransportConfig) -> Result<(), ConfigError> {
    check_positive(&format!("{key}.connect_timeout"), transport.connect_timeout)?;
    check_positive(&format!("{key}.request_timeout"), transport.request_timeout)?;
    if !(1..=DOLT_MAX_STREAMS_PER_CONNECTION).contains(&transport.max_streams_per_connection) {
        return Err(invalid(
            format!("{key}.max_streams_per_connection"),
            format!("must be between 1 and {DOLT_MAX_STREAMS_PER_CONNECTION}, the most Dolt serves on one connection"),
        ));
    }
    Ok(())
}

/// The innermost error's text: "connection refused" rather than "client error (Connect)".
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
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
