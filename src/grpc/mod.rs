//! Forwarding of remotesapi gRPC calls.
//!
//! The phases of one call: resolve the RPC from `:path`, authenticate,
//! read the request (a unary call's single message up front; a stream's
//! messages one at a time as they pass), send it to the upstream, then relay
//! the response message by message, rewriting table-file URLs so they lead
//! back through doltgate, and translating statuses Dolt's client would
//! misread.

pub mod body;
pub mod fairness;
pub mod frame;
pub mod status;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::authn;
use crate::cluster::{Cluster, Endpoint};
use crate::config::auth::UpstreamCredentials;
use crate::error::GatewayError;
use crate::file_url;
use crate::gateway::{
    full_body, is_hop_by_hop, remove_hop_by_hop, ConnectionInfo, Gateway, ObservedBody, ResponseBody,
};
use crate::remotesapi::wire::{self, Edit, Label};
use crate::remotesapi::{read_repo_name, RepoName, Rpc};
use crate::route::Destination;
use crate::upstream::{LeasedBody, UpstreamBody};
use body::{CallFault, DeferredBody, Direction, MessageBody, OnMessage};
use frame::{FrameDecoder, Framed};

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
    let access = Arc::new(AccessContext::default());
    let result = match accept(gateway, request) {
        Ok(call) => {
            if call.rpc.is_streaming() {
                Ok(forward_stream(gateway.clone(), call, connection.clone(), origin, access.clone()))
            } else {
                forward_unary(gateway, call, connection, origin, &access).await
            }
        }
        Err(err) => Err(err),
    };
    let response = result.unwrap_or_else(|err| {
        tracing::info!(method = %path, code = ?err.grpc_code(), error = %err, "refused gRPC call");
        status::error_response(&err).map(full_body)
    });
    let mut finish = move |code: tonic::Code| {
        let place = access.place();
        record.finish(code, [&place[0], &place[1], &place[2]]);
        access.log(method, code, started);
    };
    // The status is in the headers (trailers-only) or arrives in the trailers.
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

/// What the access log line of a call says beyond method and status,
/// filled in as the call learns it.
#[derive(Default)]
struct AccessContext {
    user: std::sync::OnceLock<String>,
    database: std::sync::OnceLock<String>,
    route: std::sync::OnceLock<String>,
    cluster: std::sync::OnceLock<String>,
    endpoint: std::sync::OnceLock<String>,
}

impl AccessContext {
    fn routed(&self, routed: &RoutedRequest, endpoint: &Endpoint) {
        let _ = self.database.set(routed.destination.judged_name.clone());
        let _ = self.route.set(routed.destination.route_label.clone());
        let _ = self.cluster.set(routed.destination.cluster.clone());
        let _ = self.endpoint.set(endpoint.name.clone());
    }

    /// `[route, cluster, endpoint]`: bounded labels (configured names only).
    fn place(&self) -> [String; 3] {
        let field = |cell: &std::sync::OnceLock<String>| cell.get().cloned().unwrap_or_default();
        [field(&self.route), field(&self.cluster), field(&self.endpoint)]
    }

    fn log(&self, method: &str, code: tonic::Code, started: std::time::Instant) {
        let field = |cell: &std::sync::OnceLock<String>| cell.get().cloned().unwrap_or_default();
        tracing::info!(
            target: "doltgate::access",
            %method,
            code = %crate::metrics::code_name(code),
            user = %field(&self.user),
            database = %field(&self.database),
            endpoint = %field(&self.endpoint),
            duration_ms = started.elapsed().as_millis() as u64,
            "grpc call"
        );
    }
}

/// A call that passed the checks needing only its headers.
struct Call {
    rpc: Rpc,
    uri: http::Uri,
    /// The headers to send upstream, once [`admit`] adds the credentials.
    headers: HeaderMap,
    /// Taken when the call is routed.
    body: Option<Incoming>,
    credential: authn::ClientCredential,
}

fn accept(gateway: &Gateway, request: Request<Incoming>) -> Result<Call, GatewayError> {
    let rpc = Rpc::from_path(request.uri().path())
        .ok_or_else(|| GatewayError::UnknownMethod(request.uri().path().to_owned()))?;
    let token_header = gateway.auth.as_ref().and_then(|auth| auth.authenticator.token_header.as_ref());
    let credential = authn::read_credential(request.headers(), token_header)?;
    let (parts, body) = request.into_parts();
    let mut headers = upstream_request_headers(&parts.headers);
    if let Some(name) = token_header {
        headers.remove(name);
    }
    Ok(Call { rpc, uri: parts.uri, headers, body: Some(body), credential })
}

