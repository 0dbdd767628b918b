//! Progress output for long runs: one line per finished case on stdout,
//! and, when stderr is a terminal, a live line naming the case in flight
//! and the time so far.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress through a fixed number of cases.
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    live: bool,
}

impl Progress {
    /// Progress through `total` cases of `label`.
    pub fn new(label: &str, total: usize) -> Self {
        Progress {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
            live: std::io::stderr().is_terminal(),
        }
    }

    /// A case is starting.
    pub fn start(&mut self, name: &str) {
        if self.live {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[2K{} [{}/{}] {:.0} s  running {name} ...",
                self.label,
                self.done + 1,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
    }

    /// A case finished with `verdict` after `millis`.
    pub fn finish(&mut self, name: &str, verdict: &str, millis: u128) {
        self.done += 1;
        if self.live {
            eprint!("\r\x1b[2K");
        }
        let width = self.total.to_string().len();
        println!(
            "{} [{:>width$}/{}] {:<44} {verdict} ({millis} ms)",
            self.label, self.done, self.total, name
        );
    }
}
