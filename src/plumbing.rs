//! HTTP plumbing both proxies share: the response body type, a body that
//! reports when it ends, whole-message bodies, and which headers belong to
//! one hop only.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::BoxError;

pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Runs a callback once when a body ends, with its trailers if it had any
/// (else `None`, also when dropped early: the peer went away) and the
/// number of data bytes that passed.
pub(crate) struct ObservedBody<B> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

pub(crate) type OnEnd = Box<dyn FnOnce(Option<&http::HeaderMap>, u64) + Send>;

impl<B> ObservedBody<B> {
    pub(crate) fn new(inner: B, on_end: OnEnd) -> Self {
        Self { inner, bytes: 0, on_end: Some(on_end) }
    }

    fn end(&mut self, trailers: Option<&http::HeaderMap>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(trailers, self.bytes);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl<B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin> http_body::Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    self.end(Some(trailers));
                }
            }
            std::task::Poll::Ready(_) => self.end(None),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that is all there in memory.
pub(crate) fn full_body(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Headers that describe one hop of a connection and must not be forwarded.
pub(crate) fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te" | "host" | "trailer"
    )
}

/// Removes the hop-by-hop headers of a message about to be forwarded.
pub(crate) fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    let hop: Vec<_> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}
