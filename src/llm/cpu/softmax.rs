//! The attention softmax of one sequence on the CPU, causal by position instead of by an added
//! mask: row `r` of the scores (`[heads, rep·seq, keys]`, the `rep` query heads of a KV head
//! stacked, as the layer lays them out) is query `r mod seq`, which sees keys up to
//! `past + r mod seq`; the rest of the row is set to 0 without an exponential. The scores'
//! scale is applied here too, and the exponential is computed eight or sixteen lanes at a time
//! (a polynomial, within 4 ulp of `exp`). Replaces a mask tensor, its broadcast add, the scale
//! pass and candle's softmax (one `expf` call per score, masked ones included).
//!
//! Owns this softmax; never computes the scores or the weighted values (candle's matmul does).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// `softmax(scale · scores)` over each row's visible keys (see the module docs).
pub struct CausalSoftmax {
    /// Query positions in this call (the rows of one head are `seq` queries).
    pub seq: usize,
    /// Keys before the first query (the cached prefix).
    pub past: usize,
    pub scale: f32,
}

/// `exp(x)` for `x ≤ 0` (arguments after the row maximum is taken off), branch-free so that a
/// loop of it vectorizes: `x = n·ln 2 + r` with `n` whole (added to the exponent bits) and
/// `|r| ≤ ln 2 / 2` (taken off in two parts, Cody and Waite's way, so `r` keeps its precision),
/// then Taylor's series of `e^r` to degree 7 (error under 1e-8).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-86.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.984_127e-4f32;
    let p = p.mul_add(r, 1.388_888_9e-3);
    let p = p.mul_add(r, 8.333_333e-3);
    let p = p.mul_add(r, 4.166_666_8e-2);
    let p = p.mul_add(r, 0.166_666_67);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    f32::from_bits(p.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

/// Sixteen partial results side by side, so that a reduction over a row vectorizes (a single
/// running float would fix the order of every addition).
#[inline(always)]
fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let lanes = acc.iter().fold(init, |a, &b| f(a, b));
    tail.iter().fold(lanes, |a, &b| f(a, b))
}

#[inline(always)]
fn row_body(row: &mut [f32], visible: usize, scale: f32) {
    let (seen, hidden) = row.split_at_mut(visible.min(row.len()));
    let max = lanes(seen, f32::NEG_INFINITY, f32::max) * scale;
    for v in seen.iter_mut() {
        *v = exp_neg(*v * scale - max);
    }
    let inv = 1.0 / lanes(seen, 0.0, |a, b| a + b);
    seen.iter_mut().for_each(|v| *v *= inv);
    hidden.iter_mut().for_each(|v| *v = 0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn row_avx512(row: &mut [f32], visible: usize, scale: f32) {
    row_body(row, visible, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(row: &mut [f32], visible: usize, scale: f32) {
    row_body(row, visible, scale)
}

fn softmax_row(row: &mut [f32], visible: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
        let (avx512, avx2) = *WIDE.get_or_init(|| {
            (
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq"),
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            )
        });
        // SAFETY: the CPU has the features each function is compiled for.
        if avx512 {
            return unsafe { row_avx512(row, visible, scale) };
        }
        if avx2 {
            return unsafe { row_avx2(row, visible, scale) };
        }
    }
    row_body(row, visible, scale)
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("causal-softmax: f32 scores only");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: contiguous scores only");
        };
        let keys = l.dims().last().copied().unwrap_or(0);
        if keys == 0 || self.seq == 0 || self.past + self.seq > keys {
            candle_core::bail!(
                "causal-softmax: {} queries after {} cached keys over rows of {keys} keys",
                self.seq,
                self.past
            );
        }
        let mut out = data[start..end].to_vec();
        let job = |(r, row): (usize, &mut [f32])| {
            softmax_row(row, self.past + r % self.seq + 1, self.scale)
        };
        if out.len() >= 1 << 15 {
            out.par_chunks_mut(keys).enumerate().for_each(job);
        } else {
            out.chunks_mut(keys).enumerate().for_each(job);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn the_exponential_is_within_four_ulp() {
        for i in 0..200_000 {
            let x = -(i as f32) * 4e-4;
            let (got, want) = (exp_neg(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!((0.0..1e-37).contains(&exp_neg(-1e9)));
        assert_eq!(exp_neg(0.0), 1.0);
    }

    /// The op is candle's scale, causal mask and softmax, to f32 rounding.
    #[test]
    fn matches_scale_mask_and_softmax() {
        let (heads, rep, seq, past) = (2, 3, 5, 4);
        let keys = past + seq;
        let scores = Tensor::randn(0f32, 3.0, (1, heads, rep * seq, keys), &Device::Cpu).unwrap();
        let scale = 0.125;
        let got = scores
            .apply_op1_no_bwd(&CausalSoftmax { seq, past, scale })
            .unwrap();
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| {
                (0..keys).map(move |j| {
                    if j <= past + i {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (seq, keys), &Device::Cpu)
            .unwrap()
            .repeat((rep, 1))
            .unwrap();
        let want = candle_nn::ops::softmax_last_dim(
            &(scores * scale as f64)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap(),
        )
        .unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "largest difference {diff}");
    }
}
