//! Redis commands as they travel in a master's replication stream: this module owns that
//! knowledge, once.
//!
//! - [`parse_command`] cuts one command out of the stream (a RESP2 array of bulk strings, the
//!   only form a master sends) without copying it, and says exactly how many bytes it took, so
//!   the replication offset advances by the same amount;
//! - [`command_info`] knows every command a Redis 6.2/7.x/8 or Valkey 8/9 master can propagate
//!   (and the read-only ones, so that "known" and "unknown" stay distinct): where its keys are
//!   ([`KeySpec`]) and what a replica-like consumer must do with it ([`Kind`]);
//! - [`command_keys`] turns an argv into the indexes of its keys, for routing to a cluster slot
//!   and for key filters.
//!
//! What a command becomes on a target that lacks it (an older server, the other engine) is
//! [`crate::compat`]'s table, next to this one.
//!
//! The key positions follow the servers' own key specs (`COMMAND INFO`, `COMMAND GETKEYS`); the
//! integration test `tests/tests/command_table.rs` holds the table against real servers.
//!
//! Not covered: module commands (JSON.SET, TS.ADD, BF.ADD, ... of Redis Stack / Redis 8's
//! bundled modules other than vector sets) are unknown here, and [`command_keys`] says so; the
//! caller decides what to do with them.

use std::ops::Range;

/// One command cut out of the replication stream by [`parse_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    /// Where each argument (the command name first) lies in the parsed buffer.
    pub args: Vec<Range<usize>>,
    /// Bytes of the whole frame, from `*` to the last CRLF: what the replication offset advances.
    pub len: usize,
}

impl ParsedCommand {
    /// The arguments as slices of `buf`, the buffer this command was parsed from.
    pub fn argv<'a>(&self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        self.args.iter().map(|r| &buf[r.clone()]).collect()
    }
}

/// Digits a length may have: `u64::MAX` has 20. More is malformed, not "incomplete".
const MAX_DIGITS: usize = 20;
/// Ranges reserved up front; beyond this the Vec grows as arguments are actually seen, so a
/// declared count never sizes an allocation.
const ARGS_PREALLOC: usize = 16;

/// Parses one command from the start of `buf`: `*<n>\r\n` followed by `n` times
/// `$<len>\r\n<bytes>\r\n`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more and call again with the
/// same start), `Ok(Some(..))` with the argument ranges and the frame's length, or `Err` with one
/// line naming what is malformed and where (bytes counted from the frame's start): anything but
/// `*` first (masters send no inline commands; the `\n` keep-alives come before the RDB, not in
/// the command stream), a length that is not a non-negative decimal, a missing CRLF, more than
/// `max_args` arguments or a bulk longer than `max_bulk`. `*0\r\n` parses to no arguments (Redis
/// itself skips such a frame).
pub fn parse_command(
    buf: &[u8],
    max_args: usize,
    max_bulk: usize,
) -> Result<Option<ParsedCommand>, String> {
    parse_command_needing(buf, max_args, max_bulk, &mut 0)
}

/// [`parse_command`], which also says, for a frame `buf` holds only part of, how long the frame
/// is known to be at least (`need`): a caller can make room for a long argument once, instead
/// of growing its buffer step by step as the bytes come.
pub fn parse_command_needing(
    buf: &[u8],
    max_args: usize,
    max_bulk: usize,
    need: &mut usize,
) -> Result<Option<ParsedCommand>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Err(format!(
            "command stream: expected an array ('*') at the start of a command, found {}",
            show_byte(first)
        ));
    }
    let Some((count, mut pos)) = read_length(buf, 1, "the argument count")? else {
        return Ok(None);
    };
    if count > max_args as u64 {
        return Err(format!(
            "command stream: command of {count} arguments, more than the limit of {max_args}"
        ));
    }
    let count = count as usize;
    let mut args = Vec::with_capacity(count.min(ARGS_PREALLOC));
    for i in 0..count {
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        if marker != b'$' {
            return Err(format!(
                "command stream: expected a bulk string ('$') for argument {i} at byte {pos} \
                 of the command, found {}",
                show_byte(marker)
            ));
        }
        let Some((len, start)) = read_length(buf, pos + 1, "a bulk length")? else {
            return Ok(None);
        };
        if len > max_bulk as u64 {
            return Err(format!(
                "command stream: argument {i} of {len} bytes, more than the limit of {max_bulk}"
            ));
        }
        // len <= max_bulk fits usize; the sums only overflow with absurd limits.
        let end = start
            .checked_add(len as usize)
            .ok_or("command stream: bulk length overflows the address space")?;
        let Some(after) = end.checked_add(2) else {
            return Err("command stream: bulk length overflows the address space".into());
        };
        if after > buf.len() {
            *need = after;
            return Ok(None);
        }
        if &buf[end..after] != b"\r\n" {
            return Err(format!(
                "command stream: argument {i} ({len} bytes) is not followed by CRLF at byte \
                 {end} of the command"
            ));
        }
        args.push(start..end);
        pos = after;
    }
    Ok(Some(ParsedCommand { args, len: pos }))
}

