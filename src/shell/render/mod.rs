//! Rendering an [`Outcome`] as a table, psql's expanded records, CSV or JSON: pure functions,
//! no IO, no threads, no escape bytes (the caller paints, or not).
//!
//! A value longer than a cap is shown as its start and `… (N more characters)`, cut on a char
//! boundary without copying the rest, so one huge value renders as fast as a small one: table
//! cells always ([`TABLE_CELL_CHARS`]), CSV and JSON only when the caller passes a cap (the
//! shell does). [`csv`] and [`rows_json`] are machine output and print whole values; CSV ends
//! lines with LF (both are written in `data.rs`; this file holds the tables and what all the
//! formats share). A table never breaks a number, nor a word narrower than the width it is
//! given: text wraps at spaces and a table that cannot fit is wider than asked (a pager
//! scrolls it sideways). How NULL shows and whether rows become records is a [`Look`]. Never
//! decides where output goes, whether to page or how long rendering may take: callers pass
//! a stop flag, and the width (without one, comfy-table asks the terminal stdout is, if any).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sql::{Outcome, Value};
use comfy_table::{
    presets, Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width,
};

mod data;
pub use data::{
    csv, csv_shown, objects_json_shown, rows_json, rows_json_shown, unique_keys, value_json,
};

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

/// psql's `\x`: rows as a table, as records (`-[ RECORD 1 ]-`, then `column | value` lines),
/// or as records only when the table would be wider than the width given and has more than
/// one column (psql's `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Expanded {
    #[value(alias = "true", alias = "1")]
    On,
    #[default]
    #[value(alias = "false", alias = "0")]
    Off,
    Auto,
}

/// Both parse as typed in the shell or the config file: trimmed, in any case, by their names
/// and aliases.
macro_rules! parse_by_name {
    ($type:ty, $what:literal) => {
        impl std::str::FromStr for $type {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                by_name(s, $what)
            }
        }
    };
}
parse_by_name!(Format, "format");
parse_by_name!(Expanded, "expanded mode");

/// `s` (trimmed, in any case) as the `T` one of whose names or aliases it is; else
/// `unknown WHAT `s` (…)` listing the names.
fn by_name<T: clap::ValueEnum>(s: &str, what: &str) -> Result<T, String> {
    let s = s.trim().to_ascii_lowercase();
    T::from_str(&s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        format!("unknown {what} `{s}` ({})", names.join(", "))
    })
}

/// How a table shows beyond its format: NULL as `null` (empty by default, as in psql, so the
/// text `NULL` never looks like a NULL; `\pset null`) and rows as records or not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Look {
    pub null: String,
    pub expanded: Expanded,
}

/// `o` in `format`, whole values in CSV and JSON.
pub fn render(o: &Outcome, format: Format, width: Option<u16>) -> String {
    show(o, format, width, None, &AtomicBool::new(false)).map_or_else(String::new, |s| s.text)
}

/// `o` in `format` with the default [`Look`]: table cells capped at [`TABLE_CELL_CHARS`], CSV
/// and JSON values at `value_chars` (`None`: whole), JSON as objects keyed by column name
/// ([`objects_json_shown`]). `None` when `stop` was raised before it finished (checked
/// between rows).
pub fn show(
    o: &Outcome,
    format: Format,
    width: Option<u16>,
    value_chars: Option<usize>,
    stop: &AtomicBool,
) -> Option<Shown> {
    show_as(o, format, &Look::default(), width, value_chars, stop)
}

/// [`show`] as `look` says (it changes tables only: CSV leaves NULL empty, JSON writes null).
pub fn show_as(
    o: &Outcome,
    format: Format,
    look: &Look,
    width: Option<u16>,
    value_chars: Option<usize>,
    stop: &AtomicBool,
) -> Option<Shown> {
    match format {
        Format::Table => table_look(o, look, width, stop),
        Format::Csv => csv_shown(o, value_chars, stop),
        Format::Json => {
            let (text, shortened) = objects_json_shown(o, value_chars, stop)?;
            Some(Shown { text, shortened })
        }
    }
}

/// A bordered table fitted to `width` columns (when known), numbers right-aligned, cells over
/// [`TABLE_CELL_CHARS`] shortened (see [`table_shown`] for how many were), NULL empty.
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
    let look = Look {
        expanded: Expanded::Off,
        ..Look::default()
    };
    table_look(o, &look, width, stop)
}

