//! What ships beside the binary, checked as its users' tools would check it:
//! the Kubernetes manifests against the API schemas (kubernetes-validate),
//! the alerting rules with promtool (syntax and their own unit tests), and
//! every metric the rules and the Grafana dashboard use against the
//! `/metrics` of a running service.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use harness::fake_twilio::FakeTwilio;
use harness::{Signature, borrowed, minimal_sms};
use serde_yaml::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The Kubernetes version the manifests are written for (`preStop.sleep` is in it).
const KUBERNETES: &str = "1.30.0";

/// The service's manifests (one workload each).
fn manifests() -> Vec<String> {
    ["embedded-bus.yaml", "nats-bus.yaml"].iter().map(|f| format!("{REPO}/deploy/kubernetes/{f}")).collect()
}

/// The NATS cluster the service's promise asks for.
const NATS_CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/nats-cluster.yaml");

fn kubernetes_validate(files: &[String]) -> std::process::Output {
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/.venv/bin/kubernetes-validate");
    assert!(Path::new(tool).exists(), "kubernetes-validate is not installed: run scripts/setup --test");
    Command::new(tool).args(["--strict", "--quiet", "-k", KUBERNETES]).args(files).output().unwrap()
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas() {
    let all: Vec<String> = manifests().into_iter().chain([NATS_CLUSTER.to_owned()]).collect();
    let checked = kubernetes_validate(&all);
    let said = String::from_utf8_lossy(&checked.stdout).into_owned() + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{said}");
    // The control: a misspelt field fails the same check.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&manifests()[0]).unwrap();
    std::fs::write(&broken, text.replacen("readinessProbe:", "readinesProbe:", 1)).unwrap();
    assert!(!kubernetes_validate(&[broken.to_str().unwrap().to_owned()]).status.success());
}

/// The NATS cluster's server configuration holds what docs/bus.md says the
/// promise needs, and nats-server itself accepts it.
#[test]
fn the_nats_cluster_is_three_servers_that_fsync_every_write() {
    let text = std::fs::read_to_string(NATS_CLUSTER).unwrap();
    let documents: Vec<Value> = text.split("\n---\n").map(|d| serde_yaml::from_str(d).unwrap()).collect();
    let set = documents.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(3));
    let conf = harness::nats_cluster::server_config(&text);
    assert!(conf.contains("sync_interval: always"), "{conf}");
    let routes = conf.lines().filter(|l| l.trim_start().starts_with("nats://nats-")).count();
    assert_eq!(routes, 3, "{conf}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nats.conf");
    std::fs::write(&file, conf.replace("$POD_NAME", "nats-0")).unwrap();
    let checked = Command::new(harness::nats_cluster::binary()).arg("-t").arg("-c").arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).into_owned() + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "nats-server -t: {said}");
    // The control: a misspelt setting fails the same check.
    std::fs::write(&file, conf.replace("$POD_NAME", "nats-0").replace("sync_interval", "sync_intervall")).unwrap();
    assert!(!Command::new(harness::nats_cluster::binary()).arg("-t").arg("-c").arg(&file).status().unwrap().success());
}

/// The pod template of each manifest's workload (Deployment or StatefulSet).
fn pod_specs() -> Vec<(String, Value)> {
    let mut specs = Vec::new();
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in text.split("\n---\n") {
            let resource: Value = serde_yaml::from_str(document).unwrap();
            if matches!(resource["kind"].as_str(), Some("Deployment" | "StatefulSet")) {
                specs.push((file.clone(), resource["spec"]["template"]["spec"].clone()));
            }
        }
    }
    specs
}

/// A limit of architecture.yaml, in milliseconds.
fn limit_ms(name: &str) -> u64 {
    let architecture: Value = serde_yaml::from_str(&harness::repo_architecture()).unwrap();
    architecture["services"]["ingress-egress"]["limits"][name].as_u64().unwrap()
}

