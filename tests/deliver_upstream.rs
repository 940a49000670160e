//! Delivery of inbound actions: a signed Stripe event through the shipped stripe mapping reaches a real
//! HTTP upstream as the mapped contact request, once, with a stable Idempotency-Key across retries; a
//! refusing upstream and a failing mapping end in the dead letters, which replay once fixed; Redis
//! restarted mid-run loses nothing.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const SECRET: &str = "whsec_deliver_test_secret";
/// A compressed retry schedule so tests take seconds.
const FAST: &str =
    "deliver: { retry_base: 50ms, retry_max: 400ms, timeout: 2s, connect_timeout: 500ms }\n";

struct Setup {
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

/// The shipped `mappings/stripe.yaml` with its secret read from a file, and an upstream API key the same way.
async fn stripe_gateway(redis: &Redis, upstream_url: &str, extra: &str) -> Setup {
    let secrets = tempfile::tempdir().unwrap();
    let hook = secret_file(secrets.path(), "stripe", SECRET);
    let api_key = secret_file(secrets.path(), "api-key", "xkeysib-test");
    let mapping = shipped_mapping("stripe.yaml", "STRIPE_WEBHOOK_SECRET", &hook);
    // A test with its own `deliver:` section has it instead of the fast one.
    let fast = if extra.contains("deliver:") { "" } else { FAST };
    let cfg = format!(
        "upstream: {{ url: \"{upstream_url}\", headers: {{ api-key: \"{api_key}\", x-tenant: acme }} }}\n{fast}{extra}"
    );
    let gw = Gateway::start(redis, &[("stripe.yaml", &mapping)], &cfg).await;
    Setup {
        gw,
        _secrets: secrets,
    }
}

/// The Stripe test payload with its own event id and email.
fn customer_created(evt: &str, email: &str) -> String {
    let text = testdata("stripe_customer_created.json");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["id"] = json!(evt);
    v["data"]["object"]["email"] = json!(email);
    v.to_string()
}

async fn post_stripe(gw: &Gateway, body: &str) -> (u16, Value) {
    let r = client()
        .post(gw.url("stripe"))
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            stripe_header(SECRET, body.as_bytes(), now_secs()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn key_of(r: &Recorded) -> String {
    r.headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_default()
}

/// Wait (at most `secs`) until the upstream has received `n` requests, half a second more for a stray
/// one, and return them: exactly `n`.
async fn delivered_exactly(
    up: &RecordingUpstream,
    n: usize,
    secs: u64,
    what: &str,
) -> Vec<Recorded> {
    assert!(up.wait_delivered(n, secs).await, "{what}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = up.requests();
    assert_eq!(reqs.len(), n, "{reqs:?}");
    reqs
}

/// A gateway serving the shipped `mappings/<file>` alone, with a Redis and a recording upstream of its
/// own, its `${env:<var>}` secret written to a file in `_secrets` (kept while the gateway runs), and
/// the fast retry settings.
struct Shipped {
    redis: Redis,
    up: RecordingUpstream,
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

impl Shipped {
    async fn start(file: &str, var: &str, secret: &str) -> Shipped {
        let redis = Redis::start();
        let up = RecordingUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(dir.path(), &format!("{file}.secret"), secret);
        let mapping = shipped_mapping(file, var, &secret);
        let cfg = format!("upstream: {{ url: \"{}\" }}\n{FAST}", up.url());
        let gw = Gateway::start(&redis, &[(file, &mapping)], &cfg).await;
        Shipped {
            redis,
            up,
            gw,
            _secrets: dir,
        }
    }
}

/// `hookgate_inbound_duplicates_total` of `source`: the redeliveries it answered without storing.
async fn duplicates_counted(gw: &Gateway, source: &str) -> f64 {
    let source = format!("source=\"{source}\"");
    metric_sum(
        &gw.metrics().await,
        "hookgate_inbound_duplicates_total",
        &[&source],
    )
}

/// The text at `member` of the bodies of the requests to `path`, sorted: what a test expects of
/// deliveries whose order across events is not fixed.
fn sorted_at<'a>(reqs: &'a [Recorded], path: &str, member: &str) -> Vec<&'a str> {
    let mut found: Vec<&str> = reqs
        .iter()
        .filter(|r| r.path == path)
        .filter_map(|r| r.body[member].as_str())
        .collect();
    found.sort_unstable();
    found
}

/// The names of the custom events delivered, sorted.
fn event_names(reqs: &[Recorded]) -> Vec<&str> {
    let mut names: Vec<&str> = reqs
        .iter()
        .filter(|r| (r.method.as_str(), r.path.as_str()) == ("POST", "/events"))
        .filter_map(|r| r.body["event_name"].as_str())
        .collect();
    names.sort_unstable();
    names
}

/// The body of the first request to `path`.
fn first_to<'a>(reqs: &'a [Recorded], path: &str) -> &'a Value {
    reqs.iter()
        .find(|r| r.path == path)
        .map(|r| &r.body)
        .unwrap_or_else(|| panic!("no request to {path}: {reqs:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stripe_customer_becomes_one_contact_request() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let s = stripe_gateway(&redis, &up.url(), "").await;
    let (status, b) = post_stripe(
        &s.gw,
        &customer_created("evt_one", "jenny.rosen@example.com"),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    let stream_id = b["id"].as_str().unwrap().to_string();
    assert!(up.wait_delivered(1, 10).await, "delivered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "exactly one request: {reqs:?}");
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/contacts"));
    assert_eq!(
        r.body,
        json!({
            "email": "jenny.rosen@example.com",
            "ext_id": "cus_NffrFeUfNV2Hib",
            "attributes": {
                "FIRSTNAME": "Jenny", "LASTNAME": "Rosen", "SMS": "+15555550123", "CITY": "Paris",
                "COUNTRY": "FR", "CURRENCY": "USD", "PLAN": "pro", "STRIPE_SINCE": "2009-02-13T23:31:30Z"
            },
            "updateEnabled": true
        })
    );
    let key = key_of(r);
    assert!(
        key.starts_with("hg-") && key.len() == 67,
        "idempotency key {key}"
    );
    let h = &r.headers;
    assert_eq!(h["x-hookgate-source"], "stripe");
    assert_eq!(h["x-hookgate-event-id"], stream_id);
    assert_eq!(h["content-type"], "application/json");
    assert!(h["user-agent"].starts_with("hookgate/"));
    assert_eq!(h["api-key"], "xkeysib-test", "secret header resolved");
    assert_eq!(h["x-tenant"], "acme", "plain header as is");
    assert_eq!(
        pending(&redis),
        0,
        "acknowledged: nothing pending in the group"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_503_three_times_then_delivered_with_one_key() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.plan(&[(503, "{}"), (503, "{}"), (503, "{}")]);
    let s = stripe_gateway(&redis, &up.url(), "").await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_503", "a@example.org"))
            .await
            .0,
        202
    );
    assert!(up.wait_delivered(1, 15).await, "delivered after retries");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reqs = up.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 503, 201]
    );
    let keys: HashSet<String> = reqs.iter().map(key_of).collect();
    assert_eq!(keys.len(), 1, "same Idempotency-Key on every attempt");
    let metrics = client()
        .get(s.gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookgate_retries_total"),
        "retries counted"
    );
    assert!(metrics.contains("hookgate_upstream_request_duration_seconds_bucket"));
}

/// With `actions_stream`, an action is recorded when it is delivered, whatever happens to the rest of its
/// event: one delivered before a later action was refused is there although the event is dead-lettered,
/// and it is not recorded again when the replay sends the rest.
#[tokio::test(flavor = "multi_thread")]
async fn the_actions_stream_records_each_delivery_once_even_if_the_event_fails_later() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.plan(&[(201, "{}"), (422, r#"{"message":"unknown event"}"#)]);
    let mapping = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: contact\n    create_contact:\n      email: $.email\n  - name: signal\n    custom_event:\n      event_name: signed_up\n      email: $.email\n";
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", mapping)],
        &format!(
            "upstream: {{ url: \"{}\" }}\ndeliver: {{ retry_base: 50ms, retry_max: 400ms, timeout: 2s, connect_timeout: 500ms, actions_stream: true }}\n",
            up.url()
        ),
    )
    .await;
    assert_eq!(
        post_json(&gw, "shop", r#"{"email":"a@example.org"}"#)
            .await
            .0,
        202
    );
    let dl = one_dead_letter(&gw, 10).await;
    assert_eq!(dl["reason"], "upstream_status", "{dl}");
    let recorded = || -> Vec<String> {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE")
                .arg("hookgate:actions")
                .arg("-")
                .arg("+")
                .query(&mut redis.conn())
                .unwrap();
        entries
            .into_iter()
            .map(|(_, f)| f.get("rule").cloned().unwrap_or_default())
            .collect()
    };
    assert_eq!(recorded(), ["contact"], "the delivered action is recorded");
    let id = dl["id"].as_str().unwrap();
    let (s, r) = admin_post(&gw, &format!("/v1/dead-letters/{id}/replay")).await;
    assert_eq!(s, 200, "{r}");
    assert!(up.wait_delivered(2, 10).await, "the replay sends the rest");
    assert!(
        poll_until(5, || recorded().len() == 2).await,
        "{:?}",
        recorded()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(), ["contact", "signal"], "each delivery once");
    assert_eq!(up.requests().len(), 3, "the contact is not sent again");
}

/// A redirect is not followed: the dead letter says where it pointed.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_dead_lettered_with_where_it_points() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.plan(&[(301, "")]);
    up.set_refusal_header(
        "location",
        Some("https://contacts.example.com/v3/contacts?token=s3cret"),
    );
    let s = stripe_gateway(&redis, &up.url(), "").await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_301", "r@example.org"))
            .await
            .0,
        202
    );
    let dl = one_dead_letter(&s.gw, 10).await;
    assert_eq!(
        (&dl["reason"], &dl["status"]),
        (&json!("upstream_status"), &json!(301)),
        "{dl}"
    );
    assert_eq!(
        dl["detail"], "redirect to https://contacts.example.com/v3/contacts (not followed)",
        "{dl}"
    );
    assert_eq!(up.requests().len(), 1, "neither followed nor retried");
}

/// The one dead letter of the source, waited for.
async fn one_dead_letter(gw: &Gateway, secs: u64) -> Value {
    for _ in 0..secs * 20 {
        let listed = admin_get(gw, "/v1/dead-letters").await;
        if let Some(dl) = listed["dead_letters"].as_array().and_then(|a| a.first()) {
            return dl.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no dead letter within {secs} s");
}

/// `Retry-After` is a floor: no try before it. One that asks to wait past `give_up_after` dead-letters
/// the event at once (waiting would end past the deadline anyway), with the status and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_and_one_past_the_deadline_gives_up_at_once() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.set_status(429);
    up.set_retry_after(Some("1"));
    let deliver = "deliver: { retry_base: 50ms, retry_max: 100ms, give_up_after: 5s, timeout: 2s, connect_timeout: 500ms }\n";
    let s = stripe_gateway(&redis, &up.url(), deliver).await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_ra", "ra@example.org"))
            .await
            .0,
        202
    );
    assert!(poll_until(5, || !up.requests().is_empty()).await);
    up.set_retry_after(Some("30"));
    let dl = one_dead_letter(&s.gw, 5).await;
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "tried once more, after its Retry-After: 1");
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(950), "{gap:?}");
    assert_eq!(dl["reason"], "gave_up", "{dl}");
    assert_eq!(dl["status"], 429, "{dl}");
    let detail = dl["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("upstream answered 429") && detail.contains("Retry-After (30s)"),
        "{detail}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        up.requests().len(),
        2,
        "never sent before the upstream asked"
    );
}

/// A backoff that would end past `give_up_after` is cut: the last try is at the deadline, and the dead
/// letter keeps the last answer's status and what it said.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_try_is_at_the_give_up_deadline() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.plan(&[(500, "overloaded"); 20]);
    // Full jitter under a 10 s cap: left alone, most second tries would come long after the deadline.
    let deliver = "deliver: { retry_base: 10s, retry_max: 10s, give_up_after: 2s, timeout: 2s, connect_timeout: 500ms }\n";
    let s = stripe_gateway(&redis, &up.url(), deliver).await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_deadline", "d@example.org"))
            .await
            .0,
        202
    );
    let dl = one_dead_letter(&s.gw, 8).await;
    let reqs = up.requests();
    let last = reqs.last().expect("tried").at - reqs[0].at;
    assert!(
        last >= Duration::from_millis(1900) && last <= Duration::from_millis(3500),
        "the last try at the 2 s deadline, not after it: {last:?} ({} tries)",
        reqs.len()
    );
    assert_eq!(dl["reason"], "gave_up", "{dl}");
    assert_eq!(dl["status"], 500, "{dl}");
    assert_eq!(dl["detail"], "upstream answered 500: overloaded", "{dl}");

    // A replay gets the whole window again: its failures are counted from nothing (docs/delivery.md),
    // so it is tried until a new deadline 2 s after its own first failure, not given up at once.
    let tries = reqs.len();
    let id = dl["id"].as_str().expect("an id").to_string();
    let (status, r) = admin_post(&s.gw, &format!("/v1/dead-letters/{id}/replay")).await;
    assert_eq!(status, 200, "{r}");
    let again = one_dead_letter(&s.gw, 8).await;
    assert_ne!(again["id"], dl["id"], "{again}");
    let reqs = up.requests();
    let span = reqs.last().expect("tried").at - reqs[tries].at;
    assert!(
        span >= Duration::from_millis(1900) && span <= Duration::from_millis(3500),
        "the replay is tried until its own deadline: {span:?} ({} tries)",
        reqs.len() - tries
    );
    assert_eq!(again["replays"], 1, "{again}");
    assert_eq!(
        again["attempts"].as_u64(),
        Some((reqs.len() - tries) as u64),
        "only the replay's own attempts: {again}"
    );
    assert!(
        again["first_failed_at"].as_str() > dl["last_failed_at"].as_str(),
        "the replay's first failure is its own: {again} after {dl}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_at_first_gets_every_event_once_it_is_back() {
    let redis = Redis::start();
    let port = free_port();
    let s = stripe_gateway(&redis, &format!("http://127.0.0.1:{port}"), "").await;
    for i in 0..20 {
        let body = customer_created(&format!("evt_down_{i}"), &format!("u{i}@example.org"));
        assert_eq!(post_stripe(&s.gw, &body).await.0, 202);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = RecordingUpstream::start_on(port).await;
    assert!(
        up.wait_delivered(20, 15).await,
        "all delivered: {}",
        up.delivered().len()
    );
    let emails: HashSet<String> = up
        .delivered()
        .iter()
        .map(|r| r.body["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(emails.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_dead_lettered_at_once_with_the_answer() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let refusal = format!(
        r#"{{"code":"invalid_parameter","message":"email is invalid","pad":"{}"}}"#,
        "x".repeat(3000)
    );
    up.plan(&[(400, &refusal)]);
    let s = stripe_gateway(&redis, &up.url(), "").await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_400", "bad@example.org"))
            .await
            .0,
        202
    );
    let dl = &one_dead_letter(&s.gw, 5).await;
    assert_eq!(dl["reason"], "upstream_status", "{dl}");
    assert_eq!(dl["status"], 400);
    assert_eq!(dl["rule"], "new customer");
    assert_eq!(dl["index"], 0);
    assert_eq!(dl["attempts"], 0, "not retried");
    let detail = dl["detail"].as_str().unwrap();
    assert!(detail.starts_with(r#"{"code":"invalid_parameter""#));
    assert_eq!(detail.len(), 1024, "the first KiB of the answer");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(up.requests().len(), 1, "a 400 is not retried");

    let id = dl["id"].as_str().unwrap();
    let full = admin_get(&s.gw, &format!("/v1/dead-letters/{id}")).await;
    assert_eq!(full["event"]["content_type"], "application/json");
    assert!(
        full["first_failed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "dead on its first failure still has the time of it: {full}"
    );
    let body: Value = serde_json::from_str(full["event"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "evt_400");
    assert!(full["event"]["headers"]["stripe-signature"].is_string());
    assert!(
        admin_get(&s.gw, "/v1/dead-letters?reason=mapping_error").await["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let del = client()
        .delete(s.gw.admin_url(&format!("/v1/dead-letters/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 200);
    let gone = client()
        .get(s.gw.admin_url(&format!("/v1/dead-letters/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    let unauth = client()
        .get(s.gw.admin_url("/v1/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
}

/// Events whose mapping fails wait in the dead letters; the mapping is fixed on disk, reloaded, and a replay
/// delivers them with the fixed mapping.
#[tokio::test(flavor = "multi_thread")]
async fn mapping_errors_replay_after_the_fix() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let broken = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    create_contact:\n      email: $.customer.email\n";
    // The fix leaves a table behind: it loads, with a warning.
    let fixed = "source: shop\nallow_ips: [127.0.0.0/8]\nlookups: { old: { a: 1 } }\nrules:\n  - name: signup\n    create_contact:\n      email: $.email\n      attributes: { SOURCE: shop }\n";
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", broken)],
        &format!(
            "upstream: {{ url: \"{}\" }}\nmappings_poll: 1h\n{FAST}",
            up.url()
        ),
    )
    .await;
    let gw_ref = &gw;
    let post = move |body: &'static str| async move { post_json(gw_ref, "shop", body).await.0 };
    assert_eq!(
        post(r#"{"customer":{"email":"ok@example.org"}}"#).await,
        202
    );
    assert_eq!(post(r#"{"email":"flat1@example.org"}"#).await, 202);
    assert_eq!(post(r#"{"email":"flat2@example.org"}"#).await, 202);
    assert!(up.wait_delivered(1, 10).await);
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = admin_get(&gw, "/v1/dead-letters?reason=mapping_error").await["dead_letters"]
            .as_array()
            .unwrap()
            .clone();
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert_eq!(d["rule"], "signup", "the failing rule is kept: {d}");
        assert!(d["index"].is_null(), "no action was made: {d}");
    }
    assert!(
        dead[0]["detail"]
            .as_str()
            .unwrap()
            .contains("customer.email"),
        "the MapError text: {}",
        dead[0]["detail"]
    );
    assert_eq!(dead[0]["source"], "shop");
    // Pages: `next` is the cursor of the following page.
    let first = admin_get(&gw, "/v1/dead-letters?limit=1").await;
    assert_eq!(first["dead_letters"][0]["id"], dead[0]["id"], "{first}");
    let next = first["next"].as_str().expect("a next page").to_string();
    let second = admin_get(&gw, &format!("/v1/dead-letters?limit=1&after={next}")).await;
    assert_eq!(second["dead_letters"][0]["id"], dead[1]["id"], "{second}");
    let rest = admin_get(
        &gw,
        &format!("/v1/dead-letters?after={}", dead[1]["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(rest["dead_letters"], json!([]), "{rest}");
    assert_eq!(rest["next"], Value::Null);
    // A cursor that is no stream id is the client's mistake (400), not a storage outage (503).
    for path in [
        "/v1/dead-letters?after=garbage",
        "/v1/dead-letters?after=99999999999999999999-0",
        "/v1/dead-letters?after=18446744073709551615-18446744073709551615",
        "/v1/outbound/dead-letters?after=1-x",
        "/v1/dead-letters?limit=-1",
    ] {
        let r = client()
            .get(gw.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().await.expect("a JSON error");
        assert_eq!(body["error"], "bad_request", "{path}: {body}");
    }

    // replaying before the fix fails the same way and comes back
    let one = dead[0]["id"].as_str().unwrap().to_string();
    let (s, r) = admin_post(&gw, &format!("/v1/dead-letters/{one}/replay")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        admin_post(&gw, &format!("/v1/dead-letters/{one}/replay"))
            .await
            .0,
        404,
        "a replayed dead letter is gone"
    );
    let mut back = 0;
    for _ in 0..100 {
        back = admin_get(&gw, "/v1/dead-letters?source=shop").await["dead_letters"]
            .as_array()
            .unwrap()
            .len();
        if back == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back, 2);

    assert_eq!(
        admin_get(&gw, "/v1/sources").await["sources"][0]["warnings"],
        json!([])
    );
    std::fs::write(gw.mappings_dir().join("shop.yaml"), fixed).unwrap();
    let (s, r) = admin_post(&gw, "/v1/mappings/reload").await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    let warning = format!(
        "{}:3:12: warning: lookup table `old` is never used",
        gw.mappings_dir().join("shop.yaml").display()
    );
    assert_eq!(r["warnings"], json!([warning]), "{r}");
    assert_eq!(
        admin_get(&gw, "/v1/sources").await["sources"][0]["warnings"],
        json!([warning])
    );
    let (s, r) = admin_post(&gw, "/v1/dead-letters/replay?source=shop").await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(2)), "{r}");
    assert!(up.wait_delivered(3, 10).await, "replayed events delivered");
    let bodies: Vec<Value> = up.delivered().iter().map(|r| r.body.clone()).collect();
    assert!(bodies.contains(&json!({"email": "flat1@example.org", "attributes": {"SOURCE": "shop"}, "updateEnabled": false})), "{bodies:?}");
    assert!(
        admin_get(&gw, "/v1/dead-letters").await["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty(),
        "replayed letters are gone"
    );
}

/// Redis is killed and restarted (append-only file) while events are flowing: the workers reconnect by
/// themselves and every stored event is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restart_mid_run_delivers_everything_stored() {
    let mut redis = Redis::start_durable();
    let up = RecordingUpstream::start().await;
    let s = stripe_gateway(
        &redis,
        &up.url(),
        "redis: { response_timeout: 500ms, connect_timeout: 300ms }\n",
    )
    .await;
    let mut accepted = HashSet::new();
    for i in 0..60 {
        if i == 30 {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.restart();
        }
        let email = format!("r{i}@example.org");
        let body = customer_created(&format!("evt_restart_{i}"), &email);
        for _ in 0..50 {
            if post_stripe(&s.gw, &body).await.0 == 202 {
                accepted.insert(email.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(accepted.len(), 60, "every event stored eventually");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: HashSet<String> = up
            .delivered()
            .iter()
            .filter_map(|r| r.body["email"].as_str().map(String::from))
            .collect();
        if accepted.is_subset(&got) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing after restart: {:?}",
            accepted.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One source's requests are slow: its backlog is deferred, and another source's events still go through
/// at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_source_does_not_starve_another() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.set_slow_source("slow", Duration::from_millis(1500));
    let src = |name: &str| {
        format!("source: {name}\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: r\n    upsert_contact: {{ email: $.email }}\n")
    };
    let (slow, fast) = (src("slow"), src("fast"));
    let gw = Gateway::start(
        &redis,
        &[("slow.yaml", &slow), ("fast.yaml", &fast)],
        &format!(
            "upstream: {{ url: \"{}\" }}\ndeliver: {{ concurrency: 2, timeout: 5s, retry_base: 1s }}\n",
            up.url()
        ),
    )
    .await;
    let gw_ref = &gw;
    let post = move |source: &'static str, email: String| async move {
        post_json(gw_ref, source, json!({ "email": email }).to_string())
            .await
            .0
    };
    for i in 0..40 {
        assert_eq!(post("slow", format!("s{i}@example.org")).await, 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    for i in 0..10 {
        assert_eq!(post("fast", format!("f{i}@example.org")).await, 202);
    }
    let deadline = started + Duration::from_secs(5);
    let count = |source: &str| {
        up.delivered()
            .iter()
            .filter(|r| r.headers["x-hookgate-source"] == source)
            .count()
    };
    while count("fast") < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count("fast"),
        10,
        "the fast source is not held up by the slow one"
    );
    eprintln!("fast source delivered in {:?}", started.elapsed());
    assert!(
        count("slow") < 40,
        "the slow source is still working through its backlog"
    );
}

fn pending(redis: &Redis) -> u64 {
    let mut c = redis.conn();
    let v: redis::Value = redis::cmd("XPENDING")
        .arg("hookgate:inbound")
        .arg("mappers")
        .query(&mut c)
        .unwrap();
    match v {
        redis::Value::Array(v) => redis::from_redis_value::<u64>(v[0].clone()).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// On shutdown a delivery in flight finishes (within `shutdown_grace`) and is acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_the_delivery_in_flight_finish() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    up.set_delay(Duration::from_millis(800));
    let s = stripe_gateway(&redis, &up.url(), "").await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_stop", "stop@example.org"))
            .await
            .0,
        202
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.requests().is_empty(), "still in flight");
    s.gw.stop().await.unwrap();
    assert_eq!(up.delivered().len(), 1, "finished during the drain");
    assert_eq!(pending(&redis), 0, "and acknowledged");
}

/// The consumer group disappears (as when Redis loses it): the workers create it again by themselves.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_consumer_group_is_recreated() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let s = stripe_gateway(&redis, &up.url(), "").await;
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_g1", "g1@example.org"))
            .await
            .0,
        202
    );
    assert!(up.wait_delivered(1, 10).await);
    let mut c = redis.conn();
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("hookgate:inbound")
        .arg("mappers")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        post_stripe(&s.gw, &customer_created("evt_g2", "g2@example.org"))
            .await
            .0,
        202
    );
    // The group comes back at the start of the stream, so the first event may be sent again before
    // the second: wait for the second itself, not for a count.
    let g2_delivered = || {
        up.delivered()
            .iter()
            .any(|r| r.body["email"] == "g2@example.org")
    };
    assert!(
        common::poll_until(15, g2_delivered).await,
        "delivered after the group came back"
    );
    let got: Vec<Recorded> = up.delivered();
    // recreated from the start of the stream: the first event is sent again, with its key
    let first: HashSet<String> = got
        .iter()
        .filter(|r| r.body["email"] == "g1@example.org")
        .map(key_of)
        .collect();
    assert_eq!(first.len(), 1);
}

/// `upstream.routes` overrides method, path (placeholders percent-encoded) and body per action type; an
/// action that lacks a placeholder's value is dead-lettered without any request.
#[tokio::test(flavor = "multi_thread")]
async fn route_overrides_reach_the_upstream_as_configured() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let mapping = "source: crm\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: sync\n    update_contact:\n      email: $.login\n      ext_id: $.id\n      attributes: { PLAN: $.plan }\n    upsert_contact:\n      email: $.email\n    custom_event:\n      event_name: plan_changed\n      email: $.email\n      event_properties: { plan: $.plan }\n";
    let cfg = format!(
        "upstream:\n  url: \"{}/api\"\n  routes:\n    update_contact: {{ method: PATCH, path: \"/v2/people/{{ext_id}}?src=hg\", body: action }}\n    upsert_contact: {{ method: put, path: \"/v2/people/by-email/{{email}}\" }}\n    custom_event: {{ path: \"/v2/people/by-email/{{email}}/events/{{event_name}}\", body: none }}\n{FAST}",
        up.url()
    );
    let gw = Gateway::start(&redis, &[("crm.yaml", mapping)], &cfg).await;
    let gw_ref = &gw;
    let post = move |body: Value| async move { post_json(gw_ref, "crm", body.to_string()).await.0 };
    assert_eq!(
        post(json!({"id": "42 /x", "email": "a+b@example.org", "plan": "pro"})).await,
        202
    );
    assert!(up.wait_delivered(3, 10).await, "{:?}", up.requests());
    let reqs = up.requests();
    let got: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("PATCH", "/api/v2/people/42%20%2Fx?src=hg"),
            ("PUT", "/api/v2/people/by-email/a%2Bb%40example.org"),
            (
                "POST",
                "/api/v2/people/by-email/a%2Bb%40example.org/events/plan_changed"
            ),
        ]
    );
    assert_eq!(
        reqs[0].body,
        json!({"update_contact": {"identifier": {"ext_id": "42 /x"}, "attributes": {"PLAN": "pro"}}}),
        "body: action"
    );
    assert_eq!(
        reqs[1].body,
        json!({"email": "a+b@example.org", "updateEnabled": true}),
        "body: brevo (the default) on an overridden route"
    );
    assert_eq!(reqs[2].body, Value::Null, "body: none");
    assert!(!reqs[2].headers.contains_key("content-type"));
    assert_eq!(reqs[0].headers["content-type"], "application/json");
    let keys: HashSet<String> = reqs.iter().map(key_of).collect();
    assert_eq!(keys.len(), 3, "one Idempotency-Key per action");

    // identified by email, so the update's `{ext_id}` has no value: dead letter, no request at all
    assert_eq!(
        post(json!({"id": "43", "login": "c@example.org", "email": "c@example.org"})).await,
        202
    );
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = admin_get(&gw, "/v1/dead-letters?reason=route_error").await["dead_letters"]
            .as_array()
            .unwrap()
            .clone();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0]["rule"].as_str(), dead[0]["index"].as_u64()),
        (Some("sync"), Some(0))
    );
    let detail = dead[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("update_contact") && detail.contains("{ext_id}"),
        "{detail}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.requests().len(),
        3,
        "nothing sent for the unroutable event"
    );
    assert_eq!(
        pending(&redis),
        0,
        "the dead-lettered event is acknowledged"
    );
}

/// A form that names its charset reaches the upstream in UTF-8: the receiver checks it in that charset,
/// stores the raw bytes with the content type, and the worker reads them the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_latin1_form_reaches_the_upstream_as_utf8() {
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start(
        "activecampaign.yaml",
        "ACTIVECAMPAIGN_WEBHOOK_TOKEN",
        "ac-token-1",
    )
    .await;
    // 0xE9 is é and 0xF6 is ö in ISO-8859-1; as UTF-8 these bytes are malformed.
    let body = "type=subscribe&contact[id]=8&contact[email]=rene%40example.com&contact[first_name]=Ren%E9e&contact[fields][company]=K%F6ln+GmbH";
    let post = |ct: &'static str| {
        client()
            .post(format!("{}?token=ac-token-1", gw.url("activecampaign")))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post("application/x-www-form-urlencoded").await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "read as UTF-8, the bytes are refused"
    );
    let r = post("application/x-www-form-urlencoded; charset=ISO-8859-1")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(up.wait_delivered(1, 10).await, "delivered");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].body["email"], "rene@example.com");
    assert_eq!(reqs[0].body["attributes"]["FIRSTNAME"], "Renée");
    assert_eq!(reqs[0].body["attributes"]["COMPANY"], "Köln GmbH");
    let stored = inbound_entries(&redis, "hookgate");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1["content_type"],
        b"application/x-www-form-urlencoded; charset=ISO-8859-1"
    );
    assert_eq!(
        stored[0].1["body"],
        body.as_bytes(),
        "the raw bytes are kept"
    );
}

/// Replaying every dead letter of a source replays the letters there when it starts, each once. A
/// replayed event whose mapping still fails is dead-lettered anew, after them; the walk used to reach
/// those too (past one page of 500) and replayed them again and again until the request timed out.
#[tokio::test(flavor = "multi_thread")]
async fn replay_all_replays_each_letter_once_while_they_fail_again() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let broken = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    create_contact:\n      email: $.customer.email\n";
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", broken)],
        &format!("upstream: {{ url: \"{}\" }}\n{FAST}", up.url()),
    )
    .await;
    const N: usize = 700;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..N {
        let (c, url) = (client(), gw.url("shop"));
        sends.spawn(async move {
            let body = format!("{{\"id\":\"e{i}\",\"email\":\"flat@example.org\"}}");
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send();
            r.await.map(|r| r.status().as_u16()).unwrap_or(0)
        });
    }
    while let Some(s) = sends.join_next().await {
        assert_eq!(s.unwrap(), 202);
    }
    let dead_count = || {
        let mut c = redis.conn();
        redis::cmd("XLEN")
            .arg("hookgate:dead:inbound")
            .query::<usize>(&mut c)
            .unwrap()
    };
    assert!(
        poll_until(30, || dead_count() == N).await,
        "all dead-lettered: {}",
        dead_count()
    );
    // A bulk replay names its scope: a misspelt or missing filter is refused, not read as "everything".
    for (query, says) in [
        ("?sourc=shop", "unknown field `sourc`"),
        ("", "name what to replay"),
        ("?all=false", "name what to replay"),
        (
            "?all=true&source=shop",
            "all=true replays every dead letter",
        ),
    ] {
        let (s, r) = admin_post(&gw, &format!("/v1/dead-letters/replay{query}")).await;
        assert_eq!(s, 400, "{query}: {r}");
        let message = r["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {r}");
    }
    let (s, r) = admin_call(&gw, "GET", "/v1/dead-letters?limit=abc", None).await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(
        r["message"], "query: limit: invalid digit found in string",
        "the whole reason, not cut: {r}"
    );
    assert_eq!(dead_count(), N, "nothing replayed by a refused call");
    // A page that ends with the last letter has no next page.
    let last_page = admin_get(&gw, &format!("/v1/dead-letters?source=shop&limit={N}")).await;
    assert_eq!(last_page["dead_letters"].as_array().map(Vec::len), Some(N));
    assert!(last_page["next"].is_null(), "no empty page after the last");
    let first = admin_get(
        &gw,
        &format!("/v1/dead-letters?source=shop&limit={}", N - 1),
    )
    .await;
    assert_eq!(
        first["next"],
        first["dead_letters"][N - 2]["id"],
        "a page with one more after it points past its last letter"
    );
    let (s, r) = admin_post(&gw, "/v1/dead-letters/replay?source=shop").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["replayed"], N, "each letter once: {r}");
    assert!(
        poll_until(30, || dead_count() == N).await,
        "each replay failed again once: {}",
        dead_count()
    );
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

/// A delivered action is recognised by what was sent, not by its position: after a rule is changed and
/// the dead letter replayed, an action added in front is sent, and the one already delivered is not sent
/// again (it used to be the other way round: positions shifted and matched the wrong actions).
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_edit_sends_new_actions_and_skips_delivered_ones() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let rule = |actions: &str| {
        format!("source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    actions:\n{actions}")
    };
    let upsert = "      - upsert_contact: { email: $.email }\n";
    let seen = "      - custom_event: { event_name: seen, email: $.email }\n";
    let welcome = "      - custom_event: { event_name: welcome, email: $.email }\n";
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", &rule(&format!("{upsert}{seen}")))],
        &format!(
            "upstream: {{ url: \"{}\" }}\nmappings_poll: 1h\n{FAST}",
            up.url()
        ),
    )
    .await;
    // The contact is created; the event is refused, so the letter records only the upsert as done.
    up.plan(&[(201, "{}"), (400, "{\"message\":\"no such event\"}")]);
    assert_eq!(
        post_json(&gw, "shop", r#"{"email":"a@example.org"}"#)
            .await
            .0,
        202
    );
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = admin_get(&gw, "/v1/dead-letters?source=shop").await["dead_letters"][0].clone();
        if !dead.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = dead["id"].as_str().expect("dead-lettered").to_string();
    assert_eq!(up.requests().len(), 2);
    let upsert_key = up.requests()[0].headers["idempotency-key"].clone();

    // The rule gains an action in front; the replay must send it and the refused one, not the upsert.
    std::fs::write(
        gw.mappings_dir().join("shop.yaml"),
        rule(&format!("{welcome}{upsert}{seen}")),
    )
    .unwrap();
    let (s, r) = admin_post(&gw, "/v1/mappings/reload").await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = admin_post(&gw, &format!("/v1/dead-letters/{id}/replay")).await;
    assert_eq!(s, 200, "{r}");
    assert!(up.wait_delivered(3, 10).await, "{:?}", up.requests());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<(String, String)> = up.requests()[2..]
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.body["event_name"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        after,
        [
            ("/events".to_string(), "welcome".to_string()),
            ("/events".to_string(), "seen".to_string())
        ],
        "the new action and the refused one, not the delivered upsert"
    );
    assert!(
        up.requests()[2..]
            .iter()
            .all(|r| r.headers["idempotency-key"] != upsert_key),
        "no key sent twice"
    );
}

/// Both entry shapes are stored and delivered alike: `meta` (the default) and the field per member that
/// `inbound_format: fields` writes for workers of a version before `meta` during a rolling upgrade. The
/// form's charset, kept in the receipt, decides how the worker reads the body.
#[tokio::test(flavor = "multi_thread")]
async fn both_entry_formats_are_delivered_with_their_receipt() {
    // The shipped ActiveCampaign source deduplicates (by the body's bytes): `dedup` is its entry's token.
    let shapes = [
        ("meta", "body,meta,source"),
        (
            "fields",
            "body,client_ip,content_type,dedup,event_id,headers,received_at,request_id,source",
        ),
    ];
    for (format, names) in shapes {
        let redis = Redis::start();
        let up = RecordingUpstream::start().await;
        let secrets = tempfile::tempdir().unwrap();
        let mapping = activecampaign_mapping(secrets.path(), "ac-token-1");
        let cfg = format!(
            "inbound_format: {format}\nupstream: {{ url: \"{}\" }}\n{FAST}",
            up.url()
        );
        let gw = Gateway::start(&redis, &[("activecampaign.yaml", &mapping)], &cfg).await;
        let r = client()
            .post(format!("{}?token=ac-token-1", gw.url("activecampaign")))
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=ISO-8859-1",
            )
            .body("type=subscribe&contact[email]=rene%40example.com&contact[first_name]=Ren%E9e")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{format}");
        assert!(up.wait_delivered(1, 10).await, "{format}: delivered");
        let reqs = up.requests();
        assert_eq!(reqs[0].body["attributes"]["FIRSTNAME"], "Renée", "{format}");
        let stored = inbound_field_names(&redis, "hookgate");
        assert_eq!(stored[0].join(","), names, "{format}");
    }
}

/// An inbound entry whose `meta` is no receipt (written by something else, or damaged) is dead-lettered
/// as a mapping error that says why, with its source, body and `meta` kept as they were; it used to be
/// acknowledged and dropped. An entry without a `source` is no event and is still acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_with_an_unreadable_receipt_is_dead_lettered_not_dropped() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let mapping = "source: shop\nallow_ips: [127.0.0.0/8]\nrules:\n  - name: signup\n    create_contact:\n      email: $.email\n";
    let gw = Gateway::start(
        &redis,
        &[("shop.yaml", mapping)],
        &format!("upstream: {{ url: \"{}\" }}\n{FAST}", up.url()),
    )
    .await;
    let mut c = redis.conn();
    let broken = "{\"received_at\":17";
    let body = r#"{"email":"kept@example.org"}"#;
    let id: String = redis::cmd("XADD")
        .arg("hookgate:inbound")
        .arg("*")
        .arg("source")
        .arg("shop")
        .arg("meta")
        .arg(broken)
        .arg("body")
        .arg(body)
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("hookgate:inbound")
        .arg("*")
        .arg("nonsense")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let dl = one_dead_letter(&gw, 10).await;
    assert_eq!(
        (dl["reason"].as_str(), dl["source"].as_str()),
        (Some("mapping_error"), Some("shop")),
        "{dl}"
    );
    let detail = dl["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("entry {id}: its `meta` is not a receipt")),
        "{detail}"
    );
    let letter = dl["id"].as_str().unwrap();
    let full = admin_get(&gw, &format!("/v1/dead-letters/{letter}")).await;
    assert_eq!(full["event"]["body"], body, "{full}");
    let stored: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("hookgate:dead:inbound")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        stored.len(),
        1,
        "one dead letter: the entry without a source is no event"
    );
    assert_eq!(stored[0].1.get("meta").map(String::as_str), Some(broken));
    assert!(
        poll_until(5, || pending(&redis) == 0).await,
        "both entries are settled"
    );
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

/// A SendGrid batch end to end, through the shipped `mappings/sendgrid.yaml` with its verification key
/// read from a file: signed by OpenSSL (ECDSA P-256, PyPI cryptography), stored once (its retry is a
/// duplicate), refused when tampered with or signed by another key, and delivered as one upstream
/// request per mapped action, each with its own Idempotency-Key: 8 custom events, the hard bounce's
/// contact update, and the spam report's (`emailBlacklisted`).
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_sendgrid_batch_becomes_one_request_per_event() {
    let body = testdata("sendgrid_events.json");
    let now = now_secs();
    let request = |key: u64, ts: u64| json!({"preset": "sendgrid", "private_key": key, "timestamp": ts, "body": body});
    let signed = peer_sign(&json!([
        request(0x5e9d, now),
        request(0x0b0b, now),
        request(0x5e9d, now - 400)
    ]));
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start(
        "sendgrid.yaml",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        signed[0]["public_key"].as_str().unwrap(),
    )
    .await;
    let url = gw.url("sendgrid");
    let post = |headers: &Value, body: &str| post_signed(&url, headers, body);
    let (status, answer) = status_and_json(post(&signed[0]["headers"], &body).await).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = status_and_json(post(&signed[0]["headers"], &body).await).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)));
    let tampered = body.replace("bob@example.net", "eve@example.net");
    let (status, answer) = status_and_json(post(&signed[0]["headers"], &tampered).await).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("no signature matches"))
    );
    let (status, _) = status_and_json(post(&signed[1]["headers"], &body).await).await;
    assert_eq!(status, 401, "signed by another key");
    let (status, answer) = status_and_json(post(&signed[2]["headers"], &body).await).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("timestamp outside the 300 s window")),
        "signed too long ago"
    );
    let mut unsigned = signed[0]["headers"].clone();
    unsigned
        .as_object_mut()
        .unwrap()
        .remove("X-Twilio-Email-Event-Webhook-Signature");
    let (status, answer) = status_and_json(post(&unsigned, &body).await).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (
            401,
            Some("missing header X-Twilio-Email-Event-Webhook-Signature")
        )
    );
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "only the genuine batch is stored, once"
    );

    let reqs = delivered_exactly(&up, 10, 15, "ten requests delivered").await;
    assert_eq!(
        event_names(&reqs),
        [
            "email_blocked",
            "email_clicked",
            "email_complained",
            "email_delivered",
            "email_group_unsubscribed",
            "email_hard_bounced",
            "email_opened",
            "email_sent"
        ]
    );
    // The hard bounce flags its contact; the spam report stops mail to its own, recorded by an upsert.
    let contacts: Vec<(&str, &str, &Value)> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/contacts"))
        .map(|r| (r.method.as_str(), r.path.as_str(), &r.body))
        .collect();
    let bounce = json!({"attributes": {"EMAIL_BOUNCED": true}});
    let consent =
        json!({"email": "dan@example.com", "emailBlacklisted": true, "updateEnabled": true});
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert!(
        contacts.contains(&("PUT", "/contacts/bob%40example.net", &bounce)),
        "{contacts:?}"
    );
    assert!(
        contacts.contains(&("POST", "/contacts", &consent)),
        "{contacts:?}"
    );
    let distinct: HashSet<String> = reqs.iter().map(key_of).collect();
    assert_eq!(distinct.len(), 10, "one Idempotency-Key per action");
    assert_eq!(
        pending(&redis),
        0,
        "the entry is acknowledged once delivered"
    );
}

