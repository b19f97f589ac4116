//! Applying the replication command stream to a target, exactly once.
//!
//! Commands are read as the source sent them (each frame is forwarded byte for byte unless a
//! database number in it must be mapped) and gathered into batches. A batch goes to the target
//! as `MULTI`, its commands, the checkpoint `SET` (see [`super::checkpoint`]), `EXEC`: on a
//! standalone target one transaction per batch (with `SELECT`s inside where the source switched
//! databases), on a cluster one transaction per hash slot touched. A source transaction
//! (`MULTI ... EXEC` in the stream) is never split across batches, so it stays atomic on the
//! target; on a cluster its keys must share a slot, or `--split-transactions` lets it become
//! one transaction per slot.
//!
//! Treatment of each command (documented for users in the README):
//! - `SELECT`: changes the source database; mapped with `--db-map` when commands are written.
//!   The database is recorded with every checkpoint (see [`super::checkpoint`]) and a resumed
//!   stream starts in it: the source does not repeat `SELECT` after `+CONTINUE`.
//! - `PING`, `REPLCONF` (`GETACK` is answered with an ACK): not written.
//! - `MULTI`/`EXEC`: kept as one transaction; `DISCARD`: the buffered commands are dropped.
//! - `PUBLISH`/`SPUBLISH`: not written unless `--forward-publish`.
//! - `FLUSHALL`, `FLUSHDB`: written, unless filters or a merging `--db-map` mean they would wipe
//!   data that is not this source's; then skipped with a warning. On a cluster, run on every
//!   master after everything before them is applied.
//! - `FUNCTION`, `SCRIPT`: every master, like FLUSHALL.
//! - `SWAPDB`, `MOVE`, `COPY ... DB n`: database numbers mapped; impossible on a cluster target
//!   unless the databases map to the same one.
//! - Commands naming keys in different slots (from a standalone source) into a cluster: `DEL`,
//!   `UNLINK`, `TOUCH`, `MSET`, `MSETNX` are split by slot; anything else stops the sync.
//! - Keys under `shake-sync:` (checkpoints of other links) are never written.
//! - Filters judge a command by its first key and its database; the command filters
//!   ([`crate::filter::CommandFilter`]) by its name and group, before anything else.
//! - After a full sync that prunes (see [`super::prune`]): the first command naming a key the
//!   snapshot did not hold is preceded by its `DEL`, and the removals the scan finds are
//!   queued in the batches as `UNLINK`s (counted in `pruned`, not as stream commands).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::asm::{Control, LinkMigrations, MigrationBoard};
use super::checkpoint::{is_internal_key, Applied, Checkpoint, CheckpointKeys, Domain};
use super::repair::{keys_of, show_keys, OnTargetError, Repairs, Todo, Verdict};
use super::SyncError;
use crate::apply::DbMap;
use crate::client::{slot_of, Idempotent, Target};
use crate::command::{command_info, command_keys, CommandInfo, Kind};
use crate::filter::KeyFilter;
use crate::resp::{encode_command, Reply};
use crate::text::quote_bytes;

/// How the stream is written.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub db_map: DbMap,
    pub filter: KeyFilter,
    pub forward_publish: bool,
    pub split_transactions: bool,
    /// The database holding the checkpoint keys on a standalone target.
    pub checkpoint_db: u64,
    /// Most commands in one batch.
    pub batch_commands: usize,
    /// Most bytes of commands in one batch.
    pub batch_bytes: usize,
    /// Cap on commands per second (0: none).
    pub qps: u64,
    /// Shared by the links of one sync (clones share it): atomic slot migrations in progress.
    pub migrations: Arc<MigrationBoard>,
    /// What a command the target refuses leads to (see [`super::repair`]).
    pub on_target_error: OnTargetError,
    /// Shared by the links of one sync: poked when a stream shows the source's slots moving
    /// (`RESTORE-ASKING`, `CLUSTER SETSLOT`/`SYNCSLOTS`), so the sync re-reads the source's
    /// topology now rather than at its next scheduled read (see [`super::members`]).
    pub topology_hint: Arc<tokio::sync::Notify>,
    /// Which commands of the stream are applied (`--command`, `--exclude-command`, their
    /// `-group` forms), judged by the source's command before anything else: the full sync is a
    /// snapshot, not commands, so it is not affected.
    pub commands: crate::filter::CommandFilter,
    /// `--rename-prefix`: every key position of every command gets its target name (by the
    /// command table) once the filters judged the source's names, before it is routed.
    pub rename: crate::rename::Rename,
    /// Whether batches carry checkpoints and the low-water mark is recorded: off for a replay
    /// that is not resumable (shake-restore applying an AOF's commands), which then leaves no
    /// key of its own on the target.
    pub checkpoints: bool,
    /// The tool named in warnings.
    pub tool: &'static str,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            db_map: DbMap::default(),
            filter: KeyFilter::all(),
            forward_publish: false,
            split_transactions: false,
            checkpoint_db: 0,
            batch_commands: 1024,
            batch_bytes: 1 << 20,
            qps: 0,
            migrations: Arc::default(),
            on_target_error: OnTargetError::Repair,
            topology_hint: Arc::default(),
            commands: crate::filter::CommandFilter::default(),
            rename: crate::rename::Rename::default(),
            checkpoints: true,
            tool: "shake-sync",
        }
    }
}

/// What a completion was for.
#[derive(Debug)]
pub enum GroupTag {
    /// One transaction of the batch ending at stream offset `end`, holding `commands` commands;
    /// `sent[i]` is the stream command behind EXEC's result `i` (`None`: a SELECT or checkpoint
    /// of ours), to know what a refusal was about.
    Batch {
        end: u64,
        commands: u32,
        sent: Vec<Option<Sent>>,
    },
    /// A repair transaction (see [`super::repair`]).
    Repair,
    /// A low-water checkpoint write.
    LowWater,
    /// A forwarded PUBLISH (outside any transaction: a message is not data).
    Publish,
}

/// Counters of the command stream.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    /// Commands written to the target (acknowledged).
    pub applied: u64,
    /// Commands left out by filters, PINGs and REPLCONFs, PUBLISH without --forward-publish.
    pub skipped: u64,
    /// Commands already on the target after a restart (found by the checkpoints).
    pub replayed_skipped: u64,
    /// Commands the target answered with an error inside a transaction (the rest of the
    /// transaction applied, as on a replica).
    pub errors: u64,
    pub last_error: Option<String>,
    pub transactions: u64,
    /// Keys removed after a full sync because the new snapshot did not hold them (see
    /// [`super::prune`]).
    pub pruned: u64,
}

/// A command waiting for its batch to go out.
struct Pending {
    domain: Domain,
    db: u64,
    /// The source database it came from (what a repair reads).
    src_db: u64,
    frame: Bytes,
    /// A removal of a key the source no longer holds (see [`super::prune`]), not a stream
    /// command: counted apart.
    prune: bool,
}

/// A stream command in a transaction sent to the target.
#[derive(Debug)]
pub struct Sent {
    src_db: u64,
    db: u64,
    frame: Bytes,
    prune: bool,
}

/// A command renamed by `--rename-prefix`: its frame and its arguments.
type Renamed = (Bytes, Vec<Vec<u8>>);

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

fn select_cmd(db: u64) -> Bytes {
    let mut out = Vec::with_capacity(24);
    encode_command(&mut out, &["SELECT", db.to_string().as_str()]);
    Bytes::from(out)
}

