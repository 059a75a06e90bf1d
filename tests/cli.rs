//! The `sqlora` binary as a user and a script see it: `ask --format json`, refusals in the
//! shell, and one-line errors for bad input.

mod common;

use std::process::{Command, Output, Stdio};

fn sqlora(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sqlora"));
    c.env("SQLORA_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("SQLORA_MODEL")
        .stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ask_json_prints_one_object_with_the_rows() {
    let _ = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let out = sqlora(dir.path())
        .args([
            "ask",
            "--offline",
            "--format",
            "json",
            "How many customers are there?",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["question"], "How many customers are there?");
    assert!(v["sql"].as_str().unwrap().to_uppercase().contains("COUNT"));
    assert_eq!(v["row_count"], 1);
    assert!(v["elapsed_ms"].as_u64().unwrap() > 0);
    assert_eq!(v["columns"].as_array().unwrap().len(), 1);
    // Compare with the database itself.
    let db = dir.path().join("demo.sqlite");
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v["rows"][0][0], n);
    // The demo schema fits the default budget: the model saw every table.
    let tables = v["tables"].as_array().unwrap();
    assert!(
        tables.len() >= 4 && tables.iter().any(|t| t == "customers"),
        "{tables:?}"
    );
}

#[test]
fn a_schema_over_the_budget_shows_the_model_the_tables_the_question_needs() {
    let _ = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let out = sqlora(dir.path())
        .args([
            "ask",
            "--offline",
            "--context-tokens",
            "450",
            "--format",
            "json",
            "How many orders have the status 'shipped'?",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tables.contains(&"orders"), "{tables:?}");
    let db = dir.path().join("demo.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let all: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (tables.len() as i64) < all,
        "every table was shown: {tables:?}"
    );
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM orders WHERE status = 'shipped'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v["rows"][0][0], n, "{}", v["sql"]);
}

fn shell(dir: &std::path::Path, args: &[&str], input: &str) -> Output {
    common::feed(sqlora(dir).arg("shell").args(args), input)
}

#[test]
fn writes_are_refused_and_the_database_is_unchanged() {
    let _ = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlora::db::demo::ensure(dir.path()).unwrap();
    let before = common::sha256(&db);
    let input = "\\sql DELETE FROM customers\n\
                 \\sql DROP TABLE orders\n\
                 \\sql INSERT INTO categories (name) VALUES ('x')\n\
                 \\sql SELECT 1; DELETE FROM customers\n\
                 \\sql ATTACH DATABASE '/tmp/sqlora-evil.db' AS evil\n\
                 \\sql PRAGMA writable_schema=1\n\
                 DELETE FROM payments\n\
                 delete all customers\n\
                 drop the orders table\n\
                 \\sql SELECT count(*) AS n FROM customers\n\
                 \\q\n";
    let out = shell(dir.path(), &["--offline"], input);
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.matches("refused").count() >= 7, "stderr:\n{stderr}");
    for kw in ["DELETE", "DROP TABLE", "INSERT", "ATTACH", "PRAGMA"] {
        assert!(stderr.contains(kw), "no refusal naming {kw}:\n{stderr}");
    }
    // The shell kept going: the last query ran.
    assert!(stdout.contains("1 row"), "stdout:\n{stdout}");
    assert_eq!(common::sha256(&db), before, "the demo database changed");
    assert!(!std::path::Path::new("/tmp/sqlora-evil.db").exists());
}

#[test]
fn bad_inputs_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], needle: &str| {
        let out = sqlora(dir.path()).args(args).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    };
    check(
        &["ask", "--db", "/nonexistent/shop.db", "hi"],
        "cannot open SQLite file /nonexistent/shop.db",
    );
    check(
        &["ask", "--db", "mongodb://localhost/x", "hi"],
        "unsupported database URL",
    );
    check(
        &["ask", "--model", "no-such-model", "hi"],
        "unknown model `no-such-model`",
    );
    check(
        &["ask", "--model", "/nonexistent/m.gguf", "hi"],
        "model file /nonexistent/m.gguf not found",
    );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    check(
        &["ask", "--model", junk.to_str().unwrap(), "hi"],
        &format!("model file {} is not a valid GGUF", junk.display()),
    );
    check(
        &["ask", "--timeout", "0", "hi"],
        "invalid value '0' for '--timeout",
    );
}

