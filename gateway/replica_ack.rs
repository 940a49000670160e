//! Answering 2xx only for what replicas have (`redis.min_replica_acks`), or what is on disk
//! (`redis.fsync_acks`). Redis replicates asynchronously: without this, an event the master took and
//! acknowledged, but had not yet sent to a replica, is lost when that replica is promoted. And with
//! `appendfsync everysec` the append-only file reaches the disk once a second: a power cut loses what
//! was acknowledged since. With them, a sender is answered only once that many replicas hold its event
//! (and, with `fsync_acks`, once the master and those replicas have it in their append-only files on
//! disk), and otherwise 503, so it sends again (with dedup, the redelivery is answered as a duplicate).
//!
//! Redis's `WAIT` (and `WAITAOF`, Redis 7.2) counts the acknowledgements of *the calling connection's*
//! last write, so it cannot run on the shared connection (it would block every command behind it) and
//! means nothing on a connection that wrote nothing. So acknowledgements are taken in rounds, on a
//! connection of their own: a round writes a marker key on the family's master and WAITs for it.
//! Replication and the append-only file keep the master's order, so a round begun after an event's
//! store returned covers that event, and every other event stored before it began: one WAIT per round,
//! however many requests wait on it.

use crate::redis_conn::{Conn, Redis};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often an idle round task looks whether anybody still holds its handle.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What a stored event waits for before it is answered 2xx (`redis.min_replica_acks`,
/// `redis.fsync_acks`, `redis.replica_ack_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckPolicy {
    /// Replicas that must hold the event (on disk, with `fsync`).
    pub replicas: u32,
    /// The master's append-only file must have the event on disk, and so must the replicas' (`WAITAOF`).
    pub fsync: bool,
    /// How long a request waits for its round.
    pub timeout: Duration,
}

impl AckPolicy {
    /// The policy the configuration asks for, if it asks a store to wait at all.
    pub fn from_config(redis: &crate::config::RedisConfig) -> Option<AckPolicy> {
        redis.waits_for_acks().then_some(AckPolicy {
            replicas: redis.min_replica_acks,
            fsync: redis.fsync_acks,
            timeout: redis.replica_ack_timeout,
        })
    }
}

/// Rounds of acknowledgement for one key family's master; cloned into every store.
#[derive(Clone)]
pub struct ReplicaAck {
    shared: Arc<Shared>,
}

struct Shared {
    /// The number of the last round begun. A round is numbered before its marker is sent.
    begun: AtomicU64,
    /// The highest round a waiter needs.
    wanted: AtomicU64,
    /// A waiter needs a round.
    wake: Notify,
    /// The last round that ended, and how.
    ended: watch::Sender<Ended>,
    policy: AckPolicy,
}

#[derive(Clone, Debug)]
struct Ended {
    round: u64,
    outcome: Result<(), String>,
}

