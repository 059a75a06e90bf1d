//! The guard: pulls the SQL out of a model's answer and decides whether it may run.
//!
//! v1 rules: the text parses in the target's dialect, is exactly one statement, and that
//! statement is read-only (`SELECT`, `WITH … SELECT`, `VALUES`, `EXPLAIN` of those) with no
//! `SELECT … INTO`, no row locks and no data-modifying sub-statement anywhere. The database is
//! opened read-only as well: the guard is the first line of defence, not the only one.
//! Never touches a database.

pub mod names;
pub mod qualify;

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::db::Dialect;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("no SQL found in the answer")]
    Empty,
    #[error("SQL does not parse: {0}")]
    Parse(String),
    #[error("refused: {0} statements in one request; sqlora runs exactly one")]
    MultipleStatements(usize),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    UnknownNames(Vec<names::UnknownName>),
}

/// SQL the guard accepted, ready to run.
#[derive(Debug, Clone)]
pub struct CheckedSql {
    /// The statement text as written, without a trailing semicolon.
    pub sql: String,
    pub statement: Statement,
}

fn parser_dialect(d: Dialect) -> Box<dyn SqlDialect> {
    match d {
        Dialect::Sqlite => Box::new(SQLiteDialect {}),
        Dialect::Postgres => Box::new(PostgreSqlDialect {}),
        Dialect::MySql => Box::new(MySqlDialect {}),
    }
}

/// Checks `sql` for `dialect` and returns it when it is one read-only statement.
pub fn check(sql: &str, dialect: Dialect) -> Result<CheckedSql, GuardError> {
    let text = sql
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if text.is_empty() {
        return Err(GuardError::Empty);
    }
    let statements = Parser::parse_sql(parser_dialect(dialect).as_ref(), text).map_err(|e| {
        GuardError::Parse(
            e.to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        )
    })?;
    let statement = match statements.len() {
        0 => return Err(GuardError::Empty),
        1 => statements.into_iter().next().expect("one statement"),
        n => return Err(GuardError::MultipleStatements(n)),
    };
    check_statement(&statement, dialect)?;
    Ok(CheckedSql {
        sql: text.to_string(),
        statement,
    })
}

/// True when a model's answer already holds one whole statement ended by `;` (outside any
/// string literal), so generating on would only add the closing fence. Used to stop early.
pub fn answer_complete(answer: &str, dialect: Dialect) -> bool {
    if !answer.trim_end().ends_with(';') {
        return false;
    }
    let Some(sql) = extract_sql(answer) else {
        return false;
    };
    Parser::parse_sql(parser_dialect(dialect).as_ref(), &sql).is_ok_and(|s| s.len() == 1)
}

/// Functions no read-only question needs, by dialect: they read or write files, reach other
/// servers, run SQL given as text, change sequences or settings, take locks, or stall the
/// connection. A call to any of them (as a function or a table source) is refused.
/// `None` applies to every dialect.
const DENIED_FUNCTIONS: &[(Option<Dialect>, &str, &[&str])] = &[
    (
        Some(Dialect::Postgres),
        "reads or lists server files",
        &[
            "pg_read_file",
            "pg_read_binary_file",
            "pg_ls_dir",
            "pg_stat_file",
            "pg_ls_logdir",
            "pg_ls_waldir",
            "pg_ls_tmpdir",
            "pg_ls_archive_statusdir",
            "pg_ls_logicaldir",
            "pg_ls_logicalmapdir",
            "pg_ls_replslotdir",
            "pg_logdir_ls",
            "pg_current_logfile",
        ],
    ),
    (
        Some(Dialect::Postgres),
        "reads or writes large objects or files",
        &[
            "lo_import",
            "lo_export",
            "lo_create",
            "lo_creat",
            "lo_unlink",
            "lo_put",
            "lo_from_bytea",
            "pg_file_write",
            "pg_file_rename",
            "pg_file_unlink",
            "pg_file_sync",
        ],
    ),
    (
        Some(Dialect::Postgres),
        "connects to other servers",
        &[
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "dblink_connect_u",
            "dblink_send_query",
        ],
    ),
    (
        Some(Dialect::Postgres),
        "runs SQL given as text",
        &[
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "cursor_to_xml",
            "cursor_to_xmlschema",
        ],
    ),
    (
        Some(Dialect::Postgres),
        "changes server state",
        &[
            "nextval",
            "setval",
            "set_config",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_switch_wal",
            "pg_create_restore_point",
            "pg_notify",
            "pg_logical_emit_message",
            "pg_advisory_lock",
            "pg_advisory_xact_lock",
            "pg_advisory_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_xact_lock",
            "pg_promote",
            "pg_backup_start",
            "pg_backup_stop",
        ],
    ),
    (
        Some(Dialect::Postgres),
        "only waits",
        &["pg_sleep", "pg_sleep_for", "pg_sleep_until"],
    ),
    (Some(Dialect::MySql), "reads server files", &["load_file"]),
    (
        Some(Dialect::MySql),
        "runs programs or takes locks",
        &[
            "sys_exec",
            "sys_eval",
            "get_lock",
            "release_lock",
            "release_all_locks",
            "master_pos_wait",
            "source_pos_wait",
        ],
    ),
    (
        Some(Dialect::MySql),
        "only waits or burns CPU",
        &["sleep", "benchmark"],
    ),
    (
        Some(Dialect::Sqlite),
        "loads native code or touches files",
        &[
            "load_extension",
            "readfile",
            "writefile",
            "edit",
            "fts3_tokenizer",
        ],
    ),
];

