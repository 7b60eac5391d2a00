//! A local OTLP/HTTP receiver: what an OpenTelemetry Collector would be
//! given, decoded with OpenTelemetry's own protobuf definitions
//! (`opentelemetry-proto`). It keeps every span, and every byte it was sent,
//! so a test can look for what must never leave the service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::net::TcpListener;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the resource it came with.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// String, integer and boolean attributes, as text.
    pub attributes: Vec<(String, String)>,
    /// 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// 2 when the span says it failed.
    pub status: i32,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    raw: Vec<u8>,
    requests: usize,
}

/// The receiver, listening on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| take(shared.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received, task }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for a service exporting here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().expect("receiver").spans.clone()
    }

    /// Every byte every export request carried.
    pub fn raw(&self) -> Vec<u8> {
        self.received.lock().expect("receiver").raw.clone()
    }

    /// Waits (at most `within`) until a span passes `wanted`; returns it.
    pub async fn wait_for(&self, within: Duration, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(span) = self.spans().into_iter().find(&wanted) {
                return span;
            }
            assert!(tokio::time::Instant::now() < deadline, "no such span within {within:?}; got {:#?}", self.spans());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn take(
    shared: Arc<Mutex<Received>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<http_body_util::Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let decoded = (path == "/v1/traces").then(|| ExportTraceServiceRequest::decode(body.as_ref()).ok()).flatten();
    let status = if decoded.is_some() { 200 } else { 400 };
    let mut received = shared.lock().expect("receiver");
    received.requests += 1;
    received.raw.extend_from_slice(&body);
    if let Some(request) = decoded {
        received.spans.extend(flatten(request));
    }
    let answer = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("response");
    Ok(answer)
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let service = text_attributes(&resource)
            .into_iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: text_attributes(&span.attributes),
                    kind: span.kind,
                    status: span.status.map_or(0, |s| s.code),
                });
            }
        }
    }
    spans
}

fn text_attributes(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
