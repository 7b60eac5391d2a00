//! Many Twilio accounts in one service: the default account, accounts from
//! the accounts directory, and subaccounts found through the default
//! (parent) account. Webhooks are signed by twilio-python; the Accounts API
//! and the Messages API are the fake Twilio's.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::time::Duration;

use base64::Engine as _;
use harness::fake_twilio::FakeTwilio;
use harness::{
    ACCOUNT_SID, API_KEY, API_SECRET, AUTH_TOKEN, Harness, admin_post, messages, metric, post, wait_for_messages,
};
use ingress_egress::server::admin::{ConnectorList, ConnectorView};
use ingress_egress::service::RunningService;

/// An account of the accounts directory, with its own token and sender.
const DIR_SID: &str = "AC00000000000000000000000000000d01";
const DIR_TOKEN: &str = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1";
const DIR_FROM: &str = "+15005550101";
/// A subaccount of the default account, known to the fake Accounts API only.
const SUB_SID: &str = "AC00000000000000000000000000000501";
const SUB_TOKEN: &str = "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b";
const MESSAGING_TOPIC: &str = "ingress.twilio.messaging";

/// A service with the three kinds of account, its REST calls going to `fake`.
async fn three_accounts(fake: &FakeTwilio) -> (Harness, RunningService) {
    fake.set_subaccount(SUB_SID, ACCOUNT_SID, Some(SUB_TOKEN));
    let mut harness = Harness::new();
    harness.with_twilio_at(&fake.base_url()).env.set("TWILIO_SUBACCOUNTS", "true");
    harness.add_account(DIR_SID, &[("TWILIO_AUTH_TOKEN", DIR_TOKEN), ("TWILIO_FROM_NUMBER", DIR_FROM)]);
    let service = harness.start().await;
    (harness, service)
}

/// Posts an inbound SMS claiming `account`, signed by twilio-python with `token`.
async fn inbound(service: &RunningService, account: &str, token: &str, sid: &str) -> (u16, String) {
    let path = "/twilio/messaging";
    let url = format!("http://{}{path}", service.public_addr);
    let params = [
        ("MessageSid", sid),
        ("AccountSid", account),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("Body", "hi"),
    ];
    let signature = harness::official::sign(token, &url, &params);
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", signature.as_str())];
    post(service.public_addr, path, &headers, harness::form(&params)).await
}

#[tokio::test]
async fn each_account_verifies_with_its_own_token_and_no_other() {
    let fake = FakeTwilio::start().await;
    let (_harness, service) = three_accounts(&fake).await;
    let accounts = [(ACCOUNT_SID, AUTH_TOKEN), (DIR_SID, DIR_TOKEN), (SUB_SID, SUB_TOKEN)];
    let mut accepted = Vec::new();
    for (i, (account, own_token)) in accounts.iter().enumerate() {
        for (j, (_, token)) in accounts.iter().enumerate() {
            let sid = format!("SM{i}{j:031x}");
            let (status, body) = inbound(&service, account, token, &sid).await;
            if token == own_token {
                assert_eq!(status, 200, "{account} signed with its own token: {body}");
                accepted.push((sid, *account));
            } else {
                assert_eq!(status, 403, "{account} signed with another account's token: {body}");
            }
        }
    }
    let envelopes = messages(&service, MESSAGING_TOPIC).await;
    assert_eq!(envelopes.len(), accepted.len(), "only what verified was published");
    for (sid, account) in accepted {
        let envelope = envelopes.iter().find(|e| e["provider_message_id"] == sid.as_str()).unwrap();
        assert_eq!(envelope["account_sid"], account);
    }
    assert_eq!(fake.account_fetches().len(), 1, "the subaccount was looked up once, then remembered");
    let fetch = &fake.account_fetches()[0];
    assert_eq!(fetch.path, format!("/2010-04-01/Accounts/{SUB_SID}.json"));
    assert_eq!(fetch.header("authorization"), Some(basic(API_KEY, API_SECRET).as_str()), "the parent's credentials");
}