#[test]
fn shell_survives_bad_model_and_runs_sql() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, vec![0u8; 100]).unwrap();
    let out = shell(
        dir.path(),
        &["--model", junk.to_str().unwrap()],
        "how many orders?\n\\tables\nSELECT name FROM categories ORDER BY name LIMIT 2\n\\nosuch\n\\q\n",
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not a valid GGUF"), "{stderr}");
    assert!(stderr.contains("no model"), "{stderr}");
    assert!(
        stdout.contains("order_items") && stdout.contains("2 rows"),
        "{stdout}"
    );
    assert!(stderr.contains("unknown command \\nosuch"), "{stderr}");
}

#[test]
fn model_list_names_the_models() {
    let out = sqlora(tempfile::tempdir().unwrap().path())
        .args(["model", "list"])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(out.status.success());
    for m in ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"] {
        assert!(s.contains(m), "{s}");
    }
}

/// Runs the binary with `args` (stdin: `input`), expecting a failure: a non-zero exit, one
/// line on stderr holding `needle`, no panic. Returns stderr.
fn fails_in_one_line(dir: &std::path::Path, args: &[&str], needle: &str) -> String {
    let out = sqlora(dir).args(args).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: wanted `{needle}` in {err}");
    err
}

#[test]
fn numeric_options_are_checked_without_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, needle) in [
        (
            &["ask", "--timeout", "1e20", "hi"][..],
            "'--timeout <SECS>': 1e20 is not in (0, 86400]",
        ),
        (&["ask", "--timeout", "NaN", "hi"], "--timeout"),
        (&["ask", "--timeout", "inf", "hi"], "--timeout"),
        (&["ask", "--timeout=-5", "hi"], "--timeout"),
        (&["ask", "--max-rows", "0", "hi"], "--max-rows"),
        (
            &["ask", "--max-rows", "99999999999999999999", "hi"],
            "--max-rows",
        ),
        (&["ask", "--repairs", "100000", "hi"], "--repairs"),
        (&["ask", "--context-tokens", "0", "hi"], "--context-tokens"),
        (&["shell", "--timeout", "1e300"], "--timeout"),
        (&["eval", "--set", "x.jsonl", "--limit", "0"], "--limit"),
        (&["eval", "--set", "x.jsonl", "--offset=-1"], "--offset"),
        (
            &["eval", "--set", "x.jsonl", "--timeout", "1e20"],
            "--timeout",
        ),
        (&["feedback", "list", "--limit", "0"], "--limit"),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--lr", "NaN"],
            "--lr",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--steps", "0"],
            "--steps",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--batch", "0"],
            "--batch",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--rank", "0"],
            "--rank",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--alpha", "inf"],
            "--alpha",
        ),
        (
            &[
                "train",
                "--data",
                "x.jsonl",
                "--out",
                "a",
                "--dropout",
                "1.5",
            ],
            "--dropout",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--epochs=-1"],
            "--epochs",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--max-len", "0"],
            "--max-len",
        ),
        (
            &[
                "train",
                "--data",
                "x.jsonl",
                "--out",
                "a",
                "--eval-split",
                "2",
            ],
            "--eval-split",
        ),
        (
            &["train", "--data", "x.jsonl", "--out", "a", "--clip", "NaN"],
            "--clip",
        ),
        (&["train", "--auto", "--eval-limit", "0"], "--eval-limit"),
    ] {
        fails_in_one_line(d, args, needle);
    }
    // clap's own usage errors are one line too.
    fails_in_one_line(d, &["ask", "--no-such-flag", "hi"], "--no-such-flag");
    fails_in_one_line(d, &["eval"], "--set");
}

