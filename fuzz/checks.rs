//! What each fuzz target checks, one function per parser that sees outside
//! bytes. The fuzz targets call these; `tests/fuzz_regressions.rs` replays
//! every saved input through them on stable Rust, so a crash once found
//! stays a test.
//!
//! Each function must not panic on any input; where a property is cheap to
//! state (a correct signature verifies, a changed one does not), it asserts it.

use std::path::Path;

use ingress_egress::config::{self, Env, Secrets};
use twilio_connector::egress::message::classify_response;
use twilio_connector::ingress::envelope::{self, Context, Param, Params};
use twilio_connector::ingress::event_streams::{self, Kind};
use twilio_connector::ingress::signature::{self, SignedContent};
use twilio_connector::ingress::signature_settings;
use twilio_connector::shared::rest::{TransportFailure, classify_transport, redact_credentials};
use twilio_connector::shared::webhook_keys;

/// One target's check: panics when the input breaks the parser or a property.
pub type Check = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/regressions/<name>/` call them.
pub const TARGETS: &[(&str, Check)] = &[
    ("signature", signature),
    ("signature_settings", signature_settings),
    ("event_batch", event_batch),
    ("webhook_envelope", webhook_envelope),
    ("conversations_json", conversations_json),
    ("rest_response", rest_response),
    ("architecture", architecture),
    ("env_file", env_file),
];

const AUTH_TOKEN: &[u8] = b"fedcba9876543210fedcba9876543210";
/// Secret values the configuration is given; no error may quote them.
const SENTINELS: [&str; 2] = ["sentinel-fuzz-secret-a1", "sentinel-fuzz-secret-b2"];

/// Up to `n` parts of `data` split at NUL bytes, as text.
fn parts(data: &[u8], n: usize) -> Vec<String> {
    let mut parts: Vec<String> = data.splitn(n, |&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    parts.resize(n, String::new());
    parts
}

/// A form read as the connector reads one: values borrowed where no
/// escape needed decoding.
fn form(text: &str) -> Vec<Param<'_>> {
    form_urlencoded::parse(text.as_bytes()).collect()
}

/// Any URL, form and signature header: verification answers, never panics;
/// the signature Twilio would compute verifies, and a changed one does not.
pub fn signature(data: &[u8]) {
    let [url, body, header] = <[String; 3]>::try_from(parts(data, 3)).expect("three parts");
    let params = form(&body);
    let _ = signature::validate(AUTH_TOKEN, &url, SignedContent::Form(&params), Some(&header));
    let _ = signature::validate(AUTH_TOKEN, &url, SignedContent::Raw(body.as_bytes()), Some(&header));
    let _ = signature::query_param(&url, "bodySHA256");
    let correct = signature::compute(AUTH_TOKEN, &url, &params);
    assert!(signature::validate(AUTH_TOKEN, &url, SignedContent::Form(&params), Some(&correct)).is_ok());
    let mut changed = correct.into_bytes();
    changed[0] = if changed[0] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("base64 is ASCII");
    assert!(signature::validate(AUTH_TOKEN, &url, SignedContent::Form(&params), Some(&changed)).is_err());
}

/// Any settings header, key list, URL and form: parsing answers, never
/// panics; a key named by the settings signs what then verifies with it,
/// and not under the other algorithm; a parsed key list written back as
/// `id=secret` entries parses to the same keys.
pub fn signature_settings(data: &[u8]) {
    let [header, keys, url, body] = <[String; 4]>::try_from(parts(data, 4)).expect("four parts");
    let params = form(&body);
    if let Ok(Some(settings)) = signature_settings::parse(Some(&header)) {
        let key = settings.key_id.as_bytes();
        let correct = signature::compute_with(settings.algorithm, key, &url, &params);
        let content = SignedContent::Form(&params);
        assert!(signature::validate_with(settings.algorithm, key, &url, content, Some(&correct)).is_ok());
        let other = match settings.algorithm {
            signature::Algorithm::HmacSha1 => signature::Algorithm::HmacSha256,
            signature::Algorithm::HmacSha256 => signature::Algorithm::HmacSha1,
        };
        assert!(signature::validate_with(other, key, &url, content, Some(&correct)).is_err());
    }
    if let Ok(parsed) = webhook_keys::parse(&keys) {
        let written: Vec<String> = parsed.iter().map(|key| format!("{}={}", key.id, key.secret)).collect();
        assert_eq!(webhook_keys::parse(&written.join(",")).expect("written back"), parsed);
    }
}

fn context() -> Context {
    Context { id: "00000000-0000-4000-8000-000000000000".into(), received_at: "2026-01-01T00:00:00.000Z".into() }
}

/// Any form body, as each webhook route reads it: an envelope or an error,
/// never a panic; an envelope keeps every parameter as an attribute.
pub fn webhook_envelope(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let params = form(&text);
    if let Ok(envelope) = envelope::inbound_message(Params(&params), &context()) {
        assert_eq!(envelope.attributes.len(), params.len());
    }
    if let Ok(event) = envelope::status_callback(Params(&params), Some("id".into()), "now".into()) {
        assert!(envelope::status_dedup_key(&event).is_some());
    }
    let _ = envelope::conversation_event(Params(&params), &context(), &envelope::media_content_base(None, None));
}

/// Any Event Streams body: events, never a panic; each event's raw form is
/// JSON (it is published as such when rejected); a status event carries one
/// `MessageStatus`; every published kind goes through its webhook twin's
/// builder without a panic.
pub fn event_batch(data: &[u8]) {
    let events = event_streams::read_batch(data);
    for event in &events {
        assert!(serde_json::from_str::<serde_json::Value>(&event.raw).is_ok(), "raw is JSON: {}", event.raw);
        let params = Params(&event.params);
        match &event.kind {
            Kind::Status => {
                assert_eq!(event.params.iter().filter(|(name, _)| name == "MessageStatus").count(), 1);
                let _ = envelope::status_callback(params, None, "now".into());
            }
            Kind::Inbound => drop(envelope::inbound_message(params, &context())),
            Kind::ConversationMessage => {
                let _ = envelope::conversation_event(params, &context(), &envelope::media_content_base(None, None));
            }
            Kind::Other | Kind::Malformed(_) => assert!(event.params.is_empty()),
        }
    }
    if let Some(account) = event_streams::batch_account(&events) {
        assert!(events.iter().any(|event| event.account.as_deref() == Some(account)));
    }
}

/// Any `Media` and `Attributes` JSON in an otherwise valid `onMessageAdded`.
pub fn conversations_json(data: &[u8]) {
    let [media, attributes] = <[String; 2]>::try_from(parts(data, 2)).expect("two parts");
    let mut params: Vec<Param<'_>> = [
        ("EventType", "onMessageAdded"),
        ("MessageSid", "IM00000000000000000000000000000001"),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("ConversationSid", "CH00000000000000000000000000000001"),
        ("ChatServiceSid", "IS00000000000000000000000000000001"),
        ("Body", "hi"),
    ]
    .iter()
    .map(|&(k, v)| (k.into(), v.into()))
    .collect();
    params.push(("Media".into(), media.into()));
    params.push(("Attributes".into(), attributes.into()));
    let _ = envelope::conversation_event(Params(&params), &context(), &envelope::media_content_base(None, None));
}

/// Any status, `Retry-After` and body from Twilio's REST API: an outcome,
/// never a panic, and never the request's credentials in it.
pub fn rest_response(data: &[u8]) {
    let (status, rest) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 1000, rest),
        _ => (200, data),
    };
    let [retry_after, body] = <[String; 2]>::try_from(parts(rest, 2)).expect("two parts");
    let credentials = ("SK00000000000000000000000000000002".to_owned(), SENTINELS[0].to_owned());
    let echoed = format!("{body}{}", SENTINELS[0]);
    for body in [body.as_bytes(), echoed.as_bytes()] {
        let answer = classify_response(status, Some(&retry_after), body);
        if let Err(error) = answer {
            let error = redact_credentials(error, &credentials);
            assert!(!format!("{error:?}").contains(SENTINELS[0]), "a credential survived redaction");
        }
    }
    let _ = classify_transport(TransportFailure::AfterSending, body);
}

/// Any architecture.yaml: a configuration or a clear error, never a panic,
/// and no error quotes a secret's value.
pub fn architecture(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut env = Env::default();
    env.set("TWILIO_AUTH_TOKEN", SENTINELS[0]).set("ADMIN_TOKEN", SENTINELS[1]).set("SECRETS_DIR", "/nonexistent");
    if let Err(error) = config::load_text(&text, Path::new("/fuzz/architecture.yaml"), &env, Secrets::Required) {
        let message = format!("{error:#}");
        for sentinel in SENTINELS {
            assert!(!message.contains(sentinel), "an error quotes a secret: {message}");
        }
    }
}

/// Any env file: variables or an error that never quotes a value.
pub fn env_file(data: &[u8]) {
    let with_secret = [data, b"\nSECRET=\"", SENTINELS[0].as_bytes()].concat();
    for input in [data, with_secret.as_slice()] {
        if let Err(error) = Env::from_dotenv(input) {
            assert!(!error.contains(SENTINELS[0]), "an env file error quotes a value: {error}");
        }
    }
}
