//! Databases behind one small trait: connect, introspect into [`Schema`], run one read-only
//! statement under limits, and tell what the login could do beyond reading ([`Powers`]). One
//! module per backend; values enter as [`Value`]. A URL reaches messages and displays only
//! through [`redact_url`] (never with its password).
//!
//! Never parses or judges SQL (that is the guard's job) and never prints: a warning about the
//! login's powers is returned as text for the caller to print.

pub mod demo;
pub mod mysql;
pub mod postgres;
mod remote;
mod samples;
pub mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::schema::Schema;
use crate::sql::{Dialect, Outcome, Value};

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
    /// What the login could do beyond reading, found once at connect (SQLite: nothing; a
    /// server whose grants cannot be read: nothing). sqlora uses none of it; the caller may
    /// warn with [`Powers::warning`].
    fn powers(&self) -> Powers {
        Powers::default()
    }
}

/// One kind of power a login can hold beyond reading, in the order a warning names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reach {
    Superuser,
    ReadFiles,
    WriteFiles,
    RunPrograms,
    SignalSessions,
    SeeSessions,
    ServerSettings,
    Shutdown,
    Replication,
    CreateRoles,
    CreateDatabases,
    BypassRls,
    GrantOthers,
    /// Writing data or creating objects: the softer mention.
    Write,
}

impl Reach {
    /// What it lets the login do, as words after "can" (or, for a superuser, "is").
    pub fn phrase(self) -> &'static str {
        match self {
            Reach::Superuser => "a superuser",
            Reach::ReadFiles => "read server files",
            Reach::WriteFiles => "write server files",
            Reach::RunPrograms => "run programs on the server",
            Reach::SignalSessions => "signal or kill other sessions",
            Reach::SeeSessions => "see other sessions' queries",
            Reach::ServerSettings => "change server settings",
            Reach::Shutdown => "shut the server down",
            Reach::Replication => "read or steer replication",
            Reach::CreateRoles => "create logins",
            Reach::CreateDatabases => "create databases",
            Reach::BypassRls => "bypass row-level security",
            Reach::GrantOthers => "grant its privileges to others",
            Reach::Write => "write data or change the schema",
        }
    }
}

/// A privilege the login holds, by the server's own name (`SUPERUSER`,
/// `pg_read_server_files`, `FILE`, `INSERT`), and what it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Power {
    pub name: String,
    pub reach: Reach,
}

/// The login sqlora connected as and its powers beyond reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Powers {
    /// As the server names it: `postgres`, `root@127.0.0.1`.
    pub login: String,
    pub held: Vec<Power>,
}

impl Powers {
    /// Records `name` as reaching `reach` (once).
    pub fn add(&mut self, name: &str, reach: Reach) {
        if !self.held.iter().any(|p| p.name == name && p.reach == reach) {
            self.held.push(Power {
                name: name.to_string(),
                reach,
            });
        }
    }

