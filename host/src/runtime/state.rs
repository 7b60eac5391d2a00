//! The data of one connector instance's store, and the host side of every
//! interface the connector imports.
//!
//! WASI gets nothing: no environment, no arguments, no preopened directories,
//! no sockets. `wasi:http` outbound goes through [`OutboundPolicy`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::platform::connector::{
    blobs, bus, cache, config, credential_sets, log, metrics as counters, secrets, state as memory, trace, types,
};
use super::call_trace::{CallTrace, GuestSpan};
use super::grants::Grants;
use crate::bus::PublishRefused;
use crate::telemetry::spans::{self, Kind};
use crate::telemetry::{TraceContext, metrics};
use crate::tenancy::{FetchLeave, FetchRefused};
use tracing::Instrument as _;

/// Store data for one instance.
pub struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    hooks: OutboundPolicy,
    grants: Arc<Grants>,
    /// When the call under way must have ended: past it, the next epoch tick traps.
    pub(super) call_deadline: Instant,
}

impl InstanceState {
    /// The state of one instance holding `grants`, within `limits`.
    pub fn new(grants: Arc<Grants>, limits: StoreLimits, call_timeout: Duration) -> Self {
        Self {
            // The default builder grants nothing: empty env, no args, no
            // preopens, sockets denied, stdio to nowhere.
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits,
            // Outbound waits end well before the call does, so the guest sees a
            // transport error (and can say whether the request went out) rather than being cut off.
            hooks: OutboundPolicy {
                grants: grants.clone(),
                max_timeout: call_timeout / 2,
                trace: CallTrace::default(),
            },
            grants,
            call_deadline: Instant::now() + call_timeout,
        }
    }
}

impl InstanceState {
    /// A call begins: its spans go in the caller's current one.
    pub(super) fn begin_call(&mut self, call_timeout: Duration) {
        self.call_deadline = Instant::now() + call_timeout;
        self.hooks.trace.begin();
    }

    /// The call ended: its spans are let go, so they end now rather than
    /// when the pooled instance is next used.
    pub(super) fn end_call(&mut self) {
        self.hooks.trace = CallTrace::default();
    }
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState").field("connector", &self.grants.connector).finish_non_exhaustive()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outbound HTTP policy: only allow-listed hosts, and every wait bounded.
/// It keeps the call's spans too: each request is a child of the innermost.
pub struct OutboundPolicy {
    grants: Arc<Grants>,
    max_timeout: Duration,
    trace: CallTrace,
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let span = outbound_span(self.trace.innermost(), &self.grants.connector, &request);
        let host = request.uri().host().unwrap_or_default().to_owned();
        let allowed = self.grants.outbound.allows(&host);
        let connector = self.grants.connector.clone();
        let cap = self.max_timeout;
        let bound = |d: Option<Duration>| d.map_or(cap, |d| d.min(cap));
        let bounds = super::outbound::Bounds {
            connect: bound(options.and_then(|o| o.connect_timeout)),
            first_byte: bound(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: bound(options.and_then(|o| o.between_bytes_timeout)),
        };
        Box::new(
            async move {
                if !allowed {
                    tracing::warn!(connector, host, "outbound request refused: host not allowed");
                    metrics::outbound_refused(&connector);
                    return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                }
                let response = super::outbound::OutboundClients::shared().send(request, bounds).await;
                record_response(&tracing::Span::current(), &response);
                // The pool drives its connections itself: nothing is left to wait on.
                let io = async { Ok(()) };
                Ok((response?, Box::new(io) as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>))
            }
            .instrument(span),
        )
    }
}

/// The span of one outbound request, as OpenTelemetry's HTTP client
/// conventions name it; made only in a sampled trace. The path shows
/// no phone number, the query not at all: a URL may carry what a trace must not.
fn outbound_span<B>(parent: &tracing::Span, connector: &str, request: &http::Request<B>) -> tracing::Span {
    use tracing::field::Empty;
    if !spans::sampled(parent) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: parent, "outbound", connector, otel.name = Empty, otel.kind = Empty, otel.status_code = Empty
    );
    spans::describe(
        &span,
        Kind::Client,
        || request.method().as_str().to_owned(),
        || {
            let uri = request.uri();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
            vec![
                ("http.request.method", request.method().as_str().to_owned().into()),
                ("server.address", uri.host().unwrap_or_default().to_owned().into()),
                ("server.port", i64::from(port).into()),
                ("url.scheme", uri.scheme_str().unwrap_or_default().to_owned().into()),
                ("url.path", super::call_trace::masked_path(uri.path()).into()),
            ]
        },
    );
    span
}

