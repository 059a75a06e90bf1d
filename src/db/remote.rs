//! What the sqlx backends (PostgreSQL, MySQL) share: their tokio runtime and connection
//! ([`Session`]), the read-only transaction every statement runs in and always rolls back,
//! cancellation and timeouts around a server round trip, preparing a statement to learn its
//! columns, and error text kept to one line without secrets.
//!
//! The SQL that differs (how a transaction is made read-only and limited in time, how the
//! server is asked to stop a statement, which error codes mean it did) stays in each backend.

use std::future::Future;
use std::time::{Duration, Instant};

use super::DbError;
use crate::cancel::Cancel;

/// How long connecting may take before it is reported as timed out.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the server was asked to stop, how long to wait for it before giving up on the
/// connection.
const GRACE: Duration = Duration::from_secs(5);

/// A single-threaded runtime owned by one connection: the rest of sqlora stays synchronous.
pub fn runtime() -> Result<tokio::runtime::Runtime, DbError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DbError::Query(format!("cannot start the database runtime: {e}")))
}

/// The URL without its password, for messages (see [`super::redact_url`]).
pub fn redact(url: &str) -> String {
    super::redact_url(url)
}

/// Flattens an error message onto one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// sqlx's error without its "error returned from database:" prefix.
pub fn describe_sqlx(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// sqlx's error as one line (see [`describe_sqlx`]).
pub fn reason(e: &sqlx::Error) -> String {
    one_line(&describe_sqlx(e))
}

/// A query error as one line.
pub fn query_error(e: &sqlx::Error) -> DbError {
    DbError::Query(reason(e))
}

/// The error for a URL whose options do not parse (its password left out).
pub fn bad_url(url: &str, e: &sqlx::Error) -> DbError {
    DbError::Connect {
        target: redact(url),
        reason: one_line(&e.to_string()),
    }
}

/// A new connection, or why not on one line; connecting gives up after [`CONNECT_TIMEOUT`].
pub async fn connect<C>(
    connecting: impl Future<Output = Result<C, sqlx::Error>>,
) -> Result<C, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| reason(&e))
}

/// The error of a statement, where `stopped` says the server stopped it for our time limit or
/// our Ctrl-C (each backend knows its own error codes for that).
pub fn classify(e: &sqlx::Error, stopped: bool, timeout: Duration, cancel: &Cancel) -> DbError {
    if stopped {
        return if cancel.is_set() {
            DbError::Cancelled
        } else {
            DbError::Timeout(timeout)
        };
    }
    query_error(e)
}

/// One server connection of a sqlx backend: its runtime, the open connection (none once it
/// broke: the next statement connects again) and the server's label for messages.
pub struct Session<C> {
    pub rt: tokio::runtime::Runtime,
    pub conn: Option<C>,
    pub label: String,
}

impl<C> Session<C>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    /// Keeps the connection `connecting` makes (with what was read while setting it up, given
    /// back); its failure is a connection error naming the server.
    pub fn open<S>(
        &mut self,
        connecting: impl Future<Output = Result<(C, S), String>>,
    ) -> Result<S, DbError> {
        let (conn, setup) = self
            .rt
            .block_on(connecting)
            .map_err(|reason| DbError::Connect {
                target: self.label.clone(),
                reason,
            })?;
        self.conn = Some(conn);
        Ok(setup)
    }

    /// Runs `f` on the open connection in a transaction opened by `begin` and always rolled
    /// back (see [`rolled_back`]), watching `cancel` and the time (see [`with_cancel`]);
    /// `stopped` tells the backend's own timeout and cancel errors (see [`classify`]).
    pub fn read_only<T, F, Fut>(
        &mut self,
        begin: [String; 2],
        stop_server: impl Future<Output = ()>,
        stopped: impl FnOnce(&sqlx::Error) -> bool,
        timeout: Duration,
        cancel: &Cancel,
        f: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = (C, Result<T, sqlx::Error>)>,
    {
        let conn = self.conn.take().expect("connected");
        let work = rolled_back(conn, begin, f);
        let finished = self
            .rt
            .block_on(with_cancel(work, cancel, timeout, stop_server));
        let (conn, result) = settle(finished, &self.label, timeout, cancel, |e| {
            classify(e, stopped(e), timeout, cancel)
        });
        self.conn = conn;
        result
    }
}

