//! Fuzzing the guard and SQL extraction with proptest: arbitrary text and grammar-shaped SQL
//! (nested subqueries, CTEs, joins, quotes, comments, stray semicolons, unicode) must never
//! panic or hang in `extract_sql`, `check`, `answer_complete` or the identifier check, in any
//! dialect, and whatever the guard accepts must be one read-only statement.
//!
//! A second fuzz target goes to real servers: function calls in every syntactic position, with
//! names on and off the allow-list, are put through the guard and run on PostgreSQL (a private
//! cluster logging every statement) and MariaDB (its general log); the servers' own logs must
//! never show a call to a function outside the allow-list, and must show the allowed ones.
//!
//! CI runs `SQLORA_FUZZ_CASES` cases per property (default 3000; the server target a tenth of
//! that per dialect); a long run for a given time, fresh random cases batch after batch:
//! `SQLORA_FUZZ_SECONDS=600 cargo test --release --test fuzz_guard -- --nocapture`.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use sqlora::guard;
use sqlora::schema::{Column, Schema, Table, TableKind};
use sqlora::sql::Dialect;

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

/// Where a function call may stand, `{f}` the call and `{t}` the marked table (every template
/// names it, so the servers' logs can be filtered to this test's statements).
const POSITIONS: &[&str] = &[
    "SELECT {f} FROM {t}",
    "SELECT a FROM {t} WHERE {f} IS NOT NULL",
    "SELECT a FROM {t} WHERE a = {f} OR b > 0",
    "SELECT a, count(*) FROM {t} GROUP BY a HAVING count({f}) > 0",
    "SELECT a FROM {t} GROUP BY a, {f}",
    "SELECT a FROM {t} ORDER BY {f}",
    "SELECT * FROM {t}, {f} AS x",
    "SELECT * FROM {t} CROSS JOIN {f} AS x",
    "SELECT * FROM {t} JOIN {f} AS x ON true",
    "SELECT * FROM {t}, LATERAL {f} AS x",
    "SELECT * FROM {t} JOIN LATERAL {f} AS x ON true",
    "SELECT * FROM {t} LEFT JOIN LATERAL {f} AS x ON true",
    "WITH c AS (SELECT {f} AS v FROM {t}) SELECT * FROM c",
    "SELECT (SELECT {f}) AS v FROM {t}",
    "SELECT a FROM {t} WHERE a IN (SELECT {f})",
    "SELECT a FROM {t} WHERE EXISTS (SELECT {f})",
    "SELECT CASE WHEN a IS NULL THEN {f} ELSE a END FROM {t}",
    "SELECT CAST({f} AS CHAR(10)) FROM {t}",
    "SELECT upper(coalesce({f}, a)) FROM {t}",
    "SELECT row_number() OVER (ORDER BY {f}) FROM {t}",
    "SELECT max(a) OVER (PARTITION BY {f}) FROM {t}",
    "SELECT a FROM {t} UNION SELECT {f}",
    "SELECT a FROM {t} WHERE b IN (VALUES ({f}))",
    "SELECT * FROM (SELECT {f} AS v FROM {t}) AS d",
    "EXPLAIN SELECT {f} FROM {t}",
    "SELECT a FROM {t} /*! , {f} */",
    "SELECT a /*!50000 , {f} */ FROM {t}",
    "SELECT a FROM {t} -- {f}\n",
];

/// Argument lists for a call.
const ARGS: &[&str] = &[
    "()",
    "(1)",
    "('x')",
    "(a)",
    "(a, 1)",
    "(upper(a))",
    "(1, 2)",
];

/// Calls that must never reach the server, per dialect: real functions with effects or leaks,
/// names nobody allowed, and allowed names written so that they mean another function.
fn forbidden(d: Dialect) -> Vec<&'static str> {
    let mut v = vec!["zz_fuzz_evil", "zz_fuzz_udf", "evil_fn"];
    v.extend(match d {
        Dialect::Postgres => &[
            "pg_read_file",
            "pg_read_binary_file",
            "pg_ls_dir",
            "pg_stat_file",
            "lo_import",
            "lo_export",
            "lo_unlink",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_notify",
            "pg_reload_conf",
            "pg_switch_wal",
            "pg_create_physical_replication_slot",
            "pg_stat_reset",
            "pg_import_system_collations",
            "set_config",
            "nextval",
            "pg_sleep",
            "dblink",
            "query_to_xml",
            "pg_catalog.pg_read_file",
            "public.upper",
            "\"UPPER\"",
            "\"Lower\"",
        ][..],
        Dialect::MySql => &[
            "load_file",
            "LOAD_FILE",
            "sleep",
            "benchmark",
            "get_lock",
            "release_lock",
            "is_free_lock",
            "last_insert_id",
            "master_pos_wait",
            "nextval",
            "setval",
            "mysql.load_file",
            "shop.upper",
        ][..],
        Dialect::Sqlite => &["load_extension", "readfile", "writefile", "edit"][..],
    });
    v
}

