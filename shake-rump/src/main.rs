//! shake-rump: copy a live source with SCAN + DUMP + PTTL into a target (RESTORE) or an RDB
//! file, for sources that refuse SYNC/PSYNC. Argument parsing and wiring; the walk lives in
//! `shake_core::scan`, the writing in `shake_core::apply` and `shake_core::rdb::file_writer`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shake_core::cli::{
    cluster_mode, ApplyArgs, ConnArgs, FilterArgs, LogArgs, PreflightArgs, RenameArgs, ShardArgs,
    TargetErrorArgs,
};
use shake_core::rdb::ValueType;
use shake_core::scan::copy::{rump, RumpOutput, RumpSettings};
use shake_core::scan::ScanOptions;
use tokio_util::sync::CancellationToken;

/// Copy a live Redis or Valkey server or cluster with SCAN + DUMP + PTTL, for sources that
/// refuse SYNC/PSYNC (managed clouds).
///
/// Every database of the source (every master of a cluster) is walked with SCAN; each key is
/// read with DUMP and PTTL, pipelined, and written to the target with RESTORE: the payload as it
/// is when the target loads it (the fast path), re-encoded when the target is older (the
/// portable path), as batches of commands when it is larger than --big-key-bytes. With -o FILE
/// the keys go into an RDB file instead, which shake-restore, shake-decode and redis-server read.
///
/// TTLs: PTTL's remaining time is turned into an absolute deadline once, when the reply is read,
/// and written with RESTORE ... ABSTTL (EXPIRETIME_MS in a file): time spent in queues does not
/// lengthen a TTL; the clocks of this host and the target should agree (NTP).
///
/// Big keys: before DUMP each key's size is estimated with MEMORY USAGE (same pipeline); DUMPs
/// are admitted while the estimates in flight stay under --dump-window, and a bigger key is
/// DUMPed alone, so only one big DUMP reply is held at a time, and it is decoded in place.
///
/// A key deleted or expired between SCAN and DUMP (DUMP nil, PTTL -2) is skipped and counted as
/// vanished. Function libraries are copied from the first master (FUNCTION DUMP, then FUNCTION
/// LOAD per library under the conflict policy); sources without FUNCTION (Redis 6.2) have none.
///
/// --follow: subscribes to keyevent notifications on every master before the scan starts (so no
/// change is lost between scan and follow), then keeps re-reading every key an event names until
/// SIGINT/SIGTERM: a key present is written with RESTORE REPLACE, a key gone is deleted on the
/// target. A write the target refuses (OOM, WRONGTYPE...) is repaired: the key is read from the
/// source again and rewritten, up to five attempts, then the copy stops naming it
/// (--on-target-error stop: at once). The source must publish keyspace events: notify-keyspace-events must include E and A
/// (e.g. KEA); shake-rump turns them on with CONFIG SET where allowed (and puts the old value
/// back at the end), else it stops and says what to set.
///
/// The shared --keep-lru flag is refused: DUMP carries no LRU/LFU information.
///
/// Exit status: 0 success (also after SIGINT/SIGTERM in --follow mode), 1 failure (the line on
/// stderr names the key or endpoint), 2 usage.
#[derive(Parser, Debug)]
#[command(
    name = "shake-rump",
    version,
    after_help = "Examples:\n  shake-rump --source redis://cloud-cache:6379 --target redis://10.0.0.5:6379\n  shake-rump --source rediss://user:@cloud:6380 -o backup.rdb      (password from SHAKE_SOURCE_PASSWORD)\n  shake-rump --source redis://node1:7000 --target redis://new:7000 --on-conflict rewrite --follow\n  shake-rump --source redis://a:6379 --target redis://cluster:7000 --db-map '*=0' --match 'user:*'\n  shake-rump --config shake.toml          (a RedisShake v4 file with [scan_reader]; flags override it)"
)]
struct Args {
    /// Source URL: redis://[[user]:password@]host[:port] (rediss:// for TLS); password also from
    /// SHAKE_SOURCE_PASSWORD. A cluster node stands for every master of its cluster
    #[arg(short, long, env = "SHAKE_SOURCE", value_name = "URL")]
    source: String,

    #[command(flatten)]
    source_sentinel: shake_core::cli::SourceSentinelArgs,

