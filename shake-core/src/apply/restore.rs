//! A whole restore: connect to the target, learn what it can load, check each input file before
//! writing (checksum, databases), then stream every input through planner and executor.
//!
//! An AOF input ([`crate::aof`]) is restored in its order: the RDB part (a preamble or a
//! multi-part base in RDB form) as any RDB, then its commands through the sync's stream
//! applier ([`crate::sync::stream::Applier`], without checkpoints), which routes them to
//! cluster slots, keeps `MULTI`/`EXEC` together and follows `SELECT`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::exec::{Exec, ExecStats, Tag};
use super::plan::{PlanStats, Planner};
use super::{ApplyError, ApplyOptions, Work};
use crate::client::{PipelineOptions, Target, TargetOptions};
use crate::net::{ConnectOptions, Endpoint};
use crate::observe::Progress;
use crate::rdb::writer::TargetFormat;
use crate::rdb::{Chunk, Item, ParserOptions, RdbParser, ValueType};

#[derive(Debug, Clone)]
pub enum RestoreInput {
    File(PathBuf),
    Stdin,
}

impl fmt::Display for RestoreInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreInput::File(p) => write!(f, "{}", p.display()),
            RestoreInput::Stdin => f.write_str("stdin"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestoreSettings {
    pub target: Endpoint,
    pub cluster: Option<bool>,
    pub connect: ConnectOptions,
    pub inputs: Vec<RestoreInput>,
    pub apply: ApplyOptions,
    /// Commands in flight per target connection.
    pub pipeline: usize,
    /// Read each file once before writing: checksum and databases.
    pub verify_first: bool,
    pub relaxed_version: bool,
    pub quiet: bool,
    pub log_interval: Option<Duration>,
    /// AOF inputs: apply the commands up to the first `#TS:` annotation after this time (unix
    /// seconds).
    pub until: Option<i64>,
    /// AOF inputs: what a torn last command leads to.
    pub aof_truncated: crate::aof::Truncated,
    /// Set on SIGINT/SIGTERM ([`crate::signals`]): no key is started after it, what was handed
    /// to the writer is written (a big key in parts is finished), and the restore ends with
    /// [`ApplyError::Stopped`] carrying the summary.
    pub stop: Arc<crate::signals::StopFlag>,
}

#[derive(Debug, Default, Clone)]
pub struct RestoreSummary {
    pub plan: PlanStats,
    pub exec: ExecStats,
    pub bytes: u64,
    pub seconds: f64,
    pub target_format: String,
    /// Commands of AOF inputs written, and left out by the filters.
    pub aof_commands: u64,
    pub aof_skipped: u64,
}

impl fmt::Display for RestoreSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        let e = &self.exec;
        write!(
            f,
            "{} keys written ({} transcoded for {}, {} big keys as commands), {} filtered, {} expired skipped, {} conflicts kept, {} functions loaded ({} kept), {} identical already there, {} bytes read in {:.1}s",
            e.written, p.transcoded, self.target_format, p.big_keys, p.filtered, p.expired, e.conflicts, e.functions_loaded, e.functions_kept, e.functions_identical, self.bytes, self.seconds
        )?;
        if p.dropped_field_ttls > 0 {
            write!(
                f,
                "; {} hash field TTLs dropped (--field-ttls drop)",
                p.dropped_field_ttls
            )?;
        }
        if self.aof_commands > 0 || self.aof_skipped > 0 {
            write!(
                f,
                "; {} AOF commands applied, {} left out by the filters",
                self.aof_commands, self.aof_skipped
            )?;
        }
        Ok(())
    }
}

/// How much decoded or captured data may wait between the reading and the writing half.
const QUEUE_BYTES: usize = 8 << 20;
/// Work goes across in batches: one hand-over per key cost more than the key.
const BATCH_ITEMS: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

