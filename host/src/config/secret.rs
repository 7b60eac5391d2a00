//! Secret values: opaque until revealed, redacted when printed, zeroed when
//! dropped (`secrecy`).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A secret's value. `Debug` and `Display` print a redaction, so a secret in a
/// log line, an error or a test assertion shows nothing.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value read from the environment or a secret file.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself, for the one place that must hand it over.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.reveal() == other.reveal()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_redacts() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.reveal(), "hunter2");
        assert_eq!(secret.clone(), secret);
    }
}