    /// Target URL: redis://[[user]:password@]host[:port][/db]; password also from
    /// SHAKE_TARGET_PASSWORD; a /db receives every key unless --db-map says otherwise
    #[arg(
        short,
        long,
        env = "SHAKE_TARGET",
        value_name = "URL",
        required_unless_present = "output",
        conflicts_with = "output"
    )]
    target: Option<String>,

    #[command(flatten)]
    target_sentinel: shake_core::cli::TargetSentinelArgs,

    /// Write an RDB file instead of a target (FILE.part while running, renamed when complete):
    /// a backup of a source that refuses SYNC. A cluster source gives one file with every key
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// SCAN's COUNT hint: keys asked per SCAN call
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: u64,

    /// SCAN's MATCH pattern (filters on the server). Default: the --key glob when exactly one is
    /// given, else none
    #[arg(long = "match", value_name = "GLOB")]
    pattern: Option<String>,

    /// Keep copying the keys named by keyspace events after the scan, until SIGINT/SIGTERM
    #[arg(long, conflicts_with = "output")]
    follow: bool,

    /// Do not copy function libraries
    #[arg(long)]
    no_functions: bool,

    /// Do not estimate key sizes with MEMORY USAGE before DUMP (one command less per key; big
    /// keys may then be in flight together)
    #[arg(long)]
    no_memory_probe: bool,

    /// Most estimated bytes of DUMP replies in flight per source connection; a larger key is
    /// DUMPed alone
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    dump_window: usize,

    /// Treat the source as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "no_source_cluster")]
    source_cluster: bool,

    /// Treat the source as one server even if it reports cluster mode (reads only that node)
    #[arg(long)]
    no_source_cluster: bool,

    /// Treat the target as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "no_target_cluster")]
    target_cluster: bool,

    /// Treat the target as a standalone server even if it reports cluster mode
    #[arg(long)]
    no_target_cluster: bool,

    /// A RedisShake v4 shake.toml, read unchanged (flags on the command line win over it): every
    /// key is used or reported once as ignored; a file for another tool runs that tool
    /// (docs/migrating-from-redisshake.md)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    apply: ApplyArgs,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    rename: RenameArgs,

    #[command(flatten)]
    target_error: TargetErrorArgs,

    #[command(flatten)]
    shard: ShardArgs,

    #[command(flatten)]
    conn: ConnArgs,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    preflight: PreflightArgs,
}

fn main() -> ExitCode {
    let argv = match shake_core::redisshake::front_door(
        shake_core::redisshake::Tool::Rump,
        Args::command(),
        std::env::args_os().collect(),
    ) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code),
    };
    let args = Args::parse_from(argv);
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("shake-rump: {msg}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = shake_core::cli::runtime("shake-rump") else {
        return ExitCode::from(1);
    };
    if args.preflight.preflight {
        let mut pf = shake_core::preflight::Preflight::new(settings.connect.clone());
        pf.apply = settings.apply.clone();
        pf.source_cluster = settings.source_cluster;
        let target = match &settings.output {
            shake_core::scan::copy::RumpOutput::Target {
                endpoint, cluster, ..
            } => {
                pf.target_cluster = *cluster;
                Some(endpoint.clone())
            }
            _ => None,
        };
        let report = runtime.block_on(pf.rump(&settings.source, target.as_ref()));
        return ExitCode::from(report.print(args.preflight.json));
    }
    let follow = settings.follow;
    let result = runtime.block_on(async move {
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone(), follow));
        rump(settings, stop).await
    });
    match result {
        Ok(summary) => {
            eprintln!("shake-rump: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shake-rump: {e}");
            ExitCode::from(1)
        }
    }
}

/// The first SIGINT/SIGTERM ends the copy (in --follow mode: the follow phase, gracefully); a
/// second one exits at once.
async fn stop_on_signal(stop: CancellationToken, follow: bool) {
    for n in 0.. {
        shake_core::signals::next().await;
        if n > 0 {
            eprintln!("shake-rump: second signal; exiting now");
            std::process::exit(1);
        }
        if follow {
            eprintln!("shake-rump: stopping: writing what was read, then the summary");
        }
        stop.cancel();
    }
}

fn settings(args: &Args) -> Result<RumpSettings, String> {
    let source = args
        .source_sentinel
        .endpoint(&args.source)?
        .password_from_env("SHAKE_SOURCE_PASSWORD");
    if args.apply.keep_lru {
        return Err(
            "--keep-lru: DUMP does not carry LRU/LFU information, so shake-rump cannot keep it"
                .into(),
        );
    }
    let output = match (&args.target, &args.output) {
        (Some(t), None) => RumpOutput::Target {
            endpoint: args
                .target_sentinel
                .endpoint(t)?
                .password_from_env("SHAKE_TARGET_PASSWORD"),
            cluster: cluster_mode(args.target_cluster, args.no_target_cluster),
            pipeline: args.apply.pipeline.max(1),
        },
        (None, Some(p)) => {
            if p.as_os_str() == "-" {
                return Err(
                    "-o needs a file name (the RDB is written as FILE.part, then renamed)".into(),
                );
            }
            RumpOutput::File(p.clone())
        }
        _ => return Err("give either --target URL or -o FILE".into()),
    };
    let filter = args.filter.to_filter()?;
    let pattern = match (&args.pattern, args.filter.keys.as_slice()) {
        (Some(p), _) => Some(p.as_bytes().to_vec()),
        (None, [one]) => Some(one.as_bytes().to_vec()),
        _ => None,
    };
    // SCAN's TYPE takes one type name; modules have their own names, so they are filtered here.
    let type_name = match args.filter.types.as_slice() {
        [t] if *t != ValueType::Module => Some(t.as_str().to_string()),
        _ => None,
    };
    Ok(RumpSettings {
        source,
        source_cluster: cluster_mode(args.source_cluster, args.no_source_cluster),
        output,
        connect: args.conn.to_options(),
        apply: shake_core::apply::ApplyOptions {
            rename: args.rename.to_rename()?,
            ..args.apply.to_options(filter)?
        },
        scan: ScanOptions {
            count: args.count.max(1),
            pattern,
            type_name,
            memory_probe: !args.no_memory_probe,
            window_bytes: args.dump_window.max(1),
            // Set by the copy when it writes to a live target.
            string_parts: None,
        },
        functions: !args.no_functions,
        follow: args.follow,
        on_target_error: args.target_error.policy()?,
        quiet: args.log.quiet,
        log_interval: args.log.every(),
        shard: args.shard.to_shard()?,
    })
}
