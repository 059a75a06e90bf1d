//! `sqlora eval`: a question set (Spider dev or a JSONL file) answered by the model and judged
//! by execution, with a summary on stdout, an optional JSON report, the result recorded in the
//! adapter's `sqlora.json`, and `--compare` of two reports. The judging is [`crate::eval`]'s;
//! this opens the model, draws the bar, and prints.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::progress;
use super::session::{adapter_library, apply_adapter_to, load_backend};
use crate::cli::EvalArgs;
use crate::clock;
use crate::eval::{self, report};

/// Runs `sqlora eval`.
pub fn command(args: EvalArgs) -> Result<()> {
    use report::{Report, Summary};
    if args.compare_base && args.model.merge {
        bail!("--compare-base runs the base model too: it cannot be combined with --merge");
    }
    if let Some(files) = &args.compare {
        let read = |p: &PathBuf| -> Result<Report> {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a sqlora eval report", p.display()))
        };
        let (a, b) = (read(&files[0])?, read(&files[1])?);
        let flips = report::flips(&a, &b);
        for (label, file, r) in [("A", &files[0], &a), ("B", &files[1], &b)] {
            let o = &r.summary.overall;
            println!(
                "{label}: {} — {} — EX {:.1}% ({}/{})",
                file.display(),
                r.model,
                o.ex(),
                o.correct,
                o.total
            );
        }
        let fixed = flips
            .iter()
            .filter(|f| f.after == eval::Verdict::Correct)
            .count();
        println!(
            "{} shared questions ({} with the same SQL): {} now correct, {} now wrong",
            report::shared(&a, &b),
            report::same_sql(&a, &b),
            fixed,
            flips.len() - fixed
        );
        for f in &flips {
            println!("{}", flip_line(f));
            println!(
                "    A ({}): {}",
                f.before.name(),
                f.before_sql.as_deref().unwrap_or("-")
            );
            println!(
                "    B ({}): {}",
                f.after.name(),
                f.after_sql.as_deref().unwrap_or("-")
            );
        }
        return Ok(());
    }
    let set = args.set.clone().unwrap_or_default();
    let limits = args.run.limits().map_err(anyhow::Error::msg)?;
    let mut items = eval::load_set(&set, args.data.as_deref())?;
    let available = items.len();
    items.drain(..args.offset.min(available));
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        bail!(
            "no questions left after --offset {} (the set has {available})",
            args.offset
        );
    }
    // Missing or empty databases are said before the model loads: a set none of whose
    // questions can run is an error; otherwise those questions are skipped, and counted.
    let unusable = eval::unusable_databases(&items);
    if !unusable.is_empty() {
        let asked = items.len();
        items.retain(|i| {
            !unusable
                .iter()
                .any(|(u, _)| *u == i.db || i.gold_db.as_ref() == Some(u))
        });
        let mut why: Vec<&str> = unusable.iter().take(3).map(|(_, w)| w.as_str()).collect();
        let more = unusable.len().saturating_sub(why.len());
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        why.dedup();
        if items.is_empty() {
            bail!(
                "none of the {asked} questions can run: {}{more}",
                why.join("; ")
            );
        }
        eprintln!(
            "sqlora: skipping {} of {asked} questions: {}{more}",
            asked - items.len(),
            why.join("; ")
        );
    }
    let mut engine = load_backend(&args.model)?;
    let adapter = apply_adapter_to(
        engine.as_mut(),
        args.model.adapter.as_deref(),
        None,
        args.model.merge,
    )?;
    let model = match &adapter {
        Some(a) => format!("{} + adapter {a}", engine.info().name),
        None => engine.info().name.clone(),
    };
    let levers = args.run.levers().resolved(engine.on_gpu());
    // Candidates already fill a batch of their own; a few questions together fill a GPU.
    let batch = args.batch.map_or_else(
        || match eval::default_batch(engine.as_ref()) {
            1 if levers.candidates > 1 => 8,
            b => b,
        },
        usize::from,
    );
    eprintln!(
        "sqlora: evaluating {} of {available} questions from {set} with {model} on {} ({}){}",
        items.len(),
        engine.info().device,
        levers.describe(),
        if batch > 1 {
            format!(", in batches of up to {batch}")
        } else {
            String::new()
        }
    );
    let cancel = progress::interruptible();
    let mut evaluator = eval::Evaluator::new(engine, limits, args.run.repairs);
    evaluator.context_tokens = args.run.context_tokens;
    evaluator.levers = levers;
    evaluator.examples = args.run.examples;
    if let Some(pool) = &args.corrections {
        return super::corrections::command(&args, pool, evaluator, &items, batch, &cancel, &model);
    }
    let bar = progress::bar(
        items.len() as u64,
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    if args.compare_base && adapter.is_none() {
        bail!("--compare-base needs --adapter NAME");
    }
    let report_of = |records: Vec<eval::Record>, summary: Summary, complete: bool| Report {
        set: set.clone(),
        model: model.clone(),
        complete,
        offset: args.offset,
        limit: args.limit,
        levers: levers.describe(),
        summary,
        records,
    };
    // The report is rewritten as the run goes (marked incomplete, at most every 10 s), so a
    // run that is killed or loses its machine keeps what it had judged.
    let mut written = std::time::Instant::now();
    let (records, complete) = eval::run_all(&mut evaluator, &items, batch, &cancel, |_, done| {
        let s = Summary::of(done);
        bar.set_message(format!(
            "EX {:.1}% ({}/{})",
            s.overall.ex(),
            s.overall.correct,
            s.overall.total
        ));
        bar.inc(1);
        if let Some(out) = args.out.as_ref().filter(|o| !o.exists() || o.is_file()) {
            if written.elapsed() >= std::time::Duration::from_secs(10) {
                written = std::time::Instant::now();
                if let Err(e) = write_report(out, &report_of(done.to_vec(), s, false)) {
                    bar.suspend(|| eprintln!("sqlora: {e:#}"));
                }
            }
        }
    })?;
    bar.finish_and_clear();
    if !complete {
        eprintln!(
            "sqlora: interrupted after {} of {} questions; the summary covers those",
            records.len(),
            items.len()
        );
    }
    let summary = Summary::of(&records);
    println!("{}", summary.render());
    let slice_key = format!(
        "{set}{}",
        match (args.offset, args.limit) {
            (0, None) => String::new(),
            (o, Some(l)) => format!("[{o}..{}]", o + l),
            (o, None) => format!("[{o}..]"),
        }
    );
    let mut eval_record = serde_json::json!({
        "at": clock::now_iso(),
        "model": model,
        "merged": args.model.merge,
        "questions": summary.overall.total,
        "correct": summary.overall.correct,
        "ex": summary.overall.ex(),
        "repairs": args.run.repairs,
        "levers": levers.describe(),
    });
    if args.compare_base && complete {
        // The same questions with the adapter taken off.
        let mut engine = evaluator.into_engine().context("the model was lost")?;
        engine.use_adapter(false)?;
        let mut base_eval = eval::Evaluator::new(
            engine,
            args.run.limits().map_err(anyhow::Error::msg)?,
            args.run.repairs,
        );
        base_eval.context_tokens = args.run.context_tokens;
        base_eval.levers = levers;
        eprintln!("sqlora: now the base model on the same questions");
        let (base_records, _) = eval::run_all(&mut base_eval, &items, batch, &cancel, |_, _| {})?;
        let base_summary = Summary::of(&base_records);
        let base_report = Report {
            model: "base".into(),
            ..report_of(base_records, base_summary.clone(), true)
        };
        let with_report = report_of(records.clone(), summary.clone(), true);
        let flips = report::flips(&base_report, &with_report);
        println!(
            "base EX {:.1}% ({}/{}) → adapter EX {:.1}% ({}/{}); {} questions flipped",
            base_summary.overall.ex(),
            base_summary.overall.correct,
            base_summary.overall.total,
            summary.overall.ex(),
            summary.overall.correct,
            summary.overall.total,
            flips.len()
        );
        eval_record["base_correct"] = base_summary.overall.correct.into();
        eval_record["base_ex"] = base_summary.overall.ex().into();
        for f in &flips {
            println!("{}", flip_line(f));
        }
    }
    if let (Some(name), true) = (&adapter, complete) {
        match adapter_library()
            .and_then(|lib| Ok(lib.record_eval(name, &slice_key, eval_record)?))
        {
            Ok(()) => eprintln!("sqlora: recorded in adapter `{name}`'s sqlora.json"),
            Err(e) => eprintln!("sqlora: could not record the result in adapter `{name}`: {e}"),
        }
    }
    if let Some(out) = &args.out {
        write_report(out, &report_of(records, summary, complete))?;
        eprintln!("sqlora: report written to {}", out.display());
    }
    Ok(())
}

/// Writes `report` to `out` whole or not at all: a regular file through a temporary file beside
/// it and a rename; anything else (`/dev/stdout`, a pipe) directly.
fn write_report(out: &std::path::Path, report: &report::Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)? + "\n";
    if out.exists() && !out.is_file() {
        return std::fs::write(out, json).with_context(|| format!("writing {}", out.display()));
    }
    let name = out
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
}

/// A question whose verdict flipped: `+ #12 question` when it is now correct, else `-`.
fn flip_line(f: &report::Flip) -> String {
    let mark = if f.after == eval::Verdict::Correct {
        "+"
    } else {
        "-"
    };
    format!("{mark} #{} {}", f.index, f.question)
}
