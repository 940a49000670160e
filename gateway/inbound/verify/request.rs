//! Reading the parts of a request that schemes share: single-valued headers, `k=v,k=v` (or `k=v;k=v`)
//! signature headers, signed timestamps and their replay window, and the URL the sender signed.

use super::error::VerifyError;
use http::HeaderMap;
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// The value of a header that must appear exactly once, as text. A repeated security header is
/// refused rather than guessing which copy the sender meant.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, VerifyError> {
    optional_header(headers, name)?.ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
}

/// Like [`header`], but absence is not an error.
pub(crate) fn optional_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::malformed_header(
            name,
            "appears more than once",
        ));
    }
    let text = first
        .to_str()
        .map_err(|_| VerifyError::malformed_header(name, "not visible ASCII"))?;
    Ok(Some(text.trim()))
}

/// Unit of a signed timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    Seconds,
    Millis,
}

/// Which side of now a signed timestamp may stray from by the tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// Older or newer (Standard Webhooks, Slack, Zoom, Paddle, Webflow, HubSpot v3, the generic preset).
    Both,
    /// Only too old is refused (Stripe, Calendly: SIGNATURES.md, and Stripe's own library). A sender
    /// whose clock runs ahead of ours is not refused for it; a replay is then possible until the
    /// timestamp is `tolerance` old, unless the source dedups (Stripe's `$.id`).
    TooOldOnly,
}

/// Parse a signed unix timestamp and check it lies within `tolerance` of `now` on the `window`'s sides
/// (both, unless the scheme says otherwise: a far-future timestamp would stay replayable for as long as it
/// is ahead). `field` names the header in error messages.
pub(crate) fn check_window(
    raw: &str,
    unit: TimeUnit,
    now: SystemTime,
    (tolerance, window): (Duration, Window),
    field: &str,
) -> Result<(), VerifyError> {
    let malformed = || VerifyError::malformed_header(field, "timestamp is not a unix time");
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let value: i128 = raw.parse().map_err(|_| malformed())?;
    let signed_ms = match unit {
        TimeUnit::Seconds => value.checked_mul(1000).ok_or_else(malformed)?,
        TimeUnit::Millis => value,
    };
    check_age(signed_ms, now, (tolerance, window))
}

/// Check that a signed time, in unix milliseconds, lies within `tolerance` of `now` on the `window`'s
/// sides: [`check_window`] for unix timestamps, SNS for its ISO 8601 `Timestamp`.
pub(crate) fn check_age(
    signed_ms: i128,
    now: SystemTime,
    (tolerance, window): (Duration, Window),
) -> Result<(), VerifyError> {
    let now_ms = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    };
    let age = now_ms - signed_ms;
    let off = match window {
        Window::Both => age.abs(),
        Window::TooOldOnly => age,
    };
    if off > tolerance.as_millis() as i128 {
        return Err(VerifyError::Stale(tolerance));
    }
    Ok(())
}

/// How a header that carries a timestamp and signatures as `key=value` entries is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyValueFormat {
    /// Between entries.
    pub separator: char,
    /// The key of the timestamp's entry.
    pub timestamp: &'static str,
    /// The key of each signature's entry; entries of other keys are skipped.
    pub version: &'static str,
    /// The problems named in a `401 malformed`: no timestamp, and two.
    pub no_timestamp: &'static str,
    pub two_timestamps: &'static str,
}

/// `t=<ts>,v1=<sig>,v1=<sig>,v0=<sig>` (Stripe, Calendly).
pub(crate) const T_V1: KeyValueFormat = KeyValueFormat {
    separator: ',',
    timestamp: "t",
    version: "v1",
    no_timestamp: "no t= timestamp",
    two_timestamps: "more than one t= timestamp",
};

/// `ts=<ts>;h1=<sig>;h1=<sig>` (Paddle; a second `h1` while a secret rotates).
pub(crate) const TS_H1: KeyValueFormat = KeyValueFormat {
    separator: ';',
    timestamp: "ts",
    version: "h1",
    no_timestamp: "no ts= timestamp",
    two_timestamps: "more than one ts= timestamp",
};

