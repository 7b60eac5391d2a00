//! The embedded bus: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that commits whatever has queued up
//! in a single transaction (group commit): a burst of concurrent publishes
//! shares one fsync instead of queueing behind one fsync each. A publish is
//! answered only after its transaction committed with `synchronous=FULL`.
//!
//! The layout keeps a commit small (docs/performance.md, "The embedded
//! bus"): de-duplication keys are checked in memory ([`super::dedup`]), not
//! by a unique index on random keys, and a stream's messages go in settled,
//! so that the index of waiting work holds only work-queue messages. A
//! publish then writes only right-edge pages: the table's, the index by
//! topic's and `sqlite_sequence`'s.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::dedup::{self, DedupWindow};
use super::{BoxFuture, Bus, BusError, Delivery, Published, StateEntry, StateWrite, Stored};
use crate::config::{BusConfig, StreamRetention, StreamSpec};
use crate::telemetry::TraceContext;

/// How many queued operations one transaction takes at most.
const MAX_BATCH: usize = 1024;
/// No bus operation waits longer than this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the writer looks for messages past their retention, at most
/// (a short retention is looked at twice per retention).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, so a prune never holds the writer for long.
const PRUNE_CHUNK: i64 = 5000;
/// The most de-duplication keys held in memory: about 40 MB. A window
/// of an hour holds this many at about 280 webhooks a second; faster, the
/// oldest go early, and the log says how far back the window reaches.
pub const MAX_DEDUP_KEYS: usize = 1_000_000;
/// How often a window cut short by [`MAX_DEDUP_KEYS`] is logged, at most.
const CUT_WARNING_EVERY: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    dedup_key TEXT,
    payload BLOB NOT NULL,
    published_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    headers TEXT
);
-- De-duplication keys are checked in memory (dedup.rs); files from before keep no index of them.
DROP INDEX IF EXISTS messages_dedup;
-- Reads, the newest seq, pruning: a topic's messages in order.
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages(topic, seq);
-- Taking the next message of a work queue: only the unacknowledged, in
-- order, so a take skips just what is in flight or backing off instead of
-- sorting the whole backlog (the index this replaces, by visible_at, made
-- each take cost O(backlog): bench/run's egress figure).
CREATE INDEX IF NOT EXISTS messages_waiting ON messages(topic, seq, visible_at) WHERE acked = 0;
DROP INDEX IF EXISTS messages_pending;
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, checked_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE INDEX IF NOT EXISTS state_age ON state(updated_at);
";

enum Op {
    /// A publish, and with `ack` the acknowledgement of that taken message
    /// in the same transaction (only once the publish went in).
    Publish {
        topic: String,
        key: Option<String>,
        payload: Bytes,
        /// The message's trace context, as the `headers` column holds it (JSON).
        headers: Option<String>,
        ack: Option<i64>,
        reply: oneshot::Sender<Result<Published, BusError>>,
    },
    Take {
        topic: String,
        visibility: Duration,
        reply: oneshot::Sender<Result<Option<Delivery>, BusError>>,
    },
    Ack {
        seq: i64,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    RetryLater {
        seq: i64,
        delay: Duration,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    Prune {
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// A one-row write: proves the writer runs and the file takes writes.
    Ping {
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    StatePut {
        bucket: String,
        key: String,
        value: String,
        expected: Option<u64>,
        reply: oneshot::Sender<Result<StateWrite, BusError>>,
    },
}

/// The SQLite bus. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteBus {
    writer: Mutex<mpsc::Sender<Op>>,
    reader: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// When a commit is on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is fsync'd before it is answered: what "acknowledged
    /// means durable" needs, and the only mode the service uses.
    Full,
    /// WAL's `NORMAL`: no fsync at commit, only at checkpoints. A process
    /// crash loses nothing, a power loss the last commits. Only `bench/run`'s
    /// baseline uses it, to show what `Full` costs.
    Normal,
}

fn open_connection(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let mode = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", mode)?;
    Ok(conn)
}

impl SqliteBus {
    /// Opens the bus at `path` with the default retention and streams.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::new(path, &BusConfig::embedded(path.parent().unwrap_or(Path::new("."))))
    }

    /// Opens the bus at `path`, pruning as `config` says: stream topics lose
    /// messages older than the retention, handled or not; work-queue topics
    /// only handled ones (nothing waiting to be sent is lost).
    pub fn new(path: &Path, config: &BusConfig) -> anyhow::Result<Self> {
        Self::with_synchronous(path, config, Synchronous::Full)
    }

    /// [`Self::new`], committing as `synchronous` says.
    pub fn with_synchronous(path: &Path, config: &BusConfig, synchronous: Synchronous) -> anyhow::Result<Self> {
        let pruning = Pruning { retention: config.retention, streams: config.streams.clone() };
        let window = DedupWindow::new(config.duplicate_window, MAX_DEDUP_KEYS);
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = open_connection(path, synchronous).with_context(|| match super::disk::room(path) {
            // Say what is wrong with the disk, when something is: SQLite only says "unable to open".
            Err(disk) => format!("opening {}: {disk}", path.display()),
            Ok(_) => format!("opening {}", path.display()),
        })?;
        conn.execute_batch(SCHEMA).with_context(|| format!("creating the schema in {}", path.display()))?;
        add_headers_column(&conn, "messages")
            .with_context(|| format!("adding the headers column in {}", path.display()))?;
        settle_stream_messages(&conn, &pruning)
            .with_context(|| format!("settling stream messages in {}", path.display()))?;
        let mut writer = Writer::new(conn, pruning, window);
        writer.load_window().with_context(|| format!("reading de-duplication keys from {}", path.display()))?;
        let reader = open_connection(path, synchronous)?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("bus-writer".into())
            .spawn(move || writer.run(receiver))
            .context("starting the bus writer")?;
        Ok(Self { writer: Mutex::new(sender), reader: Arc::new(Mutex::new(reader)), path: path.to_owned() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes what is past its retention now (the writer also does so every minute).
    pub async fn prune(&self) -> Result<(), BusError> {
        self.submit(|reply| Op::Prune { reply }).await
    }

    fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Op,
    ) -> BoxFuture<'static, Result<T, BusError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.writer.lock().map(|w| w.send(make(reply)).is_ok()).unwrap_or(false);
        Box::pin(async move {
            if !sent {
                return Err(BusError::Unavailable("the bus writer has stopped".into()));
            }
            match tokio::time::timeout(OPERATION_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(BusError::Unavailable("the bus writer has stopped".into())),
                Err(_) => Err(BusError::Timeout(OPERATION_TIMEOUT)),
            }
        })
    }

    fn with_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, BusError>> {
        let reader = self.reader.clone();
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| BusError::Unavailable("reader poisoned".into()))?;
                work(&conn).map_err(|e| BusError::Unavailable(e.to_string()))
            });
            match tokio::time::timeout(OPERATION_TIMEOUT, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(BusError::Unavailable(e.to_string())),
                Err(_) => Err(BusError::Timeout(OPERATION_TIMEOUT)),
            }
        })
    }
}

