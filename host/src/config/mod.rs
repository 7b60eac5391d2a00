//! The host's typed configuration: architecture.yaml, then the environment
//! and secret files on top of it.
//!
//! [`load`] reports every problem at once, each by the name of the setting and
//! never by its value, so `ingress-egress check` can list them all.

pub mod admin_token;
mod blobs;
mod format;
mod schema;
mod secret;
mod sections;
mod tenancy;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use blobs::{BlobPlace, BlobsConfig, BucketConfig, BucketCredentials};
pub use format::{Format, parse_bool};
pub use secret::Secret;
pub use sections::{
    BusConfig, BusUrl, MetricsConfig, NatsConfig, Replicas, ServerConfig, SpoolConfig, StreamRetention, StreamSpec,
    WatchConfig,
};
pub use tenancy::{CacheConfig, CredentialSetsConfig};

/// The stream a connector consumes egress messages from: a work queue.
pub const EGRESS_STREAM: &str = "egress";

/// The service this host runs, as named in architecture.yaml.
pub const SERVICE_NAME: &str = "ingress-egress";

/// A snapshot of environment variables, so configuration is a pure function
/// of its inputs (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The current process's environment.
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    /// A variable's value; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Sets a variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Unsets a variable.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.0.remove(name);
        self
    }

    /// The variables of a dotenv file (`KEY=VALUE` lines, comments, quotes and
    /// `export` as dotenvy reads them); the error names the file and where.
    pub fn from_dotenv_file(path: &Path) -> anyhow::Result<Self> {
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot read the env file {}: {e}", shown.display()))?;
        Self::from_dotenv(file).map_err(|e| anyhow::anyhow!("the env file {} is malformed: {e}", shown.display()))
    }

    /// The variables of dotenv text. A malformed line is located by the name
    /// before it, never shown: it may hold a secret (dotenvy's own message
    /// quotes the line).
    pub fn from_dotenv(reader: impl std::io::Read) -> Result<Self, String> {
        let mut env = Self::default();
        let mut last_name: Option<String> = None;
        for entry in dotenvy::from_read_iter(reader) {
            match entry {
                Ok((name, value)) => {
                    env.set(name.clone(), value);
                    last_name = Some(name);
                }
                Err(dotenvy::Error::Io(e)) => return Err(e.to_string()),
                Err(dotenvy::Error::LineParse(_, column)) => {
                    let place =
                        last_name.map_or_else(|| "the first entry".to_owned(), |n| format!("the entry after {n}"));
                    return Err(format!("{place} cannot be read (at character {column} of its line)"));
                }
                Err(_) => {
                    let place =
                        last_name.map_or_else(|| "the first entry".to_owned(), |n| format!("the entry after {n}"));
                    return Err(format!("{place} refers to a variable that is not valid text"));
                }
            }
        }
        Ok(env)
    }

    /// These values under `over`: where both set a name, `over` wins.
    pub fn merged_under(mut self, over: Env) -> Self {
        self.0.extend(over.0);
        self
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    /// Later pairs win over earlier ones of the same name.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// One thing wrong with the configuration, said by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting, as the operator writes it.
    pub name: String,
    /// What is wrong (never its value).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is part of the message, not a `source`: printed with its
    /// chain, it would otherwise appear twice.
    #[error("cannot read the architecture file {}: {reason} (another one: --architecture PATH or ARCHITECTURE=PATH)", .path.display())]
    Read {
        /// The file tried, made absolute.
        path: PathBuf,
        /// Why it could not be read.
        reason: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("{path} is not a valid architecture file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Settings that are missing or malformed, all of them.
    #[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Sandbox and server limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger webhook bodies are answered 413 before the connector sees them.
    pub max_body_bytes: usize,
    /// Linear memory one connector instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock bound on one call into a connector (CPU and waiting alike).
    pub call_timeout: Duration,
    /// Bound on reading a request's headers.
    pub header_read_timeout: Duration,
    /// Bound on reading a request's body.
    pub body_read_timeout: Duration,
    /// Instances alive at once (the pooling allocator's size).
    pub max_concurrent_instances: u32,
    /// Calls a warm instance serves before it is replaced.
    pub instance_reuse: u32,
    /// How long shutdown waits for requests and sends in flight.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the listener keeps serving while `/readyz`
    /// answers 503, so a load balancer stops sending before it stops accepting.
    pub shutdown_drain: Duration,
    /// Public connections open at once; past it, new ones are closed at once.
    pub max_connections: usize,
    /// Bound on one write of a response to a peer that does not read.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            max_concurrent_instances: 256,
            instance_reuse: 1000,
            shutdown_grace: Duration::from_secs(15),
            // Kubernetes' endpoints controller and kube-proxy take a few seconds
            // to stop routing to a terminating pod.
            shutdown_drain: Duration::from_secs(5),
            max_connections: 4096,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a connector's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// The copy built into this binary, by name.
    Bundled(String),
    /// A component file (watched for hot swaps).
    File(PathBuf),
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled(name) => write!(f, "bundled:{name}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How the egress worker drives a connector.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Messages sent at once.
    pub concurrency: u32,
    /// Messages per second per sender (the connector names the sender).
    pub rate_per_sender: f64,
    /// Attempts before a retryable failure is dead-lettered.
    pub max_attempts: u32,
    /// The first retry's delay; it doubles, with jitter.
    pub initial_backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            rate_per_sender: 10.0,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// One connector, resolved.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// Its name under `connectors:`.
    pub name: String,
    /// Whether it is loaded (see `enabled_by`).
    pub enabled: bool,
    /// The variable that decided `enabled`, for messages.
    pub enabled_by: Option<String>,
    /// Where its component comes from.
    pub component: ComponentSource,
    /// Granted secrets: name → value when set.
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// Granted variables: name → value when set or defaulted.
    pub variables: BTreeMap<String, String>,
    /// Paths of the public listener it serves (a trailing `/` makes a prefix).
    pub routes: Vec<String>,
    /// Stream name (what the connector knows) → bus topic.
    pub topics: BTreeMap<String, String>,
    /// Host names (`*.domain` patterns allowed) the connector may call.
    pub outbound_hosts: Vec<String>,
    /// How its egress worker drives it.
    pub egress: EgressConfig,
    /// Its blob store, when it is granted one.
    pub blobs: Option<BlobsConfig>,
    /// Its credential sets (one per tenant), when it is granted them.
    pub credential_sets: Option<CredentialSetsConfig>,
    /// Its in-memory cache, when it is granted one.
    pub cache: Option<CacheConfig>,
    /// Optional parts of `<connector> wire|status`, each a `--PART` flag.
    pub wiring_parts: Vec<String>,
}

/// The whole service, resolved: one section per capability.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The embedded bus and the compile cache live here.
    pub data_dir: PathBuf,
    /// The listeners.
    pub server: ServerConfig,
    /// The bus.
    pub bus: BusConfig,
    /// Where envelopes wait while the bus is away.
    pub spool: SpoolConfig,
    /// The component watcher.
    pub watch: WatchConfig,
    /// The metrics.
    pub metrics: MetricsConfig,
    /// Sandbox and server limits.
    pub limits: Limits,
    /// Every connector, enabled or not.
    pub connectors: Vec<ConnectorConfig>,
}

impl ServiceConfig {
    /// The connectors to load.
    pub fn enabled_connectors(&self) -> impl Iterator<Item = &ConnectorConfig> {
        self.connectors.iter().filter(|c| c.enabled)
    }
}

/// Whether a command needs the connectors' secrets. (The bus's own, such as
/// `NATS_TOKEN`, are read whenever the bus is NATS.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read and checked: `serve`, `check`, and commands that call a connector.
    Required,
    /// Neither read nor checked (granted as unset): commands that only use the
    /// bus or a running service's admin listener.
    NotNeeded,
}

/// Reads architecture.yaml at `path` and resolves it against `env`.
pub fn load(path: &Path, env: &Env) -> Result<ServiceConfig, ConfigError> {
    load_for(path, env, Secrets::Required)
}

/// [`load`], reading the connectors' secrets only when `secrets` requires them.
pub fn load_for(path: &Path, env: &Env, secrets: Secrets) -> Result<ServiceConfig, ConfigError> {
    load_text(&read(path)?, path, env, secrets)
}

/// Each connector architecture.yaml at `path` names, with its optional
/// wiring parts (`wiring_parts:`), read from the file alone: a connector's
/// command line and its `--help` need no secret, variable or valid setting.
pub fn connector_commands(path: &Path) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let service = service_def(&read(path)?).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
    Ok(service.connectors.into_iter().map(|(name, def)| (name, def.wiring_parts)).collect())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        reason,
    })
}