#[tokio::test]
async fn an_unknown_account_is_refused_and_publishes_nothing() {
    let fake = FakeTwilio::start().await;
    let (harness, service) = three_accounts(&fake).await;
    let stranger = "AC00000000000000000000000000000bad";
    // Signed with the default token: a claim of another account never verifies with it.
    let (status, _) = inbound(&service, stranger, AUTH_TOKEN, "SM00000000000000000000000000000bad").await;
    assert_eq!(status, 403);
    assert!(messages(&service, MESSAGING_TOPIC).await.is_empty());
    // Without subaccounts, an unknown account costs no lookup at all.
    drop(service);
    let mut harness = harness;
    harness.env.set("TWILIO_SUBACCOUNTS", "false");
    let service = harness.start().await;
    let before = fake.account_fetches().len();
    let (status, _) = inbound(&service, SUB_SID, SUB_TOKEN, "SM00000000000000000000000000000b0b").await;
    assert_eq!(status, 403, "a subaccount is not served unless TWILIO_SUBACCOUNTS is true");
    assert_eq!(fake.account_fetches().len(), before);
}

#[tokio::test]
async fn a_flood_of_forged_account_sids_is_refused_with_bounded_lookups() {
    let fake = FakeTwilio::start().await;
    let (_harness, service) = three_accounts(&fake).await;
    let url = format!("http://{}/twilio/messaging", service.public_addr);
    let forged: Vec<String> = (0..300).map(|i| format!("AC{:032x}", 0xf000_0000_u64 + i)).collect();
    // Any signature will do: the account must be known before one can be checked.
    let signature = harness::official::sign(AUTH_TOKEN, &url, &[]);
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for chunk in forged.chunks(30) {
        let mut posts = tokio::task::JoinSet::new();
        for account in chunk {
            let params = [("MessageSid", "SM00000000000000000000000000000f0f"), ("AccountSid", account.as_str())];
            let body = harness::form(&params);
            let (addr, signature) = (service.public_addr, signature.clone());
            posts.spawn(async move {
                let headers =
                    [("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", signature.as_str())];
                post(addr, "/twilio/messaging", &headers, body).await.0
            });
        }
        statuses.extend(posts.join_all().await);
    }
    assert!(statuses.iter().all(|status| *status == 403), "{statuses:?}");
    let lookups = fake.account_fetches().len();
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    // architecture.yaml: a burst of 10, then 2 a second.
    assert!(lookups <= 10 + 2 * seconds, "{lookups} lookups in {seconds}s for 300 forged sids");
    assert!(lookups >= 1, "lookups were made");
    assert!(messages(&service, MESSAGING_TOPIC).await.is_empty());
    // A forged sid looked up once is remembered as unknown: no second lookup.
    let looked_up = fake.account_fetches()[0].path.clone();
    let sid = looked_up.trim_start_matches("/2010-04-01/Accounts/").trim_end_matches(".json").to_owned();
    let (status, _) = inbound(&service, &sid, AUTH_TOKEN, "SM00000000000000000000000000000f1f").await;
    assert_eq!(status, 403);
    assert_eq!(fake.account_fetches().iter().filter(|r| r.path == looked_up).count(), 1);
    let (_, text) = harness::admin_get(&service, "/metrics").await;
    assert!(metric(&text, "connector_cache_fetches_total{connector=\"twilio\",outcome=\"exhausted\"") > 0.0, "{text}");
}

