//! Server-side metric aggregation, as apm-server 9.x does it: every
//! transaction and span (sampled or not) is folded into transaction,
//! service-transaction, service-summary and service-destination metrics at
//! 1-minute, 10-minute and 60-minute intervals (see docs/aggregation.md).
//!
//! Pure logic: no configuration, HTTP or output here. The pipeline stage
//! (`crate::pipeline::aggregator`) owns the shards and the clock.
//!
//! Model: for each interval, events are grouped into the *processing
//! window* they arrive in (wall clock truncated to the interval); inside a
//! window, groups are keyed by the event timestamp truncated to the
//! interval plus the grouping dimensions. A window is harvested once it has
//! ended (plus a small delay) or at shutdown, which turns every group into
//! one document.
//!
//! Invariants:
//! * state is bounded: per window, at most `max_services` services and the
//!   configured number of groups per kind overall and per service; events
//!   past a limit go to an overflow group (`_other`) that counts the
//!   distinct groups it absorbed in fixed memory ([`distinct::Distinct`]);
//! * past `max_services`, a new service displaces the shard's least
//!   recently seen service of the window into `_other`, so the services
//!   seen last keep their own groups (as apm-server, which merges a
//!   window's requests newest first);
//! * every event's weight (its representative count) is added exactly once
//!   per interval; overflow never loses weight, only dimensions.

pub mod distinct;
pub mod document;
pub mod histogram;
pub mod key;

use crate::model::Event;
use distinct::Distinct;
use histogram::Durations;
use key::Groups;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// One aggregation interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// `metricset.interval` and data-set suffix (`1m`, `10m`, `60m`).
    pub name: &'static str,
    pub nanos: i64,
}

const MINUTE_NS: i64 = 60_000_000_000;

/// The intervals apm-server aggregates at.
pub const INTERVALS: [Interval; 3] = [
    Interval {
        name: "1m",
        nanos: MINUTE_NS,
    },
    Interval {
        name: "10m",
        nanos: 10 * MINUTE_NS,
    },
    Interval {
        name: "60m",
        nanos: 60 * MINUTE_NS,
    },
];

/// The name of every overflow group.
pub const OVERFLOW: &str = "_other";

/// Group limits per processing window and interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_services: usize,
    pub max_transaction_groups: usize,
    pub max_transaction_groups_per_service: usize,
    pub max_service_transaction_groups: usize,
    pub max_service_transaction_groups_per_service: usize,
    pub max_service_destination_groups: usize,
    pub max_service_destination_groups_per_service: usize,
}

/// One overall limit shared by every shard: the groups taken in the
/// current window. Shards race only for the last few slots, so a limit may
/// be passed by at most one group per shard.
#[derive(Debug, Default)]
struct Counter {
    window: AtomicI64,
    used: AtomicUsize,
}

impl Counter {
    fn try_take(&self, window: i64, limit: usize) -> bool {
        let seen = self.window.load(Ordering::Acquire);
        if seen < window
            && self
                .window
                .compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
        }
        if self.used.load(Ordering::Acquire) >= limit {
            return false;
        }
        self.used.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The overall limits, shared by all shards.
#[derive(Debug)]
pub struct Shared {
    pub limits: Limits,
    /// Per interval: services, transaction, service-transaction and destination groups.
    counters: [[Counter; 4]; 3],
}

const SERVICES: usize = 0;
const TRANSACTIONS: usize = 1;
const SERVICE_TRANSACTIONS: usize = 2;
const DESTINATIONS: usize = 3;

impl Shared {
    pub fn new(limits: Limits) -> Self {
        Shared {
            limits,
            counters: Default::default(),
        }
    }
}

/// The service dimensions shared by every metric of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    /// Event timestamp truncated to the interval (ns since the epoch).
    pub timestamp_ns: i64,
    pub name: String,
    pub environment: String,
    pub language_name: String,
    pub agent_name: String,
    /// Global (metadata) string labels; none for RUM.
    pub labels: Vec<(String, String)>,
    /// Global numeric labels as IEEE bits (so the key can be hashed).
    pub numeric_labels: Vec<(String, u64)>,
}

