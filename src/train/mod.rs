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

use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::db::Dialect;
use crate::llm::lora::{AdapterConfig, Target};
use crate::llm::prompt::{self, ChatTemplate};
use crate::llm::trainable::{Dropout, LoraParams};
use crate::llm::{LlmError, Model, TextTokenizer};

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
    #[serde(default)]
    pub dialect: Option<String>,
}

fn dialect_of(name: Option<&str>) -> Dialect {
    match name.map(str::to_ascii_lowercase).as_deref() {
        Some("postgres" | "postgresql") => Dialect::Postgres,
        Some("mysql" | "mariadb") => Dialect::MySql,
        _ => Dialect::Sqlite,
    }
}

/// Reads JSONL pairs; a line that is not a pair is an error naming the file and line.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, LlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| LlmError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| {
                LlmError::Generation(format!(
                    "{}:{}: not a {{question, context, answer}} pair: {e}",
                    path.display(),
                    n + 1
                ))
            })
        })
        .collect()
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
        dialect_of(pair.dialect.as_deref()),
        &[],
    );
    let mut ids = tokenizer.encode(&p.text())?;
    let answer_start = ids.len();
    let target = format!(
        "{}\n```{}",
        pair.answer.trim().trim_end_matches(';'),
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
    pub tokens_per_sec: f64,
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

/// Mean answer-token loss of `batch` and its gradients (`None` for `grads` when not asked).
/// Returns (loss, gradients, answer tokens, all tokens).
pub fn batch_loss(
    model: &Model,
    lora: &LoraParams,
    batch: &[&Example],
    drop: &mut Dropout,
    chunk: usize,
    with_grads: bool,
) -> Result<(f64, Option<GradStore>, usize, usize), LlmError> {
    let dev = model.device().clone();
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let b = batch.len();
    let mut ids = Vec::with_capacity(b * len);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        ids.extend(e.ids.iter().copied());
        ids.extend(std::iter::repeat_n(0u32, len - e.ids.len()));
        // Position t predicts token t + 1; only answer tokens are targets.
        for t in e.answer_start.saturating_sub(1)..e.ids.len() - 1 {
            rows.push((i * len + t) as u32);
            targets.push(e.ids[t + 1]);
        }
    }
    let tokens: usize = batch.iter().map(|e| e.ids.len()).sum();
    let n = rows.len();
    if n == 0 {
        return Err(LlmError::Generation("a batch without answer tokens".into()));
    }
    let ids = Tensor::from_vec(ids, (b, len), &dev)?;
    let hidden = model.hidden_train(&ids, lora, drop)?;
    let h = hidden.dim(2)?;
    let rows_t = Tensor::from_vec(rows, n, &dev)?;
    let sel = hidden.reshape((b * len, h))?.index_select(&rows_t, 0)?;
    let targets = Tensor::from_vec(targets, (n, 1), &dev)?;
    // The loss of each chunk of rows, with its gradient with respect to the hidden states;
    // the chunk's logits are dropped before the next one.
    let detached = Var::from_tensor(&sel.detach())?;
    let mut grad_h: Option<Tensor> = None;
    let mut total = 0f64;
    for start in (0..n).step_by(chunk.max(1)) {
        let m = chunk.min(n - start);
        let hs = detached.as_tensor().narrow(0, start, m)?;
        let logits = model.logits_train(&hs)?;
        let lse = logits.log_sum_exp(1)?;
        let picked = logits
            .gather(&targets.narrow(0, start, m)?, 1)?
            .squeeze(1)?;
        let nll = (lse - picked)?.sum_all()?;
        total += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if with_grads {
            let g = nll.backward()?;
            if let Some(g) = g.get(detached.as_tensor()) {
                grad_h = Some(match grad_h {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                });
            }
        }
    }
    let loss = total / n as f64;
    if !with_grads {
        return Ok((loss, None, n, tokens));
    }
    let grad_h =
        grad_h.ok_or_else(|| LlmError::Generation("no gradient reached the model".into()))?;
    // d(mean loss)/d(params) = Jᵀ · (dL/dh) / n, through one backward pass.
    let surrogate = (sel * (grad_h / n as f64)?.detach())?.sum_all()?;
    let grads = surrogate.backward()?;
    Ok((loss, Some(grads), n, tokens))
}

