//! What a webhook body is: its type, whether it is well-formed, and its JSON value. One parser for the
//! receive path (dedup, validation), the mapper workers and `hookgate try`/`check`, so they never disagree.

mod form;

use crate::error::Error;
use crate::jsonpath::JsonPath;
use encoding_rs::Encoding;
use serde::Deserialize;
use serde_json::Value;

/// The body types hookgate accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// A form, with the charset its percent-decoded names and values are read in: UTF-8 unless the
    /// sender names another (older PHP and Java senders post `charset=ISO-8859-1`).
    Form(&'static Encoding),
}

impl BodyKind {
    /// A UTF-8 form, the common case.
    pub fn utf8_form() -> Self {
        BodyKind::Form(encoding_rs::UTF_8)
    }

    /// From a `Content-Type` header: `application/json` (and any `application/...+json`) or
    /// `application/x-www-form-urlencoded`; anything else is 415. JSON is UTF-8 (RFC 8259), so its only
    /// charsets are UTF-8 and US-ASCII; a form may name any charset of the WHATWG Encoding Standard that
    /// can carry percent-encoded text (not UTF-16, whose bytes a form cannot hold). `mime` parses the
    /// parameters (quoted values, case), except for the two spellings nearly every sender writes
    /// (`application/json`, Stripe's `application/json; charset=utf-8`).
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, Error> {
        Self::from_content_type_with(ct, false)
    }

    /// [`BodyKind::from_content_type`], where `text_is_json` also reads `text/plain` (UTF-8, or no
    /// charset) as JSON: for a source whose sender posts its JSON so (Amazon SNS).
    pub fn from_content_type_with(ct: Option<&str>, text_is_json: bool) -> Result<Self, Error> {
        let Some(raw) = ct else {
            return Err(Error::UnsupportedType("(none)".into()));
        };
        if raw.eq_ignore_ascii_case("application/json")
            || raw.eq_ignore_ascii_case("application/json; charset=utf-8")
        {
            return Ok(BodyKind::Json);
        }
        let unsupported = || Error::UnsupportedType(crate::error::one_line(raw));
        // HTTP allows spaces around `;` (`application/json ; charset=utf-8`); mime does not before it.
        let spaced: String;
        let text = if raw.contains([' ', '\t']) {
            spaced = raw.split(';').map(str::trim).collect::<Vec<_>>().join(";");
            spaced.as_str()
        } else {
            raw
        };
        let m: mime::Mime = text.parse().map_err(|_| unsupported())?;
        let kind = match (m.type_(), m.subtype(), m.suffix()) {
            (mime::APPLICATION, mime::JSON, _) => BodyKind::Json,
            (mime::APPLICATION, mime::WWW_FORM_URLENCODED, _) => BodyKind::utf8_form(),
            (mime::APPLICATION, _, Some(mime::JSON)) => BodyKind::Json,
            (mime::TEXT, mime::PLAIN, None) if text_is_json => BodyKind::Json,
            _ => return Err(unsupported()),
        };
        // Two charsets are no one charset (and a reader taking the last would read another text).
        if m.params()
            .filter(|(name, _)| *name == mime::CHARSET)
            .count()
            > 1
        {
            return Err(unsupported());
        }
        let Some(charset) = m.get_param(mime::CHARSET) else {
            return Ok(kind);
        };
        let label = charset.as_str().trim_matches([' ', '\t']);
        // US-ASCII (by any of its names) is read as UTF-8, its superset, for both types: WHATWG would
        // read it as windows-1252, which turns a mislabelled UTF-8 form into mojibake.
        if ["utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968"]
            .iter()
            .any(|ok| label.eq_ignore_ascii_case(ok))
        {
            return Ok(kind);
        }
        match (kind, Encoding::for_label(label.as_bytes())) {
            // Refused: UTF-16 and the replacement encoding (ISO-2022-KR, HZ, ...) have UTF-8 as their
            // form encoding, so a sender naming them does not know what it sends; x-user-defined is
            // no charset (it maps every high byte to a private-use character).
            (BodyKind::Form(_), Some(enc))
                if enc.output_encoding() == enc && enc != encoding_rs::X_USER_DEFINED =>
            {
                Ok(BodyKind::Form(enc))
            }
            _ => Err(unsupported()),
        }
    }

