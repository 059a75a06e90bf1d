//! Sampled answers, for learning from what they return (`sqlora train --rl`).
//!
//! Owns [`Pipeline::sample_answers`]: each question is posed as [`Pipeline::ask`] poses it
//! (context, prompt, mask), `n` answers are sampled for it in one batch with the levers'
//! temperature and seed, and each is checked and run as a candidate is (the guard, the dialect
//! repairs, read-only, row cap, the candidates' shorter timeout; the same SQL runs once).
//! There is no vote and no repair: the caller judges every answer. Never trains and never
//! compares with a gold result.

use std::collections::HashMap;

use crate::cancel::Cancel;
use crate::guard;
use crate::llm::Request;

use super::vote::candidate_timeout;
use super::{AskError, Pipeline, SqlRun};

/// One sampled answer.
#[derive(Debug)]
pub struct Sampled {
    /// The SQL as the model wrote it (before the dialect repairs), when it wrote any.
    pub written: Option<String>,
    /// What checking and running it gave (the error in one line).
    pub run: Result<SqlRun, String>,
}

/// A question's prompt and its sampled answers.
#[derive(Debug)]
pub struct SampledQuestion {
    /// The prompt the model was given, whole (what a training example starts with).
    pub prompt: String,
    pub answers: Vec<Sampled>,
}

impl Pipeline {
    /// `n` sampled answers to each of `questions`, generated as one batch: candidate `k`
    /// (1-based) of a question is drawn as [`super::Levers::sample`] says, so a run repeats
    /// exactly with the same seed. Errs as a whole only when there is no model, a question
    /// cannot be posed, or the generation fails.
    pub fn sample_answers(
        &mut self,
        questions: &[&str],
        n: usize,
        cancel: &Cancel,
    ) -> Result<Vec<SampledQuestion>, AskError> {
        let levers = self.levers_in_use();
        let mut posed = Vec::with_capacity(questions.len());
        for q in questions {
            posed.push(self.pose(q, &[], cancel)?);
        }
        let mut requests = Vec::with_capacity(posed.len() * n);
        for p in &posed {
            for k in 1..=n.max(1) {
                requests.push(Request {
                    prompt: &p.base,
                    mask: p.mask.clone(),
                    sample: Some(levers.sample(&p.question, k)),
                });
            }
        }
        let engine = self.engine.as_deref_mut().ok_or(AskError::NoModel)?;
        let generations = engine
            .generate_requests(&requests, &self.gen, cancel)
            .map_err(AskError::Model)?;
        let mut generations = generations.into_iter();
        let mut out = Vec::with_capacity(posed.len());
        for p in &posed {
            let mut slowest: Option<f64> = None;
            // The same SQL runs once; its outcome is shared.
            let mut seen: HashMap<String, Result<SqlRun, String>> = HashMap::new();
            let mut answers = Vec::with_capacity(n);
            for g in generations.by_ref().take(n.max(1)) {
                let written = guard::extract_sql(&g.text);
                let run = match self.extracted(&g, p.namespace.as_deref()) {
                    Err(e) => Err(e.one_line()),
                    Ok(sql) => match seen.get(&sql) {
                        Some(done) => done.clone(),
                        None => {
                            let t = candidate_timeout(slowest, self.limits.timeout);
                            let run = self.run_sql_within(&sql, t, cancel);
                            if let Err(AskError::Db {
                                error: crate::db::DbError::Cancelled,
                                ..
                            }) = &run
                            {
                                return Err(AskError::Model(crate::llm::LlmError::Cancelled));
                            }
                            if let Ok(r) = &run {
                                slowest = Some(slowest.unwrap_or(0.0).max(r.query_secs));
                            }
                            let run = run.map_err(|e| e.one_line());
                            seen.insert(sql, run.clone());
                            run
                        }
                    },
                };
                answers.push(Sampled { written, run });
            }
            out.push(SampledQuestion {
                prompt: p.base.text(),
                answers,
            });
        }
        Ok(out)
    }
}
