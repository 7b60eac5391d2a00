//! Contract tests: the component's REST requests go to Prism serving Twilio's
//! own OpenAPI files; a request that breaks Twilio's contract fails the test.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::Harness;
use harness::fixtures::egress_to_conversation;
use harness::prism::{Prism, npm_spec, spec};
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
            assert!(
                only_prisms_form_array_finding(json, field),
                "Prism: the request breaks Twilio's contract: {}",
                e.message
            );
        }
        Err(other) => panic!("not accepted: {other:?}"),
    }
}

/// Whether Prism's 422 `problem` (JSON) finds only that the form array
/// `field` is not an array: Prism 5's misreading of a repeated form key.
fn only_prisms_form_array_finding(problem: &str, field: &str) -> bool {
    let problem: serde_json::Value = serde_json::from_str(problem).unwrap_or_default();
    let findings = problem["validation"].as_array().cloned().unwrap_or_default();
    !findings.is_empty()
        && findings.iter().all(|f| f["location"] == serde_json::json!(["body", field]) && f["code"] == "type")
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
    let canceled = harness::answer(connector.cancel(None, "SM0123456789abcdef0123456789abcdef").await);
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
    use twilio_connector::egress::reconcile::{self, Expectation, Page};

    let api = Prism::start(spec("twilio_api_v2010.json"));
    let settings = twilio_connector::egress::message::EgressSettings {
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
        if request_kept_the_contract(status, &body, "the lookup") {
            let page: Page = serde_json::from_str(&body).expect("the list's answer reads as a page");
            assert!(page.messages.iter().all(|m| m.sid.starts_with("SM")), "{body}");
        }
    }
    // The control: Prism checks the query (a `PageSize` below its minimum).
    let bad = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json?PageSize=0";
    let (status, body) = harness::get_with(addr, bad, &[("authorization", "Basic QUM6eA==")]).await;
    assert_eq!(status, 422, "{body}");
}

/// The subaccount lookup (tests/accounts.rs runs it through the component
/// against the fake): the parent's fetch of an account, and what its answer
/// means, against Twilio's OpenAPI.
#[tokio::test]
async fn the_subaccount_lookup_satisfies_twilios_openapi() {
    use twilio_connector::shared::accounts::{Decided, account_request, decide};

    let api = Prism::start(spec("twilio_api_v2010.json"));
    // Twilio's own example answers for ACaa…, owned by itself: asked as its own parent.
    let example = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let credentials = ("SK0123456789abcdef0123456789abcdef".to_owned(), "x".to_owned());
    let request = account_request(example, &api.base_url(), &credentials);
    let (status, body) = to_prism(&api, &request).await;
    assert!(request_kept_the_contract(status, &body, "the account fetch"), "{status} {body}");
    assert_eq!(decide(status, body.as_bytes(), example, example), Decided::Subaccount("auth_token".into()));
    assert!(matches!(
        decide(status, body.as_bytes(), example, "AC0123456789abcdef0123456789abcdef"),
        Decided::NotOurs(_)
    ));
    // The control: a sid that breaks the path's pattern is refused.
    let (status, body) = to_prism(&api, &account_request("AC-not-a-sid", &api.base_url(), &credentials)).await;
    assert_eq!(status, 422, "{body}");
}

/// Prism's verdict on a request: true for a 200, false for a 500 whose
/// findings are all about the response (Twilio's own examples have relative
/// page URIs and empty sids its formats refuse: not the request's fault);
/// anything else, a 422 above all, fails the test.
fn request_kept_the_contract(status: u16, body: &str, what: &str) -> bool {
    match status {
        200 | 201 => true,
        500 => {
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            let findings = problem["validation"].as_array().cloned().unwrap_or_default();
            let about_response = findings.iter().all(|f| f["location"][0] == "response");
            assert!(!findings.is_empty() && about_response, "Prism: {what} breaks Twilio's contract: {body}");
            false
        }
        _ => panic!("Prism: {what} breaks Twilio's contract: {status} {body}"),
    }
}

/// Sends a request the connector prepared to Prism; its status and body.
async fn to_prism(prism: &Prism, request: &twilio_connector::shared::rest::PreparedRequest) -> (u16, String) {
    let addr = format!("127.0.0.1:{}", prism.port).parse().unwrap();
    let path = request.url.strip_prefix(&prism.base_url()).unwrap();
    let headers: Vec<(&str, &str)> = request.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match request.verb {
        twilio_connector::shared::rest::Verb::Get => harness::get_with(addr, path, &headers).await,
        twilio_connector::shared::rest::Verb::Post => {
            harness::post(addr, path, &headers, request.body().into_bytes()).await
        }
    }
}

