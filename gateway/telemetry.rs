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
    // Colour only on a terminal: in a pipe or `kubectl logs` the escape codes would be text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// How the trace layer logs a 5xx answer. A 500 is ours (a bug, a panic caught): ERROR. Any other 5xx
/// is WARN: a 501 is the sender's unsupported transfer coding, and a 503 means Redis or a limit, which
/// the handler that answered it has already logged with the cause. tower-http's default would put them
/// all at ERROR, paging on a sender's mistake.
pub fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    let ms = latency.as_millis();
    match class {
        Class::StatusCode(s) if s != http::StatusCode::INTERNAL_SERVER_ERROR => {
            tracing::warn!(
                status = s.as_u16(),
                latency_ms = ms,
                "answered with a server error"
            )
        }
        class => tracing::error!(classification = %class, latency_ms = ms, "response failed"),
    }
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
/// is the stored receipt time in ms; an entry without a readable one is not observed).
pub fn delivered(source: &str, received_at: Option<u64>) {
    let Some(at) = received_at else {
        return;
    };
    let now = crate::clock::now_ms();
    metrics::histogram!(DELIVERY_LATENCY, "source" => source.to_string())
        .record(now.saturating_sub(at) as f64 / 1000.0);
}

/// How many `X-Request-Id` fields the sender sent, which [`drop_sender_request_id`] took off the request:
/// the receiver still counts them against `limits.max_headers`.
#[derive(Clone, Copy, Debug)]
pub struct SenderRequestIds(pub usize);

/// Take the sender's `X-Request-Id` off a request: the id is always ours, and a sender's would otherwise
/// name our logs and stored events. How many fields there were is left in [`SenderRequestIds`] (only
/// when there were any: most requests carry none).
pub fn drop_sender_request_id<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let http::header::Entry::Occupied(e) = req.headers_mut().entry("x-request-id") {
        let sent = e.remove_entry_mult().1.count();
        req.extensions_mut().insert(SenderRequestIds(sent));
    }
    req
}

/// A mapping could not be applied to an event at delivery time (the event goes to the dead letters).
pub fn mapping_error(source: &str) {
    metrics::counter!("hookgate_mapping_errors_total", "source" => source.to_string()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::log_failure;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tower_http::classify::ServerErrorsFailureClass as Class;

    /// The lines `class` is logged as, through a real fmt subscriber.
    fn logged(class: Class) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log_failure(class, Duration::from_millis(3), &tracing::Span::none())
        });
        let bytes = out.lock().expect("log buffer").clone();
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_our_own_500_is_an_error() {
        let ours = logged(Class::StatusCode(http::StatusCode::INTERNAL_SERVER_ERROR));
        assert!(ours.contains("ERROR") && ours.contains("500"), "{ours}");
        let failed = logged(Class::Error("connection reset".into()));
        assert!(
            failed.contains("ERROR") && failed.contains("connection reset"),
            "{failed}"
        );
        for s in [501, 503] {
            let line = logged(Class::StatusCode(
                http::StatusCode::from_u16(s).expect("status"),
            ));
            assert!(
                line.contains("WARN") && !line.contains("ERROR"),
                "{s}: {line}"
            );
            assert!(line.contains(&format!("status={s}")), "{line}");
        }
    }
}
