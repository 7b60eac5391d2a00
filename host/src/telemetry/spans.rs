//! The OpenTelemetry side of the service's spans: their names, kinds and
//! semantic-convention attributes (`http.route`, `messaging.system`, …).
//!
//! A span carries in `tracing` fields only what the log shows (a route, a
//! message id); what an exported span adds is given here, and only while
//! traces are exported, so that with export off a webhook costs what it did
//! and a log line shows what it did. A span declares `otel.name`,
//! `otel.kind` and `otel.status_code` as empty fields for these to fill, and
//! is described right after it is made and given its parent (a name or kind
//! set once it started would be ignored).
//!
//! Most traces are not sampled (`traces.rs`): for those, describing a span
//! stops at its name, and no child span is made at all, so that a webhook in
//! an unsampled trace costs one span and its sampling decision
//! (docs/performance.md, "Traces").

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TraceContextExt as _;
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

/// Names `span` and, when its trace is sampled, gives it its attributes;
/// nothing when traces are not exported. `attributes` is only called for a
/// sampled span. Its parent must be set before: this starts the span, and
/// its trace's sampling decision is made then.
pub fn describe(
    span: &tracing::Span,
    kind: Kind,
    name: impl FnOnce() -> String,
    attributes: impl FnOnce() -> Vec<(&'static str, Value)>,
) {
    if !exporting() {
        return;
    }
    span.record("otel.name", name().as_str());
    span.record("otel.kind", kind.as_str());
    if !sampled(span) {
        return;
    }
    for (key, value) in attributes() {
        span.set_attribute(Key::from_static_str(key), value);
    }
}

/// Whether `span` is exported: traces are, and its trace was sampled. A
/// span whose parent is not sampled makes no children.
pub fn sampled(span: &tracing::Span) -> bool {
    exporting() && span.context().span().span_context().is_sampled()
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

/// One more attribute of `span` (an outcome, a status code), when it is sampled.
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    attributes(span, || vec![(key, value.into())]);
}

/// More attributes of `span`, when it is sampled (asked once for them all);
/// `attributes` is only called then.
pub fn attributes(span: &tracing::Span, attributes: impl FnOnce() -> Vec<(&'static str, Value)>) {
    if sampled(span) {
        for (key, value) in attributes() {
            span.set_attribute(Key::from_static_str(key), value);
        }
    }
}

/// Marks `span` as failed, when traces are exported.
pub fn failed(span: &tracing::Span) {
    if exporting() {
        span.record("otel.status_code", "ERROR");
    }
}
