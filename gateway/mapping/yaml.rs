//! A located YAML tree and the helpers the compilers use to walk it.
//!
//! The rules are not deserialized with serde derive: serde stops at the first problem, and
//! untagged enums (a value is a path, a constant or a map) lose locations. Instead the file is read
//! once into this tree, every node with its line and column, and each compiler checks its part and
//! records every problem in [`Ctx`], so one `check` run reports all of them.

use super::diagnostic::{did_you_mean, suggest, Diagnostic, LineIndex};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::fmt;

/// Where a node starts in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub line: u32,
    pub column: u32,
    /// Width in characters of the scalar as written (quotes included), for the caret.
    pub width: u32,
    /// The scalar is written in quotes: text inside starts one column later.
    pub quoted: bool,
}

/// A YAML node with its location.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its location.
#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// What kind of YAML value this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::UInt(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "text",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// The node as JSON (constants, inline test payloads and expectations).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::UInt(u) => Value::from(*u),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parse options: YAML 1.2 booleans only (`country: NO` stays text) and `0012` stays text.
fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    o.with_snippet = false;
    o
}

/// Read a file's text into a located tree; a YAML syntax error is returned located.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options()) {
        Ok(root) => {
            let mut twice = None;
            let node = convert(root, text, &mut twice);
            match twice {
                None => Ok(node),
                Some(key) => {
                    // The parser compares keys as written (`1` and `"1"` differ); as names they are one.
                    let mut ctx = Ctx::new(file, text);
                    ctx.error(
                        key.loc,
                        plain_words(format!("duplicate mapping key: {}", key.name)),
                    );
                    Err(ctx.diags.remove(0))
                }
            }
        }
        Err(e) => Err(serde_error(file, text, &e)),
    }
}

/// The parser's messages in the words of a mapping file rather than of the Rust library underneath
/// (`set DuplicateKeyPolicy in Options`, `use Option<String>`, `budget breached: Depth { .. }`).
fn plain_words(message: String) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!(
            "duplicate key `{key}`: a key appears once in a map (the first one is above)"
        );
    }
    if message.starts_with("multiple YAML documents") {
        return "more than one YAML document (a `---` line between them): a mapping file is one document, one source".into();
    }
    if message.starts_with("budget breached: Nodes") {
        return "too many YAML nodes once aliases are expanded (an alias bomb?); a mapping file needs far fewer".into();
    }
    if message.starts_with("budget breached: Depth") {
        return "nested too deep; a mapping file needs far fewer levels".into();
    }
    if message.starts_with("budget breached") {
        return "too large for a mapping file (a limit of the YAML reader)".into();
    }
    if message.contains("rejected by the configured policy") && message.contains("non-finite") {
        return "infinity and NaN are not values a mapping can send".into();
    }
    if message.ends_with("expected integer overflow") {
        return "a number out of range here".into();
    }
    match message.find("; use Option<") {
        Some(i) => {
            let mut m = message;
            m.truncate(i);
            m.replace("cannot deserialize null into", "null where this needs")
        }
        None => message,
    }
}

/// A serde-saphyr error as a diagnostic, with a hint for the mistakes YAML makes easy.
pub fn serde_error(file: &str, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, col) = e
        .location()
        .filter(|l| l.line() > 0)
        .map_or((1, 1), |l| (l.line() as u32, l.column().max(1) as u32));
    let mut message = e.to_string();
    // The plain message repeats the location; the diagnostic already carries it.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let message = plain_words(message);
    // The scanner reports a tab where it gave up, often the line before; the tab that indents is what
    // needs changing, so point there.
    let about_a_tab = ["found a tab", "tabs disallowed", "tab character"]
        .iter()
        .any(|w| message.contains(w));
    let (line, col, tab) = match about_a_tab.then(|| indenting_tab(text)).flatten() {
        Some((l, c)) => (l, c, true),
        None => (line, col, false),
    };
    let mut d = Diagnostic::new(file, line, col, message.clone()).with_source(text);
    if tab {
        return d.with_hint("YAML indents with spaces only: replace the tab with spaces");
    }
    let at = d
        .source_line
        .as_deref()
        .and_then(|l| l.chars().nth(col as usize - 1));
    if message.contains("flow mapping") || message.contains("flow sequence") {
        d = d.with_hint("a `{` or `[` opened before this point is not closed");
    } else if at == Some('@') {
        d = d.with_hint(
            "YAML cannot start a plain value with `@`: quote relative paths, e.g. '@.sku'",
        );
    } else if let Some(h) = unknown_name_hint(&message) {
        d = d.with_hint(h);
    }
    d
}

