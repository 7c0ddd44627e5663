//! Support for the broker output tests (Kafka, Redis, console): which
//! external component to use, and the comparison of broker messages with
//! the documents the file sink (the same encoder as the Elasticsearch
//! output) writes for the same events.

use serde_json::Value;

/// The environment variable's value, or `None` after printing a loud
/// SKIPPED line; under CI (`CI=true`) a missing component fails the test.
pub fn component(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {var} is not set under CI (.ci/run starts the component)"
            );
            eprintln!("\n*** SKIPPED {test}: {var} is not set ***\n");
            None
        }
    }
}

/// A program on PATH, or `None` after printing a loud SKIPPED line (a failure under CI).
pub fn program(name: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {name} is not installed under CI"
        );
        eprintln!("\n*** SKIPPED {test}: {name} is not installed ***\n");
    }
    found
}

/// Splits a broker message into its `@metadata` and the document, checking
/// the metadata apm-server writes.
pub fn split_message(body: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(body).expect("message is JSON");
    let meta = v
        .as_object_mut()
        .and_then(|o| o.shift_remove("@metadata"))
        .expect("message has @metadata");
    assert_eq!(meta["beat"], "apm-server", "{meta}");
    assert_eq!(meta["type"], "_doc", "{meta}");
    assert!(
        meta["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{meta}"
    );
    v
}

/// Documents as sorted canonical strings, for multiset comparison.
pub fn canonical(docs: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut out: Vec<String> = docs.into_iter().map(|d| d.to_string()).collect();
    out.sort();
    out
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
