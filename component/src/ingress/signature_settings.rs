//! `X-Twilio-Webhooks-Signature-Settings`: which shared key and algorithm
//! signed a webhook, when a Webhook Rule of Twilio's Webhooks configuration
//! API matched its URL (`key=<id>,algorithm=HMAC_SHA256`).
//!
//! Read as the official `twilio` npm package reads it (comma-separated
//! `name=value` parts, trimmed, algorithm names in any case), but stricter
//! where being lenient would let a request choose how it is checked: a
//! header that names no key, no algorithm, or one twice is refused, never
//! taken as the Auth Token path. An empty header is no header.

use crate::ingress::signature::Algorithm;

/// A shared-key signature's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureSettings<'a> {
    pub key_id: &'a str,
    pub algorithm: Algorithm,
}

/// Why a settings header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    NoKey,
    NoAlgorithm,
    /// An algorithm this service does not verify (Twilio may add one).
    Unsupported,
    /// `key` or `algorithm` named twice.
    Repeated(&'static str),
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoKey => f.write_str("the signature settings name no key"),
            Self::NoAlgorithm => f.write_str("the signature settings name no algorithm"),
            Self::Unsupported => f.write_str("the signature settings name an algorithm this service does not verify"),
            Self::Repeated(part) => write!(f, "the signature settings name {part} twice"),
        }
    }
}

/// The settings `header` names; none for an absent or empty header.
pub fn parse(header: Option<&str>) -> Result<Option<SignatureSettings<'_>>, SettingsError> {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else { return Ok(None) };
    let mut key_id = None;
    let mut algorithm = None;
    for part in header.split(',') {
        let Some((name, value)) = part.split_once('=') else { continue };
        let (slot, part_name) = match name.trim() {
            "key" => (&mut key_id, "key"),
            "algorithm" => (&mut algorithm, "algorithm"),
            // Parts Twilio may add later are no reason to refuse.
            _ => continue,
        };
        if slot.replace(value.trim()).is_some() {
            return Err(SettingsError::Repeated(part_name));
        }
    }
    let key_id = key_id.filter(|k| !k.is_empty()).ok_or(SettingsError::NoKey)?;
    let algorithm = match algorithm.filter(|a| !a.is_empty()).ok_or(SettingsError::NoAlgorithm)? {
        name if name.eq_ignore_ascii_case("HMAC_SHA256") => Algorithm::HmacSha256,
        name if name.eq_ignore_ascii_case("HMAC_SHA1") => Algorithm::HmacSha1,
        _ => return Err(SettingsError::Unsupported),
    };
    Ok(Some(SignatureSettings { key_id, algorithm }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilios_header_and_its_variants() {
        let expected = SignatureSettings { key_id: "webhooks_sharedkey_1", algorithm: Algorithm::HmacSha256 };
        for header in [
            "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
            " key = webhooks_sharedkey_1 , algorithm = hmac_sha256 ",
            "algorithm=HMAC_SHA256,key=webhooks_sharedkey_1,version=2",
        ] {
            assert_eq!(parse(Some(header)), Ok(Some(expected)), "{header}");
        }
        assert_eq!(
            parse(Some("key=k,algorithm=HMAC_SHA1")),
            Ok(Some(SignatureSettings { key_id: "k", algorithm: Algorithm::HmacSha1 }))
        );
    }

    #[test]
    fn no_header_is_the_auth_token_path() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("  ")), Ok(None));
    }

    #[test]
    fn a_header_that_does_not_say_both_is_refused() {
        assert_eq!(parse(Some("algorithm=HMAC_SHA256")), Err(SettingsError::NoKey));
        assert_eq!(parse(Some("key=,algorithm=HMAC_SHA256")), Err(SettingsError::NoKey));
        assert_eq!(parse(Some("key=k")), Err(SettingsError::NoAlgorithm));
        assert_eq!(parse(Some("garbage")), Err(SettingsError::NoKey));
        assert_eq!(parse(Some("key=k,algorithm=HMAC_SHA512")), Err(SettingsError::Unsupported));
        assert_eq!(parse(Some("key=a,key=b,algorithm=HMAC_SHA256")), Err(SettingsError::Repeated("key")));
        assert_eq!(
            parse(Some("key=a,algorithm=HMAC_SHA256,algorithm=HMAC_SHA1")),
            Err(SettingsError::Repeated("algorithm"))
        );
    }
}
