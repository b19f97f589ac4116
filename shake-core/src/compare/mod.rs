//! The comparison engine behind shake-check: proves that a target holds what a source holds
//! (a live server or cluster, or an RDB file), or lists every difference.
//!
//! - Both directions: every source key is looked up on the target (missing, type, value, TTL),
//!   and every target key on the source (extra).
//! - Three depths ([`Mode`]): `outline` (existence, type, TTL), `length` (also element counts),
//!   `full` (also every element and byte).
//! - Keys travel in batches (one SCAN page, about `scan_count` keys) through pipelined
//!   commands on both sides at once: `TYPE` + `PTTL`, then per type a length command and the
//!   value when it is small (up to [`SMALL_ELEMENTS`] elements, strings up to
//!   [`SMALL_STRING_BYTES`]). Bigger values are compared in chunks without loading them whole:
//!   strings by `GETRANGE` windows, lists by `LRANGE` windows, streams by `XRANGE` windows, and
//!   sets, hashes and zsets by scanning one side (`SSCAN`/`HSCAN`/`ZSCAN`) and looking the
//!   members up on the other (`SMISMEMBER`/`HMGET`/`ZMSCORE`): equal counts and every source
//!   member present with an equal value mean equal collections, whatever order each server
//!   scans in. Scores are compared as the bits of their double (servers print them with 17
//!   significant digits or the shortest round-trip form, both exact).
//! - Rounds: the first round compares everything; each later round, after a pause, re-checks
//!   only the keys that differed, so writes in flight during a live sync do not show up as
//!   differences. Only differences that persist through the final round are reported.
//! - Keys whose name starts with [`INTERNAL_KEY_PREFIX`] (shake-sync's checkpoints on a target)
//!   are left out unless asked for.
//!
//! Memory: one batch of keys per reader, each with at most a small value per side; a big value
//! is held one chunk at a time. With an RDB source, the names of the file's keys are kept as
//! 64-bit fingerprints for the extra-key pass (see [`rdbsrc`]). Keys that differ are kept between
//! rounds (their names only).

mod engine;
pub mod model;
mod rdbsrc;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::apply::DbMap;
use crate::client::ClientError;
use crate::filter::KeyFilter;
use crate::glob::glob_match;
use crate::net::{ConnectOptions, Endpoint};
use crate::sink::json;

pub use engine::SideInfo;

/// Keys that shake-sync writes on a target for its own bookkeeping (checkpoints) start with this;
/// they are not part of the data and are skipped unless `include_internal` is set.
pub use crate::sync::checkpoint::KEY_PREFIX as INTERNAL_KEY_PREFIX;

/// Most elements of a collection fetched whole with the batch; bigger ones are compared in chunks.
pub const SMALL_ELEMENTS: usize = 512;
/// Most bytes of a string fetched whole with the batch; longer strings go in windows.
pub const SMALL_STRING_BYTES: usize = 16 * 1024;
/// Elements (or string bytes) per chunk of a big value.
pub const CHUNK_ELEMENTS: usize = 1024;
pub const CHUNK_BYTES: usize = 1 << 20;

/// How deep the comparison goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Existence, type and TTL.
    Outline,
    /// Also the element count (string length, list/set/zset/hash/stream length).
    Length,
    /// Also every element and byte, stream groups, last ids and pending counts.
    Full,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "outline" => Ok(Mode::Outline),
            "length" => Ok(Mode::Length),
            "full" => Ok(Mode::Full),
            _ => Err(format!(
                "unknown mode {s:?}: expected full, length or outline"
            )),
        }
    }
}

/// Where the source data comes from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A live server or cluster (`cluster`: `None` detects).
    Live {
        endpoint: Endpoint,
        cluster: Option<bool>,
    },
    /// An RDB file, read once per round in a streaming pass.
    Rdb(PathBuf),
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub source: SourceSpec,
    pub target: Endpoint,
    pub target_cluster: Option<bool>,
    pub connect: ConnectOptions,
    pub mode: Mode,
    /// TTLs whose deadlines differ by at most this many milliseconds are equal.
    pub ttl_tolerance_ms: i64,
    /// Rounds in all (at least 1).
    pub rounds: u32,
    /// Pause before each round after the first.
    pub interval: Duration,
    pub filter: KeyFilter,
    pub db_map: DbMap,
    /// `--rename-prefix`: a source key is compared with the target key of its new name; a
    /// target key is looked up on the source under the name(s) it comes from.
    pub rename: crate::rename::Rename,
    /// Key globs left out on both sides.
    pub ignore: Vec<Vec<u8>>,
    pub include_internal: bool,
    /// Cap on commands per second, both sides together (0: none).
    pub qps: u64,
    /// Readers per source node (each with its own connections).
    pub parallel: usize,
    /// SCAN COUNT: about this many keys per batch.
    pub scan_count: usize,
    /// Read RDB versions newer than the known ones.
    pub relaxed_version: bool,
    pub quiet: bool,
    pub log_every: Option<Duration>,
    /// `--shard K/N`: only the source masters of this shard, and the target keys whose slot
    /// they serve (see [`crate::shard`]); a live source only.
    pub shard: crate::shard::Shard,
}

