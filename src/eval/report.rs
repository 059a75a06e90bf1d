//! The evaluation summary (EX overall and by difficulty, failure counts, latency, tokens), its
//! comfy-table rendering, the JSON report `--out` writes, and `--compare` of two reports.

use std::collections::BTreeMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::{Deserialize, Serialize};

use super::{Hardness, Record, Verdict};

/// Correct answers out of judged questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub correct: usize,
    pub total: usize,
}

impl Score {
    /// Execution accuracy in percent (0 when nothing was judged).
    pub fn ex(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }

    fn add(&mut self, correct: bool) {
        self.total += 1;
        self.correct += usize::from(correct);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Questions run (including any whose gold SQL failed).
    pub questions: usize,
    /// EX over the questions whose gold SQL ran.
    pub overall: Score,
    /// EX by Spider difficulty, for questions that have one.
    pub by_hardness: BTreeMap<Hardness, Score>,
    /// How many questions ended in each verdict.
    pub verdicts: BTreeMap<Verdict, usize>,
    pub mean_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub tokens_generated: usize,
    /// Questions where the model was shown an error and asked again at least once.
    #[serde(default)]
    pub repaired: usize,
    /// Of those, how many ended correct.
    #[serde(default)]
    pub repaired_correct: usize,
    /// The greedy answer failed and a sampled candidate answered instead: (questions, correct).
    #[serde(default)]
    pub rescued: (usize, usize),
    /// The greedy answer ran but the candidates outvoted it: (questions, wrong → right,
    /// right → wrong).
    #[serde(default)]
    pub outvoted: (usize, usize, usize),
    /// EX of the answers most candidates agreed on, and of those at most half agreed on.
    #[serde(default)]
    pub confident: Score,
    #[serde(default)]
    pub unconfident: Score,
    /// Milliseconds the token mask cost per generated token.
    #[serde(default)]
    pub mask_ms_per_token: f64,
}

impl Summary {
    pub fn of(records: &[Record]) -> Self {
        let mut overall = Score::default();
        let mut by_hardness = BTreeMap::new();
        let mut verdicts = BTreeMap::new();
        let mut latencies = Vec::new();
        for r in records {
            *verdicts.entry(r.verdict).or_insert(0) += 1;
            if r.verdict == Verdict::GoldError {
                continue;
            }
            let ok = r.verdict == Verdict::Correct;
            overall.add(ok);
            if let Some(h) = r.hardness {
                by_hardness.entry(h).or_insert_with(Score::default).add(ok);
            }
            latencies.push(r.latency_ms as f64);
        }
        latencies.sort_by(f64::total_cmp);
        let mean = if latencies.is_empty() {
            0.0
        } else {
            latencies.iter().sum::<f64>() / latencies.len() as f64
        };
        let p50 = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
        let (mut rescued, mut outvoted) = ((0, 0), (0, 0, 0));
        let (mut confident, mut unconfident) = (Score::default(), Score::default());
        for r in records.iter().filter(|r| r.verdict != Verdict::GoldError) {
            let ok = r.verdict == Verdict::Correct;
            match r.greedy {
                Some(Verdict::Correct | Verdict::Wrong) => {
                    outvoted.0 += 1;
                    outvoted.1 += usize::from(ok && r.greedy == Some(Verdict::Wrong));
                    outvoted.2 += usize::from(!ok && r.greedy == Some(Verdict::Correct));
                }
                Some(_) => {
                    rescued.0 += 1;
                    rescued.1 += usize::from(ok);
                }
                None => {}
            }
            match r.confidence {
                Some(c) if c.is_low() => unconfident.add(ok),
                Some(_) => confident.add(ok),
                None => {}
            }
        }
        let tokens: usize = records.iter().map(|r| r.tokens).sum();
        let mask_ms: f64 = records.iter().map(|r| r.mask_ms).sum();
        Summary {
            rescued,
            outvoted,
            confident,
            unconfident,
            mask_ms_per_token: mask_ms / tokens.max(1) as f64,
            questions: records.len(),
            overall,
            by_hardness,
            verdicts,
            mean_latency_ms: mean,
            p50_latency_ms: p50,
            tokens_generated: records.iter().map(|r| r.tokens).sum(),
            repaired: records.iter().filter(|r| r.attempts > 1).count(),
            repaired_correct: records
                .iter()
                .filter(|r| r.attempts > 1 && r.verdict == Verdict::Correct)
                .count(),
        }
    }

