//! One decoder layer of QLoRA training on CUDA written out by hand, forward and backward, in
//! bf16: a speed-up of the model's one layer body (`llm::block`, as `llm::autograd` trains it)
//! — a few dozen launches per layer where candle's autograd graph of the same layer runs a few
//! hundred ops and keeps every intermediate.
//!
//! - Products are cuBLAS calls (bf16 in, f32 accumulation). The LoRA update `s·(drop(x)·Aᵀ)·Bᵀ`
//!   is added into the base product's output (β = 1), never formed as a tensor of its own; the
//!   residual is added the same way; q, k and v are three products into one buffer.
//! - The frozen weights stay 4-bit: each product dequantizes its weight (forward, and again
//!   backward) and drops it, as [`FrozenLinear`](crate::llm::linear::FrozenLinear) does.
//! - Norm and SwiGLU are the project's fused kernels (`layers.cu`); attention runs on tensor
//!   cores in FlashAttention-2's manner (`attention.cu`, dQ without atomics, so a run is
//!   bit-reproducible); bias, RoPE and the moves between token-major and head-major layouts are
//!   one kernel each way (`train.cu`); dropout masks come from a counter-based hash, so the
//!   backward redraws them.
//! - The forward keeps what the backward needs (the layer's input, q/k/v, attention's output,
//!   the residual, the gate and up products, the LoRA down-projections: about 250 MB per layer
//!   for 16 × 512 tokens) and nothing runs twice.
//!
//! Gradients reach the LoRA matrices only, accumulated in f32. `tests/cuda.rs` checks a batch's
//! loss and every LoRA gradient against candle's autograd of the same layers (f32 and bf16), and
//! that two runs agree bit for bit.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{CudaDevice, DType, Device, Tensor};

use super::train_ops::*;
use crate::llm::autograd::LayerInputs;
use crate::llm::config::Arch;
use crate::llm::linear::Projection;
use crate::llm::lora::adapter::Target;
use crate::llm::lora::dropout::{mask_seed, Dropout};
use crate::llm::lora::params::LoraParams;
use crate::llm::model::Model;

/// Whether the hand-written layer can train `model` in `dtype` (`SQLORA_HAND_LAYER=0` turns it
/// off): bf16 on CUDA, Qwen2's layout (rotate-half RoPE, biases on q/k/v only), head size 64.
pub fn supported(model: &Model, dtype: DType) -> bool {
    let c = &model.config;
    model.device().is_cuda()
        && dtype == DType::BF16
        && c.arch == Arch::Qwen2
        && c.head_dim == HEAD_DIM
        && model.layers.iter().all(|l| {
            [Target::O, Target::Gate, Target::Up, Target::Down]
                .iter()
                .all(|&t| l.projection(t).bias.is_none())
        })
        && std::env::var("SQLORA_HAND_LAYER").map_or(true, |v| v != "0")
}

/// The step's LoRA matrices in bf16 (cast once per batch from the f32 masters), with what
/// dropout draws.
struct Lora {
    pairs: BTreeMap<(usize, Target), (Tensor, Tensor)>,
    scale: f32,
    p: f32,
}

/// What the backward of one layer needs from its forward.
pub struct Saved {
    x: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Attention's output `[b, nh, s, 65]` f32 (log-sum-exp last).
    att_heads: Tensor,
    /// The same, token-major bf16: the o-projection's input.
    att: Tensor,
    x2: Tensor,
    g: Tensor,
    u: Tensor,
    /// `drop(input)·Aᵀ` of each adapted projection.
    t: BTreeMap<Target, Tensor>,
}

/// LoRA gradients of one batch, f32, by `(layer, target)`: `(dA, dB)`.
pub type LoraGrads = BTreeMap<(usize, Target), (Tensor, Tensor)>;

/// The hand-written layers of one batch.
pub struct Layers<'m> {
    model: &'m Model,
    dev: CudaDevice,
    lora: Lora,
    /// The batch's dropout seed (masks per layer and projection follow from it).
    seed: u64,
    /// Zero biases for q/k/v without one.
    zero_bias: Tensor,
}

/// The frozen weight `[out, in]` of `p` in bf16, for one product.
fn weight(p: &Projection, dev: &Device) -> Result<Tensor> {
    p.wide.dense_f32(dev)?.to_dtype(DType::BF16)?.contiguous()
}

