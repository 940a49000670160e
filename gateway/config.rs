//! The gateway's configuration: a YAML file, overridden key by key from `HOOKGATE_<KEY>` env vars
//! (nested keys joined with `__`). Every field has a default so an empty file is a working dev setup.

mod one_path;

use crate::mapping::yaml::{Kind, Loc, Node};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which parts of the gateway this process runs, so ingestion and workers scale apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inbound listener and admin API only.
    Api,
    /// Workers only (plus the admin listener for health and metrics).
    Worker,
    /// Everything.
    #[default]
    All,
}

/// The shape of the inbound stream entries this process writes (`inbound_format`). Every version since
/// `meta` reads both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundFormat {
    /// `source`, `meta` (the rest of the receipt as one JSON object), `body`: a fifth less Redis work per
    /// event.
    #[default]
    Meta,
    /// A field per receipt member, as versions before 2026-12-06 wrote and read: for a rolling upgrade
    /// while workers of such a version still run (they cannot read `meta`).
    Fields,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `hookgate=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Limits on what a sender may make us do; every one has a safe default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Default body limit per request; a source may set its own `max_body`.
    #[serde(serialize_with = "bytes_as_number")]
    pub max_body: bytesize::ByteSize,
    /// Open connections per listener; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Webhook requests being handled at once; one more waits up to 5 s for a slot, then gets 503.
    /// With `max_body` this bounds the memory bodies can take.
    pub max_in_flight: usize,
    /// Most request header fields accepted (HTTP/1: by hyper; HTTP/2: counted by the receiver).
    pub max_headers: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Time allowed to receive the request head; slow-loris guard. Also how long a new connection may
    /// stay silent.
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// A connection (HTTP/1 or HTTP/2) on which no request has started for this long is closed
    /// gracefully; HTTP/2 has no other timer for an idle connection.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Time allowed for a whole request, body included. Must exceed what the receiver itself may wait
    /// ([`IN_FLIGHT_WAIT`] + 3 × `redis.response_timeout`), so a stalled Redis gets its 503.
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// The least rate, in bytes per second, at which a webhook body must arrive once
    /// `body_rate_grace` has passed (averaged since the body began); slower → 408. A stalled body would
    /// otherwise hold its in-flight slot until `request_timeout`. 0 turns the floor off.
    #[serde(serialize_with = "bytes_as_number")]
    pub min_body_rate: bytesize::ByteSize,
    /// How long a body may take before `min_body_rate` is checked.
    #[serde(with = "humantime_serde_compat")]
    pub body_rate_grace: Duration,
}

/// How long a webhook request waits for an in-flight slot (`limits.max_in_flight`) before it gets 503.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// The most storing one webhook may take (`stream::Store::store_inbound`): a turn on the Redis
/// connection, the command and its one retry, each within `redis.response_timeout`. Bounded as a whole,
/// since the connection manager's wait for a reconnect is not under the response timeout.
pub fn store_deadline(response_timeout: Duration) -> Duration {
    response_timeout.saturating_mul(3)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: bytesize::ByteSize::mib(1),
            max_connections: 10_000,
            max_in_flight: 1024,
            max_headers: 100,
            max_json_depth: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            min_body_rate: bytesize::ByteSize::kib(1),
            body_rate_grace: Duration::from_secs(5),
        }
    }
}

/// Redis connection tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// How long one command may take before the request is answered 503 (the client default is 500 ms).
    #[serde(with = "humantime_serde_compat")]
    pub response_timeout: Duration,
    /// How long connecting may take.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, a few are enough: the rest is discovered).
    /// When set, `redis_url` is not used and each key family gets a hash tag of its own.
    pub cluster_nodes: Vec<String>,
    /// For `rediss://`: PEM file of the CA(s) that signed Redis's certificate (a private CA). Without it the
    /// public web roots (Mozilla's, built in) are trusted.
    pub tls_ca_file: Option<PathBuf>,
    /// For `rediss://` to a Redis that requires client certificates (`tls-auth-clients yes`): PEM files of
    /// the certificate and its key (a mounted Secret).
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    /// Answer a webhook or a publish 2xx only once this many replicas of the master that stored it hold
    /// it (Redis `WAIT`), so promoting one of them loses nothing a sender was told was taken; otherwise
    /// 503. 0 (the default) answers once the master has it.
    pub min_replica_acks: u32,
    /// Answer 2xx only once the event is in the master's append-only file on disk (and in that of each of
    /// the `min_replica_acks` replicas): Redis `WAITAOF`, 7.2 or later. Without it, `appendfsync everysec`
    /// leaves up to a second of acknowledged events in the page cache, where a power cut loses them.
    pub fsync_acks: bool,
    /// How long a request waits for its acknowledgements (replicas, fsync) before it gets 503.
    #[serde(with = "humantime_serde_compat")]
    pub replica_ack_timeout: Duration,
}

impl RedisConfig {
    /// Whether a store waits for acknowledgements (replicas, fsync) before it counts as taken.
    pub fn waits_for_acks(&self) -> bool {
        self.min_replica_acks > 0 || self.fsync_acks
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            cluster_nodes: Vec::new(),
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            min_replica_acks: 0,
            fsync_acks: false,
            replica_ack_timeout: Duration::from_secs(1),
        }
    }
}

/// The platform's contacts API that inbound actions are delivered to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    pub url: String,
    /// Extra headers; values may be secret references (`${env:BREVO_API_KEY}`).
    pub headers: BTreeMap<String, String>,
    /// Per action type (`create_contact`, `upsert_contact`, `update_contact`, `custom_event`), a route
    /// replacing the default Brevo API v3 one, for an upstream of another shape.
    pub routes: BTreeMap<String, RouteSpec>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            url: "http://contacts.internal".into(),
            headers: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }
}

/// One action type's route as written; unset fields keep the default. Checked by `route::Routes::compile`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSpec {
    /// `POST`, `PUT`, `PATCH`, `DELETE` or `GET`.
    pub method: Option<String>,
    /// Path and query after `upstream.url`, with `{placeholders}` from the action, percent-encoded.
    pub path: Option<String>,
    /// `brevo` (the default body), `action` (hookgate's action JSON) or `none`.
    pub body: Option<String>,
}

impl Upstream {
    /// The compiled routes; `Err` lists every problem as `(key, message)`.
    pub fn compiled_routes(&self) -> Result<crate::route::Routes, Vec<(String, String)>> {
        crate::route::Routes::compile(self.routes.iter().map(|(kind, r)| {
            (
                kind.as_str(),
                r.method.as_deref(),
                r.path.as_deref(),
                r.body.as_deref(),
            )
        }))
        .map_err(|ps| {
            ps.into_iter()
                .map(|(kind, p)| {
                    let key = match p.field {
                        "" => format!("upstream.routes.{kind}"),
                        f => format!("upstream.routes.{kind}.{f}"),
                    };
                    (key, p.message)
                })
                .collect()
        })
    }
}

/// How inbound actions are delivered to the upstream (the mapper workers).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deliver {
    /// Events delivered at once per source, so one slow provider never starves the others.
    pub concurrency: usize,
    /// Time allowed to connect to the upstream.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Time allowed for one whole upstream request; also sets when a crashed worker's events are reclaimed.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Delay before the first retry; it doubles per attempt, with full jitter.
    #[serde(with = "humantime_serde_compat")]
    pub retry_base: Duration,
    /// Longest delay between two attempts (a longer `Retry-After` is still honoured).
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// How long after its first failure an event is retried before it goes to the dead letters.
    #[serde(with = "humantime_serde_compat")]
    pub give_up_after: Duration,
    /// Also append every delivered action to `<prefix>:actions`, for other consumers.
    pub actions_stream: bool,
    /// How long entries of `<prefix>:inbound` are kept once every consumer group has acknowledged them;
    /// older ones are trimmed so the stream does not grow forever. Unacknowledged entries are never trimmed.
    #[serde(with = "humantime_serde_compat")]
    pub inbound_retention: Duration,
    /// Consumers of the `mappers` group idle this long with nothing pending are removed (processes that
    /// are gone, e.g. old pods), so `XINFO CONSUMERS` does not list every name ever seen.
    #[serde(with = "humantime_serde_compat")]
    pub remove_idle_consumers_after: Duration,
}

impl Default for Deliver {
    fn default() -> Self {
        Self {
            concurrency: 8,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            actions_stream: false,
            inbound_retention: Duration::from_secs(24 * 3600),
            remove_idle_consumers_after: Duration::from_secs(3600),
        }
    }
}

/// Where outbound deliveries may connect.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// CIDRs opened as exceptions to the default deny of private ranges.
    pub allow: Vec<IpNet>,
    /// CIDRs denied in addition.
    pub deny: Vec<IpNet>,
    /// Allow plain-HTTP subscriber URLs.
    pub allow_http: bool,
}

/// The outbound relay: published events delivered to subscribers (`docs/outbound.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Subscriptions one account may have (file and API together).
    pub max_subscriptions_per_account: usize,
    /// Deliveries in flight at once per subscription (per process), unless the subscription sets its own.
    pub concurrency: usize,
    /// Time allowed to connect to a subscriber.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Time allowed for one whole request to a subscriber.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Delay after the first failure; it doubles per attempt, with jitter.
    #[serde(with = "humantime_serde_compat")]
    pub retry_base: Duration,
    /// Longest delay between two attempts (a longer `Retry-After` is still honoured).
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// How long after its first failure a delivery is retried before it goes to the dead letters.
    #[serde(with = "humantime_serde_compat")]
    pub give_up_after: Duration,
    /// A subscription failing this long without one success is disabled (`subscription.disabled` is published).
    #[serde(with = "humantime_serde_compat")]
    pub disable_after: Duration,
    /// How long finished deliveries and their attempts stay listable.
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
    /// How long a producer's event `id` is remembered for dedup.
    #[serde(with = "humantime_serde_compat")]
    pub dedup_ttl: Duration,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            max_subscriptions_per_account: 40,
            concurrency: 4,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(8 * 3600),
            give_up_after: Duration::from_secs(3 * 86_400),
            disable_after: Duration::from_secs(5 * 86_400),
            retention: Duration::from_secs(7 * 86_400),
            dedup_ttl: Duration::from_secs(86_400),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Inbound webhooks listener.
    pub listen: String,
    /// Admin API, /metrics, /healthz, /readyz.
    pub admin_listen: String,
    pub redis_url: String,
    /// Prefix of every Redis key. On Redis Cluster each key family gets its own hash tag from it
    /// (`stream::Families`); a prefix that holds a hash tag keeps every key in that one slot.
    pub key_prefix: String,
    /// Directory of source/mapping files (a ConfigMap mount on Kubernetes).
    pub mappings_dir: PathBuf,
    /// How often mappings_dir is re-read in case a change event was missed (changes are also watched).
    #[serde(with = "humantime_serde_compat")]
    pub mappings_poll: Duration,
    /// CIDRs of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The shape of the inbound entries written: `meta`, or `fields` during a rolling upgrade from a
    /// version before 2026-12-06 (README, "What is stored").
    pub inbound_format: InboundFormat,
    pub upstream: Upstream,
    pub deliver: Deliver,
    pub egress: Egress,
    pub outbound: Outbound,
    /// Subscriptions declared in a YAML file (GitOps), loaded at start; read-only through the API.
    pub subscriptions_file: Option<PathBuf>,
    pub limits: Limits,
    pub redis: RedisConfig,
    pub log: LogConfig,
    /// After SIGTERM, how long `/readyz` reports unready before the listeners stop, so load balancers
    /// stop sending first.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_delay: Duration,
    /// Time in-flight work gets to finish after SIGTERM.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// CIDRs allowed to call the admin API (`/v1/...`); empty allows any address that has the token.
    /// `/healthz`, `/readyz` and `/metrics` stay open to probes and scrapers.
    pub admin_allow_ips: Vec<IpNet>,
    /// How often stream lengths, pending entries and dead letters are read from Redis for `/metrics`.
    #[serde(with = "humantime_serde_compat")]
    pub metrics_sample_interval: Duration,
    /// Set from `--role`, not from the file.
    #[serde(skip)]
    pub role: Role,
    /// From env `HOOKGATE_ADMIN_TOKEN` or the file named by `HOOKGATE_ADMIN_TOKEN_FILE`; never from the file.
    #[serde(skip)]
    pub admin_token: Option<crate::secret::Secret>,
    /// Where keys checked after parsing were written (`file:line:col`, or `env HOOKGATE_...`), so their
    /// problems point there; keyed by dotted key (`upstream.routes.update_contact.path`).
    #[serde(skip)]
    pub locations: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "0.0.0.0:9090".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "hookgate".into(),
            mappings_dir: PathBuf::from("mappings"),
            mappings_poll: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            inbound_format: InboundFormat::default(),
            upstream: Upstream::default(),
            deliver: Deliver::default(),
            egress: Egress::default(),
            outbound: Outbound::default(),
            subscriptions_file: None,
            limits: Limits::default(),
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            shutdown_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            admin_allow_ips: Vec::new(),
            metrics_sample_interval: Duration::from_secs(10),
            role: Role::All,
            admin_token: None,
            locations: BTreeMap::new(),
        }
    }
}

