//! Forwarding of table-file HTTP requests (GET with or without `Range`,
//! PUT/POST uploads) to the upstream endpoint whose sealed URL they carry.
//!
//! Bodies stream in both directions, so a multi-gigabyte upload or download
//! passes through holding only hyper's buffers; uploads also pass through
//! [`uploads`], which holds back their end until the file checks out. Only the headers the upstream
//! needs are forwarded: a credential helper may add its own headers to these
//! requests, and they must not leak upstream.

use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;

use crate::access::{AccessRecord, FileRequest};
use crate::cache;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::plumbing::{full_body, remove_hop_by_hop, ObservedBody, ResponseBody};
use crate::uploads::{self, UploadName, UploadRefused};

/// Request headers a table-file request may carry upstream.
const FORWARDED_REQUEST_HEADERS: [&str; 9] = [
    "range",
    "if-range",
    "content-length",
    "content-type",
    "content-md5",
    "content-encoding",
    "accept",
    "accept-encoding",
    "user-agent",
];

pub async fn proxy(gateway: &Gateway, request: Request<Incoming>) -> Response<ResponseBody> {
    let range = request.headers().get(http::header::RANGE).and_then(|r| r.to_str().ok()).map(str::to_owned);
    let seen = FileRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        range,
        started: std::time::Instant::now(),
    };
    let access = AccessRecord::default();
    let result = forward(gateway, request, &access).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(err) => err.http_status(),
    };
    let error = result.as_ref().err().map(ToString::to_string);
    access.log_file(&seen, status, error.as_deref());
    crate::metrics::metrics().file_requests.with_label_values(&[method_label(&seen.method), status.as_str()]).inc();
    result.unwrap_or_else(|err| err.to_http_response().map(full_body))
}

/// Methods outside the bounded set share one label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        _ => "OTHER",
    }
}