impl CompareOptions {
    pub fn new(source: SourceSpec, target: Endpoint) -> Self {
        CompareOptions {
            source,
            target,
            target_cluster: None,
            connect: ConnectOptions::default(),
            mode: Mode::Full,
            ttl_tolerance_ms: 2000,
            rounds: 3,
            interval: Duration::from_secs(5),
            filter: KeyFilter::all(),
            db_map: DbMap::default(),
            rename: crate::rename::Rename::default(),
            ignore: Vec::new(),
            include_internal: false,
            qps: 0,
            parallel: 4,
            scan_count: 1000,
            relaxed_version: false,
            quiet: true,
            log_every: None,
            shard: crate::shard::Shard::WHOLE,
        }
    }

    /// Whether a key name is compared at all (internal prefix, --ignore-key, --key, --key-regex).
    pub fn wants_key(&self, key: &[u8]) -> bool {
        (self.include_internal || !key.starts_with(INTERNAL_KEY_PREFIX))
            && !self.ignore.iter().any(|g| glob_match(g, key))
            && self.filter.key_allowed(key)
    }

    /// The source names a target key is looked up under: itself without `--rename-prefix`;
    /// with it, the names the rules turn into it (none: no source key becomes it, so it is
    /// extra wherever it exists).
    pub fn source_names(&self, target_key: &[u8]) -> Vec<Vec<u8>> {
        if self.rename.is_empty() {
            return vec![target_key.to_vec()];
        }
        self.rename.sources_of(target_key)
    }

    /// [`CompareOptions::wants_key`] for a key scanned on the target: `--ignore-key` and the
    /// internal prefix judge its own name, the key filters the source names it comes from (its
    /// own when no source name becomes it).
    pub fn wants_target_key(&self, key: &[u8]) -> bool {
        if self.rename.is_empty() {
            return self.wants_key(key);
        }
        if (!self.include_internal && key.starts_with(INTERNAL_KEY_PREFIX))
            || self.ignore.iter().any(|g| glob_match(g, key))
        {
            return false;
        }
        let names = self.rename.sources_of(key);
        if names.is_empty() {
            return self.filter.key_allowed(key);
        }
        names.iter().any(|n| self.filter.key_allowed(n))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiffKind {
    /// In the source, not in the target.
    Missing,
    /// In the target, not in the source.
    Extra,
    Type,
    Value,
    Ttl,
}

impl DiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Type => "type",
            DiffKind::Value => "value",
            DiffKind::Ttl => "ttl",
        }
    }
}

/// What differs: a key, or a function library.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// `db`: the source database (for an extra key, the target's database).
    Key {
        db: u64,
        key: Bytes,
    },
    Function {
        library: Bytes,
    },
}

/// One difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub subject: Subject,
    pub kind: DiffKind,
    pub source: String,
    pub target: String,
}

