//! Log lines bounded per key: at most one a second, the lines in between
//! counted and reported by the next one written. This is how a flood of
//! refused requests stays a line a second in the log.
//!
//! Written here rather than taken from a crate: `governor` bounds the rate
//! but does not count what it refused, and the count since the last line is
//! what the operator reads. It is a map behind a mutex.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One key's window.
#[derive(Debug)]
struct Window {
    /// When the last line for this key was written.
    written_at: Instant,
    /// Lines left out since then.
    suppressed: u64,
}

/// The windows of one connector's bounded log lines.
#[derive(Debug, Default)]
pub struct BoundedLog(Mutex<HashMap<String, Window>>);

impl BoundedLog {
    /// At most one line per key in this long.
    pub const INTERVAL: Duration = Duration::from_secs(1);
    /// At most this many distinct keys; the others share [`Self::OTHER`].
    pub const KEYS: usize = 32;
    /// The key of malformed keys and of those past [`Self::KEYS`].
    pub const OTHER: &'static str = "other";

    /// Whether a line for `key` may be written at `now`: `Some(n)` with the
    /// lines left out since the last one, or `None` when this one is left
    /// out (and counted).
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let Ok(mut windows) = self.0.lock() else { return Some(0) };
        let well_formed = (1..=48).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let key =
            if well_formed && (windows.contains_key(key) || windows.len() < Self::KEYS) { key } else { Self::OTHER };
        match windows.get_mut(key) {
            Some(window) if now.saturating_duration_since(window.written_at) < Self::INTERVAL => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                window.written_at = now;
                Some(std::mem::take(&mut window.suppressed))
            }
            None => {
                windows.insert(key.to_owned(), Window { written_at: now, suppressed: 0 });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_key_with_the_count_left_out() {
        let log = BoundedLog::default();
        let start = Instant::now();
        assert_eq!(log.admit("forged", start), Some(0));
        for i in 1..=500 {
            assert_eq!(log.admit("forged", start + Duration::from_micros(i)), None);
        }
        assert_eq!(log.admit("unsigned", start), Some(0), "another key has its own window");
        assert_eq!(log.admit("forged", start + Duration::from_millis(999)), None);
        assert_eq!(log.admit("forged", start + Duration::from_secs(1)), Some(501));
        assert_eq!(log.admit("forged", start + Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn keys_are_bounded() {
        let log = BoundedLog::default();
        let now = Instant::now();
        for i in 0..BoundedLog::KEYS {
            assert_eq!(log.admit(&format!("key-{i}"), now), Some(0));
        }
        assert_eq!(log.admit("one-too-many", now), Some(0), "the shared window's first line");
        assert_eq!(log.admit("and-another", now), None, "shares that window");
        assert_eq!(log.admit("Not A Key", now), None);
        assert_eq!(log.0.lock().unwrap().len(), BoundedLog::KEYS + 1);
    }
}
