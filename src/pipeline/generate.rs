//! The generate step: the prompts of the questions still open go to the model as one batch.
//!
//! Owns [`Open`], a question on its way through the rounds of [`Pipeline::ask_many`] (its
//! prompt, its failed attempts, what generating cost), and the call into the engine. Never
//! reads the generated text: the check and run steps do.

use crate::cancel::Cancel;
use crate::llm::{prompt, Generation, LlmError, Request};

use super::pose::Posed;
use super::{Answer, AskError, Asked, Attempt, Pipeline};

/// A question of [`Pipeline::ask_many`] still being answered.
pub(super) struct Open {
    pub(super) posed: Posed,
    /// What the model is asked next: the question, or a repair.
    pub(super) prompt: prompt::Prompt,
    pub(super) attempts: Vec<Attempt>,
    pub(super) total: Generation,
    pub(super) generations: usize,
    /// The greedy answer's SQL, once another answer is tried instead of it.
    pub(super) greedy_sql: Option<String>,
    /// The mask of the next generation: the question's, or for a repair one that knows the
    /// failed answer's aliases.
    pub(super) mask: Option<crate::llm::TokenMask>,
}

impl Open {
    pub(super) fn finish(self, result: Result<Answer, AskError>) -> Asked {
        Asked {
            result,
            tables: self.posed.tables,
            generations: self.generations,
            new_tokens: self.total.new_tokens,
            mask_secs: self.total.mask_secs,
            examples: self.posed.examples.iter().map(|s| s.id).collect(),
        }
    }
}

/// `e` again, for each question of a batch it failed (a cancellation stays one).
pub(super) fn same_error(e: &LlmError) -> LlmError {
    match e {
        LlmError::Cancelled => LlmError::Cancelled,
        other => LlmError::Generation(other.to_string()),
    }
}

impl Pipeline {
    /// The answers for each of `open`, generated as one batch (see
    /// [`crate::llm::Engine::generate_requests`]): a question's first round has the greedy
    /// answer and its sampled candidates, a repair only the greedy answer. `None` without a
    /// model.
    pub(super) fn generate(
        &mut self,
        open: &[Open],
        cancel: &Cancel,
    ) -> Option<Result<Vec<Vec<Generation>>, LlmError>> {
        let levers = self.levers_in_use();
        let mut requests = Vec::new();
        let mut owner = Vec::new();
        for (k, o) in open.iter().enumerate() {
            let n = if o.generations == 0 {
                levers.candidates.max(1)
            } else {
                1
            };
            for c in 0..n {
                requests.push(Request {
                    prompt: &o.prompt,
                    mask: o.mask.clone(),
                    sample: (c > 0).then(|| levers.sample(&o.posed.question, c)),
                });
                owner.push(k);
            }
        }
        let engine = self.engine.as_deref_mut()?;
        Some(
            engine
                .generate_requests(&requests, &self.gen, cancel)
                .map(|generations| {
                    let mut out: Vec<Vec<Generation>> = vec![Vec::new(); open.len()];
                    for (k, g) in owner.into_iter().zip(generations) {
                        out[k].push(g);
                    }
                    out
                }),
        )
    }
}
