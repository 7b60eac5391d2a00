//! The admin listener (loopback by default): metrics, connector status,
//! egress enqueueing and access tokens. Its JSON answers are the types below.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{AppState, Body, full, json, text};
use crate::config::Secret;
use crate::connectors::{ConnectorSlot, ReloadOutcome};
use crate::egress::EnqueueError;
use crate::messages::EgressMessage;
use crate::runtime::CallFailure;
use crate::runtime::bindings::{TokenError, TokenRequest};
use crate::telemetry::TraceContext;
use crate::telemetry::bounded_log::BoundedLog;
use crate::telemetry::metrics;

/// The log lines of refused admin requests, bounded as the connectors' are.
static REFUSALS: std::sync::LazyLock<BoundedLog> = std::sync::LazyLock::new(BoundedLog::default);

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// One connector in `GET /admin/connectors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorView {
    /// Its name.
    pub name: String,
    /// Where its component came from.
    pub component: String,
    /// The version the component reports.
    pub version: String,
    /// The SHA-256 of the component's bytes.
    pub content_hash: String,
    /// Whether the compiled form came from the compile cache.
    pub compiled_from_cache: bool,
    /// Where the compiled form came from: `precompiled` (when the binary was
    /// built), `cache` (the compile cache) or `compiled` (at load).
    pub compiled: crate::runtime::Origin,
    /// When this version was loaded (Unix seconds).
    pub loaded_at: u64,
    /// Swaps since start.
    pub swap_count: u64,
    /// The last refused swap, if any.
    pub last_refusal: Option<Refusal>,
    /// Whether it exports token issuing.
    pub issues_tokens: bool,
    /// Whether it exports the webhook simulator.
    pub simulates_webhooks: bool,
    /// Whether it takes webhooks in one call (the `webhooks` export) rather
    /// than through `wasi:http/incoming-handler`.
    pub answers_whole: bool,
    /// Its credential sets as last read, when it is granted them.
    #[serde(default)]
    pub credential_sets: Option<CredentialSetsView>,
}

/// A connector's credential sets in `GET /admin/connectors`: how many, and
/// the folders left out, by path and setting (never a value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialSetsView {
    /// Sets loaded.
    pub loaded: usize,
    /// Times the directory was read since start (at start, then on each change).
    pub readings: u64,
    /// `path: what is wrong`, one per problem.
    pub problems: Vec<String>,
}

/// A component that was refused: when (Unix seconds) and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// When (Unix seconds).
    pub at: u64,
    /// Why.
    pub reason: String,
}

/// `GET /admin/connectors` and `POST /admin/reload` answer a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorList<T> {
    /// The connectors.
    pub connectors: Vec<T>,
}

/// What a reload did to one connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The connector.
    pub name: String,
    /// `swapped`, `unchanged` or `refused`.
    pub outcome: String,
    /// Was serving this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Now serves this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why nothing was swapped, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/messages` answers the id the message is known by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enqueued {
    /// The egress id (status events name it).
    pub id: String,
}

/// `POST /v1/tokens` takes…
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Who the token is for (the connector's default when absent).
    #[serde(default)]
    pub identity: Option<String>,
    /// Lifetime in seconds (the connector's default when absent).
    #[serde(default)]
    pub ttl: Option<u32>,
    /// The provider account it is for (the connector's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
}

/// …and answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The signed token.
    pub token: String,
    /// Who it is for.
    pub identity: String,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

