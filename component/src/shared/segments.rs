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

/// Septets per ASCII character: 1 in the basic set, 2 in the extension
/// table, 0 outside GSM-7. Built from the two tables above, so that a body's
/// common characters cost one load each, not a scan of the alphabet.
const GSM7_ASCII: [u8; 128] = ascii_septets();

const fn ascii_septets() -> [u8; 128] {
    let mut table = [0u8; 128];
    let (basic, extension) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 {
            table[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < extension.len() {
        if extension[i] < 128 {
            table[extension[i] as usize] = 2;
        }
        i += 1;
    }
    table
}

/// Counts the segments of `body`. An empty body still takes one segment.
pub fn count(body: &str) -> SegmentInfo {
    match body.chars().map(gsm7_septets).sum::<Option<u32>>() {
        Some(septets) => SegmentInfo {
            encoding: Encoding::Gsm7,
            segments: split(septets, body.chars().map(|c| gsm7_septets(c).unwrap_or(1)), 160, 153),
        },
        None => {
            // UTF-16 units, with a surrogate pair as one indivisible 2-unit item.
            let units = body.chars().map(|c| c.len_utf16() as u32);
            SegmentInfo { encoding: Encoding::Ucs2, segments: split(units.clone().sum(), units, 70, 67) }
        }
    }
}

/// Septets `c` takes, or `None` when it is outside GSM-7.
fn gsm7_septets(c: char) -> Option<u32> {
    let septets = match u8::try_from(c) {
        Ok(byte) if byte.is_ascii() => GSM7_ASCII[usize::from(byte)],
        _ if GSM7_BASIC.contains(c) => 1,
        _ if GSM7_EXTENSION.contains(c) => 2,
        _ => 0,
    };
    (septets > 0).then_some(u32::from(septets))
}

/// Packs indivisible items of the given sizes (`total` in all) into segments.
fn split(total: u32, units: impl Iterator<Item = u32>, single: u32, per_part: u32) -> u32 {
    if total <= single {
        return 1;
    }
    let mut segments = 1;
    let mut used = 0;
    for unit in units {
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

    #[test]
    fn every_character_of_the_tables_counts_as_they_say() {
        for c in GSM7_BASIC.chars() {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?}");
        }
        for c in GSM7_EXTENSION.chars() {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        for c in (0u8..128).map(char::from).filter(|c| !GSM7_BASIC.contains(*c) && !GSM7_EXTENSION.contains(*c)) {
            assert_eq!(gsm7_septets(c), None, "{c:?}");
        }
        assert_eq!(gsm7_septets('\u{1B}'), None, "the escape itself is not a character");
    }

    proptest! {
        #[test]
        fn gsm7_matches_the_closed_form(n in 0usize..2000) {
            let expected = if n <= 160 { 1 } else { n.div_ceil(153) as u32 };
            prop_assert_eq!(count(&"x".repeat(n)).segments, expected);
        }

        /// Against the plain reading of the rules: every character looked up
        /// in the alphabet as written, its size listed, then packed.
        #[test]
        fn matches_a_plain_reading_of_the_tables(body in "[a-z€{ж😀ÇçΔ\\[\n ]{0,400}") {
            let sizes: Option<Vec<u32>> = body
                .chars()
                .map(|c| if GSM7_BASIC.contains(c) { Some(1) } else if GSM7_EXTENSION.contains(c) { Some(2) } else { None })
                .collect();
            let (encoding, sizes, single, per_part) = match sizes {
                Some(sizes) => (Encoding::Gsm7, sizes, 160, 153),
                None => (Encoding::Ucs2, body.chars().map(|c| c.len_utf16() as u32).collect(), 70, 67),
            };
            let mut packed = (1, 0);
            for size in &sizes {
                if packed.1 + size > per_part {
                    packed = (packed.0 + 1, 0);
                }
                packed.1 += size;
            }
            let segments = if sizes.iter().sum::<u32>() <= single { 1 } else { packed.0 };
            prop_assert_eq!(count(&body), SegmentInfo { encoding, segments });
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
