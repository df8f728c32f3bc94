//! Phase 6, relay: an upstream answer goes back message by message, its
//! table-file URLs rewritten to lead through doltgate (signed for this user
//! and database), its statuses translated where Dolt's client would misread
//! them, and a status guaranteed at the end.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

use super::body::{CallFault, Direction, MessageBody, OnMessage};
use super::read::RoutedRequest;
use super::status;
use crate::cluster::Endpoint;
use crate::error::GatewayError;
use crate::file_url;
use crate::gateway::Gateway;
use crate::plumbing::{ObservedBody, ResponseBody};
use crate::remotesapi::wire::{self, Edit, Label};
use crate::remotesapi::{RepoName, Rpc};
use crate::upstream::LeasedBody;

/// `body`, holding `slots` until it has ended (or been dropped), however it ends.
pub(crate) fn holding<T: Send + 'static>(body: ResponseBody, slots: T) -> ResponseBody {
    ObservedBody::new(body, Box::new(move |_, _| drop(slots))).boxed_unsync()
}

pub(super) fn trailers_only_body(trailers: HeaderMap) -> ResponseBody {
    let frame = Ok::<_, crate::BoxError>(http_body::Frame::trailers(trailers));
    http_body_util::StreamBody::new(futures_util::stream::once(async move { frame })).boxed_unsync()
}

/// Relays an upstream response body to the client: URLs rewritten to lead
/// through doltgate, statuses translated, a status guaranteed at the end.
pub(super) struct ResponseRelay {
    rpc: Rpc,
    origin: String,
    repo: RepoName,
    /// The database the upstream acts on, bound into handed-out URLs.
    database: String,
    /// Who the handed-out table-file URLs are for.
    user: String,
    fault: Arc<CallFault>,
}

impl ResponseRelay {
    pub(super) fn new(
        rpc: Rpc,
        origin: String,
        routed: RoutedRequest,
        user: String,
        fault: Arc<CallFault>,
    ) -> ResponseRelay {
        ResponseRelay { rpc, origin, repo: routed.repo, database: routed.destination.judged_name, user, fault }
    }

    pub(super) fn body(self, gateway: &Gateway, endpoint: &Endpoint, upstream_body: LeasedBody) -> ResponseBody {
        let grant = UrlGrant {
            signer: gateway.url_signer.clone(),
            endpoint: endpoint.name.clone(),
            database: self.database,
            user: self.user,
            write: self.rpc.is_write(),
            origin: self.origin,
        };
        let rewrite_urls = self.rpc.response_url_schema().map(|schema| rewrite_response_urls(schema, grant));
        let repo = self.repo;
        let on_trailers = Box::new(move |trailers: &mut HeaderMap| status::translate_upstream_status(trailers, &repo));
        let direction =
            Direction::Response { on_trailers: Some(on_trailers), upstream: endpoint.upstream.address().to_owned() };
        MessageBody::new(upstream_body, gateway.limits.max_message_bytes, rewrite_urls, direction, self.fault)
            .boxed_unsync()
    }
}

/// What the table-file URLs of one response grant, and who signs them.
pub(super) struct UrlGrant {
    signer: Arc<file_url::UrlSigner>,
    endpoint: String,
    database: String,
    user: String,
    write: bool,
    origin: String,
}

/// Rewrites every table-file URL of a response message to lead through doltgate.
pub(super) fn rewrite_response_urls(schema: wire::Schema, grant: UrlGrant) -> OnMessage {
    Box::new(move |message: Bytes| {
        let capability = file_url::CapabilityGrant {
            endpoint: &grant.endpoint,
            database: &grant.database,
            principal: &grant.user,
            write: grant.write,
        };
        wire::rewrite::<GatewayError>(&message, schema, &mut |label, value| {
            if label != Label::Url {
                return Ok(Edit::Keep);
            }
            let url = std::str::from_utf8(value)
                .map_err(|_| GatewayError::BadMessage(wire::WireError::Malformed("table-file URL is not UTF-8")))?;
            Ok(Edit::Replace(Bytes::from(grant.signer.to_client_url(url, &capability, &grant.origin)?)))
        })
    })
}
