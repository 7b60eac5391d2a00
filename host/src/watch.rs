//! Watches file-backed connector components and swaps them in when they change.
//!
//! The kernel tells us about changes (`notify`'s recommended watcher, inotify
//! on Linux); where it cannot (some network and overlay file systems, or when
//! `watch_polling` asks for it) the same watcher polls instead. Events are
//! debounced: a file is loaded once it has stopped changing for the settle
//! time, so a copy in progress is not loaded half-written. The directory is
//! watched rather than the file, so a file replaced by a rename is seen too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use notify_debouncer_mini::{Config, DebounceEventResult, new_debouncer_opt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ComponentSource, WatchConfig};
use crate::connectors::{ConnectorSlot, Connectors};
use crate::lifecycle::Capability;

/// The watcher capability: one debounced watcher over the directories of
/// every file-backed connector.
#[derive(Debug)]
pub struct ComponentWatcher {
    config: WatchConfig,
    connectors: Arc<Connectors>,
}

/// The running notify backend (kernel or polling); dropping it stops it.
pub(crate) type Backend = Box<dyn std::any::Any + Send>;

impl ComponentWatcher {
    /// A watcher for `connectors`, as configured (it may be disabled).
    pub fn new(config: &WatchConfig, connectors: Arc<Connectors>) -> Self {
        Self { config: config.clone(), connectors }
    }

    /// Watched files (as the watcher reports them: directory made absolute,
    /// then the file name) → their slots.
    fn watched_files(&self) -> BTreeMap<PathBuf, Arc<ConnectorSlot>> {
        let mut files = BTreeMap::new();
        for slot in self.connectors.slots() {
            let ComponentSource::File(path) = &slot.config.component else { continue };
            match watched_path(path) {
                Some(watched) => {
                    files.insert(watched, slot.clone());
                }
                None => tracing::warn!(path = %path.display(), "cannot watch this component file's directory"),
            }
        }
        files
    }
}

impl Capability for ComponentWatcher {
    fn name(&self) -> &'static str {
        "watch"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        let files = self.watched_files();
        if !self.config.enabled || files.is_empty() {
            return Ok(());
        }
        let (changes, mut changed) = mpsc::unbounded_channel();
        let backend = watch_directories(&self.config, &files, changes)?;
        let stop = stop.clone();
        tasks.spawn(async move {
            let _backend = backend;
            // A change between loading and watching is not missed: reload
            // compares content hashes, so an unchanged file swaps nothing.
            for slot in files.values() {
                self.connectors.reload_one(slot).await;
            }
            while let Some(Some(paths)) = stop.run_until_cancelled(changed.recv()).await {
                for slot in changed_slots(&files, &paths) {
                    tracing::info!(connector = %slot.config.name, component = %slot.config.component, "component file changed");
                    self.connectors.reload_one(slot).await;
                }
            }
        });
        Ok(())
    }
}

/// The slots among `files` whose file is one of `paths`, each once.
fn changed_slots<'a>(
    files: &'a BTreeMap<PathBuf, Arc<ConnectorSlot>>,
    paths: &[PathBuf],
) -> impl Iterator<Item = &'a Arc<ConnectorSlot>> {
    files.iter().filter(|(file, _)| paths.contains(file)).map(|(_, slot)| slot)
}

/// `path` with its directory made absolute and canonical, the way the
/// watcher names it in events.
fn watched_path(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
}

/// Starts the kernel watcher on every directory of `files`, or the polling
/// one where that fails or is asked for. Changed paths go to `changes`.
fn watch_directories(
    config: &WatchConfig,
    files: &BTreeMap<PathBuf, Arc<ConnectorSlot>>,
    changes: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> anyhow::Result<Backend> {
    let dirs: Vec<&Path> = files.keys().filter_map(|file| file.parent()).collect();
    watch_paths(config, &dirs, RecursiveMode::NonRecursive, changes)
}

/// Watches `dirs` (with `mode`), debounced: the kernel's notifications, or
/// polling where they fail or `config` asks for it. Each settled batch of
/// changed paths goes to `changes`; dropping the backend stops it.
pub(crate) fn watch_paths(
    config: &WatchConfig,
    dirs: &[&Path],
    mode: RecursiveMode,
    changes: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> anyhow::Result<Backend> {
    let handler = |changes: mpsc::UnboundedSender<Vec<PathBuf>>| {
        move |result: DebounceEventResult| match result {
            Ok(events) => {
                let _ = changes.send(events.into_iter().map(|event| event.path).collect());
            }
            Err(error) => tracing::warn!(%error, "file watcher error"),
        }
    };
    let debounce = Config::default().with_timeout(config.settle).with_batch_mode(true);
    if !config.polling {
        let native = new_debouncer_opt::<_, RecommendedWatcher>(debounce.clone(), handler(changes.clone()))
            .and_then(|mut debouncer| watch_all(debouncer.watcher(), dirs, mode).map(|()| debouncer));
        match native {
            Ok(debouncer) => return Ok(Box::new(debouncer)),
            Err(error) => tracing::warn!(%error, "kernel file notifications unavailable; polling instead"),
        }
    }
    let polling = debounce.with_notify_config(notify::Config::default().with_poll_interval(config.settle));
    let mut debouncer = new_debouncer_opt::<_, PollWatcher>(polling, handler(changes))?;
    watch_all(debouncer.watcher(), dirs, mode)?;
    Ok(Box::new(debouncer))
}

fn watch_all(watcher: &mut dyn Watcher, dirs: &[&Path], mode: RecursiveMode) -> notify::Result<()> {
    dirs.iter().try_for_each(|dir| watcher.watch(dir, mode))
}
