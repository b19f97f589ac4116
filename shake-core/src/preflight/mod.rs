//! Preflight: connect, look, report what would stop or hurt a run, and write nothing.
//!
//! This module owns the checks every tool's `--preflight` runs, the [`Report`] they fill (one
//! [`Check`] per line: a name, OK / WARN / FAIL, what was found, what to do), and its plain-text
//! and JSON renderings. The checks come in three groups:
//!
//! - **source** (a replication or SCAN source): reachable, AUTH/ACL, TLS, cluster slot coverage;
//!   PSYNC (or its configured name) and REPLCONF present and allowed, learned with `COMMAND
//!   INFO` and `ACL DRYRUN` (or, on 6.x, a MULTI that is always DISCARDed) without starting a
//!   sync; `repl-backlog-size` against the write rate (two INFO samples a second apart);
//!   the replica class of `client-output-buffer-limit` against the writes made during an
//!   estimated full sync; the keyspace.
//! - **target** (a write target): reachable, AUTH/ACL, TLS, slot coverage, RESTORE allowed,
//!   `maxmemory` / `maxmemory-policy`, the keyspace.
//! - **pairing** (this source into this target): memory, RDB version against the encodings the
//!   source uses (fast path, portable path, or not at all), hash field TTLs, functions,
//!   database mapping (a multi-DB source into a cluster), and existing keys under
//!   `--on-conflict` (a sample of source keys looked up with EXISTS).
//!
//! Nothing is written to either server: the commands sent are PING, INFO, CONFIG GET, COMMAND
//! INFO, ACL DRYRUN, FUNCTION LIST, CLUSTER SHARDS/SLOTS, SELECT, SCAN, TYPE, EXISTS, and
//! MULTI/DISCARD around a queued command on 6.x (see `probe::access`). Thresholds are in
//! `verdict`.
//!
//! # Wiring it into a tool
//!
//! Flatten [`crate::cli::PreflightArgs`] into the tool's arguments; when `--preflight` is given,
//! build a [`Preflight`] from the options the run would use, call the method for the tool, add
//! any check of the tool's own with [`Report::push`], and exit with [`Report::print`]:
//!
//! ```no_run
//! # async fn demo(source: shake_core::net::Endpoint, target: shake_core::net::Endpoint,
//! #               apply: shake_core::apply::ApplyOptions, conn: shake_core::net::ConnectOptions) -> u8 {
//! use shake_core::preflight::{Check, Preflight};
//!
//! let mut pf = Preflight::new(conn);          // ConnArgs::to_options()
//! pf.apply = apply;                           // ApplyArgs::to_options(filter): conflicts, --db-map
//! pf.psync_command = "PSYNC".into();          // --psync-command
//! pf.source_cluster = None;                   // cluster_mode(...): None detects
//! pf.target_cluster = None;
//! let mut report = pf.sync(&source, &target).await;
//! // shake-sync's own line: where its checkpoint is and whether a restart resumes.
//! report.push(Check::ok("sync.checkpoint", "none yet: the first run starts with a full sync"));
//! report.print(false)                         // --json: true; returns the exit code (0 or 1)
//! # }
//! ```
//!
//! One method per tool: [`Preflight::dump`] (source only), [`Preflight::sync`] (source, target,
//! pairing), [`Preflight::rump`] (SCAN/DUMP source, optional target, pairing),
//! [`Preflight::restore`] (RDB files instead of a source server), [`Preflight::check`] (the
//! connections of shake-check: reachable, AUTH, TLS, topology, keyspace on each side).
//!
//! The JSON form is one document: `{"ok":bool,"checks":[{"name","status","found","advice"}]}`,
//! with `status` one of `ok`, `warn`, `fail`; `ok` is false when any check failed.

mod checks;
mod file;
mod probe;
mod report;
pub mod verdict;

pub use checks::Purpose;
pub use report::{Check, Report, Status};

use crate::apply::{ApplyOptions, RestoreInput};
use crate::net::{ConnectOptions, Endpoint};

