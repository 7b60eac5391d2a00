//! One section per capability of the service, each with its defaults written
//! here once: the bus, the listeners, the component watcher and the metrics.
//! architecture.yaml and the environment override them; absent keys take them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Secret;

/// Where the bus lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    /// The embedded bus: one SQLite file.
    Sqlite(PathBuf),
    /// NATS JetStream: the seed servers (`nats://HOST:PORT` or
    /// `tls://HOST:PORT`), as every NATS client takes them; the client learns
    /// the rest of the cluster from whichever answers first.
    Nats(Vec<String>),
}

impl fmt::Display for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Nats(seeds) => f.write_str(&seeds.join(",")),
        }
    }
}

impl BusUrl {
    /// The NATS seed list in `list`: comma-separated entries, each
    /// `nats://HOST:PORT`, `tls://HOST:PORT` or a bare `HOST:PORT`, as NATS
    /// clients take them. The error names the first bad entry; one holding
    /// credentials is refused without quoting it (they belong in NATS_USER /
    /// NATS_PASSWORD or NATS_TOKEN, which are secrets; BUS_URL is logged).
    pub fn nats_seeds(list: &str) -> Result<Vec<String>, String> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        if entries.iter().all(|entry| entry.is_empty()) {
            return Err("expected sqlite://PATH or nats://HOST:PORT[,nats://HOST:PORT…]".to_owned());
        }
        entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                nats_seed(entry).map_err(|why| {
                    format!(
                        "seed {} of the list {why} (expected nats://HOST:PORT, tls://HOST:PORT or HOST:PORT)",
                        index + 1
                    )
                })
            })
            .collect()
    }
}

/// One seed, with its scheme (`nats://` when it has none).
fn nats_seed(entry: &str) -> Result<String, String> {
    if entry.is_empty() {
        return Err("is empty".to_owned());
    }
    let with_scheme = if entry.contains("://") { entry.to_owned() } else { format!("nats://{entry}") };
    let url = url::Url::parse(&with_scheme).map_err(|_| format!("({entry:?}) is not a server address"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds credentials; set NATS_USER and NATS_PASSWORD, or NATS_TOKEN, instead".to_owned());
    }
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!("({entry:?}) has the scheme {:?}", url.scheme()));
    }
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(|| format!("({entry:?}) has no host"))?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("({entry:?}) has more than a host and port"));
    }
    Ok(format!("{}://{host}:{}", url.scheme(), url.port().unwrap_or(4222)))
}

/// The bus: where it is and how long it keeps what was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Where the bus is.
    pub url: BusUrl,
    /// How long stream messages stay, and acknowledged work-queue messages
    /// on the embedded bus.
    pub retention: Duration,
    /// How long a de-duplication key is remembered after its publish, on
    /// both backends (JetStream's duplicate window for `Nats-Msg-Id`).
    pub duplicate_window: Duration,
    /// Which topics are streams and which are work queues, on both backends.
    pub streams: Vec<StreamSpec>,
    /// The JetStream settings, used when `url` is NATS.
    pub nats: NatsConfig,
    /// How long `serve` waits at start for a bus that is not there yet (a
    /// NATS cluster still electing its leader) before it gives up.
    pub start_timeout: Duration,
}

impl BusConfig {
    /// A week: longer than any provider's webhook retry horizon, so a
    /// redelivered webhook still finds its de-duplication key.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

    /// An hour: Twilio's retries of one webhook (connection overrides allow
    /// at most 5, each bounded by seconds) end well within it.
    pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);

    /// A minute: long enough for a JetStream cluster to elect its meta
    /// leader after its pods started together, short enough that a bus
    /// that is really not there fails the start visibly.
    pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

    /// Ingress, events and dead letters as streams; egress as a work queue.
    pub fn default_streams() -> Vec<StreamSpec> {
        let spec = |name: &str, subject: &str, retention| StreamSpec {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention,
        };
        vec![
            spec("INGRESS", "ingress.>", StreamRetention::Limits),
            spec("EVENTS", "events.>", StreamRetention::Limits),
            spec("DEADLETTER", "deadletter.>", StreamRetention::Limits),
            spec("EGRESS", "egress.>", StreamRetention::WorkQueue),
        ]
    }

    /// The stream that holds `topic`, if one does.
    pub fn stream_of(&self, topic: &str) -> Option<&StreamSpec> {
        self.streams.iter().find(|stream| stream.holds(topic))
    }

    /// The embedded bus in `data_dir`, the default when no `BUS_URL` is set.
    pub fn embedded(data_dir: &Path) -> Self {
        Self {
            url: BusUrl::Sqlite(data_dir.join("bus.sqlite3")),
            retention: Self::DEFAULT_RETENTION,
            duplicate_window: Self::DEFAULT_DUPLICATE_WINDOW,
            streams: Self::default_streams(),
            nats: NatsConfig::default(),
            start_timeout: Self::DEFAULT_START_TIMEOUT,
        }
    }
}

