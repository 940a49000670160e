//! Typed access to hookgate's Redis streams. Key names live here and nowhere else.
//!
//! Storing an inbound event is one round trip. With dedup it is a pipeline of the XADD and then `SET NX GET`
//! on the dedup key, each request with a token of its own that the entry carries too; the SET's answer says
//! whether the key was already taken. A redelivery's entry is then deleted, and a mapper worker that read it
//! first skips it, because the key names another request's token ([`lost_race`]).
//!
//! The key decides which entry of an id is the event: the first token set in it wins, whoever sets it. The
//! two commands are not a transaction, so a worker can read an entry before its SET has run (or, when the
//! connection was lost between the two, an entry whose SET never ran). It then sets the key to the entry's
//! token itself (`SET NX GET`, the source's TTL) and the entry wins unless another token is already there;
//! the late SET of the entry's own request then finds its own token and answers 202. Whichever order the
//! SETs and the reads come in, one entry per id is delivered, and the event is never missing while its key
//! says "seen" (the XADD comes first). A MULTI around the two would cost Redis two more commands and the
//! gateway two more replies per event, for no guarantee the claim does not already give; a Lua script costs
//! Redis more still (bench/README.md: copying the arguments into Lua). Without dedup the store is a plain
//! XADD. On Redis Cluster it stays the script (`Store::store_scripted` says why); the keys of one family
//! share a hash tag ([`Families`]), so a script's keys are always in one slot.

use crate::redis_conn::{dropped, Conn, Redis};
use crate::replica_ack::{AckError, AckPolicy, ReplicaAck};
use redis::{RedisError, RedisResult, Script};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The key prefixes of the two key families: inbound (events received, their dedup keys, retries, dead
/// letters, actions) and outbound (published events, subscriptions, deliveries). On one node both are
/// `key_prefix`. On Redis Cluster each family gets a hash tag of its own, `{<key_prefix>:in}` and
/// `{<key_prefix>:out}`: every script and transaction stays within one slot, and the two families can live
/// on two masters. A `key_prefix` that already holds a hash tag keeps everything in that one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Families {
    pub inbound: String,
    pub outbound: String,
}

impl Families {
    pub fn new(key_prefix: &str, cluster: bool) -> Self {
        if !cluster || crate::config::has_hash_tag(key_prefix) {
            return Self {
                inbound: key_prefix.to_string(),
                outbound: key_prefix.to_string(),
            };
        }
        Self {
            inbound: format!("{{{key_prefix}:in}}"),
            outbound: format!("{{{key_prefix}:out}}"),
        }
    }

    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(&cfg.key_prefix, !cfg.redis.cluster_nodes.is_empty())
    }
}

