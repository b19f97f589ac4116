//! Command-line flag groups that several tools share, declared once (clap `Args`), with their
//! conversion into shake-core's option types. A binary flattens the groups it needs:
//! `#[command(flatten)] filter: FilterArgs`. Flags one tool alone has stay in that tool.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::apply::{ApplyOptions, ConflictPolicy, DbMap, DEFAULT_BIG_KEY_BYTES};
use crate::filter::{CommandFilter, KeyFilter};
use crate::net::{ConnectOptions, TlsOptions};
use crate::rdb::writer::FieldTtlPolicy;
use crate::rdb::ValueType;

/// Which keys a tool takes: `--db`, `--key`, `--key-regex`, `--type`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only keys of this source database (repeatable)
    #[arg(long = "db", value_name = "N")]
    pub dbs: Vec<u64>,

    /// Only keys matching this glob, Redis syntax: * ? [abc] [^a] \x (repeatable: any may match)
    #[arg(long = "key", value_name = "GLOB")]
    pub keys: Vec<String>,

    /// Only keys matching this regular expression (with --key: both must match)
    #[arg(long, value_name = "RE")]
    pub key_regex: Option<String>,

    /// Only keys of this type: string, list, set, zset, hash, stream, module (repeatable)
    #[arg(long = "type", value_name = "T", value_parser = KeyFilter::parse_type)]
    pub types: Vec<ValueType>,

    /// Leave out this source database, whatever --db says (repeatable)
    #[arg(long = "exclude-db", value_name = "N")]
    pub exclude_dbs: Vec<u64>,

    /// Leave out keys matching this glob, whatever --key says (repeatable)
    #[arg(long = "exclude-key", value_name = "GLOB")]
    pub exclude_keys: Vec<String>,

    /// Leave out keys matching this regular expression
    #[arg(long, value_name = "RE")]
    pub exclude_key_regex: Option<String>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> Result<KeyFilter, String> {
        KeyFilter::new(
            self.dbs.clone(),
            self.keys.clone(),
            self.key_regex.as_deref(),
            self.types.clone(),
        )?
        .excluding(
            self.exclude_dbs.clone(),
            self.exclude_keys.clone(),
            self.exclude_key_regex.as_deref(),
        )
    }
}

/// `--source-sentinel-master NAME`: `--source` names the sentinels of this master (see
/// [`crate::net::Endpoint::parse_with_master`]; docs/cli.md#redis-sentinel).
#[derive(Args, Debug, Clone, Default)]
pub struct SourceSentinelArgs {
    /// The source is the master Redis Sentinel knows by this name, and --source names the
    /// sentinels: host[:port][,host[:port]...] or redis://[[user]:password@]host[:port][,...][/db]
    /// (port 26379 when left out; the login is the data nodes'). The same as
    /// --source redis+sentinel://SENTINELS/NAME
    #[arg(long, value_name = "NAME")]
    pub source_sentinel_master: Option<String>,
}

impl SourceSentinelArgs {
    /// `--source URL` with this flag.
    pub fn endpoint(&self, url: &str) -> Result<crate::net::Endpoint, String> {
        crate::net::Endpoint::parse_with_master(
            url,
            self.source_sentinel_master.as_deref(),
            "--source-sentinel-master",
        )
    }
}

/// `--target-sentinel-master NAME`: `--target` names the sentinels of this master.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetSentinelArgs {
    /// The target is the master Redis Sentinel knows by this name, and --target names the
    /// sentinels: host[:port][,host[:port]...] or redis://[[user]:password@]host[:port][,...][/db]
    /// (port 26379 when left out; the login is the data nodes'). The same as
    /// --target redis+sentinel://SENTINELS/NAME
    #[arg(long, value_name = "NAME")]
    pub target_sentinel_master: Option<String>,
}

impl TargetSentinelArgs {
    /// `--target URL` with this flag.
    pub fn endpoint(&self, url: &str) -> Result<crate::net::Endpoint, String> {
        crate::net::Endpoint::parse_with_master(
            url,
            self.target_sentinel_master.as_deref(),
            "--target-sentinel-master",
        )
    }
}

