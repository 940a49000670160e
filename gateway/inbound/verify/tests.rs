//! Known-answer vectors (SIGNATURES.md and the providers' published examples), header parsing
//! edge cases, rotation, and `build` diagnostics. Every test uses a fixed clock.

use super::*;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime};

/// Put `value` in a test-unique env var and return its reference.
fn env_secret(var: &str, value: &str) -> String {
    std::env::set_var(var, value);
    format!("${{env:{var}}}")
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The problems `build` reports for a spec (none when it builds).
fn build_problems(spec: VerifySpec) -> Vec<String> {
    spec.build().err().unwrap_or_default()
}

fn build(spec: VerifySpec) -> Verifier {
    match spec.build() {
        Ok(v) => v,
        Err(problems) => panic!("build failed: {problems:?}"),
    }
}

fn preset(preset: Preset, var: &str, secret: &str) -> Verifier {
    build(VerifySpec {
        preset,
        secret: Some(env_secret(var, secret)),
        ..Default::default()
    })
}

fn check(
    v: &Verifier,
    method: &str,
    url: &str,
    hdrs: &[(&str, &str)],
    body: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let map = headers(hdrs);
    v.verify(
        &SignedRequest {
            method,
            url,
            headers: &map,
            body: body.as_bytes(),
        },
        now,
    )
}

fn reason(r: Result<(), VerifyError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.reason(),
    }
}

const URL: &str = "http://127.0.0.1:8080/webhooks/test";

// ---- Known-answer vectors from SIGNATURES.md ----

#[test]
fn kat_github() {
    let v = preset(Preset::Github, "HG_T_GITHUB", "It's a Secret to Everybody");
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let ok = check(
        &v,
        "POST",
        URL,
        &[("X-Hub-Signature-256", sig)],
        "Hello, World!",
        at(0),
    );
    assert_eq!(ok, Ok(()));
    // Upper-case hex is the same signature once decoded.
    let upper = format!("sha256={}", sig["sha256=".len()..].to_ascii_uppercase());
    let r = check(
        &v,
        "POST",
        URL,
        &[("x-hub-signature-256", &upper)],
        "Hello, World!",
        at(0),
    );
    assert_eq!(r, Ok(()));
    let r = check(
        &v,
        "POST",
        URL,
        &[("X-Hub-Signature-256", sig)],
        "Hello, World?",
        at(0),
    );
    assert_eq!(r, Err(VerifyError::Mismatch));
    let r = check(&v, "POST", URL, &[], "Hello, World!", at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header X-Hub-Signature-256".into())
    );
    let bare = &sig["sha256=".len()..];
    let r = check(
        &v,
        "POST",
        URL,
        &[("X-Hub-Signature-256", bare)],
        "Hello, World!",
        at(0),
    );
    assert_eq!(reason(r), "malformed");
}

#[test]
fn kat_standard_webhooks_a_and_b() {
    let vectors = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];
    for (i, (secret, id, ts, body, sig)) in vectors.into_iter().enumerate() {
        let v = preset(Preset::StandardWebhooks, &format!("HG_T_SW_{i}"), secret);
        let ts_text = ts.to_string();
        let hdrs = [
            ("webhook-id", id),
            ("webhook-timestamp", ts_text.as_str()),
            ("webhook-signature", sig),
        ];
        assert_eq!(
            check(&v, "POST", URL, &hdrs, body, at(ts)),
            Ok(()),
            "vector {i}"
        );
        // Several entries, unknown versions ignored, the good one last.
        let many = format!("v1a,AAAA v2,abcd v1,{} {sig}", "A".repeat(44));
        let hdrs = [
            ("webhook-id", id),
            ("webhook-timestamp", ts_text.as_str()),
            ("webhook-signature", many.as_str()),
        ];
        assert_eq!(check(&v, "POST", URL, &hdrs, body, at(ts)), Ok(()));
        // The id is signed.
        let hdrs = [
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", ts_text.as_str()),
            ("webhook-signature", sig),
        ];
        assert_eq!(
            reason(check(&v, "POST", URL, &hdrs, body, at(ts))),
            "mismatch"
        );
        // 300 s both ways.
        let hdrs = [
            ("webhook-id", id),
            ("webhook-timestamp", ts_text.as_str()),
            ("webhook-signature", sig),
        ];
        assert_eq!(check(&v, "POST", URL, &hdrs, body, at(ts + 300)), Ok(()));
        assert_eq!(
            reason(check(&v, "POST", URL, &hdrs, body, at(ts + 301))),
            "stale"
        );
        assert_eq!(
            reason(check(&v, "POST", URL, &hdrs, body, at(ts - 301))),
            "stale"
        );
    }
}

