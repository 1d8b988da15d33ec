//! Progress bars on stderr, drawn only when stderr is a terminal: a log
//! file or a pipe gets the final summary line alone.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `total` steps, or nothing when stderr is not a terminal.
pub fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

/// A bar per table of a snapshot, under one another.
pub struct Bars {
    multi: indicatif::MultiProgress,
    bars: Vec<(String, ProgressBar)>,
}

impl Bars {
    /// `None` when stderr is not a terminal.
    pub fn new() -> Option<Bars> {
        std::io::stderr().is_terminal().then(|| Bars {
            multi: indicatif::MultiProgress::new(),
            bars: Vec::new(),
        })
    }

    /// Show `table` at `rows` of `estimated` (a spinner-like count when unknown).
    pub fn set(&mut self, table: &str, rows: u64, estimated: Option<u64>, done: bool) {
        let bar = match self.bars.iter().find(|(t, _)| t == table) {
            Some((_, b)) => b.clone(),
            None => {
                let b = self.multi.add(ProgressBar::new(estimated.unwrap_or(0)));
                b.set_style(
                    ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos} rows ({per_sec})")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b.set_message(table.to_string());
                self.bars.push((table.to_string(), b.clone()));
                b
            }
        };
        if let Some(e) = estimated {
            bar.set_length(e.max(rows));
        }
        bar.set_position(rows);
        if done {
            bar.set_length(rows);
            bar.finish();
        }
    }

    pub fn finish(&self) {
        for (_, b) in &self.bars {
            b.finish();
        }
    }
}
