//! The hyper service: every request on every connection enters here, is told
//! apart the way Dolt's own server does it (HTTP/2 with `content-type:
//! application/grpc*` is gRPC, everything else a table file) and is handed
//! to its proxy against the gateway in effect. A panic anywhere in handling
//! becomes an INTERNAL answer here, the one net under both proxies.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::GatewayError;
use crate::gateway::{ConnectionInfo, Gateway};
use crate::plumbing::{full_body, ObservedBody, ResponseBody};
use crate::{files, grpc};

/// Answers one request with the gateway in effect when it arrived.
pub async fn serve(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    connection: ConnectionInfo,
) -> Result<Response<ResponseBody>, Infallible> {
    let in_flight = crate::metrics::InFlight::start();
    // The proxies' futures are boxed: hyper moves this future into a new
    // task per request, and inline they made it ~5 KiB, copied on every
    // spawn and poll (memmove led the unary-load profile).
    let grpc = is_grpc(&request);
    let dispatched = async {
        let login = gateway.login();
        if !grpc {
            if let Some(login) = login.filter(|login| login.owns(request.uri().path())) {
                return Box::pin(login.serve(&gateway, request, &connection)).await;
            }
            return Box::pin(files::proxy(&gateway, request)).await;
        }
        if request.version() != Version::HTTP_2 {
            return GatewayError::GrpcNeedsHttp2(request.version()).to_http_response().map(full_body);
        }
        if let Some(login) = login.filter(|_| request.uri().path() == crate::login::WHO_AM_I_PATH) {
            return Box::pin(login.who_am_i(&gateway, request, &connection)).await;
        }
        let origin = client_origin(&gateway, &request, &connection);
        Box::pin(grpc::proxy(&gateway, request, &connection, origin)).await
    };
    let response = answer_even_if_it_panics(grpc, dispatched).await;
    // In flight until the last byte of the answer has gone out.
    Ok(response.map(|body| ObservedBody::new(body, Box::new(move |_, _| drop(in_flight))).boxed_unsync()))
}

/// `scheme://authority` under which this client reaches doltgate, for the
/// table-file URLs handed back to it.
fn client_origin<B>(gateway: &Gateway, request: &Request<B>, connection: &ConnectionInfo) -> String {
    if let Some(url) = gateway.public_url() {
        return url.to_owned();
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

fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Runs a request's handling; a panic in it becomes an INTERNAL answer (500
/// for table files), counted and logged, instead of a connection torn down
/// with no status. Nothing a client sends should panic; this is the net.
pub async fn answer_even_if_it_panics(
    grpc: bool,
    handling: impl Future<Output = Response<ResponseBody>>,
) -> Response<ResponseBody> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => internal_answer(grpc, &panic),
    }
}

/// The answer to a request whose handling panicked.
pub fn internal_answer(grpc: bool, panic: &(dyn std::any::Any + Send)) -> Response<ResponseBody> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    crate::metrics::metrics().panics.with_label_values(&[if grpc { "grpc" } else { "file" }]).inc();
    tracing::error!(panic = %what, "request handling panicked; answered INTERNAL");
    let err = GatewayError::Internal("the request could not be handled (an internal error, logged)".into());
    match grpc {
        true => grpc::status::error_response(&err).map(full_body),
        false => err.to_http_response().map(full_body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn panics() -> &'static prometheus::IntCounterVec {
        &crate::metrics::metrics().panics
    }

    #[tokio::test]
    async fn a_panic_in_handling_is_an_internal_answer_counted_and_logged() {
        let before = panics().with_label_values(&["grpc"]).get();
        let response = answer_even_if_it_panics(true, async { panic!("a bug reached by input") }).await;
        assert_eq!(response.status(), StatusCode::OK, "gRPC answers in its trailers-only status");
        assert_eq!(response.headers()["grpc-status"], "13", "INTERNAL");
        assert_eq!(panics().with_label_values(&["grpc"]).get(), before + 1);

        let before = panics().with_label_values(&["file"]).get();
        let response = answer_even_if_it_panics(false, async { panic!("another") }).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panics().with_label_values(&["file"]).get(), before + 1);

        let fine = answer_even_if_it_panics(false, async { Response::new(full_body(Bytes::from_static(b"ok"))) }).await;
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
