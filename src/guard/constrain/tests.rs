//! Unit tests of constrained decoding: table, qualified and expression slots, scopes (aliases
//! before their FROM, subqueries, CTEs), quoting in each dialect, free regions (strings,
//! comments, the closing fence) and tokens of several words or partial UTF-8. Never reads
//! files or touches a database.

use super::*;
use crate::schema::{Column, TableKind};

fn table(name: &str, cols: &[&str]) -> Table {
    Table {
        columns: cols.iter().map(|c| Column::new(*c, "TEXT")).collect(),
        ..Table::new(None, name, TableKind::Table)
    }
}

fn tables() -> Vec<Table> {
    vec![
        table("singer", &["Singer_ID", "Name", "Country", "Age"]),
        table(
            "concert",
            &["concert_ID", "concert_Name", "Stadium_ID", "Year"],
        ),
        table("singer_in_concert", &["concert_ID", "Singer_ID"]),
        table("Order Details", &["OrderID", "Unit Price"]),
        table("Orders", &["OrderID", "Freight"]),
        table("city", &["name", "pop"]),
    ]
}

fn names(d: Dialect) -> Names {
    let t = tables();
    let refs: Vec<&Table> = t.iter().collect();
    Names::new(&refs, d)
}

fn ok(n: &Names, sql: &str, tok: &str) -> bool {
    n.state(sql).allows(tok.as_bytes())
}

