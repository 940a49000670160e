//! Every MAC preset as data for the shared engine in `mac.rs`: which headers, which content, which
//! MAC and encoding, how the key is derived from the secret. The generic `hmac` preset builds the
//! same data from the spec's options.

use super::build::{header_name, Problems, Secrets};
use super::crypto::{base64_decode, Algorithm, Encoding, Key, KeyKind, Mac};
use super::mac::{Carrier, MacScheme, Part, Template, TimestampSource, UrlForm};
use super::request::{KeyValueFormat, TimeUnit, Window, TS_H1, T_V1};
use super::{Preset, VerifySpec};
use crate::secret::Secret;

/// How key bytes are derived from a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyForm {
    /// The secret's UTF-8 bytes (Stripe uses the whole `whsec_...` string).
    Utf8,
    /// Standard Webhooks: base64 of the part after `whsec_`.
    WhsecBase64,
}

/// A scheme before keys, tolerance and public URL are attached.
struct Shape {
    mac: Mac,
    encoding: Encoding,
    carrier: Carrier,
    timestamp: Option<TimestampSource>,
    window: Window,
    id_header: Option<String>,
    template: Template,
    url_form: UrlForm,
    key_form: KeyForm,
}

fn header(name: &str, prefix: &str) -> Carrier {
    Carrier::Header {
        names: vec![name.to_owned()],
        prefix: prefix.to_owned(),
    }
}

/// A preset's template. Only called with the constants below (never with input), and every preset
/// is built by the unit tests, so a typo fails there rather than in production.
fn template(text: &'static str) -> Template {
    #[allow(clippy::expect_used)]
    Template::parse(text).expect("preset templates are valid")
}

const HMAC_SHA256: Mac = Mac::Hmac(Algorithm::Sha256);

/// Compile a MAC preset (everything except twilio, mandrill, mailgun, sns, basic and token).
pub(crate) fn mac_scheme(
    spec: &VerifySpec,
    mode: Secrets,
    problems: &mut Problems,
) -> Option<MacScheme> {
    let shape = match spec.preset {
        Preset::Stripe => Some(t_v1("Stripe-Signature")),
        Preset::Calendly => Some(t_v1("Calendly-Webhook-Signature")),
        // Paddle's own SDK refuses a request 5 s old: Paddle signs each attempt when it sends it.
        Preset::Paddle => Some(key_value(
            "Paddle-Signature",
            TS_H1,
            "{timestamp}:{body}",
            Window::Both,
        )),
        Preset::StandardWebhooks => Some(Shape {
            mac: HMAC_SHA256,
            encoding: Encoding::Base64,
            carrier: Carrier::VersionedList {
                name: "webhook-signature".to_owned(),
                version: "v1",
                asymmetric: Some("v1a"),
            },
            timestamp: Some(TimestampSource::Header(
                "webhook-timestamp".to_owned(),
                TimeUnit::Seconds,
            )),
            window: Window::Both,
            id_header: Some("webhook-id".to_owned()),
            template: template("{id}.{timestamp}.{body}"),
            url_form: UrlForm::AsReceived,
            key_form: KeyForm::WhsecBase64,
        }),
        Preset::Github => Some(body_only(
            header("X-Hub-Signature-256", "sha256="),
            Encoding::Hex,
        )),
        Preset::Shopify => Some(body_only(
            Carrier::Header {
                names: vec![
                    "X-Shopify-Hmac-Sha256".to_owned(),
                    "shopify-hmac-sha256".to_owned(),
                ],
                prefix: String::new(),
            },
            Encoding::Base64,
        )),
        Preset::Typeform => Some(body_only(
            header("Typeform-Signature", "sha256="),
            Encoding::Base64,
        )),
        // The secret as the webhook's admin page shows it: WooCommerce signs with the stored secret's
        // HTML character references decoded (`&amp;` as `&`), which the page shows decoded (README).
        Preset::Woocommerce => Some(body_only(
            header(super::WOOCOMMERCE_SIGNATURE, ""),
            Encoding::Base64,
        )),
        Preset::Webflow => Some(Shape {
            timestamp: Some(TimestampSource::Header(
                "x-webflow-timestamp".to_owned(),
                TimeUnit::Millis,
            )),
            template: template("{timestamp}:{body}"),
            ..body_only(header("x-webflow-signature", ""), Encoding::Hex)
        }),
        // Square signs the notification URL as registered, then the body: behind a proxy that changes
        // the scheme, host or path, `public_url` gives the registered one.
        Preset::Square => Some(Shape {
            template: template("{url}{body}"),
            ..body_only(
                header("x-square-hmacsha256-signature", ""),
                Encoding::Base64,
            )
        }),
        Preset::Segment => Some(Shape {
            mac: Mac::Hmac(Algorithm::Sha1),
            ..body_only(header("X-Signature", ""), Encoding::Hex)
        }),
        Preset::Slack => Some(v0_timestamp(
            "X-Slack-Signature",
            "X-Slack-Request-Timestamp",
        )),
        Preset::Zoom => Some(v0_timestamp("x-zm-signature", "x-zm-request-timestamp")),
        Preset::Sendgrid => Some(Shape {
            carrier: Carrier::PublicKeySignature {
                name: "X-Twilio-Email-Event-Webhook-Signature".to_owned(),
            },
            timestamp: Some(TimestampSource::Header(
                "X-Twilio-Email-Event-Webhook-Timestamp".to_owned(),
                TimeUnit::Seconds,
            )),
            // SendGrid documents no window: the one every other timestamped scheme has.
            window: Window::Both,
            id_header: None,
            template: template("{timestamp}{body}"),
            url_form: UrlForm::AsReceived,
            // No MAC: the scheme has public keys only (`mac` and `key_form` are never used).
            mac: HMAC_SHA256,
            encoding: Encoding::Base64,
            key_form: KeyForm::Utf8,
        }),
        Preset::Hubspot => hubspot(spec, problems),
        Preset::Hmac => generic(spec, problems),
        Preset::Twilio
        | Preset::Mandrill
        | Preset::Mailgun
        | Preset::Sns
        | Preset::Basic
        | Preset::Token => None,
    };
    let has_timestamp = shape.as_ref().is_some_and(|s| s.timestamp.is_some());
    let tolerance = spec.tolerance(problems);
    // Only for a preset that may take `tolerance` (hubspot v3, hmac with a timestamp header): one that
    // never signs a timestamp has it reported once, as an option it does not take.
    let may_take_tolerance = spec.preset.options().contains(&"tolerance");
    if spec.tolerance.is_some() && shape.is_some() && !has_timestamp && may_take_tolerance {
        problems.push(format!(
            "`tolerance` applies to preset {} only with a signed timestamp",
            spec.preset
        ));
    }
    let public_url = spec.public_url(problems);
    let (secrets, public_keys) = match spec.preset {
        Preset::StandardWebhooks => spec.standard_webhooks_keys(mode, problems),
        // Public keys only: SendGrid signs with a private key of its own, and shares no secret.
        Preset::Sendgrid => (
            Vec::new(),
            spec.public_keys_needed(KeyKind::EcdsaP256, mode, problems),
        ),
        _ => (spec.secrets(mode, problems), Vec::new()),
    };
    let shape = shape?;
    if public_url.is_some() && !shape.template.uses(&Part::Url) {
        problems.push(format!(
            "`public_url` applies to preset {} only when the URL is signed",
            spec.preset
        ));
    }
    let keys = match shape.key_form {
        KeyForm::Utf8 => utf8_keys(secrets),
        KeyForm::WhsecBase64 => whsec_keys(secrets, problems),
    };
    Some(MacScheme {
        mac: shape.mac,
        encoding: shape.encoding,
        carrier: shape.carrier,
        timestamp: shape.timestamp,
        id_header: shape.id_header,
        template: shape.template,
        url_form: shape.url_form,
        public_url,
        tolerance,
        window: shape.window,
        keys,
        public_keys,
    })
}

