//! Which keys a tool works on: databases, key globs, a key regex, and value types, and the
//! databases and keys it leaves out. Written once here; every tool's `--db`, `--key`,
//! `--key-regex`, `--type` and `--exclude-*` flags build one `KeyFilter`.
//!
//! And which commands of a replication stream shake-sync applies ([`CommandFilter`]: `--command`,
//! `--command-group`, `--exclude-command`, `--exclude-command-group`), by the names and groups
//! of [`crate::command`]'s table.

use regex::bytes::Regex;

use crate::command::{command_info, Group, Kind};
use crate::glob::glob_match;
use crate::rdb::ValueType;

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    dbs: Vec<u64>,
    globs: Vec<Vec<u8>>,
    regex: Option<Regex>,
    types: Vec<ValueType>,
    not_dbs: Vec<u64>,
    not_globs: Vec<Vec<u8>>,
    not_regex: Option<Regex>,
}

impl KeyFilter {
    /// A filter that lets everything through.
    pub fn all() -> Self {
        Self::default()
    }

    /// Builds a filter; each empty list means "no restriction". Keys match any of the globs;
    /// with both globs and a regex, a key must satisfy both.
    pub fn new(
        dbs: Vec<u64>,
        globs: Vec<String>,
        regex: Option<&str>,
        types: Vec<ValueType>,
    ) -> Result<Self, String> {
        let regex = match regex {
            Some(r) => Some(Regex::new(r).map_err(|e| format!("invalid --key-regex {r:?}: {e}"))?),
            None => None,
        };
        Ok(KeyFilter {
            dbs,
            globs: globs.into_iter().map(String::into_bytes).collect(),
            regex,
            types,
            ..KeyFilter::default()
        })
    }

    /// Adds what is left out: databases, key globs, a key regex. An excluded database or key is
    /// not taken even when the allow rules name it.
    pub fn excluding(
        mut self,
        dbs: Vec<u64>,
        globs: Vec<String>,
        regex: Option<&str>,
    ) -> Result<Self, String> {
        self.not_regex = match regex {
            Some(r) => {
                Some(Regex::new(r).map_err(|e| format!("invalid --exclude-key-regex {r:?}: {e}"))?)
            }
            None => None,
        };
        self.not_dbs = dbs;
        self.not_globs = globs.into_iter().map(String::into_bytes).collect();
        Ok(self)
    }

    /// Whether some database is left out by `--exclude-db`.
    pub fn excludes_dbs(&self) -> bool {
        !self.not_dbs.is_empty()
    }

    /// Parses a `--type` value.
    pub fn parse_type(s: &str) -> Result<ValueType, String> {
        ValueType::parse(s).ok_or_else(|| {
            format!(
                "unknown type {s:?}: expected one of string, list, set, zset, hash, stream, module"
            )
        })
    }

    pub fn is_everything(&self) -> bool {
        self.dbs.is_empty()
            && self.globs.is_empty()
            && self.regex.is_none()
            && self.types.is_empty()
            && self.not_dbs.is_empty()
            && !self.excludes_keys()
    }

    fn excludes_keys(&self) -> bool {
        !self.not_globs.is_empty() || self.not_regex.is_some()
    }

    /// Whether keys are chosen by name (`--key`, `--key-regex`).
    pub fn has_key_rules(&self) -> bool {
        !self.globs.is_empty() || self.regex.is_some() || self.excludes_keys()
    }

    /// Whether keys are chosen by type (`--type`).
    pub fn has_type_rules(&self) -> bool {
        !self.types.is_empty()
    }

    /// The databases `--db` names (empty: every database).
    pub fn dbs(&self) -> &[u64] {
        &self.dbs
    }

    pub fn db_allowed(&self, db: u64) -> bool {
        (self.dbs.is_empty() || self.dbs.contains(&db)) && !self.not_dbs.contains(&db)
    }

    pub fn key_allowed(&self, key: &[u8]) -> bool {
        (self.globs.is_empty() || self.globs.iter().any(|g| glob_match(g, key)))
            && self.regex.as_ref().is_none_or(|r| r.is_match(key))
            && !self.not_globs.iter().any(|g| glob_match(g, key))
            && !self.not_regex.as_ref().is_some_and(|r| r.is_match(key))
    }