/// Standard Webhooks asymmetric signatures. The signer here is ed25519-dalek's own; the independent
/// one (OpenSSL, through PyPI `cryptography`) is in tests/verify_presets.rs. These check the plumbing:
/// which entries count for which keys, rotation, a source with both kinds, and the messages.
mod asymmetric {
    use super::*;
    use base64::Engine as _;
    use ed25519_dalek::{Signer as _, SigningKey};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const TS: u64 = 1674087231;
    const BODY: &str = r#"{"type":"contact.created","data":{"id":"1f81eb52"}}"#;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MAX_V1A: usize = super::super::mac::MAX_ASYMMETRIC_SIGNATURES;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn whpk(key: &SigningKey) -> String {
        format!("whpk_{}", B64.encode(key.verifying_key().as_bytes()))
    }

    /// `v1a,<base64>` over `id.ts.body`.
    fn v1a(key: &SigningKey, body: &str) -> String {
        let content = format!("{ID}.{TS}.{body}");
        format!(
            "v1a,{}",
            B64.encode(key.sign(content.as_bytes()).to_bytes())
        )
    }

    /// `v1,<base64>` with [`SECRET`], from the crates.io `standardwebhooks` signer.
    fn v1(body: &str) -> String {
        let wh = standardwebhooks::Webhook::new(SECRET).unwrap_or_else(|e| panic!("{e}"));
        wh.sign(ID, TS as i64, body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn verify(v: &Verifier, signature: &str, body: &str, now: u64) -> Result<(), VerifyError> {
        let ts = TS.to_string();
        let hdrs = [
            ("webhook-id", ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", signature),
        ];
        check(v, "POST", URL, &hdrs, body, at(now))
    }

    fn with_keys(public_keys: &[&SigningKey], secret: bool) -> Verifier {
        let mut keys = public_keys.iter().map(|k| whpk(k));
        build(VerifySpec {
            preset: Preset::StandardWebhooks,
            public_key: keys.next(),
            public_keys: keys.collect(),
            secret: secret.then(|| env_secret("HG_T_SW_ASYM", SECRET)),
            ..Default::default()
        })
    }

    #[test]
    fn a_public_key_checks_v1a_signatures_and_nothing_else() {
        let (sender, other) = (signer(7), signer(8));
        let v = with_keys(&[&sender], false);
        assert_eq!(verify(&v, &v1a(&sender, BODY), BODY, TS), Ok(()));
        let changed = BODY.replace("created", "deleted");
        assert_eq!(
            reason(verify(&v, &v1a(&sender, BODY), &changed, TS)),
            "mismatch"
        );
        assert_eq!(reason(verify(&v, &v1a(&other, BODY), BODY, TS)), "mismatch");
        // Among other entries, in any order.
        let many = format!(
            "v2,AAAA {} v1,{} {}",
            v1a(&other, BODY),
            "A".repeat(44),
            v1a(&sender, BODY)
        );
        assert_eq!(verify(&v, &many, BODY, TS), Ok(()));
        // The id and timestamp are signed, and the window is 300 s both ways.
        assert_eq!(verify(&v, &v1a(&sender, BODY), BODY, TS + 300), Ok(()));
        assert_eq!(
            reason(verify(&v, &v1a(&sender, BODY), BODY, TS + 301)),
            "stale"
        );
        assert_eq!(
            reason(verify(&v, &v1a(&sender, BODY), BODY, TS - 301)),
            "stale"
        );
        let ts = TS.to_string();
        let hdrs = [
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", &v1a(&sender, BODY)),
        ];
        assert_eq!(
            reason(check(&v, "POST", URL, &hdrs, BODY, at(TS))),
            "mismatch"
        );
        // A v1 (HMAC) signature is no signature to a source that has no secret.
        assert_eq!(
            verify(&v, &v1(BODY), BODY, TS).map_err(|e| e.to_string()),
            Err(
                "malformed webhook-signature header: no signature with the expected version".into()
            )
        );
        // A v1a entry that is not 64 bytes of base64.
        for bad in [
            "v1a,!!!!",
            "v1a,AAAA",
            &format!("v1a,{}", B64.encode([1u8; 65])),
        ] {
            assert_eq!(
                verify(&v, bad, BODY, TS).map_err(|e| e.to_string()),
                Err(
                    "malformed webhook-signature header: signature is not base64 of 64 bytes"
                        .into()
                ),
                "{bad}"
            );
        }
        // Each v1a entry hashes the body again: at most 4 are read, the genuine one among them or not.
        let entries = |n: usize| {
            let mut list = vec![v1a(&other, BODY); n - 1];
            list.push(v1a(&sender, BODY));
            list.join(" ")
        };
        assert_eq!(verify(&v, &entries(MAX_V1A), BODY, TS), Ok(()));
        assert_eq!(
            verify(&v, &entries(MAX_V1A + 1), BODY, TS).map_err(|e| e.to_string()),
            Err("malformed webhook-signature header: more than 4 v1a signatures".into())
        );
    }

    #[test]
    fn public_keys_rotate_and_sit_beside_secrets() {
        let (old, new, stranger) = (signer(1), signer(2), signer(3));
        let rotating = with_keys(&[&old, &new], false);
        assert_eq!(verify(&rotating, &v1a(&old, BODY), BODY, TS), Ok(()));
        assert_eq!(verify(&rotating, &v1a(&new, BODY), BODY, TS), Ok(()));
        assert_eq!(
            reason(verify(&rotating, &v1a(&stranger, BODY), BODY, TS)),
            "mismatch"
        );
        // Secrets only: v1a entries are ignored, as before public keys existed.
        let secret_only = preset(Preset::StandardWebhooks, "HG_T_SW_ASYM_S", SECRET);
        assert_eq!(verify(&secret_only, &v1(BODY), BODY, TS), Ok(()));
        assert_eq!(
            reason(verify(&secret_only, &v1a(&new, BODY), BODY, TS)),
            "malformed"
        );
        // Both kinds: either signature is enough, and both are checked against the body.
        let both = with_keys(&[&new], true);
        assert_eq!(verify(&both, &v1(BODY), BODY, TS), Ok(()));
        assert_eq!(verify(&both, &v1a(&new, BODY), BODY, TS), Ok(()));
        let pair = format!("{} {}", v1(BODY), v1a(&new, BODY));
        assert_eq!(verify(&both, &pair, BODY, TS), Ok(()));
        assert_eq!(reason(verify(&both, &pair, "{}", TS)), "mismatch");
        let wrong = format!("{} {}", v1("{}"), v1a(&stranger, BODY));
        assert_eq!(reason(verify(&both, &wrong, BODY, TS)), "mismatch");
        // What does not decode is named by the kinds of entry sent.
        let message = |header: &str| verify(&both, header, BODY, TS).map_err(|e| e.to_string());
        let malformed =
            |problem: &str| Err(format!("malformed webhook-signature header: {problem}"));
        assert_eq!(message("v1,!!!"), malformed("signature is not base64"));
        assert_eq!(
            message("v1,!!! v1a,AAAA"),
            malformed("no signature decodes (v1: base64; v1a: base64 of 64 bytes)")
        );
        // A public key given as the HMAC secret would let anyone who has it sign.
        let problems = build_problems(VerifySpec {
            preset: Preset::StandardWebhooks,
            secret: Some(env_secret("HG_T_SW_ASYM_PK", &whpk(&new))),
            ..Default::default()
        });
        assert_eq!(
            problems,
            ["secret: this is a public key (whpk_), which goes in `public_key` or `public_keys`"]
        );
    }

    #[test]
    fn public_key_options_are_checked_where_they_are_written() {
        let problems = |spec: VerifySpec| build_problems(spec);
        assert_eq!(
            problems(VerifySpec {
                preset: Preset::StandardWebhooks,
                ..Default::default()
            }),
            ["preset standard-webhooks needs `secret` or `secrets` (v1 signatures), or `public_key` or `public_keys` (v1a)"]
        );
        assert_eq!(
            problems(VerifySpec {
                preset: Preset::Stripe,
                secret: Some(env_secret("HG_T_SW_ASYM_STRIPE", "whsec_x")),
                public_key: Some(whpk(&signer(1))),
                ..Default::default()
            }),
            ["`public_key` does not apply to preset stripe"]
        );
        // Each bad key by its option and index, never quoting it: a private key given by mistake is a
        // secret.
        let private = format!("whsk_{}", B64.encode(signer(5).to_keypair_bytes()));
        let spec = VerifySpec {
            preset: Preset::StandardWebhooks,
            public_key: Some(private.clone()),
            public_keys: vec![
                whpk(&signer(1)),
                "whpk_AAAA".into(),
                "${env:HG_T_SW_ASYM_UNSET}".into(),
            ],
            ..Default::default()
        };
        std::env::remove_var("HG_T_SW_ASYM_UNSET");
        let found = problems(spec.clone());
        assert_eq!(
            found,
            [
                "public_key: this is the sender's private key (whsk_); give its public key (whpk_)",
                "public_keys[1]: not a Standard Webhooks public key (expected whpk_ followed by the base64 of 32 bytes)",
                "public_keys[2]: env var HG_T_SW_ASYM_UNSET is not set",
            ]
        );
        assert!(found.iter().all(|p| !p.contains(&private[5..])));
        // `hookgate check` checks the keys written in the file, not the references it cannot read.
        assert_eq!(spec.check().err().map(|p| p.len()), Some(2));
        // A key from a file (a mounted Secret or ConfigMap) is read like a secret, and watched.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("whpk");
        std::fs::write(&path, format!("{}\n", whpk(&signer(9)))).unwrap_or_else(|e| panic!("{e}"));
        let spec = VerifySpec {
            preset: Preset::StandardWebhooks,
            public_key: Some(format!("${{file:{}}}", path.display())),
            ..Default::default()
        };
        assert_eq!(spec.secret_files(), std::slice::from_ref(&path));
        let v = build(spec);
        assert_eq!(verify(&v, &v1a(&signer(9), BODY), BODY, TS), Ok(()));
    }
}

#[test]
fn standard_webhooks_only_unknown_versions_is_malformed() {
    let v = preset(
        Preset::StandardWebhooks,
        "HG_T_SW_UNKNOWN",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let hdrs = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    let r = check(
        &v,
        "POST",
        URL,
        &hdrs,
        r#"{"test": 2432232314}"#,
        at(1614265330),
    );
    assert_eq!(reason(r), "malformed");
}

#[test]
fn kat_hubspot_v2_get_and_post() {
    let v = build(VerifySpec {
        preset: Preset::Hubspot,
        secret: Some(env_secret(
            "HG_T_HUBSPOT_V2",
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        )),
        version: Some("v2".into()),
        ..Default::default()
    });
    let uri = "https://www.example.com/webhook_uri";
    let get = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
    let post = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";
    let body = r#"{"example_field":"example_value"}"#;
    assert_eq!(
        check(&v, "GET", uri, &[("X-HubSpot-Signature", get)], "", at(0)),
        Ok(())
    );
    assert_eq!(
        check(
            &v,
            "POST",
            uri,
            &[("X-HubSpot-Signature", post)],
            body,
            at(0)
        ),
        Ok(())
    );
    // Method and URI are signed.
    assert_eq!(
        reason(check(
            &v,
            "POST",
            uri,
            &[("X-HubSpot-Signature", get)],
            "",
            at(0)
        )),
        "mismatch"
    );
    let other = "https://www.example.com/other";
    assert_eq!(
        reason(check(
            &v,
            "GET",
            other,
            &[("X-HubSpot-Signature", get)],
            "",
            at(0)
        )),
        "mismatch"
    );
}

#[test]
fn hubspot_v2_behind_a_proxy_uses_public_url() {
    let v = build(VerifySpec {
        preset: Preset::Hubspot,
        secret: Some(env_secret(
            "HG_T_HUBSPOT_PUB",
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        )),
        version: Some("v2".into()),
        public_url: Some("https://www.example.com/webhook_uri".into()),
        ..Default::default()
    });
    let get = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
    let r = check(
        &v,
        "GET",
        "http://10.1.2.3:8080/webhooks/hs",
        &[("X-HubSpot-Signature", get)],
        "",
        at(0),
    );
    assert_eq!(r, Ok(()));
}

#[test]
fn kat_twilio() {
    let v = preset(Preset::Twilio, "HG_T_TWILIO", "12345");
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let body = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    let sig = [("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")];
    assert_eq!(check(&v, "POST", url, &sig, body, at(0)), Ok(()));
    // Parameter order in the body does not matter: Twilio signs them sorted.
    let shuffled = "To=%2B18005551212&Digits=1234&CallSid=CA1234567890ABCDE&From=%2B12349013030&Caller=%2B12349013030";
    assert_eq!(check(&v, "POST", url, &sig, shuffled, at(0)), Ok(()));
    // The same URL with its default port, as some Twilio requests arrive.
    let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
    assert_eq!(check(&v, "POST", with_port, &sig, body, at(0)), Ok(()));
    // A changed parameter value, or a changed query string.
    let changed = body.replace("Digits=1234", "Digits=1235");
    assert_eq!(
        reason(check(&v, "POST", url, &sig, &changed, at(0))),
        "mismatch"
    );
    let other_query = "https://mycompany.com/myapp.php?foo=1&bar=3";
    assert_eq!(
        reason(check(&v, "POST", other_query, &sig, body, at(0))),
        "mismatch"
    );
    assert_eq!(
        reason(check(&v, "POST", url, &[], body, at(0))),
        "missing_header"
    );
}

#[test]
fn twilio_json_body_is_bound_by_body_sha256() {
    let v = preset(Preset::Twilio, "HG_T_TWILIO_JSON", "12345");
    let body = r#"{"property": "value", "boolean": true}"#;
    // Computed with Python's stdlib: hashlib.sha256(body).hexdigest(), then
    // base64(hmac.new(b"12345", url.encode(), sha1).digest()).
    let url = "https://mycompany.com/myapp?bodySHA256=\
               0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let hdrs = [("X-Twilio-Signature", "UEGkzoW/cP+5rgfjjBKC7Wch1b4=")];
    assert_eq!(check(&v, "POST", url, &hdrs, body, at(0)), Ok(()));
    let r = check(
        &v,
        "POST",
        url,
        &hdrs,
        &body.replace("true", "false"),
        at(0),
    );
    assert_eq!(r, Err(VerifyError::BodyHashMismatch));
    assert_eq!(VerifyError::BodyHashMismatch.reason(), "mismatch");
    // A second bodySHA256 (the hash of another body) is refused, not read first-wins.
    let twice = format!("{url}&bodySHA256=00");
    assert_eq!(
        reason(check(&v, "POST", &twice, &hdrs, body, at(0))),
        "malformed"
    );
}

// ---- Published examples and vectors computed with Python's stdlib hmac ----

#[test]
fn kat_slack_published_example() {
    let v = preset(
        Preset::Slack,
        "HG_T_SLACK",
        "8f742231b10e8888abcd99yyyzzz85a5",
    );
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let hdrs = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert_eq!(check(&v, "POST", URL, &hdrs, body, at(1531420618)), Ok(()));
    let r = check(&v, "POST", URL, &hdrs, body, at(1531420618 + 301));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("timestamp outside the 300 s window".into())
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &hdrs[1..], body, at(1531420618))),
        "missing_header"
    );
}

const EVENT: &str = r#"{"id":"evt_1","object":"event"}"#;