/// Prepares `sql` without running it (a clean error for unknown names, and exactly one
/// statement) and gives the names and type names of its result columns.
pub async fn prepared<C>(conn: &mut C, sql: &str) -> Result<(Vec<String>, Vec<String>), sqlx::Error>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    use sqlx::{Column, Executor, SqlSafeStr, Statement, TypeInfo};
    let stmt = (&mut *conn)
        .prepare(sqlx::AssertSqlSafe(sql.to_string()).into_sql_str())
        .await?;
    Ok(stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
        .unzip())
}

/// Runs `begin` (the statements that open a read-only transaction under the time limit), then
/// `f` if they worked, then always `ROLLBACK`, also after an error: nothing stays open on the
/// connection.
pub async fn rolled_back<C, T, F, Fut>(
    mut conn: C,
    begin: [String; 2],
    f: F,
) -> (C, Result<T, sqlx::Error>)
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = (C, Result<T, sqlx::Error>)>,
{
    let opened = async {
        for statement in begin {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let (mut conn, result) = match opened {
        Ok(()) => f(conn).await,
        Err(e) => (conn, Err(e)),
    };
    let rollback = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
    (conn, result.and_then(|v| rollback.map(|_| v)))
}

/// Whether the connection itself failed (it is then dropped and made again).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::PoolClosed
            | sqlx::Error::PoolTimedOut
    )
}

/// Runs `work`, watching `cancel` and the time. On Ctrl-C, or when `timeout` has passed by a
/// second without the server's own timeout firing, `stop_server` runs once (it asks the
/// server to stop the statement, so `work` ends with an error). Returns `None` when the
/// server still has not answered `GRACE` later: the connection is then abandoned.
pub async fn with_cancel<W: Future, C: Future<Output = ()>>(
    work: W,
    cancel: &Cancel,
    timeout: Duration,
    stop_server: C,
) -> Option<W::Output> {
    tokio::pin!(work);
    let start = Instant::now();
    let mut stop_server = Some(stop_server);
    let mut give_up: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            _ = tick.tick() => {
                let now = Instant::now();
                let overdue = now.duration_since(start) > timeout + Duration::from_secs(1);
                if (cancel.is_set() || overdue) && give_up.is_none() {
                    if let Some(stop) = stop_server.take() {
                        let _ = tokio::time::timeout(GRACE, stop).await;
                    }
                    give_up = Some(Instant::now() + GRACE);
                }
                if give_up.is_some_and(|t| now > t) {
                    return None;
                }
            }
        }
    }
}

/// Turns what [`with_cancel`] gave back into the statement's result and the connection to
/// keep: a connection that broke or never answered is dropped (the next statement connects
/// again); `classify` names the backend's own timeout and cancel errors.
pub fn settle<C, T>(
    finished: Option<(C, Result<T, sqlx::Error>)>,
    label: &str,
    timeout: Duration,
    cancel: &Cancel,
    classify: impl FnOnce(&sqlx::Error) -> DbError,
) -> (Option<C>, Result<T, DbError>) {
    match finished {
        Some((conn, Ok(v))) => (Some(conn), Ok(v)),
        Some((_, Err(e))) if is_connection_error(&e) => (
            None,
            Err(DbError::Query(format!(
                "lost the connection to {label}: {}",
                reason(&e)
            ))),
        ),
        Some((conn, Err(e))) => (Some(conn), Err(classify(&e))),
        // The server did not answer in time even after a cancel: the connection is gone.
        None => (
            None,
            Err(if cancel.is_set() {
                DbError::Cancelled
            } else {
                DbError::Timeout(timeout)
            }),
        ),
    }
}

/// The first keyword of a statement, past blanks, comments and opening parentheses.
pub fn first_keyword(sql: &str) -> &str {
    let mut s = sql;
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = t.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = t.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            let end = t
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(t.len());
            return &t[..end];
        }
    }
}

/// Hex text to bytes (`00ff` → `[0, 255]`).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact("postgres://ann:s3cret@db.example:5432/shop?sslmode=require"),
            "postgres://ann@db.example:5432/shop"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1/x"),
            "mysql://root@127.0.0.1/x"
        );
        assert_eq!(redact("mysql://h:1"), "mysql://h:1");
    }

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(
            first_keyword("  -- hi\n /* x */ (EXPLAIN SELECT 1"),
            "EXPLAIN"
        );
        assert_eq!(first_keyword("select 1"), "select");
        assert_eq!(first_keyword("-- only a comment"), "");
    }

    #[test]
    fn hex() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
