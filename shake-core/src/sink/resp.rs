//! `--format resp`: commands that recreate the data, ready for `redis-cli --pipe`: SELECT when
//! the database changes, FUNCTION LOAD REPLACE for libraries, and each key's commands from
//! `rebuild::CommandRebuilder` (which documents them). Module values can't be expressed as
//! commands; they are counted in `skipped_modules` and left out.

use std::io::{self, Write};

use super::{RdbSink, ValueNeed};
use crate::rdb::{Chunk, Item, KeyHeader, ValueType};
use crate::rebuild::{function_library_code, CommandRebuilder};
use crate::resp::encode_command;

pub struct RespSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    rebuild: CommandRebuilder,
    db: Option<u64>,
    skipped_modules: u64,
    /// Where the current key's commands begin in `buf`, to drop them if the key fails.
    key_start: usize,
}

impl<W: Write> RespSink<W> {
    pub fn new(out: W) -> Self {
        RespSink {
            out,
            buf: Vec::with_capacity(64 * 1024),
            rebuild: CommandRebuilder::new(),
            db: None,
            skipped_modules: 0,
            key_start: 0,
        }
    }

    pub fn skipped_modules(&self) -> u64 {
        self.skipped_modules
    }

    fn flush_if_big(&mut self) -> io::Result<()> {
        if self.buf.len() >= 1 << 20 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
            self.key_start = 0;
        }
        Ok(())
    }
}

impl<W: Write> RdbSink for RespSink<W> {
    fn item(&mut self, item: &Item) -> io::Result<()> {
        if let Item::Function(f) = item {
            encode_command(
                &mut self.buf,
                &[
                    &b"FUNCTION"[..],
                    b"LOAD",
                    b"REPLACE",
                    &function_library_code(f),
                ],
            );
            self.flush_if_big()?;
        }
        Ok(())
    }

    fn value_need(&self) -> ValueNeed {
        ValueNeed::Chunks
    }

    fn begin_key(&mut self, k: &KeyHeader) -> io::Result<()> {
        // Neither has a command form (arrays: Redis 8.8's commands are not written here).
        if matches!(k.value_type, ValueType::Module | ValueType::Array) {
            self.skipped_modules += 1;
            return Ok(());
        }
        self.key_start = self.buf.len();
        if self.db != Some(k.db) {
            encode_command(
                &mut self.buf,
                &[&b"SELECT"[..], k.db.to_string().as_bytes()],
            );
            self.db = Some(k.db);
        }
        let buf = &mut self.buf;
        self.rebuild.begin(k, &mut |c| buf.extend_from_slice(c));
        Ok(())
    }

    fn chunk(&mut self, k: &KeyHeader, chunk: Chunk) -> io::Result<()> {
        let buf = &mut self.buf;
        self.rebuild
            .chunk(k, chunk, &mut |c| buf.extend_from_slice(c));
        self.flush_if_big()
    }

    fn end_key(&mut self, k: &KeyHeader, _n: u64) -> io::Result<()> {
        let buf = &mut self.buf;
        self.rebuild.end(k, &mut |c| buf.extend_from_slice(c));
        self.flush_if_big()
    }

    fn abandon_key(&mut self) {
        self.buf.truncate(self.key_start);
        // A SELECT emitted for the abandoned key went with it.
        self.db = None;
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

/// Appends one command (`frame`, as an AOF holds it) to RESP output that runs in database
/// `db`, after a `SELECT` when the output's selected database (`selected`; `None`: unknown) is
/// another: shake-sync `--output`'s stream and shake-decode's AOF commands.
pub fn resp_command(out: &mut Vec<u8>, selected: &mut Option<u64>, db: u64, frame: &[u8]) {
    if *selected != Some(db) {
        encode_command(out, &[&b"SELECT"[..], db.to_string().as_bytes()]);
        *selected = Some(db);
    }
    out.extend_from_slice(frame);
}
