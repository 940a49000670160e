//! Transforms: the `then:` chain of a value. Each takes the value so far and returns the next one,
//! `None` meaning missing (so `default` and `required` apply after the chain). A value of the wrong
//! type is an error, never a silently different value. Text transforms given a list (from
//! `all: true` or `split`) apply to each element.

use super::json_kind as kind;
use super::value::{Env, Scope, ValueExpr};
use super::yaml::{Ctx, Kind, Node};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use regex::Regex;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Every transform name, for did-you-mean and the docs.
pub const NAMES: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "not_blank",
    "first_word",
    "rest_words",
    "split",
    "join",
    "replace",
    "to_number",
    "to_string",
    "to_bool",
    "divide",
    "from_minor_units",
    "multiply",
    "round",
    "date",
    "lookup",
    "sha256",
];

/// The named tables of a file (`lookups:`), shared by the transforms that use them.
pub type Lookups = HashMap<String, Arc<Map<String, Value>>>;

#[derive(Debug)]
pub enum Transform {
    Lower,
    Upper,
    Trim,
    /// Empty or whitespace-only text is missing; anything else is kept as it is. Senders that fill
    /// every field of a form or record (WooCommerce, form builders) send `""` for "not given", which
    /// would otherwise be written upstream over a value the contact has.
    NotBlank,
    FirstWord,
    RestWords,
    Split(String),
    Join(String),
    Replace {
        from: Pattern,
        to: String,
    },
    ToNumber,
    ToString,
    ToBool,
    Divide(f64),
    FromMinorUnits(Box<MinorUnits>),
    Multiply(f64),
    Round(u32),
    Date(DateInput),
    Lookup(Arc<Map<String, Value>>),
    Sha256,
}

/// `from_minor_units`: an amount in a currency's smallest unit (cents, yen, fils) to the currency's
/// unit, by the currency's ISO 4217 exponent, read from the event beside the amount. A fixed
/// `divide: 100` is wrong for the currencies without cents (JPY, KRW) and the ones with mills (KWD).
#[derive(Debug)]
pub struct MinorUnits {
    currency: ValueExpr,
    /// Exponents that replace ISO's for this sender, by upper-case code: Stripe writes ISK and UGX
    /// with two decimals although ISO gives them none, and MGA with none although ISO gives it two.
    exponents: HashMap<String, u32>,
}

/// The largest exponent `exponents:` takes: ISO's largest is 4 (CLF, UYW); crypto senders use up
/// to 18 (wei), and 10^18 is still exact in an f64.
const MAX_EXPONENT: u32 = 18;

/// The largest amount `from_minor_units` takes: every integer up to 2^53 is exact in an f64, so the
/// quotient is the correctly rounded decimal; above it the amount itself would be rounded.
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

impl MinorUnits {
    /// The decimal places of a currency (its code in upper case): the file's, else ISO 4217's.
    fn exponent(&self, code: &str) -> Result<u32, String> {
        if let Some(e) = self.exponents.get(code) {
            return Ok(*e);
        }
        match code.parse::<iso_currency::Currency>() {
            Ok(c) => c
                .exponent()
                .map(u32::from)
                .ok_or_else(|| format!("`{code}` has no minor unit in ISO 4217")),
            Err(_) => Err(format!(
                "`{}` is not an ISO 4217 currency code (give its decimal places under `exponents:`)",
                clip(code)
            )),
        }
    }

    fn apply(&self, v: &Value, scope: Scope<'_>) -> Out {
        if matches!(v, Value::String(s) if s.trim().is_empty()) {
            return Ok(None);
        }
        let amount = number_of(v)?;
        // Past 2^53 an f64 no longer holds every integer: the amount would be rounded in silence.
        if amount.abs() > EXACT_LIMIT {
            return Err(format!(
                "{} is too large to convert exactly (at most 2^53 = 9007199254740992 in the smallest unit)",
                clip(&v.to_string())
            ));
        }
        let currency = self.currency.eval(scope).map_err(|e| e.reason)?;
        let code = match currency.as_deref() {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_ascii_uppercase(),
            None | Some(Value::String(_)) => {
                return Err(format!("no currency {}", self.currency.describe()))
            }
            Some(other) => {
                return Err(format!(
                    "the currency {} is {}, not a currency code",
                    self.currency.describe(),
                    kind(other)
                ))
            }
        };
        let exponent = self.exponent(&code)?;
        let divisor = 10f64.powi(exponent as i32);
        float(amount / divisor)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| "the result is not a finite number".to_owned())
    }
}

