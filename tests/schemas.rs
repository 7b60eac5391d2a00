//! The JSON Schemas under `schemas/` say no where the service says no, and
//! yes to what it publishes. (Every message other tests read from the bus is
//! checked against them by the harness.)

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::fixtures::inbound_sms;
use harness::schemas::for_topic;
use harness::{Harness, Signature, messages, post_webhook};
use ingress_egress::messages::EgressMessage;
use serde_json::{Value, json};

fn accepts(topic: &str, message: &Value) -> bool {
    for_topic(topic).unwrap().is_valid(message)
}

#[tokio::test]
async fn a_published_envelope_passes_and_broken_copies_do_not() {
    let service = Harness::new().start().await;
    post_webhook(service.public_addr, "/twilio/messaging", &inbound_sms(), Signature::Valid).await;
    let envelope = messages(&service, "ingress.twilio.messaging").await.remove(0);
    let topic = "ingress.twilio.messaging";
    assert!(accepts(topic, &envelope));
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut copy = envelope.clone();
        edit(&mut copy);
        copy
    };
    assert!(!accepts(topic, &broken(&|e| e.as_object_mut().unwrap().remove("id").map(drop).unwrap())));
    assert!(!accepts(topic, &broken(&|e| e["channel"] = json!("fax"))));
    assert!(!accepts(topic, &broken(&|e| e["received_at"] = json!("yesterday"))));
    assert!(!accepts(topic, &broken(&|e| e["attributes"]["Body"] = json!(42))));
    assert!(!accepts(topic, &broken(&|e| e["unexpected"] = json!(true))));
    service.stop().await.unwrap();
}

#[test]
fn the_egress_schema_agrees_with_the_service() {
    let cases = [
        json!({"to": "+14155550100", "body": "hi"}),
        json!({"id": "a-1", "conversation_sid": "CH00000000000000000000000000000001", "body": "hi", "attributes": {"k": 1}}),
        json!({"to": "+14155550100", "media_urls": ["https://example.com/a.png"]}),
        json!({"to": "+14155550100", "body": "hi", "colour": "blue"}),
        json!({"to": 14155550100u64, "body": "hi"}),
        json!({"to": "+14155550100", "body": "hi", "media_urls": "not a list"}),
    ];
    for case in cases {
        let service_takes = serde_json::from_value::<EgressMessage>(case.clone()).is_ok();
        assert_eq!(accepts("egress.twilio", &case), service_takes, "{case}");
    }
    // What the service's parser lets through but the connector refuses
    // (nothing to send, nobody to send it to) the schema refuses at once.
    assert!(!accepts("egress.twilio", &json!({"body": "to nobody"})));
    assert!(!accepts("egress.twilio", &json!({"to": "+14155550100"})));
}