/// Paddle Billing end to end through the shipped `mappings/paddle.yaml`, its secret read from a file,
/// each request signed by `sign.py` as Paddle documents (`ts=..;h1=..`, checked against Paddle's own SDK
/// in `tests/verify_presets.rs`). A new customer and its completed transaction are answered `200` (as
/// Paddle asks) and become the upsert and the `payment_completed` event on the same `ext_id`; Paddle's
/// retry of the transaction (same `event_id`, signed anew) is a duplicate; a request signed ten minutes
/// ago, or with another secret, is refused and stored nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn paddle_customers_and_payments_reach_the_upstream() {
    const SECRET: &str = "pdl_ntfset_01jdk7s0000000000000000000_kZp3YwQ9rT2vX8mN4bC6dF1gH5jL7sA0";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("paddle.yaml", "PADDLE_WEBHOOK_SECRET", SECRET).await;
    let customer = testdata("paddle_customer_created.json");
    let transaction = testdata("paddle_transaction_completed.json");
    let now = now_secs();
    let sign = |body: &str, secret: &str, ts: u64| json!({"preset": "paddle", "secret": secret, "body": body, "timestamp": ts});
    let signed = peer_sign(&json!([
        sign(&customer, SECRET, now),
        sign(&transaction, SECRET, now),
        sign(&transaction, SECRET, now + 1),
        sign(&transaction, SECRET, now - 600),
        sign(&transaction, "pdl_ntfset_another", now),
    ]));
    let url = gw.url("paddle");
    let post = |i: usize, body: &str| post_signed(&url, &signed[i]["headers"], body);
    for (i, body, what) in [
        (0, &customer, "the customer"),
        (1, &transaction, "the transaction"),
        (2, &transaction, "Paddle's retry, signed anew"),
    ] {
        let r = post(i, body).await;
        assert_eq!(r.status().as_u16(), 200, "{what}");
        assert_eq!(
            r.text().await.unwrap(),
            "",
            "{what}: the preset's empty 200"
        );
    }
    for (i, what) in [(3, "ten minutes old"), (4, "another secret")] {
        let r = post(i, &transaction).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the customer and the transaction, once each"
    );
    assert_eq!(duplicates_counted(&gw, "paddle").await, 1.0, "the retry");

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    let upsert = first_to(&reqs, "/contacts");
    assert_eq!(
        upsert,
        &json!({
            "email": "katherine.johnson@example.com",
            "ext_id": "ctm_01jdk8wz1p6s5r4q3n2m1k0j9h",
            "attributes": {"FIRSTNAME": "Katherine", "LASTNAME": "Johnson", "LOCALE": "en", "MARKETING_CONSENT": true},
            "updateEnabled": true
        })
    );
    let event = first_to(&reqs, "/events");
    assert_eq!(event["event_name"], "payment_completed");
    assert_eq!(
        event["identifiers"],
        json!({"ext_id": "ctm_01jdk8wz1p6s5r4q3n2m1k0j9h"}),
        "the same contact, by its Paddle id"
    );
    assert_eq!(event["event_properties"]["total"], json!(71.4));
}

