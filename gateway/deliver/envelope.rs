//! One inbound event with its delivery progress. The same field layout (`source`, the rest of the receipt
//! in `meta`, the body, then the progress) is used for entries of `<prefix>:inbound`, parked retries, the retry-due stream and
//! dead letters, so one parser reads them all and a dead letter replays by copying fields (see `dead.rs`).

use crate::config::InboundFormat;
use crate::stream::{fields as f, Receipt, ReceiptParts, Shape};
use redis::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// An event as a mapper worker holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    /// The stream id the event was first stored under: the basis of idempotency keys, sent as
    /// `X-Hookgate-Event-Id`.
    pub origin_id: String,
    /// What the event was received with, as stored beside its body: source, time, content type,
    /// client IP, request id, event id, dedup value and the kept headers.
    pub receipt: Receipt,
    pub body: Vec<u8>,
    /// Replays from the dead letters: part of the idempotency key, so an upstream that stored the failed
    /// answer under the old key gets a fresh request.
    pub replays: u32,
    /// The actions already delivered; never sent again.
    pub done: Vec<Done>,
    /// Delivery passes that failed.
    pub attempts: u32,
    /// Times the event was put back because its source was saturated (not failures).
    pub deferrals: u32,
    pub first_failed_at: Option<u64>,
    pub last_error: String,
    /// The shape the entry was read in, and is written back in (a parked retry, a dead letter): an entry
    /// stored for workers of a version before `meta` stays readable by them through its retries.
    pub format: InboundFormat,
    /// Set when the entry's `meta` could not be read. Such an event is dead-lettered, not dropped, and
    /// its `meta` is written back as it was stored: what arrived is kept for whoever looks into it.
    pub unreadable: Option<Unreadable>,
}

/// An entry's `meta` that is no receipt: why, and its bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unreadable {
    pub why: String,
    pub meta: Vec<u8>,
}

