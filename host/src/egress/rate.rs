//! Per-sender rate limits: a keyed GCRA limiter (governor), one key per
//! sender as the connector names it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

/// Keys not seen for a while are forgotten every this many acquisitions.
const EVICT_EVERY: u64 = 4096;

type Limiter = RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// Rate limits keyed by sender: `rate` messages per second each, bursts of up to `rate`.
#[derive(Debug)]
pub struct SenderRates {
    limiter: Limiter,
    acquisitions: AtomicU64,
}

impl SenderRates {
    /// `rate_per_second` must be positive (the configuration guarantees it).
    pub fn new(rate_per_second: f64) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate_per_second.max(f64::MIN_POSITIVE));
        let burst = NonZeroU32::new(rate_per_second.max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        Self { limiter: RateLimiter::keyed(quota), acquisitions: AtomicU64::new(0) }
    }

    /// Takes one cell for `sender`: `None` when it may send now, else how long to wait.
    pub fn try_acquire(&self, sender: &str) -> Option<Duration> {
        if self.acquisitions.fetch_add(1, Ordering::Relaxed) % EVICT_EVERY == EVICT_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let clock = self.limiter.clock();
        self.limiter.check_key(&sender.to_owned()).err().map(|not_until| not_until.wait_time_from(clock.now()))
    }

    /// Waits until `sender` may send, or gives up after `max_wait` (returns false).
    pub async fn acquire(&self, sender: &str, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_acquire(sender) {
                None => return true,
                Some(wait) if Instant::now() + wait > deadline => return false,
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
        assert_eq!(rates.try_acquire("+1"), None);
        assert_eq!(rates.try_acquire("+1"), None);
        let wait = rates.try_acquire("+1").expect("the third in a burst of two waits");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Another sender has its own budget.
        assert_eq!(rates.try_acquire("+2"), None);
        std::thread::sleep(wait);
        assert_eq!(rates.try_acquire("+1"), None);
        assert!(rates.try_acquire("+1").is_some());
    }
}
