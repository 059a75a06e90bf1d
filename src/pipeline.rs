//! The question-to-rows pipeline: schema context → prompt → model → guard → database.
//!
//! Holds the open database, its schema and the loaded model for one session; the shell, `ask`,
//! the benchmark and the tests all go through [`Pipeline::ask`] and [`Pipeline::run_sql`], so a
//! question is answered the same way everywhere. Only the shell adds a previous turn to a
//! question ([`Pipeline::ask_in`]) or asks for an explanation; progress is told to a callback.
//! Never prints.

use std::sync::Arc;
use std::time::Instant;

use crate::cancel::Cancel;
use crate::db::{Database, DbError, Limits};

use crate::guard::{self, GuardError};
use crate::llm::{prompt, Engine, GenOptions, Generation, LlmError, StopRule};
use crate::schema::select::{self, ColumnValues, Selection, Selector, ValueIndex};
use crate::schema::{self, Schema};
use crate::sql::{Dialect, Outcome};

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
    fn short(&self) -> String {
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

/// A generated query that failed, and why.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sql: String,
    pub error: String,
}

/// What [`Pipeline::ask_in`] is doing, for a caller that shows progress (the pipeline itself
/// never prints).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Generation `attempt` of at most `of` (1 + repairs) starts.
    Answering { attempt: usize, of: usize },
    /// An attempt failed and its repair is asked for next.
    Failed { attempt: usize, failed: &'a Attempt },
}

pub use crate::llm::prompt::Turn;

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

/// One question's outcome from [`Pipeline::ask_many`], with what it cost.
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

/// A question with the prompt built for it.
struct Posed {
    question: String,
    tables: Vec<String>,
    namespace: Option<String>,
    base: prompt::Prompt,
}

/// A question of [`Pipeline::ask_many`] still being answered.
struct Open {
    posed: Posed,
    /// What the model is asked next: the question, or a repair.
    prompt: prompt::Prompt,
    attempts: Vec<Attempt>,
    total: Generation,
    generations: usize,
}

impl Open {
    fn finish(self, result: Result<Answer, AskError>) -> Asked {
        Asked {
            result,
            tables: self.posed.tables,
            generations: self.generations,
            new_tokens: self.total.new_tokens,
        }
    }
}

/// `e` again, for each question of a batch it failed (a cancellation stays one).
fn same_error(e: &LlmError) -> LlmError {
    match e {
        LlmError::Cancelled => LlmError::Cancelled,
        other => LlmError::Generation(other.to_string()),
    }
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
}

/// The default schema budget: enough for most single databases, small enough for a small
/// model to read well and prefill fast.
pub const DEFAULT_CONTEXT_TOKENS: usize = 2048;

/// The most tokens an explanation of a query (`\explain`) may take.
pub const EXPLAIN_TOKENS: usize = 160;

