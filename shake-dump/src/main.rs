//! shake-dump: a consistent RDB snapshot of a live server, or of every master of a cluster,
//! taken through the replication protocol and written byte for byte as the source sent it.
//!
//! This binary is wiring: arguments, outputs (FILE.part renamed only once complete and checked,
//! DIR/ with one file per master, stdout), progress and exit codes. The replication protocol and
//! the RDB check live in `shake_core::repl`, cluster discovery in `shake_core::client`.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use shake_core::cli::{PreflightArgs, ShardArgs};
use shake_core::client::{discover_share, is_cluster};
use shake_core::net::{ConnectOptions, Connection, Endpoint};
use shake_core::observe::Progress;
use shake_core::part_file::PartFile;
use shake_core::preflight::Preflight;
use shake_core::rdb::ChecksumStatus;
use shake_core::repl::{full_sync, RdbSummary, ReplOptions};
use shake_core::shard::Shard;

/// Where the source's password may come from instead of the URL (keeps it out of `ps`).
const PASSWORD_ENV: &str = "SHAKE_SOURCE_PASSWORD";

/// Take a consistent RDB snapshot of a live server through the replication protocol.
///
/// Asks the source for a full resynchronisation (PSYNC, or SYNC on servers without it), the way
/// a new replica does, and writes the RDB it sends exactly as sent: disk-based or diskless,
/// without the diskless end mark. The RDB is checked while it streams (structure and CRC-64); a
/// file is written as FILE.part and renamed to FILE only when complete and checked, so a failed
/// dump never leaves a FILE behind. A cluster source gives one file per master, dumped in
/// parallel, into a directory.
///
/// The source forks (as for BGSAVE) to produce the snapshot: plan for its copy-on-write memory.
/// With `repl-diskless-sync no` it also writes the RDB to its own disk first.
///
/// Exit status: 0 success, 1 failure (one line on stderr names the endpoint and what happened),
/// 2 usage error.
#[derive(Parser, Debug)]
#[command(
    name = "shake-dump",
    version,
    after_help = "Examples:\n  shake-dump --source redis://10.0.0.5:6379 -o backup.rdb\n  SHAKE_SOURCE_PASSWORD=secret shake-dump --source redis://app:@10.0.0.5 -o backup.rdb   (ACL user app)\n  shake-dump --source redis://node1:7000 -o backups/          (a cluster: one file per master)\n  shake-dump --source redis://a:6379 -o - | shake-decode - | jq .key\n  shake-dump --source redis://a:6379 --preflight              (check the source, write nothing)"
)]
struct Args {
    /// The server to dump: redis://[[user]:password@]host[:port] (rediss:// for TLS). The
    /// password may come from SHAKE_SOURCE_PASSWORD instead (redis://user:@host for an ACL
    /// user). A cluster node stands for its whole cluster
    #[arg(short, long, env = "SHAKE_SOURCE", value_name = "URL")]
    source: String,

    #[command(flatten)]
    source_sentinel: shake_core::cli::SourceSentinelArgs,

    /// Where the RDB goes: FILE (written as FILE.part, renamed when complete and checked), DIR/
    /// (one HOST_PORT.rdb per master; needed for a cluster), or - for stdout. Not needed with
    /// --preflight
    #[arg(
        short,
        long,
        value_name = "PATH",
        required_unless_present = "preflight"
    )]
    output: Option<String>,

    /// Dump only the functions, no keys (REPLCONF rdb-filter-only functions; Redis 7.0+, Valkey)
    #[arg(long)]
    functions_only: bool,

    /// The name of PSYNC on this source, for managed services that rename it. Sources without
    /// PSYNC are asked with SYNC
    #[arg(long, value_name = "NAME", default_value = "PSYNC")]
    psync_command: String,

    /// Dump every master of the cluster without asking INFO whether the source is a cluster
    /// (for sources where INFO is disabled; default: detected)
    #[arg(
        long = "source-cluster",
        alias = "cluster",
        conflicts_with = "single_node"
    )]
    cluster: bool,

    /// Dump only the node given by --source, even when it is a cluster node
    #[arg(long = "no-source-cluster", alias = "single-node")]
    single_node: bool,

    #[command(flatten)]
    conn: shake_core::cli::ConnArgs,

    /// No progress bar, status lines or summary on stderr (errors still go there)
    #[arg(short, long)]
    quiet: bool,

    /// Seconds between status lines on stderr when it is not a terminal (0 turns them off)
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    log_interval: u64,

    #[command(flatten)]
    shard: ShardArgs,

    // --preflight checks the source only: reachable, AUTH/ACL, TLS, PSYNC (or --psync-command)
    // allowed without starting a sync, backlog, output buffer, keyspace.
    #[command(flatten)]
    preflight: PreflightArgs,
}