/// How a JetStream stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRetention {
    /// For the bus's retention, consumed or not (ingress, events, dead letters).
    Limits,
    /// Until a consumer acknowledges it (egress): one durable consumer that
    /// every host shares.
    WorkQueue,
}

/// One JetStream stream and the subjects (topics) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// Subjects, wildcards allowed (`ingress.>`).
    pub subjects: Vec<String>,
    /// How it keeps messages.
    pub retention: StreamRetention,
}

impl StreamSpec {
    /// Whether one of the stream's subjects matches `topic`, as NATS matches
    /// them: `*` stands for one token, a final `>` for one or more.
    pub fn holds(&self, topic: &str) -> bool {
        self.subjects.iter().any(|subject| subject_matches(subject, topic))
    }
}

fn subject_matches(pattern: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    for token in pattern.split('.') {
        match (token, topic_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(found)) if expected == found => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

/// How many copies JetStream keeps of each stream (and state bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// What fits the server: 1 on a server alone, 3 in a cluster.
    Auto,
    /// This many, whatever the server.
    Fixed(usize),
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(count) => write!(f, "{count}"),
        }
    }
}

/// The NATS JetStream bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Copies of each stream.
    pub replicas: Replicas,
    /// Bound on connecting and on each request to the server.
    pub connect_timeout: Duration,
    /// Credentials by name (`NATS_TOKEN`, `NATS_PASSWORD`, `NATS_CREDS`).
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// Plain settings by name (`NATS_USER`, TLS files).
    pub variables: BTreeMap<String, String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            replicas: Replicas::Auto,
            connect_timeout: Duration::from_secs(5),
            secrets: BTreeMap::new(),
            variables: BTreeMap::new(),
        }
    }
}

/// The spool: where envelopes wait, fsync'd, while the bus cannot take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool's file.
    pub path: PathBuf,
    /// A publish the bus has not confirmed within this goes to the spool.
    pub publish_timeout: Duration,
    /// Past this many bytes of payload the spool refuses (the webhook gets 503).
    pub max_bytes: u64,
    /// How often the drainer tries the bus again.
    pub drain_interval: Duration,
}

impl SpoolConfig {
    /// The spool in `data_dir`, with the defaults.
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("spool.sqlite3"),
            // Twilio waits 15 s for an answer; the spool write fits well within.
            publish_timeout: Duration::from_secs(2),
            max_bytes: 256 << 20,
            drain_interval: Duration::from_millis(500),
        }
    }
}

/// The two listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Webhooks and health: faces the internet.
    pub listen_addr: SocketAddr,
    /// Metrics, reload, egress and tokens: keep it internal.
    pub admin_addr: SocketAddr,
    /// The bearer token every admin route requires (`ADMIN_TOKEN`); when
    /// unset, `serve` generates one in `DATA_DIR/admin-token` (see
    /// [`super::admin_token`]).
    pub admin_token: Option<Secret>,
    /// A listener serving only `GET /metrics` without the token, when set.
    pub metrics_addr: Option<SocketAddr>,
    /// Pass `X-Forwarded-Proto`/`X-Forwarded-Host` to connectors (only behind
    /// a proxy that sets them).
    pub trust_forwarded_headers: bool,
}

/// The component watcher that hot-swaps file-backed connectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Whether file-backed components are watched at all.
    pub enabled: bool,
    /// Poll instead of asking the kernel (network and overlay file systems
    /// whose changes inotify does not see).
    pub polling: bool,
    /// A file is loaded once it has not changed for this long, so a copy in
    /// progress is not loaded half-written.
    pub settle: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self { enabled: true, polling: false, settle: Duration::from_millis(250) }
    }
}

/// The Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// How often histogram samples are folded between scrapes.
    pub upkeep_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { upkeep_interval: Duration::from_secs(5) }
    }
}
