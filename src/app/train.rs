//! `sqlora train`: a LoRA adapter trained on question/SQL pairs (feedback, Spider train, JSONL
//! files) and saved into the library, with its run folder (checkpoint, metrics, loss curve);
//! with `--auto`, only once enough new judged answers exist, and then made a database's
//! default unless it is worse than the current one (`adopt_if_not_worse`); such a run weights
//! the team's pairs up and replays Spider train beside them ([`crate::train::recipe`]). The
//! training itself is [`crate::train`]'s; this gathers the pairs, draws the bar, and prints.

use std::io::Write;

use anyhow::{bail, Context, Result};

use super::progress;
use super::session::{adapter_error, adapter_library, load_engine, model_path, open_feedback};
use crate::cancel::Cancel;
use crate::cli::{ModelOpts, TrainArgs};
use crate::{clock, db, eval, feedback, hub, llm, paths, pipeline, sql, train};

/// Runs `sqlora train`.
pub fn command(mut args: TrainArgs) -> Result<()> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    args.model
        .local_only("training")
        .map_err(anyhow::Error::msg)?;
    // The name first: nothing is read, trained or written under a name the library refuses.
    if let Some(out) = &args.out {
        llm::lora::library::new_name(out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    let lib = adapter_library()?;
    if let Some(from) = args.from.as_deref().map(str::trim).filter(|f| *f != "none") {
        llm::lora::library::valid_name(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        if from != llm::lora::bundled::NAME && !lib.names().iter().any(|n| n == from) {
            bail!("--from: no adapter named `{from}` (see `sqlora adapters list`)");
        }
    }
    let db_filter = args.db.as_deref().map(db::identity).transpose()?;
    // A periodic run starts only once enough new judged answers exist, and remembers when it
    // read them (answers judged later wait for the next run).
    let mut auto_read_at = None;
    // The question set for the adoption decision is read now: a bad path fails before training.
    let ex_set = match &args.eval_set {
        Some(set) => Some(ExSlice::load(
            set,
            args.data_dir.as_deref(),
            args.eval_limit,
        )?),
        None => None,
    };
    if args.auto {
        let mut store = open_feedback(&args.feedback)?;
        let fresh = store.fresh_pairs(db_filter.as_deref())?;
        let scope = db_filter.as_deref().unwrap_or("all databases");
        if fresh < args.min_new as i64 {
            println!(
                "sqlora: {fresh} new accepted or corrected answers for {scope} since the last \
                 run; training waits for {} (--min-new)",
                args.min_new
            );
            return Ok(());
        }
        auto_read_at = Some(clock::now_iso());
        if !args.data.iter().any(|d| d == "feedback") {
            args.data.insert(0, "feedback".into());
        }
        if args.out.is_none() {
            args.out = Some(format!(
                "auto-{}",
                clock::now_iso()
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .take(14)
                    .collect::<String>()
            ));
        }
        eprintln!("sqlora: {fresh} new accepted or corrected answers for {scope}: training");
    }
    let out = args.out.clone().context("--out names the new adapter")?;
    if !args.resume
        && lib
            .path(&out)
            .join(llm::lora::adapter::CONFIG_FILE)
            .exists()
    {
        bail!("an adapter named `{out}` exists already (remove it, or pick another --out)");
    }
    let targets = targets(&args.targets)?;
    // The pairs, and a hash of them for the record. Feedback pairs are tagged with their
    // database: the held-out pairs come from them when there are any.
    let mut pairs: Vec<(Option<String>, train::Pair)> = Vec::new();
    let mut sources = Vec::new();
    for d in &args.data {
        if d == "feedback" {
            let mut store = open_feedback(&args.feedback)?;
            let filter = feedback::Filter {
                db: db_filter.clone(),
                ..Default::default()
            };
            let got = store.export(&filter)?;
            sources.push(format!("feedback ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| {
                (
                    Some(p.db),
                    train::Pair {
                        question: p.question,
                        context: p.context,
                        answer: p.answer,
                        dialect: Some(p.dialect),
                    },
                )
            }));
        } else if d == "spider-train" {
            let dir = args.data_dir.clone().unwrap_or_else(eval::default_data_dir);
            let got = spider_train_pairs(&dir, args.limit, None)?;
            sources.push(format!("spider-train ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| (None, p)));
        } else {
            let got = train::read_pairs(std::path::Path::new(d))?;
            sources.push(format!("{d} ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| (None, p)));
        }
    }
    if pairs.is_empty() {
        bail!("no training pairs in {}", args.data.join(", "));
    }
    let data_sha = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (_, p) in &pairs {
            h.update(p.question.as_bytes());
            h.update([0]);
            h.update(p.context.as_bytes());
            h.update([0]);
            h.update(p.answer.as_bytes());
            h.update([1]);
        }
        format!("{:x}", h.finalize())
    };
    // QLoRA: the base weights stay in the GGUF's quantization on every device.
    let path = model_path(&args.model)?;
    let (device, chosen) = hub::device::select(args.model.device)?;
    if device.is_cuda() && !args.exact_f32 {
        // Tensor cores: f32 storage and accumulation, inputs rounded to TF32.
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let engine = load_for_training(&path, device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    pairs.shuffle(&mut rng);
    if let Some(n) = args.limit {
        pairs.truncate(n);
    }
    // A periodic run replays public pairs beside the team's, against forgetting SQL in
    // general (unless the run names spider-train itself).
    if args.auto && args.replay > 0 && !args.data.iter().any(|d| d == "spider-train") {
        let dir = args.data_dir.clone().unwrap_or_else(eval::default_data_dir);
        match spider_train_pairs(&dir, Some(args.replay), Some(args.seed)) {
            Ok(got) => {
                let own: Vec<train::Pair> = Vec::new();
                let drawn = train::recipe::mix(
                    &own,
                    &got,
                    &train::recipe::Mix {
                        weight: 1,
                        replay: args.replay,
                        seed: args.seed,
                    },
                );
                sources.push(format!("spider-train replay ({} pairs)", drawn.len()));
                pairs.extend(drawn.into_iter().map(|p| (None, p)));
            }
            Err(e) => eprintln!("sqlora: no replay of public pairs: {e:#}"),
        }
    }
    let max_len = args.max_len.unwrap_or(if args.auto {
        train::recipe::AUTO_MAX_LEN
    } else {
        512
    });
    let mut tagged = Vec::new();
    let mut too_long = 0;
    let mut own_too_long = 0;
    for (db, p) in &pairs {
        match train::example(p, engine.tokenizer(), engine.template(), max_len)? {
            Some(e) => tagged.push((db.clone(), e)),
            None => {
                too_long += 1;
                own_too_long += usize::from(db.is_some());
            }
        }
    }
    if tagged.is_empty() {
        bail!("every example is longer than --max-len {max_len}");
    }
    if own_too_long > 0 {
        eprintln!(
            "sqlora: {own_too_long} feedback pairs are longer than --max-len {max_len} tokens \
             and are left out"
        );
    }
    // Held out: a share of the feedback pairs when there are any (the team's own questions
    // are what the adapter is for), else of all.
    let from_feedback = tagged.iter().any(|(db, _)| db.is_some());
    let pool = tagged
        .iter()
        .filter(|(db, _)| db.is_some() || !from_feedback)
        .count();
    let n_eval = ((pool as f64 * args.eval_split).round() as usize).min(pool.saturating_sub(1));
    let mut eval_set = Vec::new();
    let mut held_dbs = std::collections::BTreeSet::new();
    let mut examples = Vec::new();
    // A periodic run weights the team's pairs up (`--weight`): a few of them among hundreds of
    // replayed ones would otherwise barely move the adapter.
    let weight = if args.auto { args.weight.max(1) } else { 1 };
    for (db, e) in tagged.into_iter().rev() {
        if eval_set.len() < n_eval && (db.is_some() || !from_feedback) {
            held_dbs.extend(db);
            eval_set.push(e);
        } else {
            let times = if db.is_some() { weight } else { 1 };
            for _ in 1..times {
                examples.push(e.clone());
            }
            examples.push(e);
        }
    }
    examples.reverse();
    eval_set.reverse();
    if let Some(file) = &args.dump_examples {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        );
        for e in &examples {
            writeln!(
                w,
                "{}",
                serde_json::json!({"ids": e.ids, "answer_start": e.answer_start})
            )?;
        }
        w.flush()?;
        println!(
            "{} training examples written to {} ({} held out not written)",
            examples.len(),
            file.display(),
            eval_set.len()
        );
        return Ok(());
    }
    let per_step = args.batch.max(1) * args.grad_accum.max(1);
    let steps = args.steps.unwrap_or_else(|| {
        ((examples.len() as f64 * args.epochs) / per_step as f64).ceil() as usize
    });
    let mut opts = options(&args, targets, engine.model().device().is_cuda());
    opts.steps = steps.max(1);
    eprintln!(
        "sqlora: training `{}` on {} ({} examples, {} held out, {too_long} longer than {} left \
         out) for {} steps of {} examples, model {} on {chosen}, computing in {:?} ({})",
        out,
        sources.join(", "),
        examples.len(),
        eval_set.len(),
        max_len,
        opts.steps,
        per_step,
        engine.info().name,
        opts.compute,
        train::layer_path(engine.model(), &opts)
    );
    // The run's folder: its checkpoint, metrics and loss curve, until the adapter is saved.
    let run_dir = paths::data_dir()?.join("runs").join(&out);
    let checkpoint = run_dir.join("checkpoint");
    // Where the weights start: a library adapter (--from; with --auto the shipped one when it
    // fits), else fresh.
    let start = {
        let base = hub::base_identity(&engine);
        let name = match args.from.as_deref().map(str::trim) {
            Some("none") => None,
            Some(n) => Some(n.to_string()),
            None if args.auto => {
                llm::lora::bundled::fits(&base).then(|| llm::lora::bundled::NAME.to_string())
            }
            None => None,
        };
        match name {
            Some(n) => Some(super::session::library_adapter(&lib, &n, &base)?),
            None => None,
        }
    };
    if let Some(a) = &start {
        take_shape(&mut opts, a);
    }
    let run_id = format!(
        "{data_sha} {} max_len={} eval_split={} limit={:?} auto={} weight={} replay={} model={} \
         from={}",
        serde_json::to_string(&opts)?,
        max_len,
        args.eval_split,
        args.limit,
        args.auto,
        args.weight,
        args.replay,
        engine.info().name,
        start.as_ref().map_or("", |a| a.sha256.as_str())
    );
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut trainer = if args.resume {
        if !checkpoint.join(train::CHECKPOINT_STATE).is_file() {
            bail!(
                "no checkpoint of `{out}` to resume in {}",
                checkpoint.display()
            );
        }
        let t = train::Trainer::resume(engine.model(), &opts, &checkpoint, &run_id)?;
        eprintln!(
            "sqlora: resuming `{out}` at step {} of {}",
            t.step, opts.steps
        );
        t
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
        if let Some(a) = &start {
            eprintln!("sqlora: going on from adapter `{}`", a.label);
        }
        train::Trainer::from_start(engine.model(), &opts, start.as_ref())?
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // On resume the metrics of the steps after the checkpoint are dropped: they are redone.
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) <= trainer.step)
        })
        .map(str::to_string)
        .collect();
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("creating {}", metrics_path.display()))?;
    for l in &kept {
        writeln!(metrics, "{l}")?;
    }
    let cancel = progress::interruptible();
    let bar = progress::bar(
        opts.steps as u64,
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
    );
    bar.set_position(trainer.step as u64);
    bar.reset_eta();
    let start_step = trainer.step;
    let mut last: Option<train::StepReport> = None;
    let mut last_eval = None;
    let every = args.checkpoint_every;
    train::run(
        &mut trainer,
        &examples,
        &eval_set,
        args.eval_every,
        &cancel,
        &mut |t, r| {
            if let Some(e) = r.eval_loss {
                last_eval = Some(e);
            }
            bar.set_message(format!(
                "loss {:.3}{} · {:.0} tok/s",
                r.loss,
                last_eval.map_or(String::new(), |e| format!(" · eval {e:.3}")),
                t.tokens_seen as f64 / t.seconds.max(1e-9)
            ));
            bar.inc(1);
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(metrics, "{line}");
            }
            last = Some(r.clone());
            if every > 0 && r.step % every == 0 && !t.done() {
                t.save_checkpoint(&checkpoint, &run_id)?;
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    drop(metrics);
    let secs = trainer.seconds;
    let Some(last) = last else {
        if trainer.step > start_step || start_step == 0 {
            bail!("interrupted before the first step; nothing saved");
        }
        bail!("the checkpoint is at the last step already");
    };
    let _ = train::plot::loss_curve(&metrics_path, &run_dir.join("loss.png"), &out)
        .map_err(|e| eprintln!("sqlora: no loss curve: {e}"));
    if cancel.is_set() {
        trainer.save_checkpoint(&checkpoint, &run_id)?;
        eprintln!(
            "sqlora: interrupted after {} of {} steps; checkpoint saved (continue with --resume), \
             and the adapter so far is saved too",
            last.step, opts.steps
        );
    }
    let lora = &trainer.lora;
    let tokens_per_sec = trainer.tokens_seen as f64 / secs.max(1e-9);
    let adapter = lora.to_adapter(&out)?;
    let meta = llm::lora::library::Meta {
        base: hub::base_identity(&engine),
        created_at: clock::now_iso(),
        source: format!(
            "sqlora train on {}{}",
            sources.join(", "),
            start
                .as_ref()
                .map_or_else(String::new, |a| format!(", from adapter {}", a.label))
        ),
        training: Some(serde_json::json!({
            "from": start.as_ref().map(|a| serde_json::json!({"name": a.label, "sha256": a.sha256})),
            "data": sources,
            "data_sha256": data_sha,
            "examples": examples.len(),
            "eval_examples": eval_set.len(),
            "left_out_too_long": too_long,
            "options": opts,
            "layers": train::layer_path(engine.model(), &opts),
            "steps_done": last.step,
            "final_loss": last.loss,
            "eval_loss": last_eval,
            "tokens_per_sec": tokens_per_sec,
            "seconds": secs,
            "device": chosen,
        })),
        eval: None,
    };
    if lib
        .path(&out)
        .join(llm::lora::adapter::CONFIG_FILE)
        .exists()
    {
        lib.remove(&out)?;
    }
    let dest = lib.add(&out, &adapter, &meta)?;
    let _ = std::fs::copy(&metrics_path, dest.join("metrics.jsonl"));
    let _ = std::fs::copy(run_dir.join("loss.png"), dest.join("loss.png"));
    if !cancel.is_set() {
        let _ = std::fs::remove_dir_all(&checkpoint);
    }
    println!(
        "adapter `{}` saved to {} — {} steps in {:.0} s, loss {:.3}{}, {:.0} tokens/s",
        out,
        dest.display(),
        last.step,
        secs,
        last.loss,
        last_eval.map_or(String::new(), |e| format!(", eval loss {e:.3}")),
        tokens_per_sec
    );
    if let Some(read_at) = auto_read_at {
        if cancel.is_set() {
            println!("sqlora: interrupted: the pairs stay new and no default changes");
            return Ok(());
        }
        let used =
            open_feedback(&args.feedback)?.mark_trained(db_filter.as_deref(), &read_at, &out)?;
        println!("sqlora: {used} feedback pairs marked as used by `{out}`");
        adopt_if_not_worse(
            &lib,
            &engine,
            &out,
            &trainer,
            &eval_set,
            &held_dbs,
            last_eval,
            ex_set.map(|s| (s, &args.model)),
        )?;
    }
    Ok(())
}

/// Supervised training's options from the command line (the steps from `--steps`, else 1:
/// the caller sets them from the data).
pub(super) fn options(
    args: &TrainArgs,
    targets: Vec<llm::lora::adapter::Target>,
    cuda: bool,
) -> train::Options {
    train::Options {
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        targets,
        lr: args.lr.unwrap_or(2e-4),
        weight_decay: args.weight_decay,
        steps: args.steps.unwrap_or(1).max(1),
        batch: args.batch.max(1),
        grad_accum: args.grad_accum.max(1),
        warmup: args.warmup,
        schedule: args.schedule,
        clip: args.clip,
        seed: args.seed,
        loss_chunk: 256,
        recompute: !args.keep_activations,
        compute: args.compute.unwrap_or(if cuda {
            train::Compute::Bf16
        } else {
            train::Compute::F32
        }),
    }
}

/// The projections `--targets` names.
pub(super) fn targets(names: &[String]) -> Result<Vec<llm::lora::adapter::Target>> {
    names
        .iter()
        .map(|t| {
            llm::lora::adapter::Target::from_name(t)
                .with_context(|| format!("unknown target `{t}` (q, k, v, o, gate, up, down)"))
        })
        .collect()
}

/// A run that goes on from adapter `a` keeps its shape (rank, alpha, projections), recorded as
/// such in the options.
pub(super) fn take_shape(opts: &mut train::Options, a: &llm::lora::adapter::Adapter) {
    opts.rank = a.config.r;
    opts.alpha = a.config.lora_alpha;
    let mut targets: Vec<_> = a.weights.keys().map(|(_, t)| *t).collect();
    targets.sort();
    targets.dedup();
    opts.targets = targets;
}

/// The model as training needs it: the base weights in the GGUF's own quantization (QLoRA).
pub(super) fn load_for_training(
    path: &std::path::Path,
    device: candle_core::Device,
) -> Result<llm::Engine> {
    llm::Engine::load(
        path,
        &llm::LoadOptions {
            plan: llm::WeightPlan {
                prefill: llm::WeightFormat::Native,
                decode: llm::WeightFormat::Native,
                wide_rows: 1,
            },
            device,
            kv_dir: None,
            weights_dir: None,
        },
    )
    .with_context(|| format!("loading model {}", path.display()))
}

/// After a periodic run: for each database whose feedback was held out, makes the new adapter
/// its default unless the current default (its own choice, else the shipped adapter, else
/// the base model) has a lower loss on the held-out pairs.
#[allow(clippy::too_many_arguments)]
fn adopt_if_not_worse(
    lib: &llm::lora::library::Library,
    engine: &llm::Engine,
    out: &str,
    trainer: &train::Trainer,
    eval_set: &[train::Example],
    dbs: &std::collections::BTreeSet<String>,
    new_loss: Option<f64>,
    ex: Option<(ExSlice, &ModelOpts)>,
) -> Result<()> {
    let Some(new_loss) = new_loss.filter(|_| !eval_set.is_empty()) else {
        println!(
            "sqlora: no held-out feedback pairs to compare on (too few pairs for --eval-split); \
             `{out}` is kept but not made a default"
        );
        return Ok(());
    };
    // Execution accuracy on the slice, by adapter (None: the base model), measured once each
    // with an inference engine.
    let mut ex_of: std::collections::HashMap<Option<String>, (usize, usize)> = Default::default();
    let mut infer = match &ex {
        Some((_, model)) => Some(load_engine(model)?),
        None => None,
    };
    let mut measure = |name: Option<&str>| -> Result<Option<(usize, usize)>> {
        let (Some((slice, _)), Some(engine)) = (&ex, infer.take()) else {
            return Ok(None);
        };
        if let Some(r) = ex_of.get(&name.map(str::to_string)) {
            infer = Some(engine);
            return Ok(Some(*r));
        }
        let (r, engine) = slice.run(engine, lib, name)?;
        ex_of.insert(name.map(str::to_string), r);
        infer = Some(engine);
        Ok(Some(r))
    };
    let new_ex = measure(Some(out))?;
    if let (Some((c, t)), Some((slice, _))) = (new_ex, &ex) {
        println!(
            "sqlora: `{out}` on {}: EX {:.1}% ({c}/{t})",
            slice.label,
            100.0 * c as f64 / t.max(1) as f64
        );
        let _ = lib.record_eval(
            out,
            &slice.label,
            serde_json::json!({"at": clock::now_iso(), "questions": t, "correct": c,
                "ex": 100.0 * c as f64 / t.max(1) as f64}),
        );
    }
    let base = hub::base_identity(engine);
    let mut losses: std::collections::HashMap<Option<String>, f64> = Default::default();
    for db in dbs {
        // What the database answers with today: its own choice, else the shipped adapter.
        let current = super::session::default_adapter(lib, Some(db), &base);
        if current.as_deref() == Some(llm::lora::bundled::NAME) {
            let _ = llm::lora::bundled::install_and_say(lib);
        }
        let loss = match losses.get(&current) {
            Some(l) => *l,
            None => {
                let lora = match &current {
                    Some(name) => match lib.load_for(name, &base) {
                        Ok(a) => llm::lora::params::LoraParams::from_adapter(
                            &a,
                            engine.model().device(),
                        )?,
                        Err(e) => {
                            eprintln!("sqlora: the current default `{name}` cannot be loaded ({e}); comparing with the base model");
                            llm::lora::params::LoraParams::none()
                        }
                    },
                    None => llm::lora::params::LoraParams::none(),
                };
                let l = train::eval_loss(
                    engine.model(),
                    &lora,
                    eval_set,
                    trainer.opts.batch,
                    trainer.opts.loss_chunk,
                    trainer.opts.compute,
                )?;
                losses.insert(current.clone(), l);
                l
            }
        };
        let was = current
            .as_deref()
            .map_or("the base model".to_string(), |n| format!("`{n}`"));
        let ex_pair = match (new_ex, measure(current.as_deref())?) {
            (Some(n), Some(c)) => Some((n, c)),
            _ => None,
        };
        let ex_note = ex_pair.map_or(String::new(), |((nc, nt), (cc, ct))| {
            format!("; EX {nc}/{nt} against {cc}/{ct}")
        });
        let ex_ok = ex_pair.is_none_or(|((nc, nt), (cc, ct))| nc * ct >= cc * nt);
        if new_loss <= loss && ex_ok {
            lib.set_default(db, Some(out))?;
            println!(
                "sqlora: `{out}` is now the default for {db}: held-out loss {new_loss:.4}, \
                 {was} {loss:.4}{ex_note}"
            );
        } else if !ex_ok {
            println!(
                "sqlora: {was} stays the default for {db}: `{out}` answers fewer questions \
                 correctly{ex_note} (held-out loss {new_loss:.4} against {loss:.4}; `{out}` is \
                 kept in the library)"
            );
        } else {
            println!(
                "sqlora: {was} stays the default for {db}: its held-out loss {loss:.4} is lower \
                 than `{out}`'s {new_loss:.4}{ex_note} (`{out}` is kept in the library)"
            );
        }
    }
    Ok(())
}

/// A question set for `train --auto --eval-set`: execution accuracy of an adapter on it.
struct ExSlice {
    label: String,
    items: Vec<eval::Item>,
}

impl ExSlice {
    fn load(set: &str, data_dir: Option<&std::path::Path>, limit: usize) -> Result<Self> {
        let mut items = eval::load_set(set, data_dir)?;
        items.truncate(limit.max(1));
        Ok(Self {
            label: format!("{set}[0..{}]", items.len()),
            items,
        })
    }

    /// Runs the slice with adapter `name` (None: none) applied to `engine`, and hands the
    /// engine back (adapter removed) with (correct, judged).
    fn run(
        &self,
        mut engine: llm::Engine,
        lib: &llm::lora::library::Library,
        name: Option<&str>,
    ) -> Result<((usize, usize), llm::Engine)> {
        let adapter = match name {
            Some(n) => Some(
                lib.load_for(n, &hub::base_identity(&engine))
                    .map_err(adapter_error)?,
            ),
            None => None,
        };
        engine.set_adapter(adapter)?;
        let batch = eval::default_batch(&engine);
        let mut evaluator = eval::Evaluator::new(Box::new(engine), db::Limits::default(), 2);
        let cancel = Cancel::new();
        let (records, _) = eval::run_all(&mut evaluator, &self.items, batch, &cancel, |_, _| {})?;
        let mut engine = evaluator
            .into_engine()
            .and_then(|b| b.into_local())
            .context("the model was lost")?;
        engine.set_adapter(None)?;
        let s = eval::report::Summary::of(&records);
        Ok(((s.overall.correct, s.overall.total), engine))
    }
}

/// Spider's training questions with the context sqlora itself renders for each database (the
/// same introspection and rendering, and table selection for a schema over the budget, as at
/// inference). Questions whose database is missing are skipped.
pub(super) fn spider_train_pairs(
    dir: &std::path::Path,
    limit: Option<usize>,
    shuffle: Option<u64>,
) -> Result<Vec<train::Pair>> {
    let file = dir.join("spider/train_spider_min.json");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read Spider train at {} (pass --data-dir, the directory holding spider/)",
            file.display()
        )
    })?;
    let mut rows: Vec<serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not Spider JSON", file.display()))?;
    // The file groups questions by database: a draw of a few hundred must be shuffled first.
    if let Some(seed) = shuffle {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        rows.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    let mut open: std::collections::HashMap<String, Option<pipeline::Pipeline>> =
        Default::default();
    let cancel = Cancel::new();
    let mut pairs = Vec::new();
    for r in rows {
        let (Some(q), Some(sql), Some(db)) = (
            r["question"].as_str(),
            r["query"].as_str(),
            r["db_id"].as_str(),
        ) else {
            continue;
        };
        let p = open.entry(db.to_string()).or_insert_with(|| {
            let path = dir.join(format!("spider/database/{db}/{db}.sqlite"));
            if !path.is_file() {
                return None;
            }
            db::open(&path.to_string_lossy())
                .ok()
                .and_then(|d| pipeline::Pipeline::new(d, None).ok())
        });
        let Some(p) = p.as_mut() else { continue };
        let context = p
            .context_for(q, &cancel)
            .map_err(|e| anyhow::anyhow!("{db}: {e}"))?;
        pairs.push(train::Pair {
            question: q.to_string(),
            context,
            answer: sql.split_whitespace().collect::<Vec<_>>().join(" "),
            dialect: Some(sql::Dialect::Sqlite),
        });
        if limit.is_some_and(|n| pairs.len() >= n * 4) {
            break;
        }
    }
    Ok(pairs)
}
