//! Mapping cost per event, without and with JSON parsing: a Stripe customer mapped to 10 fields,
//! and a Shopify order with `for_each` over its line items; plus the direct JSONPath route against
//! jsonpath-rust for the same path. `cargo bench --bench mapping`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hookgate::jsonpath::JsonPath;
use hookgate::mapping::{parse_source_file, Event, SourceFile};
use std::path::{Path, PathBuf};

fn load(name: &str) -> SourceFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("mappings")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("mapping file");
    parse_source_file(&path, &text).expect("mapping compiles")
}

fn payload(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings/testdata")
            .join(name),
    )
    .expect("payload")
}

fn stripe(c: &mut Criterion) {
    let file = load("stripe.yaml");
    let bytes = payload("stripe_customer_created.json");
    let event = Event::new(serde_json::from_slice(&bytes).unwrap());
    let actions = file.mapping.apply(&event).unwrap();
    assert_eq!(actions.len(), 1);
    let mut g = c.benchmark_group("stripe_customer_10_fields");
    g.bench_function("apply", |b| {
        b.iter(|| file.mapping.apply(black_box(&event)).unwrap())
    });
    g.bench_function("parse_json", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).unwrap())
    });
    g.bench_function("parse_and_apply", |b| {
        b.iter(|| {
            let ev = Event::new(serde_json::from_slice(black_box(&bytes)).unwrap());
            file.mapping.apply(&ev).unwrap()
        })
    });
    g.finish();
}

fn shopify(c: &mut Criterion) {
    let file = load("shopify.yaml");
    let bytes = payload("shopify_order.json");
    let event = Event::new(serde_json::from_slice(&bytes).unwrap())
        .with_header("X-Shopify-Topic", "orders/create");
    assert_eq!(file.mapping.apply(&event).unwrap().len(), 4);
    let mut g = c.benchmark_group("shopify_order_for_each");
    g.bench_function("apply", |b| {
        b.iter(|| file.mapping.apply(black_box(&event)).unwrap())
    });
    g.bench_function("parse_json", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn jsonpath_routes(c: &mut Criterion) {
    let bytes = payload("stripe_customer_created.json");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let direct = JsonPath::compile("$.data.object.address.city").unwrap();
    assert!(direct.is_direct());
    let full = direct.clone().without_direct_route();
    let mut g = c.benchmark_group("jsonpath_first");
    g.bench_function("direct", |b| b.iter(|| direct.first(black_box(&doc))));
    g.bench_function("jsonpath_rust", |b| b.iter(|| full.first(black_box(&doc))));
    g.finish();
}

criterion_group!(benches, stripe, shopify, jsonpath_routes);
criterion_main!(benches);
