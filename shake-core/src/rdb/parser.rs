//! The streaming RDB parser: header, opcodes, keys, and every value encoding, pulled item by item
//! and chunk by chunk from any `io::Read`.

use std::collections::HashMap;
use std::io::Read;

use super::compact::{self, Container, Elem, TupleCheck, Tuples};
use super::error::{RdbError, RdbErrorKind, Result};
use super::model::*;
use super::module_name_from_id;
use super::module_opcodes as mop;
use super::opcodes as op;
use super::source::Source;
use super::types::{self as t, value_type_of, Layout};

/// The RDB versions this reader knows, per magic (newer ones only with `relaxed_version`).
pub const REDIS_VERSIONS: std::ops::RangeInclusive<u32> = 1..=15;
pub const VALKEY_VERSIONS: std::ops::RangeInclusive<u32> = 80..=81;

/// Largest single string accepted. Redis caps strings at 512 MiB by default and a listpack or
/// ziplist can't exceed 4 GiB; anything above this is a corrupt length field.
const MAX_STRING: u64 = 1 << 32;

#[derive(Debug, Clone)]
pub struct ParserOptions {
    /// Most elements one `Chunk` carries.
    pub chunk_elements: usize,
    /// Read an RDB whose version is newer than the ones this parser knows, as Valkey's
    /// `rdb-version-check relaxed` does: types it does not know still fail.
    pub relaxed_version: bool,
    /// Compare the trailer CRC-64 with the bytes (when the trailer is non-zero).
    pub verify_checksum: bool,
    /// Check the compact encodings (listpacks, ziplists, intsets, zipmaps) of values that are
    /// stepped over rather than decoded, as deeply as a decoded one is (see `compact`): what a
    /// raw payload forwards must not be something a server loading it without deep
    /// sanitization crashes on. Off, a skipped blob is stepped over unread (faster: no LZF
    /// decompression); a decoded value is always checked.
    pub verify_values: bool,
    /// A string value longer than this arrives as `Chunk::StringPart`s of about this size
    /// (LZF-compressed ones are decompressed on the way), never whole.
    pub string_part_bytes: usize,
}

impl Default for ParserOptions {
    fn default() -> Self {
        ParserOptions {
            chunk_elements: 1024,
            relaxed_version: false,
            verify_checksum: true,
            verify_values: true,
            string_part_bytes: STRING_PART_BYTES,
        }
    }
}

/// Default of [`ParserOptions::string_part_bytes`].
pub const STRING_PART_BYTES: usize = 1 << 20;
/// Compressed bytes fed to the LZF decoder at a time: a part overshoots its size by at most
/// what this much input expands to (88 times).
const LZF_FEED_BYTES: usize = 8 * 1024;

