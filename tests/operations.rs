//! Running hookgate as Kubernetes does: the admin API behind an address allowlist while probes and
//! scrapes stay open, and SIGTERM to the real binary — readiness fails first, the process exits within
//! its grace, an unfinished delivery stays pending and another replica delivers it. And reading back what
//! was received, on the admin API.

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OPEN: &str = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    create_contact:\n      email: $.email\n";

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.expect("admin request").status().as_u16()
}

/// Outside `admin_allow_ips` the admin API answers 403 even to the right token; health, readiness and
/// metrics stay open. Behind a trusted proxy the forwarded client address is the one checked.
#[tokio::test(flavor = "multi_thread")]
async fn admin_allowlist_guards_the_api_but_not_probes() {
    let redis = Redis::start();
    let c = client();

    let closed = Gateway::start(
        &redis,
        &[("shop.yaml", OPEN)],
        "admin_allow_ips: [10.0.0.0/8, \"fd00::/8\"]\n",
    )
    .await;
    let r = c
        .get(closed.admin_url("/v1/sources"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /v1/sources");
    assert_eq!(r.status().as_u16(), 403, "right token, wrong address");
    let body: serde_json::Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        status(c.post(closed.admin_url("/v1/mappings/reload"))).await,
        403,
        "checked before the token"
    );
    // A sender-chosen X-Forwarded-For is ignored when the peer is not a trusted proxy.
    assert_eq!(
        status(
            c.get(closed.admin_url("/v1/sources"))
                .bearer_auth(ADMIN_TOKEN)
                .header("x-forwarded-for", "10.1.2.3")
        )
        .await,
        403
    );
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(c.get(closed.admin_url(open))).await, 200, "{open}");
    }
    closed.stop().await.expect("stop");

    let local = Gateway::start(
        &redis,
        &[("shop.yaml", OPEN)],
        "admin_allow_ips: [127.0.0.1/32]\n",
    )
    .await;
    let url = local.admin_url("/v1/sources");
    assert_eq!(status(c.get(&url).bearer_auth(ADMIN_TOKEN)).await, 200);
    assert_eq!(status(c.get(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(status(c.get(&url)).await, 401);
    local.stop().await.expect("stop");

    let proxied = Gateway::start(
        &redis,
        &[("shop.yaml", OPEN)],
        "admin_allow_ips: [203.0.113.0/24]\ntrusted_proxies: [127.0.0.0/8]\n",
    )
    .await;
    let url = proxied.admin_url("/v1/sources");
    let via = |client_ip: &'static str| {
        c.get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("x-forwarded-for", client_ip)
    };
    assert_eq!(status(via("203.0.113.7")).await, 200);
    assert_eq!(status(via("198.51.100.1")).await, 403);
    assert_eq!(
        status(c.get(&url).bearer_auth(ADMIN_TOKEN)).await,
        403,
        "the proxy itself is not in the list"
    );
    proxied.stop().await.expect("stop");
}

/// Mapping files that cannot start a gateway are a configuration error: `serve` lists the problems with
/// their places and exits 2, as for the config file, before binding anything.
/// `hookgate serve` on a config it refuses before serving: its exit status and what it printed. Redis is
/// an unused port: nothing it could find there matters.
fn serve_refused(config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("HOOKGATE_ADMIN_TOKEN", "t")
        .env("HOOKGATE_REDIS_URL", "redis://127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .expect("run hookgate serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_exits_2_on_invalid_mappings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).expect("mkdir");
    std::fs::write(
        mappings.join("shop.yaml"),
        "source: shop\nallow_ips: [nowhere]\n",
    )
    .expect("write mapping");
    let config = dir.path().join("hookgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nmappings_dir: {}\n",
            mappings.display()
        ),
    )
    .expect("write config");
    let (code, err) = serve_refused(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("shop.yaml:2:13: allow_ips"), "{err}");

    // A secret that cannot be read when serving is reported at its option, not at `source:`.
    std::fs::write(
        mappings.join("shop.yaml"),
        "source: shop\nverify: { preset: stripe, secret: \"${file:/nonexistent/hookgate-secret}\" }\n",
    )
    .expect("write mapping");
    let (code, err) = serve_refused(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("shop.yaml:2:27: verify: secret: secret file /nonexistent/hookgate-secret cannot be read"),
        "{err}"
    );

    // Every other file the configuration names is a configuration error too (exit 2, not 1): a
    // subscriptions_file that does not validate, and one that cannot be read (said where it is named).
    std::fs::write(
        mappings.join("shop.yaml"),
        "source: shop\nallow_ips: [127.0.0.0/8]\n",
    )
    .expect("write mapping");
    let subs = dir.path().join("subscriptions.yaml");
    std::fs::write(&subs, "- id: a\n  url: ftp://nowhere\n").expect("write subscriptions");
    for (file, says) in [
        (subs.clone(), "subscriptions_file is not valid"),
        (
            dir.path().join("missing.yaml"),
            "hookgate.yaml:4:21: subscriptions_file: cannot read",
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nmappings_dir: {}\nsubscriptions_file: {}\n",
                mappings.display(),
                file.display()
            ),
        )
        .expect("write config");
        let (code, err) = serve_refused(&config);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(says), "{says} in {err}");
    }
}

