//! Decoded intake events (see docs/intake.md for the fields and rules).
//!
//! Plain Rust structs, shared by the v2 and v3 decoders and read by the
//! encoder; fields whose values repeat across events (frames, headers, span
//! and transaction names…) are [`SharedStr`]s from the decoder's cache
//! (`model/shared.rs`), the rest owned `String`s. Invariants: an empty
//! string means "absent" (the encoder omits it) unless a field is
//! documented as always written; metadata-derived parts
//! (`shared`, `service`, `agent`, `user`, `labels`) are `Arc`s shared by all
//! events of one request and copied on write by event-level overrides.

pub(crate) use super::shared::SharedStr;
use super::RequestBase;
use std::net::IpAddr;
use std::sync::Arc;

/// A decoded metadata line plus its request base; shared by all events of a request.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub(crate) inner: Arc<MetaInner>,
}

/// Everything a metadata line contributes, plus the request base.
#[derive(Debug, Default)]
pub(crate) struct MetaInner {
    pub(crate) base: RequestBase,
    pub(crate) shared: Arc<Shared>,
    pub(crate) service: Arc<Service>,
    pub(crate) agent: Arc<Agent>,
    pub(crate) user: Arc<User>,
    pub(crate) labels: Arc<Labels>,
    pub(crate) client: Client,
}

impl Metadata {
    /// The per-request facts this metadata was decoded with.
    pub fn base(&self) -> &RequestBase {
        &self.inner.base
    }
    /// `service.name` of the metadata line.
    pub fn service_name(&self) -> &str {
        &self.inner.service.name
    }
    /// `agent.name` of the metadata line.
    pub fn agent_name(&self) -> &str {
        &self.inner.agent.name
    }
}

/// Metadata parts no event can override (host names fixed up as in
/// docs/intake.md, Metadata).
#[derive(Debug, Default, Clone)]
pub(crate) struct Shared {
    pub(crate) host_hostname: String,
    pub(crate) host_name: String,
    pub(crate) host_id: String,
    pub(crate) host_architecture: String,
    pub(crate) host_os_platform: String,
    /// `host.ip` (backend requests only).
    pub(crate) host_ip: Option<IpAddr>,
    pub(crate) process_pid: Option<i64>,
    pub(crate) process_ppid: Option<i64>,
    pub(crate) process_title: String,
    pub(crate) process_args: Vec<String>,
    pub(crate) container_id: String,
    pub(crate) k8s_namespace: String,
    pub(crate) k8s_node_name: String,
    pub(crate) k8s_pod_name: String,
    pub(crate) k8s_pod_uid: String,
    pub(crate) cloud: Cloud,
    pub(crate) network_connection_type: String,
    /// Encoded JSON fragment of these fields (filled on first encode; the
    /// struct is immutable once shared).
    pub(crate) encoded: std::sync::OnceLock<Vec<u8>>,
}

/// `cloud.*` from metadata.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cloud {
    pub(crate) account_id: String,
    pub(crate) account_name: String,
    pub(crate) availability_zone: String,
    pub(crate) instance_id: String,
    pub(crate) instance_name: String,
    pub(crate) machine_type: String,
    pub(crate) project_id: String,
    pub(crate) project_name: String,
    pub(crate) provider: String,
    pub(crate) region: String,
    pub(crate) service_name: String,
}

/// A name/version pair (`service.language`, `.runtime`, `.framework`).
#[derive(Debug, Default, Clone)]
pub(crate) struct NameVersion {
    pub(crate) name: String,
    pub(crate) version: String,
}

/// `service.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) environment: String,
    pub(crate) node_name: String,
    pub(crate) language: NameVersion,
    pub(crate) runtime: NameVersion,
    pub(crate) framework: NameVersion,
    pub(crate) origin_id: String,
    pub(crate) origin_name: String,
    pub(crate) origin_version: String,
    /// Encoded `"service":{…}` (filled on first encode; reset by [`Service::make_mut`]).
    pub(crate) encoded: std::sync::OnceLock<Vec<u8>>,
}

impl Service {
    /// Copy-on-write access that also drops the cached encoding.
    pub(crate) fn make_mut(s: &mut Arc<Service>) -> &mut Service {
        let m = Arc::make_mut(s);
        m.encoded = std::sync::OnceLock::new();
        m
    }
}