impl Bus for SqliteBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        let (topic, key, headers) = (topic.to_owned(), key.map(str::to_owned), headers_column(trace));
        self.submit(move |reply| Op::Publish { topic, key, payload, headers, ack: None, reply })
    }

    fn take<'a>(&'a self, topic: &'a str, visibility: Duration) -> BoxFuture<'a, Result<Option<Delivery>, BusError>> {
        let topic = topic.to_owned();
        self.submit(move |reply| Op::Take { topic, visibility, reply })
    }

    fn ack(&self, seq: i64) -> BoxFuture<'_, Result<(), BusError>> {
        self.submit(move |reply| Op::Ack { seq, reply })
    }

    fn publish_and_ack<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
        seq: i64,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        let (topic, key, headers) = (topic.to_owned(), key.map(str::to_owned), headers_column(trace));
        self.submit(move |reply| Op::Publish { topic, key, payload, headers, ack: Some(seq), reply })
    }

    fn retry_later(&self, seq: i64, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        self.submit(move |reply| Op::RetryLater { seq, delay, reply })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, BusError>> {
        let topic = topic.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(READ_AFTER)?;
            let rows = stmt.query_map(params![topic, after_seq, limit as i64], |row| {
                Ok(Stored { seq: row.get(0)?, payload: row.get(1)?, trace: trace_of(row.get(2)?) })
            })?;
            rows.collect()
        })
    }

    fn last_seq<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, BusError>> {
        let topic = topic.to_owned();
        self.with_reader(move |conn| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE topic = ?1", params![topic], |row| {
                row.get(0)
            })
        })
    }

    fn state_get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<StateEntry>, BusError>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.with_reader(move |conn| {
            conn.prepare_cached("SELECT value, revision FROM state WHERE bucket = ?1 AND key = ?2")?
                .query_row(params![bucket, key], |row| {
                    Ok(StateEntry { value: row.get(0)?, revision: row.get::<_, i64>(1)? as u64 })
                })
                .optional()
        })
    }

    fn state_put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: String,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StateWrite, BusError>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.submit(move |reply| Op::StatePut { bucket, key, value, expected, reply })
    }

    fn system(&self) -> &'static str {
        "sqlite"
    }

    /// Whether a publish would be durable now: the disk has room and the
    /// writer commits a write (it is alive, the file is writable).
    fn ping(&self) -> BoxFuture<'_, Result<(), BusError>> {
        // No room: say so without queueing a write the disk may not take.
        if let Err(reason) = super::disk::room(&self.path) {
            return Box::pin(std::future::ready(Err(BusError::Unavailable(reason))));
        }
        self.submit(|reply| Op::Ping { reply })
    }
}

