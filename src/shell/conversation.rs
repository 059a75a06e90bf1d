//! Conversation in the shell: which question is a follow-up of the last answers (and is asked
//! with them in its prompt), `\new` to start over, and `\explain` of the last SQL — in plain
//! sentences by the model, or the database's query plan (`\explain plan`).
//!
//! Holds only this shell session's turns, in memory. Never prints results itself (the shell
//! renders them), never writes feedback, and runs no SQL but the plan, through the pipeline's
//! guard. `ask` and `eval` never come here: their prompt is the single-question one.

use super::progress::Spinner;
use super::Shell;
use crate::pipeline::{Answer, AskError, Turn};

/// Turns kept as context: the conversation's first question and the latest ones.
const MAX_TURNS: usize = 4;

/// The answered questions a follow-up builds on, and the last SQL shown.
#[derive(Debug, Default)]
pub struct Conversation {
    /// The answered question that started this conversation and its follow-ups, oldest first.
    turns: Vec<Turn>,
    /// The last SQL that ran, with the question it answered (`None`: typed SQL).
    last_sql: Option<(Option<String>, String)>,
}

impl Conversation {
    /// The turns `question` is asked with: all of them for a follow-up ([`is_follow_up`]),
    /// none for a question of its own.
    pub fn previous_for(&self, question: &str) -> &[Turn] {
        if is_follow_up(question) {
            &self.turns
        } else {
            &[]
        }
    }

    /// Records how `question`, asked with `previous` turns, went. An answered question of its
    /// own starts a new conversation; an answered follow-up extends it; a failed question of
    /// its own ends it (a failed follow-up leaves it to be asked again).
    pub fn record(&mut self, question: &str, followed: bool, result: &Result<Answer, AskError>) {
        match result {
            Ok(a) => {
                if !followed {
                    self.turns.clear();
                }
                self.turns.push(Turn {
                    question: question.trim().to_string(),
                    sql: a.sql.clone(),
                });
                if self.turns.len() > MAX_TURNS {
                    // The first question says what the conversation is about: it stays.
                    self.turns.remove(1);
                }
                self.last_sql = Some((Some(question.trim().to_string()), a.sql.clone()));
            }
            Err(_) if !followed => self.turns.clear(),
            Err(_) => {}
        }
    }

    /// SQL the user ran: what `\explain` explains next. Not a turn (it has no question).
    pub fn ran_sql(&mut self, sql: &str) {
        self.last_sql = Some((None, sql.to_string()));
    }

    /// The last answer was corrected (`\fix`): its turn and `\explain` use the correction.
    pub fn corrected(&mut self, sql: &str) {
        if let Some(t) = self.turns.last_mut() {
            t.sql = sql.to_string();
        }
        if let Some((_, s)) = self.last_sql.as_mut() {
            *s = sql.to_string();
        }
    }

    /// Forgets the turns (`\new`); `\explain` still has the last SQL.
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }
}

/// Words that open a follow-up: "and only those in Canada?", "what about 2023?".
const OPENERS: &[&str] = &[
    "and",
    "but",
    "only",
    "just",
    "now",
    "also",
    "then",
    "instead",
    "same",
    "plus",
    "except",
    "excluding",
    "what about",
    "how about",
    "what if",
    "show only",
    "list only",
    "of those",
    "of them",
    "of these",
    "among those",
    "among them",
    "among these",
];

/// Words that point back at the previous answer when they come early in a question ("how
/// many of them?", "sort those by name"). Later in a question they usually point within it
/// ("the products and the suppliers who make them").
const POINTERS: &[&str] = &["those", "these", "them", "they", "their", "ones"];

/// Words after `of those` that make it point within the question (`of those who…`).
const RELATIVES: &[&str] = &["who", "which", "that", "whose", "whom", "where", "with"];

/// Phrases that name the previous answer anywhere in a question.
const BACK_REFERENCES: &[&str] = &[
    "previous",
    "the above",
    "that query",
    "this query",
    "same query",
    "the result",
    "these results",
    "those results",
];

/// Whether `question` continues the previous one rather than standing alone: it opens with a
/// follow-up word (`and`, `only`, `what about`…), has `those`/`them`/`they`… among its first
/// three words or `of them`/`of those` anywhere (not `of those who…`), or names the previous
/// answer. A question of its own is then asked exactly as
/// `sqlora ask` asks it, so a small model is not distracted by an unrelated earlier query;
/// `\new` forgets the earlier ones for a follow-up-looking question that is not one.
pub fn is_follow_up(question: &str) -> bool {
    let lower = question.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let opening = words.join(" ");
    let starts = |phrase: &str| {
        opening == phrase
            || opening
                .strip_prefix(phrase)
                .is_some_and(|rest| rest.starts_with(' '))
    };
    // "how many of them", but not "the names of those who…", which says who they are.
    let of_pointer = words.windows(2).enumerate().any(|(i, w)| {
        w[0] == "of"
            && ["them", "those", "these"].contains(&w[1])
            && !words
                .get(i + 2)
                .is_some_and(|next| RELATIVES.contains(next))
    });
    OPENERS.iter().any(|o| starts(o))
        || words.iter().take(3).any(|w| POINTERS.contains(w))
        || of_pointer
        || BACK_REFERENCES.iter().any(|b| {
            opening == *b
                || opening.starts_with(&format!("{b} "))
                || opening.ends_with(&format!(" {b}"))
                || opening.contains(&format!(" {b} "))
        })
}

