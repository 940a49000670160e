//! The signature engine shared by every MAC-based preset (stripe, standard-webhooks, github,
//! shopify, hubspot, typeform, calendly, slack) and the generic `hmac` preset.
//!
//! A scheme is data: where the signatures come from ([`Carrier`]), where the timestamp and id come
//! from, what content is signed ([`Template`]), which MAC and which encoding. Presets differ only
//! in that data (see `presets.rs`), so the checking code below is written, and reviewed, once.

use super::crypto::{ct_eq, Encoding, Key, Mac};
use super::error::VerifyError;
use super::request::{self, check_window, header, parse_key_value, TimeUnit, Window};
use super::SignedRequest;
use std::time::{Duration, SystemTime};

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
    /// `t=<ts>,v1=<sig>[,v1=<sig>...]`: timestamp and signatures in one header (Stripe, Calendly).
    KeyValue { name: String, version: &'static str },
    /// Space-separated `v1,<sig>` entries; unknown versions are ignored (Standard Webhooks).
    VersionedList { name: String, version: &'static str },
}

/// Where the signed timestamp comes from, when the scheme has one.
#[derive(Clone, Debug)]
pub(crate) enum TimestampSource {
    /// The `t=` entry of a [`Carrier::KeyValue`] header.
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
}

/// Signatures and timestamp as read from the carrier, still encoded.
struct Received<'a> {
    signatures: Vec<&'a str>,
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
                    timestamp: None,
                    field: name,
                })
            }
            Carrier::KeyValue { name, version } => {
                let parsed = parse_key_value(header(req.headers, name)?, version, name)?;
                Ok(Received {
                    signatures: parsed.signatures,
                    timestamp: Some(parsed.timestamp),
                    field: name,
                })
            }
            Carrier::VersionedList { name, version } => {
                let value = header(req.headers, name)?;
                let signatures: Vec<&str> = value
                    .split_whitespace()
                    .filter_map(|entry| entry.split_once(','))
                    .filter(|(v, _)| v == version)
                    .map(|(_, sig)| sig)
                    .collect();
                if signatures.is_empty() {
                    return Err(VerifyError::malformed_header(
                        name,
                        "no signature with the expected version",
                    ));
                }
                Ok(Received {
                    signatures,
                    timestamp: None,
                    field: name,
                })
            }
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
    pub(crate) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let received = self.carrier.read(req)?;
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
        let signatures: Vec<Vec<u8>> = received
            .signatures
            .iter()
            .filter_map(|s| self.encoding.decode(s))
            .collect();
        if signatures.is_empty() {
            return Err(VerifyError::malformed_header(
                received.field,
                match self.encoding {
                    Encoding::Hex => "signature is not hex",
                    Encoding::Base64 => "signature is not base64",
                },
            ));
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
            if any_key_matches(self.mac, &self.keys, &message, &signatures) {
                return Ok(());
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
    let mut matched = false;
    for key in keys {
        if let Some(expected) = mac.compute_keyed(key, message) {
            for sig in signatures {
                matched |= ct_eq(&expected, sig);
            }
        }
    }
    matched
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
