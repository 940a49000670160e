//! The outbound relay: events published by the platform (`POST /v1/events` or an XADD to
//! `<prefix>:events`) are delivered to every subscription that wants them, signed (Standard Webhooks),
//! retried with backoff, dead-lettered when they cannot be, every attempt recorded.
//!
//! Module map: `event` (what is published) · `subscription` (the model and its validation) ·
//! `registry` (storage and the compiled view) → `relay` (events → deliveries) → `queue` (Redis scripts)
//! → `dispatch` (claim, send, record) → `send` (one request) · `sign`. See `docs/outbound.md`.

pub mod dispatch;
pub mod event;
pub mod queue;
pub mod registry;
pub mod relay;
pub mod send;
pub mod sign;
pub mod subscription;

use crate::config::Config;
use crate::egress::EgressPolicy;
use crate::redis_conn::{Conn, Redis};
use crate::stream::{keys, Store};
use anyhow::Context;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// The consumer group of the relays on `<prefix>:events`.
pub const RELAY_GROUP: &str = "relays";

/// The Redis keys of the outbound side, under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    pub events: String,
    pub dead: String,
    pub subs: String,
    pub sub_version: String,
    account_prefix: String,
    health_prefix: String,
    pub ready: String,
    pub queue_prefix: String,
    pub record_prefix: String,
    pub attempts_prefix: String,
    pub index: String,
    pub sub_index_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            events: keys::events(prefix),
            dead: keys::dead_outbound(prefix),
            subs: format!("{prefix}:subscriptions"),
            sub_version: format!("{prefix}:subscriptions:version"),
            account_prefix: format!("{prefix}:subscriptions:account:"),
            health_prefix: format!("{prefix}:subscriptions:health:"),
            ready: format!("{prefix}:outbound:ready"),
            queue_prefix: format!("{prefix}:outbound:queue:"),
            record_prefix: format!("{prefix}:outbound:delivery:"),
            attempts_prefix: format!("{prefix}:outbound:attempts:"),
            index: format!("{prefix}:outbound:deliveries"),
            sub_index_prefix: format!("{prefix}:outbound:deliveries:sub:"),
        }
    }

    /// Ids of one account's API subscriptions: `=<account>`, or `none` for those without an account
    /// (`=` cannot appear in an account name, so the two never collide).
    pub fn account_set(&self, account: Option<&str>) -> String {
        match account {
            Some(a) => format!("{}={a}", self.account_prefix),
            None => format!("{}none", self.account_prefix),
        }
    }
    pub fn health(&self, sub: &str) -> String {
        format!("{}{sub}", self.health_prefix)
    }
    pub fn queue(&self, sub: &str) -> String {
        format!("{}{sub}", self.queue_prefix)
    }
    pub fn record(&self, id: &str) -> String {
        format!("{}{id}", self.record_prefix)
    }
    pub fn attempts(&self, id: &str) -> String {
        format!("{}{id}", self.attempts_prefix)
    }
    pub fn sub_index(&self, sub: &str) -> String {
        format!("{}{sub}", self.sub_index_prefix)
    }
}

/// What the admin API and the workers share.
#[derive(Clone)]
pub struct Outbound {
    pub conn: Conn,
    /// For the relay's blocking reader.
    pub redis: Redis,
    pub keys: Keys,
    pub registry: Arc<registry::Registry>,
    pub policy: Arc<EgressPolicy>,
    pub sender: Arc<send::Sender>,
    pub store: Store,
    pub cfg: crate::config::Outbound,
    pub scripts: queue::Scripts,
    pub wake: Arc<Notify>,
}

impl Outbound {
    /// Load `subscriptions_file` (every problem reported) and set up; connects lazily.
    pub fn new(cfg: &Config, redis: &Redis, prefix: &str, store: Store) -> anyhow::Result<Self> {
        let policy = Arc::new(EgressPolicy::new(&cfg.egress)?);
        let file = match &cfg.subscriptions_file {
            Some(p) => registry::load_file(p, &policy).map_err(|problems| {
                anyhow::Error::new(crate::error::InvalidFiles(format!(
                    "subscriptions_file is not valid:\n{}",
                    problems.join("\n")
                )))
            })?,
            None => Vec::new(),
        };
        let conn = redis.shared().context("redis")?;
        let keys = Keys::new(prefix);
        let registry = Arc::new(registry::Registry::new(conn.clone(), keys.clone(), file));
        let sender = Arc::new(send::Sender::new(
            policy.clone(),
            cfg.outbound.connect_timeout,
            cfg.outbound.timeout,
        )?);
        Ok(Self {
            conn,
            redis: redis.clone(),
            keys,
            registry,
            policy,
            sender,
            store,
            cfg: cfg.outbound.clone(),
            scripts: queue::Scripts::default(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Start the relay and the dispatcher; resolves when both stopped (in-flight deliveries get `grace`).
    pub fn start(
        &self,
        cfg: &Config,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<tokio::task::JoinSet<()>> {
        let relay = Arc::new(relay::Relay {
            conn: self.conn.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            registry: self.registry.clone(),
            wake: self.wake.clone(),
            consumer: consumer_name(),
            retention_ms: self.cfg.retention.as_millis() as u64,
            read_timeout: std::time::Duration::from_secs(2) + cfg.redis.response_timeout,
            scripts: self.scripts.clone(),
        });
        let dispatcher = Arc::new(dispatch::Dispatcher::new(
            self.conn.clone(),
            self.keys.clone(),
            self.registry.clone(),
            self.sender.clone(),
            // `subscription.disabled` is hookgate's own event: nobody waits on its acknowledgement.
            self.store.without_acks(),
            self.cfg.clone(),
            self.wake.clone(),
        ));
        let grace = cfg.shutdown_grace;
        let mut parts = tokio::task::JoinSet::new();
        parts.spawn(relay.run(stop.clone()));
        parts.spawn(dispatcher.run(stop, grace));
        // Supervised as one (`app::supervise`).
        Ok(parts)
    }
}

/// `HOSTNAME` or the kernel's host name, plus the pid: unique per process.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "hookgate".into());
    format!("{host}-{}", std::process::id())
}
