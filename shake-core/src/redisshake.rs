//! `--config shake.toml`: a RedisShake v4 configuration file, read unchanged, turned into the
//! tool and the flags that do the same thing here.
//!
//! This module owns the v4 format: `${VAR}` substitution before parsing (as RedisShake does with
//! envsubst), case-insensitive keys (as viper reads them), which reader section picks which tool
//! (`[sync_reader]` → shake-sync, `[scan_reader]` → shake-rump, `[rdb_reader]` and `[aof_reader]` →
//! shake-restore), each key's flag, and the reason for every key that has no flag (reported
//! once). A key whose meaning cannot be kept (it would copy other data than RedisShake does) is
//! an error, not a note. The binaries call [`front_door`]: flags on the command line (or their
//! environment variables) win over the file, and a file for another tool runs that tool (the
//! sibling binary next to the running one). `docs/migrating-from-redisshake.md` is the
//! key-by-key guide.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// The tool a v4 file describes (by its reader section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Sync,
    Rump,
    Restore,
}

impl Tool {
    pub fn binary(self) -> &'static str {
        match self {
            Tool::Sync => "shake-sync",
            Tool::Rump => "shake-rump",
            Tool::Restore => "shake-restore",
        }
    }
}

/// One flag the file gives: `--flag value` (or `--flag` alone), or a positional argument when
/// `flag` is empty. `also` names the flags whose presence on the command line drops it too (the
/// opposite switch: `--no-target-cluster` against the file's `--target-cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    pub flag: &'static str,
    pub value: Option<String>,
    pub also: &'static [&'static str],
}

/// What a v4 file becomes: the tool, its flags, and one note per key that has no effect here.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tool: Tool,
    pub args: Vec<FileArg>,
    pub notes: Vec<String>,
}

/// `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}` and `$$` (a literal `$`), as
/// RedisShake's envsubst reads them. An unset variable without a default is an error naming it
/// and its line (RedisShake would put an empty string there silently). A `$` not followed by a
/// name or `{` stays as it is.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut lit = 0;
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let is_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        if next == Some(b'$') {
            out.push_str(&text[lit..i + 1]);
            i += 2;
            lit = i;
            continue;
        }
        let (name, default, end) = if next == Some(b'{') {
            let close = text[i..]
                .find('}')
                .map(|p| i + p)
                .ok_or_else(|| format!("line {}: ${{ without a closing }}", line_of(i)))?;
            let inner = &text[i + 2..close];
            let name_len = inner.bytes().take_while(|&c| is_name(c)).count();
            let (name, rest) = inner.split_at(name_len);
            if name.is_empty() || !is_start(name.as_bytes()[0]) {
                return Err(format!(
                    "line {}: ${{{inner}}} is not a variable name",
                    line_of(i)
                ));
            }
            let default = if rest.is_empty() {
                None
            } else if let Some(d) = rest.strip_prefix(":-") {
                Some((d, true))
            } else if let Some(d) = rest.strip_prefix('-') {
                Some((d, false))
            } else {
                return Err(format!(
                    "line {}: ${{{inner}}}: only ${{VAR}}, ${{VAR:-default}} and ${{VAR-default}} are understood",
                    line_of(i)
                ));
            };
            (name, default, close + 1)
        } else if next.is_some_and(is_start) {
            let len = b[i + 1..].iter().take_while(|&&c| is_name(c)).count();
            (&text[i + 1..i + 1 + len], None, i + 1 + len)
        } else {
            i += 1;
            continue;
        };
        out.push_str(&text[lit..i]);
        let value = match (env(name), default) {
            (Some(v), Some((d, true))) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some((d, _))) => d.to_string(),
            (None, None) => {
                return Err(format!(
                    "line {}: environment variable {name} is not set (export it, or write ${{{name}:-default}})",
                    line_of(i)
                ))
            }
        };
        out.push_str(&value);
        i = end;
        lit = i;
    }
    out.push_str(&text[lit..]);
    Ok(out)
}

/// Keys lower-cased at every level (viper's reading). Two keys that differ only by case are an
/// error naming both.
fn lowercase(t: &toml::Table, at: &str) -> Result<toml::Table, String> {
    let mut out = toml::Table::new();
    for (k, v) in t {
        let lk = k.to_ascii_lowercase();
        let path = if at.is_empty() {
            lk.clone()
        } else {
            format!("{at}.{lk}")
        };
        let v = match v {
            toml::Value::Table(inner) => toml::Value::Table(lowercase(inner, &path)?),
            other => other.clone(),
        };
        if out.insert(lk, v).is_some() {
            return Err(format!("{path} is given twice (keys are case-insensitive)"));
        }
    }
    Ok(out)
}

/// The v4 sections that name a reader, in the order RedisShake looks for them.
const READERS: [&str; 4] = ["sync_reader", "scan_reader", "rdb_reader", "aof_reader"];

/// Whether a parsed file is in the v4 layout (a `*_reader` or `*_writer` section) rather than
/// v3's `type`/`[source]`/`[target]`.
pub fn is_v4(doc: &toml::Table) -> bool {
    doc.keys().any(|k| {
        let k = k.to_ascii_lowercase();
        k.ends_with("_reader") || k.ends_with("_writer")
    })
}

