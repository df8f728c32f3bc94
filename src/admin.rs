//! The admin listener, separate from client traffic: `/metrics` (Prometheus
//! text format), `/healthz` (the process is alive), `/readyz` (every
//! cluster has a reachable member, and a primary unless it is a sidecar that
//! refuses writes anyway; ready answers list what is degraded, such as an
//! edge cache whose directory cannot be used), and with `[login]` the registered keys: `GET
//! /keys` lists them, `POST /keys/<id>/revoke` revokes one. It has no
//! authentication of its own: keep it on a private address.

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
                    async move { Ok::<_, std::convert::Infallible>(answer(&gateway.load_full(), draining, &request).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}

async fn answer(gateway: &Gateway, draining: bool, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(key_path) = request.uri().path().strip_prefix("/keys") {
        return keys(gateway, request.method(), key_path).await;
    }
    match request.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics().render()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if draining => {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready: shutting down\n".into())
        }
        "/readyz" => match gateway.not_ready_reasons().as_slice() {
            [] => {
                let notes: String =
                    gateway.degraded_reasons().iter().map(|note| format!("degraded: {note}\n")).collect();
                text(StatusCode::OK, "text/plain", format!("ready\n{notes}"))
            }
            reasons => {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", reasons.join("; ")))
            }
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

async fn keys(gateway: &Gateway, method: &http::Method, path: &str) -> Response<Full<Bytes>> {
    let Some(login) = gateway.login() else {
        return text(StatusCode::NOT_FOUND, "text/plain", "no [login] configured\n".into());
    };
    let revoke = path.strip_prefix('/').and_then(|rest| rest.strip_suffix("/revoke"));
    let answer = match (method, path, revoke) {
        (&http::Method::GET, "" | "/", _) => login.store().list().await.map(|keys| serde_json::json!(keys)),
        (&http::Method::POST, _, Some(key_id)) => {
            login.revoke(key_id, "admin port").await.map(|revoked| serde_json::json!({ "revoked": revoked }))
        }
        _ => return text(StatusCode::NOT_FOUND, "text/plain", "try GET /keys or POST /keys/<id>/revoke\n".into()),
    };
    match answer {
        Ok(value) => text(StatusCode::OK, "application/json", value.to_string()),
        Err(err) => text(err.http_status(), "text/plain", format!("{err}\n")),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