/// A parsed `t=<ts>,v1=<sig>,v1=<sig>,v0=<sig>` header (Stripe, Calendly), or one of another
/// [`KeyValueFormat`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyValueSignature<'a> {
    pub timestamp: &'a str,
    /// Values of the entries named by the expected version, in order; other versions are ignored.
    pub signatures: Vec<&'a str>,
}

/// Parse a `key=value` signature header written in `format`. Whitespace around entries is ignored,
/// unknown keys are skipped (new versions must not break us), exactly one timestamp is required.
pub(crate) fn parse_key_value<'a>(
    value: &'a str,
    format: &KeyValueFormat,
    header_name: &str,
) -> Result<KeyValueSignature<'a>, VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let entries = value.split(format.separator).map(str::trim);
    for entry in entries.filter(|e| !e.is_empty()) {
        let Some((key, val)) = entry.split_once('=') else {
            return Err(VerifyError::malformed_header(
                header_name,
                "entry without `=`",
            ));
        };
        let (key, val) = (key.trim(), val.trim());
        if key == format.timestamp {
            if timestamp.replace(val).is_some() {
                return Err(VerifyError::malformed_header(
                    header_name,
                    format.two_timestamps,
                ));
            }
        } else if key == format.version {
            signatures.push(val);
        }
    }
    let timestamp =
        timestamp.ok_or_else(|| VerifyError::malformed_header(header_name, format.no_timestamp))?;
    if signatures.is_empty() {
        return Err(VerifyError::malformed_header(
            header_name,
            "no signature with the expected version",
        ));
    }
    Ok(KeyValueSignature {
        timestamp,
        signatures,
    })
}

/// The URL the sender signed: the configured public URL plus the received query string when
/// hookgate sits behind a proxy that rewrites scheme, host or path; otherwise the URL as received.
pub(crate) fn signed_url<'a>(received: &'a str, public_url: Option<&str>) -> Cow<'a, str> {
    match public_url {
        None => Cow::Borrowed(received),
        Some(public) => match received.find('?') {
            Some(q) => Cow::Owned(format!("{public}{}", &received[q..])),
            None => Cow::Owned(public.to_owned()),
        },
    }
}

/// The query string of a URL (without `?`), if any.
pub(crate) fn query(url: &str) -> Option<&str> {
    url.split_once('?').map(|(_, q)| q)
}

