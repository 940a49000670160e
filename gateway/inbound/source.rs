//! The head of a source file: how a source is received (verification, IP allowlist, dedup, body limit).
//! The mapping module parses the whole file and hands this part over; inbound compiles it.

use bytesize::ByteSize;
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::verify::VerifySpec;

/// The keys of a source file that belong to the head. The file parser accepts exactly these plus the
/// mapping's own keys (`rules`, `lookups`, `tests`), with these types.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// `source:` the name served at `POST /webhooks/{source}`.
    pub name: Spanned<String>,
    /// `verify:` signature or token check; required unless `allow_ips` is set.
    pub verify: Option<VerifySpec>,
    /// `allow_ips:` CIDRs (v4 and v6) the sender may post from; empty means any address.
    pub allow_ips: Vec<IpNet>,
    /// `dedup:` where the sender's event id is, and for how long redeliveries are dropped.
    pub dedup: Option<DedupSpec>,
    /// `max_body:` body size limit for this source, e.g. `2MiB`; the gateway default (1 MiB) otherwise.
    pub max_body: Option<ByteSize>,
    /// `response:` what a stored event (or a redelivery) is answered with, for senders that read it;
    /// compiled and checked where the file is parsed.
    pub response: Option<Answer>,
    /// `handshake:` a check of the URL the provider makes before it sends events there.
    pub handshake: Option<HandshakeSpec>,
    /// `parse_json:` members whose text is JSON (Mandrill's `mandrill_events`), parsed in place for
    /// validation, dedup and the mapping; compiled where the file is parsed.
    pub parse_json: Vec<JsonPath>,
    /// Where `verify:` and each of its options are written, for the problems found when its secrets are
    /// resolved at serve time.
    pub verify_places: OptionPlaces,
}

/// Where a section's key and each of its options' keys are written: `(line, column, width)`.
#[derive(Clone, Debug, Default)]
pub struct OptionPlaces {
    pub section: (u32, u32, u32),
    pub options: Vec<(String, (u32, u32, u32))>,
}

impl OptionPlaces {
    /// Where a problem is: at the option it starts with (`secret: ...`, `secrets[1]: ...`, or quoted, as
    /// in ``"`secret` does not apply to ..."``), else at the section's key.
    pub fn of(&self, problem: &str) -> (u32, u32, u32) {
        self.options
            .iter()
            .find(|(name, _)| {
                let (text, ends) = match problem.strip_prefix('`') {
                    Some(quoted) => (quoted, &['`'][..]),
                    None => (problem, &[':', '['][..]),
                };
                text.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(ends))
            })
            .map_or(self.section, |(_, at)| *at)
    }
}

/// `handshake:` how a provider checks the URL before it sends events there (Slack's, read from signed
/// POSTs, needs no setting: its preset implies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeSpec {
    /// A GET of the URL, as Mailchimp sends when a webhook is saved (it saves none that fails): answered
    /// `200` with an empty body once the allowlist passes; nothing is read or stored (HEAD alike).
    Get,
}

/// `dedup: { id: $.id, ttl: 72h }`, `dedup: { header: X-GitHub-Delivery }` or `dedup: { body: true }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSpec {
    /// A JSONPath into the body.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// A request header.
    #[serde(default)]
    pub header: Option<String>,
    /// The exact body: for senders whose events carry no id (Mailchimp, Brevo, ActiveCampaign, Mailjet,
    /// Twilio, Cal.com, ...) or whose batches carry several (SendGrid, Mailjet's grouped events), a request sent again is
    /// stored once.
    #[serde(default)]
    pub body: Option<bool>,
    /// How long an id is remembered; default 72h.
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
}

impl DedupSpec {
    /// How long an id is remembered: `ttl`, or 72 h when it is not set.
    pub fn window(&self) -> Result<Duration, String> {
        self.ttl
            .as_ref()
            .map_or(Ok(DEFAULT_DEDUP_TTL), |t| dedup_ttl(&t.value))
    }
}

