//! Progress bars for the long commands (`dead replay --all`, `dead purge --all`, `trim`): drawn
//! on stderr, and only for people: when stderr is a terminal and the output is not `--json`.
//! Scripts, pipes and `--json` see none of it.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Output;

/// A progress bar, or a hidden one that draws nothing.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` steps, labelled `what`, shown only when stderr is a terminal and
    /// `out` is not JSON (indicatif hides it too when `TERM` is unset or `dumb`).
    pub fn new(out: &Output, len: u64, what: &str) -> Progress {
        let shown = !out.is_json() && std::io::stderr().is_terminal();
        let bar = if shown {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        Progress { bar }
    }

    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Removes the bar, before the result is printed.
    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    /// A command that failed midway leaves no bar behind either.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
