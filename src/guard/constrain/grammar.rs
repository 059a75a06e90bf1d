//! The schema constraint as a grammar, for an inference server that applies GBNF grammars
//! (llama.cpp's server; vLLM's structured outputs) instead of sqlora's own token mask:
//! [`Names::grammar`] writes one per question from the tables shown.
//!
//! A grammar is context-free, so it says less than the mask's state machine: every word of
//! the SQL is a keyword, an allowed function, a table or column of the tables shown (bare,
//! lower- or upper-case where the dialect allows, or quoted as the dialect quotes), a table's
//! own column after `table.`, any shown column after a short alias (`T1.`, `s.`; alone only
//! `s` or `T1`, not `H`), or any name right after `AS`; words are separated by spaces or
//! punctuation, so two allowed words cannot be glued into a name that does not exist.
//! Strings, numbers and operators are free. It cannot tell which table an alias names, nor whether a column is in
//! scope; in a repair it takes what the failed answer said instead ([`Names::hinted_by`]):
//! an alias it gave a table goes on with that table's columns only, and in the last round
//! bare columns are those of the tables it read. The guard still checks the finished
//! statement. Never touches a model or a database.

use std::collections::BTreeSet;

use super::Names;
use crate::schema::ident;
use crate::sql::Dialect;

/// A GBNF string literal for `s`.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A trie of words, written out as one GBNF expression that shares their prefixes: a sampler
/// then follows one path per character, instead of holding every word of the schema as a
/// separate candidate at every word's start (which made llama.cpp's grammar check cost more
/// than the model's forward).
#[derive(Default)]
struct Trie {
    /// A word ends here.
    end: bool,
    /// The words ending here may go on with `.` and one of these rules (a table's columns
    /// `c{i}`, or any shown column `cols`).
    follow: BTreeSet<String>,
    next: std::collections::BTreeMap<char, Trie>,
}

impl Trie {
    fn of<'a>(words: impl IntoIterator<Item = &'a String>) -> Trie {
        let mut t = Trie::default();
        for w in words {
            t.insert(w, None);
        }
        t
    }

    fn insert(&mut self, word: &str, follow: Option<String>) {
        let n = self.node(word);
        n.end = true;
        if let Some(rule) = follow {
            n.follow.insert(rule);
        }
    }

    /// `word` only as a qualifier: it must go on with `.` and `follow` (alone it is no word,
    /// unless another insert makes it one).
    fn insert_qualifier(&mut self, word: &str, follow: String) {
        self.node(word).follow.insert(follow);
    }

    fn node(&mut self, word: &str) -> &mut Trie {
        let mut n = self;
        for c in word.chars() {
            n = n.next.entry(c).or_default();
        }
        n
    }

    /// The expression for what may follow this node (`""`: nothing).
    fn expr(&self) -> String {
        let mut options: Vec<String> = self
            .next
            .iter()
            .map(|(c, child)| {
                // A chain of single children is one literal.
                let mut text = c.to_string();
                let mut n = child;
                while !n.end && n.follow.is_empty() && n.next.len() == 1 {
                    let (c, only) = n.next.iter().next().expect("one child");
                    text.push(*c);
                    n = only;
                }
                match n.expr() {
                    rest if rest.is_empty() => lit(&text),
                    rest => format!("{} {rest}", lit(&text)),
                }
            })
            .collect();
        if !self.follow.is_empty() {
            let rules: Vec<&str> = self.follow.iter().map(String::as_str).collect();
            options.push(format!("\".\" ( {} )", rules.join(" | ")));
        }
        if options.is_empty() {
            return String::new();
        }
        let one = options.len() == 1;
        let joined = options.join(" | ");
        match (self.end, one) {
            (true, _) => format!("( {joined} )?"),
            (false, true) => joined,
            (false, false) => format!("( {joined} )"),
        }
    }

    /// The expression matching exactly the words (never empty: an impossible word stands in).
    fn rule(&self) -> String {
        match self.expr() {
            e if e.is_empty() => lit("\u{1}"),
            e => e,
        }
    }
}

