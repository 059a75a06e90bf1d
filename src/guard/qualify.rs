//! Qualifies bare table names with the namespace the model was shown.
//!
//! When every table chosen for a question lives in one namespace (a PostgreSQL schema other than
//! the default one), the model is shown them without the schema name, as a database of its own,
//! and writes bare names. Those names would resolve along the search_path, possibly to a table of
//! the same name in another schema, so each bare table reference that names a table of that
//! namespace is written `ns.table` before the query is checked and run. Only the names are
//! touched (at their positions in the text); the rest of the query keeps its spelling.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{visit_relations, Cte, Visit, Visitor};
use sqlparser::parser::Parser;

use super::parser_dialect;
use crate::schema::{ident, Schema};
use crate::sql::Dialect;

/// `sql` with the bare names of `namespace`'s tables qualified; `None` when nothing changes
/// (or `sql` does not parse: the guard reports that on the text as written).
pub fn qualify(sql: &str, dialect: Dialect, schema: &Schema, namespace: &str) -> Option<String> {
    let statements = Parser::parse_sql(parser_dialect(dialect).as_ref(), sql).ok()?;
    // Names of common table expressions are not tables.
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for Cte { alias, .. } in &with.cte_tables {
                    self.0.insert(alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(HashSet::new());
    let _ = statements.visit(&mut ctes);
    let in_namespace = |bare: &str| {
        schema.tables.iter().any(|t| {
            t.schema
                .as_deref()
                .is_some_and(|ns| ns.eq_ignore_ascii_case(namespace))
                && t.name.eq_ignore_ascii_case(bare)
        })
    };
    let mut at: Vec<(u64, u64)> = Vec::new();
    let _ = visit_relations(&statements, |name| {
        if let [part] = name.0.as_slice() {
            if let Some(id) = part.as_ident() {
                let bare = id.value.to_ascii_lowercase();
                let start = id.span.start;
                if !ctes.0.contains(&bare) && in_namespace(&id.value) && start.line > 0 {
                    at.push((start.line, start.column));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if at.is_empty() {
        return None;
    }
    // Line and column (1-based, in characters) to byte offsets.
    let mut offsets: Vec<usize> = Vec::new();
    for (line, column) in at {
        let line_start: usize = sql
            .split_inclusive('\n')
            .take(line as usize - 1)
            .map(str::len)
            .sum();
        let off = sql[line_start..]
            .char_indices()
            .nth(column as usize - 1)
            .map(|(i, _)| line_start + i)?;
        offsets.push(off);
    }
    offsets.sort_unstable();
    offsets.dedup();
    let prefix = format!("{}.", ident(namespace, dialect));
    let mut out = sql.to_string();
    for off in offsets.into_iter().rev() {
        out.insert_str(off, &prefix);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Table, TableKind};

    fn table(ns: Option<&str>, name: &str) -> Table {
        Table {
            columns: vec![Column {
                not_null: true,
                ..Column::new("id", "integer")
            }],
            ..Table::new(ns.map(str::to_string), name, TableKind::Table)
        }
    }

    fn schema() -> Schema {
        Schema {
            tables: vec![
                table(None, "singer"),
                table(Some("concert_singer"), "singer"),
                table(Some("concert_singer"), "concert"),
                table(Some("music"), "song"),
            ],
        }
    }

    #[test]
    fn bare_names_of_the_namespace_are_qualified_in_place() {
        let sql = "SELECT s.id, count(*)\nFROM singer AS s JOIN  concert c ON c.id = s.id\nWHERE s.id IN (SELECT id FROM concert) GROUP BY s.id";
        let got = qualify(sql, Dialect::Postgres, &schema(), "concert_singer").unwrap();
        assert_eq!(
            got,
            "SELECT s.id, count(*)\nFROM concert_singer.singer AS s JOIN  concert_singer.concert c ON c.id = s.id\nWHERE s.id IN (SELECT id FROM concert_singer.concert) GROUP BY s.id"
        );
    }

    #[test]
    fn qualified_names_ctes_and_other_tables_are_left_alone() {
        let s = schema();
        let q = |sql: &str| qualify(sql, Dialect::Postgres, &s, "concert_singer");
        // Already qualified, or a table of another namespace: nothing to do.
        assert_eq!(q("SELECT * FROM music.song"), None);
        assert_eq!(q("SELECT * FROM song"), None);
        // A CTE named like a table is the CTE.
        assert_eq!(
            q("WITH concert AS (SELECT 1 AS id) SELECT * FROM concert JOIN singer USING (id)")
                .unwrap(),
            "WITH concert AS (SELECT 1 AS id) SELECT * FROM concert JOIN concert_singer.singer USING (id)"
        );
        // Unparseable text is the guard's to report.
        assert_eq!(q("SELEC * FROM singer"), None);
    }

    #[test]
    fn quoted_names_and_non_ascii_text_keep_their_positions() {
        let s = schema();
        let got = qualify(
            "SELECT 'Zoë' AS n, id FROM \"singer\" WHERE 'é' <> 'x'",
            Dialect::Postgres,
            &s,
            "concert_singer",
        )
        .unwrap();
        assert_eq!(
            got,
            "SELECT 'Zoë' AS n, id FROM concert_singer.\"singer\" WHERE 'é' <> 'x'"
        );
    }
}
