//! Which keys a tool works on: databases, key globs, a key regex, and value types, and the
//! databases and keys it leaves out. Written once here; every tool's `--db`, `--key`,
//! `--key-regex`, `--type` and `--exclude-*` flags build one `KeyFilter`.

use regex::bytes::Regex;

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

#[cfg(test)]
mod tests {
    use super::*;

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
