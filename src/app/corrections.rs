//! `sqlora eval --set TEST.jsonl --corrections POOL.jsonl --n 0,5,10,20,50`: runs the
//! simulation of [`crate::eval::corrections`] with a progress bar, prints EX against N (per
//! database too when the set has several), and with `--out` writes the JSON report and a PNG
//! of EX against N beside it. The simulation is the eval module's; in the training modes this
//! gives it the step that trains, between recording and answering: an adapter on the recorded
//! pairs with `train --auto`'s recipe ([`crate::train::recipe`]), trained on a second copy of
//! the model loaded as training needs it, on top of the adapter the answering model started
//! with (the shipped one by default; else from a fresh adapter), then applied to the answering
//! one (at N = 0 on the replayed pairs alone, the baseline the corrections are measured
//! against).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::progress;
use crate::cancel::Cancel;
use crate::cli::EvalArgs;
use crate::eval::{self, corrections, EvalError};
use crate::train::{self, recipe};

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
    let training = args.mode != "retrieval";
    let retrieve = args.mode != "train";
    let mut trainer: Option<(crate::llm::Engine, Vec<train::Pair>)> = None;
    if training {
        args.model
            .local_only(&format!("--mode {}", args.mode))
            .map_err(anyhow::Error::msg)?;
        if args.model.merge {
            bail!(
                "--mode {} puts a new adapter on the model for each N; it cannot be combined \
                 with --merge",
                args.mode
            );
        }
        let path = super::session::model_path(&args.model)?;
        let (device, chosen) = crate::hub::device::select(args.model.device)?;
        let engine = super::train::load_for_training(&path, device)?;
        let dir = args.data.clone().unwrap_or_else(eval::default_data_dir);
        let public =
            super::train::spider_train_pairs(&dir, Some(recipe::AUTO_REPLAY), Some(args.pool_seed))
                .context("the training modes replay Spider train pairs")?;
        eprintln!(
            "sqlora: training mode: an adapter per N on {chosen}, each pair {}×, {} of {} Spider \
             train pairs replayed",
            recipe::AUTO_WEIGHT,
            recipe::AUTO_REPLAY.min(public.len()),
            public.len()
        );
        trainer = Some((engine, public));
    }
    // Corrections are trained on top of the adapter the model answers with (the shipped one by
    // default), as `train --auto` does; with none, from a fresh adapter.
    let start: Option<crate::llm::lora::adapter::Adapter> = evaluator
        .engine_mut()
        .and_then(|b| b.local_mut())
        .and_then(|e| e.adapter().cloned());
    if training {
        eprintln!(
            "sqlora: each N's adapter is trained from {}",
            start.as_ref().map_or_else(
                || "a fresh adapter".to_string(),
                |a| format!("`{}`", a.label)
            )
        );
    }
    let seed = args.pool_seed;
    let mut prepare = |n: usize,
                       store: &mut crate::feedback::Store,
                       ev: &mut eval::Evaluator|
     -> Result<Option<serde_json::Value>, EvalError> {
        let Some((tengine, public)) = trainer.as_ref() else {
            return Ok(None);
        };
        let failed = |e: &dyn std::fmt::Display| EvalError::Set(format!("training: {e}"));
        let engine = ev
            .engine_mut()
            .and_then(|b| b.local_mut())
            .ok_or_else(|| failed(&"training on corrections needs --backend local"))?;
        let own: Vec<train::Pair> = store
            .export(&crate::feedback::Filter::default())
            .map_err(|e| failed(&e))?
            .into_iter()
            .map(|p| train::Pair {
                question: p.question,
                context: p.context,
                answer: p.answer,
                dialect: Some(p.dialect),
            })
            .collect();
        let mix = recipe::Mix {
            weight: recipe::AUTO_WEIGHT,
            replay: recipe::AUTO_REPLAY,
            seed,
        };
        let pairs = recipe::mix(&own, public, &mix);
        // N = 0 trains on the replayed pairs alone: what the corrections add is then what
        // the curve shows, not what the replay does.
        let opts = recipe::default_options(tengine.model().device().is_cuda(), seed);
        let (lora, fitted) = recipe::fit(
            tengine.model(),
            tengine.tokenizer(),
            tengine.template(),
            &pairs,
            &own,
            recipe::AUTO_MAX_LEN,
            &opts,
            start.as_ref(),
            cancel,
        )
        .map_err(|e| failed(&e))?;
        // Each recorded pair is in the mix `weight` times.
        let dropped = fitted.own_too_long / mix.weight.max(1);
        if dropped > 0 {
            eprintln!(
                "sqlora: N={n}: {} of the recorded pairs are longer than {} tokens and were left \
                 out of training",
                dropped,
                recipe::AUTO_MAX_LEN
            );
        }
        let adapter = lora
            .to_adapter(&format!("corrections-{n}"))
            .map_err(|e| failed(&e))?;
        engine.set_adapter(Some(adapter)).map_err(|e| failed(&e))?;
        eprintln!(
            "sqlora: N={n}: adapter trained on {} examples ({} recorded pairs ×{}, {} left out \
             for length) in {} steps, {:.0} s, loss {:.3}",
            fitted.examples,
            own.len(),
            mix.weight,
            dropped,
            fitted.steps,
            fitted.seconds,
            fitted.final_loss
        );
        Ok(Some(
            serde_json::json!({ "own_pairs": own.len(), "mix": mix, "fit": fitted }),
        ))
    };
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
        retrieve,
        &mut prepare,
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
            &format!(
                "{title} — {model} — corrections {}",
                match args.mode.as_str() {
                    "train" => "trained on",
                    "both" => "as examples and trained on",
                    _ => "as examples",
                }
            ),
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
