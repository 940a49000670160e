//! Dedup under concurrency. The XADD and the dedup key's `SET NX GET` are one pipeline, so a redelivery
//! arriving while the original is being stored also gets an entry for a moment; it is deleted before its
//! sender is answered, and a mapper worker that read it first must skip it. A worker that reads an entry
//! before its SET has run claims the key for it. These tests check that nothing but the original reaches
//! the upstream.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const INBOUND: &str = "hookgate:inbound";
const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\nrules:\n  - name: r\n    upsert_contact: { email: $.email }\n";

async fn gateway(redis: &Redis, up: &RecordingUpstream) -> Gateway {
    Gateway::start(
        redis,
        &[("shop.yaml", SHOP)],
        &format!("upstream: {{ url: \"{}\" }}\n", up.url()),
    )
    .await
}

fn xadd(redis: &Redis, event_id: &str, email: &str, dedup: &str) -> String {
    xadd_at(redis, "shop", event_id, email, dedup, 1)
}

/// An entry of `source` as the gateway writes it, received at `received_at` (Unix ms).
fn xadd_at(
    redis: &Redis,
    source: &str,
    event_id: &str,
    email: &str,
    dedup: &str,
    received_at: u64,
) -> String {
    let body = json!({ "id": event_id, "email": email }).to_string();
    redis::cmd("XADD")
        .arg(INBOUND)
        .arg("*")
        .arg("source")
        .arg(source)
        .arg("received_at")
        .arg(received_at)
        .arg("content_type")
        .arg("application/json")
        .arg("event_id")
        .arg(event_id)
        .arg("headers")
        .arg("{}")
        .arg("body")
        .arg(body)
        .arg("dedup")
        .arg(dedup)
        .query(&mut redis.conn())
        .unwrap()
}

