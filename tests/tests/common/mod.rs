//! Helpers shared by the corpus and mutation tests: finding the corpus and the `shake-decode`
//! binary, reading `MANIFEST.json`, running the decoder with a time limit, and a small JSON
//! reader.
//!
//! Why a JSON reader of our own instead of `serde_json::Value`: the tests crate's serde_json is
//! built without `preserve_order`, so objects would come back sorted, and some facts are about
//! order (the first field name of each stream entry, the order of a zset). It also keeps every
//! number as its source text, so scores are parsed by `str::parse::<f64>` (correctly rounded)
//! on both sides and compared bit for bit.

#![allow(dead_code)] // each test binary uses a different subset

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

// ---------------------------------------------------------------------------------------------
// Locations

/// The corpus folder (`<shared>/rdb-corpus`, located by the rig: `SHAKE_SHARED`, else `shared`
/// beside the repository), or `None` after printing a `SKIP:` line when it is not on this
/// machine (the corpus lives outside the repository, so a checkout alone does not have it).
pub fn corpus() -> Option<PathBuf> {
    let dir = shake_tests::require_corpus()?;
    if !dir.join("MANIFEST.json").is_file() {
        eprintln!("SKIP: {} has no MANIFEST.json", dir.display());
        return None;
    }
    Some(dir)
}

/// Path of the `shake-decode` binary of this workspace's target directory.
///
/// Cargo only sets `CARGO_BIN_EXE_<name>` for binaries of the package under test, and
/// `shake-decode` lives in another package, so the binary is found beside the test executable
/// (`target/debug/deps/corpus-*` -> `target/debug/shake-decode`), which is where
/// `cargo test --workspace` puts it. `cargo test -p shake-tests` alone does not build it.
pub fn decoder_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_shake-decode") {
        return PathBuf::from(p);
    }
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("shake-decode{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "shake-decode binary not found at {}: run `cargo build -p shake-decode` first \
         (or `cargo test --workspace`, which builds every binary)",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// Running the decoder

pub enum Input<'a> {
    /// Pass the path as the input argument.
    File(&'a Path),
    /// Pass `-` and write these bytes to the decoder's stdin.
    Stdin(&'a [u8]),
}

pub struct Run {
    /// Exit code, `None` when a signal ended the process.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Run {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// How the process ended: "exit N", "killed by signal N" or "TIMED OUT after ...".
    pub fn status(&self) -> String {
        if self.timed_out {
            format!("TIMED OUT after {:?}", self.elapsed)
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            format!("exit {}", self.code.unwrap_or(-1))
        }
    }

    /// One-line summary for failure messages.
    pub fn describe(&self) -> String {
        let status = if self.timed_out {
            format!("TIMED OUT after {:?}", self.elapsed)
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            format!("exit {}", self.code.unwrap_or(-1))
        };
        format!(
            "{status}, stderr: {}",
            clip(self.stderr_text().trim_end(), 400)
        )
    }

    /// The checks every run must pass whatever the input: exit 0 or 1 (never a panic's 101 or
    /// a signal such as SIGABRT from a failed huge allocation), no panic message or backtrace
    /// hint, and on failure exactly one non-empty line on stderr. Returns the problems found.
    pub fn clean_exit_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let err = self.stderr_text();
        if self.timed_out {
            p.push(format!("hang: no exit within {:?}", self.elapsed));
        } else if let Some(s) = self.signal {
            p.push(format!(
                "killed by signal {s} (an abort from a huge allocation is SIGABRT=6)"
            ));
        } else if !matches!(self.code, Some(0) | Some(1)) {
            p.push(format!("exit code {:?}, expected 0 or 1", self.code));
        }
        if err.contains("panicked")
            || err.contains("RUST_BACKTRACE")
            || err.contains("stack backtrace")
        {
            p.push(format!("panic text on stderr: {}", clip(&err, 600)));
        }
        if self.code == Some(1) {
            let line = err.strip_suffix('\n').unwrap_or(&err);
            if line.trim().is_empty() {
                p.push(
                    "exit 1 with an empty stderr: the error must be one line a person understands"
                        .into(),
                );
            } else if !line.contains("byte offset") {
                // `shake-decode --help`: "one line on stderr names the byte offset and key".
                p.push(format!(
                    "exit 1 but the error does not name the byte offset: {}",
                    clip(&err, 400)
                ));
            } else if line.contains('\n') {
                p.push(format!(
                    "exit 1 but stderr has {} lines, expected one: {}",
                    line.lines().count(),
                    clip(&err, 600)
                ));
            }
        }
        p
    }
}

/// Runs `shake-decode ARGS INPUT` (INPUT is the path, or `-` with stdin), with
/// `RUST_BACKTRACE` removed so panics are not dressed up, and kills it after `timeout`.
pub fn run_decode(args: &[&str], input: Input<'_>, timeout: Duration) -> Run {
    use std::os::unix::process::ExitStatusExt as _;
    let mut cmd = assert_cmd::Command::new(decoder_path());
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd.args(args);
    match input {
        Input::File(p) => {
            cmd.arg(p);
        }
        Input::Stdin(bytes) => {
            cmd.arg("-");
            cmd.write_stdin(bytes.to_vec());
        }
    }
    cmd.timeout(timeout);
    let start = Instant::now();
    let out = cmd.output().expect("spawn shake-decode");
    let elapsed = start.elapsed();
    let signal = out.status.signal();
    Run {
        code: out.status.code(),
        timed_out: signal == Some(9) && elapsed >= timeout,
        signal,
        stdout: out.stdout,
        stderr: out.stderr,
        elapsed,
    }
}

/// Splits stdout into JSON values, one per non-empty line.
pub fn parse_lines(stdout: &[u8]) -> Result<Vec<Json>, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        out.push(
            parse_json(line).map_err(|e| format!("line {}: {e}: {}", i + 1, clip(line, 200)))?,
        );
    }
    Ok(out)
}

