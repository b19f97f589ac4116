//! Append-only files as input: this module owns what an AOF is made of.
//!
//! - [`layout`] says what a path holds: a plain AOF (commands from the first byte, `*` or a
//!   `#` annotation first), an RDB that may carry an AOF tail (the `aof-use-rdb-preamble`
//!   form: the caller learns where the RDB ends by parsing it, [`counted`]), or Redis 7's
//!   multi-part AOF (a directory named by `appenddirname`, or its `*.manifest`): the base file
//!   (RDB or AOF form) and the incremental files in sequence order.
//! - [`CommandReader`] reads the commands of an AOF part one by one with their byte offsets,
//!   through the project's one command parser ([`crate::command::parse_command_needing`]), and
//!   reports the `#TS:` annotations (`aof-timestamp-enabled yes`) between them. A frame the file
//!   ends inside is a torn last command ([`Next::Truncated`], what `aof-load-truncated` and
//!   `redis-check-aof --fix` deal with); anything malformed before the end is an error with its
//!   offset. No allocation is sized by a length the file declares before the file is known to
//!   hold that many bytes.
//! - [`parse_until`] reads the point in time `--until` names (unix seconds or RFC 3339).
//!
//! Applying the commands is the restore's job (`apply::restore`, through the sync's stream
//! applier); printing them is the decoder's (`sink::aof`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Most arguments one command may have (the replication link's limit).
const MAX_ARGS: usize = 1 << 24;
/// Longest argument (`proto-max-bulk-len` can be raised to this much at most in practice).
const MAX_BULK: usize = 1 << 30;
/// Longest annotation line (`#TS:1700000000`): Redis reads them into a 128-byte buffer.
const MAX_ANNOTATION: usize = 1024;
const READ_CHUNK: usize = 1 << 16;

/// One piece of an AOF input, in the order it is to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// An RDB file (a multi-part base in RDB form, or a file that starts with the RDB magic):
    /// restored as RDB. `tail`: commands may follow the RDB in the same file (a single-file
    /// AOF with preamble); the caller reads them from where the RDB ends.
    Rdb { path: PathBuf, tail: bool },
    /// Commands of an AOF file from byte `start`.
    Commands { path: PathBuf, start: u64 },
}

impl Part {
    pub fn path(&self) -> &Path {
        match self {
            Part::Rdb { path, .. } | Part::Commands { path, .. } => path,
        }
    }
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// An RDB file with nothing known about a tail yet (an AOF with preamble or a plain RDB:
    /// the caller parses the RDB and then looks at what follows it).
    Rdb,
    /// An AOF: a plain file, or a multi-part directory (`manifest` is then its manifest).
    Aof {
        parts: Vec<Part>,
        manifest: Option<PathBuf>,
    },
}

fn starts_like_rdb(head: &[u8]) -> bool {
    head.starts_with(b"REDIS") || head.starts_with(b"VALKEY")
}

fn head_of(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut head = vec![0u8; 9];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    head.truncate(n);
    Ok(head)
}

/// What `path` holds: a directory (or a `*.manifest` file) is a multi-part AOF; a file is
/// judged by its first bytes: the RDB magic, or `*` / `#` (an AOF's first command or
/// annotation). Anything else is not an AOF and is left to the RDB parser's message (`None`).
pub fn layout(path: &Path) -> Result<Option<Layout>, String> {
    if path.is_dir() {
        return manifest_in(path).map(Some);
    }
    if path.extension().is_some_and(|e| e == "manifest") {
        return from_manifest(path).map(Some);
    }
    let head = head_of(path)?;
    if starts_like_rdb(&head) {
        return Ok(Some(Layout::Rdb));
    }
    if matches!(head.first(), Some(b'*' | b'#')) {
        return Ok(Some(Layout::Aof {
            parts: vec![Part::Commands {
                path: path.to_path_buf(),
                start: 0,
            }],
            manifest: None,
        }));
    }
    Ok(None)
}

