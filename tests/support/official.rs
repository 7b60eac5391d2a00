//! Twilio's own Python library, driven by the tests: `RequestValidator`
//! signs and validates webhooks exactly as Twilio does.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Runs `official/twilio_signatures.py` on `request` (see that file for the
/// shape of the request and of the answer).
pub fn run(request: &Value) -> Value {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/official/.venv/bin/python");
    assert!(std::path::Path::new(python).exists(), "twilio-python is not installed: run scripts/setup --test");
    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/official/twilio_signatures.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("request written");
    let output = child.wait_with_output().expect("python ends");
    assert!(output.status.success(), "twilio_signatures.py failed");
    serde_json::from_slice(&output.stdout).expect("JSON from twilio_signatures.py")
}

/// X-Twilio-Signature for a form webhook to `url`, computed by twilio-python
/// with Auth Token `token`.
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let answer = run(&json!({"token": token, "sign": [{"url": url, "params": params}], "validate": []}));
    answer["signatures"][0].as_str().expect("a signature").to_owned()
}
