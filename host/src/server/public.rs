//! The public listener: the connectors' webhook routes (as architecture.yaml
//! declares them) and health.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{AppState, Body, full, text};
use crate::connectors::ConnectorSlot;
use crate::runtime::HandleError;
use crate::telemetry::TraceContext;
use crate::telemetry::metrics;
use crate::telemetry::spans::{self, Kind, Start};

pub async fn handle(state: &AppState, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let path = request.uri().path().to_owned();
    // The label is a configured route or a fixed name: bounded, whatever the path.
    let (route, label) = match path.as_str() {
        "/healthz" | "/readyz" => (None, path.as_str()),
        _ => match state.connectors.route(&path) {
            Some((slot, route)) => (Some(slot), route),
            None => (None, "other"),
        },
    };
    // Health checks and unknown paths are no work to trace: no sampling
    // decision, and a debug span (exported spans are info).
    let (start, span) = match route {
        Some(slot) => {
            let start = spans::start(None);
            let span = webhook_span(&start, &slot.config.name, request.method().as_str(), label, peer);
            (start, span)
        }
        None => (Start::Traced, tracing::debug_span!("request", route = label, %peer)),
    };
    let response = async {
        let response = match (path.as_str(), route) {
            ("/healthz", _) => text(StatusCode::OK, "ok"),
            ("/readyz", _) => readiness(state).await,
            (_, Some(slot)) => to_connector(state, slot, request, &path, peer).await,
            (_, None) => text(StatusCode::NOT_FOUND, "no such route"),
        };
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span.clone());
    let response = TraceContext::carry(start.carried(), response).await;
    if route.is_some() {
        record_answer(&span, response.status());
    }
    metrics::http_request(label, response.status().as_u16(), started.elapsed());
    response
}

/// The span of one webhook, as OpenTelemetry's HTTP server conventions name
/// it: the connector's publishes and outbound calls are its children, and the
/// connector may add attributes of its own (the account, through WIT `trace`).
fn webhook_span(start: &Start, connector: &str, method: &str, route: &str, peer: SocketAddr) -> tracing::Span {
    use tracing::field::Empty;
    let span = spans::service_span!(
        start, None, "webhook", connector, route, %peer, otel.name = Empty, otel.kind = Empty, otel.status_code = Empty
    );
    spans::describe(
        &span,
        Kind::Server,
        || format!("{method} {route}"),
        || vec![("http.request.method", method.to_owned().into()), ("http.route", route.to_owned().into())],
    );
    span
}

/// What came of a webhook, on its span: the status, and the outcome in a word.
fn record_answer(span: &tracing::Span, status: StatusCode) {
    let outcome = match status.as_u16() {
        200..=299 => "accepted",
        400..=499 => "refused",
        _ => "failed",
    };
    spans::attributes(span, || {
        vec![("http.response.status_code", i64::from(status.as_u16()).into()), ("outcome", outcome.into())]
    });
    if status.is_server_error() {
        spans::failed(span);
    }
}

/// Not ready once shutdown began. Otherwise ready when every enabled
/// connector is loaded (none enabled is ready too) and a webhook can be made
/// durable: on the bus, or in the spool while the bus is away ("degraded").
/// A spool that cannot take a write, with the bus away, is not ready.
async fn readiness(state: &AppState) -> Response<Body> {
    if state.draining.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let enabled = state.config.enabled_connectors().count();
    if state.connectors.slots().len() < enabled {
        return text(StatusCode::SERVICE_UNAVAILABLE, "a connector is not loaded");
    }
    let bus = match tokio::time::timeout(Duration::from_secs(2), state.bus.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer".to_owned()),
    };
    let spooled = state.spool.depth();
    let Some(bus) = bus else {
        return match spooled {
            0 => text(StatusCode::OK, "ready"),
            _ => text(StatusCode::OK, &format!("degraded: {spooled} spooled publishes going to the bus")),
        };
    };
    // Only with the bus away does the spool's room matter.
    match state.spool.can_take() {
        Err(spool) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("bus: {bus}; spool: {spool}")),
        Ok(()) => text(StatusCode::OK, &format!("degraded: bus: {bus}; spooling ({spooled} waiting)")),
    }
}

/// Reads the body within the size and time limits, then hands the request to
/// the connector that owns the route.
async fn to_connector(
    state: &AppState,
    slot: &ConnectorSlot,
    request: Request<Incoming>,
    path: &str,
    peer: SocketAddr,
) -> Response<Body> {
    let limits = &state.config.limits;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let (mut parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
    };
    if !state.config.server.trust_forwarded_headers {
        // Only a proxy the operator runs may say what the public URL was.
        for name in ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded"] {
            parts.headers.remove(name);
        }
    }
    let connector = slot.current();
    // In one call when the component offers it, else through `wasi:http`.
    let answered = if connector.answers_whole() {
        connector.handle_whole(parts, bytes).await.map(|response| response.map(full))
    } else {
        let request = Request::from_parts(parts, full(bytes));
        connector.handle(request).await.map(|response| response.map(|body| body.boxed_unsync()))
    };
    match answered {
        Ok(response) => {
            // Connectors answer 400 to an unsigned request and 403 to a forged one.
            if matches!(response.status(), StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST) {
                metrics::webhook_rejected(connector.name(), response.status().as_u16());
            }
            response
        }
        Err(HandleError::Busy(busy)) => {
            tracing::warn!(connector = connector.name(), path, %peer, "{busy}: asking the caller to retry");
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "busy: retry shortly");
            response.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
            response
        }
        Err(HandleError::Failed(e)) => {
            tracing::error!(connector = connector.name(), path, %peer, error = %e, "connector failed the request");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
