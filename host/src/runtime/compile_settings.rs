//! The wasmtime settings that decide how a component is compiled. The
//! runtime's engines start from them, and the build script precompiles the
//! bundled components with them (`build.rs`): a compiled artifact loads only
//! into an engine whose settings match, so both must read this one file.
//! What does not change the compiled code (the instance allocator, the
//! profiler) is set by the runtime alone.

/// The compile settings every engine of the service shares.
pub fn compile_settings() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}
