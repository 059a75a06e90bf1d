//! The question-to-rows pipeline: schema context → prompt → model → guard → database.
//!
//! Holds the open database, its schema and the loaded model for one session; the shell, `ask`,
//! the benchmark and the tests all go through [`Pipeline::ask`] and [`Pipeline::run_sql`], so a
//! question is answered the same way everywhere. Never prints.

use std::sync::Arc;
use std::time::Instant;

use crate::cancel::Cancel;
use crate::db::{Database, DbError, Dialect, Limits, Outcome};
use crate::guard::{self, GuardError};
use crate::llm::{prompt, Engine, GenOptions, Generation, LlmError, StopRule};
use crate::schema::{self, Schema};

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
    fn repairable(&self) -> bool {
        match self {
            AskError::NoSql(_) => true,
            // A refusal is policy, not a mistake: a question asking for a write stays refused.
            AskError::Guard { error, .. } => {
                matches!(
                    error,
                    GuardError::Parse(_) | GuardError::Empty | GuardError::UnknownNames(_)
                )
            }
            AskError::Db { error, .. } => matches!(error, DbError::Query(_)),
            AskError::NoModel | AskError::Model(_) => false,
        }
    }

    /// The error without the SQL it is about.
    fn short(&self) -> String {
        match self {
            AskError::Guard { error, .. } => error.to_string(),
            AskError::Db { error, .. } => error.to_string(),
            other => other.to_string(),
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

/// A generated query that failed, and why.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sql: String,
    pub error: String,
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
}

/// Result of running SQL the user typed.
#[derive(Debug, Clone)]
pub struct SqlRun {
    pub sql: String,
    pub outcome: Outcome,
    pub query_secs: f64,
}

pub struct Pipeline {
    db: Box<dyn Database>,
    schema: Schema,
    context: String,
    engine: Option<Engine>,
    pub limits: Limits,
    pub gen: GenOptions,
    /// How many times a failed answer is sent back to the model with its error.
    pub repairs: usize,
    /// Generations the last `ask` took (1 + repairs tried), whether it succeeded or not.
    pub last_generations: usize,
}

impl Pipeline {
    /// Introspects `db` and renders its context; the model can be attached later.
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
            engine,
            limits: Limits::default(),
            gen,
            repairs: 2,
            last_generations: 0,
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

    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    pub fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.engine.as_mut()
    }

    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = Some(engine);
    }

    /// Hands the model back (to reuse it on another database).
    pub fn take_engine(&mut self) -> Option<Engine> {
        self.last_generations = 0;
        self.engine.take()
    }

    /// Re-reads the schema (after DDL elsewhere) and drops the cached prompt prefix.
    pub fn refresh(&mut self) -> Result<(), DbError> {
        self.schema = self.db.introspect()?;
        self.context = schema::render_context(&self.schema, self.db.dialect());
        if let Some(e) = self.engine.as_mut() {
            e.clear_prefix_cache();
        }
        Ok(())
    }

    fn prompt_for(&self, engine: &Engine, question: &str) -> prompt::Prompt {
        prompt::build_prompt(
            engine.template(),
            question,
            &self.context,
            self.dialect(),
            &[],
        )
    }

    /// Runs the schema part of the prompt through the model now, so the first question is fast.
    /// Returns the number of cached tokens.
    pub fn warm_up(&mut self, cancel: &Cancel) -> Result<usize, AskError> {
        let engine = self.engine.as_ref().ok_or(AskError::NoModel)?;
        let p = self.prompt_for(engine, "");
        let engine = self.engine.as_mut().ok_or(AskError::NoModel)?;
        Ok(engine.warm_prefix(&p.prefix, cancel)?)
    }

    /// Answers a plain-English question: generate SQL, check it, run it. When the answer holds
    /// no SQL, the SQL does not parse, or the database rejects it, the model is shown its SQL and
    /// the error and asked again, up to `repairs` times (refusals are final); the last error is
    /// returned if every attempt fails.
    pub fn ask(&mut self, question: &str, cancel: &Cancel) -> Result<Answer, AskError> {
        let t0 = Instant::now();
        let engine = self.engine.as_ref().ok_or(AskError::NoModel)?;
        let template = engine.template();
        let base = self.prompt_for(engine, question);
        let mut prompt = base.clone();
        let mut attempts = Vec::new();
        let mut total = Generation::default();
        self.last_generations = 0;
        loop {
            let engine = self.engine.as_mut().ok_or(AskError::NoModel)?;
            let generation = engine.generate(&prompt, &self.gen, cancel)?;
            self.last_generations += 1;
            total.add(&generation);
            let result = match guard::extract_sql(&generation.text) {
                Some(sql) => self.run_sql(&sql, cancel),
                None => {
                    let said = generation.text.lines().next().unwrap_or("").trim();
                    Err(AskError::NoSql(if said.is_empty() {
                        "nothing".into()
                    } else {
                        said.to_string()
                    }))
                }
            };
            match result {
                Ok(run) => {
                    return Ok(Answer {
                        question: question.to_string(),
                        sql: run.sql,
                        attempts,
                        outcome: run.outcome,
                        generation: total,
                        query_secs: run.query_secs,
                        total_secs: t0.elapsed().as_secs_f64(),
                    })
                }
                Err(e) if attempts.len() < self.repairs && e.repairable() => {
                    let sql = e.sql().unwrap_or_default().to_string();
                    // A model that repeats a failed query will not fix it by being asked again.
                    if attempts.iter().any(|a: &Attempt| a.sql == sql) {
                        return Err(e);
                    }
                    let error = e.short();
                    let hint = self.columns_hint(&sql);
                    let shown = if hint.is_empty() {
                        error.clone()
                    } else {
                        format!("{error}\n{hint}")
                    };
                    prompt =
                        prompt::build_repair_prompt(template, &base, &sql, &shown, self.dialect());
                    attempts.push(Attempt { sql, error });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers `question` with the adapter and with the base model (the adapter is put back
    /// afterwards). `None` when no adapter is applied.
    #[allow(clippy::type_complexity)]
    pub fn compare(
        &mut self,
        question: &str,
        cancel: &Cancel,
    ) -> Option<(Result<Answer, AskError>, Result<Answer, AskError>)> {
        let adapter = self.engine.as_mut()?.adapter().cloned()?;
        let with = self.ask(question, cancel);
        let engine = self.engine.as_mut()?;
        if let Err(e) = engine.set_adapter(None) {
            return Some((with, Err(AskError::Model(e))));
        }
        let base = self.ask(question, cancel);
        let restored = self.engine.as_mut()?.set_adapter(Some(adapter));
        Some(match restored {
            Ok(()) => (with, base),
            Err(e) => (with, Err(AskError::Model(e))),
        })
    }

    /// The real columns of the tables a failed query names, to steer the model's repair.
    fn columns_hint(&self, sql: &str) -> String {
        let words: std::collections::HashSet<String> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let lines: Vec<String> = self
            .schema
            .tables
            .iter()
            .filter(|t| words.contains(&t.name.to_ascii_lowercase()))
            .map(|t| {
                let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                format!("{} has columns: {}", t.name, cols.join(", "))
            })
            .collect();
        lines.join("\n")
    }

    /// Runs SQL through the same guard as generated SQL.
    pub fn run_sql(&mut self, sql: &str, cancel: &Cancel) -> Result<SqlRun, AskError> {
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
        let t = Instant::now();
        let outcome = self
            .db
            .query(&checked.sql, &self.limits, cancel)
            .map_err(|error| AskError::Db {
                sql: checked.sql.clone(),
                error,
            })?;
        Ok(SqlRun {
            sql: checked.sql,
            outcome,
            query_secs: t.elapsed().as_secs_f64(),
        })
    }
}
