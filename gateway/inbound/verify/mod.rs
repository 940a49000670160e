//! Signature verification presets (stripe, standard-webhooks, github, shopify, hubspot, typeform,
//! calendly, paddle, slack, zoom, sendgrid, mailgun, twilio, mandrill, woocommerce, webflow, square, segment,
//! sns, generic hmac, basic auth, static token).
//!
//! A source's `verify:` block ([`VerifySpec`]) is compiled once by [`VerifySpec::build`], which
//! resolves secrets and reports every configuration problem together; the resulting [`Verifier`]
//! checks each request against the raw body bytes, in constant time, with an injected clock.
//!
//! Layout: `crypto` (MACs, decoding, constant-time compare), `request` (headers, timestamps,
//! signed URL), `mac` (the engine for every MAC scheme), `presets` (each preset as data for that
//! engine), `twilio`, `mailgun` (signed in the body), `sns` (AWS's RSA signatures, with `sns_fetch`
//! for certificates and confirmations), `credentials` (basic, token), `build` (validating a spec),
//! `error`.
//!
//! ```yaml
//! verify: { preset: stripe, secret: "${env:STRIPE_WEBHOOK_SECRET}" }            # tolerance: 300s
//! verify: { preset: standard-webhooks, secrets: ["${file:/run/secrets/old}", "${file:/run/secrets/new}"] }
//! verify: { preset: standard-webhooks, public_key: "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" }  # v1a
//! verify: { preset: sendgrid, public_key: "${env:SENDGRID_WEBHOOK_PUBLIC_KEY}" }   # ECDSA P-256
//! verify: { preset: mailgun, secret: "${env:MAILGUN_WEBHOOK_SIGNING_KEY}" }  # with dedup: { id: $.signature.token }
//! verify: { preset: hubspot, version: v3, secret: "${env:HUBSPOT_CLIENT_SECRET}",
//!           public_url: "https://hooks.example.com/webhooks/hubspot" }          # behind a proxy
//! verify: { preset: twilio, secret: "${env:TWILIO_AUTH_TOKEN}", public_url: "https://hooks.example.com/webhooks/sms" }
//! verify: { preset: hmac, header: X-Signature, prefix: "sha256=", algorithm: sha256, encoding: hex,
//!           timestamp_header: X-Timestamp, signed_content: "{timestamp}.{body}", secret: "${env:S}" }
//! verify: { preset: basic, username: brevo, password: "${env:BREVO_HOOK_PASSWORD}" }
//! verify: { preset: token, header: Authorization, prefix: "Bearer ", secret: "${env:HOOK_TOKEN}" }
//! verify: { preset: token, field: google_key, secret: "${env:GOOGLE_ADS_LEAD_KEY}" }  # in the JSON body
//! verify: { preset: sns, topics: ["arn:aws:sns:*:123456789012:ses-events"] }   # Amazon SNS / SES
//! ```
//!
//! The caller passes the raw body bytes, the method as sent (`POST`) and the full URL as received
//! (`http://host/path?query`); schemes that sign the URL (twilio, hubspot v2/v3, square, hmac with `{url}`)
//! need `public_url` whenever a proxy changes the scheme, host, port or path the sender used.

mod build;
mod credentials;
mod crypto;
mod error;
mod mac;
mod mailgun;
mod presets;
mod request;
mod sns;
mod sns_fetch;
mod twilio;

#[cfg(test)]
mod tests;

pub use error::VerifyError;

use http::HeaderMap;
use serde::Deserialize;
use std::time::SystemTime;

/// The header WooCommerce signs its deliveries in, and never sends with its ping.
pub const WOOCOMMERCE_SIGNATURE: &str = "X-WC-Webhook-Signature";

