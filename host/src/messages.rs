//! The platform's messages as they travel on the bus: JSON with snake_case
//! names, as DESIGN.md fixes them. One serde type per message, shared by the
//! host, the command line and the tests.
//!
//! The WIT records use provider-neutral names (`account`, `conversation`,
//! `sender-pool`); the JSON keeps the platform's names (`account_sid`,
//! `conversation_sid`, `messaging_service_sid`), which are its contract.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::runtime::bindings;

/// Every parameter a provider sent, in order; a name may repeat. As JSON, an
/// object where a repeated name maps to the list of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(pub Vec<(String, String)>);

impl Attributes {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut names: Vec<&str> = Vec::with_capacity(self.0.len());
        for (name, _) in &self.0 {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let mut map = serializer.serialize_map(Some(names.len()))?;
        for name in names {
            let values: Vec<&str> = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
            match values.as_slice() {
                [one] => map.serialize_entry(name, one)?,
                many => map.serialize_entry(name, many)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings or lists of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Attributes, A::Error> {
                let mut pairs = Vec::new();
                while let Some((name, values)) = access.next_entry::<String, OneOrMany>()? {
                    match values {
                        OneOrMany::One(value) => pairs.push((name, value)),
                        OneOrMany::Many(values) => pairs.extend(values.into_iter().map(|v| (name.clone(), v))),
                    }
                }
                Ok(Attributes(pairs))
            }
        }
        deserializer.deserialize_map(AttributesVisitor)
    }
}

impl From<Vec<bindings::Attribute>> for Attributes {
    fn from(list: Vec<bindings::Attribute>) -> Self {
        Self(list.into_iter().map(|a| (a.name, a.value)).collect())
    }
}

/// The channel a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A text message.
    Sms,
    /// A message with media.
    Mms,
    /// A WhatsApp message.
    Whatsapp,
    /// A conversation message.
    Conversations,
    /// An RCS message.
    Rcs,
}

impl From<bindings::Channel> for Channel {
    fn from(channel: bindings::Channel) -> Self {
        match channel {
            bindings::Channel::Sms => Self::Sms,
            bindings::Channel::Mms => Self::Mms,
            bindings::Channel::Whatsapp => Self::Whatsapp,
            bindings::Channel::Conversations => Self::Conversations,
            bindings::Channel::Rcs => Self::Rcs,
        }
    }
}

/// One media attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaItem {
    /// Where the media is (the provider's URL).
    pub url: String,
    /// Its MIME type, when the provider said.
    pub content_type: Option<String>,
    /// When the connector fetched and stored it: the hex SHA-256 of its bytes…
    #[serde(default)]
    pub sha256: Option<String>,
    /// …their size in bytes…
    #[serde(default)]
    pub size: Option<u64>,
    /// …and where the platform reads them.
    #[serde(default)]
    pub stored_url: Option<String>,
}

impl From<bindings::Media> for MediaItem {
    fn from(m: bindings::Media) -> Self {
        Self { url: m.url, content_type: m.content_type, sha256: m.sha256, size: m.size, stored_url: m.stored_url }
    }
}

/// An inbound message: the platform's `IngressEnvelope`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngressEnvelope {
    /// The platform's id of this envelope (the de-duplication key).
    pub id: String,
    /// The connector that received it.
    pub source: String,
    /// The channel it came on.
    pub channel: Channel,
    /// The provider's id of the message (Twilio: the `MessageSid`).
    pub provider_message_id: String,
    /// The provider account it arrived on.
    pub account_sid: String,
    /// The conversation, for conversation messages.
    pub conversation_sid: Option<String>,
    /// The sender's address.
    pub from: String,
    /// The recipient's address, when there is one.
    pub to: Option<String>,
    /// The text (empty for media only).
    pub body: String,
    /// Attached media.
    pub media: Vec<MediaItem>,
    /// How many segments the provider counted.
    pub segments: u32,
    /// When the service received it (RFC 3339).
    pub received_at: String,
    /// Provider fields kept as they came.
    pub attributes: Attributes,
    /// Structured data the provider attached (JSON), or null.
    pub metadata: Option<Box<RawValue>>,
    /// What the channel says of the sender (envelopes published before
    /// these fields existed read as null).
    #[serde(default)]
    pub profile: Option<Profile>,
    /// A location the sender shared.
    #[serde(default)]
    pub location: Option<Location>,
    /// A button the sender pressed.
    #[serde(default)]
    pub button: Option<Button>,
    /// The provider's id of the message this one replies to.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The ad the conversation started from.
    #[serde(default)]
    pub referral: Option<Referral>,
}

