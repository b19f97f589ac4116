//! The compact in-memory encodings Redis stores inside a single RDB string: ziplist, listpack,
//! intset and zipmap. Each walker checks every offset against the blob's bounds and reports a
//! malformed blob as an error; none of them trusts a header count to size an allocation.

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
    let mut at = 10;
    let mut count = 0usize;
    loop {
        let first = *buf.get(at).ok_or("ziplist has no end marker")?;
        if first == 0xFF {
            if at + 1 != buf.len() {
                return Err(format!("ziplist end marker at {at} is not the last byte"));
            }
            return Ok(count);
        }
        // prevlen: one byte, or 0xFE and a 4-byte length.
        at += if first == 0xFE { 5 } else { 1 };
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
        f(elem)?;
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
    let mut at = 6;
    let mut count = 0usize;
    loop {
        let enc = *buf.get(at).ok_or("listpack has no end marker")?;
        if enc == 0xFF {
            if at + 1 != buf.len() {
                return Err(format!("listpack end marker at {at} is not the last byte"));
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
        take(buf, at, backlen_size, "listpack back-length")?;
        at += backlen_size;
        f(elem)?;
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
    for chunk in buf[8..8 + body].chunks_exact(width) {
        f(le_int(chunk))?;
    }
    Ok(count)
}

/// Walks a zipmap (the pre-2.6 hash encoding), calling `f` for each field/value pair.
pub fn zipmap_for_each(
    buf: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> WalkResult,
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
        zl.extend_from_slice(&0u32.to_le_bytes());
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
}
