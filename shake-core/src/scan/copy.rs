//! A whole SCAN + DUMP copy (shake-rump): find the source's masters and databases, copy the
//! function libraries, subscribe to keyspace events (follow mode) before anything is scanned,
//! walk every master in parallel, and write what is found either to a live target through the
//! apply layer (planner on a blocking thread, executor on the runtime, bounded queues between
//! them) or into one RDB file (FILE.part, renamed when complete).

use crate::part_file::PartFile;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{
    found_queue, now_ms, Counters, Dumper, Found, FoundSender, ScanOptions, Subscription, Tag,
};
use crate::apply::exec::{Exec, ExecStats};
use crate::apply::plan::{PlanStats, Planner, StringBuild};
use crate::apply::{
    connect_target, prepare_target, work_queue, ApplyError, ApplyOptions, ConflictPolicy,
    OnTargetError, Work,
};
use crate::client::{discover_share, is_cluster, Pipeline, PipelineOptions};
use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::observe::Progress;
use crate::rdb::file_writer::{functions_from_dump, RdbFileWriter};
use crate::rdb::value_type_of;
use crate::rdb::writer::{parse_dump_payload, TargetFormat};
use crate::resp::Reply;
use crate::text::quote_bytes;

/// Where the copy goes.
#[derive(Debug, Clone)]
pub enum RumpOutput {
    Target {
        endpoint: Endpoint,
        /// `None`: detect.
        cluster: Option<bool>,
        /// Commands in flight per target connection.
        pipeline: usize,
    },
    /// An RDB file (written as FILE.part, renamed when complete).
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct RumpSettings {
    pub source: Endpoint,
    /// `None`: detect from INFO cluster.
    pub source_cluster: Option<bool>,
    pub output: RumpOutput,
    pub connect: ConnectOptions,
    pub apply: ApplyOptions,
    pub scan: ScanOptions,
    /// Copy the function libraries (FUNCTION DUMP).
    pub functions: bool,
    /// Keep copying the keys named by keyspace events until `stop`.
    pub follow: bool,
    /// A write the target refuses: re-copy the key from the source, or stop.
    pub on_target_error: crate::apply::OnTargetError,
    pub quiet: bool,
    pub log_interval: Option<Duration>,
    /// `--shard K/N`: only this shard's source masters (see [`crate::shard`]).
    pub shard: crate::shard::Shard,
}

#[derive(Debug, Default, Clone)]
pub struct RumpSummary {
    pub scanned: u64,
    pub vanished: u64,
    pub dumped_alone: u64,
    pub plan: PlanStats,
    pub exec: ExecStats,
    /// `-o FILE`: keys and libraries written, and the file's header.
    pub file_keys: u64,
    pub file_functions: u64,
    pub file_header: Option<String>,
    pub output: String,
    pub target_format: String,
    pub follow: bool,
    pub events: u64,
    pub recopied: u64,
    pub gone: u64,
    pub seconds: f64,
}

impl fmt::Display for RumpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        let e = &self.exec;
        if let Some(h) = &self.file_header {
            write!(
                f,
                "{} keys copied to {} ({h}), {} vanished skipped, {} filtered, {} expired skipped, {} functions, {} keys scanned, {} DUMPed alone (big), {:.1}s",
                self.file_keys, self.output, self.vanished, p.filtered, p.expired, self.file_functions, self.scanned, self.dumped_alone, self.seconds
            )?;
        } else {
            write!(
                f,
                "{} keys copied ({} transcoded for {}, {} big keys as commands), {} vanished skipped, {} filtered, {} expired skipped, {} conflicts kept, {} functions loaded ({} kept), {} identical already there, {} keys scanned, {} DUMPed alone (big), {:.1}s",
                e.written, p.transcoded, self.target_format, p.big_keys, self.vanished, p.filtered, p.expired, e.conflicts, e.functions_loaded, e.functions_kept, e.functions_identical, self.scanned, self.dumped_alone, self.seconds
            )?;
        }
        if self.follow {
            write!(
                f,
                "; follow: {} events, {} keys re-copied, {} deleted",
                self.events, self.recopied, e.deleted
            )?;
        }
        if e.repaired > 0 || self.follow {
            write!(
                f,
                "; {} keys repaired (re-copied after the target refused a write)",
                e.repaired
            )?;
        }
        if p.dropped_field_ttls > 0 {
            write!(
                f,
                "; {} hash field TTLs dropped (--field-ttls drop)",
                p.dropped_field_ttls
            )?;
        }
        Ok(())
    }
}

/// How long the writer waits for more work before it sends what it buffered.
const IDLE_FLUSH: Duration = Duration::from_millis(20);