/// A string value whose length header was read, its body not (or only partly) yet.
#[derive(Debug, Clone, Copy)]
enum StringBody {
    /// An integer encoding, already read.
    Int(i64),
    /// `remaining` of the `len` raw bytes are still to read; `offset` were delivered.
    Plain {
        len: u64,
        offset: u64,
        remaining: u64,
    },
    /// `compressed` bytes remain of an LZF blob that decompresses to `len` bytes. While the
    /// body is decoded in parts, the parser's `lzf` decoder holds its state.
    Lzf {
        len: u64,
        offset: u64,
        compressed: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum PlainKind {
    List,
    Set,
    /// Zset with scores as length-prefixed text (type 3).
    ZsetText,
    /// Zset with binary double scores (type 5).
    ZsetBinary,
    Hash,
    /// Redis hash with field TTLs: `min_expire` is set for the GA form (TTLs relative to it).
    HashTtl {
        min_expire: Option<i64>,
    },
    /// Valkey's HASH_2: field, value, 8-byte absolute expiry or -1.
    ValkeyHash2,
}

#[derive(Debug, Clone, Copy)]
enum StreamPhase {
    Nodes {
        remaining: u64,
    },
    Meta,
    Groups {
        remaining: u64,
    },
    Pel {
        groups_left: u64,
        remaining: u64,
    },
    ConsumerCount {
        groups_left: u64,
    },
    Consumers {
        groups_left: u64,
        remaining: u64,
    },
    /// Type 27: the NACK zone after a group's consumers.
    Nacks {
        groups_left: u64,
    },
    /// Types 26/27: the IDMP trailer after the last group.
    Idmp,
}

#[derive(Debug, Clone, Copy)]
enum ValueState {
    /// Nothing of the value has been read yet.
    Start,
    Plain {
        remaining: u64,
        kind: PlainKind,
    },
    Quicklist {
        remaining: u64,
        v2: bool,
    },
    Stream {
        version: u8,
        phase: StreamPhase,
    },
    String(StringBody),
    /// An array's elements (type 28).
    Array {
        remaining: u64,
    },
    /// A path hash's paths (Valkey type 23).
    PathHash {
        remaining: u64,
    },
    Done,
}

struct Current {
    key: Vec<u8>,
    rdb_type: u8,
    state: ValueState,
    elements: u64,
}

pub struct RdbParser<R> {
    src: Source<R>,
    opts: ParserOptions,
    header: Option<Header>,
    db: u64,
    expire_at_ms: Option<i64>,
    idle_s: Option<u64>,
    freq: Option<u8>,
    current: Option<Current>,
    finished: bool,
    /// Set during `skip_chunk`: elements are stepped over, not decoded.
    skipping: bool,
    /// The LZF decoder of a string value being delivered in parts.
    lzf: Option<Box<crate::lzf::Decoder>>,
    /// KEY_META classes read for the next key.
    meta: Vec<KeyMetaClass>,
    /// Redis 8.10 hash templates (opcode 242) by id, for the types 30/32 that refer to them.
    templates: HashMap<u64, Vec<Vec<u8>>>,
}

impl<R: Read> RdbParser<R> {
    pub fn new(reader: R) -> Self {
        Self::with_options(reader, ParserOptions::default())
    }

    /// A parser over a whole RDB file or transfer; Valkey's LZ4 envelope is undone underneath.
    pub fn with_options(reader: R, opts: ParserOptions) -> Self {
        Self::with_source(Source::file(reader), opts)
    }

    fn with_source(src: Source<R>, opts: ParserOptions) -> Self {
        RdbParser {
            src,
            opts,
            header: None,
            db: 0,
            expire_at_ms: None,
            idle_s: None,
            freq: None,
            current: None,
            finished: false,
            skipping: false,
            lzf: None,
            meta: Vec::new(),
            templates: HashMap::new(),
        }
    }

    /// A parser positioned at the start of one value's raw encoding (a DUMP payload's body, or
    /// bytes captured with `read_raw_value`), for decoding it with `next_chunk`. `header` says
    /// which numbering the type byte follows.
    pub fn for_value(
        reader: R,
        header: Header,
        rdb_type: u8,
        key: &[u8],
        opts: ParserOptions,
    ) -> Result<Self> {
        if value_type_of(rdb_type, header).is_none() {
            return Err(RdbError::new(
                RdbErrorKind::UnknownType {
                    rdb_type,
                    version: header.version,
                },
                0,
            )
            .with_key(key));
        }
        // A value's bytes are never enveloped (and a string's may well start with "VCS").
        let mut p = Self::with_source(Source::new(reader), opts);
        p.header = Some(header);
        p.finished = true;
        // Raw captures do not include the file's CRC; none is checked here.
        p.current = Some(Current {
            key: key.to_vec(),
            rdb_type,
            state: ValueState::Start,
            elements: 0,
        });
        Ok(p)
    }

    /// Whether the input is Valkey's LZ4-compressed RDB (`rdbcompression lz4`), known once the
    /// header is read; offsets then count decompressed bytes.
    pub fn is_compressed(&self) -> bool {
        self.src.is_compressed()
    }

    /// Offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.src.offset()
    }

    /// Gives back the reader and the bytes read ahead of the parser (an AOF tail after the RDB,
    /// or the command stream after a replication transfer).
    pub fn into_parts(self) -> (R, Vec<u8>) {
        self.src.into_parts()
    }

    /// Reads and checks the magic and version (done by the first `next_item` if not called).
    pub fn header(&mut self) -> Result<Header> {
        if let Some(h) = self.header {
            return Ok(h);
        }
        let first: [u8; 5] = self.src.array("the RDB header").map_err(|e| {
            if matches!(e.kind, RdbErrorKind::UnexpectedEof { .. }) {
                RdbError::new(RdbErrorKind::NotRdb { found: Vec::new() }, 0)
            } else {
                e
            }
        })?;
        let (magic, digits) = match &first {
            b"REDIS" => (Magic::Redis, 4),
            b"VALKE" => {
                let y = self.src.u8("the RDB header")?;
                if y != b'Y' {
                    return Err(RdbError::new(
                        RdbErrorKind::NotRdb {
                            found: first.to_vec(),
                        },
                        0,
                    ));
                }
                (Magic::Valkey, 3)
            }
            _ => {
                return Err(RdbError::new(
                    RdbErrorKind::NotRdb {
                        found: first.to_vec(),
                    },
                    0,
                ))
            }
        };
        let mut ver = [0u8; 4];
        self.src.exact(&mut ver[..digits], "the RDB version")?;
        let text = std::str::from_utf8(&ver[..digits])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()));
        let version: u32 = text.and_then(|s| s.parse().ok()).ok_or_else(|| {
            RdbError::corrupt(
                format!(
                    "RDB version {:?} is not a number",
                    String::from_utf8_lossy(&ver[..digits])
                ),
                self.src.offset() - digits as u64,
            )
        })?;
        let known = match magic {
            Magic::Redis => REDIS_VERSIONS.contains(&version),
            Magic::Valkey => VALKEY_VERSIONS.contains(&version),
        };
        if !known && !self.opts.relaxed_version || version == 0 {
            return Err(RdbError::new(
                RdbErrorKind::UnsupportedVersion {
                    magic: magic.as_str(),
                    version,
                },
                self.src.offset() - digits as u64,
            ));
        }
        let h = Header { magic, version };
        self.header = Some(h);
        Ok(h)
    }

    fn fail_in_key(&self, e: RdbError) -> RdbError {
        match &self.current {
            Some(c) => e.with_key(&c.key),
            None => e,
        }
    }

    /// The next top-level item, or `None` after `Item::End`. A value left unread is skipped.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        if self.current.is_some() {
            self.skip_value()?;
        }
        if self.finished {
            return Ok(None);
        }
        let header = self.header()?;
        loop {
            let at = self.src.offset();
            let Some(kind) = self.src.try_u8()? else {
                return Err(RdbError::new(
                    RdbErrorKind::UnexpectedEof {
                        wanted: "the next key or the EOF opcode",
                    },
                    at,
                ));
            };
            match kind {
                op::AUX => {
                    let name = self.string("an AUX field name")?;
                    let value = self.string("an AUX field value")?;
                    return Ok(Some(Item::Aux { name, value }));
                }
                op::SELECTDB => {
                    self.db = self.length("a SELECTDB number")?;
                    return Ok(Some(Item::SelectDb(self.db)));
                }
                op::RESIZEDB => {
                    let keys = self.length("a RESIZEDB key count")?;
                    let expires = self.length("a RESIZEDB expire count")?;
                    return Ok(Some(Item::ResizeDb {
                        db: self.db,
                        keys,
                        expires,
                    }));
                }
                op::EXPIRETIME => {
                    let s = i32::from_le_bytes(self.src.array("an EXPIRETIME value")?);
                    self.expire_at_ms = Some(s as i64 * 1000);
                }
                op::EXPIRETIME_MS => {
                    self.expire_at_ms = Some(i64::from_le_bytes(
                        self.src.array("an EXPIRETIME_MS value")?,
                    ));
                }
                op::IDLE => self.idle_s = Some(self.length("an IDLE value")?),
                op::FREQ => self.freq = Some(self.src.u8("a FREQ value")?),
                op::SLOT_INFO => {
                    let slot = self.length("a SLOT_INFO slot")?;
                    let size = self.length("a SLOT_INFO size")?;
                    let expires_size = self.length("a SLOT_INFO expires size")?;
                    return Ok(Some(Item::SlotInfo {
                        slot,
                        size,
                        expires_size,
                    }));
                }
                op::FUNCTION2 => {
                    let code = self.string("a function library")?;
                    return Ok(Some(Item::Function(Function {
                        code,
                        name: None,
                        engine: None,
                        description: None,
                    })));
                }
                op::FUNCTION_PRE_GA => {
                    let name = self.string("a function name")?;
                    let engine = self.string("a function engine")?;
                    let has_desc = self.length("a function description flag")?;
                    let description = if has_desc != 0 {
                        Some(self.string("a function description")?)
                    } else {
                        None
                    };
                    let code = self.string("a function body")?;
                    return Ok(Some(Item::Function(Function {
                        code,
                        name: Some(name),
                        engine: Some(engine),
                        description,
                    })));
                }
                op::MODULE_AUX => {
                    let module_id = self.length("a module id")?;
                    let when_op = self.length("a module aux 'when' opcode")?;
                    if when_op != mop::UINT {
                        return Err(RdbError::corrupt(
                            format!(
                                "module aux data has 'when' opcode {when_op}, expected {}",
                                mop::UINT
                            ),
                            at,
                        ));
                    }
                    let when = self.length("a module aux 'when' value")?;
                    self.walk_module_body()?;
                    return Ok(Some(Item::ModuleAux {
                        module_id,
                        name: module_name_from_id(module_id),
                        when,
                    }));
                }
                op::EOF => return self.finish(header).map(Some),
                op::RE_RAM_LRU if header.magic == Magic::Redis => {
                    // Redis Enterprise writes this hint before keys; it carries one length.
                    self.length("a RAM_LRU hint")?;
                }
                op::SLOT_IMPORT if header.magic == Magic::Valkey => {
                    return self.slot_import().map(Some);
                }
                op::KEY_META if header.magic == Magic::Redis => {
                    self.key_meta(at)?;
                }
                op::HASH_TEMPLATE if header.magic == Magic::Redis => {
                    return self.hash_template(at).map(Some);
                }
                op::UPDATE if header.magic == Magic::Valkey => {
                    return self.update_command(at).map(Some);
                }
                ty => {
                    let Some(value_type) = value_type_of(ty, header) else {
                        return Err(RdbError::new(
                            RdbErrorKind::UnknownType {
                                rdb_type: ty,
                                version: header.version,
                            },
                            at,
                        ));
                    };
                    let key = self.string("a key name")?;
                    let kh = KeyHeader {
                        db: self.db,
                        key: key.clone(),
                        rdb_type: ty,
                        value_type,
                        expire_at_ms: self.expire_at_ms.take(),
                        idle_s: self.idle_s.take(),
                        freq: self.freq.take(),
                        offset: at,
                        meta: std::mem::take(&mut self.meta),
                    };
                    if ty == t::MODULE_PRE_GA {
                        return Err(RdbError::new(RdbErrorKind::ModulePreGa, at).with_key(&key));
                    }
                    if ty == t::GCRA && header.magic == Magic::Redis {
                        // See `types::GCRA` for why this is not decoded.
                        return Err(RdbError::new(
                            RdbErrorKind::Unreadable(
                                "Redis GCRA rate-limiter value (type 33), which only Redis builds \
                                 with ENABLE_GCRA write (no release does): its layout is not in \
                                 Redis's published sources, so it cannot be read; delete the key \
                                 on the source (or let it expire) and save again"
                                    .into(),
                            ),
                            at,
                        )
                        .with_key(&key));
                    }
                    self.current = Some(Current {
                        key,
                        rdb_type: ty,
                        state: ValueState::Start,
                        elements: 0,
                    });
                    return Ok(Some(Item::Key(kh)));
                }
            }
        }
    }

    fn finish(&mut self, header: Header) -> Result<Item> {
        self.finished = true;
        if header.version < 5 {
            self.src.finish_envelope()?;
            return Ok(Item::End {
                checksum: ChecksumStatus::Absent,
                crc64: 0,
            });
        }
        let computed = self.src.finish_crc();
        let at = self.src.offset();
        let stored = u64::from_le_bytes(self.src.array("the checksum trailer")?);
        self.src.finish_envelope()?;
        if stored == 0 {
            return Ok(Item::End {
                checksum: ChecksumStatus::Disabled,
                crc64: computed,
            });
        }
        if self.opts.verify_checksum && stored != computed {
            return Err(RdbError::new(
                RdbErrorKind::ChecksumMismatch { stored, computed },
                at,
            ));
        }
        Ok(Item::End {
            checksum: ChecksumStatus::Valid,
            crc64: stored,
        })
    }

    // ---- primitive fields -------------------------------------------------------------------

    /// Reads a length; `Err` if it is a special string encoding.
    fn length(&mut self, what: &'static str) -> Result<u64> {
        let at = self.src.offset();
        match self.length_or_encoding(what)? {
            (n, false) => Ok(n),
            (enc, true) => Err(RdbError::corrupt(
                format!("{what} has string encoding {enc} where a length belongs"),
                at,
            )),
        }
    }

    /// Reads a length field: `(value, false)`, or `(encoding, true)` for a special string encoding.
    fn length_or_encoding(&mut self, what: &'static str) -> Result<(u64, bool)> {
        let b = self.src.u8(what)?;
        Ok(match b >> 6 {
            0 => ((b & 0x3F) as u64, false),
            1 => {
                let n = self.src.u8(what)?;
                ((((b & 0x3F) as u64) << 8) | n as u64, false)
            }
            2 => match b {
                0x80 => (u32::from_be_bytes(self.src.array(what)?) as u64, false),
                0x81 => (u64::from_be_bytes(self.src.array(what)?), false),
                _ => {
                    return Err(RdbError::corrupt(
                        format!("{what} has unknown length prefix {b:#04x}"),
                        self.src.offset() - 1,
                    ))
                }
            },
            _ => ((b & 0x3F) as u64, true),
        })
    }

    fn checked_len(&self, len: u64, what: &'static str, at: u64) -> Result<u64> {
        if len > MAX_STRING {
            return Err(RdbError::new(
                RdbErrorKind::ImplausibleLength { what, len },
                at,
            ));
        }
        Ok(len)
    }

    /// Reads a string in any of its encodings (plain, integer, LZF).
    fn string(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let at = self.src.offset();
        match self.length_or_encoding(what)? {
            (len, false) => {
                let len = self.checked_len(len, what, at)?;
                self.src.bytes(len, what)
            }
            (0, true) => Ok((self.src.u8(what)? as i8).to_string().into_bytes()),
            (1, true) => Ok(i16::from_le_bytes(self.src.array(what)?)
                .to_string()
                .into_bytes()),
            (2, true) => Ok(i32::from_le_bytes(self.src.array(what)?)
                .to_string()
                .into_bytes()),
            (3, true) => {
                let clen = self.length(what)?;
                let len = self.length(what)?;
                let clen = self.checked_len(clen, what, at)?;
                let len = self.checked_len(len, what, at)?;
                let compressed = self.src.bytes(clen, what)?;
                crate::lzf::decompress(&compressed, len as usize)
                    .map_err(|m| RdbError::corrupt(format!("{what}: {m}"), at))
            }
            (enc, true) => Err(RdbError::corrupt(
                format!("{what} has unknown string encoding {enc}"),
                at,
            )),
        }
    }

    /// Consumes a string without decoding it.
    fn skip_string(&mut self, what: &'static str) -> Result<()> {
        let at = self.src.offset();
        match self.length_or_encoding(what)? {
            (len, false) => {
                let len = self.checked_len(len, what, at)?;
                self.src.skip(len, what)
            }
            (0, true) => self.src.skip(1, what),
            (1, true) => self.src.skip(2, what),
            (2, true) => self.src.skip(4, what),
            (3, true) => {
                let clen = self.length(what)?;
                let _len = self.length(what)?;
                let clen = self.checked_len(clen, what, at)?;
                self.src.skip(clen, what)
            }
            (enc, true) => Err(RdbError::corrupt(
                format!("{what} has unknown string encoding {enc}"),
                at,
            )),
        }
    }

    fn ms_time(&mut self, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.src.array(what)?))
    }

    fn text_double(&mut self, what: &'static str) -> Result<f64> {
        let at = self.src.offset();
        let n = self.src.u8(what)?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let b = self.src.bytes(n as u64, what)?;
                crate::text::parse_redis_double(&b).ok_or_else(|| {
                    RdbError::corrupt(
                        format!("{what} {:?} is not a number", String::from_utf8_lossy(&b)),
                        at,
                    )
                })
            }
        }
    }

    fn stream_id_raw(&mut self, what: &'static str) -> Result<StreamId> {
        Ok(StreamId::from_be_bytes(&self.src.array::<16>(what)?))
    }

    fn stream_id_lens(&mut self, what: &'static str) -> Result<StreamId> {
        let ms = self.length(what)?;
        let seq = self.length(what)?;
        Ok(StreamId { ms, seq })
    }

    /// Walks a module value's self-describing opcode sequence up to its EOF opcode.
    fn walk_module_body(&mut self) -> Result<()> {
        loop {
            let at = self.src.offset();
            match self.length("a module value opcode")? {
                mop::EOF => return Ok(()),
                mop::SINT | mop::UINT => {
                    self.length("a module integer")?;
                }
                mop::FLOAT => self.src.skip(4, "a module float")?,
                mop::DOUBLE => self.src.skip(8, "a module double")?,
                mop::STRING => self.skip_string("a module string")?,
                other => {
                    return Err(RdbError::corrupt(
                        format!("module value has unknown opcode {other}"),
                        at,
                    ));
                }
            }
        }
    }

    // ---- the records added by Redis 8.6-8.10 and Valkey 9 ---------------------------------

    /// Valkey `SLOT_IMPORT` (243): job name, then (start, end) slot pairs.
    fn slot_import(&mut self) -> Result<Item> {
        let name = self.string("a SLOT_IMPORT job name")?;
        let n = self.length("a SLOT_IMPORT range count")?;
        let mut ranges = Vec::with_capacity(n.min(16384) as usize);
        for _ in 0..n {
            let a = self.length("a SLOT_IMPORT range start")?;
            let b = self.length("a SLOT_IMPORT range end")?;
            ranges.push((a, b));
        }
        Ok(Item::SlotImport { name, ranges })
    }

    /// Redis `KEY_META` (243): class count, then per class a 4-byte spec and a module-encoded
    /// value ending in the module EOF opcode. Kept for the next key.
    fn key_meta(&mut self, at: u64) -> Result<()> {
        const CHARSET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let n = self.length("a KEY_META class count")?;
        if n > 7 {
            return Err(RdbError::corrupt(
                format!("KEY_META lists {n} metadata classes, at most 7 exist"),
                at,
            ));
        }
        let mut classes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let spec = u32::from_le_bytes(self.src.array("a KEY_META class spec")?);
            let name: String = (0..4)
                .map(|i| CHARSET[((spec >> (26 - 6 * i)) & 63) as usize] as char)
                .collect();
            self.walk_module_body()?;
            classes.push(KeyMetaClass {
                name,
                version: ((spec >> 3) & 31) as u8,
                flags: (spec & 7) as u8,
            });
        }
        self.meta = classes;
        Ok(())
    }

    /// Redis `HASH_TEMPLATE` (242): id, field count, field names; kept in the registry.
    fn hash_template(&mut self, at: u64) -> Result<Item> {
        let id = self.length("a hash template id")?;
        let n = self.length("a hash template field count")?;
        let fields = self.template_names(n, at)?;
        if self.templates.insert(id, fields.clone()).is_some() {
            return Err(RdbError::corrupt(
                format!("hash template {id} is defined twice"),
                at,
            ));
        }
        Ok(Item::HashTemplate { id, fields })
    }

    /// `n` template field names as separate strings, checked for order.
    fn template_names(&mut self, n: u64, at: u64) -> Result<Vec<Vec<u8>>> {
        let mut fields = Vec::with_capacity(n.min(self.opts.chunk_elements as u64) as usize);
        for _ in 0..n {
            fields.push(self.string("a hash template field")?);
        }
        check_template_fields(&fields).map_err(|m| RdbError::corrupt(m, at))?;
        Ok(fields)
    }

    /// The field names of a self-contained template value (types 29, 31): a format selector,
    /// then one listpack of names (0) or a count and the names (1).
    fn inline_template_names(&mut self, at: u64) -> Result<Vec<Vec<u8>>> {
        match self.length("a hash template fields format")? {
            0 => {
                let lp = self.string("a hash template field listpack")?;
                let mut fields = Vec::new();
                compact::listpack_for_each(&lp, |e| {
                    fields.push(e.to_vec());
                    Ok(())
                })
                .map_err(|m| RdbError::corrupt(m, at))?;
                check_template_fields(&fields).map_err(|m| RdbError::corrupt(m, at))?;
                Ok(fields)
            }
            1 => {
                let n = self.length("a hash template field count")?;
                self.template_names(n, at)
            }
            f => Err(RdbError::corrupt(
                format!("hash template fields format is {f}, expected 0 (listpack) or 1 (raw)"),
                at,
            )),
        }
    }

    fn template(&self, id: u64, at: u64) -> Result<Vec<Vec<u8>>> {
        self.templates.get(&id).cloned().ok_or_else(|| {
            RdbError::corrupt(
                format!("hash refers to template {id}, which no HASH_TEMPLATE record defined"),
                at,
            )
        })
    }

    /// A template-encoded hash (types 29-32) as ordinary fields.
    fn template_hash(&mut self, ty: u8, at: u64) -> Result<Vec<HashField>> {
        let (names, values) = match ty {
            t::HASH_TMPL_LP_REF | t::HASH_TMPL_LP => {
                let names = if ty == t::HASH_TMPL_LP {
                    Some(self.inline_template_names(at)?)
                } else {
                    None
                };
                let lp_at = self.src.offset();
                let lp = self.string("a hash template value listpack")?;
                let mut elems: Vec<Elem> = Vec::new();
                compact::listpack_for_each(&lp, |e| {
                    elems.push(e);
                    Ok(())
                })
                .map_err(|m| RdbError::corrupt(m, lp_at))?;
                if elems.is_empty() {
                    return Err(RdbError::corrupt(
                        "hash template value listpack is empty",
                        lp_at,
                    ));
                }
                // Both forms lead with the template id (Redis refuses a type 29 whose first
                // entry is no integer, as for type 30).
                let id = elems.first().and_then(|e| e.as_int()).ok_or_else(|| {
                    RdbError::corrupt(
                        "hash template listpack does not start with an integer template id",
                        lp_at,
                    )
                })?;
                let names = match names {
                    Some(n) => n,
                    None => self.template(id as u64, lp_at)?,
                };
                // The values follow the template id (also present, and not needed, in type 29).
                let skip = 1;
                if elems.len() != names.len() + 1 {
                    return Err(RdbError::corrupt(
                        format!(
                            "hash template listpack holds {} values for {} fields",
                            elems.len().saturating_sub(1),
                            names.len()
                        ),
                        lp_at,
                    ));
                }
                let values = elems[skip..].iter().map(|e| e.to_vec()).collect();
                (names, values)
            }
            _ => {
                let names = if ty == t::HASH_TMPL_ARRAY {
                    self.inline_template_names(at)?
                } else {
                    let id = self.length("a hash template id")?;
                    self.template(id, at)?
                };
                let mut values = Vec::with_capacity(names.len());
                for _ in 0..names.len() {
                    values.push(self.string("a hash template value")?);
                }
                (names, values)
            }
        };
        Ok(names
            .into_iter()
            .zip(values)
            .map(|(field, value)| HashField {
                field,
                value,
                expire_at_ms: None,
            })
            .collect())
    }

    /// One array element (type 28): absolute index, tag, payload.
    fn array_elem(&mut self) -> Result<ArrayElem> {
        let at = self.src.offset();
        let index = self.length("an array index")?;
        let value = match self.length("an array element tag")? {
            0 | 3 => ArrayValue::Str(self.string("an array string")?),
            1 => ArrayValue::Int(i64::from_le_bytes(self.src.array("an array integer")?)),
            2 => ArrayValue::Float(f64::from_le_bytes(self.src.array("an array float")?)),
            tag => {
                return Err(RdbError::corrupt(
                    format!("array element has unknown tag {tag}"),
                    at,
                ))
            }
        };
        Ok(ArrayElem { index, value })
    }

    /// The IDMP trailer of stream types 26/27.
    fn stream_idmp(&mut self) -> Result<StreamIdmp> {
        let duration_s = self.length("an IDMP duration")?;
        let max_entries = self.length("an IDMP max entries")?;
        let n = self.length("an IDMP producer count")?;
        let cap = self.opts.chunk_elements as u64;
        let mut producers = Vec::with_capacity(n.min(cap) as usize);
        for _ in 0..n {
            let pid = self.string("an IDMP producer id")?;
            let m = self.length("an IDMP iid count")?;
            let mut iids = Vec::with_capacity(m.min(cap) as usize);
            for _ in 0..m {
                let iid = self.string("an IDMP iid")?;
                let id = self.stream_id_lens("an IDMP stream id")?;
                iids.push((iid, id));
            }
            producers.push(IdmpProducer { pid, iids });
        }
        let iids_added = self.length("an IDMP iids-added count")?;
        let iids_duplicates = self.length("an IDMP iids-duplicates count")?;
        Ok(StreamIdmp {
            duration_s,
            max_entries,
            producers,
            iids_added,
            iids_duplicates,
        })
    }

    /// Valkey `UPDATE` (242): a raw RESP multi-bulk command, no RDB length prefix.
    fn update_command(&mut self, at: u64) -> Result<Item> {
        let argc = self.resp_line(b'*', at)?;
        let mut args = Vec::with_capacity(argc.min(1024) as usize);
        for _ in 0..argc {
            let len = self.resp_line(b'$', at)?;
            let len = self.checked_len(len, "an UPDATE argument", at)?;
            args.push(self.src.bytes(len, "an UPDATE argument")?);
            let crlf: [u8; 2] = self.src.array("an UPDATE argument's CRLF")?;
            if &crlf != b"\r\n" {
                return Err(RdbError::corrupt(
                    "UPDATE argument is not followed by CRLF",
                    at,
                ));
            }
        }
        Ok(Item::Update(args))
    }

    /// `<prefix><digits>\r\n` of a RESP header.
    fn resp_line(&mut self, prefix: u8, at: u64) -> Result<u64> {
        if self.src.u8("an UPDATE command")? != prefix {
            return Err(RdbError::corrupt(
                format!(
                    "UPDATE command does not have its '{}' header",
                    prefix as char
                ),
                at,
            ));
        }
        let mut n: u64 = 0;
        for _ in 0..21 {
            match self.src.u8("an UPDATE command")? {
                b'\r' => {
                    return if self.src.u8("an UPDATE command")? == b'\n' {
                        Ok(n)
                    } else {
                        Err(RdbError::corrupt(
                            "UPDATE header line does not end in CRLF",
                            at,
                        ))
                    }
                }
                d @ b'0'..=b'9' => {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add((d - b'0') as u64))
                        .ok_or_else(|| RdbError::corrupt("UPDATE header number overflows", at))?
                }
                _ => return Err(RdbError::corrupt("UPDATE header is not a number", at)),
            }
        }
        Err(RdbError::corrupt("UPDATE header line is too long", at))
    }

    // ---- consuming a value -----------------------------------------------------------------

    /// The key whose value is pending, if any.
    pub fn current_key(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|c| c.key.as_slice())
    }

    /// Skips the rest of the current value.
    pub fn skip_value(&mut self) -> Result<()> {
        while self.skip_chunk()? {}
        Ok(())
    }

    /// Reads the current value as the raw bytes of its RDB encoding (what follows the type byte
    /// in a DUMP payload), checking its structure on the way but decoding no element.
    pub fn read_raw_value(&mut self) -> Result<Vec<u8>> {
        match &self.current {
            Some(c) if matches!(c.state, ValueState::Start) => {}
            Some(_) => {
                return Err(RdbError::corrupt(
                    "read_raw_value after part of the value was decoded",
                    self.src.offset(),
                ))
            }
            None => {
                return Err(RdbError::corrupt(
                    "read_raw_value with no key pending",
                    self.src.offset(),
                ))
            }
        }
        self.src.start_capture();
        let r = self.skip_value();
        let raw = self.src.finish_capture();
        r.map(|_| raw)
    }

    /// Starts recording the raw bytes of the current value while it is decoded with
    /// `next_chunk`; `finish_value_capture` returns them once the value is complete.
    pub fn start_value_capture(&mut self) {
        self.src.start_capture();
    }

    pub fn finish_value_capture(&mut self) -> Vec<u8> {
        self.src.finish_capture()
    }

    /// Raw bytes recorded so far by `start_value_capture`.
    pub fn value_capture_len(&mut self) -> usize {
        self.src.captured_len()
    }

    /// Steps over a value that is one string (a compact encoding), with its fixed prefix.
    fn skip_blob(&mut self, ty: u8) -> Result<()> {
        let prefix = self.blob_prefix(ty).unwrap_or(0);
        if prefix > 0 {
            self.src.skip(prefix as u64, "a hash minimum expiry")?;
        }
        self.skip_string("an encoded value")
    }

    /// `Some(prefix bytes)` for types whose whole value is one string after a fixed prefix.
    fn blob_prefix(&self, ty: u8) -> Option<u8> {
        let h = self.header?;
        match t::info(ty, h)?.layout {
            Layout::Blob { prefix } => Some(prefix),
            Layout::Structured => None,
        }
    }

    fn nonempty_count(&mut self, what: &'static str) -> Result<u64> {
        let at = self.src.offset();
        let n = self.length(what)?;
        if n == 0 {
            return Err(empty_collection(at));
        }
        Ok(n)
    }

    /// Steps over one chunk's worth of the current value, as `next_chunk` would cut it, without
    /// decoding the elements where the encoding allows (plain collections, quicklist nodes,
    /// compact blobs). Returns false once the value is complete. Mixing it with `next_chunk`
    /// on one value is allowed: a raw capture can be skipped through until it grows too big,
    /// and the rest decoded.
    pub fn skip_chunk(&mut self) -> Result<bool> {
        self.skipping = true;
        let r = self.next_chunk();
        self.skipping = false;
        r.map(|c| c.is_some())
    }

    /// The next decoded piece of the current value, or `None` when it is complete.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let r = self.next_chunk_inner();
        match r {
            Ok(Some(c)) => Ok(Some(c)),
            Ok(None) => {
                self.current = None;
                Ok(None)
            }
            Err(e) => {
                let e = self.fail_in_key(e);
                self.current = None;
                // After a format error the stream position is meaningless: stop for good.
                self.finished = true;
                Err(e)
            }
        }
    }

    fn next_chunk_inner(&mut self) -> Result<Option<Chunk>> {
        let Some(cur) = &self.current else {
            return Ok(None);
        };
        let (ty, state) = (cur.rdb_type, cur.state);
        let magic = self.header.map(|h| h.magic).unwrap_or(Magic::Redis);
        let at = self.src.offset();
        let chunk = match state {
            ValueState::Done => return Ok(None),
            ValueState::Start if self.skipping && self.blob_prefix(ty).is_some() => {
                // check_blob knows the Redis numbering of the types 22 and up.
                if self.opts.verify_values && ty != t::STRING && (magic == Magic::Redis || ty < 22)
                {
                    let prefix = self.blob_prefix(ty).unwrap_or(0);
                    if prefix > 0 {
                        self.src.skip(prefix as u64, "a hash minimum expiry")?;
                    }
                    let blob_at = self.src.offset();
                    let blob = self.string("an encoded value")?;
                    check_blob(ty, &blob).map_err(|m| RdbError::corrupt(m, blob_at))?;
                } else {
                    self.skip_blob(ty)?;
                }
                self.set_state(ValueState::Done);
                Some(Chunk::Items(Vec::new()))
            }
            ValueState::Start => match ty {
                t::VALKEY_PATH_HASH if magic == Magic::Valkey => {
                    let n = self.nonempty_count("path hash path count")?;
                    self.set_state(ValueState::PathHash { remaining: n });
                    return self.next_chunk_inner();
                }
                t::STRING => {
                    let body = self.string_header("a string value")?;
                    self.set_state(ValueState::String(body));
                    return self.next_chunk_inner();
                }
                t::LIST | t::SET | t::ZSET | t::ZSET_2 | t::HASH => {
                    let kind = match ty {
                        t::LIST => PlainKind::List,
                        t::SET => PlainKind::Set,
                        t::ZSET => PlainKind::ZsetText,
                        t::ZSET_2 => PlainKind::ZsetBinary,
                        _ => PlainKind::Hash,
                    };
                    let n = self.nonempty_count("collection length")?;
                    self.set_state(ValueState::Plain { remaining: n, kind });
                    return self.next_chunk_inner();
                }
                t::HASH_METADATA_PRE_GA if magic == Magic::Valkey => {
                    let n = self.nonempty_count("hash length")?;
                    self.set_state(ValueState::Plain {
                        remaining: n,
                        kind: PlainKind::ValkeyHash2,
                    });
                    return self.next_chunk_inner();
                }
                t::HASH_METADATA | t::HASH_METADATA_PRE_GA => {
                    let min_expire = if ty == t::HASH_METADATA {
                        Some(self.ms_time("a hash minimum expiry")?)
                    } else {
                        None
                    };
                    let n = self.nonempty_count("hash length")?;
                    self.set_state(ValueState::Plain {
                        remaining: n,
                        kind: PlainKind::HashTtl { min_expire },
                    });
                    return self.next_chunk_inner();
                }
                t::LIST_ZIPLIST | t::SET_INTSET | t::SET_LISTPACK => {
                    let blob_at = self.src.offset();
                    let blob = self.string("an encoded collection")?;
                    let mut items = Vec::new();
                    let walked = match ty {
                        t::LIST_ZIPLIST => compact::ziplist_for_each(&blob, |e| {
                            items.push(e.to_vec());
                            Ok(())
                        }),
                        t::SET_INTSET => compact::intset_for_each(&blob, |v| {
                            items.push(v.to_string().into_bytes());
                            Ok(())
                        }),
                        _ => {
                            let mut check = TupleCheck::new(Tuples::Unique);
                            compact::listpack_for_each(&blob, |e| {
                                check.push(e)?;
                                items.push(e.to_vec());
                                Ok(())
                            })
                        }
                    };
                    walked.map_err(|m| RdbError::corrupt(m, blob_at))?;
                    self.set_state(ValueState::Done);
                    Some(Chunk::Items(items))
                }
                t::ZSET_ZIPLIST | t::ZSET_LISTPACK => {
                    let blob_at = self.src.offset();
                    let blob = self.string("an encoded zset")?;
                    let mut flat: Vec<Elem> = Vec::new();
                    let container = if ty == t::ZSET_ZIPLIST {
                        Container::Ziplist
                    } else {
                        Container::Listpack
                    };
                    let mut pairs = Vec::new();
                    let mut check = TupleCheck::new(Tuples::Scored);
                    compact::for_each(container, &blob, |e| {
                        check.push(e)?;
                        flat.push(e);
                        if flat.len() == 2 {
                            let score = flat[1].as_score().ok_or("zset score is not a number")?;
                            pairs.push((flat[0].to_vec(), score));
                            flat.clear();
                        }
                        Ok(())
                    })
                    .map_err(|m| RdbError::corrupt(m, blob_at))?;
                    if !flat.is_empty() {
                        return Err(RdbError::corrupt(
                            "encoded zset has a member without a score",
                            at,
                        ));
                    }
                    self.set_state(ValueState::Done);
                    Some(Chunk::Scored(pairs))
                }
                t::HASH_ZIPMAP
                | t::HASH_ZIPLIST
                | t::HASH_LISTPACK
                | t::HASH_LISTPACK_EX_PRE_GA
                | t::HASH_LISTPACK_EX => {
                    if ty == t::HASH_LISTPACK_EX {
                        self.ms_time("a hash minimum expiry")?;
                    }
                    let blob_at = self.src.offset();
                    let blob = self.string("an encoded hash")?;
                    let mut fields = Vec::new();
                    let walked = if ty == t::HASH_ZIPMAP {
                        let mut check = TupleCheck::new(Tuples::Unique);
                        compact::zipmap_for_each(&blob, |f, v| {
                            check.push(Elem::Bytes(f))?;
                            fields.push(HashField {
                                field: f.to_vec(),
                                value: v.to_vec(),
                                expire_at_ms: None,
                            });
                            Ok(())
                        })
                        .map(|_| ())
                    } else {
                        let tuple = if ty == t::HASH_ZIPLIST || ty == t::HASH_LISTPACK {
                            2
                        } else {
                            3
                        };
                        let mut check = TupleCheck::new(if tuple == 2 {
                            Tuples::Pairs
                        } else {
                            Tuples::FieldValueTtl
                        });
                        let mut pending: Vec<Elem> = Vec::with_capacity(3);
                        let container = if ty == t::HASH_ZIPLIST {
                            Container::Ziplist
                        } else {
                            Container::Listpack
                        };
                        compact::for_each(container, &blob, |e| {
                            check.push(e)?;
                            pending.push(e);
                            if pending.len() == tuple {
                                let expire_at_ms = if tuple == 3 {
                                    match pending[2]
                                        .as_int()
                                        .ok_or("hash field TTL is not an integer")?
                                    {
                                        0 => None,
                                        ms => Some(ms),
                                    }
                                } else {
                                    None
                                };
                                fields.push(HashField {
                                    field: pending[0].to_vec(),
                                    value: pending[1].to_vec(),
                                    expire_at_ms,
                                });
                                pending.clear();
                            }
                            Ok(())
                        })
                        .and_then(|_| {
                            if pending.is_empty() {
                                Ok(())
                            } else {
                                Err("encoded hash has a field without a value".into())
                            }
                        })
                    };
                    walked.map_err(|m| RdbError::corrupt(m, blob_at))?;
                    self.set_state(ValueState::Done);
                    Some(Chunk::Fields(fields))
                }
                t::LIST_QUICKLIST | t::LIST_QUICKLIST_2 => {
                    let n = self.nonempty_count("quicklist node count")?;
                    self.set_state(ValueState::Quicklist {
                        remaining: n,
                        v2: ty == t::LIST_QUICKLIST_2,
                    });
                    return self.next_chunk_inner();
                }
                t::STREAM_LISTPACKS_4 | t::STREAM_LISTPACKS_5 if magic == Magic::Redis => {
                    let version = if ty == t::STREAM_LISTPACKS_4 { 4 } else { 5 };
                    let n = self.length("stream listpack count")?;
                    self.set_state(ValueState::Stream {
                        version,
                        phase: StreamPhase::Nodes { remaining: n },
                    });
                    return self.next_chunk_inner();
                }
                t::ARRAY if magic == Magic::Redis => {
                    let count = self.nonempty_count("array element count")?;
                    let insert_idx = match self.length("an array insert-index flag")? {
                        0 => None,
                        1 => Some(self.length("an array insert index")?),
                        f => {
                            return Err(RdbError::corrupt(
                                format!("array insert-index flag is {f}, expected 0 or 1"),
                                at,
                            ))
                        }
                    };
                    self.set_state(ValueState::Array { remaining: count });
                    // Carries no element itself: not subject to the empty-chunk check below.
                    return Ok(Some(Chunk::ArrayHeader { count, insert_idx }));
                }
                t::HASH_TMPL_LP
                | t::HASH_TMPL_LP_REF
                | t::HASH_TMPL_ARRAY
                | t::HASH_TMPL_ARRAY_REF
                    if magic == Magic::Redis =>
                {
                    let fields = self.template_hash(ty, at)?;
                    self.set_state(ValueState::Done);
                    Some(Chunk::Fields(fields))
                }
                t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => {
                    let version = match ty {
                        t::STREAM_LISTPACKS => 1,
                        t::STREAM_LISTPACKS_2 => 2,
                        _ => 3,
                    };
                    let n = self.length("stream listpack count")?;
                    self.set_state(ValueState::Stream {
                        version,
                        phase: StreamPhase::Nodes { remaining: n },
                    });
                    return self.next_chunk_inner();
                }
                t::MODULE_2 => {
                    let module_id = self.length("a module id")?;
                    self.src.start_capture();
                    let walked = self.walk_module_body();
                    let raw = self.src.finish_capture();
                    walked?;
                    self.set_state(ValueState::Done);
                    Some(Chunk::Module {
                        module_id,
                        name: module_name_from_id(module_id),
                        raw,
                    })
                }
                t::MODULE_PRE_GA => return Err(RdbError::new(RdbErrorKind::ModulePreGa, at)),
                other => {
                    let version = self.header.map_or(0, |h| h.version);
                    return Err(RdbError::new(
                        RdbErrorKind::UnknownType {
                            rdb_type: other,
                            version,
                        },
                        at,
                    ));
                }
            },
            ValueState::Plain { remaining, kind } => {
                if remaining == 0 {
                    self.set_state(ValueState::Done);
                    return Ok(None);
                }
                let n = remaining.min(self.opts.chunk_elements as u64);
                let chunk = self.plain_chunk(kind, n as usize)?;
                self.set_state(ValueState::Plain {
                    remaining: remaining - n,
                    kind,
                });
                Some(chunk)
            }
            ValueState::Quicklist { remaining, v2 } => {
                if remaining == 0 {
                    self.set_state(ValueState::Done);
                    if !self.skipping {
                        self.require_elements(at)?;
                    }
                    return Ok(None);
                }
                if self.skipping {
                    let container = if v2 {
                        let container = self.length("a quicklist node container")?;
                        if container != 1 && container != 2 {
                            return Err(RdbError::corrupt(
                                format!("quicklist node container {container} is neither PLAIN (1) nor PACKED (2)"),
                                at,
                            ));
                        }
                        container
                    } else {
                        2
                    };
                    if self.opts.verify_values && container == 2 {
                        let node_at = self.src.offset();
                        let node = self.string("a quicklist node")?;
                        let c = if v2 {
                            Container::Listpack
                        } else {
                            Container::Ziplist
                        };
                        match compact::for_each(c, &node, |_| Ok(())) {
                            Ok(0) => {
                                return Err(RdbError::corrupt(
                                    "quicklist node holds no elements (Redis never writes one)",
                                    node_at,
                                ))
                            }
                            Ok(_) => {}
                            Err(m) => return Err(RdbError::corrupt(m, node_at)),
                        }
                    } else {
                        self.skip_string("a quicklist node")?;
                    }
                    self.set_state(ValueState::Quicklist {
                        remaining: remaining - 1,
                        v2,
                    });
                    // A skipped node holds elements (each is checked where it is decoded): count
                    // it, so a value that `next_chunk` finishes is not taken for an empty one.
                    if let Some(cur) = &mut self.current {
                        cur.elements += 1;
                    }
                    return Ok(Some(Chunk::Items(Vec::new())));
                }
                let mut items = Vec::new();
                let container = if v2 {
                    self.length("a quicklist node container")?
                } else {
                    2
                };
                let node_at = self.src.offset();
                let node = self.string("a quicklist node")?;
                match (v2, container) {
                    (_, 1) if v2 => items.push(node),
                    (true, 2) => {
                        compact::listpack_for_each(&node, |e| {
                            items.push(e.to_vec());
                            Ok(())
                        })
                        .map_err(|m| RdbError::corrupt(m, node_at))?;
                    }
                    (false, _) => {
                        compact::ziplist_for_each(&node, |e| {
                            items.push(e.to_vec());
                            Ok(())
                        })
                        .map_err(|m| RdbError::corrupt(m, node_at))?;
                    }
                    (true, c) => {
                        return Err(RdbError::corrupt(
                            format!(
                                "quicklist node container {c} is neither PLAIN (1) nor PACKED (2)"
                            ),
                            at,
                        ))
                    }
                }
                if items.is_empty() {
                    return Err(RdbError::corrupt(
                        "quicklist node holds no elements (Redis never writes one)",
                        at,
                    ));
                }
                self.set_state(ValueState::Quicklist {
                    remaining: remaining - 1,
                    v2,
                });
                Some(Chunk::Items(items))
            }
            ValueState::Stream { version, phase } => return self.stream_step(version, phase, at),
            ValueState::String(body) => return self.string_step(body, at),
            ValueState::Array { remaining: 0 } | ValueState::PathHash { remaining: 0 } => {
                self.set_state(ValueState::Done);
                return Ok(None);
            }
            ValueState::Array { remaining } => {
                let n = remaining.min(self.opts.chunk_elements as u64);
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.array_elem()?);
                }
                self.set_state(ValueState::Array {
                    remaining: remaining - n,
                });
                Some(Chunk::ArrayElems(v))
            }
            ValueState::PathHash { remaining } => {
                let path = self.string("a path hash path")?;
                let n = self.nonempty_count("path hash field count")?;
                let mut fields =
                    Vec::with_capacity(n.min(self.opts.chunk_elements as u64) as usize);
                for _ in 0..n {
                    let f = self.string("a path hash field")?;
                    let v = self.string("a path hash value")?;
                    fields.push((f, v));
                }
                self.set_state(ValueState::PathHash {
                    remaining: remaining - 1,
                });
                Some(Chunk::PathFields { path, fields })
            }
        };
        if let Some(c) = &chunk {
            let n = c.elements() as u64;
            if let Some(cur) = &mut self.current {
                cur.elements += n;
            }
            if n == 0 && !self.skipping {
                // Only a compact blob can arrive empty here; counted forms were checked already.
                return Err(empty_collection(at));
            }
        }
        Ok(chunk)
    }

    /// Reads a string's length header, and the whole of an integer encoding.
    fn string_header(&mut self, what: &'static str) -> Result<StringBody> {
        let at = self.src.offset();
        Ok(match self.length_or_encoding(what)? {
            (len, false) => {
                let len = self.checked_len(len, what, at)?;
                StringBody::Plain {
                    len,
                    offset: 0,
                    remaining: len,
                }
            }
            (0, true) => StringBody::Int(self.src.u8(what)? as i8 as i64),
            (1, true) => StringBody::Int(i16::from_le_bytes(self.src.array(what)?) as i64),
            (2, true) => StringBody::Int(i32::from_le_bytes(self.src.array(what)?) as i64),
            (3, true) => {
                let clen = self.length(what)?;
                let len = self.length(what)?;
                let compressed = self.checked_len(clen, what, at)?;
                let len = self.checked_len(len, what, at)?;
                StringBody::Lzf {
                    len,
                    offset: 0,
                    compressed,
                }
            }
            (enc, true) => {
                return Err(RdbError::corrupt(
                    format!("{what} has unknown string encoding {enc}"),
                    at,
                ))
            }
        })
    }

    /// For a string value none of which was consumed yet: reads its length header and returns
    /// the length of the encoded body that follows (the raw bytes, or the LZF blob), so a caller
    /// can choose how to consume it before reading it. `None` for any other value.
    pub fn string_value_size(&mut self) -> Result<Option<u64>> {
        match &self.current {
            Some(c) if c.rdb_type == t::STRING && matches!(c.state, ValueState::Start) => {}
            _ => return Ok(None),
        }
        let body = match self.string_header("a string value") {
            Ok(b) => b,
            Err(e) => {
                let e = self.fail_in_key(e);
                self.current = None;
                self.finished = true;
                return Err(e);
            }
        };
        self.set_state(ValueState::String(body));
        Ok(Some(match body {
            StringBody::Int(_) => 0,
            StringBody::Plain { remaining, .. } => remaining,
            StringBody::Lzf { compressed, .. } => compressed,
        }))
    }

    /// The next piece of a string value: the whole value when it is short, else a part.
    fn string_step(&mut self, body: StringBody, at: u64) -> Result<Option<Chunk>> {
        let part = self.opts.string_part_bytes.max(1) as u64;
        let what = "a string value";
        if self.skipping {
            match body {
                StringBody::Int(_) => {}
                StringBody::Plain { remaining, .. } => self.src.skip(remaining, what)?,
                StringBody::Lzf { compressed, .. } => self.src.skip(compressed, what)?,
            }
            self.lzf = None;
            self.set_state(ValueState::Done);
            return Ok(Some(Chunk::Items(Vec::new())));
        }
        match body {
            StringBody::Int(v) => {
                self.set_state(ValueState::Done);
                Ok(Some(Chunk::String(v.to_string().into_bytes())))
            }
            StringBody::Plain {
                len,
                offset: 0,
                remaining,
            } if len <= part => {
                let s = self.src.bytes(remaining, what)?;
                self.set_state(ValueState::Done);
                Ok(Some(Chunk::String(s)))
            }
            StringBody::Plain { remaining: 0, .. } => {
                self.set_state(ValueState::Done);
                Ok(None)
            }
            StringBody::Plain {
                len,
                offset,
                remaining,
            } => {
                let data = self.src.bytes(remaining.min(part), what)?;
                let n = data.len() as u64;
                self.set_state(ValueState::String(StringBody::Plain {
                    len,
                    offset: offset + n,
                    remaining: remaining - n,
                }));
                Ok(Some(Chunk::StringPart { offset, len, data }))
            }
            StringBody::Lzf {
                len,
                offset: 0,
                compressed,
            } if len <= part && compressed <= part && self.lzf.is_none() => {
                let blob = self.src.bytes(compressed, what)?;
                let s = crate::lzf::decompress(&blob, len as usize)
                    .map_err(|m| RdbError::corrupt(format!("{what}: {m}"), at))?;
                self.set_state(ValueState::Done);
                Ok(Some(Chunk::String(s)))
            }
            StringBody::Lzf {
                len,
                offset,
                compressed,
            } => {
                if offset == 0 && self.lzf.is_none() {
                    let d = crate::lzf::Decoder::new(compressed, len)
                        .map_err(|m| RdbError::corrupt(format!("{what}: {m}"), at))?;
                    self.lzf = Some(Box::new(d));
                }
                let Some(mut d) = self.lzf.take() else {
                    return Ok(None);
                };
                let mut left = compressed;
                let mut scratch = [0u8; LZF_FEED_BYTES];
                while left > 0 && (d.ready() as u64) < part {
                    let n = left.min(LZF_FEED_BYTES as u64) as usize;
                    let feed_at = self.src.offset();
                    self.src.exact(&mut scratch[..n], what)?;
                    d.feed(&scratch[..n])
                        .map_err(|m| RdbError::corrupt(format!("{what}: {m}"), feed_at))?;
                    left -= n as u64;
                }
                let data = d.take();
                if left == 0 {
                    d.finish().map_err(|m| {
                        RdbError::corrupt(format!("{what}: {m}"), self.src.offset())
                    })?;
                    if offset == 0 && data.len() as u64 == len && len <= part {
                        // A short value after all: it goes whole.
                        self.set_state(ValueState::Done);
                        return Ok(Some(Chunk::String(data)));
                    }
                    self.set_state(ValueState::String(StringBody::Plain {
                        len,
                        offset: offset + data.len() as u64,
                        remaining: 0,
                    }));
                } else {
                    self.lzf = Some(d);
                    self.set_state(ValueState::String(StringBody::Lzf {
                        len,
                        offset: offset + data.len() as u64,
                        compressed: left,
                    }));
                }
                if data.is_empty() {
                    return self.next_chunk_inner();
                }
                Ok(Some(Chunk::StringPart { offset, len, data }))
            }
        }
    }

    fn require_elements(&self, at: u64) -> Result<()> {
        match &self.current {
            Some(c) if c.elements == 0 => Err(empty_collection(at)),
            _ => Ok(()),
        }
    }

    fn set_state(&mut self, s: ValueState) {
        if let Some(cur) = &mut self.current {
            cur.state = s;
        }
    }

    fn plain_chunk(&mut self, kind: PlainKind, n: usize) -> Result<Chunk> {
        if self.skipping {
            for _ in 0..n {
                match kind {
                    PlainKind::List | PlainKind::Set => self.skip_string("a collection element")?,
                    PlainKind::ZsetText => {
                        self.skip_string("a zset member")?;
                        let len = self.src.u8("a zset score")?;
                        if len < 253 {
                            self.src.skip(len as u64, "a zset score")?;
                        }
                    }
                    PlainKind::ZsetBinary => {
                        self.skip_string("a zset member")?;
                        self.src.skip(8, "a zset score")?;
                    }
                    PlainKind::Hash => {
                        self.skip_string("a hash field")?;
                        self.skip_string("a hash value")?;
                    }
                    PlainKind::HashTtl { .. } => {
                        self.length("a hash field TTL")?;
                        self.skip_string("a hash field")?;
                        self.skip_string("a hash value")?;
                    }
                    PlainKind::ValkeyHash2 => {
                        self.skip_string("a hash field")?;
                        self.skip_string("a hash value")?;
                        self.src.skip(8, "a hash field expiry")?;
                    }
                }
            }
            return Ok(Chunk::Items(Vec::new()));
        }
        Ok(match kind {
            PlainKind::List | PlainKind::Set => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string("a collection element")?);
                }
                Chunk::Items(v)
            }
            PlainKind::ZsetText | PlainKind::ZsetBinary => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = self.string("a zset member")?;
                    let s = if matches!(kind, PlainKind::ZsetText) {
                        self.text_double("a zset score")?
                    } else {
                        f64::from_le_bytes(self.src.array("a zset score")?)
                    };
                    v.push((m, s));
                }
                Chunk::Scored(v)
            }
            PlainKind::Hash => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let field = self.string("a hash field")?;
                    let value = self.string("a hash value")?;
                    v.push(HashField {
                        field,
                        value,
                        expire_at_ms: None,
                    });
                }
                Chunk::Fields(v)
            }
            PlainKind::HashTtl { min_expire } => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let ttl = self.length("a hash field TTL")?;
                    let expire_at_ms = match (ttl, min_expire) {
                        (0, _) => None,
                        (ttl, Some(min)) => Some(min.wrapping_add(ttl as i64).wrapping_sub(1)),
                        (ttl, None) => Some(ttl as i64),
                    };
                    let field = self.string("a hash field")?;
                    let value = self.string("a hash value")?;
                    v.push(HashField {
                        field,
                        value,
                        expire_at_ms,
                    });
                }
                Chunk::Fields(v)
            }
            PlainKind::ValkeyHash2 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let field = self.string("a hash field")?;
                    let value = self.string("a hash value")?;
                    let ttl = self.ms_time("a hash field expiry")?;
                    v.push(HashField {
                        field,
                        value,
                        expire_at_ms: (ttl != -1).then_some(ttl),
                    });
                }
                Chunk::Fields(v)
            }
        })
    }

    fn stream_step(&mut self, version: u8, phase: StreamPhase, at: u64) -> Result<Option<Chunk>> {
        let next = |p| ValueState::Stream { version, phase: p };
        match phase {
            StreamPhase::Nodes { remaining: 0 } => {
                self.set_state(next(StreamPhase::Meta));
                self.next_chunk_inner()
            }
            StreamPhase::Nodes { remaining } => {
                let node_key = self.string("a stream node id")?;
                let master: [u8; 16] = node_key.as_slice().try_into().map_err(|_| {
                    RdbError::corrupt(
                        format!("stream node id has {} bytes, expected 16", node_key.len()),
                        at,
                    )
                })?;
                let master = StreamId::from_be_bytes(&master);
                let lp_at = self.src.offset();
                let lp = self.string("a stream listpack")?;
                let entries =
                    decode_stream_listpack(&lp, master).map_err(|m| RdbError::corrupt(m, lp_at))?;
                self.set_state(next(StreamPhase::Nodes {
                    remaining: remaining - 1,
                }));
                if let Some(cur) = &mut self.current {
                    cur.elements += entries.len() as u64;
                }
                Ok(Some(Chunk::StreamEntries(entries)))
            }
            StreamPhase::Meta => {
                let length = self.length("a stream length")?;
                let last_id = self.stream_id_lens("a stream last id")?;
                let (first_id, max_deleted_id, entries_added) = if version >= 2 {
                    let first = self.stream_id_lens("a stream first id")?;
                    let maxdel = self.stream_id_lens("a stream max deleted id")?;
                    let added = self.length("a stream entries-added count")?;
                    (Some(first), Some(maxdel), Some(added))
                } else {
                    (None, None, None)
                };
                let groups = self.length("a stream group count")?;
                self.set_state(next(StreamPhase::Groups { remaining: groups }));
                Ok(Some(Chunk::StreamMeta(StreamMeta {
                    length,
                    last_id,
                    first_id,
                    max_deleted_id,
                    entries_added,
                    groups,
                })))
            }
            StreamPhase::Groups { remaining: 0 } if version >= 4 => {
                self.set_state(next(StreamPhase::Idmp));
                self.next_chunk_inner()
            }
            StreamPhase::Groups { remaining: 0 } => {
                self.set_state(ValueState::Done);
                Ok(None)
            }
            StreamPhase::Idmp => {
                let idmp = self.stream_idmp()?;
                self.set_state(ValueState::Done);
                Ok(Some(Chunk::StreamIdmp(idmp)))
            }
            StreamPhase::Nacks { groups_left } => {
                let n = self.length("a consumer group NACK count")?;
                let mut ids = Vec::with_capacity(n.min(self.opts.chunk_elements as u64) as usize);
                for _ in 0..n {
                    ids.push(self.stream_id_raw("a NACKed id")?);
                }
                self.set_state(next(StreamPhase::Groups {
                    remaining: groups_left,
                }));
                if ids.is_empty() {
                    self.next_chunk_inner()
                } else {
                    Ok(Some(Chunk::StreamNacked(ids)))
                }
            }
            StreamPhase::Groups { remaining } => {
                let name = self.string("a consumer group name")?;
                let last_id = self.stream_id_lens("a consumer group last id")?;
                let entries_read = if version >= 2 {
                    // Saved from a signed counter: -1 (unknown) arrives as the all-ones 64-bit length.
                    Some(self.length("a consumer group entries-read")? as i64)
                } else {
                    None
                };
                let pel = self.length("a consumer group PEL size")?;
                self.set_state(next(StreamPhase::Pel {
                    groups_left: remaining - 1,
                    remaining: pel,
                }));
                Ok(Some(Chunk::StreamGroup(StreamGroupHeader {
                    name,
                    last_id,
                    entries_read,
                })))
            }
            StreamPhase::Pel {
                groups_left,
                remaining: 0,
            } => {
                self.set_state(next(StreamPhase::ConsumerCount { groups_left }));
                self.next_chunk_inner()
            }
            StreamPhase::Pel {
                groups_left,
                remaining,
            } => {
                let n = remaining.min(self.opts.chunk_elements as u64);
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let id = self.stream_id_raw("a pending entry id")?;
                    let delivery_time_ms = self.ms_time("a pending entry delivery time")?;
                    let delivery_count = self.length("a pending entry delivery count")?;
                    v.push(PendingEntry {
                        id,
                        delivery_time_ms,
                        delivery_count,
                    });
                }
                self.set_state(next(StreamPhase::Pel {
                    groups_left,
                    remaining: remaining - n,
                }));
                Ok(Some(Chunk::StreamPending(v)))
            }
            StreamPhase::ConsumerCount { groups_left } => {
                let n = self.length("a consumer count")?;
                self.set_state(next(StreamPhase::Consumers {
                    groups_left,
                    remaining: n,
                }));
                self.next_chunk_inner()
            }
            StreamPhase::Consumers {
                groups_left,
                remaining: 0,
            } => {
                self.set_state(next(if version >= 5 {
                    StreamPhase::Nacks { groups_left }
                } else {
                    StreamPhase::Groups {
                        remaining: groups_left,
                    }
                }));
                self.next_chunk_inner()
            }
            StreamPhase::Consumers {
                groups_left,
                remaining,
            } => {
                let name = self.string("a consumer name")?;
                let seen_time_ms = self.ms_time("a consumer seen time")?;
                let active_time_ms = if version >= 3 {
                    Some(self.ms_time("a consumer active time")?)
                } else {
                    None
                };
                let n = self.length("a consumer PEL size")?;
                let mut pending =
                    Vec::with_capacity(n.min(self.opts.chunk_elements as u64) as usize);
                for _ in 0..n {
                    pending.push(self.stream_id_raw("a consumer pending id")?);
                }
                self.set_state(next(StreamPhase::Consumers {
                    groups_left,
                    remaining: remaining - 1,
                }));
                Ok(Some(Chunk::StreamConsumer(StreamConsumer {
                    name,
                    seen_time_ms,
                    active_time_ms,
                    pending,
                })))
            }
        }
    }
}