/// Which scheme a source uses. (`Default` exists only so `VerifySpec { preset, ..Default::default() }`
/// reads well in code; YAML always names the preset.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Stripe,
    StandardWebhooks,
    Github,
    Shopify,
    Hubspot,
    Typeform,
    Calendly,
    /// Paddle Billing: `Paddle-Signature: ts=<ts>;h1=<hex>`, HMAC-SHA256 over `{ts}:{body}`.
    Paddle,
    Slack,
    /// Zoom: `x-zm-signature: v0=<hex>` over `v0:{timestamp}:{body}`; answers its URL validation.
    Zoom,
    /// SendGrid's signed Event Webhook: ECDSA P-256 over `timestamp + body`, checked with `public_key`.
    Sendgrid,
    /// Mailgun: hex HMAC-SHA256 of `timestamp + token`, both read from the JSON body's `signature`
    /// object; the source must dedup on the token, which the signature alone does not bind to the body.
    Mailgun,
    Twilio,
    /// Mailchimp Transactional (Mandrill): `X-Mandrill-Signature`, base64 HMAC-SHA1 of the webhook's URL
    /// exactly as entered followed by each form parameter's name and value, sorted by name (Twilio's
    /// scheme, without its port variants and JSON bodies).
    Mandrill,
    /// WooCommerce: `X-WC-Webhook-Signature`, base64 HMAC-SHA256 of the body; its unsigned ping, sent
    /// when a webhook is saved, is answered (`handshake::woocommerce_ping`).
    Woocommerce,
    /// Webflow: `x-webflow-signature`, hex HMAC-SHA256 over `{timestamp}:{body}`, the timestamp in
    /// milliseconds in `x-webflow-timestamp`; answered with the `200` Webflow wants.
    Webflow,
    /// Square: `x-square-hmacsha256-signature`, base64 HMAC-SHA256 over the notification URL followed
    /// by the body (`{url}{body}`); no timestamp, so replays are stopped by dedup on `$.event_id`.
    Square,
    /// Segment's Webhooks destinations (and Customer.io's, which signs alike): `X-Signature`, hex
    /// HMAC-SHA1 of the body, with no timestamp.
    Segment,
    /// Amazon SNS (Amazon SES events come through it): RSA signatures by AWS over each message's
    /// fields, checked with the certificate the message names on an SNS endpoint; only the `topics`
    /// listed are taken, and a subscription to one of them is confirmed.
    Sns,
    /// Generic HMAC: `header`, `prefix`, `algorithm`, `encoding`, `timestamp_header`, `id_header`,
    /// `signed_content`.
    #[default]
    Hmac,
    /// HTTP basic auth: `username`, `password` (a secret reference; `passwords: [..]` to rotate).
    Basic,
    /// A shared token in a header (`header`, optional `prefix` such as `Bearer `), a query parameter
    /// (`param`) or a top-level member of the JSON body (`field`).
    Token,
}

