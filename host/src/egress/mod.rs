//! Egress: enqueueing messages on a connector's egress topic, and the worker
//! that sends them.
//!
//! Whether a message can be sent is the connector's to say: both the door
//! (`POST /v1/messages`, `ingress-egress send`) and the worker ask its `check`.

mod rate;
pub mod redrive;
mod worker;

pub use worker::{EgressWorker, Outcome, backoff};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::BusError;
use crate::connectors::{ConnectorSlot, Connectors};
use crate::lifecycle::Capability;
use crate::messages::EgressMessage;
use crate::runtime::CallFailure;
use crate::telemetry::TraceContext;
use crate::telemetry::spans::{self, Kind};
use tracing::Instrument as _;

pub use crate::config::EGRESS_STREAM;
/// Where the outcome of each message is published.
pub const STATUS_STREAM: &str = "status";
/// Where messages that will not be sent go, with the reason.
pub const DEADLETTER_STREAM: &str = "deadletter";
/// Where a recipient's opt-out, learned from a refused send, is published.
pub const CONSENT_STREAM: &str = "consent";

/// Why a message was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The connector says the message cannot be sent as it is.
    #[error("{0}")]
    Invalid(String),
    /// The connector could not be asked (it trapped or timed out).
    #[error("the connector could not check the message: {0}")]
    Connector(String),
    /// The bus refused the message.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Checks an egress message with its connector and publishes it; returns its
/// id. The id is the de-duplication key: enqueueing the same id twice sends
/// once. The message carries the trace it was enqueued in (`came_with`, the
/// producer's, continued), so its send joins that trace.
pub async fn enqueue(
    slot: &ConnectorSlot,
    message: EgressMessage,
    came_with: Option<&TraceContext>,
) -> Result<String, EnqueueError> {
    use tracing::field::Empty;
    let connector = &slot.config.name;
    let topic = slot
        .config
        .topics
        .get(EGRESS_STREAM)
        .ok_or_else(|| EnqueueError::Invalid(format!("connector {connector} has no egress topic")))?;
    let start = spans::start(came_with);
    let span = spans::service_span!(
        &start, came_with, "enqueue", connector = %connector, otel.name = Empty, otel.kind = Empty, otel.status_code = Empty
    );
    let system = slot.grants().bus.system();
    let name = || format!("publish {topic}");
    spans::describe(&span, Kind::Producer, name, || spans::messaging(system, "publish", topic, None));
    let trace = start.onward(&span, came_with);
    let enqueued = publish_checked(slot, topic, message, trace.as_ref()).instrument(span.clone()).await;
    match &enqueued {
        Ok(id) => spans::attribute(&span, "messaging.message.id", id.clone()),
        Err(_) => spans::failed(&span),
    };
    enqueued
}

/// [`enqueue`]'s work: the connector's check, then the publish on `topic`.
async fn publish_checked(
    slot: &ConnectorSlot,
    topic: &str,
    mut message: EgressMessage,
    trace: Option<&TraceContext>,
) -> Result<String, EnqueueError> {
    let id = message.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match slot.current().check(&message.to_wit(&id)).await {
        Ok(_) => {}
        Err(CallFailure::Refused(reason)) => return Err(EnqueueError::Invalid(reason)),
        Err(failure) => return Err(EnqueueError::Connector(failure.to_string())),
    }
    message.id = Some(id.clone());
    let payload = serde_json::to_vec(&message).map_err(|e| EnqueueError::Invalid(e.to_string()))?;
    slot.grants().bus.publish(topic, Some(&id), payload.into(), trace).await?;
    Ok(id)
}

/// The egress capability: a worker for each connector with an egress topic.
#[derive(Debug)]
pub struct Egress {
    workers: Vec<Arc<EgressWorker>>,
}

impl Egress {
    /// Workers for the loaded connectors; a taken message stays hidden for
    /// longer than `call_timeout`, the bound on one send. With `shared_pace`
    /// (several hosts on a NATS bus), a sender's rate holds across hosts.
    pub fn new(connectors: &Connectors, call_timeout: std::time::Duration, shared_pace: bool) -> Self {
        let workers = connectors
            .slots()
            .iter()
            .filter_map(|slot| EgressWorker::new(slot.clone(), slot.grants().bus.clone(), call_timeout, shared_pace))
            .collect();
        Self { workers }
    }
}

impl Capability for Egress {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        for worker in &self.workers {
            worker.spawn(tasks, stop);
        }
        Ok(())
    }
}
