//! `application/x-www-form-urlencoded` bodies read as PHP's `parse_str` reads them, then written as
//! `json_encode` writes the result. ActiveCampaign (a PHP application) posts its webhooks this way and
//! names custom fields by number (`contact[fields][12]=pro`), so PHP's rules are the ones its users know:
//!
//! - `a[b][c]=v` nests; `a[]=v` (or `a[ ]=v`) appends at the next free index, one past the largest
//!   numeric key so far;
//! - a repeated plain key keeps its last value, and a key re-used with brackets becomes an object;
//! - a table whose keys are exactly `0, 1, ... n-1` in that order is a JSON array, any other an object
//!   (`fields[1]=x&fields[2]=y` is `{"1":"x","2":"y"}`); the top level is always an object;
//! - a name ends at a NUL, loses its leading spaces, and has ` ` and `.` as `_` before its first `[`;
//!   text after a closing `]` that does not open another `[` is ignored (`a[b]c=1` is `a[b]=1`); an
//!   unclosed first `[` is part of the name as `_` (`a[b=1` is `a_b=1`); a pair with an empty name is
//!   skipped.
//!
//! Where we differ from PHP, on purpose, with a 400 where PHP drops data silently: nesting deeper than the
//! JSON limit (PHP drops the variable), more than [`MAX_NODES`] fields and nested keys (PHP keeps the first
//! 1,000 variables), and a value or name that is not UTF-8 after percent-decoding (PHP keeps the bytes,
//! which JSON cannot carry).
//!
//! serde_qs, used before, turns every table with numeric keys into an array and refuses one that does
//! not start at 0, so a body naming field 1 and 2 was a 400; no maintained crate follows PHP here.

use crate::error::Error;
use encoding_rs::{Encoding, UTF_8};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Nested keys and values a form body may create (PHP's own cap, `max_input_vars`, drops what is past
/// 1,000). A name with many brackets creates that many tables, so without it a 1 MiB body of
/// `a[][]...[]=` pairs would be held as some hundred times its size.
const MAX_NODES: usize = 100_000;

/// Parse a form body into a JSON object, its names and values read in `charset` once percent-decoded,
/// refusing nesting deeper than `max_depth` (the object itself is one level, as in a JSON body).
pub fn parse(body: &[u8], charset: &'static Encoding, max_depth: usize) -> Result<Value, Error> {
    let mut top = Table::default();
    let mut nodes = 0usize;
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode(name, charset)?;
        let Some(path) = Path::of(&name) else {
            continue;
        };
        if path.rest.len() + 1 > max_depth {
            return Err(Error::Malformed(format!(
                "form field `{}` is nested deeper than {max_depth}",
                path.base
            )));
        }
        nodes += path.rest.len() + 1;
        if nodes > MAX_NODES {
            return Err(Error::Malformed(format!(
                "form body has more than {MAX_NODES} fields and nested keys"
            )));
        }
        top.insert(&path.base, &path.rest, decode(value, charset)?.into_owned());
    }
    Ok(Value::Object(top.into_object()))
}

/// One percent-decoded name or value, with `+` as a space, read in `charset`.
fn decode<'a>(raw: &'a [u8], charset: &'static Encoding) -> Result<Cow<'a, str>, Error> {
    let bytes: Cow<'a, [u8]> = if raw.contains(&b'+') {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        Cow::Owned(percent_encoding::percent_decode(&spaced).collect())
    } else {
        percent_encoding::percent_decode(raw).into()
    };
    let not_text = || {
        Error::Malformed(format!(
            "form body is not {} after percent-decoding",
            charset.name()
        ))
    };
    if charset != UTF_8 {
        // A legacy charset is rare: one owned copy, sized to the text (encoding_rs reserves 3 bytes
        // per byte).
        let mut text = charset
            .decode_without_bom_handling_and_without_replacement(&bytes)
            .ok_or_else(not_text)?
            .into_owned();
        text.shrink_to_fit();
        return Ok(Cow::Owned(text));
    }
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|e| e.utf8_error()),
    }
    .map_err(|_| not_text())
}

/// Where a pair's value goes: the top-level name, then one step per bracket.
struct Path<'a> {
    base: Cow<'a, str>,
    rest: Vec<Step<'a>>,
}