/// Every way `dialect` lets SQL spell the stored name `name`.
fn spellings(name: &str, dialect: Dialect, out: &mut BTreeSet<String>) {
    let written = ident(name, dialect);
    if written == name {
        // Unquoted names are case-insensitive (PostgreSQL folds them to lower case, and
        // `ident` leaves only lower-case names bare there).
        out.insert(name.to_string());
        out.insert(name.to_ascii_lowercase());
        out.insert(name.to_ascii_uppercase());
    }
    out.insert(written);
    let quoted = match dialect {
        Dialect::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    };
    out.insert(quoted);
}

/// A lower-case word in lower and upper case.
fn both_cases(word: &[u8], out: &mut BTreeSet<String>) {
    let w = String::from_utf8_lossy(word);
    out.insert(w.to_ascii_lowercase());
    out.insert(w.to_ascii_uppercase());
}

impl Names {
    /// The GBNF grammar of answers that name only what these names allow (see the module's
    /// doc), over the text the model writes after the answer's opening fence: the SQL, and
    /// optionally the closing fence.
    pub fn grammar(&self) -> String {
        let d = self.dialect;
        let mut words = BTreeSet::new();
        for set in [&self.keywords, &self.functions, &self.pseudo] {
            for w in &set.names {
                // SQLite has no date-part keywords (`EXTRACT(YEAR FROM …)` is not its SQL):
                // there a bare `year` can only be meant as a column.
                let date_part = super::DATE_PARTS
                    .split_whitespace()
                    .any(|p| p.as_bytes() == w.as_ref());
                if d == Dialect::Sqlite && date_part && set.has(w) && !self.functions.has(w) {
                    continue;
                }
                both_cases(w, &mut words);
            }
        }
        let mut words = Trie::of(&words);
        let mut row_ids = BTreeSet::new();
        for w in &self.row_ids.names {
            both_cases(w, &mut row_ids);
        }
        // In a repair's last round, bare columns are those of the tables the failed answer
        // read (others still come qualified: `T2.year`, `concert.year`).
        let bare_from =
            |i: usize| !self.cover_from || self.read.is_empty() || self.read.contains(&i);
        let mut rules = Vec::new();
        let mut all_cols = BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let mut names = BTreeSet::new();
            spellings(&t.name, d, &mut names);
            if let Some(s) = t.schema {
                let mut schema = BTreeSet::new();
                spellings(&self.schemas[s].0, d, &mut schema);
                let bare: Vec<String> = names.iter().cloned().collect();
                for sc in &schema {
                    for n in &bare {
                        names.insert(format!("{sc}.{n}"));
                    }
                }
            }
            for n in &names {
                words.insert(n, Some(format!("c{i}")));
            }
            let mut cols = BTreeSet::new();
            for c in &t.col_names {
                spellings(c, d, &mut cols);
            }
            if bare_from(i) {
                for c in &cols {
                    words.insert(c, None);
                }
            }
            all_cols.extend(cols.iter().cloned());
            cols.extend(row_ids.iter().cloned());
            cols.insert("*".into());
            rules.push(format!("c{i} ::= {}", Trie::of(&cols).rule()));
        }
        all_cols.extend(row_ids.iter().cloned());
        all_cols.insert("*".into());
        // Aliases: a letter and at most one digit (`s`, `T1`), qualifying a column. One a failed
        // answer gave a table (a repair) goes on with that table's columns only; any other,
        // with any shown column (a grammar cannot see which table an alias names). Alone (`FROM
        // singer s`, `HAVING n > 1`) only the spellings aliases are given, a lower-case letter
        // or `T` and a digit, or one the failed answer gave a table: a bare `H`, `C` or `H3`
        // was how the model spelt a column the tables lack (`ORDER BY H-power`, `WHERE C ilike
        // 4`). A longer alias may be defined (`AS sub`) but qualifies nothing: a free qualifier
        // let the model start any unknown word as a would-be alias and never end it
        // (`YearColumn…`).
        for letter in ('a'..='z').chain('A'..='Z') {
            for digit in std::iter::once(None).chain(('0'..='9').map(Some)) {
                let alias: String = std::iter::once(letter).chain(digit).collect();
                let lower = alias.to_ascii_lowercase();
                let hinted = self
                    .hints
                    .iter()
                    .find(|(a, _)| a.as_ref() == lower.as_bytes());
                let follow = match hinted {
                    Some(&(_, i)) => format!("c{i}"),
                    None => "cols".to_string(),
                };
                let spelt_as_aliases =
                    letter.is_ascii_lowercase() || (letter == 'T' && digit.is_some());
                if spelt_as_aliases || hinted.is_some() {
                    words.insert(&alias, Some(follow));
                } else {
                    words.insert_qualifier(&alias, follow);
                }
            }
        }
        let strings = match d {
            // SQLite and MySQL read a double-quoted word that names nothing as a string.
            Dialect::Sqlite | Dialect::MySql => {
                "\"'\" ( [^'] | \"''\" )* \"'\" | \"\\\"\" [^\"]* \"\\\"\""
            }
            Dialect::Postgres => "\"'\" ( [^'] | \"''\" )* \"'\"",
        };
        let mut g = vec![
            "root ::= sp? stmt sp? fence?".to_string(),
            // The server's stop word ends the answer at the fence; a token may carry more.
            "fence ::= \"```\" [ \\t\\n]*".to_string(),
            "stmt ::= chunk* w?".to_string(),
            // A word is followed by a space or punctuation, never directly by another word.
            "chunk ::= w sp | w? p sp?".to_string(),
            "sp ::= [ \\t\\n]+".to_string(),
            "w ::= word | as-name | num".to_string(),
            format!("word ::= {}", words.rule()),
            format!("cols ::= {}", Trie::of(&all_cols).rule()),
            "as-name ::= ( \"AS\" | \"as\" ) sp ( [a-zA-Z_] [a-zA-Z0-9_]* | quoted )".to_string(),
            match d {
                Dialect::MySql => "quoted ::= \"`\" [^`]+ \"`\"".to_string(),
                _ => "quoted ::= \"\\\"\" [^\"]+ \"\\\"\"".to_string(),
            },
            "num ::= [0-9]+ ( \".\" [0-9]+ )?".to_string(),
            format!(
                "p ::= str | {}",
                ["(", ")", ",", ";", "*", "=", "<", ">", "!", "+", "-", "/", "%", "|", ":"]
                    .iter()
                    .map(|s| lit(s))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            format!("str ::= {strings}"),
        ];
        g.extend(rules);
        g.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Table, TableKind};
    use std::collections::{BTreeMap, BTreeSet};

