//! shake-core's command table (`shake_core::command`) held against what real servers say about
//! their own commands:
//!
//! - `<flavor>::getkeys`: for ~150 realistic argvs covering every kind of key position (ranges,
//!   numkeys, SORT/GEORADIUS STORE, XREAD STREAMS, container subcommands) and the special
//!   commands of a replication stream, `command_keys` names the same keys as `COMMAND GETKEYS`.
//!   Commands the server does not know, and argvs of a later syntax than its arity allows, are
//!   skipped (and listed).
//! - `<flavor>::table`: every command the server lists is in the table; a `Range` entry has the
//!   server's legacy `(first, last, step)`; an entry without keys is one the server gives no
//!   legacy key range (the channel-taking commands and MIGRATE excepted, see `NOT_KEYS`); a
//!   command the server flags `write` is not `Kind::Read`, and a `Kind::Write` is flagged
//!   `write` by the server (PFCOUNT excepted, see the table's doc); on 7.0+ every command's
//!   group is the one `COMMAND DOCS` names (what shake-sync's `--command-group` judges).
//!
//! Redis 6.2 and Valkey 8.1 are checked too where installed: a cheap extra guarantee.

use redis::Value;
use shake_core::command::{command_info, command_keys, Group, KeySpec, Kind};
use shake_tests::*;

