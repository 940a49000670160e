//! Delivery under load: end-to-end throughput, latency (202 → upstream request) unloaded and at half the
//! end-to-end rate (the figures in the README's Performance section), and two gateway
//! processes with one SIGKILLed mid-run: every event still reaches the upstream, duplicates carry the same
//! Idempotency-Key.

mod common;
use common::*;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_deliver_load_secret";
const EVENTS: usize = 2000;
const SENDERS: usize = 32;
const PACED: usize = 100;
/// Seconds of the half-rate latency phase.
const HALF_RATE_SECS: f64 = 3.0;

fn body(i: usize) -> String {
    format!(
        r#"{{"id":"evt_load_{i}","object":"event","type":"customer.created","data":{{"object":{{"id":"cus_{i}","email":"load{i}@example.org","name":"Load Test"}}}}}}"#
    )
}

/// POST event `i` to `url`; true once stored (202, or 200 for a resend the dedup recognises: a request cut
/// off by the SIGKILL may have been stored before the answer was lost).
async fn send(c: &reqwest::Client, url: &str, i: usize) -> bool {
    let b = body(i);
    let sig = stripe_header(SECRET, b.as_bytes(), now_secs());
    matches!(
        c.post(url)
            .header("content-type", "application/json")
            .header("stripe-signature", sig)
            .body(b)
            .send()
            .await,
        Ok(r) if r.status().is_success()
    )
}

