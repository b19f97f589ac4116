//! shake-restore: RDB files or stdin into a live standalone or cluster target.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shake_core::apply::{self, RestoreInput, RestoreSettings};
use shake_core::cli::{
    cluster_mode, AofArgs, ApplyArgs, ConnArgs, FilterArgs, LogArgs, PreflightArgs, RenameArgs,
};
use shake_core::preflight::Preflight;

/// Load RDB data or an append-only file into a live Redis or Valkey target, standalone or
/// cluster.
///
/// Each key goes as RESTORE with its raw payload when the target's RDB version can load the
/// value's encoding (the fast path), as RESTORE with the value re-encoded when it cannot (the
/// portable path: newer listpack/stream encodings into Redis 7.0 or 6.2), and as batches of
/// commands when it is larger than --big-key-bytes. Keys whose TTL has passed are skipped.
///
/// Files are read twice: once to verify the checksum and list the databases before anything is
/// written, once to write. Stdin is read once: on a damaged stream the keys before the damage
/// have been written, the error names the byte offset, and the exit status is 1.
///
/// SIGINT/SIGTERM: no key is started after it, what was read is written (a big key being
/// written in parts is finished), the summary says how far it got; a second signal exits at once.
///
/// Exit status: 0 success, 1 failure (bad input, refused write, conflict under panic; the line
/// says how many keys were written before it), 2 usage, 130/143 stopped by SIGINT/SIGTERM.
#[derive(Parser, Debug)]
#[command(
    name = "shake-restore",
    version,
    after_help = "Examples:\n  shake-restore --target redis://10.0.0.5:6379 dump.rdb\n  shake-dump --source redis://a:6379 -o - | shake-restore --target redis://b:6379 -\n  shake-restore --target redis://cluster-node:7000 --db-map '*=0' multi-db.rdb\n  shake-restore --target redis://10.0.0.5:6379 --preflight dump.rdb   (check, write nothing)\n  shake-restore --config shake.toml       (a RedisShake v4 file with [rdb_reader]; flags override it)"
)]
struct Args {
    /// Target URL: redis://[[user]:password@]host[:port][/db], rediss:// for TLS
    #[arg(short, long, env = "SHAKE_TARGET", value_name = "URL")]
    target: String,

    #[command(flatten)]
    target_sentinel: shake_core::cli::TargetSentinelArgs,

    /// RDB files or AOFs to load, in order; `-` reads stdin (an RDB, streamed, never spooled to
    /// disk). An AOF is a plain or RDB-preamble file, or a multi-part AOF directory (Redis 7's
    /// appenddirname) or its manifest: the RDB part is restored, then the commands applied
    #[arg(value_name = "FILE", default_value = "-")]
    inputs: Vec<PathBuf>,

    /// Treat the target as a cluster (default: detect from INFO cluster)
    #[arg(
        long = "target-cluster",
        alias = "cluster",
        conflicts_with = "no_cluster"
    )]
    cluster: bool,

    /// Treat the target as a standalone server even if it reports cluster mode
    #[arg(long = "no-target-cluster", alias = "no-cluster")]
    no_cluster: bool,

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
    aof: AofArgs,

    /// Skip the checksum pass that files get before anything is written
    #[arg(long)]
    no_verify_first: bool,

    /// Read RDB versions newer than the known ones; unknown types still fail
    #[arg(long)]
    relaxed_version: bool,

    #[command(flatten)]
    conn: ConnArgs,

    #[command(flatten)]
    log: LogArgs,

    // --preflight reads the files (format, databases, functions, a sample of keys; an AOF's
    // commands: count, databases, times, torn end) and checks
    // the target and the pairing; stdin is not read.
    #[command(flatten)]
    preflight: PreflightArgs,
}

fn main() -> ExitCode {
    let argv = match shake_core::redisshake::front_door(
        shake_core::redisshake::Tool::Restore,
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
            eprintln!("shake-restore: {msg}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = shake_core::cli::runtime("shake-restore") else {
        return ExitCode::from(1);
    };
    if args.preflight.preflight {
        let mut pf = Preflight::new(settings.connect.clone());
        pf.target_cluster = settings.cluster;
        pf.apply = settings.apply.clone();
        pf.relaxed_version = settings.relaxed_version;
        pf.until = settings.until;
        pf.aof_truncated = settings.aof_truncated;
        let report = runtime.block_on(pf.restore(&settings.inputs, &settings.target));
        return ExitCode::from(report.print(args.preflight.json));
    }
    let stop = settings.stop.clone();
    let result = runtime.block_on(async {
        tokio::spawn(async move {
            let first = shake_core::signals::next().await;
            stop.set(first);
            eprintln!("shake-restore: {first}: stopping: no new key is started, what was read is written, then the summary (a second signal exits at once)");
            let second = shake_core::signals::next().await;
            eprintln!("shake-restore: {second} again: exiting now; the last keys sent may or may not be on the target");
            std::process::exit(i32::from(second.exit_code()));
        });
        apply::restore(settings).await
    });
    match result {
        Ok(summary) => {
            eprintln!("shake-restore: {summary}");
            ExitCode::SUCCESS
        }
        Err(e @ apply::ApplyError::Stopped { signal, .. }) => {
            eprintln!("shake-restore: {e}");
            ExitCode::from(signal.exit_code())
        }
        Err(e) => {
            eprintln!("shake-restore: {e}");
            ExitCode::from(1)
        }
    }
}

fn settings(args: &Args) -> Result<RestoreSettings, String> {
    let target = args
        .target_sentinel
        .endpoint(&args.target)?
        .password_from_env("SHAKE_TARGET_PASSWORD");
    let inputs = args
        .inputs
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                RestoreInput::Stdin
            } else {
                RestoreInput::File(p.clone())
            }
        })
        .collect::<Vec<_>>();
    if inputs
        .iter()
        .filter(|i| matches!(i, RestoreInput::Stdin))
        .count()
        > 1
    {
        return Err("stdin (-) can be given once".into());
    }
    Ok(RestoreSettings {
        target,
        cluster: cluster_mode(args.cluster, args.no_cluster),
        connect: args.conn.to_options(),
        inputs,
        apply: shake_core::apply::ApplyOptions {
            rename: args.rename.to_rename()?,
            ..args.apply.to_options(args.filter.to_filter()?)?
        },
        pipeline: args.apply.pipeline.max(1),
        verify_first: !args.no_verify_first,
        relaxed_version: args.relaxed_version,
        quiet: args.log.quiet,
        log_interval: args.log.every(),
        until: args.aof.until,
        aof_truncated: args.aof.truncated()?,
        stop: Default::default(),
    })
}
