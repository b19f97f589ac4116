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
//! So an `INFO` sent to the exporting master after the importing master executed the
//! `RESTORE-ASKING` is answered only once that DEL is in the exporter's stream. The barrier: a
//! link about to apply a `RESTORE-ASKING` asks every other source master of the sync for its
//! `master_repl_offset` and waits until each other link has applied (acknowledged) its stream up
//! to that offset. Then the key's earlier history, the DEL included, is on the target, and the
//! RESTORE-ASKING applies as the source ran it. One barrier covers every RESTORE-ASKING read
//! before its probes were sent. Nothing is remembered across restarts: a RESTORE-ASKING replayed
//! after a kill -9 takes the barrier again, and what the other links applied before it is
//! committed with their checkpoints.
//!
//! **A link's full sync is an import too.** A master that joins the cluster receives its keys by
//! MIGRATE before shake-sync sees it own any slot, so those keys reach the target in that
//! master's full sync, not as `RESTORE-ASKING`s of a stream, while the exporting masters' DELs of
//! them are in their links' streams. The same reasoning applies: the RDB is forked after every
//! key in it was restored, so the other masters' offsets read after `+FULLRESYNC` are past those
//! DELs. [`Handle::full_sync_barrier`] waits until the other links that are streaming have
//! applied up to them before the RDB is written (links themselves in a full sync are not waited
//! for: their RDBs were forked after those DELs, or hold the keys they delete later, as before).
//! This wait is *soft*: if a link it waits for is itself in a barrier waiting for this one (it
//! needs this link's stream, which only starts after the RDB), that link is not waited for, and
//! the line saying so names it; the other link's barrier is then satisfied once the RDB and the
//! stream after it are applied.
//!
//! This module owns the [`Board`] (per link: its current source master and how far it has
//! applied) and the barriers; the Applier and the link call them, the link keeps its entry
//! current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::SyncError;
use crate::net::{ConnectOptions, Connection, Endpoint};

#[derive(Debug, Default)]
struct Entry {
    name: String,
    source: Option<Endpoint>,
    /// Stream offset up to which everything of this link is on the target (0: unknown, e.g.
    /// during a full sync).
    applied: u64,
    /// The links and offsets this link waits for in a barrier.
    waiting: Vec<(usize, u64)>,
    /// The wait is a full sync's ([`Handle::full_sync_barrier`]), which gives way in a cycle.
    soft: bool,
    /// In a full sync: nothing of its stream is applied until the RDB is.
    syncing: bool,
    /// The link has ended (its master left, or the sync stops): nothing more to wait for.
    ended: bool,
}

