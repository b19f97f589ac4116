//! The preflight report: one [`Check`] per thing looked at, rendered as plain text (one line per
//! check) or as one JSON document.

use std::fmt;

use serde::Serialize;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// The run can go ahead, but something may hurt it (a slower path, a full sync after a short
    /// disconnection, keys that could be evicted): read the advice.
    Warn,
    /// The run would fail or lose data: fix this first.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable identifier, `side.topic`: `source.connect`, `target.eviction`, `sync.checkpoint`.
    pub name: String,
    pub status: Status,
    /// What was found, with the numbers behind the verdict.
    pub found: String,
    /// What to do about it; empty when there is nothing to do.
    pub advice: String,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        status: Status,
        found: impl Into<String>,
        advice: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            found: one_line(found.into()),
            advice: one_line(advice.into()),
        }
    }

    pub fn ok(name: impl Into<String>, found: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, found, "")
    }

    pub fn warn(
        name: impl Into<String>,
        found: impl Into<String>,
        advice: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Warn, found, advice)
    }

    pub fn fail(
        name: impl Into<String>,
        found: impl Into<String>,
        advice: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Fail, found, advice)
    }
}

/// Server messages sometimes carry newlines; a report line must stay one line.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        s
    }
}

/// Every check of one preflight run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    ok: bool,
    checks: &'a [Check],
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Adds a check (a tool adds its own, e.g. shake-sync's checkpoint line).
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// True when no check failed: the run may go ahead.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The exit status of `--preflight`: 0 when nothing blocks, 1 when something does.
    pub fn exit_code(&self) -> u8 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    /// One line per check, `STATUS name: found -> advice`, then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {}: {}",
                c.status.as_str(),
                c.name,
                c.found
            ));
            if !c.advice.is_empty() {
                out.push_str(" -> ");
                out.push_str(&c.advice);
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "preflight: {} checks, {} OK, {} WARN, {} FAIL: {}\n",
            self.checks.len(),
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            if self.ok() {
                "nothing blocks this run"
            } else {
                "this run would fail; fix the FAIL lines first"
            }
        ));
        out
    }

    /// `{"ok":bool,"checks":[{"name","status","found","advice"}]}` on one line.
    pub fn json(&self) -> String {
        serde_json::to_string(&JsonReport {
            ok: self.ok(),
            checks: &self.checks,
        })
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":{:?}}}", e.to_string()))
    }

    /// Prints the report on stdout (text or JSON) and returns the exit status for it.
    pub fn print(&self, json: bool) -> u8 {
        use std::io::Write;
        let body = if json {
            let mut j = self.json();
            j.push('\n');
            j
        } else {
            self.text()
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(body.as_bytes());
        let _ = out.flush();
        self.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json() {
        let mut r = Report::new();
        r.push(Check::ok("source.connect", "redis://h:1: Redis 7.0.15"));
        r.push(Check::warn(
            "source.backlog",
            "1 MiB holds 3 s",
            "raise\nit",
        ));
        assert!(r.ok());
        r.push(Check::fail(
            "target.eviction",
            "allkeys-lru",
            "set noeviction",
        ));
        assert!(!r.ok());
        assert_eq!(r.exit_code(), 1);
        let text = r.text();
        assert!(text.starts_with("OK    source.connect: redis://h:1: Redis 7.0.15\n"));
        assert!(text.contains("WARN  source.backlog: 1 MiB holds 3 s -> raise it\n"));
        assert!(text.contains("FAIL  target.eviction: allkeys-lru -> set noeviction\n"));
        assert!(text.ends_with(
            "3 checks, 1 OK, 1 WARN, 1 FAIL: this run would fail; fix the FAIL lines first\n"
        ));
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][1]["status"], "warn");
        assert_eq!(v["checks"][2]["name"], "target.eviction");
        assert_eq!(v["checks"][0]["advice"], "");
    }
}
