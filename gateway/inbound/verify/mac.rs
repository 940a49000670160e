//! The signature engine shared by every MAC-based preset (stripe, standard-webhooks, github,
//! shopify, hubspot, typeform, calendly, paddle, slack, zoom, woocommerce, webflow, square, segment), the generic `hmac`
//! preset, and the public-key signatures of standard-webhooks (`v1a`) and sendgrid.
//!
//! A scheme is data: where the signatures come from ([`Carrier`]), where the timestamp and id come
//! from, what content is signed ([`Template`]), which MAC and which encoding. Presets differ only
//! in that data (see `presets.rs`), so the checking code below is written, and reviewed, once.
//! Standard Webhooks' asymmetric signatures (`v1a`, Ed25519) share everything but the last step with
//! its MAC (`v1`), and SendGrid's (ECDSA P-256) everything but the MAC, so they are checked here too,
//! against the scheme's public keys.

use super::crypto::{ct_eq, Encoding, Key, KeyKind, Mac, PublicKey};
use super::error::VerifyError;
use super::request::{
    self, check_window, header, parse_key_value, KeyValueFormat, TimeUnit, Window,
};
use super::SignedRequest;
use std::time::{Duration, SystemTime};

/// The most public-key signatures one request may carry: a sender rotating its key sends two.
pub(crate) const MAX_ASYMMETRIC_SIGNATURES: usize = 4;

/// One piece of the signed content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Text(String),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
}

/// The signed content, e.g. `{timestamp}.{body}`: literal text and placeholders concatenated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template(Vec<Part>);

impl Template {
    /// Parse `{body}`, `{timestamp}`, `{id}`, `{method}`, `{url}` and literal text.
    /// Errors are one line and name the offending placeholder.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if rest[..open].contains('}') {
                return Err("signed_content: `}` without `{`".to_owned());
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "signed_content: unclosed `{`".to_owned())?;
            parts.push(match &after[..close] {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "id" => Part::Id,
                "method" => Part::Method,
                "url" => Part::Url,
                other => {
                    return Err(format!(
                        "signed_content: unknown placeholder `{{{other}}}`; use {{body}}, {{timestamp}}, {{id}}, {{method}} or {{url}}"
                    ))
                }
            });
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err("signed_content: `}` without `{`".to_owned());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    pub(crate) fn uses(&self, part: &Part) -> bool {
        self.0.contains(part)
    }

    /// The signed content's pieces in order, borrowed from the request: the MAC is fed piece by piece,
    /// so the body is never copied.
    fn pieces<'v>(&'v self, values: &Values<'v>, url: &'v str) -> Vec<&'v [u8]> {
        self.0
            .iter()
            .map(|part| match part {
                Part::Text(t) => t.as_bytes(),
                Part::Body => values.body,
                Part::Timestamp => values.timestamp.as_bytes(),
                Part::Id => values.id.as_bytes(),
                Part::Method => values.method.as_bytes(),
                Part::Url => url.as_bytes(),
            })
            .collect()
    }
}

/// The request values a template can refer to.
struct Values<'a> {
    body: &'a [u8],
    timestamp: &'a str,
    id: &'a str,
    method: &'a str,
}

/// Where the signatures (and, for `t=` headers, the timestamp) are carried.
#[derive(Clone, Debug)]
pub(crate) enum Carrier {
    /// One signature in the first present of `names`, after `prefix` (`sha256=`, `v0=`, or empty).
    Header { names: Vec<String>, prefix: String },
    /// `t=<ts>,v1=<sig>[,v1=<sig>...]`: timestamp and signatures in one header (Stripe, Calendly), or
    /// another [`KeyValueFormat`] (Paddle's `ts=<ts>;h1=<sig>`).
    KeyValue {
        name: String,
        format: KeyValueFormat,
    },
    /// Space-separated `v1,<sig>` entries; unknown versions are ignored (Standard Webhooks).
    /// `asymmetric` names the entries that carry public-key signatures (`v1a`).
    VersionedList {
        name: String,
        version: &'static str,
        asymmetric: Option<&'static str>,
    },
    /// One public-key signature, base64, the whole value of a header (SendGrid).
    PublicKeySignature { name: String },
}

/// Where the signed timestamp comes from, when the scheme has one.
#[derive(Clone, Debug)]
pub(crate) enum TimestampSource {
    /// The timestamp entry of a [`Carrier::KeyValue`] header (`t=`, `ts=`).
    Carrier(TimeUnit),
    Header(String, TimeUnit),
}

/// Which URL strings the sender may have signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlForm {
    AsReceived,
    /// HubSpot v3 signs the URI with `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B` decoded
    /// (HubSpot's documented rule); the URL as received is also tried, since the official client
    /// libraries sign whatever URI they are given.
    HubspotV3,
}

