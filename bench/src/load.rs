//! A bounded HTTP load generator: keep-alive connections posting prepared
//! requests, with latency percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One prepared request.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends every request once over `connections` keep-alive connections,
/// spread evenly over `addrs` (several hosts of one service); stops early at
/// `deadline`. Non-2xx answers count as failures.
pub async fn run(addrs: &[SocketAddr], requests: Vec<Prepared>, connections: usize, deadline: Duration) -> Report {
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|connection| {
            let addr = addrs[connection % addrs.len()];
            let (requests, next) = (requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                tokio::spawn(connection);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests.len() || started.elapsed() > deadline {
                        break;
                    }
                    let prepared = &requests[i];
                    let mut request = hyper::Request::post(prepared.path.as_str()).header("host", addr.to_string());
                    for (k, v) in &prepared.headers {
                        request = request.header(k.as_str(), v.as_str());
                    }
                    let request = request.body(Full::new(prepared.body.clone())).expect("request");
                    let sent = Instant::now();
                    match sender.send_request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.into_body().collect().await;
                            latencies.push(sent.elapsed());
                            if !ok {
                                failures += 1;
                            }
                        }
                        Err(_) => {
                            failures += 1;
                            break;
                        }
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.expect("load task");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Report { requests: latencies.len(), failures, elapsed, p50: pick(0.5), p99: pick(0.99) }
}