/// Which commands of the replication stream shake-sync applies: `--command`, `--command-group`,
/// `--exclude-command`, `--exclude-command-group` (see [`CommandFilter`]; docs/shake-sync.md).
#[derive(Args, Debug, Clone, Default)]
pub struct CommandFilterArgs {
    /// Apply only this command of the stream (repeatable; any case). The full sync copies keys,
    /// not commands, and is not affected; inside MULTI/EXEC each command is judged, the
    /// transaction kept (an emptied one is dropped). Commands are judged as the source
    /// propagates them: Redis 7 sends EXPIRE as PEXPIREAT, a script as the commands it ran
    #[arg(long = "command", value_name = "NAME")]
    pub commands: Vec<String>,

    /// Apply only the stream's commands of this group, as COMMAND DOCS names it: string, hash,
    /// list, set, sorted-set, stream, generic, scripting, pubsub, server, ... (repeatable; any
    /// case, RedisShake's SORTED_SET too; with --command a command must pass both)
    #[arg(long = "command-group", value_name = "GROUP")]
    pub groups: Vec<String>,

    /// Do not apply this command of the stream (repeatable; e.g. FLUSHALL, FLUSHDB, DEL): it is
    /// skipped and counted. The full sync is a snapshot and is not affected
    #[arg(long = "exclude-command", value_name = "NAME")]
    pub exclude_commands: Vec<String>,

    /// Do not apply the stream's commands of this group (repeatable; e.g. scripting, pubsub)
    #[arg(long = "exclude-command-group", value_name = "GROUP")]
    pub exclude_groups: Vec<String>,
}

impl CommandFilterArgs {
    pub fn to_filter(&self) -> Result<CommandFilter, String> {
        CommandFilter::new(
            &self.commands,
            &self.exclude_commands,
            &self.groups,
            &self.exclude_groups,
        )
    }
}

/// `--rename-prefix OLD=NEW`: the name a source key gets on the target (see `crate::rename`).
#[derive(Args, Debug, Clone, Default)]
pub struct RenameArgs {
    /// Give keys starting with OLD the prefix NEW instead on the target (repeatable; the longest
    /// matching OLD wins; `OLD=` strips OLD, `=NEW` prefixes every key). Every key of the
    /// snapshot and every key position of every command is renamed, the cluster slot follows
    /// the new name; --key/--key-regex/--exclude-key judge the source name
    #[arg(long = "rename-prefix", value_name = "OLD=NEW")]
    pub rename_prefix: Vec<String>,
}

impl RenameArgs {
    pub fn to_rename(&self) -> Result<crate::rename::Rename, String> {
        crate::rename::Rename::parse(&self.rename_prefix)
    }
}

/// How an append-only file input is read (see `crate::aof`): shake-restore and shake-decode.
#[derive(Args, Debug, Clone, Default)]
pub struct AofArgs {
    /// AOF input: apply (or print) the commands up to the first `#TS:` annotation after TIME,
    /// given as unix seconds or RFC 3339 (2026-12-03T06:00:00Z); the AOF needs the server's
    /// `aof-timestamp-enabled yes`
    #[arg(long, value_name = "TIME", value_parser = crate::aof::parse_until)]
    pub until: Option<i64>,

    /// AOF input ending in a torn command (a crash mid-write): stop (exit 1 naming the offset)
    /// or skip it (everything before it is used), as redis-check-aof --fix would cut it
    #[arg(long, value_name = "stop|skip", default_value = "stop", value_parser = ["stop", "skip"])]
    pub aof_truncated: String,
}

impl AofArgs {
    pub fn truncated(&self) -> Result<crate::aof::Truncated, String> {
        crate::aof::Truncated::parse(&self.aof_truncated)
    }
}

/// `--on-target-error`: what a live copy (shake-sync, shake-rump --follow) does when the target
/// refuses a write the source made.
#[derive(Args, Debug, Clone)]
pub struct TargetErrorArgs {
    /// When the target refuses a command the source executed (WRONGTYPE, BUSYKEY, OOM, a script
    /// error): repair (re-copy the key from the source, counted as repaired) or stop (exit
    /// naming the key)
    #[arg(long, default_value = "repair", value_parser = ["repair", "stop"])]
    pub on_target_error: String,
}

