//! Example values in the schema context: how many of a text column's distinct values the
//! model is shown, and the per-table sampling query the server backends run for them.
//!
//! Owns the numbers (a few examples, all of an enum-like handful, one for a date) and which
//! columns are sampled; each backend writes its own SQL and runs it. Never connects.

use crate::schema::Table;

/// Distinct example values shown per text column.
pub const SAMPLES: usize = 3;
/// A text column with at most this many distinct values has them all shown.
pub const ENUM_MAX: usize = 8;
/// Schemas of at most this many tables have their text columns sampled by a query (larger
/// ones would cost a query per table at every start).
pub const SAMPLE_QUERY_MAX_TABLES: usize = 60;

/// What is shown of a column's distinct `values` (at most [`ENUM_MAX`] + 1 read): one for a
/// date-like column (it shows the format), all of them when there are few (an enum-like
/// column such as a status), otherwise [`SAMPLES`].
pub fn kept(mut values: Vec<String>, date_like: bool) -> Vec<String> {
    let keep = if date_like {
        1
    } else if values.len() <= ENUM_MAX {
        values.len()
    } else {
        SAMPLES
    };
    values.truncate(keep);
    values
}

/// Fills the samples of the text columns of `tables` that have none, one query per table, over
/// its first rows only. `text_columns` are (table, column, date-like) as introspection found
/// them; enums and primary-key columns are not sampled. `part` writes the subquery of one
/// column (by name) that reads its distinct values from `from(table)`; `read` runs the
/// `SELECT` of all of a table's parts and gives each part's values, or fails (the table then
/// keeps no samples).
pub fn sample_tables<E>(
    tables: &mut [Table],
    text_columns: &[(usize, usize, bool)],
    from: impl Fn(&Table) -> String,
    part: impl Fn(&str, &str) -> String,
    mut read: impl FnMut(String) -> Result<Vec<Vec<String>>, E>,
) {
    for (ti, table) in tables.iter_mut().enumerate() {
        let wanted: Vec<(usize, bool)> = text_columns
            .iter()
            .filter(|&&(t, c, _)| {
                if t != ti {
                    return false;
                }
                let col = &table.columns[c];
                col.samples.is_empty()
                    && col.enum_values.is_empty()
                    && !table.primary_key.contains(&col.name)
            })
            .map(|&(_, c, date)| (c, date))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let from = from(table);
        let parts: Vec<String> = wanted
            .iter()
            .map(|&(c, _)| part(&table.columns[c].name, &from))
            .collect();
        let Ok(values) = read(format!("SELECT {}", parts.join(", "))) else {
            continue;
        };
        for ((c, date_like), vals) in wanted.into_iter().zip(values) {
            table.columns[c].samples = kept(vals, date_like);
        }
    }
}
