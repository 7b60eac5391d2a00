//! A second connector beside Twilio in one host, from architecture.yaml alone:
//! the probe fixture, with routes, topics and a secret of its own, and without
//! the optional `tokens` and `simulator` exports.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{Harness, admin_get, admin_post, post, signed_sms, wait_for_messages};
use ingress_egress::server::admin::{ConnectorList, ConnectorView};
use ingress_egress::service::RunningService;

async fn post_json(service: &RunningService, path: &str, body: &str) -> (u16, String) {
    admin_post(service, path, &[("content-type", "application/json")], body.as_bytes().to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connector_serves_beside_twilio_with_its_own_routes_topics_and_secrets() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    let service = harness.start().await;
    let (public, admin) = (service.public_addr, &service);

    // Ingress: each connector publishes on its own topics only.
    assert_eq!(signed_sms(public, "SM00000000000000000000000000000001").await, 200);
    assert_eq!(post(public, "/probe/publish?key=k1", &[], Vec::new()).await, (200, "published".into()));
    assert_eq!(post(public, "/probe/publish?key=k1", &[], Vec::new()).await, (200, "duplicate".into()));
    let probe_events = wait_for_messages(&service, "ingress.probe.events", 1).await;
    assert_eq!(probe_events.len(), 1);
    assert_eq!(probe_events[0]["source"], "probe");
    let twilio_events = wait_for_messages(&service, "ingress.twilio.messaging", 1).await;
    assert_eq!(twilio_events.len(), 1);
    assert_eq!(twilio_events[0]["source"], "twilio");

    // Egress: the probe's own check and send, its own status topic.
    let (status, body) = post_json(admin, "/v1/messages?connector=probe", r#"{"id":"p-1","to":"x","body":"hi"}"#).await;
    assert_eq!((status, body.as_str()), (202, r#"{"id":"p-1"}"#));
    let (status, body) = post_json(admin, "/v1/messages?connector=probe", r#"{"to":"x"}"#).await;
    assert_eq!((status, body.trim()), (400, "the probe sends only messages with a body"));
    let (status, _) = post_json(admin, "/v1/messages", r#"{"to":"x","body":"hi"}"#).await;
    assert_eq!(status, 404, "two connectors: the request must name one");
    let statuses = wait_for_messages(&service, "events.probe.status", 1).await;
    assert_eq!(
        (statuses[0]["id"].as_str(), statuses[0]["provider_message_id"].as_str()),
        (Some("p-1"), Some("probe-p-1"))
    );
    assert!(harness::messages(&service, "events.twilio.status").await.is_empty());

    // Optional exports: Twilio issues tokens, the probe does not, and says so.
    let (status, body) = post_json(admin, "/v1/tokens?connector=probe", r#"{"identity":"alice"}"#).await;
    assert_eq!((status, body.trim()), (501, "the connector does not export `tokens`"));
    let (status, _) = post_json(admin, "/v1/tokens?connector=twilio", r#"{"identity":"alice"}"#).await;
    assert_eq!(status, 200);
    let (_, listed) = admin_get(admin, "/admin/connectors").await;
    let listed: ConnectorList<ConnectorView> = serde_json::from_str(&listed).unwrap();
    let flags: Vec<(&str, bool, bool, bool)> = listed
        .connectors
        .iter()
        .map(|c| (c.name.as_str(), c.issues_tokens, c.simulates_webhooks, c.answers_whole))
        .collect();
    // The probe's webhooks went through `wasi:http` above, Twilio's through its `webhooks` export.
    assert_eq!(flags, [("probe", false, false, false), ("twilio", true, true, true)]);

    // Route labels come from the configured routes.
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let routes: Vec<&str> = metrics.lines().filter(|l| l.starts_with("ingress_http_requests_total{")).collect();
    assert!(routes.iter().any(|l| l.contains(r#"route="/probe/""#)), "{routes:?}");
    assert!(routes.iter().any(|l| l.contains(r#"route="/twilio/messaging""#)), "{routes:?}");
    service.stop().await.unwrap();
}

#[test]
fn the_probe_needs_its_own_secret_and_not_twilios() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    harness.env.set("PROBE_KEY", "not-a-probe-key");
    let error = ingress_egress::config::load(&harness.architecture_path(), &harness.env).unwrap_err().to_string();
    assert!(error.contains("PROBE_KEY: malformed"), "{error}");
    assert!(!error.contains("not-a-probe-key"), "{error}");
}

/// The grants that let Twilio serve many accounts are generic: the probe
/// reads its own credential sets and fills its own bounded cache the same
/// way, and never sees Twilio's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connector_has_credential_sets_and_a_cache_of_its_own() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    let tenants = harness.dir.path().join("probe-tenants");
    harness.env.set("PROBE_TENANTS_DIR", tenants.to_str().unwrap());
    harness.add_account(
        "AC00000000000000000000000000000d01",
        &[("TWILIO_AUTH_TOKEN", "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1")],
    );
    std::fs::create_dir_all(tenants.join("tenant-1")).unwrap();
    std::fs::write(tenants.join("tenant-1").join("PROBE_KEY"), "probe-key-1\n").unwrap();
    let service = harness.start().await;
    let public = service.public_addr;
    let ask = |path: String| async move { post(public, &path, &[], Vec::new()).await.1 };

    assert_eq!(ask("/probe/tenant?name=tenant-1".into()).await, "PROBE_KEY");
    assert_eq!(ask("/probe/tenant?name=tenant-2".into()).await, "no such set");
    let twilio_account = "/probe/tenant?name=AC00000000000000000000000000000d01";
    assert_eq!(ask(twilio_account.into()).await, "no such set", "Twilio's accounts are Twilio's");
    std::fs::create_dir_all(tenants.join("tenant-2")).unwrap();
    std::fs::write(tenants.join("tenant-2").join("PROBE_KEY"), "probe-key-2\n").unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ask("/probe/tenant?name=tenant-2".into()).await != "PROBE_KEY" {
        assert!(tokio::time::Instant::now() < deadline, "a set added is seen within seconds");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Its cache: filled once, then read; fetches bounded (a burst of 2, 1 a second, 1 at once).
    assert_eq!(ask("/probe/cached?key=a".into()).await, "fetched");
    assert_eq!(ask("/probe/cached?key=a".into()).await, "cached fetched-a");
    let held = tokio::spawn(ask("/probe/cached?key=b&hold=1500".into()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(ask("/probe/cached?key=b".into()).await, "in-flight", "one fetch per key at a time");
    assert_eq!(ask("/probe/cached?key=c".into()).await, "exhausted", "one fetch at once, and the burst is spent");
    assert_eq!(held.await.unwrap(), "fetched");
    service.stop().await.unwrap();
}
