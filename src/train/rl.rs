//! Reinforcement learning on execution results (`sqlora train --rl`): GRPO's arithmetic.
//!
//! Owns the reward of a judged answer ([`reward`]), the advantages within one question's group
//! of sampled answers ([`advantages`]: rewards normalised by the group's mean and spread, so
//! that only answers better or worse than their siblings move the weights), the weight of each
//! answer token in the loss ([`TokenWeights`]: its answer's advantage plus the gradient of a KL
//! penalty against the reference adapter, estimated per token as `exp(r − p) − (r − p) − 1`),
//! and [`Trainer::reinforce`], one optimizer step on a group of sampled answers. The update is
//! on-policy (the answers were sampled from the weights being trained, once per step), so the
//! importance ratio is 1 and there is nothing to clip; the KL term is what holds the adapter
//! near where it started. Sampling, running and judging the answers is the caller's
//! (`app::rl`); never generates and never touches a database.

use std::time::Instant;

use serde::Serialize;

use super::{batch_loss_of, Example, Grads, Objective, Pass, Trainer};
use crate::llm::lora::dropout::Dropout;
use crate::llm::lora::params::LoraParams;
use crate::llm::LlmError;

/// The reward of an answer that returns the gold result.
pub const REWARD_CORRECT: f32 = 1.0;
/// The reward of an answer that runs but returns something else, before its partial credit.
pub const REWARD_RAN: f32 = 0.1;
/// The most partial credit a wrong answer gets, for the share of the gold cells it found.
pub const REWARD_OVERLAP: f32 = 0.4;

/// The reward of one answer: 1 when correct; when it ran but is wrong, 0.1 plus up to 0.4 for
/// the share of the gold result's cells it returned (`overlap`, an F1 from 0 to 1); 0 when it
/// did not run (refused, failed, or no SQL). Denser than right/wrong: among answers that are
/// all wrong, those that run and come close still teach something.
pub fn reward(correct: bool, overlap: Option<f64>) -> f32 {
    match (correct, overlap) {
        (true, _) => REWARD_CORRECT,
        (false, Some(o)) => REWARD_RAN + REWARD_OVERLAP * o.clamp(0.0, 1.0) as f32,
        (false, None) => 0.0,
    }
}

