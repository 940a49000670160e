//! Dead letters of inbound events: the stream `<prefix>:dead:inbound`. An entry is the event's fields (the
//! inbound layout plus its delivery progress) and why it died: `reason`, `detail`, `status`, `rule`,
//! `index`, `last_failed_at`. A stream keeps them ordered, pages by id and deletes by id; they leave only
//! by replay or an explicit delete. A replay copies the event fields back onto `<prefix>:inbound` and
//! deletes the dead letter in one script, so the current mapping applies and nothing is replayed twice.

use super::envelope::Envelope;
use super::retry::add_ack;
use super::Keys;
use crate::clock::now_ms;
use crate::redis_conn::Conn;
use redis::{RedisError, Script, Value};
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// Why an event was given up.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The event could not be mapped (the MapError text, or why the body or source is unusable), and the
    /// rule that failed when one did.
    MappingError {
        detail: String,
        rule: Option<String>,
    },
    /// The upstream refused an action with a status that retrying cannot change.
    UpstreamStatus { status: u16, body: String },
    /// Still failing `deliver.give_up_after` after the first failure: the last error, and the last
    /// answer's status when there was one.
    GaveUp { detail: String, status: Option<u16> },
    /// The action's configured route needs a value the action lacks (`upstream.routes`); nothing was sent.
    RouteError(String),
}

impl Reason {
    pub fn code(&self) -> &'static str {
        match self {
            Reason::MappingError { .. } => "mapping_error",
            Reason::UpstreamStatus { .. } => "upstream_status",
            Reason::GaveUp { .. } => "gave_up",
            Reason::RouteError(_) => "route_error",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Reason::MappingError { detail: d, .. }
            | Reason::GaveUp { detail: d, .. }
            | Reason::RouteError(d) => d,
            Reason::UpstreamStatus { body, .. } => body,
        }
    }
}

/// Dead-letter fields besides the event's own.
mod df {
    pub const REASON: &str = "reason";
    pub const DETAIL: &str = "detail";
    pub const STATUS: &str = "status";
    pub const RULE: &str = "rule";
    pub const INDEX: &str = "index";
    pub const LAST_FAILED_AT: &str = "last_failed_at";
}

/// Store a dead letter and take the entry off its stream, atomically, with `also` (the records of what
/// this pass delivered). `action` is the failing `(rule, index)`.
#[allow(clippy::too_many_arguments)]
pub async fn bury(
    conn: &mut Conn,
    keys: &Keys,
    env: &Envelope,
    reason: &Reason,
    action: Option<(&str, usize)>,
    stream: &str,
    entry_id: &str,
    also: &[redis::Cmd],
) -> Result<(), RedisError> {
    let mut xadd = redis::cmd("XADD");
    xadd.arg(&keys.dead).arg("*");
    for (k, v) in env.fields() {
        xadd.arg(k).arg(v);
    }
    xadd.arg(df::REASON)
        .arg(reason.code())
        .arg(df::DETAIL)
        .arg(reason.detail())
        .arg(df::LAST_FAILED_AT)
        .arg(now_ms());
    match reason {
        Reason::UpstreamStatus { status, .. }
        | Reason::GaveUp {
            status: Some(status),
            ..
        } => {
            xadd.arg(df::STATUS).arg(*status);
        }
        _ => {}
    }
    match (action, reason) {
        (Some((rule, index)), _) => {
            xadd.arg(df::RULE).arg(rule).arg(df::INDEX).arg(index);
        }
        (
            None,
            Reason::MappingError {
                rule: Some(rule), ..
            },
        ) => {
            xadd.arg(df::RULE).arg(rule);
        }
        _ => {}
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for cmd in also {
        pipe.add_command(cmd.clone()).ignore();
    }
    pipe.add_command(xadd).ignore();
    add_ack(&mut pipe, keys, stream, entry_id);
    pipe.query_async::<()>(conn).await?;
    metrics::counter!("hookgate_dead_letters_total", "source" => env.source().to_owned(), "reason" => reason.code())
        .increment(1);
    Ok(())
}

/// KEYS: dead stream, inbound stream. ARGV: dead letter id. Copies the event (not its failure) back to
/// inbound with one more replay, deletes the dead letter; returns the new inbound id, or nil.
const REPLAY_SCRIPT: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return false end
local keep = {meta=1, source=1, received_at=1, content_type=1, client_ip=1, request_id=1, event_id=1,
  headers=1, body=1, origin_id=1, done=1}
local f, out, replays = e[1][2], {}, 0
for i = 1, #f, 2 do
  if keep[f[i]] then out[#out+1] = f[i]; out[#out+1] = f[i+1] end
  if f[i] == 'replays' then replays = tonumber(f[i+1]) or 0 end
end
out[#out+1] = 'replays'; out[#out+1] = tostring(replays + 1)
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"#;

/// Entries looked at per page when listing or replaying by filter.
const PAGE: usize = 500;

/// The admin side of the dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    conn: Conn,
    keys: Keys,
    replay: Script,
}

/// A filter over dead letters.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub source: Option<String>,
    pub reason: Option<String>,
}

impl Filter {
    fn matches(&self, fields: &HashMap<String, Value>) -> bool {
        let is = |k: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| fields.get(k).map(text).as_deref() == Some(w))
        };
        is(crate::stream::fields::SOURCE, &self.source) && is(df::REASON, &self.reason)
    }
}

