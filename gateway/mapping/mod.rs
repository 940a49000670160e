//! Mapping files: the declarative JSONPath language that turns a verified webhook into contact
//! actions. Everything here is compiled once at load (paths, regexes, templates, lookups) and
//! checked with located diagnostics; applying a mapping is pure and never panics on any JSON.
//!
//! Module map: `yaml` (located tree) → `file` (a whole file, loading) → `rule` (rules, actions) →
//! `condition` / `value` / `transform`; `diagnostic` for reports; `tests` runs a file's `tests:`.
//! The language reference is `docs/mappings.md`.

mod condition;
mod diagnostic;
mod file;
mod place;
mod rule;
pub mod standalone;
pub mod tests;
mod transform;
mod value;
pub(crate) mod yaml;

/// The "did you mean" hint of mapping errors, also used for unknown configuration keys.
pub(crate) use diagnostic::suggest;
pub use diagnostic::{Diagnostic, Severity, Site};
pub use file::{
    load_files, parse_source_file, read_text, source_paths,
    MAX_FILE_BYTES as MAX_MAPPING_FILE_BYTES,
};
pub use rule::MapError;
pub use transform::NAMES as TRANSFORMS;
pub use value::Headers;

use crate::action::Action;
use crate::inbound::source::SourceSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The compiled rules of one source.
#[derive(Debug, Default)]
pub struct Mapping {
    rules: Vec<rule::Rule>,
}

/// A parsed and compiled source file.
#[derive(Debug)]
pub struct SourceFile {
    /// The file it came from (test payload paths are relative to its directory).
    pub path: PathBuf,
    /// SHA-256 of the text that was parsed, hex: what `GET /v1/sources` reports.
    pub hash: String,
    pub head: SourceSpec,
    pub mapping: Mapping,
    pub tests: Vec<tests::TestCase>,
    /// What loads but is likely a mistake (`hookgate check` prints them, `serve` logs them).
    pub warnings: Vec<Diagnostic>,
}

/// One received event as the mapper sees it: the parsed body and the request headers.
#[derive(Clone, Debug, Default)]
pub struct Event {
    pub body: Value,
    pub headers: Headers,
}

impl Event {
    pub fn new(body: Value) -> Self {
        Self {
            body,
            headers: Headers::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// An action with where it came from: the delivery worker builds a stable Idempotency-Key from the
/// event id, `rule` and `index` (the action's position among the rule's actions for this event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MappedAction {
    pub rule: String,
    pub index: usize,
    #[serde(flatten)]
    pub action: Action,
}

impl Mapping {
    /// How many rules the mapping has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The actions one event produces: every matching rule in file order, until a matching rule
    /// with `stop: true`. Any failure (a required value missing, a value of the wrong type) fails
    /// the whole event, so it can go to the dead letters with the reason.
    pub fn apply(&self, event: &Event) -> Result<Vec<MappedAction>, MapError> {
        let scope = value::Scope {
            root: &event.body,
            item: None,
            headers: &event.headers,
        };
        let mut out = Vec::new();
        for rule in &self.rules {
            if rule.apply(scope, &mut out)? && rule.stop {
                break;
            }
        }
        Ok(out)
    }

    /// The rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &rule::Rule> {
        self.rules.iter()
    }

    /// The rule names, in file order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }
}

/// The JSON type of a value, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
