//! Every transform with its edge cases (missing, null, wrong type, unicode, huge numbers), through
//! the public API: a one-rule mapping applied to `{"in": <input>}`.

use hookgate::action::Action;
use hookgate::mapping::{parse_source_file, Event};
use serde_json::{json, Value};
use std::path::Path;

mod common;

/// `Ok(None)`: the value was missing (left out); `Err`: the event failed, with its reason.
fn run(then: &str, input: Option<Value>) -> Result<Option<Value>, String> {
    let body = match input {
        Some(v) => json!({ "in": v }),
        None => json!({}),
    };
    run_on(then, body)
}

/// `run` on a whole body, for transforms that read more of the event than `$.in`.
fn run_on(then: &str, body: Value) -> Result<Option<Value>, String> {
    let text = format!(
        "source: t\nverify: {{ preset: token, header: X-Token, secret: \"${{env:T_TOKEN}}\" }}\nlookups:\n  plans: {{ gold: 3, \"1\": one, \"true\": yes }}\nrules:\n  - name: r\n    custom_event:\n      event_name: e\n      ext_id: id\n      event_properties:\n        out: {{ path: $.in, then: {then} }}\n"
    );
    let file = parse_source_file(Path::new("t.yaml"), &text)
        .map_err(|d| d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n"))
        .expect("the test mapping compiles");
    let actions = file
        .mapping
        .apply(&Event::new(body))
        .map_err(|e| e.to_string())?;
    let Action::CustomEvent(ev) = &actions[0].action else {
        panic!("not an event")
    };
    Ok(ev.event_properties.get("out").cloned())
}

fn ok(then: &str, input: Value) -> Value {
    match run(then, Some(input.clone())) {
        Ok(Some(v)) => v,
        other => panic!("{then} on {input}: {other:?}"),
    }
}

fn missing(then: &str, input: Option<Value>) {
    assert_eq!(run(then, input.clone()), Ok(None), "{then} on {input:?}");
}

fn fails(then: &str, input: Value, reason: &str) {
    match run(then, Some(input.clone())) {
        Err(e) => assert!(e.contains(reason), "{then} on {input}: {e}"),
        other => panic!("{then} on {input}: expected an error, got {other:?}"),
    }
}

const ALL: &[&str] = &[
    "[lower]",
    "[upper]",
    "[trim]",
    "[not_blank]",
    "[first_word]",
    "[rest_words]",
    "[{ split: \",\" }]",
    "[{ join: \",\" }]",
    "[{ replace: { from: a, to: b } }]",
    "[to_number]",
    "[to_string]",
    "[to_bool]",
    "[{ divide: 100 }]",
    "[{ from_minor_units: JPY }]",
    "[{ from_minor_units: { currency: $.cur, exponents: { isk: 2 } } }]",
    "[{ multiply: 3 }]",
    "[round]",
    "[date]",
    "[{ lookup: plans }]",
    "[sha256]",
];

#[test]
fn missing_and_null_stay_missing() {
    for t in ALL {
        missing(t, None);
        missing(t, Some(Value::Null));
    }
}

#[test]
fn text_transforms() {
    assert_eq!(ok("[lower]", json!("ÉCOLE Straße")), json!("école straße"));
    assert_eq!(ok("[upper]", json!("straße")), json!("STRASSE"));
    assert_eq!(ok("[trim]", json!("\u{a0} a b \n")), json!("a b"));
    assert_eq!(ok("[lower]", json!(["A", "B"])), json!(["a", "b"]));
    fails(
        "[lower]",
        json!(42),
        "expected text, found a number (add to_string first)",
    );
    fails("[upper]", json!({"a": 1}), "expected text, found an object");
    assert_eq!(ok("[trim]", json!("")), json!(""));
}

/// `not_blank` makes a sender's `""` (or whitespace) missing, so it is left out of the action or its
/// `default` applies; every other value passes unchanged, untrimmed, and a list loses its blank items.
#[test]
fn not_blank() {
    missing("[not_blank]", Some(json!("")));
    missing("[not_blank]", Some(json!(" \t\u{a0}\n")));
    assert_eq!(ok("[not_blank]", json!(" Ada ")), json!(" Ada "));
    assert_eq!(ok("[not_blank, trim]", json!(" Ada ")), json!("Ada"));
    for kept in [json!(0), json!(false), json!({}), json!({"a": ""})] {
        assert_eq!(ok("[not_blank]", kept.clone()), kept);
    }
    assert_eq!(
        ok("[not_blank]", json!(["a", "", " ", "b"])),
        json!(["a", "b"])
    );
    missing("[not_blank]", Some(json!(["", " "])));
    // After `trim`, which keeps `""` as a value.
    missing("[trim, not_blank]", Some(json!("   ")));
}

#[test]
fn words() {
    assert_eq!(
        ok("[first_word]", json!("  Jenny   Rosen ")),
        json!("Jenny")
    );
    assert_eq!(
        ok("[rest_words]", json!("Jean  Claude Van Damme")),
        json!("Claude Van Damme")
    );
    assert_eq!(ok("[first_word]", json!("李 小龍")), json!("李"));
    missing("[rest_words]", Some(json!("Cher")));
    missing("[first_word]", Some(json!("   ")));
    fails("[first_word]", json!(true), "expected text");
}

#[test]
fn split_and_join() {
    assert_eq!(
        ok("[{ split: \",\" }, trim]", json!("a, b,,c ")),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        ok("[{ join: \"-\" }]", json!(["a", 1, true, null])),
        json!("a-1-true")
    );
    assert_eq!(ok("[{ join: \"-\" }]", json!("solo")), json!("solo"));
    fails(
        "[{ join: \"-\" }]",
        json!([{"a": 1}]),
        "expected a list of text",
    );
    fails("[{ join: \"-\" }]", json!(3), "expected a list or text");
    fails("[{ split: \",\" }]", json!(3), "expected text");
}

#[test]
fn replace() {
    assert_eq!(
        ok(
            "[{ replace: { from: \"-\", to: \"\" } }]",
            json!("555-12-34")
        ),
        json!("5551234")
    );
    assert_eq!(
        ok(
            "[{ replace: { regex: \"[^0-9+]\", to: \"\" } }]",
            json!("+1 (555) 0100")
        ),
        json!("+15550100")
    );
    assert_eq!(
        ok(
            "[{ replace: { regex: \"(\\\\w+)@(\\\\w+)\", to: \"$2\" } }]",
            json!("jo@acme")
        ),
        json!("acme")
    );
    fails(
        "[{ replace: { from: a, to: b } }]",
        json!(1),
        "expected text",
    );
}

#[test]
fn numbers() {
    assert_eq!(ok("[to_number]", json!(" 42 ")), json!(42));
    assert_eq!(ok("[to_number]", json!("409.94")), json!(409.94));
    assert_eq!(
        ok("[to_number]", json!("18446744073709551615")),
        json!(18446744073709551615u64)
    );
    fails("[to_number]", json!("1e400"), "`1e400` is not a number");
    missing("[to_number]", Some(json!("")));
    fails("[to_number]", json!("12abc"), "`12abc` is not a number");
    fails("[to_number]", json!({"a": 1}), "expected text or a number");
    assert_eq!(ok("[to_number]", json!(["1", ["2"]])), json!([1, [2]]));
    assert_eq!(ok("[{ divide: 100 }]", json!(2000)), json!(20));
    assert_eq!(ok("[{ divide: 100 }]", json!(1999)), json!(19.99));
    assert_eq!(ok("[{ divide: 100 }]", json!("1999")), json!(19.99));
    assert_eq!(ok("[{ divide: 3 }, { round: 2 }]", json!(10)), json!(3.33));
    assert_eq!(ok("[{ multiply: 1.5 }]", json!(2)), json!(3));
    assert_eq!(ok("[round]", json!(2.5)), json!(3));
    assert_eq!(
        ok("[{ divide: 1 }]", json!(u64::MAX)),
        json!(1.8446744073709552e19)
    );
    fails("[{ multiply: 10 }]", json!(1e308), "not a finite number");
    fails("[{ divide: 100 }]", json!("abc"), "`abc` is not a number");
    fails("[{ divide: 100 }]", json!(true), "expected a number");
}

/// Amounts in a currency's smallest unit, by its ISO 4217 exponent (the ISO list of 2026-01-01).
#[test]
fn from_minor_units() {
    let iso = "[{ from_minor_units: $.cur }]";
    let at = |amount: Value, cur: &str| run_on(iso, json!({ "in": amount, "cur": cur }));
    for (amount, cur, major) in [
        (json!(1999), "usd", json!(19.99)),
        (json!(2000), "EUR", json!(20)),
        (json!("7140"), "EUR", json!(71.4)),
        (json!(500), "jpy", json!(500)),
        (json!(1000), " KRW ", json!(1000)),
        (json!(1000), "ISK", json!(1000)),
        (json!(5124), "kwd", json!(5.124)),
        (json!(5120), "BHD", json!(5.12)),
        (json!(12345), "CLF", json!(1.2345)),
        (json!(150), "MGA", json!(1.5)),
        (json!(-250), "usd", json!(-2.5)),
        (json!("1999.5"), "usd", json!(19.995)),
    ] {
        assert_eq!(at(amount.clone(), cur), Ok(Some(major)), "{amount} {cur}");
    }
    assert_eq!(at(json!(""), "usd"), Ok(None));
    assert_eq!(
        ok("[{ from_minor_units: jpy }]", json!([100, "250"])),
        json!([100, 250])
    );
    assert_eq!(ok("[{ from_minor_units: usd }]", json!(5)), json!(0.05));

    // A sender's own exponents replace ISO's (Stripe: ISK and UGX with two decimals, MGA with none).
    let stripe =
        "[{ from_minor_units: { currency: $.cur, exponents: { isk: 2, UGX: 2, mga: 0 } } }]";
    let at = |amount: Value, cur: &str| run_on(stripe, json!({ "in": amount, "cur": cur }));
    assert_eq!(at(json!(100000), "isk"), Ok(Some(json!(1000))));
    assert_eq!(at(json!(500), "ugx"), Ok(Some(json!(5))));
    assert_eq!(at(json!(500), "mga"), Ok(Some(json!(500))));
    assert_eq!(at(json!(1999), "usd"), Ok(Some(json!(19.99))));
    let token = "[{ from_minor_units: { currency: $.cur, exponents: { usdc: 6 } } }]";
    assert_eq!(
        run_on(token, json!({ "in": 2_500_000, "cur": "USDC" })),
        Ok(Some(json!(2.5)))
    );

    let fails_on = |then: &str, body: Value, reason: &str| match run_on(then, body.clone()) {
        Err(e) => assert!(e.contains(reason), "{then} on {body}: {e}"),
        other => panic!("{then} on {body}: expected an error, got {other:?}"),
    };
    fails_on(
        iso,
        json!({ "in": 100, "cur": "ZZZ" }),
        "`ZZZ` is not an ISO 4217 currency code",
    );
    fails_on(
        iso,
        json!({ "in": 100, "cur": "xau" }),
        "`XAU` has no minor unit",
    );
    fails_on(iso, json!({ "in": 100 }), "no currency at $.cur");
    fails_on(iso, json!({ "in": 100, "cur": "" }), "no currency at $.cur");
    fails_on(
        iso,
        json!({ "in": 100, "cur": 840 }),
        "is a number, not a currency code",
    );
    fails_on(
        iso,
        json!({ "in": "ten", "cur": "usd" }),
        "`ten` is not a number",
    );
    // Up to 2^53 every amount is exact; past it, refused rather than rounded.
    assert_eq!(
        run_on(iso, json!({ "in": 9_007_199_254_740_991u64, "cur": "jpy" })),
        Ok(Some(json!(9_007_199_254_740_991u64)))
    );
    fails_on(
        iso,
        json!({ "in": "12345678901234567890", "cur": "usd" }),
        "too large to convert exactly",
    );
    fails_on(
        iso,
        json!({ "in": true, "cur": "usd" }),
        "expected a number",
    );
    assert_eq!(
        run_on(iso, json!({ "in": "n/a", "cur": "usd" })).unwrap_err(),
        "rule `r`: custom_event.event_properties.out: from_minor_units at $.in: `n/a` is not a number"
    );
}

/// Every currency of SIX's ISO 4217 list (the official table, through PyPI `iso4217`), converted
/// with the decimal places the list gives it; a currency without a minor unit fails the event.
#[test]
fn from_minor_units_agrees_with_the_iso_4217_list() {
    let (published, table) = common::peer_iso4217_exponents();
    assert!(
        table.len() >= 150,
        "the list has {} currencies",
        table.len()
    );
    assert!(
        published.as_str() >= "2026-01-01",
        "an older list: {published}"
    );
    let iso = "[{ from_minor_units: $.cur }]";
    for (code, exponent) in &table {
        for cur in [code.clone(), code.to_lowercase()] {
            let got = run_on(iso, json!({ "in": 123_456, "cur": cur }));
            match exponent.as_u64() {
                Some(e) => {
                    let want = 123_456f64 / 10f64.powi(e as i32);
                    let got = got
                        .unwrap_or_else(|err| panic!("{cur} ({e} decimals): {err}"))
                        .and_then(|v| v.as_f64());
                    assert_eq!(got, Some(want), "{cur}: {e} decimals");
                }
                None => {
                    let err = got.expect_err(&cur);
                    assert!(err.contains("has no minor unit"), "{cur}: {err}");
                }
            }
        }
    }
}

/// Each element of a `for_each` reads its own currency (`@.`), and a condition can compare the
/// converted amount.
#[test]
fn from_minor_units_per_element_and_in_conditions() {
    let text = r#"
source: t
verify: { preset: token, header: X-Token, secret: "${env:T_TOKEN}" }
rules:
  - name: big
    when: { path: $.total, then: [{ from_minor_units: $.currency }], gte: 1000 }
    custom_event:
      event_name: big_order
      ext_id: $.id
      event_properties:
        lines:
          for_each: $.lines
          object:
            amount: { path: "@.amount", then: [{ from_minor_units: "@.currency" }] }
"#;
    let file = parse_source_file(Path::new("t.yaml"), text)
        .map_err(|d| d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n"))
        .expect("compiles");
    let order = |total: u64, currency: &str| {
        json!({ "id": "o1", "total": total, "currency": currency, "lines": [
            { "amount": 1050, "currency": "usd" },
            { "amount": 1050, "currency": "jpy" },
            { "amount": 1050, "currency": "kwd" },
        ] })
    };
    let actions = file
        .mapping
        .apply(&Event::new(order(150_000, "jpy")))
        .expect("maps");
    let Action::CustomEvent(ev) = &actions[0].action else {
        panic!("not an event")
    };
    assert_eq!(
        ev.event_properties.get("lines"),
        Some(&json!([{ "amount": 10.5 }, { "amount": 1050 }, { "amount": 1.05 }]))
    );
    // 99,999 cents are 999.99 dollars, below the 1,000 of the condition; 99,999 yen are not.
    assert_eq!(
        file.mapping
            .apply(&Event::new(order(150_000, "usd")))
            .expect("maps")
            .len(),
        1
    );
    assert!(file
        .mapping
        .apply(&Event::new(order(99_999, "usd")))
        .expect("maps")
        .is_empty());
    assert_eq!(
        file.mapping
            .apply(&Event::new(order(99_999, "jpy")))
            .expect("maps")
            .len(),
        1
    );
}

#[test]
fn to_string_and_bool() {
    assert_eq!(ok("[to_string]", json!(42)), json!("42"));
    assert_eq!(ok("[to_string]", json!(1.5)), json!("1.5"));
    assert_eq!(ok("[to_string]", json!(false)), json!("false"));
    assert_eq!(ok("[to_string]", json!({"a": [1]})), json!("{\"a\":[1]}"));
    assert_eq!(ok("[to_bool]", json!("Yes")), json!(true));
    assert_eq!(ok("[to_bool]", json!("0")), json!(false));
    assert_eq!(ok("[to_bool]", json!(1)), json!(true));
    missing("[to_bool]", Some(json!(" ")));
    fails("[to_bool]", json!("maybe"), "is not a boolean");
    fails("[to_bool]", json!(2), "expected a boolean");
}

#[test]
fn dates() {
    assert_eq!(
        ok("[date]", json!(1700000000)),
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        ok("[date]", json!(1700000000123u64)),
        json!("2023-11-14T22:13:20.123Z")
    );
    assert_eq!(
        ok("[date]", json!("1700000000")),
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        ok("[date]", json!("2008-01-10T11:00:00-05:00")),
        json!("2008-01-10T16:00:00Z")
    );
    assert_eq!(
        ok("[date]", json!("2023-05-31 16:45:09")),
        json!("2023-05-31T16:45:09Z")
    );
    assert_eq!(
        ok("[date]", json!("2024-02-29")),
        json!("2024-02-29T00:00:00Z")
    );
    assert_eq!(
        ok("[{ date: millis }]", json!("1484063279462")),
        json!("2017-01-10T15:47:59.462Z")
    );
    assert_eq!(
        ok("[{ date: seconds }]", json!(0)),
        json!("1970-01-01T00:00:00Z")
    );
    assert_eq!(
        ok("[{ date: \"%d/%m/%Y %H:%M\" }]", json!("31/12/2024 23:59")),
        json!("2024-12-31T23:59:00Z")
    );
    assert_eq!(
        ok("[{ date: \"%d/%m/%Y\" }]", json!("01/02/2024")),
        json!("2024-02-01T00:00:00Z")
    );
    // A number read with a format is read as its digits.
    assert_eq!(
        ok("[{ date: \"%Y%m%d\" }]", json!(20240229)),
        json!("2024-02-29T00:00:00Z")
    );
    fails(
        "[{ date: \"%d/%m/%Y\" }]",
        json!("2024-02-01"),
        "does not match the format",
    );
    fails("[date]", json!("next tuesday"), "is not an ISO-8601 date");
    fails("[date]", json!("2023-02-30"), "is not an ISO-8601 date");
    fails("[date]", json!(1e300), "out of range");
    fails("[date]", json!(true), "expected a date");
}

#[test]
fn lookup_and_sha256() {
    assert_eq!(ok("[{ lookup: plans }]", json!("gold")), json!(3));
    assert_eq!(ok("[{ lookup: plans }]", json!(1)), json!("one"));
    assert_eq!(ok("[{ lookup: plans }]", json!(true)), json!("yes"));
    missing("[{ lookup: plans }]", Some(json!("silver")));
    assert_eq!(
        ok("[{ lookup: plans }]", json!(["gold", "silver"])),
        json!([3])
    );
    fails(
        "[{ lookup: plans }]",
        json!({"a": 1}),
        "expected text or a number",
    );
    assert_eq!(
        ok("[trim, lower, sha256]", json!(" Jane@Example.com ")),
        json!("8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d")
    );
    assert_eq!(ok("[sha256]", json!(42)), ok("[sha256]", json!("42")));
    fails("[sha256]", json!({"a": 1}), "expected text");
}

#[test]
fn a_failing_transform_names_the_rule_field_and_path() {
    let e = run("[to_number]", Some(json!("n/a"))).unwrap_err();
    assert_eq!(
        e,
        "rule `r`: custom_event.event_properties.out: to_number at $.in: `n/a` is not a number"
    );
}
