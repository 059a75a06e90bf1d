//! PostgreSQL through sqlx, on a single-threaded tokio runtime owned by this connection (the
//! rest of sqlora stays synchronous).
//!
//! Every statement runs inside `BEGIN READ ONLY` with `SET LOCAL statement_timeout`, and is
//! then rolled back. The statement is first prepared (so unknown columns and type errors come
//! back as clean errors before anything runs, and only one statement is accepted), then run
//! as `DECLARE … NO SCROLL CURSOR FOR <statement>` and read with `FETCH`: PostgreSQL itself
//! accepts only a query there (no `COPY`, no DDL, no data-modifying `WITH`), and the row cap
//! costs no more than the rows read. Rows come back in PostgreSQL's text format, so numerics
//! stay exact and dates, intervals, arrays, json and enums read as `psql` shows them.
//! Ctrl-C sends `pg_cancel_backend` from a second connection.
//!
//! Each connection sets `standard_conforming_strings = on`, whatever the server, database or
//! role default, so the server reads string literals as the guard's parser does (a backslash
//! is an ordinary character in `'…'`). At connect the login's powers beyond reading are read
//! once ([`Powers`]): superuser and other role attributes, membership (direct or inherited)
//! in the file, program and signal roles, and write privileges in the introspected schemas.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row, TypeInfo, ValueRef};

use super::remote::{self, query_error as map_err};
use super::samples::{self, ENUM_MAX, SAMPLES, SAMPLE_QUERY_MAX_TABLES};
use super::{Database, DbError, Limits, Powers, Reach};
use crate::cancel::Cancel;
use crate::schema::{Column as SchemaColumn, ForeignKey, Schema, Table, TableKind};
use crate::sql::{Dialect, Outcome, Value};

pub struct PgDb {
    session: remote::Session<PgConnection>,
    opts: PgConnectOptions,
    pid: i32,
    /// Schemas to introspect, in search order; the first is the default (names unqualified).
    schemas: Vec<String>,
    powers: Powers,
}

impl PgDb {
    /// Connects to `url`; `schemas` chooses what to introspect (default: the search_path).
    pub fn connect(url: &str, schemas: &[String]) -> Result<Self, DbError> {
        let rt = remote::runtime()?;
        let opts = PgConnectOptions::from_str(url).map_err(|e| remote::bad_url(url, &e))?;
        let opts = opts.application_name("sqlora");
        let label = label(&opts);
        let mut db = Self {
            session: remote::Session {
                rt,
                conn: None,
                label,
            },
            opts,
            pid: 0,
            schemas: schemas.to_vec(),
            powers: Powers::default(),
        };
        db.ensure_connected()?;
        if db.schemas.is_empty() {
            let conn = db.session.conn.as_mut().expect("connected");
            let found: Vec<String> = db
                .session
                .rt
                .block_on(
                    sqlx::query_scalar("SELECT current_schemas(false)::text[]").fetch_one(conn),
                )
                .map_err(|e| map_err(&e))?;
            db.schemas = if found.is_empty() {
                vec!["public".into()]
            } else {
                found
            };
        }
        // Best effort: a server that will not say leaves the login unjudged.
        db.powers = db.read_powers().unwrap_or_default();
        Ok(db)
    }

    /// The login and what it holds beyond reading (see [`POWERS_SQL`]).
    fn read_powers(&mut self) -> Result<Powers, DbError> {
        let schemas = self.schemas.clone();
        let row: PowersRow = self.read_only(
            Duration::from_secs(10),
            &Cancel::new(),
            move |mut conn| async move {
                let r = sqlx::query_as(POWERS_SQL)
                    .bind(&schemas)
                    .fetch_one(&mut conn)
                    .await;
                (conn, r)
            },
        )?;
        Ok(powers_of(row))
    }

