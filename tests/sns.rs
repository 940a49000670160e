//! Amazon SNS, and Amazon SES through it: messages AWS itself signed (published with AWS's own
//! validators' tests) verify with their certificate; on messages signed here as AWS documents it (PyPI
//! `cryptography`, `tests/peers/sign_sns.py`), AWS's own validator (npm `sns-validator`) and hookgate
//! give the same verdicts; and over HTTP, against a stand-in for SNS's endpoint on 127.0.0.1 (its
//! certificates and its ConfirmSubscription call), a source confirms its subscription, stores
//! notifications, refuses other topics, and maps SES events through the shipped
//! `mappings/amazon-ses.yaml` to the contacts API.

mod common;

use common::subscriber::Subscriber;
use common::*;
use hookgate::inbound::verify::{Preset, SignedRequest, Verifier, VerifySpec};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";

fn fixture(name: &str) -> String {
    let path = repo_root().join("tests/peers/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// SNS's side of the exchange, on 127.0.0.1: certificates by path, and `ConfirmSubscription` calls,
/// recorded and answered with a status the test sets.
struct FakeSns {
    origin: String,
    state: Arc<SnsState>,
}

#[derive(Default)]
struct SnsState {
    certs: Mutex<HashMap<String, String>>,
    cert_gets: AtomicUsize,
    confirms: Mutex<Vec<String>>,
    confirm_status: AtomicU16,
}

impl FakeSns {
    async fn start() -> FakeSns {
        let state = Arc::new(SnsState::default());
        state.confirm_status.store(200, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri| {
            let st = st.clone();
            async move {
                // An address that answers slowly, as a far or failing endpoint would.
                if uri.path().contains("slow") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                answer(&st, &uri)
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeSns {
            origin: format!("http://{addr}"),
            state,
        }
    }

    /// Serve `pem` as certificate `name`; its URL.
    fn serve_cert(&self, name: &str, pem: &str) -> String {
        let url = self.cert_url(name);
        let path = url.trim_start_matches(&self.origin).to_owned();
        self.state
            .certs
            .lock()
            .unwrap()
            .insert(path, pem.to_owned());
        url
    }

    /// The URL SNS would give certificate `name`, served here or not.
    fn cert_url(&self, name: &str) -> String {
        format!("{}/SimpleNotificationService-{name}.pem", self.origin)
    }

    fn cert_gets(&self) -> usize {
        self.state.cert_gets.load(Ordering::SeqCst)
    }

    fn confirms(&self) -> Vec<String> {
        self.state.confirms.lock().unwrap().clone()
    }

    /// A subscription or unsubscription confirmation of `TOPIC` with `token`, its certificate at
    /// `cert_url`, unsigned.
    fn control(&self, kind: &str, id: &str, token: &str, cert_url: &str) -> Value {
        json!({
            "Type": kind,
            "MessageId": id,
            "Token": token,
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": self.subscribe_url(token),
            "Timestamp": iso(SystemTime::now()),
            "SigningCertURL": cert_url,
        })
    }

    fn subscribe_url(&self, token: &str) -> String {
        format!(
            "{}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}",
            self.origin
        )
    }
}

fn answer(st: &SnsState, uri: &http::Uri) -> (http::StatusCode, String) {
    let query = uri.query().unwrap_or("");
    if uri.path().ends_with(".pem") {
        st.cert_gets.fetch_add(1, Ordering::SeqCst);
        return match st.certs.lock().unwrap().get(uri.path()) {
            Some(pem) => (http::StatusCode::OK, pem.clone()),
            None => (http::StatusCode::NOT_FOUND, String::new()),
        };
    }
    if query.contains("Action=ConfirmSubscription") {
        st.confirms.lock().unwrap().push(query.to_owned());
        let status = st.confirm_status.load(Ordering::SeqCst);
        let xml = format!(
            "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><ConfirmSubscriptionResult><SubscriptionArn>{TOPIC}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
        );
        return (http::StatusCode::from_u16(status).unwrap(), xml);
    }
    (http::StatusCode::NOT_FOUND, String::new())
}

/// An RSA key and its self-signed certificate, made by the signing peer.
struct Key {
    key_pem: String,
    cert_pem: String,
}

fn keygen() -> Key {
    let made = peer_sign_sns(&json!([{ "op": "keygen" }]));
    Key {
        key_pem: made[0]["key_pem"].as_str().unwrap().to_owned(),
        cert_pem: made[0]["cert_pem"].as_str().unwrap().to_owned(),
    }
}

/// Each message signed by the peer with SignatureVersion `version`.
fn sign(key: &Key, messages: &[(&Value, &str)]) -> Vec<Value> {
    let requests: Vec<Value> = messages
        .iter()
        .map(|(m, v)| json!({"op": "sign", "key_pem": key.key_pem, "message": m, "version": v}))
        .collect();
    peer_sign_sns(&Value::Array(requests))
}

/// One message signed by the peer.
fn signed(key: &Key, message: &Value, version: &str) -> Value {
    sign(key, &[(message, version)]).remove(0)
}

/// `t`, as SNS writes its `Timestamp`.
fn iso(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn notification(id: &str, message: &str, cert_url: &str) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": iso(SystemTime::now()),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    })
}

fn verifier(topics: &[&str], endpoints: &[&str], tolerance: Option<&str>) -> Verifier {
    VerifySpec {
        preset: Preset::Sns,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        tolerance: tolerance.map(str::to_owned),
        ..Default::default()
    }
    .build()
    .expect("an sns verifier")
}

/// hookgate's verdict on `message` at `at`: the fetch of its certificate, then the check.
async fn check(v: &Verifier, message: &Value, at: SystemTime) -> Result<(), &'static str> {
    let body = serde_json::to_vec(message).unwrap();
    let mut headers = HeaderMap::new();
    let kind = message["Type"].as_str().unwrap_or("");
    headers.insert(
        "x-amz-sns-message-type",
        HeaderValue::from_str(kind).unwrap(),
    );
    let req = SignedRequest {
        method: "POST",
        url: "",
        headers: &headers,
        body: &body,
    };
    v.verify_fetching(&req, at)
        .await
        .map(|_| ())
        .map_err(|e| e.reason())
}

/// Four notifications AWS signed in 2022 (SignatureVersion 1 and 2, with and without a Subject), from
/// AWS's own Ruby and PHP validators' tests, with the certificate they name. `SigningCertURL` is not
/// signed, so it is pointed at the stand-in, which serves that certificate; the time is the message's.
#[tokio::test]
async fn messages_aws_signed_verify_with_their_certificate() {
    let sns = FakeSns::start().await;
    let cert_url = sns.serve_cert(
        "7ff5318490ec183fbaddaa2a969abfda",
        &fixture("sns-signing-cert-2022.pem"),
    );
    let origin = sns.origin.as_str();
    for name in [
        "sns-ruby-notification-v1.json",
        "sns-ruby-notification-v2.json",
        "sns-php-notification-subject-v1.json",
        "sns-php-notification-subject-v2.json",
    ] {
        let mut m: Value = serde_json::from_str(&fixture(name)).unwrap();
        let aws_url = m["SigningCertURL"].as_str().unwrap().to_owned();
        assert!(
            aws_url
                .starts_with("https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5"),
            "{name}: {aws_url}"
        );
        let topic = m["TopicArn"].as_str().unwrap().to_owned();
        let signed_at = chrono::DateTime::parse_from_rfc3339(m["Timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_millis() as u64;
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(signed_at + 2_000);
        let v = verifier(&[&topic], &[origin], None);

        assert_eq!(
            check(&v, &m, at).await,
            Err("untrusted"),
            "{name}: AWS's address is not an endpoint this source trusts"
        );
        m["SigningCertURL"] = json!(cert_url);
        assert_eq!(check(&v, &m, at).await, Ok(()), "{name}");

        let changed = |f: &dyn Fn(&mut Value)| {
            let mut c = m.clone();
            f(&mut c);
            c
        };
        let cases: [(&str, Value); 4] = [
            (
                "another message",
                changed(&|c| c["Message"] = json!("Hello world!")),
            ),
            (
                "the Subject added or removed",
                changed(&|c| match c.as_object_mut().unwrap().remove("Subject") {
                    Some(_) => {}
                    None => c["Subject"] = json!("Hello world"),
                }),
            ),
            (
                "the other signature version",
                changed(&|c| {
                    let other = if c["SignatureVersion"] == "1" {
                        "2"
                    } else {
                        "1"
                    };
                    c["SignatureVersion"] = json!(other)
                }),
            ),
            (
                "another message id",
                changed(&|c| c["MessageId"] = json!("792cda85-518f-5dd3-9163-81d851212f3b")),
            ),
        ];
        for (what, c) in cases {
            assert_eq!(check(&v, &c, at).await, Err("mismatch"), "{name}: {what}");
        }
        assert_eq!(
            check(&v, &m, SystemTime::now()).await,
            Err("stale"),
            "{name}: years after it was sent"
        );
        let patient = verifier(&[&topic], &[origin], Some("100000d"));
        assert_eq!(
            check(&patient, &m, SystemTime::now()).await,
            Err("untrusted"),
            "{name}: its certificate has expired since"
        );
        let other = verifier(
            &["arn:aws:sns:us-east-2:295079676684:another"],
            &[origin],
            None,
        );
        assert_eq!(
            check(&other, &m, at).await,
            Err("topic_not_allowed"),
            "{name}: a topic the source does not take"
        );
        let any_topic = verifier(&["arn:aws:sns:*:295079676684:*"], &[origin], None);
        assert_eq!(
            check(&any_topic, &m, at).await,
            Ok(()),
            "{name}: the account's topics"
        );
    }
    assert_eq!(
        sns.cert_gets(),
        1,
        "the certificate was fetched once, then cached"
    );
}

/// Certificate addresses that fail, however many and however slow, cost the good one nothing: failures
/// are kept apart from certificates (they never push one out), and each address is fetched on its own
/// (a slow one holds up only the requests that name it).
#[tokio::test]
async fn failing_certificate_addresses_do_not_disturb_a_good_one() {
    let key = keygen();
    let sns = FakeSns::start().await;
    let cert_url = sns.serve_cert("good", &key.cert_pem);
    let v = verifier(&[TOPIC], &[&sns.origin], None);
    let good = signed(&key, &notification("g-1", "x", &cert_url), "2");
    // A burst of first messages fetches their certificate once.
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (v, good) = (v.clone(), good.clone());
            tokio::spawn(async move { check(&v, &good, SystemTime::now()).await })
        })
        .collect();
    for task in burst {
        assert_eq!(task.await.unwrap(), Ok(()));
    }
    assert_eq!(sns.cert_gets(), 1, "one fetch for the burst");
    // More failing addresses than the 64 certificates kept.
    let junk: Vec<Value> = (0..100)
        .map(|i| notification(&format!("j-{i}"), "x", &sns.cert_url(&format!("junk-{i}"))))
        .collect();
    let pairs: Vec<(&Value, &str)> = junk.iter().map(|m| (m, "2")).collect();
    let junk = sign(&key, &pairs);
    for m in &junk {
        assert_eq!(
            check(&v, m, SystemTime::now()).await,
            Err("cert_unavailable")
        );
    }
    let gets = sns.cert_gets();
    assert_eq!(gets, 101, "each failing address fetched once");
    assert_eq!(
        check(&v, &junk[0], SystemTime::now()).await,
        Err("cert_unavailable")
    );
    assert_eq!(sns.cert_gets(), gets, "a failure is remembered for a while");
    assert_eq!(check(&v, &good, SystemTime::now()).await, Ok(()));
    assert_eq!(
        sns.cert_gets(),
        gets,
        "the good certificate is still cached"
    );

    let slow = signed(&key, &notification("s-1", "x", &sns.cert_url("slow")), "2");
    let waiting = {
        let v = v.clone();
        tokio::spawn(async move { check(&v, &slow, SystemTime::now()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = signed(&key, &notification("o-1", "x", &sns.cert_url("other")), "2");
    assert_eq!(
        check(&v, &other, SystemTime::now()).await,
        Err("cert_unavailable")
    );
    assert_eq!(check(&v, &good, SystemTime::now()).await, Ok(()));
    assert!(
        !waiting.is_finished(),
        "the slow address is still being fetched"
    );
    assert_eq!(waiting.await.unwrap(), Err("cert_unavailable"));
}

/// Messages signed as AWS documents it, by a second implementation: AWS's own validator and hookgate
/// accept the same ones and refuse the same changes.
#[tokio::test]
async fn aws_validator_and_hookgate_agree() {
    let key = keygen();
    let sns = FakeSns::start().await;
    let cert_url = sns.serve_cert("agree", &key.cert_pem);
    let ses = r#"{"eventType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"zoë@example.com"}]},"mail":{"messageId":"m"}}"#;
    let mut with_subject = notification("n-2", &format!("{ses}\nsecond line"), &cert_url);
    with_subject["Subject"] = json!("Über € \"quoted\"");
    let n1 = notification("n-1", "Hello", &cert_url);
    let c1 = sns.control("SubscriptionConfirmation", "c-1", "tok-1", &cert_url);
    let c2 = sns.control("SubscriptionConfirmation", "c-2", "tok-2", &cert_url);
    let genuine = sign(
        &key,
        &[(&n1, "1"), (&with_subject, "2"), (&c1, "1"), (&c2, "2")],
    );
    let mut all = genuine.clone();
    let mut tamper = |i: usize, f: &dyn Fn(&mut Value)| {
        let mut c = genuine[i].clone();
        f(&mut c);
        all.push(c);
    };
    tamper(0, &|c| c["Message"] = json!("Hello!"));
    tamper(1, &|c| {
        c.as_object_mut().unwrap().remove("Subject");
    });
    tamper(2, &|c| c["Token"] = json!("tok-x"));
    tamper(3, &|c| {
        c["SubscribeURL"] = json!(format!("{}&x=1", c["SubscribeURL"].as_str().unwrap()))
    });
    tamper(0, &|c| c["SignatureVersion"] = json!("2"));
    tamper(1, &|c| {
        c["Timestamp"] = json!(iso(SystemTime::now() + Duration::from_secs(1)))
    });
    let expected: Vec<bool> = (0..all.len()).map(|i| i < genuine.len()).collect();

    let requests: Vec<Value> = all
        .iter()
        .map(|m| json!({"key_pem": key.key_pem, "cert_pem": key.cert_pem, "message": m}))
        .collect();
    assert_eq!(
        peer_verify_sns(&Value::Array(requests)),
        expected,
        "AWS's validator"
    );

    let v = verifier(&[TOPIC], &[&sns.origin], None);
    let mut ours = Vec::new();
    for m in &all {
        ours.push(check(&v, m, SystemTime::now()).await.is_ok());
    }
    assert_eq!(ours, expected, "hookgate");

    // AWS's JS validator checks an UnsubscribeConfirmation without its Token, where AWS's documentation
    // and its PHP validator sign the Token: hookgate follows the documentation, on its own here.
    let u = signed(
        &key,
        &sns.control("UnsubscribeConfirmation", "u-1", "tok-3", &cert_url),
        "2",
    );
    assert_eq!(check(&v, &u, SystemTime::now()).await, Ok(()));
    let mut changed = u.clone();
    changed["Token"] = json!("tok-4");
    assert_eq!(
        check(&v, &changed, SystemTime::now()).await,
        Err("mismatch")
    );

    // A member with a name AWS signs never rides along unsigned, whatever the type (as AWS's PHP
    // validator builds the text; its JS validator would take a notification with an unsigned Token).
    let mut extra = genuine[0].clone();
    extra["Token"] = json!("tok-5");
    assert_eq!(check(&v, &extra, SystemTime::now()).await, Err("mismatch"));
    let mut extra = genuine[0].clone();
    extra["SubscribeURL"] = json!(sns.subscribe_url("tok-6"));
    assert_eq!(check(&v, &extra, SystemTime::now()).await, Err("mismatch"));
    let mut extra = genuine[2].clone();
    extra["Subject"] = json!("unsigned");
    assert_eq!(check(&v, &extra, SystemTime::now()).await, Err("mismatch"));
}

/// POST a message as SNS does: `text/plain; charset=UTF-8`, its type and topic in headers.
async fn post(url: &str, message: &Value) -> (u16, String) {
    post_as(url, "text/plain; charset=UTF-8", message).await
}

async fn post_as(url: &str, content_type: &str, message: &Value) -> (u16, String) {
    let r = client()
        .post(url)
        .header("content-type", content_type)
        .header("user-agent", "Amazon Simple Notification Service Agent")
        .header(
            "x-amz-sns-message-type",
            message["Type"].as_str().unwrap_or("Notification"),
        )
        .header(
            "x-amz-sns-message-id",
            message["MessageId"].as_str().unwrap_or(""),
        )
        .body(serde_json::to_vec(message).unwrap())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn error_of(answer: &str) -> (String, String) {
    let v: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
    (
        v["error"].as_str().unwrap_or("").to_owned(),
        v["message"].as_str().unwrap_or("").to_owned(),
    )
}

/// The source over HTTP: its subscription confirmed (and confirmed again when SNS's endpoint failed the
/// first time), notifications stored once, other topics, changed messages, raw deliveries and untrusted
/// certificate addresses refused with their reason, a certificate that cannot be fetched answered with
/// a 502 SNS retries, an unsubscription answered, and each refusal counted.
#[tokio::test]
async fn an_sns_source_over_http() {
    let redis = Redis::start();
    let sns = FakeSns::start().await;
    let key = keygen();
    let cert_url = sns.serve_cert("http", &key.cert_pem);
    let source = format!(
        "source: ses\nverify: {{ preset: sns, topics: [\"{TOPIC}\"], endpoints: [\"{}\"] }}\ndedup: {{ id: $.MessageId }}\n",
        sns.origin
    );
    let gw = Gateway::start(&redis, &[("ses.yaml", &source)], "").await;
    let url = gw.url("ses");

    let c1 = signed(
        &key,
        &sns.control("SubscriptionConfirmation", "c-1", "tok-1", &cert_url),
        "1",
    );
    let (status, body) = post(&url, &c1).await;
    assert_eq!((status, body.as_str()), (200, ""), "confirmed");
    assert_eq!(sns.confirms().len(), 1);
    assert!(
        sns.confirms()[0].contains("Token=tok-1"),
        "{:?}",
        sns.confirms()
    );
    assert_eq!(sns.cert_gets(), 1);

    let n1 = signed(
        &key,
        &notification("n-1", r#"{"eventType":"Send"}"#, &cert_url),
        "2",
    );
    let (status, body) = post(&url, &n1).await;
    assert_eq!(status, 202, "{body}");
    let entries = inbound_entries(&redis, "hookgate");
    assert_eq!(
        entries.len(),
        1,
        "the confirmation is no event; the notification is"
    );
    assert_eq!(
        entries[0].1["body"],
        serde_json::to_vec(&n1).unwrap(),
        "stored as sent"
    );
    let (status, body) = post(&url, &n1).await;
    assert_eq!(status, 200, "SNS's retry is a duplicate: {body}");
    assert!(body.contains(r#""duplicate":true"#), "{body}");

    let mut elsewhere = notification("n-2", "x", &cert_url);
    elsewhere["TopicArn"] = json!("arn:aws:sns:us-east-1:210987654321:theirs");
    let elsewhere = signed(&key, &elsewhere, "2");
    let gets = sns.cert_gets();
    let (status, body) = post(&url, &elsewhere).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        error_of(&body),
        (
            "bad_signature".to_owned(),
            "topic arn:aws:sns:us-east-1:210987654321:theirs is not one this source takes"
                .to_owned()
        )
    );
    let mut changed = n1.clone();
    changed["MessageId"] = json!("n-3");
    changed["Message"] = json!(r#"{"eventType":"Open"}"#);
    let (status, body) = post(&url, &changed).await;
    assert_eq!(
        (status, error_of(&body).1.as_str()),
        (401, "no signature matches")
    );

    let raw = json!({"eventType": "Send", "mail": {"messageId": "m"}});
    let (status, body) = post(&url, &raw).await;
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).1.contains("raw message delivery"), "{body}");

    let mut far = notification(
        "n-4",
        "x",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    );
    far = signed(&key, &far, "1");
    let (status, body) = post(&url, &far).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        error_of(&body).1.starts_with("untrusted: SigningCertURL"),
        "{body}"
    );
    assert_eq!(
        sns.cert_gets(),
        gets,
        "no certificate fetched for a refused message"
    );

    let missing = signed(&key, &notification("n-5", "x", &sns.cert_url("gone")), "1");
    let (status, body) = post(&url, &missing).await;
    assert_eq!(status, 502, "SNS retries on a 5xx: {body}");
    assert_eq!(error_of(&body).0, "bad_gateway");
    assert!(error_of(&body).1.contains("could not be fetched"), "{body}");

    sns.state.confirm_status.store(500, Ordering::SeqCst);
    let c2 = signed(
        &key,
        &sns.control("SubscriptionConfirmation", "c-2", "tok-2", &cert_url),
        "2",
    );
    let (status, body) = post(&url, &c2).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body)
            .1
            .starts_with("could not confirm the SNS subscription"),
        "{body}"
    );
    sns.state.confirm_status.store(200, Ordering::SeqCst);
    let (status, _) = post(&url, &c2).await;
    assert_eq!(status, 200, "SNS's retry confirms it");
    assert_eq!(sns.confirms().len(), 3);

    let u = signed(
        &key,
        &sns.control("UnsubscribeConfirmation", "u-1", "tok-9", &cert_url),
        "2",
    );
    assert_eq!(post(&url, &u).await, (200, String::new()));
    assert_eq!(
        sns.confirms().len(),
        3,
        "an unsubscription is not confirmed back"
    );

    // The type spelled with a JSON escape is the same type: confirmed, not stored as an event.
    let c3 = signed(
        &key,
        &sns.control("SubscriptionConfirmation", "c-3", "tok-3", &cert_url),
        "1",
    );
    let escaped = serde_json::to_string(&c3).unwrap().replace(
        r#""SubscriptionConfirmation""#,
        r#""Subscription\u0043onfirmation""#,
    );
    assert!(escaped.contains(r"\u0043"), "{escaped}");
    let r = client()
        .post(&url)
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "SubscriptionConfirmation")
        .body(escaped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sns.confirms().len(), 4, "confirmed");

    let n6 = signed(&key, &notification("n-6", "{}", &cert_url), "2");
    assert_eq!(
        post_as(&url, "application/json", &n6).await.0,
        202,
        "JSON as JSON too"
    );
    let (status, body) = post_as(&url, "text/html", &n6).await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = post_as(&url, "text/plain; charset=ISO-8859-1", &n6).await;
    assert_eq!(status, 415, "{body}");

    assert_eq!(inbound_entries(&redis, "hookgate").len(), 2);
    let metrics = gw.metrics().await;
    for (reason, n) in [
        ("topic_not_allowed", 1.0),
        ("mismatch", 1.0),
        ("malformed", 1.0),
        ("untrusted", 1.0),
        ("cert_unavailable", 1.0),
    ] {
        let reason = format!("reason=\"{reason}\"");
        assert_eq!(
            metric_sum(
                &metrics,
                "hookgate_verify_failures_total",
                &["source=\"ses\"", &reason]
            ),
            n,
            "{reason}"
        );
    }
    assert_eq!(
        metric_sum(
            &metrics,
            "hookgate_sns_subscriptions_confirmed_total",
            &["source=\"ses\""]
        ),
        3.0
    );
}

/// Amazon SES's bounce, through SNS, through the shipped `mappings/amazon-ses.yaml` (its `verify:` line
/// pointed at the stand-in and at this test's topic) to the contacts API: an event per recipient and
/// the contact flagged.
#[tokio::test]
async fn an_ses_bounce_reaches_the_contacts_api() {
    let redis = Redis::start();
    let sns = FakeSns::start().await;
    let up = Subscriber::start().await;
    let key = keygen();
    let cert_url = sns.serve_cert("ses", &key.cert_pem);
    let shipped = std::fs::read_to_string(repo_root().join("mappings/amazon-ses.yaml")).unwrap();
    let line = "verify: { preset: sns, topics: [\"arn:aws:sns:*:123456789012:*\"] }\n";
    assert_eq!(shipped.matches(line).count(), 1, "the shipped verify line");
    let mapping = shipped.replace(
        line,
        &format!(
            "verify: {{ preset: sns, topics: [\"{TOPIC}\"], endpoints: [\"{}\"] }}\n",
            sns.origin
        ),
    );
    let testdata = repo_root().join("mappings/testdata/ses_bounce.json");
    let mut bounce: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata).unwrap()).unwrap();
    let cfg = format!(
        "upstream: {{ url: \"{}\" }}\ndeliver: {{ retry_base: 50ms, retry_max: 400ms, timeout: 2s, connect_timeout: 500ms }}\n",
        up.url("")
    );
    let gw = Gateway::start(&redis, &[("amazon-ses.yaml", &mapping)], &cfg).await;
    bounce["TopicArn"] = json!(TOPIC);
    bounce["Timestamp"] = json!(iso(SystemTime::now()));
    bounce["SigningCertURL"] = json!(cert_url);
    let bounce = signed(&key, &bounce, "1");
    let (status, body) = post(&gw.url("amazon-ses"), &bounce).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        up.wait_received(4, 20).await,
        "four actions delivered: {:?}",
        up.received().len()
    );
    let got = up.received();
    let mut events: Vec<(String, String)> = got
        .iter()
        .filter(|r| r.path == "/events")
        .map(|r| {
            let j = r.json();
            (
                j["event_name"].as_str().unwrap_or("").to_owned(),
                j["identifiers"]["email_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            (
                "email_hard_bounced".to_owned(),
                "ada.lovelace@example.com".to_owned()
            ),
            (
                "email_hard_bounced".to_owned(),
                "bob@example.org".to_owned()
            ),
        ]
    );
    let mut flagged: Vec<&str> = got
        .iter()
        .filter(|r| r.path.starts_with("/contacts/"))
        .map(|r| r.path.as_str())
        .collect();
    flagged.sort();
    assert_eq!(flagged.len(), 2, "{flagged:?}");
    assert!(flagged[0].contains("ada.lovelace"), "{flagged:?}");
    assert!(flagged[1].contains("bob"), "{flagged:?}");
}
