//! The prompt step: a question, with the schema context chosen for it, becomes a prompt.
//!
//! Owns [`Posed`] (the question, the tables shown and the prompt first asked) and the choice
//! between a plain prompt and a follow-up's. The prompt text itself is written by
//! [`crate::llm::prompt`]; never generates.

use crate::cancel::Cancel;
use crate::llm::{prompt, Backend};

use super::{AskError, Pipeline, Turn};

/// A question with the prompt built for it.
pub(super) struct Posed {
    pub(super) question: String,
    pub(super) tables: Vec<String>,
    pub(super) namespace: Option<String>,
    pub(super) base: prompt::Prompt,
    /// What the model may write of names (see [`Pipeline::mask_for`]).
    pub(super) mask: Option<crate::llm::TokenMask>,
    /// The confirmed pairs shown as examples (see [`Pipeline::set_shots`]).
    pub(super) examples: Vec<super::Shot>,
}

impl Pipeline {
    /// The context and prompt for `question` (with the table selection when the schema is over
    /// the budget).
    pub(super) fn pose(
        &mut self,
        question: &str,
        previous: &[Turn],
        cancel: &Cancel,
    ) -> Result<Posed, AskError> {
        if self.engine.is_none() {
            return Err(AskError::NoModel);
        }
        // A follow-up's tables are those of the whole conversation.
        let context = if previous.is_empty() {
            self.context_for(question, cancel)?
        } else {
            let mut all: Vec<&str> = previous.iter().map(|t| t.question.as_str()).collect();
            all.push(question);
            self.context_for(&all.join("\n"), cancel)?
        };
        let selection = self.last_selection.as_ref();
        let tables: Vec<String> = selection
            .map(|s| s.tables.iter().map(|c| c.table.clone()).collect())
            .unwrap_or_default();
        let namespace = selection.and_then(|s| s.namespace.clone());
        let mask = self.mask_for(&tables, namespace.as_deref(), None, self.repairs == 0);
        let examples = self.examples_for(question);
        self.last_examples = examples.clone();
        let shown: Vec<prompt::Example> = examples
            .iter()
            .map(|s| prompt::Example {
                question: s.question.clone(),
                sql: s.sql.clone(),
            })
            .collect();
        let engine = self.engine.as_deref().ok_or(AskError::NoModel)?;
        Ok(Posed {
            mask,
            question: question.to_string(),
            base: prompt::build_followup_prompt(
                engine.template(),
                question,
                &context,
                self.dialect(),
                &shown,
                previous,
            ),
            tables,
            namespace,
            examples,
        })
    }

    pub(super) fn prompt_for(
        &self,
        engine: &dyn Backend,
        question: &str,
        context: &str,
    ) -> prompt::Prompt {
        prompt::build_prompt(engine.template(), question, context, self.dialect(), &[])
    }
}
