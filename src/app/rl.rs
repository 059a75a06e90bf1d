//! `sqlora train --rl`: reinforcement learning on execution results (GRPO).
//!
//! Each step takes `--questions` questions of one database (Spider train, or JSONL question
//! sets as `eval` reads them), samples `--group` answers to each with the adapter as it is
//! (the inference model: prompt, schema mask and sampling exactly as `ask` samples its
//! candidates), runs and judges each against the gold result ([`eval::Evaluator::sample_batch`]),
//! and trains the adapter on the sampled answers weighted by how much better than their
//! group they did ([`train::rl`]), on a second copy of the model loaded as training needs it.
//! The inference model then answers with the new weights. This file gathers the questions,
//! draws the bar, writes the metrics and saves the adapter; the arithmetic is
//! [`train::rl`]'s, the judging [`eval::sample`]'s.

use std::io::Write;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::progress;
use super::session::{adapter_library, load_engine, model_path};
use crate::cli::TrainArgs;
use crate::{clock, eval, hub, llm, paths, train};

/// Learning rate of `--rl` when `--lr` is not given: an order of magnitude below supervised
/// training's, as sampled answers are noisy targets.
pub const RL_LR: f64 = 2e-5;
/// Steps of `--rl` when `--steps` is not given.
pub const RL_STEPS: usize = 100;
/// The longest example (prompt and answer) trained on.
const RL_MAX_LEN: usize = 2048;

/// One step's line in `metrics.jsonl`.
#[derive(serde::Serialize)]
struct StepLine {
    step: usize,
    steps: usize,
    questions: usize,
    /// Questions whose answers' rewards differ (the others teach nothing).
    with_signal: usize,
    answers: usize,
    reward: f64,
    /// Shares of the sampled answers that were right and that failed to run.
    correct: f64,
    failed: f64,
    #[serde(flatten)]
    update: Option<train::rl::Reinforced>,
    sample_secs: f64,
}

