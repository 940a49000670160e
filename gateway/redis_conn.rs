//! Where Redis is and how we talk to it: one node, or a Redis Cluster from a list of seed nodes. The rest of
//! the gateway holds a [`Conn`] and never asks which: both are multiplexed, reconnect on their own and answer
//! the same commands. On a cluster, every key of one family (inbound, outbound) shares a hash tag
//! (`stream::keys::Families`), so the scripts, transactions and pipelines that touch several keys stay valid.

use crate::config::Config;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ClientTlsConfig, Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, Value};
use std::time::Duration;

/// A connection to Redis, shared by cloning.
#[derive(Clone)]
pub enum Conn {
    /// One node, self-reconnecting: short commands.
    Node(ConnectionManager),
    /// One node, a connection of its own: blocking reads.
    Reader(MultiplexedConnection),
    /// A cluster: follows MOVED/ASK and slot changes, reconnects to failed nodes.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a cluster connection (its transactions do not follow MOVED).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Every reply of `pipe`, run on the master that holds `key`'s slot (on one node, the node), in one
    /// go on one connection: for a command without a key (`WAIT`) that must follow a write on the same
    /// connection. A command's own error is its reply, not the call's.
    pub async fn pipeline_on_master_of(
        &mut self,
        key: &str,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>, RedisError> {
        match self {
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                c.route_pipeline(
                    pipe.clone(),
                    0,
                    pipe.len(),
                    SingleNodeRoutingInfo::SpecificNode(route),
                )
                .await
            }
            other => other.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }
}

/// Commands that only read. Sending one twice changes nothing, so one that failed on a connection Redis
/// closed (a restart, a proxy's idle cut: the manager notices only when a command fails on it) is sent
/// once more on the new connection instead of reaching the caller as a 503. Writes are not: whether the
/// first one landed is unknown, and each writer decides (`Store::bounded`, the dedup key).
const READ_ONLY: &[&[u8]] = &[
    b"EXISTS",
    b"GET",
    b"HGET",
    b"HGETALL",
    b"HLEN",
    b"LLEN",
    b"LRANGE",
    b"MGET",
    b"PING",
    b"PTTL",
    b"SCARD",
    b"SMEMBERS",
    b"TTL",
    b"XINFO",
    b"XLEN",
    b"XPENDING",
    b"XRANGE",
    b"XREVRANGE",
    b"ZCARD",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZREVRANGEBYSCORE",
    b"ZSCORE",
];

/// Whether `cmd` is one of [`READ_ONLY`] (command names are case-insensitive).
fn reads_only(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// Whether an error is the connection having been closed under the command (not a timeout: a timed-out
/// command may still run, and is not what a second try should wait on again).
pub fn dropped(e: &RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => {
                if !reads_only(cmd) {
                    return c.req_packed_command(cmd);
                }
                Box::pin(async move {
                    match c.req_packed_command(cmd).await {
                        Err(e) if dropped(&e) => c.req_packed_command(cmd).await,
                        other => other,
                    }
                })
            }
            Conn::Reader(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => {
                if !pipeline.cmd_iter().all(reads_only) {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                Box::pin(async move {
                    match c.req_packed_commands(pipeline, offset, count).await {
                        Err(e) if dropped(&e) => {
                            c.req_packed_commands(pipeline, offset, count).await
                        }
                        other => other,
                    }
                })
            }
            Conn::Reader(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Reader(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is, with the timeouts every connection gets.
#[derive(Clone)]
pub struct Redis {
    target: Target,
    response_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Clone)]
enum Target {
    Node(redis::Client),
    /// The seed nodes and the client for short commands. A blocking reader gets a client of its own: a
    /// cluster client's overall response timeout is fixed when it is built.
    Cluster(Seeds, Box<ClusterClient>),
}

/// What a cluster client is built from.
#[derive(Clone)]
struct Seeds {
    nodes: Vec<String>,
    tls: Option<TlsCertificates>,
}

impl Redis {
    /// From `redis_url`, `redis.cluster_nodes`, the `redis` timeouts and TLS files (read now, so a missing
    /// file stops the start with its name).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let r = &cfg.redis;
        Ok(Self::open(
            &cfg.redis_url,
            &r.cluster_nodes,
            r.response_timeout,
            r.connect_timeout,
            tls_certificates(
                r.tls_ca_file.as_deref(),
                r.tls_client_cert_file
                    .as_deref()
                    .zip(r.tls_client_key_file.as_deref()),
            )?,
        )?)
    }

    /// One node at `url`, or, when `cluster_nodes` is not empty, the cluster they seed (`url` unused).
    /// Nothing connects yet: the gateway starts, and reports unready, while Redis is down.
    fn open(
        url: &str,
        cluster_nodes: &[String],
        response_timeout: Duration,
        connect_timeout: Duration,
        tls: Option<TlsCertificates>,
    ) -> Result<Self, RedisError> {
        let target = match (cluster_nodes.is_empty(), &tls) {
            (true, None) => Target::Node(redis::Client::open(url)?),
            (true, Some(certs)) => Target::Node(redis::Client::build_with_tls(url, certs.clone())?),
            (false, _) => Target::Cluster(
                Seeds {
                    nodes: cluster_nodes.to_vec(),
                    tls: tls.clone(),
                },
                Box::new(cluster_client(
                    cluster_nodes,
                    tls.clone(),
                    response_timeout,
                    connect_timeout,
                )?),
            ),
        };
        Ok(Self {
            target,
            response_timeout,
            connect_timeout,
        })
    }

    /// The shared connection for short commands: multiplexed, so clones pipeline onto it.
    pub fn shared(&self) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Node(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.response_timeout))
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Node(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    cfg,
                )?))
            }
            Target::Cluster(_, client) => Ok(Conn::Cluster(
                // The config replaces the client's per-node timeouts, so it repeats them.
                client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_response_timeout(self.response_timeout),
                ),
            )),
        }
    }

    /// A connection of its own for blocking reads (XREADGROUP BLOCK): a BLOCK on the shared connection
    /// would stall every other command behind it. `read_timeout` must be longer than the block time.
    pub async fn blocking_reader(&self, read_timeout: Duration) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Node(client) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(read_timeout))
                    .set_connection_timeout(Some(self.connect_timeout));
                Ok(Conn::Reader(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Target::Cluster(seeds, _) => Ok(Conn::Cluster(
                cluster_client(
                    &seeds.nodes,
                    seeds.tls.clone(),
                    read_timeout,
                    self.connect_timeout,
                )?
                .get_async_connection()
                .await?,
            )),
        }
    }
}

