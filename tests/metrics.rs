//! `/metrics` as Prometheus scrapes it: every name is `hookgate_`-prefixed, histograms have buckets (no
//! summaries), and the gauges sampled from Redis (stream length, pending entries, dead letters) follow
//! what is really in Redis. One test in its own binary: the recorder is process-wide, and another
//! gateway's sampler would set the same gauges from its own Redis.

mod common;
use common::*;
use std::time::Duration;

/// An open source whose mapping needs `$.customer.email`: a flat body is a mapping error.
const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    create_contact:\n      email: $.customer.email\n";

/// A source whose one rule matches only signups: anything else is acknowledged with no action.
const QUIET: &str = "source: quiet\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    when: { path: $.type, equals: signup }\n    create_contact:\n      email: $.email\n";

/// The value of the series `name{labels}` exactly as rendered (labels in the exporter's order).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for(gw: &Gateway, series: &str, want: f64) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = gw.metrics().await;
        if value(&text, series) == Some(want) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never became {want}:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_cover_the_pipeline_with_hookgate_names_and_buckets() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", SHOP), ("quiet.yaml", QUIET)],
        &format!(
            "upstream: {{ url: \"{}\" }}\nmappings_poll: 1h\nmetrics_sample_interval: 100ms\ndeliver: {{ timeout: 5s, retry_base: 50ms, retry_max: 200ms }}\negress: {{ allow: [127.0.0.0/8], allow_http: true }}\n",
            up.url()
        ),
    )
    .await;
    let gw_ref = &gw;
    let post = move |body: &'static str| async move { post_json(gw_ref, "shop", body).await.0 };

    // Before any request, every served source's counts are there at zero, and its latency histogram.
    let before = gw.metrics().await;
    for source in ["shop", "quiet"] {
        for status in ["202", "200"] {
            let series = format!(
                r#"hookgate_inbound_requests_total{{source="{source}",status="{status}"}}"#
            );
            assert_eq!(value(&before, &series), Some(0.0), "{series}:\n{before}");
        }
        let count = format!(r#"hookgate_inbound_duration_seconds_count{{source="{source}"}}"#);
        assert_eq!(value(&before, &count), Some(0.0), "{count}:\n{before}");
        let redeliveries = format!(r#"hookgate_inbound_duplicates_total{{source="{source}"}}"#);
        assert_eq!(
            value(&before, &redeliveries),
            Some(0.0),
            "{redeliveries}:\n{before}"
        );
    }

    // A delivery held by a slow upstream is pending in the group, and the gauge says so.
    up.set_delay(Duration::from_millis(1500));
    assert_eq!(post(r#"{"customer":{"email":"a@example.org"}}"#).await, 202);
    wait_for(
        &gw,
        r#"hookgate_stream_pending{stream="inbound",group="mappers"}"#,
        1.0,
    )
    .await;
    assert!(up.wait_delivered(1, 10).await);
    up.set_delay(Duration::ZERO);
    // A mapping error goes to the dead letters.
    assert_eq!(post(r#"{"email":"flat@example.org"}"#).await, 202);
    wait_for(&gw, r#"hookgate_dead_letters_stored{kind="inbound"}"#, 1.0).await;
    wait_for(
        &gw,
        r#"hookgate_stream_pending{stream="inbound",group="mappers"}"#,
        0.0,
    )
    .await;
    let (status, _) = admin_post(&gw, "/v1/mappings/reload").await;
    assert_eq!(status, 200);
    let text = wait_for(&gw, r#"hookgate_stream_length{stream="inbound"}"#, 2.0).await;

    for series in [
        r#"hookgate_inbound_requests_total{source="shop",status="202"}"#,
        r#"hookgate_actions_total{action="create_contact",outcome="delivered"}"#,
        r#"hookgate_mapping_errors_total{source="shop"}"#,
        r#"hookgate_dead_letters_total{source="shop",reason="mapping_error"}"#,
        r#"hookgate_mapping_reloads_total{outcome="applied"}"#,
        r#"hookgate_stream_lag{stream="inbound",group="mappers"}"#,
        r#"hookgate_stream_length{stream="retry:inbound:due"}"#,
        r#"hookgate_retries_scheduled{kind="inbound"}"#,
        r#"hookgate_stream_length{stream="events"}"#,
        r#"hookgate_dead_letters_stored{kind="outbound"}"#,
        r#"hookgate_delivery_latency_seconds_count{source="shop"}"#,
        "hookgate_sources_loaded",
    ] {
        assert!(value(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert_eq!(
        value(
            &text,
            r#"hookgate_inbound_requests_total{source="shop",status="202"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"hookgate_mapping_errors_total{source="shop"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hookgate_stream_lag{stream="inbound",group="mappers"}"#
        ),
        Some(0.0)
    );
    // The end-to-end latency covers the 1.5 s the upstream took: its buckets reach a day, and it is above 1 s.
    assert_eq!(
        value(
            &text,
            r#"hookgate_delivery_latency_seconds_count{source="shop"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hookgate_delivery_latency_seconds_bucket{source="shop",le="1"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hookgate_delivery_latency_seconds_bucket{source="shop",le="86400"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("hookgate_inbound_duration_seconds_bucket{")),
        "the receive histogram has buckets:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("hookgate_upstream_request_duration_seconds_bucket{")),
        "{text}"
    );
    // Histograms only: a summary (quantile lines) cannot be aggregated across replicas.
    assert!(!text.contains("quantile="), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.starts_with("hookgate_"), "unprefixed metric: {line}");
    }
    let head = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(head.status().as_u16(), 200, "no token needed");
    assert!(head
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));

    // A broken edit is rejected once per change. Each reload reads every file, and the watcher must not
    // take those reads for changes: it did, and a rejected set was reloaded (and logged) three times a
    // second, forever. Polling is off here, so only directory events reload.
    let rejected = r#"hookgate_mapping_reloads_total{outcome="rejected"}"#;
    std::fs::write(gw.mappings_dir().join("broken.yaml"), "source: [\n").expect("write");
    let mut after_edit = None;
    for _ in 0..100 {
        after_edit = value(&gw.metrics().await, rejected);
        if after_edit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_edit = after_edit.expect("the broken edit is seen");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        value(&gw.metrics().await, rejected),
        Some(after_edit),
        "no reload without a change"
    );

    // Redis reports no lag while a deletion lies past a group's position (a redelivery's entry taken
    // back); the gauge then reads entries added less entries read instead of keeping a stale value.
    let key = "probe:lag";
    let ids = redis.stream_partly_read(key, 8, "g", "c", 2);
    let mut r = redis.conn();
    let _: i64 = redis::cmd("XDEL")
        .arg(key)
        .arg(&ids[4])
        .query(&mut r)
        .expect("XDEL");
    let info: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query(&mut r)
        .expect("XINFO");
    assert_eq!(
        hookgate::gauges::parse_groups(&info)[0].lag,
        None,
        "Redis cannot tell this lag"
    );
    let watches = [hookgate::gauges::Watch::Stream {
        label: "probe".into(),
        key: key.into(),
    }];
    let mut conn = redis.gateway_conn();
    hookgate::gauges::sample(&mut conn, &watches)
        .await
        .expect("sample");
    let text = gw.metrics().await;
    // 8 added, 2 read: entries 2..=7 are unread, and the deleted entry 4 is counted too (an upper
    // bound by the entries taken back ahead), not a stale value.
    assert_eq!(
        value(&text, r#"hookgate_stream_lag{stream="probe",group="g"}"#),
        Some(6.0),
        "{text}"
    );

    // An event that makes no action is handled, but it was delivered nowhere: it is not an end-to-end
    // latency.
    assert_eq!(
        post_json(&gw, "quiet", r#"{"type":"other","email":"q@example.org"}"#)
            .await
            .0,
        202
    );
    wait_for(
        &gw,
        r#"hookgate_mapper_events_total{source="quiet",outcome="delivered"}"#,
        1.0,
    )
    .await;
    // That counter moves before the outcome is written, and the latency would be observed after it: wait
    // until the entry is acknowledged (sampled from Redis), and a little more.
    wait_for(
        &gw,
        r#"hookgate_stream_pending{stream="inbound",group="mappers"}"#,
        0.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = gw.metrics().await;
    assert_eq!(
        value(
            &text,
            r#"hookgate_delivery_latency_seconds_count{source="quiet"}"#
        ),
        None,
        "{text}"
    );

    // Outbound deliveries held back by a subscriber's rate limit are due and waiting: the gauges say how
    // many subscriptions have work due and how late the most overdue delivery is; both fall back to 0
    // once nothing is due.
    let due = "hookgate_outbound_due_subscriptions";
    let overdue = "hookgate_outbound_overdue_seconds";
    let sub = common::subscriber::Subscriber::start().await;
    let (s, created) = admin_call(
        &gw,
        "POST",
        "/v1/subscriptions",
        Some(serde_json::json!({"name": "slow", "url": sub.url("/hook"), "events": ["a.b"], "rate_limit": 0.2})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    for i in 0..4 {
        let (s, v) = admin_call(
            &gw,
            "POST",
            "/v1/events",
            Some(serde_json::json!({"type": "a.b", "data": {"i": i}})),
        )
        .await;
        assert_eq!(s, 202, "{v}");
    }
    let mut text = String::new();
    let mut late = false;
    for _ in 0..200 {
        text = gw.metrics().await;
        if value(&text, due) == Some(1.0) && value(&text, overdue).is_some_and(|s| s >= 1.5) {
            late = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(late, "one subscription with deliveries overdue:\n{text}");
    assert!(value(&text, overdue).is_some_and(|s| s < 30.0), "{text}");
    assert!(sub.wait_delivered(1, 10).await, "the burst of one is sent");
    // Deleted, its deliveries are closed: nothing is due any more.
    let id = created["id"].as_str().expect("subscription id");
    let (s, v) = admin_call(&gw, "DELETE", &format!("/v1/subscriptions/{id}"), None).await;
    assert!(s == 200 || s == 204, "{s} {v}");
    wait_for(&gw, due, 0.0).await;
    let text = wait_for(&gw, overdue, 0.0).await;
    assert!(
        sub.delivered().len() < 4,
        "the rate limit held deliveries back: {text}"
    );
}
