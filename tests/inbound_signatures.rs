//! Signatures over real HTTP: requests signed by the providers' own libraries (Stripe's, Twilio's,
//! HubSpot's, Standard Webhooks', Slack's, GitHub's) or, where a provider publishes no signer, by
//! Python's standard library following its documentation, are accepted by the running gateway for
//! every preset; tampered, stale, unsigned and wrongly signed ones get 401 with a one-line reason and
//! are counted by reason. Twilio and HubSpot sign the URL, so these also prove the gateway rebuilds the
//! URL the sender used.

mod common;
use common::*;
use serde_json::{json, Value};

struct Setup {
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

const STRIPE: &str = "whsec_http_level_test";
const TWILIO: &str = "twilio-auth-token-123";
const HUBSPOT: &str = "hubspot-app-secret-456";
const SW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn setup(redis: &Redis) -> Setup {
    let secrets = tempfile::tempdir().unwrap();
    let d = secrets.path();
    let files = [
        ("stripe.yaml", format!("source: stripe\nverify: {{ preset: stripe, secret: \"{}\" }}\ndedup: {{ id: $.id }}\n", secret_file(d, "s", STRIPE))),
        ("twilio.yaml", format!("source: twilio\nverify: {{ preset: twilio, secret: \"{}\" }}\n", secret_file(d, "t", TWILIO))),
        (
            "twilio-proxied.yaml",
            format!(
                "source: twilio-proxied\nverify: {{ preset: twilio, secret: \"{}\", public_url: \"https://hooks.example.com/webhooks/twilio-proxied\" }}\n",
                secret_file(d, "t2", TWILIO)
            ),
        ),
        ("hubspot.yaml", format!("source: hubspot\nverify: {{ preset: hubspot, version: v3, secret: \"{}\" }}\n", secret_file(d, "h", HUBSPOT))),
        ("sw.yaml", format!("source: sw\nverify: {{ preset: standard-webhooks, secret: \"{}\" }}\ndedup: {{ header: webhook-id }}\n", secret_file(d, "w", SW))),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(redis, &refs, "").await;
    Setup {
        gw,
        _secrets: secrets,
    }
}

async fn send(url: &str, ct: &str, headers: &Value, body: &str) -> (u16, Value) {
    let mut req = client().post(url).header("content-type", ct);
    for (k, v) in headers.as_object().unwrap() {
        req = req.header(k.as_str(), v.as_str().unwrap());
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Like [`send`], for answers that are not JSON: status, content type and text.
async fn send_raw(
    url: &str,
    ct: &str,
    headers: &Value,
    body: &str,
) -> (u16, Option<String>, String) {
    let mut req = client().post(url).header("content-type", ct);
    for (k, v) in headers.as_object().unwrap() {
        req = req.header(k.as_str(), v.as_str().unwrap());
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let s = r.status().as_u16();
    let t = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (s, t, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_libraries_signatures_accepted_over_http() {
    let redis = Redis::start();
    let s = setup(&redis).await;
    let now = now_secs();
    let stripe_body = r#"{"id":"evt_http_1","object":"event","type":"customer.created","data":{"object":{"email":"jenny.rosen@example.com"}}}"#;
    let twilio_form = "CallSid=CA123&From=%2B12349013030&To=%2B18005551212&Body=hello+world";
    let twilio_url = format!("{}?account=acme", s.gw.url("twilio"));
    let hub_body = r#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]"#;
    let sw_body = r#"{"type":"contact.created","data":{"email":"a@example.org"}}"#;
    let signed = peer_sign(&json!([
        {"preset": "stripe", "secret": STRIPE, "body": stripe_body, "timestamp": now},
        {"preset": "twilio", "secret": TWILIO, "body": twilio_form, "url": twilio_url},
        {"preset": "twilio", "secret": TWILIO, "body": twilio_form, "url": "https://hooks.example.com/webhooks/twilio-proxied"},
        {"preset": "hubspot", "version": "v3", "secret": HUBSPOT, "body": hub_body, "url": s.gw.url("hubspot"), "method": "POST", "timestamp": now * 1000},
        {"preset": "standard-webhooks", "secret": SW, "body": sw_body, "id": "msg_http_1", "timestamp": now},
    ]));
    let json_ct = "application/json";
    let form_ct = "application/x-www-form-urlencoded";
    assert_eq!(
        send(
            &s.gw.url("stripe"),
            json_ct,
            &signed[0]["headers"],
            stripe_body
        )
        .await
        .0,
        202,
        "stripe"
    );
    // Twilio reads the answer as TwiML: a twilio source answers an empty <Response> as text/xml.
    let twiml = (
        200,
        Some("text/xml".to_owned()),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.to_owned(),
    );
    assert_eq!(
        send_raw(&twilio_url, form_ct, &signed[1]["headers"], twilio_form).await,
        twiml,
        "twilio form, URL with query"
    );
    assert_eq!(
        send_raw(
            &s.gw.url("twilio-proxied"),
            form_ct,
            &signed[2]["headers"],
            twilio_form
        )
        .await,
        twiml,
        "twilio behind a proxy: public_url"
    );
    assert_eq!(
        send(
            &s.gw.url("hubspot"),
            json_ct,
            &signed[3]["headers"],
            hub_body
        )
        .await
        .0,
        202,
        "hubspot v3 signs method+URL+body+ts"
    );
    assert_eq!(
        send(&s.gw.url("sw"), json_ct, &signed[4]["headers"], sw_body)
            .await
            .0,
        202,
        "standard webhooks"
    );
    // the Standard Webhooks redelivery (same webhook-id) is stored once
    let (st, b) = send(&s.gw.url("sw"), json_ct, &signed[4]["headers"], sw_body).await;
    assert_eq!((st, b["duplicate"].as_bool()), (200, Some(true)));
    // Twilio's signature does not cover another URL: the same request to another query fails
    let other = format!("{}?account=evil", s.gw.url("twilio"));
    assert_eq!(
        send(&other, form_ct, &signed[1]["headers"], twilio_form)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_get_401_with_a_reason_and_are_counted() {
    let redis = Redis::start();
    let s = setup(&redis).await;
    let now = now_secs();
    let body = r#"{"id":"evt_http_2","object":"event","type":"customer.created"}"#;
    let signed = peer_sign(&json!([
        {"preset": "stripe", "secret": STRIPE, "body": body, "timestamp": now},
        {"preset": "stripe", "secret": "whsec_someone_else", "body": body, "timestamp": now},
        {"preset": "stripe", "secret": STRIPE, "body": body, "timestamp": now - 600},
    ]));
    let url = s.gw.url("stripe");
    let ct = "application/json";
    let tampered = body.replace("customer.created", "customer.deleted");
    let (st, b) = send(&url, ct, &signed[0]["headers"], &tampered).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (401, Some("bad_signature")),
        "one changed field"
    );
    let (st, _) = send(&url, ct, &signed[1]["headers"], body).await;
    assert_eq!(st, 401, "wrong secret");
    let (st, b) = send(&url, ct, &signed[2]["headers"], body).await;
    assert_eq!(st, 401, "10 minutes old");
    assert!(b["message"].as_str().unwrap().contains("window"), "{b}");
    let (st, b) = send(&url, ct, &json!({}), body).await;
    assert_eq!(st, 401);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("stripe-signature"),
        "{b}"
    );
    assert!(
        inbound_entries(&redis, "hookgate").is_empty(),
        "nothing unverified is stored"
    );
    // and the genuine one still goes through
    assert_eq!(send(&url, ct, &signed[0]["headers"], body).await.0, 202);
    let m = s.gw.metrics().await;
    for reason in ["mismatch", "stale", "missing_header"] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("hookgate_verify_failures_total")
                    && l.contains("source=\"stripe\"")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no verify failure counted for {reason}:\n{m}"
        );
    }
}

/// Every preset not covered above, through the running gateway: the signer's request is stored (202, or
/// the 200 a `paddle` or `webflow` source answers with);
/// the same request signed with another secret, without its signature headers, or (where the scheme
/// has a timestamp) ten minutes old is refused with 401 `bad_signature`; nothing refused is stored.
#[tokio::test(flavor = "multi_thread")]
async fn every_other_preset_accepts_its_signer_and_refuses_the_rest_over_http() {
    const SECRET: &str = "preset-http-secret-0123456789";
    const WRONG: &str = "preset-http-secret-0123456780";
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secret_file(secrets.path(), "secret", SECRET);
    let hmac = "{ preset: hmac, header: X-Webhook-Signature, prefix: \"sha512=\", algorithm: sha512, encoding: base64, timestamp_header: X-Webhook-Timestamp, id_header: X-Webhook-Id, signed_content: \"{id}.{timestamp}.{method}.{body}\"";
    let verify = [
        ("github", "{ preset: github".to_string()),
        ("shopify", "{ preset: shopify".to_string()),
        ("typeform", "{ preset: typeform".to_string()),
        ("calendly", "{ preset: calendly".to_string()),
        ("paddle", "{ preset: paddle".to_string()),
        ("webflow", "{ preset: webflow".to_string()),
        ("square", "{ preset: square".to_string()),
        ("segment", "{ preset: segment".to_string()),
        ("slack", "{ preset: slack".to_string()),
        ("hubspot-v1", "{ preset: hubspot, version: v1".to_string()),
        ("hubspot-v2", "{ preset: hubspot, version: v2".to_string()),
        ("hmac", hmac.to_string()),
        (
            "token",
            "{ preset: token, header: Authorization, prefix: \"Bearer \"".to_string(),
        ),
    ];
    let mut files: Vec<(String, String)> = verify
        .iter()
        .map(|(name, v)| {
            (
                format!("{name}.yaml"),
                format!("source: {name}\nverify: {v}, secret: \"{secret}\" }}\n"),
            )
        })
        .collect();
    files.push((
        "basic.yaml".into(),
        format!(
            "source: basic\nverify: {{ preset: basic, username: brevo, password: \"{secret}\" }}\n"
        ),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let gw = Gateway::start(&redis, &refs, "").await;

    let json_body = r#"{"event":"form_response","text":"caf\u00e9 \"quoted\"","n":1.50}"#;
    let form_body = "token=xyz&team_id=T1&command=%2Fweather&text=94070+%C3%A9";
    let hubspot_v2_url = format!("{}?portal=62515", gw.url("hubspot-v2"));
    // (source, content type, body, URL posted to, the signer's request without secret and time,
    //  whether the scheme has a replay window)
    let cases: Vec<(&str, &str, &str, String, Value, bool)> = vec![
        (
            "shopify",
            "application/json",
            json_body,
            gw.url("shopify"),
            json!({"preset": "shopify"}),
            false,
        ),
        (
            "typeform",
            "application/json",
            json_body,
            gw.url("typeform"),
            json!({"preset": "typeform"}),
            false,
        ),
        (
            "calendly",
            "application/json",
            json_body,
            gw.url("calendly"),
            json!({"preset": "calendly"}),
            true,
        ),
        (
            "paddle",
            "application/json",
            json_body,
            gw.url("paddle"),
            json!({"preset": "paddle"}),
            true,
        ),
        (
            "webflow",
            "application/json",
            json_body,
            gw.url("webflow"),
            json!({"preset": "webflow"}),
            true,
        ),
        // Square signs the notification URL: here the one hookgate rebuilds from Host and the path.
        (
            "square",
            "application/json",
            json_body,
            gw.url("square"),
            json!({"preset": "square"}),
            false,
        ),
        (
            "segment",
            "application/json",
            json_body,
            gw.url("segment"),
            json!({"preset": "segment"}),
            false,
        ),
        (
            "slack",
            "application/x-www-form-urlencoded",
            form_body,
            gw.url("slack"),
            json!({"preset": "slack"}),
            true,
        ),
        (
            "hubspot-v1",
            "application/json",
            json_body,
            gw.url("hubspot-v1"),
            json!({"preset": "hubspot", "version": "v1"}),
            false,
        ),
        (
            "hubspot-v2",
            "application/json",
            json_body,
            hubspot_v2_url.clone(),
            json!({"preset": "hubspot", "version": "v2"}),
            false,
        ),
        (
            "hmac",
            "application/json",
            json_body,
            gw.url("hmac"),
            json!({"preset": "hmac", "header": "X-Webhook-Signature", "prefix": "sha512=", "algorithm": "sha512",
                   "encoding": "base64", "timestamp_header": "X-Webhook-Timestamp", "id_header": "X-Webhook-Id",
                   "id": "evt_42", "signed_content": "{id}.{timestamp}.{method}.{body}"}),
            true,
        ),
        (
            "basic",
            "application/json",
            json_body,
            gw.url("basic"),
            json!({"preset": "basic", "username": "brevo"}),
            false,
        ),
        (
            "token",
            "application/json",
            json_body,
            gw.url("token"),
            json!({"preset": "token", "header": "Authorization", "prefix": "Bearer "}),
            false,
        ),
    ];
    let now = now_secs();
    let mut batch = Vec::new();
    for (_, _, body, url, sign, windowed) in &cases {
        let mut variants = vec![(SECRET, now), (WRONG, now)];
        if *windowed {
            variants.push((SECRET, now - 600));
        }
        for (secret, t) in variants {
            let mut r = sign.clone();
            r["secret"] = json!(secret);
            r["body"] = json!(body);
            r["method"] = json!("POST");
            r["url"] = json!(url);
            // Webflow's timestamp is in milliseconds.
            let t = if sign["preset"] == "webflow" {
                t * 1000
            } else {
                t
            };
            r["timestamp"] = json!(t);
            batch.push(r);
        }
    }
    let signed = peer_sign(&Value::Array(batch));
    let github = peer_sign_github(&json!([
        {"secret": SECRET, "body": json_body},
        {"secret": WRONG, "body": json_body},
    ]));

    let refused = |name: &str, what: &str, (status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("bad_signature")),
            "{name}: {what}: {body}"
        );
    };
    let mut next = signed.iter();
    let mut stored = 0;
    for (name, ct, body, url, _, windowed) in &cases {
        let genuine = &next.next().expect("signed")["headers"];
        let wrong = &next.next().expect("signed")["headers"];
        // Paddle and Webflow ask for a 200, which their presets answer with.
        let stored_status = if matches!(*name, "paddle" | "webflow") {
            200
        } else {
            202
        };
        assert_eq!(
            send(url, ct, genuine, body).await.0,
            stored_status,
            "{name}: the signer's request"
        );
        stored += 1;
        refused(name, "another secret", send(url, ct, wrong, body).await);
        refused(
            name,
            "no signature headers",
            send(url, ct, &json!({}), body).await,
        );
        if *windowed {
            let stale = &next.next().expect("signed")["headers"];
            refused(name, "ten minutes old", send(url, ct, stale, body).await);
        }
    }
    let url = gw.url("github");
    let ct = "application/json";
    assert_eq!(
        send(&url, ct, &github[0]["headers"], json_body).await.0,
        202,
        "github"
    );
    stored += 1;
    refused(
        "github",
        "another secret",
        send(&url, ct, &github[1]["headers"], json_body).await,
    );
    refused(
        "github",
        "no signature headers",
        send(&url, ct, &json!({}), json_body).await,
    );
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        stored,
        "only the signers' requests are stored"
    );
}

/// Slack enables an Events API Request URL only when its signed `url_verification` POST is answered with
/// the challenge. hookgate answers it (200, `{"challenge": ...}`) once the signature checks out, and
/// stores nothing: it is no event. Unsigned, it is refused like any request; an event is stored as usual.
/// The same for a slash command URL's `ssl_check` form, answered with an empty 200.
#[tokio::test(flavor = "multi_thread")]
async fn slack_handshakes_are_answered_and_not_stored() {
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secret_file(secrets.path(), "slack", SECRET);
    let file = format!("source: slack\nverify: {{ preset: slack, secret: \"{secret}\" }}\n");
    let gw = Gateway::start(&redis, &[("slack.yaml", &file)], "").await;
    let url = gw.url("slack");
    let handshake = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let event = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","type":"event_callback","event_id":"Ev1","event":{"type":"team_join"}}"#;
    let sign = |body: &str| json!({"preset": "slack", "secret": SECRET, "body": body, "method": "POST", "url": url, "timestamp": now_secs()});
    let signed = peer_sign(&json!([sign(handshake), sign(event)]));
    let ct = "application/json";
    let (status, answer) = send(&url, ct, &signed[0]["headers"], handshake).await;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        )
    );
    let (status, answer) = send(&url, ct, &json!({}), handshake).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature")),
        "unsigned"
    );
    assert!(
        inbound_entries(&redis, "hookgate").is_empty(),
        "a handshake is no event"
    );
    assert_eq!(send(&url, ct, &signed[1]["headers"], event).await.0, 202);
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);

