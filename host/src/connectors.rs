//! The connector manager: the connectors architecture.yaml enables, each the
//! current version behind an atomic pointer, and hot swap.
//!
//! A swap compiles (or takes from the compile cache), links and describes the
//! new component off the request path, then replaces the pointer: requests
//! and sends in flight keep the version they started with, and the old
//! version (its warm instances with it) is freed when the last of them ends.
//! A component that fails any step is refused and the old one keeps serving.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::{Value, json};

use crate::bus::Bus;
use crate::config::{ComponentSource, ConnectorConfig, ServiceConfig};
use crate::runtime::{Connector, Grants, Runtime};
use crate::telemetry::metrics;

/// What `/admin/connectors` shows beside the current version.
#[derive(Debug, Clone, Default)]
struct SlotStatus {
    loaded_at: u64,
    swaps: u64,
    last_refusal: Option<(u64, String)>,
}

/// One enabled connector and its current component.
#[derive(Debug)]
pub struct ConnectorSlot {
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
    Swapped {
        from: String,
        to: String,
    },
    /// The file holds the component already serving.
    Unchanged,
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

    /// Reads the component again and swaps it in if it loads and answers.
    pub async fn reload(&self, runtime: &Runtime) -> ReloadOutcome {
        let _one_at_a_time = self.swapping.lock().await;
        let name = &self.config.name;
        let outcome = match component_bytes(&self.config.component) {
            Err(e) => ReloadOutcome::Refused(format!("{e:#}")),
            Ok(bytes) if crate::runtime::content_hash(&bytes) == self.current().content_hash() => {
                ReloadOutcome::Unchanged
            }
            Ok(bytes) => match runtime.load(bytes, self.grants.clone()).await {
                Err(e) => ReloadOutcome::Refused(e.to_string()),
                Ok(loaded) => {
                    let to = format!("{} {}", loaded.version(), short(loaded.content_hash()));
                    let old = self.current.swap(Arc::new(loaded));
                    let from = format!("{} {}", old.version(), short(old.content_hash()));
                    if let Ok(mut status) = self.status.lock() {
                        status.loaded_at = unix_now();
                        status.swaps += 1;
                    }
                    ReloadOutcome::Swapped { from, to }
                }
            },
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

    /// The connector as `/admin/connectors` shows it.
    pub fn describe(&self) -> Value {
        let current = self.current();
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        json!({
            "name": self.config.name,
            "component": self.config.component.to_string(),
            "version": current.version(),
            "content_hash": current.content_hash(),
            "compiled_from_cache": current.from_cache(),
            "loaded_at": status.loaded_at,
            "swap_count": status.swaps,
            "last_refusal": status.last_refusal.map(|(at, reason)| json!({"at": at, "reason": reason})),
        })
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// All enabled connectors.
#[derive(Debug)]
pub struct Connectors {
    pub runtime: Runtime,
    slots: Vec<Arc<ConnectorSlot>>,
}

/// Reads a component's bytes from where its configuration says.
pub fn component_bytes(source: &ComponentSource) -> anyhow::Result<Vec<u8>> {
    match source {
        ComponentSource::Bundled(name) => {
            crate::bundled::get(name).map(<[u8]>::to_vec).with_context(|| format!("no component bundled as {name}"))
        }
        ComponentSource::File(path) => read_file(path),
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Connectors {
    /// Loads every enabled connector; a connector that does not load stops the start.
    pub async fn load(config: &ServiceConfig, runtime: Runtime, bus: Arc<dyn Bus>) -> anyhow::Result<Self> {
        let mut slots = Vec::new();
        for connector in config.enabled_connectors() {
            let bytes = component_bytes(&connector.component)?;
            let grants = Arc::new(Grants::new(connector, bus.clone()));
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

    pub fn slots(&self) -> &[Arc<ConnectorSlot>] {
        &self.slots
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<ConnectorSlot>> {
        self.slots.iter().find(|s| s.config.name == name)
    }

    /// Reloads the named connector, or all of them.
    pub async fn reload(&self, name: Option<&str>) -> Vec<(String, ReloadOutcome)> {
        let mut outcomes = Vec::new();
        for slot in self.slots.iter().filter(|s| name.is_none_or(|n| s.config.name == n)) {
            outcomes.push((slot.config.name.clone(), slot.reload(&self.runtime).await));
        }
        outcomes
    }

    /// The connector whose route prefix matches `path` (the longest prefix wins).
    pub fn route(&self, path: &str) -> Option<&Arc<ConnectorSlot>> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let best = slot
                    .config
                    .routes
                    .iter()
                    .filter(|prefix| path.starts_with(prefix.as_str()))
                    .map(String::len)
                    .max()?;
                Some((best, slot))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, slot)| slot)
    }
}
