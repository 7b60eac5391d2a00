//! The connector manager: the connectors architecture.yaml enables, each the
//! current version behind an atomic pointer (a swap never blocks a request).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::bus::Bus;
use crate::config::{ComponentSource, ConnectorConfig, ServiceConfig};
use crate::runtime::{Connector, Grants, Runtime};

/// One enabled connector and its current component.
#[derive(Debug)]
pub struct ConnectorSlot {
    pub config: ConnectorConfig,
    current: ArcSwap<Connector>,
    pub loaded_at: SystemTime,
}

impl ConnectorSlot {
    /// The component serving now; a caller keeps it for its whole request.
    pub fn current(&self) -> Arc<Connector> {
        self.current.load_full()
    }
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
                .load(&bytes, grants)
                .await
                .with_context(|| format!("connector {} ({})", connector.name, connector.component))?;
            slots.push(Arc::new(ConnectorSlot {
                config: connector.clone(),
                current: ArcSwap::from_pointee(loaded),
                loaded_at: SystemTime::now(),
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
