//! The model forward for training LoRA adapters (QLoRA): the same layer body as inference
//! ([`block::layer`]) with [`TrainOps`] computing its steps, run over a batch of whole sequences
//! with gradients flowing into the LoRA matrices only.
//!
//! The frozen base stays in the GGUF's quantization: a projection held quantized runs through
//! [`FrozenLinear`](super::linear::FrozenLinear), a custom op that dequantizes the weight for one
//! dense product going forward and again in its backward to give `dx = g·W` (candle's own
//! quantized matmul has no backward). Norms, RoPE, softmax and SiLU use candle's differentiable
//! elementwise forms, or on CUDA the project's fused kernels with their backward. This is the
//! autograd path (CPU, f32, tests); bf16 training on CUDA runs the hand-written layer of
//! `llm::cuda::train_layer` instead.
//!
//! Never updates weights (the optimizer is the trainer's), never reads training data.

use std::time::Instant;

#[cfg(feature = "cuda")]
use candle_core::Device;
use candle_core::{DType, Tensor, D};

use super::block::{self, LayerOps};
use super::layers::{causal_mask, rope};
use super::linear::frozen;
use super::lora::adapter::Target;
use super::lora::dropout::Dropout;
use super::lora::params::LoraParams;
use super::model::Model;
use super::LlmError;

/// Where the training forward spends its time, when `SQLORA_TRAIN_TRACE=2`: each part of a
/// layer is followed by a device synchronisation (which slows training; for profiling only)
/// and its time is added to a per-part total that [`probe::take`] hands out.
pub mod probe {
    use std::sync::{LazyLock, Mutex};
    use std::time::Instant;

    use candle_core::Device;

    static ON: LazyLock<bool> =
        LazyLock::new(|| std::env::var_os("SQLORA_TRAIN_TRACE").is_some_and(|v| v == "2"));
    static TOTALS: Mutex<Vec<(&'static str, f64, usize)>> = Mutex::new(Vec::new());

    /// A clock for the parts of one layer (`None` when profiling is off).
    pub fn start(dev: &Device) -> Option<Instant> {
        ON.then(|| {
            let _ = dev.synchronize();
            Instant::now()
        })
    }

    /// Charges the time since the last mark to `part`.
    pub fn mark(dev: &Device, clock: &mut Option<Instant>, part: &'static str) {
        if let Some(at) = clock {
            let _ = dev.synchronize();
            let secs = at.elapsed().as_secs_f64();
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            match totals.iter_mut().find(|(p, _, _)| *p == part) {
                Some(t) => {
                    t.1 += secs;
                    t.2 += 1;
                }
                None => totals.push((part, secs, 1)),
            }
            *at = Instant::now();
        }
    }

    /// The totals so far (part, seconds, times), which are then reset.
    pub fn take() -> Vec<(&'static str, f64, usize)> {
        std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What every layer of one training batch shares: the causal mask (f32: attention scores are
/// normalised in f32; none where the fused attention runs, which masks by position) and the
/// RoPE tables (in the compute dtype).
pub struct LayerInputs {
    mask: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
    /// The RoPE tables in f32 (what the fused kernels read).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    cos32: Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    sin32: Tensor,
}

impl LayerInputs {
    /// The RoPE tables `[seq, head_dim / 2]` in f32.
    #[cfg(feature = "cuda")]
    pub fn rope_tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos32, &self.sin32)
    }
}

/// Whether training attention runs on the fused CUDA kernels (`SQLORA_FLASH=0` turns them off).
#[cfg(feature = "cuda")]
fn use_flash(dev: &Device, head_dim: usize) -> bool {
    dev.is_cuda()
        && head_dim == super::cuda::attention::HEAD_DIM
        && std::env::var("SQLORA_FLASH").map_or(true, |v| v != "0")
}

/// Whether norms, RoPE and SwiGLU in training run on the fused CUDA kernels (`SQLORA_FUSED=0`
/// turns them off).
#[cfg(feature = "cuda")]
fn use_fused(dev: &Device) -> bool {
    dev.is_cuda() && std::env::var("SQLORA_FUSED").map_or(true, |v| v != "0")
}

/// RMSNorm of `x` with the frozen weight `w`, differentiable in `x`.
fn norm_train_op(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if use_fused(x.device()) {
        return super::cuda::layers::rms_norm(x, w, eps);
    }
    candle_nn::ops::rms_norm_slow(x, &w.to_dtype(x.dtype())?, eps)
}

/// Training: every step differentiable, the LoRA matrices of `lora` on the graph, dropout on
/// their input, and (when `SQLORA_TRAIN_TRACE=2`) each step's time charged to a part of
/// [`probe`].
struct TrainOps<'a> {
    model: &'a Model,
    layer: usize,
    inputs: &'a LayerInputs,
    lora: &'a LoraParams,
    drop: &'a mut Dropout,
    dtype: DType,
    clock: Option<Instant>,
}

impl TrainOps<'_> {
    fn mark(&mut self, part: &'static str) {
        probe::mark(self.model.device(), &mut self.clock, part);
    }
}

