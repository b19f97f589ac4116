//! Output sinks for RDB content and the loop that feeds them: parser -> filter -> sink.
//! A sink knows its destination format; it never sees how the bytes were encoded in the file.

pub mod aof;
pub(crate) mod json;
mod jsonl;
mod keys;
mod memory;
mod resp;

pub use jsonl::JsonLinesSink;
pub use keys::KeyListSink;
pub use memory::MemoryReportSink;
pub use resp::{resp_command, RespSink};

use std::fmt;
use std::io::{self, Read};

use crate::filter::KeyFilter;
use crate::observe::Progress;
use crate::rdb::{Chunk, Header, Item, KeyHeader, RdbError, RdbParser};

/// How much of a value a sink needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueNeed {
    /// Only the key header (the value is skipped without decoding).
    Nothing,
    /// The decoded value, chunk by chunk.
    Chunks,
}

pub trait RdbSink {
    fn header(&mut self, _h: &Header) -> io::Result<()> {
        Ok(())
    }
    /// A top-level item other than a key (AUX, SELECTDB, functions, END, ...).
    fn item(&mut self, _item: &Item) -> io::Result<()> {
        Ok(())
    }
    fn value_need(&self) -> ValueNeed;
    fn begin_key(&mut self, key: &KeyHeader) -> io::Result<()>;
    fn chunk(&mut self, key: &KeyHeader, chunk: Chunk) -> io::Result<()>;
    /// `serialized_bytes`: length of the value's RDB encoding.
    fn end_key(&mut self, key: &KeyHeader, serialized_bytes: u64) -> io::Result<()>;
    /// The input failed in the middle of a key: drop what is buffered for it.
    fn abandon_key(&mut self) {}
    fn finish(&mut self) -> io::Result<()>;
}

#[derive(Debug, Default, Clone)]
pub struct DecodeSummary {
    pub keys_seen: u64,
    pub keys_written: u64,
    pub keys_filtered: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum DriveError {
    Rdb(RdbError),
    Output(io::Error),
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Rdb(e) => write!(f, "{e}"),
            DriveError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl std::error::Error for DriveError {}

impl From<RdbError> for DriveError {
    fn from(e: RdbError) -> Self {
        DriveError::Rdb(e)
    }
}

impl From<io::Error> for DriveError {
    fn from(e: io::Error) -> Self {
        DriveError::Output(e)
    }
}

/// Reads a whole RDB from `parser`, passing every item and every key that `filter` admits to
/// `sink`. Stops after the EOF opcode and checksum (bytes after them, like an AOF tail, are left).
pub fn drive<R: Read, S: RdbSink + ?Sized>(
    parser: &mut RdbParser<R>,
    filter: &KeyFilter,
    sink: &mut S,
    progress: &mut Progress,
) -> Result<DecodeSummary, DriveError> {
    let mut summary = DecodeSummary::default();
    let header = parser.header()?;
    sink.header(&header)?;
    let need = sink.value_need();
    while let Some(item) = parser.next_item()? {
        match item {
            Item::Key(key) => {
                summary.keys_seen += 1;
                if !filter.matches(key.db, &key.key, key.value_type) {
                    summary.keys_filtered += 1;
                    parser.skip_value()?;
                } else {
                    let start = parser.offset();
                    sink.begin_key(&key)?;
                    let r = match need {
                        ValueNeed::Nothing => parser.skip_value().map_err(DriveError::from),
                        ValueNeed::Chunks => feed_chunks(parser, &key, sink),
                    };
                    if let Err(e) = r {
                        sink.abandon_key();
                        return Err(e);
                    }
                    sink.end_key(&key, parser.offset() - start)?;
                    summary.keys_written += 1;
                }
                progress.update(parser.offset(), summary.keys_seen);
            }
            other => sink.item(&other)?,
        }
    }
    summary.bytes = parser.offset();
    sink.finish()?;
    progress.finish(parser.offset(), summary.keys_seen);
    Ok(summary)
}

fn feed_chunks<R: Read, S: RdbSink + ?Sized>(
    parser: &mut RdbParser<R>,
    key: &KeyHeader,
    sink: &mut S,
) -> Result<(), DriveError> {
    while let Some(chunk) = parser.next_chunk()? {
        sink.chunk(key, chunk)?;
    }
    Ok(())
}
