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

use crate::model::Event;
use distinct::Distinct;
use histogram::Durations;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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
    pub transactions: HashMap<TransactionKey, TransactionMetrics>,
    pub transaction_overflow: Option<Box<Overflow<TransactionMetrics>>>,
    pub service_transactions: HashMap<String, TransactionMetrics>,
    pub service_transaction_overflow: Option<Box<Overflow<TransactionMetrics>>>,
    pub destinations: HashMap<DestinationKey, DestinationMetrics>,
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
    pub services: HashMap<ServiceKey, ServiceGroup>,
    pub overflow: Option<Box<OverflowService>>,
}

/// The aggregation state of one shard (the services that hash to it).
#[derive(Debug, Default)]
pub struct Shard {
    windows: Vec<Window>,
    bytes: usize,
    /// Events added so far; orders services by when they were last seen.
    events: u64,
}

/// The shard a service's events aggregate in.
pub fn shard_of(service_name: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    service_name.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

fn strings_bytes<'a>(it: impl IntoIterator<Item = &'a String>) -> usize {
    it.into_iter().map(String::capacity).sum()
}

/// Rough heap cost of one map entry beyond its strings.
const ENTRY_OVERHEAD: usize = 96;

impl ServiceKey {
    fn heap_bytes(&self) -> usize {
        strings_bytes([
            &self.name,
            &self.environment,
            &self.language_name,
            &self.agent_name,
        ]) + self
            .labels
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 48)
            .sum::<usize>()
            + self
                .numeric_labels
                .iter()
                .map(|(k, _)| k.capacity() + 32)
                .sum::<usize>()
    }
}

impl TransactionKey {
    fn heap_bytes(&self) -> usize {
        strings_bytes([
            &self.name,
            &self.type_,
            &self.result,
            &self.outcome,
            &self.service_version,
            &self.service_node_name,
            &self.host_hostname,
            &self.host_name,
            &self.container_id,
            &self.kubernetes_pod_name,
        ]) + std::mem::size_of::<Self>()
    }
}

fn truncate(ns: i64, interval: i64) -> i64 {
    ns - ns.rem_euclid(interval)
}

