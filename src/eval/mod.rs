//! Execution accuracy (EX): does the SQL sqlora generates for a question return the same result
//! as the gold SQL, on the real database?
//!
//! Each question goes through the same [`Pipeline`] as the shell (introspection, prompt, model,
//! guard with its repair loop, read-only execution); the gold SQL runs on a second connection
//! to the same database. [`compare`] holds the matching rules, [`hardness`] Spider's difficulty
//! levels, [`report`] the summary and the JSON report. Never prints: progress goes to a
//! callback.

pub mod compare;
pub mod corrections;
pub mod hardness;
pub mod report;
pub mod sample;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::db::{self, Database, DbError, Limits};
use crate::guard::GuardError;
use crate::llm::{Backend, LlmError};
use crate::pipeline::{AskError, Confidence, Levers, Pipeline, Source};
pub use hardness::Hardness;

/// Where Spider's dev set lives under the shared data directory.
pub const SPIDER_DEV: &str = "spider/derived/dev_without_wta_1.json";

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Set(String),
    #[error(transparent)]
    Model(#[from] LlmError),
    #[error("evaluation cancelled")]
    Cancelled,
}

/// One question with its gold SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Position in the set (0-based), stable across runs for `--compare`.
    pub index: usize,
    pub question: String,
    /// A database URL or SQLite path, as `--db` takes it.
    pub db: String,
    pub gold: String,
    /// Set by the question set; a top-level ORDER BY in the gold SQL also makes order matter.
    pub order_matters: bool,
    pub hardness: Option<Hardness>,
    /// Where the gold SQL runs, when not on `db` (the same data in another database, e.g. a
    /// Spider database loaded into PostgreSQL while its gold SQL is SQLite's).
    pub gold_db: Option<String>,
}

pub use sample::load_spider_train;

/// The rows of a Spider JSON file (`what` names it, `flag` is the option that points at the
/// data), or a one-line error saying where it was looked for.
fn spider_rows(file: &Path, what: &str, flag: &str) -> Result<Vec<serde_json::Value>, EvalError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        EvalError::Set(format!(
            "cannot read {what} at {} ({e}); pass {flag}, the directory that holds spider/ \
             (e.g. ../shared/data)",
            file.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::Set(format!("{}: not Spider JSON: {e}", file.display())))
}

/// Loads the Spider dev questions whose database is present, in the dataset's order.
pub fn load_spider_dev(data: &Path) -> Result<Vec<Item>, EvalError> {
    let file = data.join(SPIDER_DEV);
    let rows = spider_rows(&file, "Spider dev", "--data DIR")?;
    let mut items = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let field = |k: &str| {
            row[k].as_str().map(str::to_string).ok_or_else(|| {
                EvalError::Set(format!("{}: question {index} has no `{k}`", file.display()))
            })
        };
        let db_id = field("db_id")?;
        let path = data
            .join("spider/database")
            .join(&db_id)
            .join(format!("{db_id}.sqlite"));
        if !path.is_file() {
            return Err(EvalError::Set(format!(
                "Spider database {} is missing",
                path.display()
            )));
        }
        items.push(Item {
            index,
            question: field("question")?,
            db: path.to_string_lossy().into_owned(),
            gold: field("query")?,
            order_matters: false,
            hardness: Some(hardness::hardness(&row["sql"])),
            gold_db: None,
        });
    }
    Ok(items)
}

/// One line of a question set. Fields other sets carry (a template id, a source) are
/// ignored; a misspelt required one is still an error, as a missing field.
#[derive(Deserialize)]
struct JsonlRow {
    question: String,
    db: String,
    query: String,
    #[serde(default)]
    order_matters: bool,
    #[serde(default)]
    hardness: Option<String>,
    #[serde(default)]
    gold_db: Option<String>,
}

/// Loads a question set with one `{"question", "db", "query", "order_matters"?, "hardness"?,
/// "gold_db"?}` object a line. A relative SQLite path in `db` or `gold_db` is taken relative to
/// the file.
pub fn load_jsonl(file: &Path) -> Result<Vec<Item>, EvalError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| EvalError::Set(format!("cannot read {}: {e}", file.display())))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonlRow = serde_json::from_str(line)
            .map_err(|e| EvalError::Set(format!("{}:{}: {e}", file.display(), n + 1)))?;
        let hardness = match row.hardness.as_deref() {
            None => None,
            Some(h) => Some(Hardness::parse(h).ok_or_else(|| {
                EvalError::Set(format!(
                    "{}:{}: hardness must be easy, medium, hard or extra, not `{h}`",
                    file.display(),
                    n + 1
                ))
            })?),
        };
        items.push(Item {
            index: items.len(),
            question: row.question,
            db: resolve_db(base, &row.db),
            gold: row.query,
            order_matters: row.order_matters,
            hardness,
            gold_db: row.gold_db.as_deref().map(|g| resolve_db(base, g)),
        });
    }
    if items.is_empty() {
        return Err(EvalError::Set(format!(
            "{} holds no questions",
            file.display()
        )));
    }
    Ok(items)
}

