//! shake-decode on an append-only file ([`crate::aof`]): the RDB part (a preamble, or a
//! multi-part base in RDB form) goes through the RDB sinks like any RDB ([`rdb_part`], which
//! also says where the RDB ends in its file: an AOF tail may follow), then the commands are
//! printed by [`CommandPrinter`]:
//!
//! - JSON lines: one command record per command, the shape of shake-sync `--output`'s stream
//!   records ([`super::json::command_record`]) with `file` (the part it is in), `offset` (where
//!   it starts in that file), `ts` (the last `#TS:` annotation before it, when there is one), `db`
//!   and `argv`. `SELECT` is folded into `db`, as in shake-sync's records.
//! - RESP: the commands as the file holds them, with a `SELECT` where the database changes
//!   ([`super::resp_command`]): the output is itself a plain AOF.
//!
//! A transaction (`MULTI` ... `EXEC`) is printed whole or not at all: one the input ends (or
//! `--until` stops) inside is left out, as a server loading the file reverts it. `--db` /
//! `--exclude-db` choose commands by the database they run in; the key and type filters
//! describe an RDB's keys and are refused for commands by the caller.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{drive, json, resp_command, DecodeSummary, DriveError, RdbSink};
use crate::aof::Replay;
use crate::filter::KeyFilter;
use crate::observe::Progress;
use crate::rdb::{ParserOptions, RdbParser};

/// How [`CommandPrinter`] writes commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandFormat {
    Jsonl,
    Resp,
}

/// What stopped an AOF decode.
#[derive(Debug)]
pub enum AofDecodeError {
    /// Bad input: one line naming the file and offset.
    Input(String),
    Output(io::Error),
}

impl From<io::Error> for AofDecodeError {
    fn from(e: io::Error) -> Self {
        AofDecodeError::Output(e)
    }
}

/// Decodes the RDB at the start of `path` into `sink`. Returns the decode's counts and where
/// the RDB ends in the file (the byte after its checksum): commands of an AOF with an RDB
/// preamble start there.
pub fn rdb_part<S: RdbSink + ?Sized>(
    path: &Path,
    opts: &ParserOptions,
    filter: &KeyFilter,
    sink: &mut S,
    progress: &mut Progress,
) -> Result<(DecodeSummary, u64), AofDecodeError> {
    let f = File::open(path)
        .map_err(|e| AofDecodeError::Input(format!("cannot open {}: {e}", path.display())))?;
    let (reader, read) = crate::aof::counted(BufReader::with_capacity(1 << 16, f));
    let mut parser = RdbParser::with_options(reader, opts.clone());
    let r = drive(&mut parser, filter, sink, progress);
    let summary = match r {
        Ok(s) => s,
        Err(e) => {
            // The keys before the damage are written out; the exit status says the rest.
            progress.finish(parser.offset(), 0);
            let _ = sink.finish();
            return Err(match e {
                DriveError::Output(e) => AofDecodeError::Output(e),
                DriveError::Rdb(e) => AofDecodeError::Input(format!("{}: {e}", path.display())),
            });
        }
    };
    let (_, ahead) = parser.into_parts();
    let end = read.load(Ordering::Relaxed) - ahead.len() as u64;
    Ok((summary, end))
}

/// The bytes of `path` from `start` on: whether an AOF part holds commands to print.
pub fn bytes_from(path: &Path, start: u64) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.len().saturating_sub(start))
        .unwrap_or(0)
}

/// Prints the commands of an AOF input's parts.
pub struct CommandPrinter {
    format: CommandFormat,
    filter: KeyFilter,
    /// RESP: the database the output has selected (`None`: not known, the next command
    /// selects its own).
    selected: Option<u64>,
    buf: Vec<u8>,
    /// The records of an open transaction, printed at its EXEC.
    held: Option<Vec<u8>>,
    held_commands: u64,
    /// Commands printed (a transaction's MULTI and EXEC included).
    pub printed: u64,
    /// Commands left out by `--db` / `--exclude-db`.
    pub filtered: u64,
}

impl CommandPrinter {
    pub fn new(format: CommandFormat, filter: KeyFilter) -> CommandPrinter {
        CommandPrinter {
            format,
            filter,
            selected: None,
            buf: Vec::with_capacity(1 << 16),
            held: None,
            held_commands: 0,
            printed: 0,
            filtered: 0,
        }
    }

    /// Prints every command `replay` hands over into `out`. On bad input the commands before it
    /// are written out and the error names the file and offset.
    pub fn print_all<W: Write>(
        &mut self,
        replay: &mut Replay,
        out: &mut W,
    ) -> Result<(), AofDecodeError> {
        // What the RDB part printed selected some database; the commands say their own.
        self.selected = None;
        let r = self.print_loop(replay, out);
        out.write_all(&self.buf)?;
        self.buf.clear();
        out.flush()?;
        r
    }

    fn print_loop<W: Write>(
        &mut self,
        replay: &mut Replay,
        out: &mut W,
    ) -> Result<(), AofDecodeError> {
        let mut path: Option<(PathBuf, String)> = None;
        while let Some(c) = replay.next_command().map_err(AofDecodeError::Input)? {
            let name = c.frame.get(c.args[0].clone()).unwrap_or_default();
            if name.eq_ignore_ascii_case(b"SELECT") {
                // Folded into the `db` of the commands after it (RESP: selected again there).
                continue;
            }
            let multi = name.eq_ignore_ascii_case(b"MULTI");
            let exec = name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD");
            // A transaction's bounds are kept whatever its database: servers write the SELECT
            // of its first command before or after the MULTI.
            if !multi && !exec && !self.filter.db_allowed(c.db) {
                self.filtered += 1;
                continue;
            }
            let file = match &path {
                Some((p, shown)) if *p == c.path => shown.as_str(),
                _ => {
                    let shown = c.path.display().to_string();
                    path.insert((c.path.clone(), shown)).1.as_str()
                }
            };
            if multi && self.held.is_none() {
                self.held = Some(Vec::new());
                self.held_commands = 0;
            }
            let into = self.held.as_mut().unwrap_or(&mut self.buf);
            match self.format {
                CommandFormat::Jsonl => json::command_record(
                    into,
                    &[("file", file)],
                    c.db,
                    c.offset,
                    c.ts,
                    &c.frame,
                    &c.args,
                ),
                CommandFormat::Resp => resp_command(into, &mut self.selected, c.db, &c.frame),
            }
            match &mut self.held {
                Some(_) if exec => {
                    let t = self.held.take().unwrap_or_default();
                    self.buf.extend_from_slice(&t);
                    self.printed += self.held_commands + 1;
                }
                Some(_) => self.held_commands += 1,
                None => self.printed += 1,
            }
            if self.buf.len() >= 1 << 20 {
                out.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        // A transaction the input ends inside: not printed (the replay said so in its notes).
        self.held = None;
        Ok(())
    }
}
