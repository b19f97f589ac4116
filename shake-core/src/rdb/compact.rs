//! The compact in-memory encodings Redis stores inside a single RDB string: ziplist, listpack,
//! intset and zipmap. Each walker checks every offset against the blob's bounds and reports a
//! malformed blob as an error; none of them trusts a header count to size an allocation.
//!
//! The walkers check a blob as deeply as the servers' own sanitizer does
//! (`sanitize-dump-payload yes`: `lpValidateIntegrity`, `ziplistValidateIntegrity`,
//! `intsetValidateIntegrity` in deep mode), because a server that loads a payload without deep
//! sanitization (Redis's default) trusts these facts and crashes on a blob that breaks them:
//! - listpack: total bytes = the string's length, last byte the terminator, every entry inside
//!   the blob with a back-length that decodes to the entry's size, the header's element count
//!   equal to the entries walked (unless it is 65535, "unknown");
//! - ziplist: the same for its header, every entry's prevlen equal to the previous entry's size
//!   (0 for the first), the tail offset pointing at the last entry;
//! - intset: a known width, the size = header + count x width, at least one element, strictly
//!   ascending (no duplicates).
//!
//! `TupleCheck` adds the type rules the servers apply to what these blobs hold: members unique
//! (set listpack), members/fields unique with an even element count (zset and hash
//! ziplists/listpacks), and for a hash with field TTLs (listpack-ex) field-value-TTL triples,
//! fields unique, each TTL an integer in 0..=2^48-1 and the TTL'd fields first, in ascending
//! TTL order. An error names the entry and its offset inside the blob; the parser adds the key
//! and the blob's offset in the file.

use std::fmt::Write as _;

/// One element of a compact encoding: bytes as stored, or an integer Redis shows as decimal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elem<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

impl Elem<'_> {
    pub fn to_vec(self) -> Vec<u8> {
        match self {
            Elem::Bytes(b) => b.to_vec(),
            Elem::Int(i) => {
                let mut s = String::with_capacity(20);
                let _ = write!(s, "{i}");
                s.into_bytes()
            }
        }
    }

    pub fn as_int(self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(i),
            Elem::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        }
    }

    /// A zset score stored as an element (text like "2.37" or an integer).
    pub fn as_score(self) -> Option<f64> {
        match self {
            Elem::Int(i) => Some(i as f64),
            Elem::Bytes(b) => crate::text::parse_redis_double(b),
        }
    }

    pub fn len(self) -> usize {
        match self {
            Elem::Bytes(b) => b.len(),
            Elem::Int(i) => {
                let mut n = if i < 0 { 2 } else { 1 };
                let mut v = i.unsigned_abs();
                while v >= 10 {
                    v /= 10;
                    n += 1;
                }
                n
            }
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// An element as a member is compared: an integer 5 and a string "5" are one member to the
/// server (it compares their texts), so a string that is a canonical integer counts as that
/// integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Member<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}

impl<'a> Member<'a> {
    fn of(e: Elem<'a>) -> Self {
        match e {
            Elem::Int(i) => Member::Int(i),
            Elem::Bytes(b) => match super::writer::canonical_i64(b) {
                Some(i) => Member::Int(i),
                None => Member::Bytes(b),
            },
        }
    }

    fn show(self) -> String {
        match self {
            Member::Int(i) => format!("\"{i}\""),
            Member::Bytes(b) => crate::text::quote_bytes(b),
        }
    }
}

/// What a container's elements must satisfy beyond its structure (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuples {
    /// Any elements (list nodes).
    Any,
    /// Every element unique (set listpack).
    Unique,
    /// (field, value) pairs, fields unique.
    Pairs,
    /// (member, score) pairs, members unique, every score a number.
    Scored,
    /// (field, value, TTL) triples of a hash with field TTLs (listpack-ex).
    FieldValueTtl,
}

/// The largest field TTL a listpack-ex holds (`EB_EXPIRE_TIME_MAX`, 2^48-1 ms).
const MAX_FIELD_TTL: i64 = (1 << 48) - 1;

/// Checks a container's elements, fed one by one, against a `Tuples` rule.
pub struct TupleCheck<'a> {
    rule: Tuples,
    n: usize,
    /// Firsts of the tuples seen: a short list compared linearly, then a hash set.
    few: Vec<Member<'a>>,
    many: std::collections::HashSet<Member<'a>, FastHash>,
    last_ttl: i64,
}

