//! Valkey's streaming-compression envelope ("VCS", written with `rdbcompression lz4`): spotting
//! it at the start of an RDB, and handing the parser the logical RDB inside, decompressed one LZ4
//! block at a time. Memory stays bounded: one block's input and output (at most the frame's
//! declared block size, 4 MiB by the frame format, 64 KiB as Valkey writes it) and the 64 KiB
//! window that linked blocks refer back to.
//!
//! The layout and where it was read are in [`super::types::vcs`]: 7 bytes `V C S`, envelope
//! version 1, codec (1 = LZ4), a reserved 0, stream kind (1 = RDB); then one frame of the LZ4
//! frame format (magic `0x184D2204`, descriptor with its header checksum, blocks each led by a
//! 4-byte little-endian size whose top bit marks a stored block, an optional xxHash-32 of each
//! block, a zero end mark, an optional xxHash-32 of the whole content). Input that does not start
//! with the magic passes through untouched, so a plain RDB reads as before.
//!
//! As in Valkey's loader: decompressed bytes after the RDB's end are corruption; compressed bytes
//! after the frame's end are left unread (ignored in a file; in a replication transfer they are
//! the command stream). [`Unwrap::finish`] reads the frame's tail once the parser has seen the
//! RDB's EOF opcode and CRC trailer.

use std::fmt;
use std::io::{self, Read, Write};

use twox_hash::XxHash32;

use super::types::vcs;

const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;
/// How far back a linked block's matches may reach.
const WINDOW: usize = 64 * 1024;

/// An envelope problem: what, and at which byte of the (compressed) file. Travels inside an
/// `io::Error` through the byte source, which turns it into [`super::RdbErrorKind::Envelope`].
#[derive(Debug)]
pub(crate) struct EnvelopeError {
    pub msg: String,
    pub file_offset: u64,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {} of the file)", self.msg, self.file_offset)
    }
}

impl std::error::Error for EnvelopeError {}

fn fail(kind: io::ErrorKind, msg: impl Into<String>, file_offset: u64) -> io::Error {
    io::Error::new(
        kind,
        EnvelopeError {
            msg: msg.into(),
            file_offset,
        },
    )
}

fn corrupt(msg: impl Into<String>, at: u64) -> io::Error {
    fail(io::ErrorKind::InvalidData, msg, at)
}

/// The wrapped reader with the count of bytes taken from it.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counted<R> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Fills `buf` or fails with a truncation error naming `what`.
    fn read_full(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        let start = self.pos;
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..])?;
            if n == 0 {
                return Err(fail(
                    io::ErrorKind::UnexpectedEof,
                    format!("input ends inside {what} of the LZ4-compressed RDB (truncated file or dropped link)"),
                    start,
                ));
            }
            done += n;
        }
        Ok(())
    }

    fn u32_le(&mut self, what: &str) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_full(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }
}

enum State {
    /// Nothing read yet.
    Probe,
    /// Not enveloped: the bytes read while probing are handed out first, then the input as it is.
    Plain {
        head: [u8; 3],
        pos: usize,
        len: usize,
    },
    Lz4(Box<Frame>),
}

/// A reader that yields the logical RDB whether or not the input is enveloped.
pub(crate) struct Unwrap<R> {
    src: Counted<R>,
    state: State,
}

impl<R: Read> Unwrap<R> {
    /// Recognises the envelope on the first read.
    pub fn probing(inner: R) -> Self {
        Unwrap {
            src: Counted { inner, pos: 0 },
            state: State::Probe,
        }
    }

    /// Never looks for an envelope (a DUMP payload, a captured value).
    pub fn plain(inner: R) -> Self {
        Unwrap {
            src: Counted { inner, pos: 0 },
            state: State::Plain {
                head: [0; 3],
                pos: 0,
                len: 0,
            },
        }
    }

    /// Whether the input turned out to be enveloped (false before the first read).
    pub fn is_compressed(&self) -> bool {
        matches!(self.state, State::Lz4(_))
    }

