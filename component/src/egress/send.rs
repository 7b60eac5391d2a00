//! One attempt at sending one egress message, start to end, in one place:
//! the account that sends it, the message checked once, WhatsApp's window,
//! the request, the call, and, when an earlier attempt was ambiguous, its
//! reconciliation first (the why and the rules are in
//! [`crate::egress::reconcile`]). The state store remembers where each
//! ambiguous message stands, so any host, after any restart, goes on from
//! there; Twilio's Messages list says whether the message exists.

use std::sync::Arc;

use sha2::Digest as _;

use crate::egress::message::{self, Destination, EgressSettings, local_reject};
use crate::egress::reconcile::{self, Decision, Expectation, How, Lookup, Pending, Settled, Stage};
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::state::{self, StateError};
use crate::platform::connector::trace;
use crate::platform::connector::types::{
    Accepted, EgressMessage, ErrorClass, ProviderError, Reconciliation, RetryHint, SendError,
};
use crate::shared::accounts::Lookup::{Found, Refused, Unavailable, Unknown};
use crate::shared::accounts::{self, Account, AccountKind};
use crate::shared::rest::{self, PreparedRequest};
use crate::shared::{clock, http, settings, whatsapp_window};

/// Options under which Twilio rewrites the body, so it cannot be compared.
const BODY_REWRITING_OPTIONS: [&str; 2] = ["ShortenUrls", "SmartEncoded"];

/// What the host asks before it takes a message and before each send: the
/// message's rate key, or why it can never be sent. The key names the
/// account too, so two accounts' senders never share a pace. An account
/// that cannot be looked up now is not a refusal: the send decides.
pub fn check(message: &EgressMessage) -> Result<String, String> {
    let (senders, scope) = match accounts::resolve(message.account.as_deref()) {
        Found(account) if account.kind == AccountKind::Default => (account.senders.clone(), None),
        Found(account) => (account.senders.clone(), Some(account.sid.clone())),
        Unknown => return Err(unknown_account(message)),
        // Only a subaccount is looked up, and a subaccount has no default sender.
        Unavailable(_) | Refused(_) => (Default::default(), message.account.clone()),
    };
    let rate_key = message::check(message, &senders)?.rate_key();
    Ok(match scope {
        Some(account) => format!("{account}:{rate_key}"),
        None => rate_key,
    })
}

fn unknown_account(message: &EgressMessage) -> String {
    format!(
        "account {} is not one this service sends for (no credential set, and not a subaccount of the default account)",
        message.account.as_deref().unwrap_or_default()
    )
}

/// Sends `message` (its `attempt`-th time), reconciling first when an earlier
/// attempt was ambiguous. Conversation messages, and all messages when
/// `TWILIO_RECONCILE_SECONDS` is 0, are sent as they are: an ambiguous
/// outcome is then final.
pub fn send(message: &EgressMessage, attempt: u32) -> Result<Accepted, SendError> {
    let account = sending_account(message.account.as_deref(), || unknown_account(message))?;
    accounts::mark_on_trace(&account);
    let settings = settings::egress_settings(&account).map_err(configuration)?;
    let destination = message::check(message, &settings.senders).map_err(local_reject)?;
    if let Some(refusal) = whatsapp_window::refusal(message, &destination, &account) {
        return Err(refusal);
    }
    let expect = expectation(message, &destination);
    let request = message::request_for(message, destination, &settings);
    let what = format!("send {}", message.id);
    let bound = settings::reconcile_seconds();
    let Some(expect) = expect.filter(|_| bound > 0) else {
        return post(&what, &request, &settings);
    };
    let key = state_key("reconcile", &message.id);
    // A first attempt has no earlier one to settle: no lookup on the common path.
    if attempt > 1 {
        match state::get(&key) {
            Ok(Some(entry)) => {
                if let Ok(pending) = serde_json::from_str::<Pending>(&entry.value) {
                    let sending = Sending { message, settings: &settings, request: &request, expect };
                    return settle(&sending, &Record { key, revision: entry.revision, pending, bound });
                }
            }
            Ok(None) => {}
            Err(error) => {
                return Err(wait(
                    1000,
                    &format!("cannot read where the message stands: {}", crate::shared::state_error_text(error)),
                ));
            }
        }
    }
    let started_ms = clock::unix_millis();
    match post(&what, &request, &settings) {
        Err(SendError::Ambiguous(error)) => begin(&key, started_ms, error, bound),
        outcome => outcome,
    }
}

