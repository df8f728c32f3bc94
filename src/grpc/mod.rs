//! Forwarding of remotesapi gRPC calls. Every call moves through the same
//! phases over one `CallContext`, each in its own module:
//!
//! | phase                      | module      | what happens                                                     |
//! |----------------------------|-------------|------------------------------------------------------------------|
//! | 0. accept                  | `admit`   | the RPC from `:path`, the one credential, the headers to forward |
//! | 1. read and route          | `read`    | the first message read, its database resolved to a route          |
//! | 2. admit                   | `admit`   | credential proven, grant checked, the user's call or stream slot |
//! | 3. choose a member         | `send`    | reads by the route's policy, writes to the primary               |
//! | 4. inspect                 | `send`    | uploads and registrations checked; a Commit's ref changes judged |
//! | 5. send                    | `send`    | one upstream stream on a connection with room                     |
//! | 6. relay                   | `relay`   | messages back, URLs rewritten, statuses translated               |
//! | 7. log                     | `proxy`   | one access line and the call's metrics, when its status is known |
//!
//! A unary call's one message is read before anything is sent, so a refusal
//! is a clean trailers-only answer. A stream's client may wait for response
//! headers before it sends the message that names the database, so a
//! stream answers headers at once and runs phases 1 to 5 as its body is read.

mod admit;
pub mod body;
mod read;
mod relay;
mod send;
pub mod status;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access::AccessRecord;
use crate::error::GatewayError;
use crate::gateway::{ConnectionInfo, Gateway};
use crate::limits::fairness;
use crate::plumbing::{full_body, remove_hop_by_hop, ObservedBody, ResponseBody};
use crate::remotesapi::Rpc;
use admit::Call;
use body::{CallFault, DeferredBody, Direction, MessageBody};
use relay::ResponseRelay;

/// One call as it moves through the phases: the gateway in effect when it
/// arrived, the connection it came on, the origin its table-file URLs must
/// lead back to, and its access record, filled in as the phases learn.
struct CallContext {
    gateway: Arc<Gateway>,
    connection: ConnectionInfo,
    origin: String,
    access: Arc<AccessRecord>,
}

/// Proxies one gRPC call; every failure becomes a gRPC status for the client.
pub async fn proxy(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    connection: &ConnectionInfo,
    origin: String,
) -> Response<ResponseBody> {
    let started = std::time::Instant::now();
    let path = request.uri().path().to_owned();
    let method = Rpc::from_path(&path).map(Rpc::name).unwrap_or("unknown");
    let mut record = crate::metrics::GrpcCallRecord::start(method);
    let access = Arc::new(AccessRecord::default());
    let context =
        CallContext { gateway: gateway.clone(), connection: connection.clone(), origin, access: access.clone() };
    let result = match admit::accept(gateway, request) {
        Ok(call) if call.rpc.is_streaming() => Ok(forward_stream(context, call)),
        Ok(call) => forward_unary(&context, call).await,
        Err(err) => Err(err),
    };
    let response = result.unwrap_or_else(|err| {
        tracing::info!(method = %path, code = ?err.grpc_code(), error = %err, "refused gRPC call");
        status::error_response(&err).map(full_body)
    });
    // Phase 7: the status is in the headers (trailers-only) or arrives in the trailers.
    let mut finish = move |code: tonic::Code| {
        record.finish(code, access.place());
        access.log_call(method, code, started);
    };
    if let Some((code, _)) = status::read_status(response.headers()) {
        finish(code);
        return response;
    }
    response.map(|body| {
        let on_end = Box::new(move |trailers: Option<&HeaderMap>, _bytes| {
            let code = trailers.and_then(status::read_status).map(|(code, _)| code);
            finish(code.unwrap_or(tonic::Code::Cancelled));
        });
        ObservedBody::new(body, on_end).boxed_unsync()
    })
}

