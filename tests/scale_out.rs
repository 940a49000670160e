//! Scale-out (issue #6, item 7): three `hookgate serve` processes (the real binary) share one Redis, one
//! mappings dir, one upstream and two subscriptions. 10,000 inbound webhooks and 10,000 published events go
//! in concurrently, round-robin over the processes; a third of the way in one process is SIGKILLed and
//! restarted on the same ports. Every event must arrive (at least once: duplicates are counted, not
//! failed), on one redis-server and on a three-master Redis Cluster.
//!
//! `scale_out_throughput` (ignored) measures how delivery scales with 1, 2 and 3 `--role worker` processes.

mod common;

use common::cluster::{proc_cpu_secs, Node, RedisCluster};
use common::subscriber::Subscriber;
use common::{client, free_port, secret_file, RecordingUpstream, Redis, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: usize = 10_000;
/// Subscriptions to the published events, each on its own path of the one subscriber server: every event
/// must reach every one of them.
const SUBSCRIPTIONS: [&str; 2] = ["/crm", "/zapier"];
/// Deliveries the subscriber must get: every published event to every subscription.
const DELIVERIES: usize = EVENTS * SUBSCRIPTIONS.len();
const IN_FLIGHT: usize = 64;
const SOURCE: &str = "scale";
const TOKEN: &str = "scale-static-token";
/// How long every event may take to reach the upstream and the subscriber.
const DELIVERY_WAIT: Duration = Duration::from_secs(120);
/// Events per second per side (inbound, outbound) in the kill test: paced, so the run lasts about 5 s and
/// the restarted process comes back while the load is still on.
const PACE: f64 = 2_000.0;

/// The Redis the processes share.
enum Backend {
    Single(Redis),
    Cluster(RedisCluster),
}

impl Backend {
    fn start(cluster: bool) -> Self {
        if cluster {
            Backend::Cluster(RedisCluster::start())
        } else {
            Backend::Single(Redis::start())
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Backend::Single(_) => "one redis-server",
            Backend::Cluster(_) => "redis cluster (3 masters)",
        }
    }

    /// A connection to each Redis node.
    fn nodes(&self) -> Vec<redis::Connection> {
        let urls = match self {
            Backend::Single(r) => vec![r.url()],
            Backend::Cluster(c) => c.urls(),
        };
        urls.iter()
            .map(|u| {
                redis::Client::open(u.as_str())
                    .and_then(|c| c.get_connection())
                    .expect("connect to a redis node")
            })
            .collect()
    }

    /// DBSIZE of each node: where the keys went (on the cluster, the two key families' slots).
    fn keys_per_node(&self) -> Vec<u64> {
        self.nodes()
            .iter_mut()
            .map(|conn| redis::cmd("DBSIZE").query(conn).expect("DBSIZE"))
            .collect()
    }

    /// CPU seconds (user + system) the Redis servers have used so far, summed over the nodes.
    fn cpu_secs(&self) -> f64 {
        self.nodes()
            .iter_mut()
            .map(|conn| {
                let info: String = redis::cmd("INFO").arg("cpu").query(conn).expect("INFO cpu");
                info.lines()
                    .filter_map(|l| {
                        let (k, v) = l.trim().split_once(':')?;
                        matches!(k, "used_cpu_sys" | "used_cpu_user")
                            .then(|| v.parse::<f64>().ok())
                            .flatten()
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    /// `base`, or on the cluster the first `base<k>` whose two key families (`{<prefix>:in}`,
    /// `{<prefix>:out}`) hash to slots of two different masters, so every run measures the same layout.
    fn prefix_on_two_masters(&self, base: &str) -> String {
        let Backend::Cluster(c) = self else {
            return base.to_string();
        };
        (0..100)
            .map(|k| format!("{base}{k}"))
            .find(|p| c.master_of(&format!("{{{p}:in}}")) != c.master_of(&format!("{{{p}:out}}")))
            .expect("a prefix whose families sit on two masters")
    }

    /// The config lines that point hookgate at this Redis.
    fn yaml(&self) -> String {
        match self {
            Backend::Single(r) => format!("redis_url: {}\n", r.url()),
            Backend::Cluster(c) => format!("redis:\n  cluster_nodes: [{}]\n", c.urls().join(", ")),
        }
    }
}

/// What the processes share (upstream, subscriber, mappings, subscriptions file, secrets), and the
/// processes. On a panic, the tail of every process's log is printed; the processes are killed on Drop.
struct Rig {
    dir: tempfile::TempDir,
    upstream: RecordingUpstream,
    subscriber: Subscriber,
    /// Config shared by every process: everything but the listeners.
    base: String,
    nodes: Vec<Node>,
}

impl Rig {
    /// `prefix` is the key prefix, without a hash tag: on a cluster hookgate gives each key family its own
    /// (`{<prefix>:in}`, `{<prefix>:out}`), so the families may sit on two masters.
    async fn new(backend: &Backend, prefix: &str) -> Self {
        let dir = tempfile::tempdir().expect("rig tempdir");
        let upstream = RecordingUpstream::start().await;
        let subscriber = Subscriber::start().await;
        let mappings = dir.path().join("mappings");
        std::fs::create_dir(&mappings).expect("mkdir mappings");
        let token = secret_file(dir.path(), "token", TOKEN);
        // A cheap verify (a static token) and one action per event: the load is the pipeline.
        std::fs::write(
            mappings.join("scale.yaml"),
            format!(
                "source: {SOURCE}\nverify: {{ preset: token, header: X-Token, secret: \"{token}\" }}\n\
                 dedup: {{ id: $.id, ttl: 1h }}\nrules:\n  - name: seen\n    custom_event:\n      \
                 event_name: scale_seen\n      ext_id: $.id\n"
            ),
        )
        .expect("write mapping");
        let whsec = secret_file(
            dir.path(),
            "whsec",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=",
        );
        let subs = dir.path().join("subscriptions.yaml");
        let listed: String = SUBSCRIPTIONS
            .iter()
            .map(|path| {
                format!(
                    "  - id: scale{}\n    name: scale{path}\n    url: {}\n    events: [\"scale.*\"]\n    \
                     secret: \"{whsec}\"\n    concurrency: 32\n",
                    path.replace('/', "-"),
                    subscriber.url(path)
                )
            })
            .collect();
        std::fs::write(&subs, format!("subscriptions:\n{listed}"))
            .expect("write subscriptions file");
        // Short timeouts so a killed process's work is reclaimed within seconds (inbound: 3 × timeout
        // + 5 s; outbound leases: 2 × timeout + 10 s); debug logging off.
        let base = format!(
            "{}key_prefix: \"{prefix}\"\nmappings_dir: {}\nsubscriptions_file: {}\n\
             upstream: {{ url: \"{}\" }}\n\
             deliver: {{ concurrency: 32, timeout: 1s, retry_base: 100ms, retry_max: 500ms }}\n\
             outbound: {{ timeout: 1s, retry_base: 100ms, retry_max: 500ms }}\n\
             egress: {{ allow: [127.0.0.0/8], allow_http: true }}\n\
             shutdown_delay: 0s\nshutdown_grace: 1s\nlog: {{ level: warn }}\n",
            backend.yaml(),
            mappings.display(),
            subs.display(),
            upstream.url(),
        );
        Rig {
            dir,
            upstream,
            subscriber,
            base,
            nodes: Vec::new(),
        }
    }

    /// Start one more process with its own listeners and config file (not waiting: `wait_ready`).
    fn add(&mut self, role: &str) {
        let name = format!("node{}-{role}", self.nodes.len() + 1);
        let (config, admin) = self.write_config(&name);
        let log = self.dir.path().join(format!("{name}.log"));
        self.nodes.push(Node::spawn(
            &name,
            &config,
            role,
            &admin,
            &log,
            &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)],
        ));
    }

    /// The config file of process `name`, with listeners on ports free now; its path and admin address.
    fn write_config(&self, name: &str) -> (std::path::PathBuf, String) {
        let admin = format!("127.0.0.1:{}", free_port());
        let config = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\nadmin_listen: {admin}\n{}",
                free_port(),
                self.base
            ),
        )
        .expect("write node config");
        (config, admin)
    }

    /// Every process ready. A port picked for a process can be taken by another test's server before the
    /// process binds it (the suite runs tests in parallel): such a process starts again on new ports.
    async fn wait_ready(&mut self) {
        for i in 0..self.nodes.len() {
            let mut tries = 0;
            loop {
                match self.nodes[i].ready_within(30).await {
                    Ok(()) => break,
                    Err(e) if e.contains("Address already in use") && tries < 3 => {
                        tries += 1;
                        let (_, admin) = self.write_config(&self.nodes[i].name.clone());
                        self.nodes[i].admin = admin;
                        self.nodes[i].start();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    /// Inbound and publish URLs of the first `n` processes (the ones that take the load).
    fn targets(&self, n: usize) -> Targets {
        let listen = |n: &Node| {
            let cfg = std::fs::read_to_string(&n.config).expect("read node config");
            cfg.lines()
                .find_map(|l| l.strip_prefix("listen: "))
                .expect("listen line")
                .to_string()
        };
        Targets {
            inbound: self.nodes[..n]
                .iter()
                .map(|n| format!("http://{}/webhooks/{SOURCE}", listen(n)))
                .collect(),
            publish: self.nodes[..n]
                .iter()
                .map(|n| format!("http://{}/v1/events", n.admin))
                .collect(),
        }
    }

    /// (requests, unique, the inbound ids seen) at the upstream: answered 2xx, keyed by Idempotency-Key.
    fn upstream_counts(&self) -> Counts {
        self.upstream.with_requests(|reqs| {
            let mut keys = HashSet::new();
            let mut ids = HashSet::new();
            for r in reqs.iter().filter(|r| r.status < 300) {
                if let Some(k) = r.headers.get("idempotency-key") {
                    keys.insert(k.clone());
                }
                if let Some(id) = r.body["identifiers"]["ext_id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
            Counts {
                total: reqs.len(),
                unique: keys.len(),
                ids,
            }
        })
    }

    /// Same at the subscriber, keyed by subscription (the path) and `webhook-id`; ids are
    /// `<path> <data.id>`.
    fn subscriber_counts(&self) -> Counts {
        self.subscriber.with_received(|got| {
            let mut keys = HashSet::new();
            let mut ids = HashSet::new();
            for r in got.iter().filter(|r| (200..300).contains(&r.status)) {
                keys.insert(format!("{} {}", r.path, r.header("webhook-id")));
                if let Some(id) = r.json()["data"]["id"].as_str() {
                    ids.insert(format!("{} {id}", r.path));
                }
            }
            Counts {
                total: got.len(),
                unique: keys.len(),
                ids,
            }
        })
    }

    /// Wait (bounded) until the upstream and the subscriber each have `EVENTS` distinct deliveries; also
    /// when each side got its last one, in seconds since `t0` (None: not within the wait).
    async fn wait_delivered(&self, t0: Instant) -> Delivered {
        let deadline = Instant::now() + DELIVERY_WAIT;
        let (mut up_at, mut sub_at) = (None, None);
        loop {
            let (up, sub) = (self.upstream_counts(), self.subscriber_counts());
            if up.unique >= EVENTS && up_at.is_none() {
                up_at = Some(t0.elapsed().as_secs_f64());
            }
            if sub.unique >= DELIVERIES && sub_at.is_none() {
                sub_at = Some(t0.elapsed().as_secs_f64());
            }
            if (up_at.is_some() && sub_at.is_some()) || Instant::now() > deadline {
                return Delivered {
                    up,
                    sub,
                    up_at,
                    sub_at,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per process: how many lines it logged (warn and above) and its last few.
    fn log_summary(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                format!(
                    "  {}: {} log lines{}{}",
                    n.name,
                    text.lines().count(),
                    if text.is_empty() { "" } else { ", last:\n" },
                    n.log_tail(3)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn print_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "---- {} ({}) last log lines:\n{}",
                n.name,
                n.log.display(),
                n.log_tail(30)
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

struct Delivered {
    up: Counts,
    sub: Counts,
    up_at: Option<f64>,
    sub_at: Option<f64>,
}

struct Counts {
    total: usize,
    unique: usize,
    ids: HashSet<String>,
}

#[derive(Clone)]
struct Targets {
    inbound: Vec<String>,
    publish: Vec<String>,
}

/// What the senders saw.
#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    accepted: AtomicUsize,
    duplicate: AtomicUsize,
    /// Requests sent again to another process after a connection error or a 5xx.
    resent: AtomicUsize,
    /// Events answered (accepted or duplicate), both kinds.
    done: AtomicUsize,
    /// Why requests were re-sent: the 5xx status or the kind of connection error, with counts.
    reasons: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Tally {
    fn resent_because(&self, why: String) {
        self.resent.fetch_add(1, Ordering::Relaxed);
        *self
            .reasons
            .lock()
            .expect("reasons lock")
            .entry(why)
            .or_default() += 1;
    }
}

/// The kind of a request error, without the URL (which differs per process).
fn error_kind(e: &reqwest::Error) -> String {
    let mut kind = if e.is_connect() {
        "connect".to_string()
    } else if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_request() {
        "request".to_string()
    } else if e.is_body() || e.is_decode() {
        "body".to_string()
    } else {
        "other".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        kind = format!("{kind}: {s}");
        source = s.source();
    }
    kind
}

fn secs(at: Option<f64>) -> String {
    at.map_or("never".into(), |s| format!("{s:.1}"))
}

fn inbound_id(i: usize) -> String {
    format!("in-{i:05}")
}

fn outbound_id(i: usize) -> String {
    format!("out-{i:05}")
}

/// Events a process stored since it started (webhooks answered 202, publishes stored), from its metrics.
async fn taken(node: &Node) -> u64 {
    metric_sum(node, |l| {
        (l.starts_with("hookgate_inbound_requests_total{") && l.contains("status=\"202\""))
            || (l.starts_with("hookgate_events_published_total{")
                && l.contains("outcome=\"stored\""))
    })
    .await
}

/// The sum of a process's metric samples on the lines `pick` selects.
async fn metric_sum(node: &Node, pick: impl Fn(&str) -> bool) -> u64 {
    let text = client()
        .get(format!("http://{}/metrics", node.admin))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| pick(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Send one event until some process takes it: on a connection error or a 5xx, the next process.
async fn send_until_taken(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    req: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    tally: &Tally,
) {
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut k = first;
    loop {
        let url = &urls[k % urls.len()];
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let problem = match req(client.post(url)).send().await {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["duplicate"] == json!(true) {
                    tally.duplicate.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                }
                tally.done.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(r) if r.status().is_server_error() => {
                let s = r.status();
                format!("{s} {}", r.text().await.unwrap_or_default())
            }
            Ok(r) => {
                let s = r.status();
                panic!(
                    "{url}: unexpected answer {s}: {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) => error_kind(&e),
        };
        assert!(
            Instant::now() < give_up,
            "no process took an event for 60 s; last: {url}: {problem}"
        );
        tally.resent_because(problem);
        k += 1;
        if (k - first) % urls.len() == 0 {
            // Every process refused once: give the restart a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The two kinds of load: webhooks to the inbound listeners, publishes to the admin API.
#[derive(Clone, Copy)]
enum Side {
    Inbound,
    Publish,
}

impl Side {
    /// Event `i` of this side as a request.
    fn request(self, b: reqwest::RequestBuilder, i: usize) -> reqwest::RequestBuilder {
        match self {
            Side::Inbound => b
                .header("content-type", "application/json")
                .header("x-token", TOKEN)
                .body(json!({"id": inbound_id(i), "n": i}).to_string()),
            Side::Publish => b.bearer_auth(ADMIN_TOKEN).json(
                &json!({"type": "scale.event", "id": outbound_id(i), "data": {"id": outbound_id(i)}}),
            ),
        }
    }
}

/// When the load may send an event: `pace` events/s per side from the start, and events from `held_from`
/// on only once `release` holds true.
#[derive(Clone)]
struct Schedule {
    pace: Option<f64>,
    held_from: usize,
    release: tokio::sync::watch::Receiver<bool>,
}

impl Schedule {
    /// As fast as answered, nothing held.
    fn flat_out() -> Self {
        Schedule {
            pace: None,
            held_from: usize::MAX,
            release: tokio::sync::watch::channel(true).1,
        }
    }

    async fn wait(&mut self, t0: tokio::time::Instant, i: usize) {
        if let Some(p) = self.pace {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / p)).await;
        }
        if i >= self.held_from {
            let _ = self.release.wait_for(|r| *r).await;
        }
    }
}

/// Start `IN_FLIGHT` inbound senders and as many publishers, `EVENTS` each, round-robin over `targets`,
/// each event sent when `schedule` lets it.
fn start_load(
    targets: &Targets,
    tally: &Arc<Tally>,
    schedule: Schedule,
) -> Vec<tokio::task::JoinHandle<()>> {
    let t0 = tokio::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("http client");
    let mut tasks = Vec::new();
    for side in [Side::Inbound, Side::Publish] {
        let next = Arc::new(AtomicUsize::new(0));
        let urls = match side {
            Side::Inbound => targets.inbound.clone(),
            Side::Publish => targets.publish.clone(),
        };
        for _ in 0..IN_FLIGHT {
            let (c, urls, tl, next, mut sched) = (
                client.clone(),
                urls.clone(),
                tally.clone(),
                next.clone(),
                schedule.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= EVENTS {
                        return;
                    }
                    sched.wait(t0, i).await;
                    send_until_taken(&c, &urls, i, |b| side.request(b, i), &tl).await;
                }
            }));
        }
    }
    tasks
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.expect("a sender failed");
    }
}

/// The default test's body: three `--role all` processes, the load, a SIGKILL + restart a third in.
async fn scale_out_with_a_kill(cluster: bool) {
    let started = Instant::now();
    let backend = Backend::start(cluster);
    let mut rig = Rig::new(&backend, &backend.prefix_on_two_masters("scale")).await;
    // Deliveries take 20 ms, so every process holds events in flight when one is killed: the survivors
    // must reclaim them.
    rig.upstream.set_delay(Duration::from_millis(20));
    rig.subscriber.set_delay(Duration::from_millis(20));
    for _ in 0..3 {
        rig.add("all");
    }
    rig.wait_ready().await;
    let setup = started.elapsed();
    let t0 = Instant::now();
    let tally = Arc::new(Tally::default());
    // The last fifth of each side waits until the killed process is back, so it takes part in the end
    // of the run however slow the machine.
    let (release, held) = tokio::sync::watch::channel(false);
    let schedule = Schedule {
        pace: Some(PACE),
        held_from: EVENTS * 4 / 5,
        release: held,
    };
    let tasks = start_load(&rig.targets(3), &tally, schedule);

    // A third of the way in: SIGKILL the second process, restart it on the same ports after ~1 s.
    while tally.done.load(Ordering::Relaxed) < 2 * EVENTS / 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "load stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resent_before = tally.resent.load(Ordering::Relaxed);
    rig.nodes[1].kill();
    let killed_at = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.nodes[1].start();
    rig.nodes[1].wait_ready(30).await;
    let back_at = t0.elapsed();
    let _ = release.send(true);
    join(tasks).await;
    let taken_after_restart = taken(&rig.nodes[1]).await;

    let sent_at = t0.elapsed();
    let Delivered {
        up,
        sub,
        up_at,
        sub_at,
    } = rig.wait_delivered(t0).await;
    let elapsed = t0.elapsed();
    // Reclaims happen once the killed process's entries have been idle long enough, so count them after
    // everything arrived. Any process may reclaim, the restarted one too (its consumer name has the pid).
    let mut reclaimed = (0, 0);
    for n in &rig.nodes {
        reclaimed.0 += metric_sum(n, |l| l.starts_with("hookgate_mapper_reclaimed_total")).await;
        reclaimed.1 += metric_sum(n, |l| l.starts_with("hookgate_relay_reclaimed_total")).await;
    }

    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    eprintln!(
        "scale_out on {}: setup {:.1} s; killed node2 at {:.1} s, ready again at {:.1} s; all answered at {:.1} s\n  \
         senders: events {} (inbound {EVENTS} + outbound {EVENTS}), requests sent {}, accepted {}, duplicate answers {}, \
         re-sent {} (after the kill {})\n  \
         upstream: requests {}, unique Idempotency-Key {}, duplicates {}\n  \
         subscriber ({} subscriptions): requests {}, unique (subscription, webhook-id) {}, duplicates {}\n  \
         elapsed {:.1} s (load start to everything delivered; upstream complete at {} s, subscriber at {} s)",
        backend.kind(),
        setup.as_secs_f64(),
        killed_at.as_secs_f64(),
        back_at.as_secs_f64(),
        sent_at.as_secs_f64(),
        2 * EVENTS,
        load(&tally.sent),
        load(&tally.accepted),
        load(&tally.duplicate),
        load(&tally.resent),
        load(&tally.resent) - resent_before,
        up.total,
        up.unique,
        up.total - up.unique,
        SUBSCRIPTIONS.len(),
        sub.total,
        sub.unique,
        sub.total - sub.unique,
        elapsed.as_secs_f64(),
        secs(up_at),
        secs(sub_at),
    );
    eprintln!(
        "  the restarted process took {taken_after_restart} events; the others reclaimed {} inbound and {} published entries of the killed one\n  re-sent because: {:?}\n  keys per redis node: {:?}",
        reclaimed.0,
        reclaimed.1,
        tally.reasons.lock().expect("reasons lock"),
        backend.keys_per_node()
    );
    eprintln!("{}", rig.log_summary());
    if up.unique != EVENTS || sub.unique != EVENTS {
        rig.print_logs();
    }
    assert_eq!(
        load(&tally.accepted) + load(&tally.duplicate),
        2 * EVENTS,
        "every event answered once"
    );
    assert!(
        taken_after_restart > 0,
        "the restarted process came back while the load was on and took events"
    );
    assert!(
        reclaimed.0 > 0,
        "the killed process held inbound events in flight; another process reclaimed them"
    );
    assert_all_arrived(&up, &sub);
}

/// Every inbound id reached the upstream once per Idempotency-Key, and every published id reached every
/// subscription once per `webhook-id` (duplicates beside them are allowed: delivery is at least once).
fn assert_all_arrived(up: &Counts, sub: &Counts) {
    assert_eq!(
        up.unique, EVENTS,
        "distinct Idempotency-Keys at the upstream"
    );
    assert_eq!(
        sub.unique, DELIVERIES,
        "distinct (subscription, webhook-id) pairs at the subscriber"
    );
    let expected_in: Vec<String> = (0..EVENTS).map(inbound_id).collect();
    let expected_out: Vec<String> = SUBSCRIPTIONS
        .iter()
        .flat_map(|path| (0..EVENTS).map(move |i| format!("{path} {}", outbound_id(i))))
        .collect();
    for (what, expected, seen) in [
        ("inbound", expected_in, &up.ids),
        ("published (subscription, id)", expected_out, &sub.ids),
    ] {
        let missing: Vec<&String> = expected
            .iter()
            .filter(|id| !seen.contains(*id))
            .take(10)
            .collect();
        assert!(missing.is_empty(), "{what} never delivered: {missing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_one_killed_lose_nothing() {
    scale_out_with_a_kill(false).await;
    scale_out_with_a_kill(true).await;
}

/// One measurement: wall times and where the CPU went while `n` workers drained the pre-loaded events.
struct Drain {
    kind: &'static str,
    n: usize,
    took: f64,
    up_at: f64,
    sub_at: f64,
    /// CPU seconds during the drain: the worker processes, Redis (all nodes), and this test process (the
    /// upstream and the subscriber servers; the api process is idle and not counted).
    cpu_workers: f64,
    cpu_redis: f64,
    cpu_test: f64,
}

/// Pre-load `EVENTS` inbound + `EVENTS` outbound events through one `--role api` process, then start `n`
/// `--role worker` processes and time until the upstream and the subscriber have everything.
async fn drain_with_workers(backend: &Backend, n: usize) -> Drain {
    let mut rig = Rig::new(backend, &backend.prefix_on_two_masters(&format!("tp{n}-"))).await;
    rig.add("api");
    rig.wait_ready().await;
    let tally = Arc::new(Tally::default());
    join(start_load(&rig.targets(1), &tally, Schedule::flat_out())).await;
    assert_eq!(tally.accepted.load(Ordering::Relaxed), 2 * EVENTS);
    assert_eq!(
        (rig.upstream_counts().total, rig.subscriber_counts().total),
        (0, 0),
        "an api process delivers nothing"
    );
    let (redis0, test0) = (backend.cpu_secs(), proc_cpu_secs("/proc/self/stat"));
    let t0 = Instant::now();
    for _ in 0..n {
        rig.add("worker");
    }
    let Delivered {
        up,
        sub,
        up_at,
        sub_at,
    } = rig.wait_delivered(t0).await;
    let took = t0.elapsed().as_secs_f64();
    let cpu_workers: f64 = rig.nodes[1..].iter().map(Node::cpu_secs).sum();
    let cpu_redis = backend.cpu_secs() - redis0;
    let cpu_test = proc_cpu_secs("/proc/self/stat") - test0;
    assert_all_arrived(&up, &sub);
    let (up_at, sub_at) = (
        up_at.expect("upstream complete"),
        sub_at.expect("subscriber complete"),
    );
    eprintln!(
        "{} | {n} worker(s): {took:.1} s (upstream {up_at:.1} s, subscriber {sub_at:.1} s), \
         upstream dup {}, subscriber dup {}",
        backend.kind(),
        up.total - up.unique,
        sub.total - sub.unique
    );
    Drain {
        kind: backend.kind(),
        n,
        took,
        up_at,
        sub_at,
        cpu_workers,
        cpu_redis,
        cpu_test,
    }
}

/// Time from starting the workers (process start included) to the last delivery, per worker count and
/// Redis kind; rates are events over that time (inbound and outbound drain side by side). The CPU columns
/// say where the two cores went: "cores busy" near 2 means the machine, not hookgate, is the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --release --test scale_out -- --ignored --nocapture"]
async fn scale_out_throughput() {
    let mut rows = Vec::new();
    for cluster in [false, true] {
        let backend = Backend::start(cluster);
        for n in 1..=3 {
            rows.push(drain_with_workers(&backend, n).await);
        }
    }
    eprintln!(
        "\n| Redis | workers | {} deliveries done (s) | deliveries/s | to the upstream /s | to the subscriptions /s | \
         CPU s: workers / Redis / test process | cores busy |",
        EVENTS + DELIVERIES
    );
    eprintln!("|---|---|---|---|---|---|---|---|");
    let rate = |n: usize, s: f64| n as f64 / s;
    for d in rows {
        eprintln!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.2} |",
            d.kind,
            d.n,
            d.took,
            rate(EVENTS + DELIVERIES, d.took),
            rate(EVENTS, d.up_at),
            rate(DELIVERIES, d.sub_at),
            d.cpu_workers,
            d.cpu_redis,
            d.cpu_test,
            (d.cpu_workers + d.cpu_redis + d.cpu_test) / d.took
        );
    }
}
