//! Schema-constrained decoding, the SQL side: while the model writes SQL token by token,
//! [`State::allows`] says whether one more token may come next, so that every table and column
//! name the model writes exists among the tables it was shown. [`Names`] holds the names of
//! those tables (built once per question); [`Names::state`] re-lexes the SQL written so far
//! into a small state machine ([`machine`]): which query level, clause and slot the next word
//! falls in, which tables, aliases and CTEs are in scope.
//!
//! It errs on the side of allowing, as the guard's name check ([`super::names`]) does: what it
//! cannot see into (derived tables, CTEs without a column list, strings, comments, anything
//! after the statement) is free, and the guard still checks the finished statement. Two
//! things the guard accepts are refused on purpose: tables not shown to the model (system
//! catalogs), and a name used before the FROM that defines it when it is no column of a
//! shown table (`SELECT x.n FROM (SELECT count(*) AS n …) AS x`): an alias used early is
//! taken for a shown table, as in `SELECT T1.name FROM singer AS T1`. In a repair
//! ([`Names::hinted_by`]) such an alias is taken for the table the failed answer gave it. In
//! an answer's last round ([`Names::covering_from`]) a FROM may not end before its tables have
//! the bare columns its SELECT list named. A function name and a space must be followed by its
//! `(`; a keyword is never a qualifier.
//! Never touches a database, the model or its tokenizer: it sees text and token bytes only.

mod grammar;
mod machine;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::schema::{ident, Table};
use crate::sql::Dialect;

use machine::{Lex, Mode, Parse, Step};

/// Words of SQL itself, valid wherever an expression may continue (lower case).
const KEYWORDS: &str = "\
    select distinct from where and or not in is null like ilike glob between exists case \
    when then else end as on using join inner left right full outer cross natural group by \
    order asc desc nulls first last having limit offset union all intersect except with \
    recursive cast true false interval over partition rows range preceding following current \
    row unbounded filter within collate escape date time timestamp fetch next only any some \
    similar to year month day hour minute second week quarter epoch dow doy div mod regexp \
    rlike binary unsigned signed integer int text real varchar char character numeric \
    decimal float double precision bigint smallint boolean bool values lateral window groups \
    exclude ties others no zone at percent separator leading trailing both for of isnull \
    notnull match against mode unknown default array distinctrow straight_join \
    sql_calc_found_rows indexed ordinality tablesample xor varying without microsecond \
    day_hour year_month dayofweek dayofyear isodow isoyear century decade millennium \
    milliseconds microseconds timezone date_part nchar blob bytea json jsonb uuid \
    timestamptz serial utf8mb4 explain";

/// Keywords that name date parts: in an expression, valid only inside parentheses
/// (`EXTRACT(YEAR FROM d)`), so that `WHERE Year = 2014` cannot pass for a column of a table
/// that has none.
const DATE_PARTS: &str = "\
    year month day hour minute second week quarter epoch dow doy microsecond isodow isoyear \
    century decade millennium milliseconds microseconds timezone day_hour year_month \
    dayofweek dayofyear";

/// Keywords that name types: never valid in an expression (`CAST(x AS INTEGER)` and `x::int`
/// put them where any word may stand), so that `Power(TEXT)` cannot pass for a column.
const TYPE_WORDS: &str = "\
    integer int text real varchar char character numeric decimal float double precision \
    bigint smallint boolean bool unsigned signed nchar blob bytea json jsonb uuid timestamptz \
    serial utf8mb4 binary";

/// Pseudo columns a table has (`t.rowid`, `t.ctid`): the only ones valid after `X.`.
const ROW_IDS: &str = "rowid oid _rowid_ ctid xmin xmax cmin cmax tableoid";

/// Names that are not columns although they parse like them (as the guard's name check).
const PSEUDO_COLUMNS: &str = "rowid oid _rowid_ ctid xmin xmax cmin cmax tableoid \
    current_date current_time current_timestamp localtime localtimestamp current_user \
    session_user current_role current_schema current_catalog user true false null unknown";

/// A sorted set of lower-case names, searched by whole name or by prefix; `start[c]` is
/// where the names beginning with byte `c` begin, so a search looks at one bucket only.
#[derive(Debug, Clone)]
pub(crate) struct Set {
    names: Vec<Box<[u8]>>,
    start: Box<[u32; 257]>,
}