#[derive(Debug)]
pub enum Pattern {
    Text(String),
    Regex(Regex),
}

/// How `date` reads its input.
#[derive(Debug, Clone)]
pub enum DateInput {
    /// ISO-8601 text, or a number of epoch seconds (milliseconds when 1e11 or more).
    Auto,
    Seconds,
    Millis,
    /// A chrono format such as `%d/%m/%Y %H:%M`; without a zone the time is UTC.
    Format(String),
}

type Out = Result<Option<Value>, String>;

impl Transform {
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Lower => "lower",
            Transform::Upper => "upper",
            Transform::Trim => "trim",
            Transform::NotBlank => "not_blank",
            Transform::FirstWord => "first_word",
            Transform::RestWords => "rest_words",
            Transform::Split(_) => "split",
            Transform::Join(_) => "join",
            Transform::Replace { .. } => "replace",
            Transform::ToNumber => "to_number",
            Transform::ToString => "to_string",
            Transform::ToBool => "to_bool",
            Transform::Divide(_) => "divide",
            Transform::FromMinorUnits(_) => "from_minor_units",
            Transform::Multiply(_) => "multiply",
            Transform::Round(_) => "round",
            Transform::Date(_) => "date",
            Transform::Lookup(_) => "lookup",
            Transform::Sha256 => "sha256",
        }
    }

    /// Apply to a present value; `Err` says what was wrong with the input. Takes the value
    /// borrowed when it can, so text transforms read the payload without copying it first.
    pub fn apply(&self, v: Cow<'_, Value>, scope: Scope<'_>) -> Out {
        match (self, &*v) {
            (Transform::Join(sep), Value::Array(items)) => join(sep, items),
            (Transform::Join(_), Value::String(_)) => Ok(Some(v.into_owned())),
            (_, Value::Null) => Ok(None),
            (t, Value::Array(items)) if !matches!(t, Transform::ToString) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = t.apply(Cow::Borrowed(item), scope)? {
                        out.push(v);
                    }
                }
                // Nothing left of a list that had items: nothing to return, so `default` applies.
                Ok((out.is_empty() == items.is_empty()).then_some(Value::Array(out)))
            }
            _ => self.apply_one(v, scope),
        }
    }

    fn apply_one(&self, v: Cow<'_, Value>, scope: Scope<'_>) -> Out {
        match self {
            Transform::Lower => text(v, |s| s.to_lowercase()),
            Transform::Upper => text(v, |s| s.to_uppercase()),
            Transform::Trim => text(v, |s| s.trim().to_owned()),
            Transform::NotBlank => match &*v {
                Value::String(s) if s.trim().is_empty() => Ok(None),
                _ => Ok(Some(v.into_owned())),
            },
            Transform::FirstWord => {
                let s = want_text(&v)?;
                Ok(s.split_whitespace()
                    .next()
                    .map(|w| Value::String(w.to_owned())))
            }
            Transform::RestWords => {
                let s = want_text(&v)?;
                let mut rest = String::with_capacity(s.len());
                for w in s.split_whitespace().skip(1) {
                    if !rest.is_empty() {
                        rest.push(' ');
                    }
                    rest.push_str(w);
                }
                Ok((!rest.is_empty()).then_some(Value::String(rest)))
            }
            Transform::Split(sep) => {
                let s = want_text(&v)?;
                let parts = s
                    .split(sep.as_str())
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_owned()))
                    .collect::<Vec<_>>();
                Ok((!parts.is_empty()).then_some(Value::Array(parts)))
            }
            Transform::Join(_) => Err(format!("expected a list or text, found {}", kind(&v))),
            Transform::Replace { from, to } => {
                let s = want_text(&v)?;
                Ok(Some(Value::String(match from {
                    Pattern::Text(f) => s.replace(f.as_str(), to),
                    Pattern::Regex(re) => re.replace_all(s, to.as_str()).into_owned(),
                })))
            }
            Transform::ToNumber => match &*v {
                Value::Number(_) => Ok(Some(v.into_owned())),
                Value::String(s) if s.trim().is_empty() => Ok(None),
                Value::String(s) => parse_number(s.trim())
                    .map(|n| Some(Value::Number(n)))
                    .ok_or_else(|| format!("`{}` is not a number", clip(s))),
                Value::Bool(b) => Ok(Some(Value::from(u8::from(*b)))),
                other => Err(format!("expected text or a number, found {}", kind(other))),
            },
            Transform::ToString => Ok(Some(Value::String(match v.into_owned() {
                Value::String(s) => s,
                other => other.to_string(),
            }))),
            Transform::ToBool => to_bool(&v),
            Transform::Divide(d) => arith(&v, |x| x / d),
            Transform::FromMinorUnits(m) => m.apply(&v, scope),
            Transform::Multiply(m) => arith(&v, |x| x * m),
            Transform::Round(places) => {
                let factor = 10f64.powi(*places as i32);
                arith(&v, |x| {
                    if *places == 0 {
                        x.round()
                    } else {
                        (x * factor).round() / factor
                    }
                })
            }
            Transform::Date(input) => date(input, &v).map(|d| Some(Value::String(d))),
            Transform::Lookup(table) => match &*v {
                Value::String(s) => Ok(table.get(s.as_str()).cloned()),
                Value::Number(_) | Value::Bool(_) => Ok(table.get(&v.to_string()).cloned()),
                other => Err(format!("expected text or a number, found {}", kind(other))),
            },
            Transform::Sha256 => {
                let digest = match &*v {
                    Value::String(s) => Sha256::digest(s.as_bytes()),
                    Value::Number(_) | Value::Bool(_) => Sha256::digest(v.to_string().as_bytes()),
                    other => return Err(format!("expected text, found {}", kind(other))),
                };
                Ok(Some(Value::String(hex::encode(digest))))
            }
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn want_text(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(_) | Value::Bool(_) => Err(format!(
            "expected text, found {} (add to_string first)",
            kind(v)
        )),
        other => Err(format!("expected text, found {}", kind(other))),
    }
}

