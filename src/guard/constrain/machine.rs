//! The incremental lexer and state machine behind [`super::State`]: one byte at a time, it
//! tracks strings, comments and quoted names, query levels (subqueries, CTE bodies), their
//! clauses and FROM sources, and decides for each word which slot it fills and whether it
//! is valid there.
//!
//! [`Lex`] is the small per-byte part (copied for every token checked); [`Parse`] holds the
//! scopes and is cloned only when a token changes them. Never refuses while reading the SQL
//! written so far (only while checking a token) and never panics on model text.

use std::borrow::Cow;

use super::Names;
use crate::sql::Dialect;

/// What the bytes at hand are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    Word,
    Number,
    /// A quoted name, closed by the byte given.
    Quoted(u8),
    Str,
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
    /// The qualifier before the last `.`, for remembering uses of undefined aliases.
    qual: Buf,
    /// A quoted name just closed: what a `.` after it would qualify.
    dot_qual: Option<Qual>,
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
}

#[derive(Debug, Clone)]
struct Cte {
    name: Box<[u8]>,
    cols: Option<Vec<Box<[u8]>>>,
}

/// A qualified name written before its qualifier was defined: `T1.name` before `FROM … T1`.
#[derive(Debug, Clone)]
struct Use {
    level: usize,
    alias: Box<[u8]>,
    col: Box<[u8]>,
}

/// The scopes: cloned only when a token changes them.
#[derive(Debug, Clone)]
pub(super) struct Parse {
    frames: Vec<Frame>,
    levels: Vec<Level>,
    ctes: Vec<Cte>,
    aliases: Vec<Box<[u8]>>,
    uses: Vec<Use>,
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
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 || matches!(b, b'"' | b'`' | b'[')
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
            qual: Buf::new(),
            dot_qual: None,
        }
    }
}