/// A connection Redis closed (a restart, a proxy's idle cut) is noticed only when a command fails on it.
/// An admin read that meets it is sent again on the new connection: the operator gets the page, not a 503.
#[tokio::test(flavor = "multi_thread")]
async fn admin_reads_survive_a_connection_redis_closed() {
    let redis = Redis::start();
    let c = client();
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", OPEN)],
        "outbound: { timeout: 3s }\n",
    )
    .await;
    let reads = [
        "/v1/dead-letters",
        "/v1/deliveries",
        "/v1/outbound/dead-letters",
        "/v1/subscriptions",
    ];
    for path in reads {
        let url = gw.admin_url(path);
        assert_eq!(
            status(c.get(&url).bearer_auth(ADMIN_TOKEN)).await,
            200,
            "{path}"
        );
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(&mut redis.conn())
            .expect("CLIENT KILL");
        assert!(killed >= 1, "the gateway's connections were closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = c
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin read");
        let code = r.status().as_u16();
        assert_eq!(
            code,
            200,
            "{path} after the cut: {}",
            r.text().await.unwrap_or_default()
        );
    }
    gw.stop().await.expect("stop");
}

/// A TCP server that reads requests and never answers: an upstream slower than any grace period.
/// Sends each request's head on `seen`.
async fn hanging_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = Vec::new();
            // Read until the end of the head; then keep the socket open without answering.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
            held.push(s);
        }
    });
    (addr, rx)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn xpending(redis: &Redis) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg("hookgate:inbound")
        .arg("mappers")
        .query(&mut redis.conn())
        .expect("XPENDING");
    match v {
        redis::Value::Array(v) => redis::from_redis_value::<u64>(v[0].clone()).expect("count"),
        other => panic!("{other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_fails_readiness_then_drains_and_leaves_the_rest_to_another_replica() {
    let redis = Redis::start();
    let (upstream, mut seen) = hanging_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).expect("mkdir");
    std::fs::write(mappings.join("shop.yaml"), OPEN).expect("write mapping");
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("hookgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin_listen: 127.0.0.1:{admin}\nredis_url: {}\nmappings_dir: {}\n\
             upstream: {{ url: \"http://{upstream}\", headers: {{ api-key: \"${{env:UPSTREAM_KEY}}\" }} }}\n\
             deliver: {{ timeout: 30s }}\nshutdown_delay: 1s\nshutdown_grace: 1s\n\
             log: {{ format: json, level: \"hookgate=debug,tower_http=debug,warn\" }}\n",
            redis.url(),
            mappings.display()
        ),
    )
    .expect("write config");
    let log_path = dir.path().join("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOKGATE_ADMIN_TOKEN", "admin-token-never-logged")
        .env("UPSTREAM_KEY", "upstream-key-never-logged")
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start hookgate serve");
    let c = client();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = c.get(&ready).send().await {
            if r.status().as_u16() == 200 {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "hookgate serve never became ready");

    let r = c
        .post(format!("http://127.0.0.1:{listen}/webhooks/shop"))
        .header("content-type", "application/json")
        .body(r#"{"email":"drain@example.org"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    let answer: serde_json::Value = r.json().await.expect("JSON answer");
    let event_id = answer["id"].as_str().expect("stored id").to_string();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the delivery reached the upstream")
        .expect("upstream head");
    let key = header(&first, "idempotency-key")
        .expect("Idempotency-Key")
        .to_string();

    let pid = i32::try_from(child.id()).expect("pid");
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.get(&ready).send().await.expect("readyz while draining");
    assert_eq!(r.status().as_u16(), 503, "unready first");
    assert_eq!(r.text().await.unwrap_or_default(), "shutting down\n");

    let code = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM (delay 1 s + grace 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = sent.elapsed();
    assert!(code.success(), "exit status {code:?}");
    assert!(
        took >= Duration::from_secs(1),
        "the listeners waited shutdown_delay: {took:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .is_err(),
        "no listener after exit"
    );
    // The delivery that outlived the grace is neither acknowledged nor dead: it waits for another replica.
    assert_eq!(xpending(&redis), 1, "left pending");
    let dead: u64 = redis::cmd("XLEN")
        .arg("hookgate:dead:inbound")
        .query(&mut redis.conn())
        .expect("XLEN");
    assert_eq!(dead, 0);

    let mut text = String::new();
    std::fs::File::open(&log_path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read log");
    for secret in ["admin-token-never-logged", "upstream-key-never-logged"] {
        assert!(!text.contains(secret), "a secret in the log:\n{text}");
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| {
            let l = l.to_string();
            l.contains(&format!("\"request_id\":\"{request_id}\""))
                && l.contains(&format!("\"event_id\":\"{event_id}\""))
        }),
        "the request id and the stored event id are in the JSON log:\n{text}"
    );
    assert!(
        text.contains("shutdown grace over"),
        "the drain said what it left:\n{text}"
    );

    // Another replica reclaims the pending entry once it is idle long enough and delivers it, under the
    // same idempotency key.
    let next = RecordingUpstream::start().await;
    let other = Gateway::start(
        &redis,
        &[("shop.yaml", OPEN)],
        &format!(
            "upstream: {{ url: \"{}\" }}\ndeliver: {{ timeout: 500ms }}\n",
            next.url()
        ),
    )
    .await;
    assert!(next.wait_delivered(1, 20).await, "reclaimed and delivered");
    let got = next.delivered();
    assert_eq!(got[0].body["email"], "drain@example.org");
    assert_eq!(
        got[0].headers.get("idempotency-key").map(String::as_str),
        Some(key.as_str())
    );
    for _ in 0..100 {
        if xpending(&redis) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(xpending(&redis), 0, "acknowledged by the other replica");
    other.stop().await.expect("stop");
}

/// `GET /v1/inbound/events`: what was received, newest first, filtered by source or the sender's id,
/// paged; `GET /v1/inbound/events/{id}`: one event with its headers and its body byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn received_webhooks_are_read_back_newest_first() {
    let redis = Redis::start();
    let head =
        |name: &str| format!("source: {name}\nallow_ips: [127.0.0.0/8]\ndedup: {{ id: $.id }}\n");
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", &head("shop")), ("crm.yaml", &head("crm"))],
        "",
    )
    .await;
    let sent = [
        ("shop", r#"{"id":"s1","email":"a@example.org"}"#),
        ("crm", r#"{"id": "c1", "note": "caf\u00e9 \"quoted\""}"#),
        ("shop", r#"{"id":"s2"}"#),
        ("crm", r#"{"id":"c2"}"#),
    ];
    let mut ids = Vec::new();
    for (source, body) in sent {
        let r = client()
            .post(gw.url(source))
            .header("content-type", "application/json")
            .header("authorization", "Bearer not-to-be-kept")
            .header("x-trace", "t-1")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), 202);
        let v: serde_json::Value = r.json().await.expect("json");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    let list = |query: &str| {
        let path = format!("/v1/inbound/events{query}");
        let gw = &gw;
        async move { admin_call(gw, "GET", &path, None).await }
    };
    let event_ids = |v: &serde_json::Value| -> Vec<String> {
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                e["event"]["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };

    let (s, all) = list("").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(event_ids(&all), ["c2", "s2", "c1", "s1"]);
    assert_eq!(all["next"], serde_json::Value::Null);
    let newest = &all["events"][0];
    assert_eq!(newest["id"], ids[3].as_str());
    assert_eq!(newest["source"], "crm");
    assert_eq!(newest["size"], sent[3].1.len());
    assert!(
        newest["event"].get("body").is_none(),
        "a listing leaves bodies out: {newest}"
    );

    let (_, shop) = list("?source=shop").await;
    assert_eq!(event_ids(&shop), ["s2", "s1"]);
    let (_, one) = list("?event_id=c1").await;
    assert_eq!(event_ids(&one), ["c1"]);
    let (_, none) = list("?source=shop&event_id=c1").await;
    assert_eq!(event_ids(&none), Vec::<String>::new());

    // One at a time: every event once, in the same order, and the last page says there is no next;
    // with a filter too, whose pages pass over the entries it does not match.
    let pages = |query: &'static str| {
        let list = &list;
        async move {
            let mut paged = Vec::new();
            let mut after = String::new();
            loop {
                let (s, page) = list(&format!("?limit=1{query}{after}")).await;
                assert_eq!(s, 200, "{page}");
                paged.extend(event_ids(&page));
                match page["next"].as_str() {
                    Some(next) => after = format!("&after={next}"),
                    None => return paged,
                }
                assert!(paged.len() <= 4, "paging does not end: {paged:?}");
            }
        }
    };
    assert_eq!(pages("").await, ["c2", "s2", "c1", "s1"]);
    assert_eq!(pages("&source=shop").await, ["s2", "s1"]);
    // An empty filter is none; the first possible id has nothing after it.
    let (_, empty) = list("?source=").await;
    assert_eq!(event_ids(&empty), ["c2", "s2", "c1", "s1"]);
    let (s, last) = list("?after=0-0").await;
    assert_eq!((s, event_ids(&last)), (200, Vec::<String>::new()));

    // One in full: the body as it arrived, the headers kept for mapping and audit, without credentials.
    let (s, full) = admin_call(&gw, "GET", &format!("/v1/inbound/events/{}", ids[1]), None).await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["event"]["body"], sent[1].1);
    assert_eq!(full["event"]["client_ip"], "127.0.0.1");
    assert_eq!(full["event"]["content_type"], "application/json");
    assert_eq!(full["event"]["headers"]["x-trace"], "t-1");
    assert!(
        full["event"]["headers"].get("authorization").is_none(),
        "{full}"
    );
    assert!(
        full["event"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{full}"
    );

    // Refusals: an id that is no entry, a cursor that is none, a misspelt filter, no token.
    for (path, want) in [
        ("/v1/inbound/events/1-0".to_string(), 404),
        ("/v1/inbound/events/evt_1".to_string(), 404),
        ("/v1/inbound/events?after=xyz".to_string(), 400),
        ("/v1/inbound/events?sourc=shop".to_string(), 400),
    ] {
        let (s, v) = admin_call(&gw, "GET", &path, None).await;
        assert_eq!(s, want, "{path}: {v}");
    }
    let s = status(client().get(gw.admin_url("/v1/inbound/events"))).await;
    assert_eq!(s, 401);

    // A body that is not UTF-8 (a Latin-1 form) is given as base64, byte for byte.
    let latin1: &[u8] = b"id=f1&name=caf\xe9";
    let r = client()
        .post(gw.url("shop"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
        )
        .body(latin1)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let v: serde_json::Value = r.json().await.expect("json");
    let path = format!("/v1/inbound/events/{}", v["id"].as_str().expect("id"));
    let (_, form) = admin_call(&gw, "GET", &path, None).await;
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(latin1);
    assert_eq!(form["event"]["body_base64"], expected.as_str(), "{form}");
    assert_eq!(form["event"]["event_id"], "f1");

    // A listing looks at SCAN_LIMIT entries at most, and says where it stopped: with more newer
    // entries than that, a search for the oldest event takes two calls and finds it.
    let mut c = redis.conn();
    let mut pipe = redis::pipe();
    for i in 0..hookgate::deliver::SCAN_LIMIT {
        pipe.cmd("XADD")
            .arg("hookgate:inbound")
            .arg("*")
            .arg("source")
            .arg("filler")
            .arg("body")
            .arg(format!("{{\"n\":{i}}}"))
            .ignore();
    }
    let () = pipe.query(&mut c).expect("XADD fillers");
    let (s, first) = list("?event_id=s1").await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(event_ids(&first), Vec::<String>::new());
    let next = first["next"]
        .as_str()
        .expect("a next page after the scan limit");
    let (_, second) = list(&format!("?event_id=s1&after={next}")).await;
    assert_eq!(event_ids(&second), ["s1"]);
    assert_eq!(second["next"], serde_json::Value::Null);
}