/// A compiled MAC scheme with its keys.
#[derive(Clone, Debug)]
pub(crate) struct MacScheme {
    pub mac: Mac,
    pub encoding: Encoding,
    pub carrier: Carrier,
    pub timestamp: Option<TimestampSource>,
    pub id_header: Option<String>,
    pub template: Template,
    pub url_form: UrlForm,
    pub public_url: Option<String>,
    pub tolerance: Duration,
    pub window: Window,
    /// All accepted keys (rotation): a request is genuine when any key produces any signature.
    pub keys: Vec<Key>,
    /// The sender's public keys (Standard Webhooks, SendGrid), all of one kind; a request is also
    /// genuine when any of them verifies any asymmetric signature. Empty for every other scheme.
    pub public_keys: Vec<PublicKey>,
}

/// Signatures and timestamp as read from the carrier, still encoded.
struct Received<'a> {
    signatures: Vec<&'a str>,
    /// Public-key signatures (Standard Webhooks `v1a`, SendGrid's).
    asymmetric: Vec<&'a str>,
    timestamp: Option<&'a str>,
    field: &'a str,
}

impl Carrier {
    fn read<'h>(&'h self, req: &SignedRequest<'h>) -> Result<Received<'h>, VerifyError> {
        match self {
            Carrier::Header { names, prefix } => {
                let (name, value) = first_present(req, names)?;
                let sig = value.strip_prefix(prefix.as_str()).ok_or_else(|| {
                    VerifyError::malformed_header(name, "missing the signature prefix")
                })?;
                Ok(Received {
                    signatures: vec![sig],
                    asymmetric: Vec::new(),
                    timestamp: None,
                    field: name,
                })
            }
            Carrier::KeyValue { name, format } => {
                let parsed = parse_key_value(header(req.headers, name)?, format, name)?;
                Ok(Received {
                    signatures: parsed.signatures,
                    asymmetric: Vec::new(),
                    timestamp: Some(parsed.timestamp),
                    field: name,
                })
            }
            Carrier::VersionedList {
                name,
                version,
                asymmetric,
            } => {
                let value = header(req.headers, name)?;
                let entries = || {
                    value
                        .split_whitespace()
                        .filter_map(|entry| entry.split_once(','))
                };
                let of = |wanted: &str| -> Vec<&'h str> {
                    entries()
                        .filter(|(v, _)| *v == wanted)
                        .map(|(_, sig)| sig)
                        .collect()
                };
                Ok(Received {
                    signatures: of(version),
                    asymmetric: asymmetric.map(of).unwrap_or_default(),
                    timestamp: None,
                    field: name,
                })
            }
            Carrier::PublicKeySignature { name } => Ok(Received {
                signatures: Vec::new(),
                asymmetric: vec![header(req.headers, name)?],
                timestamp: None,
                field: name,
            }),
        }
    }
}

/// The first of `names` present on the request (Shopify renamed its header; both are accepted).
fn first_present<'h>(
    req: &SignedRequest<'h>,
    names: &'h [String],
) -> Result<(&'h str, &'h str), VerifyError> {
    for name in names {
        if let Some(value) = request::optional_header(req.headers, name)? {
            return Ok((name, value));
        }
    }
    Err(VerifyError::MissingHeader(
        names.first().cloned().unwrap_or_default(),
    ))
}

