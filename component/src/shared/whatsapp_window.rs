//! WhatsApp's 24-hour customer-service window: a free-form message (not a
//! template) may go to a user only within 24 hours of their last message to
//! the business. Twilio refuses one outside it with 63016, after the call.
//! With `TWILIO_WHATSAPP_WINDOW_CHECK=true` the connector remembers when each
//! user last wrote to each sender (the host's state store) and refuses such a
//! send itself, before calling Twilio, saying to send a template.

use crate::egress::message::Destination;
use crate::ingress::envelope::Params;
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::state;
use crate::platform::connector::types::{EgressMessage, ErrorClass, ProviderError, RetryHint, SendError};
use crate::shared::accounts::{Account, AccountKind};
use crate::shared::{clock, settings};

/// The window's length.
const WINDOW_SECONDS: u64 = 24 * 3600;

fn enforced() -> bool {
    settings::setting("TWILIO_WHATSAPP_WINDOW_CHECK").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The state key for `user` writing to `sender` (a WhatsApp number or a
/// Messaging Service) of `account`, or `None` for addresses that are not
/// plain ones. The default account keeps the keys it had before there were
/// other accounts; every other account's keys name it, so two accounts'
/// windows never mix.
fn key(account: &Account, sender: &str, user: &str) -> Option<String> {
    let (sender, user) = (plain(sender)?, plain(user)?);
    Some(match account.kind {
        AccountKind::Default => format!("wa.{sender}.{user}"),
        _ => format!("wa.{}.{sender}.{user}", account.sid),
    })
}

/// An address without its channel prefix and `+`, when that leaves only
/// letters and digits, or dots between them (WhatsApp's business-scoped user
/// ids, `US.1349…`): what a state key may hold.
fn plain(address: &str) -> Option<&str> {
    let bare = address.trim_start_matches("whatsapp:").trim_start_matches('+');
    let well_formed = bare.len() <= 64
        && !bare.is_empty()
        && bare.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    well_formed.then_some(bare)
}

/// Whether a user who last wrote at `last` (Unix seconds) may get a free-form
/// message at `now`.
pub fn is_open(last: Option<u64>, now: u64) -> bool {
    last.is_some_and(|last| now.saturating_sub(last) < WINDOW_SECONDS)
}

/// Remembers an inbound WhatsApp message's time for the number it was sent
/// to and, when it came through one, its Messaging Service. A store that
/// cannot be written costs only the check, not the webhook: logged.
pub fn record_inbound(params: Params<'_>, account: &Account) {
    // Most webhooks are not WhatsApp: they need not read the setting.
    let Some(user) = params.get("From").filter(|from| from.starts_with("whatsapp:")) else { return };
    if !enforced() {
        return;
    }
    let now = clock::unix_seconds().to_string();
    for sender in [params.get("To"), params.get("MessagingServiceSid")].into_iter().flatten() {
        let Some(key) = key(account, sender, user) else { continue };
        if let Err(reason) = crate::shared::state_overwrite(&key, &now) {
            log::log(Level::Warn, &format!("cannot record the WhatsApp window of {key}: {reason}"));
        }
    }
}

/// Why `message` must not be sent now, when it is a free-form WhatsApp
/// message to a user outside the window of its sender (`destination`, as
/// checked), of `account`.
pub fn refusal(message: &EgressMessage, destination: &Destination<'_>, account: &Account) -> Option<SendError> {
    let to = message.to.as_deref().filter(|to| to.starts_with("whatsapp:"))?;
    if message.template.is_some() || !enforced() {
        return None;
    }
    // The sender egress picks (its own number first, then its pool): the
    // window is the one this user opened with it.
    let Destination::Address { from, messaging_service, .. } = destination else { return None };
    let sender = from.as_ref().or(messaging_service.as_ref())?;
    let key = key(account, sender, to)?;
    let error =
        |message: String, class| ProviderError { code: None, message, http_status: None, more_info: None, class };
    let last = match state::get(&key) {
        Ok(entry) => entry.and_then(|entry| entry.value.parse().ok()),
        Err(e) => {
            let reason = error(format!("the WhatsApp window cannot be checked now: {e:?}"), ErrorClass::Retryable);
            return Some(SendError::Retry(RetryHint { after_ms: None, reason }));
        }
    };
    if is_open(last, clock::unix_seconds()) {
        return None;
    }
    let reason = format!(
        "outside WhatsApp's 24-hour window: {to} has not written to {sender} in the last 24 hours; send a template"
    );
    Some(SendError::Reject(error(reason, ErrorClass::WindowClosed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_24_hours_from_the_users_last_message() {
        let now = 1_800_000_000;
        assert!(is_open(Some(now - 60), now));
        assert!(is_open(Some(now - WINDOW_SECONDS + 1), now));
        assert!(!is_open(Some(now - WINDOW_SECONDS), now));
        assert!(!is_open(None, now), "never wrote: closed");
        assert!(is_open(Some(now + 5), now), "a clock a little ahead is not an error");
    }

    #[test]
    fn keys_are_plain_and_scoped_to_the_sender_and_account() {
        let default =
            crate::shared::accounts::tests::account(AccountKind::Default, "AC00000000000000000000000000000001");
        let other =
            crate::shared::accounts::tests::account(AccountKind::Configured, "AC00000000000000000000000000000002");
        assert_eq!(
            key(&default, "whatsapp:+15005550006", "whatsapp:+14155550100").as_deref(),
            Some("wa.15005550006.14155550100")
        );
        assert_eq!(
            key(&default, "MG00000000000000000000000000000001", "whatsapp:+1").as_deref(),
            Some("wa.MG00000000000000000000000000000001.1")
        );
        assert_eq!(
            key(&other, "whatsapp:+15005550006", "whatsapp:+14155550100").as_deref(),
            Some("wa.AC00000000000000000000000000000002.15005550006.14155550100")
        );
        assert_eq!(key(&default, "whatsapp:+1 555", "whatsapp:+2"), None);
        assert_eq!(
            key(&default, "whatsapp:+15005550006", "whatsapp:US.13491208655302741918").as_deref(),
            Some("wa.15005550006.US.13491208655302741918"),
            "a business-scoped user id has a window too"
        );
        assert_eq!(key(&default, "whatsapp:+15005550006", "whatsapp:US..1"), None);
        assert_eq!(key(&default, "whatsapp:+15005550006", "whatsapp:.US"), None);
    }
}
