//! Twilio: base64 HMAC-SHA1 of the full URL followed by the form parameters (sorted by name, then
//! value). JSON requests carry `bodySHA256=<hex>` in the signed URL instead of parameters, so the
//! body is bound to the signature through that hash.
//!
//! Like Twilio's own validators, the URL is tried with and without its default port, because
//! Twilio's signing is inconsistent about ports. Twilio "SharedKey" webhooks announce HMAC-SHA256
//! in `X-Twilio-Webhooks-Signature-Settings`; that is honoured too.
//!
//! Mailchimp Transactional (Mandrill) signs the same way in `X-Mandrill-Signature`, always with SHA-1,
//! over the webhook's URL "exactly as you entered it": no port variants, and no JSON bodies (it posts
//! only forms).

use super::crypto::{ct_eq, sha256, Algorithm, Encoding, Key, Mac};
use super::error::VerifyError;
use super::mac::any_key_matches;
use super::request::{header, optional_header, query_param, signed_url};
use super::SignedRequest;

const SIGNATURE_HEADER: &str = "X-Twilio-Signature";
const SETTINGS_HEADER: &str = "X-Twilio-Webhooks-Signature-Settings";
const BODY_HASH_PARAM: &str = "bodySHA256";

const MANDRILL_SIGNATURE_HEADER: &str = "X-Mandrill-Signature";

#[derive(Clone, Debug)]
pub(crate) struct Twilio {
    pub keys: Vec<Key>,
    pub public_url: Option<String>,
}

/// Mandrill's check: Twilio's scheme without what Twilio alone allows (SHA-256 settings, JSON bodies
/// bound by `bodySHA256`, the URL with or without its default port).
#[derive(Clone, Debug)]
pub(crate) struct Mandrill {
    pub keys: Vec<Key>,
    pub public_url: Option<String>,
}

impl Twilio {
    pub(crate) fn verify(&self, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
        let signature = base64_signature(req, SIGNATURE_HEADER)?;
        let mac = Mac::Hmac(algorithm(optional_header(req.headers, SETTINGS_HEADER)?)?);
        let url = signed_url(req.url, self.public_url.as_deref());

        let body_hash = query_param(&url, BODY_HASH_PARAM)?;
        let params = match body_hash {
            Some(expected) => {
                let expected = Encoding::Hex
                    .decode(&expected)
                    .ok_or(VerifyError::Malformed {
                        field: "bodySHA256 query parameter".to_owned(),
                        problem: "not a hex SHA-256",
                    })?;
                if !ct_eq(&sha256(req.body), &expected) {
                    return Err(VerifyError::BodyHashMismatch);
                }
                String::new()
            }
            // Without bodySHA256 the body must be form parameters: they are what gets signed.
            None => sorted_params(req.body),
        };

        let signatures = [signature];
        for candidate in port_variants(&url) {
            let message = format!("{candidate}{params}");
            if any_key_matches(mac, &self.keys, &[message.as_bytes()], &signatures) {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }
}

impl Mandrill {
    /// The URL as it is (or `public_url`), then the sorted parameters, HMAC-SHA1.
    pub(crate) fn verify(&self, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
        let signature = base64_signature(req, MANDRILL_SIGNATURE_HEADER)?;
        let url = signed_url(req.url, self.public_url.as_deref());
        let message = format!("{url}{}", sorted_params(req.body));
        let mac = Mac::Hmac(Algorithm::Sha1);
        if any_key_matches(mac, &self.keys, &[message.as_bytes()], &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// The signature in header `name`, base64 as both senders write it.
fn base64_signature(req: &SignedRequest<'_>, name: &str) -> Result<Vec<u8>, VerifyError> {
    Encoding::Base64
        .decode(header(req.headers, name)?)
        .ok_or_else(|| VerifyError::malformed_header(name, "signature is not base64"))
}

/// `algorithm=HMAC_SHA256` in the settings header selects SHA-256; absent means legacy SHA-1.
fn algorithm(settings: Option<&str>) -> Result<Algorithm, VerifyError> {
    let named = settings
        .into_iter()
        .flat_map(|s| s.split(','))
        .find_map(|part| {
            let (k, v) = part.split_once('=')?;
            (k.trim() == "algorithm" && !v.trim().is_empty()).then(|| v.trim())
        });
    match named.map(str::to_ascii_uppercase).as_deref() {
        None | Some("HMAC_SHA1") => Ok(Algorithm::Sha1),
        Some("HMAC_SHA256") => Ok(Algorithm::Sha256),
        Some(_) => Err(VerifyError::malformed_header(
            SETTINGS_HEADER,
            "unsupported algorithm",
        )),
    }
}

/// Form parameters concatenated as Twilio signs them: names sorted, each name's distinct values
/// sorted, `name + value` for each.
pub(super) fn sorted_params(body: &[u8]) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    pairs.sort();
    pairs.dedup();
    pairs.into_iter().map(|(k, v)| k + &v).collect()
}

/// The URL without and with its default port, as Twilio's validators check both.
fn port_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // A port follows the last `:` unless that colon is inside an IPv6 literal.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let without = format!("{scheme}://{userinfo}{host}{tail}");
    let with = format!(
        "{scheme}://{userinfo}{host}:{}{tail}",
        port.unwrap_or(default_port)
    );
    vec![without, with]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_sorted_by_name_then_value() {
        assert_eq!(sorted_params(b"b=2&a=x&a=1&c=%2B1+2"), "a1axb2c+1 2");
        assert_eq!(sorted_params(b""), "");
        assert_eq!(sorted_params(b"a=1&a=1"), "a1");
    }

    #[test]
    fn port_variants_add_and_remove_default_port() {
        assert_eq!(
            port_variants("https://example.com/x?y=1"),
            vec!["https://example.com/x?y=1", "https://example.com:443/x?y=1"]
        );
        assert_eq!(
            port_variants("http://example.com:8080/x"),
            vec!["http://example.com/x", "http://example.com:8080/x"]
        );
        assert_eq!(
            port_variants("https://[::1]/x"),
            vec!["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(port_variants("not a url"), vec!["not a url"]);
    }

    #[test]
    fn settings_header_selects_algorithm() {
        assert_eq!(algorithm(None), Ok(Algorithm::Sha1));
        assert_eq!(
            algorithm(Some("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256")),
            Ok(Algorithm::Sha256)
        );
        assert_eq!(algorithm(Some("key=k")), Ok(Algorithm::Sha1));
        assert!(algorithm(Some("algorithm=MD5")).is_err());
    }
}