fn resolve_db(base: &Path, db: &str) -> String {
    match db::parse_target(db) {
        Ok(db::Target::SqliteFile(p)) if p.is_relative() => {
            base.join(p).to_string_lossy().into_owned()
        }
        _ => db.to_string(),
    }
}

/// The databases of `items` (and their gold databases) that cannot be used, each with why
/// (missing, cannot be opened, no tables), checked once each and before any model work.
/// Reasons never hold a password.
pub fn unusable_databases(items: &[Item]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut bad = Vec::new();
    for item in items {
        // The gold database is checked apart only when it is another one.
        let gold = item.gold_db.as_ref().filter(|g| **g != item.db);
        for (url, answered) in std::iter::once((&item.db, true)).chain(gold.map(|g| (g, false))) {
            if !seen.insert((url.clone(), answered)) {
                continue;
            }
            let shown = db::redact_url(url);
            let why = match db::parse_target(url) {
                Ok(db::Target::SqliteFile(p)) if !p.exists() => {
                    Some(format!("database {} is missing", p.display()))
                }
                _ => match db::open(url) {
                    Err(e) => Some(e.to_string()),
                    // The gold SQL needs only to run; the question needs tables to show.
                    Ok(_) if !answered => None,
                    Ok(mut d) => match d.introspect() {
                        Err(e) => Some(format!("cannot read the schema of {shown}: {e}")),
                        Ok(s) if s.tables.is_empty() => {
                            Some(format!("database {shown} has no tables"))
                        }
                        Ok(_) => None,
                    },
                },
            };
            if let Some(why) = why {
                if !bad.iter().any(|(u, _)| u == url) {
                    bad.push((url.clone(), why));
                }
            }
        }
    }
    bad
}

/// How one prediction fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same result as the gold SQL.
    Correct,
    /// Ran, but returned a different result.
    Wrong,
    /// The model's answer held no SQL.
    NoSql,
    /// The SQL does not parse in the database's dialect.
    ParseError,
    /// The guard refused it (not read-only, several statements).
    Refused,
    /// It names a table or column that does not exist (caught before running).
    UnknownName,
    /// The database rejected it (unknown column, type error…).
    ExecError,
    /// It ran past the time limit.
    Timeout,
    /// The gold SQL itself failed: the question is left out of EX.
    GoldError,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Verdict::Correct,
        Verdict::Wrong,
        Verdict::NoSql,
        Verdict::ParseError,
        Verdict::Refused,
        Verdict::UnknownName,
        Verdict::ExecError,
        Verdict::Timeout,
        Verdict::GoldError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Correct => "correct",
            Verdict::Wrong => "wrong result",
            Verdict::NoSql => "no SQL",
            Verdict::ParseError => "parse error",
            Verdict::Refused => "refused",
            Verdict::UnknownName => "unknown table/column",
            Verdict::ExecError => "execution error",
            Verdict::Timeout => "timeout",
            Verdict::GoldError => "gold SQL failed",
        }
    }
}

/// The outcome for one question, as written to the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub index: usize,
    pub db: String,
    pub question: String,
    pub gold: String,
    /// The SQL sqlora ran (or tried to), after any repairs.
    pub predicted: Option<String>,
    pub verdict: Verdict,
    pub error: Option<String>,
    pub hardness: Option<Hardness>,
    /// Generations for this question (1 + repairs).
    pub attempts: usize,
    pub tokens: usize,
    pub latency_ms: u64,
    /// The tables the model was shown, when the schema was over the context budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Which answer was taken: the greedy one, a candidate by vote, or a repair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How many candidates returned the answer's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
    /// How the greedy answer would have fared, when another answer was taken instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<Verdict>,
    /// Milliseconds the token mask cost for this question.
    #[serde(default)]
    pub mask_ms: f64,
    /// Feedback ids of the confirmed pairs shown as examples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<i64>,
}

