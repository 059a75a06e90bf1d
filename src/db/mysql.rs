//! MySQL and MariaDB through sqlx's MySQL driver, on a single-threaded tokio runtime owned by
//! this connection.
//!
//! The session is `READ ONLY`, and every statement runs in `START TRANSACTION READ ONLY` under
//! `max_statement_time` (MariaDB) or `max_execution_time` (MySQL), then is rolled back. The
//! statement is prepared first (clean errors for unknown names; the server accepts exactly one
//! statement there), then the same text runs through the text protocol so values arrive as
//! the server formats them: exact decimals, dates and times as written. Ctrl-C sends
//! `KILL QUERY` from a second connection.
//!
//! One write no transaction mode stops: `SELECT … INTO OUTFILE` writes a file on the server
//! for a login with the FILE privilege. The guard refuses it; use a login without FILE. At
//! connect the login's privileges are read once from `SHOW GRANTS` ([`Powers`]): FILE, SUPER,
//! ALL PRIVILEGES and the other admin powers, and any write privilege for a softer mention.
//!
//! The server must lex SQL as the guard's parser does (`\` escapes in strings, `"…"` is a
//! string): every statement's `SET SESSION` also sets the session `sql_mode` to the one found
//! at connect less `ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES` and the combination modes that
//! include them, whatever the global mode or a previous statement set.

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Column, Connection, Row, TypeInfo};

use super::remote::{self, query_error as map_err};
use super::samples::{self, ENUM_MAX, SAMPLE_QUERY_MAX_TABLES};
use super::{Database, DbError, Limits, Powers, Reach};
use crate::cancel::Cancel;
use crate::schema::{Column as SchemaColumn, ForeignKey, Schema, Table, TableKind};
use crate::sql::{Dialect, Outcome, Value};

pub struct MySqlDb {
    session: remote::Session<MySqlConnection>,
    opts: MySqlConnectOptions,
    connection_id: u64,
    mariadb: bool,
    database: String,
    /// The session sql_mode every statement runs under (see [`lexing_sql_mode`]).
    sql_mode: String,
    powers: Powers,
}

/// The database's identity without connecting (see [`super::identity`]).
pub fn identity(url: &str) -> Result<String, DbError> {
    let normal = url.replacen("mariadb://", "mysql://", 1);
    let opts = MySqlConnectOptions::from_str(&normal).map_err(|e| remote::bad_url(url, &e))?;
    Ok(label(url, &opts, opts.get_database().unwrap_or("")))
}

/// `mysql://` or `mariadb://` (as `url` says), the login, the server and `database`.
fn label(url: &str, opts: &MySqlConnectOptions, database: &str) -> String {
    format!(
        "{}://{}@{}:{}/{}",
        if url.starts_with("mariadb") {
            "mariadb"
        } else {
            "mysql"
        },
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        database
    )
}

impl MySqlDb {
    /// Connects to a `mysql://` or `mariadb://` URL, which must name a database.
    pub fn connect(url: &str) -> Result<Self, DbError> {
        let rt = remote::runtime()?;
        let normal = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let opts = MySqlConnectOptions::from_str(&normal).map_err(|e| remote::bad_url(url, &e))?;
        let Some(database) = opts.get_database().map(str::to_string) else {
            return Err(DbError::Connect {
                target: remote::redact(url),
                reason: "no database named: add it to the URL, e.g. mysql://user@host:3306/shop"
                    .into(),
            });
        };
        let label = label(url, &opts, &database);
        let mut db = Self {
            session: remote::Session {
                rt,
                conn: None,
                label,
            },
            opts,
            connection_id: 0,
            mariadb: false,
            database,
            sql_mode: String::new(),
            powers: Powers::default(),
        };
        db.ensure_connected()?;
        // Best effort: a server that will not say leaves the login unjudged.
        db.powers = db.read_powers().unwrap_or_default();
        Ok(db)
    }

