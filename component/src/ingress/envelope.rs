//! Twilio webhook parameters → the platform's envelopes and status events.
//!
//! Pure functions: the caller supplies the envelope id and the time received.
//! Every parameter Twilio sent is kept in `attributes` in its order; parameters
//! this code does not know are never an error.

use std::borrow::Cow;

use crate::ingress::typed_fields;
use crate::platform::connector::types::{Attribute, Channel, IngressEnvelope, Media, StatusEvent};
use crate::shared::segments;

/// The platform's name for this connector's messages.
pub const SOURCE: &str = "twilio";

/// What the caller provides that is not in the webhook.
#[derive(Debug, Clone)]
pub struct Context {
    /// A fresh envelope id.
    pub id: String,
    /// RFC 3339 time of receipt.
    pub received_at: String,
}

/// The Media Content Service's base URL for an edge and region as Twilio's
/// libraries name them; its region is `us1` unless one is set.
pub fn media_content_base(edge: Option<&str>, region: Option<&str>) -> String {
    crate::shared::rest::product_base("mcs", edge, Some(region.unwrap_or("us1")))
}

/// A webhook that cannot be turned into an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    Missing(&'static str),
    Malformed { field: &'static str, reason: String },
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(field) => write!(f, "missing parameter {field}"),
            Self::Malformed { field, reason } => write!(f, "malformed parameter {field}: {reason}"),
        }
    }
}

/// One webhook parameter, name and value, decoded: borrowed from the body
/// where it needed no decoding, so a webhook's form costs an allocation only
/// for a value with `+` or `%` escapes.
pub type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Webhook parameters with look-ups by name.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a>(pub &'a [Param<'a>]);

impl<'a> Params<'a> {
    /// The first value of `name`, when present and not empty.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref()).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &'static str) -> Result<&'a str, EnvelopeError> {
        self.get(name).ok_or(EnvelopeError::Missing(name))
    }

    fn attributes(&self) -> Vec<Attribute> {
        self.0.iter().map(|(name, value)| Attribute { name: name.to_string(), value: value.to_string() }).collect()
    }

    /// Inbound messages repeat the sid as `SmsMessageSid`/`SmsSid`; older ones carry only those.
    fn message_sid(&self) -> Result<&'a str, EnvelopeError> {
        self.get("MessageSid")
            .or_else(|| self.get("SmsMessageSid"))
            .or_else(|| self.get("SmsSid"))
            .ok_or(EnvelopeError::Missing("MessageSid"))
    }
}

/// An inbound SMS, MMS or WhatsApp message (the Messaging webhook).
pub fn inbound_message(params: Params<'_>, context: &Context) -> Result<IngressEnvelope, EnvelopeError> {
    let sid = params.message_sid()?;
    let account_sid = params.require("AccountSid")?;
    let from = params.require("From")?;
    let to = params.require("To")?;
    let body = params.get("Body").unwrap_or_default();
    let media = message_media(params);
    let channel = if has_prefix(from, "whatsapp:") || has_prefix(to, "whatsapp:") {
        Channel::Whatsapp
    } else if has_prefix(from, "rcs:") || has_prefix(to, "rcs:") {
        Channel::Rcs
    } else if media.is_empty() {
        Channel::Sms
    } else {
        Channel::Mms
    };
    let typed = typed_fields::read(params);
    Ok(IngressEnvelope {
        id: context.id.clone(),
        source: SOURCE.to_owned(),
        channel,
        provider_message_id: sid.to_owned(),
        account: account_sid.to_owned(),
        conversation: None,
        from: from.to_owned(),
        to: Some(to.to_owned()),
        body: body.to_owned(),
        media,
        segments: segments::count(body).segments,
        received_at: context.received_at.clone(),
        attributes: params.attributes(),
        metadata_json: None,
        profile: typed.profile,
        location: typed.location,
        button: typed.button,
        reply_to: typed.reply_to,
        referral: typed.referral,
    })
}

