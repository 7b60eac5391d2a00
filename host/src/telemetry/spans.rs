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
//! Most traces are not sampled (`traces.rs`). With a parent-based sampler
//! (the default) the service decides a root's sampling itself, before its
//! span is made ([`start`]): an unsampled one gets a span only the log sees
//! (target [`UNTRACED`]), and its messages carry a context of its own with
//! flags `00`. So an unsampled webhook costs the OpenTelemetry layer nothing
//! but a coin flip (docs/performance.md, "Traces"). A span in a sampled
//! trace is described, and no child is made in an unsampled one.

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Key, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::TraceContext;

/// The target of a span whose trace is not sampled: the log shows it as any
/// other, the OpenTelemetry layer never sees it (`traces.rs` filters it out).
pub const UNTRACED: &str = "ingress_egress::untraced";

/// Set once the exporter is installed: the share of root traces sampled when
/// the service decides it (see [`start`]), or none when the SDK decides every span.
static EXPORT: OnceLock<Option<f64>> = OnceLock::new();

/// Whether traces are exported: spans that exist only for a trace (a
/// publish, an outbound request) are made only then.
pub fn exporting() -> bool {
    EXPORT.get().is_some()
}

/// Set once the exporter is installed, with the share of roots it samples.
pub(super) fn start_exporting(root_ratio: Option<f64>) {
    let _ = EXPORT.set(root_ratio);
}

/// How a piece of work that starts or continues a trace (a webhook, an
/// enqueue, a send, a swap) is spanned, decided before its span is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Its span goes to the OpenTelemetry layer, when traces are exported.
    Traced,
    /// Its trace is not sampled: its span is [`UNTRACED`], and what it
    /// publishes carries this context (its parent's, or a new one), flags `00`.
    Untraced(TraceContext),
}

impl Start {
    /// The context the work carries without a span of its own to give one.
    pub fn carried(&self) -> Option<TraceContext> {
        match self {
            Self::Traced => None,
            Self::Untraced(context) => Some(context.clone()),
        }
    }

    /// What a message published inside `span` carries (see [`TraceContext::onward`]).
    pub fn onward(&self, span: &tracing::Span, came_with: Option<&TraceContext>) -> Option<TraceContext> {
        match self {
            Self::Traced => TraceContext::onward(span, came_with),
            Self::Untraced(context) => Some(context.clone()),
        }
    }
}

/// Whether work that came with `parent` (or none: a root) is traced. A
/// parent's decision is followed; a root is sampled at the configured
/// ratio. Always traced while the SDK decides (or nothing is exported).
pub fn start(parent: Option<&TraceContext>) -> Start {
    let Some(Some(ratio)) = EXPORT.get().copied() else { return Start::Traced };
    decide(ratio, parent)
}

fn decide(ratio: f64, parent: Option<&TraceContext>) -> Start {
    match parent {
        Some(parent) if parent.sampled() => Start::Traced,
        Some(parent) => Start::Untraced(parent.clone()),
        None if rand::random_bool(ratio) => Start::Traced,
        None => Start::Untraced(TraceContext::unsampled_root()),
    }
}

/// A span of the service's that may be a trace's root or its parent's
/// child: made as `tracing::info_span!($name, fields…)` when `$start` is
/// [`Start::Traced`] (and then made a child of `$parent`, when there is
/// one), with the target [`UNTRACED`] otherwise.
macro_rules! service_span {
    ($start:expr, $parent:expr, $name:literal, $($fields:tt)*) => {{
        let parent: Option<&$crate::telemetry::TraceContext> = $parent;
        match $start {
            $crate::telemetry::spans::Start::Traced => {
                let span = tracing::info_span!($name, $($fields)*);
                if let Some(parent) = parent {
                    parent.adopt(&span);
                }
                span
            }
            $crate::telemetry::spans::Start::Untraced(_) => {
                tracing::info_span!(target: $crate::telemetry::spans::UNTRACED, $name, $($fields)*)
            }
        }
    }};
}
pub(crate) use service_span;

/// Whether `span` is one only the log sees (its trace is not sampled).
pub fn untraced(span: &tracing::Span) -> bool {
    span.metadata().is_none_or(|metadata| metadata.target() == UNTRACED)
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
    if !exporting() || untraced(span) {
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
    exporting() && !untraced(span) && span.context().span().span_context().is_sampled()
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
    if exporting() && !untraced(span) {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn context(traceparent: &str) -> TraceContext {
        TraceContext { traceparent: traceparent.to_owned(), tracestate: None }
    }

    #[test]
    fn a_parent_decides_and_a_root_is_sampled_at_the_ratio() {
        assert_eq!(decide(0.0, Some(&context(SAMPLED))), Start::Traced);
        assert_eq!(decide(1.0, Some(&context(UNSAMPLED))), Start::Untraced(context(UNSAMPLED)));
        assert_eq!(decide(1.0, None), Start::Traced);
        let Start::Untraced(root) = decide(0.0, None) else { panic!("a root at 0 is not sampled") };
        assert!(TraceContext::from_headers(|_| Some(root.traceparent.as_str())).is_some(), "{root:?}");
        assert!(!root.sampled() && root.traceparent.ends_with("-00"), "{root:?}");
        let traced = (0..10_000).filter(|_| decide(0.1, None) == Start::Traced).count();
        // 10,000 draws at 0.1: 1,000 expected, σ 30.
        assert!((850..1150).contains(&traced), "{traced} of 10,000 sampled at 0.1");
    }

    #[test]
    fn an_untraced_span_is_never_described_nor_sampled() {
        let span = service_span!(Start::Untraced(context(UNSAMPLED)), None, "test", otel.name = tracing::field::Empty);
        assert!(untraced(&span) || span.is_disabled());
        assert!(!sampled(&span));
        assert_eq!(Start::Untraced(context(UNSAMPLED)).onward(&span, None), Some(context(UNSAMPLED)));
    }
}