/// What the provider answered, on the outbound request's span.
fn record_response<B>(span: &tracing::Span, response: &Result<http::Response<B>, wasmtime_wasi_http::Error>) {
    match response {
        Ok(response) => {
            let status = response.status();
            spans::attributes(span, || {
                let mut attributes = vec![("http.response.status_code", i64::from(status.as_u16()).into())];
                if status.as_u16() >= 400 {
                    attributes.push(("error.type", status.as_str().to_owned().into()));
                }
                attributes
            });
            if status.as_u16() >= 400 {
                spans::failed(span);
            }
        }
        Err(error) => {
            spans::attribute(span, "error.type", format!("{error:?}"));
            spans::failed(span);
        }
    }
}

impl types::Host for InstanceState {}

/// Why a secret was not revealed; becomes the WIT `secret-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRefused {
    /// architecture.yaml does not grant it to this connector.
    NotGranted,
    /// Granted, but no value is set.
    NotSet,
}

impl secrets::Host for InstanceState {
    async fn reveal(&mut self, name: String) -> Result<String, SecretRefused> {
        match self.grants.secrets.get(&name) {
            Some(Some(value)) => Ok(value.reveal().to_owned()),
            Some(None) => Err(SecretRefused::NotSet),
            None => {
                tracing::warn!(connector = %self.grants.connector, secret = %name, "connector asked for a secret it is not granted");
                Err(SecretRefused::NotGranted)
            }
        }
    }

    fn convert_secret_error(&mut self, refused: SecretRefused) -> wasmtime::Result<secrets::SecretError> {
        Ok(match refused {
            SecretRefused::NotGranted => secrets::SecretError::NotGranted,
            SecretRefused::NotSet => secrets::SecretError::NotSet,
        })
    }
}

impl credential_sets::Host for InstanceState {
    async fn reveal(&mut self, name: String) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        let Some(sets) = &self.grants.credential_sets else { return Ok(None) };
        Ok(sets
            .reveal(&name)
            .map(|values| values.iter().map(|(key, value)| (key.clone(), value.reveal().to_owned())).collect()))
    }
}

impl cache::Host for InstanceState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<cache::Cached>> {
        let Some(cache) = &self.grants.cache else { return Ok(None) };
        Ok(cache.get(&key).map(|(value, age)| cache::Cached {
            value: value.to_string(),
            age_seconds: u32::try_from(age.as_secs()).unwrap_or(u32::MAX),
        }))
    }

    async fn put(&mut self, key: String, value: String, ttl_seconds: u32) -> wasmtime::Result<()> {
        if let Some(cache) = &self.grants.cache {
            cache.put(key, value, Duration::from_secs(u64::from(ttl_seconds)));
        }
        Ok(())
    }

    async fn begin_fetch(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<FetchLeave>, cache::FetchRefused>> {
        // Without a cache there is nowhere to keep what a fetch finds: none is granted.
        let Some(cache) = &self.grants.cache else { return Ok(Err(cache::FetchRefused::Exhausted)) };
        match cache.begin_fetch(&key) {
            Ok(leave) => Ok(Ok(self.table.push(leave)?)),
            Err(FetchRefused::InFlight) => Ok(Err(cache::FetchRefused::InFlight)),
            Err(FetchRefused::Exhausted) => Ok(Err(cache::FetchRefused::Exhausted)),
        }
    }
}

