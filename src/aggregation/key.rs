//! Group keys packed into one byte string, so that folding an event into
//! its groups copies no field: the event's dimensions are written once into
//! a reused scratch buffer, each lookup hashes and compares that one byte
//! string, and only a group seen for the first time stores a copy
//! (`Box<[u8]>`). Harvest unpacks stored keys into [`ServiceKey`],
//! [`TransactionKey`] and [`DestinationKey`] to write documents.
//!
//! Invariants: every string is written as a 4-byte little-endian length and
//! its bytes, every field in a fixed order, so two keys are equal exactly
//! when their dimensions are; a service key starts with its 8-byte
//! timestamp, which [`set_timestamp`] rewrites in place per interval.
//! Unpacking never panics (a short key reads as empty fields).

use super::{DestinationKey, ServiceKey, TransactionKey};
use crate::model::event::{DroppedSpanStats, Labels, Transaction};
use crate::model::Event;
use std::ops::Range;

/// Maps keyed by packed keys (and transaction types), with a fast hasher:
/// every event is looked up once per interval.
pub type Groups<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_len(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Appends the service key of `ev` (timestamp 0 until [`set_timestamp`])
/// and returns its range in `buf`. Global labels count for non-RUM events only.
pub(crate) fn pack_service(
    buf: &mut Vec<u8>,
    ev: &Event,
    global_labels: Option<&Labels>,
) -> Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(&0i64.to_le_bytes());
    put_str(buf, &ev.service.name);
    put_str(buf, &ev.service.environment);
    put_str(buf, &ev.service.language.name);
    put_str(buf, &ev.agent.name);
    match global_labels {
        Some(l) if !ev.rum => {
            put_len(buf, l.strings.len());
            for (k, v) in &l.strings {
                put_str(buf, k);
                put_str(buf, v);
            }
            put_len(buf, l.numbers.len());
            for (k, v) in &l.numbers {
                put_str(buf, k);
                buf.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        _ => {
            put_len(buf, 0);
            put_len(buf, 0);
        }
    }
    start..buf.len()
}

/// Sets the timestamp of the service key packed at `key`.
pub(crate) fn set_timestamp(buf: &mut [u8], key: &Range<usize>, ts: i64) {
    if let Some(b) = buf.get_mut(key.start..key.start + 8) {
        b.copy_from_slice(&ts.to_le_bytes());
    }
}

/// Appends the transaction key of `ev` and returns its range in `buf`.
pub(crate) fn pack_transaction(buf: &mut Vec<u8>, ev: &Event, t: &Transaction) -> Range<usize> {
    let start = buf.len();
    let sh = &ev.shared;
    let s = &ev.service;
    let c = &sh.cloud;
    let faas = ev.faas.as_deref();
    buf.push(ev.parent_id.is_empty() as u8);
    buf.push(match faas.and_then(|f| f.coldstart) {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    for f in [
        t.name.as_str(),
        &t.type_,
        &t.result,
        &t.outcome,
        &s.version,
        &s.node_name,
        &s.runtime.name,
        &s.runtime.version,
        &s.language.version,
        &sh.host_hostname,
        &sh.host_name,
        &sh.host_os_platform,
        &sh.container_id,
        &sh.k8s_pod_name,
        &c.provider,
        &c.region,
        &c.availability_zone,
        &c.service_name,
        &c.account_id,
        &c.account_name,
        &c.machine_type,
        &c.project_id,
        &c.project_name,
    ] {
        put_str(buf, f);
    }
    match faas {
        Some(f) => {
            for s in [&f.id, &f.name, &f.version, &f.trigger_type] {
                put_str(buf, s);
            }
        }
        None => (0..4).for_each(|_| put_len(buf, 0)),
    }
    start..buf.len()
}

/// Appends a destination key and returns its range in `buf`.
pub(crate) fn pack_destination(
    buf: &mut Vec<u8>,
    span_name: &str,
    outcome: &str,
    target: Option<(&str, &str)>,
    resource: &str,
) -> Range<usize> {
    let start = buf.len();
    put_str(buf, span_name);
    put_str(buf, outcome);
    let (ty, name) = target.unwrap_or(("", ""));
    put_str(buf, ty);
    put_str(buf, name);
    put_str(buf, resource);
    start..buf.len()
}

/// Appends the destination key of a transaction's dropped-span entry.
pub(crate) fn pack_dropped(buf: &mut Vec<u8>, d: &DroppedSpanStats) -> Range<usize> {
    let start = buf.len();
    put_str(buf, "");
    put_str(buf, &d.outcome);
    put_str(buf, &d.service_target_type);
    put_str(buf, &d.service_target_name);
    put_str(buf, &d.destination_service_resource);
    start..buf.len()
}

/// Reads a packed key front to back; past its end every field is empty.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        match self.0.split_first_chunk::<N>() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => {
                self.0 = &[];
                [0; N]
            }
        }
    }
    fn len(&mut self) -> usize {
        u32::from_le_bytes(self.bytes()) as usize
    }
    fn string(&mut self) -> String {
        let n = self.len().min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}

impl ServiceKey {
    /// The dimensions of a packed service key.
    pub fn unpack(key: &[u8]) -> ServiceKey {
        let mut r = Reader(key);
        let timestamp_ns = i64::from_le_bytes(r.bytes());
        let name = r.string();
        let environment = r.string();
        let language_name = r.string();
        let agent_name = r.string();
        let labels = (0..r.len().min(key.len()))
            .map(|_| (r.string(), r.string()))
            .collect();
        let numeric_labels = (0..r.len().min(key.len()))
            .map(|_| (r.string(), u64::from_le_bytes(r.bytes())))
            .collect();
        ServiceKey {
            timestamp_ns,
            name,
            environment,
            language_name,
            agent_name,
            labels,
            numeric_labels,
        }
    }
}

impl TransactionKey {
    /// The dimensions of a packed transaction key.
    pub fn unpack(key: &[u8]) -> TransactionKey {
        let mut r = Reader(key);
        let [root, coldstart] = r.bytes();
        TransactionKey {
            root: root == 1,
            faas_coldstart: match coldstart {
                1 => Some(false),
                2 => Some(true),
                _ => None,
            },
            name: r.string(),
            type_: r.string(),
            result: r.string(),
            outcome: r.string(),
            service_version: r.string(),
            service_node_name: r.string(),
            service_runtime_name: r.string(),
            service_runtime_version: r.string(),
            service_language_version: r.string(),
            host_hostname: r.string(),
            host_name: r.string(),
            host_os_platform: r.string(),
            container_id: r.string(),
            kubernetes_pod_name: r.string(),
            cloud_provider: r.string(),
            cloud_region: r.string(),
            cloud_availability_zone: r.string(),
            cloud_service_name: r.string(),
            cloud_account_id: r.string(),
            cloud_account_name: r.string(),
            cloud_machine_type: r.string(),
            cloud_project_id: r.string(),
            cloud_project_name: r.string(),
            faas_id: r.string(),
            faas_name: r.string(),
            faas_version: r.string(),
            faas_trigger_type: r.string(),
        }
    }
}

impl DestinationKey {
    /// The dimensions of a packed destination key.
    pub fn unpack(key: &[u8]) -> DestinationKey {
        let mut r = Reader(key);
        DestinationKey {
            span_name: r.string(),
            outcome: r.string(),
            target_type: r.string(),
            target_name: r.string(),
            resource: r.string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_key_unpacks_to_the_dimensions_it_was_packed_from() {
        let mut buf = Vec::new();
        let r = pack_destination(
            &mut buf,
            "SELECT",
            "success",
            Some(("db", "main")),
            "postgres",
        );
        let k = DestinationKey::unpack(&buf[r]);
        assert_eq!(
            k,
            DestinationKey {
                span_name: "SELECT".into(),
                outcome: "success".into(),
                target_type: "db".into(),
                target_name: "main".into(),
                resource: "postgres".into(),
            }
        );
    }

    #[test]
    fn a_truncated_key_unpacks_to_empty_fields_without_panicking() {
        let mut buf = Vec::new();
        let r = pack_destination(&mut buf, "a", "b", None, "c");
        let k = DestinationKey::unpack(&buf[r.start..r.end - 3]);
        assert_eq!(k.span_name, "a");
        assert_eq!(k.resource, "");
        let s = ServiceKey::unpack(&[0xff; 11]);
        assert!(s.name.is_empty() && s.labels.is_empty());
    }
}