/// Webflow end to end through the shipped `mappings/webflow.yaml`, its secret read from a file, each
/// request signed by `sign.py` as Webflow documents (checked against Webflow's own SDK in
/// `tests/verify_presets.rs`). A form submission is answered `200` (any other status is a failure to
/// Webflow) and becomes the contact upsert and the `form_submitted` event; its retry twenty minutes on,
/// inside the file's 35-minute window, is a duplicate; one signed forty minutes ago, or with another
/// secret, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_webflow_form_submission_becomes_a_contact() {
    const SECRET: &str = "whsec_4d2c7f1e9a8b3c6d";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("webflow.yaml", "WEBFLOW_WEBHOOK_SECRET", SECRET).await;
    let body = testdata("webflow_form_submission.json");
    let other = body.replace("6743523f9a1b2c3d4e5f6071", "6743523f9a1b2c3d4e5f6072");
    let now_ms = now_secs() * 1000;
    let sign = |body: &str, secret: &str, ms: u64| json!({"preset": "webflow", "secret": secret, "body": body, "timestamp": ms});
    let signed = peer_sign(&json!([
        sign(&body, SECRET, now_ms),
        sign(&body, SECRET, now_ms - 20 * 60 * 1000),
        sign(&other, SECRET, now_ms - 40 * 60 * 1000),
        sign(&other, "whsec_another", now_ms),
    ]));
    let url = gw.url("webflow");
    let post = |i: usize, body: &str| post_signed(&url, &signed[i]["headers"], body);
    let r = post(0, &body).await;
    assert_eq!(r.status().as_u16(), 200, "a submission");
    assert_eq!(r.text().await.unwrap(), "", "the preset's empty 200");
    let r = post(1, &body).await;
    assert_eq!(
        r.status().as_u16(),
        200,
        "its retry, signed twenty minutes ago"
    );
    for (i, what) in [(2, "signed forty minutes ago"), (3, "another secret")] {
        let r = post(i, &other).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1, "stored once");
    assert_eq!(
        duplicates_counted(&gw, "webflow").await,
        1.0,
        "the retry is a duplicate"
    );

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    let upsert = first_to(&reqs, "/contacts");
    assert_eq!(
        upsert,
        &json!({
            "email": "grace.hopper@example.com",
            "attributes": {"FIRSTNAME": "Grace", "LASTNAME": "Hopper", "SMS": "15550100142"},
            "updateEnabled": true
        }),
        "the empty Company left out"
    );
    let event = first_to(&reqs, "/events");
    assert_eq!(event["event_name"], "form_submitted");
    assert_eq!(event["event_properties"]["form"], "Newsletter signup");
}

