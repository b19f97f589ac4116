//! Redis commands as they travel in a master's replication stream: this module owns that
//! knowledge, once.
//!
//! - [`parse_command`] cuts one command out of the stream (a RESP2 array of bulk strings, the
//!   only form a master sends) without copying it, and says exactly how many bytes it took, so
//!   the replication offset advances by the same amount;
//! - [`command_info`] knows every command a Redis 6.2/7.x/8 or Valkey 8/9 master can propagate
//!   (and the read-only ones, so that "known" and "unknown" stay distinct): where its keys are
//!   ([`KeySpec`]), what a replica-like consumer must do with it ([`Kind`]) and its group
//!   ([`Group`], as `COMMAND DOCS` names it: what shake-sync's `--command-group` judges);
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
    /// Its group, as the servers' `COMMAND DOCS` name it: what `--command-group` judges.
    pub group: Group,
}

/// A command's group, as Redis's and Valkey's `COMMAND DOCS` reply names it (`group`). Redis
/// 8's vector set commands are `module` there (they come from a bundled module), and so is
/// every command this table does not know: a module's commands are `module` on the servers too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Bitmap,
    Cluster,
    Connection,
    Generic,
    Geo,
    Hash,
    Hyperloglog,
    List,
    Module,
    Pubsub,
    Scripting,
    Sentinel,
    Server,
    Set,
    SortedSet,
    Stream,
    String,
    Transactions,
}

impl Group {
    /// Every group, in the order of their names.
    pub const ALL: [Group; 18] = [
        Group::Bitmap,
        Group::Cluster,
        Group::Connection,
        Group::Generic,
        Group::Geo,
        Group::Hash,
        Group::Hyperloglog,
        Group::List,
        Group::Module,
        Group::Pubsub,
        Group::Scripting,
        Group::Sentinel,
        Group::Server,
        Group::Set,
        Group::SortedSet,
        Group::Stream,
        Group::String,
        Group::Transactions,
    ];

