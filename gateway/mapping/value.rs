//! Values: the one evaluator behind action fields, condition subjects and `for_each`.
//!
//! Spellings (compiled once, at load):
//! - `$.a.b` a JSONPath into the body (the first match); `'@.sku'` relative to the `for_each` element;
//! - `42`, `true`, `text` constants; `"{{ $.first }} {{ $.last }}"` a template;
//! - `[a, b]` a list of values;
//! - the long form `{ path | header | const | template | object | for_each, then, default, required, all }`.
//!
//! Missing means the path selects nothing or only null. A missing value is left out of the action
//! unless it is `required`, which fails the event with a reason.

use super::transform::{self, Lookups, Transform};
use super::yaml::{Ctx, Kind, Loc, Node};
use crate::action::Fields;
use crate::jsonpath::JsonPath;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// Request headers of an event, looked up case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Value)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a header; the name is matched case-insensitively. A repeated header is joined to the value
    /// before it with `, ` (RFC 9110 §5.3), as the receiver stores it, so `try` and a test's `headers:`
    /// see what a live event would.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some((_, Value::String(v))) = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            v.push_str(", ");
            v.push_str(&value);
            return;
        }
        // Kept as JSON text so values read them without copying.
        self.0
            .push((name.to_ascii_lowercase(), Value::String(value)));
    }

    /// The value of a header (`name` in any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.value(name).and_then(Value::as_str)
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.insert(n.as_ref(), v);
        }
        h
    }
}

impl From<&http::HeaderMap> for Headers {
    /// Headers whose value is not UTF-8 text are skipped (a mapping cannot use them anyway).
    fn from(map: &http::HeaderMap) -> Self {
        map.iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v.to_owned())))
            .collect()
    }
}

/// What a value is evaluated against.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub root: &'a Value,
    /// The current `for_each` element, for `@` paths.
    pub item: Option<&'a Value>,
    pub headers: &'a Headers,
}

/// Why a value could not be produced. `field` is filled in by the caller on the way out.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub field: String,
    pub reason: String,
}

impl EvalError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            field: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefix the field name (`attributes` + `.FIRSTNAME`).
    pub fn within(mut self, field: &str) -> Self {
        self.field = if self.field.is_empty() {
            field.to_owned()
        } else if self.field.starts_with('[') {
            format!("{field}{}", self.field)
        } else {
            format!("{field}.{}", self.field)
        };
        self
    }
}

/// A compiled value.
#[derive(Debug)]
pub struct ValueExpr {
    source: Source,
    then: Vec<Transform>,
    default: Option<Box<ValueExpr>>,
    pub required: bool,
}

#[derive(Debug)]
enum Source {
    Path {
        path: JsonPath,
        all: bool,
    },
    Header(String),
    Const(Value),
    Template(Vec<Piece>),
    List(Vec<ValueExpr>),
    Object(FieldSpecs),
    ForEach {
        over: JsonPath,
        /// `over` selects nodes (see [`JsonPath::is_selection`]): each is an element.
        selection: bool,
        item: Box<ValueExpr>,
    },
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Path(JsonPath),
}

/// Named values (an action's `attributes`, an `object:`), names shared with what they produce.
pub type FieldSpecs = Vec<(Arc<str>, ValueExpr)>;

/// Where `@` paths are allowed while compiling.
#[derive(Clone, Copy)]
pub struct Env<'l> {
    pub lookups: &'l Lookups,
    pub in_for_each: bool,
}

const LONG_KEYS: &[&str] = &[
    "path", "header", "const", "template", "object", "for_each", "then", "default", "required",
    "all",
];
const SOURCE_KEYS: &[&str] = &["path", "header", "const", "template", "object", "for_each"];

type Got<'a> = Result<Option<Cow<'a, Value>>, EvalError>;

impl ValueExpr {
    /// Compile any value spelling; None when it has problems (all reported in `ctx`).
    pub fn compile(ctx: &mut Ctx, node: &Node, what: &str, env: Env) -> Option<Self> {
        let source = match &node.kind {
            Kind::Str(s) => compile_text(ctx, node, s, what, env)?,
            Kind::Null => {
                ctx.error(node.loc, format!("{what}: null is not a value"))
                    .hint = Some("to leave the field out, remove it".to_owned());
                return None;
            }
            Kind::Seq(items) => {
                let mut ok = true;
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match Self::compile(ctx, item, &format!("{what}[{i}]"), env) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Source::List(out)
            }
            Kind::Map(_) => return Self::compile_long(ctx, node, what, env),
            _ => Source::Const(node.to_json()),
        };
        Some(Self {
            source,
            then: Vec::new(),
            default: None,
            required: false,
        })
    }

