//! Logging (tracing, human or JSON), trace export (OpenTelemetry) and
//! Prometheus metrics.

pub mod bounded_log;
pub mod context;
mod log_ids;
pub mod metrics;
pub mod spans;
pub mod traces;

pub use context::TraceContext;
pub use traces::{ExportError, ExportSettings, TraceExport};

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line; inside an exported span, with its `trace_id` and `span_id`.
    Json,
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). Logs
/// go to stderr. With `export`, spans also go to the OTLP endpoint the
/// environment names (see [`traces`]); the returned handle flushes them at exit.
pub fn init(format: LogFormat, export: Option<&ExportSettings>) -> Result<Option<TraceExport>, ExportError> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,cranelift=warn,wasmtime=warn"));
    let traces = export.map(TraceExport::start).transpose()?;
    let otel = traces.as_ref().map(TraceExport::layer);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Human => lines.boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true);
            lines.json().flatten_event(true).event_format(log_ids::WithTraceIds(json)).boxed()
        }
    };
    // The filter applies to the lines; the exported spans have their own (traces.rs).
    let registry = tracing_subscriber::registry().with(otel).with(lines.with_filter(filter));
    if registry.try_init().is_ok() {
        log_ids::remember_dispatch();
    }
    Ok(traces)
}
