//! RCS and WhatsApp identities and interactive messages, from the parameters
//! Twilio documents for them: the channel, typed fields beside every
//! attribute, business-scoped user ids with no phone number, and the schema
//! that says yes to each and no to broken copies.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::fake_twilio::FakeTwilio;
use harness::schemas::for_topic;
use harness::{
    ACCOUNT_SID, Harness, Signature, enqueue, fast_retry_harness, messages, post_webhook, wait_for_messages,
};
use serde_json::{Value, json};

const BUSINESS: &str = "whatsapp:+15005550006";
const BSUID: &str = "US.13491208655302741918";
const TOPIC: &str = "ingress.twilio.messaging";

fn inbound<'a>(sid: &'a str, from: &'a str, to: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![("MessageSid", sid), ("AccountSid", ACCOUNT_SID), ("From", from), ("To", to)];
    params.extend_from_slice(extra);
    params
}

#[tokio::test]
async fn rcs_and_whatsapp_messages_carry_typed_fields() {
    let service = Harness::new().start().await;
    let whatsapp_from = format!("whatsapp:{BSUID}");
    let cases = [
        inbound("SM000000000000000000000000000000a1", "rcs:+14155550100", "rcs:acme_agent", &[("Body", "hi")]),
        inbound(
            "SM000000000000000000000000000000a2",
            "whatsapp:+14155550100",
            BUSINESS,
            &[
                ("MessageType", "location"),
                ("Latitude", "37.7879277"),
                ("Longitude", "-122.4032951"),
                ("Address", "375 Beale St"),
                ("Label", "Twilio HQ"),
                ("ProfileName", "Ana"),
                ("WaId", "14155550100"),
            ],
        ),
        inbound(
            "SM000000000000000000000000000000a3",
            &whatsapp_from,
            BUSINESS,
            &[
                ("MessageType", "button"),
                ("Body", "Yes"),
                ("ButtonText", "Yes"),
                ("ButtonPayload", "confirm-42"),
                ("ExternalUserId", BSUID),
                ("ParentExternalUserId", "US.ENT.11815799212886844830"),
                ("Username", "ana.b"),
                ("OriginalRepliedMessageSid", "SM000000000000000000000000000000f0"),
            ],
        ),
        inbound(
            "SM000000000000000000000000000000a4",
            "whatsapp:+14155550100",
            BUSINESS,
            &[
                ("Body", "I saw your ad"),
                ("ReferralBody", "Spring sale"),
                ("ReferralHeadline", "20% off"),
                ("ReferralSourceId", "120201"),
                ("ReferralSourceType", "ad"),
                ("ReferralSourceUrl", "https://fb.me/abc"),
                ("ReferralCtwaClid", "ARAkLkA8"),
            ],
        ),
    ];
    for params in &cases {
        assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", params, Signature::Valid).await.0, 200);
    }
    // `messages` checks every envelope against the schema.
    let envelopes = messages(&service, TOPIC).await;
    assert_eq!(envelopes.len(), 4);
    let [rcs, location, button, referral] = <[Value; 4]>::try_from(envelopes).unwrap();
    assert_eq!(rcs["channel"], "rcs");
    for field in ["profile", "location", "button", "reply_to", "referral"] {
        assert_eq!(rcs[field], Value::Null, "{field} is null when absent");
    }
    assert_eq!(location["channel"], "whatsapp");
    assert_eq!(
        location["location"],
        json!({"latitude": 37.7879277, "longitude": -122.4032951, "address": "375 Beale St", "label": "Twilio HQ"})
    );
    assert_eq!(location["profile"]["wa_id"], "14155550100");
    assert_eq!(location["attributes"]["Latitude"], "37.7879277", "every parameter is still an attribute");
    assert_eq!(button["from"], whatsapp_from.as_str());
    assert_eq!(button["button"], json!({"text": "Yes", "payload": "confirm-42"}));
    assert_eq!(
        button["profile"],
        json!({"name": null, "external_user_id": BSUID, "parent_external_user_id": "US.ENT.11815799212886844830",
               "wa_id": null, "username": "ana.b"})
    );
    assert_eq!(button["reply_to"], "SM000000000000000000000000000000f0");
    assert_eq!(referral["referral"]["ctwa_clid"], "ARAkLkA8");
    assert_eq!(referral["referral"]["media_url"], Value::Null);

    let schema = for_topic(TOPIC).unwrap();
    let broken = |from: &Value, edit: &dyn Fn(&mut Value)| {
        let mut copy = from.clone();
        edit(&mut copy);
        schema.is_valid(&copy)
    };
    assert!(!broken(&location, &|e| e["location"]["latitude"] = json!("37.78")));
    assert!(!broken(&location, &|e| e["location"]["latitude"] = json!(91)));
    assert!(!broken(&location, &|e| e["location"].as_object_mut().unwrap().remove("longitude").map(drop).unwrap()));
    assert!(!broken(&button, &|e| e["button"]["colour"] = json!("red")));
    assert!(!broken(&button, &|e| e["profile"]["wa_id"] = json!(14155550100u64)));
    assert!(!broken(&referral, &|e| e["referral"] = json!("ad")));
    assert!(!broken(&rcs, &|e| e["channel"] = json!("rcs-business")));
    assert!(!broken(&rcs, &|e| e["reply_to"] = json!(7)));
    service.stop().await.unwrap();
}