    /// The summary as two tables: EX by difficulty, then counts and costs.
    pub fn render(&self) -> String {
        let mut ex = Table::new();
        ex.load_preset(UTF8_FULL_CONDENSED);
        ex.set_header(vec!["difficulty", "questions", "correct", "EX"]);
        let row = |name: &str, s: &Score| {
            vec![
                Cell::new(name),
                Cell::new(s.total).set_alignment(CellAlignment::Right),
                Cell::new(s.correct).set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.1}%", s.ex())).set_alignment(CellAlignment::Right),
            ]
        };
        for h in Hardness::ALL {
            if let Some(s) = self.by_hardness.get(&h) {
                ex.add_row(row(h.name(), s));
            }
        }
        ex.add_row(row("all", &self.overall));

        let mut counts = Table::new();
        counts.load_preset(UTF8_FULL_CONDENSED);
        counts.set_header(vec!["outcome", "questions"]);
        for v in Verdict::ALL {
            let n = self.verdicts.get(&v).copied().unwrap_or(0);
            if n > 0 || matches!(v, Verdict::Correct | Verdict::Wrong) {
                counts.add_row(vec![
                    Cell::new(v.name()),
                    Cell::new(n).set_alignment(CellAlignment::Right),
                ]);
            }
        }
        let mut stages = String::new();
        if self.confident.total + self.unconfident.total > 0 {
            stages.push_str(&format!(
                "candidates: answered {} questions whose greedy answer failed ({} correct); \
                 outvoted {} greedy answers ({} wrong → right, {} right → wrong)\n\
                 EX where most candidates agree: {:.1}% of {}; where at most half agree: \
                 {:.1}% of {}\n",
                self.rescued.0,
                self.rescued.1,
                self.outvoted.0,
                self.outvoted.1,
                self.outvoted.2,
                self.confident.ex(),
                self.confident.total,
                self.unconfident.ex(),
                self.unconfident.total,
            ));
        }
        format!(
            "{ex}\n{counts}\n{stages}repaired after an error: {} questions ({} of them correct)\n\
             latency: mean {:.2} s, p50 {:.2} s · tokens generated: {} ({:.1} per question) · \
             token mask: {:.3} ms per token",
            self.repaired,
            self.repaired_correct,
            self.mean_latency_ms / 1000.0,
            self.p50_latency_ms / 1000.0,
            self.tokens_generated,
            self.tokens_generated as f64 / self.questions.max(1) as f64,
            self.mask_ms_per_token,
        )
    }
}

/// Everything `--out` writes: what was run, the summary, and every question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `spider-dev` or the question file.
    pub set: String,
    pub model: String,
    /// Whether every selected question was run (false after Ctrl-C).
    pub complete: bool,
    pub offset: usize,
    pub limit: Option<usize>,
    /// How answers were generated (`constrain on, 8 candidates (…)`).
    #[serde(default)]
    pub levers: String,
    pub summary: Summary,
    pub records: Vec<Record>,
}

/// A question judged differently by two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    pub index: usize,
    pub question: String,
    pub before: Verdict,
    pub after: Verdict,
    pub before_sql: Option<String>,
    pub after_sql: Option<String>,
}

/// The questions both reports hold (matched by set position and text), in `a`'s order.
fn matched<'a>(a: &'a Report, b: &'a Report) -> Vec<(&'a Record, &'a Record)> {
    let by_key: BTreeMap<(usize, &str), &Record> = b
        .records
        .iter()
        .map(|r| ((r.index, r.question.as_str()), r))
        .collect();
    a.records
        .iter()
        .filter_map(|ra| Some((ra, *by_key.get(&(ra.index, ra.question.as_str()))?)))
        .collect()
}

