//! Twilio's messaging error codes and their classes (`../shared/TWILIO.md`,
//! Twilio's error dictionary). The class, not the code, decides what happens
//! to a message; a code not in the catalog falls back on the HTTP status.

use crate::platform::connector::types::ErrorClass;

/// Every code this connector knows, with its class; sorted by code, each once.
pub const CATALOG: &[(u32, ErrorClass)] = &[
    (11751, ErrorClass::InvalidRequest),  // media exceeds the provider's size limit
    (20003, ErrorClass::Configuration),   // authentication failed
    (20404, ErrorClass::InvalidRequest),  // resource not found
    (20429, ErrorClass::Throttled),       // too many requests
    (21211, ErrorClass::InvalidRequest),  // invalid `To`
    (21212, ErrorClass::Configuration),   // invalid `From`
    (21408, ErrorClass::Configuration),   // no permission for the `To` region
    (21602, ErrorClass::InvalidRequest),  // body required
    (21606, ErrorClass::Configuration),   // `From` cannot send to this destination
    (21608, ErrorClass::Configuration),   // unverified `To` on a trial account
    (21610, ErrorClass::OptedOut),        // recipient unsubscribed (STOP)
    (21611, ErrorClass::Throttled),       // `From` has too many queued messages
    (21612, ErrorClass::InvalidRequest),  // cannot route to this number from `From`
    (21614, ErrorClass::Unreachable),     // `To` is not a mobile number
    (21617, ErrorClass::InvalidRequest),  // body over 1,600 characters
    (21623, ErrorClass::InvalidRequest),  // too many media files
    (21654, ErrorClass::Template),        // `ContentSid` required
    (30001, ErrorClass::Throttled),       // queue overflow
    (30002, ErrorClass::Configuration),   // account suspended
    (30003, ErrorClass::Unreachable),     // unreachable destination handset
    (30004, ErrorClass::CarrierFiltered), // message blocked
    (30005, ErrorClass::Unreachable),     // unknown destination handset
    (30006, ErrorClass::Unreachable),     // landline or unreachable carrier
    (30007, ErrorClass::CarrierFiltered), // filtered (carrier violation)
    (30008, ErrorClass::Unknown),         // unknown error
    (30034, ErrorClass::Configuration),   // US A2P 10DLC: unregistered number
    (35125, ErrorClass::Throttled),       // scheduled-message limit reached
    (63016, ErrorClass::WindowClosed),    // WhatsApp: outside the 24-hour window
    (63018, ErrorClass::Throttled),       // channel rate limit exceeded
    (63041, ErrorClass::Template),        // template paused
];

/// The class of a Twilio error: the catalog's for a known code, else what
/// the HTTP status says (none: unknown).
pub fn class_of(code: Option<u32>, http_status: Option<u16>) -> ErrorClass {
    let known = code.and_then(|code| CATALOG.binary_search_by_key(&code, |(c, _)| *c).ok());
    match known {
        Some(index) => CATALOG[index].1,
        None => http_status.map_or(ErrorClass::Unknown, class_of_status),
    }
}

/// What an HTTP status alone says about a failure.
fn class_of_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::Throttled,
        401 | 403 => ErrorClass::Configuration,
        500..=599 => ErrorClass::Retryable,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_exactly_one_class() {
        // Sorted and strictly increasing: no code listed twice, with two classes.
        assert!(CATALOG.windows(2).all(|pair| pair[0].0 < pair[1].0), "the catalog is not sorted or repeats a code");
        for (code, class) in CATALOG {
            assert_eq!(class_of(Some(*code), Some(400)), *class, "{code}");
            assert_eq!(class_of(Some(*code), None), *class, "{code}");
        }
    }

    #[test]
    fn the_facts_operators_fight_with() {
        assert_eq!(class_of(Some(21610), Some(400)), ErrorClass::OptedOut);
        assert_eq!(class_of(Some(63016), Some(400)), ErrorClass::WindowClosed);
        assert_eq!(class_of(Some(30007), None), ErrorClass::CarrierFiltered);
        assert_eq!(class_of(Some(20429), Some(429)), ErrorClass::Throttled);
    }

    #[test]
    fn an_unknown_code_falls_back_on_the_http_status() {
        assert_eq!(class_of(Some(99999), Some(503)), ErrorClass::Retryable);
        assert_eq!(class_of(Some(99999), Some(429)), ErrorClass::Throttled);
        assert_eq!(class_of(Some(99999), Some(401)), ErrorClass::Configuration);
        assert_eq!(class_of(Some(99999), Some(422)), ErrorClass::InvalidRequest);
        assert_eq!(class_of(None, None), ErrorClass::Unknown);
        assert_eq!(class_of(Some(99999), Some(302)), ErrorClass::Unknown);
    }
}
