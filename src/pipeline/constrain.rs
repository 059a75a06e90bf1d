//! The levers on how answers are generated — the schema mask and the sampled candidates — and
//! the mask itself as the model's decoding loop sees it.
//!
//! Owns [`Levers`] (what the user chose: `--constrain`, `--candidates`, temperature, seed),
//! the tables a question's mask allows (those the model was shown), and [`SqlMask`], which
//! hands the guard's identifier state ([`crate::guard::constrain`]) to the decoding loop as a
//! [`Constraint`]. The rules of what may follow are the guard's; never decodes.

use std::sync::Arc;

use crate::guard::constrain::{Names, Tracker};
use crate::llm::prompt::ANSWER_START;
use crate::llm::{Constraint, Sample, TokenMask, TokenTest};
use crate::schema::Table;

use super::Pipeline;

/// How answers are generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levers {
    /// Identifiers are masked to those of the tables shown (`--constrain on|off`).
    pub constrain: bool,
    /// Answers generated for each question: the greedy one and `candidates - 1` sampled ones,
    /// voted on by their results (`--candidates N`; 1: greedy only; 0: the device's default,
    /// [`GPU_CANDIDATES`] or [`CPU_CANDIDATES`]).
    pub candidates: usize,
    /// Softmax temperature of the sampled candidates.
    pub temperature: f32,
    /// Sampled candidates draw from this many of the best allowed tokens.
    pub top_k: usize,
    /// Seeds the sampled candidates (with the question and the candidate's number).
    pub seed: u64,
}

/// Candidates by default on a CPU, where each costs nearly a whole answer's time (4
/// candidates: p50 1.1 → 5.6 s on the demo questions, 2 cores).
pub const CPU_CANDIDATES: usize = 1;
/// Candidates by default on a GPU, where they share the greedy answer's batch: on one H100,
/// 8 candidates with the mask took the base model from 36.4% to 55.0% EX on the first 151
/// Spider dev questions (the adapter of the README recipe from 40.3% to 59.1% on 159), and
/// geoquery from 23.9% to 29.4% (README, "Right names by construction").
pub const GPU_CANDIDATES: usize = 8;

impl Default for Levers {
    fn default() -> Self {
        Levers {
            constrain: true,
            candidates: 0,
            temperature: 0.8,
            top_k: 40,
            seed: 0,
        }
    }
}

impl Levers {
    /// These levers with the device's default number of candidates filled in, for a model on
    /// a GPU (`gpu`) or a CPU.
    pub fn resolved(self, gpu: bool) -> Self {
        let candidates = match self.candidates {
            0 if gpu => GPU_CANDIDATES,
            0 => CPU_CANDIDATES,
            n => n,
        };
        Levers { candidates, ..self }
    }

    /// How candidate `k` (1-based among the sampled ones) of `question` is sampled: the same
    /// seed, question and number give the same draw whatever else is in the batch.
    pub fn sample(&self, question: &str, k: usize) -> Sample {
        use sha2::{Digest, Sha256};
        let h = Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update((k as u64).to_le_bytes())
            .chain_update(question)
            .finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&h[..8]);
        Sample {
            temperature: self.temperature,
            top_k: self.top_k,
            seed: u64::from_le_bytes(seed),
        }
    }

    /// In words, for reports: `constrain on, 8 candidates (T 0.8, seed 0)`.
    pub fn describe(&self) -> String {
        let c = if self.constrain { "on" } else { "off" };
        if self.candidates > 1 {
            format!(
                "constrain {c}, {} candidates (T {}, top-k {}, seed {})",
                self.candidates, self.temperature, self.top_k, self.seed
            )
        } else {
            format!("constrain {c}, greedy")
        }
    }
}

/// The guard's identifier state over the SQL of an answer, as a token mask: tokens may only
/// spell names of the tables shown, where they may stand.
pub struct SqlMask(Tracker);

impl SqlMask {
    pub fn new(names: Names) -> SqlMask {
        SqlMask(Tracker::new(names))
    }
}

