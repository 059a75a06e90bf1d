//! The feedback store: every answer sqlora gives, and what the user made of it (accepted,
//! corrected with their SQL, rejected). Accepted and corrected answers are the training pairs
//! and the examples later questions on the same database are shown ([`Store::confirmed`]);
//! `sqlora feedback remove` takes an answer out of both and keeps it on record.
//!
//! A SQLite file in sqlora's data dir by default (WAL, `synchronous=FULL`: a record is on disk
//! when `record` returns), or a shared PostgreSQL (`--feedback-db postgres://…`) so a team
//! pools its corrections. The schema is versioned by the sqlx migrations in `migrations/`,
//! applied on open. Every write is one transaction. Never prints.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection, Row, SqlSafeStr};

use crate::sql::Dialect;

/// Answers of one database with one verdict: (database, verdict, count).
pub type VerdictCount = (String, String, i64);

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("cannot open the feedback store {target}: {reason}")]
    Open { target: String, reason: String },
    #[error("feedback store: {0}")]
    Store(String),
    #[error("no answer with id {0} in the feedback store")]
    NotFound(i64),
}

fn store_err(e: impl std::fmt::Display) -> FeedbackError {
    FeedbackError::Store(
        e.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// What the user made of an answer (`\ok`, `\fix`, `\bad`, or nothing yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Review {
    Unreviewed,
    Accepted,
    Corrected,
    Rejected,
}

impl Review {
    pub fn as_str(self) -> &'static str {
        match self {
            Review::Unreviewed => "unreviewed",
            Review::Accepted => "accepted",
            Review::Corrected => "corrected",
            Review::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Review::Unreviewed,
            Review::Accepted,
            Review::Corrected,
            Review::Rejected,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A new answer to log.
#[derive(Debug, Clone, Default)]
pub struct NewAnswer {
    pub question: String,
    /// Driver, host and database name (never a password).
    pub db_identity: String,
    pub dialect: String,
    /// The schema text the model saw.
    pub schema_context: String,
    pub model: String,
    pub adapter: Option<String>,
    /// The first SQL the model wrote.
    pub generated_sql: Option<String>,
    /// Failed attempts before the final SQL, as `[{"sql","error"}]`.
    pub attempts: Vec<(String, String)>,
    /// The SQL that ran (none when every attempt failed).
    pub final_sql: Option<String>,
    pub error: Option<String>,
    pub verdict: Option<Review>,
    pub correction: Option<String>,
    pub note: Option<String>,
    /// `shell`, `cli` or `import`.
    pub source: String,
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub os_user: String,
    pub question: String,
    pub db_identity: String,
    pub dialect: String,
    pub schema_fingerprint: String,
    pub model: String,
    pub final_sql: Option<String>,
    pub verdict: Review,
    pub correction: Option<String>,
    pub note: Option<String>,
    pub trained_in: Option<String>,
    /// When `sqlora feedback remove` took it out of examples and training.
    pub removed_at: Option<String>,
}

/// One training pair, in the shape of the training files in the shared data
/// (sql-create-context style).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    pub question: String,
    pub context: String,
    pub answer: String,
    pub db: String,
    pub dialect: Dialect,
}

/// A confirmed question and the SQL that answers it, for examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub id: i64,
    pub question: String,
    pub sql: String,
}

/// Which entries to list or export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub db: Option<String>,
    pub verdict: Option<Review>,
    /// ISO 8601 date or time: entries updated at or after it.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// `q` with what an answer was asked under bound next, in the order every insert of an
/// answer lists them: question, database, dialect, schema fingerprint, schema context, model.
fn bind_asked<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments>,
    a: &'q NewAnswer,
) -> sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments> {
    q.bind(&a.question)
        .bind(&a.db_identity)
        .bind(&a.dialect)
        .bind(fingerprint(&a.schema_context))
        .bind(&a.schema_context)
        .bind(&a.model)
}

/// The sha256 of the schema text, which identifies "the same database" across sessions.
pub fn fingerprint(context: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(context.as_bytes()))
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

