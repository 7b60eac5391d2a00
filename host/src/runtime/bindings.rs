//! Host bindings generated from `wit/`, the one source of truth shared with
//! the guests.
//!
//! The base world is what every connector must export. Each optional export
//! (`tokens`, `simulator`, `message-control`, `provisioning`, `webhooks`) has a world of its own, so the host can look for it
//! in a component without requiring it.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "connector-world",
    imports: {
        // `reveal` returns a secret: never traced, not even at TRACE level.
        "platform:connector/secrets.reveal": async | trappable,
        // A credential set is secrets too; a cached value may be one.
        "platform:connector/credential-sets.reveal": async | trappable,
        "platform:connector/cache.get": async | trappable,
        "platform:connector/cache.put": async | trappable,
        // `store` carries whole media files: not traced either.
        "platform:connector/blobs.store": async | trappable,
        default: async | trappable | tracing,
    },
    exports: { default: async },
    trappable_error_type: {
        "platform:connector/bus.bus-error" => crate::bus::PublishRefused,
        "platform:connector/secrets.secret-error" => crate::runtime::SecretRefused,
    },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "platform:connector/cache.fetch-leave": crate::tenancy::FetchLeave,
        "platform:connector/trace.span": crate::runtime::call_trace::GuestSpan,
    },
    require_store_data_send: true,
});

/// The optional `tokens` export.
pub mod token_issuer {
    wasmtime::component::bindgen!({ path: "../wit", world: "token-issuer", exports: { default: async } });
    pub use exports::platform::connector::tokens::{AccessToken, TokenError, TokenRequest};
}

/// The optional `message-control` export.
pub mod message_controller {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "message-controller",
        exports: { default: async },
        // The same records as the base world's, not copies of them.
        with: { "platform:connector/types": super::platform::connector::types },
    });
}

/// The optional `provisioning` export.
pub mod provisioner {
    wasmtime::component::bindgen!({ path: "../wit", world: "provisioner", exports: { default: async } });
    pub use exports::platform::connector::provisioning::{SettingState, WebhookSetting, WiringReport};
}

/// The optional `webhooks` export: a webhook in one call.
pub mod webhook_handler {
    wasmtime::component::bindgen!({ path: "../wit", world: "webhook-handler", exports: { default: async } });
    pub use exports::platform::connector::webhooks::{WebhookRequest, WebhookResponse};
}

/// The optional `simulator` export.
pub mod webhook_simulator {
    wasmtime::component::bindgen!({ path: "../wit", world: "webhook-simulator", exports: { default: async } });
    pub use exports::platform::connector::simulator::SimulatedRequest;
}

pub use exports::platform::connector::connector::{Descriptor, EgressPlan};
pub use platform::connector::bus::{BusError, BusMessage, Receipt};
pub use platform::connector::types::{
    Accepted, Attribute, Button, Channel, ConsentAction, ConsentEvent, EgressMessage, ErrorClass, IngressEnvelope,
    Location, Media, Profile, ProviderError, Reconciliation, Referral, RejectedDelivery, RetryHint, SendError,
    StatusEvent, Template,
};
pub use provisioner::{SettingState, WebhookSetting, WiringReport};
pub use token_issuer::{AccessToken, TokenError, TokenRequest};
pub use webhook_simulator::SimulatedRequest;
