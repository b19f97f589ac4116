//! Progress reporting on stderr: a bar when stderr is a terminal, otherwise a plain status line
//! every few seconds (so logs of long runs show life without flooding).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    tool: &'static str,
    /// Counting keys rather than bytes (the position is a key count).
    keys: bool,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    started: Instant,
    last_log: Instant,
    ticks: u32,
}

impl Progress {
    /// Progress of reading `total` bytes (when known). `log_every: None` turns the plain status
    /// lines off (the bar still shows on a terminal unless `quiet`).
    pub fn new(
        tool: &'static str,
        total: Option<u64>,
        quiet: bool,
        log_every: Option<Duration>,
    ) -> Self {
        let now = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::no_length(),
            };
            let style = if total.is_some() {
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec}) {msg}"
            };
            if let Ok(s) = ProgressStyle::with_template(style) {
                bar.set_style(s);
            }
            bar
        });
        Progress {
            tool,
            keys: false,
            total,
            bar,
            log_every: if quiet || terminal { None } else { log_every },
            started: now,
            last_log: now,
            ticks: 0,
        }
    }

    /// Progress of working through `total` keys (when known): the position is a key count.
    pub fn keys(
        tool: &'static str,
        total: Option<u64>,
        quiet: bool,
        log_every: Option<Duration>,
    ) -> Self {
        let mut p = Self::new(tool, None, quiet, log_every);
        p.keys = true;
        p.total = total;
        if let Some(bar) = &p.bar {
            let style = match total {
                Some(t) => {
                    bar.set_length(t);
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} keys ({per_sec}, eta {eta}) {msg}"
                }
                None => "{spinner} [{elapsed_precise}] {pos} keys ({per_sec}) {msg}",
            };
            if let Ok(s) = ProgressStyle::with_template(style) {
                bar.set_style(s);
            }
        }
        p
    }

    /// A reporter that reports nothing.
    pub fn silent() -> Self {
        Self::new("", None, true, None)
    }

    /// Reports progress from a per-key caller: acts on every 256th call, since checking the
    /// clock on every key costs more than the key.
    pub fn update(&mut self, bytes: u64, keys: u64) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % 256 != 0 {
            return;
        }
        self.update_now(bytes, keys);
    }

    /// Reports progress at once, for callers that report rarely (a chunk of a transfer).
    pub fn update_now(&mut self, bytes: u64, keys: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            if !self.keys {
                bar.set_message(format!("{keys} keys"));
            }
        }
        if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                eprintln!("{}", self.status_line(bytes, keys));
            }
        }
    }

    fn status_line(&self, bytes: u64, keys: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        if self.keys {
            let of = self
                .total
                .map(|t| format!(" of about {t}"))
                .unwrap_or_default();
            return format!(
                "{}: {keys} keys{of}, {:.0} keys/s",
                self.tool,
                keys as f64 / secs
            );
        }
        let mb = bytes as f64 / 1e6;
        let pct = self
            .total
            .filter(|&t| t > 0)
            .map(|t| {
                format!(
                    " of {:.1} MB ({:.0}%)",
                    t as f64 / 1e6,
                    bytes as f64 * 100.0 / t as f64
                )
            })
            .unwrap_or_default();
        format!(
            "{}: {mb:.1} MB{pct}, {keys} keys, {:.1} MB/s",
            self.tool,
            mb / secs
        )
    }

    pub fn finish(&mut self, bytes: u64, _keys: u64) {
        if let Some(bar) = self.bar.take() {
            bar.set_position(bytes);
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
