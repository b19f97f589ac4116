//! The order between the links of one cluster source when keys move from one source master to
//! another (resharding with MIGRATE): the handover barrier. docs/topology.md states the rule for
//! users; in short:
//!
//! A key's history on the target must be the exporting master's commands on it up to the
//! migration, then the importing master's. Each master has its own link, and the links run at
//! their own pace, so the importing link could apply the key (`RESTORE-ASKING` in its stream)
//! before the exporting link has applied its last writes of the key and the `DEL` that MIGRATE
//! propagates — the target answers BUSYKEY, then the DEL removes the key: lost.
//!
//! MIGRATE is synchronous on the exporting master: it sends `RESTORE-ASKING`, blocks reading the
//! replies, then deletes the keys and propagates one `DEL`, and runs no other command meanwhile.
//! So a request that reaches the exporting master after the importing master executed the
//! `RESTORE-ASKING` is answered only once that DEL is in the exporter's stream.
//!
//! **When did it run?** A link applies a `RESTORE-ASKING` long after its master ran it when the
//! link lags, so asking the other masters for their offsets *then* would ask too much: past a
//! later migration the other way, whose link waits for this one — both would wait forever. So
//! every link's master is *sampled* all along: a task per link asks it `INFO replication` every
//! [`SAMPLE_EVERY`] and records, on one logical clock shared by every link of the sync (a tick
//! per request sent and per reply received, in the order they happened), which offset it
//! answered. The samples give each `RESTORE-ASKING` (stream offset `end`) a [`Window`]: it ran
//! after the last request answered with an offset below `end` was sent, and before the first
//! reply at `end` or past it was received. Its barrier needs, of every other link, the offset
//! that link's master answered to the first request sent after the window closed: the exporter's
//! DEL is at or before it.
//!
//! **Two links waiting for each other.** Link I waits at a `RESTORE-ASKING` of window W, and link
//! E waits at one of its own, of window V. If V opened after W closed (E's migration ran after
//! I's), E's master ran the `RESTORE-ASKING` E waits at after the MIGRATE that sent I its key had
//! ended (E was blocked in it when I's ran), so E's DEL of the key is before E's wait point, and
//! a waiting link has applied everything before its wait point: I does not wait for E. Only when
//! neither window is known to follow the other (two migrations in opposite directions within
//! about two sampling periods plus a round trip, or `RESTORE-ASKING`s replayed after a restart,
//! which ran before any sample) do the two links need each other; that is detected and stops the
//! sync with one line.
//!
//! **A link's full sync is an import too.** A master that joins the cluster receives its keys by
//! MIGRATE before shake-sync sees it own any slot, so those keys reach the target in that
//! master's full sync, not as `RESTORE-ASKING`s of a stream, while the exporting masters' DELs of
//! them are in their links' streams. The same reasoning applies: the RDB is forked after every
//! key in it was restored, and before `+FULLRESYNC` is received, so the other masters' offsets
//! answered to requests sent after that are past those DELs. [`Handle::full_sync_barrier`] waits
//! until the other links that are streaming have applied up to them before the RDB is written
//! (links themselves in a full sync are not waited for: their RDBs were forked after those DELs,
//! or hold the keys they delete later, as before). This wait is *soft*: if a link it waits for is
//! itself in a barrier waiting for this one (it needs this link's stream, which only starts
//! after the RDB), that link is not waited for, and the line saying so names it; the other
//! link's barrier is then satisfied once the RDB and the stream after it are applied.
//!
//! Nothing is remembered across restarts: a `RESTORE-ASKING` replayed after a kill -9 takes the
//! barrier again, and what the other links applied before it is committed with their checkpoints.
//!
//! This module owns the [`Board`] (per link: its current source master, how far it has applied,
//! its master's samples, what it waits for) and the barriers; the Applier and the link call
//! them, the link keeps its entry current.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::SyncError;
use crate::net::{ConnectOptions, Connection, Endpoint};

/// How often each link's master is sampled while the sync has more than one link. The finer,
/// the closer two migrations in opposite directions may follow each other (docs/topology.md).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// A link's master's samples are thinned (every other old one dropped) past this many runs:
/// about a minute of a master written to without pause.
const MAX_RUNS: usize = 65_536;

/// How long a barrier waits for samples of a master it cannot reach (a failover, a link that has
/// not found its master yet) before it gives up.
const SAMPLES_PATIENCE: Duration = Duration::from_secs(60);