/// A business-scoped user id is an address like a number: its window is
/// kept, and a send to it goes to Twilio as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_scoped_user_id_is_written_to_and_has_a_window() {
    let fake = FakeTwilio::start().await;
    let mut harness = fast_retry_harness(&fake.base_url());
    harness.env.set("TWILIO_WHATSAPP_WINDOW_CHECK", "true");
    let service = harness.start().await;
    let user = format!("whatsapp:{BSUID}");
    let params = inbound("SM000000000000000000000000000000b1", &user, BUSINESS, &[("Body", "hello")]);
    assert_eq!(post_webhook(service.public_addr, "/twilio/messaging", &params, Signature::Valid).await.0, 200);
    enqueue(&service, &format!(r#"{{"id": "bsuid-1", "to": "{user}", "from": "{BUSINESS}", "body": "Hi Ana"}}"#)).await;
    assert_eq!(wait_for_messages(&service, "events.twilio.status", 1).await[0]["status"], "queued");
    // Another business-scoped id that never wrote is outside its window.
    let silent = "whatsapp:US.99999999999999999999";
    enqueue(&service, &format!(r#"{{"id": "bsuid-2", "to": "{silent}", "from": "{BUSINESS}", "body": "Hi?"}}"#)).await;
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!((dead[0]["id"].as_str(), dead[0]["error_class"].as_str()), (Some("bsuid-2"), Some("window-closed")));
    let sent = fake.posts();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].form.iter().any(|(k, v)| k == "To" && v == &user), "{:?}", sent[0].form);
    service.stop().await.unwrap();
}

/// An RCS message that fell back to SMS says so on its status event: the
/// callback's `ChannelPrefix` and its `From` are kept.
#[tokio::test]
async fn an_rcs_fallback_is_visible_on_the_status_event() {
    let service = Harness::new().start().await;
    let callback = [
        ("MessageSid", "SM000000000000000000000000000000c1"),
        ("AccountSid", ACCOUNT_SID),
        ("MessagingServiceSid", "MG00000000000000000000000000000001"),
        ("MessageStatus", "delivered"),
        ("ChannelPrefix", "sms"),
        ("From", "+15005550006"),
        ("To", "+14155550100"),
    ];
    assert_eq!(post_webhook(service.public_addr, "/twilio/status", &callback, Signature::Valid).await.0, 200);
    let events = messages(&service, "events.twilio.status").await;
    assert_eq!(events[0]["attributes"]["ChannelPrefix"], "sms");
    assert_eq!(events[0]["attributes"]["From"], "+15005550006");
    service.stop().await.unwrap();
}
