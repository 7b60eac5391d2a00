//! Shedding, not stalling: past `max_connections` new public connections are
//! closed at once, a peer that stops reading its response is dropped after
//! the write timeout, and a process out of descriptors backs off and recovers.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::{Duration, Instant};

use harness::{Harness, admin_get, get, metric, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Held by every test here: `connections_open` is one gauge for the whole
/// process, and each test's service sets it as its connections come and go.
static ONE_SERVICE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads until the peer closes or `bound` passes; the bytes read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (usize, bool) {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    let deadline = Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (total, true),
            Ok(Ok(n)) => total += n,
            Err(_) => return (total, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_the_admin_side_still_answers() {
    let _alone = ONE_SERVICE_AT_A_TIME.lock().await;
    let mut harness = Harness::new();
    harness.set_setting("max_connections", "3");
    let service = harness.start().await;
    let addr = service.public_addr;

    // Three idle connections fill the cap (none has sent a request yet).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (read, closed) = read_until_closed(&mut fourth, Duration::from_secs(2)).await;
    assert!(closed && read == 0, "the fourth connection was not closed ({read} bytes)");
    assert!(started.elapsed() < Duration::from_millis(500), "closed after {:?}", started.elapsed());

    // The admin listener is not capped: metrics say what happened.
    let (status, metrics) = admin_get(&service, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metric(&metrics, "connections_shed_total") >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "connections_open"), 3.0, "{metrics}");

    // A freed place serves the next connection.
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_its_response_is_dropped_after_the_write_timeout() {
    let _alone = ONE_SERVICE_AT_A_TIME.lock().await;
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]).set_setting("write_timeout_ms", "500");
    let service = harness.start().await;
    const BODY: usize = 256 << 20; // far more than both sockets' buffers hold

    let mut stream = TcpStream::connect(service.public_addr).await.unwrap();
    let request = format!("POST /probe/big?bytes={BODY} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Not reading: the server's writes stall, and it gives up after 500 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (read, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed, "still open after reading {read} bytes");
    assert!(read < BODY, "the whole body arrived: the write never timed out");

    // The service is unharmed.
    assert_eq!(post(service.public_addr, "/probe/ok", &[], Vec::new()).await, (200, "ok".to_owned()));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listener_backs_off_logs_at_a_bounded_rate_and_recovers() {
    let _alone = ONE_SERVICE_AT_A_TIME.lock().await;
    let mut harness = Harness::new();
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
    let serve = harness.command(&["--log-format", "json", "serve"], None);
    // The same command under a low descriptor limit.
    let mut command = std::process::Command::new("sh");
    let program = serve.get_program().to_str().unwrap().to_owned();
    let args: Vec<String> = serve.get_args().map(|a| a.to_str().unwrap().to_owned()).collect();
    command.arg("-c").arg("ulimit -n 128 && exec \"$0\" \"$@\"").arg(program).args(args);
    command.env_clear().envs(serve.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let child = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    harness::wait_until_ready(public).await;

    // Far more connections than descriptors: the accepts past the limit fail.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(public)).await {
            held.push(stream);
        }
    }
    let starved_for = Duration::from_secs(3);
    tokio::time::sleep(starved_for).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let window = started.elapsed();

    // Recovered: requests are served again, and the failures were counted.
    assert_eq!(get(public, "/healthz").await, (200, "ok\n".to_owned()));
    let bearer = harness.admin_bearer();
    let (_, metrics) = harness::get_with(admin, "/metrics", &[("authorization", &bearer)]).await;
    let failed_accepts = metric(&metrics, "accept_errors_total");
    assert!(failed_accepts >= 1.0, "{metrics}");
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let logs = String::from_utf8(child.wait_with_output().unwrap().stderr).unwrap();
    let warnings = logs.lines().filter(|line| line.contains("accept failed")).count();
    // At most one line a second (plus the first), however many accepts failed.
    let most = window.as_secs() as usize + 2;
    assert!((1..=most).contains(&warnings), "{warnings} accept warnings in {window:?}:\n{logs}");
    assert!(failed_accepts >= warnings as f64, "{failed_accepts} failed accepts, {warnings} warnings");
}