    fn probe(&mut self) -> io::Result<()> {
        let mut head = [0u8; 3];
        let mut len = 0;
        while len < head.len() {
            let n = self.src.read_some(&mut head[len..])?;
            if n == 0 {
                break;
            }
            len += n;
        }
        if len < head.len() || &head != vcs::MAGIC {
            self.state = State::Plain { head, pos: 0, len };
            return Ok(());
        }
        let mut rest = [0u8; vcs::LEN - 3];
        self.src.read_full(&mut rest, "the VCS envelope")?;
        let [version, codec, reserved, kind] = rest;
        let what = "a Valkey compressed RDB (VCS envelope, rdbcompression lz4)";
        if version != vcs::VERSION {
            return Err(corrupt(
                format!(
                    "{what} of envelope version {version}: this reader knows version {}",
                    vcs::VERSION
                ),
                3,
            ));
        }
        match codec {
            vcs::CODEC_LZ4 => {}
            vcs::CODEC_ZSTD => {
                return Err(corrupt(
                    format!("{what} compressed with ZSTD (codec 2): this reader reads only LZ4; have Valkey rewrite it with rdbcompression lz4 or yes"),
                    4,
                ))
            }
            c => {
                return Err(corrupt(
                    format!("{what} with unknown codec {c}: this reader knows 1 (LZ4)"),
                    4,
                ))
            }
        }
        if reserved != 0 {
            return Err(corrupt(
                format!("{what} with reserved byte {reserved}, not 0: a newer envelope than this reader knows"),
                5,
            ));
        }
        if kind != vcs::STREAM_KIND_RDB {
            return Err(corrupt(
                format!("{what} whose stream kind is {kind}, not 1 (RDB)"),
                6,
            ));
        }
        self.state = State::Lz4(Box::new(Frame::begin(&mut self.src)?));
        Ok(())
    }

    /// Reads the rest of the frame after the logical RDB ended: its end mark and content
    /// checksum. `unread` is how many decompressed bytes the caller holds but did not consume.
    pub fn finish(&mut self, unread: usize) -> io::Result<()> {
        let State::Lz4(frame) = &mut self.state else {
            return Ok(());
        };
        let mut extra = unread as u64 + (frame.out.len() - frame.out_pos) as u64;
        frame.out_pos = frame.out.len();
        while extra == 0 && !frame.done {
            frame.next_block(&mut self.src)?;
            extra += frame.out.len() as u64;
            frame.out_pos = frame.out.len();
        }
        if extra > 0 {
            return Err(corrupt(
                format!(
                    "{extra} decompressed bytes follow the end of the RDB inside its LZ4 frame"
                ),
                self.src.pos,
            ));
        }
        Ok(())
    }

    /// The wrapped reader, and the probe bytes not yet handed out (they come first).
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = match self.state {
            State::Plain { head, pos, len } => head[pos..len].to_vec(),
            _ => Vec::new(),
        };
        (self.src.inner, rest)
    }
}

impl<R: Read> Read for Unwrap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if matches!(self.state, State::Probe) {
            self.probe()?;
        }
        match &mut self.state {
            State::Probe => Ok(0),
            State::Plain { head, pos, len } => {
                if *pos < *len {
                    let n = (*len - *pos).min(buf.len());
                    buf[..n].copy_from_slice(&head[*pos..*pos + n]);
                    *pos += n;
                    return Ok(n);
                }
                self.src.read_some(buf)
            }
            State::Lz4(frame) => frame.read(&mut self.src, buf),
        }
    }
}

/// One LZ4 frame being decoded.
struct Frame {
    block_max: usize,
    linked: bool,
    block_checksums: bool,
    content_size: Option<u64>,
    content_hash: Option<XxHash32>,
    /// The current block as stored.
    data: Vec<u8>,
    /// The current block decoded, handed out from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The last decoded bytes (up to 64 KiB) for linked blocks.
    window: Vec<u8>,
    produced: u64,
    done: bool,
}

