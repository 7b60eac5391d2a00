//! Faults against the running service, each with its outcome asserted: a
//! slow, broken or refusing Twilio; a full or read-only disk under the bus;
//! a component file that vanishes during a swap. Clear errors, bounded
//! waits, no crash, nothing acknowledged lost, nothing Twilio took sent twice.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::{Duration, Instant, SystemTime};

use harness::fake_twilio::{Ending, FakeTwilio, Reply};
use harness::{enqueue, fast_retry_harness, messages, wait_for_messages};
use ingress_egress::service::RunningService;

fn sms(id: &str) -> String {
    format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "fault {id}"}}"#)
}

/// Waits until `topic` holds `count` messages or `bound` passes.
async fn settled(service: &RunningService, topic: &str, count: usize, bound: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + bound;
    loop {
        let found = messages(service, topic).await;
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_twilio_within_the_call_bound_is_sent_once() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::created("SMslow").after(Duration::from_millis(1500))]);
    let service = fast_retry_harness(&fake.base_url()).start().await;
    enqueue(&service, &sms("slow")).await;
    let events = settled(&service, "events.twilio.status", 1, Duration::from_secs(10)).await;
    assert_eq!((events.len(), events[0]["provider_message_id"].as_str()), (1, Some("SMslow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received().len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_storm_is_retried_with_backoff_and_sends_once_when_it_passes() {
    let fake = FakeTwilio::start().await;
    fake.script(
        (0..5).map(|i| if i % 2 == 0 { Reply::json(500, "oops") } else { Reply::json(503, "<html>down</html>") }),
    );
    let service = fast_retry_harness(&fake.base_url()).start().await;
    enqueue(&service, &sms("storm")).await;
    let events = settled(&service, "events.twilio.status", 1, Duration::from_secs(20)).await;
    assert_eq!((events.len(), events[0]["status"].as_str()), (1, Some("queued")), "{events:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let times = fake.received_at();
    assert_eq!(times.len(), 6, "five failures and the send that went through");
    // Exponential backoff from 20 ms (with jitter): the gaps grow.
    assert!(times[5] - times[4] > times[1] - times[0], "{times:?}");
    assert!(messages(&service, "deadletter.twilio").await.is_empty());
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_an_http_date_is_waited_for() {
    let fake = FakeTwilio::start().await;
    // Whole seconds, as an HTTP date has them; the same moment as an Instant.
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 5;
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let not_before = Instant::now() + date.duration_since(now).unwrap();
    fake.script([Reply::error(429, 20429, "Too Many Requests").with_header("Retry-After", &httpdate(date))]);
    let service = fast_retry_harness(&fake.base_url()).start().await;
    enqueue(&service, &sms("dated")).await;
    assert_eq!(wait_for_messages(&service, "events.twilio.status", 1).await.len(), 1);
    let times = fake.received_at();
    assert_eq!(times.len(), 2);
    // The backoff alone would have retried 20 ms after the first attempt.
    let early = not_before.saturating_duration_since(times[1]);
    assert!(early < Duration::from_millis(50), "retried {early:?} before the Retry-After date");
    assert!(times[1] - times[0] >= Duration::from_millis(500), "{:?}", times[1] - times[0]);
    service.stop().await.unwrap();
}

/// `SystemTime` as an HTTP date, formatted here so the test does not share the
/// component's parser.
fn httpdate(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month as usize - 1];
    format!("{weekday}, {day:02} {name} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Twilio answered 201 but the body broke: the message exists at Twilio, so
/// it must not be sent again. It is dead-lettered with outcome `unknown`.
async fn a_broken_answer_is_never_resent(ending: Ending, bound: Duration) {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::created("SMbroken").ending(ending)]);
    let mut harness = fast_retry_harness(&fake.base_url());
    harness.set_setting("call_timeout_ms", "3000");
    let service = harness.start().await;
    let started = Instant::now();
    enqueue(&service, &sms("broken")).await;
    let dead = settled(&service, "deadletter.twilio", 1, bound).await;
    assert_eq!(dead.len(), 1, "not dead-lettered within {bound:?}");
    assert!(started.elapsed() < bound);
    assert_eq!(dead[0]["status"], "unknown", "{dead:?}");
    assert!(dead[0]["reason"].as_str().unwrap().contains("may have been sent"), "{dead:?}");
    let events = settled(&service, "events.twilio.status", 1, Duration::from_secs(2)).await;
    assert_eq!(events[0]["status"], "unknown", "{events:?}");
    // Given time to (wrongly) retry, it does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 1, "sent twice");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_answer_is_ambiguous_and_not_resent() {
    a_broken_answer_is_never_resent(Ending::ResetAfter(20), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_ends_is_bounded_ambiguous_and_not_resent() {
    // Bounded by the call timeout (3 s), not by the peer.
    a_broken_answer_is_never_resent(Ending::StallAfter(20), Duration::from_secs(8)).await;
}
