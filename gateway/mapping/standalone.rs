//! Conditions and values written outside a mapping file: a subscription's `filter` and `template`
//! arrive as JSON (API) or YAML (subscriptions file). They go through the same compiler as mapping files,
//! so the language, its checks and its messages are the same everywhere.

use super::condition::Condition;
use super::transform::Lookups;
use super::value::{eval_object, Env, Headers, Scope, ValueExpr};
use super::yaml::{self, Ctx, Kind, Node};
use serde_json::{Map, Value};

/// A compiled `when:`-style condition over one JSON document.
#[derive(Debug)]
pub struct Filter(Condition);

/// A compiled payload shape: a map of field names to values (paths, templates, constants, ...).
#[derive(Debug)]
pub struct Template(Vec<(std::sync::Arc<str>, ValueExpr)>);

/// JSON is YAML: the located tree comes from the JSON text, so messages point into what was sent.
fn tree(what: &str, v: &Value) -> Result<(String, Node), String> {
    let text = serde_json::to_string(v).map_err(|e| format!("{what}: {e}"))?;
    let node = yaml::parse(what, &text).map_err(|d| d.message)?;
    Ok((text, node))
}

fn first_problem(what: &str, ctx: Ctx) -> String {
    ctx.diags
        .into_iter()
        .next()
        .map_or_else(|| format!("{what}: not valid"), |d| d.message)
}

impl Filter {
    pub fn compile(v: &Value) -> Result<Self, String> {
        let (text, node) = tree("filter", v)?;
        let lookups = Lookups::new();
        let env = Env {
            lookups: &lookups,
            in_for_each: false,
        };
        let mut ctx = Ctx::new("filter", &text);
        match Condition::compile(&mut ctx, &node, env) {
            Some(c) if ctx.diags.is_empty() => Ok(Filter(c)),
            _ => Err(first_problem("filter", ctx)),
        }
    }

    /// Does `doc` pass? A transform failing on it counts as an error, told apart from "no".
    pub fn matches(&self, doc: &Value) -> Result<bool, String> {
        let headers = Headers::new();
        let scope = Scope {
            root: doc,
            item: None,
            headers: &headers,
        };
        self.0
            .eval(scope)
            .map_err(|e| format!("{}: {}", e.field, e.reason))
    }
}

impl Template {
    pub fn compile(v: &Value) -> Result<Self, String> {
        if !v.is_object() {
            return Err("template: expected a map of field names to values".into());
        }
        let (text, node) = tree("template", v)?;
        let lookups = Lookups::new();
        let env = Env {
            lookups: &lookups,
            in_for_each: false,
        };
        let mut ctx = Ctx::new("template", &text);
        let mut fields = Vec::new();
        if let Kind::Map(entries) = &node.kind {
            for (k, n) in entries {
                if let Some(e) =
                    ValueExpr::compile(&mut ctx, n, &format!("template.{}", k.name), env)
                {
                    fields.push((k.name.as_str().into(), e));
                }
            }
        }
        if ctx.diags.is_empty() {
            Ok(Template(fields))
        } else {
            Err(first_problem("template", ctx))
        }
    }

    /// The payload for `doc`; fields whose value is missing are left out.
    pub fn render(&self, doc: &Value) -> Result<Map<String, Value>, String> {
        let headers = Headers::new();
        let scope = Scope {
            root: doc,
            item: None,
            headers: &headers,
        };
        eval_object(&self.0, scope).map_err(|e| format!("{}: {}", e.field, e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_from_json() {
        let f = Filter::compile(&json!({"path": "$.data.list", "equals": 5})).unwrap();
        assert!(f.matches(&json!({"data": {"list": 5}})).unwrap());
        assert!(!f.matches(&json!({"data": {"list": 6}})).unwrap());
        let e = Filter::compile(&json!({"path": "$.x", "equal": 5})).unwrap_err();
        assert!(e.contains("equal"), "{e}");
    }

    #[test]
    fn template_from_json() {
        let t =
            Template::compile(&json!({"text": "New contact {{ $.data.email }}", "n": 1})).unwrap();
        let out = t.render(&json!({"data": {"email": "a@b.c"}})).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"text": "New contact a@b.c", "n": 1})
        );
        assert!(Template::compile(&json!("x")).is_err());
    }
}
