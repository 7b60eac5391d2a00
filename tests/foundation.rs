//! The foundation: the real component loads in the real host, describes
//! itself, gets exactly the secrets it is granted, and imports nothing it
//! should not have.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use harness::{ACCOUNT_SID, API_KEY, API_SECRET, CHAT_SERVICE_SID, Harness, fixture, post};
use ingress_egress::runtime::CallFailure;
use ingress_egress::runtime::bindings::{TokenError, TokenRequest};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// Everything the host logs in this test binary.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ =
            tracing_subscriber::fmt().with_env_filter("info").with_writer(move || LogWriter(sink.clone())).try_init();
        logs
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn twilio_bytes() -> &'static [u8] {
    ingress_egress::bundled::get("twilio").expect("the twilio component is bundled")
}

async fn load_twilio(harness: &Harness) -> ingress_egress::runtime::Connector {
    harness.load_twilio().await
}

#[tokio::test]
async fn the_component_reports_its_name_and_version() {
    let connector = load_twilio(&Harness::new()).await;
    assert_eq!(connector.name(), "twilio");
    assert_eq!(connector.version(), "0.1.0");
    assert_eq!(connector.content_hash().len(), 64);
    let described = connector.describe().await.unwrap();
    assert_eq!((described.name.as_str(), described.version.as_str()), ("twilio", "0.1.0"));
}

#[tokio::test]
async fn a_granted_secret_reaches_the_component() {
    let connector = load_twilio(&Harness::new()).await;
    let token = connector
        .issue_token(&TokenRequest { identity: Some("alice".into()), ttl_seconds: Some(600), account: None })
        .await
        .unwrap();
    // Signed with TWILIO_API_SECRET: the secret made it into the sandbox.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "nbf"]);
    let data = jsonwebtoken::decode::<Value>(&token.jwt, &DecodingKey::from_secret(API_SECRET.as_bytes()), &validation)
        .expect("verifies with the API secret");
    assert_eq!(data.header.cty.as_deref(), Some("twilio-fpa;v=1"));
    assert_eq!(data.claims["iss"], API_KEY);
    assert_eq!(data.claims["sub"], ACCOUNT_SID);
    assert_eq!(data.claims["grants"], json!({"identity": "alice", "chat": {"service_sid": CHAT_SERVICE_SID}}));
    let nbf = data.claims["nbf"].as_u64().unwrap();
    assert_eq!(data.claims["exp"].as_u64().unwrap(), nbf + 600);
    assert_eq!(data.claims["jti"], format!("{API_KEY}-{nbf}"));
    assert_eq!(token.identity, "alice");
}

#[tokio::test]
async fn a_secret_not_granted_never_reaches_the_component() {
    let logs = captured_logs();
    let mut harness = Harness::new();
    harness.edit_architecture(|text| {
        // Not declared, and so not a value an account's folder may hold either.
        let kept: Vec<String> = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("TWILIO_API_SECRET:"))
            .map(|line| line.replace(" TWILIO_API_SECRET,", ""))
            .collect();
        kept.join("\n") + "\n"
    });
    // The value is in the environment, but architecture.yaml does not grant it.
    assert!(harness.env.get("TWILIO_API_SECRET").is_some());
    let connector = load_twilio(&harness).await;
    let answer =
        connector.issue_token(&TokenRequest { identity: Some("alice".into()), ttl_seconds: None, account: None }).await;
    match answer {
        Err(CallFailure::Refused(TokenError::NotConfigured(reason))) => {
            assert!(reason.contains("TWILIO_API_SECRET"), "{reason}");
            assert!(reason.contains("not granted"), "{reason}");
            assert!(!reason.contains(API_SECRET));
        }
        other => panic!("expected not-configured, got {other:?}"),
    }
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("not granted") && logged.contains("TWILIO_API_SECRET"), "{logged}");
    assert!(!logged.contains(API_SECRET));
}

#[tokio::test]
async fn the_probe_sees_no_environment_arguments_or_directories() {
    let mut harness = Harness::new();
    harness.with_probe("probe", &[]);
    let service = harness.start().await;
    let (status, body) = post(service.public_addr, "/probe/env", &[], Vec::new()).await;
    assert_eq!((status, body.as_str()), (200, "vars=0 args=0 root=false cwd=false"));
    let (_, body) = post(service.public_addr, "/probe/secret?name=PROBE_KEY", &[], Vec::new()).await;
    assert_eq!(body, "granted");
    // Twilio's secrets are Twilio's: the probe is not granted them.
    for name in ["TWILIO_AUTH_TOKEN", "TWILIO_API_SECRET"] {
        let (_, body) = post(service.public_addr, &format!("/probe/secret?name={name}"), &[], Vec::new()).await;
        assert_eq!(body, "not-granted", "{name}");
    }
    service.stop().await.unwrap();
}

