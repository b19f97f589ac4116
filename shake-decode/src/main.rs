//! shake-decode: an RDB file (or stdin) as JSON lines, RESP commands, a key list or a size report;
//! an append-only file as its RDB part's keys, then its commands (`shake_core::sink::aof`).

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use shake_core::aof::{self, Layout, Part, Replay};
use shake_core::cli::{AofArgs, FilterArgs, LogArgs};
use shake_core::filter::KeyFilter;
use shake_core::observe::Progress;
use shake_core::rdb::{ParserOptions, RdbParser};
use shake_core::sink::aof::{self as aof_sink, AofDecodeError, CommandFormat, CommandPrinter};
use shake_core::sink::{
    self, DriveError, JsonLinesSink, KeyListSink, MemoryReportSink, RdbSink, RespSink,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// One JSON object per key (docs/output-formats.md)
    Jsonl,
    /// Commands that recreate the data, for `redis-cli --pipe`
    Resp,
    /// One line per key: db, type, key (tab-separated)
    Keys,
    /// CSV: db,key,type,encoding,elements,serialized_bytes,largest_element_bytes,expire_at_ms
    Memory,
}

/// Decode an RDB file or an append-only file into text for people and programs.
///
/// Reads RDB versions 1-15 (REDIS magic) and 80-81 (VALKEY magic), every type and encoding.
/// An AOF (a plain one, one with an RDB preamble, or Redis 7's multi-part directory or its
/// manifest) decodes as its RDB part's keys, then one record per command (jsonl: file, offset,
/// db, ts, argv) or the commands themselves (resp); keys and memory describe keys only and
/// refuse an AOF's commands. Exit status: 0 success, 1 bad or unreadable input (one line on
/// stderr names the file, byte offset and key), 2 usage error (also a format or filter that
/// does not fit the input). On bad input, what came before the damage has been written; the
/// output is incomplete and the exit status says so.
#[derive(Parser, Debug)]
#[command(
    name = "shake-decode",
    version,
    after_help = "Examples:\n  shake-decode dump.rdb | jq 'select(.type==\"hash\")'\n  shake-decode dump.rdb --format resp | redis-cli --pipe\n  shake-decode dump.rdb --format keys --db 0 --key 'user:*'\n  shake-decode appendonlydir | jq -c 'select(.argv) | [.file, .offset, .argv[0]]'\n  shake-decode appendonlydir --until 2026-12-03T06:00:00Z --format resp > upto.aof"
)]
struct Args {
    /// RDB file or AOF to read; `-` reads stdin (an RDB). An AOF is a plain or RDB-preamble
    /// file, or a multi-part AOF directory (Redis 7's appenddirname) or its manifest
    #[arg(default_value = "-")]
    input: PathBuf,

    /// Output format
    #[arg(short, long, value_enum, default_value = "jsonl")]
    format: Format,

    /// Write output to this file instead of stdout (`-` is stdout)
    #[arg(short, long, default_value = "-")]
    output: PathBuf,

    /// Also print header, AUX fields, functions, slot info and checksum status as JSON lines
    /// with a "meta" member (jsonl format only)
    #[arg(long)]
    meta: bool,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    aof: AofArgs,

    /// Read RDB versions newer than the known ones (as Valkey's `rdb-version-check relaxed`);
    /// unknown types still fail
    #[arg(long)]
    relaxed_version: bool,

    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("shake-decode: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Input(msg)) => {
            eprintln!("shake-decode: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::ClosedOutput) => ExitCode::SUCCESS,
    }
}

enum Failure {
    Usage(String),
    Input(String),
    /// The reader of our output went away (`| head`): stop quietly.
    ClosedOutput,
}

fn run(args: &Args) -> Result<(), Failure> {
    let filter = args.filter.to_filter().map_err(Failure::Usage)?;
    if args.meta && !matches!(args.format, Format::Jsonl) {
        return Err(Failure::Usage("--meta goes with --format jsonl".into()));
    }
    let truncated = args.aof.truncated().map_err(Failure::Usage)?;
    let name = args.input.display().to_string();
    let parts = if name == "-" {
        if args.aof.until.is_some() {
            return Err(Failure::Usage(
                "--until reads an AOF's #TS: annotations: give the AOF file or directory, not stdin (stdin is read as an RDB)".into(),
            ));
        }
        None
    } else {
        Some(input_parts(&args.input).map_err(Failure::Input)?)
    };
    let with_commands = parts.as_ref().is_some_and(|p| {
        p.iter().any(|part| match part {
            Part::Commands { path, start } => aof_sink::bytes_from(path, *start) > 0,
            Part::Rdb { .. } => false,
        })
    });
    if with_commands {
        refuse_for_commands(args, &filter, &name, None)?;
    }
    let output: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        let f = shake_core::part_file::create_private(&args.output).map_err(Failure::Usage)?;
        Box::new(f)
    };
    let mut out = BufWriter::with_capacity(256 * 1024, output);
    let opts = ParserOptions {
        relaxed_version: args.relaxed_version,
        // Values left out (filters, --format keys) are stepped over unread; every value that
        // is decoded is checked as deeply as a server's sanitizer checks it.
        verify_values: false,
        ..ParserOptions::default()
    };
    let Some(parts) = parts else {
        return decode_stdin(args, &filter, opts, out);
    };

