//! Document encoding. PLACEHOLDER: replaced by the full encoder.

use super::Event;
use std::io::Write;

/// Server-side facts written into every document.
#[derive(Clone, Debug)]
pub struct EncodeContext {
    /// `observer.hostname`.
    pub observer_hostname: String,
    /// `observer.version`.
    pub observer_version: String,
    /// `data_stream.namespace`.
    pub namespace: String,
}

/// Appends `{"create":{"_index":…}}\n{document}\n` for `ev` to `out`.
/// Returns false and writes nothing when the event is dropped by design
/// (unsampled non-RUM transaction, documents.md §12.2).
pub fn encode(ev: &Event, ctx: &EncodeContext, out: &mut Vec<u8>) -> bool {
    let (ty, ds) = match ev.kind {
        "transaction" | "span" => ("traces", "apm"),
        "error" => ("logs", "apm.error"),
        "log" => ("logs", "apm.app"),
        _ => ("metrics", "apm.internal"),
    };
    let _ = writeln!(
        out,
        "{{\"create\":{{\"_index\":\"{ty}-{ds}-{ns}\"}}}}",
        ns = ctx.namespace
    );
    let doc = serde_json::json!({
        "@timestamp": ev.timestamp_ns / 1_000_000,
        "service": {"name": &*ev.service_name},
        "agent": {"name": &*ev.agent_name},
        "data_stream": {"type": ty, "dataset": ds, "namespace": &ctx.namespace},
        "observer": {"hostname": &ctx.observer_hostname, "type": "apm-server", "version": &ctx.observer_version},
    });
    let _ = serde_json::to_writer(&mut *out, &doc);
    out.push(b'\n');
    true
}
