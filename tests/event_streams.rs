//! Twilio Event Streams into `POST /twilio/events`: batches of CloudEvents
//! signed by the official `twilio` npm package as Twilio signs JSON webhooks
//! (X-Twilio-Signature over the URL with `bodySHA256`), each event published
//! as its webhook twin is, whichever arrives first.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::sync::Arc;

use harness::outage::OutageBus;
use harness::{ACCOUNT_SID, AUTH_TOKEN, CHAT_SERVICE_SID, Harness, Signature, messages, post, post_webhook};
use ingress_egress::service::RunningService;
use serde_json::{Value, json};

const SM: &str = "SM000000000000000000000000000000e1";
const STATUS: &str = "events.twilio.status";
const MESSAGING: &str = "ingress.twilio.messaging";
const REJECTED: &str = "deadletter.twilio.ingress";

fn status_event(id: &str, sid: &str, status: &str, error_code: Value) -> Value {
    json!({
        "specversion": "1.0",
        "type": format!("com.twilio.messaging.message.{status}"),
        "source": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
        "id": id,
        "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/3",
        "datacontenttype": "application/json",
        "time": "2026-12-07T10:00:00.000Z",
        "data": {
            "messageSid": sid,
            "accountSid": ACCOUNT_SID,
            "from": "+15005550006",
            "to": "+14155550100",
            "messageStatus": status.to_ascii_uppercase(),
            "errorCode": error_code,
            "numberOfSegments": 1,
            "timestamp": "2026-12-07T10:00:00.000Z"
        }
    })
}

fn inbound_event(id: &str, sid: &str, body: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": "com.twilio.messaging.inbound-message.received",
        "source": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
        "id": id,
        "dataschema": "https://events-schemas.twilio.com/Messaging.InboundMessageV1/5",
        "datacontenttype": "application/json",
        "time": "2026-12-07T10:00:00.000Z",
        "data": {
            "messageSid": sid, "accountSid": ACCOUNT_SID, "from": "+14155550100", "to": "+15005550006",
            "body": body, "numMedia": 0, "numSegments": 1, "timestamp": "2026-12-07T10:00:00.000Z"
        }
    })
}

/// Posts `batch` signed by the `twilio` npm package (with the Auth Token),
/// its body changed by `tamper` after signing.
async fn post_batch_with(service: &RunningService, batch: &Value, tamper: fn(String) -> String) -> u16 {
    let body = batch.to_string();
    let base = format!("http://{}/twilio/events", service.public_addr);
    let (url, signature) = harness::official::node_sign_json(AUTH_TOKEN, "HMAC_SHA1", &base, &body);
    let path = url.strip_prefix(&format!("http://{}", service.public_addr)).unwrap().to_owned();
    let headers = [("content-type", "application/json"), ("x-twilio-signature", signature.as_str())];
    post(service.public_addr, &path, &headers, tamper(body).into_bytes()).await.0
}

async fn post_batch(service: &RunningService, batch: &Value) -> u16 {
    post_batch_with(service, batch, |body| body).await
}

fn statuses(events: &[Value]) -> Vec<(String, Value)> {
    events.iter().map(|e| (e["status"].as_str().unwrap().to_owned(), e["previous_status"].clone())).collect()
}

