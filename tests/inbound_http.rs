//! The inbound contract over real HTTP against a real Redis: statuses, limits, body types, IP policy, dedup.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const OPEN: &str = "source: open\nallow_ips: [127.0.0.0/8, \"::1/128\"]\ndedup: { id: $.id }\n";

async fn post(
    c: &reqwest::Client,
    url: &str,
    ct: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Held by the tests here that send to no known source while they do, so one of them can count its own
/// `unknown` 404s exactly (the metrics recorder is per process).
static UNKNOWN_404S: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `hookgate_inbound_requests_total{source="unknown",status="404"}` in a metrics page.
fn unknown_404s(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("hookgate_inbound_requests_total{source=\"unknown\",status=\"404\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_and_one_line_reasons() {
    let redis = Redis::start();
    let small = "source: small\nallow_ips: [127.0.0.0/8]\nmax_body: 1KiB\n";
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN), ("small.yaml", small)], "").await;
    let c = client();

    let unknown = UNKNOWN_404S.lock().await;
    let (s, b) = post(&c, &gw.url("nope"), "application/json", "{}").await;
    drop(unknown);
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_source")));
    assert!(b["message"].as_str().unwrap().contains("nope"));

    let (s, b) = post(&c, &gw.url("open"), "text/plain", "hi").await;
    assert_eq!((s, b["error"].as_str()), (415, Some("unsupported_type")));
    let r = c.post(gw.url("open")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "no content type at all");

    let (s, b) = post(&c, &gw.url("open"), "application/json", "{\"id\": ").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("malformed")));
    assert!(!b["message"].as_str().unwrap().contains('\n'), "one line");

    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let (s, b) = post(&c, &gw.url("open"), "application/json", deep).await;
    assert_eq!(s, 400);
    assert!(
        b["message"].as_str().unwrap().contains("deeper than 64"),
        "{b}"
    );
    let ok_depth = format!(
        "{{\"id\":\"deep64\",\"a\":{}{}}}",
        "[".repeat(63),
        "]".repeat(63)
    );
    assert_eq!(
        post(&c, &gw.url("open"), "application/json", ok_depth)
            .await
            .0,
        202
    );

    // 1 MiB default: declared too large (answered from the header, before the body), and streamed too
    // large without a length. Raw sockets: the server may close before a client finishes writing.
    let big = vec![b' '; 1024 * 1024 + 1];
    let declared = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        big.len()
    );
    assert_eq!(
        raw_post_status(gw.addr, "/webhooks/open", &declared, &big).await,
        413
    );
    let mut chunked = Vec::new();
    for c in big.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    assert_eq!(
        raw_post_status(gw.addr, "/webhooks/open", streamed, &chunked).await,
        413,
        "streamed body over the limit"
    );
    // per-source override
    let body = format!("{{\"p\":\"{}\"}}", "x".repeat(1100));
    let declared = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    assert_eq!(
        raw_post_status(gw.addr, "/webhooks/small", &declared, body.as_bytes()).await,
        413
    );
    assert_eq!(
        post(&c, &gw.url("small"), "application/json", "{\"p\":1}")
            .await
            .0,
        202
    );
    let (s, b) = post(&c, &gw.url("small"), "application/json", "x".repeat(2000)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (413, Some("too_large")),
        "413 body says why"
    );

    // too many headers
    let mut req = c
        .post(gw.url("open"))
        .header("content-type", "application/json");
    for i in 0..120 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req
        .body("{}")
        .send()
        .await
        .expect("an answer to a header flood");
    assert_eq!(
        r.status().as_u16(),
        431,
        "HTTP/1 header flood refused (by hyper)"
    );

    // every refusal counted by status
    let m = gw.metrics().await;
    for (source, status) in [
        ("unknown", "404"),
        ("open", "415"),
        ("open", "400"),
        ("open", "413"),
        ("small", "413"),
        ("open", "202"),
    ] {
        let line =
            format!("hookgate_inbound_requests_total{{source=\"{source}\",status=\"{status}\"}} ");
        let count: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{m}"));
        assert!(count >= 1);
    }
    gw.stop().await.unwrap();
}

/// Every listener has tower-http's body limit as a backstop at 64 MiB, the most a source may allow: a
/// larger declared length is refused before routing (even to an unknown source), and a streamed body past
/// it is the source's 413. Both get the JSON reason and are counted like any other refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_backstop_limits_every_body_to_what_a_source_may_allow() {
    let redis = Redis::start();
    let huge = "source: huge\nallow_ips: [127.0.0.0/8]\nmax_body: 64MiB\n";
    let small = "source: small\nallow_ips: [127.0.0.0/8]\nmax_body: 2KiB\n";
    let gw = Gateway::start(&redis, &[("huge.yaml", huge), ("small.yaml", small)], "").await;
    let cap = 64 * 1024 * 1024;

    let declared = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        cap + 1
    );
    // The 413 names the limit the path is held to: the source's own, the cap for a path naming none.
    for (path, limit) in [
        ("/webhooks/huge", cap),
        ("/webhooks/small", 2048),
        ("/webhooks/nope", cap),
        ("/webhooks/", cap),
    ] {
        let (status, body) = raw_post(gw.addr, path, &declared, b"").await;
        assert_eq!(status, 413, "{path}: refused from the header: {body}");
        let reason: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(reason["error"], "too_large", "{path}: {body}");
        let named = format!("the {limit} byte limit");
        assert!(
            reason["message"]
                .as_str()
                .is_some_and(|m| m.contains(&named)),
            "{path}: {body}"
        );
    }
    let m = gw.metrics().await;
    for (source, n) in [("huge", 1), ("small", 1), ("unknown", 2)] {
        let line =
            format!("hookgate_inbound_requests_total{{source=\"{source}\",status=\"413\"}} {n}");
        assert!(m.contains(&line), "{line} not in {m}");
    }

    // Streamed without a length: the backstop and the source's limit are the same here, and the
    // backstop's error is the one the receiver sees first.
    let chunk = vec![b' '; 1024 * 1024];
    let mut chunked = Vec::with_capacity(cap + 2 * 1024 * 1024);
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"1\r\n \r\n0\r\n\r\n");
    let streamed = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    let (status, body) = raw_post(gw.addr, "/webhooks/huge", streamed, &chunked).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("too_large"),
        "the source's own reason: {body}"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("hookgate_inbound_requests_total{source=\"huge\",status=\"413\"} 2"),
        "counted: {m}"
    );
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        0,
        "nothing stored"
    );
    gw.stop().await.unwrap();
}

