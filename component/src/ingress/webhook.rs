//! Twilio's webhook routes: verify the signature, build the envelope, publish
//! it, and only then answer 200.
//!
//! | route | publishes |
//! | --- | --- |
//! | `POST /twilio/messaging` | an ingress envelope on `messaging` |
//! | `POST /twilio/status` | a status event on `status` |
//! | `POST /twilio/conversations` | `onMessageAdded` as an envelope on `conversations` |
//! | `POST /twilio/events` | an Event Streams batch, event by event ([`event_sink`]) |
//!
//! [`event_sink`]: crate::ingress::event_sink

use std::sync::Arc;

use crate::exports::platform::connector::webhooks::{WebhookRequest, WebhookResponse};
use crate::ingress::consent;
use crate::ingress::envelope::{self, Context, Param, Params};
use crate::ingress::event_streams;
use crate::ingress::signature::{self, SignatureError, SignedContent};
use crate::ingress::signature_settings::{self, SignatureSettings};
use crate::ingress::status_memory::{self, Recorded};
use crate::platform::connector::bus::{self, BusError, BusMessage};
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::metrics;
use crate::shared::accounts::{self, Account, AccountKind, Lookup};
use crate::shared::body::{self, ReadError};
use crate::shared::{clock, settings};
use crate::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};

/// Twilio's bodies are small (a 1600-character body plus parameters); the host
/// enforces its own limit first and answers 413.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The empty TwiML answer: acknowledge, send no reply.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// An HTTP answer.
pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn twiml() -> Self {
        Self { status: 200, content_type: "text/xml", body: EMPTY_TWIML.to_owned() }
    }

    /// 200 with no body (Event Streams reads only the status).
    pub(crate) fn ok() -> Self {
        Self { status: 200, content_type: "text/plain; charset=utf-8", body: String::new() }
    }

    pub(crate) fn error(status: u16, message: impl Into<String>) -> Self {
        let mut body = message.into();
        body.push('\n');
        Self { status, content_type: "text/plain; charset=utf-8", body }
    }

    /// Its headers: the content type and length.
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            ("content-type".to_owned(), self.content_type.as_bytes().to_vec()),
            ("content-length".to_owned(), self.body.len().to_string().into_bytes()),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Messaging,
    Status,
    Conversations,
    Events,
}

/// Why a message was not published.
pub(crate) enum Failure {
    /// It cannot become a message as it is (Twilio must not retry it).
    Malformed(String),
    /// It could not be published now: the answer that says so.
    Answer(Reply),
}

/// A webhook as either entry point hands it over: `wasi:http`'s resources
/// read into it, or the `webhooks` export's record as it came.
pub(crate) struct Webhook {
    method: String,
    /// `http`, `https` or another scheme's name.
    scheme: Option<String>,
    authority: Option<String>,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The body, or the status and answer that refuse it.
    body: Result<Vec<u8>, (u16, &'static str)>,
}

/// `wasi:http/incoming-handler`: the request's resources read into a
/// [`Webhook`], the answer written to the outparam.
pub fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
    let scheme = request.scheme().map(|scheme| match scheme {
        Scheme::Https => "https".to_owned(),
        Scheme::Http => "http".to_owned(),
        Scheme::Other(other) => other,
    });
    let webhook = Webhook {
        method: method_name(request.method()),
        scheme,
        authority: request.authority(),
        path_with_query: request.path_with_query().unwrap_or_else(|| "/".to_owned()),
        // All headers in one host call, rather than one call per header looked at.
        headers: request.headers().entries(),
        body: read_body(&request),
    };
    respond(response_out, answer(&webhook));
}

/// A method as HTTP spells it.
fn method_name(method: Method) -> String {
    let name = match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => return other,
    };
    name.to_owned()
}

/// The `webhooks` export: the request as the host read it, the answer whole.
pub fn handle_whole(request: WebhookRequest) -> WebhookResponse {
    let body = match request.body.len() {
        0..=MAX_BODY_BYTES => Ok(request.body),
        _ => Err((413, "request body too large")),
    };
    let webhook = Webhook {
        method: request.method,
        scheme: Some(request.scheme),
        authority: request.authority,
        path_with_query: request.path_with_query,
        headers: request.headers,
        body,
    };
    let reply = answer(&webhook);
    WebhookResponse { status: reply.status, headers: reply.headers(), body: reply.body.into_bytes() }
}