impl MacScheme {
    /// Check order: signature header present and parseable, timestamp fresh, then the MACs.
    /// Freshness first keeps replayed requests cheap to refuse.
    /// Also tells which of [`MacScheme::keys`] made the matching MAC (`None`: a public key verified it);
    /// Zoom's URL validation is answered with that key.
    pub(crate) fn verify_key(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<Option<usize>, VerifyError> {
        let received = self.carrier.read(req)?;
        // Only the kinds of signature this source has keys for count: a source given public keys alone
        // does not take a `v1` entry as a signature, nor one given secrets alone a `v1a`.
        let macs: &[&str] = if self.keys.is_empty() {
            &[]
        } else {
            &received.signatures
        };
        let asymmetric: &[&str] = if self.public_keys.is_empty() {
            &[]
        } else {
            &received.asymmetric
        };
        if macs.is_empty() && asymmetric.is_empty() {
            return Err(VerifyError::malformed_header(
                received.field,
                "no signature with the expected version",
            ));
        }
        // An HMAC is computed once per key and compared with every entry, but each public-key
        // signature hashes the whole body again: bounded, or one request's header would cost seconds.
        if asymmetric.len() > MAX_ASYMMETRIC_SIGNATURES {
            return Err(VerifyError::malformed_header(
                received.field,
                "more than 4 v1a signatures",
            ));
        }
        let timestamp = match &self.timestamp {
            None => "",
            Some(source) => {
                let (raw, unit, field) = match source {
                    TimestampSource::Carrier(unit) => {
                        (received.timestamp.unwrap_or(""), *unit, received.field)
                    }
                    TimestampSource::Header(name, unit) => {
                        (header(req.headers, name)?, *unit, name.as_str())
                    }
                };
                check_window(raw, unit, now, (self.tolerance, self.window), field)?;
                raw
            }
        };
        let id = match &self.id_header {
            Some(name) => header(req.headers, name)?,
            None => "",
        };
        let signatures: Vec<Vec<u8>> = macs
            .iter()
            .filter_map(|s| self.encoding.decode(s))
            .collect();
        let asymmetric_entries = asymmetric.len();
        // Every key of a scheme is of one kind; without keys, `asymmetric` is empty.
        let kind = self
            .public_keys
            .first()
            .map_or(KeyKind::Ed25519, PublicKey::kind);
        let asymmetric: Vec<Vec<u8>> = asymmetric
            .iter()
            .filter_map(|s| Encoding::Base64.decode(s))
            .filter(|s| kind.signature_fits(s.len()))
            .collect();
        if signatures.is_empty() && asymmetric.is_empty() {
            let why = match self.encoding {
                Encoding::Hex => "signature is not hex",
                Encoding::Base64 if asymmetric_entries == 0 => "signature is not base64",
                Encoding::Base64 if macs.is_empty() => kind.not_decoded(),
                // Signed both ways: only Standard Webhooks has MACs and public keys.
                Encoding::Base64 => "no signature decodes (v1: base64; v1a: base64 of 64 bytes)",
            };
            return Err(VerifyError::malformed_header(received.field, why));
        }
        let values = Values {
            body: req.body,
            timestamp,
            id,
            method: req.method,
        };
        let signed_url = request::signed_url(req.url, self.public_url.as_deref());
        for url in url_candidates(&signed_url, self.url_form, self.template.uses(&Part::Url)) {
            let message = self.template.pieces(&values, &url);
            if let Some(key) = matching_key(self.mac, &self.keys, &message, &signatures) {
                return Ok(Some(key));
            }
            if any_public_key_verifies(&self.public_keys, &message, &asymmetric) {
                return Ok(None);
            }
        }
        Err(VerifyError::Mismatch)
    }
}

/// True when any key's MAC of `message` (its pieces concatenated) equals any received signature
/// (constant-time compares).
pub(crate) fn any_key_matches(
    mac: Mac,
    keys: &[Key],
    message: &[&[u8]],
    signatures: &[Vec<u8>],
) -> bool {
    matching_key(mac, keys, message, signatures).is_some()
}

/// The first key whose MAC of `message` equals a received signature. Every key and signature is
/// compared (in constant time), whichever matches, so the time taken tells nothing of which did.
fn matching_key(
    mac: Mac,
    keys: &[Key],
    message: &[&[u8]],
    signatures: &[Vec<u8>],
) -> Option<usize> {
    let mut found = None;
    for (i, key) in keys.iter().enumerate() {
        if let Some(expected) = mac.compute_keyed(key, message) {
            let mut matched = false;
            for sig in signatures {
                matched |= ct_eq(&expected, sig);
            }
            if matched && found.is_none() {
                found = Some(i);
            }
        }
    }
    found
}

/// True when any public key verifies any received signature of `message`, prepared once for them all
/// (every key of a scheme is of one kind). Nothing secret is compared, so this need not run in
/// constant time.
fn any_public_key_verifies(keys: &[PublicKey], message: &[&[u8]], signatures: &[Vec<u8>]) -> bool {
    let Some(first) = keys.first() else {
        return false;
    };
    if signatures.is_empty() {
        return false;
    }
    let content = first.kind().prepare(message);
    keys.iter()
        .any(|key| signatures.iter().any(|sig| key.verifies(&content, sig)))
}

fn url_candidates(url: &str, form: UrlForm, used: bool) -> Vec<String> {
    if !used {
        return vec![String::new()];
    }
    match form {
        UrlForm::AsReceived => vec![url.to_owned()],
        UrlForm::HubspotV3 => {
            let decoded = hubspot_decode(url);
            if decoded == url {
                vec![decoded]
            } else {
                vec![decoded, url.to_owned()]
            }
        }
    }
}

/// Decode the percent-escapes HubSpot v3 decodes before signing; leave every other escape alone.
pub(crate) fn hubspot_decode(url: &str) -> String {
    const DECODED: &[u8] = b":/?@!$'()*,;";
    let bytes = url.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if DECODED.contains(&b) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII escapes were replaced by ASCII bytes, so the result is still valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parsing() {
        assert_eq!(
            Template::parse("v0:{timestamp}:{body}"),
            Ok(Template(vec![
                Part::Text("v0:".into()),
                Part::Timestamp,
                Part::Text(":".into()),
                Part::Body
            ]))
        );
        assert_eq!(
            Template::parse("{method}{url}{body}{timestamp}").map(|t| t.0.len()),
            Ok(4)
        );
        assert!(Template::parse("{bogus}").is_err());
        assert!(Template::parse("{body").is_err());
        assert!(Template::parse("body}").is_err());
        assert!(
            Template::parse("a}{body}").is_err(),
            "a stray `}}` before a placeholder too"
        );
        assert!(Template::parse("{body}}").is_err());
    }

    #[test]
    fn hubspot_decoding_touches_only_listed_escapes() {
        assert_eq!(
            hubspot_decode("https://h/p%3Fa%3Ab?x=%2F%2f%20%25%40"),
            "https://h/p?a:b?x=//%20%25@"
        );
        assert_eq!(hubspot_decode("https://h/%3"), "https://h/%3");
        assert_eq!(hubspot_decode("%"), "%");
        assert_eq!(hubspot_decode("%é3A"), "%é3A");
    }
}