enum Failure {
    Usage(String),
    Run(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread runs every transfer (even a cluster's: they wait on sockets, and writing a
    // chunk is one syscall); the RDB checks run on blocking threads. A multi-threaded runtime
    // only added wake-ups between its workers.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shake-dump: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if args.preflight.preflight {
        return match rt.block_on(preflight(&args)) {
            Ok(code) => ExitCode::from(code),
            Err(m) => {
                eprintln!("shake-dump: {m}");
                ExitCode::from(2)
            }
        };
    }
    let result = rt.block_on(run_until_signal(args));
    // Dropping the runtime drops any dump still running, whose guards delete their .part files.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("shake-dump: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("shake-dump: {m}");
            ExitCode::from(1)
        }
    }
}

/// The source's endpoint, with the password from the environment when the URL has none.
fn source_endpoint(args: &Args) -> Result<Endpoint, String> {
    // `redis://user:@host` names an ACL user whose password comes from the environment.
    let endpoint = args
        .source_sentinel
        .endpoint(&args.source)?
        .password_from_env(PASSWORD_ENV);
    if args.conn.tls.any() && !endpoint.tls {
        return Err(
            "--tls-ca, --tls-pin-sha256 and --tls-insecure need a rediss:// source URL".into(),
        );
    }
    Ok(endpoint)
}

fn connect_options(args: &Args) -> ConnectOptions {
    args.conn.to_options()
}

/// `--preflight`: the source checks, printed; the exit code says whether anything blocks.
async fn preflight(args: &Args) -> Result<u8, String> {
    let endpoint = source_endpoint(args)?;
    let mut pf = Preflight::new(connect_options(args));
    pf.psync_command = args.psync_command.clone();
    pf.source_cluster = if args.cluster {
        Some(true)
    } else if args.single_node {
        Some(false)
    } else {
        None
    };
    Ok(pf.dump(&endpoint).await.print(args.preflight.json))
}

/// Runs the dump; Ctrl-C or SIGTERM stops it and removes partial files.
async fn run_until_signal(args: Args) -> Result<(), Failure> {
    use shake_core::signals::Signal;
    tokio::select! {
        r = run(args) => r,
        s = shake_core::signals::next() => Err(Failure::Run(match s {
            Signal::Interrupt => "interrupted; partial output removed".into(),
            Signal::Terminate => "terminated; partial output removed".into(),
        })),
    }
}

/// What `-o` names.
#[derive(Debug, Clone)]
enum Output {
    Stdout,
    File(PathBuf),
    Dir(PathBuf),
}

