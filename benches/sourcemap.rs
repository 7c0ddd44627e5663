//! Source mapping throughput: frames mapped per second with a warm cache.
//!
//! `store_warm`: the full per-frame path through the [`Store`] (metadata
//! resolution with aliasing, LRU hit, position lookup, context lines) with
//! the map already cached; `lookup_only`: the same frames against an
//! in-memory map (no store). Needs the corpus (`$APM_CORPUS` or
//! `../shared/corpus`); prints SKIPPED without it.
//!
//! Run: `cargo bench --bench sourcemap`

#[path = "../tests/support/frames.rs"]
mod frames;

use apm_rs::config;
use apm_rs::sourcemap::frame::apply_sourcemaps;
use apm_rs::sourcemap::{ParsedMap, Store};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use frames::{InMemory, StackFrame};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BUNDLE: &str = "http://localhost:8000/test/e2e/general-usecase/bundle.js.map";

fn corpus_map() -> Option<Vec<u8>> {
    let p = std::env::var_os("APM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    match std::fs::read(p.join("sourcemap/bundle.js.map")) {
        Ok(m) => Some(m),
        Err(_) => {
            eprintln!(
                "\n*** SKIPPED sourcemap bench: corpus not found at {} ***\n",
                p.display()
            );
            None
        }
    }
}

/// A 10-frame stack trace like the RUM corpus errors (various columns on line 1).
fn frames() -> Vec<StackFrame> {
    [18, 181, 15, 199, 33, 7, 23, 67, 120, 250]
        .iter()
        .map(|&col| StackFrame {
            abs_path: BUNDLE.into(),
            filename: "~/test/e2e/general-usecase/bundle.js.map".into(),
            function: "f".into(),
            lineno: Some(1),
            colno: Some(col),
            ..Default::default()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Some(map) = corpus_map() else { return };
    let es = es_double::EsDouble::start();
    let (content, sha) = apm_rs::sourcemap::map::encode_stored(&map).expect("encode");
    es.put_doc(
        ".apm-source-map",
        &format!("apm-agent-js-1.0.1-{BUNDLE}"),
        serde_json::json!({
            "service": {"name": "apm-agent-js", "version": "1.0.1"},
            "file": {"path": BUNDLE},
            "content": content,
            "content_sha256": sha,
        }),
    );
    let cfg = config::from_overrides(vec![
        "apm-server.rum.enabled=true".to_string(),
        format!(
            "apm-server.rum.source_mapping.elasticsearch.hosts=[\"{}\"]",
            es.host()
        ),
    ])
    .expect("config");
    let store = Store::start(&cfg, None).expect("store");
    let deadline = || Instant::now() + Duration::from_secs(5);
    let mut warm = frames();
    assert_eq!(
        apply_sourcemaps(&mut warm, "apm-agent-js", "1.0.1", &store, deadline()),
        10,
        "warm-up must map every frame"
    );

    let mut mem = InMemory::default();
    mem.insert(
        "apm-agent-js",
        "1.0.1",
        BUNDLE,
        ParsedMap::parse(&map).expect("parse"),
    );

    let mut g = c.benchmark_group("sourcemap");
    g.throughput(Throughput::Elements(10));
    g.bench_function("store_warm", |b| {
        b.iter_batched(
            frames,
            |mut f| apply_sourcemaps(&mut f, "apm-agent-js", "1.0.1", &store, deadline()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("lookup_only", |b| {
        b.iter_batched(
            frames,
            |mut f| apply_sourcemaps(&mut f, "apm-agent-js", "1.0.1", &mem, deadline()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
