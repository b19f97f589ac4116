//! The RDB format: the streaming reader (`RdbParser`), the items and value chunks it yields, the
//! compact encodings inside values, and the constants that name types and opcodes.
//!
//! One parser serves every tool. A caller pulls `Item`s; after an `Item::Key` it chooses how to
//! consume the value: `skip_value` (key lists), `read_raw_value` (the exact bytes a DUMP payload
//! carries), or `next_chunk` (decoded elements, a bounded batch at a time), optionally recording
//! the raw bytes while decoding. Nothing reads the input twice and no big collection is held whole.

pub mod compact;
pub mod envelope;
mod error;
pub mod file_writer;
mod model;
mod parser;
mod source;
mod transcode;
pub mod types;
pub mod writer;

pub use error::{RdbError, RdbErrorKind, Result};
pub use model::*;
pub use parser::{ParserOptions, RdbParser};
pub use types::value_type_of;

/// Opcodes, which share the type byte's position.
pub mod opcodes {
    /// Redis Enterprise's per-key RAM LRU hint: one length value follows.
    pub const RE_RAM_LRU: u8 = 107;
    /// Redis RDB 15: a hash template record (id, field names) that types 30/32 refer to.
    /// Under the VALKEY magic: [`UPDATE`].
    pub const HASH_TEMPLATE: u8 = 242;
    /// Valkey (after RDB 80): a replication command inlined in a forkless-save stream.
    pub const UPDATE: u8 = 242;
    /// Redis RDB 13: per-key module metadata before the key's type byte. Under the VALKEY
    /// magic: [`SLOT_IMPORT`].
    pub const KEY_META: u8 = 243;
    /// Valkey RDB 80: an unfinished slot-import job.
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