/// Stripe and Calendly: `t=<ts>,v1=<hex>` over `<t>.<body>`.
fn t_v1(name: &str) -> Shape {
    key_value(name, T_V1, "{timestamp}.{body}", Window::TooOldOnly)
}

/// A timestamp and hex HMAC-SHA256 signatures as `key=value` entries of one header, the MAC over
/// `signed` (which names the timestamp: it is what the window trusts).
fn key_value(name: &str, format: KeyValueFormat, signed: &'static str, window: Window) -> Shape {
    Shape {
        carrier: Carrier::KeyValue {
            name: name.to_owned(),
            format,
        },
        timestamp: Some(TimestampSource::Carrier(TimeUnit::Seconds)),
        window,
        template: template(signed),
        ..body_only(header(name, ""), Encoding::Hex)
    }
}

/// Slack and Zoom: `v0=<hex>` in one header, HMAC-SHA256 over `v0:{timestamp}:{body}` with the
/// timestamp in another, 300 s both ways.
fn v0_timestamp(signature: &str, timestamp: &str) -> Shape {
    Shape {
        timestamp: Some(TimestampSource::Header(
            timestamp.to_owned(),
            TimeUnit::Seconds,
        )),
        template: template("v0:{timestamp}:{body}"),
        ..body_only(header(signature, "v0="), Encoding::Hex)
    }
}

/// HMAC-SHA256 of the body alone, signature in one header.
fn body_only(carrier: Carrier, encoding: Encoding) -> Shape {
    Shape {
        mac: HMAC_SHA256,
        encoding,
        carrier,
        timestamp: None,
        window: Window::Both,
        id_header: None,
        template: template("{body}"),
        url_form: UrlForm::AsReceived,
        key_form: KeyForm::Utf8,
    }
}

