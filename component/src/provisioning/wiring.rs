//! Pointing Twilio's webhooks at this service (`twilio wire`, `twilio status`):
//! which setting of which Twilio resource should hold which URL, whether it
//! does, and the update that makes it so.
//!
//! Three kinds of resource carry the service's webhooks:
//! - an incoming phone number: `SmsUrl` and `SmsMethod` (a number has no
//!   messaging status callback; egress sets `StatusCallback` on each message);
//! - a Messaging Service: `InboundRequestUrl`, `InboundMethod` and
//!   `StatusCallback`, which apply to every number in it;
//! - the Conversations service's webhook configuration: `PostWebhookUrl`,
//!   `Method`, and `Filters` with `onMessageAdded` in it. The filters and the
//!   method are shared with the pre-event webhook, so filters already set are
//!   kept, never replaced.
//!
//! Pure logic: parsing Twilio's answers and planning; the calls are in
//! `wiring_calls`.

use serde::Deserialize;

use crate::shared::rest::{PreparedRequest, Verb, path_segment};

/// The route Twilio posts inbound messages to.
pub const MESSAGING_ROUTE: &str = "/twilio/messaging";
/// The route Twilio posts status callbacks to.
pub const STATUS_ROUTE: &str = "/twilio/status";
/// The route Twilio posts Conversations events to.
pub const CONVERSATIONS_ROUTE: &str = "/twilio/conversations";
/// The Conversations event the service consumes.
pub const MESSAGE_ADDED: &str = "onMessageAdded";
/// Twilio's largest page of a list.
const PAGE_SIZE: u32 = 1000;

/// The service's public base URL, checked: `https://host[:port][/prefix]`,
/// without a query or a fragment, and without a trailing slash.
pub fn public_base(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("public URL {raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("public URL {raw:?} must be http(s)://host[/prefix]"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("public URL {raw:?} must have no query, fragment or credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// What Twilio would sign, compared with what the service verifies against
/// (`TWILIO_WEBHOOK_BASE_URL`): the warnings an operator needs.
pub fn signature_warnings(public_base: &str, verified_base: Option<&str>) -> Vec<String> {
    match verified_base.map(|base| base.trim_end_matches('/')) {
        Some(base) if base == public_base => Vec::new(),
        Some(base) => vec![format!(
            "TWILIO_WEBHOOK_BASE_URL is {base}: Twilio signs the URL it calls ({public_base}/…), so its \
             signatures will not verify; set TWILIO_WEBHOOK_BASE_URL={public_base}"
        )],
        None => vec![format!(
            "TWILIO_WEBHOOK_BASE_URL is not set: signatures are checked against the URL a request arrives at, \
             and egress sets no StatusCallback on its messages; set TWILIO_WEBHOOK_BASE_URL={public_base}"
        )],
    }
}

/// Where the service's webhooks are: its public base, and the connection
/// overrides (`ct=…&rt=…&rc=…&rp=…`) messaging webhook URLs carry, so that
/// Twilio retries a webhook that timed out or got a 5xx instead of giving up
/// after one retry at most. An override is a URL fragment, which never
/// reaches the server: Twilio signs the URL without it, and signatures still
/// verify.
#[derive(Debug, Clone, Copy)]
pub struct Webhooks<'a> {
    pub base: &'a str,
    pub overrides: Option<&'a str>,
}

impl Webhooks<'_> {
    /// A messaging webhook's URL, with the overrides.
    fn messaging(&self, route: &str) -> String {
        match self.overrides {
            Some(overrides) => format!("{}{route}#{overrides}", self.base),
            None => format!("{}{route}", self.base),
        }
    }
}

/// One setting of one resource: where it stands and where it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// Its field in Twilio's JSON answer, e.g. `sms_url`.
    pub field: &'static str,
    pub current: String,
    pub wanted: String,
    /// The form the update sends for it (`Filters` repeats).
    pub form: Vec<(String, String)>,
}

