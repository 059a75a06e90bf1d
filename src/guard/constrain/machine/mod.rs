//! The incremental lexer and state machine behind [`super::State`]: one byte at a time, it
//! tracks strings, comments and quoted names, query levels (subqueries, CTE bodies), their
//! clauses and FROM sources, and decides for each word which slot it fills and whether it
//! is valid there.
//!
//! [`Lex`] is the small per-byte part (copied for every token checked); [`Parse`] holds the
//! scopes and is cloned only when a token changes them. Never refuses while reading the SQL
//! written so far (only while checking a token) and never panics on model text.

mod step;

use super::Names;
use crate::sql::Dialect;

pub(super) use step::step;

/// What the bytes at hand are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    Word,
    Number,
    /// A quoted name, closed by the byte given.
    Quoted(u8),
    Str,
    /// After a backslash in a MySQL string: the next byte is text.
    StrEscape,
    Line,
    Block,
    /// Everything allowed from here on.
    Free,
}

/// Where a relation's columns come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cols {
    Table(usize),
    Cte(usize),
    Unknown,
}

/// What may follow `X.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Qual {
    Cols(Cols),
    /// X not defined yet (an alias before its FROM): any column of any table, and the use is
    /// remembered for the alias check.
    AnyColumn,
    Schema(usize),
    Any,
}

/// The slot a word fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Start,
    Any,
    Table,
    TableOrQuery,
    TableIn(usize),
    AfterTable(Cols),
    Alias(Cols),
    Keywords,
    Qualified(Qual),
    Expr,
    CteName,
    CteCol(usize),
}

/// The last significant thing before the next word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prev {
    Start,
    From,
    Join,
    With,
    As,
    Table(Cols),
    AsFrom(Cols),
    Alias,
    CteNamed(usize),
    Comma,
    Dot(Qual),
    SchemaDot(usize),
    Cast,
    Word,
    Other,
}

const BUF: usize = 96;