/// Whether the bytes of `path` from `start` (where its RDB ends) are the command tail of an AOF
/// with an RDB preamble: the file is named as an AOF (`*.aof`, as `appendonly.aof`; Redis reads
/// a tail only from its AOF file, and ignores whatever follows an RDB file's checksum) and the
/// bytes look like AOF commands (a `*` or `#` first, as [`layout`] judges a file's start).
/// Anything else after an RDB is bytes some tool left there, not read.
pub fn preamble_tail_at(path: &Path, start: u64) -> Result<bool, String> {
    let named_aof = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("aof"));
    if !named_aof {
        return Ok(false);
    }
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut first = [0u8; 1];
    match f.read(&mut first) {
        Ok(1) => Ok(matches!(first[0], b'*' | b'#')),
        Ok(_) => Ok(false),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The one manifest in directory `dir`.
fn manifest_in(dir: &Path) -> Result<Layout, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "manifest"))
        .collect();
    found.sort();
    match found.len() {
        1 => from_manifest(&found[0]),
        0 => Err(format!(
            "{}: a directory given as input must be a multi-part AOF directory (appenddirname, Redis 7+) holding one *.manifest file; it holds none",
            dir.display()
        )),
        n => Err(format!(
            "{}: holds {n} *.manifest files; give the manifest to use instead of the directory",
            dir.display()
        )),
    }
}

/// Splits a manifest line into words as the server's `sdssplitargs` does for the names it
/// writes: plain words, or double-quoted ones with `\"`, `\\` and `\xHH` escapes.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else {
            return Some(words);
        };
        let mut w = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => w.push('\n'),
                        'r' => w.push('\r'),
                        't' => w.push('\t'),
                        'x' => {
                            let h: String = [chars.next()?, chars.next()?].iter().collect();
                            w.push(u8::from_str_radix(&h, 16).ok()? as char);
                        }
                        other => w.push(other),
                    },
                    other => w.push(other),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        words.push(w);
    }
}

/// Reads a multi-part AOF manifest: lines `file NAME seq N type b|h|i` (more key/value pairs
/// may follow; `#` starts a comment). The base (`b`) comes first, then the incremental files
/// (`i`) by sequence number; history files (`h`, left from a rewrite) are not part of the data.
pub fn from_manifest(manifest: &Path) -> Result<Layout, String> {
    let text =
        std::fs::read(manifest).map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    if text.len() > 16 << 20 {
        return Err(format!(
            "{}: {} bytes is too long for an AOF manifest",
            manifest.display(),
            text.len()
        ));
    }
    let text = String::from_utf8_lossy(&text);
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut base: Option<PathBuf> = None;
    let mut incr: Vec<(u64, PathBuf)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            format!(
                "{} line {}: {why} (expected `file NAME seq N type b|h|i`)",
                manifest.display(),
                i + 1
            )
        };
        let words = split_words(line).ok_or_else(|| bad("unbalanced quotes"))?;
        if words.len() % 2 != 0 {
            return Err(bad("an odd number of words"));
        }
        let get = |k: &str| {
            words
                .chunks(2)
                .find(|kv| kv[0] == k)
                .map(|kv| kv[1].clone())
        };
        let name = get("file").ok_or_else(|| bad("no file name"))?;
        if name.contains('/') {
            return Err(bad("a file name with a path in it"));
        }
        let seq: u64 = get("seq")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no sequence number"))?;
        match get("type").as_deref() {
            Some("b") => {
                if base.replace(dir.join(&name)).is_some() {
                    return Err(bad("a second base file"));
                }
            }
            Some("i") => incr.push((seq, dir.join(&name))),
            Some("h") => {}
            _ => return Err(bad("no type b, h or i")),
        }
    }
    incr.sort_by_key(|(s, _)| *s);
    let mut parts = Vec::new();
    for path in base.into_iter().chain(incr.into_iter().map(|(_, p)| p)) {
        if !path.is_file() {
            return Err(format!(
                "{}: lists {}, which is not there",
                manifest.display(),
                path.display()
            ));
        }
        if starts_like_rdb(&head_of(&path)?) {
            parts.push(Part::Rdb { path, tail: false });
        } else {
            parts.push(Part::Commands { path, start: 0 });
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "{}: lists no base or incremental file",
            manifest.display()
        ));
    }
    Ok(Layout::Aof {
        parts,
        manifest: Some(manifest.to_path_buf()),
    })
}

/// A reader that counts what is taken from it, so that where an RDB ends in a file can be
/// told exactly: what was read, less what the parser holds unread
/// ([`crate::rdb::RdbParser::into_parts`]).
pub struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

