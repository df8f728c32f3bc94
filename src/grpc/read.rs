//! Phase 1, read and route: a call's first request message (a unary call's
//! only one) is read, the database it names resolved to a route, and the
//! repository renamed for the upstream; a stream's later messages are held
//! to the same database as they pass.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::OnMessage;
use crate::access::AccessRecord;
use crate::cluster::{Cluster, Endpoint};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::remotesapi::frame::{FrameDecoder, Framed};
use crate::remotesapi::wire::{self, Edit, Label};
use crate::remotesapi::{read_repo_name, RepoName, Rpc};
use crate::route::Destination;

/// A call's request, read far enough to route it.
pub(super) struct RoutedRequest {
    pub(super) rpc: Rpc,
    pub(super) destination: Destination<Arc<Cluster>>,
    /// The client's name for the repository, for error messages.
    pub(super) repo: RepoName,
    /// The first (for unary calls, the only) message, framed and rewritten for the upstream.
    pub(super) first: Bytes,
    /// For streams: the rest of the client's body and what was read past the first message.
    rest: Option<(Incoming, FrameDecoder)>,
}

impl RoutedRequest {
    /// A stream's body after its first message, and what was read past it.
    pub(super) fn take_rest(&mut self) -> Result<(Incoming, FrameDecoder), GatewayError> {
        self.rest.take().ok_or_else(|| GatewayError::Internal("a stream's body was taken twice".into()))
    }

    /// Notes in the access record where the call went.
    pub(super) fn record_in(&self, access: &AccessRecord, endpoint: &Endpoint) {
        access.database(self.destination.judged_name.clone());
        access.served_by(&self.destination.route_label, &self.destination.cluster.name, &endpoint.name);
    }
}

/// Reads the first request message, finds its route, and rewrites the
/// repository name for the upstream.
pub(super) async fn read_and_route(
    gateway: &Gateway,
    rpc: Rpc,
    mut body: Incoming,
) -> Result<RoutedRequest, GatewayError> {
    let mut decoder = FrameDecoder::new(gateway.limits.max_message_bytes);
    let read = async {
        if rpc.is_streaming() {
            read_next_message(&mut body, &mut decoder).await?.ok_or(GatewayError::NoDatabase)
        } else {
            read_unary_request(rpc, &mut body, &mut decoder).await
        }
    };
    let after = gateway.limits.request_read_timeout;
    let first = tokio::time::timeout(after, read).await.map_err(|_| GatewayError::RequestReadTimeout { after })??;
    let repo = repo_of(rpc, &first.message())?;
    let destination = gateway.router.resolve(&repo.path)?;
    // The login key store is doltgate's own: no route serves it, whatever it matches.
    if gateway.login().is_some_and(|login| login.hides(&destination.cluster.name, &destination.database)) {
        return Err(GatewayError::NoRoute { repo_path: crate::authn::shown(&repo.path) });
    }
    // A write through another spelling would change the same store while
    // the client believes it named something else: only the exact name writes.
    if rpc.is_write() && !destination.spelled_canonically {
        return Err(GatewayError::WriteNeedsCanonicalDatabase {
            typed: crate::authn::shown(&repo.path),
            database: destination.judged_name,
        });
    }
    let first = match &destination.upstream_repo_path {
        Some(path) => Framed::encode(&rename_repo(rpc, first.message(), path)?).into_bytes(),
        None => first.into_bytes(),
    };
    let rest = rpc.is_streaming().then_some((body, decoder));
    Ok(RoutedRequest { rpc, destination, repo, first, rest })
}

/// Sets `repo_path` to the upstream's name and drops `repo_id`, which would
/// otherwise name the client's prefixed path.
pub(super) fn rename_repo(rpc: Rpc, message: Bytes, upstream_path: &str) -> Result<Bytes, GatewayError> {
    let renamed = wire::rewrite::<GatewayError>(&message, rpc.request_schema(), &mut |label, _| {
        Ok(match label {
            Label::RepoPath => Edit::Replace(Bytes::copy_from_slice(upstream_path.as_bytes())),
            Label::RepoId => Edit::Remove,
            Label::Url => Edit::Keep,
        })
    })?;
    Ok(renamed.unwrap_or(message))
}

pub(super) fn repo_of(rpc: Rpc, message: &[u8]) -> Result<RepoName, GatewayError> {
    let repo = read_repo_name(rpc, message)?;
    if repo.is_empty() {
        return Err(GatewayError::NoDatabase);
    }
    Ok(repo)
}

/// Reads the next complete message of a body, or `None` at its end.
pub(super) async fn read_next_message(
    body: &mut Incoming,
    decoder: &mut FrameDecoder,
) -> Result<Option<Framed>, GatewayError> {
    loop {
        if let Some(message) = decoder.next_message()? {
            return Ok(Some(message));
        }
        let Some(frame) = body.frame().await else {
            return if decoder.is_empty() { Ok(None) } else { Err(GatewayError::TruncatedMessage) };
        };
        let frame = frame.map_err(|e| GatewayError::ClientBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            decoder.push(data);
        }
    }
}

/// Reads a unary call's one request message (bounded by the decoder's limit).
pub(super) async fn read_unary_request(
    rpc: Rpc,
    body: &mut Incoming,
    decoder: &mut FrameDecoder,
) -> Result<Framed, GatewayError> {
    let message = read_next_message(body, decoder).await?.ok_or(GatewayError::TruncatedMessage)?;
    if read_next_message(body, decoder).await?.is_some() {
        return Err(GatewayError::TooManyMessages(rpc.name().to_owned()));
    }
    Ok(message)
}

/// Checks each later message of a client stream as it passes: it must name
/// the same repository as the first (the call is already routed), and gets
/// the same upstream name.
pub(super) fn inspect_stream_messages(rpc: Rpc, first_path: String, upstream_path: Option<String>) -> OnMessage {
    Box::new(move |message: Bytes| {
        let repo = repo_of(rpc, &message)?;
        if repo.path != first_path {
            return Err(GatewayError::StreamSwitchedDatabase { first: first_path.clone(), now: repo.path });
        }
        match &upstream_path {
            Some(path) => Ok(Some(rename_repo(rpc, message, path)?)),
            None => Ok(None),
        }
    })
}
