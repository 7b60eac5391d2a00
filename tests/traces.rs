//! Traces, as a platform engineer would look at them: `serve` exports to a
//! local OTLP receiver (decoded with OpenTelemetry's own definitions), the
//! bus carries each message's W3C trace context, an egress message posted
//! with a `traceparent` is sent in that trace, and no exported byte holds a
//! secret, a message body or a phone number.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::net::SocketAddr;
use std::time::Duration;

use harness::fake_twilio::FakeTwilio;
use harness::fixtures::{borrowed, inbound_sms_with};
use harness::nats::NatsServer;
use harness::otlp::{Receiver, Span};
use harness::{AUTH_TOKEN, Harness, Signature, post, post_webhook, wait_until_ready};

/// Words that must never leave in a trace: a message body each way.
const INBOUND_BODY: &str = "inbound-body-sentinel-7f3a";
const OUTBOUND_BODY: &str = "outbound-body-sentinel-91c2";
/// The platform's own trace, as its producer would send it.
const PLATFORM_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SERVICE_NAME: &str = "ingress-egress-under-test";

fn exporting_harness(twilio: &FakeTwilio, otlp_endpoint: &str) -> Harness {
    harness::init_test_logs();
    let mut harness = Harness::new();
    harness.with_twilio_at(&twilio.base_url());
    harness
        .env
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .set("OTEL_SERVICE_NAME", SERVICE_NAME)
        .set("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .set("OTEL_BSP_SCHEDULE_DELAY", "100");
    harness
}

/// Posts a signed inbound SMS `sid` carrying [`INBOUND_BODY`].
async fn inbound(public: SocketAddr, sid: &str) -> u16 {
    let params = inbound_sms_with(sid, INBOUND_BODY);
    post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Valid).await.0
}

/// Posts an egress message `id` to the admin listener, in the platform's trace.
async fn enqueue_traced(harness: &Harness, admin: SocketAddr, id: &str) -> u16 {
    let bearer = harness.admin_bearer();
    let traceparent = format!("00-{PLATFORM_TRACE}-00f067aa0ba902b7-01");
    let headers =
        [("content-type", "application/json"), ("authorization", bearer.as_str()), ("traceparent", &traceparent)];
    let body = format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "{OUTBOUND_BODY}"}}"#);
    post(admin, "/v1/messages", &headers, body.into_bytes()).await.0
}

/// The trace id in a `traceparent` header.
fn trace_id(traceparent: &str) -> String {
    traceparent.split('-').nth(1).unwrap().to_owned()
}

