//! The vote among candidates: every candidate answer that passes the guard runs, and the
//! answer is the result most of them return.
//!
//! Owns the grouping of candidates by result (rows compared as a multiset, numbers by value),
//! the choice among groups (the most candidates; ties: the greedy answer's group, then the
//! likeliest candidate) and the confidence told with the answer. Each candidate goes through
//! the same guard and read-only run as any answer ([`Pipeline::run_sql`]); when none runs, the
//! greedy answer's failure goes to the repair step. Once a query has run, a sampled candidate
//! runs under a timeout set by the slowest so far ([`candidate_timeout`]): eight candidates
//! should not cost eight timeouts when one of them joins without a condition. Never generates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::llm::Generation;
use crate::sql::{Outcome, Value};

use super::generate::Open;
use super::{Answer, AskError, Confidence, Pipeline, Progress, Source, SqlRun};

/// Candidates that returned one result.
struct Group {
    key: (usize, Vec<String>),
    /// Candidate numbers (0: the greedy answer), in order.
    members: Vec<usize>,
    run: SqlRun,
}

/// The least time a sampled candidate gets, and how many times the slowest query so far.
const CANDIDATE_FLOOR: Duration = Duration::from_secs(2);
const CANDIDATE_FACTOR: f64 = 4.0;

/// The timeout of a sampled candidate after queries that took up to `slowest` seconds:
/// four times that, at least two seconds (the user's own timeout still caps it). Until a
/// query has run (the greedy answer runs first, under the user's timeout, but may fail before
/// running) there is nothing to go by, and the user's timeout stands.
pub(super) fn candidate_timeout(slowest: Option<f64>, user: Duration) -> Duration {
    match slowest {
        Some(s) => Duration::from_secs_f64(CANDIDATE_FACTOR * s.max(0.0)).max(CANDIDATE_FLOOR),
        None => user,
    }
}