/// A sender that does not finish its body within `limits.request_timeout` gets the JSON 408 `timeout`,
/// counted under its source; nothing is stored. (The timeout must outlast the receiver's own waits: the
/// shortest allowed with a 100 ms Redis timeout is just over 5.3 s.)
#[tokio::test(flavor = "multi_thread")]
async fn a_body_too_slow_to_arrive_gets_408_counted() {
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[("open.yaml", OPEN)],
        // No rate floor: the body stalls, and only the request's own timeout ends it.
        "limits: { request_timeout: 5500ms, min_body_rate: 0 }\nredis: { response_timeout: 100ms }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let head = "Content-Type: application/json\r\nContent-Length: 100\r\n";
    let (status, body) = raw_post(gw.addr, "/webhooks/open", head, b"{\"id\":").await;
    assert_eq!(status, 408, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(5500));
    let reason: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(reason["error"], "timeout", "{body}");
    assert_eq!(
        reason["message"], "request not completed within 5s 500ms",
        "{body}"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("hookgate_inbound_requests_total{source=\"open\",status=\"408\"} 1"),
        "counted: {m}"
    );
    assert!(inbound_entries(&redis, "hookgate").is_empty());
    gw.stop().await.unwrap();
}

/// A body that stalls gets the JSON 408 `too_slow` once `limits.body_rate_grace` has passed, long
/// before `limits.request_timeout`, and frees its in-flight slot; on HTTP/1 its connection is closed (the
/// rest of its body must not be read as a next request), on HTTP/2 its stream is reset and the connection
/// serves on. A body that trickles above `limits.min_body_rate` for longer than the grace is stored whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_frees_its_slot_at_the_least_rate() {
    use tokio::io::AsyncWriteExt;
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        // A source of its own: its 408 is counted per source, in this process's one recorder.
        &[(
            "paced.yaml",
            "source: paced\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\n",
        )],
        "limits: { max_in_flight: 1, min_body_rate: 1KiB, body_rate_grace: 1s }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = "POST /webhooks/paced HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":";
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .expect("the connection is closed after the 408");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let reason: Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(reason["error"], "too_slow", "{text}");
    assert_eq!(
        reason["message"], "the body arrived slower than 1024 bytes/s",
        "{text}"
    );
    // At the grace, not at the request timeout (30 s); the bound is loose for a loaded CI machine.
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    // The one slot is free again.
    let c = client();
    let r = post(&c, &gw.url("paced"), "application/json", r#"{"id":"next"}"#).await;
    assert_eq!(r.0, 202, "{r:?}");

    // 3,000 bytes in 150-byte pieces every 100 ms (1,500 bytes/s) for about 2 s, twice the grace.
    let filler = "x".repeat(3000 - r#"{"id":"trickled","pad":""}"#.len());
    let whole = format!(r#"{{"id":"trickled","pad":"{filler}"}}"#);
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/paced HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        whole.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in whole.as_bytes().chunks(150) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(got.as_deref().unwrap_or_default()).into_owned();
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");

    // HTTP/2: the stalled stream is answered 408 too, and reset; the connection serves the next request.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    tx.send(Ok(bytes::Bytes::from_static(b"{\"id\":")))
        .await
        .unwrap();
    let stalled = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        h2.post(gw.url("paced"))
            .header("content-type", "application/json")
            .body(stalled)
            .send(),
    )
    .await
    .expect("answered at the grace")
    .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 408);
    let reason: Value = r.json().await.unwrap();
    assert_eq!(reason["error"], "too_slow");
    drop(tx);
    let r = h2
        .post(gw.url("paced"))
        .header("content-type", "application/json")
        .body(r#"{"id":"after-h2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        202,
        "the slot and the connection serve on"
    );

    assert_eq!(stored_event_ids(&redis), ["next", "trickled", "after-h2"]);
    let m = gw.metrics().await;
    assert!(
        m.contains("hookgate_inbound_requests_total{source=\"paced\",status=\"408\"} 2"),
        "counted: {m}"
    );
    gw.stop().await.unwrap();
}

