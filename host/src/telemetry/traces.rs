//! Trace export: OpenTelemetry over OTLP (HTTP/protobuf), configured by the
//! standard `OTEL_*` environment variables, fed by the service's own
//! `tracing` spans through `tracing-opentelemetry`.
//!
//! Nothing is exported, and the OpenTelemetry layer is not even installed,
//! unless an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not
//! `true`: an unset endpoint costs nothing.
//!
//! Only spans go out, never log events: a log line may quote what a caller
//! sent, a span carries only the attributes the code names (see
//! docs/operations.md, "Traces"). Spans are queued in a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048) drained by a thread of the SDK's own;
//! while the collector is away, what does not fit is dropped, not kept.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The service name when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
const DEFAULT_SERVICE_NAME: &str = "ingress-egress";

/// The share of traces started here (a webhook, an egress message that came
/// without a trace context) that are sampled when `OTEL_TRACES_SAMPLER` is
/// unset. A message that arrives with a context follows its parent's
/// decision. 1%: at this service's rate that is still tens of traces a
/// second per host, and a sampled webhook costs about a quarter more CPU
/// than an unsampled one, so 10% would cost about 11% of the service's CPU
/// (bench/run side by side, docs/performance.md "Traces"); an operator who
/// wants more sets `OTEL_TRACES_SAMPLER_ARG` with `parentbased_traceidratio`.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// How long the exporter waits for the collector, per batch, unless
/// `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise: the queue keeps filling meanwhile.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What is left to flush at exit is given this long.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

/// Where traces go, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The share of traces started here that are sampled, when the service
    /// decides it itself (a parent-based sampler, or none named): see
    /// [`root_ratio`]. None when the SDK decides every span (`always_on`,
    /// `always_off`, `traceidratio`, which ignore a parent).
    root_ratio: Option<f64>,
    /// Whether no sampler was named (the default applies).
    default_sampler: bool,
    /// For `check` to show: the endpoint, and the sampler named.
    endpoint: String,
    sampler: String,
}

impl std::fmt::Display for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.default_sampler, self.root_ratio) {
            (true, Some(ratio)) => {
                write!(f, "exported to {} (http/protobuf), sampler parentbased_traceidratio {ratio}", self.endpoint)
            }
            _ => write!(f, "exported to {} (http/protobuf), sampler {}", self.endpoint, self.sampler),
        }
    }
}

/// Why the `OTEL_*` variables cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A protocol this build does not speak.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL {0:?} is not supported: use http/protobuf (an OpenTelemetry Collector's port 4318)"
    )]
    Protocol(String),
    /// The exporter refused its configuration (an endpoint that is not a URL, say).
    #[error("trace export: {0}")]
    Exporter(String),
}

impl ExportSettings {
    /// The export the environment asks for; none when no endpoint is set,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ExportError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if disabled || endpoint.is_none() {
            return Ok(None);
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p.trim() != "http/protobuf") {
            return Err(ExportError::Protocol(protocol));
        }
        let sampler = set("OTEL_TRACES_SAMPLER");
        let argument = set("OTEL_TRACES_SAMPLER_ARG");
        let root_ratio = root_ratio(sampler.as_deref(), argument.as_deref());
        let default_sampler = sampler.is_none();
        let sampler = sampler.map(|name| match argument {
            Some(arg) => format!("{name} {arg}"),
            None => name,
        });
        let endpoint = endpoint.unwrap_or_default();
        Ok(Some(Self { root_ratio, default_sampler, endpoint, sampler: sampler.unwrap_or_default() }))
    }
}

/// The share of root traces sampled when the sampler is parent-based (or
/// none is named), as the SDK reads `OTEL_TRACES_SAMPLER[_ARG]`: a root is
/// then decided before its span is made, so that an unsampled webhook costs
/// no span in the OpenTelemetry layer at all (docs/performance.md,
/// "Traces"). None for the samplers that ignore a parent, which the SDK
/// applies to every span.
fn root_ratio(sampler: Option<&str>, argument: Option<&str>) -> Option<f64> {
    let Some(sampler) = sampler.map(str::trim) else { return Some(DEFAULT_SAMPLE_RATIO) };
    match sampler {
        "always_on" | "always_off" | "traceidratio" => None,
        "parentbased_always_off" => Some(0.0),
        // As the SDK: an argument that is missing or not a share is 1.0.
        "parentbased_traceidratio" => {
            Some(argument.and_then(|a| a.trim().parse::<f64>().ok()).filter(|r| (0.0..=1.0).contains(r)).unwrap_or(1.0))
        }
        // parentbased_always_on, and what the SDK does not know (it falls back to that).
        _ => Some(1.0),
    }
}

