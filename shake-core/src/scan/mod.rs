//! Reading a live source without replication: SCAN every database of every master, DUMP and
//! PTTL each key (pipelined), and optionally follow keyspace notifications afterwards. This is
//! the source half of shake-rump, for servers that refuse SYNC/PSYNC (managed clouds); the
//! writing half is the apply layer (`apply::plan::Planner::plan_payload`) or the RDB file writer
//! (`rdb::file_writer`), wired together in [`copy`].
//!
//! What a walker yields is [`Found`]: a key with its DUMP payload and absolute expiry, a key gone
//! from the source (follow mode), or a function library. Items travel in batches through a queue
//! bounded in bytes ([`found_queue`]).
//!
//! # TTLs
//!
//! PTTL gives the remaining milliseconds; the walker turns it into an absolute Unix time once,
//! when the reply is read (`now + pttl`), and the key is written with `RESTORE ... ABSTTL` (or
//! EXPIRETIME_MS in a file). So time spent in queues does not lengthen a TTL; the cost is the
//! clock difference between this host and the target.
//!
//! # Big keys
//!
//! Before DUMP, each key's size is estimated with `MEMORY USAGE key` (default sampling), in the
//! same pipeline. DUMPs are admitted while the estimated bytes in flight stay under
//! [`ScanOptions::window_bytes`]; a key larger than the window is DUMPed alone. So at most one
//! big key's DUMP reply is held at a time (its payload is then decoded in place by the planner,
//! never copied). Where MEMORY is refused (some managed services), or with
//! `memory_probe: false`, DUMPs are bounded by count only.
//!
//! # Big strings
//!
//! With [`ScanOptions::string_parts`] set (shake-rump writing to a live target), a key whose
//! size estimate is above the big-key threshold and whose TYPE is `string` is never DUMPed: on
//! a second connection to its master it is read with `WATCH key`, `STRLEN`, `PTTL`, then
//! `GETRANGE` of one part at a time, then `MULTI PEXPIRETIME EXEC` (`PTTL` before 7.0). Its parts go on as
//! [`Found::StringStart`] / [`Found::StringPart`] / [`Found::StringEnd`], so no side holds more
//! than a few parts. An EXEC that answers nil means the key was written while it was read (any
//! write, its TTL included, touches a WATCHed key): the attempt is dropped
//! ([`Found::StringAbandon`]) and the key read again, up to [`STRING_ATTEMPTS`] times; a key
//! that changes during every attempt is DUMPed whole, as before (memory ~ its size, with a
//! warning). One big string is read at a time across all walkers.
//!
//! # Vanishing keys
//!
//! A key SCAN named may be gone before its DUMP: DUMP nil or PTTL -2 (the key expired or was
//! deleted in between) skips it and counts it as vanished. DUMP is sent before PTTL, back to
//! back, so the server runs both without another client's command in between in the usual case
//! (one read of the pipeline).

pub mod copy;
mod follow;

pub use follow::{enable_notifications, restore_notifications, Subscription};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::client::Pipeline;
use crate::resp::{encode_command, Reply};
use crate::text::quote_bytes;

/// How the walker reads.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// SCAN's COUNT hint.
    pub count: u64,
    /// SCAN's MATCH pattern.
    pub pattern: Option<Vec<u8>>,
    /// SCAN's TYPE option (a type name as TYPE prints it).
    pub type_name: Option<String>,
    /// Estimate each key's size with MEMORY USAGE before its DUMP.
    pub memory_probe: bool,
    /// Most estimated bytes of DUMP replies in flight per connection (a bigger key goes alone).
    pub window_bytes: usize,
    /// Read strings larger than this in parts instead of DUMPing them (see "Big strings").
    pub string_parts: Option<StringParts>,
}

/// How big strings are read in parts.
#[derive(Debug, Clone)]
pub struct StringParts {
    /// Strings whose size estimate is above this many bytes (the big-key threshold).
    pub above: usize,
    /// Bytes per GETRANGE.
    pub part_bytes: usize,
    /// For the second connection to the master.
    pub connect: crate::net::ConnectOptions,
}

