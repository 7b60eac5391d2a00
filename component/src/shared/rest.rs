//! Twilio's REST conventions, shared by every call the connector makes
//! (sends, lookups, wiring): a request fully formed before it goes out
//! ([`PreparedRequest`]), Basic credentials, ids kept inside their path
//! segment, and what a non-2xx answer or a transport failure means for the
//! caller (retry, reject, opted out, or ambiguous), with the credentials
//! redacted from anything quoted back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::platform::connector::types::{ErrorClass, ProviderError, RetryHint, SendError};
use crate::shared::errors;

/// An HTTP request to make, fully formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    pub verb: Verb,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

/// The HTTP methods the connector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A lookup; its parameters are in the URL.
    Get,
    /// A create or an update, with a form body.
    Post,
}

impl PreparedRequest {
    /// The form body, `application/x-www-form-urlencoded`.
    pub fn body(&self) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.form).finish()
    }
}

/// A failure the connector itself saw, not one Twilio answered.
pub(crate) fn local_error(message: String, class: ErrorClass) -> ProviderError {
    ProviderError { code: None, message, http_status: None, more_info: None, class }
}

/// Whether `value` is a Twilio sid of kind `prefix`: the prefix and 32 hex
/// digits, so it can go into a URL path as it is.
pub(crate) fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The headers of every REST call: Basic credentials, a form body, JSON back.
pub(crate) fn rest_headers(credentials: &(String, String)) -> Vec<(String, String)> {
    vec![
        ("authorization".to_owned(), basic_auth(credentials)),
        ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
        ("accept".to_owned(), "application/json".to_owned()),
        user_agent(),
    ]
}

/// The `User-Agent` header of every request the connector makes.
pub(crate) fn user_agent() -> (String, String) {
    ("user-agent".to_owned(), format!("ingress-egress-twilio/{}", crate::VERSION))
}

/// The `Authorization` value of HTTP Basic with `(user, password)`.
pub(crate) fn basic_auth((user, password): &(String, String)) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// Percent-encodes one path segment, so an id cannot change the path.
pub(crate) fn path_segment(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A count as Twilio's JSON has it: a string (`"2"`) in the Messages API, a number elsewhere.
pub(crate) fn twilio_count(value: Option<&serde_json::Value>) -> Option<u64> {
    match value? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Twilio's JSON error body.
#[derive(serde::Deserialize)]
pub(crate) struct TwilioError {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub more_info: Option<String>,
}

/// What a non-2xx answer from Twilio means: retried, refused or opted out,
/// by the class of its error code.
pub fn refusal(status: u16, retry_after: Option<&str>, body: &[u8]) -> SendError {
    let parsed: Option<TwilioError> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let error = ProviderError {
        code,
        message: parsed.as_ref().and_then(|e| e.message.clone()).unwrap_or_else(|| unexpected_body(status, body)),
        http_status: Some(status),
        more_info: parsed.and_then(|e| e.more_info),
        class: errors::class_of(code, Some(status)),
    };
    // The class, not the code, decides.
    match error.class {
        ErrorClass::Throttled | ErrorClass::Retryable => {
            let after_ms = retry_after.and_then(|value| parse_retry_after_ms(value, std::time::SystemTime::now()));
            SendError::Retry(RetryHint { after_ms, reason: error })
        }
        ErrorClass::OptedOut => SendError::OptedOut(error),
        _ => SendError::Reject(error),
    }
}

/// An answer that is not Twilio's error JSON (a proxy's page, say): its start, for the operator.
fn unexpected_body(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.chars().take(1000).collect();
    if snippet.trim().is_empty() {
        format!("HTTP {status} from Twilio")
    } else {
        format!("HTTP {status} from Twilio: {}", snippet.trim())
    }
}

/// Removes the credentials a request carried from what came back: an error
/// body that echoes the `Authorization` header (a proxy's error page, a
/// debugging gateway) must not reach logs, dead letters or status events.
pub fn redact_credentials(error: SendError, (user, password): &(String, String)) -> SendError {
    let basic = BASE64.encode(format!("{user}:{password}"));
    let encoded: String = form_urlencoded::byte_serialize(password.as_bytes()).collect();
    let secrets = [basic.as_str(), password.as_str(), encoded.as_str()];
    let scrub = |text: &mut String| {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            if text.contains(secret) {
                *text = text.replace(secret, "[redacted]");
            }
        }
    };
    let scrub_error = |mut e: ProviderError| {
        scrub(&mut e.message);
        if let Some(more_info) = e.more_info.as_mut() {
            scrub(more_info);
        }
        e
    };
    match error {
        SendError::Retry(hint) => {
            SendError::Retry(RetryHint { after_ms: hint.after_ms, reason: scrub_error(hint.reason) })
        }
        SendError::Reject(e) => SendError::Reject(scrub_error(e)),
        SendError::OptedOut(e) => SendError::OptedOut(scrub_error(e)),
        SendError::Ambiguous(e) => SendError::Ambiguous(scrub_error(e)),
    }
}

/// The longest wait a `Retry-After` may ask for; a longer one (a date years
/// ahead, a typo) would park the message for good.
const MOST_RETRY_AFTER_MS: u64 = 3600 * 1000;

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110 §10.2.3), in
/// milliseconds from `now`, at most an hour. Twilio sends seconds; a proxy
/// or gateway in front of it may send a date.
fn parse_retry_after_ms(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    let ms = match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => (seconds * 1000.0) as u64,
        Ok(_) => return None,
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).map_or(0, |wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
        }
    };
    Some(ms.min(MOST_RETRY_AFTER_MS))
}

