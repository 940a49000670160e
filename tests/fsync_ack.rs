//! `redis.fsync_acks`: a webhook is answered 2xx only once the event is in the master's append-only file
//! on disk (`WAITAOF`), and, with `redis.min_replica_acks`, in that of as many replicas. Real servers:
//! Valkey (Redis 7.2's commands; Debian's Redis 7.0 has no `WAITAOF`), and that Redis 7.0 for the
//! message a Redis without it gets. Whether an fsync happened cannot be watched from outside, so each
//! test takes away what the fsync needs (the master's or the replica's append-only file) and shows the
//! answer turn to 503 while the event is stored all the same, then gives it back; and a gateway without
//! the setting, on the same servers, answers 202 throughout.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\n";

fn event(i: &str) -> String {
    format!(r#"{{"id":"evt_{i}","email":"{i}@example.org"}}"#)
}

fn config_set(redis: &Redis, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis.conn())
        .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e}"));
}

/// Turn the append-only file on and wait until its first rewrite is done: until then nothing written
/// is counted as fsynced.
fn append_only_on(redis: &Redis) {
    config_set(redis, "appendonly", "yes");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut redis.conn())
            .expect("INFO persistence");
        if info.contains("aof_enabled:1") && info.contains("aof_rewrite_in_progress:0") {
            return;
        }
        assert!(Instant::now() < deadline, "no append-only file: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the events stored in `redis`'s inbound stream.
fn stored(redis: &Redis) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("hookgate:inbound")
        .arg("-")
        .arg("+")
        .query(&mut redis.conn())
        .expect("XRANGE");
    reply.ids.into_iter().map(|e| e.id).collect()
}

/// POST until the answer is not 503, for at most `secs`: what a sender does after a 503.
async fn post_until_taken(gw: &Gateway, body: &str, secs: u64) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, v) = post_json(gw, "shop", body.to_owned()).await;
        if s != 503 || Instant::now() > deadline {
            return (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rounds with `outcome` counted so far (the recorder is the process's; only this file's tests
/// make rounds, and only the last test makes `misconfigured` ones).
async fn rounds(gw: &Gateway, outcome: &str) -> f64 {
    let text = gw.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("hookgate_replica_ack_rounds_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_is_answered_only_once_the_masters_append_only_file_has_it() {
    let master = Redis::start_valkey(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let plain = Gateway::start(&master, &[("shop.yaml", SHOP)], "").await;
    let on_disk = Gateway::start(
        &master,
        &[("shop.yaml", SHOP)],
        "redis: { fsync_acks: true, replica_ack_timeout: 500ms }\n",
    )
    .await;

    // With the file: answered 202, and stored once.
    let (status, answer) = post_until_taken(&on_disk, &event("a"), 10).await;
    assert_eq!(status, 202, "{answer}");
    assert!(rounds(&on_disk, "acknowledged").await >= 1.0);

    // Without it, nothing is ever fsynced: the event is stored, but its sender gets 503 and sends it
    // again. A gateway without the setting takes events on the same Redis.
    config_set(&master, "appendonly", "no");
    let (status, answer) = post_json(&on_disk, "shop", event("b")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable"))
    );
    assert_eq!(stored(&master).len(), 2, "the event is on the master");
    let (status, answer) = post_json(&plain, "shop", event("c")).await;
    assert_eq!(status, 202, "without the setting: {answer}");

    // The file back: the retry is a duplicate, stored once, and new events are taken.
    append_only_on(&master);
    let (status, answer) = post_until_taken(&on_disk, &event("b"), 10).await;
    assert_eq!(
        (status, answer["duplicate"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = post_json(&on_disk, "shop", event("d")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(stored(&master).len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_count_only_once_their_append_only_file_has_the_event() {
    let master = Redis::start_valkey(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let port = master.port;
    // A replica that keeps the data in memory only: WAIT counts it, WAITAOF does not.
    let replica = tokio::task::spawn_blocking(move || {
        Redis::start_valkey_replica_of(port, &["--appendonly", "no"])
    })
    .await
    .expect("replica start");
    let in_memory = Gateway::start(
        &master,
        &[("shop.yaml", SHOP)],
        "redis: { min_replica_acks: 1, replica_ack_timeout: 500ms }\n",
    )
    .await;
    let on_disk = Gateway::start(
        &master,
        &[("shop.yaml", SHOP)],
        // A replica's acknowledgement of an fsync sometimes comes only with its next once-a-second
        // report: rounds of 1.5 s.
        "redis: { min_replica_acks: 1, fsync_acks: true, replica_ack_timeout: 3s }\n",
    )
    .await;

    // Taken (the first tries may get 503 until the new replica's first acknowledgement; a retry then
    // gets its duplicate).
    let (status, answer) = post_until_taken(&in_memory, &event("m"), 10).await;
    assert!(
        status == 202 || (status, answer["duplicate"].as_bool()) == (200, Some(true)),
        "a replica in memory is a replica to WAIT: {status} {answer}"
    );
    let (status, answer) = post_until_taken(&on_disk, &event("n"), 4).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "not on the replica's disk"
    );
    replica_caught_up(master.port, "test:caught-up");
    assert_eq!(stored(&replica).len(), 2, "both events are on the replica");

    // A replica's fsync is not hurried by its master's WAITAOF (with `everysec` each round would take
    // about a second): replicas that acknowledge fsyncs run `appendfsync always`.
    config_set(&replica, "appendfsync", "always");
    append_only_on(&replica);
    let (status, answer) = post_until_taken(&on_disk, &event("n"), 10).await;
    assert_eq!(
        (status, answer["duplicate"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = post_json(&on_disk, "shop", event("o")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(stored(&master), stored(&replica));
    assert_eq!(stored(&master).len(), 3);
}

/// A Redis that can never acknowledge an fsync (before 7.2; or with its append-only file off) gives
/// every webhook 503, and its rounds are counted as `misconfigured`, not as a moment's shortfall.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_cannot_fsync_acknowledge_is_counted_as_misconfigured() {
    let old = Redis::start_durable();
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut old.conn())
        .expect("INFO server");
    assert!(
        version.contains("redis_version:7.0."),
        "this test needs a Redis without WAITAOF: {version}"
    );
    let gw = Gateway::start(
        &old,
        &[("shop.yaml", SHOP)],
        "redis: { fsync_acks: true, replica_ack_timeout: 300ms }\n",
    )
    .await;
    let before = rounds(&gw, "misconfigured").await;
    let (status, _) = post_json(&gw, "shop", event("x")).await;
    assert_eq!(status, 503);
    assert_eq!(stored(&old).len(), 1, "stored all the same");
    let after = rounds(&gw, "misconfigured").await;
    assert!(after > before, "{before} -> {after}");

    let off = Redis::start_valkey(&["--appendonly", "no"]);
    let gw = Gateway::start(
        &off,
        &[("shop.yaml", SHOP)],
        "redis: { fsync_acks: true, replica_ack_timeout: 300ms }\n",
    )
    .await;
    let before = rounds(&gw, "misconfigured").await;
    let (status, _) = post_json(&gw, "shop", event("y")).await;
    assert_eq!(status, 503);
    let after = rounds(&gw, "misconfigured").await;
    assert!(after > before, "{before} -> {after}");
}
