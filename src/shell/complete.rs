//! The shell's line-editor helper (rustyline): Tab completion from the line's context (table
//! names after FROM/JOIN, the columns of the tables the line names or of `alias.`, SQL
//! keywords, backslash commands from [`super::commands::COMMANDS`]), SQL highlighting while
//! typing (keywords, strings, numbers, comments; none when `NO_COLOR` is set or the shell is
//! not on a terminal) and greyed hints from history. It is fed the schema's table and column
//! names by the shell; it never reads the database, runs anything or changes the line.

use std::borrow::Cow;
use std::io::IsTerminal;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hinter, HistoryHinter};
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::COMMANDS;

/// SQL keywords and common functions offered for completion and colored while typing.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "DISTINCT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "EXISTS",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "CROSS",
    "NATURAL",
    "ON",
    "USING",
    "AS",
    "GROUP",
    "BY",
    "HAVING",
    "ORDER",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "UNION",
    "ALL",
    "INTERSECT",
    "EXCEPT",
    "WITH",
    "RECURSIVE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "VALUES",
    "EXPLAIN",
    "ANALYZE",
    "PRAGMA",
    "TRUE",
    "FALSE",
    "OVER",
    "PARTITION",
    "WINDOW",
    "FILTER",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "COALESCE",
    "NULLIF",
    "LOWER",
    "UPPER",
    "LENGTH",
    "ROUND",
    "ABS",
    "SUBSTR",
    "TRIM",
    "REPLACE",
    "ROW_NUMBER",
    "RANK",
    "DENSE_RANK",
    "INSERT",
    "INTO",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "TABLE",
    "VIEW",
    "INDEX",
    "DESCRIBE",
    "SHOW",
];

/// First words after which the line is SQL worth coloring (a question is left plain).
const SQL_LEADS: &[&str] = &[
    "SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA", "TABLE", "INSERT", "UPDATE", "DELETE",
    "CREATE", "DROP", "ALTER",
];

/// Keywords after which a table name comes.
const BEFORE_TABLE: &[&str] = &["FROM", "JOIN", "INTO", "UPDATE", "TABLE", "DESCRIBE"];

/// Clause keywords that end a FROM list (so `, name` after them is not a table).
const CLAUSES: &[&str] = &[
    "SELECT", "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "ON", "USING", "SET", "UNION", "VALUES",
];

/// Whether to color: not when `no_color` (the `NO_COLOR` variable) is set and not empty, nor
/// when the shell is not on a terminal.
pub fn color_wanted(no_color: Option<&str>, on_terminal: bool) -> bool {
    on_terminal && no_color.is_none_or(str::is_empty)
}

/// [`color_wanted`] for this process.
pub fn color_here() -> bool {
    let no_color = std::env::var("NO_COLOR").ok();
    color_wanted(
        no_color.as_deref(),
        std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
    )
}

/// One table's name and its columns' names.
pub type TableNames = (String, Vec<String>);

pub struct SqlHelper {
    tables: Vec<TableNames>,
    color: bool,
    hinter: HistoryHinter,
}

impl SqlHelper {
    pub fn new(tables: Vec<TableNames>, color: bool) -> Self {
        SqlHelper {
            tables,
            color,
            hinter: HistoryHinter::new(),
        }
    }

    /// New names after the schema was read again.
    pub fn set_schema(&mut self, tables: Vec<TableNames>) {
        self.tables = tables;
    }