impl LayerOps for TrainOps<'_> {
    fn norm(&mut self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let y = norm_train_op(x, w, self.model.config.rms_eps as f32)?;
        self.mark("rms norms");
        Ok(y)
    }

    fn project(&mut self, t: Target, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self
            .model
            .project_train(self.layer, t, x, self.lora, self.drop)?;
        match t {
            Target::V => self.mark("q, k, v projections"),
            Target::O => self.mark("o projection"),
            Target::Up => self.mark("gate, up projections"),
            Target::Down => self.mark("down projection"),
            Target::Q | Target::K | Target::Gate => {}
        }
        Ok(y)
    }

    fn rope(&mut self, q: &Tensor, k: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let arch = self.model.config.arch;
        #[cfg(feature = "cuda")]
        if arch == super::config::Arch::Qwen2 && use_fused(q.device()) {
            let (cos, sin) = (&self.inputs.cos32, &self.inputs.sin32);
            let out = (
                super::cuda::layers::rope(q, cos, sin)?,
                super::cuda::layers::rope(k, cos, sin)?,
            );
            self.mark("rope");
            return Ok(out);
        }
        let out = rope(arch, q, k, &self.inputs.cos, &self.inputs.sin, true)?;
        self.mark("rope");
        Ok(out)
    }

    fn attend(&mut self, q: Tensor, k: Tensor, v: Tensor) -> candle_core::Result<Tensor> {
        let c = &self.model.config;
        let (b, _, seq, _) = q.dims4()?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        #[cfg(feature = "cuda")]
        if use_flash(q.device(), c.head_dim) {
            let y = super::cuda::attention::attention(&q, &k, &v, scale as f32)?
                .to_dtype(self.dtype)?
                .transpose(1, 2)?
                .reshape((b, seq, c.n_head * c.head_dim))?;
            self.mark("attention");
            return Ok(y);
        }
        // Grouped-query attention: each KV head serves `rep` query heads.
        let rep = c.n_head / c.n_kv_head;
        let expand = |t: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(t);
            }
            t.unsqueeze(2)?
                .expand((b, c.n_kv_head, rep, seq, c.head_dim))?
                .reshape((b, c.n_head, seq, c.head_dim))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let mask = self
            .inputs
            .mask
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("no causal mask for attention".into()))?;
        let att = (q.matmul(&k.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .broadcast_add(mask)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(self.dtype)?;
        let y = att
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, seq, c.n_head * c.head_dim))?;
        self.mark("attention");
        Ok(y)
    }

    fn swiglu(&mut self, g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        let gu = if use_fused(g.device()) {
            super::cuda::layers::swiglu(g, u)?
        } else {
            ((g * candle_nn::ops::sigmoid(g)?)? * u)?
        };
        #[cfg(not(feature = "cuda"))]
        let gu = ((g * candle_nn::ops::sigmoid(g)?)? * u)?;
        self.mark("swiglu");
        Ok(gu)
    }
}

impl Model {
    pub(super) fn project_train(
        &self,
        layer: usize,
        t: Target,
        x: &Tensor,
        lora: &LoraParams,
        drop: &mut Dropout,
    ) -> candle_core::Result<Tensor> {
        let p = self.layers[layer].projection(t);
        let mut y = frozen(p, x)?;
        if let Some((a, b)) = lora.pairs.get(&(layer, t)) {
            // f32 master weights, used in the compute dtype (the cast's backward brings the
            // gradients back to f32).
            let xd = drop.apply(x, layer, t)?;
            let delta = xd
                .broadcast_matmul(&a.as_tensor().to_dtype(x.dtype())?.t()?)?
                .broadcast_matmul(&b.as_tensor().to_dtype(x.dtype())?.t()?)?;
            y = (y + (delta * lora.config.scale())?)?;
        }
        match &p.bias {
            Some(bias) => y.broadcast_add(&bias.to_dtype(y.dtype())?),
            None => Ok(y),
        }
    }

