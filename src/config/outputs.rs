//! Settings of the message-broker and debugging outputs: `output.kafka.*`,
//! `output.redis.*` and `output.console.*`, with apm-server's key names and
//! defaults beside each field. Each section switches its output on when it
//! is present, unless it says `enabled: false`; exactly one output may be on
//! (checked in [`super::validate`]).

use super::settings::{Backoff, ClientTls};
use super::types::{ByteSize, GoDuration, Secret};
use serde::{Deserialize, Serialize};

/// `output.console.*`: one JSON document per line on standard output.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleOutput {
    pub enabled: Option<bool>,
    pub codec: Codec,
    /// Documents written per flush (default 2048).
    pub bulk_max_size: Option<usize>,
}

/// `codec.*` of the console output.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Codec {
    pub json: JsonCodec,
}

/// `codec.json.*`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonCodec {
    /// Indented, multi-line JSON (default false).
    pub pretty: bool,
    /// Accepted for compatibility; documents never contain raw HTML escapes to choose from (default false).
    pub escape_html: bool,
}

/// `output.redis.*`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisOutput {
    pub enabled: Option<bool>,
    /// `host:port` of the Redis servers (default `["localhost:6379"]`);
    /// each indexer instance starts on a different host and fails over to the next.
    pub hosts: Vec<String>,
    /// List or channel name; a format string such as `apm-%{[data_stream.type]}` (default `apm-server`).
    pub key: String,
    /// `list` (RPUSH, default) or `channel` (PUBLISH).
    pub datatype: String,
    /// Database number (default 0).
    pub db: u32,
    /// AUTH password (default none).
    pub password: Secret,
    /// TLS to Redis (`rediss://`); `ssl.enabled: true` or any other `ssl.*` key turns it on.
    pub ssl: Option<ClientTls>,
    /// Documents per pipelined round trip (default 2048).
    pub bulk_max_size: usize,
    /// Connect, read and write timeout (default 5s).
    pub timeout: GoDuration,
    /// Retries of a failed batch before its documents count as failed (default 3).
    pub max_retries: u32,
    /// Delay between retries: `init` doubling up to `max` (default 1s, 60s).
    pub backoff: Backoff,
}

impl Default for RedisOutput {
    fn default() -> Self {
        RedisOutput {
            enabled: None,
            hosts: vec!["localhost:6379".into()],
            key: "apm-server".into(),
            datatype: "list".into(),
            db: 0,
            password: Secret::default(),
            ssl: None,
            bulk_max_size: 2048,
            timeout: GoDuration::secs(5),
            max_retries: 3,
            backoff: Backoff::default(),
        }
    }
}

/// `output.kafka.*`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOutput {
    pub enabled: Option<bool>,
    /// Bootstrap brokers, `host:port` (default `["localhost:9092"]`).
    pub hosts: Vec<String>,
    /// Topic; a format string such as `apm-%{[data_stream.type]}` (required).
    pub topic: String,
    /// Message key; a format string (default none: no key).
    pub key: String,
    /// Partitioner: `round_robin`, `hash` or `random` (default `hash`, which
    /// picks a random partition for messages without a key).
    pub partition: KafkaPartition,
    /// `-1` (all in-sync replicas) or `1` (leader; default). `0` is refused:
    /// a fire-and-forget send could not be counted as delivered.
    pub required_acks: i16,
    /// `none`, `gzip` (default), `snappy`, `lz4`, `zstd`.
    pub compression: String,
    /// Accepted; the Kafka client uses each codec's default level (default 4).
    pub compression_level: i32,
    /// Larger messages are counted as failed without being sent (default 1000000).
    pub max_message_bytes: ByteSize,
    /// Client id sent to the brokers (default `beats`).
    pub client_id: String,
    /// Accepted; protocol versions are negotiated with the broker, which must be Kafka 0.11 or newer (default `2.1.0`).
    pub version: String,
    /// SASL user name (default none: no SASL).
    pub username: String,
    pub password: Secret,
    pub sasl: KafkaSasl,
    /// TLS to the brokers.
    pub ssl: Option<ClientTls>,
    /// Messages per produce request and partition (default 2048).
    pub bulk_max_size: usize,
    /// Time a produce request or connection attempt may take (default 30s).
    pub timeout: GoDuration,
    /// Retries of a failed produce request before its messages count as failed (default 3).
    pub max_retries: u32,
    /// Delay between retries: `init` doubling up to `max` (default 1s, 60s).
    pub backoff: Backoff,
}

impl Default for KafkaOutput {
    fn default() -> Self {
        KafkaOutput {
            enabled: None,
            hosts: vec!["localhost:9092".into()],
            topic: String::new(),
            key: String::new(),
            partition: KafkaPartition::default(),
            required_acks: 1,
            compression: "gzip".into(),
            compression_level: 4,
            max_message_bytes: ByteSize(1_000_000),
            client_id: "beats".into(),
            version: "2.1.0".into(),
            username: String::new(),
            password: Secret::default(),
            sasl: KafkaSasl::default(),
            ssl: None,
            bulk_max_size: 2048,
            timeout: GoDuration::secs(30),
            max_retries: 3,
            backoff: Backoff::default(),
        }
    }
}

/// `output.kafka.partition.*`: at most one of the three.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaPartition {
    pub round_robin: Option<serde_json::Value>,
    pub hash: Option<serde_json::Value>,
    pub random: Option<serde_json::Value>,
}

/// `output.kafka.sasl.*`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSasl {
    /// `PLAIN` (default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
}

impl Default for KafkaSasl {
    fn default() -> Self {
        KafkaSasl {
            mechanism: "PLAIN".into(),
        }
    }
}