/// The writer thread's state: its connection, what it prunes, and the
/// de-duplication window with the keys of the batch under way.
struct Writer {
    conn: Connection,
    pruning: Pruning,
    window: DedupWindow,
    pending: dedup::BatchKeys,
    /// The newest message whose key the window has seen.
    seen_seq: i64,
    /// SQLite's `data_version` as this writer last read it: it moves when
    /// another connection (a CLI command's `redrive`) committed to the file.
    data_version: i64,
    /// When a window cut short was last logged.
    cut_logged: Option<std::time::Instant>,
}

impl Writer {
    fn new(conn: Connection, pruning: Pruning, window: DedupWindow) -> Self {
        let pending = dedup::BatchKeys::default();
        Self { conn, pruning, window, pending, seen_seq: 0, data_version: 0, cut_logged: None }
    }

    /// Runs queued operations in batches, one transaction (one fsync) per
    /// batch, and prunes messages past their retention between batches.
    fn run(mut self, receiver: mpsc::Receiver<Op>) {
        let mut last_prune = std::time::Instant::now();
        let prune_every = (self.pruning.retention / 2).clamp(Duration::from_millis(100), PRUNE_EVERY);
        loop {
            let first = match receiver.recv_timeout(prune_every) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                self.run_batch(batch);
            }
            if last_prune.elapsed() >= prune_every {
                last_prune = std::time::Instant::now();
                if let Err(e) = prune(&self.conn, &self.pruning) {
                    tracing::warn!(error = %e, "pruning the bus failed; will try again");
                }
            }
        }
    }

    /// The keys published within the window, read into it oldest first,
    /// as they were published (so nothing is held twice: a start with a full
    /// window peaks at the window's own memory).
    fn load_window(&mut self) -> rusqlite::Result<()> {
        self.data_version = data_version(&self.conn)?;
        self.seen_seq = self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |row| row.get(0))?;
        let mut before_window = window_start(&self.conn, now_ms() - self.window.window_ms())?.saturating_sub(1);
        Self::catch_up(&mut self.window, &self.conn, &mut before_window)
    }

    /// The keys published after `seen_seq`, oldest first, into the window:
    /// at open those within the window; before a batch those another
    /// connection published since this writer last looked (inside the
    /// batch's write lock, so none comes in meanwhile).
    fn catch_up(window: &mut DedupWindow, tx: &Connection, seen_seq: &mut i64) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, topic, dedup_key, published_at FROM messages WHERE seq > ?1 AND dedup_key IS NOT NULL \
             ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![*seen_seq])?;
        while let Some(row) = rows.next()? {
            let (topic, key): (String, String) = (row.get(1)?, row.get(2)?);
            window.insert(window.fingerprint(&topic, &key), row.get(3)?);
            *seen_seq = row.get(0)?;
        }
        Ok(())
    }

    fn run_batch(&mut self, batch: Vec<Op>) {
        // IMMEDIATE: the write lock up front, waiting out another process's
        // (busy_timeout), where a read that later writes would fail at once.
        let tx = match self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch, &e.to_string());
                return;
            }
        };
        let caught_up = match data_version(&tx) {
            Ok(version) if version == self.data_version => Ok(()),
            Ok(version) => {
                Self::catch_up(&mut self.window, &tx, &mut self.seen_seq).map(|()| self.data_version = version)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = caught_up {
            drop(tx);
            fail_all(batch, &format!("reading what other connections published: {e}"));
            return;
        }
        let now = now_ms();
        self.window.expire(now);
        let mut state =
            Batch { tx: &tx, now, pruning: &self.pruning, window: &self.window, keys: &mut self.pending, last_seq: 0 };
        let answers: Vec<Pending> = batch.into_iter().map(|op| state.apply(op)).collect();
        let last_seq = state.last_seq;
        // Nothing is answered before the commit: an answered publish is durable.
        let commit_error = tx.commit().err().map(|e| e.to_string());
        match commit_error {
            None => {
                self.seen_seq = self.seen_seq.max(last_seq);
                let cut = self.pending.commit(&mut self.window, now);
                self.log_cut(cut);
            }
            // What was caught up stays seen: it was another connection's, committed.
            Some(_) => self.pending.discard(),
        }
        for item in answers {
            item.answer(commit_error.as_deref());
        }
    }

    /// Says, at most once per [`CUT_WARNING_EVERY`], that the window holds
    /// less time than configured.
    fn log_cut(&mut self, cut: Option<Duration>) {
        let Some(reach) = cut else { return };
        if self.cut_logged.is_some_and(|logged| logged.elapsed() < CUT_WARNING_EVERY) {
            return;
        }
        self.cut_logged = Some(std::time::Instant::now());
        tracing::warn!(
            reaches_back_s = reach.as_secs(),
            configured_s = self.window.window_ms() / 1000,
            keys = self.window.len(),
            "the de-duplication window is full: it now reaches back less far than configured"
        );
    }
}

