//! The guard step: the SQL of an answer is found, qualified and checked before anything runs.
//!
//! Owns the pipeline's use of [`crate::guard`]: finding the SQL in the model's text, the
//! dialect repairs of generated SQL, qualifying the bare names of a one-namespace selection, the read-only check and the check that every
//! table and column named exists. The rules themselves are the guard's; never runs SQL.

use crate::guard::{self, GuardError};
use crate::llm::Generation;

use super::{AskError, Pipeline};

impl Pipeline {
    /// The SQL of `generation`, qualified for `namespace` (see [`Pipeline::qualified`]); the
    /// first line of what the model said instead when it holds no SQL.
    pub(super) fn extracted(
        &self,
        generation: &Generation,
        namespace: Option<&str>,
    ) -> Result<String, AskError> {
        match guard::extract_sql(&generation.text) {
            Some(sql) => Ok(self.qualified(sql, namespace)),
            None => {
                let said = generation.text.lines().next().unwrap_or("").trim();
                Err(AskError::NoSql(if said.is_empty() {
                    "nothing".into()
                } else {
                    said.to_string()
                }))
            }
        }
    }

    /// Generated SQL with what another dialect would run rewritten for this one (date parts,
    /// names that need quotes: see [`guard::dialect`]) and the bare names of the selection's
    /// one namespace qualified (the model was shown that namespace's tables without it; see
    /// [`guard::qualify`]). SQL a person types is never rewritten.
    fn qualified(&self, sql: String, namespace: Option<&str>) -> String {
        let sql = match guard::dialect::fix(&sql, self.dialect(), &self.schema) {
            Some((fixed, _notes)) => fixed,
            None => sql,
        };
        match namespace {
            Some(ns) => {
                guard::qualify::qualify(&sql, self.dialect(), &self.schema, ns).unwrap_or(sql)
            }
            None => sql,
        }
    }

    /// `sql` as the guard lets it run: one read-only statement naming only tables and columns
    /// that exist.
    pub(super) fn guarded(&self, sql: &str) -> Result<String, AskError> {
        let checked = guard::check(sql, self.dialect()).map_err(|error| AskError::Guard {
            sql: sql.trim().to_string(),
            error,
        })?;
        // Invented tables and columns are caught here, before the database sees anything.
        guard::names::check_names(&checked.statement, &self.schema, self.dialect()).map_err(
            |unknown| AskError::Guard {
                sql: checked.sql.clone(),
                error: GuardError::UnknownNames(unknown),
            },
        )?;
        Ok(checked.sql)
    }
}