/// The component's imports, as `wasm-tools component wit` lists them.
fn imports_of(bytes: &[u8]) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
    component.component_type().imports(&engine).map(|(name, _)| name.to_owned()).collect()
}

#[test]
fn the_component_imports_no_filesystem_and_no_sockets() {
    let imports = imports_of(twilio_bytes());
    assert!(imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@")), "{imports:?}");
    assert!(imports.iter().any(|i| i.starts_with("platform:connector/secrets@")), "{imports:?}");
    let forbidden: Vec<_> =
        imports.iter().filter(|i| i.starts_with("wasi:filesystem/") || i.starts_with("wasi:sockets/")).collect();
    assert!(forbidden.is_empty(), "forbidden imports: {forbidden:?}");
}

#[test]
fn the_import_check_catches_a_filesystem_import() {
    // The probe touches std::fs, so it imports wasi:filesystem: the check above would fail on it.
    let probe = std::fs::read(fixture("probe")).unwrap();
    let imports = imports_of(&probe);
    assert!(imports.iter().any(|i| i.starts_with("wasi:filesystem/")), "{imports:?}");
}

/// Runs the real command line with only `vars` in its environment.
fn cli(harness: &Harness, args: &[&str], vars: &[&str]) -> std::process::Output {
    harness.command(args, Some(vars)).output().unwrap()
}

/// Usage needs nothing: every command's `--help`, the connector's own
/// commands too (found in architecture.yaml), with an empty environment.
#[test]
fn every_help_prints_its_usage_with_an_empty_environment() {
    let harness = Harness::new();
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["check"],
        &["token"],
        &["send"],
        &["tail"],
        &["simulate"],
        &["reload"],
        &["cancel"],
        &["redrive"],
        &["health"],
        &["twilio"],
        &["twilio", "wire"],
        &["twilio", "status"],
    ];
    for command in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let output = cli(&harness, &args, &[]);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(stdout.contains("Usage:") && stderr.is_empty(), "{args:?}: {stdout}{stderr}");
    }
    let output = cli(&harness, &["twilio", "status", "--help"], &[]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("--event-streams"));
    let output = cli(&harness, &["twillio", "wire", "--help"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("no command or connector named \"twillio\""), "{stderr}");
}

#[test]
fn check_names_two_missing_secrets_and_a_malformed_sid_and_fails() {
    let mut harness = Harness::new();
    harness.env.set("TWILIO_ACCOUNT_SID", "AC-this-is-not-a-sid");
    let output = cli(&harness, &["check"], &["TWILIO_ACCOUNT_SID", "TWILIO_API_KEY", "TWILIO_API_SECRET", "DATA_DIR"]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("TWILIO_ACCOUNT_SID: malformed"), "{stdout}");
    assert!(stdout.contains("TWILIO_AUTH_TOKEN: missing"), "{stdout}");
    assert!(stdout.contains("TWILIO_CHAT_SERVICE_SID: missing"), "{stdout}");
    assert!(!stdout.contains("this-is-not-a-sid"));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("this-is-not-a-sid"));

    let all = ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_CHAT_SERVICE_SID", "DATA_DIR"];
    let mut good = Harness::new();
    assert!(cli(&good, &["check"], &all).status.success());
    good.edit_architecture(|text| text.replace("trust_forwarded_headers:", "trust_forwarded_header:"));
    let output = cli(&good, &["check"], &all);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("trust_forwarded_header"));
}

#[test]
fn the_token_command_prints_a_token_that_verifies() {
    let harness = Harness::new();
    let vars = [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_API_KEY",
        "TWILIO_API_SECRET",
        "TWILIO_CHAT_SERVICE_SID",
        "DATA_DIR",
    ];
    let output = cli(&harness, &["token", "--identity", "alice"], &vars);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let jwt = String::from_utf8(output.stdout).unwrap();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Value>(jwt.trim(), &DecodingKey::from_secret(API_SECRET.as_bytes()), &validation)
        .unwrap();
    assert_eq!(data.header.cty.as_deref(), Some("twilio-fpa;v=1"));
    assert_eq!(data.claims["grants"], json!({"identity": "alice", "chat": {"service_sid": CHAT_SERVICE_SID}}));
    assert_eq!(data.claims["exp"].as_u64().unwrap() - data.claims["nbf"].as_u64().unwrap(), 3600);

    let output = cli(&harness, &["token", "--identity", "alice", "--ttl", "86401"], &vars);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("86400"));
}