/// Headers hookgate sets on every upstream request (and those the HTTP client owns), which
/// `upstream.headers` may not name.
const UPSTREAM_OWN_HEADERS: &[&str] = &[
    "idempotency-key",
    "x-hookgate-source",
    "x-hookgate-event-id",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// The largest body limit, for the gateway and for any source: bodies are held in memory.
pub const MAX_BODY_CAP: bytesize::ByteSize = bytesize::ByteSize::mib(64);

/// The shortest `deliver.remove_idle_consumers_after`: above the time a live worker goes between reads
/// (2 s blocking reads, plus pauses while the upstream is unreachable), each of which counts as activity
/// from Redis 7.2 on, so live workers are not removed.
pub const MIN_CONSUMER_IDLE: Duration = Duration::from_secs(5);

/// Env vars that are read elsewhere and are not config keys.
const NOT_KEYS: &[&str] = &["HOOKGATE_ADMIN_TOKEN", "HOOKGATE_ADMIN_TOKEN_FILE"];

impl Config {
    /// Load `path` (or defaults), apply env overrides, validate. Every problem is returned, each saying where.
    pub fn load(path: Option<&Path>, role: Role) -> Result<Config, Vec<String>> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HOOKGATE_") && !NOT_KEYS.contains(&k.as_str()))
            .collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| vec![format!("{}: cannot read: {e}", p.display())])?,
            None => String::new(),
        };
        let name = path.map_or("<defaults>".to_string(), |p| p.display().to_string());
        // Every problem at once: the admin token's, the file's or the overrides', and the checks'.
        let mut problems = Vec::new();
        let admin_token = Self::admin_token_from_env().unwrap_or_else(|p| {
            problems.extend(p);
            None
        });
        match Self::from_sources(&name, &text, &env) {
            Ok(mut cfg) => {
                cfg.role = role;
                cfg.admin_token = admin_token;
                problems.extend(cfg.validate().err().unwrap_or_default());
                if problems.is_empty() {
                    Ok(cfg)
                } else {
                    Err(problems)
                }
            }
            Err(p) => {
                problems.extend(p);
                Err(problems)
            }
        }
    }

    /// Parse YAML `text` (named `name` in errors) and apply `env` overrides; pure, for tests.
    pub fn from_sources(
        name: &str,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, Vec<String>> {
        // The file's shape, with places: read once for the problems' places and the unknown keys.
        let doc = parse_shape(text);
        let mut locations = key_locations(name, doc.as_ref());
        // A file with wrong values is still read without them, so that every problem is reported at once:
        // its own, the overrides', and the checks' on the rest. An override of a wrong value replaces it.
        let (cfg, mut file_problems) = if text.trim().is_empty() {
            (Config::default(), Vec::new())
        } else {
            match serde_saphyr::from_str(text) {
                Ok(cfg) => (cfg, Vec::new()),
                Err(e) => {
                    let found = parse_problems(name, text, &e, doc.as_ref(), &locations);
                    match read_without_problems(text, &found) {
                        Some(rest) => (rest, found),
                        None => return Err(found.into_iter().map(|p| p.message).collect()),
                    }
                }
            }
        };
        if env.is_empty() && file_problems.is_empty() {
            return Ok(Config { locations, ..cfg });
        }
        let base = serde_json::to_value(&cfg).map_err(|e| vec![format!("config: {e}")])?;
        let mut chosen = Vec::new();
        let mut problems = Vec::new();
        for (key, raw) in env {
            let mut path: Vec<String> = key["HOOKGATE_".len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            // A header's name cannot be written in a variable's name, which has no `-`: `_` stands for it
            // (`HOOKGATE_UPSTREAM__HEADERS__API_KEY` sets `api-key`, Brevo's).
            if let [section, headers, name] = &mut path[..] {
                if section == "upstream" && headers == "headers" {
                    *name = name.replace('_', "-");
                }
            }
            // Each override is checked alone on the file, so every bad one is named, not just serde's
            // first. A value that reads as a number or a list but belongs in a text field (a header's
            // value, a password of digits) is taken as the text it was.
            // Text is never re-read as YAML text: `k3y #1` keeps its `#1`, `"x"` its quotes.
            let typed = env_value(raw);
            let text = Value::String(raw.clone());
            // A list of one may be written as its item (`HOOKGATE_TRUSTED_PROXIES=10.0.0.0/8`).
            let candidates = match typed {
                Value::String(_) => vec![text.clone(), Value::Array(vec![text])],
                Value::Array(_) => vec![typed, text],
                _ => vec![typed.clone(), text, Value::Array(vec![typed])],
            };
            // When no reading fits, the error that reached deepest is the telling one: for a list of
            // one, the item's own (`not a CIDR`), not "expected a sequence".
            let mut first_err: Option<(usize, String)> = None;
            let mut taken = None;
            for value in candidates {
                let mut alone = base.clone();
                if let Err(p) = set_path(&mut alone, &path, value.clone()) {
                    first_err.get_or_insert((0, format!("env {key}: {p}")));
                    break;
                }
                match serde_path_to_error::deserialize::<_, Config>(alone) {
                    Ok(_) => {
                        taken = Some(value);
                        break;
                    }
                    Err(e) => {
                        let depth = e.path().iter().count();
                        if first_err.as_ref().is_none_or(|(d, _)| depth > *d) {
                            first_err = Some((depth, env_problem(&e)));
                        }
                    }
                }
            }
            let first_err = first_err.map(|(_, e)| e);
            match taken {
                Some(value) => {
                    // The file's wrong value under this key is no longer in effect.
                    file_problems.retain(|p| p.path.as_ref().is_none_or(|f| !f.starts_with(&path)));
                    chosen.push((path.clone(), value));
                }
                None => {
                    // Not applied: the file's value stays in effect, and so do its places.
                    problems.extend(first_err);
                    continue;
                }
            }
            // The override's key is now set by the env: drop the file's places under it (list items,
            // fields) so no problem points at a value that is no longer in effect.
            let (field, item) = (
                format!("{}.", path.join(".")),
                format!("{}[", path.join(".")),
            );
            locations.retain(|k, _| !(k.starts_with(&field) || k.starts_with(&item)));
            for n in 1..=path.len() {
                let origin = format!("env {key}");
                let prefix = path[..n].join(".");
                if n == path.len() {
                    locations.insert(prefix, origin);
                } else {
                    locations.entry(prefix).or_insert(origin);
                }
            }
        }
        let mut tree = base;
        for (path, value) in chosen {
            set_path(&mut tree, &path, value).map_err(|p| vec![format!("env: {p}")])?;
        }
        let mut all: Vec<String> = file_problems.iter().map(|p| p.message.clone()).collect();
        let cfg: Config = match serde_path_to_error::deserialize(tree) {
            Ok(cfg) => cfg,
            Err(e) => {
                all.extend(problems);
                all.push(env_problem(&e));
                return Err(all);
            }
        };
        let cfg = Config { locations, ..cfg };
        if all.is_empty() && problems.is_empty() {
            return Ok(cfg);
        }
        // With the good overrides applied, the checks still run on what was read, so every problem is
        // reported at once. A key whose own value was wrong has its default in its place: its checks
        // would be about a value nobody wrote.
        let unread: Vec<String> = file_problems
            .iter()
            .filter_map(|p| p.path.as_ref().map(|k| k.join(".")))
            .collect();
        all.extend(problems);
        all.extend(cfg.problems_except(&unread));
        Err(all)
    }

    /// `key: message`, prefixed with where the key was written when that is known.
    /// A key without a place of its own (a list item set from the env) takes its nearest parent's.
    fn located(&self, key: &str, message: &str) -> String {
        let mut k = key;
        loop {
            if let Some(at) = self.locations.get(k) {
                return format!("{at}: {key}: {message}");
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return format!("{key}: {message}"),
            }
        }
    }

    /// Every semantic problem at once, each naming its key and, when known, where it was written
    /// (`file:line:col: key: message`, or `env HOOKGATE_...: key: message`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let p = self.problems_except(&[]);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// The semantic problems, except those about a key in `unread` (dotted) or under it.
    fn problems_except(&self, unread: &[String]) -> Vec<String> {
        let mut p = Vec::new();
        let under = |key: &str| {
            unread.iter().any(|u| {
                key.strip_prefix(u.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
        };
        let mut bad = |key: &str, message: String| {
            if !under(key) {
                p.push(self.located(key, &message));
            }
        };
        for (key, v) in [
            ("listen", &self.listen),
            ("admin_listen", &self.admin_listen),
        ] {
            if v.parse::<SocketAddr>().is_err() {
                bad(key, "not an address such as 0.0.0.0:8080".into());
            }
        }
        // As addresses, not text: `127.0.0.1:8080` and `0.0.0.0:8080` (or `:08080`) are one port.
        let clash = match (
            self.listen.parse::<SocketAddr>(),
            self.admin_listen.parse::<SocketAddr>(),
        ) {
            // An unspecified address takes its port on every address of its family; `[::]` takes
            // IPv4 too (dual-stack, Linux's default).
            (Ok(a), Ok(b)) => {
                let covers = |x: SocketAddr, y: SocketAddr| {
                    x.ip().is_unspecified() && (x.is_ipv6() || x.is_ipv4() == y.is_ipv4())
                };
                a.port() == b.port()
                    && a.port() != 0
                    && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
            }
            _ => self.listen == self.admin_listen,
        };
        // A check comparing two keys is skipped when either was not read (its default stands in).
        if clash && !under("listen") {
            bad(
                "admin_listen",
                "must differ from listen (the admin API is never exposed with webhooks)".into(),
            );
        }
        match url::Url::parse(&self.redis_url) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "unix" | "redis+unix") => {}
            u => bad(
                "redis_url",
                format!("not a redis:// or rediss:// URL{}", what_url(&u)),
            ),
        }
        for (i, node) in self.redis.cluster_nodes.iter().enumerate() {
            match url::Url::parse(node) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.port().is_some() => {}
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") => bad(
                    &format!("redis.cluster_nodes[{i}]"),
                    "not a redis://host:port or rediss://host:port URL (it has no port)".into(),
                ),
                u => bad(
                    &format!("redis.cluster_nodes[{i}]"),
                    format!(
                        "not a redis://host:port or rediss://host:port URL{}",
                        what_url(&u)
                    ),
                ),
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            bad("key_prefix", "must be non-empty without spaces".into());
        }
        let r = &self.redis;
        match (&r.tls_client_cert_file, &r.tls_client_key_file) {
            (Some(_), None) => bad(
                "redis.tls_client_cert_file",
                "set redis.tls_client_key_file too (both or neither)".into(),
            ),
            (None, Some(_)) => bad(
                "redis.tls_client_key_file",
                "set redis.tls_client_cert_file too (both or neither)".into(),
            ),
            _ => {}
        }
        let tls_files = [
            ("redis.tls_ca_file", &r.tls_ca_file),
            ("redis.tls_client_cert_file", &r.tls_client_cert_file),
            ("redis.tls_client_key_file", &r.tls_client_key_file),
        ];
        // Files read at start: one that cannot be read is said here, with the rest, where it is named.
        for (key, file) in tls_files
            .iter()
            .chain([&("subscriptions_file", &self.subscriptions_file)])
        {
            if let Some(path) = file {
                if let Err(e) = std::fs::File::open(path).and_then(|f| f.metadata()) {
                    bad(key, format!("cannot read {}: {e}", path.display()));
                } else if path.is_dir() {
                    bad(
                        key,
                        format!("{} is a directory, not a file", path.display()),
                    );
                }
            }
        }
        let tls_file = tls_files.into_iter().find(|(_, f)| f.is_some());
        let urls: Vec<&String> = match r.cluster_nodes.is_empty() {
            true => vec![&self.redis_url],
            false => r.cluster_nodes.iter().collect(),
        };
        if let Some((key, _)) = tls_file {
            let read = !under("redis_url") && !under("redis.cluster_nodes");
            if read && !urls.iter().all(|u| u.starts_with("rediss://")) {
                bad(
                    key,
                    "a TLS file is set, but Redis is not reached with rediss:// URLs".into(),
                );
            }
        }
        if !braces_form_one_hash_tag(&self.key_prefix) {
            bad(
                "key_prefix",
                "has braces that are not one hash tag such as `{hookgate}` (on Redis Cluster they would decide the slot)".into(),
            );
        }
        match url::Url::parse(&self.upstream.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            u => bad(
                "upstream.url",
                format!("not an http(s) URL{}", what_url(&u)),
            ),
        }
        // Checked here, not first when a worker starts, so that every role and `serve` report them with
        // the rest. A value is never quoted: it may be a secret.
        for (name, value) in &self.upstream.headers {
            let key = format!("upstream.headers.{name}");
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => bad(&key, "not a header name".into()),
                // Sent as well as hookgate's own, the receiver would see two (an upstream reading the
                // first Idempotency-Key would take every later action for a repeat of the first).
                Ok(n) if UPSTREAM_OWN_HEADERS.contains(&n.as_str()) => bad(
                    &key,
                    "set by hookgate on every request; it cannot be configured".into(),
                ),
                Ok(_) => {}
            }
            if value.trim_start().starts_with("${") {
                if let Err(e) = crate::secret::SecretRef::parse(value) {
                    bad(&key, e.to_string());
                }
            } else if http::HeaderValue::from_str(value).is_err() {
                bad(
                    &key,
                    "not a header value (control characters or line breaks)".into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_body.as_u64() == 0 || l.max_body > MAX_BODY_CAP {
            bad(
                "limits.max_body",
                format!("must be above 0 and at most {MAX_BODY_CAP}"),
            );
        }
        if l.max_json_depth == 0 || l.max_json_depth > 128 {
            bad(
                "limits.max_json_depth",
                "must be between 1 and 128 (the JSON parser's own limit)".into(),
            );
        }
        for (key, n) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_in_flight", l.max_in_flight),
        ] {
            // Each is a semaphore's permits; a million is far beyond what one process serves.
            if n == 0 || n > 1_000_000 {
                bad(key, "must be between 1 and 1000000".into());
            }
        }
        // Idleness counts from the last request's start; a request is answered (or timed out) within
        // request_timeout, so none can still be running when its connection is closed for idleness.
        if l.idle_timeout <= l.request_timeout && !under("limits.request_timeout") {
            bad(
                "limits.idle_timeout",
                "must be longer than limits.request_timeout, so no request is running when an idle connection closes".into(),
            );
        }
        // A grace as long as the whole request leaves the rate nothing to check.
        if l.min_body_rate.as_u64() > 0
            && (l.body_rate_grace.is_zero() || l.body_rate_grace >= l.request_timeout)
            && !under("limits.request_timeout")
            && !under("limits.min_body_rate")
        {
            bad(
                "limits.body_rate_grace",
                "must be above 0 and shorter than limits.request_timeout while limits.min_body_rate is set (0 turns the rate off)".into(),
            );
        }
        if l.max_headers < 8 {
            bad("limits.max_headers", "must be at least 8".into());
        }
        // The receiver's own waits: a slot, then the store's deadline, then the replicas. A request
        // timeout inside them would answer a stalled Redis 408, without Retry-After.
        let acks = self.redis.waits_for_acks();
        let receiver_waits = IN_FLIGHT_WAIT
            .saturating_add(store_deadline(self.redis.response_timeout))
            .saturating_add(if acks {
                self.redis.replica_ack_timeout
            } else {
                Duration::ZERO
            });
        if !l.request_timeout.is_zero()
            && l.request_timeout <= receiver_waits
            && !under("redis.response_timeout")
            && !under("redis.replica_ack_timeout")
        {
            let ack = if acks {
                " and redis.replica_ack_timeout"
            } else {
                ""
            };
            bad(
                "limits.request_timeout",
                format!(
                    "must be longer than {} (the in-flight wait, 5s, 3 × redis.response_timeout{ack}), \
                     so a stalled Redis is answered 503 with Retry-After",
                    humantime::format_duration(receiver_waits)
                ),
            );
        }
        if acks && self.redis.replica_ack_timeout.is_zero() {
            bad(
                "redis.replica_ack_timeout",
                "must be above 0 while redis.min_replica_acks or redis.fsync_acks is set (Redis would WAIT/WAITAOF for ever)"
                    .into(),
            );
        }
        for (key, d) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.request_timeout", l.request_timeout),
            ("redis.response_timeout", self.redis.response_timeout),
            ("redis.connect_timeout", self.redis.connect_timeout),
            ("mappings_poll", self.mappings_poll),
            ("metrics_sample_interval", self.metrics_sample_interval),
            ("deliver.connect_timeout", self.deliver.connect_timeout),
            ("deliver.timeout", self.deliver.timeout),
            ("deliver.retry_base", self.deliver.retry_base),
            ("deliver.give_up_after", self.deliver.give_up_after),
            ("outbound.connect_timeout", self.outbound.connect_timeout),
            ("outbound.timeout", self.outbound.timeout),
            ("outbound.retry_base", self.outbound.retry_base),
            ("outbound.give_up_after", self.outbound.give_up_after),
            ("outbound.disable_after", self.outbound.disable_after),
            ("outbound.retention", self.outbound.retention),
            ("outbound.dedup_ttl", self.outbound.dedup_ttl),
        ] {
            if d.is_zero() {
                bad(key, "must be above 0".into());
            }
        }
        // The whole request's limit includes connecting: a connect timeout set longer could never apply,
        // and says the operator expected something else. The default one is simply cut short by a
        // shorter `timeout`.
        for (section, connect, whole) in [
            (
                "deliver",
                self.deliver.connect_timeout,
                self.deliver.timeout,
            ),
            (
                "outbound",
                self.outbound.connect_timeout,
                self.outbound.timeout,
            ),
        ] {
            let key = format!("{section}.connect_timeout");
            if connect > whole && self.locations.contains_key(&key) {
                bad(
                    &key,
                    format!(
                        "{} is longer than {section}.timeout ({}), which bounds the whole request, \
                         connecting included",
                        humantime::format_duration(connect),
                        humantime::format_duration(whole)
                    ),
                );
            }
        }
        // That switches the egress policy off, which must not happen by a typo.
        for (i, net) in self.egress.allow.iter().enumerate() {
            if net.prefix_len() == 0 {
                bad(
                    &format!("egress.allow[{i}]"),
                    format!("{net} opens every address; list the networks to open instead"),
                );
            }
        }
        if let Err(problems) = self.upstream.compiled_routes() {
            for (key, m) in problems {
                bad(&key, m);
            }
        }
        if let Some(why) = log_filter_problem(&self.log.level) {
            bad("log.level", why);
        }
        if self.deliver.inbound_retention < Duration::from_secs(1) {
            bad("deliver.inbound_retention", "must be at least 1s".into());
        }
        if self.deliver.remove_idle_consumers_after < MIN_CONSUMER_IDLE {
            bad(
                "deliver.remove_idle_consumers_after",
                format!(
                    "must be at least {} (live workers read every few seconds)",
                    humantime::format_duration(MIN_CONSUMER_IDLE)
                ),
            );
        }
        for (key, n) in [
            ("deliver.concurrency", self.deliver.concurrency),
            ("outbound.concurrency", self.outbound.concurrency),
            (
                "outbound.max_subscriptions_per_account",
                self.outbound.max_subscriptions_per_account,
            ),
        ] {
            if n == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if self.outbound.retry_max < self.outbound.retry_base && !under("outbound.retry_base") {
            bad(
                "outbound.retry_max",
                "must be at least outbound.retry_base".into(),
            );
        }
        if self.deliver.retry_max < self.deliver.retry_base && !under("deliver.retry_base") {
            bad(
                "deliver.retry_max",
                "must be at least deliver.retry_base".into(),
            );
        }
        p
    }

    /// The admin bearer token: env `HOOKGATE_ADMIN_TOKEN`, or the file named by `HOOKGATE_ADMIN_TOKEN_FILE`
    /// (a mounted Kubernetes Secret). Resolved like every other secret reference.
    fn admin_token_from_env() -> Result<Option<crate::secret::Secret>, Vec<String>> {
        let reference = if std::env::var_os("HOOKGATE_ADMIN_TOKEN").is_some() {
            "${env:HOOKGATE_ADMIN_TOKEN}".to_string()
        } else if let Some(path) = std::env::var_os("HOOKGATE_ADMIN_TOKEN_FILE") {
            format!("${{file:{}}}", path.to_string_lossy())
        } else {
            return Ok(None);
        };
        admin_token_from(&reference).map(Some)
    }
}

/// The admin token a reference names, as it will be compared with a presented one, which is read without
/// the whitespace around it: a mounted file's stray space or `\r` is dropped here too.
fn admin_token_from(reference: &str) -> Result<crate::secret::Secret, Vec<String>> {
    let token =
        crate::secret::Secret::resolve(reference).map_err(|e| vec![format!("admin token: {e}")])?;
    let bare = token.expose().trim();
    if bare.is_empty() {
        return Err(vec![format!(
            "admin token ({reference}): empty once the whitespace around it is dropped"
        )]);
    }
    if bare.len() == token.expose().len() {
        return Ok(token);
    }
    crate::secret::Secret::stored(bare).map_err(|e| vec![format!("admin token: {e}")])
}

/// The problems of a file the parser refused. serde stops at the first wrong value, so the file is read
/// again once per value written in it with the others hidden ([`one_path`]), and each wrong value is
/// reported where it is, its key named. Every unknown key is reported too, and a parser message is dropped
/// when an unknown key's says the same thing at the same place.
fn parse_problems(
    name: &str,
    text: &str,
    first: &serde_saphyr::Error,
    doc: Option<&Node>,
    locations: &BTreeMap<String, String>,
) -> Vec<FileProblem> {
    // The keys a config has, for the unknown keys and for which values are worth re-reading.
    let schema = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut unknown = Vec::new();
    if let Some(d) = doc {
        unknown_keys_in(name, &mut Vec::new(), d, &schema, &mut unknown);
    }
    let mut values: Vec<FileProblem> = Vec::new();
    // `path`: the value read alone, which names the key when its place is not one the file's keys have.
    let mut add = |e: &serde_saphyr::Error, path: Option<&[String]>| {
        let at = e
            .location()
            .map(|l| {
                let (line, column) = (l.line() as u32, l.column() as u32);
                place(
                    name,
                    Loc {
                        line,
                        column,
                        ..Loc::default()
                    },
                )
            })
            .unwrap_or_else(|| name.to_string());
        let here = format!("{at}: ");
        if unknown
            .iter()
            .chain(&values)
            .any(|u| u.message.starts_with(&here))
        {
            return;
        }
        let text = e.to_string();
        let message = without_values(parser_message(&text));
        let key = locations
            .iter()
            .find(|(_, l)| **l == at)
            .map(|(key, _)| key.clone())
            .or_else(|| path.map(|p| p.join(".")));
        values.push(match key {
            Some(key) => FileProblem {
                message: format!("{at}: {key}: {message}"),
                path: path.map(<[String]>::to_vec),
            },
            None => FileProblem {
                message: format!("{at}: {message}"),
                path: None,
            },
        });
    };
    // Bounded, since each read parses the whole file: a file of thousands of values (or of aliases that
    // expand to them) gets its first wrong values, not minutes of re-reading.
    let started = std::time::Instant::now();
    let paths = doc.map(written_paths).unwrap_or_default();
    let paths = paths
        .iter()
        .filter(|(path, _)| path.first().is_some_and(|k| schema.get(k).is_some()))
        .take(MAX_REREADS);
    for (path, places) in paths {
        if started.elapsed() > REREAD_BUDGET {
            break;
        }
        let alone = serde_saphyr::with_deserializer_from_str_with_options(
            text,
            serde_saphyr::Options::default(),
            |de| one_path::read::<Config, _>(de, path),
        );
        if let Err(e) = alone {
            // Named by the key whose value is where serde stopped (a map where text belongs is the
            // map's key's problem, not its first member's).
            let depth = e
                .location()
                .and_then(|l| {
                    places
                        .iter()
                        .position(|p| p.line == l.line() as u32 && p.column == l.column() as u32)
                })
                .unwrap_or(path.len() - 1);
            add(&e, Some(&path[..=depth]));
        }
    }
    // A problem no single value shows (a syntax error: then there is no document to walk).
    add(first, None);
    values.extend(unknown);
    values
}

/// A problem of the file itself, with the key path of the value it is about (`None`: about no one value,
/// such as a syntax error).
struct FileProblem {
    path: Option<Vec<String>>,
    message: String,
}

/// The file read again with every value it has a problem with hidden, so their defaults stand in: the
/// rest of the file can then take the env overrides and the checks. `None` when a problem is about no
/// one value (a syntax error), or the rest still does not read.
fn read_without_problems(text: &str, problems: &[FileProblem]) -> Option<Config> {
    let hidden: Vec<Vec<String>> = problems
        .iter()
        .map(|p| p.path.clone())
        .collect::<Option<_>>()?;
    serde_saphyr::with_deserializer_from_str_with_options(
        text,
        serde_saphyr::Options::default(),
        |de| one_path::read_without::<Config, _>(de, &hidden),
    )
    .ok()
}

/// Values re-read at most on the error path, and the time they may take: see [`parse_problems`].
const MAX_REREADS: usize = 200;
const REREAD_BUDGET: Duration = Duration::from_secs(2);

/// A key path and the place of the value at each of its steps.
type Written = (Vec<String>, Vec<Loc>);

/// The key path of every value written in the file, in the file's order, with where each step's value is:
/// maps are walked into, anything else (a scalar, a list, an empty map) is a value.
fn written_paths(doc: &Node) -> Vec<Written> {
    fn walk(node: &Node, prefix: &mut Written, out: &mut Vec<Written>) {
        match &node.kind {
            Kind::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    prefix.0.push(k.name.clone());
                    prefix.1.push(v.loc);
                    walk(v, prefix, out);
                    prefix.0.pop();
                    prefix.1.pop();
                }
            }
            _ if !prefix.0.is_empty() => out.push(prefix.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut (Vec::new(), Vec::new()), &mut out);
    out
}

fn place(name: &str, at: Loc) -> String {
    format!("{name}:{}:{}", at.line, at.column)
}

/// The YAML parser's message without its own `error: line L column C: ` prefix (the place is given as
/// `file:line:col` already).
fn parser_message(e: &str) -> &str {
    let m = first_line(e);
    m.strip_prefix("error: line ")
        .and_then(|r| r.split_once(": "))
        .map_or(m, |(_, rest)| rest)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Hide a password in a URL before it is shown in an error.
/// No braces, or exactly one `{...}` with something inside: anything else makes Redis Cluster hash on an
/// accidental tag, and the per-family tags (`{<prefix>:in}`) would collapse into one slot.
fn braces_form_one_hash_tag(prefix: &str) -> bool {
    match (prefix.matches('{').count(), prefix.matches('}').count()) {
        (0, 0) => true,
        (1, 1) => has_hash_tag(prefix),
        _ => false,
    }
}

/// Whether Redis Cluster hashes `key` by a tag (its rule): the first `{`, then the first `}` after it,
/// with something between.
pub fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// What is wrong with a URL, without quoting it: it may carry a password or a token in its user info,
/// path or query. The scheme, or the parser's reason, is safe to show.
fn what_url(parsed: &Result<url::Url, url::ParseError>) -> String {
    match parsed {
        Ok(u) => format!(" (its scheme is `{}`)", u.scheme()),
        Err(e) => format!(" ({e})"),
    }
}

/// A deserializer's message without the value it quotes (`invalid type: string "rediss://:pw@h"`):
/// a wrong value may be a secret, and the key and place already say which one.
fn without_values(message: &str) -> String {
    static QUOTED: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = QUOTED.get_or_init(|| regex::Regex::new(r#""(?:[^"\\]|\\.)*"|`[^`]*`"#).ok());
    match re {
        Some(re) if message.starts_with("invalid ") => {
            re.replace_all(message, "(value hidden)").into_owned()
        }
        // serde's "unknown variant `<value>`, expected one of ...": the first quote is the value.
        Some(re) if message.starts_with("unknown variant ") => {
            re.replace(message, "(value hidden)").into_owned()
        }
        _ => message.to_string(),
    }
}

/// An env override's deserialization error, named by its variable.
fn env_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let key = format!(
        "HOOKGATE_{}",
        e.path().to_string().to_ascii_uppercase().replace('.', "__")
    );
    format!("env {key}: {}", without_values(&e.inner().to_string()))
}

/// An env value is read as a YAML scalar or list (`8080`, `true`, `[10.0.0.0/8]`), else as text; a value
/// that reads as a map, such as the hash tag `{hookgate}`, stays text.
fn env_value(raw: &str) -> Value {
    if raw.trim_start().starts_with('{') {
        return Value::String(raw.to_string());
    }
    serde_saphyr::from_str::<Value>(raw)
        .ok()
        .filter(|v| !v.is_object() && (!v.is_null() || raw.trim().is_empty()))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// The file's shape with places (the located tree mapping files are read into), for [`key_locations`]
/// and [`unknown_keys`]; `None` for an empty file or one that does not parse (the real parse reports it).
fn parse_shape(text: &str) -> Option<Node> {
    if text.trim().is_empty() {
        return None;
    }
    crate::mapping::yaml::parse("", text).ok()
}

/// Where each key of the file is written: `name:line:col` by dotted key (`limits.max_body`,
/// `upstream.routes.update_contact.path`; a list item is `key[i]`). A scalar points at its value, which is
/// what a problem is about; a section or list at its key.
fn key_locations(name: &str, doc: Option<&Node>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(doc) = doc {
        record_places(name, "", doc, &mut out);
    }
    out
}

/// The dotted key of `key` under `prefix`.
fn child_key(prefix: &str, key: &str) -> String {
    match prefix {
        "" => key.to_string(),
        _ => format!("{prefix}.{key}"),
    }
}

/// Every key of `node` that `schema` (the defaults, as JSON) does not have, as
/// `name:line:col: unknown key `a.b`; hint`. Under a map (`upstream.routes`, `upstream.headers`) or an
/// optional section left unset, nothing is checked (serde still is). Only called once the real parse has
/// failed, so a gap in this walk can never refuse a valid file.
fn unknown_keys_in(
    name: &str,
    prefix: &mut Vec<String>,
    node: &Node,
    schema: &Value,
    out: &mut Vec<FileProblem>,
) {
    let (Kind::Map(entries), Value::Object(fields)) = (&node.kind, schema) else {
        return;
    };
    if fields.is_empty() {
        return; // a map: any key
    }
    for (k, v) in entries {
        prefix.push(k.name.clone());
        match fields.get(&k.name) {
            Some(field) => unknown_keys_in(name, prefix, v, field, out),
            None => {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                out.push(FileProblem {
                    path: Some(prefix.clone()),
                    message: format!(
                        "{}: unknown key `{}`; {}",
                        place(name, k.loc),
                        prefix.join("."),
                        crate::mapping::suggest(&k.name, &known)
                    ),
                });
            }
        }
        prefix.pop();
    }
}

/// The places of `node`'s keys and items under `prefix`; see [`key_locations`].
fn record_places(name: &str, prefix: &str, node: &Node, out: &mut BTreeMap<String, String>) {
    let mut child = |path: String, key_at: Loc, v: &Node| {
        let at = match v.kind {
            Kind::Seq(_) | Kind::Map(_) => key_at,
            _ => v.loc,
        };
        out.insert(path.clone(), place(name, at));
        record_places(name, &path, v, out);
    };
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                child(child_key(prefix, &k.name), k.loc, v);
            }
        }
        Kind::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                child(format!("{prefix}[{i}]"), v.loc, v);
            }
        }
        _ => {}
    }
}

