//! [`GateLayer`]: middleware that either answers a request itself (a check refused it) or hands
//! it on untouched, for the checks that only read the request (head limits, rate limit).
//!
//! Why not `middleware::from_fn`: each such layer cost every request a boxed future and a clone
//! of the whole service stack below it (whose innermost route is itself boxed), and freeing
//! both; at the HTTP ceiling the two checks' layers were about 7 % of a block read's CPU, their
//! checks a small part of that. Here a pass is a direct call of the inner service.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::Either;
use tower::{Layer, Service};

/// Wraps services in a [`Gate`] running `check`: `Some(answer)` refuses the request with that
/// answer, `None` passes it on.
#[derive(Clone)]
pub struct GateLayer<F> {
    check: F,
}

impl<F> GateLayer<F>
where
    F: Fn(&Request) -> Option<Response> + Clone,
{
    pub fn new(check: F) -> Self {
        Self { check }
    }
}

impl<F: Clone, S> Layer<S> for GateLayer<F> {
    type Service = Gate<F, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            check: self.check.clone(),
            inner,
        }
    }
}

/// The service of [`GateLayer`].
#[derive(Clone)]
pub struct Gate<F, S> {
    check: F,
    inner: S,
}

impl<F, S> Service<Request> for Gate<F, S>
where
    F: Fn(&Request) -> Option<Response>,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match (self.check)(&req) {
            Some(refusal) => Either::Left(ready(Ok(refusal))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_inner_service() {
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reached.clone();
        let inner = tower::service_fn(move |_req: Request| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, Infallible>(StatusCode::OK.into_response()))
        });
        let gate = GateLayer::new(|req: &Request| {
            (req.uri().path() == "/no").then(|| StatusCode::FORBIDDEN.into_response())
        })
        .layer(inner);
        let get = |path: &str| Request::get(path).body(axum::body::Body::empty()).unwrap();
        let no = gate.clone().oneshot(get("/no")).await.unwrap();
        assert_eq!(no.status(), StatusCode::FORBIDDEN);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        let yes = gate.oneshot(get("/yes")).await.unwrap();
        assert_eq!(yes.status(), StatusCode::OK);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