/// Square end to end through the shipped `mappings/square.yaml`, its signature key read from a file,
/// each request signed by `sign.py` over the URL hookgate is reached at and the body, as Square does
/// (checked against Square's own SDK in `tests/verify_presets.rs`). A new customer becomes a contact;
/// Square's retry of it is a duplicate; an update from a customer who unsubscribed updates the
/// contact and stops mail to it. Another key and a request signed for another URL are refused; nothing
/// refused is stored.
#[tokio::test(flavor = "multi_thread")]
async fn square_customers_reach_the_upstream_and_an_opt_out_stops_mail() {
    const KEY: &str = "Ibxx_5AKakO-3qeNVR61Dw";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("square.yaml", "SQUARE_WEBHOOK_SIGNATURE_KEY", KEY).await;
    let created = testdata("square_customer_created.json");
    let mut updated: Value = serde_json::from_str(&created).unwrap();
    updated["type"] = json!("customer.updated");
    updated["event_id"] = json!("b4ce4698-00de-4b5d-a771-4941b3913b34");
    updated["data"]["object"]["customer"]["preferences"]["email_unsubscribed"] = json!(true);
    let updated = updated.to_string();
    let url = gw.url("square");
    let sign = |key: &str, url: &str, body: &str| json!({"preset": "square", "secret": key, "url": url, "body": body});
    let signed = peer_sign(&json!([
        sign(KEY, &url, &created),
        sign(KEY, &url, &updated),
        sign("Ibxx_5AKakO-3qeNVR61Dx", &url, &updated),
        sign(KEY, "https://hooks.example.com/webhooks/square", &updated),
    ]));
    let post = |i: usize, body: &str| post_signed(&url, &signed[i]["headers"], body);
    assert_eq!(post(0, &created).await.status().as_u16(), 202);
    let retry = post(0, &created).await;
    assert_eq!(retry.status().as_u16(), 200, "Square's retry");
    assert_eq!(retry.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(post(1, &updated).await.status().as_u16(), 202);
    for (i, what) in [(2, "another key"), (3, "signed for another URL")] {
        let r = post(i, &updated).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the new customer and its update, once each"
    );
    assert_eq!(duplicates_counted(&gw, "square").await, 1.0, "the retry");

    let reqs = delivered_exactly(&up, 3, 10, "delivered").await;
    let upserts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/contacts")
        .map(|r| &r.body)
        .collect();
    assert_eq!(upserts.len(), 3, "{reqs:?}");
    let contact = json!({
        "email": "ada.lovelace@example.com",
        "ext_id": "square-A0AP25A6SCVTH8JES9BX01GXM4",
        "attributes": {"FIRSTNAME": "Ada", "LASTNAME": "Lovelace", "SMS": "+12125554240",
                       "COMPANY": "Analytical Engines", "CITY": "New York", "ZIP": "10003", "COUNTRY": "US"},
        "updateEnabled": true
    });
    assert_eq!(
        upserts.iter().filter(|b| ***b == contact).count(),
        2,
        "the contact, twice (created, updated): {upserts:?}"
    );
    let opted_out: Vec<&&Value> = upserts
        .iter()
        .filter(|b| b.get("emailBlacklisted").is_some())
        .collect();
    assert_eq!(
        opted_out,
        vec![&&json!({
            "email": "ada.lovelace@example.com",
            "ext_id": "square-A0AP25A6SCVTH8JES9BX01GXM4",
            "emailBlacklisted": true,
            "updateEnabled": true
        })],
        "one opt-out, from the update"
    );
}

/// Segment end to end through the shipped `mappings/segment.yaml`, its shared secret read from a file,
/// each request signed by `sign.py` as Segment's Webhooks destinations sign (the hex HMAC-SHA1 of the
/// body; checked against OpenSSL and Node's `createHmac` in the unit tests). An identify call becomes
/// the contact and a track call the event with all its properties; Segment's retry of the track call
/// is a duplicate; another secret and no signature are refused and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn segment_identify_and_track_reach_the_upstream() {
    const SECRET: &str = "segment-shared-secret-91c2";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("segment.yaml", "SEGMENT_SHARED_SECRET", SECRET).await;
    let identify = testdata("segment_identify.json");
    let track = testdata("segment_track.json");
    let sign =
        |secret: &str, body: &str| json!({"preset": "segment", "secret": secret, "body": body});
    let signed = peer_sign(&json!([
        sign(SECRET, &identify),
        sign(SECRET, &track),
        sign("segment-shared-secret-91c3", &track),
    ]));
    let url = gw.url("segment");
    let post = |i: Option<usize>, body: &str| {
        post_signed(
            &url,
            i.map_or(&Value::Null, |i| &signed[i]["headers"]),
            body,
        )
    };
    for (i, body, what) in [(0, &identify, "identify"), (1, &track, "track")] {
        assert_eq!(post(Some(i), body).await.status().as_u16(), 202, "{what}");
    }
    let retry = post(Some(1), &track).await;
    assert_eq!(retry.status().as_u16(), 200, "Segment's retry");
    assert_eq!(retry.json::<Value>().await.unwrap()["duplicate"], true);
    for (i, what) in [(Some(2), "another secret"), (None, "no signature")] {
        let r = post(i, &track).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the identify and the track call, once each"
    );
    assert_eq!(duplicates_counted(&gw, "segment").await, 1.0, "the retry");

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    assert_eq!(
        first_to(&reqs, "/contacts"),
        &json!({
            "email": "peter@example.com",
            "ext_id": "97980cfea0067",
            "attributes": {"FIRSTNAME": "Peter", "LASTNAME": "Gibbons", "SMS": "+15550102030",
                           "COMPANY": "Initech", "CITY": "Austin", "ZIP": "78701", "COUNTRY": "US"},
            "updateEnabled": true
        })
    );
    let event = first_to(&reqs, "/events");
    let sent: Value = serde_json::from_str(&track).unwrap();
    assert_eq!(event["event_name"], "order_completed");
    assert_eq!(event["event_date"], "2026-11-20T11:20:01.987Z");
    assert_eq!(
        event["identifiers"],
        json!({"email_id": "peter@example.com", "ext_id": "97980cfea0067"})
    );
    assert_eq!(
        event["event_properties"], sent["properties"],
        "every property, as Segment sent it"
    );
}

