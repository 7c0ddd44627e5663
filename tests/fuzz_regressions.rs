//! Replays every input kept under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through the fuzz harness of that target
//! (`apm_rs::fuzzing`), so the invariants the fuzzers check, and every crash
//! they ever found, are covered by plain `cargo test` without cargo-fuzz.

use std::path::{Path, PathBuf};

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("ndjson_framer", apm_rs::fuzzing::ndjson_framer),
    ("decode_v2", apm_rs::fuzzing::decode_v2),
    ("decode_v3", apm_rs::fuzzing::decode_v3),
    ("client_ip", apm_rs::fuzzing::client_ip),
    ("decode_otlp", apm_rs::fuzzing::decode_otlp),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    out.retain(|p| p.is_file());
    out.sort();
    out
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut n = 0;
    for (target, harness) in TARGETS {
        for f in files(&root.join(target)) {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{target}: {} broke an invariant", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn seeds_hold_the_invariants() {
    let n = replay("seeds");
    // Every target has seeds (fuzz/gen_seeds.py); an empty replay would prove nothing.
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        assert!(!files(&dir).is_empty(), "no seeds for {target}");
    }
    assert!(n >= 40, "only {n} seeds");
}

#[test]
fn regressions_stay_fixed() {
    let n = replay("regressions");
    assert!(n >= 1, "no regression inputs found");
}
