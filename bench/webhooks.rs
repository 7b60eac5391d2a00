//! Signed webhooks per second, each durable on the bus before its 200: the
//! sandboxed service against a native Rust handler doing the same work (verify
//! the signature, build the envelope, publish to the same SQLite bus) in the
//! same invocation; then the service on NATS JetStream (a real `nats-server`),
//! one host and two sharing the load. The two hosts run in this one process
//! on the same two cores: the figure shows what sharing costs, not scaling.
//! Bounded: `BENCH_REQUESTS` (default 20000) per side, 60 s each.
//!
//! `cargo bench -p bench --bench webhooks`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bench::native::{Baseline, Sink};
use bench::{Prepared, Report, run};
use bytes::Bytes;
use harness::fixtures::{borrowed, inbound_sms_with};
use harness::{AUTH_TOKEN, Harness};
use ingress_egress::bus::sqlite::SqliteBus;

const CONNECTIONS: usize = 64;
const DEADLINE: Duration = Duration::from_secs(60);

/// Unique inbound SMS webhooks (never a replayed sid), signed for `base`.
fn requests(base: &str, count: usize, tag: &str) -> Vec<Prepared> {
    (0..count)
        .map(|i| {
            let sid = format!("SM{tag}{i:030x}");
            let owned = inbound_sms_with(&sid, "Hello, this is a benchmark message");
            let params = borrowed(&owned);
            let signature = harness::sign(&format!("{base}/twilio/messaging"), &params);
            Prepared {
                path: "/twilio/messaging".into(),
                headers: vec![
                    ("content-type".into(), "application/x-www-form-urlencoded".into()),
                    ("x-twilio-signature".into(), signature),
                ],
                body: Bytes::from(harness::form(&params)),
            }
        })
        .collect()
}

async fn start_native(dir: &std::path::Path) -> SocketAddr {
    let bus = Arc::new(SqliteBus::open(&dir.join("native.sqlite3")).expect("bus"));
    let baseline = Baseline::new(AUTH_TOKEN, Sink::Bus(bus));
    bench::native::start(baseline, "127.0.0.1:0".parse().expect("addr")).await
}

fn line(name: &str, report: &Report) {
    println!(
        "{name:<22} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} failed, {:.1} s)",
        report.per_second(),
        report.p50.as_secs_f64() * 1e3,
        report.p99.as_secs_f64() * 1e3,
        report.requests,
        report.failures,
        report.elapsed.as_secs_f64()
    );
}

/// The URL the hosts on NATS verify signatures over, so any of them takes any request.
const PUBLIC_URL: &str = "https://hooks.example.com";

fn main() {
    let count: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let native = start_native(dir.path()).await;
        let harness = Harness::new();
        let service = harness.start().await;
        let nats = harness::nats::NatsServer::start();
        // Two hosts, each with its own data directory (spool, compile cache).
        let on_nats = || {
            let mut harness = Harness::new();
            harness.env.set("BUS_URL", nats.url()).set("TWILIO_WEBHOOK_BASE_URL", PUBLIC_URL);
            harness
        };
        let (harness_one, harness_two) = (on_nats(), on_nats());
        let (host_one, host_two) = (harness_one.start().await, harness_two.start().await);
        let local = |addr: SocketAddr| format!("http://{addr}");

        // Warm every server (connections, instances, the page cache), then measure.
        let measure = |addrs: Vec<SocketAddr>, base: String, tag: &'static str, count: usize| async move {
            run(&addrs, requests(&base, count, tag), CONNECTIONS, DEADLINE).await
        };
        measure(vec![native], local(native), "w0", 500).await;
        measure(vec![service.public_addr], local(service.public_addr), "w1", 500).await;
        measure(vec![host_one.public_addr, host_two.public_addr], PUBLIC_URL.into(), "w2", 500).await;
        let baseline = measure(vec![native], local(native), "b0", count).await;
        let sqlite = measure(vec![service.public_addr], local(service.public_addr), "s0", count).await;
        let nats_one = measure(vec![host_one.public_addr], PUBLIC_URL.into(), "n1", count).await;
        let nats_two = measure(vec![host_one.public_addr, host_two.public_addr], PUBLIC_URL.into(), "n2", count).await;

        println!("signed webhooks, durable before 200, {CONNECTIONS} connections, one process:");
        line("native (baseline)", &baseline);
        line("ingress-egress, SQLite", &sqlite);
        line("ingress-egress, NATS", &nats_one);
        line("... NATS, 2 hosts", &nats_two);
        println!("ratio (ingress-egress on SQLite / native): {:.2}", sqlite.per_second() / baseline.per_second());
        println!("ratio (NATS, 1 host / SQLite): {:.2}", nats_one.per_second() / sqlite.per_second());
        println!("ratio (NATS, 2 hosts / 1 host): {:.2}", nats_two.per_second() / nats_one.per_second());
        for report in [&sqlite, &nats_one, &nats_two] {
            assert_eq!(report.failures, 0, "failed requests");
        }
        for running in [service, host_one, host_two] {
            running.stop().await.expect("stop");
        }
    });
}