/// The transaction dimensions apm-server groups by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TransactionKey {
    pub root: bool,
    pub name: String,
    pub type_: String,
    pub result: String,
    pub outcome: String,
    pub service_version: String,
    pub service_node_name: String,
    pub service_runtime_name: String,
    pub service_runtime_version: String,
    pub service_language_version: String,
    pub host_hostname: String,
    pub host_name: String,
    pub host_os_platform: String,
    pub container_id: String,
    pub kubernetes_pod_name: String,
    pub cloud_provider: String,
    pub cloud_region: String,
    pub cloud_availability_zone: String,
    pub cloud_service_name: String,
    pub cloud_account_id: String,
    pub cloud_account_name: String,
    pub cloud_machine_type: String,
    pub cloud_project_id: String,
    pub cloud_project_name: String,
    pub faas_coldstart: Option<bool>,
    pub faas_id: String,
    pub faas_name: String,
    pub faas_version: String,
    pub faas_trigger_type: String,
}

/// The service-destination dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DestinationKey {
    pub span_name: String,
    pub outcome: String,
    pub target_type: String,
    pub target_name: String,
    pub resource: String,
}

/// Durations and outcomes of a group of transactions.
#[derive(Debug, Default, Clone)]
pub struct TransactionMetrics {
    pub durations: Durations,
    /// Weighted transactions with outcome `success`.
    pub success: f64,
    /// Weighted transactions with outcome `success` or `failure`.
    pub success_or_failure: f64,
}

impl TransactionMetrics {
    fn add(&mut self, micros: u64, weight: f64, outcome: &str) {
        self.durations.record(micros, weight);
        match outcome {
            "success" => {
                self.success += weight;
                self.success_or_failure += weight;
            }
            "failure" => self.success_or_failure += weight,
            _ => {}
        }
    }
    fn merge(&mut self, o: &TransactionMetrics) {
        self.durations.merge(&o.durations);
        self.success += o.success;
        self.success_or_failure += o.success_or_failure;
    }
}

/// Response times of a group of exit spans.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DestinationMetrics {
    pub count: f64,
    pub sum_us: f64,
}

/// An overflow group: merged metrics and how many distinct groups it absorbed.
#[derive(Debug, Default, Clone)]
pub struct Overflow<M> {
    pub metrics: M,
    pub groups: Distinct,
}

/// Everything aggregated for one service in one window.
#[derive(Debug, Default)]
pub struct ServiceGroup {
    /// The shard's event sequence number when this service was last seen;
    /// the least recently seen service is the one displaced past the limit.
    pub last_seen: u64,
    /// By packed [`TransactionKey`].
    pub transactions: Groups<Box<[u8]>, TransactionMetrics>,
    pub transaction_overflow: Option<Box<Overflow<TransactionMetrics>>>,
    /// By transaction type.
    pub service_transactions: Groups<Box<str>, TransactionMetrics>,
    pub service_transaction_overflow: Option<Box<Overflow<TransactionMetrics>>>,
    /// By packed [`DestinationKey`].
    pub destinations: Groups<Box<[u8]>, DestinationMetrics>,
    pub destination_overflow: Option<Box<Overflow<DestinationMetrics>>>,
}

/// Services past `max_services`: one `_other` service with merged metrics.
#[derive(Debug, Default)]
pub struct OverflowService {
    pub services: Distinct,
    pub transactions: Overflow<TransactionMetrics>,
    pub service_transactions: Overflow<TransactionMetrics>,
    pub destinations: Overflow<DestinationMetrics>,
}

/// The groups of one interval's processing window.
#[derive(Debug)]
pub struct Window {
    pub interval: Interval,
    /// Wall-clock start of the window (ns); also the overflow documents' timestamp.
    pub start_ns: i64,
    /// By packed [`ServiceKey`].
    pub services: Groups<Box<[u8]>, ServiceGroup>,
    pub overflow: Option<Box<OverflowService>>,
}

/// The aggregation state of one shard (the services that hash to it).
#[derive(Debug, Default)]
pub struct Shard {
    windows: Vec<Window>,
    bytes: usize,
    /// Events added so far; orders services by when they were last seen.
    events: u64,
    /// The packed keys of the event being added (reused).
    scratch: Vec<u8>,
}

/// The shard a service's events aggregate in.
pub fn shard_of(service_name: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    service_name.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// Rough heap cost of one map entry beyond its key.
const ENTRY_OVERHEAD: usize = 96;

fn truncate(ns: i64, interval: i64) -> i64 {
    ns - ns.rem_euclid(interval)
}

/// What one event contributes, computed once for all intervals; keys are
/// ranges of the shard's scratch buffer.
enum Contribution<'e> {
    None,
    Transaction {
        key: Range<usize>,
        type_: &'e str,
        outcome: &'e str,
        micros: u64,
        weight: f64,
        /// The transaction's dropped exit spans, one destination contribution each.
        dropped: Vec<Contribution<'e>>,
    },
    Destination {
        key: Range<usize>,
        count: f64,
        sum_us: f64,
    },
}

