//! When does a predicted result count as the gold result? Spider's execution-match rules
//! (test-suite-sql-eval `result_eq`), plus a float tolerance:
//!
//! 1. Two empty results match, whatever their columns.
//! 2. Otherwise the row counts and the column counts must be equal.
//! 3. Columns may come in any order: the prediction matches if *some* one-to-one assignment of
//!    its columns to the gold columns makes the rows equal. Only assignments where each pair of
//!    columns holds the same multiset of values are tried.
//! 4. Rows are compared as multisets (duplicates count, order does not), or as ordered lists
//!    when order matters: the gold query ends in a top-level `ORDER BY`, or the question set
//!    says `order_matters`.
//! 5. Cells: NULL equals NULL; integers, floats and decimals compare as numbers, with a relative
//!    tolerance of 1e-6 (so `AVG` computed two ways still matches); text and bytes exactly.
//!    A number never equals text (`'3'` is not `3`).
//!
//! Column names never matter.

use std::cmp::Ordering;

use crate::sql::Value;

/// Relative tolerance for comparing floats.
pub const FLOAT_TOLERANCE: f64 = 1e-6;

/// Most column assignments tried before giving up (wide results with many equal columns).
const MAX_PERMUTATIONS: usize = 20_000;

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(d) => d.parse().ok(),
        _ => None,
    }
}

/// Cell equality (rule 5).
pub fn cells_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Text(x), Value::Text(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => {
                if x.is_nan() || y.is_nan() {
                    return x.is_nan() && y.is_nan();
                }
                let scale = x.abs().max(y.abs()).max(1.0);
                (x - y).abs() <= FLOAT_TOLERANCE * scale
            }
            _ => false,
        },
    }
}

/// A total order that puts equal cells next to each other: NULL, numbers, text, bytes.
fn cell_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Decimal(_) => 2,
            Value::Text(_) => 3,
            Value::Bytes(_) => 4,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => rank(a).cmp(&rank(b)),
        },
    }
}

