//! Swap latency: from the trigger (`POST /admin/reload`) to the first request
//! answered by the new version, compiling cold against taking the compiled
//! artifact from the cache. The cached swap is reported as a ratio of the
//! cold one, both measured in this invocation.
//!
//! Then the compile cache alone: loading a compiled component from this
//! host's cache (a memory-mapped `.cwasm`) against wasmtime's own cache
//! (`Config::cache`, zstd-compressed entries), both warm, same engine settings.
//!
//! `cargo bench -p bench --bench swap`

use std::time::{Duration, Instant};

use harness::{Harness, Signature, borrowed, minimal_sms, post_webhook};

const ROUNDS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut harness = Harness::new();
        let path = harness.dir.path().join("twilio.wasm");
        let cache = harness.dir.path().join("data").join("compile-cache");
        let v1 = ingress_egress::bundled::get("twilio").expect("bundled").to_vec();
        let v2 = std::fs::read(harness::fixture("twilio-v2")).expect("v2 fixture");
        std::fs::write(&path, &v1).expect("write");
        harness.env.set("CONNECTOR_TWILIO_COMPONENT", path.to_str().expect("utf-8"));
        harness.edit_architecture(|text| text.replace("watch_components: true", "watch_components: false"));
        let service = harness.start().await;

        let swap = |cold: bool, round: usize| {
            let (path, cache, v1, v2) = (&path, &cache, &v1, &v2);
            let service = &service;
            async move {
                // Alternate versions on every swap, so each is a real change.
                std::fs::write(path, if round.is_multiple_of(2) { v2 } else { v1 }).expect("write");
                if cold {
                    let _ = std::fs::remove_dir_all(cache);
                }
                let started = Instant::now();
                let (status, body) = harness::admin_post(service, "/admin/reload", &[], Vec::new()).await;
                assert!(status == 200 && body.contains("swapped"), "{status} {body}");
                let sid = format!("SM{}{round:031x}", if cold { 'c' } else { 'w' });
                let params = minimal_sms(&sid, "swap");
                let (status, _) =
                    post_webhook(service.public_addr, "/twilio/messaging", &borrowed(&params), Signature::Valid).await;
                assert_eq!(status, 200);
                started.elapsed()
            }
        };
        let mut cold = Vec::new();
        for round in 0..ROUNDS {
            cold.push(swap(true, round).await);
        }
        // Both versions are now in the cache.
        let mut cached = Vec::new();
        for round in ROUNDS..2 * ROUNDS {
            cached.push(swap(false, round).await);
        }
        let (cold, cached) = (median(cold), median(cached));
        println!("swap latency, trigger to first request on the new version (median of {ROUNDS}):");
        println!("cold compile (baseline)  {:>8.1} ms", cold.as_secs_f64() * 1e3);
        println!("from the compile cache   {:>8.1} ms", cached.as_secs_f64() * 1e3);
        println!("ratio (cached / cold): {:.3}", cached.as_secs_f64() / cold.as_secs_f64());
        service.stop().await.expect("stop");
    });
    compare_compile_caches();
}

/// Median time to get a ready `Component` from a warm cache: ours, then wasmtime's.
fn compare_compile_caches() {
    use ingress_egress::runtime::CompileCache;
    use wasmtime::component::Component;
    let bytes = ingress_egress::bundled::get("twilio").expect("bundled");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine_config = || {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        config
    };
    let engine = wasmtime::Engine::new(&engine_config()).expect("engine");
    let ours = CompileCache::new(Some(dir.path().join("ours")));
    ours.load_or_compile(&engine, bytes, "bench").expect("compile");
    let ours_times: Vec<Duration> = (0..ROUNDS * 4)
        .map(|_| {
            let started = Instant::now();
            let compiled = ours.load_or_compile(&engine, bytes, "bench").expect("load");
            assert_eq!(compiled.origin, ingress_egress::runtime::Origin::Cache);
            started.elapsed()
        })
        .collect();
    let mut cache_config = wasmtime::CacheConfig::new();
    cache_config.with_directory(dir.path().join("wasmtime"));
    let mut config = engine_config();
    config.cache(Some(wasmtime::Cache::new(cache_config).expect("wasmtime cache")));
    let engine = wasmtime::Engine::new(&config).expect("engine with cache");
    Component::new(&engine, bytes).expect("compile");
    let theirs_times: Vec<Duration> = (0..ROUNDS * 4)
        .map(|_| {
            let started = Instant::now();
            Component::new(&engine, bytes).expect("load");
            started.elapsed()
        })
        .collect();
    let (ours, theirs) = (median(ours_times), median(theirs_times));
    println!("\ncompile cache, warm load of the Twilio component (median of {}):", ROUNDS * 4);
    println!("wasmtime Config::cache (baseline) {:>8.2} ms", theirs.as_secs_f64() * 1e3);
    println!("this host's CompileCache          {:>8.2} ms", ours.as_secs_f64() * 1e3);
    println!("ratio (ours / wasmtime's): {:.3}", ours.as_secs_f64() / theirs.as_secs_f64());
}
