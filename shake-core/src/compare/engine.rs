//! The live half of the comparison: connections to both sides, SCAN producers, readers that
//! compare batches of keys with pipelined commands, the chunked comparison of big values, the
//! extra-key pass and the function libraries. The RDB source ([`super::rdbsrc`]) feeds the same
//! readers' target half.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::model::*;
use super::{
    rdbsrc, CompareError, CompareOptions, Diff, DiffKind, Mode, Recheck, SourceSpec, Subject,
    CHUNK_BYTES, CHUNK_ELEMENTS, SMALL_ELEMENTS, SMALL_STRING_BYTES,
};
use crate::apply::DbMap;
use crate::client::{slot_of, ClientError, Idempotent, Target, TargetOptions};
use crate::net::{Connection, Endpoint};
use crate::observe::Progress;
use crate::rdb::ValueType;
use crate::resp::{encode_command, Reply};

/// What is known about one side, for messages.
#[derive(Debug, Clone)]
pub struct SideInfo {
    pub seed: Endpoint,
    pub cluster: bool,
    pub masters: Vec<Endpoint>,
    /// The source under `--shard`: per hash slot, whether a master of this shard serves it
    /// (target keys of the other slots are the other shards' to look up). `None`: every slot.
    pub share: Option<Arc<Vec<bool>>>,
}

/// Which side an error or a command belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

