//! Watches file-backed connector components and swaps them in when they change.
//!
//! Polling the file's size and modification time is portable and bounded; a
//! change is acted on once the file has stopped changing (debounced), so a
//! copy in progress is not loaded half-written.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::ComponentSource;
use crate::connectors::{ConnectorSlot, Connectors};

const POLL: Duration = Duration::from_millis(250);

/// What identifies a version of a file without reading it.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// One watcher task per file-backed connector, until `shutdown`.
pub fn spawn(connectors: Arc<Connectors>, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    connectors
        .slots()
        .iter()
        .filter(|slot| matches!(slot.config.component, ComponentSource::File(_)))
        .map(|slot| {
            let (slot, connectors, shutdown) = (slot.clone(), connectors.clone(), shutdown.clone());
            tokio::spawn(async move { watch_file(slot, connectors, shutdown).await })
        })
        .collect()
}

async fn watch_file(slot: Arc<ConnectorSlot>, connectors: Arc<Connectors>, mut shutdown: watch::Receiver<bool>) {
    let ComponentSource::File(path) = &slot.config.component else { return };
    // Nothing seen yet: the first look compares the file with what is serving
    // (by content hash), so a change between loading and watching is not missed.
    let mut seen = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = stamp(path);
        if now == seen || now.is_none() {
            continue;
        }
        // Changed: wait until two looks in a row agree.
        let mut settled = now;
        loop {
            tokio::time::sleep(POLL).await;
            let again = stamp(path);
            if again == settled {
                break;
            }
            settled = again;
        }
        if seen.is_some() {
            tracing::info!(connector = %slot.config.name, path = %path.display(), "component file changed");
        }
        seen = settled;
        // The reload itself compares content hashes: an unchanged file swaps nothing.
        connectors.reload_one(&slot).await;
    }
}
