//! Corrections as examples, on the real default model: a confirmed pair helps from the next
//! question on and the schema prefix stays cached (examples come after it); and
//! `eval --corrections` simulates a user through the real feedback store, with a report and
//! a plot.

mod common;

use std::process::Command;

use sqlora::cancel::Cancel;
use sqlora::llm::{Engine, LoadOptions};
use sqlora::pipeline::{Pipeline, Shot};

#[test]
fn a_confirmed_pair_is_an_example_from_the_next_question_and_the_prefix_stays_cached() {
    let (_dir, db_path) = common::demo_db();
    let engine = Engine::load(&common::model_path(), &LoadOptions::default()).unwrap();
    let db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let mut p = Pipeline::new(db, Some(engine)).unwrap();
    let cancel = Cancel::new();
    let prefix = p.warm_up(&cancel).unwrap();
    assert!(prefix > 500, "{prefix}");
    let q = "How many customers live in each country?";
    let plain = p.ask(q, &cancel).unwrap();
    assert!(plain.examples.is_empty());
    assert_eq!(plain.generation.cached_tokens, prefix);

    // A user's earlier correction, with a column alias the model would not choose itself.
    let fix = "SELECT country, COUNT(*) AS customers_here FROM customers GROUP BY country";
    let kept = p.set_shots(vec![
        Shot {
            id: 7,
            question: "How many customers are there in each city?".into(),
            sql: "SELECT city, COUNT(*) AS customers_here FROM customers GROUP BY city".into(),
        },
        Shot {
            id: 8,
            question: "List the product names.".into(),
            sql: "SELECT name FROM products".into(),
        },
    ]);
    assert_eq!(kept, 2);
    let helped = p.ask(q, &cancel).unwrap();
    let ids: Vec<i64> = helped.examples.iter().map(|s| s.id).collect();
    assert_eq!(ids, [7], "only the alike pair is shown");
    assert_eq!(p.last_examples.len(), 1);
    assert_eq!(
        helped.generation.cached_tokens, prefix,
        "the schema prefix is still served from the cache"
    );
    assert!(
        helped.generation.prefill_tokens > plain.generation.prefill_tokens,
        "the example is prefilled after the prefix"
    );
    assert!(
        helped.sql.contains("customers_here"),
        "the example's style reached the answer: {} (wanted like {fix})",
        helped.sql
    );
}

#[test]
fn eval_corrections_simulates_a_user_through_the_feedback_store() {
    let data = common::shared_data().join("adapt/kaggledbqa");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corrections.json");
    let run = Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .env("SQLORA_DATA_DIR", dir.path())
        .env_remove("SQLORA_MODEL")
        .env_remove("SQLORA_FEEDBACK_DB")
        .args(["eval", "--offline", "--set"])
        .arg(data.join("test.jsonl"))
        .arg("--corrections")
        .arg(data.join("pool.jsonl"))
        .args(["--n", "0,4", "--limit", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("unknown table/column answers"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["n"], 0);
    assert_eq!(points[1]["n"], 4);
    let shown = |p: &serde_json::Value| {
        p["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["examples"].as_array().is_some_and(|e| !e.is_empty()))
            .count()
    };
    assert_eq!(shown(&points[0]), 0, "no corrections, no examples");
    assert!(shown(&points[1]) > 0, "{}", points[1]);
    // The pairs recorded per database are counted.
    let by_db = points[1]["by_db"].as_object().unwrap();
    assert!(by_db.values().all(|v| v[0] == 4), "{by_db:?}");
    let png = std::fs::read(out.with_extension("png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // Pool and test sharing a question is refused: that would be answering from the test.
    let run = Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .env("SQLORA_DATA_DIR", dir.path())
        .args(["eval", "--offline", "--set"])
        .arg(data.join("test.jsonl"))
        .arg("--corrections")
        .arg(data.join("test.jsonl"))
        .args(["--n", "1", "--limit", "1"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("share the question"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
