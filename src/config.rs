//! The administrator's config file: `config.toml` in the platform's config directory
//! (`~/.config/sqlora/config.toml` on Linux), or the file `SQLORA_CONFIG` names.
//!
//! It holds what a site decides once for every user, today the functions queries may call
//! beyond the built-in allow-list:
//!
//! ```toml
//! [guard.allow_functions]
//! postgres = ["similarity", "analytics.safe_total"]
//! mysql = []
//! sqlite = ["regexp"]
//! ```
//!
//! A missing file is no error; a file that does not parse, or names a key sqlora does not
//! know, is (a typo must not silently widen or narrow the policy). Reads the file, never
//! writes it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::db::Dialect;
use crate::guard::functions::Policy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub guard: GuardConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Extra functions per dialect (`sqlite`, `postgres`, `mysql`).
    #[serde(default)]
    pub allow_functions: AllowFunctions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowFunctions {
    #[serde(default)]
    pub sqlite: Vec<String>,
    #[serde(default, alias = "postgresql")]
    pub postgres: Vec<String>,
    #[serde(default, alias = "mariadb")]
    pub mysql: Vec<String>,
}

/// Where the config file is looked for.
pub fn path() -> Option<PathBuf> {
    match std::env::var_os("SQLORA_CONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => directories::ProjectDirs::from("", "", "sqlora")
            .map(|d| d.config_dir().join("config.toml")),
    }
}

impl Config {
    /// Parses config text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| {
            // toml's message spans lines (it quotes the offending line): keep the first.
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            anyhow::anyhow!("config file {origin}{at}: {msg}")
        })
    }

    /// The config file, or the defaults when there is none. `SQLORA_CONFIG` naming a file
    /// that does not exist is an error.
    pub fn load() -> Result<Config> {
        let Some(path) = path() else {
            return Ok(Config::default());
        };
        let explicit = std::env::var_os("SQLORA_CONFIG").is_some_and(|p| !p.is_empty());
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
        }
    }

    /// The built-in function allow-list with this file's additions.
    pub fn policy(&self) -> Result<Policy> {
        let mut p = Policy::builtin();
        let a = &self.guard.allow_functions;
        for (d, key, names) in [
            (Dialect::Sqlite, "sqlite", &a.sqlite),
            (Dialect::Postgres, "postgres", &a.postgres),
            (Dialect::MySql, "mysql", &a.mysql),
        ] {
            p.allow(d, names)
                .map_err(|e| anyhow::anyhow!("config file: guard.allow_functions.{key}: {e}"))?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_extend_the_builtin_list() {
        let c = Config::parse(
            "[guard.allow_functions]\npostgres = [\"similarity\"]\nsqlite = [\"regexp\"]\n",
            "test",
        )
        .unwrap();
        let p = c.policy().unwrap();
        assert_eq!(p.size(Dialect::Postgres).1, 1);
        assert_eq!(p.size(Dialect::Sqlite).1, 1);
        assert_eq!(p.size(Dialect::MySql).1, 0);
    }

    #[test]
    fn typos_and_bad_names_are_errors_on_one_line() {
        let e = Config::parse("[guard.allow_function]\npostgres = []\n", "c.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("c.toml") && msg.contains("line 1"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let c = Config::parse("[guard.allow_functions]\nmysql = [\"a;b\"]\n", "c").unwrap();
        assert!(c.policy().is_err());
        assert!(Config::parse("", "c").unwrap().policy().is_ok());
    }
}
