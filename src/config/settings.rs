//! Every setting apm-rs reads, with its default beside the field.
//!
//! Key names follow apm-server (`apm-server.*`, `output.elasticsearch.*`);
//! rules that span keys are in docs/configuration.md. Unknown keys are rejected
//! (`deny_unknown_fields`), so a typo stops start-up naming the key. Keys
//! apm-server documents but ignores are accepted and marked *ignored*.

use super::types::{
    auto_instances, deserialize_instances, ByteSize, GoDuration, HeaderMap, Secret,
};
use serde::{Deserialize, Serialize};

fn t() -> bool {
    true
}

/// The whole configuration tree.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Intake server settings (apm-server's own key names).
    #[serde(rename = "apm-server", default)]
    pub apm_server: ApmServer,
    /// Where documents go: the file sink (default) or Elasticsearch.
    #[serde(default)]
    pub output: Output,
    /// Stage instance counts, channel capacities, memory budget (`pipelines/*.yml`).
    #[serde(default)]
    pub pipeline: Pipeline,
    /// Log format and level.
    #[serde(default)]
    pub logging: Logging,
    /// Self-monitoring (Prometheus) listener.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Where accepted events wait for the output (libbeat's `queue.*` names).
    #[serde(default)]
    pub queue: Queue,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApmServer {
    /// Listen address; `:8200` is appended when no port is given. `unix:/path` is not supported.
    pub host: String,
    /// Maximum simultaneous connections; 0 = unlimited.
    pub max_connections: usize,
    /// Maximum request header size in bytes.
    pub max_header_size: usize,
    /// Time to read a whole request (headers and body).
    pub read_timeout: GoDuration,
    /// Time an answer may wait unread: when the connection's send queue has
    /// held unsent bytes this long, the connection is closed (0: no limit).
    pub write_timeout: GoDuration,
    /// A kept-alive connection is closed this long after its last answer.
    pub idle_timeout: GoDuration,
    /// Graceful shutdown budget.
    pub shutdown_timeout: GoDuration,
    /// Maximum length of one ndjson line in bytes.
    pub max_event_size: usize,
    /// apm-rs extension: a compressed intake body may decompress to at most
    /// this many times its size (never less than 16 MiB); 0 = unlimited.
    pub max_decompression_ratio: u64,
    /// Concurrent intake streams being decoded; 0 = 2048 (apm-server derives
    /// its default from the memory limit).
    pub max_concurrent_decoders: usize,
    /// Headers added to every root, backend and RUM response.
    pub response_headers: HeaderMap,
    /// Record client IP and user agent on events.
    pub capture_personal_data: bool,
    /// Fills a missing `service.environment`.
    pub default_service_environment: String,
    pub expvar: Expvar,
    pub pprof: Pprof,
    pub data_streams: DataStreams,
    /// TLS; on as soon as the section exists (unless `enabled: false`).
    pub ssl: Option<ServerTls>,
    pub auth: Auth,
    pub rum: Rum,
    pub agent: Agent,
    pub kibana: Kibana,
    /// apm-rs extension: the legacy source-map upload endpoint.
    pub sourcemap: SourcemapUpload,
    /// Limits of the server-side metric aggregation.
    pub aggregation: Aggregation,
    /// apm-rs extension: HTTP/2 flow-control limits (HTTPS listener only).
    pub http2: Http2,
    /// apm-rs extension: OTLP settings (the OTLP/gRPC listener).
    pub otlp: Otlp,
}

