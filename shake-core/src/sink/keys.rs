//! `--format keys`: one line per key, `db<TAB>type<TAB>key`. Values are skipped undecoded.

use std::io::{self, Write};

use super::{RdbSink, ValueNeed};
use crate::rdb::{Chunk, KeyHeader};

pub struct KeyListSink<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> KeyListSink<W> {
    pub fn new(out: W) -> Self {
        KeyListSink {
            out,
            line: Vec::with_capacity(256),
        }
    }
}

/// A key as one line of text: as is when it is UTF-8 without control characters and does not
/// begin with a double quote; otherwise quoted with redis-cli's escapes, so every key stays on
/// one line and a quoted key can't be mistaken for a bare one.
pub fn key_text(key: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(key) {
        Ok(s) if !s.starts_with('"') && !s.chars().any(char::is_control) => {
            std::borrow::Cow::Borrowed(s)
        }
        _ => std::borrow::Cow::Owned(crate::text::quote_bytes(key)),
    }
}

impl<W: Write> RdbSink for KeyListSink<W> {
    fn value_need(&self) -> ValueNeed {
        ValueNeed::Nothing
    }

    fn begin_key(&mut self, k: &KeyHeader) -> io::Result<()> {
        // Written piece by piece: the formatting machinery cost as much as parsing the key.
        self.line.clear();
        crate::sink::json::uint(&mut self.line, k.db);
        self.line.push(b'\t');
        self.line
            .extend_from_slice(k.value_type.as_str().as_bytes());
        self.line.push(b'\t');
        self.line.extend_from_slice(key_text(&k.key).as_bytes());
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn chunk(&mut self, _k: &KeyHeader, _c: Chunk) -> io::Result<()> {
        Ok(())
    }

    fn end_key(&mut self, _k: &KeyHeader, _n: u64) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
