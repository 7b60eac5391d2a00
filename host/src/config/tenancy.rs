//! What a connector needs to serve many tenants of its provider (many
//! accounts): named credential sets read from a directory (`credential_sets:`)
//! and a bounded in-memory cache with bounded fetches (`cache:`). Both are
//! generic: the names, shapes and patterns come from architecture.yaml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Format, Problems, declared_format, schema};

/// A connector's credential sets: one folder per set in `dir`, one file per
/// value, each value named and shaped as one of the connector's own secrets
/// or variables.
#[derive(Debug, Clone)]
pub struct CredentialSetsConfig {
    /// Where the folders are.
    pub dir: PathBuf,
    /// Every folder's name must match it, when given.
    pub name_pattern: Option<Format>,
    /// The files a folder may hold → the checks their declarations ask for.
    pub values: BTreeMap<String, Vec<Format>>,
    /// The files every folder must hold.
    pub required: Vec<String>,
}

/// A connector's cache and the bounds on fetching what fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries kept at once; past it, those least used go first.
    pub max_entries: u64,
    /// The longest an entry is kept, whatever the connector asks.
    pub max_ttl: Duration,
    /// Fetches granted per second, in total.
    pub fetches_per_second: u32,
    /// Fetches granted at once after a quiet spell.
    pub fetch_burst: u32,
    /// Fetches under way at once, in total.
    pub concurrent_fetches: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_ttl: Duration::from_secs(3600),
            fetches_per_second: 5,
            fetch_burst: 10,
            concurrent_fetches: 4,
        }
    }
}

/// The connector's declared secrets and variables, by name (where the
/// values of a set take their shapes from).
pub(super) struct Declarations<'a> {
    pub secrets: &'a BTreeMap<String, schema::ValueDef>,
    pub variables: &'a BTreeMap<String, schema::ValueDef>,
}

/// Resolves `credential_sets:`: the directory (the variable's value when set,
/// else `dir` under `secrets_dir`), and each value's checks.
pub(super) fn resolve_credential_sets(
    connector: &str,
    def: schema::CredentialSetsDef,
    declared: &Declarations<'_>,
    variables: &BTreeMap<String, Option<String>>,
    secrets_dir: Option<&Path>,
    problems: &mut Problems,
) -> CredentialSetsConfig {
    let prefix = format!("{connector}.credential_sets");
    let from_variable = def.dir_variable.as_ref().and_then(|name| {
        if !declared.variables.contains_key(name) {
            problems.add(format!("{prefix}.dir_variable"), format!("{name} is not a variable of {connector}"));
        }
        variables.get(name).cloned().flatten()
    });
    let dir = match from_variable {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = PathBuf::from(&def.dir);
            match secrets_dir {
                Some(base) if dir.is_relative() => base.join(dir),
                _ => dir,
            }
        }
    };
    let name_pattern = def
        .name_pattern
        .as_deref()
        .and_then(|spec| Format::pattern(spec).map_err(|e| problems.add(format!("{prefix}.name_pattern"), e)).ok());
    let mut values = BTreeMap::new();
    for name in &def.values {
        match declared.secrets.get(name).or_else(|| declared.variables.get(name)) {
            Some(value_def) => {
                values.insert(name.clone(), declared_format(name, value_def, problems));
            }
            None => {
                problems.add(format!("{prefix}.values"), format!("{name} is not a secret or variable of {connector}"))
            }
        }
    }
    for name in def.required.iter().filter(|name| !values.contains_key(*name)) {
        problems.add(format!("{prefix}.required"), format!("{name} is not one of its values"));
    }
    CredentialSetsConfig { dir, name_pattern, values, required: def.required }
}

/// Resolves `cache:`; every bound must be positive.
pub(super) fn resolve_cache(connector: &str, def: &schema::CacheDef, problems: &mut Problems) -> CacheConfig {
    let defaults = CacheConfig::default();
    let mut positive = |name: &str, value: Option<u64>, default: u64| -> u64 {
        problems.positive(format!("{connector}.cache.{name}"), value).unwrap_or(default)
    };
    let narrow = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    CacheConfig {
        max_entries: positive("max_entries", def.max_entries, defaults.max_entries),
        max_ttl: Duration::from_secs(positive("max_ttl_seconds", def.max_ttl_seconds, defaults.max_ttl.as_secs())),
        fetches_per_second: narrow(positive(
            "fetches_per_second",
            def.fetches_per_second.map(u64::from),
            u64::from(defaults.fetches_per_second),
        )),
        fetch_burst: narrow(positive("fetch_burst", def.fetch_burst.map(u64::from), u64::from(defaults.fetch_burst))),
        concurrent_fetches: narrow(positive(
            "concurrent_fetches",
            def.concurrent_fetches.map(u64::from),
            u64::from(defaults.concurrent_fetches),
        )),
    }
}
