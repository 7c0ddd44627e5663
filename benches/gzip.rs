//! gzip decompression throughput of an intake body through
//! [`apm_rs::http::body::BodyDecoder`] (decompress + split into ndjson lines),
//! on the real Node.js capture (`bench/apm-nodejs-traces-3.29.0.ndjson`).
//! The plain (identity) body is the line-splitting baseline, so the gap
//! between the two is the cost of inflating.
//!
//! Throughput is reported in *decompressed* bytes. The corpus comes from
//! `$APM_CORPUS` or `../shared/corpus`; without it the bench is skipped.

use apm_rs::http::body::{BodyDecoder, Encoding, LineItem};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;

fn corpus_file() -> Option<PathBuf> {
    let root = std::env::var_os("APM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let f = root.join("bench/apm-nodejs-traces-3.29.0.ndjson");
    if f.is_file() {
        Some(f)
    } else {
        eprintln!(
            "SKIPPED gzip bench: {} not found (set APM_CORPUS)",
            f.display()
        );
        None
    }
}

/// Decodes a whole body fed in 16 KiB network-sized chunks; returns the line count.
fn decode(body: &[u8], enc: Encoding) -> usize {
    let mut d = BodyDecoder::new(enc, 307_200);
    let mut lines = 0;
    for chunk in body.chunks(16 * 1024) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let n = d.feed(rest).expect("valid body");
            rest = &rest[n..];
            while let Some(item) = d.next_line() {
                if let LineItem::Line { bytes, .. } = item {
                    black_box(bytes);
                    lines += 1;
                }
            }
        }
    }
    d.finish().expect("valid end");
    while let Some(item) = d.next_line() {
        if let LineItem::Line { .. } = item {
            lines += 1;
        }
    }
    lines
}

fn bench(c: &mut Criterion) {
    let Some(path) = corpus_file() else { return };
    let raw = std::fs::read(&path).expect("corpus readable");
    let expected = raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let mut g = c.benchmark_group("body_decode");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("identity", |b| {
        b.iter(|| assert_eq!(decode(black_box(&raw), Encoding::Sniff), expected))
    });
    for level in [1u32, 6] {
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(level));
        enc.write_all(&raw).expect("gzip");
        let gz = enc.finish().expect("gzip");
        eprintln!(
            "gzip level {level}: {} → {} bytes (ratio {:.1})",
            raw.len(),
            gz.len(),
            raw.len() as f64 / gz.len() as f64
        );
        g.bench_function(format!("gzip_level{level}"), |b| {
            b.iter(|| assert_eq!(decode(black_box(&gz), Encoding::Gzip), expected))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
