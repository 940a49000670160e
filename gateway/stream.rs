//! Typed access to hookgate's Redis streams. Key names live here and nowhere else.
//!
//! Storing an inbound event is one round trip: a script that checks the dedup key, XADDs the event and
//! remembers the id, atomically. Redis Cluster needs both keys in one slot: give `key_prefix` a hash tag.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Redis key names, all under the configured prefix.
pub mod keys {
    /// Raw inbound events, oldest first.
    pub fn inbound(prefix: &str) -> String {
        format!("{prefix}:inbound")
    }
    /// Remembers a sender's event id for the dedup window; its value is the stream id stored.
    pub fn dedup(prefix: &str, source: &str, id: &str) -> String {
        format!("{prefix}:dedup:{source}:{id}")
    }
    /// Inbound events waiting for a retry: a sorted set of event ids, scored by due time (ms).
    pub fn retry_inbound(prefix: &str) -> String {
        format!("{prefix}:retry:inbound")
    }
    /// One parked event's fields (a hash per event, named by its id after this prefix).
    pub fn retry_record_prefix(prefix: &str) -> String {
        format!("{prefix}:retry:inbound:rec:")
    }
    /// Retries that are due, moved here from the sorted set; read by the mappers like `inbound`.
    pub fn retry_due(prefix: &str) -> String {
        format!("{prefix}:retry:inbound:due")
    }
    /// Dead letters of inbound events: a stream, so ids are ordered and listing pages by id.
    pub fn dead_inbound(prefix: &str) -> String {
        format!("{prefix}:dead:inbound")
    }
    /// Published events for the outbound relay (`POST /v1/events` or a producer's own XADD).
    pub fn events(prefix: &str) -> String {
        format!("{prefix}:events")
    }
    /// Remembers a producer's event id for the dedup window; its value is the stream id stored.
    pub fn event_dedup(prefix: &str, id: &str) -> String {
        format!("{prefix}:events:dedup:{id}")
    }
    /// Dead letters of outbound deliveries: a stream, like `dead_inbound`.
    pub fn dead_outbound(prefix: &str) -> String {
        format!("{prefix}:dead:outbound")
    }
    /// Every delivered action, when `deliver.actions_stream` is on.
    pub fn actions(prefix: &str) -> String {
        format!("{prefix}:actions")
    }
}

/// The consumer group of the mapper workers, on `inbound` and `retry_due`.
pub const MAPPERS_GROUP: &str = "mappers";

/// Field names of an inbound stream entry: what the mapper workers and auditors read.
pub mod fields {
    pub const SOURCE: &str = "source";
    pub const RECEIVED_AT: &str = "received_at";
    pub const CONTENT_TYPE: &str = "content_type";
    pub const CLIENT_IP: &str = "client_ip";
    pub const REQUEST_ID: &str = "request_id";
    pub const EVENT_ID: &str = "event_id";
    pub const HEADERS: &str = "headers";
    pub const BODY: &str = "body";
    // Delivery progress, on retried, dead-lettered and replayed events only.
    /// The stream id the event was first stored under (idempotency keys derive from it).
    pub const ORIGIN_ID: &str = "origin_id";
    /// Replays from the dead letters so far.
    pub const REPLAYS: &str = "replays";
    /// JSON list of the `[rule, index]` actions already delivered.
    pub const DONE: &str = "done";
    pub const ATTEMPTS: &str = "attempts";
    pub const DEFERRALS: &str = "deferrals";
    pub const FIRST_FAILED_AT: &str = "first_failed_at";
    pub const LAST_ERROR: &str = "last_error";
}

/// KEYS: [dedup key,] stream. ARGV: ttl ms, body binding ('' for none), then field/value pairs.
/// The dedup key holds `<stream id>|<binding>`. With a binding (a hash of the body), an id seen with another
/// body is not a redelivery: a replayed signed request carrying someone else's unsigned id header cannot
/// make the real event look like a duplicate.
const STORE_SCRIPT: &str = r#"
local stream = KEYS[#KEYS]
if #KEYS == 2 then
  local prev = redis.call('GET', KEYS[1])
  if prev then
    local sep = string.find(prev, '|', 1, true)
    if sep and string.sub(prev, sep + 1) == ARGV[2] then return {0, string.sub(prev, 1, sep - 1)} end
  end
end
local id = redis.call('XADD', stream, '*', unpack(ARGV, 3))
if #KEYS == 2 then
  if not redis.call('GET', KEYS[1]) then redis.call('SET', KEYS[1], id .. '|' .. ARGV[2], 'PX', ARGV[1]) end
end
return {1, id}
"#;

/// Field names of an event on `<prefix>:events`; producers may XADD these directly.
pub mod event_fields {
    /// Required: the event type, e.g. `contact.created`.
    pub const TYPE: &str = "type";
    /// Optional: the account (the platform's customer) whose subscriptions get it.
    pub const ACCOUNT: &str = "account";
    /// Optional: the producer's id; the stream id stands in when absent.
    pub const ID: &str = "id";
    /// Optional: RFC 3339 time the event happened; the publish time stands in.
    pub const OCCURRED_AT: &str = "occurred_at";
    /// Required: the payload, as JSON text.
    pub const DATA: &str = "data";
    /// Set by `POST /v1/events`: the publish time, unix ms.
    pub const PUBLISHED_AT: &str = "published_at";
}

/// One received webhook, as stored.
pub struct InboundRecord<'a> {
    pub source: &'a str,
    pub received_at_ms: u64,
    pub content_type: &'a str,
    pub client_ip: String,
    pub request_id: &'a str,
    /// The sender's event id, when the source has dedup.
    pub event_id: Option<&'a str>,
    /// When the id is not covered by the signature: a hash of the body it must come with to be a redelivery.
    pub dedup_binding: Option<String>,
    /// JSON object of the kept request headers.
    pub headers_json: String,
    pub body: &'a [u8],
}