/// Questions that are correct in one report and not in the other, in set order.
pub fn flips(a: &Report, b: &Report) -> Vec<Flip> {
    matched(a, b)
        .into_iter()
        .filter(|(ra, rb)| (ra.verdict == Verdict::Correct) != (rb.verdict == Verdict::Correct))
        .map(|(ra, rb)| Flip {
            index: ra.index,
            question: ra.question.clone(),
            before: ra.verdict,
            after: rb.verdict,
            before_sql: ra.predicted.clone(),
            after_sql: rb.predicted.clone(),
        })
        .collect()
}

/// How many questions the two reports share.
pub fn shared(a: &Report, b: &Report) -> usize {
    matched(a, b).len()
}

/// How many questions of both reports got the very same predicted SQL (to check that two
/// devices, batch sizes or builds answer alike).
pub fn same_sql(a: &Report, b: &Report) -> usize {
    matched(a, b)
        .into_iter()
        .filter(|(ra, rb)| ra.predicted.is_some() && rb.predicted == ra.predicted)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: usize, verdict: Verdict, h: Option<Hardness>, ms: u64) -> Record {
        Record {
            index,
            db: "x.sqlite".into(),
            question: format!("q{index}"),
            gold: "SELECT 1".into(),
            predicted: Some("SELECT 1".into()),
            verdict,
            error: None,
            hardness: h,
            attempts: 1,
            tokens: 10,
            latency_ms: ms,
            tables: Vec::new(),
            source: None,
            confidence: None,
            greedy: None,
            mask_ms: 0.0,
            examples: Vec::new(),
        }
    }

    #[test]
    fn summary_counts_ex_by_difficulty_and_leaves_gold_failures_out() {
        use Hardness::*;
        let records = vec![
            rec(0, Verdict::Correct, Some(Easy), 1000),
            rec(1, Verdict::Wrong, Some(Easy), 2000),
            Record {
                attempts: 3,
                ..rec(2, Verdict::ExecError, Some(Hard), 3000)
            },
            rec(3, Verdict::GoldError, Some(Hard), 0),
            Record {
                attempts: 2,
                ..rec(4, Verdict::Correct, None, 4000)
            },
        ];
        let s = Summary::of(&records);
        assert_eq!(s.questions, 5);
        assert_eq!(
            s.overall,
            Score {
                correct: 2,
                total: 4
            }
        );
        assert_eq!(s.overall.ex(), 50.0);
        assert_eq!(
            s.by_hardness[&Easy],
            Score {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(
            s.by_hardness[&Hard],
            Score {
                correct: 0,
                total: 1
            }
        );
        assert_eq!(s.verdicts[&Verdict::GoldError], 1);
        assert_eq!(s.mean_latency_ms, 2500.0);
        assert_eq!(s.tokens_generated, 50);
        assert_eq!((s.repaired, s.repaired_correct), (2, 1));
        let text = s.render();
        assert!(
            text.contains("50.0%") && text.contains("execution error"),
            "{text}"
        );
    }

    #[test]
    fn flips_list_questions_that_changed_correctness() {
        let report = |verdicts: &[Verdict]| Report {
            set: "t".into(),
            model: "m".into(),
            complete: true,
            offset: 0,
            limit: None,
            levers: String::new(),
            summary: Summary::of(&[]),
            records: verdicts
                .iter()
                .enumerate()
                .map(|(i, v)| rec(i, *v, None, 1))
                .collect(),
        };
        let a = report(&[
            Verdict::Correct,
            Verdict::Wrong,
            Verdict::ParseError,
            Verdict::Correct,
        ]);
        let b = report(&[
            Verdict::Correct,
            Verdict::Correct,
            Verdict::ExecError,
            Verdict::Wrong,
        ]);
        let f = flips(&a, &b);
        assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            (f[1].before, f[1].after),
            (Verdict::Correct, Verdict::Wrong)
        );
        assert_eq!(shared(&a, &b), 4);
    }
}