    /// A small GBNF reader and matcher (what these grammars use: literals, classes, groups,
    /// `? * +`, rule names), so that the tests hold the grammar to what it must accept and
    /// refuse without a server.
    #[derive(Debug, Clone)]
    enum E {
        Lit(Vec<char>),
        Class(bool, Vec<(char, char)>),
        Rule(String),
        Seq(Vec<E>),
        Alt(Vec<E>),
        Opt(Box<E>),
        Star(Box<E>),
        Plus(Box<E>),
    }

    struct Reader<'a> {
        c: Vec<char>,
        i: usize,
        _s: &'a str,
    }

    impl Reader<'_> {
        fn ws(&mut self) {
            while self.i < self.c.len() && self.c[self.i].is_whitespace() {
                self.i += 1;
            }
        }
        fn esc(&mut self) -> char {
            let c = self.c[self.i];
            self.i += 1;
            if c != '\\' {
                return c;
            }
            let e = self.c[self.i];
            self.i += 1;
            match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'u' => {
                    // \u{1}
                    let close = self.c[self.i..].iter().position(|&c| c == '}').unwrap();
                    let hex: String = self.c[self.i + 1..self.i + close].iter().collect();
                    self.i += close + 1;
                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                }
                c => c,
            }
        }
        fn alt(&mut self) -> E {
            let mut alts = vec![self.seq()];
            loop {
                self.ws();
                if self.i < self.c.len() && self.c[self.i] == '|' {
                    self.i += 1;
                    alts.push(self.seq());
                } else {
                    return E::Alt(alts);
                }
            }
        }
        fn seq(&mut self) -> E {
            let mut items = Vec::new();
            loop {
                self.ws();
                let Some(&c) = self.c.get(self.i) else {
                    return E::Seq(items);
                };
                let atom = match c {
                    '"' => {
                        self.i += 1;
                        let mut v = Vec::new();
                        while self.c[self.i] != '"' {
                            v.push(self.esc());
                        }
                        self.i += 1;
                        E::Lit(v)
                    }
                    '[' => {
                        self.i += 1;
                        let neg = self.c[self.i] == '^';
                        if neg {
                            self.i += 1;
                        }
                        let mut ranges = Vec::new();
                        while self.c[self.i] != ']' {
                            let a = self.esc();
                            let b = if self.c[self.i] == '-' && self.c[self.i + 1] != ']' {
                                self.i += 1;
                                self.esc()
                            } else {
                                a
                            };
                            ranges.push((a, b));
                        }
                        self.i += 1;
                        E::Class(neg, ranges)
                    }
                    '(' => {
                        self.i += 1;
                        let e = self.alt();
                        self.ws();
                        assert_eq!(self.c[self.i], ')');
                        self.i += 1;
                        e
                    }
                    c if c.is_ascii_alphanumeric() || c == '-' => {
                        let s = self.i;
                        while self.i < self.c.len()
                            && (self.c[self.i].is_ascii_alphanumeric() || self.c[self.i] == '-')
                        {
                            self.i += 1;
                        }
                        E::Rule(self.c[s..self.i].iter().collect())
                    }
                    _ => return E::Seq(items),
                };
                let atom = match self.c.get(self.i) {
                    Some('?') => E::Opt(Box::new(atom)),
                    Some('*') => E::Star(Box::new(atom)),
                    Some('+') => E::Plus(Box::new(atom)),
                    _ => {
                        items.push(atom);
                        continue;
                    }
                };
                self.i += 1;
                items.push(atom);
            }
        }
    }

    fn read(g: &str) -> BTreeMap<String, E> {
        g.lines()
            .map(|l| {
                let (name, body) = l.split_once(" ::= ").expect("name ::= body");
                let mut r = Reader {
                    c: body.chars().collect(),
                    i: 0,
                    _s: body,
                };
                let e = r.alt();
                assert_eq!(r.i, r.c.len(), "unread text in {l}");
                (name.to_string(), e)
            })
            .collect()
    }

    /// The positions where `e` can end when it starts at each of `from`.
    fn ends(g: &BTreeMap<String, E>, e: &E, s: &[char], from: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        match e {
            E::Lit(l) => {
                for &i in from {
                    if s[i..].starts_with(l) {
                        out.insert(i + l.len());
                    }
                }
            }
            E::Class(neg, r) => {
                for &i in from {
                    if let Some(&c) = s.get(i) {
                        if r.iter().any(|&(a, b)| a <= c && c <= b) != *neg {
                            out.insert(i + 1);
                        }
                    }
                }
            }
            E::Rule(n) => return ends(g, &g[n], s, from),
            E::Seq(items) => {
                let mut at = from.clone();
                for it in items {
                    at = ends(g, it, s, &at);
                }
                return at;
            }
            E::Alt(a) => {
                for x in a {
                    out.extend(ends(g, x, s, from));
                }
            }
            E::Opt(x) => {
                out.extend(from.iter().copied());
                out.extend(ends(g, x, s, from));
            }
            E::Star(x) | E::Plus(x) => {
                let mut seen: BTreeSet<usize> = BTreeSet::new();
                let mut at = ends(g, x, s, from);
                if matches!(e, E::Star(_)) {
                    out.extend(from.iter().copied());
                }
                while !at.is_subset(&seen) {
                    seen.extend(at.iter().copied());
                    at = ends(g, x, s, &at);
                }
                out.extend(seen);
            }
        }
        out
    }

    fn accepts(g: &BTreeMap<String, E>, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        ends(g, &g["root"], &s, &BTreeSet::from([0])).contains(&s.len())
    }

    fn names(dialect: Dialect) -> Names {
        let mut t = Table::new(None, "Order Details", TableKind::Table);
        t.columns = vec![
            Column::new("UnitPrice", "REAL"),
            Column::new("say \"hi\"", "TEXT"),
        ];
        let mut s = Table::new(None, "singer", TableKind::Table);
        s.columns = vec![Column::new("name", "TEXT"), Column::new("singer_id", "INT")];
        Names::new(&[&t, &s], dialect)
    }

    #[test]
    fn the_grammar_spells_only_names_that_exist() {
        let g = read(&names(Dialect::Sqlite).grammar());
        for ok in [
            "SELECT name FROM singer;",
            "SELECT T1.name, count(*) FROM singer AS T1 WHERE T1.singer_id > 3\n```",
            "select s.name from singer s order by s.name desc limit 1",
            "SELECT \"UnitPrice\" FROM \"Order Details\" WHERE unitprice = 'x''y' AND \"say \"\"hi\"\"\" = \"str\"",
            "SELECT singer.singer_id, COUNT(*) AS n FROM singer GROUP BY singer.name HAVING n>1;",
            "SELECT avg(UnitPrice) FROM `x`",
        ] {
            // Backticks are no quote in SQLite: the last one must fail, the rest pass.
            assert_eq!(accepts(&g, ok), !ok.contains('`') || ok.ends_with("```"), "{ok}");
        }
        for bad in [
            "SELECT name FROM singer WHERE strftime('%Y', YEAR) > 2013",
            "SELECT nme FROM singer",
            "SELECT name FROM singers",
            "SELECT singer.UnitPrice FROM singer",
            "SELECT T1.id FROM singer AS T1",
            "SELECT sub.name FROM (SELECT name FROM singer) AS sub",
            "SELECT namename FROM singer",
            "SELECT name FROMsinger",
            "SELECT Order Details.name FROM singer",
            // Bare upper-case letters are no alias anyone gives: a column the tables lack.
            "SELECT name FROM singer ORDER BY H-power",
            "SELECT count(*) FROM singer WHERE C > 4",
            "SELECT name FROM singer ORDER BY H3 DESC",
        ] {
            assert!(!accepts(&g, bad), "{bad}");
        }
        // A repair: T1 was the singer, and the last round reads the failed answer's tables.
        let failed = "SELECT T1.nme FROM singer AS T1";
        let g = read(&names(Dialect::Sqlite).hinted_by(failed).grammar());
        assert!(accepts(&g, "SELECT T1.name FROM singer AS T1"));
        assert!(!accepts(&g, "SELECT T1.UnitPrice FROM singer AS T1"));
        assert!(accepts(
            &g,
            "SELECT T2.UnitPrice, UnitPrice FROM singer AS T1"
        ));
        let g = read(
            &names(Dialect::Sqlite)
                .hinted_by(failed)
                .covering_from()
                .grammar(),
        );
        assert!(!accepts(&g, "SELECT UnitPrice FROM singer"));
        assert!(accepts(&g, "SELECT T2.UnitPrice, name FROM singer AS T1"));
        let g = read(&names(Dialect::MySql).grammar());
        assert!(accepts(&g, "SELECT `UnitPrice` FROM `Order Details`;"));
        assert!(accepts(&g, "SELECT UNITPRICE FROM `Order Details`;"));
        // PostgreSQL folds bare names to lower case: a mixed-case column needs its quotes.
        let g = read(&names(Dialect::Postgres).grammar());
        assert!(accepts(&g, "SELECT \"UnitPrice\" FROM \"Order Details\";"));
        assert!(!accepts(&g, "SELECT UnitPrice FROM \"Order Details\";"));
        assert!(!accepts(&g, "SELECT name FROM singer WHERE name = \"x\""));
    }
}