/// Wraps `inner`; the counter says how many bytes have been read through it.
pub fn counted<R: Read>(inner: R) -> (Counted<R>, Arc<AtomicU64>) {
    let read = Arc::new(AtomicU64::new(0));
    (
        Counted {
            inner,
            read: read.clone(),
        },
        read,
    )
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What [`CommandReader::read_next`] found.
#[derive(Debug)]
pub enum Next {
    /// One command: its exact bytes, its arguments' ranges in them, and its file offset.
    Command {
        frame: Bytes,
        args: Vec<Range<usize>>,
        offset: u64,
    },
    /// A `#TS:` annotation (unix seconds) at this offset.
    Timestamp { ts: i64, offset: u64 },
    /// The file ends inside the command (or annotation) starting at `offset`.
    Truncated { offset: u64 },
    /// The file ends after a whole command.
    End,
}

/// The commands of one AOF part, in order.
pub struct CommandReader {
    path: PathBuf,
    file: File,
    buf: BytesMut,
    /// File offset of `buf[0]`.
    pos: u64,
    /// Bytes of the file not read into `buf` yet.
    left: u64,
}

impl CommandReader {
    /// Reads `path` from byte `start`.
    pub fn open(path: &Path, start: u64) -> Result<CommandReader, String> {
        let mut file =
            File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(CommandReader {
            path: path.to_path_buf(),
            file,
            buf: BytesMut::with_capacity(READ_CHUNK),
            pos: start,
            left: len.saturating_sub(start),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File offset of the next byte not yet returned.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Reads more of the file into the buffer: at least `want` bytes in it when the file has
    /// them. Returns false at the end of the file.
    fn fill(&mut self, want: usize) -> Result<bool, String> {
        if self.left == 0 {
            return Ok(false);
        }
        let target = want.max(self.buf.len() + READ_CHUNK);
        let add = ((target - self.buf.len()) as u64).min(self.left) as usize;
        let old = self.buf.len();
        self.buf.resize(old + add, 0);
        let mut got = 0;
        while got < add {
            match self.file.read(&mut self.buf[old + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "{}: read failed at offset {}: {e}",
                        self.path.display(),
                        self.pos + (old + got) as u64
                    ))
                }
            }
        }
        self.buf.truncate(old + got);
        self.left = if got < add { 0 } else { self.left - got as u64 };
        Ok(got > 0)
    }

    /// The next command or annotation. An error names the file and the offset.
    pub fn read_next(&mut self) -> Result<Next, String> {
        loop {
            if self.buf.is_empty() && !self.fill(0)? {
                return Ok(Next::End);
            }
            let offset = self.pos;
            if self.buf[0] == b'#' {
                match self.buf.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let line = self.buf.split_to(nl + 1);
                        self.pos += line.len() as u64;
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end();
                        if let Some(ts) = text.strip_prefix("#TS:") {
                            let ts = ts.parse::<i64>().map_err(|_| {
                                format!(
                                    "{}: the annotation at offset {offset} is not #TS:<unix seconds>: {}",
                                    self.path.display(),
                                    crate::text::quote_bytes(text.as_bytes())
                                )
                            })?;
                            return Ok(Next::Timestamp { ts, offset });
                        }
                        // Other annotations are skipped, as the server does.
                        continue;
                    }
                    None if self.buf.len() > MAX_ANNOTATION => {
                        return Err(format!(
                            "{}: the annotation at offset {offset} has no end of line in {MAX_ANNOTATION} bytes: not an AOF from here",
                            self.path.display()
                        ));
                    }
                    None => {
                        if !self.fill(0)? {
                            return Ok(Next::Truncated { offset });
                        }
                        continue;
                    }
                }
            }
            let mut need = 0;
            match crate::command::parse_command_needing(&self.buf, MAX_ARGS, MAX_BULK, &mut need) {
                Ok(Some(p)) => {
                    let frame = self.buf.split_to(p.len).freeze();
                    self.pos += p.len as u64;
                    if p.args.is_empty() {
                        // `*0`: the server skips it too.
                        continue;
                    }
                    return Ok(Next::Command {
                        frame,
                        args: p.args,
                        offset,
                    });
                }
                Ok(None) => {
                    // A declared length past what the file still holds is a torn end, found
                    // before any buffer is sized by it.
                    if need as u64 > self.buf.len() as u64 + self.left {
                        return Ok(Next::Truncated { offset });
                    }
                    if !self.fill(need)? {
                        return Ok(Next::Truncated { offset });
                    }
                }
                Err(e) => {
                    let e = e.strip_prefix("command stream: ").unwrap_or(&e).to_string();
                    return Err(format!(
                        "{}: not a valid AOF command at offset {offset}: {e} (redis-check-aof {} reports the same damage; only a torn last command can be cut off)",
                        self.path.display(),
                        self.path.display()
                    ));
                }
            }
        }
    }
}

