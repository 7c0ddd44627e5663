//! Added latency per request of authentication: secret-token check
//! (constant-time compare) and header parsing; API-key checks served from
//! the cache are measured in `benches/auth_api_key.rs` against the ES double.

use apm_rs::auth::Authenticator;
use apm_rs::config;
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cfg =
        config::from_overrides(["apm-server.auth.secret_token=0123456789abcdef0123456789abcdef"])
            .expect("config");
    let auth = Authenticator::new(&cfg);
    let header = Some("Bearer 0123456789abcdef0123456789abcdef");
    c.bench_function("auth/secret_token_valid", |b| {
        b.iter(|| rt.block_on(auth.authenticate(header)).is_ok())
    });
    let wrong = Some("Bearer 0123456789abcdef0123456789abcdeX");
    c.bench_function("auth/secret_token_wrong", |b| {
        b.iter(|| rt.block_on(auth.authenticate(wrong)).is_err())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
