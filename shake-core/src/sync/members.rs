//! The links of a running sync, kept in step with the source cluster's masters: a master that
//! joins and serves slots gets a link, a link whose master left ends (docs/topology.md, "Masters
//! added and removed").
//!
//! The source's topology is read (`CLUSTER SHARDS`, `CLUSTER SLOTS` before 7.0: see
//! [`crate::client::Topology`]) every `--topology-interval`, and at once (at most once a second)
//! when a link's stream shows slots moving (`RESTORE-ASKING`, `CLUSTER SETSLOT`/`SYNCSLOTS`:
//! [`super::StreamOptions::topology_hint`]) or a link's session fails. Then:
//!
//! - a master serving slots that no link replicates (not by address, and not by replication
//!   history, which is how a failed-over master's link follows its promoted replica) gets a new
//!   link, if this process's `--shard` takes its first slot. The link's full sync is the import
//!   side of the migrations that gave the master its keys (see [`super::handover`]);
//! - a link whose master serves no slot any more (or left the cluster), seen so on two reads in
//!   a row, and whose history no master of the cluster carries (it did not fail over), is
//!   drained (it applies its master's stream up to the master's offset now, if the master still
//!   answers), stopped, and its checkpoint keys deleted from the target, so a restart does not
//!   try to resume it.
//!
//! This module owns the set of running links and those decisions; a link itself is
//! [`super::link`], the order between links [`super::handover`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::link::{self, LinkSpec};
use super::{handover, SyncError, SyncSettings};
use crate::client::Topology;
use crate::net::{Connection, Endpoint};
use crate::observe::status::{Phase, ShardStatus, StatusBoard};

/// Reads of the topology prompted by streams come at most this often.
const HINT_SPACING: Duration = Duration::from_secs(1);
/// How long a leaving link may take to apply its master's last commands before it is stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Its master left: draining, then stopped; its checkpoint goes when it has ended.
    Leaving,
    Ended,
}

struct Member {
    name: String,
    seed: Endpoint,
    status: Arc<Mutex<ShardStatus>>,
    stop: Arc<watch::Sender<bool>>,
    state: State,
    /// Topology reads in a row that did not show its master.
    missing: u32,
    why: String,
}

/// The links of one sync.
pub struct Members {
    settings: Arc<SyncSettings>,
    board: StatusBoard,
    order: Option<Arc<handover::Board>>,
    stop: watch::Receiver<bool>,
    stop_all: watch::Sender<bool>,
    done_tx: mpsc::UnboundedSender<(usize, Result<(), SyncError>)>,
    done_rx: mpsc::UnboundedReceiver<(usize, Result<(), SyncError>)>,
    members: Vec<Member>,
    /// Masters a read found outside this shard: said once each.
    foreign: Vec<String>,
    first_err: Option<SyncError>,
}

fn lock(s: &Arc<Mutex<ShardStatus>>) -> std::sync::MutexGuard<'_, ShardStatus> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .take(4)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = ranges.len().saturating_sub(4);
    if more > 0 {
        format!("{} and {more} more ranges", parts.join(","))
    } else {
        parts.join(",")
    }
}

impl Members {
    /// `order`: the handover board of a cluster source (`None` for a standalone one);
    /// `stop`: the sync's stop switch, which `stop_all` flips (a link that fails for good flips
    /// it too).
    pub fn new(
        settings: Arc<SyncSettings>,
        board: StatusBoard,
        order: Option<Arc<handover::Board>>,
        stop: watch::Receiver<bool>,
        stop_all: watch::Sender<bool>,
    ) -> Members {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Members {
            settings,
            board,
            order,
            stop,
            stop_all,
            done_tx,
            done_rx,
            members: Vec::new(),
            foreign: Vec::new(),
            first_err: None,
        }
    }

