//! Which functions an answer may call: an allow-list per dialect, not a deny-list.
//!
//! The lists are data (`functions/*.txt`: the names every dialect shares, then each dialect's
//! own), the ordinary pure functions — string, numeric, date/time, conditional, aggregate,
//! window, JSON readers, and the table functions that only produce rows. A call to anything
//! else, wherever it appears (select list, WHERE, ORDER BY, a window, FROM, LATERAL, a join),
//! is refused with its name. An administrator adds names in the config file; nothing here
//! reads files itself: the caller installs the extended [`Policy`] once at start-up.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use sqlparser::ast::{Ident, ObjectName};

use crate::sql::Dialect;

const COMMON: &str = include_str!("functions/common.txt");
const SQLITE: &str = include_str!("functions/sqlite.txt");
const POSTGRES: &str = include_str!("functions/postgres.txt");
const MYSQL: &str = include_str!("functions/mysql.txt");

const DIALECTS: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql];

/// The names in one list file: a name a line, `#` comments, blank lines ignored.
fn names(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_ascii_lowercase)
}

/// The functions answers may call, per dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    allowed: [BTreeSet<String>; 3],
    /// How many names the administrator added, per dialect.
    added: [usize; 3],
}

fn slot(d: Dialect) -> usize {
    match d {
        Dialect::Sqlite => 0,
        Dialect::Postgres => 1,
        Dialect::MySql => 2,
    }
}

impl Policy {
    /// The built-in lists.
    pub fn builtin() -> Policy {
        let list = |own: &str| names(COMMON).chain(names(own)).collect::<BTreeSet<_>>();
        Policy {
            allowed: [list(SQLITE), list(POSTGRES), list(MYSQL)],
            added: [0; 3],
        }
    }

    /// Adds names (plain `f` or schema-qualified `schema.f`, any case) for `dialect`.
    /// A name must look like an identifier: letters, digits, `_`, `$`, one `.` at most.
    pub fn allow(&mut self, dialect: Dialect, extra: &[String]) -> Result<(), String> {
        for name in extra {
            let n = name.trim().to_ascii_lowercase();
            let ok = !n.is_empty()
                && n.split('.').count() <= 2
                && n.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                });
            if !ok {
                return Err(format!(
                    "`{name}` is not a function name (write `name` or `schema.name`)"
                ));
            }
            if self.allowed[slot(dialect)].insert(n) {
                self.added[slot(dialect)] += 1;
            }
        }
        Ok(())
    }

    /// How many functions `dialect` allows, and how many of them the administrator added.
    pub fn size(&self, dialect: Dialect) -> (usize, usize) {
        (self.allowed[slot(dialect)].len(), self.added[slot(dialect)])
    }

    /// The allowed names of `dialect`, sorted.
    pub fn names(&self, dialect: Dialect) -> impl Iterator<Item = &str> {
        self.allowed[slot(dialect)].iter().map(String::as_str)
    }

    /// Whether `name` (as written in a query) is an allowed function of `dialect`.
    pub fn allows(&self, dialect: Dialect, name: &ObjectName) -> bool {
        let parts: Option<Vec<String>> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| normal(i, dialect)))
            .collect();
        let Some(parts) = parts else {
            return false;
        };
        let set = &self.allowed[slot(dialect)];
        match parts.as_slice() {
            [one] => set.contains(one),
            // PostgreSQL's built-ins live in pg_catalog, and may be called by that name.
            [schema, f] if dialect == Dialect::Postgres && schema == "pg_catalog" => {
                set.contains(f) && !f.contains('.')
            }
            [schema, f] => set.contains(&format!("{schema}.{f}")),
            _ => false,
        }
    }
}

/// A name part as the database resolves it: PostgreSQL folds unquoted names to lower case and
/// keeps quoted ones as written (so `"UPPER"` is not `upper`); SQLite and MySQL compare
/// function names without regard to case.
fn normal(i: &Ident, dialect: Dialect) -> String {
    match (dialect, i.quote_style) {
        (Dialect::Postgres, Some(_)) => i.value.clone(),
        _ => i.value.to_ascii_lowercase(),
    }
}

static INSTALLED: OnceLock<Policy> = OnceLock::new();

/// Makes `policy` the one [`current`] returns, for the rest of the process. Call it once at
/// start-up, before the first check; a second call with another policy is an error (the
/// first stays).
pub fn install(policy: Policy) -> Result<(), String> {
    match INSTALLED.set(policy) {
        Ok(()) => Ok(()),
        Err(p) if INSTALLED.get() == Some(&p) => Ok(()),
        Err(_) => Err("the function allow-list is already in use".to_string()),
    }
}

/// The policy in force: the installed one, else the built-in lists.
pub fn current() -> &'static Policy {
    static BUILTIN: OnceLock<Policy> = OnceLock::new();
    INSTALLED
        .get()
        .unwrap_or_else(|| BUILTIN.get_or_init(Policy::builtin))
}

