//! The portable path: re-encoding one value, chunk by chunk as the parser yields it, into a DUMP
//! payload whose encoding the target can load (`TargetFormat::can_load` said it cannot load the
//! source's).
//!
//! What is written, per user-visible type (the choices load on every server from Redis 4.0 on):
//!
//! - string: type 0; list: plain list (1); set: plain set (2); hash: plain hash (4). The server
//!   picks its own compact encoding on load, as for any RESTORE.
//! - zset: `ZSET_2` (5), scores as their 8 IEEE bytes: every bit survives, never text.
//! - hash with field TTLs: the target's own field-TTL type (Redis 7.4+: `HASH_METADATA` 24, TTLs
//!   relative to the smallest; Valkey 9+: `HASH_2` 22, absolute or -1). A target without one gets
//!   a plain hash under `FieldTtlPolicy::Drop` (the dropped TTLs are counted), or an error
//!   naming the key and field under `Refuse`.
//! - stream: the newest stream-listpacks type both the target reads and the source's type
//!   carries (so a v1 source stays v1, and the target fills in the v2 fields itself, as it does
//!   when loading that source's RDB). Entries go into listpack nodes built the way XADD builds
//!   them (a master entry with the first entry's field names, delta-encoded ids, same-field
//!   compression, the node limits of Redis's defaults: 100 entries / 4096 bytes; back-lengths in
//!   the target's `BacklenStyle`), starting a new node at every `StreamEntries` chunk, so the
//!   parser's nodes are kept. Tombstones stay, with their deleted flag. Groups keep their PEL (delivery time and count) and consumers (seen
//!   time, and active time where the type has it); entries-read, first id, max-deleted id and
//!   entries-added are written where the type has them.
//! - module values are never transcoded: the caller passes their raw payload.
//!
//! Memory: the payload is built in one buffer (RESTORE needs it whole); counts that are only
//! known at the end are written into room kept in front of it, or spliced in once per consumer
//! group. A hash whose first field TTL arrives after plain fields is re-encoded once.

use std::fmt;

use super::error::RdbError;
use super::model::{
    Chunk, HashField, Header, KeyHeader, PendingEntry, StreamConsumer, StreamEntry,
    StreamGroupHeader, StreamId, StreamMeta, ValueType,
};
use super::types as t;
use super::types::value_type_of;
use super::writer::{
    len_size, seal_dump_payload, write_binary_double, write_len, write_ms, write_stream_id_lens,
    write_stream_id_raw, write_string, ListpackWriter, TargetFormat,
};
use super::{ParserOptions, RdbParser};
use crate::text::quote_bytes;

/// What to do with hash field TTLs when the target has no hash type that stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldTtlPolicy {
    /// Stop with an error naming the key and the field.
    Refuse,
    /// Write the fields without their TTLs, and count how many were dropped.
    Drop,
}

/// Why a value could not be transcoded. Every variant names the key.
#[derive(Debug)]
pub enum TranscodeError {
    /// A hash field has a TTL, the target cannot store one, and the policy is `Refuse`.
    FieldTtlUnsupported {
        key: Vec<u8>,
        field: Vec<u8>,
        target: TargetFormat,
    },
    /// A field TTL the target's field-TTL type cannot represent.
    FieldTtlOutOfRange {
        key: Vec<u8>,
        field: Vec<u8>,
        expire_at_ms: i64,
        target: TargetFormat,
    },
    /// No server stores a NaN score (RESTORE refuses it).
    NanScore { key: Vec<u8>, member: Vec<u8> },
    /// A collection without elements: servers refuse empty keys.
    Empty { key: Vec<u8>, value_type: ValueType },
    /// Module values travel raw; there is nothing to transcode them into.
    Module { key: Vec<u8> },
    /// The target has no encoding at all for this type (streams before RDB 9, ZSET_2 before 8).
    TargetTooOld {
        key: Vec<u8>,
        value_type: ValueType,
        target: TargetFormat,
    },
    /// The chunks do not form a value of the declared type: a chunk of the wrong kind or out of
    /// order, counts that disagree, ids out of order.
    BadChunks { key: Vec<u8>, message: String },
    /// The value is too large for an encoding it needs (a listpack over 4 GiB).
    TooLarge { key: Vec<u8>, message: String },
    /// The value holds something no encoding the target loads can express (an array on a
    /// server without arrays, a stream's NACKed entries before Redis 8.8, a key's module
    /// metadata): refused, naming what.
    NoEquivalent {
        key: Vec<u8>,
        what: String,
        target: TargetFormat,
    },
    /// The raw value given to `transcode_value` could not be decoded.
    Decode(RdbError),
}