impl<'m> Layers<'m> {
    pub fn new(model: &'m Model, lora: &LoraParams, drop: &Dropout) -> Result<Self> {
        let dev = cuda(model.device())?.clone();
        let mut pairs = BTreeMap::new();
        for (k, (a, b)) in &lora.pairs {
            pairs.insert(
                *k,
                (
                    a.as_tensor().to_dtype(DType::BF16)?,
                    b.as_tensor().to_dtype(DType::BF16)?,
                ),
            );
        }
        let c = &model.config;
        let width = c.n_head.max(c.n_kv_head) * c.head_dim;
        Ok(Self {
            model,
            lora: Lora {
                pairs,
                scale: lora.config.scale() as f32,
                p: drop.p,
            },
            seed: drop.seed(),
            zero_bias: Tensor::zeros(width, DType::F32, model.device())?,
            dev,
        })
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let n = x.dims().last().copied().unwrap_or(1);
        let rows = x.elem_count() / n;
        let y = empty(&self.dev, x.shape(), DType::BF16)?;
        let f = self.dev.get_or_load_custom_func(
            "rms_fwd_bf16",
            super::layers::MODULE,
            super::layers::PTX,
        )?;
        let (xa, wa, ya) = (addr(x)?, addr(w)?, addr(&y)?);
        let (ni, eps) = (n as i32, self.model.config.rms_eps as f32);
        let mut b = f.builder();
        b.arg(&xa).arg(&wa).arg(&ya).arg(&ni).arg(&eps);
        run(&mut b, (rows, 1, 1), 256)?;
        Ok(y)
    }

    /// `dx += rms_norm'(x)ᵀ·g`.
    fn rms_bwd_add(&self, x: &Tensor, w: &Tensor, g: &Tensor, dx: &Tensor) -> Result<()> {
        let n = x.dims().last().copied().unwrap_or(1);
        let rows = x.elem_count() / n;
        let f = self.dev.get_or_load_custom_func(
            "rms_bwd_acc_bf16",
            super::layers::MODULE,
            super::layers::PTX,
        )?;
        let (xa, wa, ga, da) = (addr(x)?, addr(w)?, addr(g)?, addr(dx)?);
        let (ni, eps) = (n as i32, self.model.config.rms_eps as f32);
        let mut b = f.builder();
        b.arg(&xa).arg(&wa).arg(&ga).arg(&da).arg(&ni).arg(&eps);
        run(&mut b, (rows, 1, 1), 256)
    }

    /// `out (+)= x·Wᵀ + s·drop(x)·Aᵀ·Bᵀ` for projection `t` of `layer` into the `n` columns of
    /// `out` (β = `beta`); returns `drop(x)·Aᵀ` when the projection is adapted.
    fn project(
        &self,
        layer: usize,
        t: Target,
        x: &Tensor,
        out: Mat,
        beta: f32,
    ) -> Result<Option<Tensor>> {
        let p = self.model.layers[layer].projection(t);
        let (n, k) = p.dims;
        let m = x.elem_count() / k;
        let w = weight(p, self.model.device())?;
        gemm(
            &self.dev,
            (m, n, k),
            (mat(x)?, mat(&w)?.t(), out),
            1.0,
            beta,
        )?;
        let Some((a, bm)) = self.lora.pairs.get(&(layer, t)) else {
            return Ok(None);
        };
        let r = a.dim(0)?;
        let xd = dropout(&self.dev, x, self.lora.p, mask_seed(self.seed, layer, t))?;
        let tt = empty(&self.dev, (m, r), DType::BF16)?;
        gemm(
            &self.dev,
            (m, r, k),
            (mat(&xd)?, mat(a)?.t(), mat(&tt)?),
            1.0,
            0.0,
        )?;
        let s = self.lora.scale;
        gemm(&self.dev, (m, n, r), (mat(&tt)?, mat(bm)?.t(), out), s, 1.0)?;
        Ok(Some(tt))
    }

