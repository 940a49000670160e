//! The dispatcher: claims due deliveries per subscription, as many as the subscription's free slots
//! (and its rate limit) allow in this process, and sends each in its own task. A slow subscriber fills
//! its own slots only; the others keep being claimed. Outcomes are written atomically: delivered,
//! retried later (same entry, later score), or finished as failed with a dead letter.

use super::queue::{self, rf, Scripts, MAX_ATTEMPTS_KEPT};
use super::registry::{hf, Compiled, Registry};
use super::send::{Attempt, Sender};
use super::Keys;
use crate::clock::now_ms;
use crate::config::Outbound as Cfg;
use crate::deliver::next_try;
use crate::redis_conn::Conn;
use crate::stream::{event_fields, Store};
use rand::Rng;
use redis::RedisError;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// How long the dispatcher sleeps when it found nothing (a publish in this process wakes it sooner).
const IDLE: Duration = Duration::from_millis(100);
/// Most deliveries claimed per subscription per pass.
const CLAIM_MAX: usize = 64;

/// Due subscriptions read from the ready set per command.
const READY_PAGE: usize = 1000;

/// Due subscriptions looked at per pass; the rest wait for the next.
const READY_SCAN_MAX: usize = 20_000;
/// How long an outcome is retried while Redis is away before the lease is left to run out.
const FINISH_PATIENCE: Duration = Duration::from_secs(60);

/// Growing delays with jitter: `base × 2^(attempt-1)`, plus up to half again, at most `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let jitter = rand::rng().random_range(0.0..0.5);
    exp.saturating_add(exp.mul_f64(jitter)).min(max)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Per subscription, in this process.
#[derive(Default)]
struct Slot {
    in_flight: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

/// How a delivery ends this time.
enum Finish {
    Delivered,
    Retry { due: u64 },
    Failed { reason: &'static str },
}

pub struct Dispatcher {
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
    registry: Arc<Registry>,
    sender: Arc<Sender>,
    store: Store,
    cfg: Cfg,
    slots: Mutex<HashMap<String, Slot>>,
    in_hand: Mutex<HashSet<(String, String)>>,
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Conn,
        keys: Keys,
        registry: Arc<Registry>,
        sender: Arc<Sender>,
        store: Store,
        cfg: Cfg,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            conn,
            keys,
            scripts: Scripts::default(),
            registry,
            sender,
            store,
            cfg,
            slots: Mutex::default(),
            in_hand: Mutex::default(),
            wake,
        }
    }