impl Envelope {
    /// The event as the admin API shows it (a dead letter's `event`, a received event): the summary, and
    /// with `full` the client address, the kept headers and the body (`body`, or `body_base64` when it
    /// is not UTF-8).
    pub fn view(&self, full: bool) -> serde_json::Value {
        use base64::Engine;
        use serde_json::json;
        let r = &self.receipt;
        let mut event = json!({
            "id": self.origin_id,
            "event_id": r.event_id,
            "received_at": r.received_at.map(crate::clock::rfc3339_ms),
            "content_type": r.content_type,
            "request_id": r.request_id,
        });
        if full {
            event["client_ip"] = json!(r.client_ip);
            event["headers"] = serde_json::from_str(&r.headers).unwrap_or(serde_json::Value::Null);
            match std::str::from_utf8(&self.body) {
                Ok(t) => event["body"] = json!(t),
                Err(_) => {
                    event["body_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(&self.body))
                }
            }
        }
        event
    }

    /// Read an entry's fields (its receipt in `meta`, or the separate fields of older entries);
    /// `entry_id` is the origin unless the entry names one. Only `source` is required: an entry with an
    /// unreadable `meta` is read as its source and body, and marked [`Envelope::unreadable`].
    pub fn from_fields(entry_id: &str, map: HashMap<String, Value>) -> Result<Self, String> {
        let (receipt, unreadable) = match Receipt::of_entry(&map) {
            Ok(r) => (r, None),
            Err(e) => (Receipt::default(), Some(format!("entry {entry_id}: {e}"))),
        };
        let format = if map.contains_key(f::META) {
            InboundFormat::Meta
        } else {
            InboundFormat::Fields
        };
        let mut e = Envelope {
            format,
            origin_id: entry_id.to_string(),
            receipt,
            ..Default::default()
        };
        let mut meta = Vec::new();
        for (k, v) in map {
            let bytes: Vec<u8> = redis::from_redis_value(v).unwrap_or_default();
            let text = || String::from_utf8_lossy(&bytes).into_owned();
            match k.as_str() {
                f::ORIGIN_ID if !bytes.is_empty() => e.origin_id = text(),
                f::REPLAYS => e.replays = text().parse().unwrap_or(0),
                f::DONE => e.done = serde_json::from_slice(&bytes).unwrap_or_default(),
                f::ATTEMPTS => e.attempts = text().parse().unwrap_or(0),
                f::DEFERRALS => e.deferrals = text().parse().unwrap_or(0),
                f::FIRST_FAILED_AT => e.first_failed_at = text().parse().ok(),
                f::LAST_ERROR => e.last_error = text(),
                f::BODY => e.body = bytes,
                f::SOURCE if unreadable.is_some() => e.receipt.source = text(),
                f::META if unreadable.is_some() => meta = bytes,
                _ => {}
            }
        }
        e.unreadable = unreadable.map(|why| Unreadable { why, meta });
        if e.receipt.source.is_empty() {
            return Err(format!("entry {entry_id} names no `source`"));
        }
        Ok(e)
    }

    /// The event's source: the name its mapping, metrics and gates go by.
    pub fn source(&self) -> &str {
        &self.receipt.source
    }

    /// Every field, progress included: what a parked retry or a dead letter stores. The dedup value is
    /// left out: the race it settles was settled when the entry was first read.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let r = &self.receipt;
        // Headers from an older entry are written as they were read, or as `{}` if they are not an
        // object: `meta` embeds them as JSON.
        let headers = serde_json::from_str::<&serde_json::value::RawValue>(&r.headers)
            .ok()
            .map(|raw| raw.get())
            .filter(|h| h.starts_with('{'))
            .unwrap_or("{}");
        let parts = ReceiptParts {
            source: &r.source,
            received_at: r.received_at,
            content_type: &r.content_type,
            client_ip: &r.client_ip,
            request_id: &r.request_id,
            event_id: Some(r.event_id.as_str()).filter(|e| !e.is_empty()),
            dedup: None,
            headers_json: headers,
        };
        let mut out: Vec<(&'static str, Vec<u8>)> = match &self.unreadable {
            Some(u) => vec![
                (f::SOURCE, r.source.clone().into_bytes()),
                (f::META, u.meta.clone()),
            ],
            None => Shape::of(&parts, self.format)
                .pairs(&parts)
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect(),
        };
        out.extend([
            (f::BODY, self.body.clone()),
            (f::ORIGIN_ID, self.origin_id.clone().into_bytes()),
            (f::REPLAYS, self.replays.to_string().into_bytes()),
            (
                f::DONE,
                serde_json::to_vec(&self.done).unwrap_or_else(|_| b"[]".to_vec()),
            ),
            (f::ATTEMPTS, self.attempts.to_string().into_bytes()),
            (f::DEFERRALS, self.deferrals.to_string().into_bytes()),
            (f::LAST_ERROR, self.last_error.clone().into_bytes()),
        ]);
        if let Some(t) = self.first_failed_at {
            out.push((f::FIRST_FAILED_AT, t.to_string().into_bytes()));
        }
        out
    }

    /// Whether the `occurrence`-th action `digest` of `rule` (at `index` in this pass) was delivered. A
    /// record from before digests names a position, and settles that position on its own.
    pub fn is_done(&self, rule: &str, index: usize, digest: &str, occurrence: usize) -> bool {
        let by_position = self
            .done
            .iter()
            .any(|d| matches!(d, Done::Position(r, i) if r == rule && *i == index));
        let sent = self
            .done
            .iter()
            .filter(|d| matches!(d, Done::Sent(r, _, dg) if r == rule && dg == digest))
            .count();
        by_position || occurrence <= sent
    }

    /// `hg-` + hex SHA-256 of (origin id, rule, the action's digest, its occurrence[, replays]): the same
    /// on every attempt of one delivery, whichever worker makes it, and never the same for two requests
    /// that differ, even when the mapping changed between attempts (a key names what it was sent with).
    pub fn idempotency_key(&self, rule: &str, digest: &str, occurrence: usize) -> String {
        let mut h = Sha256::new();
        h.update(self.origin_id.as_bytes());
        h.update([0]);
        h.update(rule.as_bytes());
        h.update([0]);
        h.update(digest.as_bytes());
        h.update([0]);
        h.update(occurrence.to_string().as_bytes());
        if self.replays > 0 {
            h.update([0]);
            h.update(self.replays.to_string().as_bytes());
        }
        format!("hg-{}", hex::encode(h.finalize()))
    }
}