/// Byte order of two short names, without a call out for `memcmp`.
fn order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl Set {
    fn from_iter<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Set {
        let mut v: Vec<Box<[u8]>> = names
            .into_iter()
            .map(|s| {
                s.as_ref()
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice()
            })
            .filter(|s| !s.is_empty())
            .collect();
        v.sort();
        v.dedup();
        let mut start = Box::new([0u32; 257]);
        for (c, slot) in start.iter_mut().enumerate() {
            let at = v.partition_point(|x| usize::from(x[0]) < c);
            *slot = u32::try_from(at).unwrap_or(u32::MAX);
        }
        Set { names: v, start }
    }

    /// The names that begin as `w` does.
    fn bucket(&self, w: &[u8]) -> &[Box<[u8]>] {
        match w.first() {
            None => &self.names,
            Some(&c) => {
                let (a, b) = (self.start[usize::from(c)], self.start[usize::from(c) + 1]);
                self.names.get(a as usize..b as usize).unwrap_or(&[])
            }
        }
    }

    /// Whether `w` (lower case) is in the set.
    fn has(&self, w: &[u8]) -> bool {
        self.bucket(w).binary_search_by(|x| order(x, w)).is_ok()
    }

    /// Whether some name starts with `p` (lower case).
    fn has_prefix(&self, p: &[u8]) -> bool {
        let b = self.bucket(p);
        let i = b.partition_point(|x| order(x, p).is_lt());
        b.get(i).is_some_and(|x| x.starts_with(p))
    }

    /// Whole name (`complete`) or prefix.
    fn fits(&self, w: &[u8], complete: bool) -> bool {
        if complete {
            self.has(w)
        } else {
            self.has_prefix(w)
        }
    }
}

/// One table shown to the model.
#[derive(Debug, Clone)]
pub(crate) struct TableNames {
    /// The name as stored (exact case), for quoted names in a table slot.
    name: String,
    lower: Box<[u8]>,
    /// Index into [`Names::schemas`] when the table lives outside the default namespace.
    schema: Option<usize>,
    /// Whether the name may be written without quotes.
    bare: bool,
    /// Every column (lower case) and those that may be written without quotes.
    cols: Set,
    bare_cols: Set,
    /// The columns as stored (exact case), for [`Names::grammar`].
    col_names: Vec<String>,
}

/// The names a question's SQL may use: built once per question from the tables shown.
#[derive(Debug, Clone)]
pub struct Names {
    dialect: Dialect,
    tables: Vec<TableNames>,
    /// Namespaces of tables outside the default one (exact case, lower case).
    schemas: Vec<(String, Box<[u8]>)>,
    /// SQL keywords (for telling an alias from a keyword).
    keywords: Set,
    /// Keywords valid anywhere in an expression (neither date parts nor type names).
    plain_keywords: Set,
    /// Keywords valid in an expression inside parentheses: the plain ones and date parts.
    paren_keywords: Set,
    /// Allowed function names.
    functions: Set,
    pseudo: Set,
    /// Pseudo columns of a table ([`ROW_IDS`]).
    row_ids: Set,
    /// Columns of all tables, and those writable bare.
    all_cols: Set,
    all_bare_cols: Set,
    /// Table names writable bare.
    bare_tables: Set,
    /// Every table name (lower case), for quoted names outside a table slot.
    all_tables: Set,
    /// Aliases (lower case) an earlier answer gave tables: see [`Names::hinted_by`].
    hints: Vec<(Box<[u8]>, usize)>,
    /// A FROM may not end before its tables have the columns named before it: see
    /// [`Names::covering_from`].
    cover_from: bool,
    /// The shown tables the failed answer of a repair named anywhere (by index; see
    /// [`Names::hinted_by`]): in its last round, [`Names::grammar`] keeps bare columns to
    /// theirs.
    read: Vec<usize>,
}

fn simple(name: &str, dialect: Dialect) -> bool {
    ident(name, dialect) == name
}