/// [`load_for`] on text already read (the fuzzer's way in): `path` names it
/// in errors, and relative paths in it are relative to `path`'s directory.
pub fn load_text(text: &str, path: &Path, env: &Env, secrets: Secrets) -> Result<ServiceConfig, ConfigError> {
    let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
    parse(text, &base_dir, env, secrets).map_err(|e| match e {
        ParseFailure::Syntax(message) => ConfigError::Parse { path: path.to_owned(), message },
        ParseFailure::Invalid(problems) => ConfigError::Invalid(problems),
    })
}

enum ParseFailure {
    Syntax(String),
    Invalid(Vec<Problem>),
}

/// This service's definition in architecture.yaml's `text`, as written.
fn service_def(text: &str) -> Result<schema::ServiceDef, String> {
    let mut file: schema::ArchitectureFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    file.services.remove(SERVICE_NAME).ok_or_else(|| format!("no service named {SERVICE_NAME} under `services`"))
}

fn parse(text: &str, base_dir: &Path, env: &Env, secrets: Secrets) -> Result<ServiceConfig, ParseFailure> {
    let service = service_def(text).map_err(ParseFailure::Syntax)?;
    let mut problems = Problems::default();
    let config = resolve(service, base_dir, env, secrets, &mut problems);
    if problems.0.is_empty() { Ok(config) } else { Err(ParseFailure::Invalid(problems.0)) }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { name: name.into(), message: message.into() });
    }

    /// `value`, unless it is zero: then a problem named `name`, and `None`
    /// (the caller's default).
    fn positive(&mut self, name: impl Into<String>, value: Option<u64>) -> Option<u64> {
        if value == Some(0) {
            self.add(name, "must be greater than zero");
            return None;
        }
        value
    }
}