/// What the writer deletes.
#[derive(Debug, Clone)]
struct Pruning {
    retention: Duration,
    streams: Vec<StreamSpec>,
}

impl Pruning {
    /// Whether only handled messages of `topic` may go: work queues, and
    /// topics no stream names (kept rather than lost).
    fn only_handled(&self, topic: &str) -> bool {
        let stream = self.streams.iter().find(|stream| stream.holds(topic));
        stream.is_none_or(|stream| stream.retention == StreamRetention::WorkQueue)
    }
}

/// Deletes messages published before the retention window, topic by topic,
/// in chunks.
fn prune(conn: &Connection, pruning: &Pruning) -> rusqlite::Result<usize> {
    let cutoff = now_ms() - pruning.retention.as_millis() as i64;
    let topics: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT topic FROM messages")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut deleted = conn.execute("DELETE FROM state WHERE updated_at < ?1", params![cutoff])?;
    for topic in topics {
        let only_handled = pruning.only_handled(&topic);
        loop {
            let n = conn.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages \
                 WHERE topic = ?1 AND published_at < ?2 AND (acked = 1 OR NOT ?3) LIMIT ?4)",
                params![topic, cutoff, only_handled, PRUNE_CHUNK],
            )?;
            deleted += n;
            if n < PRUNE_CHUNK as usize {
                break;
            }
        }
    }
    Ok(deleted)
}

fn acknowledge(tx: &rusqlite::Transaction<'_>, seq: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE messages SET acked = 1 WHERE seq = ?1")?.execute(params![seq]).map(|_| ())
}

/// A result waiting for the commit before it is sent.
enum Pending {
    Publish(oneshot::Sender<Result<Published, BusError>>, Result<Published, BusError>),
    Take(oneshot::Sender<Result<Option<Delivery>, BusError>>, Result<Option<Delivery>, BusError>),
    Unit(oneshot::Sender<Result<(), BusError>>, Result<(), BusError>),
    State(oneshot::Sender<Result<StateWrite, BusError>>, Result<StateWrite, BusError>),
}

/// One batch's transaction, and what its operations need.
struct Batch<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    now: i64,
    pruning: &'a Pruning,
    window: &'a DedupWindow,
    keys: &'a mut dedup::BatchKeys,
    /// The seq of the batch's last message.
    last_seq: i64,
}

