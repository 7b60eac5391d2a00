//! Faults against the running service, each with its outcome asserted: a
//! slow, broken or refusing Twilio; a full or read-only disk under the bus;
//! a component file that vanishes during a swap. Clear errors, bounded
//! waits, no crash, nothing acknowledged lost, nothing Twilio took sent twice.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::{Duration, Instant, SystemTime};

use harness::fake_twilio::{Ending, FakeTwilio, Reply};
use harness::{enqueue, fast_retry_harness, messages, wait_for_messages, wait_for_messages_within};

fn sms(id: &str) -> String {
    format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "fault {id}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_twilio_within_the_call_bound_is_sent_once() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::created("SMslow").after(Duration::from_millis(1500))]);
    let service = fast_retry_harness(&fake.base_url()).start().await;
    enqueue(&service, &sms("slow")).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, Duration::from_secs(10)).await;
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
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, Duration::from_secs(20)).await;
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
    let service = fast_retry_harness(&fake.base_url()).start().await;
    // Whole seconds, as an HTTP date has them; the same moment as an Instant.
    // Taken once the service runs, so a slow start cannot eat into the wait.
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 5;
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let not_before = Instant::now() + date.duration_since(now).unwrap();
    fake.script([Reply::error(429, 20429, "Too Many Requests").with_header("Retry-After", &httpdate(date))]);
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
/// it must not be sent again. The connector finds it in Twilio's list and
/// reports it sent, with its sid (tests/reconcile.rs has the rest).
async fn a_broken_answer_is_never_resent(ending: Ending, bound: Duration) {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::created("SMbroken").ending(ending)]);
    let mut harness = fast_retry_harness(&fake.base_url());
    harness.set_setting("call_timeout_ms", "3000");
    harness.env.set("TWILIO_RECONCILE_SECONDS", "1");
    let service = harness.start().await;
    let started = Instant::now();
    enqueue(&service, &sms("broken")).await;
    let events = wait_for_messages_within(&service, "events.twilio.status", 1, bound).await;
    assert_eq!(events.len(), 1, "not settled within {bound:?}");
    assert!(started.elapsed() < bound);
    assert_eq!(events[0]["provider_message_id"], "SMbroken", "{events:?}");
    assert_eq!(events[0]["reconciliation"], "found", "{events:?}");
    // Given time to (wrongly) retry, it does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.posts().len(), 1, "sent twice");
    assert!(messages(&service, "deadletter.twilio").await.is_empty());
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

/// A small tmpfs the test mounts (and unmounts when dropped), or why it cannot.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !mounted.status.success() {
            return Err(String::from_utf8_lossy(&mounted.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the disk with one file until the kernel says it is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        filler
    }

    fn remount_read_only(&self) {
        let status = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(self.path()).status();
        assert!(status.unwrap().success(), "remounting read-only");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_not_ready_refuses_clearly_and_loses_nothing_acknowledged() {
    let disk = match SmallDisk::mount("64m") {
        Ok(disk) => disk,
        Err(why) => return eprintln!("SKIPPED: cannot mount a small tmpfs here ({why}); needs root"),
    };
    let mut harness = harness::Harness::new();
    harness.env.set("DATA_DIR", disk.path().join("data").to_str().unwrap());
    let service = harness.start().await;
    let addr = service.public_addr;
    assert_eq!(harness::get(addr, "/readyz").await, (200, "ready\n".to_owned()));

    let filler = disk.fill();
    let (status, why) = harness::get(addr, "/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("bytes free"), "{why}");
    // Webhooks on a full disk: each is durable (200) or refused (5xx) so
    // Twilio retries it; none is acknowledged and lost.
    let (mut acknowledged, mut refused) = (Vec::new(), std::collections::BTreeMap::new());
    for i in 0..40 {
        let sid = format!("SM{i:032x}");
        match harness::signed_sms(addr, &sid).await {
            200 => acknowledged.push(sid),
            status => {
                assert!(status == 503 || status == 500, "answered {status}");
                *refused.entry(status).or_insert(0) += 1;
            }
        }
    }
    std::fs::remove_file(filler).unwrap();
    let (status, why) = harness::get(addr, "/readyz").await;
    assert_eq!(status, 200, "{why}");
    for i in 40..50 {
        let sid = format!("SM{i:032x}");
        assert_eq!(harness::signed_sms(addr, &sid).await, 200);
        acknowledged.push(sid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let on_bus: Vec<String> = messages(&service, "ingress.twilio.messaging")
            .await
            .iter()
            .map(|m| m["provider_message_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let missing: Vec<&String> = acknowledged.iter().filter(|sid| !on_bus.contains(sid)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "full disk: {} of 50 webhooks acknowledged, {missing} of them missing from the bus; refused: {refused:?}",
        acknowledged.len()
    );
    assert_eq!(missing, 0, "acknowledged webhooks lost");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_stops_the_start_with_a_clear_error() {
    let disk = match SmallDisk::mount("8m") {
        Ok(disk) => disk,
        Err(why) => return eprintln!("SKIPPED: cannot mount a small tmpfs here ({why}); needs root"),
    };
    std::fs::create_dir(disk.path().join("data")).unwrap();
    disk.remount_read_only();
    let mut harness = harness::Harness::new();
    harness.env.set("DATA_DIR", disk.path().join("data").to_str().unwrap());
    let output = harness.command(&["serve"], None).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("read-only file system") && !stderr.contains("panicked"), "{stderr}");
    println!("read-only data dir: {}", stderr.trim());
}