impl Setting {
    fn single(name: &'static str, field: &'static str, current: Option<String>, wanted: String) -> Self {
        let form = vec![(name.to_owned(), wanted.clone())];
        Self { name, field, current: current.unwrap_or_default(), wanted, form }
    }

    /// Whether it already holds what the service needs.
    pub fn is_wired(&self) -> bool {
        self.current == self.wanted
    }
}

/// One Twilio resource, its webhook settings and how to update them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// How an operator recognises it, e.g. `number +14155550100 (PN…)`.
    pub label: String,
    pub settings: Vec<Setting>,
    /// Where its update is posted.
    pub update_url: String,
    /// Why `wire` must leave it alone, if it must.
    pub blocked: Option<String>,
    /// What an operator should know about it.
    pub warnings: Vec<String>,
}

impl Resource {
    /// The update that wires it: only the settings that differ, or none.
    pub fn update(&self, headers: &[(String, String)]) -> Option<PreparedRequest> {
        let form: Vec<(String, String)> =
            self.settings.iter().filter(|s| !s.is_wired()).flat_map(|s| s.form.iter().cloned()).collect();
        (!form.is_empty()).then(|| PreparedRequest {
            verb: Verb::Post,
            url: self.update_url.clone(),
            headers: headers.to_vec(),
            form,
        })
    }
}

/// A lookup, with the REST headers (they carry the credentials).
pub fn lookup(url: String, headers: &[(String, String)]) -> PreparedRequest {
    PreparedRequest { verb: Verb::Get, url, headers: headers.to_vec(), form: Vec::new() }
}

/// `GET …/IncomingPhoneNumbers.json`, the first page.
pub fn numbers_url(api_base: &str, account_sid: &str) -> String {
    format!(
        "{api_base}/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json?PageSize={PAGE_SIZE}",
        path_segment(account_sid)
    )
}

/// A page of the account's incoming phone numbers.
#[derive(Debug, Deserialize)]
pub struct NumbersPage {
    #[serde(default)]
    pub incoming_phone_numbers: Vec<IncomingNumber>,
    /// Relative to the API's base, e.g. `/2010-04-01/Accounts/…?Page=1&PageToken=…`.
    #[serde(default)]
    pub next_page_uri: Option<String>,
}

impl NumbersPage {
    /// The next page's URL, only when it is the same list on the same API:
    /// an answer cannot send the credentials anywhere else.
    pub fn next_url(&self, api_base: &str, account_sid: &str) -> Option<String> {
        let next = self.next_page_uri.as_deref()?;
        let list = format!("/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json?", path_segment(account_sid));
        next.starts_with(&list).then(|| format!("{api_base}{next}"))
    }
}

/// An incoming phone number, as the list has it.
#[derive(Debug, Deserialize)]
pub struct IncomingNumber {
    pub sid: String,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub sms_url: Option<String>,
    #[serde(default)]
    pub sms_method: Option<String>,
    #[serde(default)]
    pub sms_application_sid: Option<String>,
}

/// A number's plan: `SmsUrl` at the messaging route, `SmsMethod` POST.
pub fn number_resource(number: IncomingNumber, webhooks: Webhooks<'_>, api_base: &str, account_sid: &str) -> Resource {
    let label = format!("number {} ({})", number.phone_number.as_deref().unwrap_or("?"), number.sid);
    let update_url = format!(
        "{api_base}/2010-04-01/Accounts/{}/IncomingPhoneNumbers/{}.json",
        path_segment(account_sid),
        path_segment(&number.sid)
    );
    let blocked = number
        .sms_application_sid
        .filter(|app| !app.is_empty())
        .map(|app| format!("its messages go to TwiML App {app}: clear the number's SmsApplicationSid to wire it"));
    Resource {
        blocked: blocked.or_else(|| sid_problem(&number.sid, "PN")),
        settings: vec![
            Setting::single("SmsUrl", "sms_url", number.sms_url, webhooks.messaging(MESSAGING_ROUTE)),
            Setting::single(
                "SmsMethod",
                "sms_method",
                number.sms_method.map(|m| m.to_ascii_uppercase()),
                "POST".to_owned(),
            ),
        ],
        label,
        update_url,
        warnings: Vec::new(),
    }
}

