//! The outbound relay under stress: a subscriber that takes 10 s per request does not hold up the others,
//! and a relay process SIGKILLed mid-run loses no delivery (at-least-once; duplicates share webhook-id).

mod common;

use common::subscriber::Subscriber;
use common::{client, free_port, Gateway, Redis, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

async fn post(admin: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("http://{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_delay_the_others() {
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[],
        "outbound: { timeout: 15s }\negress: { allow: [127.0.0.0/8], allow_http: true }\n",
    )
    .await;
    let admin = gw.admin.to_string();
    let slow = Subscriber::start().await;
    slow.set_delay(Duration::from_secs(10));
    let fast = Subscriber::start().await;
    for (name, s) in [("slow", &slow), ("fast", &fast)] {
        let (st, v) = post(
            &admin,
            "/v1/subscriptions",
            json!({"name": name, "url": s.url("/"), "events": ["contact.*"]}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    const N: usize = 50;
    let started = Instant::now();
    for i in 0..N {
        let (st, _) = post(
            &admin,
            "/v1/events",
            json!({"type": "contact.created", "data": {"n": i}}),
        )
        .await;
        assert_eq!(st, 202);
    }
    assert!(
        fast.wait_delivered(N, 8).await,
        "the fast subscriber got {} of {N}",
        fast.delivered().len()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The slow one is busy with its first requests (its concurrency bound), none answered yet.
    assert!(
        slow.received().is_empty(),
        "10 s per request: nothing answered yet"
    );
    eprintln!("fast subscriber got all {N} events in {took:?} while the slow one held its slots");
}

/// A `hookgate serve` child process.
struct Proc {
    child: Child,
    admin: String,
}

impl Proc {
    fn spawn(dir: &std::path::Path, name: &str, redis: &Redis) -> Self {
        let admin = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join(format!("{name}.yaml"));
        let mappings = dir.join("mappings");
        std::fs::create_dir_all(&mappings).unwrap();
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:{}\nadmin_listen: {admin}\nredis_url: {}\nmappings_dir: {}\noutbound: {{ timeout: 1s, retry_base: 100ms, retry_max: 500ms }}\negress: {{ allow: [127.0.0.0/8], allow_http: true }}\nshutdown_delay: 0s\n",
                free_port(),
                redis.url(),
                mappings.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("HOSTNAME", name)
            .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hookgate");
        Proc { child, admin }
    }

    async fn wait_healthy(&self) {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("http://{}/healthz", self.admin)).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway process not healthy");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_loses_no_delivery() {
    const EVENTS: usize = 300;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut victim = Proc::spawn(dir.path(), "victim", &redis);
    let survivor = Proc::spawn(dir.path(), "survivor", &redis);
    victim.wait_healthy().await;
    survivor.wait_healthy().await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let s = Subscriber::start().await;
        // slow enough that the victim holds deliveries in flight when it dies
        s.set_delay(Duration::from_millis(15));
        let (st, v) = post(
            &survivor.admin,
            "/v1/subscriptions",
            json!({"name": format!("s{i}"), "url": s.url("/"), "events": ["order.*"]}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        subs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // both processes see the subscriptions
    let started = Instant::now();
    let mut killed_at = None;
    for n in 0..EVENTS {
        let admin = if n % 2 == 0 && killed_at.is_none() {
            &victim.admin
        } else {
            &survivor.admin
        };
        let (st, _) = post(
            admin,
            "/v1/events",
            json!({"type": "order.paid", "data": {"n": n}}),
        )
        .await;
        assert_eq!(st, 202);
        if n == EVENTS / 2 {
            victim.child.kill().unwrap(); // SIGKILL
            let _ = victim.child.wait();
            killed_at = Some(started.elapsed());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let complete = |s: &Subscriber| {
        s.delivered()
            .iter()
            .map(|r| r.json()["data"]["n"].as_u64())
            .collect::<HashSet<_>>()
            .len()
            == EVENTS
    };
    while !subs.iter().all(complete) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut dups = 0;
    for (i, s) in subs.iter().enumerate() {
        let mut by_n: HashMap<u64, Vec<String>> = HashMap::new();
        for r in s.delivered() {
            let n = r.json()["data"]["n"].as_u64().expect("n");
            by_n.entry(n)
                .or_default()
                .push(r.header("webhook-id").to_string());
        }
        assert_eq!(by_n.len(), EVENTS, "subscriber {i} got every event");
        for ids in by_n.values() {
            assert_eq!(
                ids.iter().collect::<HashSet<_>>().len(),
                1,
                "duplicates share the webhook-id"
            );
            dups += ids.len() - 1;
        }
    }
    let all_ids: HashSet<String> = subs
        .iter()
        .flat_map(|s| {
            s.delivered()
                .into_iter()
                .map(|r| r.header("webhook-id").to_string())
        })
        .collect();
    assert_eq!(
        all_ids.len(),
        EVENTS * 3,
        "one webhook-id per event and subscription"
    );
    eprintln!(
        "killed one of two relays at {killed_at:?}; every event reached all 3 subscribers by {:?}; {dups} duplicate deliveries (same webhook-id)",
        started.elapsed()
    );
}