impl Parse {
    pub(super) fn new() -> Parse {
        Parse {
            frames: vec![Frame::Level(Ctx::Expr)],
            levels: vec![Level {
                clause: Clause::Select,
                from_seen: false,
                rels: Vec::new(),
            }],
            ctes: Vec::new(),
            aliases: Vec::new(),
            uses: Vec::new(),
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
        self.frames.last().copied().unwrap_or(Frame::Level(Ctx::Expr))
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

    fn from_missing(&self) -> bool {
        self.levels.iter().any(|l| !l.from_seen)
    }

    fn cte(&self, w: &[u8]) -> Option<usize> {
        self.ctes.iter().rposition(|c| c.name.as_ref() == w)
    }

    /// Columns of some relation in scope are unknown: bare words are free.
    fn open_scope(&self) -> bool {
        self.levels.iter().flat_map(|l| &l.rels).any(|r| match r.cols {
            Cols::Unknown => true,
            Cols::Cte(c) => self.ctes.get(c).is_none_or(|c| c.cols.is_none()),
            Cols::Table(_) => false,
        })
    }

    fn cols_have(&self, n: &Names, cols: Cols, w: &[u8], complete: bool, quoted: bool) -> bool {
        match cols {
            Cols::Table(i) => n.tables.get(i).is_none_or(|t| {
                let set = if quoted { &t.cols } else { &t.bare_cols };
                set.fits(w, complete) || n.pseudo.fits(w, complete)
            }),
            Cols::Cte(c) => match self.ctes.get(c).and_then(|c| c.cols.as_ref()) {
                Some(cols) => {
                    cols.iter().any(|x| fits(x, w, complete)) || n.pseudo.fits(w, complete)
                }
                None => true,
            },
            Cols::Unknown => true,
        }
    }

    fn qualify(&self, n: &Names, w: &[u8]) -> Qual {
        let cur = self.levels.len() - 1;
        let find = |l: &Level| l.rels.iter().rev().find(|r| r.name.as_ref() == w).map(|r| r.cols);
        if let Some(c) = find(self.level()) {
            return Qual::Cols(c);
        }
        let outer = self.levels[..cur].iter().rev().find_map(find);
        if !self.level().from_seen {
            return match outer {
                Some(Cols::Table(_)) | None => Qual::AnyColumn,
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
        if self.from_missing() {
            Qual::AnyColumn
        } else {
            Qual::Any
        }
    }

    /// Whether `alias` fits every column it was used with before it was defined.
    fn alias_ok(&self, n: &Names, alias: &[u8], cols: Cols) -> bool {
        let cur = self.levels.len() - 1;
        self.uses
            .iter()
            .filter(|u| u.level == cur && u.alias.as_ref() == alias)
            .all(|u| self.cols_have(n, cols, &u.col, true, true))
    }
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
fn valid(n: &Names, p: &Parse, slot: Slot, w: &[u8], exact: &[u8], quoted: bool, next: Option<u8>) -> bool {
    let complete = next.is_some();
    match slot {
        Slot::Start | Slot::Any | Slot::CteName | Slot::CteCol(_) => true,
        Slot::Table | Slot::TableOrQuery => {
            if quoted {
                return n.tables.iter().any(|t| t.schema.is_none() && fits(t.name.as_bytes(), exact, complete))
                    || n.schemas.iter().any(|(s, _)| fits(s.as_bytes(), exact, complete))
                    || p.ctes.iter().any(|c| fits(&c.name, w, complete));
            }
            n.tables.iter().any(|t| t.bare && t.schema.is_none() && fits(&t.lower, w, complete))
                || (n.dialect == Dialect::Postgres && n.bare_tables.fits(w, complete))
                || n.schemas.iter().any(|(_, l)| fits(l, w, complete))
                || p.ctes.iter().any(|c| fits(&c.name, w, complete))
                || [&b"lateral"[..], b"only"].iter().any(|k| fits(k, w, complete))
                || (slot == Slot::TableOrQuery
                    && [&b"select"[..], b"with", b"values"].iter().any(|k| fits(k, w, complete)))
        }
        Slot::TableIn(s) => n.tables.iter().any(|t| {
            t.schema == Some(s)
                && if quoted {
                    fits(t.name.as_bytes(), exact, complete)
                } else {
                    t.bare && fits(&t.lower, w, complete)
                }
        }),
        Slot::AfterTable(c) | Slot::Alias(c) => {
            !complete
                || (matches!(slot, Slot::AfterTable(_)) && n.keywords.has(w))
                || p.alias_ok(n, w, c)
        }
        Slot::Keywords => n.keywords.fits(w, complete),
        Slot::Qualified(q) => match q {
            Qual::Cols(c) => p.cols_have(n, c, w, complete, quoted),
            Qual::AnyColumn => {
                let set = if quoted { &n.all_cols } else { &n.all_bare_cols };
                set.fits(w, complete) || n.pseudo.fits(w, complete)
            }
            Qual::Schema(s) => n.tables.iter().any(|t| t.schema == Some(s) && fits(&t.lower, w, complete)),
            Qual::Any => true,
        },
        Slot::Expr => expr_valid(n, p, w, quoted, next),
    }
}

fn expr_valid(n: &Names, p: &Parse, w: &[u8], quoted: bool, next: Option<u8>) -> bool {
    let complete = next.is_some();
    if p.open_scope() {
        return true;
    }
    let missing = p.from_missing();
    if missing && (!complete || next == Some(b'.')) {
        return true;
    }
    if n.words.fits(w, complete)
        || (if quoted { &n.all_tables } else { &n.bare_tables }).fits(w, complete)
        || n.schemas.iter().any(|(_, l)| fits(l, w, complete))
        || p.ctes.iter().any(|c| fits(&c.name, w, complete))
        || p.aliases.iter().any(|a| fits(a, w, complete))
        || p.levels.iter().flat_map(|l| &l.rels).any(|r| fits(&r.name, w, complete))
    {
        return true;
    }
    if missing {
        return (if quoted { &n.all_cols } else { &n.all_bare_cols }).fits(w, complete);
    }
    p.levels
        .iter()
        .flat_map(|l| &l.rels)
        .any(|r| p.cols_have(n, r.cols, w, complete, quoted))
}

/// Whether the word or quoted name still being written may go on.
pub(super) fn partial_ok(n: &Names, lex: &Lex, p: &Parse) -> bool {
    match lex.mode {
        Mode::Word | Mode::Quoted(_) if !lex.free_word && !lex.word.long => {
            let w = lex.word.lower();
            valid(n, p, lex.slot, w.get(), lex.word.get(), matches!(lex.mode, Mode::Quoted(_)), None)
        }
        _ => true,
    }
}

/// Either a token's remaining bytes can refuse nothing (`None`: accept now), or the scopes
/// to change.
fn change<'p>(parse: &'p mut Cow<'_, Parse>, b: u8, rest: &[u8], checking: bool) -> Option<&'p mut Parse> {
    if checking && !interesting(b) && !rest.iter().any(|&c| interesting(c)) {
        None
    } else {
        Some(parse.to_mut())
    }
}

/// Feeds one byte. While `checking` a token, an invalid word refuses it; while reading the SQL
/// so far, everything is taken as written.
pub(super) fn step(n: &Names, lex: &mut Lex, parse: &mut Cow<'_, Parse>, b: u8, rest: &[u8], checking: bool) -> Step {
    let r = step_inner(n, lex, parse, b, rest, checking);
    lex.prev_byte = b;
    r
}

fn step_inner(n: &Names, lex: &mut Lex, parse: &mut Cow<'_, Parse>, b: u8, rest: &[u8], checking: bool) -> Step {
    match lex.mode {
        Mode::Free => return Step::Accept,
        Mode::Str => {
            if b == b'\'' {
                lex.mode = Mode::Normal;
                lex.prev = Prev::Other;
            }
            return Step::Go;
        }
        Mode::Line => {
            if b == b'\n' {
                lex.mode = Mode::Normal;
            }
            return Step::Go;
        }
        Mode::Block => {
            if b == b'/' && lex.prev_byte == b'*' {
                lex.mode = Mode::Normal;
                lex.prev = Prev::Other;
            }
            return Step::Go;
        }
        Mode::Quoted(close) => {
            if b != close {
                lex.word.push(b);
                return Step::Go;
            }
            if lex.word.n == 0 && close == b'`' {
                lex.mode = Mode::Free;
                return Step::Accept;
            }
            lex.mode = Mode::Normal;
            let free = lex.free_word || lex.word.long;
            let w = lex.word.lower();
            if checking && !free && !valid(n, parse, lex.slot, w.get(), lex.word.get(), true, Some(b' ')) {
                return Step::Refuse;
            }
            let word = lex.word;
            let r = apply_word(n, lex, parse, &w, &word, None, b, rest, checking);
            lex.dot_qual = Some(parse.qualify(n, w.get()));
            return r;
        }
        Mode::Word => {
            if word_byte(b) {
                lex.word.push(b);
                return Step::Go;
            }
            lex.mode = Mode::Normal;
            let w = lex.word.lower();
            let free = lex.free_word || lex.word.long;
            if checking && !free && !valid(n, parse, lex.slot, w.get(), lex.word.get(), false, Some(b)) {
                return Step::Refuse;
            }
            let word = lex.word;
            if !free {
                let r = apply_word(n, lex, parse, &w, &word, Some(b), b, rest, checking);
                if r != Step::Go {
                    return r;
                }
            } else {
                lex.prev = Prev::Word;
            }
        }
        Mode::Number => {
            if word_byte(b) || b == b'.' {
                return Step::Go;
            }
            lex.mode = Mode::Normal;
            lex.prev = Prev::Other;
        }
        Mode::Normal => {}
    }
    normal(n, lex, parse, b, rest, checking)
}

fn start_word(lex: &mut Lex, p: &Parse, mode: Mode, free: bool) {
    lex.slot = p.slot(lex.prev);
    lex.mode = mode;
    lex.word.clear();
    lex.free_word = free;
    lex.dot_qual = None;
}

fn normal(n: &Names, lex: &mut Lex, parse: &mut Cow<'_, Parse>, b: u8, rest: &[u8], checking: bool) -> Step {
    let after_quote = lex.dot_qual.take();
    match b {
        b' ' | b'\n' | b'\t' | b'\r' | 0x0c => {}
        b'0'..=b'9' => lex.mode = Mode::Number,
        b'$' => {
            start_word(lex, parse, Mode::Word, true);
            lex.word.push(b);
        }
        _ if word_byte(b) => {
            let free = matches!(lex.prev_byte, b'@' | b':') && lex.prev != Prev::Cast;
            start_word(lex, parse, Mode::Word, free);
            lex.word.push(b);
        }
        b'\'' => lex.mode = Mode::Str,
        b'"' => {
            let slot = parse.slot(lex.prev);
            let table = matches!(slot, Slot::Table | Slot::TableOrQuery | Slot::TableIn(_));
            let free = n.dialect != Dialect::Postgres && !table;
            start_word(lex, parse, Mode::Quoted(b'"'), free);
        }
        b'`' => {
            let slot = parse.slot(lex.prev);
            let table = matches!(slot, Slot::Table | Slot::TableOrQuery | Slot::TableIn(_));
            if n.dialect == Dialect::MySql || (n.dialect == Dialect::Sqlite && table) {
                start_word(lex, parse, Mode::Quoted(b'`'), false);
            } else {
                lex.mode = Mode::Free;
                return Step::Accept;
            }
        }
        b'[' if n.dialect == Dialect::Sqlite => start_word(lex, parse, Mode::Quoted(b']'), false),
        b'-' if lex.prev_byte == b'-' => lex.mode = Mode::Line,
        b'*' if lex.prev_byte == b'/' => lex.mode = Mode::Block,
        b'.' => {
            if let Some(q) = after_quote {
                lex.prev = Prev::Dot(q);
            } else if !matches!(lex.prev, Prev::Dot(_) | Prev::SchemaDot(_)) {
                lex.prev = Prev::Other;
            }
        }
        b':' => {
            lex.prev = if lex.prev_byte == b':' {
                Prev::Cast
            } else {
                Prev::Other
            }
        }
        b',' => lex.prev = Prev::Comma,
        b';' => {
            if parse.frames.len() <= 1 {
                lex.mode = Mode::Free;
                return Step::Accept;
            }
            lex.prev = Prev::Other;
        }
        b'(' => {
            let slot = parse.slot(lex.prev);
            let prev = lex.prev;
            lex.prev = Prev::Other;
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            if let Frame::Pending(ctx) = p.top() {
                p.frames.pop();
                p.frames.push(if ctx == Ctx::Table { Frame::Join } else { Frame::Group });
            }
            let frame = match (slot, prev) {
                (_, Prev::CteNamed(c)) => Frame::AnyList(Some(c)),
                (Slot::Table, _) => Frame::Pending(Ctx::Table),
                (Slot::Keywords, Prev::Alias) => Frame::AnyList(None),
                _ => Frame::Pending(Ctx::Expr),
            };
            p.frames.push(frame);
        }
        b')' => {
            if parse.frames.len() <= 1 {
                lex.prev = Prev::Other;
                return Step::Go;
            }
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            lex.prev = Prev::Other;
            match p.frames.pop() {
                Some(Frame::Level(ctx)) => {
                    let gone = p.levels.len() - 1;
                    p.levels.pop();
                    p.uses.retain(|u| u.level < gone);
                    if ctx == Ctx::Table {
                        p.level_mut().rels.push(Rel {
                            name: Box::default(),
                            cols: Cols::Unknown,
                        });
                        lex.prev = Prev::Table(Cols::Unknown);
                    }
                }
                Some(Frame::Join) => lex.prev = Prev::Table(Cols::Unknown),
                _ => {}
            }
        }
        _ => lex.prev = Prev::Other,
    }
    Step::Go
}

/// Takes a complete word into the state. `next` is the byte after it (`None` after a quoted
/// name, whose next byte is not known yet).
#[allow(clippy::too_many_arguments)]
fn apply_word(
    n: &Names,
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    w: &Buf,
    exact: &Buf,
    next: Option<u8>,
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Step {
    let w = w.get();
    let dot = next == Some(b'.');
    let mut slot = lex.slot;
    let prev = lex.prev;
    lex.prev = Prev::Word;
    let is = |k: &[&str]| k.iter().any(|k| k.as_bytes() == w);
    if slot == Slot::Start {
        if !is(&["select", "with", "values"]) {
            lex.mode = Mode::Free;
            return Step::Accept;
        }
        slot = Slot::Expr;
    }
    // `(` then its first word: a subquery, or a group.
    if let Frame::Pending(ctx) = parse.top() {
        let Some(p) = change(parse, b, rest, checking) else {
            return Step::Accept;
        };
        p.frames.pop();
        if is(&["select", "with", "values"]) {
            p.frames.push(Frame::Level(ctx));
            p.levels.push(Level {
                clause: Clause::Select,
                from_seen: false,
                rels: Vec::new(),
            });
            return keyword(n, lex, parse, w, b, rest, checking, prev);
        }
        p.frames.push(if ctx == Ctx::Table { Frame::Join } else { Frame::Group });
        if slot == Slot::TableOrQuery {
            slot = Slot::Table;
        }
    }
    match slot {
        Slot::Start | Slot::TableOrQuery => Step::Go,
        Slot::Table | Slot::TableIn(_) => {
            if dot && slot == Slot::Table {
                if let Some(s) = n.schemas.iter().position(|(_, l)| l.as_ref() == w) {
                    lex.prev = Prev::SchemaDot(s);
                    return Step::Go;
                }
            }
            if is(&["lateral", "only"]) {
                lex.prev = prev;
                return Step::Go;
            }
            let cols = match (slot, parse.cte(w)) {
                (Slot::Table, Some(c)) => Cols::Cte(c),
                _ => n
                    .tables
                    .iter()
                    .position(|t| {
                        let name_ok = if next.is_none() {
                            t.name.as_bytes() == exact.get()
                        } else {
                            t.lower.as_ref() == w
                        };
                        name_ok
                            && match slot {
                                Slot::TableIn(s) => t.schema == Some(s),
                                _ => t.schema.is_none() || n.dialect == Dialect::Postgres,
                            }
                    })
                    .map_or(Cols::Unknown, Cols::Table),
            };
            lex.prev = Prev::Table(cols);
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            p.level_mut().rels.push(Rel { name: w.into(), cols });
            Step::Go
        }
        Slot::AfterTable(c) if !n.keywords.has(w) => alias(lex, parse, w, c, b, rest, checking),
        Slot::Alias(c) => alias(lex, parse, w, c, b, rest, checking),
        Slot::Qualified(q) => {
            if dot {
                lex.qual = *exact;
                lex.qual = lex.qual.lower();
                lex.prev = Prev::Dot(match q {
                    Qual::Schema(s) => n
                        .tables
                        .iter()
                        .position(|t| t.schema == Some(s) && t.lower.as_ref() == w)
                        .map_or(Qual::Any, |i| Qual::Cols(Cols::Table(i))),
                    _ => Qual::Any,
                });
                return Step::Go;
            }
            if q == Qual::AnyColumn && !lex.qual.long {
                let Some(p) = change(parse, b, rest, checking) else {
                    return Step::Accept;
                };
                let level = p.levels.len() - 1;
                p.uses.push(Use {
                    level,
                    alias: lex.qual.get().into(),
                    col: w.into(),
                });
            }
            Step::Go
        }
        Slot::Any => {
            if prev == Prev::As {
                let Some(p) = change(parse, b, rest, checking) else {
                    return Step::Accept;
                };
                p.aliases.push(w.into());
            }
            Step::Go
        }
        Slot::CteName => {
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            p.ctes.push(Cte {
                name: w.into(),
                cols: None,
            });
            lex.prev = Prev::CteNamed(p.ctes.len() - 1);
            Step::Go
        }
        Slot::CteCol(c) => {
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            if let Some(cte) = p.ctes.get_mut(c) {
                cte.cols.get_or_insert_with(Vec::new).push(w.into());
            }
            Step::Go
        }
        Slot::Expr if dot => {
            lex.qual = exact.lower();
            lex.prev = Prev::Dot(parse.qualify(n, w));
            Step::Go
        }
        Slot::Expr | Slot::Keywords | Slot::AfterTable(_) => keyword(n, lex, parse, w, b, rest, checking, prev),
    }
}

fn alias(lex: &mut Lex, parse: &mut Cow<'_, Parse>, w: &[u8], cols: Cols, b: u8, rest: &[u8], checking: bool) -> Step {
    lex.prev = Prev::Alias;
    let Some(p) = change(parse, b, rest, checking) else {
        return Step::Accept;
    };
    let level = p.levels.len() - 1;
    if let Some(r) = p.level_mut().rels.last_mut() {
        r.name = w.into();
    }
    p.uses.retain(|u| !(u.level == level && u.alias.as_ref() == w));
    let _ = cols;
    Step::Go
}

/// A word outside name slots: keywords that change the clause or scope.
#[allow(clippy::too_many_arguments)]
fn keyword(
    _n: &Names,
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    w: &[u8],
    b: u8,
    rest: &[u8],
    checking: bool,
    prev: Prev,
) -> Step {
    let base = parse.at_base();
    let join_group = parse.top() == Frame::Join;
    let clause = parse.level().clause;
    let set = |parse: &mut Cow<'_, Parse>, c: Clause, reset: bool| -> bool {
        match change(parse, b, rest, checking) {
            Some(p) => {
                let l = p.level_mut();
                if reset {
                    l.rels.clear();
                    l.from_seen = false;
                }
                if c == Clause::From {
                    l.from_seen = true;
                }
                l.clause = c;
                true
            }
            None => false,
        }
    };
    let go = |ok: bool| if ok { Step::Go } else { Step::Accept };
    if !base {
        if w == b"as" {
            lex.prev = Prev::As;
        }
        return Step::Go;
    }
    match w {
        b"select" if !join_group => {
            lex.prev = Prev::Other;
            go(set(parse, Clause::Select, true))
        }
        b"from" if !join_group => {
            lex.prev = Prev::From;
            go(set(parse, Clause::From, false))
        }
        b"join" => {
            lex.prev = Prev::Join;
            go(clause == Clause::From || set(parse, Clause::From, false))
        }
        b"with" => {
            lex.prev = Prev::With;
            go(set(parse, Clause::With, false))
        }
        b"recursive" if prev == Prev::With => {
            lex.prev = Prev::With;
            Step::Go
        }
        b"as" => {
            lex.prev = match (clause, prev) {
                (Clause::From, Prev::Table(c)) => Prev::AsFrom(c),
                (Clause::With, _) => Prev::Other,
                _ => Prev::As,
            };
            Step::Go
        }
        b"on" | b"using" | b"where" | b"group" | b"having" | b"order" | b"limit" | b"offset"
        | b"union" | b"intersect" | b"except" | b"window" => {
            lex.prev = Prev::Other;
            if clause == Clause::Other {
                Step::Go
            } else {
                go(set(parse, Clause::Other, false))
            }
        }
        _ => {
            lex.prev = if clause == Clause::From { Prev::Other } else { Prev::Word };
            Step::Go
        }
    }
}
