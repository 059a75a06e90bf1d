//! What a question ends in: an [`Answer`] (or a batch's [`Asked`]), the failed [`Attempt`]s
//! before it, the [`Progress`] told on the way, and a [`SqlRun`] of SQL run as typed.
//!
//! Plain data; never computed here.

use crate::llm::Generation;
use crate::sql::Outcome;

use super::AskError;

/// A generated query that failed, and why.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sql: String,
    pub error: String,
}

/// What [`Pipeline::ask_in`](super::Pipeline::ask_in) is doing, for a caller that shows
/// progress (the pipeline itself never prints).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Generation `attempt` of at most `of` (1 + repairs) starts.
    Answering { attempt: usize, of: usize },
    /// An attempt failed and its repair is asked for next.
    Failed { attempt: usize, failed: &'a Attempt },
}

/// One answered question.
#[derive(Debug, Clone)]
pub struct Answer {
    pub question: String,
    pub sql: String,
    /// Earlier attempts that failed and were repaired (empty when the first SQL worked).
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
    pub generation: Generation,
    pub query_secs: f64,
    pub total_secs: f64,
    /// The tables the model was shown, when the schema was too large to show whole.
    pub tables: Vec<String>,
}

/// One question's outcome from [`Pipeline::ask_many`](super::Pipeline::ask_many), with what it
/// cost.
#[derive(Debug)]
pub struct Asked {
    pub result: Result<Answer, AskError>,
    /// The tables the model was shown (empty when it was shown the whole schema).
    pub tables: Vec<String>,
    /// Generations it took (1 + repairs tried).
    pub generations: usize,
    /// Tokens generated over all of them.
    pub new_tokens: usize,
}

/// Result of running SQL the user typed.
#[derive(Debug, Clone)]
pub struct SqlRun {
    pub sql: String,
    pub outcome: Outcome,
    pub query_secs: f64,
}