/// Width of `s` on a terminal, counted in characters.
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The widest run of `s` without whitespace, of those at most `cap` wide: what wrapping at
/// spaces cannot make narrower (a wider word breaks anyway, so it asks for nothing).
fn longest_word(s: &str, cap: usize) -> usize {
    s.split_whitespace()
        .map(chars)
        .filter(|&w| w <= cap)
        .max()
        .unwrap_or(0)
}

/// A result's cells as a table shows them (NULL as the look says, long values shortened) and
/// what its layout needs per column.
struct Cells {
    /// Each cell's text and whether it is a number (right-aligned).
    rows: Vec<Vec<(String, bool)>>,
    /// Per column: its widest line, header included.
    widest: Vec<usize>,
    /// Per column: its widest unbreakable run: a whole number, or a word no wider than the
    /// cap given (a wider word breaks: alone it is wider than the screen).
    unbreakable: Vec<usize>,
    shortened: usize,
}

fn cells(o: &Outcome, look: &Look, word_cap: usize, stop: &AtomicBool) -> Option<Cells> {
    let mut widest: Vec<usize> = o
        .columns
        .iter()
        .map(|c| c.lines().map(chars).max().unwrap_or(0))
        .collect();
    let mut unbreakable: Vec<usize> = o
        .columns
        .iter()
        .map(|c| longest_word(c, word_cap))
        .collect();
    let mut shortened = 0;
    let mut rows = Vec::with_capacity(o.rows.len());
    for row in &o.rows {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let mut out = Vec::with_capacity(row.len());
        for (i, v) in row.iter().enumerate() {
            let (text, short) = match v {
                Value::Null => (look.null.clone(), false),
                _ => {
                    let (text, short) = value_text(v, Some(TABLE_CELL_CHARS));
                    (text.into_owned(), short)
                }
            };
            shortened += usize::from(short);
            let number = matches!(v, Value::Int(_) | Value::Float(_) | Value::Decimal(_));
            if let (Some(w), Some(u)) = (widest.get_mut(i), unbreakable.get_mut(i)) {
                *w = (*w).max(text.lines().map(chars).max().unwrap_or(0));
                let keep = if number && !short {
                    chars(&text)
                } else {
                    longest_word(&text, word_cap)
                };
                *u = (*u).max(keep);
            }
            out.push((text, number));
        }
        rows.push(out);
    }
    Some(Cells {
        rows,
        widest,
        unbreakable,
        shortened,
    })
}

/// `o` as a table or as records, as `look` and `width` say; `None` when `stop` was raised.
fn table_look(o: &Outcome, look: &Look, width: Option<u16>, stop: &AtomicBool) -> Option<Shown> {
    // Without a width comfy-table fits the table to the terminal stdout is, if any (as
    // `sqlora ask` has it): words are capped by that. Borders and padding take 4 columns
    // around a lone cell.
    let fit = width.or_else(|| Table::new().width());
    let word_cap = fit.map_or(usize::MAX, |w| usize::from(w).saturating_sub(4).max(1));
    let c = cells(o, look, word_cap, stop)?;
    let expanded = match look.expanded {
        Expanded::Off => false,
        Expanded::On => true,
        // The table as wide as its content: each column its widest line and 2 of padding,
        // and a border around and between them.
        Expanded::Auto => width.is_some_and(|w| {
            let natural = c.widest.iter().map(|w| w + 3).sum::<usize>() + 1;
            c.widest.len() > 1 && natural > usize::from(w)
        }),
    };
    let text = if expanded {
        records(&c, &o.columns, width)
    } else {
        table_of(&c, &o.columns, width)
    };
    if stop.load(Ordering::Relaxed) {
        return None;
    }
    Some(Shown {
        text,
        shortened: c.shortened,
    })
}