/// The one value of query parameter `name` in `url`, percent-decoded; a parameter given twice is
/// refused, as a repeated header is: a check reading the first and a reader the last would disagree.
pub(crate) fn query_param<'u>(
    url: &'u str,
    name: &str,
) -> Result<Option<Cow<'u, str>>, VerifyError> {
    let mut values = query(url)
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(VerifyError::Malformed {
            field: format!("query parameter {name}"),
            problem: "appears more than once",
        }),
        (first, _) => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_refuses_duplicates() {
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", HeaderValue::from_static(" t=1 "));
        assert_eq!(header(&h, "Stripe-Signature"), Ok("t=1"));
        assert_eq!(
            header(&h, "X-Missing"),
            Err(VerifyError::MissingHeader("X-Missing".into()))
        );
        h.append("stripe-signature", HeaderValue::from_static("t=2"));
        assert_eq!(
            header(&h, "Stripe-Signature").map_err(|e| e.reason()),
            Err("malformed")
        );
    }

    #[test]
    fn non_ascii_header_is_malformed() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-sig",
            HeaderValue::from_bytes(b"\xffabc").unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(
            header(&h, "x-sig").map_err(|e| e.reason()),
            Err("malformed")
        );
    }

    #[test]
    fn window_both_directions() {
        let tol = Duration::from_secs(300);
        let now = at(1_000_000);
        assert!(check_window("1000000", TimeUnit::Seconds, now, (tol, Window::Both), "t").is_ok());
        assert!(check_window("999700", TimeUnit::Seconds, now, (tol, Window::Both), "t").is_ok());
        assert!(check_window("1000300", TimeUnit::Seconds, now, (tol, Window::Both), "t").is_ok());
        assert_eq!(
            check_window("999699", TimeUnit::Seconds, now, (tol, Window::Both), "t"),
            Err(VerifyError::Stale(tol))
        );
        assert_eq!(
            check_window("1000301", TimeUnit::Seconds, now, (tol, Window::Both), "t"),
            Err(VerifyError::Stale(tol))
        );
        assert!(check_window(
            "1000000000",
            TimeUnit::Millis,
            now,
            (tol, Window::Both),
            "t"
        )
        .is_ok());
        // Milliseconds (HubSpot v3, Webflow): both edges, to the millisecond.
        for (ms, ok) in [
            ("999700000", true),
            ("1000300000", true),
            ("1000300001", false),
            ("999699999", false),
        ] {
            let r = check_window(ms, TimeUnit::Millis, now, (tol, Window::Both), "t");
            assert_eq!(r.is_ok(), ok, "{ms}");
        }
        // Too old only: the past bound is the same, the future has none.
        let old_only = (tol, Window::TooOldOnly);
        assert!(check_window("999700", TimeUnit::Seconds, now, old_only, "t").is_ok());
        assert_eq!(
            check_window("999699", TimeUnit::Seconds, now, old_only, "t"),
            Err(VerifyError::Stale(tol))
        );
        assert!(check_window("1086400", TimeUnit::Seconds, now, old_only, "t").is_ok());
    }

    #[test]
    fn window_refuses_non_numbers() {
        let now = at(1_000_000);
        for raw in [
            "",
            "-5",
            "1e6",
            "12.5",
            " 1",
            "99999999999999999999999999999999999999999",
        ] {
            let e = check_window(
                raw,
                TimeUnit::Seconds,
                now,
                (Duration::from_secs(300), Window::Both),
                "X-Ts",
            );
            assert_eq!(e.map_err(|e| e.reason()), Err("malformed"), "{raw:?}");
        }
    }

    #[test]
    fn key_value_header_variants() {
        let parsed = parse_key_value("t=12, v1=aa ,v0=bb,v1=cc,x=y", &T_V1, "H").unwrap();
        assert_eq!(parsed.timestamp, "12");
        assert_eq!(parsed.signatures, vec!["aa", "cc"]);
        // Only unknown versions: nothing to check.
        assert_eq!(
            parse_key_value("t=12,v0=bb", &T_V1, "H").map_err(|e| e.to_string()),
            Err("malformed H header: no signature with the expected version".into())
        );
        assert!(parse_key_value("v1=aa", &T_V1, "H").is_err());
        assert!(parse_key_value("t=1,t=2,v1=aa", &T_V1, "H").is_err());
        assert!(parse_key_value("t=1,garbage,v1=aa", &T_V1, "H").is_err());
        assert!(parse_key_value("", &T_V1, "H").is_err());
        // Paddle's: `;` between entries, `ts` and `h1`; a `,` is no separator there.
        let parsed = parse_key_value("ts=12;h1=aa; h1=bb;x=y", &TS_H1, "P").unwrap();
        assert_eq!(
            (parsed.timestamp, parsed.signatures),
            ("12", vec!["aa", "bb"])
        );
        assert_eq!(
            parse_key_value("ts=1,h1=aa", &TS_H1, "P").map_err(|e| e.to_string()),
            Err("malformed P header: no signature with the expected version".into())
        );
        assert_eq!(
            parse_key_value("t=1;h1=aa", &TS_H1, "P").map_err(|e| e.to_string()),
            Err("malformed P header: no ts= timestamp".into())
        );
        assert_eq!(
            parse_key_value("ts=1;ts=2;h1=aa", &TS_H1, "P").map_err(|e| e.to_string()),
            Err("malformed P header: more than one ts= timestamp".into())
        );
    }

    #[test]
    fn signed_url_uses_public_url_with_query() {
        let url = "http://10.0.0.1:8080/webhooks/x?a=1&b=2";
        assert_eq!(signed_url(url, None), url);
        assert_eq!(
            signed_url(url, Some("https://hooks.example.com/x")),
            "https://hooks.example.com/x?a=1&b=2"
        );
        assert_eq!(signed_url("http://h/x", Some("https://p/x")), "https://p/x");
        assert_eq!(query(url), Some("a=1&b=2"));
        assert_eq!(query("http://h/x"), None);
    }
}
