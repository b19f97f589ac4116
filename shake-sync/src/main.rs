//! shake-sync: keep a target in step with a live source: full sync, then the command stream,
//! resumable from checkpoints kept on the target.

mod config;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use shake_core::cli::{
    ApplyArgs, CommandFilterArgs, ConnArgs, DualChannelArgs, FilterArgs, LogArgs, OutputArgs,
    PreflightArgs, RenameArgs, ShardArgs, TargetErrorArgs,
};
use shake_core::observe::status::StatusBoard;
use shake_core::repl::ReplOptions;
use shake_core::sync::{self, StreamOptions, SyncSettings};

/// Keep a Redis or Valkey target (standalone or cluster) in step with a live source (standalone
/// or cluster): a full sync applied while it streams, then the replication command stream,
/// applied in transactions that also record a checkpoint on the target.
///
/// A restart (after kill -9, a dropped link, a restarted target) resumes from the target's
/// checkpoint with a partial resync: nothing lost, nothing applied twice. A full sync happens
/// only when the source's backlog no longer holds the checkpoint, and the log says so.
///
/// SIGINT/SIGTERM: stop reading, let the target answer what is in flight, record the
/// checkpoint, exit 0. A target that does not answer within 10 s (frozen, unreachable) ends the
/// stop with exit 3: the final checkpoint was not recorded, the next start resumes from the last
/// one that was (nothing lost, nothing applied twice).
///
/// Exit status: 0 stopped cleanly, 1 failure (the message names the endpoint and offset), 2 usage,
/// 3 stopped without recording the final checkpoint.
#[derive(Parser, Debug)]
#[command(
    name = "shake-sync",
    version,
    after_help = "Examples:\n  shake-sync --source redis://10.0.0.1:6379 --target redis://10.0.0.2:6379\n  shake-sync --source redis://10.0.0.1:6379 --target redis://10.0.0.2:6379 --preflight   (check, write nothing)\n  shake-sync --source redis://src-node:7000 --target redis://dst-node:7000 --status-addr 127.0.0.1:9121\n  shake-sync --source redis://10.0.0.1:6379 --output - | kcat -P -b kafka:9092 -t redis-changes   (a change feed)\n  shake-sync --source redis://10.0.0.1:6379 --output changes.aof --output-format resp   (resumable; state in changes.aof.state)\n  shake-sync --config shake.toml           (a RedisShake v4 shake.toml or v3 sync.toml; flags override it; a\n                                           [scan_reader] or [rdb_reader] file runs shake-rump or shake-restore)"
)]
struct Args {
    /// Source URL: redis://[[user]:password@]host[:port], rediss:// for TLS; any node of a
    /// cluster. Password also from SHAKE_SOURCE_PASSWORD
    #[arg(
        short,
        long,
        env = "SHAKE_SOURCE",
        value_name = "URL",
        required_unless_present = "config"
    )]
    source: Option<String>,

    #[command(flatten)]
    source_sentinel: shake_core::cli::SourceSentinelArgs,

    /// Target URL (any node of a cluster). Password also from SHAKE_TARGET_PASSWORD
    #[arg(
        short,
        long,
        env = "SHAKE_TARGET",
        value_name = "URL",
        required_unless_present_any = ["config", "output"]
    )]
    target: Option<String>,

    #[command(flatten)]
    target_sentinel: shake_core::cli::TargetSentinelArgs,

    // --output FILE|- instead of a target: the change stream out (docs/shake-sync.md).
    #[command(flatten)]
    output: OutputArgs,

    /// A RedisShake v4 shake.toml (or v3 sync.toml), read unchanged: every key is used or
    /// reported once as ignored; flags given on the command line win over it. A v4 file whose
    /// reader is [scan_reader] or [rdb_reader] runs shake-rump or shake-restore instead
    /// (docs/migrating-from-redisshake.md)
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Treat the source as a cluster without asking INFO (default: detected)
    #[arg(long, conflicts_with = "source_single_node")]
    source_cluster: bool,

    /// Treat the source as a single server even if it is a cluster node
    #[arg(long = "no-source-cluster", alias = "source-single-node")]
    source_single_node: bool,

    /// Read each source master's stream from one of its replicas (RedisShake's prefer_replica),
    /// sparing the master the fork of a full sync and one more replica's output buffer: the
    /// healthy replica (link up, not syncing, same history) furthest ahead. A shard without one
    /// replicates from its master, with a line saying why. A standalone source's replicas are
    /// the ones its INFO replication lists
    #[arg(long)]
    source_replica: bool,

    /// Treat the target as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "target_standalone")]
    target_cluster: bool,

    /// Treat the target as a standalone server even if it reports cluster mode
    #[arg(long = "no-target-cluster", alias = "target-standalone")]
    target_standalone: bool,

    /// The source's name for PSYNC (managed services rename it)
    #[arg(long, value_name = "NAME", default_value = "PSYNC")]
    psync_command: String,

    #[command(flatten)]
    dual: DualChannelArgs,

    #[command(flatten)]
    apply: ApplyArgs,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    rename: RenameArgs,

    #[command(flatten)]
    target_error: TargetErrorArgs,

    #[command(flatten)]
    commands: CommandFilterArgs,

    /// Also write PUBLISH/SPUBLISH to the target (default: messages are not data, skipped)
    #[arg(long)]
    forward_publish: bool,

    /// On a cluster target, apply a source transaction whose keys are in several hash slots as
    /// one transaction per slot (with a warning) instead of stopping
    #[arg(long)]
    split_transactions: bool,

    /// Empty the target (FLUSHALL on every master) before a full sync: for re-seeding an old
    /// primary after a failover, so keys deleted meanwhile do not survive. With a cluster source
    /// (several links) the target is emptied once, before any link starts, when no link has a
    /// checkpoint to resume from; a link that needs a full sync otherwise stops with an error.
    /// Destructive; not allowed with filters, --db-map or --shard
    #[arg(long)]
    flush_target: bool,

    /// After a full sync, remove the keys of this sync's scope (its databases, keys and slots)
    /// that the new snapshot did not hold and no later command wrote: `auto` when the target
    /// already holds this sync's checkpoint (a fallback full sync: backlog overflow, new
    /// replication id, interrupted full sync), `always` (also a first full sync), `never`
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    prune: String,

    /// Where the checkpoint lives: `target` (keys under shake-sync:checkpoint:<name> in database
    /// 0 of the target, committed with the data) or `target:DB` for another database of a
    /// standalone target
    #[arg(long, value_name = "WHERE", default_value = "target")]
    checkpoint: String,

    /// The name of this sync's checkpoint (default: the source's host:port); a cluster source
    /// adds /<first slot> per shard
    #[arg(long, value_name = "NAME")]
    checkpoint_name: Option<String>,

    /// Serve Prometheus /metrics and JSON /status on HOST:PORT (loopback unless told otherwise)
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<String>,

    /// Keep retrying a failing link this long (seconds) before giving up
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    retry_for: u64,

    /// How often (seconds) a cluster source's topology is read for masters that joined (they
    /// get a link: full sync, then their stream) or left (their link ends and its checkpoint is
    /// deleted); a stream that shows slots moving prompts a read sooner
    #[arg(long, value_name = "SECS", default_value_t = shake_core::sync::TOPOLOGY_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    topology_interval: u64,

    /// Read RDB versions newer than the known ones in the full sync; unknown types still fail
    #[arg(long)]
    relaxed_version: bool,

    #[command(flatten)]
    shard: ShardArgs,

    #[command(flatten)]
    conn: ConnArgs,

    #[command(flatten)]
    log: LogArgs,

    // --preflight checks source, target and the pair, plus where this sync's checkpoint is and
    // whether a start now would resume or full-sync.
    #[command(flatten)]
    preflight: PreflightArgs,
}