#[test]
fn kat_stripe_and_header_variants() {
    let v = preset(
        Preset::Stripe,
        "HG_T_STRIPE",
        "whsec_test_secret_0123456789",
    );
    let good = "0f06c232d18bc676bfacfc5240a2cfe4559e99421aacd50637b2ba2c7262e338";
    let bad = "1f8cf2eb0c0a941d90b724b8e04e8c9ae261f655055e707ce281fb4077fb2234";
    let now = at(1_700_000_000);
    for header in [
        format!("t=1700000000,v1={good}"),
        format!("t=1700000000,v1={bad},v1={good}"),
        format!(" t=1700000000 , v0={bad} , v1={good} ,scheme=x"),
        format!("v1={good},t=1700000000"),
        format!("t=1700000000,v1=zz,v1={good}"),
    ] {
        let r = check(
            &v,
            "POST",
            URL,
            &[("Stripe-Signature", &header)],
            EVENT,
            now,
        );
        assert_eq!(r, Ok(()), "{header}");
    }
    let stripe = |h: &str, now| {
        reason(check(
            &v,
            "POST",
            URL,
            &[("Stripe-Signature", h)],
            EVENT,
            now,
        ))
    };
    assert_eq!(stripe(&format!("t=1700000000,v1={bad}"), now), "mismatch");
    assert_eq!(stripe(&format!("t=1700000000,v0={good}"), now), "malformed");
    assert_eq!(stripe(&format!("v1={good}"), now), "malformed");
    assert_eq!(stripe(&format!("t=abc,v1={good}"), now), "malformed");
    assert_eq!(stripe("t=1700000000,v1=zz", now), "malformed");
    assert_eq!(
        stripe(&format!("t=1700000000,v1={good}"), at(1_700_000_301)),
        "stale"
    );
    // Only too old is refused (SIGNATURES.md; Stripe's own library does the same): a sender's clock
    // ahead of ours is not.
    assert_eq!(
        stripe(&format!("t=1700000000,v1={good}"), at(1_699_999_000)),
        "ok"
    );
}

#[test]
fn kat_calendly() {
    let v = build(VerifySpec {
        preset: Preset::Calendly,
        secret: Some(env_secret("HG_T_CALENDLY", "calendly-signing-key")),
        tolerance: Some("3m".into()),
        ..Default::default()
    });
    let h = "t=1700000000,v1=1f8cf2eb0c0a941d90b724b8e04e8c9ae261f655055e707ce281fb4077fb2234";
    let hdrs = [("Calendly-Webhook-Signature", h)];
    assert_eq!(
        check(&v, "POST", URL, &hdrs, EVENT, at(1_700_000_180)),
        Ok(())
    );
    let r = check(&v, "POST", URL, &hdrs, EVENT, at(1_700_000_181));
    assert_eq!(r, Err(VerifyError::Stale(Duration::from_secs(180))));
}

#[test]
fn kat_typeform_and_shopify() {
    let v = preset(Preset::Typeform, "HG_T_TYPEFORM", "typeform-secret");
    let sig = "sha256=iZvK+TYopiYhhY0CX1aCohxZKRAffR0Fz5Jc0CqYcto=";
    assert_eq!(
        check(
            &v,
            "POST",
            URL,
            &[("Typeform-Signature", sig)],
            EVENT,
            at(0)
        ),
        Ok(())
    );

    let v = preset(Preset::Shopify, "HG_T_SHOPIFY", "shpss_secret");
    let sig = "hX0Km2JYBoPr5JjBEPZJI6W5L2if3GGfalqTCBEN4tk=";
    for name in ["X-Shopify-Hmac-Sha256", "shopify-hmac-sha256"] {
        assert_eq!(
            check(&v, "POST", URL, &[(name, sig)], EVENT, at(0)),
            Ok(()),
            "{name}"
        );
    }
    let r = check(&v, "POST", URL, &[], EVENT, at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header X-Shopify-Hmac-Sha256".into())
    );
    let r = check(
        &v,
        "POST",
        URL,
        &[("X-Shopify-Hmac-Sha256", "%%%")],
        EVENT,
        at(0),
    );
    assert_eq!(reason(r), "malformed");
}

/// Paddle: the vector of Paddle's own SDK's tests (paddle-python-sdk, `test_Verifier.py`): a header
/// with a decoy `h1` and the real one, three secrets of which only the last signed it.
#[test]
fn kat_paddle() {
    const TS: u64 = 1_696_195_954;
    let header = "ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02";
    let body = "hello-world";
    let good = "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh";
    let bad = [
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_vB/yIOnTOCWIvpBadM5jzBZPHc7OmdSo",
    ];
    let v = preset(Preset::Paddle, "HG_T_PADDLE", good);
    let h = [("Paddle-Signature", header)];
    assert_eq!(check(&v, "POST", URL, &h, body, at(TS)), Ok(()));
    // As the SDK's test configures it: all three secrets, the good one last.
    let rotating = build(VerifySpec {
        preset: Preset::Paddle,
        secrets: vec![
            env_secret("HG_T_PADDLE_R1", bad[0]),
            env_secret("HG_T_PADDLE_R2", bad[1]),
            env_secret("HG_T_PADDLE_R3", good),
        ],
        ..Default::default()
    });
    assert_eq!(check(&rotating, "POST", URL, &h, body, at(TS)), Ok(()));
    for (i, secret) in bad.iter().enumerate() {
        let v = preset(Preset::Paddle, &format!("HG_T_PADDLE_BAD{i}"), secret);
        assert_eq!(reason(check(&v, "POST", URL, &h, body, at(TS))), "mismatch");
    }
    assert_eq!(
        reason(check(&v, "POST", URL, &h, "hello-worle", at(TS))),
        "mismatch"
    );
    // 300 s both ways.
    assert_eq!(check(&v, "POST", URL, &h, body, at(TS + 300)), Ok(()));
    assert_eq!(
        reason(check(&v, "POST", URL, &h, body, at(TS + 301))),
        "stale"
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &h, body, at(TS - 301))),
        "stale"
    );
    // The timestamp is signed: moved, the signature no longer matches.
    let moved = header.replace("ts=1696195954", "ts=1696195955");
    let r = check(
        &v,
        "POST",
        URL,
        &[("Paddle-Signature", &moved)],
        body,
        at(TS),
    );
    assert_eq!(reason(r), "mismatch");
    let r = check(&v, "POST", URL, &[], body, at(TS));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header Paddle-Signature".into())
    );
    for malformed in [
        "h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
        "ts=1696195954,h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
        "ts=1696195954;ts=1696195954;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
    ] {
        let r = check(&v, "POST", URL, &[("Paddle-Signature", malformed)], body, at(TS));
        assert_eq!(reason(r), "malformed", "{malformed}");
    }
}

/// Webflow: the signature computed by OpenSSL (`openssl dgst -sha256 -hmac`) over
/// `<ms timestamp>:<body>`, as Webflow's docs and its SDK's `verifySignature` build it.
#[test]
fn kat_webflow() {
    let v = preset(Preset::Webflow, "HG_T_WEBFLOW", "whsec_6ff0b1d9c3a24e58");
    let body = r#"{"triggerType":"form_submission","payload":{"id":"6321ca84df3949bfc6752327"}}"#;
    let sig = "4029f1314fc2d72cfa1925ed43a5b18be64ce88a385c3d23d3e2c9f34a542e77";
    let h = [
        ("x-webflow-timestamp", "1764000000123"),
        ("x-webflow-signature", sig),
    ];
    assert_eq!(check(&v, "POST", URL, &h, body, at(1_764_000_000)), Ok(()));
    // The timestamp is in milliseconds: 300 s both ways of 1764000000.123.
    assert_eq!(check(&v, "POST", URL, &h, body, at(1_764_000_300)), Ok(()));
    assert_eq!(check(&v, "POST", URL, &h, body, at(1_763_999_701)), Ok(()));
    assert_eq!(
        reason(check(&v, "POST", URL, &h, body, at(1_764_000_301))),
        "stale"
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &h, body, at(1_763_999_699))),
        "stale"
    );
    // A sender signing seconds (OpenSSL over `1764000000:<body>`): read as milliseconds, 1970.
    let seconds = [
        ("x-webflow-timestamp", "1764000000"),
        (
            "x-webflow-signature",
            "20512fa31714256d3854e1ddfaed5f0faaaa27db9b1c8ce8fa89269135e94e8a",
        ),
    ];
    assert_eq!(
        reason(check(&v, "POST", URL, &seconds, body, at(1_764_000_000))),
        "stale",
        "a timestamp in seconds is no Webflow timestamp"
    );
    let changed = body.replace("6321", "6322");
    assert_eq!(
        reason(check(&v, "POST", URL, &h, &changed, at(1_764_000_000))),
        "mismatch"
    );
    for missing in ["x-webflow-timestamp", "x-webflow-signature"] {
        let without: Vec<(&str, &str)> = h.iter().copied().filter(|(k, _)| *k != missing).collect();
        let r = check(&v, "POST", URL, &without, body, at(1_764_000_000));
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err(format!("missing header {missing}"))
        );
    }
}

/// Square: the two vectors of Square's own SDK tests (`verify_signature` in PyPI `squareup`, the same
/// in its Node, Ruby and Java SDKs): a test notification, and a body with `>` and `<` as sent (no
/// escaping). The URL is part of what is signed: received at another address, a request verifies only
/// with `public_url` set to the registered notification URL, and the received query is kept.
#[test]
fn kat_square() {
    const BODY: &str = r#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    const SIGNATURE: &str = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=";
    const NOTIFICATION_URL: &str = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
    let h = [("x-square-hmacsha256-signature", SIGNATURE)];
    let v = preset(Preset::Square, "HG_T_SQUARE", "Ibxx_5AKakO-3qeNVR61Dw");
    // Received at the registered URL itself (the URL hookgate rebuilds from Host and the path).
    assert_eq!(check(&v, "POST", NOTIFICATION_URL, &h, BODY, at(0)), Ok(()));
    // Received elsewhere (behind a proxy): the signed URL is not the one seen.
    assert_eq!(reason(check(&v, "POST", URL, &h, BODY, at(0))), "mismatch");
    let behind_proxy = build(VerifySpec {
        preset: Preset::Square,
        secret: Some(env_secret("HG_T_SQUARE_PUB", "Ibxx_5AKakO-3qeNVR61Dw")),
        public_url: Some(NOTIFICATION_URL.into()),
        ..Default::default()
    });
    assert_eq!(check(&behind_proxy, "POST", URL, &h, BODY, at(0)), Ok(()));
    // The received query is part of the URL: one the sender did not sign over makes it another URL.
    let with_query = format!("{URL}?tenant=7");
    assert_eq!(
        reason(check(&behind_proxy, "POST", &with_query, &h, BODY, at(0))),
        "mismatch"
    );
    let changed = BODY.replace("MLEFBHHSJGVHD", "MLEFBHHSJGVHE");
    assert_eq!(
        reason(check(&v, "POST", NOTIFICATION_URL, &h, &changed, at(0))),
        "mismatch"
    );
    let r = check(&v, "POST", NOTIFICATION_URL, &[], BODY, at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header x-square-hmacsha256-signature".to_owned())
    );
    // No timestamp is signed: the same request verifies at any time (dedup on `$.event_id` stops
    // replays; `tolerance` is refused, build_checks_preset_specific_options).
    assert_eq!(
        check(&v, "POST", NOTIFICATION_URL, &h, BODY, at(2_000_000_000)),
        Ok(())
    );
    let escaped = preset(Preset::Square, "HG_T_SQUARE_ESC", "signature-key");
    let h = [(
        "x-square-hmacsha256-signature",
        "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U=",
    )];
    let body = r#"{"data":{"type":"webhooks","id":">id<"}}"#;
    assert_eq!(
        check(
            &escaped,
            "POST",
            "https://webhook.site/webhooks",
            &h,
            body,
            at(0)
        ),
        Ok(())
    );
}