/// A GGUF v3 image: metadata `kvs` as (key, value type, value bytes), tensors as (name, dims,
/// ggml type, offset), padding to 32 bytes, then `data` zero bytes.
fn gguf(
    kvs: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, &[u64], u32, u64)],
    data: usize,
) -> Vec<u8> {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, t, v) in kvs {
        string(&mut b, k);
        b.extend(t.to_le_bytes());
        b.extend(v);
    }
    for (name, dims, ty, offset) in tensors {
        string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(vec![0u8; data]);
    b
}

#[test]
fn malformed_gguf_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let arch = (
        "general.architecture",
        8,
        [5u64.to_le_bytes().to_vec(), b"llama".to_vec()].concat(),
    );
    let sound = gguf(std::slice::from_ref(&arch), &[("w", &[8, 2], 0, 0)], 64);
    let huge_string = [u64::MAX.to_le_bytes().to_vec(), b"x".to_vec()].concat();
    let huge_array = [
        8u32.to_le_bytes().to_vec(),
        (1u64 << 62).to_le_bytes().to_vec(),
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            sound[..sound.len() - 8].to_vec(),
            "past the end of the file",
        ),
        (
            "cut-table",
            sound[..sound.len() / 2].to_vec(),
            "the file ends at byte",
        ),
        (
            "cut-header",
            sound[..20].to_vec(),
            "the file ends at byte 20",
        ),
        (
            "alignment0",
            gguf(
                &[
                    arch.clone(),
                    ("general.alignment", 4, 0u32.to_le_bytes().to_vec()),
                ],
                &[],
                0,
            ),
            "general.alignment is 0",
        ),
        (
            "alignment3",
            gguf(
                &[("general.alignment", 4, 3u32.to_le_bytes().to_vec())],
                &[],
                0,
            ),
            "general.alignment is 3, not a power of two",
        ),
        (
            "huge-string",
            gguf(
                &[arch.clone(), ("tokenizer.ggml.model", 8, huge_string)],
                &[],
                0,
            ),
            "metadata `tokenizer.ggml.model` has length 18446744073709551615",
        ),
        (
            "huge-array",
            gguf(&[("tokenizer.ggml.tokens", 9, huge_array)], &[], 0),
            "metadata `tokenizer.ggml.tokens` has length 4611686018427387904",
        ),
        (
            "offset",
            gguf(
                std::slice::from_ref(&arch),
                &[("w", &[8, 2], 0, 1 << 30)],
                64,
            ),
            "tensor `w` (64 bytes at offset 1073741824",
        ),
        (
            "dims",
            gguf(
                std::slice::from_ref(&arch),
                &[("w", &[1 << 40, 1 << 40], 0, 0)],
                64,
            ),
            "tensor `w` has more elements than the file could hold",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let path_text = path.to_str().unwrap();
        let err = fails_in_one_line(
            dir.path(),
            &["ask", "--model", path_text, "hi"],
            &format!("model file {path_text} is not a valid GGUF: "),
        );
        assert!(err.contains(needle), "{name}: wanted `{needle}` in {err}");
        assert!(
            sqlora::llm::gguf_check::check(&path).is_err(),
            "{name} passed the check"
        );
    }
    sqlora::llm::gguf_check::check(&dir.path().join("x.gguf")).unwrap_err();
}

#[test]
fn the_real_model_passes_the_gguf_check() {
    let model = common::model_path();
    sqlora::llm::gguf_check::check(&model).unwrap();
}

