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
        &[("shop.yaml", SHOP)],
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
    assert_eq!(len, 2, "the event and its replay, under the inbound tag");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_master_failover_keeps_receiving_and_loses_no_acknowledged_event() {
    let mut cluster = RedisCluster::start_with_replicas();
    let gw = Gateway::start(&cluster, &[("shop.yaml", SHOP)], "").await;
    let mut victim = cluster.master_of("{hookgate:in}:inbound");
    let started = std::time::Instant::now();
    let mut answers: Vec<(String, u16, Duration)> = Vec::new();
    let mut killed_at = None;
    let mut fresh_after_kill = 0;
    // One sender, one event at a time, until 50 events in a row were taken after the kill (bounded).
    for i in 0.. {
        let at = started.elapsed();
        if killed_at.is_none() && at > Duration::from_millis(300) {
            // Asked again now: on a loaded machine the cluster may have moved the slot since the start.
            victim = cluster.master_of("{hookgate:in}:inbound");
            // Replication is asynchronous: a write the master acknowledged but had not yet sent to its
            // replica dies with it (README, "Failover"). The sender is idle here, so once the replica has
            // everything, every 202 so far must survive, and so must every 202 after the failover.
            let mut master = redis::Client::open(format!("redis://127.0.0.1:{victim}"))
                .and_then(|c| c.get_connection())
                .expect("connect to the master");
            let synced: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(2000)
                .query(&mut master)
                .expect("WAIT");
            assert_eq!(synced, 1, "the replica caught up");
            cluster.kill_node(victim);
            killed_at = Some(at);
        }
        let id = format!("evt_f{i}");
        let (s, _) = post_json(
            &gw,
            "shop",
            &format!(r#"{{"id":"{id}","email":"f{i}@example.org"}}"#),
        )
        .await;
        answers.push((id, s, at));
        if killed_at.is_some() {
            fresh_after_kill = if s == 202 { fresh_after_kill + 1 } else { 0 };
        }
        if fresh_after_kill >= 50 || at > Duration::from_secs(40) {
            break;
        }
    }
    let killed_at = killed_at.expect("the master was killed");
    let refused: Vec<&(String, u16, Duration)> = answers.iter().filter(|a| a.1 != 202).collect();
    let window = match (refused.first(), refused.last()) {
        (Some(f), Some(l)) => format!("{:.1} s", (l.2 - f.2).as_secs_f64()),
        _ => "none".into(),
    };
    eprintln!(
        "failover: {} requests, killed master {victim} at {:.1} s, {} answered other than 202 (window {window}), new master {}",
        answers.len(),
        killed_at.as_secs_f64(),
        refused.len(),
        cluster.master_of("{hookgate:in}:inbound"),
    );
    assert!(
        refused.iter().all(|a| a.1 == 503),
        "while the slot has no master the answer is 503, so the sender retries: {refused:?}"
    );
    assert!(
        fresh_after_kill >= 50,
        "receiving again after the failover, no restart"
    );
    assert_ne!(
        cluster.master_of("{hookgate:in}:inbound"),
        victim,
        "a replica took over"
    );

    // Every event answered 202 is in the stream on the new master.
    let mut c = cluster.conn();
    let entries: Vec<std::collections::HashMap<String, String>> = redis::cmd("XRANGE")
        .arg("{hookgate:in}:inbound")
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut c)
        .expect("XRANGE")
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .into_iter()
                .filter_map(|(k, v)| Some((k, redis::from_redis_value::<String>(v).ok()?)))
                .collect()
        })
        .collect();
    let stored: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|e| e.get("event_id").map(String::as_str))
        .collect();
    let lost: Vec<&str> = answers
        .iter()
        .filter(|a| a.1 == 202 && !stored.contains(a.0.as_str()))
        .map(|a| a.0.as_str())
        .collect();
    if !lost.is_empty() {
        // What each live node holds, to tell a lost write from a misrouted read.
        for url in cluster.urls() {
            let node = redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
            if let Ok(mut node) = node {
                let len: redis::RedisResult<i64> = redis::cmd("XLEN")
                    .arg("{hookgate:in}:inbound")
                    .query(&mut node);
                let role: redis::RedisResult<String> =
                    redis::cmd("INFO").arg("replication").query(&mut node);
                let role = role.map(|r| r.lines().take(3).collect::<Vec<_>>().join(" "));
                eprintln!("{url}: XLEN {len:?} {role:?}");
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged but not in the stream ({} stored): {:?}",
        lost.len(),
        stored.len(),
        &lost[..lost.len().min(5)]
    );
    let _ = gw.stop().await;
}
