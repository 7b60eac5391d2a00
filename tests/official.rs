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