#[test]
fn passwords_never_show() {
    use common::{Server, ServerDb};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two halves no message could hold by chance; each separator the URL grammar trips on.
    let passwords = [
        "Zq9k/Wx7m",
        "Zq9k@Wx7m",
        "Zq9k:Wx7m",
        "Zq9k%2FWx7m",
        "Zq9k?Wx7m",
    ];
    let pg = ServerDb::create(Server::Postgres, "pw");
    let my = ServerDb::create(Server::MariaDb, "pw");
    // A feedback store of its own (opening it creates tables; `pg` stays empty).
    let store = ServerDb::create(Server::Postgres, "pwstore");
    let mut urls = Vec::new();
    for pw in passwords {
        // PostgreSQL (trust: a password is ignored): a database that does not exist, a role
        // that does not exist, and an existing (empty) database that connects.
        urls.push(format!(
            "postgres://postgres:{pw}@127.0.0.1:5432/sqlora_no_such_db"
        ));
        urls.push(format!(
            "postgres://nosuchrole:{pw}@127.0.0.1:5432/postgres"
        ));
        urls.push(
            pg.url()
                .replacen("postgres@", &format!("postgres:{pw}@"), 1),
        );
        // MariaDB: root has no password, so any password is wrong.
        urls.push(my.url().replacen("root@", &format!("root:{pw}@"), 1));
    }
    let set = d.join("set.jsonl");
    for (i, url) in urls.iter().enumerate() {
        let pw = passwords[i / 4];
        let store_url = store
            .url()
            .replacen("postgres@", &format!("postgres:{pw}@"), 1);
        std::fs::write(
            &set,
            format!(
                "{}\n",
                serde_json::json!({"question": "q", "db": url, "query": "SELECT 1"})
            ),
        )
        .unwrap();
        let runs: Vec<(Vec<&str>, bool)> = vec![
            (
                vec!["ask", "--db", url, "--model", "/nonexistent/m.gguf", "hi"],
                true,
            ),
            (
                vec!["shell", "--db", url, "--model", "/nonexistent/m.gguf"],
                true,
            ),
            (
                vec!["eval", "--set", set.to_str().unwrap(), "--offline"],
                true,
            ),
            (
                vec![
                    "feedback",
                    "record",
                    "--db",
                    url,
                    "--question",
                    "q",
                    "--sql",
                    "SELECT 1",
                ],
                false,
            ),
            (vec!["feedback", "list", "--db", url], false),
            (
                vec!["feedback", "stats", "--feedback-db", &store_url],
                false,
            ),
            (vec!["adapters", "use", "none", "--db", url], false),
            (
                vec!["train", "--auto", "--db", url, "--min-new", "1000000"],
                false,
            ),
        ];
        let help_env = [&["ask", "--help"][..], &["feedback", "stats", "--help"]];
        let runs = runs
            .into_iter()
            .map(|(args, fail)| (args, fail, false))
            .chain(help_env.iter().map(|a| (a.to_vec(), false, true)));
        for (args, must_fail, url_in_env) in runs {
            let mut cmd = sqlora(d);
            if url_in_env {
                // `--help` names the variables, never their values.
                cmd.env("DATABASE_URL", url)
                    .env("SQLORA_FEEDBACK_DB", &store_url);
            }
            let out = cmd
                .env("SQLORA_QUIET_PRIVILEGES", "1")
                .args(&args)
                .output()
                .unwrap();
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            for half in ["Zq9k", "Wx7m"] {
                assert!(!all.contains(half), "{args:?} showed the password:\n{all}");
            }
            assert!(!all.contains("panicked"), "{args:?}: {all}");
            if must_fail {
                assert!(!out.status.success(), "{args:?} succeeded: {all}");
                assert_eq!(
                    text(&out.stderr).trim().lines().count(),
                    1,
                    "{args:?}: {all}"
                );
            }
        }
    }
}

