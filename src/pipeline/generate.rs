//! The generate step: the prompts of the questions still open go to the model as one batch.
//!
//! Owns [`Open`], a question on its way through the rounds of [`Pipeline::ask_many`] (its
//! prompt, its failed attempts, what generating cost), and the call into the engine. Never
//! reads the generated text: the check and run steps do.

use crate::cancel::Cancel;
use crate::llm::{prompt, Generation, LlmError};

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
}

impl Open {
    pub(super) fn finish(self, result: Result<Answer, AskError>) -> Asked {
        Asked {
            result,
            tables: self.posed.tables,
            generations: self.generations,
            new_tokens: self.total.new_tokens,
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
    /// One answer for each of `open`, generated as one batch (see
    /// [`crate::llm::Engine::generate_batch`]); `None` without a model.
    pub(super) fn generate(
        &mut self,
        open: &[Open],
        cancel: &Cancel,
    ) -> Option<Result<Vec<Generation>, LlmError>> {
        let prompts: Vec<prompt::Prompt> = open.iter().map(|o| o.prompt.clone()).collect();
        let engine = self.engine.as_mut()?;
        Some(engine.generate_batch(&prompts, &self.gen, cancel))
    }
}