/// The writing side of one replication link's command stream.
pub struct Applier {
    target: Target<GroupTag>,
    keys: CheckpointKeys,
    cluster: bool,
    opts: StreamOptions,
    replid: String,
    applied: Applied,
    /// Past this offset nothing can be on the target already.
    horizon: u64,
    src_db: u64,
    /// A source transaction being read (`MULTI` seen, `EXEC` not yet).
    tx: Option<Vec<Pending>>,
    batch: Vec<Pending>,
    batch_bytes: usize,
    /// Offset of the last byte processed.
    processed: u64,
    /// Batch end offset -> transactions of it still unanswered, and the source database at
    /// that offset.
    inflight: BTreeMap<u64, (u32, u64)>,
    low_water: u64,
    /// The source database at `low_water`, recorded with it.
    low_water_db: u64,
    written_low_water: u64,
    last_low_water_write: Instant,
    started: Instant,
    sent: u64,
    warned: HashSet<&'static str>,
    /// Atomic slot migrations as this link sees them.
    asm: LinkMigrations,
    /// A cluster source's links wait for each other when keys migrate (see [`super::handover`]).
    handover: Option<Handover>,
    pub stats: StreamStats,
    /// Keys re-copied after a refusal, and the rule for the commands after them.
    pub repairs: Repairs,
    /// Keyless commands of a batch the target refused (judged once the reply is in).
    refused_keyless: Vec<(Bytes, String, u64)>,
    /// What the target runs: commands newer than it are rewritten or refused
    /// ([`crate::compat`]). `None`: unknown, every command goes as it came.
    target_caps: Option<crate::compat::TargetCaps>,
    /// After a full sync: the removal of the keys the snapshot did not hold (see
    /// [`super::prune`]); `None` when there is none, or once it is over.
    prune: Option<super::prune::Prune>,
    /// Removals of stale keys the command being classified must be preceded by.
    stale_first: Vec<Pending>,
}

struct Handover {
    handle: super::handover::Handle,
}

impl Applier {
    /// `start` is the offset of the last byte before the stream's first (the `+FULLRESYNC`
    /// offset or the resume point) and `start_db` the source database there (the checkpoint's,
    /// on a resume: the source does not repeat `SELECT` after `+CONTINUE`); `applied` what the
    /// target holds already (empty after a full sync).
    pub fn new(
        mut target: Target<GroupTag>,
        keys: CheckpointKeys,
        opts: StreamOptions,
        replid: String,
        (start, start_db): (u64, u64),
        applied: Applied,
    ) -> Result<Applier, SyncError> {
        let cluster = target.is_cluster();
        if !cluster {
            target
                .select(opts.checkpoint_db)
                .map_err(|e| SyncError::Target(e.to_string()))?;
        }
        let horizon = applied.horizon();
        let asm = LinkMigrations::new(opts.migrations.clone());
        let repairs = Repairs::new(opts.on_target_error, &keys.low_water());
        Ok(Applier {
            repairs,
            refused_keyless: Vec::new(),
            target_caps: None,
            prune: None,
            stale_first: Vec::new(),
            target,
            keys,
            cluster,
            opts,
            replid,
            applied,
            horizon,
            src_db: start_db,
            tx: None,
            batch: Vec::new(),
            batch_bytes: 0,
            processed: start,
            inflight: BTreeMap::new(),
            low_water: start,
            low_water_db: start_db,
            written_low_water: start,
            last_low_water_write: Instant::now(),
            started: Instant::now(),
            sent: 0,
            warned: HashSet::new(),
            asm,
            handover: None,
            stats: StreamStats::default(),
        })
    }

    /// What the target runs (see [`crate::compat`]).
    pub fn set_target_caps(&mut self, caps: Option<crate::compat::TargetCaps>) {
        self.target_caps = caps;
    }

    /// After a full sync: remove the keys of the scope the snapshot did not hold, while the
    /// stream is applied (see [`super::prune`]).
    pub fn set_prune(&mut self, prune: super::prune::Prune) {
        self.prune = Some(prune);
    }

    /// Whether the removal of stale keys after a full sync is under way.
    pub fn pruning(&self) -> bool {
        self.prune.is_some()
    }

    /// One step of the removal of stale keys: a SCAN of the target, the keys to remove queued
    /// in the batch as `UNLINK`s. Once the scan is over and every removal answered, the
    /// checkpoint is written (the full sync is complete) and the log line returned.
    pub async fn prune_turn(&mut self) -> Result<Option<String>, SyncError> {
        let Some(p) = self.prune.as_mut() else {
            return Ok(None);
        };
        if !p.scanned_all() {
            let found = p.step().await?;
            let mut groups: BTreeMap<(Domain, u64), Vec<Vec<u8>>> = BTreeMap::new();
            for (db, k) in found {
                let domain = if self.cluster {
                    Domain::Slot(slot_of(&k))
                } else {
                    Domain::Single
                };
                groups.entry((domain, db)).or_default().push(k);
            }
            for ((domain, db), keys) in groups {
                let mut argv: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
                argv.push(b"UNLINK");
                argv.extend(keys.iter().map(Vec::as_slice));
                let mut frame = Vec::new();
                encode_command(&mut frame, &argv);
                self.batch_bytes += frame.len();
                self.batch.push(Pending {
                    domain,
                    db,
                    src_db: self.src_db,
                    frame: Bytes::from(frame),
                    prune: true,
                });
            }
            return Ok(None);
        }
        // An open source transaction holds the batch back: finish on a later turn.
        if self.tx.is_some() {
            return Ok(None);
        }
        self.settle().await?;
        if !self.batch.is_empty() || self.target.outstanding() > 0 {
            return Ok(None);
        }
        let Some(p) = self.prune.take() else {
            return Ok(None);
        };
        // Written even when the offset did not move: it replaces "full sync in progress".
        self.put_low_water().await?;
        Ok(Some(format!(
            "removed {} keys the source no longer holds ({}; the new snapshot had {} keys of this link, {} keys of the target were looked at, in {:.1}s)",
            self.stats.pruned,
            p.why,
            p.snapshot_len(),
            p.scanned,
            p.started.elapsed().as_secs_f64()
        )))
    }

    /// Takes part in the handover barrier of a cluster source's links.
    pub fn set_handover(&mut self, handle: super::handover::Handle) {
        self.handover = Some(Handover { handle });
    }

    /// Before a `RESTORE-ASKING` (a key migrating into this link's master) of `domain` that
    /// ends at `end` and is `len` bytes long: unless the other links have applied what their
    /// masters ran before it already, what this link holds is written out, then it waits for
    /// them (see [`super::handover`]).
    async fn handover_barrier(
        &mut self,
        domain: Domain,
        len: usize,
        end: u64,
    ) -> Result<(), SyncError> {
        let Some(h) = &self.handover else {
            return Ok(());
        };
        if end <= self.horizon && self.applied.holds(domain, end) {
            return Ok(());
        }
        let need = h.handle.need(end).await?;
        if h.handle.satisfied(&need) {
            return Ok(());
        }
        // Written out is everything before this command, not the command itself.
        let saved = self.processed;
        self.processed = end.saturating_sub(len as u64);
        let settled = self.settle().await;
        self.processed = saved;
        settled?;
        let Some(h) = &self.handover else {
            return Ok(());
        };
        h.handle.applied(self.low_water);
        h.handle.barrier(need).await
    }

    /// Offset up to which every command is on the target.
    pub fn low_water(&self) -> u64 {
        self.low_water
    }