/// Runs questions in order, in batches of one database (see [`Evaluator::run_batch`]), reusing
/// the model and each database's connections (and its cached schema prompt) while consecutive
/// questions share a database.
pub struct Evaluator {
    engine: Option<Box<dyn Backend>>,
    open: Option<Open>,
    pub limits: Limits,
    /// Limits for the gold query (more rows: a gold result is never cut short silently).
    pub gold_limits: Limits,
    pub repairs: usize,
    /// The schema context budget (see [`Pipeline::context_tokens`]).
    pub context_tokens: usize,
    /// The schema mask and candidates (see [`Pipeline::levers`]).
    pub levers: Levers,
    /// Confirmed pairs of each database (by its URL as the set names it), drawn on for
    /// examples (see [`Pipeline::set_shots`]).
    pub shots: std::collections::BTreeMap<String, Vec<crate::pipeline::Shot>>,
    /// Examples shown per question at most (`--examples`).
    pub examples: usize,
}

struct Open {
    url: String,
    gold_url: String,
    pipeline: Pipeline,
    gold: Box<dyn Database>,
}

impl Evaluator {
    pub fn new(engine: Box<dyn Backend>, limits: Limits, repairs: usize) -> Self {
        let gold_limits = Limits {
            max_rows: limits.max_rows.max(100_000),
            timeout: limits.timeout,
        };
        Self {
            engine: Some(engine),
            open: None,
            limits,
            gold_limits,
            repairs,
            context_tokens: crate::pipeline::DEFAULT_CONTEXT_TOKENS,
            levers: Levers::default(),
            shots: Default::default(),
            examples: crate::pipeline::DEFAULT_EXAMPLES,
        }
    }

    /// Closes the open database, so that changed settings (examples, say) apply from the next
    /// question on.
    pub fn reset(&mut self) {
        if let Some(mut old) = self.open.take() {
            self.engine = old.pipeline.take_backend();
        }
    }

    /// The model, for changing its adapter (closes the open database first).
    pub fn engine_mut(&mut self) -> Option<&mut (dyn Backend + 'static)> {
        self.reset();
        self.engine.as_deref_mut()
    }

    /// Hands the model back.
    pub fn into_engine(mut self) -> Option<Box<dyn Backend>> {
        match self.open.take() {
            Some(mut o) => o.pipeline.take_backend(),
            None => self.engine.take(),
        }
    }

    pub fn engine(&self) -> Option<&dyn Backend> {
        match &self.open {
            Some(o) => o.pipeline.backend(),
            None => self.engine.as_deref(),
        }
    }