/// Whether `text` calls `name`: `name(` (spaces allowed) not preceded by a name character.
fn calls(text: &str, name: &str) -> bool {
    let (t, n) = if name.contains('"') {
        (text.to_string(), name.to_string())
    } else {
        (text.to_ascii_lowercase(), name.to_ascii_lowercase())
    };
    t.match_indices(&n).any(|(i, _)| {
        let before = t[..i].chars().next_back();
        let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        boundary && t[i + n.len()..].trim_start().starts_with('(')
    })
}

/// What one dialect's run sent and what its server logged.
struct Sent {
    /// Statements the guard let through (they reached the server, whether or not they ran).
    passed: Vec<String>,
    /// The text of those that ran, as sqlora sent it.
    ran: Vec<String>,
    /// Forbidden calls generated, and how many statements held one.
    forbidden_tries: usize,
}

fn fuzz_calls(d: Dialect, url: &str, table: &str, n: usize, seed: u64) -> Sent {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let allowed: Vec<String> = guard::functions::current()
        .names(d)
        .map(String::from)
        .collect();
    let bad = forbidden(d);
    let mut p = sqlora::pipeline::Pipeline::new(sqlora::db::open(url).unwrap(), None).unwrap();
    p.limits = sqlora::db::Limits {
        max_rows: 5,
        timeout: std::time::Duration::from_secs(2),
    };
    let cancel = sqlora::cancel::Cancel::new();
    let mut sent = Sent {
        passed: Vec::new(),
        ran: Vec::new(),
        forbidden_tries: 0,
    };
    for _ in 0..n {
        // Half the calls are forbidden; some allowed calls wrap a forbidden one.
        let is_bad = rng.random_bool(0.5);
        let name = if is_bad {
            bad[rng.random_range(0..bad.len())].to_string()
        } else if rng.random_bool(0.4) {
            // Calls whose arguments fit, so that many statements run to the end.
            let fits = [
                "upper", "lower", "length", "abs", "round", "coalesce", "nullif",
            ];
            fits[rng.random_range(0..fits.len())].to_string()
        } else {
            allowed[rng.random_range(0..allowed.len())].clone()
        };
        let args = if !is_bad && rng.random_bool(0.2) {
            let inner = bad[rng.random_range(0..bad.len())];
            sent.forbidden_tries += 1;
            format!("({inner}(a))")
        } else {
            match name.as_str() {
                "upper" | "lower" | "length" => "(a)".to_string(),
                "abs" | "round" => "(b)".to_string(),
                "coalesce" | "nullif" => "(b, 2)".to_string(),
                _ => ARGS[rng.random_range(0..ARGS.len())].to_string(),
            }
        };
        if is_bad {
            sent.forbidden_tries += 1;
        }
        let call = format!("{name}{args}");
        let pos = POSITIONS[rng.random_range(0..POSITIONS.len())];
        let sql = pos.replace("{f}", &call).replace("{t}", table);
        let result = p.run_sql(&sql, &cancel);
        if let Ok(run) = &result {
            sent.ran.push(run.sql.clone());
        }
        match result {
            // Reached the server (ran, or the server refused it): the guard let it through.
            Ok(_) | Err(sqlora::pipeline::AskError::Db { .. }) => {
                let holds_bad = bad.iter().any(|b| calls(&sql, b)) && !sql.contains("--");
                assert!(
                    !holds_bad,
                    "{d:?}: the guard let through a forbidden call: {sql}"
                );
                sent.passed.push(sql);
            }
            Err(_) => {}
        }
    }
    sent
}