impl fmt::Display for TranscodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TranscodeError::*;
        match self {
            FieldTtlUnsupported { key, field, target } => write!(
                f,
                "key {}: hash field {} has a TTL, and the target ({target}) has no hash type that stores field TTLs; \
                 the field-TTL policy is refuse (choose drop to write the hash without its field TTLs)",
                quote_bytes(key),
                quote_bytes(field)
            ),
            FieldTtlOutOfRange { key, field, expire_at_ms, target } => write!(
                f,
                "key {}: hash field {} expires at {expire_at_ms} ms, which the target's ({target}) field-TTL encoding cannot represent",
                quote_bytes(key),
                quote_bytes(field)
            ),
            NanScore { key, member } => write!(
                f,
                "key {}: zset member {} has a NaN score, which no server stores",
                quote_bytes(key),
                quote_bytes(member)
            ),
            Empty { key, value_type } => write!(
                f,
                "key {}: the {value_type} has no elements (servers refuse empty keys)",
                quote_bytes(key)
            ),
            Module { key } => write!(
                f,
                "key {}: module values are not transcoded; send the raw payload",
                quote_bytes(key)
            ),
            TargetTooOld { key, value_type, target } => write!(
                f,
                "key {}: the target ({target}) has no encoding for a {value_type}",
                quote_bytes(key)
            ),
            BadChunks { key, message } => write!(f, "key {}: {message}", quote_bytes(key)),
            TooLarge { key, message } => write!(f, "key {}: {message}", quote_bytes(key)),
            NoEquivalent { key, what, target } => write!(
                f,
                "key {}: {what}, which the target ({target}) has no way to store; use a target of the source's engine and version or newer, or leave the key out",
                quote_bytes(key)
            ),
            Decode(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TranscodeError {}

impl From<RdbError> for TranscodeError {
    fn from(e: RdbError) -> Self {
        TranscodeError::Decode(e)
    }
}

/// Room kept in front of the body for what is only known at the end: the type byte, a hash's
/// minimum field expiry (8 bytes) and the element or node count (at most 9 bytes).
const HEAD: usize = 1 + 8 + 9;

/// Redis's default `stream-node-max-entries`: a node holds at most this many entries (live and
/// deleted), as XADD would build it.
const STREAM_NODE_MAX_ENTRIES: u64 = 100;
/// Redis's default `stream-node-max-bytes`.
const STREAM_NODE_MAX_BYTES: usize = 4096;

/// Largest field expiry Redis's hash field TTLs accept (`EB_EXPIRE_TIME_MAX`, 2^48 - 1 ms).
const REDIS_FIELD_EXPIRE_MAX: i64 = (1 << 48) - 1;

/// Stream entry flags inside a node (t_stream.c).
const STREAM_ITEM_FLAG_DELETED: i64 = 1;
const STREAM_ITEM_FLAG_SAMEFIELDS: i64 = 2;

/// Re-encodes one value for a target, fed the value's chunks in order:
///
/// ```no_run
/// # use shake_core::rdb::{Chunk, KeyHeader};
/// # use shake_core::rdb::writer::{FieldTtlPolicy, TargetFormat, TranscodeError, Transcoder};
/// # fn f(target: TargetFormat, key: KeyHeader, chunks: Vec<Chunk>) -> Result<(), TranscodeError> {
/// let mut tc = Transcoder::new(&target, &key, FieldTtlPolicy::Drop)?;
/// for chunk in chunks {
///     tc.push(chunk)?;
/// }
/// let (payload, dropped_field_ttls) = tc.finish()?; // a whole DUMP payload for RESTORE
/// # let _ = (payload, dropped_field_ttls); Ok(()) }
/// ```
pub struct Transcoder {
    key: Vec<u8>,
    value_type: ValueType,
    target: TargetFormat,
    policy: FieldTtlPolicy,
    /// `HEAD` bytes of room, then the body.
    out: Vec<u8>,
    kind: Kind,
    dropped_field_ttls: u64,
}

enum Kind {
    String {
        seen: bool,
        /// Where the next part of a string delivered in parts must begin.
        part_at: u64,
    },
    /// List or set: plain elements, counted.
    Items {
        rdb_type: u8,
        count: u64,
    },
    Zset {
        count: u64,
    },
    Hash(HashState),
    Stream(Box<StreamState>),
}

/// How the hash fields in the body are laid out so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HashForm {
    /// `field value` (plain HASH): no field TTL kept yet.
    Plain,
    /// `field value expiry(8 bytes, -1 = none)`: Valkey's HASH_2, final as written.
    Valkey2,
    /// `expiry(length, 0 = none) field value` with absolute expiries: turned into Redis's
    /// `HASH_METADATA` (relative to the smallest expiry) at the end, in place.
    RedisAbsolute,
}

struct HashState {
    count: u64,
    form: HashForm,
    /// Smallest field expiry kept (for `HASH_METADATA`).
    min_expire: i64,
}

struct StreamState {
    /// Stream-listpacks version written: 1 (type 15), 2 (19) or 3 (21).
    version: u8,
    node: Option<Node>,
    nodes: u64,
    live: u64,
    last_entry: Option<StreamId>,
    meta_seen: bool,
    groups_expected: u64,
    groups_seen: u64,
    group: Option<GroupState>,
}

/// A stream node being built: the master entry's id and field names, and the entries after it.
struct Node {
    master: StreamId,
    fields: Vec<Vec<u8>>,
    /// Bytes of the master entry's elements, counted with 1-byte count/deleted (what XADD's
    /// node-size check sees for nodes under 128 entries).
    master_bytes: usize,
    entries: ListpackWriter,
    live: u64,
    deleted: u64,
}

struct GroupState {
    /// Where the PEL begins (its count goes in front of it).
    pel_start: usize,
    pel: u64,
    /// Where the first consumer begins, once one arrived (the consumer count goes there).
    consumers_start: Option<usize>,
    consumers: u64,
}

impl Transcoder {
    /// A transcoder for the value of `key` (its `value_type` and, for streams, its `rdb_type`
    /// decide what is written) into `target`'s encodings.
    pub fn new(
        target: &TargetFormat,
        key: &KeyHeader,
        policy: FieldTtlPolicy,
    ) -> Result<Transcoder, TranscodeError> {
        let too_old = || TranscodeError::TargetTooOld {
            key: key.key.clone(),
            value_type: key.value_type,
            target: *target,
        };
        let kind = match key.value_type {
            ValueType::String => Kind::String {
                seen: false,
                part_at: 0,
            },
            ValueType::List => Kind::Items {
                rdb_type: t::LIST,
                count: 0,
            },
            ValueType::Set => Kind::Items {
                rdb_type: t::SET,
                count: 0,
            },
            ValueType::Zset if target.rdb_version < 8 => return Err(too_old()),
            ValueType::Zset => Kind::Zset { count: 0 },
            ValueType::Hash => Kind::Hash(HashState {
                count: 0,
                form: HashForm::Plain,
                min_expire: i64::MAX,
            }),
            ValueType::Stream => {
                let target_version = match target.stream_type().ok_or_else(too_old)? {
                    t::STREAM_LISTPACKS => 1,
                    t::STREAM_LISTPACKS_2 => 2,
                    _ => 3,
                };
                // Redis 8.6/8.8 streams (26/27) hold a listpacks-3 stream plus IDMP state and
                // NACKs: what is written is the listpacks-3 part (see docs/output-formats.md).
                let source_version = match key.rdb_type {
                    t::STREAM_LISTPACKS => 1,
                    t::STREAM_LISTPACKS_2 => 2,
                    t::STREAM_LISTPACKS_3 | t::STREAM_LISTPACKS_4 | t::STREAM_LISTPACKS_5 => 3,
                    other => {
                        return Err(TranscodeError::BadChunks {
                            key: key.key.clone(),
                            message: format!(
                                "a stream declared with RDB type {other}, which is no stream type"
                            ),
                        })
                    }
                };
                Kind::Stream(Box::new(StreamState {
                    version: target_version.min(source_version),
                    node: None,
                    nodes: 0,
                    live: 0,
                    last_entry: None,
                    meta_seen: false,
                    groups_expected: 0,
                    groups_seen: 0,
                    group: None,
                }))
            }
            ValueType::Module => {
                return Err(TranscodeError::Module {
                    key: key.key.clone(),
                })
            }
            ValueType::Array => {
                return Err(TranscodeError::NoEquivalent {
                    key: key.key.clone(),
                    what: "it is an array (Redis 8.8)".into(),
                    target: *target,
                })
            }
        };
        if !key.meta.is_empty() {
            return Err(TranscodeError::NoEquivalent {
                key: key.key.clone(),
                what: format!(
                    "it carries module key metadata ({})",
                    key.meta
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                target: *target,
            });
        }
        let mut out = Vec::with_capacity(HEAD + 256);
        out.resize(HEAD, 0);
        Ok(Transcoder {
            key: key.key.clone(),
            value_type: key.value_type,
            target: *target,
            policy,
            out,
            kind,
            dropped_field_ttls: 0,
        })
    }

    /// Bytes of the payload written so far (an unfinished stream node not included): for a
    /// caller that switches to commands past a size.
    pub fn encoded_len(&self) -> usize {
        self.out.len() - HEAD
    }

    fn bad(&self, message: impl Into<String>) -> TranscodeError {
        TranscodeError::BadChunks {
            key: self.key.clone(),
            message: message.into(),
        }
    }

    /// Adds the next chunk of the value. After an error the transcoder is of no further use.
    pub fn push(&mut self, chunk: Chunk) -> Result<(), TranscodeError> {
        match (&mut self.kind, chunk) {
            (
                Kind::String {
                    seen: seen @ false,
                    part_at: 0,
                },
                Chunk::String(s),
            ) => {
                *seen = true;
                write_string(&mut self.out, &s);
                Ok(())
            }
            (
                Kind::String {
                    seen: seen @ false,
                    part_at,
                },
                c @ Chunk::StringPart { .. },
            ) => {
                let ends = c.ends_string();
                let Chunk::StringPart { offset, len, data } = c else {
                    unreachable!("matched above")
                };
                if offset != *part_at {
                    let due = *part_at;
                    return Err(self.bad(format!(
                        "a string part at offset {offset} where {due} was due"
                    )));
                }
                if offset == 0 {
                    // Long strings are never integer-encoded: the raw form with the whole length.
                    write_len(&mut self.out, len);
                }
                self.out.extend_from_slice(&data);
                *part_at += data.len() as u64;
                *seen = ends;
                Ok(())
            }
            (Kind::Items { count, .. }, Chunk::Items(items)) => {
                *count += items.len() as u64;
                for item in &items {
                    write_string(&mut self.out, item);
                }
                Ok(())
            }
            (Kind::Zset { count }, Chunk::Scored(pairs)) => {
                *count += pairs.len() as u64;
                for (member, score) in &pairs {
                    if score.is_nan() {
                        return Err(TranscodeError::NanScore {
                            key: self.key.clone(),
                            member: member.clone(),
                        });
                    }
                    write_string(&mut self.out, member);
                    write_binary_double(&mut self.out, *score);
                }
                Ok(())
            }
            (Kind::Hash(_), Chunk::Fields(fields)) => {
                for f in fields {
                    self.hash_field(f)?;
                }
                Ok(())
            }
            (
                Kind::Stream(_),
                chunk @ (Chunk::StreamEntries(_)
                | Chunk::StreamMeta(_)
                | Chunk::StreamGroup(_)
                | Chunk::StreamPending(_)
                | Chunk::StreamConsumer(_)),
            ) => self.stream_chunk(chunk),
            (Kind::Hash(_), Chunk::PathFields { .. }) => Err(TranscodeError::NoEquivalent {
                key: self.key.clone(),
                what: "it is a Valkey 9.2 path hash".into(),
                target: self.target,
            }),
            // IDMP producer state has no place in listpacks 3: dropped (documented).
            (Kind::Stream(_), Chunk::StreamIdmp(_)) => Ok(()),
            (Kind::Stream(_), Chunk::StreamNacked(ids)) => Err(TranscodeError::NoEquivalent {
                key: self.key.clone(),
                what: format!(
                    "its consumer group holds {} NACKed entries (XNACK, Redis 8.8), first {}",
                    ids.len(),
                    ids.first().copied().unwrap_or_default()
                ),
                target: self.target,
            }),
            (_, chunk) => Err(self.bad(format!(
                "a {} value cannot contain {}",
                self.value_type,
                chunk_name(&chunk)
            ))),
        }
    }

    /// The whole DUMP payload (type, body, the target's version, CRC-64) and the number of field
    /// TTLs dropped under `FieldTtlPolicy::Drop`.
    pub fn finish(mut self) -> Result<(Vec<u8>, u64), TranscodeError> {
        let mut head: Vec<u8> = Vec::with_capacity(HEAD);
        let kind = std::mem::replace(
            &mut self.kind,
            Kind::String {
                seen: true,
                part_at: 0,
            },
        );
        match kind {
            Kind::String { seen, .. } => {
                if !seen {
                    return Err(self.bad("a string value ended without its string chunk"));
                }
                head.push(t::STRING);
            }
            Kind::Items { rdb_type, count } => {
                self.require_elements(count)?;
                head.push(rdb_type);
                write_len(&mut head, count);
            }
            Kind::Zset { count } => {
                self.require_elements(count)?;
                head.push(t::ZSET_2);
                write_len(&mut head, count);
            }
            Kind::Hash(h) => {
                self.require_elements(h.count)?;
                match h.form {
                    HashForm::Plain => head.push(t::HASH),
                    HashForm::Valkey2 => head.push(t::HASH_METADATA_PRE_GA),
                    HashForm::RedisAbsolute => {
                        self.relativize_field_ttls(h.min_expire)?;
                        head.push(t::HASH_METADATA);
                        write_ms(&mut head, h.min_expire);
                    }
                }
                write_len(&mut head, h.count);
            }
            Kind::Stream(mut s) => {
                if !s.meta_seen {
                    return Err(self.bad("the stream ended before its metadata chunk"));
                }
                self.end_group(&mut s);
                if s.groups_seen != s.groups_expected {
                    return Err(self.bad(format!(
                        "the stream metadata announces {} consumer groups, {} followed",
                        s.groups_expected, s.groups_seen
                    )));
                }
                head.push(match s.version {
                    1 => t::STREAM_LISTPACKS,
                    2 => t::STREAM_LISTPACKS_2,
                    _ => t::STREAM_LISTPACKS_3,
                });
                write_len(&mut head, s.nodes);
            }
        }
        // The head goes right before the body, in the room kept for it.
        let start = HEAD - head.len();
        self.out[start..HEAD].copy_from_slice(&head);
        self.out.drain(..start);
        seal_dump_payload(&mut self.out, self.target.rdb_version);
        Ok((self.out, self.dropped_field_ttls))
    }

    fn require_elements(&self, count: u64) -> Result<(), TranscodeError> {
        if count == 0 {
            return Err(TranscodeError::Empty {
                key: self.key.clone(),
                value_type: self.value_type,
            });
        }
        Ok(())
    }

    // ---- hashes ------------------------------------------------------------------------------

    fn hash_field(&mut self, f: HashField) -> Result<(), TranscodeError> {
        let ttl = match f.expire_at_ms {
            None => None,
            Some(at) => match self.target.field_ttl_hash_type() {
                None => match self.policy {
                    FieldTtlPolicy::Refuse => {
                        return Err(TranscodeError::FieldTtlUnsupported {
                            key: self.key.clone(),
                            field: f.field,
                            target: self.target,
                        })
                    }
                    FieldTtlPolicy::Drop => {
                        self.dropped_field_ttls += 1;
                        None
                    }
                },
                Some(ty) => {
                    // HASH_METADATA: 0 means "no TTL", and Redis refuses expiries past 2^48-1.
                    // HASH_2: -1 means "no TTL"; any other negative is meaningless.
                    let ok = if ty == t::HASH_METADATA {
                        (1..=REDIS_FIELD_EXPIRE_MAX).contains(&at)
                    } else {
                        at >= 0
                    };
                    if !ok {
                        return Err(TranscodeError::FieldTtlOutOfRange {
                            key: self.key.clone(),
                            field: f.field,
                            expire_at_ms: at,
                            target: self.target,
                        });
                    }
                    Some(at)
                }
            },
        };
        let Kind::Hash(h) = &mut self.kind else {
            return Err(self.bad("internal: hash field outside a hash"));
        };
        if ttl.is_some() && h.form == HashForm::Plain {
            let form = if self.target.field_ttl_hash_type() == Some(t::HASH_METADATA) {
                HashForm::RedisAbsolute
            } else {
                HashForm::Valkey2
            };
            h.form = form;
            self.out =
                convert_plain_hash(&self.out, form).ok_or_else(|| TranscodeError::BadChunks {
                    key: self.key.clone(),
                    message: "internal: the hash written so far does not re-read".into(),
                })?;
        }
        let Kind::Hash(h) = &mut self.kind else {
            return Err(self.bad("internal: hash field outside a hash"));
        };
        h.count += 1;
        if let Some(at) = ttl {
            h.min_expire = h.min_expire.min(at);
        }
        let out = &mut self.out;
        match h.form {
            HashForm::Plain => {
                write_string(out, &f.field);
                write_string(out, &f.value);
            }
            HashForm::Valkey2 => {
                write_string(out, &f.field);
                write_string(out, &f.value);
                write_ms(out, ttl.unwrap_or(-1));
            }
            HashForm::RedisAbsolute => {
                write_len(out, ttl.map_or(0, |at| at as u64));
                write_string(out, &f.field);
                write_string(out, &f.value);
            }
        }
        Ok(())
    }

    /// Rewrites the absolute expiries of a `RedisAbsolute` body as `HASH_METADATA`'s relative
    /// ones (`expiry - min + 1`, 0 still "none"), in place: a relative value is never larger than
    /// its absolute one (min >= 1), so its length never takes more bytes and the body only
    /// shrinks as it is compacted forward.
    fn relativize_field_ttls(&mut self, min_expire: i64) -> Result<(), TranscodeError> {
        let internal = |k: &[u8]| TranscodeError::BadChunks {
            key: k.to_vec(),
            message: "internal: the hash written so far does not re-read".into(),
        };
        let buf = &mut self.out;
        let (mut r, mut w) = (HEAD, HEAD);
        let mut tmp = Vec::with_capacity(9);
        while r < buf.len() {
            let (abs, n) = read_own_len(buf, r).ok_or_else(|| internal(&self.key))?;
            let rel = if abs == 0 {
                0
            } else {
                abs.saturating_sub(min_expire as u64) + 1
            };
            let end = own_string_end(buf, r + n)
                .and_then(|e| own_string_end(buf, e))
                .ok_or_else(|| internal(&self.key))?;
            tmp.clear();
            write_len(&mut tmp, rel);
            buf[w..w + tmp.len()].copy_from_slice(&tmp);
            w += tmp.len();
            buf.copy_within(r + n..end, w);
            w += end - (r + n);
            r = end;
        }
        buf.truncate(w);
        Ok(())
    }

    // ---- streams -----------------------------------------------------------------------------

    fn stream_chunk(&mut self, chunk: Chunk) -> Result<(), TranscodeError> {
        let Kind::Stream(s) = std::mem::replace(
            &mut self.kind,
            Kind::String {
                seen: true,
                part_at: 0,
            },
        ) else {
            return Err(self.bad("internal: stream chunk outside a stream"));
        };
        let mut s = s;
        let r = self.stream_chunk_inner(&mut s, chunk);
        self.kind = Kind::Stream(s);
        r
    }

    fn stream_chunk_inner(
        &mut self,
        s: &mut StreamState,
        chunk: Chunk,
    ) -> Result<(), TranscodeError> {
        match chunk {
            Chunk::StreamEntries(entries) => {
                if s.meta_seen {
                    return Err(self.bad("stream entries after the stream metadata"));
                }
                // Every chunk starts a node: the parser yields one chunk per source node.
                self.close_node(s)?;
                for e in entries {
                    self.stream_entry(s, e)?;
                }
                Ok(())
            }
            Chunk::StreamMeta(m) => self.stream_meta(s, m),
            Chunk::StreamGroup(g) => self.stream_group(s, g),
            Chunk::StreamPending(p) => self.stream_pending(s, p),
            Chunk::StreamConsumer(c) => self.stream_consumer(s, c),
            other => Err(self.bad(format!("a stream cannot contain {}", chunk_name(&other)))),
        }
    }

    fn stream_entry(&mut self, s: &mut StreamState, e: StreamEntry) -> Result<(), TranscodeError> {
        if let Some(last) = s.last_entry {
            if e.id <= last {
                return Err(self.bad(format!(
                    "stream entry {} follows {}: ids must increase",
                    e.id, last
                )));
            }
        }
        s.last_entry = Some(e.id);
        // XADD's rule: a new node when the tail node's bytes plus the new entry's field and value
        // bytes reach the limit, or when it holds the maximum number of entries.
        if let Some(node) = &s.node {
            let new_bytes: usize = e.fields.iter().map(|(f, v)| f.len() + v.len()).sum();
            let lp_bytes = 6 + node.master_bytes + (node.entries.total_bytes() - 7) + 1;
            if lp_bytes + new_bytes >= STREAM_NODE_MAX_BYTES
                || node.live + node.deleted >= STREAM_NODE_MAX_ENTRIES
            {
                self.close_node(s)?;
            }
        }
        let style = self.target.listpack_backlen;
        let node = s.node.get_or_insert_with(|| {
            let fields: Vec<Vec<u8>> = e.fields.iter().map(|(f, _)| f.clone()).collect();
            let mut master = ListpackWriter::new(style);
            master.push_int(1);
            master.push_int(0);
            master.push_int(fields.len() as i64);
            for f in &fields {
                master.push(f);
            }
            master.push_int(0);
            Node {
                master: e.id,
                master_bytes: master.total_bytes() - 7,
                fields,
                entries: ListpackWriter::new(style),
                live: 0,
                deleted: 0,
            }
        });
        let same = e.fields.len() == node.fields.len()
            && e.fields.iter().zip(&node.fields).all(|((f, _), m)| f == m);
        let mut flags = 0;
        if e.deleted {
            flags |= STREAM_ITEM_FLAG_DELETED;
            node.deleted += 1;
        } else {
            node.live += 1;
            s.live += 1;
        }
        if same {
            flags |= STREAM_ITEM_FLAG_SAMEFIELDS;
        }
        let lp = &mut node.entries;
        lp.push_int(flags);
        // Ids are stored as differences from the master id, as 64-bit two's complement.
        lp.push_int(e.id.ms.wrapping_sub(node.master.ms) as i64);
        lp.push_int(e.id.seq.wrapping_sub(node.master.seq) as i64);
        let n = e.fields.len() as i64;
        if same {
            for (_, v) in &e.fields {
                lp.push(v);
            }
            // lp-count: the entry's elements before it, for walking a node backwards.
            lp.push_int(n + 3);
        } else {
            lp.push_int(n);
            for (f, v) in &e.fields {
                lp.push(f);
                lp.push(v);
            }
            lp.push_int(2 * n + 4);
        }
        Ok(())
    }

    /// Writes the node being built, if any: its key (the master id, 16 bytes big-endian) and its
    /// listpack (master entry with the final counts, then the entries).
    fn close_node(&mut self, s: &mut StreamState) -> Result<(), TranscodeError> {
        let Some(node) = s.node.take() else {
            return Ok(());
        };
        let mut lp = ListpackWriter::new(self.target.listpack_backlen);
        lp.push_int(node.live as i64);
        lp.push_int(node.deleted as i64);
        lp.push_int(node.fields.len() as i64);
        for f in &node.fields {
            lp.push(f);
        }
        lp.push_int(0);
        lp.append(&node.entries);
        let bytes = lp.finish().map_err(|message| TranscodeError::TooLarge {
            key: self.key.clone(),
            message: format!("stream node at {}: {message}", node.master),
        })?;
        let mut id = Vec::with_capacity(16);
        write_stream_id_raw(&mut id, node.master);
        write_raw_string(&mut self.out, &id);
        write_raw_string(&mut self.out, &bytes);
        s.nodes += 1;
        Ok(())
    }

    fn stream_meta(&mut self, s: &mut StreamState, m: StreamMeta) -> Result<(), TranscodeError> {
        if s.meta_seen {
            return Err(self.bad("a second stream metadata chunk"));
        }
        self.close_node(s)?;
        if m.length != s.live {
            return Err(self.bad(format!(
                "the stream metadata says {} entries, {} live entries were given",
                m.length, s.live
            )));
        }
        let out = &mut self.out;
        write_len(out, m.length);
        write_stream_id_lens(out, m.last_id);
        if s.version >= 2 {
            let (Some(first), Some(max_deleted), Some(added)) =
                (m.first_id, m.max_deleted_id, m.entries_added)
            else {
                return Err(self.bad(
                    "the stream metadata lacks the first id, max-deleted id or entries-added its stream type carries",
                ));
            };
            write_stream_id_lens(out, first);
            write_stream_id_lens(out, max_deleted);
            write_len(out, added);
        }
        write_len(out, m.groups);
        s.meta_seen = true;
        s.groups_expected = m.groups;
        Ok(())
    }

    fn stream_group(
        &mut self,
        s: &mut StreamState,
        g: StreamGroupHeader,
    ) -> Result<(), TranscodeError> {
        if !s.meta_seen {
            return Err(self.bad("a consumer group before the stream metadata"));
        }
        self.end_group(s);
        s.groups_seen += 1;
        write_string(&mut self.out, &g.name);
        write_stream_id_lens(&mut self.out, g.last_id);
        if s.version >= 2 {
            let Some(entries_read) = g.entries_read else {
                return Err(self.bad(format!(
                    "consumer group {} lacks the entries-read its stream type carries",
                    quote_bytes(&g.name)
                )));
            };
            // Saved from a signed counter: -1 ("unknown") is the all-ones 64-bit length.
            write_len(&mut self.out, entries_read as u64);
        }
        s.group = Some(GroupState {
            pel_start: self.out.len(),
            pel: 0,
            consumers_start: None,
            consumers: 0,
        });
        Ok(())
    }

    fn stream_pending(
        &mut self,
        s: &mut StreamState,
        pending: Vec<PendingEntry>,
    ) -> Result<(), TranscodeError> {
        match &mut s.group {
            Some(g) if g.consumers_start.is_none() => {
                g.pel += pending.len() as u64;
                for p in &pending {
                    write_stream_id_raw(&mut self.out, p.id);
                    write_ms(&mut self.out, p.delivery_time_ms);
                    write_len(&mut self.out, p.delivery_count);
                }
                Ok(())
            }
            Some(_) => Err(self.bad("pending entries after the group's consumers")),
            None => Err(self.bad("pending entries outside a consumer group")),
        }
    }

    fn stream_consumer(
        &mut self,
        s: &mut StreamState,
        c: StreamConsumer,
    ) -> Result<(), TranscodeError> {
        let version = s.version;
        let Some(g) = &mut s.group else {
            return Err(self.bad("a consumer outside a consumer group"));
        };
        if g.consumers_start.is_none() {
            // The PEL is complete: its count goes in front of it, the consumers follow.
            insert_len(&mut self.out, g.pel_start, g.pel);
            g.consumers_start = Some(self.out.len());
        }
        g.consumers += 1;
        let out = &mut self.out;
        write_string(out, &c.name);
        write_ms(out, c.seen_time_ms);
        if version >= 3 {
            let Some(active) = c.active_time_ms else {
                return Err(self.bad(format!(
                    "consumer {} lacks the active time its stream type carries",
                    quote_bytes(&c.name)
                )));
            };
            write_ms(out, active);
        }
        write_len(out, c.pending.len() as u64);
        for id in &c.pending {
            write_stream_id_raw(out, *id);
        }
        Ok(())
    }

    /// Completes the open group: the PEL count (if no consumer came) and the consumer count.
    fn end_group(&mut self, s: &mut StreamState) {
        let Some(g) = s.group.take() else { return };
        match g.consumers_start {
            None => {
                insert_len(&mut self.out, g.pel_start, g.pel);
                write_len(&mut self.out, 0);
            }
            Some(at) => insert_len(&mut self.out, at, g.consumers),
        }
    }
}

/// Decodes one value's raw RDB encoding (as an RDB file or a DUMP payload holds it, after the
/// type byte) and re-encodes it for `target`: the portable path for a value in hand, e.g. a DUMP
/// reply from a source whose encoding the target cannot load. Returns the payload and the number
/// of field TTLs dropped.
pub fn transcode_value(
    target: &TargetFormat,
    source: Header,
    rdb_type: u8,
    key: &[u8],
    raw: &[u8],
    policy: FieldTtlPolicy,
) -> Result<(Vec<u8>, u64), TranscodeError> {
    let value_type = value_type_of(rdb_type, source).ok_or_else(|| TranscodeError::BadChunks {
        key: key.to_vec(),
        message: format!(
            "RDB type {rdb_type} is not a value type of {} RDB {}",
            source.magic.as_str(),
            source.version
        ),
    })?;
    let header = KeyHeader {
        db: 0,
        key: key.to_vec(),
        rdb_type,
        value_type,
        expire_at_ms: None,
        idle_s: None,
        freq: None,
        offset: 0,
        meta: Vec::new(),
    };
    let mut tc = Transcoder::new(target, &header, policy)?;
    let mut p = RdbParser::for_value(raw, source, rdb_type, key, ParserOptions::default())?;
    while let Some(chunk) = p.next_chunk()? {
        tc.push(chunk)?;
    }
    if p.offset() != raw.len() as u64 {
        return Err(TranscodeError::BadChunks {
            key: key.to_vec(),
            message: format!(
                "the value ends at byte {} of {}: trailing bytes after it",
                p.offset(),
                raw.len()
            ),
        });
    }
    tc.finish()
}

/// A string written as length + bytes, never in an integer encoding (node keys, listpacks).
fn write_raw_string(out: &mut Vec<u8>, s: &[u8]) {
    write_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Inserts the RDB length `n` at `at`, moving what follows.
fn insert_len(out: &mut Vec<u8>, at: usize, n: u64) {
    let mut len = Vec::with_capacity(len_size(n));
    write_len(&mut len, n);
    out.splice(at..at, len);
}

/// Reads a length this module wrote (`write_len`) at `at`: `(value, bytes)`.
fn read_own_len(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let b = *buf.get(at)?;
    Some(match b >> 6 {
        0 => ((b & 0x3F) as u64, 1),
        1 => ((((b & 0x3F) as u64) << 8) | *buf.get(at + 1)? as u64, 2),
        _ if b == 0x80 => (
            u32::from_be_bytes(buf.get(at + 1..at + 5)?.try_into().ok()?) as u64,
            5,
        ),
        _ if b == 0x81 => (
            u64::from_be_bytes(buf.get(at + 1..at + 9)?.try_into().ok()?),
            9,
        ),
        _ => return None,
    })
}

/// The end of a string this module wrote (`write_string`) starting at `at`.
fn own_string_end(buf: &[u8], at: usize) -> Option<usize> {
    let b = *buf.get(at)?;
    let end = if b >> 6 == 3 {
        match b & 0x3F {
            0 => at + 2,
            1 => at + 3,
            2 => at + 5,
            _ => return None,
        }
    } else {
        let (len, n) = read_own_len(buf, at)?;
        at.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?
    };
    (end <= buf.len()).then_some(end)
}

/// Re-encodes the plain `field value` records written so far (after `HEAD`) in `form`, every
/// field without a TTL.
fn convert_plain_hash(out: &[u8], form: HashForm) -> Option<Vec<u8>> {
    let mut conv = Vec::with_capacity(out.len() + (out.len() - HEAD) / 2 + 64);
    conv.extend_from_slice(&out[..HEAD]);
    let mut at = HEAD;
    while at < out.len() {
        let end = own_string_end(out, at).and_then(|e| own_string_end(out, e))?;
        match form {
            HashForm::Valkey2 => {
                conv.extend_from_slice(&out[at..end]);
                write_ms(&mut conv, -1);
            }
            HashForm::RedisAbsolute => {
                write_len(&mut conv, 0);
                conv.extend_from_slice(&out[at..end]);
            }
            HashForm::Plain => conv.extend_from_slice(&out[at..end]),
        }
        at = end;
    }
    Some(conv)
}

fn chunk_name(c: &Chunk) -> &'static str {
    match c {
        Chunk::String(_) => "a string chunk",
        Chunk::StringPart { .. } => "a string part",
        Chunk::Items(_) => "list or set elements",
        Chunk::Scored(_) => "zset members",
        Chunk::Fields(_) => "hash fields",
        Chunk::StreamEntries(_) => "stream entries",
        Chunk::StreamMeta(_) => "stream metadata",
        Chunk::StreamGroup(_) => "a consumer group",
        Chunk::StreamPending(_) => "pending entries",
        Chunk::StreamConsumer(_) => "a consumer",
        Chunk::Module { .. } => "a module value",
        Chunk::StreamNacked(_) => "NACKed stream ids",
        Chunk::StreamIdmp(_) => "stream IDMP state",
        Chunk::ArrayHeader { .. } | Chunk::ArrayElems(_) => "array elements",
        Chunk::PathFields { .. } => "path hash fields",
    }
}
