//! Prometheus metrics, kept in one process-wide registry and rendered as text.
//!
//! Counters and histograms are keyed by name and label values; recording takes
//! a short lock, which is far below the cost of the work being measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    help: BTreeMap<&'static str, (&'static str, &'static str)>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn counter(name: &'static str, help: &'static str, labels: Labels, by: u64) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.help.entry(name).or_insert(("counter", help));
        *r.counters.entry((name, labels)).or_default() += by;
    }
}

fn observe(name: &'static str, help: &'static str, labels: Labels, value: Duration) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.help.entry(name).or_insert(("histogram", help));
        let h = r.histograms.entry((name, labels)).or_default();
        let seconds = value.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }
}

fn outcome(ok: bool) -> String {
    if ok { "ok" } else { "error" }.to_owned()
}

pub fn http_request(route: &str, status: u16) {
    counter(
        "ingress_http_requests_total",
        "HTTP requests by route and status.",
        vec![("route", route.to_owned()), ("status", status.to_string())],
        1,
    );
}

pub fn webhook_rejected(connector: &str, status: u16) {
    counter(
        "ingress_webhooks_rejected_total",
        "Webhooks a connector refused: 400 unsigned or malformed, 403 bad signature.",
        vec![("connector", connector.to_owned()), ("status", status.to_string())],
        1,
    );
}

pub fn bus_publish(topic: &str, took: Duration, ok: bool) {
    counter(
        "bus_published_total",
        "Bus publishes by topic and outcome.",
        vec![("topic", topic.to_owned()), ("outcome", outcome(ok))],
        1,
    );
    observe("bus_publish_seconds", "Time until a publish was durable.", vec![("topic", topic.to_owned())], took);
}

pub fn component_call(connector: &str, call: &'static str, took: Duration, ok: bool) {
    observe(
        "component_call_seconds",
        "Time spent in calls into a connector component.",
        vec![("connector", connector.to_owned()), ("call", call.to_owned())],
        took,
    );
    if !ok {
        counter(
            "component_call_failures_total",
            "Calls into a component that trapped or timed out.",
            vec![("connector", connector.to_owned()), ("call", call.to_owned())],
            1,
        );
    }
}

pub fn outbound_refused(connector: &str) {
    counter(
        "outbound_refused_total",
        "Outbound HTTP requests refused by the allow-list.",
        vec![("connector", connector.to_owned())],
        1,
    );
}

pub fn egress_outcome(connector: &str, outcome: &str) {
    counter(
        "egress_outcomes_total",
        "Egress sends by outcome.",
        vec![("connector", connector.to_owned()), ("outcome", outcome.to_owned())],
        1,
    );
}

pub fn egress_retry(connector: &str) {
    counter(
        "egress_retries_total",
        "Egress sends scheduled for another attempt.",
        vec![("connector", connector.to_owned())],
        1,
    );
}

pub fn dead_letter(connector: &str) {
    counter(
        "egress_dead_letters_total",
        "Egress messages dead-lettered.",
        vec![("connector", connector.to_owned())],
        1,
    );
}

pub fn swap(connector: &str, outcome: &str) {
    counter(
        "connector_swaps_total",
        "Connector hot swaps by outcome (swapped, refused).",
        vec![("connector", connector.to_owned()), ("outcome", outcome.to_owned())],
        1,
    );
}

fn write_labels(out: &mut String, labels: &Labels, extra: Option<(&str, String)>) {
    let all: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .chain(extra.map(|(k, v)| format!("{k}=\"{v}\"")))
        .collect();
    if !all.is_empty() {
        let _ = write!(out, "{{{}}}", all.join(","));
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The registry in Prometheus' text exposition format.
pub fn render() -> String {
    let Ok(r) = REGISTRY.lock() else { return String::new() };
    let mut out = String::new();
    for (name, (kind, help)) in &r.help {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((n, labels), value) in r.counters.iter().filter(|((n, _), _)| n == name) {
            out.push_str(n);
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {value}");
        }
        for ((n, labels), h) in r.histograms.iter().filter(|((n, _), _)| n == name) {
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = write!(out, "{n}_bucket");
                write_labels(&mut out, labels, Some(("le", bound.to_string())));
                let _ = writeln!(out, " {count}");
            }
            let _ = write!(out, "{n}_bucket");
            write_labels(&mut out, labels, Some(("le", "+Inf".to_owned())));
            let _ = writeln!(out, " {}", h.count);
            let _ = write!(out, "{n}_sum");
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {}", h.sum);
            let _ = write!(out, "{n}_count");
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {}", h.count);
        }
    }
    out
}
