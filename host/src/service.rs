//! `serve`: the bus, the connectors, then the list of capabilities that run
//! beside each other until shutdown.
//!
//! Every capability starts the same way (its tasks on one tracker, ending when
//! one token is cancelled) and so stops the same way: shutdown is cancel, then
//! wait for the tracker within a bound.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::spool::{Spool, SpoolDrainer, SpoolingBus};
use crate::bus::{self, Bus};
use crate::config::{BusUrl, ServiceConfig};
use crate::connectors::Connectors;
use crate::egress::Egress;
use crate::lifecycle::Capability;
use crate::runtime::Runtime;
use crate::server::starting::StartingListener;
use crate::server::{AppState, Server};
use crate::telemetry::metrics::MetricsUpkeep;
use crate::tenancy::{CredentialSets, SetWatcher};
use crate::watch::ComponentWatcher;

/// A service started in this process.
#[derive(Debug)]
pub struct RunningService {
    /// Where the public listener really bound (a port 0 becomes a free port).
    pub public_addr: SocketAddr,
    /// Where the admin listener really bound.
    pub admin_addr: SocketAddr,
    /// Where the metrics-only listener bound, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// What the listeners serve from.
    pub state: Arc<AppState>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RunningService {
    /// Begins shutdown the way a load balancer needs it: `/readyz` answers 503
    /// at once, and the listeners go on serving for `shutdown_drain` while the
    /// balancer takes this host out of rotation. [`Self::stop`] comes next.
    pub async fn drain(&self) {
        self.state.draining.cancel();
        let drain = self.state.config.limits.shutdown_drain;
        if !drain.is_zero() {
            tracing::info!(?drain, "draining: not ready, still serving");
            tokio::time::sleep(drain).await;
        }
    }

    /// Stops accepting, lets requests and sends in flight finish, and waits
    /// for every capability, at most the shutdown grace plus one call.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.tasks.close();
        let limits = &self.state.config.limits;
        let bound = limits.shutdown_grace + limits.call_timeout;
        if tokio::time::timeout(bound, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                ?bound,
                "work still under way at the end of the shutdown bound; unacknowledged messages will be redelivered"
            );
        }
        Ok(())
    }
}

/// Starts the service on its configured addresses. `bus` replaces the
/// configured bus (tests use this to inject a failing one).
pub async fn start(mut config: ServiceConfig, bus: Option<Arc<dyn Bus>>) -> anyhow::Result<RunningService> {
    crate::telemetry::metrics::install();
    // Alive, not ready, while the bus and the connectors come: the public
    // address answers /healthz from the first moment (see `StartingListener`).
    let starting = StartingListener::bind(config.server.listen_addr, config.limits.header_read_timeout).await?;
    config.server.listen_addr = starting.local_addr();
    let real_bus = match bus {
        Some(bus) => bus,
        None => bus::open_patiently(&config.bus).await?,
    };
    let spool = Arc::new(Spool::open(&config.spool.path, config.spool.max_bytes)?);
    // After the bus and the spool: a data directory they cannot write is named as such first.
    if config.server.admin_token.is_none() {
        config.server.admin_token = Some(crate::config::admin_token::load_or_create(&config.data_dir)?);
    }
    let bus: Arc<dyn Bus> = Arc::new(SpoolingBus::new(real_bus.clone(), spool.clone(), &config.spool));
    let connectors = Arc::new(load_connectors(&config, bus.clone()).await?);
    let stop = CancellationToken::new();
    let draining = CancellationToken::new();
    let state = Arc::new(AppState { config, connectors, bus, spool: spool.clone(), shutdown: stop.clone(), draining });
    let server = Server::bind(state.clone(), starting.into_listener().await?).await?;
    let (public_addr, admin_addr) = server.addresses();
    let metrics_addr = server.metrics_address();
    tracing::info!(bus = %state.config.bus.url, "listening on {public_addr} (webhooks) and {admin_addr} (admin)");
    let config = &state.config;
    let capabilities: Vec<Box<dyn Capability>> = vec![
        Box::new(MetricsUpkeep::new(&config.metrics)),
        Box::new(SpoolDrainer::new(spool, real_bus, &config.spool)),
        Box::new(Egress::new(&state.connectors, config.limits.call_timeout, matches!(config.bus.url, BusUrl::Nats(_)))),
        Box::new(ComponentWatcher::new(&config.watch, state.connectors.clone())),
        Box::new(SetWatcher::new(&config.watch, credential_sets(&state.connectors))),
        Box::new(server),
    ];
    let tasks = TaskTracker::new();
    for capability in capabilities {
        let name = capability.name();
        if let Err(error) = capability.start(&tasks, &stop) {
            stop.cancel();
            return Err(error.context(format!("starting {name}")));
        }
    }
    Ok(RunningService { public_addr, admin_addr, metrics_addr, state, stop, tasks })
}

/// Each connector's credential sets, to be watched.
fn credential_sets(connectors: &Connectors) -> Vec<(String, Arc<CredentialSets>)> {
    connectors
        .slots()
        .iter()
        .filter_map(|slot| Some((slot.config.name.clone(), slot.grants().credential_sets.clone()?)))
        .collect()
}

/// Compiles and instantiates the enabled connectors, saying which were skipped.
async fn load_connectors(config: &ServiceConfig, bus: Arc<dyn Bus>) -> anyhow::Result<Connectors> {
    for connector in config.connectors.iter().filter(|c| !c.enabled) {
        let reason = connector.enabled_by.as_deref().map_or_else(String::new, |var| format!(": {var} is false"));
        tracing::info!("connector {} skipped{reason}", connector.name);
    }
    let runtime = Runtime::new(&config.limits, Some(config.data_dir.join("compile-cache")))?;
    let connectors = Connectors::load(config, runtime, bus).await?;
    let names: Vec<&str> = connectors.slots().iter().map(|slot| slot.config.name.as_str()).collect();
    crate::telemetry::metrics::register_watched(&names);
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
    Ok(connectors)
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully. SIGHUP reloads
/// the connectors.
pub async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let service = start(config, None).await?;
    wait_for_signal(&service.state.connectors).await;
    service.drain().await;
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