fn answer(request: &Webhook) -> Reply {
    let path_with_query = request.path_with_query.as_str();
    let path = path_with_query.split('?').next().unwrap_or_default();
    let route = match path {
        "/twilio/messaging" => Route::Messaging,
        "/twilio/status" => Route::Status,
        "/twilio/conversations" => Route::Conversations,
        "/twilio/events" => Route::Events,
        _ => return refuse(Refusal::Route, 404, "no such route", path),
    };
    if request.method != "POST" {
        return refuse(Refusal::Method, 405, "webhooks are POST", path);
    }
    let header = |name: &str| {
        let value = request.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name))?;
        String::from_utf8(value.1.clone()).ok()
    };
    let body = match &request.body {
        Ok(body) => body.as_slice(),
        Err((status, answer)) => return refuse(Refusal::Body, *status, answer, path),
    };
    let url = public_url(request, &header, path_with_query);
    // Twilio's webhooks are forms, named or not; an Event Streams batch is
    // JSON unless it says it is a form.
    let says_form = |ct: String| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded");
    let is_form = match route {
        Route::Events => header("content-type").is_some_and(says_form),
        _ => header("content-type").is_none_or(says_form),
    };
    let params: Vec<Param<'_>> = if is_form { form_urlencoded::parse(body).collect() } else { Vec::new() };
    let content = if is_form { SignedContent::Form(&params) } else { SignedContent::Raw(body) };
    let Some(signature) = header("x-twilio-signature") else {
        return refuse(Refusal::Unsigned, 400, "missing X-Twilio-Signature", path);
    };
    let events = (route == Route::Events && !is_form).then(|| event_streams::read_batch(body));
    let claimed = match &events {
        Some(events) => event_streams::batch_account(events).map(str::to_owned),
        None if is_form => Params(&params).get("AccountSid").map(str::to_owned),
        None => json_account_sid(body),
    };
    // Only a signed request may cost an account lookup.
    let account = match account_of(claimed.as_deref()) {
        Ok(account) => account,
        Err(reply) => return reply,
    };
    let settings = header("x-twilio-webhooks-signature-settings");
    if let Err(error) = verify(&account, &url, content, &signature, settings.as_deref()) {
        let detail = format!("{path} for {}: {error}", shown(&account));
        return refuse(Refusal::Signature, 403, "invalid X-Twilio-Signature", &detail);
    }
    accounts::mark_on_trace(&account);
    match events {
        Some(events) => crate::ingress::event_sink::take(events, &url, &account),
        None if route == Route::Events => {
            refuse(Refusal::ContentType, 415, "Event Streams batches are application/json", path)
        }
        None if !is_form => {
            refuse(Refusal::ContentType, 415, "Twilio webhooks are application/x-www-form-urlencoded", path)
        }
        None => publish(route, Params(&params), &url, &account),
    }
}

/// The account a webhook claims (its `AccountSid`: the form field, the
/// JSON body's, or a batch's first event's), resolved; the default account
/// when it names none. An account this service does not serve is refused
/// with 403, as is one that cannot be looked up because lookups are at their
/// bound (a flood of forged `AccountSid`s); one Twilio could not tell about
/// now, with 503.
fn account_of(claimed: Option<&str>) -> Result<Arc<Account>, Reply> {
    match accounts::resolve(claimed) {
        Lookup::Found(account) => Ok(account),
        Lookup::Unknown => {
            let answer = "the webhook's AccountSid is not an account this service serves";
            Err(refuse(Refusal::UnknownAccount, 403, answer, &shown_claim(claimed)))
        }
        Lookup::Refused(reason) => {
            let answer = format!("the webhook's AccountSid cannot be checked: {reason}");
            Err(refuse(Refusal::UnknownAccount, 403, &answer, &shown_claim(claimed)))
        }
        Lookup::Unavailable(reason) => {
            let line = format!("cannot look up the account of a webhook: {reason}");
            log::log_bounded(Level::Warn, "account-lookup-unavailable", &line);
            Err(Reply::error(503, "the webhook's account cannot be looked up now"))
        }
    }
}