/// Attempts at reading a big string in parts before it is DUMPed whole.
pub const STRING_ATTEMPTS: u32 = 3;

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            count: 1000,
            pattern: None,
            type_name: None,
            memory_probe: true,
            window_bytes: 32 << 20,
            string_parts: None,
        }
    }
}

/// What a walker found.
#[derive(Debug)]
pub enum Found {
    /// A key with its DUMP payload; `expire_at_ms` absolute (Unix ms). `recopy`: read again
    /// after a keyspace event (follow mode), so it replaces what the copy wrote before.
    Key {
        db: u64,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: Bytes,
        recopy: bool,
    },
    /// A key that is gone from the source (follow mode: deleted, expired, renamed away).
    Gone { db: u64, key: Vec<u8> },
    /// A function library's code (from FUNCTION DUMP).
    Function { code: Vec<u8> },
    /// A big string read in parts begins: `len` bytes (STRLEN), the TTL read before the first
    /// part (the one that counts is `StringEnd`'s).
    StringStart {
        db: u64,
        key: Vec<u8>,
        len: u64,
        expire_at_ms: Option<i64>,
        recopy: bool,
    },
    /// The next part of the big string `key`, in order.
    StringPart { db: u64, key: Vec<u8>, data: Bytes },
    /// The big string `key` is complete and did not change while it was read; its TTL, read
    /// in the same transaction that confirmed it.
    StringEnd {
        db: u64,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
    },
    /// The big string `key` changed while it was read: drop what was planned of it (another
    /// attempt, or its DUMP, follows).
    StringAbandon { db: u64, key: Vec<u8> },
}

impl Found {
    fn bytes(&self) -> usize {
        match self {
            Found::Key { key, payload, .. } => key.len() + payload.len() + 64,
            Found::Gone { key, .. } => key.len() + 64,
            Found::Function { code } => code.len() + 64,
            Found::StringPart { key, data, .. } => key.len() + data.len() + 64,
            Found::StringStart { key, .. }
            | Found::StringEnd { key, .. }
            | Found::StringAbandon { key, .. } => key.len() + 64,
        }
    }
}

/// Counters the walkers keep (shared by every node's walker).
#[derive(Debug, Default)]
pub struct Counters {
    /// Keys SCAN returned.
    pub scanned: AtomicU64,
    /// Keys gone between SCAN and DUMP (DUMP nil or PTTL -2).
    pub vanished: AtomicU64,
    /// Keys read with DUMP and handed on.
    pub dumped: AtomicU64,
    /// Keys whose size estimate exceeded the window, DUMPed alone.
    pub dumped_alone: AtomicU64,
    /// Keyspace events received (follow mode).
    pub events: AtomicU64,
    /// Keys re-read after an event (follow mode).
    pub recopied: AtomicU64,
    /// Keys found gone after an event (follow mode).
    pub gone: AtomicU64,
    /// Set when MEMORY USAGE was refused and the probe was turned off.
    pub probe_refused: AtomicU64,
    /// Big strings read in parts (GETRANGE), and attempts dropped because the key changed.
    pub read_in_parts: AtomicU64,
    pub part_attempts_dropped: AtomicU64,
    /// Held while a walker reads a big string in parts: one at a time, across all walkers.
    pub big_string: tokio::sync::Mutex<()>,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Most items and bytes in one batch handed across the queue.
const BATCH_ITEMS: usize = 512;
const BATCH_BYTES: usize = 1 << 20;

type Batch = (Vec<Found>, OwnedSemaphorePermit);

/// The sending side of the bounded queue from the walkers.
#[derive(Clone)]
pub struct FoundSender {
    tx: mpsc::Sender<Batch>,
    budget: Arc<Semaphore>,
    limit: usize,
}

impl FoundSender {
    /// Sends one part of a big string, claiming a quarter of the queue's budget whatever its
    /// size: at most four parts wait between a walker and the writer (a big string must not
    /// fill the whole queue with its bytes).
    pub async fn send_part(&self, part: Found) -> Result<(), String> {
        let claim = part.bytes().max(self.limit / 4);
        self.send(vec![part], claim).await
    }

