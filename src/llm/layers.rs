//! The pieces every layer body is made of that are not weights: the rotary tables and RoPE in
//! each architecture's layout, and the additive attention masks (causal for one sequence,
//! causal-with-padding for a batch).
//!
//! Pure tensor functions; never holds state, never knows about caches or adapters.

use candle_core::{DType, Device, Tensor};

use super::config::Arch;

/// Additive causal mask `[seq, pos + seq]`: query `i` sees keys `0..=pos + i`.
pub(super) fn causal_mask(seq: usize, pos: usize, device: &Device) -> candle_core::Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (seq, kv), device)
}

/// The additive mask `[b, 1, rep·seq, old + seq]` of a batch step whose `seq` new columns follow
/// `old` cached ones, laid out like the stacked query rows of grouped-query attention (`rep`
/// query heads per KV head). `valid[i][j]`: column `j` holds a real token of sequence `i`.
/// Query column `c` sees key `j` when `j` is a real token of its sequence at or before it; a
/// padding query also sees itself, so that its (discarded) output stays finite and never
/// poisons a real query through 0·NaN.
pub(super) fn batch_mask(
    valid: &[Vec<bool>],
    old: usize,
    seq: usize,
    rep: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let cols = old + seq;
    let mut mask = Vec::with_capacity(valid.len() * seq * cols);
    for valid in valid {
        for c in old..cols {
            mask.extend((0..cols).map(|j| {
                if j == c || (j < c && valid[j]) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Tensor::from_vec(mask, (valid.len(), 1, seq, cols), device)?
        .repeat((1, 1, rep, 1))?
        .contiguous()
}

/// The RoPE tables `cos`, `sin` (`[max_pos, head_dim / 2]`, f32).
pub(super) fn rope_tables(
    head_dim: usize,
    theta: f32,
    max_pos: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device)?;
    let t = Tensor::arange(0u32, max_pos as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?;
    let freqs = t.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// RoPE on head-major `q` and `k` in `arch`'s layout (Qwen2: halves; Llama: interleaved pairs),
/// with candle's fused kernels (`slow`: its differentiable reference forms, for training).
pub(super) fn rope(
    arch: Arch,
    q: &Tensor,
    k: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    slow: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    use candle_nn::rotary_emb as r;
    let f = match (arch, slow) {
        (Arch::Qwen2, false) => r::rope,
        (Arch::Qwen2, true) => r::rope_slow,
        (Arch::Llama, false) => r::rope_i,
        (Arch::Llama, true) => r::rope_i_slow,
    };
    Ok((f(q, cos, sin)?, f(k, cos, sin)?))
}
