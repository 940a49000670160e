//! `when:` conditions: a test on one subject (`path` or `header`, optionally transformed with
//! `then`), combined with `all`, `any` and `not`.
//!
//! A test passes when any node the subject selects passes it (`not_equals` and `exists: false`
//! pass when none does). Equality is by JSON value (numbers by numeric value), so `equals: 200`
//! does not match the text `"200"`; headers are text, so their constants are compared as text.

use super::value::{Env, EvalError, Scope, ValueExpr};
use super::yaml::{Ctx, Kind, Node};
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::Arc;

const TESTS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "exists",
    "matches",
    "gt",
    "gte",
    "lt",
    "lte",
];
const KEYS: &[&str] = &[
    "path",
    "header",
    "then",
    "equals",
    "not_equals",
    "in",
    "exists",
    "matches",
    "gt",
    "gte",
    "lt",
    "lte",
    "all",
    "any",
    "not",
];

#[derive(Debug)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test { subject: Box<ValueExpr>, test: Test },
}

#[derive(Debug)]
pub enum Test {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    InTable(Arc<Map<String, Value>>),
    Exists(bool),
    Matches(Regex),
    Compare(Ordering, Value),
}

#[derive(Debug, Clone, Copy)]
pub enum Ordering {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Condition {
    /// Compile a `when:` (or a part of one); every problem is reported in `ctx`.
    pub fn compile(ctx: &mut Ctx, node: &Node, env: Env) -> Option<Condition> {
        if let Kind::Seq(_) = node.kind {
            ctx.expected(node, "condition", "a map");
            if let Some(d) = ctx.diags.last_mut() {
                d.hint =
                    Some("to require several conditions, write all: [ {...}, {...} ]".to_owned());
            }
            return None;
        }
        let f = ctx.map(node, "condition", KEYS)?;
        let combinators: Vec<&str> = ["all", "any", "not"]
            .into_iter()
            .filter(|k| f.has(k))
            .collect();
        if let Some(&which) = combinators.first() {
            if f.entries.len() > 1 {
                ctx.error(
                    node.loc,
                    format!("condition: `{which}` stands alone in its map"),
                )
                .hint =
                    Some("put the other tests inside it, e.g. all: [ {...}, {...} ]".to_owned());
                return None;
            }
            let inner = f.get(which)?;
            return match which {
                "not" => Some(Condition::Not(Box::new(Self::compile(ctx, inner, env)?))),
                _ => {
                    let Kind::Seq(items) = &inner.kind else {
                        ctx.expected(inner, which, "a list of conditions");
                        return None;
                    };
                    let compiled: Vec<Option<Condition>> =
                        items.iter().map(|i| Self::compile(ctx, i, env)).collect();
                    let all: Option<Vec<Condition>> = compiled.into_iter().collect();
                    let all = all?;
                    Some(if which == "all" {
                        Condition::All(all)
                    } else {
                        Condition::Any(all)
                    })
                }
            };
        }
        let subject = match (f.get("path"), f.get("header")) {
            (Some(_), Some(_)) | (None, None) => {
                ctx.error(node.loc, "condition: test either a `path` or a `header`");
                None
            }
            _ => {
                // The subject is a value in its long form: path or header, plus `then`.
                let subject_node = subject_node(node);
                ValueExpr::compile(ctx, &subject_node, "condition", env)
            }
        };
        let tests: Vec<&str> = TESTS.iter().copied().filter(|k| f.has(k)).collect();
        let test = match tests.as_slice() {
            // A header's text is compared as text, unless `then` makes it something else.
            [one] => compile_test(
                ctx,
                one,
                f.get(one)?,
                f.has("header") && f.get("then").is_none_or(|t| !leaves_text(t)),
                env,
            ),
            [] if f.unknown => None,
            [] => {
                ctx.error(node.loc, "condition: no test").hint =
                    Some(format!("add one of: {}", TESTS.join(", ")));
                None
            }
            [_, second, ..] => {
                let at = f.key(second).map_or(node.loc, |k| k.loc);
                ctx.error(
                    at,
                    format!(
                        "condition: one test per condition, found {}",
                        tests.join(" and ")
                    ),
                )
                .hint = Some("combine several with all: [ {...}, {...} ]".to_owned());
                None
            }
        };
        Some(Condition::Test {
            subject: Box::new(subject?),
            test: test?,
        })
    }

