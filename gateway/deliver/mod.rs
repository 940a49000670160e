//! Mapper workers: consume `<prefix>:inbound` in the `mappers` group → apply the source's current mapping →
//! send each action to the upstream contacts API → XACK. Transient failures park the event in a sorted set
//! (`retry.rs`), permanent ones go to the dead letters (`dead.rs`). Every step is at-least-once; the
//! `Idempotency-Key` (stable per event, rule and action) lets the upstream absorb duplicates.
//!
//! Module map: `worker` (read loop, reclaim, per-event delivery) → `upstream` (one HTTP request) →
//! `envelope` (an event and its progress, as stream fields) · `retry` · `dead` · `upkeep` (trimming
//! `inbound`, removing gone consumers); routes come from `crate::route`. See `docs/delivery.md`.

mod dead;
mod envelope;
mod received;
mod retry;
pub mod upkeep;
mod upstream;
mod worker;

pub use dead::{DeadLetters, Filter, Page, Reason};
pub use envelope::Envelope;
pub use received::{Received, ReceivedFilter, SCAN_LIMIT};
pub use retry::{next_try, parse_retry_after};

use crate::catalog::LiveCatalog;
use crate::config::Config;
use crate::redis_conn::{Conn, Redis};
use crate::stream::keys;
use std::sync::Arc;
use tokio::sync::watch;

/// The Redis keys delivery uses, under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The inbound family's prefix, for the dedup keys named by each event.
    pub prefix: String,
    pub inbound: String,
    pub due: String,
    pub retry: String,
    pub record_prefix: String,
    pub dead: String,
    pub actions: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            inbound: keys::inbound(prefix),
            due: keys::retry_due(prefix),
            retry: keys::retry_inbound(prefix),
            record_prefix: keys::retry_record_prefix(prefix),
            dead: keys::dead_inbound(prefix),
            actions: keys::actions(prefix),
        }
    }
}

/// Start the workers, the retry mover, the reclaimer and the stream upkeep (trimming, idle consumers);
/// the handle resolves once `stop` fired and in-flight deliveries finished (or `shutdown_grace` ran out,
/// leaving the rest pending for a reclaim).
pub fn start(
    cfg: &Config,
    live: Arc<LiveCatalog>,
    redis: &Redis,
    conn: Conn,
    keys: Keys,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let up = upstream::Upstream::new(&cfg.upstream, &cfg.deliver)?;
    let worker = Arc::new(worker::Worker::new(
        cfg,
        keys.clone(),
        conn.clone(),
        redis.clone(),
        live,
        up,
    ));
    let mut parts = tokio::task::JoinSet::new();
    parts.spawn(upkeep::run(
        conn.clone(),
        keys.clone(),
        cfg.deliver.clone(),
        stop.clone(),
    ));
    parts.spawn(retry::mover(conn, keys, stop.clone()));
    parts.spawn(worker.run(stop, cfg.shutdown_grace));
    // Supervised as one (`app::supervise`): a mover that died would leave every parked retry parked.
    Ok(parts)
}
