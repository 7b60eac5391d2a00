//! The spool: where a publish waits, on local disk and fsync'd, while the bus
//! cannot take it, so that a webhook Twilio will not retry is still answered
//! 200 and still reaches the bus.
//!
//! [`SpoolingBus`] wraps the real bus: a publish the bus has not confirmed
//! within the bound is written to the spool instead. [`SpoolDrainer`]
//! republishes the spool, oldest first and with the same de-duplication keys,
//! once the bus answers again; a publish that reached the bus after all is
//! then a duplicate, which the bus drops. The spool is its own SQLite file
//! (rusqlite, `synchronous=FULL`), apart from the bus, because the bus may be
//! a NATS server that is away.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BoxFuture, Bus, BusError, Delivery, Published, StateEntry, StateWrite, Stored};
use crate::config::SpoolConfig;
use crate::lifecycle::Capability;
use crate::telemetry::{TraceContext, metrics};

/// Entries republished per round.
const DRAIN_BATCH: i64 = 100;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    dedup_key TEXT,
    payload BLOB NOT NULL,
    spooled_at INTEGER NOT NULL,
    headers TEXT
);
";

/// One spooled publish.
#[derive(Debug, Clone)]
struct Entry {
    id: i64,
    topic: String,
    key: Option<String>,
    payload: Bytes,
    trace: Option<TraceContext>,
}

/// The spool file and its size.
#[derive(Debug)]
pub struct Spool {
    conn: Mutex<Connection>,
    /// Payload bytes held now.
    bytes: AtomicU64,
    /// Entries held now.
    depth: AtomicU64,
    max_bytes: u64,
    /// A publish was refused (no room, or the write failed) since the spool
    /// last shrank or took one.
    overflowed: AtomicBool,
    path: std::path::PathBuf,
}

impl Spool {
    /// Opens (or creates) the spool at `path`; what an earlier run left is kept.
    pub fn open(path: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening the spool {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        super::sqlite::add_headers_column(&conn, "spool")?;
        let (depth, bytes): (i64, i64) =
            conn.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM spool", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        let spool = Self {
            conn: Mutex::new(conn),
            bytes: AtomicU64::new(bytes as u64),
            depth: AtomicU64::new(depth as u64),
            max_bytes,
            overflowed: AtomicBool::new(false),
            path: path.to_owned(),
        };
        spool.report();
        Ok(spool)
    }

