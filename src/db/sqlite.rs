//! SQLite through rusqlite: opened read-only (`SQLITE_OPEN_READ_ONLY` plus `query_only`), each
//! statement interrupted by the progress handler on timeout or Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{types::ValueRef, Connection, OpenFlags};

use super::samples::{self, ENUM_MAX};
use super::{Database, DbError, Limits};
use crate::cancel::Cancel;
use crate::schema::{Column, ForeignKey, Schema, Table, TableKind};
use crate::sql::{Dialect, Outcome, Value};

/// One row of `pragma_foreign_key_list`: constraint id, referenced table, column, referenced
/// column (absent: the referenced primary key).
type ForeignKeyRow = (i64, String, String, Option<String>);

pub struct SqliteDb {
    conn: Connection,
    path: PathBuf,
}

impl SqliteDb {
    /// Opens an existing database file read-only.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let target = format!("SQLite file {}", path.display());
        let fail = |reason: String| DbError::Connect {
            target: target.clone(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) => return Err(fail(e.to_string())),
            Ok(m) if m.is_dir() => return Err(fail("it is a directory".into())),
            Ok(_) => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
        // Touch the schema now so that a file that is not a database fails here, in one line.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn columns(&self, table: &str) -> rusqlite::Result<(Vec<Column>, Vec<String>)> {
        let mut stmt = self.conn.prepare(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid",
        )?;
        let mut pk: Vec<(i64, String)> = Vec::new();
        let mut cols = Vec::new();
        let rows = stmt.query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get::<_, i64>(2)? != 0,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        for row in rows {
            let (name, data_type, not_null, default, pk_pos) = row?;
            if pk_pos > 0 {
                pk.push((pk_pos, name.clone()));
            }
            cols.push(Column {
                name,
                data_type,
                not_null,
                default,
                comment: None,
                samples: Vec::new(),
                enum_values: Vec::new(),
            });
        }
        pk.sort();
        Ok((cols, pk.into_iter().map(|(_, n)| n).collect()))
    }

    fn foreign_keys(&self, table: &str) -> rusqlite::Result<Vec<ForeignKeyRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )?;
        let rows = stmt.query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect()
    }

    /// Example values for a text column: all of them when there are few (an enum-like column
    /// such as a status), otherwise a few; one for date-like columns (it shows the format).
    fn samples(&self, table: &str, column: &str, date_like: bool) -> Vec<String> {
        let sql = format!(
            "SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL AND typeof({c}) = 'text' \
             AND length({c}) BETWEEN 1 AND 40 LIMIT {}",
            ENUM_MAX + 1,
            c = quote(column),
            t = quote(table)
        );
        let Ok(mut stmt) = self.conn.prepare(&sql) else {
            return Vec::new();
        };
        let Ok(rows) = stmt.query_map([], |r| r.get::<_, String>(0)) else {
            return Vec::new();
        };
        samples::kept(rows.filter_map(Result::ok).collect(), date_like)
    }
}

/// `sqlite:` and the file's absolute path (what the feedback store records).
pub fn describe_path(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("sqlite:{}", abs.display())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Text affinity (SQLite's rules) or a date-like declared type: columns worth sampling.
fn wants_samples(data_type: &str) -> bool {
    let t = data_type.to_ascii_uppercase();
    t.is_empty() || ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k)) || is_date_like(&t)
}

fn is_date_like(data_type: &str) -> bool {
    let t = data_type.to_ascii_uppercase();
    t.contains("DATE") || t.contains("TIME")
}

fn map_err(e: rusqlite::Error) -> DbError {
    DbError::Query(match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
        other => other.to_string(),
    })
}