    /// Offset of the last byte read and handled (written, batched or skipped).
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Tells the applier which master the stream comes from (a cluster source: atomic slot
    /// migrations involving it are recognised, see [`super::asm`]).
    pub async fn attach_source(
        &mut self,
        source: &crate::net::Endpoint,
        opts: &crate::net::ConnectOptions,
    ) -> Result<(), SyncError> {
        self.asm.attach(source, opts).await
    }

    pub fn set_replid(&mut self, replid: &str) {
        self.replid = replid.to_string();
    }

    fn warn_once(&mut self, what: &'static str, msg: String) {
        if self.warned.insert(what) {
            eprintln!(
                "{}: warning: {msg} (further cases are counted, not shown)",
                self.opts.tool
            );
        }
    }

    fn target_name(&self) -> String {
        self.target.seed().to_string()
    }

    fn client_err(&self, e: crate::client::ClientError) -> SyncError {
        SyncError::from_client(e)
    }

    /// Whether the batch should go out now.
    pub fn batch_full(&self) -> bool {
        self.tx.is_none()
            && (self.batch.len() >= self.opts.batch_commands
                || self.batch_bytes >= self.opts.batch_bytes)
    }

    /// Handles one command of the stream: `frame` is its exact bytes, `args` the ranges of its
    /// arguments in `frame`, `end` the offset of its last byte. Returns true when the source
    /// asked for an ACK (`REPLCONF GETACK`).
    pub async fn process(
        &mut self,
        frame: Bytes,
        args: &[Range<usize>],
        end: u64,
    ) -> Result<bool, SyncError> {
        if self.asm.fence_crossed(end) {
            // Everything before an atomic migration's hand-off point goes to the target first.
            self.settle().await?;
            self.asm.pass(end).await?;
        }
        self.processed = end;
        let argv: Vec<&[u8]> = args.iter().map(|r| &frame[r.clone()]).collect();
        let Some(name) = argv.first() else {
            return Err(SyncError::Source(format!(
                "an empty command in the stream at offset {end}"
            )));
        };
        let info = command_info(name);
        let kind = info.map(|i| i.kind).unwrap_or(Kind::Other);
        match kind {
            Kind::Ping => {
                self.stats.skipped += 1;
                Ok(false)
            }
            Kind::ReplConf => {
                self.stats.skipped += 1;
                Ok(argv
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK")))
            }
            Kind::Select => {
                let db = argv
                    .get(1)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        SyncError::Source(format!("a malformed SELECT at offset {end}"))
                    })?;
                self.src_db = db;
                Ok(false)
            }
            Kind::Multi => {
                self.tx = Some(Vec::new());
                Ok(false)
            }
            Kind::Discard => {
                // Removals of stale keys stand whatever the transaction became: their keys
                // are counted as touched.
                for p in self.tx.take().unwrap_or_default() {
                    if p.prune {
                        self.batch_bytes += p.frame.len();
                        self.batch.push(p);
                    }
                }
                Ok(false)
            }
            Kind::Exec => {
                if let Some(cmds) = self.tx.take() {
                    self.commit_transaction(cmds, end)?;
                }
                Ok(false)
            }
            _ if name.eq_ignore_ascii_case(b"TRIMSLOTS") => Err(SyncError::Fatal(format!(
                "TRIMSLOTS at source offset {end}: the source trims slots after a Redis 8.4 atomic slot migration (CLUSTER MIGRATION), which shake-sync does not follow yet (docs/atomic-slot-migration.md); written as it came it would delete the moved keys on the target. Run the migration with MIGRATE-based resharding, or sync again from scratch once it is over"
            ))),
            _ if name.eq_ignore_ascii_case(b"CLUSTER") => {
                // Cluster bus and slot-migration chatter (CLUSTER SYNCSLOTS ...): never data.
                self.stats.skipped += 1;
                self.opts.topology_hint.notify_one();
                if let Control::Handoff(h) = self.asm.control(&argv, end).await? {
                    self.settle().await?;
                    self.asm.await_handoff(h).await?;
                }
                Ok(false)
            }
            // The command filters judge the source's command (inside a transaction too: the
            // transaction keeps the rest), not what it becomes for an older target; what they
            // leave out still moves the checkpoint on.
            _ if !self.opts.commands.allows(name) => {
                self.stats.skipped += 1;
                Ok(false)
            }
            _ => {
                let classified = self.classify(info, kind, &frame, &argv, end, false).await?;
                for p in std::mem::take(&mut self.stale_first) {
                    self.push(p);
                }
                if let Some(p) = classified {
                    for p in p {
                        self.push(p);
                    }
                }
                Ok(false)
            }
        }
    }

    fn push(&mut self, p: Pending) {
        match &mut self.tx {
            Some(tx) => tx.push(p),
            None => {
                self.batch_bytes += p.frame.len();
                self.batch.push(p);
            }
        }
    }

    /// A source transaction ended: its commands join the batch together.
    fn commit_transaction(&mut self, cmds: Vec<Pending>, end: u64) -> Result<(), SyncError> {
        if cmds.is_empty() {
            return Ok(());
        }
        if self.cluster {
            let first = cmds[0].domain;
            if cmds.iter().any(|c| c.domain != first) {
                if !self.opts.split_transactions {
                    return Err(SyncError::Fatal(format!(
                        "a MULTI/EXEC transaction ending at source offset {end} writes keys in different hash slots, which a cluster target cannot run as one transaction; \
                         --split-transactions applies it as one transaction per slot (not atomic across slots)"
                    )));
                }
                self.warn_once(
                    "split",
                    format!("a transaction ending at offset {end} was split by hash slot (--split-transactions)"),
                );
            }
        }
        self.stats.transactions += 1;
        for c in cmds {
            // The transaction went out whole per domain, so a domain holds all of it or none.
            if end <= self.horizon && self.applied.holds(c.domain, end) {
                self.stats.replayed_skipped += 1;
                continue;
            }
            // Judged at the EXEC's offset: a repair read is before or after the whole transaction.
            if self.repaired_covers(c.db, c.src_db, &c.frame, end) {
                continue;
            }
            self.batch_bytes += c.frame.len();
            self.batch.push(c);
        }
        Ok(())
    }