    fn ensure_connected(&mut self) -> Result<(), DbError> {
        if self.session.conn.is_some() {
            return Ok(());
        }
        let opts = self.opts.clone();
        let connect = async move {
            let mut conn = remote::connect(PgConnection::connect_with(&opts)).await?;
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| remote::reason(&e))?;
            // String literals as the guard's parser reads them, whatever the defaults.
            sqlx::raw_sql("SET standard_conforming_strings = on")
                .execute(&mut conn)
                .await
                .map_err(|e| remote::reason(&e))?;
            Ok::<_, String>((conn, pid))
        };
        self.pid = self.session.open(connect)?;
        Ok(())
    }

    /// Runs `f` on the connection inside a read-only transaction with a statement timeout,
    /// always rolling back; Ctrl-C cancels the running statement on the server.
    fn read_only<T, F, Fut>(
        &mut self,
        timeout: Duration,
        cancel: &Cancel,
        f: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(PgConnection) -> Fut,
        Fut: std::future::Future<Output = (PgConnection, Result<T, sqlx::Error>)>,
    {
        self.ensure_connected()?;
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        let opts = self.opts.clone();
        let pid = self.pid;
        let begin = [
            "BEGIN READ ONLY".to_string(),
            format!("SET LOCAL statement_timeout = {ms}"),
        ];
        let cancel_server = async move {
            if let Ok(mut c) = PgConnection::connect_with(&opts).await {
                let _ = sqlx::query("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        };
        self.session
            .read_only(begin, cancel_server, stopped, timeout, cancel, f)
    }

    fn default_schema(&self) -> &str {
        self.schemas.first().map_or("public", String::as_str)
    }

    fn qualify(&self, ns: &str) -> Option<String> {
        (ns != self.default_schema()).then(|| ns.to_string())
    }
}

fn label(opts: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or(opts.get_username())
    )
}

/// The database's identity without connecting (see [`super::identity`]).
pub fn identity(url: &str) -> Result<String, DbError> {
    PgConnectOptions::from_str(url)
        .map(|o| label(&o))
        .map_err(|e| remote::bad_url(url, &e))
}

/// 57014 is `query_canceled`: our timeout or our Ctrl-C.
fn stopped(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("57014"))
}

/// Whether the statement is an EXPLAIN (which a cursor cannot hold).
fn is_explain(sql: &str) -> bool {
    remote::first_keyword(sql).eq_ignore_ascii_case("explain")
}

/// A value in PostgreSQL's text format, typed where sqlora has a type for it.
fn decode(type_name: &str, text: &[u8]) -> Value {
    let s = String::from_utf8_lossy(text);
    let parsed = match type_name {
        "INT2" | "INT4" | "INT8" | "OID" => s.parse().ok().map(Value::Int),
        "FLOAT4" | "FLOAT8" => s.parse().ok().map(Value::Float),
        "NUMERIC" => Some(Value::Decimal(s.to_string())),
        "BOOL" => match s.as_ref() {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        "BYTEA" => s
            .strip_prefix("\\x")
            .and_then(remote::unhex)
            .map(Value::Bytes),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::Text(s.into_owned()))
}

fn decode_row(row: &PgRow, types: &[String]) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let bytes = raw.as_bytes().map_err(sqlx::Error::Decode)?;
            let ty = types
                .get(i)
                .cloned()
                .unwrap_or_else(|| raw.type_info().name().to_string());
            Ok(decode(&ty, bytes))
        })
        .collect()
}

fn is_text_type(type_name: &str, category: &str) -> bool {
    category == "S" || type_name.contains("char") || type_name == "text" || type_name == "citext"
}

fn is_date_like(type_name: &str) -> bool {
    type_name.contains("date") || type_name.contains("time")
}

const TABLES_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, c.relkind::text, obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname = ANY($1)
ORDER BY array_position($1, n.nspname::text), c.relname";

const COLUMNS_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum),
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e
            WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END,
       t.typcategory::text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition AND n.nspname = ANY($1)
ORDER BY n.nspname, c.relname, a.attnum";

const KEYS_SQL: &str = "\
SELECT con.contype::text, n.nspname::text, c.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord),
       fns.nspname::text, fc.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_namespace fns ON fns.oid = fc.relnamespace
WHERE con.contype IN ('p', 'f') AND n.nspname = ANY($1)
ORDER BY n.nspname, c.relname, con.contype DESC, con.conname";

const STATS_SQL: &str = "\
SELECT schemaname::text, tablename::text, attname::text, most_common_vals::text::text[],
       n_distinct::float8
FROM pg_stats WHERE schemaname = ANY($1) AND most_common_vals IS NOT NULL";

/// The login's role attributes, the powerful predefined roles it is a member of (directly or
/// through other roles; a superuser counts as a member of all), and, unless superuser, the
/// write privileges it holds on any table and the schemas it may create objects in, among
/// the introspected schemas.
const POWERS_SQL: &str = "\
SELECT current_user::text, r.rolsuper, r.rolreplication, r.rolcreaterole, r.rolcreatedb,
       r.rolbypassrls,
       ARRAY(SELECT g.rolname::text FROM pg_roles g
             WHERE g.rolname IN ('pg_read_server_files', 'pg_write_server_files',
                                 'pg_execute_server_program', 'pg_signal_backend')
               AND pg_has_role(current_user, g.oid, 'MEMBER')
             ORDER BY g.rolname),
       ARRAY(SELECT p FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
             WHERE NOT r.rolsuper AND EXISTS (
               SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'f')
                 AND has_table_privilege(c.oid, p))),
       ARRAY(SELECT n.nspname::text FROM pg_namespace n
             WHERE NOT r.rolsuper AND n.nspname = ANY($1)
               AND has_schema_privilege(n.oid, 'CREATE'))
FROM pg_roles r WHERE r.rolname = current_user";