/// Reads, substitutes and parses a file. `Ok(None)`: not a v4 file (a v3 one, say).
pub fn load(path: &Path) -> Result<Option<Plan>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = substitute(&text, &|n| std::env::var(n).ok())?;
    let doc: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    if !is_v4(&doc) {
        return Ok(None);
    }
    translate(&lowercase(&doc, "")?).map(Some)
}

/// Typed reads of one section, weakly typed as viper is ("true", "5" in quotes are accepted).
struct Section<'a> {
    name: &'a str,
    t: &'a toml::Table,
}

impl Section<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.name)
    }
    fn str(&self, k: &str) -> Result<Option<String>, String> {
        match self.t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("{} = {other}: expected a string", self.key(k))),
        }
    }
    fn bool(&self, k: &str) -> Result<bool, String> {
        match self.t.get(k) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(toml::Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(true),
            Some(toml::Value::String(s))
                if s.eq_ignore_ascii_case("false") || s == "0" || s.is_empty() =>
            {
                Ok(false)
            }
            Some(other) => Err(format!("{} = {other}: expected true or false", self.key(k))),
        }
    }
    fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.t.get(k) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n)),
            Some(toml::Value::String(s)) => s
                .trim()
                .replace('_', "")
                .parse()
                .map(Some)
                .map_err(|_| format!("{} = {s:?}: expected a number", self.key(k))),
            Some(other) => Err(format!("{} = {other}: expected a number", self.key(k))),
        }
    }
    fn strs(&self, k: &str) -> Result<Vec<String>, String> {
        match self.t.get(k) {
            None => Ok(vec![]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{}: {v} is not a string", self.key(k)))
                })
                .collect(),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(vec![]),
            Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
            Some(other) => Err(format!("{} = {other}: expected a list", self.key(k))),
        }
    }
    fn ints(&self, k: &str) -> Result<Vec<u64>, String> {
        match self.t.get(k) {
            None => Ok(vec![]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_integer()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| format!("{}: {v} is not a database number", self.key(k)))
                })
                .collect(),
            Some(other) => Err(format!(
                "{} = {other}: expected a list of numbers",
                self.key(k)
            )),
        }
    }
    fn url(&self) -> Result<String, String> {
        let auth = |user: String, password: String| match (user.is_empty(), password.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!(":{}@", crate::net::percent_encode(&password)),
            (false, _) => format!(
                "{}:{}@",
                crate::net::percent_encode(&user),
                crate::net::percent_encode(&password)
            ),
        };
        let user = self.str("username")?.unwrap_or_default();
        let password = self.str("password")?.unwrap_or_default();
        let tls = self.bool("tls")?;
        let scheme = if tls { "rediss" } else { "redis" };
        // Sentinel, in RedisShake v4's two spellings: a `[<section>.sentinel]` table
        // (master_name, address, username, password, tls: the sentinel's own login; `address`
        // of the section is then not used), or `sentinel = true` with `master` in
        // [redis_writer] (`address` is the sentinel, logged in to with the same credentials).
        let sentinel = match self.t.get("sentinel") {
            Some(toml::Value::Table(t)) => {
                let st = Section {
                    name: &format!("{}.sentinel", self.name),
                    t,
                };
                for k in t.keys() {
                    if ![
                        "master_name",
                        "address",
                        "username",
                        "password",
                        "tls",
                        "tls_config",
                    ]
                    .contains(&k.as_str())
                    {
                        return Err(format!(
                            "{}: not a RedisShake v4 sentinel key (master_name, address, username, password, tls)",
                            st.key(k)
                        ));
                    }
                }
                match st.str("master_name")?.filter(|m| !m.is_empty()) {
                    None => None,
                    Some(name) => {
                        let addr = st
                            .str("address")?
                            .filter(|a| !a.is_empty())
                            .ok_or_else(|| format!("[{}] has no address", st.name))?;
                        if st.bool("tls")? != tls {
                            return Err(format!("{} = {} but {} = {tls}: TLS is used for the sentinels and the data nodes alike", st.key("tls"), !tls, self.key("tls")));
                        }
                        let su = st.str("username")?.unwrap_or_default();
                        let sp = st.str("password")?.unwrap_or_default();
                        Some((addr, name, su, sp))
                    }
                }
            }
            Some(_) if self.bool("sentinel")? => {
                let name = self
                    .str("master")?
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "{} = true needs {}: the sentinels' name of the master",
                            self.key("sentinel"),
                            self.key("master")
                        )
                    })?;
                let addr = self
                    .str("address")?
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| format!("[{}] has no address (the sentinel's)", self.name))?;
                Some((addr, name, user.clone(), password.clone()))
            }
            _ => None,
        };
        if let Some((addr, name, su, sp)) = sentinel {
            let mut query = Vec::new();
            if !su.is_empty() {
                query.push(format!("sentinel_user={}", crate::net::percent_encode(&su)));
            }
            if !sp.is_empty() {
                query.push(format!(
                    "sentinel_password={}",
                    crate::net::percent_encode(&sp)
                ));
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            return Ok(format!(
                "{scheme}+sentinel://{}{addr}/{}{query}",
                auth(user, password),
                crate::net::percent_encode(&name)
            ));
        }
        let addr = self
            .str("address")?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("[{}] has no address", self.name))?;
        Ok(format!("{scheme}://{}{addr}", auth(user, password)))
    }
}