/// `…/v1/Services/{MG}`: a Messaging Service, read and updated at one URL.
pub fn messaging_service_url(messaging_base: &str, service_sid: &str) -> String {
    format!("{messaging_base}/v1/Services/{}", path_segment(service_sid))
}

/// A Messaging Service, as Twilio answers for it.
#[derive(Debug, Deserialize)]
pub struct MessagingService {
    pub sid: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub inbound_request_url: Option<String>,
    #[serde(default)]
    pub inbound_method: Option<String>,
    #[serde(default)]
    pub status_callback: Option<String>,
    #[serde(default)]
    pub use_inbound_webhook_on_number: Option<bool>,
}

/// A Messaging Service's plan: inbound to the messaging route (POST), status
/// callbacks to the status route.
pub fn messaging_service_resource(service: MessagingService, webhooks: Webhooks<'_>, messaging_base: &str) -> Resource {
    let label = match &service.friendly_name {
        Some(name) if !name.is_empty() => format!("messaging service {name} ({})", service.sid),
        _ => format!("messaging service {}", service.sid),
    };
    let mut warnings = Vec::new();
    if service.use_inbound_webhook_on_number == Some(true) {
        warnings.push(format!(
            "{label} has UseInboundWebhookOnNumber on: inbound messages go to each number's own SmsUrl, \
             not to its InboundRequestUrl"
        ));
    }
    Resource {
        update_url: messaging_service_url(messaging_base, &service.sid),
        blocked: sid_problem(&service.sid, "MG"),
        settings: vec![
            Setting::single(
                "InboundRequestUrl",
                "inbound_request_url",
                service.inbound_request_url,
                webhooks.messaging(MESSAGING_ROUTE),
            ),
            Setting::single(
                "InboundMethod",
                "inbound_method",
                service.inbound_method.map(|m| m.to_ascii_uppercase()),
                "POST".into(),
            ),
            Setting::single(
                "StatusCallback",
                "status_callback",
                service.status_callback,
                webhooks.messaging(STATUS_ROUTE),
            ),
        ],
        label,
        warnings,
    }
}

/// `…/v1/Services/{IS}/Configuration/Webhooks`: read and updated at one URL.
pub fn conversations_webhooks_url(conversations_base: &str, chat_service_sid: &str) -> String {
    format!("{conversations_base}/v1/Services/{}/Configuration/Webhooks", path_segment(chat_service_sid))
}

/// A Conversations service's webhook configuration (every field may be null).
#[derive(Debug, Deserialize)]
pub struct ConversationsWebhooks {
    #[serde(default)]
    pub chat_service_sid: Option<String>,
    #[serde(default)]
    pub pre_webhook_url: Option<String>,
    #[serde(default)]
    pub post_webhook_url: Option<String>,
    #[serde(default)]
    pub filters: Option<Vec<String>>,
    #[serde(default)]
    pub method: Option<String>,
}

/// The Conversations service's plan: post-event webhook to the conversations
/// route, POST, and `onMessageAdded` added to the filters already there.
pub fn conversations_resource(
    webhooks: ConversationsWebhooks,
    chat_service_sid: &str,
    base: &str,
    conversations_base: &str,
) -> Resource {
    let current_filters = webhooks.filters.unwrap_or_default();
    let mut wanted_filters = current_filters.clone();
    if !wanted_filters.iter().any(|f| f == MESSAGE_ADDED) {
        wanted_filters.push(MESSAGE_ADDED.to_owned());
    }
    let filters = Setting {
        name: "Filters",
        field: "filters",
        current: current_filters.join(","),
        wanted: wanted_filters.join(","),
        form: wanted_filters.iter().map(|f| ("Filters".to_owned(), f.clone())).collect(),
    };
    let method =
        Setting::single("Method", "method", webhooks.method.map(|m| m.to_ascii_uppercase()), "POST".to_owned());
    let mut warnings = Vec::new();
    if let Some(pre) = webhooks.pre_webhook_url.filter(|url| !url.is_empty())
        && !method.is_wired()
    {
        warnings.push(format!("the pre-event webhook {pre} shares the Method setting: it will be called with POST"));
    }
    Resource {
        label: format!("conversations service {}", webhooks.chat_service_sid.as_deref().unwrap_or(chat_service_sid)),
        update_url: conversations_webhooks_url(conversations_base, chat_service_sid),
        blocked: sid_problem(chat_service_sid, "IS"),
        settings: vec![
            Setting::single(
                "PostWebhookUrl",
                "post_webhook_url",
                webhooks.post_webhook_url,
                format!("{base}{CONVERSATIONS_ROUTE}"),
            ),
            method,
            filters,
        ],
        warnings,
    }
}

