//! Databases behind one small trait: connect, introspect into [`Schema`], run one read-only
//! statement under limits. One module per backend; values enter as [`Value`].
//!
//! Never parses or judges SQL (that is the guard's job) and never prints.

pub mod demo;
pub mod mysql;
pub mod postgres;
mod remote;
pub mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::schema::Schema;

/// The SQL dialects sqlora speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
        }
    }
}

/// One cell of a result. Types without a variant of their own (dates, times, intervals, json,
/// arrays, uuid, enums) arrive as the database's own text rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact numeric (DECIMAL/NUMERIC, unsigned 64-bit) in its decimal text, never rounded.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// Display text (NULL as `NULL`, bytes as hex).
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => d.clone(),
            Value::Float(f) => format_float(*f),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => {
                let hex: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
                if b.len() > 32 {
                    format!("\\x{hex}… ({} bytes)", b.len())
                } else {
                    format!("\\x{hex}")
                }
            }
        }
    }
}

fn format_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        let s = format!("{f}");
        s
    }
}

/// The result of a statement or a shell command: what every renderer takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// True when more rows existed than the row cap allowed.
    pub truncated: bool,
}

/// Limits for one statement.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rows: 1000,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("{0}")]
    Query(String),
    #[error("query stopped after the {0:?} timeout")]
    Timeout(Duration),
    #[error("query cancelled")]
    Cancelled,
    #[error(
        "unsupported database URL `{0}` (use postgres://, mysql://, mariadb://, sqlite://PATH \
         or a SQLite file path)"
    )]
    UnsupportedUrl(String),
}

/// What every backend does.
pub trait Database {
    fn dialect(&self) -> Dialect;
    /// A short identity for display: driver and file or host/database, never a password.
    fn describe(&self) -> String;
    fn introspect(&mut self) -> Result<Schema, DbError>;
    /// Runs one statement (already checked by the guard) read-only under `limits`.
    fn query(&mut self, sql: &str, limits: &Limits, cancel: &Cancel) -> Result<Outcome, DbError>;
}

/// Where a `--db` argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    SqliteFile(PathBuf),
    Postgres(String),
    MySql(String),
}

/// Parses a `--db` value: `postgres://`/`postgresql://`, `mysql://`/`mariadb://`,
/// `sqlite://PATH`, `sqlite:PATH` or a bare file path.
pub fn parse_target(url: &str) -> Result<Target, DbError> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_string()));
    }
    if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        return Ok(Target::MySql(url.to_string()));
    }
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or(rest);
        return Ok(Target::SqliteFile(PathBuf::from(path)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(DbError::UnsupportedUrl(format!("{scheme}://…")));
    }
    Ok(Target::SqliteFile(PathBuf::from(url)))
}

/// How a database is identified in the feedback store, from its `--db` value without
/// connecting: the same text [`Database::describe`] gives once connected.
pub fn identity(url: &str) -> Result<String, DbError> {
    match parse_target(url)? {
        Target::SqliteFile(path) => Ok(sqlite::describe_path(&path)),
        Target::Postgres(url) => postgres::identity(&url),
        Target::MySql(url) => mysql::identity(&url),
    }
}

/// Opens the database a `--db` value names.
pub fn open(url: &str) -> Result<Box<dyn Database>, DbError> {
    connect(url, &[])
}

/// Opens the database a `--db` value names; `schemas` picks the PostgreSQL schemas to
/// introspect (default: the search_path). Other backends have one namespace.
pub fn connect(url: &str, schemas: &[String]) -> Result<Box<dyn Database>, DbError> {
    match parse_target(url)? {
        Target::SqliteFile(path) => Ok(Box::new(sqlite::SqliteDb::open(&path)?)),
        Target::Postgres(url) => Ok(Box::new(postgres::PgDb::connect(&url, schemas)?)),
        Target::MySql(url) => Ok(Box::new(mysql::MySqlDb::connect(&url)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("sqlite:///tmp/a.db").unwrap(),
            Target::SqliteFile("/tmp/a.db".into())
        );
        assert_eq!(
            parse_target("sqlite:rel.db?mode=ro").unwrap(),
            Target::SqliteFile("rel.db".into())
        );
        assert_eq!(
            parse_target("shop.sqlite").unwrap(),
            Target::SqliteFile("shop.sqlite".into())
        );
        assert!(parse_target("mongodb://x/y").is_err());
        assert_eq!(
            parse_target("postgresql://u@h/db").unwrap(),
            Target::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            parse_target("mariadb://root@h:3306/x").unwrap(),
            Target::MySql("mariadb://root@h:3306/x".into())
        );
    }

    #[test]
    fn value_display() {
        assert_eq!(Value::Null.display(), "NULL");
        assert_eq!(Value::Float(2.0).display(), "2.0");
        assert_eq!(Value::Float(2.5).display(), "2.5");
        assert_eq!(Value::Bytes(vec![1, 255]).display(), "\\x01ff");
    }
}
