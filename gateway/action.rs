//! The inbound contract: what one webhook event becomes. Produced by `mapping`, delivered by `deliver`.
//!
//! The bodies serialize exactly as the upstream contacts API (Brevo API v3 compatible) takes them,
//! so the delivery worker sends [`Action::upstream`] as is unless `upstream.routes` overrides the route
//! (see `route.rs`, whose `action` body is this type's own JSON). An action serializes externally tagged:
//! `{"upsert_contact": {"email": ..., "attributes": {...}, "listIds": [...]}}` (also what `hookgate
//! try` prints and what a mapping's `tests:` expect).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One action produced by a mapping rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `POST /contacts` with `updateEnabled: false`.
    CreateContact(Contact),
    /// `POST /contacts` with `updateEnabled: true`.
    UpsertContact(Contact),
    /// `PUT /contacts/{identifier}`.
    UpdateContact(ContactUpdate),
    /// `POST /events`.
    CustomEvent(CustomEvent),
}

/// The body of create/upsert: at least one of `email`, `ext_id` is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default, rename = "listIds", skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
}

/// Identifies the contact an update applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    Email(String),
    ExtId(String),
}

/// An update: the identifier goes in the URL, the rest is the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdate {
    pub identifier: Identifier,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default, rename = "listIds", skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
}

/// Who a custom event is about: at least one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEvent {
    pub event_name: String,
    /// RFC 3339; the upstream uses the time it receives the event when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    pub identifiers: Identifiers,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub contact_properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub event_properties: Map<String, Value>,
}

/// The HTTP request an action becomes upstream (relative to `upstream.url`).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamRequest {
    pub method: http::Method,
    /// Path and query, e.g. `/contacts/jane%40example.com` or `/contacts/42?identifierType=ext_id`.
    pub path: String,
    pub body: Value,
}

impl Action {
    /// `create_contact`, `upsert_contact`, ... (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreateContact(_) => "create_contact",
            Action::UpsertContact(_) => "upsert_contact",
            Action::UpdateContact(_) => "update_contact",
            Action::CustomEvent(_) => "custom_event",
        }
    }

    /// The default route and body (DESIGN.md's table).
    pub fn upstream(&self) -> UpstreamRequest {
        match self {
            Action::CreateContact(c) | Action::UpsertContact(c) => {
                let mut body = to_body(c);
                if let Value::Object(m) = &mut body {
                    m.insert(
                        "updateEnabled".into(),
                        Value::Bool(matches!(self, Action::UpsertContact(_))),
                    );
                }
                UpstreamRequest {
                    method: http::Method::POST,
                    path: "/contacts".into(),
                    body,
                }
            }
            Action::UpdateContact(u) => {
                let path = match &u.identifier {
                    Identifier::Email(e) => format!("/contacts/{}", percent_encode(e)),
                    Identifier::ExtId(id) => {
                        format!("/contacts/{}?identifierType=ext_id", percent_encode(id))
                    }
                };
                let mut body = Map::new();
                if !u.attributes.is_empty() {
                    body.insert("attributes".into(), Value::Object(u.attributes.clone()));
                }
                if !u.list_ids.is_empty() {
                    body.insert("listIds".into(), Value::from(u.list_ids.clone()));
                }
                UpstreamRequest {
                    method: http::Method::PUT,
                    path,
                    body: Value::Object(body),
                }
            }
            Action::CustomEvent(e) => UpstreamRequest {
                method: http::Method::POST,
                path: "/events".into(),
                body: to_body(e),
            },
        }
    }
}

/// Serialize a body; these types have string keys only, so this cannot fail.
fn to_body<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Percent-encode a path segment (everything but RFC 3986 unreserved characters).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_bodies() {
        let c = Action::UpsertContact(Contact {
            email: Some("a@b.c".into()),
            list_ids: vec![3],
            ..Default::default()
        });
        let r = c.upstream();
        assert_eq!(r.path, "/contacts");
        assert_eq!(
            r.body,
            json!({"email": "a@b.c", "listIds": [3], "updateEnabled": true})
        );
        let u = Action::UpdateContact(ContactUpdate {
            identifier: Identifier::Email("a+b@c.d".into()),
            attributes: Map::new(),
            list_ids: vec![],
        });
        assert_eq!(u.upstream().path, "/contacts/a%2Bb%40c.d");
        assert_eq!(u.upstream().method, http::Method::PUT);
    }
}