    /// The login (`CURRENT_USER()`) and what `SHOW GRANTS` says it holds beyond reading,
    /// with the privileges of its active roles.
    fn read_powers(&mut self) -> Result<Powers, DbError> {
        let mariadb = self.mariadb;
        let (login, lines) = self.read_only(
            Duration::from_secs(10),
            &Cancel::new(),
            move |mut conn| async move {
                let r = async {
                    let row = sqlx::raw_sql("SELECT CURRENT_USER(), CURRENT_ROLE()")
                        .fetch_one(&mut conn)
                        .await?;
                    let login = text(&row, 0)?.unwrap_or_default();
                    let role = text(&row, 1)?.unwrap_or_default();
                    // MariaDB lists the active role's grants itself; MySQL only with USING.
                    let using = !mariadb && !role.is_empty() && role != "NONE";
                    let mut rows = Vec::new();
                    if using {
                        if let Ok(r) = sqlx::raw_sql(AssertSqlSafe(format!(
                            "SHOW GRANTS FOR CURRENT_USER() USING {role}"
                        )))
                        .fetch_all(&mut conn)
                        .await
                        {
                            rows = r;
                        }
                    }
                    if rows.is_empty() {
                        rows = sqlx::raw_sql("SHOW GRANTS").fetch_all(&mut conn).await?;
                    }
                    let lines = rows
                        .iter()
                        .map(|r| text(r, 0).map(Option::unwrap_or_default))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((login, lines))
                }
                .await;
                (conn, r)
            },
        )?;
        let mut powers = Powers {
            login,
            held: Vec::new(),
        };
        for line in &lines {
            add_grant(line, &mut powers);
        }
        Ok(powers)
    }

    fn ensure_connected(&mut self) -> Result<(), DbError> {
        if self.session.conn.is_some() {
            return Ok(());
        }
        let opts = self.opts.clone();
        let connect = async move {
            let mut conn = remote::connect(MySqlConnection::connect_with(&opts)).await?;
            let setup = async {
                let (id, version): (u64, String) =
                    sqlx::query_as("SELECT CONNECTION_ID(), VERSION()")
                        .fetch_one(&mut conn)
                        .await?;
                let mode = sqlx::raw_sql("SELECT @@SESSION.sql_mode")
                    .fetch_one(&mut conn)
                    .await?;
                let mode = lexing_sql_mode(&text(&mode, 0)?.unwrap_or_default());
                // Every transaction of this session is read-only unless it says otherwise,
                // which sqlora never does.
                sqlx::raw_sql("SET SESSION TRANSACTION READ ONLY")
                    .execute(&mut conn)
                    .await?;
                let mariadb = version.to_ascii_lowercase().contains("mariadb");
                Ok::<_, sqlx::Error>((id, mariadb, mode))
            }
            .await
            .map_err(|e| remote::reason(&e))?;
            Ok::<_, String>((conn, setup))
        };
        let (id, mariadb, mode) = self.session.open(connect)?;
        self.connection_id = id;
        self.mariadb = mariadb;
        self.sql_mode = mode;
        Ok(())
    }

