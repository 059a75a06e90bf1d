//! `sqlora shell`: everything the shell works with is opened here, through [`super::session`]
//! — the database and pipeline, the model with its adapter (a model that does not load
//! leaves questions disabled, not the shell), the schema read into the model, the feedback
//! store (none: answers are not logged) and the Ctrl-C flag — and then handed to
//! [`crate::shell::run`]. `\adapter` reaches the adapter library through `Library`, an
//! [`crate::shell::Adapters`] given to the shell, so that the shell imports nothing from
//! the application layer. Prints the start-up lines on stderr; never reads input.

use anyhow::Result;

use super::progress;
use super::session::{
    adapter_library, apply_adapter_to, load_backend, model_label, open_feedback, open_pipeline,
};
use crate::cli::ShellArgs;
use crate::shell::{self, progress::Spinner};

/// Starts the shell on `--db` (or the demo database) with `--model`.
pub fn command(args: ShellArgs) -> Result<()> {
    let mut pipeline = open_pipeline(&args.common)?;
    // The line editor first: see [`shell::LineEditor`] for why it precedes the Ctrl-C handler.
    let editor = shell::LineEditor::new()?;
    let cancel = progress::interruptible();
    let tables = pipeline.schema().tables.len();
    eprintln!(
        "sqlora {} — {} ({} table{})",
        env!("CARGO_PKG_VERSION"),
        pipeline.describe_db(),
        tables,
        if tables == 1 { "" } else { "s" }
    );
    let mut model_error = None;
    let mut warming = None;
    let spinner = Spinner::start("loading the model");
    let loaded = load_backend(&args.common.model);
    drop(spinner);
    match loaded {
        Ok(mut engine) => {
            let info = engine.info().clone();
            let db_id = pipeline.describe_db();
            match apply_adapter_to(
                engine.as_mut(),
                args.common.model.adapter.as_deref(),
                Some(&db_id),
                args.common.model.merge,
            ) {
                Ok(Some(name)) => eprintln!("adapter `{name}` applied"),
                Ok(None) => {}
                Err(e) => eprintln!("sqlora: {e:#}; using the base model"),
            }
            let local = engine.local().is_some();
            pipeline.set_backend(engine);
            if local {
                eprintln!(
                    "model {} from {} loaded on {} in {:.1} s; reading the schema into it…",
                    model_label(&info.path),
                    info.path.display(),
                    info.device,
                    info.load_secs
                );
            } else {
                eprintln!(
                    "model {} on the {} (prompts written with the tokenizer of {}); reading \
                     the schema into it…",
                    info.name,
                    info.device,
                    info.path.display()
                );
            }
            // The schema is read into an in-process model while the user types the first
            // line; other setups (a server, per-question table selection) prepare it now.
            // (A Ctrl-C during the load must not cancel that read.)
            cancel.reset();
            if let Some(w) = pipeline.start_warm_up(&cancel) {
                eprintln!(
                    "{} while you type",
                    match w.tokens {
                        Some(n) => format!("reading the schema into the model ({n} tokens)"),
                        None => "reading the schema into the model".into(),
                    }
                );
                warming = Some(w);
            } else {
                let t = std::time::Instant::now();
                let spinner = Spinner::start(&match pipeline.prefix_tokens() {
                    Some(n) => format!("reading the schema into the model ({n} tokens)"),
                    None => "reading the schema".into(),
                });
                let warmed = pipeline.warm_up(&cancel);
                drop(spinner);
                match warmed {
                    Ok(0) if pipeline.selects_tables() => eprintln!(
                        "schema context: over the budget of {} tokens, so the tables are chosen \
                         per question (\\context shows them); value index ready in {:.1} s",
                        pipeline.context_tokens,
                        t.elapsed().as_secs_f64()
                    ),
                    Ok(n) => eprintln!(
                        "schema context: {n} tokens, cached in {:.1} s",
                        t.elapsed().as_secs_f64()
                    ),
                    Err(e) => {
                        eprintln!("sqlora: {e} (the schema will be read with the first question)")
                    }
                }
                cancel.reset();
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("sqlora: {msg}\nsqlora: questions are disabled; \\sql and SQL still work");
            model_error = Some(msg);
        }
    }
    let feedback = match open_feedback(&args.feedback) {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("sqlora: {e:#}; answers will not be logged this session");
            None
        }
    };
    shell::run(
        editor,
        shell::Opened {
            pipeline,
            cancel,
            model_error,
            feedback,
            adapters: Box::new(Library),
            warming,
        },
        shell::Options {
            format: args.format,
            null: args.null,
            pager: args.pager,
        },
    )
}

/// `\adapter`'s library: the one in the data dir, applied as `--adapter` is.
struct Library;

impl shell::Adapters for Library {
    fn names(&self) -> Vec<String> {
        adapter_library().map(|lib| lib.names()).unwrap_or_default()
    }

    fn apply(&self, engine: &mut dyn crate::llm::Backend, name: &str) -> Result<Option<String>> {
        if name.trim() == "none" {
            if let Some(e) = engine.local_mut() {
                e.set_adapter(None)?;
                return Ok(None);
            }
        }
        apply_adapter_to(engine, Some(name), None, false)
    }
}
