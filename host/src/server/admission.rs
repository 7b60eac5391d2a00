//! Shedding instead of stalling: a cap on open public connections, and a
//! back-off when accepting fails.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics;

/// The cap on open public connections (`limits.max_connections`).
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
}

/// An open public connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
    max: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // The permit is released after this body: one more slot is free.
        metrics::connections_open(self.max - self.slots.available_permits() - 1);
    }
}

impl Admission {
    /// At most `max` public connections at once.
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max)), max }
    }

    /// A place for a new connection, or `None` when `max` are open: the
    /// caller closes it at once, which costs the peer one round trip and the
    /// service nothing, where queueing it would hold a descriptor and memory.
    pub fn admit(&self) -> Option<Admitted> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics::connections_open(self.max - self.slots.available_permits());
                Some(Admitted { _permit: permit, slots: self.slots.clone(), max: self.max })
            }
            Err(_) => {
                metrics::connection_shed();
                None
            }
        }
    }
}

/// Accept failures, mostly descriptors exhausted (EMFILE, ENFILE) or kernel
/// buffers (ENOBUFS): they pass once connections close. Accepting again at
/// once would spin a core and write a log line per attempt, so each failure
/// waits, doubling from 5 ms up to 1 s, and the log says so once a second at
/// most, with how many it did not say.
#[derive(Debug)]
pub struct AcceptErrors {
    delay: Duration,
    log: DefaultDirectRateLimiter,
    unlogged: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self { delay: Self::FIRST, log: RateLimiter::direct(Quota::per_second(NonZeroU32::MIN)), unlogged: 0 }
    }
}

impl AcceptErrors {
    const FIRST: Duration = Duration::from_millis(5);
    const MOST: Duration = Duration::from_secs(1);

    /// Counts and (rate-limited) logs `error`, then waits before the next
    /// accept, unless `stop` comes first.
    pub async fn back_off(&mut self, error: &std::io::Error, stop: &CancellationToken) {
        metrics::accept_error();
        if self.log.check().is_ok() {
            let unlogged = std::mem::take(&mut self.unlogged);
            tracing::warn!(%error, retry_in = ?self.delay, unlogged, "accept failed; backing off");
        } else {
            self.unlogged += 1;
        }
        stop.run_until_cancelled(tokio::time::sleep(self.delay)).await;
        self.delay = (self.delay * 2).min(Self::MOST);
    }

    /// An accept succeeded: the next failure starts from the shortest wait.
    pub fn reset(&mut self) {
        self.delay = Self::FIRST;
    }
}
