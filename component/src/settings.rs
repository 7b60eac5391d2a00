//! The connector's settings, read from the host's `config` and `secrets`
//! imports on each call (so a changed grant or value takes effect at once).

use crate::platform::connector::config;
use crate::platform::connector::secrets::{self, SecretError};

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

fn optional_secret(name: &str) -> Option<String> {
    secret(name).ok()
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

/// What an Access Token needs.
#[derive(Debug)]
pub struct TokenSettings {
    pub account_sid: String,
    pub api_key_sid: String,
    pub api_secret: String,
    pub chat_service_sid: Option<String>,
    pub region: Option<String>,
    pub identity: Option<String>,
}

impl TokenSettings {
    pub fn load() -> Result<Self, String> {
        Ok(Self {
            account_sid: secret("TWILIO_ACCOUNT_SID")?,
            api_key_sid: secret("TWILIO_API_KEY")?,
            api_secret: secret("TWILIO_API_SECRET")?,
            chat_service_sid: optional_secret("TWILIO_CHAT_SERVICE_SID"),
            region: setting("TWILIO_REGION"),
            identity: setting("TWILIO_IDENTITY"),
        })
    }
}

/// The default senders: plain settings, so checking a message needs no secret.
pub fn sender_defaults() -> crate::egress::SenderDefaults {
    crate::egress::SenderDefaults {
        messaging_service_sid: setting("TWILIO_MESSAGING_SERVICE_SID"),
        from_number: setting("TWILIO_FROM_NUMBER"),
    }
}

/// What sending needs: REST auth prefers the API key, else the Auth Token.
pub fn egress_settings() -> Result<crate::egress::EgressSettings, String> {
    let account_sid = secret("TWILIO_ACCOUNT_SID")?;
    let credentials = match (optional_secret("TWILIO_API_KEY"), optional_secret("TWILIO_API_SECRET")) {
        (Some(key), Some(api_secret)) => (key, api_secret),
        _ => (account_sid.clone(), secret("TWILIO_AUTH_TOKEN")?),
    };
    let edge = setting("TWILIO_EDGE");
    let region = setting("TWILIO_REGION");
    let base = |override_key: &str, product: &str| {
        setting(override_key)
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| crate::egress::product_base(product, edge.as_deref(), region.as_deref()))
    };
    Ok(crate::egress::EgressSettings {
        api_base: base("TWILIO_API_BASE_URL", "api"),
        conversations_base: base("TWILIO_CONVERSATIONS_BASE_URL", "conversations"),
        account_sid,
        credentials,
        chat_service_sid: optional_secret("TWILIO_CHAT_SERVICE_SID"),
        senders: sender_defaults(),
        identity: setting("TWILIO_IDENTITY"),
        default_status_callback: webhook_base_url().map(|base| format!("{base}/twilio/status")),
    })
}

/// Where Messaging Services are managed: `https://messaging.twilio.com` for
/// the configured edge and region, or `TWILIO_MESSAGING_BASE_URL`.
pub fn messaging_base() -> String {
    setting("TWILIO_MESSAGING_BASE_URL").map(|url| url.trim_end_matches('/').to_owned()).unwrap_or_else(|| {
        crate::egress::product_base("messaging", setting("TWILIO_EDGE").as_deref(), setting("TWILIO_REGION").as_deref())
    })
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
    crate::envelope::media_content_base(setting("TWILIO_EDGE").as_deref(), setting("TWILIO_REGION").as_deref())
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
    setting("TWILIO_MEDIA_TYPES").map_or_else(crate::media::default_types, |list| {
        list.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect()
    })
}
