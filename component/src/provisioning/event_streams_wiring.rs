//! `twilio wire|status --event-streams`: a webhook sink at the
//! service's `/twilio/events` route, and a subscription of that sink to the
//! event types the service publishes (Twilio's Events v1 API). Pure: the
//! plan, as [`Resource`]s the wiring calls read and update.
//!
//! A new sink starts `initialized`; Twilio takes a subscription only for an
//! `active` one, so until Twilio has validated the sink its subscription is
//! shown as blocked, with what to do.

use serde::Deserialize;
use serde_json::Value;

use crate::provisioning::wiring::{Resource, Setting};
use crate::shared::rest::path_segment;

/// The route Event Streams delivers to.
pub const ROUTE: &str = "/twilio/events";

/// The event types the service publishes, each with the schema version its
/// reading was written for.
pub const EVENT_TYPES: [(&str, u32); 8] = [
    ("com.twilio.messaging.message.queued", 1),
    ("com.twilio.messaging.message.sent", 1),
    ("com.twilio.messaging.message.delivered", 1),
    ("com.twilio.messaging.message.undelivered", 1),
    ("com.twilio.messaging.message.failed", 1),
    ("com.twilio.messaging.message.read", 1),
    ("com.twilio.messaging.inbound-message.received", 1),
    ("com.twilio.conversations.message.added", 1),
];

/// How the service's sink and subscription describe themselves.
const DESCRIPTION: &str = "ingress-egress";

/// `GET …/v1/Sinks`, the first page.
pub fn sinks_url(events_base: &str) -> String {
    format!("{events_base}/v1/Sinks?PageSize=100")
}

/// `GET …/v1/Subscriptions` of one sink.
pub fn subscriptions_url(events_base: &str, sink_sid: &str) -> String {
    format!("{events_base}/v1/Subscriptions?SinkSid={}&PageSize=100", path_segment(sink_sid))
}

/// `GET …/v1/Subscriptions/{DF}/SubscribedEvents`.
pub fn subscribed_events_url(events_base: &str, subscription_sid: &str) -> String {
    format!("{events_base}/v1/Subscriptions/{}/SubscribedEvents?PageSize=100", path_segment(subscription_sid))
}

/// A page of a list, as the Events API answers.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    #[serde(default, alias = "sinks", alias = "subscriptions", alias = "types")]
    pub items: Vec<T>,
}

/// A sink, as Twilio answers for it.
#[derive(Debug, Clone, Deserialize)]
pub struct Sink {
    pub sid: String,
    #[serde(default)]
    pub sink_type: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// An object, or the JSON text of one (`destination`, `method`, `batch_events`).
    #[serde(default)]
    pub sink_configuration: Option<Value>,
}

impl Sink {
    /// Where a webhook sink delivers.
    pub fn destination(&self) -> Option<String> {
        let configuration = match self.sink_configuration.as_ref()? {
            Value::String(text) => serde_json::from_str::<Value>(text).ok()?,
            other => other.clone(),
        };
        configuration.get("destination")?.as_str().map(str::to_owned)
    }
}

/// A subscription, as Twilio answers for it.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub sid: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// One subscribed event type.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscribedEvent {
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The webhook sink at `destination` among `sinks`, when there is one.
pub fn find_sink(sinks: Vec<Sink>, destination: &str) -> Option<Sink> {
    sinks
        .into_iter()
        .find(|sink| sink.sink_type.as_deref() == Some("webhook") && sink.destination().as_deref() == Some(destination))
}

/// The sink's plan: none yet is created (one event per request, so that a
/// batch never outgrows the service's body limit); one that exists must be
/// `active`, which only Twilio's validation makes it.
pub fn sink_resource(found: Option<&Sink>, destination: &str, events_base: &str) -> Resource {
    let Some(sink) = found else {
        let configuration = serde_json::json!({"destination": destination, "method": "POST", "batch_events": false});
        let form = vec![
            ("Description".to_owned(), DESCRIPTION.to_owned()),
            ("SinkType".to_owned(), "webhook".to_owned()),
            ("SinkConfiguration".to_owned(), configuration.to_string()),
        ];
        let setting = Setting {
            name: "SinkConfiguration",
            field: "sink_configuration.destination",
            current: String::new(),
            wanted: destination.to_owned(),
            form,
        };
        return Resource {
            label: "event streams sink (none yet)".to_owned(),
            settings: vec![setting],
            update_url: format!("{events_base}/v1/Sinks"),
            blocked: None,
            warnings: vec!["a new sink is `initialized` until Twilio validates it (Console, or the Sinks Test and Validate calls); run `wire --event-streams` again then to subscribe it".to_owned()],
        };
    };
    let status = sink.status.clone().unwrap_or_default();
    let blocked = (status != "active").then(|| {
        format!("sink {} is {status}: Twilio sends events only to a validated sink (Console, or its Test and Validate calls)", sink.sid)
    });
    Resource {
        label: format!("event streams sink {}", sink.sid),
        settings: vec![
            Setting {
                name: "destination",
                field: "destination",
                current: destination.to_owned(),
                wanted: destination.to_owned(),
                form: Vec::new(),
            },
            Setting { name: "status", field: "status", current: status, wanted: "active".to_owned(), form: Vec::new() },
        ],
        update_url: format!("{events_base}/v1/Sinks/{}", path_segment(&sink.sid)),
        blocked,
        warnings: Vec::new(),
    }
}