impl TargetErrorArgs {
    pub fn policy(&self) -> Result<crate::apply::OnTargetError, String> {
        crate::apply::OnTargetError::parse(&self.on_target_error)
    }
}

/// How values are written to a target: conflict policy, database mapping, big keys, LRU,
/// field TTLs, rate cap, pipeline depth.
#[derive(Args, Debug, Clone)]
pub struct ApplyArgs {
    /// When a key already exists on the target: panic (stop with an error naming it), rewrite
    /// (replace it), ignore (keep the target's key)
    #[arg(long, default_value = "panic", value_parser = ["panic", "rewrite", "ignore"])]
    pub on_conflict: String,

    /// Map source database SRC to target database DST (repeatable); `*=0` merges every
    /// database, which a cluster target needs for a multi-database source (unless it has the
    /// databases: Valkey 9 `cluster-databases`). Without it, keys
    /// keep their database, or all go to the database named in the target URL (redis://host/3)
    #[arg(long = "db-map", value_name = "SRC=DST")]
    pub db_map: Vec<String>,

    /// Values whose encoding is larger go as batches of commands instead of one RESTORE (never
    /// above the target's proto-max-bulk-len)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BIG_KEY_BYTES)]
    pub big_key_bytes: usize,

    /// Keep LRU idle time / LFU frequency (RESTORE IDLETIME/FREQ) when the source has them
    #[arg(long)]
    pub keep_lru: bool,

    /// Hash field TTLs into a target without field TTLs: refuse (stop with an error naming the
    /// key) or drop (write the fields without TTLs and count them)
    #[arg(long, default_value = "refuse", value_parser = ["refuse", "drop"])]
    pub field_ttls: String,

    /// Cap on commands per second sent to the target (0: no cap)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub qps: u64,

    /// Commands in flight per target connection
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub pipeline: usize,

    /// Send values in their compact encodings (listpack, ziplist, intset) without first checking
    /// their structure as deeply as the servers' sanitize-dump-payload does (faster; a corrupt
    /// value may then crash a target that does not sanitize)
    #[arg(long)]
    pub no_verify_values: bool,
}

impl ApplyArgs {
    pub fn to_options(&self, filter: KeyFilter) -> Result<ApplyOptions, String> {
        Ok(ApplyOptions {
            conflict: ConflictPolicy::parse(&self.on_conflict)?,
            db_map: DbMap::parse(&self.db_map)?,
            filter,
            big_key_bytes: self.big_key_bytes.max(1024),
            keep_lru: self.keep_lru,
            field_ttls: if self.field_ttls == "drop" {
                FieldTtlPolicy::Drop
            } else {
                FieldTtlPolicy::Refuse
            },
            qps: self.qps,
            verify_values: !self.no_verify_values,
            ..ApplyOptions::default()
        })
    }
}

/// How a tool trusts a `rediss://` server's certificate.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM file with the CA certificates to trust for rediss:// (default: the system's); a
    /// server certificate listed in it is also trusted as it is (a self-signed one)
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Trust exactly the server certificate with this SHA-256 fingerprint (64 hex digits,
    /// colons allowed, as `openssl x509 -noout -fingerprint -sha256` prints it; repeatable)
    #[arg(long, value_name = "HEX", value_parser = crate::net::parse_sha256_pin)]
    pub tls_pin_sha256: Vec<[u8; 32]>,

    /// Do not verify the server's TLS certificate (tests and emergencies only; says so on stderr)
    #[arg(long)]
    pub tls_insecure: bool,
}

impl TlsArgs {
    pub fn to_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.tls_ca.clone(),
            pin_sha256: self.tls_pin_sha256.clone(),
            insecure: self.tls_insecure,
        }
    }

    /// True when any TLS flag is given (they need a `rediss://` URL).
    pub fn any(&self) -> bool {
        self.tls_ca.is_some() || self.tls_insecure || !self.tls_pin_sha256.is_empty()
    }
}