impl Names {
    /// The names of `tables` as `dialect` writes them.
    pub fn new(tables: &[&Table], dialect: Dialect) -> Names {
        let mut schemas: Vec<(String, Box<[u8]>)> = Vec::new();
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let schema =
                t.schema
                    .as_ref()
                    .map(|s| match schemas.iter().position(|(n, _)| n == s) {
                        Some(i) => i,
                        None => {
                            let lower = s.to_ascii_lowercase().into_bytes().into_boxed_slice();
                            schemas.push((s.clone(), lower));
                            schemas.len() - 1
                        }
                    });
            out.push(TableNames {
                name: t.name.clone(),
                lower: t.name.to_ascii_lowercase().into_bytes().into_boxed_slice(),
                schema,
                bare: simple(&t.name, dialect),
                cols: Set::from_iter(t.columns.iter().map(|c| &c.name)),
                bare_cols: Set::from_iter(
                    t.columns
                        .iter()
                        .filter(|c| simple(&c.name, dialect))
                        .map(|c| &c.name),
                ),
                col_names: t.columns.iter().map(|c| c.name.clone()).collect(),
            });
        }
        let functions: Vec<String> = super::functions::current()
            .names(dialect)
            .map(str::to_string)
            .collect();
        let cols = |bare: bool| {
            Set::from_iter(tables.iter().flat_map(|t| {
                t.columns
                    .iter()
                    .filter(move |c| !bare || simple(&c.name, dialect))
                    .map(|c| c.name.as_str())
            }))
        };
        Names {
            dialect,
            keywords: Set::from_iter(KEYWORDS.split_whitespace()),
            plain_keywords: Set::from_iter(KEYWORDS.split_whitespace().filter(|w| {
                !DATE_PARTS.split_whitespace().any(|d| d == *w)
                    && !TYPE_WORDS.split_whitespace().any(|t| t == *w)
            })),
            paren_keywords: Set::from_iter(
                KEYWORDS
                    .split_whitespace()
                    .filter(|w| !TYPE_WORDS.split_whitespace().any(|t| t == *w))
                    .chain(DATE_PARTS.split_whitespace()),
            ),
            functions: Set::from_iter(functions),
            pseudo: Set::from_iter(PSEUDO_COLUMNS.split_whitespace()),
            row_ids: Set::from_iter(ROW_IDS.split_whitespace()),
            all_cols: cols(false),
            all_bare_cols: cols(true),
            bare_tables: Set::from_iter(out.iter().filter(|t| t.bare).map(|t| &t.name)),
            all_tables: Set::from_iter(out.iter().map(|t| &t.name)),
            tables: out,
            schemas,
            hints: Vec::new(),
            cover_from: false,
            read: Vec::new(),
        }
    }

    /// These names, with the FROM rule on: while the bare columns written before a SELECT's
    /// FROM are not all in its tables, the FROM may not end (no WHERE, GROUP BY, ORDER BY,
    /// LIMIT, set operation, closing `)`, `;` or fence), so the answer must join the table that
    /// has them. It cannot take back the word that caused it (another table's column written
    /// by mistake), so it is for an answer's last chance: with it on from the start, the first
    /// 100 Spider dev questions lost 2 points (CPU), because the repair loop no longer saw
    /// "unknown column" and fixed the word.
    pub fn covering_from(self) -> Names {
        Names {
            cover_from: true,
            ..self
        }
    }

    /// These names, with the aliases that `failed` (an earlier answer to the same question,
    /// which the guard refused) gave its tables taken as what they will name again. A repair
    /// that writes `T1.` before its FROM is then offered the columns of the table the failed
    /// answer called T1, not every column of every table: the commonest unknown name left
    /// is `SELECT T1.Name … FROM concert AS T1`, which no left-to-right mask can see coming.
    pub fn hinted_by(&self, failed: &str) -> Names {
        // The trailing space ends the last word.
        let state = self.state(&format!("{failed} "));
        Names {
            hints: state.parse.table_aliases(self),
            read: self.named_in(failed),
            ..self.clone()
        }
    }

    /// The shown tables whose names `sql` has as a word (bare, or inside quotes).
    fn named_in(&self, sql: &str) -> Vec<usize> {
        let words: std::collections::HashSet<String> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ' '))
            .flat_map(|quoted| {
                // A quoted name may hold spaces; a bare one may not.
                std::iter::once(quoted.to_ascii_lowercase())
                    .chain(quoted.split(' ').map(str::to_ascii_lowercase))
            })
            .collect();
        self.tables
            .iter()
            .enumerate()
            .filter(|(_, t)| words.contains(&t.name.to_ascii_lowercase()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Where the SQL written so far leaves the next token.
    pub fn state(&self, sql: &str) -> State<'_> {
        self.read_on(Lex::new(), Parse::new(), sql.as_bytes())
    }

    /// The state after `bytes` more, from `lex` and `parse` (reading stops where the statement
    /// ends: nothing after it is constrained).
    fn read_on(&self, mut lex: Lex, parse: Parse, bytes: &[u8]) -> State<'_> {
        let mut parse = Cow::Owned(parse);
        if lex.mode != Mode::Free {
            for &b in bytes {
                if machine::step(self, &mut lex, &mut parse, b, &[], false) == Step::Accept
                    && lex.mode == Mode::Free
                {
                    break;
                }
            }
        }
        State {
            names: self,
            lex,
            parse: parse.into_owned(),
        }
    }
}

