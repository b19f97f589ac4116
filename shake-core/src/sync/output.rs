//! `shake-sync --output FILE|-`: the sync written out as a change stream instead of applied to a
//! target: each source shard's full snapshot, then its command stream, as JSON lines or as RESP
//! (AOF-compatible), resumable exactly where the output ends (docs/shake-sync.md, "change stream
//! out"; record shapes in docs/output-formats.md).
//!
//! This module owns:
//! - the output file and its *state* (`FILE.state` beside a file, `--output-state` for `-`): the
//!   output's length and, per shard, the replication id, offset and database its last record
//!   ends at, replaced atomically (write, rename) after each write. A restart cuts the file back
//!   to the recorded length (a torn or unrecorded tail is written again from the source) and
//!   asks each shard's source for the stream from there (`PSYNC <replid> <offset+1>`);
//! - the records: a snapshot framed by `snapshot-begin` / `snapshot-end` lines (JSON; the key
//!   lines are shake-decode's, from [`crate::sink::JsonLinesSink`]) or the commands that rebuild
//!   it ([`crate::sink::RespSink`], shake-decode `--format resp`'s); then one record per command
//!   of the stream, a source transaction (MULTI ... EXEC) written whole or not at all;
//! - what a source that cannot continue means: the run stops, unless `--output-resync` lets it
//!   append a new snapshot.
//!
//! A link's sessions, retries and backoff are [`super::link`]'s ([`link::Retry`]), the replica
//! protocol is [`crate::repl`]'s, the RDB reading is [`crate::sink::drive`]'s.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};

use super::link::{self, ChunkReader, LinkSpec, Retry, RetryLog, Status};
use super::{SyncError, SyncSummary};
use crate::command::{command_info, parse_command_needing, Kind};
use crate::filter::KeyFilter;
use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::observe::status::{Phase, ShardStatus, StatusBoard};
use crate::observe::Progress;
use crate::rdb::{ParserOptions, RdbParser};
use crate::repl::{start_sync, ReplOptions, ReplStream, Resume, SyncStart, Transfer};
use crate::resp::encode_command;
use crate::sink::{drive, json, resp_command, DriveError, JsonLinesSink, RespSink};

/// The records' encoding (`--output-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON object per line.
    Jsonl,
    /// RESP commands, as an AOF holds them.
    Resp,
}

impl OutputFormat {
    pub fn parse(s: &str) -> Result<OutputFormat, String> {
        match s {
            "jsonl" | "json" => Ok(OutputFormat::Jsonl),
            "resp" | "aof" => Ok(OutputFormat::Resp),
            other => Err(format!("--output-format {other:?}: expected jsonl or resp")),
        }
    }
}

/// Everything `--output` needs.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub source: Endpoint,
    /// `None`: detect.
    pub source_cluster: Option<bool>,
    pub connect: ConnectOptions,
    pub repl: ReplOptions,
    /// The output file; `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: OutputFormat,
    /// The state file ([`state_path`] gives the default); `None`: not resumable.
    pub state: Option<PathBuf>,
    /// A source that cannot continue the output gets a new snapshot appended, instead of an
    /// error.
    pub resync: bool,
    /// The shard name of a standalone source; a cluster source's shards add `/<first slot>`.
    pub name: String,
    pub retry_for: Duration,
    pub quiet: bool,
    pub relaxed_version: bool,
    /// Also write PUBLISH/SPUBLISH (default: messages are not data).
    pub forward_publish: bool,
    /// Which commands of the stream are written (`--command`, `--exclude-command`, their
    /// `-group` forms): inside a transaction each is judged, an emptied transaction left out.
    pub commands: crate::filter::CommandFilter,
}

/// The state file of an output: `--output-state` when given, else `FILE.state` beside a file;
/// standard output has none unless named.
pub fn state_path(path: Option<&Path>, given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        path.map(|p| {
            let mut s = p.as_os_str().to_os_string();
            s.push(".state");
            PathBuf::from(s)
        })
    })
}