/// Bytes per GETRANGE of a big string read in parts (the parser's part size for an RDB's).
const STRING_PART_BYTES: usize = 1 << 20;

/// How much found data (payloads) may wait between the walkers and the writer.
const FOUND_QUEUE_BYTES: usize = 32 << 20;

/// One master of the source and what to scan on it.
struct Node {
    endpoint: Endpoint,
    dbs: Vec<u64>,
}

fn net_err(e: impl fmt::Display) -> String {
    e.to_string()
}

async fn dbsize(conn: &mut Connection, db: u64) -> u64 {
    let sel = db.to_string();
    if db != 0 && conn.request_ok(&["SELECT", sel.as_str()]).await.is_err() {
        return 0;
    }
    let n = conn
        .request(&["DBSIZE"])
        .await
        .ok()
        .and_then(|r| r.as_int())
        .unwrap_or(0);
    if db != 0 {
        let _ = conn.request(&["SELECT", "0"]).await;
    }
    n.max(0) as u64
}

/// What the source is made of, learned before anything is copied.
struct SourcePlan {
    cluster: bool,
    nodes: Vec<Node>,
    total_keys: u64,
    /// The RDB version the source stamps (INFO server), the newest among the masters.
    rdb_version: Option<u16>,
    server_version: String,
}

