//! The client-facing entrypoint: accepts TCP connections, terminates TLS when
//! configured, and serves HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or h2
//! by ALPN) on the same port, handing every request to the [`Gateway`].
//! On shutdown it stops accepting and lets open requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, LimitsConfig};
use crate::gateway::{ConnectionInfo, SharedGateway};

/// Client-facing flow-control windows: as for the upstream side, big enough
/// that throughput is not bounded by round trips.
const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    gateway: SharedGateway,
}

impl Listener {
    pub async fn bind(config: &Config, gateway: SharedGateway) -> Result<Listener, crate::StartError> {
        let address = config.listener.address;
        let tcp = TcpListener::bind(address).await.map_err(|source| crate::StartError::Bind { address, source })?;
        let tls = match &config.listener.tls {
            Some(tls) => Some(TlsAcceptor::from(crate::tls::server_config(tls)?)),
            None => None,
        };
        Ok(Listener { tcp, tls, http: http_builder(&config.limits), gateway })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("bound listener has an address")
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then waits up to `drain` for open
    /// connections to finish their requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let graceful = GracefulShutdown::new();
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = this.tcp.accept() => match accepted {
                    Ok((stream, remote)) => this.clone().spawn_connection(stream, remote, &graceful),
                    Err(err) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        tracing::info!(deadline = ?drain, "shutting down: no new connections, draining open ones");
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("drain deadline passed with connections still open");
        }
    }

    fn spawn_connection(self: Arc<Self>, stream: TcpStream, remote: SocketAddr, graceful: &GracefulShutdown) {
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let open = crate::metrics::metrics().open_connections.clone();
            open.inc();
            let _open = scopeguard(move || open.dec());
            let tls = self.tls.is_some();
            let info = ConnectionInfo { remote, tls, affinity: Default::default() };
            let gateway = self.gateway.clone();
            let service = service_fn(move |request| gateway.load_full().handle(request, info.clone()));
            let result = match &self.tls {
                // Each kind of connection is boxed at its own size: inline, every
                // plain connection's task would be as large as a TLS one's.
                None => {
                    let conn = self.http.serve_connection(TokioIo::new(stream), service);
                    Box::pin(watcher.watch(conn.into_owned())).await
                }
                Some(acceptor) => {
                    let stream =
                        match Box::pin(tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => return tracing::debug!(%remote, error = %err, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
                        };
                    let conn = self.http.serve_connection(TokioIo::new(stream), service);
                    Box::pin(watcher.watch(conn.into_owned())).await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%remote, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Runs `f` when dropped, so a count is undone however the task ends.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