/// Mailjet end to end through the shipped `mappings/mailjet.yaml`, its password read from a file: Mailjet
/// sends basic auth (the credentials in the URL it calls) and reads any answer but `200` as a failure.
/// A grouped request (the Event API's version 2, a list) becomes each of its events (its unsubscribe
/// from a contact list an event only), and one event on its own (version 1), a spam report, that event
/// and the address's suppression; each is answered an empty `200`, the same bytes again are a
/// duplicate, and another password or none is refused and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn mailjet_grouped_and_single_events_reach_the_upstream() {
    const PASSWORD: &str = "mj-hook-password-7d3e";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("mailjet.yaml", "MAILJET_WEBHOOK_PASSWORD", PASSWORD).await;
    let grouped = testdata("mailjet_grouped.json");
    let single = r#"{"event":"spam","time":1764000000,"MessageID":19421777396190491,"email":"ada@example.com","mj_campaign_id":7173,"mj_contact_id":320,"customcampaign":"","CustomID":"","Payload":"","source":"JMRPP"}"#;
    let signed = peer_sign(&json!([
        {"preset": "basic", "username": "mailjet", "secret": PASSWORD},
        {"preset": "basic", "username": "mailjet", "secret": "mj-hook-password-7d3f"},
    ]));
    let url = gw.url("mailjet");
    let post = |i: Option<usize>, body: &str| {
        post_signed(
            &url,
            i.map_or(&Value::Null, |i| &signed[i]["headers"]),
            body,
        )
    };
    for (body, what) in [
        (grouped.as_str(), "a grouped request"),
        (single, "a single event"),
        (grouped.as_str(), "Mailjet's retry"),
    ] {
        let r = post(Some(0), body).await;
        assert_eq!(r.status().as_u16(), 200, "{what}");
        assert_eq!(r.text().await.unwrap(), "", "{what}: the file's empty 200");
    }
    for (i, what) in [(Some(1), "another password"), (None, "no credentials")] {
        let r = post(i, single).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the grouped request and the single event, once each"
    );
    assert_eq!(duplicates_counted(&gw, "mailjet").await, 1.0, "the retry");

    // The grouped request: three events and the hard bounce's flag; the single one: the spam report
    // and the suppression.
    let reqs = delivered_exactly(&up, 6, 10, "delivered").await;
    assert_eq!(
        sorted_at(&reqs, "/events", "event_name"),
        [
            "email_complained",
            "email_hard_bounced",
            "email_opened",
            "email_unsubscribed"
        ]
    );
    let spam = reqs
        .iter()
        .find(|r| r.body["event_name"] == "email_complained")
        .map(|r| &r.body)
        .expect("the spam report");
    assert_eq!(
        spam["event_properties"],
        json!({"message_id": "19421777396190491", "campaign_id": 7173, "feedback_loop": "JMRPP"}),
        "the id as text, past 2^53"
    );
    let contacts: Vec<(&str, &str, &Value)> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/contacts"))
        .map(|r| (r.method.as_str(), r.path.as_str(), &r.body))
        .collect();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert!(
        contacts.contains(&(
            "PUT",
            "/contacts/bounce%40example.org",
            &json!({"attributes": {"EMAIL_BOUNCED": true}})
        )),
        "{contacts:?}"
    );
    assert!(
        contacts.contains(&(
            "POST",
            "/contacts",
            &json!({"email": "ada@example.com", "emailBlacklisted": true, "updateEnabled": true})
        )),
        "{contacts:?}"
    );
}