/// Who sent a message, as the channel names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The display name (WhatsApp's `ProfileName`).
    pub name: Option<String>,
    /// The channel's own user id (WhatsApp's business-scoped user id).
    pub external_user_id: Option<String>,
    /// The id of the business portfolio's user the id belongs to.
    pub parent_external_user_id: Option<String>,
    /// The WhatsApp number, when the sender shares one.
    pub wa_id: Option<String>,
    /// The sender's username.
    pub username: Option<String>,
}

/// A shared location, in degrees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
    /// The address the sender's app gave, when it gave one.
    pub address: Option<String>,
    /// The place's name, when it has one.
    pub label: Option<String>,
}

/// A pressed button: its text and the payload its sender set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// What the button said.
    pub text: Option<String>,
    /// What the message's sender set on the button, returned verbatim.
    pub payload: Option<String>,
}

/// The ad a conversation started from (click-to-WhatsApp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// The ad's text.
    pub body: Option<String>,
    /// The ad's headline.
    pub headline: Option<String>,
    /// The ad's id.
    pub source_id: Option<String>,
    /// `ad` or `post`.
    pub source_type: Option<String>,
    /// Where the ad leads.
    pub source_url: Option<String>,
    /// The ad's image or video.
    pub media_url: Option<String>,
    /// The click-to-WhatsApp click id, for attribution.
    pub ctwa_clid: Option<String>,
}

impl From<bindings::Profile> for Profile {
    fn from(p: bindings::Profile) -> Self {
        let bindings::Profile { name, external_user_id, parent_external_user_id, wa_id, username } = p;
        Self { name, external_user_id, parent_external_user_id, wa_id, username }
    }
}

impl From<bindings::Location> for Location {
    fn from(l: bindings::Location) -> Self {
        Self { latitude: l.latitude, longitude: l.longitude, address: l.address, label: l.label }
    }
}

impl From<bindings::Button> for Button {
    fn from(b: bindings::Button) -> Self {
        Self { text: b.text, payload: b.payload }
    }
}

impl From<bindings::Referral> for Referral {
    fn from(r: bindings::Referral) -> Self {
        let bindings::Referral { body, headline, source_id, source_type, source_url, media_url, ctwa_clid } = r;
        Self { body, headline, source_id, source_type, source_url, media_url, ctwa_clid }
    }
}

impl From<bindings::IngressEnvelope> for IngressEnvelope {
    fn from(e: bindings::IngressEnvelope) -> Self {
        Self {
            id: e.id,
            source: e.source,
            channel: e.channel.into(),
            provider_message_id: e.provider_message_id,
            account_sid: e.account,
            conversation_sid: e.conversation,
            from: e.from,
            to: e.to,
            body: e.body,
            media: e.media.into_iter().map(MediaItem::from).collect(),
            segments: e.segments,
            received_at: e.received_at,
            attributes: e.attributes.into(),
            // The connector checked it is JSON; anything else is dropped, not published broken.
            metadata: e.metadata_json.and_then(|text| RawValue::from_string(text).ok()),
            profile: e.profile.map(Profile::from),
            location: e.location.map(Location::from),
            button: e.button.map(Button::from),
            reply_to: e.reply_to,
            referral: e.referral.map(Referral::from),
        }
    }
}

/// What happened to a message: a status event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The platform's egress id, when the message was sent through this service.
    pub id: Option<String>,
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// The provider's status name (`queued`, `sent`, `delivered`, …).
    pub status: String,
    /// The provider's error code, on failures.
    pub error_code: Option<u32>,
    /// The provider's error text, on failures.
    pub error_message: Option<String>,
    /// The error's class (`throttled`, `opted-out`, `unreachable`, …), on failures.
    pub error_class: Option<String>,
    /// The status before this one, when known (a status only moves forward).
    pub previous_status: Option<String>,
    /// How an ambiguous send was settled before this status (`found`: the
    /// provider had it; `resent`: it had none, so it was sent once more).
    #[serde(default)]
    pub reconciliation: Option<String>,
    /// The provider account.
    pub account_sid: Option<String>,
    /// When the status was observed (RFC 3339).
    pub occurred_at: String,
    /// Provider fields kept as they came.
    #[serde(default)]
    pub attributes: Attributes,
}

