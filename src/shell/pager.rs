//! The shell's pager and the terminal's size: whether output fits the terminal stdout is, and
//! if not, piping it through `$SQLORA_PAGER`, else `$PAGER`, else `less -SRFX` (`-S`: long
//! lines scroll sideways instead of wrapping); either variable set but empty means no pager.
//! Only for a terminal: [`terminal_size`] is `None` on anything else. Never renders a result,
//! never paints, and never decides whether paging is on (the shell's `\pager` does).

use std::io::{IsTerminal, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cancel::Cancel;

/// The pager when neither `$SQLORA_PAGER` nor `$PAGER` is set.
pub const DEFAULT: &str = "less -SRFX";

/// The terminal's (columns, rows) when stdout is a terminal that tells its size.
pub fn terminal_size() -> Option<(u16, u16)> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    crossterm::terminal::size()
        .ok()
        .filter(|&(cols, rows)| cols > 0 && rows > 0)
}

/// The pager to run: `sqlora_pager` (`$SQLORA_PAGER`) when set, else `pager` (`$PAGER`), else
/// [`DEFAULT`]; `None` when the one that is set is blank.
pub fn choose(sqlora_pager: Option<&str>, pager: Option<&str>) -> Option<String> {
    let chosen = sqlora_pager.or(pager).unwrap_or(DEFAULT).trim();
    (!chosen.is_empty()).then(|| chosen.to_string())
}

/// [`choose`] from this process's environment.
pub fn command() -> Option<String> {
    let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    choose(var("SQLORA_PAGER").as_deref(), var("PAGER").as_deref())
}

/// Columns `line` takes on a terminal: its characters less any escape sequences (`ESC [ … m`).
fn visible_width(line: &str) -> usize {
    let mut n = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

/// True when `text` does not fit a terminal of `size` (columns, rows): a line wider than it,
/// or more lines than its rows less one, kept for the prompt.
pub fn too_big(text: &str, (cols, rows): (u16, u16)) -> bool {
    let mut lines = 0usize;
    for line in text.lines() {
        lines += 1;
        if lines >= usize::from(rows) || visible_width(line) > usize::from(cols) {
            return true;
        }
    }
    false
}

/// Pipes `text` to `cmd` (run by `sh -c`, with `LESS=-SRFX` unless `LESS` is set) and waits
/// for it to exit. Ctrl-C reaches the pager too: while it runs `cancel` is cleared as it is
/// raised, so Ctrl-C in the pager cancels nothing later and, pressed twice, does not end the
/// shell. An error when the pager could not be started or was not found (the caller prints
/// `text` itself then); a pager that quits before reading everything is no error.
pub fn page(text: &str, cmd: &str, cancel: &Cancel) -> std::io::Result<()> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(cmd).stdin(Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        command.env("LESS", "-SRFX");
    }
    let mut child = command.spawn()?;
    let stdin = child.stdin.take();
    let text = text.to_owned();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A broken pipe (the pager quit early) is the user's choice, not a failure.
            let _ = stdin.write_all(text.as_bytes());
        }
    });
    let status = loop {
        cancel.reset();
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    cancel.reset();
    let _ = writer.join();
    // `sh` says 127 when the command is not found (and 126 when it cannot run it).
    match status.code() {
        Some(code @ (126 | 127)) => Err(std::io::Error::other(format!(
            "the pager `{cmd}` could not run (status {code})"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_pager() {
        assert_eq!(choose(None, None).as_deref(), Some(DEFAULT));
        assert_eq!(choose(None, Some("more")).as_deref(), Some("more"));
        assert_eq!(
            choose(Some("most -s"), Some("more")).as_deref(),
            Some("most -s")
        );
        // Set but empty turns it off; SQLORA_PAGER wins even when empty.
        assert_eq!(choose(Some(""), Some("more")), None);
        assert_eq!(choose(None, Some("  ")), None);
    }

    #[test]
    fn fits_or_not() {
        assert!(!too_big("ab\ncd", (2, 3)));
        assert!(too_big("abc\ncd", (2, 3)), "too wide");
        assert!(
            too_big("a\nb\nc", (2, 3)),
            "too tall: a row is kept for the prompt"
        );
        // Escape sequences take no columns; characters count, not bytes.
        assert!(!too_big("\x1b[2m12 rows\x1b[0m", (7, 2)));
        assert!(!too_big("│é│", (3, 2)));
        assert_eq!(visible_width("\x1b[36mSELECT\x1b[0m 1"), 8);
    }

    #[test]
    fn pages_through_a_command_and_clears_ctrl_c() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("paged");
        let cancel = Cancel::new();
        cancel.set();
        let text = "line\n".repeat(20_000);
        page(&text, &format!("cat > '{}'", out.display()), &cancel).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
        assert!(!cancel.is_set());
        // A pager that reads nothing and quits is fine; one that is not there is an error.
        page(&text, "true", &cancel).unwrap();
        assert!(page("x", "no-such-pager-sqlora", &cancel).is_err());
    }
}
