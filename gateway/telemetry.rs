//! Logs (text or JSON) and the Prometheus recorder.

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Install the log subscriber; `RUST_LOG` wins over the configured level.
pub fn init(cfg: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| match cfg.level.contains("redis") {
            true => EnvFilter::new(&cfg.level),
            false => EnvFilter::new(format!("{},{QUIET}", cfg.level)),
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The Redis cluster client warns on every failed reconnect to every node, several times a second while
/// a node is down; our consumer loops already say so once per back-off. Its errors still show, and a
/// `log.level` that names `redis` is taken as it is.
const QUIET: &str = "redis=error";

/// Latency buckets in seconds: from sub-millisecond receive times to slow upstreams.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// End-to-end delivery latency in seconds: from receipt to the upstream's last 2xx, retries included, so
/// the buckets reach from sub-second to a day.
const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
];

/// The end-to-end latency histogram (see `DELIVERY_BUCKETS`).
pub const DELIVERY_LATENCY: &str = "hookgate_delivery_latency_seconds";

/// The process-wide metrics recorder, installed once. Every histogram gets buckets (a default set, so
/// none is ever rendered as a summary, which cannot be aggregated across replicas).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), DELIVERY_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests embedding the app): keep ours readable anyway.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Histograms are drained only by a render; without a scraper they would grow. Upkeep bounds them.
pub fn spawn_upkeep(mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => metrics().run_upkeep(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// An event's actions all reached the upstream: observe the time since it was received (`received_at`
/// is the stored receipt time in ms; an unreadable one is not observed).
pub fn delivered(source: &str, received_at: &str) {
    let Ok(at) = received_at.parse::<u64>() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    metrics::histogram!(DELIVERY_LATENCY, "source" => source.to_string())
        .record(now.saturating_sub(at) as f64 / 1000.0);
}

/// A mapping could not be applied to an event at delivery time (the event goes to the dead letters).
pub fn mapping_error(source: &str) {
    metrics::counter!("hookgate_mapping_errors_total", "source" => source.to_string()).increment(1);
}
