//! Do the tables and columns a statement names exist? Resolves names against the introspected
//! [`Schema`] through aliases, CTEs (recursive too), derived tables, subqueries (correlated
//! ones see the outer query), `SELECT *`, schema-qualified names and each dialect's case rules,
//! and names what does not resolve with "did you mean" suggestions.
//!
//! It errs on the side of passing: whatever it cannot see into (table functions, system
//! catalogs, `VALUES` lists) accepts any column, and the database's own prepare step remains
//! the final check. In SQLite and MySQL a double-quoted word that names no column is the
//! string it looks like, as those databases treat it.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableAlias, TableFactor, Visit, Visitor,
};

use crate::schema::Schema;
use crate::sql::Dialect;

/// A name that did not resolve, with the closest names that do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub suggestions: Vec<String>,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.name)?;
        match self.suggestions.as_slice() {
            [] => Ok(()),
            [one] => write!(f, " (did you mean `{one}`?)"),
            many => write!(f, " (did you mean one of `{}`?)", many.join("`, `")),
        }
    }
}

/// Columns a relation provides; `open` when others may exist that sqlora cannot see.
#[derive(Debug, Clone, Default)]
struct Cols {
    names: Vec<String>,
    open: bool,
}

impl Cols {
    fn open() -> Self {
        Cols {
            names: Vec::new(),
            open: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Relation {
    /// What the query calls it: its alias, or its (last) table name.
    name: String,
    cols: Cols,
}

#[derive(Debug, Default)]
struct Scope<'p> {
    relations: Vec<Relation>,
    /// Output column aliases of the SELECT (usable in ORDER BY, GROUP BY, HAVING; SQLite
    /// even in WHERE).
    aliases: Vec<String>,
    parent: Option<&'p Scope<'p>>,
}

struct Checker<'s> {
    schema: &'s Schema,
    dialect: Dialect,
    unknown: Vec<UnknownName>,
}

/// Checks every table and column `statement` names against `schema`.
pub fn check_names(
    statement: &Statement,
    schema: &Schema,
    dialect: Dialect,
) -> Result<(), Vec<UnknownName>> {
    let mut c = Checker {
        schema,
        dialect,
        unknown: Vec::new(),
    };
    match statement {
        Statement::Query(q) => {
            c.query(q, &HashMap::new(), None);
        }
        Statement::Explain { statement, .. } => return check_names(statement, schema, dialect),
        _ => {}
    }
    let mut seen = std::collections::HashSet::new();
    c.unknown.retain(|u| seen.insert((u.kind, u.name.clone())));
    if c.unknown.is_empty() {
        Ok(())
    } else {
        Err(c.unknown)
    }
}

/// Names that are not columns although they parse like them.
const PSEUDO_COLUMNS: &[&str] = &[
    "rowid",
    "oid",
    "_rowid_",
    "ctid",
    "xmin",
    "xmax",
    "cmin",
    "cmax",
    "tableoid",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "session_user",
    "current_role",
    "current_schema",
    "current_catalog",
    "user",
    "true",
    "false",
    "null",
    "unknown",
];

impl<'s> Checker<'s> {
    /// Whether `id` as written names `name` under the dialect's case rules.
    fn same(&self, id: &Ident, name: &str) -> bool {
        match (self.dialect, id.quote_style) {
            (Dialect::Postgres, Some(_)) => id.value == name,
            (Dialect::Postgres, None) => id.value.to_lowercase() == name,
            _ => id.value.eq_ignore_ascii_case(name),
        }
    }

    /// A name the query itself declares (alias, CTE, output column), as the database stores
    /// it: PostgreSQL folds unquoted names to lower case.
    fn declared(&self, id: &Ident) -> String {
        if self.dialect == Dialect::Postgres && id.quote_style.is_none() {
            id.value.to_lowercase()
        } else {
            id.value.clone()
        }
    }

