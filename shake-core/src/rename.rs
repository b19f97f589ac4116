//! `--rename-prefix OLD=NEW`: the rules that give a source key its name on the target, owned
//! here once. shake-restore, shake-rump and shake-sync's full sync rename where the planner
//! admits a key (`apply::plan`); shake-sync's command stream renames every key position of every
//! command, by the command table ([`crate::command`]), before the command is routed to its
//! (new) slot; shake-check maps each source key to its target name before comparing.
//! Whatever reads the source by a target key's name (shake-sync's and shake-rump's repairs,
//! shake-check's look-up of target keys, `--prune`'s scope) goes back through
//! [`Rename::sources_of`].
//!
//! The rules:
//! - a key starting with OLD gets NEW instead of OLD; when several OLDs match, the longest wins;
//!   a key no OLD matches keeps its name;
//! - an empty NEW strips OLD; an empty OLD puts NEW before every key;
//! - shake-sync's and the big-key path's own keys (`shake-sync:`, `shake-building:`) are never
//!   renamed, and a rule whose OLD or NEW starts with either prefix is refused; a big key's
//!   temporary name in a stream (`shake-building:{tag}:KEY`, from a chained sync) carries the
//!   renamed KEY and the tag of its new slot;
//! - two rules with the same OLD are refused; a key a rule would turn into a reserved name
//!   stops the run naming the key;
//! - filters (`--key`, `--key-regex`, `--exclude-key`) judge the source name.
//!
//! A command whose arguments carry key names the table cannot place (SORT's BY and GET
//! patterns, a script's keys, a command the table does not know) cannot be renamed exactly: it
//! is refused with one line naming the command and why, never written under the old names.

use std::borrow::Cow;

use crate::command::{command_info, Kind};
use crate::text::quote_bytes;

/// Prefixes of the tools' own keys: never renamed, never a rule's OLD or NEW.
const RESERVED: [&[u8]; 2] = [b"shake-sync:", b"shake-building:"];
const BUILDING: &[u8] = b"shake-building:{";

/// The `--rename-prefix` rules (empty: every key keeps its name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rename {
    /// (OLD, NEW), longest OLD first.
    rules: Vec<(Vec<u8>, Vec<u8>)>,
}

fn reserved(b: &[u8]) -> Option<&'static str> {
    RESERVED
        .iter()
        .find(|r| b.starts_with(r))
        .map(|r| std::str::from_utf8(r).unwrap_or("shake-"))
}

impl Rename {
    /// Parses `OLD=NEW` rules (the first `=` separates them, so OLD holds no `=`).
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Rename, String> {
        let mut rules: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for spec in specs {
            let spec = spec.as_ref();
            let Some((old, new)) = spec.split_once('=') else {
                return Err(format!(
                    "--rename-prefix {spec:?}: expected OLD=NEW (NEW may be empty: OLD= strips the prefix; OLD may be empty: =NEW prefixes every key)"
                ));
            };
            for (what, p) in [("OLD", old), ("NEW", new)] {
                if let Some(r) = reserved(p.as_bytes()) {
                    return Err(format!(
                        "--rename-prefix {spec:?}: {what} starts with {r:?}, which is reserved for the tools' own keys; pick another prefix"
                    ));
                }
            }
            if rules.iter().any(|(o, _)| o == old.as_bytes()) {
                return Err(format!(
                    "--rename-prefix {spec:?}: OLD {old:?} is given twice; give each prefix one rule"
                ));
            }
            rules.push((old.as_bytes().to_vec(), new.as_bytes().to_vec()));
        }
        rules.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(Rename { rules })
    }

