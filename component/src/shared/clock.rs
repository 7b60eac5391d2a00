//! Time and fresh ids, from the host's clock and random source.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    // The host always provides randomness; should it fail, the clock keeps ids unique.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a, parsed.hyphenated().to_string());
    }
}
