//! Helpers shared by the live (real-server) tests.
//!
//! Everything here is deliberately independent of shake-core: the point of the live tests is to
//! check our decoder against what a real server says, so the "truth" side must not go through our
//! own code. That is why this module has its own small JSON reader (it keeps numbers as their exact
//! text, so a zset score is parsed once, by Rust's correctly rounded `f64` parser, and duplicate
//! object members stay visible) and talks to servers only through the `redis` crate.
//!
//! The central type is [`Snapshot`]: every key of every database with its type, value, TTL and
//! per-field TTLs, in a canonical form (sets and hashes as ordered maps, scores as bit patterns).
//! A snapshot can be taken from a live server ([`snapshot`]) or built from `shake-decode` JSON lines
//! ([`snapshot_from_jsonl`]); [`compare`] lists every difference between two of them.

// Each test binary that includes this module (`mod live_common;`) uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use redis::Value as RV;

pub type Bytes = Vec<u8>;

/// `(db, key)`: the identity of a key across the whole keyspace.
pub type DbKey = (i64, Bytes);

/// A key's content in canonical, order-insensitive-where-the-type-is form.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(Bytes),
    List(Vec<Bytes>),
    Set(BTreeSet<Bytes>),
    /// member -> score as `f64::to_bits`, so -0.0 and 0.0 differ and every bit counts.
    ZSet(BTreeMap<Bytes, u64>),
    Hash(BTreeMap<Bytes, Bytes>),
    Stream(Box<Stream>),
    /// A value the decoder printed in a shape the contract does not allow; never equal to anything.
    Broken(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sid(pub u64, pub u64);

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

pub fn parse_sid(s: &str) -> Result<Sid, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("bad stream id {s:?}"))?;
    Ok(Sid(
        a.parse().map_err(|_| format!("bad stream id {s:?}"))?,
        b.parse().map_err(|_| format!("bad stream id {s:?}"))?,
    ))
}

/// A group's `entries_read`: not stored at all (RDB < 10 / server < 7.0), stored but unknown
/// (the server says nil, the RDB holds -1), or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntriesRead {
    NotStored,
    Unknown,
    Known(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub entries: Vec<(Sid, Vec<(Bytes, Bytes)>)>,
    pub length: u64,
    pub last_id: Sid,
    /// The three below exist from stream listpacks 2 (Redis 7.0) on; `None` both on older servers
    /// and in the decoder's output for older RDBs.
    pub first_id: Option<Sid>,
    pub max_deleted_id: Option<Sid>,
    pub entries_added: Option<u64>,
    /// By group name.
    pub groups: BTreeMap<Bytes, Group>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub last_id: Sid,
    pub entries_read: EntriesRead,
    /// By entry id.
    pub pending: BTreeMap<Sid, Pending>,
    /// By consumer name.
    pub consumers: BTreeMap<Bytes, Consumer>,
}

/// A pending entry as the server keeps it: in the group's PEL, owned by one consumer. (The JSON
/// prints times and counts in the group's list and the ids under their owners; they are joined
/// here.)
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub consumer: Bytes,
    pub delivery_time_ms: i64,
    pub delivery_count: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub seen_time_ms: i64,
    /// Stored from RDB 11 (Redis 7.2 / Valkey) on.
    pub active_time_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub ty: String,
    pub val: Val,
    pub expire_at_ms: Option<i64>,
    /// Hash fields that have a TTL: field -> absolute ms.
    pub field_expire_at_ms: BTreeMap<Bytes, i64>,
    /// Contract violations in how the decoder printed this key that still let its value be
    /// read (and compared); always reported as differences.
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub keys: BTreeMap<DbKey, KeyState>,
    /// Whether `expire_at_ms` values are exact (PEXPIRETIME, RDB) or reconstructed from PTTL.
    pub ttl_exact: bool,
    /// Shape errors found while reading decoder output (contract violations), already phrased.
    pub errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Display helpers

/// A byte string as a person reads it in a failure message: UTF-8 text quoted, anything else
/// escaped byte by byte.
pub fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => format!("{s:?}"),
        _ => format!("b\"{}\"", b.escape_ascii()),
    }
}

/// Like [`show`] but cut to a readable length.
pub fn preview(b: &[u8]) -> String {
    if b.len() <= 48 {
        show(b)
    } else {
        format!("{}..(len {})", show(&b[..48]), b.len())
    }
}