impl cache::HostFetchLeave for InstanceState {
    async fn drop(&mut self, leave: Resource<FetchLeave>) -> wasmtime::Result<()> {
        // Dropping the leave gives it back.
        self.table.delete(leave)?;
        Ok(())
    }
}

impl config::Host for InstanceState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grants.variables.get(&key).cloned())
    }
}

impl bus::Host for InstanceState {
    async fn publish(
        &mut self,
        stream: String,
        dedup_key: Option<String>,
        message: bus::BusMessage,
    ) -> Result<bus::Receipt, PublishRefused> {
        let Some(topic) = self.grants.topics.get(&stream) else {
            tracing::warn!(connector = %self.grants.connector, stream, "publish to a stream not granted");
            return Err(PublishRefused::NotAllowed(format!("stream {stream} is not granted")));
        };
        let payload = crate::messages::encode(message);
        let started = Instant::now();
        let span = publish_span(self.hooks.trace.innermost(), self.grants.bus.system(), topic, dedup_key.as_deref());
        // An unsampled trace has no publish span: the message carries the
        // caller's context, or the one its untraced work carries.
        let trace = TraceContext::of(&span)
            .or_else(|| TraceContext::of(self.hooks.trace.innermost()))
            .or_else(TraceContext::carried);
        let publish = self.grants.bus.publish(topic, dedup_key.as_deref(), payload.into(), trace.as_ref());
        let result = publish.instrument(span.clone()).await;
        if result.is_err() {
            spans::failed(&span);
        }
        metrics::bus_publish(topic, started.elapsed(), result.is_ok());
        match result {
            Ok(crate::bus::Published::New) => Ok(bus::Receipt::Published),
            Ok(crate::bus::Published::Duplicate) => Ok(bus::Receipt::Duplicate),
            Err(e) => {
                tracing::error!(topic, error = %e, "bus publish failed");
                Err(PublishRefused::Unavailable(e.to_string()))
            }
        }
    }

    fn convert_bus_error(&mut self, refused: PublishRefused) -> wasmtime::Result<bus::BusError> {
        Ok(match refused {
            PublishRefused::Unavailable(reason) => bus::BusError::Unavailable(reason),
            PublishRefused::NotAllowed(reason) => bus::BusError::NotAllowed(reason),
        })
    }
}

/// The span of a connector's publish, as OpenTelemetry's messaging
/// conventions name it; the message carries its context. Made only in a
/// sampled trace.
fn publish_span(parent: &tracing::Span, system: &'static str, topic: &str, key: Option<&str>) -> tracing::Span {
    use tracing::field::Empty;
    if !spans::sampled(parent) {
        return tracing::Span::none();
    }
    let span =
        tracing::info_span!(parent: parent, "publish", otel.name = Empty, otel.kind = Empty, otel.status_code = Empty);
    let name = || format!("publish {topic}");
    spans::describe(&span, Kind::Producer, name, || spans::messaging(system, "publish", topic, key));
    span
}

impl trace::Host for InstanceState {
    async fn set_attribute(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.hooks.trace.set_call_attribute(&self.grants, &key, &value);
        Ok(())
    }
}

impl trace::HostSpan for InstanceState {
    async fn new(&mut self, name: String) -> wasmtime::Result<Resource<GuestSpan>> {
        let span = self.hooks.trace.open(&self.grants.connector, &name);
        let shared = span.clone_span();
        let resource = self.table.push(span)?;
        self.hooks.trace.opened(resource.rep(), shared);
        Ok(resource)
    }

    async fn set_attribute(&mut self, span: Resource<GuestSpan>, key: String, value: String) -> wasmtime::Result<()> {
        self.table.get_mut(&span)?.set_attribute(&self.grants, &key, &value);
        Ok(())
    }

