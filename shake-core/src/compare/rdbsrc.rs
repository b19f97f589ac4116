//! An RDB file as the source side: read with the streaming parser on a blocking thread, compared
//! against the live target as it goes.
//!
//! Small values (up to [`SMALL_ELEMENTS`] elements, strings under [`SMALL_STRING_BYTES`]) are
//! decoded whole and compared in batches, like keys of a live source. Bigger ones flow as pieces
//! of at most [`CHUNK_ELEMENTS`] elements, each checked against the target as it arrives, so a
//! big collection is never held whole (a single string is: the parser decodes a string value at
//! once).
//!
//! The extra-key pass needs to know which keys the file has. The first round keeps one 64-bit
//! fingerprint (SipHash of target database and key name, with a per-run random key) per file
//! key: 8 bytes per key in a hash set, about 9 to 18 bytes with the set's overhead, so 10M keys
//! take 90 to 180 MB. A fingerprint collision could hide an extra key; with n file keys the
//! chance for a given extra key is n / 2^64 (about 5e-13 for 10M keys).
//! Later rounds read the file again, looking only at the keys that differed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::engine::{judge, judge_ttl, now_ms, Ctx, Reader, SideKey, Ty, Verdict};
use super::model::*;
use super::{
    CompareError, DiffKind, Mode, Subject, CHUNK_BYTES, CHUNK_ELEMENTS, SMALL_ELEMENTS,
    SMALL_STRING_BYTES,
};
use crate::rdb::{Chunk, Item, ParserOptions, RdbParser, ValueType};

/// What the reading thread sends.
enum Msg {
    /// A whole key (small value, or any value below full mode).
    Key {
        db: u64,
        key: Bytes,
        src: SideKey,
    },
    /// A big value begins; its pieces follow, then `BigEnd`.
    BigStart {
        db: u64,
        key: Bytes,
        src: SideKey,
    },
    Piece(Piece),
    BigEnd {
        len: u64,
        info: Option<StreamInfo>,
    },
}

/// Collects a stream's bookkeeping from its chunks.
#[derive(Default)]
struct InfoBuilder {
    info: Option<StreamInfo>,
}

impl InfoBuilder {
    fn take(&mut self, c: &Chunk) -> bool {
        match c {
            Chunk::StreamMeta(m) => {
                self.info = Some(StreamInfo {
                    length: m.length,
                    last_id: m.last_id,
                    max_deleted_id: m.max_deleted_id,
                    entries_added: m.entries_added,
                    groups: Vec::new(),
                });
            }
            Chunk::StreamGroup(g) => {
                if let Some(i) = &mut self.info {
                    i.groups.push(GroupInfo {
                        name: Bytes::copy_from_slice(&g.name),
                        last_id: g.last_id,
                        pending: 0,
                        consumers: 0,
                        entries_read: g.entries_read.filter(|&v| v >= 0),
                    });
                }
            }
            Chunk::StreamPending(p) => {
                if let Some(g) = self.info.as_mut().and_then(|i| i.groups.last_mut()) {
                    g.pending += p.len() as u64;
                }
            }
            Chunk::StreamConsumer(_) => {
                if let Some(g) = self.info.as_mut().and_then(|i| i.groups.last_mut()) {
                    g.consumers += 1;
                }
            }
            _ => return false,
        }
        true
    }

    fn finish(&mut self) -> Option<StreamInfo> {
        let mut i = self.info.take()?;
        i.groups.sort_by(|a, b| a.name.cmp(&b.name));
        Some(i)
    }
}

/// A decoded chunk as a piece of the value; `pos` is the position of its first element (list
/// index, string offset).
fn piece_of(c: Chunk, ty: ValueType, pos: u64) -> Option<Piece> {
    let b = Bytes::from;
    Some(match c {
        Chunk::String(v) | Chunk::StringPart { data: v, .. } => Piece::Bytes {
            offset: pos,
            data: b(v),
        },
        Chunk::Items(v) if ty == ValueType::List => Piece::Items {
            start: pos,
            items: v.into_iter().map(b).collect(),
        },
        Chunk::Items(v) => Piece::Members(v.into_iter().map(b).collect()),
        Chunk::Scored(v) => {
            Piece::Scored(v.into_iter().map(|(m, s)| (b(m), s.to_bits())).collect())
        }
        Chunk::Fields(v) => {
            Piece::Fields(v.into_iter().map(|f| (b(f.field), b(f.value))).collect())
        }
        Chunk::StreamEntries(v) => Piece::Entries(
            v.into_iter()
                .filter(|e| !e.deleted)
                .map(|e| {
                    let mut flat = Vec::with_capacity(e.fields.len() * 2);
                    for (f, x) in e.fields {
                        flat.push(b(f));
                        flat.push(b(x));
                    }
                    (e.id, flat)
                })
                .collect(),
        ),
        _ => return None,
    })
}

