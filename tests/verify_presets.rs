//! Every preset against an independent signer: the providers' own libraries (PyPI stripe,
//! standardwebhooks, slack_sdk, twilio, hubspot-api-client; npm @octokit/webhooks-methods), OpenSSL
//! (PyPI cryptography) for Standard Webhooks' Ed25519 signatures and SendGrid's ECDSA ones (which
//! SendGrid's own library, PyPI sendgrid, checks beside hookgate), or
//! Python's stdlib where a provider publishes no signer (shopify, typeform, calendly, paddle, webflow,
//! square, segment, generic hmac; Paddle's own SDK, PyPI paddle-python-sdk, Webflow's, npm webflow-api,
//! Square's, PyPI squareup, and Customer.io's, npm customerio-node, judge their requests beside hookgate), PHP's `hash_hmac` for woocommerce (a PHP plugin) and `requests` for
//! basic auth and tokens. Each preset must accept the peer's request and reject
//! a wrong secret, one changed body byte, each missing header and (where the scheme has one) a
//! timestamp outside the window: too old, and too far in the future except for Stripe and Calendly,
//! whose window SIGNATURES.md (and Stripe's own library) bounds on the old side only.
//!
//! The peers live in `.peers/` (installed by `scripts/setup-peers`); without them these tests fail
//! rather than skip, so a green run always means "checked against the real libraries".

mod common;

use hookgate::inbound::verify::{Preset, SignedRequest, Verifier, VerifySpec};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The fixed "now" of every test, in unix seconds.
const NOW: i64 = 1_700_000_000;
/// Outside the default 300 s window, in either direction.
const SKEW: i64 = 400;

fn fixture(name: &str) -> String {
    let path = common::repo_root().join("tests/peers/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

/// Which independent implementation signs a case.
#[derive(Clone, Copy)]
enum Peer {
    /// `tests/peers/sign.py` in `.peers/venv`.
    Python,
    /// `tests/peers/sign_github.mjs` with `.peers/node`.
    Octokit,
    /// `tests/peers/sign_woocommerce.php`: PHP's `hash_hmac`, as WooCommerce calls it.
    Php,
    /// `tests/peers/sign_mandrill.php`: the `generateSignature` Mandrill publishes, in PHP.
    Mandrill,
}

/// A signed request as the peer produced it.
struct Signed {
    headers: Vec<(String, String)>,
    /// The URL the peer signed, when it changes it (twilio JSON adds `bodySHA256`).
    url: Option<String>,
    /// The public key that checks the signature (Standard Webhooks `v1a`).
    public_key: Option<String>,
}

impl Signed {
    /// A request carrying only `headers`, as a test writes them by hand (a vector, or a peer's header
    /// changed).
    fn with_headers(headers: &[(&str, &str)]) -> Signed {
        Signed {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            url: None,
            public_key: None,
        }
    }

    /// The value of the header the peer sent as `name`.
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the peer sent no {name}"))
    }

    /// What `v` says of this request, posted to `url` with `body` and without header `skip`: `ok`, or
    /// the reason of its refusal.
    fn verdict(&self, v: &Verifier, url: &str, body: &str, skip: Option<&str>) -> &'static str {
        self.verdict_at(v, url, body, skip, now())
    }

    /// As [`Signed::verdict`], received at time `at` (a vector dated by its provider).
    fn verdict_at(
        &self,
        v: &Verifier,
        url: &str,
        body: &str,
        skip: Option<&str>,
        at: SystemTime,
    ) -> &'static str {
        let headers = self.header_map(skip);
        let req = SignedRequest {
            method: "POST",
            url,
            headers: &headers,
            body: body.as_bytes(),
        };
        v.verify(&req, at).map_or_else(|e| e.reason(), |()| "ok")
    }

    /// The peer's headers as a request carries them, without `skip`.
    fn header_map(&self, skip: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            if Some(name.as_str()) == skip {
                continue;
            }
            let (Ok(n), Ok(val)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                panic!("the peer produced an invalid header {name}");
            };
            headers.append(n, val);
        }
        headers
    }
}

impl Peer {
    /// Sign a batch of requests (one process per batch: library imports are slow).
    fn sign(self, requests: &[Value]) -> Vec<Signed> {
        let requests = Value::Array(requests.to_vec());
        let results = match self {
            Peer::Python => common::peer_sign(&requests),
            Peer::Octokit => common::peer_sign_github(&requests),
            Peer::Php => common::peer_sign_woocommerce(&requests),
            Peer::Mandrill => common::peer_sign_mandrill(&requests),
        };
        results
            .into_iter()
            .map(|r| Signed {
                headers: r["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                url: r["url"].as_str().map(str::to_owned),
                public_key: r["public_key"].as_str().map(str::to_owned),
            })
            .collect()
    }
}

/// Unit of the signed timestamp, for schemes with a replay window.
#[derive(Clone, Copy)]
enum Window {
    Seconds,
    Millis,
}

/// One preset configuration and the request to sign.
struct Case {
    name: &'static str,
    /// The source's `verify:` block; the secret comes from env var `HG_PEER_<NAME>`.
    spec: VerifySpec,
    peer: Peer,
    /// Extra fields for the peer (preset, version, id, json, ...).
    sign: Value,
    secret: &'static str,
    wrong_secret: &'static str,
    method: &'static str,
    /// The URL as hookgate receives it.
    url: String,
    /// The URL the peer is told the sender signs (defaults to `url`).
    signed_url: Option<String>,
    body: String,
    /// Headers whose absence must be reported as `missing_header`.
    required: &'static [&'static str],
    window: Option<Window>,
    /// The window refuses only too old a timestamp (stripe, calendly).
    future_ok: bool,
}

impl Case {
    fn new(name: &'static str, preset: Preset, peer: Peer, body: String) -> Case {
        Case {
            name,
            spec: VerifySpec {
                preset,
                ..Default::default()
            },
            peer,
            sign: json!({ "preset": preset.name() }),
            secret: "peer-test-secret-0123456789",
            wrong_secret: "peer-test-secret-0123456780",
            method: "POST",
            url: "http://127.0.0.1:8080/webhooks/peer".to_owned(),
            signed_url: None,
            body,
            required: &[],
            window: None,
            future_ok: false,
        }
    }

    fn signing_request(&self, secret: &str, ts_seconds: i64) -> Value {
        let timestamp = match self.window {
            Some(Window::Millis) => ts_seconds * 1000 + 123,
            _ => ts_seconds,
        };
        let mut r = self.sign.clone();
        r["secret"] = json!(secret);
        r["body"] = json!(self.body);
        r["method"] = json!(self.method);
        r["url"] = json!(self.signed_url.as_deref().unwrap_or(&self.url));
        r["timestamp"] = json!(timestamp);
        r
    }

    /// Build the verifier with the secret in an env var, as in production.
    fn verifier(&self) -> Verifier {
        with_secrets(self.spec.clone(), &self.env_var(), &[self.secret])
            .build()
            .unwrap_or_else(|p| panic!("{}: build failed: {p:?}", self.name))
    }

    /// The verifier during a rotation: `wrong_secret` as `secret` and the real one listed in `secrets`
    /// (each preset's own key handling sees both, the real one second).
    fn rotating_verifier(&self) -> Verifier {
        with_secrets(
            self.spec.clone(),
            &self.env_var(),
            &[self.wrong_secret, self.secret],
        )
        .build()
        .unwrap_or_else(|p| panic!("{}: rotation build failed: {p:?}", self.name))
    }

