//! Fetches an inbound message's media over `wasi:http` and hands the bytes to
//! the host's blob store, when `TWILIO_MEDIA_FETCH` is on (the rules are in
//! [`crate::ingress::media`]). A failure leaves the item as the webhook named it (its
//! URL is still there) and is counted; it never refuses the webhook.

use crate::ingress::media::{self, Policy};
use crate::platform::connector::blobs::{self, BlobError};
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::metrics;
use crate::platform::connector::trace;
use crate::platform::connector::types::Media;
use crate::shared::accounts::Account;
use crate::shared::http;
use crate::shared::rest::{PreparedRequest, Verb};

/// Fetches and stores each item of `items`, filling in its hash, size and
/// stored URL, with the credentials of `account`, whose message it is.
pub fn fetch_all(items: &mut [Media], account: &Account) {
    if items.is_empty() || !crate::shared::settings::media_fetch() {
        return;
    }
    let settings = match crate::shared::settings::egress_settings(account) {
        Ok(settings) => settings,
        Err(reason) => return log::log(Level::Warn, &format!("media not fetched: {reason}")),
    };
    let Ok(api) = url::Url::parse(&settings.api_base) else { return };
    let policy = Policy {
        api_origin: api.origin(),
        max_bytes: crate::shared::settings::media_max_bytes(),
        types: crate::shared::settings::media_types(),
    };
    let authorization = crate::shared::rest::basic_auth(&settings.credentials);
    let deadline = std::time::Instant::now() + media::BUDGET;
    for item in items {
        if std::time::Instant::now() >= deadline {
            metrics::count("media-not-stored", 1);
            log::log(Level::Warn, &format!("media {} not fetched: the webhook's time for media ran out", item.url));
            continue;
        }
        // The GETs, redirects included, and the store are this span's children.
        let span = trace::Span::new("twilio.media.fetch");
        match fetch(&item.url, &policy, &authorization).and_then(|(content_type, bytes)| store(&content_type, bytes)) {
            Ok(stored) => {
                span.set_attribute("twilio.media.size", &stored.size.to_string());
                metrics::count("media-stored", 1);
                (item.sha256, item.size, item.stored_url) = (Some(stored.sha256), Some(stored.size), Some(stored.url));
            }
            Err(reason) => {
                span.set_attribute("twilio.media.outcome", "not-stored");
                metrics::count("media-not-stored", 1);
                log::log(Level::Warn, &format!("media {} not stored: {reason}", item.url));
            }
        }
    }
}

/// GETs `raw`, following redirects (credentials only where the policy
/// allows), asking again after a 404 a bounded number of times.
fn fetch(raw: &str, policy: &Policy, authorization: &str) -> Result<(String, Vec<u8>), String> {
    let mut url = media::first_hop(raw)?;
    let mut not_found = 0;
    let mut redirects = 0;
    loop {
        let mut headers = vec![("accept".to_owned(), "*/*".to_owned()), crate::shared::rest::user_agent()];
        if policy.credentials_for(&url) {
            headers.push(("authorization".to_owned(), authorization.to_owned()));
        }
        let request = PreparedRequest { verb: Verb::Get, url: url.to_string(), headers, form: vec![] };
        let answer = http::exchange_bounded(&request, policy.max_bytes, media::FIRST_BYTE_TIMEOUT_NS)
            .map_err(|e| http::describe(&e))?;
        match answer.status {
            200 => {
                let content_type = answer.content_type.unwrap_or_default();
                if !policy.keeps(&content_type) {
                    return Err(format!("its type {content_type:?} is not one kept (TWILIO_MEDIA_TYPES)"));
                }
                return Ok((content_type, answer.body));
            }
            301 | 302 | 303 | 307 | 308 if redirects < media::MOST_REDIRECTS => {
                let location = answer.location.ok_or("a redirect without a Location")?;
                url = media::next_hop(&url, &location)?;
                redirects += 1;
            }
            404 if not_found < media::MOST_NOT_FOUND_RETRIES => {
                not_found += 1;
                std::thread::sleep(std::time::Duration::from_millis(media::NOT_FOUND_PAUSE_MS * u64::from(not_found)));
            }
            status => return Err(format!("answered {status}")),
        }
    }
}

fn store(content_type: &str, bytes: Vec<u8>) -> Result<blobs::Stored, String> {
    blobs::store(content_type, &bytes).map_err(|error| match error {
        BlobError::NotGranted => "no blob store is granted to this connector (blobs: in architecture.yaml)".to_owned(),
        BlobError::TooLarge(most) => format!("larger than the blob store takes ({most} bytes)"),
        BlobError::Unavailable(reason) => reason,
    })
}
