//! The service on NATS JetStream: one host end to end, then several hosts
//! sharing one server, as separate processes, with one killed mid-work.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::fake_twilio::FakeTwilio;
use harness::fixtures::{borrowed, inbound_sms_with};
use harness::nats::NatsServer;
use harness::{Harness, Signature, admin_post, post_webhook, sign, wait_for_messages};
use ingress_egress::bus::Bus;
use ingress_egress::bus::nats::NatsBus;
use ingress_egress::config::BusConfig;

/// The URL Twilio would call: every host verifies signatures over it.
const PUBLIC_URL: &str = "https://hooks.example.com";

fn harness_on(server: &NatsServer, fake: &FakeTwilio) -> Harness {
    harness::init_test_logs();
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url());
    harness.env.set("BUS_URL", server.url()).set("TWILIO_WEBHOOK_BASE_URL", PUBLIC_URL);
    harness
}

async fn reader(server: &NatsServer) -> NatsBus {
    let addr = format!("127.0.0.1:{}", server.port);
    NatsBus::connect(std::slice::from_ref(&addr), &BusConfig::embedded(std::path::Path::new("."))).await.unwrap()
}

/// Posts the inbound SMS `sid`, signed for the public URL, to `addr`.
async fn webhook(addr: std::net::SocketAddr, sid: &str) -> u16 {
    let params = inbound_sms_with(sid, "over NATS");
    let signature = sign(&format!("{PUBLIC_URL}/twilio/messaging"), &borrowed(&params));
    post_webhook(addr, "/twilio/messaging", &borrowed(&params), Signature::Given(&signature)).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_on_nats_ingests_and_sends() {
    let (server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let service = harness_on(&server, &fake).start().await;
    assert_eq!(webhook(service.public_addr, "SM000000000000000000000000000000a1").await, 200);
    assert_eq!(webhook(service.public_addr, "SM000000000000000000000000000000a1").await, 200, "a retry");
    let envelopes = wait_for_messages(&service, "ingress.twilio.messaging", 1).await;
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0]["provider_message_id"], "SM000000000000000000000000000000a1");

    let body = r#"{"id": "nats-1", "to": "+14155550100", "from": "+15005550006", "body": "hi"}"#;
    let (status, _) = admin_post(&service, "/v1/messages", &[("content-type", "application/json")], body.into()).await;
    assert_eq!(status, 202);
    let events = wait_for_messages(&service, "events.twilio.status", 1).await;
    assert_eq!((events[0]["id"].as_str(), events[0]["status"].as_str()), (Some("nats-1"), Some("queued")));
    assert_eq!(fake.received().len(), 1);
    let (status, body) = harness::get(service.public_addr, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_sent_to_two_hosts_give_one_envelope_each() {
    let (server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    let (mut one, public_one, _) = harness.spawn_serve().await;
    let (mut two, public_two, _) = harness.spawn_serve().await;
    let sids: Vec<String> = (0..50).map(|i| format!("SM{i:032x}")).collect();
    for sid in &sids {
        assert_eq!(webhook(public_one, sid).await, 200);
        assert_eq!(webhook(public_two, sid).await, 200);
    }
    let stored = reader(&server).await.read("ingress.twilio.messaging", 0, 1000).await.unwrap();
    println!("webhooks: {} sent to each of 2 hosts, {} envelopes on the stream", sids.len(), stored.len());
    assert_eq!(stored.len(), sids.len());
    // `tail` reads the stream too, as any NATS consumer can.
    let tail = harness
        .command(
            &["tail", "--topic", "ingress.twilio.messaging", "--from-start", "--limit", "50", "--idle-timeout", "10"],
            None,
        )
        .output()
        .unwrap();
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(tail.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tailed: Vec<&str> = lines.iter().map(|e| e["provider_message_id"].as_str().unwrap()).collect();
    assert_eq!(tailed, sids.iter().map(String::as_str).collect::<Vec<_>>());
    for child in [&mut one, &mut two] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Publishes `count` egress messages on the bus directly, as the platform does.
async fn publish_egress(bus: &NatsBus, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("kill-{i:04}");
        let body = format!(r#"{{"id": "{id}", "to": "+14155550100", "from": "+15005550006", "body": "{id}"}}"#);
        bus.publish("egress.twilio", Some(&id), body.into(), None).await.unwrap();
        ids.push(id);
    }
    ids
}

/// How many times the fake received each message body (the egress id).
fn sends_per_id(fake: &FakeTwilio) -> HashMap<String, usize> {
    let mut sent = HashMap::new();
    for request in fake.received() {
        let body = request.form.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone()).unwrap_or_default();
        *sent.entry(body).or_default() += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_egress_loses_nothing() {
    const MESSAGES: usize = 1000;
    const CONCURRENCY: usize = 16;
    let (server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    // 100 a second per host, so the kill lands half-way; a short call bound so the
    // killed host's messages come back within the test's patience.
    harness.edit_architecture(|text| {
        text.replace("rate_per_sender: 10 ", "rate_per_sender: 100 ")
            .replace("call_timeout_ms: 20000", "call_timeout_ms: 2000")
    });
    let bus = reader(&server).await;
    let (mut victim, _, _) = harness.spawn_serve().await;
    let (mut survivor, _, _) = harness.spawn_serve().await;
    let ids = publish_egress(&bus, MESSAGES).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.received().len() < MESSAGES / 2 {
        assert!(Instant::now() < deadline, "half the messages were not sent within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = fake.received().len();

    let deadline = Instant::now() + Duration::from_secs(90);
    while sends_per_id(&fake).len() < MESSAGES {
        assert!(Instant::now() < deadline, "only {} of {MESSAGES} reached Twilio", sends_per_id(&fake).len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sends_per_id(&fake);
    let duplicates: usize = sent.values().map(|n| n - 1).sum();
    println!(
        "egress: {MESSAGES} messages, {} reached Twilio, {} requests in all, {duplicates} duplicates \
         (the killed host's in-flight sends; it was killed after {killed_at} requests)",
        sent.len(),
        fake.received().len()
    );
    assert!(ids.iter().all(|id| sent.contains_key(id)), "every message reached Twilio");
    assert!(duplicates <= CONCURRENCY, "{duplicates} duplicates: more than one host's in-flight sends");
    survivor.kill().unwrap();
    survivor.wait().unwrap();
}

/// The times the fake received a message from `sender`, in order.
fn sent_from(fake: &FakeTwilio, sender: &str) -> Vec<Instant> {
    let times = fake.received_at();
    let received = fake.received();
    let from = |r: &harness::fake_twilio::Recorded| r.form.iter().any(|(k, v)| k == "From" && v == sender);
    received.iter().zip(times).filter(|(r, _)| from(r)).map(|(_, t)| t).collect()
}

/// One pace per sender for the whole service: three hosts share the egress
/// work and a sender's `rate_per_sender`, within +25%, while another sender
/// is not slowed by the busy one, and a host that leaves or joins changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_keep_one_pace_per_sender() {
    const BUSY: usize = 120;
    let (server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    harness.set_setting("rate_per_sender", "4");
    let bus = reader(&server).await;
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(harness.spawn_serve().await.0);
    }
    for i in 0..BUSY {
        let body = format!(r#"{{"id": "busy-{i}", "to": "+14155550100", "from": "+15005550006", "body": "b{i}"}}"#);
        bus.publish("egress.twilio", Some(&format!("busy-{i}")), body.into(), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_at = Instant::now();
    for i in 0..4 {
        let body = format!(r#"{{"id": "quiet-{i}", "to": "+14155550100", "from": "+15005550007", "body": "q{i}"}}"#);
        bus.publish("egress.twilio", Some(&format!("quiet-{i}")), body.into(), None).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent_from(&fake, "+15005550007").len() < 4 {
        assert!(Instant::now() < deadline, "the quiet sender's 4 messages were not all sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet_took = quiet_at.elapsed();
    // A host leaves and another joins: the pace is the bucket's, not theirs.
    let mut left = hosts.remove(0);
    left.kill().unwrap();
    left.wait().unwrap();
    let sent_when_one_left = sent_from(&fake, "+15005550006").len();
    hosts.push(harness.spawn_serve().await.0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let busy = sent_from(&fake, "+15005550006");
    assert!(busy.len() >= sent_when_one_left + 30, "{} sent after a host left and one joined", busy.len());
    let span = (*busy.last().unwrap() - busy[0]).as_secs_f64();
    // A burst of 4, then 4 a second: (n - 4) / span, whoever sent them.
    let pace = (busy.len() - 4) as f64 / span;
    println!(
        "pace: 3 hosts (one left, one joined) sent {} of {BUSY} messages from one sender at {pace:.2}/s \
              over {span:.1} s (rate_per_sender 4); a second sender's 4 took {quiet_took:?}",
        busy.len()
    );
    assert!(busy.len() >= 40, "only {} sent in {span:.1} s", busy.len());
    assert!(pace <= 5.0, "{pace:.2}/s over three hosts: more than 4/s + 25%");
    assert!(quiet_took < Duration::from_secs(3), "the quiet sender waited {quiet_took:?} behind the busy one");
    for mut host in hosts {
        host.kill().unwrap();
        host.wait().unwrap();
    }
}

#[tokio::test]
async fn a_token_protected_server_takes_the_token_as_a_secret() {
    const TOKEN: &str = "nats-token-0123456789";
    let (server, fake) = (NatsServer::start_with(&["--auth", TOKEN]), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    let refused = ingress_egress::service::start(harness.config(), None).await.unwrap_err();
    let message = format!("{refused:#}");
    assert!(message.contains("connecting to nats://"), "{message}");

    harness.env.set("NATS_TOKEN", TOKEN);
    let service = harness.start().await;
    assert_eq!(webhook(service.public_addr, "SM000000000000000000000000000000b1").await, 200);
    assert_eq!(wait_for_messages(&service, "ingress.twilio.messaging", 1).await.len(), 1);
    // `tail` needs no connector secret, but it does need the bus's.
    let args = ["tail", "--topic", "ingress.twilio.messaging", "--from-start", "--limit", "1", "--idle-timeout", "10"];
    let tail = harness.command(&args, None).output().unwrap();
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    assert!(String::from_utf8_lossy(&tail.stdout).contains("SM000000000000000000000000000000b1"));
    service.stop().await.unwrap();

    harness.env.set("NATS_TOKEN", "wrong-token-value");
    let refused = format!("{:#}", ingress_egress::service::start(harness.config(), None).await.unwrap_err());
    assert!(!refused.contains("wrong-token-value") && !refused.contains(TOKEN), "a secret in: {refused}");
}

/// Signed webhooks with fresh sids from `senders` concurrent clients until
/// `stop`; every sid with the status it got.
async fn webhook_burst(
    public: std::net::SocketAddr,
    senders: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(String, u16)> {
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let sid = format!("SM{sender:04x}{i:028x}");
                    answered.push((sid.clone(), webhook(public, &sid).await));
                }
                answered
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_burst_and_back_10_s_later_loses_and_doubles_nothing() {
    let (mut server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    harness.edit_architecture(|text| {
        text.replace("    limits:\n", "    spool:\n      publish_timeout_ms: 500\n    limits:\n")
    });
    let service = harness.start().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burst = tokio::spawn(webhook_burst(service.public_addr, 4, stop.clone()));

    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let spooled_during_outage = service.state.spool.depth();
    server.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = burst.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while service.state.spool.depth() > 0 {
        assert!(Instant::now() < deadline, "the spool still holds {}", service.state.spool.depth());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = reader(&server).await.read("ingress.twilio.messaging", 0, 100_000).await.unwrap();
    let mut on_stream: HashMap<String, usize> = HashMap::new();
    for message in &stored {
        let envelope: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        *on_stream.entry(envelope["provider_message_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let acknowledged: Vec<&String> = answered.iter().filter(|(_, status)| *status == 200).map(|(sid, _)| sid).collect();
    println!(
        "outage: {} webhooks sent, {} answered 200, {spooled_during_outage} in the spool during the outage, \
         {} envelopes on the stream, spool now empty",
        answered.len(),
        acknowledged.len(),
        stored.len()
    );
    assert!(spooled_during_outage > 0, "the outage spooled nothing: the test did not test");
    for sid in &acknowledged {
        assert_eq!(on_stream.get(*sid), Some(&1), "{sid}: answered 200, on the stream {:?} times", on_stream.get(*sid));
    }
    assert_eq!(stored.len(), on_stream.len(), "no envelope twice");
    service.stop().await.unwrap();
}

/// A CA, and a certificate for 127.0.0.1 it signed: PEM files in `dir`
/// (CA, certificate, key).
fn tls_files(dir: &std::path::Path) -> [String; 3] {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let files = [("ca.pem", ca_cert.pem()), ("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
}

#[tokio::test]
async fn a_tls_server_with_a_user_and_password_is_reached_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = tls_files(dir.path());
    let args = ["--tls", "--tlscert", &cert, "--tlskey", &key, "--user", "svc", "--pass", "nats-password-0123"];
    let (server, fake) = (NatsServer::start_with(&args), FakeTwilio::start().await);
    let mut harness = harness_on(&server, &fake);
    harness.env.set("NATS_USER", "svc").set("NATS_PASSWORD", "nats-password-0123");
    let refused = format!("{:#}", ingress_egress::service::start(harness.config(), None).await.unwrap_err());
    assert!(!refused.contains("nats-password-0123"), "a secret in: {refused}");

    harness.env.set("NATS_TLS_CA", &ca);
    let service = harness.start().await;
    assert_eq!(webhook(service.public_addr, "SM000000000000000000000000000000c1").await, 200);
    assert_eq!(wait_for_messages(&service, "ingress.twilio.messaging", 1).await.len(), 1);
    service.stop().await.unwrap();
}

/// `check --online` says what `serve` would choose on this server and how
/// each stream is, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_shows_the_replicas_chosen_and_each_stream() {
    let (server, fake) = (NatsServer::start(), FakeTwilio::start().await);
    let harness = harness_on(&server, &fake);
    let check = || {
        let output = harness.command(&["check", "--online"], None).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let before = check();
    assert!(before.contains("alone; streams with 1 replica(s) (replicas: auto)"), "{before}");
    assert!(before.contains("stream INGRESS: missing (serve creates it)"), "{before}");
    assert!(check().contains("stream EGRESS: missing"), "check created nothing");
    reader(&server).await;
    let after = check();
    assert!(
        after.contains("stream INGRESS: as configured") && after.contains("stream EGRESS: as configured"),
        "{after}"
    );
}
