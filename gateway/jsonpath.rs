//! The one door to JSONPath (RFC 9535) in hookgate: every path is compiled once, at load time,
//! and nothing else in the crate calls `jsonpath-rust` directly.
//!
//! Most mapping paths are plain member chains (`$.data.object.email`). jsonpath-rust builds a
//! normalized path string for every node it visits, which costs more than the lookup itself, so
//! such paths take a direct route over `serde_json::Value`. The direct route is only taken for
//! paths jsonpath-rust also accepts, and the tests check both routes return the same nodes.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::{Map, Value};

/// A compiled JSONPath.
#[derive(Clone, Debug)]
pub struct JsonPath {
    source: String,
    relative: bool,
    route: Route,
}

#[derive(Clone, Debug)]
enum Route {
    /// Member names and indexes only: at most one node, found without allocating.
    Direct(Vec<Step>),
    /// Anything else: evaluated by jsonpath-rust.
    Full(Box<JpQuery>),
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Name(String),
    Index(i64),
}

/// Why a path does not compile; `offset` is the byte position in the path when known.
#[derive(Clone, Debug, thiserror::Error)]
#[error("invalid JSONPath `{path}`: {message}")]
pub struct PathError {
    pub path: String,
    pub message: String,
    pub offset: Option<usize>,
}

impl JsonPath {
    /// Compile an absolute path (`$...`).
    pub fn compile(source: &str) -> Result<Self, PathError> {
        Self::build(source, false)
    }

    /// Compile a path that may also be relative to a current node (`@...`, RFC 9535's current-node
    /// identifier); see [`JsonPath::is_relative`]. Used by the mapping language inside `for_each`.
    pub fn compile_relative(source: &str) -> Result<Self, PathError> {
        Self::build(source, true)
    }

    fn build(source: &str, allow_relative: bool) -> Result<Self, PathError> {
        let relative = allow_relative && source.starts_with('@');
        // `@.x` is parsed as `$.x` and evaluated against the current node instead of the root.
        let text: std::borrow::Cow<str> = if relative {
            format!("${}", &source[1..]).into()
        } else {
            source.into()
        };
        let query = parse_json_path(&text).map_err(|e| path_error(source, e))?;
        if let Some(at) = second_descendant(source) {
            return Err(PathError {
                path: source.to_owned(),
                message: "at most one `..` per path: each descendant segment after the first \
                          multiplies the nodes selected by the payload's depth (`$..a..b` on a 0.5 MB \
                          payload selected millions); start from a fixed member, as `$.data..b`"
                    .to_owned(),
                offset: Some(at),
            });
        }
        let route = match direct_steps(&text) {
            Some(steps) => Route::Direct(steps),
            None => Route::Full(Box::new(query)),
        };
        Ok(Self {
            source: source.to_owned(),
            relative,
            route,
        })
    }

