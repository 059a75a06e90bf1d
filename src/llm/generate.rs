//! The one decoding loop. Whatever runs the model — one sequence on candle's kernels, one
//! sequence on the fused CUDA decoder, or a batch of sequences sharing a prompt prefix — is a
//! [`Stepper`]; [`decode`] chooses each row's next token (greedy, or the best token a caller's
//! [`TokenMask`] allows), applies the stop rules, lets finished rows leave, and feeds the rest
//! back. Constrained decoding and sampled candidates plug in here, once, for every path.
//!
//! Never tokenizes a prompt or touches the prefix cache (the engine does), never prints.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

use super::cache::{BatchCache, KvCache};
use super::model::Model;
use super::tokenizer::TextTokenizer;
use super::LlmError;
use crate::cancel::Cancel;

/// A caller's test for "the answer is complete", checked on the answer text after each token.
#[derive(Clone)]
pub struct StopRule(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopRule(..)")
    }
}

/// A caller's restriction of the next token, asked before every choice with the answer text so
/// far: `None` allows every token, `Some(ids)` only those (an empty list ends the answer).
#[derive(Clone)]
pub struct TokenMask(pub Arc<AllowedNext>);

/// The answer text so far → the token ids allowed next (`None`: any).
pub type AllowedNext = dyn Fn(&str) -> Option<Vec<u32>> + Send + Sync;

impl std::fmt::Debug for TokenMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMask(..)")
    }
}

/// Options for one generation.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_new_tokens: usize,
    /// Generation stops once the text produced so far ends a fenced code block.
    pub stop_at_fence_close: bool,
    /// Generation also stops once this holds for the answer text.
    pub stop_when: Option<StopRule>,
    /// Restricts each next token (see [`TokenMask`]).
    pub mask: Option<TokenMask>,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 320,
            stop_at_fence_close: true,
            stop_when: None,
            mask: None,
        }
    }
}

/// Runs the model one step at a time for the rows still decoding.
pub(super) trait Stepper {
    /// The greedy next token of each active row.
    fn greedy(&mut self) -> Result<Vec<u32>, LlmError>;
    /// The logits of each active row, `[rows, vocab]` f32.
    fn logits(&mut self) -> Result<Tensor, LlmError>;
    /// Keeps the active rows `keep` (indices into the current rows, in order) and runs `feed[k]`
    /// as the next token of kept row `k`.
    fn step(&mut self, keep: &[usize], feed: &[u32]) -> Result<(), LlmError>;
}

/// One answer being decoded.
#[derive(Debug, Clone, Default)]
pub(super) struct Row {
    /// What the prompt already wrote of the answer (the opening fence).
    pub answer_start: String,
    /// Tokens this answer may take at most.
    pub budget: usize,
    pub tokens: Vec<u32>,
    /// Seconds from the first decode step until this row finished.
    pub decode_secs: f64,
}

impl Row {
    /// The answer text so far, `answer_start` included.
    pub fn text(&self, tokenizer: &TextTokenizer) -> Result<String, LlmError> {
        Ok(format!(
            "{}{}",
            self.answer_start,
            tokenizer.decode(&self.tokens)?
        ))
    }
}

/// Decodes every row until each stops: a stop token, its budget, a closed code fence, the
/// caller's stop rule, or an empty set of allowed tokens.
pub(super) fn decode(
    stepper: &mut dyn Stepper,
    rows: &mut [Row],
    tokenizer: &TextTokenizer,
    opts: &GenOptions,
    cancel: &Cancel,
) -> Result<(), LlmError> {
    let t1 = Instant::now();
    // `active[k]`: the row whose sequence is row k of the stepper.
    let mut active: Vec<usize> = (0..rows.len()).collect();
    while !active.is_empty() {
        if cancel.is_set() {
            return Err(LlmError::Cancelled);
        }
        let next = choose(stepper, &active, rows, tokenizer, opts)?;
        let mut keep = Vec::with_capacity(active.len());
        let mut feed = Vec::with_capacity(active.len());
        for (k, &i) in active.iter().enumerate() {
            let row = &mut rows[i];
            let token = next[k];
            let mut done =
                token.is_none_or(|t| tokenizer.is_stop(t)) || row.tokens.len() >= row.budget;
            if let (false, Some(token)) = (done, token) {
                row.tokens.push(token);
                // Decoding the answer so far costs microseconds; a needless token costs far more.
                let text = row.text(tokenizer)?;
                done = (opts.stop_at_fence_close && closes_fence(&text))
                    || opts.stop_when.as_ref().is_some_and(|rule| (rule.0)(&text))
                    || row.tokens.len() >= row.budget;
                if !done {
                    keep.push(k);
                    feed.push(token);
                }
            }
            if done {
                row.decode_secs = t1.elapsed().as_secs_f64();
            }
        }
        if keep.is_empty() {
            break;
        }
        stepper.step(&keep, &feed)?;
        active = keep.iter().map(|&k| active[k]).collect();
    }
    Ok(())
}

/// The next token of each active row (`None`: the mask allows nothing, the row ends).
fn choose(
    stepper: &mut dyn Stepper,
    active: &[usize],
    rows: &[Row],
    tokenizer: &TextTokenizer,
    opts: &GenOptions,
) -> Result<Vec<Option<u32>>, LlmError> {
    let Some(mask) = &opts.mask else {
        return Ok(stepper.greedy()?.into_iter().map(Some).collect());
    };
    let allowed = active
        .iter()
        .map(|&i| Ok((mask.0)(&rows[i].text(tokenizer)?)))
        .collect::<Result<Vec<_>, LlmError>>()?;
    if allowed.iter().all(Option::is_none) {
        return Ok(stepper.greedy()?.into_iter().map(Some).collect());
    }
    let logits = stepper.logits()?.to_vec2::<f32>()?;
    Ok(logits
        .iter()
        .zip(&allowed)
        .map(|(row, allowed)| match allowed {
            None => best(row, 0..row.len() as u32),
            Some(ids) => best(row, ids.iter().copied()),
        })
        .collect())
}