    /// The env var names this case's secrets start with.
    fn env_var(&self) -> String {
        format!(
            "HG_PEER_{}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }

    fn verify(
        &self,
        v: &Verifier,
        signed: &Signed,
        body: &str,
        skip_header: Option<&str>,
    ) -> &'static str {
        let headers = signed.header_map(skip_header);
        // Twilio JSON: the peer added bodySHA256 to the URL it signed; hookgate receives that URL.
        let url = match (&signed.url, &self.signed_url) {
            (Some(u), None) => u.clone(),
            _ => self.url.clone(),
        };
        let req = SignedRequest {
            method: self.method,
            url: &url,
            headers: &headers,
            body: body.as_bytes(),
        };
        match v.verify(&req, now()) {
            Ok(()) => "ok",
            Err(e) => {
                assert!(!e.to_string().contains(self.secret), "secret in error");
                e.reason()
            }
        }
    }

    /// The full conformance run for one preset configuration.
    fn run(self) {
        let verifier = self.verifier();
        let mut batch = vec![
            self.signing_request(self.secret, NOW),
            self.signing_request(self.wrong_secret, NOW),
        ];
        if self.window.is_some() {
            batch.push(self.signing_request(self.secret, NOW - SKEW));
            batch.push(self.signing_request(self.secret, NOW + SKEW));
        }
        let signed = self.peer.sign(&batch);
        assert_eq!(
            signed.len(),
            batch.len(),
            "{}: peer answered short",
            self.name
        );
        let name = self.name;

        assert_eq!(
            self.verify(&verifier, &signed[0], &self.body, None),
            "ok",
            "{name}: genuine request"
        );
        assert_eq!(
            self.verify(&verifier, &signed[1], &self.body, None),
            "mismatch",
            "{name}: wrong secret"
        );
        assert_eq!(
            self.verify(&verifier, &signed[0], &change_one_byte(&self.body), None),
            "mismatch",
            "{name}: one changed body byte"
        );
        // Rotation: with both secrets configured, a request signed with either is accepted, and a changed
        // body still is not.
        let rotating = self.rotating_verifier();
        for (i, which) in [(0, "the listed secret"), (1, "the other secret")] {
            assert_eq!(
                self.verify(&rotating, &signed[i], &self.body, None),
                "ok",
                "{name}: rotation, signed with {which}"
            );
        }
        assert_eq!(
            self.verify(&rotating, &signed[1], &change_one_byte(&self.body), None),
            "mismatch",
            "{name}: rotation, one changed body byte"
        );
        for header in self.required {
            assert!(
                signed[0]
                    .headers
                    .iter()
                    .any(|(h, _)| h.eq_ignore_ascii_case(header)),
                "{name}: the peer did not send {header}"
            );
            assert_eq!(
                self.verify(&verifier, &signed[0], &self.body, Some(header)),
                "missing_header",
                "{name}: without {header}"
            );
        }
        if self.window.is_some() {
            assert_eq!(
                self.verify(&verifier, &signed[2], &self.body, None),
                "stale",
                "{name}: too old"
            );
            assert_eq!(
                self.verify(&verifier, &signed[3], &self.body, None),
                if self.future_ok { "ok" } else { "stale" },
                "{name}: {SKEW} s in the future"
            );
        }
    }
}

/// `spec` with `secrets` as in production, each from an env var `<var>_<i>`: the first as `secret`
/// (basic: `password`), any others as a rotation's `secrets` (`passwords`).
fn with_secrets(mut spec: VerifySpec, var: &str, secrets: &[&str]) -> VerifySpec {
    for (k, secret) in secrets.iter().enumerate() {
        let var = format!("{var}_{k}");
        std::env::set_var(&var, secret);
        let reference = format!("${{env:{var}}}");
        match (spec.preset, k) {
            (Preset::Basic, 0) => spec.password = Some(reference),
            (Preset::Basic, _) => spec.passwords.push(reference),
            (_, 0) => spec.secret = Some(reference),
            _ => spec.secrets.push(reference),
        }
    }
    spec
}

/// Change one alphanumeric byte in the middle of the body (keeps it valid UTF-8 and, for form
/// bodies, keeps the structure: only a value changes).
fn change_one_byte(body: &str) -> String {
    let mut bytes = body.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    let i = (mid..bytes.len())
        .chain(0..mid)
        .find(|&i| bytes[i].is_ascii_alphanumeric())
        .unwrap_or_else(|| panic!("body without alphanumeric bytes"));
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap_or_default()
}

const FORM: &str = "AccountSid=AC123&Body=H%C3%A9llo+w%C3%B6rld+%2B+%F0%9F%91%8B&From=%2B15551234567&MediaUrl=https%3A%2F%2Fexample.com%2Fa&MediaUrl=https%3A%2F%2Fexample.com%2F0&To=%2B15557654321&Empty=";

fn json_body() -> String {
    // Unicode, escapes, whitespace and a trailing newline: signatures cover the raw bytes.
    "{\n  \"event\": \"form_response\",\n  \"text\": \"caf\u{e9} \u{1f44b} \\\"quoted\\\"\",\n  \"n\": 1.50 \n}\n".to_owned()
}

#[test]
fn stripe_with_stripe_python() {
    let mut c = Case::new(
        "stripe",
        Preset::Stripe,
        Peer::Python,
        fixture("stripe-customer-event.json"),
    );
    c.secret = "whsec_test_6f1aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT";
    c.wrong_secret = "whsec_test_6f1aB2cD3eF4gH5iJ6kL7mN8oP9qR0sU";
    c.required = &["Stripe-Signature"];
    c.window = Some(Window::Seconds);
    c.future_ok = true;
    c.run();
}

#[test]
fn standard_webhooks_with_standardwebhooks_python() {
    let mut c = Case::new(
        "standard-webhooks",
        Preset::StandardWebhooks,
        Peer::Python,
        json_body(),
    );
    c.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    c.wrong_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    c.sign["id"] = json!("msg_2Lz8XyZ0aB1cD2eF3gH4iJ5kL6m");
    c.required = &["webhook-id", "webhook-timestamp", "webhook-signature"];
    c.window = Some(Window::Seconds);
    c.run();
}

/// Standard Webhooks' asymmetric signatures (`v1a`, Ed25519), signed by OpenSSL through PyPI
/// `cryptography`, since no Standard Webhooks library signs them. The public key OpenSSL derives
/// verifies them; another key, a changed byte, a missing header or a stale timestamp does not. A
/// sender that signs both ways (`v1` by the standardwebhooks library, then `v1a`) is accepted by a
/// source holding the secret, the public key, or both.
#[test]
fn standard_webhooks_v1a_with_openssl_ed25519() {
    use base64::Engine as _;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = json_body();
    let request = |seed: u8, ts: i64, also_v1: bool| {
        json!({
            "preset": "standard-webhooks-v1a",
            "private_key": base64::engine::general_purpose::STANDARD.encode([seed; 32]),
            "id": "msg_2Lz8XyZ0aB1cD2eF3gH4iJ5kL6m",
            "timestamp": ts,
            "body": body,
            "also_v1": also_v1.then_some(SECRET),
        })
    };
    let signed = Peer::Python.sign(&[
        request(11, NOW, false),
        request(12, NOW, false),
        request(11, NOW - SKEW, false),
        request(11, NOW + SKEW, false),
        request(11, NOW, true),
    ]);
    assert_eq!(signed.len(), 5, "the peer answered short");
    let public_key = |i: usize| -> String {
        let key = signed[i].public_key.clone().unwrap_or_default();
        assert!(key.starts_with("whpk_"), "the peer's public key: {key}");
        key
    };
    let verify = |v: &Verifier, i: usize, body: &str, skip: Option<&str>| {
        signed[i].verdict(v, "http://127.0.0.1:8080/webhooks/peer", body, skip)
    };
    let build = |spec: VerifySpec| {
        spec.build()
            .unwrap_or_else(|p| panic!("build failed: {p:?}"))
    };
    let sender = build(VerifySpec {
        preset: Preset::StandardWebhooks,
        public_key: Some(public_key(0)),
        ..Default::default()
    });
    assert_eq!(verify(&sender, 0, &body, None), "ok", "genuine");
    assert_eq!(verify(&sender, 1, &body, None), "mismatch", "another key");
    assert_eq!(
        verify(&sender, 0, &change_one_byte(&body), None),
        "mismatch",
        "one changed body byte"
    );
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(
            verify(&sender, 0, &body, Some(header)),
            "missing_header",
            "without {header}"
        );
    }
    assert_eq!(verify(&sender, 2, &body, None), "stale", "too old");
    assert_eq!(verify(&sender, 3, &body, None), "stale", "in the future");
    // Rotation: both public keys listed, the sender's second.
    let rotating = build(VerifySpec {
        preset: Preset::StandardWebhooks,
        public_keys: vec![public_key(1), public_key(0)],
        ..Default::default()
    });
    assert_eq!(
        verify(&rotating, 0, &body, None),
        "ok",
        "rotation, the listed key"
    );
    assert_eq!(
        verify(&rotating, 1, &body, None),
        "ok",
        "rotation, the other key"
    );
    assert_eq!(
        verify(&rotating, 1, &change_one_byte(&body), None),
        "mismatch",
        "rotation, one changed body byte"
    );
    // Signed both ways: each kind of key finds its own signature.
    assert_eq!(public_key(4), public_key(0));
    let secret_only = build(with_secrets(
        VerifySpec {
            preset: Preset::StandardWebhooks,
            ..Default::default()
        },
        "HG_PEER_SW_V1A",
        &[SECRET],
    ));
    let both = build(VerifySpec {
        public_key: Some(public_key(0)),
        ..with_secrets(
            VerifySpec {
                preset: Preset::StandardWebhooks,
                ..Default::default()
            },
            "HG_PEER_SW_V1A_BOTH",
            &[SECRET],
        )
    });
    for (v, which) in [
        (&secret_only, "secret"),
        (&sender, "public key"),
        (&both, "both"),
    ] {
        assert_eq!(verify(v, 4, &body, None), "ok", "signed both ways, {which}");
        assert_eq!(
            verify(v, 4, &change_one_byte(&body), None),
            "mismatch",
            "signed both ways, one changed byte, {which}"
        );
    }
    assert_eq!(
        verify(&secret_only, 0, &body, None),
        "malformed",
        "v1a alone, to a source with a secret only"
    );
}

