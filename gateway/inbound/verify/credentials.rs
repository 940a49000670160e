//! Presets for senders that cannot sign (Brevo, ActiveCampaign): HTTP basic auth and a shared
//! token in a header or query parameter. Comparisons hash both sides first, so neither the
//! content nor the length of the expected credential leaks through timing.

use super::crypto::{base64_decode, ct_eq_secret};
use super::error::VerifyError;
use super::request::{header, query_param};
use super::SignedRequest;
use crate::secret::Secret;

const AUTHORIZATION: &str = "Authorization";

#[derive(Clone)]
pub(crate) struct Basic {
    /// Not secret on its own, but compared like one so timing does not reveal it either, and kept out
    /// of `Debug` (it may come from a secret reference).
    pub username: String,
    /// Accepted passwords: more than one during a rotation.
    pub passwords: Vec<Secret>,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Basic")
            .field("username", &"<redacted>")
            .field("passwords", &self.passwords)
            .finish()
    }
}

impl Basic {
    pub(crate) fn verify(&self, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
        let value = header(req.headers, AUTHORIZATION)?;
        let encoded = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim())
            .ok_or_else(|| VerifyError::malformed_header(AUTHORIZATION, "not Basic credentials"))?;
        let decoded = base64_decode(encoded).ok_or_else(|| {
            VerifyError::malformed_header(AUTHORIZATION, "credentials are not base64")
        })?;
        let split = decoded.iter().position(|&b| b == b':').ok_or_else(|| {
            VerifyError::malformed_header(AUTHORIZATION, "credentials without `:`")
        })?;
        let (user, password) = (&decoded[..split], &decoded[split + 1..]);
        // Evaluate every comparison (no short-circuit) so timing does not reveal which part failed.
        let user_ok = ct_eq_secret(user, self.username.as_bytes());
        let mut password_ok = false;
        for expected in &self.passwords {
            password_ok |= ct_eq_secret(password, expected.expose().as_bytes());
        }
        if user_ok & password_ok {
            Ok(())
        } else {
            Err(VerifyError::BadCredentials)
        }
    }
}

/// Where the token is carried.
#[derive(Clone, Debug)]
pub(crate) enum TokenLocation {
    /// A header, optionally after a prefix such as `Bearer ` (matched case-insensitively, as
    /// HTTP auth schemes are).
    Header { name: String, prefix: String },
    /// A query parameter, for senders that can only configure a URL.
    Param(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub location: TokenLocation,
    pub tokens: Vec<Secret>,
}

impl Token {
    pub(crate) fn verify(&self, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
        let received: std::borrow::Cow<'_, str> = match &self.location {
            TokenLocation::Header { name, prefix } => {
                let value = header(req.headers, name)?;
                let token = strip_prefix_ignore_case(value, prefix).ok_or_else(|| {
                    VerifyError::malformed_header(name, "missing the configured prefix")
                })?;
                token.trim().into()
            }
            TokenLocation::Param(param) => query_param(req.url, param)?
                .ok_or_else(|| VerifyError::MissingParam(param.clone()))?,
        };
        let mut ok = false;
        for expected in &self.tokens {
            ok |= ct_eq_secret(received.as_bytes(), expected.expose().as_bytes());
        }
        if ok {
            Ok(())
        } else {
            Err(VerifyError::BadCredentials)
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_case_insensitive() {
        assert_eq!(
            strip_prefix_ignore_case("bearer abc", "Bearer "),
            Some("abc")
        );
        assert_eq!(strip_prefix_ignore_case("Token abc", "Bearer "), None);
        assert_eq!(strip_prefix_ignore_case("abc", ""), Some("abc"));
        assert_eq!(strip_prefix_ignore_case("ab", "Bearer "), None);
        assert_eq!(strip_prefix_ignore_case("é", "x"), None);
    }
}
