//! Turns indexer documents into Kafka records: topic and key rendered from
//! their format strings, the broker message as value, the event's arrival
//! as record timestamp; and picks each record's partition.

use super::config::{KafkaSettings, Partitioner};
use crate::output::message::{Document, MessageError};
use rskafka::record::Record;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("message of {size} bytes is over output.kafka.max_message_bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// One message waiting for its partition.
pub struct Pending {
    pub topic: String,
    pub record: Record,
}

pub fn build(doc: &[u8], settings: &KafkaSettings, version: &str) -> Result<Pending, BuildError> {
    let d = Document::parse(doc)?;
    let topic = settings
        .topic
        .render(&d, version)
        .map_err(MessageError::from)?;
    let key = match &settings.key {
        Some(k) => Some(
            k.render(&d, version)
                .map_err(MessageError::from)?
                .into_bytes(),
        ),
        None => None,
    };
    let body = d.body(version);
    let size = body.len() + key.as_ref().map_or(0, Vec::len);
    if size > settings.max_message_bytes {
        return Err(BuildError::TooLarge {
            size,
            max: settings.max_message_bytes,
        });
    }
    Ok(Pending {
        topic,
        record: Record {
            key,
            value: Some(body),
            headers: Default::default(),
            timestamp: now(),
        },
    })
}

/// The record timestamp: the time the message was built.
fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// FNV-1a, 32 bit: a stable hash so one key always maps to one partition.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Chooses partitions for one output instance.
pub struct PartitionPicker {
    kind: Partitioner,
    next: usize,
}

impl PartitionPicker {
    pub fn new(kind: Partitioner, instance: usize) -> Self {
        PartitionPicker {
            kind,
            next: instance,
        }
    }

    /// An index into the topic's `partitions` (which is never empty).
    pub fn pick(&mut self, key: Option<&[u8]>, partitions: usize) -> usize {
        let n = partitions.max(1);
        match (self.kind, key) {
            (Partitioner::Hash, Some(k)) => fnv1a(k) as usize % n,
            (Partitioner::RoundRobin, _) => {
                self.next = self.next.wrapping_add(1);
                self.next % n
            }
            _ => rand::random_range(0..n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_always_goes_to_the_same_partition() {
        let mut p = PartitionPicker::new(Partitioner::Hash, 0);
        let a = p.pick(Some(b"svc-a"), 8);
        for _ in 0..10 {
            assert_eq!(p.pick(Some(b"svc-a"), 8), a);
        }
    }

    #[test]
    fn round_robin_visits_every_partition() {
        let mut p = PartitionPicker::new(Partitioner::RoundRobin, 0);
        let mut seen: Vec<usize> = (0..6).map(|_| p.pick(None, 3)).collect();
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1, 2, 2]);
    }
}
