//! Where subscriptions live, and the compiled view every worker reads.
//!
//! API subscriptions are JSON in the hash `<prefix>:subscriptions`, with one set of ids per account (for
//! the per-account limit, enforced in the same script as the write). File subscriptions come from
//! `subscriptions_file`, loaded at start by every process alike, and are read-only through the API.
//! Each subscription's health (failing since, last success, disabled and why) is a hash of its own, for
//! both kinds. Any change that alters who gets what bumps `<prefix>:subscriptions:version`; processes
//! check that counter at most every `CHECK_EVERY` and reload everything when it moved.

use super::event::Event;
use super::subscription::{glob_match, resolve, signing_key, Auth, Input, Origin, Spec};
use super::Keys;
use crate::egress::EgressPolicy;
use crate::mapping::standalone::{Filter, Template};
use crate::redis_conn::Conn;
use arc_swap::ArcSwap;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use redis::{RedisError, Script};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Health fields, in `<prefix>:subscriptions:health:<id>`.
pub mod hf {
    pub const FAILING_SINCE: &str = "failing_since";
    pub const LAST_SUCCESS_AT: &str = "last_success_at";
    pub const DISABLED_REASON: &str = "disabled_reason";
    pub const DISABLED_AT: &str = "disabled_at";
}

/// A subscription ready to use: patterns, filter and template compiled, credentials resolved.
pub struct Compiled {
    pub spec: Spec,
    pub origin: Origin,
    pub url: url::Url,
    pub filter: Option<Filter>,
    pub template: Option<Template>,
    /// Signing keys: the current one, then previous ones with when they stop (unix ms).
    pub keys: Vec<(Vec<u8>, Option<u64>)>,
    pub auth: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Why it was disabled by hookgate (410, failing too long), if it was.
    pub disabled: Option<String>,
    pub health: HashMap<String, String>,
}

impl Compiled {
    /// Enabled by its owner and not disabled by hookgate.
    pub fn active(&self) -> bool {
        self.spec.enabled && self.disabled.is_none()
    }

    /// Does this subscription get `ev`? Account first (an event without account only goes to
    /// subscriptions without one), then the type patterns, then the filter.
    pub fn wants(&self, ev: &Event) -> bool {
        if self.spec.account != ev.account {
            return false;
        }
        if !self.spec.events.iter().any(|p| glob_match(p, &ev.kind)) {
            return false;
        }
        match &self.filter {
            None => true,
            Some(f) => f.matches(&ev.doc).unwrap_or_else(|e| {
                tracing::debug!(subscription = %self.spec.id, error = %e, "filter failed on an event; not delivered");
                false
            }),
        }
    }

    /// The keys that sign now.
    pub fn signing_keys(&self, now_ms: u64) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| u > now_ms))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn concurrency(&self, default: usize) -> usize {
        self.spec.concurrency.unwrap_or(default)
    }

    /// Whether `spec` would load: what the API runs before it stores a subscription, so that nothing it
    /// accepts is skipped later (a skipped subscription gets no deliveries).
    pub fn check(spec: &Spec, origin: Origin) -> Result<(), String> {
        Self::build(spec.clone(), origin, HashMap::new()).map(|_| ())
    }

    fn build(spec: Spec, origin: Origin, health: HashMap<String, String>) -> Result<Self, String> {
        // A reference stored through the API (accepted before the API refused them) would send
        // hookgate's own environment or files to a URL an API caller chose.
        if origin == Origin::Api && spec.references_secrets() {
            return Err(
                "holds a ${env:} or ${file:} reference, which only subscriptions_file may; \
                 set the value itself through PATCH"
                    .into(),
            );
        }
        let url = url::Url::parse(&spec.url).map_err(|e| format!("url: {e}"))?;
        let filter = spec.filter.as_ref().map(Filter::compile).transpose()?;
        let template = spec.template.as_ref().map(Template::compile).transpose()?;
        let mut keys = vec![(signing_key(resolve(&spec.secret)?.expose())?, None)];
        for old in &spec.previous_secrets {
            keys.push((
                signing_key(resolve(&old.secret)?.expose())?,
                Some(old.expires_at),
            ));
        }
        let auth = match &spec.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let p = resolve(password)?;
                let b = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", p.expose()));
                Some(format!("Basic {b}"))
            }
            Auth::Bearer { token } => Some(format!("Bearer {}", resolve(token)?.expose())),
        };
        let auth = auth
            .map(|a| {
                HeaderValue::from_str(&a).map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()
            .map_err(|_| "auth: not a header value")?;
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: {k}"))?;
            let value = resolve(v)?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("headers: the value of {k}"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Self {
            disabled: health.get(hf::DISABLED_REASON).cloned(),
            spec,
            origin,
            url,
            filter,
            template,
            keys,
            auth,
            headers,
            health,
        })
    }
}