/// A bordered table fitted to `width` when known: text wraps at spaces, and no column is made
/// narrower than its widest unbreakable run, so a table that cannot fit is wider than asked.
fn table_of(c: &Cells, columns: &[String], width: Option<u16>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        t.set_width(w);
    }
    t.set_header(columns.iter().map(Cell::new));
    for row in &c.rows {
        t.add_row(row.iter().map(|(text, number)| {
            let cell = Cell::new(text);
            if *number {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    for (column, &min) in t.column_iter_mut().zip(&c.unbreakable) {
        // comfy-table counts a column's padding (1 each side) in its width.
        let min = u16::try_from(min + 2).unwrap_or(u16::MAX);
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(min)));
    }
    t.to_string()
}

/// psql's expanded display: per row a `-[ RECORD N ]` line, then one `column | value` line per
/// column (a value's further lines under it, the name left blank); empty without rows.
fn records(c: &Cells, columns: &[String], width: Option<u16>) -> String {
    let name_w = columns.iter().map(|n| chars(n)).max().unwrap_or(0);
    let value_w = c
        .rows
        .iter()
        .flatten()
        .map(|(text, _)| text.lines().map(chars).max().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let line_w = (name_w + 3 + value_w).min(width.map_or(usize::MAX, usize::from));
    let mut out = String::new();
    for (i, row) in c.rows.iter().enumerate() {
        let head = format!("-[ RECORD {} ]", i + 1);
        out.push_str(&head);
        let head_w = chars(&head);
        if head_w <= name_w {
            out.push_str(&"-".repeat(name_w + 1 - head_w));
            out.push('+');
            out.push_str(&"-".repeat(line_w.saturating_sub(name_w + 2)));
        } else {
            out.push_str(&"-".repeat(line_w.saturating_sub(head_w)));
        }
        out.push('\n');
        for (name, (text, _)) in columns.iter().zip(row) {
            let mut lines = text.split('\n');
            let first = lines.next().unwrap_or("");
            let line = format!("{name:<name_w$} | {first}");
            out.push_str(line.trim_end());
            out.push('\n');
            for more in lines {
                let line = format!("{:<name_w$} | {more}", "");
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    out.truncate(out.trim_end_matches('\n').len());
    out
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value as Json};

    use super::*;

    pub(super) fn sample() -> Outcome {
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
    fn table_has_header_values_and_null() {
        let t = table(&sample(), Some(60));
        assert!(t.contains("name") && t.contains("total"));
        // NULL is empty, as in psql: the text `NULL` is the only `NULL` shown.
        assert!(!t.contains("NULL") && t.contains("12.5"));
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
        assert_eq!(csv(&o).len(), "big\n".len() + 50_000 + 1);
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
            format!("a,b\n{}… (5 more characters),1\nshort,\n", "ü".repeat(20))
        );
        let j = show(&o, Format::Json, None, Some(20), &never).unwrap();
        assert_eq!(j.shortened, 1);
        let v: Json = serde_json::from_str(&j.text).unwrap();
        assert_eq!(
            v[0]["a"],
            json!(format!("{}… (5 more characters)", "ü".repeat(20)))
        );
        assert_eq!(v[1], json!({"a": "short", "b": null}));
        // Without a cap (machine output) nothing is shortened.
        let whole = show(&o, Format::Csv, None, None, &never).unwrap();
        assert_eq!((whole.shortened, whole.text), (0, csv(&o)));
        let whole = show(&o, Format::Json, None, None, &never).unwrap();
        assert_eq!(whole.shortened, 0);
        assert_eq!(
            serde_json::from_str::<Json>(&whole.text).unwrap(),
            json!([{"a": "ü".repeat(25), "b": 1}, {"a": "short", "b": null}])
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
    fn null_shows_as_the_look_says_and_never_as_the_text_null() {
        let o = Outcome {
            columns: vec!["v".into()],
            rows: vec![vec![Value::Null], vec![Value::Text("NULL".into())]],
            truncated: false,
        };
        let never = AtomicBool::new(false);
        let cell_lines = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with('│'))
                .skip(1)
                .map(|l| l.trim_matches(|c: char| c == '│' || c == ' ').to_string())
                .collect()
        };
        let plain = show_as(&o, Format::Table, &Look::default(), Some(40), None, &never).unwrap();
        assert_eq!(cell_lines(&plain.text), ["", "NULL"], "{}", plain.text);
        let look = Look {
            null: "(null)".into(),
            ..Look::default()
        };
        let set = show_as(&o, Format::Table, &look, Some(40), None, &never).unwrap();
        assert_eq!(cell_lines(&set.text), ["(null)", "NULL"], "{}", set.text);
        // Machine formats keep NULL apart their own way.
        let c = show_as(&o, Format::Csv, &look, None, None, &never).unwrap();
        assert_eq!(c.text, "v\n\nNULL\n");
        let j = show_as(&o, Format::Json, &look, None, None, &never).unwrap();
        assert_eq!(j.text, "[\n  {\"v\": null},\n  {\"v\": \"NULL\"}\n]");
    }

    #[test]
    fn expanded_shows_records_like_psql() {
        let look = Look {
            null: "∅".into(),
            expanded: Expanded::On,
        };
        let never = AtomicBool::new(false);
        let t = show_as(&sample(), Format::Table, &look, Some(80), None, &never).unwrap();
        assert_eq!(
            t.text,
            "-[ RECORD 1 ]------\n\
             name  | Smith, \"Jo\"\n\
             total | 12.5\n\
             -[ RECORD 2 ]------\n\
             name  | ∅\n\
             total | 3"
        );
        // A long column name puts psql's `+` over the separator; more lines stay under it.
        let o = Outcome {
            columns: vec!["a_long_column_name".into(), "b".into()],
            rows: vec![vec![Value::Text("one\ntwo".into()), Value::Int(7)]],
            truncated: false,
        };
        let t = show_as(&o, Format::Table, &look, Some(80), None, &never).unwrap();
        assert_eq!(
            t.text,
            "-[ RECORD 1 ]------+----\n\
             a_long_column_name | one\n\
             \x20                  | two\n\
             b                  | 7"
        );
        let none = Outcome {
            rows: vec![],
            ..o.clone()
        };
        let shown = show_as(&none, Format::Table, &look, Some(80), None, &never);
        assert_eq!(shown.unwrap().text, "");
        // auto: records only when the table is wider than the width, and never for one column.
        let auto = Look {
            expanded: Expanded::Auto,
            ..Look::default()
        };
        let narrow = show_as(&o, Format::Table, &auto, Some(20), None, &never).unwrap();
        assert!(narrow.text.starts_with("-[ RECORD 1 ]"), "{}", narrow.text);
        let wide = show_as(&o, Format::Table, &auto, Some(80), None, &never).unwrap();
        assert!(wide.text.starts_with('┌'), "{}", wide.text);
        let unknown = show_as(&o, Format::Table, &auto, None, None, &never).unwrap();
        assert!(unknown.text.starts_with('┌'), "{}", unknown.text);
        let one = one_text("x ".repeat(40));
        let one = show_as(&one, Format::Table, &auto, Some(20), None, &never).unwrap();
        assert!(one.text.starts_with('┌'), "{}", one.text);
        assert_eq!("on".parse(), Ok(Expanded::On));
        assert_eq!(" AUTO".parse(), Ok(Expanded::Auto));
        assert_eq!("TRUE ".parse(), Ok(Expanded::On));
        assert_eq!("0".parse(), Ok(Expanded::Off));
        assert_eq!(
            " Maybe".parse::<Expanded>(),
            Err("unknown expanded mode `maybe` (on, off, auto)".into())
        );
        assert_eq!(" JSON".parse(), Ok(Format::Json));
        assert_eq!(
            "xml".parse::<Format>(),
            Err("unknown format `xml` (table, csv, json)".into())
        );
    }

    #[test]
    fn narrow_tables_never_split_numbers_or_words() {
        let o = Outcome {
            columns: vec!["id".into(), "revenue".into(), "note".into(), "ratio".into()],
            rows: vec![
                vec![
                    Value::Int(11170334),
                    Value::Decimal("123456789012.50".into()),
                    Value::Text("a fairly long note that has to wrap somewhere".into()),
                    Value::Float(0.333333333333),
                ],
                vec![
                    Value::Int(-42),
                    Value::Decimal("7".into()),
                    Value::Text("short".into()),
                    Value::Float(1.5),
                ],
            ],
            truncated: false,
        };
        for width in [20, 30, 45, 60, 80] {
            let t = table(&o, Some(width));
            for whole in [
                "11170334",
                "123456789012.50",
                "0.333333333333",
                "fairly",
                "somewhere",
                "revenue",
            ] {
                assert!(t.contains(whole), "`{whole}` split at width {width}:\n{t}");
            }
        }
        // With room, the table fits the width by wrapping the text at spaces.
        let t = table(&o, Some(60));
        assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
        assert!(t.lines().count() > 6, "{t}");
        // A word wider than the whole width breaks (alone it never fits); the table fits.
        let hex = Outcome {
            columns: vec!["h".into(), "n".into()],
            rows: vec![vec![Value::Text("AB".repeat(60)), Value::Int(11170334)]],
            truncated: false,
        };
        let t = table(&hex, Some(50));
        assert!(t.contains("11170334"), "{t}");
        assert!(t.lines().all(|l| l.chars().count() <= 50), "{t}");
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
