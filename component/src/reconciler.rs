//! Sends a message, settling an earlier ambiguous attempt first (the why and
//! the rules are in [`crate::reconcile`]). The state store remembers where each
//! ambiguous message stands, so any host, after any restart, goes on from there;
//! Twilio's Messages list says whether the message exists.

use sha2::Digest as _;

use crate::clock;
use crate::egress::{self, Destination, EgressSettings};
use crate::outbound;
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::state::{self, StateError};
use crate::platform::connector::types::{
    Accepted, EgressMessage, ErrorClass, ProviderError, Reconciliation, RetryHint, SendError,
};
use crate::reconcile::{self, Decision, Expectation, How, Lookup, Pending, Settled, Stage};

/// Options under which Twilio rewrites the body, so it cannot be compared.
const BODY_REWRITING_OPTIONS: [&str; 2] = ["ShortenUrls", "SmartEncoded"];

/// Sends `message` (its `attempt`-th time), reconciling first when an earlier
/// attempt was ambiguous. Conversation messages, and all messages when
/// `TWILIO_RECONCILE_SECONDS` is 0, are sent as they are: an ambiguous
/// outcome is then final.
pub fn send(message: &EgressMessage, attempt: u32, settings: &EgressSettings) -> Result<Accepted, SendError> {
    let request = egress::prepare(message, settings)?;
    let what = format!("send {}", message.id);
    let bound = crate::settings::reconcile_seconds();
    // `prepare` checked the message: one with `to` goes to an address, through the Messages API.
    let reconcilable = message.to.is_some();
    if bound == 0 || !reconcilable {
        return outbound::post(&what, &request, settings);
    }
    let key = state_key("reconcile", &message.id);
    // A first attempt has no earlier one to settle: no lookup on the common path.
    if attempt > 1 {
        match state::get(&key) {
            Ok(Some(entry)) => {
                if let Ok(pending) = serde_json::from_str::<Pending>(&entry.value) {
                    let sending = Sending { message, settings, request: &request };
                    return settle(&sending, &Record { key, revision: entry.revision, pending, bound });
                }
            }
            Ok(None) => {}
            Err(error) => {
                return Err(wait(
                    1000,
                    &format!("cannot read where the message stands: {}", crate::state_error_text(error)),
                ));
            }
        }
    }
    let started_ms = clock::unix_millis();
    match outbound::post(&what, &request, settings) {
        Err(SendError::Ambiguous(error)) => begin(&key, started_ms, error, bound),
        outcome => outcome,
    }
}

/// The message being sent, and its request.
struct Sending<'a> {
    message: &'a EgressMessage,
    settings: &'a EgressSettings,
    request: &'a egress::PreparedRequest,
}

/// A message's record in the state store.
struct Record {
    key: String,
    revision: u64,
    pending: Pending,
    bound: u64,
}

/// An attempt was ambiguous: remember it and look for it before anything is
/// sent again. If it cannot be remembered it is never resent (dead-lettered
/// as unknown), since a later attempt would not know to look first.
fn begin(key: &str, started_ms: u64, error: ProviderError, bound: u64) -> Result<Accepted, SendError> {
    let pending = Pending { started_ms, stage: Stage::Looking, settled: None };
    match state::put(key, &to_json(&pending), None) {
        Ok(_) | Err(StateError::Conflict) => {
            let reason = format!("{}; looking for it in Twilio's list before sending again", error.message);
            Err(wait(reconcile::lookup_interval_ms(bound), &reason))
        }
        Err(StateError::Unavailable(why)) => {
            log::log(Level::Warn, &format!("cannot remember an ambiguous send ({why}): it will not be sent again"));
            Err(SendError::Ambiguous(error))
        }
    }
}

/// A later attempt at an ambiguous message: look it up, then settle, wait,
/// resend once, or give up.
fn settle(sending: &Sending<'_>, record: &Record) -> Result<Accepted, SendError> {
    let Sending { message, settings, .. } = *sending;
    let Record { pending, bound, .. } = record;
    if let (Stage::Settled, Some(settled)) = (pending.stage, &pending.settled) {
        return Ok(accepted(settled));
    }
    let now_ms = clock::unix_millis();
    let expect = expectation(message, settings, pending.started_ms / 1000, now_ms / 1000)?;
    let (lookup, found) = match find(&message.id, &expect, settings) {
        Ok(Some(found)) => (Lookup::Found, Some(found)),
        Ok(None) => (Lookup::NotFound, None),
        Err(why) => {
            log::log(Level::Warn, &format!("looking up {} in Twilio's list failed: {why}", message.id));
            (Lookup::Failed, None)
        }
    };
    match (reconcile::decide(pending, now_ms, *bound, lookup), found) {
        (Decision::Settle, Some(found)) => {
            let how = if pending.stage == Stage::Resending { How::Resent } else { How::Found };
            let settled = Settled {
                sid: found.sid.clone(),
                status: found.status.clone().unwrap_or_else(|| "sent".into()),
                segments: found.segments(),
                how,
            };
            store(record, Stage::Settled, Some(settled.clone()));
            Ok(accepted(&settled))
        }
        (Decision::Wait, _) | (Decision::Settle, None) => {
            let reason = match lookup {
                Lookup::Failed => "outcome unknown; Twilio's list did not answer, looking again",
                _ => "outcome unknown; not in Twilio's list yet, looking again",
            };
            Err(wait(reconcile::lookup_interval_ms(*bound), reason))
        }
        (Decision::Resend, _) => resend(sending, record),
        (Decision::GiveUp, _) => Err(SendError::Ambiguous(unknown(format!(
            "outcome unknown: Twilio's list did not answer within {}s, so it was not sent again",
            bound.saturating_mul(3)
        )))),
    }
}