/// Cancels a scheduled message of `account`: `POST …/Messages/{Sid}.json`
/// with `Status=canceled`, as Twilio's API has it.
pub fn cancel(account: Option<&str>, sid: &str) -> Result<Accepted, SendError> {
    let account = sending_account(account, || accounts::not_served(account))?;
    let settings = settings::egress_settings(&account).map_err(configuration)?;
    let request = message::prepare_cancel(sid, &settings)?;
    post(&format!("cancel {sid}"), &request, &settings)
}

/// The account that sends, or why not: unknown is for an operator to fix,
/// a lookup that cannot be made now is retried.
fn sending_account(sid: Option<&str>, unknown: impl FnOnce() -> String) -> Result<Arc<Account>, SendError> {
    match accounts::resolve(sid) {
        Found(account) => Ok(account),
        Unknown => Err(configuration(unknown())),
        Unavailable(reason) | Refused(reason) => Err(SendError::Retry(RetryHint {
            after_ms: Some(1000),
            reason: rest::local_error(format!("the account cannot be looked up now: {reason}"), ErrorClass::Retryable),
        })),
    }
}

/// A refusal only an operator can lift (a missing credential, an unknown account).
fn configuration(reason: String) -> SendError {
    SendError::Reject(rest::local_error(reason, ErrorClass::Configuration))
}

/// Makes one create or update call (`what`, for the log) and says what came
/// of it, with the credentials redacted from any answer it quotes.
fn post(what: &str, request: &PreparedRequest, settings: &EgressSettings) -> Result<Accepted, SendError> {
    let outcome = http::exchange(request)
        .and_then(|answer| message::classify_response(answer.status, answer.retry_after.as_deref(), &answer.body))
        .map_err(|error| rest::redact_credentials(error, &settings.credentials));
    if let Err(error) = &outcome {
        log::log(Level::Warn, &format!("{what} failed: {}", http::describe(error)));
    }
    outcome
}

/// The message being sent, its request, and how it would look in Twilio's list.
struct Sending<'a> {
    message: &'a EgressMessage,
    settings: &'a EgressSettings,
    request: &'a PreparedRequest,
    expect: Expectation,
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
    // Its lookups in Twilio's list, and a resend, are this span's children.
    let span = trace::Span::new("twilio.reconcile");
    span.set_attribute("twilio.reconcile.stage", record.pending.stage.name());
    let Sending { message, settings, .. } = *sending;
    let Record { pending, bound, .. } = record;
    if let (Stage::Settled, Some(settled)) = (pending.stage, &pending.settled) {
        return Ok(accepted(settled));
    }
    let now_ms = clock::unix_millis();
    let expect = Expectation {
        earliest: (pending.started_ms / 1000).saturating_sub(reconcile::CLOCK_SKEW_SECONDS),
        latest: now_ms / 1000 + reconcile::CLOCK_SKEW_SECONDS,
        ..sending.expect.clone()
    };
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
    match post(&what, sending.request, sending.settings) {
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
            let _ = crate::shared::state_overwrite(&record.key, &to_json(&settled_record));
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
            let page: reconcile::Page = serde_json::from_slice(&http::rest(&request, &settings.credentials)?)
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
            Ok(state::get(&key).map_err(crate::shared::state_error_text)?.is_some_and(|entry| entry.value == id))
        }
        Err(error) => Err(crate::shared::state_error_text(error)),
    }
}

/// What the message looks like in Twilio's list (its times are set when it
/// is looked for); none for a conversation message, which is not reconciled.
fn expectation(message: &EgressMessage, destination: &Destination<'_>) -> Option<Expectation> {
    let Destination::Address { to, from, messaging_service, .. } = destination else { return None };
    let rewritten = message.template.is_some()
        || message
            .options
            .iter()
            .any(|(name, value)| BODY_REWRITING_OPTIONS.contains(&name.as_str()) && value == "true");
    Some(Expectation {
        to: (*to).to_owned(),
        from: if messaging_service.is_some() { None } else { from.clone() },
        messaging_service: messaging_service.clone(),
        body: message.body.clone().filter(|body| !body.is_empty() && !rewritten),
        media: message.media_urls.len(),
        earliest: 0,
        latest: 0,
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
    format!("{prefix}.{}", crate::ingress::signature::hex(&sha2::Sha256::digest(name.as_bytes())))
}

fn to_json(pending: &Pending) -> String {
    // A plain record of strings and numbers: serialising cannot fail.
    serde_json::to_string(pending).unwrap_or_default()
}
