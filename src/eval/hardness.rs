//! Spider's difficulty levels, computed exactly as the official `evaluation.py`
//! (`Evaluator.eval_hardness`) does from the parsed `sql` object in Spider's JSON, quirks
//! included (e.g. the `and`/`or` tokens inside HAVING count as aggregates there). The
//! published dev-set split, 248 easy / 446 medium / 174 hard / 166 extra, is checked by a test.

use serde_json::Value as Json;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Hardness {
    Easy,
    Medium,
    Hard,
    Extra,
}

impl Hardness {
    pub const ALL: [Hardness; 4] = [
        Hardness::Easy,
        Hardness::Medium,
        Hardness::Hard,
        Hardness::Extra,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hardness::Easy => "easy",
            Hardness::Medium => "medium",
            Hardness::Hard => "hard",
            Hardness::Extra => "extra",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// `WHERE_OPS.index('like')` in Spider's `process_sql.py`.
const WHERE_OP_LIKE: i64 = 9;

fn arr(v: &Json) -> &[Json] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn every_other(v: &[Json], start: usize) -> Vec<&Json> {
    v.iter().skip(start).step_by(2).collect()
}

/// Python's `unit[0] != 0` on whatever Spider stored there (a number, a bool, or the first
/// character of an `'and'`/`'or'` string).
fn has_agg(unit: &Json) -> bool {
    let first = match unit {
        Json::Array(a) => a.first(),
        Json::String(s) => return !s.is_empty(),
        _ => return true,
    };
    match first {
        Some(Json::Number(n)) => n.as_f64() != Some(0.0),
        Some(Json::Bool(b)) => *b,
        _ => true,
    }
}

fn count_agg<'a>(units: impl IntoIterator<Item = &'a Json>) -> usize {
    units.into_iter().filter(|u| has_agg(u)).count()
}

/// `from.conds`, `where` and `having` condition lists, each with its `and`/`or` separators.
fn cond_lists(sql: &Json) -> [&[Json]; 3] {
    [
        arr(&sql["from"]["conds"]),
        arr(&sql["where"]),
        arr(&sql["having"]),
    ]
}

fn nested_count(sql: &Json) -> usize {
    let mut n = 0;
    for list in cond_lists(sql) {
        for cond in every_other(list, 0) {
            n += usize::from(cond.get(3).is_some_and(Json::is_object));
            n += usize::from(cond.get(4).is_some_and(Json::is_object));
        }
    }
    for k in ["intersect", "except", "union"] {
        n += usize::from(!sql[k].is_null());
    }
    n
}

fn component1(sql: &Json) -> usize {
    let mut c = 0;
    c += usize::from(!arr(&sql["where"]).is_empty());
    c += usize::from(!arr(&sql["groupBy"]).is_empty());
    c += usize::from(!arr(&sql["orderBy"]).is_empty());
    c += usize::from(!sql["limit"].is_null());
    c += arr(&sql["from"]["table_units"]).len().saturating_sub(1);
    for list in cond_lists(sql) {
        c += every_other(list, 1)
            .into_iter()
            .filter(|t| t.as_str() == Some("or"))
            .count();
        c += every_other(list, 0)
            .into_iter()
            .filter(|cond| cond.get(1).and_then(Json::as_i64) == Some(WHERE_OP_LIKE))
            .count();
    }
    c
}

fn others(sql: &Json) -> usize {
    let select = arr(&sql["select"][1]);
    let wh = arr(&sql["where"]);
    let group = arr(&sql["groupBy"]);
    let mut agg = count_agg(select) + count_agg(every_other(wh, 0)) + count_agg(group);
    let order = arr(&sql["orderBy"]);
    if !order.is_empty() {
        let units = arr(&order[1]);
        let truthy = |v: &&Json| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty));
        let firsts = units.iter().filter_map(|u| u.get(1)).filter(truthy);
        let seconds = units.iter().filter_map(|u| u.get(2)).filter(truthy);
        agg += count_agg(firsts.chain(seconds));
    }
    agg += count_agg(arr(&sql["having"]));
    usize::from(agg > 1)
        + usize::from(select.len() > 1)
        + usize::from(wh.len() > 1)
        + usize::from(group.len() > 1)
}

/// The difficulty of a query from its Spider `sql` object.
pub fn hardness(sql: &Json) -> Hardness {
    let (c1, c2, o) = (component1(sql), nested_count(sql), others(sql));
    if c1 <= 1 && o == 0 && c2 == 0 {
        Hardness::Easy
    } else if (o <= 2 && c1 <= 1 && c2 == 0) || (c1 <= 2 && o < 2 && c2 == 0) {
        Hardness::Medium
    } else if (o > 2 && c1 <= 2 && c2 == 0)
        || (2 < c1 && c1 <= 3 && o <= 2 && c2 == 0)
        || (c1 <= 1 && o == 0 && c2 <= 1)
    {
        Hardness::Hard
    } else {
        Hardness::Extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_count_is_easy_and_a_union_of_joins_is_extra() {
        let easy: Json = serde_json::from_str(
            r#"{"from":{"table_units":[["table_unit",0]],"conds":[]},
                "select":[false,[[3,[0,[0,0,false],null]]]],"where":[],"groupBy":[],
                "having":[],"orderBy":[],"limit":null,"intersect":null,"union":null,
                "except":null}"#,
        )
        .unwrap();
        assert_eq!(hardness(&easy), Hardness::Easy);
        let mut extra = easy.clone();
        extra["from"]["table_units"] = serde_json::json!([["table_unit", 0], ["table_unit", 1]]);
        extra["where"] = serde_json::json!([[false, 9, [0, [0, 1, false], null], "\"%a%\"", null]]);
        extra["orderBy"] = serde_json::json!(["desc", [[0, [0, 1, false], null]]]);
        extra["union"] = easy.clone();
        assert_eq!(hardness(&extra), Hardness::Extra);
    }
}
