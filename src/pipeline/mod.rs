//! The question-to-rows pipeline: schema context → prompt → model → guard → database.
//!
//! Holds the open database, its schema and the loaded model for one session; the shell, `ask`,
//! the benchmark and the tests all go through [`Pipeline::ask`] and [`Pipeline::run_sql`], so a
//! question is answered the same way everywhere. Only the shell adds a previous turn to a
//! question ([`Pipeline::ask_in`]) or asks for an explanation; progress is told to a callback.
//! Never prints.
//!
//! This file holds the [`Pipeline`] itself, its public API and the loop that takes a batch of
//! questions through the steps, one file a step: `context.rs` (the schema shown for a
//! question), `pose.rs` (its prompt), `generate.rs` (the model), `check.rs` (the guard),
//! `run.rs` (the database) and `repair.rs` (the prompt that shows the model its mistake);
//! `explain.rs` asks the model about a query instead, and `sample.rs` samples several answers
//! to learn from (`train --rl`). What a question ends in is in
//! `answer.rs` and `error.rs`.

mod answer;
mod check;
mod constrain;
mod context;
mod error;
mod examples;
mod explain;
mod generate;
mod pose;
mod repair;
mod run;
mod sample;
mod vote;

use std::sync::Arc;
use std::time::Instant;

use crate::cancel::Cancel;
use crate::db::{Database, DbError, Limits};
use crate::guard;
use crate::llm::{Backend, Engine, GenOptions, Generation, StopRule};
use crate::schema::select::{Selection, Selector};
use crate::schema::{self, Schema};
use crate::sql::Dialect;

pub use answer::{Answer, Asked, Attempt, Confidence, Progress, Source, SqlRun};
pub use constrain::{Levers, SqlMask, CPU_CANDIDATES, GPU_CANDIDATES};
pub use error::{clip, AskError};
pub use examples::{Shot, Shots, DEFAULT_EXAMPLES, EXAMPLE_TOKENS};
pub use explain::EXPLAIN_TOKENS;
use generate::{same_error, Open};
pub use sample::{Sampled, SampledQuestion};

pub use crate::llm::prompt::Turn;

/// The schema being read into the model on another thread ([`Pipeline::start_warm_up`]).
pub struct Warming {
    handle: std::thread::JoinHandle<(Engine, Result<usize, crate::llm::LlmError>)>,
    /// Tokens of the schema prefix.
    pub tokens: Option<usize>,
    /// The adapter the model answers with (for the prompt meanwhile).
    pub adapter: Option<String>,
}

