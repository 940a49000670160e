//! Mapping cost per event, without and with JSON parsing: a Stripe customer mapped to 10 fields,
//! and a Shopify order with `for_each` over its line items; plus the direct JSONPath route against
//! jsonpath-rust for the same path. `cargo bench --bench mapping`.
//!
//! Measured in CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: on a shared 2-core VM wall time mostly measures the neighbours. `HOOKGATE_BENCH_WALL=1`
//! measures wall time instead.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_main, Criterion, Throughput};
use hookgate::jsonpath::JsonPath;
use hookgate::mapping::{parse_source_file, Event, SourceFile};
use std::path::{Path, PathBuf};

/// Nanoseconds the current thread has spent on a CPU.
fn on_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement: on-CPU time of the benchmark thread.
struct OnCpu;

impl Measurement for OnCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        on_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        on_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        values.iter_mut().for_each(|v| *v = 1e9 / *v);
        "/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

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

fn stripe<M: Measurement>(c: &mut Criterion<M>) {
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
    // The same event, one rule writing 10 plain fields (no transforms): the mapping floor.
    let plain = parse_source_file(
        Path::new("plain.yaml"),
        "source: plain\nverify: { preset: stripe, secret: \"${env:STRIPE_WEBHOOK_SECRET}\" }\nrules:\n  - name: customer\n    \
         when: { path: $.type, equals: customer.created }\n    upsert_contact:\n      \
         email: $.data.object.email\n      ext_id: $.data.object.id\n      attributes:\n        \
         NAME: $.data.object.name\n        SMS: $.data.object.phone\n        CITY: $.data.object.address.city\n        \
         COUNTRY: $.data.object.address.country\n        ZIP: $.data.object.address.postal_code\n        \
         CURRENCY: $.data.object.currency\n        PLAN: $.data.object.metadata.plan\n        \
         CREATED: $.data.object.created\n",
    )
    .expect("plain mapping compiles");
    assert_eq!(plain.mapping.apply(&event).unwrap().len(), 1);
    g.bench_function("apply_plain_fields", |b| {
        b.iter(|| plain.mapping.apply(black_box(&event)).unwrap())
    });
    g.finish();
}

fn shopify<M: Measurement>(c: &mut Criterion<M>) {
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

fn jsonpath_routes<M: Measurement>(c: &mut Criterion<M>) {
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

fn all<M: Measurement>(c: &mut Criterion<M>) {
    stripe(c);
    shopify(c);
    jsonpath_routes(c);
}

fn on_cpu() -> Criterion<OnCpu> {
    Criterion::default().with_measurement(OnCpu)
}

fn wall() -> Criterion<WallTime> {
    Criterion::default()
}

fn benches() {
    if std::env::var_os("HOOKGATE_BENCH_WALL").is_some() {
        all(&mut wall().configure_from_args());
    } else {
        all(&mut on_cpu().configure_from_args());
    }
}

criterion_main!(benches);