impl Diff {
    /// The JSON line (with its newline): `{"db":0,"key":"k","kind":"value","source":"...",
    /// "target":"..."}`; a function library has `"function":"name"` instead of db and key.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match &self.subject {
            Subject::Key { db, key } => {
                out.extend_from_slice(b"{\"db\":");
                json::uint(out, *db);
                out.extend_from_slice(b",\"key\":");
                json::bytes(out, key);
            }
            Subject::Function { library } => {
                out.extend_from_slice(b"{\"function\":");
                json::bytes(out, library);
            }
        }
        out.extend_from_slice(b",\"kind\":");
        json::str(out, self.kind.as_str());
        out.extend_from_slice(b",\"source\":");
        json::str(out, &self.source);
        out.extend_from_slice(b",\"target\":");
        json::str(out, &self.target);
        out.extend_from_slice(b"}\n");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("source: {0}")]
    Source(ClientError),
    #[error("target: {0}")]
    Target(ClientError),
    #[error("{0}")]
    Rdb(String),
    #[error("{0}")]
    Setup(String),
}

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Source keys compared in the first round.
    pub source_keys: u64,
    /// Target keys looked up on the source in the first round.
    pub target_keys: u64,
    pub rounds: u32,
    /// Differences reported (after the final round), by kind.
    pub missing: u64,
    pub extra: u64,
    pub types: u64,
    pub values: u64,
    pub ttls: u64,
    pub functions: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.types + self.values + self.ttls + self.functions
    }

    fn count(&mut self, d: &Diff) {
        if matches!(d.subject, Subject::Function { .. }) {
            self.functions += 1;
            return;
        }
        match d.kind {
            DiffKind::Missing => self.missing += 1,
            DiffKind::Extra => self.extra += 1,
            DiffKind::Type => self.types += 1,
            DiffKind::Value => self.values += 1,
            DiffKind::Ttl => self.ttls += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} source keys and {} target keys compared in {} round(s); {} difference(s) (missing {}, extra {}, type {}, value {}, ttl {}, functions {}); {:.1} s",
            self.source_keys,
            self.target_keys,
            self.rounds,
            self.differences(),
            self.missing,
            self.extra,
            self.types,
            self.values,
            self.ttls,
            self.functions,
            secs
        )
    }
}

/// The keys a later round re-checks: what differed in the round before.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recheck {
    /// Source database and key (compared source to target).
    pub forward: BTreeSet<(u64, Bytes)>,
    /// Target database and key (looked up on the source).
    pub extra: BTreeSet<(u64, Bytes)>,
    pub functions: bool,
}

impl Recheck {
    fn add(&mut self, d: &Diff) {
        match &d.subject {
            Subject::Function { .. } => self.functions = true,
            Subject::Key { db, key } if d.kind == DiffKind::Extra => {
                self.extra.insert((*db, key.clone()));
            }
            Subject::Key { db, key } => {
                self.forward.insert((*db, key.clone()));
            }
        }
    }
}

/// Runs the comparison: round after round until nothing differs or the rounds are used up.
/// `report` receives each difference of the final round once, as it is found.
pub async fn check(
    opts: CompareOptions,
    report: &mut (dyn FnMut(&Diff) + Send),
) -> Result<Summary, CompareError> {
    let started = Instant::now();
    let opts = Arc::new(opts);
    let plan = engine::Plan::prepare(opts.clone()).await?;
    let mut summary = Summary::default();
    let mut recheck: Option<Recheck> = None;
    let rounds = opts.rounds.max(1);
    for round in 1..=rounds {
        if round > 1 {
            tokio::time::sleep(opts.interval).await;
        }
        summary.rounds = round;
        let last = round == rounds;
        let mut next = Recheck::default();
        let mut seen: HashSet<Subject> = HashSet::new();
        let mut found = 0u64;
        let mut sink = |d: Diff| {
            // A key can turn up in both directions when it changes during the round.
            if !seen.insert(d.subject.clone()) {
                return;
            }
            found += 1;
            if last {
                summary.count(&d);
                report(&d);
            } else {
                next.add(&d);
            }
        };
        let counts = plan.run_round(recheck.as_ref(), &mut sink).await?;
        if round == 1 {
            summary.source_keys = counts.source_keys.load(Ordering::Relaxed);
            summary.target_keys = counts.target_keys.load(Ordering::Relaxed);
        }
        if found == 0 || last {
            break;
        }
        if !opts.quiet {
            eprintln!(
                "shake-check: round {round}: {found} key(s) differ; re-checking them in {:.1} s",
                opts.interval.as_secs_f64()
            );
        }
        recheck = Some(next);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let d = Diff {
            subject: Subject::Key {
                db: 1,
                key: Bytes::from_static(b"k\xff"),
            },
            kind: DiffKind::Ttl,
            source: "ttl 5000 ms".into(),
            target: "no ttl".into(),
        };
        let mut out = Vec::new();
        d.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"db\":1,\"key\":{\"base64\":\"a/8=\"},\"kind\":\"ttl\",\"source\":\"ttl 5000 ms\",\"target\":\"no ttl\"}\n"
        );
    }

    #[test]
    fn internal_and_ignored_keys() {
        let mut o = CompareOptions::new(
            SourceSpec::Rdb("x".into()),
            Endpoint::parse("redis://h").unwrap(),
        );
        o.ignore.push(b"hb:*".to_vec());
        assert!(!o.wants_key(b"shake-sync:checkpoint"));
        assert!(!o.wants_key(b"hb:1"));
        assert!(o.wants_key(b"user:1"));
        o.include_internal = true;
        assert!(o.wants_key(b"shake-sync:checkpoint"));
    }
}