    /// Runs `f` inside a read-only transaction under the statement time limit, always rolling
    /// back; Ctrl-C stops the running statement on the server.
    fn read_only<T, F, Fut>(
        &mut self,
        timeout: Duration,
        cancel: &Cancel,
        f: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(MySqlConnection) -> Fut,
        Fut: std::future::Future<Output = (MySqlConnection, Result<T, sqlx::Error>)>,
    {
        self.ensure_connected()?;
        // One SET: the time limit, and the lexing the guard assumed (see the module doc).
        let limit = if self.mariadb {
            format!(
                "SET SESSION max_statement_time = {:.3}, sql_mode = '{}'",
                timeout.as_secs_f64(),
                self.sql_mode
            )
        } else {
            format!(
                "SET SESSION max_execution_time = {}, sql_mode = '{}'",
                timeout.as_millis().clamp(1, u32::MAX as u128),
                self.sql_mode
            )
        };
        let opts = self.opts.clone();
        let id = self.connection_id;
        let begin = [limit, "START TRANSACTION READ ONLY".to_string()];
        let stop_server = async move {
            if let Ok(mut c) = MySqlConnection::connect_with(&opts).await {
                let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        };
        self.session
            .read_only(begin, stop_server, stopped, timeout, cancel, f)
    }
}

/// Modes under which the server would read SQL unlike the guard's parser (sqlparser's MySQL
/// dialect): `"…"` as an identifier, `\` as an ordinary character, or (MariaDB's `ORACLE`) a
/// whole other grammar. The combination modes are dropped by name; their other parts are
/// listed on their own in `@@sql_mode` and stay.
const LEXING_MODES: &[&str] = &[
    "ANSI_QUOTES",
    "NO_BACKSLASH_ESCAPES",
    "ANSI",
    "ORACLE",
    "POSTGRESQL",
    "MSSQL",
    "DB2",
    "MAXDB",
];

/// `mode` without [`LEXING_MODES`] (and without anything that is not a mode name, so the
/// result can be written into a `SET` as it is).
fn lexing_sql_mode(mode: &str) -> String {
    mode.split(',')
        .map(str::trim)
        .filter(|m| {
            !m.is_empty()
                && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !LEXING_MODES.iter().any(|x| x.eq_ignore_ascii_case(m))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Privileges that write data or change the schema: the softer mention.
const WRITES: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "INDEX",
    "TRIGGER",
    "EVENT",
    "CREATE VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "CREATE TABLESPACE",
    "DELETE HISTORY",
];

/// What one privilege (upper case, `_` read as a space: MySQL writes `CONNECTION_ADMIN`,
/// MariaDB `CONNECTION ADMIN`) reaches; `global` when granted `ON *.*`.
fn reaches(privilege: &str, global: bool) -> &'static [Reach] {
    match privilege {
        "ALL" | "ALL PRIVILEGES" if global => &[
            Reach::Superuser,
            Reach::ReadFiles,
            Reach::WriteFiles,
            Reach::SignalSessions,
            Reach::SeeSessions,
            Reach::ServerSettings,
            Reach::Shutdown,
            Reach::Replication,
            Reach::CreateRoles,
            Reach::Write,
        ],
        "ALL" | "ALL PRIVILEGES" => &[Reach::Write],
        "FILE" => &[Reach::ReadFiles, Reach::WriteFiles],
        "SUPER" => &[Reach::SignalSessions, Reach::ServerSettings],
        "CONNECTION ADMIN" => &[Reach::SignalSessions],
        "PROCESS" => &[Reach::SeeSessions],
        "SHUTDOWN" => &[Reach::Shutdown],
        "RELOAD" | "SYSTEM VARIABLES ADMIN" => &[Reach::ServerSettings],
        "CREATE USER" => &[Reach::CreateRoles],
        "GRANT OPTION" => &[Reach::GrantOthers],
        p if p.starts_with("REPLICATION")
            || p.starts_with("BINLOG ADMIN")
            || p == "BINLOG REPLAY" =>
        {
            &[Reach::Replication]
        }
        p if WRITES.contains(&p) => &[Reach::Write],
        _ => &[],
    }
}

/// Adds what one `SHOW GRANTS` line grants: `GRANT <privileges> ON <target> TO <login>
/// [WITH GRANT OPTION]`. Role grants (no `ON`) and `PROXY` add nothing here.
fn add_grant(line: &str, powers: &mut Powers) {
    let line = line.trim();
    if !line
        .get(..6)
        .is_some_and(|g| g.eq_ignore_ascii_case("GRANT "))
    {
        return;
    }
    let rest = &line[6..];
    // The privilege list runs to the first ` ON ` outside parentheses (column lists) and
    // backquotes.
    let (mut depth, mut quoted, mut start) = (0usize, false, 0usize);
    let mut privileges = Vec::new();
    let mut target = None;
    for (i, c) in rest.char_indices() {
        match c {
            '`' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                privileges.push(&rest[start..i]);
                start = i + 1;
            }
            ' ' if !quoted
                && depth == 0
                && rest
                    .get(i..i + 4)
                    .is_some_and(|s| s.eq_ignore_ascii_case(" ON ")) =>
            {
                privileges.push(&rest[start..i]);
                target = Some(&rest[i + 4..]);
                break;
            }
            _ => {}
        }
    }
    let Some(target) = target else { return };
    let upper = target.to_ascii_uppercase();
    let global = upper.trim_start().starts_with("*.* ");
    let names: Vec<String> = privileges
        .iter()
        .map(|p| p.split('(').next().unwrap_or("").trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if names.iter().any(|p| p.eq_ignore_ascii_case("PROXY")) {
        return;
    }
    for name in &names {
        let norm = name.to_ascii_uppercase().replace('_', " ");
        for &reach in reaches(&norm, global) {
            powers.add(name, reach);
        }
    }
    if upper.contains(" WITH GRANT OPTION") {
        powers.add("GRANT OPTION", Reach::GrantOthers);
    }
}

/// 1969 (MariaDB max_statement_time), 3024 (MySQL max_execution_time) and 1317 (KILL QUERY)
/// are our time limit or our Ctrl-C.
fn stopped(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    };
    matches!(code, Some(1969 | 3024 | 1317))
}

/// A value in the text protocol, typed where sqlora has a type for it.
fn decode(type_name: &str, bytes: &[u8]) -> Value {
    let text = || String::from_utf8_lossy(bytes).into_owned();
    match type_name {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "BOOLEAN" | "YEAR"
        | "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => {
            text()
                .parse()
                .map_or_else(|_| Value::Text(text()), Value::Int)
        }
        // Unsigned 64-bit may not fit an i64: keep it exact.
        "BIGINT UNSIGNED" => text()
            .parse()
            .map_or_else(|_| Value::Decimal(text()), Value::Int),
        "FLOAT" | "DOUBLE" => text()
            .parse()
            .map_or_else(|_| Value::Text(text()), Value::Float),
        "DECIMAL" => Value::Decimal(text()),
        "BIT" => Value::Int(bytes.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b))),
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => {
            Value::Bytes(bytes.to_vec())
        }
        _ => Value::Text(text()),
    }
}

