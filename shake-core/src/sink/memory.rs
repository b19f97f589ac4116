//! `--format memory`: a CSV size report, one row per key:
//! `db,key,type,encoding,elements,serialized_bytes,largest_element_bytes,expire_at_ms`.
//!
//! `elements` counts list items, set/zset members, hash fields, stream entries (1 for a string
//! or module value); `serialized_bytes` is the length of the value's RDB encoding (what a DUMP
//! payload carries, less its 10-byte trailer); `largest_element_bytes` is the longest element:
//! a string's length, a member's, a hash field plus its value, a stream entry's fields and values.

use std::io::{self, Write};

use super::keys::key_text;
use super::{RdbSink, ValueNeed};
use crate::rdb::{Chunk, Header, KeyHeader, Magic};

pub struct MemoryReportSink<W: Write> {
    out: W,
    magic: Magic,
    elements: u64,
    largest: u64,
}

impl<W: Write> MemoryReportSink<W> {
    pub fn new(out: W) -> Self {
        MemoryReportSink {
            out,
            magic: Magic::Redis,
            elements: 0,
            largest: 0,
        }
    }
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl<W: Write> RdbSink for MemoryReportSink<W> {
    fn header(&mut self, h: &Header) -> io::Result<()> {
        self.magic = h.magic;
        self.out.write_all(
            b"db,key,type,encoding,elements,serialized_bytes,largest_element_bytes,expire_at_ms\n",
        )
    }

    fn value_need(&self) -> ValueNeed {
        ValueNeed::Chunks
    }

    fn begin_key(&mut self, _k: &KeyHeader) -> io::Result<()> {
        self.elements = 0;
        self.largest = 0;
        Ok(())
    }

    fn chunk(&mut self, _k: &KeyHeader, c: Chunk) -> io::Result<()> {
        self.elements += c.elements() as u64;
        let largest = match &c {
            Chunk::String(s) => s.len(),
            Chunk::StringPart { len, .. } => *len as usize,
            Chunk::Items(v) => v.iter().map(Vec::len).max().unwrap_or(0),
            Chunk::Scored(v) => v.iter().map(|(m, _)| m.len()).max().unwrap_or(0),
            Chunk::Fields(v) => v
                .iter()
                .map(|f| f.field.len() + f.value.len())
                .max()
                .unwrap_or(0),
            Chunk::StreamEntries(v) => v
                .iter()
                .map(|e| {
                    e.fields
                        .iter()
                        .map(|(f, v)| f.len() + v.len())
                        .sum::<usize>()
                })
                .max()
                .unwrap_or(0),
            Chunk::Module { raw, .. } => raw.len(),
            _ => 0,
        };
        self.largest = self.largest.max(largest as u64);
        Ok(())
    }

    fn end_key(&mut self, k: &KeyHeader, serialized: u64) -> io::Result<()> {
        let key = key_text(&k.key);
        let expire = k.expire_at_ms.map(|v| v.to_string()).unwrap_or_default();
        writeln!(
            self.out,
            "{},{},{},{},{},{},{},{}",
            k.db,
            csv_field(&key),
            k.value_type,
            k.encoding_name(self.magic),
            self.elements,
            serialized,
            self.largest,
            expire
        )
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