/// SendGrid's signed Event Webhook (ECDSA P-256 over `timestamp + body`): signed by OpenSSL through
/// PyPI `cryptography` (SendGrid publishes no signer), and every case checked by SendGrid's own
/// library (PyPI `sendgrid`, `EventWebhook.verify_signature`) as well as by hookgate: the two must
/// agree on what is genuine. Both forms of the signature's `s` verify in both. SendGrid's library checks
/// no time, so a stale request is hookgate's refusal alone.
#[test]
fn sendgrid_with_openssl_ecdsa_and_sendgrids_library() {
    const SIG: &str = "X-Twilio-Email-Event-Webhook-Signature";
    const TS: &str = "X-Twilio-Email-Event-Webhook-Timestamp";
    let body = fixture("sendgrid-events.json");
    let request = |key: u64, ts: i64, s_form: Option<&str>| json!({"preset": "sendgrid", "private_key": key, "timestamp": ts, "body": body, "s_form": s_form});
    let signed = Peer::Python.sign(&[
        request(0x5e9d_6a11, NOW, None),
        request(0x5e9d_6a11, NOW, Some("high")),
        request(0x5e9d_6a11, NOW, Some("low")),
        request(0x0b0b_0b0b, NOW, None),
        request(0x5e9d_6a11, NOW - SKEW, None),
        request(0x5e9d_6a11, NOW + SKEW, None),
    ]);
    assert_eq!(signed.len(), 6, "the peer answered short");
    let key = |i: usize| signed[i].public_key.clone().unwrap_or_default();
    assert_eq!(key(1), key(0));
    let header = |i: usize, name: &str| signed[i].header(name).to_owned();
    assert_ne!(header(1, SIG), header(2, SIG), "the two forms of s differ");
    let verify = |v: &Verifier, i: usize, body: &str, skip: Option<&str>| {
        signed[i].verdict(v, "http://127.0.0.1:8080/webhooks/sendgrid", body, skip)
    };
    let build = |keys: Vec<String>| {
        let mut keys = keys.into_iter();
        VerifySpec {
            preset: Preset::Sendgrid,
            public_key: keys.next(),
            public_keys: keys.collect(),
            ..Default::default()
        }
        .build()
        .unwrap_or_else(|p| panic!("build failed: {p:?}"))
    };
    let sender = build(vec![key(0)]);
    // (request, verifying key, body, hookgate's verdict, SendGrid's library's verdict, what)
    let changed = change_one_byte(&body);
    let cases: Vec<(usize, String, &str, &str, bool, &str)> = vec![
        (0, key(0), &body, "ok", true, "genuine"),
        (1, key(0), &body, "ok", true, "the high form of s"),
        (2, key(0), &body, "ok", true, "the low form of s"),
        (3, key(0), &body, "mismatch", false, "signed by another key"),
        (
            0,
            key(0),
            &changed,
            "mismatch",
            false,
            "one changed body byte",
        ),
        (
            4,
            key(0),
            &body,
            "stale",
            true,
            "too old (SendGrid's library checks no time)",
        ),
        (5, key(0), &body, "stale", true, "in the future (likewise)"),
    ];
    let verdicts = common::peer_verify_sendgrid(&Value::Array(
        cases
            .iter()
            .map(|(i, key, body, ..)| {
                json!({"public_key": key, "body": body, "signature": header(*i, SIG), "timestamp": header(*i, TS)})
            })
            .collect(),
    ));
    for ((i, key, body, ours, theirs, what), library) in cases.iter().zip(verdicts) {
        assert_eq!(library, *theirs, "SendGrid's library: {what}");
        let verifier = build(vec![key.clone()]);
        assert_eq!(verify(&verifier, *i, body, None), *ours, "hookgate: {what}");
    }
    for header in [SIG, TS] {
        assert_eq!(
            verify(&sender, 0, &body, Some(header)),
            "missing_header",
            "without {header}"
        );
    }
    // Rotation: the sender's key listed second.
    let rotating = build(vec![key(3), key(0)]);
    assert_eq!(
        verify(&rotating, 0, &body, None),
        "ok",
        "rotation, the listed key"
    );
    assert_eq!(
        verify(&rotating, 3, &body, None),
        "ok",
        "rotation, the other key"
    );
    assert_eq!(
        verify(&rotating, 0, &changed, None),
        "mismatch",
        "rotation, one changed body byte"
    );
}

#[test]
fn github_with_octokit_webhooks_methods() {
    let mut c = Case::new("github", Preset::Github, Peer::Octokit, json_body());
    c.required = &["X-Hub-Signature-256"];
    c.run();
}

#[test]
fn shopify_with_stdlib_hmac() {
    let mut c = Case::new(
        "shopify",
        Preset::Shopify,
        Peer::Python,
        fixture("shopify-customer.json"),
    );
    c.required = &["X-Shopify-Hmac-Sha256"];
    c.run();
}

#[test]
fn paddle_with_stdlib_hmac() {
    let mut c = Case::new("paddle", Preset::Paddle, Peer::Python, json_body());
    c.required = &["Paddle-Signature"];
    c.window = Some(Window::Seconds);
    c.run();
}