type PowersRow = (
    String,
    bool,
    bool,
    bool,
    bool,
    bool,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

fn powers_of(row: PowersRow) -> Powers {
    let (login, superuser, replication, createrole, createdb, bypassrls, roles, writes, create) =
        row;
    let mut p = Powers {
        login,
        held: Vec::new(),
    };
    for (held, name, reach) in [
        (superuser, "SUPERUSER", Reach::Superuser),
        (replication, "REPLICATION", Reach::Replication),
        (createrole, "CREATEROLE", Reach::CreateRoles),
        (createdb, "CREATEDB", Reach::CreateDatabases),
        (bypassrls, "BYPASSRLS", Reach::BypassRls),
    ] {
        if held {
            p.add(name, reach);
        }
    }
    for role in &roles {
        let reach = match role.as_str() {
            "pg_read_server_files" => Reach::ReadFiles,
            "pg_write_server_files" => Reach::WriteFiles,
            "pg_execute_server_program" => Reach::RunPrograms,
            _ => Reach::SignalSessions,
        };
        p.add(role, reach);
    }
    for w in &writes {
        p.add(w, Reach::Write);
    }
    for ns in &create {
        p.add(&format!("CREATE on schema {ns}"), Reach::Write);
    }
    p
}

/// The rows of catalog query `sql` over the introspected `schemas` (its `$1`).
async fn catalog<R>(
    conn: &mut PgConnection,
    sql: &'static str,
    schemas: &[String],
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sql).bind(schemas).fetch_all(conn).await
}

type TableRow = (String, String, String, Option<String>);
type ColumnRow = (
    String,
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    String,
);
type KeyRow = (
    String,
    String,
    String,
    Vec<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
);
type StatsRow = (String, String, String, Vec<String>, f64);

impl Database for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn describe(&self) -> String {
        self.session.label.clone()
    }

    fn powers(&self) -> Powers {
        self.powers.clone()
    }

    fn introspect(&mut self) -> Result<Schema, DbError> {
        let schemas = self.schemas.clone();
        let (tables, columns, keys, stats) = self.read_only(
            Duration::from_secs(60),
            &Cancel::new(),
            move |mut conn| async move {
                let r = async {
                    let t: Vec<TableRow> = catalog(&mut conn, TABLES_SQL, &schemas).await?;
                    let c: Vec<ColumnRow> = catalog(&mut conn, COLUMNS_SQL, &schemas).await?;
                    let k: Vec<KeyRow> = catalog(&mut conn, KEYS_SQL, &schemas).await?;
                    let s: Vec<StatsRow> = catalog(&mut conn, STATS_SQL, &schemas).await?;
                    Ok((t, c, k, s))
                }
                .await;
                (conn, r)
            },
        )?;

        let mut out: Vec<Table> = Vec::with_capacity(tables.len());
        let mut index = std::collections::HashMap::new();
        for (ns, name, kind, comment) in tables {
            index.insert((ns.clone(), name.clone()), out.len());
            let kind = match kind.as_str() {
                "v" | "m" => TableKind::View,
                _ => TableKind::Table,
            };
            out.push(Table {
                comment,
                ..Table::new(self.qualify(&ns), name, kind)
            });
        }
        // (table index, column index) of text columns, for sampling.
        let mut text_columns = Vec::new();
        for (ns, table, name, ty, not_null, default, comment, labels, category) in columns {
            let Some(&ti) = index.get(&(ns, table)) else {
                continue;
            };
            if is_text_type(&ty, &category) || is_date_like(&ty) {
                text_columns.push((ti, out[ti].columns.len(), is_date_like(&ty)));
            }
            out[ti].columns.push(SchemaColumn {
                name,
                data_type: short_type(&ty),
                not_null,
                default,
                comment,
                samples: Vec::new(),
                enum_values: labels.unwrap_or_default(),
            });
        }
        for (kind, ns, table, cols, ref_ns, ref_table, ref_cols) in keys {
            let Some(&ti) = index.get(&(ns, table)) else {
                continue;
            };
            if kind == "p" {
                out[ti].primary_key = cols;
            } else if let (Some(ref_ns), Some(ref_table)) = (ref_ns, ref_table) {
                let fk = ForeignKey {
                    columns: cols,
                    ref_schema: self.qualify(&ref_ns),
                    ref_table,
                    ref_columns: ref_cols,
                };
                out[ti].foreign_keys.push(fk);
            }
        }
        // Samples: the planner's most common values where ANALYZE has run...
        for (ns, table, column, values, n_distinct) in stats {
            let Some(&ti) = index.get(&(ns, table)) else {
                continue;
            };
            let Some(ci) = out[ti].columns.iter().position(|c| c.name == column) else {
                continue;
            };
            let col = &out[ti].columns[ci];
            if !text_columns.iter().any(|&(t, c, _)| t == ti && c == ci)
                || !col.enum_values.is_empty()
                || out[ti].primary_key.contains(&column)
            {
                continue;
            }
            let date_like = is_date_like(&col.data_type);
            let all = n_distinct > 0.0 && n_distinct <= ENUM_MAX as f64;
            let keep = if date_like {
                1
            } else if all {
                ENUM_MAX
            } else {
                SAMPLES
            };
            out[ti].columns[ci].samples = values
                .into_iter()
                .filter(|v| (1..=40).contains(&v.chars().count()))
                .take(keep)
                .collect();
        }
        // ...and a quick look at the data for small schemas that were never analysed.
        if out.len() <= SAMPLE_QUERY_MAX_TABLES {
            self.sample_unanalysed(&mut out, &text_columns);
        }
        Ok(Schema { tables: out })
    }

    fn query(&mut self, sql: &str, limits: &Limits, cancel: &Cancel) -> Result<Outcome, DbError> {
        let sql = sql.to_string();
        let max_rows = limits.max_rows;
        self.read_only(limits.timeout, cancel, move |mut conn| async move {
            let r = async {
                // Prepare first: a clean error for unknown names, and exactly one statement.
                let (columns, types) = remote::prepared(&mut conn, &sql).await?;
                let rows: Vec<PgRow> = if is_explain(&sql) {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .fetch_all(&mut conn)
                        .await?
                } else {
                    sqlx::query(AssertSqlSafe(format!(
                        "DECLARE sqlora_rows NO SCROLL CURSOR FOR {sql}"
                    )))
                    .persistent(false)
                    .execute(&mut conn)
                    .await?;
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "FETCH FORWARD {} FROM sqlora_rows",
                        max_rows + 1
                    )))
                    .fetch_all(&mut conn)
                    .await?
                };
                let mut out = Outcome {
                    columns,
                    rows: Vec::with_capacity(rows.len().min(max_rows)),
                    truncated: rows.len() > max_rows,
                };
                for row in rows.iter().take(max_rows) {
                    out.rows.push(decode_row(row, &types)?);
                }
                Ok(out)
            }
            .await;
            (conn, r)
        })
    }
}