/// Sample argvs, written the way clients (and masters) send them. Key names are all distinct
/// within an argv (`k1`, `k2`, ...), so key lists compare by name.
const SAMPLES: &[&str] = &[
    // Strings.
    "SET k1 v EX 10 NX",
    "SET k1 v KEEPTTL GET",
    "SETEX k1 10 v",
    "PSETEX k1 100 v",
    "SETNX k1 v",
    "GETSET k1 v",
    "GETDEL k1",
    "GETEX k1 PERSIST",
    "APPEND k1 v",
    "SETRANGE k1 3 v",
    "INCR k1",
    "INCRBY k1 2",
    "INCRBYFLOAT k1 1.5",
    "DECR k1",
    "DECRBY k1 2",
    "MSET k1 v1 k2 v2 k3 v3",
    "MSETNX k1 v1 k2 v2",
    "MSETEX 2 k1 v1 k2 v2 EX 10",
    "DELIFEQ k1 v",
    "DELEX k1 IFEQ v",
    "GET k1",
    "MGET k1 k2 k3",
    "LCS k1 k2",
    // Generic.
    "DEL k1 k2 k3",
    "UNLINK k1 k2",
    "EXPIRE k1 10",
    "PEXPIRE k1 100 NX",
    "EXPIREAT k1 2000000000",
    "PEXPIREAT k1 2000000000000",
    "PERSIST k1",
    "RENAME k1 k2",
    "RENAMENX k1 k2",
    "RESTORE k1 0 payload REPLACE ABSTTL",
    "RESTORE-ASKING k1 0 payload",
    "COPY k1 k2 DB 1 REPLACE",
    "MOVE k1 1",
    "TOUCH k1 k2",
    "EXISTS k1 k2",
    "OBJECT ENCODING k1",
    "OBJECT HELP",
    "MEMORY USAGE k1",
    "SORT k1 BY w_* LIMIT 0 10 GET # GET h_*->f DESC ALPHA STORE k2",
    "SORT k1",
    "SORT_RO k1 BY w_*",
    // Lists.
    "LPUSH k1 a b",
    "RPUSH k1 a b",
    "LPUSHX k1 a",
    "RPUSHX k1 a",
    "LPOP k1 2",
    "RPOP k1",
    "LSET k1 0 v",
    "LTRIM k1 0 1",
    "LREM k1 0 v",
    "LINSERT k1 BEFORE a b",
    "LMOVE k1 k2 LEFT RIGHT",
    "BLMOVE k1 k2 LEFT RIGHT 0",
    "RPOPLPUSH k1 k2",
    "BRPOPLPUSH k1 k2 0",
    "BLPOP k1 k2 0",
    "BRPOP k1 0",
    "LMPOP 2 k1 k2 LEFT COUNT 2",
    "BLMPOP 0 2 k1 k2 RIGHT",
    // Sets.
    "SADD k1 a b",
    "SREM k1 a",
    "SPOP k1 2",
    "SMOVE k1 k2 m",
    "SINTERSTORE k3 k1 k2",
    "SUNIONSTORE k3 k1 k2",
    "SDIFFSTORE k3 k1 k2",
    "SINTERCARD 2 k1 k2 LIMIT 1",
    // Sorted sets.
    "ZADD k1 NX 1 a 2 b",
    "ZINCRBY k1 1 a",
    "ZREM k1 a",
    "ZREMRANGEBYSCORE k1 0 1",
    "ZREMRANGEBYRANK k1 0 1",
    "ZREMRANGEBYLEX k1 - +",
    "ZPOPMIN k1 2",
    "ZPOPMAX k1",
    "BZPOPMIN k1 k2 0",
    "BZPOPMAX k1 0",
    "ZRANGESTORE k2 k1 0 -1",
    "ZUNIONSTORE k3 2 k1 k2 WEIGHTS 1 2",
    "ZINTERSTORE k3 2 k1 k2 AGGREGATE MAX",
    "ZDIFFSTORE k3 2 k1 k2",
    "ZUNION 2 k1 k2 WITHSCORES",
    "ZINTERCARD 2 k1 k2",
    "ZMPOP 2 k1 k2 MIN",
    "BZMPOP 0 1 k1 MAX COUNT 2",
    // Hashes, field TTLs included.
    "HSET k1 f v g w",
    "HMSET k1 f v",
    "HSETNX k1 f v",
    "HDEL k1 f g",
    "HINCRBY k1 f 1",
    "HINCRBYFLOAT k1 f 1.5",
    "HSETEX k1 EX 100 FIELDS 1 f v",
    "HGETEX k1 PERSIST FIELDS 1 f",
    "HGETDEL k1 FIELDS 1 f",
    "HEXPIRE k1 10 FIELDS 1 f",
    "HPEXPIRE k1 100 NX FIELDS 2 f g",
    "HEXPIREAT k1 2000000000 FIELDS 1 f",
    "HPEXPIREAT k1 2000000000000 FIELDS 1 f",
    "HPERSIST k1 FIELDS 1 f",
    // Streams.
    "XADD k1 * f v",
    "XADD k1 MAXLEN ~ 10 * f v",
    "XTRIM k1 MAXLEN 10",
    "XDEL k1 1-1 2-1",
    "XGROUP CREATE k1 g $ MKSTREAM",
    "XGROUP SETID k1 g 0",
    "XGROUP DESTROY k1 g",
    "XGROUP CREATECONSUMER k1 g c",
    "XGROUP DELCONSUMER k1 g c",
    "XSETID k1 1-1",
    "XCLAIM k1 g c 0 1-1 JUSTID",
    "XAUTOCLAIM k1 g c 0 0",
    "XACK k1 g 1-1",
    "XACKDEL k1 g IDS 1 1-1",
    "XDELEX k1 IDS 1 1-1",
    "XINFO STREAM k1",
    "XREAD COUNT 1 STREAMS k1 k2 0 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS k1 >",
    // Bitmaps, HyperLogLog, geo.
    "SETBIT k1 7 1",
    "BITOP AND k3 k1 k2",
    "BITFIELD k1 SET u8 0 1",
    "PFADD k1 a b",
    "PFMERGE k3 k1 k2",
    "PFCOUNT k1 k2",
    "GEOADD k1 1 2 m",
    "GEORADIUS k1 1 2 3 km STORE k2",
    "GEORADIUS k1 1 2 3 km WITHDIST",
    "GEORADIUSBYMEMBER k1 m 3 km COUNT 2 STOREDIST k2",
    "GEOSEARCHSTORE k2 k1 FROMMEMBER m BYRADIUS 3 km",
    // Scripting and functions.
    "EVAL return 2 k1 k2 a",
    "EVALSHA 0123456789012345678901234567890123456789 1 k1",
    "EVAL_RO return 1 k1",
    "EVALSHA_RO 0123456789012345678901234567890123456789 0",
    "FCALL f 1 k1 a",
    "FCALL_RO f 2 k1 k2",
    "SCRIPT LOAD return",
    "SCRIPT FLUSH",
    "FUNCTION FLUSH",
    "FUNCTION DELETE lib",
    // The rest of a replication stream.
    "SELECT 1",
    "PING",
    "PING x",
    "MULTI",
    "EXEC",
    "DISCARD",
    "REPLCONF GETACK *",
    "PUBLISH ch m",
    "SPUBLISH ch m",
    "FLUSHALL ASYNC",
    "FLUSHDB",
    "SWAPDB 0 1",
];

