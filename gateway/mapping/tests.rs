//! A mapping file's own `tests:`: a payload (a file next to the mapping, or inline), optional
//! headers, and the actions expected (or the error). `hookgate check` runs them; a mismatch is
//! shown as a field-by-field diff.

use super::condition::same;
use super::yaml::{Ctx, Kind, Node};
use super::{Event, SourceFile};
use crate::action::Action;
use crate::payload::BodyKind;
use serde_json::Value;
use std::path::{Path, PathBuf};

const KEYS: &[&str] = &[
    "name",
    "payload",
    "content_type",
    "headers",
    "expect",
    "expect_error",
];

/// One embedded test, as compiled from the file.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    /// Line of the test in the mapping file.
    pub line: u32,
    pub payload: Payload,
    /// The body's type when the test names one (`json`, `form`, or a `Content-Type` value).
    pub kind: Option<BodyKind>,
    /// The named `Content-Type` is `text/plain`, read as JSON: only on a source whose sender posts its
    /// JSON so (SNS), which the file's head says and the test checks when it runs.
    pub text_json: bool,
    pub headers: Vec<(String, String)>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// A path relative to the mapping file's directory.
    File(PathBuf),
    /// Inline JSON (a YAML map or list).
    Json(Value),
    /// Inline text: a form body, or JSON text.
    Text(String),
}

#[derive(Debug, Clone)]
pub enum Expect {
    /// The actions, each with the rule that must have produced it (when given).
    Actions(Vec<(Option<String>, Action)>),
    /// The event must fail with an error containing this text.
    Error(String),
}

/// The result of one test.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub line: u32,
    /// None when it passed; otherwise what went wrong, ready to print.
    pub failure: Option<String>,
    /// The rules the test's event reached: those its actions came from, or the one that failed it.
    pub reached: Vec<String>,
}

pub(super) fn compile(ctx: &mut Ctx, node: &Node) -> Vec<TestCase> {
    let Kind::Seq(items) = &node.kind else {
        ctx.expected(node, "tests", "a list of tests");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| compile_one(ctx, item, i))
        .collect()
}

fn compile_one(ctx: &mut Ctx, node: &Node, i: usize) -> Option<TestCase> {
    let f = ctx.map(node, "test", KEYS)?;
    let name = match f.get("name") {
        Some(n) => ctx.string(n, "name").unwrap_or_default().to_owned(),
        None => format!("test {}", i + 1),
    };
    // Every part is checked even when an earlier one is wrong, so all problems show at once.
    let payload = match f.get("payload") {
        Some(n) => match &n.kind {
            Kind::Str(s) if s.trim_start().starts_with(['{', '[']) || s.contains('=') => {
                Some(Payload::Text(s.clone()))
            }
            Kind::Str(s) => Some(Payload::File(PathBuf::from(s))),
            Kind::Map(_) | Kind::Seq(_) => Some(Payload::Json(n.to_json())),
            _ => {
                ctx.expected(n, "payload", "a file name, an inline map, or form text");
                None
            }
        },
        None if f.unknown => None, // a misspelt `paylod:` was reported already
        None => {
            ctx.error(node.loc, format!("test `{name}`: missing `payload`"));
            None
        }
    };
    let mut ok = true;
    let mut text_json = false;
    let kind = match f.get("content_type") {
        Some(n) => match ctx.string(n, "content_type") {
            Some("json") => Some(BodyKind::Json),
            Some("form") => Some(BodyKind::utf8_form()),
            // A sender's own value, read as the receiver reads it (a form's charset included).
            Some(other) => match BodyKind::from_content_type(Some(other)) {
                Ok(kind) => Some(kind),
                Err(_) if BodyKind::from_content_type_with(Some(other), true).is_ok() => {
                    text_json = true;
                    Some(BodyKind::Json)
                }
                Err(_) => {
                    ctx.error(
                        n.loc,
                        format!("content_type: `{other}` is not json, form or a content type hookgate accepts"),
                    );
                    ok = false;
                    None
                }
            },
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let mut headers = Vec::new();
    if let Some(n) = f.get("headers") {
        match n.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let value = match v.to_json() {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    headers.push((k.name.clone(), value));
                }
            }
            None => {
                ctx.expected(n, "headers", "a map of header names to values");
                ok = false;
            }
        }
    }
    let expect = match (f.get("expect"), f.get("expect_error")) {
        (Some(n), None) => expected_actions(ctx, n).map(Expect::Actions),
        (None, Some(n)) => ctx
            .string(n, "expect_error")
            .map(|s| Expect::Error(s.to_owned())),
        _ => {
            ctx.error(
                node.loc,
                format!("test `{name}`: give exactly one of `expect` (a list of actions, [] for none) or `expect_error`"),
            );
            None
        }
    };
    let (payload, expect) = (payload?, expect?);
    ok.then_some(TestCase {
        name,
        line: node.loc.line,
        payload,
        kind,
        text_json,
        headers,
        expect,
    })
}

