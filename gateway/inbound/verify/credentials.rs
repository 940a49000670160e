//! Presets for senders that cannot sign (Brevo, ActiveCampaign, Google Ads lead forms): HTTP basic
//! auth and a shared token in a header, a query parameter or a member of the JSON body. Comparisons
//! hash both sides first, so neither the content nor the length of the expected credential leaks
//! through timing.

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
    /// A top-level member of the JSON body (Google Ads lead forms' `google_key`). The stored body has
    /// its value replaced ([`redact_member`]), so the token is not kept where events are read.
    Field(String),
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
            TokenLocation::Field(name) => {
                // Google's member is named as it is; any other name is the operator's, and is not
                // echoed back to a sender.
                let shown = if name == GOOGLE_KEY {
                    GOOGLE_KEY
                } else {
                    "named by `field`"
                };
                let raw = body_member(req.body, name)?.ok_or(VerifyError::MissingField(shown))?;
                serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()).map_err(|_| {
                    VerifyError::Malformed {
                        field: format!("body field {shown}"),
                        problem: "not a string",
                    }
                })?
            }
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

/// The member Google Ads lead forms carry their key in, named in messages as it is.
const GOOGLE_KEY: &str = "google_key";

/// The top-level member `name` of a JSON object body, as written (borrowed from the body, so its place
/// is known), or `None` when the object has none. A body that is no JSON object, or names the member
/// twice (one copy checked, another read), is refused.
fn body_member<'b>(
    body: &'b [u8],
    name: &str,
) -> Result<Option<&'b serde_json::value::RawValue>, VerifyError> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Member<'n>(&'n str);
    impl<'de> Visitor<'de> for Member<'_> {
        type Value = Option<&'de serde_json::value::RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.0 {
                    if found.is_some() {
                        return Err(serde::de::Error::custom("member given twice"));
                    }
                    found = Some(map.next_value::<&'de serde_json::value::RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    impl<'de> DeserializeSeed<'de> for Member<'_> {
        type Value = Option<&'de serde_json::value::RawValue>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    Member(name)
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|_| VerifyError::Malformed {
            field: "body".to_owned(),
            problem: "not a JSON object naming the token's member once",
        })
}

/// The body with the value of its top-level member `name` replaced by `"[redacted]"`, the rest byte for
/// byte; `None` when the body has no such member (or is no JSON object).
pub(crate) fn redact_member(body: &[u8], name: &str) -> Option<Vec<u8>> {
    let raw = body_member(body, name).ok()??;
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + raw.get().len();
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(body.get(..start)?);
    out.extend_from_slice(br#""[redacted]""#);
    out.extend_from_slice(body.get(end..)?);
    Some(out)
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
    fn a_body_member_is_found_once_and_redacted_in_place() {
        let body = br#"{"lead_id": "L1", "google_key" : "s3cr\u0065t", "n": {"google_key": 1}}"#;
        let raw = body_member(body, "google_key")
            .ok()
            .flatten()
            .map(|r| r.get());
        assert_eq!(raw, Some(r#""s3cr\u0065t""#));
        assert_eq!(
            redact_member(body, "google_key").map(String::from_utf8),
            Some(Ok(
                r#"{"lead_id": "L1", "google_key" : "[redacted]", "n": {"google_key": 1}}"#
                    .to_owned()
            ))
        );
        // An escaped name is the same member.
        let escaped = br#"{"google\u005fkey": "k"}"#;
        assert!(body_member(escaped, "google_key").ok().flatten().is_some());
        assert!(matches!(
            body_member(br#"{"a": 1}"#, "google_key"),
            Ok(None)
        ));
        assert_eq!(redact_member(br#"{"a": 1}"#, "google_key"), None);
        for bad in [
            &br#"{"google_key": "a", "google_key": "b"}"#[..],
            br#"["google_key"]"#,
            br#"{"google_key": "a"} trailing"#,
            b"google_key=a",
        ] {
            assert_eq!(
                body_member(bad, "google_key").err().map(|e| e.reason()),
                Some("malformed"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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
