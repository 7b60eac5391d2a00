//! The ingress-egress host: runs sandboxed connector components under wasmtime.
//!
//! The host knows connectors, not any provider: everything provider-specific
//! lives in a component and in architecture.yaml.
//!
//! # Module map
//!
//! Starting up:
//! - [`cli`]: the `ingress-egress` commands; [`client`] is the small HTTP client
//!   the commands that talk to a running service use.
//! - [`config`]: architecture.yaml, the environment and secret files → typed
//!   config, one section per capability.
//! - [`service`]: `serve`: the bus, the connectors, then the list of
//!   capabilities that run until shutdown; [`lifecycle`] is the shape they
//!   share.
//!
//! Connectors:
//! - [`runtime`]: the wasmtime engine and linker, connector instances, their
//!   pools, grants and compile cache.
//! - [`connectors`]: the loaded connectors by name, their routes, hot swaps.
//! - [`watch`]: swaps a connector in when its component file changes.
//! - [`tenancy`]: what lets a connector serve many tenants: credential sets
//!   from a watched directory, and a bounded cache with bounded fetches.
//! - [`bundled`]: the components built into this binary.
//!
//! Traffic:
//! - [`server`]: the public (webhooks) and admin (loopback) HTTP listeners.
//! - [`egress`]: enqueueing egress messages and the workers that send them.
//! - [`bus`]: the platform bus (embedded SQLite or NATS JetStream).
//! - [`messages`]: the JSON the service publishes and consumes, as serde types.
//! - [`telemetry`]: logs, trace export (OpenTelemetry) and Prometheus metrics.

#![warn(missing_docs)]

/// Many small, short-lived allocations on several threads (request buffers,
/// strings lifted out of the guest): mimalloc serves them without the
/// arena-lock contention glibc's allocator shows under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod blobs;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod connectors;
pub mod egress;
pub mod lifecycle;
pub mod messages;
pub mod runtime;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tenancy;
pub mod watch;

/// Components built into this binary by the build script.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// The bundled component called `name`.
    pub fn get(name: &str) -> Option<&'static [u8]> {
        BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
    }

    /// The compiled form of the bundled component whose content hash is
    /// `content_hash`, made at build time with the runtime's settings.
    pub fn precompiled(content_hash: &str) -> Option<&'static [u8]> {
        PRECOMPILED.iter().find(|(hash, _)| *hash == content_hash).map(|(_, bytes)| *bytes)
    }

    /// Where the build put the test fixture component called `name`.
    pub fn fixture(name: &str) -> Option<&'static str> {
        FIXTURES.iter().find(|(n, _)| *n == name).map(|(_, path)| *path)
    }
}