fn text(v: Cow<'_, Value>, f: impl Fn(&str) -> String) -> Out {
    Ok(Some(Value::String(f(want_text(&v)?))))
}

fn join(sep: &str, items: &[Value]) -> Out {
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Null => {}
            Value::String(s) => parts.push(s.clone()),
            v @ (Value::Number(_) | Value::Bool(_)) => parts.push(v.to_string()),
            other => {
                return Err(format!(
                    "join: expected a list of text, found {} in it",
                    kind(other)
                ))
            }
        }
    }
    Ok(Some(Value::String(parts.join(sep))))
}

/// Parse a number as JSON would: integers stay integers, anything else must be a finite float.
pub fn parse_number(s: &str) -> Option<Number> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(u.into());
    }
    let f: f64 = s.parse().ok()?;
    float(f)
}

/// A float result as a JSON number; integral results within 2^53 become integers (20, not 20.0).
fn float(f: f64) -> Option<Number> {
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < EXACT_LIMIT {
        return Some((f as i64).into());
    }
    Number::from_f64(f)
}

fn number_of(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "number out of range".to_owned()),
        Value::String(s) => match parse_number(s.trim()) {
            Some(n) => n.as_f64().ok_or_else(|| "number out of range".to_owned()),
            None => Err(format!("`{}` is not a number", clip(s))),
        },
        other => Err(format!("expected a number, found {}", kind(other))),
    }
}

fn arith(v: &Value, f: impl Fn(f64) -> f64) -> Out {
    if matches!(v, Value::String(s) if s.trim().is_empty()) {
        return Ok(None);
    }
    let x = number_of(v)?;
    float(f(x))
        .map(|n| Some(Value::Number(n)))
        .ok_or_else(|| "the result is not a finite number".to_owned())
}

