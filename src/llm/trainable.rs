//! The model forward for training LoRA adapters (QLoRA): the same layers and weights as
//! [`Model::forward`], run over a batch of whole sequences with gradients flowing into the
//! LoRA matrices only.
//!
//! The frozen base stays in the GGUF's quantization: a projection held quantized runs through
//! [`FrozenLinear`], a custom op whose forward is candle's quantized matmul and whose backward
//! dequantizes the weight again to give `dx = g·W` (candle's own quantized matmul has no
//! backward). Norms, RoPE, softmax and SiLU use candle's differentiable elementwise forms.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, Var, D};

use super::lora::{Adapter, AdapterConfig, LoraPair, Target};
use super::model::{Arch, Form, Model, Projection};
use super::LlmError;

/// `y = x·Wᵀ` with `W` frozen and quantized. Forward: candle's quantized kernels. Backward:
/// `dx = g·W` from `W` dequantized on the fly (never kept), and no gradient for `W`.
pub struct FrozenLinear(pub Arc<QTensor>);

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.cpu_fwd(s, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.0.cuda_fwd(s, l)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.0.dequantize(grad.device())?; // [out, in]
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

/// Dropout on the LoRA input, with masks drawn from a seeded generator.
pub struct Dropout<'a> {
    pub p: f32,
    pub rng: &'a mut dyn rand::RngCore,
}

impl Dropout<'_> {
    fn apply(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        // On a GPU the mask is drawn there (candle's generator, seeded by the trainer through
        // `Device::set_seed`): drawing hundreds of millions of numbers on the host and copying
        // them over would dominate a training step.
        if !x.device().is_cpu() {
            return candle_nn::ops::dropout(x, self.p);
        }
        use rand::Rng;
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
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

fn frozen(p: &Projection, x: &Tensor) -> candle_core::Result<Tensor> {
    match &p.wide {
        Form::Quant(m) => match m.as_ref() {
            QMatMul::QTensor(q) => x.contiguous()?.apply_op1(FrozenLinear(q.clone())),
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => {
                x.broadcast_matmul(&w.to_dtype(x.dtype())?.t()?)
            }
        },
        dense => dense.forward(x),
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
            let xd = drop.apply(x)?;
            let delta = xd
                .broadcast_matmul(&a.as_tensor().t()?)?
                .broadcast_matmul(&b.as_tensor().t()?)?;
            y = (y + (delta * lora.config.scale())?)?;
        }
        match &p.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }

    /// Final hidden states `[batch, seq, hidden]` (after the output norm) for `ids`, sequences
    /// of equal length padded at the end (a causal mask then keeps padding out of every real
    /// position), with the LoRA matrices in `lora` on the graph.
    pub fn hidden_train(
        &self,
        ids: &Tensor,
        lora: &LoraParams,
        drop: &mut Dropout,
    ) -> Result<Tensor, LlmError> {
        let c = &self.config;
        let (b, seq) = ids.dims2()?;
        if seq > self.max_positions() {
            return Err(LlmError::Generation(format!(
                "a training sequence of {seq} tokens is longer than the model's {}",
                self.max_positions()
            )));
        }
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, seq, c.hidden))?;
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (seq, seq), self.device())?;
        let cos = self.cos.narrow(0, 0, seq)?;
        let sin = self.sin.narrow(0, 0, seq)?;
        let eps = c.rms_eps as f32;
        let rep = c.n_head / c.n_kv_head;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.attn_norm, eps)?;
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
            let (q, k) = match c.arch {
                Arch::Qwen2 => (
                    candle_nn::rotary_emb::rope_slow(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_slow(&k, &cos, &sin)?,
                ),
                Arch::Llama => (
                    candle_nn::rotary_emb::rope_i_slow(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i_slow(&k, &cos, &sin)?,
                ),
            };
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
            let scale = 1.0 / (c.head_dim as f64).sqrt();
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, seq, c.n_head * c.head_dim))?;
            x = (x + self.project_train(i, Target::O, &y, lora, drop)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.ffn_norm, eps)?;
            let g = self.project_train(i, Target::Gate, &h, lora, drop)?;
            let g = (&g * candle_nn::ops::sigmoid(&g)?)?;
            let u = self.project_train(i, Target::Up, &h, lora, drop)?;
            x = (x + self.project_train(i, Target::Down, &(g * u)?, lora, drop)?)?;
        }
        Ok(candle_nn::ops::rms_norm_slow(&x, &self.norm, eps)?)
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]` through the frozen output
    /// layer (differentiable with respect to the hidden states).
    pub fn logits_train(&self, hidden: &Tensor) -> Result<Tensor, LlmError> {
        Ok(frozen(&self.lm_head, hidden)?)
    }
}