/// Segment: a track call as its Webhooks (Actions) destination sends it (`JSON.stringify` of the event,
/// non-ASCII as UTF-8) and its `X-Signature`, computed twice, by OpenSSL (`openssl dgst -sha1 -hmac`)
/// and by Node's `createHmac('sha1', secret).update(body, 'utf8').digest('hex')`, the destination's own
/// call; both gave this value. No time is signed.
#[test]
fn kat_segment() {
    let v = preset(
        Preset::Segment,
        "HG_T_SEGMENT",
        "segment-shared-secret-4f2a",
    );
    let body = r#"{"type":"track","event":"Order Completed","userId":"u-42","properties":{"total":19.5,"note":"café"},"messageId":"ajs-next-7f3c"}"#;
    let h = [("X-Signature", "f226ac70c25906894173bcea5dd34139d940702d")];
    assert_eq!(check(&v, "POST", URL, &h, body, at(0)), Ok(()));
    assert_eq!(check(&v, "POST", URL, &h, body, at(2_000_000_000)), Ok(()));
    let changed = body.replace("19.5", "19.6");
    assert_eq!(
        reason(check(&v, "POST", URL, &h, &changed, at(0))),
        "mismatch"
    );
    let other = preset(
        Preset::Segment,
        "HG_T_SEGMENT_OTHER",
        "segment-shared-secret-4f2b",
    );
    assert_eq!(
        reason(check(&other, "POST", URL, &h, body, at(0))),
        "mismatch"
    );
    let r = check(&v, "POST", URL, &[], body, at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header X-Signature".to_owned())
    );
}

/// WooCommerce: the body as WooCommerce sends it (PHP's `json_encode`, `\/` and `\u00eb` escaped) and
/// its signature, both computed by PHP (`base64_encode(hash_hmac('sha256', $body, $secret, true))`, as
/// `WC_Webhook::generate_signature` calls it).
#[test]
fn kat_woocommerce() {
    let v = preset(Preset::Woocommerce, "HG_T_WOOCOMMERCE", "wc-secret-9f2c");
    let body = r#"{"id":727,"status":"processing","billing":{"email":"zo\u00eb@example.com"},"_links":{"self":"https:\/\/shop.example.com\/wp-json\/wc\/v3\/orders\/727"}}"#;
    let sig = "+k6Dza27ghjVVChw7mRY5hL2UltVHkkMRIkLHJcrUKs=";
    for name in ["X-WC-Webhook-Signature", "x-wc-webhook-signature"] {
        assert_eq!(
            check(&v, "POST", URL, &[(name, sig)], body, at(0)),
            Ok(()),
            "{name}"
        );
    }
    let changed = body.replace("727,", "728,");
    let r = check(
        &v,
        "POST",
        URL,
        &[("X-WC-Webhook-Signature", sig)],
        &changed,
        at(0),
    );
    assert_eq!(reason(r), "mismatch");
    let other = preset(Preset::Woocommerce, "HG_T_WOOCOMMERCE_2", "wc-secret-9f2d");
    let r = check(
        &other,
        "POST",
        URL,
        &[("X-WC-Webhook-Signature", sig)],
        body,
        at(0),
    );
    assert_eq!(reason(r), "mismatch");
    let r = check(&v, "POST", URL, &[], body, at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing header X-WC-Webhook-Signature".into())
    );
    // No timestamp is signed: a day later the same delivery still verifies (dedup stops a replay).
    assert_eq!(
        check(
            &v,
            "POST",
            URL,
            &[("X-WC-Webhook-Signature", sig)],
            body,
            at(86_400)
        ),
        Ok(())
    );
}

#[test]
fn kat_hubspot_v1_and_v3() {
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    let body = r#"[{"eventId":1}]"#;
    let v1 = build(VerifySpec {
        preset: Preset::Hubspot,
        secret: Some(env_secret("HG_T_HUBSPOT_V1", secret)),
        version: Some("v1".into()),
        ..Default::default()
    });
    let sig = "0a406da2f8a0f8cc89b59bfa3d27324309debbc007258c14d82be82474cc7bea";
    assert_eq!(
        check(
            &v1,
            "POST",
            URL,
            &[("X-HubSpot-Signature", sig)],
            body,
            at(0)
        ),
        Ok(())
    );

    // v3 is the default version. HubSpot signs the URI with `%3A` decoded to `:`.
    let v3 = preset(Preset::Hubspot, "HG_T_HUBSPOT_V3", secret);
    let hdrs = [
        (
            "X-HubSpot-Signature-v3",
            "d6WEtGyYgCmsgk6vCYrSkUFXjyysYPC1tJF97seBOAw=",
        ),
        ("X-HubSpot-Request-Timestamp", "1700000000123"),
    ];
    let received = "https://hooks.example.com/webhooks/hub?x=a%3Ab";
    assert_eq!(
        check(&v3, "POST", received, &hdrs, body, at(1_700_000_000)),
        Ok(())
    );
    let decoded = "https://hooks.example.com/webhooks/hub?x=a:b";
    assert_eq!(
        check(&v3, "POST", decoded, &hdrs, body, at(1_700_000_000)),
        Ok(())
    );
    assert_eq!(
        reason(check(&v3, "POST", received, &hdrs, body, at(1_700_000_301))),
        "stale"
    );
    assert_eq!(
        reason(check(
            &v3,
            "POST",
            received,
            &hdrs[..1],
            body,
            at(1_700_000_000)
        )),
        "missing_header"
    );
}

#[test]
fn generic_hmac_sha512_base64_with_template() {
    let v = build(VerifySpec {
        preset: Preset::Hmac,
        secret: Some(env_secret("HG_T_HMAC512", "generic-secret")),
        header: Some("X-Signature".into()),
        prefix: Some("sig=".into()),
        algorithm: Some("sha512".into()),
        encoding: Some("base64".into()),
        timestamp_header: Some("X-Timestamp".into()),
        id_header: Some("X-Id".into()),
        signed_content: Some("{id}:{timestamp}:{body}".into()),
        tolerance: Some("60s".into()),
        ..Default::default()
    });
    let sig = "sig=l0SNcIO2U87Fdb/7aQ0EWdpJZwnV+zL76YrqefVkoI+ywhrXInAVUE67wbMIoj4VN7bZL0OdjRmfstV6YekMow==";
    let hdrs = [
        ("X-Signature", sig),
        ("X-Timestamp", "1700000000"),
        ("X-Id", "msg_1"),
    ];
    assert_eq!(
        check(&v, "POST", URL, &hdrs, EVENT, at(1_700_000_000)),
        Ok(())
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &hdrs, EVENT, at(1_700_000_061))),
        "stale"
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &hdrs[..2], EVENT, at(1_700_000_000))),
        "missing_header"
    );
}

#[test]
fn generic_hmac_sha1_hex_defaults() {
    let v = build(VerifySpec {
        preset: Preset::Hmac,
        secret: Some(env_secret("HG_T_HMAC1", "generic-secret")),
        header: Some("X-Sig".into()),
        algorithm: Some("sha1".into()),
        ..Default::default()
    });
    let hdrs = [("X-Sig", "ba88e62d9f47b3e5eac1286bb40d29b0c0101756")];
    assert_eq!(check(&v, "POST", URL, &hdrs, EVENT, at(0)), Ok(()));
}

// ---- Rotation ----

#[test]
fn rotation_any_secret_matches() {
    let v = build(VerifySpec {
        preset: Preset::Github,
        secret: Some(env_secret("HG_T_ROT_OLD", "old secret")),
        secrets: vec![env_secret("HG_T_ROT_NEW", "It's a Secret to Everybody")],
        ..Default::default()
    });
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let r = check(
        &v,
        "POST",
        URL,
        &[("X-Hub-Signature-256", sig)],
        "Hello, World!",
        at(0),
    );
    assert_eq!(r, Ok(()));
}

// ---- basic and token ----

/// Rotation: `password` and every one of `passwords` are accepted; any other password is not, and a
/// basic source needs at least one of the two.
#[test]
fn basic_auth_accepts_every_password_of_a_rotation() {
    let v = build(VerifySpec {
        preset: Preset::Basic,
        username: Some("brevo".into()),
        password: Some(env_secret("HG_T_BASIC_ROT_OLD", "old-pw")),
        passwords: vec![env_secret("HG_T_BASIC_ROT_NEW", "new-pw")],
        ..Default::default()
    });
    use base64::Engine as _;
    let auth = |pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("brevo:{pw}"))
        )
    };
    for (pw, want) in [
        ("old-pw", Ok(())),
        ("new-pw", Ok(())),
        ("other-pw", Err(VerifyError::BadCredentials)),
    ] {
        let h = auth(pw);
        assert_eq!(
            check(&v, "POST", URL, &[("Authorization", &h)], "", at(0)),
            want,
            "{pw}"
        );
    }
    let only_list = build(VerifySpec {
        preset: Preset::Basic,
        username: Some("brevo".into()),
        passwords: vec![env_secret("HG_T_BASIC_ROT_NEW", "new-pw")],
        ..Default::default()
    });
    let h = auth("new-pw");
    assert_eq!(
        check(&only_list, "POST", URL, &[("Authorization", &h)], "", at(0)),
        Ok(())
    );
    let missing = build_problems(VerifySpec {
        preset: Preset::Basic,
        username: Some("brevo".into()),
        ..Default::default()
    });
    assert_eq!(
        missing,
        vec!["preset basic needs `password` (or `passwords` to rotate)".to_owned()]
    );
}