/// Every split of `sql` into "so far" and a token of 1..=6 bytes is allowed.
fn forced(n: &Names, sql: &str) -> Result<(), String> {
    let b = sql.as_bytes();
    for i in 0..b.len() {
        let st = n.state(std::str::from_utf8(&b[..i]).unwrap_or(""));
        if !sql.is_char_boundary(i) {
            continue;
        }
        for j in i + 1..=(i + 6).min(b.len()) {
            if !st.allows(&b[i..j]) {
                return Err(format!(
                    "{:?} | {:?}",
                    &sql[..i],
                    String::from_utf8_lossy(&b[i..j])
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn table_slot_takes_shown_tables_only() {
    let n = names(Dialect::Sqlite);
    assert!(ok(&n, "SELECT * FROM", " singer"));
    assert!(ok(&n, "SELECT * FROM ", "Singer"));
    assert!(ok(&n, "SELECT * FROM sing", "er "));
    assert!(!ok(&n, "SELECT * FROM ", "singr"));
    assert!(!ok(&n, "SELECT * FROM singr", " "));
    assert!(!ok(&n, "SELECT * FROM singer JOIN ", "concerts "));
    assert!(ok(&n, "SELECT * FROM singer JOIN ", "concert "));
    assert!(ok(&n, "SELECT * FROM singer, ", "city"));
    assert!(!ok(&n, "SELECT * FROM singer, ", "town"));
    // A name that needs quotes is valid quoted only, in exact case.
    assert!(ok(&n, "SELECT * FROM ", "\"Order Details\""));
    assert!(ok(&n, "SELECT * FROM \"Order", " Det"));
    assert!(!ok(&n, "SELECT * FROM \"Order", "\" "));
    assert!(!ok(&n, "SELECT * FROM ", "\"order details\""));
    assert!(!ok(&n, "SELECT * FROM Order", " "));
    assert!(ok(&n, "SELECT * FROM Order", "s "));
    // A subquery may stand where a table does.
    assert!(ok(&n, "SELECT * FROM (", "SELECT"));
    assert!(ok(&n, "SELECT * FROM ", "(SELECT"));
}

#[test]
fn each_dialect_quotes_its_way() {
    let pg = names(Dialect::Postgres);
    assert!(ok(&pg, "SELECT * FROM ", "\"Order Details\" o"));
    assert!(ok(&pg, "SELECT \"Name\" FROM singer WHERE ", "\"Age\" > 1"));
    assert!(!ok(
        &pg,
        "SELECT \"Name\" FROM singer WHERE ",
        "\"Agee\" > 1"
    ));
    // PostgreSQL folds `Name` to `name`, which singer lacks; `city.name` is fine.
    assert!(!ok(&pg, "SELECT s.", "Country FROM"));
    assert!(ok(
        &pg,
        "SELECT c.name FROM city AS c WHERE c.",
        "name = 'x'"
    ));
    // A backtick is the closing fence there.
    assert!(pg.state("SELECT 1 `").is_free());
    let my = names(Dialect::MySql);
    assert!(ok(&my, "SELECT * FROM ", "`Order Details`"));
    assert!(!ok(&my, "SELECT * FROM ", "`Order Detail`"));
    assert!(ok(
        &my,
        "SELECT `Unit Price` FROM `Order Details` WHERE ",
        "`OrderID` = 1"
    ));
    assert!(!ok(
        &my,
        "SELECT `Unit Price` FROM `Order Details` WHERE ",
        "`Orderid2`"
    ));
    // Double quotes are strings in MySQL and SQLite expressions.
    assert!(ok(
        &my,
        "SELECT Name FROM singer WHERE Country = ",
        "\"Frnce\""
    ));
    let lite = names(Dialect::Sqlite);
    assert!(ok(
        &lite,
        "SELECT Name FROM singer WHERE Country = ",
        "\"Frnce\""
    ));
    assert!(ok(&lite, "SELECT * FROM ", "[Order Details]"));
    assert!(ok(&lite, "SELECT * FROM ", "`Orders`"));
    // After `X.` a backtick opens a quoted name, checked as any (seen on the adapter's SQLite
    // answers: `T2.\`Year\`` of a table without that column).
    assert!(ok(&lite, "SELECT T1.", "`Name` FROM singer AS T1"));
    assert!(!ok(
        &lite,
        "SELECT T1.Name FROM singer AS T1 WHERE T1.",
        "`Year`"
    ));
    // "``" closes the answer's code fence in every dialect.
    for n in [&pg, &my, &lite] {
        assert!(ok(n, "SELECT Name FROM singer\n", "```"));
        assert!(n.state("SELECT Name FROM singer\n``").is_free());
    }
}

#[test]
fn qualified_names_follow_aliases() {
    let n = names(Dialect::Sqlite);
    let sql = "SELECT * FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID = T2.";
    assert!(ok(&n, sql, "Year"));
    assert!(ok(&n, sql, "concert_ID "));
    assert!(!ok(&n, sql, "Name"));
    assert!(ok(&n, "SELECT T1.", "Name FROM"));
    assert!(ok(&n, "SELECT * FROM singer AS T1 WHERE T1.", "name"));
    assert!(!ok(&n, "SELECT * FROM singer AS T1 WHERE T1.", "nam "));
    assert!(ok(&n, "SELECT * FROM singer T1 WHERE T1", ".Age > 3"));
    assert!(!ok(&n, "SELECT * FROM singer T1 WHERE T1", ".Year > 3"));
    // An alias used before its FROM is not held to the table it is given (the guard names
    // the column that does not fit; refusing the alias made the model glue words together).
    let sql = "SELECT T1.Name FROM concert AS ";
    assert!(ok(&n, sql, "T1 "));
    assert!(ok(&n, sql, "T2 "));
    // Unknown words before FROM: only as qualifiers, and only as short as an alias.
    assert!(ok(&n, "SELECT ", "xq"));
    assert!(ok(&n, "SELECT xq", "."));
    assert!(!ok(&n, "SELECT xq", " "));
    assert!(!ok(&n, "SELECT xq", ","));
    assert!(ok(&n, "SELECT ", "T12."));
    assert!(!ok(&n, "SELECT ", "pet_type_from"));
    assert!(!ok(&n, "SELECT AVG(", "PetAgeAS"));
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "xq."));
}

#[test]
fn keywords_functions_and_tables_only_where_they_fit() {
    let n = names(Dialect::Sqlite);
    // A date part is no column: `Year` passes only where the table has one, or inside
    // parentheses as a date part.
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "Year = 2014"));
    assert!(ok(&n, "SELECT Name FROM concert WHERE ", "Year = 2014"));
    assert!(ok(&n, "SELECT EXTRACT(", "YEAR FROM "));
    assert!(ok(&n, "SELECT CAST(Age AS ", "INTEGER)"));
    // A function only before its parenthesis.
    assert!(ok(&n, "SELECT Name FROM singer ORDER BY ", "count(*)"));
    assert!(!ok(&n, "SELECT Name FROM singer ORDER BY ", "Power, Age"));
    assert!(ok(&n, "SELECT Name FROM singer ORDER BY ", "count (*)"));
    assert!(ok(&n, "SELECT Name FROM singer ORDER BY ", "power(Age, 2)"));
    // A table only before its dot.
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "singer IS NULL"));
    assert!(ok(&n, "SELECT Name FROM singer WHERE ", "singer.Age > 1"));
    assert!(!ok(&n, "SELECT ", "concert,"));
    // Once the FROM is known, only its relations qualify (an outer query's too).
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "concert."));
    assert!(ok(
        &n,
        "SELECT Name FROM singer WHERE EXISTS (SELECT 1 FROM concert WHERE ",
        "singer."
    ));
    assert!(ok(&n, "SELECT ", "concert."));
    // A date part cannot even be begun where it cannot stand; a type name never in an
    // expression.
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "YEAR"));
    assert!(!ok(&n, "SELECT Name FROM singer ORDER BY abs(", "TEXT)"));
    assert!(ok(&n, "SELECT CAST(Age AS ", "TEXT)"));
}