impl Default for ApmServer {
    fn default() -> Self {
        ApmServer {
            host: "127.0.0.1:8200".into(),
            max_connections: 0,
            max_header_size: 1_048_576,
            read_timeout: GoDuration::secs(30),
            write_timeout: GoDuration::secs(30),
            idle_timeout: GoDuration::secs(45),
            shutdown_timeout: GoDuration::secs(30),
            max_event_size: 307_200,
            max_decompression_ratio: 200,
            max_concurrent_decoders: 0,
            response_headers: HeaderMap::new(),
            capture_personal_data: true,
            default_service_environment: String::new(),
            expvar: Expvar::default(),
            pprof: Pprof::default(),
            data_streams: DataStreams::default(),
            ssl: None,
            auth: Auth::default(),
            rum: Rum::default(),
            agent: Agent::default(),
            kibana: Kibana::default(),
            sourcemap: SourcemapUpload::default(),
            aggregation: Aggregation::default(),
            http2: Http2::default(),
            otlp: Otlp::default(),
        }
    }
}

/// `apm-server.otlp.*` (apm-rs extension).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    pub grpc: OtlpGrpc,
}

/// `apm-server.otlp.grpc.*`: the OTLP/gRPC listener. apm-server serves
/// OTLP/gRPC on its intake port; apm-rs's HTTP server cannot carry gRPC, so
/// gRPC has a listener of its own, with the intake listener's TLS
/// (`apm-server.ssl.*`), authentication and limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpGrpc {
    /// Listen address; `:4317` (OTLP/gRPC's standard port) is appended when
    /// no port is given. Default empty = no gRPC listener (the container
    /// image sets `0.0.0.0:4317`).
    pub host: String,
}

/// `apm-server.http2.*` (apm-rs extension; apm-server leaves Go's defaults).
/// HTTP/2 is offered through ALPN on the TLS listener only; the plain
/// listener speaks HTTP/1.1 (no h2c). The OTLP/gRPC listener
/// (`apm-server.otlp.grpc.host`, HTTP/2 only) uses the same two windows. The windows bound how many body bytes
/// a client may send that the server has not read yet, per stream and per
/// connection; actix-http's defaults (1 MiB and 2 MiB) are halved and
/// quartered here so that a connection of stalled streams holds at most
/// `initial_connection_window_size` of unread body. The other HTTP/2 limits
/// are not settable through actix-http and stay the `h2` crate's: streams
/// reset by the client are capped (rapid reset closes the connection),
/// frames are at most 16 KiB, and concurrent streams are not limited (each
/// is still bounded by the windows and by `max_concurrent_decoders`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2 {
    /// Bytes a client may send on one stream before the server reads them.
    /// Default 262144 (256 KiB).
    pub initial_window_size: u32,
    /// Bytes a client may send on one connection, all streams together,
    /// before the server reads them. Default 524288 (512 KiB).
    pub initial_connection_window_size: u32,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            initial_window_size: 262_144,
            initial_connection_window_size: 524_288,
        }
    }
}

/// `apm-server.sourcemap.*` (apm-rs extension). apm-server 7.x had the
/// upload endpoint and accepted uploads without credentials when no auth was
/// configured; 8.x and 9.x have no such endpoint. An upload writes through
/// the server's own Elasticsearch credentials, so without auth anyone could
/// overwrite stored maps: apm-rs refuses such uploads unless opted in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcemapUpload {
    /// Accept `POST /assets/v1/sourcemaps` when no auth (secret token or API
    /// key) is configured. Default false; a warning is logged at start-up when true.
    pub allow_anonymous_upload: bool,
    /// Uploads read at the same time; more answer 503.
    pub max_concurrent_uploads: usize,
}