impl Batch<'_> {
    /// Runs one operation inside the batch's transaction; its answer waits.
    fn apply(&mut self, op: Op) -> Pending {
        let unavailable = |e: rusqlite::Error| BusError::Unavailable(e.to_string());
        let (tx, now) = (self.tx, self.now);
        match op {
            Op::Publish { topic, key, payload, headers, ack, reply } => {
                let published = self.publish(&topic, key.as_deref(), &payload, headers.as_deref());
                let settled = match ack {
                    Some(seq) => published.and_then(|published| acknowledge(tx, seq).map(|()| published)),
                    None => published,
                };
                Pending::Publish(reply, settled.map_err(unavailable))
            }
            Op::Take { topic, visibility, reply } => {
                Pending::Take(reply, take_next(tx, topic, now, visibility).map_err(unavailable))
            }
            Op::Ack { seq, reply } => Pending::Unit(reply, acknowledge(tx, seq).map_err(unavailable)),
            Op::RetryLater { seq, delay, reply } => Pending::Unit(
                reply,
                tx.prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1 AND acked = 0")
                    .and_then(|mut stmt| stmt.execute(params![seq, now + delay.as_millis() as i64]))
                    .map(|_| ())
                    .map_err(unavailable),
            ),
            Op::Prune { reply } => Pending::Unit(reply, prune(tx, self.pruning).map(|_| ()).map_err(unavailable)),
            Op::StatePut { bucket, key, value, expected, reply } => {
                Pending::State(reply, state_put(tx, &bucket, &key, &value, expected, now).map_err(unavailable))
            }
            Op::Ping { reply } => Pending::Unit(
                reply,
                tx.execute("INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?1)", params![now])
                    .map(|_| ())
                    .map_err(unavailable),
            ),
        }
    }

    /// Inserts a message unless its de-duplication key was published on the
    /// topic within the window (or earlier in this batch).
    fn publish(
        &mut self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: Option<&str>,
    ) -> rusqlite::Result<Published> {
        let fingerprint = key.map(|key| self.window.fingerprint(topic, key));
        if let Some(fingerprint) = fingerprint
            && !self.keys.first_time(self.window, fingerprint)
        {
            return Ok(Published::Duplicate);
        }
        // A stream's message is never taken: it goes in settled, out of the
        // index of waiting work (`messages_waiting`).
        let settled = !self.pruning.only_handled(topic);
        match insert(self.tx, topic, key, payload, headers, settled, self.now) {
            Ok(seq) => {
                self.last_seq = seq;
                Ok(Published::New)
            }
            Err(e) => {
                if let Some(fingerprint) = fingerprint {
                    self.keys.forget(fingerprint);
                }
                Err(e)
            }
        }
    }
}

/// Writes a state entry if its revision is still `expected` (inside the batch's
/// transaction, so no other write comes between the check and the write).
fn state_put(
    tx: &Connection,
    bucket: &str,
    key: &str,
    value: &str,
    expected: Option<u64>,
    now: i64,
) -> rusqlite::Result<StateWrite> {
    let current: Option<i64> = tx
        .prepare_cached("SELECT revision FROM state WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key], |row| row.get(0))
        .optional()?;
    if current.map(|r| r as u64) != expected {
        return Ok(StateWrite::Conflict);
    }
    let revision = current.unwrap_or(0) + 1;
    tx.prepare_cached(
        "INSERT INTO state (bucket, key, value, revision, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (bucket, key) DO UPDATE SET value = ?3, revision = ?4, updated_at = ?5",
    )?
    .execute(params![bucket, key, value, revision, now])?;
    Ok(StateWrite::Written(revision as u64))
}

/// Inserts a message, `settled` when nothing will take it; its seq.
fn insert(
    tx: &Connection,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    headers: Option<&str>,
    settled: bool,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO messages (topic, dedup_key, payload, published_at, visible_at, headers, acked) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| stmt.insert(params![topic, key, payload, now, headers, settled]))
}

/// The first seq of the duplicate window ending now: walking back from the
/// newest message (seq and time only) to the first one published before
/// `cutoff`, or to the [`MAX_DEDUP_KEYS`]th key. Past the end when empty.
fn window_start(conn: &Connection, cutoff: i64) -> rusqlite::Result<i64> {
    let mut stmt = conn.prepare("SELECT seq, published_at, dedup_key IS NOT NULL FROM messages ORDER BY seq DESC")?;
    let mut rows = stmt.query([])?;
    let (mut start, mut keys) = (i64::MAX, 0);
    while let Some(row) = rows.next()? {
        if row.get::<_, i64>(1)? < cutoff || keys >= MAX_DEDUP_KEYS {
            break;
        }
        start = row.get(0)?;
        keys += usize::from(row.get::<_, bool>(2)?);
    }
    Ok(start)
}

