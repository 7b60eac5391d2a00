//! Per-sender rate limits: a token bucket per `From` number or messaging service.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets keyed by sender, refilled at `rate` per second, holding at most `burst`.
#[derive(Debug)]
pub struct SenderRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl SenderRates {
    pub fn new(rate_per_second: f64) -> Self {
        Self { rate: rate_per_second, burst: rate_per_second.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `sender`: `None` when it may send now, else how long to wait.
    /// A caller that waits must ask again (someone else may have taken the token).
    pub fn try_acquire(&self, sender: &str, now: Instant) -> Option<Duration> {
        let Ok(mut buckets) = self.buckets.lock() else { return None };
        let bucket = buckets.entry(sender.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Waits until `sender` may send, or gives up after `max_wait` (returns false).
    pub async fn acquire(&self, sender: &str, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            let now = Instant::now();
            match self.try_acquire(sender, now) {
                None => return true,
                Some(wait) if now + wait > deadline => return false,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces_each_sender_separately() {
        let rates = SenderRates::new(2.0);
        let t0 = Instant::now();
        assert_eq!(rates.try_acquire("+1", t0), None);
        assert_eq!(rates.try_acquire("+1", t0), None);
        let wait = rates.try_acquire("+1", t0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Another sender has its own bucket.
        assert_eq!(rates.try_acquire("+2", t0), None);
        // Half a second later one token is back.
        assert_eq!(rates.try_acquire("+1", t0 + Duration::from_millis(500)), None);
        assert!(rates.try_acquire("+1", t0 + Duration::from_millis(500)).is_some());
    }
}
