//! `GET /v1/deliveries?subscription=&status=`, `GET /v1/deliveries/{id}` (with every attempt), and the
//! outbound dead letters, mirroring the inbound ones: `GET /v1/outbound/dead-letters`,
//! `GET|DELETE /v1/outbound/dead-letters/{id}`, `POST /v1/outbound/dead-letters/{id}/replay`,
//! `POST /v1/outbound/dead-letters/replay?subscription=&reason=`. A replay puts the delivery back with its
//! id, so the receiver sees the same `webhook-id`.

use super::Query;
use crate::error::Error;
use crate::outbound::queue::{self, rf};
use crate::outbound::Outbound;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Index entries looked at per page while filtering by status.
const SCAN: usize = 500;

pub fn routes(o: Outbound) -> Router {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/{id}", get(show))
        .route("/v1/outbound/dead-letters", get(dead_list))
        .route("/v1/outbound/dead-letters/replay", post(dead_replay_all))
        .route(
            "/v1/outbound/dead-letters/{id}",
            get(dead_show).delete(dead_remove),
        )
        .route("/v1/outbound/dead-letters/{id}/replay", post(dead_replay))
        .with_state(o)
}

fn unavailable(e: redis::RedisError) -> Error {
    tracing::warn!(error = %e, "deliveries: redis did not answer");
    Error::Unavailable
}

