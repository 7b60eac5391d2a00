//! The NATS JetStream bus, for several hosts sharing the work and for the
//! platform to consume what the service publishes with any NATS client.
//!
//! - A topic is a subject; the configured streams hold them (ingress, events
//!   and dead letters kept for the retention, egress as a work queue).
//! - `publish` returns after JetStream's PubAck: the message is stored. The
//!   de-duplication key travels in `Nats-Msg-Id`, so JetStream drops a second
//!   copy within the duplicate window.
//! - `take` pulls from one durable consumer per work-queue topic, shared by
//!   every host: JetStream hands each message to one of them. `ack` is
//!   confirmed by the server (double ack); `retry_later` is a NAK with the
//!   delay; a message not settled within the ack wait comes back (its host
//!   died), and one still being handled reports progress so it does not.

mod setup;
mod state;

pub use setup::may_pass;

use crate::telemetry::TraceContext;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::{BoxFuture, Bus, BusError, Delivery, Published, StateEntry, StateWrite, Stored};
use crate::config::BusConfig;

/// No bus operation waits longer than this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A message taken and not yet settled: `ack` and `retry_later` need it.
struct InFlight {
    message: jetstream::Message,
    /// Tells JetStream the message is still being handled.
    progress: tokio::task::JoinHandle<()>,
}

/// The JetStream bus.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Durable consumers by topic, made on the first `take`.
    consumers: tokio::sync::Mutex<HashMap<String, PullConsumer>>,
    /// The stream holding each topic, asked of the server once: the streams
    /// were checked at start and do not change under a running host.
    stream_names: Mutex<HashMap<String, String>>,
    /// Taken messages by stream sequence. Sequences are per stream, so the
    /// work-queue topics a host takes from share one stream (the default
    /// `EGRESS`); the key is then unique.
    in_flight: Mutex<HashMap<i64, InFlight>>,
    /// Connectors' state, in key-value buckets.
    state: state::StateBuckets,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus").finish_non_exhaustive()
    }
}

/// A client connected to one of `seeds`, within twice the connect timeout.
async fn connected(seeds: &[String], config: &crate::config::NatsConfig) -> anyhow::Result<async_nats::Client> {
    tokio::time::timeout(config.connect_timeout * 2, setup::connect(seeds, config)).await.map_err(|_| {
        anyhow::anyhow!("connecting to {}: no answer within {:?}", seeds.join(","), config.connect_timeout)
    })?
}

