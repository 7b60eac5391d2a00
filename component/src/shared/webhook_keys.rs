//! The shared keys an account's webhooks may be signed with (Twilio's
//! Webhooks configuration API), from `TWILIO_WEBHOOK_SHARED_KEYS`: one or
//! more `KEY_ID=SECRET` entries separated by commas or newlines, two of them
//! live while a key rotates.

/// One shared key. Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The keys `text` lists. An entry without `=`, with an empty id or secret,
/// or an id listed twice is refused, named by its position, never by value.
pub fn parse(text: &str) -> Result<Vec<SharedKey>, String> {
    let mut keys: Vec<SharedKey> = Vec::new();
    let entries = text.split([',', '\n']).map(str::trim).filter(|entry| !entry.is_empty());
    for (position, entry) in entries.enumerate() {
        let number = position + 1;
        let Some((id, secret)) = entry.split_once('=') else {
            return Err(format!("shared key entry {number} is not KEY_ID=SECRET"));
        };
        let (id, secret) = (id.trim(), secret.trim());
        if id.is_empty() || secret.is_empty() {
            return Err(format!("shared key entry {number} has an empty key id or secret"));
        }
        if keys.iter().any(|key| key.id == id) {
            return Err(format!("shared key entry {number} repeats a key id"));
        }
        keys.push(SharedKey { id: id.to_owned(), secret: secret.to_owned() });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_newlines_and_secrets_holding_equals_signs() {
        let keys = parse("webhooks_sharedkey_a=c2VjcmV0YQ==\n webhooks_sharedkey_b = s2 ,\n").unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["webhooks_sharedkey_a", "webhooks_sharedkey_b"]);
        assert_eq!(keys[0].secret, "c2VjcmV0YQ==");
        assert_eq!(keys[1].secret, "s2");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named_without_their_values() {
        for (text, problem) in [
            ("a=1,justsecret", "entry 2 is not KEY_ID=SECRET"),
            ("=hidden", "entry 1 has an empty"),
            ("a=", "entry 1 has an empty"),
            ("a=1,a=hidden", "entry 2 repeats"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
            assert!(!error.contains("hidden") && !error.contains("justsecret"), "{error}");
        }
    }

    #[test]
    fn debug_leaves_the_secret_out() {
        let key = SharedKey { id: "k".into(), secret: "s3cr3t".into() };
        assert!(!format!("{key:?}").contains("s3cr3t"));
    }
}
