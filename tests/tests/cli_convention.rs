//! One command-line convention for forcing or forbidding cluster mode (docs/cli.md#cluster-or-not):
//! `--source-cluster` / `--no-source-cluster` and `--target-cluster` / `--no-target-cluster`, the
//! same in every tool that has that side, with the earlier per-tool spellings kept as hidden
//! aliases.
//!
//! - `cluster_flags_are_one_convention`: each tool's `--help` lists the pair of each side it has
//!   and none of the old spellings; each old spelling is the same flag as its new name (clap
//!   reports the conflict of an alias with the new name's opposite).
//! - `endpoint_timeout_and_log_flags_are_one_convention`: `-s/--source` (`SHAKE_SOURCE`) and
//!   `-t/--target` (`SHAKE_TARGET`) for the sides a tool has, `--connect-timeout` 10,
//!   `--timeout` 30, `--log-interval` 5 and `-q` in every tool's `--help`.
//! - `cluster_flags_act_on_real_servers`: on a three-master Redis 7.0 cluster, shake-rump
//!   `--no-source-cluster` copies only the node named, without it every master; shake-check
//!   `--no-source-cluster` compares only that node (equal to the copy), and `--target-cluster`
//!   against a standalone server is one line naming the settings that force it.

use shake_tests::{require, run_tool, tool_binary, Cluster, Flavor, Server};

const TOOLS: [(&str, bool, bool); 5] = [
    // (tool, has a source, has a target)
    ("shake-dump", true, false),
    ("shake-restore", false, true),
    ("shake-sync", true, true),
    ("shake-rump", true, true),
    ("shake-check", true, true),
];

#[test]
fn cluster_flags_are_one_convention() {
    for (tool, source, target) in TOOLS {
        let out = std::process::Command::new(tool_binary(tool))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{tool} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for (side, has) in [("source", source), ("target", target)] {
            for flag in [format!("--{side}-cluster"), format!("--no-{side}-cluster")] {
                assert_eq!(
                    help.contains(&format!("{flag}\n")) || help.contains(&format!("{flag} ")),
                    has,
                    "{tool} --help and {flag}:\n{help}"
                );
            }
        }
        for old in [
            "--cluster\n",
            "--single-node",
            "--no-cluster",
            "--source-single-node",
            "--target-standalone",
        ] {
            assert!(!help.contains(old), "{tool} --help still lists {old}");
        }
    }
    // An old spelling given with the new name of its opposite: the same conflict as the new
    // names give, so it is the same flag.
    for (tool, old, opposite) in [
        ("shake-dump", "--cluster", "--no-source-cluster"),
        ("shake-dump", "--single-node", "--source-cluster"),
        ("shake-restore", "--cluster", "--no-target-cluster"),
        ("shake-restore", "--no-cluster", "--target-cluster"),
        ("shake-sync", "--source-single-node", "--source-cluster"),
        ("shake-sync", "--target-standalone", "--target-cluster"),
    ] {
        let mut args = vec![old, opposite];
        if tool != "shake-restore" {
            args.extend(["--source", "redis://127.0.0.1:1"]);
        }
        if tool != "shake-dump" {
            args.extend(["--target", "redis://127.0.0.1:1"]);
        }
        let (code, err) = run_tool(tool, &args, &[]);
        assert_eq!(code, Some(2), "{tool} {old} {opposite}: {err}");
        assert!(
            err.contains("cannot be used with"),
            "{tool} {old} {opposite}: {err}"
        );
    }
}

/// The rest of the convention, in every tool that talks to servers: `-s/--source` with
/// `SHAKE_SOURCE` and `-t/--target` with `SHAKE_TARGET` for the sides it has, one timeout model
/// (`--connect-timeout` 10 s, `--timeout` 30 s for each reply), `-q` and `--log-interval` 5 s.
#[test]
fn endpoint_timeout_and_log_flags_are_one_convention() {
    for (tool, source, target) in TOOLS {
        let out = std::process::Command::new(tool_binary(tool))
            .arg("--help")
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        // One option's text: from its flag line to the next option.
        let option = |flag: &str| -> String {
            let at = help
                .find(&format!("{flag} "))
                .or_else(|| help.find(&format!("{flag}\n")))
                .unwrap_or_else(|| panic!("{tool} --help lacks {flag}:\n{help}"));
            let rest = &help[at..];
            let end = rest[1..].find("\n  -").map_or(rest.len(), |e| e + 1);
            rest[..end].to_string()
        };
        for (has, short, long, env) in [
            (source, "-s", "--source", "SHAKE_SOURCE="),
            (target, "-t", "--target", "SHAKE_TARGET="),
        ] {
            if has {
                let text = option(&format!("{short}, {long}"));
                assert!(
                    text.contains(&format!("[env: {env}")),
                    "{tool} {long}: {text}"
                );
            }
        }
        for (flag, default) in [
            ("--connect-timeout", "[default: 10]"),
            ("--timeout", "[default: 30]"),
            ("--log-interval", "[default: 5]"),
        ] {
            let text = option(flag);
            assert!(text.contains(default), "{tool} {flag}: {text}");
        }
        option("-q, --quiet");
    }
}

fn dbsize(s: &Server) -> u64 {
    redis::cmd("DBSIZE").query(&mut s.client()).expect("DBSIZE")
}

#[test]
fn cluster_flags_act_on_real_servers() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    let mut con = cluster.connection();
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
    }
    let node = &cluster.masters()[0];
    let on_node = dbsize(node);
    assert!(
        on_node > 0 && on_node < 300,
        "node 0 holds {on_node} of 300"
    );

    let one = Server::start(flavor);
    let (code, err) = run_tool(
        "shake-rump",
        &[
            "--source",
            &node.url(),
            "--no-source-cluster",
            "--target",
            &one.url(),
            "-q",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        dbsize(&one),
        on_node,
        "--no-source-cluster copies the node named only"
    );
    let (code, err) = run_tool(
        "shake-check",
        &[
            "--source",
            &node.url(),
            "--no-source-cluster",
            "--target",
            &one.url(),
            "--rounds",
            "1",
            "-q",
        ],
        &[],
    );
    assert_eq!(
        code,
        Some(0),
        "--no-source-cluster compares that node only: {err}"
    );

    let all = Server::start(flavor);
    let (code, err) = run_tool(
        "shake-rump",
        &["--source", &node.url(), "--target", &all.url(), "-q"],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        dbsize(&all),
        300,
        "a cluster source is read on every master"
    );

    let (code, err) = run_tool(
        "shake-check",
        &[
            "--source",
            &all.url(),
            "--target",
            &one.url(),
            "--target-cluster",
            "--rounds",
            "1",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is not a cluster node") && err.contains("--target-cluster"),
        "{err}"
    );
}