/// The type name to decode column `i` by. The server flags text with a `_bin` collation
/// (MariaDB's JSON, for one) like binary data; only the `binary` collation means bytes.
fn column_type(row: &MySqlRow, i: usize) -> String {
    let info = row.columns()[i].type_info();
    if <String as sqlx::Type<sqlx::MySql>>::compatible(info) {
        match info.name() {
            "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                "TEXT".to_string()
            }
            other => other.to_string(),
        }
    } else {
        info.name().to_string()
    }
}

fn decode_row(row: &MySqlRow, types: &[String]) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw: Option<&[u8]> = row.try_get_unchecked(i)?;
            Ok(match raw {
                None => Value::Null,
                Some(b) => decode(types.get(i).map_or("TEXT", String::as_str), b),
            })
        })
        .collect()
}

/// Text of column `i` whatever type the server labelled it with (information_schema columns
/// are binary strings on some versions).
fn text(row: &MySqlRow, i: usize) -> Result<Option<String>, sqlx::Error> {
    let raw: Option<&[u8]> = row.try_get_unchecked(i)?;
    Ok(raw.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// `enum('a','b''c')` → `["a", "b'c"]`.
fn enum_labels(column_type: &str) -> Vec<String> {
    let Some(inner) = column_type
        .strip_prefix("enum(")
        .and_then(|s| s.strip_suffix(')'))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, in_quote) {
            ('\'', false) => in_quote = true,
            ('\'', true) if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            ('\'', true) => {
                in_quote = false;
                out.push(std::mem::take(&mut cur));
            }
            ('\\', true) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (c, true) => cur.push(c),
            _ => {}
        }
    }
    out
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

const TABLES_SQL: &str = "\
SELECT TABLE_NAME, TABLE_TYPE, TABLE_COMMENT FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME";

const COLUMNS_SQL: &str = "\
SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, COLUMN_COMMENT,
       DATA_TYPE
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, ORDINAL_POSITION";

const KEYS_SQL: &str = "\
SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA,
       REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = DATABASE()
  AND (CONSTRAINT_NAME = 'PRIMARY' OR REFERENCED_TABLE_NAME IS NOT NULL)
ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION";

fn is_text_type(data_type: &str) -> bool {
    matches!(
        data_type,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "set"
    )
}

fn is_date_like(data_type: &str) -> bool {
    data_type.contains("date") || data_type.contains("time")
}

impl Database for MySqlDb {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    fn describe(&self) -> String {
        self.session.label.clone()
    }

    fn powers(&self) -> Powers {
        self.powers.clone()
    }

    fn introspect(&mut self) -> Result<Schema, DbError> {
        let (tables, columns, keys) = self.read_only(
            Duration::from_secs(60),
            &Cancel::new(),
            |mut conn| async move {
                let r = async {
                    let t = sqlx::query(TABLES_SQL).fetch_all(&mut conn).await?;
                    let c = sqlx::query(COLUMNS_SQL).fetch_all(&mut conn).await?;
                    let k = sqlx::query(KEYS_SQL).fetch_all(&mut conn).await?;
                    Ok((t, c, k))
                }
                .await;
                (conn, r)
            },
        )?;
        let get = |row: &MySqlRow, i: usize| text(row, i).map_err(|e| map_err(&e));
        let mut out: Vec<Table> = Vec::with_capacity(tables.len());
        let mut index = std::collections::HashMap::new();
        for row in &tables {
            let name = get(row, 0)?.unwrap_or_default();
            let kind = get(row, 1)?.unwrap_or_default();
            let comment = get(row, 2)?.filter(|c| !c.is_empty() && c != "VIEW");
            index.insert(name.clone(), out.len());
            let kind = if kind.contains("VIEW") {
                TableKind::View
            } else {
                TableKind::Table
            };
            out.push(Table {
                comment,
                ..Table::new(None, name, kind)
            });
        }
        let mut text_columns = Vec::new();
        for row in &columns {
            let table = get(row, 0)?.unwrap_or_default();
            let Some(&ti) = index.get(&table) else {
                continue;
            };
            let column_type = get(row, 2)?.unwrap_or_default();
            let data_type = get(row, 6)?.unwrap_or_default().to_ascii_lowercase();
            let enum_values = enum_labels(&column_type);
            let shown_type = if enum_values.is_empty() {
                column_type
            } else {
                "enum".to_string()
            };
            if is_text_type(&data_type) || is_date_like(&data_type) {
                text_columns.push((ti, out[ti].columns.len(), is_date_like(&data_type)));
            }
            out[ti].columns.push(SchemaColumn {
                name: get(row, 1)?.unwrap_or_default(),
                data_type: shown_type,
                not_null: get(row, 3)?.as_deref() == Some("NO"),
                default: get(row, 4)?,
                comment: get(row, 5)?.filter(|c| !c.is_empty()),
                samples: Vec::new(),
                enum_values,
            });
        }
        // Rows come ordered by table and constraint: consecutive rows of one foreign key
        // are its columns in order.
        let mut last: Option<(String, String)> = None;
        for row in &keys {
            let table = get(row, 0)?.unwrap_or_default();
            let constraint = get(row, 1)?.unwrap_or_default();
            let column = get(row, 2)?.unwrap_or_default();
            let Some(&ti) = index.get(&table) else {
                continue;
            };
            if constraint == "PRIMARY" {
                out[ti].primary_key.push(column);
                continue;
            }
            let ref_schema = get(row, 3)?.filter(|s| *s != self.database);
            let ref_table = get(row, 4)?.unwrap_or_default();
            let ref_column = get(row, 5)?.unwrap_or_default();
            let key = (table.clone(), constraint.clone());
            if last.as_ref() == Some(&key) {
                if let Some(fk) = out[ti].foreign_keys.last_mut() {
                    fk.columns.push(column);
                    fk.ref_columns.push(ref_column);
                }
            } else {
                out[ti].foreign_keys.push(ForeignKey {
                    columns: vec![column],
                    ref_schema,
                    ref_table,
                    ref_columns: vec![ref_column],
                });
            }
            last = Some(key);
        }
        if out.len() <= SAMPLE_QUERY_MAX_TABLES {
            self.sample(&mut out, &text_columns);
        }
        Ok(Schema { tables: out })
    }

    fn query(&mut self, sql: &str, limits: &Limits, cancel: &Cancel) -> Result<Outcome, DbError> {
        let sql = sql.to_string();
        let max_rows = limits.max_rows;
        self.read_only(limits.timeout, cancel, move |mut conn| async move {
            let r = async {
                // Prepared first: a clean error for unknown names, and one statement only, so
                // the text run below is that one statement.
                let (columns, _) = remote::prepared(&mut conn, &sql).await?;
                let mut out = Outcome {
                    columns,
                    rows: Vec::new(),
                    truncated: false,
                };
                let mut types: Option<Vec<String>> = None;
                let mut rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&mut conn);
                while let Some(row) = rows.try_next().await? {
                    if out.rows.len() == max_rows {
                        out.truncated = true;
                        break;
                    }
                    let types = types.get_or_insert_with(|| {
                        (0..row.columns().len())
                            .map(|i| column_type(&row, i))
                            .collect()
                    });
                    out.rows.push(decode_row(&row, types)?);
                }
                drop(rows);
                Ok(out)
            }
            .await;
            (conn, r)
        })
    }
}