    /// Does the event match? An error is a transform that failed on the subject.
    pub fn eval(&self, scope: Scope<'_>) -> Result<bool, EvalError> {
        Ok(match self {
            Condition::All(cs) => {
                for c in cs {
                    if !c.eval(scope)? {
                        return Ok(false);
                    }
                }
                true
            }
            Condition::Any(cs) => {
                for c in cs {
                    if c.eval(scope)? {
                        return Ok(true);
                    }
                }
                false
            }
            Condition::Not(c) => !c.eval(scope)?,
            Condition::Test { subject, test } => {
                let when = |e: EvalError| e.within("when");
                match test {
                    Test::NotEquals(c) => !subject.any(scope, |v| same(v, c)).map_err(when)?,
                    Test::Exists(want) => subject.any(scope, |_| true).map_err(when)? == *want,
                    _ => subject.any(scope, |v| test.passes(v)).map_err(when)?,
                }
            }
        })
    }
}

impl Test {
    fn passes(&self, v: &Value) -> bool {
        match self {
            Test::Equals(c) => same(v, c),
            Test::NotEquals(c) => !same(v, c),
            Test::In(cs) => cs.iter().any(|c| same(v, c)),
            Test::InTable(table) => match v {
                Value::String(s) => table.contains_key(s),
                Value::Number(_) | Value::Bool(_) => table.contains_key(&v.to_string()),
                _ => false,
            },
            Test::Exists(want) => *want,
            Test::Matches(re) => match v {
                Value::String(s) => re.is_match(s),
                Value::Number(_) | Value::Bool(_) => re.is_match(&v.to_string()),
                _ => false,
            },
            Test::Compare(op, c) => compare(v, c).is_some_and(|o| match op {
                Ordering::Gt => o.is_gt(),
                Ordering::Gte => o.is_ge(),
                Ordering::Lt => o.is_lt(),
                Ordering::Lte => o.is_le(),
            }),
        }
    }
}

/// JSON equality, with numbers compared by value (1 == 1.0).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// Numbers (or numeric text, as forms send) against a number; text against text (ISO dates sort).
fn compare(v: &Value, c: &Value) -> Option<std::cmp::Ordering> {
    match c {
        Value::Number(n) => {
            let x = match v {
                Value::Number(x) => x.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite())?,
                _ => return None,
            };
            x.partial_cmp(&n.as_f64()?)
        }
        Value::String(s) => v.as_str().map(|x| x.cmp(s.as_str())),
        _ => None,
    }
}

/// The part of a condition map that is the subject (path/header/then), as a value node.
/// Whether a `then` list holds a transform whose result may be other than text (`to_number`, `round`,
/// `split`, a lookup's value ...): after it, a header is no longer compared as text.
fn leaves_text(then: &Node) -> bool {
    const NOT_TEXT: &[&str] = &[
        "to_number",
        "to_bool",
        "divide",
        "from_minor_units",
        "multiply",
        "round",
        "split",
        "lookup",
    ];
    let name = |n: &Node| match &n.kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Map(m) => m.first().map(|(k, _)| k.name.clone()),
        _ => None,
    };
    match &then.kind {
        Kind::Seq(items) => items
            .iter()
            .filter_map(name)
            .any(|n| NOT_TEXT.contains(&n.as_str())),
        _ => name(then).is_some_and(|n| NOT_TEXT.contains(&n.as_str())),
    }
}

fn subject_node(node: &Node) -> Node {
    let entries = node
        .as_map()
        .unwrap_or(&[])
        .iter()
        .filter(|(k, _)| matches!(k.name.as_str(), "path" | "header" | "then"))
        .cloned()
        .collect();
    Node {
        kind: Kind::Map(entries),
        loc: node.loc,
    }
}

fn constant(ctx: &mut Ctx, n: &Node, what: &str, header: bool) -> Option<Value> {
    match &n.kind {
        Kind::Map(_) | Kind::Seq(_) => {
            ctx.expected(n, what, "a constant (text, a number, true/false or null)");
            None
        }
        Kind::Str(s) if s.starts_with('$') => {
            ctx.error(
                n.loc,
                format!("{what}: compares with a constant, not a path"),
            )
            .hint = Some(
                "to compare two fields, add a second condition or a `then` transform".to_owned(),
            );
            None
        }
        // Headers are text: `equals: 200` on a header means the text "200" (not after `then`).
        _ if header => Some(match n.to_json() {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        }),
        _ => Some(n.to_json()),
    }
}

fn compile_test(ctx: &mut Ctx, name: &str, n: &Node, header: bool, env: Env) -> Option<Test> {
    Some(match name {
        "equals" => Test::Equals(constant(ctx, n, name, header)?),
        "not_equals" => Test::NotEquals(constant(ctx, n, name, header)?),
        "in" => match &n.kind {
            Kind::Seq(items) => {
                let all: Option<Vec<Value>> = items
                    .iter()
                    .map(|i| constant(ctx, i, "in", header))
                    .collect();
                Test::In(all?)
            }
            Kind::Map(entries) if entries.len() == 1 && entries[0].0.name == "lookup" => {
                Test::InTable(super::transform::table(
                    ctx,
                    &entries[0].1,
                    "in.lookup",
                    env.lookups,
                )?)
            }
            _ => {
                ctx.expected(n, "in", "a list of constants, or { lookup: TABLE }");
                return None;
            }
        },
        "exists" => Test::Exists(ctx.bool(n, "exists")?),
        "matches" => {
            let src = ctx.string(n, "matches")?;
            match Regex::new(src) {
                Ok(re) => Test::Matches(re),
                Err(e) => {
                    super::transform::regex_error(ctx, n, &e);
                    return None;
                }
            }
        }
        op => {
            let ordering = match op {
                "gt" => Ordering::Gt,
                "gte" => Ordering::Gte,
                "lt" => Ordering::Lt,
                _ => Ordering::Lte,
            };
            let c = n.to_json();
            if !matches!(c, Value::Number(_) | Value::String(_)) {
                ctx.expected(n, op, "a number or text");
                return None;
            }
            Test::Compare(ordering, c)
        }
    })
}