    /// The kind of a stored event, from the content type it was received with, a form's charset
    /// included. A content type the receiver would now refuse is read by its media type alone: an event
    /// stored before a stricter check (a JSON charset hookgate now refuses) must still be mapped.
    pub fn of_stored(content_type: &str) -> Result<Self, Error> {
        // `text/plain` is stored only from a source whose sender posts JSON so (SNS).
        Self::from_content_type_with(Some(content_type), true).or_else(|_| {
            let essence = content_type.split(';').next().unwrap_or("").trim();
            Self::from_content_type_with(Some(essence), true)
        })
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
        BodyKind::Form(charset) => form::parse(body, charset, max_depth),
    }
}

/// Parse a body as [`parse`] does, then the members whose text is a JSON document of its own
/// (`parse_json:`, see [`parse_members`]): what the receive path validates and the mapper reads.
pub fn parse_with(
    kind: BodyKind,
    body: &[u8],
    max_depth: usize,
    members: &[JsonPath],
) -> Result<Value, Error> {
    let mut value = parse(kind, body, max_depth)?;
    parse_members(&mut value, members, max_depth)?;
    Ok(value)
}

/// Replace each member named in `members` whose value is text with the JSON document that text holds
/// (Mailchimp Transactional posts its events as JSON in the form field `mandrill_events`; Amazon SNS
/// sends its `Message` as JSON text), in the order given, so a later path may reach into an earlier
/// one. A member that is absent or not text is left as it is (a sender posting the document itself
/// is read alike); text that is not JSON is malformed, and so is a document nested deeper than
/// `max_depth` counted from the body's top.
pub fn parse_members(
    value: &mut Value,
    members: &[JsonPath],
    max_depth: usize,
) -> Result<(), Error> {
    for path in members {
        let Some((node, above)) = path.direct_mut(value) else {
            continue;
        };
        let Value::String(text) = node else {
            continue;
        };
        member_depth(path, text, above, max_depth)?;
        *node = serde_json::from_str(text).map_err(|e| not_json(path, e))?;
    }
    Ok(())
}

/// Check a body as [`parse_with`] reads it, building no more than the receive path needs: a JSON body
/// is validated in one pass (and its member's text read alone), a form's member text (the form itself is
/// built, as always) is validated without building its document. Several members, one of which may lie
/// inside another, and paths with indexes into a JSON body, are read whole by [`parse_with`].
pub fn check_with(
    kind: BodyKind,
    body: &[u8],
    max_depth: usize,
    members: &[JsonPath],
) -> Result<(), Error> {
    let path = match (members, kind) {
        ([], BodyKind::Json) => return validate_json(body, max_depth),
        ([], BodyKind::Form(charset)) => return form::parse(body, charset, max_depth).map(drop),
        ([path], _) => path,
        _ => return parse_with(kind, body, max_depth, members).map(drop),
    };
    match kind {
        BodyKind::Json => {
            let Some(names) = path.member_names() else {
                return parse_with(kind, body, max_depth, members).map(drop);
            };
            // One pass that validates the whole body and keeps the member.
            match json_member(body, &names, max_depth)? {
                Some(Value::String(text)) => check_member(path, &text, names.len(), max_depth),
                _ => Ok(()),
            }
        }
        BodyKind::Form(charset) => {
            let value = form::parse(body, charset, max_depth)?;
            match (path.first(&value), path.direct_len()) {
                (Some(Value::String(text)), Some(above)) => {
                    check_member(path, text, above, max_depth)
                }
                _ => Ok(()),
            }
        }
    }
}

