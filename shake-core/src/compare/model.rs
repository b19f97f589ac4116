//! What the comparison works on: a key's state on one side (type, deadline, length, and its value
//! when it is small enough to hold), stream bookkeeping, the pieces a big value is compared in,
//! and the short descriptions that go into a difference's `source` / `target` fields.
//!
//! Both sources (a live server, an RDB file) and the live target are turned into these, so one
//! set of comparison rules serves every pairing.

use bytes::Bytes;

use crate::rdb::StreamId;
use crate::resp::Reply;
use crate::text::{parse_redis_double, quote_bytes};

/// A complete, normalized value: unordered collections sorted (and deduplicated, since SCAN may
/// return an element twice), scores as the bits of their double.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Bytes),
    List(Vec<Bytes>),
    Set(Vec<Bytes>),
    Zset(Vec<(Bytes, u64)>),
    Hash(Vec<(Bytes, Bytes)>),
    /// Entries in id order; each entry's fields as a flat field, value, field, value list.
    Stream(Vec<(StreamId, Vec<Bytes>)>),
}

impl Value {
    pub fn len(&self) -> usize {
        match self {
            Value::String(b) => b.len(),
            Value::List(v) | Value::Set(v) => v.len(),
            Value::Zset(v) => v.len(),
            Value::Hash(v) => v.len(),
            Value::Stream(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set(mut v: Vec<Bytes>) -> Value {
        v.sort_unstable();
        v.dedup();
        Value::Set(v)
    }

    pub fn zset(mut v: Vec<(Bytes, u64)>) -> Value {
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Value::Zset(v)
    }

    pub fn hash(mut v: Vec<(Bytes, Bytes)>) -> Value {
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Value::Hash(v)
    }
}

/// A stream's bookkeeping as both XINFO and the RDB can tell it. Fields one side cannot tell
/// (older servers, older RDB versions) are `None` and not compared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamInfo {
    pub length: u64,
    pub last_id: StreamId,
    pub max_deleted_id: Option<StreamId>,
    pub entries_added: Option<u64>,
    /// Sorted by name.
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupInfo {
    pub name: Bytes,
    pub last_id: StreamId,
    pub pending: u64,
    pub consumers: u64,
    pub entries_read: Option<i64>,
}

/// Part of a big value, compared against the other side by position (strings, lists, streams)
/// or by lookup (sets, zsets, hashes).
#[derive(Debug, Clone)]
pub enum Piece {
    Bytes { offset: u64, data: Bytes },
    Items { start: u64, items: Vec<Bytes> },
    Members(Vec<Bytes>),
    Scored(Vec<(Bytes, u64)>),
    Fields(Vec<(Bytes, Bytes)>),
    Entries(Vec<(StreamId, Vec<Bytes>)>),
}

impl Piece {
    pub fn elements(&self) -> u64 {
        match self {
            Piece::Bytes { data, .. } => data.len() as u64,
            Piece::Items { items, .. } => items.len() as u64,
            Piece::Members(v) => v.len() as u64,
            Piece::Scored(v) => v.len() as u64,
            Piece::Fields(v) => v.len() as u64,
            Piece::Entries(v) => v.len() as u64,
        }
    }
}

/// A first mismatch: what the source has, what the target has.
pub type Mismatch = (String, String);

/// A byte string for a message: quoted, cut after 48 bytes with the full length noted.
pub fn short(b: &[u8]) -> String {
    const MAX: usize = 48;
    if b.len() <= MAX {
        quote_bytes(b)
    } else {
        format!("{}...({} bytes)", quote_bytes(&b[..MAX]), b.len())
    }
}

pub fn score_text(bits: u64) -> String {
    crate::text::format_redis_double(f64::from_bits(bits))
}

/// Parses a score as a server prints it (`%.17g`, or the shortest round-trip form, `inf`,
/// `-inf`): both read back to the exact double.
pub fn parse_score(b: &[u8]) -> Option<u64> {
    parse_redis_double(b).map(f64::to_bits)
}

pub fn parse_id(b: &[u8]) -> Option<StreamId> {
    let s = std::str::from_utf8(b).ok()?;
    let (ms, seq) = s.split_once('-')?;
    Some(StreamId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The id right after `id` (what an exclusive range start means, spelled for servers before 6.2).
pub fn next_id(id: StreamId) -> Option<StreamId> {
    if id.seq < u64::MAX {
        Some(StreamId {
            ms: id.ms,
            seq: id.seq + 1,
        })
    } else {
        id.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 })
    }
}

/// Compares two complete values of the same type; `None` when equal.
pub fn compare_values(src: &Value, dst: &Value) -> Option<Mismatch> {
    match (src, dst) {
        (Value::String(a), Value::String(b)) => compare_bytes(0, a, b),
        (Value::List(a), Value::List(b)) => {
            if a.len() != b.len() {
                return Some(lengths(a.len() as u64, b.len() as u64));
            }
            compare_items(0, a, b)
        }
        (Value::Set(a), Value::Set(b)) => {
            if a.len() != b.len() {
                return Some(lengths(a.len() as u64, b.len() as u64));
            }
            let missing = a.iter().find(|m| b.binary_search(m).is_err())?;
            Some((
                format!("member {}", short(missing)),
                format!("member {} absent", short(missing)),
            ))
        }
        (Value::Zset(a), Value::Zset(b)) => {
            if a.len() != b.len() {
                return Some(lengths(a.len() as u64, b.len() as u64));
            }
            for (m, s) in a {
                let other = b
                    .binary_search_by(|x| x.0.as_ref().cmp(m.as_ref()))
                    .ok()
                    .map(|i| b[i].1);
                if let Some(m) = score_mismatch(m, *s, other) {
                    return Some(m);
                }
            }
            None
        }
        (Value::Hash(a), Value::Hash(b)) => {
            if a.len() != b.len() {
                return Some(lengths(a.len() as u64, b.len() as u64));
            }
            for (f, v) in a {
                let other = b
                    .binary_search_by(|x| x.0.as_ref().cmp(f.as_ref()))
                    .ok()
                    .map(|i| &b[i].1);
                if let Some(m) = field_mismatch(f, v, other.map(|b| b.as_ref())) {
                    return Some(m);
                }
            }
            None
        }
        (Value::Stream(a), Value::Stream(b)) => {
            if a.len() != b.len() {
                return Some(lengths(a.len() as u64, b.len() as u64));
            }
            compare_entries(a, b)
        }
        (a, b) => Some((kind_name(a).into(), kind_name(b).into())),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Set(_) => "set",
        Value::Zset(_) => "zset",
        Value::Hash(_) => "hash",
        Value::Stream(_) => "stream",
    }
}

pub fn lengths(a: u64, b: u64) -> Mismatch {
    (format!("length {a}"), format!("length {b}"))
}

/// Two windows of a string that start at `offset`.
pub fn compare_bytes(offset: u64, a: &[u8], b: &[u8]) -> Option<Mismatch> {
    if a == b {
        return None;
    }
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    let Some(at) = at else {
        // One is a prefix of the other.
        return Some((
            format!("{} bytes", offset + a.len() as u64),
            format!("{} bytes", offset + b.len() as u64),
        ));
    };
    let from = at.saturating_sub(8);
    let pos = offset + at as u64;
    if offset == 0 && a.len() <= 48 && b.len() <= 48 {
        return Some((short(a), short(b)));
    }
    Some((
        format!("byte {pos}: ...{}", short(&a[from..a.len().min(at + 16)])),
        format!("byte {pos}: ...{}", short(&b[from..b.len().min(at + 16)])),
    ))
}

/// List elements from position `start`, both sides the same count.
pub fn compare_items(start: u64, a: &[Bytes], b: &[Bytes]) -> Option<Mismatch> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let i = start + i as u64;
            return Some((
                format!("element {i} {}", short(x)),
                format!("element {i} {}", short(y)),
            ));
        }
    }
    if a.len() != b.len() {
        let i = start + a.len().min(b.len()) as u64;
        let d = |v: &[Bytes]| match v.get(a.len().min(b.len())) {
            Some(x) => format!("element {i} {}", short(x)),
            None => format!("no element {i}"),
        };
        return Some((d(a), d(b)));
    }
    None
}

