//! CSV and JSON, the machine formats: RFC 4180 CSV (lines end with LF, NULL an empty field)
//! and JSON rows as arrays (`sqlora ask`) or as objects keyed by column name (the shell).
//! Whole values unless the caller passes a cap (the shell does; see [`super::value_text`]);
//! numbers stay numbers, decimals digit for digit. Pure functions: no IO, no threads, and
//! never a table (that is [`super`]'s).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value as Json};

use super::{value_text, Shown};
use crate::sql::{Outcome, Value};

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// RFC 4180 CSV with a header line, but lines end with LF as Unix tools expect; NULL is an empty
/// field; whole values.
pub fn csv(o: &Outcome) -> String {
    csv_shown(o, None, &AtomicBool::new(false)).map_or_else(String::new, |s| s.text)
}

/// [`csv`] with values over `value_chars` shortened; `None` when `stop` was raised first.
pub fn csv_shown(o: &Outcome, value_chars: Option<usize>, stop: &AtomicBool) -> Option<Shown> {
    let mut out = String::new();
    let header: Vec<String> = o.columns.iter().map(|c| csv_field(c)).collect();
    out.push_str(&header.join(","));
    out.push('\n');
    let mut shortened = 0;
    for row in &o.rows {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let fields: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => {
                    let (text, short) = value_text(other, value_chars);
                    shortened += usize::from(short);
                    csv_field(&text)
                }
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    Some(Shown {
        text: out,
        shortened,
    })
}

pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        // Exact: the decimal text becomes a JSON number digit for digit (NaN stays a string).
        Value::Decimal(d) => d
            .parse::<serde_json::Number>()
            .map_or_else(|_| json!(d), Json::Number),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => json!(s),
        Value::Bytes(_) => json!(v.display()),
    }
}

/// Rows as arrays of JSON values, in column order; whole values.
pub fn rows_json(o: &Outcome) -> Json {
    rows_json_shown(o, None, &AtomicBool::new(false)).map_or(Json::Null, |(rows, _)| rows)
}

/// [`rows_json`] with text (and decimals) over `value_chars` shortened to a string, and how
/// many were; `None` when `stop` was raised first.
pub fn rows_json_shown(
    o: &Outcome,
    value_chars: Option<usize>,
    stop: &AtomicBool,
) -> Option<(Json, usize)> {
    let mut shortened = 0;
    let mut rows = Vec::with_capacity(o.rows.len());
    for r in &o.rows {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        rows.push(Json::Array(
            r.iter()
                .map(|v| json_shown(v, value_chars, &mut shortened))
                .collect(),
        ));
    }
    Some((Json::Array(rows), shortened))
}

/// `v` as JSON, text (and decimals) over `value_chars` as a shortened string, counted.
fn json_shown(v: &Value, value_chars: Option<usize>, shortened: &mut usize) -> Json {
    match (v, value_chars) {
        (Value::Text(_) | Value::Decimal(_), Some(_)) => match value_text(v, value_chars) {
            (text, true) => {
                *shortened += 1;
                Json::String(text.into_owned())
            }
            (_, false) => value_json(v),
        },
        _ => value_json(v),
    }
}

/// Column names made unique, to be JSON keys: a repeated name gets `_2`, `_3`, … (a suffix no
/// column has), in column order: `count, count` is `count, count_2`.
pub fn unique_keys(columns: &[String]) -> Vec<String> {
    let all: HashSet<&str> = columns.iter().map(String::as_str).collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut keys = Vec::with_capacity(columns.len());
    for c in columns {
        if used.insert(c.clone()) {
            keys.push(c.clone());
            continue;
        }
        let key = (2..)
            .map(|n| format!("{c}_{n}"))
            .find(|k| !all.contains(k.as_str()) && !used.contains(k))
            .unwrap_or_default();
        used.insert(key.clone());
        keys.push(key);
    }
    keys
}

/// The shell's JSON: an array of objects keyed by column name ([`unique_keys`]), in column
/// order, one object a line; values as [`rows_json_shown`] has them. `None` when `stop` was
/// raised first.
pub fn objects_json_shown(
    o: &Outcome,
    value_chars: Option<usize>,
    stop: &AtomicBool,
) -> Option<(String, usize)> {
    let keys: Vec<String> = unique_keys(&o.columns)
        .into_iter()
        .map(|k| Json::String(k).to_string())
        .collect();
    let mut shortened = 0;
    let mut out = String::from("[");
    for (i, r) in o.rows.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        out.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
        for (j, (key, v)) in keys.iter().zip(r).enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            out.push_str(key);
            out.push_str(": ");
            out.push_str(&json_shown(v, value_chars, &mut shortened).to_string());
        }
        out.push('}');
    }
    out.push_str(if o.rows.is_empty() { "]" } else { "\n]" });
    Some((out, shortened))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::super::{show, Format};
    use super::*;

    #[test]
    fn csv_quotes_and_nulls() {
        assert_eq!(
            csv(&sample()),
            "name,total\n\"Smith, \"\"Jo\"\"\",12.5\n,3\n"
        );
    }

    #[test]
    fn json_keeps_types() {
        assert_eq!(
            rows_json(&sample()).to_string(),
            r#"[["Smith, \"Jo\"",12.5],[null,3]]"#
        );
    }

    #[test]
    fn shell_json_is_objects_in_column_order_with_unique_keys() {
        let o = Outcome {
            columns: vec![
                "name".into(),
                "count".into(),
                "count".into(),
                "count_2".into(),
            ],
            rows: vec![vec![
                Value::Text("x".into()),
                Value::Int(3),
                Value::Decimal("12345678901234567890.01".into()),
                Value::Null,
            ]],
            truncated: false,
        };
        let keys = unique_keys(&o.columns);
        assert_eq!(keys, ["name", "count", "count_3", "count_2"]);
        assert_eq!(
            unique_keys(&["a".into(), "a".into(), "a".into()]),
            ["a", "a_2", "a_3"]
        );
        let never = AtomicBool::new(false);
        let text = show(&o, Format::Json, None, None, &never).unwrap().text;
        assert_eq!(
            text,
            "[\n  {\"name\": \"x\", \"count\": 3, \"count_3\": 12345678901234567890.01, \
             \"count_2\": null}\n]"
        );
        let empty = Outcome { rows: vec![], ..o };
        assert_eq!(
            show(&empty, Format::Json, None, None, &never).unwrap().text,
            "[]"
        );
        // `ask --format json` keeps its arrays.
        assert_eq!(rows_json(&sample())[1], json!([null, 3]));
    }

    #[test]
    fn csv_lines_end_with_lf_only() {
        let o = Outcome {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::Text("two\nlines".into()), Value::Int(1)],
                vec![Value::Null, Value::Text("x".into())],
            ],
            truncated: false,
        };
        let c = csv(&o);
        assert!(!c.contains('\r'), "{c:?}");
        assert_eq!(c, "a,b\n\"two\nlines\",1\n,x\n");
    }
}