/// Validate a member's JSON text, `above` levels down, as the mapper's parse reads it.
fn check_member(path: &JsonPath, text: &str, above: usize, max_depth: usize) -> Result<(), Error> {
    member_depth(path, text, above, max_depth)?;
    skip(text, UNCOUNTED).map_err(|e| not_json(path, e))
}

/// A member's document, `above` levels down, must keep the whole within `max_depth`.
fn member_depth(path: &JsonPath, text: &str, above: usize, max_depth: usize) -> Result<(), Error> {
    check_json_depth(text.as_bytes(), max_depth.saturating_sub(above)).map_err(|_| {
        Error::Malformed(format!(
            "`{}` holds JSON nested deeper than {max_depth} (counted from the body's top)",
            path.as_str()
        ))
    })
}

fn not_json(path: &JsonPath, e: serde_json::Error) -> Error {
    Error::Malformed(format!("`{}` is not JSON text: {e}", path.as_str()))
}

/// Validate a JSON body without building it: one pass that checks the nesting as it goes.
pub fn validate_json(body: &[u8], max_depth: usize) -> Result<(), Error> {
    let (text, depth) = prepare(body, max_depth)?;
    skip(text, depth).map_err(|e| malformed(e, max_depth))
}

/// One JSON document, read whole as the mapper's parse reads it (`Skip`: numbers in range, `\u`
/// escapes decoded) without building it, nesting at most `depth`.
fn skip(text: &str, depth: usize) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Skip(depth), &mut de).and_then(|()| de.end())
}

/// The body as text (JSON is UTF-8; checking it once up front lets serde skip that per string) and the
/// nesting budget for the pass. A body with at most `max_depth` opening brackets cannot nest deeper, so
/// its budget is [`UNCOUNTED`]; counting the brackets is a SIMD byte search, far cheaper than tracking the
/// depth of every value.
fn prepare(body: &[u8], max_depth: usize) -> Result<(&str, usize), Error> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Error::Malformed(format!(
            "invalid JSON: not UTF-8 at byte {}",
            e.valid_up_to()
        ))
    })?;
    let fast = memchr::memchr2_iter(b'{', b'[', body).count() <= max_depth;
    Ok((text, if fast { UNCOUNTED } else { max_depth }))
}

/// A nesting budget that needs no counting (see [`prepare`]).
const UNCOUNTED: usize = usize::MAX;

/// Validate a JSON body and return the one member at `names` (e.g. `["data", "object", "id"]`), in a
/// single pass that skips everything else and checks the nesting as it goes: the receive path needs the
/// dedup id, not the whole document. The last of duplicate keys wins, as when the document is parsed whole.
pub fn json_member(body: &[u8], names: &[&str], max_depth: usize) -> Result<Option<Value>, Error> {
    let (text, depth) = prepare(body, max_depth)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let found = serde::de::DeserializeSeed::deserialize(Member(names, depth), &mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| malformed(e, max_depth))?;
    Ok(found)
}

/// The message of a nesting error raised inside serde, recognised again in [`malformed`].
const TOO_DEEP: &str = "JSON nested too deep";

fn malformed(e: serde_json::Error, max_depth: usize) -> Error {
    if e.to_string().starts_with(TOO_DEEP) {
        Error::Malformed(format!("JSON nested deeper than {max_depth}"))
    } else {
        Error::Malformed(format!("invalid JSON: {e}"))
    }
}

/// One level down from `left` levels of nesting still allowed, or the nesting error.
fn descend<E: serde::de::Error>(left: usize) -> Result<usize, E> {
    match left {
        UNCOUNTED => Ok(UNCOUNTED),
        _ => left.checked_sub(1).ok_or_else(|| E::custom(TOO_DEEP)),
    }
}

