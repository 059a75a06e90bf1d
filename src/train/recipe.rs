//! The recipe for a team's own corrections, shared by `sqlora train --auto` and by the
//! simulation of `eval --corrections --mode train|both`: a few corrected pairs are repeated
//! ([`Mix::weight`]) so that a handful of them are not drowned, and mixed with public pairs
//! replayed ([`Mix::replay`], Spider train) so that the adapter keeps what the model knew about
//! SQL in general; then one pass over the mix with the options a user gets by default
//! ([`default_options`]).
//!
//! Owns the mix and [`fit`], an adapter trained on it in one call. Never reads the feedback
//! store or a database, never saves an adapter, never prints.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{Compute, Options, Pair, Schedule};
use crate::cancel::Cancel;
use crate::llm::lora::adapter::{Adapter, Target};
use crate::llm::lora::params::LoraParams;
use crate::llm::prompt::ChatTemplate;
use crate::llm::{LlmError, Model, TextTokenizer};

/// How often each of the team's pairs is repeated in a `--auto` run.
pub const AUTO_WEIGHT: usize = 4;
/// Public pairs replayed beside them in a `--auto` run (when Spider train is at hand).
pub const AUTO_REPLAY: usize = 512;
/// Longest example of a `--auto` run, in tokens: a team's schema is often longer than
/// Spider's, and a pair left out for length is a correction lost.
pub const AUTO_MAX_LEN: usize = 2048;

/// What a run on corrections trains on, besides the corrections.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    /// Each own pair appears this many times (at least once).
    pub weight: usize,
    /// Public pairs drawn (seeded) from those offered.
    pub replay: usize,
    pub seed: u64,
}

/// The training pairs of `mix`: `own` repeated, `replay` of `public` drawn with the seed, all
/// shuffled with it.
pub fn mix(own: &[Pair], public: &[Pair], mix: &Mix) -> Vec<Pair> {
    let mut out = Vec::with_capacity(own.len() * mix.weight.max(1) + mix.replay);
    for _ in 0..mix.weight.max(1) {
        out.extend(own.iter().cloned());
    }
    let mut drawn: Vec<usize> = (0..public.len()).collect();
    drawn.shuffle(&mut StdRng::seed_from_u64(mix.seed));
    out.extend(
        drawn
            .into_iter()
            .take(mix.replay)
            .map(|i| public[i].clone()),
    );
    out.shuffle(&mut StdRng::seed_from_u64(mix.seed.wrapping_add(1)));
    out
}

/// `sqlora train`'s default options (rank 16, α 32, dropout 0.05, all seven projections, AdamW
/// at 2e-4 with 10 warm-up steps and a cosine, batches of 4, clipping at 1), the steps left
/// for [`fit`] to set to one pass; bf16 on a GPU, f32 on a CPU.
pub fn default_options(cuda: bool, seed: u64) -> Options {
    let batch = 4;
    Options {
        rank: 16,
        alpha: 32.0,
        dropout: 0.05,
        targets: Target::ALL.to_vec(),
        lr: 2e-4,
        weight_decay: 0.0,
        steps: 0,
        batch,
        grad_accum: 1,
        warmup: 10,
        schedule: Schedule::Cosine,
        clip: 1.0,
        seed,
        loss_chunk: 256,
        recompute: true,
        compute: if cuda { Compute::Bf16 } else { Compute::F32 },
    }
}

/// What [`fit`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fitted {
    pub examples: usize,
    /// Pairs longer than the length limit, left out.
    pub too_long: usize,
    /// Of those, pairs of the caller's own (the first `own` of [`fit`]'s pairs).
    pub own_too_long: usize,
    pub steps: usize,
    pub final_loss: f64,
    pub seconds: f64,
}

/// Trains an adapter on `pairs` (those over `max_len` tokens left out, and counted as the
/// caller's own when they are in `own`) with `opts`, its step count set for one pass when
/// `opts.steps` is 0: a fresh one, or one that goes on from `start` (the adapter the model
/// answers with, so corrections add to it rather than replace it). Stops early on `cancel`.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &Model,
    tokenizer: &TextTokenizer,
    template: ChatTemplate,
    pairs: &[Pair],
    own: &[Pair],
    max_len: usize,
    opts: &Options,
    start: Option<&Adapter>,
    cancel: &Cancel,
) -> Result<(LoraParams, Fitted), LlmError> {
    let mut examples = Vec::with_capacity(pairs.len());
    let (mut too_long, mut own_too_long) = (0, 0);
    for p in pairs {
        match super::example(p, tokenizer, template, max_len)? {
            Some(e) => examples.push(e),
            None => {
                too_long += 1;
                own_too_long += usize::from(
                    own.iter()
                        .any(|o| o.question == p.question && o.answer == p.answer),
                );
            }
        }
    }
    if examples.is_empty() {
        return Err(LlmError::TrainingData(format!(
            "no pair to train on ({too_long} longer than {max_len} tokens)"
        )));
    }
    let mut opts = opts.clone();
    if opts.steps == 0 {
        opts.steps = examples.len().div_ceil(opts.batch * opts.grad_accum).max(1);
    }
    let mut final_loss = f64::NAN;
    let mut trainer = super::Trainer::from_start(model, &opts, start)?;
    super::run(&mut trainer, &examples, &[], 0, cancel, &mut |_, r| {
        final_loss = r.loss;
        Ok(())
    })?;
    let fitted = Fitted {
        examples: examples.len(),
        too_long,
        own_too_long,
        steps: trainer.step,
        final_loss,
        seconds: trainer.seconds,
    };
    Ok((trainer.lora, fitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(q: &str) -> Pair {
        Pair {
            question: q.into(),
            context: String::new(),
            answer: "SELECT 1".into(),
            dialect: None,
        }
    }

    #[test]
    fn the_mix_repeats_own_pairs_and_draws_a_seeded_replay() {
        let own = [pair("a"), pair("b")];
        let public: Vec<Pair> = (0..50).map(|i| pair(&format!("p{i}"))).collect();
        let m = Mix {
            weight: 3,
            replay: 10,
            seed: 7,
        };
        let a = mix(&own, &public, &m);
        assert_eq!(a.len(), 16);
        assert_eq!(a.iter().filter(|p| p.question == "a").count(), 3);
        assert_eq!(a.iter().filter(|p| p.question.starts_with('p')).count(), 10);
        let b = mix(&own, &public, &m);
        let qs = |v: &[Pair]| v.iter().map(|p| p.question.clone()).collect::<Vec<_>>();
        assert_eq!(qs(&a), qs(&b), "the same seed gives the same mix");
        let c = mix(&own, &public, &Mix { seed: 8, ..m });
        assert_ne!(qs(&a), qs(&c));
        // Weight 0 still keeps each own pair once; replay is capped by what is offered.
        let d = mix(&own, &public[..3], &Mix { weight: 0, ..m });
        assert_eq!(d.len(), 5);
    }
}