fn open(input: &RestoreInput) -> Result<(Box<dyn Read + Send>, Option<u64>), ApplyError> {
    match input {
        RestoreInput::Stdin => Ok((Box::new(std::io::stdin()), None)),
        RestoreInput::File(p) => {
            let f = File::open(p).map_err(|e| {
                ApplyError::Unsupported(format!("cannot open {}: {e}", p.display()))
            })?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(std::io::BufReader::with_capacity(1 << 16, f)), len))
        }
    }
}

fn in_input(input: &RestoreInput, e: ApplyError) -> ApplyError {
    match e {
        ApplyError::Rdb(r) => ApplyError::Unsupported(format!("{input}: {r}")),
        other => other,
    }
}

/// Reads a file once without writing: verifies its checksum and lists the target databases its
/// keys would go to.
fn precheck(
    input: &RestoreInput,
    opts: &ApplyOptions,
    parser_opts: &ParserOptions,
    format: &TargetFormat,
    modules: &Option<BTreeSet<String>>,
) -> Result<(BTreeSet<u64>, u64), ApplyError> {
    let (reader, _) = open(input)?;
    let (reader, read) = crate::aof::counted(reader);
    let mut parser = RdbParser::with_options(reader, parser_opts.clone());
    let header = parser.header().map_err(|e| in_input(input, e.into()))?;
    let mut dbs = BTreeSet::new();
    while let Some(item) = parser.next_item().map_err(|e| in_input(input, e.into()))? {
        if let Item::Key(k) = item {
            if opts.filter.matches(k.db, &k.key, k.value_type) {
                if let Some(db) = opts.db_map.map(k.db) {
                    dbs.insert(db);
                }
                // Values no encoding of the target holds are refused now, before any write.
                let mut why = super::plan::refusal(format, header, &mut parser, &k)
                    .map_err(|e| in_input(input, e))?;
                if let (None, Some(loaded), ValueType::Module) = (&why, modules, k.value_type) {
                    if let Some(Chunk::Module { name, .. }) =
                        parser.next_chunk().map_err(|e| in_input(input, e.into()))?
                    {
                        why = super::plan::module_refusal(&k.key, &name, loaded);
                    }
                }
                if let Some(why) = why {
                    return Err(in_input(
                        input,
                        ApplyError::Unsupported(format!("{why}; nothing was written")),
                    ));
                }
            }
        }
    }
    // Where the RDB ends in the file: what an AOF tail (the preamble form) starts after.
    let (_, ahead) = parser.into_parts();
    let end = read.load(std::sync::atomic::Ordering::Relaxed) - ahead.len() as u64;
    Ok((dbs, end))
}

/// The modules every master of the target has loaded (`MODULE LIST` names, lowercase), or `None`
/// when a master refuses to say (then RESTORE decides, and its error names the key).
pub(crate) async fn target_modules<T: Send>(target: &mut Target<T>) -> Option<BTreeSet<String>> {
    let mut all: Option<BTreeSet<String>> = None;
    for (_, reply) in target.broadcast(&["MODULE", "LIST"]).await.ok()? {
        let mut names = BTreeSet::new();
        for m in reply.as_array()? {
            let fields = m.as_array()?;
            let name = fields
                .chunks(2)
                .find(|kv| kv[0].as_text().as_deref() == Some("name"))
                .and_then(|kv| kv.get(1)?.as_text())?;
            names.insert(name.to_ascii_lowercase());
        }
        all = Some(match all {
            Some(a) => a.intersection(&names).cloned().collect(),
            None => names,
        });
    }
    all
}

/// What a target loads and how a write to it must be shaped, learned once per target.
#[derive(Debug, Clone)]
pub struct PreparedTarget {
    /// The oldest RDB format among the masters: every payload must load on every master.
    pub format: TargetFormat,
    /// The apply options adjusted to this target: big keys bounded by `proto-max-bulk-len`, and
    /// the database of the target URL as the default mapping.
    pub apply: ApplyOptions,
    /// The modules every master loads (`MODULE LIST`), by which module values are judged before
    /// they are written; `None` when a master would not say.
    pub modules: Option<BTreeSet<String>>,
}

