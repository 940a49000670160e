//! Rules and their actions: compiled from the `rules:` list, applied to one event.
//!
//! A rule is `name`, an optional `when`, an optional `for_each` and one or more actions, written
//! either as keys of the rule (`upsert_contact: {...}`, several kinds allowed) or as a list under
//! `actions:`. Every matching rule fires, in file order, until one with `stop: true` matches.

use super::condition::Condition;
use super::value::{
    eval_fields, first, for_each_elements, looks_like_path, not_a_list, Env, EvalError, FieldSpecs,
    Scope, ValueExpr,
};
use super::yaml::{Ctx, Kind, Node};
use super::MappedAction;
use crate::action::{
    Action, Contact, ContactUpdate, CustomEvent, Fields, Identifier, Identifiers, PHONE_ATTRIBUTE,
};
use crate::jsonpath::JsonPath;
use serde_json::Value;
use std::borrow::Cow;

pub const ACTION_KINDS: &[&str] = &[
    "create_contact",
    "upsert_contact",
    "update_contact",
    "custom_event",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "when",
    "for_each",
    "stop",
    "actions",
    "create_contact",
    "upsert_contact",
    "update_contact",
    "custom_event",
];
const CONTACT_KEYS: &[&str] = &[
    "email",
    "ext_id",
    "phone",
    "attributes",
    "list_ids",
    "email_blacklisted",
    "sms_blacklisted",
];
const EVENT_KEYS: &[&str] = &[
    "event_name",
    "event_date",
    "email",
    "ext_id",
    "phone",
    "contact_properties",
    "event_properties",
];
/// The keys that identify a contact: at least one per action.
const ID_KEYS: [&str; 3] = ["email", "ext_id", "phone"];

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    /// Where the name is written, for a warning found later (`check`: a rule no test reaches).
    pub site: super::diagnostic::Site,
    when: Option<Condition>,
    for_each: Option<JsonPath>,
    /// `for_each: $`: a body that is one object is one event (see `apply`).
    over_body: bool,
    /// `for_each` over a path that selects nodes (a filter, a wildcard): each node is an element.
    over_selection: bool,
    pub stop: bool,
    actions: Vec<ActionSpec>,
}

#[derive(Debug)]
enum ActionSpec {
    Contact {
        upsert: bool,
        ids: Ids,
        attributes: FieldsExpr,
        list_ids: Option<ValueExpr>,
        flags: Flags,
    },
    Update {
        ids: Ids,
        attributes: FieldsExpr,
        list_ids: Option<ValueExpr>,
        flags: Flags,
    },
    Event {
        name: ValueExpr,
        date: Option<ValueExpr>,
        ids: Ids,
        contact_properties: FieldsExpr,
        event_properties: FieldsExpr,
    },
}

/// An action's `attributes`, `contact_properties` or `event_properties`: named values, or a path
/// (`$.properties`, `"@.properties"` in a `for_each`) whose object's members are taken as they are, for senders whose properties are their users' own
/// (Segment's `properties`), which no file can list.
#[derive(Debug)]
enum FieldsExpr {
    Named(FieldSpecs),
    Members(JsonPath),
}

impl FieldsExpr {
    fn eval(&self, scope: Scope<'_>) -> Result<Fields, EvalError> {
        let path = match self {
            FieldsExpr::Named(specs) => return eval_fields(specs, scope),
            FieldsExpr::Members(path) => path,
        };
        match first(path, scope) {
            None | Some(Value::Null) => Ok(Fields::new()),
            // A null member is missing, as a named field's null is: left out, never sent empty.
            Some(Value::Object(members)) => {
                let mut out = Fields::with_capacity(members.len());
                for (name, v) in members.iter().filter(|(_, v)| !v.is_null()) {
                    out.push_new(name.as_str().into(), v.clone());
                }
                Ok(out)
            }
            Some(other) => Err(EvalError {
                field: String::new(),
                reason: format!(
                    "expected an object at {}, found {}",
                    path.as_str(),
                    super::json_kind(other)
                ),
            }),
        }
    }
}