impl Pipeline {
    /// Runs the candidates of `o`'s first round (`generations[0]` is the greedy answer) and
    /// answers with the result most of them agree on; `None` after setting `o.prompt` to the
    /// greedy answer's repair when no candidate runs.
    pub(super) fn vote(
        &mut self,
        o: &mut Open,
        generations: &[Generation],
        t0: Instant,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Option<Result<Answer, AskError>> {
        let mut groups: Vec<Group> = Vec::new();
        // The same SQL runs once.
        let mut seen: HashMap<String, Option<usize>> = HashMap::new();
        let mut greedy: Option<Result<String, AskError>> = None;
        // The longest any candidate's query took so far (seconds), once one has run.
        let mut slowest: Option<f64> = None;
        for (k, g) in generations.iter().enumerate() {
            if cancel.is_set() {
                return Some(Err(AskError::Model(crate::llm::LlmError::Cancelled)));
            }
            let (shown, result) = match self.extracted(g, o.posed.namespace.as_deref()) {
                Ok(sql) => match seen.get(&sql) {
                    Some(Some(group)) => {
                        groups[*group].members.push(k);
                        continue;
                    }
                    Some(None) => continue,
                    None => {
                        let run = if k == 0 {
                            self.run_sql(&sql, cancel)
                        } else {
                            let t = candidate_timeout(slowest, self.limits.timeout);
                            self.run_sql_within(&sql, t, cancel)
                        };
                        if let Ok(r) = &run {
                            slowest = Some(slowest.unwrap_or(0.0).max(r.query_secs));
                        }
                        (Some(sql), run)
                    }
                },
                Err(e) => (None, Err(e)),
            };
            match result {
                Ok(run) => {
                    let key = result_key(&run.outcome);
                    let at = match groups.iter().position(|g| g.key == key) {
                        Some(at) => {
                            groups[at].members.push(k);
                            at
                        }
                        None => {
                            groups.push(Group {
                                key,
                                members: vec![k],
                                run,
                            });
                            groups.len() - 1
                        }
                    };
                    if k == 0 {
                        greedy = Some(Ok(groups[at].run.sql.clone()));
                    }
                    if let Some(sql) = shown {
                        seen.insert(sql, Some(at));
                    }
                }
                Err(e) => {
                    if k == 0 {
                        greedy = Some(Err(e));
                    }
                    if let Some(sql) = shown {
                        seen.insert(sql, None);
                    }
                }
            }
        }
        let logprob = |k: usize| {
            generations[k].logprob.map_or(f64::NEG_INFINITY, |lp| {
                lp / generations[k].new_tokens.max(1) as f64
            })
        };
        let best = |g: &Group| {
            g.members
                .iter()
                .map(|&k| logprob(k))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let Some(winner) = groups.iter().max_by(|a, b| {
            a.members
                .len()
                .cmp(&b.members.len())
                .then(a.members.contains(&0).cmp(&b.members.contains(&0)))
                .then(best(a).total_cmp(&best(b)))
        }) else {
            // No candidate ran: the greedy answer is repaired, as without candidates.
            let e = match greedy {
                Some(Err(e)) => e,
                _ => AskError::NoSql("nothing".into()),
            };
            return self.repair(o, e, progress);
        };
        let source = if winner.members.contains(&0) {
            Source::Greedy
        } else {
            o.greedy_sql = Some(match &greedy {
                Some(Ok(sql)) => sql.clone(),
                Some(Err(e)) => e.sql().unwrap_or_default().to_string(),
                None => String::new(),
            });
            Source::Candidate
        };
        Some(Ok(Answer {
            question: o.posed.question.clone(),
            sql: winner.run.sql.clone(),
            attempts: std::mem::take(&mut o.attempts),
            outcome: winner.run.outcome.clone(),
            generation: o.total.clone(),
            query_secs: winner.run.query_secs,
            total_secs: t0.elapsed().as_secs_f64(),
            tables: o.posed.tables.clone(),
            source,
            confidence: Some(Confidence {
                agree: winner.members.len(),
                of: generations.len(),
            }),
            greedy_sql: o.greedy_sql.clone(),
            examples: o.posed.examples.clone(),
        }))
    }
}

/// What makes two results the same answer: the number of columns and the rows as a multiset,
/// numbers compared by value (`3`, `3.0` and `3.00` alike; non-integers to 9 digits).
fn result_key(o: &Outcome) -> (usize, Vec<String>) {
    let mut rows: Vec<String> = o
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect::<Vec<_>>().join("\u{1f}"))
        .collect();
    rows.sort_unstable();
    (o.columns.len(), rows)
}

fn cell(v: &Value) -> String {
    let number = |f: f64| {
        if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
            format!("{}", f as i64)
        } else {
            format!("{f:.8e}")
        }
    };
    match v {
        Value::Null => "\u{0}".into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => number(*f),
        Value::Decimal(d) => d.parse::<f64>().map_or_else(|_| d.clone(), number),
        other => other.display(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rows: Vec<Vec<Value>>) -> Outcome {
        Outcome {
            columns: vec!["a".into(); rows.first().map_or(1, |r| r.len())],
            rows,
            truncated: false,
        }
    }

    #[test]
    fn a_sampled_candidate_gets_four_times_the_slowest_query_and_at_least_two_seconds() {
        let user = Duration::from_secs(30);
        assert_eq!(candidate_timeout(Some(0.0), user), Duration::from_secs(2));
        assert_eq!(candidate_timeout(Some(0.1), user), Duration::from_secs(2));
        assert_eq!(candidate_timeout(Some(3.0), user), Duration::from_secs(12));
        assert_eq!(candidate_timeout(Some(-1.0), user), Duration::from_secs(2));
        // Before any query ran: the user's timeout.
        assert_eq!(candidate_timeout(None, user), user);
    }

    #[test]
    fn results_match_as_multisets_of_values() {
        let a = outcome(vec![vec![Value::Int(3)], vec![Value::Text("x".into())]]);
        let b = outcome(vec![vec![Value::Text("x".into())], vec![Value::Float(3.0)]]);
        assert_eq!(result_key(&a), result_key(&b));
        let c = outcome(vec![
            vec![Value::Decimal("3.00".into())],
            vec![Value::Text("x".into())],
        ]);
        assert_eq!(result_key(&a), result_key(&c));
        let d = outcome(vec![
            vec![Value::Int(3)],
            vec![Value::Text("x".into())],
            vec![Value::Int(3)],
        ]);
        assert_ne!(result_key(&a), result_key(&d));
        assert_ne!(
            result_key(&outcome(vec![vec![Value::Null]])),
            result_key(&outcome(vec![vec![Value::Text("NULL".into())]]))
        );
    }
}