/// Twilio end to end through the shipped `mappings/twilio.yaml`, its Auth Token read from a file, each
/// form signed by Twilio's own library (PyPI `twilio`, through `sign.py`). A recipient's STOP stops texts
/// to their number, by phone, and a text that failed because they had opted out earlier does too; both
/// are answered with Twilio's empty TwiML. Twilio's request again is a duplicate; another token, and the
/// STOP's signature on a START, are refused and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_twilio_stop_reaches_the_upstream_by_phone() {
    const TOKEN: &str = "twilio-auth-token-5c21";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("twilio.yaml", "TWILIO_AUTH_TOKEN", TOKEN).await;
    let stop = testdata("twilio_inbound_stop.form");
    let failed = "SmsSid=SM8&SmsStatus=failed&MessageStatus=failed&ErrorCode=21610&To=%2B14155550123&MessageSid=SM8&MessagingServiceSid=MG1&AccountSid=AC1&From=%2B14155550199&ApiVersion=2010-04-01";
    let url = gw.url("twilio");
    let sign = |token: &str, body: &str| json!({"preset": "twilio", "secret": token, "url": url, "body": body});
    let mut signed = peer_sign(&json!([
        sign(TOKEN, &stop),
        sign(TOKEN, failed),
        sign("twilio-auth-token-5c22", failed),
    ]));
    for s in &mut signed {
        s["headers"]["Content-Type"] = json!("application/x-www-form-urlencoded");
    }
    let post = |i: usize, body: &str| post_signed(&url, &signed[i]["headers"], body);
    // Twilio signs the parameters sorted, not their order: the STOP reordered is the same request.
    let mut pairs: Vec<&str> = stop.split('&').collect();
    pairs.reverse();
    let reordered = pairs.join("&");
    assert_ne!(reordered, stop);
    for (i, body, what) in [
        (0, stop.as_str(), "a STOP"),
        (0, stop.as_str(), "the same request again"),
        (
            0,
            reordered.as_str(),
            "the STOP with its parameters reordered",
        ),
        (
            1,
            failed,
            "a text that failed: the number opted out earlier",
        ),
    ] {
        let r = post(i, body).await;
        assert_eq!(r.status().as_u16(), 200, "{what}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/xml",
            "{what}"
        );
        assert_eq!(
            r.text().await.unwrap(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#,
            "{what}: an empty TwiML answer, so nothing is texted back"
        );
    }
    let start = stop.replace("Body=+Stop+", "Body=START");
    for (i, body, what) in [
        (2, failed, "another token"),
        (0, start.as_str(), "the STOP's signature on a START"),
    ] {
        let r = post(i, body).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the STOP and the status callback, once each"
    );
    assert_eq!(
        duplicates_counted(&gw, "twilio").await,
        2.0,
        "the request again, and reordered"
    );

    let reqs = delivered_exactly(&up, 4, 10, "delivered").await;
    let mut contacts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/contacts")
        .map(|r| &r.body)
        .collect();
    contacts.sort_by_key(|b| b.to_string());
    assert_eq!(
        contacts,
        [
            &json!({"attributes": {"SMS": "+14155550100"}, "smsBlacklisted": true, "updateEnabled": true}),
            &json!({"attributes": {"SMS": "+14155550123"}, "smsBlacklisted": true, "updateEnabled": true}),
        ],
        "both numbers may no longer be texted: {reqs:?}"
    );
    let events: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/events")
        .map(|r| &r.body)
        .collect();
    assert_eq!(events.len(), 2, "{reqs:?}");
    assert!(
        events.contains(&&json!({
            "event_name": "sms_unsubscribed",
            "identifiers": {"phone_id": "+14155550100"},
            "event_properties": {"keyword": "STOP", "message_sid": "SM9c1f4ab2e17f4a1d8a6c8a9d3b2e7f10",
                                 "to": "+14155550199", "messaging_service_sid": "MG2b6e6fbc8a4d4e0f9c3b7a1d5e8f2c44"}
        })),
        "{events:?}"
    );
    assert!(
        events.contains(&&json!({
            "event_name": "sms_failed",
            "identifiers": {"phone_id": "+14155550123"},
            "event_properties": {"message_sid": "SM8", "from": "+14155550199", "messaging_service_sid": "MG1", "error_code": "21610"}
        })),
        "{events:?}"
    );
}

/// Intercom end to end through the shipped `mappings/intercom.yaml`, its client secret read from a
/// file, each notification signed by `sign.py` as Intercom documents it (`sha1=` and the hex HMAC-SHA1
/// of the body, with Python's hmac, not hookgate's code). Intercom's HEAD check of the URL is answered; a
/// new user becomes the contact, and an unsubscribe from every email stops mail to the address.
/// Intercom's retry of the first, with its attempt count raised (other bytes, signed anew), is a
/// duplicate by the notification id; another secret, a changed byte and no signature are refused, on a
/// notification of their own, and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_intercom_user_becomes_a_contact() {
    const SECRET: &str = "intercom-client-secret-0b7e";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("intercom.yaml", "INTERCOM_CLIENT_SECRET", SECRET).await;
    let url = gw.url("intercom");
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200, "Intercom's check of the URL");
    let created = testdata("intercom_contact_user_created.json");
    let retried = created.replace(r#""delivery_attempts":1"#, r#""delivery_attempts":2"#);
    assert_ne!(retried, created);
    let unsubscribed = r#"{"type":"notification_event","app_id":"abc123def","data":{"type":"notification_event_data","item":{"type":"contact_unsubscribe","contact":{"type":"contact","id":"6961d4041c1e12de4c5499cc","email":"grace.hopper@example.com","unsubscribed_from_emails":true},"subscription_types":{"type":"list","data":[]},"created_at":1768019000}},"links":{},"id":"notif_2a7c1d0e-5b8f-4e63-9a41-0c6d2f1b7e55","topic":"contact.unsubscribed","delivery_status":"pending","delivery_attempts":1,"delivered_at":0,"first_sent_at":1768019000,"created_at":1768019000,"self":null}"#;
    let forged = unsubscribed.replace("notif_2a7c", "notif_3b8d");
    let changed = forged.replace("grace.hopper", "grace.hoppex");
    let sign =
        |secret: &str, body: &str| json!({"preset": "intercom", "secret": secret, "body": body});
    let signed = peer_sign(&json!([
        sign(SECRET, &created),
        sign(SECRET, &retried),
        sign(SECRET, unsubscribed),
        sign("intercom-client-secret-0b7f", &forged),
        sign(SECRET, &forged),
    ]));
    let post = |i: Option<usize>, body: &str| {
        post_signed(
            &url,
            i.map_or(&Value::Null, |i| &signed[i]["headers"]),
            body,
        )
    };
    assert_eq!(post(Some(0), &created).await.status().as_u16(), 202);
    let retry = post(Some(1), &retried).await;
    assert_eq!(retry.status().as_u16(), 200, "Intercom's retry");
    assert_eq!(retry.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(post(Some(2), unsubscribed).await.status().as_u16(), 202);
    for (i, body, what) in [
        (Some(3), forged.as_str(), "another secret"),
        (Some(4), changed.as_str(), "a changed body"),
        (None, forged.as_str(), "no signature"),
    ] {
        let r = post(i, body).await;
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the user and the unsubscribe, once each"
    );
    assert_eq!(duplicates_counted(&gw, "intercom").await, 1.0, "the retry");
    let reqs = delivered_exactly(&up, 3, 10, "delivered").await;
    let contacts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/contacts")
        .map(|r| &r.body)
        .collect();
    assert!(
        contacts.contains(&&json!({
            "email": "grace.hopper@example.com",
            "ext_id": "intercom-6961d4041c1e12de4c5499cc",
            "attributes": {"FIRSTNAME": "Grace", "LASTNAME": "Brewster Hopper", "SMS": "+16505550142",
                           "CITY": "Mountain View", "INTERCOM_ROLE": "user"},
            "updateEnabled": true
        })),
        "{contacts:?}"
    );
    assert!(
        contacts.contains(&&json!({
            "email": "grace.hopper@example.com",
            "ext_id": "intercom-6961d4041c1e12de4c5499cc",
            "emailBlacklisted": true,
            "updateEnabled": true
        })),
        "{contacts:?}"
    );
    assert_eq!(
        first_to(&reqs, "/events")["event_name"],
        "email_unsubscribed",
        "{reqs:?}"
    );
}

/// Tally end to end through the shipped `mappings/tally.yaml`, its signing secret read from a file, the
/// response signed by `sign.py` as Tally's own example computes it (the base64 HMAC-SHA256 of
/// JSON.stringify of the body, which `sign.py` checks is the body sent). The response becomes the
/// contact and a `form_submitted` event; a resend, even with another event id, is a duplicate by the
/// response id; another secret, a changed answer and no signature are refused, on a response of their
/// own, and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_tally_response_becomes_a_contact_and_an_event() {
    const SECRET: &str = "tally-signing-secret-44d0";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("tally.yaml", "TALLY_SIGNING_SECRET", SECRET).await;
    let response = testdata("tally_form_response.json");
    // A resend with another event id (Tally does not say it keeps it): the same response, by its id.
    let resent = response.replace("a4cb511e-d513", "b5dc622f-e624");
    assert_ne!(resent, response);
    // Forgeries carry a response of their own, so only the signature check can keep them out.
    let forged = response.replace("2wgx4n", "3xhy5o");
    assert_ne!(forged, response);
    let changed = forged.replace("Acme BV", "Acme SA");
    let sign =
        |secret: &str, body: &str| json!({"preset": "tally", "secret": secret, "body": body});
    let signed = peer_sign(&json!([
        sign(SECRET, &response),
        sign(SECRET, &resent),
        sign("tally-signing-secret-44d1", &forged),
        sign(SECRET, &forged),
    ]));
    let url = gw.url("tally");
    let post = |i: Option<usize>, body: &str| {
        post_signed(
            &url,
            i.map_or(&Value::Null, |i| &signed[i]["headers"]),
            body,
        )
    };
    assert_eq!(post(Some(0), &response).await.status().as_u16(), 202);
    let resend = post(Some(1), &resent).await;
    assert_eq!(resend.status().as_u16(), 200, "Tally's resend");
    assert_eq!(resend.json::<Value>().await.unwrap()["duplicate"], true);
    for (i, body, what) in [
        (Some(2), forged.as_str(), "another secret"),
        (Some(3), changed.as_str(), "a changed answer"),
        (None, forged.as_str(), "no signature"),
    ] {
        assert_eq!(post(i, body).await.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "the response, once"
    );
    assert_eq!(duplicates_counted(&gw, "tally").await, 1.0, "the resend");
    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    assert_eq!(
        first_to(&reqs, "/contacts"),
        &json!({
            "email": "zoe.vanderberg@example.com",
            "attributes": {"FIRSTNAME": "Zoë", "LASTNAME": "Van der Berg", "SMS": "+32491223344", "COMPANY": "Acme BV"},
            "updateEnabled": true
        })
    );
    assert_eq!(
        first_to(&reqs, "/events"),
        &json!({
            "event_name": "form_submitted",
            "event_date": "2026-06-28T15:00:21.000Z",
            "identifiers": {"email_id": "zoe.vanderberg@example.com"},
            "event_properties": {"form_id": "VwbNEw", "form_name": "Early access", "response_id": "2wgx4n",
                                 "utm_source": "linkedin", "utm_campaign": "newsletter"}
        })
    );
}

/// Cal.com end to end through the shipped `mappings/calcom.yaml`, its secret read from a file, each
/// request signed by `sign.py` as Cal.com's sender signs (the hex HMAC-SHA256 of the body). A booking
/// makes both attendees contacts and `meeting_booked` events; a no-show marks only the absent one; the
/// same request again is a duplicate; Cal.com's `no-secret-provided` and another secret are refused and
/// not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_cal_com_booking_makes_its_attendees_contacts() {
    const SECRET: &str = "calcom-webhook-secret-7a19";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("calcom.yaml", "CALCOM_WEBHOOK_SECRET", SECRET).await;
    let booking = testdata("calcom_booking_created.json");
    let no_show = r#"{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"2026-12-02T16:00:00.000Z","payload":{"message":"grace.hopper@example.com marked as no-show","attendees":[{"email":"grace.hopper@example.com","noShow":true},{"email":"ada@example.org","noShow":false}],"bookingUid":"bFJeNb2uX8ANpT3JL5EfXw","bookingId":100}}"#;
    // Forgeries carry bytes of their own, so only the signature check can keep them out.
    let forged = no_show.replace("2026-12-02T16:00:00.000Z", "2026-12-02T16:00:01.000Z");
    let signed = peer_sign(&json!([
        {"preset": "calcom", "secret": SECRET, "body": booking},
        {"preset": "calcom", "secret": SECRET, "body": no_show},
        {"preset": "calcom", "secret": "calcom-webhook-secret-7a1a", "body": forged},
    ]));
    let url = gw.url("calcom");
    let post = |headers: &Value, body: &str| post_signed(&url, headers, body);
    assert_eq!(
        post(&signed[0]["headers"], &booking)
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        post(&signed[1]["headers"], no_show).await.status().as_u16(),
        202
    );
    let again = post(&signed[0]["headers"], &booking).await;
    assert_eq!(again.status().as_u16(), 200, "the same request again");
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);
    let unsigned = json!({"X-Cal-Signature-256": "no-secret-provided"});
    for (headers, what) in [
        (&signed[2]["headers"], "another secret"),
        (&unsigned, "a webhook without a secret"),
    ] {
        assert_eq!(
            post(headers, &forged).await.status().as_u16(),
            401,
            "{what}"
        );
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the booking and the no-show, once each"
    );
    assert_eq!(
        duplicates_counted(&gw, "calcom").await,
        1.0,
        "the request again"
    );

    // Two contacts and two events from the booking, one event from the no-show.
    let reqs = delivered_exactly(&up, 5, 10, "delivered").await;
    assert_eq!(
        sorted_at(&reqs, "/contacts", "email"),
        ["ada@example.org", "grace.hopper@example.com"]
    );
    let grace = reqs
        .iter()
        .find(|r| r.path == "/contacts" && r.body["email"] == "grace.hopper@example.com")
        .map(|r| &r.body);
    assert_eq!(
        grace,
        Some(
            &json!({"email": "grace.hopper@example.com", "updateEnabled": true,
            "attributes": {"FIRSTNAME": "Grace", "LASTNAME": "Hopper", "SMS": "+16505550142", "TIMEZONE": "America/New_York"}})
        )
    );
    let mut events: Vec<(&str, &str)> = reqs
        .iter()
        .filter(|r| r.path == "/events")
        .map(|r| {
            (
                r.body["event_name"].as_str().unwrap_or_default(),
                r.body["identifiers"]["email_id"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            ("meeting_booked", "ada@example.org"),
            ("meeting_booked", "grace.hopper@example.com"),
            ("meeting_no_show", "grace.hopper@example.com")
        ]
    );
}

/// Customer.io end to end through the shipped `mappings/customerio.yaml`, its signing key read from a
/// file, each request signed by `sign.py` as Customer.io signs (`v0:<timestamp>:<body>`, checked against
/// Customer.io's own library in tests/verify_presets.rs). A click becomes the event, a spam report the
/// event and the suppression; the click sent again a minute later, signed anew, is a duplicate by its
/// event id; another key, a request signed 9 days ago and no signature are refused, on an event of
/// their own, and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn customer_io_activity_reaches_the_upstream() {
    const KEY: &str = "cio-signing-key-91aa";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("customerio.yaml", "CUSTOMERIO_WEBHOOK_SIGNING_KEY", KEY).await;
    let clicked = testdata("customerio_email_clicked.json");
    let spammed = r#"{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQN","object_type":"email","metric":"spammed","timestamp":1764000300,"data":{"customer_id":"42","identifiers":{"id":"42","email":"grace.hopper@example.com"},"recipient":"grace.hopper@example.com","subject":"Your December picks","delivery_id":"RPILAgUBcRhIBqSbvEZotk16z5A=","campaign_id":123,"action_id":456}}"#;
    let forged = spammed.replace("WPQN", "WPQZ");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sign = |key: &str, body: &str, ts: i64| json!({"preset": "customerio", "secret": key, "body": body, "timestamp": ts});
    let signed = peer_sign(&json!([
        sign(KEY, &clicked, now),
        sign(KEY, &clicked, now + 60),
        sign(KEY, spammed, now),
        sign("cio-signing-key-91ab", &forged, now),
        sign(KEY, &forged, now - 9 * 86_400),
    ]));
    let url = gw.url("customerio");
    let post = |i: Option<usize>, body: &str| {
        post_signed(
            &url,
            i.map_or(&Value::Null, |i| &signed[i]["headers"]),
            body,
        )
    };
    assert_eq!(post(Some(0), &clicked).await.status().as_u16(), 202);
    let again = post(Some(1), &clicked).await;
    assert_eq!(again.status().as_u16(), 200, "sent again, signed anew");
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(post(Some(2), spammed).await.status().as_u16(), 202);
    for (i, what) in [
        (Some(3), "another key"),
        (Some(4), "signed 9 days ago"),
        (None, "no signature"),
    ] {
        assert_eq!(post(i, &forged).await.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        2,
        "the click and the spam report, once each"
    );
    assert_eq!(
        duplicates_counted(&gw, "customerio").await,
        1.0,
        "sent again"
    );
    let reqs = delivered_exactly(&up, 3, 10, "delivered").await;
    assert_eq!(
        sorted_at(&reqs, "/events", "event_name"),
        ["email_clicked", "email_complained"]
    );
    assert_eq!(
        first_to(&reqs, "/contacts"),
        &json!({"email": "grace.hopper@example.com", "emailBlacklisted": true, "updateEnabled": true})
    );
}

/// Mailgun end to end through the shipped `mappings/mailgun.yaml`, its signing key read from a file:
/// Mailgun signs a timestamp and a token in the body, not the event, so the token is used once. A
/// genuine failure is stored and becomes the hard bounce and the contact's flag; the same request
/// again (Mailgun's retry) is a duplicate, and so is its signature block put on another event (a
/// forged click for another address), which is never stored; another key, a stale block and no block
/// are refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_mailgun_signature_is_used_once_whatever_body_it_comes_with() {
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start(
        "mailgun.yaml",
        "MAILGUN_WEBHOOK_SIGNING_KEY",
        "mg-signing-key-1",
    )
    .await;
    let now = now_secs();
    let request =
        |secret: &str, ts: u64| json!({"preset": "mailgun", "secret": secret, "timestamp": ts});
    let signed = peer_sign(&json!([
        request("mg-signing-key-1", now),
        request("mg-signing-key-other", now),
        request("mg-signing-key-1", now - 10 * 3600)
    ]));
    let with_block = |file: &str, i: usize| {
        let mut event: Value = serde_json::from_str(&testdata(file)).unwrap();
        event["signature"] = signed[i]["signature"].clone();
        event.to_string()
    };
    let post = |body: String| post_json(&gw, "mailgun", body);
    // Mailgun ends its retries on a 200 (not any 2xx): the preset answers with an empty one.
    let failed = with_block("mailgun_failed.json", 0);
    let (status, answer) = post(failed.clone()).await;
    assert_eq!((status, &answer), (200, &Value::Null));
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1, "stored");
    let (status, _) = post(failed.clone()).await;
    assert_eq!(status, 200, "Mailgun's retry");
    let forged =
        with_block("mailgun_clicked.json", 0).replace("ada@example.com", "eve@example.com");
    let (status, _) = post(forged).await;
    assert_eq!(
        status, 200,
        "a used signature on another event is a duplicate"
    );
    let dup = duplicates_counted(&gw, "mailgun").await;
    assert_eq!(
        dup, 2.0,
        "the retry and the forged event are both counted as redeliveries"
    );
    let (status, answer) = post(with_block("mailgun_clicked.json", 1)).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("no signature matches"))
    );
    let (status, answer) = post(with_block("mailgun_clicked.json", 2)).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("timestamp outside the 32400 s window")),
        "signed ten hours ago, past Mailgun's eight hours of retries"
    );
    let (status, answer) = post(r#"{"event-data": {"event": "opened"}}"#.to_owned()).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("missing body field signature"))
    );
    // The block's members as an array (which serde would take for a struct): no token to dedup on, so
    // it must not verify either.
    let block = &signed[0]["signature"];
    let as_array = json!({
        "signature": [block["timestamp"], block["token"], block["signature"]],
        "event-data": {"event": "unsubscribed", "recipient": "eve@example.com", "timestamp": now}
    });
    let (status, answer) = post(as_array.to_string()).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("malformed body field signature: not an object"))
    );
    // The captured request as a form, whose fields the mapper would read instead: refused before any
    // check, since the token would not be read as the dedup id there.
    let r = client()
        .post(gw.url("mailgun"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "{failed}&event-data[event]=unsubscribed&event-data[recipient]=eve%40example.com"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let stored = inbound_entries(&redis, "hookgate");
    assert_eq!(stored.len(), 1, "only the genuine event is stored, once");

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    let event = first_to(&reqs, "/events");
    assert_eq!(
        (
            event["event_name"].as_str(),
            event["identifiers"]["email_id"].as_str()
        ),
        (Some("email_hard_bounced"), Some("bob@example.net"))
    );
    let flag = reqs
        .iter()
        .find(|r| r.path.starts_with("/contacts"))
        .expect("the flag");
    assert_eq!(
        (flag.method.as_str(), flag.path.as_str(), &flag.body),
        (
            "PUT",
            "/contacts/bob%40example.net",
            &json!({"attributes": {"EMAIL_BOUNCED": true}})
        )
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.body.to_string().contains("eve@example.com")),
        "nothing of the forged event reached the upstream"
    );
}