impl Side {
    fn err(self, e: impl Into<ClientError>) -> CompareError {
        match self {
            Side::Source => CompareError::Source(e.into()),
            Side::Target => CompareError::Target(e.into()),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---- the plan: what to compare, decided once ----------------------------------------------------

pub(crate) struct Plan {
    pub opts: Arc<CompareOptions>,
    pub source: Option<SideInfo>,
    pub target: SideInfo,
    pub db_map: DbMap,
    /// Source databases compared (live source).
    pub forward_dbs: Vec<u64>,
    /// Target databases scanned for extra keys, each with the source databases mapped to it.
    pub backward: BTreeMap<u64, Vec<u64>>,
    pub total_keys: u64,
    /// With an RDB source: the file's keys as fingerprints, from the first round.
    pub fingerprints: Mutex<Option<Arc<HashSet<u64>>>>,
    pub hasher: RandomState,
}

/// Counters a round's tasks update.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub source_keys: AtomicU64,
    pub target_keys: AtomicU64,
}

fn target_options(connect: &crate::net::ConnectOptions, cluster: Option<bool>) -> TargetOptions {
    TargetOptions {
        cluster,
        connect: connect.clone(),
        ..TargetOptions::default()
    }
}

/// `INFO keyspace` of every master: database -> keys.
async fn keyspace(t: &mut Target<u32>, side: Side) -> Result<BTreeMap<u64, u64>, CompareError> {
    let mut out = BTreeMap::new();
    for (ep, r) in t
        .broadcast(&["INFO", "keyspace"])
        .await
        .map_err(|e| side.err(e))?
    {
        let text = match (&r, r.as_text()) {
            (Reply::Error(e), _) => {
                return Err(CompareError::Setup(format!(
                    "{} {ep}: INFO keyspace failed: {e}",
                    side.name()
                )))
            }
            (_, t) => t.unwrap_or_default(),
        };
        for (name, v) in crate::net::parse_info(&text) {
            let Some(db) = name.strip_prefix("db").and_then(|d| d.parse::<u64>().ok()) else {
                continue;
            };
            let keys = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            *out.entry(db).or_insert(0) += keys;
        }
    }
    Ok(out)
}

impl Plan {
    pub async fn prepare(opts: Arc<CompareOptions>) -> Result<Plan, CompareError> {
        let mut seed = opts.target.clone();
        seed.db = None;
        let mut t: Target<u32> =
            Target::connect(&seed, target_options(&opts.connect, opts.target_cluster))
                .await
                .map_err(|e| Side::Target.err(e))?;
        let target = SideInfo {
            seed: seed.clone(),
            cluster: t.is_cluster(),
            masters: t.masters(),
            share: None,
        };
        let tgt_space = keyspace(&mut t, Side::Target).await?;
        let mut db_map = opts.db_map.clone();
        if let (Some(db), true) = (opts.target.db, db_map.is_empty()) {
            db_map = DbMap::parse(&[format!("*={db}")]).map_err(CompareError::Setup)?;
        }
        let mut total = tgt_space.values().sum::<u64>();
        let (source, src_space, src_db) = match &opts.source {
            SourceSpec::Live { endpoint, cluster } => {
                let mut seed = endpoint.clone();
                seed.db = None;
                let mut s: Target<u32> =
                    Target::connect(&seed, target_options(&opts.connect, *cluster))
                        .await
                        .map_err(|e| Side::Source.err(e))?;
                let space = keyspace(&mut s, Side::Source).await?;
                let shard = opts.shard;
                let (masters, share) = if shard.is_whole() {
                    (s.masters(), None)
                } else if s.is_cluster() {
                    let topo = s.topology();
                    let masters = topo.share(shard);
                    let slots = (0..crate::client::SLOTS as u16)
                        .map(|slot| {
                            topo.master_for_slot(slot)
                                .is_some_and(|m| masters.contains(m))
                        })
                        .collect();
                    (masters, Some(Arc::new(slots)))
                } else {
                    let ours = shard.takes(None);
                    let masters = if ours { s.masters() } else { Vec::new() };
                    (masters, Some(Arc::new(vec![ours; crate::client::SLOTS])))
                };
                if masters.is_empty() && !opts.quiet {
                    eprintln!("shake-check: {}", shard.nothing_to_do(s.masters().len()));
                }
                let info = SideInfo {
                    seed,
                    cluster: s.is_cluster(),
                    masters,
                    share,
                };
                if let Some(d) = endpoint.db.filter(|&d| !s.has_db(d)) {
                    return Err(CompareError::Setup(format!(
                        "source: {}",
                        crate::client::cluster_db_message(
                            &endpoint.to_string(),
                            d,
                            s.cluster_databases().unwrap_or(1)
                        )
                    )));
                }
                (Some(info), space, endpoint.db)
            }
            SourceSpec::Rdb(path) if !opts.shard.is_whole() => {
                return Err(CompareError::Setup(format!(
                    "--shard {}: an RDB file as the source has no masters to share; check it whole",
                    opts.shard
                )));
            }
            SourceSpec::Rdb(path) => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    CompareError::Rdb(format!("cannot read {}: {e}", path.display()))
                })?;
                if !meta.is_file() {
                    return Err(CompareError::Rdb(format!(
                        "{} is not a file",
                        path.display()
                    )));
                }
                (None, BTreeMap::new(), None)
            }
        };
        total += src_space.values().sum::<u64>();
        let allowed = |d: &u64| opts.filter.db_allowed(*d);
        // A cluster reports its databases in INFO keyspace like a standalone server (only db0
        // but on Valkey 9 with `cluster-databases`).
        let forward_dbs: Vec<u64> = if let Some(d) = src_db {
            vec![d]
        } else {
            src_space.keys().copied().collect()
        }
        .into_iter()
        .filter(allowed)
        .collect();
        // Source databases whose keys may sit on the target: the named ones, else every number
        // up to the highest database either side uses.
        let candidates: Vec<u64> = if let Some(d) = src_db {
            vec![d]
        } else {
            let top = src_space
                .keys()
                .chain(tgt_space.keys())
                .copied()
                .max()
                .unwrap_or(0);
            (0..=top).collect()
        }
        .into_iter()
        .filter(allowed)
        .collect();
        let mut backward: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for s in candidates {
            let Some(t) = db_map.map(s) else { continue };
            if tgt_space.contains_key(&t) {
                backward.entry(t).or_default().push(s);
            }
        }
        Ok(Plan {
            opts,
            source,
            target,
            db_map,
            forward_dbs,
            backward,
            total_keys: total,
            fingerprints: Mutex::new(None),
            hasher: RandomState::new(),
        })
    }

    /// One round: everything (`recheck` None) or the keys that differed before.
    pub async fn run_round(
        &self,
        recheck: Option<&Recheck>,
        sink: &mut (dyn FnMut(Diff) + Send),
    ) -> Result<Arc<Counts>, CompareError> {
        let opts = &self.opts;
        let counts = Arc::new(Counts::default());
        let (diff_tx, mut diff_rx) = mpsc::channel::<Diff>(1024);
        let readers =
            opts.parallel.max(1) * self.source.as_ref().map_or(1, |s| s.masters.len().max(1));
        let (job_tx, job_rx) = mpsc::channel::<Job>(readers * 2);
        let ctx = Arc::new(Ctx {
            opts: opts.clone(),
            db_map: self.db_map.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            backward: self.backward.clone(),
            fingerprints: {
                let cell = OnceLock::new();
                if let Some(f) = self.fingerprints.lock().ok().and_then(|f| f.clone()) {
                    let _ = cell.set(f);
                }
                cell
            },
            hasher: self.hasher.clone(),
            diffs: diff_tx,
            counts: counts.clone(),
            pacer: Pacer::new(opts.qps),
            no_smismember: AtomicBool::new(false),
            no_zmscore: AtomicBool::new(false),
        });
        let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
        let mut tasks: JoinSet<Result<Option<Arc<HashSet<u64>>>, CompareError>> = JoinSet::new();
        for _ in 0..readers {
            let (ctx, rx) = (ctx.clone(), job_rx.clone());
            tasks.spawn(async move { reader(ctx, rx).await.map(|_| None) });
        }
        let everything = recheck.is_none();
        match &opts.source {
            SourceSpec::Live { .. } => {
                let Some(src) = self.source.clone() else {
                    return Err(CompareError::Setup(
                        "the live source was not prepared before the round".into(),
                    ));
                };
                match recheck {
                    None => {
                        for &db in &self.forward_dbs {
                            for m in &src.masters {
                                let (ctx, tx, m) = (ctx.clone(), job_tx.clone(), m.clone());
                                tasks.spawn(async move {
                                    scan(ctx, Side::Source, m, db, tx).await.map(|_| None)
                                });
                            }
                        }
                        self.spawn_backward_scans(&ctx, &job_tx, &mut tasks);
                    }
                    Some(r) => spawn_rechecks(r, &job_tx, &mut tasks),
                }
            }
            SourceSpec::Rdb(path) => {
                // The extra-key pass needs the file's keys, so it follows the file pass.
                let only = recheck.map(|r| Arc::new(r.forward.iter().cloned().collect()));
                let (ctx2, tx, path) = (ctx.clone(), job_tx.clone(), path.clone());
                let extras = recheck.map(|r| r.extra.clone());
                let scans = self.backward.clone();
                let functions = everything || recheck.is_some_and(|r| r.functions);
                tasks.spawn(async move {
                    let fps = rdbsrc::file_pass(ctx2.clone(), &path, only, functions).await?;
                    let fps = fps.map(Arc::new);
                    if let Some(f) = &fps {
                        let _ = ctx2.fingerprints.set(f.clone());
                    }
                    let ctx3 = ctx2;
                    match extras {
                        None => {
                            let mut inner = JoinSet::new();
                            for (&tdb, _) in scans.iter() {
                                for m in &ctx3.target.masters {
                                    let (c, t, m) = (ctx3.clone(), tx.clone(), m.clone());
                                    inner.spawn(
                                        async move { scan(c, Side::Target, m, tdb, t).await },
                                    );
                                }
                            }
                            while let Some(r) = inner.join_next().await {
                                r.map_err(|e| CompareError::Setup(format!("a task failed: {e}")))??;
                            }
                        }
                        Some(extra) => send_rechecks(&extra, true, &tx).await,
                    }
                    Ok(fps)
                });
            }
        }
        // Functions are the same on every master: shard 0 compares them, not every shard.
        if matches!(opts.source, SourceSpec::Live { .. })
            && opts.shard.index == 0
            && (everything || recheck.is_some_and(|r| r.functions))
        {
            let ctx = ctx.clone();
            tasks.spawn(async move { compare_functions(&ctx, None).await.map(|_| None) });
        }
        drop(job_tx);
        drop(ctx);
        let mut progress = Progress::keys(
            "shake-check",
            everything.then_some(self.total_keys),
            opts.quiet,
            opts.log_every,
        );
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut fingerprints = None;
        let result: Result<(), CompareError> = async {
            loop {
                tokio::select! {
                    d = diff_rx.recv() => match d {
                        Some(d) => sink(d),
                        None => break,
                    },
                    Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                        let r = r.map_err(|e| CompareError::Setup(format!("a task failed: {e}")))??;
                        if r.is_some() {
                            fingerprints = r;
                        }
                    }
                    _ = tick.tick() => {
                        let n = counts.source_keys.load(Ordering::Relaxed)
                            + counts.target_keys.load(Ordering::Relaxed);
                        progress.update_now(n, n);
                    }
                }
            }
            while let Some(r) = tasks.join_next().await {
                let r = r.map_err(|e| CompareError::Setup(format!("a task failed: {e}")))??;
                if r.is_some() {
                    fingerprints = r;
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            tasks.abort_all();
        }
        let n =
            counts.source_keys.load(Ordering::Relaxed) + counts.target_keys.load(Ordering::Relaxed);
        progress.finish(n, n);
        result?;
        if let Some(f) = fingerprints {
            if let Ok(mut slot) = self.fingerprints.lock() {
                *slot = Some(f);
            }
        }
        Ok(counts)
    }

    fn spawn_backward_scans(
        &self,
        ctx: &Arc<Ctx>,
        job_tx: &mpsc::Sender<Job>,
        tasks: &mut JoinSet<Result<Option<Arc<HashSet<u64>>>, CompareError>>,
    ) {
        for &tdb in self.backward.keys() {
            for m in &self.target.masters {
                let (ctx, tx, m) = (ctx.clone(), job_tx.clone(), m.clone());
                tasks.spawn(async move { scan(ctx, Side::Target, m, tdb, tx).await.map(|_| None) });
            }
        }
    }
}

fn spawn_rechecks(
    r: &Recheck,
    job_tx: &mpsc::Sender<Job>,
    tasks: &mut JoinSet<Result<Option<Arc<HashSet<u64>>>, CompareError>>,
) {
    let (forward, extra, tx) = (r.forward.clone(), r.extra.clone(), job_tx.clone());
    tasks.spawn(async move {
        send_rechecks(&forward, false, &tx).await;
        send_rechecks(&extra, true, &tx).await;
        Ok(None)
    });
}

/// Re-check jobs for keys grouped by database, in batches.
async fn send_rechecks(keys: &BTreeSet<(u64, Bytes)>, extra: bool, tx: &mpsc::Sender<Job>) {
    let mut by_db: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
    for (db, k) in keys {
        by_db.entry(*db).or_default().push(k.clone());
    }
    for (db, keys) in by_db {
        for chunk in keys.chunks(256) {
            let job = if extra {
                Job::Backward {
                    db,
                    keys: chunk.to_vec(),
                    recheck: true,
                }
            } else {
                Job::Forward {
                    db,
                    keys: chunk.to_vec(),
                }
            };
            if tx.send(job).await.is_err() {
                return;
            }
        }
    }
}