/// True when some stdout line is the `{"meta":"end",...}` record, which claims the whole file
/// was read and verified.
pub fn claims_end(stdout: &[u8]) -> bool {
    String::from_utf8_lossy(stdout).lines().any(|l| {
        parse_json(l)
            .ok()
            .is_some_and(|j| j.get("meta").and_then(Json::as_str) == Some("end"))
    })
}

// ---------------------------------------------------------------------------------------------
// Manifest

pub struct Entry {
    pub file: String,
    pub invalid: bool,
    pub invalid_reason: Option<String>,
    pub rdb_version: Option<i64>,
    pub magic: Option<String>,
    pub size: u64,
    pub expected: Option<Json>,
    pub scan: Option<Json>,
}

impl Entry {
    pub fn path(&self, corpus: &Path) -> PathBuf {
        corpus.join(&self.file)
    }

    pub fn role(&self) -> Role {
        // The three HDT3213 `*_with_hfe.aof` files are that project's expected RESP output,
        // not RDB input; the manifest marks them with a null rdb_version.
        if self.rdb_version.is_none() {
            return Role::NotInput;
        }
        // An AOF with an RDB preamble (the corpus's aof/ folder) decodes to key records and
        // then command records: aof.rs's aof_restore_corpus_files decodes and restores every
        // corpus AOF against a server's own load of it, the RDB tests here take RDB files.
        if self.file.starts_with("aof/") {
            return Role::NotInput;
        }
        if self.invalid {
            return Role::MustFail(
                self.invalid_reason
                    .clone()
                    .unwrap_or_else(|| "flagged invalid".into()),
            );
        }
        match self.file.as_str() {
            // Not flagged, but the README says loading must fail without the module's parser:
            // type 6 (MODULE_PRE_GA) values have no self-describing framing to skip over.
            "leonchen83__redis-replicator/module.rdb" => Role::MustFail(
                "pre-GA module type 6 (hellotype) cannot be skipped without the module".into(),
            ),
            // HDT3213__rdb/zipmap_big_len.rdb stays Valid on purpose: its zipmap count byte is
            // 0xFF, which zipmap.c reads as ">= ZIPMAP_BIGLEN: count not stored, walk the
            // entries"; the entries then parse exactly up to the 0xFF end marker at the
            // declared string length. The bytes are unambiguous (2 fields); only Redis's
            // integrity check (which wants exactly 254) refuses it.
            _ => Role::Valid,
        }
    }

