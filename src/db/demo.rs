//! The bundled demo database (a small online shop): DDL and a deterministic generator in
//! `schemas/demo/`, built into a SQLite file in the data dir on first use.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

pub const SCHEMA_SQL: &str = include_str!("../../schemas/demo/schema.sql");
pub const DATA_SQL: &str = include_str!("../../schemas/demo/data.sql");

/// A version stamp derived from the SQL text, stored in `PRAGMA user_version`, so a changed
/// generator rebuilds the file.
fn version() -> i64 {
    let h = Sha256::new()
        .chain_update(SCHEMA_SQL)
        .chain_update(DATA_SQL)
        .finalize();
    i64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff)
}

/// Builds the demo database at `path` (replacing what is there).
pub fn build(path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("building");
    let _ = std::fs::remove_file(&tmp);
    {
        let conn = Connection::open(&tmp)
            .with_context(|| format!("creating demo database {}", tmp.display()))?;
        conn.execute_batch(SCHEMA_SQL).context("demo schema.sql")?;
        conn.execute_batch(DATA_SQL).context("demo data.sql")?;
        conn.pragma_update(None, "user_version", version())?;
        conn.execute_batch("VACUUM")?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving demo database to {}", path.display()))?;
    Ok(())
}

/// The demo database in `data_dir`, built if missing or out of date.
pub fn ensure(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("demo.sqlite");
    let current = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)))
        .is_ok_and(|v| v == version());
    if !current {
        build(&path)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_deterministically_with_clean_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sqlite");
        let b = dir.path().join("b.sqlite");
        build(&a).unwrap();
        build(&b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let c = Connection::open(&a).unwrap();
        let bad: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(bad, 0);
        let tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!((6..=10).contains(&tables), "{tables} tables");
        let orders: i64 = c
            .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
            .unwrap();
        assert!(orders >= 1000, "{orders} orders");
        let span: String = c
            .query_row(
                "SELECT min(order_date) || '..' || max(order_date) FROM orders",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            span.starts_with("2022") && span.contains("..2025"),
            "{span}"
        );
    }

    #[test]
    fn ensure_reuses_a_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = ensure(dir.path()).unwrap();
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        let p2 = ensure(dir.path()).unwrap();
        assert_eq!(p, p2);
        assert_eq!(before, std::fs::metadata(&p).unwrap().modified().unwrap());
    }
}
