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
    let ok = check::check(&[root().join("mappings")], &mut out);
    let report = String::from_utf8_lossy(&out);
    assert!(ok, "{report}");
    assert!(report.contains("9 file(s) ok, 0 problem(s)"), "{report}");
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
            "brevo",
            "calendly",
            "github",
            "hubspot",
            "shopify",
            "standard-webhooks",
            "stripe",
            "typeform"
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
