//! Egress messages → Twilio REST requests, and Twilio's answers → outcomes.
//!
//! Pure: [`prepare`] says exactly what to send, [`classify_response`] and
//! [`classify_transport`] say what the answer means for the caller (accepted,
//! retry, reject, opted out, or ambiguous).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::errors;
use crate::platform::connector::types::{Accepted, EgressMessage, ErrorClass, ProviderError, RetryHint, SendError};

/// Twilio's limits on a message.
const MAX_BODY_CHARS: usize = 1600;
const MAX_MEDIA: usize = 10;

/// The senders a message without its own `from` or Messaging Service uses.
#[derive(Debug, Clone, Default)]
pub struct SenderDefaults {
    pub messaging_service_sid: Option<String>,
    pub from_number: Option<String>,
}

/// The settings egress needs, resolved by the caller.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    pub account_sid: String,
    /// (user, password) for HTTP Basic: the API key and secret, else the account and Auth Token.
    pub credentials: (String, String),
    /// e.g. `https://api.twilio.com`, no trailing slash.
    pub api_base: String,
    /// e.g. `https://conversations.twilio.com`, no trailing slash.
    pub conversations_base: String,
    pub chat_service_sid: Option<String>,
    pub senders: SenderDefaults,
    pub identity: Option<String>,
    /// The connector's own status route, when the public URL is known.
    pub default_status_callback: Option<String>,
}

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

/// Where a checked message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination<'a> {
    /// Programmable Messaging: to an address, from a number and/or a Messaging Service.
    Address {
        to: &'a str,
        from: Option<String>,
        messaging_service: Option<String>,
        /// The template, schedule, validity and option fields, checked.
        fields: Vec<(String, String)>,
    },
    /// A message posted into a Conversation.
    Conversation(&'a str),
}

impl Destination<'_> {
    /// The key of the rate limit this message counts against: its Messaging
    /// Service or its number (Twilio queues per sender), or its conversation.
    pub fn rate_key(&self) -> String {
        match self {
            Self::Address { messaging_service: Some(service), .. } => service.clone(),
            Self::Address { from: Some(from), .. } => from.clone(),
            Self::Address { .. } => "default".to_owned(),
            Self::Conversation(conversation) => format!("conversation:{conversation}"),
        }
    }
}

/// Checks `message` against Twilio's limits and picks its sender, without
/// sending anything and without secrets: the one validation of egress.
pub fn check<'a>(message: &'a EgressMessage, defaults: &SenderDefaults) -> Result<Destination<'a>, String> {
    let body = message.body.as_deref().filter(|b| !b.is_empty());
    if body.is_none() && message.media_urls.is_empty() && message.template.is_none() {
        return Err("a message needs a body, media or a template".into());
    }
    let fields = crate::options::form_fields(message)?;
    if body.is_some_and(|b| b.chars().count() > MAX_BODY_CHARS) {
        return Err(format!("body is longer than {MAX_BODY_CHARS} characters"));
    }
    if message.media_urls.len() > MAX_MEDIA {
        return Err(format!("more than {MAX_MEDIA} media URLs"));
    }
    if message.id.trim().is_empty() {
        return Err("id must not be empty".into());
    }
    match (&message.conversation, &message.to) {
        (Some(_), None) if message.template.is_some() || message.send_at.is_some() || !message.options.is_empty() => {
            Err("templates, scheduling and options are for messages to an address, not conversations".into())
        }
        (Some(conversation), None) if message.media_urls.is_empty() => Ok(Destination::Conversation(conversation)),
        (Some(_), None) => Err("conversation messages take media by MediaSid, not URL".into()),
        (None, Some(to)) => {
            let (from, messaging_service) = match (&message.from, &message.sender_pool) {
                (None, None) => (defaults.from_number.clone(), defaults.messaging_service_sid.clone()),
                (from, service) => (from.clone(), service.clone()),
            };
            if from.is_none() && messaging_service.is_none() {
                return Err("no sender: give from or messaging_service_sid, or set TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER".into());
            }
            if let (Some(feature), None) = (crate::options::needs_messaging_service(message), &messaging_service) {
                return Err(format!("{feature} needs a Messaging Service: give messaging_service_sid"));
            }
            Ok(Destination::Address { to, from, messaging_service, fields })
        }
        (Some(_), Some(_)) => Err("give either to or conversation_sid, not both".into()),
        (None, None) => Err("a message needs to or conversation_sid".into()),
    }
}

fn local_reject(message: impl Into<String>) -> SendError {
    SendError::Reject(local_error(message.into(), ErrorClass::InvalidRequest))
}

/// A failure the connector itself saw, not one Twilio answered.
fn local_error(message: String, class: ErrorClass) -> ProviderError {
    ProviderError { code: None, message, http_status: None, more_info: None, class }
}

