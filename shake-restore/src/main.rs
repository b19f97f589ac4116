//! shake-restore: RDB files or stdin into a live standalone or cluster target.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shake_core::apply::{self, ApplyOptions, ConflictPolicy, DbMap, RestoreInput, RestoreSettings};
use shake_core::filter::KeyFilter;
use shake_core::net::{ConnectOptions, Endpoint, TlsOptions};
use shake_core::rdb::writer::FieldTtlPolicy;

/// Load RDB data into a live Redis or Valkey target, standalone or cluster.
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
/// Exit status: 0 success, 1 failure (bad input, refused write, conflict under panic), 2 usage.
#[derive(Parser, Debug)]
#[command(
    name = "shake-restore",
    version,
    after_help = "Examples:\n  shake-restore --target redis://10.0.0.5:6379 dump.rdb\n  shake-dump --source redis://a:6379 -o - | shake-restore --target redis://b:6379 -\n  shake-restore --target redis://cluster-node:7000 --db-map '*=0' multi-db.rdb"
)]
struct Args {
    /// Target URL: redis://[[user]:password@]host[:port][/db], rediss:// for TLS
    #[arg(long, env = "SHAKE_TARGET", value_name = "URL")]
    target: String,

    /// RDB files to load, in order; `-` reads stdin (streamed, never spooled to disk)
    #[arg(value_name = "FILE", default_value = "-")]
    inputs: Vec<PathBuf>,

    /// Treat the target as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "no_cluster")]
    cluster: bool,

    /// Treat the target as a standalone server even if it reports cluster mode
    #[arg(long)]
    no_cluster: bool,

    /// When a key already exists on the target: panic (stop with an error naming it), rewrite
    /// (replace it), ignore (keep the target's key)
    #[arg(long, default_value = "panic", value_parser = ["panic", "rewrite", "ignore"])]
    on_conflict: String,

    /// Map source database SRC to target database DST (repeatable); `*=0` merges every
    /// database, which a cluster target needs for a multi-database RDB. Without it, keys keep
    /// their database, or all go to the database named in the target URL (redis://host/3)
    #[arg(long = "db-map", value_name = "SRC=DST")]
    db_map: Vec<String>,

    /// Only keys of this source database (repeatable)
    #[arg(long = "db", value_name = "N")]
    dbs: Vec<u64>,

    /// Only keys matching this glob, Redis syntax (repeatable)
    #[arg(long = "key", value_name = "GLOB")]
    keys: Vec<String>,

    /// Only keys matching this regular expression
    #[arg(long, value_name = "RE")]
    key_regex: Option<String>,

    /// Only keys of this type: string, list, set, zset, hash, stream, module (repeatable)
    #[arg(long = "type", value_name = "T", value_parser = parse_type)]
    types: Vec<shake_core::rdb::ValueType>,

    /// Values whose encoding is larger go as batches of commands instead of one RESTORE (never
    /// above the target's proto-max-bulk-len)
    #[arg(long, value_name = "BYTES", default_value_t = shake_core::apply::DEFAULT_BIG_KEY_BYTES)]
    big_key_bytes: usize,

    /// Keep LRU idle time / LFU frequency (RESTORE IDLETIME/FREQ) when the RDB has them
    #[arg(long)]
    keep_lru: bool,

    /// Hash field TTLs into a target without field TTLs: refuse (stop with an error naming the
    /// key) or drop (write the fields without TTLs and count them)
    #[arg(long, default_value = "refuse", value_parser = ["refuse", "drop"])]
    field_ttls: String,

    /// Cap on commands per second sent to the target (0: no cap)
    #[arg(long, value_name = "N", default_value_t = 0)]
    qps: u64,

    /// Commands in flight per target connection
    #[arg(long, value_name = "N", default_value_t = 512)]
    pipeline: usize,

    /// Skip the checksum pass that files get before anything is written
    #[arg(long)]
    no_verify_first: bool,

    /// Read RDB versions newer than the known ones; unknown types still fail
    #[arg(long)]
    relaxed_version: bool,

    /// PEM file with the CA certificates to trust for rediss:// (default: the system's)
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// Do not verify the target's TLS certificate
    #[arg(long)]
    tls_insecure: bool,

    /// Seconds to wait for a connection and for each reply
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,

    /// No progress bar, no status lines (the summary line stays)
    #[arg(short, long)]
    quiet: bool,

    /// Seconds between status lines on stderr when it is not a terminal (0: none)
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    log_interval: u64,
}

fn parse_type(s: &str) -> Result<shake_core::rdb::ValueType, String> {
    KeyFilter::parse_type(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("shake-restore: {msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shake-restore: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(apply::restore(settings)) {
        Ok(summary) => {
            eprintln!("shake-restore: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shake-restore: {e}");
            ExitCode::from(1)
        }
    }
}

fn settings(args: &Args) -> Result<RestoreSettings, String> {
    let target = Endpoint::parse(&args.target)?.password_from_env("SHAKE_TARGET_PASSWORD");
    let filter = KeyFilter::new(
        args.dbs.clone(),
        args.keys.clone(),
        args.key_regex.as_deref(),
        args.types.clone(),
    )?;
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
    let timeout = Duration::from_secs(args.timeout.max(1));
    Ok(RestoreSettings {
        target,
        cluster: if args.cluster {
            Some(true)
        } else if args.no_cluster {
            Some(false)
        } else {
            None
        },
        connect: ConnectOptions {
            connect_timeout: timeout,
            reply_timeout: Some(timeout),
            tls: TlsOptions {
                ca_file: args.tls_ca.clone(),
                insecure: args.tls_insecure,
            },
        },
        inputs,
        apply: ApplyOptions {
            conflict: ConflictPolicy::parse(&args.on_conflict)?,
            db_map: DbMap::parse(&args.db_map)?,
            filter,
            big_key_bytes: args.big_key_bytes.max(1024),
            keep_lru: args.keep_lru,
            field_ttls: if args.field_ttls == "drop" {
                FieldTtlPolicy::Drop
            } else {
                FieldTtlPolicy::Refuse
            },
            qps: args.qps,
            ..ApplyOptions::default()
        },
        pipeline: args.pipeline.max(1),
        verify_first: !args.no_verify_first,
        relaxed_version: args.relaxed_version,
        quiet: args.quiet,
        log_interval: (args.log_interval > 0).then(|| Duration::from_secs(args.log_interval)),
    })
}
