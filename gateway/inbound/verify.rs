//! Signature verification presets (stripe, standard-webhooks, github, shopify, hubspot, typeform, calendly,
//! slack, twilio, generic hmac, basic auth, static token). (Stub: the verification work fills this in.)

use http::HeaderMap;
use serde::Deserialize;
use std::time::SystemTime;

/// The `verify:` block of a source file, as written. Secrets are not resolved until `build`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub preset: String,
}

/// What a verifier sees of a request. `url` is the URL the sender signed (scheme://host/path?query).
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