#[test]
fn basic_auth() {
    let v = build(VerifySpec {
        preset: Preset::Basic,
        username: Some("brevo".into()),
        password: Some(env_secret("HG_T_BASIC_PW", "pa:ss")),
        ..Default::default()
    });
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let good = format!("Basic {}", enc("brevo:pa:ss"));
    assert_eq!(
        check(&v, "POST", URL, &[("Authorization", &good)], "", at(0)),
        Ok(())
    );
    let lower = format!("basic {}", enc("brevo:pa:ss"));
    assert_eq!(
        check(&v, "POST", URL, &[("Authorization", &lower)], "", at(0)),
        Ok(())
    );
    for wrong in ["brevo:pass", "other:pa:ss", "brevo:", ":pa:ss"] {
        let h = format!("Basic {}", enc(wrong));
        let r = check(&v, "POST", URL, &[("Authorization", &h)], "", at(0));
        assert_eq!(r, Err(VerifyError::BadCredentials), "{wrong}");
    }
    let bearer = [("Authorization", "Bearer abc")];
    assert_eq!(
        reason(check(&v, "POST", URL, &bearer, "", at(0))),
        "malformed"
    );
    assert_eq!(
        reason(check(&v, "POST", URL, &[], "", at(0))),
        "missing_header"
    );
}

/// Google Ads lead forms carry the advertiser's key in the body (`google_key`), beside the lead.
#[test]
fn token_in_a_body_member() {
    let v = build(VerifySpec {
        preset: Preset::Token,
        secrets: vec![
            env_secret("HG_T_FIELD_OLD", "old-key"),
            env_secret("HG_T_FIELD", "lead-key-1"),
        ],
        field: Some("google_key".into()),
        ..Default::default()
    });
    assert_eq!(v.credential_field(), Some("google_key"));
    assert_eq!(v.credential_header(), None);
    assert!(!v.needs_url());
    let lead = |key: &str| format!(r#"{{"lead_id": "L1", "google_key": {key}, "is_test": true}}"#);
    let now = at(1_700_000_000);
    let run = |body: &str| check(&v, "POST", URL, &[], body, now).map_err(|e| e.to_string());
    assert_eq!(run(&lead(r#""lead-key-1""#)), Ok(()));
    assert_eq!(
        run(&lead(r#""old-key""#)),
        Ok(()),
        "either key of a rotation"
    );
    assert_eq!(
        run(&lead(r#""lead\u002dkey-1""#)),
        Ok(()),
        "a JSON escape is the same text"
    );
    assert_eq!(run(&lead(r#""lead-key-2""#)), Err("bad credentials".into()));
    assert_eq!(run(&lead(r#""""#)), Err("bad credentials".into()));
    assert_eq!(
        run(&lead("12")),
        Err("malformed body field google_key: not a string".into())
    );
    assert_eq!(
        run(r#"{"lead_id": "L1"}"#),
        Err("missing body field google_key".into())
    );
    // In a header it is no credential here; a form body, or the key twice, is refused.
    assert_eq!(
        check(&v, "POST", URL, &[("google_key", "lead-key-1")], "{}", now).map_err(|e| e.reason()),
        Err("missing_field")
    );
    for body in [
        "google_key=lead-key-1".to_owned(),
        r#"{"google_key": "x", "google_key": "lead-key-1"}"#.to_owned(),
    ] {
        assert_eq!(
            run(&body),
            Err("malformed body: not a JSON object naming the token's member once".into()),
            "{body}"
        );
    }
    // A member of another name is not echoed back to the sender.
    let other = build(VerifySpec {
        preset: Preset::Token,
        secret: Some(env_secret("HG_T_FIELD_OTHER", "k")),
        field: Some("internal_secret_name".into()),
        ..Default::default()
    });
    let e = check(&other, "POST", URL, &[], "{}", now).map_err(|e| e.to_string());
    assert_eq!(e, Err("missing body field named by `field`".into()));
    let e = check(
        &other,
        "POST",
        URL,
        &[],
        r#"{"internal_secret_name": 1}"#,
        now,
    );
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("malformed body field named by `field`: not a string".into())
    );
}

#[test]
fn token_in_header_and_param() {
    let v = build(VerifySpec {
        preset: Preset::Token,
        secret: Some(env_secret("HG_T_TOKEN_H", "tok-123")),
        header: Some("Authorization".into()),
        prefix: Some("Bearer ".into()),
        ..Default::default()
    });
    let ok = [("Authorization", "Bearer tok-123")];
    assert_eq!(check(&v, "POST", URL, &ok, "", at(0)), Ok(()));
    let bad = [("Authorization", "Bearer tok-1234")];
    assert_eq!(
        check(&v, "POST", URL, &bad, "", at(0)),
        Err(VerifyError::BadCredentials)
    );
    let no_prefix = [("Authorization", "tok-123")];
    assert_eq!(
        reason(check(&v, "POST", URL, &no_prefix, "", at(0))),
        "malformed"
    );

    let v = build(VerifySpec {
        preset: Preset::Token,
        secrets: vec![
            env_secret("HG_T_TOKEN_P1", "old"),
            env_secret("HG_T_TOKEN_P2", "a b&c"),
        ],
        param: Some("key".into()),
        ..Default::default()
    });
    let url = format!("{URL}?x=1&key=a+b%26c");
    assert_eq!(check(&v, "POST", &url, &[], "", at(0)), Ok(()));
    let url = format!("{URL}?key=wrong");
    assert_eq!(
        check(&v, "POST", &url, &[], "", at(0)),
        Err(VerifyError::BadCredentials)
    );
    let r = check(&v, "POST", URL, &[], "", at(0));
    assert_eq!(
        r.map_err(|e| e.to_string()),
        Err("missing query parameter key".into())
    );
    // Given twice, it is refused whichever copy is right, as a repeated header is.
    for q in ["key=a+b%26c&key=wrong", "key=wrong&x=1&key=a+b%26c"] {
        let r = check(&v, "POST", &format!("{URL}?{q}"), &[], "", at(0));
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err("malformed query parameter key: appears more than once".into()),
            "{q}"
        );
    }
}

// ---- build diagnostics ----

#[test]
fn build_reports_every_problem_at_once() {
    let problems = build_problems(VerifySpec {
        preset: Preset::Stripe,
        prefix: Some("sha256=".into()),
        username: Some("u".into()),
        tolerance: Some("five minutes".into()),
        ..Default::default()
    });
    assert_eq!(
        problems,
        vec![
            "`prefix` does not apply to preset stripe",
            "`username` does not apply to preset stripe",
            "tolerance: invalid duration `five minutes` (write e.g. 300s or 5m)",
            "preset stripe needs `secret` or `secrets`",
        ]
    );
}

#[test]
fn build_reports_secret_problems_without_values() {
    std::env::remove_var("HG_T_UNSET_STRIPE_WEBHOOK_SECRET");
    let problems = build_problems(VerifySpec {
        preset: Preset::StandardWebhooks,
        secret: Some("whsec_literal_value_pasted_in".into()),
        secrets: vec![
            "${env:HG_T_UNSET_STRIPE_WEBHOOK_SECRET}".into(),
            env_secret("HG_T_BAD_WHSEC", "whsec_not*base64"),
        ],
        ..Default::default()
    });
    assert_eq!(
        problems,
        vec![
            "secret: a literal secret is not allowed; write ${env:NAME} or ${file:/path}",
            "secrets[0]: env var HG_T_UNSET_STRIPE_WEBHOOK_SECRET is not set",
            "secrets[1]: not a Standard Webhooks secret (expected whsec_ followed by base64)",
        ]
    );
    for p in &problems {
        assert!(
            !p.contains("literal_value") && !p.contains("not*base64"),
            "{p}"
        );
    }
}

#[test]
fn build_checks_preset_specific_options() {
    let problems = build_problems;
    let s = || Some(env_secret("HG_T_OPTS", "x"));
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Hubspot,
            secret: s(),
            version: Some("v4".into()),
            ..Default::default()
        }),
        vec!["version: must be v1, v2 or v3"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Hubspot,
            secret: s(),
            version: Some("v1".into()),
            tolerance: Some("1m".into()),
            public_url: Some("https://x/y".into()),
            ..Default::default()
        }),
        vec![
            "`tolerance` applies to preset hubspot only with a signed timestamp",
            "`public_url` applies to preset hubspot only when the URL is signed",
        ]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Twilio,
            secret: s(),
            public_url: Some("ftp://x/?a".into()),
            ..Default::default()
        }),
        vec!["public_url: must be an absolute http(s) URL without query or fragment"]
    );
    // Square signs no timestamp: a window would protect nothing (dedup on `$.event_id` does).
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Square,
            secret: s(),
            tolerance: Some("5m".into()),
            ..Default::default()
        }),
        vec!["`tolerance` does not apply to preset square"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Github,
            secret: s(),
            tolerance: Some("5m".into()),
            ..Default::default()
        }),
        vec!["`tolerance` does not apply to preset github"],
        "said once, as an option the preset never takes"
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Hmac,
            secret: s(),
            algorithm: Some("md5".into()),
            encoding: Some("b32".into()),
            signed_content: Some("{timestamp}".into()),
            ..Default::default()
        }),
        vec![
            "preset hmac needs `header`",
            "algorithm: must be sha1, sha256 or sha512",
            "encoding: must be hex or base64",
            "signed_content: must include {body}",
            "signed_content: {timestamp} needs `timestamp_header`",
        ]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Hmac,
            secret: s(),
            header: Some("X Bad".into()),
            timestamp_header: Some("X-Ts".into()),
            ..Default::default()
        }),
        vec![
            "header: `X Bad` is not a valid header name",
            "preset hmac needs `signed_content` when `timestamp_header` or `id_header` is set",
        ]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Token,
            secret: s(),
            ..Default::default()
        }),
        vec!["preset token needs `header`, `param` or `field`"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Token,
            secret: s(),
            header: Some("X-Key".into()),
            field: Some("google_key".into()),
            ..Default::default()
        }),
        vec!["preset token takes one of `header`, `param` and `field`"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Token,
            secret: s(),
            field: Some("$.google_key".into()),
            prefix: Some("Bearer ".into()),
            ..Default::default()
        }),
        vec![
            "field: the name of a top-level member of the JSON body, such as google_key (not a JSONPath)",
            "`prefix` applies to preset token only with `header`"
        ]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Stripe,
            secret: s(),
            field: Some("google_key".into()),
            ..Default::default()
        }),
        vec!["`field` does not apply to preset stripe"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Token,
            secret: s(),
            param: Some("k".into()),
            prefix: Some("Bearer ".into()),
            ..Default::default()
        }),
        vec!["`prefix` applies to preset token only with `header`"]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Basic,
            secret: s(),
            password: Some("hunter2".into()),
            ..Default::default()
        }),
        vec![
            "`secret` does not apply to preset basic",
            "preset basic needs `username`",
            "password: a literal secret is not allowed; write ${env:NAME} or ${file:/path}",
        ]
    );
    assert_eq!(
        problems(VerifySpec {
            preset: Preset::Slack,
            secret: s(),
            tolerance: Some("0s".into()),
            ..Default::default()
        }),
        vec!["tolerance: must be more than zero"]
    );
}

