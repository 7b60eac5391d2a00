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

    /// Whether `presented` is this secret, in time that depends on neither
    /// (both are hashed first, so not even the length shows).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        Sha256::digest(self.reveal().as_bytes()).ct_eq(&Sha256::digest(presented)).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.reveal().as_bytes())
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
        assert!(secret.matches(b"hunter2") && !secret.matches(b"hunter3") && !secret.matches(b""));
    }
}