use checks::SourceData;
use probe::{connect_side, Side};

/// Keys of the source looked up on the target by the conflict check.
pub const DEFAULT_SAMPLE_KEYS: usize = 100;

/// The options a run would use, for its preflight. Fill in what applies to the tool; the rest
/// keeps its default.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub connect: ConnectOptions,
    /// Force the source to be (or not be) a cluster; `None` detects.
    pub source_cluster: Option<bool>,
    pub target_cluster: Option<bool>,
    /// The name of PSYNC on the source (`--psync-command`).
    pub psync_command: String,
    /// shake-sync asks for a full sync over two connections (not `--no-dual-channel`): a source
    /// that offers it keeps no output buffer of writes for the full sync.
    pub dual_channel: bool,
    /// Conflict policy, database mapping, filters, field TTL policy of the run.
    pub apply: ApplyOptions,
    /// How many source keys the conflict check looks up on the target.
    pub sample_keys: usize,
    /// Read RDB versions newer than the known ones (shake-restore `--relaxed-version`).
    pub relaxed_version: bool,
    /// AOF inputs: `--until` (unix seconds) and `--aof-truncated`, as the restore would use them.
    pub until: Option<i64>,
    pub aof_truncated: crate::aof::Truncated,
}

impl Preflight {
    pub fn new(connect: ConnectOptions) -> Preflight {
        Preflight {
            connect,
            source_cluster: None,
            target_cluster: None,
            psync_command: "PSYNC".into(),
            dual_channel: false,
            apply: ApplyOptions::default(),
            sample_keys: DEFAULT_SAMPLE_KEYS,
            relaxed_version: false,
            until: None,
            aof_truncated: crate::aof::Truncated::Stop,
        }
    }

    async fn source(
        &self,
        report: &mut Report,
        source: &Endpoint,
        purpose: Purpose,
    ) -> Option<Side> {
        let mut side =
            connect_side(report, "source", source, self.source_cluster, &self.connect).await?;
        match purpose {
            Purpose::Dump | Purpose::Sync => {
                checks::replication(report, &mut side, purpose, &self.psync_command).await;
                let rates = checks::write_rates(&mut side).await;
                checks::backlog(report, &side, purpose, &rates);
                let dual = purpose == Purpose::Sync && self.dual_channel;
                checks::output_buffer(report, &mut side, purpose, &rates, dual).await;
            }
            Purpose::Rump => checks::rump_access(report, &mut side).await,
            Purpose::Check => {}
        }
        checks::keyspace(report, &side);
        Some(side)
    }

    async fn target(
        &self,
        report: &mut Report,
        target: &Endpoint,
        source_expires: Option<u64>,
    ) -> Option<Side> {
        let mut side =
            connect_side(report, "target", target, self.target_cluster, &self.connect).await?;
        checks::target_permissions(report, &mut side).await;
        checks::eviction(report, &side, source_expires);
        checks::keyspace(report, &side);
        Some(side)
    }

    async fn pair(&self, report: &mut Report, target: &mut Side, src: &SourceData) {
        checks::memory(report, target, src);
        checks::format(report, target, src);
        checks::field_ttls(report, target, src, self.apply.field_ttls);
        checks::functions(report, target, src).await;
        checks::databases(report, target, src, &self.apply).await;
        checks::conflicts(report, target, src, &self.apply).await;
    }

    /// shake-dump: the source only (reachable, AUTH, TLS, PSYNC, backlog, output buffer,
    /// keyspace).
    pub async fn dump(&self, source: &Endpoint) -> Report {
        let mut report = Report::new();
        self.source(&mut report, source, Purpose::Dump).await;
        report
    }

    /// shake-sync: source (as a replication source that must also resume), target, pairing.
    pub async fn sync(&self, source: &Endpoint, target: &Endpoint) -> Report {
        self.server_to_server(source, target, Purpose::Sync).await
    }

