//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use sqlora::db::{Outcome, Value};

/// The default model, which `.ci/run` fetches before the tests (`sqlora model pull`).
pub fn model_path() -> PathBuf {
    let opts = sqlora::cli::ModelOpts {
        model: std::env::var("SQLORA_TEST_MODEL").ok(),
        offline: true,
    };
    sqlora::model_path(&opts).unwrap_or_else(|e| {
        panic!("these tests need the real model: {e:#} (run `cargo run --release -- model pull`)")
    })
}

/// A fresh demo database in its own temporary folder.
pub fn demo_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlora::db::demo::ensure(dir.path()).unwrap();
    (dir, path)
}

fn norm(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => format!("{:.2}", *i as f64),
        Value::Float(f) => format!("{:.2}", f),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => format!("{b:?}"),
    }
}

/// Result sets as multisets of rows, each row a multiset of values (column order ignored),
/// numbers compared to 2 decimals.
pub fn same_rows(a: &Outcome, b: &Outcome) -> bool {
    let key = |o: &Outcome| {
        let mut rows: Vec<Vec<String>> = o
            .rows
            .iter()
            .map(|r| {
                let mut r: Vec<String> = r.iter().map(norm).collect();
                r.sort();
                r
            })
            .collect();
        rows.sort();
        rows
    };
    a.columns.len() == b.columns.len() && key(a) == key(b)
}

pub fn sha256(path: &std::path::Path) -> String {
    sqlora::llm::registry::sha256_file(path).unwrap()
}

/// The shared data directory (Spider and the sample databases): `$SQLORA_EVAL_DATA`, else
/// `../shared/data` beside the checkout. CI always has it; elsewhere the test fails saying so.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("SQLORA_EVAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join(sqlora::eval::SPIDER_DEV).is_file(),
        "this test needs the shared data directory with Spider ({} is missing); set \
         SQLORA_EVAL_DATA to the directory that holds spider/",
        dir.join(sqlora::eval::SPIDER_DEV).display()
    );
    dir
}