/// Kubernetes memory (`128Mi`) in MB.
fn megabytes(quantity: &str) -> f64 {
    let mebibytes: f64 = quantity.strip_suffix("Mi").unwrap().parse().unwrap();
    mebibytes * 1.048_576
}

/// The bench's figures: the service's RSS under load, and a first start's
/// peak (bench/results/ingress.json, bench/RESULTS.md's "Costs").
fn bench_rss_mb() -> (f64, f64) {
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{REPO}/bench/results/ingress.json")).unwrap()).unwrap();
    let under_load = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["short"] == "service")
        .map(|run| run["rss_peak_mb"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let results = std::fs::read_to_string(format!("{REPO}/bench/RESULTS.md")).unwrap();
    let first_start =
        results.split("first start's peak RSS under 100 MB: ").nth(1).expect("the first start's peak in RESULTS.md");
    let first_start: f64 = first_start.split(' ').next().unwrap().parse().unwrap();
    (under_load, first_start)
}

#[test]
fn the_pods_drain_as_the_service_does_and_are_sized_from_the_benchmark() {
    let drain_ms = limit_ms("shutdown_drain_ms");
    let grace_ms = limit_ms("shutdown_grace_ms");
    let (under_load, first_start) = bench_rss_mb();
    let specs = pod_specs();
    assert_eq!(specs.len(), 2, "one workload per variant");
    for (file, spec) in specs {
        let container = &spec["containers"][0];
        let env = |name: &str| {
            let entries = container["env"].as_sequence().unwrap();
            entries.iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap().to_owned())
        };
        // Secrets are files, where SECRETS_DIR says.
        let secrets_dir = env("SECRETS_DIR").unwrap();
        let mounts = container["volumeMounts"].as_sequence().unwrap();
        let secrets = mounts.iter().find(|m| m["mountPath"] == secrets_dir.as_str()).expect("secrets mounted");
        let volume = spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == secrets["name"]).unwrap();
        assert!(volume["secret"]["secretName"].is_string(), "{file}: SECRETS_DIR is a Secret");
        // Probes on the service's own routes.
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{file}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{file}");
        // preStop as long as the drain, and time for all of it.
        let pre_stop_ms = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap() * 1000;
        assert_eq!(pre_stop_ms, drain_ms, "{file}: preStop matches shutdown_drain_ms");
        let termination_ms = spec["terminationGracePeriodSeconds"].as_u64().unwrap() * 1000;
        assert!(termination_ms > pre_stop_ms + drain_ms + grace_ms, "{file}: {termination_ms} ms is too short");
        // Memory from the bench: requests cover load, the limit a first start (with margin).
        let resources = &container["resources"];
        let request = megabytes(resources["requests"]["memory"].as_str().unwrap());
        let limit = megabytes(resources["limits"]["memory"].as_str().unwrap());
        assert!(request >= 1.5 * under_load, "{file}: request {request} MB for {under_load} MB under load");
        assert!(limit >= 1.5 * first_start, "{file}: limit {limit} MB for a {first_start} MB first start");
        // Non-root, as the image.
        assert_eq!(spec["securityContext"]["runAsUser"].as_u64(), Some(65532), "{file}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
    }
}

fn promtool(args: &[&str]) {
    let dir = format!("{REPO}/deploy/observability");
    let output = Command::new("promtool").args(args).current_dir(dir).output();
    let output = output.unwrap_or_else(|e| panic!("promtool: {e} (Debian's prometheus package: scripts/setup --test)"));
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}: {said}");
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_own_tests() {
    promtool(&["check", "rules", "prometheus-rules.yaml"]);
    promtool(&["test", "rules", "prometheus-rules.test.yaml"]);
}

