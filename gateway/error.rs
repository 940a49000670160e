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
    /// More header fields than `limits.max_headers` (HTTP/2: hyper bounds HTTP/1's count itself).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The whole request took longer than `limits.request_timeout`: a sender too slow to send its body.
    #[error("request not completed within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The body came slower than `limits.min_body_rate` (bytes per second) once its grace had passed.
    #[error("the body arrived slower than {0} bytes/s")]
    TooSlow(u64),
    #[error("unsupported content type `{0}`; send application/json or application/x-www-form-urlencoded")]
    UnsupportedType(String),
    /// A form (or another type) to a source whose signature and id are read from a JSON body (Mailgun).
    #[error("unsupported content type `{0}`; this source takes application/json only")]
    JsonOnly(String),
    /// JSON (or another type) to a source whose sender signs form parameters only (Mandrill): read as a
    /// form, its text would be checked as one thing and mapped as another.
    #[error(
        "unsupported content type `{0}`; this source takes application/x-www-form-urlencoded only"
    )]
    FormOnly(String),
    /// A `Content-Encoding` other than identity: hookgate stores and verifies the bytes as sent, and
    /// reads them as the content type says, so a compressed body would only fail later as malformed.
    #[error("unsupported content encoding `{0}`; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// A transfer coding other than `chunked` (`gzip, chunked`): hyper undoes only the chunking, so the
    /// body would be verified and read still compressed. RFC 9112 section 6.1 answers it with 501.
    #[error("unsupported transfer coding `{0}`; send the body chunked or with a Content-Length")]
    UnsupportedTransferCoding(String),
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The sender closed the connection (or reset its stream) before its body was complete. No answer
    /// reaches it; the status, nginx's 499, exists for the metrics and the log.
    #[error("the sender closed the connection before its body was complete")]
    ClientClosed,
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
    /// The method is not served on this path; `Allow` names those that are.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// The same on a router path that serves several methods: the router adds `Allow` itself.
    #[error("method not allowed on this path; Allow names those that are")]
    MethodNotAllowedHere,
    /// A query parameter or cursor that cannot be read (admin API).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but not acceptable (a subscription URL the egress policy forbids, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    /// Something the answer depends on could not be fetched (SNS's signing certificate, its subscription
    /// confirmation): 502, which the sender retries.
    #[error("{0}")]
    BadGateway(String),
}

/// Files the configuration names (the mappings, `subscriptions_file`) that cannot start a gateway: a
/// configuration error like the config file's own, so `serve` exits 2, not 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFiles(pub String);

/// Text a sender or a file wrote, fit to quote in a one-line reason: at most 60 characters, line breaks
/// (`\r`, `\n`, U+2028, U+2029) and other control characters escaped (`\n`, `\u{1b}`), `…` when cut.
pub fn one_line(text: &str) -> String {
    one_line_within(text, 60)
}

/// [`one_line`] with room for `max` characters: for our own messages that quote a little input.
pub fn one_line_within(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownSource(_) | Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) | Error::MethodNotAllowedHere => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::IpNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyHeaders(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::Timeout(_) | Error::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedType(_)
            | Error::JsonOnly(_)
            | Error::FormOnly(_)
            | Error::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Malformed(_) => StatusCode::BAD_REQUEST,
            Error::ClientClosed => CLIENT_CLOSED,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unauthorized(_) | Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Unavailable | Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// A stable machine-readable code, also the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownSource(_) => "unknown_source",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) | Error::MethodNotAllowedHere => "method_not_allowed",
            Error::BadRequest(_) => "bad_request",
            Error::IpNotAllowed(_) => "ip_not_allowed",
            Error::TooLarge(_) => "too_large",
            Error::TooManyHeaders(_) => "too_many_headers",
            Error::Timeout(_) => "timeout",
            Error::TooSlow(_) => "too_slow",
            Error::UnsupportedType(_) | Error::JsonOnly(_) | Error::FormOnly(_) => {
                "unsupported_type"
            }
            Error::UnsupportedEncoding(_) => "unsupported_encoding",
            Error::UnsupportedTransferCoding(_) => "unsupported_transfer_coding",
            Error::Malformed(_) => "malformed",
            Error::ClientClosed => "client_closed",
            Error::Invalid(_) => "invalid",
            Error::Conflict(_) => "conflict",
            Error::Unauthorized(_) => "bad_signature",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Unavailable => "unavailable",
            Error::Overloaded => "overloaded",
            Error::Internal(_) => "internal",
            Error::BadGateway(_) => "bad_gateway",
        }
    }
}

