//! No double send: a send whose outcome is ambiguous (Twilio's answer broke
//! after the request left) is looked up in Twilio's Messages list before
//! anything is sent again. Found: accepted with its sid, never resent. Not
//! found after the bound: sent once more, and only once. Through the real
//! component in the real host, against a fake Twilio that keeps what it
//! created and lists it with Twilio's filters.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::Duration;

use harness::fake_twilio::{Ending, FakeTwilio, Reply};
use harness::{enqueue, fast_retry_harness, messages, wait_for_messages_within};
use ingress_egress::service::RunningService;

/// How long the tests look before a resend (`TWILIO_RECONCILE_SECONDS`).
const BOUND_SECONDS: u64 = 2;

fn sms(id: &str, body: &str) -> String {
    format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "{body}"}}"#)
}

async fn start(fake: &FakeTwilio) -> RunningService {
    start_with_bound(fake, BOUND_SECONDS).await
}

async fn start_with_bound(fake: &FakeTwilio, bound_seconds: u64) -> RunningService {
    let mut harness = fast_retry_harness(&fake.base_url());
    harness.env.set("TWILIO_RECONCILE_SECONDS", bound_seconds.to_string());
    // Backoff from 20 ms spends attempts fast; settling takes several.
    harness.set_setting("max_attempts", "30");
    harness.start().await
}

/// A created message whose answer breaks: Twilio has it, the sender cannot know.
fn created_but_broken(sid: &str) -> Reply {
    Reply::created(sid).ending(Ending::ResetAfter(20))
}

