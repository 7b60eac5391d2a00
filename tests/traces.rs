//! Traces, as a platform engineer would look at them: `serve` exports to a
//! local OTLP receiver (decoded with OpenTelemetry's own definitions), the
//! bus carries each message's W3C trace context, an egress message posted
//! with a `traceparent` is sent in that trace, and no exported byte holds a
//! secret, a message body or a phone number.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::net::SocketAddr;
use std::time::Duration;

use harness::fake_twilio::{Ending, FakeTwilio, Reply};
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
    enqueue(harness, admin, id, Some(&format!("00-{PLATFORM_TRACE}-00f067aa0ba902b7-01"))).await
}

/// Posts an egress message, with `traceparent` when given.
async fn enqueue(harness: &Harness, admin: SocketAddr, id: &str, traceparent: Option<&str>) -> u16 {
    let bearer = harness.admin_bearer();
    let mut headers = vec![("content-type", "application/json"), ("authorization", bearer.as_str())];
    headers.extend(traceparent.map(|traceparent| ("traceparent", traceparent)));
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
    let (serve, public, admin) = harness.spawn_serve().await;
    let _serve = Serve(serve);
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

    // A producer on NATS gives its context as headers; the send joins it.
    let producer_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{producer_trace}-b7ad6b7169203331-01").as_str());
    headers.insert("Nats-Msg-Id", "from-a-producer");
    let body = r#"{"id": "from-a-producer", "to": "+14155550100", "from": "+15005550006", "body": "hi"}"#;
    jetstream.publish_with_headers("egress.twilio", headers, body.into()).await.unwrap().await.unwrap();
    let send = otlp.wait_for(Duration::from_secs(10), |s| s.trace_id == producer_trace && s.kind == 5).await;
    assert_eq!((send.parent_span_id.as_str(), send.attribute("outcome")), ("b7ad6b7169203331", Some("accepted")));

    assert_nothing_secret_left(&otlp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_tail_shows_each_message_with_its_trace_context() {
    let (twilio, otlp) = (FakeTwilio::start().await, Receiver::start().await);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    let (serve, public, admin) = harness.spawn_serve().await;
    let _serve = Serve(serve);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_fetches_and_reconciliation_are_children_and_json_log_lines_name_their_trace() {
    let (twilio, otlp) = (FakeTwilio::start().await, Receiver::start().await);
    let media_path = format!("/2010-04-01/Accounts/{}/Messages/MM{:032}/Media/ME{:032}", harness::ACCOUNT_SID, 7, 1);
    let picture = Reply::json(200, "png bytes").with_header("content-type", "image/png");
    // The media GET, then a send whose answer breaks: the next attempt looks it up.
    twilio.script([picture, Reply::created("SM0123456789abcdef0123456789abcdef").ending(Ending::ResetAfter(20))]);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    harness.env.set("TWILIO_MEDIA_FETCH", "true").set("TWILIO_RECONCILE_SECONDS", "2").set("LOG_FORMAT", "json");
    harness.set_setting("initial_backoff_ms", "20").set_setting("max_attempts", "30");
    let log = harness.dir.path().join("serve.log");
    let (serve, public, admin) = harness.spawn_serve_logging(&log).await;
    let _serve = Serve(serve);
    wait_until_ready(public).await;

    let mut params = inbound_sms_with(&format!("MM{:032}", 7), INBOUND_BODY);
    params.retain(|(name, _)| *name != "NumMedia");
    params.extend([("NumMedia", "1".to_owned()), ("MediaUrl0", format!("{}{media_path}", twilio.base_url()))]);
    assert_eq!(post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Valid).await.0, 200);
    let fetch = otlp.wait_for(Duration::from_secs(10), |s| s.name == "twilio.media.fetch").await;
    let webhook = otlp.wait_for(Duration::from_secs(5), |s| s.trace_id == fetch.trace_id && s.kind == 2).await;
    assert_eq!(fetch.parent_span_id, webhook.span_id, "the fetch is the webhook's child");
    let get = otlp.wait_for(Duration::from_secs(5), |s| s.parent_span_id == fetch.span_id && s.kind == 3).await;
    assert_eq!((get.name.as_str(), get.attribute("url.path")), ("GET", Some(media_path.as_str())));

    assert_eq!(enqueue_traced(&harness, admin, "ambiguous-1").await, 202);
    let reconcile = otlp.wait_for(Duration::from_secs(15), |s| s.name == "twilio.reconcile").await;
    assert_eq!(reconcile.trace_id, PLATFORM_TRACE);
    let attempt = otlp.wait_for(Duration::from_secs(5), |s| s.span_id == reconcile.parent_span_id).await;
    assert_eq!((attempt.kind, attempt.attribute("attempt")), (5, Some("2")), "a later attempt reconciles");
    let lookup = otlp.wait_for(Duration::from_secs(5), |s| s.parent_span_id == reconcile.span_id).await;
    assert!(lookup.attribute("url.path").unwrap().ends_with("/Messages.json"), "{lookup:?}");
    let first = otlp
        .wait_for(Duration::from_secs(5), |s| s.trace_id == PLATFORM_TRACE && s.attribute("attempt") == Some("1"))
        .await;
    assert_eq!(first.attribute("outcome"), Some("retry"), "the broken answer is retried");

    let lines = std::fs::read_to_string(&log).unwrap();
    let joined = lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["trace_id"] == PLATFORM_TRACE)
        .expect("a JSON log line inside the send names its trace");
    assert_eq!(joined["span_id"].as_str().map(str::len), Some(16), "{joined}");
    assert_nothing_secret_left(&otlp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_away_webhooks_go_on_and_spans_are_dropped_not_kept() {
    let twilio = FakeTwilio::start().await;
    // Nothing listens there: every export fails.
    let away = format!("http://{}", harness::free_addr());
    let mut harness = exporting_harness(&twilio, &away);
    harness.env.set("OTEL_BSP_MAX_QUEUE_SIZE", "64");
    let log = harness.dir.path().join("serve.log");
    let (serve, public, _) = harness.spawn_serve_logging(&log).await;
    let mut serve = Serve(serve);
    wait_until_ready(public).await;
    let started = std::time::Instant::now();
    for i in 0..400 {
        assert_eq!(inbound(public, &format!("SM{i:032x}")).await, 200, "webhook {i}");
    }
    println!("400 webhooks with the collector away: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60), "exporting held the webhooks up");
    serve.terminate();
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

/// A `serve` child process, killed when the test ends, however it ends: a
/// failed assertion must not leave a service running (and taking CPU from
/// every test and benchmark after it).
struct Serve(std::process::Child);

impl Serve {
    /// SIGTERM, then waits for the graceful exit (which flushes what is queued).
    fn terminate(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_protocol_it_does_not_speak_or_an_endpoint_that_is_no_url_stops_serve_with_a_clear_error() {
    let harness = Harness::new();
    let run = |vars: &[(&str, &str)]| {
        let mut command = harness.command(&["serve"], None);
        command.envs(vars.iter().copied());
        let out = command.output().unwrap();
        assert!(!out.status.success(), "serve started with {vars:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let grpc =
        run(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert!(grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL \"grpc\" is not supported: use http/protobuf"), "{grpc}");
    let malformed = run(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]);
    assert!(malformed.contains("trace export") && malformed.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{malformed}");
    // `check` says what `serve` would do.
    let mut check = harness.command(&["check"], None);
    check.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    let said = String::from_utf8_lossy(&check.output().unwrap().stdout).into_owned();
    assert!(
        said.contains(
            "traces: exported to http://127.0.0.1:4318 (http/protobuf), sampler parentbased_traceidratio 0.01"
        ),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_is_a_span_that_names_both_versions() {
    let (twilio, otlp) = (FakeTwilio::start().await, Receiver::start().await);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    let component = harness.dir.path().join("twilio.wasm");
    std::fs::write(&component, ingress_egress::bundled::get("twilio").unwrap()).unwrap();
    harness.env.set("CONNECTOR_TWILIO_COMPONENT", component.to_str().unwrap());
    harness.edit_architecture(|text| text.replace("watch_components: true", "watch_components: false"));
    let (serve, public, _) = harness.spawn_serve().await;
    let _serve = Serve(serve);
    wait_until_ready(public).await;
    std::fs::write(&component, std::fs::read(harness::fixture("twilio-v2")).unwrap()).unwrap();
    let reloaded = harness.command(&["reload"], None).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(reloaded.success());
    let swap = otlp.wait_for(Duration::from_secs(10), |s| s.name == "swap twilio").await;
    assert!(swap.attribute("swap.from").unwrap().starts_with("0.1.0 "), "{swap:?}");
    assert!(swap.attribute("swap.to").unwrap().starts_with("0.2.0-test "), "{swap:?}");
    assert_eq!((swap.kind, swap.status), (1, 0), "an internal span, not failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_webhook_exports_nothing_yet_its_envelope_carries_the_decision() {
    let (twilio, otlp) = (FakeTwilio::start().await, Receiver::start().await);
    let mut harness = exporting_harness(&twilio, &otlp.endpoint());
    // Webhooks start traces of their own: none sampled. A producer's sampled trace is followed.
    harness.env.set("OTEL_TRACES_SAMPLER", "parentbased_always_off");
    let (serve, public, admin) = harness.spawn_serve().await;
    let _serve = Serve(serve);
    wait_until_ready(public).await;
    assert_eq!(inbound(public, "SM0000000000000000000000000000a7e3").await, 200);
    assert_eq!(enqueue_traced(&harness, admin, "traced-3").await, 202);
    let sent = otlp.wait_for(Duration::from_secs(10), |s| s.trace_id == PLATFORM_TRACE && s.kind == 5).await;
    assert_eq!(sent.attribute("outcome"), Some("accepted"), "the producer's sampled trace is followed");

    let args = [
        "tail",
        "--topic",
        "ingress.twilio.messaging",
        "--from-start",
        "--limit",
        "1",
        "--idle-timeout",
        "10",
        "--headers",
    ];
    let out = harness.command(&args, None).output().unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let traceparent = envelope["headers"]["traceparent"].as_str().expect("a context, sampled or not");
    assert!(traceparent.ends_with("-00"), "not sampled, and it says so: {traceparent}");

    // Egress: a message with no context starts an unsampled trace of its own;
    // one whose producer did not sample goes on in the producer's trace.
    const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    assert_eq!(enqueue(&harness, admin, "untraced-root", None).await, 202);
    let unsampled = format!("00-{UNSAMPLED_TRACE}-b7ad6b7169203331-00");
    assert_eq!(enqueue(&harness, admin, "untraced-child", Some(&unsampled)).await, 202);
    let statuses = status_contexts(&harness, 3);
    let root = &statuses["untraced-root"];
    assert!(root.ends_with("-00") && trace_id(root) != PLATFORM_TRACE, "a root of its own, unsampled: {root}");
    assert_eq!(trace_id(&statuses["untraced-child"]), UNSAMPLED_TRACE);
    assert!(statuses["untraced-child"].ends_with("-00"), "{statuses:?}");
    assert_eq!(trace_id(&statuses["traced-3"]), PLATFORM_TRACE);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let unexported = [trace_id(traceparent), trace_id(root), UNSAMPLED_TRACE.to_owned()];
    let leaked: Vec<_> = otlp.spans().into_iter().filter(|s| unexported.contains(&s.trace_id)).collect();
    assert!(leaked.is_empty(), "an unsampled trace exported spans: {leaked:?}");
}

/// The `traceparent` of each of the first `count` status events, by the egress message's id.
fn status_contexts(harness: &Harness, count: usize) -> std::collections::HashMap<String, String> {
    let limit = count.to_string();
    let args = ["tail", "--topic", "events.twilio.status", "--from-start", "--idle-timeout", "10", "--headers"];
    let out = harness.command(&args, None).args(["--limit", &limit]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<serde_json::Value> = lines.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(events.len(), count, "{lines}");
    events
        .iter()
        .map(|event| {
            let id = event["message"]["id"].as_str().unwrap_or_else(|| panic!("no id: {event}")).to_owned();
            (id, event["headers"]["traceparent"].as_str().unwrap_or_else(|| panic!("no context: {event}")).to_owned())
        })
        .collect()
}
