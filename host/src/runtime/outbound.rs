//! Connectors' outbound HTTP through pooled clients: connections, and their
//! TLS sessions, are kept per host and reused. wasmtime-wasi-http's
//! `default_send_request` opens a new connection (and against
//! `https://api.twilio.com` makes a new TLS handshake) for every request,
//! which `bench/run`'s egress figure showed as most of a send's cost.
//!
//! What the guest relies on is kept: the connect bound of each request (one
//! client per distinct bound), the first-byte and between-bytes bounds, and
//! the difference between a request that never left (connect, DNS or TLS
//! failures: safe to retry) and one whose answer was lost after it was sent
//! (`ConnectionTerminated`, `ConnectionReadTimeout`: the connector reconciles).

use std::collections::HashMap;
use std::error::Error as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, WasiBody};

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per host.
const IDLE_PER_HOST: usize = 64;

type PooledClient = Client<HttpsConnector<HttpConnector>, WasiBody>;

/// The bounds of one request, already capped by the host.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// The process's outbound clients, one per connect bound in use.
#[derive(Debug, Default)]
pub struct OutboundClients {
    by_connect_bound: Mutex<HashMap<Duration, PooledClient>>,
}

impl OutboundClients {
    /// The clients every connector's instances share.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<OutboundClients> = OnceLock::new();
        SHARED.get_or_init(Self::default)
    }

    /// Sends `request` (an absolute URI) within `bounds`.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        bounds: Bounds,
    ) -> Result<http::Response<WasiBody>, Error> {
        use http_body_util::BodyExt as _;
        let client = self.client(bounds.connect);
        // The connector bounds a new connection by `connect`; the whole wait
        // for the answer's head, a connection included, by `first_byte`. A
        // connect that outlasts it is then reported as a lost answer: the
        // caller reconciles where a retry would have done, never the reverse.
        let answered = tokio::time::timeout(bounds.first_byte, client.request(request)).await;
        let response = match answered {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Err(error)) => return Err(classify(&error)),
            Ok(Ok(response)) => response,
        };
        Ok(response.map(|incoming| BoundedBody::new(incoming, bounds.between_bytes).boxed_unsync()))
    }

    fn client(&self, connect_bound: Duration) -> PooledClient {
        let mut clients = self.by_connect_bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients.entry(connect_bound).or_insert_with(|| new_client(connect_bound)).clone()
    }
}

fn new_client(connect_bound: Duration) -> PooledClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_bound));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // The timer lets the pool close idle connections in the background, not
    // only when the host is asked for again.
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .build(connector)
}

/// The roots wasmtime-wasi-http's default trusts (webpki-roots), over ring.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// What the guest is told: before the request left (connect, DNS, TLS), or
/// after (the answer lost, so the request may have been taken).
fn classify(error: &hyper_util::client::legacy::Error) -> Error {
    if !error.is_connect() {
        tracing::debug!(%error, "outbound request failed after it was sent");
        return Error::ConnectionTerminated;
    }
    let mut cause = error.source();
    while let Some(inner) = cause {
        if inner.is::<rustls::Error>() {
            return Error::Tls(std::io::Error::other(inner.to_string()));
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Error::ConnectionTimeout;
            }
            if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
                return Error::Tls(std::io::Error::new(io.kind(), io.to_string()));
            }
            return Error::Connect(std::io::Error::new(io.kind(), io.to_string()));
        }
        cause = inner.source();
    }
    Error::Connect(std::io::Error::other(error.to_string()))
}

/// A response body that fails when no frame comes within its bound.
struct BoundedBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl BoundedBody {
    fn new(incoming: hyper::body::Incoming, between_bytes: Duration) -> Self {
        // Tokio refuses a zero period; a nanosecond is as good.
        let mut timeout = tokio::time::interval(between_bytes.max(Duration::from_nanos(1)));
        timeout.reset();
        Self { incoming, timeout }
    }
}

impl hyper::body::Body for BoundedBody {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match hyper::body::Body::poll_frame(Pin::new(&mut self.incoming), cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(if error.is_timeout() { Error::HttpResponseTimeout } else { Error::from(error) })))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.incoming)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.incoming)
    }
}