/// Runs `sqlora train --rl`.
pub fn command(args: TrainArgs) -> Result<()> {
    args.model
        .local_only("training")
        .map_err(anyhow::Error::msg)?;
    if args.resume || args.auto || args.dump_examples.is_some() {
        bail!("--rl cannot be combined with --resume, --auto or --dump-examples");
    }
    let out = args.out.clone().context("--out names the new adapter")?;
    llm::lora::library::new_name(&out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    let lib = adapter_library()?;
    if lib
        .path(&out)
        .join(llm::lora::adapter::CONFIG_FILE)
        .exists()
    {
        bail!("an adapter named `{out}` exists already (remove it, or pick another --out)");
    }
    let targets = super::train::targets(&args.targets)?;
    // The questions, with their databases and gold SQL.
    let dir = args.data_dir.clone().unwrap_or_else(eval::default_data_dir);
    let mut items = Vec::new();
    let mut sources = Vec::new();
    for d in &args.data {
        let got = match d.as_str() {
            "spider-train" => eval::load_spider_train(&dir)?,
            "feedback" => bail!(
                "--rl learns from questions with gold SQL to judge answers by: give \
                 spider-train or a question set (JSONL of question, db, query)"
            ),
            file => eval::load_jsonl(std::path::Path::new(file))?,
        };
        sources.push(format!("{d} ({} questions)", got.len()));
        items.extend(got);
    }
    if items.is_empty() {
        bail!("no questions in {}", args.data.join(", "));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    items.shuffle(&mut rng);
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    // A step's questions share a database, so that their answers are one batch.
    let mut by_db: Vec<(String, Vec<eval::Item>)> = Vec::new();
    for it in items {
        match by_db.iter_mut().find(|(db, _)| *db == it.db) {
            Some((_, v)) => v.push(it),
            None => by_db.push((it.db.clone(), vec![it])),
        }
    }
    let mut draws: Vec<Vec<eval::Item>> = by_db
        .into_iter()
        .flat_map(|(_, v)| {
            v.chunks(args.questions.max(1))
                .map(<[eval::Item]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    draws.shuffle(&mut rng);

    let path = model_path(&args.model)?;
    let (device, chosen) = hub::device::select(args.model.device)?;
    if device.is_cuda() && !args.exact_f32 {
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let tengine = super::train::load_for_training(&path, device)?;
    let base = hub::base_identity(&tengine);
    let start = match args.from.as_deref().map(str::trim) {
        Some("none") => None,
        Some(n) => Some(super::session::library_adapter(&lib, n, &base)?),
        None if llm::lora::bundled::fits(&base) => Some(super::session::library_adapter(
            &lib,
            llm::lora::bundled::NAME,
            &base,
        )?),
        None => None,
    };
    let mut opts = train::Options {
        // The answers were sampled without dropout; the update is of those same weights.
        dropout: 0.0,
        lr: args.lr.unwrap_or(RL_LR),
        steps: args.steps.unwrap_or(RL_STEPS),
        grad_accum: 1,
        ..super::train::options(&args, targets, tengine.model().device().is_cuda())
    };
    if let Some(a) = &start {
        super::train::take_shape(&mut opts, a);
    }
    let mut trainer = train::Trainer::from_start(tengine.model(), &opts, start.as_ref())?;
    // The reference the KL term holds the adapter to: where it starts.
    let reference = llm::lora::params::LoraParams::from_adapter(
        &trainer.lora.to_adapter("reference")?,
        tengine.model().device(),
    )?;
    let beta = args.kl as f32;

    // The model that samples: as `ask` loads it, answering with the adapter being trained.
    let mut engine = load_engine(&args.model)?;
    engine.set_adapter(Some(trainer.lora.to_adapter(&out)?))?;
    let limits = crate::db::Limits {
        max_rows: 1000,
        timeout: std::time::Duration::from_secs(10),
    };
    let mut evaluator = eval::Evaluator::new(Box::new(engine), limits, 2);
    evaluator.levers.temperature = args.temperature as f32;
    evaluator.examples = 0;

    eprintln!(
        "sqlora: reinforcing `{out}` from {} on {} for {} steps of {} questions × {} answers \
         (T {}, KL β {}, lr {}), model {} on {chosen} ({})",
        start.as_ref().map_or_else(
            || "a fresh adapter".to_string(),
            |a| format!("`{}`", a.label)
        ),
        sources.join(", "),
        opts.steps,
        args.questions,
        args.group,
        args.temperature,
        args.kl,
        opts.lr,
        tengine.info().name,
        train::layer_path(tengine.model(), &opts)
    );
    let run_dir = paths::data_dir()?.join("runs").join(&out);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("creating {}", metrics_path.display()))?;
    let cancel = progress::interruptible();
    let bar = progress::bar(
        opts.steps as u64,
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
    );
    let (tok, template) = (tengine.tokenizer().clone(), tengine.template());
    let mut lines: Vec<StepLine> = Vec::new();
    let mut draw = 0usize;
    // Draws without any signal do not count as steps; give up after a whole pass of them.
    let mut barren = 0usize;
    let t_run = std::time::Instant::now();
    while trainer.step < opts.steps && !cancel.is_set() {
        let items = &draws[draw % draws.len()];
        draw += 1;
        evaluator.levers.seed = llm::lora::dropout::mix_seed(args.seed, draw as u64);
        let t0 = std::time::Instant::now();
        let judged = match evaluator.sample_batch(items, args.group, &cancel) {
            Ok(j) => j,
            Err(eval::EvalError::Cancelled) => break,
            Err(e) => return Err(e.into()),
        };
        let sample_secs = t0.elapsed().as_secs_f64();
        let (mut examples, mut adv) = (Vec::new(), Vec::new());
        let (mut n, mut sum, mut right, mut failed, mut with_signal) = (0, 0f64, 0, 0, 0);
        for q in &judged {
            let mut rewards = Vec::with_capacity(q.answers.len());
            for a in &q.answers {
                let r = a.judged.reward();
                rewards.push(r);
                sum += r as f64;
                right += usize::from(a.judged == eval::sample::Judged::Correct);
                failed += usize::from(a.judged == eval::sample::Judged::Failed);
            }
            n += rewards.len();
            let Some(a) = train::rl::advantages(&rewards) else {
                continue;
            };
            with_signal += 1;
            for (ans, a) in q.answers.iter().zip(a) {
                let sql = ans.written.as_deref().unwrap_or("");
                if let Some(e) = train::answer_example(&q.prompt, sql, &tok, template, RL_MAX_LEN)?
                {
                    examples.push(e);
                    adv.push(a);
                }
            }
        }
        let update = if examples.is_empty() {
            barren += 1;
            if barren >= draws.len() {
                bail!("no question's answers differed in reward over a whole pass of the data");
            }
            None
        } else {
            barren = 0;
            let r =
                trainer.reinforce(&examples, &adv, (beta > 0.0).then_some((&reference, beta)))?;
            let engine = evaluator
                .engine_mut()
                .and_then(|b| b.local_mut())
                .context("the sampling model is not in this process")?;
            engine.set_adapter(Some(trainer.lora.to_adapter(&out)?))?;
            Some(r)
        };
        let line = StepLine {
            step: trainer.step,
            steps: opts.steps,
            questions: judged.len(),
            with_signal,
            answers: n,
            reward: sum / n.max(1) as f64,
            correct: right as f64 / n.max(1) as f64,
            failed: failed as f64 / n.max(1) as f64,
            update,
            sample_secs,
        };
        if line.update.is_some() {
            bar.inc(1);
        }
        let recent = &lines[lines.len().saturating_sub(19)..];
        let mean = |f: fn(&StepLine) -> f64| {
            (recent.iter().map(f).sum::<f64>() + f(&line)) / (recent.len() + 1) as f64
        };
        bar.set_message(format!(
            "reward {:.3} · right {:.0}% · kl {:.4} (last 20)",
            mean(|l| l.reward),
            100.0 * mean(|l| l.correct),
            mean(|l| l.update.as_ref().map_or(0.0, |u| u.kl))
        ));
        if let Ok(s) = serde_json::to_string(&line) {
            let _ = writeln!(metrics, "{s}");
        }
        lines.push(line);
    }
    bar.finish_and_clear();
    drop(metrics);
    if trainer.step == 0 {
        bail!("interrupted before the first step; nothing saved");
    }
    let secs = t_run.elapsed().as_secs_f64();
    let sample_secs: f64 = lines.iter().map(|l| l.sample_secs).sum();
    let span = |range: &[StepLine]| {
        let n = range.len().max(1) as f64;
        (
            range.iter().map(|l| l.reward).sum::<f64>() / n,
            range.iter().map(|l| l.correct).sum::<f64>() / n,
        )
    };
    let k = (lines.len() / 5).max(1);
    let (first_reward, first_right) = span(&lines[..k.min(lines.len())]);
    let (last_reward, last_right) = span(&lines[lines.len().saturating_sub(k)..]);
    let adapter = trainer.lora.to_adapter(&out)?;
    let meta = llm::lora::library::Meta {
        base,
        created_at: clock::now_iso(),
        source: format!(
            "sqlora train --rl on {}{}",
            sources.join(", "),
            start
                .as_ref()
                .map_or_else(String::new, |a| format!(", from adapter {}", a.label))
        ),
        training: Some(serde_json::json!({
            "method": "GRPO on execution results",
            "from": start.as_ref().map(|a| serde_json::json!({"name": a.label, "sha256": a.sha256})),
            "data": sources,
            "group": args.group,
            "questions_per_step": args.questions,
            "temperature": args.temperature,
            "kl_beta": args.kl,
            "reward": format!(
                "{} correct; {} + {} x cell F1 ran but wrong; 0 failed",
                train::rl::REWARD_CORRECT, train::rl::REWARD_RAN, train::rl::REWARD_OVERLAP
            ),
            "options": opts,
            "layers": train::layer_path(tengine.model(), &opts),
            "steps_done": trainer.step,
            "reward_first_fifth": first_reward,
            "reward_last_fifth": last_reward,
            "correct_first_fifth": first_right,
            "correct_last_fifth": last_right,
            "seconds": secs,
            "sampling_seconds": sample_secs,
            "training_seconds": trainer.seconds,
            "train_tokens_per_sec": trainer.tokens_seen as f64 / trainer.seconds.max(1e-9),
            "device": chosen,
        })),
        eval: None,
    };
    let dest = lib.add(&out, &adapter, &meta)?;
    let _ = std::fs::copy(&metrics_path, dest.join("metrics.jsonl"));
    println!(
        "adapter `{out}` saved to {} — {} steps in {:.0} s ({:.0} s sampling and judging, {:.0} s \
         training at {:.0} tokens/s); mean reward {:.3} → {:.3}, sampled answers right {:.1}% → \
         {:.1}% (first and last fifth of the steps)",
        dest.display(),
        trainer.step,
        secs,
        sample_secs,
        trainer.seconds,
        trainer.tokens_seen as f64 / trainer.seconds.max(1e-9),
        first_reward,
        last_reward,
        100.0 * first_right,
        100.0 * last_right
    );
    if cancel.is_set() {
        eprintln!("sqlora: interrupted; the adapter so far is saved");
    }
    Ok(())
}
