//! The language's semantics: conditions, rule order and `stop`, `for_each`, values, required and
//! default, headers, and loading directories.

use hookgate::mapping::{load_files, parse_source_file, Event, MappedAction};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const HEAD: &str =
    "source: t\nverify: { preset: token, header: X-Token, secret: \"${env:T_TOKEN}\" }\n";

fn compile(rules: &str) -> hookgate::mapping::SourceFile {
    let text = format!("{HEAD}{rules}");
    match parse_source_file(Path::new("t.yaml"), &text) {
        Ok(f) => f,
        Err(d) => panic!(
            "{}",
            d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
        ),
    }
}

fn apply(rules: &str, event: Event) -> Result<Vec<MappedAction>, String> {
    compile(rules)
        .mapping
        .apply(&event)
        .map_err(|e| e.to_string())
}

fn json_of(actions: &[MappedAction]) -> Value {
    serde_json::to_value(actions).unwrap()
}

/// Which rules fire for `body` with a `when` per rule.
fn fired(whens: &[&str], body: Value, headers: &[(&str, &str)]) -> Vec<String> {
    let mut rules = String::from("rules:\n");
    for (i, w) in whens.iter().enumerate() {
        rules.push_str(&format!(
            "  - name: r{i}\n    when: {w}\n    custom_event: {{ event_name: e, ext_id: x }}\n"
        ));
    }
    let mut ev = Event::new(body);
    for (k, v) in headers {
        ev = ev.with_header(k, *v);
    }
    apply(&rules, ev)
        .unwrap()
        .into_iter()
        .map(|a| a.rule)
        .collect()
}

