//! The shipped mappings (`mappings/*.yaml`) are valid and their embedded tests pass, through the
//! same runner as `hookgate check`; and `hookgate try`'s core maps a real Stripe customer.

use hookgate::commands::{check, try_cmd};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_mappings_pass_check() {
    let mut out = Vec::new();
    let found = check::check(&[root().join("mappings")], &mut out);
    let report = String::from_utf8_lossy(&out);
    assert!(found.ok(true), "{report}");
    assert!(
        report.contains("29 file(s) ok, 0 problem(s), 0 warning(s)"),
        "{report}"
    );
}

/// Warnings: printed, counted, passing unless `--deny-warnings`; a rule that none of a file's tests
/// reaches is one (only when the file has tests), and a file without tests gets none of that kind.
#[test]
fn check_warns_and_deny_warnings_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("w.yaml");
    let head = "source: w\nverify: { preset: stripe, secret: \"${env:STRIPE_WEBHOOK_SECRET}\" }\ndedup: { id: $.id }\n";
    let rules = "rules:\n  - name: created\n    when: { path: $.type, equals: customer.created }\n    custom_event: { event_name: created, email: $.email }\n  - name: deleted\n    when: { path: $.type, equals: customer.deleted }\n    custom_event: { event_name: deleted, email: $.email }\n";
    let tests = "tests:\n  - payload: { type: customer.created, email: a@example.com }\n    expect:\n      - custom_event: { event_name: created, identifiers: { email_id: a@example.com } }\n";
    let hookgate = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("check")
            .args(args)
            .arg(&file)
            .output()
            .expect("run hookgate check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    std::fs::write(&file, format!("{head}{rules}{tests}")).expect("write");
    let (code, report) = hookgate(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains(
            "w.yaml:8:11: warning: rule `deleted` is reached by none of the file's 1 test(s)"
        ),
        "{report}"
    );
    assert!(
        report.contains("1 file(s) ok, 0 problem(s), 1 warning(s); 1 test(s) passed, 0 failed"),
        "{report}"
    );
    let (code, report) = hookgate(&["--deny-warnings"]);
    assert_eq!(code, Some(1), "{report}");

    // A test for the second rule: nothing to warn about.
    let second = "  - payload: { type: customer.deleted, email: a@example.com }\n    expect_error: nothing is expected to fail\n";
    std::fs::write(&file, format!("{head}{rules}{tests}{second}")).expect("write");
    let (code, report) = hookgate(&["--deny-warnings"]);
    assert_eq!(code, Some(1), "a failing test still fails: {report}");
    assert!(
        report.contains("0 warning(s); 1 test(s) passed, 1 failed"),
        "{report}"
    );

    // A rule after one that matches every event and stops is warned about once, as dead.
    let dead = "rules:\n  - name: all\n    stop: true\n    custom_event: { event_name: created, email: $.email }\n  - name: never\n    custom_event: { event_name: never, email: $.email }\n";
    std::fs::write(&file, format!("{head}{dead}{tests}")).expect("write");
    let (code, report) = hookgate(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("warning: this rule never runs: rule `all`"),
        "{report}"
    );
    assert!(
        report.contains("0 problem(s), 1 warning(s); 1 test(s) passed"),
        "{report}"
    );

    // No tests: no coverage warnings; a missing dedup is one.
    let no_dedup = head.replace("dedup: { id: $.id }\n", "");
    std::fs::write(&file, format!("{no_dedup}{rules}")).expect("write");
    let (code, report) = hookgate(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report
            .contains("w.yaml:2:1: warning: no `dedup`: Stripe retries an event with the same id"),
        "{report}"
    );
    assert!(
        report.contains("0 problem(s), 1 warning(s); 0 test(s)"),
        "{report}"
    );
    let (code, _) = hookgate(&["--deny-warnings"]);
    assert_eq!(code, Some(1));
}

