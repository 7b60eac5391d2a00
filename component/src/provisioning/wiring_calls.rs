//! `twilio wire` and `twilio status`: reads the resources that carry the
//! service's webhooks from Twilio's REST API and, for `wire`, updates what
//! differs. The planning is in [`crate::provisioning::wiring`].

use crate::egress::message::EgressSettings;
use crate::exports::platform::connector::provisioning::{SettingState, WebhookSetting, WiringReport};
use crate::provisioning::event_streams_wiring::{self as streams, Page, Sink, SubscribedEvent, Subscription};
use crate::provisioning::wiring::{self, Line, Resource, State};
use crate::shared::accounts::{self, Lookup};
use crate::shared::http;
use crate::shared::rest::rest_headers;
use crate::shared::settings;

/// At most this many pages of numbers (1,000 each) are read.
const MAX_NUMBER_PAGES: usize = 100;

/// What every call needs.
struct Context {
    rest: EgressSettings,
    messaging_base: String,
    headers: Vec<(String, String)>,
    /// The service's public base URL, checked.
    base: String,
    /// The connection overrides messaging webhooks carry.
    overrides: Option<String>,
    events_base: String,
}

impl Context {
    /// The context of `account` (the default when none).
    fn load(account: Option<&str>, public_url: &str) -> Result<Self, String> {
        let account = match accounts::resolve(account) {
            Lookup::Found(account) => account,
            Lookup::Unknown => return Err(accounts::not_served(account)),
            Lookup::Unavailable(reason) | Lookup::Refused(reason) => return Err(reason),
        };
        let rest = settings::egress_settings(&account)?;
        let headers = rest_headers(&rest.credentials);
        let messaging_base = settings::messaging_base(&account);
        let overrides = settings::webhook_overrides();
        let events_base = settings::events_base(&account);
        Ok(Self { messaging_base, headers, base: wiring::public_base(public_url)?, overrides, events_base, rest })
    }

