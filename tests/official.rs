//! Checked against Twilio's own code: webhooks signed by twilio-python's
//! `RequestValidator` over randomized parameters are accepted, and the
//! webhooks `simulate` signs validate with it.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{ACCOUNT_SID, AUTH_TOKEN, Harness, Signature, messages, post_webhook};
use serde_json::json;

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] =
            &["a", "Z", "0", " ", "&", "=", "+", "%", "?", "/", "é", "ж", "😀", "\n", "'", "\"", "<", "€", "[", "~"];
        (0..self.next() % 24).map(|_| self.pick(PIECES)).collect()
    }
}

#[tokio::test]
async fn webhooks_signed_by_twilio_python_are_accepted() {
    let harness = Harness::new();
    let service = harness.start().await;
    let url = format!("http://{}/twilio/messaging", service.public_addr);
    let mut random = XorShift(0x5eed_1234_abcd_0001);
    let extra_names =
        ["FromCity", "ToZip", "ProfileName", "WaId", "ReferralNumMedia", "OptOutType", "Forwarded", "ButtonText"];
    let cases: Vec<Vec<(String, String)>> = (0..150)
        .map(|i| {
            let mut params = vec![
                ("MessageSid".to_owned(), format!("SM{i:032x}")),
                ("AccountSid".to_owned(), ACCOUNT_SID.to_owned()),
                ("From".to_owned(), "+14155550100".to_owned()),
                ("To".to_owned(), "+15005550006".to_owned()),
                ("Body".to_owned(), random.text()),
            ];
            for name in extra_names {
                if random.next().is_multiple_of(2) {
                    params.push((name.to_owned(), random.text()));
                }
            }
            // A parameter Twilio may add tomorrow.
            params.push((format!("New{}", random.next() % 1000), random.text()));
            params
        })
        .collect();
    let request = json!({
        "token": AUTH_TOKEN,
        "sign": cases.iter().map(|params| json!({"url": url, "params": params})).collect::<Vec<_>>(),
        "validate": [],
    });
    let signatures = harness::official::run(&request)["signatures"].as_array().unwrap().clone();
    for (params, signature) in cases.iter().zip(signatures) {
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body) = post_webhook(
            service.public_addr,
            "/twilio/messaging",
            &borrowed,
            Signature::Given(signature.as_str().unwrap()),
        )
        .await;
        assert_eq!(status, 200, "{params:?}: {body}");
    }
    let stored = messages(&service, "ingress.twilio.messaging").await;
    assert_eq!(stored.len(), cases.len());
    // Bodies arrive intact, however they were encoded.
    assert_eq!(stored[7]["body"], cases[7][4].1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn webhooks_signed_by_simulate_validate_with_twilio_python() {
    let harness = Harness::new();
    let connector = harness.load_twilio().await;
    let base = "https://hooks.example.com:8443/base";
    let mut cases = Vec::new();
    for kind in ["sms", "status", "conversation"] {
        let options = vec![
            ("body".to_owned(), "Grüße & ünïcödé 😀".to_owned()),
            ("media-url".to_owned(), "https://e.com/a.png".to_owned()),
        ];
        let simulated = connector.simulate_webhook(kind, &options, base).await.unwrap();
        let params: Vec<(String, String)> = form_urlencoded::parse(&simulated.body).into_owned().collect();
        let signature = simulated.headers.iter().find(|(k, _)| k == "x-twilio-signature").unwrap().1.clone();
        cases.push(
            json!({"url": format!("{base}{}", simulated.path_with_query), "params": params, "signature": signature}),
        );
    }
    let answer = harness::official::run(&json!({"token": AUTH_TOKEN, "sign": [], "validate": cases}));
    assert_eq!(answer["valid"], json!([true, true, true]));
}

/// Shared-key signatures (Twilio's Webhooks configuration API), signed by
/// the official `twilio` npm package: both keys of a rotation verify, a
/// request naming a key is never checked with the Auth Token, an unknown key
/// or algorithm is refused, and a configured account's keys verify only its
/// own webhooks.
#[tokio::test]
async fn shared_key_signatures_signed_by_twilio_node() {
    const OLD: (&str, &str) = ("webhooks_sharedkey_old", "old-secret-0123456789abcdef");
    const NEW: (&str, &str) = ("webhooks_sharedkey_new", "bmV3LXNlY3JldA==");
    const OTHER_SID: &str = "AC00000000000000000000000000000abc";
    const OTHER_KEY: (&str, &str) = ("webhooks_sharedkey_other", "other-secret");
    let mut harness = Harness::new();
    harness.env.set("TWILIO_WEBHOOK_SHARED_KEYS", format!("{}={}\n{}={}", OLD.0, OLD.1, NEW.0, NEW.1));
    let other_keys = format!("{}={}", OTHER_KEY.0, OTHER_KEY.1);
    harness.add_account(
        OTHER_SID,
        &[("TWILIO_AUTH_TOKEN", "0123456789abcdef0123456789abcdef"), ("TWILIO_WEBHOOK_SHARED_KEYS", &other_keys)],
    );
    let service = harness.start().await;
    let url = format!("http://{}/twilio/messaging", service.public_addr);
    let settings = |key: &str, algorithm: &str| format!("key={key},algorithm={algorithm}");
    let send = |sid: String, account: &'static str, signature: String, settings: Option<String>| {
        let addr = service.public_addr;
        async move {
            let params = [
                ("MessageSid", sid.as_str()),
                ("AccountSid", account),
                ("From", "+14155550100"),
                ("To", "+15005550006"),
                ("Body", "hi"),
            ];
            let mut headers =
                vec![("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", signature.as_str())];
            if let Some(value) = &settings {
                headers.push(("x-twilio-webhooks-signature-settings", value.as_str()));
            }
            harness::post(addr, "/twilio/messaging", &headers, harness::form(&params)).await.0
        }
    };
    let params_of = |sid: &str, account: &str| -> Vec<(String, String)> {
        harness::pairs(&[
            ("MessageSid", sid),
            ("AccountSid", account),
            ("From", "+14155550100"),
            ("To", "+15005550006"),
            ("Body", "hi"),
        ])
    };
    let node_sign = |secret: &str, algorithm: &str, sid: &str, account: &str| {
        let params = params_of(sid, account);
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        harness::official::node_sign(secret, algorithm, &url, &borrowed)
    };
    let sid = |n: u32| format!("SM{n:032x}");
    // Both keys of a rotation verify, each only under its own id.
    for (n, key) in [(1, NEW), (2, OLD)] {
        let signature = node_sign(key.1, "HMAC_SHA256", &sid(n), ACCOUNT_SID);
        assert_eq!(send(sid(n), ACCOUNT_SID, signature, Some(settings(key.0, "HMAC_SHA256"))).await, 200, "{}", key.0);
    }
    let signed_with_old = node_sign(OLD.1, "HMAC_SHA256", &sid(3), ACCOUNT_SID);
    assert_eq!(send(sid(3), ACCOUNT_SID, signed_with_old, Some(settings(NEW.0, "HMAC_SHA256"))).await, 403);
    // No downgrade: a valid Auth Token signature under a settings header is refused.
    let auth_token_signature = node_sign(AUTH_TOKEN, "HMAC_SHA1", &sid(4), ACCOUNT_SID);
    assert_eq!(
        send(sid(4), ACCOUNT_SID, auth_token_signature.clone(), Some(settings(NEW.0, "HMAC_SHA256"))).await,
        403
    );
    assert_eq!(send(sid(4), ACCOUNT_SID, auth_token_signature.clone(), Some(settings(NEW.0, "HMAC_SHA1"))).await, 403);
    // Unknown key ids and algorithms are refused; no header is today's path.
    let signature = node_sign(NEW.1, "HMAC_SHA256", &sid(5), ACCOUNT_SID);
    assert_eq!(
        send(sid(5), ACCOUNT_SID, signature.clone(), Some(settings("webhooks_sharedkey_gone", "HMAC_SHA256"))).await,
        403
    );
    assert_eq!(send(sid(5), ACCOUNT_SID, signature.clone(), Some(settings(NEW.0, "HMAC_SHA512"))).await, 403);
    assert_eq!(send(sid(5), ACCOUNT_SID, signature, Some("algorithm=HMAC_SHA256".to_owned())).await, 403);
    assert_eq!(send(sid(4), ACCOUNT_SID, auth_token_signature, None).await, 200);
    // A configured account's key verifies its webhooks, and not the default account's; nor theirs its.
    let other = node_sign(OTHER_KEY.1, "HMAC_SHA256", &sid(6), OTHER_SID);
    assert_eq!(send(sid(6), OTHER_SID, other, Some(settings(OTHER_KEY.0, "HMAC_SHA256"))).await, 200);
    let crossed = node_sign(OTHER_KEY.1, "HMAC_SHA256", &sid(7), ACCOUNT_SID);
    assert_eq!(send(sid(7), ACCOUNT_SID, crossed, Some(settings(OTHER_KEY.0, "HMAC_SHA256"))).await, 403);
    let crossed = node_sign(NEW.1, "HMAC_SHA256", &sid(8), OTHER_SID);
    assert_eq!(send(sid(8), OTHER_SID, crossed, Some(settings(NEW.0, "HMAC_SHA256"))).await, 403);

    let published: Vec<String> = messages(&service, "ingress.twilio.messaging")
        .await
        .iter()
        .map(|m| m["provider_message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published, [sid(1), sid(2), sid(4), sid(6)]);
    let metrics = harness::admin_get(&service, "/metrics").await.1;
    let verified =
        harness::metric(&metrics, "connector_events_total{connector=\"twilio\",event=\"signature-shared-key\"}");
    assert_eq!(verified, 3.0);
    service.stop().await.unwrap();
}
