//! A streaming gRPC body that hands each message to a callback on its way
//! through, so doltgate can read or rewrite messages while holding at most one
//! of them, and that always ends a response with a gRPC status.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::status;
use crate::error::GatewayError;
use crate::remotesapi::frame::{FrameDecoder, Framed};
use crate::BoxError;

/// What to do with one message: `Ok(None)` forwards it unchanged,
/// `Ok(Some(bytes))` forwards `bytes` instead, `Err` ends the call.
pub type OnMessage = Box<dyn FnMut(Bytes) -> Result<Option<Bytes>, GatewayError> + Send>;

/// Adjusts the final status (trailers) as it passes.
pub type OnTrailers = Box<dyn FnMut(&mut HeaderMap) + Send>;

/// Shared between the two directions of one call: a refusal found while
/// reading the client's stream is reported to the client in the response's
/// trailers, instead of whatever the aborted upstream call ends with.
#[derive(Debug, Default)]
pub struct CallFault(Mutex<Option<GatewayError>>);

impl CallFault {
    pub fn set(&self, err: GatewayError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(err);
    }

    pub fn take(&self) -> Option<GatewayError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Which side of the proxy the body flows to; it decides how a failure ends it.
pub enum Direction {
    /// Client -> upstream: a failure is recorded in the fault and the body
    /// errors, which resets the upstream stream.
    Request,
    /// Upstream -> client: a failure (or a recorded fault) ends the body with
    /// trailers carrying the status, so the client always learns why.
    Response { on_trailers: Option<OnTrailers>, upstream: String },
}

pin_project_lite::pin_project! {
    pub struct MessageBody<B> {
        #[pin]
        inner: B,
        decoder: FrameDecoder,
        // A message already read (to route the call), sent before the rest.
        first: Option<Bytes>,
        on_message: Option<OnMessage>,
        direction: Direction,
        fault: Arc<CallFault>,
        done: bool,
    }
}

impl<B> MessageBody<B> {
    pub fn new(
        inner: B,
        max_message: usize,
        on_message: Option<OnMessage>,
        direction: Direction,
        fault: Arc<CallFault>,
    ) -> Self {
        Self { inner, decoder: FrameDecoder::new(max_message), first: None, on_message, direction, fault, done: false }
    }

