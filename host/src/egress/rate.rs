//! Per-sender rate limits, one key per sender as the connector names it.
//!
//! - One host (the embedded bus): a keyed GCRA limiter in memory (governor).
//! - Several hosts on one NATS bus: the same GCRA, its state in the bus's
//!   key-value store ([`SharedRates`]), so that the pace holds for the whole
//!   service however many hosts send, and a host that joins or leaves
//!   changes nothing.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::bus::{Bus, BusError, StateWrite};

/// Keys not seen for a while are forgotten every this many acquisitions.
const EVICT_EVERY: u64 = 4096;

type Limiter = RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// Both limiters' GCRA cell for `rate_per_second`: the time between two
/// sends, and the burst allowed at once (a second's worth, at least one).
fn cell(rate_per_second: f64) -> (Duration, NonZeroU32) {
    let period = Duration::from_secs_f64(1.0 / rate_per_second.max(f64::MIN_POSITIVE));
    let burst = NonZeroU32::new(rate_per_second.max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    (period, burst)
}

/// Rate limits keyed by sender: `rate` messages per second each, bursts of up to `rate`.
#[derive(Debug)]
pub struct SenderRates {
    limiter: Limiter,
    acquisitions: AtomicU64,
}

impl SenderRates {
    /// `rate_per_second` must be positive (the configuration guarantees it).
    pub fn new(rate_per_second: f64) -> Self {
        let (period, burst) = cell(rate_per_second);
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

    /// Waits until `sender` may send; when that is further than `max_wait`
    /// away, waits not at all and answers how far (`Err`).
    pub async fn acquire(&self, sender: &str, max_wait: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_acquire(sender) {
                None => return Ok(()),
                Some(wait) if Instant::now() + wait > deadline => return Err(wait),
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// The pace of each sender: this host's own, or one shared by every host
/// of the bus.
#[derive(Debug)]
pub enum Pace {
    /// In memory: the embedded bus has one host.
    Local(SenderRates),
    /// In the bus's state, shared by its hosts.
    Shared(SharedRates),
}

impl Pace {
    /// Waits until `sender` may send; when that is further than `max_wait`
    /// away, waits not at all and answers how far (`Err`).
    pub async fn acquire(&self, sender: &str, max_wait: Duration) -> Result<(), Duration> {
        match self {
            Self::Local(rates) => rates.acquire(sender, max_wait).await,
            Self::Shared(rates) => rates.acquire(sender, max_wait).await,
        }
    }
}

/// The state bucket of shared paces (no connector is named so).
const PACES: &str = "_pace";
/// Compare-and-set rounds lost to other hosts before a message waits its turn on the bus instead.
const MOST_ROUNDS: usize = 32;

/// One GCRA per sender for every host of a bus: the sender's theoretical
/// arrival time (TAT, Unix microseconds) is a key of the bus's state, moved
/// forward by compare-and-set. A host reserves the next slot (at most
/// `max_wait` ahead), then sleeps until it. Nothing is elected or leased:
/// the key-value store's revision check is the only agreement, and each
/// send costs one read and one conditional write.
///
/// While the bus's state cannot be reached, each host falls back to its own
/// limiter (a pace per host, as before: sends are not stopped for it).
#[derive(Debug)]
pub struct SharedRates {
    bus: Arc<dyn Bus>,
    /// One cell: the time between two sends of a sender.
    period: Duration,
    /// How far ahead of now the TAT may be and a send still go at once: a
    /// burst of `rate` messages, as the local limiter allows.
    tolerance: Duration,
    fallback: SenderRates,
}

impl SharedRates {
    /// `rate_per_second` for each sender, over every host of `bus`.
    pub fn new(bus: Arc<dyn Bus>, rate_per_second: f64) -> Self {
        let (period, burst) = cell(rate_per_second);
        let tolerance = period * (burst.get() - 1);
        Self { bus, period, tolerance, fallback: SenderRates::new(rate_per_second) }
    }

    /// Waits until `sender` may send; when that is further than `max_wait`
    /// away, waits not at all and answers how far (`Err`).
    pub async fn acquire(&self, sender: &str, max_wait: Duration) -> Result<(), Duration> {
        match self.reserve(sender, max_wait).await {
            Ok(Ok(wait)) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Ok(Err(later)) => Err(later),
            Err(e) => {
                tracing::warn!(error = %e, "the shared pace is out of reach: this host paces on its own");
                self.fallback.acquire(sender, max_wait).await
            }
        }
    }

    /// Reserves `sender`'s next slot: `Ok` with how long until it, or `Err`
    /// with how far it is when that is further than `max_wait` (nothing is
    /// reserved then; nor when other hosts kept winning the key: `Err` of a
    /// period).
    async fn reserve(&self, sender: &str, max_wait: Duration) -> Result<Result<Duration, Duration>, BusError> {
        let key = state_key(sender);
        for _ in 0..MOST_ROUNDS {
            let found = self.bus.state_get(PACES, &key).await?;
            let now = unix_micros();
            let tat = found.as_ref().and_then(|entry| entry.value.parse::<u64>().ok()).unwrap_or(0).max(now);
            let slot = tat.saturating_sub(micros(self.tolerance)).max(now);
            let wait = Duration::from_micros(slot - now);
            if wait > max_wait {
                return Ok(Err(wait));
            }
            let next = (tat + micros(self.period)).to_string();
            match self.bus.state_put(PACES, &key, next, found.map(|entry| entry.revision)).await? {
                StateWrite::Written(_) => return Ok(Ok(wait)),
                StateWrite::Conflict => continue,
            }
        }
        Ok(Err(self.period))
    }
}

/// A sender as a key the state accepts on both buses (letters, digits, `-`,
/// `_`, `=`): anything else, such as the `+` of a number, as `=` and its hex.
fn state_key(sender: &str) -> String {
    let mut key = String::with_capacity(sender.len() + 8);
    for byte in sender.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("={byte:02x}"));
        }
    }
    key
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, micros)
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

    #[test]
    fn sender_keys_are_state_keys() {
        assert_eq!(state_key("+14155550100"), "=2b14155550100");
        assert_eq!(state_key("whatsapp:+1 a"), "whatsapp=3a=2b1=20a");
        assert_eq!(state_key("MG0123abc"), "MG0123abc");
    }

    /// Two "hosts" on one bus share a sender's pace: a burst of `rate`,
    /// then one slot a period, whoever asks.
    #[tokio::test]
    async fn hosts_on_one_bus_share_a_senders_pace() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::BusConfig::embedded(dir.path());
        let bus: Arc<dyn Bus> =
            Arc::new(crate::bus::sqlite::SqliteBus::new(&dir.path().join("bus.sqlite3"), &config).unwrap());
        let (a, b) = (SharedRates::new(bus.clone(), 4.0), SharedRates::new(bus, 4.0));
        let far = Duration::from_secs(60);
        let mut waits = Vec::new();
        for host in [&a, &b, &a, &b, &a, &b, &a, &b] {
            waits.push(host.reserve("+14155550100", far).await.unwrap().unwrap());
        }
        assert!(waits[..4].iter().all(|w| w.is_zero()), "a burst of 4: {waits:?}");
        for (n, wait) in waits[4..].iter().enumerate() {
            let expected = Duration::from_millis(250 * (n as u64 + 1));
            assert!(wait.abs_diff(expected) < Duration::from_millis(50), "slot {}: {wait:?}", n + 4);
        }
        let later = a.reserve("+14155550100", Duration::from_millis(100)).await.unwrap().unwrap_err();
        assert!(later.abs_diff(Duration::from_millis(1250)) < Duration::from_millis(50), "past max_wait: {later:?}");
        assert_eq!(b.reserve("+14155550199", far).await.unwrap(), Ok(Duration::ZERO), "another sender is not slowed");
    }
}