    fn webhooks(&self) -> wiring::Webhooks<'_> {
        wiring::Webhooks { base: &self.base, overrides: self.overrides.as_deref() }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, url: String, what: &str) -> Result<T, String> {
        let body = http::rest(&wiring::lookup(url, &self.headers), &self.rest.credentials)
            .map_err(|e| format!("reading {what}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("reading {what}: Twilio's answer does not read: {e}"))
    }
}

/// What is wired now against `public_url`, or the connector's own public URL.
pub fn inspect(account: Option<&str>, public_url: Option<String>, parts: &[String]) -> Result<WiringReport, String> {
    let public_url = public_url.or_else(settings::webhook_base_url).ok_or(
        "no public URL: give one (--public-url) or set TWILIO_WEBHOOK_BASE_URL, the URL Twilio calls".to_owned(),
    )?;
    let context = Context::load(account, &public_url)?;
    let (resources, warnings) = resources(&context, parts)?;
    Ok(report(resources.iter().flat_map(wiring::inspected).collect(), warnings, &resources))
}

/// Points the webhooks at `public_url`; with `dry_run`, only says what it would change.
pub fn wire(
    account: Option<&str>,
    public_url: String,
    dry_run: bool,
    parts: &[String],
) -> Result<WiringReport, String> {
    let context = Context::load(account, &public_url)?;
    let (resources, warnings) = resources(&context, parts)?;
    let lines = resources
        .iter()
        .flat_map(|resource| if dry_run { wiring::inspected(resource) } else { apply(resource, &context) })
        .collect();
    Ok(report(lines, warnings, &resources))
}

/// The optional parts of the wiring, by name (`wiring_parts:` makes each a flag).
const EVENT_STREAMS: &str = "event-streams";

/// The resources to look at, and the warnings about the whole account.
fn resources(context: &Context, parts: &[String]) -> Result<(Vec<Resource>, Vec<String>), String> {
    if let Some(unknown) = parts.iter().find(|part| *part != EVENT_STREAMS) {
        return Err(format!("unknown part {unknown:?} to parts: the Twilio connector offers {EVENT_STREAMS}"));
    }
    let mut warnings = wiring::signature_warnings(&context.base, settings::webhook_base_url().as_deref());
    let mut resources = match context.rest.senders.messaging_service_sid.clone() {
        Some(service) => vec![messaging_service(context, &service)?],
        None => numbers(context)?,
    };
    if resources.is_empty() {
        warnings.push("the account has no incoming phone numbers: nothing sends inbound messages".to_owned());
    }
    match &context.rest.chat_service_sid {
        Some(service) => resources.push(conversations(context, service)?),
        None => warnings.push("TWILIO_CHAT_SERVICE_SID is not set: Conversations is not wired".to_owned()),
    }
    if !parts.is_empty() {
        resources.extend(event_streams(context)?);
    }
    Ok((resources, warnings))
}

/// The Event Streams sink at the service's events route and, once Twilio
/// has validated it, its subscription (the first page of sinks is read).
fn event_streams(context: &Context) -> Result<Vec<Resource>, String> {
    let base = &context.events_base;
    let destination = format!("{}{}", context.base, streams::ROUTE);
    let sinks: Page<Sink> = context.get_json(streams::sinks_url(base), "the Event Streams sinks")?;
    let sink = streams::find_sink(sinks.items, &destination);
    let mut resources = vec![streams::sink_resource(sink.as_ref(), &destination, base)];
    let Some(sink) = sink.filter(|sink| sink.status.as_deref() == Some("active")) else { return Ok(resources) };
    let url = streams::subscriptions_url(base, &sink.sid);
    let subscriptions: Page<Subscription> = context.get_json(url, "the Event Streams subscriptions")?;
    let found = streams::own_subscription(&subscriptions.items);
    let subscribed: Vec<SubscribedEvent> = match found {
        Some(subscription) => {
            let url = streams::subscribed_events_url(base, &subscription.sid);
            context.get_json::<Page<SubscribedEvent>>(url, "the subscribed event types")?.items
        }
        None => Vec::new(),
    };
    resources.extend(streams::subscription_resources(&sink, found.map(|s| (s, subscribed.as_slice())), base));
    Ok(resources)
}

/// Every incoming number of the account, page after page.
fn numbers(context: &Context) -> Result<Vec<Resource>, String> {
    let (api, account) = (&context.rest.api_base, &context.rest.account_sid);
    let mut next = Some(wiring::numbers_url(api, account));
    let mut resources = Vec::new();
    for _ in 0..MAX_NUMBER_PAGES {
        let Some(url) = next.take() else { break };
        let page: wiring::NumbersPage = context.get_json(url, "the incoming phone numbers")?;
        next = page.next_url(api, account);
        let to_resource = |number| wiring::number_resource(number, context.webhooks(), api, account);
        resources.extend(page.incoming_phone_numbers.into_iter().map(to_resource));
    }
    if next.is_some() {
        return Err(format!(
            "the account has more than {} numbers: wire a Messaging Service instead",
            MAX_NUMBER_PAGES * 1000
        ));
    }
    Ok(resources)
}

/// The Messaging Service egress sends from (`TWILIO_MESSAGING_SERVICE_SID`).
fn messaging_service(context: &Context, service: &str) -> Result<Resource, String> {
    let url = wiring::messaging_service_url(&context.messaging_base, service);
    let found = context.get_json(url, &format!("messaging service {service}"))?;
    Ok(wiring::messaging_service_resource(found, context.webhooks(), &context.messaging_base))
}

/// The Conversations service's webhook configuration (`TWILIO_CHAT_SERVICE_SID`).
fn conversations(context: &Context, service: &str) -> Result<Resource, String> {
    let url = wiring::conversations_webhooks_url(&context.rest.conversations_base, service);
    let found = context.get_json(url, &format!("the webhooks of conversations service {service}"))?;
    Ok(wiring::conversations_resource(found, service, &context.base, &context.rest.conversations_base))
}

/// Updates what differs in one resource, then checks Twilio took it.
fn apply(resource: &Resource, context: &Context) -> Vec<Line> {
    let update = match (&resource.blocked, resource.update(&context.headers)) {
        (None, Some(update)) => update,
        _ => return wiring::inspected(resource),
    };
    let outcome = http::rest(&update, &context.rest.credentials).and_then(|body| {
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("Twilio's answer does not read: {e}"))?;
        match wiring::not_taken(resource, &answer).as_slice() {
            [] => Ok(()),
            names => Err(format!("Twilio answered without taking {}", names.join(", "))),
        }
    });
    wiring::updated(resource, outcome.err().as_deref())
}

fn report(lines: Vec<Line>, mut warnings: Vec<String>, resources: &[Resource]) -> WiringReport {
    warnings.extend(resources.iter().flat_map(|r| r.warnings.iter().cloned()));
    let settings = lines
        .into_iter()
        .map(|line| WebhookSetting {
            resource: line.resource,
            setting: line.setting,
            current: line.current,
            wanted: line.wanted,
            state: match line.state {
                State::Wired => SettingState::Wired,
                State::WouldChange => SettingState::WouldChange,
                State::Changed => SettingState::Changed,
                State::Blocked => SettingState::Blocked,
                State::Failed => SettingState::Failed,
            },
            note: line.note,
        })
        .collect();
    WiringReport { settings, warnings }
}
