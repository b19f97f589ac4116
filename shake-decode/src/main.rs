//! shake-decode: an RDB file (or stdin) as JSON lines, RESP commands, a key list or a size report.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use shake_core::cli::{FilterArgs, LogArgs};
use shake_core::filter::KeyFilter;
use shake_core::observe::Progress;
use shake_core::rdb::{ParserOptions, RdbParser};
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

/// Decode an RDB file into text for people and programs.
///
/// Reads RDB versions 1-15 (REDIS magic) and 80-81 (VALKEY magic), every type and encoding.
/// Stops after the EOF opcode and checksum, so an AOF with an RDB preamble decodes too.
/// Exit status: 0 success, 1 bad or unreadable input (one line on stderr names the byte offset
/// and key), 2 usage error. On bad input, keys before the damage have been written; the output
/// is incomplete and the exit status says so.
#[derive(Parser, Debug)]
#[command(
    name = "shake-decode",
    version,
    after_help = "Examples:\n  shake-decode dump.rdb | jq 'select(.type==\"hash\")'\n  shake-decode dump.rdb --format resp | redis-cli --pipe\n  shake-decode dump.rdb --format keys --db 0 --key 'user:*'"
)]
struct Args {
    /// RDB file to read; `-` reads stdin
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
    let name = args.input.display().to_string();
    let (input, total): (Box<dyn Read>, Option<u64>) = if name == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(&args.input)
            .map_err(|e| Failure::Input(format!("cannot open {name}: {e}")))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let output: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        let f = shake_core::part_file::create_private(&args.output).map_err(Failure::Usage)?;
        Box::new(f)
    };
    let out = BufWriter::with_capacity(256 * 1024, output);
    let opts = ParserOptions {
        relaxed_version: args.relaxed_version,
        // Values left out (filters, --format keys) are stepped over unread; every value that
        // is decoded is checked as deeply as a server's sanitizer checks it.
        verify_values: false,
        ..ParserOptions::default()
    };
    let mut parser = RdbParser::with_options(input, opts);
    let mut progress = Progress::new("shake-decode", total, args.log.quiet, args.log.every());

    let mut resp_modules = None;
    let result = match args.format {
        Format::Jsonl => drive(
            &mut parser,
            &filter,
            JsonLinesSink::new(out, args.meta),
            &mut progress,
        ),
        Format::Keys => drive(&mut parser, &filter, KeyListSink::new(out), &mut progress),
        Format::Memory => drive(
            &mut parser,
            &filter,
            MemoryReportSink::new(out),
            &mut progress,
        ),
        Format::Resp => {
            let mut s = RespSink::new(out);
            let r = drive_ref(&mut parser, &filter, &mut s, &mut progress);
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
        Err(DriveError::Rdb(e)) => Err(Failure::Input(format!("{name}: {e}"))),
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
