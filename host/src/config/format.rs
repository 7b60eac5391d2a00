//! How architecture.yaml says what a secret's or variable's value looks like:
//! a generic `format` (text, bool, url, integer) and/or a `pattern` (a regular
//! expression). The host checks values against them without knowing what any
//! provider's identifiers look like: those shapes are declared in the file.

use std::fmt;

/// One declared check on a value.
#[derive(Debug, Clone)]
pub enum Format {
    /// Any non-empty text.
    Text,
    /// `true` or `false`.
    Bool,
    /// An absolute `http` or `https` URL.
    Url,
    /// A whole number of milliseconds, seconds, bytes… (no unit).
    Integer,
    /// Matches the regular expression (anchor it with `^…$` to match all of the value).
    Pattern(regex::Regex),
}

impl Format {
    /// Parses a `format:` spelling.
    pub fn parse(spec: &str) -> Result<Self, String> {
        Ok(match spec {
            "text" => Self::Text,
            "bool" => Self::Bool,
            "url" => Self::Url,
            "integer" => Self::Integer,
            other => return Err(format!("unknown format {other:?} (known: text, bool, url, integer; or a pattern)")),
        })
    }

    /// Compiles a `pattern:`.
    pub fn pattern(spec: &str) -> Result<Self, String> {
        regex::Regex::new(spec).map(Self::Pattern).map_err(|e| format!("not a regular expression: {e}"))
    }

    /// Checks `value`; the error describes the expected shape, never the value.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let ok = match self {
            Self::Text => !value.trim().is_empty(),
            Self::Bool => parse_bool(value).is_some(),
            Self::Url => url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
            Self::Integer => value.parse::<u64>().is_ok(),
            Self::Pattern(pattern) => pattern.is_match(value),
        };
        if ok { Ok(()) } else { Err(format!("expected {self}")) }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text => f.write_str("non-empty text"),
            Self::Bool => f.write_str("true or false"),
            Self::Url => f.write_str("an http(s) URL"),
            Self::Integer => f.write_str("a whole number"),
            Self::Pattern(pattern) => write!(f, "a value matching {}", pattern.as_str()),
        }
    }
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
    fn patterns() {
        let sid = Format::pattern("^AB[0-9a-f]{4}$").unwrap();
        assert!(sid.check("AB01ef").is_ok());
        assert!(sid.check("AB01e").is_err());
        assert!(sid.check("XB01ef").is_err());
        assert!(sid.check("AB01efAB01ef").is_err());
        assert!(Format::pattern("(unclosed").is_err());
        assert_eq!(sid.check("x").unwrap_err(), "expected a value matching ^AB[0-9a-f]{4}$");
    }

    #[test]
    fn bools_urls_integers() {
        assert!(Format::Bool.check("TRUE").is_ok());
        assert!(Format::Bool.check("maybe").is_err());
        assert!(Format::Url.check("https://hooks.example.com/base").is_ok());
        assert!(Format::Url.check("ftp://x").is_err());
        assert!(Format::Integer.check("42").is_ok());
        assert!(Format::Integer.check("-1").is_err());
        assert!(Format::Text.check("  ").is_err());
        assert!(Format::parse("sid:AC").is_err());
    }

    #[test]
    fn errors_never_contain_the_value() {
        let err = Format::pattern("^SK").unwrap().check("AC-very-secret-value").unwrap_err();
        assert!(!err.contains("very-secret"));
    }
}
