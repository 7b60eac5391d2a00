//! `GET /v1/topics/{topic}/events`: a topic as Server-Sent Events, for
//! consumers that speak HTTP rather than the bus's own protocol.
//!
//! Each message is one event whose id is its bus sequence. A consumer that
//! reconnects with `Last-Event-ID` (browsers' EventSource does so by itself)
//! resumes right after the last event it saw: no gap, no duplicate. Without
//! one, `?from=start` replays what the bus retains; the default is live.
//! With `?headers=true` each event's data is the message with its headers
//! (its trace context), as `tail --headers` prints it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

use super::{AppState, Body, text};
use crate::bus::Stored;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The topic of a `/v1/topics/{topic}/events` path.
pub fn topic_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/topics/")?.strip_suffix("/events").filter(|topic| !topic.is_empty() && !topic.contains('/'))
}

/// Streams `topic` (one of the loaded connectors' topics) until the client
/// goes or the service stops.
pub async fn stream(state: &Arc<AppState>, topic: &str, request: &Request<Incoming>) -> Response<Body> {
    let known = state.connectors.slots().iter().any(|slot| slot.config.topics.values().any(|t| t == topic));
    if !known {
        return text(StatusCode::NOT_FOUND, "no connector has this topic");
    }
    let cursor = match start_after(state, topic, request).await {
        Ok(cursor) => cursor,
        Err(response) => return response,
    };
    let with_headers = super::query_param(request, "headers").as_deref() == Some("true");
    let stop = state.shutdown.clone();
    let batches = crate::bus::follow(state.bus.clone(), topic.to_owned(), cursor);
    let frames = futures_util::stream::unfold((Box::pin(batches), stop), move |(mut batches, stop)| async move {
        let next = stop.run_until_cancelled(tokio::time::timeout(KEEP_ALIVE, batches.next())).await?;
        let chunk = match next {
            Err(_idle) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Some(Ok(batch))) => encode(&batch, with_headers),
            // The bus failed or ended: close; the client resumes from its last id.
            Ok(Some(Err(_)) | None) => return None,
        };
        Some((Ok(Frame::data(chunk)), (batches, stop)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "events"))
}

/// The sequence to start after: `Last-Event-ID` (header, or the query's
/// `last_event_id`), else 0 with `from=start`, else the newest (live).
async fn start_after(state: &AppState, topic: &str, request: &Request<Incoming>) -> Result<i64, Response<Body>> {
    let param = |name: &str| super::query_param(request, name);
    let last_id = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(id) = last_id.or_else(|| param("last_event_id")) {
        return id.trim().parse::<i64>().map_err(|_| text(StatusCode::BAD_REQUEST, "Last-Event-ID is not an event id"));
    }
    match param("from").as_deref() {
        Some("start") => Ok(0),
        None | Some("now") => state
            .bus
            .last_seq(topic)
            .await
            .map_err(|e| text(StatusCode::SERVICE_UNAVAILABLE, &format!("the bus did not answer: {e}"))),
        Some(_) => Err(text(StatusCode::BAD_REQUEST, "from is start or now")),
    }
}

/// Messages as events: `id:` their sequence, one `data:` line per payload
/// line (the payload with its headers, `with_headers`).
fn encode(batch: &[Stored], with_headers: bool) -> Bytes {
    let mut out = Vec::new();
    for message in batch {
        out.extend_from_slice(format!("id: {}\n", message.seq).as_bytes());
        let data = if with_headers { message.with_headers() } else { message.payload.clone() };
        for line in data.split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}
