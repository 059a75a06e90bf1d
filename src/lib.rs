//! sqlora: ask a live SQL database questions in plain English, with a local quantized model.
//!
//! Modules are layered, and imports run only downward: `app` (the commands, and the only
//! module that knows `cli` and the config file) → `shell` → `pipeline` (wires a question
//! through the rest) → `guard`, `schema`, `llm`, `db` → `sql` (dialects, values, outcomes).
//! `eval`, `train` and `feedback` sit beside `pipeline`; `cancel`, `clock` and `paths` are
//! leaves anyone may use. This file declares them and dispatches one parsed command line.

pub mod app;
pub mod cancel;
pub mod cli;
pub mod clock;
pub mod db;
pub mod eval;
pub mod feedback;
pub mod guard;
pub mod hub;
pub mod llm;
pub mod paths;
pub mod pipeline;
pub mod schema;
pub mod shell;
pub mod sql;
pub mod train;

use anyhow::Result;

use app::config;
use cli::{Cli, Command};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Before the file is read: `config path` answers even when the file does not parse.
    if let Some(Command::Config(cmd)) = &cli.command {
        return config::command(cmd);
    }
    // The administrator's additions to the function allow-list hold for every command.
    guard::functions::install(config::Config::load()?.policy()?).map_err(anyhow::Error::msg)?;
    match cli
        .resolve(|p| std::path::Path::new(p).is_file())
        .map_err(anyhow::Error::msg)?
    {
        Command::Shell(args) => app::shell::command(args),
        Command::Ask(args) => app::ask::command(args),
        Command::Eval(args) => app::eval::command(args),
        Command::Feedback(cmd) => app::feedback::command(cmd),
        Command::Model(cmd) => app::model::command(cmd),
        Command::Adapters(cmd) => app::adapters::command(cmd),
        Command::Train(args) if args.rl => app::rl::command(*args),
        Command::Train(args) => app::train::command(*args),
        Command::Config(cmd) => config::command(&cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "sqlora", &mut std::io::stdout());
            Ok(())
        }
    }
}