/// Mean answer-token loss over `examples` (no dropout, no gradients).
pub fn eval_loss(
    model: &Model,
    lora: &LoraParams,
    examples: &[Example],
    batch: usize,
    chunk: usize,
) -> Result<f64, LlmError> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut drop = Dropout {
        p: 0.0,
        rng: &mut rng,
    };
    let (mut sum, mut n) = (0f64, 0usize);
    for c in examples.chunks(batch.max(1)) {
        let refs: Vec<&Example> = c.iter().collect();
        let (loss, _, k, _) = batch_loss(model, lora, &refs, &mut drop, chunk, false)?;
        sum += loss * k as f64;
        n += k;
    }
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
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
    if train.is_empty() {
        return Err(LlmError::Generation("no training examples".into()));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    if !model.device().is_cpu() {
        // Dropout masks are drawn on the device there; the CPU uses `rng`.
        let _ = model.device().set_seed(opts.seed);
    }
    let mut config = AdapterConfig::new(opts.rank, opts.alpha, &opts.targets);
    config.lora_dropout = opts.dropout as f64;
    let lora = LoraParams::init(model, config, &opts.targets, &mut rng)?;
    let vars = lora.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut queue: Vec<Vec<usize>> = Vec::new();
    let t0 = Instant::now();
    let mut seen_tokens = 0usize;
    for step in 0..opts.steps {
        if cancel.is_set() {
            break;
        }
        let mut acc: Option<GradStore> = None;
        let (mut loss_sum, mut targets, mut tokens) = (0f64, 0usize, 0usize);
        for _ in 0..opts.grad_accum.max(1) {
            if queue.is_empty() {
                queue = batches(train, opts.batch, &mut rng);
                queue.reverse();
            }
            let idx = queue.pop().expect("refilled");
            let batch: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
            let mut drop = Dropout {
                p: opts.dropout,
                rng: &mut rng,
            };
            let (loss, grads, n, t) =
                batch_loss(model, &lora, &batch, &mut drop, opts.loss_chunk, true)?;
            let grads = grads.expect("asked for gradients");
            loss_sum += loss;
            targets += n;
            tokens += t;
            acc = Some(match acc {
                None => grads,
                Some(mut a) => {
                    for v in &vars {
                        if let (Some(x), Some(y)) = (a.get(v.as_tensor()), grads.get(v.as_tensor()))
                        {
                            let s = (x + y)?;
                            a.insert(v.as_tensor(), s);
                        }
                    }
                    a
                }
            });
        }
        let mut grads = acc.expect("at least one micro-batch");
        let k = opts.grad_accum.max(1) as f64;
        // Average over micro-batches, then clip the global norm.
        let mut sq = 0f64;
        for v in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g / k)?;
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                grads.insert(v.as_tensor(), g);
            }
        }
        let norm = sq.sqrt();
        if opts.clip > 0.0 && norm > opts.clip {
            let f = opts.clip / norm;
            for v in &vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let g = (g * f)?;
                    grads.insert(v.as_tensor(), g);
                }
            }
        }
        let lr = opts.lr_at(step);
        opt.set_learning_rate(lr);
        opt.step(&grads)?;
        seen_tokens += tokens;
        let last = step + 1 == opts.steps;
        let eval_loss =
            if !eval.is_empty() && (last || (eval_every > 0 && (step + 1) % eval_every == 0)) {
                Some(eval_loss(model, &lora, eval, opts.batch, opts.loss_chunk)?)
            } else {
                None
            };
        on_step(&StepReport {
            step: step + 1,
            steps: opts.steps,
            loss: loss_sum / k,
            lr,
            grad_norm: norm,
            target_tokens: targets,
            tokens,
            tokens_per_sec: seen_tokens as f64 / t0.elapsed().as_secs_f64(),
            eval_loss,
        });
    }
    Ok(lora)
}