/// One command of an AOF input, as [`Replay`] hands it over.
#[derive(Debug)]
pub struct Cmd {
    /// The part it is in.
    pub path: PathBuf,
    pub frame: Bytes,
    pub args: Vec<Range<usize>>,
    /// Its offset in `path`.
    pub offset: u64,
    /// The offset right after it, counted across the parts in order (each part starting past
    /// the previous one's end), so that it only grows ([`Replay::locate`] turns it back into a
    /// part and an offset in it).
    pub end: u64,
    /// The database it runs in: what the last `SELECT` of its part chose (a `SELECT`'s own is
    /// the one it chooses). Each part starts in database 0, as the server's loader starts
    /// each file with a new client.
    pub db: u64,
    /// The last `#TS:` annotation before it (unix seconds), if any: the second it was written
    /// in. The server writes one only when the second changes, so an incremental file's first
    /// commands may carry the time of the file before it.
    pub ts: Option<i64>,
}

/// The commands of an AOF input's parts in order, with what the input says about where to
/// stop: the first `#TS:` after `until`, a torn last command (an error, or the end under
/// [`Truncated::Skip`]), a transaction the input ends inside (torn too: the server reverts it).
/// Damage anywhere else is an error with its file and offset.
pub struct Replay {
    parts: Vec<(PathBuf, u64)>,
    next_part: usize,
    reader: Option<CommandReader>,
    until: Option<i64>,
    truncated: Truncated,
    base: u64,
    /// End of the last command of the current part.
    size: u64,
    /// Where each part opened so far starts in the offsets counted across parts (`Cmd::end`).
    bases: Vec<(u64, PathBuf)>,
    db: u64,
    ts: Option<i64>,
    multi: Option<(PathBuf, u64)>,
    /// Commands handed over, and `#TS:` annotations seen.
    pub commands: u64,
    pub timestamps: u64,
    notes: Vec<String>,
    done: bool,
}

impl Replay {
    pub fn new(parts: Vec<(PathBuf, u64)>, until: Option<i64>, truncated: Truncated) -> Replay {
        Replay {
            parts,
            next_part: 0,
            reader: None,
            until,
            truncated,
            base: 0,
            size: 0,
            bases: Vec::new(),
            db: 0,
            ts: None,
            multi: None,
            commands: 0,
            timestamps: 0,
            notes: Vec::new(),
            done: false,
        }
    }