#[test]
fn expression_slots_see_their_scope() {
    let n = names(Dialect::Sqlite);
    assert!(ok(&n, "SELECT Name FROM singer WHERE ", "Age > 3"));
    assert!(!ok(&n, "SELECT Name FROM singer WHERE ", "Stadium_ID > 3"));
    assert!(ok(&n, "SELECT Name FROM singer WHERE Age > ", "3 ORDER BY"));
    assert!(ok(&n, "SELECT Name FROM singer ORDER BY ", "count(*) DESC"));
    assert!(ok(
        &n,
        "SELECT count(*) AS total FROM singer ORDER BY ",
        "total"
    ));
    // Before FROM every shown column is possible.
    assert!(ok(&n, "SELECT ", "Year, Name FROM"));
    assert!(!ok(&n, "SELECT ", "Yaer, Name"));
    // Subqueries: their own scope, seeing the outer one.
    let sql = "SELECT Name FROM singer WHERE Singer_ID IN (SELECT ";
    assert!(ok(&n, sql, "Year"));
    let sql = "SELECT Name FROM singer WHERE Singer_ID IN (SELECT Singer_ID FROM singer_in_concert WHERE ";
    assert!(ok(&n, sql, "concert_ID = 1"));
    assert!(ok(&n, sql, "Age > 1"));
    assert!(!ok(&n, sql, "Stadium_ID > 1"));
    assert!(ok(&n, &format!("{sql}concert_ID = 1)"), " AND Age > 1"));
    assert!(!ok(
        &n,
        &format!("{sql}concert_ID = 1)"),
        " AND concert_Name"
    ));
    // EXTRACT(YEAR FROM x) and friends are no table slot.
    let sql = "SELECT Name FROM singer WHERE extract(";
    assert!(ok(&n, sql, "YEAR FROM Age)"));
    assert!(ok(&n, "SELECT substr(Name FROM", " Age) FROM singer"));
    assert!(ok(&n, "SELECT CAST(Age AS ", "INTEGER) FROM singer"));
    assert!(ok(&n, "SELECT Age::", "numeric FROM singer"));
}

#[test]
fn ctes_and_derived_tables() {
    let n = names(Dialect::Sqlite);
    let sql = "WITH c AS (SELECT Country, count(*) AS k FROM singer GROUP BY Country) SELECT ";
    assert!(ok(&n, sql, "Country FROM c"));
    assert!(ok(&n, &format!("{sql}Country FROM "), "c WHERE"));
    assert!(ok(&n, &format!("{sql}Country FROM c WHERE "), "k > 1"));
    assert!(ok(&n, &format!("{sql}* FROM c WHERE c."), "anything"));
    let sql = "WITH c(a, b) AS (SELECT Name, Age FROM singer) SELECT * FROM c WHERE c.";
    assert!(ok(&n, sql, "a"));
    assert!(!ok(&n, sql, "Name "));
    let sql = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE ";
    assert!(ok(&n, sql, "i < 5"));
    let sql = "SELECT x.n FROM (SELECT count(*) AS n FROM singer) AS x WHERE x.";
    assert!(ok(&n, sql, "n > 1"));
    assert!(ok(&n, "SELECT * FROM (SELECT Name FROM singer) ", "AS y"));
}