/// `limits.max_in_flight` bounds the requests being handled: one more waits for a slot (up to 5 s) and
/// is stored once one frees; one that waits longer gets 503 `overloaded` with `Retry-After`, counted.
#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_max_in_flight_wait_then_get_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[("open.yaml", OPEN)],
        // No rate floor: the held bodies stall for longer than its grace.
        "limits: { max_in_flight: 1, min_body_rate: 0 }\n",
    )
    .await;
    let c = client();
    // Holds the one slot: the handler takes it before reading the body, which arrives when told.
    let hold = |id: &'static str| async move {
        let body = format!(r#"{{"id":"{id}"}}"#);
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /webhooks/open HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write head");
        s.write_all(&body.as_bytes()[..3])
            .await
            .expect("write part");
        // Time for the handler to take the slot (a loaded CI machine is slow to schedule it).
        tokio::time::sleep(Duration::from_secs(1)).await;
        (s, body)
    };
    let release = |(mut s, body): (tokio::net::TcpStream, String)| async move {
        s.write_all(&body.as_bytes()[3..])
            .await
            .expect("write rest");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    };

    let held = hold("held-1").await;
    let waiting = {
        let (c, url) = (c.clone(), gw.url("open"));
        tokio::spawn(async move { post(&c, &url, "application/json", r#"{"id":"waits"}"#).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "the second request waits for the slot"
    );
    assert!(release(held).await.starts_with("HTTP/1.1 202"));
    assert_eq!(
        waiting.await.unwrap().0,
        202,
        "stored once the slot is free"
    );

    let held = hold("held-2").await;
    // A refusal that needs no body is not made to wait for a slot, nor turned into a 503.
    let started = std::time::Instant::now();
    assert_eq!(post(&c, &gw.url("open"), "text/plain", "x").await.0, 415);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "415 at once: {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let r = c
        .post(gw.url("open"))
        .header("content-type", "application/json")
        .body(r#"{"id":"refused"}"#)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "overloaded");
    assert!(release(held).await.starts_with("HTTP/1.1 202"));

    assert_eq!(stored_event_ids(&redis), ["held-1", "waits", "held-2"]);
    let m = gw.metrics().await;
    assert!(
        m.contains("hookgate_inbound_requests_total{source=\"open\",status=\"503\"} 1"),
        "{m}"
    );
    gw.stop().await.unwrap();
}

/// The one route answers as documented: the source name is one percent-decoded
/// path segment, another method gets 405 with `Allow`, any other path 404, each counted; the layers
/// (request id) apply.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_route_answers_as_a_router_would() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = client();

    let r = c
        .post(gw.url("op%65n"))
        .header("content-type", "application/json")
        .body(r#"{"id":"routed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "percent-decoded source name");
    let id = r.headers().get("x-request-id").expect("request id");
    assert_eq!(id.len(), 36, "a UUID: {id:?}");

    let r = c.get(gw.url("open")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    let b: Value = r.json().await.expect("a JSON error body");
    assert_eq!(b["error"], "method_not_allowed");

    let unknown = UNKNOWN_404S.lock().await;
    let before = unknown_404s(&gw.metrics().await);
    let base = format!("http://{}", gw.addr);
    for path in [
        "/webhooks/open/extra",
        "/webhooks/",
        "/webhooks",
        "/elsewhere",
        "/",
    ] {
        let r = c
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let b: Value = r.json().await.expect("a JSON error body");
        assert_eq!(b["error"], "not_found", "{path}");
    }
    // Counted: the 405 under its source, each path that names none under `unknown`.
    let m = gw.metrics().await;
    assert!(
        m.contains("hookgate_inbound_requests_total{source=\"open\",status=\"405\"} 1"),
        "{m}"
    );
    assert_eq!(unknown_404s(&m) - before, 5, "each of the five paths: {m}");
    drop(unknown);
    let mut conn = redis.conn();
    let n: u64 = redis::cmd("XLEN")
        .arg("hookgate:inbound")
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 1, "only the one POST to a source was stored");
}

/// `handshake: get`: the GET a provider (Mailchimp) sends to check a URL before it saves a webhook gets
/// an empty 200 that no cache keeps, with or without the source's token (a GET is no event: nothing is
/// read, stored or done); HEAD alike, and a GET with a body is still only a check. An address outside the
/// allowlist gets 403, as a POST would. A POST still needs the token. Each answer is counted under its
/// source, and the source's 405 names the methods it takes; a source without the handshake takes no GET.
#[tokio::test(flavor = "multi_thread")]
async fn a_providers_get_check_of_the_url_is_answered_and_not_stored() {
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let key = secret_file(secrets.path(), "mc", "mc-url-key-123");
    let mc = format!(
        "source: mc\nverify: {{ preset: token, param: key, secret: \"{key}\" }}\nhandshake: get\n"
    );
    let far = "source: far\nallow_ips: [10.0.0.0/8]\nhandshake: get\n";
    // The source without the handshake has a name of its own: the metrics recorder is one per process,
    // and the route test counts `open`'s 405s.
    let plain = OPEN.replace("source: open", "source: plain");
    let gw = Gateway::start(
        &redis,
        &[("mc.yaml", &mc), ("far.yaml", far), ("plain.yaml", &plain)],
        "",
    )
    .await;
    let c = client();
    let send = |method: reqwest::Method, url: String, body: &'static str| {
        let c = c.clone();
        async move {
            let r = c.request(method, url).body(body).send().await.unwrap();
            let status = r.status().as_u16();
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (allow, cache) = (header("allow"), header("cache-control"));
            (status, allow, cache, r.text().await.unwrap())
        }
    };
    let get = |url: String| send(reqwest::Method::GET, url, "");
    let url = gw.url("mc");

    for (asked, what) in [
        (format!("{url}?key=mc-url-key-123"), "with the token"),
        (format!("{url}?key=guess"), "with another"),
        (url.clone(), "without one"),
    ] {
        let (status, _, cache, body) = get(asked).await;
        assert_eq!(
            (status, cache.as_deref(), body.as_str()),
            (200, Some("no-store"), ""),
            "the check is answered, empty, {what}"
        );
    }
    let (status, _, _, body) = send(reqwest::Method::HEAD, url.clone(), "").await;
    assert_eq!((status, body.as_str()), (200, ""), "HEAD");
    let (status, _, _, _) = send(reqwest::Method::GET, url.clone(), r#"{"id":"in-a-get"}"#).await;
    assert_eq!(status, 200, "a GET with a body is a check all the same");
    let (status, _, _, body) = get(gw.url("far")).await;
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, b["error"].as_str()),
        (403, Some("ip_not_allowed")),
        "{b}"
    );

    // Another method is refused, and the refusal names those this source takes.
    let (status, allow, _, _) = send(reqwest::Method::PUT, url.clone(), "").await;
    assert_eq!((status, allow.as_deref()), (405, Some("GET, HEAD, POST")));
    // A source without the handshake takes no GET.
    let (status, allow, _, _) = get(gw.url("plain")).await;
    assert_eq!((status, allow.as_deref()), (405, Some("POST")));

    // The events themselves are POSTs, which need the token, and are stored as ever.
    let form = "application/x-www-form-urlencoded";
    let event = "type=subscribe&data[email]=ada%40example.com";
    let (status, b) = post(&c, &format!("{url}?key=guess"), form, event).await;
    assert_eq!(
        (status, b["message"].as_str()),
        (401, Some("bad credentials")),
        "{b}"
    );
    let (status, b) = post(&c, &format!("{url}?key=mc-url-key-123"), form, event).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "only the POST was stored"
    );

    let m = gw.metrics().await;
    for line in [
        "hookgate_inbound_requests_total{source=\"mc\",status=\"200\"} 5",
        "hookgate_inbound_requests_total{source=\"mc\",status=\"401\"} 1",
        "hookgate_inbound_requests_total{source=\"mc\",status=\"405\"} 1",
        "hookgate_inbound_requests_total{source=\"far\",status=\"403\"} 1",
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_entry_keeps_raw_body_and_drops_credentials() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let body = "{\"id\":\"evt_raw\",  \"spacing\" : [1,2 ,3]}";
    let r = client()
        .post(gw.url("open"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sekrit")
        .header("x-request-id", "spoofed-id")
        .header("x-shopify-topic", "orders/create")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let entries = inbound_entries(&redis, "hookgate");
    assert_eq!(entries.len(), 1);
    let (eid, f) = &entries[0];
    assert_eq!(eid, &id, "202 returns the stream id");
    assert_eq!(
        f["body"],
        body.as_bytes(),
        "raw bytes, not a re-serialisation"
    );
    assert_eq!(f["source"], b"open");
    assert_eq!(f["event_id"], b"evt_raw");
    assert_eq!(f["client_ip"], b"127.0.0.1");
    let headers: Value = serde_json::from_slice(&f["headers"]).unwrap();
    assert_eq!(headers["x-shopify-topic"], "orders/create");
    assert!(
        headers.get("authorization").is_none(),
        "credentials never stored: {headers}"
    );
    assert_ne!(
        f["request_id"], b"spoofed-id",
        "the request id is ours, not the sender's"
    );
    assert!(!f["request_id"].is_empty());
    // The stored format: the source, the rest of the receipt as one JSON object, and the body.
    assert_eq!(
        inbound_field_names(&redis, "hookgate"),
        [["body", "meta", "source"]]
    );
    let meta: Value = serde_json::from_slice(&f["meta"]).unwrap();
    let mut members: Vec<&str> = meta
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(
        members,
        [
            "client_ip",
            "content_type",
            "dedup",
            "event_id",
            "headers",
            "received_at",
            "request_id"
        ]
    );
    let received = meta["received_at"].as_u64().expect("Unix ms, a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(received <= now && now - received < 60_000, "{received}");
    assert!(meta["headers"].is_object());
    assert_eq!(meta["content_type"], "application/json");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_bodies_with_bracket_keys_are_parsed() {
    let redis = Redis::start();
    // ActiveCampaign names custom fields by number, not counting from 0: an object, not a list.
    let ac = "source: ac\nallow_ips: [127.0.0.0/8]\ndedup: { id: \"$.contact.fields['12']\" }\n";
    let gw = Gateway::start(&redis, &[("ac.yaml", ac)], "").await;
    let c = client();
    let form = "type=subscribe&contact[email]=ada%40example.org&contact[fields][1]=pro&contact[fields][12]=A-17&tags[]=x&tags[]=y";
    let ct = "application/x-www-form-urlencoded";
    assert_eq!(post(&c, &gw.url("ac"), ct, form).await.0, 202);
    // the nested field was found: a redelivery with other tags is a duplicate
    let (s, b) = post(&c, &gw.url("ac"), ct, form.replace("tags[]=y", "tags[]=z")).await;
    assert_eq!(
        (s, &b["duplicate"], &b["event_id"]),
        (200, &json!(true), &json!("A-17"))
    );
    let deep = format!("a{}=1", "[k]".repeat(64));
    for (bad, why) in [(deep.as_str(), "deeper than 64"), ("name=Jos%E9", "UTF-8")] {
        let (s, b) = post(&c, &gw.url("ac"), ct, bad.to_string()).await;
        assert_eq!(s, 400, "{bad}");
        assert!(
            b["message"].as_str().is_some_and(|m| m.contains(why)),
            "{b}"
        );
    }
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_id_is_stored_once_even_concurrently() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url) = (c.clone(), gw.url("open"));
        tasks.push(tokio::spawn(async move {
            post(&c, &url, "application/json", "{\"id\":\"evt_same\"}").await
        }));
    }
    let mut statuses = Vec::new();
    let mut stored_ids = Vec::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        statuses.push(s);
        if s == 202 {
            stored_ids.push(b["id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(b, json!({ "duplicate": true, "event_id": "evt_same" }));
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 49);
    // The redeliveries' entries were taken back before they were answered.
    let entries = inbound_entries(&redis, "hookgate");
    assert_eq!(
        entries.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        stored_ids.iter().collect::<Vec<_>>()
    );
}

/// POST `{}` claiming `xff` as X-Forwarded-For; the status.
async fn xff_status(c: &reqwest::Client, url: &str, xff: &str) -> u16 {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", xff);
    r.body("{}")
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn source_ip_allowlist() {
    let redis = Redis::start();
    let ten = "source: ten\nallow_ips: [10.0.0.0/8]\n";
    let v6 = "source: v6only\nallow_ips: [\"::1/128\"]\n";
    let v4 = "source: v4only\nallow_ips: [127.0.0.1/32]\n";
    let files = [("ten.yaml", ten), ("v6.yaml", v6), ("v4.yaml", v4)];
    let c = client();
    let ct = "application/json";

    // no trusted proxies: X-Forwarded-For is the sender's word and is ignored
    let gw = Gateway::start(&redis, &files, "").await;
    let (s, b) = post(&c, &gw.url("ten"), ct, "{}").await;
    assert_eq!((s, b["error"].as_str()), (403, Some("ip_not_allowed")));
    assert_eq!(
        xff_status(&c, &gw.url("ten"), "10.1.1.1").await,
        403,
        "spoofed X-Forwarded-For from an untrusted peer"
    );
    assert_eq!(post(&c, &gw.url("v4only"), ct, "{}").await.0, 202);
    assert_eq!(
        post(&c, &gw.url("v6only"), ct, "{}").await.0,
        403,
        "IPv4 client, IPv6-only list"
    );
    drop(gw);

    // a trusted proxy chain: the right-most address that is not a trusted proxy is the client
    let gw = Gateway::start(
        &redis,
        &files,
        "trusted_proxies: [127.0.0.0/8, 10.9.0.0/16]\n",
    )
    .await;
    assert_eq!(
        xff_status(&c, &gw.url("ten"), "10.66.0.1, 10.1.2.3, 10.9.0.7").await,
        202
    );
    let last = inbound_entries(&redis, "hookgate").pop().unwrap();
    assert_eq!(last.1["client_ip"], b"10.1.2.3");
    assert_eq!(
        xff_status(&c, &gw.url("ten"), "10.1.2.3, 8.8.8.8").await,
        403,
        "an untrusted hop after the claimed client wins"
    );
    drop(gw);

    // IPv6 and IPv4-mapped: a dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1
    let gw = Gateway::start_on(&redis, &files, "", "[::]:0").await;
    let base = format!("http://127.0.0.1:{}/webhooks/", gw.addr.port());
    let (s, _) = post(&c, &format!("{base}v4only"), ct, "{}").await;
    assert_eq!(s, 202, "IPv4-mapped peer matches an IPv4 CIDR");
    let last = inbound_entries(&redis, "hookgate").pop().unwrap();
    assert_eq!(last.1["client_ip"], b"127.0.0.1", "stored canonical");
    let base6 = format!("http://[::1]:{}/webhooks/", gw.addr.port());
    assert_eq!(post(&c, &format!("{base6}v6only"), ct, "{}").await.0, 202);
    assert_eq!(post(&c, &format!("{base6}v4only"), ct, "{}").await.0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_redis() {
    let mut redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = client();
    let ready = format!("http://{}/readyz", gw.admin);
    assert_eq!(c.get(&ready).send().await.unwrap().status().as_u16(), 200);
    redis.kill();
    assert_eq!(c.get(&ready).send().await.unwrap().status().as_u16(), 503);
    assert_eq!(
        c.get(format!("http://{}/healthz", gw.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    redis.restart();
    let mut ok = false;
    for _ in 0..50 {
        if c.get(&ready).send().await.unwrap().status().as_u16() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "ready again once Redis is back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_without_any_authentication_is_refused_at_load() {
    let problems = match hookgate::catalog::load(
        &{
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("bare.yaml"), "source: bare\n").unwrap();
            d.keep()
        },
        None,
    ) {
        Err(p) => p,
        Ok(_) => panic!("a source with neither verify nor allow_ips loaded"),
    };
    let text = problems[0].to_string();
    assert!(
        text.contains("bare.yaml:1:") && text.contains("needs `verify:`"),
        "{text}"
    );
}

/// Tokens are remembered per source: with two Mailgun sources a captured signature could be taken once at
/// each, even under different keys (a subaccount's event is signed with its primary account's key too).
/// A set with two is refused, naming both; one source with every key loads.
#[test]
fn a_second_mailgun_source_is_refused_at_load() {
    std::env::set_var("HG_T_MG_PRIMARY", "key-primary");
    std::env::set_var("HG_T_MG_SUB", "key-subaccount");
    let file = |name: &str, secrets: &str| {
        format!("source: {name}\nverify: {{ preset: mailgun, secrets: [{secrets}] }}\ndedup: {{ id: $.signature.token }}\nrules: []\n")
    };
    let load = |files: &[(&str, String)]| {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        hookgate::catalog::load(d.path(), None).map(|c| c.sources.len())
    };
    let problems = load(&[
        ("a-sub.yaml", file("mailgun-sub", r#""${env:HG_T_MG_SUB}""#)),
        (
            "b-primary.yaml",
            file("mailgun-all", r#""${env:HG_T_MG_PRIMARY}""#),
        ),
    ])
    .expect_err("two mailgun sources");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains("b-primary.yaml:1:")
            && text[0].contains("source `mailgun-all`: only one source may check Mailgun signatures, and `mailgun-sub` does (")
            && text[0].contains("a-sub.yaml:1)"),
        "{text:?}"
    );
    let both_keys = r#""${env:HG_T_MG_SUB}", "${env:HG_T_MG_PRIMARY}""#;
    let loaded = load(&[("mailgun.yaml", file("mailgun", both_keys))]);
    assert_eq!(loaded.ok(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_served() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(gw.url("open"))
        .header("content-type", "application/json")
        .body("{\"id\":\"h2\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 202);

    // HTTP/2 heads are bounded by size only (64 KiB): the receiver counts their fields, answers in
    // our JSON and counts the refusal. `:authority` counts as HTTP/1's Host line does, so the limit of 100
    // is reached at 96 + content-type, content-length, accept and `:authority`.
    // `n` fields of our own, and the sender's own X-Request-Id when `with_id`.
    let flood = |n: usize, with_id: bool| {
        let mut req = c
            .post(gw.url("open"))
            .header("content-type", "application/json");
        if with_id {
            req = req.header("x-request-id", "theirs");
        }
        for i in 0..n {
            req = req.header(format!("x-h{i}"), "v");
        }
        req.body(format!("{{\"id\":\"h2-{n}-{with_id}\"}}")).send()
    };
    let r = flood(96, false).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = flood(97, false).await.unwrap();
    assert_eq!(r.status().as_u16(), 431, "one past the limit");
    let r = flood(500, false).await.unwrap();
    assert_eq!(r.status().as_u16(), 431);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "too_many_headers", "{b}");
    // The sender's own X-Request-Id is replaced by ours, and still counts as a field it sent.
    let r = flood(95, true).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_ne!(
        r.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"theirs"[..]),
        "the id is ours"
    );
    let r = flood(96, true).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        431,
        "their X-Request-Id is one of the 101"
    );
    assert!(
        gw.metrics()
            .await
            .contains("hookgate_inbound_requests_total{source=\"open\",status=\"431\"} 3"),
        "counted"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 3);
}

/// On shutdown the listener stops accepting, readiness fails, and a request already in flight still
/// finishes (and is stored) within the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let url = gw.url("open");
    let slow = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    });
    tx.send(Ok(b"{\"id\":\"slow\",".to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let addr = gw.addr;
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown began"
    );
    tx.send(Ok(b"\"a\":1}".to_vec())).await.unwrap();
    drop(tx);
    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(r.status().as_u16(), 202);
    stopping.await.unwrap().unwrap();
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);
}

/// A dedup id from a header the signature does not cover is bound to the body: a validly signed body
/// replayed with someone else's delivery id is stored, not taken for that event's redelivery, and the
/// redeliveries of both are then recognised (each id + body has a dedup key of its own).
#[tokio::test(flavor = "multi_thread")]
async fn unsigned_dedup_header_cannot_poison_another_event() {
    let redis = Redis::start();
    let gh = "source: gh\nallow_ips: [127.0.0.0/8]\ndedup: { header: X-GitHub-Delivery }\n";
    let gw = Gateway::start(&redis, &[("gh.yaml", gh)], "").await;
    let c = client();
    let send = |id: &'static str, body: &'static str| {
        let (c, url) = (c.clone(), gw.url("gh"));
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-delivery", id)
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(send("d-1", "{\"a\":1}").await.0, 202);
    let (s, b) = send("d-1", "{\"a\":1}").await;
    assert_eq!(
        (s, &b["duplicate"]),
        (200, &json!(true)),
        "a true redelivery"
    );
    // an attacker replays an old body under the id of a future event...
    assert_eq!(send("d-2", "{\"a\":1}").await.0, 202);
    // ...and the real event with that id is still stored
    assert_eq!(send("d-2", "{\"real\":true}").await.0, 202);
    // Both are then known: a redelivery of either is a duplicate, stored once.
    for body in ["{\"real\":true}", "{\"a\":1}"] {
        let (s, b) = send("d-2", body).await;
        assert_eq!((s, &b["duplicate"]), (200, &json!(true)), "{body}");
    }
    let bodies: Vec<Vec<u8>> = inbound_entries(&redis, "hookgate")
        .into_iter()
        .map(|(_, f)| f["body"].clone())
        .collect();
    assert!(bodies.contains(&b"{\"real\":true}".to_vec()));
    assert_eq!(bodies.len(), 3);
}

/// The token preset's header is kept out of storage, also when its configured name has stray spaces
/// (the verifier trims them; the list of headers not to store must name the same header).
#[tokio::test(flavor = "multi_thread")]
async fn token_header_is_never_stored() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "tok", "brevo-shared-token");
    let plain = format!(
        "source: brevo\nverify: {{ preset: token, header: X-Brevo-Token, secret: \"{secret}\" }}\n"
    );
    let spaced = format!(
        "source: spaced\nverify: {{ preset: token, header: \" X-Brevo-Token \", secret: \"{secret}\" }}\n"
    );
    let gw = Gateway::start(
        &redis,
        &[("brevo.yaml", &plain), ("spaced.yaml", &spaced)],
        "",
    )
    .await;
    let c = client();
    for source in ["brevo", "spaced"] {
        let post = |token: &'static str| {
            c.post(gw.url(source))
                .header("content-type", "application/json")
                .header("x-brevo-token", token)
                .body("{}")
                .send()
        };
        assert_eq!(
            post("wrong").await.unwrap().status().as_u16(),
            401,
            "{source}"
        );
        let r = post("brevo-shared-token").await.unwrap();
        assert_eq!(r.status().as_u16(), 202, "{source}");
    }
    let entries = inbound_entries(&redis, "hookgate");
    assert_eq!(entries.len(), 2);
    for (_, f) in entries {
        let headers = String::from_utf8(f["headers"].clone()).unwrap();
        assert!(
            !headers.contains("brevo-shared-token") && !headers.contains("x-brevo-token"),
            "{headers}"
        );
    }
}

/// During `shutdown_delay` readiness fails while requests are still served: load balancers stop first.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_before_the_listener_stops() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "shutdown_delay: 1s\n").await;
    let ready = gw.admin_url("/readyz");
    let url = gw.url("open");
    assert_eq!(
        client().get(&ready).send().await.unwrap().status().as_u16(),
        200
    );
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = client().get(&ready).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "unready first");
    assert_eq!(
        post(&client(), &url, "application/json", "{\"id\":\"late\"}")
            .await
            .0,
        202,
        "still serving"
    );
    stopping.await.unwrap().unwrap();
}

/// Reads from `s` until the peer closes it; `None` if it is still open after `within`.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

/// Connection timers as short as the config allows, for the tests that wait them out: the shortest idle
/// timeout is above a request timeout above the receiver's own waits (5 s + 3 × the Redis timeout), and
/// the header-read timeout (checked every 250 ms) far below it.
const SHORT_TIMERS: &str = "limits: { header_read_timeout: 1s, request_timeout: 5500ms, idle_timeout: 6s }\nredis: { response_timeout: 100ms }\n";

/// A connection that never sends a byte is closed after `limits.header_read_timeout` and gives its slot
/// back (hyper-util's HTTP/1-or-2 detection has no timer of its own): with one connection allowed, the
/// next sender is then served.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed_and_frees_its_slot() {
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[("open.yaml", OPEN)],
        "limits: { max_connections: 1, header_read_timeout: 1s }\n",
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Time for the server to accept it and take the one slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = tokio::spawn({
        let url = gw.url("open");
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"id":"after-silence"}"#)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let closed = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(closed, Some(Vec::new()), "closed without an answer");
    let status = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the next sender is served once the slot is free")
        .unwrap();
    assert_eq!(status.ok(), Some(202));
    gw.stop().await.unwrap();
}

/// An HTTP/2 connection on which no request starts for `limits.idle_timeout` is sent GOAWAY and closed
/// (HTTP/2 has no header-read timer, and keep-alive pings are answered by any live client).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed() {
    use tokio::io::AsyncWriteExt;
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[("open.yaml", OPEN)],
        // A connection known to be HTTP/2 by its preface has no head timer, however short.
        SHORT_TIMERS,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .expect("closed within the idle timeout and the grace period");
    // Walk the frames (9-byte headers: length, type, flags, stream) for a GOAWAY (type 7).
    let (mut at, mut goaway) = (0, false);
    while at + 9 <= got.len() {
        let len =
            usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
        goaway |= got[at + 3] == 7;
        at += 9 + len;
    }
    assert!(goaway, "a GOAWAY before the close: {got:?}");
    gw.stop().await.unwrap();
}

/// Shutdown stops a server whose every connection slot is taken: the accept loop watches for it while
/// waiting for a slot, and the request in flight gets the grace period (2 s in tests), not forever.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_completes_with_every_slot_taken() {
    use tokio::io::AsyncWriteExt;
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        &[("open.yaml", OPEN)],
        "limits: { max_connections: 1 }\n",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // A request whose body never completes: in flight, holding the one slot.
    s.write_all(b"POST /webhooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), gw.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stopped within the grace period: {stopped:?}"
    );
}

/// A reason quotes what the sender wrote on one bounded line, and a body type is one Content-Type
/// whose charset, if any, is UTF-8 (the body is read as UTF-8).
#[tokio::test(flavor = "multi_thread")]
async fn sender_text_in_reasons_and_strict_content_types() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = client();

    let unknown = UNKNOWN_404S.lock().await;
    let long = "a".repeat(5000);
    for name in [
        "a%0D%0AX-Injected:%201",
        "b%E2%80%A8c%1b%5b31m",
        long.as_str(),
    ] {
        let url = format!("http://{}/webhooks/{name}", gw.addr);
        let (s, b) = post(&c, &url, "application/json", "{}").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("unknown_source")),
            "{b}"
        );
        let m = b["message"].as_str().unwrap();
        assert!(
            !m.contains(['\r', '\n', '\u{2028}', '\u{1b}']),
            "one line, no control characters: {m:?}"
        );
        assert!(m.chars().count() < 100, "bounded: {m}");
    }
    drop(unknown);
    let url = format!("http://{}/webhooks/a%0D%0Ab", gw.addr);
    let unknown = UNKNOWN_404S.lock().await;
    let (_, b) = post(&c, &url, "application/json", "{}").await;
    drop(unknown);
    assert_eq!(
        b["message"], "unknown source `a\\r\\nb`",
        "escaped, still readable"
    );

    // JSON in a charset other than UTF-8, or a form in one no form can carry, is refused as a type,
    // before the body is read
    for ct in [
        "application/json; charset=latin1",
        "application/x-www-form-urlencoded; charset=utf-16",
        "application/x-www-form-urlencoded; charset=klingon",
        "application/+json",
    ] {
        let (s, b) = post(&c, &gw.url("open"), ct, "{\"id\":\"cs\"}").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (415, Some("unsupported_type")),
            "{ct}: {b}"
        );
    }
    let (s, _) = post(
        &c,
        &gw.url("open"),
        "application/json; charset=\"UTF-8\"",
        "{}",
    )
    .await;
    assert_eq!(s, 202);

    // two Content-Type fields are no one type, in either order
    for (first, second) in [
        ("application/json", "text/plain"),
        ("text/plain", "application/json"),
    ] {
        let headers =
            format!("Content-Type: {first}\r\nContent-Type: {second}\r\nContent-Length: 2\r\n");
        let (s, b) = raw_post(gw.addr, "/webhooks/open", &headers, b"{}").await;
        assert_eq!(s, 415, "{b}");
        assert!(b.contains(&format!("{first}, {second}")), "{b}");
    }
    // a value that is not visible ASCII is named as such, not as missing
    let mut head = b"Content-Type: application/\xff\xfejson\r\nContent-Length: 2\r\n".to_vec();
    head.extend_from_slice(b"\r\n{}");
    let (s, b) = raw_post_bytes(gw.addr, "/webhooks/open", &head).await;
    assert_eq!(s, 415, "{b}");
    assert!(b.contains("not visible ASCII"), "{b}");
    assert!(
        inbound_entries(&redis, "hookgate").len() == 1,
        "only the UTF-8 one stored"
    );
    gw.stop().await.unwrap();
}