fn summary(rec: &HashMap<String, String>) -> Value {
    let s = |k: &str| rec.get(k).filter(|v| !v.is_empty()).cloned();
    let n = |k: &str| rec.get(k).and_then(|v| v.parse::<u64>().ok());
    json!({
        "id": s(rf::ID),
        "subscription": s(rf::SUBSCRIPTION),
        "account": s(rf::ACCOUNT),
        "type": s(rf::TYPE),
        "status": s(rf::STATUS),
        "reason": s(rf::REASON),
        "attempts": n(rf::ATTEMPTS).unwrap_or(0),
        "created_at": n(rf::CREATED_AT),
        "next_attempt_at": (s(rf::STATUS).as_deref() == Some("pending")).then(|| n(rf::NEXT_ATTEMPT_AT)).flatten(),
        "finished_at": n(rf::FINISHED_AT),
        "last_status": n(rf::LAST_STATUS),
        "last_error": s(rf::LAST_ERROR),
        "replays": n(rf::REPLAYS).unwrap_or(0),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    subscription: Option<String>,
    /// pending | delivered | failed
    status: Option<String>,
    /// The `next` of the previous page.
    before: Option<String>,
    limit: Option<usize>,
}

/// Where a page of deliveries starts: at creation time `score` (ms), after the first `skip` deliveries
/// created then. A fan-out creates its deliveries in the same millisecond, so a time alone would skip
/// the rest of them. Written `<ms>:<skip>`; a bare `<ms>` (a cursor of an older version) starts below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    score: u64,
    skip: usize,
    inclusive: bool,
}

impl Cursor {
    fn parse(s: &str) -> Option<Self> {
        let num = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        Some(match s.split_once(':') {
            // A skip Redis could not take as an offset is no cursor of ours.
            Some((score, skip)) => Self {
                score: num(score)?,
                skip: usize::try_from(num(skip)?)
                    .ok()
                    .filter(|s| *s <= i32::MAX as usize)?,
                inclusive: true,
            },
            None => Self {
                score: num(s)?,
                skip: 0,
                inclusive: false,
            },
        })
    }

    fn max(&self) -> String {
        match self.inclusive {
            true => self.score.to_string(),
            false => format!("({}", self.score),
        }
    }
}

/// Newest first.
async fn list(State(o): State<Outbound>, Query(q): Query<ListQuery>) -> Result<Json<Value>, Error> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    if let Some(s) = q.status.as_deref() {
        if !["pending", "delivered", "failed"].contains(&s) {
            return Err(Error::BadRequest(format!(
                "status: `{}` is not one of pending, delivered, failed",
                crate::error::one_line(s)
            )));
        }
    }
    let mut at = match q.before.as_deref() {
        None => None,
        Some(b) => Some(Cursor::parse(b).ok_or_else(|| {
            Error::BadRequest(format!(
                "before: `{}` is not a cursor; pass the previous page's `next`",
                crate::error::one_line(b)
            ))
        })?),
    };
    let index = match &q.subscription {
        Some(s) => o.keys.sub_index(s),
        None => o.keys.index.clone(),
    };
    let mut c = o.conn.clone();
    let mut items = Vec::new();
    // Set while more entries may follow what was looked at: at the end the page's `next`.
    let mut more = true;
    for _ in 0..20 {
        let (max, skip) = at.map_or(("+inf".to_string(), 0), |a| (a.max(), a.skip));
        let page: Vec<(String, u64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&index)
            .arg(&max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(skip)
            .arg(SCAN)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if page.is_empty() {
            more = false;
            break;
        }
        let mut pipe = redis::pipe();
        for (id, _) in &page {
            pipe.cmd("HGETALL").arg(o.keys.record(id));
        }
        let recs: Vec<HashMap<String, String>> =
            pipe.query_async(&mut c).await.map_err(unavailable)?;
        let mut full = false;
        for ((_, score), rec) in page.iter().zip(recs) {
            // Each entry looked at moves the cursor past it, listed or not.
            at = Some(match at {
                Some(a) if a.inclusive && a.score == *score => Cursor {
                    skip: a.skip + 1,
                    ..a
                },
                _ => Cursor {
                    score: *score,
                    skip: 1,
                    inclusive: true,
                },
            });
            if rec.is_empty()
                || q.status
                    .as_deref()
                    .is_some_and(|s| rec.get(rf::STATUS).map(String::as_str) != Some(s))
            {
                continue;
            }
            items.push(summary(&rec));
            if items.len() == limit {
                full = true;
                break;
            }
        }
        if full {
            break;
        }
        if page.len() < SCAN {
            more = false;
            break;
        }
    }
    // A page cut short by the scan bound (a filter matching few) still says where to go on.
    let next = at
        .filter(|_| more)
        .map(|a| format!("{}:{}", a.score, a.skip));
    Ok(Json(json!({ "deliveries": items, "next": next })))
}

async fn show(State(o): State<Outbound>, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    let mut c = o.conn.clone();
    let rec: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(o.keys.record(&id))
        .query_async(&mut c)
        .await
        .map_err(unavailable)?;
    if rec.is_empty() {
        return Err(Error::NotFound);
    }
    let attempts: Vec<String> = redis::cmd("LRANGE")
        .arg(o.keys.attempts(&id))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .map_err(unavailable)?;
    let mut v = summary(&rec);
    v["event"] = rec
        .get(rf::EVENT)
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or(Value::Null);
    v["attempt_log"] = Value::Array(
        attempts
            .iter()
            .filter_map(|a| serde_json::from_str(a).ok())
            .collect(),
    );
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    subscription: Option<String>,
    reason: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// The dead letter's fields that are numbers, shown as numbers as the delivery record shows them (times
/// in Unix milliseconds).
const DEAD_NUMBERS: [&str; 4] = ["attempts", "replays", "created_at", "failed_at"];

fn dead_view(id: &str, fields: &HashMap<String, String>) -> Value {
    let mut m: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| {
            let number = DEAD_NUMBERS
                .contains(&k.as_str())
                .then(|| v.parse::<u64>().ok())
                .flatten();
            (k.clone(), number.map_or_else(|| json!(v), |n| json!(n)))
        })
        .collect();
    if let Some(e) = fields
        .get("event")
        .and_then(|e| serde_json::from_str(e).ok())
    {
        m.insert("event".into(), e);
    }
    m.insert("id".into(), json!(id));
    Value::Object(m)
}

fn dead_matches(f: &HashMap<String, String>, sub: Option<&str>, reason: Option<&str>) -> bool {
    sub.is_none_or(|s| f.get("subscription").map(String::as_str) == Some(s))
        && reason.is_none_or(|r| f.get("reason").map(String::as_str) == Some(r))
}

/// Dead letters matching the filter, oldest first, from after `after` up to `until` (`+`: the end).
async fn dead_scan(
    o: &Outbound,
    sub: Option<&str>,
    reason: Option<&str>,
    after: Option<&str>,
    until: &str,
    limit: usize,
) -> Result<(Vec<(String, HashMap<String, String>)>, Option<String>), Error> {
    let mut c = o.conn.clone();
    let mut from = after.map_or("-".to_string(), |a| format!("({a}"));
    let mut out = Vec::new();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&o.keys.dead)
            .arg(&from)
            .arg(until)
            .arg("COUNT")
            .arg(SCAN)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let n = page.len();
        let Some(last) = page.last().map(|p| p.0.clone()) else {
            return Ok((out, None));
        };
        for (id, f) in page {
            if dead_matches(&f, sub, reason) {
                // One more matches past a full page: only then is there a next page.
                if out.len() == limit {
                    let next = out.last().map(|(id, _)| id.clone());
                    return Ok((out, next));
                }
                out.push((id, f));
            }
        }
        if n < SCAN {
            return Ok((out, None));
        }
        from = format!("({last}");
    }
}

