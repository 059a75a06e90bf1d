//! The model forward for training LoRA adapters (QLoRA): the same layers and weights as
//! [`Model::forward`], run over a batch of whole sequences with gradients flowing into the
//! LoRA matrices only.
//!
//! The frozen base stays in the GGUF's quantization: a projection held quantized runs through
//! [`FrozenLinear`], a custom op that dequantizes the weight for one dense product going forward
//! and again in its backward to give `dx = g·W` (candle's own quantized matmul has no
//! backward). Norms, RoPE, softmax and SiLU use candle's differentiable elementwise forms, or on
//! CUDA the project's fused kernels with their backward. This is the autograd path (CPU, f32,
//! tests); bf16 training on CUDA runs the hand-written layer of `llm::cuda_train` instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lora::{Adapter, AdapterConfig, LoraPair, Target};
use super::model::{Arch, Form, Model, Projection};
use super::LlmError;

/// `y = x·Wᵀ` with `W` frozen and quantized, as QLoRA runs it: the 4-bit weight is all that is
/// kept; the forward dequantizes it into the input's dtype for one dense product (cuBLAS on a
/// GPU) and drops it, and the backward dequantizes it again to give `dx = g·W`. No gradient for
/// `W` (candle's own quantized matmul has no backward at all).
pub struct FrozenLinear(pub Arc<QTensor>);

impl FrozenLinear {
    /// The weight `[out, in]` on `dev` in `dtype`, for one product.
    fn weight(&self, dev: &Device, dtype: DType) -> candle_core::Result<Tensor> {
        let w = self.0.dequantize(dev)?;
        if w.dtype() == dtype {
            Ok(w)
        } else {
            w.to_dtype(dtype)
        }
    }
}