/// Distinct values read per text column, and rows scanned per column to find them.
const VALUES_PER_COLUMN: usize = 1000;
const ROWS_SCANNED: usize = 20_000;

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
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            selector: None,
            last_selection: None,
            values_cache: None,
            context_size: std::sync::OnceLock::new(),
        })
    }

    /// Tokens of `text` by the model's tokenizer, or an estimate (≈3.5 bytes a token) without
    /// a model.
    fn count_tokens(&self, text: &str) -> usize {
        match self.engine.as_ref().map(|e| e.tokenizer().encode(text)) {
            Some(Ok(ids)) => ids.len(),
            _ => text.len() * 2 / 7,
        }
    }

    /// Whether questions get a table selection (the whole schema is over the budget).
    pub fn selects_tables(&self) -> bool {
        if self.context.len() * 2 / 7 <= self.context_tokens {
            return false;
        }
        // Tokenizing a large schema costs milliseconds per kilobyte: once per schema and model.
        let n = *self
            .context_size
            .get_or_init(|| self.count_tokens(&self.context));
        n > self.context_tokens
    }

    /// Reads (or loads from the cache) the value index and prepares the table ranking.
    pub fn prepare_selection(&mut self, cancel: &Cancel) -> Result<(), AskError> {
        if self.selector.is_some() {
            return Ok(());
        }
        let columns = match self.load_values() {
            Some(c) => c,
            None => {
                let c = self.read_values(cancel);
                self.save_values(&c);
                c
            }
        };
        let index = ValueIndex::new(&columns);
        let dialect = self.dialect();
        let counter = |t: &str| self.count_tokens(t);
        // The chosen tables are shown with example values even where introspection had none.
        let schema = select::with_samples(&self.schema, &columns);
        let selector = Selector::new(&schema, dialect, index, &counter);
        self.selector = Some(selector);
        Ok(())
    }

    /// Distinct values of the text columns, bounded per column; a column that fails to read
    /// (permissions, a timeout) is skipped.
    fn read_values(&mut self, cancel: &Cancel) -> Vec<ColumnValues> {
        let dialect = self.dialect();
        let limits = Limits {
            max_rows: VALUES_PER_COLUMN,
            timeout: std::time::Duration::from_secs(5),
        };
        let mut out = Vec::new();
        for (i, t) in self.schema.tables.iter().enumerate() {
            for c in t
                .columns
                .iter()
                .filter(|c| is_text(&c.data_type, !c.enum_values.is_empty()))
            {
                if cancel.is_set() {
                    return out;
                }
                if !c.enum_values.is_empty() {
                    out.push(ColumnValues {
                        table: i,
                        column: format!("{}.{}", t.name, c.name),
                        values: c.enum_values.clone(),
                    });
                    continue;
                }
                let col = schema::ident(&c.name, dialect);
                let sql = format!(
                    "SELECT DISTINCT {col} FROM (SELECT {col} FROM {} WHERE {col} IS NOT NULL \
                     LIMIT {ROWS_SCANNED}) AS s LIMIT {VALUES_PER_COLUMN}",
                    t.qualified_name(dialect)
                );
                if let Ok(o) = self.db.query(&sql, &limits, cancel) {
                    let values = o
                        .rows
                        .iter()
                        .filter_map(|r| r.first())
                        .map(|v| v.display())
                        .filter(|v| v.chars().count() <= 80)
                        .collect();
                    out.push(ColumnValues {
                        table: i,
                        column: format!("{}.{}", t.name, c.name),
                        values,
                    });
                }
            }
        }
        out
    }

    fn values_file(&self) -> Option<std::path::PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = self.values_cache.as_ref()?;
        let h = Sha256::new()
            .chain_update(self.db.describe())
            .chain_update([0u8])
            .chain_update(&self.context)
            .finalize();
        let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}.json")))
    }

    fn load_values(&self) -> Option<Vec<ColumnValues>> {
        let text = std::fs::read_to_string(self.values_file()?).ok()?;
        let cols: Vec<ColumnValues> = serde_json::from_str(&text).ok()?;
        cols.iter()
            .all(|c| c.table < self.schema.tables.len())
            .then_some(cols)
    }

    /// Best effort: without the cache the index is only read again next time.
    fn save_values(&self, cols: &[ColumnValues]) {
        let (Some(file), Some(dir)) = (self.values_file(), self.values_cache.as_ref()) else {
            return;
        };
        if std::fs::create_dir_all(dir).is_ok() {
            if let Ok(text) = serde_json::to_string(cols) {
                let tmp = file.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(tmp, file);
                }
            }
        }
    }

    /// The context for `question`: the whole schema when it fits the budget, else the tables
    /// chosen for it.
    pub fn context_for(&mut self, question: &str, cancel: &Cancel) -> Result<String, AskError> {
        if !self.selects_tables() {
            self.last_selection = None;
            return Ok(self.context.clone());
        }
        self.prepare_selection(cancel)?;
        let selection = self
            .selector
            .as_ref()
            .map(|s| s.select(question, self.context_tokens));
        let context = selection
            .as_ref()
            .map_or_else(|| self.context.clone(), |s| s.context.clone());
        self.last_selection = selection;
        Ok(context)
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
        // Sizes measured without the model's tokenizer were estimates.
        self.context_size = std::sync::OnceLock::new();
        self.selector = None;
    }

    /// Hands the model back (to reuse it on another database).
    pub fn take_engine(&mut self) -> Option<Engine> {
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

    fn prompt_for(&self, engine: &Engine, question: &str, context: &str) -> prompt::Prompt {
        prompt::build_prompt(engine.template(), question, context, self.dialect(), &[])
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
        let engine = self.engine.as_ref().ok_or(AskError::NoModel)?;
        let p = self.prompt_for(engine, "", &self.context);
        let engine = self.engine.as_mut().ok_or(AskError::NoModel)?;
        Ok(engine.warm_prefix(&p.prefix, cancel)?)
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
        let engine = self.engine.as_ref()?;
        let p = self.prompt_for(engine, "", &self.context);
        engine
            .tokenizer()
            .encode(&p.prefix)
            .ok()
            .map(|ids| ids.len())
    }

    /// The model's explanation of `sql` in a few plain sentences (the question it answered
    /// shown with it when there is one); nothing is run. At most [`EXPLAIN_TOKENS`] tokens,
    /// cut back to the last full sentence.
    pub fn explain(
        &mut self,
        question: Option<&str>,
        sql: &str,
        cancel: &Cancel,
    ) -> Result<String, AskError> {
        let context = self.context_for(question.unwrap_or(sql), cancel)?;
        let engine = self.engine.as_mut().ok_or(AskError::NoModel)?;
        let p = prompt::build_explain_prompt(
            engine.template(),
            question,
            sql,
            &context,
            self.db.dialect(),
        );
        let opts = GenOptions {
            max_new_tokens: EXPLAIN_TOKENS,
            stop_at_fence_close: false,
            stop_when: None,
            mask: None,
        };
        let g = engine.generate(&p, &opts, cancel)?;
        let text = g.text.trim();
        let text = if g.new_tokens >= EXPLAIN_TOKENS {
            text.rfind(". ").map_or(text, |i| &text[..=i]).trim_end()
        } else {
            text
        };
        Ok(text.to_string())
    }

    /// The database's query plan for `sql` (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN`
    /// elsewhere), run through the same guard as any SQL.
    pub fn plan(&mut self, sql: &str, cancel: &Cancel) -> Result<SqlRun, AskError> {
        let sql = sql.trim().trim_end_matches(';').trim_end();
        let explain = match self.dialect() {
            Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            Dialect::Postgres | Dialect::MySql => format!("EXPLAIN {sql}"),
        };
        self.run_sql(&explain, cancel)
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
                prompt: posed.base.clone(),
                posed,
                attempts: Vec::new(),
                total: Generation::default(),
                generations: 0,
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
            let prompts: Vec<prompt::Prompt> = open.iter().map(|o| o.prompt.clone()).collect();
            let engine = self.engine.as_mut().ok_or(AskError::NoModel)?;
            let generations = match engine.generate_batch(&prompts, &self.gen, cancel) {
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
            for ((mut o, i), generation) in open.drain(..).zip(active.drain(..)).zip(generations) {
                o.generations += 1;
                o.total.add(&generation);
                match self.check(&mut o, &generation, t0, cancel, progress) {
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

    /// The context and prompt for `question` (with the table selection when the schema is over
    /// the budget).
    fn pose(
        &mut self,
        question: &str,
        previous: &[Turn],
        cancel: &Cancel,
    ) -> Result<Posed, AskError> {
        if self.engine.is_none() {
            return Err(AskError::NoModel);
        }
        // A follow-up's tables are those of the whole conversation.
        let context = if previous.is_empty() {
            self.context_for(question, cancel)?
        } else {
            let mut all: Vec<&str> = previous.iter().map(|t| t.question.as_str()).collect();
            all.push(question);
            self.context_for(&all.join("\n"), cancel)?
        };
        let selection = self.last_selection.as_ref();
        let tables = selection
            .map(|s| s.tables.iter().map(|c| c.table.clone()).collect())
            .unwrap_or_default();
        let namespace = selection.and_then(|s| s.namespace.clone());
        let engine = self.engine.as_ref().ok_or(AskError::NoModel)?;
        Ok(Posed {
            question: question.to_string(),
            base: if previous.is_empty() {
                self.prompt_for(engine, question, &context)
            } else {
                prompt::build_followup_prompt(
                    engine.template(),
                    question,
                    &context,
                    self.dialect(),
                    &[],
                    previous,
                )
            },
            tables,
            namespace,
        })
    }

    /// Checks and runs the SQL of `generation`, the latest answer of `o`. Returns the final
    /// result, or `None` after setting `o.prompt` to a repair prompt when the failure is worth
    /// showing the model (see [`Pipeline::ask`]).
    fn check(
        &mut self,
        o: &mut Open,
        generation: &Generation,
        t0: Instant,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Option<Result<Answer, AskError>> {
        let result = match guard::extract_sql(&generation.text) {
            Some(sql) => {
                let sql = self.qualified(sql, o.posed.namespace.as_deref());
                self.run_sql(&sql, cancel)
            }
            None => {
                let said = generation.text.lines().next().unwrap_or("").trim();
                Err(AskError::NoSql(if said.is_empty() {
                    "nothing".into()
                } else {
                    said.to_string()
                }))
            }
        };
        let e = match result {
            Ok(run) => {
                return Some(Ok(Answer {
                    question: o.posed.question.clone(),
                    sql: run.sql,
                    attempts: std::mem::take(&mut o.attempts),
                    outcome: run.outcome,
                    generation: o.total.clone(),
                    query_secs: run.query_secs,
                    total_secs: t0.elapsed().as_secs_f64(),
                    tables: o.posed.tables.clone(),
                }))
            }
            Err(e) if o.attempts.len() < self.repairs && e.repairable() => e,
            Err(e) => return Some(Err(e)),
        };
        let sql = e.sql().unwrap_or_default().to_string();
        // A model that repeats a failed query will not fix it by being asked again.
        if o.attempts.iter().any(|a| a.sql == sql) {
            return Some(Err(e));
        }
        let error = e.short();
        let hint = self.columns_hint(&sql);
        let shown = if hint.is_empty() {
            error.clone()
        } else {
            format!("{error}\n{hint}")
        };
        let template = self.engine.as_ref()?.template();
        o.prompt =
            prompt::build_repair_prompt(template, &o.posed.base, &sql, &shown, self.dialect());
        o.attempts.push(Attempt { sql, error });
        if let Some(failed) = o.attempts.last() {
            progress(Progress::Failed {
                attempt: o.attempts.len(),
                failed,
            });
        }
        None
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

    /// Generated SQL with the bare names of the selection's one namespace qualified (the model
    /// was shown that namespace's tables without it; see [`guard::qualify`]).
    fn qualified(&self, sql: String, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => {
                guard::qualify::qualify(&sql, self.dialect(), &self.schema, ns).unwrap_or(sql)
            }
            None => sql,
        }
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

/// Whether a column's values are worth indexing for value linking (text-like types, enums).
fn is_text(data_type: &str, is_enum: bool) -> bool {
    let t = data_type.to_ascii_lowercase();
    is_enum
        || ["char", "text", "string", "clob", "citext", "enum", "set("]
            .iter()
            .any(|k| t.contains(k))
        || t.is_empty()
}
