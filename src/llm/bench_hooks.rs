//! Hooks for the benchmarks (`benches/speed.rs`, `scripts/bench-*`): prefill alone, exactly n
//! decode steps on the path generation takes, the fused decoder checked against candle's
//! kernels, and batched decode steps.
//!
//! Never used to answer a question.

use std::time::Instant;

use super::cache::{BatchCache, KvCache};
use super::engine::Engine;
#[cfg(feature = "cuda")]
use super::generate::{argmax, Fused};
use super::generate::{argmax_rows, Single, Stepper};
use super::LlmError;

impl Engine {
    /// Runs `tokens` through the model from an empty cache (benchmarks use this).
    pub fn prefill_only(&self, tokens: &[u32]) -> Result<(), LlmError> {
        let mut cache = KvCache::default();
        self.model.forward(tokens, &mut cache).map(|_| ())
    }

    /// Generates exactly `n` tokens after `tokens` and ignores stop tokens (benchmarks), through
    /// the stepper [`Engine::generate`] would use: the fused decoder where it runs, candle's
    /// kernels otherwise.
    pub fn decode_n(&mut self, tokens: &[u32], n: usize) -> Result<f64, LlmError> {
        let mut cache = KvCache::default();
        let logits = self.model.forward(tokens, &mut cache)?;
        let fused = self.fast_start(&cache)?;
        #[cfg(feature = "cuda")]
        if fused {
            let decoder = self.fast.as_mut().expect("fast_start built it");
            return steps(
                &mut Fused {
                    decoder,
                    next: Err(logits),
                },
                n,
            );
        }
        debug_assert!(!fused);
        let model = &self.model;
        steps(
            &mut Single {
                model,
                cache,
                logits,
            },
            n,
        )
    }

    /// Checks the fused decoder against candle's kernels over `n` greedy steps after `tokens`
    /// (both fed the reference tokens): the largest |logit| difference, and in how many steps
    /// the two chose the same token. `None` when there is no fused decoder (benchmarks).
    pub fn check_fast_decode(
        &mut self,
        tokens: &[u32],
        n: usize,
    ) -> Result<Option<(f32, usize)>, LlmError> {
        #[cfg(feature = "cuda")]
        if self.fast_decoder().is_some() {
            let mut cache = KvCache::default();
            let mut logits = self.model.forward(tokens, &mut cache)?;
            self.fast_start(&cache)?;
            let (mut worst, mut same) = (0f32, 0);
            for _ in 0..n {
                let next = argmax(&logits)?;
                logits = self.model.forward(&[next], &mut cache)?;
                let want = argmax(&logits)?;
                let fast = self.fast.as_mut().expect("checked above");
                let (got, _) = fast.step(next)?;
                let reference = logits.to_vec1::<f32>()?;
                for (a, b) in fast.logits()?.iter().zip(&reference) {
                    worst = worst.max((a - b).abs());
                }
                same += usize::from(got == want);
            }
            return Ok(Some((worst, same)));
        }
        let _ = (tokens, n);
        Ok(None)
    }

    /// Runs `tokens` for `batch` sequences at once, then `n` batched decode steps (each
    /// sequence fed its own greedy token), and returns the seconds the steps took (benchmarks).
    pub fn decode_batch_n(&self, tokens: &[u32], batch: usize, n: usize) -> Result<f64, LlmError> {
        let mut cache = BatchCache::new(batch);
        let mut logits = self
            .model
            .forward_batch(&vec![tokens.to_vec(); batch], &mut cache)?;
        let t = Instant::now();
        for _ in 0..n {
            let next = argmax_rows(&logits)?;
            let feed: Vec<Vec<u32>> = next.into_iter().map(|t| vec![t]).collect();
            logits = self.model.forward_batch(&feed, &mut cache)?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

/// Times `n` greedy steps of `stepper`, each fed the token it chose.
fn steps(stepper: &mut dyn Stepper, n: usize) -> Result<f64, LlmError> {
    let mut next = stepper.greedy()?[0];
    let t = Instant::now();
    for _ in 0..n {
        stepper.step(&[0], &[next])?;
        next = stepper.greedy()?[0];
    }
    Ok(t.elapsed().as_secs_f64())
}