/// A Google Ads lead end to end through the shipped `mappings/google-ads.yaml`, its key read from a file:
/// Google posts the key in the body (`google_key`). The lead is answered 200 (as Google reads a success),
/// stored with the key's value redacted and everything else byte for byte, and becomes the contact upsert
/// and the event; the same lead again is a duplicate; a wrong or missing key is refused; a test lead is
/// the event alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_google_ads_lead_becomes_a_contact_and_its_key_is_not_kept() {
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start(
        "google-ads.yaml",
        "GOOGLE_ADS_LEAD_KEY",
        "google-ads-lead-key",
    )
    .await;
    let lead = testdata("google_ads_lead.json");
    let url = gw.url("google-ads");
    let post = |body: String| post_signed(&url, &Value::Null, &body);
    let r = post(lead.clone()).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = post(lead.clone()).await;
    assert_eq!(r.status().as_u16(), 200, "the same lead again");
    let r = post(lead.replace("google-ads-lead-key", "guessed-key")).await;
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "bad credentials");
    let r = post(lead.replace("\"google_key\"", "\"other\"")).await;
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "missing body field google_key");
    let stored = inbound_entries(&redis, "hookgate");
    assert_eq!(stored.len(), 1, "the lead is stored once");
    let kept = String::from_utf8(stored[0].1["body"].clone()).unwrap();
    assert_eq!(
        kept,
        lead.replace("\"google-ads-lead-key\"", "\"[redacted]\""),
        "the key is replaced, the rest kept byte for byte"
    );
    let test_lead = json!({
        "lead_id": "TeSter-9", "is_test": true, "google_key": "google-ads-lead-key",
        "user_column_data": [{"column_id": "EMAIL", "string_value": "test@example.com"}]
    });
    let r = post(test_lead.to_string()).await;
    assert_eq!(r.status().as_u16(), 200);

    let reqs = delivered_exactly(&up, 3, 10, "delivered").await;
    let upserts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/contacts")
        .map(|r| &r.body)
        .collect();
    assert_eq!(
        upserts,
        [&json!({
            "email": "grace.hopper@example.com",
            "attributes": {
                "FIRSTNAME": "Grace", "LASTNAME": "Hopper", "SMS": "+1 650-555-0142",
                "ZIP": "94043", "COMPANY": "Navy Labs"
            },
            "updateEnabled": true
        })],
        "one contact: the test lead makes none"
    );
    let mut tests: Vec<bool> = reqs
        .iter()
        .filter(|r| r.path == "/events")
        .filter_map(|r| r.body["event_properties"]["test"].as_bool())
        .collect();
    tests.sort_unstable();
    assert_eq!(
        tests,
        [false, true],
        "an event for each lead, the test one marked"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.body.to_string().contains("google-ads-lead-key")),
        "the key reaches no upstream request"
    );
}