#[test]
fn strings_comments_and_the_end_are_free() {
    let n = names(Dialect::Sqlite);
    let st = n.state("SELECT Name FROM singer WHERE Name = 'it''s");
    assert!(st.in_text() && !st.is_free());
    assert!(st.allows(b"' AND Age"));
    assert!(!st.allows(b"' AND Agee "));
    assert!(n.state("SELECT Name -- x").in_text());
    assert!(ok(&n, "SELECT Name FROM singer WHERE Name = '", "zzz qq'"));
    assert!(ok(&n, "SELECT Name FROM singer WHERE Name = 'a''", "b'"));
    assert!(!ok(
        &n,
        "SELECT Name FROM singer WHERE Name = 'a' AND ",
        "zzz "
    ));
    assert!(ok(&n, "SELECT Name -- ", "whatever"));
    assert!(ok(&n, "SELECT Name /* nope", " nix */ FROM singer"));
    assert!(!ok(&n, "SELECT Name /* nope */ FROM ", "nix "));
    assert!(n.state("SELECT Name FROM singer;").is_free());
    assert!(n.state("PRAGMA table_info(x)").is_free());
    assert!(ok(&n, "SELECT Name FROM singer WHERE Age > ", "$1"));
    assert!(ok(
        &n,
        "SELECT Name FROM singer WHERE Name = ",
        "X'00' OR Age"
    ));
    let my = names(Dialect::MySql);
    assert!(ok(
        &my,
        "SELECT Name FROM singer WHERE Name = 'it\\",
        "'s x y' AND Age"
    ));
    assert!(!ok(
        &my,
        "SELECT Name FROM singer WHERE Name = 'it\\'s' AND ",
        "Agee "
    ));
    assert!(ok(&my, "SELECT Name FROM singer # ", "any words"));
    // SQLite reads no backslash escapes: `'it\'` ends there and `s'` opens a string.
    assert!(n
        .state("SELECT Name FROM singer WHERE Name = 'it\\'s' AND ")
        .in_text());
    assert!(ok(&n, "SELECT Name FROM singer WHERE Age > ", "?"));
}

#[test]
fn tokens_of_several_words_and_partial_utf8() {
    let n = names(Dialect::Sqlite);
    assert!(ok(&n, "SELECT count(*", ") AS"));
    assert!(ok(&n, "SELECT T1", ".Name"));
    assert!(ok(&n, "SELECT Singer", "_ID,"));
    assert!(ok(&n, "SELECT Name", " FROM"));
    assert!(!ok(&n, "SELECT Name FROM singer", " WHERE Yaer"));
    assert!(ok(&n, "SELECT Name FROM singer", "\n"));
    assert!(!ok(&n, "SELECT Name FROM singr", "\n"));
    // Bytes of a multi-byte character are name bytes.
    let t = [table("café", &["prix"])];
    let refs: Vec<&Table> = t.iter().collect();
    let u = Names::new(&refs, Dialect::Sqlite);
    assert!(u.state("SELECT * FROM \"caf").allows(&[0xc3]));
    assert!(u
        .state("SELECT * FROM \"caf\u{e9}")
        .allows(b"\" WHERE prix"));
    assert!(!u.state("SELECT * FROM \"caf").allows(&[0xc4]));
    assert!(!u
        .state("SELECT * FROM \"caf\u{e9}\" WHERE pri")
        .allows(&[0xc3]));
    // A name that needs no quotes may hold such bytes too.
    assert!(!n
        .state("SELECT Name FROM singer WHERE Name")
        .allows(&[0xc3]));
    assert!(n
        .state("SELECT Name FROM singer WHERE Name = 'x")
        .allows(&[0xc3]));
}

#[test]
fn teacher_forced_queries_pass_and_typos_do_not() {
    let n = names(Dialect::Sqlite);
    for sql in [
        "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID WHERE T2.concert_ID IN (SELECT concert_ID FROM concert WHERE Year > 2014) ORDER BY T1.Age DESC LIMIT 3",
        "SELECT Country, count(*) FROM singer GROUP BY Country HAVING count(*) > 1",
        "SELECT Name FROM singer EXCEPT SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
        "SELECT * FROM \"Order Details\" WHERE \"Unit Price\" > 3",
    ] {
        assert_eq!(forced(&n, sql), Ok(()), "{sql}");
    }
    assert!(forced(&n, "SELECT T1.Nam FROM singer AS T1").is_err());
    assert!(forced(&n, "SELECT Name FROM singer WHERE Stadium_ID > 1").is_err());
}

