//! LZF decompression, whole or streaming, with every length checked: the one LZF decoder of the
//! project (the `lzf` crate is used for compression only).
//!
//! The format (liblzf): a control byte below 32 starts a literal run of `ctrl + 1` bytes; any
//! other starts a back-reference of `(ctrl >> 5) + 2` bytes (a following byte extends a length
//! of 7) at distance `((ctrl & 31) << 8) + next + 1` behind the output's end. A reference reaches
//! at most 8 KiB back and copies at most 264 bytes, so [`Decoder`] decodes any blob in pieces
//! while keeping only the last 8 KiB of output, and no blob can expand more than 88 times.

/// Largest decompressed length accepted for one LZF blob. Redis never compresses a value above
/// its 512 MiB string limit; a larger declared length is a forged or corrupt header.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

/// Farthest a back-reference reaches.
const HISTORY: usize = 8192;
/// Longest instruction: a control byte and a 32-byte literal run.
const MAX_INSTRUCTION: usize = 33;
/// Most output bytes one input byte can produce (a 3-byte reference of 264 bytes).
const MAX_RATIO: usize = 88;

/// Checks a declared length against the limit and against what `compressed_len` bytes could
/// produce.
fn check_declared(compressed_len: u64, expected_len: u64) -> Result<(), String> {
    if expected_len > MAX_DECOMPRESSED as u64 {
        return Err(format!(
            "LZF blob declares {expected_len} decompressed bytes, above the {MAX_DECOMPRESSED}-byte limit"
        ));
    }
    if expected_len > compressed_len.saturating_mul(MAX_RATIO as u64) {
        return Err(format!(
            "LZF blob of {compressed_len} bytes cannot expand to the declared {expected_len} bytes"
        ));
    }
    if expected_len == 0 && compressed_len != 0 {
        return Err("LZF blob declares 0 decompressed bytes but has data".into());
    }
    Ok(())
}

/// Decodes the complete instructions at the start of `input`, appending their output to `out`,
/// whose last bytes are the history references point into (`out` holds the last `produced`
/// bytes of output at least up to [`HISTORY`]). Returns the input bytes used; an incomplete
/// instruction at the end is left for the caller. `room` is how many more bytes may be produced.
fn decode_into(out: &mut Vec<u8>, input: &[u8], room: &mut u64) -> Result<usize, String> {
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        if ctrl < 32 {
            let n = ctrl + 1;
            if i + 1 + n > input.len() {
                break;
            }
            if n as u64 > *room {
                return Err("LZF blob decompresses to more bytes than it declares".into());
            }
            out.extend_from_slice(&input[i + 1..i + 1 + n]);
            *room -= n as u64;
            i += 1 + n;
            continue;
        }
        let mut len = ctrl >> 5;
        let mut j = i + 1;
        if len == 7 {
            let Some(&ext) = input.get(j) else { break };
            len += ext as usize;
            j += 1;
        }
        let Some(&low) = input.get(j) else { break };
        j += 1;
        let distance = ((ctrl & 31) << 8) + low as usize + 1;
        len += 2;
        if distance > out.len() {
            return Err(format!(
                "LZF back-reference reaches {distance} bytes back, before the start of the output"
            ));
        }
        if len as u64 > *room {
            return Err("LZF blob decompresses to more bytes than it declares".into());
        }
        let start = out.len() - distance;
        // An overlapping reference repeats its pattern: copy it in steps of `distance` bytes,
        // each of which is already written.
        let mut copied = 0;
        while copied < len {
            let n = (len - copied).min(distance);
            out.extend_from_within(start + copied..start + copied + n);
            copied += n;
        }
        *room -= len as u64;
        i = j;
    }
    Ok(i)
}

/// Decompresses `compressed` into exactly `expected_len` bytes. The output grows as it is
/// produced, so a forged length costs no more memory than the data really expands to.
pub fn decompress(compressed: &[u8], expected_len: usize) -> Result<Vec<u8>, String> {
    check_declared(compressed.len() as u64, expected_len as u64)?;
    let mut out = Vec::with_capacity(expected_len.min(compressed.len().saturating_mul(4)));
    let mut room = expected_len as u64;
    let used = decode_into(&mut out, compressed, &mut room)?;
    if used != compressed.len() {
        return Err("LZF blob ends inside an instruction".into());
    }
    if out.len() != expected_len {
        return Err(format!(
            "LZF blob decompressed to {} bytes, expected {expected_len}",
            out.len()
        ));
    }
    Ok(out)
}