    /// No rule: every key keeps its name.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The target name of source key `key` (borrowed when it does not change), or why it cannot
    /// be renamed (it would become a reserved name).
    pub fn key<'a>(&self, key: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
        if self.rules.is_empty() {
            return Ok(Cow::Borrowed(key));
        }
        if key.starts_with(BUILDING) {
            return Ok(self.building(key)?.map_or(Cow::Borrowed(key), Cow::Owned));
        }
        if reserved(key).is_some() {
            return Ok(Cow::Borrowed(key));
        }
        let Some((old, new)) = self.rules.iter().find(|(o, _)| key.starts_with(o)) else {
            return Ok(Cow::Borrowed(key));
        };
        let mut out = Vec::with_capacity(new.len() + key.len() - old.len());
        out.extend_from_slice(new);
        out.extend_from_slice(&key[old.len()..]);
        if let Some(r) = reserved(&out) {
            return Err(format!(
                "--rename-prefix turns key {} into {}, which starts with {r:?}, a prefix reserved for the tools' own keys; leave the key out (--exclude-key) or change the rule",
                quote_bytes(key),
                quote_bytes(&out)
            ));
        }
        Ok(Cow::Owned(out))
    }

    /// `shake-building:{tag}:KEY` (a big key's temporary name, see
    /// [`crate::apply::building_name`]): the temporary name of the renamed KEY, `None` when
    /// KEY keeps its name or the name is not of that form.
    fn building(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let rest = &key[BUILDING.len()..];
        let Some(close) = rest.windows(2).position(|w| w == b"}:") else {
            return Ok(None);
        };
        let inner = &rest[close + 2..];
        match self.key(inner)? {
            Cow::Borrowed(_) => Ok(None),
            Cow::Owned(n) => Ok(Some(crate::apply::building_name(&n))),
        }
    }

    /// The source names that [`Rename::key`] turns into `target` (usually one; none when no
    /// source key gets this name; several when rules make two names meet).
    pub fn sources_of(&self, target: &[u8]) -> Vec<Vec<u8>> {
        if self.rules.is_empty() || reserved(target).is_some() {
            return vec![target.to_vec()];
        }
        let mut out = Vec::new();
        let mut candidates: Vec<Vec<u8>> = vec![target.to_vec()];
        for (old, new) in &self.rules {
            if let Some(rest) = target.strip_prefix(new.as_slice()) {
                let mut s = old.clone();
                s.extend_from_slice(rest);
                candidates.push(s);
            }
        }
        for c in candidates {
            if self.key(&c).is_ok_and(|n| n.as_ref() == target) && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// `argv` (a command, its name first) with every key renamed, the keys at `key_idx`, the
    /// indexes the command table gives (`CommandInfo::key_indexes`): `None` when no key changes.
    /// `Err` with one line when the command names keys the table cannot place, so a rename
    /// cannot be exact.
    pub fn command(
        &self,
        argv: &[&[u8]],
        key_idx: &[usize],
    ) -> Result<Option<Vec<Vec<u8>>>, String> {
        if self.rules.is_empty() || argv.is_empty() {
            return Ok(None);
        }
        let name = String::from_utf8_lossy(argv[0]).to_ascii_uppercase();
        let Some(info) = command_info(argv[0]) else {
            return Err(format!(
                "{name} is not a command shake-sync knows, so where its keys are is unknown and --rename-prefix cannot rename them"
            ));
        };
        if info.kind == Kind::Eval {
            return Err(format!(
                "{name} runs a script, which can name keys its code computes; --rename-prefix cannot rename them (the source propagates scripts by their effects unless told otherwise: lua-replicate-commands)"
            ));
        }
        if info.name == "sort" || info.name == "sort_ro" {
            let mut i = 2;
            while i < argv.len() {
                let a = argv[i];
                if a.eq_ignore_ascii_case(b"limit") {
                    i += 3;
                    continue;
                }
                if (a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get"))
                    && argv.get(i + 1).is_some_and(|p| p.contains(&b'*'))
                {
                    return Err(format!(
                        "{name} with {} {} reads keys named by a pattern, which --rename-prefix cannot rename exactly",
                        String::from_utf8_lossy(a).to_ascii_uppercase(),
                        quote_bytes(argv[i + 1])
                    ));
                }
                i += 1;
            }
        }
        let mut out: Option<Vec<Vec<u8>>> = None;
        for &i in key_idx {
            let Some(k) = argv.get(i) else { continue };
            let renamed = self.key(k).map_err(|e| format!("{name}: {e}"))?;
            if let Cow::Owned(n) = renamed {
                out.get_or_insert_with(|| argv.iter().map(|a| a.to_vec()).collect())[i] = n;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::command_keys;

    fn r(specs: &[&str]) -> Rename {
        Rename::parse(specs).unwrap()
    }

    fn name(r: &Rename, k: &str) -> String {
        String::from_utf8(r.key(k.as_bytes()).unwrap().into_owned()).unwrap()
    }

    #[test]
    fn longest_old_wins_and_empty_sides() {
        let x = r(&["a:=b:", "a:b:=c:", "tmp:=", "=all:"]);
        assert_eq!(name(&x, "a:1"), "b:1");
        assert_eq!(name(&x, "a:b:1"), "c:1");
        assert_eq!(name(&x, "tmp:1"), "1");
        assert_eq!(name(&x, "z"), "all:z");
        assert_eq!(name(&x, "shake-sync:checkpoint"), "shake-sync:checkpoint");
        let y = r(&["a:=b:"]);
        assert_eq!(name(&y, "c"), "c");
        assert!(Rename::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn refusals() {
        for bad in [
            &["nothing"][..],
            &["shake-sync:=x"],
            &["x=shake-building:y"],
            &["a=b", "a=c"],
        ] {
            let e = Rename::parse(bad).unwrap_err();
            assert!(e.starts_with("--rename-prefix") && !e.contains('\n'), "{e}");
        }
        // A strip that would make an internal name stops, naming the key.
        let x = r(&["a:="]);
        let e = x.key(b"a:shake-sync:x").unwrap_err();
        assert!(e.contains("\"a:shake-sync:x\""), "{e}");
    }

    #[test]
    fn building_names_follow_their_key() {
        let x = r(&["a:=b:"]);
        let src = crate::apply::building_name(b"a:1");
        let got = x.key(&src).unwrap().into_owned();
        assert_eq!(got, crate::apply::building_name(b"b:1"));
        let other = crate::apply::building_name(b"c:1");
        assert_eq!(x.key(&other).unwrap().as_ref(), other.as_slice());
    }

    #[test]
    fn sources_of_inverts_key() {
        let x = r(&["a:=b:", "=p:"]);
        assert_eq!(x.sources_of(b"b:1"), vec![b"a:1".to_vec()]);
        assert_eq!(x.sources_of(b"p:z"), vec![b"z".to_vec()]);
        // Nothing is renamed to a name without "p:" or "b:".
        assert!(x.sources_of(b"a:1").is_empty());
        // Two names that meet.
        let y = r(&["a:=b:"]);
        let mut both = y.sources_of(b"b:1");
        both.sort();
        assert_eq!(both, vec![b"a:1".to_vec(), b"b:1".to_vec()]);
        assert_eq!(y.sources_of(b"c"), vec![b"c".to_vec()]);
    }

    fn cmd(x: &Rename, argv: &[&str]) -> Result<Option<Vec<String>>, String> {
        let a: Vec<&[u8]> = argv.iter().map(|s| s.as_bytes()).collect();
        let idx = command_keys(&a).unwrap_or_default();
        x.command(&a, &idx).map(|o| {
            o.map(|v| {
                v.into_iter()
                    .map(|b| String::from_utf8(b).unwrap())
                    .collect()
            })
        })
    }

    #[test]
    fn every_key_position() {
        let x = r(&["a:=b:"]);
        let s = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            cmd(&x, &["SET", "a:1", "a:v"]).unwrap(),
            s(&["SET", "b:1", "a:v"])
        );
        assert_eq!(
            cmd(&x, &["MSET", "a:1", "a:2", "c", "a:3"]).unwrap(),
            s(&["MSET", "b:1", "a:2", "c", "a:3"])
        );
        assert_eq!(
            cmd(
                &x,
                &["ZUNIONSTORE", "a:d", "2", "a:x", "c", "WEIGHTS", "1", "2"]
            )
            .unwrap(),
            s(&["ZUNIONSTORE", "b:d", "2", "b:x", "c", "WEIGHTS", "1", "2"])
        );
        assert_eq!(
            cmd(&x, &["BITOP", "AND", "a:d", "a:x"]).unwrap(),
            s(&["BITOP", "AND", "b:d", "b:x"])
        );
        assert_eq!(cmd(&x, &["SET", "c", "a:1"]).unwrap(), None);
        assert_eq!(
            cmd(&x, &["SORT", "a:l", "GET", "#", "STORE", "a:d"]).unwrap(),
            s(&["SORT", "b:l", "GET", "#", "STORE", "b:d"])
        );
        for bad in [
            &["SORT", "a:l", "BY", "w_*", "STORE", "a:d"][..],
            &["SORT", "a:l", "GET", "o_*->f"],
            &["EVAL", "return 1", "1", "a:1"],
            &["FCALL", "f", "0"],
            &["JSON.SET", "a:1", "$", "1"],
        ] {
            let e = cmd(&x, bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
