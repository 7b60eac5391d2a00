//! Secrets never leave: sentinel values for every secret, a service run at
//! trace level through forged and valid webhooks, sends Twilio refuses (one
//! whose error body echoes the request's credentials), tokens, failed admin
//! logins, reloads and every CLI command; then everything the outside can
//! see is searched for each sentinel, raw, base64'd as Basic credentials and
//! percent-encoded: logs, HTTP answers, metrics, CLI output, and every file
//! the service wrote (the bus, the spool).

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use harness::fake_twilio::{FakeTwilio, Reply};
use harness::{ACCOUNT_SID, API_KEY, Harness, Signature, get, post, post_webhook};

/// Hex, as the Auth Token's pattern requires, and found nowhere else.
const AUTH_TOKEN: &str = "5e471e1a0000c0ffee00000000d00d1e";
const API_SECRET: &str = "sentinel-api-secret-9f1c2e7b";
const ADMIN_TOKEN: &str = "sentinel-admin-token-4d8a0b3f";

/// Everything at trace level, but the compiler's own (millions of lines per
/// compile, about machine code, not data).
const TRACE: &str =
    "trace,cranelift_codegen=info,cranelift_frontend=info,wasmtime_internal_cranelift=info,wasmtime_environ=info";

/// Every form in which a secret could slip out.
fn forms() -> Vec<(String, String)> {
    let basic =
        |user: &str, password: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut forms = Vec::new();
    for (name, secret) in [("auth token", AUTH_TOKEN), ("API secret", API_SECRET), ("admin token", ADMIN_TOKEN)] {
        forms.push((name.to_owned(), secret.to_owned()));
        forms.push((format!("{name}, percent-encoded"), form_urlencoded::byte_serialize(secret.as_bytes()).collect()));
    }
    forms.push(("Basic API key:secret".to_owned(), basic(API_KEY, API_SECRET)));
    forms.push(("Basic account:auth token".to_owned(), basic(ACCOUNT_SID, AUTH_TOKEN)));
    forms
}

fn assert_clean(place: &str, text: &[u8]) {
    assert_free_of(place, text, &forms());
}

/// Panics, naming the line, when `text` holds any of `secrets` (form, value).
fn assert_free_of(place: &str, text: &[u8], secrets: &[(String, String)]) {
    let text = String::from_utf8_lossy(text);
    for (form, value) in secrets {
        // The line it is on says where it came from (the value itself is a test sentinel).
        let line = text.lines().find(|line| line.contains(value.as_str()));
        assert!(line.is_none(), "the {form} appears in {place}: {}", line.unwrap_or_default());
    }
}