impl Preset {
    /// The `dedup` for a sender that retries each delivery with a stable id of the event, and why: a
    /// source of this preset without `dedup` gets a warning (`hookgate check`). The shipped mapping
    /// files use the same ones. Senders whose id means something else per topic (Webflow's item ids)
    /// or that send none (HubSpot's workflows, Calendly) are left out.
    pub fn suggested_dedup(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Preset::Stripe => ("dedup: { id: $.id }", "Stripe retries an event with the same id"),
            Preset::StandardWebhooks => (
                "dedup: { header: webhook-id }",
                "Standard Webhooks senders retry a message with the same webhook-id",
            ),
            Preset::Github => (
                "dedup: { header: X-GitHub-Delivery }",
                "GitHub redelivers with the same X-GitHub-Delivery",
            ),
            Preset::Shopify => (
                "dedup: { header: X-Shopify-Webhook-Id }",
                "Shopify retries a webhook with the same X-Shopify-Webhook-Id",
            ),
            Preset::Typeform => (
                "dedup: { id: $.event_id }",
                "Typeform retries a submission with the same event_id",
            ),
            Preset::Paddle => (
                "dedup: { id: $.event_id }",
                "Paddle retries an event with the same event_id",
            ),
            Preset::Square => (
                "dedup: { id: $.event_id }",
                "Square retries with the same event_id, and signs no time, so dedup is also what stops a replay",
            ),
            Preset::Segment => (
                "dedup: { id: $.messageId }",
                "Segment retries a call with the same messageId, and signs no time, so dedup is also what stops a replay",
            ),
            _ => return None,
        })
    }

    /// Whether the sender posts its JSON as `text/plain` (Amazon SNS), which is then read as JSON.
    pub fn posts_json_as_text(self) -> bool {
        self == Preset::Sns
    }

    /// The preset's name as written in YAML, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Stripe => "stripe",
            Preset::StandardWebhooks => "standard-webhooks",
            Preset::Github => "github",
            Preset::Shopify => "shopify",
            Preset::Hubspot => "hubspot",
            Preset::Typeform => "typeform",
            Preset::Calendly => "calendly",
            Preset::Paddle => "paddle",
            Preset::Slack => "slack",
            Preset::Zoom => "zoom",
            Preset::Sendgrid => "sendgrid",
            Preset::Mailgun => "mailgun",
            Preset::Twilio => "twilio",
            Preset::Mandrill => "mandrill",
            Preset::Woocommerce => "woocommerce",
            Preset::Webflow => "webflow",
            Preset::Square => "square",
            Preset::Segment => "segment",
            Preset::Sns => "sns",
            Preset::Hmac => "hmac",
            Preset::Basic => "basic",
            Preset::Token => "token",
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `verify:` block of a source file, as written. Secrets are `${env:NAME}` or `${file:/path}` references,
/// resolved only by `build`, so `hookgate check` needs no secrets. Options that do not apply to the preset
/// are reported by `build`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub preset: Preset,
    /// One secret reference.
    #[serde(default)]
    pub secret: Option<String>,
    /// Several secret references, all accepted (rotation).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The sender's public key, written as it is or as a `${env:}`/`${file:}` reference. Standard
    /// Webhooks: Ed25519 (`whpk_...`), which checks its asymmetric `v1a` signatures. SendGrid: its
    /// verification key (ECDSA P-256, base64 DER as SendGrid shows it, or PEM).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Several public keys, all accepted (rotation), beside or instead of `public_key`.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Replay window for schemes with a timestamp, e.g. `300s` (the default) or `5m`.
    #[serde(default)]
    pub tolerance: Option<String>,
    /// HubSpot signature version: `v1`, `v2` or `v3` (default v3).
    #[serde(default)]
    pub version: Option<String>,
    /// The public URL the sender signs (twilio, hubspot v2/v3, square), when hookgate sits behind a proxy that rewrites it.
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
    /// Generic hmac: header with a message id that is part of the signed content (`{id}`).
    #[serde(default)]
    pub id_header: Option<String>,
    /// Generic hmac: signed content template, e.g. `{timestamp}.{body}` (default `{body}`).
    /// Placeholders: `{body}`, `{timestamp}`, `{id}`, `{method}`, `{url}`.
    #[serde(default)]
    pub signed_content: Option<String>,
    /// Basic auth user name (plain text, or a secret reference).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password (a secret reference).
    #[serde(default)]
    pub password: Option<String>,
    /// Basic auth: several password references, all accepted (rotation), beside or instead of `password`.
    #[serde(default)]
    pub passwords: Vec<String>,
    /// Token: query parameter carrying the token (for senders that cannot set headers).
    #[serde(default)]
    pub param: Option<String>,
    /// Token: a top-level member of the JSON body carrying the token (Google Ads lead forms'
    /// `google_key`); its value is redacted from the stored body.
    #[serde(default)]
    pub field: Option<String>,
    /// SNS: the topic ARNs taken (`arn:aws:sns:<region>:<account>:<topic>`; region and topic may be `*`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// SNS: origins (`http://localhost.localstack.cloud:4566`) whose certificates and confirmation links
    /// are trusted instead of AWS's own (`https://sns.<region>.amazonaws.com`), for an emulator.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl VerifySpec {
    /// The files its secret references name (`${file:/path}`): a served set is reloaded when one of them
    /// changes (a rotated Kubernetes Secret), though no mapping file did.
    pub fn secret_files(&self) -> Vec<std::path::PathBuf> {
        let references = (self.secret.iter().chain(&self.secrets))
            .chain(self.public_key.iter().chain(&self.public_keys))
            .chain(self.username.iter().chain(&self.password))
            .chain(&self.passwords);
        references
            .filter_map(|r| match crate::secret::SecretRef::parse(r) {
                Ok(crate::secret::SecretRef::File(path)) => Some(path),
                _ => None,
            })
            .collect()
    }
}

