//! Bearer-token guard for the admin API. Compared in constant time (over SHA-256 digests, so the length
//! leaks nothing either). Without a configured token the admin API is closed, never open. An optional
//! address allowlist (`admin_allow_ips`) is checked first.

use crate::error::Error;
use crate::ip_policy::{client_ip, CidrList};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The expected token's digest (`None` when no token is configured), and who may present it.
pub struct AdminToken(Option<[u8; 32]>, Option<Allow>);

/// `admin_allow_ips`: checked before the token, so an address outside the list cannot even try one.
struct Allow {
    nets: CidrList,
    /// The client address is found as for webhooks: behind these proxies, from `X-Forwarded-For`.
    trusted_proxies: CidrList,
}

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Sha256::digest(t.as_bytes()).into()), None)
    }

    /// Accept only clients in `nets` (none: any address); see `ip_policy::client_ip` for `trusted`.
    pub fn allow_from(mut self, nets: &[IpNet], trusted: &[IpNet]) -> Self {
        self.1 = (!nets.is_empty()).then(|| Allow {
            nets: CidrList::new(nets),
            trusted_proxies: CidrList::new(trusted),
        });
        self
    }

    fn admits(&self, req: &Request) -> bool {
        let Some(allow) = &self.1 else {
            return true;
        };
        // Without a peer address (never so on our listeners) nothing is admitted: closed, not open.
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| {
                let ip = client_ip(peer.ip(), req.headers(), &allow.trusted_proxies);
                allow.nets.contains(ip)
            })
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

/// The guard over the whole admin listener: a path under `/v1` needs an allowed address and the token
/// before anything else is looked at, so a caller without them learns nothing of which routes and
/// methods exist (the 404 and the 405 come after it). `/healthz`, `/readyz` and `/metrics` stay open to
/// probes and scrapers.
pub async fn guard_api(
    State(token): State<Arc<AdminToken>>,
    req: Request,
    next: Next,
) -> Result<Response, Error> {
    let path = req.uri().path();
    if path == "/v1" || path.starts_with("/v1/") {
        require_token(State(token), req, next).await
    } else {
        Ok(next.run(req).await)
    }
}

pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    req: Request,
    next: Next,
) -> Result<Response, Error> {
    if !token.admits(&req) {
        return Err(Error::Forbidden(
            "the admin API is not open to this address (admin_allow_ips)".into(),
        ));
    }
    if token.0.is_none() {
        return Err(Error::Forbidden(
            "admin API disabled: set HOOKGATE_ADMIN_TOKEN or HOOKGATE_ADMIN_TOKEN_FILE".into(),
        ));
    }
    // Exactly one Authorization field: with two, a proxy in front and this check could each read another.
    let mut fields = req.headers().get_all(http::header::AUTHORIZATION).iter();
    let presented = fields
        .next()
        .filter(|_| fields.next().is_none())
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
