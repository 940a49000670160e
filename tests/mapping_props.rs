//! Property tests: no JSON payload, however odd (deep, huge numbers, unicode, wrong types), makes
//! the engine panic; and the direct route for simple paths agrees with jsonpath-rust.

use hookgate::jsonpath::JsonPath;
use hookgate::mapping::{load_files, parse_source_file, Event, SourceFile};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Keys and texts the shipped mappings look for, so generated payloads reach deep into the rules.
const KEYS: &[&str] = &[
    "type",
    "data",
    "object",
    "email",
    "name",
    "id",
    "customer",
    "line_items",
    "sku",
    "price",
    "quantity",
    "event",
    "payload",
    "form_response",
    "answers",
    "field",
    "ref",
    "items",
    "created",
    "amount_paid",
    "properties",
    "value",
    "contact",
    "tags",
    "list",
    "sponsorship",
    "tier",
    "created_at",
    "ts_event",
    "event_type",
    "questions_and_answers",
    "question",
    "answer",
    "is-contact",
    "vid",
    "lists",
    "in",
];
const TEXTS: &[&str] = &[
    "customer.created",
    "invoice.paid",
    "checkout.session.completed",
    "paid",
    "invitee.created",
    "form_response",
    "opened",
    "click",
    "hard_bounce",
    "subscribe",
    "contact.created",
    "email",
    "created",
    "2024-01-01T00:00:00Z",
    "1700000000",
    "a@b.c",
    "  Ünïcødé  名前 ",
    "",
    "-0",
    "1e999",
    "NaN",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(TEXTS).prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_owned),
        "\\PC{0,6}"
    ];
    leaf.prop_recursive(10, 200, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn shipped() -> &'static Vec<SourceFile> {
    static FILES: OnceLock<Vec<SourceFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let (mut files, diags) =
            load_files(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings")]);
        assert!(diags.is_empty(), "{diags:?}");
        files.push(kitchen_sink());
        files
    })
}

/// Every transform, condition and value form on paths the generator fills.
fn kitchen_sink() -> SourceFile {
    let text = r#"
source: sink
verify: { preset: token, header: X-Token, secret: "${env:T_TOKEN}" }
lookups: { t: { a: 1, "1": b } }
rules:
  - name: all
    when:
      any:
        - { path: $.type, matches: "^c" }
        - { path: "$..id", gt: 0 }
        - { not: { path: $.data, exists: false } }
        - { path: $.name, lte: "m" }
        - { path: $.email, in: { lookup: t } }
    custom_event:
      event_name: { path: $.type, default: e }
      event_date: { path: $.created, then: [date], default: "2024-01-01T00:00:00Z" }
      ext_id: { template: "x{{ $.id }}" }
      event_properties:
        a: { path: $.name, then: [lower, upper, trim, first_word] }
        b: { path: $.name, then: [rest_words, { split: " " }, { join: "," }] }
        c: { path: $.price, then: [to_number, { divide: 7 }, { multiply: 3 }, { round: 2 }] }
        d: { path: $.value, then: [to_string, sha256] }
        e: { path: $.in, then: [to_bool] }
        f: { path: $.ts_event, then: [{ date: millis }] }
        g: { path: $.email, then: [{ replace: { regex: "[^a-z]", to: "-" } }, { lookup: t }] }
        h: { path: "$..sku", all: true, then: [{ join: "/" }] }
        i: "{{ $.name }} {{ $.data.object.email }}"
        j: { for_each: $.items, object: { s: "@.sku", q: { path: "@.quantity", then: [to_number] } } }
        k: "$.answers[?(@.field.ref=='email')].email"
        l: { path: $.created, then: [{ date: "%d/%m/%Y" }] }
  - name: each
    for_each: $.line_items
    when: { path: "@.quantity", gte: 1 }
    update_contact:
      email: "@.email"
      ext_id: { path: "@.id", then: [to_string] }
      list_ids: "@.list"
"#;
    parse_source_file(Path::new("sink.yaml"), text).unwrap_or_else(|d| panic!("{d:?}"))
}

fn headers_for(body: &Value) -> Event {
    let mut ev = Event::new(body.clone());
    for (k, v) in [
        ("X-Shopify-Topic", "orders/create"),
        ("X-GitHub-Event", "star"),
        ("X-Token", "x"),
    ] {
        ev = ev.with_header(k, v);
    }
    ev
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_payload_panics_any_mapping(body in arb_json()) {
        for file in shipped() {
            let _ = file.mapping.apply(&headers_for(&body));
            let wrapped = json!({"type": "customer.created", "event": "invitee.created", "event_type": "form_response",
                                 "data": {"object": body.clone()}, "payload": body.clone(), "form_response": body.clone()});
            let _ = file.mapping.apply(&headers_for(&wrapped));
        }
    }

    #[test]
    fn direct_route_agrees_with_jsonpath_rust(
        doc in arb_json(),
        steps in prop::collection::vec(prop_oneof![
            prop::sample::select(KEYS).prop_map(|k| format!(".{}", k.replace('-', "_"))),
            prop::sample::select(KEYS).prop_map(|k| format!("['{k}']")),
            (-3i64..4).prop_map(|i| format!("[{i}]")),
        ], 0..5),
    ) {
        let path = format!("${}", steps.concat());
        let compiled = JsonPath::compile(&path).unwrap();
        prop_assert!(compiled.is_direct(), "{}", path);
        prop_assert_eq!(compiled.query(&doc), compiled.query_reference(&doc), "{}", path);
    }
}

#[test]
fn deep_and_extreme_payloads_do_not_panic() {
    // serde_json parses at most 128 levels; build the deepest body it would hand over.
    let mut deep = json!("bottom");
    for i in 0..127 {
        deep = if i % 2 == 0 {
            json!([deep])
        } else {
            json!({"data": deep, "object": 1})
        };
    }
    let extremes = [
        deep,
        json!({"type": "customer.created", "data": {"object": {"email": "a@b.c", "name": "x".repeat(1 << 16), "created": u64::MAX}}}),
        json!({"type": "invoice.paid", "created": -1e300, "data": {"object": {"amount_paid": 1.7976931348623157e308, "customer": 1}}}),
        json!({"price": "1e308", "value": [[[]]], "in": {}, "ts_event": i64::MIN, "created": "9999-99-99"}),
        json!([1, 2, 3]),
        json!("just text"),
        json!(null),
    ];
    for body in &extremes {
        for file in shipped() {
            let _ = file.mapping.apply(&headers_for(body));
        }
    }
}
