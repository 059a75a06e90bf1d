//! Input routing for the shell: what one typed line is (a question, SQL, a psql habit such as
//! `SHOW TABLES` or `exit`), SQL typed over several lines until `;`, and the psql-style
//! commands built on that (`\d`, `\e`, `\o`, `\i`), plus the Ctrl-C hint at an empty prompt.
//! It decides and dispatches; running SQL and questions stays with the pipeline through
//! [`Shell`], and it never runs a statement the guard has not seen.
//!
//! The routing rule, in order (see [`classify`]):
//! 1. `exit`, `quit` and `help` typed alone (any case, optional `;`) quit or show help.
//! 2. `SHOW TABLES`, `SHOW COLUMNS FROM|IN t`, `DESCRIBE t` and `DESC t` are the shell's
//!    `\dt` and `\d t`. Any other line starting with SHOW, DESCRIBE or DESC is a question:
//!    neither is a read-only query the guard runs, and English starts with them too ("Show me
//!    the 3 newest customers").
//! 3. A line is SQL only when it starts with a statement keyword (`SELECT`, `WITH`, `VALUES`,
//!    `TABLE`, `EXPLAIN` followed by a statement, a write or DDL keyword, or `(`) and parses in
//!    the database's dialect. Writes and DDL that parse are SQL too, so that the guard refuses
//!    them with its reason instead of the model being asked to "answer" `DELETE FROM t`.
//! 4. It is an unfinished query (buffered, continuation prompt `sqlora-> `) when it starts like
//!    a query (`SELECT`/`WITH`/`VALUES`/`TABLE`/`EXPLAIN`/`(`), has no `;`, and either the
//!    parser ran out of input (it is a prefix of valid SQL: `SELECT name,` or `... FROM`, an
//!    open string or comment), or it is a `SELECT` without `FROM` whose select list holds `*`
//!    or only names that are columns of this database (`SELECT name, email`: such a statement
//!    cannot run without a `FROM`, so the next line brings it).
//! 5. A `SELECT` without `FROM` naming something that is no column is a question when the
//!    keyword is not in capitals ("Select all customers"); `SELECT nmae` in capitals is typed
//!    SQL and waits for its `FROM` (the guard then names the unknown column). Everything
//!    that does not parse ("Select the newest customers") is a question.
//!    A question is always one line and is never buffered.
//!
//! While buffering, lines are added until one ends with `;` (outside a string); an empty
//! line or Ctrl-C discards the buffer; backslash commands run and keep it. In a file run by
//! `\i`, every SQL statement goes on until its `;` (a last one without it runs at the end).

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::{
    Cmd, ConditionalEventHandler, Event, EventContext, EventHandler, KeyEvent, RepeatCount,
};
use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement};

use super::{Flow, Shell};
use crate::guard::GuardError;
use crate::sql::{Dialect, Outcome, Value};

/// Words that start a query a user may type over several lines.
const QUERY_STARTS: &[&str] = &["select", "with", "values", "table", "explain"];
/// Write and DDL words: SQL when they parse (and then refused by the guard with its reason).
const WRITE_STARTS: &[&str] = &[
    "insert", "update", "delete", "drop", "create", "alter", "pragma", "attach", "detach",
    "replace", "truncate", "grant", "revoke", "vacuum", "merge", "call", "copy", "lock",
];
/// How deeply `\i` files may include each other.
const MAX_INCLUDE_DEPTH: usize = 16;

/// What a complete line (or buffered statement) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Quit,
    Help,
    /// `SHOW TABLES`: the shell's `\dt`.
    Tables,
    /// `DESCRIBE t`, `DESC t`, `SHOW COLUMNS FROM t`: the shell's `\d t`.
    Describe(String),
    Sql,
    /// The start of a query that goes on on the next line.
    Incomplete,
    Question,
}

/// Strips leading comments and opening parentheses; returns the rest and whether a `(` was
/// among them.
fn skip_lead(line: &str) -> (&str, bool) {
    let mut rest = line.trim_start();
    let mut paren = false;
    loop {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r
                .split_once("*/")
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            paren = true;
            rest = r.trim_start();
        } else {
            return (rest, paren);
        }
    }
}