    /// Entries waiting.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Whether a publish would be written now, or why not: the spool is at its
    /// size bound, its last write failed, or its disk is short of room.
    pub fn can_take(&self) -> Result<(), String> {
        if self.bytes.load(Ordering::Relaxed) >= self.max_bytes {
            return Err(format!("the spool is full ({} waiting)", self.depth()));
        }
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(format!("the spool refused its last write ({} waiting)", self.depth()));
        }
        super::disk::room(&self.path).map(|_| ())
    }

    /// How long the oldest entry has waited (zero when empty).
    pub fn oldest_age(&self) -> Duration {
        let oldest: Option<i64> = self
            .conn
            .lock()
            .ok()
            // Ids grow with time: the oldest entry is the first by id, found
            // through the key rather than by scanning the table on every put.
            .and_then(|conn| {
                conn.query_row("SELECT spooled_at FROM spool ORDER BY id LIMIT 1", [], |row| row.get(0)).optional().ok()
            })
            .flatten();
        oldest.map_or(Duration::ZERO, |at| Duration::from_millis((now_ms() - at).max(0) as u64))
    }

    /// Writes one publish, durably; refused when the spool is full.
    fn put(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        trace: Option<&TraceContext>,
    ) -> Result<(), BusError> {
        let size = payload.len() as u64;
        if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            self.overflowed.store(true, Ordering::Relaxed);
            return Err(BusError::Unavailable("the bus is away and the spool is full".into()));
        }
        {
            let conn = self.conn.lock().map_err(|_| BusError::Unavailable("spool poisoned".into()))?;
            conn.execute(
                "INSERT INTO spool (topic, dedup_key, payload, spooled_at, headers) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![topic, key, payload, now_ms(), super::sqlite::headers_column(trace)],
            )
            .map_err(|e| {
                self.overflowed.store(true, Ordering::Relaxed);
                BusError::Unavailable(format!("the bus is away and the spool refused: {e}"))
            })?;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.overflowed.store(false, Ordering::Relaxed);
        metrics::spooled();
        self.report();
        Ok(())
    }

    fn oldest(&self, limit: i64) -> rusqlite::Result<Vec<Entry>> {
        let conn = self.conn.lock().map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt =
            conn.prepare_cached("SELECT id, topic, dedup_key, payload, headers FROM spool ORDER BY id LIMIT ?1")?;
        let rows = stmt.query_map(params![limit], |row| {
            Ok(Entry {
                id: row.get(0)?,
                topic: row.get(1)?,
                key: row.get(2)?,
                payload: row.get::<_, Vec<u8>>(3)?.into(),
                trace: super::sqlite::trace_of(row.get(4)?),
            })
        })?;
        rows.collect()
    }

    fn remove(&self, entry: &Entry) -> rusqlite::Result<()> {
        let conn = self.conn.lock().map_err(|_| rusqlite::Error::InvalidQuery)?;
        conn.execute("DELETE FROM spool WHERE id = ?1", params![entry.id])?;
        self.bytes.fetch_sub(entry.payload.len() as u64, Ordering::Relaxed);
        self.depth.fetch_sub(1, Ordering::Relaxed);
        self.overflowed.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn report(&self) {
        metrics::spool(self.depth(), self.oldest_age());
    }

    /// Republishes the oldest entries on `bus` until one fails or none is
    /// left; returns how many went. Blocking file work runs off the async threads.
    pub async fn drain(self: &Arc<Self>, bus: &dyn Bus) -> usize {
        let mut drained = 0;
        loop {
            let spool = self.clone();
            let batch = tokio::task::spawn_blocking(move || spool.oldest(DRAIN_BATCH)).await;
            let Ok(Ok(batch)) = batch else { break };
            if batch.is_empty() {
                break;
            }
            for entry in batch {
                if bus
                    .publish(&entry.topic, entry.key.as_deref(), entry.payload.clone(), entry.trace.as_ref())
                    .await
                    .is_err()
                {
                    self.report();
                    return drained;
                }
                let spool = self.clone();
                if !matches!(tokio::task::spawn_blocking(move || spool.remove(&entry)).await, Ok(Ok(()))) {
                    self.report();
                    return drained;
                }
                drained += 1;
            }
        }
        self.report();
        drained
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The bus as the service uses it: the real one, with the spool behind
/// every publish.
#[derive(Debug)]
pub struct SpoolingBus {
    inner: Arc<dyn Bus>,
    spool: Arc<Spool>,
    publish_timeout: Duration,
}

impl SpoolingBus {
    /// `inner` with `spool` behind its publishes.
    pub fn new(inner: Arc<dyn Bus>, spool: Arc<Spool>, config: &SpoolConfig) -> Self {
        Self { inner, spool, publish_timeout: config.publish_timeout }
    }

    async fn publish_or_spool(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: Bytes,
        trace: Option<&TraceContext>,
    ) -> Result<Published, BusError> {
        let publish = self.inner.publish(topic, key, payload.clone(), trace);
        let attempt = tokio::time::timeout(self.publish_timeout, publish).await;
        let reason = match attempt {
            Ok(Ok(published)) => return Ok(published),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.publish_timeout),
        };
        tracing::warn!(topic, reason, "the bus did not take a publish; spooling it");
        let spool = self.spool.clone();
        let (topic, key, trace) = (topic.to_owned(), key.map(str::to_owned), trace.cloned());
        tokio::task::spawn_blocking(move || spool.put(&topic, key.as_deref(), &payload, trace.as_ref()))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))??;
        Ok(Published::New)
    }
}

impl Bus for SpoolingBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(self.publish_or_spool(topic, key, payload, trace))
    }

    fn take<'a>(&'a self, topic: &'a str, visibility: Duration) -> BoxFuture<'a, Result<Option<Delivery>, BusError>> {
        self.inner.take(topic, visibility)
    }

    fn ack(&self, seq: i64) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.ack(seq)
    }

    // Not spooled: the acknowledgement needs the bus anyway. A message the
    // bus did not settle comes back after its visibility timeout and is
    // handled again, its outcome published then.
    fn publish_and_ack<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
        seq: i64,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        self.inner.publish_and_ack(topic, key, payload, trace, seq)
    }

    fn retry_later(&self, seq: i64, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.retry_later(seq, delay)
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, BusError>> {
        self.inner.read(topic, after_seq, limit)
    }

    fn last_seq<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, BusError>> {
        self.inner.last_seq(topic)
    }

    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.ping()
    }

    // State is not spooled: a caller that cannot read or write it answers
    // its webhook 503 and is asked again.
    fn state_get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<StateEntry>, BusError>> {
        self.inner.state_get(bucket, key)
    }

    fn state_put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: String,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StateWrite, BusError>> {
        self.inner.state_put(bucket, key, value, expected)
    }
}

/// The drainer capability: republishes the spool whenever it holds something.
#[derive(Debug)]
pub struct SpoolDrainer {
    spool: Arc<Spool>,
    bus: Arc<dyn Bus>,
    interval: Duration,
}

impl SpoolDrainer {
    /// Drains `spool` into `bus` (the real bus, not the spooling one).
    pub fn new(spool: Arc<Spool>, bus: Arc<dyn Bus>, config: &SpoolConfig) -> Self {
        Self { spool, bus, interval: config.drain_interval }
    }
}

impl Capability for SpoolDrainer {
    fn name(&self) -> &'static str {
        "spool"
    }

    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
        let stop = stop.clone();
        tasks.spawn(async move {
            while crate::lifecycle::tick(self.interval, &stop).await {
                if self.spool.depth() == 0 {
                    continue;
                }
                let drained = self.spool.drain(self.bus.as_ref()).await;
                if drained > 0 {
                    metrics::drained(drained as u64);
                    tracing::info!(drained, left = self.spool.depth(), "spooled publishes are on the bus");
                }
            }
        });
        Ok(())
    }
}