/// A word being written (original bytes), up to [`BUF`] bytes; longer words go unchecked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Buf {
    b: [u8; BUF],
    n: usize,
    long: bool,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            b: [0; BUF],
            n: 0,
            long: false,
        }
    }
    fn push(&mut self, c: u8) {
        if self.n < BUF {
            self.b[self.n] = c;
            self.n += 1;
        } else {
            self.long = true;
        }
    }
    fn clear(&mut self) {
        self.n = 0;
        self.long = false;
    }
    fn lower(&self) -> Buf {
        let mut l = *self;
        l.b[..l.n].make_ascii_lowercase();
        l
    }
    fn get(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// The per-byte state: copied for each token checked.
#[derive(Debug, Clone)]
pub(super) struct Lex {
    pub(super) mode: Mode,
    /// The word or quoted name being written goes unchecked (a parameter, a lenient string).
    pub(super) free_word: bool,
    prev_byte: u8,
    prev: Prev,
    slot: Slot,
    word: Buf,
    /// A quoted name just closed: what a `.` after it would qualify.
    dot_qual: Option<Qual>,
    /// A function name was written and a space followed: only `(` may come next
    /// (`ORDER BY Power LIMIT 1` would take the function for a column).
    want_paren: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Table,
    Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A query level (index into `levels`), opened in a table or expression position.
    Level(Ctx),
    /// `(` whose first word decides: a subquery or a group.
    Pending(Ctx),
    Group,
    /// Parenthesised joins in FROM: clauses work as at the level's base.
    Join,
    /// A list of names (CTE columns, alias column lists): any word.
    AnyList(Option<usize>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    Select,
    From,
    With,
    Other,
}

#[derive(Debug, Clone)]
struct Rel {
    name: Box<[u8]>,
    cols: Cols,
}

#[derive(Debug, Clone)]
struct Level {
    clause: Clause,
    from_seen: bool,
    rels: Vec<Rel>,
    /// Sources of the level's earlier SELECTs (before UNION, INTERSECT, EXCEPT): their
    /// columns stay valid bare (ORDER BY names the first SELECT's output).
    prior: Vec<Cols>,
    /// Bare words used as columns before this SELECT's FROM (lower case): the FROM may not
    /// end until its tables have them all (see [`Parse::uncovered`]).
    early: Vec<Box<[u8]>>,
    /// The FROM clause has ended (WHERE, GROUP BY, ORDER BY, LIMIT, a set operation…).
    closed: bool,
}

impl Level {
    pub(super) fn new() -> Level {
        Level {
            clause: Clause::Select,
            from_seen: false,
            rels: Vec::new(),
            prior: Vec::new(),
            early: Vec::new(),
            closed: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Cte {
    name: Box<[u8]>,
    cols: Option<Vec<Box<[u8]>>>,
}

/// The scopes: cloned only when a token changes them.
#[derive(Debug, Clone)]
pub(super) struct Parse {
    frames: Vec<Frame>,
    levels: Vec<Level>,
    ctes: Vec<Cte>,
    aliases: Vec<Box<[u8]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Go,
    Accept,
    Refuse,
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Bytes that could make a token refused.
fn interesting(b: u8) -> bool {
    b.is_ascii_alphabetic()
        || b == b'_'
        || b >= 0x80
        || matches!(b, b'"' | b'`' | b'[' | b')' | b';')
}

impl Lex {
    pub(super) fn new() -> Lex {
        Lex {
            mode: Mode::Normal,
            free_word: false,
            prev_byte: b' ',
            prev: Prev::Start,
            slot: Slot::Start,
            word: Buf::new(),
            dot_qual: None,
            want_paren: false,
        }
    }
}

impl Parse {
    pub(super) fn new() -> Parse {
        Parse {
            frames: vec![Frame::Level(Ctx::Expr)],
            levels: vec![Level::new()],
            ctes: Vec::new(),
            aliases: Vec::new(),
        }
    }

    fn level(&self) -> &Level {
        // There is always a root level.
        &self.levels[self.levels.len() - 1]
    }

    fn level_mut(&mut self) -> &mut Level {
        let i = self.levels.len() - 1;
        &mut self.levels[i]
    }

    fn top(&self) -> Frame {
        self.frames
            .last()
            .copied()
            .unwrap_or(Frame::Level(Ctx::Expr))
    }

    fn at_base(&self) -> bool {
        matches!(self.top(), Frame::Level(_) | Frame::Join)
    }

    fn slot(&self, prev: Prev) -> Slot {
        match prev {
            Prev::Dot(q) => return Slot::Qualified(q),
            Prev::SchemaDot(s) => return Slot::TableIn(s),
            Prev::As | Prev::Cast => return Slot::Any,
            Prev::Start if self.frames.len() == 1 => return Slot::Start,
            _ => {}
        }
        match self.top() {
            Frame::Pending(Ctx::Table) => return Slot::TableOrQuery,
            Frame::Pending(Ctx::Expr) | Frame::Group => return Slot::Expr,
            Frame::AnyList(Some(c)) => return Slot::CteCol(c),
            Frame::AnyList(None) => return Slot::Any,
            Frame::Level(_) | Frame::Join => {}
        }
        match (self.level().clause, prev) {
            (Clause::With, Prev::With | Prev::Comma) => Slot::CteName,
            (Clause::With, _) => Slot::Keywords,
            (Clause::From, Prev::From | Prev::Join | Prev::Comma) => Slot::Table,
            (Clause::From, Prev::Table(c)) => Slot::AfterTable(c),
            (Clause::From, Prev::AsFrom(c)) => Slot::Alias(c),
            (Clause::From, _) => Slot::Keywords,
            _ => Slot::Expr,
        }
    }

    fn some_from_unseen(&self) -> bool {
        self.levels.iter().any(|l| !l.from_seen)
    }

    fn cte(&self, w: &[u8]) -> Option<usize> {
        self.ctes.iter().rposition(|c| c.name.as_ref() == w)
    }

    /// Columns of some relation in scope are unknown: bare words are free.
    fn open_scope(&self) -> bool {
        self.levels
            .iter()
            .flat_map(|l| l.rels.iter().map(|r| r.cols).chain(l.prior.iter().copied()))
            .any(|c| match c {
                Cols::Unknown => true,
                Cols::Cte(c) => self.ctes.get(c).is_none_or(|c| c.cols.is_none()),
                Cols::Table(_) => false,
            })
    }

    fn cols_have(&self, n: &Names, cols: Cols, w: &[u8], complete: bool, quoted: bool) -> bool {
        match cols {
            Cols::Table(i) => n.tables.get(i).is_none_or(|t| {
                let set = if quoted { &t.cols } else { &t.bare_cols };
                set.fits(w, complete) || n.row_ids.fits(w, complete)
            }),
            Cols::Cte(c) => match self.ctes.get(c).and_then(|c| c.cols.as_ref()) {
                Some(cols) => {
                    cols.iter().any(|x| fits(x, w, complete)) || n.row_ids.fits(w, complete)
                }
                None => true,
            },
            Cols::Unknown => true,
        }
    }

    /// The aliases this SQL gave shown tables, in the levels still open (the outermost query's
    /// once the SQL is complete): (alias, table).
    pub(super) fn table_aliases(&self, n: &Names) -> Vec<(Box<[u8]>, usize)> {
        self.levels
            .iter()
            .flat_map(|l| &l.rels)
            .filter_map(|r| match r.cols {
                Cols::Table(i) if r.name != n.tables[i].lower => Some((r.name.clone(), i)),
                _ => None,
            })
            .collect()
    }

    fn qualify(&self, n: &Names, w: &[u8]) -> Qual {
        // In a repair, an alias the failed answer gave a table, used before its FROM, is
        // taken to name that table again.
        let hinted = n
            .hints
            .iter()
            .find(|(a, _)| a.as_ref() == w)
            .map(|&(_, i)| Qual::Cols(Cols::Table(i)));
        let cur = self.levels.len() - 1;
        let find = |l: &Level| {
            l.rels
                .iter()
                .rev()
                .find(|r| r.name.as_ref() == w)
                .map(|r| r.cols)
        };
        if let Some(c) = find(self.level()) {
            return Qual::Cols(c);
        }
        let outer = self.levels[..cur].iter().rev().find_map(find);
        let schema = n.schemas.iter().position(|(_, l)| l.as_ref() == w);
        if let (None, Some(s)) = (outer, schema) {
            return Qual::Schema(s);
        }
        if !self.level().from_seen {
            return match outer {
                Some(Cols::Table(_)) | None => hinted.unwrap_or(Qual::AnyColumn),
                Some(c) => Qual::Cols(c),
            };
        }
        if let Some(c) = outer {
            return Qual::Cols(c);
        }
        if let Some(c) = self.cte(w) {
            return Qual::Cols(Cols::Cte(c));
        }
        if let Some(i) = n.tables.iter().position(|t| t.lower.as_ref() == w) {
            return Qual::Cols(Cols::Table(i));
        }
        if let Some(s) = n.schemas.iter().position(|(_, l)| l.as_ref() == w) {
            return Qual::Schema(s);
        }
        if self.some_from_unseen() {
            hinted.unwrap_or(Qual::AnyColumn)
        } else {
            Qual::Any
        }
    }

    /// Inside parentheses of an expression (a call's arguments, a group).
    fn in_parens(&self) -> bool {
        matches!(self.top(), Frame::Group | Frame::Pending(Ctx::Expr))
    }

    /// With the FROM rule on ([`Names::covering_from`]): the current level's FROM is open and
    /// some bare column used before it is in none of the relations in scope
    /// (`SELECT Template_Type_Code FROM Documents`, where only `Templates` has it): the FROM
    /// may not end yet, it needs a JOIN. Unsure (a relation of unknown columns, an outer FROM
    /// still to come) is covered.
    pub(super) fn uncovered(&self, n: &Names) -> bool {
        let l = self.level();
        // This level's FROM is seen, so an unseen one is an outer level's.
        if !n.cover_from
            || !l.from_seen
            || l.closed
            || l.early.is_empty()
            || self.open_scope()
            || self.some_from_unseen()
        {
            return false;
        }
        l.early.iter().any(|w| {
            !self
                .levels
                .iter()
                .flat_map(|l| l.rels.iter().map(|r| r.cols).chain(l.prior.iter().copied()))
                .any(|c| self.cols_have(n, c, w, true, true))
        })
    }
}

/// Keywords that end a FROM clause.
pub(super) const CLOSERS: [&[u8]; 11] = [
    b"fetch",
    b"where",
    b"group",
    b"having",
    b"order",
    b"limit",
    b"offset",
    b"union",
    b"intersect",
    b"except",
    b"window",
];

/// `w` is, or (not `complete`) can only become, a keyword that ends a FROM clause. A whole
/// closer still being written counts (`GROUP`, though `GROUPS` is a keyword too: not one that
/// may follow a FROM's tables).
fn closes_from(n: &Names, w: &[u8], complete: bool) -> bool {
    if CLOSERS.contains(&w) {
        return true;
    }
    if complete {
        return false;
    }
    CLOSERS.iter().any(|c| c.starts_with(w))
        && !n
            .keywords
            .bucket(w)
            .iter()
            .any(|k| k.starts_with(w) && !CLOSERS.contains(&k.as_ref()))
}

fn fits(name: &[u8], w: &[u8], complete: bool) -> bool {
    if complete {
        name == w
    } else {
        name.starts_with(w)
    }
}

/// Whether word `w` (lower case; `exact` as written) is valid in `slot`: whole (`next` is the
/// byte after it) or as a prefix (`next` is `None`).
fn valid(
    n: &Names,
    p: &Parse,
    slot: Slot,
    w: &[u8],
    exact: &[u8],
    quoted: bool,
    next: Option<u8>,
) -> bool {
    let complete = next.is_some();
    // The FROM rule: no word that ends the FROM while it lacks a column named before it. In an
    // expression (an ON condition) only a whole word: `order` may yet become `order_id`.
    if n.cover_from
        && !quoted
        && (matches!(slot, Slot::Keywords | Slot::AfterTable(_))
            || (slot == Slot::Expr && complete))
        && p.at_base()
        && closes_from(n, w, complete)
        && p.uncovered(n)
    {
        return false;
    }
    match slot {
        Slot::Start | Slot::Any | Slot::CteName | Slot::CteCol(_) => true,
        Slot::Table | Slot::TableOrQuery => {
            if quoted {
                return n
                    .tables
                    .iter()
                    .any(|t| t.schema.is_none() && fits(t.name.as_bytes(), exact, complete))
                    || n.schemas
                        .iter()
                        .any(|(s, _)| fits(s.as_bytes(), exact, complete))
                    || p.ctes.iter().any(|c| fits(&c.name, w, complete));
            }
            n.tables
                .iter()
                .any(|t| t.bare && t.schema.is_none() && fits(&t.lower, w, complete))
                || (n.dialect == Dialect::Postgres && n.bare_tables.fits(w, complete))
                || n.schemas.iter().any(|(_, l)| fits(l, w, complete))
                || p.ctes.iter().any(|c| fits(&c.name, w, complete))
                || [&b"lateral"[..], b"only"]
                    .iter()
                    .any(|k| fits(k, w, complete))
                || (slot == Slot::TableOrQuery
                    && [&b"select"[..], b"with", b"values"]
                        .iter()
                        .any(|k| fits(k, w, complete)))
        }
        Slot::TableIn(s) => n.tables.iter().any(|t| {
            t.schema == Some(s)
                && if quoted {
                    fits(t.name.as_bytes(), exact, complete)
                } else {
                    t.bare && fits(&t.lower, w, complete)
                }
        }),
        // Any alias: one that does not fit what the query already wrote with it is left for
        // the guard to name (refusing it only drove the model to glue words together).
        Slot::AfterTable(_) | Slot::Alias(_) => true,
        Slot::Keywords => n.keywords.fits(w, complete),
        Slot::Qualified(q) => match q {
            Qual::Cols(c) => p.cols_have(n, c, w, complete, quoted),
            Qual::AnyColumn => {
                let set = if quoted {
                    &n.all_cols
                } else {
                    &n.all_bare_cols
                };
                set.fits(w, complete) || n.row_ids.fits(w, complete)
            }
            Qual::Schema(s) => n
                .tables
                .iter()
                .any(|t| t.schema == Some(s) && fits(&t.lower, w, complete)),
            Qual::Any => true,
        },
        Slot::Expr => expr_valid(n, p, w, quoted, next),
    }
}

fn expr_valid(n: &Names, p: &Parse, w: &[u8], quoted: bool, next: Option<u8>) -> bool {
    let f = expr_fit(n, p, w, quoted, next);
    f.other || f.call || f.column
}

/// What a word in an expression may be.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Fit {
    /// A keyword, qualifier, alias, pseudo column, CTE column, string prefix, or anything
    /// (a scope of unknown columns).
    pub(super) other: bool,
    /// A function name before its `(` (or a space).
    pub(super) call: bool,
    /// A column of a relation in scope (any shown table's while a FROM is to come).
    pub(super) column: bool,
}

pub(super) fn expr_fit(n: &Names, p: &Parse, w: &[u8], quoted: bool, next: Option<u8>) -> Fit {
    let complete = next.is_some();
    let mut fit = Fit::default();
    if p.open_scope() {
        fit.other = true;
        return fit;
    }
    let missing = p.some_from_unseen();
    // An alias used before the FROM that names it (`SELECT T1.name FROM singer AS T1`): a word
    // short enough for an alias may go on, but only as a qualifier.
    if missing && alias_like(w) && (!complete || (next == Some(b'.') && !n.keywords.has(w))) {
        fit.other = true;
        return fit;
    }
    // A string's prefix: E'…', N'…', X'…', B'…', a MySQL charset (_utf8mb4'…').
    if next == Some(b'\'') && (w.len() <= 2 || w.starts_with(b"_")) {
        fit.other = true;
        return fit;
    }
    // Keywords (date parts only inside parentheses, `EXTRACT(YEAR FROM d)`; type names never:
    // they follow `AS` or `::`, where any word may stand), functions only before their `(`
    // (or a space: `COUNT (*)` is in Spider's gold SQL).
    // A keyword is never a qualifier (`THEN.Height`).
    let keyword = next != Some(b'.')
        && if p.in_parens() {
            n.paren_keywords.fits(w, complete)
        } else {
            n.plain_keywords.fits(w, complete)
        };
    let call = n.functions.fits(w, complete)
        && (!complete || next == Some(b'(') || next.is_some_and(|b| b.is_ascii_whitespace()));
    // Names of relations only before their `.`: those in scope, and any table shown while a
    // FROM is still to come.
    let qualifier = (!complete || next == Some(b'.'))
        && ((missing
            && ((if quoted {
                &n.all_tables
            } else {
                &n.bare_tables
            })
            .fits(w, complete)
                || n.schemas.iter().any(|(_, l)| fits(l, w, complete))))
            || p.ctes.iter().any(|c| fits(&c.name, w, complete))
            || p.levels
                .iter()
                .flat_map(|l| &l.rels)
                .any(|r| fits(&r.name, w, complete)));
    fit.call = call;
    fit.other = keyword
        || qualifier
        || n.pseudo.fits(w, complete)
        || p.ctes
            .iter()
            .any(|c| c.cols.iter().flatten().any(|col| fits(col, w, complete)))
        || p.aliases.iter().any(|a| fits(a, w, complete));
    fit.column = if missing {
        (if quoted {
            &n.all_cols
        } else {
            &n.all_bare_cols
        })
        .fits(w, complete)
    } else {
        p.levels
            .iter()
            .flat_map(|l| l.rels.iter().map(|r| r.cols).chain(l.prior.iter().copied()))
            .any(|c| p.cols_have(n, c, w, complete, quoted))
    };
    fit
}

/// Short enough to be a table alias written before its FROM (`T1`, `s`, `emp`, `t12`).
fn alias_like(w: &[u8]) -> bool {
    w.len() <= 4 || (w.len() <= 8 && w.last().is_some_and(u8::is_ascii_digit))
}

/// Whether the word or quoted name still being written may go on.
pub(super) fn partial_ok(n: &Names, lex: &Lex, p: &Parse) -> bool {
    match lex.mode {
        Mode::Word | Mode::Quoted(_) if !lex.free_word && !lex.word.long => {
            let w = lex.word.lower();
            valid(
                n,
                p,
                lex.slot,
                w.get(),
                lex.word.get(),
                matches!(lex.mode, Mode::Quoted(_)),
                None,
            )
        }
        _ => true,
    }
}
