//! Turning RDB content into target writes: the fast path (RESTORE with the raw payload), the
//! portable path (a payload re-encoded for an older target), the big-key path (batches of
//! commands), the conflict policy, database mapping, filters, expired keys, functions, and the
//! write-rate cap. shake-restore wires it to files; shake-sync and shake-rump reuse it as is.
//!
//! The work is split in two halves joined by a bounded queue: `plan` runs with the parser on a
//! blocking thread and decides how each value travels; `exec` runs on the async runtime and
//! drives the target client, checking every reply.
//!
//! A big key is built under [`building_name`] and renamed into place by its last command (its TTL
//! set before), so it is never visible incomplete: a run interrupted mid-key leaves the real key
//! as it was (absent, or the older value) and only the temporary one behind, which the next run
//! deletes before building the key again, whatever `--on-conflict` says.

pub mod exec;
pub mod functions;
pub mod plan;
mod restore;

pub(crate) use restore::target_modules;
pub use restore::{
    apply_rdb, connect_target, prepare_target, restore, run_exec, work_queue, PreparedTarget,
    RestoreInput, RestoreSettings, RestoreSummary, WorkReceiver, WorkSender,
};

use std::fmt;

use crate::crc64::Crc64;
use crate::filter::KeyFilter;
use crate::rdb::writer::FieldTtlPolicy;
use crate::rdb::{ChecksumStatus, KeyHeader, RdbError};

/// Default of `--big-key-bytes`. The issue asked for 64 MiB, but a value restored whole is held
/// as its capture and as its RESTORE command (and in the connection's write buffer) at once:
/// measured, 64 MiB and 32 MiB peaked at 94 MiB RSS for a 2M-element list, 16 MiB at 61 MiB,
/// 8 MiB at 31 MiB. 8 MiB keeps the restore under the 64 MiB memory bound; a bigger value goes as
/// commands, which costs little (about 2x the time of one RESTORE for that key).
pub const DEFAULT_BIG_KEY_BYTES: usize = 8 << 20;

/// The temporary name a big key is built under before the RENAME into place. It starts with a
/// hash tag that routes to the key's own slot, so on a cluster both names share a slot (RENAME
/// needs that), and it is an ordinary key for every other tool: a run killed mid-key leaves it
/// visible for what it is (shake-check reports it), and a chained sync replicates the build and
/// the RENAME like any other commands.
pub fn building_name(key: &[u8]) -> Vec<u8> {
    let tag = &crate::sync::checkpoint::slot_tags()[crate::client::slot_of(key) as usize];
    let mut out = Vec::with_capacity(key.len() + tag.len() + 20);
    out.extend_from_slice(b"shake-building:{");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"}:");
    out.extend_from_slice(key);
    out
}

/// What to do when a key being written already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Stop with an error naming the key.
    Panic,
    /// Replace the target's key.
    Rewrite,
    /// Keep the target's key and count the conflict.
    Ignore,
}

impl ConflictPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "panic" => Ok(ConflictPolicy::Panic),
            "rewrite" => Ok(ConflictPolicy::Rewrite),
            "ignore" => Ok(ConflictPolicy::Ignore),
            _ => Err(format!(
                "unknown conflict policy {s:?}: expected panic, rewrite or ignore"
            )),
        }
    }
}

/// `--on-target-error`: what a refusal of the target leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTargetError {
    /// Re-copy the key from the source and go on (counted as repaired): see
    /// `sync::repair` and `scan::copy`.
    #[default]
    Repair,
    /// Stop, naming the key.
    Stop,
}

impl OnTargetError {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "repair" => Ok(OnTargetError::Repair),
            "stop" => Ok(OnTargetError::Stop),
            _ => Err(format!(
                "unknown --on-target-error {s:?}: expected repair or stop"
            )),
        }
    }
}

/// `--db-map SRC=DST` rules; `*=DST` maps every database. Databases no rule names keep their
/// number.
#[derive(Debug, Clone, Default)]
pub struct DbMap {
    rules: Vec<(Option<u64>, u64)>,
}

