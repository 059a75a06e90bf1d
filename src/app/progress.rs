//! Progress for the long commands and the Ctrl-C wiring, each written once: the bars that
//! `model pull`, `eval` and `train` draw on stderr (indicatif), and [`interruptible`], the
//! cancel flag that the first Ctrl-C sets. Never prints anything but the bars, never touches
//! stdout; the shell's spinner is its own ([`crate::shell::progress`]).

use indicatif::{ProgressBar, ProgressStyle};

use crate::cancel::Cancel;
use crate::hub::registry::PullProgress;

/// A bar of `len` steps drawn with indicatif's `template` (`{bar:30}` and the like), filled
/// with `=>`.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// A model download told to a bar: its stage as the message, its bytes as the position.
pub struct BarProgress(pub ProgressBar);

impl PullProgress for BarProgress {
    fn stage(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// A cancel flag that the first Ctrl-C sets (long runs stop and report what they did; the
/// shell stops the query or the rendering at hand); a second Ctrl-C, while the first is still
/// being honoured, exits at once. Installed once per process: a later call's handler is not
/// installed.
pub fn interruptible() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if c.is_set() {
            std::process::exit(130);
        }
        c.set();
    });
    cancel
}
