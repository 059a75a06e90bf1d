//! The text the database will run: a statement with its comments taken out, so that what the
//! server executes is exactly what the parser checked.
//!
//! The parser skips comments; a server may not. MySQL and MariaDB run `/*! … */` and
//! `/*M! … */` as code, optimizer hints (`/*+ … */`) steer plans, and MySQL reads `--x` as
//! two minus signs where the parser saw a comment. Executable comments and hints are refused
//! with their text; every other comment is removed (a block comment becomes a space, a line
//! comment its line break), using the parser's own tokenizer so the cuts fall where the parser
//! saw them. Never touches a database.

use sqlparser::dialect::Dialect as SqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// `text` without comments, or why it cannot be run as written.
pub fn without_comments(text: &str, dialect: &dyn SqlDialect) -> Result<String, String> {
    let tokens = Tokenizer::new(dialect, text)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let lines = LineIndex::new(text);
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for t in &tokens {
        let Token::Whitespace(w) = &t.token else {
            continue;
        };
        let keep = match w {
            Whitespace::MultiLineComment(body) => {
                let b = body.trim_start();
                if b.starts_with('!') || b.starts_with("M!") || b.starts_with('+') {
                    let shown: String = body.chars().take(40).collect();
                    return Err(format!(
                        "the comment `/*{shown}{}*/` is code to MySQL/MariaDB (an executable \
                         comment or optimizer hint); write the SQL without it",
                        if shown.len() < body.len() { "…" } else { "" }
                    ));
                }
                " "
            }
            Whitespace::SingleLineComment { comment, .. } => {
                if comment.ends_with('\n') {
                    "\n"
                } else {
                    ""
                }
            }
            _ => continue,
        };
        let (start, end) = (
            lines.offset(text, t.span.start),
            lines.offset(text, t.span.end),
        );
        out.push_str(&text[from..start]);
        out.push_str(keep);
        from = end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// Byte offsets of line starts, to turn the tokenizer's (line, column) into a byte offset.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex(starts)
    }

    /// The byte offset of a 1-based (line, column-in-characters) location.
    fn offset(&self, text: &str, at: Location) -> usize {
        let line = (at.line.max(1) as usize - 1).min(self.0.len() - 1);
        let start = self.0[line];
        let col = at.column.max(1) as usize - 1;
        text[start..]
            .char_indices()
            .nth(col)
            .map_or(text.len(), |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect, SQLiteDialect};

    fn my(s: &str) -> Result<String, String> {
        without_comments(s, &MySqlDialect {})
    }

    #[test]
    fn comments_are_cut_where_the_parser_saw_them() {
        assert_eq!(
            my("SELECT 1 -- one\n, 2 /* two */ FROM t").unwrap(),
            "SELECT 1 \n, 2   FROM t"
        );
        assert_eq!(
            without_comments("SELECT 'a -- b', \"/* c */\" -- end", &SQLiteDialect {}).unwrap(),
            "SELECT 'a -- b', \"/* c */\" "
        );
        // Multi-byte text before a comment keeps the cut on the right character.
        assert_eq!(
            without_comments("SELECT 'é中' /* x */, 1", &PostgreSqlDialect {}).unwrap(),
            "SELECT 'é中'  , 1"
        );
        assert_eq!(
            without_comments("SELECT 1\n/* a\nb */ + 2", &PostgreSqlDialect {}).unwrap(),
            "SELECT 1\n  + 2"
        );
    }

    #[test]
    fn executable_comments_and_hints_are_refused() {
        for sql in [
            "SELECT id FROM customers /*!INTO OUTFILE 'out.txt'*/",
            "/*!SET GLOBAL max_connect_errors = */ (SELECT 1)",
            "SELECT /*!50000 KILL */ 1",
            "SELECT 1 /*M!100000 , load_file('/etc/passwd') */",
            "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1",
        ] {
            let e = my(sql).expect_err(sql);
            assert!(e.contains("executable comment"), "{sql}: {e}");
        }
    }
}
