//! `--config FILE`: a RedisShake v3 `sync.toml`, read unchanged. Every key is either mapped to
//! the flag that does the same thing or reported once as ignored with the reason; a flag given
//! on the command line (or by its environment variable) wins over the file.

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::Args;

fn from_user(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
}

/// The URL of a `[source]` or `[target]` table.
fn url_of(t: &toml::Table, section: &str) -> Result<Option<String>, String> {
    let Some(addr) = t.get("address") else {
        return Ok(None);
    };
    let addr = addr
        .as_str()
        .ok_or_else(|| format!("[{section}] address must be a string \"host:port\""))?;
    let tls = t.get("tls").and_then(|v| v.as_bool()).unwrap_or(false);
    let user = t.get("username").and_then(|v| v.as_str()).unwrap_or("");
    let password = t.get("password").and_then(|v| v.as_str()).unwrap_or("");
    let auth = match (user.is_empty(), password.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!(":{}@", shake_core::net::percent_encode(password)),
        (false, _) => format!(
            "{}:{}@",
            shake_core::net::percent_encode(user),
            shake_core::net::percent_encode(password)
        ),
    };
    Ok(Some(format!(
        "{}://{auth}{addr}",
        if tls { "rediss" } else { "redis" }
    )))
}

/// Reads `path` into `args` where the command line left a value at its default. Returns the
/// notes to print: one per key that is ignored, with why.
pub fn apply_file(path: &Path, args: &mut Args, m: &ArgMatches) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let mut notes = Vec::new();
    let mut ignore = |key: &str, why: &str| notes.push(format!("{key} ignored: {why}"));
    for (k, v) in &doc {
        match (k.as_str(), v) {
            ("type", toml::Value::String(t)) if t == "sync" => {}
            ("type", other) => {
                return Err(format!(
                    "type = {other} is not a sync configuration (shake-sync reads type = \"sync\"; for restore use shake-restore, for scan use shake-rump)"
                ))
            }
            ("source", toml::Value::Table(t)) => {
                if !from_user(m, "source") {
                    if let Some(u) = url_of(t, "source")? {
                        args.source = Some(u);
                    }
                }
                for (sk, sv) in t {
                    match sk.as_str() {
                        "address" | "username" | "password" | "tls" => {}
                        "version" => ignore("source.version", "the version is read from the server (INFO)"),
                        "elasticache_psync" => {
                            if let Some(name) = sv.as_str().filter(|s| !s.is_empty()) {
                                if !from_user(m, "psync_command") {
                                    args.psync_command = name.to_string();
                                }
                            }
                        }
                        other => ignore(&format!("source.{other}"), "not a RedisShake v3 sync setting"),
                    }
                }
            }
            ("target", toml::Value::Table(t)) => {
                if !from_user(m, "target") {
                    if let Some(u) = url_of(t, "target")? {
                        args.target = Some(u);
                    }
                }
                for (tk, tv) in t {
                    match tk.as_str() {
                        "address" | "username" | "password" | "tls" => {}
                        "type" => {
                            if !from_user(m, "target_cluster") && !from_user(m, "target_standalone") {
                                match tv.as_str() {
                                    Some("cluster") => args.target_cluster = true,
                                    Some("standalone") => args.target_standalone = true,
                                    _ => return Err("target.type must be \"standalone\" or \"cluster\"".into()),
                                }
                            }
                        }
                        "version" => ignore("target.version", "the version is read from the server (INFO), and values are re-encoded for it where needed"),
                        other => ignore(&format!("target.{other}"), "not a RedisShake v3 sync setting"),
                    }
                }
            }
            ("advanced", toml::Value::Table(t)) => {
                for (ak, av) in t {
                    match ak.as_str() {
                        "dir" => ignore("advanced.dir", "the full-sync RDB is never spooled (it is applied while it streams), and the checkpoint lives on the target; only a full sync over two connections keeps the command stream meanwhile in --spool-dir (default ./shake-spool)"),
                        "ncpu" => ignore("advanced.ncpu", "shake-sync uses two worker threads, which a sync does not outgrow"),
                        "pprof_port" => ignore("advanced.pprof_port", "no Go profiler here"),
                        "metrics_port" => {
                            let port = av.as_integer().unwrap_or(0);
                            if port > 0 && !from_user(m, "status_addr") {
                                args.status_addr = Some(format!("127.0.0.1:{port}"));
                            }
                        }
                        "log_file" => ignore("advanced.log_file", "logs go to stderr; redirect it (2>>FILE)"),
                        "log_level" => ignore("advanced.log_level", "there is one level; -q silences progress"),
                        "log_interval" => {
                            if let Some(n) = av.as_integer() {
                                if !from_user(m, "log_interval") {
                                    args.log.log_interval = n.max(0) as u64;
                                }
                            }
                        }
                        "rdb_restore_command_behavior" => {
                            let v = av.as_str().unwrap_or("");
                            let policy = match v {
                                "panic" => "panic",
                                "rewrite" => "rewrite",
                                "skip" | "ignore" => "ignore",
                                _ => return Err(format!("advanced.rdb_restore_command_behavior = {v:?}: expected panic, rewrite or skip")),
                            };
                            if !from_user(m, "on_conflict") {
                                args.apply.on_conflict = policy.to_string();
                            }
                        }
                        "pipeline_count_limit" => {
                            if let Some(n) = av.as_integer() {
                                if !from_user(m, "pipeline") {
                                    args.apply.pipeline = n.max(1) as usize;
                                }
                            }
                        }
                        "target_redis_client_max_querybuf_len" => ignore("advanced.target_redis_client_max_querybuf_len", "a setting of the target server; shake-sync keeps each command within proto-max-bulk-len, which it reads from the target"),
                        "target_redis_proto_max_bulk_len" => {
                            // A cap on one command, for targets that refuse CONFIG GET.
                            if let Some(n) = av.as_integer() {
                                if !from_user(m, "big_key_bytes") && n > 0 {
                                    let cap = (n as usize).saturating_sub(1 << 20).max(1 << 20);
                                    args.apply.big_key_bytes = args.apply.big_key_bytes.min(cap);
                                }
                            }
                        }
                        other => ignore(&format!("advanced.{other}"), "not a RedisShake v3 sync setting"),
                    }
                }
            }
            (other, _) => ignore(other, "not a RedisShake v3 sync setting"),
        }
    }
    Ok(notes)
}