/// One line on the lists' sizes, e.g. for `sqlora doctor`-style output and the closing note.
pub fn summary(policy: &Policy) -> String {
    DIALECTS
        .iter()
        .map(|&d| {
            let (n, added) = policy.size(d);
            if added > 0 {
                format!("{} {n} ({added} added)", d.name())
            } else {
                format!("{} {n}", d.name())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ObjectName {
        let parser = sqlparser::dialect::PostgreSqlDialect {};
        sqlparser::parser::Parser::new(&parser)
            .try_with_sql(s)
            .unwrap()
            .parse_object_name(false)
            .unwrap()
    }

    #[test]
    fn the_lists_are_clean_data() {
        for text in [COMMON, SQLITE, POSTGRES, MYSQL] {
            for n in names(text) {
                assert!(
                    n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "`{n}` is not a plain function name"
                );
            }
        }
        // No name twice within a dialect's own file, nor repeated from the common list.
        let common: BTreeSet<String> = names(COMMON).collect();
        for text in [SQLITE, POSTGRES, MYSQL] {
            let mut seen = BTreeSet::new();
            for n in names(text) {
                assert!(!common.contains(&n), "`{n}` is already in common.txt");
                assert!(seen.insert(n.clone()), "`{n}` is listed twice");
            }
        }
    }

    #[test]
    fn the_readme_gives_the_lists_sizes() {
        let readme = include_str!("../../README.md");
        let p = Policy::builtin();
        for (d, words) in [
            (Dialect::Sqlite, "names for SQLite"),
            (Dialect::Postgres, "for PostgreSQL"),
            (Dialect::MySql, "for MySQL/MariaDB"),
        ] {
            let said = format!("{} {words}", p.size(d).0);
            assert!(
                readme
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(&said),
                "README.md should say `{said}`"
            );
        }
    }

    #[test]
    fn dangerous_functions_are_not_on_any_list() {
        let p = Policy::builtin();
        for (d, bad) in [
            (Dialect::Postgres, "pg_read_file"),
            (Dialect::Postgres, "pg_ls_dir"),
            (Dialect::Postgres, "lo_export"),
            (Dialect::Postgres, "lo_import"),
            (Dialect::Postgres, "pg_terminate_backend"),
            (Dialect::Postgres, "pg_cancel_backend"),
            (Dialect::Postgres, "pg_create_physical_replication_slot"),
            (Dialect::Postgres, "pg_stat_reset"),
            (Dialect::Postgres, "pg_try_advisory_lock_shared"),
            (Dialect::Postgres, "pg_import_system_collations"),
            (Dialect::Postgres, "set_config"),
            (Dialect::Postgres, "nextval"),
            (Dialect::Postgres, "dblink"),
            (Dialect::Postgres, "query_to_xml"),
            (Dialect::Postgres, "pg_sleep"),
            (Dialect::Postgres, "current_setting"),
            (Dialect::MySql, "load_file"),
            (Dialect::MySql, "sleep"),
            (Dialect::MySql, "benchmark"),
            (Dialect::MySql, "get_lock"),
            (Dialect::MySql, "last_insert_id"),
            (Dialect::Sqlite, "load_extension"),
            (Dialect::Sqlite, "readfile"),
            (Dialect::Sqlite, "writefile"),
            (Dialect::Sqlite, "edit"),
        ] {
            assert!(!p.allows(d, &name(bad)), "{bad} is allowed in {d:?}");
        }
    }

    #[test]
    fn names_resolve_as_the_database_does() {
        let p = Policy::builtin();
        let pg = Dialect::Postgres;
        assert!(p.allows(pg, &name("upper")));
        assert!(p.allows(pg, &name("UPPER")));
        assert!(p.allows(pg, &name("pg_catalog.upper")));
        // A quoted mixed-case name is another function in PostgreSQL.
        assert!(!p.allows(pg, &name("\"UPPER\"")));
        assert!(!p.allows(pg, &name("public.upper")));
        assert!(p.allows(Dialect::MySql, &name("DATE_FORMAT")));
        assert!(!p.allows(Dialect::MySql, &name("shop.date_format")));
        assert!(p.allows(Dialect::Sqlite, &name("strftime")));
        assert!(!p.allows(Dialect::Sqlite, &name("date_format")));
    }

    #[test]
    fn an_administrator_can_add_names() {
        let mut p = Policy::builtin();
        let before = p.size(Dialect::Postgres).0;
        p.allow(
            Dialect::Postgres,
            &["Similarity".into(), "analytics.safe_total".into()],
        )
        .unwrap();
        assert_eq!(p.size(Dialect::Postgres), (before + 2, 2));
        assert!(p.allows(Dialect::Postgres, &name("similarity")));
        assert!(p.allows(Dialect::Postgres, &name("analytics.safe_total")));
        assert!(!p.allows(Dialect::Postgres, &name("safe_total")));
        assert!(!p.allows(Dialect::MySql, &name("similarity")));
        assert!(p.allow(Dialect::MySql, &["x; drop".into()]).is_err());
        assert!(p.allow(Dialect::MySql, &["a.b.c".into()]).is_err());
        assert!(summary(&p).contains("(2 added)"));
    }
}