/// `agent.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) ephemeral_id: String,
    pub(crate) activation_method: String,
    /// Encoded `"agent":{…}` (filled on first encode; reset by [`Agent::make_mut`]).
    pub(crate) encoded: std::sync::OnceLock<Vec<u8>>,
}

impl Agent {
    /// Copy-on-write access that also drops the cached encoding.
    pub(crate) fn make_mut(a: &mut Arc<Agent>) -> &mut Agent {
        let m = Arc::make_mut(a);
        m.encoded = std::sync::OnceLock::new();
        m
    }
}

/// `user.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) domain: String,
}

/// `labels.*` (strings) and `numeric_labels.*` (numbers). Keys are raw;
/// the encoder sanitises them. A later value for a key replaces the earlier
/// one in place; past [`LABEL_INDEX_FROM`] keys a hash index finds them, so
/// an event with 100,000 labels costs linear, not quadratic, time.
#[derive(Debug, Default, Clone)]
pub(crate) struct Labels {
    pub(crate) strings: Vec<(SharedStr, String)>,
    pub(crate) numbers: Vec<(SharedStr, f64)>,
    /// Array-valued labels (OTLP attributes); few per event, so scanned.
    pub(crate) string_lists: Vec<(SharedStr, Vec<String>)>,
    pub(crate) number_lists: Vec<(SharedStr, Vec<f64>)>,
    index: Option<Box<LabelIndex>>,
}

/// Labels on an event before its keys are indexed (a linear scan is faster below).
pub(crate) const LABEL_INDEX_FROM: usize = 32;

#[derive(Debug, Default, Clone)]
struct LabelIndex {
    strings: std::collections::HashMap<SharedStr, usize>,
    numbers: std::collections::HashMap<SharedStr, usize>,
}

/// Sets `k` to `v` in `list`: in place when `k` is there, else appended.
/// With an `index` (built on first use from `list`) the lookup is a hash
/// probe instead of a scan.
fn upsert<T>(
    list: &mut Vec<(SharedStr, T)>,
    index: Option<&mut std::collections::HashMap<SharedStr, usize>>,
    k: &str,
    v: T,
) {
    let Some(ix) = index else {
        match list.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v,
            None => list.push((SharedStr::intern(k), v)),
        }
        return;
    };
    if ix.is_empty() && !list.is_empty() {
        ix.extend(
            list.iter()
                .enumerate()
                .map(|(i, (key, _))| (key.clone(), i)),
        );
    }
    match ix
        .get(k)
        .copied()
        .filter(|&i| list.get(i).is_some_and(|(key, _)| key == k))
    {
        Some(i) => list[i].1 = v,
        None => {
            let key = SharedStr::intern(k);
            ix.insert(key.clone(), list.len());
            list.push((key, v));
        }
    }
}

impl Labels {
    pub(crate) fn is_empty(&self) -> bool {
        self.strings.is_empty()
            && self.numbers.is_empty()
            && self.string_lists.is_empty()
            && self.number_lists.is_empty()
    }
    /// Sets an array-valued string label (replacing a list of the same key).
    pub(crate) fn set_string_list(&mut self, k: &str, v: Vec<String>) {
        upsert(&mut self.string_lists, None, k, v);
    }
    /// Sets an array-valued numeric label (replacing a list of the same key).
    pub(crate) fn set_number_list(&mut self, k: &str, v: Vec<f64>) {
        upsert(&mut self.number_lists, None, k, v);
    }
    fn ensure_index(&mut self) {
        if self.index.is_none() && self.strings.len().max(self.numbers.len()) >= LABEL_INDEX_FROM {
            self.index = Some(Box::default());
        }
    }
    pub(crate) fn set_string(&mut self, k: &str, v: String) {
        self.ensure_index();
        upsert(
            &mut self.strings,
            self.index.as_deref_mut().map(|i| &mut i.strings),
            k,
            v,
        );
    }
    pub(crate) fn set_number(&mut self, k: &str, v: f64) {
        self.ensure_index();
        upsert(
            &mut self.numbers,
            self.index.as_deref_mut().map(|i| &mut i.numbers),
            k,
            v,
        );
    }
}

/// Client/source/user-agent facts from the request and the event context.
#[derive(Debug, Default, Clone)]
pub(crate) struct Client {
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) client_port: Option<u16>,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) source_port: Option<u16>,
    pub(crate) nat_ip: Option<IpAddr>,
    pub(crate) user_agent: String,
}