/// What `check` is given that is no mapping file is a problem, never skipped in silence: a directory
/// without one (a CI gate that checks nothing), a dangling symlink, a directory or FIFO named `*.yaml`,
/// a file too large to be one. One file named twice is checked once.
#[test]
fn check_reports_what_is_not_a_mapping_file() {
    let run = |paths: &[PathBuf]| {
        let mut out = Vec::new();
        let ok = check::check(paths, &mut out).ok(false);
        (ok, String::from_utf8_lossy(&out).into_owned())
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ok, report) = run(&[d.to_path_buf()]);
    assert!(!ok, "{report}");
    assert!(
        report.contains("no mapping files (*.yaml, *.yml) in this directory"),
        "{report}"
    );

    let good = "source: t1\nallow_ips: [127.0.0.0/8]\n";
    std::fs::write(d.join("A.YAML"), good).expect("write");
    let (ok, report) = run(&[d.to_path_buf()]);
    assert!(
        ok && report.contains("1 file(s) ok, 0 problem(s)"),
        "any case: {report}"
    );
    let a = d.join("A.YAML");
    let dotted = d.join(".").join("A.YAML");
    let (ok, report) = run(&[a.clone(), dotted]);
    assert!(
        ok && report.contains("1 file(s) ok, 0 problem(s)"),
        "named twice: {report}"
    );

    std::os::unix::fs::symlink(d.join("gone.yaml"), d.join("link.yaml")).expect("symlink");
    std::fs::create_dir(d.join("sub.yaml")).expect("dir");
    let fifo = d.join("pipe.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let big = d.join("big.yaml");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(hookgate::mapping::MAX_MAPPING_FILE_BYTES + 1)
        .expect("set_len");
    let (ok, report) = run(&[d.to_path_buf()]);
    assert!(!ok, "{report}");
    for (file, why) in [
        ("link.yaml", "cannot read"),
        ("sub.yaml", "a directory named like a mapping file"),
        ("pipe.yml", "not a regular file"),
        ("big.yaml", "larger than 16 MiB"),
    ] {
        assert!(
            report.lines().any(|l| l.contains(file) && l.contains(why)),
            "{file}: {why}\n{report}"
        );
    }
    assert!(report.contains("1 file(s) ok, 4 problem(s)"), "{report}");
    // Named directly, a FIFO is refused rather than read (which would wait for a writer forever).
    let (ok, report) = run(&[fifo]);
    assert!(!ok && report.contains("not a regular file"), "{report}");
}

#[test]
fn every_provider_has_a_mapping_with_tests() {
    let (files, diags) = hookgate::mapping::load_files(&[root().join("mappings")]);
    assert!(diags.is_empty(), "{diags:?}");
    let mut names: Vec<&str> = files.iter().map(|f| f.head.name.value.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "activecampaign",
            "amazon-ses",
            "brevo",
            "calcom",
            "calendly",
            "customerio",
            "github",
            "google-ads",
            "hubspot",
            "intercom",
            "mailchimp",
            "mailgun",
            "mailjet",
            "mandrill",
            "paddle",
            "postmark",
            "segment",
            "sendgrid",
            "shopify",
            "square",
            "standard-webhooks",
            "stripe",
            "tally",
            "twilio",
            "typeform",
            "unbounce",
            "webflow",
            "woocommerce",
            "zoom"
        ]
    );
    for f in &files {
        assert!(!f.tests.is_empty(), "{} has no tests", f.path.display());
    }
}

#[test]
fn try_maps_a_real_stripe_customer() {
    let corpus = root().join("tests/data/stripe/fixtures3.json");
    let text = std::fs::read_to_string(&corpus).expect("the vendored Stripe fixtures");
    let fixtures: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut customer = fixtures["resources"]["customer"].clone();
    customer["email"] = "ada@example.org".into();
    customer["name"] = "Ada Lovelace".into();
    let event = serde_json::json!({"id": "evt_1", "object": "event", "type": "customer.created", "data": {"object": customer}});
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("cust.json");
    std::fs::write(&payload, event.to_string()).unwrap();
    let out = try_cmd::try_event(&root().join("mappings/stripe.yaml"), &payload, &[]).unwrap();
    let actions: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(actions[0]["upsert_contact"]["email"], "ada@example.org");
    assert_eq!(
        actions[0]["upsert_contact"]["attributes"]["FIRSTNAME"],
        "Ada"
    );
    assert_eq!(
        actions[0]["upsert_contact"]["attributes"]["LASTNAME"],
        "Lovelace"
    );
    assert_eq!(actions[0]["rule"], "new customer");
}

/// `try` refuses what the receiver refuses, and reads no more than it would: a payload over the source's
/// `max_body`, a FIFO or device (`/dev/zero` never ends), a header no sender could send, a mapping file
/// that is not UTF-8 (located at its first bad byte).
#[test]
fn try_refuses_what_the_receiver_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mapping = d.join("small.yaml");
    std::fs::write(
        &mapping,
        "source: small\nallow_ips: [127.0.0.0/8]\nmax_body: 1KiB\nrules:\n  - name: r\n    custom_event: { event_name: e, ext_id: $.id }\n",
    )
    .unwrap();
    let payload = d.join("p.json");
    std::fs::write(&payload, format!("{{\"id\":\"{}\"}}", "x".repeat(1000))).unwrap();
    let out = try_cmd::try_event(&mapping, &payload, &[]).unwrap();
    assert!(out.contains("custom_event"), "{out}");
    std::fs::write(&payload, format!("{{\"id\":\"{}\"}}", "x".repeat(1100))).unwrap();
    let e = try_cmd::try_event(&mapping, &payload, &[]).unwrap_err();
    assert!(e.contains("larger than 1024 bytes"), "{e}");
    let e = try_cmd::try_event(&mapping, Path::new("/dev/zero"), &[]).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::write(&payload, "{\"id\":\"a\"}").unwrap();
    for bad in ["Bad Name: x", "X-Ok: a\u{7f}b"] {
        let e = try_cmd::try_event(&mapping, &payload, &[bad.to_owned()]).unwrap_err();
        assert!(e.contains("not a header a sender could send"), "{bad}: {e}");
    }
    std::fs::write(
        &mapping,
        b"source: small\nallow_ips: [127.0.0.0/8]\n# caf\xe9\n",
    )
    .unwrap();
    let e = try_cmd::try_event(&mapping, &payload, &[]).unwrap_err();
    assert!(
        e.contains("small.yaml:3:6: a byte that is not UTF-8"),
        "{e}"
    );
}

