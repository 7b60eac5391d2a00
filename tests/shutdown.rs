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