fn to_bool(v: &Value) -> Out {
    let b = match v {
        Value::Bool(b) => *b,
        Value::Number(n) if n.as_f64() == Some(0.0) => false,
        Value::Number(n) if n.as_f64() == Some(1.0) => true,
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => return Ok(None),
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => {
                return Err(format!(
                    "`{}` is not a boolean (true/false, yes/no, on/off, 1/0)",
                    clip(s)
                ))
            }
        },
        other => {
            return Err(format!(
                "expected a boolean, text or 0/1, found {}",
                kind(other)
            ))
        }
    };
    Ok(Some(Value::Bool(b)))
}

/// RFC 3339 in UTC with `Z`, fractions only when present (as chrono's `AutoSi`), written by hand:
/// chrono's formatter costs more than the rest of a typical field.
fn rfc3339(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // The naive parts once: each accessor of a `DateTime` converts it to local time again.
    let (date, time) = (t.date_naive(), t.time());
    let (year, nanos) = (date.year(), time.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let mut s = String::with_capacity(30);
    for (n, width, sep) in [
        (year as u32, 4, '-'),
        (date.month(), 2, '-'),
        (date.day(), 2, 'T'),
        (time.hour(), 2, ':'),
        (time.minute(), 2, ':'),
    ] {
        push_padded(&mut s, n, width);
        s.push(sep);
    }
    push_padded(&mut s, time.second(), 2);
    if nanos != 0 {
        s.push('.');
        if nanos % 1_000_000 == 0 {
            push_padded(&mut s, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            push_padded(&mut s, nanos / 1_000, 6);
        } else {
            push_padded(&mut s, nanos, 9);
        }
    }
    s.push('Z');
    s
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_padded(s: &mut String, mut n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    while n > 0 && i > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    s.extend(buf[start..].iter().map(|&b| b as char));
}

fn from_epoch(x: f64, millis: bool) -> Result<String, String> {
    let ms = if millis { x } else { x * 1000.0 };
    if !ms.is_finite() || ms.abs() > 8.0e15 {
        return Err(format!("{x} is out of range for a date"));
    }
    DateTime::<Utc>::from_timestamp_millis(ms.round() as i64)
        .map(rfc3339)
        .ok_or_else(|| format!("{x} is out of range for a date"))
}

fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn date(input: &DateInput, v: &Value) -> Result<String, String> {
    match (input, v) {
        // A number read with a format is read as its digits (`20240229` with `%Y%m%d`).
        (DateInput::Format(f), Value::String(_) | Value::Number(_)) => {
            let digits;
            let s = match v {
                Value::String(s) => s.as_str(),
                other => {
                    digits = other.to_string();
                    digits.as_str()
                }
            };
            if let Ok(t) = DateTime::parse_from_str(s, f) {
                return Ok(rfc3339(t.with_timezone(&Utc)));
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                return Ok(rfc3339(t.and_utc()));
            }
            NaiveDate::parse_from_str(s, f)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| rfc3339(t.and_utc()))
                .ok_or_else(|| format!("`{}` does not match the format `{f}`", clip(s)))
        }
        (DateInput::Seconds, v) => from_epoch(number_of(v)?, false),
        (DateInput::Millis, v) => from_epoch(number_of(v)?, true),
        (DateInput::Auto, Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            from_epoch(x, x.abs() >= 1e11)
        }
        (DateInput::Auto, Value::String(s)) => {
            let s = s.trim();
            if let Some(n) = parse_number(s).and_then(|n| n.as_f64()) {
                return from_epoch(n, n.abs() >= 1e11);
            }
            parse_iso(s)
                .map(rfc3339)
                .ok_or_else(|| format!("`{}` is not an ISO-8601 date or epoch time", clip(s)))
        }
        (_, other) => Err(format!(
            "expected a date as text or a number, found {}",
            kind(other)
        )),
    }
}

/// Compile one entry of a `then:` list: a name (`lower`) or a one-key map (`{ divide: 100 }`).
pub fn compile(ctx: &mut Ctx, node: &Node, env: Env) -> Option<Transform> {
    let lookups = env.lookups;
    let (name, name_loc, arg) = match &node.kind {
        Kind::Str(s) => (s.as_str(), node.loc, None),
        Kind::Map(entries) if entries.len() == 1 => (
            entries[0].0.name.as_str(),
            entries[0].0.loc,
            Some(&entries[0].1),
        ),
        _ => {
            ctx.error(
                node.loc,
                format!(
                    "a transform is a name or a one-key map such as {{ divide: 100 }}, found {}",
                    node.describe()
                ),
            )
            .hint = Some(format!("transforms: {}", NAMES.join(", ")));
            return None;
        }
    };
    let needs_arg = |ctx: &mut Ctx, example: &str| {
        ctx.error(name_loc, format!("transform `{name}` needs an argument"))
            .hint = Some(format!("write it as {example}"));
        None
    };
    let t = match (name, arg) {
        ("lower", None) => Transform::Lower,
        ("upper", None) => Transform::Upper,
        ("trim", None) => Transform::Trim,
        ("not_blank", None) => Transform::NotBlank,
        ("first_word", None) => Transform::FirstWord,
        ("rest_words", None) => Transform::RestWords,
        ("to_number", None) => Transform::ToNumber,
        ("to_string", None) => Transform::ToString,
        ("to_bool", None) => Transform::ToBool,
        ("sha256", None) => Transform::Sha256,
        ("round", None) => Transform::Round(0),
        ("date", None) => Transform::Date(DateInput::Auto),
        ("split", None) => return needs_arg(ctx, "{ split: \",\" }"),
        ("join", None) => return needs_arg(ctx, "{ join: \", \" }"),
        ("replace", None) => return needs_arg(ctx, "{ replace: { from: \"-\", to: \"\" } }"),
        ("divide", None) => return needs_arg(ctx, "{ divide: 100 }"),
        ("multiply", None) => return needs_arg(ctx, "{ multiply: 100 }"),
        ("lookup", None) => return needs_arg(ctx, "{ lookup: TABLE } with TABLE under `lookups:`"),
        ("from_minor_units", None) => {
            return needs_arg(ctx, "{ from_minor_units: $.currency }, the currency's path")
        }
        ("split", Some(a)) => Transform::Split(nonempty_text(ctx, a, "split")?),
        ("join", Some(a)) => Transform::Join(ctx.string(a, "join")?.to_owned()),
        ("replace", Some(a)) => compile_replace(ctx, a)?,
        ("divide", Some(a)) => {
            let d = number_arg(ctx, a, "divide")?;
            if d == 0.0 {
                ctx.error(a.loc, "divide: cannot divide by zero");
                return None;
            }
            Transform::Divide(d)
        }
        ("from_minor_units", Some(a)) => {
            Transform::FromMinorUnits(Box::new(compile_minor_units(ctx, a, env)?))
        }
        ("multiply", Some(a)) => Transform::Multiply(number_arg(ctx, a, "multiply")?),
        ("round", Some(a)) => match a.kind {
            Kind::Int(p) if (0..=15).contains(&p) => Transform::Round(p as u32),
            Kind::UInt(p) if p <= 15 => Transform::Round(p as u32),
            _ => {
                ctx.expected(a, "round", "a number of decimal places from 0 to 15");
                return None;
            }
        },
        ("date", Some(a)) => Transform::Date(compile_date(ctx, a)?),
        ("lookup", Some(a)) => Transform::Lookup(table(ctx, a, "lookup", lookups)?),
        (known, Some(a)) if NAMES.contains(&known) => {
            ctx.error(a.loc, format!("transform `{known}` takes no argument"))
                .hint = Some(format!("write it as a plain name: {known}"));
            return None;
        }
        (unknown, _) => {
            let d = ctx.error(name_loc, format!("unknown transform `{unknown}`"));
            d.hint = Some(super::diagnostic::suggest(unknown, NAMES));
            return None;
        }
    };
    Some(t)
}

/// The lookup table a node names (`{ lookup: plans }`, `in: { lookup: plans }`).
pub fn table(
    ctx: &mut Ctx,
    node: &Node,
    what: &str,
    lookups: &Lookups,
) -> Option<Arc<Map<String, Value>>> {
    let name = ctx.string(node, what)?;
    if let Some(t) = lookups.get(name) {
        return Some(t.clone());
    }
    let d = ctx.error(
        node.loc,
        format!("{what}: no table `{name}` under `lookups:`"),
    );
    d.hint = Some(
        match super::diagnostic::did_you_mean(name, lookups.keys().map(String::as_str)) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("define it: lookups: {{ {name}: {{ key: value }} }}"),
        },
    );
    None
}

fn nonempty_text(ctx: &mut Ctx, a: &Node, what: &str) -> Option<String> {
    let s = ctx.string(a, what)?;
    if s.is_empty() {
        ctx.error(a.loc, format!("{what}: the separator cannot be empty"));
        return None;
    }
    Some(s.to_owned())
}

fn number_arg(ctx: &mut Ctx, a: &Node, what: &str) -> Option<f64> {
    match a.kind {
        Kind::Int(i) => Some(i as f64),
        Kind::UInt(u) => Some(u as f64),
        Kind::Float(f) if f.is_finite() => Some(f),
        _ => {
            ctx.expected(a, what, "a number");
            None
        }
    }
}

/// `{ from_minor_units: $.currency }`, or `{ from_minor_units: { currency: $.currency, exponents:
/// { isk: 2 } } }` for a sender that departs from ISO 4217.
fn compile_minor_units(ctx: &mut Ctx, a: &Node, env: Env) -> Option<MinorUnits> {
    const WHAT: &str = "from_minor_units";
    let Kind::Map(_) = a.kind else {
        let minor = MinorUnits {
            currency: ValueExpr::compile(ctx, a, WHAT, env)?,
            exponents: HashMap::new(),
        };
        return constant_currency(ctx, a, &minor).then_some(minor);
    };
    // The long form of a value (`{ path: ..., default: ... }`) is the currency's, one level down.
    let value_keys = ["path", "header", "const", "template", "default", "then"];
    if let Some((k, _)) =
        (a.as_map().unwrap_or(&[]).iter()).find(|(k, _)| value_keys.contains(&k.name.as_str()))
    {
        ctx.error(k.loc, format!("from_minor_units: unknown key `{}`", k.name))
            .hint = Some(format!(
            "the currency's value goes under `currency:`: {{ from_minor_units: {{ currency: {{ {}: ... }} }} }}",
            k.name
        ));
        return None;
    }
    let f = ctx.map(a, WHAT, &["currency", "exponents"])?;
    let Some(c) = f.get("currency") else {
        if !f.unknown {
            ctx.error(
                a.loc,
                "from_minor_units: missing `currency` (where the event names the currency, e.g. $.currency)",
            );
        }
        return None;
    };
    let currency = ValueExpr::compile(ctx, c, "from_minor_units.currency", env);
    let exponents = match f.get("exponents") {
        Some(e) => compile_exponents(ctx, e),
        None => Some(HashMap::new()),
    };
    let ok = !f.unknown && exponents.is_some();
    let minor = MinorUnits {
        currency: currency?,
        exponents: exponents.unwrap_or_default(),
    };
    (constant_currency(ctx, c, &minor) && ok).then_some(minor)
}

/// `exponents: { isk: 2, usdc: 6 }`: decimal places by currency code (any case); every problem
/// reported.
fn compile_exponents(ctx: &mut Ctx, e: &Node) -> Option<HashMap<String, u32>> {
    let Some(entries) = e.as_map() else {
        ctx.expected(
            e,
            "from_minor_units.exponents",
            "a map of currency codes to decimal places",
        );
        return None;
    };
    let mut exponents = HashMap::new();
    let mut ok = true;
    for (key, value) in entries {
        let code = key.name.trim().to_ascii_uppercase();
        if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            ctx.error(
                key.loc,
                format!(
                    "from_minor_units.exponents: `{}` is not a currency code",
                    key.name
                ),
            )
            .hint = Some("write codes such as isk or USD: letters and digits".to_owned());
            ok = false;
            continue;
        }
        let exponent = match value.kind {
            Kind::Int(i) if (0..=i64::from(MAX_EXPONENT)).contains(&i) => i as u32,
            Kind::UInt(u) if u <= u64::from(MAX_EXPONENT) => u as u32,
            _ => {
                ctx.expected(
                    value,
                    "from_minor_units.exponents",
                    &format!("a number of decimal places from 0 to {MAX_EXPONENT}"),
                );
                ok = false;
                continue;
            }
        };
        if exponents.insert(code.clone(), exponent).is_some() {
            ctx.error(
                key.loc,
                format!("from_minor_units.exponents: `{code}` is given twice"),
            );
            ok = false;
        }
    }
    ok.then_some(exponents)
}

