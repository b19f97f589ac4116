//! `--format resp`: commands that recreate the data, ready for `redis-cli --pipe`.
//!
//! Each collection key is deleted first, so replaying into a server that already holds the key
//! leaves exactly the RDB's value (no doubled list elements). Collections go in batches of at
//! most one chunk (1024 elements). TTLs are absolute (PEXPIREAT, HPEXPIREAT). Streams are
//! rebuilt with XADD (tombstoned entries too, so pending entries that point at them survive;
//! they are XDEL'd again at the end), XGROUP CREATE ... ENTRIESREAD, XGROUP CREATECONSUMER,
//! XCLAIM ... FORCE JUSTID for each pending entry (keeping its delivery time and count), and a
//! final XSETID (last id, entries-added, max-deleted-id). A pending entry whose whole node was
//! removed from the stream cannot be recreated: XCLAIM ignores ids the stream does not hold. Module values can't be expressed as commands; they are counted
//! in `skipped_modules` and left out.

use std::collections::HashMap;
use std::io::{self, Write};

use super::{RdbSink, ValueNeed};
use crate::rdb::{Chunk, Item, KeyHeader, PendingEntry, StreamId, ValueType};
use crate::resp::CommandBuilder;
use crate::text::format_redis_double;

pub struct RespSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    cmd: CommandBuilder,
    db: Option<u64>,
    stream_entries: u64,
    /// Tombstoned entries added so pending entries that point at them survive; deleted again
    /// once the groups are built.
    stream_tombstones: Vec<StreamId>,
    stream_meta: Option<crate::rdb::StreamMeta>,
    group: Option<Vec<u8>>,
    group_pel: HashMap<StreamId, PendingEntry>,
    skipped_modules: u64,
    /// Where the current key's commands begin in `buf`, to drop them if the key fails.
    key_start: usize,
}

impl<W: Write> RespSink<W> {
    pub fn new(out: W) -> Self {
        RespSink {
            out,
            buf: Vec::with_capacity(64 * 1024),
            cmd: CommandBuilder::new(),
            db: None,
            stream_entries: 0,
            stream_tombstones: Vec::new(),
            stream_meta: None,
            group: None,
            group_pel: HashMap::new(),
            skipped_modules: 0,
            key_start: 0,
        }
    }

    pub fn skipped_modules(&self) -> u64 {
        self.skipped_modules
    }

    fn emit(&mut self) {
        self.cmd.finish_into(&mut self.buf);
    }

    fn flush_if_big(&mut self) -> io::Result<()> {
        if self.buf.len() >= 1 << 20 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
            self.key_start = 0;
        }
        Ok(())
    }
}

