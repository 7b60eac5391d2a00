//! The latest status of each message, in the host's `state` store, so a
//! callback that would move a message backwards is recognised even when it
//! reaches another host. A conditional write settles two callbacks that
//! arrive at once: one wins, the other reads again and decides again.

use crate::ingress::status_order;
use crate::platform::connector::state::{self, StateError};

/// Attempts before giving up when other writers keep moving the key.
const ATTEMPTS: usize = 4;

/// What recording a status did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// It is the message's latest status now; the one before it, if known.
    Forward(Option<String>),
    /// The message is already further along: do not publish.
    Backward,
    /// Not subject to ordering (an unknown status, an unusual sid): publish.
    Unordered,
}

/// The stored value: `status|previous|at` (statuses and times have no `|`).
fn parse(value: &str) -> (String, Option<String>) {
    let mut parts = value.splitn(3, '|');
    let status = parts.next().unwrap_or_default().to_owned();
    let previous = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    (status, previous)
}

/// Records `status` (observed `at`) as message `sid`'s latest if it moves it
/// forward. An error says the store could not be asked: the webhook is
/// answered 503 and Twilio asks again.
pub fn record(sid: &str, status: &str, at: &str) -> Result<Recorded, String> {
    if !status_order::is_ordered(status) || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) || sid.len() > 64 {
        return Ok(Recorded::Unordered);
    }
    let key = format!("status.{sid}");
    for _ in 0..ATTEMPTS {
        let current = state::get(&key).map_err(crate::shared::state_error_text)?;
        let (previous, before_previous) = current.as_ref().map(|e| parse(&e.value)).unzip();
        match previous.as_deref() {
            Some(previous) if !status_order::moves_forward(previous, status) => return Ok(Recorded::Backward),
            // The same status again (a retried callback): as it was recorded.
            Some(previous) if previous == status => return Ok(Recorded::Forward(before_previous.flatten())),
            _ => {}
        }
        let value = format!("{status}|{}|{at}", previous.as_deref().unwrap_or_default());
        match state::put(&key, &value, current.map(|e| e.revision)) {
            Ok(_) => return Ok(Recorded::Forward(previous)),
            Err(StateError::Conflict) => continue,
            Err(error) => return Err(crate::shared::state_error_text(error)),
        }
    }
    Err(format!("the status of {sid} kept changing while it was recorded"))
}
