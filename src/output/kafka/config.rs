//! Resolved Kafka settings (`output.kafka.*`), validated at start-up: every
//! key apm-server documents is either honoured or refused with an error
//! naming it, never ignored silently.

use crate::config::{ClientTls, KafkaOutput, Secret};
use crate::output::message::{FormatError, FormatString};
use rskafka::client::partition::Compression;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("output.kafka.hosts must not be empty")]
    NoHosts,
    #[error("output.kafka.topic must be set")]
    NoTopic,
    #[error("output.kafka.topic: {0}")]
    Topic(FormatError),
    #[error("output.kafka.key: {0}")]
    Key(FormatError),
    #[error("output.kafka.{0}: {1}")]
    Invalid(&'static str, String),
}

/// How a message's partition is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioner {
    /// Messages cycle over the topic's partitions.
    RoundRobin,
    /// Same key, same partition (FNV-1a of the key); random without a key.
    Hash,
    /// A random partition per message.
    Random,
}

#[derive(Clone)]
pub struct KafkaSettings {
    pub hosts: Vec<String>,
    pub topic: FormatString,
    pub key: Option<FormatString>,
    pub partitioner: Partitioner,
    pub compression: Compression,
    pub max_message_bytes: usize,
    pub client_id: String,
    pub sasl: Option<(String, String, Secret)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub bulk_max_size: usize,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff_init: Duration,
    pub backoff_max: Duration,
}

impl KafkaSettings {
    pub fn from_config(c: &KafkaOutput) -> Result<Self, SettingsError> {
        if c.hosts.is_empty() {
            return Err(SettingsError::NoHosts);
        }
        if c.topic.is_empty() {
            return Err(SettingsError::NoTopic);
        }
        let topic = FormatString::parse(&c.topic).map_err(SettingsError::Topic)?;
        let key = match c.key.as_str() {
            "" => None,
            k => Some(FormatString::parse(k).map_err(SettingsError::Key)?),
        };
        let p = &c.partition;
        let partitioner = match (
            p.round_robin.is_some(),
            p.hash.is_some(),
            p.random.is_some(),
        ) {
            (false, false, false) | (false, true, false) => Partitioner::Hash,
            (true, false, false) => Partitioner::RoundRobin,
            (false, false, true) => Partitioner::Random,
            _ => {
                return Err(SettingsError::Invalid(
                    "partition",
                    "choose one of round_robin, hash, random".into(),
                ))
            }
        };
        if let Some(h) = &p.hash {
            if h.get("hash")
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty())
            {
                return Err(SettingsError::Invalid(
                    "partition.hash.hash",
                    "hashing on event fields is not supported; set output.kafka.key instead".into(),
                ));
            }
        }
        match c.required_acks {
            1 | -1 => {}
            0 => {
                return Err(SettingsError::Invalid(
                    "required_acks",
                    "0 (no acknowledgement) is not supported: delivery could not be counted; use 1 or -1".into(),
                ))
            }
            n => return Err(SettingsError::Invalid("required_acks", format!("{n} is not -1, 0 or 1"))),
        }
        let compression = match c.compression.as_str() {
            "none" | "" => Compression::NoCompression,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(SettingsError::Invalid(
                    "compression",
                    format!("{other:?} is not none, gzip, snappy, lz4 or zstd"),
                ))
            }
        };
        let sasl = if c.username.is_empty() {
            None
        } else {
            let m = c.sasl.mechanism.to_ascii_uppercase();
            if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                return Err(SettingsError::Invalid(
                    "sasl.mechanism",
                    format!("{m:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                ));
            }
            Some((m, c.username.clone(), c.password.clone()))
        };
        Ok(KafkaSettings {
            hosts: c.hosts.clone(),
            topic,
            key,
            partitioner,
            compression,
            max_message_bytes: usize::try_from(c.max_message_bytes.get()).unwrap_or(usize::MAX),
            client_id: c.client_id.clone(),
            sasl,
            tls: c.ssl.as_ref().map(tls).transpose()?.flatten(),
            bulk_max_size: c.bulk_max_size.max(1),
            timeout: c.timeout.0.max(Duration::from_millis(100)),
            max_retries: c.max_retries,
            backoff_init: c.backoff.init.0,
            backoff_max: c.backoff.max.0,
        })
    }

    /// The SASL configuration for the client.
    pub fn sasl_config(&self) -> Option<rskafka::client::SaslConfig> {
        let (m, user, pass) = self.sasl.as_ref()?;
        let cred = rskafka::client::Credentials::new(user.clone(), pass.expose().to_string());
        Some(match m.as_str() {
            "SCRAM-SHA-256" => rskafka::client::SaslConfig::ScramSha256(cred),
            "SCRAM-SHA-512" => rskafka::client::SaslConfig::ScramSha512(cred),
            _ => rskafka::client::SaslConfig::Plain(cred),
        })
    }
}

fn tls(t: &ClientTls) -> Result<Option<Arc<rustls::ClientConfig>>, SettingsError> {
    let bad = |m: String| SettingsError::Invalid("ssl", m);
    if t.enabled == Some(false) {
        return Ok(None);
    }
    match t.verification_mode.as_deref().unwrap_or("full") {
        "full" | "strict" => {}
        other => {
            return Err(bad(format!(
                "verification_mode {other:?} is not supported (full, strict)"
            )))
        }
    }
    if !t.certificate.is_empty() || !t.key.is_empty() {
        return Err(bad(
            "client certificates are not supported by the Kafka output".into(),
        ));
    }
    if t.certificate_authorities.is_empty() {
        return Err(bad(
            "certificate_authorities must name the brokers' CA".into()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for path in &t.certificate_authorities {
        let pem = std::fs::read(path).map_err(|e| bad(format!("{path}: {e}")))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| bad(format!("{path}: {e}")))?;
            roots.add(cert).map_err(|e| bad(format!("{path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> KafkaOutput {
        KafkaOutput {
            topic: "apm".into(),
            ..KafkaOutput::default()
        }
    }

    #[test]
    fn defaults_give_hash_partitioning_and_gzip() {
        let s = KafkaSettings::from_config(&base()).unwrap();
        assert_eq!(s.partitioner, Partitioner::Hash);
        assert!(matches!(s.compression, Compression::Gzip));
    }

    #[test]
    fn unsupported_keys_stop_start_up_with_their_name() {
        let mut c = base();
        c.required_acks = 0;
        let e = KafkaSettings::from_config(&c).err().unwrap().to_string();
        assert!(e.contains("output.kafka.required_acks"), "{e}");
        let mut c = base();
        c.compression = "brotli".into();
        let e = KafkaSettings::from_config(&c).err().unwrap().to_string();
        assert!(e.contains("output.kafka.compression"), "{e}");
        let e = KafkaSettings::from_config(&KafkaOutput::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("output.kafka.topic"), "{e}");
    }
}