/// Paddle's own SDK judges the requests `sign.py` signs as hookgate does: the genuine one, another
/// secret, a changed body, and a rotation's two `h1` entries (hookgate configured with either secret).
/// Its time check is left out (see `verify_paddle.py`); the window is checked by `paddle_with_stdlib_hmac`.
/// On headers Paddle does not send they differ, and the differences are listed here: hookgate skips an
/// unknown key (as for Stripe's), trims spaces and reads hex in either case, where the SDK refuses;
/// hookgate refuses two `ts` entries, where the SDK takes the last. Neither accepts a body without the
/// MAC of the secret over it.
#[test]
fn paddle_signatures_are_judged_alike_by_paddles_sdk() {
    const OLD: &str = "pdl_ntfset_01hq2dps8hp1rwmd1aanxe1j6t_o9zGw8q2mEz3x1mC8W0tFqLhVrXuyaB4";
    const NEW: &str = "pdl_ntfset_01hq2dps8hp1rwmd1aanxe1j6t_fKc4m1Y2r7hUuZq6tLpE0dJx9sWvNbA3";
    let body = json_body();
    let changed = change_one_byte(&body);
    let sign = |h1s: &[&str]| json!({"preset": "paddle", "secret": h1s[0], "h1s": h1s, "body": body, "timestamp": NOW});
    let signed = Peer::Python.sign(&[sign(&[NEW]), sign(&[OLD]), sign(&[OLD, NEW])]);
    let header = |i: usize| signed[i].header("Paddle-Signature").to_owned();
    let h1 = header(0)
        .split_once(";h1=")
        .map(|(_, h)| h.to_owned())
        .expect("ts=..;h1=..");
    // (header, secret configured, body, hookgate's verdict, the SDK's, what)
    let cases: Vec<(String, &str, &str, &str, bool, &str)> = vec![
        (header(0), NEW, &body, "ok", true, "genuine"),
        (header(1), NEW, &body, "mismatch", false, "another secret"),
        (
            header(0),
            NEW,
            &changed,
            "mismatch",
            false,
            "one changed body byte",
        ),
        (
            header(2),
            NEW,
            &body,
            "ok",
            true,
            "a rotation's two h1, the new secret",
        ),
        (
            header(2),
            OLD,
            &body,
            "ok",
            true,
            "a rotation's two h1, the old secret",
        ),
        (
            header(2),
            NEW,
            &changed,
            "mismatch",
            false,
            "a rotation's two h1, a changed body",
        ),
        (
            format!("ts={NOW};h1={h1};h2=ab"),
            NEW,
            &body,
            "ok",
            false,
            "an unknown key (the SDK raises)",
        ),
        (
            format!("ts={NOW}; h1={h1}"),
            NEW,
            &body,
            "ok",
            false,
            "a space after `;` (the SDK raises)",
        ),
        (
            format!("ts={NOW};h1={}", h1.to_uppercase()),
            NEW,
            &body,
            "ok",
            false,
            "uppercase hex (the SDK compares text)",
        ),
        (
            format!("ts=1;ts={NOW};h1={h1}"),
            NEW,
            &body,
            "malformed",
            true,
            "two ts (the SDK takes the last)",
        ),
    ];
    let verdicts = common::peer_verify_paddle(&Value::Array(
        cases
            .iter()
            .map(|(header, secret, body, ..)| json!({"secrets": [secret], "body": body, "header": header}))
            .collect(),
    ));
    let verifier = |secret: &str| {
        with_secrets(
            VerifySpec {
                preset: Preset::Paddle,
                ..Default::default()
            },
            "HG_PEER_PADDLE_SDK",
            &[secret],
        )
        .build()
        .unwrap_or_else(|p| panic!("{p:?}"))
    };
    let (new, old) = (verifier(NEW), verifier(OLD));
    for ((header, secret, body, ours, theirs, what), library) in cases.iter().zip(verdicts) {
        assert_eq!(library, *theirs, "Paddle's SDK: {what}");
        let request = Signed::with_headers(&[("Paddle-Signature", header)]);
        let v = if *secret == NEW { &new } else { &old };
        let url = "http://127.0.0.1:8080/webhooks/paddle";
        assert_eq!(
            request.verdict(v, url, body, None),
            *ours,
            "hookgate: {what}"
        );
    }
}

#[test]
fn webflow_with_stdlib_hmac() {
    let mut c = Case::new("webflow", Preset::Webflow, Peer::Python, json_body());
    c.required = &["x-webflow-signature", "x-webflow-timestamp"];
    c.window = Some(Window::Millis);
    c.run();
}

/// Webflow's own SDK (npm `webflow-api`) judges the requests `sign.py` signs as hookgate does: the
/// genuine one, another secret, a changed body, a changed timestamp (it is signed). The SDK checks no
/// time: the window is checked by `webflow_with_stdlib_hmac`. They differ on one header Webflow never
/// sends, listed here: hookgate reads the hex in either case, where the SDK compares the text.
#[test]
fn webflow_signatures_are_judged_alike_by_webflows_sdk() {
    const SECRET: &str = "whsec_9c1f4e2a7b3d8e6f0a5c2b9d4e7f1a3c";
    let body = json_body();
    let ms = NOW * 1000 + 457;
    let sign = |secret: &str| json!({"preset": "webflow", "secret": secret, "body": body, "timestamp": ms});
    let mut signed = Peer::Python.sign(&[sign(SECRET), sign("whsec_another")]);
    let with = |name: &str, value: String| Signed {
        headers: signed[0]
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), if k == name { value.clone() } else { v.clone() }))
            .collect(),
        url: None,
        public_key: None,
    };
    let moved = with("x-webflow-timestamp", (ms + 1).to_string());
    let upper = with(
        "x-webflow-signature",
        signed[0].header("x-webflow-signature").to_uppercase(),
    );
    signed.extend([moved, upper]);
    // (request, body, hookgate's verdict, the SDK's, what)
    let cases: Vec<(usize, String, &str, bool, &str)> = vec![
        (0, body.clone(), "ok", true, "genuine"),
        (1, body.clone(), "mismatch", false, "another secret"),
        (
            0,
            change_one_byte(&body),
            "mismatch",
            false,
            "one changed body byte",
        ),
        (
            2,
            body.clone(),
            "mismatch",
            false,
            "the timestamp moved by a millisecond",
        ),
        (
            3,
            body.clone(),
            "ok",
            false,
            "uppercase hex (the SDK compares text)",
        ),
    ];
    let verdicts = common::peer_verify_webflow(&Value::Array(
        cases
            .iter()
            .map(|(i, body, ..)| {
                let headers: serde_json::Map<String, Value> = signed[*i]
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                json!({"secret": SECRET, "body": body, "headers": headers})
            })
            .collect(),
    ));
    let verifier = with_secrets(
        VerifySpec {
            preset: Preset::Webflow,
            ..Default::default()
        },
        "HG_PEER_WEBFLOW_SDK",
        &[SECRET],
    )
    .build()
    .unwrap_or_else(|p| panic!("{p:?}"));
    let url = "http://127.0.0.1:8080/webhooks/webflow";
    for ((i, body, ours, theirs, what), library) in cases.iter().zip(verdicts) {
        assert_eq!(library, *theirs, "Webflow's SDK: {what}");
        assert_eq!(
            signed[*i].verdict(&verifier, url, body, None),
            *ours,
            "hookgate: {what}"
        );
    }
}

#[test]
fn segment_with_stdlib_hmac() {
    let mut c = Case::new("segment", Preset::Segment, Peer::Python, json_body());
    c.required = &["X-Signature"];
    c.run();
}