    fn compile_long(ctx: &mut Ctx, node: &Node, what: &str, env: Env) -> Option<Self> {
        let f = ctx.map(node, what, LONG_KEYS)?;
        let given: Vec<&str> = SOURCE_KEYS.iter().copied().filter(|k| f.has(k)).collect();
        let valid_pair = given == ["object", "for_each"];
        if given.len() != 1 && !valid_pair {
            if given.is_empty() && f.unknown {
                return None;
            }
            let msg = if given.is_empty() {
                format!(
                    "{what}: a value needs one of: path, header, const, template, object, for_each"
                )
            } else {
                format!(
                    "{what}: a value takes one of {}, not several",
                    given.join(", ")
                )
            };
            ctx.error(node.loc, msg);
            return None;
        }
        let mut ok = true;
        let source = if let Some(n) = f.get("for_each") {
            compile_for_each(ctx, node, n, f.get("object"), what, env)
        } else if let Some(n) = f.get("path") {
            match ctx.string(n, &format!("{what}.path")) {
                Some(s) => match compile_path(ctx, n, s, what, env) {
                    Some(path) => {
                        let all = match f.get("all") {
                            Some(a) => ctx.bool(a, "all").unwrap_or(false),
                            None => false,
                        };
                        Some(Source::Path { path, all })
                    }
                    None => None,
                },
                None => None,
            }
        } else if let Some(n) = f.get("header") {
            ctx.string(n, &format!("{what}.header"))
                .map(|h| Source::Header(h.to_ascii_lowercase()))
        } else if let Some(n) = f.get("const") {
            match n.kind {
                Kind::Null => {
                    ctx.error(n.loc, format!("{what}: null is not a value"));
                    None
                }
                _ => Some(Source::Const(n.to_json())),
            }
        } else if let Some(n) = f.get("template") {
            match ctx.string(n, &format!("{what}.template")) {
                Some(s) => compile_template(ctx, n, s, what, env),
                None => None,
            }
        } else if let Some(n) = f.get("object") {
            compile_object(ctx, n, what, env)
        } else {
            None
        };
        if f.has("all") && !f.has("path") {
            let k = f.key("all").map(|k| k.loc).unwrap_or(node.loc);
            ctx.error(k, format!("{what}: `all` applies to a `path` only"));
            ok = false;
        }
        let mut then = Vec::new();
        if let Some(t) = f.get("then") {
            let items: Vec<&Node> = match &t.kind {
                Kind::Seq(items) => items.iter().collect(),
                _ => vec![t],
            };
            for item in items {
                match transform::compile(ctx, item, env) {
                    Some(tr) => then.push(tr),
                    None => ok = false,
                }
            }
        }
        // A default is any value: a constant, or another path to fall back on.
        let default = match f.get("default") {
            Some(n) => {
                let d = Self::compile(ctx, n, &format!("{what}.default"), env);
                ok &= d.is_some();
                d.map(Box::new)
            }
            None => None,
        };
        let required = match f.get("required") {
            Some(n) => ctx.bool(n, "required").unwrap_or(false),
            None => false,
        };
        if required && default.is_some() {
            ctx.error(
                node.loc,
                format!("{what}: `required` and `default` contradict each other"),
            );
            ok = false;
        }
        let source = source?;
        ok.then_some(Self {
            source,
            then,
            default,
            required,
        })
    }

    /// The constant this value always is, when it is one (no transforms), for checks at load.
    pub fn constant(&self) -> Option<&Value> {
        match &self.source {
            Source::Const(v) if self.then.is_empty() => Some(v),
            _ => None,
        }
    }

    /// Mark as required (identifier fields, event names).
    pub fn require(mut self) -> Self {
        self.required = self.default.is_none();
        self
    }

    /// The value, transformed and defaulted; `Ok(None)` when missing and not required.
    pub fn eval<'a>(&'a self, scope: Scope<'a>) -> Got<'a> {
        let raw = self.raw(scope)?;
        let mut v = match (raw, self.then.is_empty()) {
            (None, _) => None,
            (Some(v), true) => Some(v),
            (Some(v), false) => self.transform(v, scope)?.map(Cow::Owned),
        };
        if let (None, Some(d)) = (&v, &self.default) {
            v = d.eval(scope)?;
        }
        if v.is_none() && self.required {
            return Err(EvalError::new(format!(
                "required value missing {}",
                self.describe()
            )));
        }
        Ok(v)
    }

