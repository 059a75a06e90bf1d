//! Where sqlora keeps its files: model cache, data (demo database, history, adapters).
//!
//! `SQLORA_CACHE_DIR` and `SQLORA_DATA_DIR` override the platform defaults
//! (`~/.cache/sqlora`, `~/.local/share/sqlora` on Linux).

use std::path::PathBuf;

use anyhow::{Context, Result};

fn project() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "sqlora")
}

fn dir(var: &str, pick: fn(&directories::ProjectDirs) -> PathBuf) -> Result<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => pick(&project().context("cannot determine the home directory; set SQLORA_DATA_DIR")?),
    };
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// `~/.cache/sqlora` (or `$SQLORA_CACHE_DIR`).
pub fn cache_dir() -> Result<PathBuf> {
    dir("SQLORA_CACHE_DIR", |p| p.cache_dir().to_path_buf())
}

/// Downloaded model files.
pub fn models_dir() -> Result<PathBuf> {
    let d = cache_dir()?.join("models");
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// `~/.local/share/sqlora` (or `$SQLORA_DATA_DIR`).
pub fn data_dir() -> Result<PathBuf> {
    dir("SQLORA_DATA_DIR", |p| p.data_dir().to_path_buf())
}