#[test]
fn square_with_stdlib_hmac() {
    let mut c = Case::new("square", Preset::Square, Peer::Python, json_body());
    c.required = &["x-square-hmacsha256-signature"];
    c.run();
}

/// Behind a proxy, Square signs the URL registered with it, which hookgate does not see: `public_url`
/// gives it, and the query hookgate receives is kept.
#[test]
fn square_behind_a_proxy_with_public_url() {
    let mut c = Case::new("square-proxy", Preset::Square, Peer::Python, json_body());
    c.spec.public_url = Some("https://hooks.example.com/webhooks/square".to_owned());
    c.url = "http://10.0.0.7:8080/webhooks/square?tenant=7".to_owned();
    c.signed_url = Some("https://hooks.example.com/webhooks/square?tenant=7".to_owned());
    c.required = &["x-square-hmacsha256-signature"];
    c.run();
}

/// Square's own SDK (PyPI `squareup`) judges the requests `sign.py` signs as hookgate does: the genuine
/// one (its body has non-ASCII text: both hash UTF-8), another key, a changed body, and a request
/// signed for another notification URL than the one registered. They differ on an empty body, which
/// the SDK refuses before any check and hookgate verifies like any other (Square never sends one, and
/// the receiver refuses it as no JSON after the check).
#[test]
fn square_signatures_are_judged_alike_by_squares_sdk() {
    const KEY: &str = "wSdLqvd8ZmFAdRH0TkSFRw";
    const REGISTERED: &str = "https://hooks.example.com/webhooks/square";
    const OTHER: &str = "https://hooks.example.com/webhooks/square-2";
    let body = json_body();
    let changed = change_one_byte(&body);
    let sign = |key: &str, url: &str, body: &str| json!({"preset": "square", "secret": key, "url": url, "body": body});
    let signed = Peer::Python.sign(&[
        sign(KEY, REGISTERED, &body),
        sign("wSdLqvd8ZmFAdRH0TkSFRx", REGISTERED, &body),
        sign(KEY, OTHER, &body),
        sign(KEY, REGISTERED, ""),
    ]);
    let header = |i: usize| signed[i].header("x-square-hmacsha256-signature").to_owned();
    // (header, registered URL, body, hookgate's verdict, the SDK's, what)
    let cases: Vec<(String, &str, &str, &str, bool, &str)> = vec![
        (header(0), REGISTERED, &body, "ok", true, "genuine"),
        (
            header(1),
            REGISTERED,
            &body,
            "mismatch",
            false,
            "another key",
        ),
        (
            header(0),
            REGISTERED,
            &changed,
            "mismatch",
            false,
            "one changed body byte",
        ),
        (
            header(2),
            REGISTERED,
            &body,
            "mismatch",
            false,
            "signed for another URL",
        ),
        (header(2), OTHER, &body, "ok", true, "that URL registered"),
        (
            header(3),
            REGISTERED,
            "",
            "ok",
            false,
            "an empty body (the SDK refuses it unchecked)",
        ),
    ];
    let verdicts = common::peer_verify_square(&Value::Array(
        cases
            .iter()
            .map(|(header, url, body, ..)| json!({"key": KEY, "url": url, "body": body, "header": header}))
            .collect(),
    ));
    let verifier = |url: &str| {
        with_secrets(
            VerifySpec {
                preset: Preset::Square,
                public_url: Some(url.to_owned()),
                ..Default::default()
            },
            "HG_PEER_SQUARE_SDK",
            &[KEY],
        )
        .build()
        .unwrap_or_else(|p| panic!("{p:?}"))
    };
    let (registered, other) = (verifier(REGISTERED), verifier(OTHER));
    for ((header, url, body, ours, theirs, what), library) in cases.iter().zip(verdicts) {
        assert_eq!(library, *theirs, "Square's SDK: {what}");
        let v = if *url == REGISTERED {
            &registered
        } else {
            &other
        };
        let request = Signed::with_headers(&[("x-square-hmacsha256-signature", header)]);
        // Received behind a proxy, at another address than the one Square signs.
        let received = "http://10.0.0.7:8080/webhooks/square";
        assert_eq!(
            request.verdict(v, received, body, None),
            *ours,
            "hookgate: {what}"
        );
    }
}

#[test]
fn woocommerce_with_php_hash_hmac() {
    let mut c = Case::new("woocommerce", Preset::Woocommerce, Peer::Php, json_body());
    c.required = &["X-WC-Webhook-Signature"];
    c.run();
}

#[test]
fn typeform_with_stdlib_hmac() {
    let mut c = Case::new("typeform", Preset::Typeform, Peer::Python, json_body());
    c.required = &["Typeform-Signature"];
    c.run();
}

#[test]
fn calendly_with_stdlib_hmac() {
    let mut c = Case::new("calendly", Preset::Calendly, Peer::Python, json_body());
    c.required = &["Calendly-Webhook-Signature"];
    c.window = Some(Window::Seconds);
    c.future_ok = true;
    c.run();
}

#[test]
fn slack_with_slack_sdk() {
    let mut c = Case::new(
        "slack",
        Preset::Slack,
        Peer::Python,
        "token=xyz&team_id=T1&command=%2Fweather&text=94070+%C3%A9".to_owned(),
    );
    c.required = &["X-Slack-Signature", "X-Slack-Request-Timestamp"];
    c.window = Some(Window::Seconds);
    c.run();
}

/// Zoom: signed as Zoom documents it (Python's stdlib; Zoom publishes no signer), and the same requests
/// judged by Zoom's own library (npm `@zoom/rivet`): it accepts the genuine one and refuses another
/// secret, as hookgate does. The library reads the body back through `JSON.stringify`, so its body is
/// compact JSON; the matrix of refusals runs on a body with whitespace and escapes.
#[test]
fn zoom_with_stdlib_hmac_checked_by_zoom_rivet() {
    let mut c = Case::new("zoom", Preset::Zoom, Peer::Python, json_body());
    c.required = &["x-zm-signature", "x-zm-request-timestamp"];
    c.window = Some(Window::Seconds);
    c.run();

    let body = r#"{"event":"webinar.registration_created","payload":{"object":{"registrant":{"email":"ada@example.com"}}},"event_ts":1700000000000}"#;
    let sign =
        |secret: &str| json!({"preset": "zoom", "secret": secret, "body": body, "timestamp": NOW});
    let signed = Peer::Python.sign(&[sign("zoom-secret"), sign("another")]);
    let rivet = common::peer_zoom_rivet(&Value::Array(
        signed
            .iter()
            .map(|s| {
                let headers: serde_json::Map<String, Value> = s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                json!({"secret": "zoom-secret", "body": body, "headers": headers})
            })
            .collect(),
    ));
    assert_eq!(
        rivet[0]["status"], 200,
        "Zoom's library: genuine: {}",
        rivet[0]
    );
    assert_eq!(rivet[1]["status"], 400, "Zoom's library: another secret");
    std::env::set_var("HG_PEER_ZOOM_RIVET", "zoom-secret");
    let v = VerifySpec {
        preset: Preset::Zoom,
        secret: Some("${env:HG_PEER_ZOOM_RIVET}".into()),
        ..Default::default()
    }
    .build()
    .unwrap_or_else(|p| panic!("{p:?}"));
    let url = "http://127.0.0.1:8080/webhooks/zoom";
    assert_eq!(signed[0].verdict(&v, url, body, None), "ok");
    assert_eq!(signed[1].verdict(&v, url, body, None), "mismatch");
}

#[test]
fn twilio_form_with_twilio_python() {
    let mut c = Case::new("twilio-form", Preset::Twilio, Peer::Python, FORM.to_owned());
    c.url = "https://hooks.example.com/webhooks/sms?tenant=a%20b&x=1".to_owned();
    c.required = &["X-Twilio-Signature"];
    c.run();
}