/// Every subscription, compiled.
#[derive(Default)]
pub struct Snapshot {
    pub all: Vec<Arc<Compiled>>,
    pub by_id: HashMap<String, Arc<Compiled>>,
    /// Subscriptions that could not be loaded, and why: the API shows them inactive with the reason.
    pub unusable: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    subscriptions: Vec<Input>,
}

/// Read and validate `subscriptions_file`; every problem is returned.
pub fn load_file(path: &Path, policy: &EgressPolicy) -> Result<Vec<Spec>, Vec<String>> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let doc: FileDoc = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{name}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| name.clone());
        vec![format!(
            "{at}: {}",
            e.to_string().lines().next().unwrap_or("")
        )]
    })?;
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, input) in doc.subscriptions.into_iter().enumerate() {
        let Some(id) = input.id.clone() else {
            problems.push(format!(
                "{name}: subscriptions[{i}]: id: required in a file"
            ));
            continue;
        };
        if !super::subscription::valid_name(&id, b"") || id.starts_with("sub_") {
            problems.push(format!(
                "{name}: subscriptions[{i}]: id: letters, digits, . _ : - (not starting with sub_, the API's own)"
            ));
            continue;
        }
        if !seen.insert(id.clone()) {
            problems.push(format!(
                "{name}: subscriptions[{i}]: id `{id}` is used twice"
            ));
            continue;
        }
        match input.into_spec(id.clone(), 0, policy, true) {
            Ok(s) => specs.push(s),
            Err(e) => problems.push(format!("{name}: subscription `{id}`: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

/// KEYS: subscriptions hash, account set, version. ARGV: id, JSON, how many the account may have.
const CREATE: &str = r#"
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"#;

/// The store and the cached snapshot.
pub struct Registry {
    conn: Conn,
    keys: Keys,
    file: Vec<Spec>,
    snap: ArcSwap<Snapshot>,
    /// (version seen, when it was checked).
    seen: Mutex<(Option<i64>, Instant)>,
    refresh_lock: tokio::sync::Mutex<()>,
    create: Script,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    Redis(RedisError),
    Limit(usize),
}

impl From<RedisError> for WriteError {
    fn from(e: RedisError) -> Self {
        WriteError::Redis(e)
    }
}

impl Registry {
    pub fn new(conn: Conn, keys: Keys, file: Vec<Spec>) -> Self {
        Self {
            conn,
            keys,
            file,
            snap: ArcSwap::from_pointee(Snapshot::default()),
            seen: Mutex::new((None, Instant::now())),
            refresh_lock: tokio::sync::Mutex::new(()),
            create: Script::new(CREATE),
        }
    }

    /// The current subscriptions; reloaded when another process (or this one) changed them. When Redis
    /// does not answer, the last snapshot is used.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        let due = {
            let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            s.0.is_none() || s.1.elapsed() >= CHECK_EVERY
        };
        if due {
            if let Err(e) = self.refresh(false).await {
                tracing::debug!(error = %e, "cannot check subscriptions; using the last ones");
            }
        }
        self.snap.load_full()
    }

    /// Like `snapshot`, but an error until subscriptions were loaded once: an empty set because Redis
    /// did not answer must never be taken for "no subscriptions" (events would be acknowledged unsent).
    pub async fn loaded_snapshot(&self) -> Result<Arc<Snapshot>, RedisError> {
        let never = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_none();
        if never {
            self.refresh(true).await?;
        }
        Ok(self.snapshot().await)
    }

    /// The subscriptions as of now: one GET of the version, a reload only when it moved. An error when
    /// Redis does not answer, so no event is fanned out against a stale or empty set.
    pub async fn current(&self) -> Result<Arc<Snapshot>, RedisError> {
        self.refresh(false).await?;
        Ok(self.snap.load_full())
    }

    /// Reload now if the version moved (or always, with `force`).
    pub async fn refresh(&self, force: bool) -> Result<(), RedisError> {
        let _one = self.refresh_lock.lock().await;
        let mut c = self.conn.clone();
        let version: Option<i64> = redis::cmd("GET")
            .arg(&self.keys.sub_version)
            .query_async(&mut c)
            .await?;
        let version = Some(version.unwrap_or(0));
        {
            let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && s.0 == version {
                s.1 = Instant::now();
                return Ok(());
            }
        }
        let stored: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.keys.subs)
            .query_async(&mut c)
            .await?;
        let mut specs: Vec<(Spec, Origin)> = self
            .file
            .iter()
            .map(|s| (s.clone(), Origin::File))
            .collect();
        for (id, json) in stored {
            match serde_json::from_str::<Spec>(&json) {
                Ok(s) => specs.push((s, Origin::Api)),
                Err(e) => tracing::warn!(id, error = %e, "stored subscription unreadable; skipped"),
            }
        }
        // No subscriptions is a valid answer; redis refuses an empty pipeline.
        let healths: Vec<HashMap<String, String>> = if specs.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for (s, _) in &specs {
                pipe.cmd("HGETALL").arg(self.keys.health(&s.id));
            }
            pipe.query_async(&mut c).await?
        };
        let mut snap = Snapshot::default();
        for ((spec, origin), health) in specs.into_iter().zip(healths) {
            let id = spec.id.clone();
            match Compiled::build(spec, origin, health) {
                Ok(c) => {
                    let c = Arc::new(c);
                    snap.by_id.insert(id, c.clone());
                    snap.all.push(c);
                }
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "subscription cannot be used; skipped");
                    snap.unusable.insert(id, e);
                }
            }
        }
        snap.all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        self.snap.store(Arc::new(snap));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (version, Instant::now());
        Ok(())
    }

    pub fn file_specs(&self) -> &[Spec] {
        &self.file
    }

    pub fn is_file(&self, id: &str) -> bool {
        self.file.iter().any(|s| s.id == id)
    }

    /// An API subscription as stored.
    pub async fn get_stored(&self, id: &str) -> Result<Option<Spec>, RedisError> {
        let mut c = self.conn.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.subs)
            .arg(id)
            .query_async(&mut c)
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Every API subscription, optionally of one account (`Some(None)`: those without an account).
    pub async fn list_stored(&self) -> Result<Vec<Spec>, RedisError> {
        let mut c = self.conn.clone();
        let stored: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.keys.subs)
            .query_async(&mut c)
            .await?;
        Ok(stored
            .values()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect())
    }

    pub async fn health(&self, id: &str) -> Result<HashMap<String, String>, RedisError> {
        let mut c = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(self.keys.health(id))
            .query_async(&mut c)
            .await
    }

    /// Store a new API subscription unless its account is at `limit` (file subscriptions included).
    pub async fn create(&self, spec: &Spec, limit: usize) -> Result<(), WriteError> {
        let in_file = self
            .file
            .iter()
            .filter(|s| s.account == spec.account)
            .count();
        let room = limit.saturating_sub(in_file);
        // A Spec is strings, numbers and JSON values: serialising it cannot fail.
        let json = serde_json::to_string(spec).unwrap_or_default();
        let mut c = self.conn.clone();
        let ok: i64 = self
            .create
            .key(&self.keys.subs)
            .key(self.keys.account_set(spec.account.as_deref()))
            .key(&self.keys.sub_version)
            .arg(&spec.id)
            .arg(json)
            .arg(room)
            .invoke_async(&mut c)
            .await?;
        if ok == 1 {
            self.refresh(false).await?;
            Ok(())
        } else {
            Err(WriteError::Limit(limit))
        }
    }

    /// Replace an API subscription; `reenable` also clears a disable by hookgate.
    pub async fn update(&self, spec: &Spec, reenable: bool) -> Result<(), RedisError> {
        let json = serde_json::to_string(spec).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&self.keys.subs)
            .arg(&spec.id)
            .arg(json)
            .ignore();
        if reenable {
            pipe.cmd("DEL").arg(self.keys.health(&spec.id)).ignore();
        }
        pipe.cmd("INCR").arg(&self.keys.sub_version).ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await?;
        self.refresh(false).await
    }

    /// Clear a disable by hookgate (file subscriptions too).
    pub async fn reenable(&self, id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.health(id))
            .ignore()
            .cmd("INCR")
            .arg(&self.keys.sub_version)
            .ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await?;
        self.refresh(false).await
    }

    pub async fn delete(&self, spec: &Spec) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(&self.keys.subs)
            .arg(&spec.id)
            .ignore()
            .cmd("SREM")
            .arg(self.keys.account_set(spec.account.as_deref()))
            .arg(&spec.id)
            .ignore()
            .cmd("DEL")
            .arg(self.keys.health(&spec.id))
            .ignore()
            .cmd("INCR")
            .arg(&self.keys.sub_version)
            .ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await?;
        self.refresh(false).await
    }

    /// Disable a subscription for `reason`, once: returns whether this call disabled it.
    pub async fn disable(&self, id: &str, reason: &str, now: u64) -> Result<bool, RedisError> {
        let mut c = self.conn.clone();
        let first: bool = redis::cmd("HSETNX")
            .arg(self.keys.health(id))
            .arg(hf::DISABLED_REASON)
            .arg(reason)
            .query_async(&mut c)
            .await?;
        if first {
            let mut pipe = redis::pipe();
            pipe.cmd("HSET")
                .arg(self.keys.health(id))
                .arg(hf::DISABLED_AT)
                .arg(now)
                .ignore()
                .cmd("INCR")
                .arg(&self.keys.sub_version)
                .ignore();
            pipe.query_async::<()>(&mut c).await?;
            let _ = self.refresh(false).await;
        }
        Ok(first)
    }
}
