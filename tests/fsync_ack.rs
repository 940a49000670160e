//! `redis.fsync_acks`: a webhook is answered 2xx only once the event is in the master's append-only file
//! on disk (`WAITAOF`), and, with `redis.min_replica_acks`, in that of as many replicas. Real servers:
//! Valkey (Redis 7.2's commands; Debian 12's Redis 7.0 has no `WAITAOF`). Whether an fsync happened
//! cannot be watched from outside, so each test takes away what the fsync needs (the master's or the
//! replica's append-only file) and shows the answer turn to 503 while the event is stored all the same,
//! then gives it back; and a gateway without the setting, on the same servers, answers 202 throughout.

mod common;

use common::cluster::RedisCluster;
use common::*;

const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\n";

/// `CONFIG SET appendonly <value>` on the server on `port`, and with `yes` wait until the file's first
/// rewrite is done: until then nothing written is counted as fsynced.
fn append_only(port: u16, value: &str) {
    config_set_at(port, "appendonly", value);
    if value != "yes" {
        return;
    }
    info_until(port, "persistence", "no append-only file", |info| {
        info.contains("aof_enabled:1") && info.contains("aof_rewrite_in_progress:0")
    });
}

/// Answered 202, or (when a retry after an early 503 was needed) as the duplicate of what that 503 left
/// stored.
fn taken(status: u16, answer: &serde_json::Value) -> bool {
    status == 202 || (status, answer["duplicate"].as_bool()) == (200, Some(true))
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

    // With the file: answered 202.
    let (status, answer) = post_until_taken(&on_disk, "shop", &shop_event("a"), 10).await;
    assert_eq!(status, 202, "{answer}");

    // Without it, nothing is ever fsynced: the event is stored, but its sender gets 503 and sends it
    // again. A gateway without the setting takes events on the same Redis.
    append_only(master.port, "no");
    let (status, answer) = post_json(&on_disk, "shop", shop_event("b")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable"))
    );
    assert_eq!(
        stored_event_ids(&master),
        ["evt_a", "evt_b"],
        "the event is on the master"
    );
    let (status, answer) = post_json(&plain, "shop", shop_event("c")).await;
    assert_eq!(status, 202, "without the setting: {answer}");

    // The file back: the retry is a duplicate, stored once, and new events are taken.
    append_only(master.port, "yes");
    let (status, answer) = post_until_taken(&on_disk, "shop", &shop_event("b"), 10).await;
    assert_eq!(
        (status, answer["duplicate"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = post_json(&on_disk, "shop", shop_event("d")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        stored_event_ids(&master),
        ["evt_a", "evt_b", "evt_c", "evt_d"]
    );
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
    // A replica that keeps the data in memory only: WAIT counts it, WAITAOF does not. (It runs
    // `appendfsync always`, as the tests' servers do: a replica's fsync is not hurried by its master's
    // WAITAOF, and with `everysec` each round would take about a second.)
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

    // Taken (the first tries may get 503 until the new replica's first acknowledgement).
    let (status, answer) = post_until_taken(&in_memory, "shop", &shop_event("m"), 10).await;
    assert!(
        taken(status, &answer),
        "a replica in memory is a replica to WAIT: {status} {answer}"
    );
    let (status, answer) = post_until_taken(&on_disk, "shop", &shop_event("n"), 4).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "not on the replica's disk"
    );
    replica_caught_up(master.port, "test:caught-up");
    assert_eq!(
        stored_event_ids(&replica),
        ["evt_m", "evt_n"],
        "both events are on the replica"
    );

    append_only(replica.port, "yes");
    let (status, answer) = post_until_taken(&on_disk, "shop", &shop_event("n"), 10).await;
    assert_eq!(
        (status, answer["duplicate"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = post_until_taken(&on_disk, "shop", &shop_event("o"), 10).await;
    assert!(taken(status, &answer), "{status} {answer}");
    replica_caught_up(master.port, "test:caught-up");
    assert_eq!(stored_event_ids(&replica), ["evt_m", "evt_n", "evt_o"]);
    assert_eq!(stored_event_ids(&master), stored_event_ids(&replica));
}

/// A Redis that can never acknowledge an fsync, one without `WAITAOF` (as Redis before 7.2; here a
/// Valkey with the command renamed away, so the test does not depend on the machine's Redis version)
/// and one without its append-only file, gives every webhook 503, and stores the event all the same.
/// Which rounds are counted `misconfigured` rather than `short` is decided by `replica_ack::judge`,
/// whose unit tests use these servers' replies (the counter is shared with the first test, which
/// switches a file off too).
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_cannot_acknowledge_an_fsync_answers_503() {
    for (name, args) in [
        (
            "no WAITAOF",
            &["--appendonly", "yes", "--rename-command", "WAITAOF", ""][..],
        ),
        ("appendonly no", &["--appendonly", "no"][..]),
    ] {
        let redis = Redis::start_valkey(args);
        let gw = Gateway::start(
            &redis,
            &[("shop.yaml", SHOP)],
            "redis: { fsync_acks: true, replica_ack_timeout: 300ms }\n",
        )
        .await;
        let (status, answer) = post_json(&gw, "shop", shop_event("x")).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (503, Some("unavailable")),
            "{name}"
        );
        assert_eq!(
            stored_event_ids(&redis),
            ["evt_x"],
            "{name}: stored all the same"
        );
        let misconfigured = metric_sum(
            &gw.metrics().await,
            "hookgate_replica_ack_rounds_total",
            &["outcome=\"misconfigured\""],
        );
        assert!(misconfigured >= 1.0, "{name}: {misconfigured}");
    }
}

/// On a cluster each family's rounds run on its own master, the marker write and `WAITAOF` over one
/// connection of the cluster client: a replica of the inbound master without its append-only file gives
/// webhooks 503 (a `WAITAOF` sent to another master would count that master's replica), while
/// publishes, on another master, are answered 202.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_the_fsync_is_asked_of_the_master_that_stored_the_event() {
    let cluster = RedisCluster::start_valkey_with_replicas(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let inbound = cluster.master_of("{hookgate:in}:inbound");
    let outbound = cluster.master_of("{hookgate:out}:events");
    replica_caught_up(inbound, "{hookgate:in}:probe");
    replica_caught_up(outbound, "{hookgate:out}:probe");
    let gw = Gateway::start(
        &cluster,
        &[("shop.yaml", SHOP)],
        "redis: { min_replica_acks: 1, fsync_acks: true, replica_ack_timeout: 3s }\n",
    )
    .await;
    let (status, answer) = post_until_taken(&gw, "shop", &shop_event("k_before"), 15).await;
    assert!(taken(status, &answer), "{status} {answer}");

    let replica = cluster
        .replica_of(inbound)
        .expect("the inbound master has a replica");
    append_only(replica, "no");
    let (status, answer) = post_until_taken(&gw, "shop", &shop_event("k_off"), 4).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable"))
    );
    if outbound != inbound {
        let event = serde_json::json!({"type": "contact.created", "data": {}});
        let (status, answer) = admin_call(&gw, "POST", "/v1/events", Some(event)).await;
        assert_eq!(
            status, 202,
            "the outbound family's master and replica are untouched: {answer}"
        );
    }

    append_only(replica, "yes");
    let (status, answer) = post_until_taken(&gw, "shop", &shop_event("k_off"), 10).await;
    assert_eq!(
        (status, answer["duplicate"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let stored: usize = redis::cmd("XLEN")
        .arg("{hookgate:in}:inbound")
        .query(&mut cluster.conn())
        .expect("XLEN");
    assert_eq!(stored, 2);
}
