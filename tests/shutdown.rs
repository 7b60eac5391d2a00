//! SIGTERM: the service stops accepting, lets requests in flight finish, and
//! exits within its bound.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::net::SocketAddr;
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

/// `serve` as a child process writing JSON logs to a pipe; returns once both
/// listeners listen (the admin one after the token is written).
async fn spawn_json_serve(harness: &mut Harness) -> (std::process::Child, SocketAddr, SocketAddr) {
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
    let child = harness
        .command(&["--log-format", "json", "serve"], None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    harness::wait_for_listener(public).await;
    harness::wait_for_listener(admin).await;
    (child, public, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_say_what_loaded_and_never_a_secret() {
    let mut harness = Harness::new();
    let (child, public, admin) = spawn_json_serve(&mut harness).await;
    // Some traffic that logs: a forged webhook and a token.
    harness::post_webhook(public, "/twilio/messaging", &[("MessageSid", "SM1")], harness::Signature::Given("Zm9yZ2Vk"))
        .await;
    let bearer = harness.admin_bearer();
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    let (status, _) = harness::post(admin, "/v1/tokens", &headers, br#"{"identity":"alice"}"#.to_vec()).await;
    assert_eq!(status, 200);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "connector loaded" && l["connector"] == "twilio"), "{logs}");
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("refused webhook"))), "{logs}");
    let admin_token = bearer.trim_start_matches("Bearer ");
    for secret in [harness::AUTH_TOKEN, harness::API_SECRET, admin_token] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// A flood of forged and unsigned webhooks: every one is counted by its
/// reason, and the log holds at most a line a second per reason, the later
/// ones saying how many were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_webhooks_is_counted_and_logged_a_line_a_second() {
    let mut harness = Harness::new();
    let (child, public, admin) = spawn_json_serve(&mut harness).await;
    let (forged, unsigned) = (400, 100);
    let started = Instant::now();
    for i in 0..forged + unsigned {
        let signature = if i < forged { harness::Signature::Given("Zm9yZ2Vk") } else { harness::Signature::Missing };
        let sid = format!("SM{i:032}");
        let (status, _) =
            harness::post_webhook(public, "/twilio/messaging", &[("MessageSid", sid.as_str())], signature).await;
        assert_eq!(status, if i < forged { 403 } else { 400 });
        // Spread over a few seconds, so that more than one line may be written.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let flood = started.elapsed();
    let bearer = harness.admin_bearer();
    let (_, metrics) = harness::get_with(admin, "/metrics", &[("authorization", &bearer)]).await;
    let counted = |event: &str| {
        harness::metric(&metrics, &format!("connector_events_total{{connector=\"twilio\",event=\"{event}\"}}"))
    };
    assert_eq!(counted("webhook-refused-signature"), f64::from(forged));
    assert_eq!(counted("webhook-refused-unsigned"), f64::from(unsigned));

    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let logs = String::from_utf8(child.wait_with_output().unwrap().stderr).unwrap();
    let refusals: Vec<&str> = logs.lines().filter(|line| line.contains("refused webhook")).collect();
    let most = flood.as_secs() as usize + 2;
    for (answer, sent) in [("403 invalid X-Twilio-Signature", forged), ("400 missing X-Twilio-Signature", unsigned)] {
        let lines: Vec<&&str> = refusals.iter().filter(|line| line.contains(answer)).collect();
        assert!((1..=most).contains(&lines.len()), "{} lines for {sent} refusals in {flood:?}", lines.len());
    }
    assert!(
        refusals.iter().any(|line| line.contains("more like this since the previous line")),
        "no line says how many were left out: {refusals:#?}"
    );
}