pub fn score_mismatch(member: &[u8], src: u64, dst: Option<u64>) -> Option<Mismatch> {
    match dst {
        Some(d) if d == src => None,
        Some(d) => Some((
            format!("member {} score {}", short(member), score_text(src)),
            format!("member {} score {}", short(member), score_text(d)),
        )),
        None => Some((
            format!("member {} score {}", short(member), score_text(src)),
            format!("member {} absent", short(member)),
        )),
    }
}

pub fn field_mismatch(field: &[u8], src: &[u8], dst: Option<&[u8]>) -> Option<Mismatch> {
    match dst {
        Some(d) if d == src => None,
        Some(d) => Some((
            format!("field {} = {}", short(field), short(src)),
            format!("field {} = {}", short(field), short(d)),
        )),
        None => Some((
            format!("field {} = {}", short(field), short(src)),
            format!("field {} absent", short(field)),
        )),
    }
}

fn describe_entry(e: Option<&(StreamId, Vec<Bytes>)>) -> String {
    match e {
        None => "no entry".into(),
        Some((id, fields)) => {
            let mut s = format!("entry {id} {{");
            for (i, kv) in fields.chunks(2).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                if i == 4 {
                    s.push_str("...");
                    break;
                }
                s.push_str(&short(&kv[0]));
                if let Some(v) = kv.get(1) {
                    s.push_str(": ");
                    s.push_str(&short(v));
                }
            }
            s.push('}');
            s
        }
    }
}

