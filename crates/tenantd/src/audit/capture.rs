//! A request body that keeps a bounded copy of what its reader consumed,
//! so the audit observer can record a request's parameters without reading
//! the body itself. The handler reads it (inside the request timeout, under
//! the body limit); the observer looks at the copy afterwards. A body that
//! was never read leaves an empty copy: the request acted on nothing it
//! sent.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio_util::bytes::BytesMut;

/// The copy of what was read, up to its bound.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<Mutex<BytesMut>>);

impl Seen {
    /// The bytes read so far (at most the bound).
    pub fn bytes(&self) -> Bytes {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .freeze()
    }
}

/// Wraps `body` so what is read of it (up to `limit` bytes) shows in the
/// returned [`Seen`].
pub fn tee(body: Body, limit: usize) -> (Body, Seen) {
    let seen = Seen::default();
    let body = Body::new(Tee {
        inner: body,
        seen: seen.clone(),
        limit,
    });
    (body, seen)
}

struct Tee {
    inner: Body,
    seen: Seen,
    limit: usize,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let mut copy = self.seen.0.lock().unwrap_or_else(PoisonError::into_inner);
            let room = self.limit.saturating_sub(copy.len());
            copy.extend_from_slice(&data[..data.len().min(room)]);
        }
        polled
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

    #[tokio::test]
    async fn keeps_what_was_read_up_to_the_bound() {
        let (body, seen) = tee(Body::from("0123456789"), 4);
        assert!(seen.bytes().is_empty(), "nothing read yet");
        let all = axum::body::to_bytes(body, 100).await.expect("read");
        assert_eq!(&all[..], b"0123456789", "the reader gets every byte");
        assert_eq!(&seen.bytes()[..], b"0123");
    }
}
