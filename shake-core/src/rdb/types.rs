//! What every value type byte means: the one table of RDB types (issue 13).
//!
//! A type byte's meaning depends on the file's numbering family: Redis and Valkey agree on 0–21
//! and then diverge (22/23 are Redis 7.4 release-candidate hashes with field TTLs, and Valkey's
//! `HASH_2` / `PATH_HASH`; 24–33 exist only in Redis). The family is the file's magic (`REDIS` /
//! `VALKEY`), or for a DUMP payload the version it is stamped with (80 and up: Valkey). Everything
//! the tools need to know about a type — the `TYPE` a user sees, `OBJECT ENCODING`'s name, a
//! person's name for messages, which servers load it as it is, whether it carries field TTLs —
//! is a column of [`TABLE`]; [`info`] finds the row. The constants below name the bytes.

use super::model::{Header, Magic, ValueType};

pub const STRING: u8 = 0;
pub const LIST: u8 = 1;
pub const SET: u8 = 2;
pub const ZSET: u8 = 3;
pub const HASH: u8 = 4;
pub const ZSET_2: u8 = 5;
pub const MODULE_PRE_GA: u8 = 6;
pub const MODULE_2: u8 = 7;
pub const HASH_ZIPMAP: u8 = 9;
pub const LIST_ZIPLIST: u8 = 10;
pub const SET_INTSET: u8 = 11;
pub const ZSET_ZIPLIST: u8 = 12;
pub const HASH_ZIPLIST: u8 = 13;
pub const LIST_QUICKLIST: u8 = 14;
pub const STREAM_LISTPACKS: u8 = 15;
pub const HASH_LISTPACK: u8 = 16;
pub const ZSET_LISTPACK: u8 = 17;
pub const LIST_QUICKLIST_2: u8 = 18;
pub const STREAM_LISTPACKS_2: u8 = 19;
pub const SET_LISTPACK: u8 = 20;
pub const STREAM_LISTPACKS_3: u8 = 21;
/// Redis 7.4 release candidates: hash with field TTLs, absolute TTLs. Under the VALKEY magic
/// the same number is Valkey's `HASH_2` ([`VALKEY_HASH_2`]), a different layout.
pub const HASH_METADATA_PRE_GA: u8 = 22;
/// Redis 7.4 release candidates; under the VALKEY magic, Valkey 9.2's `PATH_HASH`.
pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
pub const HASH_METADATA: u8 = 24;
pub const HASH_LISTPACK_EX: u8 = 25;
/// Redis 8.6 (RDB 13): stream listpacks 3 plus the IDMP (idempotent producer) trailer.
pub const STREAM_LISTPACKS_4: u8 = 26;
/// Redis 8.8 (RDB 14): type 26 plus each group's NACK zone.
pub const STREAM_LISTPACKS_5: u8 = 27;
/// Redis 8.8 (RDB 14): the sparse array type.
pub const ARRAY: u8 = 28;
/// Redis 8.10 (RDB 15): hash templates, self-contained (29, 31) or referring to a template
/// record (opcode 242) earlier in the file (30, 32; RDB files only, never DUMP payloads).
pub const HASH_TMPL_LP: u8 = 29;
pub const HASH_TMPL_LP_REF: u8 = 30;
pub const HASH_TMPL_ARRAY: u8 = 31;
pub const HASH_TMPL_ARRAY_REF: u8 = 32;
/// Redis's GCRA rate limiter: type 33 (29 before redis PR #15364), only in builds with
/// ENABLE_GCRA (redis PR #15191 held GCRA out of the 8.8 release, so no release writes it).
/// Refused, naming the key. Evidence read (facts only): redis `src/gcra.c` @ 10040538b194 is the
/// string-backed version (no RDB type); the object type came with redis PR #14905, whose review
/// thread shows the value's time (TaT, microseconds) first saved as an 8-byte time and then
/// agreed to become an `rdbSaveLen`; `defrag.c` says the object is "just an allocation to a long
/// long value", and AOF rewrite writes that number. The final `rdb.c` branch was not readable
/// here (and librdb does not parse the type), so the layout is not assumed: a wrong guess would
/// misread every byte after the key.
pub const GCRA: u8 = 33;
/// Valkey 9.0 (RDB 80): hash with field TTLs (same byte as [`HASH_METADATA_PRE_GA`]).
pub const VALKEY_HASH_2: u8 = 22;
/// Valkey 9.2 (RDB 81): path hash (same byte as [`HASH_LISTPACK_EX_PRE_GA`]).
pub const VALKEY_PATH_HASH: u8 = 23;