fn resolve(
    service: schema::ServiceDef,
    base_dir: &Path,
    env: &Env,
    secrets: Secrets,
    problems: &mut Problems,
) -> ServiceConfig {
    let relative = |p: &str| -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() { path } else { base_dir.join(path) }
    };
    let secrets_dir = env.get("SECRETS_DIR").map(PathBuf::from).or(service.secrets_dir.as_deref().map(relative));
    let server = resolve_server(&service, env, secrets_dir.as_deref(), problems);
    let data_dir = env.get("DATA_DIR").map(PathBuf::from).unwrap_or_else(|| relative(&service.data_dir));
    let secret_source = match secrets {
        Secrets::Required => Some(SecretSource { env, dir: secrets_dir.as_deref() }),
        Secrets::NotNeeded => None,
    };
    let mut bus = BusConfig::embedded(&data_dir);
    if let Some(hours) = problems.positive("bus_retention_hours", service.bus_retention_hours) {
        bus.retention = Duration::from_secs(3600 * hours);
    }
    if let Some(seconds) = problems.positive("bus_start_timeout_seconds", service.bus_start_timeout_seconds) {
        bus.start_timeout = Duration::from_secs(seconds);
    }
    match env.get("BUS_URL").map(str::to_owned).or(service.bus_url) {
        None => {}
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => bus.url = BusUrl::Sqlite(relative(path)),
            Some(_) => problems.add("BUS_URL", "expected sqlite://PATH"),
            None => match BusUrl::nats_seeds(&url) {
                Ok(seeds) => bus.url = BusUrl::Nats(seeds),
                Err(reason) => problems.add("BUS_URL", reason),
            },
        },
    }
    if let Some(streams) = service.streams {
        bus.streams = streams.into_iter().map(|(name, stream)| resolve_stream(name, stream, problems)).collect();
    }
    // The bus's credentials, unlike the connectors', are needed by every
    // command that opens the bus (`tail`, `send`), whatever `secrets` says.
    let bus_secrets = matches!(bus.url, BusUrl::Nats(_)).then_some(SecretSource { env, dir: secrets_dir.as_deref() });
    bus.duplicate_window = resolve_duplicate_window(service.bus_duplicate_window_minutes, &service.nats, problems)
        .unwrap_or(bus.duplicate_window);
    if bus.duplicate_window > bus.retention {
        problems.add("bus_duplicate_window_minutes", "must not be longer than bus_retention_hours");
    }
    bus.nats = resolve_nats(service.nats, env, bus_secrets, problems);
    let watch = WatchConfig {
        enabled: service.watch_components.unwrap_or(WatchConfig::default().enabled),
        polling: service.watch_polling.unwrap_or(WatchConfig::default().polling),
        ..WatchConfig::default()
    };
    let limits = resolve_limits(&service.limits, problems);
    let connectors: Vec<ConnectorConfig> = service
        .connectors
        .into_iter()
        .map(|(name, mut def)| {
            let blobs = def.blobs.take().map(|blobs| blobs::resolve(&name, blobs, &data_dir, secret_source, problems));
            ConnectorConfig {
                blobs,
                ..resolve_connector(name, def, &relative, env, secret_source, secrets_dir.as_deref(), problems)
            }
        })
        .collect();
    check_topics_have_streams(&bus, &connectors, problems);
    let spool = resolve_spool(&service.spool, &data_dir, problems);
    ServiceConfig { data_dir, server, bus, spool, watch, metrics: MetricsConfig::default(), limits, connectors }
}