/// A refused webhook's claimed account, for its log line: the claim is the
/// sender's text, so it is shown only when it has a sid's shape.
fn shown_claim(claimed: Option<&str>) -> String {
    match claimed {
        Some(sid) if crate::shared::rest::is_sid(sid, "AC") => format!("AccountSid {sid}"),
        _ => "a malformed AccountSid".to_owned(),
    }
}

/// `AccountSid` (or `accountSid`, `account_sid`) at the top of a JSON body.
fn json_account_sid(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["AccountSid", "accountSid", "account_sid"].iter().find_map(|key| value.get(key)?.as_str().map(str::to_owned))
}

/// How an account is named in a log line: its sid, or `the default account`.
fn shown(account: &Account) -> &str {
    if account.sid.is_empty() { "the default account" } else { &account.sid }
}

/// Verifies a webhook with the shared key its settings header names, or,
/// without that header, with the account's Auth Tokens. A request that names
/// a key is checked with that key and algorithm only: it never falls back
/// on an Auth Token, and an unknown key or algorithm is refused.
fn verify(
    account: &Account,
    url: &str,
    content: SignedContent<'_>,
    signature: &str,
    settings_header: Option<&str>,
) -> Result<(), String> {
    match signature_settings::parse(settings_header).map_err(|error| error.to_string())? {
        Some(settings) => verify_shared_key(account, settings, url, content, signature),
        None => verify_auth_token(account, url, content, signature).map_err(|error| error.to_string()),
    }
}

/// Verifies with the account's shared key `settings` names (counted as
/// `signature-shared-key`). Key ids are not secret; the comparison of the
/// signature is constant-time.
fn verify_shared_key(
    account: &Account,
    settings: SignatureSettings<'_>,
    url: &str,
    content: SignedContent<'_>,
    signature: &str,
) -> Result<(), String> {
    let Some(key) = account.shared_keys.iter().find(|key| key.id == settings.key_id) else {
        return Err("the signature settings name a shared key this account does not hold".to_owned());
    };
    signature::validate_with(settings.algorithm, key.secret.as_bytes(), url, content, Some(signature))
        .map_err(|error| format!("{error} (shared key {})", key.id))?;
    metrics::count("signature-shared-key", 1);
    Ok(())
}

/// Verifies against `account`'s Auth Tokens only (primary, then the
/// secondary while one is rotated in), so no account's token ever verifies
/// a webhook that claims another. Every token is tried: the time taken does
/// not say which matched. The match is counted (`signature-primary`/
/// `-secondary`). A subaccount's token old enough to have been rotated is
/// fetched again once before the webhook is refused.
fn verify_auth_token(
    account: &Account,
    url: &str,
    content: SignedContent<'_>,
    signature: &str,
) -> Result<(), SignatureError> {
    if account.auth_tokens.is_empty() {
        log::log(Level::Error, &format!("cannot verify webhooks for {}: no Auth Token is set", shown(account)));
        return Err(SignatureError::Mismatch);
    }
    let outcomes: Vec<Result<(), SignatureError>> = account
        .auth_tokens
        .iter()
        .map(|token| signature::validate(token.as_bytes(), url, content, Some(signature)))
        .collect();
    match outcomes.iter().position(Result::is_ok) {
        Some(0) => metrics::count("signature-primary", 1),
        Some(_) => metrics::count("signature-secondary", 1),
        None if account.kind == AccountKind::Subaccount
            && account.token_age_seconds >= accounts::REFRESH_AFTER_SECONDS =>
        {
            return match accounts::refresh(account) {
                Lookup::Found(fresh) if fresh.auth_tokens != account.auth_tokens => {
                    verify_auth_token(&fresh, url, content, signature)
                }
                _ => Err(SignatureError::Mismatch),
            };
        }
        None => return Err(outcomes.into_iter().find_map(Result::err).unwrap_or(SignatureError::Mismatch)),
    }
    Ok(())
}

