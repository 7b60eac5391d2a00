//! The public listener while `serve` starts: while it waits for its bus (a
//! NATS cluster still forming) and compiles its connectors, it is alive but
//! not ready. `/healthz` answers 200, so the orchestrator does not restart a
//! process that is only waiting; `/readyz` and every webhook answer 503, so
//! no load balancer routes here and Twilio retries. Then the same socket
//! passes to the real server: a connection waiting in its backlog is served,
//! not refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::text;

/// The public listener answering "starting" until [`Self::into_listener`].
#[derive(Debug)]
pub struct StartingListener {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<TcpListener>,
}

impl StartingListener {
    /// Binds `addr` and answers there until the real server takes over,
    /// reading a request's headers within `header_read_timeout` as it does.
    pub async fn bind(addr: SocketAddr, header_read_timeout: Duration) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr().with_context(|| format!("binding {addr}"))?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(answer_until(listener, header_read_timeout, stop.clone()));
        Ok(Self { addr, stop, task })
    }

    /// The address really bound (a port 0 becomes a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and hands over the bound socket.
    pub async fn into_listener(mut self) -> anyhow::Result<TcpListener> {
        self.stop.cancel();
        Ok((&mut self.task).await?)
    }
}

impl Drop for StartingListener {
    /// A start that failed closes the socket.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer_until(listener: TcpListener, header_read_timeout: Duration, stop: CancellationToken) -> TcpListener {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return listener,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, say: the real server's back-off is not here yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let response = match request.uri().path() {
                "/healthz" => text(StatusCode::OK, "ok"),
                "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "starting: the bus or a connector is not there yet"),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting; retry later"),
            };
            Ok::<_, Infallible>(response)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(connection);
    }
}