/// Why `name` (a function or table-function name, any case, maybe schema-qualified) is
/// refused in `dialect`, if it is.
pub fn denied_function(name: &ObjectName, dialect: Dialect) -> Option<&'static str> {
    let last = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    DENIED_FUNCTIONS
        .iter()
        .filter(|(d, _, _)| d.is_none_or(|d| d == dialect))
        .find(|(_, _, names)| names.contains(&last.as_str()))
        .map(|(_, why, _)| *why)
}

fn check_statement(st: &Statement, dialect: Dialect) -> Result<(), GuardError> {
    match st {
        Statement::Query(q) => check_query_tree(q, dialect),
        Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                return Err(GuardError::Refused(
                    "EXPLAIN ANALYZE executes its statement; use EXPLAIN".into(),
                ));
            }
            check_statement(statement, dialect)
        }
        Statement::ExplainTable { .. } => Ok(()),
        other => Err(GuardError::Refused(format!(
            "{} is not a read-only query; sqlora only runs SELECT, WITH, VALUES and EXPLAIN",
            statement_kind(other)
        ))),
    }
}

/// The statement's leading keywords, e.g. `DELETE`, `DROP TABLE`, `PRAGMA`.
fn statement_kind(st: &Statement) -> String {
    let text = st.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect();
    let kw: Vec<&str> = match words.as_slice() {
        [a, b]
            if matches!(
                a.to_ascii_uppercase().as_str(),
                "DROP" | "CREATE" | "ALTER" | "ATTACH" | "DETACH"
            ) =>
        {
            vec![a, b]
        }
        [a, ..] => vec![a],
        [] => vec!["this statement"],
    };
    kw.join(" ").to_ascii_uppercase()
}

/// Walks every query in the tree (CTEs, subqueries, derived tables, set operations).
fn check_query_tree(q: &Query, dialect: Dialect) -> Result<(), GuardError> {
    struct Walk(Dialect);
    impl Walk {
        fn function(&self, name: &ObjectName) -> ControlFlow<GuardError> {
            match denied_function(name, self.0) {
                Some(why) => ControlFlow::Break(GuardError::Refused(format!(
                    "{name}() {why}; sqlora does not call it"
                ))),
                None => ControlFlow::Continue(()),
            }
        }
    }
    impl Visitor for Walk {
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<GuardError> {
            match e {
                Expr::Function(f) => self.function(&f.name),
                _ => ControlFlow::Continue(()),
            }
        }
        // A table source such as `FROM pg_ls_dir('/')`.
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<GuardError> {
            self.function(name)
        }
        type Break = GuardError;
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<GuardError> {
            if !q.locks.is_empty() {
                return ControlFlow::Break(GuardError::Refused(
                    "SELECT … FOR UPDATE/SHARE takes row locks".into(),
                ));
            }
            match check_set_expr(&q.body) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        }
        fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<GuardError> {
            match st {
                Statement::Query(_) => ControlFlow::Continue(()),
                other => ControlFlow::Break(GuardError::Refused(format!(
                    "{} inside a query is not read-only",
                    statement_kind(other)
                ))),
            }
        }
    }
    match q.visit(&mut Walk(dialect)) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

fn check_set_expr(e: &SetExpr) -> Result<(), GuardError> {
    match e {
        SetExpr::Select(s) => match &s.into {
            Some(_) => Err(GuardError::Refused("SELECT … INTO creates a table".into())),
            None => Ok(()),
        },
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err(GuardError::Refused(
                "a data-modifying statement inside a query is not read-only".into(),
            ))
        }
    }
}