/// `email`, `ext_id` and/or `phone`: at least one must have a value.
#[derive(Debug)]
struct Ids {
    email: Option<ValueExpr>,
    ext_id: Option<ValueExpr>,
    phone: Option<ValueExpr>,
}

/// The identifiers' values of one event.
struct IdValues {
    email: Option<String>,
    ext_id: Option<String>,
    phone: Option<String>,
}

/// A contact's consent flags: whether it may be mailed, and texted.
#[derive(Debug)]
struct Flags {
    email_blacklisted: Option<ValueExpr>,
    sms_blacklisted: Option<ValueExpr>,
}

impl Flags {
    /// `(emailBlacklisted, smsBlacklisted)` as computed.
    fn eval(&self, scope: Scope<'_>) -> Result<(Option<bool>, Option<bool>), EvalError> {
        Ok((
            flag(&self.email_blacklisted, "email_blacklisted", scope)?,
            flag(&self.sms_blacklisted, "sms_blacklisted", scope)?,
        ))
    }
}

/// Why one event could not be mapped: which rule, which field, why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("rule `{rule}`: {}{field}: {reason}", element.map(|i| format!("element {i}: ")).unwrap_or_default())]
pub struct MapError {
    pub rule: String,
    /// The `for_each` element, when the rule has one (none for `for_each: $` over a body that is one
    /// object): its index in the list, or its place among the nodes a selecting path selects.
    pub element: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl Rule {
    pub fn compile(ctx: &mut Ctx, node: &Node, index: usize, env: Env) -> Option<Rule> {
        let f = ctx.map(node, "rule", RULE_KEYS)?;
        let mut ok = true;
        let name = match f.get("name") {
            Some(n) => match ctx.string(n, "name") {
                Some("") => {
                    ctx.error(n.loc, "a rule name cannot be empty");
                    None
                }
                other => other.map(str::to_owned),
            },
            // A misspelt key was reported already (`nme:`, with its suggestion): that explains it.
            None if f.unknown => None,
            None => {
                ctx.error(node.loc, format!("rule {}: missing `name`", index + 1))
                    .hint = Some(
                    "the name identifies the rule in errors and in idempotency keys".to_owned(),
                );
                None
            }
        };
        let for_each = match f.get("for_each") {
            Some(n) => match ctx.string(n, "for_each") {
                Some(s) if s.starts_with('$') => {
                    super::value::compile_path(ctx, n, s, "for_each", env)
                }
                Some(_) => {
                    ctx.expected(
                        n,
                        "for_each",
                        "a `$.` path to a list, such as $.line_items, or one that selects, such as $.items[?@.qty > 0]",
                    );
                    None
                }
                None => None,
            }
            .map(Some)
            .unwrap_or_else(|| {
                ok = false;
                None
            }),
            None => None,
        };
        let inner = Env {
            in_for_each: for_each.is_some(),
            ..env
        };
        let when = match f.get("when") {
            Some(n) => {
                let c = Condition::compile(ctx, n, inner);
                ok &= c.is_some();
                c
            }
            None => None,
        };
        let stop = match f.get("stop") {
            Some(n) => ctx.bool(n, "stop").unwrap_or(false),
            None => false,
        };
        let mut actions = Vec::new();
        let direct: Vec<_> = f
            .entries
            .iter()
            .filter(|(k, _)| ACTION_KINDS.contains(&k.name.as_str()))
            .collect();
        match (f.get("actions"), direct.is_empty()) {
            (Some(list), true) => match &list.kind {
                Kind::Seq(items) if !items.is_empty() => {
                    for item in items {
                        let Some(entries) = item.as_map().filter(|e| e.len() == 1) else {
                            ctx.expected(
                                item,
                                "actions",
                                "a one-key map such as upsert_contact: {...}",
                            );
                            ok = false;
                            continue;
                        };
                        let (k, v) = &entries[0];
                        if !ACTION_KINDS.contains(&k.name.as_str()) {
                            let d = ctx.error(k.loc, format!("unknown action `{}`", k.name));
                            d.hint = Some(super::diagnostic::suggest(&k.name, ACTION_KINDS));
                            ok = false;
                            continue;
                        }
                        match compile_action(ctx, &k.name, v, inner) {
                            Some(a) => actions.push(a),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    ctx.expected(list, "actions", "a non-empty list of actions");
                    ok = false;
                }
            },
            (Some(list), false) => {
                ctx.error(
                    list.loc,
                    "write the actions either as keys of the rule or under `actions:`, not both",
                );
                ok = false;
            }
            (None, false) => {
                for (k, v) in direct {
                    match compile_action(ctx, &k.name, v, inner) {
                        Some(a) => actions.push(a),
                        None => ok = false,
                    }
                }
            }
            (None, true) => {
                ctx.error(
                    node.loc,
                    format!("rule `{}` has no action", name.as_deref().unwrap_or("?")),
                )
                .hint = Some(format!("add one of: {}", ACTION_KINDS.join(", ")));
                ok = false;
            }
        }
        let name = name?;
        let site = ctx.site(f.get("name").map_or(node.loc, |n| n.loc));
        ok.then_some(Rule {
            name,
            site,
            when,
            over_body: for_each.as_ref().is_some_and(|p| p.as_str() == "$"),
            over_selection: for_each.as_ref().is_some_and(JsonPath::is_selection),
            for_each,
            stop,
            actions,
        })
    }

    /// Does the rule match every event and stop there, so that no later rule ever runs?
    pub fn always_stops(&self) -> bool {
        self.stop && self.when.is_none() && self.for_each.is_none()
    }

    /// Does this rule match? If so, its actions are appended to `out`, in order. On an error
    /// `out` is left partly filled: the caller drops the whole event's actions.
    pub fn apply(&self, scope: Scope<'_>, out: &mut Vec<MappedAction>) -> Result<bool, MapError> {
        let fail = |element: Option<usize>, e: EvalError| MapError {
            rule: self.name.clone(),
            element,
            field: e.field,
            reason: e.reason,
        };
        let Some(over) = &self.for_each else {
            if let Some(when) = &self.when {
                if !when.eval(scope).map_err(|e| fail(None, e))? {
                    return Ok(false);
                }
            }
            for (index, a) in self.actions.iter().enumerate() {
                let action = a.build(scope).map_err(|e| fail(None, e))?;
                out.push(self.mapped(index, action));
            }
            return Ok(true);
        };
        // With for_each, `when` is tested per element (it may use `@` paths).
        let mut matched = false;
        let mut index = 0;
        let mut each = |at: Option<usize>, el: &Value| -> Result<(), MapError> {
            let inner = Scope {
                item: Some(el),
                ..scope
            };
            if let Some(when) = &self.when {
                if !when.eval(inner).map_err(|e| fail(at, e))? {
                    return Ok(());
                }
            }
            matched = true;
            for a in &self.actions {
                let action = a.build(inner).map_err(|e| fail(at, e))?;
                out.push(self.mapped(index, action));
                index += 1;
            }
            Ok(())
        };
        // A path that selects (`$.attendees[?@.noShow == true]`, `$.items[*]`) runs over the nodes it
        // selects, in order, as a filter in `when` would; an error's element number is then the node's
        // place in the selection. A path that names a list runs over its items; nothing there, over none.
        match for_each_elements(over, self.over_selection, scope) {
            Ok(elements) => {
                for (i, el) in elements.iter().flat_map(|e| e.iter()).enumerate() {
                    each(Some(i), el)?;
                }
            }
            // `for_each: $` runs over the body's events: a body that is one event is a list of one,
            // since senders such as Mailjet post one event or a batch of them to the same URL. It has no
            // element number to report. Any other path must find a list, so a path that misses the list
            // fails loudly.
            Err(one @ Value::Object(_)) if self.over_body => each(None, one)?,
            Err(found) => {
                return Err(fail(
                    None,
                    EvalError {
                        field: "for_each".into(),
                        reason: not_a_list(over, found),
                    },
                ))
            }
        }
        Ok(matched)
    }

    fn mapped(&self, index: usize, action: Action) -> MappedAction {
        MappedAction {
            rule: self.name.clone(),
            index,
            action,
        }
    }
}

fn compile_action(ctx: &mut Ctx, kind: &str, node: &Node, env: Env) -> Option<ActionSpec> {
    let allowed = if kind == "custom_event" {
        EVENT_KEYS
    } else {
        CONTACT_KEYS
    };
    let f = ctx.map(node, kind, allowed)?;
    let mut ok = true;
    let mut value = |ctx: &mut Ctx, key: &str| -> Option<ValueExpr> {
        let n = f.get(key)?;
        let v = ValueExpr::compile(ctx, n, &format!("{kind}.{key}"), env);
        ok &= v.is_some();
        v
    };
    let email = value(ctx, "email");
    let ext_id = value(ctx, "ext_id");
    let phone = value(ctx, "phone");
    if let Some(n) = f.get("email") {
        lint_email(ctx, n, kind);
    }
    if let Some(n) = f.get("phone") {
        lint_phone(ctx, n, kind);
    }
    let list_ids = value(ctx, "list_ids");
    let flags = Flags {
        email_blacklisted: value(ctx, "email_blacklisted"),
        sms_blacklisted: value(ctx, "sms_blacklisted"),
    };
    let date = value(ctx, "event_date");
    let constants_fine = f
        .get("list_ids")
        .is_none_or(|n| lint_list_ids(ctx, n, kind))
        & ["email_blacklisted", "sms_blacklisted"]
            .iter()
            .fold(true, |fine, key| {
                fine & f.get(key).is_none_or(|n| lint_flag(ctx, n, kind, key))
            })
        & f.get("event_date")
            .is_none_or(|n| lint_event_date(ctx, n, kind))
        & ["email", "ext_id", "phone", "event_name"]
            .iter()
            .fold(true, |fine, key| {
                fine & f.get(key).is_none_or(|n| lint_text(ctx, n, kind, key))
            });
    let event_name = value(ctx, "event_name");
    let mut fields = |ctx: &mut Ctx, key: &str| -> FieldsExpr {
        let Some(n) = f.get(key) else {
            return FieldsExpr::Named(Vec::new());
        };
        let Some(entries) = n.as_map() else {
            let what = format!("{kind}.{key}");
            if let Some(s) = n.as_str().filter(|s| looks_like_path(s)) {
                if let Some(path) = super::value::compile_path(ctx, n, s, &what, env) {
                    return FieldsExpr::Members(path);
                }
            } else {
                ctx.expected(n, &what, "a map of names to values, or a path to an object");
            }
            ok = false;
            return FieldsExpr::Named(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match ValueExpr::compile(ctx, v, &format!("{kind}.{key}.{}", k.name), env) {
                Some(e) => out.push((k.name.as_str().into(), e)),
                None => ok = false,
            }
        }
        FieldsExpr::Named(out)
    };
    let attributes = fields(ctx, "attributes");
    let contact_properties = fields(ctx, "contact_properties");
    let event_properties = fields(ctx, "event_properties");
    // A created or upserted contact's phone is its SMS attribute (see `Contact`): written twice, one
    // would silently win. An update's phone is only its identifier, so `attributes.SMS` there is the
    // contact's new number.
    let contact = matches!(kind, "create_contact" | "upsert_contact");
    if let (Some(_), Some(entries)) = (
        f.get("phone").filter(|_| contact),
        f.get("attributes").and_then(Node::as_map),
    ) {
        if let Some((k, _)) = entries
            .iter()
            .find(|(k, _)| k.name.eq_ignore_ascii_case(PHONE_ATTRIBUTE))
        {
            ctx.error(
                k.loc,
                format!("{kind}.attributes.{PHONE_ATTRIBUTE}: `phone` sets this attribute already"),
            )
            .hint = Some(format!(
                "keep one of them: `phone` is sent as the {PHONE_ATTRIBUTE} attribute"
            ));
            ok = false;
        }
    }
    let given = ID_KEYS.iter().filter(|k| f.has(k)).count();
    if given == 0 && !f.unknown {
        // An unknown key (`emial`) already explains it.
        ctx.error(
            node.loc,
            format!("{kind}: needs `email`, `ext_id` or `phone` to identify the contact"),
        );
    }
    ok &= given > 0;
    // A single identifier is required: the action cannot be sent without it.
    let only = |e: Option<ValueExpr>| {
        if given == 1 {
            e.map(ValueExpr::require)
        } else {
            e
        }
    };
    let ids = Ids {
        email: only(email),
        ext_id: only(ext_id),
        phone: only(phone),
    };
    if kind == "custom_event" && !f.has("event_name") && !f.unknown {
        ctx.error(node.loc, "custom_event: missing `event_name`");
        ok = false;
    }
    if !ok || !constants_fine {
        return None;
    }
    Some(match kind {
        "custom_event" => ActionSpec::Event {
            name: event_name?.require(),
            date,
            ids,
            contact_properties,
            event_properties,
        },
        "update_contact" => ActionSpec::Update {
            ids,
            attributes,
            list_ids,
            flags,
        },
        _ => ActionSpec::Contact {
            upsert: kind == "upsert_contact",
            ids,
            attributes,
            list_ids,
            flags,
        },
    })
}

/// A constant email without `@` is almost always a path written without `$.`.
fn lint_email(ctx: &mut Ctx, n: &Node, kind: &str) {
    if let Some(s) = n.as_str() {
        if !computed(s) && !s.contains('@') {
            ctx.error(
                n.loc,
                format!("{kind}.email: `{s}` is neither a path nor an email address"),
            )
            .hint = Some(if reads_as_bare_path(s) {
                format!("did you mean `$.{s}`?")
            } else {
                "write a path such as $.email, or an email address".to_owned()
            });
        }
    }
}

/// A constant phone must be what the upstream keeps: `+` and 7 to 15 digits (E.164). Anything else is
/// almost always a path written without `$.` (`phone: From`), which would give every contact that text
/// as its number, or a number written for people (`+1 (415) 555-0100`), which would be sent as written.
fn lint_phone(ctx: &mut Ctx, n: &Node, kind: &str) {
    let Some(s) = n.as_str().filter(|s| !computed(s)) else {
        return;
    };
    let digits = s.strip_prefix('+').filter(|d| {
        (7..=15).contains(&d.len()) && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
    });
    if digits.is_some() {
        return;
    }
    let written_for_people: String = s.chars().filter(|c| !" -.()".contains(*c)).collect();
    let hint = if written_for_people != s
        && written_for_people.starts_with('+')
        && written_for_people[1..].bytes().all(|b| b.is_ascii_digit())
    {
        format!("write it as the upstream keeps it: \"{written_for_people}\"")
    } else if reads_as_bare_path(s) && !s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("did you mean `$.{s}`?")
    } else {
        "write a path such as $.phone, or a number in international format such as \"+14155550100\""
            .to_owned()
    };
    ctx.error(
        n.loc,
        format!("{kind}.phone: `{s}` is neither a path nor a phone number in international format"),
    )
    .hint = Some(hint);
}

/// Whether a constant reads as a member path written without its `$.` (`email`, `data.From`).
fn reads_as_bare_path(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
}

/// An identifier or event name written as a constant must be text: a number, a boolean or null there
/// would fail every event (`expected text, found a number`), so it is refused at load.
fn lint_text(ctx: &mut Ctx, n: &Node, kind: &str, key: &str) -> bool {
    // Null is refused where every value is compiled.
    let fine = matches!(
        n.kind,
        Kind::Str(_) | Kind::Map(_) | Kind::Seq(_) | Kind::Null
    );
    if !fine {
        ctx.error(
            n.loc,
            format!(
                "{kind}.{key}: expected text or a path, found {}",
                n.describe()
            ),
        )
        .hint = Some(format!("quote it to send it as text: \"{}\"", n.to_json()));
    }
    fine
}

/// A yes-or-no field (`email_blacklisted`, `sms_blacklisted`): a constant must be `true` or `false` (YAML 1.2: `yes` is text,
/// which would fail every event at run time); a path or a map is computed.
fn lint_flag(ctx: &mut Ctx, n: &Node, kind: &str, key: &str) -> bool {
    // `{ const: X }` is a constant too, and `X` the node to check: written there, even a text that looks
    // like a path is sent as text.
    let spelled_out = n
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.name == "const").map(|(_, v)| v));
    let constant = spelled_out.unwrap_or(n);
    let fine = match &constant.kind {
        Kind::Bool(_) | Kind::Map(_) | Kind::Null => true,
        Kind::Str(s) => spelled_out.is_none() && computed(s),
        _ => false,
    };
    if !fine {
        ctx.error(
            constant.loc,
            format!(
                "{kind}.{key}: expected true, false or a path, found {}",
                constant.describe()
            ),
        )
        .hint = Some("write true or false (`yes` is text in YAML); a path to text such as \"yes\" takes `then: [to_bool]`".to_owned());
    }
    fine
}

/// Whether a written text is a value to compute (a path or a template) rather than a constant.
fn computed(s: &str) -> bool {
    looks_like_path(s) || s.contains("{{")
}

/// Constant list ids must be whole numbers: anything else would fail every event at delivery.
fn lint_list_ids(ctx: &mut Ctx, n: &Node, kind: &str) -> bool {
    let items: Vec<&Node> = match &n.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    let mut ok = true;
    for item in items {
        let fine = match &item.kind {
            Kind::Int(_) => true,
            Kind::UInt(u) => i64::try_from(*u).is_ok(),
            Kind::Str(s) => computed(s) || s.trim().parse::<i64>().is_ok(),
            Kind::Map(_) | Kind::Seq(_) => true, // a long-form value, checked when it is compiled
            Kind::Null | Kind::Bool(_) | Kind::Float(_) => false,
        };
        if !fine {
            ctx.error(
                item.loc,
                format!("{kind}.list_ids: a list id is a whole number"),
            );
            ok = false;
        }
    }
    ok
}

/// A constant `event_date` must be RFC 3339, as the upstream reads it.
fn lint_event_date(ctx: &mut Ctx, n: &Node, kind: &str) -> bool {
    let fine = match &n.kind {
        Kind::Str(s) => computed(s) || chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        Kind::Map(_) => true,
        _ => false,
    };
    if !fine {
        ctx.error(
            n.loc,
            format!("{kind}.event_date: an RFC 3339 time such as 2026-01-31T12:00:00Z, or a path"),
        )
        .hint = Some("a path to another format: { path: $.created, then: [date] }".to_owned());
    }
    fine
}

impl ActionSpec {
    fn build(&self, scope: Scope<'_>) -> Result<Action, EvalError> {
        Ok(match self {
            ActionSpec::Contact {
                upsert,
                ids,
                attributes,
                list_ids,
                flags,
            } => {
                let kind = if *upsert {
                    "upsert_contact"
                } else {
                    "create_contact"
                };
                let id = ids.eval(scope).map_err(|e| e.within(kind))?;
                let mut attributes = attributes
                    .eval(scope)
                    .map_err(|e| e.within(&format!("{kind}.attributes")))?;
                if let Some(phone) = id.phone {
                    attributes.insert(PHONE_ATTRIBUTE, Value::String(phone));
                }
                let list_ids = lists(list_ids, scope).map_err(|e| e.within(kind))?;
                let (email_blacklisted, sms_blacklisted) =
                    flags.eval(scope).map_err(|e| e.within(kind))?;
                let contact = Contact {
                    email: id.email,
                    ext_id: id.ext_id,
                    attributes,
                    list_ids,
                    email_blacklisted,
                    sms_blacklisted,
                };
                if *upsert {
                    Action::UpsertContact(contact)
                } else {
                    Action::CreateContact(contact)
                }
            }
            ActionSpec::Update {
                ids,
                attributes,
                list_ids,
                flags,
            } => {
                let kind = "update_contact";
                let id = ids.eval(scope).map_err(|e| e.within(kind))?;
                let identifier = match id {
                    IdValues { email: Some(e), .. } => Identifier::Email(e),
                    IdValues {
                        ext_id: Some(x), ..
                    } => Identifier::ExtId(x),
                    IdValues { phone: Some(p), .. } => Identifier::Phone(p),
                    _ => unreachable_ids(kind)?,
                };
                let attributes = attributes
                    .eval(scope)
                    .map_err(|e| e.within(&format!("{kind}.attributes")))?;
                let list_ids = lists(list_ids, scope).map_err(|e| e.within(kind))?;
                let (email_blacklisted, sms_blacklisted) =
                    flags.eval(scope).map_err(|e| e.within(kind))?;
                Action::UpdateContact(ContactUpdate {
                    identifier,
                    attributes,
                    list_ids,
                    email_blacklisted,
                    sms_blacklisted,
                })
            }
            ActionSpec::Event {
                name,
                date,
                ids,
                contact_properties,
                event_properties,
            } => {
                let kind = "custom_event";
                let id = ids.eval(scope).map_err(|e| e.within(kind))?;
                let event_name = match name
                    .eval(scope)
                    .map_err(|e| e.within("custom_event.event_name"))?
                {
                    Some(v) => text(&v, "custom_event.event_name")?,
                    None => String::new(),
                };
                let event_date = match date {
                    Some(d) => match d
                        .eval(scope)
                        .map_err(|e| e.within("custom_event.event_date"))?
                    {
                        Some(v) => Some(rfc3339(text(&v, "custom_event.event_date")?)?),
                        None => None,
                    },
                    None => None,
                };
                Action::CustomEvent(CustomEvent {
                    event_name,
                    event_date,
                    identifiers: Identifiers {
                        email_id: id.email,
                        ext_id: id.ext_id,
                        phone_id: id.phone,
                    },
                    contact_properties: contact_properties
                        .eval(scope)
                        .map_err(|e| e.within("custom_event.contact_properties"))?,
                    event_properties: event_properties
                        .eval(scope)
                        .map_err(|e| e.within("custom_event.event_properties"))?,
                })
            }
        })
    }
}

fn unreachable_ids<T>(kind: &str) -> Result<T, EvalError> {
    Err(EvalError {
        field: kind.to_owned(),
        reason: "no identifier: email, ext_id and phone are all missing".to_owned(),
    })
}

impl Ids {
    /// The identifiers as text; an error when none has a value. An ext_id or a phone given as a JSON
    /// number is taken as its digits (a phone's leading `+` is then the mapping's to add).
    fn eval(&self, scope: Scope<'_>) -> Result<IdValues, EvalError> {
        let one = |expr: &Option<ValueExpr>, field: &str, numbers: bool| {
            let Some(e) = expr else {
                return Ok(None);
            };
            match e.eval(scope).map_err(|e| e.within(field))? {
                Some(Cow::Borrowed(Value::Number(n))) if numbers => Ok(Some(n.to_string())),
                Some(Cow::Owned(Value::Number(n))) if numbers => Ok(Some(n.to_string())),
                Some(v) => text(&v, field).map(Some),
                None => Ok(None),
            }
        };
        let ids = IdValues {
            email: one(&self.email, "email", false)?,
            ext_id: one(&self.ext_id, "ext_id", true)?,
            phone: one(&self.phone, "phone", true)?,
        };
        if ids.email.is_none() && ids.ext_id.is_none() && ids.phone.is_none() {
            let missing: Vec<String> = [
                ("email", &self.email),
                ("ext_id", &self.ext_id),
                ("phone", &self.phone),
            ]
            .into_iter()
            .filter_map(|(name, e)| Some(format!("{name} missing {}", e.as_ref()?.describe())))
            .collect();
            return Err(EvalError {
                field: String::new(),
                reason: format!("no identifier: {}", missing.join(", ")),
            });
        }
        Ok(ids)
    }
}

/// A flag (`email_blacklisted`, `sms_blacklisted`) as computed: `true` or `false`, or left out when
/// missing; anything else fails the event, naming the field (the caller adds the action, as for
/// `list_ids`).
fn flag(
    expr: &Option<ValueExpr>,
    field: &str,
    scope: Scope<'_>,
) -> Result<Option<bool>, EvalError> {
    let Some(expr) = expr else {
        return Ok(None);
    };
    match expr.eval(scope).map_err(|e| e.within(field))?.as_deref() {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(EvalError {
            field: field.to_owned(),
            reason: format!("expected true or false, found {}", super::json_kind(other)),
        }),
    }
}

fn text(v: &Value, field: &str) -> Result<String, EvalError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(EvalError {
            field: field.to_owned(),
            reason: "empty text".to_owned(),
        }),
        other => Err(EvalError {
            field: field.to_owned(),
            reason: format!("expected text, found {}", super::json_kind(other)),
        }),
    }
}

