//! Egress: the component's REST requests against a fake Twilio that checks
//! them to the letter, the outcomes Twilio's answers map to, and the egress
//! worker that retries, dead-letters and reports.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::Duration;

use base64::Engine as _;
use harness::fake_twilio::{FakeTwilio, Reply};
use harness::fixtures::{egress_sms, egress_to_conversation};
use harness::{
    ACCOUNT_SID, API_KEY, API_SECRET, AUTH_TOKEN, CHAT_SERVICE_SID, Harness, admin_post, enqueue, pairs, post,
    wait_for_messages,
};
use ingress_egress::runtime::bindings::{EgressMessage, ErrorClass, SendError};

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn an_sms_is_the_exact_request_twilio_expects() {
    let fake = FakeTwilio::start().await;
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url()).env.set("TWILIO_WEBHOOK_BASE_URL", "https://hooks.example.com");
    let connector = harness.load_twilio().await;
    let accepted = connector.send(&egress_sms("msg-1"), 1).await.unwrap();
    assert_eq!(accepted.status, "queued");
    assert_eq!(accepted.segments, Some(1));
    assert!(accepted.provider_message_id.starts_with("SM"));

    let received = fake.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"));
    assert_eq!(request.header("authorization"), Some(basic(API_KEY, API_SECRET).as_str()));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        request.form,
        pairs(&[
            ("To", "+14155550100"),
            ("From", "+15005550006"),
            ("Body", "Your code is 1234"),
            ("MediaUrl", "https://example.com/a.png"),
            ("StatusCallback", "https://hooks.example.com/twilio/status?egress_id=msg-1"),
        ])
    );
}

#[tokio::test]
async fn without_an_api_key_rest_uses_the_auth_token() {
    let fake = FakeTwilio::start().await;
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url()).env.remove("TWILIO_API_KEY").remove("TWILIO_API_SECRET");
    let connector = harness.load_twilio().await;
    connector.send(&egress_sms("msg-2"), 1).await.unwrap();
    assert_eq!(fake.received()[0].header("authorization"), Some(basic(ACCOUNT_SID, AUTH_TOKEN).as_str()));
}