// ---- shared context ----------------------------------------------------------------------------

pub(crate) struct Ctx {
    pub opts: Arc<CompareOptions>,
    pub db_map: DbMap,
    pub source: Option<SideInfo>,
    pub target: SideInfo,
    pub backward: BTreeMap<u64, Vec<u64>>,
    /// With an RDB source: the file's keys, once the file pass of the first round is done.
    pub fingerprints: OnceLock<Arc<HashSet<u64>>>,
    pub hasher: RandomState,
    pub diffs: mpsc::Sender<Diff>,
    pub counts: Arc<Counts>,
    pub pacer: Pacer,
    no_smismember: AtomicBool,
    no_zmscore: AtomicBool,
}

impl Ctx {
    pub fn fingerprint(&self, tdb: u64, key: &[u8]) -> u64 {
        self.hasher.hash_one((tdb, key))
    }

    pub fn target_db(&self, sdb: u64) -> u64 {
        self.db_map.map(sdb).unwrap_or(sdb)
    }

    /// Commands written for a source key, given the key's target name (`--rename-prefix`):
    /// every key position by the command table, and the key they are routed by.
    pub fn to_target(
        &self,
        cmds: Vec<(Bytes, Bytes)>,
    ) -> Result<Vec<(Bytes, Bytes)>, CompareError> {
        let rename = &self.opts.rename;
        if rename.is_empty() {
            return Ok(cmds);
        }
        let mut out = Vec::with_capacity(cmds.len());
        for (key, c) in cmds {
            let bad = |e: String| {
                CompareError::Setup(format!(
                    "--rename-prefix: key {}: {e}",
                    crate::text::quote_bytes(&key)
                ))
            };
            let name = Bytes::from(rename.key(&key).map_err(bad)?.into_owned());
            let parsed = crate::command::parse_command(&c, usize::MAX, usize::MAX)
                .ok()
                .flatten()
                .ok_or_else(|| bad("a command of the comparison did not parse".into()))?;
            let argv = parsed.argv(&c);
            let idx = crate::command::command_keys(&argv).map_err(bad)?;
            let c = match rename.command(&argv, &idx).map_err(bad)? {
                Some(args) => {
                    let mut v = Vec::with_capacity(c.len() + name.len());
                    encode_command(&mut v, &args);
                    Bytes::from(v)
                }
                None => c,
            };
            out.push((name, c));
        }
        Ok(out)
    }

    pub async fn emit(&self, subject: Subject, kind: DiffKind, m: Mismatch) {
        let _ = self
            .diffs
            .send(Diff {
                subject,
                kind,
                source: m.0,
                target: m.1,
            })
            .await;
    }
}

/// `--qps`: commands are paced so that, since the start, no more than `qps` per second went out.
pub(crate) struct Pacer {
    qps: u64,
    state: Mutex<(Instant, u64)>,
}

