//! Twilio's webhooks through the real host and component onto a real SQLite bus.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::sync::Arc;

use harness::fixtures::{EMPTY_TWIML as TWIML, SMS_SID as SID, inbound_sms};
use harness::fixtures::{borrowed, inbound_sms_with};
use harness::outage::OutageBus;
use harness::{ACCOUNT_SID, CHAT_SERVICE_SID, Harness, Signature, admin_get, get, messages, post, post_webhook, sign};
use serde_json::json;

const MESSAGING: &str = "ingress.twilio.messaging";

#[tokio::test]
async fn a_signed_sms_puts_exactly_one_envelope_on_the_bus() {
    let harness = Harness::new();
    let service = harness.start().await;
    let (status, body) = post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await;
    assert_eq!((status, body.as_str()), (200, TWIML));

    let envelopes = messages(&service, MESSAGING).await;
    assert_eq!(envelopes.len(), 1);
    let e = &envelopes[0];
    assert_eq!(e["source"], "twilio");
    assert_eq!(e["channel"], "sms");
    assert_eq!(e["provider_message_id"], SID);
    assert_eq!(e["account_sid"], ACCOUNT_SID);
    assert_eq!(e["conversation_sid"], json!(null));
    assert_eq!(e["from"], "+14155550100");
    assert_eq!(e["to"], "+15005550006");
    assert_eq!(e["body"], "Hello from a phone");
    assert_eq!(e["media"], json!([]));
    assert_eq!(e["segments"], 1);
    assert_eq!(e["attributes"]["FromCity"], "SAN FRANCISCO");
    assert_eq!(e["attributes"]["AddedByTwilioNextYear"], "kept");
    assert_eq!(e["attributes"].as_object().unwrap().len(), inbound_sms().len());
    assert_eq!(e["id"].as_str().unwrap().len(), 36);
    assert!(e["received_at"].as_str().unwrap().ends_with('Z'));

    // Twilio retries with the same MessageSid: acknowledged, not published again.
    let (status, _) = post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await;
    assert_eq!(status, 200);
    assert_eq!(messages(&service, MESSAGING).await.len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn forged_and_unsigned_webhooks_publish_nothing() {
    let harness = Harness::new();
    let service = harness.start().await;
    let addr = service.public_addr;
    let (status, _) =
        post_webhook(addr, "/twilio/messaging", &inbound_sms(), Signature::Given("bm90IGEgc2lnbmF0dXJl")).await;
    assert_eq!(status, 403);
    let (status, _) = post_webhook(addr, "/twilio/messaging", &inbound_sms(), Signature::Missing).await;
    assert_eq!(status, 400);
    // Signed, then tampered with.
    let signature = sign(&format!("http://{addr}/twilio/messaging"), &inbound_sms());
    let mut tampered = inbound_sms();
    tampered[5] = ("Body", "Send me the money");
    let (status, _) = post_webhook(addr, "/twilio/messaging", &tampered, Signature::Given(&signature)).await;
    assert_eq!(status, 403);
    // Signed for another path.
    let other = sign(&format!("http://{addr}/twilio/status"), &inbound_sms());
    let (status, _) = post_webhook(addr, "/twilio/messaging", &inbound_sms(), Signature::Given(&other)).await;
    assert_eq!(status, 403);
    assert!(messages(&service, MESSAGING).await.is_empty());
    service.stop().await.unwrap();
}

/// A bus over the harness's own SQLite file, behind a switch.
fn switchable(harness: &Harness) -> Arc<OutageBus> {
    let path = harness.dir.path().join("data").join("bus.sqlite3");
    OutageBus::new(Arc::new(ingress_egress::bus::sqlite::SqliteBus::open(&path).unwrap()))
}

#[tokio::test]
async fn while_the_bus_is_away_webhooks_are_spooled_then_published_once_it_is_back() {
    let harness = Harness::new();
    let bus = switchable(&harness);
    let service = harness.start_with_bus(bus.clone()).await;
    bus.set_away(true);
    let sids: Vec<String> = (0..5).map(|i| format!("SM{i:032x}")).collect();
    for sid in &sids {
        let params = inbound_sms_with(sid, "spooled");
        let (status, body) =
            post_webhook(service.public_addr, "/twilio/messaging", &borrowed(&params), Signature::Valid).await;
        assert_eq!((status, body.as_str()), (200, TWIML), "acknowledged: it is in the spool");
    }
    assert_eq!(service.state.spool.depth(), 5);
    let (status, body) = get(service.public_addr, "/readyz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("degraded: bus:"), "{body}");
    let (_, metrics) = admin_get(&service, "/metrics").await;
    assert!(metrics.contains("spool_depth 5"), "{metrics}");

    bus.set_away(false);
    let envelopes = harness::wait_for_messages(&service, MESSAGING, 5).await;
    let published: Vec<&str> = envelopes.iter().map(|e| e["provider_message_id"].as_str().unwrap()).collect();
    assert_eq!(published, sids, "all of them, oldest first");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while service.state.spool.depth() > 0 || get(service.public_addr, "/readyz").await.1.trim() != "ready" {
        assert!(std::time::Instant::now() < deadline, "the spool did not empty");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_spool_with_the_bus_away_answers_503() {
    let mut harness = Harness::new();
    harness.edit_architecture(|text| text.replace("    limits:\n", "    spool:\n      max_bytes: 1\n    limits:\n"));
    let bus = switchable(&harness);
    let service = harness.start_with_bus(bus.clone()).await;
    bus.set_away(true);
    let (status, body) = post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(service.public_addr, "/readyz").await.0, 503);
    bus.set_away(false);
    assert!(messages(&service, MESSAGING).await.is_empty(), "a refused webhook publishes nothing");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn an_mms_envelope_lists_its_media() {
    let harness = Harness::new();
    let service = harness.start().await;
    let addr = service.public_addr;

    let mut mms = inbound_sms();
    mms.retain(|(k, _)| !matches!(*k, "NumMedia" | "MessageSid" | "SmsSid" | "SmsMessageSid"));
    mms.extend([
        ("MessageSid", "MM00000000000000000000000000000001"),
        ("NumMedia", "2"),
        ("MediaUrl0", "https://api.twilio.com/media/0"),
        ("MediaContentType0", "image/jpeg"),
        ("MediaUrl1", "https://api.twilio.com/media/1"),
        ("MediaContentType1", "video/mp4"),
    ]);
    assert_eq!(post_webhook(addr, "/twilio/messaging", &mms, Signature::Valid).await.0, 200);
    let envelope = &messages(&service, MESSAGING).await[0];
    assert_eq!(envelope["channel"], "mms");
    assert_eq!(
        envelope["media"],
        json!([
            // Not fetched (TWILIO_MEDIA_FETCH is off): no hash, size or stored copy.
            {"url": "https://api.twilio.com/media/0", "content_type": "image/jpeg", "sha256": null, "size": null, "stored_url": null},
            {"url": "https://api.twilio.com/media/1", "content_type": "video/mp4", "sha256": null, "size": null, "stored_url": null},
        ])
    );

    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_status_callback_becomes_a_status_event_for_its_egress_id() {
    let harness = Harness::new();
    let service = harness.start().await;
    let addr = service.public_addr;
    let status_params = [
        ("MessageSid", "SM00000000000000000000000000000002"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", ACCOUNT_SID),
        ("To", "+14155550100"),
        ("From", "+15005550006"),
    ];
    assert_eq!(post_webhook(addr, "/twilio/status?egress_id=msg-7", &status_params, Signature::Valid).await.0, 200);
    let events = messages(&service, "events.twilio.status").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "msg-7");
    assert_eq!(events[0]["provider_message_id"], "SM00000000000000000000000000000002");
    assert_eq!(events[0]["status"], "undelivered");
    assert_eq!(events[0]["error_code"], 30003);
    assert_eq!(events[0]["error_class"], "unreachable");

    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_conversation_message_is_published_and_other_events_are_not() {
    let harness = Harness::new();
    let service = harness.start().await;
    let addr = service.public_addr;
    let added = [
        ("AccountSid", ACCOUNT_SID),
        ("EventType", "onMessageAdded"),
        ("Source", "SDK"),
        ("ClientIdentity", "alice"),
        ("ConversationSid", "CH00000000000000000000000000000003"),
        ("MessageSid", "IM00000000000000000000000000000004"),
        ("ChatServiceSid", CHAT_SERVICE_SID),
        ("Index", "0"),
        ("Body", "hi from the SDK"),
        ("Author", "alice"),
        ("Attributes", "{\"ticket\":42}"),
        ("Media", "[]"),
        ("RetryCount", "0"),
    ];
    assert_eq!(post_webhook(addr, "/twilio/conversations", &added, Signature::Valid).await.0, 200);
    let conversation = messages(&service, "ingress.twilio.conversations").await;
    assert_eq!(conversation.len(), 1);
    assert_eq!(conversation[0]["channel"], "conversations");
    assert_eq!(conversation[0]["conversation_sid"], "CH00000000000000000000000000000003");
    assert_eq!(conversation[0]["from"], "alice");
    assert_eq!(conversation[0]["metadata"], json!({"ticket": 42}));

    let other_event = [("AccountSid", ACCOUNT_SID), ("EventType", "onConversationUpdated"), ("Source", "API")];
    assert_eq!(post_webhook(addr, "/twilio/conversations", &other_event, Signature::Valid).await.0, 200);
    assert_eq!(messages(&service, "ingress.twilio.conversations").await.len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_webhooks_are_refused_without_publishing() {
    let harness = Harness::new();
    let service = harness.start().await;
    let addr = service.public_addr;
    // Signed but missing From.
    let missing: Vec<_> = inbound_sms().into_iter().filter(|(k, _)| *k != "From").collect();
    let (status, body) = post_webhook(addr, "/twilio/messaging", &missing, Signature::Valid).await;
    assert_eq!(status, 400);
    assert!(body.contains("From"), "{body}");
    // Over the 64 KiB limit: refused before the component sees it.
    let huge = "x".repeat(70 * 1024);
    let mut params = inbound_sms();
    params[5] = ("Body", &huge);
    let (status, _) = post_webhook(addr, "/twilio/messaging", &params, Signature::Valid).await;
    assert_eq!(status, 413);
    let (status, _) = post(addr, "/twilio/nothing-here", &[], Vec::new()).await;
    assert_eq!(status, 404);
    assert!(messages(&service, MESSAGING).await.is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn signatures_are_checked_against_the_public_url() {
    let mut harness = Harness::new();
    harness.env.set("TWILIO_WEBHOOK_BASE_URL", "https://hooks.example.com");
    let service = harness.start().await;
    let params = inbound_sms();
    // Signed as Twilio would, for the public URL (with the port form, too).
    for url in ["https://hooks.example.com/twilio/messaging", "https://hooks.example.com:443/twilio/messaging"] {
        let signature = sign(url, &params);
        let (status, _) =
            post_webhook(service.public_addr, "/twilio/messaging", &params, Signature::Given(&signature)).await;
        assert_eq!(status, 200, "{url}");
    }
    // The URL the server sees is not the one Twilio signed.
    let (status, _) = post_webhook(service.public_addr, "/twilio/messaging", &params, Signature::Valid).await;
    assert_eq!(status, 403);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn forwarded_headers_count_only_when_trusted() {
    let params = inbound_sms();
    let signature = sign("https://public.example.org/twilio/messaging", &params);
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-twilio-signature", signature.as_str()),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example.org"),
    ];
    let untrusted = Harness::new();
    let service = untrusted.start().await;
    let (status, _) = post(service.public_addr, "/twilio/messaging", &headers, harness::form(&params)).await;
    assert_eq!(status, 403);
    service.stop().await.unwrap();

    let mut trusted = Harness::new();
    trusted.edit_architecture(|text| text.replace("trust_forwarded_headers: false", "trust_forwarded_headers: true"));
    let service = trusted.start().await;
    let (status, _) = post(service.public_addr, "/twilio/messaging", &headers, harness::form(&params)).await;
    assert_eq!(status, 200);
    service.stop().await.unwrap();
}

/// A signed `onMessageAdded` by `author`; the status it got.
async fn conversation_message(addr: std::net::SocketAddr, sid: &str, author: &str) -> u16 {
    let added = [
        ("AccountSid", ACCOUNT_SID),
        ("EventType", "onMessageAdded"),
        ("Source", "API"),
        ("ConversationSid", "CH00000000000000000000000000000003"),
        ("MessageSid", sid),
        ("ChatServiceSid", CHAT_SERVICE_SID),
        ("Body", "hello"),
        ("Author", author),
    ];
    post_webhook(addr, "/twilio/conversations", &added, Signature::Valid).await.0
}

async fn counter(service: &ingress_egress::service::RunningService, event: &str) -> f64 {
    let series = format!("connector_events_total{{connector=\"twilio\",event=\"{event}\"}}");
    harness::metric(&admin_get(service, "/metrics").await.1, &series)
}

#[tokio::test]
async fn the_services_own_conversation_messages_are_not_heard_back() {
    let mut harness = Harness::new();
    harness.env.set("TWILIO_IDENTITY", "support-bot");
    let service = harness.start().await;
    let skipped_before = counter(&service, "echo-skipped").await;
    assert_eq!(
        conversation_message(service.public_addr, "IM00000000000000000000000000000011", "support-bot").await,
        200
    );
    assert_eq!(conversation_message(service.public_addr, "IM00000000000000000000000000000012", "alice").await, 200);
    let published = messages(&service, "ingress.twilio.conversations").await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["from"], "alice");
    assert_eq!(counter(&service, "echo-skipped").await - skipped_before, 1.0);
    service.stop().await.unwrap();

    // Configurable: a service that wants to hear itself does.
    harness.env.set("TWILIO_SKIP_OWN_MESSAGES", "false");
    let service = harness.start().await;
    assert_eq!(
        conversation_message(service.public_addr, "IM00000000000000000000000000000013", "support-bot").await,
        200
    );
    assert_eq!(messages(&service, "ingress.twilio.conversations").await.len(), 2);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn while_the_auth_token_rotates_either_one_verifies_and_the_metric_says_which() {
    const NEXT_TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let mut harness = Harness::new();
    harness.env.set("TWILIO_AUTH_TOKEN_SECONDARY", NEXT_TOKEN);
    let service = harness.start().await;
    let addr = service.public_addr;
    let before = (counter(&service, "signature-primary").await, counter(&service, "signature-secondary").await);
    // Signed with the current token, then with the next one.
    assert_eq!(harness::signed_sms(addr, "SM000000000000000000000000000000a1").await, 200);
    let params = harness::fixtures::minimal_sms("SM000000000000000000000000000000a2", "rotated");
    let params = borrowed(&params);
    let url = format!("http://{addr}/twilio/messaging");
    let signed_next = harness::sign_with(NEXT_TOKEN, &url, &params);
    assert_eq!(post_webhook(addr, "/twilio/messaging", &params, Signature::Given(&signed_next)).await.0, 200);
    // Signed with neither: refused.
    let signed_other = harness::sign_with("ffffffffffffffffffffffffffffffff", &url, &params);
    assert_eq!(post_webhook(addr, "/twilio/messaging", &params, Signature::Given(&signed_other)).await.0, 403);
    assert_eq!(messages(&service, MESSAGING).await.len(), 2);
    let after = (counter(&service, "signature-primary").await, counter(&service, "signature-secondary").await);
    // Other tests in this binary share the metrics: the primary count only grows.
    assert!(after.0 - before.0 >= 1.0 && after.1 - before.1 == 1.0, "{before:?} → {after:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_rejections_and_publishes() {
    let harness = Harness::new();
    let service = harness.start().await;
    post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await;
    post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Given("Zm9yZ2Vk")).await;
    let (status, text) = admin_get(&service, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "ingress_http_requests_total{route=\"/twilio/messaging\",status=\"200\"}",
        "ingress_http_requests_total{route=\"/twilio/messaging\",status=\"403\"}",
        "ingress_webhooks_rejected_total{connector=\"twilio\",status=\"403\"}",
        "bus_published_total{topic=\"ingress.twilio.messaging\",outcome=\"ok\"}",
        "bus_publish_seconds_bucket{topic=\"ingress.twilio.messaging\",le=\"+Inf\"}",
        "component_call_seconds_count{connector=\"twilio\",call=\"http\"}",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let (status, body) = admin_get(&service, "/admin/connectors").await;
    assert_eq!(status, 200);
    let connectors: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(connectors["connectors"][0]["name"], "twilio");
    assert_eq!(connectors["connectors"][0]["version"], "0.1.0");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn with_no_connector_enabled_the_service_is_ready() {
    let mut harness = Harness::new();
    harness.env.set("TWILIO_ENABLED", "false");
    let service = harness.start().await;
    assert_eq!(get(service.public_addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await.0, 404);
    service.stop().await.unwrap();
}

/// One webhook as the host's listener hands it over, for either entry point.
fn request_parts(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> hyper::http::request::Parts {
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

/// The Twilio component answers a webhook through its `webhooks` export (one
/// call, what this host uses) exactly as through `wasi:http/incoming-handler`
/// (what other hosts use): the same status, headers and body, case by case,
/// and both publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_export_and_wasi_http_answer_alike() {
    use http_body_util::BodyExt as _;
    let harness = Harness::new();
    let service = harness.start().await;
    let connector = service.state.connectors.by_name("twilio").unwrap().current();
    assert!(connector.answers_whole(), "the bundled component takes webhooks in one call");
    let host = service.public_addr.to_string();
    let url = format!("http://{host}/twilio/messaging");
    let signed = |sid: &str| {
        let params = harness::fixtures::minimal_sms(sid, "hi");
        let pairs = borrowed(&params);
        (harness::form(&pairs), sign(&url, &pairs))
    };
    let (sms, signature) = signed("SM000000000000000000000000000000a1");
    let (other_sms, _) = signed("SM000000000000000000000000000000a2");
    let cases = [
        ("POST", "/twilio/messaging", signature.as_str(), sms),
        ("POST", "/twilio/messaging", "forged", other_sms),
        ("POST", "/twilio/messaging", "", Vec::new()),
        ("GET", "/twilio/messaging", "", Vec::new()),
        ("POST", "/twilio/nowhere", "", Vec::new()),
    ];
    for (n, (method, path, signature, body)) in cases.into_iter().enumerate() {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if !signature.is_empty() {
            headers.push(("x-twilio-signature", signature));
        }
        let parts = request_parts(&host, method, path, &headers);
        let whole = connector.handle_whole(parts, body.clone().into()).await.unwrap();
        let request = hyper::Request::from_parts(
            request_parts(&host, method, path, &headers),
            ingress_egress::server::full(body),
        );
        let streamed = connector.handle(request).await.unwrap();
        let (streamed_head, streamed_body) = streamed.into_parts();
        let streamed_body = streamed_body.collect().await.unwrap().to_bytes();
        let (whole_head, whole_body) = whole.into_parts();
        assert_eq!(whole_head.status, streamed_head.status, "case {n}: {method} {path}");
        assert_eq!(whole_head.headers, streamed_head.headers, "case {n}");
        assert_eq!(whole_body, streamed_body, "case {n}");
        let expected = [200, 403, 400, 405, 404][n];
        assert_eq!(whole_head.status.as_u16(), expected, "case {n}: {whole_body:?}");
    }
    // The signed SMS went in twice, the second a duplicate of the first.
    assert_eq!(messages(&service, MESSAGING).await.len(), 1);
}
