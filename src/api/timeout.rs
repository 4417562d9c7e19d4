//! [`TimeoutLayer`]: `api.request_timeout_seconds`, answered `408` (shaped into the error body
//! by observation) when a request's answer is not ready in time.
//!
//! Why not tower-http's: its future polls the timer before the request, so every request
//! registered a timer with the runtime (and took the timer wheel's lock to remove it again),
//! even the reads answered at their first poll. Here the timer is made only when the answer
//! is not ready at once, measured from when the request arrived.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// Wraps services in a [`Timeout`] of `limit`.
#[derive(Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            limit: self.limit,
            inner,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone)]
pub struct Timeout<S> {
    limit: Duration,
    inner: S,
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Answer {
            // `checked_add`: a limit beyond what an instant holds never fires.
            deadline: Instant::now().checked_add(self.limit),
            timer: None,
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Timeout`]: the inner answer, or a 408 once the deadline passes.
    pub struct Answer<F> {
        deadline: Option<Instant>,
        // Made at the first poll that finds the answer not ready.
        timer: Option<Pin<Box<Sleep>>>,
        #[pin]
        inner: F,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answer);
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Ok(StatusCode::REQUEST_TIMEOUT.into_response()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn get() -> Request {
        Request::get("/").body(axum::body::Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_408_at_the_limit_and_a_quick_one_passes() {
        let slow = tower::service_fn(|_req: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let started = Instant::now();
        let res = TimeoutLayer::new(Duration::from_millis(50))
            .layer(slow)
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() >= Duration::from_millis(50));

        let quick = tower::service_fn(|_req: Request| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let res = TimeoutLayer::new(Duration::from_secs(30))
            .layer(quick)
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_answer_ready_at_once_never_makes_a_timer() {
        let ready = tower::service_fn(|_req: Request| {
            std::future::ready(Ok::<_, Infallible>(StatusCode::OK.into_response()))
        });
        let mut answer = TimeoutLayer::new(Duration::from_secs(2))
            .layer(ready)
            .call(get());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let polled = Pin::new(&mut answer).poll(&mut cx);
        assert!(matches!(polled, Poll::Ready(Ok(ref r)) if r.status() == StatusCode::OK));
        assert!(answer.timer.is_none());
    }
}