/// Pieces made whole into a value (a small value).
fn value_of(ty: ValueType, pieces: Vec<Piece>) -> Option<Value> {
    let mut v = match ty {
        ValueType::String => Value::String(Bytes::new()),
        ValueType::List => Value::List(Vec::new()),
        ValueType::Set => Value::Set(Vec::new()),
        ValueType::Zset => Value::Zset(Vec::new()),
        ValueType::Hash => Value::Hash(Vec::new()),
        ValueType::Stream => Value::Stream(Vec::new()),
        // Arrays are compared like module values: by type and presence only (no server in
        // the comparer's reach exposes their content with commands we read).
        ValueType::Module | ValueType::Array => return None,
    };
    for p in pieces {
        match (&mut v, p) {
            (Value::String(s), Piece::Bytes { data, .. }) => {
                if s.is_empty() {
                    *s = data;
                } else {
                    let mut joined = s.to_vec();
                    joined.extend_from_slice(&data);
                    *s = joined.into();
                }
            }
            (Value::List(l), Piece::Items { items, .. }) => l.extend(items),
            (Value::Set(l), Piece::Members(m)) => l.extend(m),
            (Value::Zset(l), Piece::Scored(m)) => l.extend(m),
            (Value::Hash(l), Piece::Fields(m)) => l.extend(m),
            (Value::Stream(l), Piece::Entries(m)) => l.extend(m),
            _ => {}
        }
    }
    Some(match v {
        Value::Set(l) => Value::set(l),
        Value::Zset(l) => Value::zset(l),
        Value::Hash(l) => Value::hash(l),
        v => v,
    })
}

/// A whole value as pieces (a small source value whose target turned out big).
fn pieces_of(v: &Value) -> Vec<Piece> {
    vec![match v {
        Value::String(s) => Piece::Bytes {
            offset: 0,
            data: s.clone(),
        },
        Value::List(l) => Piece::Items {
            start: 0,
            items: l.clone(),
        },
        Value::Set(l) => Piece::Members(l.clone()),
        Value::Zset(l) => Piece::Scored(l.clone()),
        Value::Hash(l) => Piece::Fields(l.clone()),
        Value::Stream(l) => Piece::Entries(l.clone()),
    }]
}

struct FileResult {
    fingerprints: Option<HashSet<u64>>,
    functions: HashMap<Bytes, Bytes>,
}