impl Database for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn describe(&self) -> String {
        describe_path(&self.path)
    }

    fn introspect(&mut self) -> Result<Schema, DbError> {
        let names: Vec<(String, String)> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') \
                     AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
        };
        let mut tables = Vec::with_capacity(names.len());
        for (name, kind) in &names {
            let (mut columns, primary_key) = self.columns(name).map_err(map_err)?;
            for c in columns.iter_mut() {
                if wants_samples(&c.data_type) && !primary_key.contains(&c.name) {
                    c.samples = self.samples(name, &c.name, is_date_like(&c.data_type));
                }
            }
            tables.push(Table {
                schema: None,
                name: name.clone(),
                kind: if kind == "view" {
                    TableKind::View
                } else {
                    TableKind::Table
                },
                columns,
                primary_key,
                foreign_keys: Vec::new(),
                comment: None,
            });
        }
        // Foreign keys, once every table's primary key is known (`to` may be implicit).
        for i in 0..tables.len() {
            let raw = self.foreign_keys(&tables[i].name).map_err(map_err)?;
            let mut fks: Vec<(i64, ForeignKey)> = Vec::new();
            for (id, ref_table, from, to) in raw {
                let to = to.or_else(|| {
                    let pos = fks
                        .iter()
                        .find(|(k, _)| *k == id)
                        .map_or(0, |(_, f)| f.columns.len());
                    names
                        .iter()
                        .position(|(n, _)| n.eq_ignore_ascii_case(&ref_table))
                        .and_then(|j| tables[j].primary_key.get(pos).cloned())
                });
                let to = to.unwrap_or_else(|| "rowid".to_string());
                match fks.iter_mut().find(|(k, _)| *k == id) {
                    Some((_, fk)) => {
                        fk.columns.push(from);
                        fk.ref_columns.push(to);
                    }
                    None => fks.push((
                        id,
                        ForeignKey {
                            columns: vec![from],
                            ref_schema: None,
                            ref_table,
                            ref_columns: vec![to],
                        },
                    )),
                }
            }
            fks.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
            tables[i].foreign_keys = fks.into_iter().map(|(_, fk)| fk).collect();
        }
        Ok(Schema { tables })
    }

    fn query(&mut self, sql: &str, limits: &Limits, cancel: &Cancel) -> Result<Outcome, DbError> {
        let deadline = Instant::now() + limits.timeout;
        let flag = cancel.clone();
        self.conn
            .progress_handler(
                10_000,
                Some(move || flag.is_set() || Instant::now() > deadline),
            )
            .map_err(map_err)?;
        let result = run(&self.conn, sql, limits.max_rows);
        let _ = self.conn.progress_handler(0, None::<fn() -> bool>);
        result.map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                if cancel.is_set() {
                    DbError::Cancelled
                } else {
                    DbError::Timeout(limits.timeout)
                }
            }
            other => map_err(other),
        })
    }
}

fn run(conn: &Connection, sql: &str, max_rows: usize) -> rusqlite::Result<Outcome> {
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let n = columns.len();
    let mut rows = stmt.query([])?;
    let mut out = Outcome {
        columns,
        rows: Vec::new(),
        truncated: false,
    };
    while let Some(row) = rows.next()? {
        if out.rows.len() == max_rows {
            out.truncated = true;
            break;
        }
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Float(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            });
        }
        out.rows.push(vals);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small database of two tables and a view, opened (the directory lives as long as it).
    fn fixture() -> (tempfile::TempDir, SqliteDb) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT NOT NULL, born DATE);
             CREATE TABLE b (x INT, y INT, a_id INTEGER REFERENCES a, note TEXT,
                             PRIMARY KEY (x, y));
             CREATE VIEW v AS SELECT name FROM a;
             INSERT INTO a VALUES (1, 'ann', '2020-01-02'), (2, 'bob', '2021-03-04'), (3, 'ann', NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO b SELECT i, i, 1, 'n' || i FROM n;",
        )
        .unwrap();
        let db = SqliteDb::open(&path).unwrap();
        (dir, db)
    }

    #[test]
    fn introspects_keys_fks_views_and_samples() {
        let (_d, mut db) = fixture();
        let s = db.introspect().unwrap();
        let names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "v"]);
        let a = s.table("a").unwrap();
        assert_eq!(a.primary_key, ["id"]);
        assert!(a.column("name").unwrap().not_null);
        assert_eq!(a.column("name").unwrap().samples, ["ann", "bob"]);
        assert_eq!(a.column("born").unwrap().samples, ["2020-01-02"]);
        let b = s.table("b").unwrap();
        assert_eq!(b.primary_key, ["x", "y"]);
        assert_eq!(b.foreign_keys[0].ref_table, "a");
        assert_eq!(b.foreign_keys[0].ref_columns, ["id"]);
        // Many distinct values: three examples; few: all of them.
        assert_eq!(b.column("note").unwrap().samples.len(), 3);
        assert_eq!(s.table("v").unwrap().kind, TableKind::View);
    }

    #[test]
    fn row_cap_truncates_and_writes_fail() {
        let (_d, mut db) = fixture();
        let limits = Limits {
            max_rows: 10,
            ..Limits::default()
        };
        let out = db
            .query("SELECT x FROM b", &limits, &Cancel::new())
            .unwrap();
        assert_eq!(out.rows.len(), 10);
        assert!(out.truncated);
        let err = db
            .query("DELETE FROM b", &limits, &Cancel::new())
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn timeout_interrupts_a_long_query() {
        let (_d, mut db) = fixture();
        let limits = Limits {
            max_rows: 10,
            timeout: std::time::Duration::from_millis(200),
        };
        let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n";
        let err = db.query(sql, &limits, &Cancel::new()).unwrap_err();
        assert!(matches!(err, DbError::Timeout(_)), "{err}");
        let cancel = Cancel::new();
        cancel.set();
        let err = db.query(sql, &Limits::default(), &cancel).unwrap_err();
        assert!(matches!(err, DbError::Cancelled), "{err}");
    }

    #[test]
    fn missing_and_non_database_files_fail_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteDb::open(&dir.path().join("nope.db")).err().unwrap();
        assert!(
            err.to_string().starts_with("cannot open SQLite file"),
            "{err}"
        );
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let err = SqliteDb::open(&junk).err().unwrap().to_string();
        assert!(err.contains("not a database"), "{err}");
        assert!(!err.contains('\n'));
    }
}
