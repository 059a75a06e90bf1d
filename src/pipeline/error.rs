//! What a question can fail with: [`AskError`], and how an error is shown on one line.
//!
//! Owns the error type of every step and the rules the repair step reads (which failures are
//! worth showing the model, and the error without its SQL). Never decides what to do next.

use crate::db::DbError;
use crate::guard::GuardError;
use crate::llm::LlmError;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no model loaded")]
    NoModel,
    #[error(transparent)]
    Model(#[from] LlmError),
    #[error("the model gave no SQL (it said: {0})")]
    NoSql(String),
    #[error("{error}\n  SQL: {sql}")]
    Guard { sql: String, error: GuardError },
    #[error("{error}\n  SQL: {sql}")]
    Db { sql: String, error: DbError },
}

impl AskError {
    /// Whether showing the model its mistake may help (not for cancellation or a dead model).
    pub(super) fn repairable(&self) -> bool {
        match self {
            AskError::NoSql(_) => true,
            // A refusal is policy, not a mistake: a question asking for a write stays refused.
            AskError::Guard { error, .. } => {
                matches!(
                    error,
                    GuardError::Parse(_)
                        | GuardError::Empty
                        | GuardError::UnknownNames(_)
                        // A function that is not allowed may have an allowed equivalent.
                        | GuardError::Function { .. }
                )
            }
            AskError::Db { error, .. } => matches!(error, DbError::Query(_)),
            AskError::NoModel | AskError::Model(_) => false,
        }
    }

    /// The error without the SQL it is about.
    pub(super) fn short(&self) -> String {
        match self {
            AskError::Guard { error, .. } => error.to_string(),
            AskError::Db { error, .. } => error.to_string(),
            other => other.to_string(),
        }
    }

    /// The error on one line: `why — SQL: the SQL`, its lines joined with spaces (for
    /// `ask`, scripts and logs; the shell shows the SQL on its own line).
    pub fn one_line(&self) -> String {
        let fold = |s: &str| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self.sql() {
            Some(sql) => format!("{} — SQL: {}", fold(&self.short()), clip(&fold(sql))),
            None => fold(&self.to_string()),
        }
    }

    /// The SQL involved, when there was one.
    pub fn sql(&self) -> Option<&str> {
        match self {
            AskError::Guard { sql, .. } | AskError::Db { sql, .. } => Some(sql),
            _ => None,
        }
    }
}

/// At most [`SHOWN_SQL`] characters of `sql` for an error line, saying how much was left out.
pub fn clip(sql: &str) -> String {
    match sql.char_indices().nth(SHOWN_SQL) {
        None => sql.to_string(),
        Some((at, _)) => format!(
            "{}… ({} more characters)",
            &sql[..at],
            sql[at..].chars().count()
        ),
    }
}

/// How much of a statement an error line quotes.
const SHOWN_SQL: usize = 500;