fn contribution<'e>(ev: &'e Event, buf: &mut Vec<u8>) -> Contribution<'e> {
    use crate::model::event::Body;
    match &ev.body {
        Body::Transaction(t) => {
            let weight = t.representative_count.unwrap_or(1.0);
            let dropped = t
                .dropped_spans_stats
                .iter()
                .filter(|d| !d.destination_service_resource.is_empty())
                .map(|d| Contribution::Destination {
                    key: key::pack_dropped(buf, d),
                    count: d.count as f64 * weight,
                    sum_us: d.sum_us as f64 * weight,
                })
                .collect();
            Contribution::Transaction {
                key: key::pack_transaction(buf, ev, t),
                type_: &t.type_,
                outcome: &t.outcome,
                micros: (t.duration_ns.max(0) / 1000) as u64,
                weight,
                dropped,
            }
        }
        Body::Span(s) => {
            let Some((_, _, resource)) = s.destination_service.as_ref().filter(|d| !d.2.is_empty())
            else {
                return Contribution::None;
            };
            let weight = s.representative_count.unwrap_or(1.0);
            let (count, sum_us) = match &s.composite {
                Some(c) => (c.count as f64 * weight, c.sum_us as f64 * weight),
                None => (weight, (s.duration_ns.max(0) / 1000) as f64 * weight),
            };
            Contribution::Destination {
                key: key::pack_destination(
                    buf,
                    &s.name,
                    &s.outcome,
                    ev.service_target
                        .as_ref()
                        .map(|(t, n)| (t.as_str(), n.as_str())),
                    resource,
                ),
                count,
                sum_us,
            }
        }
        _ => Contribution::None,
    }
}

impl Shard {
    /// Folds `ev` into every interval's current window. `metadata` is the
    /// request's metadata line, whose labels are kept (event-level labels are not kept, as
    /// in apm-server); `now_ns` is the wall clock.
    pub fn add(
        &mut self,
        ev: &Event,
        metadata: Option<&crate::model::Metadata>,
        now_ns: i64,
        shared: &Shared,
    ) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let contribution = contribution(ev, &mut buf);
        let service = key::pack_service(&mut buf, ev, metadata.map(|m| &*m.inner.labels));
        self.events += 1;
        let limits = &shared.limits;
        for (i, interval) in INTERVALS.iter().enumerate() {
            let start = truncate(now_ns, interval.nanos);
            let counters = &shared.counters[i];
            let w = match self
                .windows
                .iter()
                .position(|w| w.interval == *interval && w.start_ns == start)
            {
                Some(p) => p,
                None => {
                    self.windows.push(Window {
                        interval: *interval,
                        start_ns: start,
                        services: Groups::default(),
                        overflow: None,
                    });
                    self.windows.len() - 1
                }
            };
            let window = &mut self.windows[w];
            key::set_timestamp(
                &mut buf,
                &service,
                truncate(ev.timestamp_ns, interval.nanos),
            );
            let key = &buf[service.clone()];
            if let Some(group) = window.services.get_mut(key) {
                group.last_seen = self.events;
                self.bytes += add_to_service(group, &buf, &contribution, counters, start, limits);
                continue;
            }
            if counters[SERVICES].try_take(start, limits.max_services) {
                self.bytes += key.len() + ENTRY_OVERHEAD;
            } else if !window.services.is_empty() {
                if window.overflow.is_none() {
                    self.bytes += 4 * Distinct::HEAP_BYTES;
                    window.overflow = Some(Box::default());
                }
                let freed = window.displace_least_recent().unwrap_or(0);
                self.bytes = self.bytes.saturating_sub(freed) + key.len() + ENTRY_OVERHEAD;
            } else {
                let o = window.overflow.get_or_insert_with(|| {
                    self.bytes += 4 * Distinct::HEAP_BYTES;
                    Box::default()
                });
                o.services.insert(&key);
                add_to_overflow_service(o, key, &buf, &contribution);
                continue;
            }
            let group = window.services.entry(Box::from(key)).or_default();
            group.last_seen = self.events;
            self.bytes += add_to_service(group, &buf, &contribution, counters, start, limits);
        }
        self.scratch = buf;
    }

    /// Takes the windows that ended before `cutoff_ns` (all with `None`).
    pub fn harvest(&mut self, cutoff_ns: Option<i64>) -> Vec<Window> {
        if cutoff_ns.is_some_and(|c| self.next_end().is_none_or(|end| end > c)) {
            return Vec::new();
        }
        let (done, keep): (Vec<Window>, Vec<Window>) = std::mem::take(&mut self.windows)
            .into_iter()
            .partition(|w| cutoff_ns.is_none_or(|c| w.start_ns + w.interval.nanos <= c));
        self.windows = keep;
        if self.windows.is_empty() {
            self.bytes = 0;
        } else if !done.is_empty() {
            self.bytes = self.windows.iter().map(Window::heap_bytes).sum();
        }
        done
    }

    /// When the earliest open window ends (ns), if any.
    pub fn next_end(&self) -> Option<i64> {
        self.windows
            .iter()
            .map(|w| w.start_ns + w.interval.nanos)
            .min()
    }

    /// Approximate heap bytes held by this shard's groups.
    pub fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// Groups held (services, transactions, service transactions, destinations).
    pub fn groups(&self) -> usize {
        self.windows.iter().map(Window::groups).sum()
    }
}