/// SQLite's count of commits other connections made to the file, as this one sees it.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// Stream messages a file from before this layout holds as waiting are
/// settled, so the index of waiting work holds only work queues' (once:
/// afterwards none are found).
fn settle_stream_messages(conn: &Connection, pruning: &Pruning) -> rusqlite::Result<()> {
    let waiting: Vec<String> = conn
        .prepare("SELECT DISTINCT topic FROM messages WHERE acked = 0")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for topic in waiting.iter().filter(|topic| !pruning.only_handled(topic)) {
        conn.execute("UPDATE messages SET acked = 1 WHERE topic = ?1 AND acked = 0", params![topic])?;
    }
    Ok(())
}

/// The oldest visible, unacknowledged message of a topic, hidden for a while.
const TAKE_NEXT: &str = "UPDATE messages SET visible_at = ?3, attempts = attempts + 1 WHERE seq = \
     (SELECT seq FROM messages INDEXED BY messages_waiting \
      WHERE topic = ?1 AND acked = 0 AND visible_at <= ?2 ORDER BY seq LIMIT 1) \
     RETURNING seq, payload, attempts, headers";

/// A topic's messages after a seq, in order.
const READ_AFTER: &str =
    "SELECT seq, payload, headers FROM messages WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// Takes the oldest visible, unacknowledged message of `topic` and hides it
/// for `visibility`.
fn take_next(tx: &Connection, topic: String, now: i64, visibility: Duration) -> rusqlite::Result<Option<Delivery>> {
    let mut stmt = tx.prepare_cached(TAKE_NEXT)?;
    stmt.query_row(params![topic, now, now + visibility.as_millis() as i64], |row| {
        Ok(Delivery {
            seq: row.get(0)?,
            topic: topic.clone(),
            payload: row.get(1)?,
            attempt: row.get(2)?,
            trace: trace_of(row.get(3)?),
        })
    })
    .optional()
}

/// Files written before messages carried a trace context get the
/// `headers` column in `table`; their messages have none.
pub(super) fn add_headers_column(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let has_it: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = 'headers'",
        params![table],
        |row| row.get(0),
    )?;
    if !has_it {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN headers TEXT"))?;
    }
    Ok(())
}

/// A trace context as a `headers` column holds it: the W3C headers as a
/// JSON object (`{"traceparent":"00-…"}`), what `tail --headers` shows.
pub(super) fn headers_column(trace: Option<&TraceContext>) -> Option<String> {
    trace.and_then(|trace| serde_json::to_string(trace).ok())
}

/// The trace context in a `headers` column, when it holds one.
pub(super) fn trace_of(column: Option<String>) -> Option<TraceContext> {
    serde_json::from_str(&column?).ok()
}

impl Pending {
    /// Sends the operation's result, or the commit's failure when it failed.
    fn answer(self, commit_error: Option<&str>) {
        let failed = |reason: &str| BusError::Unavailable(format!("commit failed: {reason}"));
        match self {
            Self::Publish(reply, result) => {
                let _ = reply.send(commit_error.map_or(result, |e| Err(failed(e))));
            }
            Self::Take(reply, result) => {
                let _ = reply.send(commit_error.map_or(result, |e| Err(failed(e))));
            }
            Self::Unit(reply, result) => {
                let _ = reply.send(commit_error.map_or(result, |e| Err(failed(e))));
            }
            Self::State(reply, result) => {
                let _ = reply.send(commit_error.map_or(result, |e| Err(failed(e))));
            }
        }
    }
}