/// SendGrid's signed Event Webhook (ECDSA P-256 over `timestamp + body`), against the vector in
/// SendGrid's own library's tests (sendgrid-python `test/unit/test_eventwebhook.py`): its key,
/// signature, timestamp and payload, with each of their negative cases. The signature's `s` is the
/// high one of its two forms, so this also checks that both forms are accepted, as SendGrid's
/// libraries (OpenSSL) accept them. Signed by OpenSSL and checked by SendGrid's library too:
/// tests/verify_presets.rs.
mod sendgrid {
    use super::*;

    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SIGNATURE: &str = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const TIMESTAMP: &str = "1600112502";
    /// `json.dumps([...], sort_keys=True, separators=(',', ':')) + '\r\n'`, as the test builds it.
    const PAYLOAD: &str = concat!(
        r#"[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","#,
        r#""sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","#,
        r#""sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","#,
        r#""smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]"#,
        "\r\n"
    );
    /// The other key of the library's `test_verify_bad_key`.
    const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    /// The library's `test_verify_bad_signature`: another signature (its r and s both differ).
    const BAD_SIGNATURE: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
    const SIG_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
    const TS_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

    fn with_key(key: &str) -> Verifier {
        build(VerifySpec {
            preset: Preset::Sendgrid,
            public_key: Some(key.to_owned()),
            ..Default::default()
        })
    }

    fn verify(v: &Verifier, signature: &str, ts: &str, body: &str, now: u64) -> &'static str {
        let hdrs = [(SIG_HEADER, signature), (TS_HEADER, ts)];
        reason(check(v, "POST", URL, &hdrs, body, at(now)))
    }

    const NOW: u64 = 1600112502 + 5;

    #[test]
    fn the_libraries_vector_and_its_negative_cases() {
        let v = with_key(PUBLIC_KEY);
        assert_eq!(verify(&v, SIGNATURE, TIMESTAMP, PAYLOAD, NOW), "ok");
        assert_eq!(
            verify(&with_key(OTHER_KEY), SIGNATURE, TIMESTAMP, PAYLOAD, NOW),
            "mismatch",
            "bad key"
        );
        assert_eq!(
            verify(&v, SIGNATURE, TIMESTAMP, "payload", NOW),
            "mismatch",
            "bad payload"
        );
        assert_eq!(
            verify(&v, BAD_SIGNATURE, TIMESTAMP, PAYLOAD, NOW),
            "mismatch",
            "bad signature"
        );
        assert_eq!(
            verify(&v, SIGNATURE, "timestamp", PAYLOAD, NOW),
            "malformed",
            "bad timestamp"
        );
        // The trailing CRLF is part of what was signed.
        assert_eq!(
            verify(&v, SIGNATURE, TIMESTAMP, PAYLOAD.trim_end(), NOW),
            "mismatch"
        );
        // The window: 300 s both ways, `tolerance` to change it.
        assert_eq!(
            verify(&v, SIGNATURE, TIMESTAMP, PAYLOAD, NOW + 400),
            "stale"
        );
        assert_eq!(
            verify(&v, SIGNATURE, TIMESTAMP, PAYLOAD, NOW - 500),
            "stale"
        );
        // The window is checked first: a stale request is refused as stale, before any curve work, even
        // with a signature that would not verify.
        assert_eq!(
            verify(&v, BAD_SIGNATURE, TIMESTAMP, PAYLOAD, NOW + 400),
            "stale"
        );
        let day = build(VerifySpec {
            preset: Preset::Sendgrid,
            public_key: Some(PUBLIC_KEY.to_owned()),
            tolerance: Some("24h".into()),
            ..Default::default()
        });
        assert_eq!(
            verify(&day, SIGNATURE, TIMESTAMP, PAYLOAD, NOW + 3600),
            "ok"
        );
        // Each header is required.
        let only =
            |h: &str, value: &str| reason(check(&v, "POST", URL, &[(h, value)], PAYLOAD, at(NOW)));
        assert_eq!(only(SIG_HEADER, SIGNATURE), "missing_header");
        assert_eq!(only(TS_HEADER, TIMESTAMP), "missing_header");
        // A signature that is no DER of plausible length is malformed, with the form expected.
        let err = check(
            &v,
            "POST",
            URL,
            &[(SIG_HEADER, "AAAA"), (TS_HEADER, TIMESTAMP)],
            PAYLOAD,
            at(NOW),
        );
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err(format!(
                "malformed {SIG_HEADER} header: signature is not base64 of a DER-encoded ECDSA signature"
            ))
        );
    }

    /// Both forms of `s` verify (the vector's is the high one); an `s` or `r` out of range, or trailing
    /// bytes after the DER, do not.
    #[test]
    fn both_forms_of_s_and_nothing_else() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let der = b64.decode(SIGNATURE).unwrap_or_default();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
        let low = sig
            .normalize_s()
            .unwrap_or_else(|| panic!("the vector's s is the high form"));
        let low = b64.encode(low.to_der().as_bytes());
        let v = with_key(PUBLIC_KEY);
        assert_eq!(verify(&v, &low, TIMESTAMP, PAYLOAD, NOW), "ok", "low s");
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(
            verify(&v, &b64.encode(&trailing), TIMESTAMP, PAYLOAD, NOW),
            "mismatch",
            "a byte after the DER"
        );
        // r = 0 and s = 0: DER of two zero integers.
        let zeros = b64.encode([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        assert_eq!(verify(&v, &zeros, TIMESTAMP, PAYLOAD, NOW), "mismatch");
    }

    #[test]
    fn the_key_is_read_as_sendgrid_shows_it_or_as_pem_and_checked() {
        // PEM in 64 columns, PEM of one line (as SendGrid's own library wraps the key), and the base64
        // broken over lines, as pasted from a terminal.
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &PUBLIC_KEY[..64],
            &PUBLIC_KEY[64..]
        );
        let one_line =
            format!("-----BEGIN PUBLIC KEY-----\n{PUBLIC_KEY}\n-----END PUBLIC KEY-----");
        let wrapped = format!("{}\n {}", &PUBLIC_KEY[..40], &PUBLIC_KEY[40..]);
        for key in [pem.as_str(), one_line.as_str(), wrapped.as_str()] {
            assert_eq!(
                verify(&with_key(key), SIGNATURE, TIMESTAMP, PAYLOAD, NOW),
                "ok",
                "{key}"
            );
        }
        // A private key (PKCS#8, as `openssl genpkey` writes it) is named as such and never quoted;
        // a P-384 key, an Ed25519 key and text that is no key are not P-256 keys.
        let private = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEjRWeJCrze+hRANCAASfrYSurgi7738BABTYLO9qCd4rDPhxtc4MTx0TpZpZNAfLRXafEHDiwkcP5bG/5jEzwLDNxk6kvzeRqOwqB/1P";
        // The same key in SEC1 (`openssl ec` writes it so).
        let sec1 = "MHcCAQEEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABI0VniQq83voAoGCCqGSM49AwEHoUQDQgAEn62Erq4Iu+9/AQAU2CzvagneKwz4cbXODE8dE6WaWTQHy0V2nxBw4sJHD+Wxv+YxM8CwzcZOpL83kajsKgf9Tw==";
        let p384 = "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE+/lglZFetYc5D4UOyVs19hiuEhxypwgIrY+fTCYbYCtjVBdD45X3x3jlK7KMGNyDAWpv8/csk2gyatUKO9FIpTzSITu0gORzCtAZ24euEAmV7GXfAR4ZgRoV3J3fyas8";
        let ed25519 = "MCowBQYDK2VwAyEA6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
        let problems = |key: &str| {
            build_problems(VerifySpec {
                preset: Preset::Sendgrid,
                public_keys: vec![PUBLIC_KEY.to_owned(), key.to_owned()],
                ..Default::default()
            })
        };
        let found = problems(private);
        assert_eq!(
            found,
            ["public_keys[1]: this is a private key; give the public (verification) key"]
        );
        assert!(found.iter().all(|p| !p.contains(&private[30..50])));
        let pem_private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
        assert_eq!(problems(pem_private), found);
        assert_eq!(problems(sec1), found);
        // A private key of another algorithm (Ed25519, PKCS#8) is a private key too.
        assert_eq!(
            problems("MC4CAQAwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"),
            found
        );
        let not_p256 = ["public_keys[1]: not a P-256 public key (expected SendGrid's verification key: the base64 of its DER SubjectPublicKeyInfo, or PEM)"];
        for other in [p384, ed25519, "not a key", ""] {
            assert_eq!(problems(other), not_p256, "{other}");
        }
        // A secret is no key for this preset, and a key is needed.
        assert_eq!(
            build_problems(VerifySpec {
                preset: Preset::Sendgrid,
                secret: Some(env_secret("HG_T_SENDGRID", "s")),
                ..Default::default()
            }),
            [
                "`secret` does not apply to preset sendgrid",
                "preset sendgrid needs `public_key` (or `public_keys` to rotate)"
            ]
        );
    }

    #[test]
    fn rotation_takes_either_key() {
        let v = build(VerifySpec {
            preset: Preset::Sendgrid,
            public_key: Some(OTHER_KEY.to_owned()),
            public_keys: vec![PUBLIC_KEY.to_owned()],
            ..Default::default()
        });
        assert_eq!(verify(&v, SIGNATURE, TIMESTAMP, PAYLOAD, NOW), "ok");
        assert_eq!(verify(&v, SIGNATURE, TIMESTAMP, "payload", NOW), "mismatch");
    }
}

