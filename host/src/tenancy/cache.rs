//! A connector's cache: values it fetched from its provider, kept in this
//! process's memory only (never on disk, on the bus or in the state store),
//! each for at most a bounded time, at most a bounded number of them. Filling
//! it is bounded too: leave to fetch is granted at a set rate, to a set
//! number at once, and to one fetch per key, and is refused at once
//! otherwise, so a flood of unknown keys costs a flood of refusals, not calls.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::CacheConfig;
use crate::telemetry::metrics;

/// One connector's cache and its fetch bounds, shared by its instances.
#[derive(Debug)]
pub struct FetchCache {
    connector: String,
    max_ttl: Duration,
    concurrent_fetches: usize,
    entries: quick_cache::sync::Cache<String, Entry>,
    rate: DefaultDirectRateLimiter,
    /// Keys being fetched now.
    in_flight: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Arc<str>,
    put_at: Instant,
    expires_at: Instant,
}

/// Why leave to fetch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRefused {
    /// Another instance is fetching this key now.
    InFlight,
    /// The rate or the number at once is used up.
    Exhausted,
}

/// Leave to fetch one key; given back when dropped (also when the instance
/// holding it traps and its store is thrown away).
#[derive(Debug)]
pub struct FetchLeave {
    cache: Arc<FetchCache>,
    key: String,
}

impl Drop for FetchLeave {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.cache.in_flight.lock() {
            in_flight.remove(&self.key);
        }
    }
}

impl FetchCache {
    /// An empty cache for `connector`, bounded as `config` says.
    pub fn new(connector: &str, config: &CacheConfig) -> Self {
        let per_second = NonZeroU32::new(config.fetches_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.fetch_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            connector: connector.to_owned(),
            max_ttl: config.max_ttl,
            concurrent_fetches: usize::try_from(config.concurrent_fetches).unwrap_or(usize::MAX),
            entries: quick_cache::sync::Cache::new(usize::try_from(config.max_entries).unwrap_or(usize::MAX)),
            rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            in_flight: Mutex::default(),
        }
    }

    /// The value at `key` and its age, unless it expired.
    pub fn get(&self, key: &str) -> Option<(Arc<str>, Duration)> {
        let entry = self.entries.get(key)?;
        let now = Instant::now();
        if now >= entry.expires_at {
            self.entries.remove(key);
            return None;
        }
        Some((entry.value, now.duration_since(entry.put_at)))
    }

    /// Keeps `value` at `key` for `ttl`, at most the cache's own bound.
    pub fn put(&self, key: String, value: String, ttl: Duration) {
        let now = Instant::now();
        let entry = Entry { value: value.into(), put_at: now, expires_at: now + ttl.min(self.max_ttl) };
        self.entries.insert(key, entry);
        metrics::cache_entries(&self.connector, self.entries.len());
    }

    /// Leave to fetch `key` now, or why not; never waits.
    pub fn begin_fetch(self: &Arc<Self>, key: &str) -> Result<FetchLeave, FetchRefused> {
        let granted = self.grant(key);
        metrics::cache_fetch(
            &self.connector,
            match granted {
                Ok(()) => "granted",
                Err(FetchRefused::InFlight) => "in-flight",
                Err(FetchRefused::Exhausted) => "exhausted",
            },
        );
        granted.map(|()| FetchLeave { cache: self.clone(), key: key.to_owned() })
    }

    fn grant(&self, key: &str) -> Result<(), FetchRefused> {
        let mut in_flight = self.in_flight.lock().map_err(|_| FetchRefused::Exhausted)?;
        if in_flight.contains(key) {
            return Err(FetchRefused::InFlight);
        }
        // The rate is asked last, so a refusal for another reason spends none of it.
        if in_flight.len() >= self.concurrent_fetches || self.rate.check().is_err() {
            return Err(FetchRefused::Exhausted);
        }
        in_flight.insert(key.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(per_second: u32, burst: u32, at_once: u32) -> Arc<FetchCache> {
        let config = CacheConfig {
            max_entries: 4,
            max_ttl: Duration::from_secs(60),
            fetches_per_second: per_second,
            fetch_burst: burst,
            concurrent_fetches: at_once,
        };
        Arc::new(FetchCache::new("test", &config))
    }

    #[test]
    fn values_expire_and_the_ttl_is_bounded() {
        let cache = cache(1, 1, 1);
        cache.put("a".into(), "1".into(), Duration::from_millis(30));
        assert_eq!(cache.get("a").map(|(v, _)| v.to_string()), Some("1".into()));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("a").is_none(), "expired");
        cache.put("b".into(), "2".into(), Duration::from_secs(86_400));
        let entry = cache.entries.get("b").expect("kept");
        assert!(entry.expires_at <= Instant::now() + Duration::from_secs(60), "at most max_ttl");
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_entries() {
        let cache = cache(1, 1, 1);
        for i in 0..100 {
            cache.put(format!("k{i}"), "v".into(), Duration::from_secs(60));
        }
        assert!(cache.entries.len() <= 4, "{}", cache.entries.len());
    }

    #[test]
    fn fetches_are_one_per_key_bounded_at_once_and_in_rate() {
        let cache = cache(1000, 1000, 2);
        let first = cache.begin_fetch("a").expect("granted");
        assert_eq!(cache.begin_fetch("a").unwrap_err(), FetchRefused::InFlight);
        let second = cache.begin_fetch("b").expect("granted");
        assert_eq!(cache.begin_fetch("c").unwrap_err(), FetchRefused::Exhausted, "two at once");
        drop(first);
        let _third = cache.begin_fetch("a").expect("given back when dropped");
        drop(second);

        let slow = cache_with_rate(3);
        let granted = (0..300).filter(|i| slow.begin_fetch(&format!("forged{i}")).is_ok()).count();
        assert_eq!(granted, 3, "a burst of 3, then the rate: 300 keys cost 3 fetches");
    }

    fn cache_with_rate(burst: u32) -> Arc<FetchCache> {
        cache(1, burst, 1000)
    }
}
