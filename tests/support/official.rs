//! Twilio's own libraries, driven by the tests: twilio-python's
//! `RequestValidator` signs and validates webhooks exactly as Twilio does,
//! and the `twilio` npm package (6.3+) signs with shared keys too.

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

/// Runs `official/twilio_signatures.js` (the `twilio` npm package) on
/// `request` (see that file for the shape of the request and the answer).
pub fn node(request: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/official/twilio_signatures.js");
    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/official/node_modules/twilio");
    assert!(
        std::path::Path::new(library).exists(),
        "the twilio npm package is not installed: run scripts/setup --test"
    );
    let mut child =
        Command::new("node").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("node starts");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("request written");
    let output = child.wait_with_output().expect("node ends");
    assert!(output.status.success(), "twilio_signatures.js failed");
    serde_json::from_slice(&output.stdout).expect("JSON from twilio_signatures.js")
}

/// X-Twilio-Signature for a form webhook to `url`, computed by the `twilio`
/// npm package with `secret` and `algorithm` (`HMAC_SHA1`, `HMAC_SHA256`).
pub fn node_sign(secret: &str, algorithm: &str, url: &str, params: &[(&str, &str)]) -> String {
    let answer = node(&json!({"sign": [{"secret": secret, "algorithm": algorithm, "url": url, "params": params}]}));
    answer["signed"][0]["signature"].as_str().expect("a signature").to_owned()
}

/// A JSON webhook to `url` signed by the `twilio` npm package: the URL with
/// its `bodySHA256`, and the signature.
pub fn node_sign_json(secret: &str, algorithm: &str, url: &str, body: &str) -> (String, String) {
    let answer = node(&json!({"sign": [{"secret": secret, "algorithm": algorithm, "url": url, "body": body}]}));
    let signed = &answer["signed"][0];
    (signed["url"].as_str().expect("a URL").to_owned(), signed["signature"].as_str().expect("a signature").to_owned())
}
