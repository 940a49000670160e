//! Test harness: a real `redis-server` per test on a free loopback port, and the real gateway (`app::run`)
//! on loopback listeners. Nothing here mocks Redis or HTTP.
#![allow(dead_code)]

pub mod cluster;
pub mod subscriber;

use hookgate::app::{self, Listeners};
use hookgate::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The admin token every test gateway gets.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Poll `done` every 20 ms until it holds (true) or `secs` pass (false).
pub async fn poll_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A redis-server of our own. `durable` turns on the append-only file with fsync on every write, so that
/// what Redis acknowledged survives a restart.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    durable: bool,
    /// `redis-server`, or `valkey-server` for Redis 7.2's commands (`WAITAOF`).
    server: &'static str,
    /// More `redis-server` arguments (`--replicaof`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        Self::start_with_args(durable, Vec::new())
    }

    fn start_with_args(durable: bool, extra: Vec<String>) -> Self {
        Self::start_server("redis-server", durable, extra)
    }

    fn start_server(server: &'static str, durable: bool, extra: Vec<String>) -> Self {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            durable,
            server,
            extra,
            child: None,
        };
        r.restart();
        r
    }

    /// A Valkey server (`valkey-server`, from Debian's bookworm-backports): Redis 7.2's commands, among
    /// them `WAITAOF`, which the Redis 7.0 of Debian's bookworm lacks. `extra` are more arguments
    /// (`--appendonly yes`), after the defaults of [`Redis::start`].
    pub fn start_valkey(extra: &[&str]) -> Self {
        Self::start_server(
            "valkey-server",
            false,
            extra.iter().map(|a| a.to_string()).collect(),
        )
    }

    /// A replica of the Redis at `127.0.0.1:master_port`, returned once its link to the master is up
    /// and its first sync is done (within 20 s). The master should have `repl-diskless-sync-delay 0`.
    pub fn start_replica_of(master_port: u16) -> Self {
        Self::replica_of("redis-server", master_port, &[])
    }

    /// [`Redis::start_replica_of`] with `valkey-server` and more arguments.
    pub fn start_valkey_replica_of(master_port: u16, extra: &[&str]) -> Self {
        Self::replica_of("valkey-server", master_port, extra)
    }

    fn replica_of(server: &'static str, master_port: u16, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let r = Self::start_server(server, false, args);
        info_until(r.port, "replication", "the replica did not sync", |info| {
            info.contains("master_link_status:up") && !info.contains("master_sync_in_progress:1")
        });
        r
    }

    /// Send the process a signal (`libc::SIGSTOP` to freeze it, `libc::SIGCONT` to let it go on).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on a child process of ours, which has not been waited for.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and directory. If another process took the port meanwhile, redis-server
    /// exits at once; then a new port is picked, so a test never talks to somebody else's Redis.
    pub fn restart(&mut self) {
        for _ in 0..5 {
            if self.spawn_and_wait() {
                return;
            }
            self.port = free_port();
        }
        panic!("{} did not start", self.server);
    }

    fn spawn_and_wait(&mut self) -> bool {
        let aof = if self.durable { "yes" } else { "no" };
        let child = Command::new(self.server)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", aof, "--appendfsync", "always"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} must be installed (scripts/test installs it): {e}",
                    self.server
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if !matches!(c.try_wait(), Ok(None)) {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = c.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `CONFIG SET key value`.
    pub fn config_set(&self, key: &str, value: impl redis::ToRedisArgs) {
        config_set_at(self.port, key, value);
    }

    /// Stop abruptly (SIGKILL): no chance to flush anything that was not already written.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    /// The gateway's own connection to this Redis, for calling its stream and gauge functions.
    pub fn gateway_conn(&self) -> hookgate::redis_conn::Conn {
        let cfg = Config {
            redis_url: self.url(),
            ..Default::default()
        };
        hookgate::redis_conn::Redis::from_config(&cfg)
            .and_then(|r| Ok(r.shared()?))
            .expect("gateway connection")
    }

    /// A stream `key` of `n` entries with a group `group` from its start, of which `consumer` has read
    /// the first `read`; the entries' ids.
    pub fn stream_partly_read(
        &self,
        key: &str,
        n: usize,
        group: &str,
        consumer: &str,
        read: usize,
    ) -> Vec<String> {
        let mut r = self.conn();
        let ids = (0..n)
            .map(|i| {
                redis::cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("n")
                    .arg(i)
                    .query(&mut r)
                    .expect("XADD")
            })
            .collect();
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(group)
            .arg("0")
            .query::<()>(&mut r)
            .expect("XGROUP");
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(read)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query::<redis::Value>(&mut r)
            .expect("XREADGROUP");
        ids
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis a test gateway can be pointed at: one node or a cluster.
pub trait RedisTarget {
    fn point(&self, cfg: &mut Config);
}

impl RedisTarget for Redis {
    fn point(&self, cfg: &mut Config) {
        cfg.redis_url = self.url();
    }
}

impl RedisTarget for cluster::RedisCluster {
    fn point(&self, cfg: &mut Config) {
        cfg.redis.cluster_nodes = self.urls();
    }
}

/// A running gateway with its own mappings directory.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub mappings: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// Start with these `(file name, yaml)` mapping files and config `yaml` (listeners, Redis and
    /// mappings_dir are filled in).
    pub async fn start(redis: &impl RedisTarget, files: &[(&str, &str)], yaml: &str) -> Self {
        Self::start_on(redis, files, yaml, "127.0.0.1:0").await
    }

    pub async fn start_on(
        redis: &impl RedisTarget,
        files: &[(&str, &str)],
        yaml: &str,
        bind: &str,
    ) -> Self {
        let mappings = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(mappings.path().join(name), text).expect("write mapping");
        }
        let inbound = TcpListener::bind(bind).await.expect("bind inbound");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (inbound.local_addr().unwrap(), admin.local_addr().unwrap());
        let mut cfg = Config::from_sources("test.yaml", yaml, &[]).expect("test config parses");
        redis.point(&mut cfg);
        cfg.mappings_dir = mappings.path().to_path_buf();
        cfg.listen = addr.to_string();
        cfg.admin_listen = admin_addr.to_string();
        cfg.shutdown_grace = Duration::from_secs(2);
        if !yaml.contains("shutdown_delay") {
            cfg.shutdown_delay = Duration::ZERO;
        }
        // Tests that configure no upstream are about receiving: no mapper workers delivering to the
        // default upstream (which does not exist here) to add load and timing noise.
        if !yaml.contains("upstream:") && !yaml.contains("outbound:") {
            cfg.role = hookgate::config::Role::Api;
        }
        if cfg.admin_token.is_none() && !yaml.contains("# no admin token") {
            let f = mappings.path().join(".admin-token");
            std::fs::write(&f, ADMIN_TOKEN).expect("write admin token");
            cfg.admin_token = Some(
                hookgate::secret::Secret::resolve(&format!("${{file:{}}}", f.display()))
                    .expect("admin token"),
            );
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app::run(cfg, Listeners { inbound, admin }, async move {
            let _ = rx.await;
        }));
        let gw = Gateway {
            addr,
            admin: admin_addr,
            mappings,
            stop: Some(tx),
            task: Some(task),
        };
        gw.wait_healthy().await;
        gw
    }

    async fn wait_healthy(&self) {
        let url = format!("http://{}/healthz", self.admin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway not healthy within 10 s");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("GET /metrics");
        r.text().await.expect("metrics body")
    }

    pub fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.addr)
    }

    pub fn mappings_dir(&self) -> &Path {
        self.mappings.path()
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(512)
        .build()
        .expect("http client")
}

/// Every entry of the inbound stream as (id, fields), with the members of its receipt (`meta`, a JSON
/// object) beside it as fields of their own, as text: the headers object as its JSON, a number as its
/// digits. Parsed here with serde_json, not with the gateway's reader.
pub fn inbound_entries(
    redis: &Redis,
    prefix: &str,
) -> Vec<(String, std::collections::HashMap<String, Vec<u8>>)> {
    inbound_range(redis, prefix)
        .ids
        .into_iter()
        .map(|e| {
            let mut fields: std::collections::HashMap<String, Vec<u8>> = e
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<Vec<u8>>(v).unwrap_or_default()))
                .collect();
            if let Some(meta) = fields.get("meta") {
                let meta: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(meta).expect("meta is a JSON object");
                for (k, v) in meta {
                    let text = match v {
                        serde_json::Value::String(s) => s.into_bytes(),
                        other => other.to_string().into_bytes(),
                    };
                    fields.insert(k, text);
                }
            }
            (e.id, fields)
        })
        .collect()
}