/// Who a routed call runs as, once admitted.
struct Admitted {
    user: String,
    /// `None` in transparent mode, where Dolt checks the credentials.
    principal: Option<authn::Principal>,
}

/// Proves who is calling and that they may make this call on the database
/// it names, then puts the credentials the upstream should see on the call.
async fn admit(
    gateway: &Gateway,
    call: &mut Call,
    routed: &RoutedRequest,
    origin: &str,
    access: &AccessContext,
    from: std::net::IpAddr,
) -> Result<Admitted, GatewayError> {
    let claimed = call.credential.user_for_logs();
    let Some(auth) = &gateway.auth else {
        let _ = access.user.set(claimed.clone());
        call.headers.insert(http::header::AUTHORIZATION, call.credential.authorization().clone());
        return Ok(Admitted { user: claimed, principal: None });
    };
    let cluster = gateway.cluster(&routed.destination.cluster);
    let host = origin.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_default();
    let audience = authn::Audience { cluster, host: &host, from };
    // Boxed, like the write path below: rarely needed state (SQL logins, JWKS
    // fetches) should not size every call's future.
    let proven = Box::pin(auth.authenticator.authenticate(&call.credential, &audience)).await;
    let _ = access.user.set(proven.as_ref().map(|p| authn::shown(&p.name)).unwrap_or(claimed));
    let principal = proven?;
    auth.grants.check(&principal, &routed.destination.judged_name, call.rpc.permission())?;
    let upstream_authorization = match auth.upstream_credentials {
        UpstreamCredentials::Service => {
            cluster.service_authorization.clone().expect("validated: service credentials need sql_user")
        }
        UpstreamCredentials::Passthrough => call.credential.authorization().clone(),
    };
    call.headers.insert(http::header::AUTHORIZATION, upstream_authorization);
    Ok(Admitted { user: principal.name.clone(), principal: Some(principal) })
}

