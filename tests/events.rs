//! The admin listener's Server-Sent Events: a consumer that disconnects and
//! comes back with `Last-Event-ID` misses nothing and sees nothing twice, on
//! either bus.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use harness::fixtures::{borrowed, inbound_sms_with};
use harness::nats::NatsServer;
use harness::{Harness, Signature, get_with, post_webhook, schemas};
use http_body_util::{BodyExt as _, Empty};
use ingress_egress::telemetry::TraceContext;

const TOPIC: &str = "ingress.twilio.messaging";

/// The admin listener and its credential.
#[derive(Clone)]
struct Admin {
    addr: SocketAddr,
    bearer: String,
}

/// One event as received: its id and its JSON.
#[derive(Debug)]
struct Event {
    id: i64,
    data: serde_json::Value,
}

/// Opens the stream with `headers`, reads until `count` events came (bounded),
/// then disconnects.
async fn read_events(admin: Admin, query: &str, headers: &[(&str, &str)], count: usize) -> Vec<Event> {
    let stream = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut request = hyper::Request::get(format!("/v1/topics/{TOPIC}/events{query}"))
        .header("host", "admin")
        .header("authorization", admin.bearer);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let (mut text, mut events) = (String::new(), Vec::new());
    while events.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
        let frame = frame.expect("an event within 10 s").expect("the stream stays open").unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap_or_default()).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(event) = parse(&block) {
                events.push(event);
            }
        }
    }
    connection.abort();
    events
}

fn parse(block: &str) -> Option<Event> {
    let id = block.lines().find_map(|l| l.strip_prefix("id: "))?.parse().unwrap();
    let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    let data: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap();
    // With `?headers=true`, the message is wrapped with its headers.
    schemas::assert_valid(TOPIC, data.get("message").unwrap_or(&data));
    Some(Event { id, data })
}

async fn sms(public: SocketAddr, range: std::ops::Range<usize>) -> Vec<String> {
    let mut sids = Vec::new();
    for i in range {
        let sid = format!("SM{i:032x}");
        let params = inbound_sms_with(&sid, "event");
        assert_eq!(post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Valid).await.0, 200);
        sids.push(sid);
    }
    sids
}

fn sids_of(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.data["provider_message_id"].as_str().unwrap().to_owned()).collect()
}

async fn a_consumer_resumes_without_a_gap_or_a_duplicate(harness: Harness) {
    let service = harness.start().await;
    let public = service.public_addr;
    let admin = Admin { addr: service.admin_addr, bearer: harness::admin_bearer(&service) };
    let first_sids = sms(public, 0..5).await;
    let first = read_events(admin.clone(), "?from=start", &[], 5).await;
    assert_eq!(sids_of(&first), first_sids);

    // Disconnected while five more arrive.
    let missed = sms(public, 5..10).await;
    let last_id = first.last().unwrap().id.to_string();
    let resumed = read_events(admin.clone(), "", &[("last-event-id", &last_id)], 5).await;
    assert_eq!(sids_of(&resumed), missed, "exactly the missed ones, in order");
    assert!(resumed.first().unwrap().id > first.last().unwrap().id);
    assert!(resumed.windows(2).all(|w| w[0].id < w[1].id));

    // Live by default: only what comes after connecting.
    let live = tokio::spawn(read_events(admin.clone(), "", &[], 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = sms(public, 10..11).await;
    assert_eq!(sids_of(&live.await.unwrap()), new);

    // With its headers: the trace context a message was published in.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = TraceContext::from_headers(|name| (name == "traceparent").then_some(traceparent)).unwrap();
    let envelope = serde_json::to_vec(&first[0].data).unwrap();
    let last_id = new_event_id(&service).await.to_string();
    service.state.bus.publish(TOPIC, Some("traced"), envelope.into(), Some(&trace)).await.unwrap();
    let with_headers = read_events(admin.clone(), "?headers=true", &[("last-event-id", &last_id)], 1).await;
    assert_eq!(with_headers[0].data["headers"]["traceparent"], traceparent);
    assert_eq!(with_headers[0].data["message"], first[0].data);
    let untraced = read_events(admin.clone(), "?from=start&headers=true", &[], 1).await;
    assert_eq!(untraced[0].data["headers"], serde_json::json!({}), "none was given");

    let auth = [("authorization", admin.bearer.as_str())];
    assert_eq!(get_with(admin.addr, "/v1/topics/not.a.topic/events", &auth).await.0, 404);
    assert_eq!(get_with(admin.addr, &format!("/v1/topics/{TOPIC}/events?last_event_id=x"), &auth).await.0, 400);
    service.stop().await.unwrap();
}

/// The newest event id on the topic: where a consumer that wants only what comes next resumes.
async fn new_event_id(service: &ingress_egress::service::RunningService) -> i64 {
    service.state.bus.last_seq(TOPIC).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_consumer_resumes_without_a_gap_or_a_duplicate() {
    a_consumer_resumes_without_a_gap_or_a_duplicate(Harness::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_consumer_resumes_without_a_gap_or_a_duplicate() {
    let server = NatsServer::start();
    let mut harness = Harness::new();
    harness.env.set("BUS_URL", server.url());
    a_consumer_resumes_without_a_gap_or_a_duplicate(harness).await;
}
