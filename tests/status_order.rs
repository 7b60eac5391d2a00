//! Status only moves forward: every ordering of two realistic callback
//! sequences, through the real component and host. A callback that would move
//! a message backwards is answered 200, counted, and not published; each
//! published event names the status before it.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{ACCOUNT_SID, Harness, Signature, admin_get, messages, metric, post_webhook};

/// Every ordering of `items`.
fn permutations(items: &[&'static str]) -> Vec<Vec<&'static str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

async fn callback(addr: std::net::SocketAddr, sid: &str, status: &str) -> u16 {
    let mut params = vec![("MessageSid", sid), ("MessageStatus", status), ("AccountSid", ACCOUNT_SID)];
    if status == "undelivered" {
        params.push(("ErrorCode", "30003"));
    }
    post_webhook(addr, "/twilio/status", &params, Signature::Valid).await.0
}

async fn out_of_order_count(service: &ingress_egress::service::RunningService) -> f64 {
    let series = "connector_events_total{connector=\"twilio\",event=\"status-out-of-order\"}";
    metric(&admin_get(service, "/metrics").await.1, series)
}

/// One test for both backends, one after the other: the out-of-order counter
/// is process-wide, and each run checks it exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ordering_of_a_realistic_sequence_publishes_only_forward_moves_on_both_backends() {
    every_ordering_moves_forward(Harness::new()).await;
    // On NATS the latest status lives in a JetStream key-value bucket.
    let server = harness::nats::NatsServer::start();
    let mut harness = Harness::new();
    harness.env.set("BUS_URL", server.url());
    every_ordering_moves_forward(harness).await;
}

async fn every_ordering_moves_forward(harness: Harness) {
    let service = harness.start().await;
    let addr = service.public_addr;
    let sequences: [(&[&'static str], &str); 2] =
        [(&["queued", "sent", "delivered", "read"], "read"), (&["queued", "sent", "undelivered"], "undelivered")];
    let (mut sent, mut case) = (0, 0);
    let skipped_before = out_of_order_count(&service).await;
    for (sequence, last) in sequences {
        let rank = |status: &str| sequence.iter().position(|s| *s == status).unwrap();
        for order in permutations(sequence) {
            case += 1;
            let sid = format!("SM{case:032x}");
            for status in &order {
                assert_eq!(callback(addr, &sid, status).await, 200, "{order:?}");
                sent += 1;
            }
            let events: Vec<serde_json::Value> = messages(&service, "events.twilio.status")
                .await
                .into_iter()
                .filter(|e| e["provider_message_id"] == sid.as_str())
                .collect();
            let published: Vec<&str> = events.iter().map(|e| e["status"].as_str().unwrap()).collect();
            assert!(published.windows(2).all(|w| rank(w[0]) < rank(w[1])), "{order:?} published {published:?}");
            assert_eq!(published.last(), Some(&last), "{order:?} published {published:?}");
            assert_eq!(published.first(), order.first(), "the first callback is always news: {order:?}");
            for (i, event) in events.iter().enumerate() {
                let previous = if i == 0 { serde_json::Value::Null } else { published[i - 1].into() };
                assert_eq!(event["previous_status"], previous, "{order:?}");
            }
        }
    }
    let published = messages(&service, "events.twilio.status").await.len();
    assert_eq!(case, 24 + 6);
    // Every callback was either published or counted as out of order.
    assert_eq!(out_of_order_count(&service).await - skipped_before, (sent - published) as f64);
    service.stop().await.unwrap();
}