    /// Decides what a data command becomes on the target: nothing (filtered, already applied),
    /// one pending command, several (split by slot), or — for commands without keys on a
    /// cluster — an immediate run on every master. `judged`: the command stands for a source
    /// command whose keys the filters already judged and `--rename-prefix` already renamed (a
    /// command rewritten for an older target), so neither happens again.
    async fn classify(
        &mut self,
        info: Option<&'static CommandInfo>,
        kind: Kind,
        frame: &Bytes,
        argv: &[&[u8]],
        end: u64,
        judged: bool,
    ) -> Result<Option<Vec<Pending>>, SyncError> {
        // Only messages need the name as text: no allocation per command on the hot path.
        let name = || String::from_utf8_lossy(argv[0]).to_ascii_uppercase();
        if !self.opts.filter.db_allowed(self.src_db) {
            self.stats.skipped += 1;
            return Ok(None);
        }
        let Some(db) = self.opts.db_map.map(self.src_db) else {
            self.stats.skipped += 1;
            return Ok(None);
        };
        if !self.target.has_db(db) {
            let databases = self.target.cluster_databases().unwrap_or(1);
            return Err(SyncError::Fatal(format!(
                "{} at source offset {end} writes database {} (target database {db}): {}",
                name(),
                self.src_db,
                crate::client::cluster_db_message(&self.target_name(), db, databases)
            )));
        }
        match kind {
            // Administration: never propagated as data. Valkey >= 8 masters propagate their slot
            // states (`CLUSTER SETSLOT`) to their replicas; the target has its own topology.
            Kind::Other if info.is_some() => {
                self.stats.skipped += 1;
                return Ok(None);
            }
            Kind::Publish => {
                if !self.opts.forward_publish {
                    self.stats.skipped += 1;
                    return Ok(None);
                }
                // A message is not data: sent as it comes, outside transactions and checkpoints.
                let slot = (self.cluster && argv[0].eq_ignore_ascii_case(b"SPUBLISH"))
                    .then(|| argv.get(1).map(|c| slot_of(c)))
                    .flatten();
                self.flush().await?;
                let r = match slot {
                    Some(s) => {
                        self.target
                            .submit_to_slot(s, frame.clone(), Idempotent::Yes, GroupTag::Publish)
                            .await
                    }
                    None => {
                        self.target
                            .submit(None, frame.clone(), Idempotent::Yes, GroupTag::Publish)
                            .await
                    }
                };
                r.map_err(|e| self.client_err(e))?;
                return Ok(None);
            }
            Kind::FlushAll | Kind::FlushDb => {
                let whole_source = self.opts.filter.is_everything() && self.opts.db_map.is_empty();
                let frame = if kind == Kind::FlushAll {
                    if !whole_source {
                        self.warn_once("flushall", format!("FLUSHALL at offset {end} skipped: with filters or --db-map it would delete data that does not come from this source"));
                        self.stats.skipped += 1;
                        return Ok(None);
                    }
                    frame.clone()
                } else {
                    if self.opts.filter.has_key_rules() {
                        self.warn_once("flushdb", format!("FLUSHDB at offset {end} skipped: with --key/--key-regex filters it would delete keys this sync does not copy"));
                        self.stats.skipped += 1;
                        return Ok(None);
                    }
                    if self.opts.db_map.merges(self.src_db) {
                        self.warn_once("flushdb-merge", format!("FLUSHDB of database {} at offset {end} skipped: --db-map merges other databases into the same target database", self.src_db));
                        self.stats.skipped += 1;
                        return Ok(None);
                    }
                    frame.clone()
                };
                return self.keyless(frame, db, end).await;
            }
            Kind::Function | Kind::Script => {
                return self.keyless(frame.clone(), db, end).await;
            }
            Kind::SwapDb => {
                let (a, b) = (parse_db(argv.get(1)), parse_db(argv.get(2)));
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(SyncError::Source(format!(
                        "a malformed SWAPDB at offset {end}"
                    )));
                };
                let (ma, mb) = (self.opts.db_map.map(a), self.opts.db_map.map(b));
                let ok = self.opts.filter.db_allowed(a)
                    && self.opts.filter.db_allowed(b)
                    && !self.opts.db_map.merges(a)
                    && !self.opts.db_map.merges(b)
                    && ma.is_some()
                    && mb.is_some()
                    && !self.cluster;
                if !ok {
                    return Err(SyncError::Fatal(format!(
                        "SWAPDB {a} {b} at source offset {end} cannot be applied: the target {} {}",
                        self.target_name(),
                        if self.cluster {
                            "is a cluster (one database)"
                        } else {
                            "does not receive both databases one to one (--db/--db-map)"
                        }
                    )));
                }
                if self.prune.take().is_some() {
                    eprintln!(
                        "shake-sync: warning: SWAPDB {a} {b} at source offset {end} came while the keys the source deleted were being removed after the full sync ({} removed so far): the rest of that removal is abandoned, so keys deleted on the source before the full sync may remain on the target",
                        self.stats.pruned
                    );
                }
                let mut out = Vec::new();
                let (sa, sb) = (ma.unwrap_or(a).to_string(), mb.unwrap_or(b).to_string());
                encode_command(&mut out, &["SWAPDB", sa.as_str(), sb.as_str()]);
                return self.keyless(Bytes::from(out), db, end).await;
            }
            _ => {}
        }

        // The entry looked up once in `process`; `command_keys` only to phrase the unknown case.
        let keys = match info {
            Some(i) => i.key_indexes(argv),
            None => command_keys(argv),
        };
        let renames = !judged && !self.opts.rename.is_empty();
        let key_idx = match keys {
            Ok(k) => k,
            Err(e) => {
                if renames {
                    return Err(SyncError::Fatal(format!(
                        "{} at source offset {end}: --rename-prefix cannot rename its keys, because their places are unknown ({e}); leave the command out (--exclude-command NAME, or --exclude-command-group module for a module's command) or sync without --rename-prefix",
                        name()
                    )));
                }
                if self.cluster {
                    return Err(SyncError::Fatal(format!(
                        "cannot route {} at source offset {end} to a cluster target: {e}",
                        name()
                    )));
                }
                self.warn_once(
                    "unknown",
                    format!(
                        "{} at offset {end} is not a known command; written as it came ({e})",
                        name()
                    ),
                );
                return Ok(self
                    .pending(Domain::Single, db, frame.clone(), end)?
                    .map(|p| vec![p]));
            }
        };
        if key_idx.is_empty() {
            if renames {
                // A script without declared keys may still name keys in its code.
                self.rename_command(argv, &key_idx, end)?;
            }
            return self.keyless(frame.clone(), db, end).await;
        }
        let first = argv[key_idx[0]];
        if key_idx.iter().any(|&i| is_internal_key(argv[i])) {
            self.stats.skipped += 1;
            return Ok(None);
        }
        if !judged && !self.opts.filter.key_allowed(first) {
            self.stats.skipped += 1;
            return Ok(None);
        }
        if !judged && !self.asm.idle() {
            let deletion = key_idx.len() == 1
                && (argv[0].eq_ignore_ascii_case(b"DEL")
                    || argv[0].eq_ignore_ascii_case(b"UNLINK"));
            if self.asm.drops(slot_of(first), deletion) {
                self.stats.skipped += 1;
                return Ok(None);
            }
        }

        // From here on the command carries the target's names (`--rename-prefix`): what is
        // written, routed to a slot, pruned and repaired.
        let renamed = if renames {
            self.rename_command(argv, &key_idx, end)?
        } else {
            None
        };
        let renamed_argv: Vec<&[u8]>;
        let (frame, argv) = match &renamed {
            Some((f, a)) => {
                renamed_argv = a.iter().map(Vec::as_slice).collect();
                (f, renamed_argv.as_slice())
            }
            None => (frame, argv),
        };
        let first = argv[key_idx[0]];

        // A command newer than the target: its equivalent there, each part classified as if it
        // had come so (same offset: they travel in the same batch), or the end of the stream.
        let adapted = self
            .target_caps
            .as_ref()
            .map(|caps| (crate::compat::adapt(argv, caps), caps.describe()));
        if let Some((adapted, version)) = adapted {
            match adapted {
                crate::compat::Adapted::AsIs => {}
                crate::compat::Adapted::Refused(why) => {
                    return Err(SyncError::Fatal(format!(
                        "{} for key {} at source offset {end} has no equivalent on the target {}: {why}",
                        name(),
                        quote_bytes(first),
                        self.target_name()
                    )));
                }
                crate::compat::Adapted::Rewritten(cmds) => {
                    if let Some(r) = argv.first().and_then(|n| crate::compat::rule(n)) {
                        let shown = cmds
                            .iter()
                            .filter_map(|c| c.first())
                            .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                            .collect::<Vec<_>>()
                            .join(" + ");
                        let msg = format!(
                            "{} is written as {} for the target {} ({}), which lacks it (docs/commands.md)",
                            name(),
                            if shown.is_empty() { "nothing".to_string() } else { shown },
                            self.target_name(),
                            version
                        );
                        self.warn_once(r.name, msg);
                    }
                    let mut out = Vec::new();
                    for c in cmds {
                        let mut buf = Vec::with_capacity(c.iter().map(|a| a.len() + 16).sum());
                        encode_command(&mut buf, &c);
                        let f = Bytes::from(buf);
                        let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
                        let i = command_info(args[0]);
                        let k = i.map(|i| i.kind).unwrap_or(Kind::Other);
                        if let Some(p) = Box::pin(self.classify(i, k, &f, &args, end, true)).await?
                        {
                            out.extend(p);
                        }
                    }
                    if out.is_empty() {
                        self.stats.skipped += 1;
                    }
                    return Ok(Some(out));
                }
            }
        }