    /// Every node the path selects, in document order.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.route {
            Route::Direct(steps) => walk(steps, value).into_iter().collect(),
            Route::Full(query) => full_query(query, value),
        }
    }

    /// The first node the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.route {
            Route::Direct(steps) => walk(steps, value),
            Route::Full(query) => full_query(query, value).into_iter().next(),
        }
    }

    /// The first node the path selects that is not `null`.
    pub fn first_present<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.route {
            Route::Direct(steps) => walk(steps, value).filter(|v| !v.is_null()),
            Route::Full(query) => full_query(query, value).into_iter().find(|v| !v.is_null()),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True for `@...` paths: evaluate them against the current `for_each` element.
    pub fn is_relative(&self) -> bool {
        self.relative
    }

    /// The member names of a path such as `$.data.object.id` (names only, no indexes), so a caller can
    /// fetch that one member while streaming a document instead of building all of it.
    pub fn member_names(&self) -> Option<Vec<&str>> {
        match &self.route {
            Route::Direct(steps) if !self.relative => steps
                .iter()
                .map(|s| match s {
                    Step::Name(n) => Some(n.as_str()),
                    Step::Index(_) => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Whether `path` names the same member as this path, however either is spelled (`$.a.b`,
    /// `$['a']['b']`): both are member names only.
    pub fn names_same_member(&self, path: &str) -> bool {
        let other = JsonPath::compile(path).ok();
        let other = other.as_ref().and_then(JsonPath::member_names);
        other.is_some() && self.member_names() == other
    }

    /// Whether the path selects nodes rather than naming one: it has a wildcard, a slice, a filter or
    /// several selectors in one segment (`$.items[*]`, `$.a[?@.x]`, `$['a','b']`). Names and indexes,
    /// however spelled and wherever a descendant segment (`$..items`) looks for them, name a node.
    pub fn is_selection(&self) -> bool {
        fn selects(s: &Selector) -> bool {
            matches!(
                s,
                Selector::Wildcard | Selector::Slice(..) | Selector::Filter(_)
            )
        }
        fn segment(seg: &Segment) -> bool {
            match seg {
                Segment::Descendant(inner) => segment(inner),
                Segment::Selector(s) => selects(s),
                Segment::Selectors(list) => list.len() > 1 || list.iter().any(selects),
            }
        }
        match &self.route {
            Route::Direct(_) => false,
            Route::Full(query) => query.segments.iter().any(segment),
        }
    }

    /// The node an absolute path of names and indexes names, to change it in place (`parse_json:`
    /// replaces a member's text with the document it holds), with how many steps down it is; `None`
    /// when the path is not such a path or nothing is there.
    pub fn direct_mut<'a>(&self, mut value: &'a mut Value) -> Option<(&'a mut Value, usize)> {
        let Route::Direct(steps) = &self.route else {
            return None;
        };
        if self.relative {
            return None;
        }
        for step in steps {
            value = match (step, value) {
                (Step::Name(name), Value::Object(map)) => map.get_mut(name)?,
                (Step::Index(i), Value::Array(items)) => {
                    let at = position(*i, items.len())?;
                    items.get_mut(at)?
                }
                _ => return None,
            };
        }
        Some((value, steps.len()))
    }

    /// How many names and indexes an absolute direct path steps through (`$` is 0); `None` for any
    /// other path. `parse_json:` takes only these.
    pub fn direct_len(&self) -> Option<usize> {
        match &self.route {
            Route::Direct(steps) if !self.relative => Some(steps.len()),
            _ => None,
        }
    }

    /// True when the path takes the direct route (exposed for tests and benchmarks).
    pub fn is_direct(&self) -> bool {
        matches!(self.route, Route::Direct(_))
    }

    /// The same path, always evaluated by jsonpath-rust (benchmarks compare the two routes).
    #[doc(hidden)]
    pub fn without_direct_route(self) -> Self {
        let text = if self.relative {
            format!("${}", &self.source[1..])
        } else {
            self.source.clone()
        };
        match parse_json_path(&text) {
            Ok(q) => Self {
                route: Route::Full(Box::new(q)),
                ..self
            },
            Err(_) => self,
        }
    }

    /// Evaluate with jsonpath-rust even when a direct route exists; tests compare the two.
    #[doc(hidden)]
    pub fn query_reference<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        let text = if self.relative {
            format!("${}", &self.source[1..])
        } else {
            self.source.clone()
        };
        match parse_json_path(&text) {
            Ok(q) => full_query(&q, value),
            Err(_) => Vec::new(),
        }
    }
}

/// The byte offset of the second descendant segment (`..`) in a path, outside quoted names. RFC 9535
/// gives `$..a..b` a node for every (a, b) pair where b is below a, duplicates included: on a deep
/// payload that is the payload's size times its depth, each with its own normalized path, and a sender
/// controls the payload. One descendant segment selects each node at most once.
fn second_descendant(path: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    let (mut i, mut seen, mut quote) = (0, false, None::<u8>);
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'.' && bytes.get(i + 1) == Some(&b'.') => {
                if seen {
                    return Some(i);
                }
                seen = true;
                i += 1;
            }
            None => {}
        }
        i += 1;
    }
    None
}

fn full_query<'a>(query: &JpQuery, value: &'a Value) -> Vec<&'a Value> {
    match js_path_process(query, value) {
        Ok(refs) => refs.into_iter().map(|r| r.val()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The position an index names in a list of `len` items: from the end when negative (RFC 9535).
fn position(i: i64, len: usize) -> Option<usize> {
    if i < 0 {
        len.checked_sub(i.unsigned_abs() as usize)
    } else {
        usize::try_from(i).ok()
    }
}

fn walk<'a>(steps: &[Step], mut value: &'a Value) -> Option<&'a Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Name(name), Value::Object(map)) => member(map, name)?,
            (Step::Index(i), Value::Array(items)) => items.get(position(*i, items.len())?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Objects with at most this many members are searched by comparing names, not by hashing.
const SCAN_MAX: usize = 32;

/// A member of an object. serde_json's map (`preserve_order`: an IndexMap with SipHash) hashes the
/// name on every lookup, which costs more than comparing it with the few names of a typical
/// webhook object; names in a parsed object are distinct, so both ways find the same member.
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if map.len() <= SCAN_MAX {
        // Length and first byte before the whole name: most names differ there already, and
        // comparing whole names is a call to memcmp.
        let (len, head) = (name.len(), name.as_bytes().first());
        map.iter()
            .find(|(k, _)| k.len() == len && k.as_bytes().first() == head && k.as_str() == name)
            .map(|(_, v)| v)
    } else {
        map.get(name)
    }
}

/// The steps of a path made only of `.name`, `['name']` and `[index]` segments, or None.
/// Deliberately conservative: anything unusual (escapes, spaces, leading zeros) goes the full route.
fn direct_steps(path: &str) -> Option<Vec<Step>> {
    let rest = path.strip_prefix('$')?;
    let bytes = rest.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                let start = i + 1;
                let mut end = start;
                for (off, c) in rest[start..].char_indices() {
                    let ok = if off == 0 {
                        c == '_' || c.is_ascii_alphabetic() || (c as u32) >= 0x80
                    } else {
                        c == '_' || c.is_ascii_alphanumeric() || (c as u32) >= 0x80
                    };
                    if !ok {
                        break;
                    }
                    end = start + off + c.len_utf8();
                }
                if end == start {
                    return None;
                }
                steps.push(Step::Name(rest[start..end].to_owned()));
                i = end;
            }
            b'[' => {
                let close = rest[i..].find(']')? + i;
                let inner = &rest[i + 1..close];
                let quoted = inner.len() >= 2
                    && ((inner.starts_with('\'') && inner.ends_with('\''))
                        || (inner.starts_with('"') && inner.ends_with('"')));
                if quoted {
                    let name = &inner[1..inner.len() - 1];
                    if name.contains(['\\', '\'', '"']) || name.chars().any(|c| c < ' ') {
                        return None;
                    }
                    steps.push(Step::Name(name.to_owned()));
                } else {
                    let digits = inner.strip_prefix('-').unwrap_or(inner);
                    let canonical = !digits.is_empty()
                        && digits.bytes().all(|b| b.is_ascii_digit())
                        && (digits == "0" || !digits.starts_with('0'))
                        && inner != "-0"
                        && digits.len() <= 15;
                    if !canonical {
                        return None;
                    }
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

fn path_error(source: &str, e: jsonpath_rust::parser::errors::JsonPathError) -> PathError {
    use jsonpath_rust::parser::errors::JsonPathError as E;
    let (message, offset) = match &e {
        E::PestError(pe) => {
            let offset = match pe.location {
                pest::error::InputLocation::Pos(p) => p,
                pest::error::InputLocation::Span((s, _)) => s,
            };
            let message = match &pe.variant {
                pest::error::ErrorVariant::ParsingError { positives, .. }
                    if !positives.is_empty() =>
                {
                    let mut names: Vec<&str> = Vec::new();
                    for r in positives {
                        let n = rule_name(&format!("{r:?}"));
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                    format!("expected {}", names.join(" or "))
                }
                pest::error::ErrorVariant::ParsingError { .. } => "unexpected character".to_owned(),
                pest::error::ErrorVariant::CustomError { message } => message.clone(),
            };
            (message, Some(offset.min(source.len())))
        }
        other => (other.to_string(), None),
    };
    let message = match offset {
        Some(o) => {
            let found = source[o..].chars().next();
            match found {
                Some(c) => format!("{message} at position {}, found `{c}`", o + 1),
                None => format!("{message} at the end of the path"),
            }
        }
        None => message,
    };
    PathError {
        path: source.to_owned(),
        message,
        offset,
    }
}

/// What a grammar rule of jsonpath-rust stands for, in words ops know.
fn rule_name(rule: &str) -> &'static str {
    match rule {
        "EOI" => "the end of the path",
        "ALPHA" | "name_first" | "member_name_shorthand" => "a member name",
        "DIGIT" | "int" | "index_selector" | "safe_int" => "an index",
        "segment" | "segments" | "child_segment" => "`.name` or `[...]`",
        "wildcard_selector" => "`*`",
        "selector" | "bracketed_selection" => {
            "a selector (`'name'`, an index, `*`, a slice or `?filter`)"
        }
        "root" | "jp_query" | "main" => "`$`",
        "string" | "name_selector" => "a quoted name",
        "comp_op" => "a comparison (==, !=, <, <=, >, >=)",
        "literal" | "comparable" => "a value",
        "logical_expr" | "logical_expr_and" | "atom_expr" | "filter_selector" => {
            "a filter expression"
        }
        "function_expr" => "a function",
        _ => "valid JSONPath",
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    /// `direct_mut` reaches the node `first` finds, however the path is spelled, with its depth; only
    /// absolute paths of names and indexes have one.
    #[test]
    fn direct_mut_reaches_the_node_first_finds() {
        let mut v = json!({"a": {"b c": [1, {"d": "x"}]}});
        for (path, steps) in [
            ("$.a['b c'][1].d", 4),
            ("$['a']['b c'][-1]['d']", 4),
            ("$.a", 1),
            ("$", 0),
        ] {
            let p = JsonPath::compile(path).unwrap();
            let want = p.first(&v).cloned();
            assert_eq!(p.direct_len(), Some(steps), "{path}");
            let (node, depth) = p.direct_mut(&mut v).unwrap();
            assert_eq!((Some(node.clone()), depth), (want, steps), "{path}");
        }
        let p = JsonPath::compile("$.a['b c'][1].d").unwrap();
        *p.direct_mut(&mut v).unwrap().0 = json!(7);
        assert_eq!(v, json!({"a": {"b c": [1, {"d": 7}]}}));
        for path in ["$.a['b c'][5]", "$.a.b", "$.a['b c'][0].d"] {
            assert!(
                JsonPath::compile(path)
                    .unwrap()
                    .direct_mut(&mut v)
                    .is_none(),
                "{path}"
            );
        }
        for path in ["$.a[*]", "$..d", "$.a['b c'][?@.d]"] {
            let p = JsonPath::compile(path).unwrap();
            assert_eq!(p.direct_len(), None, "{path}");
            assert!(p.direct_mut(&mut v).is_none(), "{path}");
        }
        let relative = JsonPath::compile_relative("@.a").unwrap();
        assert_eq!(relative.direct_len(), None);
        assert!(relative.direct_mut(&mut v).is_none());
    }

    #[test]
    fn direct_route_is_taken_for_member_chains() {
        for p in ["$", "$.a", "$.a.b[0]", "$['a b'].c[-1]", "$.é"] {
            assert!(JsonPath::compile(p).unwrap().is_direct(), "{p}");
        }
        for p in [
            "$.a[*]",
            "$..a",
            "$.a[01]",
            "$[?@.a]",
            "$.a[0:1]",
            "$ .a",
            "$['a\\'b']",
        ] {
            if let Ok(jp) = JsonPath::compile(p) {
                assert!(!jp.is_direct(), "{p}");
            }
        }
    }

    /// A path that names one node (by names and indexes, on either route, or searched for by a
    /// descendant segment) is no selection; wildcards, slices, filters and unions are.
    #[test]
    fn selections_are_told_from_named_nodes() {
        for p in [
            "$",
            "$.a.b[0]",
            "$[ 'items' ]",
            "$['a\\'b']",
            "$.a[-1]",
            "$..items",
            "$..[0]",
            "$[ 0 ]",
            "@.x",
        ] {
            let jp = JsonPath::compile_relative(p).unwrap();
            assert!(!jp.is_selection(), "{p}");
        }
        for p in [
            "$.a[*]",
            "$.a[?@.x == 1]",
            "$.a[0:2]",
            "$['a','b']",
            "$..[?@.x]",
            "$.g[*].m[*]",
            "@.items[*]",
            "$[0,1]",
            "$..*",
            "$[-1:]",
        ] {
            let jp = JsonPath::compile_relative(p).unwrap();
            assert!(jp.is_selection(), "{p}");
        }
    }

    #[test]
    fn member_scan_and_hash_agree() {
        for n in [0, 1, SCAN_MAX - 1, SCAN_MAX, SCAN_MAX + 1, 3 * SCAN_MAX] {
            let map: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            for i in 0..=n {
                let name = format!("k{i}");
                assert_eq!(member(&map, &name), map.get(&name), "{n} {name}");
            }
            assert_eq!(member(&map, ""), None);
        }
    }

    #[test]
    fn errors_carry_the_offset() {
        let e = JsonPath::compile("$.[[?type").unwrap_err();
        assert!(e.offset.is_some(), "{e:?}");
    }

    #[test]
    fn one_descendant_segment_at_most() {
        for ok in [
            "$..a",
            "$.data..b",
            "$..*",
            "$..[?@.x == 1]",
            "$['a..b']..c",
            "$[\"..\"]..c",
            "@..sku",
        ] {
            assert!(JsonPath::compile_relative(ok).is_ok(), "{ok}");
        }
        for (bad, at) in [
            ("$..a..b", 4),
            ("$..*..*", 4),
            ("$.x..a[?@..b]", 9),
            ("$['..']..a..b", 10),
        ] {
            let e = JsonPath::compile(bad).expect_err(bad);
            assert_eq!(e.offset, Some(at), "{bad}: {e}");
            assert!(e.message.contains("at most one `..`"), "{e}");
        }
        // The blow-up it prevents: 30 nested `a`s over 2,000 `b`s.
        let mut doc = json!((0..2000).map(|_| json!({"b": 1})).collect::<Vec<_>>());
        for _ in 0..30 {
            doc = json!({ "a": doc });
        }
        let once = JsonPath::compile("$..b").expect("one descendant segment");
        assert_eq!(once.query(&doc).len(), 2000);
        let twice = parse_json_path("$..a..b").expect("jsonpath-rust parses it");
        assert!(
            full_query(&twice, &doc).len() > 2000 * 25,
            "each b once per a above it"
        );
    }

    #[test]
    fn relative_paths() {
        let p = JsonPath::compile_relative("@.sku").unwrap();
        assert!(p.is_relative());
        assert_eq!(p.first(&json!({"sku": "x"})), Some(&json!("x")));
        assert!(JsonPath::compile("@.sku").is_err());
    }
}