/// A currency written as a constant (`{ from_minor_units: JPY }`) is checked at load, so that a path
/// written without its `$.` is reported where it is, not when the first event fails.
fn constant_currency(ctx: &mut Ctx, node: &Node, minor: &MinorUnits) -> bool {
    let checked = match minor.currency.constant() {
        None => return true,
        Some(Value::String(code)) => minor.exponent(&code.trim().to_ascii_uppercase()),
        Some(other) => Err(format!(
            "a currency is a code such as USD, found {}",
            kind(other)
        )),
    };
    match checked {
        Ok(_) => true,
        Err(reason) => {
            ctx.error(node.loc, format!("from_minor_units: {reason}"))
                .hint =
                Some("to read the currency from the event, write its path: $.currency".to_owned());
            false
        }
    }
}

fn compile_replace(ctx: &mut Ctx, a: &Node) -> Option<Transform> {
    let f = ctx.map(a, "replace", &["from", "regex", "to"])?;
    let to = match f.get("to") {
        Some(n) => ctx.string(n, "replace.to")?.to_owned(),
        None => {
            ctx.error(
                a.loc,
                "replace: missing `to` (the replacement text; \"\" to delete)",
            );
            return None;
        }
    };
    let from = match (f.get("from"), f.get("regex")) {
        (Some(n), None) => Pattern::Text(nonempty_text(ctx, n, "replace.from")?),
        (None, Some(n)) => {
            let src = ctx.string(n, "replace.regex")?;
            match Regex::new(src) {
                Ok(re) => Pattern::Regex(re),
                Err(e) => {
                    regex_error(ctx, n, &e);
                    return None;
                }
            }
        }
        _ => {
            ctx.error(
                a.loc,
                "replace: give exactly one of `from` (plain text) or `regex`",
            );
            return None;
        }
    };
    Some(Transform::Replace { from, to })
}