/// A generic JSON value kept for opaque objects (`custom`, `vars`, bodies…).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// HTTP headers: canonical name → values. Names and values are
/// [`SharedStr`]s (requests repeat them); one value is stored inline.
pub(crate) type Headers = Vec<(SharedStr, HeaderValues)>;

/// The values of one header.
pub(crate) type HeaderValues = smallvec::SmallVec<[SharedStr; 1]>;

/// `http.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Http {
    pub(crate) version: SharedStr,
    pub(crate) request_method: SharedStr,
    pub(crate) request_id: String,
    pub(crate) request_referrer: String,
    pub(crate) request_headers: Headers,
    pub(crate) request_cookies: Option<Json>,
    pub(crate) request_env: Option<Json>,
    pub(crate) request_body: Option<Json>,
    pub(crate) response_status_code: Option<i64>,
    pub(crate) response_headers: Headers,
    pub(crate) response_finished: Option<bool>,
    pub(crate) response_headers_sent: Option<bool>,
    pub(crate) response_transfer_size: Option<i64>,
    pub(crate) response_encoded_body_size: Option<i64>,
    pub(crate) response_decoded_body_size: Option<i64>,
}

/// `url.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Url {
    pub(crate) original: String,
    pub(crate) full: String,
    pub(crate) domain: SharedStr,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) fragment: String,
    pub(crate) scheme: SharedStr,
    pub(crate) port: Option<i64>,
}

/// `faas.*`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faas {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) execution: String,
    pub(crate) coldstart: Option<bool>,
    pub(crate) trigger_type: String,
    pub(crate) trigger_request_id: String,
}

/// `span.links[]` / `transaction` links: (trace id, span id).
pub(crate) type Link = (String, String);

/// Messaging context (`transaction.message` / `span.message`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Message {
    pub(crate) queue_name: String,
    pub(crate) age_ms: Option<i64>,
    pub(crate) body: String,
    pub(crate) routing_key: String,
    pub(crate) headers: Headers,
}

/// Original frame values kept by source mapping.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameOriginal {
    pub(crate) abs_path: SharedStr,
    pub(crate) filename: SharedStr,
    pub(crate) classname: SharedStr,
    pub(crate) function: SharedStr,
    pub(crate) lineno: Option<i64>,
    pub(crate) colno: Option<i64>,
    pub(crate) library_frame: Option<bool>,
}

/// One stack frame. The source-map stage edits these in place. Names and
/// paths are shared strings (`SharedStr`): frames repeat, so decoders share them.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    pub(crate) filename: SharedStr,
    pub(crate) abs_path: SharedStr,
    pub(crate) classname: SharedStr,
    pub(crate) module: SharedStr,
    pub(crate) function: SharedStr,
    pub(crate) lineno: Option<i64>,
    pub(crate) colno: Option<i64>,
    pub(crate) context_line: SharedStr,
    pub(crate) pre_context: Vec<SharedStr>,
    pub(crate) post_context: Vec<SharedStr>,
    pub(crate) vars: Option<Json>,
    pub(crate) library_frame: bool,
    pub(crate) exclude_from_grouping: bool,
    pub(crate) sourcemap_updated: bool,
    pub(crate) sourcemap_error: String,
    pub(crate) original: Option<Box<FrameOriginal>>,
}

/// Transaction data.
#[derive(Debug, Default, Clone)]
pub(crate) struct Transaction {
    pub(crate) id: String,
    pub(crate) name: SharedStr,
    pub(crate) type_: SharedStr,
    pub(crate) result: SharedStr,
    pub(crate) outcome: SharedStr,
    pub(crate) duration_ns: i64,
    pub(crate) sampled: bool,
    pub(crate) representative_count: Option<f64>,
    pub(crate) span_count_started: Option<i64>,
    pub(crate) span_count_dropped: Option<i64>,
    /// Exit spans the agent dropped, summed per destination; only
    /// server-side aggregation reads them (documents do not carry them).
    pub(crate) dropped_spans_stats: Vec<DroppedSpanStats>,
    pub(crate) marks: Vec<(String, Vec<(String, f64)>)>,
    pub(crate) experience: Option<Experience>,
    pub(crate) session_id: String,
    pub(crate) session_sequence: i64,
    pub(crate) custom: Option<Json>,
    pub(crate) message: Option<Message>,
    pub(crate) links: Vec<Link>,
    pub(crate) cloud_origin: Option<[String; 4]>,
    pub(crate) profiler_stack_trace_ids: Vec<String>,
    pub(crate) span_kind: String,
    /// v2 repeats the id as `span.id`; v3 does not.
    pub(crate) span_id_from_id: bool,
}