/// Line and column (1-based) of the first tab in a line's indentation, if any.
fn indenting_tab(text: &str) -> Option<(u32, u32)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let indent = l.len() - l.trim_start_matches([' ', '\t']).len();
        l[..indent]
            .find('\t')
            .map(|c| (i as u32 + 1, l[..c].chars().count() as u32 + 1))
    })
}

/// serde says "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"); turn that into
/// a did-you-mean.
pub(crate) fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (word, rest) = rest.split_once('`')?;
    did_you_mean(word, expected_names(rest)).map(|c| format!("did you mean `{c}`?"))
}

/// serde's "unknown field `x`, expected ..." as the name and the names it expected.
pub(crate) fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let (word, rest) = message.strip_prefix("unknown field `")?.split_once('`')?;
    Some((word, expected_names(rest).collect()))
}

/// The names in the tail of a serde message: "expected one of `a`, `b`", "expected `a` or `b`",
/// "expected `a`" (and nothing for "there are no fields").
fn expected_names(tail: &str) -> impl Iterator<Item = &str> {
    let list = tail
        .split_once("expected")
        .map_or("", |(_, l)| l)
        .trim_start();
    let list = list.strip_prefix("one of").unwrap_or(list);
    list.split(',')
        .flat_map(|c| c.split(" or "))
        .map(|c| c.trim().trim_matches('`'))
        .filter(|c| !c.is_empty())
}

/// What serde-saphyr hands us; converted to [`Node`] with locations right after.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Float(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = a.next_element()? {
            items.push(x);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Spanned<KeyText>>()? {
            let v = a.next_value()?;
            entries.push((
                Spanned {
                    value: k.value.0,
                    referenced: k.referenced,
                    defined: k.defined,
                },
                v,
            ));
        }
        Ok(Raw::Map(entries))
    }
}

/// A mapping key as text, whatever scalar it is (`1: gold` in a lookup table).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn loc(l: &serde_saphyr::Location, text: &str) -> Loc {
    let span = l.span();
    let (width, quoted) = match span.byte_offset() {
        Some(off) => {
            let off = off as usize;
            let len = span.byte_len().unwrap_or(0) as usize;
            let written = text.get(off..off.saturating_add(len)).unwrap_or("");
            let quoted = matches!(text.as_bytes().get(off), Some(b'"' | b'\''));
            (written.chars().count() as u32, quoted)
        }
        None => (span.len() as u32, false),
    };
    Loc {
        line: l.line() as u32,
        column: l.column() as u32,
        width: width.max(1),
        quoted,
    }
}

/// `raw` with locations; `twice` gets the first key whose text repeats one before it in its map.
fn convert(raw: Spanned<Raw>, text: &str, twice: &mut Option<Key>) -> Node {
    let at = loc(&raw.referenced, text);
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Bool(b) => Kind::Bool(b),
        Raw::Int(i) => Kind::Int(i),
        Raw::UInt(u) => Kind::UInt(u),
        Raw::Float(f) => Kind::Float(f),
        Raw::Str(s) => Kind::Str(s),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|i| convert(i, text, twice)).collect()),
        Raw::Map(entries) => {
            let mut out: Vec<(Key, Node)> = Vec::with_capacity(entries.len());
            let mut names = std::collections::HashSet::with_capacity(entries.len());
            for (k, v) in entries {
                let key = Key {
                    loc: loc(&k.referenced, text),
                    name: k.value,
                };
                if !names.insert(key.name.clone()) && twice.is_none() {
                    *twice = Some(key.clone());
                }
                let v = convert(v, text, twice);
                out.push((key, v));
            }
            Kind::Map(out)
        }
    };
    Node { kind, loc: at }
}

