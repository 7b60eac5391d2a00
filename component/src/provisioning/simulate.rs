//! Signed example webhooks, shaped as Twilio sends them, for local testing.

use crate::ingress::signature;

/// A webhook ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    pub path_with_query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a simulated webhook is signed and addressed with.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub account_sid: &'a str,
    pub auth_token: &'a str,
    pub chat_service_sid: Option<&'a str>,
    /// The URL Twilio would call: the public base when configured, else where it is posted.
    pub base_url: &'a str,
    /// 32 random hex digits, for fresh sids.
    pub random_hex: fn() -> String,
}

/// The options the caller gave (`name`, `value`, a name may repeat).
struct Options<'a>(&'a [(String, String)]);

impl<'a> Options<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The option, or a fresh sid with `prefix`.
    fn sid(&self, name: &str, prefix: &str, id: &Identity<'_>) -> String {
        self.get(name).map_or_else(|| fresh_sid(prefix, id), str::to_owned)
    }

    fn body(&self) -> &'a str {
        self.get("body").unwrap_or("Hello from ingress-egress simulate")
    }
}

fn fresh_sid(prefix: &str, id: &Identity<'_>) -> String {
    format!("{prefix}{}", (id.random_hex)())
}

/// Form parameters in the order Twilio sends them.
type Params = Vec<(String, String)>;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A content type for a media URL, from its extension.
fn content_type(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The kinds of webhook [`build`] makes.
pub const KINDS: &str = "sms, rcs, location, button, status, conversation, event-streams";

/// Builds a signed webhook of `kind` (one of [`KINDS`]).
pub fn build(kind: &str, options: &[(String, String)], id: &Identity<'_>) -> Result<Simulated, String> {
    let options = Options(options);
    if kind == "event-streams" {
        return Ok(event_streams_batch(&options, id));
    }
    let messaging = |params: Params| ("/twilio/messaging".to_owned(), params);
    let (path_with_query, params) = match kind {
        "sms" => messaging(inbound(&options, id, SMS_USER, SMS_NUMBER)),
        "rcs" => messaging(inbound(&options, id, "rcs:+14155550100", "rcs:ingress_egress_agent")),
        "location" => messaging(whatsapp_location(&options, id)),
        "button" => messaging(whatsapp_button(&options, id)),
        "status" => status_callback(&options, id),
        "conversation" => ("/twilio/conversations".to_owned(), message_added(&options, id)),
        other => return Err(format!("unknown webhook kind {other:?} ({KINDS})")),
    };
    let url = format!("{}{path_with_query}", id.base_url.trim_end_matches('/'));
    let signature = signature::compute(id.auth_token.as_bytes(), &url, &params);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
    Ok(Simulated {
        path_with_query,
        headers: vec![
            ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("x-twilio-signature".to_owned(), signature),
            ("user-agent".to_owned(), "TwilioProxy/1.1".to_owned()),
        ],
        body,
    })
}

const SMS_USER: &str = "+14155550100";
const SMS_NUMBER: &str = "+15005550006";
const WHATSAPP_USER: &str = "whatsapp:+14155550100";
const WHATSAPP_NUMBER: &str = "whatsapp:+15005550006";

/// An Event Streams batch: one `inbound-message.received` CloudEvent and,
/// with `status`, a message status event, signed as Twilio signs JSON
/// webhooks (the URL carries the body's `bodySHA256`).
fn event_streams_batch(options: &Options<'_>, id: &Identity<'_>) -> Simulated {
    let message_sid = options.sid("message-sid", "SM", id);
    let source = format!("/2010-04-01/Accounts/{}/Messages/{message_sid}.json", id.account_sid);
    let event = |kind: &str, data: serde_json::Value| {
        serde_json::json!({
            "specversion": "1.0",
            "type": kind,
            "source": source,
            "id": fresh_sid("EZ", id),
            "datacontenttype": "application/json",
            "time": "2026-01-01T00:00:00.000Z",
            "data": data,
        })
    };
    let body = options.body();
    let mut events = vec![event(
        "com.twilio.messaging.inbound-message.received",
        serde_json::json!({
            "messageSid": message_sid, "accountSid": id.account_sid,
            "from": options.get("from").unwrap_or(SMS_USER), "to": options.get("to").unwrap_or(SMS_NUMBER),
            "body": body, "numMedia": 0, "numSegments": crate::shared::segments::count(body).segments,
        }),
    )];
    if let Some(status) = options.get("status") {
        let data = serde_json::json!({
            "messageSid": message_sid, "accountSid": id.account_sid,
            "messageStatus": status.to_ascii_uppercase(), "errorCode": options.get("error-code"),
        });
        events.push(event(&format!("com.twilio.messaging.message.{status}"), data));
    }
    let body = serde_json::Value::Array(events).to_string();
    let hash = signature::hex(&<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let path_with_query = format!("/twilio/events?bodySHA256={hash}");
    let url = format!("{}{path_with_query}", id.base_url.trim_end_matches('/'));
    Simulated {
        path_with_query,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-twilio-signature".to_owned(), signature::compute(id.auth_token.as_bytes(), &url, signature::NO_PARAMS)),
            ("user-agent".to_owned(), "Twilio-Event-Streams".to_owned()),
        ],
        body,
    }
}

/// An inbound message (MMS with `media-url`s) to the messaging webhook,
/// between `from` and `to` unless the options name others.
fn inbound(options: &Options<'_>, id: &Identity<'_>, from: &str, to: &str) -> Params {
    let message_sid = options.sid("message-sid", "SM", id);
    let media: Vec<&str> = options.all("media-url").collect();
    let body = options.body();
    let mut out = params(&[
        ("ToCountry", "US"),
        ("SmsMessageSid", &message_sid),
        ("NumMedia", &media.len().to_string()),
        ("SmsSid", &message_sid),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", options.get("to").unwrap_or(to)),
        ("NumSegments", &crate::shared::segments::count(body).segments.to_string()),
        ("MessageSid", &message_sid),
        ("AccountSid", id.account_sid),
        ("From", options.get("from").unwrap_or(from)),
        ("ApiVersion", "2010-04-01"),
    ]);
    for (index, url) in media.iter().enumerate() {
        out.extend(params(&[
            (&format!("MediaUrl{index}"), url),
            (&format!("MediaContentType{index}"), content_type(url)),
        ]));
    }
    out
}

/// A WhatsApp location: Twilio's `MessageType=location` parameters.
fn whatsapp_location(options: &Options<'_>, id: &Identity<'_>) -> Params {
    let mut out = inbound(options, id, WHATSAPP_USER, WHATSAPP_NUMBER);
    out.extend(params(&[
        ("MessageType", "location"),
        ("Latitude", "37.7879277"),
        ("Longitude", "-122.4032951"),
        ("Address", "375 Beale St, San Francisco, CA 94105"),
        ("Label", "Twilio HQ"),
        ("ProfileName", "Ana"),
        ("WaId", "14155550100"),
    ]));
    out
}

/// A WhatsApp quick reply: the button's text is the body.
fn whatsapp_button(options: &Options<'_>, id: &Identity<'_>) -> Params {
    let mut out = inbound(options, id, WHATSAPP_USER, WHATSAPP_NUMBER);
    out.extend(params(&[
        ("MessageType", "button"),
        ("ButtonText", options.body()),
        ("ButtonPayload", "simulated-payload"),
        ("ProfileName", "Ana"),
        ("WaId", "14155550100"),
    ]));
    out
}

/// A status callback, addressed with `egress-id` when given.
fn status_callback(options: &Options<'_>, id: &Identity<'_>) -> (String, Params) {
    let message_sid = options.sid("message-sid", "SM", id);
    let status = options.get("status").unwrap_or("delivered");
    let mut out = params(&[
        ("SmsSid", &message_sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", options.get("to").unwrap_or("+14155550100")),
        ("MessageSid", &message_sid),
        ("AccountSid", id.account_sid),
        ("From", options.get("from").unwrap_or("+15005550006")),
        ("ApiVersion", "2010-04-01"),
    ]);
    if let Some(code) = options.get("error-code") {
        out.extend(params(&[("ErrorCode", code)]));
    }
    let path = match options.get("egress-id") {
        Some(egress_id) => {
            let encoded: String = form_urlencoded::byte_serialize(egress_id.as_bytes()).collect();
            format!("/twilio/status?egress_id={encoded}")
        }
        None => "/twilio/status".to_owned(),
    };
    (path, out)
}

/// A Conversations `onMessageAdded` post-event webhook.
fn message_added(options: &Options<'_>, id: &Identity<'_>) -> Params {
    let author = options.get("from").unwrap_or("alice");
    let service = id.chat_service_sid.map_or_else(|| fresh_sid("IS", id), str::to_owned);
    params(&[
        ("AccountSid", id.account_sid),
        ("EventType", "onMessageAdded"),
        ("Source", "SDK"),
        ("ClientIdentity", author),
        ("ConversationSid", &options.sid("conversation", "CH", id)),
        ("MessageSid", &options.sid("message-sid", "IM", id)),
        ("MessagingServiceSid", &fresh_sid("MG", id)),
        ("ChatServiceSid", &service),
        ("ParticipantSid", &fresh_sid("MB", id)),
        ("Index", "0"),
        ("DateCreated", "2026-01-01T00:00:00.000Z"),
        ("Body", options.body()),
        ("Author", author),
        ("Attributes", "{}"),
        ("RetryCount", "0"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::envelope::Param;
    use crate::ingress::signature::{SignedContent, validate};

    #[test]
    fn simulated_webhooks_verify() {
        let random: fn() -> String = || "0123456789abcdef0123456789abcdef".to_owned();
        let id = Identity {
            account_sid: "AC0123456789abcdef0123456789abcdef",
            auth_token: "tok",
            chat_service_sid: None,
            base_url: "http://127.0.0.1:8080/",
            random_hex: random,
        };
        for kind in KINDS.split(", ") {
            let options = vec![
                ("media-url".to_owned(), "https://e.com/a.png".to_owned()),
                ("egress-id".to_owned(), "e 1".to_owned()),
                ("status".to_owned(), "sent".to_owned()),
            ];
            let sim = build(kind, &options, &id).unwrap();
            let params: Vec<Param<'_>> = form_urlencoded::parse(sim.body.as_bytes()).collect();
            let content = match kind {
                "event-streams" => SignedContent::Raw(sim.body.as_bytes()),
                _ => SignedContent::Form(&params),
            };
            let url = format!("http://127.0.0.1:8080{}", sim.path_with_query);
            let sig = sim.headers.iter().find(|(k, _)| k == "x-twilio-signature").map(|(_, v)| v.as_str());
            assert_eq!(validate(b"tok", &url, content, sig), Ok(()), "{kind}");
        }
        assert!(build("fax", &[], &id).is_err());
    }

    #[test]
    fn simulated_kinds_become_their_channels_and_typed_fields() {
        use crate::ingress::envelope::{Context, Params, inbound_message};
        use crate::platform::connector::types::Channel;
        let id = Identity {
            account_sid: "AC0123456789abcdef0123456789abcdef",
            auth_token: "tok",
            chat_service_sid: None,
            base_url: "http://127.0.0.1:8080",
            random_hex: || "0123456789abcdef0123456789abcdef".to_owned(),
        };
        let envelope = |kind: &str| {
            let sim = build(kind, &[("body".to_owned(), "Yes".to_owned())], &id).unwrap();
            let params: Vec<Param<'_>> = form_urlencoded::parse(sim.body.as_bytes()).collect();
            let context = Context { id: "e".into(), received_at: "2026-12-07T00:00:00Z".into() };
            inbound_message(Params(&params), &context).unwrap()
        };
        assert_eq!(envelope("rcs").channel, Channel::Rcs);
        let batch = build("event-streams", &[("status".to_owned(), "sent".to_owned())], &id).unwrap();
        let kinds: Vec<_> = crate::ingress::event_streams::read_batch(batch.body.as_bytes())
            .into_iter()
            .map(|event| event.kind)
            .collect();
        use crate::ingress::event_streams::Kind;
        assert_eq!(kinds, [Kind::Inbound, Kind::Status]);
        let location = envelope("location");
        assert_eq!(location.channel, Channel::Whatsapp);
        assert_eq!(location.location.unwrap().label.as_deref(), Some("Twilio HQ"));
        let button = envelope("button").button.unwrap();
        assert_eq!((button.text.as_deref(), button.payload.as_deref()), (Some("Yes"), Some("simulated-payload")));
    }
}
