//! The guard: pulls the SQL out of a model's answer and decides whether it may run.
//!
//! Rules: the text parses in the target's dialect, is exactly one statement, and that
//! statement is read-only (`SELECT`, `WITH … SELECT`, `VALUES`, plain `EXPLAIN` of those) with
//! no `SELECT … INTO`, no row locks and no data-modifying sub-statement anywhere; every function
//! it calls, wherever it calls it, is on the dialect's allow-list ([`functions`]); it holds no
//! executable comment or hint, and the text that runs is the checked one without its comments
//! ([`lex`]); it is not so long or deeply nested that checking it could exhaust the stack.
//! The database is opened read-only as well: the guard is the first line of defence, not the
//! only one. Never touches a database.

pub mod constrain;
pub mod dialect;
pub mod functions;
pub mod lex;
pub mod names;
pub mod qualify;

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::sql::Dialect;

/// The longest statement the guard reads (1 MiB): far beyond any question's SQL, and small
/// enough that the deepest tree it can hold is checked on [`STACK`] without overflow.
pub const MAX_SQL_BYTES: usize = 1 << 20;
/// How deeply expressions and queries may nest. Accepted statements are walked again by the
/// identifier check, rendered and dropped on ordinary threads, so this keeps them shallow.
pub const MAX_DEPTH: usize = 500;
/// Stack for parsing, measuring and (when too deep) dropping a statement before its depth is
/// known. The deepest tree 1 MiB can hold (half a million levels) needs 16–64 MiB in a release
/// build (`the_deepest_statement_that_fits_is_measured_without_overflow`); this is 4× that,
/// address space reserved, touched only as far as a statement goes.
const STACK: usize = 256 << 20;

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
    /// A call to a function that is not on the dialect's allow-list.
    #[error(
        "refused: {name}() is not among the {dialect} functions a query may call here \
         (an administrator can allow it in the config file)"
    )]
    Function { name: String, dialect: &'static str },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    UnknownNames(Vec<names::UnknownName>),
}

/// SQL the guard accepted, ready to run.
#[derive(Debug, Clone)]
pub struct CheckedSql {
    /// The statement text that runs: as written, without comments or a trailing semicolon.
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
    check_with(sql, dialect, functions::current())
}

