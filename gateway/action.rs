//! The inbound contract: what one webhook event becomes. Produced by `mapping`, delivered by `deliver`.
//!
//! The bodies serialize exactly as the upstream contacts API (Brevo API v3 compatible) takes them,
//! so the delivery worker sends [`Action::upstream`] as is unless `upstream.routes` overrides the route
//! (see `route.rs`, whose `action` body is this type's own JSON). An action serializes externally tagged:
//! `{"upsert_contact": {"email": ..., "attributes": {...}, "listIds": [...]}}` (also what `hookgate
//! try` prints and what a mapping's `tests:` expect).

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

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

/// The body of create/upsert: at least one of `email`, `ext_id` and the `SMS` attribute is set (a
/// mapping's `phone` is written as that attribute, where Brevo's API takes a phone number).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub attributes: Fields,
    #[serde(default, rename = "listIds", skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
    /// Whether the contact may be sent email at all: `true` after an unsubscribe or a complaint, so the
    /// platform stops mailing the address (Brevo's `emailBlacklisted`). Left out when not mapped.
    #[serde(
        default,
        rename = "emailBlacklisted",
        skip_serializing_if = "Option::is_none"
    )]
    pub email_blacklisted: Option<bool>,
    /// As `email_blacklisted`, for text messages: `true` after the phone's owner texted STOP (Brevo's
    /// `smsBlacklisted`).
    #[serde(
        default,
        rename = "smsBlacklisted",
        skip_serializing_if = "Option::is_none"
    )]
    pub sms_blacklisted: Option<bool>,
}

/// The attribute that holds a contact's phone number, by which the upstream also finds the contact
/// (Brevo's `SMS`, `identifierType=phone_id`).
pub const PHONE_ATTRIBUTE: &str = "SMS";

impl Contact {
    /// The phone number the contact is identified by, if any (its `SMS` attribute, as text).
    pub fn phone(&self) -> Option<&str> {
        self.attributes.get(PHONE_ATTRIBUTE).and_then(Value::as_str)
    }
}

/// Identifies the contact an update applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    Email(String),
    ExtId(String),
    /// A phone number in international format, as the contact's `SMS` attribute holds it.
    Phone(String),
}

impl Identifier {
    /// The identifier's value.
    pub fn value(&self) -> &str {
        match self {
            Identifier::Email(v) | Identifier::ExtId(v) | Identifier::Phone(v) => v,
        }
    }

    /// Its kind, as `{identifier_type}` in a route names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Email(_) => "email",
            Identifier::ExtId(_) => "ext_id",
            Identifier::Phone(_) => "phone",
        }
    }
}

/// An update: the identifier goes in the URL, the rest is the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdate {
    pub identifier: Identifier,
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub attributes: Fields,
    #[serde(default, rename = "listIds", skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
    /// As [`Contact::email_blacklisted`].
    #[serde(
        default,
        rename = "emailBlacklisted",
        skip_serializing_if = "Option::is_none"
    )]
    pub email_blacklisted: Option<bool>,
    /// As [`Contact::sms_blacklisted`].
    #[serde(
        default,
        rename = "smsBlacklisted",
        skip_serializing_if = "Option::is_none"
    )]
    pub sms_blacklisted: Option<bool>,
}