/// Mailgun: the vector of Mailgun's own PHP library's tests (mailgun/mailgun-php, `WebhookTest`:
/// `testVerifyWebhookGood` and `testVerifyWebhookBad`), posted as Mailgun's JSON webhooks post it.
mod mailgun {
    use super::*;

    const KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    const TIMESTAMP: &str = "1403645220";
    const TOKEN: &str = "5egbgr1vjgqxtrnp65xfznchgdccwh5d6i09vijqi3whgowmn6";
    const OTHER_TOKEN: &str = "owyldpe6nxhmrn78epljl6bj0orrki1u3d2v5e6cnlmmuox8jr";
    const SIGNATURE: &str = "9cfc5c41582e51246e73c88d34db3af0a3a2692a76fbab81492842f000256d33";
    const NOW: u64 = 1_403_645_220;

    fn body(block: &str) -> String {
        format!(
            r#"{{"signature": {block}, "event-data": {{"event": "opened", "recipient": "ada@example.com"}}}}"#
        )
    }

    fn block(timestamp: &str, token: &str, signature: &str) -> String {
        body(&format!(
            r#"{{"timestamp": {timestamp}, "token": "{token}", "signature": "{signature}"}}"#
        ))
    }

    fn verify(v: &Verifier, body: &str, now: u64) -> Result<(), VerifyError> {
        check(v, "POST", URL, &[], body, at(now))
    }

    fn with_key() -> Verifier {
        preset(Preset::Mailgun, "HG_T_MAILGUN", KEY)
    }

    #[test]
    fn the_libraries_vector_and_its_negative_case() {
        let v = with_key();
        let good = block(&format!("\"{TIMESTAMP}\""), TOKEN, SIGNATURE);
        assert_eq!(verify(&v, &good, NOW), Ok(()));
        // testVerifyWebhookBad: the same signature with another token.
        let bad = block(&format!("\"{TIMESTAMP}\""), OTHER_TOKEN, SIGNATURE);
        assert_eq!(verify(&v, &bad, NOW), Err(VerifyError::Mismatch));
        // Documented as an int: a number is read as its decimal text.
        let number = block(TIMESTAMP, TOKEN, SIGNATURE);
        assert_eq!(verify(&v, &number, NOW), Ok(()));
        // Another key; another timestamp (a second later, still fresh).
        let other = preset(Preset::Mailgun, "HG_T_MAILGUN_OTHER", "key-other");
        assert_eq!(verify(&other, &good, NOW), Err(VerifyError::Mismatch));
        let later = block("\"1403645221\"", TOKEN, SIGNATURE);
        assert_eq!(verify(&v, &later, NOW), Err(VerifyError::Mismatch));
        // The body outside the block is not signed: that is Mailgun's scheme, and why the source must
        // take each token once (the file parser insists on it).
        let other_event = good.replace("opened", "clicked");
        assert_eq!(verify(&v, &other_event, NOW), Ok(()));
    }

    #[test]
    fn the_window_defaults_to_mailguns_eight_hours_of_retries() {
        let v = with_key();
        let good = block(&format!("\"{TIMESTAMP}\""), TOKEN, SIGNATURE);
        // Mailgun resends with the original block for 8 hours: a retry 8 hours later is taken.
        assert_eq!(verify(&v, &good, NOW + 8 * 3600), Ok(()));
        assert_eq!(verify(&v, &good, NOW - 9 * 3600), Ok(()));
        assert_eq!(
            verify(&v, &good, NOW + 9 * 3600 + 1),
            Err(VerifyError::Stale(Duration::from_secs(9 * 3600)))
        );
        assert_eq!(
            verify(&v, &good, NOW - 9 * 3600 - 1).map_err(|e| e.reason()),
            Err("stale")
        );
        let short = build(VerifySpec {
            preset: Preset::Mailgun,
            secret: Some(env_secret("HG_T_MAILGUN_SHORT", KEY)),
            tolerance: Some("5m".into()),
            ..Default::default()
        });
        assert_eq!(verify(&short, &good, NOW + 300), Ok(()));
        assert_eq!(
            verify(&short, &good, NOW + 301),
            Err(VerifyError::Stale(Duration::from_secs(300)))
        );
        // A stale block with a bad signature is refused as stale, before any MAC.
        let bad = block(&format!("\"{TIMESTAMP}\""), OTHER_TOKEN, SIGNATURE);
        assert_eq!(
            verify(&short, &bad, NOW + 301).map_err(|e| e.reason()),
            Err("stale")
        );
    }

    #[test]
    fn a_subaccounts_parent_signature_is_taken_under_the_parents_key() {
        let parent = "key-parent-account";
        let v = preset(Preset::Mailgun, "HG_T_MAILGUN_PARENT", parent);
        let parent_sig = hex::encode(
            super::crypto::Mac::Hmac(super::crypto::Algorithm::Sha256)
                .compute(parent.as_bytes(), &[TIMESTAMP.as_bytes(), TOKEN.as_bytes()])
                .unwrap_or_default(),
        );
        let both = body(&format!(
            r#"{{"timestamp": "{TIMESTAMP}", "token": "{TOKEN}", "signature": "{SIGNATURE}", "parent-signature": "{parent_sig}"}}"#
        ));
        assert_eq!(verify(&v, &both, NOW), Ok(()));
        // The subaccount's own key takes it too, by `signature`.
        assert_eq!(verify(&with_key(), &both, NOW), Ok(()));
        // A parent signature under no configured key is no match.
        let stranger = preset(Preset::Mailgun, "HG_T_MAILGUN_STRANGER", "key-stranger");
        assert_eq!(verify(&stranger, &both, NOW), Err(VerifyError::Mismatch));
    }