#[tokio::test]
async fn status_events_and_callbacks_move_one_status_forward() {
    let service = Harness::new().start().await;
    let batch = json!([status_event("EZ01", SM, "queued", Value::Null), status_event("EZ02", SM, "sent", Value::Null)]);
    assert_eq!(post_batch(&service, &batch).await, 200);
    // The callback for `delivered` comes before its event.
    let callback = [("MessageSid", SM), ("AccountSid", ACCOUNT_SID), ("MessageStatus", "delivered")];
    assert_eq!(post_webhook(service.public_addr, "/twilio/status", &callback, Signature::Valid).await.0, 200);
    // Late and repeated events: `sent` again, then `delivered` (the callback's twin), then `read`.
    let late = json!([
        status_event("EZ02", SM, "sent", Value::Null),
        status_event("EZ03", SM, "delivered", Value::Null),
        status_event("EZ04", SM, "read", Value::Null),
    ]);
    assert_eq!(post_batch(&service, &late).await, 200);
    assert_eq!(post_batch(&service, &late).await, 200, "a replayed batch is answered, and publishes nothing");
    let published = messages(&service, STATUS).await;
    assert_eq!(
        statuses(&published),
        [
            ("queued".to_owned(), Value::Null),
            ("sent".to_owned(), json!("queued")),
            ("delivered".to_owned(), json!("sent")),
            ("read".to_owned(), json!("delivered")),
        ]
    );
    // A failure is classed as a callback's is.
    let failed = json!([status_event("EZ05", "SM000000000000000000000000000000e2", "undelivered", json!(30003))]);
    assert_eq!(post_batch(&service, &failed).await, 200);
    let published = messages(&service, STATUS).await;
    let last = published.last().unwrap();
    assert_eq!((last["error_code"].as_u64(), last["error_class"].as_str()), (Some(30003), Some("unreachable")));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn inbound_and_conversation_events_are_one_envelope_with_their_webhook_twins() {
    let service = Harness::new().start().await;
    // The event first, then the webhook; then a webhook first, then its event.
    assert_eq!(post_batch(&service, &json!([inbound_event("EZ11", SM, "hello")])).await, 200);
    let twin = [
        ("MessageSid", SM),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("Body", "hello"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", &twin, Signature::Valid).await.0, 200);
    let second = "SM000000000000000000000000000000e3";
    let webhook_first = [
        ("MessageSid", second),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("Body", "again"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", &webhook_first, Signature::Valid).await.0, 200);
    assert_eq!(post_batch(&service, &json!([inbound_event("EZ12", second, "again")])).await, 200);
    let envelopes = messages(&service, MESSAGING).await;
    let sids: Vec<&str> = envelopes.iter().map(|e| e["provider_message_id"].as_str().unwrap()).collect();
    assert_eq!(sids, [SM, second]);
    assert_eq!(envelopes[0]["body"], "hello");
    assert_eq!(envelopes[0]["from"], "+14155550100");

    let im = "IM000000000000000000000000000000e1";
    let conversation = json!([{
        "specversion": "1.0", "type": "com.twilio.conversations.message.added", "id": "EZ13",
        "source": "/v1/Conversations/CH000000000000000000000000000000e1/Messages", "time": "2026-12-07T10:00:00Z",
        "data": {"accountSid": ACCOUNT_SID, "conversationSid": "CH000000000000000000000000000000e1",
                 "chatServiceSid": CHAT_SERVICE_SID, "messageSid": im, "author": "alice", "body": "hi there",
                 "index": 0, "attributes": {"priority": "high"}}
    }]);
    assert_eq!(post_batch(&service, &conversation).await, 200);
    let post_event = [
        ("AccountSid", ACCOUNT_SID),
        ("EventType", "onMessageAdded"),
        ("ConversationSid", "CH000000000000000000000000000000e1"),
        ("MessageSid", im),
        ("ChatServiceSid", CHAT_SERVICE_SID),
        ("Author", "alice"),
        ("Body", "hi there"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/conversations", &post_event, Signature::Valid).await.0, 200);
    let conversations = messages(&service, "ingress.twilio.conversations").await;
    assert_eq!(conversations.len(), 1);
    assert_eq!(
        (conversations[0]["from"].as_str(), conversations[0]["metadata"]["priority"].as_str()),
        (Some("alice"), Some("high"))
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_event_is_rejected_alone_and_other_types_are_counted() {
    let service = Harness::new().start().await;
    let mut wrong = status_event("EZ22", "SM000000000000000000000000000000e4", "sent", Value::Null);
    wrong["data"]["messageStatus"] = json!("DELIVERED");
    let other_account = inbound_event("EZ24", "SM000000000000000000000000000000e5", "not yours");
    let mut other_account = other_account;
    other_account["data"]["accountSid"] = json!("AC99999999999999999999999999999999");
    let batch = json!([
        status_event("EZ21", SM, "sent", Value::Null),
        wrong,
        {"specversion": "1.0", "type": "com.twilio.voice.insights.call-summary.complete", "id": "EZ23", "data": {}},
        other_account,
        {"id": "EZ25", "type": "com.twilio.messaging.message.sent"},
    ]);
    assert_eq!(post_batch(&service, &batch).await, 200, "Twilio would drop the good events with a 4xx");
    assert_eq!(messages(&service, STATUS).await.len(), 1);
    assert!(messages(&service, MESSAGING).await.is_empty(), "another account's event is not taken on this signature");
    // `messages` checks each against the rejected-delivery schema.
    let rejected = messages(&service, REJECTED).await;
    let reasons: Vec<(&str, &str)> =
        rejected.iter().map(|r| (r["id"].as_str().unwrap(), r["reason"].as_str().unwrap())).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].0 == "EZ22" && reasons[0].1.contains("does not match"), "{reasons:?}");
    assert!(reasons[1].0 == "EZ24" && reasons[1].1.contains("AC99999999999999999999999999999999"), "{reasons:?}");
    assert!(reasons[2].0 == "EZ25" && reasons[2].1.contains("specversion"), "{reasons:?}");
    assert_eq!(rejected[0]["payload"]["data"]["messageStatus"], "DELIVERED", "kept as it came");
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    let count = |event: &str| {
        harness::metric(&metrics, &format!("connector_events_total{{connector=\"twilio\",event=\"{event}\"}}"))
    };
    assert_eq!((count("event-streams-ignored"), count("event-streams-rejected")), (1.0, 3.0));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_tampered_or_unsigned_batch_publishes_nothing() {
    let service = Harness::new().start().await;
    let batch = json!([inbound_event("EZ31", SM, "hello")]);
    assert_eq!(post_batch_with(&service, &batch, |body| body.replace("hello", "HELLO")).await, 403);
    let path = "/twilio/events?bodySHA256=00";
    let unsigned =
        post(service.public_addr, path, &[("content-type", "application/json")], batch.to_string().into_bytes());
    assert_eq!(unsigned.await.0, 400);
    // Without a content type a batch is still read as JSON.
    let (url, signature) = harness::official::node_sign_json(
        AUTH_TOKEN,
        "HMAC_SHA1",
        &format!("http://{}/twilio/events", service.public_addr),
        &batch.to_string(),
    );
    let path = url.strip_prefix(&format!("http://{}", service.public_addr)).unwrap().to_owned();
    let headers = [("x-twilio-signature", signature.as_str())];
    let untyped = post(service.public_addr, &path, &headers, batch.to_string().into_bytes()).await;
    assert_eq!(untyped.0, 200);
    assert_eq!(messages(&service, MESSAGING).await.len(), 1);
    // The right signature over a form body is not a batch.
    let form = [("MessageSid", SM), ("AccountSid", ACCOUNT_SID)];
    assert_eq!(post_webhook(service.public_addr, "/twilio/events", &form, Signature::Valid).await.0, 415);
    assert_eq!(messages(&service, MESSAGING).await.len(), 1, "only the untyped batch");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_bus_and_spool_away_a_batch_gets_503_then_is_published_once() {
    let mut harness = Harness::new();
    harness.edit_architecture(|text| text.replace("    limits:\n", "    spool:\n      max_bytes: 1\n    limits:\n"));
    let path = harness.dir.path().join("data").join("bus.sqlite3");
    let bus = OutageBus::new(Arc::new(ingress_egress::bus::sqlite::SqliteBus::open(&path).unwrap()));
    let service = harness.start_with_bus(bus.clone()).await;
    let batch = json!([
        inbound_event("EZ41", SM, "first"),
        inbound_event("EZ42", "SM000000000000000000000000000000e6", "second"),
        status_event("EZ43", "SM000000000000000000000000000000e7", "sent", Value::Null),
    ]);
    bus.set_away(true);
    assert_eq!(post_batch(&service, &batch).await, 503, "Twilio retries 5xx for up to 4 hours");
    bus.set_away(false);
    assert_eq!(post_batch(&service, &batch).await, 200);
    assert_eq!(post_batch(&service, &batch).await, 200);
    assert_eq!(messages(&service, MESSAGING).await.len(), 2);
    assert_eq!(messages(&service, STATUS).await.len(), 1);
    service.stop().await.unwrap();
}

/// `simulate event-streams` signs a batch the service takes.
#[tokio::test]
async fn a_simulated_batch_is_taken() {
    let harness = Harness::new();
    let service = harness.start().await;
    let connector = harness.load_twilio().await;
    let base = format!("http://{}", service.public_addr);
    let options = vec![("status".to_owned(), "sent".to_owned()), ("body".to_owned(), "simulated".to_owned())];
    let batch = connector.simulate_webhook("event-streams", &options, &base).await.unwrap();
    let (status, _) =
        ingress_egress::client::post(&base, &batch.path_with_query, &batch.headers, batch.body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(messages(&service, MESSAGING).await[0]["body"], "simulated");
    assert_eq!(messages(&service, STATUS).await[0]["status"], "sent");
    service.stop().await.unwrap();
}