    /// The next command, or `None` at the end of the input (or where it stops).
    pub fn next_command(&mut self) -> Result<Option<Cmd>, String> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(r) = self.reader.as_mut() else {
                let Some((path, start)) = self.parts.get(self.next_part).cloned() else {
                    self.done = true;
                    return Ok(None);
                };
                self.next_part += 1;
                self.reader = Some(CommandReader::open(&path, start)?);
                self.size = start;
                self.bases.push((self.base, path));
                self.db = 0;
                continue;
            };
            match r.read_next()? {
                Next::Command {
                    frame,
                    args,
                    offset,
                } => {
                    let name = &frame[args[0].clone()];
                    if name.eq_ignore_ascii_case(b"MULTI") {
                        self.multi = Some((r.path().to_path_buf(), offset));
                    } else if name.eq_ignore_ascii_case(b"EXEC")
                        || name.eq_ignore_ascii_case(b"DISCARD")
                    {
                        self.multi = None;
                    } else if name.eq_ignore_ascii_case(b"SELECT") {
                        self.db = args
                            .get(1)
                            .and_then(|a| std::str::from_utf8(&frame[a.clone()]).ok())
                            .and_then(|d| d.parse().ok())
                            .ok_or_else(|| {
                                format!(
                                    "{}: the SELECT at offset {offset} has no database number",
                                    r.path().display()
                                )
                            })?;
                    }
                    self.size = offset + frame.len() as u64;
                    self.commands += 1;
                    return Ok(Some(Cmd {
                        path: r.path().to_path_buf(),
                        end: self.base + self.size,
                        frame,
                        args,
                        offset,
                        db: self.db,
                        ts: self.ts,
                    }));
                }
                Next::Timestamp { ts, offset } => {
                    self.timestamps += 1;
                    self.ts = Some(ts);
                    if let Some(until) = self.until.filter(|&u| ts > u) {
                        self.notes.push(format!(
                            "{}: stopped at offset {offset}, the first #TS: after --until {} ({ts} = {}); the commands from there on were not used",
                            r.path().display(),
                            show_time(until),
                            show_time(ts)
                        ));
                        self.done = true;
                        self.unfinished_multi(true)?;
                        return Ok(None);
                    }
                }
                Next::Truncated { offset } => {
                    let path = r.path().to_path_buf();
                    let at = self.multi.as_ref().map_or(offset, |(_, o)| *o);
                    if self.next_part < self.parts.len() {
                        return Err(format!(
                            "{}: ends inside the command at offset {at}, and it is not the last file of the AOF: damaged",
                            path.display()
                        ));
                    }
                    if self.truncated == Truncated::Stop {
                        return Err(truncated_message(&path, at));
                    }
                    self.notes.push(format!(
                        "{}: skipped the truncated command at offset {at} (--aof-truncated skip); everything before it was used",
                        path.display()
                    ));
                    self.multi = None;
                    self.done = true;
                    return Ok(None);
                }
                Next::End => {
                    self.reader = None;
                    self.base += self.size + 1;
                    if self.next_part >= self.parts.len() {
                        self.done = true;
                        self.unfinished_multi(false)?;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The input ends (or stops) inside a transaction: what a server loading it does is revert
    /// it, so it is a torn end.
    fn unfinished_multi(&mut self, stopped: bool) -> Result<(), String> {
        let Some((path, at)) = self.multi.take() else {
            return Ok(());
        };
        if !stopped && self.truncated == Truncated::Stop {
            return Err(truncated_message(&path, at));
        }
        self.notes.push(format!(
            "{}: the transaction (MULTI) at offset {at} is not complete; it was not used",
            path.display()
        ));
        Ok(())
    }

    /// The part and the offset in it of an offset counted across the parts ([`Cmd::end`]).
    pub fn locate(&self, end: u64) -> Option<(&Path, u64)> {
        self.bases
            .iter()
            .rev()
            .find(|(base, _)| *base <= end)
            .map(|(base, path)| (path.as_path(), end - base))
    }

    /// `msg` with each `offset N` in it (the stream applier's messages count offsets across
    /// the parts: [`Cmd::end`]) written as the part and the offset in it: `offset M of FILE`.
    pub fn name_offsets(&self, msg: &str) -> String {
        if self.bases.is_empty() {
            return msg.to_string();
        }
        let mut out = String::with_capacity(msg.len() + 64);
        let mut rest = msg;
        while let Some(i) = rest.find("offset ") {
            let (head, tail) = rest.split_at(i + "offset ".len());
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let located = tail[..digits]
                .parse::<u64>()
                .ok()
                .and_then(|n| self.locate(n));
            out.push_str(head);
            match located {
                Some((path, at)) => out.push_str(&format!("{at} of {}", path.display())),
                None => out.push_str(&tail[..digits]),
            }
            rest = &tail[digits..];
        }
        out.push_str(rest);
        out
    }

    /// What to tell the user once the input is over: where `--until` stopped, what was
    /// skipped.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// The line for a torn last command when it is not skipped.
pub fn truncated_message(path: &Path, offset: u64) -> String {
    format!(
        "{}: truncated command at offset {offset} (a crash mid-write?); redis-check-aof --fix {}, or --aof-truncated skip",
        path.display(),
        path.display()
    )
}

/// What `--aof-truncated` says to do with a torn last command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncated {
    /// Stop with an error naming the offset.
    #[default]
    Stop,
    /// Apply everything before it and say so.
    Skip,
}

impl Truncated {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Truncated::Stop),
            "skip" => Ok(Truncated::Skip),
            _ => Err(format!(
                "unknown --aof-truncated {s:?}: expected stop or skip"
            )),
        }
    }
}

