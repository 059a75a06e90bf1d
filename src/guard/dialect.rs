//! Dialect repair: rewrites what a small model borrowed from another SQL dialect into what the
//! target runs, before the guard judges it. Owns two exact, local repairs: date-part and
//! current-date calls of another dialect (`EXTRACT`/`YEAR()`/`date_part` on SQLite, `strftime`
//! on PostgreSQL or MySQL…), rewritten on the parsed statement; and schema names that need
//! quotes (`Order Details`) written bare, quoted in the text. A call the dialect's allow-list
//! knows is the database's own and stays, as does anything without an exact equivalent. Never
//! opens a database, runs a model, or decides whether SQL may run (the guard's
//! [`check`](super::check) does).

use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr as Arg, Ident};
use sqlparser::ast::{FunctionArguments as Args, ObjectName, Value};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::guard::{functions, MAX_SQL_BYTES};
use crate::schema::{ident, Schema};
use crate::sql::Dialect;

/// The longest text whose dates are rewritten; longer text only has its names quoted.
const AST_LIMIT: usize = 64 << 10;
/// Stack for parsing, rewriting and printing (all recursive) a statement of [`AST_LIMIT`].
const STACK: usize = 256 << 20;
/// Stands for a call's date argument in the templates below.
const X: &str = "\u{0}";

/// `sql` with what the dialect cannot run rewritten into what it can, and one short note per
/// change (e.g. "EXTRACT(MONTH FROM x) → CAST(strftime('%m', x) AS INTEGER) for SQLite");
/// None when nothing changed.
pub fn fix(sql: &str, dialect: Dialect, schema: &Schema) -> Option<(String, Vec<String>)> {
    (sql.len() <= MAX_SQL_BYTES && !sql.contains(X)).then_some(())?;
    let mut notes = Vec::new();
    let quoted = quote_names(sql, dialect, schema, &mut notes);
    let text = quoted.as_deref().unwrap_or(sql);
    let dates = (text.len() <= AST_LIMIT).then(|| {
        std::thread::scope(|s| {
            super::quiet_parser_panics();
            let b = std::thread::Builder::new()
                .name(format!("{}-dates", super::THREAD))
                .stack_size(STACK);
            let t = b.spawn_scoped(s, || rewrite_dates(text, dialect)).ok()?;
            t.join().ok()?
        })
    });
    match dates.flatten() {
        Some((sql, more)) => Some((sql, [notes, more].concat())),
        None => Some((quoted?, notes)),
    }
}