/// Valkey's whole-file compression envelope, written with `rdbcompression lz4` (valkey PR #3531,
/// merged 2026). A file that starts with [`vcs::MAGIC`] holds the logical RDB (its own
/// `REDIS`/`VALKEY` header, body and CRC trailer) as one LZ4 frame after the 7-byte envelope;
/// `envelope.rs` reads it. Where the layout was read (valkey-io/valkey, facts only):
/// `src/compression_stream.h` @ f02e95d5270e (field offsets, codec and kind ids),
/// `src/compression_stream.c` @ c2b96ec0c239 (the probe: 3-byte magic, else plain input replayed;
/// a nonzero reserved byte, unknown version, codec or kind rejected; the frame is finished after
/// the logical RDB, bytes after it ignored), `src/compression_lz4.c` @ f8439d32aea7 (LZ4 frame
/// format, 64 KiB linked blocks, block and content checksums iff `rdbchecksum yes`), and the byte
/// assertions of `tests/integration/rdb-compression.tcl` @ c01fe4a884e5 (`86 67 83 1 1 0 1`, frame
/// magic `04 22 4D 18` at offset 7). Confidence: source-read, no real file (the Valkey 9.1 in the
/// rig has no `rdbcompression lz4`). Earlier revisions of the PR used an 8-byte `VKCS` envelope;
/// no release wrote it, and it is refused as "not an RDB".
pub mod vcs {
    pub const MAGIC: &[u8; 3] = b"VCS";
    /// Magic, version, codec, reserved (0), stream kind.
    pub const LEN: usize = 7;
    pub const VERSION: u8 = 1;
    pub const CODEC_LZ4: u8 = 1;
    /// Only in the unmerged ZSTD PR (valkey #3798); named so the refusal says what the file is.
    pub const CODEC_ZSTD: u8 = 2;
    pub const STREAM_KIND_RDB: u8 = 1;
}

/// Which numbering a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0–21: the same meaning under both magics.
    Both,
    Redis,
    Valkey,
}

/// How the value's bytes are laid out, as far as the tools care to step over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The whole value is one RDB string (a compact encoding), possibly after a fixed prefix of
    /// `prefix` bytes.
    Blob { prefix: u8 },
    /// Anything else: counted collections, streams, modules, the new structured types.
    Structured,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub byte: u8,
    pub family: Family,
    /// The constant's name in the server's `rdb.h`, for messages and docs.
    pub rdb_name: &'static str,
    pub value_type: ValueType,
    /// What `OBJECT ENCODING` says for a value loaded from this type.
    pub encoding: &'static str,
    /// A person's name for messages.
    pub label: &'static str,
    /// The oldest Redis RDB version that loads this type as it is; `None`: no Redis does.
    pub redis_since: Option<u16>,
    /// The oldest Valkey RDB version that loads it as it is (Valkey ≤ 8 is RDB 11).
    pub valkey_since: Option<u16>,
    /// Carries per-field TTLs (the pairing check `pair.field-ttls` judges those).
    pub field_ttls: bool,
    pub layout: Layout,
    /// Whether the parser decodes values of this type (GCRA and pre-GA modules: no).
    pub decodable: bool,
}

const fn row(
    byte: u8,
    family: Family,
    rdb_name: &'static str,
    value_type: ValueType,
    encoding: &'static str,
    label: &'static str,
    redis_since: Option<u16>,
    valkey_since: Option<u16>,
) -> TypeInfo {
    TypeInfo {
        byte,
        family,
        rdb_name,
        value_type,
        encoding,
        label,
        redis_since,
        valkey_since,
        field_ttls: false,
        layout: Layout::Structured,
        decodable: true,
    }
}

const fn blob(mut r: TypeInfo, prefix: u8) -> TypeInfo {
    r.layout = Layout::Blob { prefix };
    r
}

const fn ttls(mut r: TypeInfo) -> TypeInfo {
    r.field_ttls = true;
    r
}

const fn opaque(mut r: TypeInfo) -> TypeInfo {
    r.decodable = false;
    r
}

use Family::{Both, Redis as R, Valkey as V};
use ValueType as T;

