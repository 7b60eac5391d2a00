//! The W3C trace context a message carries on the bus (`traceparent`, and
//! `tracestate` when present), so that whoever consumes it continues the
//! trace that produced it: NATS headers on JetStream, a column on the
//! embedded bus, the `traceparent` header of `POST /v1/messages`.

use std::collections::HashMap;
use std::future::Future;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

tokio::task_local! {
    /// The context of a task's untraced work (`spans::Start::Untraced`).
    static CARRIED: TraceContext;
}

/// The header names, as W3C Trace Context spells them.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// One message's trace context, as W3C headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    /// Vendors' own entries, passed along unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context from a message's headers, when they hold a valid
    /// `traceparent` (a malformed one is ignored, as W3C asks).
    pub fn from_headers<'a>(mut header: impl FnMut(&str) -> Option<&'a str>) -> Option<Self> {
        let traceparent = header(TRACEPARENT)?.trim();
        let tracestate = header(TRACESTATE).map(str::trim).filter(|s| !s.is_empty());
        let carrier: HashMap<String, String> = [(TRACEPARENT, Some(traceparent)), (TRACESTATE, tracestate)]
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
            .collect();
        let context = TraceContextPropagator::new().extract(&carrier);
        context
            .span()
            .span_context()
            .is_valid()
            .then(|| Self { traceparent: traceparent.to_ascii_lowercase(), tracestate: tracestate.map(str::to_owned) })
    }

    /// The context of the span the caller is in, when traces are exported
    /// (otherwise there is none to give).
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// The context of `span`, when traces are exported.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        if !super::spans::exporting() || super::spans::untraced(span) {
            return None;
        }
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return None;
        }
        // W3C's version 00, as the SDK's propagator writes it, without its map
        // of strings: this runs for every message published.
        let flags = span_context.trace_flags().to_u8();
        let traceparent = format!("00-{}-{}-{flags:02x}", span_context.trace_id(), span_context.span_id());
        let state = span_context.trace_state().header();
        Some(Self { traceparent, tracestate: (!state.is_empty()).then_some(state) })
    }

    /// What a message published inside `span` carries: the span's own context
    /// when traces are exported; otherwise the context the work came with,
    /// passed along, so a trace the platform started goes on past a host
    /// that exports nothing.
    pub fn onward(span: &tracing::Span, came_with: Option<&Self>) -> Option<Self> {
        Self::of(span).or_else(|| came_with.cloned())
    }

    /// Makes `span` a child of this context (a no-op when traces are not exported).
    pub fn adopt(&self, span: &tracing::Span) {
        let carrier: HashMap<String, String> = self.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let parent = TraceContextPropagator::new().extract(&carrier);
        // Fails only when the span was already started: ours are adopted at once.
        let _ = span.set_parent(parent);
    }

    /// The headers, as they go on a message.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|state| (TRACESTATE, state)))
    }

    /// Whether the trace is sampled (the `sampled` flag of its `traceparent`).
    pub fn sampled(&self) -> bool {
        let flags = self.traceparent.get(53..55).and_then(|flags| u8::from_str_radix(flags, 16).ok());
        flags.is_some_and(|flags| flags & 1 == 1)
    }

    /// A new trace that is not sampled: what a root's messages carry when
    /// its span is not exported (`spans::start`), so that whoever consumes
    /// them follows the decision and can still name the trace in a log.
    pub fn unsampled_root() -> Self {
        let trace_id = rand::random_range(1..=u128::MAX);
        let span_id = rand::random_range(1..=u64::MAX);
        Self { traceparent: format!("00-{trace_id:032x}-{span_id:016x}-00"), tracestate: None }
    }

    /// Runs `work` carrying `context`: what it publishes without a span of
    /// its own to give a context carries this one ([`Self::carried`]).
    pub async fn carry<F: Future>(context: Option<Self>, work: F) -> F::Output {
        match context {
            Some(context) => CARRIED.scope(context, work).await,
            None => work.await,
        }
    }

    /// The context the work in progress carries (see [`Self::carry`]).
    pub fn carried() -> Option<Self> {
        CARRIED.try_with(Clone::clone).ok()
    }

    /// The trace's id (32 hex digits), as a trace viewer shows it.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        TraceContext::from_headers(|name| match name {
            TRACEPARENT => Some(traceparent),
            TRACESTATE => tracestate,
            _ => None,
        })
    }

    #[test]
    fn a_valid_traceparent_is_kept_with_its_state_and_a_malformed_one_is_ignored() {
        let context = parse(VALID, Some("vendor=x")).unwrap();
        assert_eq!(context.traceparent, VALID);
        assert_eq!(context.tracestate.as_deref(), Some("vendor=x"));
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.headers().collect::<Vec<_>>(), [(TRACEPARENT, VALID), (TRACESTATE, "vendor=x")]);
        for malformed in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(malformed, None), None, "{malformed:?}");
        }
    }

    #[test]
    fn the_sampled_flag_is_read_from_the_traceparent() {
        assert!(parse(VALID, None).unwrap().sampled());
        assert!(!parse(&VALID.replace("-01", "-00"), None).unwrap().sampled());
        assert!(parse(&VALID.replace("-01", "-03"), None).unwrap().sampled());
    }

    #[tokio::test]
    async fn carried_work_sees_its_context_and_other_work_none() {
        let came = parse(VALID, None).unwrap();
        let seen = TraceContext::carry(Some(came.clone()), async { TraceContext::carried() }).await;
        assert_eq!(seen, Some(came));
        assert_eq!(TraceContext::carry(None, async { TraceContext::carried() }).await, None);
    }

    #[test]
    fn without_export_there_is_no_context_of_our_own_and_one_that_came_goes_on() {
        let span = tracing::info_span!("test");
        assert_eq!(TraceContext::of(&span), None);
        let came = parse(VALID, None).unwrap();
        assert_eq!(TraceContext::onward(&span, Some(&came)), Some(came));
    }
}
