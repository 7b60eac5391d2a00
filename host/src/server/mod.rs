//! The HTTP listeners: public (webhooks, health) and admin (loopback:
//! metrics, connectors, egress, tokens).

pub mod admin;
mod admission;
pub mod cancel;
mod events;
mod public;
pub mod starting;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::ServiceConfig;
use crate::connectors::Connectors;
use crate::lifecycle::Capability;
use admission::{AcceptErrors, Admission};

/// Response bodies: what a component streams, or a buffer the host wrote.
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// What both listeners serve from.
#[derive(Debug)]
pub struct AppState {
    /// The resolved configuration.
    pub config: ServiceConfig,
    /// The loaded connectors.
    pub connectors: Arc<Connectors>,
    /// The bus (a publish it does not take in time goes to the spool).
    pub bus: Arc<dyn Bus>,
    /// Where publishes wait while the bus is away.
    pub spool: Arc<crate::bus::spool::Spool>,
    /// Cancelled when the service stops: long answers (event streams) end.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown begins (SIGTERM): `/readyz` answers 503 while
    /// the listeners still serve, so load balancers stop routing here first.
    pub draining: CancellationToken,
}

/// A response body from bytes.
pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// A plain-text response, one line.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut body = message.to_owned();
    body.push('\n');
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(value).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// The first value of the query parameter `name`, decoded.
fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy)]
enum Listener {
    Public,
    Admin,
    /// `GET /metrics` only, without the admin token.
    Metrics,
}

/// The listeners, bound: the server capability.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    public: TcpListener,
    admin: TcpListener,
    metrics: Option<TcpListener>,
}

impl Server {
    /// Binds the admin (and metrics) listeners on their configured
    /// addresses; the public one is bound already (`serve` answered there
    /// while it started, see [`starting`]).
    pub async fn bind(state: Arc<AppState>, public: TcpListener) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let admin_addr = state.config.server.admin_addr;
        let admin = TcpListener::bind(admin_addr).await.with_context(|| format!("binding {admin_addr}"))?;
        let metrics = match state.config.server.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?),
            None => None,
        };
        Ok(Self { state, public, admin, metrics })
    }

    /// The addresses really bound (a port 0 becomes a free port): public, admin.
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (local(&self.public), local(&self.admin))
    }

    /// Where the metrics-only listener bound, when there is one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(local)
    }
}

impl Capability for Server {
    fn name(&self) -> &'static str {
        "server"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        tasks.spawn(serve(self.state, [Some(self.public), Some(self.admin), self.metrics], stop.clone()));
        Ok(())
    }
}

/// Accepts on `listener` when there is one; never completes otherwise.
async fn accept(listener: &Option<TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves the listeners (public, admin, metrics) until `stop`, then stops
/// accepting and waits (up to the shutdown grace) for requests in flight.
async fn serve(state: Arc<AppState>, listeners: [Option<TcpListener>; 3], stop: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admission = Admission::new(state.config.limits.max_connections);
    let mut accept_errors = AcceptErrors::default();
    let [public, admin, metrics] = &listeners;
    loop {
        let (accepted, listener) = tokio::select! {
            accepted = accept(public) => (accepted, Listener::Public),
            accepted = accept(admin) => (accepted, Listener::Admin),
            accepted = accept(metrics) => (accepted, Listener::Metrics),
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                accept_errors.back_off(&error, &stop).await;
                continue;
            }
        };
        accept_errors.reset();
        // Only the internet-facing listener is capped: an operator's admin
        // call or a scrape still gets through while the public side sheds.
        let permit = match listener {
            Listener::Public => match admission.admit() {
                Some(permit) => Some(permit),
                None => continue, // dropping the stream closes it at once
            },
            Listener::Admin | Listener::Metrics => None,
        };
        let connection = serve_connection(&state, stream, peer, listener);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listeners);
    let grace = state.config.limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "requests still in flight after the shutdown grace; stopping anyway");
    }
}

/// One HTTP/1 connection: hyper's header-read bound, and a write bound so a
/// peer that stops reading its response does not hold the connection forever.
fn serve_connection(
    state: &Arc<AppState>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + use<> {
    let _ = stream.set_nodelay(true);
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(state.config.limits.write_timeout));
    let state_for_requests = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let state = state_for_requests.clone();
        async move {
            let response = match listener {
                Listener::Public => public::handle(&state, request, peer).await,
                Listener::Admin => admin::handle(&state, request).await,
                Listener::Metrics => admin::metrics_only(&request),
            };
            Ok::<_, Infallible>(response)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.limits.header_read_timeout)
        .serve_connection(TokioIo::new(Box::pin(stream)), service)
}

/// The address a listener really bound.
fn local(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
