//! The identifier check must never reject a correct query: every Spider gold query (dev and
//! train, on their real databases) passes it. A false alarm here would cost a user a right
//! answer, so the test lists any that appear.

mod common;

use std::collections::HashMap;

use sqlora::db::{self, Dialect};
use sqlora::guard;

fn check_set(file: &str) -> (usize, usize, Vec<String>) {
    let data = common::shared_data();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(data.join(file)).unwrap()).unwrap();
    let mut schemas = HashMap::new();
    let mut conns: HashMap<String, Box<dyn db::Database>> = HashMap::new();
    let (mut checked, mut unparsed) = (0, 0);
    let mut false_alarms = Vec::new();
    for row in &rows {
        let db_id = row["db_id"].as_str().unwrap();
        let path = data.join(format!("spider/database/{db_id}/{db_id}.sqlite"));
        if !path.is_file() {
            continue;
        }
        let schema = schemas.entry(db_id.to_string()).or_insert_with(|| {
            db::open(&path.to_string_lossy())
                .unwrap()
                .introspect()
                .unwrap()
        });
        let gold = row["query"].as_str().unwrap();
        // A handful of gold queries use syntax sqlparser does not take; the guard refuses
        // those as parse errors before names are looked at.
        let Ok(checked_sql) = guard::check(gold, Dialect::Sqlite) else {
            unparsed += 1;
            continue;
        };
        checked += 1;
        if let Err(unknown) =
            guard::names::check_names(&checked_sql.statement, schema, Dialect::Sqlite)
        {
            // A few upstream gold queries are wrong (Spider train has 3): the database
            // rejects those too, so flagging them is right.
            let conn = conns
                .entry(db_id.to_string())
                .or_insert_with(|| db::open(&path.to_string_lossy()).unwrap());
            let limits = db::Limits {
                max_rows: 1,
                ..Default::default()
            };
            if conn
                .query(gold, &limits, &sqlora::cancel::Cancel::new())
                .is_err()
            {
                continue;
            }
            let why: Vec<String> = unknown.iter().map(ToString::to_string).collect();
            false_alarms.push(format!("[{db_id}] {gold}\n    {}", why.join("; ")));
        }
    }
    (checked, unparsed, false_alarms)
}

#[test]
fn no_spider_gold_query_is_rejected_for_its_names() {
    let mut all = Vec::new();
    for file in [
        "spider/derived/dev_without_wta_1.json",
        "spider/train_spider_min.json",
    ] {
        let (checked, unparsed, alarms) = check_set(file);
        eprintln!(
            "{file}: {checked} gold queries checked, {unparsed} unparsed, {} false alarms",
            alarms.len()
        );
        assert!(checked > 900, "{file}: only {checked} checked");
        all.extend(alarms);
    }
    assert!(
        all.is_empty(),
        "{} correct queries rejected:\n{}",
        all.len(),
        all.join("\n")
    );
}
