//! The OpenTelemetry side of the service's spans: their names, kinds and
//! semantic-convention attributes (`http.route`, `messaging.system`, …).
//!
//! A span carries in `tracing` fields only what the log shows (a route, a
//! message id); what an exported span adds is given here, and only while
//! traces are exported, so that with export off a webhook costs what it did
//! and a log line shows what it did. A span declares `otel.name`,
//! `otel.kind` and `otel.status_code` as empty fields for these to fill, and
//! is described right after it is made (a name or kind set once it started
//! would be ignored).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{Key, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: spans that exist only for a trace (a
/// publish, an outbound request) are made only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Set once the exporter is installed.
pub(super) fn start_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// OpenTelemetry's span kinds, as `otel.kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answers a request (a webhook).
    Server,
    /// Makes a request (to the provider).
    Client,
    /// Publishes a message.
    Producer,
    /// Handles a message taken from the bus.
    Consumer,
    /// Work inside the process (a swap).
    Internal,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Internal => "internal",
        }
    }
}

/// A span's name, and its attributes by their semantic-convention keys.
pub type Description = (String, Vec<(&'static str, Value)>);

/// Names `span` and gives it its attributes, when traces are exported;
/// `describe` is only called then.
pub fn describe(span: &tracing::Span, kind: Kind, describe: impl FnOnce() -> Description) {
    if !exporting() {
        return;
    }
    let (name, attributes) = describe();
    span.record("otel.name", name.as_str());
    span.record("otel.kind", kind.as_str());
    for (key, value) in attributes {
        span.set_attribute(Key::from_static_str(key), value);
    }
}

/// OpenTelemetry's messaging attributes of a publish or a take on `topic`.
pub fn messaging(
    system: &'static str,
    operation: &'static str,
    topic: &str,
    id: Option<&str>,
) -> Vec<(&'static str, Value)> {
    let mut attributes = vec![
        ("messaging.system", system.into()),
        ("messaging.operation.type", operation.into()),
        ("messaging.destination.name", topic.to_owned().into()),
    ];
    if let Some(id) = id {
        attributes.push(("messaging.message.id", id.to_owned().into()));
    }
    attributes
}

/// One more attribute of `span` (an outcome, a status code), when traces are exported.
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    if exporting() {
        span.set_attribute(Key::from_static_str(key), value);
    }
}

/// Marks `span` as failed, when traces are exported.
pub fn failed(span: &tracing::Span) {
    if exporting() {
        span.record("otel.status_code", "ERROR");
    }
}