impl NatsBus {
    /// Connects to one of `seeds` (`nats://HOST:PORT`, or `HOST:PORT`) and
    /// makes sure the configured streams exist as configured.
    pub async fn connect(seeds: &[String], bus: &BusConfig) -> anyhow::Result<Self> {
        let config = &bus.nats;
        let client = connected(seeds, config).await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.connect_timeout);
        let info = client.server_info();
        let replicas = setup::replicas_for(config.replicas, &info);
        setup::ensure_streams(&jetstream, bus, replicas).await?;
        let cluster = info.cluster.as_deref().filter(|name| !name.is_empty()).unwrap_or("none: a server alone");
        tracing::info!(replicas, configured = %config.replicas, cluster, "JetStream streams ready");
        Ok(Self {
            client,
            state: state::StateBuckets::new(jetstream.clone(), bus.retention, replicas),
            jetstream,
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            stream_names: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// `check --online`: connects to one of `seeds` and says what `serve`
    /// would find there (the replicas it would choose, each stream), changing nothing.
    pub async fn describe(seeds: &[String], bus: &BusConfig) -> anyhow::Result<Vec<String>> {
        setup::describe(&connected(seeds, &bus.nats).await?, bus).await
    }

    /// The durable consumer every host shares for `topic`; a message taken
    /// stays hidden from the others for `visibility`.
    async fn consumer(&self, topic: &str, visibility: Duration) -> Result<PullConsumer, BusError> {
        let mut consumers = self.consumers.lock().await;
        if let Some(consumer) = consumers.get(topic) {
            return Ok(consumer.clone());
        }
        let stream =
            self.stream_of(topic).await?.ok_or_else(|| BusError::Unavailable(format!("no stream holds {topic}")))?;
        let name = consumer_name(topic);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: topic.to_owned(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: visibility,
            // Unlimited: the egress worker dead-letters after its own
            // max_attempts, with the reason; JetStream would drop silently.
            max_deliver: -1,
            ..Default::default()
        };
        let consumer = stream.get_or_create_consumer(&name, config).await.map_err(unavailable)?;
        consumers.insert(topic.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Takes the message out of the in-flight table and stops its progress reports.
    fn settle(&self, seq: i64) -> Result<jetstream::Message, BusError> {
        let taken = self.in_flight.lock().ok().and_then(|mut table| table.remove(&seq));
        let in_flight = taken.ok_or_else(|| BusError::Unavailable(format!("message {seq} is not in flight here")))?;
        in_flight.progress.abort();
        Ok(in_flight.message)
    }

    async fn take_one(&self, topic: &str, visibility: Duration) -> Result<Option<Delivery>, BusError> {
        let consumer = self.consumer(topic, visibility).await?;
        let mut batch = consumer.fetch().max_messages(1).messages().await.map_err(unavailable)?;
        let Some(next) = batch.next().await else { return Ok(None) };
        let message = next.map_err(unavailable)?;
        let info = message.info().map_err(unavailable)?;
        let (seq, attempt) = (info.stream_sequence as i64, info.delivered.max(1) as u32);
        let delivery = Delivery {
            seq,
            topic: topic.to_owned(),
            payload: message.payload.to_vec(),
            attempt,
            trace: message.headers.as_ref().and_then(trace_in),
        };
        let progress = tokio::spawn(report_progress(message.clone(), visibility));
        if let Ok(mut table) = self.in_flight.lock() {
            table.insert(seq, InFlight { message, progress });
        }
        Ok(Some(delivery))
    }

    async fn read_after(&self, topic: &str, after_seq: i64, limit: usize) -> Result<Vec<Stored>, BusError> {
        let Some(stream) = self.stream_of(topic).await? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut next = after_seq.max(0) as u64 + 1;
        while out.len() < limit {
            match stream.raw_message_builder().sequence(next).next_by_subject(topic.to_owned()).send().await {
                Ok(message) => {
                    next = message.sequence + 1;
                    let trace = trace_in(&message.headers);
                    out.push(Stored { seq: message.sequence as i64, payload: message.payload.to_vec(), trace });
                }
                Err(error) if matches!(error.kind(), jetstream::stream::RawMessageErrorKind::NoMessageFound) => break,
                Err(error) => return Err(unavailable(error)),
            }
        }
        Ok(out)
    }

    /// The stream holding `topic`, if one does.
    async fn stream_of(&self, topic: &str) -> Result<Option<jetstream::stream::Stream<()>>, BusError> {
        let known = self.stream_names.lock().ok().and_then(|names| names.get(topic).cloned());
        let name = match known {
            Some(name) => name,
            None => match self.jetstream.stream_by_subject(topic).await {
                Ok(name) => {
                    if let Ok(mut names) = self.stream_names.lock() {
                        names.insert(topic.to_owned(), name.clone());
                    }
                    name
                }
                Err(error) if matches!(error.kind(), jetstream::context::GetStreamByNameErrorKind::NotFound) => {
                    return Ok(None);
                }
                Err(error) => return Err(unavailable(error)),
            },
        };
        self.jetstream.get_stream_no_info(&name).await.map(Some).map_err(unavailable)
    }
}

impl Drop for NatsBus {
    /// Stops reporting progress for what this host still holds, so JetStream
    /// hands it to another host once the ack wait passes.
    fn drop(&mut self) {
        if let Ok(mut table) = self.in_flight.lock() {
            for (_, in_flight) in table.drain() {
                in_flight.progress.abort();
            }
        }
    }
}

/// Every `visibility / 3`, tells JetStream the message is still being handled,
/// so a send that outlasts the ack wait is not handed to another host.
async fn report_progress(message: jetstream::Message, visibility: Duration) {
    let period = (visibility / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        if message.ack_with(AckKind::Progress).await.is_err() {
            return;
        }
    }
}

/// The durable consumer's name for `topic` (`.` is not allowed in names).
fn consumer_name(topic: &str) -> String {
    format!("{}-{}", crate::config::SERVICE_NAME, topic.replace(['.', '*', '>'], "_"))
}

/// The W3C trace context in a message's NATS headers, when it holds a valid one.
fn trace_in(headers: &HeaderMap) -> Option<TraceContext> {
    TraceContext::from_headers(|name| headers.get(name).map(|value| value.as_str()))
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

/// Runs `work` within the operation bound.
async fn bounded<T>(work: impl Future<Output = Result<T, BusError>>) -> Result<T, BusError> {
    tokio::time::timeout(OPERATION_TIMEOUT, work).await.unwrap_or(Err(BusError::Timeout(OPERATION_TIMEOUT)))
}

impl Bus for NatsBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(bounded(async move {
            let mut headers = HeaderMap::new();
            if let Some(key) = key {
                headers.insert("Nats-Msg-Id", key);
            }
            for (name, value) in trace.iter().flat_map(|trace| trace.headers()) {
                headers.insert(name, value);
            }
            let ack = self
                .jetstream
                .publish_with_headers(topic.to_owned(), headers, payload)
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
            Ok(if ack.duplicate { Published::Duplicate } else { Published::New })
        }))
    }

    fn take<'a>(&'a self, topic: &'a str, visibility: Duration) -> BoxFuture<'a, Result<Option<Delivery>, BusError>> {
        Box::pin(bounded(self.take_one(topic, visibility)))
    }

    fn ack(&self, seq: i64) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(bounded(async move { self.settle(seq)?.double_ack().await.map_err(unavailable) }))
    }

    fn retry_later(&self, seq: i64, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(bounded(
            async move { self.settle(seq)?.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable) },
        ))
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, BusError>> {
        Box::pin(bounded(self.read_after(topic, after_seq, limit)))
    }

    fn last_seq<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, BusError>> {
        Box::pin(bounded(async move {
            let Some(stream) = self.stream_of(topic).await? else { return Ok(0) };
            match stream.get_last_raw_message_by_subject(topic).await {
                Ok(message) => Ok(message.sequence as i64),
                Err(error) if matches!(error.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => {
                    Ok(0)
                }
                Err(error) => Err(unavailable(error)),
            }
        }))
    }

    fn system(&self) -> &'static str {
        "nats"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(bounded(async move {
            if !matches!(self.client.connection_state(), async_nats::connection::State::Connected) {
                return Err(BusError::Unavailable("not connected to NATS".into()));
            }
            self.jetstream.query_account().await.map(|_| ()).map_err(unavailable)
        }))
    }

    fn state_get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<StateEntry>, BusError>> {
        Box::pin(self.state.get(bucket, key))
    }

    fn state_put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: String,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StateWrite, BusError>> {
        Box::pin(self.state.put(bucket, key, value, expected))
    }
}
