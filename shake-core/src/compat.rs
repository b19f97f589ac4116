//! Commands newer than the target: what a command of the replication stream becomes on a
//! target that lacks it (an older server, or the other engine). This module owns that
//! knowledge, once: [`RULES`] is the table, one row per command, and [`adapt`] applies it.
//! [`crate::command`] says where a command's keys are; this says whether the target can run it.
//!
//! The rows cover the commands added since Redis 7.4 and Valkey 8 *as the servers propagate
//! them* (checked on Redis 8.2.3 and Valkey 9.1.2): a master rewrites much before it sends it
//! (Redis: `HGETEX` to `HPEXPIREAT`/`HPERSIST`/`HDEL`, `HGETDEL` to `HDEL`, `HEXPIRE` and friends
//! to `HPEXPIREAT`, `HSETEX EX` to `HSETEX PXAT`, `HINCRBYFLOAT` to `HSETEX KEEPTTL`; Valkey:
//! `DELIFEQ` to `DEL`, `HSETEX NX|XX|FNX|FXX` without the conditions, `SET .. IFEQ v PX ..` to
//! `SET .. PXAT`), but sends as they are Redis's `HSETEX`, `XACKDEL`, `XDELEX`, and Valkey's
//! `HGETDEL`, `MSETEX` and `SET .. IFEQ v` (without an expiry). A command a master propagates
//! has already had its effect there, so a condition it carries (FNX, IFEQ, NX ...) held and can
//! be dropped on a target in step; where the effect depends on state the command does not carry
//! (XACKDEL DELREF: every group's references), or on a feature the target lacks entirely (a field
//! TTL on Redis 7.0), the stream stops with one error naming the command, the key and the target.
//!
//! docs/commands.md is the user-facing form of the table.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::rdb::writer::FieldTtlPolicy;

/// Which server a target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Redis,
    Valkey,
}

/// One master of the target: its engine and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    pub engine: Engine,
    pub version: (u32, u32, u32),
}

impl ServerVersion {
    /// From `INFO server` fields: Valkey says `server_name:valkey` and `valkey_version` (its
    /// `redis_version` is a fixed 7.2.4 for compatibility).
    pub fn from_info(info: &HashMap<String, String>) -> Option<ServerVersion> {
        let get = |k: &str| info.get(k).map(|s| s.trim());
        let valkey = get("server_name").is_some_and(|n| n.eq_ignore_ascii_case("valkey"))
            || get("valkey_version").is_some();
        let (engine, v) = if valkey {
            (
                Engine::Valkey,
                get("valkey_version").or(get("redis_version"))?,
            )
        } else {
            (Engine::Redis, get("redis_version")?)
        };
        let mut it = v.split('.').map(|p| p.trim().parse::<u32>().ok());
        let version = (
            it.next()??,
            it.next().flatten().unwrap_or(0),
            it.next().flatten().unwrap_or(0),
        );
        Some(ServerVersion { engine, version })
    }

    fn at_least(&self, redis: Option<(u32, u32)>, valkey: Option<(u32, u32)>) -> bool {
        let want = match self.engine {
            Engine::Redis => redis,
            Engine::Valkey => valkey,
        };
        want.is_some_and(|(maj, min)| (self.version.0, self.version.1) >= (maj, min))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        match self.engine {
            Engine::Redis => write!(f, "Redis {a}.{b}.{c}"),
            Engine::Valkey => write!(f, "Valkey {a}.{b}.{c}"),
        }
    }
}

/// What the target runs, as far as the stream's commands are concerned.
#[derive(Debug, Clone)]
pub struct TargetCaps {
    /// Every master's version (a feature counts only when all have it).
    pub servers: Vec<ServerVersion>,
    /// The modules every master loads (`MODULE LIST`, lowercase); `None` when a master would not
    /// say.
    pub modules: Option<BTreeSet<String>>,
    /// `--field-ttls`: what a field TTL becomes on a target without field TTLs.
    pub field_ttls: FieldTtlPolicy,
}