/// Where a shard's last record ends in its source's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub replid: String,
    /// The replication offset of the last byte the output covers.
    pub offset: u64,
    /// The database selected at that offset.
    pub db: u64,
}

/// What the state file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Bytes of output the recorded positions cover.
    pub length: u64,
    pub shards: BTreeMap<String, Pos>,
}

const STATE_MAGIC: &str = "shake-sync output state 1";

impl State {
    pub fn render(&self) -> String {
        let mut s = format!("{STATE_MAGIC}\nlength {}\n", self.length);
        for (name, p) in &self.shards {
            s.push_str(&format!(
                "shard {name} {} {} {}\n",
                p.replid, p.offset, p.db
            ));
        }
        s
    }

    /// Reads a state file's text; errors name the line.
    pub fn parse(text: &str) -> Result<State, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l == STATE_MAGIC => {}
            _ => return Err(format!("line 1 is not {STATE_MAGIC:?}")),
        }
        let mut st = State::default();
        let mut length = None;
        for (i, l) in lines {
            let f: Vec<&str> = l.split(' ').collect();
            let bad = || {
                format!(
                    "line {}: {l:?} is not `length N` or `shard NAME REPLID OFFSET DB`",
                    i + 1
                )
            };
            match f.as_slice() {
                ["length", n] => length = Some(n.parse::<u64>().map_err(|_| bad())?),
                ["shard", name, replid, offset, db] => {
                    let pos = Pos {
                        replid: replid.to_string(),
                        offset: offset.parse().map_err(|_| bad())?,
                        db: db.parse().map_err(|_| bad())?,
                    };
                    st.shards.insert(name.to_string(), pos);
                }
                _ => return Err(bad()),
            }
        }
        st.length = length.ok_or("no `length` line")?;
        Ok(st)
    }
}

/// One command of the stream, kept as the source sent it.
struct Rec {
    db: u64,
    /// The replication offset after the command.
    offset: u64,
    frame: Bytes,
    args: Vec<Range<usize>>,
}

/// The output every shard writes into, one write at a time.
struct Output {
    w: Box<dyn Write + Send>,
    /// The file, when the output is a regular file: a failed snapshot is cut back off it.
    file: Option<File>,
    /// How the output is named in messages.
    label: String,
    state_path: Option<PathBuf>,
    state: State,
    format: OutputFormat,
    /// RESP: the database the output's last command left selected (`None`: unknown, the next
    /// command selects its own).
    resp_db: Option<u64>,
}

fn out_err(label: &str, e: impl std::fmt::Display) -> SyncError {
    SyncError::Fatal(format!("cannot write the output {label}: {e}"))
}