async fn forward(
    gateway: &Gateway,
    request: Request<Incoming>,
    access: &AccessRecord,
) -> Result<Response<ResponseBody>, GatewayError> {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let has_body = match *request.method() {
        Method::GET | Method::HEAD => false,
        Method::PUT | Method::POST => true,
        ref other => return Err(GatewayError::FileMethodNotAllowed(other.to_string())),
    };
    let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let target = gateway.url_signer.open(path_and_query, has_body)?;
    // URLs are bearer capabilities: the user is the one they were issued to.
    access.user(crate::authn::shown(&target.capability.principal));
    access.database(crate::authn::shown(&target.capability.database));
    // The URL's user may have so many transfers at once; past that this one waits, then 429.
    let slot = gateway.limits.transfer_slots.acquire(&target.capability.principal).await?;
    let endpoint_name = &target.capability.endpoint;
    let (cluster, index) = gateway
        .endpoint(endpoint_name)
        .ok_or_else(|| GatewayError::NotAFileUrl(format!("unknown upstream endpoint {endpoint_name:?}")))?;
    let endpoint = &cluster.endpoints[*index];
    // Uploads are writes: only while their endpoint is still the primary.
    if has_body && cluster.current_primary() != Some(*index) {
        return Err(GatewayError::NotPrimaryAnymore { endpoint: endpoint.name.clone() });
    }
    let upstream = &endpoint.upstream;
    let uri = upstream.uri(target.upstream_path_and_query)?;
    // An upload must name a file Dolt could store, and its bytes must be what the name says.
    let upload = match has_body {
        true => Some((
            UploadName::from_upload_path(target.upstream_path_and_query)?,
            uploads::claimed_chunk_count(target.upstream_path_and_query),
            gateway.uploads.limit_for(&target.capability.database),
        )),
        false => None,
    };

    // A GET of a file the edge cache may hold is answered from it when it can be.
    let mut cached = None;
    if method == Method::GET {
        if let Some((cache, key)) =
            gateway.cache.as_ref().and_then(|c| Some((c, c.key(&cluster.name, target.upstream_path_and_query)?)))
        {
            let source = cache::Source {
                endpoint: cluster.endpoints[*index].clone(),
                path_and_query: target.upstream_path_and_query.to_owned(),
            };
            match cache.answer(&key, request.headers().get(http::header::RANGE), &source).await {
                cache::Answer::Served(response) => return Ok(deliver(response, slot, started, &method, false)),
                cache::Answer::PassThrough => cached = Some((cache, key, source)),
            }
        }
    }
    let (parts, client_body) = request.into_parts();
    let mut verdict = None;
    let body = if let Some((name, claimed_chunks, limit)) = upload {
        let guarded = uploads::guard(client_body, name, claimed_chunks, &gateway.uploads, limit)?;
        verdict = Some(guarded.verdict);
        let count_upload = Box::new(|_: Option<&http::HeaderMap>, bytes| {
            crate::metrics::metrics().file_bytes.with_label_values(&["upload"]).inc_by(bytes);
        });
        ObservedBody::new(guarded.body, count_upload).boxed_unsync()
    } else {
        Empty::new().map_err(|never| match never {}).boxed_unsync()
    };
    let ranged = parts.headers.contains_key(http::header::RANGE);
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.version_mut() = Version::HTTP_11;
    *upstream_request.headers_mut() = forwarded_request_headers(&parts.headers);

    let response = upstream.send_file(upstream_request).await;
    if let Some(verdict) = verdict {
        settle_upload(verdict, &response, &endpoint.name).await?;
    }
    let response = response?;
    if let Some((cache, key, source)) = cached.filter(|_| ranged && response.status().is_success()) {
        cache.passed_through(key, response.headers(), &source);
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let response = Response::from_parts(parts, body.map_err(Into::into).boxed_unsync());
    let from_upstream = method == Method::GET;
    Ok(deliver(response, slot, started, &method, from_upstream))
}

/// The answer to a transfer, holding the user's transfer slot and counted
/// until its last byte has gone out. `from_upstream`: a download Dolt sends
/// (the cache's answers count their own bytes).
fn deliver(
    response: Response<ResponseBody>,
    slot: tokio::sync::OwnedSemaphorePermit,
    started: std::time::Instant,
    method: &Method,
    from_upstream: bool,
) -> Response<ResponseBody> {
    let method = method_label(method);
    let count_download = Box::new(move |_: Option<&http::HeaderMap>, bytes| {
        drop(slot);
        let metrics = crate::metrics::metrics();
        metrics.file_bytes.with_label_values(&["download"]).inc_by(bytes);
        if from_upstream {
            metrics.upstream_file_bytes.inc_by(bytes);
        }
        metrics.file_duration.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
    });
    response.map(|body| ObservedBody::new(body, count_download).boxed_unsync())
}

/// An upload's verdict decides before the upstream's answer: a refused
/// file's upstream request fails by design, and the client should hear why.
/// A file Dolt accepted after it checked out is remembered for its registration.
async fn settle_upload(
    verdict: tokio::sync::oneshot::Receiver<Result<crate::storage::verify::Verified, UploadRefused>>,
    response: &Result<Response<Incoming>, GatewayError>,
    endpoint: &str,
) -> Result<(), GatewayError> {
    match verdict.await {
        Ok(Err(refused)) if !refused.is_transient() => Err(refused.into()),
        Ok(Ok(verified)) if response.as_ref().is_ok_and(|r| r.status().is_success()) => {
            tracing::debug!(file = %verified.name, chunks = verified.chunk_count, "upload verified");
            uploads::VerifiedUploads::get().record(endpoint, verified.name);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn forwarded_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(FORWARDED_REQUEST_HEADERS.len());
    for name in FORWARDED_REQUEST_HEADERS {
        for value in client.get_all(name) {
            headers.append(http::HeaderName::from_static(name), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_transfer_headers_go_upstream() {
        let mut client = HeaderMap::new();
        client.insert("range", HeaderValue::from_static("bytes=0-9"));
        client.insert("content-length", HeaderValue::from_static("10"));
        client.insert("authorization", HeaderValue::from_static("Bearer secret"));
        client.insert("x-proxy-token", HeaderValue::from_static("secret"));
        client.insert("cookie", HeaderValue::from_static("a=b"));
        let up = forwarded_request_headers(&client);
        assert_eq!(up.get("range").unwrap(), "bytes=0-9");
        assert_eq!(up.get("content-length").unwrap(), "10");
        assert_eq!(up.len(), 2);
    }
}