    /// Does any node the value stands for (each transformed) pass `test`? What a condition
    /// asks; simple paths and headers are tested without allocating.
    pub fn any<'a>(
        &'a self,
        scope: Scope<'a>,
        mut test: impl FnMut(&Value) -> bool,
    ) -> Result<bool, EvalError> {
        let mut check = |v: &Value| -> Result<bool, EvalError> {
            if self.then.is_empty() {
                return Ok(test(v));
            }
            Ok(self
                .transform(Cow::Borrowed(v), scope)?
                .is_some_and(|t| test(&t)))
        };
        match &self.source {
            Source::Path { path, all: false } if !path.is_direct() => {
                for v in path_nodes(path, scope) {
                    if !v.is_null() && check(v)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            _ => match self.raw(scope)? {
                Some(v) => check(&v),
                None => Ok(false),
            },
        }
    }

    fn transform(&self, v: Cow<'_, Value>, scope: Scope<'_>) -> Result<Option<Value>, EvalError> {
        let mut v = v;
        for t in &self.then {
            match t.apply(v, scope) {
                Ok(Some(next)) => v = Cow::Owned(next),
                Ok(None) => return Ok(None),
                Err(reason) => {
                    return Err(EvalError::new(format!(
                        "{} {}: {reason}",
                        t.name(),
                        self.describe()
                    )));
                }
            }
        }
        Ok(Some(v.into_owned()))
    }

    /// The value before transforms.
    fn raw<'a>(&'a self, scope: Scope<'a>) -> Got<'a> {
        Ok(match &self.source {
            Source::Const(v) => Some(Cow::Borrowed(v)),
            Source::Path { path, all: false } => first(path, scope).map(Cow::Borrowed),
            Source::Path { path, all: true } => {
                let items: Vec<Value> = path_nodes(path, scope)
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .cloned()
                    .collect();
                (!items.is_empty()).then_some(Cow::Owned(Value::Array(items)))
            }
            Source::Header(name) => scope.headers.value(name).map(Cow::Borrowed),
            Source::Template(pieces) => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Path(p) => match first(p, scope) {
                            Some(Value::String(s)) => out.push_str(s),
                            Some(v) => out.push_str(&v.to_string()),
                            None => return Ok(None),
                        },
                    }
                }
                Some(Cow::Owned(Value::String(out)))
            }
            Source::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = item.eval(scope).map_err(|e| e.within(&format!("[{i}]")))? {
                        out.push(v.into_owned());
                    }
                }
                // Parts all missing make the list missing: it is left out (or defaulted), not sent empty.
                (out.is_empty() == items.is_empty()).then_some(Cow::Owned(Value::Array(out)))
            }
            Source::Object(fields) => {
                let out = eval_object(fields, scope)?;
                (out.is_empty() == fields.is_empty()).then_some(Cow::Owned(Value::Object(out)))
            }
            Source::ForEach {
                over,
                selection,
                item,
            } => {
                let elements = match for_each_elements(over, *selection, scope) {
                    Ok(Some(elements)) => elements,
                    Ok(None) => return Ok(None),
                    Err(found) => {
                        return Err(EvalError::new(format!(
                            "for_each: {}",
                            not_a_list(over, found)
                        )))
                    }
                };
                let count = elements.len();
                let mut out = Vec::with_capacity(count);
                for (i, el) in elements.iter().enumerate() {
                    let inner = Scope {
                        item: Some(el),
                        ..scope
                    };
                    if let Some(v) = item.eval(inner).map_err(|e| e.within(&format!("[{i}]")))? {
                        out.push(v.into_owned());
                    }
                }
                // Parts all missing make the list missing; an empty list is a value.
                (out.is_empty() == (count == 0)).then_some(Cow::Owned(Value::Array(out)))
            }
        })
    }

    /// Where the value comes from, for error messages (`at $.data.email`).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Path { path, .. } => format!("at {}", path.as_str()),
            Source::Header(h) => format!("in header {h}"),
            Source::Template(_) => "in the template".to_owned(),
            Source::ForEach { over, .. } => format!("at {}", over.as_str()),
            _ => String::new(),
        }
    }
}

/// Evaluate an action's named fields, leaving missing ones out.
pub fn eval_fields(
    fields: &[(Arc<str>, ValueExpr)],
    scope: Scope<'_>,
) -> Result<Fields, EvalError> {
    let mut out = Fields::with_capacity(fields.len());
    for (name, expr) in fields {
        if let Some(v) = expr.eval(scope).map_err(|e| e.within(name))? {
            out.push_new(name.clone(), v.into_owned());
        }
    }
    Ok(out)
}