impl VerifySpec {
    /// The dedup id a source with this verification must use, when its signature covers no body and is
    /// sound only if each signed value is used once (Mailgun's token).
    pub fn single_use_token(&self) -> Option<&'static str> {
        (self.preset == Preset::Mailgun).then_some(mailgun::SINGLE_USE_TOKEN)
    }

    /// The dedup id a source with this verification must use, and why, when a signed request stays
    /// valid for its whole window and only dedup stops its replay inside it: Mailgun's token (its
    /// signature covers no body) and SNS's `MessageId` (a captured message is resent, signature and
    /// all, for a day).
    pub fn required_dedup(&self) -> Option<(&'static str, &'static str)> {
        match self.preset {
            Preset::Mailgun => Some((
                mailgun::SINGLE_USE_TOKEN,
                "its signature covers the token, not the body, so each token may be used once",
            )),
            Preset::Sns => Some((
                sns::MESSAGE_ID,
                "a message stays signed for its whole window, so each message may be taken once",
            )),
            _ => None,
        }
    }

    /// The replay window as configured, or the preset's default (`None` when `tolerance` is invalid,
    /// which the verifier's own check reports).
    pub fn replay_window(&self) -> Option<std::time::Duration> {
        let mut problems = Vec::new();
        let window = self.tolerance(&mut problems);
        problems.is_empty().then_some(window)
    }
}

/// `body` with the value of its top-level member `name` replaced by `"[redacted]"` (the rest byte for
/// byte), for a source whose token is carried there; `None` when it has no such member.
pub fn redact_member(body: &[u8], name: &str) -> Option<Vec<u8>> {
    credentials::redact_member(body, name)
}

/// Whether a public key written in a source file may be shown in a diagnostic's excerpt: only when it is
/// one. Anything else may be a secret given by mistake.
pub fn public_key_may_be_shown(text: &str) -> bool {
    crypto::is_public_key(text)
}

/// What a verifier sees of a request. `url` is the URL as received (scheme://host/path?query).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A verifier with its secrets resolved. Its `Debug` output never shows key material.
#[derive(Clone, Debug)]
pub struct Verifier {
    preset: Preset,
    check: Check,
}

/// The compiled check behind a [`Verifier`].
#[derive(Clone, Debug)]
enum Check {
    Mac(mac::MacScheme),
    Twilio(twilio::Twilio),
    Mandrill(twilio::Mandrill),
    Mailgun(mailgun::Mailgun),
    Basic(credentials::Basic),
    Token(credentials::Token),
    Sns(sns::Sns),
}

impl Verifier {
    /// Check one request. `now` is injected so replay windows are testable with fixed vectors.
    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<(), VerifyError> {
        self.verify_key(req, now).map(|_| ())
    }