impl Output {
    fn parse(s: &str) -> Output {
        if s == "-" {
            Output::Stdout
        } else if s.ends_with('/') || Path::new(s).is_dir() {
            Output::Dir(PathBuf::from(s))
        } else {
            Output::File(PathBuf::from(s))
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let endpoint = source_endpoint(&args).map_err(Failure::Usage)?;
    let output = Output::parse(args.output.as_deref().unwrap_or("-"));
    if matches!(output, Output::Stdout) && io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "refusing to write a binary RDB to a terminal: redirect stdout, pipe it, or give -o FILE"
                .into(),
        ));
    }
    if !args.quiet {
        if let Some(db) = endpoint.db {
            eprintln!("shake-dump: note: an RDB holds every database; /{db} in the URL is ignored");
        }
    }
    let copts = connect_options(&args);
    let ropts = ReplOptions {
        psync_command: args.psync_command.clone(),
        // A dump needs no backlog on the source, and the source closes the link after the RDB.
        rdb_only: true,
        functions_only: args.functions_only,
        idle_timeout: Duration::from_secs(args.conn.timeout.max(1)),
        verify: true,
        ..ReplOptions::default()
    };
    let log_every = (args.log_interval > 0).then(|| Duration::from_secs(args.log_interval));

    // Standalone or cluster? The first connection is kept for a standalone dump.
    let shard = args.shard.to_shard().map_err(Failure::Usage)?;
    let (first, masters) = if args.cluster {
        (None, Some(masters_of(&endpoint, &copts, shard).await?))
    } else {
        let mut conn = Connection::connect(&endpoint, &copts)
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
        if !args.single_node
            && is_cluster(&mut conn).await.map_err(|e| {
                let msg = e.to_string();
                if msg.contains("NOPERM") {
                    Failure::Run(format!("{msg} (INFO tells whether the source is a cluster: grant the user +info, or say it with --no-source-cluster or --source-cluster)"))
                } else {
                    Failure::Run(msg)
                }
            })?
        {
            drop(conn);
            (None, Some(masters_of(&endpoint, &copts, shard).await?))
        } else if !shard.takes(None) {
            eprintln!("shake-dump: {}", shard.nothing_to_do(1));
            return Ok(());
        } else {
            (Some(conn), None)
        }
    };

    let started = Instant::now();
    if masters.as_ref().is_some_and(|m| m.is_empty()) {
        return Ok(());
    }
    match masters {
        None => {
            let dest = match &output {
                Output::Stdout => Dest::Stdout(stdout_file()?),
                Output::File(p) => Dest::Part(PartFile::create(p).map_err(Failure::Usage)?),
                Output::Dir(d) => {
                    create_dir(d)?;
                    Dest::Part(
                        PartFile::create(&d.join(file_name_for(&endpoint)))
                            .map_err(Failure::Usage)?,
                    )
                }
            };
            let meter = Arc::new(Meter::new(true, args.quiet, log_every));
            let job = Job {
                endpoint,
                conn: first,
                dest,
            };
            let done = dump_one(job, copts, ropts, meter.clone())
                .await
                .map_err(Failure::Run)?;
            meter.finish();
            let line = done.summary_line();
            done.dest.commit().map_err(Failure::Run)?;
            if !args.quiet {
                eprintln!("shake-dump: {line}");
            }
            Ok(())
        }
        Some(masters) => {
            let dir = match &output {
                Output::Dir(d) => d.clone(),
                Output::Stdout => {
                    return Err(Failure::Usage(format!(
                        "{endpoint} is a cluster of {} masters: -o - can carry only one RDB; give -o DIR/ for one file per master, or --no-source-cluster to dump only this node",
                        masters.len()
                    )))
                }
                Output::File(p) => {
                    return Err(Failure::Usage(format!(
                        "{endpoint} is a cluster of {} masters: -o must name a directory (end it with /) for one file per master, not {}; or give --no-source-cluster to dump only this node",
                        masters.len(),
                        p.display()
                    )))
                }
            };
            create_dir(&dir)?;
            dump_cluster(masters, &dir, copts, ropts, args.quiet, log_every, started).await
        }
    }
}

/// The cluster's masters of this `--shard` (none, after saying so, when it has nothing to do).
async fn masters_of(
    endpoint: &Endpoint,
    copts: &ConnectOptions,
    shard: Shard,
) -> Result<Vec<Endpoint>, Failure> {
    let (share, all) = discover_share(endpoint, copts, shard)
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    if share.is_empty() {
        eprintln!("shake-dump: {}", shard.nothing_to_do(all));
    }
    Ok(share)
}

fn create_dir(d: &Path) -> Result<(), Failure> {
    fs::create_dir_all(d)
        .map_err(|e| Failure::Usage(format!("cannot create the directory {}: {e}", d.display())))
}

/// `HOST_PORT.rdb`, with anything but letters, digits, dots and dashes in the host (an IPv6
/// address's colons) turned into `-`, so the name is safe in every shell and file system.
fn file_name_for(e: &Endpoint) -> String {
    let host: String = e
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}_{}.rdb", e.port)
}

/// stdout as a plain file: unbuffered writes of whole chunks (Rust's stdout would look for
/// newlines in binary data).
fn stdout_file() -> Result<File, Failure> {
    use std::os::fd::AsFd;
    io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| Failure::Run(format!("cannot use stdout: {e}")))
}