/// Polls `probe` every 100 ms until it holds, at most `bound`.
async fn eventually<F: Future<Output = bool>>(bound: Duration, mut probe: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn accounts_added_changed_and_removed_take_effect_while_running() {
    let mut harness = Harness::new();
    let dir = harness.accounts_dir();
    let service = harness.start().await;
    let counter = std::sync::atomic::AtomicU32::new(0);
    let next_sid = || format!("SM{:032x}", counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let status_with = |token: &'static str| {
        let sid = next_sid();
        let service = &service;
        async move { inbound(service, DIR_SID, token, &sid).await.0 }
    };
    assert_eq!(status_with(DIR_TOKEN).await, 403, "not configured yet");
    harness.add_account(DIR_SID, &[("TWILIO_AUTH_TOKEN", DIR_TOKEN)]);
    assert!(eventually(Duration::from_secs(10), || async { status_with(DIR_TOKEN).await == 200 }).await, "added");
    // A malformed folder beside it is left out, named by path, and the others keep working.
    let broken = "AC00000000000000000000000000000d02";
    harness.add_account(broken, &[("TWILIO_AUTH_TOKEN", "not-a-token-at-all")]);
    let admin_shows_it = || async {
        let (_, text) = harness::admin_get(&service, "/admin/connectors").await;
        let listed: ConnectorList<ConnectorView> = serde_json::from_str(&text).unwrap();
        let sets = listed.connectors[0].credential_sets.clone().unwrap();
        let named = sets.problems.len() == 1 && sets.problems[0].contains(&format!("{broken}/TWILIO_AUTH_TOKEN"));
        sets.loaded == 1 && named && !text.contains("not-a-token-at-all")
    };
    assert!(eventually(Duration::from_secs(10), admin_shows_it).await, "the malformed folder is named, not quoted");
    assert_eq!(status_with(DIR_TOKEN).await, 200, "a malformed neighbour changes nothing");
    // Unchanged, the directory is not read again (reading it must not look like a change).
    let readings = || async {
        let (_, text) = harness::admin_get(&service, "/admin/connectors").await;
        let listed: ConnectorList<ConnectorView> = serde_json::from_str(&text).unwrap();
        listed.connectors[0].credential_sets.clone().unwrap().readings
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let settled = readings().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readings().await, settled, "the directory was read again while nothing changed");
    // The token rotated in place: the old one stops verifying.
    let rotated = "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2";
    harness.add_account(DIR_SID, &[("TWILIO_AUTH_TOKEN", rotated)]);
    assert!(eventually(Duration::from_secs(10), || async { status_with(rotated).await == 200 }).await, "changed");
    assert_eq!(status_with(DIR_TOKEN).await, 403);
    std::fs::remove_dir_all(dir.join(DIR_SID)).unwrap();
    assert!(eventually(Duration::from_secs(10), || async { status_with(rotated).await == 403 }).await, "removed");
}

#[tokio::test]
async fn check_lists_the_accounts_by_sid_and_names_a_malformed_folder_by_path() {
    let mut harness = Harness::new();
    harness.add_account(DIR_SID, &[("TWILIO_AUTH_TOKEN", DIR_TOKEN)]);
    let broken = "AC00000000000000000000000000000d02";
    harness.add_account(broken, &[("TWILIO_AUTH_TOKEN", "s3cret-but-malformed"), ("TWILIO_FROM_NUMBER", "+1")]);
    let output = harness.command(&["check"], None).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a malformed folder fails check: {stdout}");
    assert!(stdout.contains(DIR_SID), "{stdout}");
    assert!(stdout.contains(&format!("{broken}/TWILIO_AUTH_TOKEN: malformed")), "{stdout}");
    assert!(stdout.contains(&format!("{broken}/TWILIO_FROM_NUMBER: malformed")), "{stdout}");
    for secret in [DIR_TOKEN, "s3cret-but-malformed"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a value was printed");
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn egress_goes_out_as_each_account_with_its_path_credentials_and_sender() {
    let fake = FakeTwilio::start().await;
    let (_harness, service) = three_accounts(&fake).await;
    let send = |body: String| {
        let service = &service;
        async move { admin_post(service, "/v1/messages", &[("content-type", "application/json")], body.into_bytes()).await }
    };
    let default_sender = r#""from": "+15005550006""#;
    for (id, account, sender) in [
        ("as-default", None, default_sender.to_owned()),
        ("as-directory", Some(DIR_SID), String::new()),
        ("as-subaccount", Some(SUB_SID), r#""from": "+15005550201""#.to_owned()),
    ] {
        let account = account.map(|sid| format!(r#""account_sid": "{sid}","#)).unwrap_or_default();
        let sender = if sender.is_empty() { String::new() } else { format!("{sender},") };
        let (status, answer) =
            send(format!(r#"{{"id": "{id}", {account} {sender} "to": "+14155550100", "body": "hi"}}"#)).await;
        assert_eq!(status, 202, "{id}: {answer}");
    }
    let events = wait_for_messages(&service, "events.twilio.status", 3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let posts = fake.posts();
    let post_for =
        |account: &str| posts.iter().find(|p| p.path == format!("/2010-04-01/Accounts/{account}/Messages.json"));
    let default = post_for(ACCOUNT_SID).expect("the default account's send");
    assert_eq!(default.header("authorization"), Some(basic(API_KEY, API_SECRET).as_str()));
    let directory = post_for(DIR_SID).expect("the directory account's send, on its own path");
    assert_eq!(directory.header("authorization"), Some(basic(DIR_SID, DIR_TOKEN).as_str()), "its own token");
    assert!(directory.form.contains(&("From".to_owned(), DIR_FROM.to_owned())), "its own default sender");
    let sub = post_for(SUB_SID).expect("the subaccount's send, on its own path");
    assert_eq!(sub.header("authorization"), Some(basic(API_KEY, API_SECRET).as_str()), "the parent's credentials");
    assert!(sub.form.contains(&("From".to_owned(), "+15005550201".to_owned())), "its own sender");
    assert!(default.form.contains(&("From".to_owned(), "+15005550006".to_owned())));

    let stranger = "AC00000000000000000000000000000bad";
    let (status, answer) =
        send(format!(r#"{{"account_sid": "{stranger}", "from": "+15005550006", "to": "+14155550100", "body": "hi"}}"#))
            .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains(stranger) && answer.contains("not one this service sends for"), "{answer}");
}

#[tokio::test]
async fn an_unknown_account_on_the_bus_is_dead_lettered_with_its_reason() {
    let fake = FakeTwilio::start().await;
    let (harness, service) = three_accounts(&fake).await;
    drop(harness);
    let stranger = "AC00000000000000000000000000000bad";
    let message = serde_json::json!({
        "id": "straight-on-the-bus", "account_sid": stranger, "from": "+15005550006", "to": "+14155550100", "body": "hi",
    });
    service
        .state
        .bus
        .publish("egress.twilio", Some("straight-on-the-bus"), message.to_string().into_bytes().into(), None)
        .await
        .unwrap();
    let dead = wait_for_messages(&service, "deadletter.twilio", 1).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains(stranger), "{reason}");
    assert!(fake.posts().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn tokens_are_signed_with_the_named_accounts_own_key() {
    let mut harness = Harness::new();
    let dir_key = "SK00000000000000000000000000000d01";
    harness.add_account(
        DIR_SID,
        &[("TWILIO_AUTH_TOKEN", DIR_TOKEN), ("TWILIO_API_KEY", dir_key), ("TWILIO_API_SECRET", "dir-api-secret")],
    );
    let service = harness.start().await;
    let ask = |body: &'static str| {
        admin_post(&service, "/v1/tokens", &[("content-type", "application/json")], body.as_bytes().to_vec())
    };
    let (status, answer) = ask(r#"{"identity": "alice", "account_sid": "AC00000000000000000000000000000d01"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let jwt = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["token"].as_str().unwrap().to_owned();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_secret(b"dir-api-secret"),
        &validation,
    )
    .expect("signed with the account's own API secret")
    .claims;
    assert_eq!((claims["sub"].as_str(), claims["iss"].as_str()), (Some(DIR_SID), Some(dir_key)));
    let (status, answer) = ask(r#"{"identity": "alice", "account_sid": "AC00000000000000000000000000000bad"}"#).await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn rate_keys_are_per_account() {
    let mut harness = Harness::new();
    harness.add_account(DIR_SID, &[("TWILIO_AUTH_TOKEN", DIR_TOKEN), ("TWILIO_FROM_NUMBER", DIR_FROM)]);
    let connector = harness.load_twilio().await;
    let mut message = harness::fixtures::egress_sms("rate-1");
    message.from = Some(DIR_FROM.into());
    let as_default = harness::answer(connector.check(&message).await).unwrap();
    message.account = Some(ACCOUNT_SID.into());
    let named_default = harness::answer(connector.check(&message).await).unwrap();
    message.account = Some(DIR_SID.into());
    let as_directory = harness::answer(connector.check(&message).await).unwrap();
    assert_eq!(as_default.rate_key, DIR_FROM);
    assert_eq!(named_default.rate_key, DIR_FROM, "the default account named or not: one pace");
    assert_eq!(as_directory.rate_key, format!("{DIR_SID}:{DIR_FROM}"), "another account's sender, another pace");
}
