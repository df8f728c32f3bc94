//! Forwarding of remotesapi gRPC calls.
//!
//! The phases of one call: resolve the RPC from `:path`, authenticate,
//! read the request (a unary call's single message up front; a stream's
//! messages one at a time as they pass), send it to the upstream, then relay
//! the response message by message, rewriting table-file URLs so they lead
//! back through doltgate, and translating statuses Dolt's client would
//! misread.

pub mod body;
pub mod frame;
pub mod status;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::authn;
use crate::error::GatewayError;
use crate::file_url;
use crate::gateway::{full_body, is_hop_by_hop, remove_hop_by_hop, Gateway, ResponseBody};
use crate::remotesapi::wire::{self, Edit, Label};
use crate::remotesapi::{read_repo_name, RepoName, Rpc};
use body::{CallFault, Direction, MessageBody, OnMessage};
use frame::{FrameDecoder, Framed};

/// Proxies one gRPC call; every failure becomes a gRPC status for the client.
pub async fn proxy(gateway: &Gateway, request: Request<Incoming>, origin: String) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    match forward(gateway, request, origin).await {
        Ok(response) => response,
        Err(err) => {
            tracing::info!(method = %path, code = ?err.grpc_code(), error = %err, "refused gRPC call");
            status::error_response(&err).map(full_body)
        }
    }
}

async fn forward(
    gateway: &Gateway,
    request: Request<Incoming>,
    origin: String,
) -> Result<Response<ResponseBody>, GatewayError> {
    let rpc = Rpc::from_path(request.uri().path())
        .ok_or_else(|| GatewayError::UnknownMethod(request.uri().path().to_owned()))?;
    let credentials = authn::authenticate(request.headers())?;
    let (parts, client_body) = request.into_parts();

    let mut headers = upstream_request_headers(&parts.headers);
    headers.insert(http::header::AUTHORIZATION, credentials.authorization().clone());

    let fault = Arc::new(CallFault::default());
    let repo = Arc::new(Mutex::new(RepoName::default()));
    let body = if rpc.is_streaming() {
        let inspect = inspect_stream_messages(rpc, repo.clone());
        let stream =
            MessageBody::new(client_body, gateway.max_message_bytes, Some(inspect), Direction::Request, fault.clone());
        stream.boxed_unsync()
    } else {
        let message = read_unary_request(rpc, client_body, gateway.max_message_bytes).await?;
        *lock(&repo) = repo_of(rpc, &message.message())?;
        Full::new(message.into_bytes()).map_err(|never| match never {}).boxed_unsync()
    };

    let upstream = &gateway.upstream;
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = http::Method::POST;
    *upstream_request.uri_mut() = upstream.uri(parts.uri.path())?;
    *upstream_request.version_mut() = Version::HTTP_2;
    *upstream_request.headers_mut() = headers;

    let response = upstream.send_grpc(upstream_request, !rpc.is_streaming()).await?;
    let (mut parts, upstream_body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    // The length no longer holds once messages are rewritten.
    parts.headers.remove(http::header::CONTENT_LENGTH);

    // A trailers-only answer carries its status in the headers and has no body.
    if status::read_status(&parts.headers).is_some() {
        status::translate_upstream_status(&mut parts.headers, &lock(&repo));
        return Ok(Response::from_parts(parts, upstream_body.map_err(Into::into).boxed_unsync()));
    }
    let rewrite_urls =
        rpc.response_url_schema().map(|schema| rewrite_response_urls(schema, upstream.name().to_owned(), origin));
    let on_trailers =
        Box::new(move |trailers: &mut HeaderMap| status::translate_upstream_status(trailers, &lock(&repo)));
    let direction = Direction::Response { on_trailers: Some(on_trailers), upstream: upstream.address().to_owned() };
    let body = MessageBody::new(upstream_body, gateway.max_message_bytes, rewrite_urls, direction, fault);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn repo_of(rpc: Rpc, message: &[u8]) -> Result<RepoName, GatewayError> {
    let repo = read_repo_name(rpc, message)?;
    if repo.is_empty() {
        return Err(GatewayError::NoDatabase);
    }
    Ok(repo)
}

/// Reads a unary call's one request message (bounded by `max_message`).
async fn read_unary_request(rpc: Rpc, mut body: Incoming, max_message: usize) -> Result<Framed, GatewayError> {
    let mut decoder = FrameDecoder::new(max_message);
    let mut message = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| GatewayError::ClientBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        decoder.push(data);
        while let Some(next) = decoder.next_message()? {
            if message.replace(next).is_some() {
                return Err(GatewayError::TooManyMessages(rpc.name().to_owned()));
            }
        }
    }
    if !decoder.is_empty() {
        return Err(GatewayError::TruncatedMessage);
    }
    message.ok_or(GatewayError::TruncatedMessage)
}

/// Checks each message of a client stream as it passes: every message must
/// name a database, and the last one named is what errors refer to.
fn inspect_stream_messages(rpc: Rpc, repo: Arc<Mutex<RepoName>>) -> OnMessage {
    Box::new(move |message: Bytes| {
        let name = repo_of(rpc, &message)?;
        let mut current = lock(&repo);
        if *current != name {
            *current = name;
        }
        Ok(None)
    })
}

/// Rewrites every table-file URL of a response message to lead through doltgate.
fn rewrite_response_urls(schema: wire::Schema, endpoint: String, origin: String) -> OnMessage {
    Box::new(move |message: Bytes| {
        wire::rewrite::<GatewayError>(&message, schema, &mut |label, value| {
            if label != Label::Url {
                return Ok(Edit::Keep);
            }
            let url = std::str::from_utf8(value)
                .map_err(|_| GatewayError::BadMessage(wire::WireError::Malformed("table-file URL is not UTF-8")))?;
            Ok(Edit::Replace(Bytes::from(file_url::to_client_url(url, &endpoint, &origin)?)))
        })
    })
}

/// The client's headers as the upstream should see them: no hop-by-hop
/// headers, no credentials (the caller sets exactly one), no compression
/// offer (doltgate reads messages, so they must stay uncompressed), and no
/// `x-forwarded-proto` (it would change the scheme of the URLs the upstream
/// builds, which doltgate replaces anyway).
fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client.len() + 2);
    for (name, value) in client {
        let drop = is_hop_by_hop(name)
            || matches!(
                name.as_str(),
                "authorization" | "content-length" | "grpc-accept-encoding" | "x-forwarded-proto"
            );
        if !drop {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_headers_drop_credentials_and_hop_by_hop() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Basic x"));
        client.insert("connection", HeaderValue::from_static("close"));
        client.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        client.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        client.insert("content-type", HeaderValue::from_static("application/grpc"));
        client.insert("grpc-timeout", HeaderValue::from_static("10S"));
        let up = upstream_request_headers(&client);
        assert_eq!(up.get("content-type").unwrap(), "application/grpc");
        assert_eq!(up.get("grpc-timeout").unwrap(), "10S");
        assert_eq!(up.get("te").unwrap(), "trailers");
        for gone in ["authorization", "connection", "grpc-accept-encoding", "x-forwarded-proto"] {
            assert!(up.get(gone).is_none(), "{gone}");
        }
    }
}
