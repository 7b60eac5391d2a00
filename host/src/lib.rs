//! The ingress-egress host: runs sandboxed connector components under wasmtime.
//!
//! Organised by capability, one job per module:
//!
//! - [`config`]: architecture.yaml, the environment and secret files → typed config;
//! - [`runtime`]: wasmtime engine, linker, connector instances and their grants;
//! - [`bus`]: the platform bus (embedded SQLite);
//! - [`server`]: the public and admin HTTP listeners;
//! - [`telemetry`]: logs and metrics.
//!
//! The host knows connectors, not Twilio: everything provider-specific lives in
//! the component and in architecture.yaml.

/// Many small, short-lived allocations on several threads (request buffers,
/// strings lifted out of the guest): mimalloc serves them without the
/// arena-lock contention glibc's allocator shows under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod connectors;
pub mod egress;
pub mod messages;
pub mod runtime;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod watch;

/// Components built into this binary by the build script.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// The bundled component called `name`.
    pub fn get(name: &str) -> Option<&'static [u8]> {
        BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
    }

    /// Where the build put the test fixture component called `name`.
    pub fn fixture(name: &str) -> Option<&'static str> {
        FIXTURES.iter().find(|(n, _)| *n == name).map(|(_, path)| *path)
    }
}
