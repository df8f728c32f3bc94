//! The HTTP/2 connections that carry gRPC calls to one endpoint: as many as
//! the calls in flight need, each carrying at most `max_streams_per_connection`
//! of them, with every call leasing its stream until its response body ends.
//!
//! Why not one shared connection: Dolt serves at most 250 concurrent streams
//! on a connection, and past that a call waits inside the connection for a
//! stream to end. Streams can live for minutes (a clone's chunk downloads), so
//! a few users' long streams would delay everyone's unary calls. Opening
//! another connection when each is full keeps a short call short.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use super::UpstreamBody;

/// HTTP/2 flow-control windows toward the upstream. Large enough that a
/// 128 MiB message or a burst of chunk locations is not throttled by
/// round trips on loopback or a data-center link.
const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const H2_MAX_FRAME: u32 = 1024 * 1024;
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call did not get an answer from the endpoint.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened.
    Connect(String),
    /// The call was sent (or its connection failed under it) without an answer.
    Failed(String),
}

pub struct GrpcConnections {
    endpoint: String,
    connect_uri: Uri,
    connector: HttpConnector,
    max_streams: usize,
    idle_timeout: Duration,
    open: Mutex<Vec<Arc<Connection>>>,
    /// One dial at a time: callers that find every connection full while
    /// another is being opened wait for it instead of opening their own.
    dialing: tokio::sync::Mutex<()>,
}

struct Connection {
    send: SendRequest<UpstreamBody>,
    in_flight: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
}

impl GrpcConnections {
    pub fn new(
        endpoint: &str,
        authority: &http::uri::Authority,
        connector: HttpConnector,
        max_streams: usize,
        idle_timeout: Duration,
    ) -> GrpcConnections {
        let connect_uri =
            Uri::builder().scheme("http").authority(authority.clone()).path_and_query("/").build().expect("valid");
        GrpcConnections {
            endpoint: endpoint.to_owned(),
            connect_uri,
            connector,
            max_streams,
            idle_timeout,
            open: Mutex::new(Vec::new()),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` on a connection with room for it. A request refused by
    /// a connection that closed before taking it is sent again on another:
    /// nothing of it reached the endpoint.
    pub async fn send(&self, mut request: Request<UpstreamBody>) -> Result<Response<LeasedBody>, SendError> {
        loop {
            let lease = self.lease().await?;
            let mut send = lease.connection.send.clone();
            match send.try_send_request(request).await {
                Ok(response) => return Ok(response.map(|inner| LeasedBody { inner, _lease: lease })),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if lease.connection.send.is_closed() => request = unsent,
                    _ => return Err(SendError::Failed(super::root_cause(err.error()))),
                },
            }
        }
    }

    /// Open connections, for tests and metrics.
    pub fn open_connections(&self) -> usize {
        self.open.lock().expect("not poisoned").len()
    }

    async fn lease(&self) -> Result<StreamLease, SendError> {
        if let Some(lease) = self.lease_open() {
            return Ok(lease);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(lease) = self.lease_open() {
            return Ok(lease);
        }
        let connection = Arc::new(self.dial().await?);
        let lease = StreamLease::take(&connection);
        self.open.lock().expect("not poisoned").push(connection);
        Ok(lease)
    }

    /// A stream on the oldest open connection with room, so younger ones go
    /// idle and close once the burst that opened them is over.
    fn lease_open(&self) -> Option<StreamLease> {
        let mut open = self.open.lock().expect("not poisoned");
        let now = Instant::now();
        let mut first = true;
        open.retain(|c| {
            // The first connection stays while it works: it is the one every
            // quiet period's calls use.
            let keep = !c.send.is_closed() && (first || !c.idle_longer_than(self.idle_timeout, now));
            first &= !keep;
            keep
        });
        open.iter().find(|c| c.in_flight.load(Ordering::Acquire) < self.max_streams).map(StreamLease::take)
    }

    async fn dial(&self) -> Result<Connection, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.connect_uri.clone())
            .await
            .map_err(|err| SendError::Connect(super::root_cause(&err)))?;
        let (send, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_frame_size(H2_MAX_FRAME)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .handshake(io)
            .await
            .map_err(|err| SendError::Connect(super::root_cause(&err)))?;
        let gauge = crate::metrics::metrics().upstream_connections.with_label_values(&[&self.endpoint]);
        gauge.inc();
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%endpoint, error = %err, "upstream connection ended");
            }
            gauge.dec();
        });
        Ok(Connection { send, in_flight: AtomicUsize::new(0), idle_since: Mutex::new(None) })
    }
}

impl Connection {
    fn idle_longer_than(&self, timeout: Duration, now: Instant) -> bool {
        let idle_since = *self.idle_since.lock().expect("not poisoned");
        self.in_flight.load(Ordering::Acquire) == 0 && idle_since.is_some_and(|t| now.duration_since(t) >= timeout)
    }
}

/// One stream's place on a connection, given back when the response body
/// (and with it the stream) is done or dropped.
struct StreamLease {
    connection: Arc<Connection>,
}

impl StreamLease {
    fn take(connection: &Arc<Connection>) -> StreamLease {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        StreamLease { connection: connection.clone() }
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        if self.connection.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.connection.idle_since.lock().expect("not poisoned") = Some(Instant::now());
        }
    }
}

/// An upstream response body that holds its stream's lease.
pub struct LeasedBody {
    inner: Incoming,
    _lease: StreamLease,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::server::conn::http2 as server;
    use hyper_util::rt::TokioIo;

    /// An h2c server whose answers never end: each call holds its stream
    /// until the client drops it.
    async fn endless_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_request| async {
                    let body = StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, hyper::Error>>());
                    Ok::<_, hyper::Error>(Response::new(body))
                });
                tokio::spawn(
                    server::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        address
    }

    fn request(address: std::net::SocketAddr) -> Request<UpstreamBody> {
        let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        Request::post(format!("http://{address}/svc/Method")).body(body).unwrap()
    }

    #[tokio::test]
    async fn full_connections_open_another_and_idle_extras_close() {
        let address = endless_server().await;
        let authority: http::uri::Authority = address.to_string().parse().unwrap();
        let connections = GrpcConnections::new("test", &authority, HttpConnector::new(), 2, Duration::from_millis(50));
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(connections.send(request(address)).await.unwrap());
        }
        assert_eq!(connections.open_connections(), 3, "five calls at two per connection");
        held.clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _next = connections.send(request(address)).await.unwrap();
        assert_eq!(connections.open_connections(), 1, "idle extra connections close; the first stays");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_connect_error() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let authority: http::uri::Authority = unused.to_string().parse().unwrap();
        let connections = GrpcConnections::new("test", &authority, HttpConnector::new(), 2, Duration::from_secs(1));
        assert!(matches!(connections.send(request(unused)).await, Err(SendError::Connect(_))));
    }
}
