//! Bearer-token guard for the admin API. Compared in constant time (over SHA-256 digests, so the length
//! leaks nothing either). Without a configured token the admin API is closed, never open.

use crate::error::Error;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The expected token's digest; `None` when no token is configured.
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Sha256::digest(t.as_bytes()).into()))
    }

    fn accepts(&self, presented: &str) -> bool {
        match &self.0 {
            Some(want) => {
                let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                bool::from(want.ct_eq(&got))
            }
            None => false,
        }
    }
}

pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    req: Request,
    next: Next,
) -> Result<Response, Error> {
    if token.0.is_none() {
        return Err(Error::Forbidden(
            "admin API disabled: set HOOKGATE_ADMIN_TOKEN or HOOKGATE_ADMIN_TOKEN_FILE".into(),
        ));
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, t)| t.trim());
    if token.accepts(presented) {
        Ok(next.run(req).await)
    } else {
        Err(Error::Unauthenticated)
    }
}
