//! The Twilio connector: a WebAssembly component holding all Twilio logic.
//!
//! It exports the platform's `connector` interface (describe, check, send),
//! the optional `tokens` and `simulator` interfaces, and
//! `wasi:http/incoming-handler` for Twilio's webhooks, and reaches
//! the outside only through what the host grants: named secrets, plain config,
//! the bus, logging and `wasi:http/outgoing-handler`.
//!
//! The pure logic ([`signature`], [`segments`], [`token`], [`envelope`],
//! [`egress`]) has no imports and is tested natively with `cargo test`; the
//! modules below it ([`settings`], [`outbound`], [`webhook`]) are the thin layer
//! that talks to the host.

wit_bindgen::generate!({
    world: "full-connector",
    path: "../wit",
    generate_all,
    additional_derives: [PartialEq, Clone],
    additional_derives_ignore: ["stream-error"],
});

pub mod consent;
pub mod egress;
pub mod envelope;
pub mod errors;
pub mod media;
pub mod options;
pub mod reconcile;
pub mod segments;
pub mod signature;
pub mod simulate;
mod status_memory;
pub mod status_order;
pub mod token;
mod whatsapp_window;
pub mod wiring;

mod body;
mod clock;
mod media_fetch;
mod outbound;
mod reconciler;
mod settings;
mod webhook;
mod wiring_calls;

use exports::platform::connector::connector::{Descriptor, EgressPlan, Guest};
use exports::platform::connector::provisioning::WiringReport;
use exports::platform::connector::simulator::{self, SimulatedRequest};
use exports::platform::connector::tokens::{self, AccessToken, TokenError, TokenRequest};
use platform::connector::types::{Accepted, EgressMessage, SendError};

/// The component's name, as the host and `/admin/connectors` show it.
pub const NAME: &str = "twilio";

/// The component's version; a build may set `CONNECTOR_VERSION` to tell two builds apart.
pub const VERSION: &str = match option_env!("CONNECTOR_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// How a failure of the host's state store reads in a log line or a reason:
/// one wording for every module that keeps state (wit-bindgen's own `Display`
/// is its `Debug`).
pub(crate) fn state_error_text(error: platform::connector::state::StateError) -> String {
    use platform::connector::state::StateError;
    match error {
        StateError::Unavailable(reason) => format!("the state store is unavailable: {reason}"),
        StateError::Conflict => "the state store reported a conflict".to_owned(),
    }
}

/// Writes `value` at `key` over whatever revision is there: for records
/// where the last writer is right (a time seen, an outcome settled).
pub(crate) fn state_overwrite(key: &str, value: &str) -> Result<(), String> {
    use platform::connector::state;
    let revision = state::get(key).ok().flatten().map(|entry| entry.revision);
    state::put(key, value, revision).map(drop).map_err(state_error_text)
}

struct Component;

impl Guest for Component {
    fn describe() -> Descriptor {
        Descriptor { name: NAME.to_owned(), version: VERSION.to_owned() }
    }

    fn check(message: EgressMessage) -> Result<EgressPlan, String> {
        let destination = egress::check(&message, &settings::sender_defaults())?;
        Ok(EgressPlan { rate_key: destination.rate_key() })
    }

    fn send(message: EgressMessage, attempt: u32) -> Result<Accepted, SendError> {
        outbound::send(&message, attempt)
    }
}

impl tokens::Guest for Component {
    fn issue_token(request: TokenRequest) -> Result<AccessToken, TokenError> {
        let settings = settings::TokenSettings::load().map_err(TokenError::NotConfigured)?;
        let identity = request.identity.or(settings.identity).unwrap_or_default();
        let issued = token::issue(&token::TokenRequest {
            account_sid: &settings.account_sid,
            api_key_sid: &settings.api_key_sid,
            api_secret: settings.api_secret.as_bytes(),
            chat_service_sid: settings.chat_service_sid.as_deref(),
            region: settings.region.as_deref(),
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
}

impl simulator::Guest for Component {
    fn simulate_webhook(
        kind: String,
        options: Vec<(String, String)>,
        base_url: String,
    ) -> Result<SimulatedRequest, String> {
        let account_sid = settings::secret("TWILIO_ACCOUNT_SID")?;
        let auth_token = settings::secret("TWILIO_AUTH_TOKEN")?;
        let chat_service_sid = settings::secret("TWILIO_CHAT_SERVICE_SID").ok();
        let signed_base = settings::webhook_base_url().unwrap_or(base_url);
        let random_hex: fn() -> String = || clock::uuid_v4().replace('-', "");
        let simulated = simulate::build(
            &kind,
            &options,
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
}

impl exports::platform::connector::message_control::Guest for Component {
    fn cancel(provider_message_id: String) -> Result<Accepted, SendError> {
        outbound::cancel(&provider_message_id)
    }
}

impl exports::platform::connector::provisioning::Guest for Component {
    fn inspect(public_url: Option<String>) -> Result<WiringReport, String> {
        wiring_calls::inspect(public_url)
    }

    fn wire(public_url: String, dry_run: bool) -> Result<WiringReport, String> {
        wiring_calls::wire(public_url, dry_run)
    }
}

impl exports::wasi::http::incoming_handler::Guest for Component {
    fn handle(request: wasi::http::types::IncomingRequest, response_out: wasi::http::types::ResponseOutparam) {
        webhook::handle(request, response_out);
    }
}

export!(Component);
