//! The HTTP/2 connections that carry gRPC calls to one endpoint: as many as
//! the calls in flight need, each carrying at most `max_streams_per_connection`
//! of them, with every call leasing its stream until its response body ends.
//!
//! Why not one shared connection: Dolt serves at most 250 concurrent streams
//! on a connection, and past that a call waits inside the connection for a
//! stream to end. Streams can live for minutes (a clone's chunk downloads), so
//! a few users' long streams would delay everyone's unary calls. Opening
//! another connection when each is full keeps a short call short.
//!
//! The connections are driven through the `h2` crate itself rather than
//! hyper's client, so a unary call's HEADERS and DATA leave in one write
//! (see [`Connection`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
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

/// One HTTP/2 connection, driven through the `h2` crate itself: a request
/// whose body is already in hand (every unary call) has its HEADERS and DATA
/// queued together, so they leave in one write and Dolt reads them at once.
struct Connection {
    send: h2::client::SendRequest<Bytes>,
    in_flight: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    /// Set when the connection ended or stopped answering pings.
    closed: Arc<AtomicBool>,
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

    /// Sends `request` on a connection with room for it. A connection that
    /// closed before taking the request is left for another: nothing of the
    /// request reached the endpoint.
    pub async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<LeasedBody>, SendError> {
        let (head, mut body) = request.into_parts();
        // A body already complete (a unary call's one message) goes out with its headers.
        let first = match body.is_end_stream() {
            true => None,
            false => match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => Some(frame),
                Some(Some(Err(err))) => return Err(SendError::Failed(format!("request body: {err}"))),
                Some(None) => None,
                None => return self.send_streaming(head, None, body).await,
            },
        };
        self.send_streaming(head, first, body).await
    }

    async fn send_streaming(
        &self,
        head: http::request::Parts,
        first: Option<Frame<Bytes>>,
        body: UpstreamBody,
    ) -> Result<Response<LeasedBody>, SendError> {
        let failed = |err: h2::Error| SendError::Failed(err.to_string());
        let (lease, mut send) = loop {
            let lease = self.lease().await?;
            match lease.connection.send.clone().ready().await {
                Ok(send) => break (lease, send),
                // Closed before it took anything: try another connection.
                Err(_) => lease.connection.closed.store(true, Ordering::Release),
            }
        };
        let ends_now = body.is_end_stream() && first.as_ref().is_none_or(|f| f.is_data());
        let request = Request::from_parts(head, ());
        let no_body = first.is_none() && ends_now;
        let (response, mut stream) = send.send_request(request, no_body).map_err(failed)?;
        if let Some(frame) = first {
            match frame.into_data() {
                Ok(data) => stream.send_data(data, ends_now).map_err(failed)?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        stream.send_trailers(trailers).map_err(failed)?;
                    }
                }
            }
        }
        if !body.is_end_stream() {
            tokio::spawn(pipe(body, stream));
        }
        let response = response.await.map_err(failed)?;
        Ok(response.map(|inner| LeasedBody { inner, trailers_next: false, _lease: lease }))
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
            let keep = !c.closed.load(Ordering::Acquire) && (first || !c.idle_longer_than(self.idle_timeout, now));
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
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_frame_size(H2_MAX_FRAME)
            .enable_push(false)
            .handshake::<_, Bytes>(TokioIo::new(io))
            .await
            .map_err(|err| SendError::Connect(err.to_string()))?;
        let closed = Arc::new(AtomicBool::new(false));
        let gauge = crate::metrics::metrics().upstream_connections.with_label_values(&[&self.endpoint]);
        gauge.inc();
        if let Some(pings) = connection.ping_pong() {
            tokio::spawn(keep_alive(pings, closed.clone()));
        }
        let (endpoint, ended) = (self.endpoint.clone(), closed.clone());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%endpoint, error = %err, "upstream connection ended");
            }
            ended.store(true, Ordering::Release);
            gauge.dec();
        });
        Ok(Connection { send, in_flight: AtomicUsize::new(0), idle_since: Mutex::new(None), closed })
    }
}

/// Pings a quiet connection; one that does not answer within the timeout is
/// marked closed, so no new call is sent into it.
async fn keep_alive(mut pings: h2::PingPong, closed: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
        if closed.load(Ordering::Acquire) {
            return;
        }
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => {
                closed.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// Sends the rest of a request body as it arrives, within the stream's flow
/// control; an error in the body resets the stream.
async fn pipe(mut body: UpstreamBody, mut stream: h2::SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => return stream.send_reset(h2::Reason::CANCEL),
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(granted)) => granted.min(data.len()),
                        _ => return,
                    };
                    if granted == 0 {
                        continue;
                    }
                    if stream.send_data(data.split_to(granted), false).is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = stream.send_trailers(trailers);
            return;
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
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

/// An upstream response body that holds its stream's lease. Data is given
/// back to the stream's flow-control window as it is read, so the upstream
/// sends on only as fast as the client takes it.
pub struct LeasedBody {
    inner: h2::RecvStream,
    trailers_next: bool,
    _lease: StreamLease,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.trailers_next {
            match self.inner.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.inner.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => self.trailers_next = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.inner.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, StreamBody};
    use hyper::server::conn::http2 as server;
    use hyper_util::rt::TokioExecutor;

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
