//! Progress for long commands: a bar with rate and ETA on a terminal, plain
//! log lines (about every 10 seconds, and at the end) otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports `done / total` for one phase of work. Safe to call from worker threads.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
    last_log: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Starts reporting a phase called `label` with `total` items.
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Progress { bar, label: label.to_string(), start: Instant::now(), last_log: Mutex::new(Instant::now()) }
    }

    /// Records progress.
    pub fn update(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let Ok(mut last) = self.last_log.lock() else { return };
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            let secs = self.start.elapsed().as_secs_f64();
            eprintln!("{}: {done}/{total} ({:.0}/s)", self.label, done as f64 / secs.max(1e-9));
        }
    }

    /// Ends the phase.
    pub fn finish(&self, done: u64) {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {done} in {secs:.1}s ({:.0}/s)", self.label, done as f64 / secs.max(1e-9));
    }
}
