//! Which keys a tool works on: databases, key globs, a key regex, and value types. Written once
//! here; every tool's `--db`, `--key`, `--key-regex` and `--type` flags build one `KeyFilter`.

use regex::bytes::Regex;

use crate::glob::glob_match;
use crate::rdb::ValueType;

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    dbs: Vec<u64>,
    globs: Vec<Vec<u8>>,
    regex: Option<Regex>,
    types: Vec<ValueType>,
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
        })
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
    }

    /// Whether keys are chosen by name (`--key`, `--key-regex`).
    pub fn has_key_rules(&self) -> bool {
        !self.globs.is_empty() || self.regex.is_some()
    }

    /// The databases `--db` names (empty: every database).
    pub fn dbs(&self) -> &[u64] {
        &self.dbs
    }

    pub fn db_allowed(&self, db: u64) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    pub fn key_allowed(&self, key: &[u8]) -> bool {
        (self.globs.is_empty() || self.globs.iter().any(|g| glob_match(g, key)))
            && self.regex.as_ref().is_none_or(|r| r.is_match(key))
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
    }
}