fn stripe_mapping(dir: &std::path::Path) -> String {
    let secret = secret_file(dir, "stripe", SECRET);
    shipped_mapping("stripe.yaml", "STRIPE_WEBHOOK_SECRET", &secret)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throughput_and_latency_end_to_end() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let mapping = stripe_mapping(secrets.path());
    let gw = Gateway::start(
        &redis,
        &[("stripe.yaml", &mapping)],
        &format!("upstream: {{ url: \"{}\" }}\n", up.url()),
    )
    .await;
    let c = client();
    let accepted_at = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (c, url, acc) = (c.clone(), gw.url("stripe"), accepted_at.clone());
        tasks.push(tokio::spawn(async move {
            for i in (s..EVENTS).step_by(SENDERS) {
                assert!(send(&c, &url, i).await, "event {i} accepted");
                acc.lock()
                    .unwrap()
                    .insert(format!("load{i}@example.org"), Instant::now());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let received = started.elapsed();
    assert!(up.wait_delivered(EVENTS, 25).await, "all delivered");
    let delivered = started.elapsed();
    let acc = std::mem::take(&mut *accepted_at.lock().unwrap());
    let mut lat: Vec<Duration> = up
        .delivered()
        .iter()
        .filter_map(|r| {
            let t = acc.get(r.body["email"].as_str()?)?;
            Some(r.at.saturating_duration_since(*t))
        })
        .collect();
    lat.sort();
    assert_eq!(lat.len(), EVENTS, "one request per event");
    // Unloaded latency: one event at a time, every 10 ms.
    let mut sent_at = HashMap::new();
    for i in EVENTS..EVENTS + PACED {
        // from before the POST: the upstream request often lands before the client has read the 202
        sent_at.insert(format!("load{i}@example.org"), Instant::now());
        assert!(send(&c, &gw.url("stripe"), i).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up.wait_delivered(EVENTS + PACED, 10).await);
    let mut paced: Vec<Duration> = up
        .delivered()
        .iter()
        .filter_map(|r| {
            Some(r.at.saturating_duration_since(*sent_at.get(r.body["email"].as_str()?)?))
        })
        .collect();
    paced.sort();
    eprintln!(
        "deliver paced: {PACED} events at 100/s; POST sent → upstream request p50 {:?} p99 {:?}",
        percentile(&paced, 0.5),
        percentile(&paced, 0.99)
    );
    let rate = EVENTS as f64 / delivered.as_secs_f64();
    eprintln!(
        "deliver load: {EVENTS} events; inbound {:.0}/s, delivered to upstream {rate:.0}/s end to end; 202 → upstream p50 {:?} p99 {:?} max {:?}",
        EVENTS as f64 / received.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    // At half the end-to-end rate, for HALF_RATE_SECS: each event sent on its own schedule (not after the
    // previous answer), latency from its 202 to its upstream request.
    let half = rate / 2.0;
    let first = EVENTS + PACED;
    let n = ((half * HALF_RATE_SECS) as usize).max(100);
    let answered = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for k in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / half)).await;
        let (c, url, answered) = (c.clone(), gw.url("stripe"), answered.clone());
        tasks.push(tokio::spawn(async move {
            let i = first + k;
            let sent = Instant::now();
            assert!(send(&c, &url, i).await, "event {i} accepted");
            answered
                .lock()
                .unwrap()
                .insert(format!("load{i}@example.org"), (sent, Instant::now()));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    assert!(
        up.wait_delivered(first + n, 20).await,
        "half-rate events delivered"
    );
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    let (mut from_202, mut from_post): (Vec<Duration>, Vec<Duration>) = up
        .delivered()
        .iter()
        .filter_map(|r| {
            let (sent, ok) = answered.get(r.body["email"].as_str()?)?;
            Some((
                r.at.saturating_duration_since(*ok),
                r.at.saturating_duration_since(*sent),
            ))
        })
        .unzip();
    from_202.sort();
    from_post.sort();
    assert_eq!(from_202.len(), n, "one request per event");
    eprintln!(
        "deliver at half rate: {n} events at {achieved:.0}/s (target {half:.0}/s); 202 → upstream p50 {:?} p99 {:?} max {:?} (0: the request reached the upstream before the client read the 202); POST sent → upstream p50 {:?} p99 {:?}",
        percentile(&from_202, 0.5),
        percentile(&from_202, 0.99),
        from_202[from_202.len() - 1],
        percentile(&from_post, 0.5),
        percentile(&from_post, 0.99),
    );
}

/// A gateway as a separate process (the release binary), so it can be SIGKILLed.
struct Proc {
    child: Child,
    listen: String,
    admin: String,
}

impl Proc {
    fn spawn(
        dir: &std::path::Path,
        name: &str,
        redis: &Redis,
        mappings: &std::path::Path,
        upstream: &str,
    ) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "listen: {listen}\nadmin_listen: {admin}\nredis_url: {}\nmappings_dir: {}\nupstream: {{ url: \"{upstream}\" }}\ndeliver: {{ timeout: 1s, retry_base: 50ms, retry_max: 500ms }}\n",
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hookgate");
        Proc {
            child,
            listen,
            admin,
        }
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

    fn url(&self) -> String {
        format!("http://{}/webhooks/stripe", self.listen)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_process_loses_no_event() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    // slow enough that the victim has deliveries in flight when it dies
    up.set_delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).unwrap();
    std::fs::write(mappings.join("stripe.yaml"), stripe_mapping(dir.path())).unwrap();
    let mut victim = Proc::spawn(dir.path(), "victim", &redis, &mappings, &up.url());
    let survivor = Proc::spawn(dir.path(), "survivor", &redis, &mappings, &up.url());
    victim.wait_healthy().await;
    survivor.wait_healthy().await;

    let c = client();
    let started = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (c, urls, sent) = (c.clone(), [victim.url(), survivor.url()], sent.clone());
        tasks.push(tokio::spawn(async move {
            for i in (s..EVENTS).step_by(SENDERS) {
                // alternate, and fall back to the survivor once the victim is gone
                if !send(&c, &urls[i % 2], i).await {
                    assert!(send(&c, &urls[1], i).await, "event {i} accepted");
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    while sent.load(std::sync::atomic::Ordering::Relaxed) < EVENTS / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.child.kill().unwrap(); // SIGKILL
    let _ = victim.child.wait();
    let killed_at = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    let by_email = loop {
        let mut by_email: HashMap<String, Vec<Recorded>> = HashMap::new();
        for r in up.delivered() {
            if let Some(e) = r.body["email"].as_str() {
                by_email.entry(e.to_string()).or_default().push(r);
            }
        }
        if by_email.len() == EVENTS || Instant::now() > deadline {
            break by_email;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(by_email.len(), EVENTS, "every event reached the upstream");
    let mut dups = 0;
    for reqs in by_email.values() {
        let keys: HashSet<&String> = reqs.iter().map(|r| &r.headers["idempotency-key"]).collect();
        assert_eq!(
            keys.len(),
            1,
            "a duplicate carries the same Idempotency-Key"
        );
        dups += reqs.len() - 1;
    }
    eprintln!(
        "killed one of two processes at {killed_at:?}; all {EVENTS} delivered by {:?}; {dups} duplicate requests (same key)",
        started.elapsed()
    );
}
