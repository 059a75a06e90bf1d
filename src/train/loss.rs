//! The loss of a batch of training examples and its gradients with respect to the LoRA
//! matrices: the forward pass (candle's autograd, with or without recomputation, or the
//! hand-written CUDA layer), the output layer's loss in chunks, and the backward pass through
//! surrogates. The objective is the mean answer-token loss (supervised training) or a
//! per-token weighted sum (reinforcement learning, [`super::rl`]). Never updates weights: the
//! optimizer and the schedule are [`super::Trainer`]'s.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, TensorId, Var};

use super::{rl, Compute, Example, Options};
use crate::llm::lora::{dropout::Dropout, params::LoraParams};
use crate::llm::{LlmError, Model};

/// With `SQLORA_TRAIN_TRACE=1`, each phase of a batch is timed (the device synchronised first)
/// and printed to stderr.
struct Lap {
    on: bool,
    at: Instant,
}

impl Lap {
    fn new() -> Self {
        static ON: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
            std::env::var_os("SQLORA_TRAIN_TRACE").is_some_and(|v| v == "1" || v == "2")
        });
        Self {
            on: *ON,
            at: Instant::now(),
        }
    }

    fn done(&mut self, dev: &candle_core::Device, what: &str) {
        if self.on {
            let _ = dev.synchronize();
            eprintln!(
                "sqlora: train trace: {what} {:.1} ms",
                self.at.elapsed().as_secs_f64() * 1e3
            );
            for (part, secs, n) in crate::llm::autograd::probe::take() {
                eprintln!(
                    "sqlora: train trace:   {part}: {:.1} ms over {n} layer runs",
                    secs * 1e3
                );
            }
            self.at = Instant::now();
        }
    }
}

/// Gradients of the LoRA matrices, by tensor.
#[derive(Default)]
pub struct Grads(pub(super) HashMap<TensorId, Tensor>);

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }

    /// Adds `g` to the gradient of `t`.
    pub(super) fn add(&mut self, t: &Tensor, g: &Tensor) -> candle_core::Result<()> {
        let sum = match self.0.remove(&t.id()) {
            Some(acc) => (acc + g)?,
            None => g.clone(),
        };
        self.0.insert(t.id(), sum);
        Ok(())
    }

    pub(super) fn take_from(&mut self, store: &GradStore, vars: &[Var]) -> candle_core::Result<()> {
        for v in vars {
            if let Some(g) = store.get(v.as_tensor()) {
                self.add(v.as_tensor(), g)?;
            }
        }
        Ok(())
    }
}

/// What [`batch_loss_of`] differentiates.
#[derive(Clone, Copy)]
pub enum Objective<'a> {
    /// The mean negative log-likelihood of the answer tokens (supervised training).
    Mean,
    /// The same, and each answer token's log-probability returned ([`BatchLoss::logp`]).
    LogProbs,
    /// Each answer token's negative log-likelihood weighted as [`rl::TokenWeights`] says
    /// (reinforcement learning); the log-probabilities are returned too.
    Weighted(&'a rl::TokenWeights<'a>),
}

/// The loss of one batch, and its gradients when asked for.
pub struct BatchLoss {
    /// Mean loss over the answer tokens.
    pub loss: f64,
    /// Each answer token's log-probability, in the batch's order (examples, then positions),
    /// unless the objective is [`Objective::Mean`].
    pub logp: Vec<f32>,
    pub grads: Option<Grads>,
    /// Answer tokens the loss covers, and all non-padding tokens.
    pub targets: usize,
    pub tokens: usize,
}

/// How [`batch_loss`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// Rows of the output layer computed at once.
    pub chunk: usize,
    /// Compute the gradients too.
    pub grads: bool,
    /// Recompute each layer in the backward pass (see [`batch_loss`]).
    pub recompute: bool,
    /// The compute dtype.
    pub dtype: DType,
    /// Run the layers through the hand-written CUDA layer where it applies (bf16 on CUDA, see
    /// `llm::cuda::train_layer`): it keeps a lean set of activations, so `recompute` does not
    /// apply.
    pub hand: bool,
}

/// How the layers of `model` train with `opts`, in words (for the start line and the adapter's
/// `sqlora.json`).
pub fn layer_path(model: &Model, opts: &Options) -> &'static str {
    #[cfg(feature = "cuda")]
    if crate::llm::cuda::train_layer::supported(model, opts.compute.dtype()) {
        return "hand-written CUDA layers";
    }
    let _ = model;
    if opts.recompute {
        "autograd, activations recomputed"
    } else {
        "autograd, activations kept"
    }
}