/// A capability some targets lack. The versions are the first release with it; where a
/// release is not known for sure, the later one is claimed (under-claiming only costs a rewrite
/// that was not needed, and every rewrite here is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Hash field TTLs (`HPEXPIREAT`, `HPERSIST`, ...): Redis 7.4, Valkey 9.0.
    FieldTtls,
    /// `HSETEX`, `HGETEX`: Redis 8.0, Valkey 9.0.
    HashSetEx,
    /// `HGETDEL`: Redis 8.0, Valkey 9.1.
    HashGetDel,
    /// `SET ... IFEQ value`: Valkey 8.1, Redis 8.4.
    SetIfEq,
    /// `SET ... IFNE value | IFDEQ digest | IFDNE digest`: Redis 8.4.
    SetDigestConditions,
    /// `DELIFEQ`: Valkey 9.0.
    DelIfEq,
    /// `DELEX`: Redis 8.4.
    DelEx,
    /// `MSETEX`: Redis 8.4, Valkey 9.1.
    MSetEx,
    /// `XACKDEL`, `XDELEX` (stream deletion policies): Redis 8.2.
    StreamDeletePolicies,
    /// Vector sets (`VADD`, ...): the `vectorset` module (built into Redis 8).
    VectorSets,
}

impl Feature {
    /// The servers that have it, for messages.
    pub fn servers(self) -> &'static str {
        match self {
            Feature::FieldTtls => "Redis 7.4+, Valkey 9.0+",
            Feature::HashSetEx => "Redis 8.0+, Valkey 9.0+",
            Feature::HashGetDel => "Redis 8.0+, Valkey 9.1+",
            Feature::SetIfEq => "Valkey 8.1+, Redis 8.4+",
            Feature::SetDigestConditions => "Redis 8.4+",
            Feature::DelIfEq => "Valkey 9.0+",
            Feature::DelEx => "Redis 8.4+",
            Feature::MSetEx => "Redis 8.4+, Valkey 9.1+",
            Feature::StreamDeletePolicies => "Redis 8.2+",
            Feature::VectorSets => "Redis 8.0+ (the vectorset module)",
        }
    }

    fn on(self, s: &ServerVersion) -> bool {
        let (r, v) = match self {
            Feature::FieldTtls => (Some((7, 4)), Some((9, 0))),
            Feature::HashSetEx => (Some((8, 0)), Some((9, 0))),
            Feature::HashGetDel => (Some((8, 0)), Some((9, 1))),
            Feature::SetIfEq => (Some((8, 4)), Some((8, 1))),
            Feature::SetDigestConditions | Feature::DelEx => (Some((8, 4)), None),
            Feature::DelIfEq => (None, Some((9, 0))),
            Feature::MSetEx => (Some((8, 4)), Some((9, 1))),
            Feature::StreamDeletePolicies => (Some((8, 2)), None),
            Feature::VectorSets => (Some((8, 0)), None),
        };
        s.at_least(r, v)
    }
}

impl TargetCaps {
    /// Asks every master of `target` (`INFO server`, `MODULE LIST`). `None` when a master's
    /// version is not recognised: then commands go as they come and the target judges them.
    pub async fn read<T: Send>(
        target: &mut crate::client::Target<T>,
        field_ttls: FieldTtlPolicy,
    ) -> Result<Option<TargetCaps>, crate::client::ClientError> {
        let mut servers = Vec::new();
        for (_, reply) in target.broadcast(&["INFO", "server"]).await? {
            let text = reply.as_text().unwrap_or_default();
            match ServerVersion::from_info(&crate::net::parse_info(&text)) {
                Some(v) => servers.push(v),
                None => return Ok(None),
            }
        }
        if servers.is_empty() {
            return Ok(None);
        }
        let modules = crate::apply::target_modules(target).await;
        Ok(Some(TargetCaps {
            servers,
            modules,
            field_ttls,
        }))
    }

    pub fn has(&self, f: Feature) -> bool {
        if f == Feature::VectorSets {
            if let Some(m) = &self.modules {
                return m.contains("vectorset");
            }
        }
        !self.servers.is_empty() && self.servers.iter().all(|s| f.on(s))
    }

