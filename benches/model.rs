//! Criterion benches of the intake model: decode and encode per event type on
//! corpus lines, plus decode+encode over the Node.js agent capture. Prints a
//! `SKIPPED` line when the corpus is absent (`$APM_CORPUS` or `../shared/corpus`).

use apm_rs::model::{encode, DecodeConfig, Decoder, EncodeContext, Event, Metadata, RequestBase};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;

fn corpus() -> Option<PathBuf> {
    let p = match std::env::var_os("APM_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: corpus not found at {}", p.display());
        None
    }
}

fn base() -> RequestBase {
    RequestBase {
        received_ns: 1_700_000_000_000_000_000,
        client_ip: Some("127.0.0.1".parse().unwrap()),
        ..Default::default()
    }
}

fn ctx() -> EncodeContext {
    EncodeContext {
        observer_hostname: "bench-host".into(),
        observer_version: "9.6.0".into(),
        namespace: "default".into(),
    }
}

/// (metadata line, event lines) of a file.
fn load(p: &std::path::Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let data = std::fs::read(p).expect("read corpus file");
    let mut it = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec);
    let meta = it.next().unwrap_or_default();
    (meta, it.collect())
}

fn root_key(l: &[u8]) -> &[u8] {
    let s = l
        .iter()
        .position(|&b| b == b'"')
        .map(|i| i + 1)
        .unwrap_or(0);
    let e = l[s..]
        .iter()
        .position(|&b| b == b'"')
        .map(|i| s + i)
        .unwrap_or(s);
    &l[s..e]
}

type Line = Vec<u8>;

/// Thread CPU time in seconds (immune to other load on the machine).
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Prints decode+encode events per CPU-second over the Node.js capture,
/// measured with the thread CPU clock (the machine is shared).
fn cpu_time_report(meta_line: &[u8], lines: &[Line], cx: &EncodeContext) {
    let mut dec = Decoder::new(DecodeConfig::default());
    let mut out: Vec<Event> = Vec::with_capacity(16);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut run = |dec: &mut Decoder, decode_only: bool| -> usize {
        let mut n = 0;
        let meta = dec.decode_metadata(meta_line, &base()).expect("metadata");
        for l in lines {
            out.clear();
            if dec.decode_event(l, &meta, &mut out).is_ok() {
                n += out.len();
                if !decode_only {
                    for ev in &out {
                        encode(ev, cx, &mut buf);
                    }
                }
            }
            buf.clear();
        }
        n
    };
    for decode_only in [true, false] {
        run(&mut dec, decode_only);
        let t0 = thread_cpu_secs();
        let mut n = 0;
        while thread_cpu_secs() - t0 < 2.0 {
            n += run(&mut dec, decode_only);
        }
        let rate = n as f64 / (thread_cpu_secs() - t0);
        let what = if decode_only {
            "decode"
        } else {
            "decode+encode"
        };
        eprintln!("CPU-time: nodejs {what}: {rate:.0} events per CPU-second");
    }
}

fn benches(c: &mut Criterion) {
    let Some(dir) = corpus() else { return };
    let node = dir.join("bench/apm-nodejs-traces-3.29.0.ndjson");
    let (node_meta, node_lines) = load(&node);
    let mut sets: Vec<(&str, Line, Vec<Line>)> = Vec::new();
    for kind in ["transaction", "span"] {
        let lines = node_lines
            .iter()
            .filter(|l| root_key(l) == kind.as_bytes())
            .cloned()
            .collect();
        sets.push((kind, node_meta.clone(), lines));
    }
    for (kind, file) in [
        ("error", "errors.ndjson"),
        ("metricset", "metricsets.ndjson"),
        ("log", "logs.ndjson"),
    ] {
        let (m, lines) = load(&dir.join("intake-v2").join(file));
        let lines = lines
            .into_iter()
            .filter(|l| root_key(l) == kind.as_bytes())
            .collect();
        sets.push((kind, m, lines));
    }
    let mut dec = Decoder::new(DecodeConfig::default());
    let mut g = c.benchmark_group("decode");
    for (kind, m, lines) in &sets {
        let meta: Metadata = dec.decode_metadata(m, &base()).expect("metadata");
        g.throughput(Throughput::Elements(lines.len() as u64));
        g.bench_function(*kind, |b| {
            let mut out: Vec<Event> = Vec::with_capacity(lines.len());
            b.iter(|| {
                out.clear();
                for l in lines {
                    let _ = dec.decode_event(l, &meta, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("encode");
    let cx = ctx();
    for (kind, m, lines) in &sets {
        let meta = dec.decode_metadata(m, &base()).expect("metadata");
        let mut events = Vec::new();
        for l in lines {
            let _ = dec.decode_event(l, &meta, &mut events);
        }
        g.throughput(Throughput::Elements(events.len() as u64));
        g.bench_function(*kind, |b| {
            let mut buf = Vec::with_capacity(1 << 20);
            b.iter(|| {
                buf.clear();
                for ev in &events {
                    encode(ev, &cx, &mut buf);
                }
                black_box(buf.len())
            })
        });
    }
    g.finish();
    cpu_time_report(&node_meta, &node_lines, &cx);
    let mut g = c.benchmark_group("mixed");
    g.throughput(Throughput::Elements(node_lines.len() as u64));
    g.bench_function("nodejs_decode_encode", |b| {
        let mut out: Vec<Event> = Vec::with_capacity(16);
        let mut buf = Vec::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            let meta = dec.decode_metadata(&node_meta, &base()).expect("metadata");
            for l in &node_lines {
                out.clear();
                if dec.decode_event(l, &meta, &mut out).is_ok() {
                    for ev in &out {
                        encode(ev, &cx, &mut buf);
                    }
                }
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(model, benches);
criterion_main!(model);