impl DbMap {
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for s in specs {
            let (a, b) = s
                .split_once('=')
                .ok_or_else(|| format!("--db-map {s:?}: expected SRC=DST, e.g. 1=0 or *=0"))?;
            let dst = b
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("--db-map {s:?}: DST must be a database number"))?;
            let src =
                match a.trim() {
                    "*" => None,
                    n => Some(n.parse::<u64>().map_err(|_| {
                        format!("--db-map {s:?}: SRC must be a database number or *")
                    })?),
                };
            rules.push((src, dst));
        }
        Ok(DbMap { rules })
    }

    /// The target database for a source database (exact rules win over `*`).
    pub fn map(&self, db: u64) -> Option<u64> {
        if let Some((_, d)) = self.rules.iter().find(|(s, _)| *s == Some(db)) {
            return Some(*d);
        }
        if let Some((_, d)) = self.rules.iter().find(|(s, _)| s.is_none()) {
            return Some(*d);
        }
        Some(db)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether target database `target` receives keys of some source database among `sources`
    /// (empty: every source database).
    pub fn receives(&self, target: u64, sources: &[u64]) -> bool {
        if !sources.is_empty() {
            return sources.iter().any(|&s| self.map(s) == Some(target));
        }
        if self.rules.iter().any(|(s, d)| s.is_some() && *d == target) {
            return true;
        }
        match self.rules.iter().find(|(s, _)| s.is_none()) {
            // Every database no exact rule names goes there.
            Some((_, d)) => *d == target,
            // Databases keep their number unless a rule moves them.
            None => !self.rules.iter().any(|(s, _)| *s == Some(target)),
        }
    }

    /// Whether another source database may land in the same target database as `db` (so a
    /// FLUSHDB of `db` would also delete the other's keys). Conservative with `*` rules.
    pub fn merges(&self, db: u64) -> bool {
        let Some(t) = self.map(db) else {
            return false;
        };
        let star = self.rules.iter().any(|(s, _)| s.is_none());
        let others_to_t = self.rules.iter().any(|(s, d)| *d == t && *s != Some(db));
        // Source database t keeps its number unless a rule moves it.
        let t_stays = t != db && !self.rules.iter().any(|(s, _)| *s == Some(t));
        star || others_to_t || t_stays
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub conflict: ConflictPolicy,
    pub db_map: DbMap,
    pub filter: KeyFilter,
    /// Values whose encoding exceeds this go as batches of commands instead of one RESTORE.
    pub big_key_bytes: usize,
    /// Most bytes of commands in one batch of a big key.
    pub batch_bytes: usize,
    /// Elements per decoded chunk (and so per command of a big key).
    pub chunk_elements: usize,
    /// Pass IDLETIME / FREQ to RESTORE when the RDB has them.
    pub keep_lru: bool,
    /// Hash field TTLs into a target that has none.
    pub field_ttls: FieldTtlPolicy,
    /// Cap on commands per second sent to the target (0: none).
    pub qps: u64,
    /// Check every compact encoding (listpack, ziplist, intset) of a value before its raw bytes
    /// go to the target, as deeply as the servers' own sanitizer (`ParserOptions::verify_values`).
    pub verify_values: bool,
    /// `--rename-prefix`: the name each admitted key gets on the target.
    pub rename: crate::rename::Rename,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            conflict: ConflictPolicy::Panic,
            db_map: DbMap::default(),
            filter: KeyFilter::all(),
            big_key_bytes: DEFAULT_BIG_KEY_BYTES,
            batch_bytes: 1 << 20,
            chunk_elements: 1024,
            keep_lru: false,
            field_ttls: FieldTtlPolicy::Refuse,
            qps: 0,
            verify_values: true,
            rename: crate::rename::Rename::default(),
        }
    }
}

impl ApplyOptions {
    /// How the RDB that feeds these writes is read: chunked as the writes are cut, raw payloads
    /// checked unless `verify_values` is off.
    pub fn parser_options(&self, relaxed_version: bool) -> crate::rdb::ParserOptions {
        crate::rdb::ParserOptions {
            chunk_elements: self.chunk_elements,
            relaxed_version,
            verify_values: self.verify_values,
            ..crate::rdb::ParserOptions::default()
        }
    }
}

/// One unit of work from the reading half to the writing half.
#[derive(Debug)]
pub enum Work {
    /// One RESTORE command, built by the planner (so the payload is copied once), for `key`.
    Restore { db: u64, key: Vec<u8>, cmd: Vec<u8> },
    /// A batch of commands (each RESP-encoded) for one big key, written to its
    /// [`building_name`]; `first` before any command of the key has been sent, `last` with the
    /// final one (its TTL, then the RENAME into place).
    Commands {
        db: u64,
        key: Vec<u8>,
        cmds: Vec<Vec<u8>>,
        first: bool,
        last: bool,
    },
    /// Delete a key that is gone from the source (shake-rump --follow).
    Delete { db: u64, key: Vec<u8> },
    /// A function library (FUNCTION LOAD).
    Function { code: Vec<u8> },
    /// The end of one RDB.
    End { checksum: ChecksumStatus },
}

