//! A subscription: who gets which events, where, signed with what, in which shape. Validation lives here
//! (every API and file input goes through `Input::into_spec`), and so does what the API may show of it.

use crate::egress::EgressPolicy;
use crate::mapping::standalone::{Filter, Template};
use crate::secret::{Secret, SecretRef};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a replaced signing secret keeps signing, so receivers can switch without a gap.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);
const MAX_EVENTS: usize = 100;
const MAX_HEADERS: usize = 20;
/// Longest subscriber URL. Each attempt's record and error carry the URL, so a huge one multiplies
/// into Redis memory per event; real endpoints (query tokens included) stay far below.
pub const MAX_URL_LEN: usize = 4096;
/// Fewest deliveries per second a `rate_limit` may set (one per 1,000 s): below it a subscription
/// would in effect never be delivered to, and its events would only wait for `give_up_after`.
const MIN_RATE: f64 = 0.001;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`, nested keys as `contact[email]` (ActiveCampaign style).
    Form,
}

/// Credentials sent to the subscriber. In `subscriptions_file` they are `${env:}`/`${file:}` references
/// (resolved when the subscription is loaded); through the API, the value itself, never a reference:
/// an API caller must not be able to send hookgate's own environment or files to a URL it chooses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
}

/// A previous signing secret and when it stops signing (unix ms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OldSecret {
    pub secret: String,
    pub expires_at: u64,
}

/// Where a subscription was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Api,
    File,
}

/// A subscription as stored (Redis, JSON) or declared (file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<OldSecret>,
    #[serde(default)]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Most deliveries per second (per process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
}

/// What a client sends to create one (and, merged over the current spec, to change one).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Only in the subscriptions file; the API makes its own.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub template: Option<Value>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub rate_limit: Option<f64>,
}

fn yes() -> bool {
    true
}

/// A fresh signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    format!("whsec_{}", B64.encode(k))
}

/// The HMAC key of a `whsec_` secret (the base64 after the prefix, as Standard Webhooks defines it).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("secret: must start with whsec_")?;
    let key = B64
        .decode(b64)
        .map_err(|_| "secret: the part after whsec_ must be base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err("secret: must decode to 24 to 64 bytes".into());
    }
    Ok(key)
}

/// A stored value or a `${...}` reference, resolved.
pub fn resolve(v: &str) -> Result<Secret, String> {
    if v.trim_start().starts_with("${") {
        SecretRef::parse(v)
            .and_then(|r| r.resolve())
            .map_err(|e| e.to_string())
    } else {
        Secret::stored(v).map_err(|e| e.to_string())
    }
}

fn is_ref(v: &str) -> bool {
    v.trim_start().starts_with("${")
}

/// `contact.*`-style patterns: `*` matches any run of characters (dots included).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Event types and account names: short, printable, no spaces.
pub fn valid_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c) || extra.contains(&c))
}

impl Input {
    /// Validate and build the stored spec. `policy` checks the URL; `file` says whether literals are
    /// refused (secrets in a committed file must be references). Every message is a 422 reason.
    pub fn into_spec(
        self,
        id: String,
        now: u64,
        policy: &EgressPolicy,
        file: bool,
    ) -> Result<Spec, String> {
        if self.name.trim().is_empty()
            || self.name.len() > 200
            || self.name.chars().any(char::is_control)
        {
            return Err("name: required, at most 200 characters, no control characters".into());
        }
        if let Some(a) = &self.account {
            if !valid_name(a, b"@") {
                return Err("account: 1 to 200 letters, digits or . _ : - @, no spaces".into());
            }
        }
        check_url(&self.url, policy)?;
        if self.events.is_empty() || self.events.len() > MAX_EVENTS {
            return Err(format!(
                "events: give 1 to {MAX_EVENTS} event types or patterns such as contact.*"
            ));
        }
        for e in &self.events {
            if !valid_name(e, b"*") {
                return Err(format!("events: `{e}` is not an event type or pattern"));
            }
        }
        if let Some(f) = &self.filter {
            Filter::compile(f)?;
        }
        if let Some(t) = &self.template {
            Template::compile(t)?;
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(format!("headers: at most {MAX_HEADERS}"));
        }
        for (k, v) in &self.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: `{k}` is not a header name"))?;
            if RESERVED.contains(&name.as_str()) || name.as_str().starts_with("webhook-") {
                return Err(format!("headers: `{k}` is set by hookgate"));
            }
            if !file && is_ref(v) {
                return Err(format!("headers: the value of `{k}`: {API_NO_REFS}"));
            }
            if file && !is_ref(v) && looks_secret(name.as_str()) {
                return Err(format!(
                    "headers: `{k}` in a file must be a ${{env:}} or ${{file:}} reference"
                ));
            }
            if !is_ref(v) && http::HeaderValue::from_str(v).is_err() {
                return Err(format!("headers: the value of `{k}` is not a header value"));
            }
        }
        match &self.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                if username.is_empty() || username.contains(':') {
                    return Err("auth.username: required, without `:`".into());
                }
                check_credential("auth.password", password, file)?;
            }
            Auth::Bearer { token } => check_credential("auth.token", token, file)?,
        }
        let secret = match self.secret {
            Some(s) if is_ref(&s) && !file => return Err(format!("secret: {API_NO_REFS}")),
            Some(s) if is_ref(&s) => {
                let v = resolve(&s)?;
                signing_key(v.expose())?;
                s
            }
            Some(_) if file => {
                return Err("secret: in a file it must be a ${env:} or ${file:} reference".into())
            }
            Some(s) => {
                signing_key(&s)?;
                s
            }
            None if file => {
                return Err("secret: required in a file (a ${env:} or ${file:} reference)".into())
            }
            None => generate_secret(),
        };
        if self.concurrency == Some(0) || self.concurrency.is_some_and(|c| c > 256) {
            return Err("concurrency: 1 to 256".into());
        }
        if self
            .rate_limit
            .is_some_and(|r| !(r >= MIN_RATE && r.is_finite()))
        {
            return Err(format!(
                "rate_limit: deliveries per second, at least {MIN_RATE}"
            ));
        }
        Ok(Spec {
            id,
            account: self.account,
            name: self.name,
            url: self.url,
            events: self.events,
            filter: self.filter,
            auth: self.auth,
            headers: self.headers,
            secret,
            previous_secrets: Vec::new(),
            format: self.format,
            template: self.template,
            enabled: self.enabled,
            concurrency: self.concurrency,
            rate_limit: self.rate_limit,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Headers hookgate sets itself.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "authorization",
    "transfer-encoding",
    "connection",
];

fn looks_secret(name: &str) -> bool {
    ["key", "token", "secret", "auth", "password", "signature"]
        .iter()
        .any(|w| name.contains(w))
}

/// Why the API refuses a `${...}` value.
const API_NO_REFS: &str = "${env:} and ${file:} references are read only from subscriptions_file; \
     through the API give the value itself";

fn check_credential(what: &str, v: &str, file: bool) -> Result<(), String> {
    if is_ref(v) && !file {
        Err(format!("{what}: {API_NO_REFS}"))
    } else if is_ref(v) {
        resolve(v).map(|_| ()).map_err(|e| format!("{what}: {e}"))
    } else if file {
        Err(format!(
            "{what}: in a file it must be a ${{env:}} or ${{file:}} reference"
        ))
    } else if v.is_empty() {
        Err(format!("{what}: required"))
    } else {
        Ok(())
    }
}

/// A subscriber URL: absolute, at most [`MAX_URL_LEN`] bytes, https (http only with `egress.allow_http`),
/// no credentials, a port other than 0, a host the egress policy allows. Not counted as an egress refusal:
/// nothing was sent.
pub fn check_url(raw: &str, policy: &EgressPolicy) -> Result<url::Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url: longer than {MAX_URL_LEN} bytes"));
    }
    // The URL parser drops tabs and line breaks silently; the stored text would then differ from what
    // is delivered to, and a URL with them is a paste gone wrong.
    if raw.chars().any(|c| c.is_control() || c == ' ') {
        return Err("url: holds a space or a control character (a tab, a line break)".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("url: not a URL ({e})"))?;
    match url.scheme() {
        "https" | "http" => {}
        s => return Err(format!("url: scheme {s} is not allowed; use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url: put credentials in `auth`, not in the URL".into());
    }
    if url.host().is_none() {
        return Err("url: no host".into());
    }
    if url.port() == Some(0) {
        return Err("url: port 0 is not a port to deliver to".into());
    }
    policy.vet_url(&url).map_err(|e| format!("url: {e}"))?;
    Ok(url)
}

/// First characters of a secret, to recognise it without revealing it.
fn hint(secret: &str) -> String {
    if is_ref(secret) {
        secret.to_string()
    } else {
        format!("{}…", secret.chars().take(10).collect::<String>())
    }
}

fn masked(v: &str) -> String {
    if is_ref(v) {
        v.to_string()
    } else {
        "***".into()
    }
}

impl Spec {
    /// The client's view: credentials masked (references shown, they are not secrets), the signing
    /// secret as a hint. `origin` and the health are added by the caller.
    pub fn public(&self) -> Map<String, Value> {
        let auth = match &self.auth {
            Auth::None => json!({"type": "none"}),
            Auth::Basic { username, password } => {
                json!({"type": "basic", "username": username, "password": masked(password)})
            }
            Auth::Bearer { token } => json!({"type": "bearer", "token": masked(token)}),
        };
        // Every header value is masked, whatever its name: a credential can hide under any name
        // (`cookie`, `x-credential`), and the API promises never to show one.
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(masked(v))))
            .collect();
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("account".into(), json!(self.account));
        m.insert("name".into(), json!(self.name));
        m.insert("url".into(), json!(self.url));
        m.insert("events".into(), json!(self.events));
        m.insert("filter".into(), json!(self.filter));
        m.insert("auth".into(), auth);
        m.insert("headers".into(), Value::Object(headers));
        m.insert("secret_hint".into(), json!(hint(&self.secret)));
        m.insert("format".into(), json!(self.format));
        m.insert("template".into(), json!(self.template));
        m.insert("enabled".into(), json!(self.enabled));
        m.insert("concurrency".into(), json!(self.concurrency));
        m.insert("rate_limit".into(), json!(self.rate_limit));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        m
    }

    /// Whether a credential, header value or the signing secret is a `${...}` reference. A previous
    /// secret is left out: it only signs, and refusing it would keep a subscription whose reference was
    /// just replaced unusable through the rotation overlap.
    pub fn references_secrets(&self) -> bool {
        let auth = match &self.auth {
            Auth::None => false,
            Auth::Basic { password, .. } => is_ref(password),
            Auth::Bearer { token } => is_ref(token),
        };
        auth || self.headers.values().any(|v| is_ref(v)) || is_ref(&self.secret)
    }

    /// The spec as input again, for PATCH: the client's fields merged over these.
    pub fn as_input(&self) -> Map<String, Value> {
        let mut m = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for k in ["id", "previous_secrets", "created_at", "updated_at"] {
            m.remove(k);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("contact.*", "contact.created"));
        assert!(glob_match("contact.*", "contact.list.added"));
        assert!(!glob_match("contact.*", "contacts.created"));
        assert!(!glob_match("contact.*", "email.opened"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*.opened", "email.opened"));
        assert!(glob_match("contact.created", "contact.created"));
        assert!(!glob_match("contact.created", "contact.created2"));
    }

    #[test]
    fn generated_secrets_are_standard_webhooks_keys() {
        let s = generate_secret();
        assert_eq!(signing_key(&s).unwrap().len(), 32);
        assert!(signing_key("whsec_!!").is_err());
        assert!(signing_key("abc").is_err());
    }
}
