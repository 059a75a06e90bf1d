//! The one decoding loop. Whatever runs the model — one sequence on candle's kernels, one
//! sequence on the fused CUDA decoder, or a batch of sequences sharing a prompt prefix — is a
//! [`Stepper`]; [`decode`] chooses each row's next token (greedy, or drawn by a seeded
//! [`Sample`]; either way only a token the row's [`TokenMask`] allows), applies the stop rules,
//! lets finished rows leave, and feeds the rest back. A row caught in a loop (the same run of
//! tokens over and over, which a small model under a mask sometimes falls into) stops there
//! rather than holding its whole batch until the token budget runs out. The schema mask and
//! sampled candidates plug in here, once, for every path: the mask is asked about the token
//! the row would take first, and the logits are read back from the device only when some row
//! needs more.
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

/// A caller's restriction of the next token. Asked once a step with the answer text so far, it
/// gives the test a candidate token's bytes must pass (`None`: every token may come). The loop
/// asks the test only of the tokens it would choose, best first, so a test that passes the
/// model's own choice costs one call.
pub trait Constraint: Send + Sync {
    fn next<'a>(&'a self, text: &str) -> Option<TokenTest<'a>>;

    /// Whether the answer may end after `text` (a stop token comes next). Asked only where
    /// [`Constraint::next`] restricts the next token.
    fn may_stop(&self, text: &str) -> bool {
        let _ = text;
        true
    }

    /// This restriction as far as a GBNF grammar over the generated text can say it (what an
    /// inference server applies in its place: [`super::remote`]); `None`: none.
    fn grammar(&self) -> Option<String> {
        None
    }
}

/// The test a candidate token's bytes must pass.
pub type TokenTest<'a> = Box<dyn Fn(&[u8]) -> bool + 'a>;

/// A shared [`Constraint`].
#[derive(Clone)]
pub struct TokenMask(pub Arc<dyn Constraint>);

impl std::fmt::Debug for TokenMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMask(..)")
    }
}

/// Sampling instead of the greedy choice: softmax at `temperature` over the `top_k` best
/// allowed tokens, drawn from a generator seeded with `seed` (the same seed, prompt and model
/// give the same answer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub temperature: f32,
    pub top_k: usize,
    pub seed: u64,
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
#[derive(Clone, Default)]
pub(super) struct Row {
    /// What the prompt already wrote of the answer (the opening fence).
    pub answer_start: String,
    /// Tokens this answer may take at most.
    pub budget: usize,
    pub tokens: Vec<u32>,
    /// Seconds from the first decode step until this row finished.
    pub decode_secs: f64,
    /// This answer's restriction of each next token.
    pub mask: Option<TokenMask>,
    /// Sampled instead of greedy.
    pub sampler: Option<Sampler>,
    /// Sum of the chosen tokens' log-probabilities, while every step's logits were read.
    pub logprob: Option<f64>,
    /// Seconds spent in the mask's tests and the search for an allowed token.
    pub mask_secs: f64,
    /// The answer text so far, `answer_start` included: decoded once a step by [`decode`]
    /// for the stop rules, and read by the mask.
    pub so_far: String,
}