    fn table(&self, name: &str) -> Option<&TableNames> {
        let name = name.trim_matches(|c| c == '"' || c == '`');
        // `schema.table` names match on the whole name or on the part after the dot.
        self.tables.iter().find(|(t, _)| {
            t.eq_ignore_ascii_case(name)
                || t.rsplit('.')
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case(name))
        })
    }

    /// What Tab offers at `pos` in `line`: where the replaced word starts, and the words.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let head = &line[..pos];
        let start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_word(*c))
            .last()
            .map_or(pos, |(i, _)| i);
        let word = &head[start..];
        let before = &head[..start];
        let tokens = tokens(before);
        let prefix_match = |w: &str| {
            w.to_ascii_lowercase()
                .starts_with(&word.to_ascii_lowercase())
        };

        // Backslash commands, and a table argument for those that take one.
        if before.trim_start() == "\\" {
            let typed = word;
            let mut out: Vec<String> = COMMANDS
                .iter()
                .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
                .filter(|n| n.starts_with(typed))
                .map(str::to_string)
                .collect();
            out.sort();
            out.dedup();
            return (start, out);
        }
        if let Some(cmd) = line.trim_start().strip_prefix('\\') {
            let name = cmd.split_whitespace().next().unwrap_or("");
            let takes_table = COMMANDS
                .iter()
                .any(|c| (c.name == name || c.aliases.contains(&name)) && c.args.contains("TABLE"));
            let out = if takes_table {
                self.table_names(&prefix_match)
            } else {
                Vec::new()
            };
            return (start, out);
        }

        // `alias.` or `table.`: that table's columns.
        if let Some(qualifier) = before.strip_suffix('.') {
            let q: String = qualifier
                .chars()
                .rev()
                .take_while(|c| is_word(*c))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let all = tokens_of(line);
            let table = self
                .table(&q)
                .or_else(|| alias_target(&all, &q).and_then(|t| self.table(&t)));
            let out = table
                .map(|(_, cols)| cols.iter().filter(|c| prefix_match(c)).cloned().collect())
                .unwrap_or_default();
            return (start, sorted(out));
        }

        let upper: Vec<String> = tokens.iter().map(|t| t.to_ascii_uppercase()).collect();
        let last = upper.last().map(String::as_str);
        let clause = upper
            .iter()
            .rev()
            .find(|t| BEFORE_TABLE.contains(&t.as_str()) || CLAUSES.contains(&t.as_str()))
            .map(String::as_str);
        let wants_table = last.is_some_and(|t| BEFORE_TABLE.contains(&t))
            || (last == Some(",") && clause.is_some_and(|c| BEFORE_TABLE.contains(&c)));
        if wants_table {
            return (start, sorted(self.table_names(&prefix_match)));
        }
        if word.is_empty() {
            return (start, Vec::new());
        }
        // Columns of the tables the line names (all columns when it names none), tables,
        // keywords in the case typed.
        let named: Vec<&TableNames> = tokens_of(line)
            .iter()
            .filter_map(|t| self.table(t))
            .collect();
        let mut out: Vec<String> = Vec::new();
        let column_sources: Vec<&TableNames> = if named.is_empty() {
            self.tables.iter().collect()
        } else {
            named
        };
        for (_, cols) in column_sources {
            out.extend(cols.iter().filter(|c| prefix_match(c)).cloned());
        }
        out.extend(self.table_names(&prefix_match));
        let lower = word.chars().all(|c| !c.is_ascii_uppercase());
        out.extend(KEYWORDS.iter().filter(|k| prefix_match(k)).map(|k| {
            if lower {
                k.to_ascii_lowercase()
            } else {
                k.to_string()
            }
        }));
        (start, sorted(out))
    }

    fn table_names(&self, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        self.tables
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| keep(t))
            .collect()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by_key(|s| s.to_ascii_lowercase());
    v.dedup();
    v
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Words (with dots kept inside, as `schema.table`) and single punctuation characters of
/// `s`, strings and comments left out.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if is_word(c) || c == '"' || c == '`' {
            let mut w = String::new();
            if c == '"' || c == '`' {
                // A quoted identifier: its text, unquoted.
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    w.push(d);
                }
            } else {
                w.push(c);
            }
            while let Some(&d) = chars.peek() {
                if is_word(d) || (d == '.' && !w.is_empty()) {
                    w.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(w.trim_end_matches('.').to_string());
        } else if c == '\'' {
            for d in chars.by_ref() {
                if d == '\'' {
                    break;
                }
            }
        } else if c == '-' && chars.peek() == Some(&'-') {
            break;
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

/// The tokens of the whole line, `a.b` split into `a` and `b` too.
fn tokens_of(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in tokens(line) {
        if t.contains('.') {
            out.extend(t.split('.').map(str::to_string));
        }
        out.push(t);
    }
    out
}

/// The table `alias` stands for in `tokens` (`FROM t a`, `JOIN t AS a`).
fn alias_target(tokens: &[String], alias: &str) -> Option<String> {
    tokens
        .windows(3)
        .find_map(|w| {
            if w[1].eq_ignore_ascii_case("AS") && w[2].eq_ignore_ascii_case(alias) {
                Some(w[0].clone())
            } else {
                None
            }
        })
        .or_else(|| {
            tokens.windows(2).find_map(|w| {
                let keyword = KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(&w[0]));
                (w[1].eq_ignore_ascii_case(alias)
                    && !keyword
                    && w[0].chars().all(|c| is_word(c) || c == '.'))
                .then(|| w[0].clone())
            })
        })
}

const KEYWORD_COLOR: &str = "1;34";
const STRING_COLOR: &str = "32";
const NUMBER_COLOR: &str = "35";
const COMMENT_COLOR: &str = "2";

/// `line` with ANSI colors on SQL keywords, strings, numbers and comments (the text itself is
/// unchanged, so the cursor stays where it was).
pub fn highlight_sql(line: &str) -> String {
    let paint = |out: &mut String, code: &str, s: &str| {
        out.push_str(&format!("\x1b[{code}m{s}\x1b[0m"));
    };
    let mut out = String::with_capacity(line.len() + 32);
    let mut i = 0;
    let bytes = line.as_bytes();
    while i < line.len() {
        let rest = &line[i..];
        let c = rest.chars().next().expect("not at the end");
        if rest.starts_with("--") {
            paint(&mut out, COMMENT_COLOR, rest);
            break;
        }
        if c == '\'' {
            // To the closing quote ('' is an escaped quote), or the end of the line.
            let mut j = i + 1;
            while j < line.len() {
                if bytes[j] == b'\'' {
                    if bytes.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                j += 1;
            }
            let j = j.min(line.len());
            paint(&mut out, STRING_COLOR, &line[i..j]);
            i = j;
            continue;
        }
        if c == '"' || c == '`' {
            let j = line[i + 1..].find(c).map_or(line.len(), |k| i + 1 + k + 1);
            out.push_str(&line[i..j]);
            i = j;
            continue;
        }
        if is_word(c) {
            let len: usize = rest
                .chars()
                .take_while(|&d| is_word(d))
                .map(char::len_utf8)
                .sum();
            let w = &line[i..i + len];
            if w.starts_with(|d: char| d.is_ascii_digit()) {
                // A number, with its decimal part.
                let mut j = i + len;
                if line[j..].starts_with('.') {
                    j += 1 + line[j + 1..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .count();
                }
                paint(&mut out, NUMBER_COLOR, &line[i..j]);
                i = j;
            } else {
                if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) {
                    paint(&mut out, KEYWORD_COLOR, w);
                } else {
                    out.push_str(w);
                }
                i += len;
            }
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// True when `line` starts as SQL (and so is colored).
fn starts_as_sql(line: &str) -> bool {
    let first = line
        .trim_start()
        .trim_start_matches('(')
        .split(|c: char| !is_word(c))
        .next()
        .unwrap_or("");
    SQL_LEADS.iter().any(|k| k.eq_ignore_ascii_case(first))
}

impl Completer for SqlHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = self.candidates(line, pos);
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.clone(),
                    replacement: w,
                })
                .collect(),
        ))
    }
}