        // Database numbers inside the command.
        let frame = match kind {
            Kind::Move => {
                let Some(to) = parse_db(argv.get(2)) else {
                    return Err(SyncError::Source(format!(
                        "a malformed MOVE at offset {end}"
                    )));
                };
                let mapped = if self.opts.filter.db_allowed(to) {
                    self.opts.db_map.map(to)
                } else {
                    None
                };
                match mapped {
                    // Both databases land in one: the key stays where it is.
                    Some(m) if m == db => {
                        self.stats.skipped += 1;
                        return Ok(None);
                    }
                    Some(m) if !self.cluster || self.target.has_db(m) => {
                        let mut out = Vec::new();
                        encode_command(&mut out, &[argv[0], argv[1], m.to_string().as_bytes()]);
                        Bytes::from(out)
                    }
                    Some(_) => {
                        return Err(SyncError::Fatal(format!(
                            "MOVE {} to database {to} at source offset {end} cannot be applied to the cluster target {}: map the databases with --db-map",
                            quote_bytes(argv[1]),
                            self.target_name()
                        )))
                    }
                    // The key leaves the databases this sync copies.
                    None => {
                        let mut out = Vec::new();
                        encode_command(&mut out, &[&b"DEL"[..], argv[1]]);
                        Bytes::from(out)
                    }
                }
            }
            Kind::Copy => self.map_copy_db(argv, frame, db, end)?,
            _ => frame.clone(),
        };

        if self.prune.is_some() {
            self.note_touched(kind, argv, &key_idx, db);
        }

        // Only MIGRATE sends RESTORE-ASKING: a key arriving from another source master.
        if argv[0].eq_ignore_ascii_case(b"RESTORE-ASKING") && self.handover.is_some() {
            self.opts.topology_hint.notify_one();
            let domain = if self.cluster {
                Domain::Slot(slot_of(first))
            } else {
                Domain::Single
            };
            self.handover_barrier(domain, frame.len(), end).await?;
        }