#[test]
fn what_the_guard_accepts_is_allowed() {
    // The queries the guard's own name check accepts (`names.rs`), over its schema.
    let mut crm = table("lead", &["id", "email"]);
    crm.schema = Some("crm".into());
    let t = [
        table("singer", &["Singer_ID", "Name", "Country", "Age"]),
        table("concert", &["concert_ID", "Stadium_ID", "Year"]),
        table("singer_in_concert", &["concert_ID", "Singer_ID"]),
        crm,
    ];
    let refs: Vec<&Table> = t.iter().collect();
    for d in [Dialect::Sqlite, Dialect::MySql] {
        let n = Names::new(&refs, d);
        for sql in [
            "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
            "WITH c AS (SELECT Country, count(*) AS n FROM singer GROUP BY Country) SELECT Country FROM c WHERE n > 1",
            "SELECT Name FROM (SELECT Name, count(*) AS n FROM singer) AS x WHERE x.n > 1",
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
            "SELECT NAME, age FROM SINGER",
            "SELECT rowid, Name FROM singer",
            "SELECT email FROM crm.lead",
            "SELECT y.Name FROM (SELECT * FROM singer) y",
            "SELECT Name FROM singer, (VALUES (1)) AS v(a) WHERE v.a = Age",
            "SELECT count(DISTINCT Country), max(Age) FILTER (WHERE Age > 3) FROM singer",
            "SELECT Name, rank() OVER (PARTITION BY Country ORDER BY Age) FROM singer",
            "SELECT CURRENT_DATE, Name FROM singer",
            "EXPLAIN SELECT Name FROM singer",
            "SELECT Name FROM singer WHERE Country = 'x' ORDER BY Age DESC LIMIT 3",
        ] {
            assert_eq!(forced(&n, sql), Ok(()), "{d:?}: {sql}");
        }
    }
    // PostgreSQL: names with capitals are quoted.
    let n = Names::new(&refs, Dialect::Postgres);
    for sql in [
        "SELECT \"Name\" FROM singer WHERE \"Country\" = 'x'",
        "SELECT s.\"Name\" FROM singer AS s JOIN singer_in_concert AS c ON s.\"Singer_ID\" = c.\"Singer_ID\"",
        "SELECT email FROM lead",
        "SELECT l.email FROM crm.lead AS l",
        "SELECT \"Age\"::numeric / 2 FROM singer",
        "SELECT EXTRACT(YEAR FROM now()) FROM singer",
    ] {
        assert_eq!(forced(&n, sql), Ok(()), "{sql}");
    }
    // Refused by design though the guard lets them through: hidden catalogs are no table
    // shown to the model, and an alias used before its FROM is taken for a shown table (the
    // common case, `SELECT T1.name FROM singer AS T1`), not for a subquery's output.
    let n = Names::new(&refs, Dialect::Sqlite);
    assert!(forced(&n, "SELECT name FROM sqlite_master").is_err());
    assert!(forced(
        &n,
        "SELECT x.n FROM (SELECT count(*) AS n FROM singer) AS x"
    )
    .is_err());
    assert!(forced(&n, "SELECT n FROM (SELECT count(*) AS n FROM singer) AS x").is_err());
    assert!(forced(&n, "SELECT a FROM (VALUES (1)) AS v(a)").is_err());
}

#[test]
fn names_can_be_shared_and_garbage_never_panics() {
    fn shared<T: Send + Sync>() {}
    shared::<Names>();
    shared::<State<'static>>();
    let pieces = [
        "SELECT", " FROM", " singer", " T1", ".", "Name", "(", ")", ",", " AS", " WHERE", "'",
        "\"", "`", "[", "]", "--", "/*", "*/", "\n", ";", "::", " JOIN", " ON", " = ", "WITH",
        " c", "é", "中", "$1", " UNION ", " x", "*", " LATERAL", " (SELECT", "\\", "#", "0.5",
    ];
    for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
        let n = names(d);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            let mut sql = String::new();
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                sql.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
                let st = n.state(&sql);
                for p in pieces {
                    let _ = st.allows(p.as_bytes());
                }
                let _ = st.allows(&[0xe4, 0xb8]);
                let _ = st.allows(b"");
            }
        }
    }
}