/// HubSpot v1 and v2 are plain SHA-256 of `secret + content` (hex); v3 is an HMAC (base64) with a
/// millisecond timestamp.
fn hubspot(spec: &VerifySpec, problems: &mut Problems) -> Option<Shape> {
    let legacy = |content: &'static str| Shape {
        mac: Mac::KeyPrefixedSha256,
        template: template(content),
        ..body_only(header("X-HubSpot-Signature", ""), Encoding::Hex)
    };
    match spec.version.as_deref().map(str::trim).unwrap_or("v3") {
        "v1" => Some(legacy("{body}")),
        "v2" => Some(legacy("{method}{url}{body}")),
        "v3" => Some(Shape {
            timestamp: Some(TimestampSource::Header(
                "X-HubSpot-Request-Timestamp".to_owned(),
                TimeUnit::Millis,
            )),
            template: template("{method}{url}{body}{timestamp}"),
            url_form: UrlForm::HubspotV3,
            ..body_only(header("X-HubSpot-Signature-v3", ""), Encoding::Base64)
        }),
        _ => {
            problems.push("version: must be v1, v2 or v3".to_owned());
            None
        }
    }
}

/// The generic `hmac` preset from its options.
fn generic(spec: &VerifySpec, problems: &mut Problems) -> Option<Shape> {
    let signature_header = match &spec.header {
        Some(h) => header_name("header", h, problems),
        None => {
            problems.push("preset hmac needs `header`".to_owned());
            None
        }
    };
    let algorithm = match spec.algorithm.as_deref() {
        None => Some(Algorithm::Sha256),
        Some(a) => Algorithm::parse(a.trim()).or_else(|| {
            problems.push("algorithm: must be sha1, sha256 or sha512".to_owned());
            None
        }),
    };
    let encoding = match spec.encoding.as_deref() {
        None => Some(Encoding::Hex),
        Some(e) => Encoding::parse(e.trim()).or_else(|| {
            problems.push("encoding: must be hex or base64".to_owned());
            None
        }),
    };
    let timestamp_header = spec
        .timestamp_header
        .as_deref()
        .and_then(|h| header_name("timestamp_header", h, problems));
    let id_header = spec
        .id_header
        .as_deref()
        .and_then(|h| header_name("id_header", h, problems));
    let template = match &spec.signed_content {
        None if spec.timestamp_header.is_some() || spec.id_header.is_some() => {
            problems.push(
                "preset hmac needs `signed_content` when `timestamp_header` or `id_header` is set"
                    .to_owned(),
            );
            None
        }
        None => Some(template("{body}")),
        Some(text) => Template::parse(text).map_err(|e| problems.push(e)).ok(),
    };
    if let Some(t) = &template {
        check_placeholders(spec, t, problems);
    }
    Some(Shape {
        mac: Mac::Hmac(algorithm?),
        encoding: encoding?,
        carrier: Carrier::Header {
            names: vec![signature_header?],
            prefix: spec.prefix.clone().unwrap_or_default(),
        },
        timestamp: timestamp_header.map(|h| TimestampSource::Header(h, TimeUnit::Seconds)),
        window: Window::Both,
        id_header,
        template: template?,
        url_form: UrlForm::AsReceived,
        key_form: KeyForm::Utf8,
    })
}

/// The body must be signed (otherwise anyone could replace it), and a timestamp or id header is
/// useful only when signed, so each header and its placeholder must come together.
fn check_placeholders(spec: &VerifySpec, template: &Template, problems: &mut Problems) {
    if !template.uses(&Part::Body) {
        problems.push("signed_content: must include {body}".to_owned());
    }
    for (part, option, set) in [
        (
            Part::Timestamp,
            "timestamp_header",
            spec.timestamp_header.is_some(),
        ),
        (Part::Id, "id_header", spec.id_header.is_some()),
    ] {
        let name = match part {
            Part::Timestamp => "{timestamp}",
            _ => "{id}",
        };
        match (template.uses(&part), set) {
            (true, false) => problems.push(format!("signed_content: {name} needs `{option}`")),
            (false, true) => problems.push(format!(
                "signed_content: must include {name} when `{option}` is set"
            )),
            _ => {}
        }
    }
}

/// Keys that are the secret's bytes as written.
pub(crate) fn utf8_keys(secrets: Vec<(String, Secret)>) -> Vec<Key> {
    secrets
        .into_iter()
        .map(|(_, s)| Key::new(s.expose().as_bytes().to_vec()))
        .collect()
}

/// Standard Webhooks keys: `whsec_` (optional) followed by base64.
fn whsec_keys(secrets: Vec<(String, Secret)>, problems: &mut Problems) -> Vec<Key> {
    let mut keys = Vec::new();
    for (field, secret) in secrets {
        let text = secret.expose();
        if text.trim_start().starts_with("whpk_") {
            // A public key as an HMAC key would let anyone who has it sign.
            problems.push(format!(
                "{field}: this is a public key (whpk_), which goes in `public_key` or `public_keys`"
            ));
            continue;
        }
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        match base64_decode(encoded).filter(|k| !k.is_empty()) {
            Some(bytes) => keys.push(Key::new(bytes)),
            None => problems.push(format!(
                "{field}: not a Standard Webhooks secret (expected whsec_ followed by base64)"
            )),
        }
    }
    keys
}