/// A cheap hasher for the duplicate check (FxHash's multiply-rotate): the input is a blob the
/// checksum already vouched for, and a collision only costs a comparison.
#[derive(Default, Clone, Copy)]
pub struct FastHash;

pub struct FastHasher(u64);

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.0 =
            (self.0.rotate_left(5) ^ u64::from_le_bytes(tail) ^ bytes.len() as u64).wrapping_mul(K);
    }
}

impl<'a> TupleCheck<'a> {
    pub fn new(rule: Tuples) -> Self {
        TupleCheck {
            rule,
            n: 0,
            few: Vec::new(),
            many: std::collections::HashSet::with_hasher(FastHash),
            last_ttl: -1,
        }
    }

    /// Takes the next element.
    pub fn push(&mut self, e: Elem<'a>) -> WalkResult {
        let width = match self.rule {
            Tuples::Any => return Ok(()),
            Tuples::Unique => 1,
            Tuples::Pairs | Tuples::Scored => 2,
            Tuples::FieldValueTtl => 3,
        };
        let pos = self.n % width;
        self.n += 1;
        if pos == 0 {
            let what = if width == 1 {
                "member"
            } else {
                "field or member"
            };
            let t = Member::of(e);
            let dup = || format!("{what} {} appears twice", t.show());
            if self.many.is_empty() && self.few.len() < 16 {
                if self.few.contains(&t) {
                    return Err(dup());
                }
                self.few.push(t);
            } else {
                if self.many.is_empty() {
                    self.many.extend(self.few.drain(..));
                }
                if !self.many.insert(t) {
                    return Err(dup());
                }
            }
        } else if pos == 1 && self.rule == Tuples::Scored {
            e.as_score().ok_or("zset score is not a number")?;
        } else if pos == 2 {
            let ttl = e.as_int().ok_or("hash field TTL is not an integer")?;
            if !(0..=MAX_FIELD_TTL).contains(&ttl) {
                return Err(format!("hash field TTL {ttl} is out of range"));
            }
            // The fields with a TTL come first, in ascending TTL order.
            if ttl != 0 && (self.last_ttl == 0 || ttl < self.last_ttl) {
                return Err(format!(
                    "hash field TTL {ttl} is out of order (after {})",
                    self.last_ttl
                ));
            }
            self.last_ttl = ttl;
        }
        Ok(())
    }

    /// After the last element: the count must be a whole number of tuples.
    pub fn finish(&self) -> WalkResult {
        match self.rule {
            Tuples::Pairs | Tuples::Scored if self.n % 2 != 0 => {
                Err(format!("{} elements do not make field/value pairs", self.n))
            }
            Tuples::FieldValueTtl if self.n % 3 != 0 => Err(format!(
                "{} elements do not make field/value/TTL triples",
                self.n
            )),
            _ => Ok(()),
        }
    }
}

pub type WalkResult = Result<(), String>;

/// The two list-like containers, which hold the same kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Ziplist,
    Listpack,
}

/// Walks a ziplist or listpack, calling `f` for each entry; returns the entry count.
pub fn for_each<'a>(
    c: Container,
    buf: &'a [u8],
    f: impl FnMut(Elem<'a>) -> WalkResult,
) -> Result<usize, String> {
    match c {
        Container::Ziplist => ziplist_for_each(buf, f),
        Container::Listpack => listpack_for_each(buf, f),
    }
}

fn take<'a>(buf: &'a [u8], at: usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    at.checked_add(n)
        .and_then(|end| buf.get(at..end))
        .ok_or_else(|| {
            format!(
                "{what} at blob offset {at} runs past the blob's {} bytes",
                buf.len()
            )
        })
}