/// One `transaction.dropped_spans_stats` entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct DroppedSpanStats {
    pub(crate) destination_service_resource: String,
    pub(crate) service_target_type: String,
    pub(crate) service_target_name: String,
    pub(crate) outcome: String,
    pub(crate) count: i64,
    pub(crate) sum_us: i64,
}

/// `transaction.experience`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Experience {
    pub(crate) cls: Option<f64>,
    pub(crate) fid: Option<f64>,
    pub(crate) tbt: Option<f64>,
    pub(crate) longtask: Option<(f64, f64, f64)>,
}

/// `span.composite`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Composite {
    pub(crate) strategy: String,
    pub(crate) count: i64,
    pub(crate) sum_us: i64,
}

/// Span data.
#[derive(Debug, Default, Clone)]
pub(crate) struct Span {
    pub(crate) id: String,
    pub(crate) transaction_id: String,
    pub(crate) name: SharedStr,
    pub(crate) type_: SharedStr,
    pub(crate) subtype: SharedStr,
    pub(crate) action: SharedStr,
    pub(crate) duration_ns: i64,
    pub(crate) outcome: SharedStr,
    pub(crate) sync: Option<bool>,
    pub(crate) representative_count: Option<f64>,
    pub(crate) child_ids: Vec<String>,
    pub(crate) composite: Option<Composite>,
    pub(crate) stacktrace: Vec<Frame>,
    pub(crate) links: Vec<Link>,
    pub(crate) db_instance: String,
    pub(crate) db_statement: String,
    pub(crate) db_type: SharedStr,
    pub(crate) db_user: String,
    pub(crate) db_link: String,
    pub(crate) db_rows_affected: Option<i64>,
    pub(crate) destination_address: SharedStr,
    pub(crate) destination_port: Option<i64>,
    /// (type, name, resource)
    pub(crate) destination_service: Option<(SharedStr, SharedStr, SharedStr)>,
    pub(crate) message: Option<Message>,
    pub(crate) span_kind: String,
}

/// One element of the flattened `error.exception` array (causes
/// follow their exception depth first, with `parent` pointing back).
#[derive(Debug, Default, Clone)]
pub(crate) struct Exception {
    pub(crate) message: String,
    pub(crate) type_: String,
    pub(crate) module: String,
    pub(crate) code: String,
    pub(crate) handled: Option<bool>,
    pub(crate) attributes: Option<Json>,
    pub(crate) stacktrace: Vec<Frame>,
    /// Index of the parent in the flat array (None for the root).
    pub(crate) parent: Option<usize>,
}

/// `error.log`.
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorLog {
    pub(crate) message: String,
    pub(crate) level: String,
    pub(crate) logger_name: String,
    pub(crate) param_message: String,
    pub(crate) stacktrace: Vec<Frame>,
}

/// Error data.
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorEvent {
    pub(crate) id: String,
    pub(crate) culprit: String,
    pub(crate) exceptions: Vec<Exception>,
    pub(crate) log: Option<ErrorLog>,
    pub(crate) custom: Option<Json>,
    pub(crate) transaction_id: String,
    /// v2 repeats `transaction_id` as `span.id`.
    pub(crate) span_id: String,
    pub(crate) transaction_name: String,
    pub(crate) transaction_type: String,
    pub(crate) transaction_sampled: Option<bool>,
    pub(crate) grouping_key: String,
    pub(crate) message: String,
    /// `error.stack_trace`: a stack trace kept as text (OTLP exceptions).
    pub(crate) stack_trace: String,
}

/// One metricset sample.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) type_: String,
    pub(crate) unit: String,
    pub(crate) value: f64,
    pub(crate) values: Vec<f64>,
    pub(crate) counts: Vec<i64>,
    /// A summary's `(value_count, sum)` (OTLP summaries).
    pub(crate) summary: Option<(u64, f64)>,
}