/// "Client Closed Request", as nginx counts it: not a status any sender sees.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// axum's default limit on the bodies its extractors buffer (the admin API's JSON): 2 MiB.
pub const AXUM_BODY_LIMIT: u64 = 2 * 1024 * 1024;

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

/// The body limit a request's path is held to (a source's `max_body`), for the backstop's 413 to name
/// that limit rather than its own; `None` for a path with no limit of its own.
pub type LimitFor = Box<dyn Fn(&http::Uri) -> Option<u64> + Send + Sync>;

/// Three answers come from tower-http's layers rather than a handler, in plain text, and no handler
/// counts them: the body-limit backstop's 413 for a declared length over its cap, the request timeout's
/// 408, and catch-panic's 500. Placed outside those layers, this turns them into the one error type's
/// JSON and hands each to `count` with the request's URI, so they are counted like any refusal.
#[derive(Clone)]
pub struct LayerRefusals<S> {
    inner: S,
    refusals: Arc<Refusals>,
}

/// What [`LayerRefusals`] answers with, and whom it tells.
pub struct Refusals {
    /// The backstop's limit: a declared length over it is refused by the layer, and named in the 413.
    pub body_cap: u64,
    /// `limits.request_timeout`, named in the 408.
    pub timeout: Duration,
    pub count: Option<RefusalCount>,
    /// Names the limit in the backstop's 413 (the inbound listener's sources); the cap otherwise.
    pub limit_for: Option<LimitFor>,
}

