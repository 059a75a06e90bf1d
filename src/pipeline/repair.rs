//! The repair step: a failed answer is shown back to the model with its error.
//!
//! Owns the decision to try again (a repairable failure, repairs left, SQL not already
//! tried, or tried but now made impossible by the mask's FROM rule) and the error and column
//! hint the repair prompt shows. The prompt text itself is
//! written by [`crate::llm::prompt`]; never generates or runs anything.

use crate::llm::prompt;

use super::generate::Open;
use super::{Answer, AskError, Attempt, Pipeline, Progress};

impl Pipeline {
    /// `e` as the final result of `o`, or `None` after setting `o.prompt` to a repair prompt
    /// when the failure is worth showing the model (see [`Pipeline::ask`]).
    pub(super) fn repair(
        &self,
        o: &mut Open,
        e: AskError,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Option<Result<Answer, AskError>> {
        if !(o.attempts.len() < self.repairs && e.repairable()) {
            return Some(Err(e));
        }
        let sql = e.sql().unwrap_or_default().to_string();
        // A model that repeats a failed query will not fix it by being asked again, unless the
        // mask forbids the repeat: a column named before the FROM that the FROM's tables lack
        // (the commonest unknown name left) cannot be written again under the FROM rule, which
        // is otherwise kept for the last round. So a repeated unknown name spends the next
        // round as the last, with the rule on.
        let repeated = o.attempts.iter().any(|a| a.sql == sql);
        let unknown = matches!(
            &e,
            AskError::Guard {
                error: crate::guard::GuardError::UnknownNames(_),
                ..
            }
        );
        if repeated && !(unknown && o.mask.is_some()) {
            return Some(Err(e));
        }
        let error = e.short();
        let hint = self.columns_hint(&sql);
        let shown = if hint.is_empty() {
            error.clone()
        } else {
            format!("{error}\n{hint}")
        };
        let template = self.engine.as_ref()?.template();
        o.prompt =
            prompt::build_repair_prompt(template, &o.posed.base, &sql, &shown, self.dialect());
        if o.mask.is_some() {
            // The round this prompt starts is the last when no repair is left after it (or,
            // after a repeat, made the last: see above).
            let last = repeated || o.attempts.len() + 1 >= self.repairs;
            o.mask = self.mask_for(
                &o.posed.tables,
                o.posed.namespace.as_deref(),
                Some(&sql),
                last,
            );
        }
        o.attempts.push(Attempt { sql, error });
        if let Some(failed) = o.attempts.last() {
            progress(Progress::Failed {
                attempt: o.attempts.len(),
                failed,
            });
        }
        None
    }

    /// The real columns of the tables a failed query names, to steer the model's repair.
    fn columns_hint(&self, sql: &str) -> String {
        let words: std::collections::HashSet<String> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let lines: Vec<String> = self
            .schema
            .tables
            .iter()
            .filter(|t| words.contains(&t.name.to_ascii_lowercase()))
            .map(|t| {
                let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                format!("{} has columns: {}", t.name, cols.join(", "))
            })
            .collect();
        lines.join("\n")
    }
}
