//! One byte into the state: the lexer's modes (words, numbers, quoted names, strings,
//! comments) and what a finished word or punctuation does to the scopes: clauses, query
//! levels, FROM sources, aliases, CTEs. While checking a token it refuses at the first
//! invalid word and accepts early once the token's remaining bytes cannot refuse anything;
//! it never clones the scopes unless the token changes them.

use std::borrow::Cow;

use super::*;
use crate::guard::constrain::Names;
use crate::sql::Dialect;

/// Either a token's remaining bytes can refuse nothing (`None`: accept now), or the scopes
/// to change.
fn change<'p>(
    parse: &'p mut Cow<'_, Parse>,
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Option<&'p mut Parse> {
    if checking && !interesting(b) && !rest.iter().any(|&c| interesting(c)) {
        None
    } else {
        Some(parse.to_mut())
    }
}

/// The answer ends here (`;` at the top level, the closing fence): nothing after it is
/// constrained, unless the FROM rule still wants a table ([`Parse::uncovered`]).
fn end_answer(n: &Names, lex: &mut Lex, parse: &Parse, checking: bool) -> Step {
    if checking && parse.uncovered(n) {
        return Step::Refuse;
    }
    lex.mode = Mode::Free;
    Step::Accept
}

/// Feeds one byte. While `checking` a token, an invalid word refuses it; while reading the SQL
/// so far, everything is taken as written.
pub(crate) fn step(
    n: &Names,
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Step {
    let r = step_inner(n, lex, parse, b, rest, checking);
    lex.prev_byte = b;
    r
}

fn step_inner(
    n: &Names,
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Step {
    match lex.mode {
        Mode::Free => return Step::Accept,
        Mode::Str => {
            if b == b'\'' {
                lex.mode = Mode::Normal;
                lex.prev = Prev::Other;
            } else if b == b'\\' && n.dialect == Dialect::MySql {
                lex.mode = Mode::StrEscape;
            }
            return Step::Go;
        }
        Mode::StrEscape => {
            lex.mode = Mode::Str;
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
                // MySQL reads the closing fence as an empty quoted name: the answer ends.
                return end_answer(n, lex, parse, checking);
            }
            lex.mode = Mode::Normal;
            let free = lex.free_word || lex.word.long;
            let w = lex.word.lower();
            if checking
                && !free
                && !valid(
                    n,
                    parse,
                    lex.slot,
                    w.get(),
                    lex.word.get(),
                    true,
                    Some(b' '),
                )
            {
                return Step::Refuse;
            }
            if free {
                // A string as SQLite and MySQL read it, or a name too long to check.
                lex.prev = Prev::Word;
                return Step::Go;
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
            if checking
                && !free
                && !valid(n, parse, lex.slot, w.get(), lex.word.get(), false, Some(b))
            {
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

fn normal(
    n: &Names,
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Step {
    let after_quote = lex.dot_qual.take();
    // After a function name and one space, only its `(` (not a run of spaces).
    let one_space = b.is_ascii_whitespace() && !lex.prev_byte.is_ascii_whitespace();
    if lex.want_paren && !one_space {
        lex.want_paren = false;
        if b != b'(' && checking {
            return Step::Refuse;
        }
    }
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
            // SQLite reads backticks as MySQL does; outside a table slot or `X.` one is taken
            // for the closing fence (which cannot come right after `X.`).
            let after_dot = matches!(lex.prev, Prev::Dot(_));
            if n.dialect == Dialect::MySql || (n.dialect == Dialect::Sqlite && (table || after_dot))
            {
                start_word(lex, parse, Mode::Quoted(b'`'), false);
            } else {
                // The closing fence ends the answer.
                return end_answer(n, lex, parse, checking);
            }
        }
        b'[' if n.dialect == Dialect::Sqlite => start_word(lex, parse, Mode::Quoted(b']'), false),
        b'-' if lex.prev_byte == b'-' => lex.mode = Mode::Line,
        b'#' if n.dialect == Dialect::MySql => lex.mode = Mode::Line,
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
                return end_answer(n, lex, parse, checking);
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
                p.frames.push(if ctx == Ctx::Table {
                    Frame::Join
                } else {
                    Frame::Group
                });
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
            if checking && matches!(parse.top(), Frame::Level(_)) && parse.uncovered(n) {
                return Step::Refuse;
            }
            let Some(p) = change(parse, b, rest, checking) else {
                return Step::Accept;
            };
            lex.prev = Prev::Other;
            match p.frames.pop() {
                Some(Frame::Level(ctx)) => {
                    p.levels.pop();
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
            p.levels.push(Level::new());
            return keyword(n, lex, parse, w, b, rest, checking, prev);
        }
        p.frames.push(if ctx == Ctx::Table {
            Frame::Join
        } else {
            Frame::Group
        });
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
            p.level_mut().rels.push(Rel {
                name: w.into(),
                cols,
            });
            Step::Go
        }
        Slot::AfterTable(_) if !n.keywords.has(w) => alias(lex, parse, w, b, rest, checking),
        Slot::Alias(_) => alias(lex, parse, w, b, rest, checking),
        Slot::Qualified(q) => {
            if dot {
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
        Slot::CteName if w == b"recursive" && prev == Prev::With => {
            lex.prev = Prev::With;
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
            lex.prev = Prev::Dot(parse.qualify(n, w));
            Step::Go
        }
        Slot::Expr | Slot::Keywords | Slot::AfterTable(_) => {
            lex.want_paren = false;
            let l = parse.level();
            // Columns named before the FROM, for the FROM rule; a function name and a space
            // after the FROM (before it, the word may yet be a derived table's column).
            let early = n.cover_from && l.clause == Clause::Select && !l.from_seen;
            let call = next.is_some_and(|c| c.is_ascii_whitespace())
                && !parse.some_from_unseen()
                && n.functions.has(w)
                && !n.keywords.has(w);
            if slot == Slot::Expr && (early || call) {
                // `next` is `None` after a quoted name.
                let f = expr_fit(n, parse, w, next.is_none(), Some(next.unwrap_or(b' ')));
                if early
                    && f.column
                    && !f.other
                    && !f.call
                    && !parse.level().early.iter().any(|e| e.as_ref() == w)
                {
                    let Some(p) = change(parse, b, rest, checking) else {
                        return Step::Accept;
                    };
                    p.level_mut().early.push(w.into());
                }
                lex.want_paren = call && !f.other && !f.column;
            }
            keyword(n, lex, parse, w, b, rest, checking, prev)
        }
    }
}

fn alias(
    lex: &mut Lex,
    parse: &mut Cow<'_, Parse>,
    w: &[u8],
    b: u8,
    rest: &[u8],
    checking: bool,
) -> Step {
    lex.prev = Prev::Alias;
    let Some(p) = change(parse, b, rest, checking) else {
        return Step::Accept;
    };
    if let Some(r) = p.level_mut().rels.last_mut() {
        r.name = w.into();
    }
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
                    let old: Vec<Cols> = l.rels.drain(..).map(|r| r.cols).collect();
                    l.prior.extend(old);
                    l.from_seen = false;
                    l.early.clear();
                    l.closed = false;
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
        | b"union" | b"intersect" | b"except" | b"window" | b"fetch" => {
            lex.prev = Prev::Other;
            // The FROM ends here ([`Parse::uncovered`] was asked before the word was taken).
            let closes = !matches!(w, b"on" | b"using");
            if closes && parse.level().from_seen && !parse.level().closed {
                let Some(p) = change(parse, b, rest, checking) else {
                    return Step::Accept;
                };
                p.level_mut().closed = true;
            }
            if clause == Clause::Other {
                Step::Go
            } else {
                go(set(parse, Clause::Other, false))
            }
        }
        _ => {
            lex.prev = if clause == Clause::From {
                Prev::Other
            } else {
                Prev::Word
            };
            Step::Go
        }
    }
}