fn service_key(
    ev: &Event,
    global_labels: Option<&crate::model::event::Labels>,
    ts: i64,
) -> ServiceKey {
    let (labels, numeric_labels) = match global_labels {
        Some(l) if !ev.rum => (
            l.strings.clone(),
            l.numbers
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    ServiceKey {
        timestamp_ns: ts,
        name: ev.service.name.clone(),
        environment: ev.service.environment.clone(),
        language_name: ev.service.language.name.clone(),
        agent_name: ev.agent.name.clone(),
        labels,
        numeric_labels,
    }
}

fn transaction_key(ev: &Event, t: &crate::model::event::Transaction) -> TransactionKey {
    let sh = &ev.shared;
    let s = &ev.service;
    let c = &sh.cloud;
    let faas = ev.faas.as_deref();
    let f =
        |get: fn(&crate::model::event::Faas) -> &String| faas.map(get).cloned().unwrap_or_default();
    TransactionKey {
        root: ev.parent_id.is_empty(),
        name: t.name.clone(),
        type_: t.type_.clone(),
        result: t.result.clone(),
        outcome: t.outcome.clone(),
        service_version: s.version.clone(),
        service_node_name: s.node_name.clone(),
        service_runtime_name: s.runtime.name.clone(),
        service_runtime_version: s.runtime.version.clone(),
        service_language_version: s.language.version.clone(),
        host_hostname: sh.host_hostname.clone(),
        host_name: sh.host_name.clone(),
        host_os_platform: sh.host_os_platform.clone(),
        container_id: sh.container_id.clone(),
        kubernetes_pod_name: sh.k8s_pod_name.clone(),
        cloud_provider: c.provider.clone(),
        cloud_region: c.region.clone(),
        cloud_availability_zone: c.availability_zone.clone(),
        cloud_service_name: c.service_name.clone(),
        cloud_account_id: c.account_id.clone(),
        cloud_account_name: c.account_name.clone(),
        cloud_machine_type: c.machine_type.clone(),
        cloud_project_id: c.project_id.clone(),
        cloud_project_name: c.project_name.clone(),
        faas_coldstart: faas.and_then(|f| f.coldstart),
        faas_id: f(|f| &f.id),
        faas_name: f(|f| &f.name),
        faas_version: f(|f| &f.version),
        faas_trigger_type: f(|f| &f.trigger_type),
    }
}

/// What one event contributes, computed once for all intervals.
enum Contribution {
    None,
    Transaction {
        key: Box<TransactionKey>,
        micros: u64,
        weight: f64,
        /// The transaction's dropped exit spans, one destination contribution each.
        dropped: Vec<Contribution>,
    },
    Destination {
        key: DestinationKey,
        count: f64,
        sum_us: f64,
    },
}

fn contribution(ev: &Event) -> Contribution {
    use crate::model::event::Body;
    match &ev.body {
        Body::Transaction(t) => {
            let weight = t.representative_count.unwrap_or(1.0);
            Contribution::Transaction {
                key: Box::new(transaction_key(ev, t)),
                micros: (t.duration_ns.max(0) / 1000) as u64,
                weight,
                dropped: t
                    .dropped_spans_stats
                    .iter()
                    .filter(|d| !d.destination_service_resource.is_empty())
                    .map(|d| Contribution::Destination {
                        key: DestinationKey {
                            span_name: String::new(),
                            outcome: d.outcome.clone(),
                            target_type: d.service_target_type.clone(),
                            target_name: d.service_target_name.clone(),
                            resource: d.destination_service_resource.clone(),
                        },
                        count: d.count as f64 * weight,
                        sum_us: d.sum_us as f64 * weight,
                    })
                    .collect(),
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
            let (target_type, target_name) = ev.service.target.clone().unwrap_or_default();
            Contribution::Destination {
                key: DestinationKey {
                    span_name: s.name.clone(),
                    outcome: s.outcome.clone(),
                    target_type,
                    target_name,
                    resource: resource.clone(),
                },
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
        let contribution = contribution(ev);
        self.events += 1;
        let global_labels = metadata.map(|m| &*m.inner.labels);
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
                        services: HashMap::new(),
                        overflow: None,
                    });
                    self.windows.len() - 1
                }
            };
            let window = &mut self.windows[w];
            let key = service_key(ev, global_labels, truncate(ev.timestamp_ns, interval.nanos));
            if !window.services.contains_key(&key) {
                if counters[SERVICES].try_take(start, limits.max_services) {
                    self.bytes += key.heap_bytes() + ENTRY_OVERHEAD;
                    window.services.insert(key.clone(), ServiceGroup::default());
                } else if !window.services.is_empty() {
                    if window.overflow.is_none() {
                        self.bytes += 4 * Distinct::HEAP_BYTES;
                        window.overflow = Some(Box::default());
                    }
                    let freed = window.displace_least_recent().unwrap_or(0);
                    self.bytes =
                        self.bytes.saturating_sub(freed) + key.heap_bytes() + ENTRY_OVERHEAD;
                    window.services.insert(key.clone(), ServiceGroup::default());
                } else {
                    let o = window.overflow.get_or_insert_with(|| {
                        self.bytes += 4 * Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.services.insert(&key);
                    add_to_overflow_service(o, &key, &contribution);
                    continue;
                }
            }
            let Some(group) = window.services.get_mut(&key) else {
                continue;
            };
            group.last_seen = self.events;
            self.bytes += add_to_service(group, &contribution, counters, start, limits);
        }
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
        let mut freed = key.heap_bytes() + ENTRY_OVERHEAD;
        let o = self.overflow.get_or_insert_with(Box::default);
        o.services.insert(&key);
        for (tk, m) in &group.transactions {
            freed += tk.heap_bytes() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
            o.transactions.metrics.merge(m);
            o.transactions.groups.insert(&(&key, tk));
        }
        if let Some(t) = &group.transaction_overflow {
            o.transactions.metrics.merge(&t.metrics);
            o.transactions.groups.merge(&t.groups);
        }
        for (ty, m) in &group.service_transactions {
            freed += ty.capacity() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
            o.service_transactions.metrics.merge(m);
            o.service_transactions.groups.insert(&(&key, ty));
        }
        if let Some(t) = &group.service_transaction_overflow {
            o.service_transactions.metrics.merge(&t.metrics);
            o.service_transactions.groups.merge(&t.groups);
        }
        for (dk, m) in &group.destinations {
            freed += ENTRY_OVERHEAD + std::mem::size_of::<DestinationKey>();
            o.destinations.metrics.count += m.count;
            o.destinations.metrics.sum_us += m.sum_us;
            o.destinations.groups.insert(&(&key, dk));
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
                k.heap_bytes()
                    + ENTRY_OVERHEAD
                    + g.transactions
                        .iter()
                        .map(|(k, m)| k.heap_bytes() + m.durations.heap_bytes() + ENTRY_OVERHEAD)
                        .sum::<usize>()
                    + g.service_transactions
                        .iter()
                        .map(|(k, m)| k.capacity() + m.durations.heap_bytes() + ENTRY_OVERHEAD)
                        .sum::<usize>()
                    + g.destinations.len()
                        * (ENTRY_OVERHEAD + std::mem::size_of::<DestinationKey>())
            })
            .sum::<usize>()
    }
}

fn add_to_overflow_service(o: &mut OverflowService, key: &ServiceKey, c: &Contribution) {
    match c {
        Contribution::None => {}
        Contribution::Transaction {
            key: tk,
            micros,
            weight,
            dropped,
        } => {
            o.transactions.metrics.add(*micros, *weight, &tk.outcome);
            o.transactions.groups.insert(&(key, &**tk));
            o.service_transactions
                .metrics
                .add(*micros, *weight, &tk.outcome);
            o.service_transactions.groups.insert(&(key, &tk.type_));
            for d in dropped {
                add_to_overflow_service(o, key, d);
            }
        }
        Contribution::Destination {
            key: dk,
            count,
            sum_us,
        } => {
            o.destinations.metrics.count += count;
            o.destinations.metrics.sum_us += sum_us;
            o.destinations.groups.insert(&(key, dk));
        }
    }
}

/// Adds a contribution to a service's groups; returns the heap bytes added.
fn add_to_service(
    g: &mut ServiceGroup,
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
            micros,
            weight,
            dropped,
        } => {
            for d in dropped {
                bytes += add_to_service(g, d, counters, window, limits);
            }
            let before = g.transactions.get(key).map(|m| m.durations.heap_bytes());
            match before {
                Some(b) => {
                    if let Some(m) = g.transactions.get_mut(key) {
                        m.add(*micros, *weight, &key.outcome);
                        bytes += m.durations.heap_bytes().saturating_sub(b);
                    }
                }
                None if g.transactions.len() < limits.max_transaction_groups_per_service
                    && counters[TRANSACTIONS].try_take(window, limits.max_transaction_groups) =>
                {
                    let mut m = TransactionMetrics::default();
                    m.add(*micros, *weight, &key.outcome);
                    bytes += key.heap_bytes() + m.durations.heap_bytes() + ENTRY_OVERHEAD;
                    g.transactions.insert((**key).clone(), m);
                }
                None => {
                    let o = g.transaction_overflow.get_or_insert_with(|| {
                        bytes += Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.metrics.add(*micros, *weight, &key.outcome);
                    o.groups.insert(&**key);
                }
            }
            let ty = &key.type_;
            let len = g.service_transactions.len();
            match g.service_transactions.get_mut(ty) {
                Some(m) => m.add(*micros, *weight, &key.outcome),
                None if len < limits.max_service_transaction_groups_per_service
                    && counters[SERVICE_TRANSACTIONS]
                        .try_take(window, limits.max_service_transaction_groups) =>
                {
                    let mut m = TransactionMetrics::default();
                    m.add(*micros, *weight, &key.outcome);
                    bytes += ty.capacity() + ENTRY_OVERHEAD;
                    g.service_transactions.insert(ty.clone(), m);
                }
                None => {
                    let o = g.service_transaction_overflow.get_or_insert_with(|| {
                        bytes += Distinct::HEAP_BYTES;
                        Box::default()
                    });
                    o.metrics.add(*micros, *weight, &key.outcome);
                    o.groups.insert(ty);
                }
            }
        }
        Contribution::Destination { key, count, sum_us } => {
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
                    bytes += ENTRY_OVERHEAD + std::mem::size_of::<DestinationKey>();
                    g.destinations.insert(
                        key.clone(),
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
                    o.groups.insert(key);
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