/// Reads the decimal after a `*` or `$` marker at `at`, up to and including its CRLF: the value
/// and the position after the CRLF, or `None` when the buffer ends first.
fn read_length(buf: &[u8], at: usize, what: &str) -> Result<Option<(u64, usize)>, String> {
    let mut value: u64 = 0;
    let mut pos = at;
    loop {
        let Some(&c) = buf.get(pos) else {
            return Ok(None);
        };
        match c {
            b'0'..=b'9' => {
                if pos - at >= MAX_DIGITS {
                    return Err(format!(
                        "command stream: {what} at byte {at} of the command has too many digits"
                    ));
                }
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .ok_or_else(|| {
                        format!("command stream: {what} at byte {at} of the command overflows")
                    })?;
                pos += 1;
            }
            b'\r' if pos > at => {
                return match buf.get(pos + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((value, pos + 2))),
                    Some(&other) => Err(format!(
                        "command stream: {what} at byte {at} of the command ends in CR \
                         followed by {} instead of LF",
                        show_byte(other)
                    )),
                };
            }
            other => {
                return Err(format!(
                    "command stream: {what} at byte {at} of the command is not a non-negative \
                     decimal (found {} at byte {pos})",
                    show_byte(other)
                ));
            }
        }
    }
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// What a command is, as far as following a replication stream is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Changes the data under its keys (or is propagated because it may, like PFCOUNT updating
    /// its cached cardinality): apply it where its keys live, subject to key filters and the db
    /// mapping.
    Write,
    /// Changes nothing; a master does not propagate it. Known so that it is not "unknown".
    Read,
    /// `SELECT db`: the database of the commands that follow; map it, apply nothing.
    Select,
    /// `MULTI`: the commands up to `EXEC` are one transaction. Keep them one on the target where
    /// they can be (all on one node).
    Multi,
    /// `EXEC`: the end of a transaction.
    Exec,
    /// `DISCARD`: a transaction abandoned (not sent by masters, but found in AOF-like streams).
    Discard,
    /// `PING`: the master's keep-alive. Counts in the offset, applies nothing.
    Ping,
    /// `REPLCONF` (`GETACK *`): the master asks for an acknowledgement now; answer with
    /// `REPLCONF ACK <offset>`, apply nothing.
    ReplConf,
    /// `PUBLISH channel message` and `SPUBLISH shardchannel message`, propagated for the
    /// replicas' subscribers. The channel is not a key (no key filter applies, and
    /// [`command_keys`] returns none, as `COMMAND GETKEYS` does), but SPUBLISH's channel
    /// (`args[1]`) hashes to a slot like a key: route it by that slot.
    Publish,
    /// `FLUSHALL [ASYNC|SYNC]`: empties every database (every master of a cluster target).
    FlushAll,
    /// `FLUSHDB [ASYNC|SYNC]`: empties the selected database.
    FlushDb,
    /// `SWAPDB a b`: both indexes (`args[1]`, `args[2]`) need the db mapping; impossible on a
    /// cluster target.
    SwapDb,
    /// `MOVE key db`: the key leaves the selected database for `args[2]`, which needs the db
    /// mapping (and has no meaning on a cluster target).
    Move,
    /// `COPY src dst [DB n] [REPLACE]`: a `DB n` option names a destination database that needs
    /// the db mapping.
    Copy,
    /// `FUNCTION LOAD/DELETE/FLUSH/RESTORE`: the function libraries, which every master of the
    /// target needs.
    Function,
    /// `SCRIPT LOAD/FLUSH`: the script cache, which every master of the target needs.
    Script,
    /// `EVAL`, `EVALSHA`, `FCALL` and their `_RO` forms: a script run, propagated as is by old
    /// masters (Redis < 7 with verbatim script replication); its keys are the declared ones
    /// (`numkeys`), though a script may touch others.
    Eval,
    /// Known but nothing to apply: administration, connections, subscriptions, and `MIGRATE`
    /// (never propagated: the source master propagates a `DEL` of the migrated keys; its keys,
    /// including the `KEYS` form, are not extracted here).
    Other,
}

/// Where a command's keys are among its arguments (the command name is argument 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys (PING, FLUSHALL, SELECT, PUBLISH: a channel is not a key).
    None,
    /// `COMMAND`'s legacy triple: keys at `first`, `first + step`, ... up to `last`, which counts
    /// from the end when negative (-1: up to the last argument, -2: all but the last).
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// A count of keys at `numkeys_at`, the keys from `first` every `step` arguments, plus the
    /// fixed keys at `before`: `ZUNIONSTORE dest numkeys k...` is before=[1], numkeys_at=2,
    /// first=3; `EVAL script numkeys k...` before=[], numkeys_at=2, first=3; `LMPOP numkeys k...`
    /// numkeys_at=1, first=2; `MSETEX numkeys k v ...` numkeys_at=1, first=2, step=2.
    NumKeys {
        numkeys_at: usize,
        first: usize,
        step: usize,
        before: &'static [usize],
    },
    /// `SORT key ... [STORE dest]`: the key, and the destination of the last STORE.
    Sort,
    /// `GEORADIUS key ... [STORE k | STOREDIST k]` (and `GEORADIUSBYMEMBER`): the key, and the
    /// destination of the last STORE or STOREDIST.
    Georadius,
    /// `XREAD`/`XREADGROUP ... STREAMS k... id...`: the first half of what follows STREAMS.
    Streams,
    /// A container whose subcommands take their key at `first`: `XGROUP CREATE key ...`,
    /// `XINFO STREAM key`, `OBJECT ENCODING key`, `MEMORY USAGE key` (first=2). A subcommand
    /// without arguments (HELP, MEMORY STATS) has none.
    Subcommand { first: usize },
}