#[tokio::test]
async fn a_conversation_message_is_the_exact_request() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::json(201, r#"{"sid":"IM00000000000000000000000000000009","index":0}"#)]);
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url()).env.set("TWILIO_IDENTITY", "support-bot");
    let connector = harness.load_twilio().await;
    let message = EgressMessage {
        attributes_json: Some(r#"{"priority":"high"}"#.into()),
        ..egress_to_conversation("c-1", "CH00000000000000000000000000000001", "hello conversation")
    };
    let accepted = connector.send(&message, 1).await.unwrap();
    assert_eq!(accepted.provider_message_id, "IM00000000000000000000000000000009");
    let request = &fake.received()[0];
    assert_eq!(
        request.path,
        format!("/v1/Services/{CHAT_SERVICE_SID}/Conversations/CH00000000000000000000000000000001/Messages")
    );
    assert_eq!(request.header("x-twilio-webhook-enabled"), Some("true"));
    assert_eq!(
        request.form,
        pairs(&[("Author", "support-bot"), ("Body", "hello conversation"), ("Attributes", r#"{"priority":"high"}"#)])
    );
}

#[tokio::test]
async fn twilio_answers_map_to_what_the_caller_should_do() {
    let fake = FakeTwilio::start().await;
    fake.script([
        Reply::error(400, 21211, "The 'To' number is not a valid phone number."),
        Reply::error(400, 21610, "Attempt to send to unsubscribed recipient"),
        Reply::error(429, 20429, "Too Many Requests").with_header("retry-after", "3"),
        Reply::json(500, "oops"),
        Reply::hang(Duration::from_secs(30)),
    ]);
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url());
    harness.edit_architecture(|text| text.replace("call_timeout_ms: 20000", "call_timeout_ms: 3000"));
    let connector = harness.load_twilio().await;

    match harness::answer(connector.send(&egress_sms("a"), 1).await) {
        Err(SendError::Reject(e)) => assert_eq!((e.code, e.http_status), (Some(21211), Some(400))),
        other => panic!("21211: {other:?}"),
    }
    match harness::answer(connector.send(&egress_sms("b"), 1).await) {
        Err(SendError::OptedOut(e)) => assert_eq!(e.code, Some(21610)),
        other => panic!("21610: {other:?}"),
    }
    match harness::answer(connector.send(&egress_sms("c"), 1).await) {
        Err(SendError::Retry(hint)) => assert_eq!((hint.after_ms, hint.reason.code), (Some(3000), Some(20429))),
        other => panic!("429: {other:?}"),
    }
    match harness::answer(connector.send(&egress_sms("d"), 1).await) {
        Err(SendError::Retry(hint)) => assert_eq!(hint.reason.http_status, Some(500)),
        other => panic!("500: {other:?}"),
    }
    // A hang after the request went out: the message may exist, so it is not
    // sent again until Twilio's list is asked (tests/reconcile.rs): come back later.
    let started = std::time::Instant::now();
    match harness::answer(connector.send(&egress_sms("e"), 1).await) {
        Err(SendError::Retry(hint)) => {
            assert_eq!(hint.reason.class, ErrorClass::Unknown);
            assert!(hint.reason.message.contains("looking for it in Twilio's list"), "{}", hint.reason.message);
        }
        other => panic!("hang: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the call timeout");
}

#[tokio::test]
async fn the_error_class_not_the_http_status_decides() {
    use ingress_egress::runtime::bindings::ErrorClass;
    let fake = FakeTwilio::start().await;
    // (Twilio's answer, what the worker should do, the class it should carry)
    let cases: [(Reply, &str, ErrorClass); 7] = [
        (Reply::error(400, 30001, "Queue overflow"), "retry", ErrorClass::Throttled),
        (
            Reply::error(400, 21611, "This 'From' number has exceeded the maximum number of queued messages"),
            "retry",
            ErrorClass::Throttled,
        ),
        (
            Reply::error(400, 63016, "Failed to send freeform message because you are outside the allowed window."),
            "reject",
            ErrorClass::WindowClosed,
        ),
        (Reply::error(400, 21654, "ContentSid Required"), "reject", ErrorClass::Template),
        (Reply::error(401, 20003, "Authenticate"), "reject", ErrorClass::Configuration),
        (Reply::error(503, 99999, "a code nobody knows"), "retry", ErrorClass::Retryable),
        (Reply::error(418, 99998, "another one"), "reject", ErrorClass::InvalidRequest),
    ];
    fake.script(cases.iter().map(|(reply, _, _)| reply.clone()));
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url());
    let connector = harness.load_twilio().await;
    for (i, (reply, action, class)) in cases.into_iter().enumerate() {
        let (got, error) = match harness::answer(connector.send(&egress_sms(&format!("class-{i}")), 1).await) {
            Err(SendError::Retry(hint)) => ("retry", hint.reason),
            Err(SendError::Reject(error)) => ("reject", error),
            other => panic!("{}: {other:?}", reply.body),
        };
        assert_eq!((got, error.class), (action, class), "{}", reply.body);
    }
}

#[tokio::test]
async fn sends_reuse_a_kept_connection_across_instances() {
    let fake = FakeTwilio::start().await;
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url());
    // One call per instance: reuse must come from the host's pool, not an instance.
    harness.set_setting("instance_reuse", "1");
    let connector = harness.load_twilio().await;
    for n in 0..5 {
        assert!(harness::answer(connector.send(&egress_sms(&format!("kept-{n}")), 1).await).is_ok());
    }
    assert_eq!(fake.received().len(), 5);
    assert_eq!(fake.connections(), 1, "every send after the first reused the connection");
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    // Handed out by the harness's registry: no other test's server will take it.
    let base = format!("http://{}", harness::free_addr());
    let mut harness = Harness::new();
    harness.with_twilio_at(&base);
    let connector = harness.load_twilio().await;
    // Never sent: a plain retry, not a lost answer to reconcile.
    match harness::answer(connector.send(&egress_sms("f"), 1).await) {
        Err(SendError::Retry(hint)) => assert_ne!(hint.reason.class, ErrorClass::Unknown, "{}", hint.reason.message),
        other => panic!("connection refused: {other:?}"),
    }
}

/// A service whose egress retries quickly, against `fake`.
fn fast_retry_harness(fake: &FakeTwilio) -> Harness {
    harness::fast_retry_harness(&fake.base_url())
}

#[tokio::test]
async fn an_egress_message_reaches_twilio_and_produces_a_status_event() {
    let fake = FakeTwilio::start().await;
    let service = fast_retry_harness(&fake).start().await;
    let id = enqueue(&service, r#"{"to": "+14155550100", "from": "+15005550006", "body": "hi"}"#).await;
    let events = wait_for_messages(&service, "events.twilio.status", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["status"], "queued");
    assert!(events[0]["provider_message_id"].as_str().unwrap().starts_with("SM"));
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].form[..3], pairs(&[("To", "+14155550100"), ("From", "+15005550006"), ("Body", "hi")]));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_429_then_201_sends_once_after_a_retry() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::error(429, 20429, "Too Many Requests")]);
    let service = fast_retry_harness(&fake).start().await;
    let id = enqueue(&service, r#"{"to": "+14155550100", "from": "+15005550006", "body": "retry me"}"#).await;
    let events = wait_for_messages(&service, "events.twilio.status", 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0]["id"].as_str(), events[0]["status"].as_str()), (Some(id.as_str()), Some("queued")));
    // Settled: nothing more is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received().len(), 2);
    assert!(harness::messages(&service, "deadletter.twilio").await.is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn the_worker_waits_for_twilios_retry_after() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::error(429, 20429, "Too Many Requests").with_header("Retry-After", "1")]);
    // The backoff alone would retry after 20 ms.
    let service = fast_retry_harness(&fake).start().await;
    enqueue(&service, r#"{"to": "+14155550100", "from": "+15005550006", "body": "later"}"#).await;
    assert_eq!(wait_for_messages(&service, "events.twilio.status", 1).await.len(), 1);
    let times = fake.received_at();
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, not after Retry-After: 1");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn an_opted_out_recipient_is_dead_lettered_and_reported() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::error(400, 21610, "Attempt to send to unsubscribed recipient")]);
    let service = fast_retry_harness(&fake).start().await;
    let id = enqueue(&service, r#"{"id": "stop-1", "to": "+14155550100", "from": "+15005550006", "body": "hi"}"#).await;
    assert_eq!(id, "stop-1");
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], "stop-1");
    assert_eq!(dead[0]["error_code"], 21610);
    assert_eq!(dead[0]["error_class"], "opted-out");
    assert!(dead[0]["reason"].as_str().unwrap().contains("opted out"));
    assert_eq!(dead[0]["message"]["body"], "hi");
    let events = wait_for_messages(&service, "events.twilio.status", 1).await;
    assert_eq!((events[0]["status"].as_str(), events[0]["error_code"].as_u64()), (Some("opted-out"), Some(21610)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.received().len(), 1, "a permanent failure is not retried");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn retries_end_in_the_dead_letter_topic() {
    let fake = FakeTwilio::start().await;
    fake.script((0..3).map(|_| Reply::json(503, "unavailable")));
    let mut harness = fast_retry_harness(&fake);
    harness.edit_architecture(|text| text.replace("max_attempts: 8", "max_attempts: 3"));
    let service = harness.start().await;
    enqueue(&service, r#"{"id": "m-503", "to": "+14155550100", "from": "+15005550006", "body": "hi"}"#).await;
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["reason"].as_str().unwrap().starts_with("gave up after 3 attempts"), "{dead:?}");
    assert_eq!(dead[0]["error_class"], "retryable");
    assert_eq!(fake.received().len(), 3);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_whatsapp_template_scheduled_with_options_is_the_exact_request() {
    let fake = FakeTwilio::start().await;
    let service = fast_retry_harness(&fake).start().await;
    let message = r#"{
        "id": "tpl-1",
        "to": "whatsapp:+14155550100",
        "messaging_service_sid": "MG0123456789abcdef0123456789abcdef",
        "template": {"id": "HX0123456789abcdef0123456789abcdef", "variables": {"1": "Ada", "2": "12:00"}},
        "send_at": "2030-01-01T13:00:00+01:00",
        "validity_seconds": 600,
        "options": {"ShortenUrls": true, "MaxPrice": 0.05, "PersistentAction": ["mailto:a@example.com", "sms:+14155550100"]}
    }"#;
    enqueue(&service, message).await;
    wait_for_messages(&service, "events.twilio.status", 1).await;
    let form = &fake.received()[0].form;
    assert_eq!(
        form[..],
        pairs(&[
            ("To", "whatsapp:+14155550100"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("ContentSid", "HX0123456789abcdef0123456789abcdef"),
            ("ContentVariables", r#"{"1":"Ada","2":"12:00"}"#),
            ("SendAt", "2030-01-01T12:00:00Z"),
            ("ScheduleType", "fixed"),
            ("ValidityPeriod", "600"),
            ("MaxPrice", "0.05"),
            ("PersistentAction", "mailto:a@example.com"),
            ("PersistentAction", "sms:+14155550100"),
            ("ShortenUrls", "true"),
        ])[..],
        "{form:?}"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn template_schedule_and_option_mistakes_are_refused_at_the_door() {
    let fake = FakeTwilio::start().await;
    let service = fast_retry_harness(&fake).start().await;
    let cases = [
        (r#""template": {"id": "HX0123456789abcdef0123456789abcdef", "variables": "not an object"}"#, "variables"),
        (r#""template": {"id": "HXshort"}"#, "Content sid"),
        (r#""body": "hi", "send_at": "2030-01-01T12:00:00Z""#, "needs a Messaging Service"),
        (r#""body": "hi", "options": {"Nonsense": 1}"#, "unknown option Nonsense"),
        (r#""body": "hi", "validity_seconds": 0"#, "validity_seconds"),
    ];
    for (fields, expected) in cases {
        let body = format!(r#"{{"to": "whatsapp:+14155550100", "from": "whatsapp:+15005550006", {fields}}}"#);
        let (status, answer) =
            admin_post(&service, "/v1/messages", &[("content-type", "application/json")], body.into_bytes()).await;
        assert_eq!(status, 400, "{fields}: {answer}");
        assert!(answer.contains(expected), "{fields}: {answer}");
    }
    assert!(fake.received().is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_scheduled_message_is_canceled_through_the_admin_api() {
    const SID: &str = "SM0123456789abcdef0123456789abcdef";
    let fake = FakeTwilio::start().await;
    fake.script([
        Reply::json(200, &format!(r#"{{"sid":"{SID}","status":"canceled"}}"#)),
        Reply::error(404, 20404, "The requested resource was not found"),
        Reply::error(400, 30409, "Message cannot be canceled"),
    ]);
    let service = fast_retry_harness(&fake).start().await;
    let cancel = |sid: &str| {
        let path = format!("/v1/messages/{sid}/cancel");
        let service = &service;
        async move { admin_post(service, &path, &[], Vec::new()).await }
    };
    let (status, answer) = cancel(SID).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!((answer["provider_message_id"].as_str(), answer["status"].as_str()), (Some(SID), Some("canceled")));
    let request = &fake.received()[0];
    assert_eq!(
        (request.method.as_str(), request.path.clone()),
        ("POST", format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{SID}.json"))
    );
    assert_eq!(request.form, pairs(&[("Status", "canceled")]));
    assert_eq!(request.header("authorization"), Some(basic(API_KEY, API_SECRET).as_str()));
    // Unknown to Twilio, then no longer scheduled.
    assert_eq!(cancel(SID).await.0, 404);
    let (status, answer) = cancel(SID).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("cannot be canceled"), "{answer}");
    // Not a message sid: refused before Twilio is asked.
    assert_eq!(cancel("SM..%2F..").await.0, 400);
    assert_eq!(fake.received().len(), 3);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_egress_requests_are_refused_at_the_door() {
    let fake = FakeTwilio::start().await;
    let service = fast_retry_harness(&fake).start().await;
    for body in [
        r#"{"body": "no recipient"}"#,
        r#"{"to": "+1", "conversation_sid": "CH1", "body": "both"}"#,
        r#"{"to": "+1"}"#,
        "not json",
        r#"{"to": "+1", "body": "x", "colour": "red"}"#,
    ] {
        let (status, _) =
            admin_post(&service, "/v1/messages", &[("content-type", "application/json")], body.as_bytes().to_vec())
                .await;
        assert_eq!(status, 400, "{body}");
    }
    assert!(harness::messages(&service, "egress.twilio").await.is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn outbound_calls_reach_only_allowed_hosts() {
    let fake = FakeTwilio::start().await;
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    let service = harness.start().await;
    let path = format!("/probe/outbound?url=http://{}/anything", fake.addr);
    let (_, body) = post(service.public_addr, &path, &[], Vec::new()).await;
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert!(fake.received().is_empty());
    service.stop().await.unwrap();

    let mut harness = Harness::new();
    harness.with_probe("probe", &["127.0.0.1"]);
    let service = harness.start().await;
    let (_, body) = post(service.public_addr, &path, &[], Vec::new()).await;
    assert_eq!(body, "status 201");
    assert_eq!(fake.received().len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn each_sender_is_held_to_its_rate() {
    let fake = FakeTwilio::start().await;
    let mut harness = fast_retry_harness(&fake);
    harness.edit_architecture(|text| text.replace("rate_per_sender: 10", "rate_per_sender: 4"));
    let service = harness.start().await;
    for i in 0..12 {
        enqueue(&service, &format!(r#"{{"id": "r{i}", "to": "+14155550100", "from": "+15005550006", "body": "x"}}"#))
            .await;
    }
    enqueue(&service, r#"{"id": "other", "to": "+14155550100", "from": "+15005550007", "body": "x"}"#).await;
    let events = wait_for_messages(&service, "events.twilio.status", 13).await;
    assert_eq!(events.len(), 13);
    // A burst of 4, then 4 per second: the other 8 take at least 2 s. The
    // other sender is not held up behind them.
    let times = fake.received_at();
    let from_first: Vec<_> = fake
        .received()
        .iter()
        .zip(&times)
        .filter(|(r, _)| r.form.iter().any(|(k, v)| k == "From" && v == "+15005550006"))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(from_first.len(), 12);
    let span = *from_first.last().unwrap() - from_first[0];
    assert!(span >= Duration::from_millis(1800), "12 messages at 4/s took only {span:?}");
    let other_at = fake
        .received()
        .iter()
        .zip(&times)
        .find(|(r, _)| r.form.iter().any(|(k, v)| k == "From" && v == "+15005550007"))
        .map(|(_, t)| *t)
        .expect("the other sender's message");
    let waited = other_at.saturating_duration_since(from_first[0]);
    assert!(waited < Duration::from_millis(800), "the other sender waited {waited:?} behind the first one's queue");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_releases_messages_waiting_for_their_senders_rate_and_a_restart_sends_each_once() {
    let fake = FakeTwilio::start().await;
    let mut harness = fast_retry_harness(&fake);
    harness.set_setting("rate_per_sender", "0.2"); // one message every 5 s
    let service = harness.start().await;
    for i in 0..4 {
        enqueue(
            &service,
            &format!(r#"{{"id": "held-{i}", "to": "+14155550100", "from": "+15005550006", "body": "{i}"}}"#),
        )
        .await;
    }
    wait_for_messages(&service, "events.twilio.status", 1).await;
    // The other three wait for the sender's rate: back on the bus, until their turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = std::time::Instant::now();
    service.stop().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2), "stop waited {:?} on the rate", stopping.elapsed());
    assert_eq!(fake.received().len(), 1);

    // Released, not lost: the next start sends the other three, once each
    // (each back on the bus until its turn: 5, 10 and 15 s after the first).
    harness.set_setting("rate_per_sender", "100");
    let service = harness.start().await;
    let events = harness::wait_for_messages_within(&service, "events.twilio.status", 4, Duration::from_secs(40)).await;
    assert_eq!(events.len(), 4, "{events:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bodies: Vec<String> = fake
        .received()
        .iter()
        .flat_map(|r| r.form.iter().filter(|(k, _)| k == "Body").map(|(_, v)| v.clone()))
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["0", "1", "2", "3"]);
    service.stop().await.unwrap();
}

/// Sends the message `id` and waits until the dead-letter topic holds `count`.
async fn dead_letter(service: &ingress_egress::service::RunningService, id: &str, count: usize) -> serde_json::Value {
    enqueue(service, &format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "{id}"}}"#))
        .await;
    let dead = wait_for_messages(service, "deadletter.twilio", count).await;
    assert_eq!(dead.len(), count, "{dead:?}");
    dead.last().unwrap().clone()
}

/// `ingress-egress redrive …` against the harness's bus; its stdout.
fn redrive_command(harness: &Harness, args: &[&str]) -> String {
    let args: Vec<&str> =
        ["redrive", "--topic", "deadletter.twilio"].iter().copied().chain(args.iter().copied()).collect();
    let output = harness.command(&args, None).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Redrive: a dead letter whose cause was fixed is sent again once, under
/// its id; a redrive cut off after its publish, or repeated, sends nothing
/// twice; one that fails again is a new dead letter; opted-out recipients
/// are never written to again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_sent_again_once_and_opted_out_ones_never() {
    let fake = FakeTwilio::start().await;
    let invalid = || Reply::error(400, 21211, "The 'To' number is not a valid phone number.");
    fake.script([invalid(), Reply::error(400, 21610, "Attempt to send to unsubscribed recipient"), invalid()]);
    let harness = fast_retry_harness(&fake);
    let service = harness.start().await;
    let fixed = dead_letter(&service, "fix-me", 1).await;
    dead_letter(&service, "stop-1", 2).await;
    dead_letter(&service, "again-1", 3).await;
    assert_eq!(fake.posts().len(), 3);

    let dry = redrive_command(&harness, &["--dry-run"]);
    assert!(dry.contains("3 dead letter(s) read") && dry.contains("2 would be sent again"), "{dry}");
    assert!(dry.contains("opted out (never sent again): 1"), "{dry}");
    let class = fixed["error_class"].as_str().unwrap();
    let other = redrive_command(&harness, &["--since", "2999-01-01T00:00:00Z", "--error-class", class]);
    assert!(other.contains("0 sent again") && other.contains("outside --since/--error-class: 2"), "{other}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.posts().len(), 3, "neither a dry run nor a filter that matches nothing sends");

    // A redrive of fix-me cut off after its publish, before its marker.
    let stored = service.state.bus.read("deadletter.twilio", 0, 10).await.unwrap();
    let from = format!("deadletter.twilio/{}", stored[0].seq);
    let mut message = fixed["message"].clone();
    message["redriven_from"] = from.clone().into();
    let key = format!("fix-me@{from}");
    service
        .state
        .bus
        .publish("egress.twilio", Some(&key), serde_json::to_vec(&message).unwrap().into(), None)
        .await
        .unwrap();
    let events = wait_for_messages(&service, "events.twilio.status", 4).await;
    assert_eq!((events[3]["id"].as_str(), events[3]["status"].as_str()), (Some("fix-me"), Some("queued")));

    // Then redriven in full: fix-me is not sent twice; again-1 fails again, a dead letter of its own.
    fake.script([invalid()]);
    let body = br#"{"topic": "deadletter.twilio"}"#.to_vec();
    let (status, report) = admin_post(&service, "/v1/deadletters/redrive", &[], body).await;
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!((report["redriven"].as_u64(), report["opted_out"].as_u64()), (Some(2), Some(1)), "{report}");
    let again = wait_for_messages(&service, "deadletter.twilio", 4).await.pop().unwrap();
    assert_eq!((again["id"].as_str(), again["message"]["redriven_from"].as_str().is_some()), (Some("again-1"), true));
    assert_eq!(fake.posts().len(), 5, "fix-me once more (cut off), again-1 once more");

    // The new dead letter can be sent again; everything else was, once.
    let last = redrive_command(&harness, &[]);
    assert!(last.contains("1 sent again") && last.contains("already sent again: 2"), "{last}");
    let events = wait_for_messages(&service, "events.twilio.status", 6).await;
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!((events[5]["id"].as_str(), events[5]["status"].as_str()), (Some("again-1"), Some("queued")));
    let repeated = redrive_command(&harness, &[]);
    assert!(repeated.contains("0 sent again") && repeated.contains("already sent again: 3"), "{repeated}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_to: Vec<String> =
        fake.posts().iter().map(|r| r.form.iter().find(|(k, _)| k == "Body").unwrap().1.clone()).collect();
    assert_eq!(sent_to, ["fix-me", "stop-1", "again-1", "fix-me", "again-1", "again-1"]);
    let (_, metrics) = harness::admin_get(&service, "/metrics").await;
    assert!(harness::metric(&metrics, r#"egress_redriven_total{topic="deadletter.twilio"}"#) >= 2.0);
    service.stop().await.unwrap();
}
