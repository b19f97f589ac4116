//! Atomic slot migration on a cluster source (Valkey 9 `CLUSTER MIGRATESLOTS`), as the links of
//! a sync see it, and the hand-off that keeps the target exact (docs/atomic-slot-migration.md
//! has what the masters propagate, as observed on Valkey 9.1, and the reasoning).
//!
//! This module owns:
//! - reading the protocol's commands in a master's stream (`CLUSTER SYNCSLOTS ...`), which are
//!   never written to the target;
//! - the **import window** of a link whose master imports slots: from `SYNCSLOTS ESTABLISH` to
//!   `SYNCSLOTS FINISH`, every command for the job's slots is dropped. They are the snapshot of
//!   the slots (AOF-style commands, not idempotent: `RPUSH` onto the key the target already
//!   has), the exporting master's writes streamed to the importer (the exporting link carries
//!   them too), or, on failure, the importer's cleanup deletions;
//! - the **fence**: when the importing link reads `SYNCSLOTS PAUSED`, it asks the exporting
//!   master (found by node id) in one transaction for the job's state and its replication
//!   offset. While that job is paused, the exporting master writes nothing, so the offset is
//!   exactly its last write before the hand-off. The exporting link applies everything up to
//!   the fence, waits there for the job's outcome, and on success drops the deletions of the
//!   moved slots that follow (the trim: one `UNLINK` per moved key, emitted as soon as it learns
//!   the new owner, while it is still paused). The importing link applies its writes to the
//!   slots after `FINISH` only once the exporting link has applied everything up to the fence,
//!   so the two streams' writes to the slots reach the target in the order they happened;
//! - the [`MigrationBoard`] the links of one sync share for that.
//!
//! What the stream applier does with a command is decided in [`super::stream`]; this module
//! only tells it which slots to drop and when to wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::SyncError;
use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::resp::Reply;
use crate::text::quote_bytes;

/// How long one link waits for another at a fence. The exporting master's pause is bounded
/// (twice `cluster-mf-timeout`, 10 s by default), so this only runs out when the other link is
/// stuck or gone.
const FENCE_WAIT: Duration = Duration::from_secs(60);

/// Job states of `CLUSTER GETSLOTMIGRATIONS` (on the exporting master) in which its writes are
/// paused: its replication offset is then the fence.
const PAUSED_STATES: [&str; 2] = ["failover-paused", "failover-granted"];

/// An inclusive range of hash slots.
pub type SlotRange = (u16, u16);

fn covers(ranges: &[SlotRange], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
}