/// Words that start a query the guard can accept (used to find SQL in prose).
const STARTS: &[&str] = &["SELECT", "WITH", "VALUES", "EXPLAIN"];

/// Pulls the SQL out of a model's answer: the first fenced code block if there is one
/// (closed or not), else the text from the first line that starts a query, up to a blank line
/// or the end. A trailing `;` and prose after it are dropped.
pub fn extract_sql(answer: &str) -> Option<String> {
    let body = if let Some(open) = answer.find("```") {
        let after = &answer[open + 3..];
        // Skip a language tag such as `sql` on the fence line.
        let after = match after.find('\n') {
            Some(nl)
                if after[..nl]
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric()) =>
            {
                &after[nl + 1..]
            }
            _ => after,
        };
        match after.find("```") {
            Some(close) => after[..close].to_string(),
            None => after.to_string(),
        }
    } else {
        let lines: Vec<&str> = answer.lines().collect();
        let start = lines.iter().position(|l| {
            let first = l
                .trim_start()
                .split(|c: char| !c.is_ascii_alphabetic())
                .next()
                .unwrap_or("");
            STARTS.iter().any(|k| first.eq_ignore_ascii_case(k))
        })?;
        let mut out = Vec::new();
        for l in &lines[start..] {
            if l.trim().is_empty() {
                break;
            }
            out.push(*l);
        }
        out.join("\n")
    };
    let sql = cut_after_first_statement(body.trim());
    let sql = sql.trim().trim_end_matches(';').trim();
    (!sql.is_empty()).then(|| sql.to_string())
}

