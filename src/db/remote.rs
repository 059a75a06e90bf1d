//! What the sqlx backends (PostgreSQL, MySQL) share: their tokio runtime, cancellation and
//! timeouts around a server round trip, and error text kept to one line without secrets.

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