/// Collects the problems of one file while its parts are compiled.
pub struct Ctx<'t> {
    pub file: String,
    pub text: &'t str,
    pub diags: Vec<Diagnostic>,
    /// What loads but is likely a mistake; never stops the file from loading.
    pub warnings: Vec<Diagnostic>,
    lines: LineIndex<'t>,
}

impl<'t> Ctx<'t> {
    pub fn new(file: impl Into<String>, text: &'t str) -> Self {
        Self {
            file: file.into(),
            text,
            diags: Vec::new(),
            warnings: Vec::new(),
            lines: LineIndex::new(text),
        }
    }

    /// Where the character `offset` characters into the text of the scalar at `loc` is written, as
    /// `(line, column)`: escapes, folded line breaks and a block scalar's indentation taken into account
    /// (`place::place_in`).
    pub fn place_in(&self, loc: Loc, offset: usize) -> (u32, u32) {
        super::place::place_in(|n| self.lines.line(n), loc, offset)
    }

    /// Record a warning at `loc`, underlining the whole scalar or key.
    pub fn warn(&mut self, loc: Loc, message: impl Into<String>) -> &mut Diagnostic {
        let d = self.site(loc).warning(&self.file, message);
        self.warnings.push(d);
        let last = self.warnings.len() - 1;
        &mut self.warnings[last]
    }

    /// `loc` with its line's text, kept for a diagnostic made after parsing.
    pub fn site(&self, loc: Loc) -> super::diagnostic::Site {
        super::diagnostic::Site {
            line: loc.line,
            column: loc.column,
            width: loc.width.max(1),
            source_line: self
                .lines
                .line(loc.line)
                .map(|l| l.trim_end_matches('\r').to_owned()),
        }
    }

    /// Record a problem at `loc`, underlining the whole scalar or key.
    pub fn error(&mut self, loc: Loc, message: impl Into<String>) -> &mut Diagnostic {
        self.error_at(loc.line, loc.column, loc.width, message)
    }

    pub fn error_at(
        &mut self,
        line: u32,
        column: u32,
        width: u32,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let d = Diagnostic::new(&self.file, line, column, message)
            .with_width(width)
            .with_source_in(&self.lines);
        self.diags.push(d);
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    /// Report `found` as the wrong kind of value.
    pub fn expected(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            node.loc,
            format!("{what}: expected {expected}, found {}", node.describe()),
        );
    }

    /// The entries of a map whose keys must all be in `allowed`; unknown keys are reported with a
    /// did-you-mean. None (reported) when `node` is not a map.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.expected(node, what, "a map");
            return None;
        };
        let mut unknown = false;
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                unknown = true;
                let d = self.error(key.loc, format!("{what}: unknown key `{}`", key.name));
                d.hint = Some(suggest(&key.name, allowed));
            }
        }
        Some(Fields { entries, unknown })
    }

    /// A string value, reported when it is anything else.
    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        let s = node.as_str();
        if s.is_none() {
            self.expected(node, what, "text");
        }
        s
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.expected(node, what, "true or false");
                None
            }
        }
    }
}

/// The entries of one map, looked up by key.
pub struct Fields<'n> {
    pub entries: &'n [(Key, Node)],
    /// An unknown key was reported: skip follow-up "missing key" errors it probably explains.
    pub unknown: bool,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    pub fn key(&self, key: &str) -> Option<&'n Key> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}
