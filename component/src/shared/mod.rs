//! What every flow uses: the host's settings and accounts, HTTP out of the
//! sandbox and Twilio's REST conventions, bodies, the clock, error classes,
//! segment counting, webhook shared keys, and the WhatsApp window (recorded by ingress, checked by
//! egress).

pub mod accounts;
pub mod body;
pub mod clock;
pub mod errors;
pub mod http;
pub mod rest;
pub mod segments;
pub mod settings;
pub mod webhook_keys;
pub mod whatsapp_window;

use crate::platform::connector::state::{self, StateError};

/// How a failure of the host's state store reads in a log line or a reason:
/// one wording for every module that keeps state (wit-bindgen's own `Display`
/// is its `Debug`).
pub(crate) fn state_error_text(error: StateError) -> String {
    match error {
        StateError::Unavailable(reason) => format!("the state store is unavailable: {reason}"),
        StateError::Conflict => "the state store reported a conflict".to_owned(),
    }
}

/// Writes `value` at `key` over whatever revision is there: for records
/// where the last writer is right (a time seen, an outcome settled).
pub(crate) fn state_overwrite(key: &str, value: &str) -> Result<(), String> {
    let revision = state::get(key).ok().flatten().map(|entry| entry.revision);
    state::put(key, value, revision).map(drop).map_err(state_error_text)
}