async fn plan_source(s: &RumpSettings) -> Result<SourcePlan, String> {
    let mut seed = Connection::connect(&s.source, &s.connect)
        .await
        .map_err(net_err)?;
    let cluster = match s.source_cluster {
        Some(c) => c,
        None => is_cluster(&mut seed).await.map_err(|e| {
            let m = e.to_string();
            if m.contains("NOPERM") {
                format!("{m} (INFO tells whether the source is a cluster: grant +info, or say it with --source-cluster / --no-source-cluster)")
            } else {
                m
            }
        })?,
    };
    let (masters, all) = if cluster {
        discover_share(&s.source, &s.connect, s.shard)
            .await
            .map_err(net_err)?
    } else if s.shard.takes(None) {
        (vec![s.source.clone()], 1)
    } else {
        (Vec::new(), 1)
    };
    if masters.is_empty() && !s.shard.is_whole() {
        eprintln!("shake-rump: {}", s.shard.nothing_to_do(all));
    }
    let mut plan = SourcePlan {
        cluster,
        nodes: Vec::new(),
        total_keys: 0,
        rdb_version: None,
        server_version: String::new(),
    };
    for m in masters {
        let mut conn = Connection::connect(&m, &s.connect).await.map_err(net_err)?;
        let mut dbs = conn.databases_with_keys().await;
        if cluster {
            // Only 0 but on Valkey 9 clusters with cluster-databases.
            let n = crate::client::cluster_databases(&mut conn)
                .await
                .unwrap_or(1);
            dbs.retain(|&d| d < n);
        }
        dbs.retain(|d| s.apply.filter.db_allowed(*d));
        for &db in &dbs {
            plan.total_keys += dbsize(&mut conn, db).await;
        }
        if let Ok(info) = conn.info("server").await {
            if let Some(f) = TargetFormat::from_info(&info) {
                plan.rdb_version = Some(
                    plan.rdb_version
                        .map_or(f.rdb_version, |v| v.max(f.rdb_version)),
                );
            }
            if plan.server_version.is_empty() {
                plan.server_version = info
                    .get("valkey_version")
                    .or_else(|| info.get("redis_version"))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        plan.nodes.push(Node { endpoint: m, dbs });
    }
    Ok(plan)
}

/// The function libraries of the source (FUNCTION DUMP on its first master), with the payload's
/// version stamp; none where the server has no FUNCTION command (Redis 6.2).
async fn source_functions(
    s: &RumpSettings,
    first: &Endpoint,
) -> Result<(Vec<Vec<u8>>, Option<u16>), String> {
    let mut conn = Connection::connect(first, &s.connect)
        .await
        .map_err(net_err)?;
    let r = conn.request(&["FUNCTION", "DUMP"]).await.map_err(net_err)?;
    match r {
        Reply::Bulk(payload) => {
            let libs = functions_from_dump(&payload).map_err(|e| format!("{first}: {e}"))?;
            let stamp = parse_dump_payload(&payload).ok().map(|(_, _, v)| v);
            Ok((libs.into_iter().map(|f| f.code).collect(), stamp))
        }
        Reply::Nil => Ok((Vec::new(), None)),
        Reply::Error(e) if e.to_ascii_lowercase().contains("unknown command") => {
            Ok((Vec::new(), None))
        }
        Reply::Error(e) => {
            if !s.quiet {
                eprintln!("shake-rump: {first}: FUNCTION DUMP refused ({e}); function libraries are not copied");
            }
            Ok((Vec::new(), None))
        }
        other => Err(format!("{first}: FUNCTION DUMP answered {other}")),
    }
}

/// Scans one master, then (follow mode) re-reads the keys its events name until `stop`.
async fn node_task(
    node: Node,
    s: Arc<RumpSettings>,
    counters: Arc<Counters>,
    out: FoundSender,
    sub: Option<Subscription>,
    stop: CancellationToken,
) -> Result<(), String> {
    let conn = Connection::connect(&node.endpoint, &s.connect)
        .await
        .map_err(net_err)?;
    let pipe: Pipeline<Tag> = Pipeline::new(
        conn,
        PipelineOptions {
            max_commands: 4096,
            max_bytes: 16 << 20,
        },
    );
    let mut d = Dumper::new(pipe, &s.scan, &counters, &out);
    let interrupted = || {
        format!(
            "interrupted while scanning {}; nothing written to a file is kept",
            node.endpoint
        )
    };
    for &db in &node.dbs {
        let r = tokio::select! {
            r = async {
                d.select(db).await?;
                d.scan_db().await
            } => r,
            _ = stop.cancelled() => return Err(interrupted()),
        };
        r?;
    }
    d.drain().await?;
    d.flush().await?;
    let Some(sub) = sub else { return Ok(()) };
    loop {
        let keys = sub.take()?;
        if keys.is_empty() {
            if stop.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                _ = sub.wait() => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        let mut by_db: std::collections::BTreeMap<u64, Vec<Vec<u8>>> = Default::default();
        for (db, k) in keys {
            by_db.entry(db).or_default().push(k);
        }
        for (db, keys) in by_db {
            d.reread(db, keys).await?;
        }
    }
}

/// Runs the copy. `stop` ends the follow phase (gracefully: what was read is written); during
/// the scan it aborts the copy with an error.
pub async fn rump(mut s: RumpSettings, stop: CancellationToken) -> Result<RumpSummary, String> {
    let started = Instant::now();
    // Into a live target, a string above the big-key threshold is read in parts and written
    // as SET + APPENDs (docs/big-values.md); a file takes each value as one DUMP payload.
    if let RumpOutput::Target { .. } = s.output {
        s.scan.string_parts = Some(super::StringParts {
            above: s.apply.big_key_bytes,
            part_bytes: STRING_PART_BYTES,
            connect: s.connect.clone(),
        });
    }
    let plan = plan_source(&s).await?;
    if plan.nodes.is_empty() && !s.shard.is_whole() {
        return Ok(RumpSummary::default());
    }
    if plan.nodes.is_empty() {
        return Err(format!("{}: no master to read", s.source));
    }
    // Functions live on every master alike: one shard copies them, not N.
    let (functions, fn_stamp) = if s.functions && s.shard.index == 0 {
        source_functions(&s, &plan.nodes[0].endpoint).await?
    } else {
        (Vec::new(), None)
    };
    let counters = Arc::new(Counters::default());

    // Subscribe before the first SCAN (see the ordering argument in `follow`).
    let mut subs = Vec::new();
    let mut restore_cfg = Vec::new();
    if s.follow {
        for n in &plan.nodes {
            if let Some(prev) = super::enable_notifications(&n.endpoint, &s.connect).await? {
                if !s.quiet {
                    eprintln!(
                        "shake-rump: {}: notify-keyspace-events was {prev:?}; turned on for --follow (put back at the end)",
                        n.endpoint
                    );
                }
                restore_cfg.push((n.endpoint.clone(), prev));
            }
            subs.push(Subscription::start(&n.endpoint, &s.connect, counters.clone()).await?);
        }
    }

    let result = run(
        s.clone(),
        plan,
        functions,
        fn_stamp,
        counters.clone(),
        subs,
        stop,
        started,
    )
    .await;
    for (ep, prev) in restore_cfg {
        if let Err(e) = super::restore_notifications(&ep, &s.connect, &prev).await {
            eprintln!(
                "shake-rump: {ep}: could not put notify-keyspace-events back to {prev:?}: {e}"
            );
        }
    }
    let mut summary = result?;
    summary.scanned = Counters::get(&counters.scanned);
    summary.vanished = Counters::get(&counters.vanished);
    summary.dumped_alone = Counters::get(&counters.dumped_alone);
    summary.events = Counters::get(&counters.events);
    summary.recopied = Counters::get(&counters.recopied);
    summary.gone = Counters::get(&counters.gone);
    summary.follow = s.follow;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    s: RumpSettings,
    plan: SourcePlan,
    functions: Vec<Vec<u8>>,
    fn_stamp: Option<u16>,
    counters: Arc<Counters>,
    subs: Vec<Subscription>,
    stop: CancellationToken,
    started: Instant,
) -> Result<RumpSummary, String> {
    let s = Arc::new(s);
    let (tx, mut rx) = found_queue(FOUND_QUEUE_BYTES);

    // The writing side first, so that a target that cannot take the data fails before any
    // source is read.
    enum Writer {
        Target(tokio::task::JoinHandle<Result<(PlanStats, ExecStats, String), String>>),
        File(tokio::task::JoinHandle<Result<FileStats, String>>),
    }
    let dbs: BTreeSet<u64> = plan
        .nodes
        .iter()
        .flat_map(|n| n.dbs.iter().copied())
        .collect();
    let source_cluster = plan.cluster;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let writer = match &s.output {
        RumpOutput::Target {
            endpoint,
            cluster,
            pipeline,
        } => {
            let (endpoint, cluster, pipeline) = (endpoint.clone(), *cluster, *pipeline);
            let s2 = s.clone();
            let writer_stop = stop.clone();
            Writer::Target(tokio::spawn(async move {
                let setup = async {
                    let mut target = connect_target(&endpoint, cluster, &s2.connect, pipeline)
                        .await
                        .map_err(|e| e.to_string())?;
                    let prepared = prepare_target(&mut target, &s2.apply)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(databases) = target.cluster_databases() {
                        if let Some((db, t)) = dbs.iter().find_map(|&d| {
                            prepared
                                .apply
                                .db_map
                                .map(d)
                                .filter(|&t| !target.has_db(t))
                                .map(|t| (d, t))
                        }) {
                            return Err(format!(
                                "the source has keys in database {db} (target database {t}): {}; nothing was written",
                                crate::client::cluster_db_message(&endpoint.to_string(), t, databases)
                            ));
                        }
                    }
                    Ok((target, prepared))
                };
                let (mut target, prepared) = match setup.await {
                    Ok(x) => {
                        let _ = ready_tx.send(Ok(()));
                        x
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let fixer = Fixer {
                    source: s2.source.clone(),
                    cluster: source_cluster,
                    connect: s2.connect.clone(),
                    dbs: dbs.iter().copied().collect(),
                    reader: None,
                    policy: s2.on_target_error,
                };
                write_target(&mut target, prepared, rx, fixer, writer_stop).await
            }))
        }
        RumpOutput::File(path) => {
            let path = path.clone();
            let part = PartFile::create(&path)?;
            let _ = ready_tx.send(Ok(()));
            let hint = match (plan.rdb_version, fn_stamp) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let aux = vec![
                (
                    "redis-ver".to_string(),
                    plan.server_version.clone().into_bytes(),
                ),
                ("redis-bits".to_string(), b"64".to_vec()),
                (
                    "ctime".to_string(),
                    (now_ms() / 1000).to_string().into_bytes(),
                ),
                ("shake-tool".to_string(), b"shake-rump".to_vec()),
            ];
            let apply = s.apply.clone();
            Writer::File(tokio::task::spawn_blocking(move || {
                write_file(part, hint, aux, &apply, &mut rx)
            }))
        }
    };
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(match writer {
                Writer::Target(h) => match h.await {
                    Ok(Err(e)) => e,
                    _ => "the writer failed".into(),
                },
                Writer::File(_) => "the writer failed".into(),
            })
        }
    }

    // Progress: keys read (or found vanished) against the DBSIZE total.
    let progress_done = CancellationToken::new();
    let ticker = {
        let counters = counters.clone();
        let done = progress_done.clone();
        let mut p = Progress::keys("shake-rump", Some(plan.total_keys), s.quiet, s.log_interval);
        tokio::spawn(async move {
            let read = |c: &Counters| Counters::get(&c.dumped) + Counters::get(&c.vanished);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => p.update_now(0, read(&counters)),
                    _ = done.cancelled() => break,
                }
            }
            p.finish(0, read(&counters));
        })
    };

    if !functions.is_empty() {
        let n: usize = functions.iter().map(|c| c.len() + 64).sum();
        tx.send(
            functions
                .into_iter()
                .map(|code| Found::Function { code })
                .collect(),
            n,
        )
        .await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut subs = subs.into_iter();
    for node in plan.nodes {
        let sub = if s.follow { subs.next() } else { None };
        tasks.spawn(node_task(
            node,
            s.clone(),
            counters.clone(),
            tx.clone(),
            sub,
            stop.clone(),
        ));
    }
    drop(tx);
    let mut failure: Option<String> = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap_or_else(|e| Err(format!("a source task failed: {e}")));
        if let Err(e) = r {
            if failure.is_none() {
                failure = Some(e);
                // Stop the other walkers; the writer then sees the queue close.
                stop.cancel();
                tasks.abort_all();
            }
        }
    }
    let mut summary = RumpSummary::default();
    let written = match writer {
        Writer::Target(h) => match h.await {
            Ok(Ok((plan_stats, exec_stats, format))) => {
                summary.plan = plan_stats;
                summary.exec = exec_stats;
                summary.target_format = format;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("the target writer failed: {e}")),
        },
        Writer::File(h) => match h.await {
            Ok(Ok(fs)) => {
                if failure.is_none() {
                    fs.part.commit()?;
                }
                summary.plan = fs.plan;
                summary.file_keys = fs.keys;
                summary.file_functions = fs.functions;
                summary.file_header = Some(fs.header);
                summary.output = fs.dest;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("the file writer failed: {e}")),
        },
    };
    progress_done.cancel();
    let _ = ticker.await;
    // A writer error explains a walker's "the writing side stopped"; report it first.
    written?;
    if let Some(e) = failure {
        return Err(e);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Hands on the work of a big string read in parts; a re-copy (follow mode) deletes the key
/// ahead of its first batch, as a re-copied DUMP's big key does.
fn push_string_work(
    sender: &mut crate::apply::WorkSender,
    ahead: &mut u64,
    recopy: bool,
    w: Work,
) -> Result<(), ApplyError> {
    if let (
        true,
        Work::Commands {
            db,
            key,
            first: true,
            ..
        },
    ) = (recopy, &w)
    {
        *ahead += 1;
        sender.push(Work::Delete {
            db: *db,
            key: key.clone(),
        })?;
    }
    sender.push(w)
}

/// Plans and writes everything found into the target until the walkers are done.
async fn write_target(
    target: &mut crate::client::Target<crate::apply::exec::Tag>,
    prepared: crate::apply::PreparedTarget,
    mut rx: tokio::sync::mpsc::Receiver<(Vec<Found>, tokio::sync::OwnedSemaphorePermit)>,
    mut fixer: Fixer,
    walkers: CancellationToken,
) -> Result<(PlanStats, ExecStats, String), String> {
    let format = prepared.format;
    let apply = prepared.apply.clone();
    let modules = prepared.modules.clone();
    let (mut sender, receiver) = work_queue();
    let planning = tokio::task::spawn_blocking(move || -> Result<(PlanStats, u64), ApplyError> {
        // Keys read again after an event replace what the scan wrote, whatever --on-conflict
        // says about keys that were on the target before the copy.
        let recopy_opts = ApplyOptions {
            conflict: ConflictPolicy::Rewrite,
            ..apply.clone()
        };
        let mut planner = Planner::new(&apply, format, now_ms()).with_modules(modules.clone());
        let mut recopier = Planner::new(&recopy_opts, format, now_ms()).with_modules(modules);
        // DELs sent ahead of a re-copied big key (the executor judges its batches by the
        // run's own policy, which must not see the old value as a conflict), and of the
        // building key of a string read in parts whose reading was dropped.
        let mut ahead = 0u64;
        // Big strings arriving in parts (one at a time; keyed all the same), with whether
        // they are re-copies.
        let mut strings: std::collections::HashMap<(u64, Vec<u8>), (StringBuild, bool)> =
            Default::default();
        let r = (|| {
            while let Some((batch, permit)) = rx.blocking_recv() {
                planner.set_now(now_ms());
                recopier.set_now(now_ms());
                for f in batch {
                    match f {
                        Found::Key {
                            db,
                            key,
                            expire_at_ms,
                            payload,
                            recopy: false,
                        } => planner.plan_payload(db, key, expire_at_ms, &payload, &mut |w| {
                            sender.push(w)
                        })?,
                        Found::Key {
                            db,
                            key,
                            expire_at_ms,
                            payload,
                            recopy: true,
                        } => recopier.plan_payload(db, key, expire_at_ms, &payload, &mut |w| {
                            if let Work::Commands {
                                db,
                                key,
                                first: true,
                                ..
                            } = &w
                            {
                                ahead += 1;
                                sender.push(Work::Delete {
                                    db: *db,
                                    key: key.clone(),
                                })?;
                            }
                            sender.push(w)
                        })?,
                        Found::Gone { db, key } => {
                            if let Some(w) = planner.plan_delete(db, key)? {
                                sender.push(w)?;
                            }
                        }
                        Found::Function { code } => {
                            planner.stats.functions += 1;
                            sender.push(Work::Function { code })?;
                        }
                        Found::StringStart {
                            db,
                            key,
                            len,
                            expire_at_ms,
                            recopy,
                        } => {
                            let p = if recopy { &mut recopier } else { &mut planner };
                            if let Some(b) = p.begin_string(db, key.clone(), len, expire_at_ms)? {
                                strings.insert((db, key), (b, recopy));
                            }
                        }
                        Found::StringPart { db, key, data } => {
                            // Absent: the key was left out (filters, an expired TTL).
                            let Some((b, recopy)) = strings.get_mut(&(db, key)) else {
                                continue;
                            };
                            let p = if *recopy { &mut recopier } else { &mut planner };
                            let recopy = *recopy;
                            p.string_part(b, &data, &mut |w| {
                                push_string_work(&mut sender, &mut ahead, recopy, w)
                            })?;
                        }
                        Found::StringEnd {
                            db,
                            key,
                            expire_at_ms,
                        } => {
                            let Some((b, recopy)) = strings.remove(&(db, key)) else {
                                continue;
                            };
                            let p = if recopy { &mut recopier } else { &mut planner };
                            p.finish_string(b, expire_at_ms, &mut |w| {
                                push_string_work(&mut sender, &mut ahead, recopy, w)
                            })?;
                        }
                        Found::StringAbandon { db, key } => {
                            let Some((b, recopy)) = strings.remove(&(db, key)) else {
                                continue;
                            };
                            let p = if recopy { &mut recopier } else { &mut planner };
                            if let Some(w) = p.abandon_string(b) {
                                ahead += 1;
                                sender.push(w)?;
                            }
                        }
                    }
                }
                drop(permit);
                // Follow mode trickles: what is read goes out now, not when a batch fills.
                if rx.is_empty() {
                    sender.flush()?;
                }
            }
            sender.flush()
        })();
        let mut stats = planner.stats.clone();
        stats.add(&recopier.stats);
        r.map(|_| (stats, ahead))
    });
    let mut exec = Exec::new(target, &prepared.apply);
    exec.collect_refusals = fixer.policy == OnTargetError::Repair;
    let mut receiver = receiver;
    let failed = async {
        loop {
            // Nothing more to write for a moment (follow mode trickles): what is buffered goes
            // out and is answered, rather than waiting for the next event. A bulk copy keeps
            // its queue busy and its pipeline full.
            let next = match tokio::time::timeout(IDLE_FLUSH, receiver.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    exec.settle().await.map_err(|e| e.to_string())?;
                    fixer.fix(&mut exec, &prepared).await?;
                    receiver.recv().await
                }
            };
            let Some((works, permit)) = next else { break };
            for w in works {
                exec.apply(w).await.map_err(|e| e.to_string())?;
            }
            drop(permit);
            fixer.fix(&mut exec, &prepared).await?;
        }
        Ok::<(), String>(())
    }
    .await
    .err();
    if failed.is_some() {
        // The walkers of --follow wait for events, and the planner for them: stop them, so the
        // error is reported now rather than after the next event.
        walkers.cancel();
    }
    let planned = planning
        .await
        .map_err(|e| format!("the planner failed: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let (stats, ahead) = planned.map_err(|e| e.to_string())?;
    exec.finish().await.map_err(|e| e.to_string())?;
    fixer.fix(&mut exec, &prepared).await?;
    let mut exec_stats = exec.stats.clone();
    exec_stats.deleted = exec_stats.deleted.saturating_sub(ahead);
    Ok((stats, exec_stats, format.to_string()))
}

/// Repairs of shake-rump: a key whose write the target refused is read from the source again
/// (DUMP + PTTL, routed to its master) and written with RESTORE REPLACE through the planner,
/// up to five attempts (200 ms, doubling); then the copy stops naming the key. Re-copies are
/// whole values, so there is no stream to keep exactly-once against (unlike shake-sync's).
struct Fixer {
    source: Endpoint,
    cluster: bool,
    connect: ConnectOptions,
    /// The source databases copied (a refused key's is found through the database map).
    dbs: Vec<u64>,
    reader: Option<crate::client::Target<bool>>,
    policy: OnTargetError,
}

impl Fixer {
    /// DUMP and PTTL of `key` in source database `db` (`None`: not there).
    async fn read(
        &mut self,
        db: u64,
        key: &[u8],
    ) -> Result<Option<(bytes::Bytes, Option<i64>)>, String> {
        if self.reader.is_none() {
            let opts = crate::client::TargetOptions {
                cluster: Some(self.cluster),
                connect: self.connect.clone(),
                ..crate::client::TargetOptions::default()
            };
            let t = crate::client::Target::connect(&self.source, opts)
                .await
                .map_err(|e| format!("{}: {e}", self.source))?;
            self.reader = Some(t);
        }
        let Some(r) = self.reader.as_mut() else {
            return Err("no source connection".into());
        };
        r.select(db).map_err(|e| e.to_string())?;
        let mut dump = Vec::new();
        crate::resp::encode_command(&mut dump, &[&b"DUMP"[..], key]);
        let mut pttl = Vec::new();
        crate::resp::encode_command(&mut pttl, &[&b"PTTL"[..], key]);
        r.submit(Some(key), dump, crate::client::Idempotent::Yes, true)
            .await
            .map_err(|e| e.to_string())?;
        r.submit(Some(key), pttl, crate::client::Idempotent::Yes, false)
            .await
            .map_err(|e| e.to_string())?;
        let (mut payload, mut ttl) = (None, None);
        for (is_dump, reply) in r.drain().await.map_err(|e| e.to_string())? {
            if let Some(e) = reply.error() {
                return Err(format!("{}: {e}", self.source));
            }
            if is_dump {
                payload = reply.as_bytes().map(bytes::Bytes::copy_from_slice);
            } else {
                ttl = reply.as_int();
            }
        }
        Ok(match (payload, ttl) {
            (Some(p), Some(t)) if t != -2 => Some((p, (t >= 0).then(|| now_ms() + t))),
            _ => None,
        })
    }

    /// Repairs every refusal `exec` has collected.
    async fn fix(
        &mut self,
        exec: &mut Exec<'_>,
        prepared: &crate::apply::PreparedTarget,
    ) -> Result<(), String> {
        let opts = ApplyOptions {
            conflict: ConflictPolicy::Rewrite,
            ..prepared.apply.clone()
        };
        while !exec.refused.is_empty() {
            for r in std::mem::take(&mut exec.refused) {
                let mut delay = Duration::from_millis(200);
                let mut attempt = 1;
                loop {
                    let why = match self.rewrite(exec, prepared, &opts, &r).await {
                        Ok(None) => {
                            exec.stats.repaired += 1;
                            break;
                        }
                        Ok(Some(e)) | Err(e) => e,
                    };
                    if attempt >= 5 {
                        return Err(format!(
                            "{} refused key {} ({}), and the repair failed: {why}; the key differs from the source's: stopped",
                            exec.target_name(),
                            quote_bytes(&r.key),
                            r.error
                        ));
                    }
                    eprintln!(
                        "shake-rump: repairing key {} (attempt {attempt} failed: {why}); trying again in {delay:?}",
                        quote_bytes(&r.key)
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
        Ok(())
    }

    /// One re-copy of a refused key; `Ok(Some(e))`: the target refused it again.
    async fn rewrite(
        &mut self,
        exec: &mut Exec<'_>,
        prepared: &crate::apply::PreparedTarget,
        opts: &ApplyOptions,
        r: &crate::apply::exec::Refusal,
    ) -> Result<Option<String>, String> {
        let mut planner =
            Planner::new(opts, prepared.format, now_ms()).with_modules(prepared.modules.clone());
        let mut works = Vec::new();
        let mut found = false;
        // The refused key is the target's name; the source holds it under the name(s)
        // --rename-prefix turns into it (the same name without rules).
        let names: Vec<Vec<u8>> = opts
            .rename
            .sources_of(&r.key)
            .into_iter()
            .filter(|n| opts.filter.key_allowed(n))
            .collect();
        'dbs: for db in self.dbs.clone() {
            if opts.db_map.map(db) != Some(r.db) {
                continue;
            }
            for name in &names {
                let Some((payload, exp)) = self.read(db, name).await? else {
                    continue;
                };
                planner
                    .plan_payload(db, name.clone(), exp, &payload, &mut |w| {
                        if let Work::Commands {
                            db,
                            key,
                            first: true,
                            ..
                        } = &w
                        {
                            works.push(Work::Delete {
                                db: *db,
                                key: key.clone(),
                            });
                        }
                        works.push(w);
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
                found = true;
                break 'dbs;
            }
        }
        if !found || works.is_empty() {
            works.push(Work::Delete {
                db: r.db,
                key: r.key.clone(),
            });
        }
        // What the re-copy writes is counted as repaired, not again as copied or deleted.
        let writes = works
            .iter()
            .filter(|w| !matches!(w, Work::Delete { .. }))
            .count() as u64;
        let deletes = works.len() as u64 - writes;
        for w in works {
            exec.apply(w).await.map_err(|e| e.to_string())?;
        }
        exec.finish().await.map_err(|e| e.to_string())?;
        let again = exec
            .refused
            .iter()
            .position(|x| x.key == r.key && x.db == r.db);
        if let Some(i) = again {
            return Ok(Some(exec.refused.remove(i).error));
        }
        exec.stats.written = exec.stats.written.saturating_sub(writes.min(1));
        exec.stats.deleted = exec.stats.deleted.saturating_sub(deletes);
        Ok(None)
    }
}

struct FileStats {
    part: PartFile,
    dest: String,
    header: String,
    keys: u64,
    functions: u64,
    plan: PlanStats,
}

/// Writes everything found into the RDB file. The header's version is `hint` (the source's
/// INFO, FUNCTION DUMP stamp) or, at the latest, the first key's stamp, whichever is newer; a
/// later payload stamped newer than that is refused (see `RdbFileWriter::dump_payload`).
fn write_file(
    mut part: PartFile,
    hint: Option<u16>,
    aux: Vec<(String, Vec<u8>)>,
    apply: &ApplyOptions,
    rx: &mut tokio::sync::mpsc::Receiver<(Vec<Found>, tokio::sync::OwnedSemaphorePermit)>,
) -> Result<FileStats, String> {
    let mut writer: Option<RdbFileWriter<BufWriter<File>>> = None;
    let mut pending_functions: Vec<Vec<u8>> = Vec::new();
    let mut plan = PlanStats::default();
    let mut functions = 0u64;
    let part_name = part.part_path().display().to_string();
    let io = |e: std::io::Error| format!("cannot write {part_name}: {e}");
    let open = |version: u16, file: File| -> Result<RdbFileWriter<BufWriter<File>>, String> {
        let aux: Vec<(&str, &[u8])> = aux
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        RdbFileWriter::new(BufWriter::with_capacity(1 << 20, file), version, &aux).map_err(io)
    };
    while let Some((batch, permit)) = rx.blocking_recv() {
        let now = now_ms();
        for f in batch {
            let (db, key, expire_at_ms, payload) = match f {
                Found::Function { code } => {
                    pending_functions.push(code);
                    continue;
                }
                Found::Gone { .. } => continue,
                Found::StringStart { key, .. }
                | Found::StringPart { key, .. }
                | Found::StringEnd { key, .. }
                | Found::StringAbandon { key, .. } => {
                    return Err(format!(
                    "key {}: a string read in parts cannot go into a file (it takes DUMP payloads)",
                    crate::text::quote_bytes(&key)
                ))
                }
                Found::Key {
                    db,
                    key,
                    expire_at_ms,
                    payload,
                    ..
                } => (db, key, expire_at_ms, payload),
            };
            plan.keys += 1;
            let (rdb_type, _, stamp) = parse_dump_payload(&payload)
                .map_err(|e| format!("DUMP of key {}: {e}", crate::text::quote_bytes(&key)))?;
            if writer.is_none() {
                let v = hint.map_or(stamp, |h| h.max(stamp));
                writer = Some(open(v, part.take_file()?)?);
            }
            let Some(w) = writer.as_mut() else { continue };
            for code in pending_functions.drain(..) {
                w.function(&code).map_err(io)?;
                functions += 1;
            }
            let Some(out_db) = apply.db_map.map(db) else {
                plan.filtered += 1;
                continue;
            };
            // An unknown type is reported by `dump_payload`, naming the key.
            if let Some(t) = value_type_of(rdb_type, w.header()) {
                if !apply.filter.matches(db, &key, t) {
                    plan.filtered += 1;
                    continue;
                }
            }
            if expire_at_ms.is_some_and(|t| t <= now) {
                plan.expired += 1;
                continue;
            }
            // The filters judged the source name; the file holds the target's.
            let key = apply.rename.key(&key)?;
            w.dump_payload(out_db, &key, expire_at_ms, &payload)?;
        }
        drop(permit);
    }
    let mut w = match writer {
        Some(w) => w,
        None => open(hint.unwrap_or(9), part.take_file()?)?,
    };
    for code in pending_functions.drain(..) {
        w.function(&code).map_err(io)?;
        functions += 1;
    }
    let header = format!(
        "{}{:0width$}",
        w.header().magic.as_str(),
        w.header().version,
        width = if w.header().version >= 80 { 3 } else { 4 }
    );
    let keys = w.keys();
    let out = w.finish().map_err(io)?;
    let file = out
        .into_inner()
        .map_err(|e| format!("cannot write {part_name}: {}", e.error()))?;
    file.sync_all()
        .map_err(|e| format!("cannot flush {part_name} to disk: {e}"))?;
    Ok(FileStats {
        dest: part.dest_path().display().to_string(),
        part,
        header,
        keys,
        functions,
        plan,
    })
}
