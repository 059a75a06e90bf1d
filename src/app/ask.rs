//! `sqlora ask`: one question (or one SQL statement) answered on stdout as a table, CSV or
//! JSON, and with `--compare` the adapter's answer beside the base model's. Failures are one
//! line; nothing is logged to the feedback store (the shell does that).

use std::io::Write;

use anyhow::{bail, Result};

use super::session::{apply_adapter_to, load_backend, load_examples, open_feedback, open_pipeline};
use crate::cancel::Cancel;
use crate::cli::AskArgs;
use crate::shell::{self, render};
use crate::{eval, pipeline};

/// Runs `sqlora ask`.
pub fn command(args: AskArgs) -> Result<()> {
    let question = args.question.join(" ");
    if question.trim().is_empty() {
        bail!("the question is empty");
    }
    if args.compare && args.common.model.merge {
        bail!("--compare runs the base model too: it cannot be combined with --merge");
    }
    let mut p = open_pipeline(&args.common)?;
    // SQL runs as it is, through the same guard, as in the shell; no model is loaded for it.
    if shell::looks_like_sql(&question, p.dialect()) {
        if args.compare {
            bail!("--compare compares the model's answers: give a question, not SQL");
        }
        let t = std::time::Instant::now();
        let run = p
            .run_sql(&question, &Cancel::new())
            .map_err(|e| anyhow::anyhow!("{}", e.one_line()))?;
        let answer = pipeline::Answer {
            question: question.clone(),
            sql: run.sql,
            attempts: Vec::new(),
            outcome: run.outcome,
            generation: Default::default(),
            query_secs: run.query_secs,
            total_secs: t.elapsed().as_secs_f64(),
            tables: Vec::new(),
            source: pipeline::Source::Greedy,
            confidence: None,
            greedy_sql: None,
            examples: Vec::new(),
        };
        return print_answer(&p, &answer, args.format);
    }
    let mut engine = load_backend(&args.common.model)?;
    apply_adapter_to(
        engine.as_mut(),
        args.common.model.adapter.as_deref(),
        Some(&p.describe_db()),
        args.common.model.merge,
    )?;
    p.set_backend(engine);
    if p.examples > 0 {
        // Examples are a help, not a need: a store that cannot be read costs only them.
        if let Err(e) =
            open_feedback(&args.feedback).and_then(|mut store| load_examples(&mut p, &mut store))
        {
            eprintln!("sqlora: {e:#} (answering without examples)");
        }
    }
    if args.compare {
        let Some((with, base)) = p.compare(&question, &Cancel::new()) else {
            bail!("--compare needs an adapter: pass --adapter NAME or set one with `sqlora adapters use`");
        };
        let side = |r: &std::result::Result<pipeline::Answer, pipeline::AskError>| match r {
            Ok(a) => serde_json::json!({"sql": a.sql, "columns": a.outcome.columns,
                "rows": render::rows_json(&a.outcome), "row_count": a.outcome.rows.len()}),
            Err(e) => serde_json::json!({"error": e.one_line()}),
        };
        let agree = match (&with, &base) {
            (Ok(a), Ok(b)) => eval::compare::results_match(&b.outcome.rows, &a.outcome.rows, false),
            _ => false,
        };
        let adapter = p
            .backend()
            .and_then(|e| e.adapter_name())
            .unwrap_or_default();
        match args.format {
            render::Format::Json => println!(
                "{}",
                serde_json::json!({"question": question, "adapter": adapter,
                    "with_adapter": side(&with), "base": side(&base), "results_agree": agree})
            ),
            _ => {
                for (label, r) in [
                    (format!("adapter {adapter}"), &with),
                    ("base model".to_string(), &base),
                ] {
                    println!("== {label}");
                    match r {
                        Ok(a) => {
                            println!("{}", a.sql);
                            let shown = render::table_counted(&a.outcome, None);
                            println!("{}", shown.text);
                            if let Some(note) =
                                render::shortened_note(shown.shortened, render::WHOLE_VALUES)
                            {
                                println!("{note}");
                            }
                        }
                        Err(e) => println!("error: {}", e.one_line()),
                    }
                }
                println!("results {}", if agree { "agree" } else { "differ" });
            }
        }
        return Ok(());
    }
    let answer = p.ask(&question, &Cancel::new()).map_err(|e| {
        // Keep the failure to one line, the SQL with it.
        anyhow::anyhow!("{}", e.one_line())
    })?;
    print_answer(&p, &answer, args.format)
}

/// Prints one answer of `sqlora ask` in the chosen format.
fn print_answer(
    p: &pipeline::Pipeline,
    answer: &pipeline::Answer,
    format: render::Format,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let levers = p.levers_in_use();
    match format {
        render::Format::Json => {
            // The tables the model was shown: the selection, or the whole schema.
            let tables: Vec<String> = if answer.tables.is_empty() {
                p.schema()
                    .tables
                    .iter()
                    .map(|t| t.qualified_name(p.dialect()))
                    .collect()
            } else {
                answer.tables.clone()
            };
            let obj = serde_json::json!({
                "question": answer.question,
                "sql": answer.sql,
                "tables": tables,
                "columns": answer.outcome.columns,
                "rows": render::rows_json(&answer.outcome),
                "row_count": answer.outcome.rows.len(),
                "truncated": answer.outcome.truncated,
                "attempts": answer.attempts.iter().map(|a| serde_json::json!({"sql": a.sql, "error": a.error})).collect::<Vec<_>>(),
                "source": answer.source,
                "confidence": answer.confidence,
                "model": p.backend().map(|b| b.info().name.clone()),
                "adapter": p.backend().and_then(|b| b.adapter_name()),
                "runs_on": p.backend().map(|b| b.where_it_runs()),
                "constrain": levers.constrain,
                "candidates": levers.candidates,
                "examples": answer.examples.iter().map(|e| serde_json::json!({"id": e.id, "question": e.question, "sql": e.sql})).collect::<Vec<_>>(),
                "elapsed_ms": (answer.total_secs * 1000.0).round() as u64,
            });
            writeln!(out, "{obj}")?;
        }
        render::Format::Csv => write!(out, "{}", render::csv(&answer.outcome))?,
        render::Format::Table => {
            writeln!(out, "{}", answer.sql)?;
            // Long cells are shortened (csv and json print whole values): see the note.
            let shown = render::table_counted(&answer.outcome, None);
            writeln!(out, "{}", shown.text)?;
            writeln!(out, "{}", render::row_count_line(&answer.outcome))?;
            if let Some(c) = answer.confidence {
                writeln!(out, "{}", shell::confidence_line(&c))?;
            }
            let note = render::shortened_note(shown.shortened, render::WHOLE_VALUES);
            if let Some(note) = note {
                writeln!(out, "{note}")?;
            }
        }
    }
    Ok(())
}