impl Frame {
    /// Reads and checks the frame header that follows the envelope.
    fn begin<R: Read>(src: &mut Counted<R>) -> io::Result<Frame> {
        let at = src.pos;
        let magic = src.u32_le("the LZ4 frame header")?;
        if magic != LZ4_FRAME_MAGIC {
            return Err(corrupt(
                format!("the VCS envelope is followed by {magic:#010x}, not the LZ4 frame magic {LZ4_FRAME_MAGIC:#010x}"),
                at,
            ));
        }
        let mut desc = [0u8; 2 + 8];
        src.read_full(&mut desc[..2], "the LZ4 frame header")?;
        let (flg, bd) = (desc[0], desc[1]);
        if flg >> 6 != 1 {
            return Err(corrupt(
                format!(
                    "LZ4 frame format version {} (this reader knows 1)",
                    flg >> 6
                ),
                at + 4,
            ));
        }
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(corrupt(
                "LZ4 frame descriptor has reserved bits set",
                at + 4,
            ));
        }
        if flg & 0x01 != 0 {
            return Err(corrupt(
                "LZ4 frame needs a dictionary (dictionary id flag set), which Valkey never writes",
                at + 4,
            ));
        }
        let size_id = (bd >> 4) & 0x07;
        if size_id < 4 {
            return Err(corrupt(
                format!("LZ4 frame block size id {size_id} is not one of 4-7"),
                at + 5,
            ));
        }
        let block_max = 1usize << (8 + 2 * size_id as u32);
        let mut desc_len = 2;
        let content_size = if flg & 0x08 != 0 {
            src.read_full(&mut desc[2..10], "the LZ4 frame header")?;
            desc_len = 10;
            let mut b = [0u8; 8];
            b.copy_from_slice(&desc[2..10]);
            Some(u64::from_le_bytes(b))
        } else {
            None
        };
        let mut hc = [0u8; 1];
        let hc_at = src.pos;
        src.read_full(&mut hc, "the LZ4 frame header")?;
        let want = (XxHash32::oneshot(0, &desc[..desc_len]) >> 8) as u8;
        if hc[0] != want {
            return Err(corrupt(
                format!(
                    "LZ4 frame header checksum is {:#04x}, its bytes give {want:#04x}",
                    hc[0]
                ),
                hc_at,
            ));
        }
        Ok(Frame {
            block_max,
            linked: flg & 0x20 == 0,
            block_checksums: flg & 0x10 != 0,
            content_size,
            content_hash: (flg & 0x04 != 0).then(|| XxHash32::with_seed(0)),
            data: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            window: Vec::new(),
            produced: 0,
            done: false,
        })
    }

    fn read<R: Read>(&mut self, src: &mut Counted<R>, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = (self.out.len() - self.out_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.next_block(src)?;
        }
    }

    /// Reads the next block into `out` (empty at the end mark, after which `done` is set).
    fn next_block<R: Read>(&mut self, src: &mut Counted<R>) -> io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        let at = src.pos;
        let size = src.u32_le("an LZ4 block header")?;
        if size == 0 {
            return self.end(src);
        }
        let stored = size & 0x8000_0000 != 0;
        let len = (size & 0x7FFF_FFFF) as usize;
        if len > self.block_max {
            return Err(corrupt(
                format!(
                    "LZ4 block of {len} bytes is larger than the frame's block size {}",
                    self.block_max
                ),
                at,
            ));
        }
        self.data.resize(len, 0);
        src.read_full(&mut self.data, "an LZ4 block")?;
        if self.block_checksums {
            let sum_at = src.pos;
            let stored_sum = src.u32_le("an LZ4 block checksum")?;
            let sum = XxHash32::oneshot(0, &self.data);
            if sum != stored_sum {
                return Err(corrupt(
                    format!("LZ4 block checksum mismatch: the file says {stored_sum:08x}, the block's bytes give {sum:08x}"),
                    sum_at,
                ));
            }
        }
        if stored {
            self.out.extend_from_slice(&self.data);
        } else {
            self.out.resize(self.block_max, 0);
            let dict: &[u8] = if self.linked { &self.window } else { &[] };
            let n = lz4_flex::block::decompress_into_with_dict(&self.data, &mut self.out, dict)
                .map_err(|e| corrupt(format!("LZ4 block does not decompress: {e}"), at))?;
            self.out.truncate(n);
        }
        if let Some(h) = &mut self.content_hash {
            std::hash::Hasher::write(h, &self.out);
        }
        if self.linked {
            if self.out.len() >= WINDOW {
                self.window.clear();
                self.window
                    .extend_from_slice(&self.out[self.out.len() - WINDOW..]);
            } else {
                let keep = WINDOW - self.out.len();
                if self.window.len() > keep {
                    self.window.drain(..self.window.len() - keep);
                }
                self.window.extend_from_slice(&self.out);
            }
        }
        self.produced += self.out.len() as u64;
        Ok(())
    }

    fn end<R: Read>(&mut self, src: &mut Counted<R>) -> io::Result<()> {
        self.done = true;
        if let Some(h) = &self.content_hash {
            let at = src.pos;
            let stored = src.u32_le("the LZ4 content checksum")?;
            let sum = h.finish_32();
            if sum != stored {
                return Err(corrupt(
                    format!("LZ4 content checksum mismatch: the file says {stored:08x}, the decompressed RDB gives {sum:08x}"),
                    at,
                ));
            }
        }
        if let Some(size) = self.content_size {
            if size != self.produced {
                return Err(corrupt(
                    format!(
                        "LZ4 frame declares {size} content bytes but holds {}",
                        self.produced
                    ),
                    src.pos,
                ));
            }
        }
        Ok(())
    }
}

