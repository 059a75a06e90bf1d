//! Asking about a query instead of for one: the model's explanation of SQL (`\explain`) and
//! the database's plan for it.
//!
//! Owns the explanation's token budget and how it is cut back to a full sentence. The plan is
//! run like any typed SQL, through the guard; never runs SQL another way.

use crate::cancel::Cancel;
use crate::llm::{prompt, GenOptions};
use crate::sql::Dialect;

use super::{AskError, Pipeline, SqlRun};

/// The most tokens an explanation of a query (`\explain`) may take.
pub const EXPLAIN_TOKENS: usize = 160;

impl Pipeline {
    /// The model's explanation of `sql` in a few plain sentences (the question it answered
    /// shown with it when there is one); nothing is run. At most [`EXPLAIN_TOKENS`] tokens,
    /// cut back to the last full sentence.
    pub fn explain(
        &mut self,
        question: Option<&str>,
        sql: &str,
        cancel: &Cancel,
    ) -> Result<String, AskError> {
        let context = self.context_for(question.unwrap_or(sql), cancel)?;
        let engine = self.engine.as_deref_mut().ok_or(AskError::NoModel)?;
        let p = prompt::build_explain_prompt(
            engine.template(),
            question,
            sql,
            &context,
            self.db.dialect(),
        );
        let opts = GenOptions {
            max_new_tokens: EXPLAIN_TOKENS,
            stop_at_fence_close: false,
            stop_when: None,
            mask: None,
        };
        let g = engine
            .generate_requests(&[crate::llm::Request::greedy(&p)], &opts, cancel)?
            .remove(0);
        let text = g.text.trim();
        let text = if g.new_tokens >= EXPLAIN_TOKENS {
            text.rfind(". ").map_or(text, |i| &text[..=i]).trim_end()
        } else {
            text
        };
        Ok(text.to_string())
    }

    /// The database's query plan for `sql` (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN`
    /// elsewhere), run through the same guard as any SQL.
    pub fn plan(&mut self, sql: &str, cancel: &Cancel) -> Result<SqlRun, AskError> {
        let sql = sql.trim().trim_end_matches(';').trim_end();
        let explain = match self.dialect() {
            Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            Dialect::Postgres | Dialect::MySql => format!("EXPLAIN {sql}"),
        };
        self.run_sql(&explain, cancel)
    }
}