#[test]
fn errors_are_one_line_with_the_sql_and_no_repeated_cause() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_in_one_line(
        dir.path(),
        &[
            "feedback",
            "record",
            "--question",
            "q",
            "--sql",
            "SELECT\n  nosuch,\n  'two  spaces'\nFROM customers",
        ],
        "unknown column `nosuch` — SQL: SELECT nosuch, 'two  spaces' FROM customers",
    );
    assert!(err.starts_with("sqlora: error: "), "{err}");
    // A cause that its error already shows is not printed twice.
    let missing = dir.path().join("missing.jsonl");
    let err = fails_in_one_line(
        dir.path(),
        &["train", "--data", missing.to_str().unwrap(), "--out", "a"],
        "No such file or directory",
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn empty_databases_and_missing_schemas_are_said_before_the_model_loads() {
    use common::{Server, ServerDb};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty = d.join("shop.db");
    std::fs::write(&empty, b"").unwrap();
    let empty_text = empty.to_str().unwrap();
    // The model named does not exist: these must fail before it is looked for.
    let no_model = ["--model", "/nonexistent/m.gguf"];
    let expect = format!(
        "database {} has no tables",
        empty.canonicalize().unwrap().display()
    );
    fails_in_one_line(
        d,
        &[&["ask", "--db", empty_text][..], &no_model, &["hi"]].concat(),
        &expect,
    );
    fails_in_one_line(
        d,
        &[&["shell", "--db", empty_text][..], &no_model].concat(),
        &expect,
    );
    let set = d.join("set.jsonl");
    std::fs::write(
        &set,
        "{\"question\": \"How many?\", \"db\": \"shop.db\", \"query\": \"SELECT 1\"}\n",
    )
    .unwrap();
    fails_in_one_line(
        d,
        &[&["eval", "--set", set.to_str().unwrap()][..], &no_model].concat(),
        &format!(
            "none of the 1 questions can run: database {} has no tables",
            empty.display()
        ),
    );

    let pg = ServerDb::create(Server::Postgres, "noschema");
    pg.exec("CREATE SCHEMA sales");
    let url = pg.url();
    let run = |extra: &[&str], needle: &str| {
        let out = sqlora(d)
            .env("SQLORA_QUIET_PRIVILEGES", "1")
            .args(
                [
                    &["ask", "--db", url.as_str()][..],
                    &no_model,
                    extra,
                    &["hi"],
                ]
                .concat(),
            )
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(
            err.contains(needle),
            "{extra:?}: wanted `{needle}` in {err}"
        );
    };
    run(
        &["--schema", "nosuch"],
        "schema `nosuch` does not exist in postgres://",
    );
    run(
        &["--schema", "public,nosuch"],
        "(schemas here: public, sales)",
    );
    run(&["--schema", "sales"], "schema `sales` of postgres://");
    run(
        &["--schema", "sales"],
        "has no tables (schemas here: public, sales)",
    );
    run(
        &[],
        "has no tables in its search_path (schemas here: public, sales;",
    );
}

#[test]
fn failures_exit_non_zero_feedback_since_and_eval_sets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_in_one_line(
        d,
        &["feedback", "export", "--since", "notadate"],
        "`notadate` is not a date (YYYY-MM-DD) or an RFC 3339 time",
    );
    for since in [
        "2026-11-01",
        "2026-11-01T09:30:00+01:00",
        "2026-11-01T09:30:00.25Z",
    ] {
        let out = sqlora(d)
            .args(["feedback", "export", "--since", since])
            .output()
            .unwrap();
        assert!(out.status.success(), "{since}: {}", text(&out.stderr));
    }
    // A set whose databases are all missing is an error that names them.
    let set = d.join("set.jsonl");
    std::fs::write(
        &set,
        "{\"question\": \"a\", \"db\": \"gone.db\", \"query\": \"SELECT 1\"}\n\
         {\"question\": \"b\", \"db\": \"gone.db\", \"query\": \"SELECT 2\"}\n",
    )
    .unwrap();
    fails_in_one_line(
        d,
        &["eval", "--set", set.to_str().unwrap(), "--offline"],
        &format!(
            "none of the 2 questions can run: database {} is missing",
            d.join("gone.db").display()
        ),
    );
    // Some can run: the others are counted and the reason given (the model named does not
    // exist, so the run stops right after).
    sqlora::db::demo::ensure(d).unwrap();
    std::fs::write(
        &set,
        "{\"question\": \"a\", \"db\": \"gone.db\", \"query\": \"SELECT 1\"}\n\
         {\"question\": \"b\", \"db\": \"demo.sqlite\", \"query\": \"SELECT 2\"}\n",
    )
    .unwrap();
    let out = sqlora(d)
        .args([
            "eval",
            "--set",
            set.to_str().unwrap(),
            "--model",
            "/nonexistent/m.gguf",
        ])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "skipping 1 of 2 questions: database {} is missing",
            d.join("gone.db").display()
        )),
        "{err}"
    );
}