#[test]
fn twilio_json_with_twilio_python() {
    let mut c = Case::new("twilio-json", Preset::Twilio, Peer::Python, json_body());
    c.url = "https://hooks.example.com/webhooks/flow".to_owned();
    c.sign["json"] = json!(true);
    c.required = &["X-Twilio-Signature"];
    c.run();
}

#[test]
fn twilio_behind_a_proxy_with_public_url() {
    let mut c = Case::new(
        "twilio-proxy",
        Preset::Twilio,
        Peer::Python,
        FORM.to_owned(),
    );
    c.spec.public_url = Some("https://hooks.example.com/webhooks/sms".to_owned());
    c.url = "http://10.0.0.7:8080/webhooks/sms?tenant=7".to_owned();
    c.signed_url = Some("https://hooks.example.com/webhooks/sms?tenant=7".to_owned());
    c.required = &["X-Twilio-Signature"];
    c.run();
}

/// A Mandrill batch as it posts it: the events as JSON text in the one form field `mandrill_events`,
/// with non-ASCII text and characters a form percent-encodes.
fn mandrill_form() -> String {
    let events = json!([
        {"event": "click", "_id": "m1", "ts": 1_700_000_000, "url": "https://example.com/a?b=1&c=d e",
         "msg": {"email": "zoë@example.com", "subject": "Größe + 👋", "_id": "m1"}},
        {"event": "hard_bounce", "_id": "m2", "ts": 1_700_000_001,
         "msg": {"email": "x@example.com", "bounce_description": "bad_mailbox", "_id": "m2"}}
    ]);
    form_urlencoded::Serializer::new(String::new())
        .append_pair("mandrill_events", &events.to_string())
        .finish()
}

#[test]
fn mandrill_with_its_published_php_signer() {
    let mut c = Case::new(
        "mandrill",
        Preset::Mandrill,
        Peer::Mandrill,
        mandrill_form(),
    );
    // Signed with the URL exactly as entered, its query string included.
    c.url = "https://hooks.example.com/webhooks/mandrill?tenant=a%20b&x=1".to_owned();
    c.required = &["X-Mandrill-Signature"];
    c.run();
}

#[test]
fn mandrill_behind_a_proxy_with_public_url() {
    let mut c = Case::new(
        "mandrill-proxy",
        Preset::Mandrill,
        Peer::Mandrill,
        mandrill_form(),
    );
    c.spec.public_url = Some("https://hooks.example.com/webhooks/mandrill".to_owned());
    c.url = "http://10.0.0.7:8080/webhooks/mandrill?tenant=7".to_owned();
    c.signed_url = Some("https://hooks.example.com/webhooks/mandrill?tenant=7".to_owned());
    c.required = &["X-Mandrill-Signature"];
    c.run();
}

/// A request Mandrill sent (tests/peers/fixtures: two click events, captured with the webhook's URL
/// and key): accepted at that URL only, as Mandrill signs it "exactly as you entered it".
#[test]
fn mandrill_request_captured_from_mandrill() {
    let vector: Value = serde_json::from_str(&fixture("mandrill-click-signed.json")).unwrap();
    let text = |k: &str| vector[k].as_str().unwrap().to_owned();
    let (url, body) = (text("url"), text("body"));
    let spec = |public_url: Option<&str>| {
        let spec = VerifySpec {
            preset: Preset::Mandrill,
            public_url: public_url.map(str::to_owned),
            ..Default::default()
        };
        with_secrets(spec, "HG_MANDRILL_VECTOR", &[&text("key")])
            .build()
            .unwrap_or_else(|p| panic!("{p:?}"))
    };
    let request = Signed::with_headers(&[("X-Mandrill-Signature", &text("signature"))]);
    let v = spec(None);
    assert_eq!(request.verdict(&v, &url, &body, None), "ok");
    // Not the URL with a trailing slash, nor with its default port (Twilio's validators try both
    // forms; Mandrill documents one), nor with a changed byte of the events.
    assert_eq!(
        request.verdict(&v, &format!("{url}/"), &body, None),
        "mismatch"
    );
    let with_port = url.replacen("requestb.in", "requestb.in:80", 1);
    assert_eq!(request.verdict(&v, &with_port, &body, None), "mismatch");
    assert_eq!(
        request.verdict(&v, &url, &change_one_byte(&body), None),
        "mismatch"
    );
    // Received behind a proxy, checked at the public URL.
    let proxied = spec(Some(&url));
    assert_eq!(
        request.verdict(
            &proxied,
            "http://10.0.0.7:8080/webhooks/mandrill",
            &body,
            None
        ),
        "ok"
    );
    // Another key, as a Twilio token of the same scheme would be.
    let other = with_secrets(
        VerifySpec {
            preset: Preset::Twilio,
            ..Default::default()
        },
        "HG_MANDRILL_AS_TWILIO",
        &[&text("key")],
    )
    .build()
    .unwrap();
    assert_eq!(
        request.verdict(&other, &url, &body, None),
        "missing_header",
        "the twilio preset reads its own header"
    );
}

#[test]
fn hubspot_v1_with_hubspot_api_client() {
    let mut c = Case::new("hubspot-v1", Preset::Hubspot, Peer::Python, json_body());
    c.spec.version = Some("v1".to_owned());
    c.sign["version"] = json!("v1");
    c.required = &["X-HubSpot-Signature"];
    c.run();
}

#[test]
fn hubspot_v2_with_hubspot_api_client() {
    let mut c = Case::new("hubspot-v2", Preset::Hubspot, Peer::Python, json_body());
    c.spec.version = Some("v2".to_owned());
    c.sign["version"] = json!("v2");
    c.url = "https://hooks.example.com/webhooks/hubspot?portal=62515".to_owned();
    c.required = &["X-HubSpot-Signature"];
    c.run();
}

#[test]
fn hubspot_v3_with_hubspot_api_client() {
    let mut c = Case::new("hubspot-v3", Preset::Hubspot, Peer::Python, json_body());
    c.spec.public_url = Some("https://hooks.example.com/webhooks/hubspot".to_owned());
    c.url = "http://127.0.0.1:8080/webhooks/hubspot?from=a%3Ab%40c&q=%20x".to_owned();
    // HubSpot signs the URI with %3A, %40 (and the other listed escapes) decoded.
    c.signed_url = Some("https://hooks.example.com/webhooks/hubspot?from=a:b@c&q=%20x".to_owned());
    c.sign["version"] = json!("v3");
    c.required = &["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"];
    c.window = Some(Window::Millis);
    c.run();
}

#[test]
fn generic_hmac_with_stdlib_hmac() {
    for (name, algorithm, encoding) in [
        ("hmac-sha256-hex", "sha256", "hex"),
        ("hmac-sha256-base64", "sha256", "base64"),
        ("hmac-sha512-hex", "sha512", "hex"),
        ("hmac-sha512-base64", "sha512", "base64"),
        ("hmac-sha1-hex", "sha1", "hex"),
        ("hmac-sha1-base64", "sha1", "base64"),
    ] {
        let mut c = Case::new(
            name,
            Preset::Hmac,
            Peer::Python,
            fixture("brevo-delivered.json"),
        );
        c.spec.header = Some("X-Webhook-Signature".to_owned());
        c.spec.prefix = Some(format!("{algorithm}="));
        c.spec.algorithm = Some(algorithm.to_owned());
        c.spec.encoding = Some(encoding.to_owned());
        c.spec.timestamp_header = Some("X-Webhook-Timestamp".to_owned());
        c.spec.id_header = Some("X-Webhook-Id".to_owned());
        c.spec.signed_content = Some("{id}.{timestamp}.{method}.{body}".to_owned());
        c.sign = json!({
            "preset": "hmac", "header": "X-Webhook-Signature", "prefix": format!("{algorithm}="),
            "algorithm": algorithm, "encoding": encoding, "timestamp_header": "X-Webhook-Timestamp",
            "id_header": "X-Webhook-Id", "id": "evt_42",
            "signed_content": "{id}.{timestamp}.{method}.{body}",
        });
        c.required = &["X-Webhook-Signature", "X-Webhook-Timestamp", "X-Webhook-Id"];
        c.window = Some(Window::Seconds);
        c.run();
    }
}

