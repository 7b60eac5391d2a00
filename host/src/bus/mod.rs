//! The platform bus: topics of JSON messages, durable before `publish`
//! returns, with de-duplication keys and at-least-once consumers.
//!
//! [`Bus`] is the interface every backend implements; [`sqlite`] is the
//! embedded default, [`nats`] JetStream for several hosts. What travels on it is [`crate::messages`].

mod dedup;
mod disk;
mod follow;
pub mod nats;
pub mod spool;
pub mod sqlite;

pub use follow::follow;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{BusConfig, BusUrl};
use crate::telemetry::TraceContext;

/// A boxed future, so the bus trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored durably.
    New,
    /// A message with the same topic and de-duplication key was stored before; nothing changed.
    Duplicate,
}

/// A message taken from a topic by a consumer. It comes back after the
/// visibility timeout unless acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's position in the bus; identifies it for ack and retry.
    pub seq: i64,
    /// Where it was published.
    pub topic: String,
    /// The message as published.
    pub payload: Vec<u8>,
    /// How many times it has been taken, this time included.
    pub attempt: u32,
    /// The trace it was published in, when its producer gave one.
    pub trace: Option<TraceContext>,
}

/// A stored message, as `tail` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its place on the topic; `ack` and `retry_later` name it.
    pub seq: i64,
    /// The message as published.
    pub payload: Vec<u8>,
    /// The trace it was published in, when its producer gave one.
    pub trace: Option<TraceContext>,
}

impl Stored {
    /// The message with its headers, as `tail --headers` prints it and the
    /// events stream with `?headers=true` sends it:
    /// `{"headers":{"traceparent":"00-…"},"message":{…}}` (`headers` is `{}`
    /// for a message published without a trace context).
    pub fn with_headers(&self) -> Vec<u8> {
        let message = serde_json::from_slice::<&serde_json::value::RawValue>(&self.payload)
            .map(|raw| raw.get().to_owned())
            .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(&self.payload)).to_string());
        let headers = self.trace.as_ref().and_then(|trace| serde_json::to_string(trace).ok());
        format!(r#"{{"headers":{},"message":{message}}}"#, headers.as_deref().unwrap_or("{}")).into_bytes()
    }
}

/// One key's value in a connector's state, with the revision a conditional
/// write names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The value as written.
    pub value: String,
    /// Grows with every write of the key.
    pub revision: u64,
}

/// What a conditional state write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateWrite {
    /// Written; the key's new revision.
    Written(u64),
    /// The key had moved on (or existed, or not) since it was read: nothing written.
    Conflict,
}

/// Why the bus refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached or refused the write.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus did not answer within this bound.
    #[error("bus did not answer within {0:?}")]
    Timeout(Duration),
}

/// Why a connector's publish was refused; the host gives it to the connector
/// as the WIT `bus-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefused {
    /// The bus could not take the message; nothing was stored.
    Unavailable(String),
    /// The stream is not granted to the connector.
    NotAllowed(String),
}

/// The bus interface; both backends pass the same conformance tests.
pub trait Bus: Send + Sync + fmt::Debug {
    /// Stores `payload` on `topic`; returns once it is durable. With a key, a
    /// second publish of the same key on the same topic is a no-op. The
    /// payload is shared, not copied, by a layer that may need it again (the
    /// spool, should the bus not take it). `trace` goes with the message as
    /// W3C headers, for its consumers to continue.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, Result<Published, BusError>>;

    /// Takes the oldest visible message of `topic`, hiding it for `visibility`.
    fn take<'a>(&'a self, topic: &'a str, visibility: Duration) -> BoxFuture<'a, Result<Option<Delivery>, BusError>>;

    /// The message was handled: it is not delivered again.
    fn ack(&self, seq: i64) -> BoxFuture<'_, Result<(), BusError>>;

    /// Publishes `payload` on `topic` (as [`Bus::publish`]), then acknowledges
    /// the taken message `seq`: what a worker does once it handled a message
    /// and has its outcome to tell. Nothing is acknowledged unless the
    /// publish is durable. This default makes two calls; the SQLite bus makes
    /// both in one transaction, so an egress message costs one commit less.
    fn publish_and_ack<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
        seq: i64,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(async move {
            let published = self.publish(topic, key, payload, trace).await?;
            self.ack(seq).await?;
            Ok(published)
        })
    }

    /// Makes a taken message visible again after `delay` (a retry later).
    fn retry_later(&self, seq: i64, delay: Duration) -> BoxFuture<'_, Result<(), BusError>>;

    /// Messages of `topic` after `after_seq`, oldest first, at most `limit`.
    fn read<'a>(&'a self, topic: &'a str, after_seq: i64, limit: usize)
    -> BoxFuture<'a, Result<Vec<Stored>, BusError>>;

    /// The newest sequence number on `topic` (0 when empty): where a live tail starts.
    fn last_seq<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, BusError>>;

    /// What the bus is, as OpenTelemetry's `messaging.system` names it
    /// (`nats`; the embedded bus is `sqlite`).
    fn system(&self) -> &'static str;

    /// Whether the bus answers now.
    fn ping(&self) -> BoxFuture<'_, Result<(), BusError>>;

    /// The value of `key` in the state `bucket` (a connector's small, durable
    /// key-value memory beside its topics), with its revision.
    fn state_get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<StateEntry>, BusError>>;

    /// Writes `value` at `key` only if the key's revision is still `expected`
    /// (`None`: only if the key does not exist), so two writers that read the
    /// same entry cannot both win. Entries older than the retention are dropped.
    fn state_put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: String,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StateWrite, BusError>>;
}

/// [`open`], waiting while a NATS bus may yet come: a cluster still
/// electing its leader answers "no suitable peers", "no responders" or not
/// at all for a while after its servers start. Each failed try is logged
/// with the next delay (0.5 s, doubling to 5 s); after `start_timeout` the
/// last failure is the answer. A failure that will not pass by waiting (a
/// refused credential, streams configured otherwise) is answered at once.
pub async fn open_patiently(config: &BusConfig) -> anyhow::Result<Arc<dyn Bus>> {
    if !matches!(config.url, BusUrl::Nats(_)) {
        // A file: there at once, or not for a reason waiting does not mend.
        return open(config).await;
    }
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let error = match open(config).await {
            Ok(bus) => return Ok(bus),
            Err(error) => error,
        };
        let waited = started.elapsed();
        if !nats::may_pass(&error) || waited + delay > config.start_timeout {
            return Err(error.context(format!("the bus {} (waited {:.0?})", config.url, waited)));
        }
        tracing::warn!(bus = %config.url, error = format!("{error:#}"), retry_in = ?delay, "waiting for the bus");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Opens the configured bus: the SQLite file, or a connection to NATS with
/// its streams checked.
pub async fn open(config: &BusConfig) -> anyhow::Result<Arc<dyn Bus>> {
    match &config.url {
        BusUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteBus::new(path, config)?)),
        BusUrl::Nats(seeds) => Ok(Arc::new(nats::NatsBus::connect(seeds, config).await?)),
    }
}