#[derive(Debug, PartialEq)]
enum Step<'a> {
    /// `[name]`
    Key(&'a str),
    /// `[]`
    Append,
}

impl<'a> Path<'a> {
    /// PHP's reading of a decoded name: it ends at a NUL, loses its leading spaces, and has ` ` and `.`
    /// as `_` before its first `[`. `None` for a pair PHP skips: a name that is then empty.
    fn of(name: &'a str) -> Option<Self> {
        let name = name
            .split('\0')
            .next()
            .unwrap_or("")
            .trim_start_matches(' ');
        let open = name.find('[').unwrap_or(name.len());
        if open == 0 {
            return None;
        }
        let base = underscored(&name[..open], &[' ', '.']);
        let mut rest = Vec::new();
        let mut at = open;
        // `at` is on a `[`, or past the end.
        while let Some(len) = name.get(at + 1..).and_then(|r| r.find(']')) {
            let inner = &name[at + 1..at + 1 + len];
            // One space, PHP skips: `[ ]` appends as `[]` does.
            rest.push(if inner.is_empty() || inner == " " {
                Step::Append
            } else {
                Step::Key(inner)
            });
            at += len + 2;
            if !name[at..].starts_with('[') {
                break;
            }
        }
        if rest.is_empty() && open < name.len() {
            // An unclosed first bracket: part of the name, as `_`, and so are ` `, `.` and `[` after it.
            let tail = underscored(&name[open + 1..], &[' ', '.', '[']);
            return Some(Path {
                base: Cow::Owned(format!("{base}_{tail}")),
                rest,
            });
        }
        Some(Path { base, rest })
    }
}

/// `text` with each of `chars` as `_`, borrowed when it has none.
fn underscored<'a>(text: &'a str, chars: &[char]) -> Cow<'a, str> {
    if text.contains(chars) {
        Cow::Owned(text.replace(chars, "_"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A PHP array: ordered keys, and the next index `[]` appends at (none before the first numeric key).
#[derive(Default)]
struct Table {
    entries: IndexMap<String, Node>,
    next: Option<i64>,
}

enum Node {
    Text(String),
    Table(Table),
}

impl Table {
    fn insert(&mut self, key: &str, rest: &[Step<'_>], value: String) {
        if let Some(i) = index(key) {
            if self.next.is_none_or(|n| i >= n) {
                self.next = Some(i.saturating_add(1));
            }
        }
        let Some((step, deeper)) = rest.split_first() else {
            self.entries.insert(key.to_owned(), Node::Text(value));
            return;
        };
        let node = self
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| Node::Table(Table::default()));
        if let Node::Text(_) = node {
            *node = Node::Table(Table::default());
        }
        if let Node::Table(t) = node {
            match step {
                Step::Key(k) => t.insert(k, deeper, value),
                Step::Append => {
                    let k = t.next.unwrap_or(0).to_string();
                    // Only at the largest index can the next one be taken: PHP drops the pair then.
                    if !t.entries.contains_key(&k) {
                        t.insert(&k, deeper, value);
                    }
                }
            }
        }
    }

    fn into_object(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|(k, v)| (k, v.into_value()))
            .collect()
    }

    /// `json_encode`'s rule: keys `0..n` in order make a list.
    fn is_list(&self) -> bool {
        self.entries
            .keys()
            .enumerate()
            .all(|(i, k)| index(k) == i64::try_from(i).ok())
    }
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Text(s) => Value::String(s),
            Node::Table(t) if t.is_list() => {
                Value::Array(t.entries.into_values().map(Node::into_value).collect())
            }
            Node::Table(t) => Value::Object(t.into_object()),
        }
    }
}

