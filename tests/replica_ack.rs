//! `redis.min_replica_acks`: a webhook (or a publish) is answered 2xx only once a replica of the master
//! that stored it holds it, and 503 when no replica acknowledges it in time. Real `redis-server`s: a
//! master with a replica behind a relay that holds replication back, and a cluster with replicas.

mod common;

use common::cluster::RedisCluster;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\nrules:\n  - name: signup\n    create_contact:\n      email: $.email\n";

/// How long the relay holds back what the master sends its replica.
const LAG: Duration = Duration::from_millis(400);

/// A relay on a port of its own to `127.0.0.1:to` that holds back every chunk coming from there for
/// `lag`: a replica connected through it lags its master by that much, as one across a slow link does.
async fn lagging_relay(to: u16, lag: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let (mut down_r, mut down_w) = down.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut down_r, &mut up_w).await });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            tokio::spawn(async move {
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due.into()).await;
                    if down_w.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = up_r.read(&mut buf).await {
                    if tx.send((Instant::now() + lag, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A master and its replica, connected directly or, with `lag`, through a [`lagging_relay`].
async fn master_and_replica(lag: Option<Duration>) -> (Redis, Redis) {
    let master = Redis::start();
    // The first sync starts at once rather than after the default 5 s wait for more replicas.
    master.config_set("repl-diskless-sync-delay", 0);
    let port = match lag {
        Some(lag) => lagging_relay(master.port, lag).await,
        None => master.port,
    };
    let replica = tokio::task::spawn_blocking(move || Redis::start_replica_of(port))
        .await
        .expect("replica start");
    (master, replica)
}

/// Publish a `contact.created` event with producer id `id` on the admin API.
async fn publish(gw: &Gateway, id: Option<&str>) -> (u16, serde_json::Value) {
    let mut event = serde_json::json!({"type": "contact.created", "data": {}});
    if let Some(id) = id {
        event["id"] = id.into();
    }
    admin_call(gw, "POST", "/v1/events", Some(event)).await
}

/// Whether `redis` holds inbound stream entry `id`.
fn holds(redis: &Redis, id: &str) -> bool {
    let found: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("hookgate:inbound")
        .arg(id)
        .arg(id)
        .query(&mut redis.conn())
        .expect("XRANGE");
    !found.is_empty()
}

fn xlen(redis: &Redis) -> usize {
    redis::cmd("XLEN")
        .arg("hookgate:inbound")
        .query(&mut redis.conn())
        .expect("XLEN")
}

/// Rounds of acknowledgement run on this master so far: each one increments the marker.
fn rounds(master: &Redis) -> u64 {
    redis::cmd("GET")
        .arg("hookgate:replica-ack")
        .query::<Option<u64>>(&mut master.conn())
        .expect("GET")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_is_answered_only_once_a_replica_holds_it() {
    let (master, replica) = master_and_replica(Some(LAG)).await;
    let plain = Gateway::start(&master, &[("shop.yaml", SHOP)], "").await;
    let acked = Gateway::start(
        &master,
        &[("shop.yaml", SHOP)],
        "redis: { min_replica_acks: 1, replica_ack_timeout: 5s }\n",
    )
    .await;

    // Without acknowledgements the answer comes before the replica has the event: the relay's lag shows.
    let mut missing = 0;
    for i in 0..5 {
        let (s, v) = post_json(&plain, "shop", shop_event(&format!("p{i}"))).await;
        assert_eq!(s, 202, "{v}");
        missing += usize::from(!holds(&replica, v["id"].as_str().expect("id")));
    }
    assert!(missing > 0, "the replica lags its master by {LAG:?}");

    // With them, the replica holds every event at the moment its 202 arrives.
    for i in 0..5 {
        let (s, v) = post_json(&acked, "shop", shop_event(&format!("a{i}"))).await;
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().expect("id");
        assert!(
            holds(&replica, id),
            "202 for {id} before the replica had it"
        );
    }
    // A redelivery is answered once the replica has the original too, here one stored a moment before
    // without waiting.
    let (s, v) = post_json(&plain, "shop", shop_event("r")).await;
    assert_eq!(s, 202, "{v}");
    let original = v["id"].as_str().expect("id").to_owned();
    let (s, v) = post_json(&acked, "shop", shop_event("r")).await;
    assert_eq!((s, &v["duplicate"]), (200, &serde_json::json!(true)), "{v}");
    assert!(
        holds(&replica, &original),
        "200 duplicate before the replica had the original"
    );

    // Many requests at once share rounds: one WAIT covers every event stored before it began.
    let before = rounds(&master);
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (url, body) = (acked.url("shop"), shop_event(&format!("c{i}")));
        posts.spawn(async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("POST");
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.expect("json"))
        });
    }
    for (s, v) in posts.join_all().await {
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().expect("id");
        assert!(
            holds(&replica, id),
            "202 for {id} before the replica had it"
        );
    }
    let took = rounds(&master) - before;
    assert!(
        (1..=16).contains(&took),
        "64 concurrent webhooks took {took} rounds"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_replica_acknowledgement_the_sender_gets_503_and_its_retry_is_a_duplicate() {
    let (master, replica) = master_and_replica(None).await;
    replica_caught_up(master.port, "probe");
    let gw = Gateway::start(
        &master,
        &[("shop.yaml", SHOP)],
        "redis: { min_replica_acks: 1, replica_ack_timeout: 500ms }\n",
    )
    .await;
    let (s, v) = post_until_taken(&gw, "shop", &shop_event("before"), 10).await;
    assert_eq!(s, 202, "{v}");

    replica.signal(libc::SIGSTOP);
    let started = Instant::now();
    let r = client()
        .post(gw.url("shop"))
        .header("content-type", "application/json")
        .body(shop_event("frozen"))
        .send()
        .await
        .expect("POST");
    let waited = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        waited >= Duration::from_millis(250),
        "answered after {waited:?}, before a round's WAIT (half the timeout) ended"
    );
    // Stored on the master all the same: the sender's retry will be a duplicate, not a second event.
    assert_eq!(xlen(&master), 2);
    // A publish is held to the same rule.
    let (s, v) = publish(&gw, Some("pub_1")).await;
    assert_eq!(s, 503, "{v}");
    // One Redis holds both families: their rounds are one, labelled `all` (the cluster test's are not).
    let short = metric_sum(
        &gw.metrics().await,
        "hookgate_replica_ack_rounds_total",
        &[r#"family="all""#, r#"outcome="short""#],
    );
    assert!(short >= 1.0, "short rounds counted: {short}");

    replica.signal(libc::SIGCONT);
    assert!(
        poll_until(15, || xlen(&replica) == 2).await,
        "the replica caught up"
    );
    let (s, v) = post_json(&gw, "shop", shop_event("frozen")).await;
    assert_eq!((s, &v["duplicate"]), (200, &serde_json::json!(true)), "{v}");
    assert_eq!(xlen(&master), 2);
    let (s, v) = publish(&gw, Some("pub_1")).await;
    assert_eq!((s, &v["duplicate"]), (202, &serde_json::json!(true)), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_the_acknowledgement_is_asked_of_the_master_that_stored_the_event() {
    let cluster = RedisCluster::start_with_replicas();
    let inbound = cluster.master_of("{hookgate:in}:inbound");
    let outbound = cluster.master_of("{hookgate:out}:events");
    replica_caught_up(inbound, "{hookgate:in}:probe");
    replica_caught_up(outbound, "{hookgate:out}:probe");
    let gw = Gateway::start(
        &cluster,
        &[("shop.yaml", SHOP)],
        "redis: { min_replica_acks: 1, replica_ack_timeout: 500ms }\n",
    )
    .await;
    let (s, v) = post_until_taken(&gw, "shop", &shop_event("c_before"), 15).await;
    assert_eq!(s, 202, "{v}");
    if outbound != inbound {
        // Each family's rounds connect when first needed, and a new cluster connection asks nodes
        // for the slot map: a node frozen by SIGSTOP answers nobody, so a connection made during the
        // freeze could wait out the 500 ms on that instead (about one run in six). Publish once
        // before the freeze, so that what is measured below is the rounds of a running family.
        let (s, v) = publish(&gw, None).await;
        assert_eq!(s, 202, "{v}");
    }

    let replica = cluster
        .replica_of(inbound)
        .expect("the inbound master has a replica");
    cluster.signal_node(replica, libc::SIGSTOP);
    let (s, v) = post_json(&gw, "shop", shop_event("c_frozen")).await;
    // Asked of another master, WAIT would count that master's replica and answer 202.
    assert_eq!(s, 503, "{v}");
    if outbound != inbound {
        // The outbound family's master and replica are untouched: publishing goes on.
        let (s, v) = publish(&gw, None).await;
        assert_eq!(s, 202, "{v}");
    }
    cluster.signal_node(replica, libc::SIGCONT);

    // The sender retries until it is answered; the event was stored once.
    let (s, v) = post_until_taken(&gw, "shop", &shop_event("c_frozen"), 20).await;
    assert_eq!((s, &v["duplicate"]), (200, &serde_json::json!(true)), "{v}");
    let stored: usize = redis::cmd("XLEN")
        .arg("{hookgate:in}:inbound")
        .query(&mut cluster.conn())
        .expect("XLEN");
    assert_eq!(stored, 2);
}