/// Metricset data.
#[derive(Debug, Default, Clone)]
pub(crate) struct Metricset {
    pub(crate) name: String,
    pub(crate) samples: Vec<Sample>,
    pub(crate) transaction_name: String,
    pub(crate) transaction_type: String,
    pub(crate) span_type: String,
    pub(crate) span_subtype: String,
    pub(crate) self_time_count: Option<i64>,
    pub(crate) self_time_sum_us: Option<i64>,
    /// Has a transaction or span ref (routes to `apm.internal`).
    pub(crate) has_refs: bool,
}

/// Log data.
#[derive(Debug, Default, Clone)]
pub(crate) struct LogEvent {
    pub(crate) message: String,
    pub(crate) level: String,
    pub(crate) logger: String,
    pub(crate) origin_function: String,
    pub(crate) origin_file_name: String,
    pub(crate) origin_file_line: Option<i64>,
    pub(crate) thread_name: String,
    pub(crate) event_dataset: String,
    pub(crate) error_type: String,
    pub(crate) error_message: String,
    pub(crate) error_stack_trace: String,
    pub(crate) transaction_id: String,
    pub(crate) span_id: String,
    /// An OTLP log record: `event.severity` is its severity number and no
    /// `event.kind` is written (apm-data sets it only for span events).
    pub(crate) otlp_severity: Option<i64>,
}

impl LogEvent {
    /// A log carrying error fields is indexed as an error (an apm-server oddity kept as is).
    pub(crate) fn is_error(&self) -> bool {
        !(self.error_type.is_empty()
            && self.error_message.is_empty()
            && self.error_stack_trace.is_empty())
    }
}

/// The kind-specific part of an event.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Transaction(Box<Transaction>),
    Span(Box<Span>),
    Error(Box<ErrorEvent>),
    Metricset(Box<Metricset>),
    Log(Box<LogEvent>),
}

/// One decoded event.
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) rum: bool,
    pub(crate) timestamp_ns: i64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) service: Arc<Service>,
    pub(crate) agent: Arc<Agent>,
    pub(crate) user: Arc<User>,
    pub(crate) labels: Arc<Labels>,
    pub(crate) client: Client,
    /// `service.target` (type, name); the type is always written once a
    /// target exists. Kept on the event, not in [`Service`], so a span that
    /// names its target does not copy the metadata's service (and its
    /// encoded fragment).
    pub(crate) service_target: Option<(SharedStr, SharedStr)>,
    pub(crate) trace_id: String,
    pub(crate) parent_id: String,
    pub(crate) http: Option<Box<Http>>,
    pub(crate) url: Option<Box<Url>>,
    pub(crate) faas: Option<Box<Faas>>,
    pub(crate) body: Body,
}

/// RUM agents (their events go to the RUM data streams).
pub(crate) fn is_rum_agent_name(name: &str) -> bool {
    matches!(name, "rum-js" | "js-base" | "iOS/swift")
}

impl Event {
    /// A fresh event for `meta` with the given body, timestamp = request time.
    pub(crate) fn new(meta: &Metadata, body: Body) -> Event {
        let m = &meta.inner;
        Event {
            rum: m.base.rum,
            timestamp_ns: m.base.received_ns,
            shared: m.shared.clone(),
            service: m.service.clone(),
            agent: m.agent.clone(),
            user: m.user.clone(),
            labels: m.labels.clone(),
            client: m.client.clone(),
            service_target: None,
            trace_id: String::new(),
            parent_id: String::new(),
            http: None,
            url: None,
            faas: None,
            body,
        }
    }