impl<W: Write> RdbSink for RespSink<W> {
    fn item(&mut self, item: &Item) -> io::Result<()> {
        if let Item::Function(f) = item {
            let code = match (&f.name, &f.engine) {
                // The 7.0 release-candidate form stores name and engine beside a bare body.
                (Some(name), Some(engine)) => {
                    let mut c = format!(
                        "#!{} name={}\n",
                        String::from_utf8_lossy(engine).to_lowercase(),
                        String::from_utf8_lossy(name)
                    )
                    .into_bytes();
                    c.extend_from_slice(&f.code);
                    c
                }
                _ => f.code.clone(),
            };
            self.cmd
                .arg("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(code);
            self.emit();
            self.flush_if_big()?;
        }
        Ok(())
    }

    fn value_need(&self) -> ValueNeed {
        ValueNeed::Chunks
    }

    fn begin_key(&mut self, k: &KeyHeader) -> io::Result<()> {
        if k.value_type == ValueType::Module {
            self.skipped_modules += 1;
            return Ok(());
        }
        self.key_start = self.buf.len();
        if self.db != Some(k.db) {
            self.cmd.arg("SELECT").arg(k.db.to_string());
            self.emit();
            self.db = Some(k.db);
        }
        if k.value_type != ValueType::String {
            self.cmd.arg("DEL").arg(&k.key);
            self.emit();
        }
        self.stream_entries = 0;
        self.stream_tombstones.clear();
        self.stream_meta = None;
        self.group = None;
        self.group_pel.clear();
        Ok(())
    }

    fn chunk(&mut self, k: &KeyHeader, chunk: Chunk) -> io::Result<()> {
        match chunk {
            Chunk::String(s) => {
                self.cmd.arg("SET").arg(&k.key).arg(s);
                self.emit();
            }
            Chunk::Items(items) => {
                self.cmd
                    .arg(if k.value_type == ValueType::List {
                        "RPUSH"
                    } else {
                        "SADD"
                    })
                    .arg(&k.key);
                for it in &items {
                    self.cmd.arg(it);
                }
                self.emit();
            }
            Chunk::Scored(pairs) => {
                self.cmd.arg("ZADD").arg(&k.key);
                for (m, s) in &pairs {
                    self.cmd.arg(format_redis_double(*s)).arg(m);
                }
                self.emit();
            }
            Chunk::Fields(fields) => {
                self.cmd.arg("HSET").arg(&k.key);
                for f in &fields {
                    self.cmd.arg(&f.field).arg(&f.value);
                }
                self.emit();
                for f in fields.iter().filter(|f| f.expire_at_ms.is_some()) {
                    let ms = f.expire_at_ms.unwrap_or_default();
                    self.cmd
                        .arg("HPEXPIREAT")
                        .arg(&k.key)
                        .arg(ms.to_string())
                        .arg("FIELDS")
                        .arg("1")
                        .arg(&f.field);
                    self.emit();
                }
            }
            Chunk::StreamEntries(entries) => {
                for e in &entries {
                    self.cmd.arg("XADD").arg(&k.key).arg(e.id.to_string());
                    for (f, v) in &e.fields {
                        self.cmd.arg(f).arg(v);
                    }
                    self.emit();
                    if e.deleted {
                        self.stream_tombstones.push(e.id);
                    }
                }
                self.stream_entries += entries.len() as u64;
            }
            Chunk::StreamMeta(m) => {
                if self.stream_entries == 0 {
                    // XADD with MAXLEN 0 creates the (empty) stream; XSETID then sets its ids.
                    let first = if m.last_id == StreamId::default() {
                        StreamId { ms: 0, seq: 1 }
                    } else {
                        m.last_id
                    };
                    self.cmd
                        .arg("XADD")
                        .arg(&k.key)
                        .arg("MAXLEN")
                        .arg("0")
                        .arg(first.to_string())
                        .arg("_")
                        .arg("_");
                    self.emit();
                }
                // XSETID waits for end_key: the XDELs of tombstones would move its counters.
                self.stream_meta = Some(m);
            }
            Chunk::StreamGroup(g) => {
                self.cmd
                    .arg("XGROUP")
                    .arg("CREATE")
                    .arg(&k.key)
                    .arg(&g.name)
                    .arg(g.last_id.to_string());
                if let Some(n) = g.entries_read {
                    self.cmd.arg("ENTRIESREAD").arg(n.to_string());
                }
                self.emit();
                self.group = Some(g.name);
                self.group_pel.clear();
            }
            Chunk::StreamPending(p) => {
                // Held until the consumers say who owns each entry.
                self.group_pel.extend(p.into_iter().map(|e| (e.id, e)));
            }
            Chunk::StreamConsumer(c) => {
                let group = self.group.clone().unwrap_or_default();
                self.cmd
                    .arg("XGROUP")
                    .arg("CREATECONSUMER")
                    .arg(&k.key)
                    .arg(&group)
                    .arg(&c.name);
                self.emit();
                for id in &c.pending {
                    let (time, count) = self
                        .group_pel
                        .get(id)
                        .map_or((0, 1), |e| (e.delivery_time_ms, e.delivery_count));
                    self.cmd
                        .arg("XCLAIM")
                        .arg(&k.key)
                        .arg(&group)
                        .arg(&c.name)
                        .arg("0")
                        .arg(id.to_string())
                        .arg("TIME")
                        .arg(time.to_string())
                        .arg("RETRYCOUNT")
                        .arg(count.to_string())
                        .arg("FORCE")
                        .arg("JUSTID");
                    self.emit();
                }
            }
            Chunk::Module { .. } => {}
        }
        self.flush_if_big()
    }

    fn end_key(&mut self, k: &KeyHeader, _n: u64) -> io::Result<()> {
        if k.value_type == ValueType::Module {
            return Ok(());
        }
        if !self.stream_tombstones.is_empty() {
            self.cmd.arg("XDEL").arg(&k.key);
            for id in std::mem::take(&mut self.stream_tombstones) {
                self.cmd.arg(id.to_string());
            }
            self.emit();
        }
        if let Some(m) = self.stream_meta.take() {
            self.cmd
                .arg("XSETID")
                .arg(&k.key)
                .arg(m.last_id.to_string());
            if let (Some(added), Some(maxdel)) = (m.entries_added, m.max_deleted_id) {
                self.cmd
                    .arg("ENTRIESADDED")
                    .arg(added.to_string())
                    .arg("MAXDELETEDID")
                    .arg(maxdel.to_string());
            }
            self.emit();
        }
        if let Some(ms) = k.expire_at_ms {
            self.cmd.arg("PEXPIREAT").arg(&k.key).arg(ms.to_string());
            self.emit();
        }
        self.flush_if_big()
    }

    fn abandon_key(&mut self) {
        self.cmd = CommandBuilder::new();
        self.buf.truncate(self.key_start);
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}