#[test]
fn a_repair_takes_an_early_alias_for_the_table_the_failed_answer_gave_it() {
    let n = names(Dialect::Sqlite);
    let failed = "SELECT T1.Name, COUNT(*) FROM concert AS T1 JOIN singer_in_concert AS T2 \
                  ON T1.concert_ID = T2.concert_ID GROUP BY T1.concert_ID";
    // Without a hint, T1 before its FROM may be any shown table: `Name` (singer's) passes.
    assert!(ok(&n, "SELECT T1.", "Name,"));
    let h = n.hinted_by(failed);
    assert!(!ok(&h, "SELECT T1.", "Name,"), "concert has no column Name");
    assert!(ok(&h, "SELECT T1.", "concert_Name,"));
    assert!(ok(&h, "SELECT T2.", "Singer_ID"));
    assert!(!ok(&h, "SELECT T2.", "Country"));
    // An alias the failed answer did not use is as free as before.
    assert!(ok(&h, "SELECT T3.", "Name,"));
    // Once the repair's own FROM says what T1 is, that wins.
    assert!(ok(&h, "SELECT T1.Name FROM singer AS T1 WHERE T1.", "Name"));
    // A table named by itself is no alias to remember.
    assert!(n
        .hinted_by("SELECT singer.Name FROM singer")
        .hints
        .is_empty());
    // The gold SQL still passes under a hint from a wrong answer.
    forced(&h, "SELECT T1.concert_Name FROM concert AS T1").unwrap();
}

#[test]
fn a_from_ends_only_once_its_tables_have_the_columns_used_before_it() {
    // Off unless asked for (the last round of an answer).
    let off = names(Dialect::Sqlite);
    assert!(ok(&off, "SELECT Name FROM concert", " WHERE"));
    let n = names(Dialect::Sqlite).covering_from();
    // `Name` is a singer's column: a FROM of concert alone may not end…
    let sql = "SELECT Name FROM concert";
    for end in [
        " WHERE", " ORDER", " GROUP", " LIMIT", ";", "\n```", " UNION",
    ] {
        assert!(!ok(&n, sql, end), "{end:?} after {sql:?}");
    }
    // …it may go on to the table that has it, and then end.
    assert!(ok(&n, sql, " JOIN"));
    assert!(ok(&n, sql, " AS"));
    assert!(forced(
        &n,
        "SELECT Name FROM concert JOIN singer_in_concert ON concert.concert_ID = \
         singer_in_concert.concert_ID JOIN singer ON singer.Singer_ID = \
         singer_in_concert.Singer_ID WHERE Year = 2014;"
    )
    .is_ok());
    assert!(ok(&n, "SELECT Name FROM singer", " WHERE"));
    assert!(ok(&n, "SELECT Name FROM singer", "\n```"));
    // The ON of a join does not end the FROM; the WHERE after it does, and is checked.
    assert!(ok(&n, "SELECT Name FROM concert JOIN Orders", " ON"));
    assert!(!ok(
        &n,
        "SELECT Name FROM concert JOIN Orders ON 1 = 1",
        " WHERE "
    ));
    // In an expression only the whole word: `order` may yet become `order_id`.
    assert!(ok(
        &n,
        "SELECT Name FROM concert JOIN Orders ON 1 = 1 AND ",
        "order"
    ));
    // MySQL's closing fence is checked too.
    let my = names(Dialect::MySql).covering_from();
    assert!(!ok(&my, "SELECT Name FROM concert", "\n```"));
    assert!(ok(&my, "SELECT Name FROM singer", "\n```"));
    // FETCH ends a FROM as LIMIT does.
    assert!(!ok(&n, "SELECT Name FROM concert", " FETCH"));
    // A subquery's FROM is held to its own SELECT list, closed by its `)`.
    let sub = "SELECT concert_Name FROM concert WHERE Stadium_ID IN (SELECT Age FROM city";
    assert!(!ok(&n, sub, ")"));
    assert!(ok(&n, sub, " JOIN"));
    assert!(ok(
        &n,
        "SELECT concert_Name FROM concert WHERE Stadium_ID IN (SELECT Age FROM singer",
        ")"
    ));
    // Unsure is allowed: a derived table's columns are unknown.
    assert!(ok(
        &n,
        "SELECT Name FROM (SELECT * FROM concert) AS x",
        " WHERE"
    ));
    // Keywords, functions and aliases of the SELECT list are no columns.
    assert!(ok(
        &n,
        "SELECT count(*) AS n, DISTINCT Year FROM concert",
        " WHERE"
    ));
    assert!(ok(&n, "SELECT Year AS Name FROM concert", " ORDER"));
}

