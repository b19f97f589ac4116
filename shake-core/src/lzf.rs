//! LZF decompression with the guards the `lzf` crate leaves to its caller: it allocates the
//! declared output length up front and accepts short output, so both are checked here.

/// Largest decompressed length accepted for one LZF blob. Redis never compresses a value above
/// its 512 MiB string limit; a larger declared length is a forged or corrupt header.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

/// Decompresses `compressed` into exactly `expected_len` bytes.
pub fn decompress(compressed: &[u8], expected_len: usize) -> Result<Vec<u8>, String> {
    if expected_len > MAX_DECOMPRESSED {
        return Err(format!(
            "LZF blob declares {expected_len} decompressed bytes, above the {MAX_DECOMPRESSED}-byte limit"
        ));
    }
    // LZF expands at most ~ 8/1 + a little per literal run: a declared length far beyond what
    // the compressed bytes could produce is corrupt, and refusing it early bounds the allocation.
    let plausible = compressed.len().saturating_mul(256).saturating_add(64);
    if expected_len > plausible {
        return Err(format!(
            "LZF blob of {} bytes cannot expand to the declared {expected_len} bytes",
            compressed.len()
        ));
    }
    if expected_len == 0 {
        return if compressed.is_empty() {
            Ok(Vec::new())
        } else {
            Err("LZF blob declares 0 decompressed bytes but has data".into())
        };
    }
    match lzf::decompress(compressed, expected_len) {
        Ok(out) if out.len() == expected_len => Ok(out),
        Ok(out) => Err(format!(
            "LZF blob decompressed to {} bytes, expected {expected_len}",
            out.len()
        )),
        Err(e) => Err(format!("LZF blob is corrupt ({e:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_guards() {
        let data = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(10);
        let c = lzf::compress(&data).expect("compressible");
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        assert!(decompress(&c, data.len() + 1).is_err());
        assert!(decompress(&c, data.len() - 1).is_err());
        assert!(decompress(&c, 1 << 40).is_err());
        assert!(decompress(&[0xff, 0xff, 0xff], 500).is_err());
    }
}
