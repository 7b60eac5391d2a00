//! Inbound media, fetched safely (`TWILIO_MEDIA_FETCH=true`): the connector
//! fetches an MMS's media over wasi-http and the host keeps the bytes in its
//! content-addressed store. Against a fake Twilio media host (Basic auth, a
//! transient 404, redirects) and a fake foreign CDN: the credentials must
//! never reach the foreign host.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::fake_twilio::{FakeTwilio, Reply};
use harness::s3::S3Server;
use harness::{ACCOUNT_SID, Harness, Signature, post_webhook, wait_for_messages};
use ingress_egress::service::RunningService;
use sha2::Digest as _;

const PICTURE: &str = "\u{89}PNG pretend picture bytes";

/// Held by the tests that count `media-not-stored`: the metrics are the
/// process's, and tests run side by side.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn media_path(n: u32) -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM00000000000000000000000000000001/Media/ME{n:032}")
}

/// A signed inbound MMS naming `urls`, as Twilio posts it.
async fn post_mms(service: &RunningService, urls: &[String]) -> u16 {
    let mut params: Vec<(String, String)> = [
        ("MessageSid", "MM00000000000000000000000000000001"),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("Body", "look"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    params.push(("NumMedia".into(), urls.len().to_string()));
    for (n, url) in urls.iter().enumerate() {
        params.push((format!("MediaUrl{n}"), url.clone()));
        params.push((format!("MediaContentType{n}"), "image/png".into()));
    }
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post_webhook(service.public_addr, "/twilio/messaging", &borrowed, Signature::Valid).await.0
}

fn harness(twilio: &FakeTwilio, fetch: bool) -> Harness {
    let mut harness = Harness::new();
    harness.with_twilio_at(&twilio.base_url());
    harness.env.set("TWILIO_MEDIA_FETCH", if fetch { "true" } else { "false" });
    harness.env.set("TWILIO_MEDIA_MAX_BYTES", "1024");
    harness
}

fn png(body: &str) -> Reply {
    let mut reply = Reply::json(200, body);
    reply.headers = vec![("content-type".into(), "image/png".into())];
    reply
}

fn redirect(status: u16, location: &str) -> Reply {
    Reply::json(status, "").with_header("location", location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_fetched_with_credentials_from_twilio_only_and_stored_by_its_hash() {
    let (twilio, cdn) = (FakeTwilio::start().await, FakeTwilio::start().await);
    // Twilio: not there yet, then a redirect on its own host, then one to the CDN.
    twilio.script([
        Reply::error(404, 20404, "The requested resource was not found"),
        redirect(307, "/media-redirected/ME1"),
        redirect(302, &format!("{}/cdn/signed-picture?X-Amz-Signature=abc", cdn.base_url())),
    ]);
    cdn.script([png(PICTURE)]);
    let service = harness(&twilio, true).start().await;
    let url = format!("{}{}", twilio.base_url(), media_path(1));
    assert_eq!(post_mms(&service, std::slice::from_ref(&url)).await, 200);

    let envelope = &wait_for_messages(&service, "ingress.twilio.messaging", 1).await[0];
    let media = &envelope["media"][0];
    let sha256 = hex(&sha2::Sha256::digest(PICTURE.as_bytes()));
    assert_eq!(media["url"], url.as_str(), "the webhook's URL is kept");
    assert_eq!(media["sha256"], sha256.as_str());
    assert_eq!(media["size"], PICTURE.len());
    let stored = url::Url::parse(media["stored_url"].as_str().unwrap()).unwrap().to_file_path().unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), PICTURE.as_bytes());
    assert!(stored.ends_with(format!("media/{}/{sha256}", &sha256[..2])), "{}", stored.display());

    // Every request to Twilio's host carried the account's Basic credentials…
    let asked = twilio.received();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_eq!(asked[2].path, "/media-redirected/ME1");
    assert!(asked.iter().all(|r| r.header("authorization").is_some_and(|a| a.starts_with("Basic "))));
    // …and none reached the CDN, which got the redirect's URL and nothing more.
    let cdn_asked = cdn.received();
    assert_eq!(cdn_asked.len(), 1);
    assert_eq!(cdn_asked[0].path, "/cdn/signed-picture?X-Amz-Signature=abc");
    assert_eq!(cdn_asked[0].header("authorization"), None, "credentials leaked to a foreign host");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_is_too_large_of_a_refused_type_or_missing_is_not_stored_and_the_message_still_goes() {
    let (twilio, elsewhere) = (FakeTwilio::start().await, FakeTwilio::start().await);
    let mut page = Reply::json(200, "<html>not media</html>");
    page.headers = vec![("content-type".into(), "text/html".into())];
    // Asked in the order of the items: too large, a page, gone for good (404 three times).
    twilio.script([png(&"x".repeat(2048))]);
    elsewhere.script([page]);
    twilio.script((0..3).map(|_| Reply::error(404, 20404, "The requested resource was not found")));
    let _counting = COUNTING.lock().await;
    let service = harness(&twilio, true).start().await;
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    let not_stored = r#"connector_events_total{connector="twilio",event="media-not-stored"}"#;
    let before = harness::metric(&metrics, not_stored);
    let urls = [
        format!("{}{}", twilio.base_url(), media_path(1)),
        format!("{}/a-page", elsewhere.base_url()),
        format!("{}{}", twilio.base_url(), media_path(3)),
    ];
    assert_eq!(post_mms(&service, &urls).await, 200);
    let envelope = &wait_for_messages(&service, "ingress.twilio.messaging", 1).await[0];
    for (n, media) in envelope["media"].as_array().unwrap().iter().enumerate() {
        assert_eq!(media["url"], urls[n].as_str());
        assert!(media["sha256"].is_null() && media["stored_url"].is_null(), "{media}");
    }
    assert_eq!(elsewhere.received()[0].header("authorization"), None, "credentials sent to a foreign host");
    assert_eq!(twilio.received().len(), 4, "the 404 is asked again twice, then given up");
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    assert_eq!(harness::metric(&metrics, not_stored) - before, 3.0, "{metrics}");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_not_fetched_unless_asked() {
    let twilio = FakeTwilio::start().await;
    let service = harness(&twilio, false).start().await;
    assert_eq!(post_mms(&service, &[format!("{}{}", twilio.base_url(), media_path(1))]).await, 200);
    let envelope = &wait_for_messages(&service, "ingress.twilio.messaging", 1).await[0];
    assert!(envelope["media"][0]["sha256"].is_null());
    assert!(twilio.received().is_empty());
    service.stop().await.unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const BUCKET_SECRET: &str = "harness-bucket-secret-key-0123456789";

/// The harness with its blob store in `bucket` at `endpoint`, with keys.
fn in_bucket(harness: &mut Harness, endpoint: &str) {
    let on_disk = "          max_bytes: 5242880\n";
    let bucket = format!(
        "{on_disk}          s3: {{ bucket: media, endpoint: \"{endpoint}\", region: eu-west-1, prefix: /twilio/ }}\n"
    );
    harness.edit_architecture(|text| text.replacen(on_disk, &bucket, 1));
    harness.env.set("AWS_ACCESS_KEY_ID", "AKIAHARNESS000000001");
    harness.env.set("AWS_SECRET_ACCESS_KEY", BUCKET_SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_goes_to_an_s3_compatible_bucket_with_its_content_type() {
    let s3 = S3Server::start();
    s3.create_bucket("media").await;
    let twilio = FakeTwilio::start().await;
    twilio.script([png(PICTURE)]);
    let mut harness = harness(&twilio, true);
    in_bucket(&mut harness, &s3.endpoint());
    let service = harness.start().await;
    assert_eq!(post_mms(&service, &[format!("{}{}", twilio.base_url(), media_path(1))]).await, 200);

    let envelope = &wait_for_messages(&service, "ingress.twilio.messaging", 1).await[0];
    let sha256 = hex(&sha2::Sha256::digest(PICTURE.as_bytes()));
    let key = format!("twilio/{}/{sha256}", &sha256[..2]);
    assert_eq!(envelope["media"][0]["stored_url"], format!("s3://media/{key}").as_str());
    assert_eq!(envelope["media"][0]["sha256"], sha256.as_str());
    let object = s3.object("media", &key);
    assert_eq!(object.bytes, PICTURE.as_bytes());
    assert_eq!(object.content_type.as_deref(), Some("image/png"));
    assert!(!service.state.config.data_dir.join("media").exists(), "nothing written to disk");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_is_away_leaves_the_media_as_named_and_the_webhook_answered_in_time() {
    let twilio = FakeTwilio::start().await;
    twilio.script([png(PICTURE)]);
    let mut harness = harness(&twilio, true);
    // Nothing listens there: every store is refused.
    in_bucket(&mut harness, &format!("http://{}", harness::free_addr()));
    let _counting = COUNTING.lock().await;
    let service = harness.start().await;
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    let not_stored = r#"connector_events_total{connector="twilio",event="media-not-stored"}"#;
    let before = harness::metric(&metrics, not_stored);

    let started = std::time::Instant::now();
    assert_eq!(post_mms(&service, &[format!("{}{}", twilio.base_url(), media_path(1))]).await, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "answered in {:?}", started.elapsed());
    let envelope = &wait_for_messages(&service, "ingress.twilio.messaging", 1).await[0];
    assert!(envelope["media"][0]["stored_url"].is_null(), "{envelope}");
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    assert_eq!(harness::metric(&metrics, not_stored) - before, 1.0, "{metrics}");
    assert!(!metrics.contains(BUCKET_SECRET));
    service.stop().await.unwrap();
}
