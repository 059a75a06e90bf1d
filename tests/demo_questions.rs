//! The real default model answers demo-database questions; results (not SQL text) are compared
//! with hand-written gold SQL.

mod common;

use sqlora::cancel::Cancel;
use sqlora::llm::{Engine, LoadOptions};
use sqlora::pipeline::Pipeline;

#[derive(serde::Deserialize)]
struct Case {
    question: String,
    gold: String,
    kind: String,
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
    let mut right = 0;
    for c in &cases {
        let gold = p.run_sql(&c.gold, &cancel).expect("gold SQL runs").outcome;
        assert!(!gold.rows.is_empty(), "gold of {:?} is empty", c.question);
        match p.ask(&c.question, &cancel) {
            Ok(a) if common::same_rows(&a.outcome, &gold) => {
                right += 1;
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
    println!("demo accuracy: {right}/{}", cases.len());
    // The bar: at least 8 of 10, i.e. 80%.
    assert!(
        right * 10 >= cases.len() * 8,
        "only {right} of {} demo questions answered correctly",
        cases.len()
    );
}
