//! Signature verification presets (stripe, standard-webhooks, github, shopify, hubspot, typeform, calendly,
//! slack, twilio, generic hmac, basic auth, static token). (Stub: the verification work fills this in.)

use http::HeaderMap;
use serde::Deserialize;
use std::time::SystemTime;

/// Which scheme a source uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Stripe,
    StandardWebhooks,
    Github,
    Shopify,
    Hubspot,
    Typeform,
    Calendly,
    Slack,
    Twilio,
    /// Generic HMAC: `header`, `prefix`, `algorithm`, `encoding`, `timestamp_header`, `signed_content`.
    Hmac,
    /// HTTP basic auth: `username`, `password` (a secret reference).
    Basic,
    /// A shared token in a header (`header`, optional `prefix` such as `Bearer `) or a query parameter (`param`).
    Token,
}

/// The `verify:` block of a source file, as written. Secrets are `${env:NAME}` or `${file:/path}` references,
/// resolved only by `build`, so `hookgate check` needs no secrets. Options that do not apply to the preset
/// are reported by `build`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub preset: Preset,
    /// One secret reference.
    #[serde(default)]
    pub secret: Option<String>,
    /// Several secret references, all accepted (rotation).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Replay window for schemes with a timestamp, e.g. `300s` (the default) or `5m`.
    #[serde(default)]
    pub tolerance: Option<String>,
    /// HubSpot signature version: `v1`, `v2` or `v3` (default v3).
    #[serde(default)]
    pub version: Option<String>,
    /// The public URL the sender signs (twilio, hubspot v2/v3), when hookgate sits behind a proxy that rewrites it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Generic hmac and token: the header carrying the signature or token.
    #[serde(default)]
    pub header: Option<String>,
    /// Generic hmac: text before the signature (`sha256=`); token: text before the token (`Bearer `).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Generic hmac: `sha1`, `sha256` (default) or `sha512`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Generic hmac: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Generic hmac: header with a unix timestamp that is part of the signed content.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Generic hmac: signed content template, e.g. `{timestamp}.{body}` (default `{body}`).
    #[serde(default)]
    pub signed_content: Option<String>,
    /// Basic auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password (a secret reference).
    #[serde(default)]
    pub password: Option<String>,
    /// Token: query parameter carrying the token (for senders that cannot set headers).
    #[serde(default)]
    pub param: Option<String>,
}

/// What a verifier sees of a request. `url` is the URL as received (scheme://host/path?query).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A verifier with its secrets resolved.
#[derive(Debug)]
pub struct Verifier;

/// Why a request failed verification. `reason()` is a short stable label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("signature does not match")]
    Mismatch,
}

impl VerifyError {
    pub fn reason(&self) -> &'static str {
        "mismatch"
    }
}

impl VerifySpec {
    /// Resolve secrets and compile the verifier; every problem is returned.
    pub fn build(&self) -> Result<Verifier, Vec<String>> {
        Ok(Verifier)
    }
}

impl Verifier {
    pub fn verify(&self, _req: &SignedRequest<'_>, _now: SystemTime) -> Result<(), VerifyError> {
        Ok(())
    }
}
