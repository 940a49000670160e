//! The one error type of the HTTP surface, and the only place errors become responses:
//! a precise status and a one-line reason, as JSON `{"error": code, "message": reason}`.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("address {0} is not allowed for this source")]
    IpNotAllowed(std::net::IpAddr),
    #[error("body larger than the {0} byte limit")]
    TooLarge(u64),
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