    /// As [`Verifier::verify`], telling which secret (by its place in the list, `secret` first) made a
    /// matching MAC, for the schemes that compute one (`None` otherwise).
    pub fn verify_key(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<Option<usize>, VerifyError> {
        match &self.check {
            Check::Mac(scheme) => scheme.verify_key(req, now),
            Check::Twilio(twilio) => twilio.verify(req).map(|()| None),
            Check::Mandrill(mandrill) => mandrill.verify(req).map(|()| None),
            Check::Mailgun(mailgun) => mailgun.verify(req, now).map(|()| None),
            Check::Basic(basic) => basic.verify(req).map(|()| None),
            Check::Token(token) => token.verify(req).map(|()| None),
            Check::Sns(sns) => sns.verify(req, now).map(|()| None),
        }
    }

    /// As [`Verifier::verify_key`], fetching what the check needs (SNS: the certificate the message
    /// names, unless cached) after every check that needs nothing fetched, so a request that fails them
    /// fetches nothing. A fetch that fails is [`VerifyError::CertUnavailable`].
    pub async fn verify_fetching(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<Option<usize>, VerifyError> {
        match &self.check {
            Check::Sns(sns) => sns.verify_fetching(req, now).await.map(|()| None),
            _ => self.verify_key(req, now),
        }
    }

    /// SNS: confirm the subscription of a verified `SubscriptionConfirmation` by fetching its
    /// `SubscribeURL`, checked again to be a `ConfirmSubscription` call on an endpoint this source
    /// trusts. The subscription's ARN when SNS tells it; otherwise why it failed, one line.
    pub async fn confirm_subscription(
        &self,
        subscribe_url: &str,
    ) -> Result<Option<String>, String> {
        match &self.check {
            Check::Sns(sns) => sns.confirm(subscribe_url).await,
            _ => Err(format!("preset {} confirms no subscription", self.preset)),
        }
    }

    /// Whether the sender posts JSON as `text/plain` (SNS), which is then read as JSON.
    pub fn text_is_json(&self) -> bool {
        self.preset.posts_json_as_text()
    }

    /// For a scheme that signs a form's decoded parameters rather than its bytes (twilio, mandrill),
    /// those parameters as they are signed: two bodies that give the same are the same signed request.
    pub fn signed_form_params(&self, body: &[u8]) -> Option<String> {
        match &self.check {
            Check::Twilio(_) | Check::Mandrill(_) => Some(twilio::sorted_params(body)),
            _ => None,
        }
    }

    /// Whether the sender signs forms only (Mandrill): another type would be checked as one thing and
    /// read as another, so it is refused.
    pub fn forms_only(&self) -> bool {
        matches!(self.check, Check::Mandrill(_))
    }

    /// The header that carries a shared credential (preset token), which must never be stored.
    pub fn credential_header(&self) -> Option<&str> {
        match &self.check {
            Check::Token(credentials::Token {
                location: credentials::TokenLocation::Header { name, .. },
                ..
            }) => Some(name),
            _ => None,
        }
    }

    /// The top-level member of the body that carries a shared credential (preset token with `field`),
    /// whose value is redacted before the body is stored.
    pub fn credential_field(&self) -> Option<&str> {
        match &self.check {
            Check::Token(credentials::Token {
                location: credentials::TokenLocation::Field(name),
                ..
            }) => Some(name),
            _ => None,
        }
    }

    /// Whether the check reads `SignedRequest::url`. The receive path builds the URL only then: most
    /// presets never look at it.
    pub fn needs_url(&self) -> bool {
        match &self.check {
            Check::Mac(scheme) => scheme.template.uses(&mac::Part::Url),
            Check::Twilio(_) | Check::Mandrill(_) => true,
            Check::Mailgun(_) | Check::Basic(_) | Check::Sns(_) => false,
            Check::Token(token) => matches!(token.location, credentials::TokenLocation::Param(_)),
        }
    }

    /// The MAC of `text` under secret `key` (as [`Verifier::verify_key`] names it), hex: Zoom's answer
    /// to its URL validation, given with the secret that signed the validation itself, the one Zoom
    /// checks the answer with.
    pub fn key_hex_mac(&self, key: usize, text: &str) -> Option<String> {
        match &self.check {
            Check::Mac(scheme) => {
                let key = scheme.keys.get(key)?;
                scheme
                    .mac
                    .compute_keyed(key, &[text.as_bytes()])
                    .map(hex::encode)
            }
            _ => None,
        }
    }

    /// The preset this verifier implements (for logs and metrics labels).
    pub fn preset(&self) -> Preset {
        self.preset
    }
}