#[test]
fn conditions() {
    let body = json!({"type": "a.b", "n": 5, "s": "5", "tags": ["x", "y"], "nul": null, "email": "Jo@Example.com",
                      "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}]});
    let cases: &[(&str, bool)] = &[
        ("{ path: $.type, equals: a.b }", true),
        ("{ path: $.type, equals: a.c }", false),
        ("{ path: $.n, equals: 5 }", true),
        ("{ path: $.n, equals: 5.0 }", true),
        ("{ path: $.s, equals: 5 }", false),
        ("{ path: $.s, equals: \"5\" }", true),
        ("{ path: $.type, not_equals: a.c }", true),
        ("{ path: $.missing, not_equals: x }", true),
        ("{ path: $.type, in: [x, a.b] }", true),
        ("{ path: $.nul, exists: true }", false),
        ("{ path: $.nul, exists: false }", true),
        ("{ path: $.n, exists: true }", true),
        ("{ path: $.email, matches: '(?i)@example\\.com$' }", true),
        ("{ path: $.n, matches: '^5$' }", true),
        ("{ path: $.n, gt: 4 }", true),
        ("{ path: $.n, gte: 5 }", true),
        ("{ path: $.n, lt: 5 }", false),
        ("{ path: $.s, lte: 5 }", true),
        ("{ path: $.type, gt: a.a }", true),
        ("{ path: '$.items[*].sku', equals: B }", true),
        ("{ path: '$.items[?@.qty > 2].sku', equals: B }", true),
        ("{ path: '$.items[*].sku', not_equals: B }", false),
        (
            "{ path: $.email, then: [lower], equals: jo@example.com }",
            true,
        ),
        (
            "{ all: [ { path: $.n, gt: 1 }, { path: $.type, equals: a.b } ] }",
            true,
        ),
        (
            "{ all: [ { path: $.n, gt: 1 }, { path: $.type, equals: zz } ] }",
            false,
        ),
        (
            "{ any: [ { path: $.n, gt: 10 }, { path: $.type, equals: a.b } ] }",
            true,
        ),
        ("{ not: { path: $.type, equals: a.b } }", false),
        ("{ header: X-Kind, equals: Star }", true),
        ("{ header: x-kind, equals: star }", false),
        ("{ header: X-Code, equals: 200 }", true),
        ("{ header: X-None, exists: false }", true),
    ];
    for (when, want) in cases {
        let got = !fired(
            &[when],
            body.clone(),
            &[("x-kind", "Star"), ("X-CODE", "200")],
        )
        .is_empty();
        assert_eq!(got, *want, "{when}");
    }
}

#[test]
fn every_matching_rule_fires_in_order_until_stop() {
    let whens = [
        "{ path: $.a, exists: true }",
        "{ path: $.b, exists: true }",
        "{ path: $.a, exists: true }",
    ];
    assert_eq!(
        fired(&whens, json!({"a": 1, "b": 1}), &[]),
        ["r0", "r1", "r2"]
    );
    assert_eq!(fired(&whens, json!({"a": 1}), &[]), ["r0", "r2"]);
    let rules = "rules:\n  - name: first\n    stop: true\n    when: { path: $.a, exists: true }\n    custom_event: { event_name: e, ext_id: x }\n  - name: second\n    custom_event: { event_name: e, ext_id: x }\n";
    let names = |body| {
        apply(rules, Event::new(body))
            .unwrap()
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(json!({"a": 1})), ["first"]);
    assert_eq!(
        names(json!({})),
        ["second"],
        "stop only applies when the rule matched"
    );
}

#[test]
fn several_actions_in_a_rule_are_indexed() {
    let rules = "rules:\n  - name: both\n    upsert_contact: { email: $.e }\n    custom_event: { event_name: signed_up, email: $.e }\n  - name: listed\n    actions:\n      - update_contact: { ext_id: $.id, attributes: { A: 1 } }\n      - create_contact: { ext_id: $.id, list_ids: [1, \"2\"] }\n";
    let got = apply(rules, Event::new(json!({"e": "a@b.c", "id": 7}))).unwrap();
    let v = json_of(&got);
    assert_eq!(
        v,
        json!([
            {"rule": "both", "index": 0, "upsert_contact": {"email": "a@b.c"}},
            {"rule": "both", "index": 1, "custom_event": {"event_name": "signed_up", "identifiers": {"email_id": "a@b.c"}}},
            {"rule": "listed", "index": 0, "update_contact": {"identifier": {"ext_id": "7"}, "attributes": {"A": 1}}},
            {"rule": "listed", "index": 1, "create_contact": {"ext_id": "7", "listIds": [1, 2]}}
        ])
    );
    // What the worker stores and reads back.
    let back: Vec<MappedAction> = serde_json::from_value(v).unwrap();
    assert_eq!(back, got);
}

#[test]
fn for_each_rule_with_relative_and_root_paths() {
    let rules = r#"rules:
  - name: items
    for_each: $.items
    when: { path: "@.qty", gt: 0 }
    custom_event:
      event_name: bought
      email: $.email
      event_properties: { sku: "@.sku", order: $.id, label: "{{ $.id }}/{{ @.sku }}" }
"#;
    let body = json!({"id": 9, "email": "a@b.c", "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"sku": "C", "qty": 2}]});
    let got = apply(rules, Event::new(body)).unwrap();
    let v = json_of(&got);
    assert_eq!(
        v[0]["custom_event"]["event_properties"],
        json!({"sku": "A", "order": 9, "label": "9/A"})
    );
    assert_eq!(v[1]["custom_event"]["event_properties"]["sku"], "C");
    assert_eq!(
        (v[0]["index"].clone(), v[1]["index"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(got.len(), 2);
    assert!(apply(rules, Event::new(json!({"email": "a@b.c"})))
        .unwrap()
        .is_empty());
    let e = apply(rules, Event::new(json!({"items": {"sku": "A"}}))).unwrap_err();
    assert_eq!(
        e,
        "rule `items`: for_each: expected a list at $.items, found an object"
    );
    let e = apply(rules, Event::new(json!({"items": [{"qty": 1}]}))).unwrap_err();
    assert_eq!(
        e,
        "rule `items`: element 0: custom_event.email: required value missing at $.email"
    );
}

/// A `for_each` path that selects (a filter, a wildcard) runs over the nodes it selects, in order: the
/// first node would be an element, not a list. A selection of none gives no actions; an error names the
/// element's place in the selection.
#[test]
fn for_each_over_a_selection_runs_over_its_nodes() {
    let rules = r#"rules:
  - name: absent
    for_each: "$.attendees[?@.noShow == true]"
    custom_event: { event_name: no_show, email: "@.email", event_properties: { booking: $.uid } }
  - name: all
    for_each: "$.groups[*].members[*]"
    custom_event: { event_name: member, email: "@" }
"#;
    let body = json!({
        "uid": "b1",
        "attendees": [{"email": "a@x.org", "noShow": true}, {"email": "b@x.org", "noShow": false}, {"email": "c@x.org", "noShow": true}],
        "groups": [{"members": ["d@x.org"]}, {"members": ["e@x.org", "f@x.org"]}]
    });
    let got = json_of(&apply(rules, Event::new(body)).unwrap());
    let seen: Vec<(&str, &str, u64)> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap(),
                a["custom_event"]["identifiers"]["email_id"]
                    .as_str()
                    .unwrap(),
                a["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("absent", "a@x.org", 0),
            ("absent", "c@x.org", 1),
            ("all", "d@x.org", 0),
            ("all", "e@x.org", 1),
            ("all", "f@x.org", 2)
        ]
    );
    assert_eq!(
        got[0]["custom_event"]["event_properties"],
        json!({"booking": "b1"})
    );
    let none = json!({"attendees": [{"email": "b@x.org", "noShow": false}]});
    assert!(apply(rules, Event::new(none)).unwrap().is_empty());
    // The element number is the node's place in the selection: attendees[2] is the second absent one.
    let e = apply(
        rules,
        Event::new(json!({"attendees": [{"email": "a@x.org", "noShow": true}, {"noShow": false}, {"noShow": true}]})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `absent`: element 1: custom_event.email: required value missing at @.email"
    );
    // `$..items` is the first list found that is not null, outer before inner, for a rule and a value.
    let nested = json!({"items": null, "order": {"items": [{"email": "a@x.org", "sku": "A"}]}});
    let rule = "rules:\n  - name: r\n    for_each: \"$..items\"\n    custom_event: { event_name: e, email: \"@.email\", event_properties: { skus: { for_each: \"$..items\", object: { sku: \"@.sku\" } } } }\n";
    let got = json_of(&apply(rule, Event::new(nested)).unwrap());
    assert_eq!(got.as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got[0]["custom_event"]["identifiers"]["email_id"], "a@x.org");
    assert_eq!(
        got[0]["custom_event"]["event_properties"]["skus"],
        json!([{"sku": "A"}])
    );
    // A path that names one list, however spelled or searched for, still runs over its elements.
    for path in ["$[ 'items' ]", "$..items"] {
        let rules = format!(
            "rules:\n  - name: r\n    for_each: \"{path}\"\n    custom_event: {{ event_name: e, email: \"@.email\" }}\n"
        );
        let got = apply(
            &rules,
            Event::new(json!({"items": [{"email": "a@x.org"}, {"email": "b@x.org"}]})),
        )
        .unwrap();
        assert_eq!(got.len(), 2, "{path}");
        let e = apply(&rules, Event::new(json!({"items": {"email": "a@x.org"}}))).unwrap_err();
        assert!(e.contains("expected a list"), "{path}: {e}");
    }
    // Inside a value too: a list of objects built from the selected nodes, none selected is missing.
    let rules = r#"rules:
  - name: order
    custom_event:
      event_name: ordered
      email: $.email
      event_properties:
        shipped: { for_each: "$.items[?@.qty > 0]", object: { sku: "@.sku" } }
"#;
    let got = json_of(
        &apply(
            rules,
            Event::new(json!({"email": "a@x.org", "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"sku": "C", "qty": 2}]})),
        )
        .unwrap(),
    );
    assert_eq!(
        got[0]["custom_event"]["event_properties"],
        json!({"shipped": [{"sku": "A"}, {"sku": "C"}]})
    );
    let got = json_of(
        &apply(
            rules,
            Event::new(json!({"email": "a@x.org", "items": [{"sku": "B", "qty": 0}]})),
        )
        .unwrap(),
    );
    assert_eq!(got[0]["custom_event"].get("event_properties"), None);
    // A value's error names the element's place in the selection: items[2] is the second selected.
    let strict = rules.replace(
        "{ sku: \"@.sku\" }",
        "{ sku: { path: \"@.sku\", required: true } }",
    );
    assert_ne!(strict, rules);
    let e = apply(
        &strict,
        Event::new(json!({"email": "a@x.org", "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"qty": 2}]})),
    )
    .unwrap_err();
    assert!(e.contains("shipped[1]"), "{e}");
}

/// `for_each: $` reads the body's events: a batch (a list) is each of its elements, and a body that is
/// one event (an object) is that event, once. Anything else at `$` still fails.
#[test]
fn for_each_over_the_body_takes_one_event_or_a_batch() {
    let rules = r#"rules:
  - name: each
    for_each: $
    when: { path: "@.event", equals: open }
    custom_event:
      event_name: email_opened
      email: "@.email"
"#;
    let one = apply(
        rules,
        Event::new(json!({"event": "open", "email": "a@b.c"})),
    )
    .unwrap();
    assert_eq!(
        json_of(&one)[0]["custom_event"]["identifiers"],
        json!({"email_id": "a@b.c"})
    );
    assert_eq!(
        (one.len(), json_of(&one)[0]["index"].clone()),
        (1, json!(0))
    );
    let batch = apply(
        rules,
        Event::new(json!([
            {"event": "open", "email": "a@b.c"},
            {"event": "click", "email": "d@e.f"},
            {"event": "open", "email": "g@h.i"}
        ])),
    )
    .unwrap();
    let v = json_of(&batch);
    assert_eq!(
        (
            batch.len(),
            v[1]["custom_event"]["identifiers"]["email_id"].clone()
        ),
        (2, json!("g@h.i"))
    );
    assert!(apply(
        rules,
        Event::new(json!({"event": "click", "email": "a@b.c"}))
    )
    .unwrap()
    .is_empty());
    let one_bad = r#"rules:
  - name: each
    for_each: $
    custom_event: { event_name: e, email: "@.email" }
"#;
    let e = apply(one_bad, Event::new(json!({"event": "open"}))).unwrap_err();
    assert_eq!(
        e, "rule `each`: custom_event.email: required value missing at @.email",
        "one event has no element number"
    );
    let e = apply(one_bad, Event::new(json!([{"email": "a@b.c"}, {}]))).unwrap_err();
    assert!(e.starts_with("rule `each`: element 1: "), "{e}");
    let e = apply(rules, Event::new(json!("open"))).unwrap_err();
    assert_eq!(e, "rule `each`: for_each: expected a list at $, found text");
}

/// `event_properties: $.properties` takes every member of the object as a property, as it is (nested
/// values too), in the payload's order, a null member left out as a null field is; a missing or null
/// object gives none, and anything but an object fails the event. Inside a `for_each`, `"@.properties"`
/// reads each element's.
#[test]
fn fields_from_the_members_of_an_object() {
    let rules = r#"rules:
  - name: track
    custom_event:
      event_name: tracked
      ext_id: $.userId
      event_properties: $.properties
      contact_properties: { PLAN: $.plan }
"#;
    let got = apply(
        rules,
        Event::new(json!({"userId": "u1", "plan": "pro", "properties": {"total": 9.5, "currency": "EUR", "products": [{"sku": "A"}], "coupon": null}})),
    )
    .unwrap();
    let event = &json_of(&got)[0]["custom_event"];
    assert_eq!(
        event["event_properties"],
        json!({"total": 9.5, "currency": "EUR", "products": [{"sku": "A"}]})
    );
    let names: Vec<&String> = event["event_properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        names,
        ["total", "currency", "products"],
        "the payload's order"
    );
    assert_eq!(event["contact_properties"], json!({"PLAN": "pro"}));
    for body in [
        json!({"userId": "u1"}),
        json!({"userId": "u1", "properties": null}),
    ] {
        let none = apply(rules, Event::new(body)).unwrap();
        assert_eq!(
            json_of(&none)[0]["custom_event"].get("event_properties"),
            None
        );
    }
    let each = r#"rules:
  - name: each
    for_each: $
    upsert_contact: { ext_id: "@.id", attributes: "@.traits" }
"#;
    let got = apply(
        each,
        Event::new(json!([{"id": "a", "traits": {"PLAN": "pro"}}, {"id": "b", "traits": {"PLAN": "free", "SEATS": 3}}])),
    )
    .unwrap();
    let v = json_of(&got);
    assert_eq!(v[0]["upsert_contact"]["attributes"], json!({"PLAN": "pro"}));
    assert_eq!(
        v[1]["upsert_contact"]["attributes"],
        json!({"PLAN": "free", "SEATS": 3})
    );
    let e = apply(
        rules,
        Event::new(json!({"userId": "u1", "properties": [1]})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `track`: custom_event.event_properties: expected an object at $.properties, found a list"
    );
}

#[test]
fn values() {
    let rules = r#"rules:
  - name: v
    custom_event:
      event_name: e
      ext_id: { template: "x-{{ $.id }}" }
      event_properties:
        const_num: 42
        const_text: hello
        quoted_const: { const: "$not a path" }
        header: { header: x-source }
        missing: $.nope
        defaulted: { path: $.nope, default: fallback }
        fallback_path: { path: $.nope, default: { path: $.first, then: [upper] } }
        null_is_missing: { path: $.nul, default: was-null }
        template: "{{ $.first }} {{ $.last }}"
        template_missing: "{{ $.first }} {{ $.nope }}"
        every: { path: "$.items[*].sku", all: true }
        every_none: { path: "$.nope[*]", all: true }
        typeform: "$.answers[?(@.field.ref=='email')].email"
        list: [$.first, $.nope, 3]
        object: { object: { a: $.first, b: $.nope } }
        nested:
          for_each: $.items
          object: { sku: "@.sku", root: $.first }
"#;
    let body = json!({"id": 1, "first": "Ada", "last": "Lovelace", "nul": null,
        "items": [{"sku": "A"}, {"sku": "B"}],
        "answers": [{"field": {"ref": "name"}, "text": "x"}, {"field": {"ref": "email"}, "email": "t@f.io"}]});
    let got = apply(rules, Event::new(body).with_header("X-Source", "crm")).unwrap();
    let v = json_of(&got);
    assert_eq!(
        v[0]["custom_event"]["identifiers"],
        json!({"ext_id": "x-1"})
    );
    assert_eq!(
        v[0]["custom_event"]["event_properties"],
        json!({
            "const_num": 42, "const_text": "hello", "quoted_const": "$not a path", "header": "crm",
            "defaulted": "fallback", "fallback_path": "ADA", "null_is_missing": "was-null", "template": "Ada Lovelace",
            "every": ["A", "B"], "typeform": "t@f.io", "list": ["Ada", 3], "object": {"a": "Ada"},
            "nested": [{"sku": "A", "root": "Ada"}, {"sku": "B", "root": "Ada"}]
        })
    );
}

#[test]
fn required_values_fail_the_event_with_the_reason() {
    let rules = "rules:\n  - name: new customer\n    upsert_contact:\n      email: $.data.object.email\n      attributes:\n        PLAN: { path: $.plan, required: true }\n";
    let e = apply(rules, Event::new(json!({"plan": "x"}))).unwrap_err();
    assert_eq!(
        e,
        "rule `new customer`: upsert_contact.email: required value missing at $.data.object.email"
    );
    let e = apply(
        rules,
        Event::new(json!({"data": {"object": {"email": "a@b.c"}}})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `new customer`: upsert_contact.attributes.PLAN: required value missing at $.plan"
    );
    let e = apply(
        rules,
        Event::new(json!({"data": {"object": {"email": 5}}, "plan": 1})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `new customer`: upsert_contact.email: expected text, found a number"
    );
    let rules = "rules:\n  - name: ev\n    custom_event: { event_name: $.kind, ext_id: x }\n";
    let e = apply(rules, Event::new(json!({}))).unwrap_err();
    assert_eq!(
        e,
        "rule `ev`: custom_event.event_name: required value missing at $.kind"
    );
}

#[test]
fn load_files_reads_directories_like_a_configmap_mount() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("..2026_01_01_00_00_00.123");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("a.yaml"),
        format!("{HEAD}rules: []\n").replace("source: t", "source: a"),
    )
    .unwrap();
    std::fs::write(data.join("b.yml"), HEAD.replace("source: t", "source: a")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("..data/a.yaml"), dir.path().join("a.yaml"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("..data/b.yml"), dir.path().join("b.yml"))
            .unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not a mapping").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    let (files, diags) = load_files(&[dir.path().to_path_buf()]);
    assert_eq!(files.len(), 1);
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = diags[0].to_string();
    let want = format!(
        "b.yml:1:9: source `a` is already defined in {}:1",
        dir.path().join("a.yaml").display()
    );
    assert!(d.ends_with(&want), "{d}");
    let (files, diags) = load_files(&[PathBuf::from("/nonexistent/dir")]);
    assert!(files.is_empty());
    assert!(diags[0]
        .to_string()
        .starts_with("/nonexistent/dir:0:0: cannot read"));
}

#[test]
fn diagnostics_display_and_render() {
    let d = hookgate::mapping::Diagnostic::new("m.yaml", 3, 5, "bad thing")
        .with_hint("did you mean `good`?")
        .with_source("a: 1\nb: 2\nc:  xyz\n");
    assert_eq!(d.to_string(), "m.yaml:3:5: bad thing");
    assert_eq!(
        d.render(),
        "m.yaml:3:5: bad thing\n  |\n3 | c:  xyz\n  |     ^\n  = hint: did you mean `good`?"
    );
}

/// Null counts as missing wherever it is met: a path's first non-null match is its value, and a list or
/// object whose parts are all missing is missing too, so it is left out (or defaulted), never sent empty.
#[test]
fn missing_means_missing_at_every_level() {
    let rules = r#"rules:
  - name: v
    custom_event:
      event_name: e
      email: "$.data..email"
      event_properties:
        sku: "$.items[*].sku"
        greeting: "hi {{ $.items[*].sku }}"
        all_missing_list: [$.a, $.b]
        all_missing_object: { object: { x: $.a } }
        defaulted_list: { path: $.csv, then: [{ split: "," }], default: none }
        some_present: [$.a, $.first]
        literal_empty: []
        items_present: { for_each: $.items, object: { sku: "@.sku" } }
"#;
    let body = json!({"data": {"object": {"email": null, "customer": {"email": "sam@example.com"}}},
        "items": [{"sku": null}, {"sku": "B"}], "csv": ",,", "first": "Ada"});
    let v = json_of(&apply(rules, Event::new(body)).unwrap());
    let ev = &v[0]["custom_event"];
    assert_eq!(ev["identifiers"], json!({"email_id": "sam@example.com"}));
    assert_eq!(
        ev["event_properties"],
        json!({"sku": "B", "greeting": "hi B", "defaulted_list": "none", "some_present": ["Ada"],
               "literal_empty": [], "items_present": [{"sku": "B"}]})
    );
}

/// Keys that differ only as YAML scalars (`1` and `"1"`) are one name once read: refused as a duplicate
/// instead of one silently replacing the other.
#[test]
fn keys_equal_as_names_are_duplicates() {
    for (attrs, second) in [
        (r#"{ 1: $.a, "1": $.b }"#, r#""1""#),
        (r#"{ true: $.a, "true": $.b }"#, r#""true""#),
    ] {
        let text = format!(
            "{HEAD}rules:\n  - name: r\n    create_contact: {{ email: $.e, attributes: {attrs} }}\n"
        );
        let diags = parse_source_file(Path::new("t.yaml"), &text).unwrap_err();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0].message.starts_with("duplicate key"),
            "{}",
            diags[0].message
        );
        let line = text.lines().nth(4).unwrap();
        let column = line.find(second).unwrap() as u32 + 1;
        assert_eq!(
            (diags[0].line, diags[0].column),
            (5, column),
            "{}",
            diags[0].render()
        );
    }
}

/// A constant that cannot be an identifier or an event name would fail every event: refused at load.
#[test]
fn constant_names_must_be_text() {
    let text = format!(
        "{HEAD}rules:\n  - name: r\n    custom_event: {{ event_name: 5, email: true, ext_id: \"7\" }}\n"
    );
    let diags = parse_source_file(Path::new("t.yaml"), &text).unwrap_err();
    let messages: Vec<_> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "custom_event.event_name: expected text or a path, found a number",
            "custom_event.email: expected text or a path, found a boolean"
        ]
    );
}

/// A header is text, unless `then` converts it: `then: [to_number]` compares numbers.
#[test]
fn header_conditions_compare_what_then_made() {
    let h = [("X-N", "200")];
    let whens = [
        "{ header: X-N, then: [to_number], equals: 200 }",
        "{ header: X-N, then: [to_number], in: [200, 201] }",
        "{ header: X-N, equals: 200 }",
        "{ header: X-N, then: [to_number], equals: \"200\" }",
        // A transform that keeps text keeps the text comparison.
        "{ header: X-N, then: [trim], equals: 200 }",
        "{ header: X-N, then: [trim, lower], not_equals: 200 }",
    ];
    assert_eq!(fired(&whens, json!({}), &h), ["r0", "r1", "r2", "r4"]);
}

/// A repeated header reads as the receiver stores it, `1, 2`, in `try` and tests as live.
#[test]
fn repeated_headers_are_joined() {
    let rules = "rules:\n  - name: r\n    custom_event: { event_name: e, ext_id: x, event_properties: { m: { header: x-multi } } }\n";
    let ev = Event::new(json!({}))
        .with_header("X-Multi", "1")
        .with_header("x-multi", "2");
    let v = json_of(&apply(rules, ev).unwrap());
    assert_eq!(v[0]["custom_event"]["event_properties"]["m"], "1, 2");
}

/// `phone` identifies a contact by its phone number: the SMS attribute of a create or upsert, Brevo's
/// `phone_id` for an update (after `email` and `ext_id`, when those have no value) and an event;
/// `sms_blacklisted` is the texting twin of `email_blacklisted`.
#[test]
fn a_phone_identifies_a_contact() {
    let rules = "rules:\n  - name: stop\n    upsert_contact:\n      phone: $.From\n      attributes: { FIRSTNAME: $.name }\n      sms_blacklisted: true\n    update_contact:\n      email: $.email\n      phone: $.From\n      sms_blacklisted: $.stopped\n    custom_event:\n      event_name: sms_unsubscribed\n      phone: $.From\n";
    let out = apply(
        rules,
        Event::new(json!({"From": "+14155550100", "name": "Ada", "stopped": false})),
    )
    .unwrap();
    assert_eq!(
        json_of(&out),
        json!([
            {"rule": "stop", "index": 0, "upsert_contact": {"attributes": {"FIRSTNAME": "Ada", "SMS": "+14155550100"}, "smsBlacklisted": true}},
            {"rule": "stop", "index": 1, "update_contact": {"identifier": {"phone": "+14155550100"}, "smsBlacklisted": false}},
            {"rule": "stop", "index": 2, "custom_event": {"event_name": "sms_unsubscribed", "identifiers": {"phone_id": "+14155550100"}}}
        ])
    );
    // The upstream requests: the phone in the URL as phone_id, and in the upsert's attributes.
    let req: Vec<_> = out.iter().map(|a| a.action.upstream()).collect();
    assert_eq!(req[0].body["attributes"]["SMS"], "+14155550100");
    assert_eq!(req[0].body["updateEnabled"], true);
    assert_eq!(
        req[1].path,
        "/contacts/%2B14155550100?identifierType=phone_id"
    );
    assert_eq!(req[1].body, json!({"smsBlacklisted": false}));
    assert_eq!(
        req[2].body["identifiers"],
        json!({"phone_id": "+14155550100"})
    );
    // With an email, the update is by email; a phone as a JSON number is its digits.
    let out = apply(
        rules,
        Event::new(json!({"From": 33612345678u64, "email": "a@b.c", "stopped": true})),
    )
    .unwrap();
    assert_eq!(
        json_of(&out)[1]["update_contact"],
        json!({"identifier": {"email": "a@b.c"}, "smsBlacklisted": true})
    );
    assert_eq!(
        json_of(&out)[0]["upsert_contact"]["attributes"]["SMS"],
        "33612345678"
    );
    // An ext_id comes before the phone too, and an update's SMS attribute is the contact's new number.
    let moved = apply(
        "rules:\n  - name: m\n    update_contact: { ext_id: $.id, phone: $.old, attributes: { SMS: $.new } }\n",
        Event::new(json!({"id": 7, "old": "+1", "new": "+2"})),
    )
    .unwrap();
    assert_eq!(
        json_of(&moved)[0]["update_contact"],
        json!({"identifier": {"ext_id": "7"}, "attributes": {"SMS": "+2"}})
    );
    let moved = apply(
        "rules:\n  - name: m\n    update_contact: { ext_id: $.id, phone: $.old, attributes: { SMS: $.new } }\n",
        Event::new(json!({"old": "+1", "new": "+2"})),
    )
    .unwrap();
    assert_eq!(
        json_of(&moved)[0]["update_contact"],
        json!({"identifier": {"phone": "+1"}, "attributes": {"SMS": "+2"}})
    );
    // A sole phone is required: its absence fails the event and says where it was looked for.
    let e = apply(rules, Event::new(json!({"name": "Ada"}))).unwrap_err();
    assert_eq!(
        e,
        "rule `stop`: upsert_contact.phone: required value missing at $.From"
    );
    let e = apply(
        "rules:\n  - name: u\n    update_contact: { email: $.email, phone: $.p }\n",
        Event::new(json!({})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `u`: update_contact: no identifier: email missing at $.email, phone missing at $.p"
    );
    let e = apply(
        rules,
        Event::new(json!({"From": "+14155550100", "stopped": "no"})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `stop`: update_contact.sms_blacklisted: expected true or false, found text"
    );
}

/// `email_blacklisted`: a constant, or a boolean from the payload (text through `to_bool`), sent as
/// `emailBlacklisted`; missing, it is left out; anything else fails the event naming the field.
#[test]
fn email_blacklisted_is_a_yes_or_no() {
    let rules = "rules:\n  - name: consent\n    update_contact:\n      email: $.email\n      email_blacklisted: $.suppressed\n  - name: texted\n    upsert_contact:\n      email: $.email\n      email_blacklisted: { path: $.opted_out, then: [to_bool] }\n";
    let out = apply(
        rules,
        Event::new(json!({"email": "a@b.c", "suppressed": true, "opted_out": "false"})),
    )
    .unwrap();
    assert_eq!(
        json_of(&out),
        json!([
            {"rule": "consent", "index": 0, "update_contact": {"identifier": {"email": "a@b.c"}, "emailBlacklisted": true}},
            {"rule": "texted", "index": 0, "upsert_contact": {"email": "a@b.c", "emailBlacklisted": false}}
        ])
    );
    let out = apply(rules, Event::new(json!({"email": "a@b.c"}))).unwrap();
    assert_eq!(
        json_of(&out)[0]["update_contact"],
        json!({"identifier": {"email": "a@b.c"}}),
        "left out when missing"
    );
    let e = apply(
        rules,
        Event::new(json!({"email": "a@b.c", "suppressed": "yes"})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `consent`: update_contact.email_blacklisted: expected true or false, found text"
    );
    let e = apply(
        rules,
        Event::new(json!({"email": "a@b.c", "suppressed": 1})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "rule `consent`: update_contact.email_blacklisted: expected true or false, found a number"
    );
    let out = apply(
        rules,
        Event::new(json!({"email": "a@b.c", "suppressed": null})),
    )
    .unwrap();
    assert_eq!(
        json_of(&out)[0]["update_contact"],
        json!({"identifier": {"email": "a@b.c"}}),
        "null is missing: left out"
    );
}
