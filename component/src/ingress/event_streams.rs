//! Twilio Event Streams batches: a JSON array of CloudEvents 1.0, read into
//! what the webhook routes already know how to publish.
//!
//! Each event's `data` (camelCase JSON) becomes parameters named as Twilio's
//! webhooks name them (`messageSid` → `MessageSid`; nested values as JSON
//! text), so an event and its webhook twin build the same envelope or status
//! event with the same de-duplication key, whichever arrives first. Pure: the
//! route publishes.
//!
//! A batch is taken event by event: a malformed event is one rejected item,
//! never a reason to refuse the batch, because Twilio drops a batch answered
//! with a 4xx, good events and all.

use serde_json::{Map, Value};

use crate::ingress::envelope::Param;

/// The status events Twilio's Messaging sends, by type suffix.
const MESSAGE_STATUSES: [&str; 6] = ["queued", "sent", "delivered", "undelivered", "failed", "read"];
const STATUS_PREFIX: &str = "com.twilio.messaging.message.";
const INBOUND: &str = "com.twilio.messaging.inbound-message.received";
const CONVERSATION_MESSAGE: &str = "com.twilio.conversations.message.added";

/// What one event of a batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A message status: published as a status event.
    Status,
    /// An inbound message: published as an envelope.
    Inbound,
    /// A message added to a conversation: published as an envelope.
    ConversationMessage,
    /// A type this service does not publish: acknowledged and counted.
    Other,
    /// Not an event this service can read: rejected with the reason.
    Malformed(String),
}

/// One event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The CloudEvent `id`, when it has one.
    pub id: Option<String>,
    pub kind: Kind,
    /// Its `data` as webhook parameters (empty unless published).
    pub params: Vec<Param<'static>>,
    /// The account it names (`data.accountSid`, else its `source` path).
    pub account: Option<String>,
    /// The event as it came, as JSON text.
    pub raw: String,
}

/// The events of a batch. A body that is not a JSON array is one malformed
/// event (a single CloudEvent object is taken as a batch of one).
pub fn read_batch(body: &[u8]) -> Vec<Event> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(events)) => events.into_iter().map(read_event).collect(),
        Ok(object @ Value::Object(_)) => vec![read_event(object)],
        Ok(other) => vec![malformed_whole(other.to_string(), "the batch is not a JSON array of CloudEvents")],
        Err(error) => {
            let text = String::from_utf8_lossy(body).into_owned();
            vec![malformed_whole(Value::String(text).to_string(), &format!("the batch is not JSON: {error}"))]
        }
    }
}

/// The account a batch was sent for: the first account an event names.
pub fn batch_account(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|event| event.account.as_deref())
}

fn malformed_whole(raw: String, reason: &str) -> Event {
    Event { id: None, kind: Kind::Malformed(reason.to_owned()), params: Vec::new(), account: None, raw }
}

fn read_event(value: Value) -> Event {
    let raw = value.to_string();
    let Value::Object(event) = value else {
        return malformed_whole(raw, "the event is not a JSON object");
    };
    let text = |name: &str| event.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let id = text("id");
    let data = event.get("data").and_then(Value::as_object);
    let account = data
        .and_then(|data| data.get("accountSid"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| text("source").and_then(|source| account_in_source(&source)));
    let (kind, params) = match classify(&event, id.as_deref(), data) {
        Ok((kind, params)) => (kind, params),
        Err(reason) => (Kind::Malformed(reason), Vec::new()),
    };
    Event { id, kind, params, account, raw }
}

/// What an event is, and its parameters when it is published.
fn classify(
    event: &Map<String, Value>,
    id: Option<&str>,
    data: Option<&Map<String, Value>>,
) -> Result<(Kind, Vec<Param<'static>>), String> {
    if event.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return Err("specversion is not 1.0".to_owned());
    }
    id.ok_or("the event has no id")?;
    let event_type = event.get("type").and_then(Value::as_str).ok_or("the event has no type")?;
    let kind = match event_type {
        INBOUND => Kind::Inbound,
        CONVERSATION_MESSAGE => Kind::ConversationMessage,
        _ if status_of_type(event_type).is_some() => Kind::Status,
        _ => return Ok((Kind::Other, Vec::new())),
    };
    let data = data.ok_or_else(|| format!("{event_type} has no data object"))?;
    let mut params = parameters(data);
    match kind {
        Kind::Status => set_status(&mut params, event_type, data)?,
        Kind::ConversationMessage => params.push(("EventType".into(), "onMessageAdded".into())),
        _ => {}
    }
    Ok((kind, params))
}

fn status_of_type(event_type: &str) -> Option<&'static str> {
    let suffix = event_type.strip_prefix(STATUS_PREFIX)?;
    MESSAGE_STATUSES.into_iter().find(|status| *status == suffix)
}

/// `MessageStatus` in Twilio's callback spelling (lower case): the data's
/// `messageStatus` (sent in capitals), which must agree with the type's.
fn set_status(params: &mut Vec<Param<'static>>, event_type: &str, data: &Map<String, Value>) -> Result<(), String> {
    let of_type = status_of_type(event_type).unwrap_or_default();
    let status = match data.get("messageStatus").and_then(Value::as_str) {
        Some(status) if status.eq_ignore_ascii_case(of_type) => of_type,
        Some(status) => return Err(format!("messageStatus {status:?} does not match the type {event_type}")),
        None => of_type,
    };
    params.retain(|(name, _)| name != "MessageStatus");
    params.push(("MessageStatus".into(), status.into()));
    Ok(())
}

