//! An egress message → the Twilio REST request that sends it, and Twilio's
//! answer to a created message → what was accepted.
//!
//! Pure: [`check`] is the one validation of egress (no secrets needed),
//! [`prepare`] says exactly what to send, [`classify_response`] what came of it.

use crate::platform::connector::types::{Accepted, EgressMessage, ErrorClass, ProviderError, SendError};
use crate::shared::rest::{
    PreparedRequest, Verb, is_sid, local_error, path_segment, refusal, rest_headers, twilio_count,
};

/// Twilio's limits on a message.
const MAX_BODY_CHARS: usize = 1600;
const MAX_MEDIA: usize = 10;

/// The senders a message without its own `from` or Messaging Service uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    let fields = crate::egress::options::form_fields(message)?;
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
            if let (Some(feature), None) =
                (crate::egress::options::needs_messaging_service(message), &messaging_service)
            {
                return Err(format!("{feature} needs a Messaging Service: give messaging_service_sid"));
            }
            Ok(Destination::Address { to, from, messaging_service, fields })
        }
        (Some(_), Some(_)) => Err("give either to or conversation_sid, not both".into()),
        (None, None) => Err("a message needs to or conversation_sid".into()),
    }
}

/// A message refused before anything was sent.
pub(crate) fn local_reject(message: impl Into<String>) -> SendError {
    SendError::Reject(local_error(message.into(), ErrorClass::InvalidRequest))
}

/// Builds the REST request for `message`, or rejects it before anything is sent.
pub fn prepare(message: &EgressMessage, settings: &EgressSettings) -> Result<PreparedRequest, SendError> {
    let destination = check(message, &settings.senders).map_err(local_reject)?;
    Ok(request_for(message, destination, settings))
}

/// The REST request that sends `message` to its checked `destination`.
pub fn request_for(
    message: &EgressMessage,
    destination: Destination<'_>,
    settings: &EgressSettings,
) -> PreparedRequest {
    let headers = rest_headers(&settings.credentials);
    match destination {
        Destination::Conversation(conversation) => conversation_request(message, conversation, settings, headers),
        Destination::Address { to, from, messaging_service, fields } => {
            let mut form = vec![("To".to_owned(), to.to_owned())];
            form.extend(messaging_service.map(|service| ("MessagingServiceSid".to_owned(), service)));
            form.extend(from.map(|from| ("From".to_owned(), from)));
            let mut request = messages_request(message, form, settings, headers);
            request.form.extend(fields);
            request
        }
    }
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
    let headers = rest_headers(&settings.credentials);
    Ok(PreparedRequest { verb: Verb::Post, url, headers, form: vec![("Status".to_owned(), "canceled".to_owned())] })
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

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;
    use crate::platform::connector::types::RetryHint;
    use crate::shared::rest::{TransportFailure, classify_transport};

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
            account: None,
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
}