    /// The mask and RoPE tables for sequences of `seq` tokens computed in `dtype`.
    pub fn layer_inputs(&self, seq: usize, dtype: DType) -> Result<LayerInputs, LlmError> {
        if seq > self.max_positions() {
            return Err(LlmError::Generation(format!(
                "a training sequence of {seq} tokens is longer than the model's {}",
                self.max_positions()
            )));
        }
        #[cfg(feature = "cuda")]
        let fused_attention = use_flash(self.device(), self.config.head_dim);
        #[cfg(not(feature = "cuda"))]
        let fused_attention = false;
        let mask = if fused_attention {
            None
        } else {
            Some(causal_mask(seq, 0, self.device())?)
        };
        let cos32 = self.cos.narrow(0, 0, seq)?.contiguous()?;
        let sin32 = self.sin.narrow(0, 0, seq)?.contiguous()?;
        Ok(LayerInputs {
            mask,
            cos: cos32.to_dtype(dtype)?,
            sin: sin32.to_dtype(dtype)?,
            cos32,
            sin32,
        })
    }

    /// Token embeddings `[batch, seq, hidden]` of `ids` `[batch, seq]`, in `dtype`: the dtype
    /// the layers then compute in (bf16 on a GPU, f32 on CPU).
    pub fn embed_train(&self, ids: &Tensor, dtype: DType) -> Result<Tensor, LlmError> {
        let (b, seq) = ids.dims2()?;
        Ok(self
            .embed
            .lookup(&ids.flatten_all()?)?
            .reshape((b, seq, self.config.hidden))?
            .to_dtype(dtype)?)
    }

    /// Layer `i` over `x` `[batch, seq, hidden]`, with the LoRA matrices on the graph.
    pub fn layer_train(
        &self,
        i: usize,
        x: &Tensor,
        inputs: &LayerInputs,
        lora: &LoraParams,
        drop: &mut Dropout,
    ) -> Result<Tensor, LlmError> {
        drop.start_layer(i);
        let mut ops = TrainOps {
            model: self,
            layer: i,
            inputs,
            lora,
            drop,
            dtype: x.dtype(),
            clock: probe::start(x.device()),
        };
        Ok(block::layer(&self.config, &self.layers[i], x, &mut ops)?)
    }

    /// The output norm of the last layer's states, in f32 (the loss is computed in f32).
    pub fn norm_train(&self, x: &Tensor) -> Result<Tensor, LlmError> {
        Ok(candle_nn::ops::rms_norm_slow(
            &x.to_dtype(DType::F32)?,
            &self.norm,
            self.config.rms_eps as f32,
        )?)
    }

    /// Final hidden states `[batch, seq, hidden]` (after the output norm) for `ids`, sequences
    /// of equal length padded at the end (a causal mask then keeps padding out of every real
    /// position), with the LoRA matrices in `lora` on the graph.
    pub fn hidden_train(
        &self,
        ids: &Tensor,
        lora: &LoraParams,
        drop: &mut Dropout,
        dtype: DType,
    ) -> Result<Tensor, LlmError> {
        let (_, seq) = ids.dims2()?;
        let inputs = self.layer_inputs(seq, dtype)?;
        let mut x = self.embed_train(ids, dtype)?;
        for i in 0..self.layers.len() {
            x = self.layer_train(i, &x, &inputs, lora, drop)?;
        }
        self.norm_train(&x)
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]` through the frozen output
    /// layer (differentiable with respect to the hidden states).
    pub fn logits_train(&self, hidden: &Tensor) -> Result<Tensor, LlmError> {
        Ok(frozen(&self.lm_head, hidden)?)
    }

    /// The output layer's weight `[vocab, hidden]` dequantized to f32, for the loss of one
    /// batch to use in all its chunks (instead of dequantizing 136M values per chunk).
    pub fn head_weight(&self) -> Result<Tensor, LlmError> {
        Ok(self.lm_head.wide.dense_f32(self.device())?)
    }
}