impl From<bindings::StatusEvent> for StatusEvent {
    fn from(s: bindings::StatusEvent) -> Self {
        Self {
            id: s.id,
            provider_message_id: s.provider_message_id,
            status: s.status,
            error_code: s.error_code,
            error_message: s.error_message,
            error_class: s.error_class.map(|class| error_class_name(class).to_owned()),
            previous_status: s.previous_status,
            reconciliation: None,
            account_sid: s.account,
            occurred_at: s.occurred_at,
            attributes: s.attributes.into(),
        }
    }
}

/// A message the platform wants sent, as it publishes it on an egress topic
/// (or posts it to `POST /v1/messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressMessage {
    /// The platform's id; one is assigned when absent. Status events name it.
    #[serde(default)]
    pub id: Option<String>,
    /// The recipient's address.
    #[serde(default)]
    pub to: Option<String>,
    /// The conversation to post into, instead of `to`.
    #[serde(default)]
    pub conversation_sid: Option<String>,
    /// The text.
    #[serde(default)]
    pub body: Option<String>,
    /// Media to attach (public URLs).
    #[serde(default)]
    pub media_urls: Vec<String>,
    /// The sender (the connector's default when absent).
    #[serde(default)]
    pub from: Option<String>,
    /// A sender pool such as a Messaging Service (the default when absent).
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Where the provider reports this message's status.
    #[serde(default)]
    pub status_callback: Option<String>,
    /// Any JSON, attached to a conversation message.
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
    /// A provider template (WhatsApp: a Content sid) and its variables.
    #[serde(default)]
    pub template: Option<Template>,
    /// Send at this time (RFC 3339) instead of now.
    #[serde(default)]
    pub send_at: Option<String>,
    /// Stop trying to deliver after this many seconds.
    #[serde(default)]
    pub validity_seconds: Option<u32>,
    /// The provider's own options by name (text, number, flag, or a list
    /// for a repeatable one), checked by the connector.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, serde_json::Value>,
    /// The provider account that sends it (the connector's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    /// Set by `redrive`: the dead letter (`TOPIC/SEQ`) this message is sent
    /// again from. Its status events and a new dead letter are then told
    /// apart from the first attempt's, under the same `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<String>,
}

impl EgressMessage {
    /// The name `id`'s records are de-duplicated by on the bus (its publish
    /// on the egress topic, then its status events, dead letter and consent
    /// event): the id itself, or for a message sent again from a dead
    /// letter, `ID@TOPIC/SEQ`, so that its second life is not taken for its first.
    pub fn record_key(&self, id: &str) -> String {
        match &self.redriven_from {
            Some(from) => format!("{id}@{from}"),
            None => id.to_owned(),
        }
    }
}

/// A provider template and the values of its placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's id (Twilio: `HX…`).
    pub id: String,
    /// Placeholder → text, as a JSON object.
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
}

/// An option's values as form fields carry them: text as it is, numbers
/// and flags written out, a list (a repeatable option such as
/// `PersistentAction`) as one field per item.
fn option_texts(value: &serde_json::Value) -> Vec<String> {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    match value {
        serde_json::Value::Array(values) => values.iter().map(text).collect(),
        value => vec![text(value)],
    }
}

impl EgressMessage {
    /// The WIT record a connector's `check` and `send` take, under `id`.
    pub fn to_wit(&self, id: &str) -> bindings::EgressMessage {
        bindings::EgressMessage {
            id: id.to_owned(),
            to: self.to.clone(),
            conversation: self.conversation_sid.clone(),
            body: self.body.clone(),
            media_urls: self.media_urls.clone(),
            from: self.from.clone(),
            sender_pool: self.messaging_service_sid.clone(),
            status_callback: self.status_callback.clone(),
            attributes_json: self.attributes.as_ref().map(serde_json::Value::to_string),
            template: self.template.as_ref().map(|t| bindings::Template {
                id: t.id.clone(),
                variables_json: t.variables.as_ref().map(serde_json::Value::to_string),
            }),
            send_at: self.send_at.clone(),
            validity_seconds: self.validity_seconds,
            options: self
                .options
                .iter()
                .flat_map(|(name, value)| option_texts(value).into_iter().map(move |text| (name.clone(), text)))
                .collect(),
            account: self.account_sid.clone(),
        }
    }
}

/// A message that will not be sent, with the reason: published on a
/// connector's dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The egress id.
    pub id: String,
    /// The final status (`failed`, `opted-out`, `unknown`).
    pub status: String,
    /// Why it will not be sent.
    pub reason: String,
    /// The provider's error code, when it gave one.
    pub error_code: Option<u32>,
    /// The provider's error text, when it gave one.
    pub error_message: Option<String>,
    /// The failure's class (`opted-out`, `invalid-request`, …), when a provider error said.
    pub error_class: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: String,
    /// The message as it was on the egress topic (a string when it was not JSON).
    pub message: serde_json::Value,
}

