//! In-process throughput of the whole intake path: the real HTTP server
//! ([`apm_rs::server::ServerBuilder`]) with every pipeline stage, into a
//! counting in-memory output. Each measured batch posts gzip-compressed
//! requests of 100 events (the Node.js capture, `bench/` in the corpus) from 8
//! concurrent keep-alive clients and ends when the output has seen every
//! event, so decoding, validation, rate shards, encoding and the indexer are
//! all inside the measured time. Throughput is in events.
//!
//! The corpus comes from `$APM_CORPUS` or `../shared/corpus`; without it the
//! bench is skipped.

mod common;

use apm_rs::server::ServerBuilder;
use common::{Counter, CountingFactory};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const EVENTS_PER_REQUEST: usize = 100;
const CLIENTS: usize = 8;

fn corpus_file() -> Option<PathBuf> {
    let root = std::env::var_os("APM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let f = root.join("bench/apm-nodejs-traces-3.29.0.ndjson");
    if f.is_file() {
        Some(f)
    } else {
        eprintln!(
            "SKIPPED pipeline bench: {} not found (set APM_CORPUS)",
            f.display()
        );
        None
    }
}

/// gzip bodies of metadata + 100 consecutive events, covering the capture.
fn bodies(path: &PathBuf) -> Vec<bytes::Bytes> {
    let text = std::fs::read_to_string(path).expect("corpus readable");
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let metadata = lines.next().expect("metadata line");
    let events: Vec<&str> = lines.collect();
    events
        .chunks(EVENTS_PER_REQUEST)
        .filter(|c| c.len() == EVENTS_PER_REQUEST)
        .map(|chunk| {
            let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
            writeln!(enc, "{metadata}").expect("gzip");
            for e in chunk {
                writeln!(enc, "{e}").expect("gzip");
            }
            bytes::Bytes::from(enc.finish().expect("gzip"))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Some(path) = corpus_file() else { return };
    let bodies = Arc::new(bodies(&path));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = apm_rs::config::from_overrides([
        "apm-server.host=127.0.0.1:0".to_string(),
        format!("output.file.path={}", dir.path().display()),
    ])
    .expect("config");
    let counter = Arc::new(Counter::default());
    let server = ServerBuilder::new(cfg)
        .output(Arc::new(CountingFactory(Arc::clone(&counter))))
        .spawn()
        .expect("server starts");
    let url = format!("http://{}/intake/v2/events", server.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(EVENTS_PER_REQUEST as u64));
    g.bench_function("node_capture_gzip_100_events_per_request", |b| {
        b.iter_custom(|iters| {
            let before = counter.docs();
            let t0 = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..CLIENTS as u64)
                    .map(|k| {
                        let (client, url, bodies) =
                            (client.clone(), url.clone(), Arc::clone(&bodies));
                        tokio::spawn(async move {
                            let mut i = k;
                            while i < iters {
                                let body = bodies[i as usize % bodies.len()].clone();
                                let r = client
                                    .post(&url)
                                    .header("content-type", "application/x-ndjson")
                                    .header("content-encoding", "gzip")
                                    .body(body)
                                    .send()
                                    .await
                                    .expect("request");
                                assert_eq!(r.status().as_u16(), 202);
                                i += CLIENTS as u64;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("client task");
                }
            });
            counter.wait_for(before + iters * EVENTS_PER_REQUEST as u64);
            t0.elapsed()
        })
    });
    g.finish();
    eprintln!(
        "pipeline bench: {} documents, {:.1} MB encoded",
        counter.docs(),
        counter.bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    server.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