fn resolve_limits(def: &schema::LimitsDef, problems: &mut Problems) -> Limits {
    let defaults = Limits::default();
    // Every count and bound must be positive; an absent one takes its default.
    let mut count = |name: &str, value: Option<u64>, default: u64| -> u64 {
        problems.positive(format!("limits.{name}"), value).unwrap_or(default)
    };
    let max_body_bytes = count("max_body_bytes", def.max_body_bytes, defaults.max_body_bytes as u64) as usize;
    let memory_bytes = count("memory_bytes", def.memory_bytes, defaults.memory_bytes as u64) as usize;
    let max_connections = count("max_connections", def.max_connections, defaults.max_connections as u64) as usize;
    let instances = count(
        "max_concurrent_instances",
        def.max_concurrent_instances.map(u64::from),
        u64::from(defaults.max_concurrent_instances),
    );
    let reuse = count("instance_reuse", def.instance_reuse.map(u64::from), u64::from(defaults.instance_reuse));
    let mut millis = |name: &str, value: Option<u64>, default: Duration| -> Duration {
        problems.positive(format!("limits.{name}"), value).map_or(default, Duration::from_millis)
    };
    Limits {
        max_body_bytes,
        memory_bytes,
        call_timeout: millis("call_timeout_ms", def.call_timeout_ms, defaults.call_timeout),
        header_read_timeout: millis("header_read_timeout_ms", def.header_read_timeout_ms, defaults.header_read_timeout),
        body_read_timeout: millis("body_read_timeout_ms", def.body_read_timeout_ms, defaults.body_read_timeout),
        write_timeout: millis("write_timeout_ms", def.write_timeout_ms, defaults.write_timeout),
        max_concurrent_instances: u32::try_from(instances).unwrap_or(u32::MAX),
        instance_reuse: u32::try_from(reuse).unwrap_or(u32::MAX),
        max_connections,
        shutdown_grace: millis("shutdown_grace_ms", def.shutdown_grace_ms, defaults.shutdown_grace),
        // Zero is allowed: no drain (a process no load balancer routes to).
        shutdown_drain: def.shutdown_drain_ms.map_or(defaults.shutdown_drain, Duration::from_millis),
    }
}

