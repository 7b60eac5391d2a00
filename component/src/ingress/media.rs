//! Inbound media, fetched safely: which hosts get the account's credentials,
//! which redirects are followed, which answers are kept. Pure; the calls are
//! in [`crate::ingress::media_fetch`].
//!
//! Twilio serves an MMS or WhatsApp attachment at its API host
//! (`https://api.twilio.com/2010-04-01/Accounts/AC…/Messages/MM…/Media/ME…`),
//! behind HTTP Basic when the account requires it, and usually redirects to a
//! CDN. Whatever the webhook or a redirect names, the credentials go only to
//! Twilio's own hosts: a redirect elsewhere is followed without them.

use url::Url;

/// Redirects followed for one item: Twilio uses one.
pub const MOST_REDIRECTS: usize = 3;
/// Times a 404 is asked again: media can be briefly missing just after the webhook.
pub const MOST_NOT_FOUND_RETRIES: u32 = 2;
/// The wait before asking again after a 404, times the retry's number.
pub const NOT_FOUND_PAUSE_MS: u64 = 400;
/// The time all of one webhook's media may take: Twilio gives up on a webhook
/// after 15 s, and the message must still reach the bus within them.
pub const BUDGET: std::time::Duration = std::time::Duration::from_secs(8);
/// How long one request may wait for its answer to start.
pub const FIRST_BYTE_TIMEOUT_NS: u64 = 5_000_000_000;

/// What may be fetched, and from where with credentials.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The configured API base (`https://api.twilio.com`, or an override): its
    /// origin gets the credentials, as do Twilio's own HTTPS hosts.
    pub api_origin: url::Origin,
    pub max_bytes: usize,
    /// Content-type prefixes kept (`image/`, `application/pdf`); empty keeps all.
    pub types: Vec<String>,
}

impl Policy {
    /// Whether a request to `url` may carry the account's credentials: only to
    /// Twilio's API origin, or to a `twilio.com` host over HTTPS.
    pub fn credentials_for(&self, url: &Url) -> bool {
        if url.origin() == self.api_origin {
            return true;
        }
        let twilio_host = url.host_str().is_some_and(|host| host == "twilio.com" || host.ends_with(".twilio.com"));
        url.scheme() == "https" && twilio_host && url.port().is_none()
    }

    /// Whether an answer of `content_type` is kept.
    pub fn keeps(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        self.types.is_empty() || self.types.iter().any(|prefix| essence.starts_with(prefix.as_str()))
    }
}

/// The URL a webhook names, if it may be fetched at all: HTTP(S), no user info.
pub fn first_hop(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    checked(url)
}

/// Where a redirect from `current` to `location` leads. HTTPS is never given
/// up for HTTP, and the URL may not carry its own credentials.
pub fn next_hop(current: &Url, location: &str) -> Result<Url, String> {
    let next = current.join(location).map_err(|e| format!("redirect to an invalid URL: {e}"))?;
    if current.scheme() == "https" && next.scheme() != "https" {
        return Err("redirect from HTTPS to HTTP refused".to_owned());
    }
    checked(next)
}

fn checked(url: Url) -> Result<Url, String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{} URLs are not fetched", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL with credentials in it is not fetched".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a URL without a host".to_owned());
    }
    Ok(url)
}

/// The default kinds kept: what Twilio accepts as MMS and WhatsApp media.
pub fn default_types() -> Vec<String> {
    ["image/", "audio/", "video/", "application/pdf", "text/vcard", "text/x-vcard", "text/calendar"]
        .map(str::to_owned)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(api: &str) -> Policy {
        Policy { api_origin: Url::parse(api).unwrap().origin(), max_bytes: 1 << 20, types: default_types() }
    }

    #[test]
    fn credentials_go_to_twilio_only() {
        let p = policy("https://api.twilio.com");
        let yes = [
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
            "https://mcs.us1.twilio.com/v1/x",
        ];
        for url in yes {
            assert!(p.credentials_for(&Url::parse(url).unwrap()), "{url}");
        }
        let no = [
            "https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC1/x",
            "http://api.twilio.com/x",
            "https://api.twilio.com.evil.example/x",
            "https://eviltwilio.com/x",
            "https://api.twilio.com:8443/x",
        ];
        for url in no {
            assert!(!p.credentials_for(&Url::parse(url).unwrap()), "{url}");
        }
        // An overridden API base (a proxy, a test stand-in) is Twilio's host: its origin, exactly.
        let local = policy("http://127.0.0.1:4010");
        assert!(local.credentials_for(&Url::parse("http://127.0.0.1:4010/Media/ME1").unwrap()));
        assert!(!local.credentials_for(&Url::parse("http://127.0.0.1:4011/Media/ME1").unwrap()));
    }

    #[test]
    fn redirects_are_resolved_and_never_downgraded() {
        let from = Url::parse("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1").unwrap();
        assert_eq!(next_hop(&from, "/x/y").unwrap().as_str(), "https://api.twilio.com/x/y");
        assert_eq!(next_hop(&from, "https://cdn.example/a").unwrap().as_str(), "https://cdn.example/a");
        assert!(next_hop(&from, "http://cdn.example/a").is_err());
        assert!(next_hop(&from, "https://user:pw@cdn.example/a").is_err());
        assert!(next_hop(&from, "file:///etc/passwd").is_err());
        assert!(first_hop("ftp://x/y").is_err() && first_hop("https://x/y").is_ok());
    }

    #[test]
    fn kinds_kept() {
        let p = policy("https://api.twilio.com");
        assert!(p.keeps("image/jpeg") && p.keeps("IMAGE/PNG; charset=binary") && p.keeps("application/pdf"));
        assert!(!p.keeps("text/html") && !p.keeps("application/x-msdownload") && !p.keeps(""));
        assert!(Policy { types: vec![], ..p }.keeps("text/html"));
    }
}
