//! `sqlora eval --set TEST.jsonl --corrections POOL.jsonl --n 0,5,10,20,50`: runs the
//! simulation of [`crate::eval::corrections`] with a progress bar, prints EX against N (per
//! database too when the set has several), and with `--out` writes the JSON report and a PNG
//! of EX against N beside it. The simulation is the eval module's; this opens nothing itself.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::progress;
use crate::cancel::Cancel;
use crate::cli::EvalArgs;
use crate::eval::{self, corrections};

pub fn command(
    args: &EvalArgs,
    pool_file: &Path,
    mut evaluator: eval::Evaluator,
    items: &[eval::Item],
    batch: usize,
    cancel: &Cancel,
    model: &str,
) -> Result<()> {
    let pool = eval::load_jsonl(pool_file)?;
    let set = args.set.clone().unwrap_or_default();
    // The pool and the test set must not share a question: that would be training on test.
    let asked: std::collections::HashSet<(&str, String)> = items
        .iter()
        .map(|i| (i.db.as_str(), i.question.trim().to_lowercase()))
        .collect();
    if let Some(both) = pool
        .iter()
        .find(|p| asked.contains(&(p.db.as_str(), p.question.trim().to_lowercase())))
    {
        bail!(
            "{} and {set} share the question `{}`: the pool must hold other questions",
            pool_file.display(),
            both.question
        );
    }
    let mut ns = args.n.clone();
    ns.sort_unstable();
    ns.dedup();
    eprintln!(
        "sqlora: {} test questions × N = {ns:?} corrections per database from {} ({} pairs, \
         order seed {}), mode {}, up to {} examples a question",
        items.len(),
        pool_file.display(),
        pool.len(),
        args.pool_seed,
        args.mode,
        evaluator.examples
    );
    let bar = progress::bar(
        (items.len() * ns.len()) as u64,
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    let (points, complete) = corrections::simulate(
        items,
        &pool,
        &ns,
        args.pool_seed,
        &mut evaluator,
        batch,
        cancel,
        |n, _, done| {
            let s = eval::report::Summary::of(done);
            bar.set_message(format!(
                "N={n}: EX {:.1}% ({}/{})",
                s.overall.ex(),
                s.overall.correct,
                s.overall.total
            ));
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    if !complete {
        eprintln!("sqlora: interrupted; the table covers what ran");
    }
    let dbs: Vec<String> = points
        .first()
        .map(|p| p.by_db.keys().cloned().collect())
        .unwrap_or_default();
    let short = |db: &str| {
        Path::new(db)
            .file_stem()
            .map_or_else(|| db.to_string(), |s| s.to_string_lossy().into_owned())
    };
    let mut header = format!("{:>4}  {:>16}", "N", "EX");
    if dbs.len() > 1 {
        for db in &dbs {
            header.push_str(&format!("  {:>24}", short(db)));
        }
    }
    println!("{header}");
    for p in &points {
        let o = &p.summary.overall;
        let mut line = format!(
            "{:>4}  {:>16}",
            p.n,
            format!("{:.1}% ({}/{})", o.ex(), o.correct, o.total)
        );
        if dbs.len() > 1 {
            for db in &dbs {
                let (k, c, t) = p.by_db.get(db).copied().unwrap_or_default();
                line.push_str(&format!(
                    "  {:>24}",
                    format!(
                        "{:.1}% ({c}/{t}, N={k})",
                        100.0 * c as f64 / t.max(1) as f64
                    )
                ));
            }
        }
        println!("{line}");
    }
    let unknown: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "N={}: {}",
                p.n,
                p.summary
                    .verdicts
                    .get(&eval::Verdict::UnknownName)
                    .copied()
                    .unwrap_or(0)
            )
        })
        .collect();
    println!("unknown table/column answers: {}", unknown.join(", "));
    if let Some(out) = &args.out {
        let report = serde_json::json!({
            "set": set,
            "pool": pool_file.display().to_string(),
            "mode": args.mode,
            "model": model,
            "levers": evaluator.levers.describe(),
            "examples": evaluator.examples,
            "pool_seed": args.pool_seed,
            "complete": complete,
            "points": points,
        });
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        let png = out.with_extension("png");
        // `adapt/geoquery/test.jsonl` is named `geoquery/test`.
        let name = Path::new(&set);
        let title = match name.parent().and_then(|d| d.file_name()) {
            Some(dir) => format!("{}/{}", dir.to_string_lossy(), short(&set)),
            None => short(&set),
        };
        corrections::plot(
            &points,
            &png,
            &format!("{title} — {model} — corrections as examples"),
        )
        .map_err(anyhow::Error::msg)?;
        eprintln!(
            "sqlora: report written to {} and the plot to {}",
            out.display(),
            png.display()
        );
    }
    Ok(())
}
