//! Reloads each connector's credential sets when their directory changes:
//! a folder added, changed or removed takes effect within the watcher's
//! settle time (or, where the directory does not exist yet, within
//! [`APPEAR_POLL`] of its creation).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CredentialSets;
use crate::config::WatchConfig;
use crate::lifecycle::{Capability, tick};
use crate::telemetry::metrics;

/// How often a directory that does not exist is looked for (one `stat`), so
/// a first account is served as soon as a second one would be.
const APPEAR_POLL: Duration = Duration::from_millis(250);

/// The capability: one task per connector with credential sets.
#[derive(Debug)]
pub struct SetWatcher {
    config: WatchConfig,
    watched: Vec<(String, Arc<CredentialSets>)>,
}

impl SetWatcher {
    /// Watches each connector's sets (`(connector, sets)`).
    pub fn new(config: &WatchConfig, watched: Vec<(String, Arc<CredentialSets>)>) -> Self {
        Self { config: config.clone(), watched }
    }
}

impl Capability for SetWatcher {
    fn name(&self) -> &'static str {
        "credential sets"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        for (connector, sets) in self.watched {
            let summary = sets.summary();
            metrics::credential_sets(&connector, summary.loaded, summary.problems.len());
            let (config, stop) = (self.config.clone(), stop.clone());
            tasks.spawn(async move { watch(config, &connector, &sets, &stop).await });
        }
        Ok(())
    }
}

/// Reloads `sets` whenever their directory changes, until `stop`.
async fn watch(config: WatchConfig, connector: &str, sets: &CredentialSets, stop: &CancellationToken) {
    let dir: PathBuf = sets.dir().to_owned();
    loop {
        if !dir.is_dir() {
            if !tick(APPEAR_POLL, stop).await {
                return;
            }
            if dir.is_dir() {
                reload(connector, sets);
            }
            continue;
        }
        let (changes, mut changed) = mpsc::unbounded_channel();
        let _backend = match crate::watch::watch_paths(&config, &[dir.as_path()], RecursiveMode::Recursive, changes) {
            Ok(backend) => backend,
            Err(error) => {
                tracing::warn!(connector, dir = %dir.display(), %error, "cannot watch the credential sets; looking again shortly");
                if !tick(APPEAR_POLL, stop).await {
                    return;
                }
                continue;
            }
        };
        // What changed between the first reading and the watch's start.
        reload(connector, sets);
        while let Some(Some(_)) = stop.run_until_cancelled(changed.recv()).await {
            reload(connector, sets);
            if !dir.is_dir() {
                break;
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// Reads the sets again; says how it went, naming malformed folders by path
/// and setting.
fn reload(connector: &str, sets: &CredentialSets) {
    let summary = sets.reload();
    metrics::credential_sets(connector, summary.loaded, summary.problems.len());
    tracing::info!(connector, loaded = summary.loaded, left_out = summary.problems.len(), "credential sets read");
    for problem in &summary.problems {
        tracing::warn!(connector, "credential set left out: {problem}");
    }
}