/// Checks a server's log (its statements naming `table`) against what was sent.
fn judge(d: Dialect, sent: &Sent, logged: &[String], n: usize) {
    let bad = forbidden(d);
    for line in logged {
        for b in &bad {
            assert!(
                !calls(line, b),
                "{d:?}: `{b}` reached the server, its log says: {line}"
            );
        }
    }
    // Not vacuous: allowed calls do reach the server and its log shows them.
    assert!(
        sent.passed.len() * 5 >= n,
        "{d:?}: only {} of {n} statements passed the guard",
        sent.passed.len()
    );
    // Every statement that ran is in the server's log, as sqlora sent it (comments gone).
    for q in &sent.ran {
        assert!(
            logged.iter().any(|l| l.contains(q.as_str())),
            "{d:?}: ran but not in the server's log: {q}"
        );
    }
    assert!(
        sent.ran.len() * 10 >= n,
        "{d:?}: only {} of {n} statements ran",
        sent.ran.len()
    );
    eprintln!(
        "{d:?}: {n} statements ({} with a forbidden call), {} passed the guard, {} ran and \
         are in the server's log, {} log lines read, no forbidden call among them",
        sent.forbidden_tries,
        sent.passed.len(),
        sent.ran.len(),
        logged.len()
    );
}

fn server_cases() -> usize {
    (cases() as usize / 10).max(50)
}

fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("fz_{}_{nanos}", std::process::id())
}

#[test]
fn functions_off_the_allow_list_never_reach_postgresql() {
    let n = server_cases();
    let table = marker();
    let cluster = common::PgTestCluster::start();
    common::admin_exec(&cluster.url("postgres"), "CREATE DATABASE fuzz");
    common::admin_exec(
        &cluster.url("fuzz"),
        &format!(
            "CREATE TABLE {table} (a text, b int); INSERT INTO {table} VALUES ('x', 1), (NULL, 2)"
        ),
    );
    let sent = fuzz_calls(Dialect::Postgres, &cluster.url("fuzz"), &table, n, 26);
    let log = cluster.log();
    let logged: Vec<String> = log
        .lines()
        .filter(|l| {
            l.contains(&table)
                && (l.contains("statement: ") || l.contains("execute ") || l.contains("STATEMENT:"))
        })
        .map(String::from)
        .collect();
    judge(Dialect::Postgres, &sent, &logged, n);
}

#[test]
fn functions_off_the_allow_list_never_reach_mariadb() {
    let n = server_cases();
    let table = marker();
    let my = common::ServerDb::create(common::Server::MariaDb, "fuzzfn");
    my.exec(&format!(
        "CREATE TABLE {table} (a VARCHAR(20), b INT); INSERT INTO {table} VALUES ('x', 1), (NULL, 2)"
    ));
    // The general log, into its table for this run; the previous settings are put back.
    let admin = "mysql://root@127.0.0.1:3306/mysql";
    let mut probe = sqlora::db::open(&my.url()).unwrap();
    let before = probe
        .query(
            "SELECT @@GLOBAL.general_log, @@GLOBAL.log_output",
            &sqlora::db::Limits::default(),
            &sqlora::cancel::Cancel::new(),
        )
        .unwrap();
    let (was_on, was_output) = (before.rows[0][0].display(), before.rows[0][1].display());
    common::admin_exec(
        admin,
        "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 'ON'",
    );
    let sent = fuzz_calls(Dialect::MySql, &my.url(), &table, n, 26);
    let rows = probe
        .query(
            &format!(
                "SELECT CAST(argument AS CHAR) FROM mysql.general_log WHERE argument LIKE '%{table}%'"
            ),
            &sqlora::db::Limits {
                max_rows: 1_000_000,
                ..Default::default()
            },
            &sqlora::cancel::Cancel::new(),
        )
        .unwrap();
    let on = if was_on == "1" || was_on.eq_ignore_ascii_case("on") {
        "ON"
    } else {
        "OFF"
    };
    common::admin_exec(
        admin,
        &format!("SET GLOBAL general_log = '{on}'; SET GLOBAL log_output = '{was_output}'"),
    );
    // The log also holds this probe's own SELECT, which names the table in a string.
    let logged: Vec<String> = rows
        .rows
        .iter()
        .map(|r| r[0].display())
        .filter(|l| !l.contains("mysql.general_log"))
        .collect();
    judge(Dialect::MySql, &sent, &logged, n);
}