    // A slash command's certificate check: a signed form with `ssl_check=1`, answered with an empty 200
    // and not stored; unsigned, 401. A slash command itself is stored.
    let ssl_check = "token=gIkuvaNzQIHg97ATvDxqgjtO&ssl_check=1";
    let command = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&command=%2Fweather&text=94070&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let signed = peer_sign(&json!([sign(ssl_check), sign(command)]));
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        send_raw(&url, form, &signed[0]["headers"], ssl_check).await,
        (200, None, String::new())
    );
    let (status, answer) = send(&url, form, &json!({}), ssl_check).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature")),
        "unsigned"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1, "not stored");
    assert_eq!(
        send(&url, form, &signed[1]["headers"], command).await.0,
        202
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 2);
}

/// WooCommerce over HTTP/1.0, as it sends: a delivery built and signed by PHP as WooCommerce does is
/// stored, under the secret as WooCommerce's page shows it (its `&amp;` decoded, as WooCommerce decodes
/// it before signing), and refused under the secret as stored; another secret, one changed byte and no
/// signature get 401. The unsigned ping posted when a webhook is saved (`webhook_id=<id>`) gets an empty
/// 200 and is not stored; the same body signed, with more in it, as JSON, to another preset's source, or
/// from outside the source's allowlist, is no ping.
#[tokio::test(flavor = "multi_thread")]
async fn woocommerce_deliveries_and_its_ping_over_http() {
    const STORED: &str = "ck_9f2c!x<W&amp;q}:`7Zr";
    const SHOWN: &str = "ck_9f2c!x<W&q}:`7Zr";
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let shown = secret_file(secrets.path(), "shown", SHOWN);
    let stored = secret_file(secrets.path(), "stored", STORED);
    let woo = |name: &str, secret: &str, extra: &str| {
        format!("source: {name}\nverify: {{ preset: woocommerce, secret: \"{secret}\" }}\n{extra}")
    };
    let files = [
        ("woo.yaml", woo("woo", &shown, "")),
        ("woo-stored.yaml", woo("woo-stored", &stored, "")),
        (
            "woo-far.yaml",
            woo("woo-far", &shown, "allow_ips: [10.0.0.0/8]\n"),
        ),
        (
            "shop.yaml",
            format!("source: shop\nverify: {{ preset: shopify, secret: \"{shown}\" }}\n"),
        ),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(&redis, &refs, "").await;
    let customer = json!({"id": 25, "email": "zoe@example.com", "first_name": "Zoë", "avatar_url": "https://secure.gravatar.com/avatar/x?s=96"});
    let request = |secret: &str| json!({"secret": secret, "payload": customer, "topic": "customer.created", "webhook_id": 7, "delivery_id": "1a2b3c"});
    let signed = peer_sign_woocommerce(&json!([request(STORED), request("another secret")]));
    let body = signed[0]["body"].as_str().expect("a body");
    assert!(
        body.contains(r#"\/\/secure.gravatar.com"#) && body.contains(r#"Zo\u00eb"#),
        "PHP's json_encode escapes as WooCommerce's body does: {body}"
    );
    let headers = |result: &Value| -> Vec<(String, String)> {
        result["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned()))
            .collect()
    };
    let post = |source: &'static str, headers: Vec<(String, String)>, body: String| {
        let addr = gw.addr;
        async move { raw_post_http10(addr, &format!("/webhooks/{source}"), &headers, &body).await }
    };
    let (status, answer) = post("woo", headers(&signed[0]), body.to_owned()).await;
    assert_eq!(status, 202, "the genuine delivery: {answer}");
    let entries = inbound_entries(&redis, "hookgate");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1["body"], body.as_bytes(), "stored as sent");

    let refused = |what: &str, (status, answer): (u16, String)| {
        let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("bad_signature")),
            "{what}: {answer}"
        );
    };
    refused(
        "the secret as stored, its &amp; not decoded",
        post("woo-stored", headers(&signed[0]), body.to_owned()).await,
    );
    refused(
        "another secret",
        post("woo", headers(&signed[1]), body.to_owned()).await,
    );
    refused(
        "one byte changed",
        post("woo", headers(&signed[0]), body.replacen("25", "26", 1)).await,
    );
    let unsigned: Vec<(String, String)> = headers(&signed[0])
        .into_iter()
        .filter(|(k, _)| k != "X-WC-Webhook-Signature")
        .collect();
    refused("no signature", post("woo", unsigned, body.to_owned()).await);

    // The ping, as WooCommerce posts it (a form, no X-WC-Webhook-* header).
    let form = vec![
        (
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded; charset=UTF-8".to_owned(),
        ),
        (
            "User-Agent".to_owned(),
            "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)".to_owned(),
        ),
    ];
    assert_eq!(
        post("woo", form.clone(), "webhook_id=7".into()).await,
        (200, String::new()),
        "the ping is answered with an empty 200"
    );
    assert_eq!(
        inbound_entries(&redis, "hookgate").len(),
        1,
        "the ping is not stored"
    );
    let mut signed_ping = form.clone();
    signed_ping.push(("X-WC-Webhook-Signature".to_owned(), "c2lnbmVk".to_owned()));
    refused(
        "a signed ping",
        post("woo", signed_ping, "webhook_id=7".into()).await,
    );
    refused(
        "more than the id",
        post(
            "woo",
            form.clone(),
            "webhook_id=7&email=a%40b.example".into(),
        )
        .await,
    );
    let json_type = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    refused(
        "as JSON",
        post("woo", json_type, "webhook_id=7".into()).await,
    );
    refused(
        "another preset's source",
        post("shop", form.clone(), "webhook_id=7".into()).await,
    );
    let (status, answer) = post("woo-far", form.clone(), "webhook_id=7".into()).await;
    assert_eq!(
        status, 403,
        "outside the allowlist, a ping is refused too: {answer}"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "hookgate_inbound_requests_total",
            &["source=\"woo\"", "status=\"200\""]
        ),
        1.0,
        "the ping is counted under its source"
    );
}

