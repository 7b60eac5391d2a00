//! A 10,000-account directory against a one-account one, in this invocation:
//!
//! - reading the directory (what a start and every reload do), and how long
//!   a folder added takes to verify in a running service (the watcher's
//!   reload, end to end);
//! - a lookup of one account's credential set (what every webhook does);
//! - a signed webhook for a directory account, through the whole service,
//!   with 10,000 accounts configured against one: the ratio is the cost of
//!   many accounts per webhook (the load test is `bench/run`'s `service-10k`).
//!
//! `cargo bench -p bench --bench accounts`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::Harness;
use ingress_egress::config::{CredentialSetsConfig, Format};
use ingress_egress::service::RunningService;
use ingress_egress::tenancy::CredentialSets;

const MANY: usize = 10_000;
const WEBHOOKS: usize = 2_000;

fn sid(i: usize) -> String {
    format!("AC{i:032x}")
}

fn token(i: usize) -> String {
    format!("{:032x}", 0xa11c_e000_u64 + i as u64)
}

/// Writes `count` account folders under `dir`, as Kubernetes mounts them.
fn write_accounts(dir: &Path, count: usize) {
    (0..count).for_each(|i| write_account(dir, i));
}

fn write_account(dir: &Path, i: usize) {
    let folder = dir.join(sid(i));
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join("TWILIO_AUTH_TOKEN"), token(i)).expect("token");
    std::fs::write(folder.join("TWILIO_FROM_NUMBER"), format!("+1500555{:04}", i % 10_000)).expect("number");
}

fn sets_config(dir: &Path) -> CredentialSetsConfig {
    let pattern = |spec: &str| Format::pattern(spec).expect("pattern");
    CredentialSetsConfig {
        dir: dir.to_owned(),
        name_pattern: Some(pattern("^AC[0-9a-fA-F]{32}$")),
        values: [
            ("TWILIO_AUTH_TOKEN".to_owned(), vec![pattern("^[0-9a-fA-F]{32}$")]),
            ("TWILIO_FROM_NUMBER".to_owned(), vec![Format::Text]),
        ]
        .into_iter()
        .collect(),
        required: vec!["TWILIO_AUTH_TOKEN".to_owned()],
    }
}

/// The median of `rounds` timings of `work`.
fn median(rounds: usize, mut work: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds).map(|_| work()).collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn directory_costs(one: &Path, many: &Path) {
    let load = |dir: &Path| {
        median(5, || {
            let started = Instant::now();
            let sets = CredentialSets::load(sets_config(dir));
            let took = started.elapsed();
            assert!(sets.summary().problems.is_empty());
            took
        })
    };
    let (load_one, load_many) = (load(one), load(many));
    println!(
        "read the directory (start, reload): 1 account {:.2} ms, {MANY} accounts {:.0} ms",
        load_one.as_secs_f64() * 1e3,
        load_many.as_secs_f64() * 1e3
    );
    let lookups = |dir: &Path, count: usize| {
        let sets = CredentialSets::load(sets_config(dir));
        let names: Vec<String> = (0..count).map(sid).collect();
        let started = Instant::now();
        for round in 0..100_000 {
            assert!(sets.reveal(&names[round % count]).is_some());
        }
        started.elapsed() / 100_000
    };
    let (one_lookup, many_lookup) = (lookups(one, 1), lookups(many, MANY));
    println!(
        "one account's set looked up: 1 account {} ns, {MANY} accounts {} ns (ratio {:.2})",
        one_lookup.as_nanos(),
        many_lookup.as_nanos(),
        many_lookup.as_secs_f64() / one_lookup.as_secs_f64()
    );
}

/// A service holding the directory accounts of `dir` (written beforehand and
/// synced, so writing them back does not share the disk with the measured
/// commits), and where they are.
async fn service_with_accounts(dir: &Path) -> (Harness, RunningService, PathBuf) {
    let mut harness = Harness::new();
    let copy = harness.accounts_dir();
    std::fs::rename(dir, &copy).expect("the accounts move into the service's directory");
    let service = harness.start().await;
    (harness, service, copy)
}

/// A synced directory of `count` accounts in `scratch`.
fn prepared(scratch: &Path, count: usize, round: usize) -> PathBuf {
    let dir = scratch.join(format!("accounts-{count}-{round}"));
    write_accounts(&dir, count);
    let _ = std::process::Command::new("sync").status();
    dir
}

/// An inbound SMS `message` for account number `account`, signed with its
/// token for `service`: its body and signature.
fn signed(service: &RunningService, account: usize, message: &str) -> (Vec<u8>, String) {
    let url = format!("http://{}/twilio/messaging", service.public_addr);
    let account_sid = sid(account);
    let params = [
        ("MessageSid", message),
        ("AccountSid", account_sid.as_str()),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("Body", "hi"),
    ];
    (harness::form(&params), harness::sign_with(&token(account), &url, &params))
}

/// Posts a signed webhook; its status.
async fn post_signed(service: &RunningService, (body, signature): (Vec<u8>, String)) -> u16 {
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", signature.as_str())];
    harness::post(service.public_addr, "/twilio/messaging", &headers, body).await.0
}

/// Signed webhooks for directory accounts through a whole service holding
/// `count` of them; the time per webhook, one at a time.
async fn webhook_cost(dir: &Path, count: usize) -> Duration {
    let (_harness, service, _) = service_with_accounts(dir).await;
    let webhooks: Vec<_> =
        (0..WEBHOOKS).map(|n| signed(&service, n % count, &format!("SM{count:08x}{n:024x}"))).collect();
    let started = Instant::now();
    for webhook in webhooks {
        assert_eq!(post_signed(&service, webhook).await, 200);
    }
    started.elapsed() / WEBHOOKS as u32
}

/// From a folder written to the first webhook it verifies: the watcher's
/// reload of the whole directory, end to end.
async fn time_to_add(dir: &Path, count: usize) -> Duration {
    let (_harness, service, dir) = service_with_accounts(dir).await;
    let added = count + 1;
    let started = Instant::now();
    write_account(&dir, added);
    loop {
        if post_signed(&service, signed(&service, added, "SM00000000000000000000000000ad0ed0")).await == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the added account never verified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (one, many) = (scratch.path().join("one"), scratch.path().join("many"));
    write_accounts(&one, 1);
    write_accounts(&many, MANY);
    directory_costs(&one, &many);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // Alternating, three rounds each, the median: this disk's fsync varies.
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for round in 0..3 {
            one.push(webhook_cost(&prepared(scratch.path(), 1, round), 1).await);
            many.push(webhook_cost(&prepared(scratch.path(), MANY, round), MANY).await);
        }
        let middle = |mut samples: Vec<Duration>| {
            samples.sort();
            samples[samples.len() / 2]
        };
        let (one, many) = (middle(one), middle(many));
        println!(
            "a signed webhook for a directory account, one at a time (a commit each), median of 3: 1 account {:.0} µs, {MANY} accounts {:.0} µs (ratio {:.2})",
            one.as_secs_f64() * 1e6,
            many.as_secs_f64() * 1e6,
            many.as_secs_f64() / one.as_secs_f64()
        );
        let add_one = time_to_add(&prepared(scratch.path(), 1, 9), 1).await;
        let add_many = time_to_add(&prepared(scratch.path(), MANY, 9), MANY).await;
        println!(
            "a folder added, to its first verified webhook: beside 1 account {:.0} ms, beside {MANY} accounts {:.0} ms",
            add_one.as_secs_f64() * 1e3,
            add_many.as_secs_f64() * 1e3
        );
    });
}
