//! The receive path's metrics. The hot outcomes (stored, duplicate) use handles registered once per source,
//! so a request does not build and hash label sets; rarer outcomes are recorded by name.

use metrics::{Counter, Histogram};
use std::sync::OnceLock;

const REQUESTS: &str = "hookgate_inbound_requests_total";
const DURATION: &str = "hookgate_inbound_duration_seconds";
const DUPLICATES: &str = "hookgate_inbound_duplicates_total";

/// Handles for one source, made when the source is served ([`SourceMetrics::register`]) or at its first
/// request, whichever comes first.
#[derive(Default)]
pub struct SourceMetrics(OnceLock<Hot>);

struct Hot {
    stored: Counter,
    duplicate: Counter,
    /// Redeliveries, whatever they were answered with: a source with its own answer (`response:`, or
    /// twilio's and mailgun's) answers a new event and a redelivery alike.
    redeliveries: Counter,
    duration: Histogram,
}

impl std::fmt::Debug for SourceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceMetrics")
    }
}

impl SourceMetrics {
    fn hot(&self, source: &str) -> &Hot {
        self.0.get_or_init(|| Hot {
            stored: metrics::counter!(REQUESTS, "source" => source.to_string(), "status" => "202"),
            duplicate: metrics::counter!(REQUESTS, "source" => source.to_string(), "status" => "200"),
            redeliveries: metrics::counter!(DUPLICATES, "source" => source.to_string()),
            duration: metrics::histogram!(DURATION, "source" => source.to_string()),
        })
    }

    /// Make the source's handles now, so its stored and duplicate counts and its latency histogram are
    /// scraped at zero before its first request: an alert on `rate()` or `absent()` sees the source from
    /// the start. Installs the process's recorder first, if nothing has yet.
    pub fn register(&self, source: &str) {
        let _ = crate::telemetry::metrics();
        let _ = self.hot(source);
    }

    /// Count one redelivery of `source`, not stored again (its answer is counted by [`Self::record`]).
    pub fn redelivery(&self, source: &str) {
        self.hot(source).redeliveries.increment(1);
    }

    /// Count one answered request of `source` and how long it took.
    pub fn record(&self, source: &str, status: u16, secs: f64) {
        let hot = self.hot(source);
        match status {
            202 => hot.stored.increment(1),
            200 => hot.duplicate.increment(1),
            _ => record_other(source, status),
        }
        hot.duration.record(secs);
    }
}

/// A request to no known source, or an outcome without a handle.
pub fn record_other(source: &str, status: u16) {
    metrics::counter!(REQUESTS, "source" => source.to_string(), "status" => status.to_string())
        .increment(1);
}

/// The source label of requests to no known source: one label, so a scan cannot blow up the metric's
/// cardinality.
pub const UNKNOWN: &str = "unknown";

/// A request to an unknown source, and how long it took.
pub fn record_unknown(status: u16, secs: f64) {
    record_other(UNKNOWN, status);
    metrics::histogram!(DURATION, "source" => UNKNOWN).record(secs);
}