    fn open(&mut self, url: &str, gold_url: &str) -> Result<&mut Open, String> {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.url == url && o.gold_url == gold_url)
        {
            return Ok(self.open.as_mut().expect("checked"));
        }
        if let Some(mut old) = self.open.take() {
            self.engine = old.pipeline.take_backend();
        }
        let db = db::open(url).map_err(|e| e.to_string())?;
        let gold = db::open(gold_url).map_err(|e| e.to_string())?;
        let mut pipeline = Pipeline::new(db, None).map_err(|e| e.to_string())?;
        if let Some(engine) = self.engine.take() {
            pipeline.set_backend(engine);
        }
        pipeline.limits = self.limits.clone();
        pipeline.repairs = self.repairs;
        pipeline.levers = self.levers;
        pipeline.context_tokens = self.context_tokens;
        pipeline.examples = self.examples;
        if let Some(shots) = self.shots.get(url) {
            pipeline.set_shots(shots.clone());
        }
        pipeline.values_cache = crate::paths::cache_dir().ok().map(|d| d.join("values"));
        Ok(self.open.insert(Open {
            url: url.to_string(),
            gold_url: gold_url.to_string(),
            pipeline,
            gold,
        }))
    }

    /// Answers `items`, which share one database (and gold database), with their first
    /// generations run as one batch (see [`Pipeline::ask_many`]), and judges each. A question's
    /// latency is its share of the batch's time. Errs only when the model fails or on cancel.
    pub fn run_batch(&mut self, items: &[Item], cancel: &Cancel) -> Result<Vec<Record>, EvalError> {
        let t0 = Instant::now();
        let mut records: Vec<Record> = items.iter().map(Record::pending).collect();
        let Some(first) = items.first() else {
            return Ok(records);
        };
        let gold_url = first.gold_db.clone().unwrap_or_else(|| first.db.clone());
        if let Some(other) = items
            .iter()
            .find(|i| i.db != first.db || i.gold_db.as_ref().unwrap_or(&i.db) != &gold_url)
        {
            return Err(EvalError::Set(format!(
                "question {} is on another database than question {} of its batch",
                other.index, first.index
            )));
        }
        let gold_limits = self.gold_limits.clone();
        let max_rows = self.limits.max_rows;
        let open = match self.open(&first.db, &gold_url) {
            Ok(o) => o,
            Err(e) => {
                for r in &mut records {
                    r.error = Some(format!("cannot open the database: {e}"));
                }
                return Ok(records);
            }
        };
        // Questions whose gold SQL fails are left out of EX, and not asked.
        let mut golds = Vec::new();
        for (pos, (item, record)) in items.iter().zip(records.iter_mut()).enumerate() {
            match open.gold.query(&item.gold, &gold_limits, cancel) {
                Ok(g) if g.truncated => {
                    record.error = Some(format!(
                        "gold result has more than {} rows",
                        gold_limits.max_rows
                    ))
                }
                Ok(g) => golds.push((pos, item, g)),
                Err(DbError::Cancelled) => return Err(EvalError::Cancelled),
                Err(e) => record.error = Some(format!("gold SQL failed: {e}")),
            }
        }
        let questions: Vec<&str> = golds.iter().map(|(_, i, _)| i.question.as_str()).collect();
        let asked = match open.pipeline.ask_many(&questions, cancel) {
            Ok(a) => a,
            Err(e) => {
                // Failing before any generation (the table selection could not read the
                // database, say) fails each question the same way.
                let message = e.to_string();
                for (pos, _, _) in &golds {
                    let r = &mut records[*pos];
                    r.verdict = verdict_of(&e)?;
                    r.error = Some(message.lines().next().unwrap_or("").to_string());
                }
                return Ok(records);
            }
        };
        let share = t0.elapsed().as_secs_f64() * 1000.0 / items.len() as f64;
        for r in &mut records {
            r.latency_ms = share.round() as u64;
        }
        for ((pos, item, gold), asked) in golds.into_iter().zip(asked) {
            let record = &mut records[pos];
            record.attempts = asked.generations;
            record.tables = asked.tables;
            record.tokens = asked.new_tokens;
            record.mask_ms = asked.mask_secs * 1000.0;
            record.examples = asked.examples;
            let order = item.order_matters || compare::has_top_level_order_by(&item.gold);
            match asked.result {
                Ok(a) => {
                    record.predicted = Some(a.sql);
                    record.source = Some(a.source);
                    record.confidence = a.confidence;
                    if let Some(g) = &a.greedy_sql {
                        // What taking the greedy answer would have given, to count what the
                        // vote changed.
                        record.greedy = Some(match open.pipeline.run_sql(g, cancel) {
                            Ok(run)
                                if compare::results_match(&gold.rows, &run.outcome.rows, order) =>
                            {
                                Verdict::Correct
                            }
                            Ok(_) => Verdict::Wrong,
                            Err(e) => verdict_of(&e)?,
                        });
                    }
                    record.verdict = if compare::results_match(&gold.rows, &a.outcome.rows, order) {
                        Verdict::Correct
                    } else {
                        Verdict::Wrong
                    };
                    if a.outcome.truncated {
                        record.error = Some(format!("prediction stopped at {max_rows} rows"));
                    }
                }
                Err(e) => {
                    record.verdict = verdict_of(&e)?;
                    record.predicted = match &e {
                        AskError::NoSql(said) => Some(said.clone()),
                        e => e.sql().map(str::to_string),
                    };
                    record.error = Some(e.to_string().lines().next().unwrap_or("").to_string());
                }
            }
        }
        Ok(records)
    }
}

/// How a failed question is judged; the model failing or a cancel end the evaluation instead.
fn verdict_of(e: &AskError) -> Result<Verdict, EvalError> {
    Ok(match e {
        AskError::Model(LlmError::Cancelled)
        | AskError::Db {
            error: DbError::Cancelled,
            ..
        } => return Err(EvalError::Cancelled),
        AskError::Model(e) => return Err(EvalError::Model(LlmError::Generation(e.to_string()))),
        AskError::NoModel => return Err(EvalError::Set("no model loaded".into())),
        AskError::NoSql(_) => Verdict::NoSql,
        AskError::Guard { error, .. } => match error {
            GuardError::Empty => Verdict::NoSql,
            GuardError::Parse(_) => Verdict::ParseError,
            GuardError::MultipleStatements(_)
            | GuardError::Refused(_)
            | GuardError::Function { .. } => Verdict::Refused,
            GuardError::UnknownNames(_) => Verdict::UnknownName,
        },
        AskError::Db {
            error: DbError::Timeout(_),
            ..
        } => Verdict::Timeout,
        AskError::Db { .. } => Verdict::ExecError,
    })
}