impl Warming {
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

pub struct Pipeline {
    db: Box<dyn Database>,
    schema: Schema,
    context: String,
    /// The model, in this process or on a server.
    engine: Option<Box<dyn Backend>>,
    pub limits: Limits,
    pub gen: GenOptions,
    /// How many times a failed answer is sent back to the model with its error.
    pub repairs: usize,
    /// The schema mask and the sampled candidates.
    pub levers: Levers,
    /// Token budget of the schema context; larger schemas get a per-question table selection.
    pub context_tokens: usize,
    /// Built on first need, for schemas over the budget.
    selector: Option<Selector>,
    /// What the last question was shown, and why (for `\context`).
    pub last_selection: Option<Selection>,
    /// Where the value index of this database is kept between runs.
    pub values_cache: Option<std::path::PathBuf>,
    /// Tokens of the whole schema context, once measured (reset with the schema or model).
    context_size: std::sync::OnceLock<usize>,
    /// Confirmed pairs of this database to draw examples from (see [`Pipeline::set_shots`]).
    shots: Shots,
    /// How many of them a question is shown at most (`--examples`; 0: none).
    pub examples: usize,
    /// The pairs the last question was shown as examples (for `\context`).
    pub last_examples: Vec<Shot>,
}

/// The default schema budget: enough for most single databases, small enough for a small
/// model to read well and prefill fast.
pub const DEFAULT_CONTEXT_TOKENS: usize = 2048;

impl Pipeline {
    /// Introspects `db` and renders its context; the model can be attached later.
    /// (A model elsewhere is attached with [`Pipeline::set_backend`].)
    pub fn new(mut db: Box<dyn Database>, engine: Option<Engine>) -> Result<Self, DbError> {
        let schema = db.introspect()?;
        let context = schema::render_context(&schema, db.dialect());
        let dialect = db.dialect();
        let gen = GenOptions {
            stop_when: Some(StopRule(Arc::new(move |text: &str| {
                guard::answer_complete(text, dialect)
            }))),
            ..GenOptions::default()
        };
        Ok(Self {
            db,
            schema,
            context,
            engine: engine.map(|e| Box::new(e) as Box<dyn Backend>),
            limits: Limits::default(),
            gen,
            repairs: 2,
            levers: Levers::default(),
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            selector: None,
            last_selection: None,
            values_cache: None,
            context_size: std::sync::OnceLock::new(),
            shots: Shots::default(),
            examples: DEFAULT_EXAMPLES,
            last_examples: Vec::new(),
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    pub fn describe_db(&self) -> String {
        self.db.describe()
    }

    /// The in-process model, when answers come from one.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_deref().and_then(|b| b.local())
    }

    pub fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.engine.as_deref_mut().and_then(|b| b.local_mut())
    }

    /// The model answers come from, wherever it runs.
    pub fn backend(&self) -> Option<&dyn Backend> {
        self.engine.as_deref()
    }

    pub fn backend_mut(&mut self) -> Option<&mut (dyn Backend + 'static)> {
        self.engine.as_deref_mut()
    }

    pub fn set_engine(&mut self, engine: Engine) {
        self.set_backend(Box::new(engine));
    }

    pub fn set_backend(&mut self, engine: Box<dyn Backend>) {
        self.engine = Some(engine);
        // Sizes measured without the model's tokenizer were estimates.
        self.context_size = std::sync::OnceLock::new();
        self.selector = None;
    }

    /// Hands the in-process model back (to reuse it on another database); a server is let go.
    pub fn take_engine(&mut self) -> Option<Engine> {
        self.engine.take().and_then(|b| b.into_local())
    }

    /// Hands the model back (to reuse it on another database).
    pub fn take_backend(&mut self) -> Option<Box<dyn Backend>> {
        self.engine.take()
    }

    /// Re-reads the schema (after DDL elsewhere) and drops the cached prompt prefix.
    pub fn refresh(&mut self) -> Result<(), DbError> {
        self.schema = self.db.introspect()?;
        self.context = schema::render_context(&self.schema, self.db.dialect());
        // The value index is read again (and re-cached) on the next question.
        if let Some(f) = self.values_file() {
            let _ = std::fs::remove_file(f);
        }
        self.selector = None;
        self.last_selection = None;
        self.context_size = std::sync::OnceLock::new();
        if let Some(e) = self.engine.as_mut() {
            e.clear_prefix_cache();
        }
        Ok(())
    }

    /// Runs the schema part of the prompt through the model now, so the first question is fast.
    /// Returns the number of cached tokens. A schema over the budget has no fixed part: its
    /// value index and table ranking are prepared instead, and 0 is returned.
    pub fn warm_up(&mut self, cancel: &Cancel) -> Result<usize, AskError> {
        if self.engine.is_none() {
            return Err(AskError::NoModel);
        }
        if self.selects_tables() {
            self.prepare_selection(cancel)?;
            return Ok(0);
        }
        let engine = self.engine.as_deref().ok_or(AskError::NoModel)?;
        let p = self.prompt_for(engine, "", &self.context);
        let engine = self.engine.as_deref_mut().ok_or(AskError::NoModel)?;
        Ok(engine.warm_prefix(&p.prefix, cancel)?)
    }

    /// [`Pipeline::warm_up`] on another thread, for the shell to read the schema while the user
    /// types: the in-process model is handed to the thread and comes back with
    /// [`Pipeline::finish_warm_up`]. `None` (nothing started) without an in-process model or
    /// when the tables are chosen per question.
    pub fn start_warm_up(&mut self, cancel: &Cancel) -> Option<Warming> {
        if self.selects_tables() {
            return None;
        }
        let engine = self.engine.as_deref()?;
        engine.local()?;
        let prefix = self.prompt_for(engine, "", &self.context).prefix;
        let tokens = self.prefix_tokens();
        let adapter = engine.adapter_name();
        let mut engine = self.take_engine()?;
        let cancel = cancel.clone();
        let handle = std::thread::spawn(move || {
            // The model comes back whatever happens, a panic included.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.warm_prefix(&prefix, &cancel)
            }))
            .unwrap_or_else(|_| {
                Err(crate::llm::LlmError::Generation(
                    "the model failed while reading the schema".into(),
                ))
            });
            (engine, r)
        });
        Some(Warming {
            handle,
            tokens,
            adapter,
        })
    }

    /// Takes the model back from a [`Warming`] (waiting for it) and says how it went.
    pub fn finish_warm_up(&mut self, w: Warming) -> Result<usize, AskError> {
        let (engine, result) = w.handle.join().map_err(|_| {
            AskError::Model(crate::llm::LlmError::Generation(
                "the model stopped while reading the schema".into(),
            ))
        })?;
        self.set_engine(engine);
        Ok(result?)
    }

    /// Answers a plain-English question: generate SQL, check it, run it. When the answer holds
    /// no SQL, the SQL does not parse, or the database rejects it, the model is shown its SQL and
    /// the error and asked again, up to `repairs` times (refusals are final); the last error is
    /// returned if every attempt fails.
    pub fn ask(&mut self, question: &str, cancel: &Cancel) -> Result<Answer, AskError> {
        self.ask_in(question, &[], cancel, &mut |_| {})
    }

    /// [`Pipeline::ask`] for a follow-up of `previous` (oldest first; empty: a question of its
    /// own, asked exactly as `ask` asks it), telling `progress` of each attempt as it starts
    /// and of each failure that is repaired. Only the shell asks follow-ups.
    pub fn ask_in(
        &mut self,
        question: &str,
        previous: &[Turn],
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Answer, AskError> {
        let asked = self.ask_many_in(&[question], previous, cancel, progress)?;
        asked.into_iter().next().ok_or(AskError::NoModel)?.result
    }

    /// Tokens of the schema prefix [`Pipeline::warm_up`] would run through the model (`None`
    /// without a model, or when the tables are chosen per question).
    pub fn prefix_tokens(&self) -> Option<usize> {
        if self.selects_tables() {
            return None;
        }
        let engine = self.engine.as_deref()?;
        let p = self.prompt_for(engine, "", &self.context);
        engine
            .tokenizer()
            .encode(&p.prefix)
            .ok()
            .map(|ids| ids.len())
    }

    /// Answers several questions as [`Pipeline::ask`] does each, in rounds: the first answers
    /// of all of them are generated as one batch (see [`Engine::generate_batch`]), checked and
    /// run, then the repairs of those that failed are generated as the next batch, and so on.
    /// Errs as a whole only when there is no model or the first generation fails (cancellation
    /// included); a failure in a later round fails the questions of that round.
    pub fn ask_many(
        &mut self,
        questions: &[&str],
        cancel: &Cancel,
    ) -> Result<Vec<Asked>, AskError> {
        self.ask_many_in(questions, &[], cancel, &mut |_| {})
    }

    /// [`Pipeline::ask_many`], every question a follow-up of `previous` (see
    /// [`Pipeline::ask_in`]).
    fn ask_many_in(
        &mut self,
        questions: &[&str],
        previous: &[Turn],
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Vec<Asked>, AskError> {
        let t0 = Instant::now();
        if self.engine.is_none() {
            return Err(AskError::NoModel);
        }
        let mut open: Vec<Open> = Vec::with_capacity(questions.len());
        for q in questions {
            let posed = self.pose(q, previous, cancel)?;
            open.push(Open {
                mask: posed.mask.clone(),
                prompt: posed.base.clone(),
                posed,
                attempts: Vec::new(),
                total: Generation::default(),
                generations: 0,
                greedy_sql: None,
            });
        }
        let mut done: Vec<Option<Asked>> = (0..open.len()).map(|_| None).collect();
        // `active[k]` is the question `open[k]` answers.
        let mut active: Vec<usize> = (0..open.len()).collect();
        let mut first = true;
        let mut round = 0;
        while !active.is_empty() {
            round += 1;
            progress(Progress::Answering {
                attempt: round,
                of: self.repairs + 1,
            });
            let generations = match self.generate(&open, cancel).ok_or(AskError::NoModel)? {
                Ok(g) => g,
                Err(e) if first => return Err(AskError::Model(e)),
                Err(e) => {
                    for (o, i) in open.drain(..).zip(active.drain(..)) {
                        done[i] = Some(o.finish(Err(AskError::Model(same_error(&e)))));
                    }
                    break;
                }
            };
            first = false;
            let mut next = Vec::new();
            let mut next_active = Vec::new();
            for ((mut o, i), generations) in open.drain(..).zip(active.drain(..)).zip(generations) {
                o.generations += 1;
                for g in &generations {
                    o.total.add(g);
                }
                let result = match generations.as_slice() {
                    [one] => self.answer(&mut o, one, t0, cancel, progress),
                    many => self.vote(&mut o, many, t0, cancel, progress),
                };
                match result {
                    Some(result) => done[i] = Some(o.finish(result)),
                    None => {
                        next.push(o);
                        next_active.push(i);
                    }
                }
            }
            open = next;
            active = next_active;
        }
        Ok(done
            .into_iter()
            .map(|a| a.expect("every question is finished"))
            .collect())
    }

    /// Answers `question` with the adapter and with the base model (the adapter is put back
    /// afterwards). `None` when no adapter is applied.
    #[allow(clippy::type_complexity)]
    pub fn compare(
        &mut self,
        question: &str,
        cancel: &Cancel,
    ) -> Option<(Result<Answer, AskError>, Result<Answer, AskError>)> {
        self.engine.as_ref()?.adapter_name()?;
        let with = self.ask(question, cancel);
        match self.engine.as_mut()?.use_adapter(false) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some((with, Err(AskError::Model(e)))),
        }
        let base = self.ask(question, cancel);
        let restored = self.engine.as_mut()?.use_adapter(true);
        Some(match restored {
            Ok(_) => (with, base),
            Err(e) => (with, Err(AskError::Model(e))),
        })
    }
}
