//! Consent: an inbound STOP, START or HELP (a default keyword, or Twilio's
//! Advanced Opt-Out), a status callback with 21610 and a send Twilio refused
//! with 21610 each publish a consent event on `events.twilio.consent`, scoped
//! to the sender concerned. The webhook's own message is published as before.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::fake_twilio::{FakeTwilio, Reply};
use harness::fixtures::{borrowed, minimal_sms};
use harness::{
    ACCOUNT_SID, Harness, Signature, enqueue, fast_retry_harness, messages, post_webhook, wait_for_messages,
};

const CONSENT: &str = "events.twilio.consent";

async fn inbound(addr: std::net::SocketAddr, sid: &str, body: &str, extra: &[(&'static str, &str)]) -> u16 {
    let mut params = minimal_sms(sid, body);
    params.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    post_webhook(addr, "/twilio/messaging", &borrowed(&params), Signature::Valid).await.0
}

#[tokio::test]
async fn inbound_keywords_and_advanced_opt_out_publish_consent_for_their_sender() {
    let service = Harness::new().start().await;
    let addr = service.public_addr;
    assert_eq!(inbound(addr, "SM000000000000000000000000000000c1", "Stop", &[]).await, 200);
    // Twilio retries the same webhook: one consent event still.
    assert_eq!(inbound(addr, "SM000000000000000000000000000000c1", "Stop", &[]).await, 200);
    assert_eq!(inbound(addr, "SM000000000000000000000000000000c2", "hello there", &[]).await, 200);
    let advanced = [("OptOutType", "START"), ("MessagingServiceSid", "MG00000000000000000000000000000001")];
    assert_eq!(inbound(addr, "SM000000000000000000000000000000c3", "oui", &advanced).await, 200);

    let events = messages(&service, CONSENT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let (stop, start) = (&events[0], &events[1]);
    assert_eq!(
        (stop["action"].as_str(), stop["via"].as_str(), stop["keyword"].as_str()),
        (Some("opted-out"), Some("keyword"), Some("STOP"))
    );
    assert_eq!((stop["user"].as_str(), stop["sender"].as_str()), (Some("+14155550100"), Some("+15005550006")));
    assert_eq!((start["action"].as_str(), start["via"].as_str()), (Some("opted-in"), Some("advanced-opt-out")));
    assert_eq!(start["sender"], "MG00000000000000000000000000000001", "scoped to the service, not every sender");
    // Every message is still an envelope.
    assert_eq!(messages(&service, "ingress.twilio.messaging").await.len(), 3);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_21610_status_callback_is_an_opt_out() {
    let service = Harness::new().start().await;
    let callback = [
        ("MessageSid", "SM000000000000000000000000000000d1"),
        ("MessageStatus", "failed"),
        ("ErrorCode", "21610"),
        ("AccountSid", ACCOUNT_SID),
        ("To", "+14155550100"),
        ("From", "+15005550006"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/status", &callback, Signature::Valid).await.0, 200);
    let events = messages(&service, CONSENT).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0]["action"].as_str(), events[0]["via"].as_str()), (Some("opted-out"), Some("status-callback")));
    assert_eq!(
        (events[0]["user"].as_str(), events[0]["sender"].as_str()),
        (Some("+14155550100"), Some("+15005550006"))
    );
    let status = messages(&service, "events.twilio.status").await;
    assert_eq!((status.len(), status[0]["error_class"].as_str()), (1, Some("opted-out")));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_send_refused_with_21610_is_an_opt_out_of_its_sender() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::error(400, 21610, "Attempt to send to unsubscribed recipient")]);
    let service = fast_retry_harness(&fake.base_url()).start().await;
    enqueue(&service, r#"{"id": "stopped-1", "to": "+14155550100", "from": "+15005550007", "body": "hi"}"#).await;
    let events = wait_for_messages(&service, CONSENT, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["user"].as_str(), events[0]["sender"].as_str()),
        (Some("+14155550100"), Some("+15005550007"))
    );
    assert_eq!((events[0]["action"].as_str(), events[0]["via"].as_str()), (Some("opted-out"), Some("send-refused")));
    assert_eq!(wait_for_messages(&service, "deadletter.twilio", 1).await[0]["error_class"], "opted-out");
    service.stop().await.unwrap();
}
