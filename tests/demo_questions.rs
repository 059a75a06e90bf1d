//! The real default model answers demo-database questions, as a user gets it (with the adapter
//! shipped for it) and without the adapter; results (not SQL text) are compared with
//! hand-written gold SQL.
//!
//! `core` questions (filters, joins, GROUP BY, ORDER BY … LIMIT, dates) carry the bar of
//! 8 in 10. `stretch` questions (anti-join, self-join, three-table join, join + ranking) are
//! beyond what the 0.5B model does reliably today; they are answered and reported, so a better
//! model, prompt or adapter shows up here, but not asserted.

mod common;

use sqlora::cancel::Cancel;
use sqlora::llm::lora::bundled;
use sqlora::llm::lora::library::Library;
use sqlora::llm::{Engine, LoadOptions};
use sqlora::pipeline::Pipeline;

#[derive(serde::Deserialize)]
struct Case {
    question: String,
    gold: String,
    kind: String,
    tier: String,
}

/// Answers every case with `p` as it stands; returns (core right, all right).
fn answer_all(p: &mut Pipeline, cases: &[Case], label: &str) -> (usize, usize) {
    let cancel = Cancel::new();
    let (mut right, mut core_right) = (0, 0);
    for c in cases {
        let is_core = c.tier == "core";
        let gold = p.run_sql(&c.gold, &cancel).expect("gold SQL runs").outcome;
        assert!(!gold.rows.is_empty(), "gold of {:?} is empty", c.question);
        match p.ask(&c.question, &cancel) {
            Ok(a) if common::same_rows(&a.outcome, &gold) => {
                right += 1;
                core_right += usize::from(is_core);
                println!(
                    "{label}: ok    [{}] {} -> {}",
                    c.kind,
                    c.question,
                    a.sql.replace('\n', " ")
                );
            }
            Ok(a) => println!(
                "{label}: WRONG [{}] {} -> {}",
                c.kind,
                c.question,
                a.sql.replace('\n', " ")
            ),
            Err(e) => println!(
                "{label}: ERROR [{}] {} -> {}",
                c.kind,
                c.question,
                e.to_string().replace('\n', " ")
            ),
        }
    }
    (core_right, right)
}

/// The model as a user gets it by default (with the adapter shipped for it) answers the demo
/// questions, and at least as many as the base model does.
#[test]
fn default_model_answers_demo_questions() {
    let cases: Vec<Case> = serde_json::from_str(include_str!("data/demo_questions.json")).unwrap();
    assert!(cases.len() >= 10);
    let core = cases.iter().filter(|c| c.tier == "core").count();
    assert!(core >= 10, "the core set must have at least 10 questions");
    let (_dir, db_path) = common::demo_db();
    let engine = Engine::load(&common::model_path(), &LoadOptions::default()).unwrap();
    let db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let mut p = Pipeline::new(db, Some(engine)).unwrap();

    let (base_core, base_all) = answer_all(&mut p, &cases, "base");
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = Library::new(lib_dir.path().to_path_buf());
    bundled::install(&lib).unwrap();
    let engine = p.engine_mut().unwrap();
    let base = sqlora::hub::base_identity(engine);
    assert!(
        bundled::fits(&base),
        "the shipped adapter is for the default model"
    );
    let adapter = lib.load_for(bundled::NAME, &base).unwrap();
    assert_eq!(adapter.sha256, bundled::weights_sha256());
    engine.set_adapter(Some(adapter)).unwrap();
    let (core_right, right) = answer_all(&mut p, &cases, "shipped");
    println!(
        "demo accuracy: base core {base_core}/{core}, all {base_all}/{n}; with the shipped \
         adapter core {core_right}/{core}, all {right}/{n}",
        n = cases.len()
    );
    // The bar: at least 8 of 10, by default.
    assert!(
        core_right * 10 >= core * 8,
        "only {core_right} of {core} core demo questions answered correctly"
    );
    assert!(
        right >= base_all,
        "the shipped adapter answers {right} demo questions, the base model {base_all}"
    );
}