fn le_int(b: &[u8]) -> i64 {
    // Sign-extends a little-endian two's-complement integer of 1..=8 bytes.
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate() {
        v |= (x as u64) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if bits < 64 {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    } else {
        v as i64
    }
}

/// Walks a ziplist, calling `f` for each entry in order; returns the entry count.
pub fn ziplist_for_each<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> WalkResult,
) -> Result<usize, String> {
    let header = take(buf, 0, 10, "ziplist header")?;
    let zlbytes = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if zlbytes != buf.len() {
        return Err(format!(
            "ziplist says it has {zlbytes} bytes, its string has {}",
            buf.len()
        ));
    }
    let tail = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let header_count = u16::from_le_bytes([header[8], header[9]]);
    let mut at = 10;
    let mut count = 0usize;
    let mut prev_start = None;
    let mut prev_size = 0usize;
    loop {
        let start = at;
        let first = *buf.get(at).ok_or("ziplist has no end marker")?;
        if first == 0xFF {
            if at + 1 != buf.len() {
                return Err(format!("ziplist end marker at {at} is not the last byte"));
            }
            if tail > at || prev_start.is_some_and(|p| p != tail) {
                return Err(format!(
                    "ziplist tail offset {tail} does not point at its last entry ({})",
                    prev_start.unwrap_or(10)
                ));
            }
            if header_count != u16::MAX && header_count as usize != count {
                return Err(format!(
                    "ziplist header says {header_count} entries, it holds {count}"
                ));
            }
            return Ok(count);
        }
        // prevlen: one byte, or 0xFE and a 4-byte length; always the previous entry's size.
        let prevlen = if first == 0xFE {
            let b = take(buf, at + 1, 4, "ziplist prevlen")?;
            at += 5;
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
        } else {
            at += 1;
            first as usize
        };
        if prevlen != prev_size {
            return Err(format!(
                "ziplist entry {count} at blob offset {start} says the previous entry has {prevlen} bytes, it has {prev_size}"
            ));
        }
        let enc = *buf.get(at).ok_or("ziplist entry runs past the blob")?;
        let elem = match enc >> 6 {
            0 => {
                let len = (enc & 0x3F) as usize;
                at += 1;
                let s = take(buf, at, len, "ziplist string")?;
                at += len;
                Elem::Bytes(s)
            }
            1 => {
                let b = take(buf, at, 2, "ziplist length")?;
                let len = (((b[0] & 0x3F) as usize) << 8) | b[1] as usize;
                at += 2;
                let s = take(buf, at, len, "ziplist string")?;
                at += len;
                Elem::Bytes(s)
            }
            2 => {
                let b = take(buf, at + 1, 4, "ziplist length")?;
                let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                at += 5;
                let s = take(buf, at, len, "ziplist string")?;
                at += len;
                Elem::Bytes(s)
            }
            _ => {
                at += 1;
                let width = match enc {
                    0xC0 => 2,
                    0xD0 => 4,
                    0xE0 => 8,
                    0xF0 => 3,
                    0xFE => 1,
                    0xF1..=0xFD => 0,
                    _ => {
                        return Err(format!(
                            "ziplist entry has unknown encoding byte {enc:#04x}"
                        ))
                    }
                };
                if width == 0 {
                    Elem::Int((enc & 0x0F) as i64 - 1)
                } else {
                    let b = take(buf, at, width, "ziplist integer")?;
                    at += width;
                    Elem::Int(le_int(b))
                }
            }
        };
        if at >= buf.len() {
            return Err(format!(
                "ziplist entry {count} at blob offset {start} runs into the end marker"
            ));
        }
        f(elem).map_err(|m| format!("ziplist entry {count} at blob offset {start}: {m}"))?;
        prev_start = Some(start);
        prev_size = at - start;
        count += 1;
    }
}