/// A sid that is not `prefix` + 32 hex digits cannot be put in a path safely.
fn sid_problem(sid: &str, prefix: &str) -> Option<String> {
    (!crate::shared::rest::is_sid(sid, prefix)).then(|| format!("{sid:?} is not a {prefix}… sid"))
}

/// Where one setting stands after looking (and, with `wire`, after changing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Wired,
    WouldChange,
    Changed,
    Blocked,
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub resource: String,
    pub setting: String,
    pub current: String,
    pub wanted: String,
    pub state: State,
    pub note: Option<String>,
}

/// The lines of a resource looked at without changing it.
pub fn inspected(resource: &Resource) -> Vec<Line> {
    resource
        .settings
        .iter()
        .map(|setting| {
            let (state, note) = match (&resource.blocked, setting.is_wired()) {
                (_, true) => (State::Wired, None),
                (Some(reason), false) => (State::Blocked, Some(reason.clone())),
                (None, false) => (State::WouldChange, elsewhere(setting)),
            };
            line(resource, setting, state, note)
        })
        .collect()
}

/// The lines of a resource after its update: the changed settings are
/// `changed`, or `failed` with `failure`.
pub fn updated(resource: &Resource, failure: Option<&str>) -> Vec<Line> {
    inspected(resource)
        .into_iter()
        .map(|mut line| {
            if line.state == State::WouldChange {
                (line.state, line.note) = match failure {
                    None => (State::Changed, None),
                    Some(reason) => (State::Failed, Some(reason.to_owned())),
                };
            }
            line
        })
        .collect()
}

fn line(resource: &Resource, setting: &Setting, state: State, note: Option<String>) -> Line {
    Line {
        resource: resource.label.clone(),
        setting: setting.name.to_owned(),
        current: setting.current.clone(),
        wanted: setting.wanted.clone(),
        state,
        note,
    }
}

/// A URL setting that is not as wanted: wired without (or with other)
/// connection overrides, or pointing somewhere else.
fn elsewhere(setting: &Setting) -> Option<String> {
    let without_fragment = |url: &str| url.split('#').next().unwrap_or_default().to_owned();
    let is_url = setting.current.starts_with("http://") || setting.current.starts_with("https://");
    if is_url && without_fragment(&setting.current) == without_fragment(&setting.wanted) {
        return Some(if setting.current.contains('#') {
            "other connection overrides than TWILIO_WEBHOOK_OVERRIDES".to_owned()
        } else {
            "no connection overrides: Twilio retries it at most once; `wire` adds them".to_owned()
        });
    }
    is_url.then(|| format!("points elsewhere: Twilio sends these to {}", setting.current))
}

/// The answer's `field`; `a.b` is field `b` of `a`, which Twilio may send
/// as an object or as the JSON text of one (an Event Streams sink's
/// `sink_configuration`).
fn answered(answer: &serde_json::Value, field: &str) -> serde_json::Value {
    let mut value = answer.clone();
    for key in field.split('.') {
        if let serde_json::Value::String(text) = &value
            && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(text)
        {
            value = parsed;
        }
        value = value.get(key).cloned().unwrap_or(serde_json::Value::Null);
    }
    value
}