/// The generic preset without a timestamp header or a prefix, over a template that signs the URL: the
/// same checks (no replay window: nothing dates the request), and the URL is covered: the same signature
/// received at another URL is refused.
#[test]
fn generic_hmac_over_the_url_without_a_timestamp() {
    let mut c = Case::new(
        "hmac-url",
        Preset::Hmac,
        Peer::Python,
        fixture("brevo-delivered.json"),
    );
    c.url = "https://hooks.example.com/webhooks/brevo?tenant=7".to_owned();
    c.spec.header = Some("X-Signature".to_owned());
    c.spec.signed_content = Some("{url}.{body}".to_owned());
    c.sign = json!({
        "preset": "hmac", "header": "X-Signature", "algorithm": "sha256", "encoding": "hex",
        "signed_content": "{url}.{body}",
    });
    c.required = &["X-Signature"];
    let verifier = c.verifier();
    let signed = c.peer.sign(&[c.signing_request(c.secret, NOW)]);
    assert_eq!(signed.len(), 1, "peer answered short");
    // The same signed request received at another URL. `Case::verify` receives at the URL the peer
    // reports unless the case names the signed URL itself, as `elsewhere` does: it receives at its own.
    let mut elsewhere = Case::new("hmac-url", Preset::Hmac, Peer::Python, c.body.clone());
    elsewhere.url = "https://hooks.example.com/webhooks/brevo?tenant=8".to_owned();
    elsewhere.signed_url = Some(c.url.clone());
    assert_eq!(
        elsewhere.verify(&verifier, &signed[0], &c.body, None),
        "mismatch",
        "the signature of one URL accepted at another"
    );
    c.run();
}

/// Customer.io's reporting webhooks, through the generic preset as `mappings/customerio.yaml` sets it
/// up, read from the file (`v0:{timestamp}:{body}`, hex HMAC-SHA256, an 8-day window both ways). The golden vector of
/// Customer.io's own library's tests (customerio-node, `test/webhooks.ts`) passes hookgate at its own
/// time and the library itself. Customer.io's check (npm customerio-node, `verifyRequestSignature`)
/// judges each request `sign.py` signs beside hookgate, and they agree: genuine, another key, a changed
/// byte, the timestamp moved by a second. The library checks no time: signed 7 days ago is `ok` to both
/// (a resend inside the window); 9 days ago or ahead is its `true` and hookgate's `stale`. Each header is
/// needed.
#[test]
fn customerio_through_the_generic_preset_judged_by_customerio_node() {
    const KEY: &str = "cio-signing-key-4e1b";
    // The verify block of the shipped file itself, its secret reference swapped for the test's.
    let path = common::repo_root().join("mappings/customerio.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = hookgate::mapping::parse_source_file(&path, &text)
        .unwrap_or_else(|d| panic!("{d:?}"))
        .head
        .verify
        .expect("customerio.yaml verifies");
    assert_eq!(
        shipped.signed_content.as_deref(),
        Some("v0:{timestamp}:{body}")
    );
    let spec = |var: &str, secret: &str| {
        with_secrets(shipped.clone(), var, &[secret])
            .build()
            .unwrap_or_else(|p| panic!("{p:?}"))
    };
    let url = "http://127.0.0.1:8080/webhooks/customerio";

    // The library's golden vector, at its own time.
    let golden_body = r#"{"event_id":"abc","object_type":"email","metric":"delivered"}"#;
    let golden = Signed::with_headers(&[
        ("X-CIO-Timestamp", "1614265384"),
        (
            "X-CIO-Signature",
            "6f55cf23f9b73a2ff07733fe04421f64ce9ec5e409696edda6b2a80311944230",
        ),
    ]);
    let verifier = spec("HG_CIO_GOLDEN", "signing-secret");
    let signed_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_265_384);
    assert_eq!(
        golden.verdict_at(&verifier, url, golden_body, None, signed_at),
        "ok",
        "the golden vector"
    );
    assert_eq!(
        golden.verdict_at(
            &verifier,
            url,
            &change_one_byte(golden_body),
            None,
            signed_at
        ),
        "mismatch"
    );

    // sign.py's requests, judged by Customer.io's library and by hookgate.
    let body = json_body();
    let sign = |secret: &str, ts: i64| json!({"preset": "customerio", "secret": secret, "body": body, "timestamp": ts});
    let signed = Peer::Python.sign(&[
        sign(KEY, NOW),
        sign("cio-signing-key-4e1c", NOW),
        sign(KEY, NOW - 9 * 86_400),
        sign(KEY, NOW - 7 * 86_400),
        sign(KEY, NOW + 9 * 86_400),
    ]);
    let moved = Signed::with_headers(&[
        ("X-CIO-Timestamp", &(NOW + 1).to_string()),
        ("X-CIO-Signature", signed[0].header("X-CIO-Signature")),
    ]);
    // (request, body, hookgate's verdict, the library's, what)
    let cases: Vec<(&Signed, String, &str, bool, &str)> = vec![
        (&signed[0], body.clone(), "ok", true, "genuine"),
        (&signed[1], body.clone(), "mismatch", false, "another key"),
        (
            &signed[0],
            change_one_byte(&body),
            "mismatch",
            false,
            "one changed body byte",
        ),
        (
            &moved,
            body.clone(),
            "mismatch",
            false,
            "the timestamp moved by a second",
        ),
        (&signed[2], body.clone(), "stale", true, "signed 9 days ago"),
        (
            &signed[3],
            body.clone(),
            "ok",
            true,
            "signed 7 days ago: a resend inside the 8-day window",
        ),
        (
            &signed[4],
            body.clone(),
            "stale",
            true,
            "signed 9 days ahead",
        ),
    ];
    let judge = |secret: &str, s: &Signed, body: &str| {
        json!({"secret": secret, "timestamp": s.header("X-CIO-Timestamp"),
               "signature": s.header("X-CIO-Signature"), "body": body})
    };
    // The library's own vector first, then the cases.
    let mut requests = vec![judge("signing-secret", &golden, golden_body)];
    requests.extend(cases.iter().map(|(s, body, ..)| judge(KEY, s, body)));
    let verdicts = common::peer_verify_customerio(&Value::Array(requests));
    assert_eq!(
        verdicts.len(),
        cases.len() + 1,
        "the library answered short"
    );
    assert!(verdicts[0], "customerio-node: its own tests' vector");
    let verifier = spec("HG_CIO_PEER", KEY);
    for ((s, body, ours, theirs, what), library) in cases.iter().zip(&verdicts[1..]) {
        assert_eq!(*library, *theirs, "customerio-node: {what}");
        assert_eq!(
            s.verdict(&verifier, url, body, None),
            *ours,
            "hookgate: {what}"
        );
    }
    // Each header is needed.
    for header in ["X-CIO-Signature", "X-CIO-Timestamp"] {
        assert_ne!(
            signed[0].verdict(&verifier, url, &body, Some(header)),
            "ok",
            "without {header}"
        );
    }
}