/// Whether `address` starts with the channel prefix `prefix`, in any case.
fn has_prefix(address: &str, prefix: &str) -> bool {
    address.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

impl Media {
    /// A media item as the webhook names it, its bytes not fetched.
    pub fn unfetched() -> Self {
        Self { url: String::new(), content_type: None, sha256: None, size: None, stored_url: None }
    }
}

/// Every `MediaUrl{N}` with its `MediaContentType{N}`, in the order of N.
/// `NumMedia` is not trusted to say how many there are.
fn message_media(params: Params<'_>) -> Vec<Media> {
    let mut indexed: Vec<(u32, &str)> = params
        .0
        .iter()
        .filter_map(|(name, value)| {
            let index = name.strip_prefix("MediaUrl")?.parse::<u32>().ok()?;
            (!value.is_empty()).then_some((index, value.as_ref()))
        })
        .collect();
    indexed.sort_by_key(|(index, _)| *index);
    indexed.dedup_by_key(|(index, _)| *index);
    indexed
        .into_iter()
        .map(|(index, url)| Media {
            url: url.to_owned(),
            content_type: params.get(&format!("MediaContentType{index}")).map(str::to_owned),
            ..Media::unfetched()
        })
        .collect()
}

/// A message status callback → a status event for the egress message `egress_id`.
pub fn status_callback(
    params: Params<'_>,
    egress_id: Option<String>,
    occurred_at: String,
) -> Result<StatusEvent, EnvelopeError> {
    let sid = params.message_sid()?;
    let status = params
        .get("MessageStatus")
        .or_else(|| params.get("SmsStatus"))
        .ok_or(EnvelopeError::Missing("MessageStatus"))?;
    let error_code = match params.get("ErrorCode") {
        Some(code) => Some(
            code.parse::<u32>()
                .map_err(|_| EnvelopeError::Malformed { field: "ErrorCode", reason: "not a number".to_owned() })?,
        ),
        None => None,
    };
    Ok(StatusEvent {
        id: egress_id,
        provider_message_id: Some(sid.to_owned()),
        status: status.to_owned(),
        error_code,
        error_class: error_code.map(|code| crate::shared::errors::class_of(Some(code), None)),
        previous_status: None,
        error_message: params.get("ErrorMessage").map(str::to_owned),
        account: params.get("AccountSid").map(str::to_owned),
        occurred_at,
        attributes: params.attributes(),
    })
}

/// The key that makes a repeated status callback a duplicate: one event per
/// message and status.
pub fn status_dedup_key(event: &StatusEvent) -> Option<String> {
    event.provider_message_id.as_ref().map(|sid| format!("{sid}:{}", event.status))
}

/// A Conversations post-event webhook: `onMessageAdded` becomes an envelope;
/// other event types are acknowledged and not published (`Ok(None)`).
/// Media links point at `media_content_base`, Twilio's Media Content Service
/// in the configured region (`https://mcs.us1.twilio.com` by default).
pub fn conversation_event(
    params: Params<'_>,
    context: &Context,
    media_content_base: &str,
) -> Result<Option<IngressEnvelope>, EnvelopeError> {
    let event_type = params.require("EventType")?;
    if event_type != "onMessageAdded" {
        return Ok(None);
    }
    let sid = params.require("MessageSid")?;
    let account_sid = params.require("AccountSid")?;
    let conversation_sid = params.require("ConversationSid")?;
    let author = params.get("Author").or_else(|| params.get("ClientIdentity")).unwrap_or("system");
    let body = params.get("Body").unwrap_or_default();
    let media = match params.get("Media") {
        Some(json) => conversation_media(json, params.get("ChatServiceSid"), media_content_base)?,
        None => Vec::new(),
    };
    // Attributes is JSON text set by whoever wrote the message; kept raw in
    // `attributes` always, and as structured metadata only when it parses.
    let metadata_json = params
        .get("Attributes")
        .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
        .map(str::to_owned);
    Ok(Some(IngressEnvelope {
        id: context.id.clone(),
        source: SOURCE.to_owned(),
        channel: Channel::Conversations,
        provider_message_id: sid.to_owned(),
        account: account_sid.to_owned(),
        conversation: Some(conversation_sid.to_owned()),
        from: author.to_owned(),
        to: None,
        body: body.to_owned(),
        media,
        segments: segments::count(body).segments,
        received_at: context.received_at.clone(),
        attributes: params.attributes(),
        metadata_json,
        profile: None,
        location: None,
        button: None,
        reply_to: None,
        referral: None,
    }))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConversationMedia {
    sid: String,
    content_type: Option<String>,
}

/// `Media` is a JSON list of `{Sid, Filename, ContentType, Size}`. Its content
/// lives in Twilio's Media Content Service, addressed by the chat service and sid.
fn conversation_media(json: &str, chat_service_sid: Option<&str>, base: &str) -> Result<Vec<Media>, EnvelopeError> {
    let items: Vec<ConversationMedia> =
        serde_json::from_str(json).map_err(|e| EnvelopeError::Malformed { field: "Media", reason: e.to_string() })?;
    let service = chat_service_sid.ok_or(EnvelopeError::Missing("ChatServiceSid"))?;
    Ok(items
        .into_iter()
        .map(|item| Media {
            url: format!("{base}/v1/Services/{service}/Media/{}", item.sid),
            content_type: item.content_type,
            ..Media::unfetched()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(list: &[(&'a str, &'a str)]) -> Vec<Param<'a>> {
        list.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    /// The default region's Media Content Service.
    const US1: &str = "https://mcs.us1.twilio.com";

    fn context() -> Context {
        Context { id: "env-1".into(), received_at: "2026-11-24T10:00:00Z".into() }
    }

    const SMS: &[(&str, &str)] = &[
        ("ToCountry", "US"),
        ("SmsMessageSid", "SM11111111111111111111111111111111"),
        ("NumMedia", "0"),
        ("SmsSid", "SM11111111111111111111111111111111"),
        ("SmsStatus", "received"),
        ("Body", "Hello €"),
        ("To", "+15005550006"),
        ("NumSegments", "1"),
        ("MessageSid", "SM11111111111111111111111111111111"),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("From", "+14155550100"),
        ("ApiVersion", "2010-04-01"),
        ("SomethingNew", "kept"),
    ];

    #[test]
    fn rcs_and_business_scoped_senders() {
        let with = |from: &str, to: &str| {
            let mut p = params(SMS);
            for (name, value) in p.iter_mut() {
                match name.as_ref() {
                    "From" => *value = from.to_owned().into(),
                    "To" => *value = to.to_owned().into(),
                    _ => {}
                }
            }
            inbound_message(Params(&p), &context()).unwrap()
        };
        assert_eq!(with("rcs:+14155550100", "rcs:acme_agent").channel, Channel::Rcs);
        assert_eq!(with("RCS:+14155550100", "+15005550006").channel, Channel::Rcs);
        let bsuid = with("whatsapp:US.13491208655302741918", "whatsapp:+15005550006");
        assert_eq!(bsuid.channel, Channel::Whatsapp);
        assert_eq!(bsuid.from, "whatsapp:US.13491208655302741918", "no phone number, and no refusal");
    }

    #[test]
    fn inbound_sms() {
        let p = params(SMS);
        let envelope = inbound_message(Params(&p), &context()).unwrap();
        assert_eq!(envelope.channel, Channel::Sms);
        assert_eq!(envelope.provider_message_id, "SM11111111111111111111111111111111");
        assert_eq!(envelope.from, "+14155550100");
        assert_eq!(envelope.to.as_deref(), Some("+15005550006"));
        assert_eq!(envelope.body, "Hello €");
        assert_eq!(envelope.segments, 1);
        assert_eq!(envelope.source, "twilio");
        assert_eq!(envelope.attributes.len(), SMS.len());
        assert!(envelope.attributes.iter().any(|a| a.name == "SomethingNew" && a.value == "kept"));
        assert!(envelope.media.is_empty());
    }

    #[test]
    fn inbound_mms_keeps_every_media_url_in_order() {
        let mut p = params(SMS);
        p.retain(|(k, _)| k != "NumMedia");
        p.extend(params(&[
            ("NumMedia", "1"), // wrong on purpose: every MediaUrlN counts
            ("MediaUrl10", "https://api.twilio.com/m10"),
            ("MediaContentType10", "image/png"),
            ("MediaUrl0", "https://api.twilio.com/m0"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://api.twilio.com/m1"),
        ]));
        let envelope = inbound_message(Params(&p), &context()).unwrap();
        assert_eq!(envelope.channel, Channel::Mms);
        let urls: Vec<_> = envelope.media.iter().map(|m| m.url.as_str()).collect();
        assert_eq!(urls, ["https://api.twilio.com/m0", "https://api.twilio.com/m1", "https://api.twilio.com/m10"]);
        assert_eq!(envelope.media[0].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(envelope.media[1].content_type, None);
    }

    #[test]
    fn whatsapp_sender() {
        let mut p = params(SMS);
        for (k, v) in &mut p {
            if k == "From" {
                *v = "whatsapp:+14155550100".into();
            }
        }
        p.push(("ProfileName".into(), "Alice".into()));
        let envelope = inbound_message(Params(&p), &context()).unwrap();
        assert_eq!(envelope.channel, Channel::Whatsapp);
        assert_eq!(envelope.from, "whatsapp:+14155550100");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut p = params(SMS);
        p.retain(|(k, _)| k != "From");
        assert_eq!(inbound_message(Params(&p), &context()).unwrap_err(), EnvelopeError::Missing("From"));
        let p = params(&[("Body", "x")]);
        assert_eq!(inbound_message(Params(&p), &context()).unwrap_err(), EnvelopeError::Missing("MessageSid"));
    }

    #[test]
    fn status_callback_keeps_error_code() {
        let p = params(&[
            ("MessageSid", "SM22222222222222222222222222222222"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("AccountSid", "AC00000000000000000000000000000001"),
            ("RawDlrDoneDate", "2611241000"),
        ]);
        let event = status_callback(Params(&p), Some("eg-1".into()), "t".into()).unwrap();
        assert_eq!(event.id.as_deref(), Some("eg-1"));
        assert_eq!(event.status, "undelivered");
        assert_eq!(event.error_code, Some(30003));
        assert_eq!(status_dedup_key(&event).as_deref(), Some("SM22222222222222222222222222222222:undelivered"));
        let bad = params(&[("MessageSid", "SM1"), ("MessageStatus", "failed"), ("ErrorCode", "x")]);
        assert!(matches!(status_callback(Params(&bad), None, "t".into()), Err(EnvelopeError::Malformed { .. })));
    }

    const ADDED: &[(&str, &str)] = &[
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("EventType", "onMessageAdded"),
        ("Source", "SDK"),
        ("ClientIdentity", "alice"),
        ("ConversationSid", "CH00000000000000000000000000000004"),
        ("MessageSid", "IM00000000000000000000000000000005"),
        ("ChatServiceSid", "IS00000000000000000000000000000003"),
        ("Index", "3"),
        ("Body", "hi there"),
        ("Author", "alice"),
        ("Attributes", "{\"priority\":\"high\"}"),
        (
            "Media",
            "[{\"Sid\":\"ME00000000000000000000000000000006\",\"Filename\":\"a.png\",\"ContentType\":\"image/png\",\"Size\":42}]",
        ),
        ("RetryCount", "0"),
    ];

    #[test]
    fn conversation_message_added() {
        let p = params(ADDED);
        let envelope = conversation_event(Params(&p), &context(), US1).unwrap().unwrap();
        assert_eq!(envelope.channel, Channel::Conversations);
        assert_eq!(envelope.conversation.as_deref(), Some("CH00000000000000000000000000000004"));
        assert_eq!(envelope.provider_message_id, "IM00000000000000000000000000000005");
        assert_eq!(envelope.from, "alice");
        assert_eq!(envelope.to, None);
        assert_eq!(envelope.metadata_json.as_deref(), Some("{\"priority\":\"high\"}"));
        assert_eq!(envelope.media.len(), 1);
        assert_eq!(
            envelope.media[0].url,
            "https://mcs.us1.twilio.com/v1/Services/IS00000000000000000000000000000003/Media/ME00000000000000000000000000000006"
        );
        assert_eq!(envelope.media[0].content_type.as_deref(), Some("image/png"));
        // In another region, its media is in that region's Media Content Service.
        let dublin = media_content_base(Some("dublin"), Some("ie1"));
        let envelope = conversation_event(Params(&p), &context(), &dublin).unwrap().unwrap();
        assert!(envelope.media[0].url.starts_with("https://mcs.dublin.ie1.twilio.com/v1/Services/IS"), "{envelope:?}");
        let au = media_content_base(None, Some("au1"));
        assert!(
            conversation_event(Params(&p), &context(), &au).unwrap().unwrap().media[0]
                .url
                .starts_with("https://mcs.au1.twilio.com/")
        );
    }

    #[test]
    fn other_conversation_events_are_not_published() {
        let mut p = params(ADDED);
        p[1].1 = "onConversationAdded".into();
        assert_eq!(conversation_event(Params(&p), &context(), US1).unwrap(), None);
    }

    #[test]
    fn malformed_conversation_media_is_an_error_and_bad_attributes_are_kept_raw() {
        let mut p = params(ADDED);
        p[11].1 = "not json".into();
        assert!(matches!(
            conversation_event(Params(&p), &context(), US1),
            Err(EnvelopeError::Malformed { field: "Media", .. })
        ));
        let mut p = params(ADDED);
        p[10].1 = "{broken".into();
        let envelope = conversation_event(Params(&p), &context(), US1).unwrap().unwrap();
        assert_eq!(envelope.metadata_json, None);
        assert!(envelope.attributes.iter().any(|a| a.name == "Attributes" && a.value == "{broken"));
    }
}