/// Keeps text up to and including the first `;` outside quotes and comments, dropping prose
/// after it. Further statements are kept when they look like SQL, so the guard sees them.
fn cut_after_first_statement(s: &str) -> &str {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b';' => {
                    let rest = s[i + 1..].trim_start();
                    let next_word: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    let looks_sql = !next_word.is_empty()
                        && next_word.chars().all(|c| c.is_ascii_uppercase())
                        && next_word.len() > 2;
                    if !looks_sql {
                        return &s[..i];
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> String {
        check(sql, Dialect::Sqlite)
            .map(|c| c.sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn refused(sql: &str) -> GuardError {
        check(sql, Dialect::Sqlite).expect_err(sql)
    }

    #[test]
    fn read_only_queries_pass() {
        assert_eq!(ok("SELECT 1;"), "SELECT 1");
        ok("WITH t AS (SELECT 1 AS a) SELECT a FROM t");
        ok("VALUES (1, 2)");
        ok("EXPLAIN QUERY PLAN SELECT * FROM customers");
        ok("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1 LIMIT 3");
        ok("SELECT (SELECT max(x) FROM y) AS m FROM z WHERE id IN (SELECT id FROM w)");
    }

    #[test]
    fn writes_and_side_effects_are_refused() {
        for (sql, word) in [
            ("DELETE FROM customers", "DELETE"),
            ("DROP TABLE customers", "DROP TABLE"),
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH"),
            ("PRAGMA writable_schema=1", "PRAGMA"),
            ("CREATE TABLE x (a INT)", "CREATE TABLE"),
        ] {
            let e = refused(sql).to_string();
            assert!(e.starts_with("refused: ") && e.contains(word), "{sql}: {e}");
        }
    }

    #[test]
    fn two_statements_are_refused_even_if_each_reads() {
        assert_eq!(
            refused("SELECT 1; SELECT 2"),
            GuardError::MultipleStatements(2)
        );
        assert_eq!(
            refused("SELECT 1; DELETE FROM t"),
            GuardError::MultipleStatements(2)
        );
    }

    #[test]
    fn hidden_writes_are_refused() {
        let pg = |s: &str| check(s, Dialect::Postgres);
        assert!(pg("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").is_err());
        assert!(pg("SELECT * INTO newt FROM t").is_err());
        assert!(pg("SELECT * FROM t FOR UPDATE").is_err());
        assert!(pg("EXPLAIN ANALYZE SELECT 1").is_err());
        assert!(pg("EXPLAIN DELETE FROM t").is_err());
    }

    #[test]
    fn file_network_and_state_functions_are_refused_per_dialect() {
        let refused_in = |sql: &str, d: Dialect| matches!(check(sql, d), Err(GuardError::Refused(m)) if m.contains("sqlora does not call it"));
        let pg = Dialect::Postgres;
        assert!(refused_in("SELECT pg_read_file('/etc/passwd')", pg));
        assert!(refused_in("SELECT * FROM pg_ls_dir('.')", pg));
        assert!(refused_in("SELECT pg_catalog.PG_READ_FILE('x')", pg));
        assert!(refused_in("SELECT lo_import('/etc/passwd')", pg));
        assert!(refused_in(
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            pg
        ));
        assert!(refused_in("SELECT nextval('s')", pg));
        assert!(refused_in(
            "SELECT query_to_xml('delete from t', true, true, '')",
            pg
        ));
        assert!(refused_in(
            "SELECT name FROM t WHERE id IN (SELECT pg_sleep(100))",
            pg
        ));
        assert!(refused_in(
            "SELECT LOAD_FILE('/etc/passwd')",
            Dialect::MySql
        ));
        assert!(refused_in("SELECT SLEEP(10)", Dialect::MySql));
        assert!(refused_in(
            "SELECT BENCHMARK(1e9, MD5('a'))",
            Dialect::MySql
        ));
        assert!(refused_in("SELECT load_extension('x.so')", Dialect::Sqlite));
        assert!(refused_in(
            "SELECT readfile('/etc/passwd')",
            Dialect::Sqlite
        ));
        // Ordinary functions, and the same names where they are harmless, pass.
        assert!(check("SELECT upper(name), count(*) FROM t GROUP BY 1", pg).is_ok());
        assert!(check("SELECT sleep FROM t", Dialect::MySql).is_ok());
        assert!(check("SELECT readfile FROM t", Dialect::Sqlite).is_ok());
    }

    #[test]
    fn mysql_file_writes_are_refused() {
        for sql in [
            "SELECT * FROM t INTO OUTFILE '/tmp/x'",
            "SELECT * INTO OUTFILE '/tmp/x' FROM t",
            "SELECT a INTO DUMPFILE '/tmp/x' FROM t",
            "SELECT a FROM t INTO @v",
        ] {
            assert!(check(sql, Dialect::MySql).is_err(), "{sql}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(refused("SELEC * FROM"), GuardError::Parse(_)));
        assert_eq!(refused("  ;  "), GuardError::Empty);
    }

    #[test]
    fn extracts_from_fences_prose_and_bare_sql() {
        let cases = [
            ("```sql\nSELECT name FROM t;\n```", "SELECT name FROM t"),
            (
                "Here is the query:\n```\nSELECT 1\n```\nIt returns one.",
                "SELECT 1",
            ),
            (
                "```sql\nSELECT a\nFROM t\nWHERE b = 'x;y'",
                "SELECT a\nFROM t\nWHERE b = 'x;y'",
            ),
            (
                "SELECT count(*) FROM t; This counts rows.",
                "SELECT count(*) FROM t",
            ),
            (
                "To answer:\nSELECT a FROM t\n\nExplanation: ...",
                "SELECT a FROM t",
            ),
            ("  select * from t  ", "select * from t"),
        ];
        for (input, want) in cases {
            assert_eq!(extract_sql(input).as_deref(), Some(want), "{input:?}");
        }
        assert_eq!(extract_sql("I cannot answer that."), None);
        assert_eq!(extract_sql("```sql\n```"), None);
    }

    #[test]
    fn an_answer_is_complete_at_a_semicolon_outside_strings() {
        let d = Dialect::Sqlite;
        assert!(answer_complete("```sql\nSELECT 1;", d));
        assert!(answer_complete(
            "```sql\nSELECT name FROM t WHERE x = 'a;b';",
            d
        ));
        assert!(!answer_complete(
            "```sql\nSELECT name FROM t WHERE x = 'a;",
            d
        ));
        assert!(!answer_complete("```sql\nSELECT name FROM t", d));
        assert!(!answer_complete("```sql\nSELECT name FROM;", d));
    }

    #[test]
    fn extraction_keeps_a_second_statement_for_the_guard() {
        let sql = extract_sql("```sql\nSELECT 1; DROP TABLE t;\n```").unwrap();
        assert!(matches!(
            check(&sql, Dialect::Sqlite),
            Err(GuardError::MultipleStatements(2))
        ));
    }
}