/// SQL read, and the state after it.
type Seen = (Box<[u8]>, Lex, Parse);

/// How many answers' states a [`Tracker`] keeps: twice the most candidates a question may
/// have (64), so that a row's last state is still there when its next token comes.
const TRACKED: usize = 128;

/// [`Names::state`] for answers that grow a token at a time: the state after the longest SQL
/// read before that begins the new SQL is read on from, so each token costs the bytes it adds,
/// not a re-read of the whole answer. Shared by the rows of a batch (candidates of one
/// question); keeps the [`TRACKED`] states used last. Gives the same state as
/// [`Names::state`] (a test holds it to that).
#[derive(Debug)]
pub struct Tracker {
    names: Names,
    seen: std::sync::Mutex<Vec<Seen>>,
}

impl Tracker {
    pub fn new(names: Names) -> Tracker {
        Tracker {
            names,
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The names it tracks.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Where the SQL written so far leaves the next token.
    pub fn state(&self, sql: &str) -> State<'_> {
        let sql = sql.as_bytes();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let from = seen
            .iter()
            .enumerate()
            .filter(|(_, (s, ..))| sql.starts_with(s))
            .max_by_key(|(_, (s, ..))| s.len())
            .map(|(i, _)| i);
        let state = match from {
            Some(i) => {
                let (s, lex, parse) = &seen[i];
                self.names
                    .read_on(lex.clone(), parse.clone(), &sql[s.len()..])
            }
            None => self.names.read_on(Lex::new(), Parse::new(), sql),
        };
        // Least recently used out: a row's last state is among the newest (one per row of
        // the batch), and rows with the same text share one.
        match from {
            Some(i) if seen[i].0.len() == sql.len() => {
                let same = seen.remove(i);
                seen.push(same);
                return state;
            }
            _ if seen.len() >= TRACKED => {
                seen.remove(0);
            }
            _ => {}
        }
        let entry = (
            sql.to_vec().into_boxed_slice(),
            state.lex.clone(),
            state.parse.clone(),
        );
        seen.push(entry);
        state
    }
}

/// The state after some SQL: what may come next.
#[derive(Debug, Clone)]
pub struct State<'a> {
    names: &'a Names,
    lex: Lex,
    parse: Parse,
}

impl State<'_> {
    /// Nothing is constrained from here on: after the statement's end (`;`, the closing code
    /// fence) or in a statement that is no query. Inside a string or comment this is false
    /// although [`State::allows`] accepts every token that stays inside it: a token may close
    /// the string and go on with a name, which is checked.
    pub fn is_free(&self) -> bool {
        self.lex.mode == Mode::Free
    }

    /// Inside a string literal, a comment, or a double-quoted word SQLite or MySQL may read as
    /// a string: what the next token writes there is not checked until it leaves.
    pub fn in_text(&self) -> bool {
        match self.lex.mode {
            Mode::Str | Mode::StrEscape | Mode::Line | Mode::Block => true,
            Mode::Quoted(_) => self.lex.free_word,
            _ => false,
        }
    }

    /// Whether the bytes of one token may come next.
    pub fn allows(&self, next: &[u8]) -> bool {
        if self.lex.mode == Mode::Free {
            return true;
        }
        let mut lex = self.lex.clone();
        let mut parse = Cow::Borrowed(&self.parse);
        for (i, &b) in next.iter().enumerate() {
            match machine::step(self.names, &mut lex, &mut parse, b, &next[i + 1..], true) {
                Step::Go => {}
                Step::Accept => return true,
                Step::Refuse => return false,
            }
        }
        machine::partial_ok(self.names, &lex, &parse)
    }
}
