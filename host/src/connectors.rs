//! The connector manager: the connectors architecture.yaml enables, each the
//! current version behind an atomic pointer, and hot swap.
//!
//! A swap compiles (or takes from the compile cache), links and describes the
//! new component off the request path, then replaces the pointer: requests
//! and sends in flight keep the version they started with, and the old
//! version (its warm instances with it) is freed when the last of them ends.
//! A component that fails any step is refused and the old one keeps serving.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::bus::Bus;
use crate::config::{ConnectorConfig, ServiceConfig};
use crate::runtime::{Connector, Grants, Runtime, read_component};
use crate::telemetry::metrics;
use crate::telemetry::spans::{self, Kind};

/// A connector's history since start: what `/admin/connectors` shows beside
/// the current version.
#[derive(Debug, Clone, Default)]
pub struct SlotStatus {
    /// Unix seconds when the current version was loaded.
    pub loaded_at: u64,
    /// Swaps since start.
    pub swaps: u64,
    /// The last component refused: when (Unix seconds) and why.
    pub last_refusal: Option<(u64, String)>,
}

/// One enabled connector and its current component.
#[derive(Debug)]
pub struct ConnectorSlot {
    /// The connector's resolved configuration.
    pub config: ConnectorConfig,
    current: ArcSwap<Connector>,
    grants: Arc<Grants>,
    status: Mutex<SlotStatus>,
    /// One swap at a time per connector.
    swapping: tokio::sync::Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new component serves now.
    Swapped {
        /// The version and short hash swapped out.
        from: String,
        /// The version and short hash swapped in.
        to: String,
    },
    /// The file holds the component already serving.
    Unchanged,
    /// The component did not load; the old one keeps serving.
    Refused(String),
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl ConnectorSlot {
    /// The component serving now; a caller keeps it for its whole request.
    pub fn current(&self) -> Arc<Connector> {
        self.current.load_full()
    }

    /// What the connector is granted (its bus among them).
    pub fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    /// Its history since start.
    pub fn status(&self) -> SlotStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads the component again and swaps it in if it loads and answers.
    async fn reload(&self, runtime: &Runtime) -> ReloadOutcome {
        let _one_at_a_time = self.swapping.lock().await;
        let name = &self.config.name;
        let outcome = match read_component(&self.config.component) {
            Err(e) => ReloadOutcome::Refused(format!("{e:#}")),
            Ok(bytes) if crate::runtime::content_hash(&bytes) == self.current().content_hash() => {
                ReloadOutcome::Unchanged
            }
            Ok(bytes) => self.traced_swap(runtime, bytes).await,
        };
        match &outcome {
            ReloadOutcome::Swapped { from, to } => {
                tracing::info!(connector = %name, %from, %to, "connector swapped");
                metrics::swap(name, "swapped");
            }
            ReloadOutcome::Unchanged => tracing::debug!(connector = %name, "reload: component unchanged"),
            ReloadOutcome::Refused(reason) => {
                tracing::warn!(connector = %name, %reason, "new component refused; the old one keeps serving");
                metrics::swap(name, "refused");
                if let Ok(mut status) = self.status.lock() {
                    status.last_refusal = Some((unix_now(), reason.clone()));
                }
            }
        }
        outcome
    }

    /// [`Self::swap_in`] as a span of its own: a swap is worth a trace.
    async fn traced_swap(&self, runtime: &Runtime, bytes: Vec<u8>) -> ReloadOutcome {
        use tracing::field::Empty;
        let name = &self.config.name;
        let span = spans::service_span!(
            &spans::start(None), None, "swap", connector = %name, otel.name = Empty, otel.kind = Empty, otel.status_code = Empty
        );
        spans::describe(
            &span,
            Kind::Internal,
            || format!("swap {name}"),
            || vec![("swap.from", label(&self.current()).into())],
        );
        let outcome = self.swap_in(runtime, bytes).instrument(span.clone()).await;
        match &outcome {
            ReloadOutcome::Swapped { to, .. } => spans::attribute(&span, "swap.to", to.clone()),
            _ => spans::failed(&span),
        }
        outcome
    }

    /// Loads (compiles) a changed component and swaps it in when it answers.
    async fn swap_in(&self, runtime: &Runtime, bytes: Vec<u8>) -> ReloadOutcome {
        match runtime.load(bytes, self.grants.clone()).await {
            Err(e) => ReloadOutcome::Refused(e.to_string()),
            Ok(loaded) => {
                let to = label(&loaded);
                let from = label(&self.current.swap(Arc::new(loaded)));
                if let Ok(mut status) = self.status.lock() {
                    status.loaded_at = unix_now();
                    status.swaps += 1;
                }
                ReloadOutcome::Swapped { from, to }
            }
        }
    }
}

/// A component as the log and the swap's span name it: its version and
/// the start of its content hash.
fn label(component: &Connector) -> String {
    let hash = component.content_hash();
    format!("{} {}", component.version(), hash.get(..12).unwrap_or(hash))
}

/// All enabled connectors, and the runtime they run in.
#[derive(Debug)]
pub struct Connectors {
    runtime: Runtime,
    slots: Vec<Arc<ConnectorSlot>>,
}

/// Why no connector answers to a name.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// No connector of that name is loaded.
    #[error("no enabled connector named {0}")]
    Unknown(String),
    /// No connector is loaded.
    #[error("no connector is enabled")]
    NoneEnabled,
    /// Several are loaded and none was named.
    #[error("several connectors are enabled: name one")]
    Ambiguous,
}

