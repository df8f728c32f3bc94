//! The request entry point: tells gRPC from table-file traffic the way Dolt's
//! own server does (HTTP/2 with `content-type: application/grpc*` is gRPC,
//! everything else is a table file) and hands each to its proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::Config;
use crate::error::GatewayError;
use crate::upstream::Upstream;
use crate::{files, grpc, BoxError};

pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// Everything a request needs, built once from the configuration.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) upstream: Upstream,
    public_url: Option<String>,
    pub(crate) max_message_bytes: usize,
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Gateway, String> {
        let upstream_config = config.upstream.as_ref().ok_or("no upstream configured")?;
        Ok(Gateway {
            upstream: Upstream::new(upstream_config)?,
            public_url: config.listener.public_url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
            max_message_bytes: config.limits.max_message_bytes,
        })
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let response = if is_grpc(&request) {
            if request.version() == Version::HTTP_2 {
                let origin = self.client_origin(&request, connection);
                grpc::proxy(&self, request, origin).await
            } else {
                GatewayError::GrpcNeedsHttp2(request.version()).to_http_response().map(full_body)
            }
        } else {
            files::proxy(&self, request).await
        };
        Ok(response)
    }

    /// `scheme://authority` under which this client reaches doltgate, for the
    /// table-file URLs handed back to it.
    fn client_origin<B>(&self, request: &Request<B>, connection: ConnectionInfo) -> String {
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