/// Sends the start of a request head on `s` and stops: the server must close the connection without an
/// answer at the header-read timeout of the tests that use it (1 s, checked every 250 ms), well before
/// their idle timeout.
async fn stalled_head_is_cut(s: &mut tokio::net::TcpStream, start: &[u8]) {
    use tokio::io::AsyncWriteExt;
    s.write_all(start).await.unwrap();
    let started = std::time::Instant::now();
    let rest = read_until_closed(s, Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert_eq!(rest, Some(Vec::new()), "closed without an answer");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4000),
        "closed after {took:?}"
    );
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `s`; its status code.
async fn read_one_response(s: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// An idle HTTP/1.1 keep-alive connection lives for `limits.idle_timeout`, not `header_read_timeout`
/// (hyper's own head timer also runs between requests: a load balancer keeping connections for 60 s would
/// send onto one being closed and answer 502). A head, once its first byte arrives, still has to be
/// complete within the header-read timeout, on the first request and on later ones.
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_waits_for_the_idle_timeout_and_heads_for_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], SHORT_TIMERS).await;
    let request = |id: &str| {
        let body = format!(r#"{{"id":"{id}"}}"#);
        format!(
            "POST /webhooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request("ka-1").as_bytes()).await.unwrap();
    assert_eq!(read_one_response(&mut s).await, 202);
    // Idle for more than the header-read timeout (and its check's quarter): the connection stays.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    s.write_all(request("ka-2").as_bytes()).await.unwrap();
    assert_eq!(
        read_one_response(&mut s).await,
        202,
        "served on the same connection"
    );
    // A head that starts and stalls is cut after 1-1.25 s, not at the idle timeout.
    stalled_head_is_cut(&mut s, b"POST /webhooks/open HTTP/1.1\r\nHost: x\r\n").await;
    // The first head of a connection too.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stalled_head_is_cut(&mut slow, b"POST /web").await;
    // `PRI` is a valid HTTP/1 method: only the whole HTTP/2 preface turns the head timer off.
    let mut pri = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stalled_head_is_cut(&mut pri, b"PRI / HTTP/1.1\r\nHost: x\r\n").await;
    // A head that starts just before the idle timeout is not cut by it: its own timer bounds it.
    let mut late = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    late.write_all(request("ka-late").as_bytes()).await.unwrap();
    assert_eq!(read_one_response(&mut late).await, 202);
    tokio::time::sleep(Duration::from_millis(5600)).await;
    let whole = request("ka-late-2");
    let (first, rest) = whole.split_at(20);
    late.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    late.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(
        read_one_response(&mut late).await,
        202,
        "the head begun at 5.6 s of 6 s idle"
    );
    // An idle connection is still closed at the idle timeout, gracefully.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(request("ka-3").as_bytes()).await.unwrap();
    assert_eq!(read_one_response(&mut idle).await, 202);
    let started = std::time::Instant::now();
    assert_eq!(
        read_until_closed(&mut idle, Duration::from_secs(15)).await,
        Some(Vec::new())
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(5500) && took < Duration::from_secs(9),
        "idle close after {took:?}"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 5);
    gw.stop().await.unwrap();
}

/// A request refused before its body was read leaves the body to hyper, which drains it in one read if it
/// is there: those bytes are no request head, so the kept-alive connection is not cut at the header-read
/// timeout. Here the refusal is the overload 503 (the one in-flight slot held by a slow body), and the body
/// (20 KB: more than hyper buffers while the request waits, less than its drain reads at once) arrives
/// while the request waits for the slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_body_does_not_start_a_head_timer() {
    use tokio::io::AsyncWriteExt;
    let redis = Redis::start();
    let gw = Gateway::start(
        &redis,
        // A source of its own: the 503 it gets is counted per source, in this process's one recorder.
        &[("drain.yaml", "source: drain\nallow_ips: [127.0.0.0/8]\n")],
        "limits: { max_in_flight: 1, header_read_timeout: 1s, request_timeout: 5500ms, idle_timeout: 12s, min_body_rate: 0 }\nredis: { response_timeout: 100ms }\n",
    )
    .await;
    let head = |len: usize| {
        format!("POST /webhooks/drain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n")
    };
    // Holds the one slot until its request timeout (no rate floor): its body never completes.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(format!("{}{{", head(100)).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let body = format!(r#"{{"id":"refused","pad":"{}"}}"#, "x".repeat(20_000));
    s.write_all(head(body.len()).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(body.as_bytes()).await.unwrap();
    assert_eq!(read_one_response(&mut s).await, 503, "overloaded");
    // Idle for more than the header-read timeout: the connection is kept, as hyper drained the body.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let body = r#"{"id":"after-drain"}"#;
    let next = format!("{}{body}", head(body.len()));
    s.write_all(next.as_bytes()).await.unwrap();
    assert_eq!(
        read_one_response(&mut s).await,
        202,
        "the same connection, after 3 s"
    );
    // The drain ends with the read that finds nothing: a head trickled after an early refusal (a 415,
    // its small body sent with it) is timed again, not left to the idle timeout.
    let mut t = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    t.write_all(
        b"POST /webhooks/drain HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await
    .unwrap();
    assert_eq!(read_one_response(&mut t).await, 415);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stalled_head_is_cut(&mut t, b"POST /webhooks/drain HTTP/1.1\r\n").await;
    gw.stop().await.unwrap();
}

/// A client that shuts down its sending side once the request is written still gets its answer
/// (hyper's half-close), with a declared length and chunked.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_request_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let sized = b"{\"id\":\"half-1\"}";
    let framings = [
        format!("Content-Length: {}\r\n\r\n", sized.len()).into_bytes(),
        b"Transfer-Encoding: chunked\r\n\r\n".to_vec(),
    ];
    for (i, framing) in framings.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut req =
            b"POST /webhooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                .to_vec();
        req.extend_from_slice(framing);
        let body = format!("{{\"id\":\"half-{}\"}}", i + 1);
        if i == 0 {
            req.extend_from_slice(body.as_bytes());
        } else {
            req.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
        }
        s.write_all(&req).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
            .await
            .expect("the connection ends after the answer")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 202 "), "framing {i}: {text:?}");
    }
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 2);
}