    /// Extra decoder arguments the file needs: versions newer than the decoder knows (REDIS
    /// 1-15, VALKEY 80-81) are read only with `--relaxed-version`, as Valkey loads them only
    /// with `rdb-version-check relaxed`.
    pub fn decode_args(&self) -> &'static [&'static str] {
        if self.needs_relaxed_version() {
            &["--relaxed-version"]
        } else {
            &[]
        }
    }

    pub fn needs_relaxed_version(&self) -> bool {
        let v = self.rdb_version.unwrap_or(0);
        match self.magic.as_deref() {
            Some("VALKEY") => v > 81,
            _ => v > 15,
        }
    }

    /// Key count the file holds: `expected.keys_total`, else the preamble's
    /// `keys_in_rdb_part`, else the independent scan's `keys`.
    pub fn key_count(&self) -> Option<usize> {
        let e = self.expected.as_ref();
        e.and_then(|e| e.get("keys_total"))
            .or_else(|| e.and_then(|e| e.get("keys_in_rdb_part")))
            .or_else(|| self.scan.as_ref().and_then(|s| s.get("keys")))
            .and_then(Json::as_i128)
            .map(|n| n as usize)
    }

    /// Scan's checksum status: "valid", "zero", "none", "MISMATCH", or None.
    pub fn scan_checksum(&self) -> Option<&str> {
        let s = self.scan.as_ref()?.get("checksum")?.as_str()?;
        Some(s.split_whitespace().next().unwrap_or(s))
    }

    /// Bytes after EOF + checksum (garbage or an AOF tail) according to the scan.
    pub fn trailing_bytes(&self) -> usize {
        self.scan
            .as_ref()
            .and_then(|s| s.get("bytes_after_eof_and_checksum"))
            .and_then(Json::as_i128)
            .unwrap_or(0) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Must decode with exit 0 and match its facts.
    Valid,
    /// Must fail cleanly (exit 1, one line on stderr, no end record).
    MustFail(String),
    /// Not RDB input; skipped.
    NotInput,
}

pub fn load_manifest(corpus: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(corpus.join("MANIFEST.json")).expect("read MANIFEST.json");
    let json = parse_json(&text).expect("MANIFEST.json is valid JSON");
    let arr = json.as_arr().expect("MANIFEST.json is an array");
    arr.iter()
        .map(|e| Entry {
            file: e
                .get("file")
                .and_then(Json::as_str)
                .expect("file")
                .to_string(),
            invalid: e.get("invalid").and_then(Json::as_bool).unwrap_or(false),
            invalid_reason: e
                .get("invalid_reason")
                .and_then(Json::as_str)
                .map(str::to_string),
            rdb_version: e
                .get("rdb_version")
                .and_then(Json::as_i128)
                .map(|v| v as i64),
            magic: e.get("magic").and_then(Json::as_str).map(str::to_string),
            size: e.get("size").and_then(Json::as_i128).unwrap_or(0) as u64,
            expected: e.get("expected").filter(|j| !j.is_null()).cloned(),
            scan: e.get("scan").filter(|j| !j.is_null()).cloned(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Byte strings

/// The bytes a JSON byte string stands for: a plain string (its UTF-8), `{"hex": ...}` (the
/// manifest's form for binary) or `{"base64": ...}` (shake-decode's form for binary).
pub fn bytes_of(j: &Json) -> Option<Vec<u8>> {
    match j {
        Json::Str(s) => Some(s.as_bytes().to_vec()),
        Json::Obj(m) if m.len() == 1 => match (m[0].0.as_str(), &m[0].1) {
            ("hex", Json::Str(h)) => hex_decode(h),
            ("base64", Json::Str(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            _ => None,
        },
        _ => None,
    }
}

pub fn hex_decode(h: &str) -> Option<Vec<u8>> {
    if h.len() & 1 == 1 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Readable form of a byte string for messages: quoted text when UTF-8, else hex; clipped.
pub fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => clip(&format!("{s:?}"), 120),
        Err(_) => {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            clip(&format!("hex:{h}"), 120)
        }
    }
}

pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &s[..end], s.len())
}

// ---------------------------------------------------------------------------------------------
// A small JSON reader that keeps object order and number text

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's source text, so nothing is rounded before the test decides how to read it.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    /// Members in source order (duplicates kept).
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_arr(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_obj(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(m) => Some(m),
            _ => None,
        }
    }
    /// An integer number (no fraction or exponent).
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Json::Num(t) => t.parse().ok(),
            _ => None,
        }
    }
    /// A number, or one of the strings "inf", "-inf", "nan" (how both the manifest and
    /// shake-decode write the special doubles).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(t) => t.parse().ok(),
            Json::Str(s) => match s.as_str() {
                "inf" | "+inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" => Some(f64::NAN),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Json {
    /// Compact JSON text (used in messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(t) => f.write_str(t),
            Json::Str(s) => write!(f, "{s:?}"),
            Json::Arr(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Obj(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k:?}:{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

pub fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at byte {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("invalid JSON at byte {}: {what}", self.i))
    }
    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err(&format!("expected {lit}"))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'n') => self.eat("null").map(|_| Json::Null),
            Some(b't') => self.eat("true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat("false").map(|_| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.nest()?;
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        a.push(self.value()?);
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return self.err("expected , or ]"),
                        }
                    }
                }
                self.depth -= 1;
                Ok(Json::Arr(a))
            }
            Some(b'{') => {
                self.nest()?;
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        if self.s.get(self.i) != Some(&b'"') {
                            return self.err("expected a member name");
                        }
                        let k = self.string()?;
                        self.ws();
                        self.eat(":")?;
                        self.ws();
                        m.push((k, self.value()?));
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return self.err("expected , or }"),
                        }
                    }
                }
                self.depth -= 1;
                Ok(Json::Obj(m))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }
    fn nest(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > 256 {
            return self.err("nested too deeply");
        }
        Ok(())
    }
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let d = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > d
        };
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        if !digits(self) {
            return self.err("digits expected");
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return self.err("fraction digits expected");
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return self.err("exponent digits expected");
            }
        }
        Ok(Json::Num(
            String::from_utf8(self.s[start..self.i].to_vec()).unwrap(),
        ))
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match h.and_then(|h| u32::from_str_radix(h, 16).ok()) {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let run = self.i;
            while self.i < self.s.len() && !matches!(self.s[self.i], b'"' | b'\\') {
                if self.s[self.i] < 0x20 {
                    return self.err("control character in string");
                }
                self.i += 1;
            }
            out.extend_from_slice(&self.s[run..self.i]);
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    // The input is a &str and escapes produce whole chars, so this holds.
                    return Ok(String::from_utf8(out).expect("utf-8"));
                }
                _ => {
                    self.i += 1;
                    let c = match self.s.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return self.err("lone high surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("bad low surrogate");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return self.err("lone low surrogate");
                            } else {
                                hi
                            };
                            let ch = char::from_u32(cp).expect("valid scalar");
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return self.err("bad escape"),
                    };
                    self.i += 1;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RESP

