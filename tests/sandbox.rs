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

/// Guest code yields at every epoch tick: two looping guests, one per worker
/// thread, cost their own calls and leave valid webhooks their latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_guests_on_both_threads_leave_webhooks_their_latency() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    harness.edit_architecture(|text| text.replace("call_timeout_ms: 20000", "call_timeout_ms: 4000"));
    let service = harness.start().await;
    let addr = service.public_addr;
    let loops: Vec<_> =
        (0..2).map(|_| tokio::spawn(async move { post(addr, "/probe/loop", &[], Vec::new()).await.0 })).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for i in 0..40 {
        let started = std::time::Instant::now();
        assert_eq!(signed_sms(addr, &format!("SM{i:032}")).await, 200);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    for task in loops {
        assert_eq!(task.await.unwrap(), 500, "the loop ends at its deadline");
    }
    println!("latencies while two guests loop: p50 {:?}, p99 {p99:?}", latencies[latencies.len() / 2]);
    assert!(p99 < std::time::Duration::from_millis(500), "p99 {p99:?} while two guests loop");
    service.stop().await.unwrap();
}

/// When every instance slot is taken, a request is told to come back (503
/// with Retry-After), not failed (500); once slots free up it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_answers_503_with_retry_after() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    harness.edit_architecture(|text| {
        text.replace("call_timeout_ms: 20000", "call_timeout_ms: 2000")
            .replace("max_concurrent_instances: 256", "max_concurrent_instances: 3")
    });
    let service = harness.start().await;
    let addr = service.public_addr;
    // Twilio's warm instance and two looping probes fill the three slots.
    let loops: Vec<_> =
        (0..2).map(|_| tokio::spawn(async move { post(addr, "/probe/loop", &[], Vec::new()).await.0 })).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, headers) = post_with_headers(addr, "/probe/ok").await;
    assert_eq!(status, 503);
    assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    for task in loops {
        assert_eq!(task.await.unwrap(), 500);
    }
    assert_eq!(post(addr, "/probe/ok", &[], Vec::new()).await.0, 200, "served once slots are free");
    service.stop().await.unwrap();
}

async fn post_with_headers(addr: std::net::SocketAddr, path: &str) -> (u16, hyper::HeaderMap) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    (response.status().as_u16(), response.headers().clone())
}