/// A streaming decoder: compressed bytes go in by pieces of any size ([`Decoder::feed`]), output
/// comes out by pieces ([`Decoder::take`]); it holds the output not yet taken, the last 8 KiB
/// of history and at most one incomplete instruction.
pub struct Decoder {
    /// History (up to `HISTORY` bytes already taken) followed by output not yet taken.
    buf: Vec<u8>,
    /// Where the output not yet taken begins in `buf`.
    fresh: usize,
    pending: Vec<u8>,
    /// Output still allowed (declared length minus what was produced).
    room: u64,
    expected: u64,
}

impl Decoder {
    /// A decoder for a blob of `compressed_len` bytes that declares `expected_len` bytes of output.
    pub fn new(compressed_len: u64, expected_len: u64) -> Result<Self, String> {
        check_declared(compressed_len, expected_len)?;
        Ok(Decoder {
            buf: Vec::new(),
            fresh: 0,
            pending: Vec::with_capacity(2 * MAX_INSTRUCTION),
            room: expected_len,
            expected: expected_len,
        })
    }

    /// Decodes the next piece of the compressed blob.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), String> {
        if !self.pending.is_empty() {
            let held = self.pending.len();
            let take = input.len().min(MAX_INSTRUCTION);
            self.pending.extend_from_slice(&input[..take]);
            let used = decode_into(&mut self.buf, &self.pending, &mut self.room)?;
            if used < held {
                // Still incomplete: `input` was shorter than the instruction's rest.
                self.pending.drain(..used);
                return Ok(());
            }
            self.pending.clear();
            input = &input[used - held..];
        }
        let used = decode_into(&mut self.buf, input, &mut self.room)?;
        self.pending.extend_from_slice(&input[used..]);
        Ok(())
    }

    /// Output produced and not yet taken.
    pub fn ready(&self) -> usize {
        self.buf.len() - self.fresh
    }

    /// Takes the output produced so far, keeping the history later references need.
    pub fn take(&mut self) -> Vec<u8> {
        let out = self.buf[self.fresh..].to_vec();
        let keep = self.buf.len().min(HISTORY);
        let cut = self.buf.len() - keep;
        self.buf.drain(..cut);
        self.fresh = self.buf.len();
        out
    }

    /// Checks, once the whole blob was fed and its output taken, that it ended on an
    /// instruction boundary with exactly the declared length.
    pub fn finish(&self) -> Result<(), String> {
        if !self.pending.is_empty() {
            return Err("LZF blob ends inside an instruction".into());
        }
        if self.room != 0 {
            return Err(format!(
                "LZF blob decompressed to {} bytes, expected {}",
                self.expected - self.room,
                self.expected
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut data = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(300);
        data.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        data.extend(std::iter::repeat_n(0u8, 50_000));
        data
    }

    #[test]
    fn round_trip_and_guards() {
        let data = sample();
        let c = lzf::compress(&data).expect("compressible");
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        assert!(decompress(&c, data.len() + 1).is_err());
        assert!(decompress(&c, data.len() - 1).is_err());
        assert!(decompress(&c, 1 << 40).is_err());
        assert!(decompress(&[0xff, 0xff, 0xff], 200).is_err());
        assert!(decompress(&c[..c.len() - 1], data.len()).is_err());
    }

    #[test]
    fn streaming_matches_whole_at_every_piece_size() {
        let data = sample();
        let c = lzf::compress(&data).expect("compressible");
        for piece in [1, 2, 3, 7, 33, 34, 100, 4096, c.len()] {
            let mut d = Decoder::new(c.len() as u64, data.len() as u64).unwrap();
            let mut out = Vec::new();
            for p in c.chunks(piece) {
                d.feed(p).unwrap();
                if d.ready() > 10_000 {
                    out.extend(d.take());
                }
            }
            out.extend(d.take());
            d.finish().unwrap();
            assert_eq!(out, data, "piece size {piece}");
        }
        let mut d = Decoder::new(c.len() as u64, data.len() as u64 + 5).unwrap();
        d.feed(&c).unwrap();
        d.take();
        assert!(d.finish().is_err());
        let mut d = Decoder::new(c.len() as u64, data.len() as u64).unwrap();
        d.feed(&c[..c.len() - 1]).unwrap();
        d.take();
        assert!(d.finish().is_err());
        assert!(Decoder::new(10, 10_000).is_err());
    }
}
