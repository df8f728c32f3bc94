//! No user can hold the upstream for everyone: Dolt serves a bounded number
//! of streams, and a held one is a slot no other call gets. So a stream's
//! client must keep sending ([`IdleTimeout`] between
//! its messages, never while Dolt works), and one user holds at most so many
//! streams, calls and table-file transfers at once ([`UserSlots`], one per
//! limit); past a limit a request waits briefly for a slot, then is refused
//! with a status Dolt's client retries, so a clone storm queues instead of
//! piling onto Dolt.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;
use crate::BoxError;

/// A client body that must yield a frame at least every `limit`.
pub struct IdleTimeout<B> {
    inner: B,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, limit: Duration) -> IdleTimeout<B> {
        IdleTimeout { inner, limit, timer: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.limit;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(
                        format!("no message for {:?} (limits.stream_idle_timeout)", self.limit).into()
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which per-user limit a set of slots enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Streams,
    Calls,
    Transfers,
}

impl Limit {
    /// The metric label, and the key in `[limits]`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Streams => "streams",
            Limit::Calls => "calls",
            Limit::Transfers => "transfers",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Limit::Streams => "limits.max_streams_per_user",
            Limit::Calls => "limits.max_calls_per_user",
            Limit::Transfers => "limits.max_transfers_per_user",
        }
    }
}

/// Per-user slots for one [`Limit`].
pub struct UserSlots {
    limit: Limit,
    per_user: usize,
    wait: Duration,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for UserSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSlots")
            .field("limit", &self.limit)
            .field("per_user", &self.per_user)
            .finish_non_exhaustive()
    }
}

impl UserSlots {
    pub fn new(limit: Limit, per_user: usize, wait: Duration) -> UserSlots {
        UserSlots { limit, per_user, wait, users: Mutex::default() }
    }

    /// A slot for one request of `who`, held until the permit is dropped.
    pub async fn acquire(&self, who: &str) -> Result<OwnedSemaphorePermit, GatewayError> {
        let semaphore = {
            let mut users = self.users.lock().expect("stream slots");
            users.entry(who.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.per_user))).clone()
        };
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let counted =
            |outcome| crate::metrics::metrics().user_limits.with_label_values(&[self.limit.name(), outcome]).inc();
        counted("queued");
        match tokio::time::timeout(self.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                counted("refused");
                Err(GatewayError::UserLimit {
                    user: crate::authn::shown(who),
                    limit: self.per_user,
                    key: self.limit.key(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_user_past_the_limit_waits_then_is_refused_others_are_not() {
        let slots = UserSlots::new(Limit::Streams, 2, Duration::from_millis(50));
        let held = [slots.acquire("hog").await.unwrap(), slots.acquire("hog").await.unwrap()];
        let refused = slots.acquire("hog").await.unwrap_err();
        assert_eq!(refused.grpc_code(), tonic::Code::Unavailable, "{refused}");
        let _other = slots.acquire("someone-else").await.expect("another user has slots of their own");
        drop(held);
        let _again = slots.acquire("hog").await.expect("a freed slot is reusable");
    }
}