    /// One line (without the `sqlora: ` prefix) when the login holds more than reading:
    /// `warning: …` for superuser, file, signal, replication and similar powers, `note: …`
    /// when it can only write. `None` for a read-only login.
    pub fn warning(&self) -> Option<String> {
        if self.held.is_empty() {
            return None;
        }
        let mut reaches: Vec<Reach> = self.held.iter().map(|p| p.reach).collect();
        reaches.sort();
        reaches.dedup();
        let mut names: Vec<&str> = Vec::new();
        for r in &reaches {
            for p in self.held.iter().filter(|p| p.reach == *r) {
                if !names.contains(&p.name.as_str()) {
                    names.push(&p.name);
                }
            }
        }
        let superuser = reaches.first() == Some(&Reach::Superuser);
        let can: Vec<&str> = reaches
            .iter()
            .filter(|r| **r != Reach::Superuser)
            .map(|r| r.phrase())
            .collect();
        let can = match can.split_last() {
            None => String::new(),
            Some((last, [])) => format!("can {last}"),
            Some((last, rest)) => format!("can {} and {last}", rest.join(", ")),
        };
        let what = match (superuser, can.is_empty()) {
            (true, true) => "is a superuser".to_string(),
            (true, false) => format!("is a superuser and {can}"),
            (false, _) => can,
        };
        let level = if reaches.iter().all(|r| *r == Reach::Write) {
            "note"
        } else {
            "warning"
        };
        Some(format!(
            "{level}: login {} {what} ({}); sqlora still runs read-only, but a read-only login \
             is a second wall — see README \"A read-only login\"",
            self.login,
            names.join(", ")
        ))
    }
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

/// A `--db` (or `--feedback-db`) value fit for display: the user is kept, the password and
/// the query string (which may carry `password=`) are dropped. The credentials end at the
/// URL's *last* `@`, so a password holding `/`, `@`, `:`, `?` or `%2F` never shows, even in a
/// URL too malformed to parse. A value without `://` (a file path) is returned as it is.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (user, place) = match rest.rsplit_once('@') {
        Some((credentials, place)) => {
            let user = credentials
                .split(':')
                .next()
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("");
            (format!("{user}@"), place)
        }
        None => (String::new(), rest),
    };
    let place = place.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{user}{place}")
}

/// The schemas of a PostgreSQL database a user may name with `--schema` (not `pg_*` nor
/// `information_schema`), sorted; empty for the other backends, which have one namespace.
pub fn user_schemas(db: &mut dyn Database) -> Result<Vec<String>, DbError> {
    if db.dialect() != Dialect::Postgres {
        return Ok(Vec::new());
    }
    let out = db.query(
        "SELECT nspname::text FROM pg_catalog.pg_namespace \
         WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1",
        &Limits::default(),
        &Cancel::new(),
    )?;
    Ok(out
        .rows
        .iter()
        .filter_map(|r| r.first().map(Value::display))
        .collect())
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
        let file = |p: &str| Target::SqliteFile(p.into());
        for (url, target) in [
            ("sqlite:///tmp/a.db", file("/tmp/a.db")),
            ("sqlite:rel.db?mode=ro", file("rel.db")),
            ("shop.sqlite", file("shop.sqlite")),
            (
                "postgresql://u@h/db",
                Target::Postgres("postgresql://u@h/db".into()),
            ),
            (
                "mariadb://root@h:3306/x",
                Target::MySql("mariadb://root@h:3306/x".into()),
            ),
        ] {
            assert_eq!(parse_target(url).unwrap(), target, "{url}");
        }
        assert!(parse_target("mongodb://x/y").is_err());
    }

    #[test]
    fn urls_never_show_a_password() {
        for (url, shown) in [
            (
                "postgres://ann:s3cret@db.example:5432/shop?sslmode=require",
                "postgres://ann@db.example:5432/shop",
            ),
            (
                "postgres://u:pa/ss@127.0.0.1:5432/x",
                "postgres://u@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p@ss@127.0.0.1:5432/x",
                "postgres://u@127.0.0.1:5432/x",
            ),
            ("mysql://u:pa:ss@h:3306/x", "mysql://u@h:3306/x"),
            ("mariadb://u:pa%2Fss@h/x", "mariadb://u@h/x"),
            ("postgres://u:a/b?c@d@h/x?password=zz", "postgres://u@h/x"),
            ("postgres://h/x?user=u&password=zz", "postgres://h/x"),
            ("mysql://root@127.0.0.1/x", "mysql://root@127.0.0.1/x"),
            ("mysql://h:1", "mysql://h:1"),
            ("/tmp/shop.db", "/tmp/shop.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn value_display() {
        assert_eq!(Value::Null.display(), "NULL");
        assert_eq!(Value::Float(2.0).display(), "2.0");
        assert_eq!(Value::Float(2.5).display(), "2.5");
        assert_eq!(Value::Bytes(vec![1, 255]).display(), "\\x01ff");
    }
}