impl Output {
    fn open(s: &OutputSettings) -> Result<Output, SyncError> {
        let state = match &s.state {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(State::parse(&t).map_err(|e| {
                    SyncError::Fatal(format!(
                        "{}: {e}; it is the state of a shake-sync --output, written by it alone: give the right file with --output-state, or move output and state away to start a new output",
                        p.display()
                    ))
                })?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(SyncError::Fatal(format!("cannot read {}: {e}", p.display())))
                }
            },
            None => None,
        };
        let Some(path) = &s.path else {
            return Ok(Output {
                w: Box::new(io::stdout()),
                file: None,
                label: "(standard output)".into(),
                state_path: s.state.clone(),
                state: state
                    .map(|st| State { length: 0, ..st })
                    .unwrap_or_default(),
                format: s.format,
                resp_db: None,
            });
        };
        let label = path.display().to_string();
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| SyncError::Fatal(format!("cannot open the output {label}: {e}")))?;
        match crate::part_file::try_lock(&f) {
            Ok(true) => {}
            Ok(false) => {
                return Err(SyncError::Fatal(format!(
                    "{label}: another shake-sync is writing it; stop that one first"
                )))
            }
            Err(e) => return Err(SyncError::Fatal(format!("{label}: cannot lock it: {e}"))),
        }
        let meta = f
            .metadata()
            .map_err(|e| SyncError::Fatal(format!("{label}: {e}")))?;
        let state_label = s
            .state
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut state = state.unwrap_or_default();
        if meta.is_file() {
            let len = meta.len();
            if len < state.length {
                return Err(SyncError::Fatal(format!(
                    "{label} is {len} bytes, shorter than the {} its state {state_label} records: something else changed it; move both away to start a new output",
                    state.length
                )));
            }
            if state.shards.is_empty() && len > state.length {
                return Err(SyncError::Fatal(format!(
                    "{label} already holds {len} bytes, and no state {state_label} says where they end in the source's stream: move it away to start a new output, or name the state it was written with (--output-state)"
                )));
            }
            if len > state.length {
                f.set_len(state.length)
                    .map_err(|e| SyncError::Fatal(format!("{label}: cannot cut it back: {e}")))?;
                if !s.quiet {
                    eprintln!(
                        "shake-sync: {label}: cut {} bytes written after the last recorded position (a torn or unrecorded end); the source sends them again",
                        len - state.length
                    );
                }
            }
        } else {
            // A FIFO or a device: nothing to cut, every byte went out.
            state.length = 0;
        }
        let w = f
            .try_clone()
            .map_err(|e| SyncError::Fatal(format!("{label}: {e}")))?;
        Ok(Output {
            w: Box::new(w),
            file: meta.is_file().then_some(f),
            label,
            state_path: s.state.clone(),
            state,
            format: s.format,
            resp_db: None,
        })
    }

    fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.state.length += b.len() as u64;
        Ok(())
    }

    /// Writes `recs` (a shard's commands, whole transactions only), then records that the shard's
    /// output ends at `pos`.
    fn commit(&mut self, shard: &str, recs: &[Rec], pos: Pos) -> Result<(), SyncError> {
        let mut buf = Vec::new();
        for r in recs {
            match self.format {
                OutputFormat::Jsonl => json::command_record(
                    &mut buf,
                    &[("shard", shard), ("replid", &pos.replid)],
                    r.db,
                    r.offset,
                    None,
                    &r.frame,
                    &r.args,
                ),
                // The frame is the RESP command as the source's AOF would hold it.
                OutputFormat::Resp => resp_command(&mut buf, &mut self.resp_db, r.db, &r.frame),
            }
        }
        self.write_raw(&buf)
            .and_then(|_| self.w.flush())
            .map_err(|e| out_err(&self.label, e))?;
        self.state.shards.insert(shard.to_string(), pos);
        self.save_state()
    }

    /// The state file replaced whole (write beside it, rename), so a kill leaves the old one or
    /// the new one.
    fn save_state(&self) -> Result<(), SyncError> {
        let Some(p) = &self.state_path else {
            return Ok(());
        };
        let mut tmp = p.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let r = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(self.state.render().as_bytes())?;
            std::fs::rename(&tmp, p)
        })();
        r.map_err(|e| {
            SyncError::Fatal(format!(
                "cannot write the output's state {}: {e}",
                p.display()
            ))
        })
    }

    /// Cuts a snapshot that did not complete off a regular file (a stream keeps what went out).
    fn cut_back(&mut self, length: u64) {
        if let Some(f) = &self.file {
            if f.set_len(length).is_ok() {
                self.state.length = length;
            }
        }
        self.resp_db = None;
    }
}

/// The snapshot's writes into the output, counted in its length.
struct Counting<'a>(&'a mut Output);

impl Write for Counting<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.0.w.write(b)?;
        self.0.state.length += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.w.flush()
    }
}

fn meta_line(what: &str, shard: &str, replid: &str, offset: u64, keys: Option<u64>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"{\"meta\":");
    json::str(&mut b, what);
    b.extend_from_slice(b",\"shard\":");
    json::str(&mut b, shard);
    b.extend_from_slice(b",\"replid\":");
    json::str(&mut b, replid);
    b.extend_from_slice(b",\"offset\":");
    json::uint(&mut b, offset);
    if let Some(k) = keys {
        b.extend_from_slice(b",\"keys\":");
        json::uint(&mut b, k);
    }
    b.extend_from_slice(b"}\n");
    b
}

