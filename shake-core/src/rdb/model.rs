//! What the parser yields: top-level items, key headers, and decoded value chunks.

use std::fmt;

/// Which family of RDB numbering a file uses; decided by its magic, because Redis and Valkey
/// assign different meanings to the same type numbers from 22 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    Redis,
    Valkey,
}

impl Magic {
    pub fn as_str(self) -> &'static str {
        match self {
            Magic::Redis => "REDIS",
            Magic::Valkey => "VALKEY",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: Magic,
    pub version: u32,
}

/// The type a user sees (`TYPE key`), independent of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
    Module,
    /// Redis 8.8's sparse array (`TYPE` says `array`).
    Array,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Set => "set",
            ValueType::Zset => "zset",
            ValueType::Hash => "hash",
            ValueType::Stream => "stream",
            ValueType::Module => "module",
            ValueType::Array => "array",
        }
    }

    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" => ValueType::String,
            "list" => ValueType::List,
            "set" => ValueType::Set,
            "zset" => ValueType::Zset,
            "hash" => ValueType::Hash,
            "stream" => ValueType::Stream,
            "module" => ValueType::Module,
            "array" => ValueType::Array,
            _ => return None,
        })
    }

    pub const ALL: [ValueType; 8] = [
        ValueType::String,
        ValueType::List,
        ValueType::Set,
        ValueType::Zset,
        ValueType::Hash,
        ValueType::Stream,
        ValueType::Module,
        ValueType::Array,
    ];
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything known about a key before its value is read.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyHeader {
    pub db: u64,
    pub key: Vec<u8>,
    /// The RDB type byte (the encoding), e.g. 16 for a listpack hash.
    pub rdb_type: u8,
    pub value_type: ValueType,
    pub expire_at_ms: Option<i64>,
    pub idle_s: Option<u64>,
    pub freq: Option<u8>,
    /// Byte offset of the type byte.
    pub offset: u64,
    /// Redis 8.6+ per-key module metadata classes (opcode 243) written before the key; empty
    /// almost always.
    pub meta: Vec<KeyMetaClass>,
}

impl KeyHeader {
    /// Name of the in-memory encoding this RDB type comes from, as OBJECT ENCODING would say.
    pub fn encoding_name(&self, magic: Magic) -> &'static str {
        // The version does not change what a type byte means within one family.
        super::types::encoding_name(self.rdb_type, Header { magic, version: 0 })
    }
}

/// One class of Redis 8.6 per-key module metadata (opcode `KEY_META`, 243): a 4-character class
/// name, its encoding version and flags. The metadata's value is stepped over, not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetaClass {
    pub name: String,
    pub version: u8,
    pub flags: u8,
}

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn from_be_bytes(b: &[u8; 16]) -> Self {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&b[..8]);
        seq.copy_from_slice(&b[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HashField {
    pub field: Vec<u8>,
    pub value: Vec<u8>,
    /// Absolute expiry of this field in Unix ms, for hashes with field TTLs.
    pub expire_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// A tombstone: XDEL'd but still stored in its node. Not part of the stream's content, but a
    /// consumer group may still list it as pending, so a faithful copy needs it.
    pub deleted: bool,
}

/// A stream's bookkeeping, which the RDB stores after the entries.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMeta {
    pub length: u64,
    pub last_id: StreamId,
    /// Present from stream listpacks 2 (RDB 10) on.
    pub first_id: Option<StreamId>,
    pub max_deleted_id: Option<StreamId>,
    pub entries_added: Option<u64>,
    pub groups: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamGroupHeader {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// Present from stream listpacks 2 on; -1 when the server does not know it (a group created
    /// at an arbitrary id), which XINFO shows as nil.
    pub entries_read: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub delivery_time_ms: i64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConsumer {
    pub name: Vec<u8>,
    pub seen_time_ms: i64,
    /// Present from stream listpacks 3 (RDB 11) on.
    pub active_time_ms: Option<i64>,
    pub pending: Vec<StreamId>,
}

/// One idempotent producer of a Redis 8.6 stream (IDMP): its id and the idempotency ids it has
/// used, each with the entry it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct IdmpProducer {
    pub pid: Vec<u8>,
    pub iids: Vec<(Vec<u8>, StreamId)>,
}

/// A Redis 8.6+ stream's IDMP state (types 26 and 27), stored after the consumer groups.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamIdmp {
    pub duration_s: u64,
    pub max_entries: u64,
    pub producers: Vec<IdmpProducer>,
    pub iids_added: u64,
    pub iids_duplicates: u64,
}

/// A Redis 8.8 array element's value, as its tag stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayValue {
    Str(Vec<u8>),
    Int(i64),
    Float(f64),
}