impl MySqlDb {
    /// Distinct example values for text columns of small schemas: one query per table, over
    /// its first rows only, under a short time limit.
    fn sample(&mut self, tables: &mut [Table], text_columns: &[(usize, usize, bool)]) {
        let part = |column: &str, from: &str| {
            let col = quote(column);
            format!(
                "(SELECT GROUP_CONCAT(v SEPARATOR 0x1f) FROM (SELECT DISTINCT \
                 CAST({col} AS CHAR) AS v FROM (SELECT {col} FROM {from} LIMIT 2000) a \
                 WHERE {col} IS NOT NULL AND CHAR_LENGTH({col}) BETWEEN 1 AND 40 \
                 LIMIT {}) b)",
                ENUM_MAX + 1
            )
        };
        let read = |sql: String| {
            let joined = self.read_only(
                Duration::from_secs(5),
                &Cancel::new(),
                |mut conn| async move {
                    let r = async {
                        let row = sqlx::raw_sql(AssertSqlSafe(sql))
                            .fetch_one(&mut conn)
                            .await?;
                        (0..row.len())
                            .map(|i| text(&row, i))
                            .collect::<Result<Vec<_>, _>>()
                    }
                    .await;
                    (conn, r)
                },
            )?;
            Ok::<_, DbError>(
                joined
                    .into_iter()
                    .map(|j| {
                        j.map(|j| j.split('\u{1f}').map(str::to_string).collect())
                            .unwrap_or_default()
                    })
                    .collect(),
            )
        };
        samples::sample_tables(tables, text_columns, |t| quote(&t.name), part, read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_mode_loses_what_the_guard_does_not_lex() {
        for (mode, kept) in [
            (
                "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI",
                "REAL_AS_FLOAT,PIPES_AS_CONCAT,IGNORE_SPACE",
            ),
            (
                "NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES,ORACLE",
                "STRICT_TRANS_TABLES",
            ),
            ("", ""),
            ("X'; DROP", ""),
        ] {
            assert_eq!(lexing_sql_mode(mode), kept, "{mode}");
        }
    }

    #[test]
    fn grants_name_their_powers() {
        let mut p = Powers::default();
        for line in [
            "GRANT USAGE ON *.* TO `a`@`%` IDENTIFIED BY PASSWORD '*D821'",
            "GRANT `r` TO `a`@`%`",
            "GRANT PROXY ON ''@'%' TO 'a'@'%' WITH GRANT OPTION",
            "GRANT SELECT ON `shop`.* TO `a`@`%`",
        ] {
            add_grant(line, &mut p);
        }
        assert_eq!(p.warning(), None);
        add_grant(
            "GRANT SELECT (`x`, `y on z`), INSERT (`x`) ON `shop`.`t` TO `a`@`%`",
            &mut p,
        );
        let w = p.warning().unwrap();
        assert!(w.starts_with("note: login  can write data"), "{w}");
        add_grant(
            "GRANT FILE, PROCESS, CONNECTION_ADMIN ON *.* TO `a`@`%` WITH GRANT OPTION",
            &mut p,
        );
        let names: Vec<&str> = p.held.iter().map(|h| h.name.as_str()).collect();
        let expected = ["INSERT", "FILE", "FILE", "PROCESS", "CONNECTION_ADMIN"];
        assert_eq!(names[..5], expected);
        assert_eq!(names[5..], ["GRANT OPTION"]);
        let w = p.warning().unwrap();
        assert!(w.starts_with("warning: "), "{w}");
        let listed = "(FILE, CONNECTION_ADMIN, PROCESS, GRANT OPTION, INSERT)";
        assert!(w.contains(listed), "{w}");

        let mut root = Powers::default();
        add_grant(
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
            &mut root,
        );
        let w = root.warning().unwrap();
        let what = "is a superuser and can read server files";
        assert!(w.contains(what), "{w}");
        assert!(w.contains("(ALL PRIVILEGES, GRANT OPTION)"), "{w}");
        let mut db_owner = Powers::default();
        add_grant("GRANT ALL PRIVILEGES ON `shop`.* TO `o`@`%`", &mut db_owner);
        assert!(db_owner.warning().unwrap().starts_with("note: "));
    }

    #[test]
    fn enum_labels_parse_quotes() {
        assert_eq!(enum_labels("enum('a','b''c','d,e')"), ["a", "b'c", "d,e"]);
        assert!(enum_labels("varchar(10)").is_empty());
    }

    #[test]
    fn text_protocol_values_keep_their_types() {
        assert_eq!(decode("INT", b"-7"), Value::Int(-7));
        assert_eq!(
            decode("BIGINT UNSIGNED", b"18446744073709551615"),
            Value::Decimal("18446744073709551615".into())
        );
        assert_eq!(decode("DECIMAL", b"0.10"), Value::Decimal("0.10".into()));
        assert_eq!(decode("BIT", &[1, 0]), Value::Int(256));
        assert_eq!(decode("BLOB", &[0, 255]), Value::Bytes(vec![0, 255]));
        assert_eq!(
            decode("DATETIME", b"2024-01-02 03:04:05"),
            Value::Text("2024-01-02 03:04:05".into())
        );
    }
}
