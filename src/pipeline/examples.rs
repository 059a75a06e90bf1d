//! Examples for a question: the confirmed question/SQL pairs of this database (accepted and
//! corrected answers, which the caller reads from the feedback store and hands over with
//! [`Pipeline::set_shots`]) ranked against the question with BM25, the best few within a
//! token budget. The prompt builder shows them after the cached schema prefix, so a pair helps
//! from the next question on and the prefix cache still serves every question.
//!
//! Owns the ranking and the check that a pair still fits the schema (its SQL must pass the
//! guard's name check: a changed schema keeps the pairs whose tables and columns it still has).
//! Never reads or writes the feedback store, never writes prompt text.

use bm25::{Document, Language, SearchEngine, SearchEngineBuilder};

use super::Pipeline;

/// A confirmed question and the SQL that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// The feedback store's id of the answer (shown by `\context`; 0 for pairs not from it).
    pub id: i64,
    pub question: String,
    pub sql: String,
}

/// The shots of one database, indexed for BM25 (the `bm25` crate, English stemming and stop
/// words) over each question's words and the names its SQL uses.
#[derive(Default)]
pub struct Shots {
    shots: Vec<Shot>,
    engine: Option<SearchEngine<usize>>,
}

impl std::fmt::Debug for Shots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shots").field("shots", &self.shots).finish()
    }
}

/// The default number of examples a prompt shows (`--examples`).
pub const DEFAULT_EXAMPLES: usize = 4;

/// Examples' share of the prompt, in (estimated) tokens: beyond it the lowest-ranked are left
/// out.
pub const EXAMPLE_TOKENS: usize = 768;

/// SQL words that are not names.
const SQL_WORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "join",
    "inner",
    "left",
    "right",
    "outer",
    "on",
    "and",
    "or",
    "not",
    "group",
    "by",
    "order",
    "having",
    "limit",
    "as",
    "distinct",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "asc",
    "desc",
    "in",
    "like",
    "between",
    "is",
    "null",
    "union",
    "intersect",
    "except",
    "case",
    "when",
    "then",
    "else",
    "end",
    "with",
    "exists",
    "cast",
    "offset",
    "all",
];

/// The names `sql` uses (tables, columns; split at `_` and case changes), without SQL words,
/// literals or numbers: what makes two questions about the same part of the schema alike.
fn sql_names(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_str = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() && !SQL_WORDS.contains(&word.to_lowercase().as_str()) {
            let mut part = String::new();
            let mut prev_lower = false;
            for c in word.chars() {
                if (c == '_' || (c.is_uppercase() && prev_lower)) && !part.is_empty() {
                    out.push(std::mem::take(&mut part));
                }
                if c != '_' {
                    part.push(c);
                }
                prev_lower = c.is_lowercase();
            }
            if !part.is_empty() {
                out.push(part);
            }
        }
        word.clear();
    };
    for c in sql.chars() {
        if c == '\'' {
            in_str = !in_str;
            word.clear();
            continue;
        }
        if in_str {
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out.into_iter()
        .map(|w| w.to_lowercase())
        // Numbers, and the aliases T1, T2… that say nothing of the schema.
        .filter(|w| {
            let number = w.chars().all(|c| c.is_ascii_digit());
            let alias =
                w.len() >= 2 && w.starts_with('t') && w[1..].chars().all(|c| c.is_ascii_digit());
            !number && !alias
        })
        .collect()
}

impl Shots {
    pub fn new(shots: Vec<Shot>) -> Self {
        let engine = (!shots.is_empty()).then(|| {
            let docs: Vec<Document<usize>> = shots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Document::new(i, format!("{} {}", s.question, sql_names(&s.sql).join(" ")))
                })
                .collect();
            SearchEngineBuilder::<usize>::with_documents(Language::English, docs).build()
        });
        Self { shots, engine }
    }

    pub fn len(&self) -> usize {
        self.shots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shots.is_empty()
    }

    pub fn all(&self) -> &[Shot] {
        &self.shots
    }

    /// Up to `k` shots for `question`, best first, that share at least one word with it and
    /// together stay within `budget` estimated tokens. Equal scores go to the newer pair.
    pub fn top(&self, question: &str, k: usize, budget: usize) -> Vec<&Shot> {
        let Some(engine) = self.engine.as_ref().filter(|_| k > 0) else {
            return Vec::new();
        };
        let mut scored: Vec<(f32, usize)> = engine
            .search(question, None::<usize>)
            .into_iter()
            .filter(|r| r.score > 0.0)
            .map(|r| (r.score, r.document.id))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut out = Vec::new();
        let mut used = 0;
        for (_, i) in scored {
            let s = &self.shots[i];
            let cost = estimate_tokens(&s.question) + estimate_tokens(&s.sql) + 12;
            if used + cost > budget {
                continue;
            }
            used += cost;
            out.push(s);
            if out.len() == k {
                break;
            }
        }
        out
    }
}