impl Highlighter for SqlHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.color && starts_as_sql(line) {
            Cow::Owned(highlight_sql(line))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[{COMMENT_COLOR}m{hint}\x1b[0m"))
    }

    fn highlight_char(&self, line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color && !line.is_empty()
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
    fn hint(&self, line: &str, pos: usize, ctx: &Context<'_>) -> Option<String> {
        // Without color a hint would read as typed text.
        if self.color {
            self.hinter.hint(line, pos, ctx)
        } else {
            None
        }
    }
}

impl Validator for SqlHelper {}

impl Helper for SqlHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> SqlHelper {
        SqlHelper::new(
            vec![
                (
                    "customers".into(),
                    vec!["id".into(), "name".into(), "country".into()],
                ),
                (
                    "invoices".into(),
                    vec!["id".into(), "customer_id".into(), "total".into()],
                ),
                ("artists".into(), vec!["artist_id".into(), "name".into()]),
            ],
            false,
        )
    }

    fn offered(line: &str) -> Vec<String> {
        helper().candidates(line, line.len()).1
    }

    #[test]
    fn tables_after_from_and_join() {
        assert_eq!(
            offered("SELECT * FROM "),
            ["artists", "customers", "invoices"]
        );
        assert_eq!(offered("select * from cu"), ["customers"]);
        assert_eq!(offered("SELECT * FROM customers c JOIN i"), ["invoices"]);
        assert_eq!(offered("SELECT * FROM customers, in"), ["invoices"]);
    }

    #[test]
    fn columns_of_the_named_tables_and_aliases() {
        // Only the columns of the tables the line names, with tables and keywords.
        let line = "SELECT c FROM invoices";
        assert_eq!(
            helper().candidates(line, 8).1,
            [
                "case",
                "cast",
                "coalesce",
                "count",
                "create",
                "cross",
                "customer_id",
                "customers"
            ]
        );
        // No table named yet: every table's columns.
        assert!(offered("SELECT co").contains(&"country".to_string()));
        let line = "SELECT NA FROM artists";
        assert_eq!(helper().candidates(line, 9).1, ["name", "NATURAL"]);
        let line = "SELECT to FROM invoices";
        assert_eq!(helper().candidates(line, 9).1, ["total"]);
        // `alias.` and `table.`: that table's columns.
        assert_eq!(
            offered("SELECT * FROM invoices i WHERE i."),
            ["customer_id", "id", "total"]
        );
        assert_eq!(
            offered("SELECT * FROM customers AS c WHERE c.co"),
            ["country"]
        );
        assert_eq!(offered("SELECT artists.n"), ["name"]);
        let (start, _) = helper().candidates("SELECT artists.n", 16);
        assert_eq!(start, 15);
    }

    #[test]
    fn keywords_in_the_case_typed() {
        assert!(offered("sel").contains(&"select".to_string()));
        assert!(offered("SEL").contains(&"SELECT".to_string()));
        assert!(offered("SELECT * FROM customers WHERE name IS NO").contains(&"NOT".to_string()));
        // Nothing typed outside a table position: nothing offered.
        assert!(offered("SELECT ").is_empty());
    }

    #[test]
    fn backslash_commands_and_their_table_argument() {
        let out = offered("\\sc");
        assert_eq!(out, ["schema"]);
        let (start, all) = helper().candidates("\\", 1);
        assert_eq!(start, 1);
        assert!(all.contains(&"help".to_string()) && all.contains(&"q".to_string()));
        assert_eq!(offered("\\schema inv"), ["invoices"]);
        assert!(offered("\\q x").is_empty());
    }

    #[test]
    fn highlighting_colors_sql_and_nothing_without_color() {
        let h = highlight_sql("SELECT name, 'it''s' FROM t WHERE n > 2.5 -- note");
        assert!(h.contains("\x1b[1;34mSELECT\x1b[0m"), "{h}");
        assert!(h.contains("\x1b[32m'it''s'\x1b[0m"), "{h}");
        assert!(h.contains("\x1b[35m2.5\x1b[0m"), "{h}");
        assert!(h.contains("\x1b[2m-- note\x1b[0m"), "{h}");
        assert!(h.contains("name"));
        // Stripping the colors gives the line back.
        let plain: String = {
            let mut s = String::new();
            let mut esc = false;
            for c in h.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => s.push(c),
                }
            }
            s
        };
        assert_eq!(plain, "SELECT name, 'it''s' FROM t WHERE n > 2.5 -- note");
        // Questions stay plain; so does everything without color.
        let colored = SqlHelper::new(Vec::new(), true);
        assert!(matches!(
            colored.highlight("how many customers are from Spain", 0),
            Cow::Borrowed(_)
        ));
        assert!(matches!(colored.highlight("select 1", 0), Cow::Owned(_)));
        let plain = SqlHelper::new(Vec::new(), false);
        assert!(matches!(plain.highlight("select 1", 0), Cow::Borrowed(_)));
        assert!(!plain.highlight_char("select 1", 1, CmdKind::Other));
    }

    #[test]
    fn no_color_turns_color_off() {
        assert!(!color_wanted(Some("1"), true));
        assert!(color_wanted(Some(""), true));
        assert!(color_wanted(None, true));
        assert!(!color_wanted(None, false));
    }
}
