//! Handshakes: requests a provider sends to prove that a URL is the receiver it was told of, or that its
//! certificate is good, before it sends events there. They are answered as the provider asks and never
//! stored: they are no events.

use super::verify::Preset;
use crate::error::Error;
use crate::payload::{self, BodyKind};
use http::HeaderMap;
use serde_json::Value;

/// What a handshake is answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Slack's Events API: `{"challenge": ...}` with 200.
    SlackChallenge(String),
    /// Slack's check of a slash command's certificate (`ssl_check=1`): an empty 200.
    SlackSslCheck,
    /// Zoom's URL validation (`endpoint.url_validation`, when the URL is set and every 72 hours): 200
    /// with the `plainToken` and its HMAC under the source's secret, hex, as `encryptedToken`.
    ZoomUrlValidation(String),
    /// Amazon SNS's `SubscriptionConfirmation`: the subscription is confirmed by fetching its
    /// `SubscribeURL` (which verification found on an SNS endpoint), then an empty 200.
    SnsSubscribe {
        topic: String,
        subscribe_url: String,
    },
    /// Amazon SNS's `UnsubscribeConfirmation`: the endpoint was unsubscribed; an empty 200.
    SnsUnsubscribed { topic: String },
}

/// The most digits a WooCommerce webhook id is given (a 64-bit id has 20).
const MAX_WEBHOOK_ID_DIGITS: usize = 20;

/// Whether a request to a source verified with `preset` is WooCommerce's ping, answered before
/// verification since it carries no signature.
///
/// When a webhook is saved active, WooCommerce posts the form `webhook_id=<id>` to its URL, unsigned
/// (`WC_Webhook::deliver_ping`), and shows an error on the webhook's page, and pings again at the next
/// save, unless the answer is exactly `200`. Only that exact body, as a form and without the signature
/// header, is a ping: anything else is verified as an event. Answering it tells a sender that the
/// source exists and uses this preset, and nothing is stored.
pub fn woocommerce_ping(
    preset: Option<Preset>,
    kind: BodyKind,
    headers: &HeaderMap,
    raw: &[u8],
) -> bool {
    preset == Some(Preset::Woocommerce)
        && matches!(kind, BodyKind::Form(_))
        && !headers.contains_key(super::verify::WOOCOMMERCE_SIGNATURE)
        && raw.strip_prefix(b"webhook_id=").is_some_and(|id| {
            (1..=MAX_WEBHOOK_ID_DIGITS).contains(&id.len()) && id.iter().all(u8::is_ascii_digit)
        })
}

/// The longest `plainToken` answered. Zoom's are 22 characters of base64.
const MAX_PLAIN_TOKEN: usize = 64;