/// What the links of one sync know about each other.
#[derive(Debug)]
pub struct Board {
    links: Mutex<Vec<Entry>>,
    changed: watch::Sender<u64>,
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
            connect,
            stop,
        })
    }

    /// A new link on the board.
    pub fn register(self: &Arc<Self>, name: &str) -> Handle {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.push(Entry {
            name: name.to_string(),
            ..Entry::default()
        });
        Handle {
            board: self.clone(),
            id: links.len() - 1,
        }
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

    /// A full sync starts: until it is applied, nothing of this link counts as applied.
    pub fn full_sync(&self) {
        self.board.with(|l| {
            l[self.id].applied = 0;
            l[self.id].syncing = true;
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
    /// applied its stream up to its master's offset now (see the module docs). Soft: gives way
    /// to a link that waits for this one.
    pub async fn full_sync_barrier(
        &self,
        conns: &mut HashMap<String, Connection>,
    ) -> Result<(), SyncError> {
        let need = self.probe_others(conns, true).await?;
        self.wait(need, true).await
    }

    /// Waits until every other link has applied its stream up to its master's offset now.
    /// `conns` caches the probe connections between barriers.
    pub async fn barrier(&self, conns: &mut HashMap<String, Connection>) -> Result<(), SyncError> {
        let need = self.probe_others(conns, false).await?;
        self.wait(need, false).await
    }

    /// Each other link that runs (and, with `streaming_only`, is not in a full sync), with its
    /// master's `master_repl_offset` now.
    async fn probe_others(
        &self,
        conns: &mut HashMap<String, Connection>,
        streaming_only: bool,
    ) -> Result<Vec<(usize, u64)>, SyncError> {
        let board = &self.board;
        let mut stop = board.stop.clone();
        let mut need: Vec<(usize, u64)> = Vec::new();
        let others: Vec<usize> = board.read(|l| {
            (0..l.len())
                .filter(|&i| i != self.id && !l[i].ended)
                .collect()
        });
        for id in others {
            let mut tries = 0u32;
            loop {
                if *stop.borrow() {
                    return Err(stopping());
                }
                let (source, ended, syncing) =
                    board.read(|l| (l[id].source.clone(), l[id].ended, l[id].syncing));
                if ended || (streaming_only && syncing) {
                    break;
                }
                if let Some(src) = source {
                    match probe(conns, &src, &board.connect).await {
                        Ok(off) => {
                            need.push((id, off));
                            break;
                        }
                        Err(_) if tries < 600 => {}
                        Err(e) => {
                            return Err(SyncError::Target(format!(
                                "{src}: cannot read its replication offset for a slot migration's handover: {e}"
                            )))
                        }
                    }
                }
                tries += 1;
                // A master failing over, or a link that has not found its master yet.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.wait_for(|v| *v) => return Err(stopping()),
                }
            }
        }
        Ok(need)
    }

    /// Waits until each `(link, offset)` of `need` is applied. `soft`: a full sync's wait (see
    /// [`Handle::full_sync_barrier`]).
    async fn wait(&self, mut need: Vec<(usize, u64)>, soft: bool) -> Result<(), SyncError> {
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
                let pending: Vec<(usize, u64)> = need
                    .iter()
                    .copied()
                    .filter(|&(id, off)| {
                        !l[id].ended && l[id].applied < off && !(soft && l[id].syncing)
                    })
                    .collect();
                // Two links each waiting for the other: neither can move. A full sync's wait
                // gives way, so it is never the other side of a cycle.
                let me_applied = l[self.id].applied;
                let cycle = pending.iter().find(|&&(id, _)| {
                    !l[id].soft
                        && l[id]
                            .waiting
                            .iter()
                            .any(|&(w, off)| w == self.id && me_applied < off)
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
                    need.retain(|&(w, _)| w != id);
                    board.with(|l| l[self.id].waiting = need.clone());
                    continue;
                }
                break Err(SyncError::Fatal(format!(
                    "keys are migrating between the source masters of links {me} and {other} in both directions at once: each link must apply the other's earlier commands first, so neither can go on; run one migration at a time (redis-cli --cluster reshard/rebalance do), then start shake-sync again (it resumes from its checkpoints)"
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
            l[self.id].waiting.clear();
            l[self.id].soft = false;
        });
        r
    }
}

fn stopping() -> SyncError {
    SyncError::Target("stopping".into())
}

/// The master's `master_repl_offset`, on a cached connection.
async fn probe(
    conns: &mut HashMap<String, Connection>,
    node: &Endpoint,
    connect: &ConnectOptions,
) -> Result<u64, String> {
    let addr = node.address();
    if !conns.contains_key(&addr) {
        let c = Connection::connect(node, connect)
            .await
            .map_err(|e| e.to_string())?;
        conns.insert(addr.clone(), c);
    }
    let Some(conn) = conns.get_mut(&addr) else {
        return Err("no connection".into());
    };
    let r = conn.info("replication").await;
    let info = match r {
        Ok(i) => i,
        Err(e) => {
            conns.remove(&addr);
            return Err(e.to_string());
        }
    };
    if info.get("role").map(String::as_str) != Some("master") {
        conns.remove(&addr);
        return Err(format!("{addr} is no longer a master"));
    }
    info.get("master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{addr}: INFO replication has no master_repl_offset"))
}
