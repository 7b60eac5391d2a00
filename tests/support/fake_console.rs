//! The part of the fake Twilio that holds the resources `twilio wire`
//! changes, as Twilio's console would: incoming phone numbers (listed a page
//! at a time), Messaging Services and a Conversations service's webhook
//! configuration, and Event Streams sinks and subscriptions. Updates change
//! them, so a second `wire` finds them wired; a parameter Twilio does not
//! know is refused, as a typo would be.

use serde_json::{Value, json};

use crate::fake_twilio::Reply;

/// The resources, and how many numbers a page of the list holds.
#[derive(Debug, Clone)]
pub struct Console {
    pub numbers: Vec<Value>,
    pub messaging_services: Vec<Value>,
    /// Conversations webhook configurations, by chat service sid.
    pub conversations: Vec<(String, Value)>,
    pub page_size: usize,
    /// Event Streams sinks; one is created `initialized` (a test makes it `active`).
    pub sinks: Vec<Value>,
    /// Event Streams subscriptions, with the event types each has.
    pub subscriptions: Vec<(Value, Vec<String>)>,
}

impl Default for Console {
    fn default() -> Self {
        Self {
            numbers: Vec::new(),
            messaging_services: Vec::new(),
            conversations: Vec::new(),
            page_size: 50,
            sinks: Vec::new(),
            subscriptions: Vec::new(),
        }
    }
}

/// A number as the list shows it, its SMS webhook as given.
pub fn number(sid: &str, phone: &str, sms_url: &str) -> Value {
    json!({
        "sid": sid, "phone_number": phone, "friendly_name": phone, "sms_url": sms_url, "sms_method": "POST",
        "sms_application_sid": "", "sms_fallback_url": "", "voice_url": "https://voice.example.com/keep",
        "status_callback": "", "capabilities": { "sms": true, "mms": true, "voice": true },
    })
}

/// A Messaging Service with nothing wired.
pub fn messaging_service(sid: &str) -> Value {
    json!({
        "sid": sid, "friendly_name": "support", "inbound_request_url": null, "inbound_method": "POST",
        "status_callback": null, "use_inbound_webhook_on_number": false, "fallback_url": null,
    })
}

/// A Conversations webhook configuration with a pre-event webhook another
/// system owns (its filter must survive).
pub fn conversations_webhooks(service: &str) -> Value {
    json!({
        "chat_service_sid": service, "pre_webhook_url": "https://moderation.example.com/pre",
        "post_webhook_url": null, "filters": ["onMessageAdd"], "method": "GET",
    })
}

