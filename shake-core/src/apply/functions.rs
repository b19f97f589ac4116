//! Function libraries on a target: the one place that decides what a library arriving at a
//! target master means when that master may already hold one of the same name.
//!
//! Every master of a cluster carries the same libraries (FUNCTION LOAD is run on each), so a
//! sync of a cluster source brings each library once per source master, and a re-seeded target
//! may hold them from before. The rule, for full syncs (shake-sync), files (shake-restore) and
//! SCAN copies (shake-rump) alike:
//!
//! - a library of the same name **and the same code** already on a target master is not a
//!   conflict, under every `--on-conflict` policy: it is counted as identical and left alone;
//! - the same name with **other code** is a conflict: `panic` stops with one line naming the
//!   library, the target master and where the two codes differ; `rewrite` replaces it
//!   (`FUNCTION LOAD REPLACE`); `ignore` keeps the target's.
//!
//! The command stream keeps its every-master treatment (FUNCTION LOAD/DELETE/FLUSH/RESTORE are
//! run on every target master), and [`stream_refusal_is_noop`] recognises the refusals that only
//! say "another link of the same source cluster did this already": a LOAD (or RESTORE) of
//! libraries the master holds with identical code, a DELETE of a library that is gone.
//!
//! [`list_libraries`] reads `FUNCTION LIST WITHCODE` replies (shared with shake-check).

use bytes::Bytes;

use super::{ApplyError, ConflictPolicy};
use crate::client::Target;
use crate::net::Endpoint;
use crate::resp::Reply;
use crate::text::quote_bytes;

/// The library name a `#!<engine> name=<name>` source declares on its first line.
pub fn library_name(code: &[u8]) -> Option<&[u8]> {
    let first = code.split(|&b| b == b'\n').next()?;
    first
        .split(|b| b.is_ascii_whitespace())
        .find_map(|w| w.strip_prefix(b"name="))
        .filter(|n| !n.is_empty())
}

/// `(library_name, library_code)` of each library in a `FUNCTION LIST [WITHCODE]` reply (the
/// code is empty without WITHCODE).
pub fn list_libraries(r: &Reply) -> Vec<(Bytes, Bytes)> {
    let mut out = Vec::new();
    for lib in r.as_array().unwrap_or_default() {
        let Some(items) = lib.as_array() else {
            continue;
        };
        let field = |name: &str| {
            items
                .chunks(2)
                .find(|kv| kv[0].as_bytes() == Some(name.as_bytes()))
                .and_then(|kv| kv.get(1))
                .and_then(Reply::as_bytes)
                .map(Bytes::copy_from_slice)
        };
        if let Some(name) = field("library_name") {
            out.push((name, field("library_code").unwrap_or_default()));
        }
    }
    out
}

/// What became of one library on the target's masters.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    /// Masters that loaded it (or replaced theirs, under `rewrite`).
    pub loaded: u64,
    /// Masters that already held it with the same code.
    pub identical: u64,
    /// Masters that hold other code under that name and keep it (`ignore`).
    pub kept: u64,
}

fn is_exists(e: &str) -> bool {
    e.contains("already exists")
}

/// The code of library `name` on each master (absent where it has none).
async fn codes_on<T: Send>(
    target: &mut Target<T>,
    name: &[u8],
) -> Result<Vec<(Endpoint, Option<Bytes>)>, ApplyError> {
    let argv: [&[u8]; 5] = [b"FUNCTION", b"LIST", b"LIBRARYNAME", name, b"WITHCODE"];
    let replies = target.broadcast(&argv).await?;
    let mut out = Vec::new();
    for (node, r) in replies {
        if let Some(e) = r.error() {
            return Err(ApplyError::Target {
                key: None,
                target: node.to_string(),
                message: format!("FUNCTION LIST failed: {e}"),
            });
        }
        // LIBRARYNAME is a pattern: keep the exact name only.
        let code = list_libraries(&r)
            .into_iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, c)| c);
        out.push((node, code));
    }
    Ok(out)
}

/// Where two library codes part: `"<n> bytes, line <l>: <that line>"` for each side.
pub fn describe_difference(ours: &[u8], theirs: &[u8]) -> (String, String) {
    let a: Vec<&[u8]> = ours.split(|&b| b == b'\n').collect();
    let b: Vec<&[u8]> = theirs.split(|&b| b == b'\n').collect();
    let i = (0..a.len().max(b.len()))
        .find(|&i| a.get(i) != b.get(i))
        .unwrap_or(0);
    let show = |lines: &[&[u8]], total: usize| {
        let line = lines.get(i).copied().unwrap_or(b"");
        let cut = &line[..line.len().min(60)];
        format!(
            "{total} bytes, line {}: {}{}",
            i + 1,
            quote_bytes(cut),
            if line.len() > 60 { "..." } else { "" }
        )
    };
    (show(&a, ours.len()), show(&b, theirs.len()))
}

/// `why`: what made it an error; `fix`: what to do, if anything (starting with "; ").
fn differs_message(
    name: &[u8],
    source: &str,
    ours: &[u8],
    theirs: &[u8],
    why: &str,
    fix: &str,
) -> String {
    let (a, b) = describe_difference(ours, theirs);
    format!(
        "function library {} exists with other code ({why}): {source} has {a}; the target has {b}{fix}",
        quote_bytes(name)
    )
}

