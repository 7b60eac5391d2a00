//! The platform's JSON for bus messages: snake_case fields, as DESIGN.md fixes them.

use serde_json::{Map, Value, json};

use crate::runtime::bindings::{Attribute, BusMessage, Channel, EgressMessage, IngressEnvelope, StatusEvent};

/// An egress message as the platform publishes it on the egress topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRequest {
    /// The platform's id; one is assigned when absent.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub conversation_sid: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub media_urls: Vec<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default)]
    pub status_callback: Option<String>,
    /// Any JSON, attached to a conversation message.
    #[serde(default)]
    pub attributes: Option<Value>,
}

impl EgressRequest {
    /// The WIT record the connector's `send` takes.
    pub fn to_wit(&self, id: &str) -> EgressMessage {
        EgressMessage {
            id: id.to_owned(),
            to: self.to.clone(),
            conversation_sid: self.conversation_sid.clone(),
            body: self.body.clone(),
            media_urls: self.media_urls.clone(),
            from: self.from.clone(),
            messaging_service_sid: self.messaging_service_sid.clone(),
            status_callback: self.status_callback.clone(),
            attributes_json: self.attributes.as_ref().map(Value::to_string),
        }
    }
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_else(|_| now.unix_timestamp().to_string())
}

pub fn encode(message: &BusMessage) -> Vec<u8> {
    let value = match message {
        BusMessage::Envelope(envelope) => envelope_json(envelope),
        BusMessage::Status(event) => status_json(event),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "sms",
        Channel::Mms => "mms",
        Channel::Whatsapp => "whatsapp",
        Channel::Conversations => "conversations",
    }
}

/// Parameters as a JSON object; a name sent more than once maps to the list of its values.
fn attributes_json(attributes: &[Attribute]) -> Value {
    let mut map = Map::new();
    for Attribute { name, value } in attributes {
        match map.get_mut(name) {
            None => {
                map.insert(name.clone(), Value::String(value.clone()));
            }
            Some(Value::Array(values)) => values.push(Value::String(value.clone())),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value.clone())]);
            }
        }
    }
    Value::Object(map)
}

pub fn envelope_json(e: &IngressEnvelope) -> Value {
    let metadata =
        e.metadata_json.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok()).unwrap_or(Value::Null);
    json!({
        "id": e.id,
        "source": e.source,
        "channel": channel_name(e.channel),
        "provider_message_id": e.provider_message_id,
        "account_sid": e.account_sid,
        "conversation_sid": e.conversation_sid,
        "from": e.from,
        "to": e.to,
        "body": e.body,
        "media": e.media.iter().map(|m| json!({"url": m.url, "content_type": m.content_type})).collect::<Vec<_>>(),
        "segments": e.segments,
        "received_at": e.received_at,
        "attributes": attributes_json(&e.attributes),
        "metadata": metadata,
    })
}

pub fn status_json(s: &StatusEvent) -> Value {
    json!({
        "id": s.id,
        "provider_message_id": s.provider_message_id,
        "status": s.status,
        "error_code": s.error_code,
        "error_message": s.error_message,
        "account_sid": s.account_sid,
        "occurred_at": s.occurred_at,
        "attributes": attributes_json(&s.attributes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_attributes_become_lists() {
        let attrs = [("A", "1"), ("B", "2"), ("A", "3"), ("A", "4")]
            .map(|(n, v)| Attribute { name: n.into(), value: v.into() });
        assert_eq!(attributes_json(&attrs), json!({"A": ["1", "3", "4"], "B": "2"}));
    }
}
