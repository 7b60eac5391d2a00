//! The value formats architecture.yaml can declare for a secret or variable.
//!
//! Declaring formats in architecture.yaml keeps the host generic: it checks
//! `sid:AC` or `e164` without knowing what Twilio is.

use std::fmt;

/// A declared format, parsed from its architecture.yaml spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Any non-empty text.
    Text,
    /// A two-letter prefix and 32 hex digits: `sid:AC` for `AC0123…`.
    Sid(String),
    /// 32 hex digits (an Auth Token).
    Hex32,
    /// An E.164 phone number, optionally behind a channel prefix (`whatsapp:+1…`).
    E164,
    /// `true` or `false`.
    Bool,
    /// An absolute `http` or `https` URL.
    Url,
    /// A whole number of milliseconds, seconds, bytes… (no unit).
    Integer,
}

impl Format {
    /// Parses the spelling used in architecture.yaml.
    pub fn parse(spec: &str) -> Result<Self, String> {
        Ok(match spec {
            "text" => Self::Text,
            "hex32" => Self::Hex32,
            "e164" => Self::E164,
            "bool" => Self::Bool,
            "url" => Self::Url,
            "integer" => Self::Integer,
            other => match other.strip_prefix("sid:") {
                Some(prefix) if prefix.len() == 2 && prefix.bytes().all(|b| b.is_ascii_uppercase()) => {
                    Self::Sid(prefix.to_owned())
                }
                _ => {
                    return Err(format!(
                        "unknown format {other:?} (known: text, sid:XX, hex32, e164, bool, url, integer)"
                    ));
                }
            },
        })
    }

    /// Checks `value`; the error describes the expected shape, never the value.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let ok = match self {
            Self::Text => !value.trim().is_empty(),
            Self::Sid(prefix) => value.len() == 34 && value.starts_with(prefix.as_str()) && is_hex(&value[2..]),
            Self::Hex32 => value.len() == 32 && is_hex(value),
            Self::E164 => is_e164(value.split_once(':').map_or(value, |(_, number)| number)),
            Self::Bool => parse_bool(value).is_some(),
            Self::Url => url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
            Self::Integer => value.parse::<u64>().is_ok(),
        };
        if ok { Ok(()) } else { Err(format!("expected {self}")) }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text => f.write_str("non-empty text"),
            Self::Sid(prefix) => write!(f, "{prefix} followed by 32 hex digits"),
            Self::Hex32 => f.write_str("32 hex digits"),
            Self::E164 => f.write_str("an E.164 number such as +14155550100"),
            Self::Bool => f.write_str("true or false"),
            Self::Url => f.write_str("an http(s) URL"),
            Self::Integer => f.write_str("a whole number"),
        }
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else { return false };
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// `true`/`false` in the spellings operators use.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids() {
        let ac = Format::parse("sid:AC").unwrap();
        assert!(ac.check("AC0123456789abcdef0123456789abcdef").is_ok());
        assert!(ac.check("AC0123456789abcdef0123456789abcde").is_err());
        assert!(ac.check("SK0123456789abcdef0123456789abcdef").is_err());
        assert!(ac.check("AC0123456789abcdef0123456789abcdeg").is_err());
        assert!(Format::parse("sid:ac").is_err());
    }

    #[test]
    fn numbers_bools_urls() {
        assert!(Format::E164.check("+14155550100").is_ok());
        assert!(Format::E164.check("whatsapp:+14155550100").is_ok());
        assert!(Format::E164.check("14155550100").is_err());
        assert!(Format::E164.check("+0415").is_err());
        assert!(Format::Bool.check("TRUE").is_ok());
        assert!(Format::Bool.check("maybe").is_err());
        assert!(Format::Url.check("https://hooks.example.com/base").is_ok());
        assert!(Format::Url.check("ftp://x").is_err());
        assert!(Format::Hex32.check("0123456789abcdef0123456789ABCDEF").is_ok());
        assert!(Format::Hex32.check("xyz").is_err());
    }

    #[test]
    fn errors_never_contain_the_value() {
        let err = Format::parse("sid:SK").unwrap().check("AC-very-secret-value").unwrap_err();
        assert!(!err.contains("very-secret"));
    }
}