/// Every type byte any server writes (or wrote), with what it means.
#[rustfmt::skip]
pub const TABLE: &[TypeInfo] = &[
    blob(row(STRING, Both, "STRING", T::String, "string", "string", Some(1), Some(1)), 0),
    row(LIST, Both, "LIST", T::List, "linkedlist", "linked list", Some(1), Some(1)),
    row(SET, Both, "SET", T::Set, "hashtable", "set", Some(1), Some(1)),
    row(ZSET, Both, "ZSET", T::Zset, "skiplist", "zset (text scores)", Some(1), Some(1)),
    row(HASH, Both, "HASH", T::Hash, "hashtable", "hash", Some(1), Some(1)),
    row(ZSET_2, Both, "ZSET_2", T::Zset, "skiplist", "zset", Some(8), Some(8)),
    opaque(row(MODULE_PRE_GA, Both, "MODULE_PRE_GA", T::Module, "module", "module value", None, None)),
    row(MODULE_2, Both, "MODULE_2", T::Module, "module", "module value", Some(8), Some(8)),
    blob(row(HASH_ZIPMAP, Both, "HASH_ZIPMAP", T::Hash, "zipmap", "zipmap hash", Some(1), Some(1)), 0),
    blob(row(LIST_ZIPLIST, Both, "LIST_ZIPLIST", T::List, "ziplist", "ziplist list", Some(1), Some(1)), 0),
    blob(row(SET_INTSET, Both, "SET_INTSET", T::Set, "intset", "intset", Some(1), Some(1)), 0),
    blob(row(ZSET_ZIPLIST, Both, "ZSET_ZIPLIST", T::Zset, "ziplist", "ziplist zset", Some(1), Some(1)), 0),
    blob(row(HASH_ZIPLIST, Both, "HASH_ZIPLIST", T::Hash, "ziplist", "ziplist hash", Some(1), Some(1)), 0),
    row(LIST_QUICKLIST, Both, "LIST_QUICKLIST", T::List, "quicklist", "quicklist", Some(7), Some(7)),
    row(STREAM_LISTPACKS, Both, "STREAM_LISTPACKS", T::Stream, "stream", "stream (listpacks 1)", Some(9), Some(9)),
    blob(row(HASH_LISTPACK, Both, "HASH_LISTPACK", T::Hash, "listpack", "listpack hash", Some(10), Some(10)), 0),
    blob(row(ZSET_LISTPACK, Both, "ZSET_LISTPACK", T::Zset, "listpack", "listpack zset", Some(10), Some(10)), 0),
    row(LIST_QUICKLIST_2, Both, "LIST_QUICKLIST_2", T::List, "quicklist", "quicklist 2 list", Some(10), Some(10)),
    row(STREAM_LISTPACKS_2, Both, "STREAM_LISTPACKS_2", T::Stream, "stream", "stream (listpacks 2)", Some(10), Some(10)),
    blob(row(SET_LISTPACK, Both, "SET_LISTPACK", T::Set, "listpack", "listpack set", Some(11), Some(11)), 0),
    row(STREAM_LISTPACKS_3, Both, "STREAM_LISTPACKS_3", T::Stream, "stream", "stream (listpacks 3)", Some(11), Some(11)),
    // Redis numbering from 22 on.
    ttls(row(HASH_METADATA_PRE_GA, R, "HASH_METADATA_PRE_GA", T::Hash, "hashtable", "hash with field TTLs (7.4 RC)", Some(12), None)),
    ttls(blob(row(HASH_LISTPACK_EX_PRE_GA, R, "HASH_LISTPACK_EX_PRE_GA", T::Hash, "listpackex", "listpack hash with field TTLs (7.4 RC)", Some(12), None), 0)),
    ttls(row(HASH_METADATA, R, "HASH_METADATA", T::Hash, "hashtable", "hash with field TTLs", Some(12), None)),
    ttls(blob(row(HASH_LISTPACK_EX, R, "HASH_LISTPACK_EX", T::Hash, "listpackex", "listpack hash with field TTLs", Some(12), None), 8)),
    row(STREAM_LISTPACKS_4, R, "STREAM_LISTPACKS_4", T::Stream, "stream", "stream with IDMP (listpacks 4)", Some(13), None),
    row(STREAM_LISTPACKS_5, R, "STREAM_LISTPACKS_5", T::Stream, "stream", "stream with NACKs (listpacks 5)", Some(14), None),
    row(ARRAY, R, "ARRAY", T::Array, "array", "array", Some(14), None),
    row(HASH_TMPL_LP, R, "HASH_TMPL_LP", T::Hash, "listpack", "hash template (listpack)", Some(15), None),
    row(HASH_TMPL_LP_REF, R, "HASH_TMPL_LP_REF", T::Hash, "listpack", "hash template reference (listpack)", Some(15), None),
    row(HASH_TMPL_ARRAY, R, "HASH_TMPL_ARRAY", T::Hash, "hashtable", "hash template (array)", Some(15), None),
    row(HASH_TMPL_ARRAY_REF, R, "HASH_TMPL_ARRAY_REF", T::Hash, "hashtable", "hash template reference (array)", Some(15), None),
    opaque(row(GCRA, R, "GCRA", T::Module, "gcra", "GCRA rate limiter", Some(15), None)),
    // Valkey numbering from 22 on.
    ttls(row(VALKEY_HASH_2, V, "HASH_2", T::Hash, "hashtable", "hash with field TTLs", None, Some(80))),
    row(VALKEY_PATH_HASH, V, "PATH_HASH", T::Hash, "hashtable", "path hash", None, Some(81)),
];