    /// Final `agent.name` (after event-level overrides).
    pub fn agent_name(&self) -> &str {
        &self.agent.name
    }
    /// Final `service.name` (after event-level overrides).
    pub fn service_name(&self) -> &str {
        &self.service.name
    }
    /// Final `service.version` (source-map lookup key).
    pub fn service_version(&self) -> &str {
        &self.service.version
    }
    /// Agent is a RUM agent (`rum-js`, `js-base`, `iOS/swift`).
    pub fn is_rum_agent(&self) -> bool {
        is_rum_agent_name(&self.agent.name)
    }
    /// The event came in on a RUM endpoint.
    pub fn from_rum_endpoint(&self) -> bool {
        self.rum
    }
    /// Document kind name: `transaction`, `span`, `error`, `metric` or `log`.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Transaction(_) => "transaction",
            Body::Span(_) => "span",
            Body::Error(_) => "error",
            Body::Metricset(_) => "metric",
            Body::Log(l) if l.is_error() => "error",
            Body::Log(_) => "log",
        }
    }
    /// True for spans and for errors that carry a `span.id` (a v2 error with
    /// `transaction_id`): the RUM library-frame and exclude-from-grouping
    /// processors treat those as spans and skip error frames (an apm-server oddity kept as is).
    pub fn has_span_part(&self) -> bool {
        match &self.body {
            Body::Span(_) => true,
            Body::Error(e) => !e.span_id.is_empty(),
            _ => false,
        }
    }

    /// Whether the event has a stack frame (what source mapping rewrites).
    pub fn has_frames(&self) -> bool {
        match &self.body {
            Body::Span(s) => !s.stacktrace.is_empty(),
            Body::Error(e) => {
                e.log.as_ref().is_some_and(|l| !l.stacktrace.is_empty())
                    || e.exceptions.iter().any(|x| !x.stacktrace.is_empty())
            }
            _ => false,
        }
    }

    /// Mutable access to every stack trace of the event, for source mapping
    /// and RUM frame marking: a span's `stacktrace`; an error's
    /// `log.stacktrace` first, then each exception's stacktrace in flat
    /// (tree pre-)order. Other kinds have none.
    pub fn stacktraces_mut(&mut self) -> Vec<&mut Vec<Frame>> {
        match &mut self.body {
            Body::Span(s) => vec![&mut s.stacktrace],
            Body::Error(e) => {
                let mut v: Vec<&mut Vec<Frame>> = Vec::new();
                if let Some(l) = e.log.as_mut() {
                    v.push(&mut l.stacktrace);
                }
                for ex in e.exceptions.iter_mut() {
                    v.push(&mut ex.stacktrace);
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Recomputes `error.culprit` from source-mapped frames: the
    /// first source-mapped, non-library frame of `log.stacktrace`, then of
    /// the exception stack traces. No-op for non-errors or when none matches.
    pub fn update_culprit(&mut self) {
        if let Body::Error(e) = &mut self.body {
            let mut frames = e
                .log
                .iter()
                .flat_map(|l| l.stacktrace.iter())
                .chain(e.exceptions.iter().flat_map(|x| x.stacktrace.iter()));
            if let Some(f) = frames.find(|f| f.sourcemap_updated && !f.library_frame) {
                let mut c = if f.filename.is_empty() {
                    f.classname.to_string()
                } else {
                    f.filename.to_string()
                };
                if !f.function.is_empty() {
                    c.push_str(" in ");
                    c.push_str(&f.function);
                }
                e.culprit = c;
            }
        }
    }

    /// RUM frame post-processing (after source mapping): library-frame marking
    /// (keeping the agent's value in `original.library_frame`) and
    /// exclude-from-grouping marking, then the grouping key is recomputed.
    /// Call it for events from RUM endpoints after source mapping (if any)
    /// and before [`Self::update_culprit`]-independent encoding. Events with
    /// a span part (spans, and v2 errors with `transaction_id`) only have
    /// their span frames processed (upstream oddity).
    pub fn apply_rum_frame_rules(&mut self, rules: &RumFrameRules) {
        let span_part = self.has_span_part();
        let stacks: Vec<&mut Vec<Frame>> = if span_part {
            match &mut self.body {
                Body::Span(s) => vec![&mut s.stacktrace],
                _ => Vec::new(),
            }
        } else {
            self.stacktraces_mut()
        };
        for st in stacks {
            for f in st.iter_mut() {
                if let Some(lib) = &rules.library {
                    let m = (!f.filename.is_empty() && lib.is_match(&f.filename))
                        || (!f.abs_path.is_empty() && lib.is_match(&f.abs_path));
                    f.mark_library_frame(m);
                }
                if let Some(ex) = &rules.exclude {
                    f.exclude_from_grouping = !f.filename.is_empty() && ex.is_match(&f.filename);
                }
            }
        }
        self.update_grouping_key();
    }

    /// Recomputes `error.grouping_key` after frames changed.
    pub fn update_grouping_key(&mut self) {
        if let Body::Error(e) = &mut self.body {
            e.grouping_key = super::grouping::grouping_key(e);
        }
    }
}

/// Compiled `apm-server.rum.library_pattern` and
/// `apm-server.rum.exclude_from_grouping` ; an empty pattern disables
/// its step.
#[derive(Debug, Clone, Default)]
pub struct RumFrameRules {
    library: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

impl RumFrameRules {
    /// Compiles both patterns (defaults: `node_modules|bower_components|~`, `^/webpack`).
    pub fn new(library_pattern: &str, exclude_pattern: &str) -> Result<Self, regex::Error> {
        let c = |p: &str| {
            if p.is_empty() {
                Ok(None)
            } else {
                regex::Regex::new(p).map(Some)
            }
        };
        Ok(RumFrameRules {
            library: c(library_pattern)?,
            exclude: c(exclude_pattern)?,
        })
    }
}

impl Frame {
    pub fn filename(&self) -> &str {
        &self.filename
    }
    pub fn abs_path(&self) -> &str {
        &self.abs_path
    }
    pub fn function(&self) -> &str {
        &self.function
    }
    pub fn lineno(&self) -> Option<i64> {
        self.lineno
    }
    pub fn colno(&self) -> Option<i64> {
        self.colno
    }
    pub fn library_frame(&self) -> bool {
        self.library_frame
    }
    /// Sets `library_frame`, keeping the agent's value as `original.library_frame`.
    /// Idempotent: the agent's value is kept from the first call.
    pub fn mark_library_frame(&mut self, is_library: bool) {
        let orig = self.library_frame;
        let o = self.original.get_or_insert_with(Default::default);
        if o.library_frame.is_none() {
            o.library_frame = Some(orig);
        }
        self.library_frame = is_library;
    }
    pub fn set_exclude_from_grouping(&mut self, v: bool) {
        self.exclude_from_grouping = v;
    }
    /// Records a source-map lookup failure (`sourcemap.error`).
    pub fn set_sourcemap_error(&mut self, msg: String) {
        self.sourcemap_error = msg;
    }
    /// Applies a successful source-map lookup: saves the old values in
    /// `original.*` and sets the mapped ones, `sourcemap.updated = true`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_sourcemap(
        &mut self,
        filename: Option<String>,
        abs_path: String,
        lineno: i64,
        colno: i64,
        function: String,
        context_line: String,
        pre_context: Vec<String>,
        post_context: Vec<String>,
    ) {
        let o = self.original.get_or_insert_with(Default::default);
        o.abs_path = std::mem::take(&mut self.abs_path);
        o.filename = self.filename.clone();
        o.classname = self.classname.clone();
        o.function = std::mem::take(&mut self.function);
        o.lineno = self.lineno;
        o.colno = self.colno;
        if let Some(f) = filename {
            self.filename = f.into();
        }
        self.abs_path = abs_path.into();
        self.lineno = Some(lineno);
        self.colno = Some(colno);
        self.function = function.into();
        self.context_line = context_line.into();
        self.pre_context = pre_context.into_iter().map(SharedStr::from).collect();
        self.post_context = post_context.into_iter().map(SharedStr::from).collect();
        self.sourcemap_updated = true;
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn later_values_replace_earlier_ones_with_and_without_the_index() {
        let mut l = Labels::default();
        for i in 0..1000 {
            l.set_string(&format!("k{i}"), format!("a{i}"));
            l.set_number(&format!("n{i}"), i as f64);
        }
        for i in (0..1000).step_by(7) {
            l.set_string(&format!("k{i}"), "b".into());
            l.set_number(&format!("n{i}"), -1.0);
        }
        l.set_string("new", "x".into());
        assert_eq!(l.strings.len(), 1001);
        assert_eq!(l.numbers.len(), 1000);
        assert_eq!(l.strings[7], ("k7".into(), "b".to_string()));
        assert_eq!(l.strings[8], ("k8".into(), "a8".to_string()));
        assert_eq!(l.numbers[14].1, -1.0);
        assert_eq!(l.strings[1000].0, "new");
        // a clone keeps a working index
        let mut c = l.clone();
        c.set_string("k999", "z".into());
        assert_eq!(c.strings.len(), 1001);
        assert_eq!(c.strings[999].1, "z");
        // small sets use no index
        let mut s = Labels::default();
        s.set_string("a", "1".into());
        s.set_string("a", "2".into());
        assert_eq!(s.strings, vec![("a".into(), "2".to_string())]);
        assert!(s.index.is_none());
    }
}