    /// The backward of [`Self::project`] given `gy` (the gradient of its `n` output columns):
    /// `dx (+)= gy·W + drop'(s·gy·B·A)` (β = `beta` for the base part), and the LoRA
    /// gradients added into `grads`.
    #[allow(clippy::too_many_arguments)]
    fn project_bwd(
        &self,
        layer: usize,
        t: Target,
        x: &Tensor,
        tt: Option<&Tensor>,
        gy: Mat,
        dx: &Tensor,
        beta: f32,
        grads: &mut LoraGrads,
    ) -> Result<()> {
        let p = self.model.layers[layer].projection(t);
        let (n, k) = p.dims;
        let m = x.elem_count() / k;
        let w = weight(p, self.model.device())?;
        gemm(&self.dev, (m, k, n), (gy, mat(&w)?, mat(dx)?), 1.0, beta)?;
        let (Some((a, bm)), Some(tt)) = (self.lora.pairs.get(&(layer, t)), tt) else {
            return Ok(());
        };
        let r = a.dim(0)?;
        let s = self.lora.scale;
        let dev = self.model.device();
        let (ga, gb) = &*match grads.entry((layer, t)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((
                Tensor::zeros((r, k), DType::F32, dev)?,
                Tensor::zeros((n, r), DType::F32, dev)?,
            )),
        };
        // dB += s·gyᵀ·t
        gemm(&self.dev, (n, r, m), (gy.t(), mat(tt)?, mat(gb)?), s, 1.0)?;
        // g_t = s·gy·B
        let gt = empty(&self.dev, (m, r), DType::BF16)?;
        gemm(&self.dev, (m, r, n), (gy, mat(bm)?, mat(&gt)?), s, 0.0)?;
        // dA += g_tᵀ·drop(x)
        let seed = mask_seed(self.seed, layer, t);
        let xd = dropout(&self.dev, x, self.lora.p, seed)?;
        gemm(
            &self.dev,
            (r, k, m),
            (mat(&gt)?.t(), mat(&xd)?, mat(ga)?),
            1.0,
            1.0,
        )?;
        drop(xd);
        // dx += drop'(g_t·A)
        if self.lora.p <= 0.0 {
            return gemm(
                &self.dev,
                (m, k, r),
                (mat(&gt)?, mat(a)?, mat(dx)?),
                1.0,
                1.0,
            );
        }
        let tmp = empty(&self.dev, (m, k), DType::BF16)?;
        gemm(
            &self.dev,
            (m, k, r),
            (mat(&gt)?, mat(a)?, mat(&tmp)?),
            1.0,
            0.0,
        )?;
        let f = self
            .dev
            .get_or_load_custom_func("dropout_add_bf16", MODULE, PTX)?;
        let (ta, da, n64, pp) = (addr(&tmp)?, addr(dx)?, (m * k) as u64, self.lora.p);
        let mut b = f.builder();
        b.arg(&ta).arg(&da).arg(&n64).arg(&seed).arg(&pp);
        run(&mut b, elementwise(m * k), 256)
    }

