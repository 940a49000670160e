//! Keeping the streams bounded: entries of `<prefix>:inbound` that every group has acknowledged are
//! trimmed once older than `deliver.inbound_retention`, and consumers of the `mappers` group that are
//! gone (idle past `deliver.remove_idle_consumers_after`, nothing pending) are removed. Every worker
//! process runs this; both steps are single atomic scripts, so running them in several replicas at once
//! is harmless.

use super::Keys;
use crate::config::Deliver;
use crate::redis_conn::Conn;
use crate::stream::{remove_idle_consumers, trim_acknowledged, MAPPERS_GROUP};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Entries trimmed per script call: bounded work per call keeps Redis responsive.
const TRIM_BATCH: usize = 10_000;
/// Calls per pass; a larger backlog is worked through over the next passes.
const TRIM_CALLS: usize = 100;

/// A pass every quarter of the period, between 1 s and 1 min: entries and consumers go at most a
/// quarter late, and a long period does not mean a rare pass.
pub fn every(period: Duration) -> Duration {
    (period / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

pub async fn run(mut conn: Conn, keys: Keys, cfg: Deliver, mut stop: watch::Receiver<bool>) {
    let (trim_every, gc_every) = (
        every(cfg.inbound_retention),
        every(cfg.remove_idle_consumers_after),
    );
    let mut next_trim = Instant::now() + trim_every;
    let mut next_gc = Instant::now() + gc_every;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(next_trim.min(next_gc)) => {}
        }
        if Instant::now() >= next_trim {
            trim(&mut conn, &keys, cfg.inbound_retention).await;
            next_trim = Instant::now() + trim_every;
        }
        if Instant::now() >= next_gc {
            for stream in [&keys.inbound, &keys.due] {
                match remove_idle_consumers(
                    &mut conn,
                    stream,
                    MAPPERS_GROUP,
                    cfg.remove_idle_consumers_after,
                )
                .await
                {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(stream = %stream, consumers = ?gone, "removed idle consumers");
                        metrics::counter!("hookgate_consumers_removed_total")
                            .increment(gone.len() as u64);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "removing idle consumers failed"),
                }
            }
            next_gc = Instant::now() + gc_every;
        }
    }
}

async fn trim(conn: &mut Conn, keys: &Keys, retention: Duration) {
    let total = trim_stream(conn, &keys.inbound, retention).await;
    if total > 0 {
        metrics::counter!("hookgate_inbound_trimmed_total").increment(total);
    }
}

/// Trim what every group of `stream` has acknowledged and what is older than `retention`, in bounded
/// calls; how many entries went. Also used for the outbound relay's `<prefix>:events`.
pub async fn trim_stream(conn: &mut Conn, stream: &str, retention: Duration) -> u64 {
    let mut total = 0;
    for _ in 0..TRIM_CALLS {
        match trim_acknowledged(conn, stream, retention, TRIM_BATCH).await {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                tracing::debug!(stream, error = %e, "trimming a stream failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(stream, trimmed = total, "trimmed acknowledged entries");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_interval() {
        assert_eq!(every(Duration::from_secs(86_400)), Duration::from_secs(60));
        assert_eq!(every(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(every(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
