//! Nothing lost: a 2xx only after the event is in Redis; 503 (never 2xx) when Redis cannot take it.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "whsec_durability_test_secret";

async fn stripe_gateway(redis: &Redis, cfg: &str) -> (Gateway, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("stripe");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let gw = Gateway::start(redis, &[("stripe.yaml", &stripe_source(&file))], cfg).await;
    (gw, secrets)
}

async fn send_signed(
    c: &reqwest::Client,
    url: &str,
    evt: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let body = format!(
        r#"{{"id":"{evt}","object":"event","type":"customer.created","data":{{"object":{{"email":"a@example.org"}}}}}}"#
    );
    let sig = stripe_header(SECRET, body.as_bytes(), now_secs());
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json::<Value>().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_signed_requests_are_all_stored() {
    let redis = Redis::start();
    // This test is about nothing lost or doubled under concurrency, not latency: on a loaded 2-core
    // machine 10,000 requests at once can wait seconds, so the timeouts (whose 503s have their own tests)
    // are set out of the way.
    let cfg = "limits: { max_in_flight: 16384, request_timeout: 90s, idle_timeout: 120s }\nredis: { response_timeout: 20s }\n";
    let (gw, _s) = stripe_gateway(&redis, cfg).await;
    let c = client();
    let url = gw.url("stripe");
    let mut tasks = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            send_signed(&c, &url, &format!("evt_{i:05}")).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap().expect("every request answered");
        assert_eq!(s, 202, "{b}");
        accepted += 1;
    }
    assert_eq!(accepted, 10_000);
    let ids = stored_event_ids(&redis);
    assert_eq!(ids.len(), 10_000, "exactly one stream entry per request");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10_000);
    // a redelivery of any of them is not stored again
    let (s, b) = send_signed(&c, &url, "evt_04242").await.unwrap();
    assert_eq!((s, b["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(stored_event_ids(&redis).len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_answers_503_and_recovers_without_restart() {
    let mut redis = Redis::start();
    let (gw, _s) = stripe_gateway(
        &redis,
        "redis: { response_timeout: 500ms, connect_timeout: 300ms }\n",
    )
    .await;
    let c = client();
    let url = gw.url("stripe");
    assert_eq!(send_signed(&c, &url, "evt_before").await.unwrap().0, 202);
    redis.kill();
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            stripe_header(SECRET, b"{\"id\":\"evt_down\"}", now_secs()),
        )
        .body("{\"id\":\"evt_down\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.headers().get("retry-after").is_some(),
        "503 tells the sender when to retry"
    );
    redis.restart();
    assert_eq!(
        until_accepted(&c, &url, "evt_after").await,
        202,
        "accepting again with no gateway restart"
    );
}

/// Send one fresh signed event until it is accepted, 100 tries 100 ms apart (each try also waits up to the
/// gateway's answer: a minute at worst); only 503 may come before. The last status.
async fn until_accepted(c: &reqwest::Client, url: &str, evt: &str) -> u16 {
    let mut status = 0;
    for _ in 0..100 {
        status = send_signed(c, url, evt).await.unwrap().0;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "while reconnecting, only 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// Redis is SIGKILLed in the middle of a run and started again (append-only file, fsync always):
/// every request is answered 202 or 503, and every 202 is in the stream afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_run_loses_nothing_acknowledged() {
    let mut redis = Redis::start_durable();
    let (gw, _s) = stripe_gateway(
        &redis,
        "redis: { response_timeout: 500ms, connect_timeout: 300ms }\n",
    )
    .await;
    let c = client();
    let url = gw.url("stripe");
    let sent = Arc::new(tokio::sync::Semaphore::new(64));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..3_000 {
        let (c, url, sent, done) = (c.clone(), url.clone(), sent.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sent.acquire_owned().await.unwrap();
            let evt = format!("evt_{i:05}");
            let r = send_signed(&c, &url, &evt).await;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (evt, r)
        }));
    }
    while done.load(std::sync::atomic::Ordering::Relaxed) < 800 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    let (mut ok, mut unavailable) = (HashSet::new(), 0);
    for t in tasks {
        let (evt, r) = t.await.unwrap();
        match r.expect("the gateway answers every request") {
            (202, _) => {
                ok.insert(evt);
            }
            (200, b) => panic!("duplicate answer for a fresh id {evt}: {b}"),
            (503, _) => unavailable += 1,
            (s, b) => panic!("{evt}: unexpected {s} {b}"),
        }
    }
    let stored: HashSet<String> = stored_event_ids(&redis).into_iter().collect();
    let lost: Vec<_> = ok.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events missing after the restart: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        unavailable > 0,
        "the outage was not observed; the test proved nothing"
    );
    assert!(
        ok.len() > 800,
        "most requests succeeded ({} ok, {unavailable} 503)",
        ok.len()
    );
    // The same gateway, never restarted, takes new events again and they are stored.
    assert_eq!(
        until_accepted(&c, &url, "evt_after_outage").await,
        202,
        "accepting again after the outage with no gateway restart"
    );
    assert!(stored_event_ids(&redis).contains(&"evt_after_outage".to_owned()));
    println!("{} accepted, {unavailable} answered 503, 0 lost", ok.len());
}

/// A "Redis" that accepts connections and never answers, named by its port.
struct SilentRedis(u16);

