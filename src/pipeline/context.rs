//! The context step: what the model is shown of the schema for one question.
//!
//! Owns the token budget check, the value index of the text columns (read from the database
//! once, cached on disk between runs) and the per-question table selection it feeds; the
//! ranking itself is [`crate::schema::select`]'s. Never builds a prompt.

use crate::cancel::Cancel;
use crate::db::Limits;
use crate::schema;
use crate::schema::select::{self, ColumnValues, Selector, ValueIndex};

use super::{AskError, Pipeline};

/// Distinct values read per text column, and rows scanned per column to find them.
const VALUES_PER_COLUMN: usize = 1000;
const ROWS_SCANNED: usize = 20_000;

impl Pipeline {
    /// Tokens of `text` by the model's tokenizer, or an estimate (≈3.5 bytes a token) without
    /// a model.
    fn count_tokens(&self, text: &str) -> usize {
        match self.engine.as_ref().map(|e| e.tokenizer().encode(text)) {
            Some(Ok(ids)) => ids.len(),
            _ => text.len() * 2 / 7,
        }
    }

    /// Whether questions get a table selection (the whole schema is over the budget).
    pub fn selects_tables(&self) -> bool {
        if self.context.len() * 2 / 7 <= self.context_tokens {
            return false;
        }
        // Tokenizing a large schema costs milliseconds per kilobyte: once per schema and model.
        let n = *self
            .context_size
            .get_or_init(|| self.count_tokens(&self.context));
        n > self.context_tokens
    }

    /// Reads (or loads from the cache) the value index and prepares the table ranking.
    pub fn prepare_selection(&mut self, cancel: &Cancel) -> Result<(), AskError> {
        if self.selector.is_some() {
            return Ok(());
        }
        let columns = match self.load_values() {
            Some(c) => c,
            None => {
                let c = self.read_values(cancel);
                self.save_values(&c);
                c
            }
        };
        let index = ValueIndex::new(&columns);
        let dialect = self.dialect();
        let counter = |t: &str| self.count_tokens(t);
        // The chosen tables are shown with example values even where introspection had none.
        let schema = select::with_samples(&self.schema, &columns);
        let selector = Selector::new(&schema, dialect, index, &counter);
        self.selector = Some(selector);
        Ok(())
    }

    /// Distinct values of the text columns, bounded per column; a column that fails to read
    /// (permissions, a timeout) is skipped.
    fn read_values(&mut self, cancel: &Cancel) -> Vec<ColumnValues> {
        let dialect = self.dialect();
        let limits = Limits {
            max_rows: VALUES_PER_COLUMN,
            timeout: std::time::Duration::from_secs(5),
        };
        let mut out = Vec::new();
        for (i, t) in self.schema.tables.iter().enumerate() {
            for c in t
                .columns
                .iter()
                .filter(|c| is_text(&c.data_type, !c.enum_values.is_empty()))
            {
                if cancel.is_set() {
                    return out;
                }
                if !c.enum_values.is_empty() {
                    out.push(ColumnValues {
                        table: i,
                        column: format!("{}.{}", t.name, c.name),
                        values: c.enum_values.clone(),
                    });
                    continue;
                }
                let col = schema::ident(&c.name, dialect);
                let sql = format!(
                    "SELECT DISTINCT {col} FROM (SELECT {col} FROM {} WHERE {col} IS NOT NULL \
                     LIMIT {ROWS_SCANNED}) AS s LIMIT {VALUES_PER_COLUMN}",
                    t.qualified_name(dialect)
                );
                if let Ok(o) = self.db.query(&sql, &limits, cancel) {
                    let values = o
                        .rows
                        .iter()
                        .filter_map(|r| r.first())
                        .map(|v| v.display())
                        .filter(|v| v.chars().count() <= 80)
                        .collect();
                    out.push(ColumnValues {
                        table: i,
                        column: format!("{}.{}", t.name, c.name),
                        values,
                    });
                }
            }
        }
        out
    }

    pub(super) fn values_file(&self) -> Option<std::path::PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = self.values_cache.as_ref()?;
        let h = Sha256::new()
            .chain_update(self.db.describe())
            .chain_update([0u8])
            .chain_update(&self.context)
            .finalize();
        let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}.json")))
    }

    fn load_values(&self) -> Option<Vec<ColumnValues>> {
        let text = std::fs::read_to_string(self.values_file()?).ok()?;
        let cols: Vec<ColumnValues> = serde_json::from_str(&text).ok()?;
        cols.iter()
            .all(|c| c.table < self.schema.tables.len())
            .then_some(cols)
    }

    /// Best effort: without the cache the index is only read again next time.
    fn save_values(&self, cols: &[ColumnValues]) {
        let (Some(file), Some(dir)) = (self.values_file(), self.values_cache.as_ref()) else {
            return;
        };
        if std::fs::create_dir_all(dir).is_ok() {
            if let Ok(text) = serde_json::to_string(cols) {
                let tmp = file.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(tmp, file);
                }
            }
        }
    }

    /// The context for `question`: the whole schema when it fits the budget, else the tables
    /// chosen for it.
    pub fn context_for(&mut self, question: &str, cancel: &Cancel) -> Result<String, AskError> {
        if !self.selects_tables() {
            self.last_selection = None;
            return Ok(self.context.clone());
        }
        self.prepare_selection(cancel)?;
        let selection = self
            .selector
            .as_ref()
            .map(|s| s.select(question, self.context_tokens));
        let context = selection
            .as_ref()
            .map_or_else(|| self.context.clone(), |s| s.context.clone());
        self.last_selection = selection;
        Ok(context)
    }
}

/// Whether a column's values are worth indexing for value linking (text-like types, enums).
fn is_text(data_type: &str, is_enum: bool) -> bool {
    let t = data_type.to_ascii_lowercase();
    is_enum
        || ["char", "text", "string", "clob", "citext", "enum", "set("]
            .iter()
            .any(|k| t.contains(k))
        || t.is_empty()
}