    /// Continues a stream whose first message (already framed) and any
    /// bytes after it were read ahead to route the call.
    pub fn after_first(mut self, first: Bytes, decoder: FrameDecoder) -> Self {
        self.first = Some(first);
        self.decoder = decoder;
        self
    }
}

impl<B> Body for MessageBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            match next_message(this.decoder, this.on_message) {
                Ok(Some(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(fail(this.direction, this.fault, this.done, err))),
            }
            let polled = ready!(this.inner.as_mut().poll_frame(cx));
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.decoder.push(data),
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        let end = finish(this.direction, this.fault, this.done, this.decoder, Some(trailers));
                        return Poll::Ready(end.transpose());
                    }
                },
                Some(Err(err)) => {
                    let err: BoxError = err.into();
                    let gateway_err = match this.direction {
                        Direction::Request => GatewayError::ClientBody(err.to_string()),
                        Direction::Response { upstream, .. } => GatewayError::UpstreamFailed {
                            address: upstream.clone(),
                            reason: format!("stream broke mid-call: {err}"),
                        },
                    };
                    return Poll::Ready(Some(fail(this.direction, this.fault, this.done, gateway_err)));
                }
                None => {
                    return Poll::Ready(finish(this.direction, this.fault, this.done, this.decoder, None).transpose())
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn next_message(decoder: &mut FrameDecoder, on_message: &mut Option<OnMessage>) -> Result<Option<Bytes>, GatewayError> {
    let Some(framed) = decoder.next_message()? else {
        return Ok(None);
    };
    let Some(callback) = on_message.as_mut() else {
        return Ok(Some(framed.into_bytes()));
    };
    Ok(Some(match callback(framed.message())? {
        None => framed.into_bytes(),
        Some(rewritten) => Framed::encode(&rewritten).into_bytes(),
    }))
}

fn fail(
    direction: &mut Direction,
    fault: &CallFault,
    done: &mut bool,
    err: GatewayError,
) -> Result<Frame<Bytes>, BoxError> {
    *done = true;
    match direction {
        Direction::Request => {
            let message = err.to_string();
            fault.set(err);
            Err(message.into())
        }
        Direction::Response { .. } => {
            let err = fault.take().unwrap_or(err);
            Ok(Frame::trailers(status::trailers(&err.to_status())))
        }
    }
}

/// The end of the inner body: pass its trailers on (through the hook), or, for
/// a response that ended without any, make sure the client still gets a status.
fn finish(
    direction: &mut Direction,
    fault: &CallFault,
    done: &mut bool,
    decoder: &FrameDecoder,
    trailers: Option<HeaderMap>,
) -> Result<Option<Frame<Bytes>>, BoxError> {
    if !decoder.is_empty() {
        return fail(direction, fault, done, GatewayError::TruncatedMessage).map(Some);
    }
    *done = true;
    match direction {
        Direction::Request => Ok(trailers.map(Frame::trailers)),
        Direction::Response { on_trailers, upstream } => {
            if let Some(err) = fault.take() {
                return Ok(Some(Frame::trailers(status::trailers(&err.to_status()))));
            }
            let Some(mut trailers) = trailers else {
                let err = GatewayError::UpstreamFailed {
                    address: upstream.clone(),
                    reason: "response ended without a gRPC status".into(),
                };
                return Ok(Some(Frame::trailers(status::trailers(&err.to_status()))));
            };
            if let Some(hook) = on_trailers.as_mut() {
                hook(&mut trailers);
            }
            Ok(Some(Frame::trailers(trailers)))
        }
    }
}

/// Polls a stream's setup; a panic in it becomes an INTERNAL status (counted
/// and logged like one in any other request) instead of tearing the connection down.
fn poll_catching<B>(
    source: Pin<&mut (dyn std::future::Future<Output = Result<B, GatewayError>> + Send)>,
    cx: &mut Context<'_>,
) -> Poll<Result<B, GatewayError>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.poll(cx))) {
        Ok(polled) => polled,
        Err(panic) => {
            crate::metrics::metrics().panics.with_label_values(&["grpc"]).inc();
            tracing::error!(panic = ?panic.downcast_ref::<&str>(), "stream handling panicked; answered INTERNAL");
            Poll::Ready(Err(GatewayError::Internal(
                "the stream could not be handled (an internal error, logged)".into(),
            )))
        }
    }
}

/// A response body whose source is still being found: it resolves the
/// future first (routing, connecting upstream), then streams what that
/// yields. If the future fails, the body is just trailers with its status.
pub struct DeferredBody<B> {
    state: Deferred<B>,
}

enum Deferred<B> {
    Pending(futures_util::future::BoxFuture<'static, Result<B, GatewayError>>),
    Ready(B),
    Done,
}

impl<B> DeferredBody<B> {
    pub fn new(source: futures_util::future::BoxFuture<'static, Result<B, GatewayError>>) -> Self {
        Self { state: Deferred::Pending(source) }
    }
}

impl<B> Body for DeferredBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.state {
                Deferred::Pending(source) => match ready!(poll_catching(source.as_mut(), cx)) {
                    Ok(body) => self.state = Deferred::Ready(body),
                    Err(err) => {
                        tracing::info!(code = ?err.grpc_code(), error = %err, "refused gRPC stream");
                        self.state = Deferred::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(status::trailers(&err.to_status())))));
                    }
                },
                Deferred::Ready(body) => return Pin::new(body).poll_frame(cx),
                Deferred::Done => return Poll::Ready(None),
            }
        }
    }
}