/// A cluster client whose every command (retries on MOVED/ASK or a lost node included) is bounded by
/// `response_timeout`.
fn cluster_client(
    nodes: &[String],
    tls: Option<TlsCertificates>,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<ClusterClient, RedisError> {
    let mut b = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout);
    if let Some(certs) = tls {
        b = b.certs(certs);
    }
    b.build()
}

/// The CA and client certificate for `rediss://`, from PEM files; `None` when neither is set (public
/// roots, no client certificate).
fn tls_certificates(
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<Option<TlsCertificates>> {
    use anyhow::Context;
    if ca.is_none() && client.is_none() {
        return Ok(None);
    }
    let read = |key: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("redis.{key}: cannot read {}", p.display()))
    };
    Ok(Some(TlsCertificates {
        root_cert: ca.map(|p| read("tls_ca_file", p)).transpose()?,
        client_tls: match client {
            Some((cert, key)) => Some(ClientTlsConfig {
                client_cert: read("tls_client_cert_file", cert)?,
                client_key: read("tls_client_key_file", key)?,
            }),
            None => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tls_file_stops_the_start_with_its_key() {
        let cfg = Config {
            redis_url: "rediss://127.0.0.1:6380".into(),
            redis: crate::config::RedisConfig {
                tls_ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Redis::from_config(&cfg).err().expect("refused").to_string();
        assert!(
            e.contains("redis.tls_ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn no_tls_files_means_no_custom_certificates() {
        assert!(tls_certificates(None, None)
            .expect("nothing to read")
            .is_none());
    }
}