/// Walks a listpack, calling `f` for each entry in order; returns the entry count.
pub fn listpack_for_each<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> WalkResult,
) -> Result<usize, String> {
    let header = take(buf, 0, 6, "listpack header")?;
    let total = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if total != buf.len() {
        return Err(format!(
            "listpack says it has {total} bytes, its string has {}",
            buf.len()
        ));
    }
    let header_count = u16::from_le_bytes([header[4], header[5]]);
    let mut at = 6;
    let mut count = 0usize;
    loop {
        let enc = *buf.get(at).ok_or("listpack has no end marker")?;
        if enc == 0xFF {
            if at + 1 != buf.len() {
                return Err(format!("listpack end marker at {at} is not the last byte"));
            }
            if header_count != u16::MAX && header_count as usize != count {
                return Err(format!(
                    "listpack header says {header_count} elements, it holds {count}"
                ));
            }
            return Ok(count);
        }
        let start = at;
        let elem = if enc & 0x80 == 0 {
            at += 1;
            Elem::Int((enc & 0x7F) as i64)
        } else if enc & 0xC0 == 0x80 {
            let len = (enc & 0x3F) as usize;
            let s = take(buf, at + 1, len, "listpack string")?;
            at += 1 + len;
            Elem::Bytes(s)
        } else if enc & 0xE0 == 0xC0 {
            let b = take(buf, at, 2, "listpack integer")?;
            let raw = (((b[0] & 0x1F) as i64) << 8) | b[1] as i64;
            at += 2;
            Elem::Int(if raw >= 1 << 12 { raw - (1 << 13) } else { raw })
        } else if enc & 0xF0 == 0xE0 {
            let b = take(buf, at, 2, "listpack length")?;
            let len = (((b[0] & 0x0F) as usize) << 8) | b[1] as usize;
            let s = take(buf, at + 2, len, "listpack string")?;
            at += 2 + len;
            Elem::Bytes(s)
        } else if enc == 0xF0 {
            let b = take(buf, at + 1, 4, "listpack length")?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let s = take(buf, at + 5, len, "listpack string")?;
            at += 5 + len;
            Elem::Bytes(s)
        } else {
            let width = match enc {
                0xF1 => 2,
                0xF2 => 3,
                0xF3 => 4,
                0xF4 => 8,
                _ => {
                    return Err(format!(
                        "listpack entry at {at} has unknown encoding byte {enc:#04x}"
                    ))
                }
            };
            let b = take(buf, at + 1, width, "listpack integer")?;
            at += 1 + width;
            Elem::Int(le_int(b))
        };
        // The back-length records the entry's size in 1..=5 bytes of 7 bits each. Servers
        // disagree at the exact limits 16383, 2097151 and 268435455: Redis and Valkey up to 8.1
        // use one byte more there than Valkey 9.1 does. The longer form starts with a 0 byte
        // (the size's top 7-bit group is empty), which the shorter form never does.
        let entry_len = at - start;
        let mut backlen_size = match entry_len {
            0..=127 => 1,
            128..=16383 => 2,
            16384..=2097151 => 3,
            2097152..=268435455 => 4,
            _ => 5,
        };
        if matches!(entry_len, 16383 | 2097151 | 268435455) && buf.get(at) == Some(&0) {
            backlen_size += 1;
        }
        let backlen = take(buf, at, backlen_size, "listpack back-length")?;
        // Big-endian groups of 7 bits; every byte but the first has the continuation bit.
        let mut value = 0usize;
        let mut well_formed = true;
        for (i, &b) in backlen.iter().enumerate() {
            well_formed &= (b & 0x80 != 0) == (i != 0);
            value = (value << 7) | (b & 0x7F) as usize;
        }
        if !well_formed || value != entry_len {
            return Err(format!(
                "listpack entry {count} at blob offset {start} has {entry_len} bytes, its back-length says {value}"
            ));
        }
        at += backlen_size;
        f(elem).map_err(|m| format!("listpack entry {count} at blob offset {start}: {m}"))?;
        count += 1;
    }
}

/// Walks an intset, calling `f` for each integer; returns the count.
pub fn intset_for_each(buf: &[u8], mut f: impl FnMut(i64) -> WalkResult) -> Result<usize, String> {
    let header = take(buf, 0, 8, "intset header")?;
    let width = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let count = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(format!("intset has invalid integer width {width}"));
    }
    let body = count
        .checked_mul(width)
        .filter(|&n| n + 8 == buf.len())
        .ok_or_else(|| {
            format!(
                "intset of {count} x {width}-byte integers does not fit its {} bytes",
                buf.len()
            )
        })?;
    if count == 0 {
        return Err("intset holds no integers (Redis never writes one)".into());
    }
    let mut prev = None;
    for (i, chunk) in buf[8..8 + body].chunks_exact(width).enumerate() {
        let v = le_int(chunk);
        if prev.is_some_and(|p| v <= p) {
            return Err(format!(
                "intset integer {i} at blob offset {} ({v}) is not above the one before it",
                8 + i * width
            ));
        }
        prev = Some(v);
        f(v)?;
    }
    Ok(count)
}