/// Entries whose keys deliberately differ from the server's legacy key range: the channel of a
/// sharded pub/sub command is no key (the servers' key specs say `not_key`), and MIGRATE's keys
/// are not extracted (see `Kind::Other`).
const NOT_KEYS: &[&str] = &[
    "spublish",
    "ssubscribe",
    "sunsubscribe",
    "clusterscan",
    "migrate",
];

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// The server's own description of a command (`COMMAND INFO`), `None` when it does not know it.
fn server_info(con: &mut redis::Connection, name: &str) -> Option<Vec<Value>> {
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(name)
        .query(con)
        .unwrap_or_else(|e| panic!("COMMAND INFO {name}: {e}"));
    match reply {
        Value::Array(mut entries) if entries.len() == 1 => match entries.remove(0) {
            Value::Array(info) => Some(info),
            _ => None,
        },
        other => panic!("COMMAND INFO {name}: unexpected reply {other:?}"),
    }
}

fn getkeys(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let server = Server::start(flavor);
    let mut con = server.client();
    let (mut checked, mut skipped) = (0, Vec::new());
    for sample in SAMPLES {
        let argv: Vec<&str> = sample.split(' ').collect();
        let Some(info) = server_info(&mut con, argv[0]) else {
            skipped.push(argv[0].to_string());
            continue;
        };
        // An argv of a later syntax (PEXPIRE ... NX on 6.2) does not fit this version's arity.
        let arity = int(&info[1]).unwrap();
        let fits = if arity < 0 {
            argv.len() as i64 >= -arity
        } else {
            argv.len() as i64 == arity
        };
        if !fits {
            skipped.push(format!("{sample:?}"));
            continue;
        }
        assert!(
            command_info(argv[0].as_bytes()).is_some(),
            "{flavor} knows {}, the table does not",
            argv[0]
        );
        let ours: Vec<&str> = command_keys(&argv)
            .unwrap_or_else(|e| panic!("command_keys({sample}): {e}"))
            .into_iter()
            .map(|i| argv[i])
            .collect();
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(&argv)
            .query(&mut con);
        let theirs = match reply {
            Ok(keys) => keys,
            Err(e) if e.to_string().contains("no key arguments") => Vec::new(),
            // Redis 7.0 refuses `COMMAND GETKEYS <cmd>` without arguments; its COMMAND INFO
            // then says whether the command has keys at all.
            Err(e) if argv.len() == 1 && e.to_string().contains("wrong number of arguments") => {
                assert_eq!(
                    int(&info[3]),
                    Some(0),
                    "{flavor}: {sample} has keys: {info:?}"
                );
                Vec::new()
            }
            // Redis 6.2 has no per-subcommand key specs: `OBJECT HELP` is OBJECT with its legacy
            // key position (2) missing, which it reports as invalid rather than keyless.
            Err(e)
                if flavor == Flavor::Redis62
                    && argv.len() == 2
                    && e.to_string().contains("Invalid arguments specified") =>
            {
                Vec::new()
            }
            Err(e) => panic!("{flavor}: COMMAND GETKEYS {sample}: {e}"),
        };
        // Order aside: Redis 6.2 lists ZUNIONSTORE's destination last, 7.0+ first.
        let (mut ours, mut theirs) = (ours, theirs);
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "{flavor}: keys of {sample}");
        checked += 1;
    }
    eprintln!(
        "{flavor}: {checked} argvs agree with COMMAND GETKEYS; unknown to the server or of a later syntax, skipped: {}",
        skipped.join(" ")
    );
    assert!(checked >= 90, "{flavor}: only {checked} samples checked");
}