    fn suggest<'a>(
        &self,
        wrong: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let w = wrong.to_lowercase();
        let mut scored: Vec<(usize, String)> = candidates
            .into_iter()
            .filter_map(|c| {
                let l = c.to_lowercase();
                let d = strsim::osa_distance(&w, &l);
                let max = match w.chars().count() {
                    0..=4 => 1,
                    5..=8 => 2,
                    _ => 3,
                };
                let close = d <= max
                    || (w.len() >= 4 && l.len() >= 4 && (l.contains(&w) || w.contains(&l)));
                close.then(|| (d, c.to_string()))
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(3).map(|(_, c)| c).collect()
    }

    fn alias_columns(&self, a: &TableAlias) -> Option<Cols> {
        (!a.columns.is_empty()).then(|| Cols {
            names: a.columns.iter().map(|c| self.declared(&c.name)).collect(),
            open: false,
        })
    }

    fn unknown(&mut self, kind: &'static str, name: String, suggestions: Vec<String>) {
        self.unknown.push(UnknownName {
            kind,
            name,
            suggestions,
        });
    }

    /// Resolves a query; returns the columns it produces.
    fn query(&mut self, q: &Query, ctes: &HashMap<String, Cols>, outer: Option<&Scope>) -> Cols {
        let mut env = ctes.clone();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let key = cte.alias.name.value.to_lowercase();
                let declared = self.alias_columns(&cte.alias);
                if with.recursive {
                    // The body may read the CTE itself.
                    env.insert(key.clone(), declared.clone().unwrap_or_else(Cols::open));
                }
                let produced = self.query(&cte.query, &env, outer);
                env.insert(key, declared.unwrap_or(produced));
            }
        }
        let order: Vec<&Expr> = match q.order_by.as_ref().map(|o| &o.kind) {
            Some(OrderByKind::Expressions(list)) => list.iter().map(|o| &o.expr).collect(),
            _ => Vec::new(),
        };
        self.set_expr(&q.body, &env, outer, &order)
    }

    fn set_expr(
        &mut self,
        e: &SetExpr,
        env: &HashMap<String, Cols>,
        outer: Option<&Scope>,
        order: &[&Expr],
    ) -> Cols {
        match e {
            SetExpr::Select(s) => self.select(s, env, outer, order),
            SetExpr::Query(q) => self.query(q, env, outer),
            SetExpr::SetOperation { left, right, .. } => {
                let cols = self.set_expr(left, env, outer, &[]);
                self.set_expr(right, env, outer, &[]);
                // ORDER BY after a set operation names output columns (or positions).
                let scope = Scope {
                    relations: vec![Relation {
                        name: String::new(),
                        cols: cols.clone(),
                    }],
                    aliases: Vec::new(),
                    parent: outer,
                };
                for ex in order {
                    self.expr(ex, &scope, env);
                }
                cols
            }
            _ => Cols::open(),
        }
    }