/// What Twilio answered to an update, checked against what was asked: the
/// settings it did not take, by name.
pub fn not_taken(resource: &Resource, answer: &serde_json::Value) -> Vec<&'static str> {
    resource
        .settings
        .iter()
        .filter(|setting| !setting.is_wired())
        .filter(|setting| {
            let now = match answered(answer, setting.field) {
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join(",")
                }
                other => other.as_str().unwrap_or_default().to_owned(),
            };
            let taken = if setting.name.ends_with("Method") {
                now.eq_ignore_ascii_case(&setting.wanted)
            } else {
                now == setting.wanted
            };
            !taken
        })
        .map(|setting| setting.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://hooks.example.com/ie";
    /// Without connection overrides, as `TWILIO_WEBHOOK_OVERRIDES=none` wires.
    const HOOKS: Webhooks<'static> = Webhooks { base: BASE, overrides: None };
    const API: &str = "https://api.twilio.com";
    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
    const NUMBER_SID: &str = "PN0123456789abcdef0123456789abcdef";

    fn number(sms_url: Option<&str>, method: Option<&str>, app: Option<&str>) -> IncomingNumber {
        IncomingNumber {
            sid: NUMBER_SID.into(),
            phone_number: Some("+14155550100".into()),
            sms_url: sms_url.map(Into::into),
            sms_method: method.map(Into::into),
            sms_application_sid: app.map(Into::into),
        }
    }

    #[test]
    fn public_base_is_checked_and_normalised() {
        assert_eq!(public_base("https://hooks.example.com/ie/").unwrap(), BASE);
        assert_eq!(public_base("https://hooks.example.com").unwrap(), "https://hooks.example.com");
        for bad in ["hooks.example.com", "ftp://x", "https://x/?a=1", "https://x/#f", "https://u:p@x", ""] {
            assert!(public_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_number_pointing_elsewhere_is_updated_with_exactly_what_differs() {
        let resource =
            number_resource(number(Some("https://old.example.com/sms"), Some("POST"), None), HOOKS, API, ACCOUNT);
        let lines = inspected(&resource);
        assert_eq!(lines[0].state, State::WouldChange);
        assert_eq!(
            lines[0].note.as_deref(),
            Some("points elsewhere: Twilio sends these to https://old.example.com/sms")
        );
        assert_eq!(lines[1].state, State::Wired);
        let update = resource.update(&[]).unwrap();
        assert_eq!(update.url, format!("{API}/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{NUMBER_SID}.json"));
        assert_eq!(update.form, vec![("SmsUrl".to_owned(), format!("{BASE}/twilio/messaging"))]);
    }

    #[test]
    fn messaging_urls_carry_the_connection_overrides_and_status_names_their_absence() {
        let overrides = "ct=3000&rt=5000&rc=3&rp=ct,rt,5xx";
        let hooks = Webhooks { base: BASE, overrides: Some(overrides) };
        let plain = format!("{BASE}/twilio/messaging");
        let resource = number_resource(number(Some(&plain), Some("POST"), None), hooks, API, ACCOUNT);
        let lines = inspected(&resource);
        assert_eq!(lines[0].state, State::WouldChange);
        assert_eq!(lines[0].wanted, format!("{plain}#{overrides}"));
        assert!(lines[0].note.as_deref().unwrap().starts_with("no connection overrides"), "{lines:?}");
        let other = number_resource(number(Some(&format!("{plain}#rc=1")), Some("POST"), None), hooks, API, ACCOUNT);
        assert!(inspected(&other)[0].note.as_deref().unwrap().starts_with("other connection overrides"));
        let wired =
            number_resource(number(Some(&format!("{plain}#{overrides}")), Some("POST"), None), hooks, API, ACCOUNT);
        assert!(wired.update(&[]).is_none());
    }

    #[test]
    fn a_wired_number_needs_no_update_and_a_lowercase_method_counts() {
        let wired = number(Some(&format!("{BASE}/twilio/messaging")), Some("post"), None);
        let resource = number_resource(wired, HOOKS, API, ACCOUNT);
        assert!(resource.update(&[]).is_none());
        assert!(inspected(&resource).iter().all(|line| line.state == State::Wired));
    }

    #[test]
    fn a_number_on_a_twiml_app_is_blocked_not_changed() {
        let resource = number_resource(number(None, None, Some("AP0123")), HOOKS, API, ACCOUNT);
        let lines = inspected(&resource);
        assert!(lines.iter().all(|l| l.state == State::Blocked), "{lines:?}");
        assert!(lines[0].note.as_deref().unwrap().contains("SmsApplicationSid"));
    }

    #[test]
    fn conversations_filters_are_kept_and_on_message_added_joins_them() {
        let webhooks = ConversationsWebhooks {
            chat_service_sid: None,
            pre_webhook_url: Some("https://moderation.example.com/pre".into()),
            post_webhook_url: None,
            filters: Some(vec!["onMessageAdd".into()]),
            method: Some("GET".into()),
        };
        let sid = "IS0123456789abcdef0123456789abcdef";
        let resource = conversations_resource(webhooks, sid, BASE, "https://conversations.twilio.com");
        let update = resource.update(&[]).unwrap();
        let pairs =
            |items: &[(&str, &str)]| items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
        assert_eq!(
            update.form,
            pairs(&[
                ("PostWebhookUrl", "https://hooks.example.com/ie/twilio/conversations"),
                ("Method", "POST"),
                ("Filters", "onMessageAdd"),
                ("Filters", "onMessageAdded"),
            ])
        );
        assert_eq!(update.url, format!("https://conversations.twilio.com/v1/Services/{sid}/Configuration/Webhooks"));
        assert!(resource.warnings[0].contains("pre-event webhook"), "{:?}", resource.warnings);
    }

    #[test]
    fn a_messaging_service_is_wired_for_inbound_and_status() {
        let service = MessagingService {
            sid: "MG0123456789abcdef0123456789abcdef".into(),
            friendly_name: Some("support".into()),
            inbound_request_url: None,
            inbound_method: Some("POST".into()),
            status_callback: Some("https://old.example.com/status".into()),
            use_inbound_webhook_on_number: Some(true),
        };
        let resource = messaging_service_resource(service, HOOKS, "https://messaging.twilio.com");
        let form = resource.update(&[]).unwrap().form;
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["InboundRequestUrl", "StatusCallback"]);
        assert!(resource.warnings[0].contains("UseInboundWebhookOnNumber"));
    }

    #[test]
    fn the_next_page_must_be_the_same_list() {
        let page = |next: &str| NumbersPage { incoming_phone_numbers: vec![], next_page_uri: Some(next.into()) };
        let same = format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json?Page=1&PageToken=PA1");
        assert_eq!(page(&same).next_url(API, ACCOUNT), Some(format!("{API}{same}")));
        assert_eq!(page("https://evil.example.com/steal").next_url(API, ACCOUNT), None);
        assert_eq!(page("/2010-04-01/Accounts/ACother/IncomingPhoneNumbers.json?Page=1").next_url(API, ACCOUNT), None);
    }

    #[test]
    fn an_update_twilio_did_not_take_is_named() {
        let resource = number_resource(number(None, Some("GET"), None), HOOKS, API, ACCOUNT);
        let answer = serde_json::json!({ "sms_url": format!("{BASE}/twilio/messaging"), "sms_method": "GET" });
        assert_eq!(not_taken(&resource, &answer), ["SmsMethod"]);
        let answer = serde_json::json!({ "sms_url": format!("{BASE}/twilio/messaging"), "sms_method": "POST" });
        assert!(not_taken(&resource, &answer).is_empty());
        assert_eq!(updated(&resource, None).iter().filter(|l| l.state == State::Changed).count(), 2);
    }

    #[test]
    fn signature_warnings_name_the_fix() {
        assert!(signature_warnings(BASE, Some(&format!("{BASE}/"))).is_empty());
        let other = signature_warnings(BASE, Some("https://other.example.com"));
        assert!(other[0].contains("will not verify") && other[0].contains(BASE), "{other:?}");
        assert!(signature_warnings(BASE, None)[0].contains("not set"));
    }
}