impl Record {
    /// A record for `item` before it is answered (a gold failure if nothing else is learnt).
    fn pending(item: &Item) -> Self {
        Record {
            index: item.index,
            db: db::redact_url(&item.db),
            question: item.question.clone(),
            gold: item.gold.clone(),
            predicted: None,
            verdict: Verdict::GoldError,
            error: None,
            hardness: item.hardness,
            attempts: 0,
            tokens: 0,
            latency_ms: 0,
            tables: Vec::new(),
            source: None,
            confidence: None,
            greedy: None,
            mask_ms: 0.0,
            examples: Vec::new(),
        }
    }
}

/// Evaluates `items` in order, calling `progress` after each; consecutive questions on one
/// database are answered in batches of up to `batch` (1: one at a time). Stops early (keeping
/// what was done) on cancel. Returns the records and whether the run was complete.
pub fn run_all(
    evaluator: &mut Evaluator,
    items: &[Item],
    batch: usize,
    cancel: &Cancel,
    mut progress: impl FnMut(&Record, &[Record]),
) -> Result<(Vec<Record>, bool), EvalError> {
    let mut records: Vec<Record> = Vec::with_capacity(items.len());
    let mut rest = items;
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take(batch.max(1))
            .take_while(|i| i.db == first.db && i.gold_db == first.gold_db)
            .count();
        let (chunk, tail) = rest.split_at(same);
        rest = tail;
        match evaluator.run_batch(chunk, cancel) {
            Ok(done) => {
                for r in done {
                    records.push(r);
                    progress(records.last().expect("pushed"), &records);
                }
            }
            Err(EvalError::Cancelled) => return Ok((records, false)),
            Err(e) => return Err(e),
        }
    }
    Ok((records, true))
}

/// The default data directory for `--set spider-dev`: `$SQLORA_EVAL_DATA`, else
/// `../shared/data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("SQLORA_EVAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// The questions of `set`: Spider dev (`spider-dev`, read from `data`, default
/// [`default_data_dir`]) or a JSONL file's.
pub fn load_set(set: &str, data: Option<&Path>) -> Result<Vec<Item>, EvalError> {
    if set == "spider-dev" {
        load_spider_dev(&data.map_or_else(default_data_dir, Path::to_path_buf))
    } else {
        load_jsonl(Path::new(set))
    }
}

/// How many questions on one database `engine` answers together when no `--batch` is given.
/// On a GPU, one question at a time through the fused decoder beats batches through candle's
/// kernels (all of Spider dev on one H200: 80 s against 86 s at 32). A server gets 8 at a
/// time, to batch as it does.
pub fn default_batch(engine: &dyn Backend) -> usize {
    let Some(engine) = engine.local() else {
        return 8;
    };
    if engine.fused_decode() {
        1
    } else if engine.model().device().is_cuda() {
        32
    } else {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_sets_resolve_relative_paths_and_reject_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("set.jsonl");
        std::fs::write(
            &f,
            "{\"question\": \"How many?\", \"db\": \"shop.sqlite\", \"query\": \"SELECT 1\"}\n\n\
             {\"question\": \"Top?\", \"db\": \"/abs/x.db\", \"query\": \"SELECT 2\", \
             \"order_matters\": true, \"hardness\": \"hard\", \"template\": 3}\n",
        )
        .unwrap();
        let items = load_jsonl(&f).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].db,
            dir.path().join("shop.sqlite").to_string_lossy()
        );
        assert_eq!(items[1].db, "/abs/x.db");
        assert!(items[1].order_matters && !items[0].order_matters);
        assert_eq!(items[1].hardness, Some(Hardness::Hard));
        assert_eq!(items[1].index, 1);

        std::fs::write(
            &f,
            "{\"question\": \"q\", \"db\": \"x\", \"qurey\": \"SELECT 1\"}\n",
        )
        .unwrap();
        let err = load_jsonl(&f).unwrap_err().to_string();
        assert!(err.contains("set.jsonl:1"), "{err}");
    }
}