        if !self.cluster {
            return Ok(self
                .pending(Domain::Single, db, frame, end)?
                .map(|p| vec![p]));
        }
        let slots: Vec<u16> = key_idx.iter().map(|&i| slot_of(argv[i])).collect();
        if slots.iter().all(|&s| s == slots[0]) {
            return Ok(self
                .pending(Domain::Slot(slots[0]), db, frame, end)?
                .map(|p| vec![p]));
        }
        // Keys in several slots: only commands that act on each key alone can be split.
        let upper = name();
        let upper = upper.as_str();
        let per_key: &[u8] = match upper {
            "DEL" | "UNLINK" | "TOUCH" => b"1",
            "MSET" | "MSETNX" => b"2",
            _ => b"",
        };
        if per_key.is_empty() {
            return Err(SyncError::Fatal(format!(
                "{upper} at source offset {end} names keys in different hash slots; a cluster target cannot apply it (the source is not a cluster; such commands need a standalone target)"
            )));
        }
        let stride = if per_key == b"2" { 2 } else { 1 };
        let verb: &[u8] = if upper == "MSETNX" { b"MSET" } else { argv[0] };
        let mut by_slot: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        let mut i = 1;
        while i + stride <= argv.len() {
            by_slot
                .entry(slot_of(argv[i]))
                .or_default()
                .extend_from_slice(&argv[i..i + stride]);
            i += stride;
        }
        let mut out = Vec::new();
        for (slot, args) in by_slot {
            let mut cmd = Vec::new();
            let mut all: Vec<&[u8]> = vec![verb];
            all.extend(args);
            encode_command(&mut cmd, &all);
            if let Some(p) = self.pending(Domain::Slot(slot), db, Bytes::from(cmd), end)? {
                out.push(p);
            }
        }
        Ok(Some(out))
    }

    /// `argv` with its keys (at `key_idx`) renamed by `--rename-prefix`, encoded, with its
    /// arguments; `None` when no key changes. A command whose keys cannot all be renamed exactly
    /// (a script, SORT's BY/GET patterns, a name that would become reserved) stops the sync.
    fn rename_command(
        &self,
        argv: &[&[u8]],
        key_idx: &[usize],
        end: u64,
    ) -> Result<Option<Renamed>, SyncError> {
        match self.opts.rename.command(argv, key_idx) {
            Ok(None) => Ok(None),
            Ok(Some(args)) => {
                let mut out = Vec::with_capacity(args.iter().map(|a| a.len() + 16).sum());
                encode_command(&mut out, &args);
                Ok(Some((Bytes::from(out), args)))
            }
            Err(e) => Err(SyncError::Fatal(format!(
                "--rename-prefix: {e} (source offset {end}); leave the command out (--exclude-command) or sync without --rename-prefix"
            ))),
        }
    }

    /// A pending command, or `None` when a restart found it already applied.
    fn pending(
        &mut self,
        domain: Domain,
        db: u64,
        frame: Bytes,
        end: u64,
    ) -> Result<Option<Pending>, SyncError> {
        if end <= self.horizon && self.tx.is_none() && self.applied.holds(domain, end) {
            self.stats.replayed_skipped += 1;
            return Ok(None);
        }
        if self.tx.is_none() && self.repaired_covers(db, self.src_db, &frame, end) {
            return Ok(None);
        }
        Ok(Some(Pending {
            domain,
            db,
            src_db: self.src_db,
            frame,
            prune: false,
        }))
    }

    /// While stale keys are being removed after a full sync: the keys a command writes (target
    /// database, name) that the snapshot did not hold and no command named before get a `DEL`
    /// ahead of the command (see [`super::prune`]).
    fn note_touched(&mut self, kind: Kind, argv: &[&[u8]], key_idx: &[usize], db: u64) {
        let Some(prune) = self.prune.as_mut() else {
            return;
        };
        let mut named: Vec<(u64, &[u8])> = key_idx.iter().map(|&i| (db, argv[i])).collect();
        // Keys landing in another database: MOVE's key there, COPY ... DB n's destination.
        let other_db = |a: Option<&&[u8]>| {
            let to = parse_db(a)?;
            self.opts
                .db_map
                .map(to)
                .filter(|_| self.opts.filter.db_allowed(to))
        };
        match kind {
            Kind::Move => {
                if let (Some(m), Some(k)) = (other_db(argv.get(2)), argv.get(1)) {
                    named.push((m, k));
                }
            }
            Kind::Copy => {
                let pos = argv
                    .iter()
                    .skip(3)
                    .position(|a| a.eq_ignore_ascii_case(b"DB"))
                    .map(|p| p + 3);
                if let (Some(p), Some(k)) = (pos, argv.get(2)) {
                    if let Some(m) = other_db(argv.get(p + 1)) {
                        named.push((m, k));
                    }
                }
            }
            _ => {}
        }
        for (d, k) in named {
            if !prune.first_touch(d, k) {
                continue;
            }
            let mut frame = Vec::with_capacity(k.len() + 24);
            encode_command(&mut frame, &[&b"DEL"[..], k]);
            let domain = if self.cluster {
                Domain::Slot(slot_of(k))
            } else {
                Domain::Single
            };
            self.stale_first.push(Pending {
                domain,
                db: d,
                src_db: self.src_db,
                frame: Bytes::from(frame),
                prune: true,
            });
        }
    }

    /// The rule of [`super::repair`] for a command ending at `end`: true when a repaired value
    /// holds its effect already (then it is not written; if it names other keys too, they are
    /// all repaired again).
    fn repaired_covers(&mut self, db: u64, src_db: u64, frame: &Bytes, end: u64) -> bool {
        if !self.repairs.active() {
            return false;
        }
        let Some(argv) = split_frame(frame) else {
            return false;
        };
        let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        match self.repairs.verdict(db, &keys_of(&args), end) {
            Verdict::Apply => false,
            Verdict::Skip => {
                self.repairs.skipped += 1;
                true
            }
            Verdict::Recopy(keys) => {
                self.repairs.skipped += 1;
                self.repairs.push(Todo {
                    src_db,
                    db,
                    keys,
                    end,
                    why: format!(
                        "{} at source offset {end} names a repaired key",
                        crate::resp::describe_command(frame)
                    ),
                });
                true
            }
        }
    }

    fn map_copy_db(
        &self,
        argv: &[&[u8]],
        frame: &Bytes,
        db: u64,
        end: u64,
    ) -> Result<Bytes, SyncError> {
        let Some(pos) = argv
            .iter()
            .skip(3)
            .position(|a| a.eq_ignore_ascii_case(b"DB"))
            .map(|p| p + 3)
        else {
            return Ok(frame.clone());
        };
        let to = parse_db(argv.get(pos + 1))
            .ok_or_else(|| SyncError::Source(format!("a malformed COPY at offset {end}")))?;
        let mapped = self
            .opts
            .db_map
            .map(to)
            .filter(|_| self.opts.filter.db_allowed(to));
        let Some(m) = mapped else {
            // The copy lands outside what this sync copies: nothing to write.
            return Ok(Bytes::new());
        };
        let mut args: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
        if m == db {
            args.drain(pos..pos + 2);
        } else if self.cluster && !self.target.has_db(m) {
            return Err(SyncError::Fatal(format!(
                "COPY to database {to} at source offset {end} cannot be applied to a cluster target without that database: map the databases with --db-map"
            )));
        } else {
            args[pos + 1] = m.to_string().into_bytes();
        }
        let mut out = Vec::new();
        encode_command(&mut out, &args);
        Ok(Bytes::from(out))
    }

    /// A command without keys: part of the batch on a standalone target; on a cluster, run on
    /// every master once everything before it is applied, then checkpointed under the global
    /// domain.
    async fn keyless(
        &mut self,
        frame: Bytes,
        db: u64,
        end: u64,
    ) -> Result<Option<Vec<Pending>>, SyncError> {
        if !self.cluster {
            return Ok(self
                .pending(Domain::Single, db, frame, end)?
                .map(|p| vec![p]));
        }
        if self.tx.is_some() {
            return Err(SyncError::Fatal(format!(
                "a transaction ending after source offset {end} contains a command without keys ({}), which a cluster target cannot run inside a transaction",
                crate::resp::describe_command(&frame)
            )));
        }
        if end <= self.horizon && self.applied.holds(Domain::Global, end) {
            self.stats.replayed_skipped += 1;
            return Ok(None);
        }
        self.settle().await?;
        let argv = split_frame(&frame)
            .ok_or_else(|| SyncError::Source(format!("a malformed command at offset {end}")))?;
        // FLUSHDB of a database other than 0 (a cluster with `cluster-databases`): in that one.
        self.target.select(db).map_err(|e| self.client_err(e))?;
        let replies = self.target.broadcast(&argv).await;
        self.target.select(0).map_err(|e| self.client_err(e))?;
        let replies = replies.map_err(|e| self.client_err(e))?;
        for (node, reply) in replies {
            if let Some(e) = reply.error() {
                // The same FUNCTION command from another link of a cluster source got there
                // first: its effect is on the target already (see apply::functions).
                if argv[0].eq_ignore_ascii_case(b"FUNCTION") {
                    let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
                    let noop = crate::apply::functions::stream_refusal_is_noop(
                        &mut self.target,
                        &node,
                        &args,
                        e,
                        "the source",
                    )
                    .await
                    .map_err(|e| SyncError::Fatal(format!("{e} (source offset {end})")))?;
                    if noop {
                        continue;
                    }
                }
                return Err(SyncError::Fatal(format!(
                    "{node} refused {} (source offset {end}): {e}",
                    crate::resp::describe_command(&frame)
                )));
            }
        }
        self.stats.applied += 1;
        if self.opts.checkpoints {
            let key = self.keys.domain_key(Domain::Global);
            let cmd = Checkpoint::at(&self.replid, end, self.src_db).set_command(&key);
            self.target
                .submit(Some(&key), cmd, Idempotent::Yes, GroupTag::LowWater)
                .await
                .map_err(|e| self.client_err(e))?;
        }
        self.settle().await?;
        Ok(None)
    }

    /// Sends the batch: one transaction (standalone) or one per slot (cluster), each with its
    /// checkpoint.
    pub async fn flush(&mut self) -> Result<(), SyncError> {
        if self.tx.is_some() {
            return Ok(());
        }
        let end = self.processed;
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        // The database the stream is in after `end`: what a resume from here starts with.
        let checkpoint = Checkpoint::at(&self.replid, end, self.src_db);
        type Group = (Option<u16>, Vec<Bytes>, u32, Vec<Option<Sent>>);
        let mut groups: Vec<Group> = Vec::new();
        let sent_of = |p: &Pending| {
            Some(Sent {
                src_db: p.src_db,
                db: p.db,
                frame: p.frame.clone(),
                prune: p.prune,
            })
        };
        if !self.cluster {
            let mut n = 0u32;
            if !batch.is_empty() {
                let mut cmds = Vec::with_capacity(batch.len() + 4);
                let mut sent = Vec::with_capacity(batch.len() + 3);
                cmds.push(Bytes::from_static(MULTI));
                let home = self.opts.checkpoint_db;
                let mut cur = home;
                for p in batch {
                    if p.frame.is_empty() {
                        continue;
                    }
                    if p.db != cur {
                        cmds.push(select_cmd(p.db));
                        sent.push(None);
                        cur = p.db;
                    }
                    sent.push(sent_of(&p));
                    n += u32::from(!p.prune);
                    cmds.push(p.frame);
                }
                if cur != home {
                    cmds.push(select_cmd(home));
                    sent.push(None);
                }
                if self.opts.checkpoints {
                    let key = self.keys.domain_key(Domain::Single);
                    cmds.push(Bytes::from(checkpoint.set_command(&key)));
                    sent.push(None);
                }
                cmds.push(Bytes::from_static(EXEC));
                groups.push((None, cmds, n, sent));
            }
        } else {
            // Per slot: its commands, how many, and the database its transaction is in (a
            // cluster with `cluster-databases` > 1 gets SELECTs inside; the checkpoint key lives
            // in database 0, where each transaction starts and ends).
            let mut order: Vec<u16> = Vec::new();
            let mut by_slot: HashMap<u16, (Vec<Bytes>, Vec<Option<Sent>>, u32, u64)> =
                HashMap::new();
            for p in batch {
                let Domain::Slot(s) = p.domain else { continue };
                if p.frame.is_empty() {
                    continue;
                }
                let v = by_slot.entry(s).or_insert_with(|| {
                    order.push(s);
                    (vec![Bytes::from_static(MULTI)], Vec::new(), 0, 0)
                });
                if p.db != v.3 {
                    v.0.push(select_cmd(p.db));
                    v.1.push(None);
                    v.3 = p.db;
                }
                v.1.push(sent_of(&p));
                v.2 += u32::from(!p.prune);
                v.0.push(p.frame);
            }
            for s in order {
                let Some((mut cmds, mut sent, n, cur)) = by_slot.remove(&s) else {
                    continue;
                };
                if cur != 0 {
                    cmds.push(select_cmd(0));
                    sent.push(None);
                }
                if self.opts.checkpoints {
                    let key = self.keys.domain_key(Domain::Slot(s));
                    cmds.push(Bytes::from(checkpoint.set_command(&key)));
                    sent.push(None);
                }
                cmds.push(Bytes::from_static(EXEC));
                groups.push((Some(s), cmds, n, sent));
            }
        }
        self.inflight.entry(end).or_insert((0, self.src_db)).0 += groups.len() as u32;
        for (slot, cmds, n, sent) in groups {
            self.pace(n as u64).await;
            self.target
                .submit_group(
                    slot,
                    cmds,
                    Idempotent::No,
                    GroupTag::Batch {
                        end,
                        commands: n,
                        sent,
                    },
                )
                .await
                .map_err(|e| self.client_err(e))?;
        }
        self.collect()?;
        self.advance_low_water();
        self.run_repairs().await
    }

    /// Judges what the target refused (since the last call) and repairs the keys: see
    /// [`super::repair`]. A repair that keeps failing stops the sync, naming the key.
    async fn run_repairs(&mut self) -> Result<(), SyncError> {
        while !self.refused_keyless.is_empty() || self.repairs.has_queue() {
            for (frame, e, end) in std::mem::take(&mut self.refused_keyless) {
                let what = crate::resp::describe_command(&frame);
                let argv = split_frame(&frame).unwrap_or_default();
                let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
                if args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"FUNCTION"))
                {
                    let node = self.target.seed().clone();
                    let noop = crate::apply::functions::stream_refusal_is_noop(
                        &mut self.target,
                        &node,
                        &args,
                        &e,
                        "the source",
                    )
                    .await
                    .map_err(|m| SyncError::Fatal(format!("{m} (source offset {end})")))?;
                    if noop {
                        continue;
                    }
                }
                return Err(SyncError::Fatal(format!(
                    "{} refused {what} (source offset {end}): {e}; a command without a key cannot be re-copied, so the target may differ from the source from here: stopped",
                    self.target_name()
                )));
            }
            for t in self.repairs.take_queue() {
                // A repair read at or past this command (one of an earlier refusal) covers it.
                if self.repairs.verdict(t.db, &t.keys, t.end) == Verdict::Skip {
                    continue;
                }
                self.repair(t).await?;
            }
        }
        Ok(())
    }

    /// Re-copies `t`'s keys, retrying a few times (a target out of memory for a moment, a
    /// source failing over); stops the sync when it cannot.
    async fn repair(&mut self, t: Todo) -> Result<(), SyncError> {
        let mut delay = std::time::Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.try_repair(&t).await? {
                Ok(()) => return Ok(()),
                Err(why) if attempt < 5 => {
                    eprintln!(
                        "shake-sync: repairing key {} (attempt {attempt} failed: {why}); trying again in {delay:?}",
                        show_keys(&t.keys)
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(why) => {
                    return Err(SyncError::Fatal(format!(
                        "the repair of key {} on {} failed: {why} ({}); the key differs from the source's: stopped",
                        show_keys(&t.keys),
                        self.target_name(),
                        t.why
                    )))
                }
            }
        }
    }

    /// One attempt: read from the source, write the values with their record, wait for the
    /// reply. `Ok(Err)`: this attempt failed (why); `Err`: the sync cannot go on.
    async fn try_repair(&mut self, t: &Todo) -> Result<Result<(), String>, SyncError> {
        let (planned, s) = match self.repairs.plan(&mut self.target, t).await {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let records = self
            .repairs
            .record_commands(self.cluster, t, &self.replid, s);
        let home = self.opts.checkpoint_db;
        let mut groups: Vec<(Option<u16>, Vec<Bytes>)> = Vec::new();
        for ((key, cmds), record) in planned.into_iter().zip(records) {
            let slot = self.cluster.then(|| slot_of(&key));
            let at = match groups.iter().position(|g| g.0 == slot) {
                Some(i) => i,
                None => {
                    groups.push((slot, vec![Bytes::from_static(MULTI)]));
                    groups.len() - 1
                }
            };
            let g = &mut groups[at].1;
            if !self.cluster && t.db != home {
                g.push(select_cmd(t.db));
            }
            g.extend(cmds);
            if !self.cluster && t.db != home {
                g.push(select_cmd(home));
            }
            g.push(record);
        }
        for (slot, mut cmds) in groups {
            cmds.push(Bytes::from_static(EXEC));
            self.target
                .submit_group(slot, cmds, Idempotent::No, GroupTag::Repair)
                .await
                .map_err(|e| self.client_err(e))?;
        }
        self.target
            .flush_all()
            .await
            .map_err(|e| self.client_err(e))?;
        let mut failure = None;
        while let Some((tag, reply)) = self.target.try_completion() {
            match tag {
                GroupTag::Repair => {
                    let parts = reply.as_array().unwrap_or_default();
                    let queued = parts.iter().take(parts.len().saturating_sub(1));
                    let why = match parts.last() {
                        Some(Reply::Array(results)) => queued
                            .chain(results.iter())
                            .find_map(|r| r.error())
                            .map(str::to_string),
                        other => Some(
                            queued
                                .filter_map(|r| r.error())
                                .chain(other.and_then(|r| r.error()))
                                .next()
                                .unwrap_or("no reply to EXEC")
                                .to_string(),
                        ),
                    };
                    if let Some(w) = why {
                        failure.get_or_insert(format!(
                            "{} refused the re-copy: {w}",
                            self.target_name()
                        ));
                    }
                }
                other => self.judge(other, reply)?,
            }
        }
        self.advance_low_water();
        match failure {
            None => {
                self.repairs.mark(t, s);
                Ok(Ok(()))
            }
            Some(w) => Ok(Err(w)),
        }
    }

    /// Reads back the repair records a previous session left (see [`super::repair`]).
    pub async fn load_repairs(
        &mut self,
        connect: &crate::net::ConnectOptions,
        replids: &[&str],
    ) -> Result<(), SyncError> {
        let masters = self.target.masters();
        let db = if self.cluster {
            0
        } else {
            self.opts.checkpoint_db
        };
        self.repairs
            .load(&masters, connect, db, replids, self.low_water)
            .await
            .map_err(SyncError::Target)
    }

    async fn pace(&mut self, commands: u64) {
        self.sent += commands;
        if self.opts.qps == 0 {
            return;
        }
        let due = std::time::Duration::from_secs_f64(self.sent as f64 / self.opts.qps as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    /// Judges every reply that has arrived (never waits).
    pub fn collect(&mut self) -> Result<(), SyncError> {
        while let Some((tag, reply)) = self.target.try_completion() {
            self.judge(tag, reply)?;
        }
        self.advance_low_water();
        Ok(())
    }

    fn judge(&mut self, tag: GroupTag, reply: Reply) -> Result<(), SyncError> {
        match tag {
            GroupTag::Batch {
                end,
                commands,
                sent,
            } => {
                let replies = reply.as_array().unwrap_or_default();
                match replies.last() {
                    Some(Reply::Array(results)) => {
                        // The results of the commands, then the checkpoint SET's.
                        let ours = usize::from(self.opts.checkpoints);
                        for (i, r) in results
                            .iter()
                            .enumerate()
                            .take(results.len().saturating_sub(ours))
                        {
                            if let (Some(Some(s)), Some(n)) = (sent.get(i), r.as_int()) {
                                if s.prune {
                                    self.stats.pruned += n.max(0) as u64;
                                }
                            }
                            if let Some(e) = r.error() {
                                if let Some(Some(s)) = sent.get(i) {
                                    self.refused(s, e, end)?;
                                }
                                // SELECTs we added answer OK; only real commands fail.
                                self.stats.errors += 1;
                                if self.stats.errors <= 5 {
                                    eprintln!(
                                        "{}: warning: {} answered an error to a command of the batch ending at source offset {end}: {e}",
                                        self.opts.tool,
                                        self.target_name()
                                    );
                                }
                                self.stats.last_error = Some(e.to_string());
                            }
                        }
                        self.stats.applied += commands as u64;
                    }
                    other => {
                        // EXECABORT: nothing of the batch ran. The first queued error says why.
                        let why = replies
                            .iter()
                            .find_map(|r| r.error())
                            .or_else(|| other.and_then(|r| r.error()))
                            .unwrap_or("no reply to EXEC")
                            .to_string();
                        return Err(SyncError::Fatal(format!(
                            "{} refused the batch of commands ending at source offset {end} (nothing of it was applied; the checkpoint stays before it): {why}",
                            self.target_name()
                        )));
                    }
                }
                if let Some((n, _)) = self.inflight.get_mut(&end) {
                    *n = n.saturating_sub(1);
                }
            }
            GroupTag::LowWater => {
                if let Some(e) = reply.error() {
                    return Err(SyncError::Fatal(format!(
                        "{} refused the checkpoint write: {e}",
                        self.target_name()
                    )));
                }
            }
            GroupTag::Publish => {
                if reply.is_error() {
                    self.stats.errors += 1;
                }
            }
            // Judged where it is awaited (`try_repair`).
            GroupTag::Repair => {}
        }
        Ok(())
    }

    /// A stream command the target refused (the rest of its batch applied): under
    /// `--on-target-error stop` the end, naming the key; otherwise its keys are queued for a
    /// repair (a keyless command is judged by `run_repairs`).
    fn refused(&mut self, s: &Sent, e: &str, end: u64) -> Result<(), SyncError> {
        let argv = split_frame(&s.frame).unwrap_or_default();
        let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let keys: Vec<Vec<u8>> = keys_of(&args)
            .into_iter()
            .filter(|k| !is_internal_key(k))
            .collect();
        if keys.is_empty() {
            self.refused_keyless
                .push((s.frame.clone(), e.to_string(), end));
            return Ok(());
        }
        let what = crate::resp::describe_command(&s.frame);
        match self.repairs.policy {
            OnTargetError::Stop => Err(SyncError::Fatal(format!(
                "{} refused {what} for key {} (source offset {end}): {e}; stopped (--on-target-error stop): that key differs from the source's on the target and the checkpoint is past the command, so re-copy it (or run with --on-target-error repair) before starting again",
                self.target_name(),
                show_keys(&keys)
            ))),
            OnTargetError::Repair => {
                self.repairs.push(Todo {
                    src_db: s.src_db,
                    db: s.db,
                    keys,
                    end,
                    why: format!("the target refused {what} at source offset {end}: {e}"),
                });
                Ok(())
            }
        }
    }

    fn advance_low_water(&mut self) {
        while let Some((&end, &(n, db))) = self.inflight.first_key_value() {
            if n > 0 {
                break;
            }
            self.inflight.pop_first();
            if end >= self.low_water {
                self.low_water = end;
                self.low_water_db = db;
            }
        }
        if self.inflight.is_empty()
            && self.tx.is_none()
            && self.batch.is_empty()
            && self.processed >= self.low_water
        {
            // Skipped commands after the last batch are "applied" too.
            self.low_water = self.processed;
            self.low_water_db = self.src_db;
        }
        self.asm.progress(self.low_water);
    }

    /// Waits until every batch sent is answered, then records the low-water mark on the
    /// target when it moved (at most once a second unless `force`).
    pub async fn settle(&mut self) -> Result<(), SyncError> {
        self.flush().await?;
        self.target
            .flush_all()
            .await
            .map_err(|e| self.client_err(e))?;
        self.collect()?;
        self.run_repairs().await
    }

    /// Records the low-water mark on the target if it moved and a second has passed (or
    /// `force`). Safe at any time: the low-water mark only claims what is acknowledged.
    pub async fn write_low_water(&mut self, force: bool) -> Result<(), SyncError> {
        // Until the removal of stale keys is over, the checkpoint keeps saying "full sync in
        // progress": a restart before then does the full sync again (see `super::prune`).
        if self.prune.is_some() {
            return Ok(());
        }
        if self.low_water <= self.written_low_water
            || (!force && self.last_low_water_write.elapsed().as_secs() < 1)
        {
            return Ok(());
        }
        self.put_low_water().await
    }

    /// Writes the low-water mark as it stands.
    async fn put_low_water(&mut self) -> Result<(), SyncError> {
        if !self.opts.checkpoints {
            return Ok(());
        }
        let key = self.keys.low_water();
        let cmd = Checkpoint::at(&self.replid, self.low_water, self.low_water_db).set_command(&key);
        self.target
            .submit(Some(&key), cmd, Idempotent::Yes, GroupTag::LowWater)
            .await
            .map_err(|e| self.client_err(e))?;
        // Repair records the stream has passed are of no more use.
        for (k, hdel) in self.repairs.prune(self.low_water, self.cluster) {
            self.target
                .submit(Some(&k), hdel, Idempotent::Yes, GroupTag::LowWater)
                .await
                .map_err(|e| self.client_err(e))?;
        }
        self.written_low_water = self.low_water;
        self.last_low_water_write = Instant::now();
        Ok(())
    }

    /// Commands sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.target.outstanding()
    }

    /// Everything sent is answered and the low-water mark written: what a stop does.
    pub async fn drain(&mut self) -> Result<(), SyncError> {
        self.settle().await?;
        self.write_low_water(true).await?;
        self.settle().await
    }

    /// Whether a source transaction is open (its EXEC not read yet).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }
}

fn parse_db(a: Option<&&[u8]>) -> Option<u64> {
    std::str::from_utf8(a?).ok()?.parse().ok()
}

/// The arguments of an encoded command (for a broadcast).
fn split_frame(frame: &[u8]) -> Option<Vec<Vec<u8>>> {
    let parsed = crate::command::parse_command(frame, 1 << 20, usize::MAX).ok()??;
    Some(
        parsed
            .args
            .iter()
            .map(|r| frame[r.clone()].to_vec())
            .collect(),
    )
}