fn migrations(kind: Kind) -> Vec<Migration> {
    let files: &[(i64, &str, &str)] = match kind {
        Kind::Sqlite => &[
            (
                1,
                "feedback",
                include_str!("../../migrations/sqlite/0001_feedback.sql"),
            ),
            (
                2,
                "source",
                include_str!("../../migrations/sqlite/0002_source.sql"),
            ),
            (
                3,
                "removed",
                include_str!("../../migrations/sqlite/0003_removed.sql"),
            ),
        ],
        Kind::Postgres => &[
            (
                1,
                "feedback",
                include_str!("../../migrations/postgres/0001_feedback.sql"),
            ),
            (
                2,
                "source",
                include_str!("../../migrations/postgres/0002_source.sql"),
            ),
            (
                3,
                "removed",
                include_str!("../../migrations/postgres/0003_removed.sql"),
            ),
        ],
    };
    files
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect()
}

/// The newest migration version this build knows.
pub const SCHEMA_VERSION: i64 = 3;

pub struct Store {
    rt: tokio::runtime::Runtime,
    conn: AnyConnection,
    kind: Kind,
    label: String,
}

impl Store {
    /// Opens (creating if needed) the store at `target`: a `postgres://` URL, or a SQLite
    /// file path / `sqlite://PATH`. Applies pending migrations.
    pub fn open(target: &str) -> Result<Self, FeedbackError> {
        Self::open_at_version(target, None)
    }

    /// Opens the store migrated only up to `version` (tests of the migration path).
    pub fn open_at_version(target: &str, version: Option<i64>) -> Result<Self, FeedbackError> {
        sqlx::any::install_default_drivers();
        let fail = |reason: String| FeedbackError::Open {
            target: redact(target),
            reason,
        };
        // SQLite has no advisory lock for migrations (PostgreSQL does): processes opening a new
        // store at once take turns through a lock file instead.
        let mut migration_lock: Option<std::fs::File> = None;
        let (kind, url) =
            if target.starts_with("postgres://") || target.starts_with("postgresql://") {
                (Kind::Postgres, target.to_string())
            } else if target.contains("://") && !target.starts_with("sqlite://") {
                // Never taken for a file name: that would create directories named after the
                // URL, its password included.
                let scheme = target.split("://").next().unwrap_or_default();
                return Err(fail(format!(
                    "the feedback store is a SQLite file or a PostgreSQL database \
                     (postgres://…), not {scheme}://"
                )));
            } else {
                let path = target
                    .strip_prefix("sqlite://")
                    .or_else(|| target.strip_prefix("sqlite:"))
                    .unwrap_or(target);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(format!("{path}.lock"))
                    .map_err(|e| fail(format!("lock file: {e}")))?;
                lock.lock().map_err(|e| fail(format!("lock file: {e}")))?;
                migration_lock = Some(lock);
                (Kind::Sqlite, format!("sqlite://{path}?mode=rwc"))
            };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let conn = rt.block_on(async {
            let mut conn =
                tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(&url))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            if kind == Kind::Sqlite {
                // Durable on return, readable while another process writes, patient with locks.
                sqlx::raw_sql(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            }
            let migrator = Migrator::with_migrations(migrations(kind));
            let result = match version {
                Some(v) => migrator.run_to(v, &mut conn).await,
                None => migrator.run(&mut conn).await,
            };
            result.map_err(|e| format!("migrating: {e}"))?;
            Ok::<_, String>(conn)
        });
        drop(migration_lock);
        let conn =
            conn.map_err(|reason| fail(reason.split_whitespace().collect::<Vec<_>>().join(" ")))?;
        Ok(Self {
            rt,
            conn,
            kind,
            label: redact(target),
        })
    }

    pub fn describe(&self) -> &str {
        &self.label
    }

