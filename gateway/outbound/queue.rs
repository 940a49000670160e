//! The delivery queue in Redis, every change one atomic script or MULTI.
//!
//! One sorted set per subscription (`queue:<sub>`) holds its delivery ids scored by when they are due
//! (ms); `ready` holds each subscription scored by its earliest due delivery, so a dispatcher finds work
//! without scanning. Claiming a delivery moves its score to now + lease: if the process dies, the lease
//! runs out and any process claims it again (at-least-once); a live process extends the leases of the
//! deliveries in hand. A retry is the same entry with a later score. Each delivery's record is a hash
//! (`delivery:<id>`), its attempts a capped list (`attempts:<id>`), both expiring `outbound.retention`
//! after the delivery finished; `deliveries` and `deliveries:sub:<sub>` index them by creation time.

use super::Keys;
use crate::redis_conn::Conn;
use redis::{RedisError, Script};
use std::collections::HashMap;

/// Attempts kept per delivery (the newest).
pub const MAX_ATTEMPTS_KEPT: usize = 100;

/// Delivery record fields.
pub mod rf {
    pub const ID: &str = "id";
    pub const SUBSCRIPTION: &str = "subscription";
    pub const ACCOUNT: &str = "account";
    pub const TYPE: &str = "type";
    pub const EVENT: &str = "event";
    pub const STATUS: &str = "status";
    pub const ATTEMPTS: &str = "attempts";
    pub const CREATED_AT: &str = "created_at";
    pub const FIRST_FAILED_AT: &str = "first_failed_at";
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    pub const LAST_STATUS: &str = "last_status";
    pub const LAST_ERROR: &str = "last_error";
    pub const REASON: &str = "reason";
    pub const FINISHED_AT: &str = "finished_at";
    pub const REPLAYS: &str = "replays";
}

/// KEYS: events stream, ready, index. ARGV: group, entry id, now, index cutoff, record prefix, queue
/// prefix, sub index prefix, type, event JSON, account, then (delivery id, subscription id) pairs.
/// A delivery that already exists (the event was fanned out before a crash) is left alone.
const ENQUEUE: &str = r#"
local now = tonumber(ARGV[3])
for i = 11, #ARGV, 2 do
  local id, sub = ARGV[i], ARGV[i+1]
  local rec = ARGV[5] .. id
  if redis.call('EXISTS', rec) == 0 then
    redis.call('HSET', rec, 'id', id, 'subscription', sub, 'account', ARGV[10], 'type', ARGV[8],
      'event', ARGV[9], 'status', 'pending', 'attempts', 0, 'created_at', ARGV[3], 'next_attempt_at', ARGV[3])
    redis.call('ZADD', ARGV[6] .. sub, now, id)
    redis.call('ZADD', KEYS[2], 'LT', now, sub)
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('ZADD', ARGV[7] .. sub, now, id)
    redis.call('ZREMRANGEBYSCORE', ARGV[7] .. sub, '-inf', ARGV[4])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// KEYS: ready. ARGV: now, lease until, record prefix, queue prefix, then (subscription id, count) pairs.