#[test]
fn a_function_name_is_a_call_and_a_keyword_no_qualifier() {
    let n = names(Dialect::Sqlite);
    // `power` is a function: followed by a space, only its `(` may come.
    assert!(!ok(&n, "SELECT Name FROM singer ORDER BY power ", "LIMIT"));
    assert!(!ok(&n, "SELECT Name FROM singer ORDER BY power", " DESC"));
    assert!(ok(
        &n,
        "SELECT Name FROM singer ORDER BY power ",
        "(Age, 2)"
    ));
    assert!(ok(&n, "SELECT COUNT", " (*) FROM singer"));
    assert!(!ok(&n, "SELECT Name FROM singer ORDER BY power ", " "));
    assert!(ok(&n, "SELECT Name FROM singer ORDER BY Age", " DESC"));
    // A keyword followed by a dot is no table, before the FROM too.
    assert!(!ok(&n, "SELECT Name FROM singer WHERE then", ".Age"));
    assert!(!ok(&n, "SELECT then", ".Age FROM singer"));
    // MySQL's DAY is a function and a date part: `INTERVAL 7 DAY` needs no `(`.
    let my = names(Dialect::MySql);
    assert!(ok(
        &my,
        "SELECT Name FROM singer WHERE Age > 7 - INTERVAL 7 DAY",
        " AND Age > 1"
    ));
    // Before the FROM a function's name may be a derived table's column.
    assert!(ok(
        &n,
        "SELECT total",
        " FROM (SELECT count(*) AS total FROM singer) AS t"
    ));
    assert!(ok(&n, "SELECT Name FROM singer WHERE singer", ".Age"));
    // After `X.` a table's row id, never `false` or `null`.
    assert!(ok(&n, "SELECT Name FROM singer WHERE singer.", "rowid "));
    assert!(!ok(&n, "SELECT Name FROM singer WHERE singer.", "FaLsE "));
}

/// The tracker reads on from the state of an earlier, shorter answer; it must land where a
/// fresh read does, for rows that grow side by side, share a prefix, diverge, end the
/// statement, or start over.
#[test]
fn the_tracker_gives_the_states_of_a_fresh_read() {
    let n = names(Dialect::Sqlite);
    let tracker = Tracker::new(n.clone());
    let answers = [
        "SELECT T1.Name FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID = T2.concert_ID \
         WHERE T2.Year = '2014' ORDER BY T1.Age DESC LIMIT 1",
        "SELECT count(*) FROM \"Order Details\" WHERE \"Unit Price\" > 3 -- note\n",
        "SELECT name FROM city; anything at all ' after the end",
        "WITH c AS (SELECT pop FROM city) SELECT pop FROM c",
        "SELECT T1.Name FROM singer AS T1 WHERE T1.Age > (SELECT avg(Age) FROM singer)",
    ];
    let key = |s: &State<'_>| format!("{:?} {:?}", s.lex, s.parse);
    let longest = answers.iter().map(|a| a.len()).max().unwrap_or(0);
    // Rows advance a few bytes at a time, in turn, as the rows of a batch do.
    for end in (0..=longest).step_by(3) {
        for a in &answers {
            let mut cut = end.min(a.len());
            while !a.is_char_boundary(cut) {
                cut -= 1;
            }
            let so_far = &a[..cut];
            assert_eq!(
                key(&tracker.state(so_far)),
                key(&n.state(so_far)),
                "after {so_far:?}"
            );
        }
    }
    // A row that starts over, and one seen before, still read right.
    for a in &answers {
        assert_eq!(key(&tracker.state(&a[..10])), key(&n.state(&a[..10])));
        assert_eq!(key(&tracker.state(a)), key(&n.state(a)));
    }
}

/// A column named like a word SQL uses only outside queries (`language`) is checked as a column.
#[test]
fn words_of_ddl_only_are_no_keywords_in_a_query() {
    let t = [
        table("city", &["name", "pop"]),
        table("lang", &["Language"]),
    ];
    let refs: Vec<&Table> = t.iter().collect();
    let n = Names::new(&refs, Dialect::Sqlite);
    let so_far = "SELECT name FROM city WHERE pop = (SELECT MAX(pop) FROM city WHERE";
    assert!(!ok(&n, so_far, " Language"));
    assert!(ok(
        &n,
        "SELECT name FROM city JOIN lang ON 1 WHERE",
        " Language"
    ));
}
