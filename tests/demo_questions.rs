//! The real default model answers demo-database questions; results (not SQL text) are compared
//! with hand-written gold SQL.
//!
//! `core` questions (filters, joins, GROUP BY, ORDER BY … LIMIT, dates) carry the bar of
//! 8 in 10. `stretch` questions (anti-join, self-join, three-table join, join + ranking) are
//! beyond what the 0.5B model does reliably today; they are answered and reported, so a better
//! model, prompt or adapter shows up here, but not asserted.

mod common;

use sqlora::cancel::Cancel;
use sqlora::llm::{Engine, LoadOptions};
use sqlora::pipeline::Pipeline;

#[derive(serde::Deserialize)]
struct Case {
    question: String,
    gold: String,
    kind: String,
    tier: String,
}

#[test]
fn default_model_answers_demo_questions() {
    let cases: Vec<Case> = serde_json::from_str(include_str!("data/demo_questions.json")).unwrap();
    assert!(cases.len() >= 10);
    let (_dir, db_path) = common::demo_db();
    let engine = Engine::load(&common::model_path(), &LoadOptions::default()).unwrap();
    let db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let mut p = Pipeline::new(db, Some(engine)).unwrap();
    let cancel = Cancel::new();
    let (mut right, mut core, mut core_right) = (0, 0, 0);
    for c in &cases {
        let is_core = c.tier == "core";
        core += usize::from(is_core);
        let gold = p.run_sql(&c.gold, &cancel).expect("gold SQL runs").outcome;
        assert!(!gold.rows.is_empty(), "gold of {:?} is empty", c.question);
        match p.ask(&c.question, &cancel) {
            Ok(a) if common::same_rows(&a.outcome, &gold) => {
                right += 1;
                core_right += usize::from(is_core);
                println!(
                    "ok    [{}] {} -> {}",
                    c.kind,
                    c.question,
                    a.sql.replace('\n', " ")
                );
            }
            Ok(a) => println!(
                "WRONG [{}] {} -> {}",
                c.kind,
                c.question,
                a.sql.replace('\n', " ")
            ),
            Err(e) => println!(
                "ERROR [{}] {} -> {}",
                c.kind,
                c.question,
                e.to_string().replace('\n', " ")
            ),
        }
    }
    println!(
        "demo accuracy: core {core_right}/{core}, all {right}/{}",
        cases.len()
    );
    assert!(core >= 10, "the core set must have at least 10 questions");
    // The bar: at least 8 of 10.
    assert!(
        core_right * 10 >= core * 8,
        "only {core_right} of {core} core demo questions answered correctly"
    );
}