impl Work {
    /// Bytes this item holds, for the queue's memory budget.
    pub fn bytes(&self) -> usize {
        match self {
            Work::Restore { cmd, .. } => cmd.len() + 64,
            Work::Commands { cmds, .. } => cmds.iter().map(|c| c.len() + 32).sum::<usize>() + 64,
            Work::Delete { key, .. } => key.len() + 64,
            Work::Function { code } => code.len() + 64,
            Work::End { .. } => 64,
        }
    }
}

#[derive(Debug)]
pub enum ApplyError {
    Rdb(RdbError),
    /// A key exists on the target under `--on-conflict panic`.
    Conflict {
        key: Vec<u8>,
        target: String,
    },
    /// The target refused a write.
    Target {
        key: Option<Vec<u8>>,
        target: String,
        message: String,
    },
    /// Something the target cannot hold, or a setup problem; the text explains.
    Unsupported(String),
    Client(String),
    /// Reading stopped because [`RestoreSettings::stop`] was set (a signal): the restore writes
    /// what was handed over and ends with [`ApplyError::Stopped`].
    Interrupted,
    /// A restore stopped by a signal, after writing what had been read.
    Stopped {
        signal: crate::signals::Signal,
        summary: Box<RestoreSummary>,
    },
    /// A failure after keys were written: the target holds part of the input.
    Partial {
        written: u64,
        error: Box<ApplyError>,
    },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::quote_bytes;
        match self {
            ApplyError::Rdb(e) => write!(f, "{e}"),
            ApplyError::Conflict { key, target } => write!(
                f,
                "key {} already exists on {target} (--on-conflict panic); use --on-conflict rewrite to replace it or ignore to keep it",
                quote_bytes(key)
            ),
            ApplyError::Target { key: Some(k), target, message } => write!(f, "{target} refused key {}: {message}", quote_bytes(k)),
            ApplyError::Target { key: None, target, message } => write!(f, "{target}: {message}"),
            ApplyError::Unsupported(m) | ApplyError::Client(m) => write!(f, "{m}"),
            ApplyError::Interrupted => write!(f, "interrupted"),
            ApplyError::Stopped { signal, summary } => write!(
                f,
                "stopped by {signal} after writing what had been read: {summary}; the target holds that part of the input (a rerun with --on-conflict ignore or rewrite completes it)"
            ),
            ApplyError::Partial { written, error } => write!(
                f,
                "{error} ({written} keys had been written before it: the target holds part of the input)"
            ),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<crate::rdb::writer::TranscodeError> for ApplyError {
    fn from(e: crate::rdb::writer::TranscodeError) -> Self {
        ApplyError::Unsupported(e.to_string())
    }
}

impl From<crate::client::ClientError> for ApplyError {
    fn from(e: crate::client::ClientError) -> Self {
        ApplyError::Client(e.to_string())
    }
}

impl From<RdbError> for ApplyError {
    fn from(e: RdbError) -> Self {
        ApplyError::Rdb(e)
    }
}

/// Builds `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s | FREQ f]` with the payload
/// assembled from `parts` (e.g. type byte, raw value) and, when `seal_version` is set, its
/// trailer (version and CRC-64) appended on the fly: the value bytes are copied exactly once.
pub fn restore_command(
    k: &KeyHeader,
    parts: &[&[u8]],
    seal_version: Option<u16>,
    opts: &ApplyOptions,
) -> Vec<u8> {
    let mut trailer = [0u8; 10];
    let trailer_len = match seal_version {
        Some(v) => {
            let mut crc = Crc64::new();
            for p in parts {
                crc.update(p);
            }
            trailer[..2].copy_from_slice(&v.to_le_bytes());
            crc.update(&trailer[..2]);
            trailer[2..].copy_from_slice(&crc.value().to_le_bytes());
            10
        }
        None => 0,
    };
    let payload_len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + trailer_len;
    // Built without the formatting machinery or temporary strings: this runs once per key.
    let mut ttl_buf = [0u8; 20];
    let ttl = decimal(k.expire_at_ms.unwrap_or(0).max(0) as u64, &mut ttl_buf);
    let mut n_buf = [0u8; 20];
    let mut extra: [(&[u8], Option<u64>); 3] = [(b"", None); 3];
    let mut n_extra = 0;
    let mut args = 4;
    if opts.conflict == ConflictPolicy::Rewrite {
        extra[n_extra] = (b"REPLACE", None);
        n_extra += 1;
    }
    if k.expire_at_ms.is_some() {
        extra[n_extra] = (b"ABSTTL", None);
        n_extra += 1;
    }
    if opts.keep_lru {
        if let Some(idle) = k.idle_s {
            extra[n_extra] = (b"IDLETIME", Some(idle));
            n_extra += 1;
        } else if let Some(freq) = k.freq {
            extra[n_extra] = (b"FREQ", Some(freq as u64));
            n_extra += 1;
        }
    }
    for (_, v) in &extra[..n_extra] {
        args += 1 + usize::from(v.is_some());
    }
    let mut out = Vec::with_capacity(payload_len + k.key.len() + 96);
    out.push(b'*');
    out.extend_from_slice(decimal(args as u64, &mut n_buf));
    out.extend_from_slice(b"\r\n$7\r\nRESTORE\r\n");
    bulk(&mut out, &k.key);
    bulk(&mut out, ttl);
    out.push(b'$');
    out.extend_from_slice(decimal(payload_len as u64, &mut n_buf));
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&trailer[..trailer_len]);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &extra[..n_extra] {
        bulk(&mut out, name);
        if let Some(v) = value {
            bulk(&mut out, decimal(*v, &mut n_buf));
        }
    }
    out
}

/// Appends one RESP bulk string.
fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    let mut n = [0u8; 20];
    out.push(b'$');
    out.extend_from_slice(decimal(b.len() as u64, &mut n));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The decimal digits of `v`, written into `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_names_share_the_slot() {
        use crate::client::slot_of;
        for key in [&b"list"[..], b"{user}:1", b"a{}b", b"", b"\xff{x"] {
            let b = building_name(key);
            assert_eq!(slot_of(&b), slot_of(key), "{key:?}");
            assert!(b.ends_with(key) && b.starts_with(b"shake-building:{"));
        }
    }

    #[test]
    fn db_map_rules() {
        let m = DbMap::parse(&["1=0".into(), "*=5".into()]).unwrap();
        assert_eq!(m.map(1), Some(0));
        assert_eq!(m.map(7), Some(5));
        assert_eq!(DbMap::default().map(3), Some(3));
        assert!(DbMap::parse(&["x=1".into()]).is_err());
        assert!(DbMap::parse(&["1".into()]).is_err());
    }

    #[test]
    fn restore_command_matches_the_generic_builder() {
        let k = KeyHeader {
            db: 0,
            key: b"k".to_vec(),
            rdb_type: 0,
            value_type: crate::rdb::ValueType::String,
            expire_at_ms: Some(1700000000000),
            idle_s: Some(5),
            freq: None,
            offset: 0,
            meta: Vec::new(),
        };
        let opts = ApplyOptions {
            conflict: ConflictPolicy::Rewrite,
            keep_lru: true,
            ..ApplyOptions::default()
        };
        let raw = [0x03, b'a', b'b', b'c'];
        let got = restore_command(&k, &[&[0u8], &raw], Some(10), &opts);
        let payload = crate::rdb::writer::dump_payload(0, &raw, 10);
        let mut want = Vec::new();
        crate::resp::encode_command(
            &mut want,
            &[
                &b"RESTORE"[..],
                b"k",
                b"1700000000000",
                &payload,
                b"REPLACE",
                b"ABSTTL",
                b"IDLETIME",
                b"5",
            ],
        );
        assert_eq!(got, want);

        let k2 = KeyHeader {
            expire_at_ms: None,
            idle_s: None,
            freq: Some(200),
            key: b"k2".to_vec(),
            ..k
        };
        let opts2 = ApplyOptions {
            keep_lru: true,
            ..ApplyOptions::default()
        };
        let got = restore_command(&k2, &[&payload], None, &opts2);
        let mut want = Vec::new();
        crate::resp::encode_command(
            &mut want,
            &[&b"RESTORE"[..], b"k2", b"0", &payload, b"FREQ", b"200"],
        );
        assert_eq!(got, want);
    }
}