fn first_word(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The words of `line` without a trailing `;`, lowercased, for the fixed forms.
fn words(line: &str) -> Vec<String> {
    line.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `exit` or `quit` alone (a trailing `;` allowed, any case).
pub fn is_quit(line: &str) -> bool {
    matches!(fixed_form(line), Some(Kind::Quit))
}

/// `exit`, `quit`, `help` alone; `SHOW TABLES`; `DESCRIBE t`, `DESC t`, `SHOW COLUMNS FROM t`.
fn fixed_form(line: &str) -> Option<Kind> {
    let w = words(line);
    let lw: Vec<String> = w.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lw: Vec<&str> = lw.iter().map(String::as_str).collect();
    let unquote = |s: &str| {
        s.trim_matches(|c| c == '`' || c == '"' || c == '[' || c == ']')
            .to_string()
    };
    match lw.as_slice() {
        ["exit"] | ["quit"] => Some(Kind::Quit),
        ["help"] => Some(Kind::Help),
        ["show", "tables"] | ["show", "full", "tables"] => Some(Kind::Tables),
        ["describe" | "desc", _] => Some(Kind::Describe(unquote(&w[1]))),
        ["show", "columns" | "fields", "from" | "in", _] => Some(Kind::Describe(unquote(&w[3]))),
        _ => None,
    }
}

/// The parser stopped because the text ended: more may come.
fn ran_out(msg: &str) -> bool {
    msg.contains("EOF") || msg.to_ascii_lowercase().contains("unterminated")
}

/// A top-level `SELECT` without `FROM` whose select list holds `*` or names only columns:
/// `Some(true)` (it waits for its `FROM`); `Some(false)` when it names something that is no
/// column (a question such as "Select all customers"); `None` when neither applies.
fn select_wants_from(st: &Statement, is_column: &dyn Fn(&str) -> bool) -> Option<bool> {
    let Statement::Query(q) = st else {
        return None;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if !s.from.is_empty() {
        return None;
    }
    let mut star = false;
    let mut names = Vec::new();
    for item in &s.projection {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => star = true,
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let _ = sqlparser::ast::visit_expressions(e, |e| {
                    match e {
                        Expr::Identifier(i) => names.push(i.value.clone()),
                        Expr::CompoundIdentifier(p) => {
                            names.push(p.last().map(|i| i.value.clone()).unwrap_or_default())
                        }
                        _ => {}
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
    }
    if names.iter().any(|n| !is_column(n)) {
        return Some(false);
    }
    (star || !names.is_empty()).then_some(true)
}

/// What `line` is (see the module's rule). `is_column` tells a column name of this database.
pub fn classify(line: &str, dialect: Dialect, is_column: &dyn Fn(&str) -> bool) -> Kind {
    if let Some(k) = fixed_form(line) {
        return k;
    }
    let (rest, paren) = skip_lead(line);
    let first = first_word(rest);
    let query = QUERY_STARTS.contains(&first.as_str());
    if !(query || WRITE_STARTS.contains(&first.as_str())) {
        return Kind::Question;
    }
    if first == "explain" {
        // `EXPLAIN` is SQL only in front of a statement: "Explain the orders table" is not.
        let statement_follows = rest[first.len()..]
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| {
                let w = w.to_ascii_lowercase();
                w != "explain"
                    && (QUERY_STARTS.contains(&w.as_str()) || WRITE_STARTS.contains(&w.as_str()))
            });
        if !statement_follows {
            return Kind::Question;
        }
    }
    let has_semicolon = line.trim_end().ends_with(';');
    match crate::guard::check(line, dialect) {
        Ok(c) => {
            // `SELECT` in capitals is typed SQL; "Select all customers" is a sentence.
            let shouted = rest[..first.len()].chars().all(|c| c.is_ascii_uppercase());
            match select_wants_from(&c.statement, is_column) {
                Some(true) if !has_semicolon => Kind::Incomplete,
                Some(false) if shouted && !has_semicolon => Kind::Incomplete,
                Some(false) if !shouted => Kind::Question,
                _ => Kind::Sql,
            }
        }
        Err(GuardError::Parse(msg)) if (query || paren) && !has_semicolon && ran_out(&msg) => {
            Kind::Incomplete
        }
        Err(GuardError::Parse(_)) => Kind::Question,
        Err(GuardError::Empty) => Kind::Question,
        // It parses and the guard has its reason to refuse it: say so.
        Err(_) => Kind::Sql,
    }
}

/// True when `line` is SQL (complete or not) rather than a question: what `sqlora ask` runs
/// as SQL. No column names are known here, so `SELECT name` counts as SQL.
pub fn is_sql_line(line: &str, dialect: Dialect) -> bool {
    matches!(
        classify(line, dialect, &|_| true),
        Kind::Sql | Kind::Incomplete
    )
}

/// What to do after a line was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing (an empty line, a comment).
    Idle,
    /// The line was buffered: show the continuation prompt.
    More,
    /// An empty line discarded the buffer.
    Cleared,
    /// Run this text as this kind.
    Run(Kind, String),
}

/// The shell's input state: the SQL buffer, the last entry (for `\e`), where results go
/// (`\o`), and how deep `\i` files nest.
#[derive(Default)]
pub struct State {
    buffer: Vec<String>,
    /// The last SQL or question run, for `\e`.
    last: Option<String>,
    /// `\o FILE`: results go there instead of stdout.
    output: Option<(PathBuf, File)>,
    include_depth: usize,
    /// Where the line being run comes from (`FILE:LINE`) while `\i` runs a file.
    pub(super) location: Option<String>,
    /// Set by the Ctrl-C key binding: whether the line was empty when it was pressed.
    ctrl_c_on_empty: Arc<AtomicBool>,
}

impl State {
    pub fn buffering(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Discards the buffer; true when there was one.
    pub fn clear(&mut self) -> bool {
        let had = self.buffering();
        self.buffer.clear();
        had
    }

    /// The prompt for the next line: `base` (`sqlora> `), or its continuation form
    /// (`sqlora-> `) while a statement is being buffered.
    pub fn prompt(&self, base: &str) -> String {
        if self.buffering() {
            format!("{}-> ", base.trim_end().trim_end_matches('>'))
        } else {
            base.to_string()
        }
    }

    /// Feeds one line (not a backslash command).
    pub fn feed(&mut self, line: &str, dialect: Dialect, is_column: &dyn Fn(&str) -> bool) -> Step {
        let trimmed = line.trim();
        if self.buffering() {
            if trimmed.is_empty() {
                self.buffer.clear();
                return Step::Cleared;
            }
            self.buffer.push(line.trim_end().to_string());
            let text = self.buffer.join("\n");
            // Ends with `;`, and not inside a string literal or comment.
            let open = matches!(crate::guard::check(&text, dialect),
                Err(GuardError::Parse(m)) if m.to_ascii_lowercase().contains("unterminated")
                    || m.contains("multi-line comment"));
            if trimmed.ends_with(';') && !open {
                self.buffer.clear();
                return Step::Run(Kind::Sql, text);
            }
            return Step::More;
        }
        let (rest, _) = skip_lead(trimmed);
        if rest.trim().is_empty() {
            // Empty, or only a comment.
            return Step::Idle;
        }
        match classify(trimmed, dialect, is_column) {
            // In a `\i` file, SQL ends at its `;` (as in psql), even when a line could run.
            Kind::Sql if self.include_depth > 0 && !trimmed.ends_with(';') => {
                self.buffer.push(trimmed.to_string());
                Step::More
            }
            Kind::Incomplete => {
                self.buffer.push(trimmed.to_string());
                Step::More
            }
            k => Step::Run(k, trimmed.to_string()),
        }
    }

    /// Writes a rendered result to the `\o` file; false when results go to stdout.
    pub fn write_result(&self, text: &str, count: &str) -> bool {
        let Some((path, file)) = &self.output else {
            return false;
        };
        let mut f = file;
        let body = if text.trim().is_empty() {
            format!("{count}\n")
        } else {
            format!("{}\n{count}\n", text.trim_end())
        };
        if let Err(e) = f.write_all(body.as_bytes()) {
            eprintln!("sqlora: cannot write to {}: {e}", path.display());
        }
        true
    }
}

/// Binds Ctrl-C so that the shell learns whether the line was empty when it was pressed
/// (rustyline then interrupts the line as before).
struct CtrlC(Arc<AtomicBool>);

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        self.0.store(ctx.line().is_empty(), Ordering::Relaxed);
        Some(Cmd::Interrupt)
    }
}

impl Shell {
    fn is_column(&self, name: &str) -> bool {
        self.pipeline
            .schema()
            .tables
            .iter()
            .any(|t| t.column(name).is_some())
    }

    /// Installs the Ctrl-C binding on the line editor.
    pub(super) fn bind_ctrl_c<H: rustyline::Helper, I: rustyline::history::History>(
        &self,
        rl: &mut rustyline::Editor<H, I>,
    ) {
        rl.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(CtrlC(self.input.ctrl_c_on_empty.clone()))),
        );
    }

    /// Ctrl-C at the prompt: discards a buffered statement; on an empty line, says how to quit.
    pub(super) fn on_interrupt(&mut self) {
        if self.input.clear() {
            eprintln!("query buffer cleared");
        } else if self.input.ctrl_c_on_empty.swap(false, Ordering::Relaxed) {
            eprintln!("(Ctrl-C does not quit: type \\q or press Ctrl-D)");
        }
    }

    /// One line that is not a backslash command: buffered, or run.
    pub(super) fn on_line(&mut self, line: &str) -> Flow {
        let dialect = self.pipeline.dialect();
        let mut input = std::mem::take(&mut self.input);
        let step = input.feed(line, dialect, &|n| self.is_column(n));
        self.input = input;
        match step {
            Step::Idle | Step::More => Flow::Continue,
            Step::Cleared => {
                eprintln!("query buffer cleared");
                Flow::Continue
            }
            Step::Run(kind, text) => self.run_kind(kind, &text),
        }
    }

    fn run_kind(&mut self, kind: Kind, text: &str) -> Flow {
        match kind {
            Kind::Quit => return Flow::Quit,
            Kind::Help => self.print_help(),
            Kind::Tables => self.print_tables(),
            Kind::Describe(t) => self.describe(&t),
            Kind::Sql | Kind::Incomplete => {
                self.input.last = Some(text.to_string());
                self.run_sql(text);
            }
            Kind::Question => {
                self.input.last = Some(text.to_string());
                self.ask(text);
            }
        }
        Flow::Continue
    }

    /// `\d [TABLE]`: the tables, or one table's columns with types, nullability and keys.
    pub fn describe(&self, arg: &str) {
        let name = arg.trim().trim_end_matches(';').trim();
        if name.is_empty() {
            self.print_tables();
            return;
        }
        let name = name.trim_matches(|c| c == '`' || c == '"');
        let Some(t) = self.pipeline.schema().table(name) else {
            eprintln!("sqlora: no table named `{name}`; \\dt lists them");
            return;
        };
        let o = Outcome {
            columns: ["column", "type", "nullable", "key", "default"]
                .map(String::from)
                .to_vec(),
            rows: t
                .columns
                .iter()
                .map(|c| {
                    let mut keys = Vec::new();
                    if t.primary_key
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(&c.name))
                    {
                        keys.push("PK".to_string());
                    }
                    for fk in &t.foreign_keys {
                        if let Some(i) = fk
                            .columns
                            .iter()
                            .position(|k| k.eq_ignore_ascii_case(&c.name))
                        {
                            let to = fk.ref_columns.get(i).map_or("", String::as_str);
                            keys.push(format!("FK {}({to})", fk.ref_table));
                        }
                    }
                    vec![
                        Value::Text(c.name.clone()),
                        Value::Text(c.data_type.clone()),
                        Value::Text(if c.not_null { "no" } else { "yes" }.into()),
                        Value::Text(keys.join(", ")),
                        c.default.clone().map_or(Value::Null, Value::Text),
                    ]
                })
                .collect(),
            truncated: false,
        };
        let kind = match t.kind {
            crate::schema::TableKind::Table => "table",
            crate::schema::TableKind::View => "view",
        };
        println!("{kind} {}", t.qualified_name(self.pipeline.dialect()));
        self.print_outcome(o, 0.0);
    }

    /// `\o [FILE]`: results go to FILE (created or emptied), or back to stdout.
    pub fn set_output(&mut self, arg: &str) {
        let arg = arg.trim();
        if arg.is_empty() {
            if let Some((path, _)) = self.input.output.take() {
                eprintln!("results go to stdout again ({} closed)", path.display());
            } else {
                eprintln!("results go to stdout");
            }
            return;
        }
        let path = PathBuf::from(arg);
        match File::create(&path) {
            Ok(f) => {
                eprintln!("results go to {}", path.display());
                self.input.output = Some((path, f));
            }
            Err(e) => eprintln!("sqlora: cannot open {}: {e}", path.display()),
        }
    }

    /// `\i FILE`: each statement and question of FILE in turn, as if typed; a failure is one
    /// line and the next one runs.
    pub fn include(&mut self, arg: &str) -> Flow {
        let path = arg.trim();
        if path.is_empty() {
            eprintln!("usage: \\i FILE");
            return Flow::Continue;
        }
        if self.input.include_depth >= MAX_INCLUDE_DEPTH {
            eprintln!("sqlora: \\i nests deeper than {MAX_INCLUDE_DEPTH} files; {path} skipped");
            return Flow::Continue;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sqlora: cannot read {path}: {e}");
                return Flow::Continue;
            }
        };
        // The file's statements get a buffer of their own; what was typed waits.
        let typed = std::mem::take(&mut self.input.buffer);
        let outer = self.input.location.take();
        self.input.include_depth += 1;
        let mut flow = Flow::Continue;
        let mut start = 0;
        for (i, line) in text.lines().enumerate() {
            if !self.input.buffering() {
                start = i + 1;
            }
            self.input.location = Some(format!("{path}:{start}"));
            self.cancel.reset();
            flow = if line.trim_start().starts_with('\\') {
                self.handle(line.trim())
            } else {
                self.on_line(line)
            };
            if matches!(flow, Flow::Quit) || self.cancel.is_set() {
                break;
            }
        }
        // A last statement without its `;` runs too.
        if matches!(flow, Flow::Continue) && self.input.buffering() {
            let sql = self.input.buffer.join("\n");
            self.input.buffer.clear();
            self.input.location = Some(format!("{path}:{start}"));
            flow = self.run_kind(Kind::Sql, &sql);
        }
        self.input.buffer = typed;
        self.input.include_depth -= 1;
        self.input.location = outer;
        flow
    }

    /// `\e`: the buffered statement, or else the last SQL or question, in `$VISUAL`/`$EDITOR`;
    /// what is saved runs.
    pub fn edit_last(&mut self) -> Flow {
        let start = if self.input.buffering() {
            self.input.buffer.join("\n")
        } else {
            self.input.last.clone().unwrap_or_default()
        };
        let edited = match edit_sql(&start) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sqlora: {e}");
                return Flow::Continue;
            }
        };
        self.input.clear();
        let text = edited.trim();
        if text.is_empty() {
            eprintln!("sqlora: nothing to run");
            return Flow::Continue;
        }
        let dialect = self.pipeline.dialect();
        match classify(text, dialect, &|n| self.is_column(n)) {
            // What was written in the editor is finished: run it as it is.
            Kind::Incomplete => self.run_kind(Kind::Sql, text),
            // A question is one line.
            Kind::Question => {
                let q = text.split_whitespace().collect::<Vec<_>>().join(" ");
                self.run_kind(Kind::Question, &q)
            }
            k => self.run_kind(k, text),
        }
    }
}

