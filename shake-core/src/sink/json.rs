//! Writing JSON by hand into a byte buffer: strings, the lossless byte-string mapping of the
//! JSON lines format, and doubles with every bit kept.

use base64::Engine as _;

/// Appends `s` as a JSON string literal.
pub fn str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// Appends `s` escaped for the inside of a JSON string literal (a long string is written as
/// several such pieces between one pair of quotes).
pub fn escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends one command record of the JSON lines format and its newline (docs/output-formats.md):
/// `{` the `lead` string members `,"db":N,"offset":N` an optional `,"ts":N` `,"argv":[...]}`,
/// each argument a byte string ([`bytes`]). shake-sync `--output`'s stream records (lead:
/// shard, replid; offset: the replication offset after the command) and shake-decode's AOF
/// commands (lead: file; offset: where the command starts in it; ts: its `#TS:`) are written
/// here, so the two stay one shape.
pub fn command_record(
    out: &mut Vec<u8>,
    lead: &[(&str, &str)],
    db: u64,
    offset: u64,
    ts: Option<i64>,
    frame: &[u8],
    args: &[std::ops::Range<usize>],
) {
    out.push(b'{');
    for (name, value) in lead {
        str(out, name);
        out.push(b':');
        str(out, value);
        out.push(b',');
    }
    out.extend_from_slice(b"\"db\":");
    uint(out, db);
    out.extend_from_slice(b",\"offset\":");
    uint(out, offset);
    if let Some(ts) = ts {
        out.extend_from_slice(b",\"ts\":");
        int(out, ts);
    }
    out.extend_from_slice(b",\"argv\":[");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        bytes(out, frame.get(a.clone()).unwrap_or_default());
    }
    out.extend_from_slice(b"]}\n");
}

/// Appends a byte string: a JSON string when it is UTF-8, else `{"base64":"..."}`.
pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => str(out, s),
        Err(_) => {
            out.extend_from_slice(b"{\"base64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.extend_from_slice(b"\"}");
        }
    }
}

pub fn is_utf8(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
}

/// Whether a byte string that arrives in pieces is UTF-8, judged piece by piece (a character
/// may be split between two pieces).
#[derive(Debug, Clone)]
pub struct Utf8Check {
    carry: [u8; 4],
    carried: usize,
    valid: bool,
}

impl Default for Utf8Check {
    fn default() -> Self {
        Utf8Check {
            carry: [0; 4],
            carried: 0,
            valid: true,
        }
    }
}

impl Utf8Check {
    pub fn feed(&mut self, data: &[u8]) {
        if !self.valid {
            return;
        }
        let mut start = 0;
        if self.carried > 0 {
            let width = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.carried).min(data.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
            self.carried += take;
            start = take;
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_none() && self.carried < width => return,
                Err(_) => {
                    self.valid = false;
                    return;
                }
            }
        }
        if let Err(e) = std::str::from_utf8(&data[start..]) {
            if e.error_len().is_some() {
                self.valid = false;
            } else {
                let rest = &data[start + e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carried = rest.len();
            }
        }
    }

    /// True when every piece fed so far forms UTF-8 text, ending on a character boundary.
    pub fn is_utf8(&self) -> bool {
        self.valid && self.carried == 0
    }
}

/// Appends a double as a JSON number with the shortest text that reads back to the same bits;
/// the infinities and NaN, which JSON cannot write as numbers, as strings.
pub fn double(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"nan\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"\"inf\"" } else { b"\"-inf\"" });
    } else {
        let mut buf = ryu_like(v);
        if !buf.contains(['.', 'e', 'E']) {
            buf.push_str(".0");
        }
        out.extend_from_slice(buf.as_bytes());
    }
}

fn ryu_like(v: f64) -> String {
    // `{:?}` prints the shortest round-trip form; it uses exponents for very large or small
    // magnitudes ("1e-9"), which JSON accepts.
    format!("{v:?}")
}

pub fn uint(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn int(out: &mut Vec<u8>, v: i64) {
    use std::io::Write;
    let _ = write!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn command_records_have_one_shape() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xff\x00\r\n";
        let args = [8..11, 17..18, 24..26];
        assert_eq!(
            s(|o| command_record(o, &[("file", "a \"b\".aof")], 2, 40, Some(17), frame, &args)),
            "{\"file\":\"a \\\"b\\\".aof\",\"db\":2,\"offset\":40,\"ts\":17,\"argv\":[\"SET\",\"k\",{\"base64\":\"/wA=\"}]}\n"
        );
        assert_eq!(
            s(|o| command_record(
                o,
                &[("shard", "s"), ("replid", "r")],
                0,
                5,
                None,
                frame,
                &args[..2]
            )),
            "{\"shard\":\"s\",\"replid\":\"r\",\"db\":0,\"offset\":5,\"argv\":[\"SET\",\"k\"]}\n"
        );
    }

    #[test]
    fn strings_and_bytes() {
        assert_eq!(s(|o| str(o, "a\"b\\\n\u{1}é")), "\"a\\\"b\\\\\\n\\u0001é\"");
        assert_eq!(s(|o| bytes(o, b"\xff\x00")), "{\"base64\":\"/wA=\"}");
    }

    #[test]
    fn utf8_judged_in_pieces() {
        let text = "aé€😀z".repeat(50) + "😀";
        for piece in 1..9 {
            let mut c = Utf8Check::default();
            text.as_bytes().chunks(piece).for_each(|p| c.feed(p));
            assert!(c.is_utf8(), "{piece}");
            let mut bad = text.as_bytes().to_vec();
            bad.insert(7, 0xff);
            let mut c = Utf8Check::default();
            bad.chunks(piece).for_each(|p| c.feed(p));
            assert!(!c.is_utf8(), "{piece}");
            let cut = &text.as_bytes()[..text.len() - 1];
            let mut c = Utf8Check::default();
            cut.chunks(piece).for_each(|p| c.feed(p));
            assert!(!c.is_utf8(), "{piece}");
        }
    }

    #[test]
    fn doubles_keep_every_bit() {
        for v in [
            0.1234567891,
            1e-9,
            9007199254740993.0,
            -0.0,
            1.0,
            5e-324,
            1.7976931348623157e308,
        ] {
            let t = s(|o| double(o, v));
            let back: f64 = serde_json::from_str(&t).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{t}");
        }
        assert_eq!(s(|o| double(o, -0.0)), "-0.0");
        assert_eq!(s(|o| double(o, f64::NEG_INFINITY)), "\"-inf\"");
    }
}