/// A failure whose answer breaks: Twilio has nothing, the sender cannot know.
fn failed_and_broken() -> Reply {
    Reply::error(500, 20500, "Internal Server Error").ending(Ending::ResetAfter(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_send_twilio_has_is_found_and_not_resent() {
    let fake = FakeTwilio::start().await;
    fake.script([created_but_broken("SM0123456789abcdef0123456789abcdef")]);
    let service = start(&fake).await;
    enqueue(&service, &sms("found-1", "found me")).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "queued");
    assert_eq!(events[0]["provider_message_id"], "SM0123456789abcdef0123456789abcdef");
    assert_eq!(events[0]["reconciliation"], "found");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.posts().len(), 1, "sent twice");
    assert!(messages(&service, "deadletter.twilio").await.is_empty());
    // The lookup is Twilio's documented list query.
    let lookup = &fake.lookups()[0];
    assert!(lookup.path.starts_with("/2010-04-01/Accounts/AC"), "{}", lookup.path);
    for part in ["/Messages.json?", "To=%2B14155550100", "From=%2B15005550006", "DateSent%3E=", "PageSize="] {
        assert!(lookup.path.contains(part), "{part} not in {}", lookup.path);
    }
    assert!(lookup.header("authorization").is_some_and(|auth| auth.starts_with("Basic ")));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_send_twilio_never_got_is_resent_once_after_the_bound() {
    let fake = FakeTwilio::start().await;
    fake.script([failed_and_broken()]);
    let service = start(&fake).await;
    enqueue(&service, &sms("lost-1", "lost in transit")).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, Duration::from_secs(15)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0]["status"].as_str(), events[0]["reconciliation"].as_str()), (Some("queued"), Some("resent")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (posts, times) = (fake.posts(), fake.received_at());
    assert_eq!(posts.len(), 2, "sent once, then once more");
    assert_eq!(posts[0].form, posts[1].form, "the resend is the same message");
    // Not resent before the bound, and only after Twilio's list said it had none.
    let first = fake.received().iter().position(|r| r.method == "POST").unwrap();
    let second = fake.received().iter().rposition(|r| r.method == "POST").unwrap();
    assert!(times[second] - times[first] >= Duration::from_secs(BOUND_SECONDS), "{:?}", times[second] - times[first]);
    assert!(fake.received()[first..second].iter().any(|r| r.method == "GET"), "resent without looking");
    assert_eq!(events[0]["provider_message_id"].as_str().map(str::len), Some(34));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_that_is_ambiguous_too_is_not_sent_a_third_time() {
    let fake = FakeTwilio::start().await;
    fake.script([failed_and_broken(), failed_and_broken()]);
    let service = start(&fake).await;
    enqueue(&service, &sms("twice-1", "unlucky")).await;
    let dead = wait_for_messages_within(&service, "deadletter.twilio", 1, Duration::from_secs(15)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], "unknown");
    assert!(dead[0]["reason"].as_str().unwrap().contains("the one resend"), "{dead:?}");
    tokio::time::sleep(Duration::from_secs(BOUND_SECONDS)).await;
    assert_eq!(fake.posts().len(), 2, "at most one resend");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_answer_from_twilios_list_it_is_never_resent() {
    let fake = FakeTwilio::start().await;
    fake.fail_lookups(Some(503));
    fake.script([failed_and_broken()]);
    let service = start(&fake).await;
    enqueue(&service, &sms("blind-1", "no list")).await;
    // Looked for three bounds, then given up as unknown.
    let dead = wait_for_messages_within(&service, "deadletter.twilio", 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0]["status"].as_str(), dead[0]["error_class"].as_str()), (Some("unknown"), Some("unknown")));
    assert!(dead[0]["reason"].as_str().unwrap().contains("not sent again"), "{dead:?}");
    assert_eq!(fake.posts().len(), 1, "resent without knowing");
    assert!(fake.lookups().len() >= 2, "{} lookups", fake.lookups().len());
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ambiguous_sends_alike_are_settled_with_two_different_messages() {
    let fake = FakeTwilio::start().await;
    fake.script([
        created_but_broken("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        created_but_broken("SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ]);
    let service = start(&fake).await;
    enqueue(&service, &sms("alike-1", "same words")).await;
    enqueue(&service, &sms("alike-2", "same words")).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 2, Duration::from_secs(15)).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let mut sids: Vec<&str> = events.iter().map(|e| e["provider_message_id"].as_str().unwrap()).collect();
    sids.sort_unstable();
    assert_eq!(sids, ["SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]);
    assert!(events.iter().all(|e| e["reconciliation"] == "found"), "{events:?}");
    assert_eq!(fake.posts().len(), 2);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_not_sent_yet_is_found_without_a_date_sent() {
    let fake = FakeTwilio::start().await;
    let scheduled = r#"{"sid":"SM0000000000000000000000000000000a","status":"scheduled","num_segments":"1"}"#;
    fake.script([Reply::json(201, scheduled).ending(Ending::ResetAfter(20))]);
    let service = start(&fake).await;
    let send_at = "2099-01-01T00:00:00Z";
    let message = format!(
        r#"{{"id": "later-1", "to": "+14155550100", "messaging_service_sid": "MG0123456789abcdef0123456789abcdef", "body": "later", "send_at": "{send_at}"}}"#
    );
    enqueue(&service, &message).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["status"].as_str(), events[0]["reconciliation"].as_str()),
        (Some("scheduled"), Some("found"))
    );
    assert_eq!(fake.posts().len(), 1, "scheduled twice");
    // It has no date_sent, so it was found by the lookup without `DateSent>`.
    assert!(fake.lookups().iter().any(|lookup| !lookup.path.contains("DateSent")), "{:?}", fake.lookups());
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reconciliation_off_an_ambiguous_send_is_dead_lettered_as_unknown() {
    let fake = FakeTwilio::start().await;
    fake.script([created_but_broken("SM0123456789abcdef0123456789abcdef")]);
    let service = start_with_bound(&fake, 0).await;
    enqueue(&service, &sms("off-1", "no lookups")).await;
    let dead = wait_for_messages_within(&service, "deadletter.twilio", 1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], "unknown");
    assert!(dead[0]["reason"].as_str().unwrap().contains("may have been sent"), "{dead:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((fake.posts().len(), fake.lookups().len()), (1, 0));
    service.stop().await.unwrap();
}
