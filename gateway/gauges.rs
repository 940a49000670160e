//! Gauges that only Redis knows: stream lengths, pending entries and lag per consumer group, parked
//! retries, stored dead letters, and how far the outbound deliveries are behind their time. A counter in one process cannot tell them (every replica shares the
//! streams), so a sampler reads them from Redis every `metrics_sample_interval`. Every replica samples
//! the same keys: aggregate with `max` across pods, not `sum`.
//!
//! What is sampled is a list of [`Watch`]es: the inbound side's come from [`inbound`]; another part
//! (the outbound relay) adds its own streams the same way in `app.rs`.

use crate::redis_conn::Conn;
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// One Redis key to sample; `label` is the key without the prefix (e.g. `inbound`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// A stream: `hookgate_stream_length{stream}`, and per consumer group `hookgate_stream_pending` and
    /// `hookgate_stream_lag{stream,group}` (lag: entries not yet delivered to the group).
    Stream { label: String, key: String },
    /// A dead-letter stream: `hookgate_dead_letters_stored{kind}`.
    DeadLetters { kind: String, key: String },
    /// A sorted set of parked retries: `hookgate_retries_scheduled{kind}`.
    Scheduled { kind: String, key: String },
    /// The outbound dispatchers' `ready` set (each subscription scored by its earliest due delivery, in
    /// ms): `hookgate_outbound_due_subscriptions`, the subscriptions with a delivery due now, and
    /// `hookgate_outbound_overdue_seconds`, how long the most overdue one has waited past its time. A
    /// delivery in hand is leased into the future, so neither counts what is being sent.
    Due { key: String },
}

/// The inbound side's keys: the inbound stream and the due-retry stream (both read by the mappers), the
/// retry set and the dead letters.
pub fn inbound(prefix: &str) -> Vec<Watch> {
    let k = crate::deliver::Keys::new(prefix);
    let label = |key: &str| {
        key.strip_prefix(&format!("{prefix}:"))
            .unwrap_or(key)
            .to_string()
    };
    vec![
        Watch::Stream {
            label: label(&k.inbound),
            key: k.inbound.clone(),
        },
        Watch::Stream {
            label: label(&k.due),
            key: k.due.clone(),
        },
        Watch::Scheduled {
            kind: "inbound".into(),
            key: k.retry,
        },
        Watch::DeadLetters {
            kind: "inbound".into(),
            key: k.dead,
        },
    ]
}

/// The outbound side's keys: the published events (read by the relays) and their dead letters.
pub fn outbound(prefix: &str) -> Vec<Watch> {
    vec![
        Watch::Stream {
            label: "events".into(),
            key: crate::stream::keys::events(prefix),
        },
        Watch::DeadLetters {
            kind: "outbound".into(),
            key: crate::stream::keys::dead_outbound(prefix),
        },
        Watch::Due {
            key: crate::outbound::Keys::new(prefix).ready,
        },
    ]
}

/// Sample now, then every `every`, until `stop`.
pub fn spawn(conn: Conn, watches: Vec<Watch>, every: Duration, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopped = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                return;
            }
            // Bounded: a Redis that hangs must not pile samples up behind each other.
            let mut c = conn.clone();
            let bound = every.max(Duration::from_secs(1));
            match tokio::time::timeout(bound, sample(&mut c, &watches)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    metrics::counter!("hookgate_gauge_sample_failures_total").increment(1);
                    tracing::debug!(error = %e, "cannot sample stream gauges");
                }
                Err(_) => metrics::counter!("hookgate_gauge_sample_failures_total").increment(1),
            }
        }
    });
}