/// What `twilio wire` and `twilio status` read and update: the incoming
/// phone numbers (the 2010 API), a Messaging Service (Messaging v1) and a
/// Conversations service's webhook configuration, built by the connector's
/// own code and checked by Prism against Twilio's OpenAPI. (tests/wiring.rs runs them through the
/// component against the recording fake, and against twilio-python.)
#[tokio::test]
async fn wiring_requests_satisfy_twilios_openapi() {
    use twilio_connector::provisioning::wiring;

    let (api, conversations, messaging) = std::thread::scope(|s| {
        let api = s.spawn(|| Prism::start(spec("twilio_api_v2010.json")));
        let conversations = s.spawn(|| Prism::start(spec("twilio_conversations_v1.json")));
        let messaging = s.spawn(|| Prism::start(npm_spec("twilio_messaging_v1.json")));
        (api.join().unwrap(), conversations.join().unwrap(), messaging.join().unwrap())
    });
    let account = harness::ACCOUNT_SID;
    let headers = [
        ("authorization".to_owned(), "Basic QUM6eA==".to_owned()),
        ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
    ];
    let base = "https://hooks.example.com";
    // Messaging URLs with the default connection overrides (a URL fragment).
    let hooks = wiring::Webhooks { base, overrides: Some("ct=3000&rt=5000&rc=3&rp=ct,rt,5xx&tt=15000") };

    // The numbers: the list, then an update of a number that points elsewhere.
    let list = wiring::lookup(wiring::numbers_url(&api.base_url(), account), &headers);
    let (status, body) = to_prism(&api, &list).await;
    if request_kept_the_contract(status, &body, "listing the numbers") {
        let page: wiring::NumbersPage = serde_json::from_str(&body).unwrap();
        assert!(page.incoming_phone_numbers.iter().all(|n| n.sid.starts_with("PN")), "{body}");
    }
    let number: wiring::IncomingNumber = serde_json::from_value(serde_json::json!({
        "sid": "PN0123456789abcdef0123456789abcdef", "phone_number": "+14155550100",
        "sms_url": "https://old.example.com", "sms_method": "GET",
    }))
    .unwrap();
    let number = wiring::number_resource(number, hooks, &api.base_url(), account);
    assert!(number.update(&headers).unwrap().form[0].1.ends_with("#ct=3000&rt=5000&rc=3&rp=ct,rt,5xx&tt=15000"));
    let (status, body) = to_prism(&api, &number.update(&headers).unwrap()).await;
    request_kept_the_contract(status, &body, "updating a number");

    // The Messaging Service: read, then updated for inbound and status.
    let service_sid = "MG0123456789abcdef0123456789abcdef";
    let url = wiring::messaging_service_url(&messaging.base_url(), service_sid);
    let (status, body) = to_prism(&messaging, &wiring::lookup(url, &headers)).await;
    if request_kept_the_contract(status, &body, "reading a Messaging Service") {
        serde_json::from_str::<wiring::MessagingService>(&body).unwrap();
    }
    let found = serde_json::json!({ "sid": service_sid, "inbound_method": "GET" });
    let service =
        wiring::messaging_service_resource(serde_json::from_value(found).unwrap(), hooks, &messaging.base_url());
    let update = service.update(&headers).unwrap();
    assert_eq!(update.form.len(), 3, "{update:?}");
    let status_callback = update.form.iter().find(|(k, _)| k == "StatusCallback").unwrap();
    assert!(status_callback.1.ends_with("/twilio/status#ct=3000&rt=5000&rc=3&rp=ct,rt,5xx&tt=15000"), "{update:?}");
    let (status, body) = to_prism(&messaging, &update).await;
    request_kept_the_contract(status, &body, "updating a Messaging Service");

    // The Conversations service: its configuration, then two updates.
    let service = harness::CHAT_SERVICE_SID;
    let url = wiring::conversations_webhooks_url(&conversations.base_url(), service);
    let (status, body) = to_prism(&conversations, &wiring::lookup(url, &headers)).await;
    if request_kept_the_contract(status, &body, "reading the Conversations webhooks") {
        serde_json::from_str::<wiring::ConversationsWebhooks>(&body).unwrap();
    }
    let update = |found: serde_json::Value| {
        let found: wiring::ConversationsWebhooks = serde_json::from_value(found).unwrap();
        wiring::conversations_resource(found, service, base, &conversations.base_url()).update(&headers).unwrap()
    };
    // With the filter in place: the URL and the method, checked strictly.
    let strict = update(serde_json::json!({ "method": "GET", "filters": ["onMessageAdded"] }));
    assert!(strict.form.iter().all(|(k, _)| k != "Filters"), "{strict:?}");
    let (status, body) = to_prism(&conversations, &strict).await;
    request_kept_the_contract(status, &body, "updating the Conversations webhooks");
    // Adding the filter: `Filters` is a form array, which Prism 5 reads as one
    // string (see accepted_but_for_prisms_form_arrays); that one finding is
    // tolerated, any other fails.
    let with_filters = update(serde_json::json!({ "filters": ["onMessageAdd"] }));
    let (status, body) = to_prism(&conversations, &with_filters).await;
    if status == 422 {
        assert!(only_prisms_form_array_finding(&body, "Filters"), "Prism: the update breaks Twilio's contract: {body}");
    } else {
        request_kept_the_contract(status, &body, "updating the Conversations filters");
    }

    // The control: Prism checks these requests (a method Twilio does not take).
    let mut bad = number.update(&headers).unwrap();
    bad.form = vec![("SmsMethod".into(), "PUT".into())];
    let (status, body) = to_prism(&api, &bad).await;
    assert_eq!(status, 422, "{body}");
}