/// Stream entries in order; the sides may have different counts (the rest is a mismatch).
pub fn compare_entries(
    a: &[(StreamId, Vec<Bytes>)],
    b: &[(StreamId, Vec<Bytes>)],
) -> Option<Mismatch> {
    let n = a.len().max(b.len());
    (0..n).find_map(|i| {
        let (x, y) = (a.get(i), b.get(i));
        (x != y).then(|| (describe_entry(x), describe_entry(y)))
    })
}

/// Compares stream bookkeeping: length, last id, groups (names, last delivered ids, pending and
/// consumer counts) and, where both sides know them, the max deleted id, entries added and each
/// group's entries read.
pub fn compare_stream_info(a: &StreamInfo, b: &StreamInfo) -> Option<Mismatch> {
    if a.length != b.length {
        return Some(lengths(a.length, b.length));
    }
    if a.last_id != b.last_id {
        return Some((
            format!("last id {}", a.last_id),
            format!("last id {}", b.last_id),
        ));
    }
    if let (Some(x), Some(y)) = (a.max_deleted_id, b.max_deleted_id) {
        if x != y {
            return Some((format!("max deleted id {x}"), format!("max deleted id {y}")));
        }
    }
    if let (Some(x), Some(y)) = (a.entries_added, b.entries_added) {
        if x != y {
            return Some((format!("entries added {x}"), format!("entries added {y}")));
        }
    }
    for g in &a.groups {
        let Some(h) = b.groups.iter().find(|h| h.name == g.name) else {
            return Some((
                format!("group {}", short(&g.name)),
                format!("group {} absent", short(&g.name)),
            ));
        };
        let name = short(&g.name);
        if g.last_id != h.last_id {
            return Some((
                format!("group {name} last id {}", g.last_id),
                format!("group {name} last id {}", h.last_id),
            ));
        }
        if g.pending != h.pending {
            return Some((
                format!("group {name} pending {}", g.pending),
                format!("group {name} pending {}", h.pending),
            ));
        }
        if g.consumers != h.consumers {
            return Some((
                format!("group {name} consumers {}", g.consumers),
                format!("group {name} consumers {}", h.consumers),
            ));
        }
        if let (Some(x), Some(y)) = (g.entries_read, h.entries_read) {
            if x != y {
                return Some((
                    format!("group {name} entries read {x}"),
                    format!("group {name} entries read {y}"),
                ));
            }
        }
    }
    if let Some(h) = b
        .groups
        .iter()
        .find(|h| !a.groups.iter().any(|g| g.name == h.name))
    {
        return Some((
            format!("group {} absent", short(&h.name)),
            format!("group {}", short(&h.name)),
        ));
    }
    None
}

// ---- reading replies ----------------------------------------------------------------------------

fn bulk(r: &Reply) -> Option<Bytes> {
    match r {
        Reply::Bulk(b) | Reply::Status(b) => Some(b.clone()),
        _ => None,
    }
}

/// Elements of an array reply of bulk strings (LRANGE, SMEMBERS, a SCAN page).
pub fn bulks(r: &Reply) -> Option<Vec<Bytes>> {
    r.as_array()?.iter().map(bulk).collect()
}

/// A `*SCAN` reply: the next cursor (0 when complete) and the page.
pub fn scan_page(r: &Reply) -> Option<(u64, Vec<Bytes>)> {
    let a = r.as_array()?;
    let cursor = a.first()?.as_int()?;
    Some((u64::try_from(cursor).ok()?, bulks(a.get(1)?)?))
}

pub fn pairs(items: Vec<Bytes>) -> Option<Vec<(Bytes, Bytes)>> {
    if items.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Some(out)
}

pub fn scored(items: Vec<Bytes>) -> Option<Vec<(Bytes, u64)>> {
    pairs(items)?
        .into_iter()
        .map(|(m, s)| Some((m, parse_score(&s)?)))
        .collect()
}

