//! Stream upkeep by the mapper workers: `<prefix>:inbound` is trimmed of entries every consumer group has
//! acknowledged once they are older than `deliver.inbound_retention` (never of pending or unread ones),
//! and consumers of the `mappers` group that are gone are removed from the group.

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const INBOUND: &str = "hookgate:inbound";
const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: r\n    upsert_contact: { email: $.email }\n";

async fn post(gw: &Gateway, email: &str) {
    let (status, _) = post_json(gw, "shop", json!({ "email": email }).to_string()).await;
    assert_eq!(status, 202);
}

/// The emails of the entries still in the inbound stream.
fn stored(redis: &Redis) -> Vec<String> {
    inbound_entries(redis, "hookgate")
        .into_iter()
        .map(|(_, f)| {
            let body: serde_json::Value = serde_json::from_slice(&f["body"]).unwrap();
            body["email"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_old_entries_are_trimmed_pending_and_unread_ones_stay() {
    let redis = Redis::start();
    let mut c = redis.conn();
    // Trimming is approximate (`XTRIM MINID ~`: whole radix-tree nodes); one entry per node makes it
    // exact here, so the test can say which entries go.
    redis.config_set("stream-node-max-entries", 1);
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", SHOP)],
        &format!(
            "upstream: {{ url: \"{}\" }}\ndeliver: {{ inbound_retention: 2s }}\n",
            up.url()
        ),
    )
    .await;
    let started = Instant::now();
    for i in 0..5 {
        post(&gw, &format!("a{i}@example.org")).await;
    }
    assert!(up.wait_delivered(5, 10).await);
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            stored(&redis).len(),
            5,
            "acknowledged but younger than the retention"
        );
    }
    // another group, as a consumer that reads Redis would have: it has read none of what comes next
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(INBOUND)
        .arg("audit")
        .arg("$")
        .query(&mut c)
        .unwrap();
    for i in 0..3 {
        post(&gw, &format!("b{i}@example.org")).await;
    }
    assert!(up.wait_delivered(8, 10).await, "mappers acknowledged all 8");
    // audit takes the first b entry and does not acknowledge it; the other two it has not read
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("a1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(INBOUND)
        .arg(">")
        .query(&mut c)
        .unwrap();
    let b: Vec<String> = (0..3).map(|i| format!("b{i}@example.org")).collect();
    assert!(
        poll_until(10, || stored(&redis) == b).await,
        "the a entries go, every b entry stays: {:?}",
        stored(&redis)
    );
    // several more passes: still nothing audit has not acknowledged is trimmed
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(stored(&redis), b, "pending and unread entries are kept");

    // audit reads and acknowledges the rest: now everything goes
    let ids: Vec<String> = inbound_entries(&redis, "hookgate")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("a1")
        .arg("STREAMS")
        .arg(INBOUND)
        .arg(">")
        .query(&mut c)
        .unwrap();
    let acked: u64 = redis::cmd("XACK")
        .arg(INBOUND)
        .arg("audit")
        .arg(&ids)
        .query(&mut c)
        .unwrap();
    assert_eq!(acked, 3);
    assert!(
        poll_until(10, || stored(&redis).is_empty()).await,
        "acknowledged by every group and old: trimmed {:?}",
        stored(&redis)
    );
    assert!(gw
        .metrics()
        .await
        .contains("hookgate_inbound_trimmed_total"));
}

fn consumers(redis: &Redis, stream: &str) -> HashSet<String> {
    let mut c = redis.conn();
    let v: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg("mappers")
        .query(&mut c)
        .unwrap();
    v.into_iter()
        .map(|m| redis::from_redis_value(m["name"].clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_consumers_are_removed_live_and_busy_ones_stay() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    // a long timeout, so ghost-busy's entry is not reclaimed from it during the test
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", SHOP)],
        &format!(
            "upstream: {{ url: \"{}\" }}\ndeliver: {{ remove_idle_consumers_after: 5s, timeout: 20s }}\n",
            up.url()
        ),
    )
    .await;
    post(&gw, "live@example.org").await;
    assert!(up.wait_delivered(1, 10).await);
    let live = consumers(&redis, INBOUND);
    assert_eq!(live.len(), 1, "the gateway's own consumer: {live:?}");
    let mut c = redis.conn();
    let due = "hookgate:retry:inbound:due";
    for (stream, name) in [(INBOUND, "ghost-idle"), (due, "ghost-due")] {
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(stream)
            .arg("mappers")
            .arg(name)
            .query(&mut c)
            .unwrap();
    }
    // ghost-busy holds an entry (added and read in one transaction, before the worker's blocked read is
    // served), as a process that died mid-delivery would
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(INBOUND)
        .arg("*")
        .arg("source")
        .arg("shop")
        .arg("content_type")
        .arg("application/json")
        .arg("body")
        .arg(r#"{"email":"held@example.org"}"#)
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg("mappers")
        .arg("ghost-busy")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(INBOUND)
        .arg(">")
        .query(&mut c)
        .unwrap();
    // Traffic keeps the live worker's consumer fresh: before Redis 7.2 only a read that returns entries
    // counts as activity, so a live worker with nothing to read may be removed too (harmlessly: it has
    // nothing pending, and its next read registers it again).
    let ticker = {
        let url = gw.url("shop");
        tokio::spawn(async move {
            for i in 0.. {
                let _ = client()
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!({ "email": format!("tick{i}@example.org") }).to_string())
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };
    assert!(consumers(&redis, INBOUND).contains("ghost-busy"));
    assert!(consumers(&redis, due).contains("ghost-due"));
    let mut want = live.clone();
    want.insert("ghost-busy".to_string());
    assert!(
        poll_until(15, || consumers(&redis, INBOUND) == want).await,
        "ghost-idle removed: {:?}",
        consumers(&redis, INBOUND)
    );
    assert!(
        poll_until(5, || !consumers(&redis, due).contains("ghost-due")).await,
        "on the retry-due stream too"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        consumers(&redis, INBOUND),
        want,
        "the live worker and a consumer holding an entry stay"
    );
    ticker.abort();
    assert!(
        !up.delivered()
            .iter()
            .any(|r| r.body["email"] == "held@example.org"),
        "the held entry was not taken from ghost-busy"
    );
    assert!(gw
        .metrics()
        .await
        .contains("hookgate_consumers_removed_total"));
}

/// A worker's heartbeat renews only the entries still pending for it: one that another worker reclaimed
/// while this one was paused (SIGSTOP, a long GC-like stall) stays with the other, instead of being taken
/// back and sent a third time.
#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_does_not_take_back_a_reclaimed_entry() {
    let redis = Redis::start();
    let ids = redis.stream_partly_read("s", 3, "g", "paused", 3);
    let mut r = redis.conn();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg("s")
        .arg("g")
        .arg("other")
        .arg(0)
        .arg(&ids[1])
        .arg("JUSTID")
        .query(&mut r)
        .expect("XCLAIM");
    let mut conn = redis.gateway_conn();
    // An entry acknowledged meanwhile is not "lost" to anyone.
    let gone: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("n")
        .arg(9)
        .query(&mut r)
        .expect("XADD");
    let mut held: Vec<&str> = ids.iter().map(String::as_str).collect();
    held.push(&gone);
    let lost = hookgate::stream::renew_held(&mut conn, "s", "g", "paused", &held)
        .await
        .expect("renew");
    assert_eq!(lost, [ids[1].clone()]);
    let owners: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("s")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut r)
        .expect("XPENDING");
    let by_id: Vec<(&str, &str)> = owners
        .iter()
        .map(|(id, c, _, _)| (id.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        by_id,
        [
            (ids[0].as_str(), "paused"),
            (ids[1].as_str(), "other"),
            (ids[2].as_str(), "paused")
        ]
    );
}