enum Dest {
    Stdout(File),
    Part(PartFile),
}

impl Dest {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Dest::Stdout(f) => f.write_all(bytes).map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    "cannot write to stdout: the reader went away (broken pipe)".to_string()
                } else {
                    format!("cannot write to stdout: {e}")
                }
            }),
            Dest::Part(p) => p.write(bytes),
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        match self {
            Dest::Stdout(f) => f
                .flush()
                .map_err(|e| format!("cannot write to stdout: {e}")),
            Dest::Part(p) => p.sync(),
        }
    }

    fn commit(self) -> Result<(), String> {
        match self {
            Dest::Stdout(_) => Ok(()),
            Dest::Part(p) => p.commit(),
        }
    }

    fn name(&self) -> String {
        match self {
            Dest::Stdout(_) => "stdout".into(),
            Dest::Part(p) => p.dest_path().display().to_string(),
        }
    }
}

/// Progress over one or several concurrent dumps: bytes and keys summed over all of them.
struct Meter {
    progress: Mutex<Option<Progress>>,
    single: bool,
    quiet: bool,
    log_every: Option<Duration>,
    bytes: AtomicU64,
    keys: AtomicU64,
}

impl Meter {
    fn new(single: bool, quiet: bool, log_every: Option<Duration>) -> Meter {
        // Several dumps share one meter whose total is unknown (bytes and rate); a single dump
        // gets its meter when the transfer starts, with the size when the source announced it.
        let progress = (!single).then(|| Progress::new("shake-dump", None, quiet, log_every));
        Meter {
            progress: Mutex::new(progress),
            single,
            quiet,
            log_every,
            bytes: AtomicU64::new(0),
            keys: AtomicU64::new(0),
        }
    }

    fn transfer_started(&self, total: Option<u64>) {
        if self.single {
            if let Ok(mut p) = self.progress.lock() {
                *p = Some(Progress::new(
                    "shake-dump",
                    total,
                    self.quiet,
                    self.log_every,
                ));
            }
        }
    }

