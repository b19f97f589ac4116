//! Rebuilding values as commands: the one place that knows which commands recreate a decoded
//! value (SET, RPUSH, SADD, ZADD, HSET, HPEXPIREAT, XADD, XGROUP, XCLAIM, XSETID, PEXPIREAT,
//! FUNCTION LOAD). The RESP output format and the restore big-key path both use it.
//!
//! A string longer than the parser's part size comes in parts and is written as SET of the
//! first part then APPEND of each next one, in order; the TTL follows at the end, as for any key.
//!
//! Collections are deleted first (so a replay over an existing key leaves exactly the RDB's value),
//! then written in batches of one chunk. Streams are rebuilt with XADD (tombstoned entries too,
//! so pending entries that point at them survive; they are XDEL'd again at the end), XGROUP
//! CREATE ... ENTRIESREAD, XGROUP CREATECONSUMER, XCLAIM ... FORCE JUSTID for each pending entry
//! (keeping its delivery time and count), and a final XSETID (last id, entries-added,
//! max-deleted-id). A pending entry whose whole stream node was removed cannot be recreated:
//! XCLAIM ignores ids the stream does not hold. Module values have no commands.

use std::collections::HashMap;

use crate::rdb::{Chunk, Function, KeyHeader, PendingEntry, StreamId, StreamMeta, ValueType};
use crate::resp::CommandBuilder;
use crate::text::format_redis_double;

/// Turns one key's chunks into commands, handed one at a time (RESP-encoded) to `emit`.
#[derive(Default)]
pub struct CommandRebuilder {
    cmd: CommandBuilder,
    out: Vec<u8>,
    stream_entries: u64,
    tombstones: Vec<StreamId>,
    meta: Option<StreamMeta>,
    group: Option<Vec<u8>>,
    group_pel: HashMap<StreamId, PendingEntry>,
    /// Set TTLs with PEXPIREAT at the end (off when the caller sets the TTL itself).
    pub with_ttl: bool,
    /// Delete the key before writing a collection.
    pub delete_first: bool,
}

/// Why a value has no command form, if it has none: checked before its first command is built.
pub fn unsupported(k: &KeyHeader) -> Option<String> {
    if k.value_type == ValueType::Array {
        return Some("an array (Redis 8.8) has no command form this tool writes".into());
    }
    if !k.meta.is_empty() {
        return Some(
            "the key carries module key metadata (Redis 8.6 KEY_META), which no command sets"
                .into(),
        );
    }
    None
}

impl CommandRebuilder {
    pub fn new() -> Self {
        CommandRebuilder {
            with_ttl: true,
            delete_first: true,
            ..Default::default()
        }
    }

    fn emit(&mut self, sink: &mut dyn FnMut(&[u8])) {
        self.out.clear();
        self.cmd.finish_into(&mut self.out);
        sink(&self.out);
    }

    pub fn begin(&mut self, k: &KeyHeader, sink: &mut dyn FnMut(&[u8])) {
        self.stream_entries = 0;
        self.tombstones.clear();
        self.meta = None;
        self.group = None;
        self.group_pel.clear();
        self.cmd = CommandBuilder::new();
        if self.delete_first && !matches!(k.value_type, ValueType::String | ValueType::Module) {
            self.cmd.arg("DEL").arg(&k.key);
            self.emit(sink);
        }
    }