/// An XRANGE reply.
pub fn entries(r: &Reply) -> Option<Vec<(StreamId, Vec<Bytes>)>> {
    r.as_array()?
        .iter()
        .map(|e| {
            let e = e.as_array()?;
            let id = parse_id(e.first()?.as_bytes()?)?;
            let fields = match e.get(1)? {
                Reply::Nil => Vec::new(),
                f => bulks(f)?,
            };
            Some((id, fields))
        })
        .collect()
}

fn flat_map(r: &Reply) -> Option<Vec<(&[u8], &Reply)>> {
    let a = r.as_array()?;
    if a.len() % 2 != 0 {
        return None;
    }
    a.chunks(2)
        .map(|kv| Some((kv[0].as_bytes()?, &kv[1])))
        .collect()
}

fn get<'a>(m: &[(&[u8], &'a Reply)], name: &str) -> Option<&'a Reply> {
    m.iter()
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| *v)
}

/// XINFO STREAM and XINFO GROUPS replies (RESP2 flat name/value lists).
pub fn stream_info(stream: &Reply, groups: &Reply) -> Option<StreamInfo> {
    let s = flat_map(stream)?;
    let id = |name: &str| get(&s, name).and_then(Reply::as_bytes).and_then(parse_id);
    let mut info = StreamInfo {
        length: u64::try_from(get(&s, "length")?.as_int()?).ok()?,
        last_id: id("last-generated-id")?,
        max_deleted_id: id("max-deleted-entry-id"),
        entries_added: get(&s, "entries-added")
            .and_then(Reply::as_int)
            .and_then(|v| u64::try_from(v).ok()),
        groups: Vec::new(),
    };
    for g in groups.as_array()? {
        let g = flat_map(g)?;
        let count = |name: &str| {
            get(&g, name)
                .and_then(Reply::as_int)
                .and_then(|v| u64::try_from(v).ok())
        };
        info.groups.push(GroupInfo {
            name: bulk(get(&g, "name")?)?,
            last_id: get(&g, "last-delivered-id")
                .and_then(Reply::as_bytes)
                .and_then(parse_id)?,
            pending: count("pending")?,
            consumers: count("consumers")?,
            entries_read: match get(&g, "entries-read") {
                Some(Reply::Int(v)) => Some(*v),
                _ => None,
            },
        });
    }
    info.groups.sort_by(|a, b| a.name.cmp(&b.name));
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn scores_compare_by_bits() {
        let one = 1.0f64;
        let next = f64::from_bits(one.to_bits() + 1);
        let printed = format!("{next:.17e}");
        assert_eq!(parse_score(printed.as_bytes()), Some(next.to_bits()));
        assert_eq!(parse_score(b"inf"), Some(f64::INFINITY.to_bits()));
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY.to_bits()));
        let a = Value::zset(vec![(b("m"), one.to_bits())]);
        let c = Value::zset(vec![(b("m"), next.to_bits())]);
        assert!(compare_values(&a, &a).is_none());
        let (s, t) = compare_values(&a, &c).unwrap();
        assert_eq!(s, "member \"m\" score 1");
        assert_eq!(t, "member \"m\" score 1.0000000000000002");
    }

    #[test]
    fn unordered_collections_ignore_order_and_duplicates() {
        let a = Value::set(vec![b("x"), b("y"), b("x")]);
        let c = Value::set(vec![b("y"), b("x")]);
        assert!(compare_values(&a, &c).is_none());
        let h1 = Value::hash(vec![(b("f"), b("1")), (b("g"), b("2"))]);
        let h2 = Value::hash(vec![(b("g"), b("2")), (b("f"), b("3"))]);
        assert_eq!(
            compare_values(&h1, &h2).unwrap(),
            ("field \"f\" = \"1\"".into(), "field \"f\" = \"3\"".into())
        );
    }

    #[test]
    fn strings_name_the_first_difference() {
        let a = vec![b'a'; 100];
        let mut c = a.clone();
        c[70] = b'b';
        let (s, _) = compare_bytes(0, &a, &c).unwrap();
        assert!(s.starts_with("byte 70: "), "{s}");
        assert_eq!(
            compare_bytes(0, b"abc", b"abcd").unwrap(),
            ("3 bytes".into(), "4 bytes".into())
        );
    }

    #[test]
    fn ids() {
        let id = parse_id(b"5-18446744073709551615").unwrap();
        assert_eq!(next_id(id), Some(StreamId { ms: 6, seq: 0 }));
        assert!(parse_id(b"5").is_none());
    }
}