/// Claims up to count due deliveries of each subscription in one call; returns {subscription, id, record}
/// triples. Each subscription's `ready` score is set to its queue's earliest score (or removed).
const CLAIM: &str = r#"
local out = {}
for i = 5, #ARGV, 2 do
  local sub = ARGV[i]
  local q = ARGV[4] .. sub
  local ids = redis.call('ZRANGEBYSCORE', q, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[i+1]))
  for _, id in ipairs(ids) do
    redis.call('ZADD', q, ARGV[2], id)
    out[#out+1] = {sub, id, redis.call('HGETALL', ARGV[3] .. id)}
  end
  local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', KEYS[1], sub) else redis.call('ZADD', KEYS[1], first[2], sub) end
end
return out
"#;

/// KEYS: dead stream, ready, index. ARGV: entry id, now, record prefix, queue prefix, attempts prefix, sub
/// index prefix. Puts the delivery back in its queue, due now, with the same id (so the same webhook-id)
/// and its attempt history; deletes the dead letter. Returns the delivery id, or nil.
const REPLAY: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return false end
local f = {}
for i = 1, #e[1][2], 2 do f[e[1][2][i]] = e[1][2][i+1] end
local id, sub = f['delivery'], f['subscription']
if not id or not sub then redis.call('XDEL', KEYS[1], ARGV[1]); return false end
local rec = ARGV[3] .. id
local created = f['created_at'] or ARGV[2]
redis.call('DEL', rec)
redis.call('HSET', rec, 'id', id, 'subscription', sub, 'account', f['account'] or '', 'type', f['type'] or '',
  'event', f['event'] or '{}', 'status', 'pending', 'attempts', 0, 'created_at', created,
  'next_attempt_at', ARGV[2], 'replays', (tonumber(f['replays'] or '0') or 0) + 1)
redis.call('PERSIST', ARGV[5] .. id)
redis.call('ZADD', ARGV[4] .. sub, tonumber(ARGV[2]), id)
redis.call('ZADD', KEYS[2], 'LT', tonumber(ARGV[2]), sub)
redis.call('ZADD', KEYS[3], tonumber(created), id)
redis.call('ZADD', ARGV[6] .. sub, tonumber(created), id)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"#;

#[derive(Clone)]
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub replay: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            enqueue: Script::new(ENQUEUE),
            claim: Script::new(CLAIM),
            replay: Script::new(REPLAY),
        }
    }
}

/// One delivery to make: (delivery id, subscription id).
pub type Target = (String, String);

/// Fan an event out and acknowledge it, atomically.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue(
    conn: &mut Conn,
    scripts: &Scripts,
    keys: &Keys,
    entry_id: &str,
    kind: &str,
    event_json: &str,
    account: &str,
    targets: &[Target],
    now: u64,
    retention_ms: u64,
) -> Result<(), RedisError> {
    let mut inv = scripts.enqueue.prepare_invoke();
    inv.key(&keys.events)
        .key(&keys.ready)
        .key(&keys.index)
        .arg(super::RELAY_GROUP)
        .arg(entry_id)
        .arg(now)
        .arg(now.saturating_sub(retention_ms))
        .arg(&keys.record_prefix)
        .arg(&keys.queue_prefix)
        .arg(&keys.sub_index_prefix)
        .arg(kind)
        .arg(event_json)
        .arg(account);
    for (id, sub) in targets {
        inv.arg(id).arg(sub);
    }
    inv.invoke_async::<()>(conn).await
}

/// One claimed delivery: (subscription id, delivery id, record).
pub type Claimed = (String, String, HashMap<String, String>);

/// Claim, for each `(subscription, n)`, up to `n` due deliveries, leased until `lease_until`; one round trip.
pub async fn claim(
    conn: &mut Conn,
    scripts: &Scripts,
    keys: &Keys,
    wants: &[(String, usize)],
    now: u64,
    lease_until: u64,
) -> Result<Vec<Claimed>, RedisError> {
    let mut inv = scripts.claim.prepare_invoke();
    inv.key(&keys.ready)
        .arg(now)
        .arg(lease_until)
        .arg(&keys.record_prefix)
        .arg(&keys.queue_prefix);
    for (sub, n) in wants {
        inv.arg(sub).arg(*n);
    }
    inv.invoke_async(conn).await
}

/// Subscriptions with a due delivery, soonest due first: `count` of them from the `offset`-th.
pub async fn ready(
    conn: &mut Conn,
    keys: &Keys,
    now: u64,
    offset: usize,
    count: usize,
) -> Result<Vec<String>, RedisError> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.ready)
        .arg("-inf")
        .arg(now)
        .arg("LIMIT")
        .arg(offset)
        .arg(count)
        .query_async(conn)
        .await
}

/// Put a dead letter back in its queue; the delivery id, or None when there is no such dead letter.
pub async fn replay(
    conn: &mut Conn,
    scripts: &Scripts,
    keys: &Keys,
    entry_id: &str,
    now: u64,
) -> Result<Option<String>, RedisError> {
    scripts
        .replay
        .key(&keys.dead)
        .key(&keys.ready)
        .key(&keys.index)
        .arg(entry_id)
        .arg(now)
        .arg(&keys.record_prefix)
        .arg(&keys.queue_prefix)
        .arg(&keys.attempts_prefix)
        .arg(&keys.sub_index_prefix)
        .invoke_async(conn)
        .await
}