/// Skips (but validates) one value that may nest `self.0` more levels. Every value is read as the whole
/// parse reads it, not skipped with serde's `IgnoredAny`: that skipping neither checks a number's range
/// (`1e400`) nor decodes `\u` escapes (a lone surrogate), and the mapper's whole parse refuses both, so a
/// body it accepted would be stored and then dead-lettered.
struct Skip(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = descend(self.0)?;
        while map.next_key_seed(KeyIs(None))?.is_some() {
            map.next_value_seed(Skip(inner))?;
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = descend(self.0)?;
        while seq.next_element_seed(Skip(inner))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Finds `self.0` below the current node, which may nest `self.1` more levels; skips (but still
/// validates) every other part.
struct Member<'n>(&'n [&'n str], usize);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            // The member itself: kept raw, so its own nesting is checked before it is built.
            [] => {
                let raw = <&serde_json::value::RawValue>::deserialize(d)?;
                check_json_depth(raw.get().as_bytes(), self.1)
                    .map_err(|_| serde::de::Error::custom(TOO_DEEP))?;
                serde_json::from_str(raw.get())
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = descend(self.1)?;
        let (first, rest) = self
            .0
            .split_first()
            .map_or((None, &[][..]), |(f, r)| (Some(*f), r));
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(first))? {
            if wanted {
                found = map.next_value_seed(Member(rest, inner))?;
            } else {
                map.next_value_seed(Skip(inner))?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip(self.1).visit_seq(seq).map(|()| None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether the next member name is `self.0`, compared where it lies: serde's `Cow<str>` would copy every
/// name into a `String` first.
struct KeyIs<'n>(Option<&'n str>);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, name: &str) -> Result<bool, E> {
        Ok(Some(name) == self.0)
    }
}

/// Reject nesting deeper than `max` before serde recurses into a whole document: a scan of brackets outside strings.
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
            BodyKind::utf8_form()
        );
        // A form's charset by its WHATWG label; US-ASCII stays UTF-8, its superset.
        for (ct, charset) in [
            (
                "application/x-www-form-urlencoded; charset=ISO-8859-1",
                "windows-1252",
            ),
            (
                "application/x-www-form-urlencoded; charset=\"latin1\"",
                "windows-1252",
            ),
            (
                "application/x-www-form-urlencoded ; charset=Shift_JIS",
                "Shift_JIS",
            ),
            (
                "application/x-www-form-urlencoded; charset=koi8-r",
                "KOI8-R",
            ),
            (
                "application/x-www-form-urlencoded; charset=US-ASCII",
                "UTF-8",
            ),
            ("application/x-www-form-urlencoded; charset=utf8", "UTF-8"),
        ] {
            match BodyKind::from_content_type(Some(ct)) {
                Ok(BodyKind::Form(enc)) => assert_eq!(enc.name(), charset, "{ct}"),
                other => panic!("{ct}: {other:?}"),
            }
        }
        for ok in [
            "application/json;charset=\"UTF-8\"",
            "application/x-www-form-urlencoded; charset=utf-8",
            "application/json; charset=us-ascii",
            "application/merge-patch+json",
            "application/json ; charset=utf-8",
            " application/json\t;\tcharset=UTF-8 ",
            "application/json;",
        ] {
            assert!(BodyKind::from_content_type(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            None,
            // JSON is UTF-8 (RFC 8259): the body would be read as UTF-8 and refused as malformed
            Some("application/json; charset=latin1"),
            Some("application/json; charset=utf-16"),
            // a charset no form can carry, or none at all
            Some("application/x-www-form-urlencoded; charset=utf-16le"),
            Some("application/x-www-form-urlencoded; charset=iso-2022-kr"),
            Some("application/x-www-form-urlencoded; charset=x-user-defined"),
            // two charsets, whichever comes first
            Some("application/x-www-form-urlencoded; charset=utf-8; charset=bogus"),
            Some("application/json; charset=utf-8; CHARSET=latin1"),
            Some("application/x-www-form-urlencoded; charset=latin1; charset=utf-8"),
            Some("application/x-www-form-urlencoded; charset=klingon"),
            Some("application/+json"),
            Some("application/json, text/plain"),
            Some(""),
        ] {
            assert!(matches!(
                BodyKind::from_content_type(bad),
                Err(Error::UnsupportedType(_))
            ));
        }
    }

    /// A stored event's kind keeps a form's charset; a content type the receiver now refuses is read by
    /// its media type, so events stored before a stricter receive check are still mapped; no stored text
    /// makes it panic.
    #[test]
    fn stored_kinds() {
        for (ct, kind) in [
            ("application/json; charset=latin1", Some(BodyKind::Json)),
            ("application/json ; foo", Some(BodyKind::Json)),
            ("Application/Vnd.Api+JSON", Some(BodyKind::Json)),
            (
                "application/x-www-form-urlencoded; charset=ISO-8859-1",
                Some(BodyKind::Form(encoding_rs::WINDOWS_1252)),
            ),
            (
                "application/x-www-form-urlencoded; charset=klingon",
                Some(BodyKind::utf8_form()),
            ),
            ("application/+json", None),
            // Only SNS sources store it (JSON sent as text).
            ("text/plain; charset=UTF-8", Some(BodyKind::Json)),
            ("text/html", None),
            ("", None),
            ("é+json", None),
            ("applicationé/x+json", None),
        ] {
            assert_eq!(BodyKind::of_stored(ct).ok(), kind, "{ct}");
        }
    }

    #[test]
    fn text_json_is_plain_text_in_utf8() {
        for ok in [
            "text/plain; charset=UTF-8",
            "text/plain",
            "Text/Plain ; charset=\"utf-8\"",
            "text/plain; charset=us-ascii",
        ] {
            assert_eq!(
                BodyKind::from_content_type_with(Some(ok), true).ok(),
                Some(BodyKind::Json),
                "{ok}"
            );
            assert!(BodyKind::from_content_type(Some(ok)).is_err(), "{ok}");
        }
        for bad in [
            "text/plain; charset=ISO-8859-1",
            "text/plain; charset=utf-8; charset=latin1",
            "text/html",
            "text/plainer",
            "",
        ] {
            assert!(
                BodyKind::from_content_type_with(Some(bad), true).is_err(),
                "{bad}"
            );
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

    /// A body with few brackets is skipped by serde's own skipping (no depth counting); one with more
    /// brackets than the limit is counted. Both must reject what a whole parse rejects.
    #[test]
    fn fast_and_counted_skipping_reject_the_same_bodies() {
        let few = |inner: &str| format!(r#"{{"id":"e","x":{inner}}}"#);
        let many = |inner: &str| {
            format!(
                r#"{{"id":"e","pad":[{}],"x":{inner}}}"#,
                "[],".repeat(70) + "[]"
            )
        };
        let huge = "9".repeat(400);
        for bad in [
            r#""\q""#,
            "\"a\u{1}b\"",
            "[1,]",
            r#"{"a" 1}"#,
            "01",
            "tru",
            r#""\ud800x""#,
            r#"{"\ud800":1}"#,
            "1e400",
            "-1e400",
            &huge,
        ] {
            for doc in [few(bad), many(bad)] {
                let whole = serde_json::from_str::<Value>(&doc).is_err();
                let ours = validate_json(doc.as_bytes(), 64).is_err();
                let member = json_member(doc.as_bytes(), &["id"], 64).is_err();
                assert!(whole, "a whole parse accepts {doc}");
                assert_eq!((ours, member), (whole, whole), "{doc}");
            }
        }
        // Not UTF-8 inside an ignored string: malformed either way.
        for doc in [few("\"\u{1}\""), many("\"x\"")] {
            let mut bytes = doc.into_bytes();
            let at = bytes.len() - 3;
            bytes[at] = 0xff;
            assert!(
                matches!(validate_json(&bytes, 64), Err(Error::Malformed(m)) if m.contains("UTF-8"))
            );
            assert!(json_member(&bytes, &["id"], 64).is_err());
        }
        // Many brackets, shallow: accepted; deep: refused.
        assert!(validate_json(many("1").as_bytes(), 64).is_ok());
        let deep = many(&format!("{}{}", "[".repeat(65), "]".repeat(65)));
        assert!(
            matches!(validate_json(deep.as_bytes(), 64), Err(Error::Malformed(m)) if m.contains("deeper"))
        );
    }

    #[test]
    fn json_member_matches_the_whole_parse() {
        let docs: &[&[u8]] = &[
            br#"{"id":"evt_1","data":{"object":{"id":"cus_1","n":[1,{"id":2}]}}}"#,
            br#"{"data":{"object":{"id":7}},"id":"a","id":"b"}"#,
            br#"{"data":[{"object":{"id":1}}]}"#,
            br#"{"data":{"object":null}}"#,
            br#"["id"]"#,
            br#""id""#,
            br#"{"d\u0061ta":{"object":{"id":"escaped key"}}}"#,
        ];
        for doc in docs {
            let whole: Value = serde_json::from_slice(doc).unwrap();
            for path in [&["id"][..], &["data", "object", "id"], &["data"], &[]] {
                let mut want = Some(&whole);
                for name in path {
                    want = want.and_then(|v| v.get(name));
                }
                let got = json_member(doc, path, 64).unwrap();
                assert_eq!(
                    got.as_ref(),
                    want,
                    "{} {path:?}",
                    String::from_utf8_lossy(doc)
                );
            }
        }
        assert!(matches!(
            json_member(b"{\"id\":1} x", &["id"], 64),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            json_member(b"{\"id\":1,", &["id"], 64),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            json_member(b"{\"a\":[1,}", &["id"], 64),
            Err(Error::Malformed(_))
        ));
        let deep = format!("{{\"id\":1,\"x\":{}{}}}", "[".repeat(70), "]".repeat(70));
        assert!(matches!(
            json_member(deep.as_bytes(), &["id"], 64),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn one_pass_depth_check_agrees_with_the_whole_parse() {
        for depth in 60..70 {
            for doc in [
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
                format!(
                    r#"{{"id":"x","a":{}1{}}}"#,
                    "[".repeat(depth - 1),
                    "]".repeat(depth - 1)
                ),
                format!(
                    r#"{{"id":{}1{}}}"#,
                    "{\"k\":".repeat(depth - 1),
                    "}".repeat(depth - 1)
                ),
            ] {
                let whole = parse(BodyKind::Json, doc.as_bytes(), 64).is_ok();
                assert_eq!(whole, depth <= 64, "{doc}");
                assert_eq!(validate_json(doc.as_bytes(), 64).is_ok(), whole, "{doc}");
                assert_eq!(
                    json_member(doc.as_bytes(), &["id"], 64).is_ok(),
                    whole,
                    "{doc}"
                );
                if !whole {
                    let e = validate_json(doc.as_bytes(), 64).unwrap_err().to_string();
                    assert!(e.contains("nested deeper than 64"), "{e}");
                }
            }
        }
    }

    #[test]
    fn php_style_forms() {
        let body = b"contact[email]=ada%40example.org&contact[fields][plan]=pro&tags[]=a&tags[]=b&type=subscribe&date_time=2013-07-18+17%3A21%3A08";
        let v = parse(BodyKind::utf8_form(), body, 64).unwrap();
        assert_eq!(v["contact"]["fields"]["plan"], json!("pro"));
        assert_eq!(v["contact"]["email"], json!("ada@example.org"));
        assert_eq!(v["tags"], json!(["a", "b"]));
        assert_eq!(v["date_time"], json!("2013-07-18 17:21:08"));
        assert_eq!(parse(BodyKind::utf8_form(), b"", 64).unwrap(), json!({}));
        // The rest of PHP's rules, checked against PHP itself, are in tests/form_php.rs.
        assert_eq!(
            parse(
                BodyKind::utf8_form(),
                b"contact[fields][1]=a&contact[fields][2]=b",
                64
            )
            .unwrap(),
            json!({"contact": {"fields": {"1": "a", "2": "b"}}})
        );
    }

    /// Percent-decoded bytes are read in the form's charset, names as well as values; bytes the charset
    /// does not define are a 400 that names it. The expected text is from the charsets' published tables.
    #[test]
    fn forms_in_other_charsets() {
        let latin1 = BodyKind::from_content_type(Some(
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
        ))
        .unwrap();
        // 0xE9 is é in ISO-8859-1; 0x80 is € in windows-1252, which WHATWG reads for that label.
        let v = parse(
            latin1,
            b"contact[pr%E9nom]=Ren%E9e&price=5%80&city=K%F6ln+Nord&note=plain+text&id=7",
            64,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"contact": {"prénom": "Renée"}, "price": "5€", "city": "Köln Nord", "note": "plain text", "id": "7"})
        );
        // The same bytes are no UTF-8.
        let e = parse(BodyKind::utf8_form(), b"name=Ren%E9e", 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed body: form body is not UTF-8 after percent-decoding"
        );
        let sjis = BodyKind::from_content_type(Some(
            "application/x-www-form-urlencoded; charset=Shift_JIS",
        ))
        .unwrap();
        // 0x82A0 is あ and 0x8CCE is 湖 in Shift_JIS (as Python's shift_jis codec reads them).
        assert_eq!(
            parse(sjis, b"name=%82%A0%8C%CE", 64).unwrap(),
            json!({"name": "あ湖"})
        );
        let e = parse(sjis, b"name=%82", 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed body: form body is not Shift_JIS after percent-decoding"
        );
    }

    fn paths(list: &[&str]) -> Vec<JsonPath> {
        list.iter().map(|p| JsonPath::compile(p).unwrap()).collect()
    }

    /// A form field holding JSON text (Mandrill's) is read as the document, in the order the paths
    /// are given (a later one may reach into an earlier one); what is absent or not text is left alone.
    #[test]
    fn members_holding_json_text_are_parsed_in_place() {
        let body = b"mandrill_events=%5B%7B%22event%22%3A%22send%22%2C%22msg%22%3A%22%7B%5C%22a%5C%22%3A1%7D%22%7D%5D&n=7";
        let members = paths(&[
            "$.mandrill_events",
            "$.mandrill_events[0].msg",
            "$.missing",
            "$.n",
        ]);
        let v = parse_with(BodyKind::utf8_form(), body, 64, &members).unwrap();
        assert_eq!(
            v,
            json!({"mandrill_events": [{"event": "send", "msg": {"a": 1}}], "n": 7})
        );
        // Without the paths, the same body is text.
        let plain = parse(BodyKind::utf8_form(), body, 64).unwrap();
        assert!(plain["mandrill_events"].is_string());
        // A document posted as itself (not as text) is read alike; a number is not text.
        let mut doc = json!({"mandrill_events": [{"event": "send"}], "n": 7});
        let before = doc.clone();
        parse_members(&mut doc, &members, 64).unwrap();
        assert_eq!(doc, before);
    }

    #[test]
    fn a_member_that_is_not_json_is_malformed() {
        let members = paths(&["$.events"]);
        let e = parse_with(BodyKind::utf8_form(), b"events=%5B1%2C", 64, &members).unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("malformed body: `$.events` is not JSON text: EOF while parsing"),
            "{e}"
        );
        let mut v = json!({"events": "not json"});
        assert!(parse_members(&mut v, &members, 64).is_err());
        // Empty text is no document either.
        let mut v = json!({"events": ""});
        assert!(parse_members(&mut v, &members, 64).is_err());
    }

    /// The depth limit counts from the body's top: the member's own place, then the document in it.
    #[test]
    fn a_member_document_counts_toward_the_depth_limit() {
        let members = paths(&["$.a.b"]);
        // `$.a.b` sits two levels down; `[[1]]` adds two: four in all.
        let mut v = json!({"a": {"b": "[[1]]"}});
        parse_members(&mut v, &members, 4).unwrap();
        assert_eq!(v, json!({"a": {"b": [[1]]}}));
        let mut v = json!({"a": {"b": "[[1]]"}});
        let e = parse_members(&mut v, &members, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed body: `$.a.b` holds JSON nested deeper than 3 (counted from the body's top)"
        );
        // Brackets inside strings do not count.
        let mut v = json!({"a": {"b": r#"["[[[[[["]"#}});
        parse_members(&mut v, &members, 3).unwrap();
        assert_eq!(v, json!({"a": {"b": ["[[[[[["]}}));
    }

    /// The receive path's check builds less than `parse_with` but must agree with it on every body:
    /// accepted or refused, and refused for the same reason.
    #[test]
    fn check_with_agrees_with_parse_with() {
        let cases: &[(BodyKind, &str, &[&str])] = &[
            (
                BodyKind::utf8_form(),
                "e=%5B1%2C%7B%22a%22%3A2%7D%5D",
                &["$.e"],
            ),
            (BodyKind::utf8_form(), "e=%5B1%2C", &["$.e"]),
            (BodyKind::utf8_form(), "e=%5B1%5D+x", &["$.e"]),
            (BodyKind::utf8_form(), "e=", &["$.e"]),
            (BodyKind::utf8_form(), "e[x]=1", &["$.e"]),
            (
                BodyKind::utf8_form(),
                "e=%5B%5B%5B%5B1%5D%5D%5D%5D",
                &["$.e"],
            ),
            (BodyKind::utf8_form(), "other=1", &["$.e"]),
            (BodyKind::Json, r#"{"e":"[1,2]"}"#, &["$.e"]),
            (BodyKind::Json, r#"{"e":"[1,"}"#, &["$.e"]),
            (BodyKind::Json, r#"{"e":[1,"#, &["$.e"]),
            (BodyKind::Json, r#"{"e":"[[[[1]]]]"}"#, &["$.e"]),
            (BodyKind::Json, r#"{"a":{"e":"[[1]]"}}"#, &["$.a.e"]),
            (BodyKind::Json, r#"{"a":{"e":"[[[[1]]]]"}}"#, &["$.a.e"]),
            (BodyKind::Json, r#"{"e":["{\"x\":1"]}"#, &["$.e[0]"]),
            (
                BodyKind::Json,
                r#"{"e":"{\"x\":\"[1\"}"}"#,
                &["$.e", "$.e.x"],
            ),
            (BodyKind::Json, r#"{"e":{"x":1}}"#, &["$.e"]),
            // No members: the body alone.
            (BodyKind::Json, r#"{"e":"[1,"}"#, &[]),
            (BodyKind::Json, r#"{"e":[1,"#, &[]),
            (BodyKind::Json, "[[[[[[1]]]]]]", &[]),
            (BodyKind::utf8_form(), "e=%5B1%2C", &[]),
            (BodyKind::utf8_form(), "a[b][c][d][e][f]=1", &[]),
        ];
        // What serde's skipping would let through and the whole parse refuses.
        let refused: &[(BodyKind, &str, &[&str])] = &[
            (BodyKind::utf8_form(), "e=%5B1e400%5D", &["$.e"]),
            (BodyKind::Json, r#"{"e":"[1e400]"}"#, &["$.e"]),
            (BodyKind::Json, r#"{"e":"[\"\\ud800\"]"}"#, &["$.e"]),
            (BodyKind::utf8_form(), "e=%5B%22%5Cud800%22%5D", &["$.e"]),
        ];
        for (kind, body, members) in cases.iter().chain(refused) {
            let members = paths(members);
            let built = parse_with(*kind, body.as_bytes(), 5, &members).map(drop);
            let checked = check_with(*kind, body.as_bytes(), 5, &members);
            assert_eq!(
                checked.map_err(|e| e.to_string()),
                built.map_err(|e| e.to_string()),
                "{body}"
            );
        }
        for (kind, body, members) in refused {
            let e = check_with(*kind, body.as_bytes(), 5, &paths(members)).unwrap_err();
            assert!(e.to_string().contains("is not JSON text"), "{body}: {e}");
        }
    }
}