fn resolve_connector(
    name: String,
    def: schema::ConnectorDef,
    relative: &dyn Fn(&str) -> PathBuf,
    env: &Env,
    secret_source: Option<SecretSource<'_>>,
    secrets_dir: Option<&Path>,
    problems: &mut Problems,
) -> ConnectorConfig {
    let component = resolve_component(&name, &def.component, relative, env);
    // Variables first: `enabled_by` is one of them (or a plain environment variable).
    let variables = Declared::variables(&def.variables, env, problems);
    let enabled = resolve_enabled(def.enabled_by.as_deref(), &variables.values, env, problems);
    let secrets = Declared::secrets(&def.secrets, secret_source, problems);
    if enabled {
        variables.check(problems, |value| value.map(String::as_str));
        if secret_source.is_some() {
            secrets.check(problems, |value| value.map(Secret::reveal));
        }
    }
    let outbound_hosts = resolve_outbound(&def.outbound, &variables.values);
    let declared = tenancy::Declarations { secrets: &def.secrets, variables: &def.variables };
    let credential_sets = def
        .credential_sets
        .map(|sets| tenancy::resolve_credential_sets(&name, sets, &declared, &variables.values, secrets_dir, problems));
    let cache = def.cache.as_ref().map(|cache| tenancy::resolve_cache(&name, cache, problems));
    check_wiring_parts(&name, &def.wiring_parts, problems);
    ConnectorConfig {
        name,
        enabled,
        enabled_by: def.enabled_by,
        component,
        secrets: secrets.values,
        variables: variables.into_present(),
        routes: def.routes,
        topics: def.topics,
        outbound_hosts,
        egress: resolve_egress(&def.egress),
        blobs: None,
        credential_sets,
        cache,
        wiring_parts: def.wiring_parts,
    }
}

/// The flags `wire` and `status` take themselves, which no part may shadow.
pub const WIRING_FLAGS: [&str; 5] = ["public-url", "dry-run", "account", "all-accounts", "help"];

/// Each wiring part becomes a flag: lowercase words joined by hyphens, none
/// of the commands' own flags.
fn check_wiring_parts(connector: &str, parts: &[String], problems: &mut Problems) {
    for part in parts {
        let words_ok = !part.is_empty()
            && part
                .split('-')
                .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if !words_ok || WIRING_FLAGS.contains(&part.as_str()) {
            problems.add(
                format!("{connector}.wiring_parts"),
                format!(
                    "{part:?} cannot be a flag of wire and status: lowercase words joined by hyphens, not one of {}",
                    WIRING_FLAGS.join(", ")
                ),
            );
        }
    }
}

fn resolve_spool(def: &schema::SpoolDef, data_dir: &Path, problems: &mut Problems) -> SpoolConfig {
    let defaults = SpoolConfig::in_dir(data_dir);
    SpoolConfig {
        publish_timeout: problems
            .positive("spool.publish_timeout_ms", def.publish_timeout_ms)
            .map_or(defaults.publish_timeout, Duration::from_millis),
        max_bytes: problems.positive("spool.max_bytes", def.max_bytes).unwrap_or(defaults.max_bytes),
        ..defaults
    }
}