/// Answers one request on the admin listener.
pub async fn handle(state: &Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    // `serve` always has a token (ADMIN_TOKEN, or the one it generated): a
    // listener without one refuses everything rather than serve it openly.
    let authorized = state.config.server.admin_token.as_ref().is_some_and(|token| bearer_matches(token, &request));
    if !authorized {
        // Never the presented value: it may be a real token sent to the wrong
        // place. A line a second at most: refusals are counted in metrics.
        if let Some(left_out) = REFUSALS.admit("admin-unauthorized", std::time::Instant::now()) {
            tracing::warn!(route = %path, left_out, "admin request without the right bearer token");
        }
        metrics::admin_auth_failure();
        return unauthorized();
    }
    if let Some(topic) = super::events::topic_of(&path) {
        return match *request.method() {
            Method::GET => super::events::stream(state, topic, &request).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        };
    }
    if let Some(id) = super::cancel::target(&path) {
        return match *request.method() {
            Method::POST => super::cancel::cancel(state, &request, id).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        };
    }
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => metrics_text(),
        (Method::GET, "/admin/connectors") => connectors(state),
        (Method::POST, "/admin/reload") => reload(state, &request).await,
        (Method::POST, "/v1/messages") => enqueue(state, request).await,
        (Method::POST, "/v1/tokens") => token(state, request).await,
        (Method::POST, "/v1/deadletters/redrive") => redrive(state, request).await,
        (
            _,
            "/metrics"
            | "/admin/connectors"
            | "/admin/reload"
            | "/v1/messages"
            | "/v1/tokens"
            | "/v1/deadletters/redrive",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// The metrics-only listener: `GET /metrics`, nothing else, no token.
pub fn metrics_only(request: &Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => metrics_text(),
        (_, "/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "this listener serves /metrics only"),
    }
}

fn metrics_text() -> Response<Body> {
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(full(metrics::render()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "metrics"))
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in
/// constant time.
fn bearer_matches(token: &Secret, request: &Request<Incoming>) -> bool {
    let presented = request.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    presented.and_then(|value| value.strip_prefix(b"Bearer ")).is_some_and(|value| token.matches(value))
}

fn unauthorized() -> Response<Body> {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "this admin listener needs Authorization: Bearer ADMIN_TOKEN (or the token in DATA_DIR/admin-token)",
    );
    response.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    response
}

fn view(slot: &ConnectorSlot) -> ConnectorView {
    let current = slot.current();
    let status = slot.status();
    ConnectorView {
        name: slot.config.name.clone(),
        component: slot.config.component.to_string(),
        version: current.version().to_owned(),
        content_hash: current.content_hash().to_owned(),
        compiled_from_cache: current.origin() == crate::runtime::Origin::Cache,
        compiled: current.origin(),
        loaded_at: status.loaded_at,
        swap_count: status.swaps,
        last_refusal: status.last_refusal.map(|(at, reason)| Refusal { at, reason }),
        issues_tokens: current.issues_tokens(),
        credential_sets: slot.grants().credential_sets.as_ref().map(|sets| {
            let summary = sets.summary();
            CredentialSetsView {
                loaded: summary.loaded,
                readings: summary.readings,
                problems: summary.problems.iter().map(ToString::to_string).collect(),
            }
        }),
        simulates_webhooks: current.simulates_webhooks(),
        answers_whole: current.answers_whole(),
    }
}

fn connectors(state: &AppState) -> Response<Body> {
    let connectors = state.connectors.slots().iter().map(|slot| view(slot)).collect();
    json(StatusCode::OK, &ConnectorList { connectors })
}

fn report(name: String, outcome: ReloadOutcome) -> ReloadReport {
    let (outcome, from, to, reason) = match outcome {
        ReloadOutcome::Swapped { from, to } => ("swapped", Some(from), Some(to), None),
        ReloadOutcome::Unchanged => ("unchanged", None, None, None),
        ReloadOutcome::Refused(reason) => ("refused", None, None, Some(reason)),
    };
    ReloadReport { name, outcome: outcome.to_owned(), from, to, reason }
}

/// `POST /admin/reload[?connector=NAME]`: swaps in the component files as they are now.
async fn reload(state: &AppState, request: &Request<Incoming>) -> Response<Body> {
    let name = super::query_param(request, "connector");
    if let Some(name) = &name
        && state.connectors.by_name(name).is_none()
    {
        return text(StatusCode::NOT_FOUND, "no such connector");
    }
    let outcomes = state.connectors.reload(name.as_deref()).await;
    let refused = outcomes.iter().any(|(_, o)| matches!(o, ReloadOutcome::Refused(_)));
    let connectors = outcomes.into_iter().map(|(name, outcome)| report(name, outcome)).collect();
    let status = if refused { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    json(status, &ConnectorList { connectors })
}

/// The connector named by `?connector=`, else the only one loaded.
pub(super) fn pick<'a>(state: &'a AppState, request: &Request<Incoming>) -> Result<&'a ConnectorSlot, Response<Body>> {
    state
        .connectors
        .pick(super::query_param(request, "connector").as_deref())
        .map(AsRef::as_ref)
        .map_err(|e| text(StatusCode::NOT_FOUND, &format!("{e} (with ?connector=)")))
}

async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, Response<Body>> {
    let body = http_body_util::Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| text(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))
}

async fn enqueue(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let slot = match pick(state, &request) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    // A producer that traces gives its context; the send continues that trace.
    let headers = request.headers();
    let came_with = TraceContext::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let message: EgressMessage = match read_json(request).await {
        Ok(message) => message,
        Err(response) => return response,
    };
    match crate::egress::enqueue(slot, message, came_with.as_ref()).await {
        Ok(id) => json(StatusCode::ACCEPTED, &Enqueued { id }),
        Err(EnqueueError::Invalid(reason)) => text(StatusCode::BAD_REQUEST, &reason),
        Err(e @ EnqueueError::Connector(_)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(EnqueueError::Bus(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn token(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let slot = match pick(state, &request) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let body: TokenBody = match read_json(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = TokenRequest { identity: body.identity, ttl_seconds: body.ttl, account: body.account_sid };
    match slot.current().issue_token(&request).await {
        Ok(token) => json(
            StatusCode::OK,
            &IssuedToken { token: token.jwt, identity: token.identity, expires_at: token.expires_at },
        ),
        Err(CallFailure::Refused(TokenError::InvalidRequest(reason))) => text(StatusCode::BAD_REQUEST, &reason),
        Err(CallFailure::Refused(TokenError::NotConfigured(reason))) => text(StatusCode::SERVICE_UNAVAILABLE, &reason),
        Err(e @ CallFailure::NotExported(_)) => text(StatusCode::NOT_IMPLEMENTED, &e.to_string()),
        Err(CallFailure::Broken(e)) => {
            tracing::error!(error = %e, "issue-token failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `POST /v1/deadletters/redrive`: dead letters back on their egress topic
/// (a [`RedriveRequest`] in, a [`RedriveReport`] out), as `ingress-egress redrive`.
async fn redrive(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    use crate::egress::redrive::{self, RedriveError, RedriveRequest};
    let body: RedriveRequest = match read_json(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let egress_topic = match redrive::egress_topic_of(&state.config.connectors, &body.topic) {
        Ok(topic) => topic,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match redrive::redrive(state.bus.as_ref(), egress_topic, &body).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e @ RedriveError::Invalid(_)) => text(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ RedriveError::Bus(_)) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
