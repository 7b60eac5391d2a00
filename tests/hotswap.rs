//! Hot swap: the connector is replaced in a running host, under traffic,
//! without a failed request, a lost or a doubled message.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::fake_twilio::FakeTwilio;
use harness::{Harness, admin_get, admin_post, fixture, messages, post, signed_sms, wait_for_messages};
use ingress_egress::service::RunningService;
use serde_json::Value;

const V1: &str = "0.1.0";
const V2: &str = "0.2.0-test";

fn v1_bytes() -> Vec<u8> {
    ingress_egress::bundled::get("twilio").unwrap().to_vec()
}

fn v2_bytes() -> Vec<u8> {
    std::fs::read(fixture("twilio-v2")).unwrap()
}

/// Replaces the component file the way a deploy would: write aside, rename over.
fn install(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A harness whose Twilio connector is the file it returns, holding version 1.
fn file_backed(watch: bool) -> (Harness, PathBuf) {
    harness::init_test_logs();
    let mut harness = Harness::new();
    let path = harness.dir.path().join("twilio.wasm");
    install(&path, &v1_bytes());
    harness.env.set("CONNECTOR_TWILIO_COMPONENT", path.to_str().unwrap());
    if !watch {
        harness.edit_architecture(|text| text.replace("watch_components: true", "watch_components: false"));
    }
    (harness, path)
}

async fn admin_connector(service: &RunningService) -> Value {
    let (status, body) = admin_get(service, "/admin/connectors").await;
    assert_eq!(status, 200);
    serde_json::from_str::<Value>(&body).unwrap()["connectors"][0].clone()
}

async fn reload(service: &RunningService) -> (u16, Value) {
    let (status, body) = admin_post(service, "/admin/reload", &[], Vec::new()).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_swaps_under_traffic_fail_nothing_lose_nothing_double_nothing() {
    let fake = FakeTwilio::start().await;
    let (mut harness, path) = file_backed(false);
    harness.with_twilio_at(&fake.base_url());
    // The pace per sender is not under test: at its default (10/s) the sends
    // outrun it, and how long the backlog takes to drain depends on how long
    // the swaps took (CI saw 335 sends, 284 settled within the wait).
    harness.set_setting("rate_per_sender", "1000");
    let service = harness.start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let webhooks = tokio::spawn(webhook_traffic(service.public_addr, stop.clone()));
    let sends = tokio::spawn(egress_traffic(service.admin_addr, harness::admin_bearer(&service), stop.clone()));

    for swap in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (bytes, version) = if swap % 2 == 0 { (v2_bytes(), V2) } else { (v1_bytes(), V1) };
        install(&path, &bytes);
        let (status, outcome) = reload(&service).await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["connectors"][0]["outcome"], "swapped", "{outcome}");
        assert_eq!(admin_connector(&service).await["version"], version);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::SeqCst);

    let statuses = webhooks.await.unwrap();
    assert!(statuses.len() > 50, "too little traffic: {}", statuses.len());
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "failed webhooks: {failed:?}");
    assert_eq!(messages(&service, "ingress.twilio.messaging").await.len(), statuses.len());

    let ids = sends.await.unwrap();
    let events = wait_for_messages(&service, "events.twilio.status", ids.len()).await;
    assert_eq!(events.len(), ids.len());
    assert_each_sent_once_by_both_versions(&fake, &ids);
    assert_eq!(admin_connector(&service).await["swap_count"], 10);
    println!(
        "hot swap: 10 swaps under {} webhooks (all 200, all on the bus) and {} sends (each sent once)",
        statuses.len(),
        ids.len()
    );
    service.stop().await.unwrap();
}

/// Signed webhooks with fresh sids until `stop`; their statuses.
async fn webhook_traffic(public: SocketAddr, stop: Arc<AtomicBool>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..2000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        statuses.push(signed_sms(public, &format!("SM{i:032x}")).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    statuses
}

/// Egress messages, each enqueued once, until `stop`; their ids.
async fn egress_traffic(admin: SocketAddr, bearer: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    let mut ids = Vec::new();
    for i in 0..400 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("swap-{i}");
        let body = format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "{id}"}}"#);
        let (status, _) = post(admin, "/v1/messages", &headers, body.into_bytes()).await;
        assert_eq!(status, 202);
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    ids
}

/// Every id reached Twilio exactly once, and both versions sent some.
fn assert_each_sent_once_by_both_versions(fake: &FakeTwilio, ids: &[String]) {
    let mut sent_per_id: HashMap<String, usize> = HashMap::new();
    let mut versions_seen: HashMap<String, usize> = HashMap::new();
    for request in fake.received() {
        let body = request.form.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone()).unwrap();
        *sent_per_id.entry(body).or_default() += 1;
        *versions_seen.entry(request.header("user-agent").unwrap_or_default().to_owned()).or_default() += 1;
    }
    for id in ids {
        assert_eq!(sent_per_id.get(id), Some(&1), "{id} sent {:?} times", sent_per_id.get(id));
    }
    assert!(versions_seen.contains_key(&format!("ingress-egress-twilio/{V1}")), "{versions_seen:?}");
    assert!(versions_seen.contains_key(&format!("ingress-egress-twilio/{V2}")), "{versions_seen:?}");
}