/// Every topic of an enabled connector is held by a stream, and its egress
/// topic by a work queue: NATS refuses a publish no stream holds, and a
/// stream that keeps messages by age alone would drop unsent egress.
fn check_topics_have_streams(bus: &BusConfig, connectors: &[ConnectorConfig], problems: &mut Problems) {
    for connector in connectors.iter().filter(|c| c.enabled) {
        for (role, topic) in &connector.topics {
            let name = format!("{}.topics.{role}", connector.name);
            match bus.stream_of(topic) {
                None => problems.add(name, format!("no stream holds {topic} (see `streams`)")),
                Some(stream) if role == EGRESS_STREAM && stream.retention != StreamRetention::WorkQueue => {
                    problems.add(name, format!("{topic} is in stream {}, which is not a work queue", stream.name))
                }
                Some(_) => {}
            }
        }
    }
}

/// The listeners, and the service's own secrets: the admin token, always
/// read (the CLI's `reload` sends it), and required when the admin listener
/// is not on a loopback address.
fn resolve_server(
    service: &schema::ServiceDef,
    env: &Env,
    secrets_dir: Option<&Path>,
    problems: &mut Problems,
) -> ServerConfig {
    let mut addr = |name: &str, value: &str| -> SocketAddr {
        value.parse().unwrap_or_else(|_| {
            problems.add(name, "expected an address such as 127.0.0.1:8080");
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen_addr = addr("LISTEN_ADDR", env.get("LISTEN_ADDR").unwrap_or(&service.listen_addr));
    let admin_addr = addr("ADMIN_ADDR", env.get("ADMIN_ADDR").unwrap_or(&service.admin_addr));
    let metrics_addr = env.get("METRICS_ADDR").or(service.metrics_addr.as_deref()).map(|v| addr("METRICS_ADDR", v));
    let own = Declared::secrets(&service.secrets, Some(SecretSource { env, dir: secrets_dir }), problems);
    own.check(problems, |value| value.map(Secret::reveal));
    let admin_token = own.values.get("ADMIN_TOKEN").cloned().flatten();
    if admin_token.is_none() && !admin_addr.ip().is_loopback() {
        problems.add("ADMIN_TOKEN", format!("required: ADMIN_ADDR {admin_addr} is not a loopback address"));
    }
    ServerConfig {
        listen_addr,
        admin_addr,
        admin_token,
        metrics_addr,
        trust_forwarded_headers: service.trust_forwarded_headers,
    }
}

/// `bus_duplicate_window_minutes`, or its older spelling under `nats:`; not both.
fn resolve_duplicate_window(minutes: Option<u64>, nats: &schema::NatsDef, problems: &mut Problems) -> Option<Duration> {
    let minutes = match (minutes, nats.duplicate_window_minutes) {
        (Some(_), Some(_)) => {
            problems
                .add("nats.duplicate_window_minutes", "the older spelling of bus_duplicate_window_minutes: set one");
            None
        }
        (Some(minutes), None) => problems.positive("bus_duplicate_window_minutes", Some(minutes)),
        (None, older) => problems.positive("nats.duplicate_window_minutes", older),
    };
    minutes.map(|minutes| Duration::from_secs(60 * minutes))
}

/// The JetStream settings. Their secrets are read (from `in_use`) and they
/// and the variables are checked only when the bus is NATS.
fn resolve_nats(
    def: schema::NatsDef,
    env: &Env,
    in_use: Option<SecretSource<'_>>,
    problems: &mut Problems,
) -> NatsConfig {
    let defaults = NatsConfig::default();
    let variables = Declared::variables(&def.variables, env, problems);
    let secrets = Declared::secrets(&def.secrets, in_use, problems);
    if in_use.is_some() {
        variables.check(problems, |value| value.map(String::as_str));
        secrets.check(problems, |value| value.map(Secret::reveal));
    }
    NatsConfig {
        replicas: match def.replicas {
            None => defaults.replicas,
            Some(schema::ReplicasDef::Word(word)) if word == "auto" => Replicas::Auto,
            Some(schema::ReplicasDef::Count(count @ 1..=5)) => Replicas::Fixed(count),
            Some(_) => {
                problems.add("nats.replicas", "expected auto, or a count from 1 to 5 (JetStream's most)");
                defaults.replicas
            }
        },
        connect_timeout: def.connect_timeout_ms.map_or(defaults.connect_timeout, Duration::from_millis),
        secrets: secrets.values,
        variables: variables.into_present(),
    }
}

fn resolve_stream(name: String, def: schema::StreamDef, problems: &mut Problems) -> StreamSpec {
    let retention = match def.retention.as_deref() {
        None | Some("limits") => StreamRetention::Limits,
        Some("workqueue") => StreamRetention::WorkQueue,
        Some(_) => {
            problems.add(format!("streams.{name}.retention"), "expected limits or workqueue");
            StreamRetention::Limits
        }
    };
    if def.subjects.is_empty() {
        problems.add(format!("streams.{name}.subjects"), "a stream needs at least one subject");
    }
    StreamSpec { name, subjects: def.subjects, retention }
}

/// The component's source: `CONNECTOR_<NAME>_COMPONENT`, else architecture.yaml.
fn resolve_component(name: &str, declared: &str, relative: &dyn Fn(&str) -> PathBuf, env: &Env) -> ComponentSource {
    let component_var = format!("CONNECTOR_{}_COMPONENT", name.to_ascii_uppercase().replace('-', "_"));
    match env.get(&component_var) {
        Some(path) => ComponentSource::File(PathBuf::from(path)),
        None => match declared.strip_prefix("bundled:") {
            Some(bundled) => ComponentSource::Bundled(bundled.to_owned()),
            None => ComponentSource::File(relative(declared)),
        },
    }
}

/// Whether the connector is on: its `enabled_by` variable (or plain
/// environment variable) is true, or absent.
fn resolve_enabled(
    enabled_by: Option<&str>,
    variables: &BTreeMap<String, Option<String>>,
    env: &Env,
    problems: &mut Problems,
) -> bool {
    let Some(var) = enabled_by else { return true };
    let value = variables.get(var).and_then(Option::as_deref).or_else(|| env.get(var));
    match value.map(parse_bool) {
        None => true,
        Some(Some(enabled)) => enabled,
        Some(None) => {
            problems.add(var, "expected true or false");
            false
        }
    }
}

/// The declared hosts, plus the host of each URL variable named for it.
fn resolve_outbound(def: &schema::OutboundDef, variables: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut hosts = def.hosts.clone();
    for var in &def.hosts_from_variables {
        if let Some(url) = variables.get(var).and_then(Option::as_deref).and_then(|v| url::Url::parse(v).ok())
            && let Some(host) = url.host_str()
        {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

fn resolve_egress(def: &schema::EgressDef) -> EgressConfig {
    let defaults = EgressConfig::default();
    EgressConfig {
        concurrency: def.concurrency.unwrap_or(defaults.concurrency).max(1),
        rate_per_sender: def.rate_per_sender.filter(|r| *r > 0.0).unwrap_or(defaults.rate_per_sender),
        max_attempts: def.max_attempts.unwrap_or(defaults.max_attempts).max(1),
        initial_backoff: def.initial_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.initial_backoff),
        max_backoff: def.max_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.max_backoff),
    }
}

/// Declared values (variables or secrets) with what was found for them and
/// the checks their declarations ask for.
struct Declared<'a, T> {
    values: BTreeMap<String, Option<T>>,
    checks: Vec<(&'a str, Vec<Format>, &'a schema::ValueDef)>,
    /// Values that could not be read: reported instead of checked.
    unreadable: Vec<(String, String)>,
}

impl<'a> Declared<'a, String> {
    /// Declared variables: the environment's value, else the declared default.
    fn variables(defs: &'a BTreeMap<String, schema::ValueDef>, env: &Env, problems: &mut Problems) -> Self {
        Self::resolve(defs, problems, |var| Ok(env.get(var).map(str::to_owned).or_else(|| defs[var].default.clone())))
    }
}

impl<'a> Declared<'a, Secret> {
    /// Declared secrets, read from `source`; all unset when there is none
    /// (a command that does not need them).
    fn secrets(
        defs: &'a BTreeMap<String, schema::ValueDef>,
        source: Option<SecretSource<'_>>,
        problems: &mut Problems,
    ) -> Self {
        Self::resolve(defs, problems, |name| match source {
            Some(source) => read_secret(name, source.env, source.dir),
            None => Ok(None),
        })
    }
}

impl<'a, T> Declared<'a, T> {
    /// Looks each declared name up with `find`; a malformed declaration is a problem.
    fn resolve(
        defs: &'a BTreeMap<String, schema::ValueDef>,
        problems: &mut Problems,
        mut find: impl FnMut(&str) -> Result<Option<T>, String>,
    ) -> Self {
        let mut declared = Self { values: BTreeMap::new(), checks: Vec::new(), unreadable: Vec::new() };
        for (name, def) in defs {
            let formats = declared_format(name, def, problems);
            let value = find(name).unwrap_or_else(|message| {
                declared.unreadable.push((name.clone(), message));
                None
            });
            declared.values.insert(name.clone(), value);
            declared.checks.push((name, formats, def));
        }
        declared
    }

    /// The values that are set, by name.
    fn into_present(self) -> BTreeMap<String, T> {
        self.values.into_iter().filter_map(|(name, value)| Some((name, value?))).collect()
    }

    /// Reports the missing, malformed and unreadable values (never the values).
    fn check(&self, problems: &mut Problems, text: impl Fn(Option<&T>) -> Option<&str>) {
        for (name, message) in &self.unreadable {
            problems.add(name.clone(), message.clone());
        }
        for (name, formats, def) in &self.checks {
            if self.unreadable.iter().any(|(unreadable, _)| unreadable == name) {
                continue;
            }
            check_value(name, text(self.values.get(*name).and_then(Option::as_ref)), formats, def, problems);
        }
    }
}

/// The checks declared for a value: its `format`, its `pattern`, or both.
fn declared_format(name: &str, def: &schema::ValueDef, problems: &mut Problems) -> Vec<Format> {
    let format = def.format.as_deref().map(|spec| (Format::parse(spec), "format"));
    let pattern = def.pattern.as_deref().map(|spec| (Format::pattern(spec), "pattern"));
    format
        .into_iter()
        .chain(pattern)
        .filter_map(|(parsed, key)| parsed.map_err(|e| problems.add(format!("{name}.{key}"), e)).ok())
        .collect()
}

fn check_value(name: &str, value: Option<&str>, formats: &[Format], def: &schema::ValueDef, problems: &mut Problems) {
    match value {
        None if def.required => match &def.description {
            Some(description) => problems.add(name, format!("missing ({description})")),
            None => problems.add(name, "missing"),
        },
        None => {}
        Some(value) => {
            if let Some(expected) = formats.iter().find_map(|format| format.check(value).err()) {
                problems.add(name, format!("malformed: {expected}"));
            }
        }
    }
}

/// Where secret values come from.
#[derive(Clone, Copy)]
struct SecretSource<'a> {
    env: &'a Env,
    dir: Option<&'a Path>,
}

/// A secret from `NAME`, the file named by `NAME_FILE`, or `secrets_dir/NAME`.
fn read_secret(name: &str, env: &Env, secrets_dir: Option<&Path>) -> Result<Option<Secret>, String> {
    if let Some(value) = env.get(name) {
        return Ok(Some(Secret::new(value)));
    }
    let file_var = format!("{name}_FILE");
    if let Some(path) = env.get(&file_var) {
        return std::fs::read_to_string(path)
            .map(|text| Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
            .map_err(|e| format!("cannot read the file named by {file_var}: {}", e.kind()));
    }
    if let Some(dir) = secrets_dir {
        let path = dir.join(name);
        if path.is_file() {
            return std::fs::read_to_string(&path)
                .map(|text| Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