    /// Starts a link.
    pub fn start(&mut self, mut spec: LinkSpec) {
        if let Some(b) = &self.order {
            spec.handover = Some(b.register(&spec.name));
        }
        let status = self
            .board
            .add(ShardStatus::for_seed(&spec.name, &spec.seed));
        let (tx, rx) = watch::channel(false);
        let tx = Arc::new(tx);
        // The sync's stop reaches the link through the link's own switch, which also ends this
        // link alone when its master leaves.
        {
            let (mut all, tx) = (self.stop.clone(), tx.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = all.wait_for(|v| *v) => { let _ = tx.send(true); }
                    _ = tx.closed() => {}
                }
            });
        }
        let id = self.members.len();
        self.members.push(Member {
            name: spec.name.clone(),
            seed: spec.seed.clone(),
            status: status.clone(),
            stop: tx,
            state: State::Running,
            missing: 0,
            why: String::new(),
        });
        // A link that fails for good sends its result, and [`Members::ended`] stops the others.
        let (settings, done, hint) = (
            self.settings.clone(),
            self.done_tx.clone(),
            self.settings.stream.topology_hint.clone(),
        );
        tokio::spawn(async move {
            let handle = spec.handover.clone();
            let r = link::run_link(spec, settings, status.clone(), rx).await;
            if let Some(h) = handle {
                h.ended();
            }
            {
                let mut st = lock(&status);
                st.phase = if r.is_ok() {
                    Phase::Stopped
                } else {
                    Phase::Failed
                };
                if let Err(e) = &r {
                    st.last_error = Some(e.to_string());
                }
            }
            hint.notify_one();
            let _ = done.send((id, r));
        });
    }

    /// Keeps the links in step with the source's masters (`cluster`: else it only waits) until
    /// the sync stops; then waits for every link to end. The first error of a link that failed
    /// for good is returned (the others are stopped the same way).
    pub async fn run(mut self, cluster: bool) -> Result<(), SyncError> {
        let every = self.settings.topology_interval.max(Duration::from_secs(1));
        let hint = self.settings.stream.topology_hint.clone();
        let mut stop = self.stop.clone();
        let mut next = Instant::now() + every;
        let mut last_read = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let wake = tokio::time::Instant::from_std(next);
            let prompted = tokio::select! {
                _ = stop.wait_for(|v| *v) => break,
                _ = tokio::time::sleep_until(wake) => false,
                _ = hint.notified() => true,
                Some((id, r)) = self.done_rx.recv() => {
                    self.ended(id, r).await;
                    continue;
                }
            };
            if !cluster {
                next = Instant::now() + every;
                continue;
            }
            if prompted && last_read.elapsed() < HINT_SPACING {
                // Read again soon, not for every command of a migration.
                next = next.min(last_read + HINT_SPACING);
                continue;
            }
            last_read = Instant::now();
            next = last_read + every;
            if let Err(e) = self.reconcile().await {
                if !self.settings.quiet {
                    eprintln!(
                        "shake-sync: reading the source's topology: {e}; trying again in {every:?}"
                    );
                }
            }
        }
        let _ = self.stop_all.send(true);
        while self.members.iter().any(|m| m.state != State::Ended) {
            match self.done_rx.recv().await {
                Some((id, r)) => self.ended(id, r).await,
                None => break,
            }
        }
        match self.first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A link's task has ended.
    async fn ended(&mut self, id: usize, r: Result<(), SyncError>) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        let was = m.state;
        m.state = State::Ended;
        if let Err(e) = r {
            self.first_err.get_or_insert(e);
            let _ = self.stop_all.send(true);
            return;
        }
        if was != State::Leaving {
            return;
        }
        let (name, seed, why) = (m.name.clone(), m.seed.clone(), m.why.clone());
        let applied = lock(&m.status).applied_offset;
        let status = m.status.clone();
        let forgot = link::forget_checkpoint(&self.settings, &name).await;
        self.board.remove(&status);
        match forgot {
            Ok(n) => eprintln!(
                "shake-sync: link {name} removed: its master {} {why}; it applied its stream up to offset {applied}, its {n} checkpoint key(s) are deleted from the target",
                seed.address()
            ),
            Err(e) => eprintln!(
                "shake-sync: link {name} removed: its master {} {why}; it applied its stream up to offset {applied}, but its checkpoint could not be deleted ({e}): delete the target's keys shake-sync:checkpoint:{name}* before the next start, or that start resumes it",
                seed.address()
            ),
        }
    }

    /// The topology, from the first node that answers: the masters of the running links first
    /// (they serve slots; the master given as --source may be the one that left, with a stale
    /// view), then the source seed.
    async fn topology(&self) -> Result<Topology, String> {
        let mut nodes: Vec<Endpoint> = Vec::new();
        for m in self.members.iter().filter(|m| m.state == State::Running) {
            let at = lock(&m.status).source.clone();
            let node = crate::net::Endpoint::parse(&format!("redis://{at}"))
                .ok()
                .map(|e| m.seed.with_address(&e.host, e.port))
                .unwrap_or_else(|| m.seed.clone());
            nodes.push(node);
        }
        nodes.push(self.settings.source.clone());
        let mut last = String::from("no node to ask");
        for node in nodes {
            let mut conn = match Connection::connect(&node, &self.settings.connect).await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match Topology::fetch(&mut conn).await {
                Ok(t) if !t.masters().is_empty() => return Ok(t),
                Ok(_) => last = format!("{node}: no master serves a slot"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// One read of the topology, and the links started or ended for it.
    async fn reconcile(&mut self) -> Result<(), String> {
        let topo = self.topology().await?;
        let connect = self.settings.connect.clone();
        // Replication histories of masters no link names by address (read when needed).
        let mut histories: Vec<(String, Vec<String>)> = Vec::new();
        let history_of = |m: &Endpoint| {
            let connect = connect.clone();
            let m = m.clone();
            async move {
                let Ok(mut c) = Connection::connect(&m, &connect).await else {
                    return None;
                };
                let info = c.info("replication").await.ok()?;
                Some(
                    ["master_replid", "master_replid2"]
                        .iter()
                        .filter_map(|k| info.get(*k).cloned())
                        .filter(|v| !v.chars().all(|c| c == '0'))
                        .collect::<Vec<String>>(),
                )
            }
        };
        let live: Vec<(usize, String, String)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state != State::Ended)
            .map(|(i, m)| {
                let st = lock(&m.status);
                (i, st.source.clone(), st.replid.clone())
            })
            .collect();
        let addrs: Vec<String> = topo.masters().iter().map(Endpoint::address).collect();
        for (i, m) in topo.masters().iter().enumerate() {
            if live.iter().any(|(_, src, _)| *src == addrs[i]) {
                continue;
            }
            let Some(h) = history_of(m).await else {
                // Not answering now: the next read decides.
                continue;
            };
            histories.push((addrs[i].clone(), h.clone()));
            if live
                .iter()
                .any(|(_, _, r)| !r.is_empty() && r != "?" && h.contains(r))
            {
                continue; // a failed-over master: its link follows it
            }
            let Some(first) = topo.first_slot(i) else {
                continue;
            };
            if !self.settings.shard.takes(Some(first)) {
                if !self.foreign.contains(&addrs[i]) {
                    self.foreign.push(addrs[i].clone());
                    if !self.settings.quiet {
                        eprintln!(
                            "shake-sync: master {} joined (first slot {first}): shard {} does not take it, the shard of slot {first} does",
                            addrs[i], self.settings.shard
                        );
                    }
                }
                continue;
            }
            self.add(m.clone(), first, &topo, i).await;
        }
        // Links whose master left.
        for (id, src, replid) in live {
            if self.members[id].state != State::Running {
                continue;
            }
            let here = addrs.contains(&src)
                || (!replid.is_empty()
                    && replid != "?"
                    && histories.iter().any(|(_, h)| h.contains(&replid)));
            let here = here || {
                // Masters read above were only those no link named; a link that is
                // reconnecting may have a promoted replica among the others.
                let mut found = false;
                if !replid.is_empty() && replid != "?" {
                    for (j, m) in topo.masters().iter().enumerate() {
                        if histories.iter().any(|(a, _)| *a == addrs[j]) {
                            continue;
                        }
                        if let Some(h) = history_of(m).await {
                            found |= h.contains(&replid);
                            histories.push((addrs[j].clone(), h));
                        }
                    }
                }
                found
            };
            let m = &mut self.members[id];
            if here {
                m.missing = 0;
                continue;
            }
            m.missing += 1;
            if m.missing >= 2 {
                self.retire(id, src).await;
            }
        }
        Ok(())
    }

    /// A new link for master `m` (the `i`th of `topo`), whose first slot is `first`.
    async fn add(&mut self, m: Endpoint, first: u16, topo: &Topology, i: usize) {
        let base = &self.settings.checkpoint_name;
        let mut name = format!("{base}/{first}");
        if self.members.iter().any(|x| x.name == name) {
            // A link's name stays when slots move, so another master may hold this one.
            let id = match Connection::connect(&m, &self.settings.connect).await {
                Ok(mut c) => c.request(&["CLUSTER", "MYID"]).await.ok().and_then(|r| {
                    r.as_bytes()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                }),
                Err(_) => None,
            };
            let Some(id) = id else {
                return; // not answering: the next read adds it
            };
            name = format!("{base}/{id}");
        }
        eprintln!(
            "shake-sync: link {name} added: master {} joined the source with slots {} (full sync of what it holds, then its stream)",
            m.address(),
            describe(&topo.ranges_of(i))
        );
        self.start(LinkSpec {
            name,
            seed: m,
            first_slot: Some(first),
            source_nodes: topo.masters().to_vec(),
            handover: None,
            joined: true,
            // Its keys are new to the target: nothing to empty, and emptying would wipe the
            // other links' keys.
            flush: link::Flush::No,
        });
    }

    /// Ends link `id`, whose master `at` left: once it has applied what its master ran (at once
    /// if the master no longer answers as a master, or the link is not streaming), it is stopped; [`Members::ended`] then deletes its
    /// checkpoint.
    async fn retire(&mut self, id: usize, at: String) {
        let m = &mut self.members[id];
        m.state = State::Leaving;
        let node = crate::net::Endpoint::parse(&format!("redis://{at}"))
            .ok()
            .map(|e| m.seed.with_address(&e.host, e.port))
            .unwrap_or_else(|| m.seed.clone());
        let (stop, status, connect) = (
            m.stop.clone(),
            m.status.clone(),
            self.settings.connect.clone(),
        );
        let name = m.name.clone();
        let offset = match Connection::connect(&node, &connect).await {
            Ok(mut c) => match c.info("replication").await {
                Ok(info) if info.get("role").map(String::as_str) == Some("master") => info
                    .get("master_repl_offset")
                    .and_then(|v| v.parse::<u64>().ok()),
                _ => None,
            },
            Err(_) => None,
        };
        m.why = match offset {
            Some(_) => "serves no slot any more".into(),
            None => "left the cluster".into(),
        };
        if !self.settings.quiet {
            eprintln!(
                "shake-sync: link {name}: its master {at} {}: ending the link{}",
                m.why,
                match offset {
                    Some(o) => format!(" once it has applied the master's stream up to offset {o}"),
                    None => String::new(),
                }
            );
        }
        tokio::spawn(async move {
            if let Some(o) = offset {
                let t = Instant::now();
                while t.elapsed() < DRAIN_LIMIT {
                    let (applied, phase) = {
                        let st = lock(&status);
                        (st.applied_offset, st.phase)
                    };
                    // A link that is not streaming cannot apply more: its master closed the
                    // link, and no other master is its to take (see link::resolve_source).
                    if applied >= o || phase != Phase::Incremental {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let _ = stop.send(true);
        });
    }
}