/// Read every watched key once and set its gauges. A key that cannot be read does not stop the others
/// (on a cluster, one family's master may be down while the other's answers); the first error is returned.
pub async fn sample(conn: &mut Conn, watches: &[Watch]) -> Result<(), redis::RedisError> {
    let mut first_error = None;
    for w in watches {
        if let Err(e) = sample_one(conn, w).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn sample_one(conn: &mut Conn, w: &Watch) -> Result<(), redis::RedisError> {
    match w {
        Watch::Stream { label, key } => {
            let len: u64 = redis::cmd("XLEN").arg(key).query_async(conn).await?;
            metrics::gauge!("hookgate_stream_length", "stream" => label.clone()).set(len as f64);
            for g in groups(conn, key).await? {
                let labels = [("stream", label.clone()), ("group", g.name)];
                metrics::gauge!("hookgate_stream_pending", &labels).set(g.pending as f64);
                let lag = match (g.lag, g.entries_read) {
                    (Some(lag), _) => Some(lag),
                    // Redis reports no lag when a deletion lies past the group's position (a
                    // redelivery's entry taken back) until the group reads past it. Entries added
                    // less entries read is then the lag plus the deleted entries ahead: a close
                    // upper bound, and cheap (no entry is read).
                    (None, Some(read)) => {
                        Some(entries_added(conn, key).await?.saturating_sub(read))
                    }
                    (None, None) => None,
                };
                if let Some(lag) = lag {
                    metrics::gauge!("hookgate_stream_lag", &labels).set(lag as f64);
                }
            }
        }
        Watch::DeadLetters { kind, key } => {
            let len: u64 = redis::cmd("XLEN").arg(key).query_async(conn).await?;
            metrics::gauge!("hookgate_dead_letters_stored", "kind" => kind.clone()).set(len as f64);
        }
        Watch::Scheduled { kind, key } => {
            let n: u64 = redis::cmd("ZCARD").arg(key).query_async(conn).await?;
            metrics::gauge!("hookgate_retries_scheduled", "kind" => kind.clone()).set(n as f64);
        }
        Watch::Due { key } => {
            let now = crate::clock::now_ms();
            let (due, earliest): (u64, Vec<(String, f64)>) = redis::pipe()
                .cmd("ZCOUNT")
                .arg(key)
                .arg("-inf")
                .arg(now)
                .cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            let overdue_ms = earliest
                .first()
                .map_or(0.0, |(_, at)| (now as f64 - at).max(0.0));
            metrics::gauge!("hookgate_outbound_due_subscriptions").set(due as f64);
            metrics::gauge!("hookgate_outbound_overdue_seconds").set(overdue_ms / 1000.0);
        }
    }
    Ok(())
}

/// How many entries were ever added to the stream (`XINFO STREAM`'s `entries-added`).
async fn entries_added(conn: &mut Conn, key: &str) -> Result<u64, redis::RedisError> {
    let v: Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(conn)
        .await?;
    Ok(fields(&v)
        .get("entries-added")
        .and_then(|v| number(v))
        .unwrap_or(0))
}

/// One consumer group as `XINFO GROUPS` tells it.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub pending: u64,
    pub lag: Option<u64>,
    pub entries_read: Option<u64>,
}

/// The stream's consumer groups; none when the stream does not exist yet.
async fn groups(conn: &mut Conn, key: &str) -> Result<Vec<Group>, redis::RedisError> {
    let reply: Result<Value, _> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await;
    match reply {
        Ok(v) => Ok(parse_groups(&v)),
        Err(e) if e.to_string().contains("no such key") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `XINFO GROUPS` answers a list of field/value lists (RESP2) or maps (RESP3); unknown shapes are skipped.
pub fn parse_groups(v: &Value) -> Vec<Group> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let f = fields(item);
            Some(Group {
                name: f.get("name").and_then(|v| text(v))?,
                pending: f.get("pending").and_then(|v| number(v)).unwrap_or(0),
                lag: f.get("lag").and_then(|v| number(v)),
                entries_read: f.get("entries-read").and_then(|v| number(v)),
            })
        })
        .collect()
}

fn fields(v: &Value) -> HashMap<String, &Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(kv) => {
            for pair in kv.chunks(2) {
                if let [k, v] = pair {
                    if let Some(k) = text(k) {
                        out.insert(k, v);
                    }
                }
            }
        }
        Value::Map(kv) => {
            for (k, v) in kv {
                if let Some(k) = text(k) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn groups_from_resp2_and_resp3() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("mappers"),
            bulk("consumers"),
            Value::Int(2),
            bulk("pending"),
            Value::Int(7),
            bulk("entries-read"),
            Value::Int(3),
            bulk("lag"),
            Value::Nil,
        ])]);
        assert_eq!(
            parse_groups(&resp2),
            vec![Group {
                name: "mappers".into(),
                pending: 7,
                lag: None,
                entries_read: Some(3),
            }]
        );
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("relay")),
            (bulk("pending"), Value::Int(0)),
            (bulk("lag"), Value::Int(12)),
        ])]);
        assert_eq!(
            parse_groups(&resp3),
            vec![Group {
                name: "relay".into(),
                pending: 0,
                lag: Some(12),
                entries_read: None,
            }]
        );
        assert!(parse_groups(&Value::Nil).is_empty());
    }

    #[test]
    fn inbound_labels_drop_the_prefix() {
        let w = inbound("{hg}");
        assert_eq!(
            w[0],
            Watch::Stream {
                label: "inbound".into(),
                key: "{hg}:inbound".into()
            }
        );
        assert!(matches!(&w[1], Watch::Stream { label, .. } if label == "retry:inbound:due"));
    }
}
