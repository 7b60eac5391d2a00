//! The connector's settings, read from the host's `config` and `secrets`
//! imports on each call (so a changed grant or value takes effect at once).

use crate::egress::message::{EgressSettings, SenderDefaults};
use crate::platform::connector::config;
use crate::platform::connector::secrets::{self, SecretError};
use crate::shared::accounts::{Account, AccountKind};
use crate::shared::rest;

/// A plain setting; empty counts as unset.
pub fn setting(key: &str) -> Option<String> {
    config::get(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A secret's value, or a reason naming it (never its value).
pub fn secret(name: &str) -> Result<String, String> {
    match secrets::reveal(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) | Err(SecretError::NotSet) => Err(format!("secret {name} is not set")),
        Err(SecretError::NotGranted) => Err(format!("secret {name} is not granted to this connector")),
    }
}

/// The identity whose Conversations messages are the service's own echo, when
/// they are to be skipped (`TWILIO_SKIP_OWN_MESSAGES`, default true).
pub fn own_identity_to_skip() -> Option<String> {
    let skip = setting("TWILIO_SKIP_OWN_MESSAGES").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    skip.then(|| setting("TWILIO_IDENTITY")).flatten()
}

/// The base URL Twilio calls, without a trailing slash.
pub fn webhook_base_url() -> Option<String> {
    setting("TWILIO_WEBHOOK_BASE_URL").map(|url| url.trim_end_matches('/').to_owned())
}

/// The connection overrides `twilio wire` puts on messaging webhook URLs
/// (`TWILIO_WEBHOOK_OVERRIDES`, without its `#`); none when `none`.
pub fn webhook_overrides() -> Option<String> {
    let overrides = setting("TWILIO_WEBHOOK_OVERRIDES")?;
    let overrides = overrides.trim().trim_start_matches('#');
    (!overrides.is_empty() && !overrides.eq_ignore_ascii_case("none")).then(|| overrides.to_owned())
}

/// The default account's senders: plain settings, so checking a message needs no secret.
pub fn sender_defaults() -> SenderDefaults {
    SenderDefaults {
        messaging_service_sid: setting("TWILIO_MESSAGING_SERVICE_SID"),
        from_number: setting("TWILIO_FROM_NUMBER"),
    }
}

/// The base URL of Twilio product `product` for `account`: the override
/// variable when set (a proxy, a test's fake), else Twilio's host for the
/// account's edge and region.
fn product_base(account: &Account, override_key: &str, product: &str) -> String {
    setting(override_key)
        .map(|url| url.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| rest::product_base(product, account.edge.as_deref(), account.region.as_deref()))
}

/// Where `account`'s 2010 API is (`https://api.twilio.com` by default).
pub fn api_base(account: &Account) -> String {
    product_base(account, "TWILIO_API_BASE_URL", "api")
}

/// What sending as `account` needs; its credentials missing is the operator's to fix.
pub fn egress_settings(account: &Account) -> Result<EgressSettings, String> {
    let credentials = account.rest_credentials.clone().ok_or_else(|| match account.kind {
        AccountKind::Default => {
            "secret TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) is not set".to_owned()
        }
        _ => format!("account {} has no REST credentials", account.sid),
    })?;
    Ok(EgressSettings {
        api_base: api_base(account),
        conversations_base: product_base(account, "TWILIO_CONVERSATIONS_BASE_URL", "conversations"),
        account_sid: account.sid.clone(),
        credentials,
        chat_service_sid: account.chat_service_sid.clone(),
        senders: account.senders.clone(),
        identity: account.identity.clone(),
        default_status_callback: webhook_base_url().map(|base| format!("{base}/twilio/status")),
    })
}

/// Where `account`'s Messaging Services are managed: `https://messaging.twilio.com`
/// for its edge and region, or `TWILIO_MESSAGING_BASE_URL`.
pub fn messaging_base(account: &Account) -> String {
    product_base(account, "TWILIO_MESSAGING_BASE_URL", "messaging")
}

/// Where `account`'s Event Streams sinks and subscriptions are managed:
/// `https://events.twilio.com` for its edge and region, or `TWILIO_EVENTS_BASE_URL`.
pub fn events_base(account: &Account) -> String {
    product_base(account, "TWILIO_EVENTS_BASE_URL", "events")
}

/// How long to look for an ambiguous send in Twilio's list before sending it
/// once more (`TWILIO_RECONCILE_SECONDS`, default 20); 0 never resends: an
/// ambiguous send is dead-lettered with its outcome unknown.
pub fn reconcile_seconds() -> u64 {
    setting("TWILIO_RECONCILE_SECONDS").and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Where Conversations media is: the Media Content Service of the configured
/// edge and region (`TWILIO_EDGE`, `TWILIO_REGION`).
pub fn media_content_base() -> String {
    crate::ingress::envelope::media_content_base(setting("TWILIO_EDGE").as_deref(), setting("TWILIO_REGION").as_deref())
}

/// Whether inbound MMS and WhatsApp media is fetched and stored (`TWILIO_MEDIA_FETCH`, default false).
pub fn media_fetch() -> bool {
    setting("TWILIO_MEDIA_FETCH").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The largest media item fetched (`TWILIO_MEDIA_MAX_BYTES`, default 5 MiB, Twilio's MMS limit).
pub fn media_max_bytes() -> usize {
    setting("TWILIO_MEDIA_MAX_BYTES").and_then(|v| v.parse().ok()).unwrap_or(5 * 1024 * 1024)
}

/// The content-type prefixes kept (`TWILIO_MEDIA_TYPES`, comma-separated).
pub fn media_types() -> Vec<String> {
    setting("TWILIO_MEDIA_TYPES").map_or_else(crate::ingress::media::default_types, |list| {
        list.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect()
    })
}
