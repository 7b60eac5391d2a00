//! Connector state on JetStream: one key-value bucket per state bucket
//! (`STATE_twilio`), made on first use, entries kept for the bus's retention.
//! A conditional write is JetStream's expected-last-revision check.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::{bounded, unavailable};
use crate::bus::{BusError, StateEntry, StateWrite};

/// The state buckets of one NATS bus.
pub struct StateBuckets {
    jetstream: jetstream::Context,
    retention: Duration,
    replicas: usize,
    stores: tokio::sync::Mutex<HashMap<String, kv::Store>>,
}

impl StateBuckets {
    /// Buckets on `jetstream`, keeping entries for `retention`.
    pub fn new(jetstream: jetstream::Context, retention: Duration, replicas: usize) -> Self {
        Self { jetstream, retention, replicas, stores: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The key-value store of `bucket`, made when it does not exist.
    async fn store(&self, bucket: &str) -> Result<kv::Store, BusError> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let config = kv::Config {
            bucket: format!("STATE_{bucket}"),
            history: 1,
            max_age: self.retention,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let store = self.jetstream.create_key_value(config).await.map_err(unavailable)?;
        stores.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// The entry at `key`, with its revision.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<StateEntry>, BusError> {
        bounded(async {
            let entry = self.store(bucket).await?.entry(key).await.map_err(unavailable)?;
            Ok(entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| StateEntry { value: String::from_utf8_lossy(&e.value).into_owned(), revision: e.revision }))
        })
        .await
    }

    /// Writes `value` at `key` if its revision is still `expected`.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: String,
        expected: Option<u64>,
    ) -> Result<StateWrite, BusError> {
        bounded(async {
            let store = self.store(bucket).await?;
            let written = match expected {
                None => store.create(key, value.into()).await.map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(unavailable(e)),
                }),
                Some(revision) => store.update(key, value.into(), revision).await.map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(unavailable(e)),
                }),
            };
            match written {
                Ok(revision) => Ok(StateWrite::Written(revision)),
                Err(None) => Ok(StateWrite::Conflict),
                Err(Some(error)) => Err(error),
            }
        })
        .await
    }
}