#[test]
fn train_checks_its_name_and_data_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("pairs.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"How many?\", \"context\": \"CREATE TABLE t (a INT);\", \"answer\": \"SELECT count(*) FROM t\"}\n",
    )
    .unwrap();
    let data_text = data.to_str().unwrap();
    // The model named does not exist: the name must be refused before it is looked for.
    for bad in ["../../x", "a/b", "none", ".hidden", ""] {
        fails_in_one_line(
            d,
            &[
                "train",
                "--data",
                data_text,
                "--out",
                bad,
                "--model",
                "/nonexistent/m.gguf",
            ],
            "is not a usable adapter name",
        );
    }
    assert!(!d.join("runs").exists(), "a run was started");
    // Training data problems are called that, with the file and line.
    let missing = d.join("missing.jsonl");
    fails_in_one_line(
        d,
        &["train", "--data", missing.to_str().unwrap(), "--out", "a"],
        &format!("training data {}: No such file", missing.display()),
    );
    let bad = d.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"q\", \"context\": \"c\", \"answer\": \"SELECT 1\"}\n\n\
         {\"context\": \"c\", \"answer\": \"SELECT 1\"}\n",
    )
    .unwrap();
    fails_in_one_line(
        d,
        &["train", "--data", bad.to_str().unwrap(), "--out", "a"],
        &format!(
            "training data {}: line 3: missing field `question`",
            bad.display()
        ),
    );
    std::fs::write(&bad, "{\"question\": nope}\n").unwrap();
    let err = fails_in_one_line(
        d,
        &["train", "--data", bad.to_str().unwrap(), "--out", "a"],
        &format!("training data {}: line 1: not JSON", bad.display()),
    );
    assert!(
        !err.contains("generation failed") && !err.contains("model file"),
        "{err}"
    );
    // Reinforcement learning needs questions with gold SQL, and says what it cannot combine
    // with, before any model is looked for.
    fails_in_one_line(
        d,
        &[
            "train",
            "--rl",
            "--data",
            "feedback",
            "--out",
            "r",
            "--model",
            "/nonexistent/m.gguf",
        ],
        "--rl learns from questions with gold SQL",
    );
    fails_in_one_line(
        d,
        &[
            "train", "--rl", "--data", data_text, "--out", "r", "--resume",
        ],
        "--rl cannot be combined with --resume",
    );
    // A pair file is not a question set: its lines have no `db` or `query`.
    fails_in_one_line(
        d,
        &[
            "train",
            "--rl",
            "--data",
            data_text,
            "--out",
            "r",
            "--model",
            "/nonexistent/m.gguf",
        ],
        "missing field `db`",
    );
    for (flag, bad) in [
        ("--group", "1"),
        ("--questions", "0"),
        ("--kl", "-1"),
        ("--temperature", "0"),
    ] {
        let out = sqlora(d)
            .args(["train", "--rl", "--data", "spider-train", "--out", "r"])
            .arg(format!("{flag}={bad}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {bad} was taken");
        let err = text(&out.stderr);
        assert!(err.contains(flag), "{flag} {bad}: {err}");
    }
    // RL's own options without --rl are refused, not silently ignored.
    fails_in_one_line(
        d,
        &["train", "--data", data_text, "--out", "r", "--group", "4"],
        "--rl",
    );
    assert!(!d.join("runs").exists(), "a run was started");
}

