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
    /// Which answer this is: the greedy one, a sampled candidate, or a repair.
    pub source: Source,
    /// How many of the candidates returned this result (with `--candidates` above 1).
    pub confidence: Option<Confidence>,
    /// The greedy answer's SQL, when another answer was chosen over it (it failed, or the
    /// candidates outvoted it).
    pub greedy_sql: Option<String>,
    /// The confirmed pairs shown to the model as examples (best last).
    pub examples: Vec<super::Shot>,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The first, greedy answer.
    Greedy,
    /// A sampled candidate, chosen by the vote.
    Candidate,
    /// An answer to a repair prompt (after every candidate failed).
    Repair,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Greedy => "greedy",
            Source::Candidate => "candidate",
            Source::Repair => "repair",
        }
    }
}

/// How many of the candidates agree with the answer chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confidence {
    /// Candidates whose result is the answer's result.
    pub agree: usize,
    /// Candidates generated.
    pub of: usize,
}

impl Confidence {
    /// At most half of the candidates agree: the answer deserves a second look.
    pub fn is_low(&self) -> bool {
        self.agree * 2 <= self.of
    }
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "confidence {}/{}", self.agree, self.of)
    }
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
    /// Seconds the token mask cost over all of them.
    pub mask_secs: f64,
    /// Feedback ids of the pairs shown as examples.
    pub examples: Vec<i64>,
}

/// Result of running SQL the user typed.
#[derive(Debug, Clone)]
pub struct SqlRun {
    pub sql: String,
    pub outcome: Outcome,
    pub query_secs: f64,
}
