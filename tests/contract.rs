//! Contract tests: the component's REST requests go to Prism serving Twilio's
//! own OpenAPI files; a request that breaks Twilio's contract fails the test.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::Harness;
use harness::fixtures::egress_to_conversation;
use harness::prism::{Prism, spec};
use ingress_egress::runtime::bindings::{Accepted, EgressMessage, SendError, Template};

fn message(to: Option<&str>, conversation: Option<&str>) -> EgressMessage {
    EgressMessage {
        to: to.map(Into::into),
        conversation: conversation.map(Into::into),
        ..egress_to_conversation("contract-1", "", "Contract test ✓")
    }
}

fn accepted(outcome: Result<Accepted, SendError>) -> Accepted {
    match outcome {
        Ok(accepted) => accepted,
        Err(SendError::Reject(e)) if e.http_status == Some(422) => {
            panic!("Prism: the request breaks Twilio's contract: {}", e.message)
        }
        Err(other) => panic!("not accepted: {other:?}"),
    }
}

/// Twilio's libraries send `MediaUrl` as a repeated form key, as the component
/// does (the fake-Twilio test checks that to the letter). Prism 5 reads a
/// repeated key as one string and reports "must be array" (stoplightio/prism
/// #2473, #2654): that one finding is tolerated, any other fails the test.
fn accepted_but_for_prisms_form_arrays(outcome: Result<Accepted, SendError>) {
    accepted_but_for_prisms_form_arrays_at(outcome, "MediaUrl");
}

/// [`accepted_but_for_prisms_form_arrays`] for the array field `field`.
fn accepted_but_for_prisms_form_arrays_at(outcome: Result<Accepted, SendError>, field: &str) {
    match outcome {
        Ok(_) => {}
        Err(SendError::Reject(e)) if e.http_status == Some(422) => {
            let json = e.message.split_once(": ").map(|(_, body)| body).unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let findings = problem["validation"].as_array().cloned().unwrap_or_default();
            let only_array_type = !findings.is_empty()
                && findings.iter().all(|f| f["location"] == serde_json::json!(["body", field]) && f["code"] == "type");
            assert!(only_array_type, "Prism: the request breaks Twilio's contract: {}", e.message);
        }
        Err(other) => panic!("not accepted: {other:?}"),
    }
}