/// Whether a Conversations event is the service's own message coming back
/// (its `Author` is `TWILIO_IDENTITY`), which a bot must not hear: skipped
/// and counted (`echo-skipped`) unless `TWILIO_SKIP_OWN_MESSAGES` is false.
fn is_own_message(params: Params<'_>) -> bool {
    let Some(identity) = settings::own_identity_to_skip() else { return false };
    let own = params.get("EventType") == Some("onMessageAdded") && params.get("Author") == Some(identity.as_str());
    if own {
        metrics::count("echo-skipped", 1);
    }
    own
}

fn publish(route: Route, params: Params<'_>, url: &str, account: &Account) -> Reply {
    match deliver(route, params, url, account) {
        // Status and Conversations webhooks ignore the body: the same empty TwiML serves all three.
        Ok(()) => Reply::twiml(),
        Err(Failure::Malformed(reason)) => Reply::error(400, reason),
        Err(Failure::Answer(reply)) => reply,
    }
}

/// Publishes what a webhook (or an event read as one) carries, each message
/// durable before this returns; on a failure Twilio retries, and what was
/// already published is a duplicate then.
pub(crate) fn deliver(route: Route, params: Params<'_>, url: &str, account: &Account) -> Result<(), Failure> {
    if matches!(route, Route::Conversations) && is_own_message(params) {
        return Ok(());
    }
    for (stream, key, message) in &messages_for(route, params, url, account)? {
        match bus::publish(stream, Some(key), message) {
            Ok(_) => {}
            // A deployment without a consent topic still takes the message itself.
            Err(BusError::NotAllowed(_)) if *stream == "consent" => {
                log::log(
                    Level::Warn,
                    &format!("{key}: no consent topic is granted; the consent event is not published"),
                );
            }
            Err(error) => return Err(Failure::Answer(refused(stream, key, error))),
        }
    }
    if matches!(route, Route::Messaging) {
        crate::shared::whatsapp_window::record_inbound(params, account);
    }
    Ok(())
}

/// What a webhook publishes: its envelope or status event, and a consent
/// event when it carries one; nothing for Conversations events other than
/// `onMessageAdded`.
fn messages_for(
    route: Route,
    params: Params<'_>,
    url: &str,
    account: &Account,
) -> Result<Vec<(&'static str, String, BusMessage)>, Failure> {
    // One clock read per webhook: the envelope and its consent event share it.
    let now = clock::now_rfc3339();
    let context = || Context { id: clock::uuid_v4(), received_at: now.clone() };
    let malformed = |error: envelope::EnvelopeError| Failure::Malformed(error.to_string());
    let (mut outgoing, consent) = match route {
        Route::Messaging => {
            let mut envelope = envelope::inbound_message(params, &context()).map_err(malformed)?;
            crate::ingress::media_fetch::fetch_all(&mut envelope.media, account);
            let main = ("messaging", envelope.provider_message_id.clone(), BusMessage::Envelope(envelope));
            (vec![main], consent::from_inbound(params, &now))
        }
        Route::Conversations => {
            let media_base = settings::media_content_base();
            let envelope = envelope::conversation_event(params, &context(), &media_base).map_err(malformed)?;
            let main = envelope.map(|e| ("conversations", e.provider_message_id.clone(), BusMessage::Envelope(e)));
            (main.into_iter().collect(), None)
        }
        Route::Status => {
            let egress_id = signature::query_param(url, "egress_id");
            let mut event = envelope::status_callback(params, egress_id, now.clone()).map_err(malformed)?;
            let sid = event.provider_message_id.clone().unwrap_or_default();
            match status_memory::record(&sid, &event.status, &event.occurred_at) {
                Ok(Recorded::Forward(previous)) => event.previous_status = previous,
                Ok(Recorded::Unordered) => {}
                Ok(Recorded::Backward) => {
                    // Acknowledged, so Twilio does not retry it; counted, not published.
                    metrics::count("status-out-of-order", 1);
                    return Ok(Vec::new());
                }
                Err(reason) => {
                    log::log(Level::Error, &format!("{sid}: {reason}"));
                    return Err(Failure::Answer(Reply::error(503, "the message's status cannot be checked now")));
                }
            }
            let key = envelope::status_dedup_key(&event).unwrap_or_default();
            (vec![("status", key, BusMessage::Status(event))], consent::from_status_callback(params, &now))
        }
        // A batch is taken event by event, each as the route it stands for.
        Route::Events => return Err(Failure::Malformed("an Event Streams batch is not one message".to_owned())),
    };
    if let Some(event) = consent {
        outgoing.push(("consent", consent::dedup_key(&event), BusMessage::Consent(event)));
    }
    Ok(outgoing)
}