    fn select(
        &mut self,
        s: &Select,
        env: &HashMap<String, Cols>,
        outer: Option<&Scope>,
        order: &[&Expr],
    ) -> Cols {
        let mut scope = Scope {
            relations: Vec::new(),
            aliases: Vec::new(),
            parent: outer,
        };
        for twj in &s.from {
            self.factor(&twj.relation, env, &mut scope);
            for j in &twj.joins {
                self.factor(&j.relation, env, &mut scope);
            }
        }
        scope.aliases = s
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(self.declared(alias)),
                _ => None,
            })
            .collect();
        // Everything in this SELECT but its FROM sources (join conditions included).
        let mut found = Found::default();
        let _ = s.visit(&mut found);
        for e in &found.exprs {
            self.column_ref(e, &scope);
        }
        for q in &found.subqueries {
            self.query(q, env, Some(&scope));
        }
        for item in &s.projection {
            if let SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(n),
                _,
            ) = item
            {
                if let Some(last) = n.0.last().and_then(|p| p.as_ident()) {
                    if self.find_relation(&scope, last).is_none() {
                        let names: Vec<&str> =
                            scope.relations.iter().map(|r| r.name.as_str()).collect();
                        let sugg = self.suggest(&last.value, names);
                        self.unknown("table", format!("{n}.*"), sugg);
                    }
                }
            }
        }
        for ex in order {
            self.expr(ex, &scope, env);
        }
        self.output(s, &scope)
    }

    /// Checks one expression (and the subqueries in it) in `scope`.
    fn expr(&mut self, e: &Expr, scope: &Scope, env: &HashMap<String, Cols>) {
        let mut found = Found::default();
        let _ = e.visit(&mut found);
        for e in &found.exprs {
            self.column_ref(e, scope);
        }
        for q in &found.subqueries {
            self.query(q, env, Some(scope));
        }
    }

    /// The columns a SELECT produces.
    fn output(&self, s: &Select, scope: &Scope) -> Cols {
        let mut cols = Cols::default();
        for item in &s.projection {
            match item {
                SelectItem::ExprWithAlias { alias, .. } => cols.names.push(self.declared(alias)),
                SelectItem::UnnamedExpr(Expr::Identifier(id)) => cols.names.push(self.declared(id)),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    if let Some(last) = parts.last() {
                        cols.names.push(self.declared(last));
                    }
                }
                SelectItem::UnnamedExpr(_) => cols.open = true,
                SelectItem::Wildcard(_) => {
                    for r in &scope.relations {
                        cols.names.extend(r.cols.names.iter().cloned());
                        cols.open |= r.cols.open;
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let rel = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            n.0.last()
                                .and_then(|p| p.as_ident())
                                .and_then(|id| self.find_relation(scope, id))
                        }
                        SelectItemQualifiedWildcardKind::Expr(_) => None,
                    };
                    match rel {
                        Some(r) => {
                            cols.names.extend(r.cols.names.iter().cloned());
                            cols.open |= r.cols.open;
                        }
                        None => cols.open = true,
                    }
                }
            }
        }
        cols
    }

    /// Adds what a FROM item provides to `scope`, resolving derived tables.
    fn factor(&mut self, f: &TableFactor, env: &HashMap<String, Cols>, scope: &mut Scope) {
        match f {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let last = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .unwrap_or_default();
                let cols = if args.is_some() {
                    Cols::open()
                } else {
                    self.table_columns(name, env)
                };
                let cols = alias
                    .as_ref()
                    .and_then(|a| self.alias_columns(a))
                    .unwrap_or(cols);
                let name = alias.as_ref().map_or(last, |a| self.declared(&a.name));
                scope.relations.push(Relation { name, cols });
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
            } => {
                let produced = if *lateral {
                    // A LATERAL subquery sees the sources before it.
                    let snapshot = Scope {
                        relations: scope.relations.clone(),
                        aliases: Vec::new(),
                        parent: scope.parent,
                    };
                    self.query(subquery, env, Some(&snapshot))
                } else {
                    self.query(subquery, env, scope.parent)
                };
                let cols = alias
                    .as_ref()
                    .and_then(|a| self.alias_columns(a))
                    .unwrap_or(produced);
                let name = alias
                    .as_ref()
                    .map_or_else(String::new, |a| self.declared(&a.name));
                scope.relations.push(Relation { name, cols });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let mut inner = Scope {
                    relations: Vec::new(),
                    aliases: Vec::new(),
                    parent: scope.parent,
                };
                self.factor(&table_with_joins.relation, env, &mut inner);
                for j in &table_with_joins.joins {
                    self.factor(&j.relation, env, &mut inner);
                }
                match alias {
                    Some(a) => scope.relations.push(Relation {
                        name: self.declared(&a.name),
                        cols: Cols::open(),
                    }),
                    None => scope.relations.extend(inner.relations),
                }
            }
            other => {
                let name =
                    table_factor_alias(other).map_or_else(String::new, |a| self.declared(&a.name));
                scope.relations.push(Relation {
                    name,
                    cols: Cols::open(),
                });
            }
        }
    }

    /// Columns of a table named in FROM: a CTE, a table or view of the schema, or something
    /// sqlora cannot see into (system catalogs, other schemas), which accepts any column.
    fn table_columns(&mut self, name: &ObjectName, env: &HashMap<String, Cols>) -> Cols {
        let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
        let Some(last) = parts.last() else {
            return Cols::open();
        };
        if parts.len() == 1 {
            if let Some(c) = env.get(&last.value.to_lowercase()) {
                return c.clone();
            }
        }
        let ns = (parts.len() >= 2).then(|| parts[parts.len() - 2]);
        let matches = |t: &&crate::schema::Table, bare_elsewhere: bool| {
            self.same(last, &t.name)
                && match (ns, &t.schema) {
                    (None, None) => true,
                    (Some(n), Some(s)) => self.same(n, s),
                    // `public.t` for a table in the default schema.
                    (Some(_), None) => true,
                    // PostgreSQL finds a bare name in any schema on the search_path (every
                    // introspected schema is on it), the default one first.
                    (None, Some(_)) => bare_elsewhere,
                }
        };
        let found = self
            .schema
            .tables
            .iter()
            .find(|t| matches(t, false))
            .or_else(|| {
                let pg = self.dialect == Dialect::Postgres;
                self.schema.tables.iter().find(|t| matches(t, pg))
            });
        if let Some(t) = found {
            return Cols {
                names: t.columns.iter().map(|c| c.name.clone()).collect(),
                open: false,
            };
        }
        let lower = last.value.to_lowercase();
        let hidden = ns.is_some_and(|n| {
            !self
                .schema
                .tables
                .iter()
                .any(|t| t.schema.as_deref().is_some_and(|s| self.same(n, s)))
        }) || ["pg_", "sqlite_", "pragma_", "information_schema"]
            .iter()
            .any(|p| lower.starts_with(p))
            || lower == "dual";
        if !hidden {
            let mut names: Vec<String> =
                self.schema.tables.iter().map(|t| t.name.clone()).collect();
            names.extend(env.keys().cloned());
            let sugg = self.suggest(&last.value, names.iter().map(String::as_str));
            self.unknown("table", name.to_string(), sugg);
        }
        Cols::open()
    }

    fn find_relation<'a>(&self, scope: &'a Scope<'a>, id: &Ident) -> Option<&'a Relation> {
        let mut s = Some(scope);
        while let Some(sc) = s {
            if let Some(r) = sc.relations.iter().find(|r| self.same(id, &r.name)) {
                return Some(r);
            }
            s = sc.parent;
        }
        None
    }

    /// Checks one column reference found in an expression.
    fn column_ref(&mut self, e: &Expr, scope: &Scope) {
        match e {
            Expr::Identifier(id) => {
                if PSEUDO_COLUMNS.contains(&id.value.to_lowercase().as_str()) {
                    return;
                }
                let mut s = Some(scope);
                let mut candidates: Vec<String> = Vec::new();
                while let Some(sc) = s {
                    for r in &sc.relations {
                        // PostgreSQL also reads a bare relation name as its whole row.
                        let whole_row = self.dialect == Dialect::Postgres && self.same(id, &r.name);
                        if r.cols.open || r.cols.names.iter().any(|c| self.same(id, c)) || whole_row
                        {
                            return;
                        }
                        candidates.extend(r.cols.names.iter().cloned());
                    }
                    if sc.aliases.iter().any(|a| self.same(id, a)) {
                        return;
                    }
                    s = sc.parent;
                }
                // "Paris" in SQLite or MySQL is a string when no column has that name.
                if id.quote_style == Some('"') && self.dialect != Dialect::Postgres {
                    return;
                }
                let sugg = self.suggest(&id.value, candidates.iter().map(String::as_str));
                self.unknown("column", id.to_string(), sugg);
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = &parts[parts.len() - 1];
                let rel_id = &parts[parts.len() - 2];
                match self.find_relation(scope, rel_id) {
                    Some(r) => {
                        if !r.cols.open
                            && !r.cols.names.iter().any(|c| self.same(col, c))
                            && !PSEUDO_COLUMNS.contains(&col.value.to_lowercase().as_str())
                        {
                            let sugg =
                                self.suggest(&col.value, r.cols.names.iter().map(String::as_str));
                            let sugg = sugg.into_iter().map(|c| format!("{rel_id}.{c}")).collect();
                            let name = parts
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(".");
                            self.unknown("column", name, sugg);
                        }
                    }
                    None => {
                        // Maybe a composite-type field or a schema.table.column we cannot see.
                        if parts.len() > 2 || self.any_open(scope) {
                            return;
                        }
                        let mut names: Vec<&str> = Vec::new();
                        let mut s = Some(scope);
                        while let Some(sc) = s {
                            names.extend(sc.relations.iter().map(|r| r.name.as_str()));
                            s = sc.parent;
                        }
                        let sugg = self.suggest(&rel_id.value, names);
                        self.unknown("table or alias", rel_id.to_string(), sugg);
                    }
                }
            }
            _ => {}
        }
    }

    fn any_open(&self, scope: &Scope) -> bool {
        let mut s = Some(scope);
        while let Some(sc) = s {
            if sc
                .relations
                .iter()
                .any(|r| r.cols.open && r.name.is_empty())
            {
                return true;
            }
            s = sc.parent;
        }
        false
    }
}