/// Each answer's advantage within its group: `(r − mean) / std`. `None` when the rewards are
/// (nearly) all equal: such a group says nothing about which answer is better.
pub fn advantages(rewards: &[f32]) -> Option<Vec<f32>> {
    if rewards.len() < 2 {
        return None;
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / n;
    let var = rewards
        .iter()
        .map(|&r| (r as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    if std < 1e-6 {
        return None;
    }
    Some(
        rewards
            .iter()
            .map(|&r| ((r as f64 - mean) / std) as f32)
            .collect(),
    )
}

/// How the answer tokens of one micro-batch weigh in its loss.
pub struct TokenWeights<'a> {
    /// Per example of the micro-batch: its answer's advantage.
    pub advantage: &'a [f32],
    /// Per answer token of the micro-batch, in order: the reference adapter's log-probability
    /// (with `beta > 0`, the KL penalty's gradient is added).
    pub reference: Option<&'a [f32]>,
    pub beta: f32,
    /// Answer tokens of the whole optimizer step: the loss is a sum over them divided by this.
    pub tokens: usize,
}

impl TokenWeights<'_> {
    /// The weights of the answer tokens `start..start + nll.len()` of the micro-batch, whose
    /// examples are `owner` and whose negative log-likelihoods under the policy are `nll`:
    /// `A + β·(exp(ref − logp) − 1)`, the derivative of `−A·logp + β·KL` by `−logp` (the
    /// weights are held constant while differentiating).
    pub fn weights(&self, owner: &[usize], start: usize, nll: &[f32]) -> Vec<f32> {
        owner
            .iter()
            .zip(nll)
            .enumerate()
            .map(|(i, (&e, &nll))| {
                let a = self.advantage[e];
                match self.reference {
                    Some(r) if self.beta > 0.0 => {
                        // ref − logp = ref + nll; bounded so one odd token cannot explode.
                        let d = (r[start + i] + nll).min(10.0);
                        a + self.beta * (d.exp() - 1.0)
                    }
                    _ => a,
                }
            })
            .collect()
    }
}

/// The KL estimate `exp(d) − d − 1` with `d = ref − logp`, summed over tokens.
pub fn kl_sum(logp: &[f32], reference: &[f32]) -> f64 {
    logp.iter()
        .zip(reference)
        .map(|(&p, &r)| {
            let d = (r - p).min(10.0) as f64;
            d.exp() - d - 1.0
        })
        .sum()
}

/// What one reinforcement step did.
#[derive(Debug, Clone, Serialize)]
pub struct Reinforced {
    /// Mean negative log-likelihood of the sampled answer tokens under the policy.
    pub nll: f64,
    /// Mean KL estimate per answer token against the reference (0 without one).
    pub kl: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Answer tokens and all non-padding tokens trained on.
    pub target_tokens: usize,
    pub tokens: usize,
    pub secs: f64,
}

impl Trainer<'_> {
    /// One optimizer step on sampled answers: `examples[i]` is weighted by `advantage[i]`, and
    /// with `reference` (the adapter the run started from, and β) each token also by the KL
    /// penalty's gradient. Micro-batches of `opts.batch` examples of similar length; dropout is
    /// off (the answers were sampled without it).
    pub fn reinforce(
        &mut self,
        examples: &[Example],
        advantage: &[f32],
        reference: Option<(&LoraParams, f32)>,
    ) -> Result<Reinforced, LlmError> {
        if examples.is_empty() || examples.len() != advantage.len() {
            return Err(LlmError::Generation(
                "a reinforcement step needs one advantage per example".into(),
            ));
        }
        let t0 = Instant::now();
        let answer_tokens = |e: &Example| e.ids.len().saturating_sub(e.answer_start.max(1));
        let total: usize = examples.iter().map(answer_tokens).sum();
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.sort_by_key(|&i| examples[i].ids.len());
        let pass = |grads| Pass {
            chunk: self.opts.loss_chunk,
            grads,
            recompute: self.opts.recompute,
            dtype: self.opts.compute.dtype(),
            hand: true,
        };
        let vars = self.lora.vars();
        let mut acc = Grads::default();
        let (mut nll, mut kl, mut tokens) = (0f64, 0f64, 0usize);
        for part in order.chunks(self.opts.batch.max(1)) {
            let batch: Vec<&Example> = part.iter().map(|&i| &examples[i]).collect();
            let adv: Vec<f32> = part.iter().map(|&i| advantage[i]).collect();
            let ref_logp = match reference {
                Some((r, beta)) if beta > 0.0 => Some(
                    batch_loss_of(
                        self.model,
                        r,
                        &batch,
                        &mut Dropout::off(),
                        pass(false),
                        Objective::LogProbs,
                    )?
                    .logp,
                ),
                _ => None,
            };
            let w = TokenWeights {
                advantage: &adv,
                reference: ref_logp.as_deref(),
                beta: reference.map_or(0.0, |(_, b)| b),
                tokens: total.max(1),
            };
            let r = batch_loss_of(
                self.model,
                &self.lora,
                &batch,
                &mut Dropout::off(),
                pass(true),
                Objective::Weighted(&w),
            )?;
            if let Some(rl) = &ref_logp {
                kl += kl_sum(&r.logp, rl);
            }
            nll += r.loss * r.targets as f64;
            tokens += r.tokens;
            let grads = r.grads.expect("asked for gradients");
            for v in &vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    acc.add(v.as_tensor(), g)?;
                }
            }
        }
        // Each micro-batch's gradient is already of its share of the step's sum.
        let (grad_norm, lr) = self.update(acc, 1.0)?;
        self.tokens_seen += tokens;
        let secs = t0.elapsed().as_secs_f64();
        self.seconds += secs;
        Ok(Reinforced {
            nll: nll / total.max(1) as f64,
            kl: kl / total.max(1) as f64,
            grad_norm,
            lr,
            target_tokens: total,
            tokens,
            secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_order_correct_over_close_over_ran_over_failed() {
        assert_eq!(reward(true, Some(0.0)), 1.0);
        assert!((reward(false, Some(1.0)) - 0.5).abs() < 1e-6);
        assert!((reward(false, Some(0.0)) - 0.1).abs() < 1e-6);
        assert_eq!(reward(false, None), 0.0);
    }

    #[test]
    fn advantages_are_normalised_within_the_group_and_absent_without_spread() {
        let a = advantages(&[1.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!(a, vec![1.0, -1.0, -1.0, 1.0]);
        let b = advantages(&[1.0, 0.1, 0.1, 0.1]).unwrap();
        assert!(b[0] > 0.0 && b[1] < 0.0 && b[1] == b[2]);
        assert!(b.iter().sum::<f32>().abs() < 1e-5);
        assert!(advantages(&[0.1, 0.1, 0.1]).is_none());
        assert!(advantages(&[1.0]).is_none());
    }

    #[test]
    fn token_weights_add_the_kl_gradient_only_where_the_policy_drifted() {
        let adv = [2.0f32, -1.0];
        let reference = [-1.0f32, -2.0, -0.5];
        let w = TokenWeights {
            advantage: &adv,
            reference: Some(&reference),
            beta: 0.5,
            tokens: 3,
        };
        // Tokens 1 and 2 of the micro-batch: token 1 (example 0) as likely as the reference
        // (nll 2 = −ref), token 2 (example 1) more likely than the reference (nll 0.1 < 0.5).
        let got = w.weights(&[0, 1], 1, &[2.0, 0.1]);
        assert!((got[0] - 2.0).abs() < 1e-6);
        let want = -1.0 + 0.5 * ((-0.5f32 + 0.1).exp() - 1.0);
        assert!((got[1] - want).abs() < 1e-6);
        assert!(
            got[1] < -1.0,
            "drift away from the reference is pulled back"
        );
        let plain = TokenWeights {
            reference: None,
            ..w
        };
        assert_eq!(plain.weights(&[1], 0, &[5.0]), vec![-1.0]);
    }

    #[test]
    fn kl_is_zero_at_the_reference_and_positive_away_from_it() {
        assert_eq!(kl_sum(&[-1.0, -2.0], &[-1.0, -2.0]), 0.0);
        assert!(kl_sum(&[-1.0], &[-3.0]) > 0.0);
        assert!(kl_sum(&[-3.0], &[-1.0]) > 0.0);
    }
}