/// What [`command_info`] knows about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// The command's name, lowercase.
    pub name: &'static str,
    /// Where its keys are.
    pub keys: KeySpec,
    /// What it means for a replica-like consumer.
    pub kind: Kind,
}

/// Longest command name in the table, rounded up: a longer name is unknown without a lookup.
const MAX_NAME: usize = 32;

/// The command named `name` (any case), or `None` when it is not a command of Redis 6.2-8 or
/// Valkey 8-9. No allocation: the name is lowercased on the stack and binary-searched.
pub fn command_info(name: &[u8]) -> Option<&'static CommandInfo> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    COMMANDS
        .binary_search_by(|c| c.name.as_bytes().cmp(lower))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// The indexes in `args` (argv, the command name first) of the command's keys, ascending.
///
/// `Err` with one line for an unknown command (the caller decides what that means), and for an
/// argv too short for where its keys must be, or with a `numkeys` that is not a number or is
/// larger than the arguments. Never panics, whatever the argv.
pub fn command_keys<A: AsRef<[u8]>>(args: &[A]) -> Result<Vec<usize>, String> {
    let Some(name) = args.first() else {
        return Err("empty command".into());
    };
    let name = name.as_ref();
    match command_info(name) {
        Some(info) => info.key_indexes(args),
        None => Err(format!("unknown command {}", quote_name(name))),
    }
}

impl CommandInfo {
    /// [`command_keys`] for a command already looked up (`args[0]` is not looked at).
    pub fn key_indexes<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Vec<usize>, String> {
        let argc = args.len();
        let short = || {
            format!(
                "{}: too few arguments ({}) for its keys",
                self.name.to_ascii_uppercase(),
                argc
            )
        };
        match self.keys {
            KeySpec::None => Ok(Vec::new()),
            KeySpec::Range { first, last, step } => {
                let last = if last < 0 { argc as isize + last } else { last };
                if first >= argc || last < first as isize || last as usize >= argc {
                    return Err(short());
                }
                let last = last as usize;
                let step = step.max(1);
                if (last - first + 1) % step != 0 {
                    return Err(format!(
                        "{}: arguments from {first} come in groups of {step}, {} do not",
                        self.name.to_ascii_uppercase(),
                        last - first + 1
                    ));
                }
                Ok((first..=last).step_by(step).collect())
            }
            KeySpec::NumKeys {
                numkeys_at,
                first,
                step,
                before,
            } => {
                if before.iter().any(|&b| b >= argc) || numkeys_at >= argc {
                    return Err(short());
                }
                let raw = args[numkeys_at].as_ref();
                let numkeys = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!(
                            "{}: numkeys {} is not a non-negative integer",
                            self.name.to_ascii_uppercase(),
                            quote_name(raw)
                        )
                    })?;
                let step = step.max(1);
                // The block of keys (with their values when step > 1) must fit in argv.
                let room = argc.saturating_sub(first) / step;
                if numkeys > room as u64 {
                    return Err(format!(
                        "{}: numkeys {numkeys} is more than the {room} the arguments hold",
                        self.name.to_ascii_uppercase()
                    ));
                }
                let mut keys = Vec::with_capacity(before.len() + numkeys as usize);
                keys.extend_from_slice(before);
                keys.extend((0..numkeys as usize).map(|i| first + i * step));
                Ok(keys)
            }
            KeySpec::Sort => {
                if argc < 2 {
                    return Err(short());
                }
                let mut keys = vec![1];
                let mut store = None;
                let mut i = 2;
                while i < argc {
                    let a = args[i].as_ref();
                    if a.eq_ignore_ascii_case(b"limit") {
                        i += 2;
                    } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
                        i += 1;
                    } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argc {
                        store = Some(i + 1);
                        i += 1;
                    }
                    i += 1;
                }
                keys.extend(store);
                Ok(keys)
            }
            KeySpec::Georadius => {
                if argc < 2 {
                    return Err(short());
                }
                let mut keys = vec![1];
                let mut store = None;
                // Options start after `key member radius unit` (BYMEMBER) or `key lon lat radius
                // unit`; a unit is never STORE, so scanning from 5 serves both.
                let mut i = 5;
                while i < argc {
                    let a = args[i].as_ref();
                    if (a.eq_ignore_ascii_case(b"store") || a.eq_ignore_ascii_case(b"storedist"))
                        && i + 1 < argc
                    {
                        store = Some(i + 1);
                        i += 1;
                    }
                    i += 1;
                }
                keys.extend(store);
                Ok(keys)
            }
            KeySpec::Streams => {
                let mut i = 1;
                let streams = loop {
                    let Some(a) = args.get(i) else {
                        return Err(format!(
                            "{}: no STREAMS argument",
                            self.name.to_ascii_uppercase()
                        ));
                    };
                    let a = a.as_ref();
                    if a.eq_ignore_ascii_case(b"streams") {
                        break i;
                    } else if a.eq_ignore_ascii_case(b"group") {
                        i += 3;
                    } else if a.eq_ignore_ascii_case(b"count")
                        || a.eq_ignore_ascii_case(b"block")
                        || a.eq_ignore_ascii_case(b"claim")
                    {
                        i += 2;
                    } else if a.eq_ignore_ascii_case(b"noack") {
                        i += 1;
                    } else {
                        return Err(format!(
                            "{}: unexpected argument {} before STREAMS",
                            self.name.to_ascii_uppercase(),
                            quote_name(a)
                        ));
                    }
                };
                let rest = argc - streams - 1;
                if rest == 0 || rest % 2 != 0 {
                    return Err(format!(
                        "{}: STREAMS needs as many ids as keys, got {rest} arguments",
                        self.name.to_ascii_uppercase()
                    ));
                }
                Ok((streams + 1..streams + 1 + rest / 2).collect())
            }
            KeySpec::Subcommand { first } => Ok(if first < argc {
                vec![first]
            } else {
                Vec::new()
            }),
        }
    }
}