    /// The target's version(s), for messages: `Redis 7.0.15`.
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = self.servers.iter().map(|s| s.to_string()).collect();
        names.dedup();
        if names.is_empty() {
            "an unknown server".into()
        } else {
            names.join(" / ")
        }
    }
}

/// What a command becomes on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adapted {
    /// The target runs it as it came.
    AsIs,
    /// These commands instead (none: nothing to do on this target), with the same effect.
    Rewritten(Vec<Vec<Vec<u8>>>),
    /// No equivalent: why, in words that name the target's version and the fix.
    Refused(String),
}

/// One row of the table.
pub struct Rule {
    /// The command, lowercase.
    pub name: &'static str,
    /// What the target must have to run the command as it is (`None`: this form needs nothing).
    pub needs: fn(&[&[u8]]) -> Option<Feature>,
    /// What it becomes on a target without that.
    pub otherwise: fn(&[&[u8]], &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String>,
    /// The same, in words (docs/commands.md repeats it).
    pub summary: &'static str,
}

/// The table, sorted by name.
pub static RULES: &[Rule] = &[
    Rule {
        name: "delex",
        needs: |_| Some(Feature::DelEx),
        otherwise: del_key,
        summary: "DEL key (the master deleted it: its condition held)",
    },
    Rule {
        name: "delifeq",
        needs: |_| Some(Feature::DelIfEq),
        otherwise: del_key,
        summary: "DEL key (the master deleted it: its condition held)",
    },
    Rule {
        name: "hexpire",
        needs: |_| Some(Feature::FieldTtls),
        otherwise: field_ttl_only,
        summary: "refused; with --field-ttls drop, nothing",
    },
    Rule {
        name: "hexpireat",
        needs: |_| Some(Feature::FieldTtls),
        otherwise: field_ttl_only,
        summary: "refused; with --field-ttls drop, nothing",
    },
    Rule {
        name: "hgetdel",
        needs: |_| Some(Feature::HashGetDel),
        otherwise: hgetdel,
        summary: "HDEL key field...",
    },
    Rule {
        name: "hgetex",
        needs: |_| Some(Feature::HashSetEx),
        otherwise: hgetex,
        summary: "PERSIST: HPERSIST (nothing without field TTLs); a TTL: HPEXPIREAT / HPEXPIRE (without field TTLs: refused, or nothing with --field-ttls drop); no option: nothing",
    },
    Rule {
        name: "hpersist",
        needs: |_| Some(Feature::FieldTtls),
        otherwise: |_, _| Ok(Vec::new()),
        summary: "nothing (the target's fields have no TTLs)",
    },
    Rule {
        name: "hpexpire",
        needs: |_| Some(Feature::FieldTtls),
        otherwise: field_ttl_only,
        summary: "refused; with --field-ttls drop, nothing",
    },
    Rule {
        name: "hpexpireat",
        needs: |_| Some(Feature::FieldTtls),
        otherwise: field_ttl_only,
        summary: "refused; with --field-ttls drop, nothing",
    },
    Rule {
        name: "hsetex",
        needs: |_| Some(Feature::HashSetEx),
        otherwise: hsetex,
        summary: "HSET key field value... (no TTL option, or KEEPTTL on a target without field TTLs); with a TTL: HSET + HPEXPIREAT (or HPEXPIRE) on a target with field TTLs, refused without (HSET alone with --field-ttls drop); KEEPTTL on a target with field TTLs but no HSETEX (Redis 7.4): refused",
    },
    Rule {
        name: "msetex",
        needs: |_| Some(Feature::MSetEx),
        otherwise: msetex,
        summary: "one SET key value [PXAT t | PX ms | EXAT t | EX s | KEEPTTL] per key (NX/XX dropped: the master set them)",
    },
    Rule {
        name: "set",
        needs: set_needs,
        otherwise: set_without_condition,
        summary: "SET without its IFEQ/IFNE/IFDEQ/IFDNE condition (the master set it: the condition held)",
    },
    Rule {
        name: "vadd",
        needs: |_| Some(Feature::VectorSets),
        otherwise: vector_set,
        summary: "refused (no vector sets)",
    },
    Rule {
        name: "vrem",
        needs: |_| Some(Feature::VectorSets),
        otherwise: vector_set,
        summary: "refused (no vector sets)",
    },
    Rule {
        name: "vsetattr",
        needs: |_| Some(Feature::VectorSets),
        otherwise: vector_set,
        summary: "refused (no vector sets)",
    },
    Rule {
        name: "xackdel",
        needs: |_| Some(Feature::StreamDeletePolicies),
        otherwise: xackdel,
        summary: "KEEPREF (the default): XACK key group id... + XDEL key id...; DELREF, ACKED: refused",
    },
    Rule {
        name: "xdelex",
        needs: |_| Some(Feature::StreamDeletePolicies),
        otherwise: xdelex,
        summary: "KEEPREF (the default): XDEL key id...; DELREF, ACKED: refused",
    },
];

/// Longest name in [`RULES`]: a longer command has no row, without a lookup.
const MAX_NAME: usize = 16;

/// The row for a command name (any case), if it has one.
pub fn rule(name: &[u8]) -> Option<&'static Rule> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    RULES
        .binary_search_by(|r| r.name.as_bytes().cmp(lower))
        .ok()
        .map(|i| &RULES[i])
}

