//! The `sqlora` binary: parses the command line and runs it. Every failure — a bad option or
//! a failed command — ends as one line on stderr (`sqlora: error: …`) and a non-zero exit;
//! help and version go to stdout as clap writes them.

use clap::{CommandFactory, FromArgMatches};

fn main() {
    // The config file's [defaults] become clap's defaults, under the command line and the
    // environment. A config file that does not read is reported by `run` (`config path` still
    // answers), so here it only leaves the built-in defaults.
    let command = match sqlora::app::config::Config::load() {
        Ok(config) => config.apply(sqlora::cli::Cli::command()),
        Err(_) => sqlora::cli::Cli::command(),
    };
    let cli = match command
        .try_get_matches()
        .and_then(|m| sqlora::cli::Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("sqlora: error: {}", clap_line(&e.render().to_string()));
            std::process::exit(2);
        }
    };
    if let Err(e) = sqlora::run(cli) {
        eprintln!("sqlora: error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// An error and its causes on one line: `what: why`, each cause once (a cause whose text the
/// message already holds, as `thiserror` messages that show their source do, is not repeated),
/// newlines (SQL, server messages) folded to spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = fold(&cause.to_string());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Lines trimmed and joined with spaces (spaces within a line, as in SQL literals, are kept).
fn fold(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// clap's message without its `error:` label, usage block and help hint, on one line.
fn clap_line(rendered: &str) -> String {
    let kept: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let text = kept.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("{text} (see --help)")
}