/// A key PHP stores as an integer: decimal digits with no leading zero, perhaps after a `-` (`0`, `12`,
/// `-3`; not `012`, `-0` or `+1`), that fit its integers.
fn index(key: &str) -> Option<i64> {
    let digits = key.strip_prefix('-').unwrap_or(key);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !digits.starts_with('0'));
    canonical.then(|| key.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(body: &str) -> Value {
        parse(body.as_bytes(), UTF_8, 64).unwrap()
    }

    #[test]
    fn paths_follow_php() {
        let steps = |n: &str| Path::of(n).map(|p| (p.base.into_owned(), p.rest.len()));
        assert_eq!(steps("a"), Some(("a".into(), 0)));
        assert_eq!(steps("a[b][]"), Some(("a".into(), 2)));
        assert_eq!(steps("a[b]c[d]"), Some(("a".into(), 1)));
        assert_eq!(steps("a[b"), Some(("a_b".into(), 0)));
        assert_eq!(steps("a[b][c"), Some(("a".into(), 1)));
        assert_eq!(steps("[a]"), None);
        assert_eq!(steps(""), None);
        assert_eq!(
            Path::of("a[x][]").map(|p| p.rest),
            Some(vec![Step::Key("x"), Step::Append])
        );
    }

    #[test]
    fn numbered_fields_are_an_object_unless_they_count_from_zero() {
        assert_eq!(
            form("contact[fields][1]=one&contact[fields][2]=two"),
            json!({"contact": {"fields": {"1": "one", "2": "two"}}})
        );
        assert_eq!(form("a[0]=x&a[1]=y"), json!({"a": ["x", "y"]}));
        assert_eq!(form("a[1]=x&a[0]=y"), json!({"a": {"1": "x", "0": "y"}}));
        assert_eq!(
            form("a[]=x&a[5]=y&a[]=z"),
            json!({"a": {"0": "x", "5": "y", "6": "z"}})
        );
        assert_eq!(form("a[007]=x"), json!({"a": {"007": "x"}}));
        assert_eq!(
            form("a[-5]=x&a[]=y&a[-0]=z"),
            json!({"a": {"-5": "x", "-4": "y", "-0": "z"}})
        );
        assert_eq!(form("a[+]=x&a[ ]=y"), json!({"a": ["x", "y"]}));
        assert_eq!(
            form("a[9223372036854775807]=x&a[]=dropped"),
            json!({"a": {"9223372036854775807": "x"}})
        );
        // A huge index is a key like any other: nothing is allocated for the gap.
        assert_eq!(form("a[99999999999]=x"), json!({"a": {"99999999999": "x"}}));
    }

    #[test]
    fn the_last_value_wins_and_brackets_replace_text() {
        assert_eq!(form("type=a&type=b"), json!({"type": "b"}));
        assert_eq!(form("a[b]=1&a=2"), json!({"a": "2"}));
        assert_eq!(form("a=2&a[b]=1"), json!({"a": {"b": "1"}}));
        assert_eq!(form("a[b]=1&a[]=2"), json!({"a": {"b": "1", "0": "2"}}));
    }

    #[test]
    fn odd_pairs() {
        assert_eq!(form(""), json!({}));
        assert_eq!(form("&&"), json!({}));
        assert_eq!(form("=foo&[x]=1&a"), json!({"a": ""}));
        assert_eq!(form("0=a&1=b"), json!({"0": "a", "1": "b"}));
        assert_eq!(form("a+b=c+d%2Be&%5Bk%5D=v"), json!({"a_b": "c d+e"}));
        assert_eq!(form("+a.b=1&a%00b=2&+%00=3"), json!({"a_b": "1", "a": "2"}));
        assert_eq!(form("x=%zz"), json!({"x": "%zz"}));
    }

    #[test]
    fn limits_and_encodings_are_refused_with_a_reason() {
        let nest = |n: usize| format!("a{}=1", "[k]".repeat(n));
        assert!(parse(nest(63).as_bytes(), UTF_8, 64).is_ok());
        assert!(
            matches!(parse(nest(64).as_bytes(), UTF_8, 64), Err(Error::Malformed(m)) if m.contains("deeper than 64"))
        );
        assert!(
            matches!(parse(b"name=Jos%E9", UTF_8, 64), Err(Error::Malformed(m)) if m.contains("UTF-8"))
        );
        assert!(matches!(
            parse(b"na\xffme=x", UTF_8, 64),
            Err(Error::Malformed(_))
        ));
        let many = "a[]=1&".repeat(MAX_NODES / 2);
        assert!(parse(many.as_bytes(), UTF_8, 64).is_ok());
        let many = "a[]=1&".repeat(MAX_NODES / 2 + 1);
        assert!(
            matches!(parse(many.as_bytes(), UTF_8, 64), Err(Error::Malformed(m)) if m.contains("more than"))
        );
    }
}
