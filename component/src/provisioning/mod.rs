//! What the service hands out or sets up rather than carries: access tokens
//! for the Conversations SDK ([`token`]), signed example webhooks
//! ([`simulate`]), and pointing an account's webhooks at the service
//! ([`wiring`] and [`event_streams_wiring`], pure, and [`wiring_calls`],
//! their REST calls).

pub mod event_streams_wiring;
pub mod simulate;
pub mod token;
pub mod wiring;
pub(crate) mod wiring_calls;

use crate::exports::platform::connector::simulator::SimulatedRequest;
use crate::exports::platform::connector::tokens::{AccessToken, TokenError, TokenRequest};
use crate::shared::accounts::{self, Lookup};
use crate::shared::{clock, settings};

/// An Access Token for the account the request names (the default when
/// none), signed with that account's own API key.
pub fn issue_token(request: TokenRequest) -> Result<AccessToken, TokenError> {
    let account = match accounts::resolve(request.account.as_deref()) {
        Lookup::Found(account) => account,
        Lookup::Unknown => return Err(TokenError::InvalidRequest(accounts::not_served(request.account.as_deref()))),
        Lookup::Unavailable(reason) | Lookup::Refused(reason) => return Err(TokenError::NotConfigured(reason)),
    };
    let Some((api_key_sid, api_secret)) = &account.api_key else {
        let reason = match account.kind {
            // Which one, and whether it is unset or not granted at all.
            accounts::AccountKind::Default => {
                settings::secret("TWILIO_API_KEY").and(settings::secret("TWILIO_API_SECRET")).err().unwrap_or_default()
            }
            _ => format!("account {} has no TWILIO_API_KEY and TWILIO_API_SECRET of its own", account.sid),
        };
        return Err(TokenError::NotConfigured(reason));
    };
    let identity = request.identity.or(account.identity.clone()).unwrap_or_default();
    let issued = token::issue(&token::TokenRequest {
        account_sid: &account.sid,
        api_key_sid,
        api_secret: api_secret.as_bytes(),
        chat_service_sid: account.chat_service_sid.as_deref(),
        region: account.region.as_deref(),
        identity: &identity,
        ttl_seconds: request.ttl_seconds.unwrap_or(token::DEFAULT_TTL_SECONDS),
        now: clock::unix_seconds(),
    })
    .map_err(|e| match e {
        token::TokenError::Signing(_) => TokenError::NotConfigured(e.to_string()),
        _ => TokenError::InvalidRequest(e.to_string()),
    })?;
    Ok(AccessToken { jwt: issued.jwt, identity, expires_at: issued.expires_at })
}

/// A webhook of `kind` signed as the default account's would be, for a
/// service at `base_url` (or the configured public URL, which Twilio signs).
pub fn simulate_webhook(
    kind: &str,
    options: &[(String, String)],
    base_url: String,
) -> Result<SimulatedRequest, String> {
    let account_sid = settings::secret("TWILIO_ACCOUNT_SID")?;
    let auth_token = settings::secret("TWILIO_AUTH_TOKEN")?;
    let chat_service_sid = settings::secret("TWILIO_CHAT_SERVICE_SID").ok();
    let signed_base = settings::webhook_base_url().unwrap_or(base_url);
    let random_hex: fn() -> String = || clock::uuid_v4().replace('-', "");
    let simulated = simulate::build(
        kind,
        options,
        &simulate::Identity {
            account_sid: &account_sid,
            auth_token: &auth_token,
            chat_service_sid: chat_service_sid.as_deref(),
            base_url: &signed_base,
            random_hex,
        },
    )?;
    Ok(SimulatedRequest {
        path_with_query: simulated.path_with_query,
        headers: simulated.headers,
        body: simulated.body.into_bytes(),
    })
}
