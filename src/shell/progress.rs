//! The shell's spinner on stderr: what is being waited for (loading the model, reading the
//! schema into it, answering, explaining) and the seconds since it began, redrawn ten times a
//! second by indicatif's own thread. Drawn only when stderr is a terminal; lines printed
//! through it go above it (or plainly to stderr without one). Never touches stdout, never
//! reads input and never decides anything: dropping it clears it, and Ctrl-C is left to the
//! shell's `Cancel`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A spinner with a label (`answering`), the elapsed seconds and a detail (`attempt 2/3`):
/// `⠹ answering… 3.2 s, attempt 2/3`.
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    /// Starts a spinner labelled `label`, when stderr is a terminal.
    pub fn start(label: &str) -> Self {
        Self::start_if(std::io::stderr().is_terminal(), label)
    }

    fn start_if(shown: bool, label: &str) -> Self {
        if !shown {
            return Self { bar: None };
        }
        let style = ProgressStyle::with_template("{spinner} {prefix}… {secs}{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "secs",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} s", state.elapsed().as_secs_f64());
                },
            );
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar: Some(bar) }
    }

    /// Sets the detail shown after the seconds (`attempt 2/3`); empty for none.
    pub fn detail(&self, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(if detail.is_empty() {
                String::new()
            } else {
                format!(", {detail}")
            });
        }
    }

    /// Prints `line` on stderr above the spinner (plainly when there is none).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Whether it is drawn.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_nothing_is_drawn() {
        let s = Spinner::start_if(false, "answering");
        assert!(!s.shown());
        s.detail("attempt 2/3");
    }

    #[test]
    fn a_shown_spinner_takes_details_and_clears_on_drop() {
        let s = Spinner::start_if(true, "answering");
        assert!(s.shown());
        s.detail("attempt 2/3");
        assert_eq!(
            s.bar.as_ref().map(|b| b.message()).as_deref(),
            Some(", attempt 2/3")
        );
        drop(s);
    }
}
