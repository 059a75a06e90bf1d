//! Sampled answers judged against the gold result, for learning from execution
//! (`sqlora train --rl`).
//!
//! Owns [`Evaluator::sample_batch`]: the questions of one database are answered `n` times each
//! by sampling ([`Pipeline::sample_answers`](crate::pipeline::Pipeline::sample_answers)), and
//! every answer is judged as `eval` judges one ([`compare::results_match`]), with the share of
//! the gold result's cells it found ([`compare::cell_overlap`]) for one that runs but is
//! wrong, and the reward [`crate::train::rl::reward`] gives each judgement. Also loads Spider
//! train as a question set. Never trains.

use std::path::Path;

use crate::cancel::Cancel;
use crate::db::DbError;
use crate::pipeline::AskError;

use super::{compare, EvalError, Evaluator, Item};

/// Spider's training questions (their databases under `spider/database/`).
pub const SPIDER_TRAIN: &str = "spider/train_spider_min.json";

/// How one sampled answer fared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judged {
    /// It returned the gold result.
    Correct,
    /// It ran and returned something else; `overlap` is [`compare::cell_overlap`] with the gold
    /// result.
    Wrong { overlap: f64 },
    /// The guard refused it, the database failed it, or there was no SQL.
    Failed,
}

impl Judged {
    /// Its reward for `train --rl` ([`crate::train::rl::reward`]).
    pub fn reward(self) -> f32 {
        match self {
            Judged::Correct => crate::train::rl::reward(true, None),
            Judged::Wrong { overlap } => crate::train::rl::reward(false, Some(overlap)),
            Judged::Failed => crate::train::rl::reward(false, None),
        }
    }
}

/// A sampled answer and its judgement.
#[derive(Debug, Clone)]
pub struct JudgedAnswer {
    /// The SQL as the model wrote it (what a training example ends with); `None` when it wrote
    /// none.
    pub written: Option<String>,
    pub judged: Judged,
}

/// One question's prompt and its judged answers.
#[derive(Debug, Clone)]
pub struct JudgedQuestion {
    pub prompt: String,
    pub answers: Vec<JudgedAnswer>,
}

/// Spider's training questions whose database is present, in the file's order; those whose
/// database is missing are skipped.
pub fn load_spider_train(data: &Path) -> Result<Vec<Item>, EvalError> {
    let file = data.join(SPIDER_TRAIN);
    let rows = super::spider_rows(&file, "Spider train", "--data-dir")?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let (Some(q), Some(sql), Some(db)) = (
            row["question"].as_str(),
            row["query"].as_str(),
            row["db_id"].as_str(),
        ) else {
            continue;
        };
        let path = data.join(format!("spider/database/{db}/{db}.sqlite"));
        if !path.is_file() {
            continue;
        }
        items.push(Item {
            index: items.len(),
            question: q.to_string(),
            db: path.to_string_lossy().into_owned(),
            gold: sql.to_string(),
            order_matters: false,
            hardness: None,
            gold_db: None,
        });
    }
    if items.is_empty() {
        return Err(EvalError::Set(format!(
            "{}: no question whose database is under {}",
            file.display(),
            data.join("spider/database").display()
        )));
    }
    Ok(items)
}

impl Evaluator {
    /// Samples `n` answers to each of `items` (which share one database) and judges each
    /// against the item's gold result. Items whose gold SQL fails, or returns more rows than
    /// the gold limit, are left out. Errs only when the model fails or on cancel.
    pub fn sample_batch(
        &mut self,
        items: &[Item],
        n: usize,
        cancel: &Cancel,
    ) -> Result<Vec<JudgedQuestion>, EvalError> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let gold_url = first.gold_db.clone().unwrap_or_else(|| first.db.clone());
        if items
            .iter()
            .any(|i| i.db != first.db || i.gold_db.as_ref().unwrap_or(&i.db) != &gold_url)
        {
            return Err(EvalError::Set(
                "the questions of one sampled batch must share a database".into(),
            ));
        }
        let gold_limits = self.gold_limits.clone();
        let levers = self.levers;
        let open = match self.open(&first.db, &gold_url) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("sqlora: {}: cannot open the database: {e}", first.db);
                return Ok(Vec::new());
            }
        };
        let mut golds = Vec::new();
        for item in items {
            match open.gold.query(&item.gold, &gold_limits, cancel) {
                Ok(g) if !g.truncated => golds.push((item, g)),
                Ok(_) => {}
                Err(DbError::Cancelled) => return Err(EvalError::Cancelled),
                Err(_) => {}
            }
        }
        if golds.is_empty() {
            return Ok(Vec::new());
        }
        let questions: Vec<&str> = golds.iter().map(|(i, _)| i.question.as_str()).collect();
        // The levers (the seed above all) may change between batches on one database.
        open.pipeline.levers = levers;
        let sampled = match open.pipeline.sample_answers(&questions, n, cancel) {
            Ok(s) => s,
            Err(AskError::Model(crate::llm::LlmError::Cancelled)) => {
                return Err(EvalError::Cancelled)
            }
            Err(AskError::Model(e)) => return Err(EvalError::Model(e)),
            // A question that cannot be posed (the selection failed to read the database)
            // fails the batch's questions alike: nothing to learn from them.
            Err(e) => {
                eprintln!("sqlora: {}: {}", first.db, e.one_line());
                return Ok(Vec::new());
            }
        };
        Ok(golds
            .into_iter()
            .zip(sampled)
            .map(|((item, gold), s)| {
                let order = item.order_matters || compare::has_top_level_order_by(&item.gold);
                JudgedQuestion {
                    prompt: s.prompt,
                    answers: s
                        .answers
                        .into_iter()
                        .map(|a| JudgedAnswer {
                            judged: match &a.run {
                                Ok(r)
                                    if compare::results_match(
                                        &gold.rows,
                                        &r.outcome.rows,
                                        order,
                                    ) =>
                                {
                                    Judged::Correct
                                }
                                Ok(r) => Judged::Wrong {
                                    overlap: compare::cell_overlap(&gold.rows, &r.outcome.rows),
                                },
                                Err(_) => Judged::Failed,
                            },
                            written: a.written,
                        })
                        .collect(),
                }
            })
            .collect())
    }
}
