//! Prometheus metrics through the `metrics` facade and its Prometheus exporter.
//!
//! Recording is an atomic update on a handle the exporter's sharded registry
//! hands out, so the request path never waits on a lock held by a scrape. The
//! functions below are the service's whole vocabulary of metrics: one place
//! names them, says what they mean and which labels they carry.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MetricsConfig;
use crate::lifecycle::Capability;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders
/// it. Every entry point that records (the service, the tests' in-process
/// hosts) calls this first; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).expect("the bucket list is a non-empty constant");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                // Another recorder owns the process (an embedding program):
                // keep a private one so `/metrics` still answers, empty.
                tracing::warn!(%error, "metrics recorder already installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        handle
    })
}

/// The metrics in Prometheus' text exposition format.
pub fn render() -> String {
    install().render()
}

/// The metrics capability: folds buffered histogram samples into their
/// buckets between scrapes, so an unscraped service holds none without bound.
#[derive(Debug)]
pub struct MetricsUpkeep {
    interval: Duration,
}

impl MetricsUpkeep {
    /// Upkeep at the configured interval.
    pub fn new(config: &MetricsConfig) -> Self {
        Self { interval: config.upkeep_interval }
    }
}

impl Capability for MetricsUpkeep {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        let handle = install();
        let stop = stop.clone();
        tasks.spawn(async move {
            while crate::lifecycle::tick(self.interval, &stop).await {
                handle.run_upkeep();
            }
        });
        Ok(())
    }
}

fn describe() {
    describe_counter!("ingress_http_requests_total", "HTTP requests by route and status.");
    describe_histogram!(
        "ingress_http_request_seconds",
        Unit::Seconds,
        "Time to answer a public request (for a webhook: until it was durable), by route."
    );
    describe_counter!(
        "ingress_webhooks_rejected_total",
        "Webhooks a connector refused: 400 unsigned or malformed, 403 bad signature."
    );
    describe_counter!("bus_published_total", "Bus publishes by topic and outcome.");
    describe_histogram!("bus_publish_seconds", Unit::Seconds, "Time until a publish was durable.");
    describe_histogram!("component_call_seconds", Unit::Seconds, "Time spent in calls into a connector component.");
    describe_counter!("component_call_failures_total", "Calls into a component that trapped or timed out.");
    describe_counter!("outbound_refused_total", "Outbound HTTP requests refused by the allow-list.");
    describe_counter!("egress_outcomes_total", "Egress sends by outcome.");
    describe_counter!("egress_retries_total", "Egress sends scheduled for another attempt.");
    describe_counter!("egress_dead_letters_total", "Egress messages dead-lettered.");
    describe_counter!("egress_redriven_total", "Dead letters sent again (redrive), by dead-letter topic.");
    describe_counter!("connector_swaps_total", "Connector hot swaps by outcome (swapped, refused).");
    describe_counter!("admin_auth_failures_total", "Admin requests refused for a missing or wrong bearer token.");
    describe_counter!("connector_events_total", "Events a connector counts itself, by connector and event.");
    describe_counter!("connections_shed_total", "Public connections closed at once: max_connections were open.");
    describe_counter!("accept_errors_total", "Failed accepts (descriptors exhausted, …), each followed by a back-off.");
    describe_gauge!("connections_open", "Public connections open now.");
    describe_gauge!("spool_depth", "Publishes waiting in the spool for the bus to come back.");
    describe_gauge!("spool_oldest_seconds", Unit::Seconds, "How long the oldest spooled publish has waited.");
    describe_counter!("spool_spooled_total", "Publishes the bus did not take in time, written to the spool.");
    describe_counter!("spool_drained_total", "Spooled publishes republished on the bus.");
    describe_gauge!(
        "connector_credential_sets",
        "Credential sets (tenants) a connector has loaded from its directory."
    );
    describe_gauge!(
        "connector_credential_set_problems",
        "Folders of a connector's credential-set directory left out as malformed."
    );
    describe_gauge!("connector_cache_entries", "Entries in a connector's in-memory cache.");
    describe_counter!(
        "connector_cache_fetches_total",
        "Leave to fetch a cache entry from the provider, by outcome: granted, in-flight (another fetches it), exhausted (rate or concurrency bound)."
    );
}