/// An `event_date` as computed: RFC 3339, or the event fails here with the reason (a dead letter that
/// says what to fix) rather than at the upstream, which would refuse it with a 400 of its own words.
fn rfc3339(t: String) -> Result<String, EvalError> {
    if chrono::DateTime::parse_from_rfc3339(&t).is_ok() {
        Ok(t)
    } else {
        Err(EvalError {
            field: "custom_event.event_date".to_owned(),
            reason: format!(
                "`{}` is not an RFC 3339 time; convert it with then: [date]",
                crate::error::one_line(&t)
            ),
        })
    }
}

/// `list_ids`: numbers (or numeric text), possibly in nested lists.
fn lists(expr: &Option<ValueExpr>, scope: Scope<'_>) -> Result<Vec<i64>, EvalError> {
    let Some(expr) = expr else {
        return Ok(Vec::new());
    };
    let Some(v) = expr.eval(scope).map_err(|e| e.within("list_ids"))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    collect_ids(&v, &mut out)?;
    Ok(out)
}

fn collect_ids(v: &Value, out: &mut Vec<i64>) -> Result<(), EvalError> {
    let bad = |v: &Value| EvalError {
        field: "list_ids".to_owned(),
        reason: format!("expected list ids (whole numbers), found {v}"),
    };
    match v {
        Value::Array(items) => {
            for i in items {
                collect_ids(i, out)?;
            }
        }
        Value::Number(n) => out.push(n.as_i64().ok_or_else(|| bad(v))?),
        Value::String(s) => out.push(s.trim().parse().map_err(|_| bad(v))?),
        other => return Err(bad(other)),
    }
    Ok(())
}

