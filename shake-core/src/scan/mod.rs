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
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            count: 1000,
            pattern: None,
            type_name: None,
            memory_probe: true,
            window_bytes: 32 << 20,
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
}

impl Found {
    fn bytes(&self) -> usize {
        match self {
            Found::Key { key, payload, .. } => key.len() + payload.len() + 64,
            Found::Gone { key, .. } => key.len() + 64,
            Found::Function { code } => code.len() + 64,
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
    Dump { key: Vec<u8>, estimate: usize },
    Pttl,
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
    /// Keys waiting for their DUMP, with their size estimate.
    waiting: VecDeque<(Vec<u8>, usize)>,
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
            self.waiting.push_back((key, 0));
        }
        self.admit().await
    }

    /// Sends DUMP + PTTL for waiting keys while the estimated bytes in flight allow.
    async fn admit(&mut self) -> Result<(), String> {
        while let Some((_, est)) = self.waiting.front() {
            let est = *est;
            if self.dumps_in_flight > 0 && self.estimate_in_flight + est > self.opts.window_bytes {
                break;
            }
            let Some((key, _)) = self.waiting.pop_front() else {
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
                Reply::Int(n) => self.waiting.push_back((key, n.max(0) as usize)),
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
                    self.waiting.push_back((key, 0));
                }
                other => {
                    return Err(format!(
                        "{}: MEMORY USAGE {} answered {other}",
                        self.endpoint(),
                        quote_bytes(&key)
                    ))
                }
            },
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
