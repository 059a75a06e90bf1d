//! `sqlora feedback …`: record a corrected answer from the command line (checked by the guard
//! and run first, as `\fix` does), take answers out of examples and training (`remove`), and
//! list, export and count what the store holds. The
//! store itself is [`crate::feedback`]'s; this only opens it and prints.

use anyhow::{bail, Context, Result};

use super::session::{open_database, open_feedback};
use crate::cancel::Cancel;
use crate::cli::FeedbackCommand;
use crate::shell::render;
use crate::{db, feedback, pipeline, sql};

/// Runs `sqlora feedback …`.
pub fn command(cmd: FeedbackCommand) -> Result<()> {
    use feedback::{Filter, Review};
    let identity = |url: &Option<String>| -> Result<Option<String>> {
        url.as_deref()
            .map(db::identity)
            .transpose()
            .map_err(anyhow::Error::from)
    };
    match cmd {
        FeedbackCommand::Record {
            db,
            feedback,
            question,
            sql,
            verdict,
            note,
        } => {
            if question.trim().is_empty() {
                bail!("the question is empty");
            }
            let mut p = pipeline::Pipeline::new(open_database(&db)?, None)?;
            // The same check as \fix: the SQL must pass the guard and run.
            let run = p
                .run_sql(&sql, &Cancel::new())
                .map_err(|e| anyhow::anyhow!("{}", e.one_line()))?;
            let mut store = open_feedback(&feedback)?;
            let verdict = Review::parse(&verdict).unwrap_or(Review::Corrected);
            let id = store.record(&feedback::NewAnswer {
                question: question.trim().to_string(),
                db_identity: p.describe_db(),
                dialect: p.dialect().name().to_string(),
                schema_context: p.context().to_string(),
                model: "none".into(),
                final_sql: Some(run.sql.clone()),
                verdict: Some(verdict),
                correction: (verdict == Review::Corrected).then(|| run.sql.clone()),
                note,
                source: "cli".into(),
                ..Default::default()
            })?;
            println!("{id}");
            eprintln!(
                "sqlora: recorded #{id} ({}, {} row{} checked)",
                verdict.as_str(),
                run.outcome.rows.len(),
                if run.outcome.rows.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        FeedbackCommand::List {
            feedback,
            db,
            verdict,
            limit,
        } => {
            let mut store = open_feedback(&feedback)?;
            let entries = store.list(&Filter {
                db: identity(&db)?,
                verdict: verdict.as_deref().and_then(Review::parse),
                since: None,
                limit: Some(limit),
            })?;
            let o = sql::Outcome {
                columns: ["id", "when", "verdict", "database", "question", "sql"]
                    .map(String::from)
                    .to_vec(),
                rows: entries
                    .iter()
                    .map(|e| {
                        let sql = e.correction.clone().or_else(|| e.final_sql.clone());
                        vec![
                            sql::Value::Int(e.id),
                            sql::Value::Text(
                                e.updated_at.replace('T', " ").chars().take(16).collect(),
                            ),
                            sql::Value::Text(match e.removed_at {
                                Some(_) => format!("{} (removed)", e.verdict.as_str()),
                                None => e.verdict.as_str().into(),
                            }),
                            sql::Value::Text(e.db_identity.clone()),
                            sql::Value::Text(e.question.clone()),
                            sql.map_or(sql::Value::Null, sql::Value::Text),
                        ]
                    })
                    .collect(),
                truncated: false,
            };
            println!("{}", render::table(&o, None));
            println!("{}", render::row_count_line(&o));
            Ok(())
        }
        FeedbackCommand::Export {
            feedback,
            format: _,
            since,
            db,
            out,
        } => {
            let mut store = open_feedback(&feedback)?;
            let filter = Filter {
                db: identity(&db)?,
                since,
                ..Filter::default()
            };
            let pairs = store.export(&filter)?;
            let mut text = String::new();
            for p in &pairs {
                text.push_str(&serde_json::to_string(p)?);
                text.push('\n');
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "sqlora: {} pairs written to {}",
                        pairs.len(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        FeedbackCommand::Remove { feedback, ids } => {
            let mut store = open_feedback(&feedback)?;
            for id in ids {
                match store.remove(id)? {
                    true => eprintln!("sqlora: #{id} removed from examples and training"),
                    false => eprintln!("sqlora: #{id} was removed already"),
                }
            }
            Ok(())
        }
        FeedbackCommand::Stats { feedback } => {
            let mut store = open_feedback(&feedback)?;
            let (counts, fresh) = store.stats()?;
            let o = sql::Outcome {
                columns: ["database", "verdict", "answers"]
                    .map(String::from)
                    .to_vec(),
                rows: counts
                    .into_iter()
                    .map(|(d, v, n)| {
                        vec![sql::Value::Text(d), sql::Value::Text(v), sql::Value::Int(n)]
                    })
                    .collect(),
                truncated: false,
            };
            println!("{}", render::table(&o, None));
            println!(
                "{fresh} training pairs not yet used in a training run ({})",
                store.describe()
            );
            Ok(())
        }
    }
}
