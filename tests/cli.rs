//! The `sqlora` binary as a user and a script see it: `ask --format json`, refusals in the
//! shell, and one-line errors for bad input.

mod common;

use std::io::Write;
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
    let mut child = sqlora(dir)
        .arg("shell")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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
        "not a usable GGUF model",
    );
    check(
        &["ask", "--timeout", "0", "hi"],
        "--timeout must be a positive number",
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
    assert!(stderr.contains("not a usable GGUF model"), "{stderr}");
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