fn table(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let server = Server::start(flavor);
    let mut con = server.client();
    let all: Vec<Value> = redis::cmd("COMMAND").query(&mut con).expect("COMMAND");
    let mut missing = Vec::new();
    for entry in &all {
        let Value::Array(info) = entry else {
            panic!("{flavor}: COMMAND entry {entry:?}");
        };
        let name = text(&info[0]).expect("command name");
        let flags: Vec<String> = match &info[2] {
            Value::Array(f) => f.iter().filter_map(text).collect(),
            Value::Set(f) => f.iter().filter_map(text).collect(),
            other => panic!("{flavor}: flags of {name}: {other:?}"),
        };
        let legacy = (
            int(&info[3]).unwrap(),
            int(&info[4]).unwrap(),
            int(&info[5]).unwrap(),
        );
        let Some(ours) = command_info(name.as_bytes()) else {
            missing.push(name);
            continue;
        };
        match ours.keys {
            KeySpec::Range { first, last, step } => assert_eq!(
                (first as i64, last as i64, step as i64),
                legacy,
                "{flavor}: key range of {name}"
            ),
            KeySpec::None if !NOT_KEYS.contains(&name.as_str()) => {
                assert_eq!(legacy.0, 0, "{flavor}: {name} has keys {legacy:?}")
            }
            _ => {}
        }
        let write = flags.iter().any(|f| f == "write");
        if write {
            assert_ne!(ours.kind, Kind::Read, "{flavor}: {name} is flagged write");
        }
        if ours.kind == Kind::Write
            && name != "pfcount"
            && !matches!(ours.keys, KeySpec::Subcommand { .. })
        {
            assert!(write, "{flavor}: {name} is a Write but flagged {flags:?}");
        }
    }
    assert!(
        missing.is_empty(),
        "{flavor} has commands the table lacks: {}",
        missing.join(" ")
    );
    eprintln!("{flavor}: all {} commands are in the table", all.len());
    if flavor.is_7_0_or_later() {
        groups(flavor, &mut con);
    }
}

/// Pairs of a RESP2 flat array or a RESP3 map.
fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        other => panic!("not a map: {other:?}"),
    }
}

/// Every command's group in the table is the one `COMMAND DOCS` gives (7.0+; 6.2 has no
/// COMMAND DOCS): what `--command-group` judges.
fn groups(flavor: Flavor, con: &mut redis::Connection) {
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .query(con)
        .expect("COMMAND DOCS");
    let mut checked = 0;
    for (name, doc) in pairs(&docs) {
        let name = text(name).expect("command name");
        let group = pairs(doc)
            .into_iter()
            .find(|(k, _)| text(k).as_deref() == Some("group"))
            .and_then(|(_, g)| text(g))
            .unwrap_or_else(|| panic!("{flavor}: {name} has no group"));
        let ours = command_info(name.as_bytes())
            .unwrap_or_else(|| panic!("{flavor}: {name} is not in the table"));
        assert_eq!(ours.group.name(), group, "{flavor}: group of {name}");
        assert_eq!(Group::parse(&group), Ok(ours.group), "{flavor}: {group}");
        checked += 1;
    }
    assert!(checked > 200, "{flavor}: only {checked} groups checked");
    eprintln!("{flavor}: the groups of all {checked} commands agree with COMMAND DOCS");
}

macro_rules! per_flavor {
    ($($name:ident => $flavor:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn getkeys() {
                super::getkeys($flavor);
            }
            #[test]
            fn table() {
                super::table($flavor);
            }
        }
    )*};
}

per_flavor! {
    redis_6_2 => Flavor::Redis62,
    redis_7_0 => Flavor::Redis70,
    valkey_8_1 => Flavor::Valkey81,
    valkey_9_1 => Flavor::Valkey91,
    redis_8_2 => Flavor::Redis82,
}