/// The answer to a webhook whose message the bus did not take.
pub(crate) fn refused(stream: &str, key: &str, error: BusError) -> Reply {
    match error {
        BusError::Unavailable(reason) => {
            log::log(Level::Error, &format!("bus unavailable for {key}: {reason}"));
            Reply::error(503, "the bus cannot take the message now")
        }
        BusError::NotAllowed(reason) => {
            log::log(Level::Error, &format!("bus refused stream {stream}: {reason}"));
            Reply::error(500, "the connector may not publish this message")
        }
    }
}

/// The URL Twilio signed: the configured public base, else the forwarded
/// scheme and host (the host passes those headers only when it trusts them),
/// else the request as received.
fn public_url(request: &Webhook, header: &dyn Fn(&str) -> Option<String>, path_with_query: &str) -> String {
    if let Some(base) = settings::webhook_base_url() {
        return format!("{base}{path_with_query}");
    }
    let scheme = header("x-forwarded-proto")
        .and_then(|v| v.split(',').next().map(|s| s.trim().to_owned()))
        .or_else(|| request.scheme.clone())
        .unwrap_or_else(|| "http".to_owned());
    let host = header("x-forwarded-host")
        .and_then(|v| v.split(',').next().map(|s| s.trim().to_owned()))
        .or_else(|| request.authority.clone())
        .or_else(|| header("host"))
        .unwrap_or_default();
    format!("{scheme}://{host}{path_with_query}")
}

/// The body, or the status and answer that refuse it.
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, (u16, &'static str)> {
    let incoming = request.consume().map_err(|()| (400, "request body unavailable"))?;
    body::read_all(incoming, MAX_BODY_BYTES).map_err(|e| match e {
        ReadError::TooLarge => (413, "request body too large"),
        ReadError::Unavailable => (400, "request body unavailable"),
        ReadError::Failed(_) => (400, "request body unreadable"),
    })
}

/// Why a webhook was refused before anything was published.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Route,
    Method,
    Body,
    Unsigned,
    Signature,
    ContentType,
    UnknownAccount,
}

impl Refusal {
    /// Its metrics event, also the key of its bounded log line.
    fn event(self) -> &'static str {
        match self {
            Self::Route => "webhook-refused-route",
            Self::Method => "webhook-refused-method",
            Self::Body => "webhook-refused-body",
            Self::Unsigned => "webhook-refused-unsigned",
            Self::Signature => "webhook-refused-signature",
            Self::ContentType => "webhook-refused-content-type",
            // The name dashboards have counted since accounts came.
            Self::UnknownAccount => "webhook-unknown-account",
        }
    }
}

/// Refuses a webhook: counted by reason, and logged through the host's
/// bounded log (a line a second per reason at most, with the count of those
/// left out), so a flood of forged requests is not a flood of log lines.
/// `detail` says where; it never holds the request's signature or body.
fn refuse(reason: Refusal, status: u16, answer: &str, detail: &str) -> Reply {
    metrics::count(reason.event(), 1);
    log::log_bounded(Level::Warn, reason.event(), &format!("refused webhook ({status} {answer}): {detail}"));
    Reply::error(status, answer)
}

fn respond(response_out: ResponseOutparam, reply: Reply) {
    // Both headers in one host call; these names and values are always valid.
    let headers = Fields::from_list(&reply.headers()).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(reply.status);
    let Ok(body) = response.body() else {
        ResponseOutparam::set(response_out, Ok(response));
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    // The status is sent; a client gone mid-body has nothing left to be told.
    let _ = body::write_all(&body, reply.body.as_bytes());
    let _ = OutgoingBody::finish(body, None);
}