/// Connects to a target as a writer with `pipeline` commands in flight per connection.
pub async fn connect_target(
    endpoint: &Endpoint,
    cluster: Option<bool>,
    connect: &ConnectOptions,
    pipeline: usize,
) -> Result<Target<Tag>, ApplyError> {
    let topts = TargetOptions {
        cluster,
        connect: connect.clone(),
        window: PipelineOptions {
            max_commands: pipeline.max(1),
            ..PipelineOptions::default()
        },
        ..TargetOptions::default()
    };
    Ok(Target::connect(endpoint, topts).await?)
}

/// Learns what every master of `target` loads (INFO server) and how big one command may be
/// (CONFIG GET proto-max-bulk-len, assumed 512 MiB where CONFIG is refused), and adjusts
/// `apply` to it.
pub async fn prepare_target<T: Send>(
    target: &mut Target<T>,
    apply: &ApplyOptions,
) -> Result<PreparedTarget, ApplyError> {
    let mut format: Option<TargetFormat> = None;
    for (node, reply) in target.broadcast(&["INFO", "server"]).await? {
        let text = reply.as_text().unwrap_or_default();
        let f = TargetFormat::from_info(&crate::net::parse_info(&text)).ok_or_else(|| {
            ApplyError::Unsupported(format!(
                "{node}: cannot tell which RDB version it loads from INFO server"
            ))
        })?;
        format = Some(match format {
            Some(old) if old.rdb_version <= f.rdb_version => old,
            _ => f,
        });
    }
    let format = format.ok_or_else(|| {
        ApplyError::Unsupported(format!("{}: no master answered INFO", target.seed()))
    })?;
    let mut max_bulk: u64 = 512 << 20;
    for (_, reply) in target
        .broadcast(&["CONFIG", "GET", "proto-max-bulk-len"])
        .await?
    {
        // Managed services often refuse CONFIG; then the default limit is assumed.
        if let Some(v) = reply
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(|v| v.as_int())
        {
            max_bulk = max_bulk.min(v.max(0) as u64);
        }
    }
    let mut apply = apply.clone();
    // A database in the target URL (redis://host/3) receives every key unless --db-map says
    // otherwise.
    if let (Some(db), true) = (target.seed().db, apply.db_map.is_empty()) {
        apply.db_map =
            super::DbMap::parse(&[format!("*={db}")]).map_err(ApplyError::Unsupported)?;
    }
    // Leave room for the key and the command's other arguments.
    apply.big_key_bytes = apply
        .big_key_bytes
        .min(max_bulk.saturating_sub(1 << 20).max(1 << 20) as usize);
    let modules = target_modules(target).await;
    Ok(PreparedTarget {
        format,
        apply,
        modules,
    })
}

/// One RDB stream through planner (on a blocking thread, with the parser) and executor (here):
/// what shake-restore does per file and shake-sync does with a full-sync transfer. Returns the
/// planner's counts and the bytes read. The caller calls [`Exec::finish`] when it needs every
/// write acknowledged.
pub async fn apply_rdb(
    exec: &mut Exec<'_>,
    reader: Box<dyn Read + Send>,
    prepared: &PreparedTarget,
    parser_opts: &ParserOptions,
    progress: Progress,
) -> Result<(PlanStats, u64), ApplyError> {
    // shake-sync stops between sessions, not inside a transfer: no stop flag here.
    apply_rdb_to_end(
        exec,
        reader,
        prepared,
        parser_opts,
        progress,
        Arc::default(),
    )
    .await
    .map(|(plan, bytes, _, _)| (plan, bytes))
}