/// The sender's event id of every entry of `hookgate:inbound`, in stream order.
pub fn stored_event_ids(redis: &Redis) -> Vec<String> {
    inbound_entries(redis, "hookgate")
        .into_iter()
        .map(|(_, f)| String::from_utf8_lossy(&f["event_id"]).into_owned())
        .collect()
}

/// Every entry of the inbound stream, as Redis answers XRANGE.
fn inbound_range(redis: &Redis, prefix: &str) -> redis::streams::StreamRangeReply {
    let mut c = redis.conn();
    redis::cmd("XRANGE")
        .arg(format!("{prefix}:inbound"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("XRANGE")
}

/// The sorted field names of each entry of the inbound stream, as stored (no `meta` unpacked).
pub fn inbound_field_names(redis: &Redis, prefix: &str) -> Vec<Vec<String>> {
    inbound_range(redis, prefix)
        .ids
        .into_iter()
        .map(|e| {
            let mut names: Vec<String> = e.map.into_keys().collect();
            names.sort_unstable();
            names
        })
        .collect()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Stripe-Signature header computed as Stripe documents it (HMAC-SHA256 over `t.body`, key = the whole
/// `whsec_` string). Used where a test is about storage, not about signatures; signature correctness is
/// tested against Stripe's own library in `tests/verify_presets.rs`.
pub fn stripe_header(secret: &str, body: &[u8], t: u64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stripe source whose secret is read from a file next to the test's mappings.
pub fn stripe_source(secret_file: &Path) -> String {
    format!(
        "source: stripe\nverify: {{ preset: stripe, secret: \"${{file:{}}}\" }}\ndedup: {{ id: $.id, ttl: 1h }}\n",
        secret_file.display()
    )
}

const PEERS_MISSING: &str = "peer libraries missing: run scripts/setup-peers";

/// Sign requests with the providers' own libraries through `tests/peers/sign.py` (see that file for the
/// request shape); fails, never skips, when the peers are not installed.
pub fn peer_sign(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    python_peer("tests/peers/sign.py", requests)
}

/// ISO 4217's decimal places by currency code, from SIX's own list (PyPI `iso4217`, through
/// `tests/peers/iso4217_exponents.py`): `null` for a currency without a minor unit. Also the list's date.
pub fn peer_iso4217_exponents() -> (String, serde_json::Map<String, serde_json::Value>) {
    let mut out = python_peer(
        "tests/peers/iso4217_exponents.py",
        &serde_json::json!([{ "op": "table" }]),
    );
    let mut table = out.remove(0);
    let published = table["published"].as_str().unwrap_or_default().to_owned();
    match table["exponents"].take() {
        serde_json::Value::Object(exponents) => (published, exponents),
        other => panic!("the peer's table is not an object: {other}"),
    }
}

/// A `tests/peers` script's results, one per request, run in the peers' venv.
fn python_peer(script: &str, requests: &serde_json::Value) -> Vec<serde_json::Value> {
    let python = repo_root().join(".peers/venv/bin/python");
    assert!(python.exists(), "{PEERS_MISSING}");
    let mut c = Command::new(python);
    c.arg(repo_root().join(script));
    run_peer(c, requests)
}

/// SendGrid's own verdicts on signed Event Webhook requests, from its library (PyPI `sendgrid`'s
/// `EventWebhook.verify_signature`, through `tests/peers/verify_sendgrid.py`): requests
/// `{"public_key", "body", "signature", "timestamp"}`, one boolean each.
pub fn peer_verify_sendgrid(requests: &serde_json::Value) -> Vec<bool> {
    python_verdicts("tests/peers/verify_sendgrid.py", requests)
}

/// Paddle's own verdicts on signed webhook requests, from its SDK (PyPI `paddle-python-sdk`'s
/// `PaddleSignature.verify`, through `tests/peers/verify_paddle.py`): requests `{"secrets", "body",
/// "header"}`, one boolean each.
pub fn peer_verify_paddle(requests: &serde_json::Value) -> Vec<bool> {
    python_verdicts("tests/peers/verify_paddle.py", requests)
}

/// Square's own verdicts on signed webhook requests, from its SDK (PyPI `squareup`'s
/// `square.utils.webhooks_helper.verify_signature`, through `tests/peers/verify_square.py`): requests
/// `{"key", "url", "body", "header"}`, one boolean each.
pub fn peer_verify_square(requests: &serde_json::Value) -> Vec<bool> {
    python_verdicts("tests/peers/verify_square.py", requests)
}

/// A provider library's verdicts, one boolean per request, from a `tests/peers` script run in the
/// peers' venv.
fn python_verdicts(script: &str, requests: &serde_json::Value) -> Vec<bool> {
    verdicts(python_peer(script, requests))
}

/// Zoom's own handling of signed requests, from its library (npm `@zoom/rivet`'s `AwsLambdaReceiver`,
/// through `tests/peers/zoom_rivet.mjs`): requests `{"secret", "body", "headers"}`; results `{"status",
/// "body"}` (200 and the event, or the URL validation's answer; 400 and the library's error).
pub fn peer_zoom_rivet(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    node_peer("@zoom/rivet", "zoom_rivet.mjs", requests)
}

/// Webflow's own verdicts on signed webhook requests, from its SDK (npm `webflow-api`'s
/// `webhooks.verifySignature`, through `tests/peers/verify_webflow.mjs`): requests `{"secret", "body",
/// "headers"}`, one boolean each.
pub fn peer_verify_webflow(requests: &serde_json::Value) -> Vec<bool> {
    verdicts(node_peer("webflow-api", "verify_webflow.mjs", requests))
}

/// Customer.io's own verdicts on signed reporting webhooks, from its library (npm `customerio-node`'s
/// `verifyRequestSignature`, through `tests/peers/verify_customerio.mjs`): requests `{"secret",
/// "timestamp", "signature", "body"}`, one boolean each.
pub fn peer_verify_customerio(requests: &serde_json::Value) -> Vec<bool> {
    verdicts(node_peer(
        "customerio-node",
        "verify_customerio.mjs",
        requests,
    ))
}

/// Sign bodies with GitHub's own helper, npm `@octokit/webhooks-methods`, through
/// `tests/peers/sign_github.mjs` (requests: `{"secret", "body"}`; results: `{"headers"}`).
pub fn peer_sign_github(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    node_peer("@octokit/webhooks-methods", "sign_github.mjs", requests)
}

/// Run `tests/peers/<script>`, an ES module that imports `package`, with Node. ES modules resolve bare
/// imports next to the importing file, so the source runs from `.peers/node`, where the peers are.
fn node_peer(package: &str, script: &str, requests: &serde_json::Value) -> Vec<serde_json::Value> {
    let node_dir = repo_root().join(".peers/node");
    assert!(
        node_dir.join("node_modules").join(package).exists(),
        "{PEERS_MISSING}"
    );
    let source = std::fs::read_to_string(repo_root().join("tests/peers").join(script))
        .unwrap_or_else(|e| panic!("read tests/peers/{script}: {e}"));
    let mut c = Command::new("node");
    c.args(["--input-type=module", "-e", &source])
        .current_dir(node_dir);
    run_peer(c, requests)
}

/// Amazon SNS messages signed as AWS documents it, by `tests/peers/sign_sns.py` (PyPI `cryptography`):
/// requests `{"op": "keygen"}` (results `{"key_pem", "cert_pem"}`) or `{"op": "sign", "key_pem",
/// "message", "version"}` (results: the message, signed).
pub fn peer_sign_sns(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    python_peer("tests/peers/sign_sns.py", requests)
}

/// AWS's own verdicts on SNS messages, from its validator (npm `sns-validator`, through
/// `tests/peers/verify_sns.mjs`): requests `{"key_pem", "cert_pem", "message"}`, one boolean each.
pub fn peer_verify_sns(requests: &serde_json::Value) -> Vec<bool> {
    verdicts(node_peer("sns-validator", "verify_sns.mjs", requests))
}

/// A verdict peer's results: one boolean per request.
fn verdicts(results: Vec<serde_json::Value>) -> Vec<bool> {
    results
        .iter()
        .map(|v| v.as_bool().expect("a verdict is a boolean"))
        .collect()
}

/// WooCommerce deliveries built and signed by PHP as WooCommerce builds them (`json_encode` of the
/// resource, PHP's own `hash_hmac`), through `tests/peers/sign_woocommerce.php`: requests `{"secret",
/// "payload", "topic", "webhook_id", "delivery_id"}`; results `{"body", "headers"}`. PHP is installed by
/// `scripts/test`.
pub fn peer_sign_woocommerce(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut c = Command::new("php");
    c.arg(repo_root().join("tests/peers/sign_woocommerce.php"));
    run_peer(c, requests)
}

/// Sign Mailchimp Transactional (Mandrill) requests with the `generateSignature` Mandrill publishes, over
/// what PHP's `parse_str` makes of the body, through `tests/peers/sign_mandrill.php`: requests
/// `{"secret", "url", "body"}`; results `{"headers"}`.
pub fn peer_sign_mandrill(requests: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut c = Command::new("php");
    c.arg(repo_root().join("tests/peers/sign_mandrill.php"));
    run_peer(c, requests)
}

/// Run a peer signer: the requests as a JSON array on stdin, one JSON result per request on stdout.
fn run_peer(mut command: Command, requests: &serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PEERS_MISSING} ({e})"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(requests.to_string().as_bytes())
        .expect("write to the peer");
    let out = child.wait_with_output().expect("peer output");
    assert!(
        out.status.success(),
        "peer failed ({PEERS_MISSING}?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("the peer prints JSON");
    assert_eq!(
        results.len(),
        requests.as_array().map_or(0, Vec::len),
        "one result per request"
    );
    results
}

/// Write `secret` to a file in `dir` and return the `${file:...}` reference to it.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).expect("write secret");
    format!("${{file:{}}}", p.display())
}

/// A shipped mapping file (`mappings/<file>`) with its `${env:<var>}` reference replaced by `secret`
/// (a `${file:}` reference, from [`secret_file`]).
pub fn shipped_mapping(file: &str, var: &str, secret: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("mappings").join(file))
        .unwrap_or_else(|e| panic!("read the shipped mappings/{file}: {e}"));
    let reference = format!("${{env:{var}}}");
    assert!(
        text.contains(&reference),
        "mappings/{file} references {reference}"
    );
    text.replace(&reference, secret)
}

/// A file of `mappings/testdata`, as text.
pub fn testdata(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("mappings/testdata").join(name))
        .unwrap_or_else(|e| panic!("read mappings/testdata/{name}: {e}"))
}

/// The shipped `mappings/activecampaign.yaml`, its token read from a file in `dir` holding `token`.
pub fn activecampaign_mapping(dir: &Path, token: &str) -> String {
    let secret = secret_file(dir, "ac", token);
    shipped_mapping(
        "activecampaign.yaml",
        "ACTIVECAMPAIGN_WEBHOOK_TOKEN",
        &secret,
    )
}

/// One request the recording upstream received, and the status it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lowercase names.
    pub headers: std::collections::HashMap<String, String>,
    pub body: serde_json::Value,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct UpstreamState {
    requests: std::sync::Mutex<Vec<Recorded>>,
    /// Answers for the next requests, in order; then `status_default`.
    plan: std::sync::Mutex<std::collections::VecDeque<(u16, String)>>,
    status_default: std::sync::atomic::AtomicU16,
    /// Milliseconds every answer waits (a slow upstream).
    delay_ms: std::sync::atomic::AtomicU64,
    /// Answers for requests from this source (`X-Hookgate-Source`) wait this long.
    slow_source: std::sync::Mutex<Option<(String, Duration)>>,
    /// Headers sent with every answer that is not a 2xx (`Retry-After`, `Location`).
    refusal_headers: std::sync::Mutex<Vec<(String, String)>>,
}

/// A real HTTP server standing in for the contacts API: records every request, answers as told.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    state: std::sync::Arc<UpstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On a given port (reserve one with `free_port` to start the upstream later than the gateway).
    pub async fn start_on(port: u16) -> Self {
        use axum::extract::{Request, State};
        let state = std::sync::Arc::new(UpstreamState::default());
        state
            .status_default
            .store(201, std::sync::atomic::Ordering::Relaxed);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let handler = |State(st): State<std::sync::Arc<UpstreamState>>, req: Request| async move {
            let (parts, body) = req.into_parts();
            let delay = st.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let slow = st.slow_source.lock().unwrap().clone();
            if let Some((name, d)) = slow {
                if parts
                    .headers
                    .get("x-hookgate-source")
                    .is_some_and(|v| v == name.as_str())
                {
                    tokio::time::sleep(d).await;
                }
            }
            let bytes = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let (status, answer) = st.plan.lock().unwrap().pop_front().unwrap_or_else(|| {
                (
                    st.status_default.load(std::sync::atomic::Ordering::Relaxed),
                    "{}".into(),
                )
            });
            // Taken with the answer, before the request is recorded: a test that changes them once it
            // sees a request changes the next answer, never this one.
            let refusal_headers = st.refusal_headers.lock().unwrap().clone();
            st.requests.lock().unwrap().push(Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                status,
                at: Instant::now(),
            });
            let mut resp = axum::response::Response::new(axum::body::Body::from(answer));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            resp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            if !(200..300).contains(&status) {
                for (name, value) in &refusal_headers {
                    resp.headers_mut().insert(
                        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        http::HeaderValue::from_str(value).unwrap(),
                    );
                }
            }
            resp
        };
        let app = axum::Router::new()
            .fallback(handler)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next requests with these statuses and bodies, in order.
    pub fn plan(&self, answers: &[(u16, &str)]) {
        self.state
            .plan
            .lock()
            .unwrap()
            .extend(answers.iter().map(|(s, b)| (*s, b.to_string())));
    }

    /// The status answered once the plan is used up.
    pub fn set_status(&self, status: u16) {
        self.state
            .status_default
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// Send this `Retry-After` with every answer that is not a 2xx (`None`: none).
    pub fn set_retry_after(&self, v: Option<&str>) {
        self.set_refusal_header("retry-after", v);
    }

    /// Send this header with every answer that is not a 2xx (`None`: not any more).
    pub fn set_refusal_header(&self, name: &str, v: Option<&str>) {
        let mut headers = self.state.refusal_headers.lock().unwrap();
        headers.retain(|(n, _)| n != name);
        if let Some(v) = v {
            headers.push((name.to_string(), v.to_string()));
        }
    }

    /// Make every answer wait this long.
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Make answers to one source's requests wait this long.
    pub fn set_slow_source(&self, source: &str, d: Duration) {
        *self.state.slow_source.lock().unwrap() = Some((source.to_string(), d));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Look at the requests so far without copying them (for counting thousands often).
    pub fn with_requests<R>(&self, f: impl FnOnce(&[Recorded]) -> R) -> R {
        f(&self.state.requests.lock().unwrap())
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.status < 300)
            .collect()
    }

    /// Wait until `n` requests were answered 2xx; false after `secs`.
    pub async fn wait_delivered(&self, n: usize, secs: u64) -> bool {
        poll_until(secs, || self.delivered().len() >= n).await
    }

    /// Stop answering (the port refuses connections again).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET` an admin path with the token, as JSON.
/// POST a JSON body to `/webhooks/{source}` with no signature headers: the status and the answer's JSON
/// (null when it has none).
pub async fn post_json(
    gw: &Gateway,
    source: &str,
    body: impl Into<String>,
) -> (u16, serde_json::Value) {
    let r = client()
        .post(gw.url(source))
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .expect("POST /webhooks/{source}");
    status_and_json(r).await
}

/// A response's status and JSON body (null when it has none).
pub async fn status_and_json(r: reqwest::Response) -> (u16, serde_json::Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST `body` to `url` with the headers a peer signed (its result's `headers`: `{"name": "value"}`,
/// `{}` or null for none), as JSON unless they name their own `Content-Type`. The request is built at
/// once, so the future borrows nothing (a closure can return it).
pub fn post_signed(
    url: &str,
    headers: &serde_json::Value,
    body: &str,
) -> impl std::future::Future<Output = reqwest::Response> {
    let mut req = client().post(url);
    let mut typed = false;
    for (name, value) in headers.as_object().into_iter().flatten() {
        typed |= name.eq_ignore_ascii_case("content-type");
        req = req.header(
            name.as_str(),
            value.as_str().expect("a header value is text"),
        );
    }
    if !typed {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.to_owned());
    async move { req.send().await.expect("POST a signed request") }
}

/// An admin API call with the test token: status and body (JSON, or the text as a JSON string).
pub async fn admin_call(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let m = http::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut r = client()
        .request(m, gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("admin request");
    let s = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        s,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub async fn admin_get(gw: &Gateway, path: &str) -> serde_json::Value {
    client()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin GET")
        .json()
        .await
        .expect("admin JSON")
}

/// `POST` an admin path with the token; (status, JSON).
pub async fn admin_post(gw: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let r = client()
        .post(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin POST");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST over a raw socket and return the status code: the body is written as far as the server reads it
/// (a server that answers early, e.g. 413, may close before the rest is sent; that is not an error here).
pub async fn raw_post_status(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> u16 {
    raw_post(addr, path, headers, body).await.0
}

/// Like `raw_post_status`, with the response body.
pub async fn raw_post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut rest = format!("{headers}\r\n").into_bytes();
    rest.extend_from_slice(body);
    raw_post_bytes(addr, path, &rest).await
}

/// A POST whose header fields (after Host and Connection), blank line and body are given as bytes: for
/// header values no HTTP client would send.
pub async fn raw_post_bytes(addr: SocketAddr, path: &str, rest: &[u8]) -> (u16, String) {
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let (status, body, _) = raw_exchange(addr, &head, rest).await;
    (status, body)
}

/// An HTTP/1.0 POST, as WooCommerce sends (`'httpversion' => '1.0'`): `headers` after Host, then the
/// body with its Content-Length. The gateway must close the connection after its answer (HTTP/1.0
/// without keep-alive), or this fails after 10 s without one.
pub async fn raw_post_http10(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    let mut head = format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let rest = format!("Content-Length: {}\r\n\r\n{body}", body.len());
    let (status, answer, closed) = raw_exchange(addr, &head, rest.as_bytes()).await;
    assert!(
        closed,
        "HTTP/1.0: the connection is closed after the answer"
    );
    (status, answer)
}

/// Write `head` and `rest` on a new connection, read until the gateway closes it (at most 10 s), and
/// return the answer's status and body, and whether the gateway closed the connection.
async fn raw_exchange(addr: SocketAddr, head: &str, rest: &[u8]) -> (u16, String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(rest).await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .is_ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body, closed)
}

/// Read `INFO section` of the server at `127.0.0.1:port` until `done` holds of it (within 20 s, else
/// panic with `what` and the last reading).
pub fn info_until(port: u16, section: &str, what: &str, done: impl Fn(&str) -> bool) {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("INFO {section}: {e}"));
        if done(&info) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `CONFIG SET key value` on the server at `127.0.0.1:port` (a cluster node, a [`Redis`]).
pub fn config_set_at(port: u16, key: &str, value: impl redis::ToRedisArgs) {
    let _: () = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .and_then(|mut conn| {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(key)
                .arg(value)
                .query(&mut conn)
        })
        .unwrap_or_else(|e| panic!("CONFIG SET {key} on {port}: {e}"));
}

/// POST `body` to `source` until it is answered otherwise than 503, for at most `secs`: what a sender
/// does after a 503.
pub async fn post_until_taken(
    gw: &Gateway,
    source: &str,
    body: &str,
    secs: u64,
) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, v) = post_json(gw, source, body.to_owned()).await;
        if s != 503 || Instant::now() > deadline {
            return (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signup event for the `shop` sources of the tests, with id `evt_<i>`.
pub fn shop_event(i: &str) -> String {
    format!(r#"{{"id":"evt_{i}","email":"{i}@example.org"}}"#)
}

/// The sum of the series of `metric` whose labels include each of `labels` (0 when none) in the
/// Prometheus text `text`. The recorder is the test process's, shared by the tests running at once: pick
/// labels only one test makes, or compare before and after within one test.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait (up to 10 s) until a replica of the master on `master_port` has acknowledged a write of ours to
/// `key`, and with it every earlier write on that master (replication keeps order). `WAIT` counts the
/// replicas that acknowledged the calling connection's own last write: without a write first it returns
/// at once, even while a replica that has just finished its first sync has been sent nothing since (the
/// master streams to it only after its first ACK, up to a second later; README, "Failover").
pub fn replica_caught_up(master_port: u16, key: &str) {
    let mut master = redis::Client::open(format!("redis://127.0.0.1:{master_port}"))
        .and_then(|c| c.get_connection())
        .expect("connect to the master");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(1)
        .query(&mut master)
        .expect("a write on the master");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut master)
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica acknowledged");
}