/// A recipient's consent for one sender changed (or they asked for help).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    /// The recipient.
    pub user: String,
    /// The sender it applies to (a number or a sender pool), never every sender.
    pub sender: String,
    /// `opted-out`, `opted-in` or `help`.
    pub action: String,
    /// How it was learned (`keyword`, `advanced-opt-out`, `send-refused`, `status-callback`).
    pub via: String,
    /// The keyword the recipient sent, when one.
    pub keyword: Option<String>,
    /// The message that carried it, when one did.
    pub provider_message_id: Option<String>,
    /// The provider account.
    pub account_sid: Option<String>,
    /// When it was learned (RFC 3339).
    pub occurred_at: String,
}

impl From<bindings::ConsentEvent> for ConsentEvent {
    fn from(c: bindings::ConsentEvent) -> Self {
        let action = match c.action {
            bindings::ConsentAction::OptedOut => "opted-out",
            bindings::ConsentAction::OptedIn => "opted-in",
            bindings::ConsentAction::Help => "help",
        };
        Self {
            user: c.user,
            sender: c.sender,
            action: action.to_owned(),
            via: c.via,
            keyword: c.keyword,
            provider_message_id: c.provider_message_id,
            account_sid: c.account,
            occurred_at: c.occurred_at,
        }
    }
}

/// How an ambiguous send was settled, as the bus spells it (the WIT enum's names).
pub fn reconciliation_name(how: bindings::Reconciliation) -> &'static str {
    match how {
        bindings::Reconciliation::Found => "found",
        bindings::Reconciliation::Resent => "resent",
    }
}

/// An error class as the bus spells it (the WIT enum's names).
pub fn error_class_name(class: bindings::ErrorClass) -> &'static str {
    use bindings::ErrorClass as C;
    match class {
        C::Throttled => "throttled",
        C::Retryable => "retryable",
        C::OptedOut => "opted-out",
        C::Unreachable => "unreachable",
        C::CarrierFiltered => "carrier-filtered",
        C::InvalidRequest => "invalid-request",
        C::WindowClosed => "window-closed",
        C::Template => "template",
        C::Configuration => "configuration",
        C::Unknown => "unknown",
    }
}

/// Something a provider delivered that could not become a message, kept
/// with its reason on the connector's `rejected` topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedDelivery {
    /// The provider's id of what was delivered (a CloudEvent `id`).
    pub id: String,
    /// The route it came on (`events`).
    pub route: String,
    /// Why it is not a message.
    pub reason: String,
    /// The provider account it claimed, when it did.
    pub account_sid: Option<String>,
    /// When the service received it (RFC 3339).
    pub received_at: String,
    /// What was delivered, as it came (JSON; a string when it was not JSON).
    pub payload: serde_json::Value,
}

impl From<bindings::RejectedDelivery> for RejectedDelivery {
    fn from(r: bindings::RejectedDelivery) -> Self {
        let payload = serde_json::from_str(&r.payload_json).unwrap_or(serde_json::Value::String(r.payload_json));
        Self { id: r.id, route: r.route, reason: r.reason, account_sid: r.account, received_at: r.received_at, payload }
    }
}

/// What a connector publishes, as the bus stores it.
pub fn encode(message: bindings::BusMessage) -> Vec<u8> {
    let encoded = match message {
        bindings::BusMessage::Envelope(envelope) => serde_json::to_vec(&IngressEnvelope::from(envelope)),
        bindings::BusMessage::Status(event) => serde_json::to_vec(&StatusEvent::from(event)),
        bindings::BusMessage::Consent(event) => serde_json::to_vec(&ConsentEvent::from(event)),
        bindings::BusMessage::Rejected(rejected) => serde_json::to_vec(&RejectedDelivery::from(rejected)),
    };
    // Serialising these types cannot fail: no map has non-string keys.
    encoded.unwrap_or_default()
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_attributes_become_lists_and_come_back() {
        let attributes = Attributes(
            [("A", "1"), ("B", "2"), ("A", "3"), ("A", "4")].map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec(),
        );
        let json = serde_json::to_value(&attributes).unwrap();
        assert_eq!(json, serde_json::json!({"A": ["1", "3", "4"], "B": "2"}));
        let back: Attributes = serde_json::from_value(json).unwrap();
        assert_eq!(back.0.iter().filter(|(n, _)| n == "A").count(), 3);
        assert_eq!(back.get("B"), Some("2"));
    }
}
