//! Credential sets: one folder per set in a directory, one file per value,
//! named as the connector's own secrets and settings (the way Kubernetes
//! mounts one Secret per tenant). The whole directory is read into memory
//! and swapped in at once, so a request reads a map and never the disk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{CredentialSetsConfig, Problem, Secret};

/// One set's values, by name.
pub type SetValues = Arc<[(String, Secret)]>;

/// A connector's credential sets, as last read from their directory.
#[derive(Debug)]
pub struct CredentialSets {
    config: CredentialSetsConfig,
    current: ArcSwap<Loaded>,
    /// How many times the directory was read: a watcher that fed on its own
    /// reads would make this climb while nothing changes.
    readings: std::sync::atomic::AtomicU64,
}

/// What one reading of the directory found.
#[derive(Debug, Default)]
struct Loaded {
    sets: HashMap<String, SetValues>,
    /// Folders left out, by path and setting (never by value).
    problems: Vec<Problem>,
}

/// How a reading of the directory went, for the log and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetsSummary {
    /// Sets loaded.
    pub loaded: usize,
    /// Times the directory was read since start.
    pub readings: u64,
    /// What made the other folders unusable.
    pub problems: Vec<Problem>,
}

impl CredentialSets {
    /// Reads every set in the configured directory (none when it does not exist).
    pub fn load(config: CredentialSetsConfig) -> Self {
        let loaded = scan(&config);
        Self { config, current: ArcSwap::from_pointee(loaded), readings: 1.into() }
    }

    /// Where the folders are.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The values of set `name`, when there is one: a map read.
    pub fn reveal(&self, name: &str) -> Option<SetValues> {
        self.current.load().sets.get(name).cloned()
    }

    /// Every set's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.load().sets.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// How the last reading went.
    pub fn summary(&self) -> SetsSummary {
        let current = self.current.load();
        let readings = self.readings.load(std::sync::atomic::Ordering::Relaxed);
        SetsSummary { loaded: current.sets.len(), readings, problems: current.problems.clone() }
    }

    /// Reads the directory again and swaps the result in whole: a request
    /// sees the sets from before or from after, never a mix.
    pub fn reload(&self) -> SetsSummary {
        self.current.store(Arc::new(scan(&self.config)));
        self.readings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.summary()
    }
}

/// Reads every folder of the directory; a malformed one is left out and said why.
fn scan(config: &CredentialSetsConfig) -> Loaded {
    let mut loaded = Loaded::default();
    let entries = match std::fs::read_dir(&config.dir) {
        Ok(entries) => entries,
        // No directory, no sets: the connector serves its default tenant alone.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return loaded,
        Err(error) => {
            loaded.problems.push(problem(&config.dir, format!("cannot be read: {}", error.kind())));
            return loaded;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Kubernetes' own entries (`..data`, `..2026_…`) and other hidden files.
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        match read_set(config, &entry.path(), &name) {
            Ok(values) => {
                loaded.sets.insert(name, values);
            }
            Err(mut problems) => loaded.problems.append(&mut problems),
        }
    }
    loaded.problems.sort_by(|a, b| a.name.cmp(&b.name));
    loaded
}

/// One folder's values, checked as their declarations ask; every problem
/// with it at once.
fn read_set(config: &CredentialSetsConfig, folder: &Path, name: &str) -> Result<SetValues, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Some(pattern) = &config.name_pattern
        && let Err(expected) = pattern.check(name)
    {
        problems.push(problem(folder, format!("the folder's name is malformed: {expected}")));
    }
    let mut values = BTreeMap::new();
    // Files present, well-formed or not: a malformed one is not also "missing".
    let mut present = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Some(formats) = config.values.get(&file) else {
            problems.push(problem(&path, "not a setting a set may hold"));
            continue;
        };
        present.insert(file.clone());
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text.trim_end_matches(['\r', '\n']);
                match formats.iter().find_map(|format| format.check(value).err()) {
                    Some(expected) => problems.push(problem(&path, format!("malformed: {expected}"))),
                    None => {
                        values.insert(file, Secret::new(value));
                    }
                }
            }
            Err(error) => problems.push(problem(&path, format!("cannot be read: {}", error.kind()))),
        }
    }
    for required in config.required.iter().filter(|name| !present.contains(*name)) {
        problems.push(problem(&folder.join(required), "missing (required in every set)"));
    }
    if problems.is_empty() { Ok(values.into_iter().collect::<Vec<_>>().into()) } else { Err(problems) }
}

