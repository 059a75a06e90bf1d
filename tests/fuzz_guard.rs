//! Fuzzing the guard and SQL extraction with proptest: arbitrary text and grammar-shaped SQL
//! (nested subqueries, CTEs, joins, quotes, comments, stray semicolons, unicode) must never
//! panic or hang in `extract_sql`, `check`, `answer_complete` or the identifier check, in any
//! dialect, and whatever the guard accepts must be one read-only statement.
//!
//! CI runs `SQLORA_FUZZ_CASES` cases per property (default 3000); a long run for a given time,
//! fresh random cases batch after batch:
//! `SQLORA_FUZZ_SECONDS=600 cargo test --release --test fuzz_guard -- --nocapture`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use sqlora::db::Dialect;
use sqlora::guard;
use sqlora::schema::{Column, Schema, Table, TableKind};

const DIALECTS: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql];

fn cases() -> u32 {
    std::env::var("SQLORA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn schema() -> Schema {
    let table = |name: &str, cols: &[&str]| Table {
        schema: None,
        name: name.into(),
        kind: TableKind::Table,
        columns: cols
            .iter()
            .map(|c| Column {
                name: c.to_string(),
                data_type: "TEXT".into(),
                not_null: false,
                default: None,
                comment: None,
                samples: vec![],
                enum_values: vec![],
            })
            .collect(),
        primary_key: vec![],
        foreign_keys: vec![],
        comment: None,
    };
    Schema {
        tables: vec![
            table("users", &["id", "name", "Email"]),
            table("orders", &["id", "user_id", "total", "created"]),
        ],
    }
}

/// Everything the guard does with one text, in every dialect.
fn exercise(text: &str, schema: &Schema) {
    let _ = guard::extract_sql(text);
    for d in DIALECTS {
        let _ = guard::answer_complete(text, d);
        if let Ok(checked) = guard::check(text, d) {
            // What passes is one read-only statement, written back without a semicolon.
            assert!(!checked.sql.ends_with(';'), "{text:?}");
            let _ = guard::names::check_names(&checked.statement, schema, d);
        }
    }
}

fn ident() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_string()),
        Just("name".to_string()),
        Just("users".to_string()),
        Just("orders".to_string()),
        Just("\"Email\"".to_string()),
        Just("`total`".to_string()),
        Just("u.id".to_string()),
        Just("o.user_id".to_string()),
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        "\"[^\"]{0,6}\"",
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,6}(\\.[0-9]{1,3})?",
        "'[^']{0,8}'",
        Just("NULL".to_string()),
        Just("'it''s'".to_string()),
        Just("'; DROP TABLE users; --'".to_string()),
        Just("'\u{1F600}中文'".to_string()),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![ident(), literal()];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop_oneof![
                    Just("="),
                    Just("<"),
                    Just("+"),
                    Just("AND"),
                    Just("OR"),
                    Just("LIKE"),
                    Just("||")
                ],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (
                prop_oneof![
                    Just("count"),
                    Just("max"),
                    Just("upper"),
                    Just("coalesce"),
                    Just("pg_read_file"),
                    Just("sleep")
                ],
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            (inner.clone(), select_core()).prop_map(|(a, q)| format!("{a} IN ({q})")),
            select_core().prop_map(|q| format!("EXISTS ({q})")),
            inner.prop_map(|a| format!("CASE WHEN {a} THEN 1 ELSE 0 END")),
        ]
    })
}

fn select_core() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(ident(), 1..4),
        prop_oneof![
            Just("users u"),
            Just("orders o"),
            Just("users u JOIN orders o ON u.id = o.user_id"),
            Just("nope n")
        ],
        prop::option::of(prop_oneof![ident(), literal()]),
    )
        .prop_map(|(cols, from, filter)| {
            let mut q = format!("SELECT {} FROM {from}", cols.join(", "));
            if let Some(f) = filter {
                q.push_str(&format!(" WHERE {f} IS NOT NULL"));
            }
            q
        })
}

fn statement() -> impl Strategy<Value = String> {
    let noise = prop_oneof![
        Just(""),
        Just(";"),
        Just("; DELETE FROM users"),
        Just(" -- c\n"),
        Just(" /* x */"),
        Just("\n```"),
        Just(";;"),
        Just(" FOR UPDATE"),
        Just(" INTO OUTFILE '/tmp/x'"),
    ];
    let start = prop_oneof![
        Just(""),
        Just("WITH c AS (SELECT id FROM users) "),
        Just("EXPLAIN "),
        Just("```sql\n"),
        Just("Here is the query:\n"),
        Just("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r) "),
    ];
    (
        start,
        select_core(),
        prop::option::of(expr()),
        prop::option::of(ident()),
        noise,
    )
        .prop_map(|(start, core, cond, order, noise)| {
            let mut q = format!("{start}{core}");
            if let Some(c) = cond {
                q.push_str(&format!(" AND {c}"));
            }
            if let Some(o) = order {
                q.push_str(&format!(" ORDER BY {o} LIMIT 5"));
            }
            q.push_str(noise);
            q
        })
}

fn run(name: &str, strategy: impl Strategy<Value = String>) {
    let schema = schema();
    let seconds: u64 = std::env::var("SQLORA_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let t = std::time::Instant::now();
    let (mut total, mut batch) = (0u64, 0u64);
    loop {
        // A fresh seed per batch, so a long run keeps finding new inputs.
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&batch.to_le_bytes());
        seed[8..16].copy_from_slice(&(name.len() as u64).to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: cases(),
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
        );
        runner
            .run(&strategy, |text| {
                let one = std::time::Instant::now();
                exercise(&text, &schema);
                // A pathological input must not stall the shell.
                prop_assert!(one.elapsed().as_secs() < 2, "slow on {:?}", text);
                Ok(())
            })
            .unwrap();
        total += u64::from(cases());
        batch += 1;
        if t.elapsed().as_secs() >= seconds {
            break;
        }
    }
    eprintln!(
        "{name}: {total} cases in {:.1} s, no panic, none slow",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn arbitrary_text_never_panics_or_hangs() {
    run("arbitrary text", any::<String>());
}

#[test]
fn sql_like_text_never_panics_or_hangs() {
    // Compiled once: a `&str` strategy would parse the regex again for every case.
    let shaped = proptest::string::string_regex(
        "(SELECT|WITH|VALUES|EXPLAIN|DELETE|```sql|--|/\\*|'|\"|`|\\(|\\)|;|,|\\*| |\n|[a-z_]{1,6}|[0-9]{1,3}|\u{00e9}|\u{4e2d}){0,60}",
    )
    .unwrap();
    run("SQL-shaped text", shaped);
}

#[test]
fn grammar_shaped_sql_never_panics_or_hangs() {
    run("grammar-shaped SQL", statement());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // sqlparser limits recursion; the guard must return an error, not crash.
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    for d in DIALECTS {
        let _ = guard::check(&deep, d);
    }
    let nested = format!(
        "SELECT id FROM users WHERE id IN ({}SELECT 1{})",
        "SELECT id FROM users WHERE id IN (".repeat(40),
        ")".repeat(40)
    );
    exercise(&nested, &schema());
}
