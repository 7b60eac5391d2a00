//! SIGTERM: the service stops accepting, lets requests in flight finish, and
//! exits within its bound.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::process::Command;
use std::time::{Duration, Instant};

use harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    let (mut child, public, _) = harness.spawn_serve().await;

    let in_flight = tokio::spawn(async move {
        ingress_egress::client::post(&format!("http://{public}"), "/probe/slow?ms=1500", &[], Vec::new()).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());

    // The request that was in flight completes.
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, "slept 1500"));
    // New connections are refused once it stopped accepting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ingress_egress::client::post(&format!("http://{public}"), "/probe/ok", &[], Vec::new()).await.is_err());

    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(signalled.elapsed() < Duration::from_secs(20), "did not exit within its bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_at_once_and_serves_through_the_drain() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]).set_setting("shutdown_drain_ms", "1500");
    let (mut child, public, _) = harness.spawn_serve().await;
    assert_eq!(harness::get(public, "/readyz").await, (200, "ready\n".to_owned()));

    let signalled = Instant::now();
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not ready at once, so the load balancer takes it out of rotation...
    assert_eq!(harness::get(public, "/readyz").await, (503, "shutting down\n".to_owned()));
    // ...while new connections are still served until the drain ends.
    for _ in 0..5 {
        assert_eq!(harness::post(public, "/probe/ok", &[], Vec::new()).await, (200, "ok".to_owned()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(signalled.elapsed() < Duration::from_millis(1500), "the drain check took too long to prove anything");
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(signalled.elapsed()) + Duration::from_millis(300))
        .await;
    assert!(ingress_egress::client::post(&format!("http://{public}"), "/probe/ok", &[], Vec::new()).await.is_err());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(1500), "exited before the drain ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_say_what_loaded_and_never_a_secret() {
    let mut harness = Harness::new();
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
    let child = harness
        .command(&["--log-format", "json", "serve"], None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    harness::wait_for_listener(public).await;
    // Some traffic that logs: a forged webhook and a token.
    harness::post_webhook(public, "/twilio/messaging", &[("MessageSid", "SM1")], harness::Signature::Given("Zm9yZ2Vk"))
        .await;
    harness::post(admin, "/v1/tokens", &[("content-type", "application/json")], br#"{"identity":"alice"}"#.to_vec())
        .await;
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "connector loaded" && l["connector"] == "twilio"), "{logs}");
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("refused webhook"))), "{logs}");
    for secret in [harness::AUTH_TOKEN, harness::API_SECRET] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