/// Basic auth and tokens are not signatures: the "wrong secret" is a wrong password or token and
/// the body is not covered, so these run their own checks with `requests` building the request.
#[test]
fn basic_and_token_with_requests() {
    let body = fixture("brevo-delivered.json");
    let batch = [
        json!({"preset": "basic", "username": "brevo", "secret": "p@ss:w0rd é"}),
        json!({"preset": "basic", "username": "brevo", "secret": "p@ss:w0rd e"}),
        json!({"preset": "token", "header": "Authorization", "prefix": "Bearer ", "secret": "tok_9f8e7d"}),
        json!({"preset": "token", "header": "Authorization", "prefix": "Bearer ", "secret": "tok_9f8e7e"}),
        json!({"preset": "token", "param": "key", "secret": "k&y=1 +/é", "url": "https://hooks.example.com/webhooks/brevo?x=1"}),
        json!({"preset": "token", "param": "key", "secret": "k&y=1 +/e", "url": "https://hooks.example.com/webhooks/brevo?x=1"}),
    ];
    let signed = Peer::Python.sign(&batch);
    let check = |spec: VerifySpec, secrets: &[&str], var: &str, s: &Signed| {
        let spec = with_secrets(spec, var, secrets);
        let v = spec.build().unwrap_or_else(|p| panic!("{p:?}"));
        let mut headers = HeaderMap::new();
        for (n, val) in &s.headers {
            if let (Ok(n), Ok(val)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_str(val),
            ) {
                headers.append(n, val);
            }
        }
        let url = s
            .url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1/webhooks/brevo".to_owned());
        let req = SignedRequest {
            method: "POST",
            url: &url,
            headers: &headers,
            body: body.as_bytes(),
        };
        let empty = HeaderMap::new();
        let bare = SignedRequest {
            method: "POST",
            url: "http://127.0.0.1/webhooks/brevo",
            headers: &empty,
            body: body.as_bytes(),
        };
        (
            v.verify(&req, now()).map_err(|e| e.reason()),
            v.verify(&bare, now()).map_err(|e| e.reason()),
        )
    };
    let basic = VerifySpec {
        preset: Preset::Basic,
        username: Some("brevo".to_owned()),
        ..Default::default()
    };
    let header = VerifySpec {
        preset: Preset::Token,
        header: Some("Authorization".to_owned()),
        prefix: Some("Bearer ".to_owned()),
        ..Default::default()
    };
    let param = VerifySpec {
        preset: Preset::Token,
        param: Some("key".to_owned()),
        ..Default::default()
    };
    for (spec, secret, other, var, i) in [
        (basic, "p@ss:w0rd é", "p@ss:w0rd e", "HG_PEER_BASIC", 0),
        (
            header,
            "tok_9f8e7d",
            "tok_9f8e7e",
            "HG_PEER_TOKEN_HEADER",
            2,
        ),
        (param, "k&y=1 +/é", "k&y=1 +/e", "HG_PEER_TOKEN_PARAM", 4),
    ] {
        assert_eq!(
            check(spec.clone(), &[secret], var, &signed[i]),
            (Ok(()), Err("missing_header")),
            "{var}"
        );
        assert_eq!(
            check(spec.clone(), &[secret], var, &signed[i + 1]).0,
            Err("bad_credentials"),
            "{var} wrong"
        );
        // Rotation: the other credential first, the right one listed second; both are accepted.
        for (j, which) in [(i, "right"), (i + 1, "other")] {
            assert_eq!(
                check(spec.clone(), &[other, secret], var, &signed[j]).0,
                Ok(()),
                "{var} rotating, {which} credential"
            );
        }
    }
}

/// In-process checks that need no peers: the crates.io `standardwebhooks` signer over arbitrary
/// bodies, and arbitrary signature headers for every preset (never a panic, never an accept).
mod properties {
    use super::*;
    use proptest::prelude::*;

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn sw_verifier() -> Verifier {
        std::env::set_var("HG_PROP_SW", SW_SECRET);
        VerifySpec {
            preset: Preset::StandardWebhooks,
            secret: Some("${env:HG_PROP_SW}".to_owned()),
            ..Default::default()
        }
        .build()
        .unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn sw_headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig.to_owned()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(n, v);
            }
        }
        h
    }

    proptest! {
        #[test]
        fn standard_webhooks_crate_signatures_verify(
            body in any::<String>(),
            id in "msg_[A-Za-z0-9]{1,32}",
            skew in -300i64..=300,
            flip in any::<prop::sample::Index>(),
        ) {
            let v = sw_verifier();
            let peer = standardwebhooks::Webhook::new(SW_SECRET)
                .unwrap_or_else(|e| panic!("{e}"));
            let ts = NOW + skew;
            let sig = peer.sign(&id, ts, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let headers = sw_headers(&id, ts, &sig);
            let req = SignedRequest { method: "POST", url: "http://h/w", headers: &headers, body: body.as_bytes() };
            prop_assert_eq!(v.verify(&req, now()), Ok(()));

            // Any single changed byte is refused.
            let mut changed = body.clone().into_bytes();
            if !changed.is_empty() {
                let i = flip.index(changed.len());
                changed[i] ^= 0x01;
                let req = SignedRequest { body: &changed, ..req };
                prop_assert_eq!(v.verify(&req, now()).map_err(|e| e.reason()), Err("mismatch"));
            }
        }

        #[test]
        fn arbitrary_signature_headers_are_refused_without_panic(
            value in "[ -~]{0,200}",
            ts in "[0-9]{0,25}",
        ) {
            let cases: [(Preset, &[&str]); 14] = [
                (Preset::Stripe, &["Stripe-Signature"]),
                (Preset::Calendly, &["Calendly-Webhook-Signature"]),
                (Preset::Paddle, &["Paddle-Signature"]),
                (Preset::Webflow, &["x-webflow-signature"]),
                (Preset::StandardWebhooks, &["webhook-signature", "webhook-id"]),
                (Preset::Github, &["X-Hub-Signature-256"]),
                (Preset::Shopify, &["X-Shopify-Hmac-Sha256"]),
                (Preset::Typeform, &["Typeform-Signature"]),
                (Preset::Woocommerce, &["X-WC-Webhook-Signature"]),
                (Preset::Square, &["x-square-hmacsha256-signature"]),
                (Preset::Segment, &["X-Signature"]),
                (Preset::Slack, &["X-Slack-Signature"]),
                (Preset::Hubspot, &["X-HubSpot-Signature-v3"]),
                (Preset::Twilio, &["X-Twilio-Signature", "X-Twilio-Webhooks-Signature-Settings"]),
            ];
            std::env::set_var("HG_PROP_ANY", SW_SECRET);
            for (preset, names) in cases {
                let v = VerifySpec { preset, secret: Some("${env:HG_PROP_ANY}".to_owned()), ..Default::default() }
                    .build()
                    .unwrap_or_else(|p| panic!("{p:?}"));
                let mut headers = HeaderMap::new();
                for name in names {
                    if let (Ok(n), Ok(val)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                        headers.insert(n, val);
                    }
                }
                for name in ["webhook-timestamp", "x-slack-request-timestamp", "x-hubspot-request-timestamp"] {
                    if let Ok(val) = HeaderValue::from_str(&ts) {
                        headers.insert(name, val);
                    }
                }
                // Twilio's JSON body is bound by `bodySHA256`: the right one, so the signature header is what
                // gets read and refused.
                let url = format!("https://h/w?bodySHA256={}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{}")));
                let req = SignedRequest { method: "POST", url: &url, headers: &headers, body: b"{}" };
                prop_assert!(v.verify(&req, now()).is_err(), "{} accepted {:?}", preset.name(), value);
            }
        }
    }
}
