//! On a three-master Redis Cluster that the test starts on loopback, the paths the scale-out test does not
//! cross: inbound retries (the retry mover's script), dead letters and their replay; subscriptions made
//! through the API, outbound dead letters and their replay. And where the keys went: each family in one
//! slot, the two families on two masters.

mod common;

use common::cluster::RedisCluster;
use common::subscriber::Subscriber;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A source with dedup on `$.id` and one rule; a compressed retry schedule.
const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\nrules:\n  - name: signup\n    create_contact:\n      email: $.email\n";
/// Dedup on a header the signature does not cover: the id is bound to the body.
const GH: &str = "source: gh\nallow_ips: [127.0.0.0/8]\ndedup: { header: X-GitHub-Delivery }\n";
const FAST: &str =
    "deliver: { retry_base: 50ms, retry_max: 200ms, timeout: 2s, connect_timeout: 500ms }\n";
const OUT: &str = "outbound: { retry_base: 100ms, retry_max: 300ms, give_up_after: 1500ms, timeout: 3s, connect_timeout: 1s }\negress: { allow: [127.0.0.0/8], allow_http: true }\n";

fn xlen(c: &mut redis::cluster::ClusterConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(c).expect("XLEN")
}

/// POST `<list>/<id>/replay` for a dead letter from that list.
async fn replay(gw: &Gateway, list: &str, dead: &Value) -> (u16, Value) {
    let id = dead["id"].as_str().expect("dead letter id");
    admin_call(gw, "POST", &format!("{list}/{id}/replay"), None).await
}