/// Writes an RDB wrapped as Valkey's `rdbcompression lz4` does: the VCS envelope, then one LZ4
/// frame of 64 KiB linked blocks, with block and content checksums when `checksums` (Valkey's
/// `rdbchecksum yes`). Feed it the plain RDB's bytes, then call [`VcsWriter::finish`].
pub struct VcsWriter<W: Write> {
    enc: lz4_flex::frame::FrameEncoder<W>,
}

impl<W: Write> VcsWriter<W> {
    pub fn new(mut out: W, checksums: bool) -> io::Result<Self> {
        out.write_all(vcs::MAGIC)?;
        out.write_all(&[vcs::VERSION, vcs::CODEC_LZ4, 0, vcs::STREAM_KIND_RDB])?;
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_mode(lz4_flex::frame::BlockMode::Linked)
            .block_checksums(checksums)
            .content_checksum(checksums);
        Ok(VcsWriter {
            enc: lz4_flex::frame::FrameEncoder::with_frame_info(info, out),
        })
    }

    /// Ends the frame and gives back the writer.
    pub fn finish(self) -> io::Result<W> {
        self.enc.finish().map_err(io::Error::other)
    }
}

impl<W: Write> Write for VcsWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.enc.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.enc.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(plain: &[u8], checksums: bool) -> Vec<u8> {
        let mut w = VcsWriter::new(Vec::new(), checksums).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    }

    fn unwrap_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut u = Unwrap::probing(bytes);
        let mut out = Vec::new();
        u.read_to_end(&mut out)?;
        u.finish(0)?;
        Ok(out)
    }

    /// Compressible but not trivially: repeats far apart, so linked blocks reach back.
    fn sample(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let word = format!("key:{}:{} ", x % 5000, (x >> 8) % 7);
            v.extend_from_slice(word.as_bytes());
        }
        v.truncate(len);
        v
    }

    #[test]
    fn round_trip_with_and_without_checksums() {
        for len in [0, 1, 100, WINDOW - 1, WINDOW, 3 * WINDOW + 17, 1 << 20] {
            let plain = sample(len);
            for sums in [true, false] {
                let env = wrap(&plain, sums);
                assert_eq!(&env[..7], &[86, 67, 83, 1, 1, 0, 1]);
                assert_eq!(&env[7..11], &[0x04, 0x22, 0x4D, 0x18]);
                assert_eq!(env[11] & 0x14 != 0, sums);
                assert_eq!(unwrap_all(&env).unwrap(), plain, "len {len} sums {sums}");
            }
        }
    }

    #[test]
    fn plain_input_passes_through() {
        for plain in [&b""[..], b"R", b"RE", b"REDIS0011", b"VC", b"VCX123"] {
            assert_eq!(unwrap_all(plain).unwrap(), plain);
        }
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let plain = sample(200_000);
        let env = wrap(&plain, true);
        // With checksums on, every flipped byte and every truncation is caught.
        // (A flip in the magic makes the file plain, which the parser then refuses as no RDB.)
        for i in (3..env.len()).step_by(97) {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert!(unwrap_all(&bad).is_err(), "flip at {i} went unnoticed");
        }
        // Cut before the magic is complete, the input is no envelope (and no RDB either).
        assert_eq!(unwrap_all(&env[..2]).unwrap(), &env[..2]);
        for cut in [
            3,
            5,
            7,
            10,
            12,
            20,
            env.len() / 2,
            env.len() - 4,
            env.len() - 1,
        ] {
            let e = unwrap_all(&env[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
        }
        // Envelope fields, as Valkey's own test mutates them.
        for (off, val, says) in [
            (3, 2, "envelope version 2"),
            (4, 2, "ZSTD"),
            (4, 127, "unknown codec 127"),
            (5, 1, "reserved byte 1"),
            (6, 127, "stream kind is 127"),
        ] {
            let mut bad = env.clone();
            bad[off] = val;
            let e = unwrap_all(&bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn bytes_after_the_frame_are_left_alone_and_after_the_rdb_are_corrupt() {
        let plain = sample(1000);
        let mut env = wrap(&plain, true);
        env.extend_from_slice(b"trailing-data");
        let mut u = Unwrap::probing(&env[..]);
        let mut got = vec![0u8; plain.len()];
        u.read_exact(&mut got).unwrap();
        u.finish(0).unwrap();
        let (rest, head) = u.into_parts();
        assert!(head.is_empty());
        assert_eq!(rest, b"trailing-data");

        let mut u = Unwrap::probing(&env[..]);
        let mut got = vec![0u8; plain.len() - 10];
        u.read_exact(&mut got).unwrap();
        let e = u.finish(0).unwrap_err().to_string();
        assert!(e.contains("10 decompressed bytes follow"), "{e}");
    }
}