#[test]
fn try_reads_form_payloads_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("body");
    std::fs::write(
        &payload,
        "type=subscribe&list=3&contact[id]=9&contact[email]=a%40b.co",
    )
    .unwrap();
    let mapping = root().join("mappings/activecampaign.yaml");
    let out = try_cmd::try_event(
        &mapping,
        &payload,
        &["Content-Type: application/x-www-form-urlencoded".to_owned()],
    )
    .unwrap();
    assert!(out.contains("\"email\": \"a@b.co\""), "{out}");
    // A named charset is read as the receiver reads it (0xE9 is é in ISO-8859-1) ...
    std::fs::write(
        &payload,
        "type=subscribe&contact[id]=9&contact[email]=a%40b.co&contact[first_name]=Ren%E9e",
    )
    .unwrap();
    let latin1 = |charset: &str| {
        try_cmd::try_event(
            &mapping,
            &payload,
            &[format!(
                "Content-Type: application/x-www-form-urlencoded; charset={charset}"
            )],
        )
    };
    let out = latin1("ISO-8859-1").unwrap();
    assert!(out.contains("\"FIRSTNAME\": \"Renée\""), "{out}");
    // ... and one the receiver refuses with 415 (`latin-1` is no WHATWG label) is refused here too.
    let err = latin1("latin-1").unwrap_err();
    assert!(err.contains("the receiver would refuse it"), "{err}");
    let err = try_cmd::try_event(&mapping, Path::new("/nonexistent.json"), &[]).unwrap_err();
    assert!(err.contains("cannot read"), "{err}");
}

/// `try` reads a Content-Type as the receiver reads it for that source: SNS's `text/plain` is JSON for
/// `amazon-ses.yaml` (an `sns` source) and refused for a source of another preset.
#[test]
fn try_reads_sns_text_as_json_for_an_sns_source_only() {
    let payload = root().join("mappings/testdata/ses_bounce.json");
    let text = ["Content-Type: text/plain; charset=UTF-8".to_owned()];
    let out =
        try_cmd::try_event(&root().join("mappings/amazon-ses.yaml"), &payload, &text).unwrap();
    let actions: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        actions[0]["custom_event"]["event_name"], "email_hard_bounced",
        "{out}"
    );
    let e = try_cmd::try_event(&root().join("mappings/stripe.yaml"), &payload, &text).unwrap_err();
    assert!(e.contains("the receiver would refuse it"), "{e}");
}

/// An embedded test may post as SNS does (`content_type: "text/plain; charset=UTF-8"`): read as JSON on
/// an `sns` source, and a failure of the test, with the reason, on any other.
#[test]
fn embedded_tests_take_sns_text_on_an_sns_source_only() {
    let dir = tempfile::tempdir().unwrap();
    let test = r#"
tests:
  - payload: { Type: Notification, MessageId: m-1, Message: '{"eventType":"Send"}' }
    content_type: "text/plain; charset=UTF-8"
    expect:
      - custom_event: { event_name: sent, identifiers: { email_id: a@example.com } }
rules:
  - name: sent
    custom_event: { event_name: sent, email: a@example.com }
"#;
    let sns = "source: ses\nverify: { preset: sns, topics: [\"arn:aws:sns:*:123456789012:*\"] }\ndedup: { id: $.MessageId }\n";
    std::fs::write(dir.path().join("ses.yaml"), format!("{sns}{test}")).unwrap();
    std::fs::write(
        dir.path().join("other.yaml"),
        format!("source: other\nallow_ips: [127.0.0.0/8]\n{test}"),
    )
    .unwrap();
    let (files, diags) = hookgate::mapping::load_files(&[dir.path().to_path_buf()]);
    assert!(diags.is_empty(), "{diags:?}");
    for f in &files {
        let outcomes = hookgate::mapping::tests::run(f);
        assert_eq!(outcomes.len(), 1);
        match f.head.name.value.as_str() {
            "ses" => assert_eq!(outcomes[0].failure, None),
            _ => assert!(
                outcomes[0]
                    .failure
                    .as_deref()
                    .is_some_and(|e| e.contains("refuses text/plain for this source")),
                "{:?}",
                outcomes[0].failure
            ),
        }
    }
    assert_eq!(files.len(), 2);
}