/// Poll an admin listing until its `dead_letters` array is not empty.
async fn first_dead_letter(gw: &Gateway, path: &str) -> Value {
    let mut found = Value::Null;
    for _ in 0..200 {
        let (_, v) = admin_call(gw, "GET", path, None).await;
        if let Some(d) = v["dead_letters"].as_array().and_then(|a| a.first()) {
            found = d.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!found.is_null(), "no dead letter at {path}");
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_dedup_retries_dead_letters_and_replay_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let up = RecordingUpstream::start().await;
    // Two failures that are retried (parked in the retry set, moved back by the mover), then a refusal.
    up.plan(&[(503, "busy"), (503, "busy"), (422, "bad email")]);
    let gw = Gateway::start(
        &cluster,
        &[("shop.yaml", SHOP), ("gh.yaml", GH)],
        &format!("upstream: {{ url: \"{}\" }}\n{FAST}", up.url()),
    )
    .await;
    let body = r#"{"id":"evt_c1","email":"c1@example.org"}"#;
    let (s, first) = post_json(&gw, "shop", body).await;
    assert_eq!(s, 202, "{first}");
    let (s, again) = post_json(&gw, "shop", body).await;
    assert_eq!((s, &again["duplicate"]), (200, &json!(true)), "{again}");
    assert_eq!(
        again["event_id"], "evt_c1",
        "the redelivery names the sender's id"
    );
    // On a cluster the store is the script, which knows the original's stream id.
    assert_eq!(again["id"], first["id"], "and the original's stream id");

    // One unsigned id with two bodies: two events, and a redelivery of each names its own original.
    let gh = |body: &'static str| {
        let url = gw.url("gh");
        async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-delivery", "d-1")
                .body(body)
                .send()
                .await
                .expect("POST /webhooks/gh");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, a) = gh(r#"{"n":1}"#).await;
    assert_eq!(s, 202, "{a}");
    let (s, b) = gh(r#"{"n":2}"#).await;
    assert_eq!(s, 202, "another body is another event: {b}");
    for (body, original) in [(r#"{"n":2}"#, &b), (r#"{"n":1}"#, &a)] {
        let (s, dup) = gh(body).await;
        assert_eq!((s, &dup["duplicate"]), (200, &json!(true)), "{body}: {dup}");
        assert_eq!(dup["id"], original["id"], "{body}: {dup}");
    }

    let dead = first_dead_letter(&gw, "/v1/dead-letters?source=shop").await;
    assert_eq!(dead["reason"], "upstream_status", "{dead}");
    assert_eq!(dead["status"], 422);
    assert_eq!(up.requests().len(), 3, "two retries, then the refusal");

    let (s, r) = replay(&gw, "/v1/dead-letters", &dead).await;
    assert_eq!(s, 200, "{r}");
    assert!(
        up.wait_delivered(1, 10).await,
        "the replay reaches the upstream"
    );
    let keys: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(
        keys[..3].iter().all(|k| k == &keys[0]),
        "one Idempotency-Key across the retries: {keys:?}"
    );
    assert_ne!(
        keys[3], keys[0],
        "a replay gets a fresh key (docs/delivery.md), so the upstream does not drop it as a repeat"
    );

    // Where the keys are: the inbound family in one slot of one master.
    let mut c = cluster.conn();
    let len = xlen(&mut c, "{hookgate:in}:inbound");
    assert_eq!(
        len, 4,
        "the event and its replay, and the two gh events, under the inbound tag"
    );
    let dedup: bool = redis::cmd("EXISTS")
        .arg("{hookgate:in}:dedup:shop:evt_c1")
        .query(&mut c)
        .expect("EXISTS");
    assert!(dedup, "the dedup key sits beside its stream");
    let dead = xlen(&mut c, "{hookgate:in}:dead:inbound");
    assert_eq!(dead, 0, "the replayed dead letter is gone");
    let _ = gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_and_outbound_dead_letters_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let gw = Gateway::start(&cluster, &[], OUT).await;
    let sub = Subscriber::start().await;
    sub.set_status(500);
    let (s, created) = admin_call(
        &gw,
        "POST",
        "/v1/subscriptions",
        Some(json!({"name": "crm", "url": sub.url("/hook"), "events": ["contact.*"]})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let sid = created["id"].as_str().expect("subscription id").to_string();
    let (s, listed) = admin_call(&gw, "GET", "/v1/subscriptions", None).await;
    assert_eq!(s, 200);
    assert!(listed.to_string().contains(&sid), "{listed}");

    let event =
        json!({"type": "contact.created", "id": "pub_1", "data": {"email": "o@example.org"}});
    for duplicate in [false, true] {
        let (s, p) = admin_call(&gw, "POST", "/v1/events", Some(event.clone())).await;
        assert_eq!((s, &p["duplicate"]), (202, &json!(duplicate)), "{p}");
    }

    let dead = first_dead_letter(
        &gw,
        &format!("/v1/outbound/dead-letters?subscription={sid}"),
    )
    .await;
    assert_eq!(dead["reason"], "exhausted", "{dead}");
    let tries = sub.received().len();
    assert!(tries >= 2, "retried before giving up ({tries})");
    sub.set_status(200);
    let (s, r) = replay(&gw, "/v1/outbound/dead-letters", &dead).await;
    assert_eq!(s, 200, "{r}");
    assert!(sub.wait_delivered(1, 10).await, "the replay is delivered");
    let got = sub.received();
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == got[0].header("webhook-id")),
        "one webhook-id across retries and the replay"
    );

    // The outbound family sits under its own tag, on another master than the inbound one.
    let mut c = cluster.conn();
    let len = xlen(&mut c, "{hookgate:out}:events");
    assert_eq!(len, 1, "published once");
    assert_ne!(
        cluster.master_of("{hookgate:in}:inbound"),
        cluster.master_of("{hookgate:out}:events"),
        "the two families on two masters"
    );
    // Every key hookgate wrote, on every node, is under one of the two family tags.
    for url in cluster.urls() {
        let mut node = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to a node");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut node).expect("KEYS");
        let stray: Vec<&String> = keys
            .iter()
            .filter(|k| !k.starts_with("{hookgate:in}:") && !k.starts_with("{hookgate:out}:"))
            .collect();
        assert!(
            stray.is_empty(),
            "{url}: keys outside the family tags: {stray:?}"
        );
    }
    let _ = gw.stop().await;
}