/// TLS and timeouts for every connection a tool opens.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Seconds to wait for a connection to be established (TCP, TLS, AUTH)
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Seconds to wait for each reply (on a replication stream: for the next byte; sources
    /// send a keep-alive every second while they prepare a snapshot)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

impl ConnArgs {
    pub fn to_options(&self) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            reply_timeout: Some(Duration::from_secs(self.timeout.max(1))),
            tls: self.tls.to_options(),
        }
    }
}

/// Progress bar and status lines on stderr.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// No progress bar, no status lines (the summary line stays)
    #[arg(short, long)]
    pub quiet: bool,

    /// Seconds between status lines on stderr when it is not a terminal (0: none)
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub log_interval: u64,
}

impl LogArgs {
    pub fn every(&self) -> Option<Duration> {
        (self.log_interval > 0).then(|| Duration::from_secs(self.log_interval))
    }
}

/// `--preflight` and `--json`: check what would stop or hurt the run, print a report, write
/// nothing (see `crate::preflight`).
#[derive(Args, Debug, Clone, Default)]
pub struct PreflightArgs {
    /// Connect and check, write nothing: reachability, AUTH/ACL, TLS, replication access,
    /// buffers, eviction, memory, versions, topology, conflicts; one line per check (OK, WARN,
    /// FAIL) on stdout; exit 0 when nothing blocks the run, 1 when something does
    #[arg(long)]
    pub preflight: bool,

    /// With --preflight: print the report as one JSON document,
    /// {"ok":bool,"checks":[{"name","status","found","advice"}]}
    #[arg(long, requires = "preflight")]
    pub json: bool,
}

/// `--shard K/N`, or `--shard-from-hostname` with `--shards N`: this process takes only its
/// share of the source's masters (see `crate::shard`).
#[derive(Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Take only shard K of N of the source's masters: those whose first slot is in the Kth of
    /// N equal slot ranges (a standalone source is shard 0's). The other shards run elsewhere
    #[arg(
        long,
        value_name = "K/N",
        env = "SHAKE_SHARD",
        conflicts_with = "shard_from_hostname"
    )]
    pub shard: Option<String>,

    /// Take shard K of --shards N, K from SHAKE_SHARD_INDEX (the manifests set it from the
    /// pod-index label) or else from the hostname NAME-K (a StatefulSet ordinal)
    #[arg(long, requires = "shards")]
    pub shard_from_hostname: bool,

    /// N, for --shard-from-hostname
    #[arg(long, value_name = "N", env = "SHAKE_SHARDS")]
    pub shards: Option<u32>,
}

impl ShardArgs {
    pub fn to_shard(&self) -> Result<crate::shard::Shard, String> {
        use crate::shard::{hostname, Shard, INDEX_ENV};
        match (&self.shard, self.shard_from_hostname, self.shards) {
            (Some(s), _, _) => Shard::parse(s),
            (None, true, Some(n)) => {
                Shard::from_hostname(n, std::env::var(INDEX_ENV).ok().as_deref(), &hostname())
            }
            (None, true, None) => Err("--shard-from-hostname needs --shards N".into()),
            (None, false, _) => Ok(Shard::WHOLE),
        }
    }
}

/// `--{source,target}-cluster` / `--no-{source,target}-cluster` as the `Option<bool>` the
/// clients take (`None`: detect).
pub fn cluster_mode(cluster: bool, no_cluster: bool) -> Option<bool> {
    if cluster {
        Some(true)
    } else if no_cluster {
        Some(false)
    } else {
        None
    }
}

/// The async runtime every tool runs on (two worker threads: the tools are I/O-bound and the
/// blocking RDB parser has its own thread). `None` after printing why it could not start.
pub fn runtime(tool: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{tool}: cannot start the async runtime: {e}");
            None
        }
    }
}

