//! Reading back the events received, from `<prefix>:inbound`, for the admin API: what arrived, when, from
//! where, with which headers and body; for as long as the stream keeps them (`deliver.inbound_retention`
//! once mapped). "Did Stripe send us evt_123?" is answered here rather than with redis-cli.

use super::envelope::Envelope;
use super::Page;
use crate::redis_conn::Conn;
use crate::stream::Walk;
use redis::{RedisError, Value};
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// Entries read per command. Each comes with its body (up to `max_body`), which a listing then drops.
const BATCH: usize = 100;

/// Entries one listing call looks at, at most: a filter that matches nothing must not walk a day of
/// webhooks in one call. A call that stops there gives its place as `next`.
pub const SCAN_LIMIT: usize = 10_000;

/// Body bytes one listing call reads, at most (checked after each batch, so one batch of large bodies
/// may pass it); then it stops as at [`SCAN_LIMIT`].
const BYTE_BUDGET: usize = 64 << 20;

/// Which received events a listing wants.
#[derive(Default)]
pub struct ReceivedFilter {
    pub source: Option<String>,
    /// The sender's event id (`evt_...`, the dedup id).
    pub event_id: Option<String>,
}

impl ReceivedFilter {
    /// An empty value (`?source=`) is no filter: no source or sender id is empty.
    fn matches(&self, env: &Envelope) -> bool {
        let r = &env.receipt;
        let is = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.is_empty() || w == have)
        };
        is(&self.source, &r.source) && is(&self.event_id, &r.event_id)
    }
}

/// The received events on the inbound stream.
#[derive(Clone)]
pub struct Received {
    conn: Conn,
    stream: String,
}

impl Received {
    pub fn new(conn: Conn, keys: &super::Keys) -> Self {
        Self {
            conn,
            stream: keys.inbound.clone(),
        }
    }

    /// Up to `limit` events older than `after` (exclusive, and above `0-0`, which Redis refuses as the
    /// top of this range; the newest when `None`) that match, newest first, without headers and body. Looks at [`SCAN_LIMIT`] entries (and about [`BYTE_BUDGET`] of
    /// bodies) at most; `next` is then where it stopped, so a page may hold fewer than `limit` events and
    /// still have a next one.
    pub async fn list(
        &self,
        filter: &ReceivedFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, RedisError> {
        let mut items = Vec::new();
        let mut cursor = after.map(|a| format!("({a}")).unwrap_or_else(|| "+".into());
        let (mut seen, mut bytes) = (0, 0);
        let mut last = None;
        loop {
            if bytes > BYTE_BUDGET {
                return Ok(Page { items, next: last });
            }
            let batch = self.range(&cursor, "-", BATCH).await?;
            let full = batch.len() == BATCH;
            for (id, fields) in batch {
                cursor = format!("({id}");
                seen += 1;
                let env = Envelope::from_fields(&id, fields).unwrap_or_default();
                bytes += env.body.len();
                if filter.matches(&env) {
                    // One more matches past a full page: only then is there a next page.
                    if items.len() == limit {
                        return Ok(Page { items, next: last });
                    }
                    items.push(render(&id, &env, false));
                }
                last = Some(id);
                if seen == SCAN_LIMIT {
                    return Ok(Page { items, next: last });
                }
            }
            if !full {
                return Ok(Page { items, next: None });
            }
        }
    }

    /// One received event in full (headers and body included).
    pub async fn get(&self, id: &str) -> Result<Option<Json>, RedisError> {
        let mut one = self.range(id, id, 1).await?;
        Ok(one.pop().map(|(id, fields)| {
            let env = Envelope::from_fields(&id, fields).unwrap_or_default();
            render(&id, &env, true)
        }))
    }

    /// Entries from `start` down to `end`, at most `count`.
    async fn range(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, Value>)>, RedisError> {
        crate::stream::entries(&self.conn, &self.stream, Walk::Newest, start, end, count).await
    }
}

/// A received event as the admin API shows it: its stream id, source and size beside the event's view.
fn render(id: &str, env: &Envelope, full: bool) -> Json {
    let mut v = json!({
        "id": id,
        "source": env.receipt.source,
        "size": env.body.len(),
        "event": env.view(full),
    });
    if env.replays > 0 {
        v["replays"] = json!(env.replays);
    }
    v
}