#[tokio::test]
async fn broken_components_are_refused_and_the_old_one_keeps_serving() {
    let (harness, path) = file_backed(false);
    let service = harness.start().await;
    let truncated = v1_bytes()[..v1_bytes().len() / 2].to_vec();
    let trap_in_describe = std::fs::read(fixture("probe-trap-describe")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", truncated, "does not compile"),
        ("missing exports", b"(component)".to_vec(), "does not link"),
        ("traps in describe", trap_in_describe, "does not answer describe()"),
    ];
    for (i, (case, bytes, expected)) in cases.into_iter().enumerate() {
        install(&path, &bytes);
        let (status, outcome) = reload(&service).await;
        assert_eq!(status, 422, "{case}: {outcome}");
        let reason = outcome["connectors"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(expected), "{case}: {reason}");
        // Traffic carries on, on the old component.
        assert_eq!(signed_sms(service.public_addr, &format!("SM{i:032x}")).await, 200, "{case}");
        let connector = admin_connector(&service).await;
        assert_eq!(connector["version"], V1);
        assert_eq!(connector["swap_count"], 0);
        assert!(connector["last_refusal"]["reason"].as_str().unwrap().contains(expected), "{connector}");
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_file_is_swapped_in_by_the_watcher() {
    let (harness, path) = file_backed(true);
    swapped_by_the_watcher(&harness, &path).await;
}

#[tokio::test]
async fn a_changed_file_is_swapped_in_by_the_polling_watcher() {
    let (mut harness, path) = file_backed(true);
    harness.edit_architecture(|text| {
        text.replace("watch_components: true", "watch_components: true\n    watch_polling: true")
    });
    swapped_by_the_watcher(&harness, &path).await;
}

async fn swapped_by_the_watcher(harness: &Harness, path: &Path) {
    let service = harness.start().await;
    install(path, &v2_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while admin_connector(&service).await["version"] != V2 {
        assert!(tokio::time::Instant::now() < deadline, "the watcher did not swap within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(signed_sms(service.public_addr, "SM00000000000000000000000000000abc").await, 200);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn compiled_components_are_reused_across_restarts_and_swaps_back() {
    let (harness, path) = file_backed(false);
    let compiled = async |service: &RunningService| admin_connector(service).await["compiled"].clone();
    // The bundled component's bytes, on an empty data directory: compiled when the binary was built.
    let service = harness.start().await;
    assert_eq!(compiled(&service).await, "precompiled");
    install(&path, &v2_bytes());
    assert_eq!(reload(&service).await.1["connectors"][0]["outcome"], "swapped");
    assert_eq!(compiled(&service).await, "compiled");
    install(&path, &v1_bytes());
    assert_eq!(reload(&service).await.1["connectors"][0]["outcome"], "swapped");
    assert_eq!(compiled(&service).await, "precompiled");
    // Back to a version compiled before: from the cache.
    install(&path, &v2_bytes());
    assert_eq!(reload(&service).await.1["connectors"][0]["outcome"], "swapped");
    assert_eq!(compiled(&service).await, "cache");
    assert_eq!(admin_connector(&service).await["compiled_from_cache"], true);
    service.stop().await.unwrap();
    let restarted = harness.start().await;
    assert_eq!(compiled(&restarted).await, "cache");
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_reload_command_swap_a_running_service() {
    let (mut harness, path) = file_backed(false);
    let (mut child, _, admin) = harness.spawn_serve().await;
    let bearer = harness.admin_bearer();
    let version = || async {
        let (_, body) = harness::get_with(admin, "/admin/connectors", &[("authorization", &bearer)]).await;
        serde_json::from_str::<Value>(&body).unwrap()["connectors"][0]["version"].as_str().unwrap().to_owned()
    };
    assert_eq!(version().await, V1);

    install(&path, &v2_bytes());
    assert!(std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while version().await != V2 {
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not swap");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    install(&path, &v1_bytes());
    let reloaded = harness.command(&["reload"], None).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(reloaded.success());
    assert_eq!(version().await, V1);

    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_file_that_vanishes_mid_swap_is_refused_and_the_old_one_keeps_serving() {
    let (harness, path) = file_backed(true);
    let service = harness.start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(webhook_traffic(service.public_addr, stop.clone()));

    // A deploy that dies half-way: the file is written in place, partly, then removed.
    std::fs::write(&path, &v2_bytes()[..4096]).unwrap();
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await; // past the watcher's settle time
    let (status, outcome) = reload(&service).await;
    assert_eq!(status, 422, "{outcome}");
    let reason = outcome["connectors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains(path.to_str().unwrap()), "the reason names the file: {reason}");
    let connector = admin_connector(&service).await;
    assert_eq!((connector["version"].as_str(), connector["swap_count"].as_u64()), (Some(V1), Some(0)), "{connector}");

    // The next deploy goes through.
    install(&path, &v2_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while admin_connector(&service).await["version"] != V2 {
        assert!(tokio::time::Instant::now() < deadline, "the watcher did not swap within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|&s| s == 200), "a webhook failed during the swaps: {statuses:?}");
    service.stop().await.unwrap();
}
