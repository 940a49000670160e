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
use std::time::Duration;
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
        (redis.min_replica_acks > 0 || redis.fsync_acks).then_some(AckPolicy {
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
        // A Redis that can never acknowledge an fsync (before 7.2, or without its append-only file)
        // is said at start, once, rather than first by a sender's 503.
        if let Some(s) = shared.upgrade().filter(|s| s.policy.fsync) {
            if let Err(e @ RoundError::Unmeetable(_)) = self.round(s.policy).await {
                tracing::error!(family = self.family, error = %e, "redis.fsync_acks cannot be met: every webhook and publish will be answered 503");
            }
        }
        let mut finished = 0;
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
            match &outcome {
                Err(e @ RoundError::Unmeetable(_)) => {
                    tracing::error!(family = self.family, error = %e, "acknowledgement round cannot succeed; its events are answered 503")
                }
                Err(e) => {
                    tracing::warn!(family = self.family, error = %e, "acknowledgement round fell short; its events are answered 503")
                }
                Ok(()) => {}
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
    /// `WAIT` goes in one pipeline with the write. `WAITAOF` goes only once the write is answered: sent
    /// together, it is read before the write reaches the append-only file, and Redis then fsyncs it only
    /// at its next timer tick or once-a-second fsync (70 ms to a second, measured on Valkey 8.0 with
    /// `everysec`), where a `WAITAOF` that finds the write already in the file gets it fsynced at once.
    async fn round(&mut self, policy: AckPolicy) -> Result<(), RoundError> {
        let (marker, wait) = (self.marker.clone(), self.wait);
        // WAIT 0 would wait for ever.
        let ms = wait.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut write = redis::pipe();
        write.cmd("INCR").arg(&marker);
        let mut ack = redis::pipe();
        if policy.fsync {
            ack.cmd("WAITAOF").arg(1).arg(policy.replicas).arg(ms);
        } else {
            write.cmd("WAIT").arg(policy.replicas).arg(ms);
        }
        let conn = self.connect().await.map_err(RoundError::Short)?;
        let sent = async {
            let mut replies = conn.pipeline_on_master_of(&marker, &write).await?;
            if !ack.is_empty() && !matches!(replies.first(), Some(redis::Value::ServerError(_))) {
                replies.extend(conn.pipeline_on_master_of(&marker, &ack).await?);
            }
            Ok::<_, redis::RedisError>(replies)
        };
        let replies = match sent.await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(RoundError::Short(format!("redis: {e}")));
            }
        };
        // A refused marker write (a read-only replica after a failover, a full Redis) is an answer too.
        if let Some(redis::Value::ServerError(e)) = replies.first() {
            return Err(RoundError::Short(format!(
                "redis refused the marker write: {e:?}"
            )));
        }
        let within = humantime::format_duration(wait);
        let replicas = policy.replicas;
        match replies.last() {
            Some(redis::Value::ServerError(e)) => Err(refused_wait(e, policy)),
            Some(reply) if policy.fsync => match redis::from_redis_value_ref::<(i64, i64)>(reply) {
                Ok((local, n)) if local >= 1 && n >= i64::from(replicas) => Ok(()),
                Ok((0, _)) => Err(RoundError::Short(format!(
                    "the master's append-only file was not fsynced within {within}"
                ))),
                Ok((_, n)) => Err(RoundError::Short(format!(
                    "{n} of {replicas} replicas fsynced their append-only file within {within}"
                ))),
                Err(_) => Err(RoundError::Short(format!("WAITAOF answered {reply:?}"))),
            },
            Some(reply) => match redis::from_redis_value_ref::<i64>(reply) {
                Ok(n) if n >= i64::from(replicas) => Ok(()),
                Ok(n) => Err(RoundError::Short(format!(
                    "{n} of {replicas} replicas acknowledged within {within}"
                ))),
                Err(_) => Err(RoundError::Short(format!("WAIT answered {reply:?}"))),
            },
            None => Err(RoundError::Short("redis answered nothing".into())),
        }
    }
}

/// Why a round did not have its acknowledgements.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    /// Not now: too few replicas, Redis unreachable, a slow disk. A later round may succeed.
    #[error("{0}")]
    Short(String),
    /// Never, with this Redis as it is set up: it has no `WAITAOF`, or no append-only file to fsync.
    #[error("{0}")]
    Unmeetable(String),
}

/// Redis refused the WAIT itself: say what to change when it is the setup, not the moment.
fn refused_wait(error: &redis::ServerError, policy: AckPolicy) -> RoundError {
    let text = format!("{error:?}");
    if !policy.fsync {
        return RoundError::Short(format!("redis refused WAIT: {text}"));
    }
    if text.contains("unknown command") {
        RoundError::Unmeetable(
            "this Redis has no WAITAOF (Redis 7.2 or later, and Valkey, have it): turn redis.fsync_acks off or upgrade Redis".into(),
        )
    } else if text.contains("appendonly") {
        RoundError::Unmeetable(
            "the master's append-only file is off (appendonly no), so nothing is ever fsynced: set appendonly yes, or turn redis.fsync_acks off".into(),
        )
    } else {
        RoundError::Short(format!("redis refused WAITAOF: {text}"))
    }
}