/// SQL edited in `$VISUAL`/`$EDITOR` (prefilled with `start`), or typed on stdin up to an
/// empty line when no editor is set: for `\e` and `\fix`.
pub(super) fn edit_sql(start: &str) -> std::result::Result<String, String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty());
    match editor {
        Some(editor) => {
            let file = tempfile::Builder::new()
                .prefix("sqlora-fix-")
                .suffix(".sql")
                .tempfile()
                .map_err(|e| format!("cannot create a file to edit: {e}"))?;
            std::fs::write(file.path(), format!("{start}\n"))
                .map_err(|e| format!("cannot write {}: {e}", file.path().display()))?;
            let mut parts = editor.split_whitespace();
            let program = parts.next().unwrap_or("vi");
            let status = std::process::Command::new(program)
                .args(parts)
                .arg(file.path())
                .status()
                .map_err(|e| format!("cannot run the editor `{editor}`: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "the editor `{editor}` exited with {status}; nothing saved"
                ));
            }
            std::fs::read_to_string(file.path()).map_err(|e| format!("cannot read the edit: {e}"))
        }
        None => {
            eprintln!("Type the corrected SQL; an empty line ends it (current: {start})");
            let mut out = String::new();
            let stdin = std::io::stdin();
            loop {
                let mut line = String::new();
                let n = stdin
                    .read_line(&mut line)
                    .map_err(|e| format!("cannot read the correction: {e}"))?;
                if n == 0 || line.trim().is_empty() {
                    break;
                }
                out.push_str(&line);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[&str] = &["name", "email", "id", "created_at"];

    fn kind(line: &str) -> Kind {
        classify(line, Dialect::Sqlite, &|n| {
            COLS.iter().any(|c| c.eq_ignore_ascii_case(n))
        })
    }

    #[test]
    fn english_starting_with_sql_words_is_a_question() {
        for q in [
            "Show me the 3 newest customers",
            "show all orders from last month",
            "Describe the orders table",
            "Explain the revenue per month",
            "Explain customers",
            "With the most orders, which customer spent least?",
            "Select the newest customers",
            "Select all customers",
            "select everything",
            "select the three biggest orders",
            "Values of orders by month",
            "How many customers are there?",
            "delete all customers",
            "Table of customers by country",
        ] {
            assert_eq!(kind(q), Kind::Question, "{q}");
        }
    }

    #[test]
    fn sql_is_sql() {
        for s in [
            "SELECT * FROM customers",
            "select name from customers;",
            "SELECT 40 + 2 AS answer",
            "SELECT hex(randomblob(5)) AS big",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "EXPLAIN QUERY PLAN SELECT * FROM customers",
            "(SELECT 1) UNION (SELECT 2)",
            "-- note\n(SELECT 1) UNION (SELECT 2)",
            // Writes parse: SQL, so that the guard refuses them with its reason.
            "delete from customers",
            "PRAGMA writable_schema=1",
            "SELECT name FROM customers; DROP TABLE customers",
        ] {
            assert_eq!(kind(s), Kind::Sql, "{s}");
        }
        assert_eq!(
            classify("/*!KILL */ (SELECT 1)", Dialect::MySql, &|_| false),
            Kind::Sql
        );
    }

    #[test]
    fn psql_habits_map_to_commands() {
        assert_eq!(kind("SHOW TABLES"), Kind::Tables);
        assert_eq!(kind("show tables;"), Kind::Tables);
        assert_eq!(
            kind("DESCRIBE customers"),
            Kind::Describe("customers".into())
        );
        assert_eq!(kind("desc `orders`;"), Kind::Describe("orders".into()));
        assert_eq!(
            kind("SHOW COLUMNS FROM customers"),
            Kind::Describe("customers".into())
        );
        for q in ["exit", "QUIT", "quit;", " Exit "] {
            assert_eq!(kind(q), Kind::Quit, "{q}");
        }
        assert_eq!(kind("help"), Kind::Help);
        assert_eq!(kind("HELP;"), Kind::Help);
        assert_eq!(kind("help me find customers"), Kind::Question);
        assert_eq!(kind("exit the loop"), Kind::Question);
    }

    #[test]
    fn unfinished_queries_are_buffered() {
        for s in [
            "SELECT name, email",
            "SELECT *",
            "select name,",
            "SELECT name FROM",
            "SELECT count(name)",
            "SELECT nmae",
            "WITH x AS (",
            "(SELECT 1",
            "SELECT 'it''s",
        ] {
            assert_eq!(kind(s), Kind::Incomplete, "{s}");
        }
        // With `;` it is finished (and fails, or runs).
        assert_eq!(kind("SELECT name,;"), Kind::Question);
        assert_eq!(kind("SELECT name, email;"), Kind::Sql);
    }

    fn feed(st: &mut State, line: &str) -> Step {
        st.feed(line, Dialect::Sqlite, &|n| {
            COLS.iter().any(|c| c.eq_ignore_ascii_case(n))
        })
    }

    #[test]
    fn buffering_runs_at_the_semicolon() {
        let mut st = State::default();
        assert_eq!(st.prompt("sqlora> "), "sqlora> ");
        assert_eq!(feed(&mut st, "SELECT name, email"), Step::More);
        assert_eq!(st.prompt("sqlora> "), "sqlora-> ");
        assert_eq!(st.prompt("sqlora[a]> "), "sqlora[a]-> ");
        assert_eq!(feed(&mut st, "  FROM customers"), Step::More);
        assert_eq!(
            feed(&mut st, "WHERE id < 3;"),
            Step::Run(
                Kind::Sql,
                "SELECT name, email\n  FROM customers\nWHERE id < 3;".into()
            )
        );
        assert!(!st.buffering());
        // A `;` inside an open string does not end the statement.
        assert_eq!(feed(&mut st, "SELECT 'a"), Step::More);
        assert_eq!(feed(&mut st, "b;"), Step::More);
        assert_eq!(
            feed(&mut st, "c';"),
            Step::Run(Kind::Sql, "SELECT 'a\nb;\nc';".into())
        );
        // An empty line discards the buffer.
        assert_eq!(feed(&mut st, "SELECT *"), Step::More);
        assert_eq!(feed(&mut st, ""), Step::Cleared);
        assert!(!st.buffering());
        assert_eq!(feed(&mut st, ""), Step::Idle);
        assert_eq!(feed(&mut st, "-- only a comment"), Step::Idle);
        // In a `\i` file a whole line still waits for its `;`.
        st.include_depth = 1;
        assert_eq!(feed(&mut st, "SELECT 12"), Step::More);
        assert_eq!(
            feed(&mut st, "  AS twelve;"),
            Step::Run(Kind::Sql, "SELECT 12\n  AS twelve;".into())
        );
    }

    #[test]
    fn questions_and_whole_statements_are_never_buffered() {
        let mut st = State::default();
        assert_eq!(
            feed(&mut st, "Show me the 3 newest customers"),
            Step::Run(Kind::Question, "Show me the 3 newest customers".into())
        );
        assert_eq!(
            feed(&mut st, "Select the newest customers"),
            Step::Run(Kind::Question, "Select the newest customers".into())
        );
        assert_eq!(
            feed(&mut st, "SELECT name FROM customers"),
            Step::Run(Kind::Sql, "SELECT name FROM customers".into())
        );
        assert!(!st.buffering());
    }

    #[test]
    fn sqlora_ask_takes_the_same_sql() {
        let d = Dialect::Sqlite;
        assert!(is_sql_line("SELECT * FROM t", d));
        assert!(is_sql_line("delete from customers", d));
        assert!(!is_sql_line("Show me the 3 newest customers", d));
        assert!(!is_sql_line("SHOW TABLES", d));
        assert!(!is_sql_line("select the three biggest orders", d));
    }
}
