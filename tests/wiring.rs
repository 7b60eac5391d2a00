//! `ingress-egress twilio wire` and `twilio status` against a fake Twilio that
//! keeps the resources they change and records every request exactly; and
//! the same changes made by twilio-python, which must send what we send.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use harness::fake_console::{self, Console};
use harness::fake_twilio::{FakeTwilio, Recorded};
use harness::{ACCOUNT_SID, API_KEY, API_SECRET, CHAT_SERVICE_SID, Harness, pairs};
use ingress_egress::runtime::bindings::{SettingState, WiringReport};

const PUBLIC_URL: &str = "https://hooks.example.com/ie";
const NUMBER_ELSEWHERE: &str = "PN00000000000000000000000000000001";
const NUMBER_WIRED: &str = "PN00000000000000000000000000000002";
const NUMBER_ON_APP: &str = "PN00000000000000000000000000000003";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";

/// Three numbers over two pages: one pointing elsewhere, one wired, one
/// answered by a TwiML App; and the Conversations service's configuration.
fn console() -> Console {
    let mut on_app = fake_console::number(NUMBER_ON_APP, "+14155550103", "");
    on_app["sms_application_sid"] = "AP0123456789abcdef0123456789abcdef".into();
    Console {
        numbers: vec![
            fake_console::number(NUMBER_ELSEWHERE, "+14155550101", "https://old.example.com/sms"),
            fake_console::number(NUMBER_WIRED, "+14155550102", &format!("{PUBLIC_URL}/twilio/messaging")),
            on_app,
        ],
        messaging_services: vec![fake_console::messaging_service(SERVICE)],
        conversations: vec![(CHAT_SERVICE_SID.to_owned(), fake_console::conversations_webhooks(CHAT_SERVICE_SID))],
        page_size: 2,
        ..Console::default()
    }
}

async fn fake_and_harness() -> (FakeTwilio, Harness) {
    let fake = FakeTwilio::start().await;
    fake.edit_console(|c| *c = console());
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url()).env.set("TWILIO_WEBHOOK_BASE_URL", PUBLIC_URL);
    // Connection overrides have a test of their own.
    harness.env.set("TWILIO_WEBHOOK_OVERRIDES", "none");
    (fake, harness)
}

fn run(harness: &Harness, args: &[&str]) -> (Output, String) {
    let output = harness.command(args, None).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output, text)
}