/// Zoom's URL validation over HTTP, against Zoom's own library: a signed `endpoint.url_validation` is
/// answered with exactly what @zoom/rivet answers for the same request (its `plainToken` and
/// `encryptedToken`), and is not stored; unsigned or signed with another secret, it gets 401 (no MAC
/// is computed for anyone without the secret). A signed event is stored.
#[tokio::test(flavor = "multi_thread")]
async fn zoom_url_validation_is_answered_as_zooms_library_answers_it() {
    const SECRET: &str = "zm_secret_token_4f1c";
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secret_file(secrets.path(), "zoom", SECRET);
    let file = format!(
        "source: zoom\nverify: {{ preset: zoom, secret: \"{secret}\" }}\ndedup: {{ body: true }}\n"
    );
    let gw = Gateway::start(&redis, &[("zoom.yaml", &file)], "").await;
    let url = gw.url("zoom");
    let validation = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let event = r#"{"event":"webinar.registration_created","payload":{"object":{"registrant":{"email":"ada@example.com"}}},"event_ts":1654503849681}"#;
    let sign = |body: &str, secret: &str| json!({"preset": "zoom", "secret": secret, "body": body, "timestamp": now_secs()});
    let signed = peer_sign(&json!([
        sign(validation, SECRET),
        sign(validation, "another"),
        sign(event, SECRET)
    ]));
    let rivet = peer_zoom_rivet(&json!([
        {"secret": SECRET, "body": validation, "headers": signed[0]["headers"]}
    ]));
    assert_eq!(rivet[0]["status"], 200, "{}", rivet[0]);
    let ct = "application/json";
    let (status, answer) = send(&url, ct, &signed[0]["headers"], validation).await;
    assert_eq!((status, &answer), (200, &rivet[0]["body"]));
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    for (headers, what) in [
        (&json!({}), "unsigned"),
        (&signed[1]["headers"], "another secret"),
    ] {
        let (status, answer) = send(&url, ct, headers, validation).await;
        assert_eq!(
            (
                status,
                answer["error"].as_str(),
                answer.get("encryptedToken")
            ),
            (401, Some("bad_signature"), None),
            "{what}"
        );
    }
    assert!(
        inbound_entries(&redis, "hookgate").is_empty(),
        "a validation is no event"
    );
    assert_eq!(send(&url, ct, &signed[2]["headers"], event).await.0, 202);
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1);

    // During a rotation (the old secret listed first), a validation signed with the new secret is
    // answered under the new one: Zoom checks the answer with the secret it signed with.
    const NEW: &str = "zm_secret_token_new_9a2e";
    let new_secret = secret_file(secrets.path(), "zoom-new", NEW);
    let rotating = format!(
        "source: zoom-rotating\nverify: {{ preset: zoom, secrets: [\"{secret}\", \"{new_secret}\"] }}\n"
    );
    let gw2 = Gateway::start(&redis, &[("zoom-rotating.yaml", &rotating)], "").await;
    let signed = peer_sign(&json!([sign(validation, NEW)]));
    let rivet = peer_zoom_rivet(&json!([
        {"secret": NEW, "body": validation, "headers": signed[0]["headers"]}
    ]));
    let (status, answer) = send(
        &gw2.url("zoom-rotating"),
        ct,
        &signed[0]["headers"],
        validation,
    )
    .await;
    assert_eq!(
        (status, &answer),
        (200, &rivet[0]["body"]),
        "under the new secret"
    );
}

