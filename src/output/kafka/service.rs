//! The Kafka client shared by all indexer instances: connected lazily (the
//! server starts without the brokers), topic partition lists and
//! per-partition clients cached, and a produce call bounded by `timeout`.
//! Everything here is async and runs on the output's own runtime; indexer
//! threads enter it with `block_on`.

use super::config::KafkaSettings;
use rskafka::client::error::Error;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a topic's partition list is trusted.
const METADATA_TTL: Duration = Duration::from_secs(60);

pub struct Service {
    pub settings: KafkaSettings,
    client: Mutex<Option<Arc<Client>>>,
    partitions: Mutex<HashMap<String, (Instant, Vec<i32>)>>,
    producers: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("kafka: {0}")]
    Client(#[from] Error),
    #[error("kafka request timed out after {0:?}")]
    Timeout(Duration),
}

impl Service {
    pub fn new(settings: KafkaSettings) -> Self {
        Service {
            settings,
            client: Mutex::new(None),
            partitions: Mutex::new(HashMap::new()),
            producers: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, Error> {
        let mut c = self.client.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(Arc::clone(c));
        }
        let s = &self.settings;
        let mut b = ClientBuilder::new(s.hosts.clone())
            .client_id(s.client_id.as_str())
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(s.timeout),
            });
        if let Some(tls) = &s.tls {
            b = b.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = s.sasl_config() {
            b = b.sasl_config(sasl);
        }
        let client = Arc::new(b.build().await?);
        *c = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Forgets connections and metadata after a failure, so the next attempt starts afresh.
    pub async fn reset(&self) {
        self.producers.lock().await.clear();
        self.partitions.lock().await.clear();
        *self.client.lock().await = None;
    }

    /// The topic's partitions (cached for [`METADATA_TTL`]).
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>, ProduceError> {
        if let Some((at, p)) = self.partitions.lock().await.get(topic) {
            if at.elapsed() < METADATA_TTL {
                return Ok(p.clone());
            }
        }
        let client = self.bounded(self.client()).await??;
        let topics = self.bounded(client.list_topics()).await??;
        let mut parts = topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect::<Vec<_>>())
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(ProduceError::UnknownTopic(topic.to_string()));
        }
        parts.sort_unstable();
        self.partitions
            .lock()
            .await
            .insert(topic.to_string(), (Instant::now(), parts.clone()));
        Ok(parts)
    }

    /// Produces `records` to one partition; success means the broker acknowledged them.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<(), ProduceError> {
        let key = (topic.to_string(), partition);
        let existing = self.producers.lock().await.get(&key).cloned();
        let producer = match existing {
            Some(p) => p,
            None => {
                let client = self.bounded(self.client()).await??;
                let p = Arc::new(
                    self.bounded(client.partition_client(
                        topic,
                        partition,
                        UnknownTopicHandling::Error,
                    ))
                    .await??,
                );
                self.producers.lock().await.insert(key, Arc::clone(&p));
                p
            }
        };
        self.bounded(producer.produce(records, self.settings.compression))
            .await??;
        Ok(())
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, ProduceError> {
        tokio::time::timeout(self.settings.timeout, f)
            .await
            .map_err(|_| ProduceError::Timeout(self.settings.timeout))
    }
}