/// Evaluate named fields into a JSON object (`object:`), leaving missing ones out.
pub(super) fn eval_object(
    fields: &[(Arc<str>, ValueExpr)],
    scope: Scope<'_>,
) -> Result<Map<String, Value>, EvalError> {
    let mut out = Map::with_capacity(fields.len());
    for (name, expr) in fields {
        if let Some(v) = expr.eval(scope).map_err(|e| e.within(name))? {
            out.insert(name.to_string(), v.into_owned());
        }
    }
    Ok(out)
}

/// The first node a path selects that is not null: null counts as missing, so `$..email` over a null
/// `email` and a set one takes the set one.
pub(super) fn first<'a>(path: &JsonPath, scope: Scope<'a>) -> Option<&'a Value> {
    let base = if path.is_relative() {
        scope.item?
    } else {
        scope.root
    };
    path.first_present(base)
}

/// What a `for_each` runs over, a rule's or a value's: the nodes a selecting path selects, in order, or
/// the items of the list a path names.
pub(super) struct Elements<'a> {
    nodes: Vec<&'a Value>,
    items: &'a [Value],
}

impl<'a> Elements<'a> {
    pub(super) fn len(&self) -> usize {
        self.nodes.len() + self.items.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &'a Value> + '_ {
        self.nodes.iter().copied().chain(self.items)
    }
}

/// The elements of `for_each: over`. `None` when there are none to speak of: the path names nothing (or
/// null), or selects nothing; a list that is there and empty is `Some`, no elements. `Err` is the node
/// a naming path found that is no list, for the caller to refuse (or, a rule's `for_each: $` over one
/// event, to run once over).
pub(super) fn for_each_elements<'a>(
    over: &JsonPath,
    selection: bool,
    scope: Scope<'a>,
) -> Result<Option<Elements<'a>>, &'a Value> {
    if selection {
        let nodes = path_nodes(over, scope);
        return Ok((!nodes.is_empty()).then_some(Elements { nodes, items: &[] }));
    }
    match first(over, scope) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(Elements {
            nodes: Vec::new(),
            items,
        })),
        Some(found) => Err(found),
    }
}

/// Why a `for_each` path cannot be run over: it found `found`, which is no list.
pub(super) fn not_a_list(over: &JsonPath, found: &Value) -> String {
    format!(
        "expected a list at {}, found {}",
        over.as_str(),
        super::json_kind(found)
    )
}

fn path_nodes<'a>(path: &JsonPath, scope: Scope<'a>) -> Vec<&'a Value> {
    let base = if path.is_relative() {
        match scope.item {
            Some(i) => i,
            None => return Vec::new(),
        }
    } else {
        scope.root
    };
    path.query(base)
}

/// Text that would be read as a path.
pub(super) fn looks_like_path(s: &str) -> bool {
    s.starts_with('$') || s.starts_with('@')
}

fn compile_text(ctx: &mut Ctx, node: &Node, s: &str, what: &str, env: Env) -> Option<Source> {
    if looks_like_path(s) {
        return compile_path(ctx, node, s, what, env).map(|path| Source::Path { path, all: false });
    }
    if s.contains("{{") {
        return compile_template(ctx, node, s, what, env);
    }
    Some(Source::Const(Value::String(s.to_owned())))
}

/// Compile a path written at `node`; an error points at the exact character in the file.
pub fn compile_path(ctx: &mut Ctx, node: &Node, s: &str, what: &str, env: Env) -> Option<JsonPath> {
    compile_path_at(ctx, node.loc, 0, s, what, env)
}

/// `offset`: where the path starts inside the scalar's text (templates), in characters.
fn compile_path_at(
    ctx: &mut Ctx,
    loc: Loc,
    offset: usize,
    s: &str,
    what: &str,
    env: Env,
) -> Option<JsonPath> {
    if s.starts_with('@') && !env.in_for_each {
        let (line, col) = ctx.place_in(loc, offset);
        ctx.error_at(
            line,
            col,
            s.chars().count() as u32,
            format!("{what}: `@` paths are relative to a for_each element, and there is none here"),
        )
        .hint = Some("use a `$.` path, or add `for_each:` to the rule".to_owned());
        return None;
    }
    match JsonPath::compile_relative(s) {
        Ok(p) => Some(p),
        Err(e) => {
            let inner = e.offset.map_or(0, |o| s[..o.min(s.len())].chars().count());
            let (line, col) = ctx.place_in(loc, offset + inner);
            let d = ctx.error_at(line, col, 1, format!("{what}: {}", e));
            if let Some(fix) = e.offset.and_then(|o| bracket_fix(s, o)) {
                d.hint = Some(format!("a name with other characters than letters, digits and `_` needs brackets: {fix}"));
            } else if !s.starts_with("$.")
                && !s.starts_with("$[")
                && !s.starts_with('@')
                && s != "$"
            {
                d.hint = Some("to write text that starts with `$`, use { const: ... }".to_owned());
            } else if s.contains("[?(") || s.contains("?(@") {
                d.hint = Some(
                    "filters look like $.items[?@.ref == 'email'] (parentheses optional)"
                        .to_owned(),
                );
            }
            None
        }
    }
}