fn expected_actions(ctx: &mut Ctx, node: &Node) -> Option<Vec<(Option<String>, Action)>> {
    let Kind::Seq(items) = &node.kind else {
        ctx.expected(node, "expect", "a list of actions ([] for none)");
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(entries) = item.as_map() else {
            ctx.expected(item, "expect", "an action such as upsert_contact: {...}");
            ok = false;
            continue;
        };
        let mut rule = None;
        let mut action = None;
        let mut first_kind = None;
        for (k, v) in entries {
            if k.name == "rule" {
                rule = v.as_str().map(str::to_owned);
                if rule.is_none() {
                    ctx.expected(v, "expect: rule", "the name of a rule, as text");
                    ok = false;
                }
                continue;
            }
            if !super::rule::ACTION_KINDS.contains(&k.name.as_str()) {
                let d = ctx.error(k.loc, format!("expect: unknown action `{}`", k.name));
                let mut known = super::rule::ACTION_KINDS.to_vec();
                known.push("rule");
                d.hint = Some(super::diagnostic::suggest(&k.name, &known));
                ok = false;
                continue;
            }
            if let Some(first) = &first_kind {
                let d = ctx.error(
                    k.loc,
                    format!(
                        "expect: one action per item; `{}` follows `{first}`",
                        k.name
                    ),
                );
                d.hint = Some("start a new item with `- ` for each action expected".into());
                ok = false;
                continue;
            }
            first_kind = Some(k.name.clone());
            match expected_action(ctx, &k.name, v) {
                Some(a) => action = Some(a),
                None => ok = false,
            }
        }
        match action {
            Some(a) => out.push((rule, a)),
            None if ok => {
                ctx.error(
                    item.loc,
                    "expect: each item needs an action key (and optionally `rule`)",
                );
                ok = false;
            }
            None => {}
        }
    }
    ok.then_some(out)
}

/// One expected action, read as the upstream contract reads it (`Action`'s own serde). Every unknown
/// key is reported at that key, with its likely name; any other mistake at the value it is about, with
/// the path to it. `None` once something was reported.
fn expected_action(ctx: &mut Ctx, kind: &str, value: &Node) -> Option<Action> {
    use serde_path_to_error::Segment;
    let mut json = serde_json::json!({ kind: value.to_json() });
    let mut ok = true;
    // Each pass takes out one unknown key, so a value with n keys needs at most n + 1 passes.
    for _ in 0..=count_keys(value) {
        let e = match serde_path_to_error::deserialize::<_, Action>(&json) {
            Ok(a) => return ok.then_some(a),
            Err(e) => e,
        };
        // The first segment is the action's kind, which the caller has checked.
        let path: Vec<&Segment> = e.path().iter().skip(1).collect();
        let message = e.inner().to_string();
        let (node, key) = locate(value, &path);
        if let Some((word, known)) = super::yaml::unknown_field(&message) {
            let at = key.map_or(node.loc, |k| k.loc);
            let d = ctx.error(at, format!("expect: {kind}: unknown key `{word}`"));
            d.hint = Some(super::diagnostic::suggest(word, &known));
            ok = false;
            if remove_at(&mut json, e.path().iter()).is_some() {
                continue;
            }
            return None;
        }
        let mut place = kind.to_owned();
        for seg in &path {
            match seg {
                Segment::Map { key } => place.extend([".", key.as_str()]),
                Segment::Seq { index } => place.push_str(&format!("[{index}]")),
                Segment::Enum { variant } => place.extend([".", variant.as_str()]),
                Segment::Unknown => {}
            }
        }
        let plain = message
            .replace("missing field", "missing key")
            .replace("expected i64", "expected a whole number");
        ctx.error(node.loc, format!("expect: {place}: {plain}"))
            .hint = super::yaml::unknown_name_hint(&message);
        return None;
    }
    None
}

/// The keys of a YAML value, at every depth.
fn count_keys(node: &Node) -> usize {
    match &node.kind {
        Kind::Map(entries) => entries.iter().map(|(_, v)| 1 + count_keys(v)).sum(),
        Kind::Seq(items) => items.iter().map(count_keys).sum(),
        _ => 0,
    }
}