/// Builds the REST request for `message`, or rejects it before anything is sent.
pub fn prepare(message: &EgressMessage, settings: &EgressSettings) -> Result<PreparedRequest, SendError> {
    let destination = check(message, &settings.senders).map_err(local_reject)?;
    let headers = rest_headers(settings);
    Ok(match destination {
        Destination::Conversation(conversation) => conversation_request(message, conversation, settings, headers),
        Destination::Address { to, from, messaging_service, fields } => {
            let mut form = vec![("To".to_owned(), to.to_owned())];
            form.extend(messaging_service.map(|service| ("MessagingServiceSid".to_owned(), service)));
            form.extend(from.map(|from| ("From".to_owned(), from)));
            let mut request = messages_request(message, form, settings, headers);
            request.form.extend(fields);
            request
        }
    })
}

/// `POST /2010-04-01/Accounts/{AC}/Messages/{Sid}.json` with `Status=canceled`:
/// cancels a scheduled message. The sid is checked first, so it cannot change
/// the path.
pub fn prepare_cancel(sid: &str, settings: &EgressSettings) -> Result<PreparedRequest, SendError> {
    if !(is_sid(sid, "SM") || is_sid(sid, "MM")) {
        return Err(local_reject(format!("{sid:?} is not a message sid (SM… or MM…)")));
    }
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages/{sid}.json",
        settings.api_base,
        path_segment(&settings.account_sid)
    );
    let headers = rest_headers(settings);
    Ok(PreparedRequest { verb: Verb::Post, url, headers, form: vec![("Status".to_owned(), "canceled".to_owned())] })
}

/// Whether `value` is a Twilio sid of kind `prefix`: the prefix and 32 hex
/// digits, so it can go into a URL path as it is.
pub(crate) fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `POST /v1/[Services/{IS}/]Conversations/{CH}/Messages`, authored by the service's identity.
fn conversation_request(
    message: &EgressMessage,
    conversation: &str,
    settings: &EgressSettings,
    mut headers: Vec<(String, String)>,
) -> PreparedRequest {
    let url = match &settings.chat_service_sid {
        Some(service) => format!(
            "{}/v1/Services/{}/Conversations/{}/Messages",
            settings.conversations_base,
            path_segment(service),
            path_segment(conversation)
        ),
        None => format!("{}/v1/Conversations/{}/Messages", settings.conversations_base, path_segment(conversation)),
    };
    let mut form = Vec::new();
    form.extend(settings.identity.clone().map(|author| ("Author".to_owned(), author)));
    form.extend(message.body.clone().filter(|b| !b.is_empty()).map(|body| ("Body".to_owned(), body)));
    form.extend(message.attributes_json.clone().map(|attributes| ("Attributes".to_owned(), attributes)));
    headers.push(("x-twilio-webhook-enabled".to_owned(), "true".to_owned()));
    PreparedRequest { verb: Verb::Post, url, headers, form }
}

/// `POST /2010-04-01/Accounts/{AC}/Messages.json` with the sender already in `form`.
fn messages_request(
    message: &EgressMessage,
    mut form: Vec<(String, String)>,
    settings: &EgressSettings,
    headers: Vec<(String, String)>,
) -> PreparedRequest {
    form.extend(message.body.clone().filter(|b| !b.is_empty()).map(|body| ("Body".to_owned(), body)));
    form.extend(message.media_urls.iter().map(|media| ("MediaUrl".to_owned(), media.clone())));
    let callback = message.status_callback.clone().or_else(|| {
        settings.default_status_callback.as_ref().map(|base| {
            let id: String = form_urlencoded::byte_serialize(message.id.as_bytes()).collect();
            format!("{base}?egress_id={id}")
        })
    });
    form.extend(callback.map(|callback| ("StatusCallback".to_owned(), callback)));
    let url =
        format!("{}/2010-04-01/Accounts/{}/Messages.json", settings.api_base, path_segment(&settings.account_sid));
    PreparedRequest { verb: Verb::Post, url, headers, form }
}