/// When an event happened, on the board's clock: after tick `after` (`None`: not known, e.g. it
/// ran before the first sample) and before tick `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: Option<u64>,
    pub before: u64,
}

impl Window {
    /// This window's event certainly happened after `other`'s.
    pub fn follows(&self, other: &Window) -> bool {
        self.after.is_some_and(|a| a >= other.before)
    }
}

/// Consecutive samples of one master that answered the same offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    offset: u64,
    /// When the first reply with this offset was received.
    first_recv: u64,
    /// When the last request answered with this offset was sent.
    last_sent: u64,
}

/// One master's offsets over time, oldest first; offsets strictly grow along the runs.
#[derive(Debug, Default)]
struct Samples {
    runs: VecDeque<Run>,
}

impl Samples {
    /// The master answered `offset` to a request sent at tick `sent`, received at `recv`.
    fn add(&mut self, offset: u64, sent: u64, recv: u64) {
        match self.runs.back_mut() {
            Some(r) if r.offset == offset => {
                r.last_sent = sent;
                return;
            }
            // A new history (a failover to a node behind, a full resync): the old samples
            // describe another stream.
            Some(r) if offset < r.offset => self.runs.clear(),
            _ => {}
        }
        self.runs.push_back(Run {
            offset,
            first_recv: recv,
            last_sent: sent,
        });
        if self.runs.len() > MAX_RUNS {
            self.thin();
        }
    }

    /// Drops every other run of the older half. Dropping a run only widens windows and raises
    /// needs (see [`Samples::ran`], [`Samples::offset_after`]): never wrong, only coarser.
    fn thin(&mut self) {
        let old = self.runs.len() / 2;
        let mut i = 0usize;
        self.runs.retain(|_| {
            i += 1;
            i > old || i % 2 == 0
        });
    }

    /// The window in which the master executed the command ending at stream offset `end`;
    /// `None` until a sample at or past `end` is in.
    fn ran(&self, end: u64) -> Option<Window> {
        let i = self.runs.partition_point(|r| r.offset < end);
        let at = self.runs.get(i)?;
        Some(Window {
            after: i.checked_sub(1).map(|p| self.runs[p].last_sent),
            before: at.first_recv,
        })
    }

    /// The offset answered to the first request sent at tick `t` or later (what the master had
    /// run by then, at least); `None` until one is in.
    fn offset_after(&self, t: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.last_sent < t);
        self.runs.get(i).map(|r| r.offset)
    }

    /// Forgets the runs no query can need any more: those whose requests were all sent before
    /// `cut`, but the last of them (it bounds a window's start).
    fn prune(&mut self, cut: u64) {
        let i = self.runs.partition_point(|r| r.last_sent < cut);
        if i > 1 {
            self.runs.drain(..i - 1);
        }
    }

    /// The earliest tick a window of a command past `applied` can close at.
    fn horizon(&self, applied: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.offset <= applied);
        self.runs.get(i).map(|r| r.first_recv)
    }
}

/// What one barrier waits for: the window of the event it orders after the other links'
/// history (`None`: not known), and per other link the offset it must have applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Need {
    pub at: Option<Window>,
    pub links: Vec<(usize, u64)>,
}

#[derive(Debug, Default)]
struct Entry {
    name: String,
    source: Option<Endpoint>,
    /// Stream offset up to which everything of this link is on the target (0: unknown, e.g.
    /// during a full sync).
    applied: u64,
    /// What this link waits for in a barrier (empty `links`: it does not wait).
    waiting: Need,
    /// The wait is a full sync's ([`Handle::full_sync_barrier`]), which gives way in a cycle.
    soft: bool,
    /// In a full sync: nothing of its stream is applied until the RDB is.
    syncing: bool,
    /// When the current full sync's `+FULLRESYNC` was received (its RDB was forked before).
    fork_before: u64,
    /// The link has ended (its master left, or the sync stops): nothing more to wait for.
    ended: bool,
    /// Its master's offsets over time.
    samples: Samples,
    /// Why the last sample failed, while it fails.
    sample_error: Option<String>,
}

/// What the links of one sync know about each other.
#[derive(Debug)]
pub struct Board {
    links: Mutex<Vec<Entry>>,
    changed: watch::Sender<u64>,
    /// The logical clock of the samples and windows: one tick per event, in their order.
    clock: AtomicU64,
    connect: ConnectOptions,
    stop: watch::Receiver<bool>,
}