/// Walks a zipmap (the pre-2.6 hash encoding), calling `f` for each field/value pair.
pub fn zipmap_for_each<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> WalkResult,
) -> Result<usize, String> {
    fn zm_len(buf: &[u8], at: &mut usize) -> Result<Option<usize>, String> {
        let b = *buf.get(*at).ok_or("zipmap runs past the blob")?;
        match b {
            0xFF => Ok(None),
            0xFE => {
                let x = take(buf, *at + 1, 4, "zipmap length")?;
                *at += 5;
                Ok(Some(u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize))
            }
            n => {
                *at += 1;
                Ok(Some(n as usize))
            }
        }
    }
    take(buf, 0, 1, "zipmap header")?;
    let mut at = 1;
    let mut count = 0;
    loop {
        let Some(klen) = zm_len(buf, &mut at)? else {
            if at + 1 != buf.len() {
                return Err(format!("zipmap end marker at {at} is not the last byte"));
            }
            return Ok(count);
        };
        let key = take(buf, at, klen, "zipmap field")?;
        at += klen;
        let vlen = zm_len(buf, &mut at)?.ok_or("zipmap field has no value")?;
        let free = *buf.get(at).ok_or("zipmap value runs past the blob")? as usize;
        at += 1;
        let value = take(buf, at, vlen, "zipmap value")?;
        at += vlen + free;
        f(key, value)?;
        count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp_entry(out: &mut Vec<u8>, enc: &[u8]) {
        out.extend_from_slice(enc);
        let n = enc.len();
        assert!(n < 128);
        out.push(n as u8);
    }

    #[test]
    fn listpack_all_encodings() {
        let mut body = Vec::new();
        lp_entry(&mut body, &[0x05]); // 7-bit uint 5
        lp_entry(&mut body, &[0x83, b'a', b'b', b'c']); // 6-bit string
        lp_entry(&mut body, &[0xDF, 0xFF]); // 13-bit int -1
        lp_entry(&mut body, &[0xF1, 0x00, 0x80]); // int16 -32768
        lp_entry(&mut body, &[0xF2, 0xFF, 0xFF, 0x7F]); // int24 max
        lp_entry(
            &mut body,
            &[0xF4, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        );
        let mut lp = Vec::new();
        let total = 6 + body.len() + 1;
        lp.extend_from_slice(&(total as u32).to_le_bytes());
        lp.extend_from_slice(&6u16.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        let mut got = Vec::new();
        listpack_for_each(&lp, |e| {
            got.push(e.to_vec());
            Ok(())
        })
        .unwrap();
        let want: Vec<Vec<u8>> = ["5", "abc", "-1", "-32768", "8388607", "9223372036854775807"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(got, want);
        // Every truncation is an error, never a panic.
        for cut in 0..lp.len() {
            assert!(listpack_for_each(&lp[..cut], |_| Ok(())).is_err());
        }
    }

    #[test]
    fn ziplist_small_ints_and_strings() {
        let mut body = vec![
            0x00, 0xF1, 0x02, 0xFD, 0x02, 0x02, b'h', b'i', 0x04, 0xFE, 0x80,
        ];
        let total = 10 + body.len() + 1;
        let mut zl = Vec::new();
        zl.extend_from_slice(&(total as u32).to_le_bytes());
        zl.extend_from_slice(&18u32.to_le_bytes()); // the tail: the last entry's offset
        zl.extend_from_slice(&4u16.to_le_bytes());
        zl.append(&mut body);
        zl.push(0xFF);
        let mut got = Vec::new();
        ziplist_for_each(&zl, |e| {
            got.push(e.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                b"0".to_vec(),
                b"12".to_vec(),
                b"hi".to_vec(),
                b"-128".to_vec()
            ]
        );
        for cut in 0..zl.len() {
            assert!(ziplist_for_each(&zl[..cut], |_| Ok(())).is_err());
        }
    }

    #[test]
    fn intset_rejects_bad_sizes() {
        let mut is = Vec::new();
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&(-3i16).to_le_bytes());
        is.extend_from_slice(&7i16.to_le_bytes());
        let mut got = Vec::new();
        intset_for_each(&is, |v| {
            got.push(v);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![-3, 7]);
        is[4] = 0xFF;
        assert!(intset_for_each(&is, |_| Ok(())).is_err());
    }

    fn listpack(entries: &[&[u8]], count: u16) -> Vec<u8> {
        let mut body = Vec::new();
        for e in entries {
            lp_entry(&mut body, e);
        }
        let mut lp = Vec::new();
        lp.extend_from_slice(&((6 + body.len() + 1) as u32).to_le_bytes());
        lp.extend_from_slice(&count.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        lp
    }

    fn checked(rule: Tuples, lp: &[u8]) -> WalkResult {
        let mut c = TupleCheck::new(rule);
        listpack_for_each(lp, |e| c.push(e))?;
        c.finish()
    }

    #[test]
    fn structure_as_deep_as_the_servers_sanitizer() {
        let ok = listpack(&[&[0x01], &[0x82, b'a', b'b']], 2);
        assert_eq!(listpack_for_each(&ok, |_| Ok(())), Ok(2));
        // The header's count must match (65535 means "count them").
        let e = listpack_for_each(&listpack(&[&[0x01], &[0x02]], 3), |_| Ok(())).unwrap_err();
        assert!(e.contains("says 3 elements, it holds 2"), "{e}");
        assert!(listpack_for_each(&listpack(&[&[0x01]], u16::MAX), |_| Ok(())).is_ok());
        // A back-length that disagrees with its entry.
        let mut bad = ok.clone();
        bad[7] = 2;
        let e = listpack_for_each(&bad, |_| Ok(())).unwrap_err();
        assert!(
            e.contains("back-length") && e.contains("blob offset 6"),
            "{e}"
        );

        // Ziplist: a wrong prevlen, a wrong tail, a wrong count.
        let zl = |prev2: u8, tail: u32, count: u16| {
            let body = [0x00, 0xF2, 0x02, 0xF3];
            let mut zl = Vec::new();
            zl.extend_from_slice(&((10 + body.len() + 1) as u32).to_le_bytes());
            zl.extend_from_slice(&tail.to_le_bytes());
            zl.extend_from_slice(&count.to_le_bytes());
            zl.extend_from_slice(&body);
            zl[12] = prev2;
            zl.push(0xFF);
            zl
        };
        assert_eq!(ziplist_for_each(&zl(2, 12, 2), |_| Ok(())), Ok(2));
        for (bad, why) in [
            (zl(1, 12, 2), "previous entry"),
            (zl(2, 10, 2), "tail offset"),
            (zl(2, 12, 3), "says 3 entries"),
        ] {
            let e = ziplist_for_each(&bad, |_| Ok(())).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }

        // Intset: ascending without duplicates, never empty.
        let is = |vals: &[i16]| {
            let mut b = 2u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(vals.len() as u32).to_le_bytes());
            for v in vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b
        };
        assert!(intset_for_each(&is(&[-1, 5]), |_| Ok(())).is_ok());
        assert!(intset_for_each(&is(&[5, 5]), |_| Ok(())).is_err());
        assert!(intset_for_each(&is(&[5, -1]), |_| Ok(())).is_err());
        assert!(intset_for_each(&is(&[]), |_| Ok(())).is_err());
    }

    #[test]
    fn type_rules_of_the_servers_deep_check() {
        // A set whose members repeat, also as integer 5 against string "5".
        let dup = listpack(&[&[0x05], &[0x81, b'x'], &[0x81, b'5']], 3);
        let e = checked(Tuples::Unique, &dup).unwrap_err();
        assert!(
            e.contains("\"5\" appears twice") && e.contains("entry 2"),
            "{e}"
        );
        assert!(checked(Tuples::Any, &dup).is_ok());
        // Many members: the hash-set path finds a repeat as well.
        let mut many: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i]).collect();
        many.push(vec![0x81, b'7']);
        let refs: Vec<&[u8]> = many.iter().map(|v| v.as_slice()).collect();
        assert!(checked(Tuples::Unique, &listpack(&refs, 41)).is_err());
        assert!(checked(Tuples::Unique, &listpack(&refs[..40], 40)).is_ok());
        // Pairs: an odd count, a repeated field (values may repeat), a score that is no number.
        let odd = listpack(&[&[0x81, b'f'], &[0x01], &[0x81, b'g']], 3);
        assert!(checked(Tuples::Pairs, &odd).is_err());
        let vals = listpack(&[&[0x81, b'f'], &[0x01], &[0x81, b'g'], &[0x01]], 4);
        assert!(checked(Tuples::Pairs, &vals).is_ok());
        let fields = listpack(&[&[0x81, b'f'], &[0x01], &[0x81, b'f'], &[0x02]], 4);
        assert!(checked(Tuples::Pairs, &fields).is_err());
        let score = listpack(&[&[0x81, b'm'], &[0x81, b'x']], 2);
        assert!(checked(Tuples::Scored, &score).is_err());
        assert!(checked(Tuples::Pairs, &score).is_ok());
        // Field TTLs: the TTL'd fields first, ascending; a TTL is an integer.
        let ttl = |a: u8, b: u8| {
            listpack(
                &[&[0x81, b'a'], &[0x01], &[a], &[0x81, b'b'], &[0x01], &[b]],
                6,
            )
        };
        assert!(checked(Tuples::FieldValueTtl, &ttl(5, 9)).is_ok());
        assert!(checked(Tuples::FieldValueTtl, &ttl(5, 0)).is_ok());
        assert!(checked(Tuples::FieldValueTtl, &ttl(9, 5)).is_err());
        assert!(checked(Tuples::FieldValueTtl, &ttl(0, 5)).is_err());
    }
}