fn main() -> ExitCode {
    let argv = match shake_core::redisshake::front_door(
        shake_core::redisshake::Tool::Sync,
        Args::command(),
        std::env::args_os().collect(),
    ) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code),
    };
    let matches = Args::command().get_matches_from(argv);
    let mut args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if let Some(path) = args.config.clone() {
        match config::apply_file(&path, &mut args, &matches) {
            Ok(notes) => {
                for n in notes {
                    eprintln!("shake-sync: {}: {n}", path.display());
                }
            }
            Err(e) => {
                eprintln!("shake-sync: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    match output_settings(&args) {
        Ok(Some(o)) => {
            if args.preflight.preflight {
                eprintln!("shake-sync: --preflight checks a target; with --output there is none");
                return ExitCode::from(2);
            }
            let Some(runtime) = shake_core::cli::runtime("shake-sync") else {
                return ExitCode::from(1);
            };
            let code = runtime.block_on(run_output(o, args.status_addr.clone()));
            runtime.shutdown_timeout(Duration::from_secs(2));
            return code;
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("shake-sync: {e}");
            return ExitCode::from(2);
        }
    }
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shake-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = shake_core::cli::runtime("shake-sync") else {
        return ExitCode::from(1);
    };
    if args.preflight.preflight {
        let code = runtime.block_on(preflight(&settings, args.preflight.json));
        return ExitCode::from(code);
    }
    let code = runtime.block_on(run(settings));
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// The settings of `--output`, `None` without it.
fn output_settings(args: &Args) -> Result<Option<sync::output::OutputSettings>, String> {
    let Some((path, format, state)) = args.output.to_parts()? else {
        return Ok(None);
    };
    let source_url = args
        .source
        .as_deref()
        .ok_or("--source is required (or a config file with [source] address)")?;
    let source = args
        .source_sentinel
        .endpoint(source_url)
        .map_err(|e| format!("--source: {e}"))?
        .password_from_env("SHAKE_SOURCE_PASSWORD");
    let filter = args.filter.to_filter()?;
    if !filter.is_everything() || !args.apply.db_map.is_empty() {
        return Err("--output writes the whole source: --db, --key, --key-regex, --type and --db-map are not applied to it (filter the records downstream)".into());
    }
    if args.flush_target || !args.shard.to_shard()?.is_whole() {
        return Err("--flush-target and --shard have no meaning with --output".into());
    }
    if !args.rename.rename_prefix.is_empty() {
        return Err("--rename-prefix with --output: the change stream carries the source's own names; rename downstream, or sync into a target".into());
    }
    if args.source_replica {
        return Err("--source-replica with --output: not supported yet; --output reads each master's own stream".into());
    }
    let connect = args.conn.to_options();
    Ok(Some(sync::output::OutputSettings {
        name: args
            .checkpoint_name
            .clone()
            .unwrap_or_else(|| source.stable_name()),
        source,
        source_cluster: shake_core::cli::cluster_mode(args.source_cluster, args.source_single_node),
        repl: ReplOptions {
            psync_command: args.psync_command.clone(),
            verify: false,
            idle_timeout: connect
                .reply_timeout
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(30)),
            ..ReplOptions::default()
        },
        connect,
        path,
        format,
        state,
        resync: args.output.output_resync,
        retry_for: Duration::from_secs(args.retry_for),
        quiet: args.log.quiet,
        relaxed_version: args.relaxed_version,
        forward_publish: args.forward_publish,
        commands: args.commands.to_filter()?,
    }))
}

/// `--output`: the change stream out, until SIGINT/SIGTERM or a failure.
async fn run_output(o: sync::output::OutputSettings, status_addr: Option<String>) -> ExitCode {
    let board = StatusBoard::default();
    if let Some(a) = status_addr {
        let addr = match parse_status_addr(&a) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("shake-sync: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = shake_core::observe::status::serve(addr, board.clone()).await {
            eprintln!("shake-sync: cannot serve status on {addr}: {e}");
            return ExitCode::from(2);
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shake_core::signals::next().await;
        eprintln!(
            "shake-sync: stopping: writing what is complete and recording where the output ends"
        );
        let _ = stop_tx.send(true);
    });
    match sync::output::run(o, board, stop_rx).await {
        Ok(summary) => {
            for s in &summary.shards {
                eprintln!(
                    "shake-sync: {} stopped at offset {} ({} commands written, {} snapshots, {} partial resyncs, {} reconnects) after {:.1}s",
                    s.name, s.applied_offset, s.commands_applied, s.full_syncs, s.partial_syncs, s.reconnects, summary.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shake-sync: {e}");
            match e {
                sync::SyncError::Unrecorded(_) => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}

async fn run(settings: SyncSettings) -> ExitCode {
    let board = StatusBoard::default();
    board.set_shard(&settings.shard.label());
    if let Some(addr) = settings.status_addr {
        match shake_core::observe::status::serve(addr, board.clone()).await {
            Ok(bound) => {
                if !settings.quiet {
                    eprintln!("shake-sync: status on http://{bound}/status and /metrics");
                }
            }
            Err(e) => {
                eprintln!("shake-sync: cannot serve status on {addr}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shake_core::signals::next().await;
        eprintln!("shake-sync: stopping: draining what is in flight and recording the checkpoint");
        let _ = stop_tx.send(true);
    });
    if let Some(every) = settings.log_interval.filter(|_| !settings.quiet) {
        let board = board.clone();
        tokio::spawn(async move {
            let mut rates = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                board.tick_rates(&mut rates);
                for line in board.lines() {
                    eprintln!("shake-sync: {line}");
                }
            }
        });
    } else {
        // The ops/s figure of /status still needs a clock.
        let board = board.clone();
        tokio::spawn(async move {
            let mut rates = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                board.tick_rates(&mut rates);
            }
        });
    }
    match sync::run(settings, board, stop_rx).await {
        Ok(summary) => {
            for s in &summary.shards {
                eprintln!(
                    "shake-sync: {} stopped at offset {} ({} commands applied, {} full syncs, {} partial resyncs, {} reconnects, {} errors, {} keys repaired) after {:.1}s",
                    s.name, s.applied_offset, s.commands_applied, s.full_syncs, s.partial_syncs, s.reconnects, s.errors, s.repaired_keys, summary.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shake-sync: {e}");
            match e {
                sync::SyncError::Unrecorded(_) => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}

async fn preflight(settings: &SyncSettings, json: bool) -> u8 {
    let mut pf = shake_core::preflight::Preflight::new(settings.connect.clone());
    pf.apply = settings.apply.clone();
    pf.psync_command = settings.repl.psync_command.clone();
    pf.dual_channel = settings.repl.dual_channel.is_some();
    pf.source_cluster = settings.source_cluster;
    pf.target_cluster = settings.target_cluster;
    pf.relaxed_version = settings.relaxed_version;
    let general = pf.sync(&settings.source, &settings.target).await;
    let (own, ours) = sync::preflight_checkpoints(settings).await;
    let mut report = shake_core::preflight::Report::new();
    for check in general.checks() {
        // Keys of a target this sync already writes to are its own: a resume does not restore
        // them, and a re-sync replaces them whatever --on-conflict says.
        if ours && check.name == "pair.conflicts" {
            report.push(shake_core::preflight::Check::ok(
                "pair.conflicts",
                "the target holds this sync's checkpoint: its keys are this sync's own (a resume leaves them, a full sync replaces them)",
            ));
        } else {
            report.push(check.clone());
        }
    }
    for check in own {
        report.push(check);
    }
    report.print(json)
}

fn settings(args: &Args) -> Result<SyncSettings, String> {
    let source_url = args
        .source
        .as_deref()
        .ok_or("--source is required (or a config file with [source] address)")?;
    let target_url = args
        .target
        .as_deref()
        .ok_or("--target is required (or a config file with [target] address)")?;
    let source = args
        .source_sentinel
        .endpoint(source_url)
        .map_err(|e| format!("--source: {e}"))?
        .password_from_env("SHAKE_SOURCE_PASSWORD");
    let target = args
        .target_sentinel
        .endpoint(target_url)
        .map_err(|e| format!("--target: {e}"))?
        .password_from_env("SHAKE_TARGET_PASSWORD");
    if !args.filter.types.is_empty() {
        return Err(
            "--type cannot be used with shake-sync: a command in the stream does not say the type of its key; filter by --db/--key instead"
                .into(),
        );
    }
    let filter = args.filter.to_filter()?;
    if filter.excludes_dbs() && !args.apply.db_map.is_empty() {
        return Err(
            "--exclude-db with --db-map: name the databases to copy with --db instead".into(),
        );
    }
    let shard = args.shard.to_shard()?;
    if args.flush_target && !shard.is_whole() {
        return Err(format!("--flush-target with --shard {shard}: each shard would empty the whole target, the other shards' keys included; empty the target once (FLUSHALL on each master) before starting the shards, without --flush-target"));
    }
    if args.flush_target && (!filter.is_everything() || !args.apply.db_map.is_empty()) {
        return Err("--flush-target empties the whole target, which filters or --db-map say this sync does not fully own; drop one or the other".into());
    }
    let rename = args.rename.to_rename()?;
    let apply = shake_core::apply::ApplyOptions {
        rename: rename.clone(),
        ..args.apply.to_options(filter.clone())?
    };
    let checkpoint_db = match args.checkpoint.as_str() {
        "target" => 0,
        s => s
            .strip_prefix("target:")
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| format!("--checkpoint {s:?}: expected target or target:DB"))?,
    };
    let status_addr = match &args.status_addr {
        Some(a) => Some(parse_status_addr(a)?),
        None => None,
    };
    let connect = args.conn.to_options();
    let mut db_map = apply.db_map.clone();
    if let (Some(db), true) = (target.db, db_map.is_empty()) {
        db_map = shake_core::apply::DbMap::parse(&[format!("*={db}")])?;
    }
    Ok(SyncSettings {
        checkpoint_name: args
            .checkpoint_name
            .clone()
            .unwrap_or_else(|| source.stable_name()),
        source,
        source_cluster: shake_core::cli::cluster_mode(args.source_cluster, args.source_single_node),
        source_replica: args.source_replica,
        target,
        target_cluster: shake_core::cli::cluster_mode(args.target_cluster, args.target_standalone),
        repl: ReplOptions {
            psync_command: args.psync_command.clone(),
            verify: false,
            idle_timeout: connect
                .reply_timeout
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(30)),
            dual_channel: args.dual.to_options(&connect)?,
            ..ReplOptions::default()
        },
        connect,
        stream: StreamOptions {
            db_map,
            filter,
            forward_publish: args.forward_publish,
            split_transactions: args.split_transactions,
            checkpoint_db,
            qps: args.apply.qps,
            on_target_error: args.target_error.policy()?,
            commands: args.commands.to_filter()?,
            rename,
            ..StreamOptions::default()
        },
        apply,
        pipeline: args.apply.pipeline.max(1),
        flush_target: args.flush_target,
        prune: shake_core::sync::prune::PrunePolicy::parse(&args.prune)?,
        retry_for: Duration::from_secs(args.retry_for),
        topology_interval: Duration::from_secs(args.topology_interval),
        status_addr,
        quiet: args.log.quiet,
        log_interval: args.log.every(),
        relaxed_version: args.relaxed_version,
        shard,
    })
}

/// `PORT`, `:PORT` (both loopback) or `HOST:PORT`.
fn parse_status_addr(a: &str) -> Result<SocketAddr, String> {
    let a = a.trim();
    let with_host = if let Ok(port) = a.trim_start_matches(':').parse::<u16>() {
        format!("127.0.0.1:{port}")
    } else {
        a.to_string()
    };
    use std::net::ToSocketAddrs;
    with_host
        .to_socket_addrs()
        .ok()
        .and_then(|mut i| i.next())
        .ok_or_else(|| format!("--status-addr {a:?}: expected HOST:PORT"))
}
