//! The JSON lines sink: one object per key, as docs/output-formats.md defines it, plus `--meta`
//! lines. A key's line is built in a buffer and written whole, so a failure in the middle of a
//! value leaves no half line behind (only values larger than the buffer limit stream out early).
//!
//! A long string arrives in parts, and whether it prints as a JSON string or as base64 depends
//! on all of its bytes: the parts are held (in memory up to [`STRING_HOLD_BYTES`], beyond that
//! in an unlinked temporary file) until the last one, then written out in pieces. Memory stays
//! bounded whatever the value's length; the temporary file costs the value's length on disk.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use super::json;
use super::{RdbSink, ValueNeed};
use crate::rdb::{ArrayValue, Chunk, HashField, Header, Item, KeyHeader, ValueType};

/// Fields a hash may hold back while choosing between object and pair form.
const HASH_HOLD_FIELDS: usize = 65_536;
/// A key's line is written out early once its buffer passes this size.
const LINE_FLUSH_BYTES: usize = 8 << 20;
/// Most bytes of a long string held in memory; a longer one waits in a temporary file.
pub const STRING_HOLD_BYTES: usize = 8 << 20;
/// Bytes of a long string written per piece (a multiple of 3, so base64 needs no padding
/// between pieces).
const STRING_PIECE_BYTES: usize = 3 << 18;

/// A string value arriving in parts.
#[derive(Default)]
struct LongString {
    held: Vec<u8>,
    spool: Option<File>,
    utf8: json::Utf8Check,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StreamPart {
    Entries,
    Groups,
    Pending,
    Consumers,
    /// A group's `nacked` list was written; the group object is still open.
    Nacked,
    /// The groups are closed (the IDMP object followed).
    Closed,
}

pub struct JsonLinesSink<W: Write> {
    out: W,
    meta: bool,
    line: Vec<u8>,
    /// Elements written into the current value so far (decides commas).
    first: bool,
    held: Vec<HashField>,
    /// The current hash is being written in pair form (chosen, or forced by its size).
    pairs: bool,
    holding: bool,
    field_ttls: Vec<(Vec<u8>, i64)>,
    stream: Option<StreamPart>,
    long: Option<LongString>,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W, meta: bool) -> Self {
        JsonLinesSink {
            out,
            meta,
            line: Vec::with_capacity(64 * 1024),
            first: true,
            held: Vec::new(),
            pairs: false,
            holding: false,
            field_ttls: Vec::new(),
            stream: None,
            long: None,
        }
    }