/// Template field names must be non-empty and strictly ascending, shorter names first, then
/// bytewise (so no duplicates): what Redis's loader checks.
fn check_template_fields(fields: &[Vec<u8>]) -> std::result::Result<(), String> {
    if fields.is_empty() {
        return Err("hash template has no fields".into());
    }
    for w in fields.windows(2) {
        if (w[0].len(), &w[0]) >= (w[1].len(), &w[1]) {
            return Err(format!(
                "hash template fields not strictly sorted: {} before {}",
                crate::text::quote_bytes(&w[0]),
                crate::text::quote_bytes(&w[1])
            ));
        }
    }
    Ok(())
}

/// Checks one compact-encoded value (a blob type's string, after any fixed prefix) with the rules
/// a decode applies, decoding nothing: its structure, its type's tuple rules, and that it holds
/// something.
fn check_blob(ty: u8, blob: &[u8]) -> std::result::Result<(), String> {
    let (container, rule) = match ty {
        t::SET_INTSET => {
            compact::intset_for_each(blob, |_| Ok(()))?;
            return Ok(());
        }
        t::HASH_ZIPMAP => {
            let mut check = TupleCheck::new(Tuples::Unique);
            let n = compact::zipmap_for_each(blob, |f, _| check.push(Elem::Bytes(f)))?;
            return nonempty(n);
        }
        t::LIST_ZIPLIST => (Container::Ziplist, Tuples::Any),
        t::ZSET_ZIPLIST => (Container::Ziplist, Tuples::Scored),
        t::HASH_ZIPLIST => (Container::Ziplist, Tuples::Pairs),
        t::SET_LISTPACK => (Container::Listpack, Tuples::Unique),
        t::ZSET_LISTPACK => (Container::Listpack, Tuples::Scored),
        t::HASH_LISTPACK => (Container::Listpack, Tuples::Pairs),
        t::HASH_LISTPACK_EX | t::HASH_LISTPACK_EX_PRE_GA => {
            (Container::Listpack, Tuples::FieldValueTtl)
        }
        _ => return Ok(()),
    };
    let mut check = TupleCheck::new(rule);
    let n = compact::for_each(container, blob, |e| check.push(e))?;
    check.finish()?;
    nonempty(n)
}