impl Shell {
    /// `\new`: the next question starts a conversation of its own.
    pub fn new_conversation(&mut self) {
        let n = self.conversation.turns().len();
        self.conversation.reset();
        eprintln!(
            "new conversation{}",
            match n {
                0 => String::new(),
                1 => " (1 earlier question forgotten)".into(),
                n => format!(" ({n} earlier questions forgotten)"),
            }
        );
    }

    /// `\explain [plan]`: the last SQL in plain sentences, or the database's plan for it.
    pub fn explain(&mut self, arg: &str) {
        let Some((question, sql)) = self.conversation.last_sql.clone() else {
            eprintln!("sqlora: no SQL to explain yet (ask a question or run SQL first)");
            return;
        };
        match arg.trim().to_ascii_lowercase().as_str() {
            "plan" => match self.pipeline.plan(&sql, &self.cancel) {
                Ok(r) => {
                    println!("{}", self.paint("36", &r.sql));
                    self.print_outcome(r.outcome, r.query_secs);
                }
                Err(e) => self.report(&e),
            },
            "" => {
                if let Some(e) = &self.model_error {
                    eprintln!("sqlora: no model ({e}); \\explain plan shows the query plan");
                    return;
                }
                let spinner = Spinner::start("explaining");
                let result = self
                    .pipeline
                    .explain(question.as_deref(), &sql, &self.cancel);
                drop(spinner);
                match result {
                    Ok(text) if text.trim().is_empty() => {
                        eprintln!("sqlora: the model gave no explanation")
                    }
                    Ok(text) => println!("{text}"),
                    Err(AskError::Model(crate::llm::LlmError::Cancelled)) => {
                        eprintln!("cancelled")
                    }
                    Err(e) => self.report(&e),
                }
            }
            other => eprintln!("sqlora: \\explain takes nothing or `plan`, not `{other}`"),
        }
        self.cancel.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_are_told_from_questions_of_their_own() {
        for q in [
            "and only those in Canada?",
            "And in 2023?",
            "only the discontinued ones",
            "what about Germany?",
            "How about last year?",
            "how many of them are there?",
            "sort them by name",
            "Which of those were shipped?",
            "just the top 3",
            "now group by country",
            "what are their emails?",
            "show the previous result by month",
            "same for suppliers",
        ] {
            assert!(is_follow_up(q), "{q}");
        }
        for q in [
            "How many customers are there?",
            "Which customer country has the most orders?",
            "List the 5 most expensive products",
            "Show the names of products and the suppliers who make them",
            "What is the average unit price of products in each category?",
            "Android phones sold",
            "Find customers that signed up in 2024",
            "What are the names of those who bought tea?",
            "andorra customers",
            "",
        ] {
            assert!(!is_follow_up(q), "{q}");
        }
    }

    fn answer(sql: &str) -> Result<Answer, AskError> {
        Ok(Answer {
            question: String::new(),
            sql: sql.into(),
            attempts: Vec::new(),
            outcome: crate::sql::Outcome {
                columns: Vec::new(),
                rows: Vec::new(),
                truncated: false,
            },
            generation: Default::default(),
            query_secs: 0.0,
            total_secs: 0.0,
            tables: Vec::new(),
            source: crate::pipeline::Source::Greedy,
            confidence: None,
            greedy_sql: None,
            examples: Vec::new(),
        })
    }

    #[test]
    fn turns_follow_the_conversation() {
        let mut c = Conversation::default();
        assert!(c.previous_for("and only those in Canada?").is_empty());
        c.record("List customers", false, &answer("SELECT * FROM customers"));
        assert!(c.previous_for("How many orders are there?").is_empty());
        let prev = c.previous_for("and only those in Canada?");
        assert_eq!(prev.len(), 1);
        assert_eq!(prev[0].sql, "SELECT * FROM customers");
        c.record("and only those in Canada?", true, &answer("SELECT 2"));
        assert_eq!(c.turns().len(), 2);
        // A failed follow-up keeps the conversation; a failed new question ends it.
        c.record("and them?", true, &Err(AskError::NoModel));
        assert_eq!(c.turns().len(), 2);
        c.corrected("SELECT 3");
        assert_eq!(c.turns()[1].sql, "SELECT 3");
        for i in 0..5 {
            c.record("and more", true, &answer(&format!("SELECT {i}")));
        }
        assert_eq!(c.turns().len(), MAX_TURNS);
        assert_eq!(c.turns()[0].question, "List customers");
        assert_eq!(c.turns()[MAX_TURNS - 1].sql, "SELECT 4");
        c.record("Who sells tea?", false, &Err(AskError::NoModel));
        assert!(c.turns().is_empty());
        c.record("List customers", false, &answer("SELECT 1"));
        c.reset();
        assert!(c.previous_for("and then?").is_empty());
        assert_eq!(c.last_sql.as_ref().map(|s| s.1.as_str()), Some("SELECT 1"));
        c.ran_sql("SELECT 9");
        assert_eq!(c.last_sql, Some((None, "SELECT 9".into())));
    }
}
