//! One replication link: from one source master to the target, for as long as the sync runs.
//!
//! A link runs *sessions*. Each session reads the checkpoint from the target, asks the source
//! for the stream from there (`PSYNC <replid> <offset+1>`), or takes a full sync when the source
//! cannot continue (and says so), then applies the stream. Any fault that a fresh start can cure
//! — the source link dropped, the source failed over, the target restarted or refused a
//! connection — ends the session, and the next one starts again from what the target's
//! checkpoint says, after a bounded backoff. Because the checkpoint is committed with the data,
//! a session never needs to know what the previous one had in flight.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, watch};

use super::checkpoint::{Applied, Checkpoint, CheckpointKeys, KEY_PREFIX};
use super::prune::{KeyHasher, KeyHashes, Prune, Scope};
use super::stream::{Applier, GroupTag};
use super::{SyncError, SyncSettings};
use crate::apply::exec::Exec;
use crate::apply::{apply_rdb, connect_target, prepare_target, ConflictPolicy};
use crate::client::{PipelineOptions, Target, TargetOptions, Topology};
use crate::command::parse_command_needing;
use crate::net::{Backoff, Connection, Endpoint};
use crate::observe::status::{Phase, ShardStatus};
use crate::observe::Progress;
use crate::repl::{start_sync, ReplStream, Resume, SyncStart, Transfer};
use crate::resp::Reply;

/// Most arguments and largest argument accepted in one command of the stream (Redis's own
/// limits: 1M... arguments per multibulk is not capped by Redis, 512 MiB per bulk by default).
pub(crate) const MAX_ARGS: usize = 1 << 24;
pub(crate) const MAX_BULK: usize = 1 << 30;

/// A session that ran this long before failing resets the retry budget.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// One source shard.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// The checkpoint name of this link.
    pub name: String,
    /// The master to start from.
    pub seed: Endpoint,
    /// For a cluster source: the first slot of the shard, by which its master is found again
    /// after a failover.
    pub first_slot: Option<u16>,
    /// Nodes to ask for the cluster's topology.
    pub source_nodes: Vec<Endpoint>,
    /// A cluster source's link: its place among its siblings (see [`super::handover`]).
    pub handover: Option<super::handover::Handle>,
    /// Started while the sync runs, for a master that joined the source cluster: its full sync
    /// replaces what the target holds of its keys (they are the source's, arriving from the
    /// masters that exported them), whatever `--on-conflict` says.
    pub joined: bool,
    /// What `--flush-target` asks of this link's full syncs.
    pub flush: Flush,
}

/// `--flush-target` for one link. The target is shared by every link of a sync, so only a sync
/// of one link may empty it whenever that link full-syncs; the links of a cluster source share
/// one flush before any of them writes (see [`super::run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// No `--flush-target`.
    No,
    /// The only link: FLUSHALL before each of its full syncs.
    EachFullSync,
    /// One of several links. `flushed_at_start`: the target was emptied for all of them before
    /// they started, which covers each link's first full sync (and its retries until one
    /// completes). Any other full sync would need a flush that wipes the other links' keys: it
    /// is refused.
    Shared { flushed_at_start: bool },
}

pub(crate) type Status = Arc<Mutex<ShardStatus>>;

/// Records where a link's source is, from a connection to it: its address, and for a sentinel
/// source the master's name with the address the sentinels gave `conn` (not the first
/// sentinel's, which `Endpoint::address` is).
pub(crate) fn record_source(status: &Status, source: &Endpoint, conn: &Connection) {
    let at = conn.endpoint().address();
    update(status, |s| {
        s.sentinel_master = source.sentinel.as_ref().map(|m| m.master.clone());
        s.source = at.clone();
        s.read_from = at;
    });
}