/// [`check`] with a given function allow-list.
pub fn check_with(
    sql: &str,
    dialect: Dialect,
    policy: &functions::Policy,
) -> Result<CheckedSql, GuardError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(GuardError::Refused(format!(
            "the statement is {} bytes long; sqlora reads at most {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let pd = parser_dialect(dialect);
    let text = lex::without_comments(sql, pd.as_ref()).map_err(|e| {
        if e.contains("executable comment") {
            GuardError::Refused(e)
        } else {
            GuardError::Parse(e)
        }
    })?;
    let text = text
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .trim()
        .to_string();
    if text.is_empty() {
        return Err(GuardError::Empty);
    }
    let statement = on_big_stack(|| {
        let statement = parse_one(&text, dialect)?;
        // Measured and judged here, where deep trees cannot overflow; a tree too deep is
        // dropped here too.
        depth_ok(&statement)?;
        check_statement(&statement, dialect, policy)?;
        Ok(statement)
    })?;
    Ok(CheckedSql {
        sql: text,
        statement,
    })
}

/// The name of the guard's parsing threads (and the prefix of the dialect rewriter's).
pub(crate) const THREAD: &str = "sqlora-guard";

/// sqlparser 0.59 panics on some malformed statements (in SQLite, `x MATCH (… JOIN` unwraps a
/// failed parse inside its dialect). The guard parses on threads of its own and turns such a
/// panic into a refusal, but the default hook would still print the panic and a backtrace
/// hint in the middle of the shell's output. From the first parse on, a panic inside sqlparser
/// on a guard thread is silent; every other panic is reported as before.
pub(crate) fn quiet_parser_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("sqlparser"));
            let on_guard = || {
                std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with(THREAD))
            };
            if !(in_parser && on_guard()) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` on a thread with a stack large enough for any statement of [`MAX_SQL_BYTES`].
fn on_big_stack<T: Send>(
    f: impl FnOnce() -> Result<T, GuardError> + Send,
) -> Result<T, GuardError> {
    quiet_parser_panics();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(THREAD.into())
            .stack_size(STACK)
            .spawn_scoped(s, f)
            .map_err(|e| GuardError::Refused(format!("cannot start the checker: {e}")))?
            .join()
            .unwrap_or_else(|_| {
                Err(GuardError::Refused(
                    "the checker failed on this statement".into(),
                ))
            })
    })
}

/// Parses one statement (several are an error).
fn parse_one(text: &str, dialect: Dialect) -> Result<Statement, GuardError> {
    let statements = Parser::parse_sql(parser_dialect(dialect).as_ref(), text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.trim_start_matches("sql parser error: ");
        if msg.contains("ecursion limit") {
            // The parser's own limit (parentheses and subqueries 50 deep): a mistake the model
            // may repair, as it is for any other statement that does not parse.
            GuardError::Parse(
                "the statement is too deeply nested: parentheses and subqueries nest at most 50 \
                 deep"
                    .into(),
            )
        } else {
            GuardError::Parse(msg.to_string())
        }
    })?;
    match statements.len() {
        0 => Err(GuardError::Empty),
        1 => Ok(statements.into_iter().next().expect("one statement")),
        n => Err(GuardError::MultipleStatements(n)),
    }
}

/// Refuses a statement whose expressions and queries nest deeper than [`MAX_DEPTH`] (a
/// chain of 30,000 `+` is as deep as it is long).
fn depth_ok(st: &Statement) -> Result<(), GuardError> {
    struct Depth {
        now: usize,
    }
    impl Depth {
        fn enter(&mut self) -> ControlFlow<()> {
            self.now += 1;
            if self.now > MAX_DEPTH {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn leave(&mut self) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.enter()
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.leave()
        }
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.enter()
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.leave()
        }
    }
    match st.visit(&mut Depth { now: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(GuardError::Refused(format!(
            "the statement is too deeply nested (sqlora checks at most {MAX_DEPTH} levels)"
        ))),
    }
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
    sql.len() <= MAX_SQL_BYTES
        && on_big_stack(|| parse_one(&sql, dialect).and_then(|st| depth_ok(&st))).is_ok()
}

/// Whether `text` parses as SQL in `dialect` (one statement or several), however deep: a shell
/// line for which this holds goes to the guard as SQL rather than to the model as a question.
/// Text over [`MAX_SQL_BYTES`] counts as SQL, for the guard to refuse by its length.
pub fn is_sql(text: &str, dialect: Dialect) -> bool {
    text.len() > MAX_SQL_BYTES
        || on_big_stack(|| {
            Parser::parse_sql(parser_dialect(dialect).as_ref(), text)
                .map(drop)
                .map_err(|e| GuardError::Parse(e.to_string()))
        })
        .is_ok()
}

fn check_statement(
    st: &Statement,
    dialect: Dialect,
    policy: &functions::Policy,
) -> Result<(), GuardError> {
    match st {
        Statement::Query(q) => check_query_tree(q, dialect, policy),
        Statement::Explain {
            statement,
            analyze,
            verbose,
            estimate,
            format,
            options,
            ..
        } => {
            // Only the plain form: options such as `(ANALYZE)` or `ANALYZE` run the statement.
            if *analyze || options.is_some() {
                return Err(GuardError::Refused(
                    "EXPLAIN ANALYZE and EXPLAIN (options) execute or go beyond the plan; \
                     sqlora runs plain EXPLAIN only"
                        .into(),
                ));
            }
            if *verbose || *estimate || format.is_some() {
                return Err(GuardError::Refused(
                    "sqlora runs plain EXPLAIN only (no VERBOSE, FORMAT or other options)".into(),
                ));
            }
            match statement.as_ref() {
                Statement::Query(_) => check_statement(statement, dialect, policy),
                other => Err(GuardError::Refused(format!(
                    "EXPLAIN of {} is not a read-only query; sqlora explains SELECT, WITH and \
                     VALUES only",
                    statement_kind(other)
                ))),
            }
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

/// Walks every query in the tree (CTEs, subqueries, derived tables, set operations), every
/// expression and every table source.
fn check_query_tree(
    q: &Query,
    dialect: Dialect,
    policy: &functions::Policy,
) -> Result<(), GuardError> {
    struct Walk<'p> {
        dialect: Dialect,
        policy: &'p functions::Policy,
    }
    impl Walk<'_> {
        fn function(&self, name: &ObjectName) -> ControlFlow<GuardError> {
            if self.policy.allows(self.dialect, name) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(GuardError::Function {
                    name: name.to_string(),
                    dialect: self.dialect.name(),
                })
            }
        }
        fn refuse(what: &str) -> ControlFlow<GuardError> {
            ControlFlow::Break(GuardError::Refused(format!(
                "{what} is not something sqlora runs"
            )))
        }
    }
    impl Visitor for Walk<'_> {
        type Break = GuardError;
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<GuardError> {
            match e {
                Expr::Function(f) => self.function(&f.name),
                // Syntax of other dialects that these databases do not define.
                Expr::Lambda(_) => Self::refuse("a lambda"),
                Expr::Prior(_) => Self::refuse("CONNECT BY PRIOR"),
                _ => ControlFlow::Continue(()),
            }
        }
        // Every table source: a function in FROM (`FROM pg_ls_dir('/')`, `FROM LATERAL f(x)`,
        // a join's right side) is a call like any other.
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<GuardError> {
            match t {
                TableFactor::Table { name, args, .. } => match args {
                    Some(_) => self.function(name),
                    None => ControlFlow::Continue(()),
                },
                TableFactor::Function { name, .. } => self.function(name),
                // `TABLE(expr)`: the expression is walked (and its calls checked) on its own.
                TableFactor::TableFunction { .. }
                | TableFactor::Derived { .. }
                | TableFactor::NestedJoin { .. }
                | TableFactor::Pivot { .. }
                | TableFactor::Unpivot { .. } => ControlFlow::Continue(()),
                TableFactor::UNNEST { .. } => {
                    self.function(&ObjectName::from(vec![sqlparser::ast::Ident::new(
                        "unnest",
                    )]))
                }
                TableFactor::JsonTable { .. } => {
                    self.function(&ObjectName::from(vec![sqlparser::ast::Ident::new(
                        "json_table",
                    )]))
                }
                TableFactor::OpenJsonTable { .. } => Self::refuse("OPENJSON"),
                TableFactor::XmlTable { .. } => Self::refuse("XMLTABLE"),
                TableFactor::MatchRecognize { .. } => Self::refuse("MATCH_RECOGNIZE"),
                TableFactor::SemanticView { .. } => Self::refuse("SEMANTIC_VIEW"),
            }
        }
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
    match q.visit(&mut Walk { dialect, policy }) {
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
    fn a_statement_that_panics_the_parser_is_refused() {
        // sqlparser 0.59 unwraps a failed parse after SQLite's MATCH.
        let sql = "SELECT a FROM t WHERE a MATCH (SELECT b FROM u JOIN";
        assert!(matches!(refused(sql), GuardError::Refused(_)));
        let schema = crate::schema::Schema::default();
        let _ = dialect::fix(sql, Dialect::Sqlite, &schema);
        // Other panics still unwind as before (the hook only decides what is printed).
        assert!(std::panic::catch_unwind(|| panic!("still reported")).is_err());
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
        assert!(pg("EXPLAIN (ANALYZE) SELECT 1").is_err());
        assert!(pg("EXPLAIN DELETE FROM t").is_err());
    }

    #[test]
    fn functions_off_the_allow_list_are_refused_wherever_they_appear() {
        let refused_in =
            |sql: &str, d: Dialect| matches!(check(sql, d), Err(GuardError::Function { .. }));
        let pg = Dialect::Postgres;
        for sql in [
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT * FROM LATERAL pg_read_file('/etc/passwd') AS f",
            "SELECT * FROM t, LATERAL pg_read_file('/etc/passwd') AS f",
            "SELECT * FROM t JOIN LATERAL pg_stat_file('/etc') AS f ON true",
            "SELECT * FROM t CROSS JOIN pg_ls_dir('/') AS d",
            "SELECT pg_catalog.PG_READ_FILE('x')",
            "SELECT lo_import('/etc/passwd')",
            "SELECT lo_export(1, '/tmp/x')",
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            "SELECT nextval('s')",
            "SELECT query_to_xml('delete from t', true, true, '')",
            "SELECT name FROM t WHERE id IN (SELECT pg_sleep(100))",
            "SELECT pg_create_physical_replication_slot('s')",
            "SELECT pg_stat_reset()",
            "SELECT pg_try_advisory_lock_shared(1)",
            "SELECT pg_import_system_collations('pg_catalog')",
            "SELECT 1 FROM t GROUP BY pg_backend_pid()",
            "SELECT 1 FROM t ORDER BY pg_cancel_backend(1)",
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(1)) FROM t",
            "SELECT row_number() OVER (ORDER BY pg_reload_conf()) FROM t",
            "SELECT CASE WHEN true THEN pg_switch_wal() END",
            "SELECT CAST(pg_notify('a', 'b') AS text)",
            "WITH x AS (SELECT pg_advisory_lock(1)) SELECT * FROM x",
            "SELECT upper(lower(my_func(1)))",
            "SELECT public.upper('x')",
            "SELECT \"UPPER\"('x')",
            "VALUES (pg_read_file('/etc/passwd'))",
            "SELECT 1 UNION SELECT length(pg_read_file('x'))",
            "EXPLAIN SELECT pg_read_file('x')",
        ] {
            assert!(refused_in(sql, pg), "{sql}: {:?}", check(sql, pg));
        }
        assert!(refused_in(
            "SELECT LOAD_FILE('/etc/passwd')",
            Dialect::MySql
        ));
        assert!(refused_in("SELECT SLEEP(10)", Dialect::MySql));
        assert!(refused_in(
            "SELECT BENCHMARK(1e9, MD5('a'))",
            Dialect::MySql
        ));
        assert!(refused_in("SELECT GET_LOCK('a', 1)", Dialect::MySql));
        assert!(refused_in("SELECT load_extension('x.so')", Dialect::Sqlite));
        assert!(refused_in(
            "SELECT readfile('/etc/passwd')",
            Dialect::Sqlite
        ));
        assert!(refused_in(
            "SELECT * FROM t, readfile('x')",
            Dialect::Sqlite
        ));
        // The refusal names the function.
        let e = check("SELECT pg_read_file('x')", pg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pg_read_file()") && e.contains("PostgreSQL"),
            "{e}"
        );
        // Ordinary functions, and the same names where they are columns, pass.
        for sql in [
            "SELECT upper(name), count(*) FROM t GROUP BY 1",
            "SELECT pg_catalog.upper(name) FROM t",
            "SELECT * FROM generate_series(1, 3) AS g(n)",
            "SELECT * FROM t, LATERAL unnest(t.tags) AS u(tag)",
            "SELECT date_trunc('month', created), sum(total) FROM orders GROUP BY 1",
            "SELECT EXTRACT(YEAR FROM created), CURRENT_DATE, now() FROM orders",
            "SELECT rank() OVER (PARTITION BY a ORDER BY b DESC) FROM t",
        ] {
            assert!(check(sql, pg).is_ok(), "{sql}: {:?}", check(sql, pg));
        }
        assert!(check("SELECT sleep FROM t", Dialect::MySql).is_ok());
        assert!(check(
            "SELECT DATE_FORMAT(d, '%Y'), IFNULL(a, 0) FROM t",
            Dialect::MySql
        )
        .is_ok());
        assert!(check("SELECT readfile FROM t", Dialect::Sqlite).is_ok());
        assert!(check(
            "SELECT strftime('%Y', d), julianday(d), substr(a, 1, 2) FROM t",
            Dialect::Sqlite
        )
        .is_ok());
        assert!(check(
            "SELECT j.value FROM t, json_each(t.doc) AS j",
            Dialect::Sqlite
        )
        .is_ok());
    }

    #[test]
    fn an_added_function_passes_with_that_policy_only() {
        let mut p = functions::Policy::builtin();
        p.allow(Dialect::Postgres, &["similarity".into()]).unwrap();
        let sql = "SELECT similarity(a, 'x') FROM t";
        assert!(check_with(sql, Dialect::Postgres, &p).is_ok());
        assert!(check(sql, Dialect::Postgres).is_err());
    }

    #[test]
    fn explain_only_in_its_plain_form() {
        let pg = Dialect::Postgres;
        assert!(check("EXPLAIN SELECT * FROM t", pg).is_ok());
        assert!(check("EXPLAIN QUERY PLAN SELECT * FROM t", Dialect::Sqlite).is_ok());
        for sql in [
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN (ANALYZE) SELECT 1",
            "EXPLAIN (ANALYZE true, BUFFERS) SELECT 1",
            "EXPLAIN (COSTS off) SELECT 1",
            "EXPLAIN VERBOSE SELECT 1",
            "EXPLAIN DELETE FROM t",
        ] {
            assert!(
                matches!(check(sql, pg), Err(GuardError::Refused(_))),
                "{sql}: {:?}",
                check(sql, pg)
            );
        }
        for sql in ["EXPLAIN ANALYZE SELECT 1", "EXPLAIN FORMAT=JSON SELECT 1"] {
            assert!(check(sql, Dialect::MySql).is_err(), "{sql}");
        }
    }

    #[test]
    fn what_runs_is_the_checked_text_without_comments() {
        let my = Dialect::MySql;
        assert_eq!(
            check("SELECT id -- the key\nFROM t /* all */;", my)
                .unwrap()
                .sql,
            "SELECT id \nFROM t"
        );
        for sql in [
            "SELECT id FROM customers /*!INTO OUTFILE 'out.txt'*/",
            "/*!SET GLOBAL max_connect_errors = */ (SELECT 1)",
            "/*!KILL */ (SELECT id)",
            "SELECT 1 /*M! , load_file('/etc/passwd') */",
        ] {
            for d in [Dialect::MySql, Dialect::Postgres, Dialect::Sqlite] {
                let e = check(sql, d).unwrap_err().to_string();
                assert!(e.contains("executable comment"), "{sql}: {e}");
            }
        }
    }

    #[test]
    fn the_deepest_statement_that_fits_is_measured_without_overflow() {
        // Two bytes a level: the deepest tree a statement of MAX_SQL_BYTES can hold.
        for term in ["+1", "|1"] {
            let sql = format!("SELECT 1{}", term.repeat((MAX_SQL_BYTES - 10) / 2));
            let t = std::time::Instant::now();
            let e = check(&sql, Dialect::Postgres).expect_err("too deep");
            assert!(e.to_string().contains("too deeply nested"), "{e}");
            assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
            assert!(is_sql(&sql, Dialect::Postgres));
        }
    }

    #[test]
    fn deep_and_long_statements_are_refused_not_a_crash() {
        for term in [" + 1", " || 'a'", " AND a = 1", " OR a = 1"] {
            let sql = format!("SELECT 1 FROM t WHERE a = 1{}", term.repeat(30_000));
            for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
                let e = check(&sql, d).expect_err("too deep");
                assert!(e.to_string().contains("too deeply nested"), "{e}");
            }
        }
        // Parentheses past the parser's own limit: a parse error the model may repair.
        let parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(matches!(
            check(&parens, Dialect::Sqlite),
            Err(GuardError::Parse(m)) if m.contains("too deeply nested")
        ));
        let long = format!("SELECT {}1", "1 + ".repeat(MAX_SQL_BYTES / 4));
        assert!(check(&long, Dialect::Sqlite)
            .unwrap_err()
            .to_string()
            .contains("at most"));
        // Just under the limit, an accepted statement is walked, rendered and dropped on an
        // ordinary 2 MiB thread without overflowing.
        let sql = format!(
            "SELECT a FROM t WHERE a = 1{}",
            " OR a = 1".repeat(MAX_DEPTH - 10)
        );
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let c = check(&sql, Dialect::Postgres).unwrap();
                let _ = c.statement.to_string();
                let schema = crate::schema::Schema { tables: vec![] };
                let _ = names::check_names(&c.statement, &schema, Dialect::Postgres);
                drop(c);
            })
            .unwrap()
            .join()
            .unwrap();
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
