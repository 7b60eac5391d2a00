//! Nothing acknowledged is lost: SIGKILL the service in the middle of a burst
//! of webhooks, and every one answered 200 is on the bus.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::Harness;
use ingress_egress::bus::Bus as _;
use ingress_egress::bus::sqlite::SqliteBus;

/// Webhooks in the burst, at most; the kill comes after `KILL_AFTER` answers.
const BURST: usize = 400;
const KILL_AFTER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acknowledged_webhook() {
    let mut harness = Harness::new();
    let data_dir = harness.dir.path().join("data");
    let (mut child, public, _) = harness.spawn_serve().await;

    let answered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..BURST)
        .map(|i| {
            let answered = answered.clone();
            tokio::spawn(async move {
                let sid = format!("SM{i:032x}");
                let owned = harness::minimal_sms(&sid, "burst");
                let params: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let url = format!("http://{public}/twilio/messaging");
                let headers = vec![
                    ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
                    ("x-twilio-signature".to_owned(), harness::sign(&url, &params)),
                ];
                let base = format!("http://{public}");
                let request =
                    ingress_egress::client::post(&base, "/twilio/messaging", &headers, harness::form(&params));
                // A request cut off by the kill fails or never answers: bounded either way.
                match tokio::time::timeout(Duration::from_secs(20), request).await {
                    Ok(Ok((200, _))) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        Some(sid)
                    }
                    _ => None,
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < KILL_AFTER && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let mut acknowledged = Vec::new();
    for task in tasks {
        if let Some(sid) = task.await.unwrap() {
            acknowledged.push(sid);
        }
    }
    assert!(acknowledged.len() >= KILL_AFTER, "only {} answered before the kill", acknowledged.len());

    let bus = SqliteBus::open(&data_dir.join("bus.sqlite3")).unwrap();
    let stored = bus.read("ingress.twilio.messaging", 0, 100_000).await.unwrap();
    let sid =
        |payload: &[u8]| serde_json::from_slice::<serde_json::Value>(payload).unwrap()["provider_message_id"].clone();
    let stored: std::collections::HashSet<String> =
        stored.iter().map(|m| sid(&m.payload).as_str().unwrap().to_owned()).collect();
    let lost: Vec<_> = acknowledged.iter().filter(|sid| !stored.contains(*sid)).collect();
    assert!(lost.is_empty(), "{} acknowledged webhooks lost: {lost:?}", lost.len());
    println!("sigkill: {} webhooks answered 200 before the kill, none missing from the bus", acknowledged.len());
}
