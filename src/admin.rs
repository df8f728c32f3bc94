//! The admin listener, separate from client traffic: `/metrics` (Prometheus
//! text format), `/healthz` (the process is alive) and `/readyz` (every
//! cluster has a reachable member, and a primary unless it is a sidecar that
//! refuses writes anyway).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, SharedGateway};
use crate::metrics::metrics;

pub struct AdminListener {
    tcp: TcpListener,
    gateway: SharedGateway,
    draining: Arc<AtomicBool>,
}

impl AdminListener {
    pub async fn bind(
        address: SocketAddr,
        gateway: SharedGateway,
        draining: Arc<AtomicBool>,
    ) -> Result<AdminListener, crate::StartError> {
        let tcp = TcpListener::bind(address).await.map_err(|source| crate::StartError::Bind { address, source })?;
        Ok(AdminListener { tcp, gateway, draining })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("bound listener has an address")
    }

    pub async fn serve(self) {
        loop {
            let Ok((stream, _)) = self.tcp.accept().await else { continue };
            let gateway = self.gateway.clone();
            let draining = self.draining.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let (gateway, draining) = (gateway.clone(), draining.load(Ordering::SeqCst));
                    async move { Ok::<_, std::convert::Infallible>(answer(&gateway.load(), draining, &request)) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}

fn answer(gateway: &Gateway, draining: bool, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics().render()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if draining => {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready: shutting down\n".into())
        }
        "/readyz" => match gateway.not_ready_reasons().as_slice() {
            [] => text(StatusCode::OK, "text/plain", "ready\n".into()),
            reasons => {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", reasons.join("; ")))
            }
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
