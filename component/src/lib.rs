//! The Twilio connector: a WebAssembly component holding all Twilio logic.
//!
//! It exports the platform's `connector` interface (describe, check, send),
//! the optional `tokens` and `simulator` interfaces, and
//! `wasi:http/incoming-handler` for Twilio's webhooks (and `webhooks`, the
//! same in one call, for hosts that offer it), and reaches
//! the outside only through what the host grants: named secrets, plain config,
//! the bus, logging and `wasi:http/outgoing-handler`.
//!
//! The modules are folders by flow: [`ingress`] (webhooks → the bus),
//! [`egress`] (the bus → Twilio), [`provisioning`] (tokens, simulated
//! webhooks, wiring) and [`shared`] (accounts, settings, HTTP, REST). In each,
//! the pure logic has no imports and is tested natively with `cargo test`;
//! the rest is the thin layer that talks to the host.

wit_bindgen::generate!({
    world: "full-connector",
    path: "../wit",
    generate_all,
    additional_derives: [PartialEq, Clone],
    additional_derives_ignore: ["stream-error"],
});

pub mod egress;
pub mod ingress;
pub mod provisioning;
pub mod shared;

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

struct Component;

impl Guest for Component {
    fn describe() -> Descriptor {
        Descriptor { name: NAME.to_owned(), version: VERSION.to_owned() }
    }

    fn check(message: EgressMessage) -> Result<EgressPlan, String> {
        egress::send::check(&message).map(|rate_key| EgressPlan { rate_key })
    }

    fn send(message: EgressMessage, attempt: u32) -> Result<Accepted, SendError> {
        egress::send::send(&message, attempt)
    }
}

impl tokens::Guest for Component {
    fn issue_token(request: TokenRequest) -> Result<AccessToken, TokenError> {
        provisioning::issue_token(request)
    }
}

impl simulator::Guest for Component {
    fn simulate_webhook(
        kind: String,
        options: Vec<(String, String)>,
        base_url: String,
    ) -> Result<SimulatedRequest, String> {
        provisioning::simulate_webhook(&kind, &options, base_url)
    }
}

impl exports::platform::connector::message_control::Guest for Component {
    fn cancel(account: Option<String>, provider_message_id: String) -> Result<Accepted, SendError> {
        egress::send::cancel(account.as_deref(), &provider_message_id)
    }
}

impl exports::platform::connector::provisioning::Guest for Component {
    fn inspect(
        account: Option<String>,
        public_url: Option<String>,
        parts: Vec<String>,
    ) -> Result<WiringReport, String> {
        provisioning::wiring_calls::inspect(account.as_deref(), public_url, &parts)
    }

    fn wire(
        account: Option<String>,
        public_url: String,
        dry_run: bool,
        parts: Vec<String>,
    ) -> Result<WiringReport, String> {
        provisioning::wiring_calls::wire(account.as_deref(), public_url, dry_run, &parts)
    }
}

impl exports::platform::connector::webhooks::Guest for Component {
    fn handle(
        request: exports::platform::connector::webhooks::WebhookRequest,
    ) -> exports::platform::connector::webhooks::WebhookResponse {
        ingress::webhook::handle_whole(request)
    }
}

impl exports::wasi::http::incoming_handler::Guest for Component {
    fn handle(request: wasi::http::types::IncomingRequest, response_out: wasi::http::types::ResponseOutparam) {
        ingress::webhook::handle(request, response_out);
    }
}

export!(Component);