/// The headers of every REST call: Basic credentials, a form body, JSON back.
pub(crate) fn rest_headers(settings: &EgressSettings) -> Vec<(String, String)> {
    vec![
        ("authorization".to_owned(), basic_auth(&settings.credentials)),
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

/// Twilio's JSON answer to a created message (both APIs).
#[derive(serde::Deserialize)]
struct CreatedMessage {
    sid: String,
    #[serde(default)]
    status: Option<String>,
    /// A string in the Messages API (`"1"`).
    #[serde(default)]
    num_segments: Option<serde_json::Value>,
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
struct TwilioError {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    more_info: Option<String>,
}

/// What an HTTP answer from Twilio means.
pub fn classify_response(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<Accepted, SendError> {
    if (200..300).contains(&status) {
        let created: CreatedMessage = serde_json::from_slice(body).map_err(|e| {
            // Twilio said yes but the answer is unreadable: the message exists,
            // so sending again would duplicate it.
            SendError::Ambiguous(ProviderError {
                code: None,
                message: format!("unreadable {status} answer: {e}"),
                http_status: Some(status),
                more_info: None,
                class: ErrorClass::Unknown,
            })
        })?;
        let segments = twilio_count(created.num_segments.as_ref()).and_then(|n| u32::try_from(n).ok());
        return Ok(Accepted {
            provider_message_id: created.sid,
            status: created.status.unwrap_or_else(|| "sent".to_owned()),
            segments,
            reconciliation: None,
        });
    }
    Err(refusal(status, retry_after, body))
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn credentials_echoed_in_an_answer_are_redacted() {
        let credentials = ("SK00000000000000000000000000000002".to_owned(), "s3cret/+=".to_owned());
        let basic = BASE64.encode("SK00000000000000000000000000000002:s3cret/+=");
        let echo = format!(
            "<html>Authorization: Basic {basic}; key=SK00000000000000000000000000000002, password=s3cret/+= or s3cret%2F%2B%3D</html>"
        );
        let answer = classify_response(502, None, echo.as_bytes());
        let Err(SendError::Retry(hint)) = answer.map_err(|e| redact_credentials(e, &credentials)) else {
            panic!("a 502 is retried")
        };
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

    pub(crate) fn settings() -> EgressSettings {
        EgressSettings {
            account_sid: "AC00000000000000000000000000000001".into(),
            credentials: ("SK00000000000000000000000000000002".into(), "secret".into()),
            api_base: "https://api.twilio.com".into(),
            conversations_base: "https://conversations.twilio.com".into(),
            chat_service_sid: None,
            senders: SenderDefaults { messaging_service_sid: None, from_number: Some("+15005550006".into()) },
            identity: Some("platform".into()),
            default_status_callback: Some("https://hooks.example.com/twilio/status".into()),
        }
    }

    /// A plain SMS to `to`, for the connector's unit tests.
    pub(crate) fn sms(to: &str, body: &str) -> EgressMessage {
        EgressMessage {
            id: "eg 1".into(),
            to: Some(to.into()),
            conversation: None,
            body: Some(body.into()),
            media_urls: vec![],
            from: None,
            sender_pool: None,
            status_callback: None,
            attributes_json: None,
            template: None,
            send_at: None,
            validity_seconds: None,
            options: vec![],
        }
    }

    #[test]
    fn sms_request_is_exact() {
        let mut message = sms("+14155550100", "hello");
        message.media_urls = vec!["https://e.com/a.png".into(), "https://e.com/b.png".into()];
        let request = prepare(&message, &settings()).unwrap();
        assert_eq!(
            request.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json"
        );
        assert_eq!(
            request.headers[0],
            ("authorization".into(), format!("Basic {}", BASE64.encode("SK00000000000000000000000000000002:secret")))
        );
        assert_eq!(
            request.body(),
            "To=%2B14155550100&From=%2B15005550006&Body=hello&MediaUrl=https%3A%2F%2Fe.com%2Fa.png&MediaUrl=https%3A%2F%2Fe.com%2Fb.png\
             &StatusCallback=https%3A%2F%2Fhooks.example.com%2Ftwilio%2Fstatus%3Fegress_id%3Deg%2B1"
        );
    }

    #[test]
    fn sender_choice() {
        let mut s = settings();
        s.senders.messaging_service_sid = Some("MG00000000000000000000000000000007".into());
        let request = prepare(&sms("+1", "x"), &s).unwrap();
        assert!(request.form.contains(&("MessagingServiceSid".into(), "MG00000000000000000000000000000007".into())));
        // The message's own sender wins over both defaults.
        let mut message = sms("+1", "x");
        message.from = Some("+19999999999".into());
        let request = prepare(&message, &s).unwrap();
        assert!(request.form.contains(&("From".into(), "+19999999999".into())));
        assert!(!request.form.iter().any(|(k, _)| k == "MessagingServiceSid"));
        s.senders.messaging_service_sid = None;
        s.senders.from_number = None;
        assert!(matches!(prepare(&sms("+1", "x"), &s), Err(SendError::Reject(_))));
    }

    #[test]
    fn rate_keys_follow_the_sender() {
        let mut defaults = SenderDefaults { messaging_service_sid: None, from_number: Some("+15005550006".into()) };
        assert_eq!(check(&sms("+1", "x"), &defaults).unwrap().rate_key(), "+15005550006");
        let mut message = sms("+1", "x");
        message.from = Some("+19999999999".into());
        assert_eq!(check(&message, &defaults).unwrap().rate_key(), "+19999999999");
        defaults.messaging_service_sid = Some("MG00000000000000000000000000000007".into());
        assert_eq!(check(&sms("+1", "x"), &defaults).unwrap().rate_key(), "MG00000000000000000000000000000007");
        message.to = None;
        message.conversation = Some("CH1".into());
        assert_eq!(check(&message, &defaults).unwrap().rate_key(), "conversation:CH1");
        message.id = " ".into();
        assert_eq!(check(&message, &defaults).unwrap_err(), "id must not be empty");
    }

    #[test]
    fn local_rejections() {
        assert!(matches!(prepare(&sms("+1", ""), &settings()), Err(SendError::Reject(_))));
        assert!(matches!(prepare(&sms("+1", &"a".repeat(1601)), &settings()), Err(SendError::Reject(_))));
        assert!(prepare(&sms("+1", &"a".repeat(1600)), &settings()).is_ok());
        let mut message = sms("+1", "x");
        message.media_urls = vec!["u".into(); 11];
        assert!(matches!(prepare(&message, &settings()), Err(SendError::Reject(_))));
        message.media_urls.clear();
        message.to = None;
        assert!(matches!(prepare(&message, &settings()), Err(SendError::Reject(_))));
    }

    #[test]
    fn conversation_request() {
        let mut message = sms("", "hi");
        message.to = None;
        message.conversation = Some("CH00000000000000000000000000000004".into());
        message.attributes_json = Some("{\"a\":1}".into());
        let request = prepare(&message, &settings()).unwrap();
        assert_eq!(
            request.url,
            "https://conversations.twilio.com/v1/Conversations/CH00000000000000000000000000000004/Messages"
        );
        assert_eq!(request.body(), "Author=platform&Body=hi&Attributes=%7B%22a%22%3A1%7D");
        assert!(request.headers.contains(&("x-twilio-webhook-enabled".into(), "true".into())));
        let mut s = settings();
        s.chat_service_sid = Some("IS00000000000000000000000000000003".into());
        let request = prepare(&message, &s).unwrap();
        assert_eq!(
            request.url,
            "https://conversations.twilio.com/v1/Services/IS00000000000000000000000000000003/Conversations/CH00000000000000000000000000000004/Messages"
        );
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        let mut message = sms("", "hi");
        message.to = None;
        message.conversation = Some("../../Accounts".into());
        let request = prepare(&message, &settings()).unwrap();
        assert!(request.url.ends_with("/v1/Conversations/..%2F..%2FAccounts/Messages"));
    }

    #[test]
    fn classification() {
        let accepted = classify_response(201, None, br#"{"sid":"SM1","status":"queued","num_segments":"2"}"#).unwrap();
        assert_eq!(
            (accepted.provider_message_id.as_str(), accepted.status.as_str(), accepted.segments),
            ("SM1", "queued", Some(2))
        );
        let e = classify_response(400, None, br#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#);
        assert!(matches!(e, Err(SendError::Reject(ProviderError { code: Some(21211), http_status: Some(400), .. }))));
        let e = classify_response(
            400,
            None,
            br#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","status":400}"#,
        );
        assert!(matches!(e, Err(SendError::OptedOut(ProviderError { code: Some(21610), .. }))));
        let e = classify_response(429, Some("2"), br#"{"code":20429,"message":"Too Many Requests","status":429}"#);
        assert!(matches!(e, Err(SendError::Retry(RetryHint { after_ms: Some(2000), .. }))));
        let e = classify_response(503, None, b"<html>busy</html>");
        assert!(matches!(
            e,
            Err(SendError::Retry(RetryHint {
                after_ms: None,
                reason: ProviderError { code: None, http_status: Some(503), .. }
            }))
        ));
        let e = classify_response(201, None, b"not json");
        assert!(matches!(e, Err(SendError::Ambiguous(_))));
        assert!(matches!(classify_transport(TransportFailure::BeforeSending, "refused".into()), SendError::Retry(_)));
        assert!(matches!(
            classify_transport(TransportFailure::AfterSending, "timeout".into()),
            SendError::Ambiguous(_)
        ));
        assert!(matches!(classify_transport(TransportFailure::Denied, "denied".into()), SendError::Reject(_)));
    }

    #[test]
    fn hosts_as_twilio_libraries_build_them() {
        assert_eq!(product_base("api", None, None), "https://api.twilio.com");
        assert_eq!(product_base("api", Some("dublin"), Some("ie1")), "https://api.dublin.ie1.twilio.com");
        assert_eq!(product_base("conversations", Some("sydney"), None), "https://conversations.sydney.us1.twilio.com");
        assert_eq!(product_base("api", None, Some("au1")), "https://api.au1.twilio.com");
    }
}
