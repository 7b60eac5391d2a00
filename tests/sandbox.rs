//! The sandbox: a guest that traps, loops or grows memory without end costs
//! one request a 500; the host and every other request carry on.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{Harness, messages, post, signed_sms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_guest_costs_one_request_a_500() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    harness.edit_architecture(|text| text.replace("call_timeout_ms: 20000", "call_timeout_ms: 2000"));
    let service = harness.start().await;
    let addr = service.public_addr;

    let bad: Vec<_> = ["/probe/trap", "/probe/loop", "/probe/memory"]
        .into_iter()
        .map(|path| tokio::spawn(async move { (path, post(addr, path, &[], Vec::new()).await.0) }))
        .collect();
    // Good traffic alongside, on both connectors.
    let good: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                if i % 2 == 0 {
                    post(addr, "/probe/ok", &[], Vec::new()).await.0
                } else {
                    signed_sms(addr, &format!("SM{i:032}")).await
                }
            })
        })
        .collect();
    for task in bad {
        let (path, status) = task.await.unwrap();
        assert_eq!(status, 500, "{path}");
    }
    for task in good {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(messages(&service, "ingress.twilio.messaging").await.len(), 20);
    // And afterwards, too.
    assert_eq!(post(addr, "/probe/ok", &[], Vec::new()).await, (200, "ok".to_owned()));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn warm_instances_serve_a_bounded_number_of_calls_and_never_survive_a_trap() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    harness.edit_architecture(|text| text.replace("instance_reuse: 1000", "instance_reuse: 3"));
    let service = harness.start().await;
    let addr = service.public_addr;
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(post(addr, "/probe/count", &[], Vec::new()).await.1);
        // The instance goes back to the pool just after the response is out.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // One instance serves three calls, then a fresh one takes over. The first
    // one already answered describe() when the connector was loaded.
    assert_eq!(counts, ["1", "2", "1", "2", "3", "1", "2"]);
    assert_eq!(post(addr, "/probe/trap", &[], Vec::new()).await.0, 500);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The instance that trapped is gone: the next call starts on a fresh one.
    assert_eq!(post(addr, "/probe/count", &[], Vec::new()).await.1, "1");
    service.stop().await.unwrap();
}