    /// The name `COMMAND DOCS` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Group::Bitmap => "bitmap",
            Group::Cluster => "cluster",
            Group::Connection => "connection",
            Group::Generic => "generic",
            Group::Geo => "geo",
            Group::Hash => "hash",
            Group::Hyperloglog => "hyperloglog",
            Group::List => "list",
            Group::Module => "module",
            Group::Pubsub => "pubsub",
            Group::Scripting => "scripting",
            Group::Sentinel => "sentinel",
            Group::Server => "server",
            Group::Set => "set",
            Group::SortedSet => "sorted-set",
            Group::Stream => "stream",
            Group::String => "string",
            Group::Transactions => "transactions",
        }
    }

    /// A group by name, any case, `-` or `_` alike: Redis's own `sorted-set` and RedisShake
    /// v4's `SORTED_SET` (its `allow_command_group` spells Redis's groups upper case with `_`).
    /// RedisShake's Tair groups (`TAIRHASH`, `TAIRSTRING`, `TAIRZSET`) are not groups here:
    /// Tair's commands are a module's, unknown to the table, so `module`.
    pub fn parse(s: &str) -> Result<Group, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        if let Some(g) = Group::ALL.into_iter().find(|g| g.name() == norm) {
            return Ok(g);
        }
        let tair = if norm.starts_with("tair") {
            " (Tair's commands are module commands here, unknown to the command table: group module)"
        } else {
            ""
        };
        Err(format!(
            "{s:?}: not a command group{tair}; the groups are {} (any case; RedisShake's SORTED_SET spelling too)",
            Group::ALL.map(Group::name).join(", ")
        ))
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The group of the command named `name` (any case): the table's, `module` for a command it
/// does not know.
pub fn command_group(name: &[u8]) -> Group {
    command_info(name).map_or(Group::Module, |i| i.group)
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

const fn info(name: &'static str, keys: KeySpec, kind: Kind, group: Group) -> CommandInfo {
    CommandInfo {
        name,
        keys,
        kind,
        group,
    }
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
    use super::Group as G;
    use super::KeySpec::*;
    use super::Kind::*;
    use super::{info, numkeys, range, CommandInfo};

    /// Every command, sorted by name (bytewise) for the binary search. Key positions as the
    /// servers' key specs give them, groups as their `COMMAND DOCS` do (the integration test
    /// `command_table.rs` holds both against real servers); PFCOUNT is a Write because a master propagates it when it
    /// refreshes the cached cardinality.
    pub(super) static COMMANDS: &[CommandInfo] = &[
        info("acl", None, Other, G::Server),
        info("append", range(1, 1, 1), Write, G::String),
        info("asking", None, Other, G::Cluster),
        info("auth", None, Other, G::Connection),
        info("bgrewriteaof", None, Other, G::Server),
        info("bgsave", None, Other, G::Server),
        info("bitcount", range(1, 1, 1), Read, G::Bitmap),
        info("bitfield", range(1, 1, 1), Write, G::Bitmap),
        info("bitfield_ro", range(1, 1, 1), Read, G::Bitmap),
        info("bitop", range(2, -1, 1), Write, G::Bitmap),
        info("bitpos", range(1, 1, 1), Read, G::Bitmap),
        info("blmove", range(1, 2, 1), Write, G::List),
        info("blmpop", numkeys(2, 3, 1, &[]), Write, G::List),
        info("blpop", range(1, -2, 1), Write, G::List),
        info("brpop", range(1, -2, 1), Write, G::List),
        info("brpoplpush", range(1, 2, 1), Write, G::List),
        info("bzmpop", numkeys(2, 3, 1, &[]), Write, G::SortedSet),
        info("bzpopmax", range(1, -2, 1), Write, G::SortedSet),
        info("bzpopmin", range(1, -2, 1), Write, G::SortedSet),
        info("client", None, Other, G::Connection),
        info("cluster", None, Other, G::Cluster),
        info("clusterscan", None, Read, G::Cluster),
        info("command", None, Other, G::Server),
        info("commandlog", None, Other, G::Server),
        info("config", None, Other, G::Server),
        info("copy", range(1, 2, 1), Copy, G::Generic),
        info("dbsize", None, Read, G::Server),
        info("debug", None, Other, G::Server),
        info("decr", range(1, 1, 1), Write, G::String),
        info("decrby", range(1, 1, 1), Write, G::String),
        info("del", range(1, -1, 1), Write, G::Generic),
        info("delex", range(1, 1, 1), Write, G::String),
        info("delifeq", range(1, 1, 1), Write, G::String),
        info("digest", range(1, 1, 1), Read, G::String),
        info("discard", None, Discard, G::Transactions),
        info("dump", range(1, 1, 1), Read, G::Generic),
        info("echo", None, Other, G::Connection),
        info("eval", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("eval_ro", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("evalsha", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("evalsha_ro", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("exec", None, Exec, G::Transactions),
        info("exists", range(1, -1, 1), Read, G::Generic),
        info("expire", range(1, 1, 1), Write, G::Generic),
        info("expireat", range(1, 1, 1), Write, G::Generic),
        info("expiretime", range(1, 1, 1), Read, G::Generic),
        info("failover", None, Other, G::Server),
        info("fcall", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("fcall_ro", numkeys(2, 3, 1, &[]), Eval, G::Scripting),
        info("flushall", None, FlushAll, G::Server),
        info("flushdb", None, FlushDb, G::Server),
        info("function", None, Function, G::Scripting),
        info("geoadd", range(1, 1, 1), Write, G::Geo),
        info("geodist", range(1, 1, 1), Read, G::Geo),
        info("geohash", range(1, 1, 1), Read, G::Geo),
        info("geopos", range(1, 1, 1), Read, G::Geo),
        info("georadius", Georadius, Write, G::Geo),
        info("georadius_ro", range(1, 1, 1), Read, G::Geo),
        info("georadiusbymember", Georadius, Write, G::Geo),
        info("georadiusbymember_ro", range(1, 1, 1), Read, G::Geo),
        info("geosearch", range(1, 1, 1), Read, G::Geo),
        info("geosearchstore", range(1, 2, 1), Write, G::Geo),
        info("get", range(1, 1, 1), Read, G::String),
        info("getbit", range(1, 1, 1), Read, G::Bitmap),
        info("getdel", range(1, 1, 1), Write, G::String),
        info("getex", range(1, 1, 1), Write, G::String),
        info("getrange", range(1, 1, 1), Read, G::String),
        info("getset", range(1, 1, 1), Write, G::String),
        info("hdel", range(1, 1, 1), Write, G::Hash),
        info("hello", None, Other, G::Connection),
        info("hexists", range(1, 1, 1), Read, G::Hash),
        info("hexpire", range(1, 1, 1), Write, G::Hash),
        info("hexpireat", range(1, 1, 1), Write, G::Hash),
        info("hexpiretime", range(1, 1, 1), Read, G::Hash),
        info("hget", range(1, 1, 1), Read, G::Hash),
        info("hgetall", range(1, 1, 1), Read, G::Hash),
        info("hgetdel", range(1, 1, 1), Write, G::Hash),
        info("hgetex", range(1, 1, 1), Write, G::Hash),
        info("hincrby", range(1, 1, 1), Write, G::Hash),
        info("hincrbyfloat", range(1, 1, 1), Write, G::Hash),
        info("hkeys", range(1, 1, 1), Read, G::Hash),
        info("hlen", range(1, 1, 1), Read, G::Hash),
        info("hmget", range(1, 1, 1), Read, G::Hash),
        info("hmset", range(1, 1, 1), Write, G::Hash),
        // Redis 6.2 refuses these ("host:" and "post" are HTTP requests) and logs an attack.
        info("host:", None, Other, G::Connection),
        info("hpersist", range(1, 1, 1), Write, G::Hash),
        info("hpexpire", range(1, 1, 1), Write, G::Hash),
        info("hpexpireat", range(1, 1, 1), Write, G::Hash),
        info("hpexpiretime", range(1, 1, 1), Read, G::Hash),
        info("hpttl", range(1, 1, 1), Read, G::Hash),
        info("hrandfield", range(1, 1, 1), Read, G::Hash),
        info("hscan", range(1, 1, 1), Read, G::Hash),
        info("hset", range(1, 1, 1), Write, G::Hash),
        info("hsetex", range(1, 1, 1), Write, G::Hash),
        info("hsetnx", range(1, 1, 1), Write, G::Hash),
        info("hstrlen", range(1, 1, 1), Read, G::Hash),
        info("httl", range(1, 1, 1), Read, G::Hash),
        info("hvals", range(1, 1, 1), Read, G::Hash),
        info("incr", range(1, 1, 1), Write, G::String),
        info("incrby", range(1, 1, 1), Write, G::String),
        info("incrbyfloat", range(1, 1, 1), Write, G::String),
        info("info", None, Other, G::Server),
        info("keys", None, Read, G::Generic),
        info("lastsave", None, Other, G::Server),
        info("latency", None, Other, G::Server),
        info("lcs", range(1, 2, 1), Read, G::String),
        info("lindex", range(1, 1, 1), Read, G::List),
        info("linsert", range(1, 1, 1), Write, G::List),
        info("llen", range(1, 1, 1), Read, G::List),
        info("lmove", range(1, 2, 1), Write, G::List),
        info("lmpop", numkeys(1, 2, 1, &[]), Write, G::List),
        info("lolwut", None, Read, G::Server),
        info("lpop", range(1, 1, 1), Write, G::List),
        info("lpos", range(1, 1, 1), Read, G::List),
        info("lpush", range(1, 1, 1), Write, G::List),
        info("lpushx", range(1, 1, 1), Write, G::List),
        info("lrange", range(1, 1, 1), Read, G::List),
        info("lrem", range(1, 1, 1), Write, G::List),
        info("lset", range(1, 1, 1), Write, G::List),
        info("ltrim", range(1, 1, 1), Write, G::List),
        info("memory", Subcommand { first: 2 }, Other, G::Server),
        info("mget", range(1, -1, 1), Read, G::String),
        info("migrate", None, Other, G::Generic),
        info("module", None, Other, G::Server),
        info("monitor", None, Other, G::Server),
        info("move", range(1, 1, 1), Move, G::Generic),
        info("mset", range(1, -1, 2), Write, G::String),
        info("msetex", numkeys(1, 2, 2, &[]), Write, G::String),
        info("msetnx", range(1, -1, 2), Write, G::String),
        info("multi", None, Multi, G::Transactions),
        info("object", Subcommand { first: 2 }, Read, G::Generic),
        info("persist", range(1, 1, 1), Write, G::Generic),
        info("pexpire", range(1, 1, 1), Write, G::Generic),
        info("pexpireat", range(1, 1, 1), Write, G::Generic),
        info("pexpiretime", range(1, 1, 1), Read, G::Generic),
        info("pfadd", range(1, 1, 1), Write, G::Hyperloglog),
        info("pfcount", range(1, -1, 1), Write, G::Hyperloglog),
        info("pfdebug", range(2, 2, 1), Other, G::Hyperloglog),
        info("pfmerge", range(1, -1, 1), Write, G::Hyperloglog),
        info("pfselftest", None, Other, G::Hyperloglog),
        info("ping", None, Ping, G::Connection),
        info("post", None, Other, G::Connection),
        info("psetex", range(1, 1, 1), Write, G::String),
        info("psubscribe", None, Other, G::Pubsub),
        info("psync", None, Other, G::Server),
        info("pttl", range(1, 1, 1), Read, G::Generic),
        info("publish", None, Publish, G::Pubsub),
        info("pubsub", None, Other, G::Pubsub),
        info("punsubscribe", None, Other, G::Pubsub),
        info("quit", None, Other, G::Connection),
        info("randomkey", None, Read, G::Generic),
        info("readonly", None, Other, G::Cluster),
        info("readwrite", None, Other, G::Cluster),
        info("rename", range(1, 2, 1), Write, G::Generic),
        info("renamenx", range(1, 2, 1), Write, G::Generic),
        info("replconf", None, ReplConf, G::Server),
        info("replicaof", None, Other, G::Server),
        info("reset", None, Other, G::Connection),
        info("restore", range(1, 1, 1), Write, G::Generic),
        info("restore-asking", range(1, 1, 1), Write, G::Server),
        info("role", None, Other, G::Server),
        info("rpop", range(1, 1, 1), Write, G::List),
        info("rpoplpush", range(1, 2, 1), Write, G::List),
        info("rpush", range(1, 1, 1), Write, G::List),
        info("rpushx", range(1, 1, 1), Write, G::List),
        info("sadd", range(1, 1, 1), Write, G::Set),
        info("save", None, Other, G::Server),
        info("scan", None, Read, G::Generic),
        info("scard", range(1, 1, 1), Read, G::Set),
        info("script", None, Script, G::Scripting),
        info("sdiff", range(1, -1, 1), Read, G::Set),
        info("sdiffstore", range(1, -1, 1), Write, G::Set),
        info("select", None, Select, G::Connection),
        info("set", range(1, 1, 1), Write, G::String),
        info("setbit", range(1, 1, 1), Write, G::Bitmap),
        info("setex", range(1, 1, 1), Write, G::String),
        info("setnx", range(1, 1, 1), Write, G::String),
        info("setrange", range(1, 1, 1), Write, G::String),
        info("shutdown", None, Other, G::Server),
        info("sinter", range(1, -1, 1), Read, G::Set),
        info("sintercard", numkeys(1, 2, 1, &[]), Read, G::Set),
        info("sinterstore", range(1, -1, 1), Write, G::Set),
        info("sismember", range(1, 1, 1), Read, G::Set),
        info("slaveof", None, Other, G::Server),
        info("slowlog", None, Other, G::Server),
        info("smembers", range(1, 1, 1), Read, G::Set),
        info("smismember", range(1, 1, 1), Read, G::Set),
        info("smove", range(1, 2, 1), Write, G::Set),
        info("sort", Sort, Write, G::Generic),
        info("sort_ro", range(1, 1, 1), Read, G::Generic),
        info("spop", range(1, 1, 1), Write, G::Set),
        info("spublish", None, Publish, G::Pubsub),
        info("srandmember", range(1, 1, 1), Read, G::Set),
        info("srem", range(1, 1, 1), Write, G::Set),
        info("sscan", range(1, 1, 1), Read, G::Set),
        info("ssubscribe", None, Other, G::Pubsub),
        // Redis 6.2 only (LCS since 7.0); its keys follow a KEYS token, not extracted.
        info("stralgo", None, Read, G::String),
        info("strlen", range(1, 1, 1), Read, G::String),
        info("subscribe", None, Other, G::Pubsub),
        info("substr", range(1, 1, 1), Read, G::String),
        info("sunion", range(1, -1, 1), Read, G::Set),
        info("sunionstore", range(1, -1, 1), Write, G::Set),
        info("sunsubscribe", None, Other, G::Pubsub),
        info("swapdb", None, SwapDb, G::Server),
        info("sync", None, Other, G::Server),
        info("time", None, Other, G::Server),
        info("touch", range(1, -1, 1), Read, G::Generic),
        info("ttl", range(1, 1, 1), Read, G::Generic),
        info("type", range(1, 1, 1), Read, G::Generic),
        info("unlink", range(1, -1, 1), Write, G::Generic),
        info("unsubscribe", None, Other, G::Pubsub),
        info("unwatch", None, Other, G::Transactions),
        info("vadd", range(1, 1, 1), Write, G::Module),
        info("vcard", range(1, 1, 1), Read, G::Module),
        info("vdim", range(1, 1, 1), Read, G::Module),
        info("vemb", range(1, 1, 1), Read, G::Module),
        info("vgetattr", range(1, 1, 1), Read, G::Module),
        info("vinfo", range(1, 1, 1), Read, G::Module),
        info("vismember", range(1, 1, 1), Read, G::Module),
        info("vlinks", range(1, 1, 1), Read, G::Module),
        info("vrandmember", range(1, 1, 1), Read, G::Module),
        info("vrem", range(1, 1, 1), Write, G::Module),
        info("vsetattr", range(1, 1, 1), Write, G::Module),
        info("vsim", range(1, 1, 1), Read, G::Module),
        info("wait", None, Other, G::Generic),
        info("waitaof", None, Other, G::Generic),
        info("watch", range(1, -1, 1), Other, G::Transactions),
        info("xack", range(1, 1, 1), Write, G::Stream),
        info("xackdel", range(1, 1, 1), Write, G::Stream),
        info("xadd", range(1, 1, 1), Write, G::Stream),
        info("xautoclaim", range(1, 1, 1), Write, G::Stream),
        info("xclaim", range(1, 1, 1), Write, G::Stream),
        info("xdel", range(1, 1, 1), Write, G::Stream),
        info("xdelex", range(1, 1, 1), Write, G::Stream),
        info("xgroup", Subcommand { first: 2 }, Write, G::Stream),
        info("xinfo", Subcommand { first: 2 }, Read, G::Stream),
        info("xlen", range(1, 1, 1), Read, G::Stream),
        info("xpending", range(1, 1, 1), Read, G::Stream),
        info("xrange", range(1, 1, 1), Read, G::Stream),
        info("xread", Streams, Read, G::Stream),
        info("xreadgroup", Streams, Write, G::Stream),
        info("xrevrange", range(1, 1, 1), Read, G::Stream),
        info("xsetid", range(1, 1, 1), Write, G::Stream),
        info("xtrim", range(1, 1, 1), Write, G::Stream),
        info("zadd", range(1, 1, 1), Write, G::SortedSet),
        info("zcard", range(1, 1, 1), Read, G::SortedSet),
        info("zcount", range(1, 1, 1), Read, G::SortedSet),
        info("zdiff", numkeys(1, 2, 1, &[]), Read, G::SortedSet),
        info("zdiffstore", numkeys(2, 3, 1, &[1]), Write, G::SortedSet),
        info("zincrby", range(1, 1, 1), Write, G::SortedSet),
        info("zinter", numkeys(1, 2, 1, &[]), Read, G::SortedSet),
        info("zintercard", numkeys(1, 2, 1, &[]), Read, G::SortedSet),
        info("zinterstore", numkeys(2, 3, 1, &[1]), Write, G::SortedSet),
        info("zlexcount", range(1, 1, 1), Read, G::SortedSet),
        info("zmpop", numkeys(1, 2, 1, &[]), Write, G::SortedSet),
        info("zmscore", range(1, 1, 1), Read, G::SortedSet),
        info("zpopmax", range(1, 1, 1), Write, G::SortedSet),
        info("zpopmin", range(1, 1, 1), Write, G::SortedSet),
        info("zrandmember", range(1, 1, 1), Read, G::SortedSet),
        info("zrange", range(1, 1, 1), Read, G::SortedSet),
        info("zrangebylex", range(1, 1, 1), Read, G::SortedSet),
        info("zrangebyscore", range(1, 1, 1), Read, G::SortedSet),
        info("zrangestore", range(1, 2, 1), Write, G::SortedSet),
        info("zrank", range(1, 1, 1), Read, G::SortedSet),
        info("zrem", range(1, 1, 1), Write, G::SortedSet),
        info("zremrangebylex", range(1, 1, 1), Write, G::SortedSet),
        info("zremrangebyrank", range(1, 1, 1), Write, G::SortedSet),
        info("zremrangebyscore", range(1, 1, 1), Write, G::SortedSet),
        info("zrevrange", range(1, 1, 1), Read, G::SortedSet),
        info("zrevrangebylex", range(1, 1, 1), Read, G::SortedSet),
        info("zrevrangebyscore", range(1, 1, 1), Read, G::SortedSet),
        info("zrevrank", range(1, 1, 1), Read, G::SortedSet),
        info("zscan", range(1, 1, 1), Read, G::SortedSet),
        info("zscore", range(1, 1, 1), Read, G::SortedSet),
        info("zunion", numkeys(1, 2, 1, &[]), Read, G::SortedSet),
        info("zunionstore", numkeys(2, 3, 1, &[1]), Write, G::SortedSet),
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