/// What `argv` (the command name first) becomes on a target with `caps`.
pub fn adapt(argv: &[&[u8]], caps: &TargetCaps) -> Adapted {
    let Some(r) = argv.first().and_then(|n| rule(n)) else {
        return Adapted::AsIs;
    };
    let Some(feature) = (r.needs)(argv) else {
        return Adapted::AsIs;
    };
    if caps.has(feature) {
        return Adapted::AsIs;
    }
    match (r.otherwise)(argv, caps) {
        Ok(cmds) => Adapted::Rewritten(cmds),
        Err(why) => Adapted::Refused(format!(
            "{why}; the target is {} ({} has {})",
            caps.describe(),
            r.name.to_ascii_uppercase(),
            feature.servers()
        )),
    }
}

fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

fn cmd(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// A TTL option of HSETEX/HGETEX/MSETEX/SET: the option word (EX, PX, EXAT, PXAT) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ttl<'a> {
    None,
    Keep,
    Persist,
    Set(&'a [u8], &'a [u8]),
}

/// `FIELDS n f [v] ...` from `at`: the fields (and values when `with_values`), checked.
fn fields<'a>(argv: &[&'a [u8]], at: usize, with_values: bool) -> Result<Vec<&'a [u8]>, String> {
    let n = argv
        .get(at + 1)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or("malformed: no field count after FIELDS")?;
    let per = if with_values { 2 } else { 1 };
    let rest = &argv[(at + 2).min(argv.len())..];
    if n == 0 || rest.len() != n.saturating_mul(per) {
        return Err(format!(
            "malformed: FIELDS {n} with {} arguments after it",
            rest.len()
        ));
    }
    Ok(rest.to_vec())
}

/// The options of HSETEX/HGETEX before `FIELDS`: the TTL and where FIELDS is.
fn hash_options<'a>(argv: &[&'a [u8]]) -> Result<(Ttl<'a>, usize), String> {
    let mut ttl = Ttl::None;
    let mut i = 2;
    while i < argv.len() {
        let a = argv[i];
        if is(a, "FIELDS") {
            return Ok((ttl, i));
        } else if ["EX", "PX", "EXAT", "PXAT"].iter().any(|w| is(a, w)) {
            let v = argv
                .get(i + 1)
                .ok_or("malformed: a TTL option without a value")?;
            ttl = Ttl::Set(a, v);
            i += 2;
        } else if is(a, "KEEPTTL") {
            ttl = Ttl::Keep;
            i += 1;
        } else if is(a, "PERSIST") {
            ttl = Ttl::Persist;
            i += 1;
        } else if ["NX", "XX", "FNX", "FXX"].iter().any(|w| is(a, w)) {
            // A condition the master evaluated: it held, since the command was propagated.
            i += 1;
        } else {
            return Err(format!("unknown option {}", crate::text::quote_bytes(a)));
        }
    }
    Err("malformed: no FIELDS".into())
}