impl Console {
    /// Answers a request for one of its resources; `None` for any other path.
    pub fn answer(&mut self, method: &str, path: &str, form: &[(String, String)]) -> Option<Reply> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["2010-04-01", "Accounts", account, "IncomingPhoneNumbers.json"]) => {
                Some(self.numbers_page(account, query))
            }
            ("POST", ["2010-04-01", "Accounts", _, "IncomingPhoneNumbers", file]) => {
                let sid = file.strip_suffix(".json")?;
                let fields =
                    [("SmsUrl", "sms_url"), ("SmsMethod", "sms_method"), ("SmsApplicationSid", "sms_application_sid")];
                Some(update(self.numbers.iter_mut().find(|n| n["sid"] == *sid), form, &fields))
            }
            (_, ["v1", "Services", sid]) if sid.starts_with("MG") => {
                let service = self.messaging_services.iter_mut().find(|s| s["sid"] == *sid);
                let fields = [
                    ("InboundRequestUrl", "inbound_request_url"),
                    ("InboundMethod", "inbound_method"),
                    ("StatusCallback", "status_callback"),
                    ("UseInboundWebhookOnNumber", "use_inbound_webhook_on_number"),
                ];
                Some(if method == "GET" { found(service) } else { update(service, form, &fields) })
            }
            (_, ["v1", "Services", sid, "Configuration", "Webhooks"]) => {
                let config = self.conversations.iter_mut().find(|(s, _)| s == sid).map(|(_, c)| c);
                Some(if method == "GET" { found(config) } else { update_conversations(config, form) })
            }
            ("GET", ["v1", "Sinks"]) => Some(list("sinks", self.sinks.clone())),
            ("POST", ["v1", "Sinks"]) => Some(self.create_sink(form)),
            ("GET", ["v1", "Subscriptions"]) => {
                let sink = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "SinkSid").map(|(_, v)| v);
                let of_sink = self.subscriptions.iter().map(|(s, _)| s.clone());
                Some(list(
                    "subscriptions",
                    of_sink.filter(|s| sink.as_deref().is_none_or(|sid| s["sink_sid"] == sid)).collect(),
                ))
            }
            ("POST", ["v1", "Subscriptions"]) => Some(self.create_subscription(form)),
            (_, ["v1", "Subscriptions", sid, "SubscribedEvents"]) => {
                let (subscription, types) = self.subscriptions.iter_mut().find(|(s, _)| s["sid"] == *sid)?;
                if method == "GET" {
                    let items = types
                        .iter()
                        .map(|t| json!({"type": t, "schema_version": 1, "subscription_sid": subscription["sid"]}));
                    return Some(list("types", items.collect()));
                }
                let kind = form.iter().find(|(k, _)| k == "Type").map(|(_, v)| v.clone())?;
                types.push(kind.clone());
                Some(Reply::json(201, &json!({"type": kind, "schema_version": 1, "subscription_sid": sid}).to_string()))
            }
            _ => None,
        }
    }

    fn create_sink(&mut self, form: &[(String, String)]) -> Reply {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let Ok(configuration) = serde_json::from_str::<Value>(&field("SinkConfiguration")) else {
            return Reply::error(400, 20001, "SinkConfiguration is not JSON");
        };
        let sink = json!({
            "sid": format!("DG{:032x}", self.sinks.len() + 1), "description": field("Description"),
            "sink_type": field("SinkType"), "status": "initialized", "sink_configuration": configuration,
        });
        self.sinks.push(sink.clone());
        Reply::json(201, &sink.to_string())
    }

    fn create_subscription(&mut self, form: &[(String, String)]) -> Reply {
        let sink_sid = form.iter().find(|(k, _)| k == "SinkSid").map(|(_, v)| v.clone()).unwrap_or_default();
        if !self.sinks.iter().any(|s| s["sid"] == sink_sid.as_str() && s["status"] == "active") {
            return Reply::error(400, 20001, "Sink must be active for the subscription to be created");
        }
        let types: Vec<String> = form
            .iter()
            .filter(|(k, _)| k == "Types")
            .filter_map(|(_, v)| serde_json::from_str::<Value>(v).ok()?["type"].as_str().map(str::to_owned))
            .collect();
        let description = form.iter().find(|(k, _)| k == "Description").map(|(_, v)| v.clone());
        let subscription = json!({
            "sid": format!("DF{:032x}", self.subscriptions.len() + 1), "sink_sid": sink_sid, "description": description,
        });
        self.subscriptions.push((subscription.clone(), types));
        Reply::json(201, &subscription.to_string())
    }

    /// One page of the numbers, `Page` counted from 0, with Twilio's page fields.
    fn numbers_page(&self, account: &str, query: &str) -> Reply {
        let page: usize = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "Page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let start = page * self.page_size;
        let items: Vec<&Value> = self.numbers.iter().skip(start).take(self.page_size).collect();
        let list = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json");
        let next = (start + self.page_size < self.numbers.len())
            .then(|| format!("{list}?PageSize={}&Page={}&PageToken=PA{}", self.page_size, page + 1, page + 1));
        let body = json!({
            "incoming_phone_numbers": items, "next_page_uri": next, "page": page, "page_size": self.page_size,
            "start": start, "end": start + items.len(), "uri": format!("{list}?{query}"),
            "first_page_uri": format!("{list}?PageSize={}&Page=0", self.page_size), "previous_page_uri": null,
        });
        Reply::json(200, &body.to_string())
    }
}

/// An Events API list page: its items under `key`, with Twilio's `meta`.
fn list(key: &str, items: Vec<Value>) -> Reply {
    let meta = json!({"page": 0, "page_size": 100, "next_page_url": null, "key": key});
    Reply::json(200, &json!({ key: items, "meta": meta }).to_string())
}

fn found(resource: Option<&mut Value>) -> Reply {
    match resource {
        Some(resource) => Reply::json(200, &resource.to_string()),
        None => Reply::error(404, 20404, "The requested resource was not found"),
    }
}

/// Sets each form parameter on its field; an unknown parameter is refused
/// before anything changes.
fn update(resource: Option<&mut Value>, form: &[(String, String)], fields: &[(&str, &str)]) -> Reply {
    let Some(resource) = resource else { return found(None) };
    let field_of = |name: &str| fields.iter().find(|(param, _)| *param == name).map(|(_, field)| *field);
    if let Some((unknown, _)) = form.iter().find(|(name, _)| field_of(name).is_none()) {
        return Reply::error(400, 20001, &format!("Unknown parameter {unknown}"));
    }
    for (name, value) in form {
        let field = field_of(name).expect("checked above");
        resource[field] = if value == "true" || value == "false" { json!(value == "true") } else { json!(value) };
    }
    Reply::json(200, &resource.to_string())
}

/// As [`update`], with `Filters` a repeated parameter that replaces the list.
fn update_conversations(config: Option<&mut Value>, form: &[(String, String)]) -> Reply {
    let Some(config) = config else { return found(None) };
    let (filters, rest): (Vec<_>, Vec<_>) = form.iter().cloned().partition(|(name, _)| name == "Filters");
    let fields = [("PreWebhookUrl", "pre_webhook_url"), ("PostWebhookUrl", "post_webhook_url"), ("Method", "method")];
    let reply = update(Some(config), &rest, &fields);
    if reply.status == 200 && !filters.is_empty() {
        config["filters"] = json!(filters.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        return Reply::json(200, &config.to_string());
    }
    reply
}
