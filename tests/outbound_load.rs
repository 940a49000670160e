//! Throughput and latency of the outbound relay, for the README's figures. Not part of the suite (it takes
//! a while and its numbers depend on the machine): `cargo test --release --test outbound_load -- --ignored --nocapture`.

mod common;

use common::subscriber::Subscriber;
use common::{client, Gateway, Redis, ADMIN_TOKEN};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn setup(subs: usize) -> (Redis, Gateway, Subscriber) {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], "outbound: { timeout: 10s, max_subscriptions_per_account: 1000 }\negress: { allow: [127.0.0.0/8], allow_http: true }\nlog: { level: warn }\n").await;
    let sub = Subscriber::start().await;
    for i in 0..subs {
        let r = client()
            .post(gw.admin_url("/v1/subscriptions"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": format!("s{i}"), "url": sub.url(&format!("/{i}")), "events": ["load.*"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    (redis, gw, sub)
}

/// Publish `events`, each delivered to every subscription, at `rate` events/s (0: as fast as possible);
/// returns (deliveries/s, p50 ms, p99 ms) from publish to receipt.
async fn run(
    gw: &Gateway,
    sub: &Subscriber,
    subs: usize,
    events: usize,
    rate: f64,
) -> (f64, f64, f64) {
    let before = sub.received().len();
    let c = client();
    let url = gw.admin_url("/v1/events");
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    let mut expected = 0;
    for n in 0..events {
        expected += subs;
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"type": "load.test", "data": {"sent_us": now_us()}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        sub.wait_received(before + expected, 120).await,
        "all deliveries arrived"
    );
    let took = started.elapsed().as_secs_f64();
    let got = sub.received();
    let mut lat: Vec<f64> = got[before..]
        .iter()
        .map(|r| {
            let sent = r.json()["data"]["sent_us"].as_u64().unwrap();
            let at_us = now_us() - r.at.elapsed().as_micros() as u64;
            (at_us.saturating_sub(sent)) as f64 / 1000.0
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (expected as f64 / took, pct(0.5), pct(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn outbound_throughput_and_latency() {
    for subs in [1usize, 10, 100] {
        let (_redis, gw, sub) = setup(subs).await;
        let events = (20_000 / subs).max(200);
        let _warm = run(&gw, &sub, subs, events / 10, 0.0).await;
        let (peak, _, _) = run(&gw, &sub, subs, events, 0.0).await;
        let half_rate_events = peak / 2.0 / subs as f64;
        let (rate, p50, p99) = run(
            &gw,
            &sub,
            subs,
            (half_rate_events * 5.0) as usize,
            half_rate_events,
        )
        .await;
        eprintln!(
            "{subs:>3} subscriptions: peak {peak:.0} deliveries/s; at half ({rate:.0} deliveries/s): publish→receipt p50 {p50:.1} ms, p99 {p99:.1} ms"
        );
    }
}
