//! The module dependency rules of docs/architecture.md, checked on the
//! source: every `crate::<module>` path outside comments in `src/<module>`
//! must be allowed by the rules below. Reads only this repository's `src/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules that import nothing else of ours.
const LEAVES: &[&str] = &[
    "model",
    "budget",
    "ratelimit",
    "telemetry",
    "config",
    "version",
];

/// (module, modules it must never import).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "es",
        &[
            "http",
            "pipeline",
            "output",
            "auth",
            "agentcfg",
            "sourcemap",
            "model",
            "server",
        ],
    ),
    (
        "output",
        &["http", "pipeline", "server", "auth", "agentcfg", "queue"],
    ),
    ("queue", &["http", "pipeline", "server", "auth", "agentcfg"]),
    (
        "aggregation",
        &[
            "http",
            "pipeline",
            "output",
            "auth",
            "agentcfg",
            "sourcemap",
            "server",
            "es",
            "config",
            "queue",
        ],
    ),
    ("pipeline", &["http", "server", "agentcfg"]),
    ("auth", &["http", "pipeline", "output", "server", "model"]),
    ("sourcemap", &["http", "pipeline", "server", "output"]),
    ("http", &["server", "output", "grpc"]),
    (
        "grpc",
        &["server", "output", "queue", "sourcemap", "agentcfg"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of module `m` (`src/m.rs` or everything under `src/m/`).
fn files_of(m: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{m}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src().join(m)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The top-level modules module `m` refers to as `crate::<name>`, comments excluded.
fn imports_of(m: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for f in files_of(m) {
        let text = std::fs::read_to_string(&f).expect("source readable");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != m {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn leaf_modules_import_nothing_else_of_ours() {
    for m in LEAVES {
        assert!(!files_of(m).is_empty(), "module {m} not found under src/");
        let imports = imports_of(m);
        assert!(
            imports.is_empty(),
            "{m} must import nothing of ours, imports {imports:?}"
        );
    }
}

#[test]
fn no_module_imports_what_the_layering_forbids() {
    for (m, forbidden) in FORBIDDEN {
        let imports = imports_of(m);
        let bad: Vec<_> = forbidden.iter().filter(|f| imports.contains(**f)).collect();
        assert!(bad.is_empty(), "{m} must not import {bad:?}");
    }
}

#[test]
fn the_output_reaches_the_memory_budget_without_the_pipeline() {
    let imports = imports_of("output");
    assert!(imports.contains("budget"), "{imports:?}");
    assert!(!imports.contains("pipeline"), "{imports:?}");
}
