//! The embedded bus's de-duplication window: the (topic, key) pairs
//! published within the duplicate window, in memory.
//!
//! Why in memory: a unique index on random keys (Twilio's sids) costs every
//! commit one random index leaf per message, the largest share of the WAL
//! frames a commit writes (docs/performance.md, "The embedded bus"). Held
//! here, an insert touches only right-edge pages. The window is what
//! JetStream keeps for `Nats-Msg-Id` (the same setting): it is loaded from
//! the file at open, so a restart forgets nothing within it.
//!
//! A pair is held as a 128-bit fingerprint, keyed with random keys of this
//! process (SipHash): two keys of one topic collide with odds of about one
//! in 2^128 per lookup, and no sender can choose keys that collide.
//!
//! Keys are held in slices by time, oldest first, so that expiring is
//! dropping a slice; a lookup asks each slice (at most [`SLICES`] + 1). The
//! number of keys is bounded ([`DedupWindow::new`]): past the bound the
//! oldest slice goes early, and the window is shorter than configured until
//! the rate falls (logged).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::Duration;

/// Slices a full window is cut into: keys outlive the window by at most a
/// slice, and a lookup asks this many sets.
const SLICES: i64 = 16;

/// One published (topic, key), as the window holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u128);

/// Recently published keys, by time (see the module's doc).
#[derive(Debug)]
pub struct DedupWindow {
    hashers: (RandomState, RandomState),
    slices: VecDeque<Slice>,
    window_ms: i64,
    slice_ms: i64,
    max_keys: usize,
    keys: usize,
}

#[derive(Debug)]
struct Slice {
    started_ms: i64,
    newest_ms: i64,
    keys: Keys,
}

/// A set of fingerprints. They are already uniformly random, so the set's
/// hash is their low half: SipHash again would only cost time.
type Keys = HashSet<Fingerprint, BuildHasherDefault<LowHalf>>;

/// The hasher of [`Keys`]: a fingerprint's low 64 bits.
#[derive(Debug, Default)]
struct LowHalf(u64);

impl Hasher for LowHalf {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is called (by `Fingerprint`'s derived `Hash`).
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

impl DedupWindow {
    /// A window of `window`, holding at most `max_keys` keys.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        Self {
            hashers: (RandomState::new(), RandomState::new()),
            slices: VecDeque::new(),
            window_ms,
            slice_ms: (window_ms / SLICES).max(1),
            max_keys: max_keys.max(1),
            keys: 0,
        }
    }

    /// The fingerprint of `key` on `topic`.
    pub fn fingerprint(&self, topic: &str, key: &str) -> Fingerprint {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write(topic.as_bytes());
            hasher.write_u8(0xff); // not in UTF-8: no (topic, key) split is another's
            hasher.write(key.as_bytes());
            hasher.finish()
        };
        Fingerprint((u128::from(hash(&self.hashers.0)) << 64) | u128::from(hash(&self.hashers.1)))
    }

    /// Whether the key was published within the window.
    pub fn contains(&self, key: Fingerprint) -> bool {
        self.slices.iter().any(|slice| slice.keys.contains(&key))
    }

    /// Remembers a key published (committed) at `at_ms`; keys are given
    /// oldest first. Returns how far back the window reaches when the bound
    /// on keys cut it short, else nothing.
    pub fn insert(&mut self, key: Fingerprint, at_ms: i64) -> Option<Duration> {
        let per_slice = (self.max_keys / SLICES as usize).max(1);
        let fresh = match self.slices.back() {
            Some(newest) => at_ms >= newest.started_ms + self.slice_ms || newest.keys.len() >= per_slice,
            None => true,
        };
        if fresh {
            self.slices.push_back(Slice { started_ms: at_ms, newest_ms: at_ms, keys: Keys::default() });
        }
        let newest = self.slices.back_mut().expect("a slice was just made");
        newest.newest_ms = newest.newest_ms.max(at_ms);
        if newest.keys.insert(key) {
            self.keys += 1;
        }
        let mut cut = false;
        while self.keys > self.max_keys && self.slices.len() > 1 {
            self.drop_oldest();
            cut = true;
        }
        let reach = |oldest: &Slice| Duration::from_millis(u64::try_from(at_ms - oldest.started_ms).unwrap_or(0));
        cut.then(|| self.slices.front().map_or(Duration::ZERO, reach))
    }

    /// Forgets keys published before the window that ends at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        while self.slices.front().is_some_and(|oldest| oldest.newest_ms < cutoff) {
            self.drop_oldest();
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// The window's length: keys younger than this are always held (unless
    /// the bound on keys cut it short).
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self.slices.pop_front() {
            self.keys -= oldest.keys.len();
        }
    }
}