    /// Layer `i` over `x` `[b, s, hidden]` bf16; with `save`, what its backward needs.
    pub fn forward(
        &self,
        i: usize,
        x: &Tensor,
        inputs: &LayerInputs,
        save: bool,
    ) -> Result<(Tensor, Option<Saved>)> {
        let c = &self.model.config;
        let layer = &self.model.layers[i];
        let x = x.contiguous()?;
        let (b, s, hidden) = x.dims3()?;
        let tokens = b * s;
        let (nh, nkv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
        let width = (nh + 2 * nkv) * hd;
        let mut t = BTreeMap::new();

        let h1 = self.rms(&x, &layer.attn_norm)?;
        let qkv = empty(&self.dev, (tokens, width), DType::BF16)?;
        let out = mat(&qkv)?;
        for (tg, from) in [
            (Target::Q, 0),
            (Target::K, nh * hd),
            (Target::V, (nh + nkv) * hd),
        ] {
            if let Some(tt) = self.project(i, tg, &h1, out.cols(from), 0.0)? {
                t.insert(tg, tt);
            }
        }
        drop(h1);
        let q = empty(&self.dev, (b, nh, s, hd), DType::BF16)?;
        let k = empty(&self.dev, (b, nkv, s, hd), DType::BF16)?;
        let v = empty(&self.dev, (b, nkv, s, hd), DType::BF16)?;
        let bias = |tg: Target| -> Result<u64> {
            match &layer.projection(tg).bias {
                Some(bias) => addr(bias),
                None => addr(&self.zero_bias),
            }
        };
        let (cos, sin) = inputs.rope_tables();
        {
            let f = self
                .dev
                .get_or_load_custom_func("qkv_split_bf16", MODULE, PTX)?;
            let (ya, bq, bk, bv) = (
                addr(&qkv)?,
                bias(Target::Q)?,
                bias(Target::K)?,
                bias(Target::V)?,
            );
            let (ca, sa, qa, ka, va) = (addr(cos)?, addr(sin)?, addr(&q)?, addr(&k)?, addr(&v)?);
            let (bi, si, nhi, nkvi) = (b as i32, s as i32, nh as i32, nkv as i32);
            let mut bl = f.builder();
            bl.arg(&ya).arg(&bq).arg(&bk).arg(&bv).arg(&ca).arg(&sa);
            bl.arg(&qa)
                .arg(&ka)
                .arg(&va)
                .arg(&bi)
                .arg(&si)
                .arg(&nhi)
                .arg(&nkvi);
            run(&mut bl, elementwise(tokens * (nh + 2 * nkv) * hd / 2), 256)?;
        }
        drop(qkv);
        let scale = 1.0 / (hd as f32).sqrt();
        let att_heads = attention_forward(&q, &k, &v, scale, tensor_cores())?;
        let att = empty(&self.dev, (tokens, nh * hd), DType::BF16)?;
        self.layout("heads_to_tokens_bf16", &att_heads, &att, (b, s, nh))?;
        // x2 = x + o(att)
        let x2 = x.copy()?;
        if let Some(tt) = self.project(i, Target::O, &att, mat(&x2)?, 1.0)? {
            t.insert(Target::O, tt);
        }
        let h2 = self.rms(&x2, &layer.ffn_norm)?;
        let inter = layer.projection(Target::Gate).dims.0;
        let g = empty(&self.dev, (tokens, inter), DType::BF16)?;
        let u = empty(&self.dev, (tokens, inter), DType::BF16)?;
        for (tg, dst) in [(Target::Gate, &g), (Target::Up, &u)] {
            if let Some(tt) = self.project(i, tg, &h2, mat(dst)?, 0.0)? {
                t.insert(tg, tt);
            }
        }
        drop(h2);
        let gu = self.swiglu(&g, &u)?;
        let y = x2.copy()?;
        if let Some(tt) = self.project(i, Target::Down, &gu, mat(&y)?, 1.0)? {
            t.insert(Target::Down, tt);
        }
        let y = y.reshape((b, s, hidden))?;
        let saved = save.then(|| Saved {
            x,
            q,
            k,
            v,
            att_heads,
            att,
            x2,
            g,
            u,
            t,
        });
        Ok((y, saved))
    }

    fn layout(
        &self,
        name: &str,
        src: &Tensor,
        dst: &Tensor,
        (b, s, nh): (usize, usize, usize),
    ) -> Result<()> {
        let f = self.dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (sa, da) = (addr(src)?, addr(dst)?);
        let (bi, si, nhi) = (b as i32, s as i32, nh as i32);
        let mut bl = f.builder();
        bl.arg(&sa).arg(&da).arg(&bi).arg(&si).arg(&nhi);
        run(&mut bl, elementwise(b * s * nh * HEAD_DIM), 256)
    }

    fn swiglu(&self, g: &Tensor, u: &Tensor) -> Result<Tensor> {
        let n = g.elem_count();
        let y = empty(&self.dev, g.shape(), DType::BF16)?;
        let f = self.dev.get_or_load_custom_func(
            "swiglu_bf16",
            super::layers::MODULE,
            super::layers::PTX,
        )?;
        let (ga, ua, ya, n64) = (addr(g)?, addr(u)?, addr(&y)?, n as u64);
        let mut b = f.builder();
        b.arg(&ga).arg(&ua).arg(&ya).arg(&n64);
        run(&mut b, elementwise(n), 256)?;
        Ok(y)
    }

    /// The backward of layer `i`: the gradient of its input given `gout`, the gradient of its
    /// output; LoRA gradients added into `grads`.
    pub fn backward(
        &self,
        i: usize,
        saved: Saved,
        gout: &Tensor,
        inputs: &LayerInputs,
        grads: &mut LoraGrads,
    ) -> Result<Tensor> {
        let c = &self.model.config;
        let layer = &self.model.layers[i];
        let Saved {
            x,
            q,
            k,
            v,
            att_heads,
            att,
            x2,
            g,
            u,
            t,
        } = saved;
        let (b, s, hidden) = x.dims3()?;
        let tokens = b * s;
        let (nh, nkv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
        let width = (nh + 2 * nkv) * hd;
        let inter = g.dim(1)?;
        // The residual stream's gradient, which every branch adds into.
        let dx = gout
            .to_dtype(DType::BF16)?
            .contiguous()?
            .reshape((tokens, hidden))?
            .copy()?;

        // MLP: y = x2 + down(swiglu(gate(h2), up(h2))), h2 = norm(x2).
        let gu = self.swiglu(&g, &u)?;
        let dgu = empty(&self.dev, (tokens, inter), DType::BF16)?;
        let gy = mat(&dx)?;
        self.project_bwd(
            i,
            Target::Down,
            &gu,
            t.get(&Target::Down),
            gy,
            &dgu,
            0.0,
            grads,
        )?;
        drop(gu);
        let dgate_up = empty(&self.dev, (2, tokens, inter), DType::BF16)?;
        {
            let n = tokens * inter;
            let f = self.dev.get_or_load_custom_func(
                "swiglu_bwd_bf16",
                super::layers::MODULE,
                super::layers::PTX,
            )?;
            let (ga, ua, da, oa, n64) = (
                addr(&g)?,
                addr(&u)?,
                addr(&dgu)?,
                addr(&dgate_up)?,
                n as u64,
            );
            let mut bl = f.builder();
            bl.arg(&ga).arg(&ua).arg(&da).arg(&oa).arg(&n64);
            run(&mut bl, elementwise(n), 256)?;
        }
        drop((dgu, g, u));
        let h2 = self.rms(&x2, &layer.ffn_norm)?;
        let dh2 = empty(&self.dev, (tokens, hidden), DType::BF16)?;
        let dgate = mat(&dgate_up.get(0)?)?;
        let dup = mat(&dgate_up.get(1)?)?;
        self.project_bwd(
            i,
            Target::Gate,
            &h2,
            t.get(&Target::Gate),
            dgate,
            &dh2,
            0.0,
            grads,
        )?;
        self.project_bwd(
            i,
            Target::Up,
            &h2,
            t.get(&Target::Up),
            dup,
            &dh2,
            1.0,
            grads,
        )?;
        drop((h2, dgate_up));
        self.rms_bwd_add(&x2, &layer.ffn_norm, &dh2, &dx)?;
        drop((dh2, x2));

        // Attention: x2 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm(x).
        let datt = empty(&self.dev, (tokens, nh * hd), DType::BF16)?;
        self.project_bwd(
            i,
            Target::O,
            &att,
            t.get(&Target::O),
            mat(&dx)?,
            &datt,
            0.0,
            grads,
        )?;
        drop(att);
        let dout = Tensor::zeros((b, nh, s, hd + 1), DType::F32, self.model.device())?;
        self.layout("tokens_to_heads_bf16", &datt, &dout, (b, s, nh))?;
        drop(datt);
        let scale = 1.0 / (hd as f32).sqrt();
        let (dq, dk, dv) =
            attention_backward(&q, &k, &v, &att_heads, &dout, scale, tensor_cores())?;
        drop((q, k, v, att_heads, dout));
        let dqkv = empty(&self.dev, (tokens, width), DType::BF16)?;
        {
            let (cos, sin) = inputs.rope_tables();
            let f = self
                .dev
                .get_or_load_custom_func("qkv_merge_bf16", MODULE, PTX)?;
            let (qa, ka, va, ca, sa, ya) = (
                addr(&dq)?,
                addr(&dk)?,
                addr(&dv)?,
                addr(cos)?,
                addr(sin)?,
                addr(&dqkv)?,
            );
            let (bi, si, nhi, nkvi) = (b as i32, s as i32, nh as i32, nkv as i32);
            let mut bl = f.builder();
            bl.arg(&qa).arg(&ka).arg(&va).arg(&ca).arg(&sa).arg(&ya);
            bl.arg(&bi).arg(&si).arg(&nhi).arg(&nkvi);
            run(&mut bl, elementwise(tokens * (nh + 2 * nkv) * hd / 2), 256)?;
        }
        drop((dq, dk, dv));
        let x = x.reshape((tokens, hidden))?;
        let h1 = self.rms(&x, &layer.attn_norm)?;
        let dh1 = empty(&self.dev, (tokens, hidden), DType::BF16)?;
        let gy = mat(&dqkv)?;
        let parts = [
            (Target::Q, 0),
            (Target::K, nh * hd),
            (Target::V, (nh + nkv) * hd),
        ];
        for (n, (tg, from)) in parts.into_iter().enumerate() {
            let beta = if n == 0 { 0.0 } else { 1.0 };
            self.project_bwd(i, tg, &h1, t.get(&tg), gy.cols(from), &dh1, beta, grads)?;
        }
        drop((h1, dqkv));
        self.rms_bwd_add(&x, &layer.attn_norm, &dh1, &dx)?;
        dx.reshape((b, s, hidden))
    }
}