/// Reads the file on this (blocking) thread, sending what is to be compared.
fn read_file(
    ctx: &Ctx,
    path: &Path,
    only: Option<&HashSet<(u64, Bytes)>>,
    tx: &mpsc::Sender<Msg>,
) -> Result<FileResult, CompareError> {
    let opts = &ctx.opts;
    let rdb_err = |e: crate::rdb::RdbError| CompareError::Rdb(format!("{}: {e}", path.display()));
    let file = File::open(path)
        .map_err(|e| CompareError::Rdb(format!("cannot open {}: {e}", path.display())))?;
    let mut parser = RdbParser::with_options(
        file,
        ParserOptions {
            chunk_elements: CHUNK_ELEMENTS,
            relaxed_version: opts.relaxed_version,
            verify_checksum: true,
            string_part_bytes: CHUNK_BYTES,
            ..ParserOptions::default()
        },
    );
    parser.header().map_err(rdb_err)?;
    let mut out = FileResult {
        fingerprints: only.is_none().then(HashSet::new),
        functions: HashMap::new(),
    };
    let now = now_ms();
    let send = |m: Msg| tx.blocking_send(m).is_ok();
    while let Some(item) = parser.next_item().map_err(rdb_err)? {
        let h = match item {
            Item::Function(f) => {
                let name = f.name.clone().map(Bytes::from).or_else(|| {
                    crate::apply::functions::library_name(&f.code).map(Bytes::copy_from_slice)
                });
                if let Some(name) = name {
                    out.functions.insert(name, Bytes::from(f.code));
                }
                continue;
            }
            Item::Key(h) => h,
            _ => continue,
        };
        let wanted = opts.filter.db_allowed(h.db)
            && opts.wants_key(&h.key)
            && h.expire_at_ms.is_none_or(|t| t > now);
        if wanted {
            if let Some(f) = &mut out.fingerprints {
                // Under the key's target name: what the target's keys are looked up by.
                let name = opts
                    .rename
                    .key(&h.key)
                    .map_err(|e| CompareError::Rdb(format!("--rename-prefix: {e}")))?;
                f.insert(ctx.hasher.hash_one((ctx.target_db(h.db), name.as_ref())));
            }
        }
        let key = Bytes::from(h.key.clone());
        let selected = wanted
            && opts.filter.type_allowed(h.value_type)
            && only.is_none_or(|o| o.contains(&(h.db, key.clone())));
        if !selected {
            parser.skip_value().map_err(rdb_err)?;
            continue;
        }
        let ty = h.value_type;
        let mut src = SideKey::new(Ty::Is(ty), h.expire_at_ms);
        match opts.mode {
            Mode::Outline => {
                parser.skip_value().map_err(rdb_err)?;
            }
            Mode::Length => {
                let mut n = 0u64;
                let mut info = InfoBuilder::default();
                while let Some(c) = parser.next_chunk().map_err(rdb_err)? {
                    if !info.take(&c) {
                        n += match &c {
                            Chunk::String(s) | Chunk::StringPart { data: s, .. } => s.len() as u64,
                            c => c.elements() as u64,
                        };
                    }
                }
                if ty != ValueType::Module {
                    src.len = Some(n);
                }
            }
            Mode::Full => {
                let mut info = InfoBuilder::default();
                let mut held: Vec<Piece> = Vec::new();
                let (mut n, mut bytes, mut big) = (0u64, 0usize, false);
                while let Some(c) = parser.next_chunk().map_err(rdb_err)? {
                    if info.take(&c) {
                        continue;
                    }
                    let count = match &c {
                        Chunk::String(s) | Chunk::StringPart { data: s, .. } => s.len() as u64,
                        c => c.elements() as u64,
                    };
                    let size = chunk_bytes(&c);
                    // A string comes whole, or in parts a little over CHUNK_BYTES: cut it into windows.
                    let pieces: Vec<Piece> = match c {
                        Chunk::String(s) | Chunk::StringPart { data: s, .. }
                            if s.len() > CHUNK_BYTES =>
                        {
                            let s = Bytes::from(s);
                            (0..s.len())
                                .step_by(CHUNK_BYTES)
                                .map(|o| Piece::Bytes {
                                    offset: n + o as u64,
                                    data: s.slice(o..(o + CHUNK_BYTES).min(s.len())),
                                })
                                .collect()
                        }
                        c => piece_of(c, ty, n).into_iter().collect(),
                    };
                    n += count;
                    bytes += size;
                    if big {
                        for p in pieces {
                            if !send(Msg::Piece(p)) {
                                return Ok(out);
                            }
                        }
                        continue;
                    }
                    held.extend(pieces);
                    let too_big = if ty == ValueType::String {
                        n >= SMALL_STRING_BYTES as u64
                    } else {
                        n > SMALL_ELEMENTS as u64 || bytes > CHUNK_BYTES
                    };
                    if too_big {
                        big = true;
                        if !send(Msg::BigStart {
                            db: h.db,
                            key: key.clone(),
                            src: src.clone(),
                        }) {
                            return Ok(out);
                        }
                        for p in held.drain(..) {
                            if !send(Msg::Piece(p)) {
                                return Ok(out);
                            }
                        }
                    }
                }
                let info = info.finish();
                if big {
                    if !send(Msg::BigEnd { len: n, info }) {
                        return Ok(out);
                    }
                    continue;
                }
                if ty != ValueType::Module {
                    src.len = Some(n);
                }
                src.value = value_of(ty, held);
                src.info = info;
                if ty == ValueType::Stream {
                    // XLEN counts live entries; the RDB's own count says the same.
                    if let Some(i) = &src.info {
                        src.len = Some(i.length);
                    }
                }
            }
        }
        if !send(Msg::Key { db: h.db, key, src }) {
            return Ok(out);
        }
    }
    Ok(out)
}