    pub fn type_allowed(&self, t: ValueType) -> bool {
        self.types.is_empty() || self.types.contains(&t)
    }

    pub fn matches(&self, db: u64, key: &[u8], t: ValueType) -> bool {
        self.db_allowed(db) && self.type_allowed(t) && self.key_allowed(key)
    }
}

/// Which commands of a replication stream are applied, by name and by group (the command
/// table's, [`crate::command::Group`]). Every list empty: every command.
///
/// A command passes when no exclusion names it or its group, and each allow list given names it
/// (`--command`) or its group (`--command-group`): with both, both must (as `--key` with
/// `--key-regex`, and as RedisShake v4's `allow_command` with `allow_command_group`). A command
/// the table does not know (a module's) is of group `module` and cannot be named.
///
/// The stream's frame is not judged: `MULTI`/`EXEC`/`DISCARD` (the commands inside a transaction
/// are), `SELECT`, `PING`, `REPLCONF`; naming them is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    /// Table names (lowercase).
    commands: Vec<&'static str>,
    groups: Vec<Group>,
    not_commands: Vec<&'static str>,
    not_groups: Vec<Group>,
}

impl CommandFilter {
    /// Builds the filter from the flags' values (any case); an unknown command or group, or a
    /// command of the stream's frame, is one line naming it and the flag.
    pub fn new(
        commands: &[String],
        exclude_commands: &[String],
        groups: &[String],
        exclude_groups: &[String],
    ) -> Result<CommandFilter, String> {
        let names = |flag: &str, list: &[String]| -> Result<Vec<&'static str>, String> {
            list.iter()
                .map(|c| CommandFilter::command(c).map_err(|e| format!("{flag} {e}")))
                .collect()
        };
        let groups_of = |flag: &str, list: &[String]| -> Result<Vec<Group>, String> {
            list.iter()
                .map(|g| Group::parse(g).map_err(|e| format!("{flag} {e}")))
                .collect()
        };
        Ok(CommandFilter {
            commands: names("--command", commands)?,
            groups: groups_of("--command-group", groups)?,
            not_commands: names("--exclude-command", exclude_commands)?,
            not_groups: groups_of("--exclude-command-group", exclude_groups)?,
        })
    }

    pub fn is_everything(&self) -> bool {
        self.commands.is_empty()
            && self.groups.is_empty()
            && self.not_commands.is_empty()
            && self.not_groups.is_empty()
    }

    /// Whether the command named `name` (any case) is applied.
    pub fn allows(&self, name: &[u8]) -> bool {
        if self.is_everything() {
            return true;
        }
        let info = command_info(name);
        let group = info.map_or(Group::Module, |i| i.group);
        let named = |list: &[&str]| info.is_some_and(|i| list.contains(&i.name));
        !named(&self.not_commands)
            && !self.not_groups.contains(&group)
            && (self.commands.is_empty() || named(&self.commands))
            && (self.groups.is_empty() || self.groups.contains(&group))
    }
}

