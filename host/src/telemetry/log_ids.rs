//! JSON log lines that join traces: a line written inside an exported span
//! carries that span's `trace_id` and `span_id` at its top level, where log
//! stores (Loki, Elasticsearch) look for them to link a line to its trace.

use std::fmt;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The process's subscriber, once installed: where a span's OpenTelemetry
/// context is looked up while a line is formatted (the thread's current
/// dispatcher is not reachable from inside its own callbacks).
static DISPATCH: OnceLock<tracing::dispatcher::WeakDispatch> = OnceLock::new();

/// Remembers the installed subscriber; call once, right after installing it.
pub fn remember_dispatch() {
    tracing::dispatcher::get_default(|dispatch| {
        let _ = DISPATCH.set(dispatch.downgrade());
    });
}

/// Wraps a JSON event format, adding `"trace_id"` and `"span_id"` first.
#[derive(Debug)]
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some((trace_id, span_id)) = ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The current span's trace and span ids, when it is exported.
fn ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx.lookup_current()?;
    let dispatch = DISPATCH.get()?.upgrade()?;
    let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}