    /// A crashed process's deliveries are claimed again once their lease is over; live ones renew.
    fn lease(&self) -> Duration {
        self.cfg.timeout * 2 + Duration::from_secs(10)
    }

    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, grace: Duration) {
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let mut tasks = JoinSet::new();
        let mut pause = IDLE;
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            match self.pass(&mut tasks).await {
                Ok(claimed) => {
                    pause = IDLE;
                    if claimed > 0 {
                        continue;
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(IDLE) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "outbound dispatcher cannot reach redis");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = tasks.len(),
                "shutdown grace over; unfinished deliveries are retried after their lease"
            );
            tasks.abort_all();
        }
        heartbeat.abort();
    }

    /// How many deliveries of `sub` this process may start now.
    fn room(&self, sub: Option<&Compiled>) -> usize {
        let Some(sub) = sub else {
            return CLAIM_MAX; // deleted: its deliveries are only closed
        };
        let mut slots = lock(&self.slots);
        let slot = slots.entry(sub.spec.id.clone()).or_default();
        let mut room = sub
            .concurrency(self.cfg.concurrency)
            .saturating_sub(slot.in_flight)
            .min(CLAIM_MAX);
        if let Some(rate) = sub.spec.rate_limit {
            let now = Instant::now();
            let burst = rate.max(1.0);
            match slot.refilled {
                None => slot.tokens = burst,
                Some(t) => {
                    slot.tokens = (slot.tokens + t.elapsed().as_secs_f64() * rate).min(burst)
                }
            }
            slot.refilled = Some(now);
            room = room.min(slot.tokens.floor() as usize);
        }
        room
    }

    fn take(&self, sub: &str, n: usize, rated: bool) {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(sub.to_string()).or_default();
        slot.in_flight += n;
        if rated {
            slot.tokens -= n as f64;
        }
    }

    fn release(&self, sub: &str) {
        if let Some(slot) = lock(&self.slots).get_mut(sub) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        self.wake.notify_one();
    }

    /// One look at every ready subscription; how many deliveries were started.
    async fn pass(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Result<usize, RedisError> {
        let mut snap = self.registry.loaded_snapshot().await?;
        let mut c = self.conn.clone();
        let now = now_ms();
        // Every due subscription is looked at, page by page: the soonest due may all be without room
        // (rate-limited, or their slots full of slow sends), and must not hide the others.
        let mut wants = Vec::new();
        let (mut offset, mut refreshed) = (0, false);
        while offset < READY_SCAN_MAX {
            let page = queue::ready(&mut c, &self.keys, now, offset, READY_PAGE).await?;
            let unknown =
                |id: &String| !snap.by_id.contains_key(id) && !snap.unusable.contains_key(id);
            if !refreshed && page.iter().any(unknown) {
                // Created a moment ago in another process, or deleted: look again before deciding it is gone.
                self.registry.refresh(true).await?;
                snap = self.registry.snapshot().await;
                refreshed = true;
            }
            for sub_id in &page {
                // Unusable (a reference that no longer resolves): its deliveries wait for it to be fixed.
                if snap.unusable.contains_key(sub_id) {
                    continue;
                }
                let n = self.room(snap.by_id.get(sub_id).map(|s| &**s));
                if n > 0 {
                    wants.push((sub_id.clone(), n));
                }
            }
            if page.len() < READY_PAGE {
                break;
            }
            offset += page.len();
        }
        if wants.is_empty() {
            return Ok(0);
        }
        let lease_until = now + self.lease().as_millis() as u64;
        // A page of subscriptions per script call: one call over all of them would hold Redis (and the
        // receive path) for as long as it takes to lease and read every delivery they have room for.
        let mut claimed = Vec::new();
        for chunk in wants.chunks(READY_PAGE) {
            match queue::claim(&mut c, &self.scripts, &self.keys, chunk, now, lease_until).await {
                Ok(got) => claimed.extend(got),
                Err(e) if claimed.is_empty() => return Err(e),
                // What was leased already is started; the rest waits for the next pass.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease more deliveries this pass");
                    break;
                }
            }
        }
        let started = claimed.len();
        for (sub_id, id, rec) in claimed {
            let sub = snap.by_id.get(&sub_id).cloned();
            let rated = sub.as_ref().is_some_and(|s| s.spec.rate_limit.is_some());
            self.take(&sub_id, 1, rated);
            lock(&self.in_hand).insert((sub_id.clone(), id.clone()));
            let me = self.clone();
            tasks.spawn(async move {
                me.handle(sub.as_deref(), &sub_id, &id, rec).await;
                lock(&me.in_hand).remove(&(sub_id.clone(), id));
                me.release(&sub_id);
            });
        }
        Ok(started)
    }

    /// Keep the leases of deliveries in hand from running out, however slow the subscriber.
    async fn heartbeat(self: Arc<Self>) {
        let every = self.lease() / 3;
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<(String, String)> = lock(&self.in_hand).iter().cloned().collect();
            if held.is_empty() {
                continue;
            }
            let until = now_ms() + self.lease().as_millis() as u64;
            let mut pipe = redis::pipe();
            for (sub, id) in &held {
                pipe.cmd("ZADD")
                    .arg(self.keys.queue(sub))
                    .arg("XX")
                    .arg(until)
                    .arg(id)
                    .ignore();
            }
            let mut c = self.conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                tracing::warn!(error = %e, "cannot renew delivery leases");
            }
        }
    }

    async fn handle(
        &self,
        sub: Option<&Compiled>,
        sub_id: &str,
        id: &str,
        rec: HashMap<String, String>,
    ) {
        if rec.is_empty() {
            // The record expired or was removed: nothing left to send.
            let mut c = self.conn.clone();
            let _: Result<(), _> = redis::cmd("ZREM")
                .arg(self.keys.queue(sub_id))
                .arg(id)
                .query_async(&mut c)
                .await;
            return;
        }
        let (finish, attempt) = match sub {
            None => (
                Finish::Failed {
                    reason: "subscription_deleted",
                },
                None,
            ),
            Some(s) if !s.active() => (
                Finish::Failed {
                    reason: "subscription_disabled",
                },
                None,
            ),
            Some(s) => {
                let doc: Value = rec
                    .get(rf::EVENT)
                    .and_then(|e| serde_json::from_str(e).ok())
                    .unwrap_or(Value::Null);
                let a = self.sender.send(s, id, &doc).await;
                // Backoff and Retry-After count from the answer (or the timeout), not the start.
                (self.judge(s, &rec, &a, now_ms()).await, Some(a))
            }
        };
        let outcome = match &finish {
            Finish::Delivered => "delivered",
            Finish::Retry { .. } => "retry",
            Finish::Failed { .. } => "failed",
        };
        metrics::counter!("hookgate_outbound_deliveries_total", "outcome" => outcome).increment(1);
        if let Some(a) = &attempt {
            metrics::histogram!("hookgate_outbound_latency_seconds")
                .record(a.latency_ms as f64 / 1000.0);
        }
        let deadline = Instant::now() + FINISH_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .finish(&finish, sub_id, id, &rec, attempt.as_ref())
                .await
            {
                Ok(failing_since) => {
                    if let (Some(since), Some(s)) = (failing_since, sub) {
                        self.maybe_disable(s, since).await;
                    }
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, id, "cannot record the delivery outcome yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, id, "delivery outcome not recorded; it is retried after its lease");
                    return;
                }
            }
        }
    }

    /// Decide what an attempt means for the delivery.
    async fn judge(
        &self,
        sub: &Compiled,
        rec: &HashMap<String, String>,
        a: &Attempt,
        now: u64,
    ) -> Finish {
        if a.ok() {
            return Finish::Delivered;
        }
        if a.denied {
            return Finish::Failed {
                reason: "egress_denied",
            };
        }
        if a.unrenderable {
            return Finish::Failed {
                reason: "template_error",
            };
        }
        if a.status == Some(410) {
            match self
                .registry
                .disable(&sub.spec.id, "gone: the subscriber answered 410", now)
                .await
            {
                Ok(true) => self.announce(sub, "gone").await,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot disable a subscription after 410"),
            }
            return Finish::Failed { reason: "gone" };
        }
        let attempts: u32 = rec
            .get(rf::ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
            + 1;
        let first: u64 = rec
            .get(rf::FIRST_FAILED_AT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(now);
        match next_try(
            now,
            first,
            self.cfg.give_up_after,
            backoff(attempts, self.cfg.retry_base, self.cfg.retry_max),
            a.retry_after,
        ) {
            Some(due) => Finish::Retry { due },
            None => Finish::Failed {
                reason: "exhausted",
            },
        }
    }

    /// Write the outcome; on a failed attempt, returns since when the subscription has been failing.
    async fn finish(
        &self,
        finish: &Finish,
        sub_id: &str,
        id: &str,
        rec: &HashMap<String, String>,
        attempt: Option<&Attempt>,
    ) -> Result<Option<u64>, RedisError> {
        let now = now_ms();
        let keep = self.cfg.retention.as_millis() as u64;
        let record = self.keys.record(id);
        let attempts_key = self.keys.attempts(id);
        let health = self.keys.health(sub_id);
        let queue = self.keys.queue(sub_id);
        let tries: u64 = rec
            .get(rf::ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
            + u64::from(attempt.is_some());
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(a) = attempt {
            pipe.cmd("RPUSH")
                .arg(&attempts_key)
                .arg(a.to_json().to_string())
                .ignore();
            pipe.cmd("LTRIM")
                .arg(&attempts_key)
                .arg(-(MAX_ATTEMPTS_KEPT as i64))
                .arg(-1)
                .ignore();
            pipe.cmd("HSET")
                .arg(&record)
                .arg(rf::ATTEMPTS)
                .arg(tries)
                .arg(rf::LAST_STATUS)
                .arg(a.status.map_or(String::new(), |s| s.to_string()))
                .arg(rf::LAST_ERROR)
                .arg(a.error.as_deref().unwrap_or(""))
                .ignore();
        }
        let failed_attempt = attempt.is_some_and(|a| !a.ok() && !a.denied && !a.unrenderable);
        match finish {
            Finish::Delivered => {
                pipe.cmd("ZREM").arg(&queue).arg(id).ignore();
                pipe.cmd("HSET")
                    .arg(&record)
                    .arg(rf::STATUS)
                    .arg("delivered")
                    .arg(rf::FINISHED_AT)
                    .arg(now)
                    .ignore();
                pipe.cmd("HDEL")
                    .arg(&health)
                    .arg(hf::FAILING_SINCE)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(&health)
                    .arg(hf::LAST_SUCCESS_AT)
                    .arg(now)
                    .ignore();
            }
            Finish::Retry { due } => {
                pipe.cmd("ZADD").arg(&queue).arg(*due).arg(id).ignore();
                pipe.cmd("ZADD")
                    .arg(&self.keys.ready)
                    .arg("LT")
                    .arg(*due)
                    .arg(sub_id)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(&record)
                    .arg(rf::NEXT_ATTEMPT_AT)
                    .arg(*due)
                    .ignore();
                pipe.cmd("HSETNX")
                    .arg(&record)
                    .arg(rf::FIRST_FAILED_AT)
                    .arg(now)
                    .ignore();
            }
            Finish::Failed { reason } => {
                pipe.cmd("ZREM").arg(&queue).arg(id).ignore();
                pipe.cmd("HSET")
                    .arg(&record)
                    .arg(rf::STATUS)
                    .arg("failed")
                    .arg(rf::REASON)
                    .arg(*reason)
                    .arg(rf::FINISHED_AT)
                    .arg(now)
                    .ignore();
                let detail = attempt
                    .and_then(|a| a.error.clone())
                    .unwrap_or_else(|| reason.to_string());
                let get = |k: &str| rec.get(k).cloned().unwrap_or_default();
                pipe.cmd("XADD")
                    .arg(&self.keys.dead)
                    .arg("*")
                    .arg("delivery")
                    .arg(id)
                    .arg("subscription")
                    .arg(sub_id)
                    .arg("account")
                    .arg(get(rf::ACCOUNT))
                    .arg("type")
                    .arg(get(rf::TYPE))
                    .arg("event")
                    .arg(get(rf::EVENT))
                    .arg("created_at")
                    .arg(get(rf::CREATED_AT))
                    .arg("replays")
                    .arg(rec.get(rf::REPLAYS).cloned().unwrap_or_else(|| "0".into()))
                    .arg("attempts")
                    .arg(tries)
                    .arg("reason")
                    .arg(*reason)
                    .arg("detail")
                    .arg(detail)
                    .arg("failed_at")
                    .arg(now)
                    .ignore();
                metrics::counter!("hookgate_outbound_dead_letters_total", "reason" => *reason)
                    .increment(1);
            }
        }
        if !matches!(finish, Finish::Retry { .. }) {
            pipe.cmd("PEXPIRE").arg(&record).arg(keep).ignore();
            pipe.cmd("PEXPIRE").arg(&attempts_key).arg(keep).ignore();
        }
        if failed_attempt {
            pipe.cmd("HSETNX")
                .arg(&health)
                .arg(hf::FAILING_SINCE)
                .arg(now)
                .ignore();
            pipe.cmd("HGET").arg(&health).arg(hf::FAILING_SINCE);
            let mut c = self.conn.clone();
            let (since,): (Option<u64>,) = pipe.query_async(&mut c).await?;
            Ok(since)
        } else {
            let mut c = self.conn.clone();
            pipe.query_async::<()>(&mut c).await?;
            Ok(None)
        }
    }

    /// Disable a subscription that has failed for `outbound.disable_after` without one success.
    async fn maybe_disable(&self, sub: &Compiled, failing_since: u64) {
        let now = now_ms();
        if Duration::from_millis(now.saturating_sub(failing_since)) < self.cfg.disable_after {
            return;
        }
        let reason = format!(
            "failing since {} without a success",
            crate::clock::rfc3339_ms(failing_since)
        );
        match self.registry.disable(&sub.spec.id, &reason, now).await {
            Ok(true) => self.announce(sub, &reason).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot disable a failing subscription"),
        }
    }

    /// Publish `subscription.disabled` to the subscription's account.
    async fn announce(&self, sub: &Compiled, reason: &str) {
        tracing::warn!(subscription = %sub.spec.id, reason, "subscription disabled");
        metrics::counter!("hookgate_outbound_subscriptions_disabled_total").increment(1);
        let data = json!({
            "subscription": sub.spec.id,
            "name": sub.spec.name,
            "url": sub.spec.url,
            "reason": reason,
        });
        let mut fields = vec![
            (event_fields::TYPE, "subscription.disabled".to_string()),
            (event_fields::DATA, data.to_string()),
            (event_fields::PUBLISHED_AT, now_ms().to_string()),
        ];
        if let Some(a) = &sub.spec.account {
            fields.push((event_fields::ACCOUNT, a.clone()));
        }
        if let Err(e) = self
            .store
            .store_event(None, None, &fields, self.cfg.dedup_ttl)
            .await
        {
            tracing::warn!(error = %e, "cannot publish subscription.disabled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_under_the_cap() {
        let (base, max) = (Duration::from_secs(60), Duration::from_secs(8 * 3600));
        for attempt in 1..40u32 {
            let d = backoff(attempt, base, max);
            let floor = base.saturating_mul(1 << (attempt - 1).min(30)).min(max);
            assert!(d >= floor && d <= max, "{attempt}: {d:?}");
            assert!(d <= floor.mul_f64(1.5));
        }
        let first = backoff(1, base, max);
        assert!(first >= Duration::from_secs(60) && first <= Duration::from_secs(90));
    }
}