/// The exporting half of tracing: flushes what is queued when the process ends.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Builds the exporter and its batch processor. Must run outside the
    /// async runtime: the exporter's HTTP client keeps a runtime of its own,
    /// so exporting never competes with requests for the service's threads.
    pub fn start(settings: &ExportSettings) -> Result<Self, ExportError> {
        // reqwest's rustls wants a process-wide provider; the host uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if std::env::var_os("OTEL_EXPORTER_OTLP_TIMEOUT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_none()
        {
            exporter = exporter.with_timeout(EXPORT_TIMEOUT);
        }
        let exporter = exporter.build().map_err(|e| ExportError::Exporter(e.to_string()))?;
        let mut builder = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource());
        if settings.root_ratio.is_some() {
            // A root span is made in the OpenTelemetry layer only once the
            // service sampled it (`spans::start`); a child follows its parent.
            builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        }
        super::spans::start_exporting(settings.root_ratio);
        Ok(Self { provider: builder.build() })
    }

    /// The layer that turns the service's spans (its own, at info and above)
    /// into exported ones. Log events stay out (see the module's doc).
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("ingress-egress");
        // The hint keeps debug and trace call sites elsewhere disabled at
        // their call site, as the log filter alone would.
        let spans_of_ours = tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.is_span()
                && metadata.target().starts_with("ingress_egress")
                && metadata.target() != super::spans::UNTRACED
                && *metadata.level() <= tracing::Level::INFO
        })
        .with_max_level_hint(tracing::Level::INFO);
        // Off: the OpenTelemetry context attached, and busy and idle times
        // taken, at every enter and exit of a span. A webhook's span is
        // entered at every poll of its future (tens of times); with these on,
        // even unsampled traces cost a fifth more CPU per webhook (bench/run).
        // The service reads a span's context itself (`TraceContext::of`).
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_filter(spans_of_ours)
    }

    /// Exports what is queued, waiting a bounded time (a collector away costs at most that).
    pub fn flush_and_stop(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_AT_EXIT) {
            tracing::warn!(%error, "traces still queued at exit were not exported");
        }
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` as the SDK reads them,
/// with this service's name where neither names one.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named { builder.build() } else { builder.with_service_name(DEFAULT_SERVICE_NAME).build() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>, ExportError> {
        ExportSettings::from_env(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        assert!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).unwrap().is_some());
        let traces_only = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces");
        assert!(settings(&[traces_only]).unwrap().is_some());
    }

    #[test]
    fn the_default_sampler_applies_only_when_none_is_named_and_grpc_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let default = settings(&[endpoint]).unwrap().unwrap();
        assert_eq!((default.root_ratio, default.default_sampler), (Some(DEFAULT_SAMPLE_RATIO), true));
        let named = ("OTEL_TRACES_SAMPLER", "always_on");
        assert_eq!(settings(&[endpoint, named]).unwrap().unwrap().root_ratio, None);
        let grpc = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(grpc.to_string().contains("\"grpc\" is not supported: use http/protobuf"), "{grpc}");
        assert!(settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap().is_some());
    }

    #[test]
    fn a_parent_based_sampler_has_its_roots_decided_by_the_service_and_the_others_by_the_sdk() {
        assert_eq!(root_ratio(None, Some("0.5")), Some(DEFAULT_SAMPLE_RATIO));
        assert_eq!(root_ratio(Some("parentbased_always_on"), None), Some(1.0));
        assert_eq!(root_ratio(Some("parentbased_always_off"), None), Some(0.0));
        assert_eq!(root_ratio(Some("parentbased_traceidratio"), Some(" 0.25 ")), Some(0.25));
        for unusable in [None, Some("2"), Some("-0.1"), Some("half")] {
            assert_eq!(root_ratio(Some("parentbased_traceidratio"), unusable), Some(1.0), "{unusable:?}");
        }
        assert_eq!(root_ratio(Some("xray"), None), Some(1.0));
        for own in ["always_on", "always_off", "traceidratio"] {
            assert_eq!(root_ratio(Some(own), Some("0.5")), None, "{own}");
        }
    }
}