/// A WhatsApp template message, scheduled, with every typed option.
fn whatsapp_template() -> EgressMessage {
    let mut template = message(Some("whatsapp:+14155550100"), None);
    template.body = None;
    template.sender_pool = Some("MG0123456789abcdef0123456789abcdef".into());
    template.template = Some(Template {
        id: "HX0123456789abcdef0123456789abcdef".into(),
        variables_json: Some(r#"{"1":"Ada"}"#.into()),
    });
    template.send_at = Some("2030-01-01T12:00:00Z".into());
    template.validity_seconds = Some(3600);
    template.options = [
        ("ShortenUrls", "true"),
        ("SmartEncoded", "false"),
        ("MaxPrice", "0.05"),
        ("Attempt", "2"),
        ("PersistentAction", "mailto:ops@example.com"),
        ("ContentRetention", "retain"),
        ("AddressRetention", "obfuscate"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    template
}

#[tokio::test]
async fn rest_requests_satisfy_twilios_openapi() {
    // Both specs load in parallel: Prism takes a while over the 1.8 MB 2010 API.
    let (api, conversations) = std::thread::scope(|s| {
        let api = s.spawn(|| Prism::start(spec("twilio_api_v2010.json")));
        let conversations = s.spawn(|| Prism::start(spec("twilio_conversations_v1.json")));
        (api.join().unwrap(), conversations.join().unwrap())
    });

    let mut harness = Harness::new();
    harness
        .env
        .set("TWILIO_API_BASE_URL", api.base_url())
        .set("TWILIO_CONVERSATIONS_BASE_URL", conversations.base_url())
        .set("TWILIO_WEBHOOK_BASE_URL", "https://hooks.example.com");

    // SMS and MMS, from a number and from a messaging service.
    let connector = harness.load_twilio().await;
    let mut sms = message(Some("+14155550100"), None);
    sms.from = Some("+15005550006".into());
    let sent = accepted(harness::answer(connector.send(&sms, 1).await));
    assert!(sent.provider_message_id.starts_with("SM"), "{sent:?}");
    let mut mms = sms.clone();
    mms.from = None;
    mms.sender_pool = Some("MG0123456789abcdef0123456789abcdef".into());
    mms.media_urls = vec!["https://example.com/a.png".into(), "https://example.com/b.jpg".into()];
    accepted_but_for_prisms_form_arrays(harness::answer(connector.send(&mms, 1).await));

    // WhatsApp with a template, scheduled, with every typed option.
    let template = whatsapp_template();
    // PersistentAction is an array in the OpenAPI: Prism's form-array finding is the one tolerated.
    accepted_but_for_prisms_form_arrays_at(harness::answer(connector.send(&template, 1).await), "PersistentAction");

    // Cancelling a scheduled message.
    let canceled = harness::answer(connector.cancel("SM0123456789abcdef0123456789abcdef").await);
    accepted(canceled);

    // Into a conversation of the configured service, and of the default service.
    accepted(harness::answer(connector.send(&message(None, Some("CH0123456789abcdef0123456789abcdef")), 1).await));
    harness.env.remove("TWILIO_CHAT_SERVICE_SID");
    harness.edit_architecture(|text| {
        text.replace("required: true, description: \"Conversations service", "description: \"Conversations service")
    });
    let without_service = harness.load_twilio().await;
    let mut with_attributes = message(None, Some("CH0123456789abcdef0123456789abcdef"));
    with_attributes.attributes_json = Some(r#"{"ticket":42}"#.into());
    accepted(harness::answer(without_service.send(&with_attributes, 1).await));
}

#[tokio::test]
async fn prism_does_refuse_a_request_that_breaks_the_contract() {
    // The control: the check above could fail. A Messages request without `To`.
    let api = Prism::start(spec("twilio_api_v2010.json"));
    let (status, body) = harness::post(
        format!("127.0.0.1:{}", api.port).parse().unwrap(),
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json",
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", "Basic QUM6eA==")],
        b"From=%2B15005550006&Body=hi".to_vec(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("To"), "{body}");
}

/// The lookup that settles an ambiguous send (tests/reconcile.rs runs it
/// through the component against the fake): the query Twilio's list takes.
#[tokio::test]
async fn the_messages_list_lookup_satisfies_twilios_openapi() {
    use twilio_connector::reconcile::{self, Expectation, Page};

    let api = Prism::start(spec("twilio_api_v2010.json"));
    let settings = twilio_connector::egress::EgressSettings {
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        credentials: ("AC0123456789abcdef0123456789abcdef".into(), "x".into()),
        api_base: api.base_url(),
        conversations_base: String::new(),
        chat_service_sid: None,
        senders: Default::default(),
        identity: None,
        default_status_callback: None,
    };
    let expect = Expectation {
        to: "+14155550100".into(),
        from: Some("+15005550006".into()),
        messaging_service: None,
        body: Some("hi".into()),
        media: 0,
        earliest: 1_795_000_000,
        latest: 1_795_000_100,
    };
    let addr = format!("127.0.0.1:{}", api.port).parse().unwrap();
    for sent_since in [Some(expect.earliest), None] {
        let request = reconcile::lookup(&expect, sent_since, &settings);
        let path = request.url.strip_prefix(&api.base_url()).unwrap();
        let headers: Vec<(&str, &str)> = request.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body) = harness::get_with(addr, path, &headers).await;
        match status {
            200 => {
                let page: Page = serde_json::from_str(&body).expect("the list's answer reads as a page");
                assert!(page.messages.iter().all(|m| m.sid.starts_with("SM")), "{body}");
            }
            // Prism's own answer from Twilio's spec has relative page URIs its
            // `format: uri` refuses: a finding about the response, not the request.
            500 => {
                let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
                let findings = problem["validation"].as_array().cloned().unwrap_or_default();
                let about_response = findings.iter().all(|f| f["location"][0] == "response");
                assert!(!findings.is_empty() && about_response, "Prism: the lookup breaks Twilio's contract: {body}");
            }
            _ => panic!("Prism: the lookup breaks Twilio's contract: {status} {body}"),
        }
    }
    // The control: Prism checks the query (a `PageSize` below its minimum).
    let bad = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json?PageSize=0";
    let (status, body) = harness::get_with(addr, bad, &[("authorization", "Basic QUM6eA==")]).await;
    assert_eq!(status, 422, "{body}");
}
