//! The compile cache: compiled components on disk, keyed by the component's
//! content hash and the engine's compatibility hash, so a restart or a swap
//! back to a known version does not compile again. Before it, the bundled
//! components' compiled forms, made when the binary was built: a first start
//! on an empty data directory compiles nothing.
//!
//! Why not wasmtime's own cache (`Config::cache`): it stores entries
//! zstd-compressed and copies them back into memory, where this one maps the
//! `.cwasm` file as it is. A warm load of the Twilio component takes 0.24 ms
//! here against 8.11 ms through wasmtime's cache (median of 20, ratio 0.030,
//! `cargo bench -p bench --bench swap`, 2 cores), and a swap is mostly that load.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled artifacts live; `None` disables the cache.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

/// A compiled component and where its compiled form came from.
#[derive(Debug)]
pub struct Compiled {
    pub component: Component,
    pub origin: Origin,
}

/// Where a component's compiled form came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Compiled when the binary was built (a bundled component).
    Precompiled,
    /// The compile cache on disk.
    Cache,
    /// Compiled as it was loaded.
    Compiled,
}

impl CompileCache {
    /// A cache in `dir`; `None` compiles every time.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, engine: &Engine, content_hash: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(dir.join(format!("{content_hash}-{:016x}.cwasm", hasher.finish())))
    }

    /// Loads the compiled form of `bytes` from the cache, or compiles and stores it.
    /// Blocking: call it off the request path.
    pub fn load_or_compile(&self, engine: &Engine, bytes: &[u8], content_hash: &str) -> anyhow::Result<Compiled> {
        if let Some(component) = precompiled(engine, content_hash) {
            return Ok(Compiled { component, origin: Origin::Precompiled });
        }
        let Some(path) = self.path(engine, content_hash) else {
            return Ok(Compiled {
                component: Component::new(engine, bytes).map_err(anyhow::Error::from)?,
                origin: Origin::Compiled,
            });
        };
        if path.is_file() {
            // SAFETY: the file is ours: written below by this engine's own
            // `precompile_component`, under a name bound to the engine's
            // compatibility hash; a file that fails to deserialize is recompiled.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(Compiled { component, origin: Origin::Cache }),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable compile cache entry; recompiling")
                }
            }
        }
        let compiled = engine.precompile_component(bytes).map_err(anyhow::Error::from)?;
        // SAFETY: `compiled` was produced by this engine just above.
        let component = unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)?;
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
        }
        Ok(Compiled { component, origin: Origin::Compiled })
    }
}

/// The build's compiled form of the bundled component `content_hash`, when
/// there is one and it fits `engine`; a misfit (another CPU's features,
/// another wasmtime) is said, and the caller compiles.
fn precompiled(engine: &Engine, content_hash: &str) -> Option<Component> {
    let bytes = crate::bundled::precompiled(content_hash)?;
    // SAFETY: the bytes were made by this binary's build script, by
    // `Engine::precompile_component` with the runtime's compile settings;
    // wasmtime checks that they fit this engine and host before using them.
    match unsafe { Component::deserialize(engine, bytes) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the component compiled at build time does not fit this engine; compiling it");
            None
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("cache path without a directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first component built into this binary, and its content hash.
    fn bundled() -> (&'static [u8], String) {
        let (_, bytes) = crate::bundled::BUNDLED.first().expect("a bundled component");
        (bytes, crate::runtime::content_hash(bytes))
    }

    #[test]
    fn a_bundled_component_is_compiled_at_build_time_for_the_runtimes_settings() {
        let (bytes, hash) = bundled();
        let engine = Engine::new(&super::super::compile_settings::compile_settings()).unwrap();
        let compiled = CompileCache::new(None).load_or_compile(&engine, bytes, &hash).unwrap();
        assert_eq!(compiled.origin, Origin::Precompiled);
    }

    #[test]
    fn an_engine_the_build_did_not_compile_for_compiles_it_itself() {
        let (bytes, hash) = bundled();
        let mut other = super::super::compile_settings::compile_settings();
        other.epoch_interruption(false);
        let engine = Engine::new(&other).unwrap();
        let compiled = CompileCache::new(None).load_or_compile(&engine, bytes, &hash).unwrap();
        assert_eq!(compiled.origin, Origin::Compiled);
    }
}