pub fn show_key(k: &DbKey) -> String {
    format!("db {} key {}", k.0, preview(&k.1))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// A small exact JSON reader

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text exactly as printed, so it can be parsed exactly as f64 or i64.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    /// Members in order, duplicates kept (a duplicate hash field would be a decoder bug).
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
    pub fn as_arr(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
}

pub fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at offset {}", p.i));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected {:?}", c as char))
        }
    }
    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    let v = self.value()?;
                    m.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    self.ws();
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'n') => self.lit("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                // The JSON grammar, checked loosely: Rust's parser accepts a superset
                // ("inf", "1.") that must not appear as bare JSON numbers.
                let ok = {
                    let body = t.strip_prefix('-').unwrap_or(t);
                    let (mant, _exp) = match body.find(['e', 'E']) {
                        Some(p) => (&body[..p], Some(&body[p + 1..])),
                        None => (body, None),
                    };
                    let (int, frac) = match mant.split_once('.') {
                        Some((a, b)) => (a, Some(b)),
                        None => (mant, None),
                    };
                    !int.is_empty()
                        && (int == "0" || !int.starts_with('0'))
                        && frac.is_none_or(|f| !f.is_empty())
                        && t.parse::<f64>().is_ok()
                };
                if !ok {
                    return self.err(&format!("bad number {t:?}"));
                }
                Ok(Json::Num(t.to_string()))
            }
            _ => self.err("expected a value"),
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        let h = std::str::from_utf8(h).map_err(|_| "bad \\u escape")?;
        let v = u32::from_str_radix(h, 16).map_err(|_| format!("bad \\u escape {h:?}"))?;
        self.i += 4;
        Ok(v)
    }
    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair; a lone surrogate would mean the decoder
                                // smuggled invalid UTF-8 into a JSON string.
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return self.err("lone high surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("bad low surrogate");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(cp).ok_or("lone low surrogate")?
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return self.err("raw control character in string"),
                c => out.push(c),
            }
        }
        String::from_utf8(out)
            .map_err(|_| format!("invalid UTF-8 in string before offset {}", self.i))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder output -> Snapshot

/// A byte string as the contract prints it: a JSON string for valid UTF-8, `{"base64":..}` for
/// anything else. Using base64 for valid UTF-8 is a contract violation too (the mapping must be
/// canonical so that `jq` filters on plain strings work).
pub fn json_bytes(j: &Json) -> Result<Bytes, String> {
    match j {
        Json::Str(s) => Ok(s.as_bytes().to_vec()),
        Json::Obj(m) if m.len() == 1 && m[0].0 == "base64" => {
            let Json::Str(b) = &m[0].1 else {
                return Err("base64 member is not a string".into());
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("bad base64 {b:?}: {e}"))?;
            if std::str::from_utf8(&bytes).is_ok() {
                return Err(format!("valid UTF-8 {} printed as base64", preview(&bytes)));
            }
            Ok(bytes)
        }
        other => Err(format!("not a byte string: {}", short_json(other))),
    }
}

fn short_json(j: &Json) -> String {
    let s = format!("{j:?}");
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

/// A score: a JSON number (exact text) or one of the strings "inf", "-inf", "nan".
pub fn json_score(j: &Json) -> Result<f64, String> {
    match j {
        Json::Num(t) => Ok(t.parse::<f64>().unwrap()),
        Json::Str(s) if s == "inf" => Ok(f64::INFINITY),
        Json::Str(s) if s == "-inf" => Ok(f64::NEG_INFINITY),
        Json::Str(s) if s == "nan" => Ok(f64::NAN),
        other => Err(format!("bad score {}", short_json(other))),
    }
}

/// `{field: value}` or `[[field, value], ...]` into ordered pairs, duplicates kept.
fn json_pairs(j: &Json) -> Result<Vec<(Bytes, Json)>, String> {
    match j {
        Json::Obj(m) => Ok(m
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect()),
        Json::Arr(a) => a
            .iter()
            .map(|p| match p {
                Json::Arr(kv) if kv.len() == 2 => Ok((json_bytes(&kv[0])?, kv[1].clone())),
                other => Err(format!("not a [field, value] pair: {}", short_json(other))),
            })
            .collect(),
        other => Err(format!(
            "not an object or pair array: {}",
            short_json(other)
        )),
    }
}

fn bytes_array(j: &Json) -> Result<Vec<Bytes>, String> {
    j.as_arr()
        .ok_or_else(|| format!("not an array: {}", short_json(j)))?
        .iter()
        .map(json_bytes)
        .collect()
}

fn req<'a>(j: &'a Json, name: &str) -> Result<&'a Json, String> {
    j.get(name)
        .ok_or_else(|| format!("missing member {name:?}"))
}

fn req_i64(j: &Json, name: &str) -> Result<i64, String> {
    req(j, name)?
        .as_i64()
        .ok_or_else(|| format!("member {name:?} is not an integer"))
}

fn req_sid(j: &Json, name: &str) -> Result<Sid, String> {
    parse_sid(
        req(j, name)?
            .as_str()
            .ok_or_else(|| format!("member {name:?} is not a string"))?,
    )
}

fn opt_sid(j: &Json, name: &str) -> Result<Option<Sid>, String> {
    j.get(name)
        .map(|v| {
            parse_sid(
                v.as_str()
                    .ok_or_else(|| format!("member {name:?} is not a string"))?,
            )
        })
        .transpose()
}