/// A [`Sample`] with its generator.
#[derive(Clone)]
pub(super) struct Sampler {
    pub sample: Sample,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(sample: Sample) -> Self {
        use rand::SeedableRng;
        Sampler {
            sample,
            rng: rand::rngs::StdRng::seed_from_u64(sample.seed),
        }
    }
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
/// caller's stop rule, a loop ([`loops`]), or an empty set of allowed tokens.
pub(super) fn decode(
    stepper: &mut dyn Stepper,
    rows: &mut [Row],
    tokenizer: &TextTokenizer,
    opts: &GenOptions,
    cancel: &Cancel,
) -> Result<(), LlmError> {
    let t1 = Instant::now();
    for row in rows.iter_mut() {
        row.so_far = row.text(tokenizer)?;
    }
    // `active[k]`: the row whose sequence is row k of the stepper.
    let mut active: Vec<usize> = (0..rows.len()).collect();
    while !active.is_empty() {
        if cancel.is_set() {
            return Err(LlmError::Cancelled);
        }
        let next = choose(stepper, &active, rows, tokenizer)?;
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
                row.so_far = row.text(tokenizer)?;
                let text = &row.so_far;
                done = (opts.stop_at_fence_close && closes_fence(text))
                    || opts.stop_when.as_ref().is_some_and(|rule| (rule.0)(text))
                    || row.tokens.len() >= row.budget
                    || loops(&row.tokens);
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

/// The next token of each active row (`None`: the mask allows nothing, the row ends). A greedy
/// row takes the model's best token when its mask allows it, else the best token the mask
/// allows; a sampled row draws from the best tokens its mask allows. The logits are read back
/// only when some row needs more than the best token.
fn choose(
    stepper: &mut dyn Stepper,
    active: &[usize],
    rows: &mut [Row],
    tokenizer: &TextTokenizer,
) -> Result<Vec<Option<u32>>, LlmError> {
    let plain = |i: &usize| rows[*i].mask.is_none() && rows[*i].sampler.is_none();
    if active.iter().all(plain) {
        for &i in active {
            rows[i].logprob = None;
        }
        return Ok(stepper.greedy()?.into_iter().map(Some).collect());
    }
    let greedy = if active.iter().any(|&i| rows[i].sampler.is_none()) {
        Some(stepper.greedy()?)
    } else {
        None
    };
    let mut logits: Option<Vec<Vec<f32>>> = None;
    let mut out = Vec::with_capacity(active.len());
    for (k, &i) in active.iter().enumerate() {
        let row = &mut rows[i];
        let text = row.so_far.as_str();
        let t0 = Instant::now();
        let test = row.mask.as_ref().and_then(|mask| mask.0.next(text));
        // Time in the mask's tests, however the token is chosen.
        let spent = std::cell::Cell::new(t0.elapsed().as_secs_f64());
        let allows = |id: u32| match (&test, &row.mask) {
            (None, _) => true,
            (Some(_), Some(mask)) if tokenizer.is_stop(id) => mask.0.may_stop(text),
            (Some(f), _) => {
                let t = Instant::now();
                let ok = f(tokenizer.token_bytes(id));
                spent.set(spent.get() + t.elapsed().as_secs_f64());
                ok
            }
        };
        let quick = match (&row.sampler, &greedy) {
            (None, Some(g)) => allows(g[k]).then_some(g[k]),
            _ => None,
        };
        let chosen = if let Some(t) = quick {
            match (&logits, row.logprob.as_mut()) {
                (Some(l), Some(lp)) => *lp += log_prob(&l[k], t),
                _ => row.logprob = None,
            }
            Some(t)
        } else {
            if logits.is_none() {
                logits = Some(stepper.logits()?.to_vec2::<f32>()?);
            }
            let l = &logits.as_ref().expect("read above")[k];
            let chosen = match &mut row.sampler {
                None => best_allowed(l, &allows),
                Some(s) => s.draw(l, &allows),
            };
            if let (Some(c), Some(lp)) = (chosen, row.logprob.as_mut()) {
                *lp += log_prob(l, c);
            }
            chosen
        };
        row.mask_secs += spent.get();
        out.push(chosen);
    }
    Ok(out)
}

/// The `k` ids of the highest finite logits, best first (earlier ids first among equals).
fn top_ids(logits: &[f32], k: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() || (top.len() == k && v <= floor) {
            continue;
        }
        let at = top.partition_point(|&(x, _)| x >= v);
        top.insert(at, (v, i as u32));
        top.truncate(k);
        if top.len() == k {
            floor = top[k - 1].0;
        }
    }
    top.into_iter().map(|(_, i)| i).collect()
}

/// The id with the highest finite logit among `ids` (the last of equals, as candle's sampler).
fn best(logits: &[f32], ids: impl Iterator<Item = u32>) -> Option<u32> {
    ids.filter(|&i| logits.get(i as usize).is_some_and(|v| v.is_finite()))
        .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
}

/// How many of the best tokens are tried first, and then how many before the whole
/// vocabulary is searched. Where the mask wants a name the model did not expect (a table after
/// `FROM`), its first piece is rarely among the best 64 but nearly always among the best
/// 4,096, which cost a selection over the logits and a few thousand tests instead of a test
/// of every token (151,000 for Qwen).
const TRIED_FIRST: usize = 64;
const TRIED_NEXT: usize = 4096;

/// The `k` ids of the highest finite logits, best first (earlier ids first among equals), as
/// [`top_ids`] but by selection, for a large `k`.
fn top_ids_many(logits: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect();
    let order = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if ids.len() > k {
        ids.select_nth_unstable_by(k, order);
        ids.truncate(k);
    }
    ids.sort_unstable_by(order);
    ids
}

/// The allowed id with the highest finite logit: the best few tried first, then the best
/// [`TRIED_NEXT`], then all.
fn best_allowed(logits: &[f32], allows: &dyn Fn(u32) -> bool) -> Option<u32> {
    if let Some(t) = top_ids(logits, TRIED_FIRST)
        .into_iter()
        .find(|&t| allows(t))
    {
        return Some(t);
    }
    // The first 64 are tested again: cheaper than proving both orders agree on them.
    if let Some(t) = top_ids_many(logits, TRIED_NEXT)
        .into_iter()
        .find(|&t| allows(t))
    {
        return Some(t);
    }
    best(logits, (0..logits.len() as u32).filter(|&t| allows(t)))
}

/// `ln softmax(logits)[id]`.
fn log_prob(logits: &[f32], id: u32) -> f64 {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64 - max).exp())
        .sum();
    logits[id as usize] as f64 - max - sum.ln()
}

