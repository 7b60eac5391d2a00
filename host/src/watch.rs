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
///
/// The debouncing is done here rather than by `notify-debouncer-mini`, which
/// drops each event's kind: notify's inotify backend reports every `open`,
/// so our own reading of a watched file would count as a change, and every
/// reload would set off the next one (a directory of 10,000 accounts read
/// again and again, measured in `bench/run`). Access events are left out.
pub(crate) fn watch_paths(
    config: &WatchConfig,
    dirs: &[&Path],
    mode: RecursiveMode,
    changes: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> anyhow::Result<Backend> {
    let (raw, settled) = std::sync::mpsc::channel::<Vec<PathBuf>>();
    let handler = move |result: notify::Result<notify::Event>| match result {
        Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
        Ok(event) => {
            let _ = raw.send(event.paths);
        }
        Err(error) => tracing::warn!(%error, "file watcher error"),
    };
    let backend: Backend = match config.polling {
        false => match RecommendedWatcher::new(handler.clone(), notify::Config::default())
            .and_then(|mut watcher| watch_all(&mut watcher, dirs, mode).map(|()| watcher))
        {
            Ok(watcher) => Box::new(watcher),
            Err(error) => {
                tracing::warn!(%error, "kernel file notifications unavailable; polling instead");
                Box::new(polling(config, dirs, mode, handler)?)
            }
        },
        true => Box::new(polling(config, dirs, mode, handler)?),
    };
    let settle = config.settle;
    std::thread::Builder::new()
        .name("watch-settle".into())
        .spawn(move || settle_batches(&settled, settle, &changes))?;
    Ok(backend)
}

fn polling<H: notify::EventHandler>(
    config: &WatchConfig,
    dirs: &[&Path],
    mode: RecursiveMode,
    handler: H,
) -> notify::Result<PollWatcher> {
    let mut watcher = PollWatcher::new(handler, notify::Config::default().with_poll_interval(config.settle))?;
    watch_all(&mut watcher, dirs, mode)?;
    Ok(watcher)
}

/// Gathers changed paths until none came for `settle` (so a copy in progress
/// is seen once, whole), then hands the batch on; ends with the watcher.
fn settle_batches(
    raw: &std::sync::mpsc::Receiver<Vec<PathBuf>>,
    settle: std::time::Duration,
    changes: &mpsc::UnboundedSender<Vec<PathBuf>>,
) {
    while let Ok(mut batch) = raw.recv() {
        // A file written without pause is still handed on, every 8 settle times.
        let latest = std::time::Instant::now() + settle * 8;
        while let Ok(more) = raw.recv_timeout(settle.min(latest.saturating_duration_since(std::time::Instant::now()))) {
            batch.extend(more);
        }
        batch.sort();
        batch.dedup();
        if changes.send(batch).is_err() {
            return;
        }
    }
}

fn watch_all(watcher: &mut dyn Watcher, dirs: &[&Path], mode: RecursiveMode) -> notify::Result<()> {
    dirs.iter().try_for_each(|dir| watcher.watch(dir, mode))
}