/// What the snapshot writer is told.
struct SnapshotJob {
    shard: String,
    replid: String,
    offset: u64,
    /// RESP: a FLUSHALL first (a new snapshot after an older one, --output-resync).
    flush_first: bool,
    popts: ParserOptions,
    quiet: bool,
    source: String,
}

enum SnapshotError {
    Output(String),
    Rdb(String),
}

/// Writes one shard's snapshot (on a blocking thread, holding the output throughout, so no
/// other shard's record lands inside it) and records its end; a failure cuts it back off.
fn write_snapshot(
    mut out: OwnedMutexGuard<Output>,
    reader: ChunkReader,
    job: SnapshotJob,
) -> Result<((u64, u64), u64), SnapshotError> {
    let start = out.state.length;
    let r = snapshot_records(&mut out, reader, &job);
    match r {
        Ok((keys, skipped, bytes)) => {
            out.resp_db = None;
            let pos = Pos {
                replid: job.replid.clone(),
                offset: job.offset,
                db: 0,
            };
            out.commit(&job.shard, &[], pos)
                .map_err(|e| SnapshotError::Output(e.to_string()))?;
            Ok(((keys, skipped), bytes))
        }
        Err(e) => {
            out.cut_back(start);
            Err(e)
        }
    }
}

fn snapshot_records(
    out: &mut Output,
    reader: ChunkReader,
    job: &SnapshotJob,
) -> Result<(u64, u64, u64), SnapshotError> {
    let label = out.label.clone();
    let oe = |e: io::Error| SnapshotError::Output(format!("cannot write the output {label}: {e}"));
    let format = out.format;
    match format {
        OutputFormat::Jsonl => out
            .write_raw(&meta_line(
                "snapshot-begin",
                &job.shard,
                &job.replid,
                job.offset,
                None,
            ))
            .map_err(oe)?,
        OutputFormat::Resp if job.flush_first => {
            let mut b = Vec::new();
            encode_command(&mut b, &[&b"FLUSHALL"[..]]);
            out.write_raw(&b).map_err(oe)?;
        }
        OutputFormat::Resp => {}
    }
    let mut parser = RdbParser::with_options(reader, job.popts.clone());
    let mut progress = Progress::new("shake-sync", None, job.quiet, None);
    let filter = KeyFilter::default();
    let de = |e: DriveError| match e {
        DriveError::Output(e) => {
            SnapshotError::Output(format!("cannot write the output {label}: {e}"))
        }
        DriveError::Rdb(e) => SnapshotError::Rdb(format!(
            "{}: the full sync's RDB is not valid: {e}",
            job.source
        )),
    };
    let (summary, skipped) = {
        let mut w = Counting(out);
        match format {
            OutputFormat::Jsonl => {
                let mut sink = JsonLinesSink::new(&mut w, false);
                (
                    drive(&mut parser, &filter, &mut sink, &mut progress).map_err(de)?,
                    0,
                )
            }
            OutputFormat::Resp => {
                let mut sink = RespSink::new(&mut w);
                let s = drive(&mut parser, &filter, &mut sink, &mut progress).map_err(de)?;
                (s, sink.skipped_modules())
            }
        }
    };
    if format == OutputFormat::Jsonl {
        let end = meta_line(
            "snapshot-end",
            &job.shard,
            &job.replid,
            job.offset,
            Some(summary.keys_written),
        );
        out.write_raw(&end).map_err(oe)?;
    }
    out.w.flush().map_err(oe)?;
    Ok((summary.keys_written, skipped, summary.bytes))
}

fn log(s: &OutputSettings, name: &str, msg: &str) {
    if !s.quiet {
        eprintln!("shake-sync: {name}: {msg}");
    }
}