/// Exports at 0 the series the alerts and the dashboard in
/// `deploy/observability/` watch, for `connectors`: a counter that appears
/// only at its first event makes `increase()` miss that event, and a missing
/// series reads as "no data" rather than as none. Gauges are only registered,
/// never reset (another service in the same process may own them).
pub fn register_watched(connectors: &[&str]) {
    for &connector in connectors {
        let name = || connector.to_owned();
        counter!("egress_retries_total", "connector" => name()).increment(0);
        counter!("egress_dead_letters_total", "connector" => name()).increment(0);
        for outcome in ["swapped", "refused"] {
            counter!("connector_swaps_total", "connector" => name(), "outcome" => outcome).increment(0);
        }
        for call in ["http", "send"] {
            counter!("component_call_failures_total", "connector" => name(), "call" => call).increment(0);
        }
    }
    counter!("connections_shed_total").increment(0);
    counter!("accept_errors_total").increment(0);
    counter!("admin_auth_failures_total").increment(0);
    gauge!("spool_depth").increment(0.0);
    gauge!("spool_oldest_seconds").increment(0.0);
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

/// One HTTP request answered on the public listener, `took` from its head to
/// the head of its answer; `route` is the configured route (never the raw
/// path, which would be unbounded).
pub fn http_request(route: &str, status: u16, took: Duration) {
    counter!("ingress_http_requests_total", "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    histogram!("ingress_http_request_seconds", "route" => route.to_owned()).record(took);
}

/// A webhook the connector refused.
pub fn webhook_rejected(connector: &str, status: u16) {
    counter!("ingress_webhooks_rejected_total", "connector" => connector.to_owned(), "status" => status.to_string())
        .increment(1);
}

/// One publish to the bus, durable (`ok`) or refused.
pub fn bus_publish(topic: &str, took: Duration, ok: bool) {
    counter!("bus_published_total", "topic" => topic.to_owned(), "outcome" => outcome(ok)).increment(1);
    histogram!("bus_publish_seconds", "topic" => topic.to_owned()).record(took);
}

/// One call into a component; failures are traps and timeouts.
pub fn component_call(connector: &str, call: &'static str, took: Duration, ok: bool) {
    histogram!("component_call_seconds", "connector" => connector.to_owned(), "call" => call).record(took);
    if !ok {
        counter!("component_call_failures_total", "connector" => connector.to_owned(), "call" => call).increment(1);
    }
}

/// An outbound request the allow-list refused.
pub fn outbound_refused(connector: &str) {
    counter!("outbound_refused_total", "connector" => connector.to_owned()).increment(1);
}

/// The outcome of one egress send (`accepted`, `retry`, `rejected`, …).
pub fn egress_outcome(connector: &str, outcome: &'static str) {
    counter!("egress_outcomes_total", "connector" => connector.to_owned(), "outcome" => outcome).increment(1);
}

/// An egress send scheduled for another attempt.
pub fn egress_retry(connector: &str) {
    counter!("egress_retries_total", "connector" => connector.to_owned()).increment(1);
}

/// An egress message moved to the dead-letter topic.
pub fn dead_letter(connector: &str) {
    counter!("egress_dead_letters_total", "connector" => connector.to_owned()).increment(1);
}

/// A dead letter of `topic` sent again (`redrive`).
pub fn redriven(topic: &str) {
    counter!("egress_redriven_total", "topic" => topic.to_owned()).increment(1);
}

/// A hot swap, `swapped` or `refused`.
pub fn swap(connector: &str, outcome: &'static str) {
    counter!("connector_swaps_total", "connector" => connector.to_owned(), "outcome" => outcome).increment(1);
}

/// The spool's depth and the age of its oldest entry.
pub fn spool(depth: u64, oldest: Duration) {
    gauge!("spool_depth").set(depth as f64);
    gauge!("spool_oldest_seconds").set(oldest.as_secs_f64());
}

/// One publish written to the spool.
pub fn spooled() {
    counter!("spool_spooled_total").increment(1);
}

/// Spooled publishes that reached the bus.
pub fn drained(count: u64) {
    counter!("spool_drained_total").increment(count);
}

/// An admin request refused for its credentials.
pub fn admin_auth_failure() {
    counter!("admin_auth_failures_total").increment(1);
}

/// A public connection closed at once because `max_connections` were open.
pub fn connection_shed() {
    counter!("connections_shed_total").increment(1);
}

/// The public connections open now.
pub fn connections_open(open: usize) {
    gauge!("connections_open").set(open as f64);
}

/// An accept that failed (the listener backs off before the next).
pub fn accept_error() {
    counter!("accept_errors_total").increment(1);
}

/// How many credential sets a connector has, and how many folders were left out.
pub fn credential_sets(connector: &str, loaded: usize, problems: usize) {
    gauge!("connector_credential_sets", "connector" => connector.to_owned()).set(loaded as f64);
    gauge!("connector_credential_set_problems", "connector" => connector.to_owned()).set(problems as f64);
}

/// The entries in a connector's cache.
pub fn cache_entries(connector: &str, entries: usize) {
    gauge!("connector_cache_entries", "connector" => connector.to_owned()).set(entries as f64);
}

/// One request for leave to fetch: `granted`, `in-flight` or `exhausted`.
pub fn cache_fetch(connector: &str, outcome: &'static str) {
    counter!("connector_cache_fetches_total", "connector" => connector.to_owned(), "outcome" => outcome).increment(1);
}

/// An event a connector counted (its name checked by the caller).
pub fn connector_event(connector: &str, event: &str, by: u64) {
    counter!("connector_events_total", "connector" => connector.to_owned(), "event" => event.to_owned()).increment(by);
}