impl Refusals {
    /// The error for a response a layer made, or `None` for any other. Every handler answers an error in
    /// our JSON, so a plain answer with one of these statuses is a layer's. A plain 413 is the backstop's
    /// for a declared length over its cap; any other is axum's own body limit on the admin API's JSON
    /// bodies ([`AXUM_BODY_LIMIT`]), in our JSON too.
    fn own<B>(&self, resp: &http::Response<B>, uri: &http::Uri, over_cap: bool) -> Option<Error> {
        let e = match resp.status() {
            StatusCode::PAYLOAD_TOO_LARGE if over_cap => Error::TooLarge(
                self.limit_for
                    .as_ref()
                    .and_then(|f| f(uri))
                    .unwrap_or(self.body_cap),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(AXUM_BODY_LIMIT),
            StatusCode::REQUEST_TIMEOUT => Error::Timeout(self.timeout),
            StatusCode::INTERNAL_SERVER_ERROR => {
                Error::Internal("the request's handler failed".into())
            }
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

/// The inner answer as it is, or ours in its place: either body, with no boxing.
pub type RefusalBody<B> = http_body_util::Either<B, Body>;

impl<S, B> tower::Service<http::Request<Body>> for LayerRefusals<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>,
{
    type Response = http::Response<RefusalBody<B>>;
    type Error = Infallible;
    type Future = RefusalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let over_cap = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.refusals.body_cap);
        // A clone of the URI is a few reference counts; it names the source should the request be refused.
        let uri = req.uri().clone();
        RefusalFuture {
            inner: self.inner.call(req),
            refusals: self.refusals.clone(),
            uri,
            over_cap,
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
        over_cap: bool,
    }
}

impl<F, B> Future for RefusalFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = Result<http::Response<RefusalBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let Some(e) = this.refusals.own(&resp, this.uri, *this.over_cap) else {
            return Poll::Ready(Ok(resp.map(RefusalBody::Left)));
        };
        if let Some(count) = &this.refusals.count {
            count(this.uri, &e);
        }
        Poll::Ready(Ok(e.into_response().map(RefusalBody::Right)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_http::catch_panic::CatchPanicLayer;

    /// Sends one request through the refusal layer and catch-panic to `answer`; returns the status, the
    /// body and what was counted.
    async fn through(
        content_length: Option<u64>,
        answer: impl Fn() -> Response + Clone + Send + 'static,
    ) -> (u16, String, Vec<(String, u16)>) {
        let counted = Arc::new(Mutex::new(Vec::new()));
        let sink = counted.clone();
        let refusals = Refusals {
            body_cap: 100,
            limit_for: None,
            timeout: Duration::from_secs(7),
            count: Some(Box::new(move |uri, e| {
                if let Ok(mut v) = sink.lock() {
                    v.push((uri.path().to_string(), e.status().as_u16()));
                }
            })),
        };
        let svc = ServiceBuilder::new()
            .layer(refusals.layer())
            .layer(CatchPanicLayer::new())
            .service_fn(move |_req: http::Request<Body>| {
                let answer = answer.clone();
                async move { Ok::<_, Infallible>(answer()) }
            });
        let mut req = http::Request::post("/webhooks/s");
        if let Some(n) = content_length {
            req = req.header(header::CONTENT_LENGTH, n);
        }
        let resp = svc
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let counted = counted.lock().map(|v| v.clone()).unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned(), counted)
    }

    fn plain(status: StatusCode) -> Response {
        (status, "plain").into_response()
    }

    #[tokio::test]
    async fn a_layers_own_answers_become_ours_and_are_counted() {
        let (s, body, counted) = through(None, || plain(StatusCode::REQUEST_TIMEOUT)).await;
        assert_eq!(s, 408);
        assert!(body.contains(r#""error":"timeout""#), "{body}");
        assert!(body.contains("within 7s"), "{body}");
        assert_eq!(counted, [("/webhooks/s".to_string(), 408)]);

        let (s, body, counted) = through(Some(101), || plain(StatusCode::PAYLOAD_TOO_LARGE)).await;
        assert_eq!(s, 413);
        assert!(body.contains(r#""error":"too_large""#), "{body}");
        assert!(body.contains("100 byte limit"), "{body}");
        assert_eq!(counted.len(), 1);

        let (s, body, counted) = through(None, || panic!("a bug")).await;
        assert_eq!(s, 500);
        assert!(body.contains(r#""error":"internal""#), "{body}");
        assert!(
            !body.contains("a bug"),
            "the panic's text stays out: {body}"
        );
        assert_eq!(counted, [("/webhooks/s".to_string(), 500)]);
    }

    #[tokio::test]
    async fn other_answers_pass_untouched_and_uncounted() {
        // A handler's own plain 413 (axum's body limit on the admin API): the declared length was within
        // the backstop's cap, so the backstop did not make it; it is still put in our JSON, with
        // axum's limit.
        let (s, body, _) = through(Some(100), || plain(StatusCode::PAYLOAD_TOO_LARGE)).await;
        assert_eq!(s, 413);
        assert!(body.contains(r#""error":"too_large""#), "{body}");
        assert!(body.contains("2097152 byte limit"), "{body}");
        // Our own JSON errors are the handler's, already counted there.
        let (s, body, counted) = through(Some(101), || Error::TooLarge(100).into_response()).await;
        assert_eq!(s, 413);
        assert!(body.contains("too_large"));
        assert!(counted.is_empty());
        let (s, body, counted) = through(None, || plain(StatusCode::ACCEPTED)).await;
        assert_eq!((s, body.as_str()), (202, "plain"));
        assert!(counted.is_empty());
    }
}
