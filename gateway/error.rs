//! The one error type of the HTTP surface, and the only place errors become responses:
//! a precise status and a one-line reason, as JSON `{"error": code, "message": reason}`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("address {0} is not allowed for this source")]
    IpNotAllowed(std::net::IpAddr),
    #[error("body larger than the {0} byte limit")]
    TooLarge(u64),
    /// The whole request took longer than `limits.request_timeout`: a sender too slow to send its body.
    #[error("request not completed within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("unsupported content type `{0}`; send application/json or application/x-www-form-urlencoded")]
    UnsupportedType(String),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("missing or wrong bearer token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("storage unavailable, retry later")]
    Unavailable,
    #[error("too many requests in flight, retry later")]
    Overloaded,
    #[error("not found")]
    NotFound,
    /// The method is not served on this path; `Allow` names the one that is.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// Well-formed but not acceptable (a subscription URL the egress policy forbids, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownSource(_) | Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::IpNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Malformed(_) => StatusCode::BAD_REQUEST,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unauthorized(_) | Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Unavailable | Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code, also the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownSource(_) => "unknown_source",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::IpNotAllowed(_) => "ip_not_allowed",
            Error::TooLarge(_) => "too_large",
            Error::Timeout(_) => "timeout",
            Error::UnsupportedType(_) => "unsupported_type",
            Error::Malformed(_) => "malformed",
            Error::Invalid(_) => "invalid",
            Error::Conflict(_) => "conflict",
            Error::Unauthorized(_) => "bad_signature",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Unavailable => "unavailable",
            Error::Overloaded => "overloaded",
            Error::Internal(_) => "internal",
        }
    }
}

/// Seconds a sender should wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let Error::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Counts a refusal that a layer made: the request's URI and the error it was answered with.
pub type RefusalCount = Box<dyn Fn(&http::Uri, &Error) + Send + Sync>;

/// tower-http's body-limit backstop (413) and request timeout (408) answer by themselves, in plain text,
/// and no handler sees those requests. Placed outside both, this turns their answers into the one error
/// type's JSON and hands each to `count` with the request's URI, so they are counted like any refusal.
#[derive(Clone)]
pub struct LayerRefusals<S> {
    inner: S,
    refusals: Arc<Refusals>,
}

/// What [`LayerRefusals`] answers with, and whom it tells.
pub struct Refusals {
    /// The backstop's limit, named in its 413.
    pub body_cap: u64,
    /// `limits.request_timeout`, named in the 408.
    pub timeout: Duration,
    pub count: Option<RefusalCount>,
}

impl Refusals {
    /// The layer's own answer for a response, when a layer made it: the refusal's status, and not our
    /// JSON (the receiver's own 413 is JSON and already counted).
    fn own(&self, resp: &Response) -> Option<Error> {
        let e = match resp.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(self.body_cap),
            StatusCode::REQUEST_TIMEOUT => Error::Timeout(self.timeout),
            _ => return None,
        };
        let json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (!json).then_some(e)
    }

    /// As a tower layer.
    pub fn layer<S>(self) -> impl tower::Layer<S, Service = LayerRefusals<S>> + Clone {
        let refusals = Arc::new(self);
        tower::layer::layer_fn(move |inner| LayerRefusals {
            inner,
            refusals: refusals.clone(),
        })
    }
}

impl<S> tower::Service<http::Request<Body>> for LayerRefusals<S>
where
    S: tower::Service<http::Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RefusalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // A clone of the URI is a few reference counts; it names the source should the request be refused.
        let uri = req.uri().clone();
        RefusalFuture {
            inner: self.inner.call(req),
            refusals: self.refusals.clone(),
            uri,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`LayerRefusals`]' future: the inner answer, replaced when a layer made it.
    pub struct RefusalFuture<F> {
        #[pin]
        inner: F,
        refusals: Arc<Refusals>,
        uri: http::Uri,
    }
}

impl<F> Future for RefusalFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let Some(e) = this.refusals.own(&resp) else {
            return Poll::Ready(Ok(resp));
        };
        if let Some(count) = &this.refusals.count {
            count(this.uri, &e);
        }
        Poll::Ready(Ok(e.into_response()))
    }
}