fn load_failed(node: &Endpoint, e: &str, code: &[u8]) -> ApplyError {
    ApplyError::Target {
        key: None,
        target: node.to_string(),
        message: format!(
            "FUNCTION LOAD failed: {e} (library {})",
            quote_bytes(library_name(code).unwrap_or(b"?"))
        ),
    }
}

/// Loads one library (its `FUNCTION LOAD` text) on every master of `target` under `policy`,
/// by the rule of this module. `source` names where the library comes from, for the message.
pub async fn load_library<T: Send>(
    target: &mut Target<T>,
    code: &[u8],
    policy: ConflictPolicy,
    source: &str,
) -> Result<LoadReport, ApplyError> {
    let replace = policy == ConflictPolicy::Rewrite;
    let argv: Vec<&[u8]> = if replace {
        vec![b"FUNCTION", b"LOAD", b"REPLACE", code]
    } else {
        vec![b"FUNCTION", b"LOAD", code]
    };
    let replies = target.broadcast(&argv).await?;
    let mut report = LoadReport::default();
    let mut existing = Vec::new();
    for (node, reply) in replies {
        match reply.error() {
            None => report.loaded += 1,
            Some(e) if is_exists(e) => existing.push(node),
            Some(e) => return Err(load_failed(&node, e, code)),
        }
    }
    if existing.is_empty() {
        return Ok(report);
    }
    let name = library_name(code).unwrap_or_default().to_vec();
    let codes = codes_on(target, &name).await?;
    for node in existing {
        let theirs = codes
            .iter()
            .find(|(n, _)| *n == node)
            .and_then(|(_, c)| c.clone());
        match theirs {
            Some(c) if c.as_ref() == code => report.identical += 1,
            Some(c) => match policy {
                ConflictPolicy::Ignore => report.kept += 1,
                _ => return Err(ApplyError::Target {
                    key: None,
                    target: node.to_string(),
                    message: differs_message(
                        &name,
                        source,
                        code,
                        &c,
                        "--on-conflict panic",
                        "; use --on-conflict rewrite to replace it or ignore to keep the target's",
                    ),
                }),
            },
            // Gone between the LOAD and the LIST (someone deleted it): load it again.
            None => {
                let r = target.broadcast(&argv).await?;
                match r
                    .iter()
                    .find(|(n, _)| *n == node)
                    .and_then(|(_, r)| r.error())
                {
                    None => report.loaded += 1,
                    Some(e) => return Err(load_failed(&node, e, code)),
                }
            }
        }
    }
    Ok(report)
}

/// Whether `node`'s refusal `error` of the stream's FUNCTION command `argv` only says that the
/// command's effect is there already (another link of the same source cluster ran it first):
/// `Ok(true)`. `Ok(false)`: a real refusal. `Err`: the library exists with other code (the
/// message names the library and both sides).
pub async fn stream_refusal_is_noop<T: Send>(
    target: &mut Target<T>,
    node: &Endpoint,
    argv: &[&[u8]],
    error: &str,
    source: &str,
) -> Result<bool, ApplyError> {
    let sub = argv
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match sub.as_slice() {
        b"DELETE" => Ok(error.contains("not found")),
        b"LOAD" if is_exists(error) => {
            let Some(code) = argv.last() else {
                return Ok(false);
            };
            let Some(name) = library_name(code) else {
                return Ok(false);
            };
            let codes = codes_on(target, name).await?;
            match codes.iter().find(|(n, _)| n == node).and_then(|(_, c)| c.as_ref()) {
                Some(c) if c.as_ref() == *code => Ok(true),
                Some(c) => Err(ApplyError::Target {
                    key: None,
                    target: node.to_string(),
                    message: differs_message(
                        name,
                        source,
                        code,
                        c,
                        "a FUNCTION LOAD of the command stream",
                        "; the target diverged from the source: load the source's library there (FUNCTION LOAD REPLACE) and start again",
                    ),
                }),
                None => Ok(false),
            }
        }
        b"RESTORE" if is_exists(error) => {
            let Some(payload) = argv.get(2) else {
                return Ok(false);
            };
            let Ok(libs) = crate::rdb::file_writer::functions_from_dump(payload) else {
                return Ok(false);
            };
            for f in libs {
                let code = crate::rebuild::function_library_code(&f);
                let Some(name) = library_name(&code).map(<[u8]>::to_vec) else {
                    return Ok(false);
                };
                let codes = codes_on(target, &name).await?;
                let same = codes
                    .iter()
                    .find(|(n, _)| n == node)
                    .and_then(|(_, c)| c.as_ref())
                    .is_some_and(|c| c.as_ref() == code.as_slice());
                if !same {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_differences() {
        assert_eq!(
            library_name(b"#!lua name=mylib\nredis.register_function()"),
            Some(&b"mylib"[..])
        );
        assert_eq!(library_name(b"#!lua\nx"), None);
        let (a, b) = describe_difference(b"#!lua name=x\nreturn 1\n", b"#!lua name=x\nreturn 2\n");
        assert_eq!(a, "22 bytes, line 2: \"return 1\"");
        assert_eq!(b, "22 bytes, line 2: \"return 2\"");
    }
}
