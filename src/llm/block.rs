//! The one decoder-layer body, written once: pre-norm attention with grouped-query heads and
//! RoPE, then a pre-norm SwiGLU MLP, each added to the residual stream. What differs between
//! inference and training is only how each step is computed — inference through candle's fused
//! kernels (and, on the CPU, sqlora's int8 products and causal softmax) with a KV cache
//! ([`InferOps`]), training through differentiable forms with the LoRA
//! matrices on the autograd graph (`autograd::TrainOps`) — so those are a [`LayerOps`] the body
//! calls. The fused CUDA decoder (`cuda::decode`) and the hand-written CUDA training layer
//! (`cuda::train_layer`) are speed-ups of this body, each held to it by an equivalence test.
//!
//! Never loads weights, never tokenizes, never decides which ops a caller should use.

use candle_core::Tensor;

use super::config::ModelConfig;
use super::cpu::softmax::CausalSoftmax;
use super::layers::rope;
use super::linear::Projection;
use super::lora::adapter::Target;

/// How each step of a layer is computed.
pub(super) trait LayerOps {
    /// RMSNorm of `x` with the frozen weight `w`.
    fn norm(&mut self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor>;
    /// The layer's projection `t` of `x` (`[b, seq, in]` → `[b, seq, out]`), adapter included.
    fn project(&mut self, t: Target, x: &Tensor) -> candle_core::Result<Tensor>;
    /// RoPE on head-major `q`, `k` (`[b, heads, seq, head_dim]`).
    fn rope(&mut self, q: &Tensor, k: &Tensor) -> candle_core::Result<(Tensor, Tensor)>;
    /// Causal attention of `q` over `k`, `v` (head-major, after RoPE), as `[b, seq, heads·dim]`.
    fn attend(&mut self, q: Tensor, k: Tensor, v: Tensor) -> candle_core::Result<Tensor>;
    /// `silu(g)·u`.
    fn swiglu(&mut self, g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor>;
}

/// Layer `layer` over `x` (`[b, seq, hidden]`), its steps computed by `ops`. Projections run in
/// the order q, k, v, o, gate, up, down (training's dropout masks follow that order).
pub(super) fn layer(
    c: &ModelConfig,
    layer: &Layer,
    x: &Tensor,
    ops: &mut impl LayerOps,
) -> candle_core::Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
        t.reshape((b, seq, n, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let h = ops.norm(x, &layer.attn_norm)?;
    let q = heads(ops.project(Target::Q, &h)?, c.n_head)?;
    let k = heads(ops.project(Target::K, &h)?, c.n_kv_head)?;
    let v = heads(ops.project(Target::V, &h)?, c.n_kv_head)?;
    let (q, k) = ops.rope(&q, &k)?;
    let y = ops.attend(q, k, v)?;
    let x = (x + ops.project(Target::O, &y)?)?;
    let h = ops.norm(&x, &layer.ffn_norm)?;
    let g = ops.project(Target::Gate, &h)?;
    let u = ops.project(Target::Up, &h)?;
    let gu = ops.swiglu(&g, &u)?;
    let m = ops.project(Target::Down, &gu)?;
    x + m
}

/// Inference: candle's fused norm and RoPE, the weights in their per-phase representation, and
/// attention that appends this step's keys and values to the layer's cache slot (one sequence
/// on the CPU: its softmax by position, `cpu::softmax`; otherwise an added mask).
pub(super) struct InferOps<'a> {
    pub c: &'a ModelConfig,
    pub layer: &'a Layer,
    /// `[seq, keys]` for one sequence, `[b, 1, rep·seq, keys]` for a batch, or none (one
    /// sequence, one new token).
    pub mask: Option<&'a Tensor>,
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub slot: &'a mut Option<(Tensor, Tensor)>,
}

impl LayerOps for InferOps<'_> {
    fn norm(&mut self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, w, self.c.rms_eps as f32)
    }

    fn project(&mut self, t: Target, x: &Tensor) -> candle_core::Result<Tensor> {
        self.layer.projection(t).forward(x)
    }

    fn rope(&mut self, q: &Tensor, k: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        rope(self.c.arch, q, k, self.cos, self.sin, false)
    }

    fn attend(&mut self, q: Tensor, k: Tensor, v: Tensor) -> candle_core::Result<Tensor> {
        let c = self.c;
        let (b, _, seq, _) = q.dims4()?;
        let (k, v) = match self.slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *self.slot = Some((k.clone(), v.clone()));
        // Grouped-query attention without copying K/V for every query head: the `rep` query
        // heads that share a KV head are stacked on the row axis, [b, kv_heads, rep·seq, dim].
        let rep = c.n_head / c.n_kv_head;
        let q = q.reshape((b, c.n_kv_head, rep * seq, c.head_dim))?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let keys = k.dim(2)?;
        // One sequence on the CPU (a causal mask or none): the softmax is causal by position,
        // scale included, without a mask tensor (`cpu::softmax`).
        let one_causal = b == 1 && self.mask.is_none_or(|m| m.rank() == 2);
        if one_causal && q.device().is_cpu() && q.dtype() == candle_core::DType::F32 {
            let att = q.matmul(&k.t()?)?.apply_op1_no_bwd(&CausalSoftmax {
                seq,
                past: keys - seq,
                scale: scale as f32,
            })?;
            let y = att.matmul(&v)?.reshape((b, c.n_head, seq, c.head_dim))?;
            return y.transpose(1, 2)?.reshape((b, seq, c.n_head * c.head_dim));
        }
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        match self.mask {
            // Batched: `[b, 1, rep·seq, keys]`, already laid out like the query rows.
            Some(mask) if mask.rank() == 4 => att = att.broadcast_add(mask)?,
            Some(mask) => att = att.broadcast_add(&mask.repeat((rep, 1))?)?,
            None => {}
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.reshape((b, c.n_head, seq, c.head_dim))?;
        y.transpose(1, 2)?.reshape((b, seq, c.n_head * c.head_dim))
    }

    fn swiglu(&mut self, g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::silu(g)? * u
    }
}

impl Layer {
    pub(super) fn projection(&self, t: Target) -> &Projection {
        match t {
            Target::Q => &self.q,
            Target::K => &self.k,
            Target::V => &self.v,
            Target::O => &self.o,
            Target::Gate => &self.gate,
            Target::Up => &self.up,
            Target::Down => &self.down,
        }
    }

    pub(super) fn projection_mut(&mut self, t: Target) -> &mut Projection {
        match t {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }
}

/// The weights of one layer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(super) attn_norm: Tensor,
    pub(super) q: Projection,
    pub(super) k: Projection,
    pub(super) v: Projection,
    pub(super) o: Projection,
    pub(super) ffn_norm: Tensor,
    pub(super) gate: Projection,
    pub(super) up: Projection,
    pub(super) down: Projection,
}
