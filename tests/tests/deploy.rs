//! What deploy/ promises about shake-sync's metrics (issue 16), against a real shake-sync:
//!
//! - `metrics_pass_promtool_and_feed_the_dashboard`: a sync of a Redis 7.0 cluster (three
//!   links) is scraped: `promtool check metrics` finds nothing to lint (counters are counters
//!   ending in `_total`, durations in seconds), every series carries the `shard`, `link` (source
//!   master) and `source` labels, each link appears once per metric, every metric that a
//!   query of deploy/grafana/shake-sync.json names is one /metrics exports, and the dashboard
//!   has a panel for each thing the issue lists (lag, applied ops/s, phase, full syncs,
//!   reconnects, repairs, errors).
//!
//! The manifests themselves are checked by scripts/check-deploy.sh (kustomize, schema, checkov),
//! which scripts/test runs as a step of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use shake_tests::{
    free_port, http_get, require, require_tool, workspace_root, Cluster, Flavor, Server,
};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metric names a Grafana dashboard's queries use (every `shake_sync_*` word of each
/// target's `expr`), and the number of targets.
fn dashboard_metrics(json: &serde_json::Value) -> (BTreeSet<String>, usize) {
    let mut names = BTreeSet::new();
    let mut targets = 0;
    for panel in json["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            targets += 1;
            let expr = t["expr"].as_str().expect("expr");
            let mut found = false;
            let bytes = expr.as_bytes();
            let mut i = 0;
            while let Some(off) = expr[i..].find("shake_sync_") {
                let start = i + off;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                names.insert(expr[start..end].to_string());
                found = true;
                i = end;
            }
            assert!(
                found,
                "panel {:?}: query {expr:?} names no shake_sync metric",
                panel["title"]
            );
        }
    }
    (names, targets)
}

#[test]
fn metrics_pass_promtool_and_feed_the_dashboard() {
    if !require(Flavor::Redis70) {
        return;
    }
    let Some(promtool) = require_tool(
        "promtool",
        &[],
        "run scripts/install-deploy-tools.sh (Debian's prometheus package)",
    ) else {
        return;
    };
    let src = Cluster::start_with(Flavor::Redis70, &[("databases", "1")]);
    let dst = Server::start(Flavor::Redis70);
    {
        let mut con = src.connection();
        for i in 0..200 {
            redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query::<()>(&mut con)
                .expect("SET");
        }
    }
    let port = free_port();
    let sync = Command::new(assert_cmd::cargo::cargo_bin("shake-sync"))
        .args(["--source", &src.url(), "--target", &dst.url()])
        .args(["--status-addr", &format!("127.0.0.1:{port}"), "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn shake-sync");
    let _sync = Killed(sync);
    // Scrape once every link is incremental and has applied something.
    let t = Instant::now();
    let metrics = loop {
        let m = http_get(port, "/metrics").unwrap_or_default();
        let incremental = m
            .lines()
            .filter(|l| {
                l.starts_with("shake_sync_phase{")
                    && l.contains("phase=\"incremental\"")
                    && l.ends_with(" 1")
            })
            .count();
        if incremental == 3 {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "3 links not incremental within 60 s:\n{m}"
        );
        sleep(Duration::from_millis(100));
    };

    // promtool's lint: names, types, units, HELP.
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Types and labels.
    let mut types = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once('{')
            .unwrap_or_else(|| panic!("unlabelled series: {line}"));
        let labels = rest.rsplit_once('}').expect("labels").0;
        for want in ["shard=\"0\"", "link=\"", "source=\""] {
            assert!(labels.contains(want), "{line}: no {want} label");
        }
        let link = labels
            .split("link=\"")
            .nth(1)
            .and_then(|l| l.split('"').next())
            .expect("link value");
        let phase = labels.split("phase=\"").nth(1).unwrap_or("");
        assert!(
            series
                .entry(name.to_string())
                .or_default()
                .insert(format!("{link} {phase}")),
            "{line}: the same link twice"
        );
    }
    for (name, kind) in &types {
        assert_eq!(
            name.ends_with("_total"),
            kind == "counter",
            "{name} is a {kind}: counters, and only counters, end in _total"
        );
        assert!(!name.contains("milli"), "{name}: durations go in seconds");
        assert_eq!(
            series.get(name).map(|s| s.len()),
            Some(if name == "shake_sync_phase" { 3 * 6 } else { 3 }),
            "{name}: one series per link (and phase)"
        );
    }

    // The dashboard asks only for what is there.
    let path = workspace_root().join("deploy/grafana/shake-sync.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let (used, targets) = dashboard_metrics(&dash);
    for name in &used {
        assert!(
            series.contains_key(name),
            "{}: the dashboard queries {name}, which /metrics does not export (it has {:?})",
            path.display(),
            series.keys().collect::<Vec<_>>()
        );
    }
    // What issue 16 asks the dashboard to show: lag per master and worst lag, applied ops/s,
    // phase, full syncs, reconnects, repairs, errors.
    for want in [
        "shake_sync_lag_seconds",
        "shake_sync_commands_applied_total",
        "shake_sync_phase",
        "shake_sync_full_syncs_total",
        "shake_sync_reconnects_total",
        "shake_sync_repaired_keys_total",
        "shake_sync_errors_total",
    ] {
        assert!(
            used.contains(want),
            "{}: no panel queries {want}",
            path.display()
        );
    }
    eprintln!(
        "/metrics: {} metrics, promtool clean; dashboard: {targets} queries over {} metrics, all exported",
        series.len(),
        used.len()
    );
}
