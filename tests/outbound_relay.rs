//! The outbound relay end to end: real Redis, the real gateway in-process, subscribers that are real HTTP
//! servers on 127.0.0.1; what they receive is verified with the official `standardwebhooks` library.

mod common;

use common::subscriber::{verify_with_standardwebhooks, Subscriber};
use common::{admin_call as call, client, Gateway, Redis, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Retries compressed to milliseconds; loopback subscribers allowed.
const CFG: &str = "outbound: { retry_base: 100ms, retry_max: 300ms, give_up_after: 1500ms, timeout: 3s, connect_timeout: 1s }\negress: { allow: [127.0.0.0/8], allow_http: true }\n";

async fn subscribe(gw: &Gateway, body: Value) -> Value {
    let (s, v) = call(gw, "POST", "/v1/subscriptions", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn publish(gw: &Gateway, body: Value) -> Value {
    let (s, v) = call(gw, "POST", "/v1/events", Some(body)).await;
    assert_eq!(s, 202, "{v}");
    v
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A subscription's stored spec with its bearer token turned into a reference, as an older version stored
/// API subscriptions: unusable once loaded.
fn spec_with_a_reference(c: &mut redis::Connection, id: &str) -> Value {
    let raw: String = redis::cmd("HGET")
        .arg("hookgate:subscriptions")
        .arg(id)
        .query(c)
        .unwrap();
    let mut spec: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(spec["auth"]["token"], "t-1", "the stored shape: {spec}");
    spec["auth"]["token"] = json!("${env:PATH}");
    spec
}

/// PATCH a subscription's bearer token: the fix for an unusable one.
async fn patch_token(gw: &Gateway, path: &str, token: &str) -> Value {
    let (s, v) = call(
        gw,
        "PATCH",
        path,
        Some(json!({"auth": {"type": "bearer", "token": token}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn secret() -> String {
    hookgate::outbound::subscription::generate_secret()
}

#[tokio::test]
async fn publishing_validates_stores_and_dedups() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let r = client()
        .post(gw.admin_url("/v1/events"))
        .json(&json!({"type": "contact.created", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "publishing needs the admin token");
    for (body, want) in [
        (json!({"type": "has space", "data": {}}), 422),
        (json!({"type": "contact.created"}), 422),
        (
            json!({"type": "contact.created", "data": {}, "occurred_at": "yesterday"}),
            422,
        ),
        (
            json!({"type": "contact.created", "data": {}, "extra": 1}),
            422,
        ),
    ] {
        let (s, v) = call(&gw, "POST", "/v1/events", Some(body.clone())).await;
        assert_eq!(s, want, "{body} → {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let r = client()
        .post(gw.admin_url("/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Past the admin API's 2 MiB body limit: 413 in the same JSON as every other error.
    let r = client()
        .post(gw.admin_url("/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.expect("a JSON 413");
    assert_eq!(v["error"], "too_large", "{v}");
    assert_eq!(
        v["message"], "body larger than the 2097152 byte limit",
        "{v}"
    );

    let e = json!({"type": "contact.created", "account": "acme", "id": "evt_1", "occurred_at": "2026-01-31T12:00:00Z", "data": {"email": "a@example.org"}});
    let first = publish(&gw, e.clone()).await;
    assert_eq!(first["id"], "evt_1");
    assert_eq!(first["duplicate"], false);
    let again = publish(&gw, e).await;
    assert_eq!(again["duplicate"], true, "a producer id is deduplicated");
    assert_eq!(again["stream_id"], first["stream_id"]);
    // Within its account: the same id from another account (or none) is another event.
    for other in [json!("globex"), Value::Null] {
        let mut e = json!({"type": "invoice.paid", "id": "evt_1", "data": {}});
        if !other.is_null() {
            e["account"] = other;
        }
        let r = publish(&gw, e).await;
        assert_eq!(r["duplicate"], false, "{r}");
        assert_ne!(r["stream_id"], first["stream_id"]);
    }
    let anon = publish(&gw, json!({"type": "contact.deleted", "data": {"n": 1}})).await;
    assert_eq!(
        anon["id"], anon["stream_id"],
        "without a producer id the stream id names the event"
    );

    let mut c = redis.conn();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("hookgate:events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(entries.ids.len(), 4, "the duplicate was not stored twice");
    let f = &entries.ids[0];
    let get = |k: &str| redis::from_redis_value::<String>(f.map[k].clone()).unwrap();
    assert_eq!(get("type"), "contact.created");
    assert_eq!(get("account"), "acme");
    assert_eq!(get("id"), "evt_1");
    assert_eq!(
        serde_json::from_str::<Value>(&get("data")).unwrap(),
        json!({"email": "a@example.org"})
    );

    drop(redis);
    let (s, _) = call(
        &gw,
        "POST",
        "/v1/events",
        Some(json!({"type": "contact.created", "data": {}})),
    )
    .await;
    assert_eq!(s, 503, "Redis down: the publisher is told to retry");
}

#[tokio::test]
async fn subscriptions_are_validated_listed_masked_and_limited() {
    let redis = Redis::start();
    let cfg = format!("{CFG}\n");
    let cfg = cfg.replace(
        "outbound: {",
        "outbound: { max_subscriptions_per_account: 2,",
    );
    let gw = Gateway::start(&redis, &[], &cfg).await;
    let sub = Subscriber::start().await;
    let (s, _) = call(&gw, "GET", "/v1/subscriptions", None).await;
    assert_eq!(s, 200);
    let r = client()
        .get(gw.admin_url("/v1/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let base =
        json!({"account": "acme", "name": "crm", "url": sub.url("/hook"), "events": ["contact.*"]});
    let bad = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, needle) in [
        (bad(json!({"url": "ftp://127.0.0.1/x"})), "scheme"),
        (bad(json!({"url": "not a url"})), "url"),
        (bad(json!({"url": "https://10.0.0.1/hook"})), "url"),
        (
            bad(json!({"url": "http://169.254.169.254/latest/meta-data"})),
            "url",
        ),
        (
            bad(json!({"url": "https://user:pw@127.0.0.1/hook"})),
            "auth",
        ),
        (bad(json!({"events": ["has space"]})), "events"),
        (bad(json!({"events": []})), "events"),
        (
            bad(json!({"filter": {"path": "$.data.x", "equal": 1}})),
            "equal",
        ),
        (
            bad(json!({"template": {"text": "{{ $.data.x"}})),
            "template",
        ),
        (bad(json!({"secret": "whsec_!!"})), "secret"),
        (bad(json!({"headers": {"user-agent": "x"}})), "headers"),
        (
            bad(json!({"auth": {"type": "bearer", "token": ""}})),
            "auth.token",
        ),
        (bad(json!({"id": "mine"})), "id"),
        // Through the API a credential is the value itself: a reference would send hookgate's own
        // environment or files to the subscriber.
        (
            bad(json!({"auth": {"type": "bearer", "token": "${env:PATH}"}})),
            "subscriptions_file",
        ),
        (
            bad(
                json!({"auth": {"type": "basic", "username": "u", "password": "${file:/etc/hostname}"}}),
            ),
            "subscriptions_file",
        ),
        (
            bad(json!({"headers": {"x-note": "${file:/etc/hostname}"}})),
            "subscriptions_file",
        ),
        (bad(json!({"secret": "${env:PATH}"})), "subscriptions_file"),
        // Accepted before, then skipped when loaded: nothing was ever delivered to it.
        (
            bad(json!({"auth": {"type": "bearer", "token": "bad\nvalue"}})),
            "auth",
        ),
        (bad(json!({"name": "a\u{1b}b"})), "control"),
        (
            bad(json!({"url": format!("{}?t={}", sub.url("/hook"), "a".repeat(4096))})),
            "4096",
        ),
        (bad(json!({"url": "http://127.0.0.1:0/hook"})), "port 0"),
        (bad(json!({"rate_limit": 1e-300})), "rate_limit"),
        // The URL parser would drop the line break; the stored URL would not be the one delivered to.
        (
            bad(json!({"url": format!("{}\n", sub.url("/hook"))})),
            "line break",
        ),
        // serde reads a struct from an array of its fields; no client means that.
        (
            json!(["acme", "crm", sub.url("/hook"), ["contact.*"]]),
            "JSON object",
        ),
    ] {
        let (s, v) = call(&gw, "POST", "/v1/subscriptions", Some(body.clone())).await;
        assert_eq!(s, 422, "{body} → {v}");
        let m = v["message"].as_str().unwrap_or("");
        assert!(m.contains(needle), "{needle:?} not in {m:?}");
    }

    let created = subscribe(
        &gw,
        bad(
            json!({"auth": {"type": "basic", "username": "u", "password": "hunter2"}, "headers": {"x-api-key": "k-123", "cookie": "session=c-456", "x-team": "growth"}}),
        ),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let full = created["secret"].as_str().unwrap().to_string();
    assert!(
        full.starts_with("whsec_"),
        "a secret is generated: {created}"
    );
    assert_eq!(
        hookgate::outbound::subscription::signing_key(&full)
            .unwrap()
            .len(),
        32
    );
    let (_, shown) = call(&gw, "GET", &format!("/v1/subscriptions/{id}"), None).await;
    let text = shown.to_string();
    assert!(
        !text.contains(&full),
        "the secret is shown only once: {text}"
    );
    for value in ["hunter2", "k-123", "c-456", "growth"] {
        assert!(
            !text.contains(value),
            "every credential and header value is masked: {text}"
        );
    }
    assert_eq!(shown["headers"]["x-team"], "***");
    assert_eq!(shown["headers"]["cookie"], "***");
    assert_eq!(shown["unusable"], Value::Null);
    assert_eq!(shown["origin"], "api");
    assert_eq!(shown["active"], true);

    subscribe(&gw, bad(json!({"name": "second"}))).await;
    let (s, v) = call(
        &gw,
        "POST",
        "/v1/subscriptions",
        Some(bad(json!({"name": "third"}))),
    )
    .await;
    assert_eq!(s, 409, "the per-account limit holds: {v}");
    subscribe(&gw, bad(json!({"account": "beta"}))).await;
    subscribe(&gw, bad(json!({"account": null}))).await;

    let (_, l) = call(&gw, "GET", "/v1/subscriptions?account=acme", None).await;
    assert_eq!(l["subscriptions"].as_array().unwrap().len(), 2);
    let (_, l) = call(&gw, "GET", "/v1/subscriptions?account=", None).await;
    assert_eq!(
        l["subscriptions"].as_array().unwrap().len(),
        1,
        "empty account: those without one"
    );
    let (_, l) = call(&gw, "GET", "/v1/subscriptions", None).await;
    assert_eq!(l["subscriptions"].as_array().unwrap().len(), 4);

    let (s, v) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{id}"),
        Some(json!({"name": "renamed", "events": ["contact.created"]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "renamed");
    assert!(v.get("secret").is_none(), "no rotation, no secret");
    let (s, _) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{id}"),
        Some(json!({"account": "beta"})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{id}"),
        Some(json!({"url": "https://192.168.1.1/"})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, v) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{id}"),
        Some(json!({"headers": {"x-a": "${file:/nonexistent}"}})),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = call(&gw, "DELETE", &format!("/v1/subscriptions/{id}"), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&gw, "GET", &format!("/v1/subscriptions/{id}"), None).await;
    assert_eq!(s, 404);

    // Plain http needs egress.allow_http.
    let strict = Gateway::start(
        &redis,
        &[],
        "outbound: {}\negress: { allow: [127.0.0.0/8] }\nkey_prefix: strict\n",
    )
    .await;
    let (s, v) = call(&strict, "POST", "/v1/subscriptions", Some(base.clone())).await;
    assert_eq!(s, 422);
    let m = v["message"].as_str().unwrap();
    assert_eq!(m.matches("allow_http").count(), 1, "said once: {m}");
    // Where plain http is allowed, a refused address gets no hint about it.
    let (s, v) = call(
        &gw,
        "POST",
        "/v1/subscriptions",
        Some(bad(json!({"url": "http://10.0.0.1/hook"}))),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        !v["message"].as_str().unwrap().contains("allow_http"),
        "{v}"
    );
}

/// A subscription stored with a `${...}` reference before the API refused them is not loaded (its
/// reference would send hookgate's own environment to a URL an API caller chose), and the API says why
/// instead of showing it active. Setting the value itself through PATCH brings it back.
#[tokio::test]
async fn a_stored_reference_is_not_resolved_and_the_api_says_why() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let created = subscribe(
        &gw,
        json!({"name": "legacy", "url": sub.url("/hook"), "events": ["contact.created"], "auth": {"type": "bearer", "token": "t-1"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut c = redis.conn();
    let spec = spec_with_a_reference(&mut c, &id);
    redis::cmd("HSET")
        .arg("hookgate:subscriptions")
        .arg(&id)
        .arg(spec.to_string())
        .query::<()>(&mut c)
        .unwrap();
    redis::cmd("INCR")
        .arg("hookgate:subscriptions:version")
        .query::<()>(&mut c)
        .unwrap();
    let path = format!("/v1/subscriptions/{id}");
    let mut shown = Value::Null;
    wait_for("the reload to skip it", 10, async || {
        shown = call(&gw, "GET", &path, None).await.1;
        shown["active"] == false
    })
    .await;
    let why = shown["unusable"].as_str().unwrap_or_default();
    assert!(why.contains("reference"), "{shown}");
    let (_, l) = call(&gw, "GET", "/v1/subscriptions", None).await;
    assert_eq!(l["subscriptions"][0]["unusable"], why, "{l}");
    let (s, v) = call(
        &gw,
        "POST",
        &format!("{path}/test"),
        Some(json!({"type": "contact.created"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("reference"), "{v}");
    publish(&gw, json!({"type": "contact.created", "data": {"n": 1}})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(sub.received().is_empty(), "nothing sent while unusable");

    let v = patch_token(&gw, &path, "t-2").await;
    assert_eq!(v["active"], true, "{v}");
    publish(&gw, json!({"type": "contact.created", "data": {"n": 2}})).await;
    assert!(sub.wait_received(1, 10).await, "delivered again");
    let got = sub.received();
    assert_eq!(
        got.len(),
        1,
        "the event published while unusable was not held for it"
    );
    assert_eq!(got[0].headers["authorization"], "Bearer t-2");
}

#[tokio::test]
async fn deliveries_verify_with_standardwebhooks_and_rotation_signs_with_both() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let old = secret();
    let created = subscribe(
        &gw,
        json!({"name": "crm", "url": sub.url("/hook"), "events": ["contact.*"], "secret": old,
               "auth": {"type": "bearer", "token": "tok-1"}, "headers": {"x-team": "growth"}}),
    )
    .await;
    assert_eq!(created["secret"], old.as_str());
    publish(&gw, json!({"type": "contact.created", "occurred_at": "2026-01-31T12:00:00Z", "data": {"email": "a@example.org"}})).await;
    publish(
        &gw,
        json!({"type": "email.opened", "data": {"email": "b@example.org"}}),
    )
    .await;
    assert!(sub.wait_delivered(1, 10).await, "delivered");
    let got = sub.delivered();
    let r = &got[0];
    assert_eq!(
        verify_with_standardwebhooks(&old, &got),
        vec![None],
        "standardwebhooks accepts it"
    );
    assert_eq!(
        verify_with_standardwebhooks(&secret(), &got)
            .iter()
            .filter(|v| v.is_some())
            .count(),
        1,
        "and refuses another secret"
    );
    assert_eq!(
        r.json(),
        json!({"type": "contact.created", "timestamp": "2026-01-31T12:00:00.000Z", "data": {"email": "a@example.org"}})
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("user-agent").starts_with("hookgate/"));
    assert_eq!(r.header("authorization"), "Bearer tok-1");
    assert_eq!(r.header("x-team"), "growth");
    assert!(r.header("webhook-id").starts_with("msg_"));
    let ts: u64 = r.header("webhook-timestamp").parse().unwrap();
    assert!(ts.abs_diff(common::now_secs()) < 30);

    let (s, v) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{}", created["id"].as_str().unwrap()),
        Some(json!({"rotate_secret": "yes"})),
    )
    .await;
    assert_eq!(
        s, 422,
        "only true rotates, and anything but a boolean is refused: {v}"
    );
    let (s, rotated) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{}", created["id"].as_str().unwrap()),
        Some(json!({"rotate_secret": true})),
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    publish(
        &gw,
        json!({"type": "contact.updated", "data": {"email": "c@example.org"}}),
    )
    .await;
    assert!(sub.wait_delivered(2, 10).await);
    let got = sub.delivered();
    assert_eq!(got.len(), 2, "email.opened is outside the patterns");
    let last = &got[1..];
    assert_eq!(
        last[0].header("webhook-signature").split(' ').count(),
        2,
        "old and new sign during the overlap"
    );
    assert_eq!(verify_with_standardwebhooks(&new, last), vec![None]);
    assert_eq!(verify_with_standardwebhooks(&old, last), vec![None]);
}

#[tokio::test]
async fn accounts_globs_filters_templates_and_forms() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let mk = |name: &str, extra: Value| {
        let mut b =
            json!({"name": name, "url": sub.url(&format!("/{name}")), "events": ["contact.*"]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    subscribe(&gw, mk("acme", json!({"account": "acme"}))).await;
    subscribe(&gw, mk("beta", json!({"account": "beta"}))).await;
    subscribe(
        &gw,
        mk(
            "list5",
            json!({"events": ["contact.created"], "filter": {"path": "$.data.list", "equals": 5}}),
        ),
    )
    .await;
    subscribe(
        &gw,
        mk(
            "slack",
            json!({"events": ["*"], "template": {"text": "{{ $.type }}: {{ $.data.email }}"}}),
        ),
    )
    .await;
    subscribe(
        &gw,
        mk(
            "form",
            json!({"events": ["contact.created"], "format": "form"}),
        ),
    )
    .await;
    let events = [
        json!({"type": "contact.created", "account": "acme", "data": {"email": "1@x.org", "list": 5}}),
        json!({"type": "contact.updated", "account": "beta", "data": {"email": "2@x.org"}}),
        json!({"type": "contact.created", "data": {"email": "3@x.org", "list": 5}}),
        json!({"type": "contact.created", "data": {"email": "4@x.org", "list": 6}}),
        json!({"type": "email.opened", "data": {"email": "5@x.org"}}),
    ];
    for e in events {
        publish(&gw, e).await;
    }
    // acme 1, beta 1, list5 1, slack 3, form 2
    assert!(
        sub.wait_delivered(8, 10).await,
        "{:?}",
        sub.received().len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sub.delivered();
    let at = |p: &str| -> Vec<_> { got.iter().filter(|r| r.path == p).cloned().collect() };
    let emails = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = at(p)
            .iter()
            .map(|r| {
                let j = r.json();
                j["data"]["email"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| j["text"].as_str().unwrap_or("").to_string())
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        emails("/acme"),
        ["1@x.org"],
        "an account's events go only to its subscriptions"
    );
    assert_eq!(emails("/beta"), ["2@x.org"]);
    assert_eq!(
        emails("/list5"),
        ["3@x.org"],
        "the filter holds; no account means no account"
    );
    assert_eq!(
        emails("/slack"),
        [
            "contact.created: 3@x.org",
            "contact.created: 4@x.org",
            "email.opened: 5@x.org"
        ]
    );
    let forms = at("/form");
    assert_eq!(forms.len(), 2);
    assert_eq!(
        forms[0].header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let body = String::from_utf8_lossy(&forms[0].body).to_string();
    let pairs: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(pairs["type"], "contact.created");
    assert!(pairs["data[email]"].ends_with("@x.org"), "{body}");
    assert!(pairs.contains_key("timestamp"));
    assert_eq!(got.len(), 8, "nothing else was delivered");
}

#[tokio::test]
async fn failures_are_retried_until_delivered_and_every_attempt_is_recorded() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    sub.plan_one(500, None, "boom");
    sub.plan_one(503, Some(("retry-after", "1")), "busy");
    sub.plan_one(502, None, "bad gateway");
    let created = subscribe(
        &gw,
        json!({"name": "flaky", "url": sub.url("/hook"), "events": ["contact.created"]}),
    )
    .await;
    let sid = created["id"].as_str().unwrap();
    publish(
        &gw,
        json!({"type": "contact.created", "data": {"email": "a@example.org"}}),
    )
    .await;
    assert!(sub.wait_delivered(1, 15).await, "delivered in the end");
    let got = sub.received();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 502, 200]
    );
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "webhook-id is stable across retries");
    let gap = got[2].at - got[1].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 honoured (waited {gap:?})"
    );

    let mut list = Value::Null;
    wait_for("the delivery to be recorded delivered", 5, async || {
        list = call(
            &gw,
            "GET",
            &format!("/v1/deliveries?subscription={sid}"),
            None,
        )
        .await
        .1;
        list["deliveries"][0]["status"] == "delivered"
    })
    .await;
    let d = &list["deliveries"][0];
    assert_eq!(d["attempts"], 4);
    assert_eq!(d["id"].as_str(), ids.iter().next().copied());
    let (_, one) = call(
        &gw,
        "GET",
        &format!("/v1/deliveries/{}", d["id"].as_str().unwrap()),
        None,
    )
    .await;
    let log = one["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.iter()
            .map(|a| a["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [500, 503, 502, 200]
    );
    assert_eq!(log[0]["response"], "boom", "the response body is kept");
    assert!(log
        .iter()
        .all(|a| a["latency_ms"].is_u64() && a["at"].is_string()));
    assert_eq!(one["event"]["data"]["email"], "a@example.org");
    let (_, filtered) = call(
        &gw,
        "GET",
        &format!("/v1/deliveries?subscription={sid}&status=failed"),
        None,
    )
    .await;
    assert_eq!(filtered["deliveries"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn gone_disables_the_subscription_and_announces_it() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let watcher = Subscriber::start().await;
    sub.plan(&[410]);
    let created = subscribe(&gw, json!({"account": "acme", "name": "gone", "url": sub.url("/hook"), "events": ["contact.*"]})).await;
    subscribe(&gw, json!({"account": "acme", "name": "ops", "url": watcher.url("/ops"), "events": ["subscription.disabled"]})).await;
    let sid = created["id"].as_str().unwrap();
    publish(
        &gw,
        json!({"type": "contact.created", "account": "acme", "data": {}}),
    )
    .await;
    assert!(
        watcher.wait_delivered(1, 10).await,
        "subscription.disabled was published to the account"
    );
    let note = watcher.delivered()[0].json();
    assert_eq!(note["type"], "subscription.disabled");
    assert_eq!(note["data"]["subscription"], sid);
    let (_, v) = call(&gw, "GET", &format!("/v1/subscriptions/{sid}"), None).await;
    assert_eq!(v["active"], false);
    assert!(
        v["disabled_reason"].as_str().unwrap().contains("410"),
        "{v}"
    );
    let (_, l) = call(
        &gw,
        "GET",
        &format!("/v1/deliveries?subscription={sid}"),
        None,
    )
    .await;
    assert_eq!(l["deliveries"][0]["status"], "failed");
    assert_eq!(l["deliveries"][0]["reason"], "gone");
    assert_eq!(l["deliveries"][0]["attempts"], 1, "410 is not retried");

    publish(
        &gw,
        json!({"type": "contact.updated", "account": "acme", "data": {}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sub.received().len(),
        1,
        "a disabled subscription gets nothing"
    );

    let (s, v) = call(
        &gw,
        "PATCH",
        &format!("/v1/subscriptions/{sid}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!((s, &v["active"]), (200, &json!(true)), "{v}");
    publish(
        &gw,
        json!({"type": "contact.updated", "account": "acme", "data": {"again": 1}}),
    )
    .await;
    assert!(
        sub.wait_delivered(1, 10).await,
        "re-enabled, it gets events again"
    );
}

#[tokio::test]
async fn exhausted_deliveries_are_dead_lettered_and_replayed_with_the_same_id() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    sub.set_status(500);
    let created = subscribe(
        &gw,
        json!({"name": "down", "url": sub.url("/hook"), "events": ["contact.created"]}),
    )
    .await;
    let sid = created["id"].as_str().unwrap();
    publish(
        &gw,
        json!({"type": "contact.created", "data": {"email": "a@example.org"}}),
    )
    .await;
    let mut dead = Value::Null;
    wait_for("a dead letter", 10, async || {
        dead = call(
            &gw,
            "GET",
            &format!("/v1/outbound/dead-letters?subscription={sid}"),
            None,
        )
        .await
        .1;
        dead["dead_letters"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let d = &dead["dead_letters"][0];
    assert_eq!(d["reason"], "exhausted");
    assert_eq!(d["event"]["data"]["email"], "a@example.org");
    let tries = sub.received().len();
    assert!(tries >= 3, "retried before giving up ({tries})");
    // Numbers as the delivery record gives them, not their text.
    assert_eq!(d["attempts"].as_u64(), Some(tries as u64), "{d}");
    assert_eq!(d["replays"].as_u64(), Some(0), "{d}");
    for t in ["created_at", "failed_at"] {
        assert!(
            d[t].as_u64().is_some_and(|ms| ms > 1_700_000_000_000),
            "{t}: {d}"
        );
    }
    let (_, rec) = call(
        &gw,
        "GET",
        &format!("/v1/deliveries/{}", d["delivery"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(rec["status"], "failed");
    assert_eq!(
        rec["attempt_log"].as_array().unwrap().len(),
        tries,
        "every attempt recorded"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sub.received().len(), tries, "no attempt after giving up");

    sub.set_status(200);
    let (s, v) = call(
        &gw,
        "POST",
        &format!(
            "/v1/outbound/dead-letters/{}/replay",
            d["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(sub.wait_delivered(1, 10).await, "the replay is delivered");
    let got = sub.received();
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == got[0].header("webhook-id")),
        "a replay keeps the webhook-id"
    );
    let (_, dead) = call(&gw, "GET", "/v1/outbound/dead-letters", None).await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0);
    let (s, _) = call(
        &gw,
        "POST",
        &format!(
            "/v1/outbound/dead-letters/{}/replay",
            d["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(s, 404, "replayed once");

    // A bulk replay names its scope: a misspelt or missing filter is a 400 and replays nothing;
    // `all=true` alone replays every letter.
    sub.set_status(500);
    publish(
        &gw,
        json!({"type": "contact.created", "data": {"email": "b@example.org"}}),
    )
    .await;
    wait_for("a second dead letter", 10, async || {
        let (_, dead) = call(&gw, "GET", "/v1/outbound/dead-letters", None).await;
        dead["dead_letters"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    sub.set_status(200);
    for query in ["", "?subscriptio=x", "?all=true&reason=exhausted"] {
        let path = format!("/v1/outbound/dead-letters/replay{query}");
        let (s, v) = call(&gw, "POST", &path, None).await;
        assert_eq!(s, 400, "{query}: {v}");
    }
    let (_, dead) = call(&gw, "GET", "/v1/outbound/dead-letters?limit=1", None).await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1, "{dead}");
    assert!(
        dead["next"].is_null(),
        "the one letter's page has no next: {dead}"
    );
    let (s, v) = call(
        &gw,
        "POST",
        "/v1/outbound/dead-letters/replay?all=true",
        None,
    )
    .await;
    assert_eq!((s, &v["replayed"]), (200, &json!(1)), "{v}");
    assert!(
        sub.wait_delivered(2, 10).await,
        "the bulk replay is delivered"
    );
}

#[tokio::test]
async fn failing_too_long_disables_the_subscription() {
    let redis = Redis::start();
    let cfg = CFG.replace(
        "give_up_after: 1500ms",
        "give_up_after: 1h, disable_after: 700ms",
    );
    let gw = Gateway::start(&redis, &[], &cfg).await;
    let sub = Subscriber::start().await;
    sub.set_status(500);
    let created = subscribe(
        &gw,
        json!({"name": "down", "url": sub.url("/hook"), "events": ["contact.created"]}),
    )
    .await;
    let sid = created["id"].as_str().unwrap();
    publish(&gw, json!({"type": "contact.created", "data": {}})).await;
    let mut v = Value::Null;
    wait_for("the subscription to be disabled", 10, async || {
        v = call(&gw, "GET", &format!("/v1/subscriptions/{sid}"), None)
            .await
            .1;
        v["active"] == false
    })
    .await;
    assert!(
        v["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("without a success"),
        "{v}"
    );
    let mut c = redis.conn();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("hookgate:events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let types: Vec<String> = entries
        .ids
        .iter()
        .map(|e| redis::from_redis_value(e.map["type"].clone()).unwrap())
        .collect();
    assert!(
        types.contains(&"subscription.disabled".to_string()),
        "{types:?}"
    );
}

#[tokio::test]
async fn the_test_request_returns_what_the_receiver_answered() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let s = secret();
    let created = subscribe(
        &gw,
        json!({"name": "t", "url": sub.url("/hook"), "events": ["contact.created"], "secret": s}),
    )
    .await;
    sub.plan_one(201, None, "hello from the receiver");
    let (st, v) = call(
        &gw,
        "POST",
        &format!("/v1/subscriptions/{}/test", created["id"].as_str().unwrap()),
        Some(json!({"type": "contact.created"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], 201);
    assert_eq!(v["body"], "hello from the receiver");
    let got = sub.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "contact.created");
    assert_eq!(verify_with_standardwebhooks(&s, &got), vec![None]);
    let (st, _) = call(
        &gw,
        "POST",
        "/v1/subscriptions/sub_nope/test",
        Some(json!({"type": "x"})),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn egress_denied_at_send_time_fails_without_retry() {
    let redis = Redis::start();
    // The API process allows loopback (so the subscription can be created); the worker process runs the
    // default policy, which refuses it when connecting.
    let api = Gateway::start(
        &redis,
        &[],
        "egress: { allow: [127.0.0.0/8], allow_http: true }\n",
    )
    .await;
    let worker = Gateway::start(
        &redis,
        &[],
        "outbound: { retry_base: 100ms, retry_max: 300ms }\negress: { allow_http: true }\n",
    )
    .await;
    let sub = Subscriber::start().await;
    let created = subscribe(
        &api,
        json!({"name": "x", "url": sub.url("/hook"), "events": ["contact.created"]}),
    )
    .await;
    let sid = created["id"].as_str().unwrap();
    publish(&api, json!({"type": "contact.created", "data": {}})).await;
    let mut l = Value::Null;
    wait_for("the delivery to fail", 10, async || {
        l = call(
            &worker,
            "GET",
            &format!("/v1/deliveries?subscription={sid}"),
            None,
        )
        .await
        .1;
        l["deliveries"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(l["deliveries"][0]["reason"], "egress_denied");
    assert_eq!(l["deliveries"][0]["attempts"], 1, "not retried");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        sub.received().is_empty(),
        "nothing reached the loopback subscriber"
    );
    assert!(worker
        .metrics()
        .await
        .contains("hookgate_egress_denied_total"));
}

#[tokio::test]
async fn file_subscriptions_are_delivered_to_and_read_only() {
    let redis = Redis::start();
    let sub = Subscriber::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = secret();
    let secret_ref = common::secret_file(dir.path(), "whsec", &s);
    let file = dir.path().join("subscriptions.yaml");
    std::fs::write(
        &file,
        format!(
            "subscriptions:\n  - id: crm-file\n    account: acme\n    name: CRM (GitOps)\n    url: {}\n    events: [contact.*]\n    secret: \"{secret_ref}\"\n    filter: {{ path: $.data.vip, equals: true }}\n",
            sub.url("/file")
        ),
    )
    .unwrap();
    let cfg = format!("{CFG}subscriptions_file: {}\n", file.display());
    let gw = Gateway::start(&redis, &[], &cfg).await;
    let (_, l) = call(&gw, "GET", "/v1/subscriptions?account=acme", None).await;
    let listed = &l["subscriptions"][0];
    assert_eq!(listed["id"], "crm-file");
    assert_eq!(listed["origin"], "file");
    assert_eq!(
        listed["secret_hint"],
        secret_ref.as_str(),
        "a reference is shown, never the value"
    );
    assert!(!l.to_string().contains(&s));
    let (st, _) = call(
        &gw,
        "PATCH",
        "/v1/subscriptions/crm-file",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, 409, "file subscriptions change in the file");
    let (st, _) = call(&gw, "DELETE", "/v1/subscriptions/crm-file", None).await;
    assert_eq!(st, 409);
    // File and API subscriptions count together against the account limit.
    let api = subscribe(
        &gw,
        json!({"account": "acme", "name": "api", "url": sub.url("/api"), "events": ["contact.*"]}),
    )
    .await;
    publish(
        &gw,
        json!({"type": "contact.created", "account": "acme", "data": {"vip": true}}),
    )
    .await;
    publish(
        &gw,
        json!({"type": "contact.created", "account": "acme", "data": {"vip": false}}),
    )
    .await;
    assert!(sub.wait_delivered(3, 10).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sub.delivered();
    let file_got: Vec<_> = got.iter().filter(|r| r.path == "/file").cloned().collect();
    assert_eq!(file_got.len(), 1, "the file subscription's filter holds");
    assert_eq!(verify_with_standardwebhooks(&s, &file_got), vec![None]);
    assert_eq!(got.iter().filter(|r| r.path == "/api").count(), 2);
    assert!(api["id"].as_str().unwrap().starts_with("sub_"));

    // A file with problems reports every one of them.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "subscriptions:\n  - name: no id\n    url: https://example.com/\n    events: [a]\n    secret: \"${env:X}\"\n  - id: literal\n    name: n\n    url: https://example.com/\n    events: [a]\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n  - id: meta\n    name: n\n    url: https://169.254.169.254/\n    events: [a]\n    secret: \"${env:X}\"\n",
    )
    .unwrap();
    let policy = hookgate::egress::EgressPolicy::new(&Default::default()).unwrap();
    let problems = hookgate::outbound::registry::load_file(&bad, &policy).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("id: required"), "{problems:?}");
    assert!(problems[1].contains("reference"), "{problems:?}");
    assert!(problems[2].contains("egress denied"), "{problems:?}");
}

#[tokio::test]
async fn the_default_egress_policy_refuses_internal_destinations_at_creation() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], "egress: { allow_http: true }\n").await;
    let sub = Subscriber::start().await;
    let port = sub.addr.port();
    for url in [
        "https://10.0.0.1/hook".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        "https://[fd00::1]/".to_string(),
        "https://100.64.0.1/".to_string(),
    ] {
        let (s, v) = call(
            &gw,
            "POST",
            "/v1/subscriptions",
            Some(json!({"name": "x", "url": url, "events": ["a"]})),
        )
        .await;
        assert_eq!(s, 422, "{url} → {v}");
        assert!(
            v["message"].as_str().unwrap().contains("egress denied"),
            "{url} → {v}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    let meta = Subscriber::start().await;
    sub.plan_one(302, Some(("location", &meta.url("/latest/meta-data"))), "");
    let created = subscribe(
        &gw,
        json!({"name": "r", "url": sub.url("/hook"), "events": ["a.b"]}),
    )
    .await;
    publish(&gw, json!({"type": "a.b", "data": {}})).await;
    assert!(
        sub.wait_delivered(1, 10).await,
        "retried at the subscription's own URL"
    );
    assert!(
        meta.received().is_empty(),
        "the redirect target got nothing"
    );
    let (_, l) = call(
        &gw,
        "GET",
        &format!(
            "/v1/deliveries?subscription={}",
            created["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        l["deliveries"][0]["attempts"], 2,
        "the 302 counted as a failed attempt"
    );
}

#[tokio::test]
async fn a_rate_limit_spreads_deliveries() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    subscribe(
        &gw,
        json!({"name": "limited", "url": sub.url("/hook"), "events": ["a.b"], "rate_limit": 5.0}),
    )
    .await;
    for i in 0..15 {
        publish(&gw, json!({"type": "a.b", "data": {"i": i}})).await;
    }
    assert!(sub.wait_delivered(15, 15).await);
    let got = sub.delivered();
    let spread = got[14].at - got[0].at;
    // A burst of 5, then 5 per second: the last one at least ~2 s after the first.
    assert!(spread >= Duration::from_millis(1800), "{spread:?}");
    let first_second = got
        .iter()
        .filter(|r| r.at - got[0].at < Duration::from_millis(900))
        .count();
    assert!(first_second <= 9, "{first_second} in the first 0.9 s");
}

/// With no subscriptions at all, a published event is simply acknowledged (nothing to deliver), and a
/// subscription created afterwards gets only what is published after it.
#[tokio::test]
async fn an_event_with_no_subscription_is_acknowledged_not_held() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let first = publish(&gw, json!({"type": "contact.created", "data": {"n": 1}})).await;
    let stream_id = first["stream_id"].as_str().expect("stream_id").to_string();
    wait_for(
        "the event read and acknowledged by the relays",
        10,
        async || {
            let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg("hookgate:events")
                .query(&mut redis.conn())
                .unwrap_or_default();
            groups.iter().any(|g| {
                let text = |k: &str| match g.get(k) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(redis::Value::SimpleString(s)) => s.clone(),
                    Some(redis::Value::Int(i)) => i.to_string(),
                    _ => String::new(),
                };
                text("name") == "relays"
                    && text("last-delivered-id") == stream_id
                    && text("pending") == "0"
            })
        },
    )
    .await;
    let sub = Subscriber::start().await;
    subscribe(
        &gw,
        json!({"name": "late", "url": sub.url("/hook"), "events": ["contact.*"]}),
    )
    .await;
    publish(&gw, json!({"type": "contact.created", "data": {"n": 2}})).await;
    assert!(sub.wait_received(1, 10).await, "the second event delivered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<Value> = sub
        .received()
        .iter()
        .map(|r| r.json()["data"]["n"].clone())
        .collect();
    assert_eq!(
        got,
        vec![json!(2)],
        "only the event published after the subscription"
    );
}

/// `<prefix>:events` does not grow forever: what every group acknowledged is trimmed once older than
/// `outbound.retention`; a fresh event stays.
#[tokio::test]
async fn acknowledged_events_are_trimmed_after_the_retention() {
    let redis = Redis::start();
    // One entry per stream node, so the approximate trim (`MINID ~`) is exact here.
    redis.config_set("stream-node-max-entries", 1);
    let gw = Gateway::start(
        &redis,
        &[],
        "outbound: { retention: 1s }\negress: { allow: [127.0.0.0/8], allow_http: true }\n",
    )
    .await;
    for n in 0..3 {
        publish(&gw, json!({"type": "contact.created", "data": {"n": n}})).await;
    }
    let xlen = || -> i64 {
        redis::cmd("XLEN")
            .arg("hookgate:events")
            .query(&mut redis.conn())
            .unwrap_or(-1)
    };
    assert_eq!(xlen(), 3);
    wait_for("the acknowledged events trimmed", 10, async || xlen() == 0).await;
    publish(&gw, json!({"type": "contact.created", "data": {"n": 3}})).await;
    assert_eq!(xlen(), 1, "a fresh event is kept");
    assert!(gw.metrics().await.contains("hookgate_events_trimmed_total"));
}

/// A subscription that became unusable (a stored reference that no longer resolves) keeps its pending
/// delivery until it is fixed, instead of dead-lettering it as deleted; and more than a page of such
/// due subscriptions (soonest due, without room) does not hide another subscription's delivery.
#[tokio::test]
async fn unusable_subscriptions_keep_their_backlog_and_hide_no_one() {
    let redis = Redis::start();
    let cfg = "outbound: { retry_base: 2s, retry_max: 2s, give_up_after: 60s, timeout: 3s, connect_timeout: 1s }\negress: { allow: [127.0.0.0/8], allow_http: true }\n";
    let gw = Gateway::start(&redis, &[], cfg).await;
    let sub = Subscriber::start().await;
    sub.plan_one(503, None, "busy");
    let created = subscribe(
        &gw,
        json!({"name": "legacy", "url": sub.url("/hook"), "events": ["contact.created"], "auth": {"type": "bearer", "token": "t-1"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    publish(&gw, json!({"type": "contact.created", "data": {"n": 1}})).await;
    assert!(sub.wait_received(1, 10).await, "first attempt");

    // The stored spec gains a reference (as an older version stored it), and 1,001 more unusable
    // subscriptions are due before anyone else.
    let mut c = redis.conn();
    let spec = spec_with_a_reference(&mut c, &id);
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg("hookgate:subscriptions")
        .arg(&id)
        .arg(spec.to_string())
        .ignore();
    for i in 0..1001 {
        let other = format!("sub_blocked{i:04}");
        let mut s = spec.clone();
        s["id"] = json!(other);
        s["account"] = json!(format!("blocked{i}"));
        pipe.cmd("HSET")
            .arg("hookgate:subscriptions")
            .arg(&other)
            .arg(s.to_string())
            .ignore();
        pipe.cmd("ZADD")
            .arg("hookgate:outbound:ready")
            .arg(0)
            .arg(&other)
            .ignore();
    }
    pipe.cmd("INCR")
        .arg("hookgate:subscriptions:version")
        .ignore();
    pipe.query::<()>(&mut c).unwrap();
    let path = format!("/v1/subscriptions/{id}");
    wait_for("the reload to find it unusable", 10, async || {
        call(&gw, "GET", &path, None).await.1["active"] == false
    })
    .await;

    // Another account's subscription is served past them.
    let other = Subscriber::start().await;
    subscribe(
        &gw,
        json!({"name": "victim", "account": "victim", "url": other.url("/hook"), "events": ["invoice.paid"]}),
    )
    .await;
    publish(
        &gw,
        json!({"type": "invoice.paid", "account": "victim", "data": {}}),
    )
    .await;
    assert!(other.wait_delivered(1, 10).await, "not starved");

    // The retry came due meanwhile (2 s): nothing was sent, nothing dead-lettered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sub.received().len(), 1, "nothing sent while unusable");
    let list = call(
        &gw,
        "GET",
        &format!("/v1/deliveries?subscription={id}"),
        None,
    )
    .await
    .1;
    assert_eq!(list["deliveries"][0]["status"], "pending", "{list}");
    let (_, dead) = call(&gw, "GET", "/v1/outbound/dead-letters", None).await;
    assert_eq!(
        dead["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "{dead}"
    );

    // Fixed: the waiting delivery goes out with the new token.
    patch_token(&gw, &path, "t-2").await;
    assert!(sub.wait_delivered(1, 10).await, "delivered once fixed");
    let got = sub.delivered();
    assert_eq!(got[0].json()["data"]["n"], 1);
    assert_eq!(got[0].header("authorization"), "Bearer t-2");
}

/// Paging through deliveries returns each once, also across a fan-out whose deliveries share their
/// creation time (paging by time alone skipped the rest of them); a bad filter or cursor is a 400.
#[tokio::test]
async fn delivery_pages_cover_a_fan_out_exactly_once() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], CFG).await;
    let sub = Subscriber::start().await;
    for i in 0..5 {
        subscribe(
            &gw,
            json!({"name": format!("fan{i}"), "url": sub.url("/hook"), "events": ["fan.out"]}),
        )
        .await;
    }
    for n in 0..3 {
        publish(&gw, json!({"type": "fan.out", "data": {"n": n}})).await;
    }
    assert!(sub.wait_delivered(15, 15).await, "15 deliveries");
    let (_, all) = call(&gw, "GET", "/v1/deliveries?limit=100", None).await;
    let all: Vec<String> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 15);
    for limit in [1, 2, 4] {
        let (mut paged, mut before) = (Vec::new(), None::<String>);
        for _ in 0..20 {
            let path = match &before {
                Some(b) => format!("/v1/deliveries?limit={limit}&before={b}"),
                None => format!("/v1/deliveries?limit={limit}"),
            };
            let (s, page) = call(&gw, "GET", &path, None).await;
            assert_eq!(s, 200, "{page}");
            paged.extend(
                page["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["id"].as_str().unwrap().to_string()),
            );
            match page["next"].as_str() {
                Some(n) => before = Some(n.to_string()),
                None => break,
            }
        }
        assert_eq!(paged, all, "limit {limit}");
    }
    for bad in [
        "status=bogus",
        "before=yesterday",
        "before=1:x",
        "before=1:18446744073709551615",
    ] {
        let (s, v) = call(&gw, "GET", &format!("/v1/deliveries?{bad}"), None).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
}
