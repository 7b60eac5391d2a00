//! Egress: enqueueing messages on a connector's egress topic, and the worker
//! that sends them.

mod rate;
mod worker;

pub use worker::{EgressWorker, backoff};

use crate::bus::wire::EgressRequest;
use crate::bus::{Bus, BusError};
use crate::config::ConnectorConfig;

/// The stream a connector consumes egress messages from.
pub const EGRESS_STREAM: &str = "egress";
/// Where the outcome of each message is published.
pub const STATUS_STREAM: &str = "status";
/// Where messages that will not be sent go, with the reason.
pub const DEADLETTER_STREAM: &str = "deadletter";

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Checks the shape of an egress message and publishes it; returns its id.
/// The id is the de-duplication key: enqueueing the same id twice sends once.
pub async fn enqueue(
    bus: &dyn Bus,
    connector: &ConnectorConfig,
    mut message: EgressRequest,
) -> Result<String, EnqueueError> {
    let topic = connector
        .topics
        .get(EGRESS_STREAM)
        .ok_or_else(|| EnqueueError::Invalid(format!("connector {} has no egress topic", connector.name)))?;
    match (&message.to, &message.conversation_sid) {
        (Some(_), Some(_)) => return Err(EnqueueError::Invalid("give either to or conversation_sid, not both".into())),
        (None, None) => return Err(EnqueueError::Invalid("a message needs to or conversation_sid".into())),
        _ => {}
    }
    if message.body.as_deref().is_none_or(str::is_empty) && message.media_urls.is_empty() {
        return Err(EnqueueError::Invalid("a message needs a body or media_urls".into()));
    }
    let id = match &message.id {
        Some(id) if !id.trim().is_empty() => id.clone(),
        Some(_) => return Err(EnqueueError::Invalid("id must not be empty".into())),
        None => uuid_v4(),
    };
    message.id = Some(id.clone());
    let payload = serde_json::to_vec(&message).map_err(|e| EnqueueError::Invalid(e.to_string()))?;
    bus.publish(topic, Some(&id), payload).await?;
    Ok(id)
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}