/// `x·wᵀ` on storages: `x` contiguous with `k` columns, `w` `[n, k]`.
fn dense_product<S: BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
) -> candle_core::Result<(S, Shape)> {
    if !xl.is_contiguous() {
        candle_core::bail!("frozen-quantized-linear needs a contiguous input");
    }
    let dims = xl.dims();
    let k = dims[dims.len() - 1];
    let m = xl.shape().elem_count() / k.max(1);
    let (n, kw) = wl.shape().dims2()?;
    if kw != k {
        candle_core::bail!("frozen-quantized-linear: input has {k} columns, the weight {kw}");
    }
    let x2 = Layout::contiguous_with_offset((m, k), xl.start_offset());
    let y = x.matmul(w, (1, m, n, k), &x2, &wl.transpose(0, 1)?)?;
    let mut out = dims.to_vec();
    out[dims.len() - 1] = n;
    Ok((y, Shape::from(out)))
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight(&Device::Cpu, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cpu(ws) => dense_product(s, l, ws, wl),
            _ => candle_core::bail!("frozen-quantized-linear: weight is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dev = Device::Cuda(s.device().clone());
        let w = self.weight(&dev, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cuda(ws) => dense_product(s, l, ws, wl),
            _ => candle_core::bail!("frozen-quantized-linear: weight is not on the GPU"),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.weight(grad.device(), grad.dtype())?; // [out, in]
        let dims = grad.dims().to_vec();
        let out = dims[dims.len() - 1];
        let rows = grad.elem_count() / out;
        let dx = grad.reshape((rows, out))?.matmul(&w)?;
        let mut shape = dims;
        let last = shape.len() - 1;
        shape[last] = w.dim(1)?;
        Ok(Some(dx.reshape(shape)?))
    }
}

/// Trainable LoRA matrices for the projections they target: `A` `[r, in]`, `B` `[out, r]`.
pub struct LoraParams {
    pub pairs: BTreeMap<(usize, Target), (Var, Var)>,
    pub config: AdapterConfig,
}

impl LoraParams {
    /// PEFT's initialisation: `A` uniform in ±1/√in (Kaiming-uniform with a = √5), `B` zero,
    /// drawn from `rng` so that a seed fixes them.
    pub fn init(
        model: &Model,
        config: AdapterConfig,
        targets: &[Target],
        rng: &mut impl rand::Rng,
    ) -> Result<Self, LlmError> {
        let dev = model.device().clone();
        let r = config.r;
        let mut pairs = BTreeMap::new();
        for layer in 0..model.n_layers() {
            for &t in targets {
                let (out, inp) = model
                    .projection_dims(layer, t)
                    .ok_or_else(|| LlmError::Generation(format!("no layer {layer}")))?;
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..r * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, inp), &dev)?)?;
                let b = Var::zeros((out, r), DType::F32, &dev)?;
                pairs.insert((layer, t), (a, b));
            }
        }
        Ok(Self { pairs, config })
    }

    /// No adapter (the base model), for comparisons.
    pub fn none() -> Self {
        Self {
            pairs: BTreeMap::new(),
            config: AdapterConfig::new(1, 1.0, &[]),
        }
    }

    /// Trainable copies of an adapter's matrices on `dev` (to resume a run).
    pub fn from_adapter(adapter: &Adapter, dev: &Device) -> Result<Self, LlmError> {
        let mut pairs = BTreeMap::new();
        for (k, p) in &adapter.weights {
            let a = Var::from_tensor(&p.a.to_dtype(DType::F32)?.to_device(dev)?)?;
            let b = Var::from_tensor(&p.b.to_dtype(DType::F32)?.to_device(dev)?)?;
            pairs.insert(*k, (a, b));
        }
        Ok(Self {
            pairs,
            config: adapter.config.clone(),
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// The current weights as an adapter (f32, on the CPU).
    pub fn to_adapter(&self, label: &str) -> Result<Adapter, LlmError> {
        let mut weights = BTreeMap::new();
        for (k, (a, b)) in &self.pairs {
            weights.insert(
                *k,
                LoraPair {
                    a: a.as_tensor().to_device(&candle_core::Device::Cpu)?,
                    b: b.as_tensor().to_device(&candle_core::Device::Cpu)?,
                },
            );
        }
        Ok(Adapter {
            config: self.config.clone(),
            weights,
            sha256: String::new(),
            label: label.to_string(),
        })
    }
}

/// The seed of the dropout mask on the input of projection `t` of `layer`.
pub fn mask_seed(seed: u64, layer: usize, t: Target) -> u64 {
    mix_seed(mix_seed(seed, layer as u64), 1 + t as u64)
}

/// Dropout on the LoRA input. The masks follow from a seed and the layer: a layer recomputed in
/// the backward pass (activation recomputation) draws exactly the masks it drew going forward.
pub struct Dropout {
    pub p: f32,
    seed: u64,
    rng: StdRng,
}

/// A well-mixed seed for `(seed, k)` (SplitMix64's finaliser).
pub fn mix_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p,
            seed,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// No dropout (evaluation).
    pub fn off() -> Self {
        Self::new(0.0, 0)
    }

    /// The seed the masks of this batch follow from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts the masks of `layer` afresh.
    fn start_layer(&mut self, layer: usize) {
        if self.p > 0.0 {
            self.rng = StdRng::seed_from_u64(mix_seed(self.seed, layer as u64));
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    fn apply(&mut self, x: &Tensor, layer: usize, t: Target) -> candle_core::Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        // On a GPU the mask is a hash of (seed, layer, projection, element), computed there:
        // drawing hundreds of millions of numbers on the host and copying them over would
        // dominate a training step. The hand-written CUDA layer draws the same masks.
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return x.contiguous()?.apply_op1(super::cuda_train::HashDropout {
                p: self.p,
                seed: mask_seed(self.seed, layer, t),
            });
        }
        if !x.device().is_cpu() {
            return candle_nn::ops::dropout(x, self.p);
        }
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?
    }
}

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
        && head_dim == super::cuda_attention::HEAD_DIM
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
        return super::cuda_layers::rms_norm(x, w, eps);
    }
    candle_nn::ops::rms_norm_slow(x, &w.to_dtype(x.dtype())?, eps)
}

fn frozen(p: &Projection, x: &Tensor) -> candle_core::Result<Tensor> {
    let dense = |w: &Tensor| -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let y = x
            .reshape((x.elem_count() / k, k))?
            .matmul(&w.to_dtype(x.dtype())?.t()?)?;
        let mut out = dims.to_vec();
        out[dims.len() - 1] = w.dim(0)?;
        y.reshape(out)
    };
    match &p.wide {
        Form::Quant(m) => match m.as_ref() {
            QMatMul::QTensor(q) => x.contiguous()?.apply_op1(FrozenLinear(q.clone())),
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => dense(w),
        },
        Form::Dense(w) => dense(w),
    }
}

