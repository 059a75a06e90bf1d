//! Value linking: question words that name a value stored in a text column point the table
//! selection at that column's table.
//!
//! Owns the bounded index of distinct values ([`ValueIndex`], built from [`ColumnValues`] the
//! pipeline reads from the database), how a question is matched against it (whole values,
//! quoted text, rare distinctive words) and the example values it lends to columns that
//! introspection left without any ([`with_samples`]). Never reads the database and never scores
//! tables: [`super::Selector`] weighs what is found here.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::schema::Schema;

/// Distinct values of one text column, as read from the database (bounded by the reader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnValues {
    /// Index of the table in [`Schema::tables`].
    pub table: usize,
    pub column: String,
    pub values: Vec<String>,
}

/// Where a value was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueRef {
    pub(super) table: usize,
    pub(super) column: String,
    pub(super) value: String,
}

/// Question phrases → the columns whose values they name.
#[derive(Debug, Default)]
pub struct ValueIndex {
    /// Normalised whole value → where it occurs.
    whole: HashMap<String, Vec<ValueRef>>,
    /// A distinctive word of a longer value → where it occurs.
    words: HashMap<String, Vec<ValueRef>>,
    pub columns: usize,
    pub values: usize,
}

/// A value word links a question to columns only when it occurs in at most this many values.
const RARE_WORD: usize = 4;

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Words too common to link a question to a column on their own.
const STOP: &[&str] = &[
    "the", "and", "for", "with", "from", "that", "this", "have", "has", "are", "was", "were",
    "what", "which", "who", "whom", "how", "many", "much", "all", "each", "every", "list", "show",
    "give", "find", "name", "names", "number", "their", "there", "than", "more", "most", "least",
    "less", "not", "any", "some", "order", "by", "of", "in", "on", "to", "is", "a", "an", "or",
    "as", "at", "be", "it", "its", "do", "does", "did", "yes", "no", "none", "null", "true",
    "false", "other", "unknown", "average", "total", "count", "year", "years", "id",
];

fn is_stop(w: &str) -> bool {
    STOP.contains(&w)
}

/// Lower-case word tokens of `s` (letters and digits).
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl ValueIndex {
    pub fn new(columns: &[ColumnValues]) -> Self {
        let mut ix = ValueIndex::default();
        for cv in columns {
            ix.columns += 1;
            for v in &cv.values {
                let n = norm(v);
                // Numbers and one-letter codes match too much by accident.
                if n.chars().count() < 2 || n.chars().all(|c| !c.is_alphabetic()) {
                    continue;
                }
                ix.values += 1;
                let r = ValueRef {
                    table: cv.table,
                    column: cv.column.clone(),
                    value: v.clone(),
                };
                let ws = words(&n);
                if ws.len() > 1 {
                    for w in ws.iter().filter(|w| w.len() >= 4 && !is_stop(w)) {
                        let e = ix.words.entry(w.clone()).or_default();
                        if e.len() < 64 && !e.contains(&r) {
                            e.push(r.clone());
                        }
                    }
                }
                let e = ix.whole.entry(n).or_default();
                if e.len() < 64 {
                    e.push(r);
                }
            }
        }
        ix
    }

    /// Values the question names: whole values (phrases of up to 6 words, or quoted text),
    /// then single distinctive words of longer values. Each `(ref, whole?)`.
    pub(super) fn matches(&self, question: &str) -> Vec<(ValueRef, bool)> {
        let mut out: Vec<(ValueRef, bool)> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut push = |r: &ValueRef, whole: bool, out: &mut Vec<(ValueRef, bool)>| {
            if seen.insert((r.table, r.column.clone(), r.value.clone())) {
                out.push((r.clone(), whole));
            }
        };
        let q = norm(question);
        for quoted in q.split(['"', '\'', '`']).skip(1).step_by(2) {
            if let Some(rs) = self.whole.get(quoted.trim()) {
                rs.iter().for_each(|r| push(r, true, &mut out));
            }
        }
        let ws = words(&q);
        for n in (1..=6).rev() {
            for gram in ws.windows(n) {
                if n == 1 && (is_stop(&gram[0]) || gram[0].len() < 3) {
                    continue;
                }
                if let Some(rs) = self.whole.get(&gram.join(" ")) {
                    rs.iter().for_each(|r| push(r, true, &mut out));
                }
            }
        }
        // A word found in many values ("live", "new") says nothing about which column.
        for w in ws.iter().filter(|w| w.len() >= 4 && !is_stop(w)) {
            if let Some(rs) = self.words.get(w).filter(|rs| rs.len() <= RARE_WORD) {
                rs.iter().for_each(|r| push(r, false, &mut out));
            }
        }
        out
    }
}

/// Distinct example values shown per text column, and the most shown when that is all of them
/// (as introspection shows them).
const SAMPLES: usize = 3;
const ALL_SAMPLES: usize = 8;

/// `schema` with sample values for the text columns that introspection left without any (a
/// large PostgreSQL schema that was never analysed gets none), taken from the value index's
/// distinct values: sorted, every one when there are at most 8, else the first 3.
pub fn with_samples(schema: &Schema, columns: &[ColumnValues]) -> Schema {
    let mut out = schema.clone();
    for cv in columns {
        let Some(t) = out.tables.get_mut(cv.table) else {
            continue;
        };
        let name = cv
            .column
            .strip_prefix(&format!("{}.", t.name))
            .unwrap_or(&cv.column)
            .to_string();
        if t.primary_key.contains(&name) {
            continue;
        }
        let Some(c) = t.columns.iter_mut().find(|c| c.name == name) else {
            continue;
        };
        if !c.samples.is_empty() || !c.enum_values.is_empty() {
            continue;
        }
        let mut vals: Vec<String> = cv
            .values
            .iter()
            .filter(|v| (1..=40).contains(&v.chars().count()))
            .cloned()
            .collect();
        vals.sort();
        vals.dedup();
        if vals.len() > ALL_SAMPLES {
            vals.truncate(SAMPLES);
        }
        c.samples = vals;
    }
    out
}