    /// Sends a batch, waiting while the queue holds its byte budget (a batch larger than the
    /// whole budget waits until the queue is empty).
    pub async fn send(&self, batch: Vec<Found>, bytes: usize) -> Result<(), String> {
        let want = bytes.clamp(1, self.limit) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| "the writing side stopped".to_string())?;
        self.tx
            .send((batch, permit))
            .await
            .map_err(|_| "the writing side stopped".to_string())
    }
}

/// A queue of found items holding at most `bytes` (payloads included).
pub fn found_queue(bytes: usize) -> (FoundSender, mpsc::Receiver<Batch>) {
    let (tx, rx) = mpsc::channel(64);
    let limit = bytes.clamp(1 << 20, u32::MAX as usize >> 1);
    (
        FoundSender {
            tx,
            budget: Arc::new(Semaphore::new(limit)),
            limit,
        },
        rx,
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a pipelined command was for.
#[derive(Debug)]
pub enum Tag {
    Scan,
    Select(u64),
    Memory(Vec<u8>),
    Dump {
        key: Vec<u8>,
        estimate: usize,
    },
    Pttl,
    /// TYPE of a key whose estimate says it may be a big string.
    Type {
        key: Vec<u8>,
        estimate: usize,
    },
}

/// A key waiting for its DUMP: its size estimate, and whether its TYPE is known not to need
/// the big-string path (asked already, or no need to ask).
struct Waiting {
    key: Vec<u8>,
    estimate: usize,
    typed: bool,
}

/// The DUMP machinery on one source connection: keys go in, `Found` items come out in batches.
pub struct Dumper<'a> {
    pipe: Pipeline<Tag>,
    opts: &'a ScanOptions,
    counters: &'a Counters,
    out: &'a FoundSender,
    probe: bool,
    db: u64,
    /// Follow mode: a key found missing is reported as `Gone` instead of counted as vanished.
    follow: bool,
    /// Keys waiting for their DUMP.
    waiting: VecDeque<Waiting>,
    /// The second connection big strings are read on (WATCH cannot share the pipeline), and
    /// the database it is in.
    side: Option<(crate::net::Connection, u64)>,
    /// Whether the source answers PEXPIRETIME (7.0+): a big string's TTL is then read as the
    /// absolute time it is, not computed from PTTL and this host's clock.
    pexpiretime: Option<bool>,
    estimate_in_flight: usize,
    dumps_in_flight: usize,
    /// The DUMP reply waiting for its PTTL (the next reply).
    stash: Option<(Vec<u8>, Reply)>,
    batch: Vec<Found>,
    batch_bytes: usize,
    scratch: Vec<u8>,
}

impl<'a> Dumper<'a> {
    pub fn new(
        pipe: Pipeline<Tag>,
        opts: &'a ScanOptions,
        counters: &'a Counters,
        out: &'a FoundSender,
    ) -> Self {
        Dumper {
            pipe,
            opts,
            counters,
            out,
            probe: opts.memory_probe,
            db: 0,
            follow: false,
            waiting: VecDeque::new(),
            side: None,
            pexpiretime: None,
            estimate_in_flight: 0,
            dumps_in_flight: 0,
            stash: None,
            batch: Vec::new(),
            batch_bytes: 0,
            scratch: Vec::new(),
        }
    }

    fn endpoint(&self) -> String {
        self.pipe.endpoint().to_string()
    }

    fn net(&self, e: crate::net::NetError) -> String {
        e.to_string()
    }

    async fn submit(&mut self, argv: &[&[u8]], tag: Tag) -> Result<(), String> {
        self.scratch.clear();
        encode_command(&mut self.scratch, argv);
        let cmd = std::mem::take(&mut self.scratch);
        let r = self.pipe.submit(&cmd, tag).await;
        self.scratch = cmd;
        r.map_err(|e| self.net(e))
    }

    /// Switches the connection to database `db` once everything before has been answered
    /// (items carry the database they were read from).
    pub async fn select(&mut self, db: u64) -> Result<(), String> {
        self.drain().await?;
        if db == self.db {
            return Ok(());
        }
        let n = db.to_string();
        self.submit(&[b"SELECT", n.as_bytes()], Tag::Select(db))
            .await?;
        self.drain().await
    }

    /// Queues `key` for reading.
    pub async fn add_key(&mut self, key: Vec<u8>) -> Result<(), String> {
        if self.probe {
            let k = key.clone();
            self.submit(&[b"MEMORY", b"USAGE", &k], Tag::Memory(key))
                .await?;
        } else {
            self.waiting.push_back(Waiting {
                key,
                estimate: 0,
                typed: true,
            });
        }
        self.admit().await
    }

    /// Whether a key of this size estimate may go the big-string way.
    fn may_be_big_string(&self, estimate: usize) -> bool {
        self.opts
            .string_parts
            .as_ref()
            .is_some_and(|p| estimate > p.above)
    }

    /// Sends DUMP + PTTL for waiting keys while the estimated bytes in flight allow (a key that
    /// may be a big string is asked its TYPE first).
    async fn admit(&mut self) -> Result<(), String> {
        while let Some(w) = self.waiting.front() {
            let est = w.estimate;
            if !w.typed {
                let Some(w) = self.waiting.pop_front() else {
                    break;
                };
                let k = w.key.clone();
                self.submit(
                    &[b"TYPE", &k],
                    Tag::Type {
                        key: w.key,
                        estimate: est,
                    },
                )
                .await?;
                continue;
            }
            if self.dumps_in_flight > 0 && self.estimate_in_flight + est > self.opts.window_bytes {
                break;
            }
            let Some(Waiting { key, .. }) = self.waiting.pop_front() else {
                break;
            };
            if est > self.opts.window_bytes {
                Counters::add(&self.counters.dumped_alone, 1);
            }
            self.dumps_in_flight += 1;
            self.estimate_in_flight += est;
            let k = key.clone();
            self.submit(&[b"DUMP", &k], Tag::Dump { key, estimate: est })
                .await?;
            self.submit(&[b"PTTL", &k], Tag::Pttl).await?;
        }
        Ok(())
    }

    /// The connection big strings are read on, in the walker's database.
    async fn side(&mut self) -> Result<&mut crate::net::Connection, String> {
        let db = self.db;
        if self.side.as_ref().is_some_and(|(_, d)| *d != db) {
            self.side = None;
        }
        if self.side.is_none() {
            let connect = self
                .opts
                .string_parts
                .as_ref()
                .map(|p| p.connect.clone())
                .unwrap_or_default();
            let endpoint = self.pipe.endpoint().clone();
            let mut conn = crate::net::Connection::connect(&endpoint, &connect)
                .await
                .map_err(|e| e.to_string())?;
            if db != 0 {
                let n = db.to_string();
                let r = conn
                    .request(&[&b"SELECT"[..], n.as_bytes()])
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(e) = r.error() {
                    return Err(format!("{endpoint}: SELECT {db} failed: {e}"));
                }
            }
            self.side = Some((conn, db));
        }
        let name = self.endpoint();
        match self.side.as_mut() {
            Some((c, _)) => Ok(c),
            None => Err(format!("{name}: no connection for big strings")),
        }
    }

    /// One request on the side connection; an error reply is an error naming `what`.
    async fn side_request(&mut self, argv: &[&[u8]], key: &[u8]) -> Result<Reply, String> {
        let endpoint = self.endpoint();
        let db = self.db;
        let conn = self.side().await?;
        let r = conn.request(argv).await.map_err(|e| e.to_string())?;
        if let Some(e) = r.error() {
            return Err(format!(
                "{endpoint}: {} {} (database {db}) failed: {e}",
                String::from_utf8_lossy(argv[0]),
                quote_bytes(key)
            ));
        }
        Ok(r)
    }

    /// Reads the string `key` in parts (see "Big strings" in the module doc). Returns false
    /// when it must be DUMPed after all: it is no longer a big string, or it changed during
    /// every attempt.
    async fn big_string(&mut self, key: &[u8]) -> Result<bool, String> {
        let Some(parts) = self.opts.string_parts.clone() else {
            return Ok(false);
        };
        let part = parts.part_bytes.max(1);
        let counters = self.counters;
        let _one = counters.big_string.lock().await;
        // What this walker found before goes first.
        self.flush().await?;
        for attempt in 1..=STRING_ATTEMPTS {
            self.side_request(&[b"WATCH", key], key).await?;
            let len = {
                let conn = self.side().await?;
                let r = conn
                    .request(&[&b"STRLEN"[..], key])
                    .await
                    .map_err(|e| e.to_string())?;
                r.as_int()
            };
            let pttl = self.side_request(&[b"PTTL", key], key).await?.as_int();
            let (Some(len), Some(pttl)) = (len, pttl) else {
                // Not a string any more (WRONGTYPE), or an odd answer: the DUMP path decides.
                self.side_request(&[b"UNWATCH"], key).await?;
                return Ok(false);
            };
            if pttl == -2 {
                self.side_request(&[b"UNWATCH"], key).await?;
                self.missing(key.to_vec());
                return Ok(true);
            }
            if (len as u64) <= parts.above as u64 {
                self.side_request(&[b"UNWATCH"], key).await?;
                return Ok(false);
            }
            let len = len as u64;
            let at = now_ms();
            self.out
                .send_part(Found::StringStart {
                    db: self.db,
                    key: key.to_vec(),
                    len,
                    expire_at_ms: (pttl >= 0).then(|| at.saturating_add(pttl)),
                    recopy: self.follow,
                })
                .await?;
            let mut offset = 0u64;
            while offset < len {
                let end = (offset + part as u64).min(len) - 1;
                let (from, to) = (offset.to_string(), end.to_string());
                let r = self
                    .side_request(&[b"GETRANGE", key, from.as_bytes(), to.as_bytes()], key)
                    .await?;
                let Reply::Bulk(data) = r else {
                    return Err(format!(
                        "{}: GETRANGE {} answered {r}",
                        self.endpoint(),
                        quote_bytes(key)
                    ));
                };
                if data.is_empty() {
                    // Shorter than it was: EXEC below says it changed.
                    break;
                }
                offset += data.len() as u64;
                self.out
                    .send_part(Found::StringPart {
                        db: self.db,
                        key: key.to_vec(),
                        data,
                    })
                    .await?;
            }
            if self.pexpiretime.is_none() {
                let conn = self.side().await?;
                let r = conn
                    .request(&[&b"PEXPIRETIME"[..], key])
                    .await
                    .map_err(|e| e.to_string())?;
                self.pexpiretime = Some(!r.is_error());
            }
            let absolute = self.pexpiretime == Some(true);
            let conn = self.side().await?;
            conn.queue(&[&b"MULTI"[..]]);
            if absolute {
                conn.queue(&[&b"PEXPIRETIME"[..], key]);
            } else {
                conn.queue(&[&b"PTTL"[..], key]);
            }
            conn.queue(&[&b"EXEC"[..]]);
            conn.flush().await.map_err(|e| e.to_string())?;
            let mut replies = Vec::with_capacity(3);
            for _ in 0..3 {
                replies.push(conn.read_reply().await.map_err(|e| e.to_string())?);
            }
            let at = now_ms();
            let confirmed = match &replies[2] {
                Reply::Array(v) => v.first().and_then(Reply::as_int),
                _ => None,
            };
            match confirmed {
                Some(ttl) if ttl != -2 => {
                    let expire_at_ms = match ttl {
                        -1 => None,
                        t if absolute => Some(t),
                        t => Some(at.saturating_add(t)),
                    };
                    Counters::add(&self.counters.read_in_parts, 1);
                    Counters::add(&self.counters.dumped, 1);
                    if self.follow {
                        Counters::add(&self.counters.recopied, 1);
                    }
                    return self
                        .out
                        .send_part(Found::StringEnd {
                            db: self.db,
                            key: key.to_vec(),
                            expire_at_ms,
                        })
                        .await
                        .map(|_| true);
                }
                _ => {
                    // EXEC nil: written meanwhile (or gone: PTTL -2).
                    Counters::add(&self.counters.part_attempts_dropped, 1);
                    self.out
                        .send_part(Found::StringAbandon {
                            db: self.db,
                            key: key.to_vec(),
                        })
                        .await?;
                    if attempt < STRING_ATTEMPTS {
                        eprintln!(
                            "shake-rump: {}: key {} (database {}) changed while it was read in parts; reading it again (attempt {} of {STRING_ATTEMPTS})",
                            self.endpoint(),
                            quote_bytes(key),
                            self.db,
                            attempt + 1
                        );
                    }
                }
            }
        }
        eprintln!(
            "shake-rump: {}: key {} (database {}) changed during each of {STRING_ATTEMPTS} reads in parts; copying it whole with DUMP (held in memory once)",
            self.endpoint(),
            quote_bytes(key),
            self.db
        );
        Ok(false)
    }

    /// Keys queued and not read yet.
    pub fn backlog(&self) -> usize {
        self.waiting.len() + self.pipe.in_flight()
    }

    /// Handles one completion; a SCAN reply is handed back to the caller.
    async fn handle(&mut self, tag: Tag, reply: Reply) -> Result<Option<Reply>, String> {
        match tag {
            Tag::Scan => return Ok(Some(reply)),
            Tag::Select(db) => {
                if let Some(e) = reply.error() {
                    return Err(format!("{}: SELECT {db} failed: {e}", self.endpoint()));
                }
                self.db = db;
            }
            Tag::Memory(key) => match reply {
                Reply::Int(n) => {
                    let estimate = n.max(0) as usize;
                    let typed = !self.may_be_big_string(estimate);
                    self.waiting.push_back(Waiting {
                        key,
                        estimate,
                        typed,
                    });
                }
                Reply::Nil => self.missing(key),
                Reply::Error(e) => {
                    // Refused (NOPERM, unknown command on a trimmed service): go on without it.
                    if self.probe {
                        self.probe = false;
                        Counters::add(&self.counters.probe_refused, 1);
                        eprintln!(
                            "shake-rump: {}: MEMORY USAGE refused ({e}); key sizes are not checked before DUMP",
                            self.endpoint()
                        );
                    }
                    self.waiting.push_back(Waiting {
                        key,
                        estimate: 0,
                        typed: true,
                    });
                }
                other => {
                    return Err(format!(
                        "{}: MEMORY USAGE {} answered {other}",
                        self.endpoint(),
                        quote_bytes(&key)
                    ))
                }
            },
            Tag::Type { key, estimate } => {
                let string = reply.as_bytes() == Some(&b"string"[..]);
                if !(string && self.big_string(&key).await?) {
                    self.waiting.push_front(Waiting {
                        key,
                        estimate,
                        typed: true,
                    });
                }
            }
            Tag::Dump { key, estimate } => {
                self.dumps_in_flight -= 1;
                self.estimate_in_flight -= estimate;
                self.stash = Some((key, reply));
            }
            Tag::Pttl => {
                let Some((key, dump)) = self.stash.take() else {
                    return Err(format!(
                        "{}: a PTTL reply without its DUMP",
                        self.endpoint()
                    ));
                };
                let at = now_ms();
                let pttl = match &reply {
                    Reply::Int(n) => *n,
                    Reply::Error(e) => {
                        return Err(format!(
                            "{}: PTTL {} failed: {e}",
                            self.endpoint(),
                            quote_bytes(&key)
                        ))
                    }
                    other => {
                        return Err(format!(
                            "{}: PTTL {} answered {other}",
                            self.endpoint(),
                            quote_bytes(&key)
                        ))
                    }
                };
                match dump {
                    Reply::Nil => self.missing(key),
                    _ if pttl == -2 => self.missing(key),
                    Reply::Bulk(payload) => {
                        let expire_at_ms = (pttl >= 0).then(|| at.saturating_add(pttl));
                        Counters::add(&self.counters.dumped, 1);
                        if self.follow {
                            Counters::add(&self.counters.recopied, 1);
                        }
                        self.push(Found::Key {
                            db: self.db,
                            key,
                            expire_at_ms,
                            payload,
                            recopy: self.follow,
                        })
                        .await?;
                    }
                    Reply::Error(e) => {
                        return Err(format!(
                            "{}: DUMP {} (database {}) failed: {e}",
                            self.endpoint(),
                            quote_bytes(&key),
                            self.db
                        ))
                    }
                    other => {
                        return Err(format!(
                            "{}: DUMP {} answered {other}",
                            self.endpoint(),
                            quote_bytes(&key)
                        ))
                    }
                }
            }
        }
        self.admit().await?;
        Ok(None)
    }

    fn missing(&mut self, key: Vec<u8>) {
        if self.follow {
            Counters::add(&self.counters.gone, 1);
            let f = Found::Gone { db: self.db, key };
            self.batch_bytes += f.bytes();
            self.batch.push(f);
        } else {
            Counters::add(&self.counters.vanished, 1);
        }
    }

    async fn push(&mut self, f: Found) -> Result<(), String> {
        self.batch_bytes += f.bytes();
        self.batch.push(f);
        if self.batch.len() >= BATCH_ITEMS || self.batch_bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands the items gathered so far to the queue.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let bytes = std::mem::replace(&mut self.batch_bytes, 0);
        self.out.send(batch, bytes).await
    }

    /// Waits until every queued key has been read (and SCAN replies, if any, are an error here).
    pub async fn drain(&mut self) -> Result<(), String> {
        loop {
            self.admit().await?;
            let next = self
                .pipe
                .next_completion()
                .await
                .map_err(|e| e.to_string())?;
            let Some((tag, reply)) = next else {
                if self.waiting.is_empty() {
                    return Ok(());
                }
                continue;
            };
            if self.handle(tag, reply).await?.is_some() {
                return Err(format!("{}: an unexpected SCAN reply", self.endpoint()));
            }
        }
    }

    /// SCANs the current database to its end, reading every key it names.
    pub async fn scan_db(&mut self) -> Result<(), String> {
        let count = self.opts.count.max(1).to_string();
        let backlog_limit = (self.opts.count.max(1) as usize)
            .saturating_mul(4)
            .max(4096);
        let mut cursor: Option<Vec<u8>> = Some(b"0".to_vec());
        let mut scan_in_flight = false;
        loop {
            if !scan_in_flight && self.waiting.len() < backlog_limit {
                if let Some(c) = cursor.take() {
                    let mut argv: Vec<&[u8]> = vec![b"SCAN", &c];
                    if let Some(p) = &self.opts.pattern {
                        argv.push(b"MATCH");
                        argv.push(p);
                    }
                    argv.push(b"COUNT");
                    argv.push(count.as_bytes());
                    if let Some(t) = &self.opts.type_name {
                        argv.push(b"TYPE");
                        argv.push(t.as_bytes());
                    }
                    let argv: Vec<Vec<u8>> = argv.into_iter().map(|a| a.to_vec()).collect();
                    let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
                    self.submit(&refs, Tag::Scan).await?;
                    scan_in_flight = true;
                }
            }
            let next = self
                .pipe
                .next_completion()
                .await
                .map_err(|e| e.to_string())?;
            let Some((tag, reply)) = next else {
                if cursor.is_none() && !scan_in_flight && self.waiting.is_empty() {
                    return Ok(());
                }
                self.admit().await?;
                continue;
            };
            let Some(scan) = self.handle(tag, reply).await? else {
                continue;
            };
            scan_in_flight = false;
            let (next_cursor, keys) = parse_scan(&scan)
                .map_err(|e| format!("{}: SCAN in database {}: {e}", self.endpoint(), self.db))?;
            if next_cursor != b"0" {
                cursor = Some(next_cursor);
            }
            Counters::add(&self.counters.scanned, keys.len() as u64);
            for k in keys {
                self.add_key(k).await?;
            }
        }
    }

    /// Reads the keys an event named, in database `db` (follow mode): a key present is sent as
    /// `Found::Key`, a key missing as `Found::Gone`.
    pub async fn reread(&mut self, db: u64, keys: Vec<Vec<u8>>) -> Result<(), String> {
        self.follow = true;
        self.select(db).await?;
        for k in keys {
            self.add_key(k).await?;
        }
        self.drain().await?;
        self.flush().await
    }
}

fn parse_scan(r: &Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    if let Some(e) = r.error() {
        return Err(e.to_string());
    }
    let parts = r
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("SCAN answered {r}, not [cursor, keys]"))?;
    let cursor = parts[0]
        .as_bytes()
        .ok_or_else(|| format!("SCAN cursor is {}", parts[0]))?
        .to_vec();
    let keys = parts[1]
        .as_array()
        .ok_or_else(|| format!("SCAN keys are {}", parts[1]))?
        .iter()
        .map(|k| {
            k.as_bytes()
                .map(|b| b.to_vec())
                .ok_or_else(|| format!("SCAN returned a key {k}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cursor, keys))
}