/// Whether `token` can be a Zoom `plainToken`: base64 or base64url text. Never a `:`, so the answer, a
/// MAC under the source's secret, can never be the signature of an event (`v0:{timestamp}:{body}`): a
/// holder of one secret (one being retired, say) cannot mint event signatures with it.
fn plain_token(token: &str) -> bool {
    (1..=MAX_PLAIN_TOKEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
}

/// The handshake a verified request is, if any, for a source verified with `preset`.
///
/// Slack enables an Events API Request URL only once a `{"type": "url_verification", "challenge": ...}`
/// POST (signed like any event) is answered with its challenge; stored as an event, it would never be.
/// It also posts the form `ssl_check=1&token=...` (signed) to slash-command URLs to check their
/// certificate, and wants an empty 200: no command was run.
///
/// Zoom validates the URL when it is set and every 72 hours with a signed `endpoint.url_validation` POST,
/// and sends no events to a URL that does not answer it (Zoom's own library, @zoom/rivet, checks the
/// signature before it answers, as hookgate does).
///
/// Amazon SNS sends nothing to an HTTP(S) subscription until it is confirmed: a signed
/// `SubscriptionConfirmation` whose `SubscribeURL` the receiver fetches. Only topics the source takes
/// get this far (verification refuses the others), so confirming is what its operator asked for by
/// subscribing the URL. SNS also tells of an unsubscription; both are answered, never stored.
pub fn of(
    preset: Option<Preset>,
    kind: BodyKind,
    raw: &[u8],
    max_depth: usize,
) -> Result<Option<Handshake>, Error> {
    match preset {
        Some(Preset::Slack) => slack(kind, raw, max_depth),
        // A body that spells the name with JSON escapes is stored as an event instead: only a holder
        // of the secret can send one, and Zoom does not.
        Some(Preset::Zoom)
            if kind == BodyKind::Json
                && memchr::memmem::find(raw, b"endpoint.url_validation").is_some() =>
        {
            zoom_url_validation(raw, max_depth)
        }
        // Its `Type` is read as the verifier read it (JSON escapes and all): no byte search first, which
        // an escaped name would pass by; next to the RSA check it costs little.
        Some(Preset::Sns) if kind == BodyKind::Json => sns(raw, max_depth),
        _ => Ok(None),
    }
}

fn sns(raw: &[u8], max_depth: usize) -> Result<Option<Handshake>, Error> {
    let text = |name: &str| -> Result<String, Error> {
        match payload::json_member(raw, &[name], max_depth)? {
            Some(Value::String(s)) => Ok(s),
            _ => Ok(String::new()),
        }
    };
    Ok(match text("Type")?.as_str() {
        "SubscriptionConfirmation" => Some(Handshake::SnsSubscribe {
            topic: text("TopicArn")?,
            subscribe_url: text("SubscribeURL")?,
        }),
        "UnsubscribeConfirmation" => Some(Handshake::SnsUnsubscribed {
            topic: text("TopicArn")?,
        }),
        _ => None,
    })
}

fn zoom_url_validation(raw: &[u8], max_depth: usize) -> Result<Option<Handshake>, Error> {
    let event = payload::json_member(raw, &["event"], max_depth)?;
    if event.as_ref().and_then(Value::as_str) != Some("endpoint.url_validation") {
        return Ok(None);
    }
    match payload::json_member(raw, &["payload", "plainToken"], max_depth)? {
        Some(Value::String(t)) if plain_token(&t) => Ok(Some(Handshake::ZoomUrlValidation(t))),
        _ => Err(Error::Malformed(format!(
            "Zoom endpoint.url_validation without a `payload.plainToken` of 1 to {MAX_PLAIN_TOKEN} base64 characters"
        ))),
    }
}

/// Slack's requests are read a second time only when they could be a handshake: most are not.
fn slack(kind: BodyKind, raw: &[u8], max_depth: usize) -> Result<Option<Handshake>, Error> {
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

    /// Zoom's URL validation is an `endpoint.url_validation` event with a `plainToken`; an event that
    /// mentions it elsewhere is none, and one without its token cannot be answered.
    #[test]
    fn a_zoom_url_validation_is_a_handshake() {
        let zoom = Some(Preset::Zoom);
        let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
        assert_eq!(
            of(zoom, BodyKind::Json, body, 64).unwrap(),
            Some(Handshake::ZoomUrlValidation(
                "qgg8vlvZRS6UYooatFL8Aw".into()
            ))
        );
        assert_eq!(
            of(Some(Preset::Slack), BodyKind::Json, body, 64).unwrap(),
            None
        );
        let event = br#"{"event":"meeting.started","payload":{"note":"endpoint.url_validation"}}"#;
        assert_eq!(of(zoom, BodyKind::Json, event, 64).unwrap(), None);
        let long = format!(
            r#"{{"event":"endpoint.url_validation","payload":{{"plainToken":"{}"}}}}"#,
            "a".repeat(MAX_PLAIN_TOKEN + 1)
        );
        for bad in [
            &br#"{"event":"endpoint.url_validation","payload":{}}"#[..],
            br#"{"event":"endpoint.url_validation","payload":{"plainToken":""}}"#,
            br#"{"event":"endpoint.url_validation","payload":{"plainToken":7}}"#,
            // What an event's signature covers: answering it would sign that event.
            br#"{"event":"endpoint.url_validation","payload":{"plainToken":"v0:1:{}"}}"#,
            long.as_bytes(),
        ] {
            assert!(
                matches!(of(zoom, BodyKind::Json, bad, 64), Err(Error::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// WooCommerce's ping is the unsigned form `webhook_id=<digits>` to a `woocommerce` source; a
    /// signed one, another body or type, or another preset's source, is verified as any request.
    #[test]
    fn a_woocommerce_ping_is_the_unsigned_webhook_id_form() {
        let form = BodyKind::Form(encoding_rs::UTF_8);
        let woo = Some(Preset::Woocommerce);
        let none = HeaderMap::new();
        let mut signed = HeaderMap::new();
        signed.insert("X-WC-Webhook-Signature", "c2ln".parse().unwrap());
        assert!(woocommerce_ping(woo, form, &none, b"webhook_id=12"));
        assert!(woocommerce_ping(
            woo,
            form,
            &none,
            b"webhook_id=18446744073709551615"
        ));
        assert!(!woocommerce_ping(woo, form, &signed, b"webhook_id=12"));
        assert!(!woocommerce_ping(
            Some(Preset::Shopify),
            form,
            &none,
            b"webhook_id=12"
        ));
        assert!(!woocommerce_ping(None, form, &none, b"webhook_id=12"));
        assert!(!woocommerce_ping(
            woo,
            BodyKind::Json,
            &none,
            b"webhook_id=12"
        ));
        for other in [
            &b"webhook_id="[..],
            b"webhook_id=12&email=a%40b.c",
            b"webhook_id=1x",
            b"webhook_id=-1",
            b"webhook_id=+1",
            b"webhook_id=12\n",
            b"webhook_id=123456789012345678901",
            b"webhook%5Fid=12",
            b"id=12",
            b"",
        ] {
            assert!(
                !woocommerce_ping(woo, form, &none, other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
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
