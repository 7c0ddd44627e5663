//! Added latency per request of authentication: the secret-token check
//! (constant-time compare) and an API-key check served from the cache
//! (verified once against the Elasticsearch double, then cached).

use apm_rs::auth::Authenticator;
use apm_rs::config;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use es_double::{ApiKeyAnswer, EsDouble};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
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

    let es = EsDouble::start();
    es.set_api_key(
        "bench",
        "s3cret",
        ApiKeyAnswer::granted("u", &["event:write"]),
    );
    let cfg = config::from_overrides([
        "apm-server.auth.api_key.enabled=true".to_string(),
        format!(
            "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
            es.url()
        ),
    ])
    .expect("config");
    let auth = Authenticator::new(&cfg);
    let key = format!(
        "ApiKey {}",
        base64::engine::general_purpose::STANDARD.encode("bench:s3cret")
    );
    assert!(
        rt.block_on(auth.authenticate(Some(&key))).is_ok(),
        "first verification"
    );
    c.bench_function("auth/api_key_cached", |b| {
        b.iter(|| rt.block_on(auth.authenticate(Some(&key))).is_ok())
    });
    assert_eq!(
        es.has_privileges_calls(),
        1,
        "every later check came from the cache"
    );
    // the runtime's own cost, to subtract
    c.bench_function("auth/block_on_overhead", |b| {
        b.iter(|| rt.block_on(async { 1 }))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
