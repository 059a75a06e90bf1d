//! `sqlora train`: LoRA adapters trained on question/SQL pairs over a frozen quantized base
//! (QLoRA), in-process with candle.
//!
//! Examples are built with the prompt inference uses ([`prompt::build_prompt`]) and the answer
//! the model should give after it; the loss covers the answer tokens only. Batches group
//! examples of similar length (padded at the end), AdamW updates the LoRA matrices only, with
//! warm-up then a cosine, linear or constant schedule, gradient clipping and accumulation; the
//! seed fixes the initialisation, the order and the dropout masks. The output layer's loss is
//! computed in chunks whose logits are freed one by one (their gradient is carried back to the
//! hidden states, then through the model in one backward pass).

mod loss;
pub mod plot;
pub mod recipe;
pub mod rl;

pub use loss::{
    batch_loss, batch_loss_of, eval_loss, layer_path, BatchLoss, Grads, Objective, Pass,
};

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::llm::lora::adapter::{Adapter, AdapterConfig, Target};
use crate::llm::lora::{
    dropout::{mix_seed, Dropout},
    params::LoraParams,
};
use crate::llm::prompt::{self, ChatTemplate};
use crate::llm::{LlmError, Model, TextTokenizer};
use crate::sql::Dialect;

/// One training sequence: prompt and answer tokens, the loss starting at `answer_start`.
#[derive(Debug, Clone)]
pub struct Example {
    pub ids: Vec<u32>,
    pub answer_start: usize,
}

/// A line of a training file (the shape of `../shared/data` and of `sqlora feedback export`).
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub question: String,
    pub context: String,
    pub answer: String,
    /// `sqlite` (the default), `postgres` or `mysql`; checked when the file is read.
    #[serde(default)]
    pub dialect: Option<Dialect>,
}

/// Reads JSONL pairs; a line that is not a pair is an error naming the file and line.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, LlmError> {
    let bad = |why: String| LlmError::TrainingData(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| bad(pair_error(n + 1, &e))))
        .collect()
}

/// `line N: what is wrong`, in words about pairs rather than serde's types.
fn pair_error(line: usize, e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde ends its message with " at line L column C": the line is the file's line here.
    let what = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    let what = what.replace(
        "struct Pair",
        "a {\"question\", \"context\", \"answer\"} object",
    );
    if e.is_syntax() || e.is_eof() {
        format!("line {line}: not JSON ({what} at column {})", e.column())
    } else {
        format!("line {line}: {what}")
    }
}

/// Tokenizes `pair` as inference would prompt it, followed by the answer and the end of turn.
/// `None` when it is longer than `max_len` tokens.
pub fn example(
    pair: &Pair,
    tokenizer: &TextTokenizer,
    template: ChatTemplate,
    max_len: usize,
) -> Result<Option<Example>, LlmError> {
    let p = prompt::build_prompt(
        template,
        &pair.question,
        &pair.context,
        pair.dialect.unwrap_or(Dialect::Sqlite),
        &[],
    );
    answer_example(&p.text(), &pair.answer, tokenizer, template, max_len)
}

