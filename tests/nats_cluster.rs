//! The service on a 3-server JetStream cluster, the configuration of
//! `deploy/kubernetes/nats-cluster.yaml` on loopback, reached through a seed
//! list: started before the cluster forms, its stream leader killed under
//! load, the whole cluster restarted while webhooks are spooled. Each time,
//! every webhook answered 200 is on the stream once. These tests start and
//! kill many servers: the slower group, which CI runs all the same.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::fixtures::{borrowed, inbound_sms_with};
use harness::nats_cluster::NatsCluster;
use harness::{Harness, Signature, get, post_webhook, sign};
use ingress_egress::bus::Bus;
use ingress_egress::bus::nats::NatsBus;
use ingress_egress::config::{BusConfig, BusUrl};

/// The URL Twilio would call.
const PUBLIC_URL: &str = "https://hooks.example.com";
const TOPIC: &str = "ingress.twilio.messaging";

/// A service on `cluster`'s seed list, spooling after 500 ms without a PubAck.
fn harness_on(cluster: &NatsCluster) -> Harness {
    harness::init_test_logs();
    let mut harness = Harness::new();
    harness.env.set("BUS_URL", cluster.seeds()).set("TWILIO_WEBHOOK_BASE_URL", PUBLIC_URL);
    harness.edit_architecture(|text| {
        text.replace("    limits:\n", "    spool:\n      publish_timeout_ms: 500\n    limits:\n")
    });
    harness
}

/// `serve` as a child process, JSON logs to `log`; returns once its public
/// listener answers (the admin one waits for the bus).
async fn spawn_serve(harness: &mut Harness, log: &Path) -> (Child, SocketAddr) {
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
    let file = std::fs::File::create(log).unwrap();
    let mut child =
        harness.command(&["--log-format", "json", "serve"], None).stdout(Stdio::null()).stderr(file).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(public).await.is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "serve did not listen within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, public)
}

/// Posts the inbound SMS `sid`, signed for the public URL; its status.
async fn webhook(public: SocketAddr, sid: &str) -> u16 {
    let params = inbound_sms_with(sid, "cluster");
    let signature = sign(&format!("{PUBLIC_URL}/twilio/messaging"), &borrowed(&params));
    post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Given(&signature)).await.0
}

/// A reader of the cluster's streams.
async fn reader(cluster: &NatsCluster) -> anyhow::Result<NatsBus> {
    let seeds = BusUrl::nats_seeds(&cluster.seeds()).map_err(anyhow::Error::msg)?;
    let config = BusConfig { url: BusUrl::Nats(seeds.clone()), ..BusConfig::embedded(Path::new(".")) };
    NatsBus::connect(&seeds, &config).await
}