/// What `twilio wire --include event-streams` reads and creates (Events v1:
/// sinks, subscriptions, subscribed event types), built by the connector's
/// own code and checked by Prism against Twilio's Events OpenAPI (from the
/// Twilio CLI's npm package). tests/wiring.rs runs them against the
/// recording fake.
#[tokio::test]
async fn event_streams_wiring_satisfies_twilios_openapi() {
    use twilio_connector::provisioning::event_streams_wiring::{
        self as streams, Page, Sink, SubscribedEvent, Subscription,
    };

    let prism = Prism::start(npm_spec("twilio_events_v1.json"));
    let base = prism.base_url();
    let headers = [
        ("authorization".to_owned(), "Basic QUM6eA==".to_owned()),
        ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
    ];
    let lookup = |url: String| twilio_connector::provisioning::wiring::lookup(url, &headers);
    let destination = "https://hooks.example.com/twilio/events";

    let (status, body) = to_prism(&prism, &lookup(streams::sinks_url(&base))).await;
    if request_kept_the_contract(status, &body, "listing the sinks") {
        let page: Page<Sink> = serde_json::from_str(&body).unwrap();
        assert!(page.items.iter().all(|sink| sink.sid.starts_with("DG")), "{body}");
    }
    let create = streams::sink_resource(None, destination, &base).update(&headers).unwrap();
    let (status, body) = to_prism(&prism, &create).await;
    request_kept_the_contract(status, &body, "creating a sink");

    let sink: Sink = serde_json::from_value(serde_json::json!({
        "sid": "DG0123456789abcdef0123456789abcdef", "sink_type": "webhook", "status": "active",
        "sink_configuration": {"destination": destination, "method": "POST", "batch_events": false},
    }))
    .unwrap();
    let (status, body) = to_prism(&prism, &lookup(streams::subscriptions_url(&base, &sink.sid))).await;
    if request_kept_the_contract(status, &body, "listing the subscriptions") {
        serde_json::from_str::<Page<Subscription>>(&body).unwrap();
    }
    // `Types` is a form array, which Prism 5 reads as one string (see
    // only_prisms_form_array_finding): that one finding is tolerated.
    let subscribe = streams::subscription_resources(&sink, None, &base).remove(0).update(&headers).unwrap();
    let (status, body) = to_prism(&prism, &subscribe).await;
    if status == 422 {
        assert!(only_prisms_form_array_finding(&body, "Types"), "Prism: subscribing breaks Twilio's contract: {body}");
    } else {
        request_kept_the_contract(status, &body, "creating a subscription");
    }

    let subscription = Subscription { sid: "DF0123456789abcdef0123456789abcdef".into(), description: None };
    let (status, body) = to_prism(&prism, &lookup(streams::subscribed_events_url(&base, &subscription.sid))).await;
    if request_kept_the_contract(status, &body, "listing the subscribed event types") {
        serde_json::from_str::<Page<SubscribedEvent>>(&body).unwrap();
    }
    let add = streams::subscription_resources(&sink, Some((&subscription, &[])), &base);
    let (status, body) = to_prism(&prism, &add[0].update(&headers).unwrap()).await;
    request_kept_the_contract(status, &body, "adding a subscribed event type");
}