/// Tokenizes a whole prompt (as built for inference) followed by `answer`'s SQL and the end of
/// turn. `None` when it is longer than `max_len` tokens.
pub fn answer_example(
    prompt: &str,
    answer: &str,
    tokenizer: &TextTokenizer,
    template: ChatTemplate,
    max_len: usize,
) -> Result<Option<Example>, LlmError> {
    let mut ids = tokenizer.encode(prompt)?;
    let answer_start = ids.len();
    let target = format!(
        "{}\n```{}",
        answer.trim().trim_end_matches(';'),
        template.end_of_answer()
    );
    ids.extend(tokenizer.encode(&target)?);
    Ok((ids.len() <= max_len).then_some(Example { ids, answer_start }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

/// The dtype training computes in. The LoRA master weights, the optimizer state, the loss and
/// the attention normalisation stay f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    F32,
    Bf16,
}

impl Compute {
    pub fn dtype(self) -> DType {
        match self {
            Compute::F32 => DType::F32,
            Compute::Bf16 => DType::BF16,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub targets: Vec<Target>,
    pub lr: f64,
    pub weight_decay: f64,
    pub steps: usize,
    pub batch: usize,
    pub grad_accum: usize,
    pub warmup: usize,
    pub schedule: Schedule,
    pub clip: f64,
    pub seed: u64,
    /// Rows of the output layer computed at once.
    pub loss_chunk: usize,
    /// Keep only each layer's input going forward and run the layer again going back.
    pub recompute: bool,
    /// Activations and products in bf16 (GPU) or f32.
    pub compute: Compute,
}

impl Options {
    /// The learning rate at `step` (0-based) of `self.steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let done = (step - self.warmup) as f64 / span;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => self.lr * (1.0 - done).max(0.0),
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Answer tokens the loss covered in this step, and all non-padding tokens.
    pub target_tokens: usize,
    pub tokens: usize,
    /// Non-padding tokens per second in this step, and its wall time.
    pub tokens_per_sec: f64,
    pub step_secs: f64,
    pub eval_loss: Option<f64>,
}

/// Batches of similar length: examples sorted by length, cut into batches, batches shuffled.
pub fn batches(examples: &[Example], batch: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(rng);
    order.sort_by_key(|&i| examples[i].ids.len());
    let mut out: Vec<Vec<usize>> = order.chunks(batch.max(1)).map(|c| c.to_vec()).collect();
    out.shuffle(rng);
    out
}

/// AdamW (decoupled weight decay, as candle's and PyTorch's), with its moments kept where a
/// checkpoint can save them.
pub struct AdamW {
    pub lr: f64,
    pub weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Steps taken.
    t: usize,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[Var], lr: f64, weight_decay: f64) -> candle_core::Result<Self> {
        let zeros = || -> candle_core::Result<Vec<Tensor>> {
            vars.iter().map(|v| v.as_tensor().zeros_like()).collect()
        };
        Ok(Self {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: zeros()?,
            v: zeros()?,
        })
    }

    pub fn step(&mut self, vars: &[Var], grads: &Grads) -> candle_core::Result<()> {
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            #[cfg(feature = "cuda")]
            if var.device().is_cuda() {
                // One kernel, in place, where the ops below are a dozen launches per matrix.
                let f = |x: f64| x as f32;
                crate::llm::cuda::train_ops::adamw(
                    var,
                    g,
                    &self.m[i],
                    &self.v[i],
                    f(self.lr),
                    (
                        f(self.beta1),
                        f(self.beta2),
                        f(self.eps),
                        f(self.weight_decay),
                    ),
                    (f(c1), f(c2)),
                )?;
                continue;
            }
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let theta = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            var.set(&(theta - (update * self.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// A run in progress: the adapter, the optimizer and where in the schedule it is. A step's
/// batches and dropout masks follow from the seed and the step alone, so a run resumed from a
/// checkpoint continues exactly as it would have.
pub struct Trainer<'m> {
    model: &'m Model,
    pub lora: LoraParams,
    opt: AdamW,
    pub opts: Options,
    /// Optimizer steps done.
    pub step: usize,
    /// Non-padding tokens trained on, and seconds spent, over the whole run (resumes included).
    pub tokens_seen: usize,
    pub seconds: f64,
    epoch: Option<(usize, Vec<Vec<usize>>)>,
}

/// The run state a checkpoint keeps beside the adapter and the optimizer's moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: usize,
    pub tokens_seen: usize,
    pub seconds: f64,
    /// Identifies the run: the options and the data it trains on.
    pub run: String,
}

pub const CHECKPOINT_STATE: &str = "state.json";
const CHECKPOINT_OPTIMIZER: &str = "optimizer.safetensors";

impl<'m> Trainer<'m> {
    /// A fresh adapter (PEFT's initialisation, from the seed).
    pub fn new(model: &'m Model, opts: &Options) -> Result<Self, LlmError> {
        Self::from_start(model, opts, None)
    }

    /// A new run from `start`'s weights when given (its rank, α and projections; a fresh
    /// optimizer: how a team's corrections are trained on top of the adapter it answers with),
    /// else from a fresh adapter.
    pub fn from_start(
        model: &'m Model,
        opts: &Options,
        start: Option<&Adapter>,
    ) -> Result<Self, LlmError> {
        let lora = match start {
            Some(a) => {
                let mut lora = LoraParams::from_adapter(a, model.device())?;
                lora.config.lora_dropout = opts.dropout as f64;
                lora
            }
            None => {
                let mut rng = StdRng::seed_from_u64(opts.seed);
                let mut config = AdapterConfig::new(opts.rank, opts.alpha, &opts.targets);
                config.lora_dropout = opts.dropout as f64;
                LoraParams::init(model, config, &opts.targets, &mut rng)?
            }
        };
        let opt = AdamW::new(&lora.vars(), opts.lr, opts.weight_decay)?;
        Ok(Self {
            model,
            lora,
            opt,
            opts: opts.clone(),
            step: 0,
            tokens_seen: 0,
            seconds: 0.0,
            epoch: None,
        })
    }

    /// Continues the run saved in `dir` by [`Trainer::save_checkpoint`]; `run` must be the
    /// identity it was saved with (same options and data).
    pub fn resume(
        model: &'m Model,
        opts: &Options,
        dir: &Path,
        run: &str,
    ) -> Result<Self, LlmError> {
        let io =
            |e: std::io::Error| LlmError::Adapter(format!("checkpoint {}: {e}", dir.display()));
        let state: CheckpointState =
            serde_json::from_str(&std::fs::read_to_string(dir.join(CHECKPOINT_STATE)).map_err(io)?)
                .map_err(|e| LlmError::Generation(format!("{}: {e}", dir.display())))?;
        if state.run != run {
            return Err(LlmError::Generation(format!(
                "the checkpoint in {} is of a run with other options or data; start afresh \
                 (without --resume) or train with what it was started with",
                dir.display()
            )));
        }
        let adapter = Adapter::load(dir)?;
        let lora = LoraParams::from_adapter(&adapter, model.device())?;
        let mut opt = AdamW::new(&lora.vars(), opts.lr, opts.weight_decay)?;
        let moments =
            candle_core::safetensors::load(dir.join(CHECKPOINT_OPTIMIZER), model.device())?;
        for (i, _) in lora.vars().iter().enumerate() {
            let get = |k: String| {
                moments
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| LlmError::Generation(format!("{}: no {k}", dir.display())))
            };
            opt.m[i] = get(format!("m.{i}"))?;
            opt.v[i] = get(format!("v.{i}"))?;
        }
        opt.t = state.step;
        Ok(Self {
            model,
            lora,
            opt,
            opts: opts.clone(),
            step: state.step,
            tokens_seen: state.tokens_seen,
            seconds: state.seconds,
            epoch: None,
        })
    }

    /// Saves the adapter (PEFT format), the optimizer's moments and the position in the run into
    /// `dir`, replacing what was there only once all of it is written.
    pub fn save_checkpoint(&self, dir: &Path, run: &str) -> Result<(), LlmError> {
        let io =
            |e: std::io::Error| LlmError::Adapter(format!("checkpoint {}: {e}", dir.display()));
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io)?;
        let staging = tempfile::tempdir_in(parent).map_err(io)?;
        self.lora.to_adapter("checkpoint")?.save(staging.path())?;
        let mut moments = HashMap::new();
        for i in 0..self.opt.m.len() {
            moments.insert(format!("m.{i}"), self.opt.m[i].clone());
            moments.insert(format!("v.{i}"), self.opt.v[i].clone());
        }
        candle_core::safetensors::save(&moments, staging.path().join(CHECKPOINT_OPTIMIZER))?;
        let state = CheckpointState {
            step: self.step,
            tokens_seen: self.tokens_seen,
            seconds: self.seconds,
            run: run.to_string(),
        };
        std::fs::write(
            staging.path().join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(&state).expect("plain data"),
        )
        .map_err(io)?;
        let old = parent.join(format!(
            ".{}.old",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint")
        ));
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(io)?;
        }
        std::fs::rename(staging.keep(), dir).map_err(io)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    pub fn done(&self) -> bool {
        self.step >= self.opts.steps
    }

    /// The `k`-th micro-batch of the run: epochs of length-grouped batches, each epoch's order
    /// drawn from the seed and the epoch number.
    fn micro_batch(&mut self, train: &[Example], k: usize) -> Vec<usize> {
        let per_epoch = train.len().div_ceil(self.opts.batch.max(1)).max(1);
        let epoch = k / per_epoch;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = StdRng::seed_from_u64(mix_seed(self.opts.seed, 1 << 32 | epoch as u64));
            self.epoch = Some((epoch, batches(train, self.opts.batch, &mut rng)));
        }
        let (_, order) = self.epoch.as_ref().expect("just set");
        order[k % per_epoch].clone()
    }

    /// One optimizer step over `grad_accum` micro-batches of `train`.
    pub fn step(&mut self, train: &[Example]) -> Result<StepReport, LlmError> {
        if train.is_empty() {
            return Err(LlmError::Generation("no training examples".into()));
        }
        let t0 = Instant::now();
        let opts = self.opts.clone();
        let vars = self.lora.vars();
        let accum = opts.grad_accum.max(1);
        let mut acc = Grads::default();
        let (mut loss_sum, mut targets, mut tokens) = (0f64, 0usize, 0usize);
        for j in 0..accum {
            let k = self.step * accum + j;
            let idx = self.micro_batch(train, k);
            let batch: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
            let mut drop = Dropout::new(opts.dropout, mix_seed(opts.seed, k as u64));
            let pass = Pass {
                chunk: opts.loss_chunk,
                grads: true,
                recompute: opts.recompute,
                dtype: opts.compute.dtype(),
                hand: true,
            };
            let r = batch_loss(self.model, &self.lora, &batch, &mut drop, pass)?;
            let grads = r.grads.expect("asked for gradients");
            for v in &vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    acc.add(v.as_tensor(), g)?;
                }
            }
            loss_sum += r.loss;
            targets += r.targets;
            tokens += r.tokens;
        }
        // Average over micro-batches, then clip the global norm.
        let k = accum as f64;
        let (norm, lr) = self.update(acc, k)?;
        self.tokens_seen += tokens;
        let secs = t0.elapsed().as_secs_f64();
        self.seconds += secs;
        Ok(StepReport {
            step: self.step,
            steps: opts.steps,
            loss: loss_sum / k,
            lr,
            grad_norm: norm,
            target_tokens: targets,
            tokens,
            tokens_per_sec: tokens as f64 / secs,
            step_secs: secs,
            eval_loss: None,
        })
    }

    /// One optimizer step with the gradients `acc` divided by `k`: their global norm clipped to
    /// `opts.clip`, AdamW at the schedule's learning rate. Returns the norm before clipping and
    /// the learning rate.
    fn update(&mut self, mut acc: Grads, k: f64) -> Result<(f64, f64), LlmError> {
        let vars = self.lora.vars();
        let mut sq = 0f64;
        for v in &vars {
            if let Some(g) = acc.0.remove(&v.as_tensor().id()) {
                let g = (g / k)?;
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                acc.0.insert(v.as_tensor().id(), g);
            }
        }
        let norm = sq.sqrt();
        if self.opts.clip > 0.0 && norm > self.opts.clip {
            let f = self.opts.clip / norm;
            for g in acc.0.values_mut() {
                *g = (&*g * f)?;
            }
        }
        let lr = self.opts.lr_at(self.step);
        self.opt.lr = lr;
        self.opt.step(&vars, &acc)?;
        self.step += 1;
        Ok((norm, lr))
    }

    /// Mean answer-token loss of the adapter so far over `eval`.
    pub fn eval_loss(&self, eval: &[Example]) -> Result<f64, LlmError> {
        eval_loss(
            self.model,
            &self.lora,
            eval,
            self.opts.batch,
            self.opts.loss_chunk,
            self.opts.compute,
        )
    }
}

/// Trains a fresh adapter on `train` for `opts.steps` optimizer steps, calling `on_step` after
/// each (with the eval loss every `eval_every` steps and at the end, when `eval` is not
/// empty). Stops early, keeping what was learnt, when `cancel` is set.
pub fn train(
    model: &Model,
    train: &[Example],
    eval: &[Example],
    opts: &Options,
    eval_every: usize,
    cancel: &Cancel,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<LoraParams, LlmError> {
    let mut t = Trainer::new(model, opts)?;
    run(&mut t, train, eval, eval_every, cancel, &mut |_, r| {
        on_step(r);
        Ok(())
    })?;
    Ok(t.lora)
}

/// Steps `trainer` to the end of its schedule (or until `cancel`), with the eval loss every
/// `eval_every` steps and at the end; `on_step` sees the trainer after each step.
pub fn run(
    trainer: &mut Trainer,
    train: &[Example],
    eval: &[Example],
    eval_every: usize,
    cancel: &Cancel,
    on_step: &mut dyn FnMut(&Trainer, &StepReport) -> Result<(), LlmError>,
) -> Result<(), LlmError> {
    while !trainer.done() && !cancel.is_set() {
        let mut r = trainer.step(train)?;
        let last = trainer.done();
        if !eval.is_empty() && (last || (eval_every > 0 && r.step % eval_every == 0)) {
            r.eval_loss = Some(trainer.eval_loss(eval)?);
        }
        on_step(trainer, &r)?;
    }
    Ok(())
}
