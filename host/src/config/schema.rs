//! The shape of architecture.yaml, as written. Every struct denies unknown
//! keys, so a typo is an error that names it rather than a silent default.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureFile {
    pub services: BTreeMap<String, ServiceDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// For the operator reading the file.
    #[serde(default, rename = "description")]
    pub _description: Option<String>,
    pub listen_addr: String,
    pub admin_addr: String,
    pub data_dir: String,
    /// `sqlite://PATH` or `nats://HOST:PORT`; `sqlite://{data_dir}/bus.sqlite3` when absent.
    #[serde(default)]
    pub bus_url: Option<String>,
    /// Hours an acknowledged message is kept (`BusConfig::DEFAULT_RETENTION` when absent).
    #[serde(default)]
    pub bus_retention_hours: Option<u64>,
    /// Minutes a de-duplication key is remembered, on both backends
    /// (`BusConfig::DEFAULT_DUPLICATE_WINDOW` when absent).
    #[serde(default)]
    pub bus_duplicate_window_minutes: Option<u64>,
    /// Seconds `serve` waits at start for a bus that is not there yet
    /// (`BusConfig::DEFAULT_START_TIMEOUT` when absent).
    #[serde(default)]
    pub bus_start_timeout_seconds: Option<u64>,
    /// A listener serving only `GET /metrics`, without the admin token.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// The service's own secrets (`ADMIN_TOKEN`).
    #[serde(default)]
    pub secrets: BTreeMap<String, ValueDef>,
    /// Where mounted secret files live (Docker/Kubernetes); one file per secret name.
    #[serde(default)]
    pub secrets_dir: Option<String>,
    /// Pass `X-Forwarded-Proto`/`X-Forwarded-Host` to connectors (only behind a proxy you run).
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Swap a connector in when its component file changes.
    #[serde(default)]
    pub watch_components: Option<bool>,
    /// Poll component files instead of kernel notifications.
    #[serde(default)]
    pub watch_polling: Option<bool>,
    /// Stream name → its topics and how it keeps them, on both backends
    /// (the defaults when absent).
    #[serde(default)]
    pub streams: Option<BTreeMap<String, StreamDef>>,
    /// The NATS JetStream bus (used when the bus URL is `nats://…`).
    #[serde(default)]
    pub nats: NatsDef,
    /// Where envelopes wait while the bus is away.
    #[serde(default)]
    pub spool: SpoolDef,
    #[serde(default)]
    pub limits: LimitsDef,
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorDef>,
}

/// The NATS JetStream bus: its streams and how to reach it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDef {
    /// `auto` or a count.
    pub replicas: Option<ReplicasDef>,
    /// The older spelling of `bus_duplicate_window_minutes`, from when only
    /// JetStream had a window.
    pub duplicate_window_minutes: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    /// Credentials (token, user and password, a creds file), read like a
    /// connector's secrets.
    #[serde(default)]
    pub secrets: BTreeMap<String, ValueDef>,
    /// Plain settings (TLS files), read like a connector's variables.
    #[serde(default)]
    pub variables: BTreeMap<String, ValueDef>,
}

/// `replicas:` as written: a count, or a word (`auto`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ReplicasDef {
    Count(usize),
    Word(String),
}

/// The spool's bounds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolDef {
    pub publish_timeout_ms: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// One JetStream stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    pub subjects: Vec<String>,
    /// `limits` (kept for the retention) or `workqueue` (kept until acknowledged).
    #[serde(default)]
    pub retention: Option<String>,
}

/// Sandbox and server limits; absent ones take the documented defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDef {
    pub max_body_bytes: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub max_concurrent_instances: Option<u32>,
    pub instance_reuse: Option<u32>,
    pub shutdown_grace_ms: Option<u64>,
    pub shutdown_drain_ms: Option<u64>,
    pub max_connections: Option<u64>,
    pub write_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDef {
    /// For the operator reading the file.
    #[serde(default, rename = "description")]
    pub _description: Option<String>,
    /// The component: a file path (relative to architecture.yaml), or
    /// `bundled:NAME` for the copy built into the binary.
    pub component: String,
    /// The variable that switches the connector on (`true`) or off.
    #[serde(default)]
    pub enabled_by: Option<String>,
    /// Secrets the connector is granted, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, ValueDef>,
    /// Plain settings the connector is granted, by name.
    #[serde(default)]
    pub variables: BTreeMap<String, ValueDef>,
    /// Path prefixes of the public listener routed to this connector.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Stream name (what the connector publishes to or consumes) → bus topic.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    #[serde(default)]
    pub outbound: OutboundDef,
    #[serde(default)]
    pub egress: EgressDef,
    /// The blob store it may keep fetched bytes in; absent, none is granted.
    #[serde(default)]
    pub blobs: Option<BlobsDef>,
    /// Named sets of its secrets and settings read from a directory (one
    /// tenant each); absent, none is granted.
    #[serde(default)]
    pub credential_sets: Option<CredentialSetsDef>,
    /// A bounded in-memory cache with bounded fetches; absent, none is granted.
    #[serde(default)]
    pub cache: Option<CacheDef>,
    /// Optional parts of `<connector> wire|status` the connector offers,
    /// each a flag of its own (`--PART`).
    #[serde(default)]
    pub wiring_parts: Vec<String>,
}

/// A connector's credential sets (`credential_sets:`): one folder per set,
/// one file per value, named as the connector's own secrets and variables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSetsDef {
    /// The directory, relative to `secrets_dir` unless absolute.
    pub dir: String,
    /// A variable of the connector whose value, when set, is the directory instead.
    #[serde(default)]
    pub dir_variable: Option<String>,
    /// A regular expression every folder name must match.
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// The files a folder may hold: names of the connector's secrets and variables.
    pub values: Vec<String>,
    /// The files every folder must hold.
    #[serde(default)]
    pub required: Vec<String>,
}

/// A connector's cache (`cache:`) and the bounds on what it may fetch to fill it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDef {
    pub max_entries: Option<u64>,
    pub max_ttl_seconds: Option<u64>,
    pub fetches_per_second: Option<u32>,
    pub fetch_burst: Option<u32>,
    pub concurrent_fetches: Option<u32>,
}

/// A connector's blob store (`blobs:`): content-addressed files under
/// `DATA_DIR/media`, or objects in a bucket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsDef {
    /// The largest blob it takes, in bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// An S3-compatible bucket instead of `DATA_DIR/media`.
    #[serde(default)]
    pub s3: Option<S3Def>,
}

/// An S3-compatible bucket (`blobs.s3`); its keys are secrets
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Def {
    pub bucket: String,
    /// `https://…` of an S3-compatible service; absent, AWS S3.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Keys start with it.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A declared secret or variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueDef {
    #[serde(default)]
    pub description: Option<String>,
    /// `text`, `bool`, `url` or `integer`.
    #[serde(default)]
    pub format: Option<String>,
    /// A regular expression the value must match (`^AC[0-9a-fA-F]{32}$`).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
}

/// Where the connector may send HTTP requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundDef {
    /// Host names; `*.example.com` matches any subdomain.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Variables holding base URLs whose hosts are allowed too (overrides).
    #[serde(default)]
    pub hosts_from_variables: Vec<String>,
}

/// How the egress worker drives this connector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressDef {
    pub concurrency: Option<u32>,
    /// Messages per second per sender (`from` or messaging service).
    pub rate_per_sender: Option<f64>,
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
}
