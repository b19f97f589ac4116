//! The reading half of applying an RDB to a target: runs on the parser's thread and turns every
//! item into `Work` for the writing half, choosing per value between the fast path (the raw bytes
//! in a RESTORE payload), the portable path (the value re-encoded for an older target) and the
//! big-key path (commands in batches), with memory bounded by the big-key threshold.

use std::collections::BTreeSet;
use std::io::Read;

use super::{building_name, restore_command, ApplyError, ApplyOptions, Work};
use crate::observe::Progress;
use crate::rdb::types as t;
use crate::rdb::writer::{
    parse_dump_payload, BacklenStyle, FieldTtlPolicy, TargetFormat, TranscodeError, Transcoder,
};
use crate::rdb::{
    value_type_of, Chunk, Header, Item, KeyHeader, Magic, ParserOptions, RdbParser, ValueType,
};
use crate::rebuild::{function_library_code, CommandRebuilder};

/// Counters the reading half keeps (the writing half counts what the target said).
#[derive(Debug, Default, Clone)]
pub struct PlanStats {
    pub keys: u64,
    pub filtered: u64,
    pub expired: u64,
    pub restored: u64,
    pub transcoded: u64,
    pub big_keys: u64,
    pub functions: u64,
    pub dropped_field_ttls: u64,
}

impl PlanStats {
    /// Adds another planner's counts (several files, or several source nodes).
    pub fn add(&mut self, b: &PlanStats) {
        self.keys += b.keys;
        self.filtered += b.filtered;
        self.expired += b.expired;
        self.restored += b.restored;
        self.transcoded += b.transcoded;
        self.big_keys += b.big_keys;
        self.functions += b.functions;
        self.dropped_field_ttls += b.dropped_field_ttls;
    }
}

pub struct Planner<'a> {
    opts: &'a ApplyOptions,
    target: TargetFormat,
    /// The modules the target loads (see [`Planner::with_modules`]).
    modules: Option<BTreeSet<String>>,
    now_ms: i64,
    /// See [`Planner::with_stop`].
    stop: Option<std::sync::Arc<crate::signals::StopFlag>>,
    pub stats: PlanStats,
}

impl<'a> Planner<'a> {
    pub fn new(opts: &'a ApplyOptions, target: TargetFormat, now_ms: i64) -> Self {
        Planner {
            opts,
            target,
            modules: None,
            now_ms,
            stop: None,
            stats: PlanStats::default(),
        }
    }

    /// The modules the target loads (`PreparedTarget::modules`): a module value whose module is
    /// not among them is refused, naming the key and the module, before it is written (RESTORE
    /// would fail on it anyway, with a less telling error). `None`: RESTORE decides.
    pub fn with_modules(mut self, modules: Option<BTreeSet<String>>) -> Self {
        self.modules = modules;
        self
    }