pub(crate) fn update(status: &Status, f: impl FnOnce(&mut ShardStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

fn log(settings: &SyncSettings, name: &str, msg: &str) {
    if !settings.quiet {
        eprintln!("shake-sync: {name}: {msg}");
    }
}

/// How long a stop (SIGTERM/SIGINT) waits for the target to answer what is in flight and
/// record the final checkpoint: a frozen target must not hold the process (docs/hardening.md).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs sessions until stopped (Ok) or a fault no retry cures (Err).
pub async fn run_link(
    spec: LinkSpec,
    settings: Arc<SyncSettings>,
    status: Status,
    stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    let mut retry = Retry::new();
    let mut full_synced = false;
    loop {
        let started = Instant::now();
        let r = within_stop_grace(
            session(&spec, &settings, &status, stop.clone(), &mut full_synced),
            stop.clone(),
        )
        .await
        .map_err(SyncError::name_credential);
        let e = match r {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if *stop.borrow() {
            // The session failed while it drained: the target never confirmed the end.
            return Err(match e {
                SyncError::Unrecorded(cause) => unrecorded(&spec, &status, &cause),
                e if e.is_transient() => unrecorded(&spec, &status, &e.to_string()),
                e => e,
            });
        }
        let again = RetryLog {
            name: &spec.name,
            quiet: settings.quiet,
            resume_from: "the target's checkpoint",
        };
        if !retry
            .after(e, started, &status, &stop, settings.retry_for, again)
            .await?
        {
            return Ok(());
        }
    }
}

/// How a failed session is named in the log, for [`Retry::after`].
pub(crate) struct RetryLog<'a> {
    pub name: &'a str,
    pub quiet: bool,
    /// Where the next session starts from ("the target's checkpoint").
    pub resume_from: &'a str,
}

/// The retry policy of a link's sessions, shared by every kind of link (onto a target, or into
/// an output: [`super::output`]): which faults are retried, the backoff between attempts, and
/// `--retry-for`, the longest a link keeps failing before it gives up.
pub(crate) struct Retry {
    backoff: Backoff,
    failing_since: Option<Instant>,
}

impl Retry {
    pub(crate) fn new() -> Retry {
        Retry {
            backoff: Backoff::new(u32::MAX, Duration::from_millis(200), Duration::from_secs(5)),
            failing_since: None,
        }
    }

    /// After a session that began at `started` failed with `e`: waits the backoff and returns
    /// true (start the next session), false when a stop came meanwhile, or the error when no
    /// retry cures it or the link has failed for `retry_for`.
    pub(crate) async fn after(
        &mut self,
        e: SyncError,
        started: Instant,
        status: &Status,
        stop: &watch::Receiver<bool>,
        retry_for: Duration,
        who: RetryLog<'_>,
    ) -> Result<bool, SyncError> {
        // A password refused once the link has worked (rotated under a running sync) may be
        // put back: retried like a lost link. At the first start it is a mistake to fix.
        let worked = status
            .lock()
            .map(|s| s.full_syncs + s.partial_syncs > 0)
            .unwrap_or(false);
        let retry = e.is_transient() || (worked && matches!(e, SyncError::Auth { .. }));
        if !retry {
            return Err(e);
        }
        if started.elapsed() >= HEALTHY_SESSION {
            self.failing_since = None;
            self.backoff.reset();
        }
        let since = *self.failing_since.get_or_insert(started);
        if since.elapsed() >= retry_for {
            return Err(SyncError::Fatal(format!(
                "{}: giving up after {}s of failed attempts: {e}",
                who.name,
                since.elapsed().as_secs()
            )));
        }
        let delay = self.backoff.next_delay().unwrap_or(Duration::from_secs(5));
        update(status, |s| {
            s.phase = Phase::Reconnecting;
            s.reconnects += 1;
            s.last_error = Some(e.to_string());
        });
        let left = retry_for.saturating_sub(since.elapsed()).as_secs();
        if !who.quiet {
            eprintln!(
                "shake-sync: {}: {e}; starting again from {} in {delay:?} (retrying for {left}s more)",
                who.name, who.resume_from
            );
        }
        let mut st = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = st.wait_for(|v| *v) => Ok(false),
        }
    }
}

/// Runs a session; once a stop is asked for, gives it [`STOP_GRACE`] to drain and record the
/// checkpoint, then drops it (its connections close; what the target did not commit is sent
/// again by the next start, from the checkpoint it did commit).
pub(crate) async fn within_stop_grace(
    session: impl std::future::Future<Output = Result<(), SyncError>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    tokio::pin!(session);
    tokio::select! {
        r = &mut session => return r,
        _ = stop.wait_for(|v| *v) => {}
    }
    match tokio::time::timeout(STOP_GRACE, session).await {
        Ok(r) => r,
        Err(_) => Err(SyncError::Unrecorded(format!(
            "the target did not answer within {}s",
            STOP_GRACE.as_secs()
        ))),
    }
}

/// The one line of a stop whose final checkpoint the target did not record.
fn unrecorded(spec: &LinkSpec, status: &Status, cause: &str) -> SyncError {
    let at = status.lock().map(|s| s.applied_offset).unwrap_or(0);
    SyncError::Unrecorded(format!(
        "{}: stopped, but the final checkpoint could not be written to the target ({cause}): the next start resumes from the last checkpoint the target recorded (offset {at} or just before) and applies what followed it exactly once; nothing is lost",
        spec.name
    ))
}

/// The source master to replicate from now. For a cluster shard: the master whose replication
/// history holds the one this link last streamed (after a failover the new master keeps the old
/// id as `master_replid2`), whatever slots it owns now — slots move between masters, so a slot
/// does not name a shard. Without a known history: the seed while it is a master, else whoever
/// serves the shard's first slot. With it, the replicas the same topology read lists for that
/// master (`None` for a standalone source: its own INFO lists them; see [`crate::replica`]).
pub(crate) async fn resolve_source(
    spec: &LinkSpec,
    connect: &crate::net::ConnectOptions,
    status: &Status,
) -> Result<(Endpoint, Option<Vec<Endpoint>>), SyncError> {
    let Some(slot) = spec.first_slot else {
        return Ok((spec.seed.clone(), None));
    };
    let known = status.lock().map(|s| s.replid.clone()).unwrap_or_default();
    let mut last = None;
    for node in std::iter::once(&spec.seed).chain(spec.source_nodes.iter()) {
        let topo = match Connection::connect(node, connect).await {
            Ok(mut conn) => match Topology::fetch(&mut conn).await {
                Ok(t) => t,
                Err(e) => {
                    last = Some(e.to_string());
                    continue;
                }
            },
            Err(e) => {
                last = Some(e.to_string());
                continue;
            }
        };
        if !known.is_empty() && known != "?" {
            for m in topo.masters() {
                let Ok(mut c) = Connection::connect(m, connect).await else {
                    continue;
                };
                let Ok(info) = c.info("replication").await else {
                    continue;
                };
                if ["master_replid", "master_replid2"]
                    .iter()
                    .any(|k| info.get(*k) == Some(&known))
                {
                    return Ok((m.clone(), Some(topo.replicas_of(m).to_vec())));
                }
            }
        }
        if topo
            .masters()
            .iter()
            .any(|m| m.address() == spec.seed.address())
        {
            return Ok((
                spec.seed.clone(),
                Some(topo.replicas_of(&spec.seed).to_vec()),
            ));
        }
        if let Some(m) = topo.master_for_slot(slot) {
            // A master that left the cluster leaves its first slot to another master, which
            // has a link of its own: taking it here would sync it twice.
            let taken = spec.handover.as_ref().and_then(|h| {
                h.others_sources()
                    .into_iter()
                    .find(|(_, e)| e.address() == m.address())
            });
            if let Some((other, _)) = taken {
                return Err(SyncError::Target(format!(
                    "{}: the master serving slot {slot} now, {}, is link {other}'s; this link's master {} is no longer a master of the cluster",
                    spec.name,
                    m.address(),
                    spec.seed.address()
                )));
            }
            return Ok((m.clone(), Some(topo.replicas_of(m).to_vec())));
        }
    }
    Err(SyncError::Target(format!(
        "{}: no source node tells who serves slot {slot}: {}",
        spec.name,
        last.unwrap_or_else(|| "no node answered".into())
    )))
}

/// A replica promoted in a failover continues the old master's history up to where it was
/// promoted (`master_replid2`, `second_repl_offset`), so `PSYNC` past that point is refused. A
/// forced failover (`SENTINEL FAILOVER`) leaves the old master taking PINGs and the sentinels'
/// `PUBLISH __sentinel__:hello` for seconds after the promotion, and the link streams them: when
/// the last command this link committed to a standalone target (the checkpoint's domain offset)
/// is before the promotion, the target holds exactly the promoted replica's state there, and the
/// stream continues from that offset instead of a full sync. Returns the resume point, and the
/// offset rewound to when it was.
async fn rewind_to_promotion(
    conn: &mut Connection,
    r: Resume,
    applied: &mut Applied,
) -> (Resume, Option<u64>) {
    let Ok(info) = conn.info("replication").await else {
        return (r, None);
    };
    if info.get("master_replid2") != Some(&r.replid) {
        return (r, None);
    }
    // `PSYNC <replid> <n>` continues for n up to second_repl_offset.
    let Some(promoted) = info
        .get("second_repl_offset")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&p| p > 0)
    else {
        return (r, None);
    };
    let last_data = match applied.domains.get(&super::checkpoint::Domain::Single) {
        Some(&d) if applied.domains.len() == 1 => d,
        _ => return (r, None),
    };
    if r.offset < promoted || last_data >= promoted {
        return (r, None);
    }
    let at = promoted - 1;
    if let Some(lw) = applied.low_water.as_mut() {
        lw.offset = Some(at);
    }
    (
        Resume {
            replid: r.replid,
            offset: at,
        },
        Some(at),
    )
}

