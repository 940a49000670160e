//! Handshakes: requests a provider sends to prove that a URL is the receiver it was told of, before it
//! sends events there. They are answered as the provider asks and never stored: they are no events.

use super::verify::Preset;
use crate::error::Error;
use crate::payload::{self, BodyKind};
use serde_json::Value;

/// What a handshake is answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Slack's Events API: `{"challenge": ...}` with 200.
    SlackChallenge(String),
}

/// The handshake a verified request is, if any, for a source verified with `preset`.
///
/// Slack enables an Events API Request URL only once a `{"type": "url_verification", "challenge": ...}`
/// POST (signed like any event) is answered with its challenge; stored as an event, it would never be.
pub fn of(
    preset: Option<Preset>,
    kind: BodyKind,
    raw: &[u8],
    max_depth: usize,
) -> Result<Option<Handshake>, Error> {
    // Slack's events are read a second time only when they could be the handshake: most are not.
    const TYPE: &[u8] = b"url_verification";
    if preset != Some(Preset::Slack)
        || kind != BodyKind::Json
        || memchr::memmem::find(raw, TYPE).is_none()
    {
        return Ok(None);
    }
    let kind = payload::json_member(raw, &["type"], max_depth)?;
    if kind.as_ref().and_then(Value::as_str) != Some("url_verification") {
        return Ok(None);
    }
    match payload::json_member(raw, &["challenge"], max_depth)? {
        Some(Value::String(c)) => Ok(Some(Handshake::SlackChallenge(c))),
        _ => Err(Error::Malformed(
            "Slack url_verification without a `challenge` string".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slack_url_verification_is_a_handshake() {
        let body = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(
            of(Some(Preset::Slack), BodyKind::Json, body, 64).unwrap(),
            Some(Handshake::SlackChallenge(
                "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
            ))
        );
        // Another preset, or an event of Slack's, is no handshake.
        assert_eq!(
            of(Some(Preset::Stripe), BodyKind::Json, body, 64).unwrap(),
            None
        );
        assert_eq!(of(None, BodyKind::Json, body, 64).unwrap(), None);
        let event = br#"{"type":"event_callback","event":{"type":"url_verification"}}"#;
        assert_eq!(
            of(Some(Preset::Slack), BodyKind::Json, event, 64).unwrap(),
            None
        );
        // A handshake without its challenge cannot be answered.
        assert!(matches!(
            of(
                Some(Preset::Slack),
                BodyKind::Json,
                br#"{"type":"url_verification"}"#,
                64
            ),
            Err(Error::Malformed(_))
        ));
    }
}