/// Redis key names, each under its family's prefix ([`Families`]).
pub mod keys {
    /// Raw inbound events, oldest first.
    pub fn inbound(prefix: &str) -> String {
        format!("{prefix}:inbound")
    }
    /// Remembers a sender's event id for the dedup window; its value is `<token>|<binding>` of the request
    /// that stored it ([`super::fields::DEDUP`]). A body binding (a hash of the body, for an id the
    /// signature does not cover) is part of the name: the same id with another body is another event, and
    /// each gets a key of its own, so the redelivery of either is recognised.
    pub fn dedup(prefix: &str, source: &str, id: &str, binding: &str) -> String {
        // Named on every stored event: `concat` sizes and fills one string without `format!`'s machinery.
        let sep = if binding.is_empty() { "" } else { "|" };
        [prefix, ":dedup:", source, ":", id, sep, binding].concat()
    }
    /// The readiness probe's key ([`super::Store::ready`]): a write as the store makes, expiring soon.
    pub fn ready(prefix: &str) -> String {
        format!("{prefix}:ready")
    }
    /// The marker each round of replica acknowledgements writes ([`crate::replica_ack`]).
    pub fn replica_ack(prefix: &str) -> String {
        format!("{prefix}:replica-ack")
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
    /// Remembers a producer's event id for the dedup window, per account (one account's id must not
    /// drop another's event); its value is the stream id stored. An account never holds a `/`, so the
    /// first one after `dedup:` ends it; an event of no account has an empty one.
    pub fn event_dedup(prefix: &str, account: Option<&str>, id: &str) -> String {
        format!("{prefix}:events:dedup:{}/{id}", account.unwrap_or(""))
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

/// Field names of an inbound stream entry: what the mapper workers and auditors read. An entry is
/// [`SOURCE`](fields::SOURCE), [`META`](fields::META) (the rest of the receipt as one JSON object, see
/// [`Receipt`]) and [`BODY`](fields::BODY). The receipt's members are named as the separate fields of
/// entries stored before 2026-12-06 were, and those entries are still read.
pub mod fields {
    /// The receipt but its source: a JSON object of received_at (Unix ms), content_type, client_ip,
    /// request_id, event_id (with dedup), dedup (this request's dedup value) and headers (an object).
    pub const META: &str = "meta";
    pub const SOURCE: &str = "source";
    pub const RECEIVED_AT: &str = "received_at";
    pub const CONTENT_TYPE: &str = "content_type";
    pub const CLIENT_IP: &str = "client_ip";
    pub const REQUEST_ID: &str = "request_id";
    pub const EVENT_ID: &str = "event_id";
    pub const HEADERS: &str = "headers";
    pub const BODY: &str = "body";
    /// With dedup: the value this entry's request gave the dedup key, `<token>|<binding>`. The entry lost
    /// the race to a redelivery when the key holds another token with the same binding
    /// ([`super::lost_race`]).
    pub const DEDUP: &str = "dedup";
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
/// The dedup key holds `<stream id>|<binding>`. With a binding (a hash of the body, also in the key's name:
/// [`keys::dedup`]), an id seen with another body is not a redelivery: a replayed signed request carrying
/// someone else's unsigned id header cannot make the real event look like a duplicate. Used for published
/// events, and for inbound ones on Redis Cluster (see `Store::store_scripted`); their duplicates are
/// answered with the original's id.
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
    /// The stream id of the stored original, when the store knows it (published events; the inbound
    /// pipeline only learns that the key was taken).
    Duplicate(Option<String>),
}

/// Whether a stream entry whose request set the dedup value `mine` lost the race for its key to another
/// request, given the key's value now (`None`: expired or never set). Losers are redeliveries: they are
/// skipped. With another binding the entry is another event that happens to reuse the id, so it stays.
pub fn lost_race(mine: &[u8], now: Option<&[u8]>) -> bool {
    match now {
        Some(now) => now != mine && binding_of(now) == binding_of(mine),
        None => false,
    }
}

/// The body binding of a dedup value `<token>|<binding>`: empty when there is none (or no `|`).
pub fn binding_of(value: &[u8]) -> &[u8] {
    value
        .iter()
        .position(|b| *b == b'|')
        .map_or(&[][..], |i| &value[i + 1..])
}

/// What an inbound event was received with: everything stored beside its body. The source is a field of
/// its own, the rest is [`fields::META`] or, in an entry stored before `meta` existed, separate fields of
/// the same names.
///
/// Why one field: Redis parses, copies and stores every field of an XADD, and seven small fields were a
/// fifth of its work per stored event (bench/README.md); Redis is the one part all replicas share. Why the
/// source stays apart: a worker of an older version reads an entry without a `source` as no event and
/// acknowledges it, while one with a `source` but no content type is dead-lettered, and replayed once
/// every worker reads `meta` (README, "What is stored").
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct Receipt {
    pub source: String,
    /// Unix ms.
    pub received_at: Option<u64>,
    pub content_type: String,
    pub client_ip: String,
    pub request_id: String,
    /// The sender's event id; empty without dedup.
    pub event_id: String,
    /// The dedup key's value this entry's request set, `<token>|<binding>`; empty without.
    pub dedup: String,
    /// The kept request headers, a JSON object as text.
    #[serde(deserialize_with = "raw_text")]
    pub headers: String,
}

/// A JSON value's own text (the headers object), kept as it was written.
fn raw_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw: Box<serde_json::value::RawValue> = serde::Deserialize::deserialize(d)?;
    Ok(raw.get().to_owned())
}

impl Receipt {
    /// The receipt of a stream entry: its `source` and its `meta`, else its separate fields. An
    /// unreadable `meta` is an error; a missing member is empty.
    pub fn of_entry(fields: &HashMap<String, redis::Value>) -> Result<Self, String> {
        let bytes = |k: &str| match fields.get(k) {
            Some(v) => redis::from_redis_value::<Vec<u8>>(v.clone()).unwrap_or_default(),
            None => Vec::new(),
        };
        let text = |k: &str| String::from_utf8_lossy(&bytes(k)).into_owned();
        if fields.contains_key(fields::META) {
            let mut r: Receipt = serde_json::from_slice(&bytes(fields::META))
                .map_err(|e| format!("its `meta` is not a receipt: {e}"))?;
            r.source = text(fields::SOURCE);
            return Ok(r);
        }
        Ok(Receipt {
            source: text(fields::SOURCE),
            received_at: text(fields::RECEIVED_AT).parse().ok(),
            content_type: text(fields::CONTENT_TYPE),
            client_ip: text(fields::CLIENT_IP),
            request_id: text(fields::REQUEST_ID),
            event_id: text(fields::EVENT_ID),
            dedup: text(fields::DEDUP),
            headers: text(fields::HEADERS),
        })
    }
}

/// A receipt to write, borrowed from what holds it (the request being stored, or an [`Envelope`] going
/// back as a retry or a dead letter): one writer for both, in either [`InboundFormat`].
/// `headers_json` is written as it is: a JSON object's text.
///
/// [`Envelope`]: crate::deliver::Envelope
/// [`InboundFormat`]: crate::config::InboundFormat
pub(crate) struct ReceiptParts<'a> {
    pub source: &'a str,
    pub received_at: Option<u64>,
    pub content_type: &'a str,
    pub client_ip: &'a str,
    pub request_id: &'a str,
    pub event_id: Option<&'a str>,
    pub dedup: Option<&'a str>,
    pub headers_json: &'a str,
}

/// Write a `meta` by hand rather than through a serialised struct: the headers are already JSON, and
/// this runs for every webhook.
fn write_meta(m: &ReceiptParts<'_>) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(m.headers_json.len() + m.request_id.len() + 200);
    meta_member(&mut out, fields::RECEIVED_AT);
    // Writing to a Vec cannot fail.
    let _ = match m.received_at {
        Some(ms) => write!(out, "{ms}"),
        None => out.write_all(b"null"),
    };
    meta_text(&mut out, fields::CONTENT_TYPE, m.content_type);
    meta_text(&mut out, fields::CLIENT_IP, m.client_ip);
    meta_text(&mut out, fields::REQUEST_ID, m.request_id);
    if let Some(id) = m.event_id {
        meta_text(&mut out, fields::EVENT_ID, id);
    }
    if let Some(d) = m.dedup {
        meta_text(&mut out, fields::DEDUP, d);
    }
    meta_member(&mut out, fields::HEADERS);
    out.extend_from_slice(m.headers_json.as_bytes());
    out.push(b'}');
    out
}

/// `{"name":` or `,"name":`. Member names are our own constants: nothing to escape.
fn meta_member(out: &mut Vec<u8>, name: &str) {
    out.push(if out.is_empty() { b'{' } else { b',' });
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn meta_text(out: &mut Vec<u8>, name: &str, value: &str) {
    meta_member(out, name);
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A receipt's fields as written, in either [`crate::config::InboundFormat`]: `source`, then `meta` or a
/// field per member. The body and anything after it are the caller's.
pub(crate) enum Shape {
    /// The `meta` JSON.
    Meta(Vec<u8>),
    /// The receipt time as text, for the field per member.
    Fields(String),
}

impl Shape {
    pub(crate) fn of(parts: &ReceiptParts<'_>, format: crate::config::InboundFormat) -> Self {
        match format {
            crate::config::InboundFormat::Meta => Shape::Meta(write_meta(parts)),
            crate::config::InboundFormat::Fields => Shape::Fields(
                parts
                    .received_at
                    .map(|ms| ms.to_string())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Field/value pairs of `parts` in this shape.
    pub(crate) fn pairs<'a>(&'a self, parts: &ReceiptParts<'a>) -> Vec<(&'static str, &'a [u8])> {
        let mut out = Vec::with_capacity(10);
        out.push((fields::SOURCE, parts.source.as_bytes()));
        match self {
            Shape::Meta(meta) => out.push((fields::META, meta.as_slice())),
            Shape::Fields(received_at) => {
                out.extend([
                    (fields::RECEIVED_AT, received_at.as_bytes()),
                    (fields::CONTENT_TYPE, parts.content_type.as_bytes()),
                    (fields::CLIENT_IP, parts.client_ip.as_bytes()),
                    (fields::REQUEST_ID, parts.request_id.as_bytes()),
                    (fields::EVENT_ID, parts.event_id.unwrap_or("").as_bytes()),
                    (fields::HEADERS, parts.headers_json.as_bytes()),
                ]);
                if let Some(d) = parts.dedup {
                    out.push((fields::DEDUP, d.as_bytes()));
                }
            }
        }
        out
    }
}

impl InboundRecord<'_> {
    /// This record's receipt, with the dedup value its request sets (`None` without dedup).
    fn parts<'a>(&'a self, dedup: Option<&'a str>) -> ReceiptParts<'a> {
        ReceiptParts {
            source: self.source,
            received_at: Some(self.received_at_ms),
            content_type: self.content_type,
            client_ip: &self.client_ip,
            request_id: self.request_id,
            event_id: self.event_id,
            dedup,
            headers_json: &self.headers_json,
        }
    }
}

/// The dedup key's value for one store attempt: a token unique to it (128 random bits, hex), `|`, and the
/// body binding. One allocation: this runs for every event with a sender id.
fn store_value(binding: &str) -> String {
    let mut token = [0u8; 32];
    // 16 bytes always fit 32 hex digits, and hex digits are ASCII.
    let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut token);
    let mut value = String::with_capacity(token.len() + 1 + binding.len());
    value.push_str(std::str::from_utf8(&token).unwrap_or_default());
    value.push('|');
    value.push_str(binding);
    value
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("too many commands waiting for redis")]
    Busy,
    /// The whole store took longer than [`Store::deadline`].
    #[error("redis did not take the event within {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// Stored on the master, but not acknowledged by `redis.min_replica_acks` replicas, or not fsynced
    /// (`redis.fsync_acks`).
    #[error("stored, but not acknowledged: {0}")]
    NotAcknowledged(#[from] AckError),
}

/// Short commands on one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    families: Families,
    /// `keys::inbound` of the inbound family, named once rather than per event.
    inbound_stream: String,
    /// Caps commands in flight on the connection. Without it a burst queues thousands of commands inside
    /// the multiplexer, where the response timeout runs on our backlog instead of on Redis.
    inflight: Arc<Semaphore>,
    wait: Duration,
    format: crate::config::InboundFormat,
    /// With `redis.min_replica_acks` or `redis.fsync_acks`: the rounds of each family, whose
    /// acknowledgement a store waits for before it counts as taken.
    acks: Option<Acks>,
}

/// The acknowledgement rounds of the two families; one shared when both are on one node.
#[derive(Clone)]
struct Acks {
    inbound: ReplicaAck,
    outbound: ReplicaAck,
}

/// What a consumer loop must redo after a failed read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// Redis lost the consumer group (a restart without persistence): create it again.
    LostGroup,
    /// Anything else: drop the reader connection and connect again.
    Reconnect,
}

/// After a failed read of a consumer loop (`who` names it in the log): what to redo, once `pause` has
/// passed or `stop` was set. The caller doubles its pause up to a cap.
pub async fn back_off(
    e: &RedisError,
    who: &str,
    pause: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> ReadFailure {
    let what = if e.code() == Some("NOGROUP") {
        tracing::warn!(
            who,
            "consumer group missing (Redis lost it?); creating it again"
        );
        ReadFailure::LostGroup
    } else {
        tracing::warn!(who, error = %e, retry_in = ?pause, "cannot read; reconnecting");
        ReadFailure::Reconnect
    };
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        () = tokio::time::sleep(pause) => {}
    }
    what
}

/// Which way [`entries`] walks a stream.
#[derive(Clone, Copy)]
pub enum Walk {
    /// XRANGE: from `from` (the oldest end) towards `to`.
    Oldest,
    /// XREVRANGE: from `from` (the newest end) towards `to`.
    Newest,
}

/// Up to `count` entries of `stream` between `from` and `to` (ids, `-`, `+`, or `(id` for an exclusive
/// bound), walked as `walk` says: each entry's id and fields.
pub async fn entries(
    conn: &Conn,
    stream: &str,
    walk: Walk,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Vec<(String, HashMap<String, redis::Value>)>, RedisError> {
    let name = match walk {
        Walk::Oldest => "XRANGE",
        Walk::Newest => "XREVRANGE",
    };
    let mut c = conn.clone();
    let reply: redis::streams::StreamRangeReply = redis::cmd(name)
        .arg(stream)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut c)
        .await?;
    Ok(reply.ids.into_iter().map(|e| (e.id, e.map)).collect())
}

/// The id of the newest entry of `stream`; `None` when it is empty or missing. A bound for walks that
/// must not see what is added while they run.
pub async fn last_id(conn: &Conn, stream: &str) -> Result<Option<String>, RedisError> {
    let newest = entries(conn, stream, Walk::Newest, "+", "-", 1).await?;
    Ok(newest.into_iter().next().map(|(id, _)| id))
}

/// Create the group on each stream, from the start (`0`) so events stored before any worker ran are
/// processed. An existing group is left as is.
pub async fn ensure_group(
    conn: &mut Conn,
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

/// KEYS: stream. ARGV: retention ms, most entries to trim. Trims (approximately, whole radix-tree nodes)
/// the entries older than the retention that every consumer group has acknowledged: the bound is the
/// oldest of now − retention (Redis's clock, the one stream ids come from), each group's oldest pending
/// entry and each group's first unread entry. A stream without groups is left alone (nobody has
/// acknowledged anything). Atomic, so no read or ack can slip between the bound and the trim.
const TRIM_SCRIPT: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local t = redis.call('TIME')
local bms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local bseq = 0
if bms <= 0 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local lms, lseq = parse(last)
  if before(lms, lseq + 1, bms, bseq) then bms, bseq = lms, lseq + 1 end
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[1] > 0 then
    local pms, pseq = parse(p[2])
    if before(pms, pseq, bms, bseq) then bms, bseq = pms, pseq end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-%d', bms, bseq), 'LIMIT', tonumber(ARGV[2]))
"#;

/// KEYS: stream. ARGV: group, idle ms. Removes the group's consumers idle at least that long with nothing
/// pending; returns their names. In one script, so a consumer cannot take an entry between the check and
/// the removal (removing a consumer drops its pending entries).
const REMOVE_IDLE_SCRIPT: &str = r#"
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local removed = {}
for _, c in ipairs(cs) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if pending == 0 and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed[#removed + 1] = name
  end
end
return removed
"#;

static STORE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(STORE_SCRIPT));
/// Run `undo` to its end even when the request awaiting it is cancelled meanwhile (its client gone, the
/// request timeout): an undo skipped halfway would leave a key or an entry that must not stay.
async fn uncancelled(undo: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = tokio::spawn(undo).await;
}

/// Delete a dedup key only while it holds this request's value (another request may have set it since).
static DELETE_IF_MINE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});
static TRIM: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(TRIM_SCRIPT));
static REMOVE_IDLE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(REMOVE_IDLE_SCRIPT));

