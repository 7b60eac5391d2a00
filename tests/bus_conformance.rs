//! One conformance suite for every bus backend: the same tests, unchanged,
//! against the embedded SQLite file and a real `nats-server -js`: the bus on
//! its own (durability, de-duplication, redelivery, retention, shared work),
//! and a whole service on it (dead-lettering).
//!
//! A "host" here is one opened bus; dropping it without settling what it took
//! is a host that died.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::fake_twilio::{FakeTwilio, Reply};
use harness::nats::NatsServer;
use harness::{Harness, admin_post, wait_for_messages};
use ingress_egress::bus::nats::NatsBus;
use ingress_egress::bus::sqlite::SqliteBus;
use ingress_egress::bus::{Bus, BusError, Published, StateWrite};
use ingress_egress::config::BusConfig;
use ingress_egress::telemetry::TraceContext;

const STREAM: &str = "ingress.test.messages";
const WORK: &str = "egress.test";
/// How long a taken message stays hidden in these tests.
const VISIBILITY: Duration = Duration::from_secs(2);

/// Where a backend's data lives; opens buses ("hosts") on it.
enum Backend {
    Sqlite(tempfile::TempDir),
    Nats(NatsServer),
}

impl Backend {
    async fn open(&self) -> Arc<dyn Bus> {
        self.open_with(BusConfig::DEFAULT_RETENTION).await
    }

    /// A whole service on this backend (SQLite: in the harness's own directory).
    fn harness(&self) -> Harness {
        let mut harness = Harness::new();
        if let Self::Nats(server) = self {
            harness.env.set("BUS_URL", server.url());
        }
        harness
    }

    async fn open_with(&self, retention: Duration) -> Arc<dyn Bus> {
        let mut config = BusConfig::embedded(std::path::Path::new("."));
        config.retention = retention;
        match self {
            Self::Sqlite(dir) => Arc::new(SqliteBus::new(&dir.path().join("bus.sqlite3"), &config).unwrap()),
            Self::Nats(server) => {
                // JetStream wants the duplicate window within the age limit.
                config.duplicate_window = config.duplicate_window.min(retention);
                Arc::new(NatsBus::connect(&[format!("127.0.0.1:{}", server.port)], &config).await.unwrap())
            }
        }
    }
}

async fn publish(bus: &dyn Bus, topic: &str, key: &str) -> Published {
    bus.publish(topic, Some(key), format!("{{\"key\":\"{key}\"}}").into(), None).await.unwrap()
}

fn payload_key(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
    value["key"].as_str().unwrap().to_owned()
}

