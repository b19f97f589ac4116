//! shake-check: proves that a target holds the same data as a source (a live server or cluster,
//! or an RDB file), or lists every difference. Argument parsing and wiring; the comparison is
//! shake_core::compare.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shake_core::apply::DbMap;
use shake_core::cli::{ConnArgs, FilterArgs, LogArgs, PreflightArgs, RenameArgs, ShardArgs};
use shake_core::compare::{self, CompareOptions, Mode, SourceSpec};

/// Compare a source (live server, cluster, or RDB file) with a live target, key by key, in both
/// directions.
///
/// Every source key is looked up on the target (missing, type, value, ttl) and every target key
/// on the source (extra). Each difference is one JSON line on stdout:
///
///   {"db":0,"key":"user:1","kind":"value","source":"field \"age\" = \"31\"","target":"field \"age\" = \"32\""}
///
/// kind is missing, extra, type, value or ttl; key is a JSON string when it is UTF-8, else
/// {"base64":"..."}; db is the source database (for an extra key, the target's). A function
/// library that differs is {"function":"name","kind":...}. A summary line goes to stderr.
///
/// Modes: outline compares existence, type and TTL; length also element counts (string length,
/// list/set/zset/hash/stream length); full (default) also every element and byte, zset scores bit
/// for bit, streams' entries, last id, groups, their last delivered ids and pending counts, and
/// the function libraries. Big values are compared in chunks, never loaded whole.
///
/// Rounds: the first round compares everything; each later round waits --interval seconds and
/// re-checks only the keys that differed, so writes in flight during a live sync do not count.
/// Only differences still there in the final round are reported (and a round that finds none
/// ends the run).
///
/// Keys whose name starts with "shake-sync:" (shake-sync's checkpoints on a target) are skipped
/// unless --include-internal-keys is given.
///
/// --rename-prefix OLD=NEW (the rules the copy ran with): each source key is compared with the
/// target key of its new name (the diff names the source key), each target key is looked up on
/// the source under the name(s) that become it; a target key no rule produces is extra.
///
/// Exit status: 0 equal, 1 differences found, 2 trouble (bad arguments, an unreachable or
/// failing server, an unreadable RDB file).
#[derive(Parser, Debug)]
#[command(
    name = "shake-check",
    version,
    after_help = "Examples:\n  shake-check --source redis://10.0.0.1:6379 --target redis://10.0.0.2:6379\n  shake-check --source backup.rdb --target redis://10.0.0.2:6379 --rounds 1\n  shake-check --source redis://a:6379 --target redis://cluster-node:7000 --db-map '*=0' --ignore-key 'heartbeat:*'\n  shake-check --source redis://a:6379 --target redis://b:6379 | jq -r 'select(.kind==\"missing\") | .key'"
)]
struct Args {
    /// Source: a URL (redis://[[user]:password@]host[:port][/db], rediss:// for TLS; a /db
    /// compares only that database) or the path of an RDB file
    #[arg(short, long, env = "SHAKE_SOURCE", value_name = "URL|RDB-FILE")]
    source: String,

    #[command(flatten)]
    source_sentinel: shake_core::cli::SourceSentinelArgs,

    /// Target URL; a /db receives every source database unless --db-map says otherwise
    #[arg(short, long, env = "SHAKE_TARGET", value_name = "URL")]
    target: String,

    #[command(flatten)]
    target_sentinel: shake_core::cli::TargetSentinelArgs,

    /// What to compare: outline (existence, type, TTL), length (also element counts), full
    /// (also every element and byte)
    #[arg(long, default_value = "full", value_parser = ["full", "length", "outline"])]
    mode: String,

    /// TTLs whose deadlines differ by at most this many seconds are equal (fractions allowed)
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    ttl_tolerance: f64,

    /// Rounds in all: later rounds re-check only the keys that differed
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: u32,

    /// Seconds to wait before each re-check round (fractions allowed)
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    interval: f64,

    /// Map source database SRC to target database DST (repeatable); `*=0` maps every database,
    /// which a cluster target needs for a multi-database source
    #[arg(long = "db-map", value_name = "SRC=DST")]
    db_map: Vec<String>,

    /// Leave out keys matching this glob, on both sides (repeatable), e.g. heartbeat keys
    #[arg(long = "ignore-key", value_name = "GLOB")]
    ignore_key: Vec<String>,

    /// Also compare the keys whose name starts with "shake-sync:" (shake-sync's checkpoints)
    #[arg(long)]
    include_internal_keys: bool,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    rename: RenameArgs,

    /// Treat the source as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "no_source_cluster")]
    source_cluster: bool,

    /// Treat the source as one server even if it reports cluster mode (compares only that node)
    #[arg(long)]
    no_source_cluster: bool,

    /// Treat the target as a cluster (default: detect from INFO cluster)
    #[arg(long, conflicts_with = "no_target_cluster")]
    target_cluster: bool,

    /// Treat the target as a standalone server even if it reports cluster mode
    #[arg(long)]
    no_target_cluster: bool,

