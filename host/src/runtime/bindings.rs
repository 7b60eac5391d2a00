//! Host bindings generated from `wit/`, the one source of truth shared with the guest.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "connector-world",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
    require_store_data_send: true,
});

pub use exports::platform::connector::connector::{
    AccessToken, Descriptor, SimulatedRequest, TokenError, TokenRequest,
};
pub use platform::connector::bus::{BusError, BusMessage, Receipt};
pub use platform::connector::types::{
    Accepted, Attribute, Channel, EgressMessage, IngressEnvelope, Media, ProviderError, RetryHint, SendError,
    StatusEvent,
};