fn posts(fake: &FakeTwilio) -> Vec<(String, Vec<(String, String)>)> {
    fake.posts().into_iter().map(|r| (r.path, r.form)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_changes_exactly_what_differs_and_a_second_run_changes_nothing() {
    let (fake, harness) = fake_and_harness().await;

    // A dry run reads every page and changes nothing.
    let (output, text) = run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL, "--dry-run"]);
    assert!(output.status.success(), "{text}");
    assert!(fake.posts().is_empty(), "{:?}", fake.posts());
    assert_eq!(fake.lookups().len(), 3, "two pages of numbers, one configuration: {:?}", fake.lookups());
    assert!(text.lines().next().unwrap().starts_with("RESOURCE"), "{text}");
    assert!(text.contains("would change") && text.contains("https://old.example.com/sms"), "{text}");
    assert!(text.contains("points elsewhere"), "{text}");

    // Wiring changes the number that points elsewhere and the Conversations
    // webhook; the number on a TwiML App is left, and the command says so.
    let (output, text) = run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL]);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("blocked") && text.contains("SmsApplicationSid") && text.contains("could not be wired"),
        "{text}"
    );
    let account_path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers");
    assert_eq!(
        posts(&fake),
        vec![
            (
                format!("{account_path}/{NUMBER_ELSEWHERE}.json"),
                pairs(&[("SmsUrl", "https://hooks.example.com/ie/twilio/messaging")])
            ),
            (
                format!("/v1/Services/{CHAT_SERVICE_SID}/Configuration/Webhooks"),
                pairs(&[
                    ("PostWebhookUrl", "https://hooks.example.com/ie/twilio/conversations"),
                    ("Method", "POST"),
                    ("Filters", "onMessageAdd"),
                    ("Filters", "onMessageAdded"),
                ])
            ),
        ]
    );
    let authorization = fake.posts()[0].header("authorization").unwrap().to_owned();
    assert!(authorization.starts_with("Basic "), "REST auth with the API key");
    assert!(!text.contains(API_SECRET) && !text.contains(&authorization[6..]), "no credential in the output");
    let after = fake.console();
    assert_eq!(after.numbers[0]["voice_url"], "https://voice.example.com/keep", "only the SMS webhook changes");
    assert_eq!(after.conversations[0].1["pre_webhook_url"], "https://moderation.example.com/pre");

    // Once the App is cleared, wire finishes; then nothing is left to change.
    fake.edit_console(|c| c.numbers[2]["sms_application_sid"] = "".into());
    let (output, text) = run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL]);
    assert!(output.status.success(), "{text}");
    assert_eq!(fake.posts().len(), 3, "only the third number: {:?}", posts(&fake));
    let (output, text) = run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL]);
    assert!(output.status.success(), "{text}");
    assert_eq!(fake.posts().len(), 3, "idempotent: {text}");
    assert!(!text.contains("changed"), "{text}");

    // `status` agrees, against TWILIO_WEBHOOK_BASE_URL.
    let (output, text) = run(&harness, &["twilio", "status"]);
    assert!(output.status.success(), "{text}");
    assert!(text.lines().skip(1).all(|line| line.contains("wired")), "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_warns_where_a_webhook_points_elsewhere_or_will_not_verify() {
    let (fake, mut harness) = fake_and_harness().await;
    harness.env.set("TWILIO_WEBHOOK_BASE_URL", "https://internal.example.com");
    let (output, text) = run(&harness, &["twilio", "status", "--public-url", PUBLIC_URL]);
    assert!(!output.status.success(), "not everything is wired: {text}");
    assert!(text.contains("do not point at this service"), "{text}");
    assert!(text.contains("warning: TWILIO_WEBHOOK_BASE_URL is https://internal.example.com"), "{text}");
    assert!(text.contains("will not verify"), "{text}");
    assert!(text.contains("note: number +14155550101"), "{text}");
    assert!(fake.posts().is_empty(), "status changes nothing");

    harness.env.remove("TWILIO_WEBHOOK_BASE_URL");
    let (output, text) = run(&harness, &["twilio", "status"]);
    assert!(!output.status.success());
    assert!(text.contains("no public URL"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messaging_service_is_wired_instead_of_the_numbers() {
    let (fake, mut harness) = fake_and_harness().await;
    harness.env.set("TWILIO_MESSAGING_SERVICE_SID", SERVICE);
    let connector = harness.load_twilio().await;
    let report = harness::answer(connector.wire(None, PUBLIC_URL, false, &[]).await).unwrap();
    assert!(
        report.settings.iter().all(|s| matches!(s.state, SettingState::Wired | SettingState::Changed)),
        "{report:?}"
    );
    assert!(fake.lookups().iter().all(|r| !r.path.contains("IncomingPhoneNumbers")), "numbers are not listed");
    assert_eq!(
        posts(&fake)[0],
        (
            format!("/v1/Services/{SERVICE}"),
            pairs(&[
                ("InboundRequestUrl", "https://hooks.example.com/ie/twilio/messaging"),
                ("StatusCallback", "https://hooks.example.com/ie/twilio/status"),
            ])
        )
    );
    let again = harness::answer(connector.inspect_wiring(None, None, &[]).await).unwrap();
    assert!(again.settings.iter().all(|s| s.state == SettingState::Wired), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_refusing_is_a_clear_error_without_credentials() {
    let (fake, harness) = fake_and_harness().await;
    fake.edit_console(|c| c.numbers.clear());
    let connector = harness.load_twilio().await;
    // An account without numbers is said, not an error.
    let report: WiringReport = harness::answer(connector.inspect_wiring(None, None, &[]).await).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("no incoming phone numbers")), "{report:?}");
    // Twilio's 404 for the Conversations service reaches the operator as Twilio's words.
    fake.edit_console(|c| c.conversations.clear());
    let error = harness::answer(connector.wire(None, PUBLIC_URL, false, &[]).await).unwrap_err();
    assert!(error.contains("conversations service") && error.contains("20404"), "{error}");
    assert!(!error.contains(API_SECRET), "{error}");
    // A bad public URL changes nothing.
    let error = harness::answer(connector.wire(None, "hooks.example.com", false, &[]).await).unwrap_err();
    assert!(error.contains("public URL"), "{error}");
    assert!(fake.posts().is_empty());
}

/// What twilio-python sends for the same changes: the requests it recorded.
/// (It blocks: the tests run on several threads so the fake keeps answering.)
fn official_requests(fake: &FakeTwilio, filters: &[&str]) -> Vec<Recorded> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/official/.venv/bin/python");
    assert!(std::path::Path::new(python).exists(), "twilio-python is not installed: run scripts/setup --test");
    let job = serde_json::json!({
        "base_url": fake.base_url(), "account_sid": ACCOUNT_SID, "api_key": API_KEY, "api_secret": API_SECRET,
        "number_sid": NUMBER_ELSEWHERE, "service_sid": SERVICE, "chat_service_sid": CHAT_SERVICE_SID,
        "public_url": PUBLIC_URL, "filters": filters,
    });
    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/official/twilio_wiring.py"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(job.to_string().as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    fake.received()
}

/// A request as compared: method, path without its query, and form.
type Shape = (String, String, Vec<(String, String)>);

/// Method, path without query, and the form sorted (twilio-python orders keys its own way).
fn shape(requests: &[Recorded]) -> Vec<Shape> {
    requests
        .iter()
        .map(|r| {
            let mut form = r.form.clone();
            form.sort();
            (r.method.clone(), r.path.split('?').next().unwrap().to_owned(), form)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_sends_what_twilio_python_sends_for_the_same_change() {
    let (ours, mut harness) = fake_and_harness().await;
    let theirs = FakeTwilio::start().await;
    theirs.edit_console(|c| *c = console());
    for fake in [&ours, &theirs] {
        fake.edit_console(|c| c.page_size = 50);
    }

    // Numbers and Conversations, then the Messaging Service.
    let connector = harness.load_twilio().await;
    harness::answer(connector.wire(None, PUBLIC_URL, false, &[]).await).unwrap();
    harness.env.set("TWILIO_MESSAGING_SERVICE_SID", SERVICE);
    let with_service = harness.load_twilio().await;
    harness::answer(with_service.wire(None, PUBLIC_URL, false, &[]).await).unwrap();

    let ours: Vec<Recorded> = ours.received();
    let theirs = official_requests(&theirs, &["onMessageAdd", "onMessageAdded"]);
    let updates = |requests: &[Recorded]| {
        let mut shaped: Vec<_> = shape(requests).into_iter().filter(|(method, ..)| method == "POST").collect();
        shaped.sort();
        shaped
    };
    assert_eq!(updates(&ours), updates(&theirs));
    let paths = |requests: &[Recorded]| {
        let mut paths: Vec<String> = shape(requests).into_iter().map(|(m, p, _)| format!("{m} {p}")).collect();
        paths.sort();
        paths.dedup();
        paths
    };
    assert_eq!(paths(&ours), paths(&theirs), "the same resources, read and updated at the same URLs");
}

/// `--account` works on that account, with its own credentials and path;
/// `--all-accounts` on the default account and then every directory account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiring_works_per_account_and_across_all_accounts() {
    use base64::Engine as _;
    let (fake, mut harness) = fake_and_harness().await;
    let other = "AC00000000000000000000000000000d01";
    harness.add_account(other, &[("TWILIO_AUTH_TOKEN", "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1")]);
    let listing = |account: &str| format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json");

    let (output, text) =
        run(&harness, &["twilio", "wire", "--account", other, "--public-url", PUBLIC_URL, "--dry-run"]);
    assert!(output.status.success(), "{text}");
    let reads: Vec<Recorded> = fake.received();
    assert!(reads.iter().all(|r| r.path.starts_with(&listing(other))), "only that account's numbers: {reads:?}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{other}:d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1"));
    assert_eq!(reads[0].header("authorization"), Some(format!("Basic {basic}").as_str()), "its own token");
    assert!(posts(&fake).is_empty(), "a dry run changes nothing");

    let (_, text) = run(&harness, &["twilio", "status", "--all-accounts"]);
    assert!(text.contains("== account (default)") && text.contains(&format!("== account {other}")), "{text}");
    let paths: Vec<String> = fake.received().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().any(|p| p.starts_with(&listing(ACCOUNT_SID))), "{paths:?}");

    let (output, text) = run(&harness, &["twilio", "status", "--account", "AC00000000000000000000000000000bad"]);
    assert!(!output.status.success() && text.contains("not one this service serves"), "{text}");
}

/// With the default connection overrides, `status` flags a messaging URL
/// without them and `wire` adds them; the service still verifies webhooks
/// Twilio signs for such a URL (the fragment never reaches it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_adds_connection_overrides_and_status_flags_a_url_without_them() {
    let (fake, mut harness) = fake_and_harness().await;
    harness.env.set("TWILIO_WEBHOOK_OVERRIDES", "ct=3000&rt=5000&rc=3&rp=ct,rt,5xx&tt=15000");
    let (output, text) = run(&harness, &["twilio", "status"]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("no connection overrides"), "{text}");
    let (output, text) = run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL]);
    assert!(!output.status.success(), "the number on a TwiML App stays blocked: {text}");
    let wanted = format!("{PUBLIC_URL}/twilio/messaging#ct=3000&rt=5000&rc=3&rp=ct,rt,5xx&tt=15000");
    let posted = posts(&fake);
    let sms_urls: Vec<&str> = posted
        .iter()
        .flat_map(|(_, form)| form.iter())
        .filter(|(k, _)| k == "SmsUrl")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(sms_urls, [wanted.as_str(), wanted.as_str()], "both numbers, the wired one too");
    let before = posted.len();
    run(&harness, &["twilio", "wire", "--public-url", PUBLIC_URL]);
    assert_eq!(posts(&fake).len(), before, "a second run changes nothing");
}