    fn add(&self, bytes: u64, keys: u64) {
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let k = self.keys.fetch_add(keys, Ordering::Relaxed) + keys;
        if let Ok(mut p) = self.progress.lock() {
            if let Some(p) = p.as_mut() {
                p.update_now(b, k);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut p) = self.progress.lock() {
            if let Some(p) = p.as_mut() {
                p.finish(
                    self.bytes.load(Ordering::Relaxed),
                    self.keys.load(Ordering::Relaxed),
                );
            }
        }
    }
}

/// One source node and where its RDB goes.
struct Job {
    endpoint: Endpoint,
    /// An already open connection to it, if there is one.
    conn: Option<Connection>,
    dest: Dest,
}

/// A finished, checked dump; `dest` is still to be committed.
struct Done {
    endpoint: Endpoint,
    dest: Dest,
    bytes: u64,
    summary: Option<RdbSummary>,
    diskless: bool,
    elapsed: Duration,
}

impl Done {
    fn summary_line(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = self.bytes as f64 / 1e6 / secs.max(1e-6);
        let what = match &self.summary {
            Some(s) => {
                let check = match s.checksum {
                    ChecksumStatus::Valid => "checksum verified",
                    ChecksumStatus::Disabled => {
                        "no checksum (the source has rdbchecksum no), structure verified"
                    }
                    ChecksumStatus::Absent => {
                        "no checksum (RDB before version 5), structure verified"
                    }
                };
                format!(
                    "RDB {} {}, {} keys, {} functions, {check}",
                    s.header.magic.as_str(),
                    s.header.version,
                    s.keys,
                    s.functions
                )
            }
            None => "not checked".into(),
        };
        format!(
            "{} -> {}: {} bytes ({what}), {} transfer, {secs:.1}s, {rate:.1} MB/s",
            self.endpoint,
            self.dest.name(),
            self.bytes,
            if self.diskless {
                "diskless"
            } else {
                "disk-based"
            }
        )
    }
}

/// Dumps one node into its destination (not committed yet). Errors are one line naming the
/// endpoint.
async fn dump_one(
    job: Job,
    copts: ConnectOptions,
    ropts: ReplOptions,
    meter: Arc<Meter>,
) -> Result<Done, String> {
    let Job {
        endpoint,
        conn,
        mut dest,
    } = job;
    let started = Instant::now();
    let conn = match conn {
        Some(c) => c,
        None => Connection::connect(&endpoint, &copts)
            .await
            .map_err(|e| e.to_string())?,
    };
    // The source may need a while (a BGSAVE to its disk) before the transfer starts: say so
    // rather than sit silent.
    let sync = full_sync(conn, &ropts);
    tokio::pin!(sync);
    let mut transfer = tokio::select! {
        r = &mut sync => r,
        _ = tokio::time::sleep(Duration::from_secs(2)) => {
            if !meter.quiet {
                eprintln!("shake-dump: {endpoint}: full sync requested; waiting for the source to produce the snapshot");
            }
            sync.await
        }
    }
    .map_err(|e| e.to_string())?;
    meter.transfer_started(transfer.size());
    let mut keys = 0;
    while let Some(chunk) = transfer.next_chunk().await.map_err(|e| e.to_string())? {
        dest.write(&chunk).map_err(|e| format!("{endpoint}: {e}"))?;
        let k = transfer.keys_seen();
        meter.add(chunk.len() as u64, k.saturating_sub(keys));
        keys = k;
    }
    let bytes = transfer.received();
    let diskless = transfer.is_diskless();
    let (_stream, summary) = transfer.finish().await.map_err(|e| e.to_string())?;
    if let Some(s) = &summary {
        meter.add(0, s.keys.saturating_sub(keys));
    }
    dest.sync().map_err(|e| format!("{endpoint}: {e}"))?;
    Ok(Done {
        endpoint,
        dest,
        bytes,
        summary,
        diskless,
        elapsed: started.elapsed(),
    })
}

/// Dumps every master in parallel; the files are renamed into place only when all of them are
/// complete and checked, so a failed cluster dump leaves no files at all (a partial set would
/// look like a backup of the whole cluster).
async fn dump_cluster(
    masters: Vec<Endpoint>,
    dir: &Path,
    copts: ConnectOptions,
    ropts: ReplOptions,
    quiet: bool,
    log_every: Option<Duration>,
    started: Instant,
) -> Result<(), Failure> {
    // Create every file before asking any master for a snapshot: a fork on each master is a cost
    // not worth paying when the output cannot even be written.
    let mut jobs = Vec::new();
    for m in &masters {
        jobs.push(Job {
            endpoint: m.clone(),
            conn: None,
            dest: Dest::Part(
                PartFile::create(&dir.join(file_name_for(m))).map_err(Failure::Usage)?,
            ),
        });
    }
    if !quiet {
        eprintln!(
            "shake-dump: cluster of {} masters: {}",
            masters.len(),
            masters
                .iter()
                .map(|m| m.address())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let meter = Arc::new(Meter::new(false, quiet, log_every));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(dump_one(job, copts.clone(), ropts.clone(), meter.clone()));
    }
    let mut done = Vec::new();
    let mut failure = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(d)) => done.push(d),
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(e) => {
                failure = Some(format!("a dump task failed: {e}"));
                break;
            }
        }
    }
    if let Some(e) = failure {
        // Stop the other masters' transfers; their guards delete their .part files, and the
        // finished ones in `done` are deleted when it drops.
        set.abort_all();
        while set.join_next().await.is_some() {}
        meter.finish();
        return Err(Failure::Run(format!(
            "{e} (no file of this cluster dump was kept)"
        )));
    }
    meter.finish();
    done.sort_by_key(|d| d.endpoint.address());
    let lines: Vec<String> = done.iter().map(Done::summary_line).collect();
    let total: u64 = done.iter().map(|d| d.bytes).sum();
    let keys: u64 = done
        .iter()
        .filter_map(|d| d.summary.as_ref().map(|s| s.keys))
        .sum();
    for d in done {
        d.dest.commit().map_err(Failure::Run)?;
    }
    if !quiet {
        for l in &lines {
            eprintln!("shake-dump: {l}");
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "shake-dump: cluster -> {}: {} masters, {total} bytes, {keys} keys, {secs:.1}s, {:.1} MB/s",
            dir.display(),
            lines.len(),
            total as f64 / 1e6 / secs.max(1e-6)
        );
    }
    Ok(())
}