struct Out {
    tool: Tool,
    args: Vec<FileArg>,
    notes: Vec<String>,
}

impl Out {
    fn flag(&mut self, flag: &'static str, value: impl Into<String>) {
        self.args.push(FileArg {
            flag,
            value: Some(value.into()),
            also: &[],
        });
    }
    fn switch(&mut self, flag: &'static str, also: &'static [&'static str]) {
        self.args.push(FileArg {
            flag,
            value: None,
            also,
        });
    }
    fn note(&mut self, key: &str, why: &str) {
        self.notes.push(format!("{key} ignored: {why}"));
    }
}

/// `[file_writer]` (filepath, type = cmd | aof | json): shake-sync's change stream out,
/// `--output FILE` with the snapshot and then the command stream, resumable.
fn file_writer(tool: Tool, t: &toml::Table, out: &mut Out) -> Result<(), String> {
    let fw = Section {
        name: "file_writer",
        t,
    };
    if tool != Tool::Sync {
        return Err("[file_writer] is written by shake-sync from a [sync_reader] source (the snapshot, then the command stream); with [scan_reader] or [rdb_reader], write an RDB file with shake-rump -o or decode one with shake-decode".into());
    }
    let path = fw
        .str("filepath")?
        .filter(|p| !p.is_empty())
        .ok_or("[file_writer] has no filepath")?;
    out.flag("output", path);
    let kind = fw.str("type")?.unwrap_or_else(|| "cmd".into());
    match kind.as_str() {
        "aof" => out.flag("output-format", "resp"),
        "cmd" => {
            out.flag("output-format", "resp");
            out.notes.push("file_writer.type = \"cmd\" is written as RESP (--output-format resp): binary-safe where RedisShake's space-separated text is not; replay it with redis-cli --pipe".into());
        }
        "json" => {
            out.flag("output-format", "jsonl");
            out.notes.push("file_writer.type = \"json\" is written in shake-sync's JSON lines (--output-format jsonl: a snapshot's keys as shake-decode prints them, then {\"shard\",\"replid\",\"db\",\"offset\",\"argv\"} per command), not RedisShake's {\"DbId\",\"Argv\",...} records".into());
        }
        other => {
            return Err(format!(
                "file_writer.type = {other:?}: expected cmd, aof or json"
            ))
        }
    }
    for (k, _) in fw.t {
        match k.as_str() {
            "filepath" | "type" => {}
            other => out.note(&fw.key(other), "not a RedisShake v4 file_writer key"),
        }
    }
    Ok(())
}

/// The plan for a parsed (lower-cased, substituted) v4 file.
pub fn translate(doc: &toml::Table) -> Result<Plan, String> {
    let table = |name: &str| -> Result<Option<&toml::Table>, String> {
        match doc.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(format!("{name} must be a [{name}] section")),
        }
    };
    let present: Vec<&str> = READERS
        .iter()
        .copied()
        .filter(|r| doc.contains_key(*r))
        .collect();
    let Some(&reader) = present.first() else {
        return Err(
            "no reader section: a RedisShake v4 file needs [sync_reader], [scan_reader], [rdb_reader] or [aof_reader]"
                .into(),
        );
    };
    let tool = match reader {
        "sync_reader" => Tool::Sync,
        "scan_reader" => Tool::Rump,
        // An AOF (a file, a multi-part directory or its manifest) is shake-restore's input too.
        _ => Tool::Restore,
    };
    let mut out = Out {
        tool,
        args: vec![],
        notes: vec![],
    };
    for other in &present[1..] {
        out.notes.push(format!(
            "[{other}] ignored: [{reader}] is also present, and it is the one RedisShake uses"
        ));
    }
    let advanced = Section {
        name: "advanced",
        t: table("advanced")?.unwrap_or(&EMPTY),
    };
    let rs = Section {
        name: reader,
        t: table(reader)?.unwrap_or(&EMPTY),
    };
    let mut allow_dbs: Option<Vec<u64>> = None;
    let mut source_addr = String::new();
    match tool {
        Tool::Sync => {
            out.flag("source", rs.url()?);
            source_addr = rs.str("address")?.unwrap_or_default();
            for (k, _) in rs.t {
                match k.as_str() {
                    "address" | "username" | "password" | "tls" | "sentinel" => {}
                    "cluster" => {
                        if !rs.bool("cluster")? {
                            // RedisShake's standalone reader reads that one node.
                            out.switch("no-source-cluster", &["source-cluster"]);
                        }
                    }
                    "sync_rdb" => {
                        if !rs.bool(k)? {
                            return Err("sync_reader.sync_rdb = false is not supported: shake-sync applies the full sync before the stream (a resume skips it); to see only changes use a keyspace-event consumer or RedisShake".into());
                        }
                    }
                    "sync_aof" => {
                        if !rs.bool(k)? {
                            return Err("sync_reader.sync_aof = false is not supported by shake-sync: for a one-off copy without the stream use `shake-dump --source URL -o - | shake-restore --target URL -`".into());
                        }
                    }
                    "prefer_replica" => {
                        if rs.bool(k)? {
                            out.switch("source-replica", &[]);
                        }
                    }
                    "try_diskless" => out.note(&rs.key(k), "the full-sync RDB is applied while it streams and never written to disk, whether the source sends it from disk or diskless (its repl-diskless-sync decides)"),
                    other => out.note(&rs.key(other), "not a RedisShake v4 sync_reader key"),
                }
            }
            if !rs.t.contains_key("cluster") {
                out.switch("no-source-cluster", &["source-cluster"]);
            }
        }
        Tool::Rump => {
            out.flag("source", rs.url()?);
            for (k, _) in rs.t {
                match k.as_str() {
                    "address" | "username" | "password" | "tls" | "sentinel" => {}
                    "cluster" => {
                        if rs.bool(k)? {
                            out.switch("source-cluster", &["no-source-cluster"]);
                        } else {
                            out.switch("no-source-cluster", &["source-cluster"]);
                        }
                    }
                    "dbs" => {
                        let d = rs.ints(k)?;
                        if !d.is_empty() {
                            allow_dbs = Some(d);
                        }
                    }
                    "scan" => {
                        if !rs.bool(k)? {
                            return Err("scan_reader.scan = false is not supported: shake-rump copies every key before it follows keyspace events".into());
                        }
                    }
                    "ksn" => {
                        if rs.bool(k)? {
                            out.switch("follow", &[]);
                        }
                    }
                    "count" => {
                        if let Some(n) = rs.int(k)?.filter(|n| *n > 0) {
                            out.flag("count", n.to_string());
                        }
                    }
                    "prefer_replica" => {
                        if rs.bool(k)? {
                            out.note(
                                &rs.key(k),
                                "not supported yet for shake-rump; it reads the address given",
                            );
                        }
                    }
                    other => out.note(&rs.key(other), "not a RedisShake v4 scan_reader key"),
                }
            }
            if !rs.t.contains_key("cluster") {
                out.switch("no-source-cluster", &["source-cluster"]);
            }
        }
        Tool::Restore => {
            let aof = reader == "aof_reader";
            for (k, _) in rs.t {
                match k.as_str() {
                    "filepath" => {}
                    // RedisShake's point-in-time recovery: unix seconds, 0 for everything.
                    "timestamp" if aof => {
                        if let Some(ts) = rs.int("timestamp")?.filter(|&t| t != 0) {
                            if ts < 0 {
                                return Err(format!(
                                    "{} = {ts}: give unix seconds, or 0 for the whole AOF",
                                    rs.key("timestamp")
                                ));
                            }
                            out.flag("until", ts.to_string());
                        }
                    }
                    other if aof => out.note(&rs.key(other), "not a RedisShake v4 aof_reader key"),
                    other => out.note(&rs.key(other), "not a RedisShake v4 rdb_reader key"),
                }
            }
            let file = rs
                .str("filepath")?
                .filter(|f| !f.is_empty())
                .ok_or(format!("[{reader}] has no filepath"))?;
            let mut path = PathBuf::from(&file);
            if path.is_relative() {
                // RedisShake works inside advanced.dir, so a relative path is read from there.
                let dir = advanced.str("dir")?.unwrap_or_else(|| "data".into());
                path = Path::new(&dir).join(path);
            }
            out.args.push(FileArg {
                flag: "",
                value: Some(path.to_string_lossy().into_owned()),
                also: &[],
            });
        }
    }