/// The subscription's plan for an active `sink`: none yet is created with
/// every type; one that exists gains each type it lacks, one update each.
pub fn subscription_resources(
    sink: &Sink,
    subscription: Option<(&Subscription, &[SubscribedEvent])>,
    events_base: &str,
) -> Vec<Resource> {
    let Some((subscription, subscribed)) = subscription else {
        let mut form =
            vec![("Description".to_owned(), DESCRIPTION.to_owned()), ("SinkSid".to_owned(), sink.sid.clone())];
        form.extend(EVENT_TYPES.iter().map(|(kind, version)| {
            ("Types".to_owned(), serde_json::json!({"type": kind, "schema_version": version}).to_string())
        }));
        // Shown and checked by its sink: the types it gets are listed once it exists.
        let setting =
            Setting { name: "SinkSid", field: "sink_sid", current: String::new(), wanted: sink.sid.clone(), form };
        return vec![Resource {
            label: format!("event streams subscription to {} types (none yet)", EVENT_TYPES.len()),
            settings: vec![setting],
            update_url: format!("{events_base}/v1/Subscriptions"),
            blocked: None,
            warnings: Vec::new(),
        }];
    };
    let has = |kind: &str| subscribed.iter().any(|event| event.event_type == kind);
    EVENT_TYPES
        .iter()
        .map(|(kind, version)| {
            let label = format!("event streams subscription {}", subscription.sid);
            let current = if has(kind) { (*kind).to_owned() } else { String::new() };
            let form = vec![("Type".to_owned(), (*kind).to_owned()), ("SchemaVersion".to_owned(), version.to_string())];
            Resource {
                label,
                settings: vec![Setting { name: "Type", field: "type", current, wanted: (*kind).to_owned(), form }],
                update_url: format!(
                    "{events_base}/v1/Subscriptions/{}/SubscribedEvents",
                    path_segment(&subscription.sid)
                ),
                blocked: None,
                warnings: Vec::new(),
            }
        })
        .collect()
}

/// The subscription for the service's sink: the one it described, else the first.
pub fn own_subscription(subscriptions: &[Subscription]) -> Option<&Subscription> {
    subscriptions
        .iter()
        .find(|subscription| subscription.description.as_deref() == Some(DESCRIPTION))
        .or_else(|| subscriptions.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "https://events.twilio.com";
    const DESTINATION: &str = "https://hooks.example.com/twilio/events";

    fn sink(status: &str, configuration: Value) -> Sink {
        Sink {
            sid: "DG00000000000000000000000000000001".into(),
            sink_type: Some("webhook".into()),
            status: Some(status.into()),
            sink_configuration: Some(configuration),
        }
    }

    #[test]
    fn a_missing_sink_is_created_sending_one_event_per_request() {
        let resource = sink_resource(None, DESTINATION, EVENTS);
        let update = resource.update(&[]).unwrap();
        assert_eq!(update.url, format!("{EVENTS}/v1/Sinks"));
        let configuration = update.form.iter().find(|(k, _)| k == "SinkConfiguration").unwrap();
        let configuration: Value = serde_json::from_str(&configuration.1).unwrap();
        assert_eq!(
            configuration,
            serde_json::json!({"destination": DESTINATION, "method": "POST", "batch_events": false})
        );
        assert!(update.form.contains(&("SinkType".to_owned(), "webhook".to_owned())));
    }

    #[test]
    fn a_sink_is_found_by_its_destination_in_either_spelling_and_must_be_active() {
        let as_text =
            sink("initialized", Value::String(format!(r#"{{"destination":"{DESTINATION}","method":"POST"}}"#)));
        let as_object = sink("active", serde_json::json!({"destination": DESTINATION}));
        let elsewhere = sink("active", serde_json::json!({"destination": "https://other.example.com/e"}));
        assert_eq!(
            find_sink(vec![elsewhere.clone(), as_text.clone()], DESTINATION).unwrap().status.as_deref(),
            Some("initialized")
        );
        assert!(find_sink(vec![elsewhere], DESTINATION).is_none());
        let waiting = sink_resource(Some(&as_text), DESTINATION, EVENTS);
        assert!(waiting.blocked.as_deref().unwrap().contains("is initialized"), "{waiting:?}");
        let active = sink_resource(Some(&as_object), DESTINATION, EVENTS);
        assert!(active.blocked.is_none() && active.update(&[]).is_none());
    }

    #[test]
    fn a_subscription_is_created_with_every_type_or_completed_one_type_at_a_time() {
        let active = sink("active", serde_json::json!({"destination": DESTINATION}));
        let created = subscription_resources(&active, None, EVENTS);
        let update = created[0].update(&[]).unwrap();
        let types: Vec<Value> =
            update.form.iter().filter(|(k, _)| k == "Types").map(|(_, v)| serde_json::from_str(v).unwrap()).collect();
        assert_eq!(types.len(), EVENT_TYPES.len());
        assert_eq!(types[0], serde_json::json!({"type": "com.twilio.messaging.message.queued", "schema_version": 1}));
        let subscription =
            Subscription { sid: "DF00000000000000000000000000000001".into(), description: Some(DESCRIPTION.into()) };
        let subscribed: Vec<SubscribedEvent> =
            EVENT_TYPES[..6].iter().map(|(kind, _)| SubscribedEvent { event_type: (*kind).to_owned() }).collect();
        let resources = subscription_resources(&active, Some((&subscription, &subscribed)), EVENTS);
        let updates: Vec<_> = resources.iter().filter_map(|r| r.update(&[])).collect();
        assert_eq!(updates.len(), 2, "the two types it lacks");
        assert_eq!(updates[0].form[0].1, "com.twilio.messaging.inbound-message.received");
        assert!(updates[0].url.ends_with("/v1/Subscriptions/DF00000000000000000000000000000001/SubscribedEvents"));
    }
}