fn decode_stream(v: &Json, violations: &mut Vec<String>) -> Result<Stream, String> {
    let mut entries = Vec::new();
    for e in req(v, "entries")?
        .as_arr()
        .ok_or("entries is not an array")?
    {
        let id = req_sid(e, "id")?;
        let fields = json_pairs(req(e, "fields")?)?
            .into_iter()
            .map(|(f, v)| Ok((f, json_bytes(&v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        entries.push((id, fields));
    }
    let mut groups = BTreeMap::new();
    for g in req(v, "groups")?.as_arr().ok_or("groups is not an array")? {
        let name = json_bytes(req(g, "name")?)?;
        let entries_read = match g.get("entries_read") {
            None => EntriesRead::NotStored,
            Some(Json::Null) => EntriesRead::Unknown,
            Some(j) => match j.as_i64() {
                Some(-1) => EntriesRead::Unknown,
                Some(n) => EntriesRead::Known(n),
                // The RDB stores "unknown" as -1 written as an unsigned length; printing that
                // raw gives a number no JSON reader holds exactly, and not what XINFO says
                // (nil). Reported, then read as "unknown" so the rest of the stream is compared.
                None if matches!(j, Json::Num(n) if n == "18446744073709551615") => {
                    violations.push(format!(
                        "group {} entries_read printed as 18446744073709551615 (the RDB's -1, 'unknown', as unsigned); XINFO says nil: print -1 or null",
                        show(&name)
                    ));
                    EntriesRead::Unknown
                }
                None => return Err(format!("entries_read {} is not an integer", short_json(j))),
            },
        };
        // The group's PEL gives times and counts; each consumer lists the ids it owns. Every
        // PEL entry must be owned by exactly one consumer (the server keeps both in step).
        let mut pel: BTreeMap<Sid, (i64, i64)> = BTreeMap::new();
        for p in req(g, "pending")?
            .as_arr()
            .ok_or("pending is not an array")?
        {
            let id = req_sid(p, "id")?;
            if pel
                .insert(
                    id,
                    (
                        req_i64(p, "delivery_time_ms")?,
                        req_i64(p, "delivery_count")?,
                    ),
                )
                .is_some()
            {
                return Err(format!("pending entry {id} listed twice"));
            }
        }
        let mut pending = BTreeMap::new();
        let mut consumers = BTreeMap::new();
        for c in req(g, "consumers")?
            .as_arr()
            .ok_or("consumers is not an array")?
        {
            let cname = json_bytes(req(c, "name")?)?;
            for id in req(c, "pending")?
                .as_arr()
                .ok_or("consumer pending is not an array")?
            {
                let id = parse_sid(id.as_str().ok_or("consumer pending id is not a string")?)?;
                let Some(&(delivery_time_ms, delivery_count)) = pel.get(&id) else {
                    return Err(format!(
                        "consumer {} owns {id}, which is not in the group's pending list",
                        show(&cname)
                    ));
                };
                let pe = Pending {
                    consumer: cname.clone(),
                    delivery_time_ms,
                    delivery_count,
                };
                if pending.insert(id, pe).is_some() {
                    return Err(format!("pending entry {id} owned by two consumers"));
                }
            }
            let co = Consumer {
                seen_time_ms: req_i64(c, "seen_time_ms")?,
                active_time_ms: c
                    .get("active_time_ms")
                    .map(|_| req_i64(c, "active_time_ms"))
                    .transpose()?,
            };
            if consumers.insert(cname.clone(), co).is_some() {
                return Err(format!("consumer {} listed twice", show(&cname)));
            }
        }
        if let Some(orphan) = pel.keys().find(|id| !pending.contains_key(*id)) {
            return Err(format!("pending entry {orphan} is owned by no consumer"));
        }
        let group = Group {
            last_id: req_sid(g, "last_id")?,
            entries_read,
            pending,
            consumers,
        };
        if groups.insert(name.clone(), group).is_some() {
            return Err(format!("group {} listed twice", show(&name)));
        }
    }
    Ok(Stream {
        entries,
        length: req_i64(v, "length")? as u64,
        last_id: req_sid(v, "last_id")?,
        first_id: opt_sid(v, "first_id")?,
        max_deleted_id: opt_sid(v, "max_deleted_id")?,
        entries_added: v
            .get("entries_added")
            .map(|_| req_i64(v, "entries_added").map(|n| n as u64))
            .transpose()?,
        groups,
    })
}

/// The value of one key line, by the contract's rules for its type.
fn decode_value(ty: &str, v: &Json, violations: &mut Vec<String>) -> Result<Val, String> {
    Ok(match ty {
        "string" => Val::Str(json_bytes(v)?),
        "list" => Val::List(bytes_array(v)?),
        "set" => {
            let items = bytes_array(v)?;
            let n = items.len();
            let set: BTreeSet<Bytes> = items.into_iter().collect();
            if set.len() != n {
                return Err(format!(
                    "set lists {} members but only {} distinct",
                    n,
                    set.len()
                ));
            }
            Val::Set(set)
        }
        "zset" => {
            let mut m = BTreeMap::new();
            for p in v.as_arr().ok_or("zset value is not an array")? {
                let Json::Arr(ms) = p else {
                    return Err(format!("zset item is not a pair: {}", short_json(p)));
                };
                if ms.len() != 2 {
                    return Err(format!("zset item is not a pair: {}", short_json(p)));
                }
                let member = json_bytes(&ms[0])?;
                let score = json_score(&ms[1])?;
                if m.insert(member.clone(), score.to_bits()).is_some() {
                    return Err(format!("zset member {} listed twice", preview(&member)));
                }
            }
            Val::ZSet(m)
        }
        "hash" => {
            let mut m = BTreeMap::new();
            for (f, val) in json_pairs(v)? {
                if m.insert(f.clone(), json_bytes(&val)?).is_some() {
                    return Err(format!("hash field {} listed twice", preview(&f)));
                }
            }
            Val::Hash(m)
        }
        "stream" => Val::Stream(Box::new(decode_stream(v, violations)?)),
        other => return Err(format!("unexpected type {other:?}")),
    })
}

/// One decoder key line into `(db, key)` and state. Shape errors become `Val::Broken`.
pub fn key_line(line: &Json) -> Result<(DbKey, KeyState), String> {
    let db = req_i64(line, "db")?;
    let key = json_bytes(req(line, "key")?)?;
    let ty = req(line, "type")?
        .as_str()
        .ok_or("type is not a string")?
        .to_string();
    let expire_at_ms = match line.get("expire_at_ms") {
        None => None,
        Some(j) => Some(j.as_i64().ok_or("expire_at_ms is not an integer")?),
    };
    let mut state = KeyState {
        ty: ty.clone(),
        val: Val::Broken(String::new()),
        expire_at_ms,
        field_expire_at_ms: BTreeMap::new(),
        violations: Vec::new(),
    };
    match decode_value(&ty, req(line, "value")?, &mut state.violations) {
        Ok(v) => state.val = v,
        Err(e) => state.val = Val::Broken(e),
    }
    if let Some(fe) = line.get("field_expire_at_ms") {
        match json_pairs(fe) {
            Ok(pairs) => {
                for (f, ms) in pairs {
                    match ms.as_i64() {
                        Some(ms) => {
                            state.field_expire_at_ms.insert(f, ms);
                        }
                        None => {
                            state.val = Val::Broken(format!(
                                "field_expire_at_ms of {} is not an integer",
                                show(&f)
                            ))
                        }
                    }
                }
            }
            Err(e) => state.val = Val::Broken(format!("field_expire_at_ms: {e}")),
        }
    }
    Ok(((db, key), state))
}

/// Every key line of a `shake-decode` JSON-lines output (meta lines are skipped).
pub fn snapshot_from_jsonl(text: &str) -> Snapshot {
    let mut snap = Snapshot {
        ttl_exact: true,
        ..Default::default()
    };
    for (n, raw) in text.lines().enumerate() {
        let line = match parse_json(raw) {
            Ok(j) => j,
            Err(e) => {
                snap.errors.push(format!(
                    "output line {}: not JSON ({e}): {}",
                    n + 1,
                    &raw[..raw.len().min(200)]
                ));
                continue;
            }
        };
        if line.get("meta").is_some() {
            continue;
        }
        match key_line(&line) {
            Ok((k, st)) => {
                if snap.keys.insert(k.clone(), st).is_some() {
                    snap.errors.push(format!("{}: printed twice", show_key(&k)));
                }
            }
            Err(e) => snap.errors.push(format!("output line {}: {e}", n + 1)),
        }
    }
    snap
}

// ---------------------------------------------------------------------------------------------
// Live server -> Snapshot

/// What a server version can report; decides which commands the snapshot may use.
#[derive(Debug, Clone, Copy)]
pub struct ServerCaps {
    /// PEXPIRETIME exists (7.0+): TTLs are read exactly.
    pub expiretime: bool,
    /// HPEXPIRETIME exists (Valkey 9.0+): per-field TTLs are read.
    pub hash_field_ttl: bool,
}

pub fn probe_caps(con: &mut redis::Connection) -> ServerCaps {
    let has = |con: &mut redis::Connection, name: &str| -> bool {
        let v: RV = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(con)
            .expect("COMMAND INFO");
        matches!(&v, RV::Array(a) if a.first().is_some_and(|x| *x != RV::Nil))
    };
    ServerCaps {
        expiretime: has(con, "PEXPIRETIME"),
        hash_field_ttl: has(con, "HPEXPIRETIME"),
    }
}

pub fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, cmd: &redis::Cmd) -> T {
    cmd.query(con).unwrap_or_else(|e| {
        let packed = cmd.get_packed_command();
        panic!("command {} failed: {e}", preview(&packed))
    })
}

fn rv_bytes(v: &RV) -> Bytes {
    match v {
        RV::BulkString(b) => b.clone(),
        RV::SimpleString(s) => s.as_bytes().to_vec(),
        RV::Int(i) => i.to_string().into_bytes(),
        RV::Okay => b"OK".to_vec(),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

fn rv_str(v: &RV) -> String {
    String::from_utf8(rv_bytes(v)).expect("UTF-8 reply")
}

fn rv_i64(v: &RV) -> i64 {
    match v {
        RV::Int(i) => *i,
        other => rv_str(other)
            .parse()
            .unwrap_or_else(|_| panic!("expected an integer, got {other:?}")),
    }
}

fn rv_arr(v: &RV) -> &[RV] {
    match v {
        RV::Array(a) | RV::Set(a) => a,
        other => panic!("expected an array reply, got {other:?}"),
    }
}

/// A flat `[name, value, name, value ...]` reply (RESP2) or a map (RESP3) as a name lookup.
fn rv_fields(v: &RV) -> BTreeMap<String, RV> {
    match v {
        RV::Map(m) => m.iter().map(|(k, v)| (rv_str(k), v.clone())).collect(),
        other => rv_arr(other)
            .chunks(2)
            .map(|c| (rv_str(&c[0]), c[1].clone()))
            .collect(),
    }
}

fn server_stream(con: &mut redis::Connection, key: &[u8]) -> Stream {
    let range: RV = q(con, redis::cmd("XRANGE").arg(key).arg("-").arg("+"));
    let entries = rv_arr(&range)
        .iter()
        .map(|e| {
            let e = rv_arr(e);
            let fields = rv_arr(&e[1])
                .chunks(2)
                .map(|c| (rv_bytes(&c[0]), rv_bytes(&c[1])))
                .collect();
            (parse_sid(&rv_str(&e[0])).unwrap(), fields)
        })
        .collect();
    // COUNT 0: all entries and all pending entries (the default stops at 10).
    let full: RV = q(
        con,
        redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .arg("FULL")
            .arg("COUNT")
            .arg(0),
    );
    let f = rv_fields(&full);
    let sid = |v: &RV| parse_sid(&rv_str(v)).unwrap();
    let mut groups = BTreeMap::new();
    for g in rv_arr(&f["groups"]) {
        let g = rv_fields(g);
        let entries_read = match g.get("entries-read") {
            None => EntriesRead::NotStored,
            Some(RV::Nil) => EntriesRead::Unknown,
            Some(v) => EntriesRead::Known(rv_i64(v)),
        };
        let pending = rv_arr(&g["pending"])
            .iter()
            .map(|p| {
                let p = rv_arr(p);
                (
                    sid(&p[0]),
                    Pending {
                        consumer: rv_bytes(&p[1]),
                        delivery_time_ms: rv_i64(&p[2]),
                        delivery_count: rv_i64(&p[3]),
                    },
                )
            })
            .collect();
        let consumers = rv_arr(&g["consumers"])
            .iter()
            .map(|c| {
                let c = rv_fields(c);
                (
                    rv_bytes(&c["name"]),
                    Consumer {
                        seen_time_ms: rv_i64(&c["seen-time"]),
                        active_time_ms: c.get("active-time").map(rv_i64),
                    },
                )
            })
            .collect();
        groups.insert(
            rv_bytes(&g["name"]),
            Group {
                last_id: sid(&g["last-delivered-id"]),
                entries_read,
                pending,
                consumers,
            },
        );
    }
    Stream {
        entries,
        length: rv_i64(&f["length"]) as u64,
        last_id: sid(&f["last-generated-id"]),
        first_id: f.get("recorded-first-entry-id").map(sid),
        max_deleted_id: f.get("max-deleted-entry-id").map(sid),
        entries_added: f.get("entries-added").map(|v| rv_i64(v) as u64),
        groups,
    }
}

/// Every key of every database of a live server, read with plain commands.
pub fn snapshot(con: &mut redis::Connection) -> Snapshot {
    let caps = probe_caps(con);
    let dbs: Vec<String> = q(con, redis::cmd("CONFIG").arg("GET").arg("databases"));
    let ndb: i64 = dbs[1].parse().unwrap();
    let mut snap = Snapshot {
        ttl_exact: caps.expiretime,
        ..Default::default()
    };
    for db in 0..ndb {
        let _: () = q(con, redis::cmd("SELECT").arg(db));
        // SCAN may return a key more than once; the set removes repeats.
        let mut keys = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Bytes>) =
                q(con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000));
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for key in keys {
            let st = server_key(con, &key, caps);
            snap.keys.insert((db, key), st);
        }
    }
    let _: () = q(con, redis::cmd("SELECT").arg(0));
    snap
}

fn server_key(con: &mut redis::Connection, key: &[u8], caps: ServerCaps) -> KeyState {
    let ty: String = q(con, redis::cmd("TYPE").arg(key));
    let val = match ty.as_str() {
        "string" => Val::Str(q(con, redis::cmd("GET").arg(key))),
        "list" => Val::List(q(con, redis::cmd("LRANGE").arg(key).arg(0).arg(-1))),
        "set" => Val::Set(q(con, redis::cmd("SMEMBERS").arg(key))),
        "zset" => {
            let flat: Vec<Bytes> = q(
                con,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            );
            // RESP2 scores are text; Rust's parser is exact and knows "inf", "-inf" and "-0".
            Val::ZSet(
                flat.chunks(2)
                    .map(|c| {
                        let s = std::str::from_utf8(&c[1]).unwrap();
                        (
                            c[0].clone(),
                            s.parse::<f64>()
                                .unwrap_or_else(|_| panic!("score {s:?}"))
                                .to_bits(),
                        )
                    })
                    .collect(),
            )
        }
        "hash" => Val::Hash(q(con, redis::cmd("HGETALL").arg(key))),
        "stream" => Val::Stream(Box::new(server_stream(con, key))),
        other => Val::Broken(format!("server type {other:?} not handled by the test")),
    };
    let expire_at_ms = if caps.expiretime {
        let t: i64 = q(con, redis::cmd("PEXPIRETIME").arg(key));
        (t >= 0).then_some(t)
    } else {
        // 6.2 has no PEXPIRETIME: rebuild the deadline from PTTL; compared with a tolerance.
        let t: i64 = q(con, redis::cmd("PTTL").arg(key));
        (t >= 0).then(|| now_ms() + t)
    };
    let mut field_expire_at_ms = BTreeMap::new();
    if caps.hash_field_ttl {
        if let Val::Hash(h) = &val {
            let fields: Vec<&Bytes> = h.keys().collect();
            let mut cmd = redis::cmd("HPEXPIRETIME");
            cmd.arg(key).arg("FIELDS").arg(fields.len());
            for f in &fields {
                cmd.arg(f.as_slice());
            }
            let times: Vec<i64> = q(con, &cmd);
            for (f, t) in fields.into_iter().zip(times) {
                if t >= 0 {
                    field_expire_at_ms.insert(f.clone(), t);
                }
            }
        }
    }
    KeyState {
        ty,
        val,
        expire_at_ms,
        field_expire_at_ms,
        violations: Vec::new(),
    }
}

/// The library code of every loaded function library (FUNCTION LIST WITHCODE), sorted.
pub fn function_libraries(con: &mut redis::Connection) -> Vec<String> {
    let v: RV = q(con, redis::cmd("FUNCTION").arg("LIST").arg("WITHCODE"));
    let mut libs: Vec<String> = rv_arr(&v)
        .iter()
        .map(|lib| rv_str(&rv_fields(lib)["library_code"]))
        .collect();
    libs.sort();
    libs
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// What a comparison may not expect to be equal, and why.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Consumer seen/active times: exact for decoder vs server (same state), but a server that
    /// was rebuilt from commands stamps its consumers with the time of the rebuild.
    pub consumer_times: bool,
    /// Tolerance for `expire_at_ms` when either side rebuilt it from PTTL.
    pub ttl_tolerance_ms: i64,
    /// Group `entries_read`: Redis 7.0 propagates XREADGROUP as XCLAIM ... LASTID without it,
    /// so a replica (a native one too) keeps the value of its full sync.
    pub entries_read: bool,
}

impl Profile {
    pub fn exact(a: &Snapshot, b: &Snapshot) -> Profile {
        Profile {
            consumer_times: true,
            ttl_tolerance_ms: if a.ttl_exact && b.ttl_exact { 0 } else { 1500 },
            entries_read: true,
        }
    }
    pub fn rebuilt(a: &Snapshot, b: &Snapshot) -> Profile {
        Profile {
            consumer_times: false,
            ..Profile::exact(a, b)
        }
    }
}

fn first_diff_bytes(a: &[u8], b: &[u8]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "lengths {} vs {}, first difference at byte {i}: {} vs {}",
        a.len(),
        b.len(),
        preview(a),
        preview(b)
    )
}

fn diff_list(a: &[Bytes], b: &[Bytes]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "lengths {} vs {}, first difference at index {i}: {} vs {}",
        a.len(),
        b.len(),
        a.get(i).map_or("(none)".into(), |x| preview(x)),
        b.get(i).map_or("(none)".into(), |x| preview(x))
    )
}

fn diff_maps<V: PartialEq>(
    a: &BTreeMap<Bytes, V>,
    b: &BTreeMap<Bytes, V>,
    show_v: impl Fn(&V) -> String,
) -> String {
    let mut out = format!("sizes {} vs {}", a.len(), b.len());
    let only_a: Vec<_> = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .take(4)
        .map(|k| preview(k))
        .collect();
    let only_b: Vec<_> = b
        .keys()
        .filter(|k| !a.contains_key(*k))
        .take(4)
        .map(|k| preview(k))
        .collect();
    let changed: Vec<_> = a
        .iter()
        .filter_map(|(k, v)| {
            b.get(k)
                .filter(|w| *w != v)
                .map(|w| format!("{}: {} vs {}", preview(k), show_v(v), show_v(w)))
        })
        .take(4)
        .collect();
    if !only_a.is_empty() {
        let _ = write!(out, "; only left: {}", only_a.join(", "));
    }
    if !only_b.is_empty() {
        let _ = write!(out, "; only right: {}", only_b.join(", "));
    }
    if !changed.is_empty() {
        let _ = write!(out, "; differing: {}", changed.join(", "));
    }
    out
}

fn show_score(bits: &u64) -> String {
    format!("{:?} (0x{bits:016x})", f64::from_bits(*bits))
}

fn diff_stream(a: &Stream, b: &Stream, p: Profile) -> Vec<String> {
    let mut d = Vec::new();
    if a.entries != b.entries {
        let i = a
            .entries
            .iter()
            .zip(&b.entries)
            .position(|(x, y)| x != y)
            .unwrap_or(a.entries.len().min(b.entries.len()));
        let sh = |e: Option<&(Sid, Vec<(Bytes, Bytes)>)>| {
            e.map_or("(none)".into(), |(id, f)| {
                format!(
                    "{id} {{{}}}",
                    f.iter()
                        .map(|(k, v)| format!("{}: {}", preview(k), preview(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        };
        d.push(format!(
            "entries: counts {} vs {}, first difference at index {i}: {} vs {}",
            a.entries.len(),
            b.entries.len(),
            sh(a.entries.get(i)),
            sh(b.entries.get(i))
        ));
    }
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            d.push(format!("{name}: {x} vs {y}"));
        }
    };
    field("length", a.length.to_string(), b.length.to_string());
    field("last_id", a.last_id.to_string(), b.last_id.to_string());
    field(
        "first_id",
        format!("{:?}", a.first_id),
        format!("{:?}", b.first_id),
    );
    field(
        "max_deleted_id",
        format!("{:?}", a.max_deleted_id),
        format!("{:?}", b.max_deleted_id),
    );
    field(
        "entries_added",
        format!("{:?}", a.entries_added),
        format!("{:?}", b.entries_added),
    );
    let names: BTreeSet<&Bytes> = a.groups.keys().chain(b.groups.keys()).collect();
    for name in names {
        let gn = format!("group {}", show(name));
        let (Some(ga), Some(gb)) = (a.groups.get(name), b.groups.get(name)) else {
            d.push(format!(
                "{gn}: present {} vs {}",
                a.groups.contains_key(name),
                b.groups.contains_key(name)
            ));
            continue;
        };
        if ga.last_id != gb.last_id {
            d.push(format!("{gn} last_id: {} vs {}", ga.last_id, gb.last_id));
        }
        if p.entries_read && ga.entries_read != gb.entries_read {
            d.push(format!(
                "{gn} entries_read: {:?} vs {:?}",
                ga.entries_read, gb.entries_read
            ));
        }
        let ids: BTreeSet<&Sid> = ga.pending.keys().chain(gb.pending.keys()).collect();
        let pe = |p: Option<&Pending>| {
            p.map_or("(not pending)".to_string(), |p| {
                format!(
                    "consumer {} delivered at {} ms, {} time(s)",
                    show(&p.consumer),
                    p.delivery_time_ms,
                    p.delivery_count
                )
            })
        };
        for id in ids {
            let (x, y) = (ga.pending.get(id), gb.pending.get(id));
            if x != y {
                d.push(format!("{gn} pending entry {id}: {} vs {}", pe(x), pe(y)));
            }
        }
        let cs: BTreeSet<&Bytes> = ga.consumers.keys().chain(gb.consumers.keys()).collect();
        for c in cs {
            match (ga.consumers.get(c), gb.consumers.get(c)) {
                (Some(x), Some(y)) => {
                    if p.consumer_times && x != y {
                        d.push(format!(
                            "{gn} consumer {}: seen {} ms, active {:?} vs seen {} ms, active {:?}",
                            show(c),
                            x.seen_time_ms,
                            x.active_time_ms,
                            y.seen_time_ms,
                            y.active_time_ms
                        ));
                    }
                }
                (x, y) => d.push(format!(
                    "{gn} consumer {}: present {} vs {}",
                    show(c),
                    x.is_some(),
                    y.is_some()
                )),
            }
        }
    }
    d
}

/// Every difference between two key states, phrased for a failure message.
pub fn diff_key(a: &KeyState, b: &KeyState, p: Profile) -> Vec<String> {
    let mut d: Vec<String> = a.violations.iter().chain(&b.violations).cloned().collect();
    if a.ty != b.ty {
        d.push(format!("type {} vs {}", a.ty, b.ty));
    }
    match (&a.expire_at_ms, &b.expire_at_ms) {
        (Some(x), Some(y)) if (x - y).abs() <= p.ttl_tolerance_ms => {}
        (None, None) => {}
        (x, y) => d.push(format!("expire_at_ms {x:?} vs {y:?}")),
    }
    if a.field_expire_at_ms != b.field_expire_at_ms {
        d.push(format!(
            "field TTLs: {}",
            diff_maps(&a.field_expire_at_ms, &b.field_expire_at_ms, |v| v
                .to_string())
        ));
    }
    match (&a.val, &b.val) {
        (Val::Broken(e), _) => d.push(format!("left value unusable: {e}")),
        (_, Val::Broken(e)) => d.push(format!("right value unusable: {e}")),
        (x, y) if x == y => {}
        (Val::Str(x), Val::Str(y)) => d.push(format!("string {}", first_diff_bytes(x, y))),
        (Val::List(x), Val::List(y)) => d.push(format!("list {}", diff_list(x, y))),
        (Val::Set(x), Val::Set(y)) => {
            let xm = x.iter().map(|k| (k.clone(), ())).collect();
            let ym = y.iter().map(|k| (k.clone(), ())).collect();
            d.push(format!("set {}", diff_maps(&xm, &ym, |_| String::new())));
        }
        (Val::ZSet(x), Val::ZSet(y)) => d.push(format!("zset {}", diff_maps(x, y, show_score))),
        (Val::Hash(x), Val::Hash(y)) => d.push(format!("hash {}", diff_maps(x, y, |v| preview(v)))),
        (Val::Stream(x), Val::Stream(y)) => d.extend(
            diff_stream(x, y, p)
                .into_iter()
                .map(|s| format!("stream {s}")),
        ),
        _ => d.push("values of different kinds".into()),
    }
    d
}

/// Every difference between two snapshots, one line each, naming db and key.
pub fn compare(left: &str, a: &Snapshot, right: &str, b: &Snapshot, p: Profile) -> Vec<String> {
    let mut out: Vec<String> = a.errors.iter().map(|e| format!("{left}: {e}")).collect();
    out.extend(b.errors.iter().map(|e| format!("{right}: {e}")));
    for (k, sa) in &a.keys {
        match b.keys.get(k) {
            None => out.push(format!(
                "{}: {} has it ({}), {} does not",
                show_key(k),
                left,
                sa.ty,
                right
            )),
            Some(sb) => out.extend(
                diff_key(sa, sb, p)
                    .into_iter()
                    .map(|d| format!("{}: {d} ({left} vs {right})", show_key(k))),
            ),
        }
    }
    for (k, sb) in &b.keys {
        if !a.keys.contains_key(k) {
            out.push(format!(
                "{}: {} has it ({}), {} does not",
                show_key(k),
                right,
                sb.ty,
                left
            ));
        }
    }
    out
}

/// Panics listing the differences (the first 60) if there are any.
pub fn assert_no_diffs(context: &str, diffs: &[String]) {
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(60).map(|s| s.as_str()).collect();
        panic!(
            "{context}: {} difference(s):\n  {}",
            diffs.len(),
            shown.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Key text in the line formats (keys, memory)

/// A key as `--format keys` and `--format memory` print it: as is, or (binary, control
/// characters, or a leading quote) in double quotes with redis-cli's escapes.
pub fn unquote_key(s: &str) -> Result<Bytes, String> {
    let Some(body) = s.strip_prefix('"') else {
        return Ok(s.as_bytes().to_vec());
    };
    let body = body
        .strip_suffix('"')
        .ok_or_else(|| format!("unterminated quoted key {s:?}"))?;
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            if b[i] == b'"' {
                return Err(format!("unescaped quote inside quoted key {s:?}"));
            }
            out.push(b[i]);
            i += 1;
            continue;
        }
        let e = *b
            .get(i + 1)
            .ok_or_else(|| format!("dangling backslash in {s:?}"))?;
        i += 2;
        out.push(match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'a' => 7,
            b'b' => 8,
            b'x' => {
                let h = b
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                i += 2;
                h.ok_or_else(|| format!("bad \\x escape in {s:?}"))?
            }
            _ => return Err(format!("unknown escape \\{} in {s:?}", e as char)),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// CSV (the memory report)

/// RFC 4180 rows: quoted fields may hold commas, quotes ("") and newlines.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_start = true;
            }
            '"' => return Err(format!("stray quote in row {}", rows.len() + 1)),
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}