/// The result of storing: new, or a redelivery of an id seen within the window.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    New(String),
    Duplicate(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("too many commands waiting for redis")]
    Busy,
}

/// Short commands on one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
    /// Caps commands in flight on the connection. Without it a burst queues thousands of commands inside
    /// the multiplexer, where the response timeout runs on our backlog instead of on Redis.
    inflight: Arc<Semaphore>,
    wait: Duration,
}

/// A multiplexed, self-reconnecting connection that connects lazily (the process starts while Redis is down).
pub fn manager(
    url: &str,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url)?;
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

/// Create the group on each stream, from the start (`0`) so events stored before any worker ran are
/// processed. An existing group is left as is.
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    streams: &[&str],
    group: &str,
) -> Result<(), RedisError> {
    for s in streams {
        let r: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => other?,
        }
    }
    Ok(())
}

/// Commands in flight at once; pipelining this many saturates one Redis core.
const MAX_IN_FLIGHT: usize = 512;

impl Store {
    /// Connects lazily: the gateway starts (and reports not ready) while Redis is down.
    pub fn connect(
        url: &str,
        prefix: &str,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let conn = manager(url, response_timeout, connect_timeout)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            script: Script::new(STORE_SCRIPT),
            inflight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            wait: response_timeout,
        })
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    /// Dedup and XADD in one round trip. A command that failed because the connection dropped is sent once
    /// more: if the first one did land, the dedup key turns the second into `Duplicate` of the same id,
    /// which the caller answers like `New` (a source without dedup may then hold the event twice; the
    /// delivery side's idempotency keys absorb that).
    pub async fn store_inbound(
        &self,
        rec: &InboundRecord<'_>,
        dedup_ttl: Duration,
    ) -> Result<Stored, StoreError> {
        let _permit = tokio::time::timeout(self.wait, self.inflight.acquire())
            .await
            .map_err(|_| StoreError::Busy)?
            .map_err(|_| StoreError::Busy)?;
        match self.store_once(rec, dedup_ttl).await {
            // Not on a timeout: the command may still run, and the sender's retry is the safer second try.
            Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                tracing::warn!(error = %e, "redis connection dropped while storing; retrying once");
                match self.store_once(rec, dedup_ttl).await? {
                    Stored::Duplicate(id) => Ok(Stored::New(id)),
                    fresh => Ok(fresh),
                }
            }
            other => Ok(other?),
        }
    }

    /// Store a published event: XADD to `<prefix>:events` with `fields`, deduplicated on the producer's
    /// `id` when there is one (same script, same round trip as inbound dedup). Retried once like
    /// `store_inbound` when the connection dropped.
    pub async fn store_event(
        &self,
        id: Option<&str>,
        fields: &[(&str, String)],
        dedup_ttl: Duration,
    ) -> Result<Stored, StoreError> {
        let _permit = tokio::time::timeout(self.wait, self.inflight.acquire())
            .await
            .map_err(|_| StoreError::Busy)?
            .map_err(|_| StoreError::Busy)?;
        let once = || async {
            let mut inv = self.script.prepare_invoke();
            if let Some(id) = id {
                inv.key(keys::event_dedup(&self.prefix, id));
            }
            inv.key(keys::events(&self.prefix));
            inv.arg(dedup_ttl.as_millis().max(1) as u64).arg("");
            for (k, v) in fields {
                inv.arg(*k).arg(v);
            }
            let mut c = self.conn.clone();
            let (fresh, sid): (i64, String) = inv.invoke_async(&mut c).await?;
            Ok::<_, RedisError>(if fresh == 1 {
                Stored::New(sid)
            } else {
                Stored::Duplicate(sid)
            })
        };
        match once().await {
            Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                tracing::warn!(error = %e, "redis connection dropped while publishing; retrying once");
                Ok(once().await?)
            }
            other => Ok(other?),
        }
    }

    async fn store_once(
        &self,
        rec: &InboundRecord<'_>,
        dedup_ttl: Duration,
    ) -> Result<Stored, RedisError> {
        let mut inv = self.script.prepare_invoke();
        if let Some(id) = rec.event_id {
            inv.key(keys::dedup(&self.prefix, rec.source, id));
        }
        inv.key(keys::inbound(&self.prefix));
        inv.arg(dedup_ttl.as_millis().max(1) as u64)
            .arg(rec.dedup_binding.as_deref().unwrap_or(""))
            .arg(fields::SOURCE)
            .arg(rec.source)
            .arg(fields::RECEIVED_AT)
            .arg(rec.received_at_ms)
            .arg(fields::CONTENT_TYPE)
            .arg(rec.content_type)
            .arg(fields::CLIENT_IP)
            .arg(&rec.client_ip)
            .arg(fields::REQUEST_ID)
            .arg(rec.request_id)
            .arg(fields::EVENT_ID)
            .arg(rec.event_id.unwrap_or(""))
            .arg(fields::HEADERS)
            .arg(&rec.headers_json)
            .arg(fields::BODY)
            .arg(rec.body);
        let mut c = self.conn.clone();
        let (fresh, id): (i64, String) = inv.invoke_async(&mut c).await?;
        Ok(if fresh == 1 {
            Stored::New(id)
        } else {
            Stored::Duplicate(id)
        })
    }
}
