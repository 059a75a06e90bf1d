//! Rendering an [`Outcome`] as a table, CSV or JSON: pure functions, no IO, no threads.
//!
//! A value longer than a cap is shown as its start and `… (N more characters)`, cut on a char
//! boundary without copying the rest, so one huge value renders as fast as a small one: table
//! cells always ([`TABLE_CELL_CHARS`]), CSV and JSON only when the caller passes a cap (the
//! shell does). [`csv`] and [`rows_json`] are machine output and print whole values. Never
//! decides where output goes or how long rendering may take: callers pass a stop flag.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Value as Json};

use crate::db::{Outcome, Value};

/// Characters of one value a table cell shows; the rest is counted, not shown.
pub const TABLE_CELL_CHARS: usize = 1_000;

/// Characters of one value that CSV and JSON show in the interactive shell.
pub const SHELL_VALUE_CHARS: usize = 10_000;

/// The hint for output that has whole values a command away.
pub const WHOLE_VALUES: &str = "--format csv or json prints whole values";

/// Rendered output and how many of its values were shortened to fit the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub text: String,
    pub shortened: usize,
}

/// `s` whole with 0 when it has at most `max` characters; else its first `max` characters
/// (cut on a char boundary, the rest never copied) and how many characters were left out.
pub fn shorten(s: &str, max: usize) -> (&str, usize) {
    if s.len() <= max {
        return (s, 0);
    }
    match s.char_indices().nth(max) {
        Some((at, _)) => (&s[..at], s[at..].chars().count()),
        None => (s, 0),
    }
}

/// `n` with its thousands grouped: `123,456,789`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// What a value shows with at most `max` of its characters (`None`: all), and whether it was
/// shortened. Text is borrowed, never cloned whole; bytes show a prefix already.
pub fn value_text(v: &Value, max: Option<usize>) -> (Cow<'_, str>, bool) {
    let s = match v {
        Value::Text(s) | Value::Decimal(s) => s.as_str(),
        other => return (Cow::Owned(other.display()), false),
    };
    let Some(max) = max else {
        return (Cow::Borrowed(s), false);
    };
    match shorten(s, max) {
        (_, 0) => (Cow::Borrowed(s), false),
        (head, left) => (
            Cow::Owned(format!(
                "{head}… ({} more character{})",
                grouped(left),
                if left == 1 { "" } else { "s" }
            )),
            true,
        ),
    }
}

/// The line under a result some of whose values were shortened (`None` when none were):
/// `1 value shortened for display; HINT`.
pub fn shortened_note(shortened: usize, hint: &str) -> Option<String> {
    (shortened > 0).then(|| {
        format!(
            "{} value{} shortened for display; {hint}",
            grouped(shortened),
            if shortened == 1 { "" } else { "s" }
        )
    })
}

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

/// `o` in `format`, whole values in CSV and JSON.
pub fn render(o: &Outcome, format: Format, width: Option<u16>) -> String {
    show(o, format, width, None, &AtomicBool::new(false)).map_or_else(String::new, |s| s.text)
}

/// `o` in `format`: table cells capped at [`TABLE_CELL_CHARS`], CSV and JSON values at
/// `value_chars` (`None`: whole). `None` when `stop` was raised before it finished (checked
/// between rows).
pub fn show(
    o: &Outcome,
    format: Format,
    width: Option<u16>,
    value_chars: Option<usize>,
    stop: &AtomicBool,
) -> Option<Shown> {
    match format {
        Format::Table => table_shown(o, width, stop),
        Format::Csv => csv_shown(o, value_chars, stop),
        Format::Json => {
            let (rows, shortened) = rows_json_shown(o, value_chars, stop)?;
            Some(Shown {
                text: serde_json::to_string_pretty(&rows).unwrap_or_default(),
                shortened,
            })
        }
    }
}

/// A bordered table fitted to `width` columns (when known), numbers right-aligned, cells over
/// [`TABLE_CELL_CHARS`] shortened (see [`table_shown`] for how many were).
pub fn table(o: &Outcome, width: Option<u16>) -> String {
    table_counted(o, width).text
}

/// [`table`] with the count of shortened cells, for [`shortened_note`].
pub fn table_counted(o: &Outcome, width: Option<u16>) -> Shown {
    let never = AtomicBool::new(false);
    table_shown(o, width, &never).unwrap_or_else(|| unreachable!("the flag is never raised"))
}

/// [`table`] with the count of shortened cells; `None` when `stop` was raised first.
pub fn table_shown(o: &Outcome, width: Option<u16>, stop: &AtomicBool) -> Option<Shown> {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        t.set_width(w);
    }
    t.set_header(o.columns.iter().map(Cell::new));
    let mut shortened = 0;
    for row in &o.rows {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        t.add_row(row.iter().map(|v| {
            let (text, short) = value_text(v, Some(TABLE_CELL_CHARS));
            shortened += usize::from(short);
            let cell = Cell::new(text);
            match v {
                Value::Int(_) | Value::Float(_) | Value::Decimal(_) => {
                    cell.set_alignment(CellAlignment::Right)
                }
                _ => cell,
            }
        }));
    }
    if stop.load(Ordering::Relaxed) {
        return None;
    }
    Some(Shown {
        text: t.to_string(),
        shortened,
    })
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

/// RFC 4180 CSV with a header line; NULL is an empty field; whole values.
pub fn csv(o: &Outcome) -> String {
    csv_shown(o, None, &AtomicBool::new(false)).map_or_else(String::new, |s| s.text)
}