fn assert_nothing_secret_left(otlp: &Receiver) {
    let raw = String::from_utf8_lossy(&otlp.raw()).into_owned();
    for secret in [AUTH_TOKEN, harness::API_SECRET, INBOUND_BODY, OUTBOUND_BODY, "14155550100", "15005550006"] {
        assert!(!raw.contains(secret), "an exported span holds {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_webhook_and_a_send_are_one_trace_each_from_the_headers_on() {
    let (server, twilio, otlp) = (NatsServer::start(), FakeTwilio::start().await, Receiver::start().await);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    harness.env.set("BUS_URL", server.url());
    let (mut serve, public, admin) = harness.spawn_serve().await;
    wait_until_ready(public).await;
    let jetstream = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());

    // A webhook: its envelope's NATS header names the exported trace.
    assert_eq!(inbound(public, "SM0000000000000000000000000000a7e1").await, 200);
    let envelope = first_message(&jetstream, "ingress.twilio.messaging").await;
    let traceparent = header(&envelope, "traceparent").expect("the envelope carries a traceparent");
    let webhook_trace = trace_id(&traceparent);
    let webhook = otlp.wait_for(Duration::from_secs(10), |s| s.trace_id == webhook_trace && s.kind == 2).await;
    assert_eq!((webhook.name.as_str(), webhook.service.as_str()), ("POST /twilio/messaging", SERVICE_NAME));
    assert_eq!(webhook.attribute("http.route"), Some("/twilio/messaging"));
    assert_eq!(webhook.attribute("http.response.status_code"), Some("200"));
    assert_eq!(webhook.attribute("outcome"), Some("accepted"));
    assert_eq!(webhook.attribute("twilio.account_sid"), Some(harness::ACCOUNT_SID), "the connector named it");
    let publish = otlp.wait_for(Duration::from_secs(5), |s| s.trace_id == webhook_trace && s.kind == 4).await;
    assert_eq!(publish.parent_span_id, webhook.span_id, "the publish is the webhook's child");
    assert_eq!(publish.attribute("messaging.system"), Some("nats"));
    assert_eq!(publish.attribute("messaging.destination.name"), Some("ingress.twilio.messaging"));
    assert_eq!(publish.attribute("messaging.message.id"), Some("SM0000000000000000000000000000a7e1"));
    assert!(traceparent.contains(&publish.span_id), "the message carries its publish span: {traceparent}");

    // An egress message posted in the platform's trace is sent in it.
    assert_eq!(enqueue_traced(&harness, admin, "traced-1").await, 202);
    let send = otlp.wait_for(Duration::from_secs(10), |s| s.trace_id == PLATFORM_TRACE && s.kind == 5).await;
    assert_eq!(send.attribute("outcome"), Some("accepted"));
    assert_eq!(send.attribute("messaging.message.id"), Some("traced-1"));
    assert_eq!(send.attribute("attempt"), Some("1"));
    let rest = otlp.wait_for(Duration::from_secs(5), |s| s.trace_id == PLATFORM_TRACE && s.kind == 3).await;
    assert_eq!(rest.parent_span_id, send.span_id, "the REST call is the send's child");
    assert_eq!((rest.name.as_str(), rest.attribute("http.response.status_code")), ("POST", Some("201")));
    // The status event carries the send's context.
    let status = first_message(&jetstream, "events.twilio.status").await;
    let status_parent = header(&status, "traceparent").expect("the status event carries a traceparent");
    assert_eq!(trace_id(&status_parent), PLATFORM_TRACE);

    assert_nothing_secret_left(&otlp);
    kill(&mut serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_tail_shows_each_message_with_its_trace_context() {
    let (twilio, otlp) = (FakeTwilio::start().await, Receiver::start().await);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    let (mut serve, public, admin) = harness.spawn_serve().await;
    wait_until_ready(public).await;
    assert_eq!(inbound(public, "SM0000000000000000000000000000a7e2").await, 200);
    assert_eq!(enqueue_traced(&harness, admin, "traced-2").await, 202);
    let tail = |topic: &str| {
        let args = ["tail", "--topic", topic, "--from-start", "--limit", "1", "--idle-timeout", "10", "--headers"];
        let out = harness.command(&args, None).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let envelope = tail("ingress.twilio.messaging");
    assert_eq!(envelope["message"]["provider_message_id"], "SM0000000000000000000000000000a7e2");
    let webhook_trace = trace_id(envelope["headers"]["traceparent"].as_str().unwrap());
    let webhook = otlp.wait_for(Duration::from_secs(10), |s| s.trace_id == webhook_trace && s.kind == 2).await;
    assert_eq!(webhook.name, "POST /twilio/messaging");
    let sent = otlp.wait_for(Duration::from_secs(10), |s: &Span| s.trace_id == PLATFORM_TRACE && s.kind == 5).await;
    assert_eq!(sent.attribute("messaging.system"), Some("sqlite"));
    let status = tail("events.twilio.status");
    assert_eq!(trace_id(status["headers"]["traceparent"].as_str().unwrap()), PLATFORM_TRACE);
    assert_nothing_secret_left(&otlp);
    kill(&mut serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_away_webhooks_go_on_and_spans_are_dropped_not_kept() {
    let twilio = FakeTwilio::start().await;
    // Nothing listens there: every export fails.
    let away = format!("http://{}", harness::free_addr());
    let mut harness = exporting_harness(&twilio, &away);
    harness.env.set("OTEL_BSP_MAX_QUEUE_SIZE", "64");
    let log = harness.dir.path().join("serve.log");
    let (mut serve, public) = harness.spawn_serve_logging(&log).await;
    wait_until_ready(public).await;
    let started = std::time::Instant::now();
    for i in 0..400 {
        assert_eq!(inbound(public, &format!("SM{i:032x}")).await, 200, "webhook {i}");
    }
    println!("400 webhooks with the collector away: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60), "exporting held the webhooks up");
    terminate(&mut serve);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("dropped a Span due to queue full"), "the queue is bounded: {log}");
}

/// The first message on `topic`'s stream, as any NATS client reads it.
async fn first_message(
    jetstream: &async_nats::jetstream::Context,
    topic: &str,
) -> async_nats::jetstream::message::StreamMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(name) = jetstream.stream_by_subject(topic).await {
            let stream = jetstream.get_stream_no_info(&name).await.unwrap();
            if let Ok(message) = stream.get_first_raw_message_by_subject(topic, 1).await {
                return message;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing on {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(message: &async_nats::jetstream::message::StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|value| value.as_str().to_owned())
}

fn kill(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then waits for the graceful exit (which flushes what is queued).
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}
