//! What a webhook body is: its type, whether it is well-formed, and its JSON value. One parser for the
//! receive path (dedup, validation), the mapper workers and `hookgate try`/`check`, so they never disagree.

use crate::error::Error;
use serde_json::Value;

/// The body types hookgate accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    /// From a `Content-Type` header; parameters such as `charset` are ignored. Anything else is 415.
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, Error> {
        let raw = ct.unwrap_or("");
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyKind::Json),
            "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
            // `application/vnd.foo+json` and friends are JSON too
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyKind::Json),
            "" => Err(Error::UnsupportedType("(none)".into())),
            _ => Err(Error::UnsupportedType(raw.chars().take(100).collect())),
        }
    }
}

/// Parse a body into JSON: JSON as is (no deeper than `max_depth`), forms with PHP-style bracket keys
/// turned into nested objects (`contact[fields][plan]=pro`, repeated `tags[]` → an array).
pub fn parse(kind: BodyKind, body: &[u8], max_depth: usize) -> Result<Value, Error> {
    match kind {
        BodyKind::Json => {
            check_json_depth(body, max_depth)?;
            serde_json::from_slice(body).map_err(|e| Error::Malformed(format!("invalid JSON: {e}")))
        }
        BodyKind::Form => {
            let text = std::str::from_utf8(body)
                .map_err(|_| Error::Malformed("form body is not UTF-8".into()))?;
            let cfg = serde_qs::Config::new()
                .max_depth(max_depth)
                .use_form_encoding(true);
            let v: Value = cfg
                .deserialize_str(text)
                .map_err(|e| Error::Malformed(format!("invalid form body: {e}")))?;
            Ok(if v.is_null() {
                Value::Object(Default::default())
            } else {
                v
            })
        }
    }
}

/// Reject nesting deeper than `max` before serde recurses into it: a scan of brackets outside strings.
fn check_json_depth(body: &[u8], max: usize) -> Result<(), Error> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Error::Malformed(format!("JSON nested deeper than {max}")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            BodyKind::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("Application/JSON")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/cloudevents+json")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-www-form-urlencoded")).unwrap(),
            BodyKind::Form
        );
        for bad in [
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            assert!(matches!(
                BodyKind::from_content_type(bad),
                Err(Error::UnsupportedType(_))
            ));
        }
    }

    #[test]
    fn depth_limit_counts_only_structure() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(matches!(
            parse(BodyKind::Json, deep.as_bytes(), 64),
            Err(Error::Malformed(_))
        ));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(BodyKind::Json, ok.as_bytes(), 64).is_ok());
        // brackets inside strings, and escaped quotes, do not count
        let s = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert_eq!(
            parse(BodyKind::Json, s.as_bytes(), 2).unwrap()["a"]
                .as_str()
                .unwrap()
                .len(),
            201
        );
    }

    #[test]
    fn bad_json_is_malformed() {
        assert!(matches!(
            parse(BodyKind::Json, b"{\"a\":", 64),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse(BodyKind::Json, b"", 64),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn php_style_forms() {
        let body = b"contact[email]=ada%40example.org&contact[fields][plan]=pro&tags[]=a&tags[]=b&type=subscribe&date_time=2013-07-18+17%3A21%3A08";
        let v = parse(BodyKind::Form, body, 64).unwrap();
        assert_eq!(v["contact"]["fields"]["plan"], json!("pro"));
        assert_eq!(v["contact"]["email"], json!("ada@example.org"));
        assert_eq!(v["tags"], json!(["a", "b"]));
        assert_eq!(v["date_time"], json!("2013-07-18 17:21:08"));
        assert_eq!(parse(BodyKind::Form, b"", 64).unwrap(), json!({}));
        assert!(matches!(
            parse(BodyKind::Form, b"a[b]=1&a[]=2", 64),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse(BodyKind::Form, b"a[=1", 64),
            Err(Error::Malformed(_))
        ));
    }
}