/// WooCommerce end to end through the shipped `mappings/woocommerce.yaml`, its secret read from a file,
/// with deliveries built and signed by PHP as WooCommerce builds them (`json_encode`, so `\/` and
/// `\u2013` escapes; `hash_hmac`). The ping of a saved webhook is answered and stores nothing; a new
/// customer becomes an upsert with its empty fields left out; a guest's order the buyer's upsert and an
/// `order_placed` event with its items; the same bytes under `order.updated`, as at checkout, are stored
/// too and become `order_updated`; another order under the same topic is stored (the topic is no event
/// id: the dedup key binds the body); the same delivery again is a duplicate (same topic, same bytes).
#[tokio::test(flavor = "multi_thread")]
async fn woocommerce_customers_and_orders_reach_the_upstream() {
    const SECRET: &str = "wc-webhook-secret-5f1e";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("woocommerce.yaml", "WOOCOMMERCE_WEBHOOK_SECRET", SECRET).await;
    let resource = |name: &str| -> Value { serde_json::from_str(&testdata(name)).unwrap() };
    let delivery = |payload: Value, topic: &str, webhook_id: u32| json!({"secret": SECRET, "payload": payload, "topic": topic, "webhook_id": webhook_id, "delivery_id": "9c1d7e"});
    let mut another_order = resource("woocommerce_order.json");
    another_order["id"] = json!(729);
    another_order["billing"]["email"] = json!("lise.meitner@example.org");
    let signed = peer_sign_woocommerce(&json!([
        delivery(resource("woocommerce_customer.json"), "customer.created", 3),
        delivery(resource("woocommerce_order.json"), "order.created", 4),
        delivery(resource("woocommerce_order.json"), "order.updated", 5),
        delivery(another_order, "order.created", 4),
    ]));
    assert_eq!(
        signed[1]["body"], signed[2]["body"],
        "one order, the same bytes under both topics"
    );
    let url = gw.url("woocommerce");
    let post =
        |result: &Value| post_signed(&url, &result["headers"], result["body"].as_str().unwrap());

    let r = client()
        .post(gw.url("woocommerce"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook_id=3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the ping of a saved webhook");
    assert!(
        inbound_entries(&redis, "hookgate").is_empty(),
        "a ping is no event"
    );
    for result in &signed {
        let r = post(result).await;
        assert_eq!(r.status().as_u16(), 202, "{}", result["headers"]);
    }
    let r = post(&signed[1]).await;
    assert_eq!(r.status().as_u16(), 200, "the same delivery again");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["duplicate"], true);
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 4);

    let reqs = delivered_exactly(&up, 6, 10, "delivered").await;
    let placed: Vec<&Value> = reqs
        .iter()
        .map(|r| &r.body)
        .filter(|b| b["event_name"] == "order_placed")
        .map(|b| &b["event_properties"]["order_id"])
        .collect();
    assert_eq!(placed.len(), 2, "both orders: {placed:?}");
    let mut upserts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.path == "/contacts")
        .filter(|r| r.body["email"] != "lise.meitner@example.org")
        .map(|r| &r.body)
        .collect();
    upserts.sort_by_key(|b| b["email"].as_str().map(str::to_owned));
    assert_eq!(
        upserts,
        [
            &json!({
                "email": "marie.curie@example.com", "ext_id": "woo-25",
                "attributes": {
                    "FIRSTNAME": "Marie", "LASTNAME": "Curie", "SMS": "+33144270000",
                    "CITY": "Paris", "ZIP": "75005", "COUNTRY": "FR"
                },
                "updateEnabled": true
            }),
            &json!({
                "email": "rosalind.franklin@example.org",
                "attributes": {
                    "FIRSTNAME": "Rosalind", "LASTNAME": "Franklin", "COMPANY": "King's College",
                    "CITY": "London", "ZIP": "WC2R 2LS", "COUNTRY": "GB"
                },
                "updateEnabled": true
            }),
        ],
        "no attribute is sent empty"
    );
    let event = reqs
        .iter()
        .map(|r| &r.body)
        .find(|b| b["event_name"] == "order_placed" && b["event_properties"]["order_id"] == 727)
        .expect("the order's event");
    let updated = reqs
        .iter()
        .map(|r| &r.body)
        .find(|b| b["event_name"] == "order_updated")
        .expect("the same bytes under order.updated are an event of their own");
    assert_eq!(updated["event_properties"]["status"], "processing");
    assert_eq!(
        event["identifiers"]["email_id"],
        "rosalind.franklin@example.org"
    );
    assert_eq!(event["event_date"], "2025-11-21T13:28:02Z");
    assert_eq!(event["event_properties"]["total"], json!(40.8));
    assert_eq!(event["event_properties"]["coupons"], json!(["welcome5"]));
    assert_eq!(
        event["event_properties"]["items"][1],
        json!({"product_id": 22, "name": "Lab coat – Size: M", "quantity": 1, "price": 15, "total": 15}),
        "the escaped name read as the text it is, the empty sku left out"
    );
}

/// Mailchimp end to end through the shipped `mappings/mailchimp.yaml`, its key read from a file: the GET
/// Mailchimp sends to check the URL before it saves the webhook is answered 200 and stores nothing; the
/// subscribe form it then posts becomes the contact upsert and the event; the same form again is a
/// duplicate (known by its bytes), and a wrong key is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_mailchimp_audience_webhook_is_checked_then_synced() {
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("mailchimp.yaml", "MAILCHIMP_WEBHOOK_KEY", "mc-key-7f3a").await;
    let url = format!("{}?key=mc-key-7f3a", gw.url("mailchimp"));

    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "Mailchimp's check of the URL");
    let listed = admin_get(&gw, "/v1/sources").await;
    assert_eq!(
        (
            &listed["sources"][0]["handshake"],
            &listed["sources"][0]["dedup"]
        ),
        (&json!("get"), &json!(true)),
        "{listed}"
    );
    let form = testdata("mailchimp_subscribe.form");
    let post = |url: String| {
        client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
    };
    let r = post(url.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = post(url.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the same form again");
    let r = post(format!("{}?key=guess", gw.url("mailchimp")))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    let upsert = first_to(&reqs, "/contacts");
    assert_eq!(
        upsert,
        &json!({
            "email": "grace.hopper@example.com",
            "attributes": {
                "FIRSTNAME": "Grace", "LASTNAME": "Hopper", "SMS": "+15550142",
                "INTERESTS": ["Newsletter", "Product updates"], "MAILCHIMP_ID": "8a25ff1d98"
            },
            "updateEnabled": true
        })
    );
    let event = first_to(&reqs, "/events");
    assert_eq!(event["event_name"], "subscribed");
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "the GET and the repeat stored nothing"
    );
}

/// Mailchimp Transactional (Mandrill) end to end through the shipped `mappings/mandrill.yaml`, its key
/// read from a file, each batch signed by the `generateSignature` Mandrill publishes, run by PHP over what
/// `parse_str` makes of the body (`tests/peers/sign_mandrill.php`). Mandrill's HEAD check of the URL is
/// answered and stores nothing; the batch, whose events are JSON text in the form field
/// `mandrill_events`, becomes one request per mapped event; the batch again is a duplicate; another key,
/// a changed event and a signed batch whose events are not JSON are refused, and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_mandrill_batch_becomes_one_request_per_event() {
    const KEY: &str = "mandrill-webhook-key-9Qx2";
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("mandrill.yaml", "MANDRILL_WEBHOOK_KEY", KEY).await;
    let url = gw.url("mandrill");
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "Mandrill's check of the URL");

    let batch = testdata("mandrill_events.form");
    let not_json = "mandrill_events=%5B%7B%22event%22%3A%22send%22";
    let sign = |key: &str, body: &str| json!({"secret": key, "url": url, "body": body});
    let signed = peer_sign_mandrill(&json!([
        sign(KEY, &batch),
        sign("mandrill-webhook-key-9Qx3", &batch),
        sign(KEY, not_json),
    ]));
    let post = |i: usize, body: &str| post_signed(&url, &signed[i]["headers"], body);
    let (status, answer) = status_and_json(post(0, &batch).await).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = status_and_json(post(0, &batch).await).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)));
    // The signature covers the parameters, not their encoding: the batch re-encoded (lowercase
    // escapes, a trailing `&`) passes it, and is the same batch.
    let reencoded = format!("{}&", batch.replace("%2C", "%2c").replace("%3A", "%3a"));
    assert_ne!(reencoded, batch);
    let (status, again) = status_and_json(post(0, &reencoded).await).await;
    assert_eq!(
        (status, again["duplicate"].as_bool(), &again["event_id"]),
        (200, Some(true), &answer["event_id"]),
        "re-encoded: {again}"
    );
    assert!(
        answer["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("signed-sha256:")),
        "{answer}"
    );
    let (status, _) = status_and_json(post(1, &batch).await).await;
    assert_eq!(status, 401, "signed with another key");
    // Mandrill posts forms only: the events as a JSON body are refused before anything is read.
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "x-mandrill-signature",
            signed[0]["headers"]["X-Mandrill-Signature"]
                .as_str()
                .unwrap(),
        )
        .body(r#"{"mandrill_events":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let changed = batch.replace("carol%40example.org", "eve%40example.org");
    assert_ne!(changed, batch);
    let (status, answer) = status_and_json(post(0, &changed).await).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("no signature matches")),
        "a changed event"
    );
    let (status, answer) = status_and_json(post(2, not_json).await).await;
    assert_eq!(status, 400, "{answer}");
    let reason = answer["message"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("malformed body: `$.mandrill_events` is not JSON text: EOF"),
        "{answer}"
    );
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "only the genuine batch is stored, once"
    );

    // Nine message events (the deferral and the sync event are left out), the hard bounce's flag and
    // the two withdrawals of consent.
    let reqs = delivered_exactly(&up, 12, 15, "twelve requests delivered").await;
    assert_eq!(
        event_names(&reqs),
        [
            "email_blocked",
            "email_clicked",
            "email_complained",
            "email_delivered",
            "email_hard_bounced",
            "email_opened",
            "email_sent",
            "email_soft_bounced",
            "email_unsubscribed"
        ]
    );
    let click = reqs
        .iter()
        .find(|r| r.body["event_name"] == "email_clicked")
        .map(|r| &r.body);
    assert_eq!(
        click,
        Some(&json!({
            "event_name": "email_clicked",
            "event_date": "2025-11-24T16:06:00Z",
            "identifiers": {"email_id": "ada@example.com"},
            "event_properties": {
                "message_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "subject": "Your order is on its way",
                "sender": "shop@mail.example.com",
                "tags": ["shipping"],
                "link": "https://shop.example.com/track?o=4711"
            }
        }))
    );
    let contacts: Vec<(&str, &str, &Value)> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/contacts"))
        .map(|r| (r.method.as_str(), r.path.as_str(), &r.body))
        .collect();
    let bounce = json!({"attributes": {"EMAIL_BOUNCED": true}});
    let consent =
        |email: &str| json!({"email": email, "emailBlacklisted": true, "updateEnabled": true});
    assert_eq!(contacts.len(), 3, "{contacts:?}");
    assert!(
        contacts.contains(&("PUT", "/contacts/carol%40example.org", &bounce)),
        "{contacts:?}"
    );
    for email in ["erin@example.com", "zoë@example.com"] {
        assert!(
            contacts.contains(&("POST", "/contacts", &consent(email))),
            "{email}: {contacts:?}"
        );
    }
    let distinct: HashSet<String> = reqs.iter().map(key_of).collect();
    assert_eq!(distinct.len(), 12, "one Idempotency-Key per action");
}

/// Unbounce end to end through the shipped `mappings/unbounce.yaml`, its token read from a file: the
/// submission, JSON text in the form field `data.json`, becomes the contact upsert and the
/// `form_submitted` event; the same form again is a duplicate, a wrong token is refused, and a
/// submission whose `data.json` is not JSON is a 400 naming it; neither is stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_unbounce_submission_becomes_a_contact() {
    let Shipped {
        redis,
        up,
        gw,
        _secrets,
    } = Shipped::start("unbounce.yaml", "UNBOUNCE_WEBHOOK_TOKEN", "ub-token-3e9c").await;
    let url = format!("{}?key=ub-token-3e9c", gw.url("unbounce"));
    let post = |url: String, form: String| {
        client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let form = testdata("unbounce_submission.form");
    let r = post(url.clone(), form.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = post(url.clone(), form.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the same form again");
    let r = post(format!("{}?key=guess", gw.url("unbounce")), form.clone())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let broken = "page_id=p1&variant=a&data.json=%7B%22email%22%3A";
    let (status, answer) =
        status_and_json(post(url.clone(), broken.to_owned()).await.unwrap()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed body: `$.data_json` is not JSON text")),
        "{answer}"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);

    let reqs = delivered_exactly(&up, 2, 10, "delivered").await;
    assert_eq!(
        first_to(&reqs, "/contacts"),
        &json!({
            "email": "grace.hopper@example.com",
            "attributes": {"FIRSTNAME": "Grace", "LASTNAME": "Brewster Hopper", "SMS": "+15550100142", "COMPANY": "Navy Labs"},
            "updateEnabled": true
        })
    );
    assert_eq!(
        first_to(&reqs, "/events"),
        &json!({
            "event_name": "form_submitted",
            "event_date": "2025-11-24T16:20:00Z",
            "identifiers": {"email_id": "grace.hopper@example.com"},
            "event_properties": {
                "page": "Spring demo",
                "page_id": "7648177d-7323-4330-b4f9-9951a52138b6",
                "page_url": "https://offers.example.com/spring-demo/",
                "variant": "b"
            }
        })
    );
}
