//! Rate limiter decisions per second on one shard's store: the per-request
//! `allow` and the per-batch `reserve`, over a working set of client IPs.

use apm_rs::ratelimit::{Store, BATCH_MAX_WAIT};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn ips(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");
    for (name, n_ips, ip_limit) in [
        ("hot_1000_ips", 1000u32, 1000i64),
        ("churn_10000_ips_lru_1000", 10_000, 1000),
    ] {
        let addrs = ips(n_ips);
        g.throughput(Throughput::Elements(addrs.len() as u64));
        g.bench_function(format!("allow_{name}"), |b| {
            let mut s = Store::new(ip_limit, 300, 3).expect("store");
            b.iter(|| {
                let now = Instant::now();
                let mut ok = 0u32;
                for ip in &addrs {
                    ok += u32::from(s.allow(*ip, now));
                }
                ok
            })
        });
        g.bench_function(format!("reserve10_{name}"), |b| {
            let mut s = Store::new(ip_limit, 300, 3).expect("store");
            b.iter(|| {
                let now = Instant::now();
                let mut ok = 0u32;
                for ip in &addrs {
                    ok += u32::from(s.reserve(*ip, 10, now, BATCH_MAX_WAIT).is_ok());
                }
                ok
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