impl Window {
    /// Moves the least recently seen service of this window into the
    /// `_other` service, keeping its weight and counting it as one distinct
    /// overflowed service, and returns the heap bytes freed (the `_other`
    /// service is created if missing; callers account for it). `None` when
    /// the window holds no service (the limit was taken by other shards).
    fn displace_least_recent(&mut self) -> Option<usize> {
        let key = self
            .services
            .iter()
            .min_by_key(|(_, g)| g.last_seen)
            .map(|(k, _)| k.clone())?;
        let group = self.services.remove(&key)?;
        let key: &[u8] = &key;
        let mut freed = key.len() + ENTRY_OVERHEAD;
        let o = self.overflow.get_or_insert_with(Box::default);
        o.services.insert(&key);
        for (tk, m) in &group.transactions {
            freed += tk.len() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
            o.transactions.metrics.merge(m);
            o.transactions.groups.insert(&(key, &**tk));
        }
        if let Some(t) = &group.transaction_overflow {
            o.transactions.metrics.merge(&t.metrics);
            o.transactions.groups.merge(&t.groups);
        }
        for (ty, m) in &group.service_transactions {
            freed += ty.len() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
            o.service_transactions.metrics.merge(m);
            o.service_transactions.groups.insert(&(key, &**ty));
        }
        if let Some(t) = &group.service_transaction_overflow {
            o.service_transactions.metrics.merge(&t.metrics);
            o.service_transactions.groups.merge(&t.groups);
        }
        for (dk, m) in &group.destinations {
            freed += dk.len() + ENTRY_OVERHEAD;
            o.destinations.metrics.count += m.count;
            o.destinations.metrics.sum_us += m.sum_us;
            o.destinations.groups.insert(&(key, &**dk));
        }
        if let Some(d) = &group.destination_overflow {
            o.destinations.metrics.count += d.metrics.count;
            o.destinations.metrics.sum_us += d.metrics.sum_us;
            o.destinations.groups.merge(&d.groups);
        }
        Some(freed)
    }

    fn groups(&self) -> usize {
        self.services
            .values()
            .map(|g| 1 + g.transactions.len() + g.service_transactions.len() + g.destinations.len())
            .sum()
    }

    fn heap_bytes(&self) -> usize {
        let o = if self.overflow.is_some() {
            4 * Distinct::HEAP_BYTES
        } else {
            0
        };
        o + self
            .services
            .iter()
            .map(|(k, g)| {
                k.len()
                    + ENTRY_OVERHEAD
                    + g.transactions
                        .iter()
                        .map(|(k, m)| k.len() + m.durations.heap_bytes() + ENTRY_OVERHEAD)
                        .sum::<usize>()
                    + g.service_transactions
                        .iter()
                        .map(|(k, m)| k.len() + m.durations.heap_bytes() + ENTRY_OVERHEAD)
                        .sum::<usize>()
                    + g.destinations
                        .keys()
                        .map(|k| k.len() + ENTRY_OVERHEAD)
                        .sum::<usize>()
            })
            .sum::<usize>()
    }
}