impl RedisTarget for SilentRedis {
    fn point(&self, cfg: &mut hookgate::config::Config) {
        cfg.redis_url = format!("redis://127.0.0.1:{}", self.0);
    }
}

/// While the connection manager waits for a (re)connect, only `redis.connect_timeout` bounds it, not the
/// response timeout. The store's own deadline (3 × the response timeout) still answers 503, long before
/// the connect timeout and the request timeout; nothing is answered 2xx.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_never_answers_gets_503_within_the_store_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let open = "source: open\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\n";
    let gw = Gateway::start(
        &SilentRedis(port),
        &[("open.yaml", open)],
        "redis: { response_timeout: 300ms, connect_timeout: 20s }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let (s, b) = post_json(&gw, "open", r#"{"id":"e1"}"#).await;
    let took = started.elapsed();
    assert_eq!((s, b["error"].as_str()), (503, Some("unavailable")), "{b}");
    // The deadline is 900 ms; without it the answer waits for the 20 s connect timeout.
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    holder.abort();
}

/// The XADD and the dedup key's SET are one pipeline, not a transaction. An XADD that fails (here the
/// stream key holds another type; also out of memory) must not leave the dedup key behind: the sender's retry would be
/// answered "duplicate" for an event stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_xadd_leaves_no_dedup_key_behind() {
    let redis = Redis::start();
    let (gw, _s) = stripe_gateway(&redis, "").await;
    let c = client();
    let mut r = redis.conn();
    let _: () = redis::cmd("SET")
        .arg("hookgate:inbound")
        .arg("not a stream")
        .query(&mut r)
        .unwrap();
    let (s, b) = send_signed(&c, &gw.url("stripe"), "evt_partial_1")
        .await
        .unwrap();
    assert_eq!(s, 503, "{b}");
    let key: Option<String> = redis::cmd("GET")
        .arg("hookgate:dedup:stripe:evt_partial_1")
        .query(&mut r)
        .unwrap();
    assert_eq!(key, None, "the dedup key of an event not stored is removed");
    let _: () = redis::cmd("DEL")
        .arg("hookgate:inbound")
        .query(&mut r)
        .unwrap();
    let (s, b) = send_signed(&c, &gw.url("stripe"), "evt_partial_1")
        .await
        .unwrap();
    assert_eq!(s, 202, "the retry is stored, not called a duplicate: {b}");
    assert_eq!(stored_event_ids(&redis), vec!["evt_partial_1"]);
    gw.stop().await.unwrap();
}

/// The other half: a SET that fails while running (here the dedup key holds a hash; on Redis before 7.0,
/// `NX` with `GET` itself) after the XADD landed. A worker may have read the entry already, so it stays:
/// the sender gets 202 for an event stored once, and the failure is logged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dedup_set_keeps_its_entry_and_is_counted() {
    let redis = Redis::start();
    let (gw, _s) = stripe_gateway(&redis, "").await;
    let c = client();
    let mut r = redis.conn();
    let key = "hookgate:dedup:stripe:evt_partial_2";
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("f")
        .arg("v")
        .query(&mut r)
        .unwrap();
    let (s, b) = send_signed(&c, &gw.url("stripe"), "evt_partial_2")
        .await
        .unwrap();
    assert_eq!(s, 202, "{b}");
    assert_eq!(
        stored_event_ids(&redis),
        vec!["evt_partial_2"],
        "stored once"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("hookgate_dedup_failures_total{source=\"stripe\"} 1"),
        "{metrics}"
    );
    gw.stop().await.unwrap();
}

/// A connection Redis closed (a restart, a proxy's idle cut) is noticed only when a command fails on it;
/// that one failure must not make the instance unready (Kubernetes would take it out of service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_failed_by_a_connection_redis_closed() {
    let redis = Redis::start();
    let (gw, _s) = stripe_gateway(&redis, "").await;
    let c = client();
    let ready = gw.admin_url("/readyz");
    for round in 0..3 {
        let r = c.get(&ready).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "round {round}");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(&mut redis.conn())
            .unwrap();
        assert!(killed >= 1, "the gateway's connections were closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = c.get(&ready).send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "round {round}: {}", r.text().await.unwrap());
    }
    gw.stop().await.unwrap();
}

/// `/readyz` probes with the store's own write: a Redis that answers PING but refuses writes (a replica
/// after a failover) is not ready, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_redis_that_refuses_writes() {
    let primary = Redis::start();
    let redis = Redis::start();
    let (gw, _s) = stripe_gateway(&redis, "").await;
    let c = client();
    let ready = gw.admin_url("/readyz");
    let r = c.get(&ready).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut conn = redis.conn();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query(&mut conn)
        .unwrap();
    let refused = poll_until(10, || {
        let mut probe = redis.conn();
        redis::cmd("SET")
            .arg("hookgate:probe")
            .arg("1")
            .query::<()>(&mut probe)
            .is_err()
    })
    .await;
    assert!(refused, "the replica refuses writes");
    let r = c.get(&ready).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let why = r.text().await.unwrap();
    assert_eq!(why.trim(), "redis refuses writes (READONLY)");
    let (s, _) = send_signed(&c, &gw.url("stripe"), "evt_ro").await.unwrap();
    assert_eq!(
        s, 503,
        "what /readyz reports is what the receive path meets"
    );
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut conn)
        .unwrap();
    let r = c.get(&ready).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "ready again without a restart");
    gw.stop().await.unwrap();
}