    /// shake-rump: source as a SCAN + DUMP source; the target and pairing checks when there is
    /// a target server (not when the output is an RDB file).
    pub async fn rump(&self, source: &Endpoint, target: Option<&Endpoint>) -> Report {
        match target {
            Some(t) => self.server_to_server(source, t, Purpose::Rump).await,
            None => {
                let mut report = Report::new();
                self.source(&mut report, source, Purpose::Rump).await;
                report
            }
        }
    }

    async fn server_to_server(
        &self,
        source: &Endpoint,
        target: &Endpoint,
        purpose: Purpose,
    ) -> Report {
        let mut report = Report::new();
        let mut src = self.source(&mut report, source, purpose).await;
        let expires = src
            .as_ref()
            .map(|s| s.keyspace().values().map(|d| d.expires).sum::<u64>());
        let tgt = self.target(&mut report, target, expires).await;
        if let (Some(s), Some(mut t)) = (src.as_mut(), tgt) {
            let data = checks::source_data(s, &self.apply, self.sample_keys).await;
            self.pair(&mut report, &mut t, &data).await;
        }
        report
    }

    /// shake-check: each side reachable, AUTH, TLS, topology and keyspace. `source` is `None`
    /// when the source is an RDB file.
    pub async fn check(&self, source: Option<&Endpoint>, target: &Endpoint) -> Report {
        let mut report = Report::new();
        if let Some(s) = source {
            self.source(&mut report, s, Purpose::Check).await;
        }
        if let Some(side) = connect_side(
            &mut report,
            "target",
            target,
            self.target_cluster,
            &self.connect,
        )
        .await
        {
            checks::keyspace(&mut report, &side);
        }
        report
    }

