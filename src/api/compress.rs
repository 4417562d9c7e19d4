//! Gzip for the clients that ask for it. A request without `Accept-Encoding` (what load
//! balancers, probes and many service clients send), or accepting only `identity`, skips tower-http's compression service: it
//! parsed the absent header, wrapped the answer's body in a body of its own and ran its
//! predicate chain on every answer, about a twentieth of a block read's CPU, only to send the
//! bytes unchanged. Such an answer gets what tower-http gives it, `Vary: accept-encoding` when
//! the body would have been compressed for a client that asked, so caches keep the two apart.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http_body::Body as _;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower::{Layer, Service};
use tower_http::compression::{Compression, CompressionLayer};

/// Smallest body tower-http compresses (its `SizeAbove` default).
const MIN_SIZE: u64 = 32;

#[derive(Clone, Default)]
pub struct GzipLayer;

impl<S> Layer<S> for GzipLayer {
    type Service = Gzip<S>;

    fn layer(&self, inner: S) -> Gzip<S> {
        Gzip(CompressionLayer::new().gzip(true).layer(inner))
    }
}

/// The service of [`GzipLayer`]: tower-http's compression when the request names encodings.
#[derive(Clone)]
pub struct Gzip<S>(Compression<S>);

impl<S> Service<Request> for Gzip<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Plain<S::Future>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !identity_only(req.headers()) {
            let compressed = self.0.call(req);
            return Either::Right(Box::pin(async move {
                let res = compressed.await?;
                Ok(res.map(Body::new))
            }));
        }
        Either::Left(Plain {
            inner: self.0.get_mut().call(req),
        })
    }
}

pin_project! {
    /// An answer to a request that accepts no encoding.
    pub struct Plain<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for Plain<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut res = ready!(self.project().inner.poll(cx))?;
        if compressible(&res) && !varies_on_encoding(&res) {
            res.headers_mut().append(
                header::VARY,
                HeaderValue::from_static(header::ACCEPT_ENCODING.as_str()),
            );
        }
        Poll::Ready(Ok(res))
    }
}

/// The request accepts no encoding: no `Accept-Encoding`, or one `identity` (what Python's
/// http.client sends unless told otherwise).
fn identity_only(headers: &axum::http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"),
        _ => false,
    }
}

/// Whether tower-http would compress `res` for a client that accepts gzip: not already
/// encoded, not a range, at least [`MIN_SIZE`] bytes (or of unknown size), and not gRPC, an
/// image (but SVG) or an event stream.
fn compressible(res: &Response) -> bool {
    let h = res.headers();
    if h.contains_key(header::CONTENT_ENCODING) || h.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let size = res.body().size_hint().exact().or_else(|| {
        h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    if size.is_some_and(|s| s < MIN_SIZE) {
        return false;
    }
    let kind = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let refused = |prefix: &str, except: Option<&str>| {
        kind.starts_with(prefix) && !except.is_some_and(|e| kind.starts_with(e))
    };
    !(refused("application/grpc", Some("application/grpc-web"))
        || refused("image/", Some("image/svg+xml"))
        || refused("text/event-stream", None))
}

fn varies_on_encoding(res: &Response) -> bool {
    res.headers().get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .windows(header::ACCEPT_ENCODING.as_str().len())
            .any(|w| w.eq_ignore_ascii_case(header::ACCEPT_ENCODING.as_str().as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    /// Answers with the response `make` builds.
    fn service(
        make: fn() -> Response,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send
    {
        tower::service_fn(move |_req: Request| async move { Ok::<_, Infallible>(make()) })
    }

    /// A named answer to check both services with.
    type Answer = (&'static str, fn() -> Response);

    fn answers() -> Vec<Answer> {
        fn typed(kind: &'static str, len: usize) -> Response {
            let mut r = Response::new(Body::from(vec![b'x'; len]));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            r
        }
        vec![
            ("json", || typed("application/json", 2900)),
            ("tiny json", || typed("application/json", 31)),
            ("32 bytes", || typed("application/json", 32)),
            ("png", || typed("image/png", 4000)),
            ("svg", || typed("image/svg+xml", 4000)),
            ("grpc", || typed("application/grpc", 4000)),
            ("grpc-web", || typed("application/grpc-web+proto", 4000)),
            ("event stream", || typed("text/event-stream", 4000)),
            ("no type", || Response::new(Body::from(vec![b'x'; 100]))),
            ("streamed", || {
                let chunks = futures_util::stream::iter([Ok::<_, Infallible>("a".repeat(10))]);
                Response::new(Body::from_stream(chunks))
            }),
            ("empty 304", || {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            }),
            ("already encoded", || {
                let mut r = typed("application/json", 4000);
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
                r
            }),
            ("a range", || {
                let mut r = typed("application/json", 4000);
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_static("bytes 0-3999/8000"),
                );
                r
            }),
            ("varies already", || {
                let mut r = typed("application/json", 4000);
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                r
            }),
            ("varies on origin", || {
                let mut r = typed("application/json", 4000);
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("origin"));
                r
            }),
        ]
    }

    async fn headers_of(
        svc: impl Service<Request, Response = Response<impl http_body::Body>, Error = Infallible>,
        accept: Option<&'static str>,
    ) -> axum::http::HeaderMap {
        let mut req = Request::new(Body::empty());
        if let Some(a) = accept {
            req.headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        svc.oneshot(req)
            .await
            .expect("infallible")
            .headers()
            .clone()
    }

    #[tokio::test]
    async fn answers_without_accept_encoding_carry_the_headers_tower_http_gives_them() {
        for (name, make) in answers() {
            let ours = headers_of(GzipLayer.layer(service(make)), None).await;
            let theirs = headers_of(
                CompressionLayer::new().gzip(true).layer(service(make)),
                None,
            )
            .await;
            assert_eq!(ours, theirs, "{name}");
        }
    }

    #[tokio::test]
    async fn requests_naming_encodings_get_what_tower_http_gives_them() {
        for accept in [
            "gzip",
            "gzip, deflate",
            "identity",
            " Identity ",
            "identity;q=0",
            "identity, gzip",
            "br;q=1, gzip;q=0.5",
            "*",
            "",
        ] {
            for (name, make) in answers() {
                let ours = headers_of(GzipLayer.layer(service(make)), Some(accept)).await;
                let theirs = headers_of(
                    CompressionLayer::new().gzip(true).layer(service(make)),
                    Some(accept),
                )
                .await;
                assert_eq!(ours, theirs, "{name} with {accept}");
            }
        }
    }
}
