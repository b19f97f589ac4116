//! The byte source under the RDB parser: a buffered reader over any `io::Read` that knows its
//! absolute offset, keeps the running CRC-64 of everything consumed, and can record the exact
//! bytes of a stretch of input (a value's raw encoding, for DUMP payloads) without a second read.
//! A whole file is read through [`Unwrap`], so Valkey's LZ4 envelope is undone underneath: offsets,
//! the CRC and captures are then those of the decompressed (logical) RDB.

use std::io::{self, Read};

use super::envelope::{EnvelopeError, Unwrap};
use super::error::{RdbError, RdbErrorKind, Result};
use crate::crc64::Crc64;

const BUF_SIZE: usize = 256 * 1024;
/// Reads of declared lengths grow their buffer in steps of at most this much, so a forged length
/// costs no more memory than the bytes that really arrive.
const GROW_STEP: usize = 1 << 20;

pub struct Source<R> {
    inner: Unwrap<R>,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Absolute offset of `buf[0]`.
    base: u64,
    crc: Option<Crc64>,
    /// Bytes of `buf` before this index are already in the CRC (or CRC is off).
    crc_mark: usize,
    /// Open recordings, innermost last (a module value recorded inside a whole-value capture).
    captures: Vec<Vec<u8>>,
    capture_mark: usize,
}

impl<R: Read> Source<R> {
    /// A source over bytes that are RDB as they are (a DUMP payload body, a captured value).
    pub fn new(inner: R) -> Self {
        Self::over(Unwrap::plain(inner))
    }

    /// A source over a whole RDB file or transfer, which may be VCS-enveloped.
    pub fn file(inner: R) -> Self {
        Self::over(Unwrap::probing(inner))
    }

    fn over(inner: Unwrap<R>) -> Self {
        Source {
            inner,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: 0,
            crc: Some(Crc64::new()),
            crc_mark: 0,
            captures: Vec::new(),
            capture_mark: 0,
        }
    }

    /// Absolute offset of the next byte to be consumed.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Gives the consumed-but-unaccounted bytes to the CRC and the capture.
    fn settle(&mut self) {
        if let Some(crc) = &mut self.crc {
            if self.crc_mark < self.pos {
                crc.update(&self.buf[self.crc_mark..self.pos]);
            }
        }
        self.crc_mark = self.pos;
        if self.capture_mark < self.pos {
            for cap in &mut self.captures {
                cap.extend_from_slice(&self.buf[self.capture_mark..self.pos]);
            }
        }
        self.capture_mark = self.pos;
    }

    /// Refills the buffer; returns false at end of input.
    fn fill(&mut self) -> Result<bool> {
        if self.pos < self.end {
            return Ok(true);
        }
        self.settle();
        self.base += self.pos as u64;
        self.pos = 0;
        self.end = 0;
        self.crc_mark = 0;
        self.capture_mark = 0;
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    /// An envelope error keeps its own words and file offset; anything else is the reader's.
    fn read_error(&self, e: io::Error) -> RdbError {
        if !e.get_ref().is_some_and(|i| i.is::<EnvelopeError>()) {
            return RdbError::new(RdbErrorKind::Io(e), self.offset());
        }
        let truncated = e.kind() == io::ErrorKind::UnexpectedEof;
        let msg = e.into_inner().map_or_else(String::new, |i| i.to_string());
        RdbError::new(RdbErrorKind::Envelope { msg, truncated }, self.offset())
    }

    /// Whether the input is Valkey's LZ4-compressed envelope (known after the first read).
    pub fn is_compressed(&self) -> bool {
        self.inner.is_compressed()
    }

    /// After the RDB's last byte (EOF opcode and CRC trailer): an enveloped input must hold no
    /// more decompressed bytes, and its frame is read to its end (end mark, content checksum).
    pub fn finish_envelope(&mut self) -> Result<()> {
        if !self.inner.is_compressed() {
            return Ok(());
        }
        let unread = self.end - self.pos;
        self.inner.finish(unread).map_err(|e| self.read_error(e))?;
        // The decompressed bytes held (counted in the error above) are not part of anything.
        self.settle();
        self.pos = self.end;
        self.settle();
        Ok(())
    }

    fn eof(&self, wanted: &'static str) -> RdbError {
        RdbError::new(RdbErrorKind::UnexpectedEof { wanted }, self.offset())
    }

    /// Reads one byte, or `None` at a clean end of input.
    pub fn try_u8(&mut self) -> Result<Option<u8>> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }

    pub fn u8(&mut self, wanted: &'static str) -> Result<u8> {
        self.try_u8()?.ok_or_else(|| self.eof(wanted))
    }

    pub fn exact(&mut self, out: &mut [u8], wanted: &'static str) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            if !self.fill()? {
                return Err(self.eof(wanted));
            }
            let n = (self.end - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        Ok(())
    }

    pub fn array<const N: usize>(&mut self, wanted: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        self.exact(&mut a, wanted)?;
        Ok(a)
    }

    /// Reads `len` bytes into a new vector, growing it as the bytes arrive.
    pub fn bytes(&mut self, len: u64, wanted: &'static str) -> Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| {
            RdbError::new(
                RdbErrorKind::ImplausibleLength { what: wanted, len },
                self.offset(),
            )
        })?;
        let mut out = Vec::with_capacity(len.min(GROW_STEP));
        while out.len() < len {
            if !self.fill()? {
                return Err(self.eof(wanted));
            }
            let n = (self.end - self.pos).min(len - out.len());
            out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
        }
        Ok(out)
    }

    /// Consumes `len` bytes without keeping them (they still reach the CRC and any capture).
    pub fn skip(&mut self, mut len: u64, wanted: &'static str) -> Result<()> {
        while len > 0 {
            if !self.fill()? {
                return Err(self.eof(wanted));
            }
            let n = ((self.end - self.pos) as u64).min(len) as usize;
            self.pos += n;
            len -= n as u64;
        }
        Ok(())
    }

    /// Starts recording every consumed byte.
    pub fn start_capture(&mut self) {
        self.settle();
        self.captures.push(Vec::new());
    }

    /// Stops the innermost recording and returns the bytes consumed since its `start_capture`.
    pub fn finish_capture(&mut self) -> Vec<u8> {
        self.settle();
        self.captures.pop().unwrap_or_default()
    }

    /// Bytes recorded so far in the current capture (settled to the current position).
    pub fn captured_len(&mut self) -> usize {
        self.settle();
        self.captures.last().map_or(0, Vec::len)
    }

    /// CRC-64 of every byte consumed so far; later bytes are not added any more.
    pub fn finish_crc(&mut self) -> u64 {
        self.settle();
        let v = self.crc.as_ref().map_or(0, Crc64::value);
        self.crc = None;
        v
    }

    /// Gives back the inner reader with any bytes read ahead but not consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let mut rest = self.buf[self.pos..self.end].to_vec();
        let (inner, head) = self.inner.into_parts();
        rest.extend_from_slice(&head);
        (inner, rest)
    }
}
