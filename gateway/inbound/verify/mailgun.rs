//! Mailgun: the signature travels in the JSON body, `{"signature": {"timestamp", "token",
//! "signature"}, "event-data": {...}}`, and is a hex HMAC-SHA256 of `timestamp + token` under the
//! domain's HTTP webhook signing key. It covers neither the body nor the event, only a random token,
//! so a signed block is bound to nothing but itself: the source must use each token once. The file
//! parser refuses a `mailgun` source whose dedup is not that token ([`SINGLE_USE_TOKEN`]), the receive
//! path takes only JSON for it and never falls back to the body's bytes as its id, a set of files may
//! have one such source only, and the dedup key is taken in the same round trip that stores the event:
//! a replayed block, whatever body it comes with, is a duplicate and is never delivered.
//!
//! An event of a subaccount also carries `parent-signature`, the same MAC under the primary account's
//! key; either signature may match, so a source may be given the parent's key and take every
//! subaccount's events.

use super::crypto::{Encoding, Key, Mac};
use super::error::VerifyError;
use super::mac::any_key_matches;
use super::request::{check_window, TimeUnit, Window};
use super::SignedRequest;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// The dedup id a `mailgun` source must use: the signed token, so that it is single-use.
pub(crate) const SINGLE_USE_TOKEN: &str = "$.signature.token";

/// Mailgun resends a failed delivery with its original signature block for 8 hours (10 min, 10 min,
/// 15 min, 30 min, 1 h, 2 h, 4 h), so a window shorter than that would refuse every retry after an
/// outage. Replays within it are refused by the token's single use, not by the window.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(9 * 3600);

/// The longest token accepted: Mailgun's are 50 characters; anything far longer is no token of its.
const MAX_TOKEN: usize = 256;

#[derive(Clone, Debug)]
pub(crate) struct Mailgun {
    pub keys: Vec<Key>,
    pub tolerance: Duration,
}

/// The deepest body the verifier reads: the cap of `limits.max_json_depth`, so that it never refuses a
/// body the source's own limit takes (that limit is applied afterwards, as for every source).
const MAX_DEPTH: usize = 128;

/// The body's `signature` object, read by the receive path's own reader (`payload::json_member`, which
/// reads as the whole parse does): the very reader the dedup id `$.signature.token` is read with, so the
/// token checked here is the token deduplicated on, whatever the body's shape (a member given twice, an
/// escaped name). Anything but an object is refused, an array in its place among them.
fn block(body: &[u8]) -> Result<serde_json::Map<String, Value>, VerifyError> {
    let read = crate::payload::json_member(body, &["signature"], MAX_DEPTH).map_err(|_| {
        VerifyError::Malformed {
            field: "body".to_owned(),
            problem: "not JSON (Mailgun's webhooks post JSON)",
        }
    })?;
    match read {
        Some(Value::Object(block)) => Ok(block),
        Some(_) => Err(malformed("signature", "not an object")),
        None => Err(missing("signature")),
    }
}

/// A member of the block that must be text, when present.
fn text<'b>(
    block: &'b serde_json::Map<String, Value>,
    name: &str,
    field: &'static str,
) -> Result<Option<&'b str>, VerifyError> {
    match block.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(field, "not a string")),
    }
}

fn missing(field: &'static str) -> VerifyError {
    VerifyError::MissingField(field)
}

fn malformed(field: &'static str, problem: &'static str) -> VerifyError {
    VerifyError::Malformed {
        field: format!("body field {field}"),
        problem,
    }
}

impl Mailgun {
    /// Check order: the block present and well formed, the timestamp within the window, then the MACs.
    pub(crate) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let block = block(req.body)?;
        // Documented as an int, sent as a string: either is taken, and the MAC is over its decimal text.
        let timestamp = match block.get("timestamp") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            Some(_) => {
                return Err(malformed(
                    "signature.timestamp",
                    "timestamp is not a unix time",
                ))
            }
            None => return Err(missing("signature.timestamp")),
        };
        let token =
            text(&block, "token", "signature.token")?.ok_or_else(|| missing("signature.token"))?;
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(malformed(
                "signature.token",
                "empty or longer than 256 bytes",
            ));
        }
        let signature = text(&block, "signature", "signature.signature")?
            .ok_or_else(|| missing("signature.signature"))?;
        let parent = text(&block, "parent-signature", "signature.parent-signature")?;
        let decode = |text: &str, field| {
            Encoding::Hex
                .decode(text)
                .ok_or_else(|| malformed(field, "not hex"))
        };
        let mut signatures = vec![decode(signature, "signature.signature")?];
        if let Some(parent) = parent {
            signatures.push(decode(parent, "signature.parent-signature")?);
        }
        check_window(
            &timestamp,
            TimeUnit::Seconds,
            now,
            (self.tolerance, Window::Both),
            "signature.timestamp",
        )
        .map_err(|e| match e {
            // The shared reader names a header; this one is a member of the body.
            VerifyError::Malformed { .. } => {
                malformed("signature.timestamp", "timestamp is not a unix time")
            }
            other => other,
        })?;
        let message = [timestamp.as_bytes(), token.as_bytes()];
        if any_key_matches(
            Mac::Hmac(super::crypto::Algorithm::Sha256),
            &self.keys,
            &message,
            &signatures,
        ) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
