//! Turning bytes and numbers into text the way Redis users read them: quoting binary key names
//! in messages, and parsing/printing doubles without losing a bit.

/// Quotes a byte string for a human-readable message: printable ASCII as is, the rest escaped
/// the way redis-cli does (`"\x00"`), always in double quotes.
pub fn quote_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// Parses a double as Redis writes it in text form (`%.17g`, `inf`, `-inf`, `nan`).
pub fn parse_redis_double(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    match s {
        "inf" | "+inf" | "Inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-Inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// Formats a double so that parsing the text gives back the same bits (shortest round-trip form),
/// with Redis's spellings of the infinities. Used wherever a score is sent back to a server.
pub fn format_redis_double(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        // Rust's Display for f64 is the shortest string that round-trips, never exponent-less
        // truncation; "-0" keeps the sign of negative zero.
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_round_trip_bit_for_bit() {
        for v in [
            0.1234567891,
            1e-9,
            9007199254740993.0,
            -0.0,
            3.14,
            1e308,
            5e-324,
            2.3700000000000001,
        ] {
            let t = format_redis_double(v);
            assert_eq!(
                parse_redis_double(t.as_bytes()).unwrap().to_bits(),
                v.to_bits(),
                "{t}"
            );
        }
        assert_eq!(format_redis_double(f64::INFINITY), "inf");
        assert_eq!(parse_redis_double(b"-inf"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_bytes(b"a\x00\"b"), "\"a\\x00\\\"b\"");
    }
}