/// Why an acknowledgement was not had: the event is on the master, but not known to be on enough replicas
/// (or on disk).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// The round that covered the event ended short: too few replicas, no fsync, or Redis did not answer.
    #[error("{0}")]
    Short(String),
    #[error("no round of acknowledgements covered the event within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl ReplicaAck {
    /// Start the rounds for the family whose keys begin with `prefix` (`family` names it in metrics):
    /// the acknowledgements of `policy`, each waiter bounded by its timeout. A round WAITs half of it, so
    /// a waiter that arrives during one still sees its own end in time. `response_timeout` is added to
    /// the round connection's own timeout, so a WAIT that uses its whole time still gets its answer.
    pub fn start(
        redis: &Redis,
        prefix: &str,
        family: &'static str,
        policy: AckPolicy,
        response_timeout: Duration,
    ) -> Self {
        let timeout = policy.timeout;
        let (ended, _) = watch::channel(Ended {
            round: 0,
            outcome: Ok(()),
        });
        let shared = Arc::new(Shared {
            begun: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            wake: Notify::new(),
            ended,
            policy,
        });
        let wait = (timeout / 2).max(Duration::from_millis(1));
        let rounds = Rounds {
            redis: redis.clone(),
            marker: crate::stream::keys::replica_ack(prefix),
            family,
            wait,
            read_timeout: wait.saturating_add(response_timeout),
            conn: None,
        };
        tokio::spawn(rounds.run(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Wait until a round begun after now has ended: `Ok` when it had the replicas. Call it after the write
    /// to cover has been answered. At most `timeout`.
    pub async fn replicated(&self) -> Result<(), AckError> {
        let s = &self.shared;
        // A round numbered after this load was begun after it, so after the caller's write.
        let need = s.begun.load(SeqCst) + 1;
        s.wanted.fetch_max(need, SeqCst);
        s.wake.notify_one();
        let mut ended = s.ended.subscribe();
        let covering = async {
            let e = ended.wait_for(|e| e.round >= need).await?;
            Ok::<_, watch::error::RecvError>(e.outcome.clone())
        };
        match tokio::time::timeout(s.policy.timeout, covering).await {
            // The latest round decides: a later one that fell short means the replicas are not there now.
            Ok(Ok(outcome)) => outcome.map_err(AckError::Short),
            // The sender lives in `Shared`, which this handle holds.
            Ok(Err(_)) => Err(AckError::Short("the acknowledgement rounds stopped".into())),
            Err(_) => Err(AckError::Timeout(s.policy.timeout)),
        }
    }
}

/// The task that runs the rounds, one at a time, only while somebody waits.
struct Rounds {
    redis: Redis,
    marker: String,
    family: &'static str,
    /// What a round WAITs at most.
    wait: Duration,
    read_timeout: Duration,
    /// Dropped after an error and made again for the next round.
    conn: Option<Conn>,
}

impl Rounds {
    async fn run(mut self, shared: Weak<Shared>) {
        // Connected before the first request needs it: connecting can take longer than a waiter waits
        // (a cluster client greets every node), and a failure here is retried at the first round.
        let _ = self.connect().await;
        // A Redis that can never acknowledge an fsync (before 7.2, or without its append-only file) is
        // said at start rather than first by a sender's 503. A quick probe, which publishes nothing: a
        // whole round could hold up the first requests for half their timeout.
        if shared.upgrade().is_some_and(|s| s.policy.fsync) {
            if let Err(e @ RoundError::Unmeetable(_)) = self.probe().await {
                tracing::error!(family = self.family, error = %e, "redis.fsync_acks cannot be met: every webhook and publish will be answered 503");
            }
        }
        let mut finished = 0;
        let mut logged: Option<(&'static str, Instant)> = None;
        loop {
            let Some(s) = shared.upgrade() else { return };
            if s.wanted.load(SeqCst) <= finished {
                // A wake sent since the load above is kept as a permit, so none is missed.
                let _ = tokio::time::timeout(IDLE_CHECK, s.wake.notified()).await;
                continue;
            }
            let round = s.begun.fetch_add(1, SeqCst) + 1;
            let outcome = self.round(s.policy).await;
            let label = match &outcome {
                Ok(()) => "acknowledged",
                Err(RoundError::Short(_)) => "short",
                Err(RoundError::Unmeetable(_)) => "misconfigured",
            };
            metrics::counter!("hookgate_replica_ack_rounds_total", "family" => self.family, "outcome" => label)
                .increment(1);
            // Logged when the outcome changes, and every 10 s while it fails: under traffic rounds run
            // hundreds of times a second, and the counter has every one.
            let due = logged.is_none_or(|(last, at)| last != label || at.elapsed() >= LOG_EVERY);
            match &outcome {
                Err(e @ RoundError::Unmeetable(_)) if due => {
                    tracing::error!(family = self.family, error = %e, "acknowledgement rounds cannot succeed; their events are answered 503")
                }
                Err(e) if due => {
                    tracing::warn!(family = self.family, error = %e, "acknowledgement round fell short; its events are answered 503")
                }
                Ok(()) if logged.is_some_and(|(last, _)| last != label) => {
                    tracing::info!(family = self.family, "acknowledgement rounds succeed again")
                }
                _ => {}
            }
            if due || outcome.is_ok() {
                logged = Some((label, Instant::now()));
            }
            finished = round;
            let outcome = outcome.map_err(|e| e.to_string());
            s.ended.send_replace(Ended { round, outcome });
        }
    }

    /// The rounds' connection, made when there is none.
    async fn connect(&mut self) -> Result<&mut Conn, String> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => (self.redis.blocking_reader(self.read_timeout).await)
                .map_err(|e| format!("redis: {e}"))?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Write the marker and WAIT (`WAITAOF 1 n` with `fsync`) for it, on the marker's master.
    ///
    /// `WAIT` goes in one pipeline with the write: if the connection is made again and the pipeline
    /// resent, both go together. `WAITAOF` goes only once the write is answered: sent together, it is
    /// read before the write reaches the append-only file, and Redis then fsyncs it only at its next
    /// timer tick or once-a-second fsync (70 ms to a second, measured on Valkey 8.0 with `everysec`),
    /// where a `WAITAOF` that finds the write already in the file gets it fsynced at once. Sent apart,
    /// the two must be on one connection: a `WAITAOF` on a connection that wrote nothing (a cluster
    /// client resends a pipeline on a new connection after an error) answers at once. So each half
    /// carries `CLIENT ID`, and the round counts only when both name the same connection.
    async fn round(&mut self, policy: AckPolicy) -> Result<(), RoundError> {
        let marker = self.marker.clone();
        let ms = millis(self.wait);
        let mut write = redis::pipe();
        write.cmd("INCR").arg(&marker);
        let mut ack = redis::pipe();
        if policy.fsync {
            write.cmd("CLIENT").arg("ID");
            ack.cmd("CLIENT").arg("ID");
            ack.cmd("WAITAOF").arg(1).arg(policy.replicas).arg(ms);
        } else {
            write.cmd("WAIT").arg(policy.replicas).arg(ms);
        }
        let replies = self.send(&marker, &write, &ack).await?;
        judge(&replies, policy, self.wait)
    }

    /// `WAITAOF 1 0 1` after a marker write: answered at once, and refused by a Redis that can never
    /// acknowledge an fsync.
    async fn probe(&mut self) -> Result<(), RoundError> {
        let marker = self.marker.clone();
        let mut write = redis::pipe();
        write.cmd("INCR").arg(&marker);
        let mut ack = redis::pipe();
        ack.cmd("WAITAOF").arg(1).arg(0).arg(1);
        let replies = self.send(&marker, &write, &ack).await?;
        match replies.last() {
            Some(redis::Value::ServerError(e)) => Err(refused_wait(e, true)),
            _ => Ok(()),
        }
    }

    /// `write`, then `ack` (when not empty) once `write` is answered and its first command taken, on the
    /// marker's master; every reply. A transport error drops the connection.
    async fn send(
        &mut self,
        marker: &str,
        write: &redis::Pipeline,
        ack: &redis::Pipeline,
    ) -> Result<Vec<redis::Value>, RoundError> {
        let conn = self.connect().await.map_err(RoundError::Short)?;
        let sent = async {
            let mut replies = conn.pipeline_on_master_of(marker, write).await?;
            let taken = !matches!(replies.first(), Some(redis::Value::ServerError(_)));
            if taken && !ack.is_empty() {
                replies.extend(conn.pipeline_on_master_of(marker, ack).await?);
            }
            Ok::<_, redis::RedisError>(replies)
        };
        match sent.await {
            Ok(replies) => Ok(replies),
            Err(e) => {
                self.conn = None;
                Err(RoundError::Short(format!("redis: {e}")))
            }
        }
    }
}

/// How often a failing round is logged again while its outcome stays the same.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A WAIT timeout in milliseconds: at least 1, since WAIT 0 waits for ever.
fn millis(wait: Duration) -> u64 {
    wait.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// What a round's replies say: `[INCR, WAIT]`, or `[INCR, CLIENT ID, CLIENT ID, WAITAOF]` with `fsync`
/// (`[INCR]` alone when the marker write was refused).
fn judge(replies: &[redis::Value], policy: AckPolicy, wait: Duration) -> Result<(), RoundError> {
    use redis::Value;
    // A refused marker write (a read-only replica after a failover, a full Redis) is an answer too.
    if let Some(Value::ServerError(e)) = replies.first() {
        return Err(RoundError::Short(format!(
            "redis refused the marker write: {}",
            server_text(e)
        )));
    }
    let within = humantime::format_duration(wait);
    let replicas = policy.replicas;
    let last = replies.last();
    if let Some(Value::ServerError(e)) = last {
        return Err(refused_wait(e, policy.fsync));
    }
    if !policy.fsync {
        return match last.map(redis::from_redis_value_ref::<i64>) {
            Some(Ok(n)) if n >= i64::from(replicas) => Ok(()),
            Some(Ok(n)) => Err(RoundError::Short(format!(
                "{n} of {replicas} replicas acknowledged within {within}"
            ))),
            _ => Err(RoundError::Short(format!("WAIT answered {last:?}"))),
        };
    }
    let id = |i: usize| {
        replies
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
    };
    if replies.len() != 4 || id(1).is_none() || id(1) != id(2) {
        return Err(RoundError::Short(
            "the marker write and WAITAOF went over different connections (Redis was reconnected): nothing is known to be fsynced".into(),
        ));
    }
    match last.map(redis::from_redis_value_ref::<(i64, i64)>) {
        Some(Ok((local, n))) if local >= 1 && n >= i64::from(replicas) => Ok(()),
        Some(Ok((0, _))) => Err(RoundError::Short(format!(
            "the master's append-only file was not fsynced within {within} (with appendfsync no, it never is)"
        ))),
        Some(Ok((_, n))) => Err(RoundError::Short(format!(
            "{n} of {replicas} replicas fsynced their append-only file within {within} (with appendfsync no on a replica, it never does)"
        ))),
        _ => Err(RoundError::Short(format!("WAITAOF answered {last:?}"))),
    }
}

/// Why a round did not have its acknowledgements.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum RoundError {
    /// Not now: too few replicas, Redis unreachable, a slow disk. A later round may succeed.
    #[error("{0}")]
    Short(String),
    /// Never, with this Redis as it is set up: it has no `WAITAOF`, no append-only file to fsync, or its
    /// user may not run it.
    #[error("{0}")]
    Unmeetable(String),
}

/// A server error as Redis wrote it: its code and text.
fn server_text(error: &redis::ServerError) -> String {
    match error.details() {
        Some(details) => format!("{} {details}", error.code()),
        None => error.code().to_owned(),
    }
}

/// Redis refused the WAIT itself: say what to change when it is the setup, not the moment. The server's
/// own words are kept in the message, so a reply this does not know is still readable.
fn refused_wait(error: &redis::ServerError, fsync: bool) -> RoundError {
    let text = server_text(error);
    let words = text.to_ascii_lowercase();
    let command = if fsync { "WAITAOF" } else { "WAIT" };
    let fix = if error.code() == "NOPERM" {
        "the Redis user may not run it (allow the @connection category)"
    } else if fsync && words.contains("unknown command") {
        "this Redis has no WAITAOF (Redis 7.2 or later, and Valkey, have it): upgrade Redis or turn redis.fsync_acks off"
    } else if fsync && words.contains("appendonly") {
        "the master's append-only file is off (appendonly no), so nothing is ever fsynced: set appendonly yes, or turn redis.fsync_acks off"
    } else {
        return RoundError::Short(format!("redis refused {command}: {text}"));
    };
    RoundError::Unmeetable(format!("redis refused {command} ({text}): {fix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn error(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn policy(replicas: u32, fsync: bool) -> AckPolicy {
        AckPolicy {
            replicas,
            fsync,
            timeout: Duration::from_secs(1),
        }
    }

    fn judged(replies: &[Value], policy: AckPolicy) -> Result<(), RoundError> {
        judge(replies, policy, Duration::from_millis(500))
    }

    fn fsync_replies(first_id: i64, second_id: i64, waitaof: Value) -> Vec<Value> {
        vec![
            Value::Int(7),
            Value::Int(first_id),
            Value::Int(second_id),
            waitaof,
        ]
    }

    fn waitaof(local: i64, replicas: i64) -> Value {
        Value::Array(vec![Value::Int(local), Value::Int(replicas)])
    }

    #[test]
    fn wait_counts_replicas() {
        let p = policy(2, false);
        assert_eq!(judged(&[Value::Int(1), Value::Int(2)], p), Ok(()));
        assert!(matches!(
            judged(&[Value::Int(1), Value::Int(1)], p),
            Err(RoundError::Short(m)) if m == "1 of 2 replicas acknowledged within 500ms"
        ));
        assert!(matches!(
            judged(&[error("READONLY You can't write against a read only replica.")], p),
            Err(RoundError::Short(m)) if m.starts_with("redis refused the marker write: READONLY")
        ));
    }

    #[test]
    fn waitaof_needs_the_local_fsync_the_replicas_and_one_connection() {
        let p = policy(1, true);
        assert_eq!(judged(&fsync_replies(5, 5, waitaof(1, 1)), p), Ok(()));
        assert_eq!(judged(&fsync_replies(5, 5, waitaof(1, 3)), p), Ok(()));
        assert!(matches!(
            judged(&fsync_replies(5, 5, waitaof(0, 1)), p),
            Err(RoundError::Short(m)) if m.starts_with("the master's append-only file was not fsynced")
        ));
        assert!(matches!(
            judged(&fsync_replies(5, 5, waitaof(1, 0)), p),
            Err(RoundError::Short(m)) if m.starts_with("0 of 1 replicas fsynced")
        ));
        // Another connection waited than the one that wrote: its answer says nothing of the marker.
        assert!(matches!(
            judged(&fsync_replies(5, 6, waitaof(1, 1)), p),
            Err(RoundError::Short(m)) if m.contains("different connections")
        ));
        assert!(matches!(
            judged(&[Value::Int(7), Value::Int(5), waitaof(1, 1)], p),
            Err(RoundError::Short(_))
        ));
        assert!(matches!(
            judged(&fsync_replies(5, 5, Value::Int(1)), p),
            Err(RoundError::Short(m)) if m.starts_with("WAITAOF answered")
        ));
    }

    /// The replies Redis 7.0 and Valkey 8.0 give (as measured): what cannot change by waiting is
    /// `Unmeetable`, with the server's words kept; anything else is `Short`.
    #[test]
    fn a_redis_that_can_never_fsync_acknowledge_is_told_apart() {
        let p = policy(0, true);
        let unknown =
            error("ERR unknown command 'WAITAOF', with args beginning with: '1' '0' '100' ");
        let off =
            error("ERR WAITAOF cannot be used when numlocal is set but appendonly is disabled.");
        let denied = error("NOPERM User hookgate has no permissions to run the 'waitaof' command");
        for (reply, words) in [
            (unknown, "has no WAITAOF"),
            (off, "append-only file is off"),
            (denied, "may not run it"),
        ] {
            match judged(&fsync_replies(5, 5, reply), p) {
                Err(RoundError::Unmeetable(m)) => {
                    assert!(
                        m.contains(words) && m.starts_with("redis refused WAITAOF ("),
                        "{m}"
                    )
                }
                other => panic!("{words}: {other:?}"),
            }
        }
        assert!(matches!(
            judged(&fsync_replies(5, 5, error("LOADING Redis is loading the dataset in memory")), p),
            Err(RoundError::Short(m)) if m == "redis refused WAITAOF: LOADING Redis is loading the dataset in memory"
        ));
        // WAIT's own refusals are never about the append-only file.
        assert!(matches!(
            judged(
                &[Value::Int(1), error("ERR appendonly whatever")],
                policy(1, false)
            ),
            Err(RoundError::Short(_))
        ));
    }
}