/// A command name or argument for a message, cut short: it may be anything the stream carried.
fn quote_name(b: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s = crate::text::quote_bytes(&b[..b.len().min(SHOWN)]);
    if b.len() > SHOWN {
        s.push_str("...");
    }
    s
}

const fn info(name: &'static str, keys: KeySpec, kind: Kind) -> CommandInfo {
    CommandInfo { name, keys, kind }
}

const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}

const fn numkeys(
    numkeys_at: usize,
    first: usize,
    step: usize,
    before: &'static [usize],
) -> KeySpec {
    KeySpec::NumKeys {
        numkeys_at,
        first,
        step,
        before,
    }
}

use table::COMMANDS;

mod table {
    use super::KeySpec::*;
    use super::Kind::*;
    use super::{info, numkeys, range, CommandInfo};

    /// Every command, sorted by name (bytewise) for the binary search. Key positions as the
    /// servers' key specs give them; PFCOUNT is a Write because a master propagates it when it
    /// refreshes the cached cardinality.
    pub(super) static COMMANDS: &[CommandInfo] = &[
        info("acl", None, Other),
        info("append", range(1, 1, 1), Write),
        info("asking", None, Other),
        info("auth", None, Other),
        info("bgrewriteaof", None, Other),
        info("bgsave", None, Other),
        info("bitcount", range(1, 1, 1), Read),
        info("bitfield", range(1, 1, 1), Write),
        info("bitfield_ro", range(1, 1, 1), Read),
        info("bitop", range(2, -1, 1), Write),
        info("bitpos", range(1, 1, 1), Read),
        info("blmove", range(1, 2, 1), Write),
        info("blmpop", numkeys(2, 3, 1, &[]), Write),
        info("blpop", range(1, -2, 1), Write),
        info("brpop", range(1, -2, 1), Write),
        info("brpoplpush", range(1, 2, 1), Write),
        info("bzmpop", numkeys(2, 3, 1, &[]), Write),
        info("bzpopmax", range(1, -2, 1), Write),
        info("bzpopmin", range(1, -2, 1), Write),
        info("client", None, Other),
        info("cluster", None, Other),
        info("clusterscan", None, Read),
        info("command", None, Other),
        info("commandlog", None, Other),
        info("config", None, Other),
        info("copy", range(1, 2, 1), Copy),
        info("dbsize", None, Read),
        info("debug", None, Other),
        info("decr", range(1, 1, 1), Write),
        info("decrby", range(1, 1, 1), Write),
        info("del", range(1, -1, 1), Write),
        info("delex", range(1, 1, 1), Write),
        info("delifeq", range(1, 1, 1), Write),
        info("digest", range(1, 1, 1), Read),
        info("discard", None, Discard),
        info("dump", range(1, 1, 1), Read),
        info("echo", None, Other),
        info("eval", numkeys(2, 3, 1, &[]), Eval),
        info("eval_ro", numkeys(2, 3, 1, &[]), Eval),
        info("evalsha", numkeys(2, 3, 1, &[]), Eval),
        info("evalsha_ro", numkeys(2, 3, 1, &[]), Eval),
        info("exec", None, Exec),
        info("exists", range(1, -1, 1), Read),
        info("expire", range(1, 1, 1), Write),
        info("expireat", range(1, 1, 1), Write),
        info("expiretime", range(1, 1, 1), Read),
        info("failover", None, Other),
        info("fcall", numkeys(2, 3, 1, &[]), Eval),
        info("fcall_ro", numkeys(2, 3, 1, &[]), Eval),
        info("flushall", None, FlushAll),
        info("flushdb", None, FlushDb),
        info("function", None, Function),
        info("geoadd", range(1, 1, 1), Write),
        info("geodist", range(1, 1, 1), Read),
        info("geohash", range(1, 1, 1), Read),
        info("geopos", range(1, 1, 1), Read),
        info("georadius", Georadius, Write),
        info("georadius_ro", range(1, 1, 1), Read),
        info("georadiusbymember", Georadius, Write),
        info("georadiusbymember_ro", range(1, 1, 1), Read),
        info("geosearch", range(1, 1, 1), Read),
        info("geosearchstore", range(1, 2, 1), Write),
        info("get", range(1, 1, 1), Read),
        info("getbit", range(1, 1, 1), Read),
        info("getdel", range(1, 1, 1), Write),
        info("getex", range(1, 1, 1), Write),
        info("getrange", range(1, 1, 1), Read),
        info("getset", range(1, 1, 1), Write),
        info("hdel", range(1, 1, 1), Write),
        info("hello", None, Other),
        info("hexists", range(1, 1, 1), Read),
        info("hexpire", range(1, 1, 1), Write),
        info("hexpireat", range(1, 1, 1), Write),
        info("hexpiretime", range(1, 1, 1), Read),
        info("hget", range(1, 1, 1), Read),
        info("hgetall", range(1, 1, 1), Read),
        info("hgetdel", range(1, 1, 1), Write),
        info("hgetex", range(1, 1, 1), Write),
        info("hincrby", range(1, 1, 1), Write),
        info("hincrbyfloat", range(1, 1, 1), Write),
        info("hkeys", range(1, 1, 1), Read),
        info("hlen", range(1, 1, 1), Read),
        info("hmget", range(1, 1, 1), Read),
        info("hmset", range(1, 1, 1), Write),
        // Redis 6.2 refuses these ("host:" and "post" are HTTP requests) and logs an attack.
        info("host:", None, Other),
        info("hpersist", range(1, 1, 1), Write),
        info("hpexpire", range(1, 1, 1), Write),
        info("hpexpireat", range(1, 1, 1), Write),
        info("hpexpiretime", range(1, 1, 1), Read),
        info("hpttl", range(1, 1, 1), Read),
        info("hrandfield", range(1, 1, 1), Read),
        info("hscan", range(1, 1, 1), Read),
        info("hset", range(1, 1, 1), Write),
        info("hsetex", range(1, 1, 1), Write),
        info("hsetnx", range(1, 1, 1), Write),
        info("hstrlen", range(1, 1, 1), Read),
        info("httl", range(1, 1, 1), Read),
        info("hvals", range(1, 1, 1), Read),
        info("incr", range(1, 1, 1), Write),
        info("incrby", range(1, 1, 1), Write),
        info("incrbyfloat", range(1, 1, 1), Write),
        info("info", None, Other),
        info("keys", None, Read),
        info("lastsave", None, Other),
        info("latency", None, Other),
        info("lcs", range(1, 2, 1), Read),
        info("lindex", range(1, 1, 1), Read),
        info("linsert", range(1, 1, 1), Write),
        info("llen", range(1, 1, 1), Read),
        info("lmove", range(1, 2, 1), Write),
        info("lmpop", numkeys(1, 2, 1, &[]), Write),
        info("lolwut", None, Read),
        info("lpop", range(1, 1, 1), Write),
        info("lpos", range(1, 1, 1), Read),
        info("lpush", range(1, 1, 1), Write),
        info("lpushx", range(1, 1, 1), Write),
        info("lrange", range(1, 1, 1), Read),
        info("lrem", range(1, 1, 1), Write),
        info("lset", range(1, 1, 1), Write),
        info("ltrim", range(1, 1, 1), Write),
        info("memory", Subcommand { first: 2 }, Other),
        info("mget", range(1, -1, 1), Read),
        info("migrate", None, Other),
        info("module", None, Other),
        info("monitor", None, Other),
        info("move", range(1, 1, 1), Move),
        info("mset", range(1, -1, 2), Write),
        info("msetex", numkeys(1, 2, 2, &[]), Write),
        info("msetnx", range(1, -1, 2), Write),
        info("multi", None, Multi),
        info("object", Subcommand { first: 2 }, Read),
        info("persist", range(1, 1, 1), Write),
        info("pexpire", range(1, 1, 1), Write),
        info("pexpireat", range(1, 1, 1), Write),
        info("pexpiretime", range(1, 1, 1), Read),
        info("pfadd", range(1, 1, 1), Write),
        info("pfcount", range(1, -1, 1), Write),
        info("pfdebug", range(2, 2, 1), Other),
        info("pfmerge", range(1, -1, 1), Write),
        info("pfselftest", None, Other),
        info("ping", None, Ping),
        info("post", None, Other),
        info("psetex", range(1, 1, 1), Write),
        info("psubscribe", None, Other),
        info("psync", None, Other),
        info("pttl", range(1, 1, 1), Read),
        info("publish", None, Publish),
        info("pubsub", None, Other),
        info("punsubscribe", None, Other),
        info("quit", None, Other),
        info("randomkey", None, Read),
        info("readonly", None, Other),
        info("readwrite", None, Other),
        info("rename", range(1, 2, 1), Write),
        info("renamenx", range(1, 2, 1), Write),
        info("replconf", None, ReplConf),
        info("replicaof", None, Other),
        info("reset", None, Other),
        info("restore", range(1, 1, 1), Write),
        info("restore-asking", range(1, 1, 1), Write),
        info("role", None, Other),
        info("rpop", range(1, 1, 1), Write),
        info("rpoplpush", range(1, 2, 1), Write),
        info("rpush", range(1, 1, 1), Write),
        info("rpushx", range(1, 1, 1), Write),
        info("sadd", range(1, 1, 1), Write),
        info("save", None, Other),
        info("scan", None, Read),
        info("scard", range(1, 1, 1), Read),
        info("script", None, Script),
        info("sdiff", range(1, -1, 1), Read),
        info("sdiffstore", range(1, -1, 1), Write),
        info("select", None, Select),
        info("set", range(1, 1, 1), Write),
        info("setbit", range(1, 1, 1), Write),
        info("setex", range(1, 1, 1), Write),
        info("setnx", range(1, 1, 1), Write),
        info("setrange", range(1, 1, 1), Write),
        info("shutdown", None, Other),
        info("sinter", range(1, -1, 1), Read),
        info("sintercard", numkeys(1, 2, 1, &[]), Read),
        info("sinterstore", range(1, -1, 1), Write),
        info("sismember", range(1, 1, 1), Read),
        info("slaveof", None, Other),
        info("slowlog", None, Other),
        info("smembers", range(1, 1, 1), Read),
        info("smismember", range(1, 1, 1), Read),
        info("smove", range(1, 2, 1), Write),
        info("sort", Sort, Write),
        info("sort_ro", range(1, 1, 1), Read),
        info("spop", range(1, 1, 1), Write),
        info("spublish", None, Publish),
        info("srandmember", range(1, 1, 1), Read),
        info("srem", range(1, 1, 1), Write),
        info("sscan", range(1, 1, 1), Read),
        info("ssubscribe", None, Other),
        // Redis 6.2 only (LCS since 7.0); its keys follow a KEYS token, not extracted.
        info("stralgo", None, Read),
        info("strlen", range(1, 1, 1), Read),
        info("subscribe", None, Other),
        info("substr", range(1, 1, 1), Read),
        info("sunion", range(1, -1, 1), Read),
        info("sunionstore", range(1, -1, 1), Write),
        info("sunsubscribe", None, Other),
        info("swapdb", None, SwapDb),
        info("sync", None, Other),
        info("time", None, Other),
        info("touch", range(1, -1, 1), Read),
        info("ttl", range(1, 1, 1), Read),
        info("type", range(1, 1, 1), Read),
        info("unlink", range(1, -1, 1), Write),
        info("unsubscribe", None, Other),
        info("unwatch", None, Other),
        info("vadd", range(1, 1, 1), Write),
        info("vcard", range(1, 1, 1), Read),
        info("vdim", range(1, 1, 1), Read),
        info("vemb", range(1, 1, 1), Read),
        info("vgetattr", range(1, 1, 1), Read),
        info("vinfo", range(1, 1, 1), Read),
        info("vismember", range(1, 1, 1), Read),
        info("vlinks", range(1, 1, 1), Read),
        info("vrandmember", range(1, 1, 1), Read),
        info("vrem", range(1, 1, 1), Write),
        info("vsetattr", range(1, 1, 1), Write),
        info("vsim", range(1, 1, 1), Read),
        info("wait", None, Other),
        info("waitaof", None, Other),
        info("watch", range(1, -1, 1), Other),
        info("xack", range(1, 1, 1), Write),
        info("xackdel", range(1, 1, 1), Write),
        info("xadd", range(1, 1, 1), Write),
        info("xautoclaim", range(1, 1, 1), Write),
        info("xclaim", range(1, 1, 1), Write),
        info("xdel", range(1, 1, 1), Write),
        info("xdelex", range(1, 1, 1), Write),
        info("xgroup", Subcommand { first: 2 }, Write),
        info("xinfo", Subcommand { first: 2 }, Read),
        info("xlen", range(1, 1, 1), Read),
        info("xpending", range(1, 1, 1), Read),
        info("xrange", range(1, 1, 1), Read),
        info("xread", Streams, Read),
        info("xreadgroup", Streams, Write),
        info("xrevrange", range(1, 1, 1), Read),
        info("xsetid", range(1, 1, 1), Write),
        info("xtrim", range(1, 1, 1), Write),
        info("zadd", range(1, 1, 1), Write),
        info("zcard", range(1, 1, 1), Read),
        info("zcount", range(1, 1, 1), Read),
        info("zdiff", numkeys(1, 2, 1, &[]), Read),
        info("zdiffstore", numkeys(2, 3, 1, &[1]), Write),
        info("zincrby", range(1, 1, 1), Write),
        info("zinter", numkeys(1, 2, 1, &[]), Read),
        info("zintercard", numkeys(1, 2, 1, &[]), Read),
        info("zinterstore", numkeys(2, 3, 1, &[1]), Write),
        info("zlexcount", range(1, 1, 1), Read),
        info("zmpop", numkeys(1, 2, 1, &[]), Write),
        info("zmscore", range(1, 1, 1), Read),
        info("zpopmax", range(1, 1, 1), Write),
        info("zpopmin", range(1, 1, 1), Write),
        info("zrandmember", range(1, 1, 1), Read),
        info("zrange", range(1, 1, 1), Read),
        info("zrangebylex", range(1, 1, 1), Read),
        info("zrangebyscore", range(1, 1, 1), Read),
        info("zrangestore", range(1, 2, 1), Write),
        info("zrank", range(1, 1, 1), Read),
        info("zrem", range(1, 1, 1), Write),
        info("zremrangebylex", range(1, 1, 1), Write),
        info("zremrangebyrank", range(1, 1, 1), Write),
        info("zremrangebyscore", range(1, 1, 1), Write),
        info("zrevrange", range(1, 1, 1), Read),
        info("zrevrangebylex", range(1, 1, 1), Read),
        info("zrevrangebyscore", range(1, 1, 1), Read),
        info("zrevrank", range(1, 1, 1), Read),
        info("zscan", range(1, 1, 1), Read),
        info("zscore", range(1, 1, 1), Read),
        info("zunion", numkeys(1, 2, 1, &[]), Read),
        info("zunionstore", numkeys(2, 3, 1, &[1]), Write),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(argv: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", argv.len()).into_bytes();
        for a in argv {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn parse(buf: &[u8]) -> Result<Option<ParsedCommand>, String> {
        parse_command(buf, 1024, 1 << 20)
    }

    fn keys(argv: &[&str]) -> Result<Vec<usize>, String> {
        command_keys(argv)
    }

    #[test]
    fn parses_a_complete_command() {
        let buf = frame(&[b"SET", b"k", b"a\r\nbinary\0value"]);
        let cmd = parse(&buf).unwrap().unwrap();
        assert_eq!(cmd.len, buf.len());
        assert_eq!(
            cmd.argv(&buf),
            vec![&b"SET"[..], b"k", b"a\r\nbinary\0value"]
        );
    }

    #[test]
    fn parses_empty_arguments_and_an_empty_array() {
        let buf = frame(&[b"SET", b"", b""]);
        let cmd = parse(&buf).unwrap().unwrap();
        assert_eq!(cmd.argv(&buf), vec![&b"SET"[..], b"", b""]);
        let cmd = parse(b"*0\r\n").unwrap().unwrap();
        assert_eq!((cmd.args.len(), cmd.len), (0, 4));
    }

    /// A stream of several commands split at every position: the prefix before the split yields
    /// exactly the complete commands it holds, and nothing is ever an error.
    #[test]
    fn split_at_every_byte() {
        let commands: Vec<Vec<&[u8]>> = vec![
            vec![b"SELECT", b"0"],
            vec![b"SET", b"key:1", b"value"],
            vec![b"PING"],
            vec![b"HSET", b"h", b"f", b""],
            vec![b"RPUSH", b"l", b"0123456789", b"x\r\n"],
        ];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for c in &commands {
            stream.extend(frame(c));
            ends.push(stream.len());
        }
        for split in 0..=stream.len() {
            let prefix = &stream[..split];
            let mut pos = 0;
            let mut seen = 0;
            while let Some(cmd) = parse(&prefix[pos..]).unwrap() {
                assert_eq!(cmd.argv(&prefix[pos..]), commands[seen]);
                pos += cmd.len;
                assert_eq!(pos, ends[seen]);
                seen += 1;
            }
            let complete = ends.iter().filter(|&&e| e <= split).count();
            assert_eq!(seen, complete, "split at {split}");
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"PING\r\n", "expected an array"),
            (b"\n*1\r\n$4\r\nPING\r\n", "expected an array"),
            (b"+OK\r\n", "expected an array"),
            (b"*\r\n", "not a non-negative decimal"),
            (b"*-1\r\n", "not a non-negative decimal"),
            (b"*1x\r\n", "not a non-negative decimal"),
            (b"*1\n$4\r\nPING\r\n", "not a non-negative decimal"),
            (b"*1\rx", "instead of LF"),
            (b"*1\r\n:4\r\n", "expected a bulk string"),
            (b"*1\r\n*1\r\n", "expected a bulk string"),
            (b"*1\r\n$-1\r\n", "not a non-negative decimal"),
            (b"*1\r\n$4\r\nPINGxx", "not followed by CRLF"),
            (b"*1\r\n$4\r\nPING\n\r", "not followed by CRLF"),
            (b"*2\r\n$4\r\nPING\r\nPING\r\n", "expected a bulk string"),
            (b"*000000000000000000000001\r\n", "too many digits"),
            (b"*99999999999999999999\r\n", "overflows"),
            (b"*2000\r\n", "more than the limit of 1024"),
            (b"*1\r\n$2000000\r\n", "more than the limit of 1048576"),
        ];
        for (input, expected) in cases {
            let err = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert!(
                err.contains(expected),
                "{:?}: {err} (expected {expected:?})",
                String::from_utf8_lossy(input)
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        for input in [
            &b""[..],
            b"*",
            b"*12",
            b"*1\r",
            b"*1\r\n",
            b"*1\r\n$",
            b"*1\r\n$4\r",
            b"*1\r\n$4\r\nPI",
            b"*1\r\n$4\r\nPING\r",
        ] {
            assert_eq!(
                parse(input),
                Ok(None),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Declared counts and lengths within the limits, but far beyond the data, only ask for
    /// more: nothing is sized by them (a 2^40-element Vec would abort the test).
    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        let max = usize::MAX;
        assert_eq!(parse_command(b"*1099511627776\r\n", max, max), Ok(None));
        assert_eq!(
            parse_command(b"*1099511627776\r\n$4\r\nPING\r\n", max, max),
            Ok(None)
        );
        assert_eq!(
            parse_command(b"*1\r\n$1099511627776\r\nabc", max, max),
            Ok(None)
        );
        let err = parse_command(b"*1\r\n$18446744073709551615\r\n", max, max).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn table_is_sorted_unique_and_lowercase() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} then {}",
                pair[0].name,
                pair[1].name
            );
        }
        for c in COMMANDS {
            assert!(c.name.len() <= MAX_NAME, "{}", c.name);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert_eq!(
                command_info(c.name.as_bytes()).map(|i| i.name),
                Some(c.name)
            );
        }
    }

    #[test]
    fn lookup_ignores_case_and_knows_unknowns() {
        assert_eq!(command_info(b"SeT").unwrap().kind, Kind::Write);
        assert_eq!(command_info(b"GET").unwrap().kind, Kind::Read);
        assert_eq!(command_info(b"select").unwrap().kind, Kind::Select);
        assert_eq!(command_info(b"REPLCONF").unwrap().kind, Kind::ReplConf);
        assert_eq!(command_info(b"FCALL").unwrap().kind, Kind::Eval);
        assert_eq!(command_info(b"SPUBLISH").unwrap().kind, Kind::Publish);
        assert!(command_info(b"JSON.SET").is_none());
        assert!(command_info(b"").is_none());
        assert!(command_info(&[b'a'; 100]).is_none());
        let err = keys(&["NOSUCH", "k"]).unwrap_err();
        assert!(err.contains("unknown command \"NOSUCH\""), "{err}");
        assert!(command_keys::<&[u8]>(&[]).is_err());
    }

    #[test]
    fn range_keys() {
        assert_eq!(keys(&["SET", "k", "v"]), Ok(vec![1]));
        assert_eq!(keys(&["del", "a", "b", "c"]), Ok(vec![1, 2, 3]));
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), Ok(vec![1, 3]));
        assert_eq!(keys(&["RENAME", "a", "b"]), Ok(vec![1, 2]));
        assert_eq!(keys(&["BITOP", "AND", "d", "a", "b"]), Ok(vec![2, 3, 4]));
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]), Ok(vec![1, 2]));
        assert_eq!(keys(&["HSETEX", "h", "FIELDS", "1", "f", "v"]), Ok(vec![1]));
        assert_eq!(keys(&["PING"]), Ok(vec![]));
        assert_eq!(keys(&["PUBLISH", "ch", "m"]), Ok(vec![]));
        // Too short for the keys, an odd key/value list: errors, not panics.
        assert!(keys(&["SET"]).is_err());
        assert!(keys(&["DEL"]).is_err());
        assert!(keys(&["RENAME", "a"]).is_err());
        assert!(keys(&["BLPOP", "0"]).is_err());
        assert!(keys(&["MSET", "a", "1", "b"]).is_err());
    }

    #[test]
    fn numkeys_keys() {
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(
            keys(&["EVAL", "return 1", "2", "a", "b", "x"]),
            Ok(vec![3, 4])
        );
        assert_eq!(keys(&["EVALSHA", "abc", "0"]), Ok(vec![]));
        assert_eq!(keys(&["LMPOP", "2", "a", "b", "LEFT"]), Ok(vec![2, 3]));
        assert_eq!(keys(&["BLMPOP", "0", "1", "a", "LEFT"]), Ok(vec![3]));
        assert_eq!(
            keys(&["MSETEX", "2", "a", "1", "b", "2", "EX", "9"]),
            Ok(vec![2, 4])
        );
        // numkeys beyond the arguments, not a number, negative, huge; argv cut short.
        for bad in [
            &["EVAL", "s", "3", "a", "b"][..],
            &["EVAL", "s", "x", "a"],
            &["EVAL", "s", "-1"],
            &["EVAL", "s", "99999999999999999999999"],
            &["EVAL", "s"],
            &["ZUNIONSTORE", "d"],
            &["ZUNIONSTORE"],
            &["MSETEX", "2", "a", "1", "b"],
            &["LMPOP", "18446744073709551615", "a"],
        ] {
            let err = keys(bad).expect_err(&bad.join(" "));
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn sort_keys() {
        assert_eq!(keys(&["SORT", "k"]), Ok(vec![1]));
        assert_eq!(
            keys(&["SORT", "k", "BY", "store", "LIMIT", "0", "10", "GET", "#", "STORE", "d"]),
            Ok(vec![1, 10])
        );
        assert_eq!(
            keys(&["sort", "k", "store", "a", "store", "b"]),
            Ok(vec![1, 5])
        );
        assert_eq!(keys(&["SORT", "k", "STORE"]), Ok(vec![1]));
        assert_eq!(keys(&["SORT", "k", "LIMIT"]), Ok(vec![1]));
        assert!(keys(&["SORT"]).is_err());
    }

    #[test]
    fn georadius_keys() {
        assert_eq!(
            keys(&["GEORADIUS", "k", "1", "2", "3", "km", "STORE", "d"]),
            Ok(vec![1, 7])
        );
        assert_eq!(
            keys(&["GEORADIUSBYMEMBER", "k", "m", "3", "km", "STOREDIST", "d"]),
            Ok(vec![1, 6])
        );
        assert_eq!(keys(&["GEORADIUS", "k", "1", "2", "3", "km"]), Ok(vec![1]));
        assert_eq!(keys(&["GEORADIUS", "k"]), Ok(vec![1]));
        assert!(keys(&["GEORADIUS"]).is_err());
    }

    #[test]
    fn streams_keys() {
        assert_eq!(
            keys(&["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"]),
            Ok(vec![6, 7])
        );
        assert_eq!(
            keys(&[
                "XREADGROUP",
                "GROUP",
                "streams",
                "c",
                "NOACK",
                "STREAMS",
                "a",
                ">"
            ]),
            Ok(vec![6])
        );
        assert!(keys(&["XREAD", "STREAMS", "a", "b", "0"]).is_err());
        assert!(keys(&["XREAD", "STREAMS"]).is_err());
        assert!(keys(&["XREAD", "COUNT"]).is_err());
        assert!(keys(&["XREAD", "BOGUS", "STREAMS", "a", "0"]).is_err());
        assert!(keys(&["XREADGROUP", "GROUP"]).is_err());
    }

    #[test]
    fn subcommand_keys() {
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]), Ok(vec![2]));
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), Ok(vec![2]));
        assert_eq!(keys(&["XINFO", "HELP"]), Ok(vec![]));
        assert_eq!(keys(&["XGROUP"]), Ok(vec![]));
    }
}