fn add_to_overflow_service(o: &mut OverflowService, key: &[u8], buf: &[u8], c: &Contribution) {
    match c {
        Contribution::None => {}
        Contribution::Transaction {
            key: tk,
            type_,
            outcome,
            micros,
            weight,
            dropped,
        } => {
            o.transactions.metrics.add(*micros, *weight, outcome);
            o.transactions.groups.insert(&(key, &buf[tk.clone()]));
            o.service_transactions
                .metrics
                .add(*micros, *weight, outcome);
            o.service_transactions.groups.insert(&(key, *type_));
            for d in dropped {
                add_to_overflow_service(o, key, buf, d);
            }
        }
        Contribution::Destination {
            key: dk,
            count,
            sum_us,
        } => {
            o.destinations.metrics.count += count;
            o.destinations.metrics.sum_us += sum_us;
            o.destinations.groups.insert(&(key, &buf[dk.clone()]));
        }
    }
}

/// Adds a contribution (keys in `buf`) to a service's groups; returns the heap bytes added.
fn add_to_service(
    g: &mut ServiceGroup,
    buf: &[u8],
    c: &Contribution,
    counters: &[Counter; 4],
    window: i64,
    limits: &Limits,
) -> usize {
    let mut bytes = 0;
    match c {
        Contribution::None => {}
        Contribution::Transaction {
            key,
            type_,
            outcome,
            micros,
            weight,
            dropped,
        } => {
            for d in dropped {
                bytes += add_to_service(g, buf, d, counters, window, limits);
            }
            let key = &buf[key.clone()];
            let len = g.transactions.len();
            match g.transactions.get_mut(key) {
                Some(m) => {
                    let before = m.durations.heap_bytes();
                    m.add(*micros, *weight, outcome);
                    bytes += m.durations.heap_bytes().saturating_sub(before);
                }
                None if len < limits.max_transaction_groups_per_service
                    && counters[TRANSACTIONS].try_take(window, limits.max_transaction_groups) =>
                {
                    let mut m = TransactionMetrics::default();
                    m.add(*micros, *weight, outcome);
                    bytes += key.len() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
                    g.transactions.insert(Box::from(key), m);
                }
                None => {
                    let o = g.transaction_overflow.get_or_insert_with(|| {
                        bytes += Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.metrics.add(*micros, *weight, outcome);
                    o.groups.insert(&key);
                }
            }
            let len = g.service_transactions.len();
            match g.service_transactions.get_mut(*type_) {
                Some(m) => m.add(*micros, *weight, outcome),
                None if len < limits.max_service_transaction_groups_per_service
                    && counters[SERVICE_TRANSACTIONS]
                        .try_take(window, limits.max_service_transaction_groups) =>
                {
                    let mut m = TransactionMetrics::default();
                    m.add(*micros, *weight, outcome);
                    bytes += type_.len() + ENTRY_OVERHEAD;
                    g.service_transactions.insert(Box::from(*type_), m);
                }
                None => {
                    let o = g.service_transaction_overflow.get_or_insert_with(|| {
                        bytes += Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.metrics.add(*micros, *weight, outcome);
                    o.groups.insert(type_);
                }
            }
        }
        Contribution::Destination { key, count, sum_us } => {
            let key = &buf[key.clone()];
            let len = g.destinations.len();
            match g.destinations.get_mut(key) {
                Some(m) => {
                    m.count += count;
                    m.sum_us += sum_us;
                }
                None if len < limits.max_service_destination_groups_per_service
                    && counters[DESTINATIONS]
                        .try_take(window, limits.max_service_destination_groups) =>
                {
                    bytes += key.len() + ENTRY_OVERHEAD;
                    g.destinations.insert(
                        Box::from(key),
                        DestinationMetrics {
                            count: *count,
                            sum_us: *sum_us,
                        },
                    );
                }
                None => {
                    let o = g.destination_overflow.get_or_insert_with(|| {
                        bytes += Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.metrics.count += count;
                    o.metrics.sum_us += sum_us;
                    o.groups.insert(&key);
                }
            }
        }
    }
    bytes
}

/// Merges the windows of several shards that cover the same interval and
/// start, so that documents are written once per group. (Services live in
/// one shard each, so only the `_other` service needs merging.)
pub fn merge_overflow(into: &mut OverflowService, from: &OverflowService) {
    into.services.merge(&from.services);
    into.transactions.metrics.merge(&from.transactions.metrics);
    into.transactions.groups.merge(&from.transactions.groups);
    into.service_transactions
        .metrics
        .merge(&from.service_transactions.metrics);
    into.service_transactions
        .groups
        .merge(&from.service_transactions.groups);
    into.destinations.metrics.count += from.destinations.metrics.count;
    into.destinations.metrics.sum_us += from.destinations.metrics.sum_us;
    into.destinations.groups.merge(&from.destinations.groups);
}

#[cfg(test)]
mod tests;
