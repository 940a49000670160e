//! Handshakes: requests a provider sends to prove that a URL is the receiver it was told of, or that its
//! certificate is good, before it sends events there. They are answered as the provider asks and never
//! stored: they are no events.

use super::verify::Preset;
use crate::error::Error;
use crate::payload::{self, BodyKind};
use serde_json::Value;

/// What a handshake is answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Slack's Events API: `{"challenge": ...}` with 200.
    SlackChallenge(String),
    /// Slack's check of a slash command's certificate (`ssl_check=1`): an empty 200.
    SlackSslCheck,
}

/// The handshake a verified request is, if any, for a source verified with `preset`.
///
/// Slack enables an Events API Request URL only once a `{"type": "url_verification", "challenge": ...}`
/// POST (signed like any event) is answered with its challenge; stored as an event, it would never be.
/// It also posts the form `ssl_check=1&token=...` (signed) to slash-command URLs to check their
/// certificate, and wants an empty 200: no command was run.
pub fn of(
    preset: Option<Preset>,
    kind: BodyKind,
    raw: &[u8],
    max_depth: usize,
) -> Result<Option<Handshake>, Error> {
    if preset != Some(Preset::Slack) {
        return Ok(None);
    }
    // Slack's requests are read a second time only when they could be a handshake: most are not.
    match kind {
        BodyKind::Json if memchr::memmem::find(raw, b"url_verification").is_some() => {
            url_verification(raw, max_depth)
        }
        BodyKind::Form(_) if memchr::memmem::find(raw, b"ssl_check").is_some() => {
            let check = form_urlencoded::parse(raw).any(|(k, v)| k == "ssl_check" && v == "1");
            Ok(check.then_some(Handshake::SlackSslCheck))
        }
        _ => Ok(None),
    }
}

fn url_verification(raw: &[u8], max_depth: usize) -> Result<Option<Handshake>, Error> {
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

    /// Slack's certificate check is a form with `ssl_check=1`; a slash command that mentions
    /// `ssl_check` in its text, or a JSON body, is not one.
    #[test]
    fn a_slack_ssl_check_form_is_a_handshake() {
        let form = BodyKind::Form(encoding_rs::UTF_8);
        let slack = Some(Preset::Slack);
        let check = b"token=gIkuvaNzQIHg97ATvDxqgjtO&ssl_check=1";
        assert_eq!(
            of(slack, form, check, 64).unwrap(),
            Some(Handshake::SlackSslCheck)
        );
        let command = b"token=t&command=%2Fweather&text=ssl_check%3D1&ssl_check=0";
        assert_eq!(of(slack, form, command, 64).unwrap(), None);
        assert_eq!(of(Some(Preset::Twilio), form, check, 64).unwrap(), None);
        let json = br#"{"ssl_check":"1"}"#;
        assert_eq!(of(slack, BodyKind::Json, json, 64).unwrap(), None);
    }
}