impl Model {
    fn project_train(
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
            let mask: Vec<f32> = (0..seq)
                .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(mask, (seq, seq), self.device())?)
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
            .index_select(&ids.flatten_all()?, 0)?
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
        let c = &self.config;
        let (b, seq, _) = x.dims3()?;
        let layer = &self.layers[i];
        drop.start_layer(i);
        let eps = c.rms_eps as f32;
        let rep = c.n_head / c.n_kv_head;
        let (cos, sin) = (&inputs.cos, &inputs.sin);
        let dev = x.device();
        let mut clock = probe::start(dev);
        let h = norm_train_op(x, &layer.attn_norm, eps)?;
        probe::mark(dev, &mut clock, "rms norms");
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, seq, n, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.project_train(i, Target::Q, &h, lora, drop)?, c.n_head)?;
        let k = heads(
            self.project_train(i, Target::K, &h, lora, drop)?,
            c.n_kv_head,
        )?;
        let v = heads(
            self.project_train(i, Target::V, &h, lora, drop)?,
            c.n_kv_head,
        )?;
        probe::mark(dev, &mut clock, "q, k, v projections");
        let (q, k) = match c.arch {
            #[cfg(feature = "cuda")]
            Arch::Qwen2 if use_fused(dev) => (
                super::cuda_layers::rope(&q, &inputs.cos32, &inputs.sin32)?,
                super::cuda_layers::rope(&k, &inputs.cos32, &inputs.sin32)?,
            ),
            Arch::Qwen2 => (
                candle_nn::rotary_emb::rope_slow(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_slow(&k, cos, sin)?,
            ),
            Arch::Llama => (
                candle_nn::rotary_emb::rope_i_slow(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i_slow(&k, cos, sin)?,
            ),
        };
        probe::mark(dev, &mut clock, "rope");
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        #[cfg(feature = "cuda")]
        if use_flash(dev, c.head_dim) {
            let y = super::cuda_attention::attention(&q, &k, &v, scale as f32)?
                .to_dtype(x.dtype())?
                .transpose(1, 2)?
                .reshape((b, seq, c.n_head * c.head_dim))?;
            probe::mark(dev, &mut clock, "attention");
            return self.layer_rest(i, x, &y, lora, drop, clock);
        }
        // Grouped-query attention: each KV head serves `rep` query heads.
        let expand = |t: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(t);
            }
            t.unsqueeze(2)?
                .expand((b, c.n_kv_head, rep, seq, c.head_dim))?
                .reshape((b, c.n_head, seq, c.head_dim))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let att =
            (q.matmul(&k.t()?)? * scale)?
                .to_dtype(DType::F32)?
                .broadcast_add(inputs.mask.as_ref().ok_or_else(|| {
                    LlmError::Generation("no causal mask for attention".into())
                })?)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(x.dtype())?;
        let y = att
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, seq, c.n_head * c.head_dim))?;
        probe::mark(dev, &mut clock, "attention");
        self.layer_rest(i, x, &y, lora, drop, clock)
    }

    /// The rest of layer `i` after attention: o-projection and residual, then the MLP.
    fn layer_rest(
        &self,
        i: usize,
        x: &Tensor,
        y: &Tensor,
        lora: &LoraParams,
        drop: &mut Dropout,
        mut clock: Option<Instant>,
    ) -> Result<Tensor, LlmError> {
        let layer = &self.layers[i];
        let eps = self.config.rms_eps as f32;
        let dev = x.device();
        let x = (x + self.project_train(i, Target::O, y, lora, drop)?)?;
        probe::mark(dev, &mut clock, "o projection");
        let h = norm_train_op(&x, &layer.ffn_norm, eps)?;
        probe::mark(dev, &mut clock, "rms norms");
        let g = self.project_train(i, Target::Gate, &h, lora, drop)?;
        let u = self.project_train(i, Target::Up, &h, lora, drop)?;
        probe::mark(dev, &mut clock, "gate, up projections");
        #[cfg(feature = "cuda")]
        let gu = if use_fused(dev) {
            super::cuda_layers::swiglu(&g, &u)?
        } else {
            ((&g * candle_nn::ops::sigmoid(&g)?)? * u)?
        };
        #[cfg(not(feature = "cuda"))]
        let gu = ((&g * candle_nn::ops::sigmoid(&g)?)? * u)?;
        probe::mark(dev, &mut clock, "swiglu");
        let out = (&x + self.project_train(i, Target::Down, &gu, lora, drop)?)?;
        probe::mark(dev, &mut clock, "down projection");
        Ok(out)
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
        Ok(match &self.lm_head.wide {
            Form::Quant(m) => match m.as_ref() {
                QMatMul::QTensor(q) => q.dequantize(self.device())?,
                QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.to_dtype(DType::F32)?,
            },
            Form::Dense(w) => w.to_dtype(DType::F32)?,
        })
    }
}