/// Trim up to `limit` entries of `stream` that every group has acknowledged and that are older than
/// `retention`; returns how many went.
pub async fn trim_acknowledged(
    conn: &mut Conn,
    stream: &str,
    retention: Duration,
    limit: usize,
) -> Result<u64, RedisError> {
    TRIM.key(stream)
        .arg(retention.as_millis() as u64)
        .arg(limit)
        .invoke_async(conn)
        .await
}

/// Renew `consumer`'s hold on `ids` (reset their idle time, so no other worker reclaims them), but only of
/// those still pending for it: an entry another worker reclaimed meanwhile (this process was paused past
/// the reclaim time) is left to that worker, not taken back, which had it sent a third time. Returns the
/// ids now pending for another consumer (one acknowledged meanwhile is neither renewed nor returned).
/// One script: the check and the claim are one step.
pub async fn renew_held(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[&str],
) -> Result<Vec<String>, RedisError> {
    RENEW_HELD
        .key(stream)
        .arg(group)
        .arg(consumer)
        .arg(ids)
        .invoke_async(conn)
        .await
}

static RENEW_HELD: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local kept, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] then
    if p[1][2] == ARGV[2] then table.insert(kept, ARGV[i]) else table.insert(lost, ARGV[i]) end
  end
end
for i = 1, #kept, 1000 do
  local chunk = {KEYS[1], ARGV[1], ARGV[2], 0}
  for j = i, math.min(i + 999, #kept) do table.insert(chunk, kept[j]) end
  table.insert(chunk, 'JUSTID')
  redis.call('XCLAIM', unpack(chunk))
end
return lost
"#,
    )
});