/// A point in time for `--until`: unix seconds, or RFC 3339 (`2026-12-03T06:00:00Z`,
/// `2026-12-03 07:00:00+01:00`; fractions of a second are dropped: `#TS:` has whole seconds).
pub fn parse_until(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "--until {s:?}: expected unix seconds (1764741600) or RFC 3339 (2026-12-03T06:00:00Z)"
        )
    };
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |r: Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i64>().map_err(|_| bad())
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return Err(bad());
    }
    if b[16] != b':' {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let o = oh * 3600 + om * 60;
            if &rest[..1] == "-" {
                -o
            } else {
                o
            }
        }
        _ => return Err(bad()),
    };
    Ok(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Unix seconds as RFC 3339 UTC, for messages.
pub fn show_time(ts: i64) -> String {
    let days = ts.div_euclid(86400);
    let secs = ts.rem_euclid(86400);
    // Inverse of days_from_civil.
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn until_accepts_seconds_and_rfc3339() {
        assert_eq!(parse_until("1764741600").unwrap(), 1764741600);
        assert_eq!(parse_until("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_until("2026-12-03T06:00:00Z").unwrap(),
            parse_until("2026-12-03 07:00:00.5+01:00").unwrap()
        );
        let t = parse_until("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(show_time(t), "2024-02-29T23:59:59Z");
        assert!(parse_until("yesterday").is_err());
        assert!(parse_until("2026-13-03T06:00:00Z").is_err());
        assert!(parse_until("2026-12-03T06:00:00").is_err());
    }

    #[test]
    fn manifest_words_and_quotes() {
        assert_eq!(
            split_words(r#"file "a b\x41.aof" seq 2 type i"#).unwrap(),
            vec!["file", "a bA.aof", "seq", "2", "type", "i"]
        );
        assert!(split_words(r#"file "open"#).is_none());
    }

    fn reader_over(bytes: &[u8]) -> (tempfile::NamedTempFile, CommandReader) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let r = CommandReader::open(f.path(), 0).unwrap();
        (f, r)
    }

    #[test]
    fn commands_timestamps_and_a_torn_end() {
        let (_f, mut r) =
            reader_over(b"#TS:17\r\n*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nDEL\r\n$9999\r\nab");
        assert!(matches!(
            r.read_next().unwrap(),
            Next::Timestamp { ts: 17, offset: 0 }
        ));
        assert!(matches!(
            r.read_next().unwrap(),
            Next::Command { offset: 8, .. }
        ));
        assert!(matches!(
            r.read_next().unwrap(),
            Next::Truncated { offset: 23 }
        ));
        let (_f, mut r) = reader_over(b"*1\r\n$4\r\nPING\r\n");
        assert!(matches!(r.read_next().unwrap(), Next::Command { .. }));
        assert!(matches!(r.read_next().unwrap(), Next::End));
    }

    #[test]
    fn parts_start_in_db_0_and_offsets_name_their_part() {
        let (a, _) = reader_over(b"#TS:5\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n");
        let (b, _) = reader_over(b"*1\r\n$4\r\nPING\r\n");
        let parts = vec![(a.path().to_path_buf(), 0), (b.path().to_path_buf(), 0)];
        let mut r = Replay::new(parts, None, Truncated::Stop);
        let select = r.next_command().unwrap().unwrap();
        assert_eq!((select.db, select.ts), (3, Some(5)));
        let ping = r.next_command().unwrap().unwrap();
        assert_eq!((ping.db, ping.offset), (3, 30));
        let second = r.next_command().unwrap().unwrap();
        assert_eq!((second.db, second.ts, second.offset), (0, Some(5), 0));
        assert!(r.next_command().unwrap().is_none());
        let msg = r.name_offsets(&format!(
            "PING at source offset {} and offset {}",
            ping.end, second.end
        ));
        assert_eq!(
            msg,
            format!(
                "PING at source offset 44 of {} and offset 14 of {}",
                a.path().display(),
                b.path().display()
            )
        );
    }

    #[test]
    fn damage_in_the_middle_is_an_error_with_its_offset() {
        let (_f, mut r) = reader_over(b"*1\r\n$4\r\nPING\r\nxx*1\r\n$4\r\nPING\r\n");
        assert!(matches!(r.read_next().unwrap(), Next::Command { .. }));
        let e = r.read_next().unwrap_err();
        assert!(e.contains("at offset 14"), "{e}");
    }
}
