//! The shell's feedback commands: each answer is logged to the feedback store as unreviewed,
//! and `\ok`, `\fix`, `\bad` judge the last one, `\undo` takes a verdict back and `\history`
//! lists what was logged. Accepted and corrected answers of this database are the examples
//! later questions are shown (reloaded after every verdict). The store is opened by whoever
//! started the shell; without one nothing is logged, `\undo` and `\history` say that feedback
//! is off, and the shell goes on.
//! Never trains and never changes an answer's SQL but through `\fix`, whose SQL must pass the
//! guard and run first.

use super::{AskError, Outcome, Shell};

/// The last logged answer: what `\ok`, `\fix` and `\bad` judge.
pub(super) struct LastAnswer {
    id: i64,
    sql: Option<String>,
}

impl Shell {
    /// Logs an answer (or a failed one) as unreviewed; it becomes what `\\ok` and co. judge.
    pub(super) fn log_answer(
        &mut self,
        question: &str,
        result: &Result<crate::pipeline::Answer, AskError>,
    ) {
        if matches!(
            result,
            Err(AskError::Model(crate::llm::LlmError::Cancelled))
        ) {
            return;
        }
        let Some(store) = self.feedback.as_mut() else {
            return;
        };
        let mut entry = crate::feedback::NewAnswer {
            question: question.to_string(),
            db_identity: self.pipeline.describe_db(),
            dialect: self.pipeline.dialect().name().to_string(),
            schema_context: self.pipeline.context().to_string(),
            model: self
                .pipeline
                .backend()
                .map_or_else(|| "none".into(), |e| e.info().name.clone()),
            adapter: self.pipeline.backend().and_then(|e| e.adapter_name()),
            source: "shell".into(),
            ..Default::default()
        };
        match result {
            Ok(a) => {
                entry.generated_sql = Some(
                    a.attempts
                        .first()
                        .map_or_else(|| a.sql.clone(), |at| at.sql.clone()),
                );
                entry.attempts = a
                    .attempts
                    .iter()
                    .map(|at| (at.sql.clone(), at.error.clone()))
                    .collect();
                entry.final_sql = Some(a.sql.clone());
            }
            Err(e) => {
                entry.generated_sql = e.sql().map(str::to_string);
                entry.error = Some(e.to_string().lines().next().unwrap_or("").to_string());
            }
        }
        let sql = entry
            .final_sql
            .clone()
            .or_else(|| entry.generated_sql.clone());
        match store.record(&entry) {
            Ok(id) => self.last = Some(LastAnswer { id, sql }),
            Err(e) => eprintln!("sqlora: {e} (this answer was not logged)"),
        }
    }

    fn judge(
        &mut self,
        verdict: crate::feedback::Review,
        correction: Option<&str>,
        note: Option<&str>,
    ) {
        let (Some(store), Some(last)) = (self.feedback.as_mut(), self.last.as_ref()) else {
            eprintln!("sqlora: no answer to judge yet (ask a question first)");
            return;
        };
        match store.set_verdict(last.id, verdict, correction, note) {
            Ok(()) => {
                self.judged.push(last.id);
                eprintln!("answer #{} marked {}", last.id, verdict.as_str());
                self.reload_examples();
            }
            Err(e) => eprintln!("sqlora: {e}"),
        }
    }

    /// Gives the pipeline this database's confirmed pairs again, so a verdict just given (or
    /// taken back) shapes the examples of the next question.
    pub(super) fn reload_examples(&mut self) {
        let Some(store) = self.feedback.as_mut() else {
            return;
        };
        match store.confirmed(&self.pipeline.describe_db()) {
            Ok(pairs) => {
                self.pipeline.set_shots(
                    pairs
                        .into_iter()
                        .map(|c| crate::pipeline::Shot {
                            id: c.id,
                            question: c.question,
                            sql: c.sql,
                        })
                        .collect(),
                );
            }
            Err(e) => eprintln!("sqlora: {e} (earlier answers are not used as examples)"),
        }
    }

    pub fn accept(&mut self) {
        self.judge(crate::feedback::Review::Accepted, None, None);
    }

    pub fn reject(&mut self, note: &str) {
        let note = (!note.trim().is_empty()).then_some(note.trim());
        self.judge(crate::feedback::Review::Rejected, None, note);
    }

    /// `\\fix [SQL]`: the corrected SQL from the argument, `$VISUAL`/`$EDITOR`, or typed
    /// lines; it must pass the guard and run before it is saved.
    pub fn fix(&mut self, arg: &str) {
        let Some(last) = self.last.as_ref() else {
            eprintln!("sqlora: no answer to correct yet (ask a question first)");
            return;
        };
        let start = last.sql.clone().unwrap_or_default();
        let sql = if !arg.trim().is_empty() {
            arg.trim().to_string()
        } else {
            match super::input::edit_sql(&start) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sqlora: {e}");
                    return;
                }
            }
        };
        let sql = sql.trim().trim_end_matches(';').trim().to_string();
        if sql.is_empty() {
            eprintln!("sqlora: empty SQL; nothing saved");
            return;
        }
        match self.pipeline.run_sql(&sql, &self.cancel) {
            Ok(r) => {
                println!("{}", self.paint("36", &r.sql));
                self.print_outcome(r.outcome, r.query_secs);
                self.judge(crate::feedback::Review::Corrected, Some(&r.sql), None);
                self.conversation.corrected(&r.sql);
            }
            Err(e) => {
                self.report(&e);
                eprintln!("sqlora: the correction was not saved");
            }
        }
    }

    pub fn undo(&mut self) {
        let Some(store) = self.feedback.as_mut() else {
            eprintln!("sqlora: feedback is off this session");
            return;
        };
        let Some(id) = self.judged.pop() else {
            eprintln!("sqlora: nothing to undo");
            return;
        };
        match store.undo(id) {
            Ok(Some(v)) => {
                eprintln!("answer #{id} is back to {}", v.as_str());
                self.reload_examples();
            }
            Ok(None) => eprintln!("sqlora: nothing to undo for answer #{id}"),
            Err(e) => eprintln!("sqlora: {e}"),
        }
    }

    pub fn history(&mut self, arg: &str) {
        let Some(store) = self.feedback.as_mut() else {
            eprintln!("sqlora: feedback is off this session");
            return;
        };
        let limit = arg.trim().parse().unwrap_or(20);
        let filter = crate::feedback::Filter {
            limit: Some(limit),
            ..Default::default()
        };
        match store.list(&filter) {
            Ok(entries) => {
                let o = Outcome {
                    columns: vec![
                        "id".into(),
                        "when".into(),
                        "verdict".into(),
                        "question".into(),
                    ],
                    rows: entries
                        .iter()
                        .map(|e| {
                            vec![
                                crate::sql::Value::Int(e.id),
                                crate::sql::Value::Text(
                                    e.updated_at.replace('T', " ")[..16].to_string(),
                                ),
                                crate::sql::Value::Text(e.verdict.as_str().into()),
                                crate::sql::Value::Text(e.question.clone()),
                            ]
                        })
                        .collect(),
                    truncated: false,
                };
                self.print_outcome(o, 0.0);
            }
            Err(e) => eprintln!("sqlora: {e}"),
        }
    }
}
