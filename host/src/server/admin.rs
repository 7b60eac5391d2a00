//! The admin listener (loopback by default): metrics, connector status,
//! egress enqueueing and access tokens.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{AppState, Body, full, json, text};
use crate::bus::wire::EgressRequest;
use crate::connectors::{ConnectorSlot, ReloadOutcome};
use crate::runtime::bindings::{TokenError, TokenRequest};
use crate::telemetry::metrics;

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 1 << 20;

pub async fn handle(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(full(metrics::render()))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "metrics")),
        (Method::GET, "/admin/connectors") => connectors(state),
        (Method::POST, "/admin/reload") => reload(state, &request).await,
        (Method::POST, "/v1/messages") => enqueue(state, request).await,
        (Method::POST, "/v1/tokens") => token(state, request).await,
        (_, "/metrics" | "/admin/connectors" | "/admin/reload" | "/v1/messages" | "/v1/tokens") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn connectors(state: &AppState) -> Response<Body> {
    let list: Vec<_> = state.connectors.slots().iter().map(|slot| slot.describe()).collect();
    json(StatusCode::OK, &json!({ "connectors": list }))
}

/// `POST /admin/reload[?connector=NAME]`: swaps in the component files as they are now.
async fn reload(state: &AppState, request: &Request<Incoming>) -> Response<Body> {
    let name = query_connector(request);
    if let Some(name) = &name
        && state.connectors.by_name(name).is_none()
    {
        return text(StatusCode::NOT_FOUND, "no such connector");
    }
    let outcomes = state.connectors.reload(name.as_deref()).await;
    let refused = outcomes.iter().any(|(_, o)| matches!(o, ReloadOutcome::Refused(_)));
    let list: Vec<_> = outcomes
        .into_iter()
        .map(|(name, outcome)| match outcome {
            ReloadOutcome::Swapped { from, to } => json!({"name": name, "outcome": "swapped", "from": from, "to": to}),
            ReloadOutcome::Unchanged => json!({"name": name, "outcome": "unchanged"}),
            ReloadOutcome::Refused(reason) => json!({"name": name, "outcome": "refused", "reason": reason}),
        })
        .collect();
    let status = if refused { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    json(status, &json!({ "connectors": list }))
}

fn query_connector(request: &Request<Incoming>) -> Option<String> {
    request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "connector").map(|(_, v)| v.into_owned())
    })
}

/// The connector named by `?connector=`, else the only one loaded.
fn pick<'a>(state: &'a AppState, request: &Request<Incoming>) -> Result<&'a ConnectorSlot, Response<Body>> {
    let wanted = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "connector").map(|(_, v)| v.into_owned())
    });
    let slots = state.connectors.slots();
    let found = match wanted {
        Some(name) => state.connectors.by_name(&name),
        None if slots.len() == 1 => slots.first(),
        None => None,
    };
    found.map(AsRef::as_ref).ok_or_else(|| text(StatusCode::NOT_FOUND, "no such connector (name it with ?connector=)"))
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
    let message: EgressRequest = match read_json(request).await {
        Ok(message) => message,
        Err(response) => return response,
    };
    match crate::egress::enqueue(state.bus.as_ref(), &slot.config, message).await {
        Ok(id) => json(StatusCode::ACCEPTED, &json!({ "id": id })),
        Err(crate::egress::EnqueueError::Invalid(reason)) => text(StatusCode::BAD_REQUEST, &reason),
        Err(crate::egress::EnqueueError::Bus(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    ttl: Option<u32>,
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
    let connector = slot.current();
    match connector.issue_token(TokenRequest { identity: body.identity, ttl_seconds: body.ttl }).await {
        Ok(Ok(token)) => json(
            StatusCode::OK,
            &json!({ "token": token.jwt, "identity": token.identity, "expires_at": token.expires_at }),
        ),
        Ok(Err(TokenError::InvalidRequest(reason))) => text(StatusCode::BAD_REQUEST, &reason),
        Ok(Err(TokenError::NotConfigured(reason))) => text(StatusCode::SERVICE_UNAVAILABLE, &reason),
        Err(e) => {
            tracing::error!(error = %e, "issue-token failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