fn chunk_bytes(c: &Chunk) -> usize {
    match c {
        Chunk::String(s) | Chunk::StringPart { data: s, .. } => s.len(),
        Chunk::Items(v) => v.iter().map(|x| x.len() + 16).sum(),
        Chunk::Scored(v) => v.iter().map(|x| x.0.len() + 24).sum(),
        Chunk::Fields(v) => v.iter().map(|f| f.field.len() + f.value.len() + 32).sum(),
        Chunk::StreamEntries(v) => v
            .iter()
            .map(|e| {
                32 + e
                    .fields
                    .iter()
                    .map(|(a, b)| a.len() + b.len() + 32)
                    .sum::<usize>()
            })
            .sum(),
        _ => 0,
    }
}

/// A big value in progress on the async side.
struct Big {
    db: u64,
    key: Bytes,
    src: SideKey,
    dst: SideKey,
    /// Decided already (a type or existence difference, or a first mismatch).
    settled: bool,
    mismatch: Option<Mismatch>,
}

/// One round's pass over the file: compares every selected key (or only `only`), then the
/// function libraries when `functions`. Returns the fingerprints of the file's keys on the
/// first round.
pub(crate) async fn file_pass(
    ctx: Arc<Ctx>,
    path: &Path,
    only: Option<Arc<BTreeSet<(u64, Bytes)>>>,
    functions: bool,
) -> Result<Option<HashSet<u64>>, CompareError> {
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let only: Option<HashSet<(u64, Bytes)>> = only.map(|o| o.iter().cloned().collect());
    let (ctx2, path2) = (ctx.clone(), path.to_path_buf());
    let reading = tokio::task::spawn_blocking(move || read_file(&ctx2, &path2, only.as_ref(), &tx));
    let consumed = consume(&ctx, &mut rx).await;
    // On a target failure the reader stops at its next send.
    drop(rx);
    let read = reading
        .await
        .map_err(|e| CompareError::Setup(format!("the RDB reader failed: {e}")))?;
    consumed?;
    let read = read?;
    if functions {
        super::engine::compare_functions(&ctx, Some(read.functions)).await?;
    }
    Ok(read.fingerprints)
}

async fn consume(ctx: &Arc<Ctx>, rx: &mut mpsc::Receiver<Msg>) -> Result<(), CompareError> {
    let mut r = Reader::connect(ctx.clone()).await?;
    let mut batch: Vec<(Bytes, SideKey)> = Vec::new();
    let mut batch_db = 0u64;
    let mut big: Option<Big> = None;
    let limit = ctx.opts.scan_count.max(1);
    while let Some(m) = rx.recv().await {
        match m {
            Msg::Key { db, key, src } => {
                if db != batch_db && !batch.is_empty() {
                    flush(&mut r, batch_db, &mut batch).await?;
                }
                batch_db = db;
                batch.push((key, src));
                if batch.len() >= limit {
                    flush(&mut r, batch_db, &mut batch).await?;
                }
            }
            Msg::BigStart { db, key, src } => {
                flush(&mut r, batch_db, &mut batch).await?;
                big = Some(big_start(&mut r, db, key, src).await?);
            }
            Msg::Piece(p) => {
                if let Some(b) = &mut big {
                    if !b.settled {
                        let tdb = ctx.target_db(b.db);
                        if let Some(m) = r.verify(tdb, &b.key, &p).await? {
                            b.mismatch = Some(m);
                            b.settled = true;
                        }
                    }
                }
            }
            Msg::BigEnd { len, info } => {
                if let Some(b) = big.take() {
                    big_end(&mut r, b, len, info).await?;
                }
            }
        }
    }
    flush(&mut r, batch_db, &mut batch).await
}