/// [`csv`] with values over `value_chars` shortened; `None` when `stop` was raised first.
pub fn csv_shown(o: &Outcome, value_chars: Option<usize>, stop: &AtomicBool) -> Option<Shown> {
    let mut out = String::new();
    let header: Vec<String> = o.columns.iter().map(|c| csv_field(c)).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
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
        out.push_str("\r\n");
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
                .map(|v| match (v, value_chars) {
                    (Value::Text(_) | Value::Decimal(_), Some(_)) => {
                        match value_text(v, value_chars) {
                            (text, true) => {
                                shortened += 1;
                                Json::String(text.into_owned())
                            }
                            (_, false) => value_json(v),
                        }
                    }
                    _ => value_json(v),
                })
                .collect(),
        ));
    }
    Some((Json::Array(rows), shortened))
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

    fn one_text(s: String) -> Outcome {
        Outcome {
            columns: vec!["big".into()],
            rows: vec![vec![Value::Text(s)]],
            truncated: false,
        }
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("short", 10), ("short", 0));
        assert_eq!(shorten("exact", 5), ("exact", 0));
        // Multi-byte: counted and cut in characters, never inside one.
        assert_eq!(shorten("héllo wörld", 3), ("hél", 8));
        assert_eq!(shorten("日本語のテキスト", 2), ("日本", 6));
        assert_eq!(shorten("🦀🦀🦀", 1), ("🦀", 2));
        // More bytes than the cap but not more characters: whole.
        assert_eq!(shorten("ééé", 3), ("ééé", 0));
        assert_eq!(shorten("abc", 0), ("", 3));
    }

    #[test]
    fn grouped_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(123_456_789), "123,456,789");
    }

    #[test]
    fn value_text_says_how_much_was_left_out() {
        let v = Value::Text("ab€cd".into());
        assert_eq!(value_text(&v, None), (Cow::Borrowed("ab€cd"), false));
        assert_eq!(value_text(&v, Some(5)), (Cow::Borrowed("ab€cd"), false));
        assert_eq!(value_text(&v, Some(3)).0, "ab€… (2 more characters)");
        assert_eq!(value_text(&v, Some(4)).0, "ab€c… (1 more character)");
        // Short non-text values are untouched by any cap.
        assert_eq!(value_text(&Value::Int(123456), Some(2)).0, "123456");
        assert!(value_text(&Value::Bytes(vec![7; 5000]), Some(2))
            .0
            .contains("(5000 bytes)"));
    }

    #[test]
    fn table_shortens_a_huge_cell_and_counts_it() {
        let big = "é".repeat(TABLE_CELL_CHARS + 2_345_678);
        let start = std::time::Instant::now();
        let shown = table_shown(&one_text(big), Some(100), &AtomicBool::new(false)).unwrap();
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
        assert_eq!(shown.shortened, 1);
        assert!(
            shown.text.contains("… (2,345,678 more characters)"),
            "{}",
            &shown.text[shown.text.len().saturating_sub(300)..]
        );
        assert!(shown.text.chars().count() < TABLE_CELL_CHARS * 3);
        // The whole-value renderers keep every character.
        let o = one_text("x".repeat(50_000));
        assert_eq!(csv(&o).len(), "big\r\n".len() + 50_000 + 2);
        assert_eq!(rows_json(&o)[0][0].as_str().unwrap().len(), 50_000);
        assert_eq!(
            table_shown(&o, None, &AtomicBool::new(false))
                .unwrap()
                .shortened,
            1
        );
        // Values within the cap are not counted.
        let small = table_shown(&sample(), Some(60), &AtomicBool::new(false)).unwrap();
        assert_eq!(small.shortened, 0);
        assert_eq!(small.text, table(&sample(), Some(60)));
    }

    #[test]
    fn note_under_a_shortened_result() {
        assert_eq!(shortened_note(0, WHOLE_VALUES), None);
        assert_eq!(
            shortened_note(1, WHOLE_VALUES).unwrap(),
            "1 value shortened for display; --format csv or json prints whole values"
        );
        assert_eq!(
            shortened_note(1234, "x").unwrap(),
            "1,234 values shortened for display; x"
        );
    }

    #[test]
    fn shell_caps_for_csv_and_json() {
        let o = Outcome {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::Text("ü".repeat(25)), Value::Int(1)],
                vec![Value::Text("short".into()), Value::Null],
            ],
            truncated: false,
        };
        let never = AtomicBool::new(false);
        let c = show(&o, Format::Csv, None, Some(20), &never).unwrap();
        assert_eq!(c.shortened, 1);
        assert_eq!(
            c.text,
            format!(
                "a,b\r\n{}… (5 more characters),1\r\nshort,\r\n",
                "ü".repeat(20)
            )
        );
        let j = show(&o, Format::Json, None, Some(20), &never).unwrap();
        assert_eq!(j.shortened, 1);
        let v: Json = serde_json::from_str(&j.text).unwrap();
        assert_eq!(
            v[0][0],
            json!(format!("{}… (5 more characters)", "ü".repeat(20)))
        );
        assert_eq!(v[1], json!(["short", null]));
        // Without a cap (machine output) nothing is shortened.
        let whole = show(&o, Format::Csv, None, None, &never).unwrap();
        assert_eq!((whole.shortened, whole.text), (0, csv(&o)));
        let whole = show(&o, Format::Json, None, None, &never).unwrap();
        assert_eq!(whole.shortened, 0);
        assert_eq!(
            serde_json::from_str::<Json>(&whole.text).unwrap(),
            rows_json(&o)
        );
        const { assert!(SHELL_VALUE_CHARS > TABLE_CELL_CHARS) };
    }

    #[test]
    fn a_raised_stop_flag_stops_rendering() {
        let stop = AtomicBool::new(true);
        for f in [Format::Table, Format::Csv, Format::Json] {
            assert_eq!(show(&sample(), f, None, None, &stop), None);
        }
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