/// Remove `group`'s consumers on `stream` that have been idle for `idle` and hold nothing pending.
pub async fn remove_idle_consumers(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    idle: Duration,
) -> Result<Vec<String>, RedisError> {
    REMOVE_IDLE
        .key(stream)
        .arg(group)
        .arg(idle.as_millis() as u64)
        .invoke_async(conn)
        .await
}

/// Commands in flight at once; pipelining this many saturates one Redis core.
const MAX_IN_FLIGHT: usize = 512;

impl Store {
    /// Connects lazily: the gateway starts (and reports not ready) while Redis is down. `wait` bounds the
    /// wait for a turn on the connection (the response timeout).
    pub fn connect(redis: &Redis, families: Families, wait: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            conn: redis.shared()?,
            inbound_stream: keys::inbound(&families.inbound),
            families,
            inflight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            wait,
            format: crate::config::InboundFormat::default(),
            acks: None,
        })
    }

    /// Count a store as done only once `policy` is met: replicas hold it (`redis.min_replica_acks`), and
    /// it is on disk (`redis.fsync_acks`), waiting at most `redis.replica_ack_timeout`. Starts the
    /// rounds' tasks.
    pub fn with_acks(mut self, redis: &Redis, policy: AckPolicy) -> Self {
        let start =
            |prefix: &str, family| ReplicaAck::start(redis, prefix, family, policy, self.wait);
        self.acks = Some(if self.families.outbound == self.families.inbound {
            let both = start(&self.families.inbound, "all");
            Acks {
                inbound: both.clone(),
                outbound: both,
            }
        } else {
            Acks {
                inbound: start(&self.families.inbound, "inbound"),
                outbound: start(&self.families.outbound, "outbound"),
            }
        });
        self
    }

    /// This store without waiting for acknowledgements: for hookgate's own writes, which no sender
    /// waits on.
    pub fn without_acks(&self) -> Self {
        Self {
            acks: None,
            ..self.clone()
        }
    }

    /// Write inbound entries in `format` (`inbound_format`).
    pub fn with_format(mut self, format: crate::config::InboundFormat) -> Self {
        self.format = format;
        self
    }

    /// A turn on the connection, waiting at most `wait`.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        crate::admission::permit_within(&self.inflight, self.wait)
            .await
            .ok_or(StoreError::Busy)
    }

    /// Whether Redis takes the receive path's writes, with a reason when not. The probe is the dedup
    /// store's own `SET NX GET PX`, on a key of its own: a PING also passes on a read-only replica (after
    /// a failover) and on Redis before 7.0, which refuses `NX` with `GET`, while every store fails there.
    ///
    /// A probe that failed on a dropped connection is sent once more: the connection manager notices a
    /// connection Redis closed (a restart, an idle cut by a proxy) only when a command fails on it, and a
    /// probe should not report that one failure as the instance being unready.
    pub async fn ready(&self) -> Result<(), String> {
        let probe = || {
            let mut c = self.conn.clone();
            let key = keys::ready(&self.families.inbound);
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(10_000)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            }
        };
        let probe = match probe().await {
            Err(e) if dropped(&e) => probe().await,
            other => other,
        };
        match probe {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.code() {
                Some("ERR") if e.detail().is_some_and(|d| d.contains("syntax")) => {
                    "redis refuses SET NX GET: hookgate needs Redis 7.0 or later".to_owned()
                }
                Some(code) => format!("redis refuses writes ({code})"),
                None => "redis not answering".to_owned(),
            }),
        }
    }

    /// Dedup and XADD in one round trip. A command that failed because the connection dropped is sent once
    /// more: if the first one did land, the dedup key turns the second into a `Duplicate` (a source without
    /// dedup may then hold the event twice). The sender is then answered `200 {"duplicate": true}`: still
    /// a 2xx, and the event is stored once. On a cluster the client itself also resends after a dropped
    /// node connection, with the same outcome.
    ///
    /// The whole of it is bounded by [`Store::deadline`], so the receiver answers 503 before the request
    /// timeout even while the connection manager waits for a reconnect.
    pub async fn store_inbound(
        &self,
        rec: &InboundRecord<'_>,
        dedup_ttl: Duration,
    ) -> Result<Stored, StoreError> {
        let stored = self
            .bounded("storing", || self.store_once(rec, dedup_ttl))
            .await?;
        // A duplicate waits too: its original may have been stored a moment ago, not yet replicated.
        if let Some(acks) = &self.acks {
            acks.inbound.replicated().await?;
        }
        Ok(stored)
    }

    /// Run `once` on a turn of the connection; once more if the connection dropped under it (not on a
    /// timeout: the command may still run, and the sender's retry is the safer second try); the whole
    /// within [`Store::deadline`]. `what` names the work in the log.
    async fn bounded<T, F, Fut>(&self, what: &str, once: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let deadline = self.deadline();
        let store = async {
            let _permit = self.turn().await?;
            match once().await {
                Err(e) if dropped(&e) => {
                    tracing::warn!(error = %e, "redis connection dropped while {what}; retrying once");
                    Ok(once().await?)
                }
                other => Ok(other?),
            }
        };
        tokio::time::timeout(deadline, store)
            .await
            .unwrap_or(Err(StoreError::Deadline(deadline)))
    }

    /// The most a store may take ([`crate::config::store_deadline`]); `limits.request_timeout` must
    /// outlast it.
    pub fn deadline(&self) -> Duration {
        crate::config::store_deadline(self.wait)
    }

    /// Store a published event: XADD to `<prefix>:events` with `fields`, deduplicated on the producer's
    /// `id` within its `account` when there is one (the inbound store script: one round trip). Retried once like
    /// `store_inbound` when the connection dropped, and bounded by the same deadline.
    pub async fn store_event(
        &self,
        account: Option<&str>,
        id: Option<&str>,
        fields: &[(&str, String)],
        dedup_ttl: Duration,
    ) -> Result<Stored, StoreError> {
        let once = || async {
            let mut inv = STORE.prepare_invoke();
            if let Some(id) = id {
                inv.key(keys::event_dedup(&self.families.outbound, account, id));
            }
            inv.key(keys::events(&self.families.outbound));
            inv.arg(dedup_ttl.as_millis().max(1) as u64).arg("");
            for (k, v) in fields {
                inv.arg(*k).arg(v);
            }
            let mut c = self.conn.clone();
            let (fresh, sid): (i64, String) = inv.invoke_async(&mut c).await?;
            Ok::<_, RedisError>(if fresh == 1 {
                Stored::New(sid)
            } else {
                Stored::Duplicate(Some(sid))
            })
        };
        let stored = self.bounded("publishing", once).await?;
        if let Some(acks) = &self.acks {
            acks.outbound.replicated().await?;
        }
        Ok(stored)
    }

    /// The dedup pipeline when the event has a sender id; a plain XADD when not.
    async fn store_once(
        &self,
        rec: &InboundRecord<'_>,
        dedup_ttl: Duration,
    ) -> Result<Stored, RedisError> {
        let stream = &self.inbound_stream;
        let binding = rec.dedup_binding.as_deref().unwrap_or("");
        if let (Some(sender_id), true) = (rec.event_id, self.conn.is_cluster()) {
            let parts = rec.parts(None);
            let shape = Shape::of(&parts, self.format);
            let mut pairs = shape.pairs(&parts);
            pairs.push((fields::BODY, rec.body));
            return self
                .store_scripted(rec, sender_id, binding, &pairs, dedup_ttl)
                .await;
        }
        let mut c = self.conn.clone();
        let mine = rec.event_id.map(|_| store_value(binding));
        let parts = rec.parts(mine.as_deref());
        let shape = Shape::of(&parts, self.format);
        let mut pairs = shape.pairs(&parts);
        pairs.push((fields::BODY, rec.body));
        // Sized up front: the body is copied into the command once, with no regrowth.
        let data: usize =
            pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + stream.len() + 8;
        let mut xadd = redis::Cmd::with_capacity(2 * pairs.len() + 3, data);
        xadd.arg("XADD").arg(stream).arg("*");
        for (k, v) in pairs {
            xadd.arg(k).arg(v);
        }
        let (Some(sender_id), Some(mine)) = (rec.event_id, mine) else {
            return Ok(Stored::New(xadd.query_async(&mut c).await?));
        };
        let key = keys::dedup(&self.families.inbound, rec.source, sender_id, binding);
        let mut set = redis::Cmd::with_capacity(7, key.len() + mine.len() + 40);
        set.arg("SET")
            .arg(&key)
            .arg(&mine)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(dedup_ttl.as_millis().max(1) as u64);
        let mut pipe = redis::Pipeline::with_capacity(2);
        // A pipeline, not a transaction: the XADD comes first, so a connection lost between the two
        // leaves at worst an entry whose key is not set yet, which the worker that reads it claims (see
        // the module doc). Each command's own answer: one can fail while the other succeeds (a stream key
        // of another type, a SET Redis < 7 does not know, or out of memory: Redis counts a large XADD's
        // arguments against `maxmemory` and may refuse it and take the small SET after it). A key set
        // for an entry that failed is removed before the sender is answered.
        pipe.ignore_errors().add_command(xadd).add_command(set);
        let (xadd, set): (RedisResult<String>, RedisResult<Option<Vec<u8>>>) =
            pipe.query_async(&mut c).await?;
        match (set, xadd) {
            (Ok(before), Ok(id)) if lost_race(mine.as_bytes(), before.as_deref()) => {
                // A redelivery: take its entry back. Should this fail, the mapper workers still skip it.
                self.take_back(id).await;
                Ok(Stored::Duplicate(None))
            }
            (Ok(_), Ok(id)) => Ok(Stored::New(id)),
            (set, Err(e)) => {
                // Not stored. A key this request set would answer the sender's retry "duplicate" for an
                // event that is nowhere: remove it, unless another request's token has replaced it.
                if matches!(&set, Ok(before) if !lost_race(mine.as_bytes(), before.as_deref())) {
                    self.undo_key(key, mine).await;
                }
                Err(e)
            }
            (Err(e), Ok(id)) => {
                // Stored, but its dedup key could not be set: a worker may already have read the entry,
                // so taking it back and answering 503 could deliver it twice (once now, once on the
                // retry). It stays, once; the worker that reads it claims the key if it can, and a later
                // redelivery is recognised only then.
                tracing::error!(error = %e, id, "the dedup key could not be set; the event is stored without dedup");
                metrics::counter!("hookgate_dedup_failures_total", "source" => rec.source.to_owned())
                    .increment(1);
                Ok(Stored::New(id))
            }
        }
    }

    /// Remove a dedup key this request set for an event that was not stored, while it still holds this
    /// request's value. Through [`uncancelled`], and tried three times (the sender is answered after):
    /// a key left behind would call every retry a duplicate until it expires.
    async fn undo_key(&self, key: String, mine: String) {
        let mut c = self.conn.clone();
        uncancelled(async move {
            let mut pause = Duration::from_millis(50);
            for attempt in 1..=3 {
                let undone: RedisResult<i64> = DELETE_IF_MINE
                    .key(&key)
                    .arg(&mine)
                    .invoke_async(&mut c)
                    .await;
                match undone {
                    Ok(_) => return,
                    Err(u) if attempt == 3 => {
                        tracing::error!(error = %u, "could not remove the dedup key of an event that was not stored; its retries will be answered as duplicates until the key expires");
                    }
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause *= 4;
                    }
                }
            }
        })
        .await;
    }

    /// Delete a redelivery's entry, which must not stay; through [`uncancelled`].
    async fn take_back(&self, id: String) {
        let mut c = self.conn.clone();
        let stream = self.inbound_stream.clone();
        uncancelled(async move {
            let gone: RedisResult<i64> = redis::cmd("XDEL")
                .arg(&stream)
                .arg(&id)
                .query_async(&mut c)
                .await;
            if let Err(e) = gone {
                tracing::warn!(error = %e, id, "could not delete an entry that must not stay; workers skip it while its dedup key lives");
            }
        })
        .await;
    }

    /// The store script, for Redis Cluster: redis-rs's cluster client follows a slot that moved (a
    /// failover) for a single command but not inside a transaction, whose MOVED answers abort it again
    /// and again. The script keeps the stream id in the dedup key, so a duplicate names the original.
    async fn store_scripted(
        &self,
        rec: &InboundRecord<'_>,
        sender_id: &str,
        binding: &str,
        pairs: &[(&str, &[u8])],
        dedup_ttl: Duration,
    ) -> Result<Stored, RedisError> {
        let mut inv = STORE.prepare_invoke();
        inv.key(keys::dedup(
            &self.families.inbound,
            rec.source,
            sender_id,
            binding,
        ))
        .key(&self.inbound_stream)
        .arg(dedup_ttl.as_millis().max(1) as u64)
        .arg(binding);
        for (k, v) in pairs {
            inv.arg(*k).arg(*v);
        }
        let mut c = self.conn.clone();
        let (fresh, id): (i64, String) = inv.invoke_async(&mut c).await?;
        Ok(if fresh == 1 {
            Stored::New(id)
        } else {
            Stored::Duplicate(Some(id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_keeps_the_prefix_for_both_families() {
        let f = Families::new("hookgate", false);
        assert_eq!(keys::inbound(&f.inbound), "hookgate:inbound");
        assert_eq!(keys::events(&f.outbound), "hookgate:events");
    }

    #[test]
    fn a_cluster_gives_each_family_a_hash_tag_of_its_own() {
        let f = Families::new("hookgate", true);
        assert_eq!(keys::inbound(&f.inbound), "{hookgate:in}:inbound");
        assert_eq!(
            keys::dedup(&f.inbound, "stripe", "evt_1", ""),
            "{hookgate:in}:dedup:stripe:evt_1"
        );
        assert_eq!(keys::events(&f.outbound), "{hookgate:out}:events");
        // Same slot within a family, so the store script's two keys may be used together.
        let slot = |k: &str| redis::cluster_routing::Slot::for_key(k);
        assert_eq!(
            slot(&keys::inbound(&f.inbound)),
            slot(&keys::dedup(&f.inbound, "s", "x", "0f1e"))
        );
        assert_eq!(
            slot(&keys::events(&f.outbound)),
            slot(&keys::event_dedup(&f.outbound, Some("acme"), "x"))
        );
    }

    #[test]
    fn a_body_binding_names_a_key_of_its_own() {
        let k = |binding| keys::dedup("hookgate", "gh", "d-1", binding);
        assert_eq!(k(""), "hookgate:dedup:gh:d-1");
        assert_eq!(k("ab12"), "hookgate:dedup:gh:d-1|ab12");
        assert_ne!(k("ab12"), k("cd34"));
        assert_eq!(binding_of(b"t1|ab12"), b"ab12");
        assert_eq!(binding_of(b"t1|"), b"");
        assert_eq!(binding_of(b"t1"), b"");
    }

    #[test]
    fn only_a_redelivery_loses_the_race() {
        // The key holds this entry's own value: it won.
        assert!(!lost_race(b"t1|b", Some(b"t1|b")));
        // Another request's token, same body: a redelivery.
        assert!(lost_race(b"t2|b", Some(b"t1|b")));
        assert!(lost_race(b"t2|", Some(b"t1|")));
        // Another body under the same id: another event, kept.
        assert!(!lost_race(b"t2|c", Some(b"t1|b")));
        // The key expired (or was never set): nothing to lose to.
        assert!(!lost_race(b"t2|b", None));
    }

    #[test]
    fn store_values_are_a_fresh_token_and_the_binding() {
        let (a, b) = (store_value("bind"), store_value("bind"));
        let token = a.strip_suffix("|bind").expect("token|binding");
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(store_value("").len(), 33);
    }

    #[test]
    fn a_prefix_with_its_own_hash_tag_is_kept() {
        let f = Families::new("{hg}", true);
        assert_eq!(f.inbound, "{hg}");
        assert_eq!(f.outbound, "{hg}");
        // `{}` is no tag (Redis hashes the whole key), so the families still get theirs.
        assert_eq!(Families::new("a{}b", true).inbound, "{a{}b:in}");
    }

    /// With every turn taken, a store waits `wait` and then gives up with `Busy`; a freed turn is taken
    /// at once. No Redis is needed: the connection is made lazily, and no command is sent.
    #[tokio::test]
    async fn a_store_waits_for_a_turn_then_gives_up() {
        let cfg = crate::config::Config {
            redis_url: "redis://127.0.0.1:1".into(),
            ..Default::default()
        };
        let redis = Redis::from_config(&cfg).expect("redis client");
        let store = Store::connect(&redis, Families::new("t", false), Duration::from_millis(50))
            .expect("lazy store");
        let taken = store
            .inflight
            .clone()
            .try_acquire_many_owned(MAX_IN_FLIGHT as u32)
            .expect("all turns");
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(5), store.turn()).await;
        assert!(
            matches!(waited, Ok(Err(StoreError::Busy))),
            "gives up after its wait"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(taken);
        let started = std::time::Instant::now();
        assert!(store.turn().await.is_ok());
        assert!(
            started.elapsed() < Duration::from_millis(25),
            "a free turn is taken without waiting"
        );
    }
}