async fn flush(
    r: &mut Reader,
    db: u64,
    batch: &mut Vec<(Bytes, SideKey)>,
) -> Result<(), CompareError> {
    if batch.is_empty() {
        return Ok(());
    }
    let ctx = r.ctx.clone();
    let opts = &ctx.opts;
    let tdb = ctx.target_db(db);
    let want: Vec<(Bytes, Option<ValueType>)> = batch
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                match s.ty {
                    Ty::Is(t) => Some(t),
                    _ => None,
                },
            )
        })
        .collect();
    let states = r.target_states(tdb, &want, opts.mode, true).await?;
    ctx.counts
        .source_keys
        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let now = now_ms();
    for ((key, src), dst) in batch.drain(..).zip(states) {
        let subject = Subject::Key {
            db,
            key: key.clone(),
        };
        match judge(opts.mode, opts.ttl_tolerance_ms, now, &src, &dst) {
            Verdict::Same => {}
            Verdict::Differs(kind, m) => ctx.emit(subject, kind, m).await,
            Verdict::Big => {
                // The source is small, the target is not: check the source's elements there,
                // then the lengths.
                let mut found = None;
                if let Some(v) = &src.value {
                    for p in pieces_of(v) {
                        if let Some(m) = r.verify(tdb, &key, &p).await? {
                            found = Some(m);
                            break;
                        }
                    }
                }
                if found.is_none() {
                    if let (Ty::Is(t), Some(a)) = (&src.ty, src.len) {
                        if let Some(b) = r.target_len(tdb, &key, *t).await? {
                            if a != b {
                                found = Some(lengths(a, b));
                            }
                        }
                    }
                }
                match found {
                    Some(m) => ctx.emit(subject, DiffKind::Value, m).await,
                    None => {
                        if let Verdict::Differs(kind, m) =
                            judge_ttl(&src, &dst, opts.ttl_tolerance_ms, now_ms())
                        {
                            ctx.emit(subject, kind, m).await;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn big_start(r: &mut Reader, db: u64, key: Bytes, src: SideKey) -> Result<Big, CompareError> {
    let ctx = r.ctx.clone();
    let tdb = ctx.target_db(db);
    let want = match src.ty {
        Ty::Is(t) => Some(t),
        _ => None,
    };
    let dst = r
        .target_states(tdb, &[(key.clone(), want)], ctx.opts.mode, true)
        .await?
        .pop()
        .unwrap_or_else(|| SideKey::new(Ty::Absent, None));
    let mut b = Big {
        db,
        key,
        src,
        dst,
        settled: false,
        mismatch: None,
    };
    // Existence and type are known now; the value only once every piece is in.
    let mut probe = b.src.clone();
    probe.big = true;
    if let Verdict::Differs(kind, m) = judge(Mode::Outline, i64::MAX, now_ms(), &probe, &b.dst) {
        if kind != DiffKind::Ttl {
            b.settled = true;
            ctx.emit(
                Subject::Key {
                    db,
                    key: b.key.clone(),
                },
                kind,
                m,
            )
            .await;
            b.mismatch = None;
            b.src.ty = Ty::Absent; // reported: nothing more to say at the end
        }
    }
    Ok(b)
}

async fn big_end(
    r: &mut Reader,
    mut b: Big,
    len: u64,
    info: Option<StreamInfo>,
) -> Result<(), CompareError> {
    let ctx = r.ctx.clone();
    let opts = &ctx.opts;
    ctx.counts
        .source_keys
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if b.src.ty == Ty::Absent {
        return Ok(());
    }
    let subject = Subject::Key {
        db: b.db,
        key: b.key.clone(),
    };
    if let Some(m) = b.mismatch.take() {
        ctx.emit(subject, DiffKind::Value, m).await;
        return Ok(());
    }
    let tdb = ctx.target_db(b.db);
    if let Ty::Is(t) = b.src.ty {
        b.src.len = Some(if t == ValueType::Stream {
            info.as_ref().map_or(len, |i| i.length)
        } else {
            len
        });
        b.dst.len = r.target_len(tdb, &b.key, t).await?;
    }
    b.src.info = info;
    b.src.big = true;
    b.dst.big = true;
    let now = now_ms();
    match judge(opts.mode, opts.ttl_tolerance_ms, now, &b.src, &b.dst) {
        Verdict::Differs(kind, m) => ctx.emit(subject, kind, m).await,
        Verdict::Big => {
            if let Verdict::Differs(kind, m) = judge_ttl(&b.src, &b.dst, opts.ttl_tolerance_ms, now)
            {
                ctx.emit(subject, kind, m).await;
            }
        }
        Verdict::Same => {}
    }
    Ok(())
}