impl Sampler {
    /// A draw from the softmax at the temperature over the `top_k` best allowed tokens.
    fn draw(&mut self, logits: &[f32], allows: &dyn Fn(u32) -> bool) -> Option<u32> {
        use rand::Rng;
        let k = self.sample.top_k.max(1);
        let mut ids: Vec<u32> = top_ids(logits, TRIED_FIRST.max(4 * k))
            .into_iter()
            .filter(|&t| allows(t))
            .take(k)
            .collect();
        if ids.is_empty() {
            ids = top_ids_many(logits, TRIED_NEXT)
                .into_iter()
                .filter(|&t| allows(t))
                .take(k)
                .collect();
        }
        if ids.is_empty() {
            let mut all: Vec<u32> = (0..logits.len() as u32)
                .filter(|&t| logits[t as usize].is_finite() && allows(t))
                .collect();
            all.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            all.truncate(k);
            ids = all;
        }
        let first = *ids.first()?;
        let t = self.sample.temperature.max(1e-4) as f64;
        let top = logits[first as usize] as f64;
        let weights: Vec<f64> = ids
            .iter()
            .map(|&i| ((logits[i as usize] as f64 - top) / t).exp())
            .collect();
        let mut u = self.rng.random::<f64>() * weights.iter().sum::<f64>();
        for (&id, w) in ids.iter().zip(&weights) {
            if u < *w {
                return Some(id);
            }
            u -= w;
        }
        ids.last().copied()
    }
}

/// The fewest tokens a loop spans, and the fewest copies of its run.
const LOOP_SPAN: usize = 36;
const LOOP_REPEATS: usize = 3;

