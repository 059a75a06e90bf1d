//! Dropout on the input of the LoRA matrices during training, with masks that follow from a
//! seed, the layer and the projection: a layer recomputed in the backward pass draws exactly
//! the masks it drew going forward, and on a GPU the autograd path and the hand-written CUDA
//! layer draw the same ones.
//!
//! Never touches weights; only scales activations.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::adapter::Target;

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
    pub(crate) fn start_layer(&mut self, layer: usize) {
        if self.p > 0.0 {
            self.rng = StdRng::seed_from_u64(mix_seed(self.seed, layer as u64));
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn apply(
        &mut self,
        x: &Tensor,
        layer: usize,
        t: Target,
    ) -> candle_core::Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        // On a GPU the mask is a hash of (seed, layer, projection, element), computed there:
        // drawing hundreds of millions of numbers on the host and copying them over would
        // dominate a training step. The hand-written CUDA layer draws the same masks.
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return x
                .contiguous()?
                .apply_op1(crate::llm::cuda::train_ops::HashDropout {
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
