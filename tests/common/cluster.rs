//! Launchers for multi-process tests: a three-master Redis Cluster on loopback, and `hookgate serve`
//! child processes (the real binary) with their output in a log file. Both kill what they started on Drop,
//! also when the test panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port P on 127.0.0.1 where P and P + 10000 (the cluster bus) are both free right now.
fn free_cluster_port() -> u16 {
    // Never the same port twice in one test process. A cluster's surviving nodes keep reconnecting to a
    // killed node's address; a node of another test's cluster started on that port would be drawn into
    // their gossip and the two clusters could merge.
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let p = l.local_addr().expect("local addr").port();
        if p > 55_535 || handed_out.contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            handed_out.push(p);
            return p;
        }
    }
    panic!("no port P with P + 10000 free for a cluster node");
}

/// Which server a cluster runs, and the command line that creates it.
struct Servers {
    server: &'static str,
    cli: &'static str,
}

impl Servers {
    const REDIS: Servers = Servers {
        server: "redis-server",
        cli: "redis-cli",
    };
    const VALKEY: Servers = Servers {
        server: "valkey-server",
        cli: "valkey-cli",
    };
}

/// Three `redis-server --cluster-enabled yes` masters on loopback, slots spread by
/// `redis-cli --cluster create`, each with its own temp dir.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dirs: Vec<tempfile::TempDir>,
    children: Vec<Child>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(0, 5000)
    }

    /// Three masters with one replica each, and a node timeout of 1 s, so a replica takes over from a
    /// killed master within a few seconds.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1, 1000)
    }

    /// [`RedisCluster::start_with_replicas`] with Valkey (Redis 7.2's commands, `WAITAOF` among them),
    /// each node with `extra` arguments after the defaults (`--appendonly yes`).
    pub fn start_valkey_with_replicas(extra: &[&str]) -> Self {
        Self::launch(&Servers::VALKEY, 1, 1000, extra)
    }

    fn start_with(replicas: usize, node_timeout_ms: u64) -> Self {
        Self::launch(&Servers::REDIS, replicas, node_timeout_ms, &[])
    }

    fn launch(servers: &Servers, replicas: usize, node_timeout_ms: u64, extra: &[&str]) -> Self {
        for _ in 0..3 {
            if let Some(c) = Self::try_start(servers, replicas, node_timeout_ms, extra) {
                return c;
            }
        }
        panic!("{} cluster did not start (3 tries)", servers.server);
    }

    fn try_start(
        servers: &Servers,
        replicas: usize,
        node_timeout_ms: u64,
        extra: &[&str],
    ) -> Option<Self> {
        let mut c = RedisCluster {
            ports: Vec::new(),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..3 * (1 + replicas) {
            let port = free_cluster_port();
            let dir = tempfile::tempdir().expect("cluster node tempdir");
            let child = Command::new(servers.server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
                .args(["--appendonly", "no", "--save", ""])
                .args(extra)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "{} must be installed (scripts/test installs it): {e}",
                        servers.server
                    )
                });
            c.ports.push(port);
            c.dirs.push(dir);
            c.children.push(child);
        }
        // Every node answers PING (or one exited: a port was taken meanwhile; start over).
        for (i, port) in c.ports.clone().into_iter().enumerate() {
            let pid = c.children[i].id();
            if !c.wait_ping(port, pid) {
                return None;
            }
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(servers.cli)
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} must be installed: {e}", servers.cli));
        if !out.status.success() {
            eprintln!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if c.ports.iter().all(|p| c.cluster_ok(*p)) && c.replicas_synced(replicas) {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("redis cluster never reported cluster_state:ok");
        None
    }

    /// Wait until our own redis-server (`pid`) answers on `port`: tests run in parallel, and another test's
    /// node on a port we also picked must not be taken into this cluster.
    fn wait_ping(&mut self, port: u16, pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .children
                .iter_mut()
                .any(|c| !matches!(c.try_wait(), Ok(None)))
            {
                return false;
            }
            if let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection())
            {
                if let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn) {
                    return info.contains(&format!("process_id:{pid}\r\n"));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Every master has `replicas` replicas online (their initial sync done).
    fn replicas_synced(&self, replicas: usize) -> bool {
        replicas == 0
            || self.ports.iter().all(|p| {
                redis::Client::open(format!("redis://127.0.0.1:{p}"))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut conn| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut conn)
                    })
                    .is_ok_and(|info| {
                        info.contains("role:slave") && info.contains("master_link_status:up")
                            || info.contains(&format!("connected_slaves:{replicas}"))
                    })
            })
    }

    /// SIGKILL the node on `port` (no failover handshake: its replica must notice and take over).
    pub fn kill_node(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|p| *p == port) {
            let _ = self.children[i].kill();
            let _ = self.children[i].wait();
        }
    }

    fn cluster_ok(&self, port: u16) -> bool {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .and_then(|mut conn| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn))
            .is_ok_and(|info| info.contains("cluster_state:ok"))
    }

    /// A cluster connection (follows MOVED) for looking at keys.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .and_then(|c| c.get_connection())
            .expect("connect to the test cluster")
    }

    /// The port of the master that serves `key`'s slot, as the first node that answers sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let mut conn = self
            .urls()
            .iter()
            .find_map(|u| {
                redis::Client::open(u.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                    .ok()
            })
            .expect("connect to a cluster node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        // CLUSTER SLOTS: [[start, end, [host, port, id], ...], ...]
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .filter_map(|r| {
                let redis::Value::Array(r) = r else {
                    return None;
                };
                let start: u16 = redis::from_redis_value(r.first()?.clone()).ok()?;
                let end: u16 = redis::from_redis_value(r.get(1)?.clone()).ok()?;
                let redis::Value::Array(master) = r.get(2)? else {
                    return None;
                };
                let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
                let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
                Some((start, end, (host, port)))
            })
            .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .expect("a master serves every slot")
    }

    /// The port of a replica of the master on `master_port`, as the first node that answers sees it.
    pub fn replica_of(&self, master_port: u16) -> Option<u16> {
        let mut conn = redis::Client::open(self.urls()[0].as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .expect("connect to a cluster node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut conn)
            .expect("CLUSTER NODES");
        // `<id> <ip:port@bus> <flags> <master id or -> ...`, one node a line.
        let node = |line: &str| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f.get(1)?.split(['@', ':']).nth(1)?.parse::<u16>().ok()?;
            Some((f.first()?.to_string(), port, f.get(3)?.to_string()))
        };
        let all: Vec<(String, u16, String)> = nodes.lines().filter_map(node).collect();
        let master_id = all.iter().find(|n| n.1 == master_port)?.0.clone();
        all.iter().find(|n| n.2 == master_id).map(|n| n.1)
    }

    /// Send the node on `port` a signal (`libc::SIGSTOP` freezes it, `libc::SIGCONT` lets it go on).
    pub fn signal_node(&self, port: u16, sig: i32) {
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of ours");
        let pid = self.children[i].id();
        // SAFETY: kill(2) on a child process of ours, which has not been waited for.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// `redis://127.0.0.1:P` for each node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One `hookgate serve --config FILE [--role R]` child process; stdout and stderr go to `log`.
pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub role: String,
    pub log: PathBuf,
    /// The admin listener, `127.0.0.1:P` (for /readyz).
    pub admin: String,
    child: Option<Child>,
    /// Environment for the child (the admin token, secrets).
    env: Vec<(String, String)>,
}

impl Node {
    /// Start the process (not waiting for it: see `wait_ready`).
    pub fn spawn(
        name: &str,
        config: &Path,
        role: &str,
        admin: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let mut n = Node {
            name: name.to_string(),
            config: config.to_path_buf(),
            role: role.to_string(),
            log: log.to_path_buf(),
            admin: admin.to_string(),
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        n.start();
        n
    }

    /// Start (again) with the same config, so on the same ports; the log is appended to.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--role", &self.role, "--config"])
            .arg(&self.config)
            .env("HOSTNAME", &self.name)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log)
            .spawn()
            .expect("start hookgate serve");
        self.child = Some(child);
    }

    /// Wait until `/readyz` answers 200; panics (with the log's tail) after `secs` or when the process exits.
    pub async fn wait_ready(&mut self, secs: u64) {
        if let Err(e) = self.ready_within(secs).await {
            panic!("{e}");
        }
    }

    /// [`Node::wait_ready`], with the reason (and the log's tail) as an error instead of a panic.
    pub async fn ready_within(&mut self, secs: u64) -> Result<(), String> {
        let url = format!("http://{}/readyz", self.admin);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "hookgate {} exited before it was ready ({status}):\n{}",
                        self.name,
                        self.log_tail(40)
                    ));
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "hookgate {} not ready within {secs} s:\n{}",
            self.name,
            self.log_tail(40)
        ))
    }

    /// SIGKILL: no drain, nothing flushed, pending work left to the others.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// CPU seconds (user + system) the running process has used so far; 0 when it is not running.
    pub fn cpu_secs(&self) -> f64 {
        self.child
            .as_ref()
            .map_or(0.0, |c| proc_cpu_secs(&format!("/proc/{}/stat", c.id())))
    }

    /// The last `lines` lines of the process's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file (fields 14 and 15, in clock ticks of 1/100 s,
/// the value Linux reports to user space on every common architecture).
pub fn proc_cpu_secs(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are plain.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    (ticks(11) + ticks(12)) / 100.0
}