    // The RDB parts first (a preamble, or a multi-part base: always before any commands).
    let mut commands: Vec<(PathBuf, u64)> = Vec::new();
    let mut skipped_modules = 0;
    for part in &parts {
        match part {
            Part::Rdb { path, tail } => {
                let total = std::fs::metadata(path).ok().map(|m| m.len());
                let mut progress =
                    Progress::new("shake-decode", total, args.log.quiet, args.log.every());
                let (_, end) = match args.format {
                    Format::Jsonl => {
                        let mut s = JsonLinesSink::new(&mut out, args.meta);
                        aof_sink::rdb_part(path, &opts, &filter, &mut s, &mut progress)
                    }
                    Format::Keys => {
                        let mut s = KeyListSink::new(&mut out);
                        aof_sink::rdb_part(path, &opts, &filter, &mut s, &mut progress)
                    }
                    Format::Memory => {
                        let mut s = MemoryReportSink::new(&mut out);
                        aof_sink::rdb_part(path, &opts, &filter, &mut s, &mut progress)
                    }
                    Format::Resp => {
                        let mut s = RespSink::new(&mut out);
                        let r = aof_sink::rdb_part(path, &opts, &filter, &mut s, &mut progress);
                        skipped_modules += s.skipped_modules();
                        r
                    }
                }
                .map_err(aof_failure)?;
                let after = aof_sink::bytes_from(path, end);
                if *tail && after > 0 {
                    if aof::preamble_tail_at(path, end).map_err(Failure::Input)? {
                        // An AOF with an RDB preamble: its commands follow the RDB.
                        refuse_for_commands(args, &filter, &path.display().to_string(), Some(end))?;
                        commands.push((path.clone(), end));
                    } else {
                        eprintln!(
                            "shake-decode: {}: the {after} bytes after the RDB's end (offset {end}) are not AOF commands; not read",
                            path.display()
                        );
                    }
                }
            }
            Part::Commands { path, start } => commands.push((path.clone(), *start)),
        }
    }
    if commands.is_empty() {
        if args.aof.until.is_some() {
            return Err(Failure::Usage(format!(
                "--until: {name} holds no AOF commands (an RDB has no #TS: annotations to stop at); give an AOF, or leave --until out"
            )));
        }
    } else {
        if args.aof.until.is_some() {
            // Read once before printing: an AOF without annotations cannot say when to stop.
            let mut check = Replay::new(commands.clone(), None, aof::Truncated::Skip);
            while check.next_command().map_err(Failure::Input)?.is_some() {}
            if check.timestamps == 0 {
                let names: Vec<String> = commands
                    .iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                return Err(Failure::Usage(format!(
                    "--until: {} has no #TS: annotations to tell the time of its commands by; the server writes them with aof-timestamp-enabled yes (Redis 7+)",
                    names.join(", ")
                )));
            }
        }
        let format = match args.format {
            Format::Resp => CommandFormat::Resp,
            _ => CommandFormat::Jsonl,
        };
        let mut replay = Replay::new(commands, args.aof.until, truncated);
        let mut printer = CommandPrinter::new(format, filter);
        printer
            .print_all(&mut replay, &mut out)
            .map_err(aof_failure)?;
        for note in replay.notes() {
            eprintln!("shake-decode: {note}");
        }
    }
    if skipped_modules > 0 {
        eprintln!("shake-decode: {skipped_modules} module value(s) left out of the RESP output (no command recreates them)");
    }
    out.flush()
        .map_err(|e| aof_failure(AofDecodeError::Output(e)))
}