/// The id with the highest finite logit among `ids` (the last of equals, as candle's sampler).
fn best(logits: &[f32], ids: impl Iterator<Item = u32>) -> Option<u32> {
    ids.filter(|&i| logits.get(i as usize).is_some_and(|v| v.is_finite()))
        .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
}

/// True once `text` holds an opening ``` fence and a closing one after it.
pub(super) fn closes_fence(text: &str) -> bool {
    match text.find("```") {
        Some(open) => text[open + 3..].contains("```"),
        None => false,
    }
}

/// One sequence on candle's kernels.
pub(super) struct Single<'a> {
    pub model: &'a Model,
    pub cache: KvCache,
    /// `[vocab]` logits of the last position run.
    pub logits: Tensor,
}

impl Stepper for Single<'_> {
    fn greedy(&mut self) -> Result<Vec<u32>, LlmError> {
        Ok(vec![argmax(&self.logits)?])
    }

    fn logits(&mut self) -> Result<Tensor, LlmError> {
        Ok(self.logits.unsqueeze(0)?)
    }

    fn step(&mut self, _keep: &[usize], feed: &[u32]) -> Result<(), LlmError> {
        self.logits = self.model.forward(feed, &mut self.cache)?;
        Ok(())
    }
}

/// Sequences of one prompt prefix in one padded batch.
pub(super) struct Batch<'a> {
    pub model: &'a Model,
    pub cache: BatchCache,
    /// `[rows, vocab]` logits of each row's last position.
    pub logits: Tensor,
}

impl Stepper for Batch<'_> {
    fn greedy(&mut self) -> Result<Vec<u32>, LlmError> {
        argmax_rows(&self.logits)
    }

    fn logits(&mut self) -> Result<Tensor, LlmError> {
        Ok(self.logits.clone())
    }

    fn step(&mut self, keep: &[usize], feed: &[u32]) -> Result<(), LlmError> {
        self.cache.retain(keep)?;
        let feed: Vec<Vec<u32>> = feed.iter().map(|&t| vec![t]).collect();
        self.logits = self.model.forward_batch(&feed, &mut self.cache)?;
        Ok(())
    }
}

/// One sequence on the fused CUDA decoder, after a prefill on candle's kernels.
#[cfg(feature = "cuda")]
pub(super) struct Fused<'a> {
    pub decoder: &'a mut super::cuda::decode::Decoder,
    /// The prefill's `[vocab]` logits until the first fused step, then the decoder's choice.
    pub next: Result<u32, Tensor>,
}

#[cfg(feature = "cuda")]
impl Stepper for Fused<'_> {
    fn greedy(&mut self) -> Result<Vec<u32>, LlmError> {
        Ok(vec![match &self.next {
            Ok(t) => *t,
            Err(logits) => argmax(logits)?,
        }])
    }

    fn logits(&mut self) -> Result<Tensor, LlmError> {
        Ok(match &self.next {
            Ok(_) => {
                let v = self.decoder.logits()?;
                let n = v.len();
                Tensor::from_vec(v, (1, n), &candle_core::Device::Cpu)?
            }
            Err(logits) => logits.unsqueeze(0)?,
        })
    }

    fn step(&mut self, _keep: &[usize], feed: &[u32]) -> Result<(), LlmError> {
        let (next, logit) = self.decoder.step(feed[0])?;
        if !logit.is_finite() {
            return Err(LlmError::Generation(
                "model produced non-finite logits".into(),
            ));
        }
        self.next = Ok(next);
        Ok(())
    }
}

/// Greedy choice of the next token through candle's sampler, refusing non-finite logits (a
/// corrupt model) instead of emitting an arbitrary token.
pub(super) fn argmax(logits: &Tensor) -> Result<u32, LlmError> {
    use candle_transformers::generation::{LogitsProcessor, Sampling};
    let id = LogitsProcessor::from_sampling(0, Sampling::ArgMax).sample(logits)?;
    let best: f32 = logits.get(id as usize)?.to_scalar()?;
    if !best.is_finite() {
        return Err(LlmError::Generation(
            "model produced non-finite logits".into(),
        ));
    }
    Ok(id)
}

/// [`argmax`] for each row of `[batch, vocab]` logits, on the logits' device (one small
/// transfer per step rather than the whole vocabulary of every row).
pub(super) fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>, LlmError> {
    let ids = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
    let best = logits.max(candle_core::D::Minus1)?.to_vec1::<f32>()?;
    if best.iter().any(|v| !v.is_finite()) {
        return Err(LlmError::Generation(
            "model produced non-finite logits".into(),
        ));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_close_needs_open_and_close() {
        assert!(!closes_fence("SELECT 1"));
        assert!(!closes_fence("```sql\nSELECT 1"));
        assert!(closes_fence("```sql\nSELECT 1\n```"));
        assert!(closes_fence("Here:\n```sql\nSELECT 1;\n``` and more"));
    }

    #[test]
    fn masked_choice_is_the_best_allowed_finite_logit() {
        let l = [0.5, 3.0, f32::NAN, 2.0, 2.0];
        assert_eq!(best(&l, 0..5), Some(1));
        assert_eq!(best(&l, [0, 2, 3, 4].into_iter()), Some(4));
        assert_eq!(best(&l, [2].into_iter()), None);
        assert_eq!(best(&l, std::iter::empty()), None);
    }
}