/// The field-TTL command for `fields` of `key`: HPEXPIREAT for absolute times, HPEXPIRE for
/// relative ones (seconds made milliseconds).
fn field_ttl_command(key: &[u8], ttl: Ttl<'_>, fields: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
    let Ttl::Set(word, v) = ttl else {
        return Err("no TTL".into());
    };
    let n: i64 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed TTL {}", crate::text::quote_bytes(v)))?;
    let secs = is(word, "EX") || is(word, "EXAT");
    let ms = if secs { n.checked_mul(1000) } else { Some(n) }.ok_or("TTL out of range")?;
    let verb: &[u8] = if is(word, "EXAT") || is(word, "PXAT") {
        b"HPEXPIREAT"
    } else {
        b"HPEXPIRE"
    };
    let mut c = cmd(&[verb, key, ms.to_string().as_bytes(), b"FIELDS"]);
    c.push(fields.len().to_string().into_bytes());
    c.extend(fields.iter().map(|f| f.to_vec()));
    Ok(c)
}

const NO_FIELD_TTLS: &str =
    "the target has no hash field TTLs, so the fields' TTLs cannot be kept (--field-ttls drop writes the fields without them)";

fn del_key(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let key = argv.get(1).ok_or("malformed: no key")?;
    Ok(vec![cmd(&[b"DEL", key])])
}

fn field_ttl_only(_: &[&[u8]], caps: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    match caps.field_ttls {
        FieldTtlPolicy::Drop => Ok(Vec::new()),
        FieldTtlPolicy::Refuse => Err(NO_FIELD_TTLS.into()),
    }
}

fn hgetdel(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let key = argv.get(1).ok_or("malformed: no key")?;
    if !argv.get(2).is_some_and(|a| is(a, "FIELDS")) {
        return Err("malformed: no FIELDS".into());
    }
    let mut c = cmd(&[b"HDEL", key]);
    c.extend(fields(argv, 2, false)?.iter().map(|f| f.to_vec()));
    Ok(vec![c])
}

fn hgetex(argv: &[&[u8]], caps: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let key = argv.get(1).ok_or("malformed: no key")?;
    let (ttl, at) = hash_options(argv)?;
    let f = fields(argv, at, false)?;
    let ttls = caps.has(Feature::FieldTtls);
    Ok(match ttl {
        Ttl::None | Ttl::Keep => Vec::new(),
        Ttl::Persist if !ttls => Vec::new(),
        Ttl::Persist => {
            let mut c = cmd(&[b"HPERSIST", key, b"FIELDS"]);
            c.push(f.len().to_string().into_bytes());
            c.extend(f.iter().map(|x| x.to_vec()));
            vec![c]
        }
        Ttl::Set(..) if ttls => vec![field_ttl_command(key, ttl, &f)?],
        Ttl::Set(..) => return field_ttl_only(argv, caps),
    })
}

fn hsetex(argv: &[&[u8]], caps: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let key = argv.get(1).ok_or("malformed: no key")?;
    let (ttl, at) = hash_options(argv)?;
    let pairs = fields(argv, at, true)?;
    let mut hset = cmd(&[b"HSET", key]);
    hset.extend(pairs.iter().map(|x| x.to_vec()));
    let ttls = caps.has(Feature::FieldTtls);
    match ttl {
        // HSETEX without a TTL option clears the fields' TTLs, as HSET does.
        Ttl::None | Ttl::Persist => Ok(vec![hset]),
        // Without field TTLs on the target no field has one to keep.
        Ttl::Keep if !ttls => Ok(vec![hset]),
        Ttl::Keep => Err(
            "KEEPTTL: HSET would clear the fields' TTLs, and the target has no HSETEX to keep them"
                .into(),
        ),
        Ttl::Set(..) if ttls => {
            let names: Vec<&[u8]> = pairs.iter().step_by(2).copied().collect();
            Ok(vec![hset, field_ttl_command(key, ttl, &names)?])
        }
        Ttl::Set(..) => match caps.field_ttls {
            FieldTtlPolicy::Drop => Ok(vec![hset]),
            FieldTtlPolicy::Refuse => Err(NO_FIELD_TTLS.into()),
        },
    }
}