/// A page of a listing (dead letters, received events), and the cursor to pass as `after` for the next
/// one.
pub struct Page {
    pub items: Vec<Json>,
    pub next: Option<String>,
}

impl DeadLetters {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            replay: Script::new(REPLAY_SCRIPT),
        }
    }

    /// Up to `limit` dead letters after `after` (exclusive), oldest first, summaries without the body.
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, RedisError> {
        let mut items = Vec::new();
        let mut last = None;
        let mut cursor = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        loop {
            let batch = self.range(&cursor, PAGE).await?;
            let full = batch.len() == PAGE;
            for (id, fields) in batch {
                cursor = format!("({id}");
                if filter.matches(&fields) {
                    // One more matches past a full page: only then is there a next page, so the last
                    // page never points at an empty one.
                    if items.len() == limit {
                        return Ok(Page { items, next: last });
                    }
                    items.push(render(&id, &fields, false));
                    last = Some(id);
                }
            }
            if !full {
                return Ok(Page { items, next: None });
            }
        }
    }

    /// One dead letter in full (event headers and body included).
    pub async fn get(&self, id: &str) -> Result<Option<Json>, RedisError> {
        let mut one = self.range_between(id, id, 1).await?;
        Ok(one.pop().map(|(id, f)| render(&id, &f, true)))
    }

    pub async fn delete(&self, id: &str) -> Result<bool, RedisError> {
        let mut c = self.conn.clone();
        let n: u64 = redis::cmd("XDEL")
            .arg(&self.keys.dead)
            .arg(id)
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    /// Put the event back on the inbound stream; the new stream id, or `None` if there is no such letter.
    pub async fn replay(&self, id: &str) -> Result<Option<String>, RedisError> {
        let mut c = self.conn.clone();
        let new: Option<String> = self
            .replay
            .key(&self.keys.dead)
            .key(&self.keys.inbound)
            .arg(id)
            .invoke_async(&mut c)
            .await?;
        if new.is_some() {
            metrics::counter!("hookgate_dead_letter_replays_total").increment(1);
        }
        Ok(new)
    }

    /// Replay every dead letter that matches; returns how many were replayed. Only the letters there when
    /// it starts: a replayed event that fails again is dead-lettered anew, after them, and would otherwise
    /// be replayed again within the same call, without end.
    pub async fn replay_all(&self, filter: &Filter) -> Result<usize, RedisError> {
        let Some(last) = crate::stream::last_id(&self.conn, &self.keys.dead).await? else {
            return Ok(0);
        };
        let mut cursor = "-".to_string();
        let mut replayed = 0;
        loop {
            let batch = self.range_between(&cursor, &last, PAGE).await?;
            let full = batch.len() == PAGE;
            for (id, fields) in batch {
                cursor = format!("({id}");
                if filter.matches(&fields) && self.replay(&id).await?.is_some() {
                    replayed += 1;
                }
            }
            if !full {
                return Ok(replayed);
            }
        }
    }

    async fn range(
        &self,
        start: &str,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, Value>)>, RedisError> {
        self.range_between(start, "+", count).await
    }

    async fn range_between(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, Value>)>, RedisError> {
        use crate::stream::{entries, Walk};
        entries(&self.conn, &self.keys.dead, Walk::Oldest, start, end, count).await
    }
}

fn text(v: &Value) -> String {
    redis::from_redis_value::<Vec<u8>>(v.clone())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

use crate::clock::rfc3339_ms;

/// A dead letter as the admin API shows it.
fn render(id: &str, fields: &HashMap<String, Value>, full: bool) -> Json {
    let get = |k: &str| fields.get(k).map(text).unwrap_or_default();
    let time = |k: &str| get(k).parse::<u64>().ok().map(rfc3339_ms);
    let env = Envelope::from_fields(id, fields.clone()).unwrap_or_default();
    let event = env.view(full);
    json!({
        "id": id,
        "source": env.receipt.source,
        "reason": get(df::REASON),
        "detail": get(df::DETAIL),
        "status": get(df::STATUS).parse::<u16>().ok(),
        "rule": fields.get(df::RULE).map(text),
        "index": get(df::INDEX).parse::<usize>().ok(),
        "attempts": env.attempts,
        "replays": env.replays,
        "done": env.done,
        "first_failed_at": env.first_failed_at.map(rfc3339_ms),
        "last_failed_at": time(df::LAST_FAILED_AT),
        "event": event,
    })
}