/// Who a custom event is about: at least one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
    /// A phone number in international format (Brevo's `phone_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEvent {
    pub event_name: String,
    /// RFC 3339; the upstream uses the time it receives the event when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    pub identifiers: Identifiers,
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub contact_properties: Fields,
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub event_properties: Fields,
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
                    Identifier::Phone(p) => {
                        format!("/contacts/{}?identifierType=phone_id", percent_encode(p))
                    }
                };
                let mut body = Map::new();
                if !u.attributes.is_empty() {
                    body.insert("attributes".into(), to_body(&u.attributes));
                }
                if !u.list_ids.is_empty() {
                    body.insert("listIds".into(), Value::from(u.list_ids.clone()));
                }
                if let Some(b) = u.email_blacklisted {
                    body.insert("emailBlacklisted".into(), Value::Bool(b));
                }
                if let Some(b) = u.sms_blacklisted {
                    body.insert("smsBlacklisted".into(), Value::Bool(b));
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

/// Named values of an action (`attributes`, `contact_properties`, `event_properties`): a JSON object,
/// kept in the order the mapping writes them (or, taken from a payload's object, in its order). Named
/// fields share their names with the compiled mapping (`Arc<str>`), so building an action neither
/// copies nor hashes a name: that was most of a mapping's cost; members taken from a payload's object
/// are copied. Equality ignores order, as for a JSON object.
#[derive(Clone, Debug, Default)]
pub struct Fields(Vec<(Arc<str>, Value)>);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    /// Set `name`; an existing value of that name is replaced in place, as in a JSON object.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, value: Value) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Append a field the caller knows is not set yet (a mapping's field names are distinct: the YAML
    /// parser rejects duplicate keys; so are a JSON object's members), without searching for it.
    pub(crate) fn push_new(&mut self, name: Arc<str>, value: Value) {
        debug_assert!(self.get(&name).is_none(), "duplicate field {name}");
        self.0.push((name, value));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (&**n, v))
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl<N: Into<Arc<str>>> FromIterator<(N, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (N, Value)>>(iter: I) -> Self {
        let mut f = Fields::new();
        for (n, v) in iter {
            f.insert(n, v);
        }
        f
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (n, v) in self.iter() {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Fields, A::Error> {
                let mut f = Fields::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some((n, v)) = a.next_entry::<String, Value>()? {
                    f.insert(n, v);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
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
            attributes: Fields::new(),
            list_ids: vec![],
            email_blacklisted: None,
            sms_blacklisted: None,
        });
        assert_eq!(u.upstream().path, "/contacts/a%2Bb%40c.d");
        assert_eq!(u.upstream().method, http::Method::PUT);
        assert_eq!(u.upstream().body, json!({}));
        // An unsubscribe: the contact may no longer be mailed, in each kind of contact action.
        let u = Action::UpdateContact(ContactUpdate {
            identifier: Identifier::Email("a@b.c".into()),
            attributes: Fields::new(),
            list_ids: vec![],
            email_blacklisted: Some(true),
            sms_blacklisted: None,
        });
        assert_eq!(u.upstream().body, json!({"emailBlacklisted": true}));
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            json!({"update_contact": {"identifier": {"email": "a@b.c"}, "emailBlacklisted": true}})
        );
        let c = Action::CreateContact(Contact {
            email: Some("a@b.c".into()),
            email_blacklisted: Some(false),
            ..Default::default()
        });
        assert_eq!(
            c.upstream().body,
            json!({"email": "a@b.c", "emailBlacklisted": false, "updateEnabled": false})
        );
        // A text STOP: the phone is the identifier, in the URL as Brevo's phone_id, and the body says
        // the number may no longer be texted.
        let u = Action::UpdateContact(ContactUpdate {
            identifier: Identifier::Phone("+14155550100".into()),
            attributes: Fields::new(),
            list_ids: vec![],
            email_blacklisted: None,
            sms_blacklisted: Some(true),
        });
        let r = u.upstream();
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (
                http::Method::PUT,
                "/contacts/%2B14155550100?identifierType=phone_id",
                json!({"smsBlacklisted": true})
            )
        );
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            json!({"update_contact": {"identifier": {"phone": "+14155550100"}, "smsBlacklisted": true}})
        );
        // An upsert by phone carries it as the SMS attribute, the one Brevo finds the contact by.
        let c = Action::UpsertContact(Contact {
            attributes: [(PHONE_ATTRIBUTE, json!("+14155550100"))]
                .into_iter()
                .collect(),
            sms_blacklisted: Some(false),
            ..Default::default()
        });
        assert_eq!(c.upstream().path, "/contacts");
        assert_eq!(
            c.upstream().body,
            json!({"attributes": {"SMS": "+14155550100"}, "smsBlacklisted": false, "updateEnabled": true})
        );
        let Action::UpsertContact(contact) = &c else {
            unreachable!()
        };
        assert_eq!(contact.phone(), Some("+14155550100"));
        // An event about a phone names it as phone_id.
        let e = Action::CustomEvent(CustomEvent {
            event_name: "sms_delivered".into(),
            identifiers: Identifiers {
                phone_id: Some("+14155550100".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(
            e.upstream().body,
            json!({"event_name": "sms_delivered", "identifiers": {"phone_id": "+14155550100"}})
        );
    }
}

#[cfg(test)]
mod fields_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_behave_as_a_json_object() {
        let mut f: Fields = [("B", json!(1)), ("A", json!("x"))].into_iter().collect();
        f.insert("B", json!(2));
        assert_eq!(f.len(), 2);
        assert_eq!(f.get("B"), Some(&json!(2)));
        assert_eq!(f.get("C"), None);
        // in order, the replaced value in its first place
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"B":2,"A":"x"}"#);
        // a JSON object in, the last of a repeated name wins, as serde_json's map does
        let back: Fields = serde_json::from_str(r#"{"B":1,"A":"x","B":2}"#).unwrap();
        assert_eq!(back, f);
        let map: Map<String, Value> = serde_json::from_str(r#"{"B":1,"A":"x","B":2}"#).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), Value::Object(map));
        // equality ignores order, as for a JSON object, but not values or names
        let reordered: Fields = [("A", json!("x")), ("B", json!(2))].into_iter().collect();
        assert_eq!(reordered, f);
        assert_ne!(
            reordered,
            [("A", json!("x"))].into_iter().collect::<Fields>()
        );
        assert_ne!(
            reordered,
            [("A", json!("x")), ("B", json!(3))]
                .into_iter()
                .collect::<Fields>()
        );
        assert!(serde_json::from_str::<Fields>("[1]").is_err());
    }
}