/// Runs the output until `stop` turns true (then writes what is complete and returns) or a
/// shard fails for good (then the others are stopped and the error is returned).
pub async fn run(
    s: OutputSettings,
    board: StatusBoard,
    stop: watch::Receiver<bool>,
) -> Result<SyncSummary, SyncError> {
    let started = Instant::now();
    if s.name.is_empty() || s.name.contains(char::is_whitespace) {
        return Err(SyncError::Fatal(format!(
            "--checkpoint-name {:?}: with --output the name is a shard's name in the output: give one without spaces",
            s.name
        )));
    }
    let out = Output::open(&s)?;
    let (specs, cluster) = shards(&s, &out.state).await?;
    if cluster && s.resync && s.format == OutputFormat::Resp {
        return Err(SyncError::Fatal("--output-resync with --output-format resp and a cluster source: a new snapshot of one shard cannot say which keys the source deleted meanwhile without emptying the other shards' keys too (FLUSHALL); start a new output instead".into()));
    }
    let known = out.state.shards.clone();
    let out = Arc::new(AsyncMutex::new(out));
    let settings = Arc::new(s);
    let (inner_tx, inner) = watch::channel(false);
    let relay = {
        let mut outer = stop.clone();
        let tx = inner_tx.clone();
        tokio::spawn(async move {
            let _ = outer.wait_for(|v| *v).await;
            let _ = tx.send(true);
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs {
        let mut st = ShardStatus::for_seed(&spec.name, &spec.seed);
        if let Some(p) = known.get(&spec.name) {
            // The history a cluster shard's master is found by again (link::resolve_source).
            st.replid = p.replid.clone();
        }
        let status = board.add(st);
        tasks.spawn(run_shard(
            spec,
            settings.clone(),
            out.clone(),
            status,
            inner.clone(),
        ));
    }
    let mut first: Option<SyncError> = None;
    while let Some(r) = tasks.join_next().await {
        let e = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => SyncError::Fatal(format!("a shard's writer ended: {e}")),
        };
        if first.is_none() {
            first = Some(e);
            let _ = inner_tx.send(true);
        }
    }
    relay.abort();
    if let Some(e) = first {
        return Err(e);
    }
    Ok(SyncSummary {
        shards: board.snapshot(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The source's shards: one for a standalone source; one per master of a cluster, each named
/// by the shard of the output whose replication id is in its history (after a failover the
/// new master keeps the old id as `master_replid2`), else `<name>/<first slot>`.
async fn shards(s: &OutputSettings, state: &State) -> Result<(Vec<LinkSpec>, bool), SyncError> {
    let fatal = |e: String| SyncError::Fatal(format!("source: {e}"));
    let mut conn = Connection::connect(&s.source, &s.connect)
        .await
        .map_err(|e| fatal(e.to_string()))?;
    let cluster = match s.source_cluster {
        Some(c) => c,
        None => crate::client::topology::is_cluster(&mut conn)
            .await
            .map_err(|e| fatal(e.to_string()))?,
    };
    let spec = |name: String, seed: Endpoint, first_slot, nodes: Vec<Endpoint>| LinkSpec {
        name,
        seed,
        first_slot,
        source_nodes: nodes,
        handover: None,
        joined: false,
        flush: link::Flush::No,
    };
    if !cluster {
        let spec = spec(
            s.name.clone(),
            s.source.clone(),
            None,
            vec![s.source.clone()],
        );
        return Ok((vec![spec], false));
    }
    let topo = crate::client::Topology::fetch(&mut conn)
        .await
        .map_err(|e| fatal(e.to_string()))?;
    let masters = topo.masters().to_vec();
    let mut specs = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for (i, m) in masters.iter().enumerate() {
        let first = topo.ranges_of(i).first().map(|r| r.0).unwrap_or(0);
        let mut c = Connection::connect(m, &s.connect)
            .await
            .map_err(|e| fatal(e.to_string()))?;
        let info = c
            .info("replication")
            .await
            .map_err(|e| fatal(format!("{m}: {e}")))?;
        let history: Vec<&String> = ["master_replid", "master_replid2"]
            .iter()
            .filter_map(|k| info.get(*k))
            .collect();
        let name = state
            .shards
            .iter()
            .find(|(n, p)| history.contains(&&p.replid) && !taken.contains(n))
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("{}/{first}", s.name));
        taken.push(name.clone());
        specs.push(spec(name, m.clone(), Some(first), masters.clone()));
    }
    let lost: Vec<&String> = state.shards.keys().filter(|n| !taken.contains(n)).collect();
    if !lost.is_empty() && !s.resync {
        return Err(SyncError::Fatal(format!(
            "the output holds shards {} whose history no master of the source continues (the cluster was rebuilt, or a master left): the output cannot go on from them; start a new output, or give --output-resync to append new snapshots",
            lost.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((specs, true))
}

/// One shard's sessions until stopped, retried as a sync's links are ([`link::Retry`]).
async fn run_shard(
    spec: LinkSpec,
    s: Arc<OutputSettings>,
    out: Arc<AsyncMutex<Output>>,
    status: Status,
    stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    let mut retry = Retry::new();
    loop {
        let started = Instant::now();
        let r = link::within_stop_grace(
            session(&spec, &s, &out, &status, stop.clone()),
            stop.clone(),
        )
        .await
        .map_err(SyncError::name_credential);
        let e = match r {
            Ok(()) => return Ok(()),
            Err(SyncError::Unrecorded(_)) => {
                return Err(SyncError::Unrecorded(format!(
                    "{}: stopped, but the output did not take what was in flight within {}s: the next start goes on from the last position recorded in the state; nothing is lost",
                    spec.name,
                    link::STOP_GRACE.as_secs()
                )))
            }
            Err(e) => e,
        };
        if *stop.borrow() {
            return Err(e);
        }
        let who = RetryLog {
            name: &spec.name,
            quiet: s.quiet,
            resume_from: "the output's last recorded position",
        };
        if !retry
            .after(e, started, &status, &stop, s.retry_for, who)
            .await?
        {
            return Ok(());
        }
    }
}

async fn session(
    spec: &LinkSpec,
    s: &OutputSettings,
    out: &Arc<AsyncMutex<Output>>,
    status: &Status,
    stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    link::update(status, |st| st.phase = Phase::Handshake);
    // The stream is read from the master itself (no --source-replica with --output).
    let (source, _) = link::resolve_source(spec, &s.connect, status).await?;
    let pos = out.lock().await.state.shards.get(&spec.name).cloned();
    let resume = pos.as_ref().map(|p| Resume {
        replid: p.replid.clone(),
        offset: p.offset,
    });
    let conn = Connection::connect(&source, &s.connect)
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    link::record_source(status, &source, &conn);
    let (mut stream, db) = match start_sync(conn, &s.repl, resume.as_ref()).await? {
        SyncStart::Full(transfer) => {
            let (Some(replid), Some(offset)) =
                (transfer.replid().map(str::to_string), transfer.offset())
            else {
                return Err(SyncError::Fatal(format!(
                    "{source} answered with SYNC, without a replication id and offset: --output needs PSYNC (for a renamed PSYNC, name it with --psync-command)"
                )));
            };
            if let Some(p) = &pos {
                if !s.resync {
                    return Err(SyncError::Fatal(format!(
                        "{}: {source} cannot continue the output from {} offset {} (its backlog no longer holds it, or its history changed: a restart, a failover to a replica that was not in sync); the output is left as it is. Start a new output, or give --output-resync to append a new snapshot to this one (docs/shake-sync.md#resuming-an-output)",
                        spec.name, p.replid, p.offset
                    )));
                }
                log(s, &spec.name, &format!("{source} cannot continue from {} offset {}: a new snapshot follows in the output (--output-resync)", p.replid, p.offset));
            } else {
                log(
                    s,
                    &spec.name,
                    &format!("full sync from {source} into the output"),
                );
            }
            link::update(status, |st| {
                st.phase = Phase::FullSync;
                st.full_syncs += 1;
                st.replid = replid.clone();
                st.rdb_bytes_received = 0;
                st.rdb_bytes_applied = 0;
                st.rdb_keys_applied = 0;
            });
            let job = SnapshotJob {
                shard: spec.name.clone(),
                replid,
                offset,
                flush_first: pos.is_some(),
                popts: ParserOptions {
                    relaxed_version: s.relaxed_version,
                    ..ParserOptions::default()
                },
                quiet: s.quiet || spec.first_slot.is_some(),
                source: source.to_string(),
            };
            match snapshot(spec, s, out, status, transfer, job, stop.clone()).await? {
                Some(stream) => (stream, 0),
                None => return Ok(()),
            }
        }
        SyncStart::Continue(stream) => {
            let db = pos.as_ref().map(|p| p.db).unwrap_or(0);
            log(
                s,
                &spec.name,
                &format!(
                    "resumed from offset {} in source database {db} (partial resync)",
                    stream.offset()
                ),
            );
            link::update(status, |st| st.partial_syncs += 1);
            (stream, db)
        }
    };
    stream_loop(spec, s, out, status, &mut stream, db, stop).await
}

/// The full sync into the output; `None` when a stop came first (what was written of it is cut
/// back off a file; the next start writes it again).
async fn snapshot(
    spec: &LinkSpec,
    s: &OutputSettings,
    out: &Arc<AsyncMutex<Output>>,
    status: &Status,
    mut transfer: Transfer,
    job: SnapshotJob,
    stop: watch::Receiver<bool>,
) -> Result<Option<ReplStream>, SyncError> {
    let applied = Arc::new(AtomicU64::new(0));
    let (reader, tx) = ChunkReader::new(applied.clone());
    let guard = out.clone().lock_owned().await;
    let handle = tokio::task::spawn_blocking(move || write_snapshot(guard, reader, job));
    let consume = async move {
        match handle.await {
            Ok(r) => r,
            Err(e) => Err(SnapshotError::Output(format!(
                "the snapshot writer failed: {e}"
            ))),
        }
    };
    let figures = || {
        link::update(status, |st| {
            st.rdb_bytes_applied = applied.load(Ordering::Relaxed)
        });
    };
    let mut halt = stop.clone();
    let r = tokio::select! {
        r = link::pump_transfer(&mut transfer, status, tx, &applied, consume, figures) => Some(r),
        _ = halt.wait_for(|v| *v) => None,
    };
    let Some(r) = r else {
        // The writer sees the transfer end, cuts what it wrote and lets go of the output.
        drop(out.lock().await);
        log(
            s,
            &spec.name,
            "stopped during the full sync; the next start writes the snapshot again",
        );
        link::update(status, |st| st.phase = Phase::Stopped);
        return Ok(None);
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            drop(out.lock().await);
            return Err(e);
        }
    };
    let ((keys, skipped), bytes) = r.map_err(|e| match e {
        SnapshotError::Output(m) => SyncError::Fatal(m),
        SnapshotError::Rdb(m) => SyncError::Source(m),
    })?;
    link::update(status, |st| {
        st.rdb_bytes_applied = bytes;
        st.rdb_keys_applied = keys;
    });
    let modules = if skipped > 0 {
        format!(", {skipped} module or array values left out (no command form)")
    } else {
        String::new()
    };
    log(
        s,
        &spec.name,
        &format!(
            "snapshot written: {keys} keys{modules}, {bytes} RDB bytes; incremental from here"
        ),
    );
    let (stream, _) = transfer.finish().await?;
    Ok(Some(stream))
}

async fn stream_loop(
    spec: &LinkSpec,
    s: &OutputSettings,
    out: &Arc<AsyncMutex<Output>>,
    status: &Status,
    stream: &mut ReplStream,
    mut db: u64,
    stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    stream.stop_on(stop.clone());
    let replid = stream.replid().unwrap_or_default().to_string();
    link::update(status, |st| {
        st.phase = Phase::Incremental;
        st.replid = replid.clone();
    });
    let base = status.lock().map(|st| st.commands_applied).unwrap_or(0);
    let mut end = stream.offset();
    // Where the output may end: after the last command outside a transaction.
    let (mut committed, mut committed_db) = (end, db);
    let mut ready: Vec<Rec> = Vec::new();
    let mut tx: Option<Vec<Rec>> = None;
    let mut written = 0u64;
    loop {
        let mut ack = false;
        loop {
            let mut need = 0;
            let parsed = parse_command_needing(
                &stream.buffer()[..],
                link::MAX_ARGS,
                link::MAX_BULK,
                &mut need,
            )
            .map_err(|e| {
                SyncError::Source(format!(
                    "{}: the command stream at offset {} is not valid: {e}",
                    spec.name,
                    end + 1
                ))
            })?;
            let Some(p) = parsed else {
                let buf = stream.buffer();
                if need > buf.capacity() && need - buf.len() > 1 << 20 {
                    buf.reserve(need - buf.len());
                }
                break;
            };
            let frame = stream.buffer().split_to(p.len).freeze();
            end += p.len as u64;
            let Some(name) = p.args.first().map(|r| &frame[r.clone()]) else {
                continue;
            };
            let kind = command_info(name).map(|c| c.kind);
            let arg = |i: usize| p.args.get(i).map(|r| &frame[r.clone()]);
            let rec = |db| Rec {
                db,
                offset: end,
                frame: frame.clone(),
                args: p.args.clone(),
            };
            match kind {
                Some(Kind::Select) => {
                    db = arg(1)
                        .and_then(|d| std::str::from_utf8(d).ok())
                        .and_then(|d| d.parse().ok())
                        .ok_or_else(|| {
                            SyncError::Source(format!(
                                "{}: SELECT without a database number at offset {end}",
                                spec.name
                            ))
                        })?;
                }
                Some(Kind::Ping) => {}
                Some(Kind::ReplConf) => {
                    ack |= arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"));
                }
                Some(Kind::Publish) if !s.forward_publish => {}
                Some(Kind::Multi) => tx.get_or_insert_with(Vec::new).push(rec(db)),
                Some(Kind::Exec) => {
                    // An EXEC without its MULTI has nothing to close.
                    // A transaction the command filters emptied (its MULTI alone) is left out.
                    if let Some(mut t) = tx.take().filter(|t| t.len() > 1) {
                        t.push(rec(db));
                        ready.append(&mut t);
                    }
                }
                _ if !s.commands.allows(name) => {}
                _ => match &mut tx {
                    Some(t) => t.push(rec(db)),
                    None => ready.push(rec(db)),
                },
            }
            if tx.is_none() {
                (committed, committed_db) = (end, db);
            }
        }
        if !ready.is_empty() || committed > stream.offset() {
            let pos = Pos {
                replid: replid.clone(),
                offset: committed,
                db: committed_db,
            };
            out.lock().await.commit(&spec.name, &ready, pos)?;
            written += ready.len() as u64;
            ready.clear();
            stream.advance(committed - stream.offset());
        }
        if ack {
            stream.ack().await?;
        }
        link::update(status, |st| {
            st.received_offset = end;
            st.applied_offset = committed;
            st.source_offset = st.source_offset.max(end);
            st.lag_bytes = end - committed;
            st.commands_applied = base + written;
        });
        if *stop.borrow() {
            break;
        }
        if stream.fill().await? == 0 {
            break;
        }
    }
    let _ = stream.ack().await;
    link::update(status, |st| st.phase = Phase::Stopped);
    log(
        s,
        &spec.name,
        &format!(
            "stopped at offset {committed}{}",
            if tx.is_some() {
                " (a source transaction still open was left for the next start)"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_names_bad_lines() {
        let mut st = State {
            length: 1234,
            ..State::default()
        };
        st.shards.insert(
            "h:1/0".into(),
            Pos {
                replid: "a".repeat(40),
                offset: 99,
                db: 3,
            },
        );
        assert_eq!(State::parse(&st.render()), Ok(st));
        assert!(State::parse("nope\n").unwrap_err().contains("line 1"));
        let e = State::parse(&format!("{STATE_MAGIC}\nlength x\n")).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(State::parse(&format!("{STATE_MAGIC}\n")).is_err());
    }

    #[test]
    fn state_beside_the_file() {
        assert_eq!(
            state_path(Some(Path::new("/x/out.aof")), None),
            Some(PathBuf::from("/x/out.aof.state"))
        );
        assert_eq!(state_path(None, None), None);
        assert_eq!(
            state_path(None, Some("/s".into())),
            Some(PathBuf::from("/s"))
        );
    }
}