/// How often each message sid is on the ingress stream, once it holds
/// `expected` sids (bounded: the spool may still be draining).
async fn stream_counts(cluster: &NatsCluster, expected: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = BTreeMap::new();
        if let Ok(Ok(bus)) = tokio::time::timeout(Duration::from_secs(10), reader(cluster)).await {
            for stored in bus.read(TOPIC, 0, 100_000).await.unwrap_or_default() {
                let envelope: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
                *counts.entry(envelope["provider_message_id"].as_str().unwrap().to_owned()).or_default() += 1;
            }
        }
        if counts.len() >= expected || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every sid answered 200 is on the stream exactly once, and nothing else.
fn assert_once_each(answered: &[String], counts: &BTreeMap<String, usize>) {
    let missing: Vec<&String> = answered.iter().filter(|sid| !counts.contains_key(*sid)).collect();
    assert!(missing.is_empty(), "{} answered 200 but not on the stream: {missing:?}", missing.len());
    let doubled: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "on the stream more than once: {doubled:?}");
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_cluster_forms_becomes_ready_by_itself() {
    let mut cluster = NatsCluster::new();
    let mut harness = harness_on(&cluster);
    let log = harness.dir.path().join("serve.log");
    let (serve, public) = spawn_serve(&mut harness, &log).await;
    // No server yet: alive, not ready, webhooks refused so that Twilio retries.
    assert_eq!(get(public, "/healthz").await.0, 200);
    assert_eq!(get(public, "/readyz").await.0, 503);
    assert_eq!(webhook(public, "SM00000000000000000000000000000000").await, 503);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    cluster.start_all();
    harness::wait_until_ready(public).await;
    println!("cluster: the service was ready {:?} after the cluster's servers started", started.elapsed());
    let sid = "SM00000000000000000000000000000001";
    assert_eq!(webhook(public, sid).await, 200);
    assert_once_each(&[sid.to_owned()], &stream_counts(&cluster, 1).await);
    stop(serve);

    let logs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(lines.iter().any(|l| l["message"] == "waiting for the bus"), "{logs}");
    let ready = lines.iter().find(|l| l["message"] == "JetStream streams ready").expect("the start says what it chose");
    assert_eq!((ready["replicas"].as_u64(), ready["configured"].as_str()), (Some(3), Some("auto")), "{ready}");
}

/// Posts webhooks with fresh sids from `lanes` loops until `stop`; the sids answered 200.
async fn load(public: SocketAddr, lanes: usize, stop: Arc<Mutex<bool>>) -> Vec<String> {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if *stop.lock().unwrap() {
                        break;
                    }
                    let sid = format!("SM{lane:02x}{i:030x}");
                    if webhook(public, &sid).await == 200 {
                        answered.lock().unwrap().push(sid);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    std::mem::take(&mut *answered.lock().unwrap())
}

/// The server leading `stream`, by index.
async fn leader_of(cluster: &NatsCluster, stream: &str) -> usize {
    let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
    let client = async_nats::connect(seeds).await.unwrap();
    let info = async_nats::jetstream::new(client).get_stream(stream).await.unwrap().info().await.unwrap().clone();
    NatsCluster::index_of(&info.cluster.unwrap().leader.unwrap())
}

/// A running cluster and a service on it, ready.
async fn service_on_a_cluster() -> (NatsCluster, Harness, Child, SocketAddr) {
    let mut cluster = NatsCluster::new();
    cluster.start_all();
    let mut harness = harness_on(&cluster);
    let log = harness.dir.path().join("serve.log");
    let (serve, public) = spawn_serve(&mut harness, &log).await;
    harness::wait_until_ready(public).await;
    (cluster, harness, serve, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_under_load_loses_and_doubles_nothing() {
    let (mut cluster, _harness, serve, public) = service_on_a_cluster().await;

    let stop_load = Arc::new(Mutex::new(false));
    let traffic = tokio::spawn(load(public, 4, stop_load.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = leader_of(&cluster, "INGRESS").await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.start(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop_load.lock().unwrap() = true;
    let answered = traffic.await.unwrap();

    let counts = stream_counts(&cluster, answered.len()).await;
    println!(
        "cluster: stream leader n{leader} SIGKILLed under load; {} webhooks answered 200, {} envelopes on the stream",
        answered.len(),
        counts.values().sum::<usize>()
    );
    assert!(answered.len() > 100, "only {} webhooks answered 200", answered.len());
    assert_once_each(&answered, &counts);
    stop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restart_while_webhooks_are_spooled_loses_nothing() {
    let (mut cluster, _harness, serve, public) = service_on_a_cluster().await;

    let mut answered = Vec::new();
    for i in 0..60 {
        if i == 20 {
            cluster.kill_all();
        }
        let sid = format!("SM{i:032x}");
        assert_eq!(webhook(public, &sid).await, 200, "webhook {i}: on the bus, or in the spool");
        answered.push(sid);
    }
    let readiness = get(public, "/readyz").await;
    assert_eq!(readiness.0, 200, "spooling is degraded, still ready: {readiness:?}");
    cluster.start_all();
    let counts = stream_counts(&cluster, answered.len()).await;
    println!(
        "cluster: 3 servers SIGKILLed after 20 of 60 webhooks and restarted; {} envelopes on the stream",
        counts.values().sum::<usize>()
    );
    assert_once_each(&answered, &counts);
    assert_eq!(counts.len(), answered.len());
    stop(serve);
}
