//! The relay: reads `<prefix>:events` in the `relays` group and fans each event out, one delivery per
//! matching subscription, enqueued and acknowledged in one script. Fan-out does no network I/O besides
//! Redis, so one reader per process keeps up; a crashed relay's pending events are reclaimed (XAUTOCLAIM)
//! and fanned out again, which the script makes harmless (delivery ids are derived from the event and
//! the subscription, and an existing delivery is left alone).

use super::event::Event;
use super::queue::{self, Scripts, Target};
use super::registry::Registry;
use super::{Keys, RELAY_GROUP};
use crate::redis_conn::{Conn, Redis};
use crate::stream::ensure_group;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{RedisError, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

const BLOCK: Duration = Duration::from_secs(2);
const BATCH: usize = 128;
/// A pending event idle this long belongs to a relay that is gone (fan-out takes milliseconds).
const RECLAIM_IDLE: Duration = Duration::from_secs(10);
const RECLAIM_EVERY: Duration = Duration::from_secs(3);

/// The delivery id, also the `webhook-id`: stable for one event and one subscription, whoever fans out.
pub fn delivery_id(event_stream_id: &str, sub: &str) -> String {
    let h = Sha256::digest(format!("{event_stream_id}\n{sub}").as_bytes());
    format!("msg_{}", &hex::encode(h)[..26])
}

pub struct Relay {
    pub conn: Conn,
    pub redis: Redis,
    pub keys: Keys,
    pub registry: Arc<Registry>,
    pub wake: Arc<Notify>,
    pub consumer: String,
    pub retention_ms: u64,
    pub read_timeout: Duration,
    pub scripts: Scripts,
}

impl Relay {
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(consumer = %self.consumer, "outbound relay starting");
        let mut reader: Option<Conn> = None;
        let mut group_ready = false;
        let mut pause = Duration::from_millis(100);
        let mut next_reclaim = Instant::now();
        let retention = Duration::from_millis(self.retention_ms);
        let mut next_trim = Instant::now() + crate::deliver::upkeep::every(retention);
        let mut cursor = "0-0".to_string();
        while !*stop.borrow() {
            let step: Result<(), RedisError> = async {
                if !group_ready {
                    let mut c = self.conn.clone();
                    ensure_group(&mut c, &[&self.keys.events], RELAY_GROUP).await?;
                    group_ready = true;
                }
                if Instant::now() >= next_reclaim {
                    self.reclaim(&mut cursor).await?;
                    next_reclaim = Instant::now() + RECLAIM_EVERY;
                }
                // Published events are history once every group acknowledged them: kept as long as
                // their deliveries stay listable (`outbound.retention`), then trimmed.
                if Instant::now() >= next_trim {
                    let mut c = self.conn.clone();
                    let n =
                        crate::deliver::upkeep::trim_stream(&mut c, &self.keys.events, retention)
                            .await;
                    if n > 0 {
                        metrics::counter!("hookgate_events_trimmed_total").increment(n);
                    }
                    next_trim = Instant::now() + crate::deliver::upkeep::every(retention);
                }
                let conn = match reader.as_mut() {
                    Some(c) => c,
                    None => reader.insert(self.connect().await?),
                };
                let read = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    r = self.read(conn) => r?,
                };
                for (id, map) in read {
                    self.fan_out(&id, &map).await?;
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => {
                    match crate::stream::back_off(&e, "outbound relay", pause, &mut stop).await {
                        crate::stream::ReadFailure::LostGroup => group_ready = false,
                        crate::stream::ReadFailure::Reconnect => reader = None,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("outbound relay stopped");
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        self.redis.blocking_reader(self.read_timeout).await
    }

    async fn read(
        &self,
        conn: &mut Conn,
    ) -> Result<Vec<(String, HashMap<String, Value>)>, RedisError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(RELAY_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.events)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids.into_iter().map(|e| (e.id, e.map)))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn reclaim(&self, cursor: &mut String) -> Result<(), RedisError> {
        let mut c = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.events)
            .arg(RELAY_GROUP)
            .arg(&self.consumer)
            .arg(RECLAIM_IDLE.as_millis() as u64)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut c)
            .await?;
        *cursor = reply.next_stream_id;
        if !reply.deleted_ids.is_empty() {
            let _: () = redis::cmd("XACK")
                .arg(&self.keys.events)
                .arg(RELAY_GROUP)
                .arg(&reply.deleted_ids)
                .query_async(&mut c)
                .await?;
        }
        if !reply.claimed.is_empty() {
            tracing::info!(count = reply.claimed.len(), "reclaimed pending events");
            metrics::counter!("hookgate_relay_reclaimed_total")
                .increment(reply.claimed.len() as u64);
        }
        for e in reply.claimed {
            self.fan_out(&e.id, &e.map).await?;
        }
        Ok(())
    }

    /// Enqueue one delivery per subscription that wants the event, and acknowledge it.
    async fn fan_out(&self, id: &str, map: &HashMap<String, Value>) -> Result<(), RedisError> {
        let now = crate::clock::now_ms();
        let mut c = self.conn.clone();
        let ev = match Event::from_fields(id, map) {
            Ok(ev) => ev,
            Err(why) => {
                tracing::warn!(
                    id,
                    why,
                    "entry on the events stream is not an event; acknowledged and skipped"
                );
                metrics::counter!("hookgate_relay_events_total", "outcome" => "invalid")
                    .increment(1);
                return redis::cmd("XACK")
                    .arg(&self.keys.events)
                    .arg(RELAY_GROUP)
                    .arg(id)
                    .query_async(&mut c)
                    .await;
            }
        };
        // Every subscription created before the event was published must see it, whichever process
        // created it: check the version now rather than trusting the periodic refresh.
        let snap = self.registry.current().await?;
        let targets: Vec<Target> = snap
            .all
            .iter()
            .filter(|s| s.active() && s.wants(&ev))
            .map(|s| (delivery_id(id, &s.spec.id), s.spec.id.clone()))
            .collect();
        queue::enqueue(
            &mut c,
            &self.scripts,
            &self.keys,
            id,
            &ev.kind,
            &ev.doc.to_string(),
            ev.account.as_deref().unwrap_or(""),
            &targets,
            now,
            self.retention_ms,
        )
        .await?;
        metrics::counter!("hookgate_relay_events_total", "outcome" => "fanned_out").increment(1);
        metrics::counter!("hookgate_relay_deliveries_total").increment(targets.len() as u64);
        if !targets.is_empty() {
            self.wake.notify_one();
        }
        Ok(())
    }
}