/// `--output FILE|-` and its companions: shake-sync writing a change stream instead of applying
/// to a target (see `crate::sync::output`).
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Write the sync out instead of applying it to a target: the full snapshot, then every
    /// command of the stream, to FILE or `-` (standard output), resumable (FILE.state holds
    /// where it ends). Not with --target
    #[arg(long, value_name = "FILE|-", conflicts_with = "target")]
    pub output: Option<String>,

    /// With --output: `jsonl` (one JSON object per record, docs/output-formats.md) or `resp`
    /// (the commands as an AOF holds them: redis-check-aof, redis-cli --pipe)
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "jsonl",
        requires = "output"
    )]
    pub output_format: String,

    /// With --output: where the resume point is kept (default FILE.state; `-` has none unless
    /// given, so each start writes a new snapshot)
    #[arg(long, value_name = "FILE", requires = "output")]
    pub output_state: Option<PathBuf>,

    /// With --output: when the source cannot continue from the output's end (restarted, backlog
    /// overrun), append a new snapshot instead of stopping with an error
    #[arg(long, requires = "output")]
    pub output_resync: bool,
}

/// The output's file (`None`: standard output), its format and its state file.
pub type OutputParts = (
    Option<PathBuf>,
    crate::sync::output::OutputFormat,
    Option<PathBuf>,
);

impl OutputArgs {
    /// The output's file (`None`: standard output), format and state file; `None` without
    /// `--output`.
    pub fn to_parts(&self) -> Result<Option<OutputParts>, String> {
        let Some(o) = &self.output else {
            return Ok(None);
        };
        let path = (o != "-").then(|| PathBuf::from(o));
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("--output: give a file, or - for standard output".into());
        }
        let format = crate::sync::output::OutputFormat::parse(&self.output_format)?;
        let state = crate::sync::output::state_path(path.as_deref(), self.output_state.clone());
        Ok(Some((path, format, state)))
    }
}

/// The full sync over two connections (Valkey 8.0+ dual-channel replication, Redis 8.0+ RDB
/// channel) and where the command stream waits meanwhile (docs/shake-sync.md).
#[derive(clap::Args, Debug, Clone)]
pub struct DualChannelArgs {
    /// Never ask for the full sync over two connections (Valkey dual-channel, Redis RDB channel):
    /// one connection, the source holding the stream for us while the RDB is applied
    #[arg(long)]
    pub no_dual_channel: bool,

    /// With two connections: how much of the command stream read while the RDB is applied is
    /// held in memory before the rest goes to --spool-dir (suffixes k, m, g: powers of 1024)
    #[arg(long, value_name = "SIZE", default_value = "32m")]
    pub spool_memory: String,

    /// With two connections: where the stream goes beyond --spool-memory (created if missing;
    /// files deleted as they are applied)
    #[arg(long, value_name = "DIR", default_value = "shake-spool")]
    pub spool_dir: PathBuf,

    /// With two connections: the most the stream may take in --spool-dir; beyond it the sync
    /// stops with an error saying so (suffixes k, m, g)
    #[arg(long, value_name = "SIZE", default_value = "4g")]
    pub spool_max: String,
}

impl DualChannelArgs {
    /// What [`crate::repl::ReplOptions::dual_channel`] takes; `None` with `--no-dual-channel`.
    pub fn to_options(
        &self,
        connect: &crate::net::ConnectOptions,
    ) -> Result<Option<crate::repl::DualChannel>, String> {
        let memory = parse_size(&self.spool_memory).map_err(|e| format!("--spool-memory: {e}"))?;
        let max = parse_size(&self.spool_max).map_err(|e| format!("--spool-max: {e}"))?;
        if self.no_dual_channel {
            return Ok(None);
        }
        Ok(Some(crate::repl::DualChannel {
            connect: connect.clone(),
            spool: crate::spool::SpoolOptions {
                memory,
                dir: self.spool_dir.clone(),
                max,
            },
        }))
    }
}

/// A size: digits with an optional suffix k, m, g (or kb/mb/gb, kib/mib/gib; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = t.split_at(digits);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size (a number, optionally k, m or g)"
            ))
        }
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a size (a number, optionally k, m or g)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("32MB"), Ok(32 << 20));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("10 mib"), Ok(10 << 20));
        for bad in ["", "k", "1.5g", "-1", "12x", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
