//! The one door to JSONPath (RFC 9535) in hookgate: every path is compiled once, at load time,
//! and nothing else in the crate calls `jsonpath-rust` directly.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// A compiled JSONPath.
#[derive(Clone, Debug)]
pub struct JsonPath {
    source: String,
    query: JpQuery,
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
    pub fn compile(source: &str) -> Result<Self, PathError> {
        match parse_json_path(source) {
            Ok(query) => Ok(Self {
                source: source.to_owned(),
                query,
            }),
            Err(e) => Err(PathError {
                path: source.to_owned(),
                message: e.to_string(),
                offset: None,
            }),
        }
    }

    /// Every node the path selects, in document order.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match js_path_process(&self.query, value) {
            Ok(refs) => refs.into_iter().map(|r| r.val()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The first node the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.query(value).into_iter().next()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}