/// Takes from `topic` until a message comes or `within` passes.
async fn take_within(bus: &dyn Bus, topic: &str, within: Duration) -> Option<ingress_egress::bus::Delivery> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(delivery) = bus.take(topic, VISIBILITY).await.unwrap() {
            return Some(delivery);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn acknowledged_publishes_survive_a_restart(backend: Backend) {
    let bus = backend.open().await;
    for i in 0..50 {
        assert_eq!(publish(bus.as_ref(), STREAM, &format!("k{i}")).await, Published::New);
    }
    drop(bus);
    let bus = backend.open().await;
    let stored = bus.read(STREAM, 0, 100).await.unwrap();
    let keys: Vec<String> = stored.iter().map(|m| payload_key(&m.payload)).collect();
    assert_eq!(keys, (0..50).map(|i| format!("k{i}")).collect::<Vec<_>>(), "all of them, in order");
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn a_duplicate_key_is_stored_once(backend: Backend) {
    let bus = backend.open().await;
    assert_eq!(publish(bus.as_ref(), STREAM, "SM1").await, Published::New);
    assert_eq!(publish(bus.as_ref(), STREAM, "SM1").await, Published::Duplicate);
    assert_eq!(publish(bus.as_ref(), STREAM, "SM2").await, Published::New);
    assert_eq!(bus.read(STREAM, 0, 10).await.unwrap().len(), 2);
}

/// The keys within the duplicate window outlive the process that published
/// them (the embedded bus reads them back at open).
async fn a_duplicate_is_known_after_a_restart(backend: Backend) {
    let bus = backend.open().await;
    assert_eq!(publish(bus.as_ref(), STREAM, "SM1").await, Published::New);
    assert_eq!(publish(bus.as_ref(), STREAM, "SM2").await, Published::New);
    drop(bus);
    let restarted = backend.open().await;
    assert_eq!(publish(restarted.as_ref(), STREAM, "SM1").await, Published::Duplicate, "known after a restart");
    assert_eq!(restarted.read(STREAM, 0, 10).await.unwrap().len(), 2);
}

async fn tail_reads_from_a_sequence_and_knows_the_last(backend: Backend) {
    let bus = backend.open().await;
    assert_eq!(bus.last_seq(STREAM).await.unwrap(), 0);
    for key in ["a", "b", "c"] {
        publish(bus.as_ref(), STREAM, key).await;
    }
    publish(bus.as_ref(), "ingress.test.other", "x").await;
    let all = bus.read(STREAM, 0, 10).await.unwrap();
    assert_eq!(all.len(), 3, "only this topic's messages");
    assert_eq!(bus.last_seq(STREAM).await.unwrap(), all[2].seq);
    let after_first = bus.read(STREAM, all[0].seq, 10).await.unwrap();
    assert_eq!(after_first.iter().map(|m| payload_key(&m.payload)).collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(bus.read(STREAM, 0, 2).await.unwrap().len(), 2, "the limit holds");
}

async fn an_acknowledged_message_is_gone_and_an_unsettled_one_comes_back(backend: Backend) {
    let bus = backend.open().await;
    publish(bus.as_ref(), WORK, "done").await;
    publish(bus.as_ref(), WORK, "lost").await;
    let first = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert_eq!((payload_key(&first.payload), first.attempt), ("done".to_owned(), 1));
    bus.ack(first.seq).await.unwrap();
    let second = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert_eq!(payload_key(&second.payload), "lost");
    // The host dies holding it: no ack, no retry.
    drop(bus);
    let bus = backend.open().await;
    let again = take_within(bus.as_ref(), WORK, VISIBILITY * 3).await.expect("redelivered after the visibility");
    assert_eq!((payload_key(&again.payload), again.attempt), ("lost".to_owned(), 2));
    bus.ack(again.seq).await.unwrap();
    assert!(take_within(bus.as_ref(), WORK, VISIBILITY + Duration::from_secs(1)).await.is_none(), "nothing else");
}

async fn a_retry_comes_back_after_its_delay_and_not_before(backend: Backend) {
    let bus = backend.open().await;
    publish(bus.as_ref(), WORK, "retry").await;
    let first = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    let retried_at = Instant::now();
    bus.retry_later(first.seq, Duration::from_millis(800)).await.unwrap();
    let again = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert!(retried_at.elapsed() >= Duration::from_millis(700), "back after {:?}", retried_at.elapsed());
    assert_eq!((payload_key(&again.payload), again.attempt), ("retry".to_owned(), 2));
    bus.ack(again.seq).await.unwrap();
}

/// A worker's last step: the outcome published and the message acknowledged
/// together; again with an outcome already published (a message that came
/// back), which is a duplicate and still acknowledges.
async fn an_outcome_published_with_its_ack_settles_the_message(backend: Backend) {
    let bus = backend.open().await;
    publish(bus.as_ref(), WORK, "first").await;
    publish(bus.as_ref(), WORK, "second").await;
    let outcome = |key: &str| Bytes::from(format!("{{\"key\":\"{key}\"}}"));
    let first = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    let published = bus.publish_and_ack(STREAM, Some("first:sent"), outcome("first:sent"), None, first.seq).await;
    assert_eq!(published.unwrap(), Published::New);
    let second = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert_eq!(payload_key(&second.payload), "second");
    let again = bus.publish_and_ack(STREAM, Some("first:sent"), outcome("first:sent"), None, second.seq).await;
    assert_eq!(again.unwrap(), Published::Duplicate);
    let outcomes = bus.read(STREAM, 0, 10).await.unwrap();
    assert_eq!(outcomes.iter().map(|m| payload_key(&m.payload)).collect::<Vec<_>>(), ["first:sent"]);
    assert!(take_within(bus.as_ref(), WORK, VISIBILITY + Duration::from_secs(1)).await.is_none(), "both settled");
}

/// A message's W3C trace context goes with it: to whoever takes it, to
/// whoever reads it, and across a restart; one published without has none.
async fn a_trace_context_travels_with_its_message(backend: Backend) {
    let bus = backend.open().await;
    let trace = TraceContext::from_headers(|name| match name {
        "traceparent" => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "tracestate" => Some("vendor=opaque"),
        _ => None,
    })
    .unwrap();
    bus.publish(WORK, Some("traced"), Bytes::from_static(b"{\"key\":\"traced\"}"), Some(&trace)).await.unwrap();
    publish(bus.as_ref(), WORK, "plain").await;
    drop(bus);
    let bus = backend.open().await;
    let read = bus.read(WORK, 0, 10).await.unwrap();
    assert_eq!(read.iter().map(|m| m.trace.clone()).collect::<Vec<_>>(), [Some(trace.clone()), None]);
    let taken = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert_eq!(taken.trace, Some(trace));
    let untraced = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    assert_eq!(untraced.trace, None);
}

async fn hosts_sharing_a_work_topic_each_get_a_message_once(backend: Backend) {
    let (one, two) = (backend.open().await, backend.open().await);
    for i in 0..40 {
        publish(one.as_ref(), WORK, &format!("m{i}")).await;
    }
    let drain = |bus: Arc<dyn Bus>| async move {
        let mut keys = Vec::new();
        while let Some(delivery) = take_within(bus.as_ref(), WORK, Duration::from_millis(500)).await {
            keys.push(payload_key(&delivery.payload));
            bus.ack(delivery.seq).await.unwrap();
        }
        keys
    };
    let (a, b) = tokio::join!(drain(one.clone()), drain(two.clone()));
    let all: Vec<&String> = a.iter().chain(&b).collect();
    let distinct: HashSet<&&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (40, 40), "each once: {} and {}", a.len(), b.len());
}

async fn settling_what_was_not_taken_is_an_error(backend: Backend) {
    let bus = backend.open().await;
    publish(bus.as_ref(), WORK, "x").await;
    let taken = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    bus.ack(taken.seq).await.unwrap();
    // A second ack of the same message changes nothing and does not resurrect it.
    let _ = bus.ack(taken.seq).await;
    assert!(take_within(bus.as_ref(), WORK, VISIBILITY + Duration::from_secs(1)).await.is_none());
}

async fn streams_forget_by_age_and_work_queues_keep_what_waits(backend: Backend) {
    let bus = backend.open_with(Duration::from_secs(2)).await;
    publish(bus.as_ref(), STREAM, "never consumed").await;
    publish(bus.as_ref(), WORK, "handled").await;
    publish(bus.as_ref(), WORK, "waiting").await;
    let handled = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.unwrap();
    bus.ack(handled.seq).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus.read(STREAM, 0, 10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the stream kept its message past the retention");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = take_within(bus.as_ref(), WORK, Duration::from_secs(5)).await.expect("what waits is kept");
    assert_eq!(payload_key(&waiting.payload), "waiting");
}

async fn an_egress_message_retried_to_the_end_is_dead_lettered_with_the_reason(backend: Backend) {
    let fake = FakeTwilio::start().await;
    fake.script((0..3).map(|_| Reply::json(503, "unavailable")));
    let mut harness = backend.harness();
    harness.with_twilio_at(&fake.base_url()).edit_architecture(|text| {
        text.replace("initial_backoff_ms: 500", "initial_backoff_ms: 20").replace("max_attempts: 8", "max_attempts: 3")
    });
    let service = harness.start().await;
    let body = r#"{"id": "m-503", "to": "+14155550100", "from": "+15005550006", "body": "hi"}"#;
    let (status, _) = admin_post(&service, "/v1/messages", &[("content-type", "application/json")], body.into()).await;
    assert_eq!(status, 202);
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["reason"].as_str().unwrap().starts_with("gave up after 3 attempts"), "{dead:?}");
    assert_eq!((dead[0]["attempts"].as_u64(), fake.received().len()), (Some(3), 3));
    let failed = wait_for_messages(&service, "events.twilio.status", 1).await;
    assert_eq!(failed[0]["status"], "failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received().len(), 3, "dead-lettered, then never sent again");
    service.stop().await.unwrap();
}

/// The suite, once per backend.
async fn state_writes_are_conditional_and_shared_between_hosts(backend: Backend) {
    let (one, two) = (backend.open().await, backend.open().await);
    assert_eq!(one.state_get("conformance", "status.SM1").await.unwrap(), None);
    let StateWrite::Written(first) = one.state_put("conformance", "status.SM1", "sent".into(), None).await.unwrap()
    else {
        panic!("the first write of an absent key wins")
    };
    assert_eq!(two.state_put("conformance", "status.SM1", "queued".into(), None).await.unwrap(), StateWrite::Conflict);
    let seen = two.state_get("conformance", "status.SM1").await.unwrap().unwrap();
    assert_eq!((seen.value.as_str(), seen.revision), ("sent", first));
    assert!(matches!(
        two.state_put("conformance", "status.SM1", "delivered".into(), Some(first)).await.unwrap(),
        StateWrite::Written(_)
    ));
    // The other host read the old revision: its write loses, and changes nothing.
    assert_eq!(
        one.state_put("conformance", "status.SM1", "queued".into(), Some(first)).await.unwrap(),
        StateWrite::Conflict
    );
    assert_eq!(one.state_get("conformance", "status.SM1").await.unwrap().unwrap().value, "delivered");

    // Read-modify-write from both hosts at once loses no update.
    let count = |bus: Arc<dyn Bus>| async move {
        for _ in 0..10 {
            loop {
                let current = bus.state_get("conformance", "counter").await.unwrap();
                let n: u32 = current.as_ref().map_or(0, |e| e.value.parse().unwrap());
                let write = bus.state_put("conformance", "counter", (n + 1).to_string(), current.map(|e| e.revision));
                if matches!(write.await.unwrap(), StateWrite::Written(_)) {
                    break;
                }
            }
        }
    };
    tokio::join!(count(one.clone()), count(two.clone()));
    let third = backend.open().await;
    assert_eq!(third.state_get("conformance", "counter").await.unwrap().unwrap().value, "20");
}

macro_rules! conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            fn backend() -> Backend {
                $open
            }

            #[tokio::test]
            async fn acknowledged_publishes_survive_a_restart() {
                super::acknowledged_publishes_survive_a_restart(backend()).await;
            }

            #[tokio::test]
            async fn a_duplicate_key_is_stored_once() {
                super::a_duplicate_key_is_stored_once(backend()).await;
            }

            #[tokio::test]
            async fn a_duplicate_is_known_after_a_restart() {
                super::a_duplicate_is_known_after_a_restart(backend()).await;
            }

            #[tokio::test]
            async fn tail_reads_from_a_sequence_and_knows_the_last() {
                super::tail_reads_from_a_sequence_and_knows_the_last(backend()).await;
            }

            #[tokio::test]
            async fn an_acknowledged_message_is_gone_and_an_unsettled_one_comes_back() {
                super::an_acknowledged_message_is_gone_and_an_unsettled_one_comes_back(backend()).await;
            }

            #[tokio::test]
            async fn a_retry_comes_back_after_its_delay_and_not_before() {
                super::a_retry_comes_back_after_its_delay_and_not_before(backend()).await;
            }

            #[tokio::test]
            async fn an_outcome_published_with_its_ack_settles_the_message() {
                super::an_outcome_published_with_its_ack_settles_the_message(backend()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hosts_sharing_a_work_topic_each_get_a_message_once() {
                super::hosts_sharing_a_work_topic_each_get_a_message_once(backend()).await;
            }

            #[tokio::test]
            async fn streams_forget_by_age_and_work_queues_keep_what_waits() {
                super::streams_forget_by_age_and_work_queues_keep_what_waits(backend()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_egress_message_retried_to_the_end_is_dead_lettered_with_the_reason() {
                super::an_egress_message_retried_to_the_end_is_dead_lettered_with_the_reason(backend()).await;
            }

            #[tokio::test]
            async fn a_trace_context_travels_with_its_message() {
                super::a_trace_context_travels_with_its_message(backend()).await;
            }

            #[tokio::test]
            async fn settling_what_was_not_taken_is_an_error() {
                super::settling_what_was_not_taken_is_an_error(backend()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn state_writes_are_conditional_and_shared_between_hosts() {
                super::state_writes_are_conditional_and_shared_between_hosts(backend()).await;
            }
        }
    };
}

conformance!(sqlite, Backend::Sqlite(tempfile::tempdir().unwrap()));
conformance!(nats, Backend::Nats(NatsServer::start()));

/// A NATS server that goes away: a publish fails within its bound instead of
/// hanging, and when the server is back the same bus works without a restart.
#[tokio::test]
async fn nats_down_fails_fast_and_recovers_without_a_restart() {
    let mut server = NatsServer::start();
    let addr = format!("127.0.0.1:{}", server.port);
    let bus =
        NatsBus::connect(std::slice::from_ref(&addr), &BusConfig::embedded(std::path::Path::new("."))).await.unwrap();
    publish(&bus, STREAM, "before").await;
    server.kill();
    let started = Instant::now();
    let result = bus.publish(STREAM, Some("during"), Bytes::from_static(b"{}"), None).await;
    assert!(matches!(result, Err(BusError::Unavailable(_) | BusError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(11), "took {:?}", started.elapsed());
    assert!(bus.ping().await.is_err());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.publish(STREAM, Some("after"), Bytes::from_static(b"{\"key\":\"after\"}"), None).await.is_err() {
        assert!(Instant::now() < deadline, "the bus did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bus.ping().await.unwrap();
    let keys: Vec<String> = bus.read(STREAM, 0, 10).await.unwrap().iter().map(|m| payload_key(&m.payload)).collect();
    assert_eq!(keys, ["before", "after"]);
}

/// A stream that exists with other settings stops the start, named, and is
/// left as it was; missing streams are created.
#[tokio::test]
async fn nats_streams_are_created_or_reported_by_name() {
    let server = NatsServer::start();
    let addr = format!("127.0.0.1:{}", server.port);
    NatsBus::connect(std::slice::from_ref(&addr), &BusConfig::embedded(std::path::Path::new("."))).await.unwrap();
    let shorter = BusConfig { retention: Duration::from_secs(3600), ..BusConfig::embedded(std::path::Path::new(".")) };
    let error = NatsBus::connect(std::slice::from_ref(&addr), &shorter).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("stream INGRESS: max_age"), "{message}");
    assert!(message.contains("stream EVENTS") && message.contains("stream DEADLETTER"), "{message}");
    assert!(!message.contains("stream EGRESS"), "the work queue keeps no age: {message}");
    // Nothing was changed: the original settings still load.
    NatsBus::connect(std::slice::from_ref(&addr), &BusConfig::embedded(std::path::Path::new("."))).await.unwrap();
}