/// One link's place on the board.
#[derive(Debug, Clone)]
pub struct Handle {
    pub board: Arc<Board>,
    pub id: usize,
}

impl Board {
    pub fn new(connect: ConnectOptions, stop: watch::Receiver<bool>) -> Arc<Board> {
        Arc::new(Board {
            links: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            clock: AtomicU64::new(1),
            connect,
            stop,
        })
    }

    /// A new link on the board, and the task sampling its master (it ends with the link).
    pub fn register(self: &Arc<Self>, name: &str) -> Handle {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.push(Entry {
            name: name.to_string(),
            ..Entry::default()
        });
        let h = Handle {
            board: self.clone(),
            id: links.len() - 1,
        };
        drop(links);
        tokio::spawn(sample(h.clone()));
        h
    }

    /// The next tick of the board's clock.
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn read<R>(&self, f: impl FnOnce(&[Entry]) -> R) -> R {
        f(&self.links.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A change the waiting links must see.
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        let r = f(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        r
    }

    /// A sample of link `id`'s master; now and then, the runs no barrier can need are dropped.
    fn add_sample(&self, id: usize, offset: u64, sent: u64, recv: u64, prune: bool) {
        let mut l = self.links.lock().unwrap_or_else(|e| e.into_inner());
        l[id].sample_error = None;
        l[id].samples.add(offset, sent, recv);
        if prune {
            // A barrier to come asks a link's samples about a window of a command past what
            // that link applied; another's, about ticks after such a window closed.
            let cut = l
                .iter()
                .filter(|e| !e.ended && !e.syncing)
                .filter_map(|e| {
                    let from = match e.waiting.at {
                        Some(w) if !e.waiting.links.is_empty() => w.before,
                        _ => u64::MAX,
                    };
                    Some(from.min(e.samples.horizon(e.applied)?))
                })
                .min();
            if let Some(cut) = cut {
                for e in l.iter_mut() {
                    e.samples.prune(cut);
                }
            }
        }
    }
}

/// Samples link `h`'s master every [`SAMPLE_EVERY`] while another link runs; ends with the link
/// or the sync.
async fn sample(h: Handle) {
    let board = &h.board;
    let mut stop = board.stop.clone();
    let mut conn: Option<(String, Connection)> = None;
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let (source, ended, alone) = board.read(|l| {
            let alone = l.iter().enumerate().all(|(i, e)| i == h.id || e.ended);
            (l[h.id].source.clone(), l[h.id].ended, alone)
        });
        if ended {
            return;
        }
        // A single link has nobody to order itself with.
        let Some(source) = source.filter(|_| !alone) else {
            conn = None;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
            continue;
        };
        let addr = source.address();
        if conn.as_ref().is_none_or(|(a, _)| *a != addr) {
            match Connection::connect(&source, &board.connect).await {
                Ok(c) => conn = Some((addr.clone(), c)),
                Err(e) => {
                    failed(&h, format!("{addr}: {e}"));
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((_, c)) = conn.as_mut() else {
            continue;
        };
        let sent = board.tick();
        let r = c.info("replication").await;
        let recv = board.tick();
        match r
            .map_err(|e| e.to_string())
            .and_then(|info| offset_of(&addr, &info))
        {
            Ok(offset) => {
                n += 1;
                board.add_sample(h.id, offset, sent, recv, n % 1024 == 0);
            }
            Err(e) => {
                failed(&h, e);
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn failed(h: &Handle, why: String) {
    h.board
        .links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(h.id)
        .map(|e| e.sample_error = Some(why));
}

/// The master's `master_repl_offset` from its `INFO replication`.
fn offset_of(addr: &str, info: &HashMap<String, String>) -> Result<u64, String> {
    if info.get("role").map(String::as_str) != Some("master") {
        return Err(format!("{addr} is no longer a master"));
    }
    info.get("master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{addr}: INFO replication has no master_repl_offset"))
}

impl Handle {
    /// The master this link replicates from now (after a failover: the new one).
    pub fn set_source(&self, source: &Endpoint) {
        self.board
            .with(|l| l[self.id].source = Some(source.clone()));
    }

    /// Everything up to `offset` of this link's stream is on the target.
    pub fn applied(&self, offset: u64) {
        if self.board.read(|l| l[self.id].applied >= offset) {
            return;
        }
        self.board.with(|l| {
            let e = &mut l[self.id];
            e.applied = e.applied.max(offset);
        });
    }

    /// A full sync starts (its `+FULLRESYNC` was just received): until it is applied, nothing of
    /// this link counts as applied.
    pub fn full_sync(&self) {
        let t = self.board.tick();
        self.board.with(|l| {
            l[self.id].applied = 0;
            l[self.id].syncing = true;
            l[self.id].fork_before = t;
        });
    }

    /// The stream is applied from `offset` on (after a full sync, or on a resume).
    pub fn streaming(&self, offset: u64) {
        self.board.with(|l| {
            l[self.id].applied = offset;
            l[self.id].syncing = false;
        });
    }

    pub fn ended(&self) {
        self.board.with(|l| l[self.id].ended = true);
    }

    /// The current source masters of the other links that run, with their names.
    pub fn others_sources(&self) -> Vec<(String, Endpoint)> {
        self.board.read(|l| {
            l.iter()
                .enumerate()
                .filter(|(i, e)| *i != self.id && !e.ended)
                .filter_map(|(_, e)| e.source.clone().map(|s| (e.name.clone(), s)))
                .collect()
        })
    }

    /// Before a full sync's RDB is written: waits until every other link that is streaming has
    /// applied its stream up to what its master had run when the RDB was forked (see the
    /// module docs). Soft: gives way to a link that waits for this one.
    pub async fn full_sync_barrier(&self) -> Result<(), SyncError> {
        let before = self.board.read(|l| l[self.id].fork_before);
        let at = Window {
            after: None,
            before,
        };
        let need = self.needs(at, true).await?;
        self.wait(need, true).await
    }

    /// What a `RESTORE-ASKING` ending at `end` of this link's stream waits for: its window, and
    /// per other link what that link's master had run once it closed.
    pub async fn need(&self, end: u64) -> Result<Need, SyncError> {
        let alone = self
            .board
            .read(|l| l.iter().enumerate().all(|(i, e)| i == self.id || e.ended));
        if alone {
            return Ok(Need::default());
        }
        let at = self
            .samples_of(self.id, |s| s.ran(end), "its own master's offset")
            .await?;
        self.needs(at, false).await
    }

    /// Every other link's need for an event of window `at` (with `streaming_only`, links in a
    /// full sync are left out).
    async fn needs(&self, at: Window, streaming_only: bool) -> Result<Need, SyncError> {
        let others: Vec<usize> = self.board.read(|l| {
            (0..l.len())
                .filter(|&i| i != self.id && !l[i].ended && !(streaming_only && l[i].syncing))
                .collect()
        });
        let mut links = Vec::with_capacity(others.len());
        for id in others {
            let t = at.before;
            if let Some(off) = self
                .samples_of(id, |s| s.offset_after(t), "the offset of its master")
                .await
                .map(Some)
                .or_else(|e| {
                    // A link that ended meanwhile has nothing more to wait for.
                    if self.board.read(|l| l[id].ended) {
                        Ok(None)
                    } else {
                        Err(e)
                    }
                })?
            {
                links.push((id, off));
            }
        }
        Ok(Need {
            at: Some(at),
            links,
        })
    }

    /// Waits until `query` answers from link `id`'s samples (its sampler is at most one period
    /// and one round trip away, unless its master cannot be reached).
    async fn samples_of<R>(
        &self,
        id: usize,
        query: impl Fn(&Samples) -> Option<R>,
        what: &str,
    ) -> Result<R, SyncError> {
        let board = &self.board;
        let mut stop = board.stop.clone();
        let started = Instant::now();
        loop {
            let (r, ended, name, err) = board.read(|l| {
                let e = &l[id];
                (
                    query(&e.samples),
                    e.ended,
                    e.name.clone(),
                    e.sample_error.clone(),
                )
            });
            if let Some(r) = r {
                return Ok(r);
            }
            if ended && id != self.id {
                return Err(SyncError::Target(format!("link {name} ended")));
            }
            if started.elapsed() > SAMPLES_PATIENCE {
                return Err(SyncError::Target(format!(
                    "link {name}: cannot read {what} for a slot migration's handover for {}s{}",
                    SAMPLES_PATIENCE.as_secs(),
                    err.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.wait_for(|v| *v) => return Err(stopping()),
            }
        }
    }

    /// Whether nothing of `need` is left to wait for now.
    pub fn satisfied(&self, need: &Need) -> bool {
        self.board.read(|l| pending_of(l, need, false).is_empty())
    }

    /// Waits until `need` is satisfied (see [`Handle::need`]). The caller has published, with
    /// [`Handle::applied`], everything of its stream before the command it waits at.
    pub async fn barrier(&self, need: Need) -> Result<(), SyncError> {
        self.wait(need, false).await
    }

    /// Waits until each `(link, offset)` of `need` is applied, or the link is waived (it waits
    /// at an event that followed ours). `soft`: a full sync's wait (see
    /// [`Handle::full_sync_barrier`]).
    async fn wait(&self, mut need: Need, soft: bool) -> Result<(), SyncError> {
        let board = &self.board;
        let mut stop = board.stop.clone();
        board.with(|l| {
            l[self.id].waiting = need.clone();
            l[self.id].soft = soft;
        });
        let started = Instant::now();
        let mut told = Instant::now();
        let mut changed = board.changed.subscribe();
        let r = loop {
            let (pending, cycle) = board.read(|l| {
                let pending = pending_of(l, &need, soft);
                // Two links each waiting for the other, neither waived: neither can move. A
                // full sync's wait gives way, so it is never the other side of a cycle.
                let cycle = pending.iter().find(|&&(id, _)| {
                    !l[id].soft
                        && pending_of(l, &l[id].waiting, false)
                            .iter()
                            .any(|&(w, _)| w == self.id)
                });
                (
                    pending.clone(),
                    cycle.map(|&(id, _)| (id, l[id].name.clone())),
                )
            });
            if pending.is_empty() {
                break Ok(());
            }
            if let Some((id, other)) = cycle {
                let me = board.read(|l| l[self.id].name.clone());
                if soft {
                    eprintln!(
                        "shake-sync: {me}: the full sync does not wait for link {other}, which waits for this link's stream (a migration into its master is in progress)"
                    );
                    need.links.retain(|&(w, _)| w != id);
                    board.with(|l| l[self.id].waiting = need.clone());
                    continue;
                }
                break Err(SyncError::Fatal(format!(
                    "keys are migrating between the source masters of links {me} and {other} in both directions, and the order of the two migrations cannot be told (they ran within a few milliseconds of each other, or before this start, which replays them): each link must apply the other's earlier commands first, so neither can go on; run one migration at a time (redis-cli --cluster reshard/rebalance do) and let shake-sync apply one before starting the other, then start shake-sync again (it resumes from its checkpoints; if this stop repeats at once, the replayed migrations need a full sync: --reset)"
                )));
            }
            if told.elapsed() >= Duration::from_secs(10) {
                told = Instant::now();
                let names = board.read(|l| {
                    pending
                        .iter()
                        .map(|&(id, off)| format!("{} (at {} of {off})", l[id].name, l[id].applied))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let what = if soft {
                    "a full sync waits"
                } else {
                    "a slot migration's keys wait"
                };
                eprintln!(
                    "shake-sync: {what} {}s for the links that held them: {names}",
                    started.elapsed().as_secs()
                );
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|v| *v) => break Err(stopping()),
            }
        };
        board.with(|l| {
            l[self.id].waiting = Need::default();
            l[self.id].soft = false;
        });
        r
    }
}

/// The links of `need` not done yet: not ended, behind their offset, and not waiting at an event
/// that followed `need`'s (such a link has applied what its master ran before it, which holds
/// what we wait for). `soft`: links in a full sync are not waited for.
fn pending_of(l: &[Entry], need: &Need, soft: bool) -> Vec<(usize, u64)> {
    need.links
        .iter()
        .copied()
        .filter(|&(id, off)| {
            let e = &l[id];
            let waived = match (e.waiting.at, need.at) {
                (Some(theirs), Some(ours)) => !e.waiting.links.is_empty() && theirs.follows(&ours),
                _ => false,
            };
            !e.ended && e.applied < off && !(soft && e.syncing) && !waived
        })
        .collect()
}

fn stopping() -> SyncError {
    SyncError::Target("stopping".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(u64, u64, u64)]) -> Samples {
        let mut s = Samples::default();
        for &(off, sent, recv) in points {
            s.add(off, sent, recv);
        }
        s
    }

    #[test]
    fn a_window_lies_between_the_last_sample_before_and_the_first_at_or_past() {
        // Requests sent at 1, 3, 5, 7 answered at 2, 4, 6, 8.
        let s = samples(&[(10, 1, 2), (10, 3, 4), (20, 5, 6), (30, 7, 8)]);
        assert_eq!(
            s.ran(15),
            Some(Window {
                after: Some(3),
                before: 6
            })
        );
        assert_eq!(
            s.ran(20),
            Some(Window {
                after: Some(3),
                before: 6
            })
        );
        assert_eq!(
            s.ran(10),
            Some(Window {
                after: None,
                before: 2
            })
        );
        assert_eq!(s.ran(31), None, "not sampled yet");
    }

    #[test]
    fn the_offset_after_a_tick_is_the_first_request_sent_then() {
        let s = samples(&[(10, 1, 2), (10, 3, 4), (20, 5, 6), (30, 7, 8)]);
        assert_eq!(s.offset_after(0), Some(10));
        assert_eq!(s.offset_after(3), Some(10));
        assert_eq!(s.offset_after(4), Some(20));
        assert_eq!(s.offset_after(7), Some(30));
        assert_eq!(s.offset_after(8), None, "no request sent since");
    }

    #[test]
    fn windows_follow_only_when_one_opens_after_the_other_closes() {
        let w = Window {
            after: Some(3),
            before: 6,
        };
        let later = Window {
            after: Some(6),
            before: 9,
        };
        let overlapping = Window {
            after: Some(5),
            before: 9,
        };
        let unknown = Window {
            after: None,
            before: 9,
        };
        assert!(later.follows(&w));
        assert!(!w.follows(&later));
        assert!(!overlapping.follows(&w));
        assert!(!unknown.follows(&w));
    }

    #[test]
    fn thinning_and_pruning_only_widen_windows_and_raise_needs() {
        let points: Vec<(u64, u64, u64)> =
            (0..1000u64).map(|i| (i * 10, 2 * i, 2 * i + 1)).collect();
        let exact = samples(&points);
        let mut thinned = samples(&points);
        thinned.thin();
        assert!(thinned.runs.len() < exact.runs.len());
        let mut pruned = samples(&points);
        pruned.prune(700);
        assert!(pruned.runs.len() < exact.runs.len());
        for coarse in [&thinned, &pruned] {
            for end in (0..10_000u64).step_by(7) {
                let (Some(e), Some(c)) = (exact.ran(end), coarse.ran(end)) else {
                    continue;
                };
                assert!(c.before >= e.before, "end {end}: {c:?} vs {e:?}");
                assert!(c.after.unwrap_or(0) <= e.after.unwrap_or(0), "end {end}");
            }
            for t in 700..2000u64 {
                if let (Some(e), Some(c)) = (exact.offset_after(t), coarse.offset_after(t)) {
                    assert!(c >= e, "tick {t}");
                }
            }
        }
    }

    #[test]
    fn a_history_going_back_starts_over() {
        let s = samples(&[(10, 1, 2), (20, 3, 4), (5, 5, 6)]);
        assert_eq!(s.runs.len(), 1);
        assert_eq!(
            s.ran(5),
            Some(Window {
                after: None,
                before: 6
            })
        );
    }

    fn board_with(n: usize) -> (Arc<Board>, Vec<Handle>) {
        let (_tx, rx) = watch::channel(false);
        let board = Board::new(ConnectOptions::default(), rx);
        let handles = (0..n)
            .map(|i| {
                board.links.lock().unwrap().push(Entry {
                    name: format!("l{i}"),
                    ..Entry::default()
                });
                Handle {
                    board: board.clone(),
                    id: i,
                }
            })
            .collect();
        (board, handles)
    }

    #[test]
    fn a_link_waiting_at_a_later_migration_is_waived() {
        let (board, h) = board_with(2);
        let ours = Window {
            after: Some(3),
            before: 6,
        };
        let need = Need {
            at: Some(ours),
            links: vec![(1, 100)],
        };
        assert!(!h[0].satisfied(&need));
        // Link 1 waits at a RESTORE-ASKING that ran after ours: it has applied its DEL.
        board.links.lock().unwrap()[1].waiting = Need {
            at: Some(Window {
                after: Some(7),
                before: 9,
            }),
            links: vec![(0, 50)],
        };
        assert!(h[0].satisfied(&need));
        // One that may have run before ours is not.
        board.links.lock().unwrap()[1].waiting.at = Some(Window {
            after: Some(5),
            before: 9,
        });
        assert!(!h[0].satisfied(&need));
        board.links.lock().unwrap()[1].applied = 100;
        assert!(h[0].satisfied(&need));
    }
}