    #[test]
    fn a_block_that_is_not_mailguns_is_refused_precisely() {
        let v = with_key();
        let not_json = "malformed body: not JSON (Mailgun's webhooks post JSON)";
        let cases = [
            ("token=abc&timestamp=1&signature=00", not_json),
            ("[1, 2]", "missing body field signature"),
            (r#"{"event-data": {}}"#, "missing body field signature"),
            // serde would fill a struct from an array: the block must be an object.
            (
                &body(&format!(r#"["{TIMESTAMP}", "{TOKEN}", "{SIGNATURE}"]"#)),
                "malformed body field signature: not an object",
            ),
            (
                &body(r#"{"token": "t", "signature": "00"}"#),
                "missing body field signature.timestamp",
            ),
            (
                &body(r#"{"timestamp": "1403645220", "signature": "00"}"#),
                "missing body field signature.token",
            ),
            (
                &body(r#"{"timestamp": "1403645220", "token": "t"}"#),
                "missing body field signature.signature",
            ),
            (
                &body(r#"{"timestamp": "1403645220", "token": ["t"], "signature": "00"}"#),
                "malformed body field signature.token: not a string",
            ),
            (
                &body(r#"{"timestamp": "1403645220", "token": "", "signature": "00"}"#),
                "malformed body field signature.token: empty or longer than 256 bytes",
            ),
            (
                &body(r#"{"timestamp": "1403645220", "token": "t", "signature": "xyz"}"#),
                "malformed body field signature.signature: not hex",
            ),
            (
                &body(
                    r#"{"timestamp": "1403645220", "token": "t", "signature": "00", "parent-signature": "xyz"}"#,
                ),
                "malformed body field signature.parent-signature: not hex",
            ),
            (
                &body(r#"{"timestamp": "14036.5", "token": "t", "signature": "00"}"#),
                "malformed body field signature.timestamp: timestamp is not a unix time",
            ),
            (
                &body(r#"{"timestamp": -5, "token": "t", "signature": "00"}"#),
                "malformed body field signature.timestamp: timestamp is not a unix time",
            ),
        ];
        for (body, message) in cases {
            let got = verify(&v, body, NOW).map_err(|e| e.to_string());
            assert_eq!(got, Err(message.to_owned()), "{body}");
        }
        let long = body(&format!(
            r#"{{"timestamp": "{TIMESTAMP}", "token": "{}", "signature": "00"}}"#,
            "a".repeat(257)
        ));
        assert_eq!(
            verify(&v, &long, NOW).map_err(|e| e.reason()),
            Err("malformed")
        );
        assert_eq!(
            verify(&v, r#"{"event-data": {}}"#, NOW).map_err(|e| e.reason()),
            Err("missing_field")
        );
    }

    /// The token checked is the token the dedup id `$.signature.token` is read as, by the receive path's
    /// own reader: a block (or a token) given twice is read as the whole parse reads it, the last copy.
    #[test]
    fn the_token_checked_is_the_token_deduplicated_on() {
        let v = with_key();
        let good = format!(
            r#"{{"timestamp": "{TIMESTAMP}", "token": "{TOKEN}", "signature": "{SIGNATURE}"}}"#
        );
        let bad = format!(
            r#"{{"timestamp": "{TIMESTAMP}", "token": "{OTHER_TOKEN}", "signature": "{SIGNATURE}"}}"#
        );
        let dedup_id = |body: &str| {
            crate::payload::json_member(body.as_bytes(), &["signature", "token"], 64)
                .ok()
                .flatten()
        };
        let last_good = format!(r#"{{"signature": {bad}, "signature": {good}}}"#);
        assert_eq!(verify(&v, &last_good, NOW), Ok(()));
        assert_eq!(dedup_id(&last_good), Some(serde_json::json!(TOKEN)));
        let last_bad = format!(r#"{{"signature": {good}, "signature": {bad}}}"#);
        assert_eq!(verify(&v, &last_bad, NOW), Err(VerifyError::Mismatch));
        let token_twice = format!(
            r#"{{"signature": {{"timestamp": "{TIMESTAMP}", "token": "x", "token": "{TOKEN}", "signature": "{SIGNATURE}"}}}}"#
        );
        assert_eq!(verify(&v, &token_twice, NOW), Ok(()));
        assert_eq!(dedup_id(&token_twice), Some(serde_json::json!(TOKEN)));
        // An escaped member name is the same member, to both.
        let escaped = format!(r#"{{"sign\u0061ture": {good}}}"#);
        assert_eq!(verify(&v, &escaped, NOW), Ok(()));
        assert_eq!(dedup_id(&escaped), Some(serde_json::json!(TOKEN)));
    }

    #[test]
    fn rotation_and_options() {
        let v = build(VerifySpec {
            preset: Preset::Mailgun,
            secrets: vec![
                env_secret("HG_T_MAILGUN_NEW", "key-new"),
                env_secret("HG_T_MAILGUN_OLD", KEY),
            ],
            ..Default::default()
        });
        let good = block(&format!("\"{TIMESTAMP}\""), TOKEN, SIGNATURE);
        assert_eq!(verify(&v, &good, NOW), Ok(()));
        assert!(!v.needs_url());
        let problems = build_problems(VerifySpec {
            preset: Preset::Mailgun,
            header: Some("X-Sig".into()),
            ..Default::default()
        });
        assert_eq!(
            problems,
            [
                "`header` does not apply to preset mailgun",
                "preset mailgun needs `secret` or `secrets`"
            ]
        );
        let spec = VerifySpec {
            preset: Preset::Mailgun,
            secret: Some("${env:MAILGUN_WEBHOOK_SIGNING_KEY}".into()),
            ..Default::default()
        };
        assert_eq!(spec.single_use_token(), Some("$.signature.token"));
        // The dedup id may spell the path either way; it must name that member and nothing else.
        let same = |path: &str| {
            crate::jsonpath::JsonPath::compile(path)
                .is_ok_and(|p| p.names_same_member("$.signature.token"))
        };
        assert!(
            same("$.signature.token")
                && same("$['signature']['token']")
                && same("$[\"signature\"].token")
        );
        assert!(
            !same("$.signature")
                && !same("$.signature.token[0]")
                && !same("$..token")
                && !same("@.signature.token")
        );
        assert_eq!(spec.replay_window(), Some(Duration::from_secs(9 * 3600)));
        let stripe = VerifySpec {
            preset: Preset::Stripe,
            tolerance: Some("10m".into()),
            ..Default::default()
        };
        assert_eq!(stripe.single_use_token(), None);
        assert_eq!(stripe.replay_window(), Some(Duration::from_secs(600)));
    }
}

#[test]
fn every_preset_builds_with_defaults() {
    for p in [
        Preset::Stripe,
        Preset::StandardWebhooks,
        Preset::Github,
        Preset::Shopify,
        Preset::Hubspot,
        Preset::Typeform,
        Preset::Calendly,
        Preset::Slack,
        Preset::Zoom,
        Preset::Mailgun,
        Preset::Paddle,
        Preset::Twilio,
        Preset::Woocommerce,
        Preset::Webflow,
        Preset::Square,
        Preset::Segment,
    ] {
        let v = preset(p, "HG_T_EVERY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(v.preset(), p);
    }
}

#[test]
fn verifier_debug_shows_no_secret() {
    let v = preset(Preset::Stripe, "HG_T_DEBUG", "whsec_do_not_print_me");
    let debug = format!("{v:?}");
    assert!(!debug.contains("do_not_print_me"), "{debug}");
    let v = build(VerifySpec {
        preset: Preset::Basic,
        username: Some(env_secret("HG_T_DEBUG_USER", "user_do_not_print_me")),
        password: Some(env_secret("HG_T_DEBUG_PW", "pw_do_not_print_me")),
        ..Default::default()
    });
    assert!(!format!("{v:?}").contains("do_not_print_me"), "{v:?}");
}

/// A `verify:` block as YAML.
fn from_yaml(text: &str) -> VerifySpec {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn yaml_spelling() {
    let spec =
        from_yaml("preset: standard-webhooks\nsecrets: ['${env:A}', '${env:B}']\ntolerance: 5m\n");
    assert_eq!(spec.preset, Preset::StandardWebhooks);
    assert_eq!(spec.secrets.len(), 2);
    assert!(serde_saphyr::from_str::<VerifySpec>("preset: github\nsecret_ref: x\n").is_err());
}

/// `passwords` is spelled as in YAML, names each bad item by its index with every problem at once (and
/// never its value), is checked without reading secrets, and applies to basic only.
#[test]
fn basic_passwords_are_checked_item_by_item() {
    let spec = from_yaml(
        "preset: basic\nusername: u\npasswords: ['${env:HG_T_PW_UNSET}', '${env:HG_T_PW_UNSET2}']\n",
    );
    assert_eq!(spec.passwords.len(), 2);
    std::env::remove_var("HG_T_PW_UNSET");
    std::env::remove_var("HG_T_PW_UNSET2");
    assert_eq!(spec.check(), Ok(()), "check reads no secret");
    assert_eq!(
        spec.build().err(),
        Some(vec![
            "passwords[0]: env var HG_T_PW_UNSET is not set".to_owned(),
            "passwords[1]: env var HG_T_PW_UNSET2 is not set".to_owned(),
        ])
    );
    let both_literal = VerifySpec {
        preset: Preset::Basic,
        username: Some("u".into()),
        password: Some("lit-one".into()),
        passwords: vec![env_secret("HG_T_PW_OK", "fine"), "lit-two".into()],
        ..Default::default()
    };
    let got = both_literal.check().err().unwrap_or_default();
    assert_eq!(
        got,
        vec![
            "password: a literal secret is not allowed; write ${env:NAME} or ${file:/path}",
            "passwords[1]: a literal secret is not allowed; write ${env:NAME} or ${file:/path}",
        ]
    );
    assert!(!got.iter().any(|p| p.contains("lit-")), "a value echoed");
    let elsewhere = VerifySpec {
        preset: Preset::Github,
        secret: Some(env_secret("HG_T_PW_GH", "gh")),
        passwords: vec![env_secret("HG_T_PW_OK", "fine")],
        ..Default::default()
    };
    assert_eq!(
        elsewhere.check().err(),
        Some(vec![
            "`passwords` does not apply to preset github".to_owned()
        ])
    );
}

#[test]
fn check_validates_without_reading_secrets() {
    std::env::remove_var("HG_T_CHECK_UNSET");
    let spec = VerifySpec {
        preset: Preset::Stripe,
        secret: Some("${env:HG_T_CHECK_UNSET}".into()),
        ..Default::default()
    };
    assert_eq!(spec.check(), Ok(()));
    assert_eq!(
        spec.build().err(),
        Some(vec![
            "secret: env var HG_T_CHECK_UNSET is not set".to_owned()
        ])
    );
    let spec = VerifySpec {
        preset: Preset::Basic,
        username: Some("u".into()),
        password: Some("literal".into()),
        header: Some("X-Token".into()),
        ..Default::default()
    };
    assert_eq!(
        spec.check(),
        Err(vec![
            "`header` does not apply to preset basic".to_owned(),
            "password: a literal secret is not allowed; write ${env:NAME} or ${file:/path}"
                .to_owned(),
        ])
    );
}

#[test]
fn module_doc_examples_parse_and_check() {
    #[derive(serde::Deserialize)]
    struct Source {
        verify: VerifySpec,
    }
    let docs = include_str!("mod.rs");
    let yaml: Vec<&str> = docs
        .split("//! ```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("//! ```\n").next())
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
        .collect();
    let mut examples = Vec::new();
    for line in yaml {
        if line.starts_with("verify:") {
            examples.push(line.to_owned());
        } else if let Some(last) = examples.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    assert_eq!(examples.len(), 12);
    for example in examples {
        let source: Source = match serde_saphyr::from_str(&example) {
            Ok(s) => s,
            Err(e) => panic!("{example}: {e}"),
        };
        assert_eq!(source.verify.check(), Ok(()), "{example}");
    }
}

#[test]
fn verifier_is_shareable_across_tasks() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<Verifier>();
    assert_send_sync_clone::<VerifyError>();
}

/// The files a reload watches for rotation: every `${file:}` reference among the secret options, and
/// nothing else (env references, a plain user name).
#[test]
fn secret_files_are_the_file_references() {
    let spec = VerifySpec {
        preset: Preset::Basic,
        username: Some("hookgate".into()),
        password: Some("${file:/run/secrets/pw}".into()),
        passwords: vec!["${env:OLD_PW}".into(), "${file:/run/secrets/pw2}".into()],
        ..Default::default()
    };
    let files = spec.secret_files();
    assert_eq!(
        files,
        [
            std::path::PathBuf::from("/run/secrets/pw"),
            std::path::PathBuf::from("/run/secrets/pw2")
        ]
    );
    let spec = VerifySpec {
        preset: Preset::Stripe,
        secret: Some("${env:STRIPE_WEBHOOK_SECRET}".into()),
        secrets: vec!["${file:/s/stripe}".into()],
        ..Default::default()
    };
    assert_eq!(spec.secret_files(), [std::path::PathBuf::from("/s/stripe")]);
}

#[test]
fn sns_needs_topics_and_takes_no_secret() {
    let spec = VerifySpec {
        preset: Preset::Sns,
        secret: Some("${env:SNS_SECRET}".into()),
        topics: vec![
            "arn:aws:sns:us-east-1:*:ses-events".into(),
            "arn:aws:sns:*:123456789012:ses-events".into(),
        ],
        endpoints: vec!["http://localhost.localstack.cloud:4566/_aws".into()],
        ..Default::default()
    };
    assert_eq!(
        spec.check(),
        Err(vec![
            "`secret` does not apply to preset sns".to_owned(),
            "topics[0]: the account must be 12 digits (a wildcard would take every AWS account's topics)".to_owned(),
            "endpoints[0]: must be an origin only (scheme, host and port), with no path or query".to_owned(),
        ])
    );
    let none = VerifySpec {
        preset: Preset::Sns,
        ..Default::default()
    };
    let problems = none.check().unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("preset sns needs `topics`"),
        "{problems:?}"
    );
    let ok = VerifySpec {
        preset: Preset::Sns,
        topics: vec!["arn:aws:sns:*:123456789012:*".into()],
        tolerance: Some("2h".into()),
        ..Default::default()
    };
    assert_eq!(ok.check(), Ok(()));
    assert_eq!(ok.replay_window(), Some(Duration::from_secs(7200)));
    let default = VerifySpec {
        tolerance: None,
        ..ok
    };
    assert_eq!(
        default.replay_window(),
        Some(Duration::from_secs(24 * 3600))
    );
    let stripe_with_topics = VerifySpec {
        preset: Preset::Stripe,
        secret: Some("${env:S}".into()),
        topics: vec!["arn:aws:sns:*:123456789012:*".into()],
        ..Default::default()
    };
    assert_eq!(
        stripe_with_topics.check(),
        Err(vec!["`topics` does not apply to preset stripe".to_owned()])
    );
}
