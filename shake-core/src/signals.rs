//! SIGINT and SIGTERM: the one place the tools wait for them. A tool stops reading at the first
//! one, writes or rolls back what is in flight, prints its summary and exits with
//! [`Signal::exit_code`] (the shell's 128 + signal number); a second one ends the process at once.

use std::fmt;

/// The signal that asked the tool to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a Kubernetes pod stopping).
    Terminate,
}

impl Signal {
    /// 130 for SIGINT, 143 for SIGTERM: what a shell reports for a process the signal killed,
    /// so scripts tell an interruption from a failure (1) and from success (0).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// The next SIGINT or SIGTERM. A signal whose handler cannot be installed is never reported
/// (rather than reported at once): the tool then runs until done, or until the other one.
pub async fn next() -> Signal {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                term.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = interrupt => Signal::Interrupt,
        _ = terminate => Signal::Terminate,
    }
}

/// Which signal, if any, asked a running job to stop: set by the task that waits for signals,
/// read by the job where it can stop cleanly.
#[derive(Debug, Default)]
pub struct StopFlag(std::sync::atomic::AtomicU8);

impl StopFlag {
    pub fn set(&self, s: Signal) {
        self.0
            .store(s.exit_code(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Signal> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            130 => Some(Signal::Interrupt),
            143 => Some(Signal::Terminate),
            _ => None,
        }
    }
}