impl PgDb {
    /// Distinct example values for text columns of tables without planner statistics: one
    /// query per table, over its first rows only, under a short timeout.
    fn sample_unanalysed(&mut self, tables: &mut [Table], text_columns: &[(usize, usize, bool)]) {
        let default_schema = self.schemas.first().map_or("public", |s| s).to_string();
        let from = |table: &Table| {
            table.schema.as_ref().map_or_else(
                || format!("{}.{}", quote(&default_schema), quote(&table.name)),
                |ns| format!("{}.{}", quote(ns), quote(&table.name)),
            )
        };
        let part = |column: &str, from: &str| {
            let col = quote(column);
            format!(
                "ARRAY(SELECT DISTINCT v FROM (SELECT {col}::text AS v FROM {from} \
                 LIMIT 2000) s WHERE v IS NOT NULL AND length(v) BETWEEN 1 AND 40 \
                 LIMIT {})",
                ENUM_MAX + 1
            )
        };
        let read = |sql: String| {
            self.read_only(
                Duration::from_secs(5),
                &Cancel::new(),
                move |mut conn| async move {
                    let r = async {
                        let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(&mut conn).await?;
                        (0..row.len())
                            .map(|i| row.try_get::<Vec<String>, _>(i))
                            .collect::<Result<Vec<_>, _>>()
                    }
                    .await;
                    (conn, r)
                },
            )
        };
        samples::sample_tables(tables, text_columns, from, part, read);
    }
}

/// `format_type`'s long spellings in the short forms people write (fewer prompt tokens).
fn short_type(ty: &str) -> String {
    ty.replace("character varying", "varchar")
        .replace("timestamp without time zone", "timestamp")
        .replace("timestamp with time zone", "timestamptz")
        .replace("time without time zone", "time")
        .replace("time with time zone", "timetz")
        .replace("character(", "char(")
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_values_keep_their_types() {
        assert_eq!(decode("INT8", b"-42"), Value::Int(-42));
        assert_eq!(decode("FLOAT8", b"Infinity"), Value::Float(f64::INFINITY));
        assert_eq!(
            decode("NUMERIC", b"12345678901234567890.0001"),
            Value::Decimal("12345678901234567890.0001".into())
        );
        assert_eq!(decode("BOOL", b"t"), Value::Bool(true));
        assert_eq!(decode("BYTEA", b"\\x00ff"), Value::Bytes(vec![0, 255]));
        assert_eq!(
            decode("INTERVAL", b"1 day 02:00:00"),
            Value::Text("1 day 02:00:00".into())
        );
        assert!(is_explain("  explain SELECT 1"));
        assert!(!is_explain("SELECT 'explain'"));
    }
}
