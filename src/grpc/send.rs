//! Phases 3 to 5, choose a member, inspect, send: a read goes to the members
//! its route's policy picks, tried in turn; a write goes to the primary
//! only, after what it asks of the store is checked (upload names,
//! registrations) and a Commit's ref changes are reviewed against the push
//! rules.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full};

use super::admit::{Admitted, Call};
use super::read::RoutedRequest;
use crate::cluster::{Cluster, Endpoint};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::remotesapi::frame;
use crate::remotesapi::wire;
use crate::remotesapi::Rpc;
use crate::upstream::{LeasedBody, UpstreamBody};

/// `call` as a request to `endpoint`, carrying `body`.
pub(super) fn upstream_request(
    endpoint: &Endpoint,
    call: &Call,
    body: UpstreamBody,
) -> Result<Request<UpstreamBody>, GatewayError> {
    let mut request = Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = endpoint.upstream.uri(call.uri.path())?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = call.headers.clone();
    Ok(request)
}

fn full_upstream_body(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Notes a failed connection so reads avoid the endpoint for a while.
pub(super) fn record_transport(
    cluster: &Cluster,
    index: usize,
    result: Result<Response<LeasedBody>, GatewayError>,
) -> Result<Response<LeasedBody>, GatewayError> {
    if let Err(err @ GatewayError::UpstreamUnreachable { .. }) = &result {
        cluster.record_unreachable(index, err);
    }
    result
}

/// A unary read, tried on each candidate until one answers: reads are
/// idempotent and nothing has reached the client before an answer arrives.
pub(super) async fn send_unary_read(
    cluster: &Cluster,
    routed: &RoutedRequest,
    call: &Call,
    affinity: &crate::cluster::ConnectionAffinity,
) -> Result<(usize, Response<LeasedBody>), GatewayError> {
    let mut last_error = None;
    for index in cluster.read_candidates(routed.destination.read_policy, affinity) {
        let request = upstream_request(&cluster.endpoints[index], call, full_upstream_body(routed.first.clone()))?;
        match record_transport(cluster, index, cluster.endpoints[index].upstream.send_grpc(request, true).await) {
            Ok(response) => return Ok((index, response)),
            Err(err) => {
                tracing::debug!(endpoint = %cluster.endpoints[index].name, error = %err, rpc = %routed.rpc, "read failed; trying the next member");
                last_error = Some(err);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| GatewayError::Internal(format!("cluster {} has no members", cluster.name))))
}

/// A write goes to the primary only. A Commit (the one RPC that moves refs)
/// first re-checks that the chosen member is still primary, waiting for the
/// next one if it is not; with `[auth]`, its ref changes are then reviewed
/// against the push rules before it is forwarded.
pub(super) async fn send_write(
    gateway: &Gateway,
    cluster: &Cluster,
    routed: &RoutedRequest,
    call: &Call,
    admitted: &Admitted,
) -> Result<(usize, Response<LeasedBody>), GatewayError> {
    let index = loop {
        let index = cluster.primary_for_write().await?;
        if routed.rpc != Rpc::Commit || cluster.confirm_primary(index).await {
            break index;
        }
        tracing::info!(cluster = %cluster.name, endpoint = %cluster.endpoints[index].name, "primary changed under a Commit; waiting for the new one");
    };
    check_write_request(gateway, routed, &cluster.endpoints[index], &call.headers).await?;
    if let (Rpc::Commit, Some(auth), Some(principal)) = (routed.rpc, &gateway.auth, &admitted.principal) {
        let authorization = call
            .headers
            .get(http::header::AUTHORIZATION)
            .cloned()
            .ok_or_else(|| GatewayError::Internal("an admitted call carries no credentials".into()))?;
        let mirrored = auth.branch_control.as_ref().map(|mirror| mirror.rows(&cluster.name));
        crate::push::review(crate::push::CommitUnderReview {
            judges: crate::push::Judges { rules: &auth.push_rules, branch_control: mirrored.as_deref(), principal },
            database: &routed.destination.judged_name,
            upstream_database: &routed.destination.database,
            endpoint: &cluster.endpoints[index],
            message: routed.first.slice(frame::HEADER_LEN..),
            authorization,
        })
        .await?;
    }
    let request = upstream_request(&cluster.endpoints[index], call, full_upstream_body(routed.first.clone()))?;
    let response = cluster.endpoints[index].upstream.send_grpc(request, true).await;
    Ok((index, record_transport(cluster, index, response)?))
}

/// What a write may ask of the store, whoever asks: upload locations only for
/// names Dolt could store, and registration (`AddTableFiles`, a Commit's
/// files) only of files that were verified on their way in or are already
/// in the store.
async fn check_write_request(
    gateway: &Gateway,
    routed: &RoutedRequest,
    endpoint: &Endpoint,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    use crate::remotesapi::proto::{AddTableFilesRequest, CommitRequest, GetUploadLocsRequest};
    use prost::Message;
    let message = routed.first.slice(frame::HEADER_LEN..);
    let unreadable = |_| GatewayError::BadMessage(wire::WireError::Malformed("cannot decode the request message"));
    let (repo_id, repo_path, files) = match routed.rpc {
        Rpc::GetUploadLocations => {
            let request = GetUploadLocsRequest::decode(message).map_err(unreadable)?;
            let limit = gateway.uploads.limit_for(&routed.destination.judged_name);
            return Ok(crate::uploads::check_upload_request(&request, &limit)?);
        }
        Rpc::AddTableFiles => {
            let request = AddTableFilesRequest::decode(message).map_err(unreadable)?;
            (request.repo_id, request.repo_path, request.chunk_table_info)
        }
        Rpc::Commit => {
            let request = CommitRequest::decode(message).map_err(unreadable)?;
            (request.repo_id, request.repo_path, request.chunk_table_info)
        }
        _ => return Ok(()),
    };
    let Some(authorization) = headers.get(http::header::AUTHORIZATION).cloned() else { return Ok(()) };
    let repo = crate::upstream::repo::UpstreamRepo { upstream: &endpoint.upstream, repo_id, repo_path, authorization };
    crate::uploads::check_registration(&repo, &files, gateway.peers_share_url_key).await
}