    // The writer.
    let writers: Vec<&String> = doc.keys().filter(|k| k.ends_with("_writer")).collect();
    match writers.as_slice() {
        [] => return Err("no writer section: add [redis_writer] with the target's address".into()),
        [w] if w.as_str() == "redis_writer" => {}
        [w] if w.as_str() == "file_writer" => {
            file_writer(tool, table("file_writer")?.unwrap_or(&EMPTY), &mut out)?;
        }
        [w] => {
            return Err(format!(
                "[{w}] is not a RedisShake v4 writer: use [redis_writer]"
            ))
        }
        _ => {
            return Err(format!(
                "several writers ({}): give one",
                writers
                    .iter()
                    .map(|w| format!("[{w}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
    let ws = Section {
        name: "redis_writer",
        t: table("redis_writer")?.unwrap_or(&EMPTY),
    };
    // [file_writer] was translated above; the rest of this block reads [redis_writer].
    if !doc.contains_key("file_writer") {
        out.flag("target", ws.url()?);
        for (k, _) in ws.t {
            match k.as_str() {
                "address" | "username" | "password" | "tls" | "sentinel" => {}
                "master" => {
                    let sentinel = matches!(ws.t.get("sentinel"), Some(toml::Value::Table(_)))
                        || ws.bool("sentinel")?;
                    if !sentinel && ws.str(k)?.is_some_and(|m| !m.is_empty()) {
                        out.note(&ws.key(k), "only used with sentinel = true");
                    }
                }
                "cluster" => {
                    // cluster = false: detected (a cluster target is written as a cluster).
                    if ws.bool(k)? {
                        match tool {
                            Tool::Sync | Tool::Rump | Tool::Restore => {
                                out.switch("target-cluster", &["no-target-cluster"])
                            }
                        }
                    }
                }
                "off_reply" => {
                    if ws.bool(k)? {
                        out.note(&ws.key(k), "every reply is read: it is how refused writes, conflicts and checkpoints are known; pipelining (pipeline_count_limit) gives the speed");
                    }
                }
                other => out.note(&ws.key(other), "not a RedisShake v4 redis_writer key"),
            }
        }
    }

    // The filter.
    if let Some(ft) = table("filter")? {
        let fs = Section {
            name: "filter",
            t: ft,
        };
        let mut allow_re = Vec::new();
        let mut block_re = Vec::new();
        for (k, _) in ft {
            match k.as_str() {
                "allow_key_prefix" => {
                    for p in fs.strs(k)? {
                        allow_re.push(format!("^{}", regex::escape(&p)));
                    }
                }
                "allow_key_suffix" => {
                    for p in fs.strs(k)? {
                        allow_re.push(format!("{}$", regex::escape(&p)));
                    }
                }
                "allow_keys" => {
                    for p in fs.strs(k)? {
                        allow_re.push(format!("^{}$", regex::escape(&p)));
                    }
                }
                "allow_key_regex" => {
                    for p in fs.strs(k)? {
                        regex::Regex::new(&p)
                            .map_err(|e| format!("filter.allow_key_regex {p:?}: {e}"))?;
                        allow_re.push(format!("(?:{p})"));
                    }
                }
                "allow_db" => {
                    let d = fs.ints(k)?;
                    if !d.is_empty() {
                        allow_dbs = Some(match allow_dbs.take() {
                            // scan_reader.dbs and allow_db both apply.
                            Some(prev) => prev.into_iter().filter(|x| d.contains(x)).collect(),
                            None => d,
                        });
                    }
                }
                "block_key_prefix" => {
                    for p in fs.strs(k)? {
                        block_re.push(format!("^{}", regex::escape(&p)));
                    }
                }
                "block_key_suffix" => {
                    for p in fs.strs(k)? {
                        block_re.push(format!("{}$", regex::escape(&p)));
                    }
                }
                "block_keys" => {
                    for p in fs.strs(k)? {
                        block_re.push(format!("^{}$", regex::escape(&p)));
                    }
                }
                "block_key_regex" => {
                    for p in fs.strs(k)? {
                        regex::Regex::new(&p)
                            .map_err(|e| format!("filter.block_key_regex {p:?}: {e}"))?;
                        block_re.push(format!("(?:{p})"));
                    }
                }
                "block_db" => {
                    for d in fs.ints(k)? {
                        out.flag("exclude-db", d.to_string());
                    }
                }
                // The command filters: names and groups checked here, so that a bad one is
                // named by its key; shake-sync's flags do the filtering.
                "allow_command"
                | "block_command"
                | "allow_command_group"
                | "block_command_group" => {
                    let names = fs.strs(k)?;
                    let group = k.ends_with("_group");
                    for n in &names {
                        let checked = if group {
                            crate::command::Group::parse(n).map(|_| ())
                        } else {
                            crate::filter::CommandFilter::command(n).map(|_| ())
                        };
                        checked.map_err(|e| format!("{} {e}", fs.key(k)))?;
                    }
                    if !names.is_empty() && tool != Tool::Sync {
                        out.note(
                            &fs.key(k),
                            "only a sync has a command stream; this tool copies keys, not commands",
                        );
                    }
                    if tool == Tool::Sync {
                        let flag = match k.as_str() {
                            "allow_command" => "command",
                            "block_command" => "exclude-command",
                            "allow_command_group" => "command-group",
                            _ => "exclude-command-group",
                        };
                        for n in names {
                            out.flag(flag, n);
                        }
                    }
                }
                "function" => {
                    if fs.str(k)?.is_some_and(|f| !f.trim().is_empty()) {
                        out.note("filter.function", "Lua functions are not run here: choose keys with allow_key_prefix/allow_key_suffix/allow_db (or --key, --key-regex, --db), move databases with --db-map SRC=DST, and rename key prefixes with --rename-prefix OLD=NEW where the tool has it");
                    }
                }
                other => out.note(&fs.key(other), "not a RedisShake v4 filter key"),
            }
        }
        if !allow_re.is_empty() {
            out.flag("key-regex", allow_re.join("|"));
        }
        if !block_re.is_empty() {
            out.flag("exclude-key-regex", block_re.join("|"));
        }
    }
    if let Some(dbs) = allow_dbs {
        if dbs.is_empty() {
            return Err("scan_reader.dbs and filter.allow_db have no database in common: nothing would be copied".into());
        }
        for d in dbs {
            out.flag("db", d.to_string());
        }
    }

    // The advanced settings.
    for (k, _) in advanced.t {
        let key = advanced.key(k);
        match k.as_str() {
            "dir" => out.note(&key, "the RDB is never spooled (it is applied while it streams; shake-sync's checkpoint lives on the target); only shake-sync's full sync over two connections keeps the command stream meanwhile in --spool-dir (default ./shake-spool)"),
            "ncpu" => out.note(&key, "the tools use two worker threads, which the copy does not outgrow"),
            "pprof_port" => out.note(&key, "no Go profiler here"),
            "log_file" => out.note(&key, "logs go to stderr; redirect it (2>>FILE)"),
            "log_level" => out.note(&key, "there is one level; -q silences progress lines"),
            "log_interval" => {
                if let Some(n) = advanced.int(k)? {
                    out.flag("log-interval", n.max(0).to_string());
                }
            }
            "status_port" => {
                let port = advanced.int(k)?.unwrap_or(0);
                if port > 0 {
                    if tool == Tool::Sync {
                        out.flag("status-addr", format!("127.0.0.1:{port}"));
                    } else {
                        out.note(&key, "only shake-sync serves /status and /metrics; this tool prints progress on stderr");
                    }
                }
            }
            "rdb_restore_command_behavior" => {
                let v = advanced.str(k)?.unwrap_or_default();
                let policy = match v.to_ascii_lowercase().as_str() {
                    "panic" => "panic",
                    "rewrite" => "rewrite",
                    "skip" | "ignore" => "ignore",
                    _ => return Err(format!("{key} = {v:?}: expected panic, rewrite or skip")),
                };
                out.flag("on-conflict", policy);
            }
            "pipeline_count_limit" => {
                if let Some(n) = advanced.int(k)?.filter(|n| *n > 0) {
                    out.flag("pipeline", n.to_string());
                }
            }
            "target_redis_client_max_querybuf_len" => out.note(&key, "a setting of the target server; each command is kept within proto-max-bulk-len, which is read from the target"),
            "target_redis_proto_max_bulk_len" => {
                // A cap on one command, for targets that refuse CONFIG GET.
                if let Some(n) = advanced.int(k)?.filter(|n| *n > 0) {
                    let cap = (n as usize).saturating_sub(1 << 20).max(1 << 20);
                    out.flag(
                        "big-key-bytes",
                        crate::apply::DEFAULT_BIG_KEY_BYTES.min(cap).to_string(),
                    );
                }
            }
            "target_redis_max_qps" => {
                if let Some(n) = advanced.int(k)?.filter(|n| *n > 0) {
                    out.flag("qps", n.to_string());
                }
            }
            "aws_psync" => {
                let v = advanced.str(k)?.unwrap_or_default();
                if !v.trim().is_empty() {
                    if tool != Tool::Sync {
                        out.note(&key, "only a sync uses PSYNC");
                    } else {
                        out.flag("psync-command", psync_name(&v, &source_addr)?);
                    }
                }
            }
            "empty_db_before_sync" => {
                if advanced.bool(k)? {
                    if tool == Tool::Sync {
                        out.switch("flush-target", &[]);
                    } else {
                        return Err(format!("{key} = true is not supported by {}: empty the target first (FLUSHALL on each master), then run it", tool.binary()));
                    }
                }
            }
            other => out.note(&advanced.key(other), "not a RedisShake v4 advanced key"),
        }
    }

    for (k, v) in doc {
        match k.as_str() {
            "advanced" | "filter" | "redis_writer" => {}
            r if READERS.contains(&r) => {}
            "module" => {
                if let toml::Value::Table(t) = v {
                    for mk in t.keys() {
                        out.note(
                            &format!("module.{mk}"),
                            "module values are copied as their RESTORE payloads, never re-encoded",
                        );
                    }
                }
            }
            other => out.note(other, "not a RedisShake v4 section"),
        }
    }
    Ok(Plan {
        tool: out.tool,
        args: out.args,
        notes: out.notes,
    })
}

static EMPTY: std::sync::LazyLock<toml::Table> = std::sync::LazyLock::new(toml::Table::new);

/// `aws_psync = "host:port@name,..."`: the one name shake-sync's --psync-command takes.
fn psync_name(v: &str, source: &str) -> Result<String, String> {
    let mut names = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, name) = item
            .split_once('@')
            .ok_or_else(|| format!("advanced.aws_psync: {item:?} is not ADDRESS@COMMAND"))?;
        if addr == source {
            return Ok(name.to_string());
        }
        names.push(name.to_string());
    }
    names.dedup();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("advanced.aws_psync names no command for {source} and several for other nodes: shake-sync takes one PSYNC name for every node (--psync-command NAME)")),
    }
}

/// The `--config` value in a command line (`--config FILE` or `--config=FILE`).
pub fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            return None;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn without_config(argv: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            it.next();
            continue;
        }
        if a.to_str().is_some_and(|s| s.starts_with("--config=")) {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// The command line the tool parses: the file's flags first, then the user's, leaving out each
/// file flag the user gave (on the command line or by its environment variable).
pub fn merge(cmd: &clap::Command, plan: &Plan, argv: &[OsString]) -> Vec<OsString> {
    let user = without_config(argv);
    let pre = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&user)
        .ok();
    let given = |long: &str| -> bool {
        let Some(m) = &pre else { return false };
        let id = if long.is_empty() {
            cmd.get_positionals().next().map(|a| a.get_id().clone())
        } else {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(long))
                .map(|a| a.get_id().clone())
        };
        id.is_some_and(|id| {
            matches!(
                m.value_source(id.as_str()),
                Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
            )
        })
    };
    let mut out: Vec<OsString> = user.first().cloned().into_iter().collect();
    // Repeatable flags (--db) come as several FileArgs with one flag: decide once per flag.
    for a in &plan.args {
        if given(a.flag) || a.also.iter().any(|o| given(o)) {
            continue;
        }
        if !a.flag.is_empty() {
            out.push(format!("--{}", a.flag).into());
        }
        if let Some(v) = &a.value {
            out.push(v.into());
        }
    }
    out.extend(user.into_iter().skip(1));
    out
}

/// What a binary does with its command line before parsing it: `Ok(argv)` to parse (the file's
/// flags merged in, or the line unchanged without a v4 `--config`), or `Err(exit code)` after
/// printing why, or after running the tool the file is for (exec: this only returns on error).
pub fn front_door(
    tool: Tool,
    cmd: clap::Command,
    argv: Vec<OsString>,
) -> Result<Vec<OsString>, u8> {
    let me = tool.binary();
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let plan = match load(&path) {
        Ok(Some(p)) => p,
        // Not v4: shake-sync reads v3 files itself.
        Ok(None) if tool == Tool::Sync => return Ok(argv),
        Ok(None) => {
            eprintln!(
                "{me}: {}: not a RedisShake v4 file (no [*_reader]/[*_writer] section)",
                path.display()
            );
            return Err(2);
        }
        Err(e) => {
            eprintln!("{me}: {}: {e}", path.display());
            return Err(2);
        }
    };
    if plan.tool != tool {
        let other = plan.tool.binary();
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(other)))
            .filter(|p| p.exists());
        let Some(sibling) = sibling else {
            eprintln!("{me}: {}: this file is for {other} (its reader section), which is not next to {me}: run `{other} --config {}`", path.display(), path.display());
            return Err(2);
        };
        eprintln!(
            "{me}: {}: the file is for {other}: running {}",
            path.display(),
            sibling.display()
        );
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(&sibling).args(&argv[1..]).exec();
            eprintln!("{me}: cannot run {}: {e}", sibling.display());
            return Err(1);
        }
        #[cfg(not(unix))]
        {
            return match std::process::Command::new(&sibling)
                .args(&argv[1..])
                .status()
            {
                Ok(s) => Err(s.code().unwrap_or(1) as u8),
                Err(e) => {
                    eprintln!("{me}: cannot run {}: {e}", sibling.display());
                    Err(1)
                }
            };
        }
    }
    for n in &plan.notes {
        eprintln!("{me}: {}: {n}", path.display());
    }
    Ok(merge(&cmd, &plan, &argv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "A" => Some("one".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_like_envsubst() {
        assert_eq!(substitute("x=${A} $A $$A", &env).unwrap(), "x=one one $A");
        assert_eq!(
            substitute("${B:-d} ${E:-d} ${E-d} ${B-d}", &env).unwrap(),
            "d d  d"
        );
        assert_eq!(substitute("cost $5 and $", &env).unwrap(), "cost $5 and $");
        let e = substitute("a\nb = \"${NOPE}\"", &env).unwrap_err();
        assert!(e.contains("line 2") && e.contains("NOPE"), "{e}");
        assert!(substitute("${A", &env).is_err());
    }

    fn plan(text: &str) -> Result<Plan, String> {
        let doc: toml::Table = text.parse().unwrap();
        translate(&lowercase(&doc, "")?)
    }

    fn flags(p: &Plan) -> Vec<String> {
        p.args
            .iter()
            .map(|a| match &a.value {
                Some(v) if a.flag.is_empty() => v.clone(),
                Some(v) => format!("--{} {v}", a.flag),
                None => format!("--{}", a.flag),
            })
            .collect()
    }

    #[test]
    fn maps_readers_writers_filters() {
        let p = plan(
            "[Scan_Reader]\nAddress='h:1'\npassword='p@ss'\nksn=true\ncount=10\ndbs=[0,3]\n[redis_writer]\naddress='t:2'\ncluster=true\n[filter]\nallow_key_prefix=['a.']\nallow_db=[3,4]\nfunction='x'\n[advanced]\nrdb_restore_command_behavior='skip'\nncpu=3\nbogus=1",
        )
        .unwrap();
        assert_eq!(p.tool, Tool::Rump);
        let f = flags(&p);
        for want in [
            "--source redis://:p%40ss@h:1",
            "--follow",
            "--count 10",
            "--target redis://t:2",
            "--target-cluster",
            "--key-regex ^a\\.",
            "--db 3",
            "--on-conflict ignore",
            "--no-source-cluster",
        ] {
            assert!(f.contains(&want.to_string()), "{want} missing in {f:?}");
        }
        assert!(!f.contains(&"--db 0".to_string()) && !f.contains(&"--db 4".to_string()));
        let notes = p.notes.join("\n");
        for n in [
            "advanced.ncpu ignored",
            "advanced.bogus ignored",
            "filter.function ignored",
        ] {
            assert_eq!(notes.matches(n).count(), 1, "{notes}");
        }
        let b = plan("[sync_reader]\naddress='a:1'\n[redis_writer]\naddress='b:1'\n[filter]\nblock_key_prefix=['x*']\nblock_key_suffix=[':t']\nblock_db=[2]").unwrap();
        let f = flags(&b);
        assert!(
            f.contains(&"--exclude-key-regex ^x\\*|:t$".to_string()),
            "{f:?}"
        );
        assert!(f.contains(&"--exclude-db 2".to_string()), "{f:?}");
        let c = plan("[sync_reader]\naddress='a:1'\n[redis_writer]\naddress='b:1'\n[filter]\nblock_command=['FLUSHALL']\nallow_command=['SET','hset']\nallow_command_group=['STRING','SORTED_SET']\nblock_command_group=['SCRIPTING']").unwrap();
        let f = flags(&c);
        for want in [
            "--exclude-command FLUSHALL",
            "--command SET",
            "--command hset",
            "--command-group STRING",
            "--command-group SORTED_SET",
            "--exclude-command-group SCRIPTING",
        ] {
            assert!(f.contains(&want.to_string()), "{want} missing in {f:?}");
        }
        // A bad name is refused by its key; a tool without a stream notes the filters.
        for (bad, named) in [
            (
                "allow_command=['NOSUCH']",
                "filter.allow_command \"NOSUCH\": not a command",
            ),
            (
                "block_command=['MULTI']",
                "filter.block_command \"MULTI\": MULTI, EXEC",
            ),
            (
                "allow_command_group=['STRINGS']",
                "filter.allow_command_group \"STRINGS\": not a command group",
            ),
            (
                "block_command_group=['TAIRHASH']",
                "filter.block_command_group \"TAIRHASH\": not a command group (Tair's",
            ),
        ] {
            let err = plan(&format!(
                "[sync_reader]\naddress='a:1'\n[redis_writer]\naddress='b:1'\n[filter]\n{bad}"
            ))
            .unwrap_err();
            assert!(err.starts_with(named), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let rump = plan("[scan_reader]\naddress='a:1'\n[redis_writer]\naddress='b:1'\n[filter]\nallow_command_group=['STRING']").unwrap();
        assert!(
            !flags(&rump).iter().any(|f| f.contains("command")),
            "{:?}",
            flags(&rump)
        );
        assert!(rump
            .notes
            .join("\n")
            .contains("filter.allow_command_group ignored: only a sync"));
        assert!(
            plan("[sync_reader]\naddress='a:1'\n[redis_writer]\naddress='b:1'\nsentinel=true")
                .is_err()
        );
        let r = plan(
            "[rdb_reader]\nfilepath='d.rdb'\n[redis_writer]\naddress='b:1'\n[advanced]\ndir='/w'",
        )
        .unwrap();
        assert_eq!(r.tool, Tool::Restore);
        assert!(flags(&r).contains(&"/w/d.rdb".to_string()));
        assert!(
            plan("[sync_reader]\naddress='a:1'\nADDRESS='b'\n[redis_writer]\naddress='b:1'")
                .is_err()
        );
    }

    #[test]
    fn maps_sentinels() {
        // The older spelling: [redis_writer] sentinel = true, master; address is the sentinel.
        let p = plan("[sync_reader]\naddress='a:1'\n[redis_writer]\naddress='s:26379'\nsentinel=true\nmaster='m1'\npassword='p@w'").unwrap();
        let f = flags(&p);
        assert!(
            f.contains(
                &"--target redis+sentinel://:p%40w@s:26379/m1?sentinel_password=p%40w".to_string()
            ),
            "{f:?}"
        );
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        // The newer: a [<section>.sentinel] table with the sentinel's own login, either side.
        let p = plan("[sync_reader]\naddress='ignored:1'\nusername='u'\npassword='pw'\n[sync_reader.sentinel]\nmaster_name='m 2'\naddress='s1:5000'\npassword='sp'\n[redis_writer]\naddress='b:1'\n[redis_writer.sentinel]\nmaster_name=''").unwrap();
        let f = flags(&p);
        assert!(
            f.contains(
                &"--source redis+sentinel://u:pw@s1:5000/m%202?sentinel_password=sp".to_string()
            ),
            "{f:?}"
        );
        assert!(f.contains(&"--target redis://b:1".to_string()), "{f:?}");
        let p = plan("[scan_reader]\naddress='x:1'\n[scan_reader.sentinel]\nmaster_name='m'\naddress='s:1'\nusername='su'\n[redis_writer]\naddress='b:1'").unwrap();
        assert!(flags(&p).contains(&"--source redis+sentinel://s:1/m?sentinel_user=su".to_string()));
        for bad in [
            "[sync_reader]\naddress='a:1'\n[sync_reader.sentinel]\nmaster_name='m'\n[redis_writer]\naddress='b:1'",
            "[sync_reader]\naddress='a:1'\n[sync_reader.sentinel]\nmaster_name='m'\naddress='s:1'\ntls=true\n[redis_writer]\naddress='b:1'",
            "[sync_reader]\naddress='a:1'\n[sync_reader.sentinel]\nmaster='m'\n[redis_writer]\naddress='b:1'",
        ] {
            assert!(plan(bad).is_err(), "{bad}");
        }
        // The URLs read back as sentinel endpoints.
        let e =
            crate::net::Endpoint::parse("redis+sentinel://u:pw@s1:5000/m%202?sentinel_password=sp")
                .unwrap();
        assert_eq!(e.sentinel.unwrap().master, "m 2");
    }

    #[test]
    fn aws_psync_picks_the_source() {
        assert_eq!(psync_name("a:1@x, b:2@y", "b:2").unwrap(), "y");
        assert_eq!(psync_name("a:1@x,b:2@x", "c:3").unwrap(), "x");
        assert!(psync_name("a:1@x,b:2@y", "c:3").is_err());
    }
}