    /// shake-restore: the RDB files stand in for the source (`source.file` per file: format,
    /// size, databases, functions, read once without writing), an AOF input by its RDB part
    /// (`source.file`) and its commands (`source.aof`, `file::scan_commands`), then the target
    /// and pairing checks. Stdin is not read: a stream cannot be looked at without consuming it.
    pub async fn restore(&self, inputs: &[RestoreInput], target: &Endpoint) -> Report {
        let mut report = Report::new();
        let mut data = SourceData {
            exact: true,
            from_file: true,
            field_ttl_keys: Some(0),
            functions: Some(0),
            ..SourceData::default()
        };
        let mut names = Vec::new();
        let mut usable = true;
        let mut size = 0u64;
        for input in inputs {
            let path = match input {
                RestoreInput::Stdin => {
                    report.push(Check::warn(
                        "source.file",
                        "stdin: a stream is read as it arrives, so --preflight cannot look inside it",
                        "run --preflight on the file itself to check its encodings, databases and conflicts",
                    ));
                    usable = false;
                    continue;
                }
                RestoreInput::File(p) => p.clone(),
            };
            // What the input is made of: an RDB, or the parts of an AOF (crate::aof).
            let (rdb_parts, mut commands) = match crate::aof::layout(&path) {
                Err(e) => {
                    report.push(Check::fail(
                        "source.file",
                        e,
                        "give an RDB file, an AOF, or a multi-part AOF directory or its manifest",
                    ));
                    usable = false;
                    continue;
                }
                Ok(None) => (vec![(path.clone(), false)], Vec::new()),
                Ok(Some(crate::aof::Layout::Rdb)) => (vec![(path.clone(), true)], Vec::new()),
                Ok(Some(crate::aof::Layout::Aof { parts, .. })) => {
                    let mut rdbs = Vec::new();
                    let mut cmds = Vec::new();
                    for part in parts {
                        match part {
                            crate::aof::Part::Rdb { path, tail } => rdbs.push((path, tail)),
                            crate::aof::Part::Commands { path, start } => cmds.push((path, start)),
                        }
                    }
                    (rdbs, cmds)
                }
            };
            for (path, tail) in rdb_parts {
                let (filter, relaxed) = (self.apply.filter.clone(), self.relaxed_version);
                let room = self.sample_keys.saturating_sub(data.sample.len());
                let p2 = path.clone();
                let scanned =
                    tokio::task::spawn_blocking(move || file::scan(&p2, &filter, relaxed, room))
                        .await
                        .map_err(|e| format!("reading {} failed: {e}", path.display()))
                        .and_then(|r| r);
                match scanned {
                    Err(e) => {
                        report.push(Check::fail(
                            "source.file",
                            e,
                            "restore from an intact file (shake-decode reads it and names the damage); --relaxed-version for an RDB newer than this build knows",
                        ));
                        usable = false;
                    }
                    Ok(f) if f.header.is_none() => {
                        report.push(Check::fail(
                            "source.file",
                            format!("{input}: no RDB header was read"),
                            "restore from an intact file",
                        ));
                        usable = false;
                    }
                    Ok(f) => {
                        let keys: u64 = f.dbs.values().sum();
                        let Some(h) = f.header else { continue };
                        let magic = match h.magic {
                            crate::rdb::Magic::Redis => "REDIS",
                            crate::rdb::Magic::Valkey => "VALKEY",
                        };
                        let dbs = if f.dbs.is_empty() {
                            "no keys".to_string()
                        } else {
                            f.dbs
                                .iter()
                                .map(|(db, k)| format!("db{db}: {k} keys"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        report.push(Check::ok(
                            "source.file",
                            format!(
                                "{}: {magic} RDB {}, {}, {keys} keys to copy ({dbs}), {} function libraries{}",
                                path.display(),
                                h.version,
                                verdict::bytes(f.size),
                                f.functions,
                                if f.field_ttl_keys > 0 {
                                    format!(", {} hashes with field TTLs", f.field_ttl_keys)
                                } else {
                                    String::new()
                                }
                            ),
                        ));
                        size += f.size;
                        data.formats.push((h, f.types));
                        for (db, k) in f.dbs {
                            *data.dbs.entry(db).or_default() += k;
                        }
                        data.functions = data.functions.map(|n| n + f.functions);
                        data.field_ttl_keys = data.field_ttl_keys.map(|n| n + f.field_ttl_keys);
                        data.sample.extend(f.sample);
                        names.push(input.to_string());
                        // An AOF with an RDB preamble: its commands follow the RDB.
                        if tail && crate::aof::preamble_tail_at(&path, f.end).unwrap_or(false) {
                            commands.push((path.clone(), f.end));
                        }
                    }
                }
            }
            if !commands.is_empty() {
                let (until, truncated) = (self.until, self.aof_truncated);
                let scanned = tokio::task::spawn_blocking(move || {
                    file::scan_commands(&commands, until, truncated)
                })
                .await
                .map_err(|e| format!("reading {input} failed: {e}"));
                match scanned {
                    Err(e) => {
                        report.push(Check::fail("source.aof", e, "restore from an intact AOF"));
                        usable = false;
                    }
                    Ok(c) => {
                        usable &= c.check.status != Status::Fail;
                        size += c.bytes;
                        names.push(input.to_string());
                        for db in c.dbs {
                            // Databases the commands write: for the database checks, no keys
                            // counted (what the commands leave is not known before they run).
                            data.dbs.entry(db).or_default();
                        }
                        report.push(c.check);
                    }
                }
            } else if self.until.is_some() {
                report.push(Check::fail(
                    "source.aof",
                    format!("--until: {input} holds no AOF commands (an RDB has no #TS: annotations to stop at)"),
                    "give an AOF, or leave --until out",
                ));
                usable = false;
            }
        }
        data.bytes = Some(size);
        names.dedup();
        data.what = match names.len() {
            1 => names[0].clone(),
            n => format!("the {n} files"),
        };
        let tgt = self.target(&mut report, target, None).await;
        if let (Some(mut t), true) = (tgt, usable && !names.is_empty()) {
            self.pair(&mut report, &mut t, &data).await;
        }
        report
    }
}