    async fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        self.hooks.trace.closed(span.rep());
        self.table.delete(span)?;
        Ok(())
    }
}

impl log::Host for InstanceState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        write_log(&self.grants.connector, level, &message);
        Ok(())
    }

    async fn log_bounded(&mut self, level: log::Level, key: String, message: String) -> wasmtime::Result<()> {
        match self.grants.bounded_log.admit(&key, Instant::now()) {
            Some(0) => write_log(&self.grants.connector, level, &message),
            Some(left_out) => {
                let message =
                    format!("{message} ({left_out} more like this since the previous line, counted, not logged)");
                write_log(&self.grants.connector, level, &message);
            }
            None => {}
        }
        Ok(())
    }
}

/// One of a connector's log lines, at its level.
fn write_log(connector: &str, level: log::Level, message: &str) {
    match level {
        log::Level::Debug => tracing::debug!(connector, "{message}"),
        log::Level::Info => tracing::info!(connector, "{message}"),
        log::Level::Warn => tracing::warn!(connector, "{message}"),
        log::Level::Error => tracing::error!(connector, "{message}"),
    }
}

impl counters::Host for InstanceState {
    async fn count(&mut self, event: String, by: u64) -> wasmtime::Result<()> {
        if self.grants.events.admit(&event) {
            metrics::connector_event(&self.grants.connector, &event, by);
        } else {
            tracing::debug!(connector = %self.grants.connector, "event name refused for counting: malformed or one too many");
        }
        Ok(())
    }
}

/// Keys a connector may use: what JetStream's key-value store accepts, so a
/// connector behaves the same on both backends.
fn valid_state_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=/.".contains(&b))
}

impl memory::Host for InstanceState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<memory::Entry>, memory::StateError>> {
        if !valid_state_key(&key) {
            return Ok(Err(memory::StateError::Unavailable(format!("invalid state key {key:?}"))));
        }
        let found = self.grants.bus.state_get(&self.grants.connector, &key).await;
        Ok(found
            .map(|entry| entry.map(|e| memory::Entry { value: e.value, revision: e.revision }))
            .map_err(|e| memory::StateError::Unavailable(e.to_string())))
    }

    async fn put(
        &mut self,
        key: String,
        value: String,
        expected: Option<u64>,
    ) -> wasmtime::Result<Result<u64, memory::StateError>> {
        if !valid_state_key(&key) {
            return Ok(Err(memory::StateError::Unavailable(format!("invalid state key {key:?}"))));
        }
        let written = self.grants.bus.state_put(&self.grants.connector, &key, value, expected).await;
        Ok(match written {
            Ok(crate::bus::StateWrite::Written(revision)) => Ok(revision),
            Ok(crate::bus::StateWrite::Conflict) => Err(memory::StateError::Conflict),
            Err(e) => Err(memory::StateError::Unavailable(e.to_string())),
        })
    }
}

impl blobs::Host for InstanceState {
    async fn store(
        &mut self,
        content_type: String,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<blobs::Stored, blobs::BlobError>> {
        let Some(store) = &self.grants.blobs else { return Ok(Err(blobs::BlobError::NotGranted)) };
        let stored = store.store(&content_type, bytes).await;
        let connector = &self.grants.connector;
        Ok(match stored {
            Ok(blob) => {
                tracing::debug!(connector, sha256 = %blob.sha256, size = blob.size, %content_type, "blob stored");
                Ok(blobs::Stored { sha256: blob.sha256, size: blob.size, url: blob.url })
            }
            Err(crate::blobs::BlobError::TooLarge(most)) => Err(blobs::BlobError::TooLarge(most)),
            Err(error @ crate::blobs::BlobError::Unavailable(_)) => {
                tracing::warn!(connector, %error, "blob not stored");
                Err(blobs::BlobError::Unavailable(error.to_string()))
            }
        })
    }
}
