//! A published event: validated on `POST /v1/events`, stored as the fields of `stream::event_fields`,
//! read back by the relay (from our XADD or a producer's own) as one JSON document, the same one filters
//! and templates see and deliveries carry: `{"id", "type", "account", "timestamp", "data"}`.

use super::subscription::valid_name;
use crate::stream::event_fields as f;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// `POST /v1/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<String>,
    pub data: Value,
}

impl PublishInput {
    /// The stream fields, or why the event is refused.
    pub fn fields(&self, now_ms: u64) -> Result<Vec<(&'static str, String)>, String> {
        if !valid_name(&self.kind, b"") {
            return Err("type: 1 to 200 letters, digits or . _ : -, e.g. contact.created".into());
        }
        let mut out = vec![(f::TYPE, self.kind.clone())];
        if let Some(a) = &self.account {
            if !valid_name(a, b"@") {
                return Err("account: 1 to 200 letters, digits or . _ : - @".into());
            }
            out.push((f::ACCOUNT, a.clone()));
        }
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control() || c == ' ') {
                return Err("id: 1 to 200 printable characters without spaces".into());
            }
            out.push((f::ID, id.clone()));
        }
        if let Some(t) = &self.occurred_at {
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| "occurred_at: an RFC 3339 time such as 2026-01-31T12:00:00Z")?;
            out.push((f::OCCURRED_AT, t.clone()));
        }
        out.push((f::DATA, self.data.to_string()));
        out.push((f::PUBLISHED_AT, now_ms.to_string()));
        Ok(out)
    }
}

/// An event read from the stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub stream_id: String,
    pub kind: String,
    pub account: Option<String>,
    /// The JSON document deliveries carry and filters see.
    pub doc: Value,
}

use crate::clock::rfc3339_ms;

impl Event {
    /// Parse a stream entry; `Err` says why it is not an event (it is then skipped).
    pub fn from_fields(
        stream_id: &str,
        map: &HashMap<String, redis::Value>,
    ) -> Result<Self, String> {
        let get = |k: &str| -> Option<String> {
            map.get(k)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .filter(|s| !s.is_empty())
        };
        let kind = get(f::TYPE).ok_or("no `type` field")?;
        if !valid_name(&kind, b"") {
            return Err(format!("`type` {kind:?} is not an event type"));
        }
        let data: Value = match get(f::DATA) {
            Some(t) => serde_json::from_str(&t).map_err(|e| format!("`data` is not JSON: {e}"))?,
            None => Value::Object(Default::default()),
        };
        let account = get(f::ACCOUNT);
        let id = get(f::ID).unwrap_or_else(|| stream_id.to_string());
        let stream_ms: u64 = stream_id
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let timestamp = get(f::OCCURRED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            })
            .unwrap_or_else(|| {
                let ms = get(f::PUBLISHED_AT)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(stream_ms);
                rfc3339_ms(ms)
            });
        let doc = json!({
            "id": id,
            "type": kind,
            "account": account,
            "timestamp": timestamp,
            "data": data,
        });
        Ok(Self {
            stream_id: stream_id.to_string(),
            kind,
            account,
            doc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_validation() {
        let ok = PublishInput {
            kind: "contact.created".into(),
            account: Some("acme".into()),
            id: Some("evt_1".into()),
            occurred_at: Some("2026-01-31T12:00:00+01:00".into()),
            data: json!({"email": "a@b.c"}),
        };
        let f = ok.fields(5).unwrap();
        assert!(f.contains(&("data", "{\"email\":\"a@b.c\"}".into())));
        for bad in [
            PublishInput {
                kind: "has space".into(),
                ..clone(&ok)
            },
            PublishInput {
                occurred_at: Some("yesterday".into()),
                ..clone(&ok)
            },
            PublishInput {
                account: Some(String::new()),
                ..clone(&ok)
            },
        ] {
            assert!(bad.fields(5).is_err());
        }
    }

    fn clone(p: &PublishInput) -> PublishInput {
        PublishInput {
            kind: p.kind.clone(),
            account: p.account.clone(),
            id: p.id.clone(),
            occurred_at: p.occurred_at.clone(),
            data: p.data.clone(),
        }
    }

    #[test]
    fn read_back_as_a_document() {
        let mut m = HashMap::new();
        m.insert(
            "type".to_string(),
            redis::Value::BulkString(b"contact.created".to_vec()),
        );
        m.insert(
            "data".to_string(),
            redis::Value::BulkString(b"{\"a\":1}".to_vec()),
        );
        m.insert(
            "occurred_at".to_string(),
            redis::Value::BulkString(b"2026-01-31T12:00:00+01:00".to_vec()),
        );
        let e = Event::from_fields("1700000000000-0", &m).unwrap();
        assert_eq!(e.doc["timestamp"], "2026-01-31T11:00:00.000Z");
        assert_eq!(e.doc["id"], "1700000000000-0");
        assert_eq!(e.doc["data"], json!({"a": 1}));
        m.remove("type");
        assert!(Event::from_fields("1-0", &m).is_err());
    }
}