/// A unary call, phases 1 to 6 in order.
async fn forward_unary(context: &CallContext, mut call: Call) -> Result<Response<ResponseBody>, GatewayError> {
    let gateway = &*context.gateway;
    let body = call.take_body()?;
    let routed = read::read_and_route(gateway, call.rpc, body).await?;
    let admitted = admit::admit(context, &mut call, &routed).await?;
    let slot = gateway.limits.call_slots.acquire(&admit::slot_holder(&admitted, &context.connection)).await?;
    let cluster = routed.destination.cluster.clone();
    let (index, response) = if call.rpc.is_write() {
        context.connection.affinity.pin_to_primary(&cluster.name);
        Box::pin(send::send_write(gateway, &cluster, &routed, &call, &admitted)).await?
    } else {
        send::send_unary_read(&cluster, &routed, &call, &context.connection.affinity).await?
    };
    let endpoint = &cluster.endpoints[index];
    routed.record_in(&context.access, endpoint);
    let (mut parts, upstream_body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    // The length no longer holds once messages are rewritten.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    // A trailers-only answer carries its status in the headers and has no body.
    if status::read_status(&parts.headers).is_some() {
        status::translate_upstream_status(&mut parts.headers, &routed.repo);
        return Ok(Response::from_parts(parts, relay::holding(upstream_body.map_err(Into::into).boxed_unsync(), slot)));
    }
    let relay = ResponseRelay::new(call.rpc, context.origin.clone(), routed, admitted.user, Arc::default());
    Ok(Response::from_parts(parts, relay::holding(relay.body(gateway, endpoint, upstream_body), slot)))
}

/// A stream: headers at once, then phases 1 to 6 as its body is read.
fn forward_stream(context: CallContext, call: Call) -> Response<ResponseBody> {
    let upstream_call = async move {
        let mut call = call;
        let gateway = &*context.gateway;
        let fault = Arc::new(CallFault::default());
        let body = call.take_body()?;
        let mut routed = read::read_and_route(gateway, call.rpc, body).await?;
        let admitted = admit::admit(&context, &mut call, &routed).await?;
        let slots = gateway.limits.stream_slots.acquire(&admit::slot_holder(&admitted, &context.connection)).await?;
        let cluster = routed.destination.cluster.clone();
        let index = cluster.read_candidates(routed.destination.read_policy, &context.connection.affinity)[0];
        let endpoint = &cluster.endpoints[index];
        routed.record_in(&context.access, endpoint);
        let (rest, decoder) = routed.take_rest()?;
        let inspect = read::inspect_stream_messages(
            call.rpc,
            routed.repo.path.clone(),
            routed.destination.upstream_repo_path.clone(),
        );
        let rest = fairness::IdleTimeout::new(rest, gateway.limits.stream_idle_timeout);
        let body =
            MessageBody::new(rest, gateway.limits.max_message_bytes, Some(inspect), Direction::Request, fault.clone())
                .after_first(routed.first.clone(), decoder)
                .boxed_unsync();
        let request = send::upstream_request(endpoint, &call, body)?;
        let sent = endpoint.upstream.send_grpc(request, false).await;
        // A refusal found in the client's stream aborts the upstream call; the
        // client hears that refusal (a permanent status), not the abort.
        if let (Err(_), Some(refusal)) = (&sent, fault.take()) {
            return Err(refusal);
        }
        let response = send::record_transport(&cluster, index, sent)?;
        let (parts, upstream_body) = response.into_parts();
        if let Some(mut trailers) = status::read_status(&parts.headers).map(|_| parts.headers) {
            // Trailers-only upstream answer: its status becomes our trailers.
            status::translate_upstream_status(&mut trailers, &routed.repo);
            return Ok(relay::trailers_only_body(trailers));
        }
        let relay = ResponseRelay::new(call.rpc, context.origin.clone(), routed, admitted.user, fault);
        Ok(relay::holding(relay.body(gateway, endpoint, upstream_body), slots))
    };
    let mut response = Response::new(DeferredBody::new(Box::pin(upstream_call)).boxed_unsync());
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}
