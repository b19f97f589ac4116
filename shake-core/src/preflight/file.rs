//! What an RDB file holds, read once without writing anything: its format, the encodings it
//! uses, its databases, its functions, whether any hash has field TTLs, and a sample of keys;
//! and what the command parts of an AOF hold ([`scan_commands`]): how many commands, their
//! databases, their `#TS:` times, where `--until` stops, a torn end or damage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::Check;
use crate::aof::{Replay, Truncated};
use crate::filter::KeyFilter;
use crate::rdb::{Chunk, Header, Item, ParserOptions, RdbParser};

use super::verdict::is_field_ttl_type;

#[derive(Debug, Default)]
pub(crate) struct FileFacts {
    pub header: Option<Header>,
    pub types: BTreeSet<u8>,
    /// Keys per database (after the filter).
    pub dbs: BTreeMap<u64, u64>,
    pub functions: u64,
    /// Hashes with at least one field TTL.
    pub field_ttl_keys: u64,
    pub sample: Vec<(u64, Vec<u8>)>,
    pub size: u64,
    /// Where the RDB ends in the file (the commands of an AOF with an RDB preamble follow).
    pub end: u64,
}

/// Reads the whole file (values are skipped, except hashes whose type can carry field TTLs).
pub(crate) fn scan(
    path: &Path,
    filter: &KeyFilter,
    relaxed_version: bool,
    sample: usize,
) -> Result<FileFacts, String> {
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (reader, read) = crate::aof::counted(BufReader::with_capacity(1 << 16, f));
    let mut parser = RdbParser::with_options(
        reader,
        ParserOptions {
            relaxed_version,
            ..ParserOptions::default()
        },
    );
    let in_file = |e: crate::rdb::RdbError| format!("{}: {e}", path.display());
    let header = parser.header().map_err(in_file)?;
    let mut facts = FileFacts {
        header: Some(header),
        size,
        ..FileFacts::default()
    };
    while let Some(item) = parser.next_item().map_err(in_file)? {
        match item {
            Item::Function(_) => facts.functions += 1,
            Item::Key(k) => {
                if !filter.matches(k.db, &k.key, k.value_type) {
                    continue;
                }
                facts.types.insert(k.rdb_type);
                *facts.dbs.entry(k.db).or_default() += 1;
                if is_field_ttl_type(header, k.rdb_type) {
                    let mut with_ttl = false;
                    while let Some(c) = parser.next_chunk().map_err(in_file)? {
                        if let Chunk::Fields(fields) = c {
                            with_ttl |= fields.iter().any(|f| f.expire_at_ms.is_some());
                        }
                    }
                    facts.field_ttl_keys += u64::from(with_ttl);
                }
                if facts.sample.len() < sample {
                    facts.sample.push((k.db, k.key));
                }
            }
            _ => {}
        }
    }
    let (_, ahead) = parser.into_parts();
    facts.end = read.load(std::sync::atomic::Ordering::Relaxed) - ahead.len() as u64;
    Ok(facts)
}

/// What [`scan_commands`] found.
pub(crate) struct CommandFacts {
    /// `source.aof`: OK with the counts, WARN for a torn end that `--aof-truncated skip` leaves
    /// out, FAIL for damage, a torn end under `stop`, `--until` without annotations.
    pub check: Check,
    /// Databases the commands run in.
    pub dbs: BTreeSet<u64>,
    /// Bytes of commands read.
    pub bytes: u64,
}

/// Reads the command parts of an AOF input as the restore would replay them (with `until` and
/// `truncated`), without writing anything.
pub(crate) fn scan_commands(
    parts: &[(PathBuf, u64)],
    until: Option<i64>,
    truncated: Truncated,
) -> CommandFacts {
    let files: Vec<String> = parts.iter().map(|(p, _)| p.display().to_string()).collect();
    let bytes = parts
        .iter()
        .map(|(p, start)| {
            std::fs::metadata(p)
                .map(|m| m.len().saturating_sub(*start))
                .unwrap_or(0)
        })
        .sum();
    // The restore reads every part to its end before writing, `--until` or not (a torn end
    // or damage after the point in time still stops it): so does this check, first.
    let whole = match until {
        Some(_) => {
            let mut all = Replay::new(parts.to_vec(), None, truncated);
            loop {
                match all.next_command() {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(all.timestamps),
                    Err(e) => break Err(e),
                }
            }
        }
        None => Ok(0),
    };
    let mut replay = Replay::new(parts.to_vec(), until, truncated);
    let mut dbs = BTreeSet::new();
    let (mut first, mut last) = (None, None);
    let mut commands = 0u64;
    let mut in_files = BTreeMap::<String, u64>::new();
    let result = whole.and_then(|_| loop {
        match replay.next_command() {
            Ok(Some(c)) => {
                let name = c.frame.get(c.args[0].clone()).unwrap_or_default();
                if name.eq_ignore_ascii_case(b"SELECT") {
                    continue;
                }
                commands += 1;
                dbs.insert(c.db);
                if let Some(ts) = c.ts {
                    first.get_or_insert(ts);
                    last = Some(ts);
                }
                *in_files.entry(c.path.display().to_string()).or_default() += 1;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    });
    let check = match result {
        Err(e) if e.contains("truncated command at offset") => Check::fail(
            "source.aof",
            e,
            "cut the torn command off (redis-check-aof --fix) or restore with --aof-truncated skip",
        ),
        Err(e) => Check::fail(
            "source.aof",
            e,
            "restore from an intact AOF (shake-decode prints its commands up to the damage)",
        ),
        Ok(()) if until.is_some() && replay.timestamps == 0 => Check::fail(
            "source.aof",
            format!(
                "--until: {} has no #TS: annotations to tell the time of its commands by",
                files.join(", ")
            ),
            "the server writes them with aof-timestamp-enabled yes (Redis 7+); leave --until out to apply every command",
        ),
        Ok(()) => {
            let per_file = files
                .iter()
                .map(|f| format!("{f}: {}", in_files.get(f).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ");
            let times = match (first, last) {
                (Some(a), Some(b)) => format!(
                    ", written {} to {}",
                    crate::aof::show_time(a),
                    crate::aof::show_time(b)
                ),
                _ if replay.timestamps == 0 => ", no #TS: annotations".to_string(),
                _ => String::new(),
            };
            let list = dbs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let in_dbs = match dbs.len() {
                0 => "no database".to_string(),
                1 => format!("database {list}"),
                _ => format!("databases {list}"),
            };
            let found = format!(
                "{commands} AOF commands to apply (SELECT not counted; {per_file}), {in_dbs}{times}"
            );
            let notes = replay.notes().join("; ");
            if notes.contains("skipped the truncated command")
                || notes.contains("is not complete")
            {
                Check::warn(
                    "source.aof",
                    format!("{found}; {notes}"),
                    "the commands before the torn end are applied; restore an intact AOF to have them all",
                )
            } else if notes.is_empty() {
                Check::ok("source.aof", found)
            } else {
                Check::ok("source.aof", format!("{found}; {notes}"))
            }
        }
    };
    CommandFacts { check, dbs, bytes }
}