#[cfg(test)]
mod unit_tests {
    use super::super::parse_source_file;
    use std::path::Path;

    /// A computed `event_date` that is not RFC 3339 fails the event with the reason, instead of being
    /// sent for the upstream to refuse.
    #[test]
    fn a_computed_event_date_must_be_rfc3339() {
        let text = "source: t\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: r\n    custom_event: { event_name: e, ext_id: x, event_date: $.d }\n";
        let file = parse_source_file(Path::new("t.yaml"), text).expect("valid");
        let apply = |d: &str| {
            file.mapping
                .apply(&super::super::Event::new(serde_json::json!({ "d": d })))
        };
        let sent = apply("2026-01-31T12:00:00+01:00").expect("RFC 3339 is sent");
        let json = serde_json::to_string(&sent).expect("json");
        assert!(json.contains("2026-01-31T12:00:00+01:00"), "{json}");
        for bad in ["garbage", "2026-01-31", "1767225600"] {
            let e = apply(bad).expect_err(bad).to_string();
            assert!(e.contains("is not an RFC 3339 time"), "{bad}: {e}");
        }
    }

    /// Action fields are appended without looking for an earlier one of the same name
    /// (`Fields::push_new`): that relies on the YAML parser rejecting a repeated key.
    #[test]
    fn repeated_field_names_are_rejected() {
        for fields in [
            "attributes: { A: $.a, A: $.b }",
            "attributes:\n        A: $.a\n        A: $.b",
        ] {
            let text = format!(
                "source: t\nverify: {{ preset: token, header: X-Token, secret: \"${{env:T_TOKEN}}\" }}\nrules:\n  - name: r\n    upsert_contact:\n      email: $.e\n      {fields}\n"
            );
            let Err(diags) = parse_source_file(Path::new("t.yaml"), &text) else {
                panic!("a repeated name was accepted: {fields}");
            };
            let shown: Vec<String> = diags.iter().map(|d| d.render()).collect();
            assert!(
                shown.iter().any(|d| d.to_lowercase().contains("duplicate")),
                "{shown:?}"
            );
        }
    }
}
