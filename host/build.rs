//! Builds the connector components for wasm32-wasip2, so nobody builds wasm by
//! hand: `cargo build`/`cargo test` of the host builds the guest first.
//!
//! The guest gets its own target directory (no lock contention with this build)
//! and none of the host's RUSTFLAGS. The artifacts are bundled into the binary
//! and their paths exported for the tests.
//!
//! Each bundled component is also precompiled here, with the runtime's own
//! compile settings (`src/runtime/compile_settings.rs`), and bundled beside
//! its bytes under its content hash: a first start deserializes it rather
//! than compiling (docs/performance.md, "First start").

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

#[path = "src/runtime/compile_settings.rs"]
mod compile_settings;

/// (package, artifact file stem, name it is bundled under)
const COMPONENTS: &[(&str, &str, &str)] = &[("twilio-connector", "twilio_connector", "twilio")];

/// Build-time environment of one component build.
type BuildEnv = &'static [(&'static str, &'static str)];

/// Test fixtures: (package, artifact stem, fixture name, build-time environment).
/// Not bundled; their paths are exported for the harness.
const FIXTURES: &[(&str, &str, &str, BuildEnv)] = &[
    ("probe-connector", "probe_connector", "probe", &[]),
    ("probe-connector", "probe_connector", "probe-v2", &[("PROBE_VERSION", "2")]),
    ("probe-connector", "probe_connector", "probe-trap-describe", &[("PROBE_MODE", "trap")]),
    // A second build of the real connector that differs observably, for hot swap.
    ("twilio-connector", "twilio_connector", "twilio-v2", &[("CONNECTOR_VERSION", "0.2.0-test")]),
];

fn main() {
    require_wasm_target();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace").to_owned();
    // Relative to this package, not absolute: two checkouts sharing one target
    // directory (CI's clean clone beside the working copy) share this build
    // script's fingerprint, and an absolute path would watch the other one.
    for watched in ["component/src", "component/Cargo.toml", "wit", "Cargo.lock", "tests/fixtures/probe/src"] {
        println!("cargo:rerun-if-changed=../{watched}");
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=CONNECTOR_VERSION");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { workspace.join(dir) })
        .unwrap_or_else(|| workspace.join("target"))
        .join("wasm");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut bundled = String::from(
        "/// Components built into this binary: (name, bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    let mut precompiled = String::from(
        "/// The bundled components compiled at build time: (content hash, compiled bytes).\n\
         pub static PRECOMPILED: &[(&str, &[u8])] = &[\n",
    );
    for (package, stem, name) in COMPONENTS {
        build(&workspace, &target_dir, package, &[]);
        let artifact = target_dir.join("wasm32-wasip2/release").join(format!("{stem}.wasm"));
        let copy = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&artifact, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", artifact.display()));
        bundled.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", copy.display().to_string()));
        println!("cargo:rustc-env=COMPONENT_{}_WASM={}", name.to_uppercase(), copy.display());
        if let Some((hash, compiled)) = precompile(&copy, &out_dir.join(format!("{name}.cwasm"))) {
            precompiled.push_str(&format!("    ({hash:?}, include_bytes!({:?})),\n", compiled.display().to_string()));
        }
    }
    bundled.push_str("];\n\n");
    bundled.push_str(&precompiled);
    bundled.push_str("];\n\n/// Test fixture components: (name, path).\npub static FIXTURES: &[(&str, &str)] = &[\n");
    for (package, stem, name, env) in FIXTURES {
        build(&workspace, &target_dir, package, env);
        let artifact = target_dir.join("wasm32-wasip2/release").join(format!("{stem}.wasm"));
        let copy = out_dir.join(format!("fixture-{name}.wasm"));
        std::fs::copy(&artifact, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", artifact.display()));
        bundled.push_str(&format!("    ({name:?}, {:?}),\n", copy.display().to_string()));
    }
    bundled.push_str("];\n");
    std::fs::write(out_dir.join("bundled.rs"), bundled).expect("writing bundled.rs");
}

/// Compiles the component at `wasm` for this machine, as the runtime's
/// engine would, into `out`: its content hash (as `runtime::content_hash`
/// names it) and the artifact. None when the binary is built for another
/// architecture or system than this machine's (the runtime then compiles at
/// first start); another libc (a static musl build) runs the same code.
fn precompile(wasm: &Path, out: &Path) -> Option<(String, PathBuf)> {
    let arch_and_system = |triple: String| {
        let parts: Vec<String> = triple.split('-').map(str::to_owned).collect();
        (parts.first().cloned(), parts.get(2).cloned())
    };
    let (target, host) = (std::env::var("TARGET").unwrap_or_default(), std::env::var("HOST").unwrap_or_default());
    if arch_and_system(target) != arch_and_system(host) {
        println!("cargo::warning=cross-compiling: the bundled components are compiled at first start instead");
        return None;
    }
    let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display()));
    let engine = wasmtime::Engine::new(&compile_settings::compile_settings())
        .unwrap_or_else(|e| fail(&format!("creating the engine that precompiles the components: {e}")));
    let compiled = engine
        .precompile_component(&bytes)
        .unwrap_or_else(|e| fail(&format!("precompiling {}: {e:#}", wasm.display())));
    std::fs::write(out, compiled).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    Some((hex::encode(sha2::Sha256::digest(&bytes)), out.to_owned()))
}

/// Stops the build with one line that says what to run when the toolchain has
/// no `wasm32-wasip2` target (otherwise the error is "can't find crate for
/// `core`" deep in the guest build's output).
fn require_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if sysroot.is_some_and(|root| !root.join("lib/rustlib/wasm32-wasip2").is_dir()) {
        fail("the wasm32-wasip2 target is not installed for this toolchain: run scripts/setup");
    }
}

/// Ends the build script with `message` as the one line that matters.
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1)
}

/// `cargo rustc --crate-type cdylib`: the crates are plain libraries natively
/// (a native cdylib cannot link the component's export names).
fn build(workspace: &Path, target_dir: &Path, package: &str, env: &[(&str, &str)]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "rustc",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--crate-type",
            "cdylib",
            "-p",
            package,
            "--target-dir",
        ])
        .arg(target_dir);
    // The host's flags (coverage, sanitizers, target-cpu) are not the guest's.
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER", "CARGO_TARGET_DIR"]
    {
        command.env_remove(var);
    }
    command.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    for (key, value) in env {
        command.env(key, value);
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(_) => fail(&format!("building the {package} component for wasm32-wasip2 failed (its errors are above)")),
        Err(e) => fail(&format!("cannot run cargo to build the {package} component: {e}")),
    }
}