fn describe(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The hand-off point of one migration job, as the importing link found it.
#[derive(Debug, Clone)]
struct Fence {
    job: String,
    /// Node id of the exporting master.
    exporter: String,
    slots: Vec<SlotRange>,
    /// The exporting master's replication offset while paused for the job.
    offset: u64,
    /// `None` until the importing link reads FINISH: success or not.
    outcome: Option<bool>,
}

#[derive(Debug, Default)]
struct BoardState {
    fences: Vec<Fence>,
    /// Per master node id: the offset up to which its link has everything on the target.
    progress: HashMap<String, Arc<AtomicU64>>,
}

/// What the links of one sync know about atomic slot migrations in progress on the source.
#[derive(Debug, Default)]
pub struct MigrationBoard {
    state: Mutex<BoardState>,
    changed: Notify,
    /// Any fence registered and not yet passed by its exporting link (keeps the per-command
    /// check to one atomic load when there is none).
    active: AtomicBool,
}

impl MigrationBoard {
    fn with<R>(&self, f: impl FnOnce(&mut BoardState) -> R) -> R {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn progress_of(&self, node: &str) -> Arc<AtomicU64> {
        self.with(|s| s.progress.entry(node.to_string()).or_default().clone())
    }

    fn register(&self, fence: Fence) {
        self.with(|s| {
            s.fences.retain(|f| f.job != fence.job);
            s.fences.push(fence);
        });
        self.active.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn finish(&self, job: &str, success: bool) -> Option<Fence> {
        let f = self.with(|s| {
            let f = s.fences.iter_mut().find(|f| f.job == job)?;
            f.outcome = Some(success);
            Some(f.clone())
        });
        self.changed.notify_waiters();
        f
    }

    /// The first fence of `exporter`'s that a command ending at `end` is past.
    fn crossed(&self, exporter: &str, end: u64) -> Option<Fence> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.with(|s| {
            s.fences
                .iter()
                .find(|f| f.exporter == exporter && end > f.offset)
                .cloned()
        })
    }

    fn retire(&self, job: &str) {
        let empty = self.with(|s| {
            s.fences.retain(|f| f.job != job);
            s.fences.is_empty()
        });
        if empty {
            self.active.store(false, Ordering::Release);
        }
    }

    /// Waits until `ready` holds (checked after every change), at most [`FENCE_WAIT`].
    async fn wait_for<T>(&self, mut ready: impl FnMut(&MigrationBoard) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + FENCE_WAIT;
        loop {
            let changed = self.changed.notified();
            if let Some(v) = ready(self) {
                return Some(v);
            }
            // Progress counters move without a notification: look again now and then.
            let nap = tokio::time::Instant::now() + Duration::from_millis(20);
            if nap >= deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(nap, changed).await;
        }
    }
}

/// An import into this link's master, between `ESTABLISH` and `FINISH`.
#[derive(Debug, Clone)]
struct Window {
    job: String,
    /// Node id of the exporting master (absent in windows recovered at startup).
    source: Option<String>,
    slots: Vec<SlotRange>,
    /// Watches the exporting master for the job's pause (see [`watch_exporter`]).
    watcher: Option<Arc<tokio::task::JoinHandle<()>>>,
}

/// What a `CLUSTER` command of the stream asks the applier to do.
pub enum Control {
    /// Nothing (the command itself is never written).
    Skip,
    /// An import finished successfully: before any later command, wait for the exporting
    /// link to have applied everything up to the fence (see [`LinkMigrations::await_handoff`]).
    Handoff(Handoff),
}

/// A finished job whose exporting link must reach the fence (opaque to the applier).
pub struct Handoff(Fence);

/// One link's side of atomic slot migrations.
#[derive(Debug, Default)]
pub struct LinkMigrations {
    board: Arc<MigrationBoard>,
    /// This link's master: its node id, address and login.
    me: Option<String>,
    source: Option<(Endpoint, ConnectOptions)>,
    progress: Option<Arc<AtomicU64>>,
    windows: Vec<Window>,
    /// Slots handed off at a passed fence: their deletions right after it are the trim.
    trim: Vec<SlotRange>,
    /// Commands dropped (migration traffic and trims).
    pub dropped: u64,
}

impl LinkMigrations {
    pub fn new(board: Arc<MigrationBoard>) -> Self {
        LinkMigrations {
            board,
            ..Default::default()
        }
    }

    /// Learns who this link's master is (its cluster node id) and which imports into it are in
    /// progress already (a link resuming in the middle of one). Not a cluster node: nothing to
    /// learn, nothing of this module applies.
    pub async fn attach(
        &mut self,
        source: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<(), SyncError> {
        let mut conn = Connection::connect(source, opts)
            .await
            .map_err(|e| SyncError::Link(e.into()))?;
        let id = match conn.request(&["CLUSTER", "MYID"]).await {
            Ok(Reply::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => return Ok(()),
        };
        self.progress = Some(self.board.progress_of(&id));
        self.me = Some(id);
        self.source = Some((source.clone(), opts.clone()));
        self.windows.clear();
        self.trim.clear();
        // Valkey before 9 and Redis do not know the command: no atomic migrations.
        if let Ok(Reply::Array(jobs)) = conn.request(&["CLUSTER", "GETSLOTMIGRATIONS"]).await {
            for job in jobs {
                let f = fields(&job);
                let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                if get("operation").eq_ignore_ascii_case("IMPORT")
                    && !matches!(get("state").as_str(), "success" | "failed" | "cancelled")
                {
                    self.windows.push(Window {
                        job: get("name"),
                        source: None,
                        slots: parse_ranges(&get("slot_ranges")),
                        watcher: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Publishes that this link has everything up to `offset` on the target.
    pub fn progress(&self, offset: u64) {
        if let Some(p) = &self.progress {
            p.fetch_max(offset, Ordering::AcqRel);
        }
    }

    /// Whether a command for `slot` is migration traffic this link must not write. `deletion`:
    /// the command is a single-key `DEL`/`UNLINK` (what a trim consists of).
    pub fn drops(&mut self, slot: u16, deletion: bool) -> bool {
        if !self.trim.is_empty() {
            if deletion && covers(&self.trim, slot) {
                self.dropped += 1;
                return true;
            }
            // The trim is one run of deletions emitted at once, while the master is still
            // paused: anything else means it is over.
            self.trim.clear();
        }
        if self.windows.iter().any(|w| covers(&w.slots, slot)) {
            self.dropped += 1;
            return true;
        }
        false
    }

    /// Nothing to drop: no import window open, no trim expected (the common case, checked
    /// before the slot of a command is even computed).
    pub fn idle(&self) -> bool {
        self.trim.is_empty() && self.windows.is_empty()
    }

    /// A fence of this link's master that the command ending at `end` is past: the applier must
    /// have everything before it on the target (it settles first), then call [`Self::pass`].
    pub fn fence_crossed(&self, end: u64) -> bool {
        self.me
            .as_ref()
            .is_some_and(|me| self.board.crossed(me, end).is_some())
    }

    /// Passes the fences of this link's master that `end` is past: waits for each job's outcome;
    /// a successful one makes the following deletions of its slots the trim.
    pub async fn pass(&mut self, end: u64) -> Result<(), SyncError> {
        let Some(me) = self.me.clone() else {
            return Ok(());
        };
        while let Some(f) = self.board.crossed(&me, end) {
            let job = f.job.clone();
            let outcome = self
                .board
                .wait_for(|b| {
                    b.with(|s| {
                        s.fences
                            .iter()
                            .find(|x| x.job == job)
                            .map(|x| x.outcome)
                            .unwrap_or(Some(false))
                    })
                })
                .await;
            let Some(success) = outcome else {
                return Err(SyncError::Fatal(format!(
                    "atomic slot migration {job} of slots {} from this master: the importing master's link did not report how it ended within {}s; the target's copy of these slots cannot be proven exact",
                    describe(&f.slots),
                    FENCE_WAIT.as_secs()
                )));
            };
            if success {
                self.trim.extend_from_slice(&f.slots);
            }
            self.board.retire(&job);
        }
        Ok(())
    }

    /// Handles `CLUSTER ...` from the stream (`argv[0]` is CLUSTER). Only `SYNCSLOTS` means
    /// anything to a replica; none of it is written to the target.
    pub async fn control(&mut self, argv: &[&[u8]], end: u64) -> Result<Control, SyncError> {
        let sub = argv
            .get(1)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        if sub != b"SYNCSLOTS" {
            return Ok(Control::Skip);
        }
        let what = argv
            .get(2)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        match what.as_slice() {
            b"ESTABLISH" => {
                let opts = options(&argv[3..]);
                let job = opts.get("NAME").and_then(|v| v.first()).cloned();
                let slots: Vec<SlotRange> = opts
                    .get("SLOTSRANGE")
                    .map(|v| {
                        v.chunks(2)
                            .filter_map(|p| {
                                Some((p.first()?.parse().ok()?, p.get(1)?.parse().ok()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let (Some(job), false) = (job, slots.is_empty()) else {
                    return Err(SyncError::Source(format!(
                        "a CLUSTER SYNCSLOTS ESTABLISH at offset {end} without a job name or slot ranges: {}",
                        argv.iter().map(|a| quote_bytes(a)).collect::<Vec<_>>().join(" ")
                    )));
                };
                let source = opts.get("SOURCE").and_then(|v| v.first()).cloned();
                self.windows.retain(|w| w.job != job);
                // The fence is the exporter's offset while it is paused for the job, a moment
                // (one cluster-bus round trip) that this link's reading position says nothing
                // about: watch the exporter from now on, beside the stream.
                let watcher = match (&source, &self.source) {
                    (Some(exporter), Some((me, opts))) => {
                        Some(Arc::new(tokio::spawn(watch_exporter(
                            self.board.clone(),
                            me.clone(),
                            opts.clone(),
                            exporter.clone(),
                            job.clone(),
                            slots.clone(),
                        ))))
                    }
                    _ => None,
                };
                self.windows.push(Window {
                    job,
                    source,
                    slots,
                    watcher,
                });
                Ok(Control::Skip)
            }
            b"FINISH" => {
                let opts = options(&argv[3..]);
                let job = opts
                    .get("NAME")
                    .and_then(|v| v.first())
                    .cloned()
                    .unwrap_or_default();
                let success = opts
                    .get("STATE")
                    .and_then(|v| v.first())
                    .is_some_and(|s| s.eq_ignore_ascii_case("success"));
                let Some(pos) = self.windows.iter().position(|w| w.job == job) else {
                    // A job this link never saw start (it began before a full sync whose RDB
                    // did not carry it): nothing was dropped for it, nothing to hand off.
                    return Ok(Control::Skip);
                };
                let w = self.windows.remove(pos);
                if let Some(h) = w.watcher.as_ref() {
                    // It stops by itself once the exporter reports the job paused or over.
                    let deadline = tokio::time::Instant::now() + FENCE_WAIT;
                    while !h.is_finished() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    h.abort();
                }
                if !success {
                    self.board.finish(&job, false);
                    return Ok(Control::Skip);
                }
                match self.board.finish(&job, true) {
                    Some(f) => Ok(Control::Handoff(Handoff(f))),
                    None => Err(SyncError::Fatal(format!(
                        "atomic slot migration {job} of slots {} into {} finished, but shake-sync could not fence it (the exporting master {} was never seen paused for it{}): the writes to these slots around the hand-off cannot be ordered exactly; run a fresh full sync (--flush-target) once the migration is over",
                        describe(&w.slots),
                        self.source.as_ref().map(|(e, _)| e.to_string()).unwrap_or_default(),
                        w.source.as_deref().unwrap_or("(unknown: the link started during the migration)"),
                        if w.source.is_none() { ", or the link started in the middle of the migration" } else { "" }
                    ))),
                }
            }
            // ACK, SNAPSHOT-EOF, FAILOVER-GRANTED, REQUEST-*: protocol chatter.
            _ => Ok(Control::Skip),
        }
    }

    /// After a successful import: waits until the exporting link has applied everything up to
    /// the fence, so that this link's later writes to the slots come after the exporter's.
    pub async fn await_handoff(&self, h: Handoff) -> Result<(), SyncError> {
        let f = h.0;
        let progress = self.board.progress_of(&f.exporter);
        let ok = self
            .board
            .wait_for(|_| (progress.load(Ordering::Acquire) >= f.offset).then_some(()))
            .await;
        if ok.is_none() {
            return Err(SyncError::Fatal(format!(
                "atomic slot migration {} of slots {}: the exporting master's link did not reach the hand-off point (offset {}) within {}s; the target's copy of these slots cannot be proven exact",
                f.job,
                describe(&f.slots),
                f.offset,
                FENCE_WAIT.as_secs()
            )));
        }
        Ok(())
    }
}

/// How often [`watch_exporter`] asks. The pause it looks for lasts at least a cluster-bus
/// round trip between the two masters (tens of milliseconds observed on loopback).
const WATCH_EVERY: Duration = Duration::from_millis(3);

/// Polls the exporting master (node id `exporter`, found through `me`, the importing master)
/// until it reports job `job` paused — then registers the fence: its replication offset, read
/// in the same transaction — or over. Errors only end the watch (no fence: the importing link
/// refuses to guess at FINISH).
async fn watch_exporter(
    board: Arc<MigrationBoard>,
    me: Endpoint,
    opts: ConnectOptions,
    exporter: String,
    job: String,
    slots: Vec<SlotRange>,
) {
    let Some(mut x) = connect_node(&me, &opts, &exporter).await else {
        return;
    };
    loop {
        x.queue(&["MULTI"]);
        x.queue(&["CLUSTER", "GETSLOTMIGRATIONS"]);
        x.queue(&["INFO", "replication"]);
        x.queue(&["EXEC"]);
        if x.flush().await.is_err() {
            return;
        }
        let mut last = Reply::Nil;
        for _ in 0..4 {
            match x.read_reply().await {
                Ok(r) => last = r,
                Err(_) => return,
            }
        }
        let Reply::Array(r) = last else { return };
        let (Some(Reply::Array(jobs)), Some(info)) = (r.first(), r.get(1).and_then(Reply::as_text))
        else {
            return;
        };
        let state = jobs.iter().find_map(|j| {
            let f = fields(j);
            (f.get("name") == Some(&job)).then(|| f.get("state").cloned().unwrap_or_default())
        });
        match state.as_deref() {
            Some(s) if PAUSED_STATES.contains(&s) => {
                if let Some(offset) = crate::net::parse_info(&info)
                    .get("master_repl_offset")
                    .and_then(|o| o.parse().ok())
                {
                    board.register(Fence {
                        job,
                        exporter,
                        slots,
                        offset,
                        outcome: None,
                    });
                }
                return;
            }
            Some("success" | "failed" | "cancelled") => return,
            _ => {}
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// A connection to the cluster node `id`, found in `CLUSTER NODES` of `via`, with its login.
async fn connect_node(via: &Endpoint, opts: &ConnectOptions, id: &str) -> Option<Connection> {
    let mut conn = Connection::connect(via, opts).await.ok()?;
    let nodes = conn.request(&["CLUSTER", "NODES"]).await.ok()?.as_text()?;
    let addr = nodes.lines().find_map(|l| {
        let mut parts = l.split(' ');
        (parts.next()? == id).then(|| parts.next().map(str::to_string))?
    })?;
    let hostport = addr.split('@').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    let host = if host.is_empty() {
        via.host.as_str()
    } else {
        host
    };
    Connection::connect(&via.with_address(host, port.parse().ok()?), opts)
        .await
        .ok()
}

/// `KEY value...` options of a SYNCSLOTS command, keys upper-cased; SLOTSRANGE takes every
/// number after it.
fn options(args: &[&[u8]]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let k = String::from_utf8_lossy(args[i]).to_ascii_uppercase();
        i += 1;
        let mut vals = Vec::new();
        if k == "SLOTSRANGE" {
            while i < args.len() && args[i].iter().all(u8::is_ascii_digit) {
                vals.push(String::from_utf8_lossy(args[i]).into_owned());
                i += 1;
            }
        } else if i < args.len() {
            vals.push(String::from_utf8_lossy(args[i]).into_owned());
            i += 1;
        }
        out.insert(k, vals);
    }
    out
}

/// A GETSLOTMIGRATIONS entry (a flat field/value array, or a map in RESP3) as text fields.
fn fields(r: &Reply) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Reply::Array(items) = r {
        for kv in items.chunks(2) {
            if let (Some(k), Some(v)) = (kv[0].as_text(), kv.get(1).and_then(Reply::as_text)) {
                out.insert(k, v);
            }
        }
    }
    out
}

/// `0-200 300-400` (GETSLOTMIGRATIONS' slot_ranges) as ranges.
fn parse_ranges(s: &str) -> Vec<SlotRange> {
    s.split([' ', ','])
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn establish_options() {
        let args: Vec<&[u8]> = vec![
            b"SOURCE",
            b"abc",
            b"NAME",
            b"j1",
            b"SLOTSRANGE",
            b"0",
            b"200",
            b"300",
            b"301",
        ];
        let o = options(&args);
        assert_eq!(o["SOURCE"], vec!["abc"]);
        assert_eq!(o["NAME"], vec!["j1"]);
        assert_eq!(o["SLOTSRANGE"], vec!["0", "200", "300", "301"]);
        assert_eq!(parse_ranges("0-200 300-301"), vec![(0, 200), (300, 301)]);
        assert_eq!(parse_ranges("7"), vec![(7, 7)]);
    }

    #[test]
    fn trim_is_one_run_of_deletions() {
        let mut l = LinkMigrations::default();
        l.trim = vec![(0, 10)];
        assert!(l.drops(5, true));
        assert!(!l.drops(20, true), "a deletion elsewhere ends the run");
        assert!(
            !l.drops(5, true),
            "and later deletions of the slots are the user's"
        );
    }
}
