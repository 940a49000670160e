//! Per-action upstream routes: which method, path and body an action is sent with. The defaults are the
//! Brevo API v3 routes of [`Action::upstream`]; `upstream.routes` overrides them per action type, for an
//! upstream that is not Brevo-shaped. Compiled (and so validated) once at config load; rendering an
//! action can then fail only when the action lacks a value a path placeholder needs.

use crate::action::{Action, UpstreamRequest};
use serde_json::Value;
use std::collections::BTreeMap;

/// The action types a route can be configured for, in the order of the docs.
pub const ACTION_TYPES: [&str; 4] = [
    "create_contact",
    "upsert_contact",
    "update_contact",
    "custom_event",
];

/// Methods a route may use: the ones a REST contacts API takes. Anything else is a typo.
const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "GET"];

/// The placeholders each action type offers to a path template. A placeholder is known per type, but an
/// action may still lack its value (an upsert identified by email has no `ext_id`).
pub fn placeholders(kind: &str) -> &'static [&'static str] {
    match kind {
        "create_contact" | "upsert_contact" => &["email", "ext_id", "phone"],
        "update_contact" => &["identifier", "identifier_type", "email", "ext_id", "phone"],
        "custom_event" => &["event_name", "event_date", "email", "ext_id", "phone"],
        _ => &[],
    }
}

/// The value of placeholder `name` in `action`, if the action has it (an empty value counts as none).
fn value<'a>(action: &'a Action, name: &str) -> Option<&'a str> {
    match (action, name) {
        (Action::CreateContact(c) | Action::UpsertContact(c), "email") => c.email.as_deref(),
        (Action::CreateContact(c) | Action::UpsertContact(c), "ext_id") => c.ext_id.as_deref(),
        (Action::CreateContact(c) | Action::UpsertContact(c), "phone") => c.phone(),
        (Action::UpdateContact(u), "identifier") => Some(u.identifier.value()),
        (Action::UpdateContact(u), "identifier_type") => Some(u.identifier.kind()),
        // Only the identifier's own kind has a value: an update by email has no `{ext_id}`.
        (Action::UpdateContact(u), _) => {
            Some(u.identifier.value()).filter(|_| u.identifier.kind() == name)
        }
        (Action::CustomEvent(e), "event_name") => Some(e.event_name.as_str()),
        (Action::CustomEvent(e), "event_date") => e.event_date.as_deref(),
        (Action::CustomEvent(e), "email") => e.identifiers.email_id.as_deref(),
        (Action::CustomEvent(e), "ext_id") => e.identifiers.ext_id.as_deref(),
        (Action::CustomEvent(e), "phone") => e.identifiers.phone_id.as_deref(),
        _ => None,
    }
    .filter(|v| !v.is_empty())
}

/// What the request body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// The Brevo API v3 body of DESIGN.md's table (the default).
    Brevo,
    /// hookgate's own action JSON, tagged with its type: `{"update_contact": {...}}`, as `hookgate try`
    /// prints it; for a service of your own that wants everything the mapping produced.
    Action,
    /// No body and no content type (e.g. a `DELETE`).
    None,
}