pub(crate) async fn connect_stream_target(
    settings: &SyncSettings,
) -> Result<Target<GroupTag>, SyncError> {
    let opts = TargetOptions {
        cluster: settings.target_cluster,
        connect: settings.connect.clone(),
        window: PipelineOptions {
            max_commands: settings.pipeline.max(1),
            ..PipelineOptions::default()
        },
        ..TargetOptions::default()
    };
    let mut target = Target::connect(&settings.target, opts)
        .await
        .map_err(SyncError::from_client)?;
    // After a failover of a sentinel target the session starts again from the checkpoint the
    // new master holds: what the old one acknowledged last may not have reached it.
    target.fail_on_master_change();
    Ok(target)
}

fn as_vec(r: &Reply) -> Vec<Vec<u8>> {
    r.as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x.as_bytes().map(<[u8]>::to_vec))
        .collect()
}

/// Every key matching `pattern` on one node's database `db`.
pub(crate) async fn scan_keys(
    conn: &mut Connection,
    db: u64,
    pattern: &[u8],
) -> Result<Vec<Vec<u8>>, SyncError> {
    if db != 0 {
        let r = conn
            .request(&[&b"SELECT"[..], db.to_string().as_bytes()])
            .await
            .map_err(SyncError::from_net)?;
        if r.is_error() {
            return Ok(Vec::new());
        }
    }
    let mut cursor = b"0".to_vec();
    let mut out = Vec::new();
    loop {
        let r = conn
            .request(&[&b"SCAN"[..], &cursor, b"MATCH", pattern, b"COUNT", b"1000"])
            .await
            .map_err(SyncError::from_net)?;
        if let Some(e) = r.error() {
            let msg = format!("{}: SCAN for checkpoints failed: {e}", conn.endpoint());
            return Err(if is_passing(e) {
                SyncError::Target(msg)
            } else {
                SyncError::Fatal(msg)
            });
        }
        let parts = r.as_array().unwrap_or_default();
        let next = parts
            .first()
            .and_then(|c| c.as_bytes())
            .unwrap_or(b"0")
            .to_vec();
        if let Some(keys) = parts.get(1) {
            out.extend(as_vec(keys));
        }
        if next == b"0" {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Error replies that mean "not now" (a server loading its data, a cluster electing a master).
fn is_passing(e: &str) -> bool {
    [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",
    ]
    .iter()
    .any(|p| e.starts_with(p))
}

/// What the target holds for this link, and the names of the checkpoint keys found.
pub(crate) async fn read_checkpoint(
    settings: &SyncSettings,
    masters: &[Endpoint],
    keys: &CheckpointKeys,
) -> Result<(Applied, Vec<Vec<u8>>), SyncError> {
    let db = if keys.is_cluster() {
        0
    } else {
        settings.stream.checkpoint_db
    };
    let mut applied = Applied::default();
    let mut found = Vec::new();
    let lw_key = keys.low_water();
    for node in masters {
        let mut conn = Connection::connect(node, &settings.connect)
            .await
            .map_err(SyncError::from_net)?;
        let mut names = scan_keys(&mut conn, db, &keys.domain_pattern()).await?;
        names.push(lw_key.clone());
        // Up to one key per slot on a cluster: pipelined, not a round trip each.
        let mut replies = Vec::with_capacity(names.len());
        for chunk in names.chunks(1000) {
            for k in chunk {
                conn.queue(&[&b"GET"[..], k]);
            }
            conn.flush().await.map_err(SyncError::from_net)?;
            for _ in chunk {
                replies.push(conn.read_reply().await.map_err(SyncError::from_net)?);
            }
        }
        for (k, r) in names.into_iter().zip(replies) {
            if let Some(e) = r.error().filter(|e| is_passing(e)) {
                return Err(SyncError::Target(format!(
                    "{node}: reading the checkpoint: {e}"
                )));
            }
            // On a cluster, the low-water key answers MOVED on all masters but its own.
            let Some(v) = r.as_bytes() else { continue };
            let c = Checkpoint::parse(v).map_err(|e| {
                SyncError::Fatal(format!(
                    "{node}: checkpoint key {} holds {e}; delete it to start over with a full sync",
                    crate::text::quote_bytes(&k)
                ))
            })?;
            if k == lw_key {
                applied.low_water = Some(c);
            } else if let (Some(d), Some(o)) = (keys.domain_of(&k), c.offset) {
                applied.domains.insert(d, o);
                if let Some(db) = c.db {
                    applied.domain_dbs.insert(d, db);
                }
            }
            found.push(k);
        }
    }
    Ok((applied, found))
}

/// Whether the source has been written by a shake-sync link that reads from our target (the
/// reverse direction of a disaster-recovery pair) since our checkpoint: then the source's stream
/// holds our target's own writes, and resuming would apply them a second time.
async fn source_fed_by_target(
    settings: &SyncSettings,
    source: &Endpoint,
    masters: &[Endpoint],
) -> Result<bool, SyncError> {
    let mut target_ids = HashSet::new();
    for node in masters {
        let mut conn = Connection::connect(node, &settings.connect)
            .await
            .map_err(SyncError::from_net)?;
        let info = conn
            .info("replication")
            .await
            .map_err(SyncError::from_net)?;
        for k in ["master_replid", "master_replid2"] {
            if let Some(v) = info.get(k).filter(|v| !v.chars().all(|c| c == '0')) {
                target_ids.insert(v.clone());
            }
        }
    }
    let mut conn = Connection::connect(source, &settings.connect)
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    let mut pattern = KEY_PREFIX.to_vec();
    pattern.extend_from_slice(b"checkpoint:*");
    let mut dbs = vec![0];
    if settings.stream.checkpoint_db != 0 {
        dbs.push(settings.stream.checkpoint_db);
    }
    for db in dbs {
        for k in scan_keys(&mut conn, db, &pattern).await? {
            let r = conn
                .request(&[&b"GET"[..], &k])
                .await
                .map_err(SyncError::from_net)?;
            if let Some(c) = r.as_bytes().and_then(|v| Checkpoint::parse(v).ok()) {
                if target_ids.contains(&c.replid) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The databases in which the source holds keys.
async fn source_databases(
    settings: &SyncSettings,
    source: &Endpoint,
) -> Result<Vec<u64>, SyncError> {
    let mut conn = Connection::connect(source, &settings.connect)
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    Ok(conn.databases_with_keys().await)
}

/// The blocking reader the RDB parser pulls from, fed with the transfer's chunks.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    applied: Arc<std::sync::atomic::AtomicU64>,
}

impl ChunkReader {
    /// A reader and the sender [`pump_transfer`] feeds it through; `applied` counts the bytes
    /// the parser has taken.
    pub(crate) fn new(
        applied: Arc<std::sync::atomic::AtomicU64>,
    ) -> (ChunkReader, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        (
            ChunkReader {
                rx,
                cur: Bytes::new(),
                applied,
            },
            tx,
        )
    }
}

/// Feeds a full-sync transfer to `consume` (a future that parses the RDB from the
/// [`ChunkReader`] behind `tx` and yields its result and the RDB's length), counting the bytes in
/// `status` and calling `figures` every [`STATUS_EVERY`] meanwhile. When the parser has read the
/// whole RDB, the transfer's own end is checked (the end mark of a diskless transfer must follow
/// at once), so the command stream can follow. A failure of the transfer is the `Err`; the
/// parser's own result comes back as it was.
pub(crate) async fn pump_transfer<T, E>(
    transfer: &mut Transfer,
    status: &Status,
    tx: mpsc::Sender<Bytes>,
    applied_bytes: &std::sync::atomic::AtomicU64,
    consume: impl std::future::Future<Output = Result<(T, u64), E>>,
    mut figures: impl FnMut(),
) -> Result<Result<(T, u64), E>, SyncError> {
    let diskless = transfer.is_diskless();
    let pump = async {
        let r = async {
            while let Some(chunk) = transfer.next_chunk().await? {
                let n = chunk.len() as u64;
                let applied = applied_bytes.load(std::sync::atomic::Ordering::Relaxed);
                update(status, |s| {
                    s.rdb_bytes_received += n;
                    s.rdb_bytes_applied = applied;
                });
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok::<(), crate::repl::ReplError>(())
        }
        .await;
        drop(tx);
        r
    };
    let mut pump = Box::pin(pump);
    let mut consume = Box::pin(consume);
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut pumped = false;
    let consumed = loop {
        tokio::select! {
            p = &mut pump, if !pumped => {
                p?;
                pumped = true;
            }
            a = &mut consume => break a,
            _ = tick.tick() => figures(),
        }
    };
    drop(consume);
    if !pumped {
        match (&consumed, diskless) {
            // The RDB ended (its parser read the checksum) before the transfer's end mark was
            // seen: the mark must follow at once. Waiting for it would only time out.
            (Ok((_, rdb_len)), true) => {
                drop(pump);
                transfer.expect_end_mark(*rdb_len).await?;
            }
            (Ok(_), false) => pump.await?,
            (Err(_), _) => drop(pump),
        }
    } else {
        drop(pump);
    }
    Ok(consumed)
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        self.applied
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// How often the full sync's figures in `/status` are refreshed while it runs.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Applies a full-sync transfer to the target while it arrives; returns the stream after it.
async fn full_sync(
    spec: &LinkSpec,
    settings: &SyncSettings,
    status: &Status,
    mut transfer: Transfer,
    policy: ConflictPolicy,
    seen: Option<KeyHashes>,
) -> Result<(ReplStream, Option<KeyHashes>), SyncError> {
    let mut target = connect_target(
        &settings.target,
        settings.target_cluster,
        &settings.connect,
        settings.pipeline,
    )
    .await
    .map_err(SyncError::from_apply)?;
    target.fail_on_master_change();
    let mut apply = settings.apply.clone();
    apply.conflict = policy;
    let prepared = prepare_target(&mut target, &apply)
        .await
        .map_err(SyncError::from_apply)?;
    let popts = prepared.apply.parser_options(settings.relaxed_version);
    let applied_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (reader, tx) = ChunkReader::new(applied_bytes.clone());
    let progress = Progress::new(
        "shake-sync",
        transfer.size(),
        settings.quiet || spec.first_slot.is_some(),
        None,
    );
    let mut exec = Exec::new(&mut target, &prepared.apply);
    exec.source = format!("the source (link {})", spec.name);
    exec.seen = seen;
    // The figures of /status move while the RDB is applied, not only at its end: a throttled
    // (--qps) or large full sync takes minutes.
    let keys = exec.written_counter();
    let figures = || {
        let (bytes, written) = (
            applied_bytes.load(std::sync::atomic::Ordering::Relaxed),
            keys.load(std::sync::atomic::Ordering::Relaxed),
        );
        update(status, |s| {
            s.rdb_bytes_applied = bytes;
            s.rdb_keys_applied = written;
        });
    };
    let apply = apply_rdb(&mut exec, Box::new(reader), &prepared, &popts, progress);
    let applied = pump_transfer(&mut transfer, status, tx, &applied_bytes, apply, figures).await?;
    let (plan, bytes) = applied.map_err(SyncError::from_apply)?;
    exec.finish().await.map_err(SyncError::from_apply)?;
    let seen = exec.seen.take();
    let written = exec.stats.written;
    update(status, |s| {
        s.rdb_bytes_applied = bytes;
        s.rdb_keys_applied = written;
    });
    log(
        settings,
        &spec.name,
        &format!(
            "full sync applied: {} keys written ({} transcoded, {} big keys as commands, {} filtered, {} expired skipped, {} conflicts kept), {bytes} RDB bytes",
            written, plan.transcoded, plan.big_keys, plan.filtered, plan.expired, exec.stats.conflicts
        ),
    );
    let (stream, _) = transfer.finish().await?;
    Ok((stream, seen))
}

/// Deletes every checkpoint key of link `name` from the target: the link has ended for good
/// (its master left the source cluster), and a later start must not try to resume it. Returns
/// how many keys were deleted.
pub(crate) async fn forget_checkpoint(
    settings: &SyncSettings,
    name: &str,
) -> Result<usize, SyncError> {
    let mut target = connect_stream_target(settings).await?;
    if !target.is_cluster() {
        target
            .select(settings.stream.checkpoint_db)
            .map_err(SyncError::from_client)?;
    }
    let keys = CheckpointKeys::new(name, target.is_cluster());
    let (_, found) = read_checkpoint(settings, &target.masters(), &keys).await?;
    for k in &found {
        let mut c = Vec::new();
        crate::resp::encode_command(&mut c, &[&b"DEL"[..], k]);
        target
            .submit(
                Some(k),
                c,
                crate::client::Idempotent::Yes,
                GroupTag::LowWater,
            )
            .await
            .map_err(SyncError::from_client)?;
    }
    for (_, r) in target.drain().await.map_err(SyncError::from_client)? {
        if let Some(e) = r.error() {
            return Err(SyncError::Target(format!(
                "{}: cannot delete the checkpoint of link {name}: {e}",
                target.seed()
            )));
        }
    }
    Ok(found.len())
}

/// Deletes this link's checkpoint keys and marks the target as holding this link's data
/// without a resumable offset (a full sync is under way).
async fn reset_checkpoint(
    target: &mut Target<GroupTag>,
    keys: &CheckpointKeys,
    found: &[Vec<u8>],
) -> Result<(), SyncError> {
    let mut cmds: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for k in found {
        let mut c = Vec::new();
        crate::resp::encode_command(&mut c, &[&b"DEL"[..], k]);
        cmds.push((k.clone(), c));
    }
    let lw = keys.low_water();
    let c = Checkpoint::in_progress().set_command(&lw);
    cmds.push((lw, c));
    for (k, c) in cmds {
        target
            .submit(
                Some(&k),
                c,
                crate::client::Idempotent::Yes,
                GroupTag::LowWater,
            )
            .await
            .map_err(SyncError::from_client)?;
    }
    for (_, r) in target.drain().await.map_err(SyncError::from_client)? {
        if let Some(e) = r.error() {
            return Err(SyncError::Fatal(format!(
                "{}: cannot write the checkpoint: {e}",
                target.seed()
            )));
        }
    }
    Ok(())
}

/// FLUSHALL and FUNCTION FLUSH on every master of the target (`--flush-target`).
pub(crate) async fn flush_target(target: &mut Target<GroupTag>) -> Result<(), SyncError> {
    for argv in [&["FLUSHALL"][..], &["FUNCTION", "FLUSH"][..]] {
        for (node, r) in target
            .broadcast(argv)
            .await
            .map_err(SyncError::from_client)?
        {
            // Servers before 7.0 have no functions to flush.
            if let Some(e) = r.error().filter(|e| !e.contains("unknown command")) {
                return Err(SyncError::Fatal(format!(
                    "{node}: {} (--flush-target) failed: {e}",
                    argv.join(" ")
                )));
            }
        }
    }
    Ok(())
}

async fn session(
    spec: &LinkSpec,
    settings: &SyncSettings,
    status: &Status,
    stop: watch::Receiver<bool>,
    full_synced: &mut bool,
) -> Result<(), SyncError> {
    update(status, |s| s.phase = Phase::Handshake);
    // `source` is the master: the link is its, whichever node the stream is read from, and
    // everything but the stream itself (offsets for the lag and the handover barrier, slot
    // ownership, repairs, the checkpoints' history) is asked of it.
    let (source, replicas) = resolve_source(spec, &settings.connect, status).await?;
    if source.sentinel.is_some() {
        // Where the sentinels say the master is now, for the status and the lines below.
        let conn = Connection::connect(&source, &settings.connect)
            .await
            .map_err(|e| SyncError::Link(e.into()))?;
        record_source(status, &source, &conn);
    } else {
        update(status, |s| s.source = source.address());
    }
    if let Some(h) = &spec.handover {
        h.set_source(&source);
    }
    let mut target = connect_stream_target(settings).await?;
    if !target.is_cluster() {
        target
            .select(settings.stream.checkpoint_db)
            .map_err(SyncError::from_client)?;
    }
    let keys = CheckpointKeys::new(&spec.name, target.is_cluster());
    let masters = target.masters();
    let (mut applied, found) = read_checkpoint(settings, &masters, &keys).await?;
    let ours = applied.low_water.is_some();
    if applied.resume_offset().is_some()
        && source_fed_by_target(settings, &source, &masters).await?
    {
        log(
            settings,
            &spec.name,
            "the source holds checkpoints of a sync that reads from this target (the reverse direction ran since): resuming would apply the target's own writes twice, so this is a full sync",
        );
        applied = Applied::default();
    }
    // The source database the resumed stream starts in.
    let mut resume_db = applied.resume_db().unwrap_or(0);
    if applied.resume_offset().is_some() && applied.resume_db().is_none() {
        // An older shake-sync's checkpoint: it does not say which database the stream was in.
        // With keys in database 0 alone (what that version handled right) it is 0; otherwise
        // the only exact way on is a full sync.
        let dbs = source_databases(settings, &source).await?;
        if dbs.iter().all(|&d| d == 0) {
            resume_db = 0;
        } else {
            log(
                settings,
                &spec.name,
                &format!(
                    "the checkpoint was written by an older shake-sync that did not record the source's database, and the source has keys in databases {}: resuming could write commands into the wrong database, so this is a full sync",
                    dbs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            );
            applied = Applied::default();
        }
    }
    let resume = applied
        .resume_offset()
        .map(|(replid, offset)| Resume { replid, offset });

    let read_from = if settings.source_replica {
        choose_reader(spec, settings, status, &source, replicas, resume.as_ref()).await
    } else {
        source.clone()
    };
    let via = if read_from.address() == source.address() {
        source.to_string()
    } else {
        format!("{read_from}, a replica of {source}")
    };
    let mut conn = Connection::connect(&read_from, &settings.connect)
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    if read_from.sentinel.is_some() {
        // The master itself, through the sentinels (a failover may have moved it since).
        record_source(status, &read_from, &conn);
    } else {
        update(status, |s| s.read_from = read_from.address());
    }
    let resume = match resume {
        Some(r) => {
            let (r, rewound) = rewind_to_promotion(&mut conn, r, &mut applied).await;
            if let Some(at) = rewound {
                log(
                    settings,
                    &spec.name,
                    &format!("{via} was promoted at offset {at} of the history this link streamed, and what the link took from the old master after that carried no data (PINGs, sentinels' hellos): continuing from offset {at}"),
                );
            }
            Some(r)
        }
        None => None,
    };
    let started = start_sync(conn, &settings.repl, resume.as_ref()).await?;
    // After a full sync: the removal of the keys the snapshot did not hold (see super::prune).
    let mut prune: Option<Prune> = None;
    let (mut stream, applied, start_db) = match started {
        SyncStart::Full(transfer) => {
            let Some(replid) = transfer.replid().map(str::to_string) else {
                return Err(SyncError::Fatal(format!(
                    "{via} answered with SYNC, without a replication id and offset: shake-sync needs PSYNC (for a renamed PSYNC, name it with --psync-command)"
                )));
            };
            match &resume {
                Some(r) => log(
                    settings,
                    &spec.name,
                    &format!(
                        "the source cannot continue from {} offset {} (its backlog no longer holds it, or its history changed): full sync",
                        r.replid, r.offset
                    ),
                ),
                None => log(settings, &spec.name, &format!("full sync from {via}")),
            }
            if *transfer.channels() != crate::repl::Channels::One {
                log(
                    settings,
                    &spec.name,
                    &format!("full sync over {}", transfer.channels().describe()),
                );
            }
            if let Some(h) = &spec.handover {
                h.full_sync();
            }
            update(status, |s| {
                s.phase = Phase::FullSync;
                s.full_syncs += 1;
                s.replid = replid.clone();
                s.rdb_bytes_received = 0;
                s.rdb_bytes_applied = 0;
                s.rdb_keys_applied = 0;
            });
            match spec.flush {
                Flush::No => {}
                Flush::EachFullSync => {
                    flush_target(&mut target).await?;
                    log(settings, &spec.name, "target flushed (--flush-target)");
                }
                Flush::Shared {
                    flushed_at_start: true,
                } if !*full_synced => {}
                Flush::Shared { .. } => {
                    return Err(SyncError::Fatal(format!(
                        "{}: this link needs a full sync from {source}, and --flush-target cannot empty the target for one link of a cluster source: FLUSHALL would wipe the other links' keys (with several links it empties the target once, before they start, and only when none has a checkpoint to resume from). Either run without --flush-target (this link's full sync replaces its keys and removes, in its slots, the ones the source deleted meanwhile: --prune), or stop, empty the target and start again with --flush-target",
                        spec.name
                    )));
                }
            }
            reset_checkpoint(&mut target, &keys, &found).await?;
            // A target that already holds this link's keys (an earlier full sync, or a restart
            // of an interrupted one) gets them replaced, whatever --on-conflict says: they are
            // ours, only older.
            let policy = if ours || *full_synced || spec.joined {
                ConflictPolicy::Rewrite
            } else {
                settings.apply.conflict
            };
            // Whether this full sync removes what the snapshot does not hold: by default when the
            // target holds this link's data already (see super::prune).
            let prunes = !settings.flush_target && settings.prune.prunes(ours || *full_synced);
            let why = match (&resume, ours || *full_synced) {
                (Some(r), _) => format!(
                    "the source could not continue from {} offset {}",
                    r.replid, r.offset
                ),
                (None, true) => {
                    "this link's data was on the target, without a position to resume from".into()
                }
                (None, false) => "a first full sync, --prune always".into(),
            };
            // A cluster source: the slots whose keys are this master's alone.
            let mut slots = None;
            if prunes && spec.first_slot.is_some() {
                slots = Some(super::prune::owned_slots(&source, &settings.connect).await?);
            }
            let seen = prunes.then(|| KeyHashes::new(KeyHasher::default()));
            // The RDB was forked after every key it holds had arrived: the exporting masters'
            // DELs of the keys it imported go to the target first (see super::handover).
            if let Some(h) = &spec.handover {
                let mut halt = stop.clone();
                tokio::select! {
                    r = h.full_sync_barrier() => r?,
                    _ = halt.wait_for(|v| *v) => {
                        update(status, |s| s.phase = Phase::Stopped);
                        return Ok(());
                    }
                }
            }
            let mut halt = stop.clone();
            let (stream, seen) = tokio::select! {
                r = full_sync(spec, settings, status, transfer, policy, seen) => r?,
                // Dropping the full sync drops its connections; the checkpoint still says "full
                // sync in progress", so the next start does it again, replacing what was written.
                _ = halt.wait_for(|v| *v) => {
                    log(settings, &spec.name, "stopped during the full sync; the next start does the full sync again");
                    update(status, |s| s.phase = Phase::Stopped);
                    return Ok(());
                }
            };
            *full_synced = true;
            let offset = stream.offset();
            // A Valkey dual-channel stream starts in the database the source had selected at the
            // snapshot's offset (it need not select one first); otherwise the source selects
            // one before the first command, and 0 is a placeholder.
            let start_db = stream.start_db().unwrap_or(0);
            if let Some(h) = &spec.handover {
                h.streaming(offset);
            }
            if let Some(seen) = seen {
                if let (Some(s), true) = (slots.as_mut(), spec.first_slot.is_some()) {
                    // Owned at the fork and still at the end of the snapshot.
                    let now = super::prune::owned_slots(&source, &settings.connect).await?;
                    super::prune::intersect(s, &now);
                }
                let scope = Scope::new(
                    settings.stream.filter.clone(),
                    settings.stream.db_map.clone(),
                    slots,
                )
                .with_rename(settings.stream.rename.clone());
                log(
                    settings,
                    &spec.name,
                    &format!(
                        "removing the keys of this link the new snapshot did not hold ({why}){}; the checkpoint is written when that is over",
                        scope
                            .slot_count()
                            .map(|n| format!(", in the {n} slots of this master"))
                            .unwrap_or_default()
                    ),
                );
                prune = Some(Prune::new(
                    scope,
                    seen,
                    target.masters(),
                    settings.connect.clone(),
                    why,
                ));
            } else {
                let lw = keys.low_water();
                let c = Checkpoint::at(&replid, offset, start_db).set_command(&lw);
                target
                    .submit(
                        Some(&lw),
                        c,
                        crate::client::Idempotent::Yes,
                        GroupTag::LowWater,
                    )
                    .await
                    .map_err(SyncError::from_client)?;
                for (_, r) in target.drain().await.map_err(SyncError::from_client)? {
                    if let Some(e) = r.error() {
                        return Err(SyncError::Fatal(format!(
                            "{}: cannot write the checkpoint: {e}",
                            target.seed()
                        )));
                    }
                }
            }
            if let Some((waiting, on_disk)) = stream.waiting() {
                log(
                    settings,
                    &spec.name,
                    &format!(
                        "RDB applied; now the {waiting} bytes of the command stream read meanwhile ({on_disk} of them on disk in --spool-dir), then the live stream"
                    ),
                );
            }
            (
                stream,
                Applied {
                    low_water: Some(Checkpoint::at(&replid, offset, start_db)),
                    ..Applied::default()
                },
                start_db,
            )
        }
        SyncStart::Continue(stream) => {
            log(
                settings,
                &spec.name,
                &format!(
                    "resumed from offset {} in source database {resume_db} (partial resync from {via})",
                    stream.offset()
                ),
            );
            update(status, |s| s.partial_syncs += 1);
            if let Some(h) = &spec.handover {
                h.streaming(stream.offset());
            }
            (stream, applied, resume_db)
        }
    };
    let replid = stream.replid().unwrap_or_default().to_string();
    update(status, |s| {
        s.phase = Phase::Incremental;
        s.replid = replid.clone();
    });
    let start = stream.offset();
    let history = applied.low_water.as_ref().map(|c| c.replid.clone());
    // What the target runs decides what becomes of commands newer than it (crate::compat).
    let caps = crate::compat::TargetCaps::read(&mut target, settings.apply.field_ttls)
        .await
        .map_err(SyncError::from_client)?;
    let mut applier = Applier::new(
        target,
        keys,
        settings.stream.clone(),
        replid.clone(),
        (start, start_db),
        applied,
    )?;
    applier.set_target_caps(caps);
    if spec.first_slot.is_some() {
        applier.attach_source(&source, &settings.connect).await?;
    }
    // Repairs read from this session's source master; records of this history stay in force.
    applier.repairs.set_source(super::repair::RepairSource {
        endpoint: source.clone(),
        connect: settings.connect.clone(),
        apply: crate::apply::ApplyOptions {
            db_map: settings.stream.db_map.clone(),
            ..settings.apply.clone()
        },
    });
    let replids: Vec<&str> = std::iter::once(replid.as_str())
        .chain(history.as_deref())
        .collect();
    applier.load_repairs(&settings.connect, &replids).await?;
    if let Some(h) = &spec.handover {
        applier.set_handover(h.clone());
    }
    if let Some(p) = prune {
        applier.set_prune(p);
    }
    stream_loop(
        spec,
        settings,
        status,
        &source,
        &mut stream,
        &mut applier,
        stop,
    )
    .await
}

/// `--source-replica`: the node this session reads `source`'s stream from (see
/// [`crate::replica`]), said in one line when it differs from the last session's.
async fn choose_reader(
    spec: &LinkSpec,
    settings: &SyncSettings,
    status: &Status,
    source: &Endpoint,
    replicas: Option<Vec<Endpoint>>,
    resume: Option<&Resume>,
) -> Endpoint {
    let choice =
        crate::replica::choose(source, replicas.as_deref(), resume, &settings.connect).await;
    // A sentinel source's address is where the sentinels said the master is.
    let master = status
        .lock()
        .map(|s| s.source_shown())
        .unwrap_or_else(|_| source.address());
    let (node, line) = match choice {
        crate::replica::Choice::Replica { node, offset } => {
            let line = format!(
                "replicating from {}, a replica of the master {} (at offset {offset}; --source-replica)",
                node.address(),
                master
            );
            (node, line)
        }
        crate::replica::Choice::Master { why } => (
            source.clone(),
            format!(
                "no healthy replica ({why}); replicating from the master {}",
                master
            ),
        ),
        crate::replica::Choice::GivenIsReplica => (
            source.clone(),
            format!(
                "{} is itself a replica: replicating from it as given (--source-replica)",
                master
            ),
        ),
    };
    let before = status
        .lock()
        .map(|s| s.read_from.clone())
        .unwrap_or_default();
    if before != node.address() {
        log(settings, &spec.name, &line);
    }
    node
}

/// Polls the source's own offset for the lag figures (a separate connection; failures only
/// leave the figure stale).
struct OffsetProbe {
    conn: Option<Connection>,
    last: Instant,
}

impl OffsetProbe {
    async fn poll(&mut self, source: &Endpoint, settings: &SyncSettings) -> Option<u64> {
        if self.last.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.last = Instant::now();
        if self.conn.is_none() {
            self.conn = Connection::connect(source, &settings.connect).await.ok();
        }
        let conn = self.conn.as_mut()?;
        match conn.info("replication").await {
            Ok(info) => info.get("master_repl_offset").and_then(|v| v.parse().ok()),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }
}

async fn stream_loop(
    spec: &LinkSpec,
    settings: &SyncSettings,
    status: &Status,
    source: &Endpoint,
    stream: &mut ReplStream,
    applier: &mut Applier,
    stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    stream.stop_on(stop.clone());
    let mut end = stream.offset();
    let mut probe = OffsetProbe {
        conn: None,
        last: Instant::now() - Duration::from_secs(2),
    };
    let mut source_offset = end;
    // Counters of earlier sessions, so the figures add up over reconnects.
    let (base_applied, base_errors, base_repaired, base_pruned) = status
        .lock()
        .map(|s| (s.commands_applied, s.errors, s.repaired_keys, s.pruned_keys))
        .unwrap_or((0, 0, 0, 0));
    // When the oldest byte not yet applied arrived.
    let mut pending_since: Option<Instant> = None;
    loop {
        let mut ack = false;
        loop {
            let mut need = 0;
            let parsed = parse_command_needing(&stream.buffer()[..], MAX_ARGS, MAX_BULK, &mut need)
                .map_err(|e| {
                    SyncError::Source(format!(
                        "{source}: the command stream at offset {} is not valid: {e}",
                        end + 1
                    ))
                })?;
            let Some(p) = parsed else {
                // A long command (a SET of 100 MiB) is held once, in a buffer sized for it at
                // once: grown step by step it would be copied and over-allocated on the way.
                let buf = stream.buffer();
                if need > buf.capacity() && need - buf.len() > 1 << 20 {
                    buf.reserve(need - buf.len());
                }
                break;
            };
            let frame = stream.buffer().split_to(p.len).freeze();
            end += p.len as u64;
            pending_since.get_or_insert_with(Instant::now);
            ack |= applier.process(frame, &p.args, end).await?;
            if applier.batch_full() {
                applier.flush().await?;
            }
        }
        if let Some(done) = applier.prune_turn().await? {
            log(settings, &spec.name, &done);
        }
        applier.flush().await?;
        applier.collect()?;
        if applier.outstanding() > 0 && stream.buffer().is_empty() {
            // Nothing more to read right now: let the target catch up, so the checkpoint and the
            // ACK can move.
            applier.settle().await?;
        }
        applier.write_low_water(false).await?;
        let lw = applier.low_water();
        if let Some(h) = &spec.handover {
            h.applied(lw);
        }
        if lw > stream.offset() {
            stream.advance(lw - stream.offset());
        }
        if ack {
            stream.ack().await?;
        }
        if lw >= end {
            pending_since = None;
        }
        if let Some(o) = probe.poll(source, settings).await {
            source_offset = o;
        }
        source_offset = source_offset.max(end);
        let st = applier.stats.clone();
        update(status, |s| {
            s.received_offset = end;
            s.applied_offset = lw;
            s.source_offset = source_offset;
            s.lag_bytes = source_offset.saturating_sub(lw);
            s.lag_ms = pending_since.map_or(0, |t| t.elapsed().as_millis() as u64);
            s.commands_applied = base_applied + st.applied;
            s.errors = base_errors + st.errors;
            s.repaired_keys = base_repaired + applier.repairs.repaired;
            s.pruned_keys = base_pruned + st.pruned;
            if st.last_error.is_some() {
                s.last_error = st.last_error.clone();
            }
        });
        if *stop.borrow() {
            break;
        }
        // While stale keys are being removed, the loop turns even when the source is quiet.
        let filled = if applier.pruning() {
            stream.fill_within(Duration::from_millis(1)).await?
        } else {
            Some(stream.fill().await?)
        };
        if filled == Some(0) {
            break;
        }
    }
    // Stopping: what is in flight is answered, the checkpoint recorded, the source told.
    applier.drain().await?;
    let lw = applier.low_water();
    if lw > stream.offset() {
        stream.advance(lw - stream.offset());
    }
    let _ = stream.ack().await;
    update(status, |s| {
        s.applied_offset = lw;
        s.phase = Phase::Stopped;
        s.repaired_keys = base_repaired + applier.repairs.repaired;
    });
    if applier.pruning() {
        log(
            settings,
            &spec.name,
            "stopped before the keys the source deleted were all removed: the checkpoint still says the full sync is in progress, so the next start does it again",
        );
    }
    log(
        settings,
        &spec.name,
        &format!(
            "stopped at offset {lw}{}",
            if applier.in_transaction() {
                " (a source transaction still open was left for the next start)"
            } else {
                ""
            }
        ),
    );
    Ok(())
}
