//! A fast stand-in for Twilio's Messages API, for `bench/run`'s egress
//! comparison: `fake-twilio ADDR`. Every `POST …/Messages.json` is answered
//! 201 with a created message (a new `SM…` sid), as Twilio answers.
//! `GET /bench/received` says how many it took and when the first and last
//! came (microseconds since it started). `POST /bench/pause` holds every
//! answer (for at most [`MOST_HELD`]) until `POST /bench/resume`, which says
//! when it resumed: `bench/run` fills the egress topic while the sender's
//! requests wait, then measures the drain of the whole backlog. Runs until
//! killed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

/// The longest an answer is held while paused: well within the sender's
/// own first-byte bound, so a held request is never a timed-out one.
const MOST_HELD: std::time::Duration = std::time::Duration::from_secs(8);

/// What it took, lock-free: counts and first/last arrival.
#[derive(Debug)]
struct Received {
    started: Instant,
    /// True while answers are held.
    paused: watch::Sender<bool>,
    count: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Received {
    fn record(&self) -> u64 {
        let now = self.started.elapsed().as_micros() as u64;
        let _ = self.first_us.compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed) + 1
    }
}

async fn answer(
    received: Arc<Received>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let post = request.method() == hyper::Method::POST;
    let creates = post && request.uri().path().ends_with("/Messages.json");
    let counting = request.uri().path() == "/bench/received";
    let pausing = match request.uri().path() {
        "/bench/pause" if post => Some(true),
        "/bench/resume" if post => Some(false),
        _ => None,
    };
    let _ = request.into_body().collect().await;
    if creates {
        let mut paused = received.paused.subscribe();
        let _ = tokio::time::timeout(MOST_HELD, paused.wait_for(|held| !held)).await;
    }
    let (status, body) = if let Some(pause) = pausing {
        received.paused.send_replace(pause);
        (200, format!(r#"{{"paused":{pause},"at_us":{}}}"#, received.started.elapsed().as_micros()))
    } else if creates {
        let n = received.record();
        (
            201,
            format!(
                r#"{{"sid":"SM{n:032x}","status":"queued","num_segments":"1","error_code":null,"error_message":null}}"#
            ),
        )
    } else if counting {
        let first = received.first_us.load(Ordering::Relaxed);
        let (count, last) = (received.count.load(Ordering::Relaxed), received.last_us.load(Ordering::Relaxed));
        (200, format!(r#"{{"count":{count},"first_us":{},"last_us":{last}}}"#, if count == 0 { 0 } else { first }))
    } else {
        (404, r#"{"code":20404,"message":"The requested resource was not found","status":404}"#.to_owned())
    };
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}

fn main() {
    let addr: std::net::SocketAddr =
        std::env::args().nth(1).and_then(|a| a.parse().ok()).expect("usage: fake-twilio HOST:PORT");
    let received = Arc::new(Received {
        started: Instant::now(),
        paused: watch::Sender::new(false),
        count: AtomicU64::new(0),
        first_us: AtomicU64::new(u64::MAX),
        last_us: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        bench::native::serve(listener, move |request| answer(received.clone(), request)).await;
    });
}
