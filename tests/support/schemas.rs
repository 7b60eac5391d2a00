//! The JSON Schemas under `schemas/`, the platform's contract for what the
//! service publishes and takes. Every message the harness reads from the bus
//! is checked against the schema of its topic.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

/// A schema under `schemas/`, compiled, with formats (`date-time`) checked.
fn compile(name: &str) -> Validator {
    let path = format!("{}/../schemas/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap_or_else(|e| panic!("{path}: {e}"))
}

static ENVELOPE: LazyLock<Validator> = LazyLock::new(|| compile("ingress-envelope"));
static STATUS: LazyLock<Validator> = LazyLock::new(|| compile("status-event"));
static EGRESS: LazyLock<Validator> = LazyLock::new(|| compile("egress-message"));
static DEAD_LETTER: LazyLock<Validator> = LazyLock::new(|| compile("dead-letter"));
static CONSENT: LazyLock<Validator> = LazyLock::new(|| compile("consent-event"));
static REJECTED: LazyLock<Validator> = LazyLock::new(|| compile("rejected-delivery"));

/// The schema of what `topic` carries, by the repository's topic names;
/// `None` for topics whose payloads are a connector's own (the probe's events).
pub fn for_topic(topic: &str) -> Option<&'static Validator> {
    let parts: Vec<&str> = topic.split('.').collect();
    match parts.as_slice() {
        ["ingress", "twilio", ..] => Some(&ENVELOPE),
        ["events", _, "status"] => Some(&STATUS),
        ["events", _, "consent"] => Some(&CONSENT),
        ["egress", _] => Some(&EGRESS),
        ["deadletter", _] => Some(&DEAD_LETTER),
        ["deadletter", _, "ingress"] => Some(&REJECTED),
        _ => None,
    }
}

/// Panics, naming each violation, when `message` breaks `topic`'s schema.
pub fn assert_valid(topic: &str, message: &Value) {
    let Some(validator) = for_topic(topic) else { return };
    let errors: Vec<String> =
        validator.iter_errors(message).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "a message on {topic} breaks its schema: {errors:?}\n{message}");
}