/// A token count estimate good enough for a budget (about 3.5 bytes a token for English and
/// SQL in the Qwen tokenizer).
fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3) + 1
}

impl Pipeline {
    /// Gives the pipeline this database's confirmed pairs to draw examples from, keeping only
    /// those whose SQL still passes the guard against the current schema; returns how many
    /// were kept.
    pub fn set_shots(&mut self, shots: Vec<Shot>) -> usize {
        let kept: Vec<Shot> = shots
            .into_iter()
            .filter(|s| self.guarded(&s.sql).is_ok())
            .collect();
        let n = kept.len();
        self.shots = Shots::new(kept);
        n
    }

    pub fn shots(&self) -> &Shots {
        &self.shots
    }

    /// The examples `question` would be shown, best last (nearest the question).
    pub(super) fn examples_for(&self, question: &str) -> Vec<Shot> {
        let mut top: Vec<Shot> = self
            .shots
            .top(question, self.examples, EXAMPLE_TOKENS)
            .into_iter()
            .cloned()
            .collect();
        top.reverse();
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(id: i64, q: &str, sql: &str) -> Shot {
        Shot {
            id,
            question: q.into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn ranks_the_alike_question_first() {
        let s = Shots::new(vec![
            shot(
                1,
                "How many singers are there?",
                "SELECT count(*) FROM singer",
            ),
            shot(
                2,
                "What is the population of Texas?",
                "SELECT population FROM state WHERE state_name = 'texas'",
            ),
            shot(
                3,
                "Which rivers run through Ohio?",
                "SELECT river_name FROM river WHERE traverse = 'ohio'",
            ),
        ]);
        let top = s.top("what is the population of arizona", 2, 1000);
        assert_eq!(top[0].id, 2);
        // Only pairs sharing a word are examples at all.
        assert!(top.iter().all(|t| t.id != 1), "{top:?}");
        let top = s.top("rivers in colorado", 3, 1000);
        assert_eq!(top.first().map(|t| t.id), Some(3));
    }

    #[test]
    fn names_in_the_sql_count_literals_do_not() {
        let s = Shots::new(vec![
            shot(
                1,
                "biggest one",
                "SELECT city_name FROM city ORDER BY population DESC LIMIT 1",
            ),
            shot(
                2,
                "biggest one",
                "SELECT lake_name FROM lake WHERE area > 'city'",
            ),
        ]);
        let top = s.top("biggest city", 1, 1000);
        assert_eq!(top[0].id, 1);
        assert_eq!(
            sql_names("SELECT T1.FirstName FROM Customer_Orders AS T1 WHERE x = 'Paris Hilton'"),
            vec!["first", "name", "customer", "orders", "x"]
        );
    }

    #[test]
    fn keeps_within_k_and_the_budget() {
        let shots: Vec<Shot> = (0..10)
            .map(|i| {
                shot(
                    i,
                    &format!("how many orders in week {i}"),
                    "SELECT count(*) FROM orders",
                )
            })
            .collect();
        let s = Shots::new(shots);
        assert_eq!(s.top("how many orders", 3, 10_000).len(), 3);
        assert_eq!(s.top("how many orders", 3, 0).len(), 0);
        assert_eq!(s.top("how many orders", 0, 10_000).len(), 0);
        let one = estimate_tokens("how many orders in week 1")
            + estimate_tokens("SELECT count(*) FROM orders")
            + 12;
        assert_eq!(s.top("how many orders", 10, 2 * one + 1).len(), 2);
        // Equal scores: the newest pair first.
        assert_eq!(s.top("orders", 1, 10_000)[0].id, 9);
    }

    #[test]
    fn only_pairs_that_fit_the_schema_are_kept_and_the_best_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::db::demo::ensure(dir.path()).unwrap();
        let db = crate::db::open(&path.to_string_lossy()).unwrap();
        let mut p = Pipeline::new(db, None).unwrap();
        let kept = p.set_shots(vec![
            shot(
                1,
                "How many customers are there?",
                "SELECT count(*) FROM customers",
            ),
            shot(2, "Customers by fax", "SELECT fax_number FROM customers"),
            shot(3, "Delete them", "DELETE FROM customers"),
            shot(
                4,
                "How many customers per country?",
                "SELECT country, count(*) FROM customers GROUP BY country",
            ),
        ]);
        assert_eq!(kept, 2, "an unknown column and a write are never examples");
        p.examples = 2;
        let ex = p.examples_for("how many customers are in each country");
        let ids: Vec<i64> = ex.iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [1, 4],
            "the nearest pair sits last, next to the question"
        );
        p.examples = 0;
        assert!(p
            .examples_for("how many customers are in each country")
            .is_empty());
    }
}