impl Pacer {
    fn new(qps: u64) -> Self {
        Pacer {
            qps,
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    pub async fn take(&self, commands: usize) {
        if self.qps == 0 {
            return;
        }
        let due = match self.state.lock() {
            Ok(mut s) => {
                s.1 += commands as u64;
                s.0 + Duration::from_secs_f64(s.1 as f64 / self.qps as f64)
            }
            Err(_) => return,
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

// ---- jobs and producers ---------------------------------------------------------------------------

pub(crate) enum Job {
    /// Source keys of source database `db`, compared on the target.
    Forward { db: u64, keys: Vec<Bytes> },
    /// Target keys of target database `db`, looked up on the source. `recheck`: the keys come
    /// from an earlier round, so whether they still exist on the target is asked too.
    Backward {
        db: u64,
        keys: Vec<Bytes>,
        recheck: bool,
    },
}

/// SCANs database `db` of one node, sending the keys worth comparing in batches.
async fn scan(
    ctx: Arc<Ctx>,
    side: Side,
    node: Endpoint,
    db: u64,
    jobs: mpsc::Sender<Job>,
) -> Result<(), CompareError> {
    let opts = &ctx.opts;
    let mut conn = Connection::connect(&node, &opts.connect)
        .await
        .map_err(|e| side.err(e))?;
    if db != 0 {
        conn.request_ok(&["SELECT", &db.to_string()])
            .await
            .map_err(|e| side.err(e))?;
    }
    let count = opts.scan_count.max(1).to_string();
    let mut cursor = b"0".to_vec();
    let mut batch = Vec::with_capacity(opts.scan_count + 64);
    loop {
        ctx.pacer.take(1).await;
        let r = conn
            .request_ok(&[&b"SCAN"[..], &cursor, b"COUNT", count.as_bytes()])
            .await
            .map_err(|e| side.err(e))?;
        let (next, page) = scan_page(&r).ok_or_else(|| {
            CompareError::Setup(format!(
                "{} {node}: SCAN returned an unexpected reply: {r}",
                side.name()
            ))
        })?;
        // Under --shard, a target key is looked up by the shard whose source master serves
        // its slot.
        let share = match side {
            Side::Target => ctx.source.as_ref().and_then(|s| s.share.clone()),
            Side::Source => None,
        };
        batch.extend(page.into_iter().filter(|k| match side {
            Side::Source => opts.wants_key(k),
            Side::Target => {
                opts.wants_target_key(k)
                    && share.as_ref().is_none_or(|m| {
                        // The shard of the source name(s) it comes from.
                        let names = opts.source_names(k);
                        if names.is_empty() {
                            m[crate::client::slot_of(k) as usize]
                        } else {
                            names.iter().any(|n| m[crate::client::slot_of(n) as usize])
                        }
                    })
            }
        }));
        if batch.len() >= opts.scan_count || (next == 0 && !batch.is_empty()) {
            let keys = std::mem::replace(&mut batch, Vec::with_capacity(opts.scan_count + 64));
            let job = match side {
                Side::Source => Job::Forward { db, keys },
                Side::Target => Job::Backward {
                    db,
                    keys,
                    recheck: false,
                },
            };
            if jobs.send(job).await.is_err() {
                return Ok(());
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next.to_string().into_bytes();
    }
}

async fn reader(
    ctx: Arc<Ctx>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) -> Result<(), CompareError> {
    let mut w: Option<Reader> = None;
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { return Ok(()) };
        if w.is_none() {
            w = Some(Reader::connect(ctx.clone()).await?);
        }
        let Some(w) = w.as_mut() else { continue };
        match job {
            Job::Forward { db, keys } => w.forward(db, keys).await?,
            Job::Backward { db, keys, recheck } => w.backward(db, keys, recheck).await?,
        }
    }
}

// ---- one key's state on one side -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Absent,
    Is(ValueType),
    /// A module type, by the name TYPE gives.
    Other(Bytes),
}

impl Ty {
    pub fn from_reply(r: &Reply) -> Option<Ty> {
        let b = r.as_bytes()?;
        Some(match b {
            b"none" => Ty::Absent,
            _ => match std::str::from_utf8(b).ok().and_then(ValueType::parse) {
                Some(t) => Ty::Is(t),
                None => Ty::Other(Bytes::copy_from_slice(b)),
            },
        })
    }

    fn name(&self) -> String {
        match self {
            Ty::Absent => "absent".into(),
            Ty::Is(t) => t.as_str().into(),
            Ty::Other(n) => String::from_utf8_lossy(n).into_owned(),
        }
    }

    fn same(&self, o: &Ty) -> bool {
        match (self, o) {
            (Ty::Is(ValueType::Module), Ty::Other(_))
            | (Ty::Other(_), Ty::Is(ValueType::Module)) => true,
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SideKey {
    pub ty: Ty,
    /// Absolute deadline in Unix ms.
    pub expire_at: Option<i64>,
    pub len: Option<u64>,
    /// The complete value, when small.
    pub value: Option<Value>,
    pub info: Option<StreamInfo>,
    /// Too big to have been fetched whole: compared in chunks.
    pub big: bool,
    /// The key changed type while it was read (WRONGTYPE).
    pub trouble: Option<String>,
}

impl SideKey {
    pub fn new(ty: Ty, expire_at: Option<i64>) -> Self {
        SideKey {
            ty,
            expire_at,
            len: None,
            value: None,
            info: None,
            big: false,
            trouble: None,
        }
    }

    fn describe(&self, now: i64) -> String {
        match self.expire_at {
            Some(at) => format!("{}, ttl {} ms", self.ty.name(), at - now),
            None => self.ty.name(),
        }
    }
}

pub(crate) enum Verdict {
    Same,
    Differs(DiffKind, Mismatch),
    /// Equal so far; the value must be compared in chunks (then the TTL).
    Big,
}

fn ttl_text(at: Option<i64>, now: i64) -> String {
    match at {
        Some(at) => format!("ttl {} ms", at - now),
        None => "no ttl".into(),
    }
}

pub(crate) fn judge_ttl(s: &SideKey, t: &SideKey, tol: i64, now: i64) -> Verdict {
    match (s.expire_at, t.expire_at) {
        (None, None) => Verdict::Same,
        (Some(a), Some(b)) if (a - b).abs() <= tol => Verdict::Same,
        (a, b) => Verdict::Differs(DiffKind::Ttl, (ttl_text(a, now), ttl_text(b, now))),
    }
}

pub(crate) fn judge(mode: Mode, tol: i64, now: i64, s: &SideKey, t: &SideKey) -> Verdict {
    match (&s.ty, &t.ty) {
        (Ty::Absent, Ty::Absent) => return Verdict::Same,
        (Ty::Absent, _) => {
            return Verdict::Differs(DiffKind::Extra, ("absent".into(), t.describe(now)))
        }
        (_, Ty::Absent) => {
            return Verdict::Differs(DiffKind::Missing, (s.describe(now), "absent".into()))
        }
        (a, b) if !a.same(b) => {
            return Verdict::Differs(DiffKind::Type, (a.name(), b.name()));
        }
        _ => {}
    }
    if mode >= Mode::Length {
        if let (Some(a), Some(b)) = (s.len, t.len) {
            if a != b {
                return Verdict::Differs(DiffKind::Value, lengths(a, b));
            }
        }
    }
    if mode == Mode::Full {
        if let Some(x) = s.trouble.as_ref().or(t.trouble.as_ref()) {
            return Verdict::Differs(DiffKind::Value, (x.clone(), x.clone()));
        }
        if let (Some(a), Some(b)) = (&s.info, &t.info) {
            if let Some(m) = compare_stream_info(a, b) {
                return Verdict::Differs(DiffKind::Value, m);
            }
        }
        if s.big || t.big {
            return Verdict::Big;
        }
        if let (Some(a), Some(b)) = (&s.value, &t.value) {
            if let Some(m) = compare_values(a, b) {
                return Verdict::Differs(DiffKind::Value, m);
            }
        }
    }
    judge_ttl(s, t, tol, now)
}

// ---- commands ----------------------------------------------------------------------------------------

pub(crate) fn cmd(args: &[&[u8]]) -> Bytes {
    let mut v = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    encode_command(&mut v, args);
    v.into()
}

fn num(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// The commands that read a key's length (and, in full mode, its small value) once its type is
/// known. Returns how many were queued.
pub(crate) fn phase_b(
    out: &mut Vec<(Bytes, Bytes)>,
    key: &Bytes,
    ty: ValueType,
    mode: Mode,
) -> usize {
    let before = out.len();
    let w = num(SMALL_ELEMENTS as u64);
    let wm1 = num(SMALL_ELEMENTS as u64 - 1);
    let k: &[u8] = key;
    let mut push = |c: Bytes| out.push((key.clone(), c));
    let full = mode == Mode::Full;
    let len_cmd: &[u8] = match ty {
        ValueType::String => b"STRLEN",
        ValueType::List => b"LLEN",
        ValueType::Set => b"SCARD",
        ValueType::Zset => b"ZCARD",
        ValueType::Hash => b"HLEN",
        ValueType::Stream => b"XLEN",
        ValueType::Module | ValueType::Array => return 0,
    };
    if ty == ValueType::String && full {
        push(cmd(&[
            b"GETRANGE",
            k,
            b"0",
            &num(SMALL_STRING_BYTES as u64 - 1),
        ]));
    } else {
        push(cmd(&[len_cmd, k]));
        if full {
            match ty {
                ValueType::List => push(cmd(&[b"LRANGE", k, b"0", &wm1])),
                ValueType::Set => push(cmd(&[b"SSCAN", k, b"0", b"COUNT", &w])),
                ValueType::Zset => push(cmd(&[b"ZSCAN", k, b"0", b"COUNT", &w])),
                ValueType::Hash => push(cmd(&[b"HSCAN", k, b"0", b"COUNT", &w])),
                ValueType::Stream => {
                    push(cmd(&[b"XINFO", b"STREAM", k]));
                    push(cmd(&[b"XINFO", b"GROUPS", k]));
                    push(cmd(&[b"XRANGE", k, b"-", b"+", b"COUNT", &w]));
                }
                _ => {}
            }
        }
    }
    out.len() - before
}

fn is_wrongtype(e: &str) -> bool {
    e.starts_with("WRONGTYPE")
}

fn changed() -> String {
    "changed while being read".into()
}

/// Fills `k` from the replies of [`phase_b`]. `Err` is an error reply that is not WRONGTYPE.
pub(crate) fn parse_phase_b(
    k: &mut SideKey,
    ty: ValueType,
    mode: Mode,
    r: &[Reply],
) -> Result<(), String> {
    for x in r {
        if let Some(e) = x.error() {
            if is_wrongtype(e) {
                k.trouble = Some(changed());
                return Ok(());
            }
            return Err(e.to_string());
        }
    }
    let bad = |what: &str| format!("unexpected reply to {what}");
    let int = |x: &Reply| x.as_int().and_then(|v| u64::try_from(v).ok());
    if ty == ValueType::Module || r.is_empty() {
        return Ok(());
    }
    if ty == ValueType::String && mode == Mode::Full {
        let b = r[0]
            .as_bytes()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        if b.len() >= SMALL_STRING_BYTES {
            k.big = true;
        } else {
            k.len = Some(b.len() as u64);
            k.value = Some(Value::String(b));
        }
        return Ok(());
    }
    let len = int(&r[0]).ok_or_else(|| bad("a length command"))?;
    k.len = Some(len);
    if mode != Mode::Full {
        return Ok(());
    }
    let small = len as usize <= SMALL_ELEMENTS;
    match ty {
        ValueType::List => {
            let items = bulks(&r[1]).ok_or_else(|| bad("LRANGE"))?;
            if small && items.len() as u64 == len {
                k.value = Some(Value::List(items));
            } else {
                k.big = true;
            }
        }
        ValueType::Set | ValueType::Zset | ValueType::Hash => {
            let (cursor, page) = scan_page(&r[1]).ok_or_else(|| bad("a SCAN of a key"))?;
            if cursor != 0 {
                k.big = true;
                return Ok(());
            }
            k.value = Some(match ty {
                ValueType::Set => Value::set(page),
                ValueType::Zset => Value::zset(scored(page).ok_or_else(|| bad("ZSCAN"))?),
                _ => Value::hash(pairs(page).ok_or_else(|| bad("HSCAN"))?),
            });
        }
        ValueType::Stream => {
            k.info = Some(stream_info(&r[1], &r[2]).ok_or_else(|| bad("XINFO"))?);
            let e = entries(&r[3]).ok_or_else(|| bad("XRANGE"))?;
            if small && e.len() as u64 == len {
                k.value = Some(Value::Stream(e));
            } else {
                k.big = true;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---- a reader: one connection set per side ----------------------------------------------------------

pub(crate) struct Reader {
    pub ctx: Arc<Ctx>,
    src: Option<Target<u32>>,
    pub dst: Target<u32>,
}

/// Consecutive commands for the same key, as one group.
fn by_key(cmds: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Vec<Bytes>)> {
    let mut out: Vec<(Bytes, Vec<Bytes>)> = Vec::with_capacity(cmds.len());
    for (k, c) in cmds {
        match out.last_mut() {
            Some((last, v)) if *last == k => v.push(c),
            _ => out.push((k, vec![c])),
        }
    }
    out
}

/// Runs groups of commands, each group for one key (sent back to back on one connection, one
/// router operation for all of them), and returns every command's reply, in order.
async fn run_grouped(
    t: &mut Target<u32>,
    db: u64,
    groups: Vec<(Bytes, Vec<Bytes>)>,
) -> Result<Vec<Reply>, ClientError> {
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let mut starts = Vec::with_capacity(groups.len());
    let mut out = vec![Reply::Nil; total];
    if total == 0 {
        return Ok(out);
    }
    t.select(db)?;
    let mut at = 0;
    let mut sizes = Vec::with_capacity(groups.len());
    for g in &groups {
        starts.push(at);
        sizes.push(g.1.len());
        at += g.1.len();
    }
    let place = |out: &mut Vec<Reply>, tag: u32, r: Reply| {
        let start = starts[tag as usize];
        match r {
            Reply::Array(v) if sizes[tag as usize] > 1 => {
                for (i, x) in v.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(start + i) {
                        *slot = x;
                    }
                }
            }
            other => out[start] = other,
        }
    };
    for (i, (key, cmds)) in groups.into_iter().enumerate() {
        if cmds.len() == 1 {
            let c = cmds.into_iter().next().unwrap_or_default();
            t.submit(Some(&key), c, Idempotent::Yes, i as u32).await?;
        } else {
            t.submit_group(Some(slot_of(&key)), cmds, Idempotent::Yes, i as u32)
                .await?;
        }
        while let Some((tag, r)) = t.try_completion() {
            place(&mut out, tag, r);
        }
    }
    for (tag, r) in t.drain().await? {
        place(&mut out, tag, r);
    }
    Ok(out)
}

fn hard(side: Side, ep: &Endpoint, key: &[u8], e: impl std::fmt::Display) -> CompareError {
    CompareError::Setup(format!(
        "{} {ep}: reading key {}: {e}",
        side.name(),
        crate::text::quote_bytes(key)
    ))
}

impl Reader {
    pub async fn connect(ctx: Arc<Ctx>) -> Result<Reader, CompareError> {
        let opts = &ctx.opts;
        let src = match &ctx.source {
            Some(s) => Some(
                Target::connect(&s.seed, target_options(&opts.connect, Some(s.cluster)))
                    .await
                    .map_err(|e| Side::Source.err(e))?,
            ),
            None => None,
        };
        let dst = Target::connect(
            &ctx.target.seed,
            target_options(&opts.connect, Some(ctx.target.cluster)),
        )
        .await
        .map_err(|e| Side::Target.err(e))?;
        Ok(Reader { ctx, src, dst })
    }

    /// Runs commands on both sides at once (the source's may be empty); the target's are
    /// written for the source's names and go out under the target's (`--rename-prefix`).
    async fn both(
        &mut self,
        sdb: u64,
        scmds: Vec<(Bytes, Bytes)>,
        tdb: u64,
        tcmds: Vec<(Bytes, Bytes)>,
    ) -> Result<(Vec<Reply>, Vec<Reply>), CompareError> {
        let tcmds = self.ctx.to_target(tcmds)?;
        self.both_as_named(sdb, scmds, tdb, tcmds).await
    }

    /// [`Reader::both`] with each side's commands already under that side's names.
    async fn both_as_named(
        &mut self,
        sdb: u64,
        scmds: Vec<(Bytes, Bytes)>,
        tdb: u64,
        tcmds: Vec<(Bytes, Bytes)>,
    ) -> Result<(Vec<Reply>, Vec<Reply>), CompareError> {
        self.ctx.pacer.take(scmds.len() + tcmds.len()).await;
        let Reader { src, dst, .. } = self;
        let s = async {
            match src {
                Some(src) => run_grouped(src, sdb, by_key(scmds))
                    .await
                    .map_err(|e| Side::Source.err(e)),
                None => Ok(Vec::new()),
            }
        };
        let t = async {
            run_grouped(dst, tdb, by_key(tcmds))
                .await
                .map_err(|e| Side::Target.err(e))
        };
        tokio::try_join!(s, t)
    }

    fn src_seed(&self) -> Endpoint {
        self.ctx
            .source
            .as_ref()
            .map(|s| s.seed.clone())
            .unwrap_or_else(|| self.ctx.target.seed.clone())
    }

    /// Compares a batch of source keys with the target.
    async fn forward(&mut self, sdb: u64, mut keys: Vec<Bytes>) -> Result<(), CompareError> {
        keys.sort_unstable();
        keys.dedup();
        let ctx = self.ctx.clone();
        let opts = &ctx.opts;
        let tdb = ctx.target_db(sdb);
        let mut a = Vec::with_capacity(keys.len() * 2);
        for k in &keys {
            a.push((k.clone(), cmd(&[b"TYPE", k])));
            a.push((k.clone(), cmd(&[b"PTTL", k])));
        }
        let (ra, rb) = self.both(sdb, a.clone(), tdb, a).await?;
        let now = now_ms();
        let mut states = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let s = self.head(Side::Source, k, &ra[2 * i], &ra[2 * i + 1], now)?;
            let t = self.head(Side::Target, k, &rb[2 * i], &rb[2 * i + 1], now)?;
            states.push((s, t));
        }
        // The type filter applies to the source's type.
        let typed = !opts.filter.is_everything();
        let mut keep = vec![true; keys.len()];
        if typed {
            for (i, (s, _)) in states.iter().enumerate() {
                if let Ty::Is(t) = s.ty {
                    keep[i] = opts.filter.type_allowed(t);
                } else if let Ty::Other(_) = s.ty {
                    keep[i] = opts.filter.type_allowed(ValueType::Module);
                }
            }
        }
        ctx.counts.source_keys.fetch_add(
            keep.iter().filter(|&&k| k).count() as u64,
            Ordering::Relaxed,
        );
        if opts.mode >= Mode::Length {
            let mut sb = Vec::new();
            let mut spans = Vec::new();
            for (i, (s, t)) in states.iter().enumerate() {
                if let (true, Ty::Is(ty), Ty::Is(ty2)) = (keep[i], &s.ty, &t.ty) {
                    if ty == ty2 {
                        let start = sb.len();
                        let n = phase_b(&mut sb, &keys[i], *ty, opts.mode);
                        spans.push((i, *ty, start, n));
                    }
                }
            }
            if !spans.is_empty() {
                let (rs, rt) = self.both(sdb, sb.clone(), tdb, sb).await?;
                for (i, ty, start, n) in spans {
                    let (s, t) = &mut states[i];
                    parse_phase_b(s, ty, opts.mode, &rs[start..start + n])
                        .map_err(|e| hard(Side::Source, &self.src_seed(), &keys[i], e))?;
                    parse_phase_b(t, ty, opts.mode, &rt[start..start + n])
                        .map_err(|e| hard(Side::Target, &ctx.target.seed, &keys[i], e))?;
                }
            }
        }
        for (i, (s, t)) in states.iter().enumerate() {
            if !keep[i] {
                continue;
            }
            let verdict = judge(opts.mode, opts.ttl_tolerance_ms, now, s, t);
            let subject = || Subject::Key {
                db: sdb,
                key: keys[i].clone(),
            };
            match verdict {
                Verdict::Same => {}
                Verdict::Differs(kind, m) => ctx.emit(subject(), kind, m).await,
                Verdict::Big => {
                    let Ty::Is(ty) = s.ty else { continue };
                    match self.big_live(sdb, tdb, &keys[i], ty).await? {
                        Some(m) => ctx.emit(subject(), DiffKind::Value, m).await,
                        None => {
                            if let Verdict::Differs(kind, m) =
                                judge_ttl(s, t, opts.ttl_tolerance_ms, now)
                            {
                                ctx.emit(subject(), kind, m).await;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A key's type and deadline from TYPE and PTTL replies.
    fn head(
        &self,
        side: Side,
        key: &[u8],
        ty: &Reply,
        pttl: &Reply,
        now: i64,
    ) -> Result<SideKey, CompareError> {
        let ep = match side {
            Side::Source => self.src_seed(),
            Side::Target => self.ctx.target.seed.clone(),
        };
        if let Some(e) = ty.error().or(pttl.error()) {
            return Err(hard(side, &ep, key, e));
        }
        let t = Ty::from_reply(ty).ok_or_else(|| hard(side, &ep, key, "TYPE gave no type"))?;
        let p = pttl
            .as_int()
            .ok_or_else(|| hard(side, &ep, key, "PTTL gave no number"))?;
        let expire_at = (p >= 0 && t != Ty::Absent).then_some(now + p);
        Ok(SideKey::new(t, expire_at))
    }

    /// A big value, live on both sides, whose length (for collections) already agrees.
    async fn big_live(
        &mut self,
        sdb: u64,
        tdb: u64,
        key: &Bytes,
        ty: ValueType,
    ) -> Result<Option<Mismatch>, CompareError> {
        let k: &[u8] = key;
        let one = |c: Bytes| vec![(key.clone(), c)];
        let chunk = CHUNK_ELEMENTS as u64;
        match ty {
            ValueType::String => {
                let c = cmd(&[b"STRLEN", k]);
                let (a, b) = self.both(sdb, one(c.clone()), tdb, one(c)).await?;
                let (Some(la), Some(lb)) = (a[0].as_int(), b[0].as_int()) else {
                    return Ok(Some((changed(), changed())));
                };
                if la != lb {
                    return Ok(Some((format!("{la} bytes"), format!("{lb} bytes"))));
                }
                let mut off = 0u64;
                while off < la as u64 {
                    let c = cmd(&[
                        b"GETRANGE",
                        k,
                        &num(off),
                        &num(off + CHUNK_BYTES as u64 - 1),
                    ]);
                    let (a, b) = self.both(sdb, one(c.clone()), tdb, one(c)).await?;
                    let (Some(x), Some(y)) = (a[0].as_bytes(), b[0].as_bytes()) else {
                        return Ok(Some((changed(), changed())));
                    };
                    if let Some(m) = compare_bytes(off, x, y) {
                        return Ok(Some(m));
                    }
                    if x.is_empty() {
                        break;
                    }
                    off += x.len() as u64;
                }
                Ok(None)
            }
            ValueType::List => {
                let mut start = 0u64;
                loop {
                    let c = cmd(&[b"LRANGE", k, &num(start), &num(start + chunk - 1)]);
                    let (a, b) = self.both(sdb, one(c.clone()), tdb, one(c)).await?;
                    let (Some(x), Some(y)) = (bulks(&a[0]), bulks(&b[0])) else {
                        return Ok(Some((changed(), changed())));
                    };
                    if let Some(m) = compare_items(start, &x, &y) {
                        return Ok(Some(m));
                    }
                    if (x.len() as u64) < chunk {
                        return Ok(None);
                    }
                    start += chunk;
                }
            }
            ValueType::Stream => {
                let mut from = b"-".to_vec();
                loop {
                    let c = cmd(&[b"XRANGE", k, &from, b"+", b"COUNT", &num(chunk)]);
                    let (a, b) = self.both(sdb, one(c.clone()), tdb, one(c)).await?;
                    let (Some(x), Some(y)) = (entries(&a[0]), entries(&b[0])) else {
                        return Ok(Some((changed(), changed())));
                    };
                    if let Some(m) = compare_entries(&x, &y) {
                        return Ok(Some(m));
                    }
                    match x.last().and_then(|e| next_id(e.0)) {
                        Some(n) if x.len() as u64 == chunk => from = n.to_string().into_bytes(),
                        _ => return Ok(None),
                    }
                }
            }
            ValueType::Set | ValueType::Zset | ValueType::Hash => {
                let scan: &[u8] = match ty {
                    ValueType::Set => b"SSCAN",
                    ValueType::Zset => b"ZSCAN",
                    _ => b"HSCAN",
                };
                let mut cursor = b"0".to_vec();
                loop {
                    let c = cmd(&[scan, k, &cursor, b"COUNT", &num(chunk)]);
                    let (a, _) = self.both(sdb, one(c), tdb, Vec::new()).await?;
                    let Some((next, page)) = scan_page(&a[0]) else {
                        return Ok(Some((changed(), changed())));
                    };
                    let piece = match ty {
                        ValueType::Set => Piece::Members(page),
                        ValueType::Zset => match scored(page) {
                            Some(p) => Piece::Scored(p),
                            None => return Ok(Some((changed(), changed()))),
                        },
                        _ => match pairs(page) {
                            Some(p) => Piece::Fields(p),
                            None => return Ok(Some((changed(), changed()))),
                        },
                    };
                    if let Some(m) = self.verify(tdb, key, &piece).await? {
                        return Ok(Some(m));
                    }
                    if next == 0 {
                        return Ok(None);
                    }
                    cursor = num(next);
                }
            }
            ValueType::Module | ValueType::Array => Ok(None),
        }
    }

    /// Checks one piece of a source value against the target's key.
    pub async fn verify(
        &mut self,
        tdb: u64,
        key: &Bytes,
        piece: &Piece,
    ) -> Result<Option<Mismatch>, CompareError> {
        let k: &[u8] = key;
        let ctx = self.ctx.clone();
        let one = |c: Bytes| vec![(key.clone(), c)];
        let single = |r: Vec<Reply>| r.into_iter().next().unwrap_or(Reply::Nil);
        let reply = match piece {
            Piece::Bytes { offset, data } => {
                if data.is_empty() {
                    return Ok(None);
                }
                let end = offset + data.len() as u64 - 1;
                let c = cmd(&[b"GETRANGE", k, &num(*offset), &num(end)]);
                let r = single(self.both(0, Vec::new(), tdb, one(c)).await?.1);
                if let Some(m) = self.reply_trouble(key, &r)? {
                    return Ok(Some(m));
                }
                return Ok(compare_bytes(
                    *offset,
                    data,
                    r.as_bytes().unwrap_or_default(),
                ));
            }
            Piece::Items { start, items } => {
                if items.is_empty() {
                    return Ok(None);
                }
                let end = start + items.len() as u64 - 1;
                let c = cmd(&[b"LRANGE", k, &num(*start), &num(end)]);
                single(self.both(0, Vec::new(), tdb, one(c)).await?.1)
            }
            Piece::Entries(v) => {
                let Some(first) = v.first() else {
                    return Ok(None);
                };
                let c = cmd(&[
                    b"XRANGE",
                    k,
                    first.0.to_string().as_bytes(),
                    b"+",
                    b"COUNT",
                    &num(v.len() as u64),
                ]);
                single(self.both(0, Vec::new(), tdb, one(c)).await?.1)
            }
            Piece::Members(v) => {
                if v.is_empty() {
                    return Ok(None);
                }
                if ctx.no_smismember.load(Ordering::Relaxed) {
                    let cmds = v
                        .iter()
                        .map(|m| (key.clone(), cmd(&[b"SISMEMBER", k, m])))
                        .collect();
                    Reply::Array(self.both(0, Vec::new(), tdb, cmds).await?.1)
                } else {
                    let mut args: Vec<&[u8]> = vec![b"SMISMEMBER", k];
                    args.extend(v.iter().map(|m| m.as_ref()));
                    let r = single(self.both(0, Vec::new(), tdb, one(cmd(&args))).await?.1);
                    if r.error().is_some_and(unknown_command) {
                        ctx.no_smismember.store(true, Ordering::Relaxed);
                        return Box::pin(self.verify(tdb, key, piece)).await;
                    }
                    r
                }
            }
            Piece::Scored(v) => {
                if v.is_empty() {
                    return Ok(None);
                }
                if ctx.no_zmscore.load(Ordering::Relaxed) {
                    let cmds = v
                        .iter()
                        .map(|m| (key.clone(), cmd(&[b"ZSCORE", k, &m.0])))
                        .collect();
                    Reply::Array(self.both(0, Vec::new(), tdb, cmds).await?.1)
                } else {
                    let mut args: Vec<&[u8]> = vec![b"ZMSCORE", k];
                    args.extend(v.iter().map(|m| m.0.as_ref()));
                    let r = single(self.both(0, Vec::new(), tdb, one(cmd(&args))).await?.1);
                    if r.error().is_some_and(unknown_command) {
                        ctx.no_zmscore.store(true, Ordering::Relaxed);
                        return Box::pin(self.verify(tdb, key, piece)).await;
                    }
                    r
                }
            }
            Piece::Fields(v) => {
                if v.is_empty() {
                    return Ok(None);
                }
                let mut args: Vec<&[u8]> = vec![b"HMGET", k];
                args.extend(v.iter().map(|f| f.0.as_ref()));
                single(self.both(0, Vec::new(), tdb, one(cmd(&args))).await?.1)
            }
        };
        if let Some(m) = self.reply_trouble(key, &reply)? {
            return Ok(Some(m));
        }
        let Some(got) = reply.as_array() else {
            return Ok(Some((changed(), changed())));
        };
        Ok(match piece {
            Piece::Bytes { .. } => None,
            Piece::Items { start, items } => match bulks(&reply) {
                Some(y) => compare_items(*start, items, &y),
                None => Some((changed(), changed())),
            },
            Piece::Entries(v) => match entries(&reply) {
                Some(y) => compare_entries(v, &y),
                None => Some((changed(), changed())),
            },
            Piece::Members(v) => v.iter().zip(got).find_map(|(m, r)| {
                (r.as_int() != Some(1)).then(|| {
                    (
                        format!("member {}", short(m)),
                        format!("member {} absent", short(m)),
                    )
                })
            }),
            Piece::Scored(v) => v.iter().zip(got).find_map(|(m, r)| {
                let other = r.as_bytes().and_then(parse_score);
                score_mismatch(&m.0, m.1, other)
            }),
            Piece::Fields(v) => v
                .iter()
                .zip(got)
                .find_map(|(f, r)| field_mismatch(&f.0, &f.1, r.as_bytes())),
        })
    }

    /// An error reply: WRONGTYPE is a change under our feet (a difference, re-checked in the next
    /// round), anything else is trouble.
    fn reply_trouble(&self, key: &[u8], r: &Reply) -> Result<Option<Mismatch>, CompareError> {
        let errs: Vec<&str> = match r {
            Reply::Error(e) => vec![e.as_str()],
            Reply::Array(v) => v.iter().filter_map(Reply::error).collect(),
            _ => Vec::new(),
        };
        match errs.first() {
            None => Ok(None),
            Some(e) if is_wrongtype(e) => Ok(Some((changed(), changed()))),
            Some(e) => Err(hard(Side::Target, &self.ctx.target.seed, key, e)),
        }
    }

    /// A key's state on the target: TYPE and PTTL, then what `phase_b` reads for `want` (the
    /// source's type) when the target's type is the same. `source_names`: the keys are the
    /// source's names (renamed for the target), else the target's own.
    pub async fn target_states(
        &mut self,
        tdb: u64,
        keys: &[(Bytes, Option<ValueType>)],
        mode: Mode,
        source_names: bool,
    ) -> Result<Vec<SideKey>, CompareError> {
        let mut a = Vec::with_capacity(keys.len() * 2);
        for (k, _) in keys {
            a.push((k.clone(), cmd(&[b"TYPE", k])));
            a.push((k.clone(), cmd(&[b"PTTL", k])));
        }
        let a = if source_names {
            self.ctx.to_target(a)?
        } else {
            a
        };
        let (_, ra) = self.both_as_named(0, Vec::new(), tdb, a).await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(keys.len());
        for (i, (k, _)) in keys.iter().enumerate() {
            out.push(self.head(Side::Target, k, &ra[2 * i], &ra[2 * i + 1], now)?);
        }
        if mode >= Mode::Length {
            let mut b = Vec::new();
            let mut spans = Vec::new();
            for (i, (k, want)) in keys.iter().enumerate() {
                if let (Some(w), Ty::Is(t)) = (want, &out[i].ty) {
                    if w == t {
                        let start = b.len();
                        let n = phase_b(&mut b, k, *t, mode);
                        spans.push((i, *t, start, n));
                    }
                }
            }
            if !spans.is_empty() {
                let b = if source_names {
                    self.ctx.to_target(b)?
                } else {
                    b
                };
                let (_, rb) = self.both_as_named(0, Vec::new(), tdb, b).await?;
                for (i, ty, start, n) in spans {
                    parse_phase_b(&mut out[i], ty, mode, &rb[start..start + n])
                        .map_err(|e| hard(Side::Target, &self.ctx.target.seed, &keys[i].0, e))?;
                }
            }
        }
        Ok(out)
    }

    /// A target key's length (for a big value from an RDB, compared at its end).
    pub async fn target_len(
        &mut self,
        tdb: u64,
        key: &Bytes,
        ty: ValueType,
    ) -> Result<Option<u64>, CompareError> {
        let mut b = Vec::new();
        if phase_b(&mut b, key, ty, Mode::Length) == 0 {
            return Ok(None);
        }
        let (_, r) = self.both(0, Vec::new(), tdb, b).await?;
        Ok(r.first()
            .and_then(Reply::as_int)
            .and_then(|v| u64::try_from(v).ok()))
    }

    /// Looks up a batch of target keys on the source; reports those the source lacks.
    async fn backward(
        &mut self,
        tdb: u64,
        mut keys: Vec<Bytes>,
        recheck: bool,
    ) -> Result<(), CompareError> {
        keys.sort_unstable();
        keys.dedup();
        let ctx = self.ctx.clone();
        let opts = &ctx.opts;
        // With a type filter, or keys from an earlier round, the target's side is asked first.
        if recheck || !opts.filter.is_everything() {
            let cmds = keys
                .iter()
                .map(|k| (k.clone(), cmd(&[b"TYPE", k])))
                .collect();
            let (_, r) = self.both_as_named(0, Vec::new(), tdb, cmds).await?;
            let mut kept = Vec::with_capacity(keys.len());
            for (k, r) in keys.into_iter().zip(r) {
                let keep = match Ty::from_reply(&r) {
                    Some(Ty::Absent) | None => false,
                    Some(Ty::Is(t)) => opts.filter.type_allowed(t),
                    Some(Ty::Other(_)) => opts.filter.type_allowed(ValueType::Module),
                };
                if keep {
                    kept.push(k);
                }
            }
            keys = kept;
        }
        ctx.counts
            .target_keys
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let mut absent = vec![true; keys.len()];
        if let Some(fps) = ctx.fingerprints.get() {
            for (i, k) in keys.iter().enumerate() {
                absent[i] = !fps.contains(&ctx.fingerprint(tdb, k));
            }
        } else if !opts.rename.is_empty() {
            // Each target key under the source name(s) it comes from (`--rename-prefix`): one
            // EXISTS per name; a key no source name becomes stays absent.
            let names: Vec<Vec<Vec<u8>>> = keys
                .iter()
                .map(|k| {
                    opts.source_names(k)
                        .into_iter()
                        .filter(|n| opts.filter.key_allowed(n))
                        .collect()
                })
                .collect();
            let sdbs = ctx.backward.get(&tdb).cloned().unwrap_or_else(|| vec![tdb]);
            for sdb in sdbs {
                let todo: Vec<(usize, &Vec<u8>)> = (0..keys.len())
                    .filter(|&i| absent[i])
                    .flat_map(|i| names[i].iter().map(move |n| (i, n)))
                    .collect();
                if todo.is_empty() {
                    break;
                }
                let cmds = todo
                    .iter()
                    .map(|(_, n)| (Bytes::copy_from_slice(n), cmd(&[b"EXISTS", n])))
                    .collect();
                let (r, _) = self.both_as_named(sdb, cmds, 0, Vec::new()).await?;
                for (j, (i, n)) in todo.iter().enumerate() {
                    let reply = r.get(j).unwrap_or(&Reply::Nil);
                    match reply.as_int() {
                        Some(c) => absent[*i] &= c == 0,
                        None => return Err(hard(Side::Source, &self.src_seed(), n, reply)),
                    }
                }
            }
        } else {
            let sdbs = ctx.backward.get(&tdb).cloned().unwrap_or_else(|| vec![tdb]);
            let cluster = ctx.source.as_ref().is_some_and(|s| s.cluster);
            for sdb in sdbs {
                let todo: Vec<usize> = (0..keys.len()).filter(|&i| absent[i]).collect();
                if todo.is_empty() {
                    break;
                }
                if !cluster && todo.len() > 1 {
                    // One EXISTS for the whole batch: when it counts every key, none is extra.
                    let mut args: Vec<&[u8]> = vec![b"EXISTS"];
                    args.extend(todo.iter().map(|&i| keys[i].as_ref()));
                    let c = cmd(&args);
                    let (r, _) = self
                        .both(sdb, vec![(keys[todo[0]].clone(), c)], 0, Vec::new())
                        .await?;
                    if r.first().and_then(Reply::as_int) == Some(todo.len() as i64) {
                        for &i in &todo {
                            absent[i] = false;
                        }
                        continue;
                    }
                }
                let cmds = todo
                    .iter()
                    .map(|&i| (keys[i].clone(), cmd(&[b"EXISTS", &keys[i]])))
                    .collect();
                let (r, _) = self.both(sdb, cmds, 0, Vec::new()).await?;
                for (j, &i) in todo.iter().enumerate() {
                    let reply = r.get(j).unwrap_or(&Reply::Nil);
                    match reply.as_int() {
                        Some(n) => absent[i] = n == 0,
                        None => return Err(hard(Side::Source, &self.src_seed(), &keys[i], reply)),
                    }
                }
            }
        }
        let extra: Vec<(Bytes, Option<ValueType>)> = keys
            .iter()
            .zip(&absent)
            .filter(|(_, &a)| a)
            .map(|(k, _)| (k.clone(), None))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let states = self
            .target_states(tdb, &extra, Mode::Outline, false)
            .await?;
        let now = now_ms();
        for ((k, _), t) in extra.into_iter().zip(states) {
            if t.ty == Ty::Absent {
                continue;
            }
            ctx.emit(
                Subject::Key { db: tdb, key: k },
                DiffKind::Extra,
                ("absent".into(), t.describe(now)),
            )
            .await;
        }
        Ok(())
    }
}

fn unknown_command(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("unknown command") || e.contains("unknown subcommand")
}

// ---- functions ---------------------------------------------------------------------------------------

/// `FUNCTION LIST WITHCODE` as library name -> code; empty on servers without functions.
async fn libraries(
    node: &Endpoint,
    ctx: &Ctx,
    side: Side,
) -> Result<HashMap<Bytes, Bytes>, CompareError> {
    let mut conn = Connection::connect(node, &ctx.opts.connect)
        .await
        .map_err(|e| side.err(e))?;
    let r = conn
        .request(&["FUNCTION", "LIST", "WITHCODE"])
        .await
        .map_err(|e| side.err(e))?;
    if let Some(e) = r.error() {
        if unknown_command(e) {
            return Ok(HashMap::new());
        }
        return Err(CompareError::Setup(format!(
            "{} {node}: FUNCTION LIST failed: {e}",
            side.name()
        )));
    }
    Ok(crate::apply::functions::list_libraries(&r)
        .into_iter()
        .collect())
}

/// Compares the function libraries: the source's first master (or `from_file`) against the
/// target's first master.
pub(crate) async fn compare_functions(
    ctx: &Ctx,
    from_file: Option<HashMap<Bytes, Bytes>>,
) -> Result<(), CompareError> {
    let src = match from_file {
        Some(f) => f,
        None => match ctx.source.as_ref().and_then(|s| s.masters.first()) {
            Some(m) => libraries(m, ctx, Side::Source).await?,
            None => HashMap::new(),
        },
    };
    let Some(tm) = ctx.target.masters.first() else {
        return Ok(());
    };
    let dst = libraries(tm, ctx, Side::Target).await?;
    let mut names: Vec<&Bytes> = src.keys().chain(dst.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let subject = Subject::Function {
            library: name.clone(),
        };
        let lib = |c: &Bytes| format!("library of {} bytes", c.len());
        match (src.get(name), dst.get(name)) {
            (Some(a), None) => {
                ctx.emit(subject, DiffKind::Missing, (lib(a), "absent".into()))
                    .await
            }
            (None, Some(b)) => {
                ctx.emit(subject, DiffKind::Extra, ("absent".into(), lib(b)))
                    .await
            }
            (Some(a), Some(b)) if a != b => {
                let m = compare_bytes(0, a, b).unwrap_or_else(|| (lib(a), lib(b)));
                ctx.emit(subject, DiffKind::Value, m).await
            }
            _ => {}
        }
    }
    Ok(())
}