/// `$.is-contact` → `$['is-contact']`, when the error is inside a dotted name.
fn bracket_fix(path: &str, offset: usize) -> Option<String> {
    let bad = path.get(offset..)?.chars().next()?;
    if bad.is_alphanumeric() || matches!(bad, '.' | '[' | ']' | '_' | '\'' | '"' | '?') {
        return None;
    }
    let dot = path.get(..offset)?.rfind('.')?;
    let name_start = dot + 1;
    if name_start == offset && !bad.is_ascii_digit() {
        return None;
    }
    let end = path[offset..]
        .find(['.', '['])
        .map_or(path.len(), |i| offset + i);
    let name = &path[name_start..end];
    Some(format!("{}['{}']{}", &path[..dot], name, &path[end..]))
}

fn compile_template(ctx: &mut Ctx, node: &Node, s: &str, what: &str, env: Env) -> Option<Source> {
    let mut pieces = Vec::new();
    let mut rest = s;
    let mut consumed = 0usize; // characters before `rest`
    let mut ok = true;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            let (line, col) = ctx.place_in(node.loc, consumed + rest[..open].chars().count());
            ctx.error_at(
                line,
                col,
                2,
                format!("{what}: `{{{{` is not closed with `}}}}`"),
            );
            return None;
        };
        let inner = &after[..close];
        let lead = inner.len() - inner.trim_start().len();
        let path_text = inner.trim();
        let path_offset =
            consumed + rest[..open + 2].chars().count() + inner[..lead].chars().count();
        if looks_like_path(path_text) {
            match compile_path_at(ctx, node.loc, path_offset, path_text, what, env) {
                Some(p) => pieces.push(Piece::Path(p)),
                None => ok = false,
            }
        } else {
            let (line, col) = ctx.place_in(node.loc, path_offset);
            ctx.error_at(line, col, path_text.chars().count().max(1) as u32, format!("{what}: a template inserts paths: expected `{{{{ $.field }}}}`, found `{{{{ {path_text} }}}}`"));
            ok = false;
        }
        let used = open + 2 + close + 2;
        consumed += rest[..used].chars().count();
        rest = &rest[used..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    ok.then_some(Source::Template(pieces))
}

fn compile_object(ctx: &mut Ctx, node: &Node, what: &str, env: Env) -> Option<Source> {
    let Some(entries) = node.as_map() else {
        ctx.expected(
            node,
            &format!("{what}.object"),
            "a map of field names to values",
        );
        return None;
    };
    let mut ok = true;
    let mut fields = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match ValueExpr::compile(ctx, v, &format!("{what}.{}", k.name), env) {
            Some(e) => fields.push((k.name.as_str().into(), e)),
            None => ok = false,
        }
    }
    ok.then_some(Source::Object(fields))
}

fn compile_for_each(
    ctx: &mut Ctx,
    node: &Node,
    over: &Node,
    object: Option<&Node>,
    what: &str,
    env: Env,
) -> Option<Source> {
    let over_path = match ctx.string(over, &format!("{what}.for_each")) {
        Some(s) if looks_like_path(s) => {
            compile_path(ctx, over, s, &format!("{what}.for_each"), env)
        }
        Some(_) => {
            ctx.expected(
                over,
                &format!("{what}.for_each"),
                "a path to a list, such as $.line_items, or one that selects, such as $.items[?@.qty > 0]",
            );
            None
        }
        None => None,
    };
    let Some(object) = object else {
        ctx.error(
            node.loc,
            format!("{what}: for_each needs `object:`, the fields of each element"),
        );
        return None;
    };
    let inner = Env {
        in_for_each: true,
        ..env
    };
    let item = compile_object(ctx, object, what, inner);
    let item = ValueExpr {
        source: item?,
        then: Vec::new(),
        default: None,
        required: false,
    };
    let over_path = over_path?;
    Some(Source::ForEach {
        selection: over_path.is_selection(),
        over: over_path,
        item: Box::new(item),
    })
}
