//! Data stream routing: `data_stream.type`/`dataset` per
//! event kind, the internal-metric list and service-name normalisation.
//! Invariant: the dataset is derived only from the final event.

use super::event::{Body, Event};
use std::borrow::Cow;

/// Metric names that make a metricset internal when all its samples are in it.
const INTERNAL_METRICS: &[&str] = &[
    "agent.background.cpu.overhead.pct",
    "agent.background.cpu.total.pct",
    "agent.background.memory.allocation.bytes",
    "agent.events.dropped",
    "agent.events.queue.max_size.pct",
    "agent.events.queue.min_size.pct",
    "agent.events.requests.bytes",
    "agent.events.requests.count",
    "agent.events.total",
    "clr.gc.count",
    "clr.gc.gen0size",
    "clr.gc.gen1size",
    "clr.gc.gen2size",
    "clr.gc.gen3size",
    "clr.gc.time",
    "faas.billed_duration",
    "faas.coldstart_duration",
    "faas.duration",
    "faas.timeout",
    "golang.goroutines",
    "golang.heap.allocations.active",
    "golang.heap.allocations.allocated",
    "golang.heap.allocations.frees",
    "golang.heap.allocations.idle",
    "golang.heap.allocations.mallocs",
    "golang.heap.allocations.objects",
    "golang.heap.allocations.total",
    "golang.heap.gc.cpu_fraction",
    "golang.heap.gc.next_gc_limit",
    "golang.heap.gc.total_count",
    "golang.heap.gc.total_pause.ns",
    "golang.heap.system.obtained",
    "golang.heap.system.released",
    "golang.heap.system.stack",
    "golang.heap.system.total",
    "jvm.gc.alloc",
    "jvm.gc.count",
    "jvm.gc.time",
    "jvm.memory.heap.committed",
    "jvm.memory.heap.max",
    "jvm.memory.heap.used",
    "jvm.memory.heap.pool.committed",
    "jvm.memory.heap.pool.max",
    "jvm.memory.heap.pool.used",
    "jvm.memory.non_heap.committed",
    "jvm.memory.non_heap.max",
    "jvm.memory.non_heap.used",
    "jvm.memory.non_heap.pool.used",
    "jvm.memory.non_heap.pool.committed",
    "jvm.memory.non_heap.pool.max",
    "jvm.thread.count",
    "jvm.fd.used",
    "jvm.fd.max",
    "nodejs.eventloop.delay.avg.ms",
    "nodejs.handles.active",
    "nodejs.memory.arrayBuffers.bytes",
    "nodejs.memory.external.bytes",
    "nodejs.memory.heap.allocated.bytes",
    "nodejs.memory.heap.used.bytes",
    "nodejs.requests.active",
    "ruby.gc.count",
    "ruby.gc.time",
    "ruby.heap.allocations.total",
    "ruby.heap.slots.free",
    "ruby.heap.slots.live",
    "ruby.threads",
    "system.cpu.total.norm.pct",
    "system.memory.actual.free",
    "system.memory.total",
    "system.process.cgroup.cpu.cfs.period.us",
    "system.process.cgroup.cpu.cfs.quota.us",
    "system.process.cgroup.cpu.stats.periods",
    "system.process.cgroup.cpu.stats.throttled.ns",
    "system.process.cgroup.cpu.stats.throttled.periods",
    "system.process.cgroup.cpuacct.total.ns",
    "system.process.cgroup.memory.mem.limit.bytes",
    "system.process.cgroup.memory.mem.usage.bytes",
    "system.process.cgroup.memory.stats.inactive_file.bytes",
    "system.process.cpu.system.norm.pct",
    "system.process.cpu.total.norm.pct",
    "system.process.cpu.user.norm.pct",
    "system.process.memory.rss.bytes",
    "system.process.memory.size",
];

/// True when `name` is in the internal metric list.
pub(crate) fn is_internal_metric(name: &str) -> bool {
    INTERNAL_METRICS.contains(&name)
}

/// Lower-cased service name with `\ / * ? " < > | space , # : -` → `_`.
pub(crate) fn normalize_service(name: &str) -> Cow<'_, str> {
    let clean = name.bytes().all(|b| {
        !b.is_ascii_uppercase()
            && !matches!(
                b,
                b'\\'
                    | b'/'
                    | b'*'
                    | b'?'
                    | b'"'
                    | b'<'
                    | b'>'
                    | b'|'
                    | b' '
                    | b','
                    | b'#'
                    | b':'
                    | b'-'
            )
    });
    if clean {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .map(|c| match c {
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':' | '-' => '_',
                c => c.to_ascii_lowercase(),
            })
            .flat_map(|c| c.to_lowercase())
            .collect(),
    )
}

/// (`data_stream.type`, `data_stream.dataset`) of an event.
pub(crate) fn route(ev: &Event) -> (&'static str, Cow<'_, str>) {
    match &ev.body {
        Body::Transaction(_) | Body::Span(_) => (
            "traces",
            Cow::Borrowed(if ev.is_rum_agent() { "apm.rum" } else { "apm" }),
        ),
        Body::Error(_) => ("logs", Cow::Borrowed("apm.error")),
        Body::Log(l) if l.is_error() => ("logs", Cow::Borrowed("apm.error")),
        Body::Log(_) => {
            let svc = ev.service_name();
            let svc = if svc.is_empty() {
                Cow::Borrowed("unknown")
            } else {
                normalize_service(svc)
            };
            ("logs", Cow::Owned(format!("apm.app.{svc}")))
        }
        Body::Metricset(m) => {
            if metricset_is_internal(ev, m) {
                ("metrics", Cow::Borrowed("apm.internal"))
            } else {
                (
                    "metrics",
                    Cow::Owned(format!("apm.app.{}", normalize_service(ev.service_name()))),
                )
            }
        }
    }
}

/// A metricset is internal with transaction/span references, an empty service
/// name, or only internal samples.
pub(crate) fn metricset_is_internal(ev: &Event, m: &super::event::Metricset) -> bool {
    m.has_refs
        || ev.service_name().is_empty()
        || m.name == "service_summary"
        || all_samples_internal(ev, m)
}

/// All sample names internal and label `otel_remapped` not true.
pub(crate) fn all_samples_internal(ev: &Event, m: &super::event::Metricset) -> bool {
    !m.samples.is_empty()
        && m.samples.iter().all(|s| is_internal_metric(&s.name))
        && !ev
            .labels
            .strings
            .iter()
            .any(|(k, v)| k == "otel_remapped" && v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize_service("1234_service-12a3"), "1234_service_12a3");
        assert_eq!(normalize_service("testSvc"), "testsvc");
        assert_eq!(normalize_service("a b:c#d"), "a_b_c_d");
    }
}