/// The node a serde path leads to inside `node` (as far as it goes), and the key that names it.
fn locate<'n>(
    mut node: &'n Node,
    path: &[&serde_path_to_error::Segment],
) -> (&'n Node, Option<&'n super::yaml::Key>) {
    use serde_path_to_error::Segment;
    let mut named = None;
    for seg in path {
        let next = match (seg, &node.kind) {
            (Segment::Map { key }, Kind::Map(entries)) => entries
                .iter()
                .find(|(k, _)| k.name == *key)
                .map(|(k, v)| (Some(k), v)),
            (Segment::Seq { index }, Kind::Seq(items)) => items.get(*index).map(|v| (None, v)),
            _ => None,
        };
        let Some((key, v)) = next else { break };
        (named, node) = (key, v);
    }
    (node, named)
}

/// Take out of `json` the member a serde path ends at; `None` when the path does not lead to one.
fn remove_at<'p>(
    json: &mut Value,
    path: impl Iterator<Item = &'p serde_path_to_error::Segment>,
) -> Option<Value> {
    use serde_path_to_error::Segment;
    let segs: Vec<_> = path.collect();
    let (last, lead) = segs.split_last()?;
    let mut at = json;
    for seg in lead {
        at = match seg {
            Segment::Map { key } | Segment::Enum { variant: key } => at.get_mut(key.as_str())?,
            Segment::Seq { index } => at.get_mut(*index)?,
            Segment::Unknown => return None,
        };
    }
    match last {
        Segment::Map { key } => at.as_object_mut()?.remove(key.as_str()),
        _ => None,
    }
}

/// Read a test's payload. JSON unless the test says `content_type: form` or the file ends in
/// `.form`/`.txt`/`.urlencoded` (or inline text that is not JSON). The source's `parse_json:` members
/// are left to the caller.
fn load_payload(case: &TestCase, dir: &Path) -> Result<Value, String> {
    let (bytes, by_name) = match &case.payload {
        Payload::Json(v) => return Ok(v.clone()),
        Payload::Text(t) => {
            let kind = if t.trim_start().starts_with(['{', '[']) {
                BodyKind::Json
            } else {
                BodyKind::utf8_form()
            };
            (t.clone().into_bytes(), kind)
        }
        Payload::File(p) => {
            let full = dir.join(p);
            let bytes = std::fs::read(&full)
                .map_err(|e| format!("cannot read payload {}: {e}", full.display()))?;
            (bytes, kind_of_file(p))
        }
    };
    parse_payload(&bytes, case.kind.unwrap_or(by_name))
}

/// A payload file's type by its name: a form when it ends in `.form`, `.txt` or `.urlencoded`, else JSON.
pub fn kind_of_file(path: &Path) -> BodyKind {
    match path.extension().and_then(|e| e.to_str()) {
        Some("form" | "txt" | "urlencoded") => BodyKind::utf8_form(),
        _ => BodyKind::Json,
    }
}

/// A payload as the mapper sees it: JSON, or a form turned into JSON, by the same parser (and the same
/// default limits) as live requests, so a mapping that passes `check` behaves the same in production.
/// The source's `parse_json:` members are parsed by the caller ([`parse_json_members`]).
pub fn parse_payload(bytes: &[u8], kind: BodyKind) -> Result<Value, String> {
    crate::payload::parse(kind, bytes, default_max_depth()).map_err(|e| e.to_string())
}

/// The source's `parse_json:` members of a payload, parsed in place as the mapper reads them.
pub fn parse_json_members(body: &mut Value, file: &SourceFile) -> Result<(), crate::error::Error> {
    crate::payload::parse_members(body, &file.head.parse_json, default_max_depth())
}

fn default_max_depth() -> usize {
    crate::config::Limits::default().max_json_depth
}

/// Run every test of a file.
pub fn run(file: &SourceFile) -> Vec<Outcome> {
    let dir = file.path.parent().unwrap_or(Path::new("."));
    file.tests
        .iter()
        .map(|case| {
            let mut reached = Vec::new();
            let failure = run_one(file, case, dir, &mut reached).err();
            Outcome {
                name: case.name.clone(),
                line: case.line,
                failure,
                reached,
            }
        })
        .collect()
}