    pub fn chunk(&mut self, k: &KeyHeader, chunk: Chunk, sink: &mut dyn FnMut(&[u8])) {
        match chunk {
            Chunk::String(s) => {
                self.cmd.arg("SET").arg(&k.key).arg(s);
                self.emit(sink);
            }
            Chunk::StringPart { offset, data, .. } => {
                // A long string is written in order: SET of its first part, APPEND of the rest,
                // so neither side ever holds a command as long as the value.
                let verb = if offset == 0 { "SET" } else { "APPEND" };
                self.cmd.arg(verb).arg(&k.key).arg(data);
                self.emit(sink);
            }
            Chunk::Items(items) => {
                if items.is_empty() {
                    return;
                }
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
                self.emit(sink);
            }
            Chunk::Scored(pairs) => {
                if pairs.is_empty() {
                    return;
                }
                self.cmd.arg("ZADD").arg(&k.key);
                for (m, s) in &pairs {
                    self.cmd.arg(format_redis_double(*s)).arg(m);
                }
                self.emit(sink);
            }
            Chunk::Fields(fields) => {
                if fields.is_empty() {
                    return;
                }
                self.cmd.arg("HSET").arg(&k.key);
                for f in &fields {
                    self.cmd.arg(&f.field).arg(&f.value);
                }
                self.emit(sink);
                for f in &fields {
                    if let Some(ms) = f.expire_at_ms {
                        self.cmd
                            .arg("HPEXPIREAT")
                            .arg(&k.key)
                            .arg(ms.to_string())
                            .arg("FIELDS")
                            .arg("1")
                            .arg(&f.field);
                        self.emit(sink);
                    }
                }
            }
            Chunk::StreamEntries(entries) => {
                for e in &entries {
                    self.cmd.arg("XADD").arg(&k.key).arg(e.id.to_string());
                    for (f, v) in &e.fields {
                        self.cmd.arg(f).arg(v);
                    }
                    self.emit(sink);
                    if e.deleted {
                        self.tombstones.push(e.id);
                    }
                }
                self.stream_entries += entries.len() as u64;
            }
            Chunk::StreamMeta(m) => {
                if self.stream_entries == 0 {
                    // XADD with MAXLEN 0 creates the (empty) stream; XSETID at the end sets its ids.
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
                    self.emit(sink);
                }
                // XSETID waits for `end`: the XDELs of tombstones would move its counters.
                self.meta = Some(m);
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
                self.emit(sink);
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
                self.emit(sink);
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
                    self.emit(sink);
                }
            }
            Chunk::StreamIdmp(idmp) => {
                // Redis 8.6's commands for a stream's idempotent-producer state.
                self.cmd
                    .arg("XCFGSET")
                    .arg(&k.key)
                    .arg("IDMP-DURATION")
                    .arg(idmp.duration_s.to_string())
                    .arg("IDMP-MAXSIZE")
                    .arg(idmp.max_entries.to_string());
                self.emit(sink);
                for p in &idmp.producers {
                    for (iid, id) in &p.iids {
                        self.cmd
                            .arg("XIDMPRECORD")
                            .arg(&k.key)
                            .arg(&p.pid)
                            .arg(iid)
                            .arg(id.to_string());
                        self.emit(sink);
                    }
                }
            }
            // What has no command form: refused before any command is built (`unsupported`).
            Chunk::StreamNacked(_)
            | Chunk::ArrayHeader { .. }
            | Chunk::ArrayElems(_)
            | Chunk::PathFields { .. }
            | Chunk::Module { .. } => {}
        }
    }

    pub fn end(&mut self, k: &KeyHeader, sink: &mut dyn FnMut(&[u8])) {
        if matches!(k.value_type, ValueType::Module | ValueType::Array) {
            return;
        }
        if !self.tombstones.is_empty() {
            self.cmd.arg("XDEL").arg(&k.key);
            for id in std::mem::take(&mut self.tombstones) {
                self.cmd.arg(id.to_string());
            }
            self.emit(sink);
        }
        if let Some(m) = self.meta.take() {
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
            self.emit(sink);
        }
        if self.with_ttl {
            if let Some(ms) = k.expire_at_ms {
                self.cmd.arg("PEXPIREAT").arg(&k.key).arg(ms.to_string());
                self.emit(sink);
            }
        }
    }
}

/// The library text FUNCTION LOAD takes for a function stored in an RDB. The 7.0 release-candidate
/// form stores name and engine beside a bare body; the shebang line is rebuilt from them.
pub fn function_library_code(f: &Function) -> Vec<u8> {
    match (&f.name, &f.engine) {
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
    }
}