impl BodyShape {
    const NAMES: [&'static str; 3] = ["brevo", "action", "none"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "brevo" => Some(Self::Brevo),
            "action" => Some(Self::Action),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Var(&'static str),
}

/// A path (and query) with `{placeholder}`s, e.g. `/contacts/{ext_id}?identifierType=ext_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct PathTemplate(Vec<Part>);

impl PathTemplate {
    /// Parse for action type `kind`; every problem is reported.
    fn parse(kind: &str, text: &str) -> Result<Self, Vec<String>> {
        let known = placeholders(kind);
        let mut problems = Vec::new();
        if !text.starts_with('/') {
            problems.push(format!("`{text}` must start with `/`"));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '#')
        {
            problems.push(format!(
                "`{text}` contains {c:?}; write it percent-encoded (only placeholder values are encoded for you)"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find('{');
            let close = rest.find('}');
            match (open, close) {
                (None, None) => {
                    parts.push(Part::Lit(rest.to_string()));
                    break;
                }
                (Some(o), Some(c)) if o < c => {
                    if o > 0 {
                        parts.push(Part::Lit(rest[..o].to_string()));
                    }
                    let name = &rest[o + 1..c];
                    match known.iter().find(|k| **k == name) {
                        Some(k) => parts.push(Part::Var(k)),
                        None if name.contains('{') => {
                            problems.push(format!("`{text}`: `{{` inside a placeholder"));
                        }
                        None => problems.push(format!(
                            "unknown placeholder `{{{name}}}` for {kind}; known: {}",
                            known
                                .iter()
                                .map(|k| format!("{{{k}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    }
                    rest = &rest[c + 1..];
                }
                (Some(_), None) => {
                    problems.push(format!("`{text}`: a `{{` is not closed"));
                    break;
                }
                (_, Some(_)) => {
                    problems.push(format!("`{text}`: a `}}` has no `{{`"));
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(Self(parts))
        } else {
            Err(problems)
        }
    }

    /// The path with every placeholder replaced by its percent-encoded value, or the placeholders the
    /// action lacks.
    fn render(&self, action: &Action) -> Result<String, Vec<&'static str>> {
        let mut out = String::new();
        let mut missing = Vec::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(name) => match value(action, name) {
                    Some(v) => out.push_str(&crate::action::percent_encode(v)),
                    None => missing.push(*name),
                },
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }
}

/// One action type's route; what is not overridden stays the default.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    method: Option<http::Method>,
    path: Option<PathTemplate>,
    body: BodyShape,
}

/// A route problem found at load: which field (`method`, `path`, `body`, or `""` for the action type
/// itself) and what is wrong.
#[derive(Debug, PartialEq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

impl Route {
    /// Compile one `upstream.routes.<kind>` entry; every problem is returned.
    pub fn compile(
        kind: &str,
        method: Option<&str>,
        path: Option<&str>,
        body: Option<&str>,
    ) -> Result<Route, Vec<Problem>> {
        if !ACTION_TYPES.contains(&kind) {
            return Err(vec![Problem {
                field: "",
                message: format!(
                    "unknown action type `{kind}`; one of {}",
                    ACTION_TYPES.join(", ")
                ),
            }]);
        }
        let mut problems = Vec::new();
        let method = method.and_then(|m| {
            let upper = m.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                http::Method::from_bytes(upper.as_bytes()).ok()
            } else {
                problems.push(Problem {
                    field: "method",
                    message: format!("unknown method `{m}`; one of {}", METHODS.join(", ")),
                });
                None
            }
        });
        let path = path.and_then(|p| match PathTemplate::parse(kind, p) {
            Ok(t) => Some(t),
            Err(ps) => {
                problems.extend(ps.into_iter().map(|message| Problem {
                    field: "path",
                    message,
                }));
                None
            }
        });
        let body = match body.map(|b| (b, BodyShape::parse(b))) {
            None => BodyShape::Brevo,
            Some((_, Some(shape))) => shape,
            Some((b, None)) => {
                problems.push(Problem {
                    field: "body",
                    message: format!(
                        "unknown body shape `{b}`; one of {}",
                        BodyShape::NAMES.join(", ")
                    ),
                });
                BodyShape::Brevo
            }
        };
        if problems.is_empty() {
            Ok(Route { method, path, body })
        } else {
            Err(problems)
        }
    }
}

/// The request an action becomes: its type's route applied over the default.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: http::Method,
    /// Path and query, relative to `upstream.url`.
    pub path: String,
    /// `None`: send no body.
    pub body: Option<Value>,
}

/// One configured route as written: `(action type, method, path, body)`.
pub type Entry<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Every action type's route (the default where none is configured).
#[derive(Clone, Debug, Default)]
pub struct Routes(BTreeMap<&'static str, Route>);

impl Routes {
    /// From `(action type, method, path, body)` entries; every problem, keyed by action type.
    pub fn compile<'a>(
        entries: impl IntoIterator<Item = Entry<'a>>,
    ) -> Result<Routes, Vec<(String, Problem)>> {
        let mut routes = BTreeMap::new();
        let mut problems = Vec::new();
        for (kind, method, path, body) in entries {
            match Route::compile(kind, method, path, body) {
                Ok(r) => {
                    if let Some(k) = ACTION_TYPES.iter().find(|k| **k == kind) {
                        routes.insert(*k, r);
                    }
                }
                Err(ps) => problems.extend(ps.into_iter().map(|p| (kind.to_string(), p))),
            }
        }
        if problems.is_empty() {
            Ok(Routes(routes))
        } else {
            Err(problems)
        }
    }

    /// The request for `action`, or why it cannot be sent: a path placeholder the action has no value for
    /// (sending it to another URL would update the wrong contact, or none).
    pub fn request(&self, action: &Action) -> Result<Request, String> {
        let default: UpstreamRequest = action.upstream();
        let Some(route) = self.0.get(action.kind()) else {
            return Ok(Request {
                method: default.method,
                path: default.path,
                body: Some(default.body),
            });
        };
        let path = match &route.path {
            None => default.path,
            Some(t) => t.render(action).map_err(|missing| {
                format!(
                    "the route of {} needs {} in its path, which this action has no value for",
                    action.kind(),
                    missing
                        .iter()
                        .map(|m| format!("{{{m}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        };
        let body = match route.body {
            BodyShape::Brevo => Some(default.body),
            BodyShape::Action => Some(serde_json::to_value(action).unwrap_or(Value::Null)),
            BodyShape::None => None,
        };
        Ok(Request {
            method: route.method.clone().unwrap_or(default.method),
            path,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Contact, ContactUpdate, CustomEvent, Identifier, Identifiers};
    use serde_json::json;

    fn routes(entries: &[Entry]) -> Routes {
        Routes::compile(entries.iter().copied()).unwrap()
    }

    fn update(id: Identifier) -> Action {
        Action::UpdateContact(ContactUpdate {
            identifier: id,
            attributes: crate::action::Fields::from_iter([("PLAN", json!("pro"))]),
            list_ids: vec![],
            email_blacklisted: None,
            sms_blacklisted: None,
        })
    }

    #[test]
    fn no_route_is_the_default() {
        let a = update(Identifier::Email("a+b@c.d".into()));
        let r = Routes::default().request(&a).unwrap();
        assert_eq!(r.method, http::Method::PUT);
        assert_eq!(r.path, "/contacts/a%2Bb%40c.d");
        assert_eq!(r.body, Some(json!({"attributes": {"PLAN": "pro"}})));
    }

    #[test]
    fn overrides_method_path_and_body() {
        let rs = routes(&[(
            "update_contact",
            Some("patch"),
            Some("/v2/people/{identifier_type}/{identifier}?src=hg"),
            Some("action"),
        )]);
        let r = rs
            .request(&update(Identifier::ExtId("42/x y".into())))
            .unwrap();
        assert_eq!(r.method, http::Method::PATCH);
        assert_eq!(r.path, "/v2/people/ext_id/42%2Fx%20y?src=hg");
        assert_eq!(
            r.body,
            Some(
                json!({"update_contact": {"identifier": {"ext_id": "42/x y"}, "attributes": {"PLAN": "pro"}}})
            )
        );
        // An unsubscribe travels in either body.
        let unsubscribed = Action::UpdateContact(ContactUpdate {
            identifier: Identifier::Email("a@b.c".into()),
            attributes: crate::action::Fields::new(),
            list_ids: vec![],
            email_blacklisted: Some(true),
            sms_blacklisted: None,
        });
        assert_eq!(
            rs.request(&unsubscribed).unwrap().body,
            Some(
                json!({"update_contact": {"identifier": {"email": "a@b.c"}, "emailBlacklisted": true}})
            )
        );
        assert_eq!(
            Routes::default().request(&unsubscribed).unwrap().body,
            Some(json!({"emailBlacklisted": true}))
        );
        // other types keep their defaults
        let e = Action::CustomEvent(CustomEvent {
            event_name: "paid".into(),
            identifiers: Identifiers {
                email_id: Some("a@b.c".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(rs.request(&e).unwrap().path, "/events");
    }

    #[test]
    fn a_missing_placeholder_value_is_an_error_not_another_url() {
        let rs = routes(&[(
            "upsert_contact",
            None,
            Some("/contacts/{ext_id}"),
            Some("none"),
        )]);
        let by_email = Action::UpsertContact(Contact {
            email: Some("a@b.c".into()),
            ..Default::default()
        });
        let e = rs.request(&by_email).unwrap_err();
        assert!(
            e.contains("{ext_id}") && e.contains("upsert_contact"),
            "{e}"
        );
        let by_id = Action::UpsertContact(Contact {
            ext_id: Some("7".into()),
            ..Default::default()
        });
        let r = rs.request(&by_id).unwrap();
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (http::Method::POST, "/contacts/7", None)
        );
        // an update by email has no ext_id either
        let rs = routes(&[("update_contact", None, Some("/c/{ext_id}"), None)]);
        assert!(rs
            .request(&update(Identifier::Email("a@b.c".into())))
            .is_err());
    }

    #[test]
    fn a_phone_is_a_placeholder_of_every_action() {
        let rs = routes(&[
            (
                "update_contact",
                None,
                Some("/p/{identifier_type}/{identifier}/{phone}"),
                None,
            ),
            ("upsert_contact", None, Some("/p/{phone}"), None),
            ("custom_event", None, Some("/p/{phone}/{event_name}"), None),
        ]);
        let r = rs
            .request(&update(Identifier::Phone("+14155550100".into())))
            .unwrap();
        assert_eq!(r.path, "/p/phone/%2B14155550100/%2B14155550100");
        // an update by phone has no email, and one by email no phone
        let rs_email = routes(&[("update_contact", None, Some("/c/{email}"), None)]);
        assert!(rs_email
            .request(&update(Identifier::Phone("+1".into())))
            .is_err());
        assert!(rs
            .request(&update(Identifier::Email("a@b.c".into())))
            .is_err());
        let by_phone = Action::UpsertContact(Contact {
            attributes: crate::action::Fields::from_iter([("SMS", json!("+33612345678"))]),
            ..Default::default()
        });
        assert_eq!(rs.request(&by_phone).unwrap().path, "/p/%2B33612345678");
        let by_email = Action::UpsertContact(Contact {
            email: Some("a@b.c".into()),
            ..Default::default()
        });
        assert!(rs.request(&by_email).is_err());
        let e = Action::CustomEvent(CustomEvent {
            event_name: "sms_delivered".into(),
            identifiers: Identifiers {
                phone_id: Some("+33612345678".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(
            rs.request(&e).unwrap().path,
            "/p/%2B33612345678/sms_delivered"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let e = Routes::compile([
            ("delete_contact", Some("DELETE"), None, None),
            (
                "update_contact",
                Some("FETCH"),
                Some("contacts/{mail}/{"),
                Some("xml"),
            ),
        ])
        .unwrap_err();
        let got: Vec<(&str, &str)> = e.iter().map(|(k, p)| (k.as_str(), p.field)).collect();
        assert_eq!(
            got,
            vec![
                ("delete_contact", ""),
                ("update_contact", "method"),
                ("update_contact", "path"),
                ("update_contact", "path"),
                ("update_contact", "path"),
                ("update_contact", "body"),
            ],
            "{e:?}"
        );
        let text: Vec<&str> = e.iter().map(|(_, p)| p.message.as_str()).collect();
        assert!(text[2].contains("must start with `/`"), "{text:?}");
        assert!(
            text[3].contains("unknown placeholder `{mail}`") && text[3].contains("{identifier}"),
            "{text:?}"
        );
        assert!(text[4].contains("not closed"), "{text:?}");
        assert!(Routes::compile([("custom_event", None, Some("/e/{a}}"), None)]).is_err());
        assert!(Routes::compile([("custom_event", None, Some("/e }"), None)]).is_err());
        assert!(
            Routes::compile([("custom_event", None, Some("/e/{event_name}#x"), None)]).is_err()
        );
    }
}