/// A sender that closes its connection before its body is complete is no malformed request: it is
/// counted as 499 (`client_closed`), not 400, so an alert on 400s does not fire on aborted uploads. A
/// truly malformed body (bad chunk framing) is still a 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_sender_that_leaves_mid_body_is_not_a_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let head = "POST /webhooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    for framing in [
        "Content-Length: 100\r\n\r\n{\"id\":",
        "Transfer-Encoding: chunked\r\n\r\n6\r\n{\"id\":\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(format!("{head}{framing}").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    let counted = |m: &str, status: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "hookgate_inbound_requests_total{{source=\"open\",status=\"{status}\"}} "
                ))
            })
            .map(|v| v.trim().to_string())
    };
    let mut m = String::new();
    for _ in 0..50 {
        m = gw.metrics().await;
        if counted(&m, "499").as_deref() == Some("2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted(&m, "499").as_deref(), Some("2"), "{m}");
    assert_eq!(counted(&m, "400"), None, "{m}");

    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
    assert!(inbound_entries(&redis, "hookgate").is_empty());
}

/// A body in a content coding hookgate does not read is a 415 before it is read, gzip or not; an
/// `identity` coding is no coding.
#[tokio::test(flavor = "multi_thread")]
async fn content_codings_are_refused() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    for (coding, id) in [("gzip", "c1"), ("identity, br", "c2"), ("deflate", "c3")] {
        let head = format!("Content-Type: application/json\r\nContent-Encoding: {coding}\r\nContent-Length: 11\r\n");
        let (s, b) = raw_post(
            gw.addr,
            "/webhooks/open",
            &head,
            format!("{{\"id\":\"{id}\"}}").as_bytes(),
        )
        .await;
        assert_eq!(s, 415, "{coding}: {b}");
        assert!(b.contains("unsupported_encoding"), "{b}");
    }
    let head =
        "Content-Type: application/json\r\nContent-Encoding: Identity\r\nContent-Length: 11\r\n";
    let (s, b) = raw_post(gw.addr, "/webhooks/open", head, b"{\"id\":\"c4\"}").await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);
    // Transfer codings: hyper undoes `chunked` only, so `gzip, chunked` would leave the body compressed
    // (and verified, stored, read that way). RFC 9112 answers an unknown transfer coding with 501.
    let chunked = |id: &str| format!("b\r\n{{\"id\":\"{id}\"}}\r\n0\r\n\r\n");
    for coding in ["gzip, chunked", "x-custom,chunked"] {
        let head = format!("Content-Type: application/json\r\nTransfer-Encoding: {coding}\r\n");
        let (s, b) = raw_post(gw.addr, "/webhooks/open", &head, chunked("t1").as_bytes()).await;
        assert_eq!(s, 501, "{coding}: {b}");
        assert!(b.contains("unsupported_transfer_coding"), "{b}");
    }
    let head = "Content-Type: application/json\r\nTransfer-Encoding: Chunked\r\n";
    let (s, b) = raw_post(gw.addr, "/webhooks/open", head, chunked("t2").as_bytes()).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 2);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"hookgate_inbound_requests_total{source="open",status="501"} 2"#),
        "{metrics}"
    );
}