fn msetex(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let n = argv
        .get(1)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .ok_or("malformed: no key count")?;
    let end = n
        .checked_mul(2)
        .and_then(|x| x.checked_add(2))
        .filter(|&e| e <= argv.len())
        .ok_or("malformed: fewer keys and values than the count says")?;
    let mut ttl = Ttl::None;
    let mut i = end;
    while i < argv.len() {
        let a = argv[i];
        if ["EX", "PX", "EXAT", "PXAT"].iter().any(|w| is(a, w)) {
            let v = argv
                .get(i + 1)
                .ok_or("malformed: a TTL option without a value")?;
            ttl = Ttl::Set(a, v);
            i += 2;
        } else if is(a, "KEEPTTL") {
            ttl = Ttl::Keep;
            i += 1;
        } else if is(a, "NX") || is(a, "XX") {
            i += 1;
        } else {
            return Err(format!("unknown option {}", crate::text::quote_bytes(a)));
        }
    }
    Ok(argv[2..end]
        .chunks(2)
        .map(|kv| {
            let mut c = cmd(&[b"SET", kv[0], kv[1]]);
            match ttl {
                Ttl::Set(w, v) => c.extend([w.to_vec(), v.to_vec()]),
                Ttl::Keep => c.push(b"KEEPTTL".to_vec()),
                Ttl::None | Ttl::Persist => {}
            }
            c
        })
        .collect())
}

/// Which condition a SET carries, as the feature it needs.
fn set_needs(argv: &[&[u8]]) -> Option<Feature> {
    let mut need = None;
    for a in argv.iter().skip(3) {
        if is(a, "IFEQ") {
            need = need.or(Some(Feature::SetIfEq));
        } else if is(a, "IFNE") || is(a, "IFDEQ") || is(a, "IFDNE") {
            need = Some(Feature::SetDigestConditions);
        }
    }
    need
}

fn set_without_condition(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    if argv.len() < 3 {
        return Err("malformed: no value".into());
    }
    let mut out = cmd(&argv[..3]);
    let mut i = 3;
    while i < argv.len() {
        let a = argv[i];
        if ["IFEQ", "IFNE", "IFDEQ", "IFDNE"].iter().any(|w| is(a, w)) {
            i += 2;
            continue;
        }
        // Options with a value travel with it (a value could read "IFEQ").
        let with_value = ["EX", "PX", "EXAT", "PXAT"].iter().any(|w| is(a, w));
        out.push(a.to_vec());
        if with_value {
            if let Some(v) = argv.get(i + 1) {
                out.push(v.to_vec());
            }
            i += 1;
        }
        i += 1;
    }
    Ok(vec![out])
}

fn vector_set(_: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    Err(
        "the target has no vector sets (the vectorset module of Redis 8): there is no equivalent"
            .into(),
    )
}

/// `[KEEPREF|DELREF|ACKED] IDS n id...` from `at`: the policy word (if any) and the ids.
fn stream_ids<'a>(
    argv: &[&'a [u8]],
    at: usize,
) -> Result<(Option<&'a [u8]>, Vec<&'a [u8]>), String> {
    let mut i = at;
    let mut policy = None;
    if let Some(a) = argv.get(i) {
        if !is(a, "IDS") {
            policy = Some(*a);
            i += 1;
        }
    }
    if !argv.get(i).is_some_and(|a| is(a, "IDS")) {
        return Err("malformed: no IDS".into());
    }
    let ids = fields(argv, i, false)?;
    Ok((policy, ids))
}

fn keepref_only(policy: Option<&[u8]>) -> Result<(), String> {
    match policy {
        None => Ok(()),
        Some(p) if is(p, "KEEPREF") => Ok(()),
        Some(p) if is(p, "DELREF") => Err("DELREF also removes the entries from every consumer group's pending list, which the command does not name, and the target has no command for it".into()),
        Some(p) if is(p, "ACKED") => Err("ACKED deletes only the entries every consumer group has acknowledged, a decision that depends on the groups' state and that the target has no command for".into()),
        Some(p) => Err(format!("unknown option {}", crate::text::quote_bytes(p))),
    }
}