fn sentinel_harness(fake: &FakeTwilio) -> Harness {
    let mut harness = Harness::new();
    harness
        .with_twilio_at(&fake.base_url())
        .set_setting("initial_backoff_ms", "20")
        .set_setting("max_attempts", "2")
        .env
        .set("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .set("TWILIO_API_SECRET", API_SECRET)
        .set("ADMIN_TOKEN", ADMIN_TOKEN)
        .set("TWILIO_WEBHOOK_BASE_URL", "http://hooks.example.com");
    harness
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_answers_metrics_cli_output_or_stored_files() {
    let fake = FakeTwilio::start().await;
    // Refusals, one of them echoing the request's Authorization header back
    // (a misbehaving proxy in front of Twilio would).
    let echo = format!(r#"{{"message": "denied for Basic {}", "code": 20003}}"#, forms()[6].1);
    fake.script([
        Reply::error(401, 20003, "Authenticate"),
        Reply::json(401, &echo),
        Reply::json(502, &format!("<html>bad gateway: Authorization: Basic {}</html>", forms()[6].1)),
        Reply::json(502, "<html>bad gateway</html>"),
    ]);
    let mut harness = sentinel_harness(&fake);
    let serve = TracedServe::start(&mut harness).await;
    let mut answers = exercise_http(serve.public, serve.admin).await;
    answers.extend(exercise_cli(&harness));
    // Let the sends and their retries finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = serve.stop();
    assert!(fake.received().len() >= 3, "the sends reached the fake: {}", fake.received().len());

    assert_clean("the service's logs", &logs);
    for (place, text) in &answers {
        assert_clean(place, text.as_bytes());
    }
    let stored = files_under(&harness.dir.path().join("data"));
    assert!(stored.iter().any(|(path, _)| path.ends_with("bus.sqlite3")), "{stored:?}");
    for (path, bytes) in &stored {
        assert_clean(&format!("the file {path}"), bytes);
    }
    // The dead letters say why, without the echoed credentials.
    let bus = stored.iter().map(|(_, bytes)| String::from_utf8_lossy(bytes)).collect::<String>();
    assert!(bus.contains("denied for Basic [redacted]"), "the echo's dead letter, redacted, is on the bus");
}

/// `serve` at trace level as a child process, its logs read as they come.
struct TracedServe {
    child: std::process::Child,
    pipes: Vec<std::thread::JoinHandle<Vec<u8>>>,
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl TracedServe {
    async fn start(harness: &mut Harness) -> Self {
        let (public, admin) = (harness::free_addr(), harness::free_addr());
        harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
        let mut serve = harness.command(&["--log-format", "json", "serve"], None);
        let mut child = serve.env("RUST_LOG", TRACE).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Read both pipes as they fill, or the service blocks writing its logs.
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let pipes = vec![drain(Box::new(child.stderr.take().unwrap())), drain(Box::new(child.stdout.take().unwrap()))];
        harness::wait_until_ready(public).await;
        Self { child, pipes, public, admin }
    }

    /// Stops the service (SIGTERM); everything it wrote.
    fn stop(mut self) -> Vec<u8> {
        std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(self.child.wait().unwrap().success());
        let logs: Vec<u8> = self.pipes.into_iter().flat_map(|pipe| pipe.join().unwrap()).collect();
        assert!(logs.len() > 10_000, "trace logs were written ({} bytes)", logs.len());
        logs
    }
}

/// Webhooks (forged and valid), sends, tokens, admin calls with wrong and
/// right tokens, metrics: every answer, labelled.
async fn exercise_http(public: std::net::SocketAddr, admin: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut answers = Vec::new();
    let params = harness::fixtures::minimal_sms("SM00000000000000000000000000000001", "hello");
    let params = harness::fixtures::borrowed(&params);
    let forged = post_webhook(public, "/twilio/messaging", &params, Signature::Given("Zm9yZ2Vk")).await;
    answers.push(("a forged webhook's answer".to_owned(), forged.1));
    let unsigned = post_webhook(public, "/twilio/messaging", &params, Signature::Missing).await;
    answers.push(("an unsigned webhook's answer".to_owned(), unsigned.1));
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let json = ("content-type", "application/json");
    let auth = ("authorization", bearer.as_str());
    let wrong = ("authorization", "Bearer sentinel-admin-token-4d8a0b3X");
    for (label, headers) in [("without a token", vec![json]), ("with a wrong token", vec![json, wrong])] {
        let (_, answer) = post(admin, "/v1/tokens", &headers, br#"{"identity":"eve"}"#.to_vec()).await;
        answers.push((format!("/v1/tokens {label}"), answer));
    }
    for i in 0..3 {
        let body = format!(r#"{{"id": "leak-{i}", "to": "+14155550100", "from": "+15005550006", "body": "x"}}"#);
        let (status, answer) = post(admin, "/v1/messages", &[json, auth], body.into_bytes()).await;
        assert_eq!(status, 202, "{answer}");
        answers.push(("/v1/messages".to_owned(), answer));
    }
    let (status, token) = post(admin, "/v1/tokens", &[json, auth], br#"{"identity":"alice"}"#.to_vec()).await;
    assert_eq!(status, 200, "{token}");
    answers.push(("/v1/tokens".to_owned(), token));
    let (_, reload) = post(admin, "/admin/reload", &[auth], Vec::new()).await;
    answers.push(("/admin/reload".to_owned(), reload));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/metrics", "/admin/connectors"] {
        let (status, answer) = harness::get_with(admin, path, &[auth]).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answers.push((path.to_owned(), answer));
    }
    answers.push(("/readyz".to_owned(), get(public, "/readyz").await.1));
    answers
}

/// Every CLI command, including ones that fail on a wrong secret; their output, labelled.
fn exercise_cli(harness: &Harness) -> Vec<(String, String)> {
    let env_file = harness.dir.path().join("bad.env");
    // A malformed secret: the error names it, never echoes its value.
    std::fs::write(&env_file, format!("TWILIO_API_KEY=not-a-key-{API_SECRET}\n")).unwrap();
    let env_path = env_file.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["--env-file", env_path, "check"],
        vec!["token", "--identity", "alice"],
        vec!["send", "--to", "+14155550100", "--from", "+15005550006", "--body", "cli"],
        vec!["tail", "--topic", "deadletter.twilio", "--from-start", "--idle-timeout", "1"],
        vec!["tail", "--topic", "events.twilio.status", "--from-start", "--idle-timeout", "1"],
        vec!["simulate", "sms"],
        vec!["reload"],
        vec!["cancel", "--sid", "SM0123456789abcdef0123456789abcdef"],
    ];
    let mut outputs = Vec::new();
    for args in commands {
        let mut vars: Vec<&str> = harness::SERVICE_VARS.to_vec();
        if args.contains(&"--env-file") {
            vars.retain(|v| *v != "TWILIO_API_KEY");
        }
        let output = harness.command(&args, Some(&vars)).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if args.contains(&"--env-file") {
            assert!(!output.status.success() && text.contains("TWILIO_API_KEY"), "the bad key is named: {text}");
        }
        outputs.push((format!("the output of `{}`", args.join(" ")), text));
    }
    // With a wrong admin token, reload fails and says so, without either token.
    let mut wrong = harness.command(&["reload"], None);
    let output = wrong.env("ADMIN_TOKEN", "sentinel-admin-token-4d8a0b3X").output().unwrap();
    assert!(!output.status.success());
    outputs.push(("`reload` with a wrong token".to_owned(), String::from_utf8_lossy(&output.stderr).into_owned()));
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_token_reaches_neither_logs_nor_output() {
    const NATS_TOKEN: &str = "sentinel-nats-token-6c0e";
    let server = harness::nats::NatsServer::start_with(&["--auth", NATS_TOKEN]);
    let mut harness = Harness::new();
    harness.env.set("BUS_URL", server.url()).set("NATS_TOKEN", NATS_TOKEN);
    let serve = TracedServe::start(&mut harness).await;
    assert_eq!(harness::signed_sms(serve.public, "SM000000000000000000000000000000c1").await, 200);
    let tail = ["tail", "--topic", "ingress.twilio.messaging", "--from-start", "--limit", "1", "--idle-timeout", "5"];
    let mut outputs = vec![harness.command(&tail, None).output().unwrap()];
    outputs.push(harness.command(&tail, None).env("NATS_TOKEN", "sentinel-nats-token-wrong").output().unwrap());
    let logs = serve.stop();
    let tokens = [
        ("NATS token".to_owned(), NATS_TOKEN.to_owned()),
        ("wrong NATS token".to_owned(), "sentinel-nats-token-wrong".to_owned()),
    ];
    let clean = |place: &str, text: &[u8]| assert_free_of(place, text, &tokens);
    clean("the service's logs", &logs);
    assert!(outputs[0].status.success() && !outputs[1].status.success());
    for output in &outputs {
        clean("tail's output", &[output.stdout.as_slice(), output.stderr.as_slice()].concat());
    }
}

/// Every regular file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}