/// A batch's keys, before its commit: looked up with the window's (a key
/// published twice in one batch is a duplicate the second time), and given
/// to the window only once the commit succeeded (a failed commit stored
/// nothing, so its keys must not stop a retry).
#[derive(Debug, Default)]
pub struct BatchKeys(Keys);

impl BatchKeys {
    /// Whether `key` is in the window or earlier in this batch; remembers it if not.
    pub fn first_time(&mut self, window: &DedupWindow, key: Fingerprint) -> bool {
        !window.contains(key) && self.0.insert(key)
    }

    /// Forgets `key` (its insert failed: it was not stored).
    pub fn forget(&mut self, key: Fingerprint) {
        self.0.remove(&key);
    }

    /// Hands the batch's keys to the window (its commit at `at_ms` succeeded).
    pub fn commit(&mut self, window: &mut DedupWindow, at_ms: i64) -> Option<Duration> {
        self.0.drain().fold(None, |cut, key| window.insert(key, at_ms).or(cut))
    }

    /// Drops the batch's keys (its commit failed).
    pub fn discard(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn a_key_is_known_within_the_window_and_forgotten_after_it() {
        let mut window = DedupWindow::new(Duration::from_secs(3600), 1_000_000);
        let sid = window.fingerprint("ingress.t", "SM1");
        assert!(!window.contains(sid));
        window.insert(sid, 0);
        assert!(window.contains(sid));
        assert!(!window.contains(window.fingerprint("ingress.other", "SM1")), "keys are per topic");
        assert!(!window.contains(window.fingerprint("ingress.t", "SM2")));
        window.expire(60 * MINUTE);
        assert!(window.contains(sid), "still within the hour");
        window.insert(window.fingerprint("ingress.t", "later"), 60 * MINUTE);
        window.expire(60 * MINUTE + 1);
        assert!(!window.contains(sid), "an hour and a moment later it is gone");
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn expiring_keeps_every_key_younger_than_the_window() {
        let mut window = DedupWindow::new(Duration::from_secs(3600), 1_000_000);
        let keys: Vec<_> = (0..600).map(|i| (window.fingerprint("t", &format!("SM{i}")), i * 10_000)).collect();
        for &(key, at) in &keys {
            window.insert(key, at);
        }
        let now = 6_000_000;
        window.expire(now);
        for &(key, at) in &keys {
            if now - at <= 3_600_000 {
                assert!(window.contains(key), "published {} s ago", (now - at) / 1000);
            }
        }
        assert!(window.len() < 600, "the oldest went");
    }

    #[test]
    fn the_bound_on_keys_drops_the_oldest_and_says_how_far_the_window_reaches() {
        let mut window = DedupWindow::new(Duration::from_secs(3600), 1600);
        let mut cut = None;
        for i in 0..3200 {
            cut = window.insert(window.fingerprint("t", &format!("SM{i}")), i).or(cut);
        }
        assert!(window.len() <= 1600, "{}", window.len());
        assert!(window.contains(window.fingerprint("t", "SM3199")));
        assert!(!window.contains(window.fingerprint("t", "SM0")));
        let reach = cut.expect("the window was cut short");
        assert!(reach < Duration::from_millis(1700), "{reach:?}");
    }

    #[test]
    fn a_batch_sees_its_own_keys_and_hands_them_over_only_when_committed() {
        let mut window = DedupWindow::new(Duration::from_secs(60), 100);
        let key = window.fingerprint("t", "SM1");
        let mut pending = BatchKeys::default();
        assert!(pending.first_time(&window, key));
        assert!(!pending.first_time(&window, key), "twice in one batch");
        pending.discard();
        assert!(!window.contains(key), "a failed commit stored nothing");
        assert!(pending.first_time(&window, key));
        pending.commit(&mut window, 0);
        assert!(window.contains(key));
        assert!(!pending.first_time(&window, key));
    }

    #[test]
    fn fingerprints_tell_a_topic_and_key_split_apart() {
        let window = DedupWindow::new(Duration::from_secs(60), 100);
        assert_ne!(window.fingerprint("ab", "c"), window.fingerprint("a", "bc"));
        assert_eq!(window.fingerprint("a", "bc"), window.fingerprint("a", "bc"));
    }
}