fn xackdel(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let (Some(key), Some(group)) = (argv.get(1), argv.get(2)) else {
        return Err("malformed: no key or group".into());
    };
    let (policy, ids) = stream_ids(argv, 3)?;
    keepref_only(policy)?;
    let mut ack = cmd(&[b"XACK", key, group]);
    ack.extend(ids.iter().map(|x| x.to_vec()));
    let mut del = cmd(&[b"XDEL", key]);
    del.extend(ids.iter().map(|x| x.to_vec()));
    Ok(vec![ack, del])
}

fn xdelex(argv: &[&[u8]], _: &TargetCaps) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let key = argv.get(1).ok_or("malformed: no key")?;
    let (policy, ids) = stream_ids(argv, 2)?;
    keepref_only(policy)?;
    let mut del = cmd(&[b"XDEL", key]);
    del.extend(ids.iter().map(|x| x.to_vec()));
    Ok(vec![del])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(engine: Engine, v: (u32, u32, u32), drop: bool) -> TargetCaps {
        TargetCaps {
            servers: vec![ServerVersion { engine, version: v }],
            modules: Some(BTreeSet::new()),
            field_ttls: if drop {
                FieldTtlPolicy::Drop
            } else {
                FieldTtlPolicy::Refuse
            },
        }
    }

    fn words(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    fn run(s: &str, c: &TargetCaps) -> Adapted {
        let w = words(s);
        let argv: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        adapt(&argv, c)
    }

    fn rewritten(s: &str, c: &TargetCaps) -> Vec<String> {
        match run(s, c) {
            Adapted::Rewritten(cmds) => cmds
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect(),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn table_is_sorted_and_names_fit() {
        for w in RULES.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for r in RULES {
            assert!(r.name.len() <= MAX_NAME);
            assert!(
                crate::command::command_info(r.name.as_bytes()).is_some(),
                "{} is not in the command table",
                r.name
            );
        }
    }

    #[test]
    fn versions_from_info() {
        let info = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let v = ServerVersion::from_info(&info(&[
            ("redis_version", "7.2.4"),
            ("server_name", "valkey"),
            ("valkey_version", "9.1.2"),
        ]))
        .unwrap();
        assert_eq!(v.to_string(), "Valkey 9.1.2");
        let r = ServerVersion::from_info(&info(&[("redis_version", "8.2.3")])).unwrap();
        assert_eq!(r.to_string(), "Redis 8.2.3");
    }

    #[test]
    fn as_is_where_the_target_has_it() {
        let r82 = caps(Engine::Redis, (8, 2, 3), false);
        let v91 = caps(Engine::Valkey, (9, 1, 2), false);
        for c in [&r82, &v91] {
            assert_eq!(run("HSETEX h PXAT 1 FIELDS 1 f v", c), Adapted::AsIs);
            assert_eq!(run("HPEXPIREAT h 1 FIELDS 1 f", c), Adapted::AsIs);
            assert_eq!(run("HGETDEL h FIELDS 1 f", c), Adapted::AsIs);
            assert_eq!(run("SET k v PXAT 5", c), Adapted::AsIs);
        }
        assert_eq!(run("XACKDEL s g IDS 1 1-1", &r82), Adapted::AsIs);
        assert_eq!(run("SET k v IFEQ x", &v91), Adapted::AsIs);
        assert_eq!(run("MSETEX 1 k v PXAT 5", &v91), Adapted::AsIs);
        assert_eq!(run("DELIFEQ k v", &v91), Adapted::AsIs);
    }

    #[test]
    fn rewrites() {
        let r70 = caps(Engine::Redis, (7, 0, 15), false);
        let r74 = caps(Engine::Redis, (7, 4, 0), false);
        let r82 = caps(Engine::Redis, (8, 2, 3), false);
        let v91 = caps(Engine::Valkey, (9, 1, 2), false);
        assert_eq!(
            rewritten("HSETEX h FNX PXAT 99 FIELDS 2 a 1 b 2", &r74),
            ["HSET h a 1 b 2", "HPEXPIREAT h 99 FIELDS 2 a b"]
        );
        assert_eq!(
            rewritten("HSETEX h EX 5 FIELDS 1 a 1", &r74),
            ["HSET h a 1", "HPEXPIRE h 5000 FIELDS 1 a"]
        );
        assert_eq!(
            rewritten("HSETEX h KEEPTTL FIELDS 1 fl 4.5", &r70),
            ["HSET h fl 4.5"]
        );
        assert_eq!(rewritten("HSETEX h FIELDS 1 a 1", &r70), ["HSET h a 1"]);
        assert_eq!(rewritten("HGETDEL h FIELDS 2 a b", &r70), ["HDEL h a b"]);
        assert_eq!(
            rewritten("HGETEX h PERSIST FIELDS 1 a", &r74),
            ["HPERSIST h FIELDS 1 a"]
        );
        assert!(rewritten("HGETEX h PERSIST FIELDS 1 a", &r70).is_empty());
        assert!(rewritten("HPERSIST h FIELDS 1 a", &r70).is_empty());
        assert_eq!(
            rewritten("SET k v IFEQ old PXAT 9", &r82),
            ["SET k v PXAT 9"]
        );
        assert_eq!(rewritten("SET k IFEQ IFEQ IFEQ", &r70), ["SET k IFEQ"]);
        assert_eq!(rewritten("SET k v IFDEQ abc", &v91), ["SET k v"]);
        assert_eq!(rewritten("DELIFEQ k v", &r82), ["DEL k"]);
        assert_eq!(rewritten("DELEX k IFEQ v", &v91), ["DEL k"]);
        assert_eq!(
            rewritten("MSETEX 2 a 1 b 2 NX PXAT 77", &r82),
            ["SET a 1 PXAT 77", "SET b 2 PXAT 77"]
        );
        assert_eq!(rewritten("MSETEX 1 a 1 KEEPTTL", &r70), ["SET a 1 KEEPTTL"]);
        assert_eq!(
            rewritten("XACKDEL s g IDS 2 1-1 2-1", &v91),
            ["XACK s g 1-1 2-1", "XDEL s 1-1 2-1"]
        );
        assert_eq!(
            rewritten("XDELEX s KEEPREF IDS 1 1-1", &v91),
            ["XDEL s 1-1"]
        );
        let drop70 = caps(Engine::Redis, (7, 0, 15), true);
        assert_eq!(
            rewritten("HSETEX h PXAT 9 FIELDS 1 a 1", &drop70),
            ["HSET h a 1"]
        );
        assert!(rewritten("HPEXPIREAT h 9 FIELDS 1 a", &drop70).is_empty());
    }

    #[test]
    fn refusals_name_the_target() {
        let r70 = caps(Engine::Redis, (7, 0, 15), false);
        let r74 = caps(Engine::Redis, (7, 4, 0), false);
        let v91 = caps(Engine::Valkey, (9, 1, 2), false);
        for (c, cmd, want) in [
            (&r70, "HSETEX h PXAT 9 FIELDS 1 a 1", "no hash field TTLs"),
            (&r70, "HPEXPIREAT h 9 FIELDS 1 a", "no hash field TTLs"),
            (&r74, "HSETEX h KEEPTTL FIELDS 1 a 1", "KEEPTTL"),
            (&v91, "XACKDEL s g DELREF IDS 1 1-1", "DELREF"),
            (&v91, "XDELEX s ACKED IDS 1 1-1", "ACKED"),
            (&v91, "VADD v VALUES 1 0.5 e", "vector sets"),
            (&r70, "HSETEX h FIELDS 3 a 1", "malformed"),
        ] {
            match run(cmd, c) {
                Adapted::Refused(why) => {
                    assert!(why.contains(want), "{cmd}: {why}");
                    assert!(why.contains(&c.describe()), "{cmd}: {why}");
                }
                other => panic!("{cmd}: {other:?}"),
            }
        }
    }
}