/// `--event-streams`: a webhook sink at the events route is created
/// (one event per request); once Twilio has validated it, a subscription to
/// every type the service publishes; a type it lacks is added; then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_creates_the_event_streams_sink_then_its_subscription() {
    let (fake, harness) = fake_and_harness().await;
    let wire = ["twilio", "wire", "--public-url", PUBLIC_URL, "--event-streams"];
    let events_posts = |fake: &FakeTwilio| -> Vec<(String, Vec<(String, String)>)> {
        posts(fake)
            .into_iter()
            .filter(|(path, _)| path.starts_with("/v1/Sinks") || path.starts_with("/v1/Subscriptions"))
            .collect()
    };
    let (_, text) = run(&harness, &wire);
    let created = events_posts(&fake);
    assert_eq!(created.len(), 1, "{text}");
    assert_eq!(created[0].0, "/v1/Sinks");
    let configuration = &created[0].1.iter().find(|(k, _)| k == "SinkConfiguration").unwrap().1;
    let configuration: serde_json::Value = serde_json::from_str(configuration).unwrap();
    assert_eq!(configuration["destination"], format!("{PUBLIC_URL}/twilio/events"));
    assert_eq!(configuration["batch_events"], false);

    // Not validated yet: shown as such, and no subscription is tried.
    let (output, text) = run(&harness, &["twilio", "status", "--event-streams"]);
    assert!(!output.status.success());
    assert!(text.contains("is initialized"), "{text}");
    run(&harness, &wire);
    assert_eq!(events_posts(&fake).len(), 1, "nothing more until the sink is active");

    fake.edit_console(|console| console.sinks[0]["status"] = "active".into());
    run(&harness, &wire);
    let subscribe = events_posts(&fake).pop().unwrap();
    assert_eq!(subscribe.0, "/v1/Subscriptions");
    let types = subscribe.1.iter().filter(|(k, _)| k == "Types").count();
    assert_eq!(types, 8, "{subscribe:?}");

    // A type removed in the console is added back on its own.
    fake.edit_console(|console| {
        console.subscriptions[0].1.retain(|t| t != "com.twilio.messaging.message.read");
    });
    run(&harness, &wire);
    let added = events_posts(&fake).pop().unwrap();
    assert!(added.0.ends_with("/SubscribedEvents"), "{added:?}");
    assert!(added.1.contains(&("Type".to_owned(), "com.twilio.messaging.message.read".to_owned())));
    let before = events_posts(&fake).len();
    run(&harness, &wire);
    assert_eq!(events_posts(&fake).len(), before, "everything in place: nothing changes");

    // The flag comes from architecture.yaml's wiring_parts; the connector names what it offers.
    let (output, text) = run(&harness, &["twilio", "wire", "--help"]);
    assert!(output.status.success() && text.contains("--event-streams"), "{text}");
    let (output, text) = run(&harness, &["twilio", "status", "--kinesis"]);
    assert!(!output.status.success() && text.contains("--kinesis"), "{text}");
    let connector = harness.load_twilio().await;
    let error = harness::answer(connector.wire(None, PUBLIC_URL, true, &["kinesis".to_owned()]).await).unwrap_err();
    assert!(error.contains("the Twilio connector offers event-streams"), "{error}");
}
