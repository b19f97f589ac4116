//! What an RDB file holds, read once without writing anything: its format, the encodings it
//! uses, its databases, its functions, whether any hash has field TTLs, and a sample of keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

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
    let mut parser = RdbParser::with_options(
        BufReader::with_capacity(1 << 16, f),
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
    Ok(facts)
}