/// The row for a type byte under a file's numbering, or `None` for a byte that numbering does
/// not define.
pub fn info(ty: u8, h: Header) -> Option<&'static TypeInfo> {
    TABLE.iter().find(|r| {
        r.byte == ty
            && match r.family {
                Family::Both => true,
                Family::Redis => h.magic == Magic::Redis,
                Family::Valkey => h.magic == Magic::Valkey,
            }
    })
}

/// The user-visible type of an RDB type byte, or `None` if the byte is not a type this file's
/// numbering defines.
pub fn value_type_of(ty: u8, h: Header) -> Option<ValueType> {
    info(ty, h).map(|r| r.value_type)
}

/// Whether a server of `magic` at `rdb_version` loads values of this type as they are.
pub fn loads(r: &TypeInfo, magic: Magic, rdb_version: u16) -> bool {
    let since = match magic {
        Magic::Redis => r.redis_since,
        Magic::Valkey => r.valkey_since,
    };
    since.is_some_and(|s| rdb_version >= s)
}

/// `OBJECT ENCODING`'s name for values of this type.
pub fn encoding_name(ty: u8, h: Header) -> &'static str {
    info(ty, h).map_or("unknown", |r| r.encoding)
}

/// A person's name for an RDB type, for messages: `"listpack hash (16)"`.
pub fn type_name(h: Header, ty: u8) -> String {
    format!("{} ({ty})", info(ty, h).map_or("unknown type", |r| r.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(magic: Magic, version: u32) -> Header {
        Header { magic, version }
    }

    #[test]
    fn one_row_per_byte_and_family() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                let clash = a.byte == b.byte
                    && (a.family == b.family || a.family == Both || b.family == Both);
                assert!(
                    !clash,
                    "{} and {} share byte {}",
                    a.rdb_name, b.rdb_name, a.byte
                );
            }
        }
    }

    #[test]
    fn collisions_are_decided_by_the_magic() {
        let r = h(Magic::Redis, 15);
        let v = h(Magic::Valkey, 81);
        assert_eq!(info(22, r).unwrap().rdb_name, "HASH_METADATA_PRE_GA");
        assert_eq!(info(22, v).unwrap().rdb_name, "HASH_2");
        assert_eq!(info(23, v).unwrap().rdb_name, "PATH_HASH");
        assert!(info(24, v).is_none() && info(28, v).is_none());
        assert_eq!(value_type_of(ARRAY, r), Some(ValueType::Array));
        assert_eq!(value_type_of(HASH_TMPL_ARRAY_REF, r), Some(ValueType::Hash));
        assert!(info(8, r).is_none() && info(34, r).is_none());
    }

    #[test]
    fn who_loads_what() {
        let s3 = info(STREAM_LISTPACKS_3, h(Magic::Redis, 11)).unwrap();
        assert!(loads(s3, Magic::Valkey, 80) && loads(s3, Magic::Redis, 11));
        assert!(!loads(s3, Magic::Redis, 10));
        let s5 = info(STREAM_LISTPACKS_5, h(Magic::Redis, 14)).unwrap();
        assert!(loads(s5, Magic::Redis, 14) && !loads(s5, Magic::Redis, 13));
        assert!(!loads(s5, Magic::Valkey, 81));
        let h2 = info(VALKEY_HASH_2, h(Magic::Valkey, 80)).unwrap();
        assert!(loads(h2, Magic::Valkey, 80) && !loads(h2, Magic::Redis, 15));
        assert_eq!(type_name(h(Magic::Redis, 14), ARRAY), "array (28)");
    }
}