fn nonempty(n: usize) -> std::result::Result<(), String> {
    if n == 0 {
        return Err("empty collection (Redis never writes one; it skips such keys on load)".into());
    }
    Ok(())
}

fn empty_collection(at: u64) -> RdbError {
    RdbError::corrupt(
        "empty collection (Redis never writes one; it skips such keys on load)",
        at,
    )
}

/// Decodes the entries of one stream listpack node (the layout of Redis's t_stream.c: a master
/// entry with the node's common field names, then delta-encoded entries).
fn decode_stream_listpack(
    lp: &[u8],
    master: StreamId,
) -> std::result::Result<Vec<StreamEntry>, String> {
    let mut elems: Vec<Elem> = Vec::new();
    compact::listpack_for_each(lp, |e| {
        elems.push(e);
        Ok(())
    })?;
    let mut it = elems.into_iter();
    let mut int = |what: &str| -> std::result::Result<i64, String> {
        it.next()
            .ok_or_else(|| format!("stream listpack ends before its {what}"))?
            .as_int()
            .ok_or_else(|| format!("stream listpack {what} is not an integer"))
    };
    let live = int("entry count")?;
    let deleted = int("deleted count")?;
    let master_fields = int("master field count")?;
    drop(int);
    let master_fields =
        usize::try_from(master_fields).map_err(|_| "negative master field count".to_string())?;
    let mut names = Vec::with_capacity(master_fields.min(1024));
    for _ in 0..master_fields {
        names.push(
            it.next()
                .ok_or("stream listpack ends inside the master fields")?
                .to_vec(),
        );
    }
    let zero = it
        .next()
        .ok_or("stream listpack has no master terminator")?;
    if zero.as_int() != Some(0) {
        return Err("stream listpack master entry terminator is not 0".into());
    }
    let next_int =
        |it: &mut std::vec::IntoIter<Elem>, what: &str| -> std::result::Result<i64, String> {
            it.next()
                .ok_or_else(|| format!("stream entry ends before its {what}"))?
                .as_int()
                .ok_or_else(|| format!("stream entry {what} is not an integer"))
        };
    let mut entries = Vec::new();
    while it.len() > 0 {
        let flags = next_int(&mut it, "flags")?;
        let ms_diff = next_int(&mut it, "id")?;
        let seq_diff = next_int(&mut it, "id")?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms_diff as u64),
            seq: master.seq.wrapping_add(seq_diff as u64),
        };
        let mut fields = Vec::new();
        if flags & 2 != 0 {
            for name in &names {
                let v = it.next().ok_or("stream entry ends inside its values")?;
                fields.push((name.clone(), v.to_vec()));
            }
        } else {
            let n = next_int(&mut it, "field count")?;
            let n = usize::try_from(n).map_err(|_| "negative stream field count".to_string())?;
            for _ in 0..n {
                let f = it.next().ok_or("stream entry ends inside its fields")?;
                let v = it.next().ok_or("stream entry ends inside its values")?;
                fields.push((f.to_vec(), v.to_vec()));
            }
        }
        // lp-count: the entry's own element count, minus itself (as t_stream.c checks it).
        let own = if flags & 2 != 0 {
            names.len() + 3
        } else {
            2 * fields.len() + 4
        };
        let back = next_int(&mut it, "back-count")?;
        if back != own as i64 {
            return Err(format!(
                "stream entry {} says it has {back} elements, it has {own}",
                entries.len()
            ));
        }
        entries.push(StreamEntry {
            id,
            fields,
            deleted: flags & 1 != 0,
        });
    }
    // The node's counts cover every entry, deleted ones included (t_stream.c's deep check).
    if live.checked_add(deleted) != Some(entries.len() as i64) {
        return Err(format!(
            "stream listpack says it has {live} entries and {deleted} deleted ones, it holds {}",
            entries.len()
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_value_decodes_again_with_for_value() {
        // A list value, type 1: two elements "a" and "bc".
        let raw = [0x02, 0x01, b'a', 0x02, b'b', b'c'];
        let h = Header {
            magic: Magic::Redis,
            version: 10,
        };
        let mut p =
            RdbParser::for_value(&raw[..], h, t::LIST, b"k", ParserOptions::default()).unwrap();
        assert_eq!(
            p.next_chunk().unwrap(),
            Some(Chunk::Items(vec![b"a".to_vec(), b"bc".to_vec()]))
        );
        assert_eq!(p.next_chunk().unwrap(), None);
        let mut p =
            RdbParser::for_value(&raw[..3], h, t::LIST, b"k", ParserOptions::default()).unwrap();
        let e = p.next_chunk().unwrap_err();
        assert!(
            e.is_truncation() && e.key.as_deref() == Some(&b"k"[..]),
            "{e}"
        );
    }

    #[test]
    fn long_strings_arrive_in_parts() {
        let h = Header {
            magic: Magic::Redis,
            version: 10,
        };
        let opts = ParserOptions {
            string_part_bytes: 1000,
            ..ParserOptions::default()
        };
        let value: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8 + b'a').collect();
        let plain = {
            let mut r = vec![0x80];
            r.extend_from_slice(&(value.len() as u32).to_be_bytes());
            r.extend_from_slice(&value);
            r
        };
        let lzf = {
            let c = lzf::compress(&value).unwrap();
            let mut r = vec![0xC3, 0x80];
            r.extend_from_slice(&(c.len() as u32).to_be_bytes());
            r.push(0x80);
            r.extend_from_slice(&(value.len() as u32).to_be_bytes());
            r.extend_from_slice(&c);
            r
        };
        for raw in [&plain, &lzf] {
            let mut p = RdbParser::for_value(&raw[..], h, t::STRING, b"k", opts.clone()).unwrap();
            let mut got = Vec::new();
            while let Some(c) = p.next_chunk().unwrap() {
                let Chunk::StringPart { offset, len, data } = c else {
                    panic!("expected parts, got {c:?}")
                };
                assert_eq!((offset, len), (got.len() as u64, value.len() as u64));
                assert!(!data.is_empty() && data.len() < 1000 + 88 * LZF_FEED_BYTES);
                got.extend_from_slice(&data);
            }
            assert_eq!(got, value);
            // The size is known before the body is read; skipping then steps over the body.
            let mut p = RdbParser::for_value(&raw[..], h, t::STRING, b"k", opts.clone()).unwrap();
            let body = p.string_value_size().unwrap().unwrap();
            let header = if raw == &plain { 5 } else { 11 };
            assert_eq!(body, raw.len() as u64 - header);
            p.skip_value().unwrap();
            assert_eq!(p.offset(), raw.len() as u64);
            // Cut short: an error naming the key, never a short value.
            let mut p =
                RdbParser::for_value(&raw[..raw.len() - 3], h, t::STRING, b"k", opts.clone())
                    .unwrap();
            let e = loop {
                match p.next_chunk() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a truncated string decoded"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.key.as_deref(), Some(&b"k"[..]), "{e}");
        }
    }

    #[test]
    fn skipping_then_decoding_one_value() {
        // A plain list of 5 elements; chunks of 2: skip the first chunk, decode the rest.
        let raw = [
            0x05, 0x01, b'a', 0x01, b'b', 0x01, b'c', 0x01, b'd', 0x01, b'e',
        ];
        let h = Header {
            magic: Magic::Redis,
            version: 10,
        };
        let opts = ParserOptions {
            chunk_elements: 2,
            ..ParserOptions::default()
        };
        let mut p = RdbParser::for_value(&raw[..], h, t::LIST, b"k", opts).unwrap();
        assert!(p.skip_chunk().unwrap());
        assert_eq!(
            p.next_chunk().unwrap(),
            Some(Chunk::Items(vec![b"c".to_vec(), b"d".to_vec()]))
        );
        assert_eq!(
            p.next_chunk().unwrap(),
            Some(Chunk::Items(vec![b"e".to_vec()]))
        );
        assert_eq!(p.next_chunk().unwrap(), None);
    }
}