fn table_factor_alias(f: &TableFactor) -> Option<&TableAlias> {
    match f {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::JsonTable { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
        _ => None,
    }
}

/// Column references and subqueries of one query level: identifiers inside nested queries
/// belong to those queries and are left for their own pass.
#[derive(Default)]
struct Found {
    depth: usize,
    exprs: Vec<Expr>,
    subqueries: Vec<Query>,
}

impl Visitor for Found {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.subqueries.push(q.clone());
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        // Derived tables are resolved with the FROM clause, not as expression subqueries.
        if let TableFactor::Derived { .. } = f {
            self.depth += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Derived { .. } = f {
            self.depth -= 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth == 0 && matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            self.exprs.push(e.clone());
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Table, TableKind};

    fn table(name: &str, cols: &[&str]) -> Table {
        Table {
            columns: cols.iter().map(|c| Column::new(*c, "TEXT")).collect(),
            ..Table::new(None, name, TableKind::Table)
        }
    }

    fn schema() -> Schema {
        let mut crm = table("lead", &["id", "email"]);
        crm.schema = Some("crm".into());
        Schema {
            tables: vec![
                table("singer", &["Singer_ID", "Name", "Country", "Age"]),
                table("concert", &["concert_ID", "Stadium_ID", "Year"]),
                table("singer_in_concert", &["concert_ID", "Singer_ID"]),
                crm,
            ],
        }
    }

    fn run(sql: &str, d: Dialect) -> Result<(), String> {
        let st = crate::guard::check(sql, d)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .statement;
        check_names(&st, &schema(), d).map_err(|u| {
            u.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[test]
    fn names_resolve_through_aliases_ctes_subqueries_and_set_operations() {
        for sql in [
            "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
            "WITH c AS (SELECT Country, count(*) AS n FROM singer GROUP BY Country) SELECT Country FROM c WHERE n > 1",
            "SELECT x.n FROM (SELECT count(*) AS n FROM singer) AS x",
            "SELECT Name FROM singer s WHERE Age > (SELECT avg(Age) FROM singer WHERE Country = s.Country)",
            "SELECT Name FROM singer WHERE EXISTS (SELECT 1 FROM singer_in_concert c WHERE c.Singer_ID = singer.Singer_ID)",
            "SELECT * FROM singer",
            "SELECT s.* FROM singer s",
            "SELECT Name AS n FROM singer ORDER BY n",
            "SELECT count(*) AS total FROM singer HAVING total > 1",
            "SELECT Name FROM singer JOIN singer_in_concert USING (Singer_ID)",
            "SELECT Name, concert_ID FROM singer NATURAL JOIN singer_in_concert",
            "SELECT crm.lead.email FROM crm.lead",
            "SELECT Name FROM singer UNION SELECT Stadium_ID FROM concert ORDER BY Name",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT i FROM n",
            "SELECT name FROM sqlite_master",
            "SELECT NAME, age FROM SINGER",
            "SELECT Name FROM singer WHERE Country = \"France\"",
            "SELECT rowid, Name FROM singer",
            "SELECT email FROM crm.lead",
            "SELECT y.Name FROM (SELECT * FROM singer) y",
            "SELECT a FROM (VALUES (1)) AS v(a)",
            "SELECT count(DISTINCT Country), max(Age) FILTER (WHERE Age > 3) FROM singer",
            "SELECT Name, rank() OVER (PARTITION BY Country ORDER BY Age) FROM singer",
            "SELECT CURRENT_DATE, Name FROM singer",
            "EXPLAIN SELECT Name FROM singer",
        ] {
            assert_eq!(run(sql, Dialect::Sqlite), Ok(()), "{sql}");
        }
    }

    #[test]
    fn postgres_finds_bare_names_along_the_search_path() {
        // `crm.lead` is on the search_path (introspected), so PostgreSQL resolves `lead`;
        // SQLite has no such path.
        assert_eq!(run("SELECT email FROM lead", Dialect::Postgres), Ok(()));
        assert!(run("SELECT email FROM lead", Dialect::Sqlite).is_err());
        assert!(run("SELECT nope FROM lead", Dialect::Postgres)
            .unwrap_err()
            .contains("unknown column `nope`"));
    }

    #[test]
    fn invented_names_are_named_with_suggestions() {
        let d = Dialect::Sqlite;
        assert_eq!(
            run("SELECT nme FROM singer", d).unwrap_err(),
            "unknown column `nme` (did you mean `Name`?)"
        );
        assert_eq!(
            run(
                "SELECT T2.amount FROM singer T1 JOIN concert T2 ON T1.Singer_ID = T2.concert_ID",
                d
            )
            .unwrap_err(),
            "unknown column `T2.amount`"
        );
        assert_eq!(
            run("SELECT T2.Yaer FROM concert T2", d).unwrap_err(),
            "unknown column `T2.Yaer` (did you mean `T2.Year`?)"
        );
        assert_eq!(
            run("SELECT * FROM singers", d).unwrap_err(),
            "unknown table `singers` (did you mean `singer`?)"
        );
        assert!(run("SELECT T3.Name FROM singer T1", d)
            .unwrap_err()
            .contains("unknown table or alias `T3` (did you mean `T1`?)"));
        // Inside a subquery, and an unknown name in ORDER BY.
        assert!(run(
            "SELECT Name FROM singer WHERE Singer_ID IN (SELECT singer FROM singer_in_concert)",
            d
        )
        .unwrap_err()
        .contains("unknown column `singer`"));
        assert!(run("SELECT Name FROM singer ORDER BY height", d)
            .unwrap_err()
            .contains("unknown column `height`"));
        // A CTE's columns are what it selects.
        assert!(
            run("WITH c AS (SELECT Name FROM singer) SELECT Age FROM c", d)
                .unwrap_err()
                .contains("unknown column `Age`")
        );
    }

    #[test]
    fn each_dialect_keeps_its_case_and_quote_rules() {
        let pg = Dialect::Postgres;
        // PostgreSQL folds unquoted names: `Name` means `name`, which does not exist.
        assert!(run("SELECT Name FROM singer", pg)
            .unwrap_err()
            .contains("unknown column `Name`"));
        assert_eq!(run("SELECT \"Name\" FROM singer", pg), Ok(()));
        // ...and double quotes are always identifiers there.
        assert!(run(
            "SELECT \"Name\" FROM singer WHERE \"Country\" = \"France\"",
            pg
        )
        .is_err());
        // An unquoted alias is folded too, so `N` and `n` are the same name.
        assert_eq!(
            run("SELECT \"Name\" AS N FROM singer ORDER BY n", pg),
            Ok(())
        );
        // MySQL: backticks quote; names match regardless of case.
        assert_eq!(
            run(
                "SELECT `name` FROM singer WHERE country = 'x'",
                Dialect::MySql
            ),
            Ok(())
        );
        assert!(run("SELECT `nam` FROM singer", Dialect::MySql).is_err());
    }
}