/// An action already delivered. What identifies it is what was sent, not its position: after a mapping
/// is fixed and the event replayed, an action added before it must still be sent, and one already
/// delivered not sent again, wherever the rule now puts them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Done {
    /// Rule, position when sent (for the record), [`digest`] of the action.
    Sent(String, usize, String),
    /// Rule and position: what versions up to commit `ee320fe` recorded.
    Position(String, usize),
}

/// Hex SHA-256 of an action as sent (its kind and fields), first 128 bits.
pub fn digest(action: &crate::action::Action) -> String {
    let json = serde_json::to_vec(action).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &[u8])]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::BulkString(v.to_vec())))
            .collect()
    }

    #[test]
    fn fields_round_trip_with_binary_body() {
        let e = Envelope {
            origin_id: "1-0".into(),
            receipt: Receipt {
                source: "s".into(),
                received_at: Some(1_700_000_000_123),
                content_type: "application/x-www-form-urlencoded; charset=\"utf-8\"".into(),
                client_ip: "::1".into(),
                request_id: "r-1".into(),
                event_id: "evt_\u{e9}\n".into(),
                dedup: String::new(),
                headers: r#"{"x-a":"b \" c","x-n":"1"}"#.into(),
            },
            body: vec![0, 159, 255],
            done: vec![
                Done::Position("r".into(), 2),
                Done::Sent("r".into(), 0, "ab".into()),
            ],
            attempts: 3,
            first_failed_at: Some(42),
            ..Default::default()
        };
        let map = entry(
            &e.fields()
                .iter()
                .map(|(k, v)| (*k, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        let back = Envelope::from_fields("9-9", map).unwrap();
        assert_eq!(back, e, "the stored origin wins over the entry id");
    }

    /// Entries stored before the receipt was one field are read as they were.
    #[test]
    fn an_entry_of_separate_fields_reads_as_its_receipt_would() {
        let legacy = entry(&[
            ("source", b"s"),
            ("received_at", b"1700000000123"),
            ("content_type", b"application/json"),
            ("client_ip", b"10.0.0.1"),
            ("request_id", b"r-1"),
            ("event_id", b"evt_1"),
            ("dedup", b"tok|"),
            ("headers", br#"{"x-a":"b"}"#),
            ("body", b"{}"),
            ("attempts", b"2"),
        ]);
        let meta = br#"{"received_at":1700000000123,"content_type":"application/json","client_ip":"10.0.0.1","request_id":"r-1","event_id":"evt_1","dedup":"tok|","headers":{"x-a":"b"}}"#;
        let packed = entry(&[
            ("source", b"s"),
            ("meta", meta),
            ("body", b"{}"),
            ("attempts", b"2"),
        ]);
        let (a, b) = (
            Envelope::from_fields("1-0", legacy).unwrap(),
            Envelope::from_fields("1-0", packed).unwrap(),
        );
        assert_eq!(
            (a.format, b.format),
            (InboundFormat::Fields, InboundFormat::Meta)
        );
        assert_eq!(
            a,
            Envelope {
                format: InboundFormat::Fields,
                ..b.clone()
            }
        );
        assert_eq!(
            (a.attempts, a.receipt.headers.as_str()),
            (2, r#"{"x-a":"b"}"#)
        );
        assert_eq!(
            a.receipt.dedup, "tok|",
            "the dedup value is read for the race check"
        );
        // Each is written back in the shape it was read in: workers of a version before `meta` still
        // read a retry of an entry stored for them.
        let names = |e: &Envelope| {
            let mut n: Vec<&str> = e.fields().iter().map(|(k, _)| *k).collect();
            n.sort_unstable();
            n.join(",")
        };
        assert_eq!(
            names(&b),
            "attempts,body,deferrals,done,last_error,meta,origin_id,replays,source"
        );
        assert_eq!(
            names(&a),
            "attempts,body,client_ip,content_type,deferrals,done,event_id,headers,last_error,origin_id,received_at,replays,request_id,source"
        );
        let a = b.clone();
        let ra = b.receipt.clone();
        // What a retry or dead letter writes back is the same receipt, without the dedup value (the
        // race is settled by then).
        let written = entry(
            &a.fields()
                .iter()
                .map(|(k, v)| (*k, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        assert!(
            written.contains_key("meta") && !written.contains_key("received_at"),
            "one `meta`, no separate fields"
        );
        let back = Receipt::of_entry(&written).unwrap();
        assert_eq!(
            back,
            Receipt {
                dedup: String::new(),
                ..ra
            }
        );
    }

    /// An entry whose `meta` is no receipt is still an event of its source: read with its body, marked
    /// with why (naming the entry), and written back with its `meta` as it was.
    #[test]
    fn an_unreadable_receipt_is_kept_and_says_why() {
        let stored = entry(&[
            ("source", b"s"),
            ("meta", b"{\"received_at\":"),
            ("body", b"{\"a\":1}"),
        ]);
        let e = Envelope::from_fields("7-0", stored.clone()).unwrap();
        let why = &e.unreadable.as_ref().expect("marked").why;
        assert!(
            why.starts_with("entry 7-0: its `meta` is not a receipt"),
            "{why}"
        );
        assert_eq!((e.source(), e.body.as_slice()), ("s", &b"{\"a\":1}"[..]));
        let written = entry(
            &e.fields()
                .iter()
                .map(|(k, v)| (*k, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        for k in ["source", "meta", "body"] {
            assert_eq!(written.get(k), stored.get(k), "{k}");
        }
        assert_eq!(Envelope::from_fields("7-0", written).unwrap(), e);
    }

    #[test]
    fn fresh_entry_uses_its_id_and_needs_a_source() {
        let e = Envelope::from_fields("5-1", entry(&[("source", b"x"), ("body", b"{}")])).unwrap();
        assert_eq!((e.origin_id.as_str(), e.attempts), ("5-1", 0));
        assert!(Envelope::from_fields("5-2", entry(&[("body", b"{}")])).is_err());
    }

    #[test]
    fn keys_are_stable_per_action_and_fresh_per_replay() {
        let mut e = Envelope {
            origin_id: "1-0".into(),
            ..Default::default()
        };
        let k = e.idempotency_key("r", "d1", 1);
        assert_eq!(k, e.idempotency_key("r", "d1", 1));
        assert_ne!(k, e.idempotency_key("r", "d2", 1), "another request");
        assert_ne!(
            k,
            e.idempotency_key("r", "d1", 2),
            "the same request twice in a rule"
        );
        assert_ne!(k, e.idempotency_key("s", "d1", 1));
        assert_eq!(k.len(), 3 + 64);
        e.replays = 1;
        assert_ne!(k, e.idempotency_key("r", "d1", 1));
    }

    /// Records by position (earlier versions) and by digest are both read, and counted per action.
    #[test]
    fn done_actions_are_matched_by_digest_or_by_an_old_position() {
        let map = entry(&[
            ("source", b"x"),
            ("done", br#"[["r",0],["r",3,"d1"],["r",4,"d1"]]"#),
        ]);
        let e = Envelope::from_fields("1-0", map).unwrap();
        assert!(e.is_done("r", 0, "zz", 1), "the old record, by position");
        assert!(
            e.is_done("r", 0, "zz", 2),
            "a position settles itself, whatever came before"
        );
        assert!(
            e.is_done("r", 7, "d1", 1) && e.is_done("r", 7, "d1", 2),
            "by digest, anywhere"
        );
        assert!(
            !e.is_done("r", 7, "d1", 3),
            "a third identical action was not sent"
        );
        assert!(!e.is_done("s", 3, "d1", 1), "another rule");
        assert!(!e.is_done("r", 1, "d2", 1));
    }
}
