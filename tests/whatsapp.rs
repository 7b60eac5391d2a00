//! WhatsApp's 24-hour window, checked by the connector when
//! `TWILIO_WHATSAPP_WINDOW_CHECK=true`: a free-form message goes only to a
//! user who wrote to that sender within 24 hours; a template always goes.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::fake_twilio::FakeTwilio;
use harness::{ACCOUNT_SID, Signature, enqueue, fast_retry_harness, post_webhook, wait_for_messages};

const BUSINESS: &str = "whatsapp:+15005550006";
const WROTE: &str = "whatsapp:+14155550100";
const SILENT: &str = "whatsapp:+14155550199";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_form_whatsapp_send_needs_the_users_message_within_24_hours() {
    let fake = FakeTwilio::start().await;
    let mut harness = fast_retry_harness(&fake.base_url());
    harness.env.set("TWILIO_WHATSAPP_WINDOW_CHECK", "true");
    let service = harness.start().await;
    let inbound = [
        ("MessageSid", "SM000000000000000000000000000000e1"),
        ("AccountSid", ACCOUNT_SID),
        ("From", WROTE),
        ("To", BUSINESS),
        ("Body", "hi, is my order on its way?"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", &inbound, Signature::Valid).await.0, 200);

    let free_form =
        |id: &str, to: &str| format!(r#"{{"id": "{id}", "to": "{to}", "from": "{BUSINESS}", "body": "Yes!"}}"#);
    enqueue(&service, &free_form("wa-1", WROTE)).await;
    assert_eq!(wait_for_messages(&service, "events.twilio.status", 1).await[0]["status"], "queued");
    enqueue(&service, &free_form("wa-2", SILENT)).await;
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!((dead[0]["id"].as_str(), dead[0]["error_class"].as_str()), (Some("wa-2"), Some("window-closed")));
    assert!(dead[0]["reason"].as_str().unwrap().contains("send a template"), "{dead:?}");
    assert_eq!(fake.received().len(), 1, "the refused send never reached Twilio");

    // A template goes whatever the window.
    let template = format!(
        r#"{{"id": "wa-3", "to": "{SILENT}", "from": "{BUSINESS}", "template": {{"id": "HX0123456789abcdef0123456789abcdef"}}}}"#
    );
    enqueue(&service, &template).await;
    wait_for_messages(&service, "events.twilio.status", 3).await;
    let received = fake.received();
    assert_eq!(received.len(), 2);
    assert!(received[1].form.iter().any(|(k, v)| k == "ContentSid" && v == "HX0123456789abcdef0123456789abcdef"));
    service.stop().await.unwrap();
}