    /// Cap on commands per second, both sides together (0: no cap)
    #[arg(long, value_name = "N", default_value_t = 0)]
    qps: u64,

    /// Readers per source node, each with its own connections
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,

    /// Keys per SCAN call and per batch
    #[arg(long, value_name = "N", default_value_t = 1000)]
    scan_count: usize,

    /// Read RDB versions newer than the known ones; unknown types still fail
    #[arg(long)]
    relaxed_version: bool,

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
    let args = Args::parse();
    let opts = match options(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("shake-check: {msg}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = shake_core::cli::runtime("shake-check") else {
        return ExitCode::from(2);
    };
    if args.preflight.preflight {
        let mut pf = shake_core::preflight::Preflight::new(opts.connect.clone());
        pf.target_cluster = opts.target_cluster;
        let source = match &opts.source {
            compare::SourceSpec::Live { endpoint, cluster } => {
                pf.source_cluster = *cluster;
                Some(endpoint.clone())
            }
            _ => None,
        };
        let report = runtime.block_on(pf.check(source.as_ref(), &opts.target));
        return ExitCode::from(report.print(args.preflight.json));
    }
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut line = Vec::with_capacity(256);
    let mut write_error: Option<std::io::Error> = None;
    let mut report = |d: &compare::Diff| {
        line.clear();
        d.write_json(&mut line);
        if write_error.is_none() {
            if let Err(e) = out.write_all(&line) {
                write_error = Some(e);
            }
        }
    };
    let result = runtime.block_on(compare::check(opts, &mut report));
    let flushed = out.flush();
    if let Some(e) = write_error.or(flushed.err()) {
        eprintln!("shake-check: cannot write the differences to stdout: {e}");
        return ExitCode::from(2);
    }
    match result {
        Ok(summary) => {
            eprintln!("shake-check: {summary}");
            if summary.differences() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("shake-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--source` is an RDB file when it is not a URL and names a file.
fn source_spec(
    s: &str,
    cluster: Option<bool>,
    sentinel: &shake_core::cli::SourceSentinelArgs,
) -> Result<SourceSpec, String> {
    let is_url = s.contains("://");
    if !is_url && Path::new(s).is_file() {
        if sentinel.source_sentinel_master.is_some() {
            return Err(format!("--source-sentinel-master with --source {s:?}, an RDB file: name the sentinels in --source"));
        }
        return Ok(SourceSpec::Rdb(PathBuf::from(s)));
    }
    // What reads as a path is not taken for a host name (whose lookup would then fail).
    let lower = s.to_ascii_lowercase();
    if !is_url
        && (Path::new(s).exists()
            || s.starts_with(['/', '.', '~'])
            || [".rdb", ".aof", ".dump"].iter().any(|x| lower.ends_with(x)))
    {
        let what = if Path::new(s).exists() {
            "is not a file"
        } else {
            "does not exist"
        };
        return Err(format!(
            "--source {s:?} {what}: give an RDB file to compare with, or a server as redis://host:port"
        ));
    }
    let endpoint = sentinel
        .endpoint(s)
        .map_err(|e| {
            format!(
                "--source {:?} is neither a readable RDB file nor a URL: {e}",
                shake_core::net::redact_url(s)
            )
        })?
        .password_from_env("SHAKE_SOURCE_PASSWORD");
    Ok(SourceSpec::Live { endpoint, cluster })
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{name} must be a number of seconds >= 0, not {v}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn options(args: &Args) -> Result<CompareOptions, String> {
    let source = source_spec(
        &args.source,
        shake_core::cli::cluster_mode(args.source_cluster, args.no_source_cluster),
        &args.source_sentinel,
    )?;
    let target = args
        .target_sentinel
        .endpoint(&args.target)?
        .password_from_env("SHAKE_TARGET_PASSWORD");
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let mut o = CompareOptions::new(source, target);
    o.target_cluster = shake_core::cli::cluster_mode(args.target_cluster, args.no_target_cluster);
    o.connect = args.conn.to_options();
    o.mode = Mode::parse(&args.mode)?;
    o.ttl_tolerance_ms = seconds("--ttl-tolerance", args.ttl_tolerance)?.as_millis() as i64;
    o.rounds = args.rounds;
    o.interval = seconds("--interval", args.interval)?;
    o.filter = args.filter.to_filter()?;
    o.db_map = DbMap::parse(&args.db_map)?;
    o.rename = args.rename.to_rename()?;
    o.ignore = args
        .ignore_key
        .iter()
        .map(|g| g.as_bytes().to_vec())
        .collect();
    o.include_internal = args.include_internal_keys;
    o.qps = args.qps;
    o.parallel = args.parallel.clamp(1, 64);
    o.scan_count = args.scan_count.clamp(1, 100_000);
    o.relaxed_version = args.relaxed_version;
    o.quiet = args.log.quiet;
    o.log_every = args.log.every();
    o.shard = args.shard.to_shard()?;
    Ok(o)
}