/// True when `tokens` end in [`LOOP_REPEATS`] back-to-back copies of one run of 1 to 48
/// tokens, [`LOOP_SPAN`] tokens or more in all (`AND x = 1 AND x = 1 AND x = 1 …`). SQL a
/// user wants never does that; checked after each token, so only runs ending at the newest
/// token are looked at.
pub(super) fn loops(tokens: &[u32]) -> bool {
    let n = tokens.len();
    for period in 1..=48 {
        let len = (period * LOOP_REPEATS).max(LOOP_SPAN.div_ceil(period) * period);
        if len > n {
            continue;
        }
        let tail = &tokens[n - len..];
        if tail[period..] == tail[..len - period] {
            return true;
        }
    }
    false
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
    fn a_run_repeated_three_times_over_36_tokens_is_a_loop_and_sql_is_not() {
        let run = [10u32, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21];
        let mut t: Vec<u32> = vec![1, 2, 3];
        t.extend(run.iter().chain(&run));
        assert!(!loops(&t), "two copies are no loop");
        t.extend(run);
        assert!(loops(&t), "three copies of 12 tokens are");
        // Short runs need more copies to fill the span: `))))` is legitimate SQL.
        let parens = vec![7u32; 12];
        assert!(!loops(&parens));
        assert!(loops(&[7u32; 36]));
        // A run that is broken at the end is not a loop yet.
        let mut broken = t.clone();
        broken.push(99);
        assert!(!loops(&broken));
        // Distinct tokens never are.
        assert!(!loops(&(0..300).collect::<Vec<u32>>()));
    }

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
        assert_eq!(best_allowed(&l, &|t| t != 1), Some(3));
        assert_eq!(best_allowed(&l, &|t| t == 0), Some(0));
        assert_eq!(best_allowed(&l, &|_| false), None);
    }

    #[test]
    fn top_ids_are_the_best_finite_logits_in_order() {
        let l = [0.5, 3.0, f32::NAN, 2.0, 2.5, f32::NEG_INFINITY];
        assert_eq!(top_ids(&l, 3), vec![1, 4, 3]);
        assert_eq!(top_ids(&l, 10), vec![1, 4, 3, 0]);
        // Beyond the best few, the whole vocabulary is searched.
        let mut big = vec![0.0f32; 1000];
        big[999] = -1.0;
        assert_eq!(best_allowed(&big, &|t| t == 999), Some(999));
        // The second tier (the best 4,096 by selection) finds what the full search finds
        // (distinct logits: the two break ties differently).
        let wide: Vec<f32> = (0..20_000u32)
            .map(|i| {
                if i % 97 == 0 {
                    f32::NAN
                } else {
                    ((i * 7919) % 20_011) as f32
                }
            })
            .collect();
        for allowed in [
            |t: u32| t % 50 == 3,
            |t: u32| t % 9_000 == 17,
            |t: u32| t > 19_990,
        ] {
            let full = best(&wide, (0..wide.len() as u32).filter(|&t| allowed(t)));
            assert_eq!(best_allowed(&wide, &allowed), full);
        }
        let many = top_ids_many(&wide, 4096);
        assert_eq!(many[..64], top_ids(&wide, 64)[..]);
        assert!(many
            .windows(2)
            .all(|w| wide[w[0] as usize] >= wide[w[1] as usize]));
    }

    #[test]
    fn sampling_is_seeded_and_keeps_to_the_allowed_tokens() {
        let l: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draws = |seed: u64| {
            let mut s = Sampler::new(Sample {
                temperature: 1.0,
                top_k: 10,
                seed,
            });
            (0..40)
                .map(|_| s.draw(&l, &|t| t % 2 == 0).unwrap())
                .collect::<Vec<u32>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(draws(7).iter().all(|t| t % 2 == 0));
        // Only the top_k best allowed tokens are drawn.
        let allowed_best: Vec<u32> = top_ids(&l, 50)
            .into_iter()
            .filter(|t| t % 2 == 0)
            .take(10)
            .collect();
        assert!(draws(9).iter().all(|t| allowed_best.contains(t)));
        let mut s = Sampler::new(Sample {
            temperature: 1.0,
            top_k: 10,
            seed: 1,
        });
        assert_eq!(s.draw(&l, &|_| false), None);
    }
}