    /// Takes the next part of a long string; writes the value once the last part is in.
    fn string_part(&mut self, offset: u64, last: bool, data: Vec<u8>) -> io::Result<()> {
        if offset == 0 || self.long.is_none() {
            self.long = Some(LongString::default());
        }
        let Some(long) = self.long.as_mut() else {
            return Ok(());
        };
        long.utf8.feed(&data);
        if long.spool.is_none() && long.held.len() + data.len() > STRING_HOLD_BYTES {
            let mut f = tempfile::tempfile().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create a temporary file for a string value longer than {STRING_HOLD_BYTES} bytes in {} (set TMPDIR): {e}",
                        std::env::temp_dir().display()
                    ),
                )
            })?;
            f.write_all(&long.held)?;
            long.held = Vec::new();
            long.spool = Some(f);
        }
        match &mut long.spool {
            Some(f) => f.write_all(&data)?,
            None if long.held.is_empty() => long.held = data,
            None => long.held.extend_from_slice(&data),
        }
        if !last {
            return Ok(());
        }
        let Some(long) = self.long.take() else {
            return Ok(());
        };
        let text = long.utf8.is_utf8();
        if text {
            self.line.push(b'"');
        } else {
            self.line.extend_from_slice(b"{\"base64\":\"");
        }
        let mut piece = vec![0u8; STRING_PIECE_BYTES];
        let mut b64 = String::new();
        let mut carry = 0usize;
        let mut pos = 0usize;
        let mut spool = long.spool;
        if let Some(f) = &mut spool {
            f.rewind()?;
        }
        loop {
            // The next piece: from the file, or from the held bytes.
            let n = match &mut spool {
                Some(f) => {
                    let mut n = carry;
                    while n < piece.len() {
                        match f.read(&mut piece[n..])? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    n
                }
                None => {
                    let k = (piece.len() - carry).min(long.held.len() - pos);
                    piece[carry..carry + k].copy_from_slice(&long.held[pos..pos + k]);
                    pos += k;
                    carry + k
                }
            };
            if n == carry {
                break;
            }
            let used = if text {
                let valid = match std::str::from_utf8(&piece[..n]) {
                    Ok(s) => s,
                    // A character split at the piece's end waits for the next piece.
                    Err(e) => std::str::from_utf8(&piece[..e.valid_up_to()]).unwrap_or_default(),
                };
                json::escaped(&mut self.line, valid);
                valid.len()
            } else {
                // Every piece but the last is full, a multiple of 3 bytes: no padding inside.
                use base64::Engine as _;
                b64.clear();
                base64::engine::general_purpose::STANDARD.encode_string(&piece[..n], &mut b64);
                self.line.extend_from_slice(b64.as_bytes());
                n
            };
            piece.copy_within(used..n, 0);
            carry = n - used;
            self.maybe_flush()?;
        }
        if text {
            self.line.push(b'"');
        } else {
            self.line.extend_from_slice(b"\"}");
        }
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.line.push(b',');
        }
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.line.len() >= LINE_FLUSH_BYTES {
            self.out.write_all(&self.line)?;
            self.line.clear();
        }
        Ok(())
    }

    fn meta_line(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut l = Vec::with_capacity(128);
        f(&mut l);
        l.push(b'\n');
        self.out.write_all(&l)
    }

    fn write_field(&mut self, f: &HashField) {
        self.comma();
        if self.pairs {
            self.line.push(b'[');
            json::bytes(&mut self.line, &f.field);
            self.line.push(b',');
            json::bytes(&mut self.line, &f.value);
            self.line.push(b']');
        } else {
            // Object form is only chosen when every field name is UTF-8.
            json::bytes(&mut self.line, &f.field);
            self.line.push(b':');
            json::bytes(&mut self.line, &f.value);
        }
        if let Some(ms) = f.expire_at_ms {
            self.field_ttls.push((f.field.clone(), ms));
        }
    }

    /// Decides the hash form from the held fields and writes them.
    fn release_held(&mut self, complete: bool) {
        let all_utf8 = self.held.iter().all(|f| json::is_utf8(&f.field));
        self.pairs = !complete || !all_utf8;
        self.line.push(if self.pairs { b'[' } else { b'{' });
        let held = std::mem::take(&mut self.held);
        for f in &held {
            self.write_field(f);
        }
        self.holding = false;
    }
}

