//! `serve`: wires the bus, the connectors, the listeners and shutdown together.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::{self, Bus};
use crate::config::ServiceConfig;
use crate::connectors::Connectors;
use crate::egress::EgressWorker;
use crate::runtime::Runtime;
use crate::server::{self, AppState};

/// A service started in this process.
#[derive(Debug)]
pub struct RunningService {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Egress workers and file watchers: they end on shutdown.
    background: Vec<JoinHandle<()>>,
}

impl RunningService {
    /// Stops accepting, lets requests in flight finish, and waits for the end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await?;
        // Sends under way finish; each is bounded by the call timeout.
        let grace = self.state.config.limits.shutdown_grace + self.state.config.limits.call_timeout;
        let workers = futures_join_all(self.background);
        if tokio::time::timeout(grace, workers).await.is_err() {
            tracing::warn!(?grace, "egress sends still under way after the grace; their messages will be redelivered");
        }
        served
    }
}

/// Starts the service on its configured addresses. `bus` replaces the
/// configured bus (tests use this to inject a failing one).
pub async fn start(config: ServiceConfig, bus: Option<Arc<dyn Bus>>) -> anyhow::Result<RunningService> {
    let bus = match bus {
        Some(bus) => bus,
        None => bus::open(&config.bus_url, config.bus_retention)?,
    };
    for connector in config.connectors.iter().filter(|c| !c.enabled) {
        let reason = connector.enabled_by.as_deref().map_or_else(String::new, |var| format!(": {var} is false"));
        tracing::info!("connector {} skipped{reason}", connector.name);
    }
    let runtime = Runtime::new(&config.limits, Some(config.data_dir.join("compile-cache")))?;
    let connectors = Connectors::load(&config, runtime, bus.clone()).await?;
    for slot in connectors.slots() {
        let current = slot.current();
        tracing::info!(
            connector = %slot.config.name,
            version = current.version(),
            content_hash = current.content_hash(),
            component = %slot.config.component,
            "connector loaded"
        );
    }
    let (public, admin) = server::bind(&config).await?;
    let (public_addr, admin_addr) = (server::local(&public), server::local(&admin));
    tracing::info!(bus = %config.bus_url, "listening on {public_addr} (webhooks) and {admin_addr} (admin)");
    let state = Arc::new(AppState { config, connectors: Arc::new(connectors), bus });
    let (shutdown, stopping) = watch::channel(false);
    let mut background = Vec::new();
    for slot in state.connectors.slots() {
        if let Some(worker) = EgressWorker::new(slot.clone(), state.bus.clone(), state.config.limits.call_timeout) {
            background.extend(worker.spawn(&stopping));
        }
    }
    if state.config.watch_components {
        background.extend(crate::watch::spawn(state.connectors.clone(), stopping.clone()));
    }
    let task = tokio::spawn(server::serve(state.clone(), public, admin, stopping));
    Ok(RunningService { public_addr, admin_addr, state, shutdown, task, background })
}

async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully. SIGHUP reloads
/// the connectors.
pub async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let service = start(config, None).await?;
    wait_for_signal(&service.state.connectors).await;
    tracing::info!("shutting down: no new requests; finishing those in flight");
    service.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal(connectors: &Connectors) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading connectors");
                connectors.reload(None).await;
            }
        }
    }
}