/// Warnings for the rules that none of `outcomes` reached, when the file has tests at all: a rule
/// without a test is one whose paths and conditions nothing has tried.
pub fn unreached_rules(file: &SourceFile, outcomes: &[Outcome]) -> Vec<super::Diagnostic> {
    if outcomes.is_empty() {
        return Vec::new();
    }
    let reached: std::collections::HashSet<&str> = outcomes
        .iter()
        .flat_map(|o| o.reached.iter().map(String::as_str))
        .collect();
    let file_name = file.path.display().to_string();
    // Rules after one that matches every event and stops are dead, and warned about as such.
    let rules: Vec<_> = file.mapping.rules().collect();
    let live = (rules.iter().position(|r| r.always_stops())).map_or(rules.len(), |i| i + 1);
    rules[..live]
        .iter()
        .filter(|r| !reached.contains(r.name.as_str()))
        .map(|r| {
            let mut d = r.site.warning(
                &file_name,
                format!(
                    "rule `{}` is reached by none of the file's {} test(s)",
                    r.name,
                    outcomes.len()
                ),
            );
            d.hint =
                Some("add a test whose payload the rule maps (docs/mappings.md, Tests)".to_owned());
            d
        })
        .collect()
}

fn run_one(
    file: &SourceFile,
    case: &TestCase,
    dir: &Path,
    reached: &mut Vec<String>,
) -> Result<(), String> {
    let text_is_json = (file.head.verify.as_ref()).is_some_and(|v| v.preset.posts_json_as_text());
    if case.text_json && !text_is_json {
        return Err(
            "content_type: the receiver refuses text/plain for this source (an sns source reads it as JSON)"
                .to_owned(),
        );
    }
    let mut body = load_payload(case, dir)?;
    // A `parse_json` member that is not JSON fails the event as the receiver would refuse it: an
    // `expect_error` may name that reason (and only that one: a payload that cannot be read fails).
    match (parse_json_members(&mut body, file), &case.expect) {
        (Ok(()), _) => {}
        (Err(e), Expect::Error(want)) if e.to_string().contains(want.as_str()) => return Ok(()),
        (Err(e), _) => return Err(e.to_string()),
    }
    let mut event = Event::new(body);
    for (k, v) in &case.headers {
        event.headers.insert(k, v.clone());
    }
    let result = file.mapping.apply(&event);
    match &result {
        Ok(actions) => reached.extend(actions.iter().map(|a| a.rule.clone())),
        Err(e) => reached.push(e.rule.clone()),
    }
    match (&case.expect, result) {
        (Expect::Error(want), Err(e)) if e.to_string().contains(want.as_str()) => Ok(()),
        (Expect::Error(want), Err(e)) => {
            Err(format!("expected an error containing {want:?}, got: {e}"))
        }
        (Expect::Error(want), Ok(got)) => Err(format!(
            "expected an error containing {want:?}, but the event mapped to {} action(s):\n{}",
            got.len(),
            pretty(&got)
        )),
        (Expect::Actions(_), Err(e)) => Err(format!("the event failed: {e}")),
        (Expect::Actions(want), Ok(got)) => {
            let mut lines = Vec::new();
            for (i, (rule, action)) in want.iter().enumerate() {
                let Some(g) = got.get(i) else {
                    lines.push(format!(
                        "action {}: expected {}, got nothing",
                        i + 1,
                        action.kind()
                    ));
                    continue;
                };
                if let Some(r) = rule {
                    if *r != g.rule {
                        lines.push(format!(
                            "action {}: expected from rule `{r}`, got from rule `{}`",
                            i + 1,
                            g.rule
                        ));
                    }
                }
                let (w, gv) = (to_json(action), to_json(&g.action));
                let mut diffs = Vec::new();
                diff("", &w, &gv, &mut diffs);
                if !diffs.is_empty() {
                    lines.push(format!("action {} (rule `{}`):", i + 1, g.rule));
                    lines.extend(diffs.into_iter().map(|d| format!("  {d}")));
                }
            }
            for (i, g) in got.iter().enumerate().skip(want.len()) {
                lines.push(format!(
                    "action {}: unexpected {} from rule `{}`",
                    i + 1,
                    g.action.kind(),
                    g.rule
                ));
            }
            if lines.is_empty() {
                Ok(())
            } else {
                lines.push(format!("got:\n{}", pretty(&got)));
                Err(lines.join("\n"))
            }
        }
    }
}

fn to_json(a: &Action) -> Value {
    serde_json::to_value(a).unwrap_or(Value::Null)
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Field-by-field differences, as `path: expected X, got Y`.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&at(k), wv, gv, out),
                    None => out.push(format!("{}: expected {wv}, missing", at(k))),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!("{}: not expected, got {gv}", at(k)));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ if same(want, got) => {}
        _ => out.push(format!(
            "{}: expected {want}, got {got}",
            if path.is_empty() { "value" } else { path }
        )),
    }
}