/// The stream ids of the inbound entries still in the stream, oldest first.
fn ids_left(redis: &Redis) -> Vec<String> {
    inbound_entries(redis, "hookgate")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn emails(up: &RecordingUpstream) -> Vec<String> {
    let mut v: Vec<String> = up
        .delivered()
        .iter()
        .map(|r| r.body["email"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

/// Entries as a racing redelivery leaves them, written straight to the stream so the race is certain:
/// the worker delivers the request that holds the key and the one with another body (another binding),
/// and acknowledges and deletes the one that lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_skips_the_entry_of_a_redelivery_that_lost_the_race() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let _: () = redis::cmd("SET")
        .arg("hookgate:dedup:shop:evt_1|b1")
        .arg("tokA|b1")
        .query(&mut redis.conn())
        .unwrap();
    let loser = xadd(&redis, "evt_1", "loser@example.org", "tokB|b1");
    let winner = xadd(&redis, "evt_1", "winner@example.org", "tokA|b1");
    let other_body = xadd(&redis, "evt_1", "other@example.org", "tokC|b2");
    // Expired key: nothing to lose to; the entry claims it again.
    let expired = xadd(&redis, "evt_2", "expired@example.org", "tokD|");
    let gw = gateway(&redis, &up).await;
    assert!(up.wait_delivered(3, 10).await, "{:?}", emails(&up));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emails(&up),
        [
            "expired@example.org",
            "other@example.org",
            "winner@example.org"
        ]
    );
    let left = ids_left(&redis);
    assert_eq!(
        left,
        [winner, other_body, expired],
        "the loser {loser} is deleted"
    );
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(INBOUND)
        .arg("mappers")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(pending.count(), 0, "every entry acknowledged");
    let claimed: Option<String> = redis::cmd("GET")
        .arg("hookgate:dedup:shop:evt_2")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(claimed.as_deref(), Some("tokD|"));
    // The recorder is per process, shared with the other test here: at least this test's one.
    let m = gw.metrics().await;
    let skipped = m
        .lines()
        .find_map(|l| l.strip_prefix("hookgate_mapper_redeliveries_skipped_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(skipped >= Some(1), "{m}");
}

/// Entries whose request's SET has not run (or never will: the connection was lost after the XADD): the
/// first one a worker reads claims the key with its own token, for what is left of the source's window,
/// and is delivered; a second entry of the id then loses to it. The late SET of the first entry's request
/// finds its own token, so that request is answered 202, not "duplicate".
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_claims_the_key_of_an_entry_whose_set_has_not_run() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Received an hour ago: 71 of the window's 72 hours are left.
    let at = now_ms - 3600 * 1000;
    let first = xadd_at(&redis, "shop", "evt_9", "first@example.org", "tokE|", at);
    let second = xadd_at(&redis, "shop", "evt_9", "second@example.org", "tokF|", at);
    let gw = gateway(&redis, &up).await;
    assert!(up.wait_delivered(1, 10).await, "{:?}", emails(&up));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emails(&up), ["first@example.org"]);
    let left = ids_left(&redis);
    assert_eq!(
        left,
        [first],
        "the second entry {second} lost and is deleted"
    );
    let key = "hookgate:dedup:shop:evt_9";
    let mut c = redis.conn();
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c).unwrap();
    // SHOP keeps the default window, 72 h, of which the entry's hour is gone.
    assert!(ttl > 70 * 3600 * 1000 && ttl <= 71 * 3600 * 1000, "{ttl}");
    // What the gateway's own SET for the first entry then sees: its own token, so not a redelivery.
    let before: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("tokE|")
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(before.as_deref(), Some("tokE|"));
    // A redelivery posted now is recognised.
    let (s, b) = post_json(
        &gw,
        "shop",
        json!({ "id": "evt_9", "email": "third@example.org" }).to_string(),
    )
    .await;
    assert_eq!((s, &b["duplicate"]), (200, &json!(true)), "{b}");
}

/// What a claim cannot settle: an entry past its window claims for a minute (enough for the entries of
/// its id read with it), an entry of a source without dedup claims nothing, and a key of another type
/// (WRONGTYPE) lets the entry through unchecked, as the gateway does when its own SET fails that way.
#[tokio::test(flavor = "multi_thread")]
async fn claims_past_the_window_without_dedup_and_on_a_key_of_another_type() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let mut c = redis.conn();
    let _: () = redis::cmd("HSET")
        .arg("hookgate:dedup:shop:evt_h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    xadd(&redis, "evt_old", "old@example.org", "tokO|");
    xadd(&redis, "evt_h", "hash@example.org", "tokH|");
    xadd_at(&redis, "open", "evt_o", "open@example.org", "tokP|", 1);
    let gw = Gateway::start(
        &redis,
        &[
            ("shop.yaml", SHOP),
            (
                "open.yaml",
                "source: open\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: r\n    upsert_contact: { email: $.email }\n",
            ),
        ],
        &format!("upstream: {{ url: \"{}\" }}\n", up.url()),
    )
    .await;
    assert!(up.wait_delivered(3, 10).await, "{:?}", emails(&up));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        emails(&up),
        ["hash@example.org", "old@example.org", "open@example.org"]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("hookgate:dedup:shop:evt_old")
        .query(&mut c)
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    let open: bool = redis::cmd("EXISTS")
        .arg("hookgate:dedup:open:evt_o")
        .query(&mut c)
        .unwrap();
    assert!(!open, "a source without dedup claims no key");
    gw.stop().await.unwrap();
}

/// The real race, many times over: 40 events, each posted by 25 concurrent senders while the workers
/// run. Exactly one request per event is answered 202, and the upstream gets each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeliveries_reach_the_upstream_once() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = std::sync::Arc::new(gateway(&redis, &up).await);
    let mut tasks = Vec::new();
    for e in 0..40 {
        for _ in 0..25 {
            let gw = gw.clone();
            tasks.push(tokio::spawn(async move {
                let body =
                    json!({ "id": format!("evt_{e}"), "email": format!("c{e}@example.org") });
                post_json(&gw, "shop", body.to_string()).await
            }));
        }
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            (202, _) => accepted += 1,
            (200, b) => assert_eq!(b["duplicate"], json!(true), "{b}"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(accepted, 40);
    assert!(up.wait_delivered(40, 20).await, "{}", up.delivered().len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = emails(&up);
    let mut want: Vec<String> = (0..40).map(|e| format!("c{e}@example.org")).collect();
    want.sort();
    assert_eq!(got, want, "each event delivered exactly once");
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 40);
}
