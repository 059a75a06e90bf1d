//! The run step: checked SQL goes to the database, and a generated answer becomes an
//! [`Answer`] or a failure for the repair step.
//!
//! Owns [`Pipeline::run_sql`], the one way any SQL (generated or typed) reaches the database,
//! always through the guard step first. Never builds a prompt.

use std::time::Instant;

use crate::cancel::Cancel;
use crate::llm::Generation;

use super::generate::Open;
use super::{Answer, AskError, Pipeline, Progress, Source, SqlRun};

impl Pipeline {
    /// Checks and runs the SQL of `generation`, the latest answer of `o`. Returns the final
    /// result, or `None` after setting `o.prompt` to a repair prompt when the failure is worth
    /// showing the model (see [`Pipeline::ask`]).
    pub(super) fn answer(
        &mut self,
        o: &mut Open,
        generation: &Generation,
        t0: Instant,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Option<Result<Answer, AskError>> {
        let result = self
            .extracted(generation, o.posed.namespace.as_deref())
            .and_then(|sql| self.run_sql(&sql, cancel));
        match result {
            Ok(run) => Some(Ok(Answer {
                question: o.posed.question.clone(),
                sql: run.sql,
                attempts: std::mem::take(&mut o.attempts),
                outcome: run.outcome,
                generation: o.total.clone(),
                query_secs: run.query_secs,
                total_secs: t0.elapsed().as_secs_f64(),
                tables: o.posed.tables.clone(),
                source: if o.attempts.is_empty() {
                    Source::Greedy
                } else {
                    Source::Repair
                },
                confidence: None,
                greedy_sql: o.greedy_sql.clone(),
                examples: o.posed.examples.clone(),
            })),
            Err(e) => self.repair(o, e, progress),
        }
    }

    /// Runs SQL through the same guard as generated SQL.
    pub fn run_sql(&mut self, sql: &str, cancel: &Cancel) -> Result<SqlRun, AskError> {
        self.run_sql_within(sql, self.limits.timeout, cancel)
    }

    /// [`Pipeline::run_sql`] with the timeout lowered to `timeout` (never raised above the
    /// user's): a sampled candidate gets less time than the answer the user asked for.
    pub(super) fn run_sql_within(
        &mut self,
        sql: &str,
        timeout: std::time::Duration,
        cancel: &Cancel,
    ) -> Result<SqlRun, AskError> {
        let sql = self.guarded(sql)?;
        let limits = crate::db::Limits {
            max_rows: self.limits.max_rows,
            timeout: timeout.min(self.limits.timeout),
        };
        let t = Instant::now();
        let outcome = self
            .db
            .query(&sql, &limits, cancel)
            .map_err(|error| AskError::Db {
                sql: sql.clone(),
                error,
            })?;
        Ok(SqlRun {
            sql,
            outcome,
            query_secs: t.elapsed().as_secs_f64(),
        })
    }
}