/// Parses a stream of RESP arrays of bulk strings (what `redis-cli --pipe` reads).
pub fn parse_resp_commands(mut s: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, String> {
    fn line<'a>(s: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let pos = s
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("missing CRLF")?;
        let l = &s[..pos];
        *s = &s[pos + 2..];
        Ok(l)
    }
    fn num(l: &[u8]) -> Result<usize, String> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad length {}", show(l)))
    }
    let mut cmds = Vec::new();
    while !s.is_empty() {
        let at = cmds.len();
        let head = line(&mut s)?;
        if head.first() != Some(&b'*') {
            return Err(format!(
                "command {at}: expected '*', got {}",
                show(&head[..head.len().min(40)])
            ));
        }
        let n = num(&head[1..])?;
        let mut argv = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let h = line(&mut s)?;
            if h.first() != Some(&b'$') {
                return Err(format!(
                    "command {at}: expected '$', got {}",
                    show(&h[..h.len().min(40)])
                ));
            }
            let len = num(&h[1..])?;
            if s.len() < len + 2 || &s[len..len + 2] != b"\r\n" {
                return Err(format!(
                    "command {at}: bulk string of {len} bytes not followed by CRLF"
                ));
            }
            argv.push(s[..len].to_vec());
            s = &s[len + 2..];
        }
        if argv.is_empty() {
            return Err(format!("command {at} is empty"));
        }
        cmds.push(argv);
    }
    Ok(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reader_keeps_order_and_text() {
        let j =
            parse_json(r#"{"b":1,"a":[2.5e3,-0.0,"x\u00e9\ud83d\ude00\n"],"c":{"hex":"ff00"}}"#)
                .unwrap();
        let m = j.as_obj().unwrap();
        assert_eq!(m[0].0, "b");
        assert_eq!(m[1].1.as_arr().unwrap()[0], Json::Num("2.5e3".into()));
        assert!(m[1].1.as_arr().unwrap()[1]
            .as_f64()
            .unwrap()
            .is_sign_negative());
        assert_eq!(
            m[1].1.as_arr().unwrap()[2].as_str().unwrap(),
            "x\u{e9}\u{1F600}\n"
        );
        assert_eq!(bytes_of(&m[2].1).unwrap(), vec![0xff, 0]);
        assert!(parse_json("[1,]").is_err());
        assert!(parse_json("{\"a\":1} x").is_err());
    }
}