/// `response: { status: 200, content_type: text/xml, body: "<Response/>" }`: the answer a sender gets
/// once its event is stored, or for a redelivery, instead of hookgate's JSON. For senders that read the
/// answer: Twilio parses it as TwiML, and logs an error (12300) for JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// A 2xx status; default 202.
    #[serde(default)]
    pub status: Option<u16>,
    /// The body's media type; required with a body.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The body, as text; default empty.
    #[serde(default)]
    pub body: Option<String>,
}

/// The longest `response.body`: an acknowledgement, not a document.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

impl ResponseSpec {
    /// The answer, or every problem as (the key it is at, the message). The one reading for `serve`
    /// and `hookgate check`.
    pub fn compile(&self) -> Result<Answer, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let status = match self.status {
            None => Some(http::StatusCode::ACCEPTED),
            Some(s) => match http::StatusCode::from_u16(s) {
                Ok(s) if s.is_success() => Some(s),
                _ => {
                    problems.push((
                        "status",
                        format!("response.status: {s} is not a 2xx status (a sender retries anything else; refusals keep hookgate's own answers)"),
                    ));
                    None
                }
            },
        };
        let content_type = self.content_type.as_deref().and_then(|t| {
            let valid = t.parse::<mime::Mime>().is_ok() && t.trim() == t;
            match http::HeaderValue::from_str(t) {
                Ok(v) if valid => Some(v),
                _ => {
                    problems.push((
                        "content_type",
                        format!("response.content_type: `{}` is not a media type (e.g. text/xml, application/json)", crate::error::one_line(t)),
                    ));
                    None
                }
            }
        });
        let body = self.body.clone().unwrap_or_default();
        if body.len() > MAX_RESPONSE_BODY {
            problems.push((
                "body",
                format!(
                    "response.body: {} bytes, at most {MAX_RESPONSE_BODY}",
                    body.len()
                ),
            ));
        }
        if !body.is_empty() && self.content_type.is_none() {
            problems.push((
                "body",
                "response.body: give its `content_type` too".to_owned(),
            ));
        }
        match (status, problems.is_empty()) {
            (Some(status), true) => Ok(Answer {
                status,
                content_type,
                body: bytes::Bytes::from(body),
            }),
            _ => Err(problems),
        }
    }
}

/// What a stored event (or a redelivery) of a source is answered with, when not hookgate's JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: http::StatusCode,
    pub content_type: Option<http::HeaderValue>,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The `mailgun`, `paddle` and `webflow` presets' answer when the file sets none. Mailgun documents
    /// `200` as the answer that ends its retries (and `406` as a refusal); any other status, a `202`
    /// among them, it may resend. Paddle asks for a `200` within five seconds. Webflow counts any other
    /// status than `200` as a failure, retries, and deactivates a webhook that keeps failing.
    fn empty_ok() -> Self {
        Answer {
            status: http::StatusCode::OK,
            content_type: None,
            body: bytes::Bytes::new(),
        }
    }

    /// The `twilio` preset's answer when the file sets none: Twilio reads the answer to a message or
    /// call webhook as TwiML. An empty `<Response>` sends no reply to a message and ends a call.
    fn empty_twiml() -> Self {
        Answer {
            status: http::StatusCode::OK,
            content_type: Some(http::HeaderValue::from_static("text/xml")),
            body: bytes::Bytes::from_static(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
            ),
        }
    }
}

use crate::ip_policy::IpAllowlist;
use crate::jsonpath::JsonPath;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::verify::{Preset, Verifier};

/// How long a sender's event id is remembered when the file does not say.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(72 * 3600);
/// The longest dedup window a source may keep: a year is far beyond any sender's retries, and a bound
/// keeps the key's expiry within what Redis accepts (an overflowing `PX` fails the SET at run time).
pub const MAX_DEDUP_TTL: Duration = Duration::from_secs(366 * 86_400);

/// A dedup window as written in a source file: a duration above 0 and at most [`MAX_DEDUP_TTL`]. The
/// one reading for `serve` and `hookgate check`.
pub fn dedup_ttl(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Err(e) => Err(format!("dedup.ttl: `{text}` is not a duration: {e}")),
        Ok(t) if t.is_zero() || t > MAX_DEDUP_TTL => {
            Err("dedup.ttl: must be above 0 and at most 366 days".to_owned())
        }
        Ok(t) => Ok(t),
    }
}

