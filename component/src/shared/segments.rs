//! How many SMS segments a body takes, as Twilio bills them.
//!
//! A body written entirely in the GSM-7 alphabet (extension characters count
//! twice: an escape and the character) fits 160 septets in one segment and 153
//! per segment once split; anything else is sent as UCS-2: 70 UTF-16 units in
//! one segment, 67 per segment once split. A split never cuts an escape pair
//! or a surrogate pair in two.

/// The GSM 03.38 basic character set (the escape code 0x1B excluded).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: each costs two septets.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// The encoding a body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// Segment count and encoding of a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub encoding: Encoding,
    pub segments: u32,
}

/// Counts the segments of `body`. An empty body still takes one segment.
pub fn count(body: &str) -> SegmentInfo {
    match gsm7_units(body) {
        Some(units) => SegmentInfo { encoding: Encoding::Gsm7, segments: split(&units, 160, 153) },
        None => {
            // UTF-16 units, with a surrogate pair as one indivisible 2-unit item.
            let units: Vec<u8> = body.chars().map(|c| c.len_utf16() as u8).collect();
            SegmentInfo { encoding: Encoding::Ucs2, segments: split(&units, 70, 67) }
        }
    }
}

/// Septets per character, or `None` when a character is outside GSM-7.
fn gsm7_units(body: &str) -> Option<Vec<u8>> {
    body.chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .collect()
}

/// Packs indivisible items of the given sizes into segments.
fn split(units: &[u8], single: u32, per_part: u32) -> u32 {
    let total: u32 = units.iter().map(|&u| u32::from(u)).sum();
    if total <= single {
        return 1;
    }
    let mut segments = 1;
    let mut used = 0;
    for &unit in units {
        let unit = u32::from(unit);
        if used + unit > per_part {
            segments += 1;
            used = 0;
        }
        used += unit;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segs(body: &str) -> (Encoding, u32) {
        let info = count(body);
        (info.encoding, info.segments)
    }

    #[test]
    fn gsm7_boundaries() {
        assert_eq!(segs(""), (Encoding::Gsm7, 1));
        assert_eq!(segs(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(segs(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(segs(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(segs(&"a".repeat(307)), (Encoding::Gsm7, 3));
        assert_eq!(segs(&"a".repeat(1530)), (Encoding::Gsm7, 10));
    }

    #[test]
    fn ucs2_boundaries() {
        assert_eq!(segs(&"ж".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(segs(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(segs(&"ж".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(segs(&"ж".repeat(135)), (Encoding::Ucs2, 3));
    }

    #[test]
    fn one_non_gsm_character_makes_it_ucs2() {
        let body = format!("{}😀", "a".repeat(68));
        // 68 + a surrogate pair = 70 units: still one segment.
        assert_eq!(segs(&body), (Encoding::Ucs2, 1));
        assert_eq!(segs(&format!("{}😀", "a".repeat(69))), (Encoding::Ucs2, 2));
    }

    #[test]
    fn extension_characters_count_twice() {
        assert_eq!(segs(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(segs(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(segs(&format!("{}{{", "a".repeat(158))), (Encoding::Gsm7, 1));
        assert_eq!(segs(&format!("{}{{", "a".repeat(159))), (Encoding::Gsm7, 2));
    }

    #[test]
    fn escape_pairs_are_not_split_across_segments() {
        // 152 septets then an extension character: it cannot straddle 153, so a
        // third segment starts earlier than a plain count would say.
        let body = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        // 152 | €(2) moves to part 2: 2 + 152 = 154 > 153 → 3 parts.
        assert_eq!(segs(&body), (Encoding::Gsm7, 3));
    }

    #[test]
    fn gsm_specials_are_gsm7() {
        assert_eq!(segs("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà\r\n").0, Encoding::Gsm7);
        // ç (lowercase) is not in GSM-7; Ç is.
        assert_eq!(segs("ç").0, Encoding::Ucs2);
    }

    proptest! {
        #[test]
        fn gsm7_matches_the_closed_form(n in 0usize..2000) {
            let expected = if n <= 160 { 1 } else { n.div_ceil(153) as u32 };
            prop_assert_eq!(count(&"x".repeat(n)).segments, expected);
        }

        #[test]
        fn ucs2_matches_the_closed_form(n in 0usize..800) {
            let body = format!("ж{}", "x".repeat(n));
            let units = n + 1;
            let expected = if units <= 70 { 1 } else { units.div_ceil(67) as u32 };
            prop_assert_eq!(count(&body).segments, expected);
        }
    }
}