impl Connectors {
    /// Loads every enabled connector; a connector that does not load stops the start.
    pub async fn load(config: &ServiceConfig, runtime: Runtime, bus: Arc<dyn Bus>) -> anyhow::Result<Self> {
        let mut slots = Vec::new();
        for connector in config.enabled_connectors() {
            let bytes = read_component(&connector.component)?;
            let grants =
                Grants::new(connector, bus.clone()).with_context(|| format!("connector {}", connector.name))?;
            let grants = Arc::new(grants);
            let loaded = runtime
                .load(bytes, grants.clone())
                .await
                .with_context(|| format!("connector {} ({})", connector.name, connector.component))?;
            slots.push(Arc::new(ConnectorSlot {
                config: connector.clone(),
                current: ArcSwap::from_pointee(loaded),
                grants,
                status: Mutex::new(SlotStatus { loaded_at: unix_now(), ..SlotStatus::default() }),
                swapping: tokio::sync::Mutex::new(()),
            }));
        }
        Ok(Self { runtime, slots })
    }

    /// The enabled connectors, by name.
    pub fn slots(&self) -> &[Arc<ConnectorSlot>] {
        &self.slots
    }

    /// The enabled connector called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ConnectorSlot>> {
        self.slots.iter().find(|s| s.config.name == name)
    }

    /// The connector called `name`, or the only one enabled when no name is given.
    pub fn pick(&self, name: Option<&str>) -> Result<&Arc<ConnectorSlot>, PickError> {
        match (name, self.slots.as_slice()) {
            (Some(name), _) => self.by_name(name).ok_or_else(|| PickError::Unknown(name.to_owned())),
            (None, [only]) => Ok(only),
            (None, []) => Err(PickError::NoneEnabled),
            (None, _) => Err(PickError::Ambiguous),
        }
    }

    /// Reloads one connector from its component source.
    pub async fn reload_one(&self, slot: &ConnectorSlot) -> ReloadOutcome {
        slot.reload(&self.runtime).await
    }

    /// Reloads the named connector, or all of them.
    pub async fn reload(&self, name: Option<&str>) -> Vec<(String, ReloadOutcome)> {
        let mut outcomes = Vec::new();
        for slot in self.slots.iter().filter(|s| name.is_none_or(|n| s.config.name == n)) {
            outcomes.push((slot.config.name.clone(), slot.reload(&self.runtime).await));
        }
        outcomes
    }

    /// The connector serving `path`, and the configured route that matched:
    /// a route ending in `/` is a prefix, any other an exact path; the longest
    /// match wins.
    pub fn route(&self, path: &str) -> Option<(&Arc<ConnectorSlot>, &str)> {
        self.slots
            .iter()
            .flat_map(|slot| slot.config.routes.iter().map(move |route| (slot, route.as_str())))
            .filter(|(_, route)| if route.ends_with('/') { path.starts_with(route) } else { path == *route })
            .max_by_key(|(_, route)| route.len())
    }
}