/// Report a regex that does not compile, keeping the regex crate's pointer to the spot.
pub fn regex_error(ctx: &mut Ctx, n: &Node, e: &regex::Error) {
    let detail = e.to_string();
    let last = detail
        .lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_owned();
    ctx.error(n.loc, format!("invalid regex: {last}"));
}

fn compile_date(ctx: &mut Ctx, a: &Node) -> Option<DateInput> {
    let s = ctx.string(a, "date")?;
    Some(match s {
        "auto" | "iso" => DateInput::Auto,
        "seconds" => DateInput::Seconds,
        "millis" => DateInput::Millis,
        f if f.contains('%') => {
            let bad = chrono::format::StrftimeItems::new(f)
                .any(|i| matches!(i, chrono::format::Item::Error));
            if bad {
                ctx.error(a.loc, format!("date: `{f}` is not a valid date format"))
                    .hint =
                    Some("use chrono's strftime syntax, e.g. \"%d/%m/%Y %H:%M\"".to_owned());
                return None;
            }
            DateInput::Format(f.to_owned())
        }
        other => {
            ctx.error(a.loc, format!("date: unknown input `{other}`"))
                .hint =
                Some("use auto, seconds, millis or a format such as \"%d/%m/%Y\"".to_owned());
            return None;
        }
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn rfc3339_matches_chrono() {
        let samples = [
            0i64,
            1,
            999,
            1_000,
            1_700_000_000_123,
            253_402_300_799_999,
            -1,
            -62_135_596_800_000,
        ];
        for ms in samples
            .into_iter()
            .chain((0..2000).map(|i| i * 7_919_777_123 + i))
        {
            let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            assert_eq!(
                rfc3339(t),
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "{ms}"
            );
            let micro = t + chrono::Duration::microseconds(ms.rem_euclid(1000) + 1);
            assert_eq!(
                rfc3339(micro),
                micro.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
            let nano = t + chrono::Duration::nanoseconds(ms.rem_euclid(997) + 1);
            assert_eq!(
                rfc3339(nano),
                nano.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
        }
    }
}