/// Dedup ids: an integer is its decimal text, so `1` and `"1"` are one event; a number that is no
/// 64-bit integer is no id, and such an event, like one without the id, is deduplicated by its exact
/// bytes. Two integers past 2^64 that read as the same float are two events.
#[tokio::test(flavor = "multi_thread")]
async fn ids_that_are_numbers_and_events_without_one() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("open.yaml", OPEN)], "").await;
    let c = client();
    let url = gw.url("open");
    let send = |body: &'static str| post(&c, &url, "application/json", body);
    assert_eq!(send(r#"{"id":1}"#).await.0, 202);
    let (s, b) = send(r#"{"id":"1"}"#).await;
    assert_eq!((s, &b["event_id"]), (200, &json!("1")));
    // 34708809560722140000000001 and ...02 are one float: as ids they would merge two events.
    assert_eq!(send(r#"{"id":34708809560722140000000001}"#).await.0, 202);
    assert_eq!(send(r#"{"id":34708809560722140000000002}"#).await.0, 202);
    assert_eq!(send(r#"{"id":2.5e3}"#).await.0, 202);
    assert_eq!(send(r#"{"id":2500.0}"#).await.0, 202);
    // ... but the same bytes again are the same event.
    let (s, b) = send(r#"{"id":2500.0}"#).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("body-sha256:")),
        "{b}"
    );
    assert_eq!(send(r#"{"no_id":true}"#).await.0, 202);
    assert_eq!(send(r#"{"no_id":true}"#).await.0, 200);
    // An empty id is no id either.
    assert_eq!(send(r#"{"id":""}"#).await.0, 202);
    assert_eq!(send(r#"{"id":""}"#).await.0, 200);
    // A signed JSON request resent as a form has no `$.id` there: its bytes still dedup it.
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        post(&c, &gw.url("open"), form, r#"{"id":"f1"}"#).await.0,
        202
    );
    assert_eq!(
        post(&c, &gw.url("open"), form, r#"{"id":"f1"}"#).await.0,
        200
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 8);
    assert!(
        gw.metrics()
            .await
            .contains("hookgate_dedup_id_missing_total{source=\"open\"} 11"),
        "counted"
    );
}

/// `parse_json:` a member whose text is JSON is part of the body's form at receive: text that is not
/// JSON is a 400 with the member named, and a dedup path reaches into the document, so the same event
/// posted again as other bytes (re-encoded, or as a JSON body holding the document itself) is a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn parse_json_members_are_checked_and_deduplicated_into() {
    let redis = Redis::start();
    let file = "source: nested\nallow_ips: [127.0.0.0/8]\nparse_json: $.payload\ndedup: { id: $.payload.id }\n";
    let gw = Gateway::start(&redis, &[("nested.yaml", file)], "").await;
    let c = client();
    let url = gw.url("nested");
    let form = "application/x-www-form-urlencoded";
    let (s, b) = post(&c, &url, form, "payload=%7B%22id%22%3A%22e1%22%7D").await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = post(&c, &url, form, "payload=%7B+%22id%22+%3A+%22e1%22+%7D").await;
    assert_eq!(
        (s, b["duplicate"].as_bool(), b["event_id"].as_str()),
        (200, Some(true), Some("e1")),
        "re-encoded"
    );
    let (s, b) = post(&c, &url, "application/json", r#"{"payload":{"id":"e1"}}"#).await;
    assert_eq!(
        (s, b["duplicate"].as_bool()),
        (200, Some(true)),
        "as a document"
    );
    let (s, b) = post(&c, &url, form, "payload=%7B%22id%22").await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed body: `$.payload` is not JSON text")),
        "{b}"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);
}

/// `dedup: { body: true }`: a source whose events carry no id (or a batch of several) is deduplicated by
/// the exact bytes, JSON or form: the same request again is a duplicate named by its hash, another body
/// is a new event, and none of it counts as an id that was missing. An invalid body is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn dedup_on_the_exact_body() {
    let redis = Redis::start();
    let file = "source: bytes\nallow_ips: [127.0.0.0/8]\ndedup: { body: true, ttl: 1h }\n";
    let gw = Gateway::start(&redis, &[("bytes.yaml", file)], "").await;
    let c = client();
    let url = gw.url("bytes");
    let json_ct = "application/json";
    let form = "application/x-www-form-urlencoded";
    let batch = r#"[{"event":"open","sg_event_id":"a"},{"event":"click","sg_event_id":"b"}]"#;
    assert_eq!(post(&c, &url, json_ct, batch).await.0, 202);
    let (s, b) = post(&c, &url, json_ct, batch).await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(batch.as_bytes()));
    assert_eq!(
        (s, b["duplicate"].as_bool(), b["event_id"].as_str()),
        (
            200,
            Some(true),
            Some(format!("body-sha256:{hash}").as_str())
        )
    );
    // The same events in another batch are another body: a new event.
    let rebatched = r#"[{"event":"open","sg_event_id":"a"}]"#;
    assert_eq!(post(&c, &url, json_ct, rebatched).await.0, 202);
    let subscribe = "type=subscribe&data[email]=ada%40example.com";
    assert_eq!(post(&c, &url, form, subscribe).await.0, 202);
    assert_eq!(post(&c, &url, form, subscribe).await.0, 200);
    assert_eq!(post(&c, &url, json_ct, "[1,").await.0, 400, "still checked");
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 3);
    let m = gw.metrics().await;
    assert!(
        !m.contains("hookgate_dedup_id_missing_total{source=\"bytes\"}"),
        "{m}"
    );
}