#[test]
fn completions_print_a_script() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = sqlora(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        assert!(
            s.contains("sqlora") && s.contains("completions"),
            "{shell}: {s}"
        );
    }
    fails_in_one_line(dir.path(), &["completions", "tcsh"], "invalid value 'tcsh'");
}

#[test]
fn config_path_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[defaults]\nformat = \"csv\"\ntimeout = 9\nnull = \"-\"\n",
    )
    .unwrap();
    let run = |args: &[&str], db_env: Option<&str>| {
        let mut c = sqlora(dir.path());
        c.env("SQLORA_CONFIG", &file).args(args);
        if let Some(v) = db_env {
            c.env("DATABASE_URL", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(
        run(&["config", "path"], None).trim(),
        file.to_str().unwrap()
    );
    let show = run(
        &["config", "show"],
        Some("postgres://ann:s3cret@db.example/shop"),
    );
    assert!(!show.contains("s3cret"), "{show}");
    assert!(
        show.contains("postgres://ann@db.example/shop") && show.contains("$DATABASE_URL"),
        "{show}"
    );
    assert!(
        show.contains("format     csv  (from the config file)"),
        "{show}"
    );
    assert!(
        show.contains("timeout    9  (from the config file)"),
        "{show}"
    );
    assert!(show.contains("max_rows   1000  (default)"), "{show}");

    // The file's defaults apply, and the command line wins over them.
    let db = dir.path().join("t.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (a INTEGER, b TEXT); INSERT INTO t VALUES (1, NULL), (2, 'x');",
    )
    .unwrap();
    drop(conn);
    let db = db.to_str().unwrap();
    let csv = run(&["ask", "--db", db, "SELECT a FROM t ORDER BY a"], None);
    assert_eq!(csv.trim(), "a\n1\n2", "{csv}");
    let json = run(
        &["ask", "--db", db, "--format", "json", "SELECT a FROM t"],
        None,
    );
    assert!(json.trim_start().starts_with('{'), "{json}");

    // A bad file: one line naming the file and the line; `config path` still answers.
    std::fs::write(&file, "[defaults]\nformat = \"csv\"\nmax_rows = 0\n").unwrap();
    let mut c = sqlora(dir.path());
    let out = c
        .env("SQLORA_CONFIG", &file)
        .args(["config", "show"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("line 3"),
        "{err}"
    );
    assert!(err.contains("defaults.max_rows"), "{err}");
    assert_eq!(
        run(&["config", "path"], None).trim(),
        file.to_str().unwrap()
    );
}

#[test]
fn a_database_or_a_question_as_the_first_word() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE items (id INTEGER, name TEXT); INSERT INTO items VALUES (1, 'tea'), (2, 'cake');")
        .unwrap();
    drop(conn);
    let db = db.to_str().unwrap();
    // `sqlora DB QUESTION`: answered at once on that database (SQL runs without the model).
    let out = sqlora(dir.path())
        .args(["--format", "csv", db, "SELECT name FROM items ORDER BY id"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "name\ntea\ncake");
    // `sqlora QUESTION`: on the default (demo) database, as `sqlora ask`.
    let out = sqlora(dir.path())
        .args(["--format", "csv", "SELECT count(*) AS n FROM customers"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("n\n"),
        "{}",
        text(&out.stdout)
    );
    // `sqlora DB`: the shell on it.
    let out = common::feed(
        sqlora(dir.path()).args([db, "--model", "/nonexistent/m.gguf"]),
        "SELECT name FROM items WHERE id = 2\n\\q\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("shop.sqlite"), "{stderr}");
    assert!(stdout.contains("cake"), "{stdout}");
    // A missing file that reads as one is a typo, said before anything loads.
    fails_in_one_line(
        dir.path(),
        &["nosuch.sqlite"],
        "no database file `nosuch.sqlite`",
    );
}

#[test]
fn a_missing_adapter_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_in_one_line(
        dir.path(),
        &["adapters", "remove", "spider"],
        "no adapter named `spider`",
    );
    assert!(!err.contains("adapter no adapter"), "{err}");
}