/// When a request failed below HTTP: did it reach Twilio?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// Failed before the request was sent (DNS, connect, TLS): safe to retry.
    BeforeSending,
    /// The host refused the destination: it never will.
    Denied,
    /// Failed after sending (timeouts waiting for the answer, a dropped connection).
    AfterSending,
}

/// The outcome of a transport failure, with its description.
pub fn classify_transport(failure: TransportFailure, description: String) -> SendError {
    match failure {
        TransportFailure::BeforeSending => {
            SendError::Retry(RetryHint { after_ms: None, reason: local_error(description, ErrorClass::Retryable) })
        }
        // The host's allow-list refused it: only an operator can change that.
        TransportFailure::Denied => SendError::Reject(local_error(description, ErrorClass::Configuration)),
        TransportFailure::AfterSending => SendError::Ambiguous(local_error(description, ErrorClass::Unknown)),
    }
}

/// The base URL of a Twilio product (`api`, `conversations`) as Twilio's
/// libraries build it: `{product}.{edge}.{region}.twilio.com`, where an edge
/// without a region means region `us1`.
pub fn product_base(product: &str, edge: Option<&str>, region: Option<&str>) -> String {
    let region = region.or(edge.map(|_| "us1"));
    let host = [Some(product), edge, region, Some("twilio.com")].into_iter().flatten().collect::<Vec<_>>().join(".");
    format!("https://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_echoed_in_an_answer_are_redacted() {
        let credentials = ("SK00000000000000000000000000000002".to_owned(), "s3cret/+=".to_owned());
        let basic = BASE64.encode("SK00000000000000000000000000000002:s3cret/+=");
        let echo = format!(
            "<html>Authorization: Basic {basic}; key=SK00000000000000000000000000000002, password=s3cret/+= or s3cret%2F%2B%3D</html>"
        );
        let answer = refusal(502, None, echo.as_bytes());
        let SendError::Retry(hint) = redact_credentials(answer, &credentials) else { panic!("a 502 is retried") };
        let message = hint.reason.message;
        assert!(!message.contains("s3cret") && !message.contains(&basic), "{message}");
        assert_eq!(message.matches("[redacted]").count(), 3, "{message}");
        assert!(message.contains("SK00000000000000000000000000000002"), "the key's id is not a secret: {message}");
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date_and_capped() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let date = |ahead: u64| httpdate::fmt_http_date(now + std::time::Duration::from_secs(ahead));
        assert_eq!(parse_retry_after_ms("3", now), Some(3000));
        assert_eq!(parse_retry_after_ms(" 0.5 ", now), Some(500));
        assert_eq!(parse_retry_after_ms(&date(120), now), Some(120_000));
        // A date already past: retry now. One years ahead: at most an hour.
        assert_eq!(
            parse_retry_after_ms(&httpdate::fmt_http_date(now - std::time::Duration::from_secs(5)), now),
            Some(0)
        );
        assert_eq!(parse_retry_after_ms(&date(10 * 365 * 86400), now), Some(MOST_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after_ms("99999999", now), Some(MOST_RETRY_AFTER_MS));
        for nonsense in ["-1", "NaN", "inf", "soon", "", "Tue, 99 Foo 2026 00:00:00 GMT"] {
            assert_eq!(parse_retry_after_ms(nonsense, now), None, "{nonsense:?}");
        }
    }

    #[test]
    fn hosts_as_twilio_libraries_build_them() {
        assert_eq!(product_base("api", None, None), "https://api.twilio.com");
        assert_eq!(product_base("api", Some("dublin"), Some("ie1")), "https://api.dublin.ie1.twilio.com");
        assert_eq!(product_base("conversations", Some("sydney"), None), "https://conversations.sydney.us1.twilio.com");
        assert_eq!(product_base("api", None, Some("au1")), "https://api.au1.twilio.com");
    }
}
