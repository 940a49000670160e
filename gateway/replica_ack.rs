//! Answering 2xx only for what replicas have (`redis.min_replica_acks`). Redis replicates asynchronously:
//! without this, an event the master took and acknowledged, but had not yet sent to a replica, is lost
//! when that replica is promoted. With it, a sender is answered only once that many replicas hold its
//! event, and otherwise 503, so it sends again (with dedup, the redelivery is answered as a duplicate).
//!
//! Redis's `WAIT` counts the replicas that acknowledged *the calling connection's* last write, so it
//! cannot run on the shared connection (it would block every command behind it) and means nothing on a
//! connection that wrote nothing. So acknowledgements are taken in rounds, on a connection of their own:
//! a round writes a marker key on the family's master and WAITs for it. Replication keeps the master's
//! order, so a round begun after an event's store returned covers that event, and every other event
//! stored before it began: one WAIT per round, however many requests wait on it.

use crate::redis_conn::{Conn, Redis};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often an idle round task looks whether anybody still holds its handle.
const IDLE_CHECK: Duration = Duration::from_secs(5);

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
    replicas: u32,
    timeout: Duration,
}

#[derive(Clone, Debug)]
struct Ended {
    round: u64,
    outcome: Result<(), String>,
}

/// Why an acknowledgement was not had: the event is on the master, but not known to be on enough replicas.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// The round that covered the event ended short: too few replicas, or Redis did not answer.
    #[error("{0}")]
    Short(String),
    #[error("no round of replica acknowledgements covered the event within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl ReplicaAck {
    /// Start the rounds for the family whose keys begin with `prefix` (`family` names it in metrics):
    /// `replicas` acknowledgements, each waiter bounded by `timeout`. A round WAITs half of it, so a
    /// waiter that arrives during one still sees its own end in time. `response_timeout` is added to the
    /// round connection's own timeout, so a WAIT that uses its whole time still gets its answer.
    pub fn start(
        redis: &Redis,
        prefix: &str,
        family: &'static str,
        replicas: u32,
        timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let (ended, _) = watch::channel(Ended {
            round: 0,
            outcome: Ok(()),
        });
        let shared = Arc::new(Shared {
            begun: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            wake: Notify::new(),
            ended,
            replicas,
            timeout,
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
        match tokio::time::timeout(s.timeout, covering).await {
            // The latest round decides: a later one that fell short means the replicas are not there now.
            Ok(Ok(outcome)) => outcome.map_err(AckError::Short),
            // The sender lives in `Shared`, which this handle holds.
            Ok(Err(_)) => Err(AckError::Short("the acknowledgement rounds stopped".into())),
            Err(_) => Err(AckError::Timeout(s.timeout)),
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
        let mut finished = 0;
        loop {
            let Some(s) = shared.upgrade() else { return };
            if s.wanted.load(SeqCst) <= finished {
                // A wake sent since the load above is kept as a permit, so none is missed.
                let _ = tokio::time::timeout(IDLE_CHECK, s.wake.notified()).await;
                continue;
            }
            let round = s.begun.fetch_add(1, SeqCst) + 1;
            let outcome = self.round(s.replicas).await;
            let label = match &outcome {
                Ok(()) => "acknowledged",
                Err(_) => "short",
            };
            metrics::counter!("hookgate_replica_ack_rounds_total", "family" => self.family, "outcome" => label)
                .increment(1);
            if let Err(e) = &outcome {
                tracing::warn!(family = self.family, error = %e, "replica acknowledgement round fell short; its events are answered 503");
            }
            finished = round;
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

    /// Write the marker and WAIT for it, in one pipeline on the marker's master.
    async fn round(&mut self, replicas: u32) -> Result<(), String> {
        let (marker, wait) = (self.marker.clone(), self.wait);
        let conn = self.connect().await?;
        let mut pipe = redis::pipe();
        // WAIT 0 would wait for ever.
        let ms = wait.as_millis().clamp(1, u64::MAX as u128) as u64;
        pipe.cmd("INCR")
            .arg(&marker)
            .cmd("WAIT")
            .arg(replicas)
            .arg(ms);
        let replies = match conn.pipeline_on_master_of(&marker, &pipe).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(format!("redis: {e}"));
            }
        };
        // A refused marker write (a read-only replica after a failover, a full Redis) is an answer too.
        if let Some(redis::Value::ServerError(e)) = replies.first() {
            return Err(format!("redis refused the marker write: {e:?}"));
        }
        match replies.last().map(redis::from_redis_value_ref::<i64>) {
            Some(Ok(n)) if n >= i64::from(replicas) => Ok(()),
            Some(Ok(n)) => Err(format!(
                "{n} of {replicas} replicas acknowledged within {}",
                humantime::format_duration(wait)
            )),
            _ => Err(format!("WAIT answered {replies:?}")),
        }
    }
}
