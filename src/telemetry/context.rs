//! The request an event is logged in: observation runs each request's answer inside
//! [`InRequest`], and the log layer gives every event logged meanwhile (on that thread, while
//! the answer is being polled) the request's id as its `request_id` field.
//!
//! This is what a tracing span per request did, for a small part of its cost: a span was
//! registered, its fields copied into the span's own storage, entered and left at every poll
//! through the dispatcher, and closed and freed again, about 6 % of a request's instructions
//! at the HTTP ceiling. Here a poll moves the id into a thread-local slot and back.

use axum::http::HeaderValue;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// The id of the request whose answer this thread is polling now.
    static CURRENT: RefCell<Option<HeaderValue>> = const { RefCell::new(None) };
}

/// Calls `f` with the id of the request being answered on this thread, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CURRENT.with(|c| match c.try_borrow() {
        Ok(id) => f(id.as_ref().and_then(|v| v.to_str().ok())),
        Err(_) => f(None),
    })
}

pin_project_lite::pin_project! {
    /// `inner`, polled as the answer to the request `id`.
    pub struct InRequest<F> {
        // Moved into the thread's slot for each poll, and back after it.
        id: Option<HeaderValue>,
        #[pin]
        inner: F,
    }
}

impl<F> InRequest<F> {
    pub fn new(id: HeaderValue, inner: F) -> Self {
        Self {
            id: Some(id),
            inner,
        }
    }
}

/// Puts the previous id back in the slot, and ours back in the future, even if the poll
/// panics (a caught panic is logged in the request, then the slot must be as it was).
struct Restore<'a> {
    ours: &'a mut Option<HeaderValue>,
    previous: Option<HeaderValue>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        *self.ours = CURRENT.with(|c| c.replace(previous));
    }
}

/// The answer, and the request's id handed back with it: the caller needs no copy of the id
/// of its own (a copy of a made id cost an allocation).
impl<F: Future> Future for InRequest<F> {
    type Output = (F::Output, HeaderValue);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let previous = CURRENT.with(|c| c.replace(this.id.take()));
        let polled = {
            let _restore = Restore {
                ours: &mut *this.id,
                previous,
            };
            this.inner.poll(cx)
        };
        polled.map(|out| {
            let id = this.id.take();
            (out, id.unwrap_or_else(|| HeaderValue::from_static("-")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Option<String> {
        with_current(|id| id.map(str::to_owned))
    }

    #[tokio::test]
    async fn the_id_is_current_only_while_its_answer_is_polled() {
        assert_eq!(current(), None);
        let outer = InRequest::new(HeaderValue::from_static("outer"), async {
            assert_eq!(current().as_deref(), Some("outer"));
            let ((), id) = InRequest::new(HeaderValue::from_static("inner"), async {
                assert_eq!(current().as_deref(), Some("inner"));
                tokio::task::yield_now().await;
                assert_eq!(current().as_deref(), Some("inner"));
            })
            .await;
            assert_eq!(id, "inner", "the id comes back with the answer");
            assert_eq!(current().as_deref(), Some("outer"));
            7
        });
        assert_eq!(outer.await, (7, HeaderValue::from_static("outer")));
        assert_eq!(current(), None);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut f = std::pin::pin!(InRequest::new(HeaderValue::from_static("boom"), async {
                panic!("in the answer")
            }));
            let _ = f.as_mut().poll(&mut cx);
        }));
        assert!(panicked.is_err());
        assert_eq!(current(), None, "a panic leaves no id behind");
    }
}
