//! One section per capability of the service, each with its defaults written
//! here once: the bus, the listeners, the component watcher and the metrics.
//! architecture.yaml and the environment override them; absent keys take them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the bus lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    /// The embedded bus: one SQLite file.
    Sqlite(PathBuf),
    /// A NATS JetStream server, `HOST:PORT`.
    Nats(String),
}

impl fmt::Display for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Nats(addr) => write!(f, "nats://{addr}"),
        }
    }
}

/// The bus: where it is and how long it keeps what was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Where the bus is.
    pub url: BusUrl,
    /// How long acknowledged messages (and their de-duplication keys) stay.
    pub retention: Duration,
}

impl BusConfig {
    /// A week: longer than any provider's webhook retry horizon, so a
    /// redelivered webhook still finds its de-duplication key.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

    /// The embedded bus in `data_dir`, the default when no `BUS_URL` is set.
    pub fn embedded(data_dir: &Path) -> Self {
        Self { url: BusUrl::Sqlite(data_dir.join("bus.sqlite3")), retention: Self::DEFAULT_RETENTION }
    }
}

/// The two listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Webhooks and health: faces the internet.
    pub listen_addr: SocketAddr,
    /// Metrics, reload, egress and tokens: keep it internal.
    pub admin_addr: SocketAddr,
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