fn row_order(a: &[Value], b: &[Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| cell_order(x, y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn rows_equal(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cells_equal(x, y))
}

/// Multiset equality of rows: sort both, then compare pairwise with the cell tolerance.
fn multiset_equal(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a: Vec<&Vec<Value>> = a.iter().collect();
    let mut b: Vec<&Vec<Value>> = b.iter().collect();
    a.sort_by(|x, y| row_order(x, y));
    b.sort_by(|x, y| row_order(x, y));
    a.iter().zip(&b).all(|(x, y)| rows_equal(x, y))
}

fn column(rows: &[Vec<Value>], i: usize) -> Vec<Value> {
    rows.iter().map(|r| r[i].clone()).collect()
}

fn values_multiset_equal(a: &[Value], b: &[Value]) -> bool {
    let mut a: Vec<&Value> = a.iter().collect();
    let mut b: Vec<&Value> = b.iter().collect();
    a.sort_by(|x, y| cell_order(x, y));
    b.sort_by(|x, y| cell_order(x, y));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| cells_equal(x, y))
}

/// Whether `pred` answers like `gold` (the module documentation gives the rules).
pub fn results_match(gold: &[Vec<Value>], pred: &[Vec<Value>], order_matters: bool) -> bool {
    if gold.is_empty() && pred.is_empty() {
        return true;
    }
    if gold.len() != pred.len() {
        return false;
    }
    let ncols = gold[0].len();
    if pred[0].len() != ncols || gold.iter().chain(pred).any(|r| r.len() != ncols) {
        return false;
    }
    // candidates[i]: prediction columns whose values could be gold column i.
    let gold_cols: Vec<Vec<Value>> = (0..ncols).map(|i| column(gold, i)).collect();
    let pred_cols: Vec<Vec<Value>> = (0..ncols).map(|j| column(pred, j)).collect();
    let candidates: Vec<Vec<usize>> = gold_cols
        .iter()
        .map(|g| {
            (0..ncols)
                .filter(|&j| values_multiset_equal(g, &pred_cols[j]))
                .collect()
        })
        .collect();
    if candidates.iter().any(|c| c.is_empty()) {
        return false;
    }
    let mut perm = Vec::with_capacity(ncols);
    let mut used = vec![false; ncols];
    let mut tried = 0usize;
    search(
        gold,
        pred,
        order_matters,
        &candidates,
        &mut perm,
        &mut used,
        &mut tried,
    )
}

/// Depth-first search over column assignments; `perm[i]` is the prediction column for gold i.
fn search(
    gold: &[Vec<Value>],
    pred: &[Vec<Value>],
    order_matters: bool,
    candidates: &[Vec<usize>],
    perm: &mut Vec<usize>,
    used: &mut [bool],
    tried: &mut usize,
) -> bool {
    if perm.len() == candidates.len() {
        *tried += 1;
        let permuted: Vec<Vec<Value>> = pred
            .iter()
            .map(|r| perm.iter().map(|&j| r[j].clone()).collect())
            .collect();
        return if order_matters {
            gold.iter().zip(&permuted).all(|(g, p)| rows_equal(g, p))
        } else {
            multiset_equal(gold, &permuted)
        };
    }
    for &j in &candidates[perm.len()] {
        if used[j] || *tried >= MAX_PERMUTATIONS {
            continue;
        }
        used[j] = true;
        perm.push(j);
        if search(gold, pred, order_matters, candidates, perm, used, tried) {
            return true;
        }
        perm.pop();
        used[j] = false;
    }
    false
}

/// Cells compared at most by [`cell_overlap`] (the first of each result).
const MAX_OVERLAP_CELLS: usize = 20_000;

/// How much of `gold`'s values `pred` has, as an F1 over the cells of both taken as multisets
/// (cells equal as [`cells_equal`] says; columns and rows may be anywhere): 1 for the same
/// cells, 0 for none shared; two empty results share everything. Partial credit for a wrong
/// answer that found some of the right values (`train --rl`'s reward), never a verdict.
pub fn cell_overlap(gold: &[Vec<Value>], pred: &[Vec<Value>]) -> f64 {
    fn cells(rows: &[Vec<Value>]) -> Vec<&Value> {
        let mut c: Vec<&Value> = rows.iter().flatten().take(MAX_OVERLAP_CELLS).collect();
        c.sort_by(|x, y| cell_order(x, y));
        c
    }
    let (g, p) = (cells(gold), cells(pred));
    if g.is_empty() && p.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < g.len() && j < p.len() {
        if cells_equal(g[i], p[j]) {
            common += 1;
            i += 1;
            j += 1;
        } else if cell_order(g[i], p[j]).is_lt() {
            i += 1;
        } else {
            j += 1;
        }
    }
    2.0 * common as f64 / (g.len() + p.len()) as f64
}

/// Whether `sql` ends in an `ORDER BY` of the outermost query (not one inside parentheses, a
/// string or a quoted name), which makes the order of its rows part of the answer.
pub fn has_top_level_order_by(sql: &str) -> bool {
    let mut depth = 0i32;
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word).to_ascii_lowercase());
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                flush(&mut word, &mut words);
                // Skip the quoted text; a doubled quote stays inside.
                while let Some(d) = chars.next() {
                    if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                words.push(String::new());
            }
            '(' => {
                flush(&mut word, &mut words);
                depth += 1;
            }
            ')' => {
                flush(&mut word, &mut words);
                depth -= 1;
            }
            c if depth == 0 && (c.is_alphanumeric() || c == '_') => word.push(c),
            _ => flush(&mut word, &mut words),
        }
    }
    flush(&mut word, &mut words);
    words.windows(2).any(|w| w[0] == "order" && w[1] == "by")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::*;

    fn t(s: &str) -> Value {
        Text(s.into())
    }

    #[test]
    fn same_rows_in_another_order_match_as_a_multiset_but_not_as_a_list() {
        let gold = vec![vec![Int(1), t("a")], vec![Int(2), t("b")]];
        let pred = vec![vec![Int(2), t("b")], vec![Int(1), t("a")]];
        assert!(results_match(&gold, &pred, false));
        assert!(!results_match(&gold, &pred, true));
        assert!(results_match(&gold, &gold, true));
    }

    #[test]
    fn duplicates_count() {
        let gold = vec![vec![t("a")], vec![t("a")], vec![t("b")]];
        let pred = vec![vec![t("a")], vec![t("b")], vec![t("b")]];
        assert!(!results_match(&gold, &pred, false));
        let pred_distinct = vec![vec![t("a")], vec![t("b")]];
        assert!(!results_match(&gold, &pred_distinct, false));
    }

    #[test]
    fn columns_may_be_permuted() {
        let gold = vec![vec![t("x"), Int(3)], vec![t("y"), Int(4)]];
        let pred = vec![vec![Int(3), t("x")], vec![Int(4), t("y")]];
        assert!(results_match(&gold, &pred, false));
        assert!(results_match(&gold, &pred, true));
    }

    #[test]
    fn a_permutation_must_keep_rows_together() {
        // Each column's values match, but the pairing of values across rows differs.
        let gold = vec![vec![t("x"), Int(1)], vec![t("y"), Int(2)]];
        let pred = vec![vec![t("x"), Int(2)], vec![t("y"), Int(1)]];
        assert!(!results_match(&gold, &pred, false));
    }

    #[test]
    fn equal_columns_try_every_assignment() {
        // Columns a and b hold the same values; only one assignment lines the rows up.
        let gold = vec![vec![Int(1), Int(2), t("p")], vec![Int(2), Int(1), t("q")]];
        let pred = vec![vec![Int(2), Int(1), t("p")], vec![Int(1), Int(2), t("q")]];
        assert!(results_match(&gold, &pred, false));
    }

    #[test]
    fn extra_or_missing_columns_and_rows_do_not_match() {
        let gold = vec![vec![t("a")]];
        assert!(!results_match(&gold, &[vec![t("a"), Int(1)]], false));
        assert!(!results_match(&gold, &[vec![t("a")], vec![t("a")]], false));
        assert!(!results_match(&gold, &[], false));
        assert!(!results_match(&[], &gold, false));
    }

    #[test]
    fn cell_overlap_is_an_f1_over_the_cells_wherever_they_are() {
        let gold = vec![vec![t("a"), Int(1)], vec![t("b"), Int(2)]];
        assert_eq!(cell_overlap(&gold, &gold), 1.0);
        // Half the cells, in another shape: F1 = 2·2 / (4 + 2).
        let pred = vec![vec![Float(2.0)], vec![t("a")]];
        assert!((cell_overlap(&gold, &pred) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(cell_overlap(&gold, &[vec![t("z")]]), 0.0);
        assert_eq!(cell_overlap(&[], &[]), 1.0);
        assert_eq!(cell_overlap(&gold, &[]), 0.0);
        // Duplicates count once each.
        let twice = vec![vec![t("a")], vec![t("a")]];
        assert!((cell_overlap(&twice, &[vec![t("a")]]) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn two_empty_results_match_whatever_their_columns() {
        assert!(results_match(&[], &[], true));
    }

    #[test]
    fn floats_match_within_tolerance_and_ints_equal_floats() {
        let gold = vec![vec![Float(2.0 / 3.0)]];
        assert!(results_match(&gold, &[vec![Float(0.6666667)]], false));
        assert!(!results_match(&gold, &[vec![Float(0.667)]], false));
        assert!(results_match(&[vec![Int(3)]], &[vec![Float(3.0)]], false));
        assert!(!results_match(&[vec![Int(3)]], &[vec![Float(3.01)]], false));
        // Relative for large values: 1e9 + 0.5 is within 1e-6 of 1e9.
        assert!(results_match(
            &[vec![Float(1e9)]],
            &[vec![Float(1e9 + 0.5)]],
            false
        ));
    }

    #[test]
    fn types_are_not_coerced_and_null_is_a_value() {
        assert!(!results_match(&[vec![Int(3)]], &[vec![t("3")]], false));
        assert!(!results_match(&[vec![Null]], &[vec![Int(0)]], false));
        assert!(!results_match(&[vec![Null]], &[vec![t("")]], false));
        assert!(results_match(&[vec![Null]], &[vec![Null]], false));
        assert!(!results_match(
            &[vec![t("Paris")]],
            &[vec![t("paris")]],
            false
        ));
    }

    #[test]
    fn order_by_detection_is_top_level_only() {
        assert!(has_top_level_order_by(
            "SELECT name FROM singer ORDER BY age DESC"
        ));
        assert!(has_top_level_order_by(
            "select a from t union select b from u order\nby 1"
        ));
        assert!(!has_top_level_order_by("SELECT count(*) FROM singer"));
        assert!(!has_top_level_order_by(
            "SELECT name FROM t WHERE id IN (SELECT id FROM u ORDER BY x LIMIT 3)"
        ));
        assert!(!has_top_level_order_by(
            "SELECT name FROM t WHERE note = 'order by'"
        ));
        assert!(!has_top_level_order_by("SELECT \"order\" FROM t, \"by\""));
    }
}
