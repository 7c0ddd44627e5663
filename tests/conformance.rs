//! Conformance suite: posts the corpus payloads the upstream system tests
//! send through the real apm-rs server, turns the written `_source`
//! documents into Elasticsearch's `fields` view by emulating the mappings and
//! ingest pipelines (`conformance/emulate.rs`), and compares them with apm-server's approved
//! documents (`conformance/compare.rs`). The intake-response approvals are
//! compared with live responses (`conformance/responses.rs`).
//!
//! Documents go through the real Elasticsearch output into the
//! Elasticsearch double (`es-double`), which keeps their `_source` per data
//! stream. The runner (`conformance/runner.rs`) is shared with
//! `tests/real_engine.rs`, which runs the same recipes against a real
//! Elasticsearch-compatible engine doing the ES-side steps itself. Output: one `PASS <name>` / `FAIL <name>`
//! line per approval (with a diff), `SKIP <name>: <reason>` for approvals
//! that are not produced from intake payloads, then `N passed, M failed`.
//!
//! Set `CONFORMANCE_RECEIVED=<dir>` to get our documents written as
//! `<dir>/<approval>.received.json`.
//!
//! `conformance/known_failures.txt` lists approvals expected to fail. The
//! test fails on any other failure (a regression) and on any listed
//! approval that now passes (remove it from the list).

mod common;
mod engine;

#[path = "conformance/compare.rs"]
mod compare;
#[path = "conformance/emulate.rs"]
mod emulate;
#[path = "conformance/otlp_recipes.rs"]
mod otlp_recipes;
#[path = "conformance/recipes.rs"]
mod recipes;
#[path = "conformance/responses.rs"]
mod responses;
#[path = "conformance/runner.rs"]
mod runner;

use runner::{Backend, Results};

const KNOWN_FAILURES: &str = include_str!("conformance/known_failures.txt");

#[tokio::test]
async fn conformance() {
    let Some(corpus) = common::corpus("conformance") else {
        eprintln!("SKIPPED: corpus not found (set APM_CORPUS); conformance suite not run");
        return;
    };
    let mut results = Results::default();
    runner::run_document_approvals(&corpus, Backend::Double, &mut results).await;
    runner::run_response_approvals(&corpus, &mut results).await;
    runner::report(
        &results,
        &runner::listed(KNOWN_FAILURES),
        "tests/conformance/known_failures.txt",
    );
}
