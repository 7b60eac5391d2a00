//! The wasmtime runtime: one engine, one linker, and connectors loaded into it.
//!
//! Every store gets an epoch deadline and a memory limit; every call a
//! wall-clock bound. A store that trapped is never entered again.

pub mod bindings;
mod cache;
mod connector;
mod grants;
mod pool;
mod state;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use cache::CompileCache;
pub use connector::{CallError, CallFailure, Connector, LoadError, content_hash};
pub use grants::{Grants, OutboundAllowList};
pub use state::{InstanceState, SecretRefused};

use crate::config::Limits;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine and linker every connector shares.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<InstanceState>>,
    limits: Limits,
    cache: CompileCache,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Runtime {
    /// `cache_dir` holds compiled components between runs (none: compile every time).
    pub fn new(limits: &Limits, cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let engine = pooled_engine(limits).or_else(|e| {
            tracing::warn!(error = %e, "the pooling allocator is not available here; allocating instances on demand");
            Engine::new(&base_config()).map_err(anyhow::Error::from)
        })?;
        let mut linker = Linker::<InstanceState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        link_host_interfaces(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking the connector's host interfaces")?;
        spawn_epoch_ticker(&engine);
        Ok(Self { engine, linker: Arc::new(linker), limits: limits.clone(), cache: CompileCache::new(cache_dir) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles, links and describes a connector; it is ready for traffic when this returns.
    pub async fn load(&self, bytes: Vec<u8>, grants: Arc<Grants>) -> Result<Connector, LoadError> {
        Connector::load(self, bytes, grants).await
    }
}

/// Reads a component's bytes from where its configuration says: built into
/// this binary, or a file (whose path the error names).
pub fn read_component(source: &crate::config::ComponentSource) -> anyhow::Result<Vec<u8>> {
    use crate::config::ComponentSource;
    match source {
        ComponentSource::Bundled(name) => {
            crate::bundled::get(name).map(<[u8]>::to_vec).with_context(|| format!("no component bundled as {name}"))
        }
        ComponentSource::File(path) => std::fs::read(path).with_context(|| {
            format!(
                "cannot read the component {}",
                std::path::absolute(path).unwrap_or_else(|_| path.clone()).display()
            )
        }),
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    // `perf` can name guest functions when asked to (writes /tmp/perf-PID.map).
    if std::env::var_os("WASMTIME_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// An engine whose instances come from pre-reserved slots: instantiation is a
/// few page-table operations instead of fresh mappings. It needs a large
/// virtual address space; [`Runtime::new`] falls back when it is refused.
fn pooled_engine(limits: &Limits) -> anyhow::Result<Engine> {
    let instances = limits.max_concurrent_instances;
    let mut pooling = wasmtime::PoolingAllocationConfig::new();
    pooling
        .total_component_instances(instances)
        // A Rust wasip2 component is a few core instances (the program and
        // wit-component's shims) with one memory and a few tables.
        .max_core_instances_per_component(16)
        .total_core_instances(instances.saturating_mul(16))
        .max_memories_per_component(4)
        .total_memories(instances.saturating_mul(2))
        .max_tables_per_component(16)
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances)
        .max_memory_size(limits.memory_bytes)
        .max_unused_warm_slots(instances / 4);
    let mut config = base_config();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(anyhow::Error::from).context("creating the pooled wasmtime engine")
}

/// The platform's own interfaces (the WASI ones are linked by their crates).
fn link_host_interfaces(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    use bindings::platform::connector::{bus, config, log, secrets, types};
    types::add_to_linker::<_, HasSelf<InstanceState>>(linker, |state| state)?;
    secrets::add_to_linker::<_, HasSelf<InstanceState>>(linker, |state| state)?;
    config::add_to_linker::<_, HasSelf<InstanceState>>(linker, |state| state)?;
    bus::add_to_linker::<_, HasSelf<InstanceState>>(linker, |state| state)?;
    log::add_to_linker::<_, HasSelf<InstanceState>>(linker, |state| state)
}

/// Advances the engine's epoch from a plain thread, so a guest stuck in a
/// loop is interrupted even when every async worker is busy.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch ticker: guest loops will only end at the call timeout");
    }
}