    /// Once `stop` is set (a signal), [`Planner::run`] ends with [`ApplyError::Interrupted`]
    /// before the next key or function: what it emitted is whole (a big key's parts all go).
    pub fn with_stop(mut self, stop: std::sync::Arc<crate::signals::StopFlag>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// [`module_refusal`] for a module value whose bytes (from the module id on) are `value`.
    fn refuse_module(&self, k: &KeyHeader, value: &[u8]) -> Result<(), ApplyError> {
        let (Some(loaded), ValueType::Module) = (&self.modules, k.value_type) else {
            return Ok(());
        };
        let Some(id) = rdb_length(value) else {
            return Err(ApplyError::Unsupported(format!(
                "key {}: its module value does not start with a module id",
                crate::text::quote_bytes(&k.key)
            )));
        };
        match module_refusal(&k.key, &crate::rdb::module_name_from_id(id), loaded) {
            Some(why) => Err(ApplyError::Unsupported(why)),
            None => Ok(()),
        }
    }

    /// Moves the planner's clock (what "expired" is judged against) for long-running callers.
    pub fn set_now(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// Reads the whole RDB from `parser`, handing work to `emit` in file order.
    pub fn run<R: Read>(
        &mut self,
        parser: &mut RdbParser<R>,
        progress: &mut Progress,
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let header = parser.header()?;
        while let Some(item) = parser.next_item()? {
            if matches!(item, Item::Key(_) | Item::Function(_))
                && self.stop.as_ref().is_some_and(|s| s.get().is_some())
            {
                return Err(ApplyError::Interrupted);
            }
            match item {
                Item::Key(k) => {
                    self.key(parser, header, k, emit)?;
                    progress.update(parser.offset(), self.stats.keys);
                }
                Item::Function(f) => {
                    self.stats.functions += 1;
                    emit(Work::Function {
                        code: function_library_code(&f),
                    })?;
                }
                Item::End { checksum, .. } => emit(Work::End { checksum })?,
                // A write the source made while saving: skipping it would lose it.
                Item::Update(args) => {
                    return Err(ApplyError::Unsupported(format!(
                        "the RDB holds a Valkey forkless-save UPDATE record ({} ...) before offset {}: inline replication commands inside an RDB are not applied by this tool; save the source without forkless save",
                        crate::text::quote_bytes(args.first().map_or(&b""[..], |a| a)),
                        parser.offset()
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts a key and decides whether it is written: the target database, or `None` when the
    /// database map, the filters or an expired TTL leave it out (counted). An admitted key gets
    /// its target name (`--rename-prefix`; the filters judged the source name).
    fn admit(&mut self, k: &mut KeyHeader) -> Result<Option<u64>, ApplyError> {
        self.stats.keys += 1;
        let Some(db) = self.opts.db_map.map(k.db) else {
            self.stats.filtered += 1;
            return Ok(None);
        };
        if !self.opts.filter.matches(k.db, &k.key, k.value_type) {
            self.stats.filtered += 1;
            return Ok(None);
        }
        if k.expire_at_ms.is_some_and(|t| t <= self.now_ms) {
            self.stats.expired += 1;
            return Ok(None);
        }
        self.rename(&mut k.key)?;
        Ok(Some(db))
    }

    /// Gives `key` its target name (`--rename-prefix`).
    fn rename(&self, key: &mut Vec<u8>) -> Result<(), ApplyError> {
        if let std::borrow::Cow::Owned(n) =
            self.opts.rename.key(key).map_err(ApplyError::Unsupported)?
        {
            *key = n;
        }
        Ok(())
    }

    /// Plans one value that arrives as a DUMP payload (SCAN + DUMP sources) instead of from an
    /// RDB stream, with the same decisions as [`Planner::run`]: the payload as it is when the
    /// target loads its type and version stamp (re-stamped with the target's version when only
    /// the stamp is too new), re-encoded when the target cannot load the encoding, as batches of
    /// commands when its value is larger than the big-key threshold. The payload is borrowed: a
    /// big value is decoded where it lies, never copied.
    ///
    /// `expire_at_ms` is absolute (Unix ms). The payload's numbering family (Redis or Valkey) is
    /// judged from its version stamp, as [`TargetFormat::from_dump_stamp`] does.
    pub fn plan_payload(
        &mut self,
        db: u64,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: &[u8],
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let bad = |key: &[u8], m: String| {
            ApplyError::Unsupported(format!(
                "DUMP of key {} (database {db}): {m}",
                crate::text::quote_bytes(key)
            ))
        };
        let (rdb_type, value, stamp) = match parse_dump_payload(payload) {
            Ok(p) => p,
            Err(m) => return Err(bad(&key, m)),
        };
        let Some(family) = TargetFormat::from_dump_stamp(stamp) else {
            return Err(bad(&key, format!("unknown RDB version stamp {stamp}")));
        };
        let header = Header {
            magic: family.magic,
            version: u32::from(stamp),
        };
        let Some(value_type) = value_type_of(rdb_type, header) else {
            return Err(bad(
                &key,
                format!("RDB type {rdb_type} is unknown to RDB version {stamp}"),
            ));
        };
        let mut k = KeyHeader {
            db,
            key,
            rdb_type,
            value_type,
            expire_at_ms,
            idle_s: None,
            freq: None,
            offset: 0,
            meta: Vec::new(),
        };
        let Some(db) = self.admit(&mut k)? else {
            return Ok(());
        };
        let loadable = loads_raw(&self.target, header, rdb_type);
        if value_type == ValueType::Module && !loadable {
            return Err(ApplyError::Unsupported(format!(
                "key {} holds a module value of RDB type {rdb_type} that the target cannot load",
                crate::text::quote_bytes(&k.key)
            )));
        }
        self.refuse_module(&k, value)?;
        let chunks = || RdbParser::for_value(value, header, rdb_type, &k.key, chunking(self.opts));
        if loadable && (value.len() <= self.opts.big_key_bytes || value_type == ValueType::Module) {
            if self.opts.verify_values {
                // The source server made this payload, but one that loaded a corrupt RDB
                // without deep sanitization serves it as it is: checked as a file's value is.
                chunks()?.skip_value()?;
            }
            self.stats.restored += 1;
            let tv = self.target.rdb_version;
            // A stamp the target accepts goes as it is (no CRC to recompute): its own, or any
            // Redis-numbered one up to its own (Valkey 9 takes 1..=11 and 80, not 12).
            let cmd = if stamp == tv || (stamp <= 11 && stamp <= tv) {
                restore_command(&k, &[payload], None, self.opts)
            } else {
                restore_command(&k, &[&[rdb_type], value], Some(tv), self.opts)
            };
            return emit(Work::Restore {
                db,
                key: k.key,
                cmd,
            });
        }
        let mut parser = chunks()?;
        if loadable {
            self.stats.big_keys += 1;
            let mut cmds = Commands::new(db, &k, self.opts, &self.target, self.now_ms);
            while let Some(c) = parser.next_chunk()? {
                cmds.chunk(&k, c, emit)?;
            }
            self.stats.dropped_field_ttls += cmds.dropped_field_ttls;
            return cmds.finish(&k, emit);
        }
        self.portable(&mut parser, k, db, emit)
    }

    /// Starts a big string that arrives in parts instead of as one payload (shake-rump reads a
    /// string above the big-key threshold with GETRANGE, never whole): the same decisions as
    /// for any key (database map, filters, a TTL already passed), then the big-key path: SET of
    /// the first part and APPENDs under the key's [`building_name`], the TTL, RENAME. `None`
    /// when the key is left out (counted). `len` is the value's length (STRLEN).
    pub fn begin_string(
        &mut self,
        db: u64,
        key: Vec<u8>,
        len: u64,
        expire_at_ms: Option<i64>,
    ) -> Result<Option<StringBuild>, ApplyError> {
        let mut k = KeyHeader {
            db,
            key,
            rdb_type: t::STRING,
            value_type: ValueType::String,
            expire_at_ms,
            idle_s: None,
            freq: None,
            offset: 0,
            meta: Vec::new(),
        };
        let Some(db) = self.admit(&mut k)? else {
            return Ok(None);
        };
        let cmds = Commands::new(db, &k, self.opts, &self.target, self.now_ms);
        Ok(Some(StringBuild {
            k,
            cmds,
            offset: 0,
            len,
        }))
    }

    /// The next part of a string begun with [`Planner::begin_string`], in order.
    pub fn string_part(
        &mut self,
        b: &mut StringBuild,
        data: &[u8],
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let c = Chunk::StringPart {
            offset: b.offset,
            len: b.len,
            data: data.to_vec(),
        };
        b.offset += data.len() as u64;
        b.cmds.chunk(&b.k, c, emit)
    }

    /// Ends a string begun with [`Planner::begin_string`]: its TTL as read after the last part
    /// (the one that holds for the bytes read), then RENAME into place.
    pub fn finish_string(
        &mut self,
        mut b: StringBuild,
        expire_at_ms: Option<i64>,
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        self.stats.big_keys += 1;
        b.k.expire_at_ms = expire_at_ms;
        b.cmds.build.expire_at_ms = expire_at_ms;
        b.cmds.finish(&b.k, emit)
    }

    /// Drops a string begun with [`Planner::begin_string`] whose source key changed while it
    /// was read: it is not counted, and what was written under the building name is removed
    /// (the next attempt's first batch would remove it too, but a fall-back to DUMP would not).
    pub fn abandon_string(&mut self, b: StringBuild) -> Option<Work> {
        self.stats.keys = self.stats.keys.saturating_sub(1);
        b.cmds.begun.then(|| Work::Delete {
            db: b.cmds.db,
            key: building_name(&b.k.key),
        })
    }

    /// Plans the deletion of a key that is gone from the source (shake-rump --follow): `None`
    /// when the database map or the key filters leave it out. The type of a deleted key is no
    /// longer known, so `--type` filters do not apply.
    pub fn plan_delete(&mut self, db: u64, mut key: Vec<u8>) -> Result<Option<Work>, ApplyError> {
        let f = &self.opts.filter;
        if !f.db_allowed(db) || !f.key_allowed(&key) {
            return Ok(None);
        }
        let Some(db) = self.opts.db_map.map(db) else {
            return Ok(None);
        };
        self.rename(&mut key)?;
        Ok(Some(Work::Delete { db, key }))
    }

    fn key<R: Read>(
        &mut self,
        parser: &mut RdbParser<R>,
        header: Header,
        mut k: KeyHeader,
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let Some(db) = self.admit(&mut k)? else {
            return Ok(parser.skip_value()?);
        };
        if let Some(why) = refusal_without_decoding(&self.target, header, &k) {
            return Err(ApplyError::Unsupported(why));
        }
        let big = self.opts.big_key_bytes;
        let raw_only = matches!(k.value_type, ValueType::Module | ValueType::Array);
        if raw_only || loads_raw(&self.target, header, k.rdb_type) {
            // Fast path: capture the raw bytes while stepping over the value; if they outgrow the
            // threshold, replay what was captured as commands and decode the rest.
            parser.start_value_capture();
            // A string's header says how long it is: a long one is never captured, it goes as
            // SET and APPENDs of its parts (decompressed on the way when it is LZF).
            if parser.string_value_size()?.is_some_and(|n| n > big as u64) {
                drop(parser.finish_value_capture());
                self.stats.big_keys += 1;
                let mut cmds = Commands::new(db, &k, self.opts, &self.target, self.now_ms);
                while let Some(c) = parser.next_chunk()? {
                    cmds.chunk(&k, c, emit)?;
                }
                return cmds.finish(&k, emit);
            }
            let mut overflow = false;
            while parser.skip_chunk()? {
                if parser.value_capture_len() > big && !raw_only {
                    overflow = true;
                    break;
                }
            }
            let raw = parser.finish_value_capture();
            if !overflow {
                self.refuse_module(&k, &raw)?;
                if k.value_type == ValueType::Module && !self.target.can_load(header, k.rdb_type) {
                    return Err(ApplyError::Unsupported(format!(
                        "key {} holds a module value of RDB type {} that the target cannot load",
                        crate::text::quote_bytes(&k.key),
                        k.rdb_type
                    )));
                }
                self.stats.restored += 1;
                let cmd = restore_command(
                    &k,
                    &[&[k.rdb_type], &raw],
                    Some(self.target.rdb_version),
                    self.opts,
                );
                drop(raw);
                return emit(Work::Restore {
                    db,
                    key: k.key,
                    cmd,
                });
            }
            self.stats.big_keys += 1;
            let mut cmds = Commands::new(db, &k, self.opts, &self.target, self.now_ms);
            let mut prefix =
                RdbParser::for_value(&raw[..], header, k.rdb_type, &k.key, chunking(self.opts))?;
            loop {
                let at = prefix.offset();
                match prefix.next_chunk() {
                    Ok(Some(c)) => cmds.chunk(&k, c, emit)?,
                    Ok(None) => break,
                    // The capture ends at a chunk boundary: running out there is the prefix's end.
                    Err(e) if e.is_truncation() && at == raw.len() as u64 => break,
                    Err(e) => return Err(e.into()),
                }
            }
            drop(prefix);
            drop(raw);
            while let Some(c) = parser.next_chunk()? {
                cmds.chunk(&k, c, emit)?;
            }
            self.stats.dropped_field_ttls += cmds.dropped_field_ttls;
            return cmds.finish(&k, emit);
        }

        self.portable(parser, k, db, emit)
    }

    /// Portable path: decode, hold chunks up to the threshold, then either transcode them into
    /// one payload or, past the threshold, write everything as commands.
    fn portable<R: Read>(
        &mut self,
        parser: &mut RdbParser<R>,
        k: KeyHeader,
        db: u64,
        emit: &mut dyn FnMut(Work) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let big = self.opts.big_key_bytes;
        let mut held: Vec<Chunk> = Vec::new();
        let mut held_bytes = 0usize;
        let mut cmds: Option<Commands> = None;
        let mut fields_kept = 0u64;
        while let Some(mut c) = parser.next_chunk()? {
            if let Chunk::Fields(fields) = &mut c {
                // Fields whose TTL has passed are gone, as expired keys are.
                fields.retain(|f| f.expire_at_ms.is_none_or(|t| t > self.now_ms));
                fields_kept += fields.len() as u64;
            }
            match &mut cmds {
                Some(cm) => cm.chunk(&k, c, emit)?,
                None => {
                    held_bytes += chunk_bytes(&c);
                    held.push(c);
                    if held_bytes > big {
                        let mut cm = Commands::new(db, &k, self.opts, &self.target, self.now_ms);
                        for c in held.drain(..) {
                            cm.chunk(&k, c, emit)?;
                        }
                        cmds = Some(cm);
                    }
                }
            }
        }
        if k.value_type == ValueType::Hash && fields_kept == 0 && cmds.is_none() {
            // Every field had expired: the key is as good as expired.
            self.stats.expired += 1;
            return Ok(());
        }
        if let Some(cm) = cmds {
            self.stats.big_keys += 1;
            self.stats.dropped_field_ttls += cm.dropped_field_ttls;
            return cm.finish(&k, emit);
        }
        let mut tc = Transcoder::new(&self.target, &k, self.opts.field_ttls)?;
        for c in held {
            tc.push(c)?;
        }
        let (payload, dropped) = tc.finish()?;
        self.stats.dropped_field_ttls += dropped;
        self.stats.transcoded += 1;
        let cmd = restore_command(&k, &[&payload], None, self.opts);
        drop(payload);
        emit(Work::Restore {
            db,
            key: k.key,
            cmd,
        })
    }
}

/// Why the value of key `k` (pending in `parser`) cannot be written to `target` at all, if so:
/// module key metadata, an array or a Valkey path hash the target does not load, a Redis 8.8
/// stream with NACKed entries the target cannot load as it is. Consumes the value only when it
/// has to look inside (type-27 streams); otherwise the caller's next `next_item` skips it.
pub fn refusal<R: Read>(
    target: &TargetFormat,
    source: Header,
    parser: &mut RdbParser<R>,
    k: &KeyHeader,
) -> Result<Option<String>, ApplyError> {
    let key = crate::text::quote_bytes(&k.key);
    let why = |w: String| {
        Some(format!("key {key}: {w}, which the target ({target}) has no way to store; use a target of the source's engine and version or newer, or leave the key out (--key/--type filters)"))
    };
    if !k.meta.is_empty() {
        let names: Vec<&str> = k.meta.iter().map(|m| m.name.as_str()).collect();
        return Ok(why(format!(
            "it carries module key metadata ({}), which RESTORE cannot carry",
            names.join(", ")
        )));
    }
    if loads_raw(target, source, k.rdb_type) {
        return Ok(None);
    }
    if k.value_type == ValueType::Array {
        return Ok(why("it is an array (Redis 8.8)".into()));
    }
    if source.magic == Magic::Valkey && k.rdb_type == t::VALKEY_PATH_HASH {
        return Ok(why("it is a Valkey 9.2 path hash".into()));
    }
    if source.magic == Magic::Redis && k.rdb_type == t::STREAM_LISTPACKS_5 {
        while let Some(c) = parser.next_chunk()? {
            if let Chunk::StreamNacked(ids) = c {
                return Ok(why(format!(
                    "its consumer group holds {} NACKed entries (XNACK, Redis 8.8)",
                    ids.len()
                )));
            }
        }
    }
    Ok(None)
}

/// Whether a value of `rdb_type` from an RDB with `source`'s header goes to `target` as its raw
/// bytes (the fast path) rather than re-encoded (the portable path). Module values, which cannot
/// be re-encoded, are decided by the caller. Preflight asks the same question before a run.
pub fn loads_raw(target: &TargetFormat, source: Header, rdb_type: u8) -> bool {
    target.can_load(source, rdb_type) && !restyle(target, source, rdb_type)
}

/// True when raw listpacks of this type may not load on the target although it knows the
/// type: Valkey 9.1 sizes listpack back-lengths differently from Redis and older Valkey at
/// three exact element sizes, and each refuses (or, Redis 7.0, crashes on) the other's form.
/// The source's style is judged from its magic; such values take the portable path, which
/// writes the target's style.
fn restyle(target: &TargetFormat, source: Header, rdb_type: u8) -> bool {
    let source_style = match source.magic {
        Magic::Valkey => BacklenStyle::Minimal,
        Magic::Redis => BacklenStyle::Legacy,
    };
    source_style != target.listpack_backlen
        && matches!(
            rdb_type,
            t::STREAM_LISTPACKS
                | t::HASH_LISTPACK
                | t::ZSET_LISTPACK
                | t::LIST_QUICKLIST_2
                | t::STREAM_LISTPACKS_2
                | t::SET_LISTPACK
                | t::STREAM_LISTPACKS_3
                | t::HASH_LISTPACK_EX_PRE_GA
                | t::HASH_LISTPACK_EX
        )
}

fn chunking(opts: &ApplyOptions) -> ParserOptions {
    opts.parser_options(false)
}

/// The refusals [`refusal`] finds without looking inside the value.
fn refusal_without_decoding(
    target: &TargetFormat,
    source: Header,
    k: &KeyHeader,
) -> Option<String> {
    let key = crate::text::quote_bytes(&k.key);
    if !k.meta.is_empty() {
        let names: Vec<&str> = k.meta.iter().map(|m| m.name.as_str()).collect();
        return Some(format!(
            "key {key}: it carries module key metadata ({}), which RESTORE cannot carry",
            names.join(", ")
        ));
    }
    if k.value_type == ValueType::Array && !target.can_load(source, k.rdb_type) {
        return Some(format!(
            "key {key}: it is an array (Redis 8.8), which the target ({target}) has no way to store"
        ));
    }
    None
}

/// Rough size of a decoded chunk, to bound what the portable path holds in memory.
fn chunk_bytes(c: &Chunk) -> usize {
    match c {
        Chunk::String(s) | Chunk::StringPart { data: s, .. } => s.len(),
        Chunk::Items(v) => v.iter().map(|x| x.len() + 16).sum(),
        Chunk::Scored(v) => v.iter().map(|(m, _)| m.len() + 24).sum(),
        Chunk::Fields(v) => v.iter().map(|f| f.field.len() + f.value.len() + 32).sum(),
        Chunk::StreamEntries(v) => v
            .iter()
            .map(|e| {
                e.fields
                    .iter()
                    .map(|(f, x)| f.len() + x.len() + 16)
                    .sum::<usize>()
                    + 32
            })
            .sum(),
        Chunk::StreamPending(v) => v.len() * 40,
        Chunk::StreamConsumer(c) => c.name.len() + c.pending.len() * 16 + 32,
        Chunk::Module { raw, .. } => raw.len(),
        _ => 64,
    }
}

/// A big string arriving in parts, between [`Planner::begin_string`] and
/// [`Planner::finish_string`] (or [`Planner::abandon_string`]).
pub struct StringBuild {
    k: KeyHeader,
    cmds: Commands,
    /// Bytes of the value planned so far, of `len`.
    offset: u64,
    len: u64,
}

impl StringBuild {
    pub fn key(&self) -> &[u8] {
        &self.k.key
    }
}

/// A big key on its way out as batches of commands, built under its [`building_name`].
struct Commands {
    db: u64,
    key: Vec<u8>,
    /// The key's header with the building name: what the commands write.
    build: KeyHeader,
    rebuild: CommandRebuilder,
    batch: Vec<Vec<u8>>,
    batch_len: usize,
    first: bool,
    begun: bool,
    batch_bytes: usize,
    /// Set when the target has no hash field TTLs: what to do with them (HPEXPIREAT would fail).
    field_ttls: Option<(FieldTtlPolicy, TargetFormat)>,
    dropped_field_ttls: u64,
    /// The target knows XSETID ENTRIESADDED/MAXDELETEDID and XGROUP CREATE ... ENTRIESREAD
    /// (Redis 7.0, RDB 10, and every Valkey); Redis 6.2 refuses them.
    stream_counters: bool,
    now_ms: i64,
    target: TargetFormat,
}

type Emit<'e> = &'e mut dyn FnMut(Work) -> Result<(), ApplyError>;

impl Commands {
    fn new(
        db: u64,
        k: &KeyHeader,
        opts: &ApplyOptions,
        target: &TargetFormat,
        now_ms: i64,
    ) -> Self {
        let mut rebuild = CommandRebuilder::new();
        // Deleting first is the writing half's call: it depends on the conflict policy.
        rebuild.delete_first = false;
        Commands {
            db,
            key: k.key.clone(),
            build: KeyHeader {
                key: building_name(&k.key),
                ..k.clone()
            },
            rebuild,
            batch: Vec::new(),
            batch_len: 0,
            first: true,
            begun: false,
            batch_bytes: opts.batch_bytes,
            field_ttls: target
                .field_ttl_hash_type()
                .is_none()
                .then_some((opts.field_ttls, *target)),
            dropped_field_ttls: 0,
            stream_counters: target.magic == Magic::Valkey || target.rdb_version >= 10,
            now_ms,
            target: *target,
        }
    }

    fn flush(&mut self, last: bool, emit: Emit<'_>) -> Result<(), ApplyError> {
        let w = Work::Commands {
            db: self.db,
            key: self.key.clone(),
            cmds: std::mem::take(&mut self.batch),
            first: self.first,
            last,
        };
        self.batch_len = 0;
        self.first = false;
        emit(w)
    }

    fn push<'b>(batch: &'b mut Vec<Vec<u8>>, len: &'b mut usize) -> impl FnMut(&[u8]) + 'b {
        move |cmd: &[u8]| {
            *len += cmd.len();
            batch.push(cmd.to_vec());
        }
    }

    fn chunk(&mut self, k: &KeyHeader, mut c: Chunk, emit: Emit<'_>) -> Result<(), ApplyError> {
        match &c {
            Chunk::StreamNacked(ids) => {
                return Err(TranscodeError::NoEquivalent {
                    key: k.key.clone(),
                    what: format!(
                        "its consumer group holds {} NACKed entries (XNACK, Redis 8.8), which no command recreates",
                        ids.len()
                    ),
                    target: self.target,
                }
                .into())
            }
            Chunk::PathFields { .. } => {
                return Err(TranscodeError::NoEquivalent {
                    key: k.key.clone(),
                    what: "it is a Valkey 9.2 path hash, which no command builds".into(),
                    target: self.target,
                }
                .into())
            }
            // IDMP state: commands on Redis 8.6+, dropped below (as the transcoder does).
            Chunk::StreamIdmp(_)
                if !(self.target.magic == Magic::Redis && self.target.rdb_version >= 13) =>
            {
                return Ok(())
            }
            _ => {}
        }
        if let Chunk::Fields(fields) = &mut c {
            // A field whose TTL has passed is gone, as a key whose TTL has passed is.
            let now = self.now_ms;
            fields.retain(|f| f.expire_at_ms.is_none_or(|t| t > now));
        }
        if let (Chunk::Fields(fields), Some((policy, target))) = (&mut c, self.field_ttls) {
            for f in fields.iter_mut().filter(|f| f.expire_at_ms.is_some()) {
                if policy == FieldTtlPolicy::Refuse {
                    return Err(TranscodeError::FieldTtlUnsupported {
                        key: k.key.clone(),
                        field: f.field.clone(),
                        target,
                    }
                    .into());
                }
                f.expire_at_ms = None;
                self.dropped_field_ttls += 1;
            }
        }
        if !self.stream_counters {
            match &mut c {
                Chunk::StreamMeta(m) => {
                    m.entries_added = None;
                    m.max_deleted_id = None;
                }
                Chunk::StreamGroup(g) => g.entries_read = None,
                _ => {}
            }
        }
        // A full batch goes before the next chunk's commands join it, not after: the last batch
        // then always carries a command whose reply counts the key as written.
        if self.batch_len >= self.batch_bytes {
            self.flush(false, emit)?;
        }
        let b = &self.build;
        if !self.begun {
            self.begun = true;
            self.rebuild
                .begin(b, &mut Self::push(&mut self.batch, &mut self.batch_len));
        }
        self.rebuild
            .chunk(b, c, &mut Self::push(&mut self.batch, &mut self.batch_len));
        Ok(())
    }

    fn finish(mut self, k: &KeyHeader, emit: Emit<'_>) -> Result<(), ApplyError> {
        let b = &self.build;
        if !self.begun {
            self.rebuild
                .begin(b, &mut Self::push(&mut self.batch, &mut self.batch_len));
        }
        // The TTL goes on the building key, and RENAME keeps it.
        self.rebuild
            .end(b, &mut Self::push(&mut self.batch, &mut self.batch_len));
        let mut rename = Vec::new();
        crate::resp::encode_command(&mut rename, &[&b"RENAME"[..], &b.key, &k.key]);
        self.batch_len += rename.len();
        self.batch.push(rename);
        self.flush(true, emit)
    }
}

/// The id at the start of a module value: an RDB length (6, 14, 32 or 64 bits).
fn rdb_length(b: &[u8]) -> Option<u64> {
    let first = *b.first()?;
    match first >> 6 {
        0 => Some(u64::from(first & 0x3f)),
        1 => Some((u64::from(first & 0x3f) << 8) | u64::from(*b.get(1)?)),
        _ if first == 0x80 => Some(u64::from(u32::from_be_bytes(b.get(1..5)?.try_into().ok()?))),
        _ if first == 0x81 => Some(u64::from_be_bytes(b.get(1..9)?.try_into().ok()?)),
        _ => None,
    }
}

/// Why a value of module type `type_name` (the 9-character name its RDB id encodes) cannot load
/// on a server with `loaded` modules (`MODULE LIST` names, lowercase), or `None` when it may. A
/// type name does not say which module defines it, so this is only sure of the negative: Redis
/// 8's built-in `vectorset` type needs the `vectorset` module; any other type needs at least one
/// module besides it. The one place for this rule: files (before anything is written), the full
/// sync, rump and repairs (before the key is written).
pub(crate) fn module_refusal(
    key: &[u8],
    type_name: &str,
    loaded: &BTreeSet<String>,
) -> Option<String> {
    let may = if type_name == "vectorset" {
        loaded.contains("vectorset")
    } else {
        loaded.iter().any(|m| m != "vectorset")
    };
    (!may).then(|| {
        format!(
            "key {} holds a value of module type {type_name:?}, and the target loads no module that could read it (MODULE LIST: {}): load that module on the target first, or leave module values out (--type)",
            crate::text::quote_bytes(key),
            if loaded.is_empty() {
                "empty".to_string()
            } else {
                loaded.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        )
    })
}