async fn dead_list(
    State(o): State<Outbound>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<Value>, Error> {
    let after = q.after.as_deref().map(super::cursor).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let (items, next) = dead_scan(
        &o,
        q.subscription.as_deref(),
        q.reason.as_deref(),
        after,
        "+",
        limit,
    )
    .await?;
    let items: Vec<Value> = items.iter().map(|(id, f)| dead_view(id, f)).collect();
    Ok(Json(json!({ "dead_letters": items, "next": next })))
}

async fn dead_show(
    State(o): State<Outbound>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = super::path_id(&id)?;
    let mut c = o.conn.clone();
    let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&o.keys.dead)
        .arg(id)
        .arg(id)
        .query_async(&mut c)
        .await
        .map_err(unavailable)?;
    page.first()
        .map(|(id, f)| Json(dead_view(id, f)))
        .ok_or(Error::NotFound)
}

async fn dead_remove(
    State(o): State<Outbound>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = super::path_id(&id)?;
    let mut c = o.conn.clone();
    let n: u64 = redis::cmd("XDEL")
        .arg(&o.keys.dead)
        .arg(id)
        .query_async(&mut c)
        .await
        .map_err(unavailable)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(Json(json!({ "deleted": id })))
}

async fn dead_replay(
    State(o): State<Outbound>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = super::path_id(&id)?;
    let mut c = o.conn.clone();
    let now = crate::clock::now_ms();
    match queue::replay(&mut c, &o.scripts, &o.keys, id, now)
        .await
        .map_err(unavailable)?
    {
        Some(delivery) => {
            o.wake.notify_one();
            Ok(Json(json!({ "replayed": id, "delivery": delivery })))
        }
        None => Err(Error::NotFound),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterQuery {
    subscription: Option<String>,
    reason: Option<String>,
    /// Every dead letter: said in so many words, never the result of a missing filter.
    all: Option<bool>,
}

async fn dead_replay_all(
    State(o): State<Outbound>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, Error> {
    super::bulk_scope(
        q.subscription.is_some() || q.reason.is_some(),
        q.all,
        "subscription",
    )?;
    let mut replayed = 0u64;
    let mut after: Option<String> = None;
    // Only the letters there now: one replayed and dead-lettered again comes after them.
    let Some(last) = crate::stream::last_id(&o.conn, &o.keys.dead)
        .await
        .map_err(unavailable)?
    else {
        return Ok(Json(json!({ "replayed": 0 })));
    };
    loop {
        let (page, next) = dead_scan(
            &o,
            q.subscription.as_deref(),
            q.reason.as_deref(),
            after.as_deref(),
            &last,
            SCAN,
        )
        .await?;
        let mut c = o.conn.clone();
        let now = crate::clock::now_ms();
        for (id, _) in &page {
            if queue::replay(&mut c, &o.scripts, &o.keys, id, now)
                .await
                .map_err(unavailable)?
                .is_some()
            {
                replayed += 1;
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    o.wake.notify_one();
    Ok(Json(json!({ "replayed": replayed })))
}
