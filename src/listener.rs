//! The client-facing entrypoint: accepts TCP connections, terminates TLS when
//! configured, and serves HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or h2
//! by ALPN) on the same port, handing every request to [`crate::dispatch`].
//! On shutdown it stops accepting and lets open requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::{check_at_least_one, check_file, check_positive, invalid, Config, LimitsConfig};
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
    /// One permit per open connection (`limits.max_connections`).
    slots: Arc<tokio::sync::Semaphore>,
    protocol_deadline: Duration,
}

/// Bytes a client sends before its protocol is known: the HTTP/2 preface is
/// this long, and an HTTP/1.1 request line with its headers longer.
const PROTOCOL_BYTES: usize = 24;

/// The listener's part of the configuration: its TLS files load, and the
/// connection limits (`[limits]` keys about connections) hold.
pub fn check(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, crate::StartError> {
    let limits = &config.limits;
    check_positive("limits.protocol_deadline", limits.protocol_deadline)?;
    check_positive("limits.header_read_timeout", limits.header_read_timeout)?;
    check_at_least_one("limits.max_connections", limits.max_connections)?;
    check_at_least_one("limits.max_concurrent_streams", limits.max_concurrent_streams as usize)?;
    if limits.max_header_bytes < 8 * 1024 {
        return Err(invalid("limits.max_header_bytes", "must be at least 8192").into());
    }
    let Some(tls) = &config.listener.tls else { return Ok(None) };
    check_file("listener.tls.cert", &tls.cert)?;
    check_file("listener.tls.key", &tls.key)?;
    Ok(Some(crate::tls::server_config(tls)?))
}

impl Listener {
    pub async fn bind(config: &Config, gateway: SharedGateway) -> Result<Listener, crate::StartError> {
        let tls = check(config)?;
        let address = config.listener.address;
        let tcp = TcpListener::bind(address).await.map_err(|source| crate::StartError::Bind { address, source })?;
        let tls = tls.map(TlsAcceptor::from);
        Ok(Listener {
            tcp,
            tls,
            http: http_builder(&config.limits),
            gateway,
            slots: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            protocol_deadline: config.limits.protocol_deadline,
        })
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
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it at once; the client may retry.
            crate::metrics::metrics().connections_refused.with_label_values(&["max_connections"]).inc();
            return tracing::warn!(%remote, "connection refused: limits.max_connections reached");
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let stream = FirstBytes::new(stream, PROTOCOL_BYTES, self.protocol_deadline);
        tokio::spawn(async move {
            let open = crate::metrics::metrics().open_connections.clone();
            open.inc();
            let _open = scopeguard(move || open.dec());
            // Dropped before `_open`: once the gauge falls, the slot is free.
            let _slot = slot;
            let tls = self.tls.is_some();
            let info = ConnectionInfo { remote, tls, affinity: Default::default() };
            let gateway = self.gateway.clone();
            let service = service_fn(move |request| crate::dispatch::serve(gateway.load_full(), request, info.clone()));
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
                            // The deadline starts again for what the client says inside TLS.
                            Ok(Ok(stream)) => FirstBytes::new(stream, PROTOCOL_BYTES, self.protocol_deadline),
                            Ok(Err(err)) => return tracing::debug!(%remote, error = %err, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
                        };
                    let conn = self.http.serve_connection(TokioIo::new(stream), service);
                    Box::pin(watcher.watch(conn.into_owned())).await
                }
            };
            if let Err(err) = result {
                if is_protocol_deadline(&*err) {
                    crate::metrics::metrics().connections_refused.with_label_values(&["protocol_deadline"]).inc();
                    return tracing::info!(%remote, "connection closed: no protocol within limits.protocol_deadline");
                }
                tracing::debug!(%remote, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Whether a connection ended because [`FirstBytes`] ran out of time.
fn is_protocol_deadline(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|e| e.to_string() == PROTOCOL_DEADLINE_MESSAGE) {
            return true;
        }
        source = err.source();
    }
    false
}

const PROTOCOL_DEADLINE_MESSAGE: &str = "no protocol within limits.protocol_deadline";

/// A connection that must deliver its first `needed` bytes before a
/// deadline: until then every read races it, and losing fails the read
/// (hyper then closes the connection). After that it is the plain stream.
/// Silent clients, and ones that stop inside the HTTP/2 preface, are cut off;
/// the headers' own timeouts take over once the protocol is known.
pub struct FirstBytes<S> {
    inner: S,
    needed: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> FirstBytes<S> {
    pub fn new(inner: S, needed: usize, within: Duration) -> FirstBytes<S> {
        FirstBytes { inner, needed, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.needed == 0 {
            return polled;
        }
        if polled.is_ready() {
            self.needed = self.needed.saturating_sub(buf.filled().len() - before);
            return polled;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, PROTOCOL_DEADLINE_MESSAGE)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
