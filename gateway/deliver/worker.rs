//! The read loop and per-event delivery.
//!
//! One reader per process blocks in XREADGROUP on a dedicated connection (a BLOCK on the shared multiplexed
//! connection would stall every other command) and hands entries to tasks. Per source, `admit` bounds the
//! events held and `run` the events being delivered, so a slow provider cannot take every slot: an event
//! that waits too long for admission is deferred through the retry set instead of blocking the reader.
//! Entries in hand get their idle time reset (heartbeat) so the reclaimer (XAUTOCLAIM) only takes entries
//! whose worker is gone — a slow request is never sent twice by design.

use super::dead::{bury, Reason};
use super::envelope::{digest, Done, Envelope};
use super::retry::{add_ack, backoff, next_try, park};
use super::upstream::{Sent, Upstream};
use super::Keys;
use crate::catalog::LiveCatalog;
use crate::clock::now_ms;
use crate::config::{Config, Deliver};
use crate::jsonpath::JsonPath;
use crate::mapping::{Event, Headers, MappedAction};
use crate::payload::{self, BodyKind};
use crate::redis_conn::{Conn, Redis};
use crate::stream::{binding_of, ensure_group, keys, lost_race, MAPPERS_GROUP};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{RedisError, RedisResult, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// A stream entry read: (stream, id, the event it holds). Its fields are read once, here: the lost-race
/// check and the delivery both use the envelope. `Err` says why the entry is no event.
type Entry = (String, String, Result<Envelope, String>);

/// Read a stream entry's fields into its envelope.
fn entry(stream: String, id: String, fields: HashMap<String, Value>) -> Entry {
    let env = Envelope::from_fields(&id, fields);
    (stream, id, env)
}

/// An inbound entry stored with dedup, as the lost-race check reads it.
struct Checked<'e> {
    /// Its place in the batch.
    index: usize,
    /// Its dedup key.
    key: String,
    /// The entry: its source, its receipt time (for what is left of its dedup window) and the value its
    /// request gave the key (`<token>|<binding>`).
    env: &'e Envelope,
}

impl Checked<'_> {
    fn mine(&self) -> &[u8] {
        self.env.receipt.dedup.as_bytes()
    }
}

/// How long one XREADGROUP blocks; the dedicated connection's response timeout is longer.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per read or reclaim.
const BATCH: usize = 64;
/// Events admitted per source, as a multiple of `deliver.concurrency`.
const ADMIT_FACTOR: usize = 4;
/// How long the reader waits for a saturated source before deferring the event.
const PATIENCE: Duration = Duration::from_millis(500);
/// The shortest TTL a worker claims a dedup key with: an entry older than its source's window still
/// meets the other entries of its id in the same read.
const MIN_CLAIM: Duration = Duration::from_secs(60);
/// How long the outcome of a delivery (ack, park, dead letter) is retried while Redis is away.
const FINISH_PATIENCE: Duration = Duration::from_secs(60);

/// Per-source slots.
struct Gate {
    admit: Arc<Semaphore>,
    run: Semaphore,
    /// Set when the source's slots stayed full for `PATIENCE`: its next events are deferred without
    /// waiting again, until a slot is free.
    congested: AtomicBool,
}

/// What one delivery pass came to.
enum Verdict {
    Done,
    Retry {
        error: String,
        status: Option<u16>,
        after: Option<Duration>,
        action: (String, usize),
    },
    Dead(Reason, Option<(String, usize)>),
}

/// How an entry leaves its stream.
enum Finish {
    Ack,
    Park(u64),
    Bury(Reason, Option<(String, usize)>),
}