/// The pieces of a file input: an AOF's parts, or one RDB (a file with the RDB magic may carry
/// an AOF tail; anything else is left to the RDB parser's message).
fn input_parts(path: &Path) -> Result<Vec<Part>, String> {
    Ok(match aof::layout(path)? {
        Some(Layout::Aof { parts, .. }) => parts,
        Some(Layout::Rdb) => vec![Part::Rdb {
            path: path.to_path_buf(),
            tail: true,
        }],
        None => vec![Part::Rdb {
            path: path.to_path_buf(),
            tail: false,
        }],
    })
}

/// The formats and filters that describe keys only, refused for an input with commands.
/// `after_rdb`: the commands were found after the RDB part of `file`, whose keys are printed.
fn refuse_for_commands(
    args: &Args,
    filter: &KeyFilter,
    file: &str,
    after_rdb: Option<u64>,
) -> Result<(), Failure> {
    let what = match after_rdb {
        Some(end) => format!(
            "{file}: AOF commands follow its RDB part from offset {end} (an AOF with an RDB preamble; the RDB part's keys were printed)"
        ),
        None => format!("{file}: an AOF with commands"),
    };
    let format = match args.format {
        Format::Keys => Some("keys (a list of an RDB's keys)"),
        Format::Memory => Some("memory (a size report of an RDB's keys)"),
        Format::Jsonl | Format::Resp => None,
    };
    if let Some(format) = format {
        return Err(Failure::Usage(format!(
            "{what}: --format {format} cannot describe commands; use --format jsonl (the RDB part's keys, then one record per command) or --format resp (commands that rebuild the data)"
        )));
    }
    if filter.has_key_rules() || filter.has_type_rules() {
        return Err(Failure::Usage(format!(
            "{what}: --key, --key-regex, --exclude-key and --type choose an RDB's keys and cannot choose commands; leave them out and select the records with jq (--db and --exclude-db do choose commands, by their database)"
        )));
    }
    Ok(())
}

fn aof_failure(e: AofDecodeError) -> Failure {
    match e {
        AofDecodeError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => Failure::ClosedOutput,
        AofDecodeError::Output(e) => Failure::Input(format!("cannot write output: {e}")),
        AofDecodeError::Input(m) => Failure::Input(m),
    }
}

/// Stdin: one RDB, read as it arrives.
fn decode_stdin(
    args: &Args,
    filter: &KeyFilter,
    opts: ParserOptions,
    out: BufWriter<Box<dyn Write>>,
) -> Result<(), Failure> {
    let input: Box<dyn Read> = Box::new(io::stdin().lock());
    let mut parser = RdbParser::with_options(input, opts);
    let mut progress = Progress::new("shake-decode", None, args.log.quiet, args.log.every());
    let mut resp_modules = None;
    let result = match args.format {
        Format::Jsonl => drive(
            &mut parser,
            filter,
            JsonLinesSink::new(out, args.meta),
            &mut progress,
        ),
        Format::Keys => drive(&mut parser, filter, KeyListSink::new(out), &mut progress),
        Format::Memory => drive(
            &mut parser,
            filter,
            MemoryReportSink::new(out),
            &mut progress,
        ),
        Format::Resp => {
            let mut s = RespSink::new(out);
            let r = drive_ref(&mut parser, filter, &mut s, &mut progress);
            resp_modules = Some(s.skipped_modules());
            r
        }
    };
    // Only after a complete decode: a failure's message must stay the one line on stderr.
    if let Some(n) = resp_modules.filter(|&n| n > 0 && result.is_ok()) {
        eprintln!("shake-decode: {n} module value(s) left out of the RESP output (no command recreates them)");
    }
    match result {
        Ok(()) => Ok(()),
        Err(DriveError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            Err(Failure::ClosedOutput)
        }
        Err(DriveError::Output(e)) => Err(Failure::Input(format!("cannot write output: {e}"))),
        Err(DriveError::Rdb(e)) => Err(Failure::Input(format!("stdin: {e}"))),
    }
}

fn drive<R: Read, S: RdbSink>(
    parser: &mut RdbParser<R>,
    filter: &KeyFilter,
    mut sink: S,
    progress: &mut Progress,
) -> Result<(), DriveError> {
    drive_ref(parser, filter, &mut sink, progress)
}

/// Runs the pipeline; on bad input, still writes out the keys that were complete before it.
fn drive_ref<R: Read, S: RdbSink>(
    parser: &mut RdbParser<R>,
    filter: &KeyFilter,
    sink: &mut S,
    progress: &mut Progress,
) -> Result<(), DriveError> {
    match sink::drive(parser, filter, sink, progress) {
        Ok(_) => Ok(()),
        Err(e) => {
            progress.finish(parser.offset(), 0);
            let _ = sink.finish();
            Err(e)
        }
    }
}