fn entry_fields(out: &mut Vec<u8>, fields: &[(Vec<u8>, Vec<u8>)]) {
    if fields.iter().all(|(f, _)| json::is_utf8(f)) {
        out.push(b'{');
        for (i, (f, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::bytes(out, f);
            out.push(b':');
            json::bytes(out, v);
        }
        out.push(b'}');
    } else {
        out.push(b'[');
        for (i, (f, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::bytes(out, f);
            out.push(b',');
            json::bytes(out, v);
            out.push(b']');
        }
        out.push(b']');
    }
}

fn id(out: &mut Vec<u8>, id: crate::rdb::StreamId) {
    json::str(out, &id.to_string());
}

impl<W: Write> RdbSink for JsonLinesSink<W> {
    fn header(&mut self, h: &Header) -> io::Result<()> {
        if self.meta {
            self.meta_line(|l| {
                l.extend_from_slice(b"{\"meta\":\"header\",\"magic\":");
                json::str(l, h.magic.as_str());
                l.extend_from_slice(b",\"rdb_version\":");
                json::uint(l, h.version as u64);
                l.push(b'}');
            })?;
        }
        Ok(())
    }

    fn item(&mut self, item: &Item) -> io::Result<()> {
        if !self.meta {
            return Ok(());
        }
        self.meta_line(|l| match item {
            Item::Aux { name, value } => {
                l.extend_from_slice(b"{\"meta\":\"aux\",\"name\":");
                json::bytes(l, name);
                l.extend_from_slice(b",\"value\":");
                json::bytes(l, value);
                l.push(b'}');
            }
            Item::SelectDb(db) => {
                l.extend_from_slice(b"{\"meta\":\"selectdb\",\"db\":");
                json::uint(l, *db);
                l.push(b'}');
            }
            Item::ResizeDb { db, keys, expires } => {
                l.extend_from_slice(b"{\"meta\":\"resizedb\",\"db\":");
                json::uint(l, *db);
                l.extend_from_slice(b",\"keys\":");
                json::uint(l, *keys);
                l.extend_from_slice(b",\"expires\":");
                json::uint(l, *expires);
                l.push(b'}');
            }
            Item::SlotInfo {
                slot,
                size,
                expires_size,
            } => {
                l.extend_from_slice(b"{\"meta\":\"slot_info\",\"slot\":");
                json::uint(l, *slot);
                l.extend_from_slice(b",\"slot_size\":");
                json::uint(l, *size);
                l.extend_from_slice(b",\"expires_slot_size\":");
                json::uint(l, *expires_size);
                l.push(b'}');
            }
            Item::ModuleAux {
                module_id,
                name,
                when,
            } => {
                l.extend_from_slice(b"{\"meta\":\"module_aux\",\"module\":");
                json::str(l, name);
                l.extend_from_slice(b",\"module_id\":");
                json::uint(l, *module_id);
                l.extend_from_slice(b",\"when\":");
                json::uint(l, *when);
                l.push(b'}');
            }
            Item::Function(f) => {
                l.extend_from_slice(b"{\"meta\":\"function\",\"code\":");
                json::bytes(l, &f.code);
                if let Some(n) = &f.name {
                    l.extend_from_slice(b",\"name\":");
                    json::bytes(l, n);
                }
                if let Some(e) = &f.engine {
                    l.extend_from_slice(b",\"engine\":");
                    json::bytes(l, e);
                }
                if let Some(d) = &f.description {
                    l.extend_from_slice(b",\"description\":");
                    json::bytes(l, d);
                }
                l.push(b'}');
            }
            Item::End { checksum, crc64 } => {
                l.extend_from_slice(b"{\"meta\":\"end\",\"checksum\":");
                json::str(l, checksum.as_str());
                l.extend_from_slice(b",\"crc64\":");
                json::str(l, &format!("{crc64:016x}"));
                l.push(b'}');
            }
            Item::SlotImport { name, ranges } => {
                l.extend_from_slice(b"{\"meta\":\"slot_import\",\"name\":");
                json::bytes(l, name);
                l.extend_from_slice(b",\"ranges\":[");
                for (i, (a, b)) in ranges.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    l.push(b'[');
                    json::uint(l, *a);
                    l.push(b',');
                    json::uint(l, *b);
                    l.push(b']');
                }
                l.extend_from_slice(b"]}");
            }
            Item::HashTemplate { id, fields } => {
                l.extend_from_slice(b"{\"meta\":\"hash_template\",\"id\":");
                json::uint(l, *id);
                l.extend_from_slice(b",\"fields\":[");
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    json::bytes(l, f);
                }
                l.extend_from_slice(b"]}");
            }
            Item::Update(args) => {
                l.extend_from_slice(b"{\"meta\":\"update\",\"command\":[");
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    json::bytes(l, a);
                }
                l.extend_from_slice(b"]}");
            }
            Item::Key(_) => {}
        })
    }

    fn value_need(&self) -> ValueNeed {
        ValueNeed::Chunks
    }

    fn begin_key(&mut self, k: &KeyHeader) -> io::Result<()> {
        self.line.clear();
        self.first = true;
        self.held.clear();
        self.field_ttls.clear();
        self.pairs = false;
        self.holding = false;
        self.stream = None;
        self.long = None;
        let l = &mut self.line;
        l.extend_from_slice(b"{\"db\":");
        json::uint(l, k.db);
        l.extend_from_slice(b",\"key\":");
        json::bytes(l, &k.key);
        l.extend_from_slice(b",\"type\":\"");
        l.extend_from_slice(k.value_type.as_str().as_bytes());
        l.push(b'"');
        if let Some(ms) = k.expire_at_ms {
            l.extend_from_slice(b",\"expire_at_ms\":");
            json::int(l, ms);
        }
        if let Some(idle) = k.idle_s {
            l.extend_from_slice(b",\"idle_s\":");
            json::uint(l, idle);
        }
        if let Some(freq) = k.freq {
            l.extend_from_slice(b",\"freq\":");
            json::uint(l, freq as u64);
        }
        if !k.meta.is_empty() {
            l.extend_from_slice(b",\"key_meta\":[");
            for (i, m) in k.meta.iter().enumerate() {
                if i > 0 {
                    l.push(b',');
                }
                l.extend_from_slice(b"{\"class\":");
                json::str(l, &m.name);
                l.extend_from_slice(b",\"version\":");
                json::uint(l, m.version as u64);
                l.extend_from_slice(b",\"flags\":");
                json::uint(l, m.flags as u64);
                l.push(b'}');
            }
            l.push(b']');
        }
        l.extend_from_slice(b",\"value\":");
        match k.value_type {
            ValueType::List | ValueType::Set | ValueType::Zset => l.push(b'['),
            ValueType::Hash => self.holding = true,
            ValueType::Stream => {
                l.extend_from_slice(b"{\"entries\":[");
                self.stream = Some(StreamPart::Entries);
            }
            // The array object opens with its header chunk.
            ValueType::String | ValueType::Module | ValueType::Array => {}
        }
        Ok(())
    }

    fn chunk(&mut self, _k: &KeyHeader, chunk: Chunk) -> io::Result<()> {
        match chunk {
            Chunk::String(s) => json::bytes(&mut self.line, &s),
            c @ Chunk::StringPart { .. } => {
                let last = c.ends_string();
                if let Chunk::StringPart { offset, data, .. } = c {
                    self.string_part(offset, last, data)?;
                }
            }
            Chunk::Items(items) => {
                for it in &items {
                    self.comma();
                    json::bytes(&mut self.line, it);
                }
            }
            Chunk::Scored(pairs) => {
                for (m, s) in &pairs {
                    self.comma();
                    self.line.push(b'[');
                    json::bytes(&mut self.line, m);
                    self.line.push(b',');
                    json::double(&mut self.line, *s);
                    self.line.push(b']');
                }
            }
            Chunk::Fields(fields) => {
                if self.holding {
                    self.held.extend(fields);
                    if self.held.len() > HASH_HOLD_FIELDS {
                        self.release_held(false);
                    }
                } else {
                    for f in &fields {
                        self.write_field(f);
                    }
                }
            }
            Chunk::StreamEntries(entries) => {
                for e in entries.iter().filter(|e| !e.deleted) {
                    self.comma();
                    self.line.extend_from_slice(b"{\"id\":");
                    id(&mut self.line, e.id);
                    self.line.extend_from_slice(b",\"fields\":");
                    entry_fields(&mut self.line, &e.fields);
                    self.line.push(b'}');
                }
            }
            Chunk::StreamMeta(m) => {
                let l = &mut self.line;
                l.extend_from_slice(b"],\"length\":");
                json::uint(l, m.length);
                l.extend_from_slice(b",\"last_id\":");
                id(l, m.last_id);
                if let Some(v) = m.first_id {
                    l.extend_from_slice(b",\"first_id\":");
                    id(l, v);
                }
                if let Some(v) = m.max_deleted_id {
                    l.extend_from_slice(b",\"max_deleted_id\":");
                    id(l, v);
                }
                if let Some(v) = m.entries_added {
                    l.extend_from_slice(b",\"entries_added\":");
                    json::uint(l, v);
                }
                l.extend_from_slice(b",\"groups\":[");
                self.stream = Some(StreamPart::Groups);
                self.first = true;
            }
            Chunk::StreamGroup(g) => {
                match self.stream {
                    Some(StreamPart::Pending) => {
                        self.line.extend_from_slice(b"],\"consumers\":[]},")
                    }
                    Some(StreamPart::Consumers) => self.line.extend_from_slice(b"]},"),
                    Some(StreamPart::Nacked) => self.line.extend_from_slice(b"},"),
                    _ => {}
                }
                let l = &mut self.line;
                l.extend_from_slice(b"{\"name\":");
                json::bytes(l, &g.name);
                l.extend_from_slice(b",\"last_id\":");
                id(l, g.last_id);
                if let Some(n) = g.entries_read {
                    l.extend_from_slice(b",\"entries_read\":");
                    json::int(l, n);
                }
                l.extend_from_slice(b",\"pending\":[");
                self.stream = Some(StreamPart::Pending);
                self.first = true;
            }
            Chunk::StreamPending(p) => {
                for e in &p {
                    self.comma();
                    let l = &mut self.line;
                    l.extend_from_slice(b"{\"id\":");
                    id(l, e.id);
                    l.extend_from_slice(b",\"delivery_time_ms\":");
                    json::int(l, e.delivery_time_ms);
                    l.extend_from_slice(b",\"delivery_count\":");
                    json::uint(l, e.delivery_count);
                    l.push(b'}');
                }
            }
            Chunk::StreamConsumer(c) => {
                if self.stream == Some(StreamPart::Pending) {
                    self.line.extend_from_slice(b"],\"consumers\":[");
                    self.stream = Some(StreamPart::Consumers);
                    self.first = true;
                }
                self.comma();
                let l = &mut self.line;
                l.extend_from_slice(b"{\"name\":");
                json::bytes(l, &c.name);
                l.extend_from_slice(b",\"seen_time_ms\":");
                json::int(l, c.seen_time_ms);
                if let Some(a) = c.active_time_ms {
                    l.extend_from_slice(b",\"active_time_ms\":");
                    json::int(l, a);
                }
                l.extend_from_slice(b",\"pending\":[");
                for (i, p) in c.pending.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    id(l, *p);
                }
                l.extend_from_slice(b"]}");
            }
            Chunk::Module {
                module_id,
                name,
                raw,
            } => {
                let l = &mut self.line;
                l.extend_from_slice(b"{\"module\":");
                json::str(l, &name);
                l.extend_from_slice(b",\"module_id\":");
                json::uint(l, module_id);
                l.extend_from_slice(b",\"raw\":{\"base64\":");
                use base64::Engine as _;
                json::str(l, &base64::engine::general_purpose::STANDARD.encode(&raw));
                l.extend_from_slice(b"}}");
            }
            Chunk::StreamNacked(ids) => {
                let l = &mut self.line;
                match self.stream {
                    Some(StreamPart::Pending) => l.extend_from_slice(b"],\"consumers\":[]"),
                    Some(StreamPart::Consumers) => l.push(b']'),
                    _ => {}
                }
                l.extend_from_slice(b",\"nacked\":[");
                for (i, x) in ids.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    id(l, *x);
                }
                l.push(b']');
                self.stream = Some(StreamPart::Nacked);
            }
            Chunk::StreamIdmp(m) => {
                let l = &mut self.line;
                match self.stream {
                    Some(StreamPart::Groups) => l.push(b']'),
                    Some(StreamPart::Pending) => l.extend_from_slice(b"],\"consumers\":[]}]"),
                    Some(StreamPart::Consumers) => l.extend_from_slice(b"]}]"),
                    Some(StreamPart::Nacked) => l.extend_from_slice(b"}]"),
                    _ => {}
                }
                l.extend_from_slice(b",\"idmp\":{\"duration_s\":");
                json::uint(l, m.duration_s);
                l.extend_from_slice(b",\"max_entries\":");
                json::uint(l, m.max_entries);
                l.extend_from_slice(b",\"producers\":[");
                for (i, p) in m.producers.iter().enumerate() {
                    if i > 0 {
                        l.push(b',');
                    }
                    l.extend_from_slice(b"{\"pid\":");
                    json::bytes(l, &p.pid);
                    l.extend_from_slice(b",\"iids\":[");
                    for (j, (iid, sid)) in p.iids.iter().enumerate() {
                        if j > 0 {
                            l.push(b',');
                        }
                        l.extend_from_slice(b"{\"iid\":");
                        json::bytes(l, iid);
                        l.extend_from_slice(b",\"id\":");
                        id(l, *sid);
                        l.push(b'}');
                    }
                    l.extend_from_slice(b"]}");
                }
                l.extend_from_slice(b"],\"iids_added\":");
                json::uint(l, m.iids_added);
                l.extend_from_slice(b",\"iids_duplicates\":");
                json::uint(l, m.iids_duplicates);
                l.push(b'}');
                self.stream = Some(StreamPart::Closed);
            }
            Chunk::ArrayHeader { count, insert_idx } => {
                let l = &mut self.line;
                l.extend_from_slice(b"{\"count\":");
                json::uint(l, count);
                if let Some(i) = insert_idx {
                    l.extend_from_slice(b",\"insert_idx\":");
                    json::uint(l, i);
                }
                l.extend_from_slice(b",\"elements\":[");
                self.first = true;
            }
            Chunk::ArrayElems(elems) => {
                for e in &elems {
                    self.comma();
                    let l = &mut self.line;
                    l.push(b'[');
                    json::uint(l, e.index);
                    l.push(b',');
                    match &e.value {
                        ArrayValue::Str(s) => json::bytes(l, s),
                        ArrayValue::Int(i) => json::int(l, *i),
                        ArrayValue::Float(f) => json::double(l, *f),
                    }
                    l.push(b']');
                }
            }
            Chunk::PathFields { path, fields } => {
                if self.holding {
                    // A path hash is a list of paths, each with its fields.
                    self.holding = false;
                    self.pairs = true;
                    self.line.push(b'[');
                }
                self.comma();
                let l = &mut self.line;
                l.extend_from_slice(b"{\"path\":");
                json::bytes(l, &path);
                l.extend_from_slice(b",\"fields\":");
                entry_fields(l, &fields);
                l.push(b'}');
            }
        }
        self.maybe_flush()
    }

    fn end_key(&mut self, k: &KeyHeader, _serialized: u64) -> io::Result<()> {
        match k.value_type {
            ValueType::List | ValueType::Set | ValueType::Zset => self.line.push(b']'),
            ValueType::Hash => {
                if self.holding {
                    self.release_held(true);
                }
                self.line.push(if self.pairs { b']' } else { b'}' });
                if !self.field_ttls.is_empty() {
                    let ttls = std::mem::take(&mut self.field_ttls);
                    let l = &mut self.line;
                    l.extend_from_slice(b",\"field_expire_at_ms\":");
                    l.push(if self.pairs { b'[' } else { b'{' });
                    for (i, (f, ms)) in ttls.iter().enumerate() {
                        if i > 0 {
                            l.push(b',');
                        }
                        if self.pairs {
                            l.push(b'[');
                            json::bytes(l, f);
                            l.push(b',');
                            json::int(l, *ms);
                            l.push(b']');
                        } else {
                            json::bytes(l, f);
                            l.push(b':');
                            json::int(l, *ms);
                        }
                    }
                    l.push(if self.pairs { b']' } else { b'}' });
                }
            }
            ValueType::Stream => {
                match self.stream {
                    // A stream always has its metadata; these close what is open.
                    Some(StreamPart::Entries) => self.line.extend_from_slice(b"]"),
                    Some(StreamPart::Groups) => self.line.extend_from_slice(b"]"),
                    Some(StreamPart::Pending) => {
                        self.line.extend_from_slice(b"],\"consumers\":[]}]")
                    }
                    Some(StreamPart::Consumers) => self.line.extend_from_slice(b"]}]"),
                    Some(StreamPart::Nacked) => self.line.extend_from_slice(b"}]"),
                    Some(StreamPart::Closed) | None => {}
                }
                self.line.push(b'}');
            }
            ValueType::Array => self.line.extend_from_slice(b"]}"),
            ValueType::String | ValueType::Module => {}
        }
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }

    fn abandon_key(&mut self) {
        self.line.clear();
        self.held.clear();
        self.long = None;
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