/// Every PromQL expression of the rules and the dashboard.
fn expressions() -> Vec<String> {
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{REPO}/deploy/observability/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().iter())
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/deploy/observability/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The metric names in a PromQL expression: identifiers that are not
/// functions, keywords, label names or values, ranges or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Operators, and aggregations (which may come before their `by` list).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Strings, label matchers and ranges go first.
    let mut plain = Vec::new();
    let (mut nested, mut in_string) = (0, false);
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' | '[' => nested += 1,
            '}' | ']' => nested -= 1,
            _ if nested > 0 => {}
            _ => plain.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < plain.len() {
        if !(plain[i].is_ascii_alphabetic() || plain[i] == '_') || (i > 0 && plain[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let start = i;
        while i < plain.len() && (plain[i].is_ascii_alphanumeric() || plain[i] == '_' || plain[i] == ':') {
            i += 1;
        }
        let word: String = plain[start..i].iter().collect();
        let next = plain[i..].iter().position(|c| !c.is_whitespace()).map(|skip| i + skip);
        let opens = next.is_some_and(|at| plain[at] == '(');
        if LABEL_LISTS.contains(&word.as_str()) && opens {
            // A list of label names, not series: skip to its end.
            i = plain[i..].iter().position(|&c| c == ')').map_or(plain.len(), |end| i + end + 1);
        } else if !opens && !KEYWORDS.contains(&word.as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(ingress_http_request_seconds_bucket{route!~"/a|b"}[5m]))) > 0.5
           and on (x) sum without (y) (increase(egress_dead_letters_total[15m])) / clamp_min(spool_depth, 1e-9)"#,
    );
    let expected = ["egress_dead_letters_total", "ingress_http_request_seconds_bucket", "spool_depth"];
    assert_eq!(names.into_iter().collect::<Vec<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exported_by_a_running_service() {
    let fake = FakeTwilio::start().await;
    let service = harness::fast_retry_harness(&fake.base_url()).start().await;
    // One of each: a webhook, a forged one, and an egress send.
    let params = minimal_sms("SM00000000000000000000000000000d01", "metrics");
    let (status, _) =
        harness::post_webhook(service.public_addr, "/twilio/messaging", &borrowed(&params), Signature::Valid).await;
    assert_eq!(status, 200);
    let forged = Signature::Given("AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let (status, _) = harness::post_webhook(service.public_addr, "/twilio/messaging", &borrowed(&params), forged).await;
    assert_eq!(status, 403);
    harness::enqueue(&service, r#"{"to": "+14155550100", "from": "+15005550006", "body": "hi"}"#).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fake.posts().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the send did not reach the fake");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut exported = String::new();
    for _ in 0..100 {
        exported = harness::admin_get(&service, "/metrics").await.1;
        if exported.contains("egress_outcomes_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let present = |name: &str| {
        exported.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    let used: BTreeSet<String> = expressions().iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|name| !present(name)).collect();
    assert!(missing.is_empty(), "used by the rules or the dashboard but not exported: {missing:?}");
    service.stop().await.unwrap();
}

/// The slow-webhook panel links to the traces of its time range, with a
/// query on what the service really exports (its default service name, the
/// webhook span's `http.route`): a renamed attribute breaks the link here.
#[test]
fn the_latency_panel_links_to_the_slow_webhooks_traces() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/deploy/observability/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "traces" && v["query"] == "tempo"), "a traces data source to pick");
    let latency =
        dashboard["panels"].as_array().unwrap().iter().find(|p| p["title"] == "Webhook latency (until durable)");
    let link = &latency.unwrap()["fieldConfig"]["defaults"]["links"][0];
    let url = url::Url::parse(&format!("http://grafana{}", link["url"].as_str().unwrap())).unwrap();
    let panes = url.query_pairs().find(|(k, _)| k == "panes").unwrap().1.into_owned();
    let panes: serde_json::Value = serde_json::from_str(&panes).unwrap();
    let query = panes["a"]["queries"][0]["query"].as_str().unwrap();
    for part in ["resource.service.name = \"ingress-egress\"", "span.http.route", "duration >"] {
        assert!(query.contains(part), "{part} not in {query}");
    }
    assert_eq!(panes["a"]["datasource"], "${traces}");
}