/// Byte sizes go through the env-override round trip as exact numbers, not rounded human text.
fn bytes_as_number<S: serde::Serializer>(b: &bytesize::ByteSize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(b.as_u64())
}

fn set_path(tree: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut node = tree;
    for (i, seg) in parents.iter().enumerate() {
        let obj = node
            .as_object_mut()
            .ok_or_else(|| format!("`{}` is not a section", parents[..i].join(".")))?;
        // upstream.routes takes new entries (their names and fields are checked like the file's).
        if i > 0 && parents[i - 1] == "routes" && !obj.contains_key(seg) {
            let empty = serde_json::to_value(RouteSpec::default()).map_err(|e| e.to_string())?;
            obj.insert(seg.clone(), empty);
        }
        if !obj.contains_key(seg) {
            return Err(format!("unknown key `{}`", path[..=i].join(".")));
        }
        node = obj
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let obj = node
        .as_object_mut()
        .ok_or_else(|| format!("`{}` is not a section", parents.join(".")))?;
    // Maps such as upstream.headers take new keys; structs only known ones.
    let is_open_map = parents.last().is_some_and(|p| p == "headers");
    if !obj.contains_key(last) && !is_open_map {
        return Err(format!("unknown key `{}`", path.join(".")));
    }
    obj.insert(last.clone(), value);
    Ok(())
}

/// Why a `log.level` filter would not log what it seems to ask for. tracing reads a bare word it does
/// not know as a target (`warning` logs only a module named `warning`: nothing at all), and skips a
/// directive it cannot parse with a note on stderr; either silences the logs ops rely on.
fn log_filter_problem(filter: &str) -> Option<String> {
    use tracing_subscriber::filter::{Directive, LevelFilter};
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    for d in filter.split(',').map(str::trim) {
        if d.is_empty() {
            continue;
        }
        // A span directive (`[request]`, `target[span{field=value}]=debug`) or an empty level
        // (`hookgate=`, read as trace): whatever tracing parses is meant.
        if d.contains('[') || d.ends_with('=') {
            if d.parse::<Directive>().is_err() {
                return Some(format!(
                    "`{d}` is not a filter directive such as `hookgate=debug`"
                ));
            }
            continue;
        }
        match d.rsplit_once('=') {
            None if d.parse::<LevelFilter>().is_err() => {
                return Some(format!(
                    "`{d}` is not a level ({LEVELS}); a target's level is written `target=level`"
                ))
            }
            Some((_, level)) if level.parse::<LevelFilter>().is_err() => {
                return Some(format!("`{level}` in `{d}` is not a level ({LEVELS})"))
            }
            _ if d.parse::<Directive>().is_err() => {
                return Some(format!(
                    "`{d}` is not a filter directive such as `hookgate=debug`"
                ))
            }
            _ => {}
        }
    }
    None
}

/// Durations written as `30s`, `5m`, `72h` (humantime), serialised the same way.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// The longest duration any key takes. Retention and give-up times are days; a larger value is a
    /// typo, and the arithmetic on it (a timeout times three, a deadline from now) would overflow.
    pub const MAX: Duration = Duration::from_secs(366 * 86_400);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(&s)
            // The value is not quoted: it may be a secret put in the wrong key.
            .map_err(|_| serde::de::Error::custom("not a duration (write e.g. 30s, 5m, 72h)"))?;
        if d > MAX {
            return Err(serde::de::Error::custom(
                "longer than a year (366d), the most a duration here may be",
            ));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Env overrides as `from_sources` takes them.
    fn env_vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_sources("x.yaml", "", &[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.limits.max_body.as_u64(), 1024 * 1024);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let e =
            Config::from_sources("hg.yaml", "listen: 127.0.0.1:1\nredis_ur: x\n", &[]).unwrap_err();
        assert!(e[0].starts_with("hg.yaml:2:"), "{e:?}");
        assert!(e[0].contains("redis_ur"), "{e:?}");
    }

    /// serde stops at the first wrong value; every other one is still reported, each at its value with
    /// its key, in the file's order, then the unknown keys; no value is quoted.
    #[test]
    fn every_wrong_value_is_reported_at_once() {
        let yaml = "listen: 127.0.0.1:1\nlimits:\n  max_headers: lots\n  max_json_depth: s3cret\n  max_bodyy: 1MiB\nredis: { response_timeout: s3cret2, connect_timeout: 1s }\nupstream: { url: http://x, headers: { api-key: [1, 2] } }\nlog: { format: s3cret3 }\nlisten_x: { a: 1 }\nzzz: 1\n";
        let e = Config::from_sources("hg.yaml", yaml, &[]).unwrap_err();
        let starts = [
            "hg.yaml:3:16: limits.max_headers: ",
            "hg.yaml:4:19: limits.max_json_depth: ",
            "hg.yaml:6:28: redis.response_timeout: ",
            "hg.yaml:7:48: upstream.headers.api-key: ",
            "hg.yaml:8:16: log.format: ",
            "hg.yaml:5:3: unknown key `limits.max_bodyy`",
            "hg.yaml:9:1: unknown key `listen_x`",
            "hg.yaml:10:1: unknown key `zzz`",
        ];
        assert_eq!(e.len(), starts.len(), "{e:#?}");
        for (got, want) in e.iter().zip(starts) {
            assert!(got.starts_with(want), "{want} in {e:#?}");
        }
        assert!(!e.join("\n").contains("s3cret"), "{e:#?}");
        // A map where text belongs is the key's own problem, named by it.
        let e = Config::from_sources("hg.yaml", "listen: { host: h, port: 1 }\n", &[]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("hg.yaml:1:9: listen: invalid type: map"),
            "{e:#?}"
        );
    }

    #[test]
    fn every_unknown_key_is_reported_at_once_with_a_hint() {
        let yaml = "listen: 127.0.0.1:1\nlimits:\n  max_bodyy: 1MiB\n  max_headers: 10\nupstream: { urll: http://x, routes: { custom_event: { body: none } } }\nshutdown_grace: 1s\nzzz: 1\n";
        let e = Config::from_sources("hg.yaml", yaml, &[]).unwrap_err();
        assert_eq!(
            e,
            [
                "hg.yaml:3:3: unknown key `limits.max_bodyy`; did you mean `max_body`?",
                "hg.yaml:5:13: unknown key `upstream.urll`; did you mean `url`?",
                "hg.yaml:7:1: unknown key `zzz`; expected one of: listen, admin_listen, redis_url, key_prefix, mappings_dir, mappings_poll, trusted_proxies, inbound_format, upstream, deliver, egress, outbound, subscriptions_file, limits, redis, log, shutdown_delay, shutdown_grace, admin_allow_ips, metrics_sample_interval",
            ],
        );
        // A wrong type stops the parser; the unknown keys are still all named after it.
        let e = Config::from_sources(
            "hg.yaml",
            "limits: { max_headers: lots }\nredis_ur: x\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("hg.yaml:1:") && e[0].contains("max_headers"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("hg.yaml:2:1: unknown key `redis_ur`; did you mean `redis_url`?"),
            "{e:?}"
        );
        // Under a map, keys are free (and a route's own fields are serde's to check).
        let e = Config::from_sources(
            "hg.yaml",
            "upstream: { routes: { custom_event: { methd: get } } }\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("unknown field `methd`"), "{e:?}");
        // The dev config, which sets nearly every key, is walked and found clean.
        let dev = include_str!("../deploy/hookgate.dev.yaml");
        let shape = parse_shape(dev).expect("the dev config parses");
        let places = key_locations("dev", Some(&shape));
        assert!(places.contains_key("limits.max_body"));
        assert!(places.contains_key("upstream.url"));
        let schema = serde_json::to_value(Config::default()).unwrap();
        let mut unknown = Vec::new();
        unknown_keys_in("dev", &mut Vec::new(), &shape, &schema, &mut unknown);
        let unknown: Vec<&str> = unknown.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(unknown, Vec::<&str>::new());
    }

    #[test]
    fn upstream_headers_cannot_be_hookgates_own() {
        for name in [
            "Idempotency-Key",
            "x-hookgate-event-id",
            "X-Hookgate-Source",
            "content-type",
            "Host",
        ] {
            let yaml = format!("upstream:\n  headers:\n    {name}: v\n");
            let c = Config::from_sources("hg.yaml", &yaml, &[]).unwrap();
            let p = c.validate().unwrap_err();
            assert_eq!(p.len(), 1, "{p:#?}");
            assert!(p[0].contains("set by hookgate on every request"), "{p:#?}");
        }
    }

    /// Upstream headers are checked with the rest of the file, each where it was written; values are
    /// never quoted.
    #[test]
    fn upstream_headers_are_checked_at_load() {
        let yaml = "upstream:\n  headers:\n    bad name: v\n    x-ref: \"${nope:X}\"\n    x-cr: \"a\\rb-s3cret\"\n    api-key: \"${env:BREVO_API_KEY}\"\n";
        let c = Config::from_sources("hg.yaml", yaml, &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("hg.yaml:3:15: upstream.headers.bad name: not a header name"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("hg.yaml:5:11: upstream.headers.x-cr: not a header value"),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with("hg.yaml:4:12: upstream.headers.x-ref: "),
            "{p:#?}"
        );
        assert!(!p.join("\n").contains("s3cret"), "{p:#?}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(Config::from_sources("hg.yaml", "listen: a\nlisten: b\n", &[]).is_err());
    }

    #[test]
    fn env_overrides_nested_keys_and_parses_scalars() {
        let env = vec![
            (
                "HOOKGATE_REDIS_URL".to_string(),
                "redis://10.0.0.5:6380".to_string(),
            ),
            (
                "HOOKGATE_UPSTREAM__URL".to_string(),
                "https://api.brevo.com/v3".to_string(),
            ),
            (
                "HOOKGATE_UPSTREAM__HEADERS__API-KEY".to_string(),
                "${env:BREVO_API_KEY}".to_string(),
            ),
            (
                "HOOKGATE_EGRESS__ALLOW_HTTP".to_string(),
                "true".to_string(),
            ),
            (
                "HOOKGATE_LIMITS__MAX_JSON_DEPTH".to_string(),
                "32".to_string(),
            ),
            (
                "HOOKGATE_TRUSTED_PROXIES".to_string(),
                "[10.0.0.0/8, fd00::/8]".to_string(),
            ),
            ("HOOKGATE_KEY_PREFIX".to_string(), "{hookgate}".to_string()),
        ];
        let c = Config::from_sources("hg.yaml", "listen: 127.0.0.1:1\n", &env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.redis_url, "redis://10.0.0.5:6380");
        assert_eq!(c.upstream.url, "https://api.brevo.com/v3");
        assert_eq!(c.upstream.headers["api-key"], "${env:BREVO_API_KEY}");
        assert!(c.egress.allow_http);
        assert_eq!(c.limits.max_json_depth, 32);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.key_prefix, "{hookgate}", "a hash tag is text, not a map");
    }

    #[test]
    fn cluster_nodes_come_from_the_file_or_the_env_and_are_checked() {
        let env = vec![(
            "HOOKGATE_REDIS__CLUSTER_NODES".to_string(),
            "[redis://10.0.0.1:6379, rediss://u:pw@10.0.0.2:6380]".to_string(),
        )];
        let c = Config::from_sources("hg.yaml", "", &env).unwrap();
        assert_eq!(
            c.redis.cluster_nodes,
            ["redis://10.0.0.1:6379", "rediss://u:pw@10.0.0.2:6380"]
        );
        let e = Config::from_sources(
            "hg.yaml",
            "redis: { cluster_nodes: [redis://10.0.0.1:6379, http://u:hunter2@x:1, redis://nohost], tls_client_key_file: /k.pem }\n",
            &[],
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("redis.cluster_nodes[1]"), "{all}");
        assert!(all.contains("redis.cluster_nodes[2]"), "{all}");
        assert!(!all.contains("redis.cluster_nodes[0]"), "{all}");
        assert!(
            all.contains("redis.tls_client_key_file: set redis.tls_client_cert_file too"),
            "{all}"
        );
        assert!(all.contains("not reached with rediss://"), "{all}");
        assert!(
            !all.contains("hunter2"),
            "a password is never echoed: {all}"
        );
    }

    #[test]
    fn key_prefix_braces_must_be_one_hash_tag() {
        for ok in ["hookgate", "{hookgate}", "app:{hg}"] {
            let c =
                Config::from_sources("hg.yaml", &format!("key_prefix: \"{ok}\"\n"), &[]).unwrap();
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in ["x}y", "a{}b", "{a}{b}", "{open"] {
            let c =
                Config::from_sources("hg.yaml", &format!("key_prefix: \"{bad}\"\n"), &[]).unwrap();
            let e = c.validate().unwrap_err().join("\n");
            assert!(e.contains("key_prefix"), "{bad}: {e}");
        }
    }

    #[test]
    fn byte_sizes_survive_the_env_round_trip_exactly() {
        let env = vec![("HOOKGATE_LOG__LEVEL".to_string(), "debug".to_string())];
        let c = Config::from_sources("hg.yaml", "limits: { max_body: 1000000 }\n", &env).unwrap();
        assert_eq!(c.limits.max_body.as_u64(), 1_000_000);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = vec![(
            "HOOKGATE_LIMITS__MAX_HEADERS".to_string(),
            "lots".to_string(),
        )];
        let e = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert!(e[0].contains("HOOKGATE_LIMITS__MAX_HEADERS"), "{e:?}");
        let env = vec![("HOOKGATE_NOPE".to_string(), "1".to_string())];
        let e = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert!(
            e[0].contains("HOOKGATE_NOPE") && e[0].contains("unknown key"),
            "{e:?}"
        );
        // Every bad override at once, each by its variable; a good one is not blamed.
        let env = env_vars(&[
            ("HOOKGATE_LIMITS__MAX_HEADERS", "lots"),
            ("HOOKGATE_LIMITS__MAX_IN_FLIGHT", "12"),
            ("HOOKGATE_DELIVER__CONCURRENCY", "many"),
            ("HOOKGATE_MAPPINGS_POLL", "soon"),
        ]);
        let e = Config::from_sources("hg.yaml", "listen: 127.0.0.1:1\n", &env).unwrap_err();
        assert_eq!(e.len(), 3, "{e:#?}");
        for (i, var) in [
            "HOOKGATE_LIMITS__MAX_HEADERS",
            "HOOKGATE_DELIVER__CONCURRENCY",
            "HOOKGATE_MAPPINGS_POLL",
        ]
        .iter()
        .enumerate()
        {
            assert!(e[i].starts_with(&format!("env {var}: ")), "{e:#?}");
        }
    }

    /// A config file's validation, for tests of the checks made after parsing.
    fn validated(yaml: &str) -> Result<(), Vec<String>> {
        Config::from_sources("hg.yaml", yaml, &[])
            .expect("parses")
            .validate()
    }

    #[test]
    fn a_connect_timeout_longer_than_the_whole_request_is_refused() {
        let check = validated;
        let p = check(
            "deliver: { connect_timeout: 30s, timeout: 10s }\noutbound: { connect_timeout: 20s, timeout: 15s }\n",
        )
        .unwrap_err();
        assert_eq!(
            p,
            [
                "hg.yaml:1:29: deliver.connect_timeout: 30s is longer than deliver.timeout (10s), which bounds the whole request, connecting included",
                "hg.yaml:2:30: outbound.connect_timeout: 20s is longer than outbound.timeout (15s), which bounds the whole request, connecting included",
            ]
        );
        assert!(check("deliver: { connect_timeout: 10s, timeout: 10s }\n").is_ok());
        // The default connect timeout (5s) is not the operator's: a shorter timeout just bounds it.
        assert!(check("deliver: { timeout: 1s }\noutbound: { timeout: 2s }\n").is_ok());
    }

    /// A dedup window Redis could not take (an overflowing `PX`) would fail the SET after the XADD.
    #[test]
    fn outbound_dedup_ttl_is_bounded() {
        // Every duration is at most a year; for this one Redis could not take more anyway.
        let p =
            Config::from_sources("hg.yaml", "outbound:\n  dedup_ttl: 400days\n", &[]).unwrap_err();
        assert_eq!(
            p,
            vec!["hg.yaml:2:14: outbound.dedup_ttl: longer than a year (366d), the most a duration here may be".to_owned()]
        );
        let c = Config::from_sources("hg.yaml", "outbound:\n  dedup_ttl: 366days\n", &[]).unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn listeners_clash_as_addresses_not_as_text() {
        for (listen, admin, clash) in [
            ("127.0.0.1:8080", "0.0.0.0:8080", true),
            ("127.0.0.1:8080", "127.0.0.1:08080", true),
            ("[::]:8080", "127.0.0.1:8080", true),
            ("127.0.0.1:8080", "127.0.0.2:8080", false),
            ("0.0.0.0:8080", "[::1]:8080", false),
            ("[::1]:8080", "0.0.0.0:8080", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
            ("0.0.0.0:8080", "0.0.0.0:9090", false),
        ] {
            let c = Config {
                listen: listen.into(),
                admin_listen: admin.into(),
                ..Config::default()
            };
            let found = c
                .validate()
                .err()
                .unwrap_or_default()
                .iter()
                .any(|p| p.contains("must differ from listen"));
            assert_eq!(found, clash, "{listen} / {admin}");
        }
    }

    #[test]
    fn log_levels_that_would_silence_the_logs_are_refused() {
        for fine in [
            "info",
            "WARN",
            "hookgate=debug,info",
            "redis=error, warn",
            "off",
            "hookgate[request]=debug",
            "[{request_id}]",
            "[request{path=/x}]",
            "hookgate=",
        ] {
            assert_eq!(log_filter_problem(fine), None, "{fine}");
        }
        for (bad, why) in [
            ("warning", "`warning` is not a level"),
            ("infoo", "`infoo` is not a level"),
            (
                "hookgate=debugg",
                "`debugg` in `hookgate=debugg` is not a level",
            ),
        ] {
            let got = log_filter_problem(bad).unwrap_or_default();
            assert!(got.starts_with(why), "{bad}: {got}");
        }
        let c = Config::from_sources("hg.yaml", "log: { level: warning }\n", &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.starts_with("hg.yaml:1:15: log.level: `warning`")),
            "{p:#?}"
        );
    }

    /// A duration past a year is refused where it is written: the worker's arithmetic on an absurd one
    /// (`timeout * 3`) overflowed and killed its task while the process stayed ready.
    #[test]
    fn durations_are_at_most_a_year() {
        let p = Config::from_sources(
            "hg.yaml",
            "deliver: { timeout: 7000000000000000000s }\n",
            &[],
        )
        .unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.starts_with("hg.yaml:1:21: deliver.timeout: ")
                    && m.contains("longer than a year")),
            "{p:#?}"
        );
        let env = env_vars(&[("HOOKGATE_OUTBOUND__TIMEOUT", "367d")]);
        let p = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.starts_with("env HOOKGATE_OUTBOUND__TIMEOUT: ")
                    && m.contains("longer than a year")),
            "{p:#?}"
        );
        let ok = Config::from_sources("hg.yaml", "outbound: { retention: 366d }\n", &[]).unwrap();
        assert_eq!(ok.outbound.retention, Duration::from_secs(366 * 86_400));
    }

    #[test]
    fn validate_reports_every_problem_where_it_was_written() {
        let env = vec![("HOOKGATE_LIMITS__MAX_HEADERS".to_string(), "2".to_string())];
        let c = Config::from_sources(
            "hg.yaml",
            "listen: nowhere\nadmin_listen: nowhere\nredis_url: http://x\nupstream: { url: ftp://x }\nlimits: { max_json_depth: 0, max_body: 1GiB }\nmappings_poll: 0s\n",
            &env,
        )
        .unwrap();
        let p = c.validate().unwrap_err();
        // A scalar's problem points at its value: line and column, 1-based.
        for want in [
            "hg.yaml:1:9: listen: not an address such as 0.0.0.0:8080",
            "hg.yaml:2:15: admin_listen: not an address",
            "hg.yaml:2:15: admin_listen: must differ from listen",
            "hg.yaml:3:12: redis_url: not a redis:// or rediss:// URL (its scheme is `http`)",
            "hg.yaml:4:18: upstream.url: not an http(s) URL (its scheme is `ftp`)",
            "hg.yaml:5:27: limits.max_json_depth: must be between 1 and 128",
            "hg.yaml:5:40: limits.max_body: must be above 0 and at most",
            "hg.yaml:6:16: mappings_poll: must be above 0",
            "env HOOKGATE_LIMITS__MAX_HEADERS: limits.max_headers: must be at least 8",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(want)),
                "{want}\nnot in {p:#?}"
            );
        }
        assert_eq!(p.len(), 9, "{p:#?}");
        // A key left at its default is named without a place.
        let c = Config::from_sources("hg.yaml", "listen: 0.0.0.0:9090\n", &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("admin_listen: must differ from listen"),
            "{p:?}"
        );
    }

    #[test]
    fn replica_acknowledgements_need_a_timeout_that_fits_the_request() {
        let check = validated;
        assert!(check("redis: { min_replica_acks: 1 }\n").is_ok());
        // The acknowledgement's wait is added to the receiver's: 5 s + 3 × 2 s + 1 s = 12 s.
        let p = check("limits: { request_timeout: 12s }\nredis: { min_replica_acks: 1 }\n")
            .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("hg.yaml:1:28: limits.request_timeout: must be longer than 12s")
                && p[0].contains("redis.replica_ack_timeout"),
            "{p:?}"
        );
        assert!(check("limits: { request_timeout: 12s }\n").is_ok());
        // WAIT with a timeout of 0 never returns.
        let p = check("redis: { min_replica_acks: 2, replica_ack_timeout: 0s }\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("hg.yaml:1:52: redis.replica_ack_timeout: must be above 0 while redis.min_replica_acks or redis.fsync_acks is set"),
            "{p:?}"
        );
        assert!(check("redis: { replica_ack_timeout: 0s }\n").is_ok());
        // fsync acknowledgements wait the same way, replicas or none.
        let p =
            check("limits: { request_timeout: 12s }\nredis: { fsync_acks: true }\n").unwrap_err();
        assert!(
            p.len() == 1 && p[0].contains("redis.replica_ack_timeout"),
            "{p:?}"
        );
        let p = check("redis: { fsync_acks: true, replica_ack_timeout: 0s }\n").unwrap_err();
        assert!(
            p.len() == 1
                && p[0].starts_with("hg.yaml:1:49: redis.replica_ack_timeout: must be above 0"),
            "{p:?}"
        );
        assert!(check("redis: { fsync_acks: true }\n").is_ok());
    }

    #[test]
    fn request_timeout_must_outlast_the_receivers_own_waits() {
        let check = validated;
        // 5 s for a slot + 3 × 2 s on Redis = 11 s; the default 30 s is fine.
        assert!(check("").is_ok());
        let p = check("limits: { request_timeout: 11s }\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("hg.yaml:1:28: limits.request_timeout: must be longer than 11s"),
            "{p:?}"
        );
        assert!(check("limits: { request_timeout: 12s }\n").is_ok());
        // A longer Redis timeout raises the floor.
        let p = check("limits: { request_timeout: 30s }\nredis: { response_timeout: 10s }\n");
        assert!(p.is_err_and(|p| p[0].contains("must be longer than 35s")));
        // Idleness counts from a request's start: the idle timeout must outlast the request timeout.
        let p = check("limits: { idle_timeout: 30s }\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "hg.yaml:1:25: limits.idle_timeout: must be longer than limits.request_timeout"
            ),
            "{p:?}"
        );
        // Connection and in-flight counts are semaphores' permits: bounded.
        let p = check("limits: { max_connections: 2000000, max_in_flight: 0 }\n").unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .all(|m| m.contains("must be between 1 and 1000000")),
            "{p:?}"
        );
    }

    /// The body-rate floor needs a grace inside the request timeout; 0 turns it off, and then the grace
    /// is not checked.
    #[test]
    fn the_body_rate_grace_must_fit_in_the_request_timeout() {
        let check = validated;
        let c = Config::from_sources("hg.yaml", "", &[]).unwrap();
        assert_eq!(c.limits.min_body_rate.as_u64(), 1024);
        assert_eq!(c.limits.body_rate_grace, Duration::from_secs(5));
        let p = check("limits: { body_rate_grace: 30s }\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("hg.yaml:1:28: limits.body_rate_grace: must be above 0 and shorter than limits.request_timeout"),
            "{p:?}"
        );
        assert!(check("limits: { body_rate_grace: 0s }\n").is_err());
        assert!(check("limits: { body_rate_grace: 29s }\n").is_ok());
        assert!(check("limits: { body_rate_grace: 30s, min_body_rate: 0 }\n").is_ok());
        let c = Config::from_sources("hg.yaml", "limits: { min_body_rate: 2KiB }\n", &[]).unwrap();
        assert_eq!(c.limits.min_body_rate.as_u64(), 2048);
    }

    #[test]
    fn deliver_section_defaults_and_checks() {
        let c = Config::from_sources("hg.yaml", "", &[]).unwrap();
        assert_eq!(c.deliver.give_up_after, Duration::from_secs(86_400));
        assert_eq!(c.deliver.retry_max, Duration::from_secs(600));
        let env = vec![("HOOKGATE_DELIVER__TIMEOUT".to_string(), "3s".to_string())];
        let c = Config::from_sources(
            "hg.yaml",
            "deliver: { concurrency: 0, retry_base: 1m, retry_max: 1s }\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.deliver.timeout, Duration::from_secs(3));
        let p = c.validate().unwrap_err();
        for key in ["deliver.concurrency:", "deliver.retry_max:"] {
            assert!(
                p.iter()
                    .any(|m| m.starts_with(key) || m.contains(&format!(": {key}"))),
                "{key} missing in {p:?}"
            );
        }
    }

    #[test]
    fn routes_are_checked_with_every_problem_located() {
        let yaml = "upstream:\n  url: http://127.0.0.1:1\n  routes:\n    update_contact:\n      method: FETCH\n      path: /contacts/{mail}\n      body: xml\n    delete_contact: { method: DELETE }\n    custom_event: { path: \"/events/{event_name}\" }\n";
        let c = Config::from_sources("hg.yaml", yaml, &[]).unwrap();
        let p = c.validate().unwrap_err();
        let want = [
            "hg.yaml:8:5: upstream.routes.delete_contact: unknown action type `delete_contact`; one of create_contact, upsert_contact, update_contact, custom_event",
            "hg.yaml:7:13: upstream.routes.update_contact.body: unknown body shape `xml`; one of brevo, action, none",
            "hg.yaml:5:15: upstream.routes.update_contact.method: unknown method `FETCH`",
            "hg.yaml:6:13: upstream.routes.update_contact.path: unknown placeholder `{mail}` for update_contact; known: {identifier}, {identifier_type}, {email}, {ext_id}, {phone}",
        ];
        for w in want {
            assert!(p.iter().any(|m| m.starts_with(w)), "{w}\nnot in {p:#?}");
        }
        assert_eq!(p.len(), 4, "{p:#?}");
        // a valid table compiles
        let ok = "upstream:\n  routes:\n    update_contact: { method: patch, path: \"/contacts/{ext_id}?identifierType=ext_id\", body: action }\n    custom_event: { body: none }\n";
        let c = Config::from_sources("hg.yaml", ok, &[]).unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(
            c.upstream.routes["update_contact"].method.as_deref(),
            Some("patch")
        );
    }

    #[test]
    fn routes_can_be_set_from_env() {
        let env = vec![
            (
                "HOOKGATE_UPSTREAM__ROUTES__UPDATE_CONTACT__METHOD".to_string(),
                "PATCH".to_string(),
            ),
            (
                "HOOKGATE_UPSTREAM__ROUTES__UPDATE_CONTACT__PATH".to_string(),
                "/people/{ext_id}".to_string(),
            ),
            (
                "HOOKGATE_UPSTREAM__ROUTES__CUSTOM_EVENT__BODY".to_string(),
                "action".to_string(),
            ),
        ];
        let file = "upstream:\n  routes:\n    custom_event: { path: /e }\n";
        let c = Config::from_sources("hg.yaml", file, &env).unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let r = &c.upstream.routes;
        assert_eq!(r["update_contact"].method.as_deref(), Some("PATCH"));
        assert_eq!(
            r["update_contact"].path.as_deref(),
            Some("/people/{ext_id}")
        );
        assert_eq!(
            r["custom_event"].path.as_deref(),
            Some("/e"),
            "file value kept"
        );
        assert_eq!(r["custom_event"].body.as_deref(), Some("action"));
        // a bad value set from env is reported under the variable's name
        let env = vec![(
            "HOOKGATE_UPSTREAM__ROUTES__UPSERT_CONTACT__PATH".to_string(),
            "/c/{nope}".to_string(),
        )];
        let p = Config::from_sources("hg.yaml", "", &env)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            p[0].starts_with("env HOOKGATE_UPSTREAM__ROUTES__UPSERT_CONTACT__PATH: upstream.routes.upsert_contact.path: unknown placeholder `{nope}`"),
            "{p:?}"
        );
        let env = vec![(
            "HOOKGATE_UPSTREAM__ROUTES__UPSERT_CONTACT__VERB".to_string(),
            "PUT".to_string(),
        )];
        let e = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert!(
            e[0].contains("unknown key `upstream.routes.upsert_contact.verb`"),
            "{e:?}"
        );
    }

    #[test]
    fn stream_upkeep_settings() {
        let c = Config::from_sources("hg.yaml", "", &[]).unwrap();
        assert_eq!(c.deliver.inbound_retention, Duration::from_secs(86_400));
        assert_eq!(
            c.deliver.remove_idle_consumers_after,
            Duration::from_secs(3600)
        );
        let c = Config::from_sources(
            "hg.yaml",
            "deliver: { inbound_retention: 500ms, remove_idle_consumers_after: 2s }\n",
            &[],
        )
        .unwrap();
        let p = c.validate().unwrap_err();
        for key in [
            "deliver.inbound_retention:",
            "deliver.remove_idle_consumers_after:",
        ] {
            assert!(
                p.iter()
                    .any(|m| m.starts_with(key) || m.contains(&format!(": {key}"))),
                "{key} missing in {p:?}"
            );
        }
    }

    #[test]
    fn outbound_section_defaults_and_checks() {
        let c = Config::from_sources("hg.yaml", "", &[]).unwrap();
        assert_eq!(c.outbound.retry_base, Duration::from_secs(60));
        assert_eq!(c.outbound.retry_max, Duration::from_secs(8 * 3600));
        assert_eq!(c.outbound.give_up_after, Duration::from_secs(3 * 86_400));
        assert_eq!(c.outbound.disable_after, Duration::from_secs(5 * 86_400));
        assert_eq!(c.outbound.max_subscriptions_per_account, 40);
        assert!(c.subscriptions_file.is_none());
        let dev = Config::from_sources("dev", include_str!("../deploy/hookgate.dev.yaml"), &[])
            .expect("the dev config lists valid keys");
        assert_eq!(dev.outbound.concurrency, c.outbound.concurrency);
        let env = vec![(
            "HOOKGATE_SUBSCRIPTIONS_FILE".to_string(),
            "/etc/hookgate/subs.yaml".to_string(),
        )];
        let c = Config::from_sources(
            "hg.yaml",
            "outbound: { concurrency: 0, retry_base: 1h, retry_max: 1m, timeout: 0s }\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.subscriptions_file.as_deref(),
            Some(Path::new("/etc/hookgate/subs.yaml"))
        );
        let p = c.validate().unwrap_err();
        for key in [
            "outbound.concurrency",
            "outbound.retry_max:",
            "outbound.timeout:",
        ] {
            assert!(
                p.iter()
                    .any(|m| m.starts_with(key) || m.contains(&format!(": {key}"))),
                "{key} missing in {p:?}"
            );
        }
    }

    #[test]
    fn redis_password_is_not_echoed() {
        let c = Config::from_sources("hg.yaml", "redis_url: http://u:hunter2@x\n", &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert!(!p.iter().any(|m| m.contains("hunter2")), "{p:?}");
    }

    /// A value in a problem may be a secret: URLs that do not parse lose their user info by text, and
    /// a wrong-typed value is not quoted, from the file or from the env.
    #[test]
    fn secrets_in_wrong_values_are_not_echoed() {
        let all = |r: Result<Config, Vec<String>>| match r {
            Ok(c) => c.validate().err().unwrap_or_default().join("\n"),
            Err(p) => p.join("\n"),
        };
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 10] = [
            ("redis_url: \"redis://:pw1@host:99999\"\n", &[], "pw1"),
            ("upstream: { url: \"ftp://pw6@x\" }\n", &[], "pw6"),
            ("upstream: { url: \"ftp://x/?token=pw7\" }\n", &[], "pw7"),
            (
                "redis_url: \"redis://host:99999/?password=pw8\"\n",
                &[],
                "pw8",
            ),
            ("listen: \"pw9:80:1\"\n", &[], "pw9"),
            ("key_prefix: \"pw10}{\"\n", &[], "pw10"),
            ("upstream: { url: \"ftp://u:pw2@x\" }\n", &[], "pw2"),
            (
                "redis: { cluster_nodes: \"rediss://:pw3@h:6380\" }\n",
                &[],
                "pw3",
            ),
            (
                "",
                &[("HOOKGATE_REDIS__CLUSTER_NODES", "rediss://:pw4@h:99999")],
                "pw4",
            ),
            (
                "",
                &[("HOOKGATE_LIMITS__MAX_HEADERS", "pw5-not-a-number")],
                "pw5",
            ),
        ];
        for (yaml, vars, secret) in cases {
            let p = all(Config::from_sources("hg.yaml", yaml, &env_vars(vars)));
            assert!(!p.is_empty(), "{secret}: a problem is reported");
            assert!(!p.contains(secret), "{secret} echoed: {p}");
        }
        // A header value of digits set from the env is the text it was, not a refused number.
        let env = vec![(
            "HOOKGATE_UPSTREAM__HEADERS__X_API_KEY".to_string(),
            "0123456".to_string(),
        )];
        let c = Config::from_sources("hg.yaml", "", &env).unwrap();
        assert_eq!(c.upstream.headers["x-api-key"], "0123456");
    }

    /// A text override is the variable's text, never re-read as YAML; a header's name has `-` for `_`;
    /// a list of one may be given as its item.
    #[test]
    fn env_text_is_kept_as_written() {
        let env = env_vars(&[
            ("HOOKGATE_UPSTREAM__HEADERS__API_KEY", "k3y #1"),
            ("HOOKGATE_UPSTREAM__HEADERS__X_QUOTED", "\"x\""),
            ("HOOKGATE_UPSTREAM__HEADERS__X_BAR", "|"),
            ("HOOKGATE_KEY_PREFIX", "hg # not a comment"),
            ("HOOKGATE_TRUSTED_PROXIES", "10.0.0.0/8"),
            ("HOOKGATE_REDIS__CLUSTER_NODES", "redis://10.0.0.7:7000"),
        ]);
        let c = Config::from_sources("hg.yaml", "", &env).unwrap();
        assert_eq!(c.upstream.headers["api-key"], "k3y #1");
        assert_eq!(c.upstream.headers["x-quoted"], "\"x\"");
        assert_eq!(c.upstream.headers["x-bar"], "|");
        assert_eq!(c.key_prefix, "hg # not a comment");
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(c.redis.cluster_nodes, ["redis://10.0.0.7:7000"]);
        // An item that is wrong is named as the item, not as "expected a sequence".
        let env = env_vars(&[("HOOKGATE_TRUSTED_PROXIES", "10.0.0.0/8,192.168.0.0/16")]);
        let e = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].contains("TRUSTED_PROXIES[0]: invalid IP") && !e[0].contains("sequence"),
            "{e:#?}"
        );
        // Routes are named by action type, whose `_` stays.
        let env = env_vars(&[(
            "HOOKGATE_UPSTREAM__ROUTES__UPDATE_CONTACT__PATH",
            "/c/{identifier}",
        )]);
        let c = Config::from_sources("hg.yaml", "", &env).unwrap();
        assert!(
            c.upstream.routes.contains_key("update_contact"),
            "{:?}",
            c.upstream.routes.keys()
        );
    }

    /// A wrong value in the file hides nothing else: the overrides are still checked, and so is the rest
    /// of the file; the checks skip the key whose value was not read, whose default stands in for it.
    #[test]
    fn a_wrong_value_in_the_file_hides_no_other_problem() {
        let env = env_vars(&[("HOOKGATE_DELIVER__CONCURRENCY", "many")]);
        let yaml = "limits:\n  max_headers: lots\n  max_json_depth: 999\nredis_url: ftp://x\n";
        let e = Config::from_sources("hg.yaml", yaml, &env).unwrap_err();
        let starts = [
            "hg.yaml:2:16: limits.max_headers: ",
            "env HOOKGATE_DELIVER__CONCURRENCY: ",
            "hg.yaml:4:12: redis_url: ",
            "hg.yaml:3:19: limits.max_json_depth: ",
        ];
        assert_eq!(e.len(), starts.len(), "{e:#?}");
        for (got, want) in e.iter().zip(starts) {
            assert!(got.starts_with(want), "{want} in {e:#?}");
        }
        // An unknown key too: the rest is read without it.
        let e =
            Config::from_sources("hg.yaml", "limitz: 1\nredis_url: ftp://x\n", &[]).unwrap_err();
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("hg.yaml:1:1: unknown key `limitz`"),
            "{e:#?}"
        );
        assert!(e[1].starts_with("hg.yaml:2:12: redis_url: "), "{e:#?}");
        // Checks comparing two keys are not made against a default standing in for a wrong value: only
        // what was written is reported. (A wrong `admin_listen`'s default, 0.0.0.0:9090, would clash with
        // `listen`, and a wrong `listen`'s, 0.0.0.0:8080, with `admin_listen`; and so on.)
        for yaml in [
            "listen: [1, 2]\nadmin_listen: 0.0.0.0:8080\n",
            "deliver: { retry_base: abc, retry_max: 500ms }\n",
            "outbound: { retry_base: abc, retry_max: 500ms }\n",
            "limits: { request_timeout: abc, idle_timeout: 20s }\n",
            "redis: { response_timeout: abc }\nlimits: { request_timeout: 8s }\n",
            "redis_url: [x]\nredis: { tls_ca_file: /dev/null }\n",
        ] {
            let e = Config::from_sources("hg.yaml", yaml, &[]).unwrap_err();
            assert_eq!(e.len(), 1, "{yaml}: {e:#?}");
        }
        let e = Config::from_sources(
            "hg.yaml",
            "listen: 0.0.0.0:9090\nadmin_listen: [1, 2]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("hg.yaml:2:15: admin_listen: "), "{e:#?}");
        // A syntax error leaves nothing to read: it is the one problem.
        let e =
            Config::from_sources("hg.yaml", "limits: [\nredis_url: ftp://x\n", &env).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
    }

    /// An override takes the place of the file's wrong value, so the config loads with the override's.
    #[test]
    fn an_override_replaces_a_wrong_value_in_the_file() {
        let yaml = "limits:\n  max_headers: lots\n  max_json_depth: 32\n";
        let env = env_vars(&[("HOOKGATE_LIMITS__MAX_HEADERS", "50")]);
        let c = Config::from_sources("hg.yaml", yaml, &env).expect("the override replaces it");
        assert_eq!(c.limits.max_headers, 50);
        assert_eq!(c.limits.max_json_depth, 32, "the rest of the file is read");
        // A whole section's wrong value is not replaced by one of its keys.
        let env = env_vars(&[("HOOKGATE_LIMITS__MAX_HEADERS", "50")]);
        let e = Config::from_sources("hg.yaml", "limits: 5\n", &env).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("hg.yaml:1:9: limits: "), "{e:#?}");
    }

    /// The admin token is compared as a bearer token is presented: a file's surrounding whitespace (a
    /// stray space, `\r\n`) is dropped; whitespace inside is kept (a request can present it), and a
    /// token of whitespace alone is refused.
    #[test]
    fn the_admin_token_is_read_as_a_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            format!("${{file:{}}}", p.display())
        };
        let t = admin_token_from(&file("a", "filetok  \r\n")).expect("trimmed");
        assert_eq!(t.expose(), "filetok");
        let t = admin_token_from(&file("b", "plain")).expect("as is");
        assert_eq!(t.expose(), "plain");
        let t = admin_token_from(&file("c", " two words \n")).expect("inner space kept");
        assert_eq!(t.expose(), "two words");
        let e = admin_token_from(&file("d", "   \t\n")).unwrap_err();
        assert!(e[0].contains("empty once the whitespace"), "{e:?}");
    }

    /// An egress allow entry of every address is a config problem like any other: located, reported with
    /// the rest, and the process exits 2 before anything starts.
    #[test]
    fn egress_allow_of_every_address_is_refused_where_written() {
        let yaml = "egress:\n  allow: [10.0.0.0/8, 0.0.0.0/0]\nlimits: { max_headers: 3 }\n";
        let env = env_vars(&[("HOOKGATE_EGRESS__ALLOW", "[\"::/0\"]")]);
        let c = Config::from_sources("hg.yaml", yaml, &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[1].starts_with("hg.yaml:2:23: egress.allow[1]: 0.0.0.0/0 opens every address"),
            "{p:#?}"
        );
        let c = Config::from_sources("hg.yaml", "", &env).unwrap();
        let p = c.validate().unwrap_err();
        assert!(
            p[0].starts_with("env HOOKGATE_EGRESS__ALLOW: egress.allow[0]: ::/0 opens"),
            "{p:#?}"
        );
    }

    /// Files read at start are checked with the rest, each where it is named.
    #[test]
    fn files_read_at_start_must_be_readable() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "redis_url: rediss://h:1\nredis: {{ tls_ca_file: /nonexistent/ca.pem }}\nsubscriptions_file: {}\n",
            dir.path().display()
        );
        let c = Config::from_sources("hg.yaml", &yaml, &[]).unwrap();
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].starts_with("hg.yaml:2:23: redis.tls_ca_file: cannot read /nonexistent/ca.pem"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("hg.yaml:3:21: subscriptions_file: ")
                && p[1].ends_with("is a directory, not a file"),
            "{p:#?}"
        );
    }

    /// A bad override does not hide the file's other problems: the checks run with the good overrides.
    #[test]
    fn a_bad_override_and_the_files_problems_come_together() {
        let env = env_vars(&[("HOOKGATE_LIMITS__MAX_HEADERS", "lots")]);
        let e =
            Config::from_sources("hg.yaml", "limits:\n  max_json_depth: 999\n", &env).unwrap_err();
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("env HOOKGATE_LIMITS__MAX_HEADERS: "),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("hg.yaml:2:19: limits.max_json_depth"),
            "{e:#?}"
        );
    }

    /// An override replaces the file's value: its problems point at the variable, list items included,
    /// and an unknown key and a wrong value among the overrides are reported together.
    #[test]
    fn overrides_take_the_place_of_the_file() {
        let env = vec![(
            "HOOKGATE_REDIS__CLUSTER_NODES".to_string(),
            "[redis://a:1, http://b]".to_string(),
        )];
        let c = Config::from_sources(
            "hg.yaml",
            "redis:\n  cluster_nodes: [redis://x:1, redis://y:2]\n",
            &env,
        )
        .unwrap();
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "env HOOKGATE_REDIS__CLUSTER_NODES: redis.cluster_nodes[1]: not a redis://host:port or rediss://host:port URL (its scheme is `http`)"
            ),
            "{p:?}"
        );
        let env = env_vars(&[
            ("HOOKGATE_NOPE", "1"),
            ("HOOKGATE_LIMITS__MAX_HEADERS", "lots"),
        ]);
        let p = Config::from_sources("hg.yaml", "", &env).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("env HOOKGATE_NOPE: unknown key"), "{p:?}");
        assert!(
            p[1].starts_with("env HOOKGATE_LIMITS__MAX_HEADERS: "),
            "{p:?}"
        );
    }
}