impl ArrayValue {
    /// The bytes a client reads back (integers in decimal, floats as Redis prints doubles).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ArrayValue::Str(s) => s.clone(),
            ArrayValue::Int(i) => i.to_string().into_bytes(),
            ArrayValue::Float(f) => crate::text::format_redis_double(*f).into_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArrayElem {
    pub index: u64,
    pub value: ArrayValue,
}

/// A piece of a decoded value. Collections arrive as several chunks of bounded size, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A whole string value (one no longer than `ParserOptions::string_part_bytes`).
    String(Vec<u8>),
    /// A piece of a longer string value: the pieces arrive in order, each saying where it
    /// begins and how long the whole value is, so a consumer never needs the value whole.
    StringPart {
        offset: u64,
        len: u64,
        data: Vec<u8>,
    },
    /// List elements or set members.
    Items(Vec<Vec<u8>>),
    /// Zset members with their scores.
    Scored(Vec<(Vec<u8>, f64)>),
    Fields(Vec<HashField>),
    StreamEntries(Vec<StreamEntry>),
    StreamMeta(StreamMeta),
    /// A consumer group begins; its pending entries and consumers follow.
    StreamGroup(StreamGroupHeader),
    StreamPending(Vec<PendingEntry>),
    StreamConsumer(StreamConsumer),
    Module {
        module_id: u64,
        name: String,
        raw: Vec<u8>,
    },
    /// After a group's consumers (type 27): the group's NACKed ids, pending but owned by no
    /// consumer.
    StreamNacked(Vec<StreamId>),
    /// After the last group (types 26, 27).
    StreamIdmp(StreamIdmp),
    /// An array begins: its element count and the persisted insert position, if any.
    ArrayHeader {
        count: u64,
        insert_idx: Option<u64>,
    },
    ArrayElems(Vec<ArrayElem>),
    /// Valkey 9.2 path hash: one path and its fields.
    PathFields {
        path: Vec<u8>,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl Chunk {
    /// Whether this is the last piece of a string value delivered in parts.
    pub fn ends_string(&self) -> bool {
        matches!(self, Chunk::StringPart { offset, len, data } if offset + data.len() as u64 == *len)
    }

    /// Number of elements (list items, members, fields, stream entries) the chunk carries.
    pub fn elements(&self) -> usize {
        match self {
            Chunk::String(_) | Chunk::Module { .. } => 1,
            // The value counts once, with its first part.
            Chunk::StringPart { offset, .. } => usize::from(*offset == 0),
            Chunk::Items(v) => v.len(),
            Chunk::Scored(v) => v.len(),
            Chunk::Fields(v) => v.len(),
            Chunk::StreamEntries(v) => v.iter().filter(|e| !e.deleted).count(),
            Chunk::ArrayElems(v) => v.len(),
            Chunk::PathFields { fields, .. } => fields.len(),
            _ => 0,
        }
    }
}

/// A function library as stored in the RDB.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// The library source (for FUNCTION2, the whole `#!lua name=...` text).
    pub code: Vec<u8>,
    /// Name, engine and description exist only in the pre-GA form of 7.0 release candidates.
    pub name: Option<Vec<u8>>,
    pub engine: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// The trailer matched the bytes.
    Valid,
    /// The writer stored zero: checksums were turned off.
    Disabled,
    /// RDB versions before 5 have no trailer.
    Absent,
}

impl ChecksumStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumStatus::Valid => "valid",
            ChecksumStatus::Disabled => "disabled",
            ChecksumStatus::Absent => "absent",
        }
    }
}

/// A top-level element of an RDB stream, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Aux {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    SelectDb(u64),
    ResizeDb {
        db: u64,
        keys: u64,
        expires: u64,
    },
    SlotInfo {
        slot: u64,
        size: u64,
        expires_size: u64,
    },
    ModuleAux {
        module_id: u64,
        name: String,
        when: u64,
    },
    Function(Function),
    /// Valkey 9 `SLOT_IMPORT` (opcode 243 under the VALKEY magic): an unfinished slot-import
    /// job's name and slot ranges. Cluster bookkeeping, no data.
    SlotImport {
        name: Vec<u8>,
        ranges: Vec<(u64, u64)>,
    },
    /// Redis 8.10 hash template record (opcode 242): keys of types 30/32 that follow refer to
    /// it by id. The parser keeps the registry; this is informational.
    HashTemplate {
        id: u64,
        fields: Vec<Vec<u8>>,
    },
    /// Valkey forkless-save `UPDATE` (opcode 242 under the VALKEY magic): a command the replica
    /// must apply at this point of the load.
    Update(Vec<Vec<u8>>),
    /// A key; its value must be consumed (or it is skipped by the next `next_item`).
    Key(KeyHeader),
    End {
        checksum: ChecksumStatus,
        crc64: u64,
    },
}