/// A unary call: its one message is read (and routed) before anything is
/// sent, so a refusal is a clean trailers-only answer.
async fn forward_unary(
    gateway: &Gateway,
    mut call: Call,
    connection: &ConnectionInfo,
    origin: String,
    access: &AccessContext,
) -> Result<Response<ResponseBody>, GatewayError> {
    let body = call.body.take().expect("a call is routed once");
    let routed = read_and_route(gateway, call.rpc, body).await?;
    let admitted = admit(gateway, &mut call, &routed, &origin, access, connection.remote.ip()).await?;
    let slot = gateway.call_slots.acquire(&slot_holder(&admitted, connection)).await?;
    let cluster = gateway.cluster(&routed.destination.cluster);
    let (index, response) = if call.rpc.is_write() {
        connection.affinity.pin_to_primary(&cluster.name);
        Box::pin(send_write(gateway, cluster, &routed, &call, &admitted)).await?
    } else {
        send_unary_read(cluster, &routed, &call.uri, &call.headers, &connection.affinity).await?
    };
    access.routed(&routed, &cluster.endpoints[index]);
    let (mut parts, upstream_body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    // The length no longer holds once messages are rewritten.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    // A trailers-only answer carries its status in the headers and has no body.
    if status::read_status(&parts.headers).is_some() {
        status::translate_upstream_status(&mut parts.headers, &routed.repo);
        return Ok(Response::from_parts(parts, holding(upstream_body.map_err(Into::into).boxed_unsync(), slot)));
    }
    let relay = ResponseRelay::new(call.rpc, origin, routed, admitted.user, Arc::default());
    Ok(Response::from_parts(parts, holding(relay.body(gateway, &cluster.endpoints[index], upstream_body), slot)))
}

/// A stream: clients may wait for response headers before sending their
/// first message, and that message is what names the database, so the
/// headers go out at once and the upstream call happens as the body is read.
fn forward_stream(
    gateway: Arc<Gateway>,
    call: Call,
    connection: ConnectionInfo,
    origin: String,
    access: Arc<AccessContext>,
) -> Response<ResponseBody> {
    let upstream_call = async move {
        let mut call = call;
        let fault = Arc::new(CallFault::default());
        let body = call.body.take().expect("a call is routed once");
        let mut routed = read_and_route(&gateway, call.rpc, body).await?;
        let admitted = admit(&gateway, &mut call, &routed, &origin, &access, connection.remote.ip()).await?;
        let holder = slot_holder(&admitted, &connection);
        let slots = gateway.stream_slots.acquire(&holder).await?;
        let cluster = gateway.cluster(&routed.destination.cluster);
        let index = cluster.read_candidates(routed.destination.read_policy, &connection.affinity)[0];
        access.routed(&routed, &cluster.endpoints[index]);
        let (rest, decoder) = routed.rest.take().expect("streams keep the rest of their body");
        let inspect = inspect_stream_messages(&gateway, call.rpc, routed.repo.path.clone());
        let rest = fairness::IdleTimeout::new(rest, gateway.stream_idle_timeout);
        let body = MessageBody::new(rest, gateway.max_message_bytes, Some(inspect), Direction::Request, fault.clone())
            .after_first(routed.first.clone(), decoder)
            .boxed_unsync();
        let request = upstream_request(cluster, index, &call.uri, &call.headers, body)?;
        let sent = cluster.endpoints[index].upstream.send_grpc(request, false).await;
        // A refusal found in the client's stream aborts the upstream call; the
        // client hears that refusal (a permanent status), not the abort.
        if let (Err(_), Some(refusal)) = (&sent, fault.take()) {
            return Err(refusal);
        }
        let response = record_transport(cluster, index, sent)?;
        let (parts, upstream_body) = response.into_parts();
        if let Some(mut trailers) = status::read_status(&parts.headers).map(|_| parts.headers) {
            // Trailers-only upstream answer: its status becomes our trailers.
            status::translate_upstream_status(&mut trailers, &routed.repo);
            return Ok(trailers_only_body(trailers));
        }
        let relay = ResponseRelay::new(call.rpc, origin, routed, admitted.user, fault);
        let body = relay.body(&gateway, &cluster.endpoints[index], upstream_body);
        Ok(holding(body, slots))
    };
    let mut response = Response::new(DeferredBody::new(Box::pin(upstream_call)).boxed_unsync());
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// Whose per-user slots a call takes: the principal's, or without `[auth]`
/// (Dolt checks the credentials) the client address's.
fn slot_holder(admitted: &Admitted, connection: &ConnectionInfo) -> String {
    match &admitted.principal {
        Some(principal) => principal.name.clone(),
        None => connection.remote.ip().to_string(),
    }
}

/// `body`, holding `slots` until it has ended (or been dropped), however it ends.
pub(crate) fn holding<T: Send + 'static>(body: ResponseBody, slots: T) -> ResponseBody {
    ObservedBody::new(body, Box::new(move |_, _| drop(slots))).boxed_unsync()
}

fn trailers_only_body(trailers: HeaderMap) -> ResponseBody {
    let frame = Ok::<_, crate::BoxError>(http_body::Frame::trailers(trailers));
    http_body_util::StreamBody::new(futures_util::stream::once(async move { frame })).boxed_unsync()
}

/// Relays an upstream response body to the client: URLs rewritten to lead
/// through doltgate, statuses translated, a status guaranteed at the end.
struct ResponseRelay {
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
    fn new(rpc: Rpc, origin: String, routed: RoutedRequest, user: String, fault: Arc<CallFault>) -> ResponseRelay {
        ResponseRelay { rpc, origin, repo: routed.repo, database: routed.destination.judged_name, user, fault }
    }

    fn body(self, gateway: &Gateway, endpoint: &Endpoint, upstream_body: LeasedBody) -> ResponseBody {
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
        MessageBody::new(upstream_body, gateway.max_message_bytes, rewrite_urls, direction, self.fault).boxed_unsync()
    }
}

/// A call's request, read far enough to route it.
struct RoutedRequest {
    rpc: Rpc,
    destination: Destination,
    /// The client's name for the repository, for error messages.
    repo: RepoName,
    /// The first (for unary calls, the only) message, framed and rewritten for the upstream.
    first: Bytes,
    /// For streams: the rest of the client's body and what was read past the first message.
    rest: Option<(Incoming, FrameDecoder)>,
}

/// Reads the first request message, finds its route, and rewrites the
/// repository name for the upstream.
async fn read_and_route(gateway: &Gateway, rpc: Rpc, mut body: Incoming) -> Result<RoutedRequest, GatewayError> {
    let mut decoder = FrameDecoder::new(gateway.max_message_bytes);
    let read = async {
        if rpc.is_streaming() {
            read_next_message(&mut body, &mut decoder).await?.ok_or(GatewayError::NoDatabase)
        } else {
            read_unary_request(rpc, &mut body, &mut decoder).await
        }
    };
    let after = gateway.request_read_timeout;
    let first = tokio::time::timeout(after, read).await.map_err(|_| GatewayError::RequestReadTimeout { after })??;
    let repo = repo_of(rpc, &first.message())?;
    let destination = gateway.router.resolve(&repo.path)?;
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
fn rename_repo(rpc: Rpc, message: Bytes, upstream_path: &str) -> Result<Bytes, GatewayError> {
    let renamed = wire::rewrite::<GatewayError>(&message, rpc.request_schema(), &mut |label, _| {
        Ok(match label {
            Label::RepoPath => Edit::Replace(Bytes::copy_from_slice(upstream_path.as_bytes())),
            Label::RepoId => Edit::Remove,
            Label::Url => Edit::Keep,
        })
    })?;
    Ok(renamed.unwrap_or(message))
}

fn upstream_request(
    cluster: &Cluster,
    index: usize,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: UpstreamBody,
) -> Result<Request<UpstreamBody>, GatewayError> {
    let mut request = Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = cluster.endpoints[index].upstream.uri(uri.path())?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers.clone();
    Ok(request)
}

fn full_upstream_body(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Notes a failed connection so reads avoid the endpoint for a while.
fn record_transport(
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
async fn send_unary_read(
    cluster: &Cluster,
    routed: &RoutedRequest,
    uri: &http::Uri,
    headers: &HeaderMap,
    affinity: &crate::cluster::ConnectionAffinity,
) -> Result<(usize, Response<LeasedBody>), GatewayError> {
    let mut last_error = None;
    for index in cluster.read_candidates(routed.destination.read_policy, affinity) {
        let request = upstream_request(cluster, index, uri, headers, full_upstream_body(routed.first.clone()))?;
        match record_transport(cluster, index, cluster.endpoints[index].upstream.send_grpc(request, true).await) {
            Ok(response) => return Ok((index, response)),
            Err(err) => {
                tracing::debug!(endpoint = %cluster.endpoints[index].name, error = %err, rpc = %routed.rpc, "read failed; trying the next member");
                last_error = Some(err);
            }
        }
    }
    Err(last_error.expect("a cluster has at least one endpoint"))
}

/// A write goes to the primary only. A Commit (the one RPC that moves refs)
/// first re-checks that the chosen member is still primary, waiting for the
/// next one if it is not; with `[auth]`, its ref changes are then reviewed
/// against the push rules before it is forwarded.
async fn send_write(
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
        let authorization =
            call.headers.get(http::header::AUTHORIZATION).cloned().expect("admitted calls carry credentials");
        let mirrored = auth.mirrors_branch_control.then(|| cluster.branch_control.load_full());
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
    let request = upstream_request(cluster, index, &call.uri, &call.headers, full_upstream_body(routed.first.clone()))?;
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
            return Ok(crate::uploads::check_upload_request(
                &GetUploadLocsRequest::decode(message).map_err(unreadable)?,
            )?)
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
    let repo = crate::push::upstream_chunks::UpstreamRepo { endpoint, repo_id, repo_path, authorization };
    crate::uploads::check_registration(&repo, &files, gateway.peers_share_url_key).await
}

fn repo_of(rpc: Rpc, message: &[u8]) -> Result<RepoName, GatewayError> {
    let repo = read_repo_name(rpc, message)?;
    if repo.is_empty() {
        return Err(GatewayError::NoDatabase);
    }
    Ok(repo)
}

/// Reads the next complete message of a body, or `None` at its end.
async fn read_next_message(body: &mut Incoming, decoder: &mut FrameDecoder) -> Result<Option<Framed>, GatewayError> {
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
async fn read_unary_request(rpc: Rpc, body: &mut Incoming, decoder: &mut FrameDecoder) -> Result<Framed, GatewayError> {
    let message = read_next_message(body, decoder).await?.ok_or(GatewayError::TruncatedMessage)?;
    if read_next_message(body, decoder).await?.is_some() {
        return Err(GatewayError::TooManyMessages(rpc.name().to_owned()));
    }
    Ok(message)
}

/// Checks each later message of a client stream as it passes: it must name
/// the same repository as the first (the call is already routed), and gets
/// the same upstream name.
fn inspect_stream_messages(gateway: &Gateway, rpc: Rpc, first_path: String) -> OnMessage {
    let destination = gateway.router.resolve(&first_path).ok();
    let upstream_path = destination.and_then(|d| d.upstream_repo_path);
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

/// What the table-file URLs of one response grant, and who signs them.
struct UrlGrant {
    signer: Arc<file_url::UrlSigner>,
    endpoint: String,
    database: String,
    user: String,
    write: bool,
    origin: String,
}

/// Rewrites every table-file URL of a response message to lead through doltgate.
fn rewrite_response_urls(schema: wire::Schema, grant: UrlGrant) -> OnMessage {
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