/// [`apply_rdb`], which also says how many bytes of `reader` the RDB took (an AOF tail may
/// follow it), and whether `stop` ended it early (what was read before is written).
async fn apply_rdb_to_end(
    exec: &mut Exec<'_>,
    reader: Box<dyn Read + Send>,
    prepared: &PreparedTarget,
    parser_opts: &ParserOptions,
    progress: Progress,
    stop: Arc<crate::signals::StopFlag>,
) -> Result<(PlanStats, u64, u64, bool), ApplyError> {
    let (reader, read) = crate::aof::counted(reader);
    let (mut sender, receiver) = work_queue();
    let (apply, popts, format) = (prepared.apply.clone(), parser_opts.clone(), prepared.format);
    let modules = prepared.modules.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut progress = progress;
    let reading =
        tokio::task::spawn_blocking(move || -> Result<(PlanStats, u64, u64, bool), ApplyError> {
            let mut parser = RdbParser::with_options(reader, popts);
            let mut planner = Planner::new(&apply, format, now_ms)
                .with_modules(modules)
                .with_stop(stop);
            let r = planner.run(&mut parser, &mut progress, &mut |w| sender.push(w));
            // Stopped: what was handed over still goes (the last batch too).
            let stopped = matches!(r, Err(ApplyError::Interrupted));
            let r = if stopped { Ok(()) } else { r }.and_then(|_| sender.flush());
            progress.finish(parser.offset(), planner.stats.keys);
            let offset = parser.offset();
            let (_, ahead) = parser.into_parts();
            let end = read.load(std::sync::atomic::Ordering::Relaxed) - ahead.len() as u64;
            r.map(|_| (planner.stats.clone(), offset, end, stopped))
        });
    let failed = run_exec(exec, receiver).await.err();
    let read = reading
        .await
        .map_err(|e| ApplyError::Client(format!("the RDB reader failed: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    read
}

/// The sending half of the bounded queue between a planner (on a blocking thread) and
/// [`run_exec`]: work goes across in batches (one hand-over per key cost more than the key),
/// and the queue holds at most [`QUEUE_BYTES`] of work.
pub struct WorkSender {
    tx: mpsc::Sender<(Vec<Work>, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    handle: tokio::runtime::Handle,
    batch: Vec<Work>,
    bytes: usize,
}

/// The receiving half, for [`run_exec`].
pub type WorkReceiver = mpsc::Receiver<(Vec<Work>, OwnedSemaphorePermit)>;

/// A work queue; create it inside the runtime (the sender blocks on it from a blocking thread).
pub fn work_queue() -> (WorkSender, WorkReceiver) {
    let (tx, rx) = mpsc::channel(16);
    (
        WorkSender {
            tx,
            budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            handle: tokio::runtime::Handle::current(),
            batch: Vec::with_capacity(BATCH_ITEMS),
            bytes: 0,
        },
        rx,
    )
}

impl WorkSender {
    /// Adds one item, handing the batch over when it is full (or the item should not wait:
    /// functions, the end of an input). Blocks while the queue is full; call it from a blocking
    /// thread.
    pub fn push(&mut self, w: Work) -> Result<(), ApplyError> {
        let flush_now = matches!(w, Work::Function { .. } | Work::End { .. });
        self.bytes += w.bytes();
        self.batch.push(w);
        if flush_now || self.batch.len() >= BATCH_ITEMS || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over what is batched.
    pub fn flush(&mut self) -> Result<(), ApplyError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let want = self.bytes.clamp(1, QUEUE_BYTES) as u32;
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(want))
            .map_err(|_| ApplyError::Client("the writing half stopped".into()))?;
        self.bytes = 0;
        self.tx
            .blocking_send((std::mem::take(&mut self.batch), permit))
            .map_err(|_| ApplyError::Client("the writing half stopped".into()))
    }
}

/// Applies everything from the queue until every sender is gone; on an error, stops reading
/// (the senders then fail with "the writing half stopped"). The caller calls
/// [`Exec::finish`] when it needs every write acknowledged.
pub async fn run_exec(exec: &mut Exec<'_>, mut rx: WorkReceiver) -> Result<(), ApplyError> {
    while let Some((works, permit)) = rx.recv().await {
        for w in works {
            exec.apply(w).await?;
        }
        drop(permit);
    }
    Ok(())
}

/// One input as the restore reads it: an RDB stream, or the parts of an AOF.
enum Resolved {
    /// Stdin, or a file that is not an AOF (the RDB parser judges it).
    Rdb(RestoreInput),
    /// A file starting with the RDB magic: an RDB, or an AOF with an RDB preamble when bytes
    /// follow the RDB.
    MaybePreamble(PathBuf),
    /// An AOF (plain, or multi-part).
    Aof(Vec<crate::aof::Part>),
}

impl Resolved {
    /// The RDB inputs (each with whether AOF commands may follow the RDB in the same file) and
    /// the command files (each with the offset its commands start at), in replay order.
    fn split(&self) -> (Vec<(RestoreInput, bool)>, Vec<(PathBuf, u64)>) {
        let mut rdbs = Vec::new();
        let mut commands = Vec::new();
        match self {
            Resolved::Rdb(i) => rdbs.push((i.clone(), false)),
            Resolved::MaybePreamble(p) => rdbs.push((RestoreInput::File(p.clone()), true)),
            Resolved::Aof(parts) => {
                for part in parts {
                    match part {
                        crate::aof::Part::Rdb { path, tail } => {
                            rdbs.push((RestoreInput::File(path.clone()), *tail))
                        }
                        crate::aof::Part::Commands { path, start } => {
                            commands.push((path.clone(), *start))
                        }
                    }
                }
            }
        }
        (rdbs, commands)
    }
}

fn resolve(input: &RestoreInput) -> Result<Resolved, ApplyError> {
    let RestoreInput::File(p) = input else {
        return Ok(Resolved::Rdb(input.clone()));
    };
    match crate::aof::layout(p).map_err(ApplyError::Unsupported)? {
        Some(crate::aof::Layout::Rdb) => Ok(Resolved::MaybePreamble(p.clone())),
        Some(crate::aof::Layout::Aof { parts, .. }) => Ok(Resolved::Aof(parts)),
        None => Ok(Resolved::Rdb(input.clone())),
    }
}

/// Reads the command parts of one AOF input before anything is written: damage, a torn end
/// under `--aof-truncated stop`, `--until` without `#TS:` annotations are refused now.
fn check_command_parts(
    parts: &[(PathBuf, u64)],
    until: Option<i64>,
    truncated: crate::aof::Truncated,
) -> Result<(), ApplyError> {
    let nothing = |m: String| ApplyError::Unsupported(format!("{m}; nothing was written"));
    let mut replay = crate::aof::Replay::new(parts.to_vec(), None, truncated);
    while replay.next_command().map_err(nothing)?.is_some() {}
    if until.is_some() && replay.timestamps == 0 {
        let names: Vec<String> = parts.iter().map(|(p, _)| p.display().to_string()).collect();
        return Err(nothing(format!(
            "--until: {} has no #TS: annotations to tell the time of its commands by; the server writes them with aof-timestamp-enabled yes (Redis 7+)",
            names.join(", ")
        )));
    }
    Ok(())
}

/// Applies the commands of an AOF input's parts in order, through the sync's stream applier.
async fn replay_commands(
    s: &RestoreSettings,
    prepared: &PreparedTarget,
    parts: &[(PathBuf, u64)],
    summary: &mut RestoreSummary,
) -> Result<(), ApplyError> {
    use crate::sync::stream::{Applier, GroupTag, StreamOptions};
    let topts = TargetOptions {
        cluster: s.cluster,
        connect: s.connect.clone(),
        window: PipelineOptions {
            max_commands: s.pipeline.max(1),
            ..PipelineOptions::default()
        },
        ..TargetOptions::default()
    };
    let mut target: Target<GroupTag> = Target::connect(&s.target, topts).await?;
    let caps = crate::compat::TargetCaps::read(&mut target, prepared.apply.field_ttls).await?;
    let cluster = target.is_cluster();
    let sync_err = |e: crate::sync::SyncError| ApplyError::Client(e.to_string());
    let opts = StreamOptions {
        db_map: prepared.apply.db_map.clone(),
        filter: prepared.apply.filter.clone(),
        qps: prepared.apply.qps,
        rename: prepared.apply.rename.clone(),
        // An AOF holds only what its server ran: a refusal means the target differs.
        on_target_error: super::OnTargetError::Stop,
        checkpoints: false,
        tool: "shake-restore",
        ..StreamOptions::default()
    };
    let keys = crate::sync::checkpoint::CheckpointKeys::new("aof", cluster);
    let mut applier = Applier::new(
        target,
        keys,
        opts,
        String::new(),
        (0, 0),
        Default::default(),
    )
    .map_err(sync_err)?;
    applier.set_target_caps(caps);
    let mut replay = crate::aof::Replay::new(parts.to_vec(), s.until, s.aof_truncated);
    // The applier's messages count offsets across the parts: they are told as a part file and
    // the offset in it.
    let located = |replay: &crate::aof::Replay, e: crate::sync::SyncError| {
        ApplyError::Client(replay.name_offsets(&e.to_string()))
    };
    // Reading is blocking, but a part is read 64 KiB at a time: short next to the writes.
    let mut stopped = false;
    while let Some(c) = replay.next_command().map_err(ApplyError::Unsupported)? {
        if s.stop.get().is_some() {
            stopped = true;
            break;
        }
        let r = applier.process(c.frame, &c.args, c.end).await;
        r.map_err(|e| located(&replay, e))?;
        if applier.batch_full() {
            applier.flush().await.map_err(|e| located(&replay, e))?;
            applier.collect().map_err(|e| located(&replay, e))?;
        }
    }
    // A transaction the input ends inside is held back by the applier: never sent.
    applier.drain().await.map_err(|e| located(&replay, e))?;
    summary.aof_commands += applier.stats.applied;
    summary.aof_skipped += applier.stats.skipped;
    for line in replay.notes() {
        eprintln!("shake-restore: {line}");
    }
    if stopped {
        return Err(ApplyError::Interrupted);
    }
    Ok(())
}

/// Restores every input into the target, in order.
pub async fn restore(s: RestoreSettings) -> Result<RestoreSummary, ApplyError> {
    let started = Instant::now();
    let resolved = s
        .inputs
        .iter()
        .map(resolve)
        .collect::<Result<Vec<_>, _>>()?;
    let mut target = connect_target(&s.target, s.cluster, &s.connect, s.pipeline).await?;
    let prepared = prepare_target(&mut target, &s.apply).await?;
    let format = prepared.format;
    let apply = &prepared.apply;
    let parser_opts = apply.parser_options(s.relaxed_version);

    if s.verify_first || s.until.is_some() {
        let modules = target_modules(&mut target).await;
        for r in &resolved {
            let (mut rdbs, mut commands) = r.split();
            // Stdin is read once, when it is restored: it cannot be checked first.
            rdbs.retain(|(i, _)| !matches!(i, RestoreInput::Stdin));
            for (input, tail) in rdbs {
                let (input2, apply2, popts) = (input.clone(), apply.clone(), parser_opts.clone());
                let loaded = modules.clone();
                let (dbs, end) = tokio::task::spawn_blocking(move || {
                    precheck(&input2, &apply2, &popts, &format, &loaded)
                })
                .await
                .map_err(|e| ApplyError::Client(format!("checking {input} failed: {e}")))??;
                if let Some(databases) = target.cluster_databases() {
                    if let Some(&db) = dbs.iter().find(|&&d| !target.has_db(d)) {
                        return Err(ApplyError::Unsupported(format!(
                            "{input} has keys for database {db}: {}; nothing was written",
                            crate::client::cluster_db_message(&s.target.to_string(), db, databases)
                        )));
                    }
                }
                if let (true, RestoreInput::File(p)) = (tail, &input) {
                    if file_len(p) > end && commands_follow(p, end)? {
                        commands.push((p.clone(), end));
                    }
                }
            }
            if commands.is_empty() && s.until.is_some() {
                let name = match r {
                    Resolved::Rdb(i) => i.to_string(),
                    Resolved::MaybePreamble(p) => p.display().to_string(),
                    Resolved::Aof(parts) => parts
                        .first()
                        .map(|p| p.path().display().to_string())
                        .unwrap_or_default(),
                };
                return Err(ApplyError::Unsupported(format!(
                    "--until: {name} holds no AOF commands (an RDB has no #TS: annotations to stop at); give an AOF, or leave --until out; nothing was written"
                )));
            }
            if !commands.is_empty() {
                let (until, truncated) = (s.until, s.aof_truncated);
                tokio::task::spawn_blocking(move || {
                    check_command_parts(&commands, until, truncated)
                })
                .await
                .map_err(|e| ApplyError::Client(format!("checking an AOF failed: {e}")))??;
            }
        }
    }

    let mut summary = RestoreSummary {
        target_format: format.to_string(),
        ..RestoreSummary::default()
    };
    let mut exec = Exec::new(&mut target, apply);
    let applied = apply_inputs(
        &s,
        &resolved,
        &prepared,
        &parser_opts,
        &mut exec,
        &mut summary,
    )
    .await;
    if let Err(ApplyError::Interrupted) = applied {
        // Reading stopped at a key boundary: wait for the answers to what was sent.
        exec.finish().await?;
        summary.exec = exec.stats.clone();
        summary.seconds = started.elapsed().as_secs_f64();
        return Err(ApplyError::Stopped {
            signal: s.stop.get().unwrap_or(crate::signals::Signal::Interrupt),
            summary: Box::new(summary),
        });
    }
    if let Err(e) = applied {
        let written = exec.stats.written;
        return Err(if written > 0 {
            ApplyError::Partial {
                written,
                error: Box::new(e),
            }
        } else {
            e
        });
    }
    summary.exec = exec.stats.clone();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Writes every input in turn (its RDB parts, then its commands) through `exec`.
async fn apply_inputs(
    s: &RestoreSettings,
    resolved: &[Resolved],
    prepared: &PreparedTarget,
    parser_opts: &ParserOptions,
    exec: &mut Exec<'_>,
    summary: &mut RestoreSummary,
) -> Result<(), ApplyError> {
    for (input, r) in s.inputs.iter().zip(resolved) {
        let (rdbs, mut commands) = r.split();
        for (part, tail) in rdbs {
            exec.source = format!("the input {part}");
            let (reader, total) = open(&part)?;
            let progress = Progress::new("shake-restore", total, s.quiet, s.log_interval);
            let (plan, bytes, end, stopped) = apply_rdb_to_end(
                exec,
                reader,
                prepared,
                parser_opts,
                progress,
                s.stop.clone(),
            )
            .await
            .map_err(|e| in_input(&part, e))?;
            exec.finish().await?;
            summary.plan.add(&plan);
            summary.bytes += bytes;
            if stopped {
                return Err(ApplyError::Interrupted);
            }
            if let (true, RestoreInput::File(p)) = (tail, &part) {
                if file_len(p) > end {
                    if commands_follow(p, end)? {
                        commands.push((p.clone(), end));
                    } else if !s.quiet {
                        eprintln!(
                            "shake-restore: {}: the {} bytes after the RDB's end (offset {end}) are not AOF commands; not read",
                            p.display(),
                            file_len(p) - end
                        );
                    }
                }
            }
        }
        if !commands.is_empty() {
            exec.finish().await?;
            replay_commands(s, prepared, &commands, summary)
                .await
                .map_err(|e| match e {
                    ApplyError::Client(m) => ApplyError::Client(format!("{input}: {m}")),
                    other => other,
                })?;
            summary.bytes += commands
                .iter()
                .map(|(p, start)| file_len(p).saturating_sub(*start))
                .sum::<u64>();
        }
    }
    exec.finish().await
}

/// Whether the bytes after an RDB's end in `p` are an AOF's commands (an RDB preamble's tail),
/// not bytes some tool left after the checksum ([`crate::aof::preamble_tail_at`]).
fn commands_follow(p: &std::path::Path, end: u64) -> Result<bool, ApplyError> {
    crate::aof::preamble_tail_at(p, end).map_err(ApplyError::Unsupported)
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
