//! The progress bar: done, running, failed, queued, rate and ETA; nothing when stderr is not
//! a terminal (logs and CI stay clean), where a summary line is logged every few seconds.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::scheduler::Counts;

pub struct Progress {
    bar: Option<ProgressBar>,
    /// When the last log line went out (for non-terminals).
    last_log: Duration,
    /// Done at the first update: the rate counts only this run's work.
    base: Option<usize>,
}

impl Progress {
    pub fn new(total: usize, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            last_log: Duration::ZERO,
            base: None,
        }
    }

    fn line(&mut self, c: Counts, elapsed: Duration) -> String {
        let base = *self.base.get_or_insert(c.done);
        let rate = (c.done - base.min(c.done)) as f64 / elapsed.as_secs_f64().max(1e-3);
        format!(
            "done {} · running {} · queued {} · waiting {} · failed {} · dead {} · {rate:.1} jobs/s",
            c.done, c.running, c.queued, c.waiting, c.failed, c.dead
        )
    }

    pub fn update(&mut self, c: Counts, elapsed: Duration) {
        let line = self.line(c, elapsed);
        match &self.bar {
            Some(bar) => {
                bar.set_position(c.done as u64);
                bar.set_message(line);
            }
            None if elapsed >= self.last_log + Duration::from_secs(10) => {
                self.last_log = elapsed;
                tracing::info!("{line}");
            }
            None => {}
        }
    }

    pub fn finish(&mut self, c: Counts, elapsed: Duration) {
        let line = self.line(c, elapsed);
        match &self.bar {
            Some(bar) => bar.finish_with_message(line),
            None => tracing::info!("{line}"),
        }
    }
}