/// Mean answer-token loss of `batch` and, with `with_grads`, its gradients. With `recompute`
/// only each layer's input is kept going forward, and each layer is run again in the backward
/// pass (activation recomputation): memory for one layer's activations instead of all of them,
/// for about a third more compute.
pub fn batch_loss(
    model: &Model,
    lora: &LoraParams,
    batch: &[&Example],
    drop: &mut Dropout,
    pass: Pass,
) -> Result<BatchLoss, LlmError> {
    batch_loss_of(model, lora, batch, drop, pass, Objective::Mean)
}

/// [`batch_loss`] with the gradient of `objective` (see [`Objective`]).
pub fn batch_loss_of(
    model: &Model,
    lora: &LoraParams,
    batch: &[&Example],
    drop: &mut Dropout,
    pass: Pass,
    objective: Objective,
) -> Result<BatchLoss, LlmError> {
    let Pass {
        chunk,
        grads: with_grads,
        recompute,
        dtype: compute,
        hand: _,
    } = pass;
    let dev = model.device().clone();
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let b = batch.len();
    let mut ids = Vec::with_capacity(b * len);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    // The example each target row belongs to.
    let mut owner = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        ids.extend(e.ids.iter().copied());
        ids.extend(std::iter::repeat_n(0u32, len - e.ids.len()));
        // Position t predicts token t + 1; only answer tokens are targets.
        for t in e.answer_start.saturating_sub(1)..e.ids.len() - 1 {
            rows.push((i * len + t) as u32);
            targets.push(e.ids[t + 1]);
            owner.push(i);
        }
    }
    let tokens: usize = batch.iter().map(|e| e.ids.len()).sum();
    let n = rows.len();
    if n == 0 {
        return Err(LlmError::Generation("a batch without answer tokens".into()));
    }
    let mut lap = Lap::new();
    let ids = Tensor::from_vec(ids, (b, len), &dev)?;
    let inputs = model.layer_inputs(len, compute)?;
    let vars = lora.vars();
    // Going forward: what the hand-written CUDA layer's backward needs, the whole graph, or
    // (recomputing) each layer's input only.
    #[cfg(feature = "cuda")]
    let hand = if pass.hand && crate::llm::cuda::train_layer::supported(model, compute) {
        Some(crate::llm::cuda::train_layer::Layers::new(
            model, lora, drop,
        )?)
    } else {
        None
    };
    #[cfg(feature = "cuda")]
    let mut hand_saved = Vec::new();
    let mut saved: Vec<Tensor> = Vec::new();
    let (top, hidden) = match () {
        #[cfg(feature = "cuda")]
        _ if hand.is_some() => {
            let layers = hand.as_ref().expect("checked");
            let mut x = model.embed_train(&ids, compute)?;
            for i in 0..model.n_layers() {
                let (y, kept) = layers.forward(i, &x, &inputs, with_grads)?;
                hand_saved.extend(kept);
                x = y;
            }
            let top = Var::from_tensor(&x)?;
            let hidden = model.norm_train(top.as_tensor())?;
            (with_grads.then_some(top), hidden)
        }
        // Without gradients nothing is kept either: each layer's graph is let go at once.
        _ if recompute || !with_grads => {
            let mut x = model.embed_train(&ids, compute)?;
            for i in 0..model.n_layers() {
                let y = model.layer_train(i, &x, &inputs, lora, drop)?.detach();
                let x_in = std::mem::replace(&mut x, y);
                if with_grads {
                    saved.push(x_in);
                }
            }
            let top = Var::from_tensor(&x)?;
            let hidden = model.norm_train(top.as_tensor())?;
            (with_grads.then_some(top), hidden)
        }
        _ => (None, model.hidden_train(&ids, lora, drop, compute)?),
    };
    lap.done(&dev, &format!("forward [{b}x{len}]"));
    let h = hidden.dim(2)?;
    let rows_t = Tensor::from_vec(rows, n, &dev)?;
    let sel = hidden.reshape((b * len, h))?.index_select(&rows_t, 0)?;
    let targets = Tensor::from_vec(targets, (n, 1), &dev)?;
    // The loss of each chunk of rows, with its gradient with respect to the hidden states;
    // the chunk's logits are dropped before the next one.
    let detached = Var::from_tensor(&sel.detach())?;
    let head = model.head_weight()?.t()?;
    let mut grad_h: Option<Tensor> = None;
    let mut total = 0f64;
    let mut logp = Vec::new();
    for start in (0..n).step_by(chunk.max(1)) {
        let m = chunk.min(n - start);
        let hs = detached.as_tensor().narrow(0, start, m)?;
        let logits = hs.matmul(&head)?;
        let lse = logits.log_sum_exp(1)?;
        let picked = logits
            .gather(&targets.narrow(0, start, m)?, 1)?
            .squeeze(1)?;
        let each = (lse - picked)?;
        let nll = each.sum_all()?;
        total += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let goal = match objective {
            Objective::Mean => nll,
            Objective::LogProbs | Objective::Weighted(_) => {
                let here: Vec<f32> = each.to_dtype(DType::F32)?.to_vec1()?;
                logp.extend(here.iter().map(|v| -v));
                match objective {
                    Objective::Weighted(w) => {
                        let ws = w.weights(&owner[start..start + m], start, &here);
                        let ws = Tensor::from_vec(ws, m, &dev)?.to_dtype(each.dtype())?;
                        (each * ws)?.sum_all()?
                    }
                    _ => nll,
                }
            }
        };
        if with_grads {
            let g = goal.backward()?;
            if let Some(g) = g.get(detached.as_tensor()) {
                grad_h = Some(match grad_h {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                });
            }
        }
    }
    let loss = total / n as f64;
    lap.done(&dev, &format!("loss over {n} answer tokens"));
    // The gradient is of the mean over the batch's answer tokens, or of the weighted sum over
    // the tokens of the whole optimizer step.
    let denom = match objective {
        Objective::Weighted(w) => w.tokens as f64,
        _ => n as f64,
    };
    let result = |grads| BatchLoss {
        loss,
        logp,
        grads,
        targets: n,
        tokens,
    };
    if !with_grads {
        return Ok(result(None));
    }
    let grad_h =
        grad_h.ok_or_else(|| LlmError::Generation("no gradient reached the model".into()))?;
    // d(mean loss)/d(params) = Jᵀ · (dL/dh) / n, through backward passes of surrogates.
    let surrogate = (sel * (grad_h / denom)?.detach())?.sum_all()?;
    let store = surrogate.backward()?;
    let mut grads = Grads::default();
    grads.take_from(&store, &vars)?;
    lap.done(&dev, "backward");
    #[cfg(feature = "cuda")]
    if let (Some(layers), Some(top)) = (&hand, &top) {
        // Layer by layer, last to first, through the hand-written backward.
        let mut g = store
            .get(top.as_tensor())
            .ok_or_else(|| LlmError::Generation("no gradient reached the last layer".into()))?
            .clone();
        std::mem::drop(store);
        let mut lora_grads = crate::llm::cuda::train_layer::LoraGrads::new();
        for (i, kept) in hand_saved.into_iter().enumerate().rev() {
            g = layers.backward(i, kept, &g, &inputs, &mut lora_grads)?;
        }
        for (key, (ga, gb)) in lora_grads {
            if let Some((a, b)) = lora.pairs.get(&key) {
                grads.add(a.as_tensor(), &ga)?;
                grads.add(b.as_tensor(), &gb)?;
            }
        }
        lap.done(&dev, "backward through the layers (hand-written)");
        return Ok(result(Some(grads)));
    }
    if let Some(top) = top {
        // Layer by layer, last to first: run the layer again from its saved input, and carry
        // the gradient on to that input.
        let mut g = store
            .get(top.as_tensor())
            .ok_or_else(|| LlmError::Generation("no gradient reached the last layer".into()))?
            .clone();
        std::mem::drop(store);
        for (i, x) in saved.iter().enumerate().rev() {
            let x = Var::from_tensor(x)?;
            let y = model.layer_train(i, x.as_tensor(), &inputs, lora, drop)?;
            let store = (y * g.detach())?.sum_all()?.backward()?;
            grads.take_from(&store, &vars)?;
            if i > 0 {
                g = store
                    .get(x.as_tensor())
                    .ok_or_else(|| LlmError::Generation(format!("no gradient at layer {i}")))?
                    .clone();
            }
        }
        lap.done(&dev, "recompute and backward through the layers");
    }
    Ok(result(Some(grads)))
}

/// Mean answer-token loss over `examples` (no dropout, no gradients).
pub fn eval_loss(
    model: &Model,
    lora: &LoraParams,
    examples: &[Example],
    batch: usize,
    chunk: usize,
    compute: Compute,
) -> Result<f64, LlmError> {
    let mut drop = Dropout::off();
    let (mut sum, mut n) = (0f64, 0usize);
    for c in examples.chunks(batch.max(1)) {
        let refs: Vec<&Example> = c.iter().collect();
        let pass = Pass {
            chunk,
            grads: false,
            recompute: false,
            dtype: compute.dtype(),
            hand: true,
        };
        let r = batch_loss(model, lora, &refs, &mut drop, pass)?;
        sum += r.loss * r.targets as f64;
        n += r.targets;
    }
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
}