/// The statement with its foreign date calls rewritten, and a note per kind of change.
fn rewrite_dates(text: &str, dialect: Dialect) -> Option<(String, Vec<String>)> {
    let pd: Box<dyn SqlDialect> = match dialect {
        Dialect::Sqlite => Box::new(SQLiteDialect {}),
        Dialect::Postgres => Box::new(PostgreSqlDialect {}),
        Dialect::MySql => Box::new(MySqlDialect {}),
    };
    let mut statements = Parser::parse_sql(pd.as_ref(), text).ok()?;
    let [statement] = statements.as_mut_slice() else {
        return None;
    };
    let (mut notes, mut changed) = (Vec::<String>::new(), false);
    let _ = visit_expressions_mut(statement, |e| {
        if let Some((from, to, x)) = mapping(e, dialect) {
            // The whole template must parse as one expression, or `e` stays as it is.
            let new = Parser::new(pd.as_ref())
                .try_with_sql(&to.replace(X, &x.to_string()))
                .and_then(|mut p| Ok((p.parse_expr()?, p.peek_token().token == Token::EOF)));
            if let Ok((new, true)) = new {
                (*e, changed) = (new, true);
                let note = format!("{from} → {} for {}", to.replace(X, "x"), dialect.name());
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed.then(|| (statement.to_string(), notes))
}

/// What `e` becomes in `dialect`: the call as a note shows it, the replacement's template
/// (`X` where the date goes) and the date argument; None when `e` stays.
fn mapping(e: &Expr, dialect: Dialect) -> Option<(String, String, &Expr)> {
    let known =
        |n: &str| functions::current().allows(dialect, &ObjectName::from(vec![Ident::new(n)]));
    if let Expr::Extract { field, expr, .. } = e {
        let field = field.to_string().to_ascii_uppercase();
        let to = part(part_name(&field.to_ascii_lowercase())?, dialect)?;
        return (!known("extract")).then(|| (format!("EXTRACT({field} FROM x)"), to, &**expr));
    }
    let Expr::Function(f) = e else { return None };
    let ([name], Args::None, Args::List(l)) = (f.name.0.as_slice(), &f.parameters, &f.args) else {
        return None;
    };
    let name = name.as_ident()?.value.to_ascii_lowercase();
    let plain = f.filter.is_none() && f.over.is_none() && f.null_treatment.is_none();
    let plain = plain && f.within_group.is_empty() && l.duplicate_treatment.is_none();
    if known(&name) || !plain || !l.clauses.is_empty() {
        return None;
    }
    let args: Vec<&Expr> = (l.args.iter())
        .map(|a| match a {
            FunctionArg::Unnamed(Arg::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (upper, pg) = (name.to_uppercase(), dialect == Dialect::Postgres);
    let call = format!("{upper}(x)");
    let (from, to, x): (String, String, &Expr) = match (name.as_str(), args.as_slice()) {
        (_, []) => {
            let table = match dialect {
                Dialect::Sqlite => "now=datetime('now') curdate=date('now') curtime=time('now')",
                Dialect::Postgres => "curdate=CURRENT_DATE",
                Dialect::MySql => "",
            };
            (format!("{upper}()"), lookup(table, &name)?.into(), e)
        }
        // MySQL counts Sunday as 1, the others' day of week as 0.
        ("dayofweek", [x]) => (call, format!("({} + 1)", part("dow", dialect)?), x),
        (_, [x]) if dialect != Dialect::MySql => {
            let table = "year=year month=month day=day dayofmonth=day hour=hour minute=minute \
                second=second quarter=quarter dayofyear=doy";
            (call, part(lookup(table, &name)?, dialect)?, x)
        }
        ("date_part" | "date_trunc", [p, x]) => {
            let p = literal(p, dialect)?;
            let unit = part_name(&p.to_ascii_lowercase())?;
            let to = match (name.as_str(), unit) {
                ("date_part", _) => part(unit, dialect)?,
                _ if dialect != Dialect::Sqlite => return None,
                (_, "year" | "month" | "day") => format!("datetime({X}, 'start of {unit}')"),
                (_, "hour") => format!("strftime('%Y-%m-%d %H:00:00', {X})"),
                (_, "minute") => format!("strftime('%Y-%m-%d %H:%M:00', {X})"),
                // Back six days, then on to the next Monday (or stay): the week's Monday.
                (_, "week") => format!("datetime({X}, '-6 days', 'weekday 1', 'start of day')"),
                _ => return None,
            };
            (format!("{name}('{p}', x)"), to, x)
        }
        // strftime is SQLite's own and DATE_FORMAT MySQL's: `known` kept those.
        (f @ ("strftime" | "date_format"), [a, b]) => {
            let strf = f == "strftime";
            let (fmt, x) = if strf { (a, b) } else { (b, a) };
            let old = literal(fmt, dialect)?;
            let table = [[MY_STRF, MY_PG], [STRF_MY, STRF_PG]][strf as usize][pg as usize];
            let (old, new) = (sql_str(&old), sql_str(&translate(&old, table, pg)?));
            let to = match dialect {
                Dialect::Postgres => format!("to_char({X}, {new})"),
                Dialect::MySql => format!("DATE_FORMAT({X}, {new})"),
                Dialect::Sqlite => format!("strftime({new}, {X})"),
            };
            match strf {
                true => (format!("strftime({old}, x)"), to, x),
                false => (format!("DATE_FORMAT(x, {old})"), to, x),
            }
        }
        _ => return None,
    };
    Some((from, to, x))
}

/// SQLite strftime specifiers as MySQL DATE_FORMAT ones and as PostgreSQL to_char patterns,
/// and MySQL's as SQLite's and PostgreSQL's.
const STRF_MY: &str = "Y=%Y m=%m d=%d H=%H M=%i S=%s j=%j w=%w %=%%";
const STRF_PG: &str = "Y=YYYY m=MM d=DD H=HH24 M=MI S=SS j=DDD";
const MY_STRF: &str = "Y=%Y m=%m d=%d H=%H i=%M s=%S S=%S j=%j w=%w %=%%";
const MY_PG: &str = "Y=YYYY m=MM d=DD H=HH24 i=MI s=SS S=SS j=DDD";

/// The canonical name of a date part as EXTRACT or date_part spell it.
fn part_name(p: &str) -> Option<&'static str> {
    let p = p.trim_matches(|c| c == '\'' || c == '"');
    let p = p.strip_suffix('s').filter(|_| p.len() > 3).unwrap_or(p);
    let units = "year month day hour minute second quarter week dow doy";
    units.split(' ').find(|k| *k == p)
}

/// The number `p` of a date in `dialect` (PostgreSQL's meaning: `week` is the ISO week, `dow`
/// counts from Sunday = 0), `X` standing for the date.
fn part(p: &str, dialect: Dialect) -> Option<String> {
    let specs = "year=%Y month=%m day=%d hour=%H minute=%M second=%S week=%V dow=%w doy=%j";
    Some(match (dialect, p) {
        (Dialect::Sqlite, "quarter") => format!("((CAST(strftime('%m', {X}) AS INTEGER) + 2) / 3)"),
        (Dialect::Sqlite, _) => format!("CAST(strftime('{}', {X}) AS INTEGER)", lookup(specs, p)?),
        (Dialect::Postgres, _) => format!("EXTRACT({} FROM {X})", p.to_uppercase()),
        (Dialect::MySql, "week") => format!("WEEK({X}, 3)"),
        (Dialect::MySql, "dow") => format!("(DAYOFWEEK({X}) - 1)"),
        (Dialect::MySql, "doy") => format!("DAYOFYEAR({X})"),
        (Dialect::MySql, _) => format!("{}({X})", p.to_uppercase()),
    })
}

/// The value of `key` in a table written `key=value key=value…`.
fn lookup<'t>(table: &'t str, key: &str) -> Option<&'t str> {
    table
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The text of a string literal (in MySQL a double-quoted one too).
fn literal(e: &Expr, dialect: Dialect) -> Option<String> {
    let Expr::Value(v) = e else { return None };
    match &v.value {
        Value::SingleQuotedString(s) => Some(s.clone()),
        Value::DoubleQuotedString(s) if dialect == Dialect::MySql => Some(s.clone()),
        _ => None,
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `%` format `f` with each specifier replaced by its image in `table`, when all have one
/// and one at least is there. In a to_char pattern (`pg`) the text between specifiers could
/// read as a pattern itself: only ` -:/.,` may stand there.
fn translate(f: &str, table: &str, pg: bool) -> Option<String> {
    let (mut out, mut chars) = (String::new(), f.chars());
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(lookup(table, chars.next()?.encode_utf8(&mut [0; 4]))?),
            c if !pg || " -:/.,".contains(c) => out.push(c),
            _ => return None,
        }
    }
    f.contains('%').then_some(out)
}

/// A schema name a bare word cannot spell because of a space or punctuation. Names holding
/// characters that also build expressions or qualified names (`(`, `,`, `.`, `*`, quotes) are
/// left out: written bare, they more likely mean that expression than the name.
fn needs_quotes(name: &str, dialect: Dialect) -> bool {
    !name.is_empty()
        && name == name.trim()
        && ident(name, dialect) != name
        && name.chars().any(|c| !(c.is_alphanumeric() || c == '_'))
        && !name.chars().any(|c| "(),.*;'\"`[]\\$".contains(c))
}

/// `sql` with each bare occurrence of a schema name that needs quotes quoted, longest names
/// first; strings, comments and quoted names are skipped. None when nothing was quoted.
fn quote_names(sql: &str, d: Dialect, schema: &Schema, notes: &mut Vec<String>) -> Option<String> {
    let mut names: Vec<&str> = (schema.tables.iter())
        .flat_map(|t| std::iter::once(&t.name).chain(t.columns.iter().map(|c| &c.name)))
        .map(String::as_str)
        .filter(|n| needs_quotes(n, d))
        .collect();
    names.sort_by_key(|n| (std::cmp::Reverse(n.len()), n.to_lowercase()));
    names.dedup_by(|a, b| a.to_lowercase() == b.to_lowercase());
    let (b, my) = (sql.as_bytes(), d == Dialect::MySql);
    let (mut out, mut copied, mut i, mut seen) = (String::new(), 0, 0, Vec::new());
    while i < b.len() && !names.is_empty() {
        let next = b.get(i + 1).copied();
        i = match b[i] {
            q @ (b'\'' | b'"' | b'`') => skip_quoted(b, i, q, my && q != b'`'),
            b'[' if d == Dialect::Sqlite => find(sql, i + 1, "]"),
            b'-' if next == Some(b'-') => find(sql, i, "\n"),
            b'#' if my => find(sql, i, "\n"),
            b'/' if next == Some(b'*') => find(sql, i + 2, "*/"),
            _ => {
                let before = sql[..i].chars().next_back();
                let word =
                    |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "_$".contains(c));
                let bounded = |edge, own| !(word(edge) && word(own));
                let hit = names.iter().find_map(|n| {
                    let len = match_at(sql, i, n)?;
                    let after = sql[i + len..].chars().next();
                    let ok = bounded(before, n.chars().next()) && bounded(after, n.chars().last());
                    ok.then_some((*n, len))
                });
                let Some((n, len)) = hit else {
                    i += sql[i..].chars().next().map_or(1, char::len_utf8);
                    continue;
                };
                let (q, shown) = (ident(n, d), &sql[i..i + len]);
                if !seen.contains(&n) {
                    seen.push(n);
                    notes.push(format!("{shown} → {q}: a name that needs quotes"));
                }
                out.push_str(&sql[copied..i]);
                out.push_str(&q);
                copied = i + len;
                copied
            }
        };
    }
    (!seen.is_empty()).then_some(())?;
    out.push_str(&sql[copied..]);
    Some(out)
}

/// Just past the quoted run `q` opens at `i` (a doubled `q` stays inside, as does an escaped
/// one where `backslash`: MySQL strings are written so).
fn skip_quoted(b: &[u8], i: usize, q: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if backslash => j += 2,
            c if c == q && b.get(j + 1) == Some(&q) => j += 2,
            c if c == q => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// Just past the first `end` at or after `from`, or the end of `sql`.
fn find(sql: &str, from: usize, end: &str) -> usize {
    (sql.get(from..).and_then(|s| s.find(end))).map_or(sql.len(), |n| from + n + end.len())
}

/// How many bytes of `sql` from `at` spell `name`, ignoring case, a space of the name matching
/// any run of whitespace.
fn match_at(sql: &str, at: usize, name: &str) -> Option<usize> {
    let (mut text, mut len) = (sql[at..].chars().peekable(), 0);
    for nc in name.chars() {
        let start = len;
        while let Some(c) = text.next_if(|c| nc == ' ' && c.is_whitespace()) {
            len += c.len_utf8();
        }
        if nc != ' ' {
            let c = text.next()?;
            c.to_lowercase().eq(nc.to_lowercase()).then_some(())?;
            len += c.len_utf8();
        }
        (len > start).then_some(())?;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Table, TableKind};
    use rusqlite::types::Value as V;

    fn shop() -> Schema {
        let spec = "Order Details=OrderID,Unit Price;Orders=Order Date,Total;\
            Order Details Extended=Ship-City,count(*)";
        let table = |t: &str| {
            let (name, cols) = t.split_once('=').unwrap();
            let mut t = Table::new(None, name, TableKind::Table);
            t.columns = cols.split(',').map(|c| Column::new(c, "TEXT")).collect();
            t
        };
        let tables = spec.split(';').map(table).collect();
        Schema { tables }
    }

    /// The cases of `text`, a line or `;` apart: `[dialect: ]left => right`, the dialect holding
    /// until the next names another.
    fn cases(text: &str) -> Vec<(Dialect, &str, &str)> {
        let (mut d, mut out) = (Dialect::Sqlite, vec![]);
        let lines = text.split(['\n', ';']).map(str::trim);
        for case in lines.filter(|l| !l.is_empty()) {
            let (head, rest) = case.split_once(": ").unwrap_or(("", case));
            let named = head.parse().ok();
            d = named.unwrap_or(d);
            let case = if named.is_some() { rest } else { case };
            let (left, right) = case.split_once(" => ").expect(case);
            out.push((d, left, right));
        }
        out
    }

    /// `SELECT call FROM t` fixed is `SELECT replacement FROM t` for each `call => replacement
    /// [== its value]` of `text`, with one note, and the guard passes it; the SQL and the values.
    fn rewrites(text: &str) -> Vec<(String, String)> {
        let each = cases(text).into_iter().map(|(d, call, right)| {
            let (want, value) = right.split_once(" == ").unwrap_or((right, ""));
            let (sql, notes) = fix(&format!("SELECT {call} FROM t"), d, &shop()).expect(call);
            assert_eq!(sql, format!("SELECT {want} FROM t"), "{call}");
            assert_eq!(notes.len(), 1, "{notes:?}");
            crate::guard::check(&sql, d).unwrap_or_else(|e| panic!("{sql}: {e}"));
            (sql, value.to_string())
        });
        each.collect()
    }

    #[test]
    fn sqlite_gets_strftime_and_the_rewrites_run() {
        let mut text = String::new();
        let units =
            "YEAR %Y 2024,MONTH %m 8,DAY %d 29,HOUR %H 14,MINUTE %M 7,SECOND %S 9,WEEK %V 35";
        for l in units.split(',').chain(["DOW %w 4", "DOY %j 242"]) {
            let w: Vec<&str> = l.split(' ').collect();
            let (p, low) = (w[0], w[0].to_lowercase());
            let to = format!("CAST(strftime('{}', d) AS INTEGER) == {}", w[1], w[2]);
            text += &format!("EXTRACT({p} FROM d) => {to}\ndate_part('{low}', d) => {to}\n");
            if !l.starts_with("WEEK") && !l.starts_with("DO") {
                text += &format!("{p}(d) => {to}\n");
            }
        }
        text += "QUARTER(d) => ((CAST(strftime('%m', d) AS INTEGER) + 2) / 3) == 3
            EXTRACT(QUARTER FROM d) => ((CAST(strftime('%m', d) AS INTEGER) + 2) / 3) == 3
            DAYOFMONTH(d) => CAST(strftime('%d', d) AS INTEGER) == 29
            DAYOFYEAR(d) => CAST(strftime('%j', d) AS INTEGER) == 242
            DAYOFWEEK(d) => (CAST(strftime('%w', d) AS INTEGER) + 1) == 5
            date_trunc('year', d) => datetime(d, 'start of year') == 2024-01-01 00:00:00
            date_trunc('month', d) => datetime(d, 'start of month') == 2024-08-01 00:00:00
            date_trunc('day', d) => datetime(d, 'start of day') == 2024-08-29 00:00:00
            date_trunc('hour', d) => strftime('%Y-%m-%d %H:00:00', d) == 2024-08-29 14:00:00
            date_trunc('minute', d) => strftime('%Y-%m-%d %H:%M:00', d) == 2024-08-29 14:07:00
            date_trunc('week', d) => datetime(d, '-6 days', 'weekday 1', 'start of day') == 2024-08-26 00:00:00
            DATE_FORMAT(d, '%Y-%m') => strftime('%Y-%m', d) == 2024-08
            DATE_FORMAT(d, '%H:%i:%s') => strftime('%H:%M:%S', d) == 14:07:09
            NOW() => datetime('now') == 19 chars; CURDATE() => date('now') == 10 chars
            CURTIME() => time('now') == 8 chars";
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (d TEXT); INSERT INTO t VALUES ('2024-08-29 14:07:09')")
            .unwrap();
        for (sql, want) in rewrites(&text) {
            let got = match db.query_row(&sql, [], |r| r.get(0)).unwrap() {
                V::Integer(i) => i.to_string(),
                // The current date and time: only their length is known.
                V::Text(s) if want.ends_with(" chars") => format!("{} chars", s.len()),
                V::Text(s) => s,
                other => format!("{other:?}"),
            };
            assert_eq!(got, want, "{sql}");
        }
    }

    #[test]
    fn postgres_and_mysql_get_their_own_functions() {
        rewrites(
            "postgres: strftime('%Y', d) => to_char(d, 'YYYY'); strftime('%m', d) => to_char(d, 'MM')
            strftime('%d', d) => to_char(d, 'DD'); strftime('%Y-%m', d) => to_char(d, 'YYYY-MM')
            strftime('%Y-%m-%d', d) => to_char(d, 'YYYY-MM-DD'); strftime('%j', d) => to_char(d, 'DDD')
            strftime('%H:%M:%S', d) => to_char(d, 'HH24:MI:SS')
            YEAR(d) => EXTRACT(YEAR FROM d); MONTH(d) => EXTRACT(MONTH FROM d)
            DAY(d) => EXTRACT(DAY FROM d); DAYOFMONTH(d) => EXTRACT(DAY FROM d)
            HOUR(d) => EXTRACT(HOUR FROM d); MINUTE(d) => EXTRACT(MINUTE FROM d)
            SECOND(d) => EXTRACT(SECOND FROM d); QUARTER(d) => EXTRACT(QUARTER FROM d)
            DAYOFYEAR(d) => EXTRACT(DOY FROM d); DAYOFWEEK(d) => (EXTRACT(DOW FROM d) + 1)
            CURDATE() => CURRENT_DATE; DATE_FORMAT(d, '%Y-%m') => to_char(d, 'YYYY-MM')
            DATE_FORMAT(d, '%H:%i:%s') => to_char(d, 'HH24:MI:SS')
            mysql: date_part('year', d) => YEAR(d); date_part('month', d) => MONTH(d)
            date_part('day', d) => DAY(d); date_part('hour', d) => HOUR(d)
            date_part('minute', d) => MINUTE(d); date_part('second', d) => SECOND(d)
            date_part('quarter', d) => QUARTER(d); date_part('week', d) => WEEK(d, 3)
            date_part('dow', d) => (DAYOFWEEK(d) - 1); date_part('doy', d) => DAYOFYEAR(d)
            strftime('%Y', d) => DATE_FORMAT(d, '%Y'); strftime('%Y-%m', d) => DATE_FORMAT(d, '%Y-%m')
            strftime('%d.%m.%Y', d) => DATE_FORMAT(d, '%d.%m.%Y')
            strftime('%H:%M:%S', d) => DATE_FORMAT(d, '%H:%i:%s')",
        );
    }

    /// Each `dialect: sql => fixed` of `text` (`-`: left as it is).
    fn statements(text: &str) {
        for (d, sql, want) in cases(text) {
            let got = fix(sql, d, &shop()).map(|(s, _)| s);
            assert_eq!(got.as_deref().unwrap_or("-"), want, "{sql}");
        }
    }

    #[test]
    fn what_runs_or_has_no_exact_equivalent_is_left_alone() {
        statements(
            "sqlite: SELECT strftime('%Y', d), date('now'), COUNT(*) FROM t => -
            sqlite: SELECT DATE_FORMAT(d, '%M'), WEEK(d), date_trunc('quarter', d) FROM t => -
            postgres: SELECT EXTRACT(YEAR FROM d), date_part('year', d), NOW() FROM t => -
            postgres: SELECT strftime('%w', d), strftime('Year %Y', d) FROM t => -
            postgres: SELECT strftime('%Y', d, 'localtime'), date_trunc('month', d) FROM t => -
            mysql: SELECT EXTRACT(MONTH FROM d), YEAR(d), NOW(), CURDATE() FROM t => -
            mysql: SELECT DATE_FORMAT(d, '%Y'), strftime('%Y %b', d) FROM t => -
            sqlite: this is not SQL => -
            postgres: SELECT * FROM Orders WHERE Total > 3 => -",
        );
        let (_, notes) = fix(
            "SELECT EXTRACT(MONTH FROM o.d) FROM o",
            Dialect::Sqlite,
            &shop(),
        )
        .unwrap();
        let note = "EXTRACT(MONTH FROM x) → CAST(strftime('%m', x) AS INTEGER) for SQLite";
        assert_eq!(notes, [note]);
        // 15,000 nested additions: walked and printed on the big stack without overflow.
        let deep = format!("SELECT YEAR(d){} FROM t", " + 1".repeat(15_000));
        assert!(fix(&deep, Dialect::Postgres, &shop()).is_some());
    }

    #[test]
    fn names_with_spaces_are_quoted_outside_strings_comments_and_quotes() {
        statements(
            r#"sqlite: SELECT * FROM Order Details => SELECT * FROM "Order Details"
            mysql: SELECT * FROM order details => SELECT * FROM `Order Details`
            postgres: SELECT SUM(od.unit  price) FROM Order Details od => SELECT SUM(od."Unit Price") FROM "Order Details" od
            sqlite: SELECT Ship-City FROM Order Details Extended => SELECT "Ship-City" FROM "Order Details Extended"
            sqlite: SELECT YEAR(Order Date) FROM Orders => SELECT CAST(strftime('%Y', "Order Date") AS INTEGER) FROM Orders
            sqlite: SELECT 'Order Details', count(*) FROM Orders -- Order Details => -
            sqlite: SELECT * FROM "Order Details" JOIN [Order Details Extended] /* Unit Price */ => -
            mysql: SELECT 'it\'s Order Details', `Order Details`.OrderID FROM `Order Details` => -
            postgres: SELECT "Unit Price", Total FROM Orders, XOrder Details => -"#,
        );
    }
}
