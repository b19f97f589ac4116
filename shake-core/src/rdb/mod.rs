//! The RDB format: the streaming reader (`RdbParser`), the items and value chunks it yields, the
//! compact encodings inside values, and the constants that name types and opcodes.
//!
//! One parser serves every tool. A caller pulls `Item`s; after an `Item::Key` it chooses how to
//! consume the value: `skip_value` (key lists), `read_raw_value` (the exact bytes a DUMP payload
//! carries), or `next_chunk` (decoded elements, a bounded batch at a time), optionally recording
//! the raw bytes while decoding. Nothing reads the input twice and no big collection is held whole.

pub mod compact;
mod error;
pub mod file_writer;
mod model;
mod parser;
mod source;
mod transcode;
pub mod writer;

pub use error::{RdbError, RdbErrorKind, Result};
pub use model::*;
pub use parser::{value_type_of, ParserOptions, RdbParser};

/// Value type bytes, as written before each key.
pub mod types {
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
    /// the same number is Valkey's `HASH_2`, a different layout.
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    pub const HASH_METADATA: u8 = 24;
    pub const HASH_LISTPACK_EX: u8 = 25;
}

/// Opcodes, which share the type byte's position.
pub mod opcodes {
    /// Redis Enterprise's per-key RAM LRU hint: one length value follows.
    pub const RE_RAM_LRU: u8 = 107;
    pub const SLOT_IMPORT: u8 = 243;
    pub const SLOT_INFO: u8 = 244;
    pub const FUNCTION2: u8 = 245;
    pub const FUNCTION_PRE_GA: u8 = 246;
    pub const MODULE_AUX: u8 = 247;
    pub const IDLE: u8 = 248;
    pub const FREQ: u8 = 249;
    pub const AUX: u8 = 250;
    pub const RESIZEDB: u8 = 251;
    pub const EXPIRETIME_MS: u8 = 252;
    pub const EXPIRETIME: u8 = 253;
    pub const SELECTDB: u8 = 254;
    pub const EOF: u8 = 255;
}

/// Module values' inner opcodes (RDB_MODULE_OPCODE_*).
pub(crate) mod module_opcodes {
    pub const EOF: u64 = 0;
    pub const SINT: u64 = 1;
    pub const UINT: u64 = 2;
    pub const FLOAT: u64 = 3;
    pub const DOUBLE: u64 = 4;
    pub const STRING: u64 = 5;
}

/// The name a 64-bit module type id encodes (9 characters of a 64-symbol set, then 10 bits of
/// encoding version), as Redis's `moduleTypeNameByID` computes it.
pub fn module_name_from_id(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = [0u8; 9];
    let mut v = id >> 10;
    for slot in name.iter_mut().rev() {
        *slot = CHARSET[(v & 63) as usize];
        v >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}