/// A source's `response:` is what a stored event and its redelivery are answered with (the sender is
/// answered as it was the first time); refusals keep hookgate's own JSON answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_response_answers_stored_events_and_redeliveries() {
    let redis = Redis::start();
    let file = "source: acks\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\nresponse: { status: 200, content_type: \"text/plain; charset=utf-8\", body: \"thanks\\n\" }\n";
    let gw = Gateway::start(&redis, &[("acks.yaml", file)], "").await;
    let url = gw.url("acks");
    let ct = "application/json";
    let ours = (
        200,
        Some("text/plain; charset=utf-8".to_owned()),
        "thanks\n".to_owned(),
    );
    assert_eq!(send_raw(&url, ct, &json!({}), r#"{"id":"a1"}"#).await, ours);
    assert_eq!(
        send_raw(&url, ct, &json!({}), r#"{"id":"a1"}"#).await,
        ours,
        "the redelivery"
    );
    assert_eq!(inbound_entries(&redis, "hookgate").len(), 1, "stored once");
    let (status, answer) = send(&url, ct, &json!({}), "{").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("malformed")),
        "a refusal is ours"
    );
}

/// Standard Webhooks' asymmetric signatures over HTTP. A source given the sender's public key, read
/// from a file as a mounted ConfigMap or Secret holds it, stores an event that OpenSSL signed with
/// `v1a` (PyPI cryptography), stores its redelivery once, and refuses a tampered body or another key
/// with the reason. A rotated key file is served without a restart, and the old key is refused then.
#[tokio::test(flavor = "multi_thread")]
async fn standard_webhooks_public_key_signatures_over_http() {
    use base64::Engine as _;
    let redis = Redis::start();
    let now = now_secs();
    let body = r#"{"type":"contact.created","data":{"email":"a@example.org"}}"#;
    let request = |seed: u8, id: &str| {
        json!({
            "preset": "standard-webhooks-v1a",
            "private_key": base64::engine::general_purpose::STANDARD.encode([seed; 32]),
            "id": id,
            "timestamp": now,
            "body": body,
        })
    };
    let signed = peer_sign(&json!([
        request(21, "msg_v1a_1"),
        request(22, "msg_v1a_2"),
        request(21, "msg_v1a_3"),
    ]));
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("whpk");
    std::fs::write(
        &key_file,
        format!("{}\n", signed[0]["public_key"].as_str().unwrap()),
    )
    .unwrap();
    let file = format!(
        "source: sw-asym\nverify: {{ preset: standard-webhooks, public_key: \"${{file:{}}}\" }}\ndedup: {{ header: webhook-id }}\n",
        key_file.display()
    );
    let gw = Gateway::start(&redis, &[("sw-asym.yaml", &file)], "mappings_poll: 1s\n").await;
    let url = gw.url("sw-asym");
    let json_ct = "application/json";

    let (status, answer) = send(&url, json_ct, &signed[0]["headers"], body).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = send(&url, json_ct, &signed[0]["headers"], body).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)));
    let tampered = body.replace("a@example.org", "b@example.org");
    let (status, answer) = send(&url, json_ct, &signed[0]["headers"], &tampered).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("no signature matches"))
    );
    let (status, _) = send(&url, json_ct, &signed[1]["headers"], body).await;
    assert_eq!(status, 401, "signed with another key");
    assert_eq!(stored_event_ids(&redis), ["msg_v1a_1"]);

    // The key file replaced the way the kubelet does it: a new file renamed over the old.
    let tmp = keys.path().join("..whpk_tmp");
    std::fs::write(&tmp, signed[1]["public_key"].as_str().unwrap()).unwrap();
    std::fs::rename(&tmp, &key_file).unwrap();
    let mut rotated = false;
    for _ in 0..100 {
        if send(&url, json_ct, &signed[1]["headers"], body).await.0 == 202 {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new key is served within 10 s");
    let (status, _) = send(&url, json_ct, &signed[2]["headers"], body).await;
    assert_eq!(status, 401, "the old key is not");
    assert_eq!(stored_event_ids(&redis), ["msg_v1a_1", "msg_v1a_2"]);
}