/// Where a source's event id comes from.
#[derive(Debug)]
pub enum DedupKey {
    Path(JsonPath),
    Header(http::HeaderName),
    /// The SHA-256 of the exact body.
    Body,
}

/// A head problem, at a place in the file (line 0: the place is the `source:` key).
#[derive(Debug, Clone)]
pub struct HeadProblem {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// A source ready to receive: secrets resolved, paths compiled.
#[derive(Debug)]
pub struct InboundSource {
    pub name: String,
    pub verifier: Option<Verifier>,
    pub allow: IpAllowlist,
    pub dedup: Option<(DedupKey, Duration)>,
    /// The dedup id comes from a header the signature does not cover, so it is bound to the body.
    pub dedup_binds_body: bool,
    pub max_body: Option<u64>,
    /// The answer to a stored event or a redelivery, when not hookgate's JSON (`response:`, or the
    /// preset's own: twilio's empty TwiML, mailgun's, paddle's and webflow's empty `200`).
    pub answer: Option<Answer>,
    /// Headers that carry a credential and are never stored.
    pub secret_headers: Vec<http::HeaderName>,
    /// The top-level member of the JSON body that carries a credential (token preset's `field`): its
    /// value is replaced before the body is stored.
    pub secret_field: Option<String>,
    /// `handshake: get`: a GET (or HEAD) of the URL is answered, after the allowlist.
    pub answers_get: bool,
    /// Members whose text is JSON, parsed in place wherever the body is read (`payload::parse_with`).
    pub parse_json: Vec<JsonPath>,
    /// The signature covers a token, not the body (Mailgun): only JSON bodies are taken, and an event
    /// without its token is refused rather than deduplicated by its bytes.
    pub single_use_token: bool,
    /// The signature covers form parameters only (Mandrill): other types are refused.
    pub form_only: bool,
    /// The sender posts JSON as `text/plain` (SNS): such a body is read as JSON.
    pub text_is_json: bool,
    pub metrics: super::metrics::SourceMetrics,
}

/// Headers that are credentials whatever the source.
const ALWAYS_SECRET: &[&str] = &["authorization", "proxy-authorization", "cookie"];

impl InboundSource {
    /// Compile a parsed head for serving: secrets are resolved here (`hookgate check` never calls this).
    pub fn build(spec: &SourceSpec) -> Result<Self, Vec<HeadProblem>> {
        let mut problems = Vec::new();
        let at = |loc: &serde_saphyr::Location, message: String| HeadProblem {
            line: loc.line() as u32,
            column: loc.column() as u32,
            message,
        };
        // The file parser already checked names, that a source authenticates somehow, and the dedup
        // spelling (so `hookgate check` reports them); here the head is compiled and secrets resolved.
        let name = spec.name.value.clone();
        let verifier = match spec.verify.as_ref().map(|v| v.build()) {
            Some(Ok(v)) => Some(v),
            Some(Err(errs)) => {
                problems.extend(errs.into_iter().map(|m| {
                    let (line, column, _) = spec.verify_places.of(&m);
                    HeadProblem {
                        line,
                        column,
                        message: format!("verify: {m}"),
                    }
                }));
                None
            }
            None => None,
        };
        let mut secret_headers: Vec<http::HeaderName> = ALWAYS_SECRET
            .iter()
            .map(|h| http::HeaderName::from_static(h))
            .collect();
        // The name as the verifier reads it (trimmed, validated), so the header it checks is the one kept
        // out of storage.
        if let Some(h) = verifier
            .as_ref()
            .and_then(|v| v.credential_header())
            .and_then(|h| http::HeaderName::try_from(h).ok())
        {
            secret_headers.push(h);
        }
        let dedup = spec.dedup.as_ref().and_then(|d| {
            let key = match (&d.id, &d.header, d.body == Some(true)) {
                (None, None, true) => Some(DedupKey::Body),
                (Some(p), None, false) => match JsonPath::compile(&p.value) {
                    Ok(path) => Some(DedupKey::Path(path)),
                    Err(e) => {
                        problems.push(at(&p.referenced, format!("dedup.id: {}", e.message)));
                        None
                    }
                },
                (None, Some(h), false) => match http::HeaderName::try_from(h.as_str()) {
                    Ok(h) => Some(DedupKey::Header(h)),
                    Err(_) => {
                        problems.push(at(
                            &spec.name.referenced,
                            format!("dedup.header: `{h}` is not a header name"),
                        ));
                        None
                    }
                },
                _ => {
                    problems.push(at(
                        &spec.name.referenced,
                        "dedup: give exactly one of `id` (a JSONPath), `header` or `body: true`"
                            .into(),
                    ));
                    None
                }
            };
            let ttl = d.window().unwrap_or_else(|message| {
                let place = d
                    .ttl
                    .as_ref()
                    .map_or(&spec.name.referenced, |t| &t.referenced);
                problems.push(at(place, message));
                DEFAULT_DEDUP_TTL
            });
            key.map(|k| (k, ttl))
        });
        // `max_body` and `response` are checked where the file is parsed (`mapping::file`), at their own
        // locations; every spec built here came through that parse.
        let answer = match (&spec.response, verifier.as_ref().map(Verifier::preset)) {
            (Some(own), _) => Some(own.clone()),
            (None, Some(Preset::Twilio)) => Some(Answer::empty_twiml()),
            (None, Some(Preset::Mailgun | Preset::Paddle | Preset::Webflow)) => {
                Some(Answer::empty_ok())
            }
            (None, _) => None,
        };
        // Checked where the file is parsed too (`hookgate check`); repeated here, where it is enforced.
        if let Some((token, _)) = spec.verify.as_ref().and_then(|v| v.required_dedup()) {
            let on_token =
                matches!(&dedup, Some((DedupKey::Path(p), _)) if p.names_same_member(token));
            if !on_token {
                problems.push(at(
                    &spec.name.referenced,
                    format!("verify: this preset needs `dedup: {{ id: {token} }}`"),
                ));
            }
        }
        let single_use_token = spec
            .verify
            .as_ref()
            .is_some_and(|v| v.single_use_token().is_some());
        let secret_field = verifier
            .as_ref()
            .and_then(|v| v.credential_field())
            .map(str::to_owned);
        let form_only = verifier.as_ref().is_some_and(Verifier::forms_only);
        let text_is_json = verifier.as_ref().is_some_and(Verifier::text_is_json);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            name,
            verifier,
            allow: IpAllowlist::new(&spec.allow_ips),
            dedup_binds_body: matches!(&dedup, Some((DedupKey::Header(h), _)) if !signed_header(spec, h)),
            dedup,
            max_body: spec.max_body.map(|b| b.as_u64()),
            answer,
            secret_headers,
            secret_field,
            answers_get: spec.handshake == Some(HandshakeSpec::Get),
            parse_json: spec.parse_json.clone(),
            single_use_token,
            form_only,
            text_is_json,
            metrics: Default::default(),
        })
    }
}

/// The sources being served, swapped whole on reload so a request sees one consistent set.
#[derive(Default)]
pub struct SourceRegistry(ArcSwap<HashMap<String, Arc<InboundSource>>>);

impl SourceRegistry {
    pub fn get(&self, name: &str) -> Option<Arc<InboundSource>> {
        self.0.load().get(name).cloned()
    }

    /// Serve `sources` from now on; each one's request metrics exist from this moment.
    pub fn replace(&self, sources: HashMap<String, Arc<InboundSource>>) {
        for (name, src) in &sources {
            src.metrics.register(name);
        }
        self.0.store(Arc::new(sources));
    }

    pub fn len(&self) -> usize {
        self.0.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the source's signature covers header `h` (only Standard Webhooks signs its `webhook-id`).
fn signed_header(spec: &SourceSpec, h: &http::HeaderName) -> bool {
    spec.verify
        .as_ref()
        .is_some_and(|v| v.preset == Preset::StandardWebhooks)
        && h.as_str() == "webhook-id"
}