fn problem(path: &Path, message: impl Into<String>) -> Problem {
    Problem { name: path.display().to_string(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    const SID_A: &str = "AB00000000000000000000000000000001";
    const SID_B: &str = "AB00000000000000000000000000000002";

    fn config(dir: &Path) -> CredentialSetsConfig {
        let hex = Format::pattern("^[0-9a-f]{8}$").expect("pattern");
        CredentialSetsConfig {
            dir: dir.to_owned(),
            name_pattern: Some(Format::pattern("^AB[0-9]{32}$").expect("pattern")),
            values: [("TOKEN".to_owned(), vec![hex]), ("FROM".to_owned(), vec![Format::Text])].into_iter().collect(),
            required: vec!["TOKEN".to_owned()],
        }
    }

    fn write(dir: &Path, set: &str, file: &str, value: &str) {
        std::fs::create_dir_all(dir.join(set)).expect("mkdir");
        std::fs::write(dir.join(set).join(file), value).expect("write");
    }

    #[test]
    fn well_formed_folders_load_and_malformed_ones_are_named_never_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), SID_A, "TOKEN", "0123abcd\n");
        write(dir.path(), SID_A, "FROM", "+14155550100");
        write(dir.path(), SID_B, "TOKEN", "not-hex-secret-value");
        write(dir.path(), "..data", "TOKEN", "0123abcd");
        write(dir.path(), "ABnot-a-sid", "TOKEN", "0123abcd");
        let sets = CredentialSets::load(config(dir.path()));
        assert_eq!(sets.names(), vec![SID_A.to_owned()]);
        let values = sets.reveal(SID_A).expect("set A");
        let token = values.iter().find(|(name, _)| name == "TOKEN").expect("token");
        assert_eq!(token.1.reveal(), "0123abcd", "a trailing newline is not part of the value");
        let summary = sets.summary();
        let text = format!("{:?}", summary.problems);
        assert!(text.contains(&format!("{SID_B}/TOKEN")) && text.contains("malformed"), "{text}");
        assert!(text.contains("ABnot-a-sid") && !text.contains("not-hex-secret-value"), "{text}");
        assert!(sets.reveal(SID_B).is_none(), "a malformed set is left out");
    }

    #[test]
    fn a_reload_sees_folders_added_changed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sets = CredentialSets::load(config(&dir.path().join("absent-yet")));
        assert!(sets.names().is_empty() && sets.summary().problems.is_empty(), "no directory is no sets");
        let sets = CredentialSets::load(config(dir.path()));
        write(dir.path(), SID_A, "TOKEN", "0123abcd");
        assert_eq!(sets.reload().loaded, 1);
        write(dir.path(), SID_A, "EXTRA", "x");
        let summary = sets.reload();
        assert_eq!(summary.loaded, 0, "an unknown file makes the folder malformed");
        assert!(summary.problems[0].message.contains("not a setting"), "{summary:?}");
        std::fs::remove_dir_all(dir.path().join(SID_A)).expect("rm");
        assert_eq!(sets.reload(), SetsSummary { loaded: 0, readings: 4, problems: Vec::new() });
    }

    #[test]
    fn a_folder_without_a_required_value_is_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), SID_A, "FROM", "+14155550100");
        let summary = CredentialSets::load(config(dir.path())).summary();
        assert_eq!(summary.loaded, 0);
        assert!(summary.problems[0].name.ends_with(&format!("{SID_A}/TOKEN")), "{summary:?}");
    }
}