fn fail_all(batch: Vec<Op>, reason: &str) {
    let error = || BusError::Unavailable(reason.to_owned());
    for op in batch {
        match op {
            Op::Publish { reply, .. } => drop(reply.send(Err(error()))),
            Op::Take { reply, .. } => drop(reply.send(Err(error()))),
            Op::Ack { reply, .. } | Op::RetryLater { reply, .. } | Op::Prune { reply } | Op::Ping { reply } => {
                drop(reply.send(Err(error())))
            }
            Op::StatePut { reply, .. } => drop(reply.send(Err(error()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_bus() -> (tempfile::TempDir, SqliteBus) {
        let dir = tempfile::tempdir().unwrap();
        let bus = SqliteBus::open(&dir.path().join("bus.sqlite3")).unwrap();
        (dir, bus)
    }

    /// How SQLite runs `sql`: each step of its query plan.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = stmt.query_map(params!["t", 0, 1], |row| row.get::<_, String>(3)).unwrap();
        steps.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn commits_are_fsynced_unless_the_baseline_asks_otherwise() {
        let synchronous = |bus: &SqliteBus| {
            bus.reader.lock().unwrap().pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0)).unwrap()
        };
        let (_dir, full) = temp_bus();
        assert_eq!(synchronous(&full), 2, "FULL");
        let dir = tempfile::tempdir().unwrap();
        let config = BusConfig::embedded(dir.path());
        let normal =
            SqliteBus::with_synchronous(&dir.path().join("bus.sqlite3"), &config, Synchronous::Normal).unwrap();
        assert_eq!(synchronous(&normal), 1, "NORMAL");
    }

    #[test]
    fn taking_and_reading_walk_an_index_in_order_without_sorting_the_backlog() {
        let (_dir, bus) = temp_bus();
        let conn = open_connection(&bus.path, Synchronous::Full).unwrap();
        let take = plan(&conn, TAKE_NEXT);
        assert!(take.contains("INDEX messages_waiting (topic=?)") && !take.contains("TEMP B-TREE"), "{take}");
        let read = plan(&conn, READ_AFTER);
        assert!(read.contains("messages_by_topic (topic=? AND seq>?)") && !read.contains("TEMP B-TREE"), "{read}");
    }

    #[tokio::test]
    async fn publish_dedup_take_ack_redeliver() {
        let (_dir, bus) = temp_bus();
        assert_eq!(bus.publish("t", Some("k1"), Bytes::from_static(b"one"), None).await.unwrap(), Published::New);
        assert_eq!(
            bus.publish("t", Some("k1"), Bytes::from_static(b"again"), None).await.unwrap(),
            Published::Duplicate
        );
        assert_eq!(bus.publish("other", Some("k1"), Bytes::from_static(b"x"), None).await.unwrap(), Published::New);
        assert_eq!(bus.publish("t", None, Bytes::from_static(b"two"), None).await.unwrap(), Published::New);

        let first = bus.take("t", Duration::from_millis(50)).await.unwrap().unwrap();
        assert_eq!((first.payload.as_slice(), first.attempt), (&b"one"[..], 1));
        let second = bus.take("t", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(second.payload, b"two");
        bus.ack(second.seq).await.unwrap();
        // Nothing visible until the first one's visibility runs out.
        assert_eq!(bus.take("t", Duration::from_secs(60)).await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let again = bus.take("t", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!((again.seq, again.attempt), (first.seq, 2));
        bus.ack(again.seq).await.unwrap();
        assert_eq!(bus.take("t", Duration::from_millis(1)).await.unwrap(), None);

        let all = bus.read("t", 0, 10).await.unwrap();
        assert_eq!(all.iter().map(|s| s.payload.as_slice()).collect::<Vec<_>>(), [&b"one"[..], b"two"]);
    }

    #[tokio::test]
    async fn past_the_retention_streams_lose_everything_and_work_queues_only_what_was_handled() {
        let dir = tempfile::tempdir().unwrap();
        let config = BusConfig { retention: Duration::ZERO, ..BusConfig::embedded(dir.path()) };
        let bus = SqliteBus::new(&dir.path().join("bus.sqlite3"), &config).unwrap();
        for topic in ["egress.t", "elsewhere.t"] {
            bus.publish(topic, Some("handled"), Bytes::from_static(b"1"), None).await.unwrap();
            bus.publish(topic, Some("waiting"), Bytes::from_static(b"2"), None).await.unwrap();
            let handled = bus.take(topic, Duration::from_secs(60)).await.unwrap().unwrap();
            bus.ack(handled.seq).await.unwrap();
        }
        bus.publish("ingress.t", Some("never consumed"), Bytes::from_static(b"3"), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        bus.prune().await.unwrap();
        let left = |topic| {
            let bus = &bus;
            async move { bus.read(topic, 0, 10).await.unwrap().into_iter().map(|m| m.payload).collect::<Vec<_>>() }
        };
        assert_eq!(left("egress.t").await, [b"2".to_vec()], "a work queue keeps what waits");
        assert_eq!(left("elsewhere.t").await, [b"2".to_vec()], "a topic no stream names is kept like one");
        assert!(left("ingress.t").await.is_empty(), "a stream is pruned by age alone");
    }

    #[tokio::test]
    async fn keys_are_known_across_a_restart_and_to_another_connection_on_the_file() {
        let (dir, bus) = temp_bus();
        let path = dir.path().join("bus.sqlite3");
        async fn publish(bus: &SqliteBus, key: &str) -> Published {
            bus.publish("ingress.t", Some(key), Bytes::from_static(b"m"), None).await.unwrap()
        }
        assert_eq!(publish(&bus, "SM1").await, Published::New);
        // A CLI command's bus beside the service's, on the same file.
        let other = SqliteBus::open(&path).unwrap();
        assert_eq!(publish(&other, "SM1").await, Published::Duplicate, "loaded at open");
        assert_eq!(publish(&other, "SM2").await, Published::New);
        assert_eq!(publish(&bus, "SM2").await, Published::Duplicate, "the other's publish is read back");
        assert_eq!(publish(&bus, "SM3").await, Published::New);
        assert_eq!(publish(&other, "SM3").await, Published::Duplicate);
        drop((bus, other));
        let reopened = SqliteBus::open(&path).unwrap();
        for key in ["SM1", "SM2", "SM3"] {
            assert_eq!(publish(&reopened, key).await, Published::Duplicate, "{key} after a restart");
        }
        assert_eq!(reopened.read("ingress.t", 0, 10).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_key_older_than_the_duplicate_window_is_new_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = BusConfig { duplicate_window: Duration::from_millis(40), ..BusConfig::embedded(dir.path()) };
        let bus = SqliteBus::new(&dir.path().join("bus.sqlite3"), &config).unwrap();
        let publish = || bus.publish("ingress.t", Some("SM1"), Bytes::from_static(b"m"), None);
        assert_eq!(publish().await.unwrap(), Published::New);
        assert_eq!(publish().await.unwrap(), Published::Duplicate);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(publish().await.unwrap(), Published::New, "JetStream's duplicate window, on SQLite too");
    }

    #[tokio::test]
    async fn stream_messages_go_in_settled_and_no_index_holds_the_keys() {
        let (dir, bus) = temp_bus();
        bus.publish("ingress.t", Some("SM1"), Bytes::from_static(b"m"), None).await.unwrap();
        bus.publish("egress.t", Some("E1"), Bytes::from_static(b"m"), None).await.unwrap();
        let conn = Connection::open(dir.path().join("bus.sqlite3")).unwrap();
        let acked = |topic: &str| {
            conn.query_row("SELECT acked FROM messages WHERE topic = ?1", [topic], |row| row.get::<_, i64>(0)).unwrap()
        };
        assert_eq!((acked("ingress.t"), acked("egress.t")), (1, 0));
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, ["messages_by_topic", "messages_waiting"]);
    }

    #[tokio::test]
    async fn a_file_of_the_older_layout_loses_its_key_index_and_settles_its_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace(
                "DROP INDEX IF EXISTS messages_dedup;",
                "CREATE UNIQUE INDEX messages_dedup ON messages(topic, dedup_key) WHERE dedup_key IS NOT NULL;",
            ))
            .unwrap();
            conn.execute_batch(
                "INSERT INTO messages (topic, dedup_key, payload, published_at, visible_at) VALUES \
                 ('ingress.t', 'SM1', x'00', 0, 0), ('egress.t', 'E1', x'00', 0, 0);",
            )
            .unwrap();
        }
        let bus = SqliteBus::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_dedup'"), 0);
        assert_eq!(count("SELECT COUNT(*) FROM messages WHERE acked = 0"), 1, "only the work queue's waits");
        assert_eq!(bus.take("egress.t", Duration::from_secs(60)).await.unwrap().unwrap().payload, [0]);
    }

    #[tokio::test]
    async fn retry_later_hides_until_the_delay() {
        let (_dir, bus) = temp_bus();
        bus.publish("t", None, Bytes::from_static(b"m"), None).await.unwrap();
        let d = bus.take("t", Duration::from_secs(60)).await.unwrap().unwrap();
        bus.retry_later(d.seq, Duration::from_millis(40)).await.unwrap();
        assert_eq!(bus.take("t", Duration::from_secs(60)).await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(bus.take("t", Duration::from_secs(60)).await.unwrap().unwrap().attempt, 2);
    }

    #[tokio::test]
    async fn concurrent_publishes_are_all_durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        {
            let bus = Arc::new(SqliteBus::open(&path).unwrap());
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let bus = bus.clone();
                    tokio::spawn(async move {
                        bus.publish("t", Some(&format!("k{i}")), Bytes::from(vec![i as u8]), None).await
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap().unwrap(), Published::New);
            }
        }
        let bus = SqliteBus::open(&path).unwrap();
        assert_eq!(bus.read("t", 0, 1000).await.unwrap().len(), 200);
    }
}
