//! Rendering an [`Outcome`] as a table, CSV or JSON: pure functions, no IO.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Value as Json};

use crate::db::{Outcome, Value};

/// Output formats for results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format `{other}` (table, csv, json)")),
        }
    }
}

pub fn render(o: &Outcome, format: Format, width: Option<u16>) -> String {
    match format {
        Format::Table => table(o, width),
        Format::Csv => csv(o),
        Format::Json => serde_json::to_string_pretty(&rows_json(o)).unwrap_or_default(),
    }
}

/// A bordered table fitted to `width` columns (when known), numbers right-aligned.
pub fn table(o: &Outcome, width: Option<u16>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        t.set_width(w);
    }
    t.set_header(o.columns.iter().map(Cell::new));
    for row in &o.rows {
        t.add_row(row.iter().map(|v| {
            let cell = Cell::new(v.display());
            match v {
                Value::Int(_) | Value::Float(_) | Value::Decimal(_) => {
                    cell.set_alignment(CellAlignment::Right)
                }
                _ => cell,
            }
        }));
    }
    t.to_string()
}

/// The footer line under a table: `3 rows` / `1 row` / `1000 rows (truncated at the row cap)`.
pub fn row_count_line(o: &Outcome) -> String {
    let n = o.rows.len();
    let mut s = format!("{n} row{}", if n == 1 { "" } else { "s" });
    if o.truncated {
        s.push_str(" (more rows exist; stopped at the row cap, see --max-rows)");
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// RFC 4180 CSV with a header line; NULL is an empty field.
pub fn csv(o: &Outcome) -> String {
    let mut out = String::new();
    let header: Vec<String> = o.columns.iter().map(|c| csv_field(c)).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in &o.rows {
        let fields: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => csv_field(&other.display()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
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

/// Rows as arrays of JSON values, in column order.
pub fn rows_json(o: &Outcome) -> Json {
    Json::Array(
        o.rows
            .iter()
            .map(|r| Json::Array(r.iter().map(value_json).collect()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Outcome {
        Outcome {
            columns: vec!["name".into(), "total".into()],
            rows: vec![
                vec![Value::Text("Smith, \"Jo\"".into()), Value::Float(12.5)],
                vec![Value::Null, Value::Int(3)],
            ],
            truncated: false,
        }
    }

    #[test]
    fn csv_quotes_and_nulls() {
        assert_eq!(
            csv(&sample()),
            "name,total\r\n\"Smith, \"\"Jo\"\"\",12.5\r\n,3\r\n"
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
    fn table_has_header_values_and_null() {
        let t = table(&sample(), Some(60));
        assert!(t.contains("name") && t.contains("total"));
        assert!(t.contains("NULL") && t.contains("12.5"));
        assert_eq!(t.lines().count(), 6);
    }

    #[test]
    fn row_count_wording() {
        let mut o = sample();
        assert_eq!(row_count_line(&o), "2 rows");
        o.rows.pop();
        assert_eq!(row_count_line(&o), "1 row");
        o.truncated = true;
        assert!(row_count_line(&o).contains("row cap"));
    }
}