impl Default for SourcemapUpload {
    fn default() -> Self {
        SourcemapUpload {
            allow_anonymous_upload: false,
            max_concurrent_uploads: 2,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expvar {
    /// Serve apm-server-compatible debug variables.
    pub enabled: bool,
    /// Path of the above.
    pub url: String,
}

impl Default for Expvar {
    fn default() -> Self {
        Expvar {
            enabled: false,
            url: "/debug/vars".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pprof {
    /// Accepted for compatibility; apm-rs has no pprof endpoints.
    pub enabled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataStreams {
    /// Data stream namespace of indexed events.
    pub namespace: String,
}

impl Default for DataStreams {
    fn default() -> Self {
        DataStreams {
            namespace: "default".into(),
        }
    }
}

/// Server TLS (`apm-server.ssl.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// Defaults to true once the section exists.
    pub enabled: Option<bool>,
    /// Server certificate (PEM path).
    pub certificate: String,
    /// Server key (PEM path).
    pub key: String,
    /// Passphrase of an encrypted key.
    pub key_passphrase: Secret,
    /// CAs for verifying client certificates.
    pub certificate_authorities: Vec<String>,
    /// `none` | `optional` | `required`; `required` when CAs are set and this is absent.
    pub client_authentication: Option<String>,
    /// Allowed versions; default TLSv1.2 and TLSv1.3.
    pub supported_protocols: Vec<String>,
    /// TLS ≤ 1.2 cipher suites; empty = library defaults.
    pub cipher_suites: Vec<String>,
    /// ECDHE curves; empty = library defaults.
    pub curve_types: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Shared token for `Authorization: Bearer`; empty = disabled.
    pub secret_token: Secret,
    pub api_key: ApiKeyAuth,
    pub anonymous: Anonymous,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyAuth {
    /// Accept `Authorization: ApiKey`.
    pub enabled: bool,
    /// Distinct API keys kept verified at once (live cache entries).
    pub limit: i64,
    /// Cluster used for `_has_privileges`; defaults to `output.elasticsearch` without credentials.
    #[serde(default, deserialize_with = "strict_es_client")]
    pub elasticsearch: Option<EsClient>,
}

impl Default for ApiKeyAuth {
    fn default() -> Self {
        ApiKeyAuth {
            enabled: false,
            limit: 100,
            elasticsearch: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anonymous {
    /// Allow credential-less requests; unset = implied by `rum.enabled` when auth is configured.
    pub enabled: Option<bool>,
    /// Agent names allowed anonymously; empty = all.
    pub allow_agent: Vec<String>,
    /// Service names allowed anonymously; empty = all.
    pub allow_service: Vec<String>,
    pub rate_limit: RateLimit,
    /// CIDRs of proxies whose forwarding headers are trusted (apm-rs addition); empty = trust all, like apm-server.
    pub trusted_proxies: Vec<String>,
    /// The one header the trusted proxies write (apm-rs addition, used only
    /// with `trusted_proxies`): `X-Forwarded-For` (default; nginx, HAProxy and
    /// cloud load balancers append to it), `Forwarded` or `X-Real-Ip` (must
    /// be overwritten by the proxy next to apm-rs). The other two are ignored.
    pub trusted_proxy_header: ProxyHeader,
}

/// A forwarding header named by `trusted_proxy_header`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyHeader {
    #[default]
    #[serde(rename = "X-Forwarded-For", alias = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "Forwarded", alias = "forwarded")]
    Forwarded,
    #[serde(rename = "X-Real-Ip", alias = "x-real-ip", alias = "X-Real-IP")]
    XRealIp,
}

impl Default for Anonymous {
    fn default() -> Self {
        Anonymous {
            enabled: None,
            allow_agent: vec!["rum-js".into(), "js-base".into()],
            allow_service: vec![],
            rate_limit: RateLimit::default(),
            trusted_proxies: vec![],
            trusted_proxy_header: ProxyHeader::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Tokens (events) per second per IP; bucket capacity is 3×.
    pub event_limit: i64,
    /// Number of client IPs with their own bucket (LRU, split across rate shards).
    pub ip_limit: i64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            event_limit: 300,
            ip_limit: 1000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rum {
    /// Enable RUM routes (else 403) and implicit anonymous access.
    pub enabled: bool,
    /// Permitted `Origin` globs.
    pub allow_origins: Vec<String>,
    /// Extra `Access-Control-Allow-Headers` entries.
    pub allow_headers: Vec<String>,
    /// Headers added to RUM responses after the global ones.
    pub response_headers: HeaderMap,
    /// Regex marking library frames.
    pub library_pattern: String,
    /// Regex marking frames excluded from grouping.
    pub exclude_from_grouping: String,
    pub source_mapping: SourceMapping,
}

impl Default for Rum {
    fn default() -> Self {
        Rum {
            enabled: false,
            allow_origins: vec!["*".into()],
            allow_headers: vec![],
            response_headers: HeaderMap::new(),
            library_pattern: "node_modules|bower_components|~".into(),
            exclude_from_grouping: "^/webpack".into(),
            source_mapping: SourceMapping::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceMapping {
    /// Apply source maps (only when RUM is enabled).
    #[serde(default = "t")]
    pub enabled: bool,
    /// Time budget for fetching maps per batch.
    pub timeout: GoDuration,
    /// Maximum decompressed map size.
    pub max_sourcemap_size: ByteSize,
    /// Cluster holding `.apm-source-map`; defaults to `output.elasticsearch`.
    #[serde(default, deserialize_with = "strict_es_client")]
    pub elasticsearch: Option<EsClient>,
    /// *Ignored* (accepted for compatibility).
    pub cache: SourceMapCache,
    /// *Ignored*, obsolete.
    pub index_pattern: String,
}

impl Default for SourceMapping {
    fn default() -> Self {
        SourceMapping {
            enabled: true,
            timeout: GoDuration::secs(5),
            max_sourcemap_size: ByteSize::mib(500),
            elasticsearch: None,
            cache: SourceMapCache::default(),
            index_pattern: "apm-*-sourcemap*".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceMapCache {
    /// *Ignored* (apm-server documents it but does not read it).
    pub expiration: GoDuration,
}

impl Default for SourceMapCache {
    fn default() -> Self {
        SourceMapCache {
            expiration: GoDuration::secs(300),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    pub config: AgentConfig,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub cache: AgentConfigCache,
    /// Cluster holding `.apm-agent-configuration`; defaults to `output.elasticsearch`.
    #[serde(default, deserialize_with = "strict_es_client")]
    pub elasticsearch: Option<EsClient>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfigCache {
    /// Refresh interval and `Cache-Control: max-age`; whole seconds, ≥ 1 s.
    pub expiration: GoDuration,
}

impl Default for AgentConfigCache {
    fn default() -> Self {
        AgentConfigCache {
            expiration: GoDuration::secs(30),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kibana {
    /// Enables Kibana fallbacks (agent config).
    pub enabled: bool,
    pub host: String,
    pub protocol: String,
    pub path: String,
    pub username: String,
    pub password: Secret,
    pub api_key: Secret,
    pub headers: HeaderMap,
    pub ssl: Option<ClientTls>,
}

impl Default for Kibana {
    fn default() -> Self {
        Kibana {
            enabled: false,
            host: "localhost:5601".into(),
            protocol: "http".into(),
            path: String::new(),
            username: String::new(),
            password: Secret::default(),
            api_key: Secret::default(),
            headers: HeaderMap::new(),
            ssl: None,
        }
    }
}

/// Elasticsearch client settings shared by the output, API-key checks,
/// source maps and agent config (how they fall back to the output's:
/// docs/configuration.md).
///
/// Not `deny_unknown_fields` itself: `output.elasticsearch` flattens it next
/// to the bulk keys and rejects unknown keys there; the standalone sections
/// reject them through [`strict_es_client`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EsClient {
    /// Hosts; scheme and port optional (`http`, 9200). Used round-robin.
    pub hosts: Vec<String>,
    /// Scheme for hosts without one.
    pub protocol: String,
    /// URL path prefix.
    pub path: String,
    pub username: String,
    pub password: Secret,
    /// `id:key`, sent base64-encoded as `Authorization: ApiKey`.
    pub api_key: Secret,
    /// Extra request headers.
    pub headers: HeaderMap,
    pub proxy_url: String,
    pub proxy_disable: bool,
    /// Request timeout.
    pub timeout: GoDuration,
    /// Retries of a failed request or document (429, 5xx, connection errors).
    pub max_retries: u32,
    pub backoff: Backoff,
    pub ssl: Option<ClientTls>,
}

impl Default for EsClient {
    fn default() -> Self {
        EsClient {
            hosts: vec!["localhost:9200".into()],
            protocol: "http".into(),
            path: String::new(),
            username: String::new(),
            password: Secret::default(),
            api_key: Secret::default(),
            headers: HeaderMap::new(),
            proxy_url: String::new(),
            proxy_disable: false,
            timeout: GoDuration::secs(5),
            max_retries: 3,
            backoff: Backoff::default(),
            ssl: None,
        }
    }
}

/// A standalone `elasticsearch` section: [`EsClient`] with unknown keys rejected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictEsClient {
    #[serde(flatten)]
    client: EsClient,
}

/// Deserializes an optional standalone [`EsClient`] section, rejecting unknown keys.
fn strict_es_client<'de, D>(d: D) -> Result<Option<EsClient>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<StrictEsClient>::deserialize(d)?.map(|s| s.client))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// First retry delay; doubles per attempt.
    pub init: GoDuration,
    /// Maximum retry delay.
    pub max: GoDuration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            init: GoDuration::secs(1),
            max: GoDuration::secs(60),
        }
    }
}

/// TLS client settings (to Elasticsearch or Kibana).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    pub enabled: Option<bool>,
    /// CA PEM files trusted in addition to (or instead of) the system roots.
    pub certificate_authorities: Vec<String>,
    /// `full` (default) | `strict` | `certificate` | `none`.
    pub verification_mode: Option<String>,
    /// Client certificate (PEM path).
    pub certificate: String,
    /// Client key (PEM path).
    pub key: String,
    pub key_passphrase: Secret,
    pub supported_protocols: Vec<String>,
    pub cipher_suites: Vec<String>,
    pub curve_types: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// Elasticsearch output; on when the section exists unless `enabled: false`.
    pub elasticsearch: Option<EsOutput>,
    /// The embedded default: bulk-format ndjson files.
    pub file: FileOutput,
    /// Kafka output (`output.kafka.*`, see [`super::outputs::KafkaOutput`]); on when the section exists unless `enabled: false`.
    pub kafka: Option<super::outputs::KafkaOutput>,
    /// Redis output (`output.redis.*`, see [`super::outputs::RedisOutput`]); on when the section exists unless `enabled: false`.
    pub redis: Option<super::outputs::RedisOutput>,
    /// Console output (`output.console.*`, see [`super::outputs::ConsoleOutput`]); on when the section exists unless `enabled: false`.
    pub console: Option<super::outputs::ConsoleOutput>,
}

/// `output.elasticsearch.*`: client settings plus bulk tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsOutput {
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub client: EsClient,
    /// gzip level of bulk bodies, 0 = off (default 1; apm-server's is 5).
    /// Level 1 costs ~13 % less server CPU per event than 5 for ~1.8× the
    /// bytes sent (measured in loadtest/README.md).
    pub compression_level: u32,
    /// Flush a bulk once it holds this many (uncompressed) bytes.
    pub flush_bytes: ByteSize,
    /// Flush a non-empty bulk at least this often.
    pub flush_interval: GoDuration,
    /// Bulk requests in flight at once (over all indexer instances).
    pub max_requests: usize,
    /// How long a failing bulk is retried before its documents count as failed; 0 = 5 × `backoff.max`.
    pub retry_budget: GoDuration,
    /// Give each document of a non-time-series data stream an `_id` so a
    /// retried `create` cannot duplicate it (a 409 counts as indexed).
    /// `metrics-*` documents never get one: time-series data streams reject
    /// client ids and answer a duplicate with 409 themselves. Default on;
    /// always on with `queue.type: disk`.
    pub idempotent_ids: bool,
}

impl Default for EsOutput {
    fn default() -> Self {
        EsOutput {
            enabled: None,
            client: EsClient::default(),
            compression_level: 1,
            flush_bytes: ByteSize::mib(1),
            flush_interval: GoDuration::secs(1),
            max_requests: 10,
            retry_budget: GoDuration::secs(0),
            idempotent_ids: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileOutput {
    /// On unless the Elasticsearch output is on.
    pub enabled: Option<bool>,
    /// Directory of the bulk files.
    pub path: String,
    /// Start a new file after this many bytes.
    pub rotate_bytes: ByteSize,
}

impl Default for FileOutput {
    fn default() -> Self {
        FileOutput {
            enabled: None,
            path: "data".into(),
            rotate_bytes: ByteSize::mib(64),
        }
    }
}

/// Tuning profile (`pipelines/*.yml`): see `pipelines/default.yml` for the shipped values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    /// Bytes of request data in flight (read but not yet indexed) across the server.
    pub memory_budget: ByteSize,
    /// Queueing time one request may spend in total, over all its batches:
    /// waiting for room in the memory budget and the decoder inbox, and for
    /// batch outcomes beyond a short per-batch allowance. Past it the request
    /// ends with 503 "queue is full", reporting what was accepted so far.
    pub queue_wait: GoDuration,
    pub decoder: Stage,
    pub validator: Stage,
    /// `instances` = number of rate shards (K).
    pub rate: Stage,
    pub sourcemap: Stage,
    /// The aggregator stage; `aggregator.enabled: false` turns server-side
    /// metric aggregation off (events then pass straight through).
    pub aggregator: AggregatorStage,
    /// Default instances `auto`: one per three cores, at least one.
    pub indexer: Stage,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            memory_budget: ByteSize::mib(64),
            queue_wait: GoDuration::secs(1),
            decoder: Stage::new(2, 64),
            validator: Stage::new(1, 64),
            rate: Stage::new(2, 64),
            sourcemap: Stage::new(1, 64),
            aggregator: AggregatorStage::default(),
            // `auto`: more indexers (bulk buffers filled and compressed in
            // parallel) only where the cores allow
            indexer: Stage::new(auto_instances(), 64),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage {
    /// Instances of the stage actor (threads): a number, or `auto` (one per
    /// three cores the process may use, at least one; see
    /// [`super::types::CORES_PER_AUTO_INSTANCE`]).
    #[serde(deserialize_with = "deserialize_instances")]
    pub instances: usize,
    /// Capacity of the stage's inbox, in batches (≤ 10 lines each).
    pub capacity: usize,
}

impl Stage {
    pub const fn new(instances: usize, capacity: usize) -> Self {
        Stage {
            instances,
            capacity,
        }
    }
}

impl Default for Stage {
    fn default() -> Self {
        Stage::new(1, 64)
    }
}

/// `pipeline.aggregator`: a stage with an on/off switch (apm-rs's own key;
/// apm-server always aggregates).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorStage {
    /// Aggregate transactions and spans into metrics (default `true`).
    pub enabled: bool,
    /// Instances of the stage actor (threads); default 1.
    pub instances: usize,
    /// Capacity of the stage's inbox, in batches; default 64.
    pub capacity: usize,
    /// Aggregation shards (services are split across them by name); default 4.
    pub shards: usize,
    /// Wait after an interval ends before its metrics are written, for
    /// events still in the pipeline (default `1s`).
    pub harvest_delay: GoDuration,
}

impl Default for AggregatorStage {
    fn default() -> Self {
        AggregatorStage {
            enabled: true,
            instances: 1,
            capacity: 64,
            shards: 4,
            harvest_delay: GoDuration::secs(1),
        }
    }
}

/// `apm-server.aggregation.*`: limits of the server-side aggregation, per
/// aggregation interval. Defaults are apm-server's for 1 GB of memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregation {
    /// Services per interval; later ones go to `service.name: _other` (default 1000).
    pub max_services: usize,
    pub transactions: AggregationGroups,
    pub service_transactions: AggregationGroups,
    pub service_destinations: AggregationGroups,
}

/// `apm-server.aggregation.<kind>.max_groups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationGroups {
    /// Groups per interval across all services; a service may use a tenth of
    /// them (as apm-server); later ones go to the `_other` group. Defaults:
    /// transactions 5000, service_transactions 5000, service_destinations 10000.
    pub max_groups: usize,
}

impl AggregationGroups {
    pub const fn new(max_groups: usize) -> Self {
        AggregationGroups { max_groups }
    }
}

impl Default for AggregationGroups {
    fn default() -> Self {
        AggregationGroups::new(5000)
    }
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            max_services: 1000,
            transactions: AggregationGroups::new(5000),
            service_transactions: AggregationGroups::new(5000),
            service_destinations: AggregationGroups::new(10_000),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// `text` or `json`.
    pub format: String,
    /// `error`, `warn`, `info`, `debug`, `trace`, or an env-filter directive.
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// Address of the Prometheus `/metrics` listener; empty = off.
    pub metrics_host: String,
}

/// `queue.*`: where accepted events wait for the output (see docs/durability.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// `memory` (default): held in memory, a 202 is answered after the rate
    /// limits; `disk`: encoded documents are appended to `queue.disk.path`
    /// before the 202 and survive outages, restarts and crashes.
    #[serde(rename = "type")]
    pub kind: QueueType,
    pub disk: DiskQueue,
    pub dead_letter: DeadLetterFile,
}

impl Queue {
    /// Where poison events are written: `queue.dead_letter.path`, else
    /// `dead_letter.ndjson` in `queue.disk.path` (disk queue) or in `data`
    /// (memory queue).
    pub fn dead_letter_path(&self) -> std::path::PathBuf {
        if !self.dead_letter.path.is_empty() {
            return self.dead_letter.path.clone().into();
        }
        let dir = match self.kind {
            QueueType::Disk => self.disk.path.as_str(),
            QueueType::Memory => "data",
        };
        std::path::Path::new(dir).join("dead_letter.ndjson")
    }
}

/// `queue.dead_letter.*`: the file of poison events (events that made the
/// sourcemap or indexer stage panic twice; format and replay in
/// docs/durability.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterFile {
    /// The file. Default empty: `dead_letter.ndjson` next to the disk queue
    /// (`queue.disk.path`), or in `data/` with the memory queue.
    pub path: String,
    /// The file never grows past this; further poison events are logged and
    /// counted (`failed{panic}`, `dead_letter_dropped_total{reason="full"}`),
    /// never waited for. Default 100MiB.
    pub max_size: ByteSize,
}

impl Default for DeadLetterFile {
    fn default() -> Self {
        DeadLetterFile {
            path: String::new(),
            max_size: ByteSize::mib(100),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Memory,
    Disk,
}

/// When the disk queue makes appended records durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fdatasync` before the request is answered (default).
    #[default]
    Request,
    /// At most every `fsync_interval`: faster, but an operating-system crash
    /// or power loss can lose events answered 202 within the last interval
    /// (a crash of apm-rs alone loses nothing: the data is in the page cache).
    Interval,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskQueue {
    /// Directory of the segment files, the acknowledged position (`ack`) and
    /// the queue's id (`queue.id`). Default `queue`.
    pub path: String,
    /// Bytes of segment files at most; when full, requests wait
    /// `pipeline.queue_wait` for room, then get 503 "queue is full". Default 10GiB.
    pub max_size: ByteSize,
    /// A new segment file is started after this many bytes; segments are
    /// deleted whole once delivered. Default 64MiB.
    pub segment_size: ByteSize,
    /// `request` (default) or `interval`.
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`, the longest time between syncs. Default 1s.
    pub fsync_interval: GoDuration,
}

impl Default for DiskQueue {
    fn default() -> Self {
        DiskQueue {
            path: "queue".into(),
            max_size: ByteSize(10 << 30),
            segment_size: ByteSize::mib(64),
            fsync: FsyncPolicy::Request,
            fsync_interval: GoDuration::secs(1),
        }
    }
}