    /// Applied migration versions, oldest first.
    pub fn applied_versions(&mut self) -> Result<Vec<i64>, FeedbackError> {
        let rows = self
            .rt
            .block_on(
                sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                    .fetch_all(&mut self.conn),
            )
            .map_err(store_err)?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(store_err))
            .collect()
    }

    /// Logs an answer; returns its id once it is durable.
    pub fn record(&mut self, a: &NewAnswer) -> Result<i64, FeedbackError> {
        let at = crate::clock::now_iso();
        let attempts = serde_json::to_string(
            &a.attempts
                .iter()
                .map(|(sql, error)| serde_json::json!({"sql": sql, "error": error}))
                .collect::<Vec<_>>(),
        )
        .map_err(store_err)?;
        let verdict = a.verdict.unwrap_or(Review::Unreviewed).as_str();
        let source = if a.source.is_empty() {
            "shell"
        } else {
            a.source.as_str()
        };
        let sql = "INSERT INTO feedback (created_at, updated_at, os_user, question, db_identity, \
                   dialect, schema_fingerprint, schema_context, model, adapter, generated_sql, \
                   attempts, final_sql, error, verdict, correction, note, source) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                   $17, $18) RETURNING id";
        let fut = async {
            let mut tx = self.conn.begin().await?;
            let row = bind_asked(sqlx::query(sql).bind(&at).bind(&at).bind(os_user()), a)
                .bind(a.adapter.clone())
                .bind(a.generated_sql.clone())
                .bind(&attempts)
                .bind(a.final_sql.clone())
                .bind(a.error.clone())
                .bind(verdict)
                .bind(a.correction.clone())
                .bind(a.note.clone())
                .bind(source)
                .fetch_one(&mut *tx)
                .await?;
            let id: i64 = row.try_get(0)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        };
        self.rt.block_on(fut).map_err(store_err)
    }

    /// Sets the verdict of answer `id` (with the corrected SQL or a note), remembering the
    /// previous one for [`Store::undo`].
    pub fn set_verdict(
        &mut self,
        id: i64,
        verdict: Review,
        correction: Option<&str>,
        note: Option<&str>,
    ) -> Result<(), FeedbackError> {
        let at = crate::clock::now_iso();
        let fut = async {
            let mut tx = self.conn.begin().await?;
            let old = sqlx::query("SELECT verdict, correction, note FROM feedback WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(old) = old else {
                return Ok(false);
            };
            let (ov, oc, on): (String, Option<String>, Option<String>) =
                (old.try_get(0)?, old.try_get(1)?, old.try_get(2)?);
            sqlx::query(
                "INSERT INTO feedback_event (feedback_id, at, old_verdict, old_correction, \
                 old_note, new_verdict) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(&at)
            .bind(ov)
            .bind(oc)
            .bind(on)
            .bind(verdict.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE feedback SET verdict = $1, correction = $2, note = $3, updated_at = $4 \
                 WHERE id = $5",
            )
            .bind(verdict.as_str())
            .bind(correction.map(str::to_string))
            .bind(note.map(str::to_string))
            .bind(&at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        };
        match self.rt.block_on(fut).map_err(store_err)? {
            true => Ok(()),
            false => Err(FeedbackError::NotFound(id)),
        }
    }

    /// Reverts the latest verdict change of answer `id`; returns the verdict it is back to,
    /// or `None` when there was nothing to undo.
    pub fn undo(&mut self, id: i64) -> Result<Option<Review>, FeedbackError> {
        let at = crate::clock::now_iso();
        let fut = async {
            let mut tx = self.conn.begin().await?;
            let ev = sqlx::query(
                "SELECT id, old_verdict, old_correction, old_note FROM feedback_event \
                 WHERE feedback_id = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(ev) = ev else {
                return Ok(None);
            };
            let (ev_id, v, c, n): (i64, String, Option<String>, Option<String>) = (
                ev.try_get(0)?,
                ev.try_get(1)?,
                ev.try_get(2)?,
                ev.try_get(3)?,
            );
            sqlx::query(
                "UPDATE feedback SET verdict = $1, correction = $2, note = $3, updated_at = $4 \
                 WHERE id = $5",
            )
            .bind(&v)
            .bind(c)
            .bind(n)
            .bind(&at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM feedback_event WHERE id = $1")
                .bind(ev_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(v))
        };
        let v = self.rt.block_on(fut).map_err(store_err)?;
        Ok(v.as_deref().and_then(Review::parse))
    }

    fn entry(row: &AnyRow) -> Result<Entry, sqlx::Error> {
        Ok(Entry {
            id: row.try_get("id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            os_user: row.try_get("os_user")?,
            question: row.try_get("question")?,
            db_identity: row.try_get("db_identity")?,
            dialect: row.try_get("dialect")?,
            schema_fingerprint: row.try_get("schema_fingerprint")?,
            model: row.try_get("model")?,
            final_sql: row.try_get("final_sql")?,
            verdict: Review::parse(&row.try_get::<String, _>("verdict")?)
                .unwrap_or(Review::Unreviewed),
            correction: row.try_get("correction")?,
            note: row.try_get("note")?,
            trained_in: row.try_get("trained_in")?,
            removed_at: row.try_get("removed_at")?,
        })
    }

    /// Entries matching `f`, newest first.
    pub fn list(&mut self, f: &Filter) -> Result<Vec<Entry>, FeedbackError> {
        let sql = "SELECT id, created_at, updated_at, os_user, question, db_identity, dialect, \
                   schema_fingerprint, model, final_sql, verdict, correction, note, trained_in, \
                   removed_at FROM feedback WHERE ($1 = '' OR db_identity = $1) AND ($2 = '' OR verdict = $2) \
                   AND ($3 = '' OR updated_at >= $3) ORDER BY id DESC LIMIT $4";
        let rows = self
            .rt
            .block_on(
                sqlx::query(sql)
                    .bind(f.db.clone().unwrap_or_default())
                    .bind(f.verdict.map_or("", Review::as_str))
                    .bind(f.since.clone().unwrap_or_default())
                    .bind(f.limit.map_or(i64::MAX, |n| n as i64))
                    .fetch_all(&mut self.conn),
            )
            .map_err(store_err)?;
        rows.iter()
            .map(|r| Self::entry(r).map_err(store_err))
            .collect()
    }

    /// Training pairs: accepted answers (their SQL) and corrections (the user's SQL), never
    /// rejected or unreviewed ones; one per question and schema, the latest judgement winning.
    pub fn export(&mut self, f: &Filter) -> Result<Vec<Pair>, FeedbackError> {
        let sql = "SELECT question, schema_fingerprint, schema_context, db_identity, dialect, \
                   verdict, final_sql, correction FROM feedback \
                   WHERE verdict IN ('accepted', 'corrected') AND removed_at IS NULL \
                   AND ($1 = '' OR db_identity = $1) AND ($2 = '' OR updated_at >= $2) \
                   ORDER BY updated_at DESC, id DESC";
        let rows = self
            .rt
            .block_on(
                sqlx::query(sql)
                    .bind(f.db.clone().unwrap_or_default())
                    .bind(f.since.clone().unwrap_or_default())
                    .fetch_all(&mut self.conn),
            )
            .map_err(store_err)?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &rows {
            let get = |i: usize| r.try_get::<Option<String>, _>(i).map_err(store_err);
            let question = get(0)?.unwrap_or_default();
            let fp = get(1)?.unwrap_or_default();
            if !seen.insert((question.trim().to_lowercase(), fp)) {
                continue;
            }
            let answer = match get(5)?.as_deref() {
                Some("corrected") => get(7)?,
                _ => get(6)?,
            };
            let Some(answer) = answer.filter(|a| !a.trim().is_empty()) else {
                continue;
            };
            out.push(Pair {
                question,
                context: get(2)?.unwrap_or_default(),
                answer,
                db: get(3)?.unwrap_or_default(),
                // Stored as the dialect's display name; an unreadable one is SQLite, the
                // only dialect the store held before it recorded one.
                dialect: get(4)?
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(Dialect::Sqlite),
            });
        }
        out.reverse();
        Ok(out)
    }

    /// The confirmed pairs of database `db` for examples, oldest first: accepted answers (their
    /// SQL) and corrections (the user's SQL), never rejected, unreviewed or removed ones; one
    /// per question, the latest judgement winning.
    pub fn confirmed(&mut self, db: &str) -> Result<Vec<Confirmed>, FeedbackError> {
        let sql = "SELECT id, question, verdict, final_sql, correction FROM feedback \
                   WHERE verdict IN ('accepted', 'corrected') AND removed_at IS NULL \
                   AND db_identity = $1 ORDER BY updated_at DESC, id DESC";
        let rows = self
            .rt
            .block_on(sqlx::query(sql).bind(db).fetch_all(&mut self.conn))
            .map_err(store_err)?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &rows {
            let id: i64 = r.try_get(0).map_err(store_err)?;
            let get = |i: usize| r.try_get::<Option<String>, _>(i).map_err(store_err);
            let question = get(1)?.unwrap_or_default();
            if !seen.insert(
                question
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase(),
            ) {
                continue;
            }
            let sql = match get(2)?.as_deref() {
                Some("corrected") => get(4)?,
                _ => get(3)?,
            };
            if let Some(sql) = sql.filter(|s| !s.trim().is_empty()) {
                out.push(Confirmed { id, question, sql });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Takes answer `id` out of examples and training for good (it stays on record, marked
    /// removed). `Ok(false)` when it was removed already.
    pub fn remove(&mut self, id: i64) -> Result<bool, FeedbackError> {
        let at = crate::clock::now_iso();
        let fut = async {
            let found = sqlx::query("SELECT removed_at FROM feedback WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
            let Some(found) = found else {
                return Ok(None);
            };
            if found.try_get::<Option<String>, _>(0)?.is_some() {
                return Ok(Some(false));
            }
            sqlx::query("UPDATE feedback SET removed_at = $1, updated_at = $1 WHERE id = $2")
                .bind(&at)
                .bind(id)
                .execute(&mut self.conn)
                .await?;
            Ok::<_, sqlx::Error>(Some(true))
        };
        self.rt
            .block_on(fut)
            .map_err(store_err)?
            .ok_or(FeedbackError::NotFound(id))
    }

    /// Counts per database and verdict, and the training pairs not yet used in a run.
    pub fn stats(&mut self) -> Result<(Vec<VerdictCount>, i64), FeedbackError> {
        let rows = self
            .rt
            .block_on(
                sqlx::query(
                    "SELECT db_identity, verdict, COUNT(*) FROM feedback \
                     GROUP BY db_identity, verdict ORDER BY db_identity, verdict",
                )
                .fetch_all(&mut self.conn),
            )
            .map_err(store_err)?;
        let counts = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(store_err)?;
        let fresh: i64 = self
            .rt
            .block_on(
                sqlx::query(
                    "SELECT COUNT(*) FROM feedback WHERE verdict IN ('accepted', 'corrected') \
                     AND removed_at IS NULL \
                     AND trained_in IS NULL",
                )
                .fetch_one(&mut self.conn),
            )
            .and_then(|r| r.try_get(0))
            .map_err(store_err)?;
        Ok((counts, fresh))
    }

    /// Accepted and corrected answers not yet used by a training run (of database `db`, or
    /// of every database).
    pub fn fresh_pairs(&mut self, db: Option<&str>) -> Result<i64, FeedbackError> {
        self.rt
            .block_on(
                sqlx::query(
                    "SELECT COUNT(*) FROM feedback WHERE verdict IN ('accepted', 'corrected') \
                     AND removed_at IS NULL \
                     AND trained_in IS NULL AND ($1 = '' OR db_identity = $1)",
                )
                .bind(db.unwrap_or_default().to_string())
                .fetch_one(&mut self.conn),
            )
            .and_then(|r| r.try_get(0))
            .map_err(store_err)
    }

    /// Marks the accepted and corrected answers not yet used (of `db`, or all), judged at or
    /// before `until` (ISO 8601, when the run read them), as used by the training run that
    /// made `adapter`; returns how many.
    pub fn mark_trained(
        &mut self,
        db: Option<&str>,
        until: &str,
        adapter: &str,
    ) -> Result<u64, FeedbackError> {
        self.rt
            .block_on(
                sqlx::query(
                    "UPDATE feedback SET trained_in = $1 WHERE verdict IN ('accepted', \
                     'corrected') AND removed_at IS NULL AND trained_in IS NULL \
                     AND ($2 = '' OR db_identity = $2) \
                     AND updated_at <= $3",
                )
                .bind(adapter.to_string())
                .bind(db.unwrap_or_default().to_string())
                .bind(until.to_string())
                .execute(&mut self.conn),
            )
            .map(|r| r.rows_affected())
            .map_err(store_err)
    }

    /// SQLite's `PRAGMA integrity_check` (PostgreSQL keeps its own): `ok` when sound.
    pub fn integrity_check(&mut self) -> Result<String, FeedbackError> {
        if self.kind != Kind::Sqlite {
            return Ok("ok".into());
        }
        let row = self
            .rt
            .block_on(sqlx::query("PRAGMA integrity_check").fetch_one(&mut self.conn))
            .map_err(store_err)?;
        row.try_get::<String, _>(0).map_err(store_err)
    }
}

/// A store URL without its password (see [`crate::db::redact_url`]).
fn redact(url: &str) -> String {
    crate::db::redact_url(url)
}

#[cfg(test)]
mod tests;