/// `data`'s fields as webhook parameters: names capitalised as Twilio's
/// webhooks spell them, text as it is, other values as JSON text, nulls left
/// out.
fn parameters(data: &Map<String, Value>) -> Vec<Param<'static>> {
    data.iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (capitalised(name).into(), value.into())
        })
        .collect()
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The `AC…` in a CloudEvent `source` such as `/2010-04-01/Accounts/AC…/Messages/SM….json`.
fn account_in_source(source: &str) -> Option<String> {
    let mut parts = source.split('/');
    parts.find(|part| *part == "Accounts")?;
    parts.next().filter(|sid| sid.starts_with("AC")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "AC00000000000000000000000000000001";

    fn status_event(id: &str, status: &str) -> Value {
        serde_json::json!({
            "specversion": "1.0",
            "type": format!("com.twilio.messaging.message.{status}"),
            "source": format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/SM1.json"),
            "id": id,
            "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/1",
            "datacontenttype": "application/json",
            "time": "2026-12-07T10:00:00.000Z",
            "data": {
                "messageSid": "SM00000000000000000000000000000001",
                "accountSid": ACCOUNT,
                "from": "+15005550006",
                "to": "+14155550100",
                "messageStatus": status.to_ascii_uppercase(),
                "errorCode": null,
                "numberOfSegments": 1,
                "timestamp": "2026-12-07T10:00:00.000Z"
            }
        })
    }

    fn param<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
        event.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref())
    }

    #[test]
    fn status_events_read_as_callbacks_do() {
        let body = Value::Array(vec![status_event("EZ1", "delivered")]).to_string();
        let events = read_batch(body.as_bytes());
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!((event.kind.clone(), event.id.as_deref()), (Kind::Status, Some("EZ1")));
        assert_eq!(param(event, "MessageStatus"), Some("delivered"));
        assert_eq!(param(event, "MessageSid"), Some("SM00000000000000000000000000000001"));
        assert_eq!(param(event, "NumberOfSegments"), Some("1"));
        assert_eq!(param(event, "ErrorCode"), None, "a null is no parameter");
        assert_eq!(batch_account(&events), Some(ACCOUNT));
    }

    #[test]
    fn a_bad_event_is_one_rejected_item_among_good_ones() {
        let mut wrong_status = status_event("EZ3", "sent");
        wrong_status["data"]["messageStatus"] = "DELIVERED".into();
        let batch = serde_json::json!([
            status_event("EZ1", "sent"),
            {"specversion": "1.0", "type": INBOUND, "id": "EZ2"},
            wrong_status,
            {"specversion": "0.3", "type": INBOUND, "id": "EZ4", "data": {}},
            "not an event",
            {"specversion": "1.0", "type": "com.twilio.voice.status-callback.call.ringing", "id": "EZ5", "data": {}},
        ]);
        let kinds: Vec<Kind> = read_batch(batch.to_string().as_bytes()).into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds[0], Kind::Status);
        assert!(matches!(&kinds[1], Kind::Malformed(reason) if reason.contains("no data")), "{kinds:?}");
        assert!(matches!(&kinds[2], Kind::Malformed(reason) if reason.contains("does not match")), "{kinds:?}");
        assert!(matches!(&kinds[3], Kind::Malformed(reason) if reason.contains("specversion")), "{kinds:?}");
        assert!(matches!(&kinds[4], Kind::Malformed(_)));
        assert_eq!(kinds[5], Kind::Other);
    }

    #[test]
    fn inbound_and_conversation_events_carry_webhook_names() {
        let batch = serde_json::json!([
            {"specversion": "1.0", "type": INBOUND, "id": "EZ1", "source": "/x", "data": {
                "messageSid": "SM1", "accountSid": ACCOUNT, "from": "+14155550100", "to": "+15005550006",
                "body": "hi", "numMedia": 0}},
            {"specversion": "1.0", "type": CONVERSATION_MESSAGE, "id": "EZ2", "data": {
                "accountSid": ACCOUNT, "conversationSid": "CH1", "messageSid": "IM1", "author": "alice",
                "body": "hey", "attributes": {"k": 1}}},
        ]);
        let events = read_batch(batch.to_string().as_bytes());
        assert_eq!(events[0].kind, Kind::Inbound);
        assert_eq!(param(&events[0], "From"), Some("+14155550100"));
        assert_eq!(param(&events[0], "NumMedia"), Some("0"));
        assert_eq!(events[1].kind, Kind::ConversationMessage);
        assert_eq!(param(&events[1], "EventType"), Some("onMessageAdded"));
        assert_eq!(param(&events[1], "Attributes"), Some(r#"{"k":1}"#));
    }

    #[test]
    fn bodies_that_are_no_batch() {
        for body in [&b"not json"[..], b"42", b"\"text\""] {
            let events = read_batch(body);
            assert_eq!(events.len(), 1);
            assert!(matches!(events[0].kind, Kind::Malformed(_)));
            assert!(serde_json::from_str::<Value>(&events[0].raw).is_ok(), "the raw form is JSON");
        }
        assert!(read_batch(b"[]").is_empty());
    }

    #[test]
    fn the_account_from_the_source_when_data_has_none() {
        assert_eq!(
            account_in_source(&format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/SM1.json")).as_deref(),
            Some(ACCOUNT)
        );
        assert_eq!(account_in_source("/v1/Services/IS1"), None);
    }
}