/// Twilio said it has no such message after the bound: send it once more.
fn resend(sending: &Sending<'_>, record: &Record) -> Result<Accepted, SendError> {
    if record.pending.stage != Stage::Resending && !store(record, Stage::Resending, None) {
        // Another host moved the record on: let it (or the next attempt) decide.
        return Err(wait(reconcile::lookup_interval_ms(record.bound), "another attempt is settling this message"));
    }
    let what = format!("resend {}", sending.message.id);
    match outbound::post(&what, sending.request, sending.settings) {
        Ok(taken) => {
            let settled = Settled {
                sid: taken.provider_message_id,
                status: taken.status,
                segments: taken.segments,
                how: How::Resent,
            };
            // Best effort: unrecorded, a replay of this message (its acknowledgement
            // lost) is still `resending`, so it looks first and finds this send.
            let settled_record =
                Pending { stage: Stage::Settled, settled: Some(settled.clone()), ..record.pending.clone() };
            let _ = crate::state_overwrite(&record.key, &to_json(&settled_record));
            Ok(accepted(&settled))
        }
        Err(SendError::Ambiguous(mut error)) => {
            error.message = format!("{} (the one resend, after Twilio's list had no such message)", error.message);
            Err(SendError::Ambiguous(error))
        }
        Err(other) => Err(other),
    }
}

/// Moves the record to `stage`; false when another writer moved it first.
fn store(record: &Record, stage: Stage, settled: Option<Settled>) -> bool {
    let pending = Pending { stage, settled, ..record.pending.clone() };
    state::put(&record.key, &to_json(&pending), Some(record.revision)).is_ok()
}

/// Looks for the message in Twilio's list: those sent since it was (with
/// `DateSent>`), then those not sent yet (no `date_sent`, so that filter would
/// hide them). A match is claimed in the state store, so one message in
/// Twilio's list settles only one of ours.
fn find(id: &str, expect: &Expectation, settings: &EgressSettings) -> Result<Option<reconcile::Listed>, String> {
    for sent_since in [Some(expect.earliest), None] {
        let mut request = reconcile::lookup(expect, sent_since, settings);
        for _ in 0..reconcile::MOST_PAGES {
            let page: reconcile::Page = serde_json::from_slice(&outbound::rest(&request, &settings.credentials)?)
                .map_err(|e| format!("unreadable list: {e}"))?;
            for listed in page.messages.into_iter().filter(|listed| listed.matches(expect)) {
                if claim(&listed.sid, id)? {
                    return Ok(Some(listed));
                }
            }
            match page.next_page_uri.and_then(|uri| reconcile::next_page(&uri, settings)) {
                Some(next) => request = next,
                None => break,
            }
        }
    }
    Ok(None)
}

/// Claims Twilio's message `sid` for our message `id`: true when it is ours
/// (now, or from an earlier lookup of the same message).
fn claim(sid: &str, id: &str) -> Result<bool, String> {
    let key = state_key("reconciled", sid);
    match state::put(&key, id, None) {
        Ok(_) => Ok(true),
        Err(StateError::Conflict) => {
            Ok(state::get(&key).map_err(crate::state_error_text)?.is_some_and(|entry| entry.value == id))
        }
        Err(error) => Err(crate::state_error_text(error)),
    }
}

/// What the message looks like in Twilio's list, given when it was sent.
fn expectation(
    message: &EgressMessage,
    settings: &EgressSettings,
    started: u64,
    now: u64,
) -> Result<Expectation, SendError> {
    let Ok(Destination::Address { to, from, messaging_service, .. }) = egress::check(message, &settings.senders) else {
        return Err(SendError::Ambiguous(unknown("the message can no longer be reconciled".into())));
    };
    let rewritten = message.template.is_some()
        || message
            .options
            .iter()
            .any(|(name, value)| BODY_REWRITING_OPTIONS.contains(&name.as_str()) && value == "true");
    Ok(Expectation {
        to: to.to_owned(),
        from: if messaging_service.is_some() { None } else { from },
        messaging_service,
        body: message.body.clone().filter(|body| !body.is_empty() && !rewritten),
        media: message.media_urls.len(),
        earliest: started.saturating_sub(reconcile::CLOCK_SKEW_SECONDS),
        latest: now + reconcile::CLOCK_SKEW_SECONDS,
    })
}

fn accepted(settled: &Settled) -> Accepted {
    Accepted {
        provider_message_id: settled.sid.clone(),
        status: settled.status.clone(),
        segments: settled.segments,
        reconciliation: Some(match settled.how {
            How::Found => Reconciliation::Found,
            How::Resent => Reconciliation::Resent,
        }),
    }
}

/// Call again after `after_ms`: the outcome is being settled. Its class is
/// `unknown`, so a host that runs out of attempts reports it as such.
fn wait(after_ms: u64, reason: &str) -> SendError {
    SendError::Retry(RetryHint { after_ms: Some(after_ms), reason: unknown(reason.to_owned()) })
}

fn unknown(message: String) -> ProviderError {
    ProviderError { code: None, message, http_status: None, more_info: None, class: ErrorClass::Unknown }
}

/// A state key for `name` under `prefix`: a hash, so any id makes a valid key.
fn state_key(prefix: &str, name: &str) -> String {
    format!("{prefix}.{}", crate::signature::hex(&sha2::Sha256::digest(name.as_bytes())))
}

fn to_json(pending: &Pending) -> String {
    // A plain record of strings and numbers: serialising cannot fail.
    serde_json::to_string(pending).unwrap_or_default()
}