impl CommandFilter {
    /// The table's name of a command a filter names (any case); the error starts with the name
    /// as given.
    pub fn command(given: &str) -> Result<&'static str, String> {
        let Some(info) = command_info(given.trim().as_bytes()) else {
            return Err(format!(
            "{given:?}: not a command of Redis 6.2-8 or Valkey 8-9 (the names COMMAND LIST gives, any case); a module's commands are judged by their group: --command-group module / --exclude-command-group module"
        ));
        };
        if matches!(
            info.kind,
            Kind::Multi | Kind::Exec | Kind::Discard | Kind::Select | Kind::Ping | Kind::ReplConf
        ) {
            return Err(format!(
            "{given:?}: MULTI, EXEC, DISCARD, SELECT, PING and REPLCONF frame the stream and are not judged by the command filters (the commands inside a transaction are; choose databases with --db/--exclude-db)"
        ));
        }
        Ok(info.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_filter_names_and_groups() {
        let all = CommandFilter::default();
        assert!(all.is_everything() && all.allows(b"FLUSHALL") && all.allows(b"JSON.SET"));

        let only = CommandFilter::new(&strings(&["set", "HSET"]), &[], &[], &[]).unwrap();
        assert!(only.allows(b"SET") && only.allows(b"hset"));
        assert!(!only.allows(b"DEL") && !only.allows(b"JSON.SET"));

        // RedisShake's spelling and Redis's alike; a module command is group module.
        let groups =
            CommandFilter::new(&[], &[], &strings(&["STRING", "sorted_set"]), &[]).unwrap();
        assert!(groups.allows(b"incr") && groups.allows(b"ZADD"));
        assert!(!groups.allows(b"HSET") && !groups.allows(b"JSON.SET"));
        let module = CommandFilter::new(&[], &[], &strings(&["module"]), &[]).unwrap();
        assert!(module.allows(b"JSON.SET") && module.allows(b"VADD") && !module.allows(b"SET"));

        // Exclusions win; both allow lists must admit a command.
        let f = CommandFilter::new(
            &strings(&["set", "hset", "del"]),
            &strings(&["del"]),
            &strings(&["string", "generic"]),
            &strings(&["scripting"]),
        )
        .unwrap();
        assert!(f.allows(b"SET"));
        assert!(!f.allows(b"HSET"), "hash is not an allowed group");
        assert!(!f.allows(b"DEL"), "excluded by name");
        assert!(!f.allows(b"EVAL") && !f.allows(b"INCR"));
        let blocked =
            CommandFilter::new(&[], &[], &[], &strings(&["Scripting", "PUBSUB"])).unwrap();
        assert!(!blocked.allows(b"EVALSHA") && !blocked.allows(b"FCALL"));
        assert!(!blocked.allows(b"FUNCTION") && !blocked.allows(b"SCRIPT"));
        assert!(!blocked.allows(b"PUBLISH") && !blocked.allows(b"SPUBLISH"));
        assert!(blocked.allows(b"SET") && blocked.allows(b"JSON.SET"));
    }

    #[test]
    fn command_filter_refuses_what_it_cannot_judge() {
        for (c, x, g, xg, expect) in [
            (
                &["NOSUCH"][..],
                &[][..],
                &[][..],
                &[][..],
                "--command \"NOSUCH\": not a command",
            ),
            (
                &[],
                &["JSON.SET"],
                &[],
                &[],
                "--exclude-command \"JSON.SET\": not a command",
            ),
            (&["MULTI"], &[], &[], &[], "frame the stream"),
            (&[], &["select"], &[], &[], "frame the stream"),
            (
                &[],
                &[],
                &["strings"],
                &[],
                "--command-group \"strings\": not a command group",
            ),
            (
                &[],
                &[],
                &[],
                &["TAIRHASH"],
                "Tair's commands are module commands",
            ),
        ] {
            let err = CommandFilter::new(&strings(c), &strings(x), &strings(g), &strings(xg))
                .unwrap_err();
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = Group::parse("nope").unwrap_err();
        for g in Group::ALL {
            assert!(err.contains(g.name()), "{err} lists {g}");
        }
    }

    #[test]
    fn combines_conditions() {
        let f = KeyFilter::new(
            vec![1],
            vec!["user:*".into()],
            Some("^user:[0-9]+$"),
            vec![ValueType::Hash],
        )
        .unwrap();
        assert!(f.matches(1, b"user:12", ValueType::Hash));
        assert!(!f.matches(0, b"user:12", ValueType::Hash));
        assert!(!f.matches(1, b"user:ab", ValueType::Hash));
        assert!(!f.matches(1, b"user:12", ValueType::Set));
        assert!(KeyFilter::all().matches(9, b"x", ValueType::Stream));
        assert!(KeyFilter::new(vec![], vec![], Some("("), vec![]).is_err());
        let x = KeyFilter::new(vec![], vec!["user:*".into()], None, vec![])
            .unwrap()
            .excluding(vec![2], vec!["*:tmp".into()], Some("^user:9"))
            .unwrap();
        assert!(x.matches(0, b"user:1", ValueType::String));
        assert!(!x.matches(2, b"user:1", ValueType::String));
        assert!(!x.matches(0, b"user:1:tmp", ValueType::String));
        assert!(!x.matches(0, b"user:91", ValueType::String));
        assert!(!x.is_everything() && x.has_key_rules() && x.excludes_dbs());
    }
}