pub struct Worker {
    keys: Keys,
    conn: Conn,
    redis: Redis,
    consumer: String,
    live: Arc<LiveCatalog>,
    upstream: Upstream,
    cfg: Deliver,
    max_json_depth: usize,
    read_timeout: Duration,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// `(stream, id)` of every entry this process holds, for the heartbeat.
    in_hand: Mutex<HashSet<(String, String)>>,
    /// While the upstream cannot be reached, no new events are taken until then: each would only fail
    /// and be parked, turning the whole stream into retry records at full speed.
    paused_until: Mutex<Option<Instant>>,
    /// Set once shutdown begins: deliveries already sending get the grace period, but entries still
    /// waiting for a turn are not started (a send cut off at the end of the grace would be sent twice).
    stopping: AtomicBool,
}

/// `HOSTNAME` (set in containers), else the kernel's host name, plus the pid: unique per process.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "hookgate".into());
    format!("{host}-{}", std::process::id())
}

/// Pending entries idle longer than this belong to a worker that is gone. Entries in hand are refreshed
/// every `heartbeat`, so a live worker's entries never get this old, however slow the upstream.
pub fn reclaim_after(d: &Deliver) -> Duration {
    d.timeout * 3 + Duration::from_secs(5)
}

fn heartbeat_every(d: &Deliver) -> Duration {
    (d.timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(10))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    pub fn new(
        cfg: &Config,
        keys: Keys,
        conn: Conn,
        redis: Redis,
        live: Arc<LiveCatalog>,
        upstream: Upstream,
    ) -> Self {
        Self {
            keys,
            conn,
            redis,
            consumer: consumer_name(),
            live,
            upstream,
            cfg: cfg.deliver.clone(),
            max_json_depth: cfg.limits.max_json_depth,
            read_timeout: BLOCK + cfg.redis.response_timeout,
            gates: Mutex::default(),
            in_hand: Mutex::default(),
            paused_until: Mutex::default(),
            stopping: Default::default(),
        }
    }

    fn streams(&self) -> [&str; 2] {
        [&self.keys.inbound, &self.keys.due]
    }

    /// Read, dispatch and reclaim until `stop`; then give in-flight deliveries `grace` to finish.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, grace: Duration) {
        tracing::info!(consumer = %self.consumer, "mapper worker starting");
        // Until the last in-flight delivery is done, shutdown drain included.
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let mut tasks = JoinSet::new();
        let mut reader: Option<Conn> = None;
        let mut groups_ready = false;
        let mut pause = Duration::from_millis(100);
        let mut next_reclaim = Instant::now();
        let mut cursors = ["0-0".to_string(), "0-0".to_string()];
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            let step: Result<(), RedisError> = async {
                if !groups_ready {
                    let mut c = self.conn.clone();
                    ensure_group(&mut c, &self.streams(), MAPPERS_GROUP).await?;
                    groups_ready = true;
                }
                if Instant::now() >= next_reclaim {
                    self.reclaim(&mut cursors, &mut tasks).await?;
                    next_reclaim = Instant::now() + heartbeat_every(&self.cfg).max(BLOCK);
                }
                let paused = *lock(&self.paused_until);
                if let Some(until) = paused {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        () = tokio::time::sleep_until(until.into()) => {}
                    }
                }
                let conn = match reader.as_mut() {
                    Some(c) => c,
                    None => reader.insert(self.connect().await?),
                };
                let read = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    r = self.read(conn) => r?,
                };
                let read = self.without_lost_races(read).await?;
                // In hand from now: the batch may wait for admission longer than `reclaim_after`, and
                // the heartbeat must keep every entry of it from looking abandoned meanwhile.
                lock(&self.in_hand).extend(read.iter().map(|(s, id, _)| (s.clone(), id.clone())));
                for (stream, id, env) in read {
                    self.dispatch(&stream, id, env, &mut tasks).await;
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => {
                    match crate::stream::back_off(&e, "mapper worker", pause, &mut stop).await {
                        crate::stream::ReadFailure::LostGroup => groups_ready = false,
                        crate::stream::ReadFailure::Reconnect => reader = None,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        let left = tasks.len();
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = tasks.len(),
                "shutdown grace over; unfinished events stay pending for another worker"
            );
            tasks.abort_all();
        }
        heartbeat.abort();
        tracing::info!(in_flight_at_stop = left, "mapper worker stopped");
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        self.redis.blocking_reader(self.read_timeout).await
    }

    /// New entries of both streams, blocking up to `BLOCK`.
    async fn read(&self, conn: &mut Conn) -> Result<Vec<Entry>, RedisError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(MAPPERS_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.inbound)
            .arg(&self.keys.due)
            .arg(">")
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| {
                        let key = k.key;
                        k.ids
                            .into_iter()
                            .map(move |e| entry(key.clone(), e.id, e.map))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Drop the inbound entries of redeliveries that lost the race for their dedup key (see
    /// `stream::lost_race`): acknowledged and deleted, never delivered. One MGET per batch, and only for
    /// entries stored with dedup. An entry whose key is not set (its request's SET has not run yet, or
    /// never will: the connection was lost between the XADD and the SET) claims it with its own token, as
    /// that SET would have, for what is left of the source's window (`claim_unset`); it wins unless
    /// another token got there first. A key that has expired is claimed again the same way.
    async fn without_lost_races(&self, entries: Vec<Entry>) -> Result<Vec<Entry>, RedisError> {
        let checked: Vec<Checked<'_>> = entries
            .iter()
            .enumerate()
            .filter(|(_, (stream, _, _))| *stream == self.keys.inbound)
            .filter_map(|(index, (_, _, env))| {
                // An entry that is no event is left to `dispatch`, which says why.
                let env = env.as_ref().ok()?;
                let r = &env.receipt;
                if r.dedup.is_empty() {
                    return None;
                }
                let binding = std::str::from_utf8(binding_of(r.dedup.as_bytes())).ok()?;
                let key = keys::dedup(&self.keys.prefix, &r.source, &r.event_id, binding);
                Some(Checked { index, key, env })
            })
            .collect();
        if checked.is_empty() {
            return Ok(entries);
        }
        let mut c = self.conn.clone();
        let mut now: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(checked.iter().map(|e| &e.key).collect::<Vec<_>>())
            .query_async(&mut c)
            .await?;
        self.claim_unset(&checked, &mut now).await?;
        let losers: HashSet<usize> = checked
            .iter()
            .zip(&now)
            .filter(|(e, now)| lost_race(e.mine(), now.as_deref()))
            .map(|(e, _)| e.index)
            .collect();
        if losers.is_empty() {
            return Ok(entries);
        }
        let ids: Vec<&str> = losers.iter().map(|i| entries[*i].1.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(&self.keys.inbound)
            .arg(MAPPERS_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.inbound)
            .arg(&ids)
            .ignore();
        pipe.query_async::<()>(&mut c).await?;
        tracing::debug!(
            count = ids.len(),
            "skipped redeliveries that lost the dedup race"
        );
        metrics::counter!("hookgate_mapper_redeliveries_skipped_total").increment(ids.len() as u64);
        Ok(entries
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !losers.contains(i))
            .map(|(_, e)| e)
            .collect())
    }

    /// Set each key `now` found unset to its entry's token (`SET NX GET PX`), and put what the key holds
    /// after that in `now`: the entry's own token when the claim won, another's when a SET came first.
    /// The TTL is what the gateway's SET would have left: the source's window less the entry's age, at
    /// least [`MIN_CLAIM`] so that entries racing in one batch still meet. An entry of a source that no
    /// longer deduplicates (or is gone) claims nothing and is delivered, as before the claim existed.
    /// A key that holds another type (WRONGTYPE) leaves `None`: the entry is delivered, as an entry whose
    /// SET failed in the gateway is. Any other failure (out of memory, a read-only replica, an ACL without
    /// `SET` on the dedup keys) fails the batch: its entries stay pending and are read again when
    /// reclaimed, rather than delivered unchecked.
    async fn claim_unset(
        &self,
        checked: &[Checked<'_>],
        now: &mut [Option<Vec<u8>>],
    ) -> Result<(), RedisError> {
        let unset: Vec<usize> = (0..checked.len()).filter(|j| now[*j].is_none()).collect();
        if unset.is_empty() {
            return Ok(());
        }
        let catalog = self.live.current();
        let now_ms = now_ms();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut claimed = Vec::with_capacity(unset.len());
        for j in unset {
            let entry = &checked[j];
            let window = catalog
                .sources
                .get(entry.env.source())
                .and_then(|s| s.inbound.dedup.as_ref().map(|(_, ttl)| *ttl));
            let Some(window) = window else { continue };
            let age = entry
                .env
                .receipt
                .received_at
                .map_or(0, |at| now_ms.saturating_sub(at));
            let ttl = window
                .saturating_sub(Duration::from_millis(age))
                .max(MIN_CLAIM);
            claimed.push(j);
            pipe.cmd("SET")
                .arg(&entry.key)
                .arg(entry.mine())
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
        }
        if claimed.is_empty() {
            return Ok(());
        }
        let before: Vec<RedisResult<Option<Vec<u8>>>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        for (j, before) in claimed.into_iter().zip(before) {
            match before {
                // Not set before: this entry's token is in it now.
                Ok(None) => now[j] = Some(checked[j].mine().to_vec()),
                Ok(Some(other)) => now[j] = Some(other),
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    tracing::warn!(error = %e, key = %checked[j].key, "the dedup key holds another type; the entry is delivered unchecked");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Take over entries whose worker went away (idle longer than `reclaim_after`).
    async fn reclaim(
        self: &Arc<Self>,
        cursors: &mut [String; 2],
        tasks: &mut JoinSet<()>,
    ) -> Result<(), RedisError> {
        let idle = reclaim_after(&self.cfg).as_millis() as u64;
        for (i, stream) in self.streams().into_iter().enumerate() {
            let mut c = self.conn.clone();
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(MAPPERS_GROUP)
                .arg(&self.consumer)
                .arg(idle)
                .arg(&cursors[i])
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await?;
            cursors[i] = reply.next_stream_id;
            if !reply.deleted_ids.is_empty() {
                // Gone from the stream: nothing left to deliver.
                let _: () = redis::cmd("XACK")
                    .arg(stream)
                    .arg(MAPPERS_GROUP)
                    .arg(&reply.deleted_ids)
                    .query_async(&mut c)
                    .await?;
            }
            // An entry this process holds is being delivered here (its idle time outran a heartbeat):
            // dispatching it again would send it twice.
            let claimed: Vec<Entry> = {
                let held = lock(&self.in_hand);
                reply
                    .claimed
                    .into_iter()
                    .map(|e| entry(stream.to_string(), e.id, e.map))
                    .filter(|(s, id, _)| !held.contains(&(s.clone(), id.clone())))
                    .collect()
            };
            if !claimed.is_empty() {
                tracing::info!(stream, count = claimed.len(), "reclaimed pending events");
                metrics::counter!("hookgate_mapper_reclaimed_total")
                    .increment(claimed.len() as u64);
            }
            let claimed = self.without_lost_races(claimed).await?;
            lock(&self.in_hand).extend(claimed.iter().map(|(s, id, _)| (s.clone(), id.clone())));
            for (stream, id, env) in claimed {
                self.dispatch(&stream, id, env, tasks).await;
            }
        }
        Ok(())
    }

    /// Keep the idle time of entries in hand low, so no other worker reclaims them.
    async fn heartbeat(self: Arc<Self>) {
        let every = heartbeat_every(&self.cfg);
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<(String, String)> = lock(&self.in_hand).iter().cloned().collect();
            for stream in self.streams() {
                let ids: Vec<&str> = held
                    .iter()
                    .filter(|(s, _)| s == stream)
                    .map(|(_, id)| id.as_str())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let mut c = self.conn.clone();
                match crate::stream::renew_held(&mut c, stream, MAPPERS_GROUP, &self.consumer, &ids)
                    .await
                {
                    Ok(lost) if !lost.is_empty() => {
                        // Reclaimed by another worker while this one was away: it is theirs now.
                        tracing::warn!(
                            stream,
                            entries = lost.len(),
                            "entries in hand were reclaimed by another worker; not renewing them"
                        );
                        let mut held = lock(&self.in_hand);
                        for id in lost {
                            held.remove(&(stream.to_string(), id));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                }
            }
        }
    }

    /// The upstream refused a connection: stop reading for `retry_base` (at most 5 s).
    fn hold_reading(&self) {
        let pause = self
            .cfg
            .retry_base
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        *lock(&self.paused_until) = Some(Instant::now() + pause);
    }

    fn gate(&self, source: &str) -> Arc<Gate> {
        let n = self.cfg.concurrency;
        lock(&self.gates)
            .entry(source.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    admit: Arc::new(Semaphore::new(n * ADMIT_FACTOR)),
                    run: Semaphore::new(n),
                    congested: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Start delivering one entry, or defer it when its source stays saturated. The entry is in hand
    /// (the caller put it there); it leaves once delivered, deferred or found not to be an event.
    async fn dispatch(
        self: &Arc<Self>,
        stream: &str,
        id: String,
        env: Result<Envelope, String>,
        tasks: &mut JoinSet<()>,
    ) {
        let env = match env {
            Ok(e) => e,
            Err(why) => {
                tracing::error!(stream, id, why, "entry is not an event; acknowledging it");
                let mut pipe = redis::pipe();
                add_ack(&mut pipe, &self.keys, stream, &id);
                let mut c = self.conn.clone();
                let _ = pipe.query_async::<()>(&mut c).await;
                lock(&self.in_hand).remove(&(stream.to_string(), id));
                return;
            }
        };
        let gate = self.gate(env.source());
        let admit = if gate.congested.load(Ordering::Relaxed) {
            gate.admit.clone().try_acquire_owned().ok()
        } else {
            tokio::time::timeout(PATIENCE, gate.admit.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        gate.congested.store(admit.is_none(), Ordering::Relaxed);
        let Some(admit) = admit else {
            self.defer(env, stream, &id).await;
            lock(&self.in_hand).remove(&(stream.to_string(), id));
            return;
        };
        let me = self.clone();
        let stream = stream.to_string();
        tasks.spawn(async move {
            let _admit = admit;
            let run = gate.run.acquire().await;
            // Shutting down: left pending, so another replica (or this one restarted) takes it.
            if !me.stopping.load(Ordering::Relaxed) {
                me.handle(env, &stream, &id).await;
            }
            drop(run);
            lock(&me.in_hand).remove(&(stream, id));
        });
    }

    /// Put an event back for later without counting a failure: its source is saturated.
    async fn defer(&self, mut env: Envelope, stream: &str, id: &str) {
        env.deferrals += 1;
        let delay = backoff(env.deferrals, self.cfg.retry_base, self.cfg.retry_max)
            .max(Duration::from_millis(100));
        let mut c = self.conn.clone();
        match park(
            &mut c,
            &self.keys,
            &env,
            now_ms() + delay.as_millis() as u64,
            stream,
            id,
            &[],
        )
        .await
        {
            Ok(()) => {
                metrics::counter!("hookgate_mapper_events_total", "source" => env.source().to_owned(), "outcome" => "deferred")
                    .increment(1)
            }
            Err(e) => {
                tracing::warn!(error = %e, id, "cannot defer; the entry stays pending for a reclaim")
            }
        }
    }

    /// Deliver one event and record the outcome (retried while Redis is away; if it stays away, the entry
    /// stays pending and is reclaimed later).
    async fn handle(&self, mut env: Envelope, stream: &str, id: &str) {
        // The actions this pass delivered: written to the actions stream with the outcome, whatever it is
        // (a later action's failure does not undo an earlier one's delivery).
        let mut sent = Vec::new();
        let verdict = self.deliver(&mut env, &mut sent).await;
        let now = now_ms();
        let (finish, outcome) = match verdict {
            Verdict::Done => (Finish::Ack, "delivered"),
            Verdict::Dead(reason, action) => {
                // Dead on its first failure is still a failure, with a time.
                env.first_failed_at.get_or_insert(now);
                (Finish::Bury(reason, action), "dead")
            }
            Verdict::Retry {
                error,
                status,
                after,
                action,
            } => {
                env.attempts += 1;
                env.last_error = error.clone();
                let first = *env.first_failed_at.get_or_insert(now);
                let give_up = self.cfg.give_up_after;
                let wait = backoff(env.attempts, self.cfg.retry_base, self.cfg.retry_max);
                match next_try(now, first, give_up, wait, after) {
                    Some(due) => {
                        tracing::debug!(source = %env.source(), id = %env.origin_id, attempt = env.attempts, due, error, "delivery will be retried");
                        metrics::counter!("hookgate_retries_total", "source" => env.source().to_owned())
                            .increment(1);
                        (Finish::Park(due), "retry")
                    }
                    None => {
                        // Before the deadline, the upstream asked to wait past it: not sent early.
                        let error = match after {
                            Some(a)
                                if Duration::from_millis(now.saturating_sub(first)) < give_up =>
                            {
                                format!(
                                    "{error}; its Retry-After ({}s) reaches past give_up_after",
                                    a.as_secs()
                                )
                            }
                            _ => error,
                        };
                        let reason = Reason::GaveUp {
                            detail: error,
                            status,
                        };
                        (Finish::Bury(reason, Some(action)), "dead")
                    }
                }
            }
        };
        if let Finish::Bury(reason, _) = &finish {
            tracing::warn!(source = %env.source(), id = %env.origin_id, reason = reason.code(), "event dead-lettered");
        }
        metrics::counter!("hookgate_mapper_events_total", "source" => env.source().to_owned(), "outcome" => outcome)
            .increment(1);
        let deadline = Instant::now() + FINISH_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.finish(&finish, &env, &sent, stream, id).await {
                Ok(()) => {
                    // An event that made no action (no rule matched) was not delivered anywhere: its
                    // time would only pull the latency down.
                    if matches!(finish, Finish::Ack) && !env.done.is_empty() {
                        crate::telemetry::delivered(env.source(), env.receipt.received_at);
                    }
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, id, "cannot record the outcome yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, id, "outcome not recorded; the entry stays pending for a reclaim");
                    return;
                }
            }
        }
    }

    async fn finish(
        &self,
        finish: &Finish,
        env: &Envelope,
        sent: &[MappedAction],
        stream: &str,
        id: &str,
    ) -> Result<(), RedisError> {
        let mut c = self.conn.clone();
        let delivered = self.delivered_records(env, sent);
        match finish {
            Finish::Park(due) => park(&mut c, &self.keys, env, *due, stream, id, &delivered).await,
            Finish::Bury(reason, action) => {
                let action = action.as_ref().map(|(r, i)| (r.as_str(), *i));
                bury(
                    &mut c, &self.keys, env, reason, action, stream, id, &delivered,
                )
                .await
            }
            Finish::Ack => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for cmd in delivered {
                    pipe.add_command(cmd).ignore();
                }
                add_ack(&mut pipe, &self.keys, stream, id);
                pipe.query_async::<()>(&mut c).await
            }
        }
    }

    /// With `deliver.actions_stream`, the XADDs recording the actions delivered in this pass, for the
    /// transaction that records its outcome.
    fn delivered_records(&self, env: &Envelope, sent: &[MappedAction]) -> Vec<redis::Cmd> {
        if !self.cfg.actions_stream {
            return Vec::new();
        }
        sent.iter()
            .map(|a| {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&self.keys.actions)
                    .arg("*")
                    .arg("source")
                    .arg(env.source())
                    .arg("event")
                    .arg(&env.origin_id)
                    .arg("rule")
                    .arg(&a.rule)
                    .arg("index")
                    .arg(a.index)
                    .arg("action")
                    .arg(serde_json::to_string(&a.action).unwrap_or_default());
                xadd
            })
            .collect()
    }

    /// Map with the source's current mapping and send every action not yet delivered, in order; the first
    /// failure ends the pass (later actions may depend on earlier ones, e.g. an event after its contact).
    async fn deliver(&self, env: &mut Envelope, delivered: &mut Vec<MappedAction>) -> Verdict {
        let (mapping, inbound) = match self.live.current().sources.get(env.source()) {
            Some(s) => (s.mapping.clone(), s.inbound.clone()),
            None => {
                crate::telemetry::mapping_error(env.source());
                return Verdict::Dead(
                    Reason::MappingError {
                        detail: format!("source `{}` is not loaded", env.source()),
                        rule: None,
                    },
                    None,
                );
            }
        };
        let mapped = self
            .event(env, &inbound.parse_json)
            .map(|ev| mapping.apply(&ev));
        let actions = match mapped {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                crate::telemetry::mapping_error(env.source());
                let detail = e.to_string();
                let rule = Some(e.rule);
                return Verdict::Dead(Reason::MappingError { detail, rule }, None);
            }
            Err(detail) => {
                crate::telemetry::mapping_error(env.source());
                let reason = Reason::MappingError { detail, rule: None };
                return Verdict::Dead(reason, None);
            }
        };
        // Occurrences of each (rule, action) in this pass: two identical actions of one rule are two.
        let mut seen: HashMap<(&str, String), usize> = HashMap::new();
        for a in &actions {
            let digest = digest(&a.action);
            let n = seen.entry((&a.rule, digest.clone())).or_default();
            *n += 1;
            let occurrence = *n;
            if env.is_done(&a.rule, a.index, &digest, occurrence) {
                continue;
            }
            let key = env.idempotency_key(&a.rule, &digest, occurrence);
            let sent = self.upstream.send(env, &key, &a.action).await;
            let kind = a.action.kind();
            let at = (a.rule.clone(), a.index);
            match sent {
                Sent::Delivered => {
                    metrics::counter!("hookgate_actions_total", "action" => kind, "outcome" => "delivered").increment(1);
                    env.done.push(Done::Sent(a.rule.clone(), a.index, digest));
                    delivered.push(a.clone());
                }
                Sent::Retry {
                    error,
                    status,
                    after,
                    unreachable,
                } => {
                    if unreachable {
                        self.hold_reading();
                    }
                    metrics::counter!("hookgate_actions_total", "action" => kind, "outcome" => "retry").increment(1);
                    return Verdict::Retry {
                        error,
                        status,
                        after,
                        action: at,
                    };
                }
                Sent::Unroutable(why) => {
                    metrics::counter!("hookgate_actions_total", "action" => kind, "outcome" => "unroutable").increment(1);
                    return Verdict::Dead(Reason::RouteError(why), Some(at));
                }
                Sent::Refused { status, body } => {
                    metrics::counter!("hookgate_actions_total", "action" => kind, "outcome" => "refused").increment(1);
                    return Verdict::Dead(Reason::UpstreamStatus { status, body }, Some(at));
                }
            }
        }
        Verdict::Done
    }

    /// The event as the mapping sees it: the body parsed per its content type (and the source's
    /// `parse_json:` members), the stored headers.
    fn event(&self, env: &Envelope, parse_json: &[JsonPath]) -> Result<Event, String> {
        if let Some(u) = &env.unreadable {
            return Err(u.why.clone());
        }
        let kind = BodyKind::of_stored(&env.receipt.content_type).map_err(|e| e.to_string())?;
        let body = payload::parse_with(kind, &env.body, self.max_json_depth, parse_json)
            .map_err(|e| e.to_string())?;
        let stored: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&env.receipt.headers).unwrap_or_default();
        let headers: Headers = stored
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v.to_string())))
            .collect();
        Ok(Event { body, headers })
    }
}
