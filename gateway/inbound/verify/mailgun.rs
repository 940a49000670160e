//! Mailgun: the signature travels in the JSON body, `{"signature": {"timestamp", "token",
//! "signature"}, "event-data": {...}}`, and is a hex HMAC-SHA256 of `timestamp + token` under the
//! domain's HTTP webhook signing key. It covers neither the body nor the event, only a random token,
//! so a signed block is bound to nothing but itself: the source must use each token once. The file
//! parser refuses a `mailgun` source whose dedup is not that token ([`SINGLE_USE_TOKEN`]), and the
//! dedup key is taken in the same round trip that stores the event, so a replayed block, whatever
//! body it comes with, is a duplicate and is never stored.
//!
//! An event of a subaccount also carries `parent-signature`, the same MAC under the primary account's
//! key; either signature may match, so a source may be given the parent's key and take every
//! subaccount's events.

use super::crypto::{Encoding, Key, Mac};
use super::error::VerifyError;
use super::mac::any_key_matches;
use super::request::{check_window, TimeUnit, Window};
use super::SignedRequest;
use serde::Deserialize;
use std::borrow::Cow;
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

/// The body as far as verification reads it; every other member is skipped (still checked to be JSON).
/// A member given twice is refused by serde, so the block checked is the one the dedup id is read from.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    signature: Option<Block<'a>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow)]
    timestamp: Option<Stamp<'a>>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "parent-signature")]
    parent_signature: Option<Cow<'a, str>>,
}

/// Mailgun documents the timestamp as an int and sends it as a string; either is taken, and the MAC is
/// over its decimal text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stamp<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(u64),
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
        let envelope: Envelope<'_> =
            serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed {
                field: "body".to_owned(),
                problem: "not a JSON object with a signature object (Mailgun's webhooks post JSON)",
            })?;
        let block = envelope.signature.ok_or_else(|| missing("signature"))?;
        let timestamp = match block
            .timestamp
            .ok_or_else(|| missing("signature.timestamp"))?
        {
            Stamp::Text(text) => text,
            Stamp::Number(n) => Cow::Owned(n.to_string()),
        };
        let token = block.token.ok_or_else(|| missing("signature.token"))?;
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(malformed(
                "signature.token",
                "empty or longer than 256 bytes",
            ));
        }
        let signatures: Vec<Vec<u8>> = [block.signature, block.parent_signature]
            .into_iter()
            .flatten()
            .map(|s| {
                Encoding::Hex
                    .decode(&s)
                    .ok_or_else(|| malformed("signature.signature", "not hex"))
            })
            .collect::<Result<_, _>>()?;
        if signatures.is_empty() {
            return Err(missing("signature.signature"));
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