impl Constraint for SqlMask {
    fn next<'a>(&'a self, text: &str) -> Option<TokenTest<'a>> {
        // Only the SQL of a fenced answer is masked; anything else is the model's to say.
        let sql = text.strip_prefix(ANSWER_START)?;
        let state = self.0.state(sql);
        if state.is_free() {
            return None;
        }
        Some(Box::new(move |token: &[u8]| state.allows(token)))
    }

    /// The SQL may end where its closing fence may come: never in the middle of a name.
    fn may_stop(&self, text: &str) -> bool {
        match text.strip_prefix(ANSWER_START) {
            Some(sql) => self.0.state(sql).allows(b"\n```"),
            None => true,
        }
    }

    /// For a server's sampler: the names as a grammar (see [`Names::grammar`]).
    fn grammar(&self) -> Option<String> {
        Some(self.0.names().grammar())
    }
}

impl Pipeline {
    /// The levers answers are generated with, the device's default filled in.
    pub fn levers_in_use(&self) -> Levers {
        let gpu = self.engine.as_ref().is_some_and(|e| e.on_gpu());
        self.levers.resolved(gpu)
    }

    /// The mask for a question shown `tables` (qualified names as the selection gives them;
    /// empty: the whole schema), shown with bare names when `namespace` is set; for a repair,
    /// the aliases of the `failed` answer hint what early aliases name (see
    /// [`Names::hinted_by`]); in the `last_round` (no repair left) the FROM rule is on (see
    /// [`Names::covering_from`]).
    pub(super) fn mask_for(
        &self,
        tables: &[String],
        namespace: Option<&str>,
        failed: Option<&str>,
        last_round: bool,
    ) -> Option<TokenMask> {
        if !self.levers.constrain {
            return None;
        }
        let shown: Vec<Table> = self
            .schema
            .tables
            .iter()
            .filter(|t| tables.is_empty() || tables.iter().any(|n| *n == qualified(t)))
            .map(|t| {
                let mut t = t.clone();
                if namespace.is_some() {
                    t.schema = None;
                }
                t
            })
            .collect();
        let refs: Vec<&Table> = shown.iter().collect();
        let names = Names::new(&refs, self.dialect());
        let names = match failed {
            Some(sql) => names.hinted_by(sql),
            None => names,
        };
        // The FROM rule only where no repair follows: earlier, "unknown column" in the repair
        // prompt fixes more than a forced join.
        Some(TokenMask(Arc::new(SqlMask::new(if last_round {
            names.covering_from()
        } else {
            names
        }))))
    }
}

/// A table's name as the selection writes it (`schema.table` outside the default schema).
fn qualified(t: &Table) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, TableKind};
    use crate::sql::Dialect;

    fn mask() -> SqlMask {
        let mut t = Table::new(None, "customers", TableKind::Table);
        t.columns = vec![
            Column::new("first_name", "TEXT"),
            Column::new("orders", "INT"),
        ];
        SqlMask::new(Names::new(&[&t], Dialect::Sqlite))
    }

    #[test]
    fn the_answer_may_stop_only_between_names() {
        let m = mask();
        let at = |sql: &str| format!("{ANSWER_START}{sql}");
        assert!(m.may_stop(&at("SELECT first_name FROM customers ORDER BY orders")));
        assert!(!m.may_stop(&at("SELECT first_name FROM customers ORDER BY ord")));
        assert!(!m.may_stop(&at("SELECT first_name FROM custom")));
        // Outside a fenced answer nothing is masked.
        assert!(m.next("SELECT first_na").is_none());
        let next = m
            .next(&at("SELECT first_name FROM "))
            .expect("a table slot");
        assert!(next(b"customers") && next(b" customers") && !next(b"clients"));
    }

    #[test]
    fn candidates_are_seeded_per_question_and_number() {
        let l = Levers::default();
        assert_eq!(l.sample("q", 1), l.sample("q", 1));
        assert_ne!(l.sample("q", 1).seed, l.sample("q", 2).seed);
        assert_ne!(l.sample("q", 1).seed, l.sample("r", 1).seed);
        let other = Levers { seed: 5, ..l };
        assert_ne!(l.sample("q", 1).seed, other.sample("q", 1).seed);
        assert_eq!(l.resolved(true).candidates, GPU_CANDIDATES);
        assert_eq!(l.resolved(false).candidates, CPU_CANDIDATES);
        assert_eq!(Levers { candidates: 8, ..l }.resolved(false).candidates, 8);
        assert_eq!(Levers { candidates: 3, ..l }.resolved(true).candidates, 3);
    }
}
