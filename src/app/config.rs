//! The config file: `config.toml` in the platform's config directory
//! (`~/.config/sqlora/config.toml` on Linux), or the file `SQLORA_CONFIG` names.
//!
//! It holds what a site decides once for every user — the functions queries may call beyond
//! the built-in allow-list — and a user's defaults for the command-line options:
//!
//! ```toml
//! [guard.allow_functions]
//! postgres = ["similarity", "analytics.safe_total"]
//! mysql = []
//! sqlite = ["regexp"]
//!
//! [defaults]
//! db = "chinook.sqlite"        # --db
//! model = "qwen2.5-coder-1.5b" # --model
//! adapter = "none"             # --adapter
//! backend = "llamacpp://gpu-box:8080" # --backend: local, openai://… or llamacpp://…
//! format = "table"             # --format: table, csv or json
//! pager = false                # --pager
//! null = "∅"                   # --null: how NULL is shown
//! timeout = 10                 # --timeout, seconds
//! max_rows = 500               # --max-rows
//! constrain = true             # --constrain on|off
//! candidates = 4               # --candidates
//! examples = 4                 # --examples
//! ```
//!
//! A `[defaults]` value only becomes clap's default ([`Config::apply`]): a flag on the command
//! line, or its environment variable (`DATABASE_URL`, `SQLORA_MODEL`, `SQLORA_ADAPTER`,
//! `SQLORA_BACKEND`), wins.
//!
//! A missing file is no error; a file that does not parse, names a key sqlora does not know,
//! or holds a value out of range, is — on one line naming the file and the line (a typo must
//! not silently widen or narrow the policy). Reads the file, never writes it; `sqlora config
//! path` and `config show` print where it is and the settings in effect, never a password.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::guard::functions::Policy;
use crate::sql::Dialect;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub defaults: Defaults,
}

/// `[defaults]`: values for the options of the same names (each optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub db: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub adapter: Option<Spanned<String>>,
    pub backend: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub pager: Option<Spanned<bool>>,
    pub null: Option<Spanned<String>>,
    pub timeout: Option<Spanned<f64>>,
    pub max_rows: Option<Spanned<i64>>,
    pub constrain: Option<Spanned<bool>>,
    pub candidates: Option<Spanned<i64>>,
    pub examples: Option<Spanned<i64>>,
}

/// Which commands each `[defaults]` key applies to (`""`: sqlora without a subcommand). `db`
/// is left out of `feedback`/`train`, where `--db` filters rather than connects.
const SCOPES: &[(&str, &[&str])] = &[
    ("db", &["", "shell", "ask"]),
    ("model", &["", "shell", "ask", "eval", "train"]),
    ("adapter", &["", "shell", "ask", "eval"]),
    ("backend", &["", "shell", "ask", "eval"]),
    ("format", &["", "shell", "ask"]),
    ("pager", &["", "shell"]),
    ("null", &["", "shell"]),
    ("timeout", &["", "shell", "ask", "eval"]),
    ("max_rows", &["", "shell", "ask", "eval"]),
    ("constrain", &["", "shell", "ask", "eval"]),
    ("candidates", &["", "shell", "ask", "eval"]),
    ("examples", &["", "shell", "ask", "eval"]),
];

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
        let at = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default()
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message spans lines (it quotes the offending line): keep the first.
            let msg = e.message().lines().next().unwrap_or_default().to_string();
            anyhow::anyhow!("config file {origin}{}: {msg}", at(e.span()))
        })?;
        if let Some((span, msg)) = config.defaults.invalid() {
            bail!("config file {origin}{}: {msg}", at(Some(span)));
        }
        Ok(config)
    }

    /// `cmd` (the command line's definition) with this file's `[defaults]` as the defaults
    /// of their options, so that the command line and the environment still win.
    pub fn apply(&self, mut cmd: clap::Command) -> clap::Command {
        for (key, value) in self.defaults.values() {
            let Some((_, scopes)) = SCOPES.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            // clap keeps defaults for the life of the process: so does this one, read once.
            let value: &'static str = Box::leak(value.into_boxed_str());
            let set = |a: clap::Arg| a.default_value(value).hide_default_value(key == "db");
            for scope in *scopes {
                cmd = if scope.is_empty() {
                    cmd.mut_arg(key, set)
                } else {
                    cmd.mut_subcommand(*scope, |sub| sub.mut_arg(key, set))
                };
            }
        }
        cmd
    }

    /// The settings `sqlora` (the shell) would run with, one `key  value  (source)` a line:
    /// the command line's definition with this file applied, read as clap reads it (so the
    /// environment counts); a database URL's password never shows.
    pub fn show(&self, cmd: clap::Command) -> Result<String> {
        let m = self
            .apply(cmd)
            .try_get_matches_from(["sqlora"])
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
        let in_file: Vec<&str> = self.defaults.values().iter().map(|(k, _)| *k).collect();
        let mut out = String::new();
        let file = match path() {
            Some(p) if p.is_file() => p.display().to_string(),
            Some(p) => format!("{} (not present)", p.display()),
            None => "(no config directory)".to_string(),
        };
        out.push_str(&format!("{:<10} {file}\n", "config"));
        for (key, _) in SCOPES {
            let raw = m
                .get_raw(key)
                .and_then(|mut v| v.next())
                .map(|v| v.to_string_lossy().into_owned());
            let env = match *key {
                "db" => "DATABASE_URL",
                "model" => "SQLORA_MODEL",
                "backend" => "SQLORA_BACKEND",
                _ => "SQLORA_ADAPTER",
            };
            let source = match m.value_source(key) {
                Some(clap::parser::ValueSource::EnvVariable) => format!("from ${env}"),
                Some(clap::parser::ValueSource::DefaultValue) if in_file.contains(key) => {
                    "from the config file".to_string()
                }
                Some(_) => "default".to_string(),
                None => "default".to_string(),
            };
            let value = match (raw, *key) {
                (Some(v), "db") => crate::db::redact_url(&v),
                (Some(v), _) => v,
                (None, "db") => "the bundled demo database".to_string(),
                (None, "model") => crate::hub::registry::DEFAULT_MODEL.to_string(),
                (None, "adapter") => {
                    "the database's own choice, else the adapter shipped for the model".into()
                }
                (None, "pager") => "when the output is a terminal".to_string(),
                (None, "null") => "(empty)".to_string(),
                (None, _) => String::new(),
            };
            out.push_str(&format!("{key:<10} {value}  ({source})\n"));
        }
        Ok(out)
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

impl Defaults {
    /// The keys set, each with its value as the command line would spell it.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let d = self;
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
        [
            ("db", s(&d.db)),
            ("model", s(&d.model)),
            ("adapter", s(&d.adapter)),
            ("backend", s(&d.backend)),
            ("format", s(&d.format)),
            ("pager", d.pager.as_ref().map(|v| v.get_ref().to_string())),
            ("null", s(&d.null)),
            (
                "timeout",
                d.timeout.as_ref().map(|v| v.get_ref().to_string()),
            ),
            (
                "max_rows",
                d.max_rows.as_ref().map(|v| v.get_ref().to_string()),
            ),
            (
                "constrain",
                d.constrain
                    .as_ref()
                    .map(|v| if *v.get_ref() { "on" } else { "off" }.to_string()),
            ),
            (
                "candidates",
                d.candidates.as_ref().map(|v| v.get_ref().to_string()),
            ),
            (
                "examples",
                d.examples.as_ref().map(|v| v.get_ref().to_string()),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// The first value out of range, with where it is and why.
    fn invalid(&self) -> Option<(std::ops::Range<usize>, String)> {
        use crate::cli::{MAX_ROWS, MAX_TIMEOUT_SECS};
        if let Some(f) = &self.format {
            if f.get_ref().parse::<crate::shell::render::Format>().is_err() {
                return Some((
                    f.span(),
                    format!(
                        "defaults.format: `{}` is not table, csv or json",
                        f.get_ref()
                    ),
                ));
            }
        }
        if let Some(b) = &self.backend {
            if let Err(e) = b.get_ref().parse::<crate::llm::remote::BackendChoice>() {
                return Some((b.span(), format!("defaults.backend: {e}")));
            }
        }
        if let Some(t) = &self.timeout {
            let v = *t.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_SECS) {
                return Some((
                    t.span(),
                    format!("defaults.timeout: {v} is not a number of seconds in (0, {MAX_TIMEOUT_SECS}]"),
                ));
            }
        }
        if let Some(n) = &self.max_rows {
            let v = *n.get_ref();
            if !(1..=MAX_ROWS as i64).contains(&v) {
                return Some((
                    n.span(),
                    format!("defaults.max_rows: {v} is not from 1 to {MAX_ROWS}"),
                ));
            }
        }
        if let Some(n) = &self.candidates {
            let v = *n.get_ref();
            if !(1..=64).contains(&v) {
                return Some((
                    n.span(),
                    format!("defaults.candidates: {v} is not from 1 to 64"),
                ));
            }
        }
        if let Some(n) = &self.examples {
            let v = *n.get_ref();
            if !(0..=16).contains(&v) {
                return Some((
                    n.span(),
                    format!("defaults.examples: {v} is not from 0 to 16"),
                ));
            }
        }
        for (key, v) in [
            ("db", &self.db),
            ("model", &self.model),
            ("adapter", &self.adapter),
        ] {
            if let Some(v) = v.as_ref().filter(|v| v.get_ref().trim().is_empty()) {
                return Some((v.span(), format!("defaults.{key} is empty")));
            }
        }
        None
    }
}

/// `sqlora config path|show`.
pub fn command(cmd: &crate::cli::ConfigCommand) -> Result<()> {
    match cmd {
        crate::cli::ConfigCommand::Path => match path() {
            Some(p) => println!("{}", p.display()),
            None => bail!("no config directory on this system; set SQLORA_CONFIG"),
        },
        crate::cli::ConfigCommand::Show => {
            print!(
                "{}",
                Config::load()?.show(<crate::cli::Cli as clap::CommandFactory>::command())?
            )
        }
    }
    Ok(())
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

    fn resolved(config: &str, args: &[&str]) -> crate::cli::Command {
        use clap::FromArgMatches;
        let c = Config::parse(config, "c.toml").unwrap();
        let m = c
            .apply(<crate::cli::Cli as clap::CommandFactory>::command())
            .try_get_matches_from([&["sqlora"], args].concat())
            .unwrap();
        crate::cli::Cli::from_arg_matches(&m)
            .unwrap()
            .resolve(|_| false)
            .unwrap()
    }

    const DEFAULTS: &str = "[defaults]\ndb = \"sqlite:site.db\"\nformat = \"csv\"\n\
        timeout = 7\nmax_rows = 20\npager = false\nnull = \"-\"\nmodel = \"smollm2-135m\"\n";

    #[test]
    fn defaults_fill_in_and_the_command_line_wins() {
        use crate::cli::Command;
        use crate::shell::render::Format;
        match resolved(DEFAULTS, &[]) {
            Command::Shell(s) => {
                assert_eq!(s.common.db.db.as_deref(), Some("sqlite:site.db"));
                assert_eq!(s.format, Format::Csv);
                assert_eq!((s.common.run.timeout, s.common.run.max_rows), (7.0, 20));
                assert_eq!((s.pager, s.null.as_deref()), (Some(false), Some("-")));
                assert_eq!(s.common.model.model.as_deref(), Some("smollm2-135m"));
            }
            other => panic!("{other:?}"),
        }
        match resolved(
            DEFAULTS,
            &[
                "ask",
                "--db",
                "x.db",
                "--format",
                "json",
                "--timeout",
                "2",
                "q",
            ],
        ) {
            Command::Ask(a) => {
                assert_eq!(a.common.db.db.as_deref(), Some("x.db"));
                assert_eq!(a.format, Format::Json);
                assert_eq!((a.common.run.timeout, a.common.run.max_rows), (2.0, 20));
            }
            other => panic!("{other:?}"),
        }
        // The positional database wins over the file's too.
        match resolved(DEFAULTS, &["--pager", "on", "postgres://u@h/d"]) {
            Command::Shell(s) => {
                assert_eq!(s.common.db.db.as_deref(), Some("postgres://u@h/d"));
                assert_eq!(s.pager, Some(true));
            }
            other => panic!("{other:?}"),
        }
        // No file: the built-in defaults.
        match resolved("", &[]) {
            Command::Shell(s) => {
                assert_eq!(s.common.db.db, None);
                assert_eq!((s.common.run.timeout, s.common.run.max_rows), (30.0, 1000));
                assert_eq!((s.pager, s.null), (None, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn show_hides_passwords_and_names_sources() {
        let c = Config::parse(
            "[defaults]\ndb = \"postgres://ann:s3cret@h/d\"\ntimeout = 9\n",
            "c",
        )
        .unwrap();
        let text = c
            .show(<crate::cli::Cli as clap::CommandFactory>::command())
            .unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres://ann@h/d"), "{text}");
        assert!(
            text.contains("timeout    9  (from the config file)"),
            "{text}"
        );
        assert!(text.contains("max_rows   1000  (default)"), "{text}");
    }

    #[test]
    fn bad_defaults_are_one_line_errors_naming_file_and_line() {
        for (text, line, what) in [
            ("[defaults]\nformat = \"xml\"\n", 2, "defaults.format"),
            ("[defaults]\n\ntimeout = 0\n", 3, "defaults.timeout"),
            ("[defaults]\nmax_rows = -1\n", 2, "defaults.max_rows"),
            ("[defaults]\npager = \"yes\"\n", 2, "bool"),
            ("[defaults]\ncolour = 1\n", 2, "colour"),
            ("[defaults]\ndb = \" \"\n", 2, "defaults.db"),
        ] {
            let msg = Config::parse(text, "/etc/c.toml").unwrap_err().to_string();
            assert!(
                msg.contains("/etc/c.toml") && msg.contains(&format!("line {line}")),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        // The guard's table still reads alongside.
        let c = Config::parse(
            "[guard.allow_functions]\nsqlite = [\"regexp\"]\n[defaults]\nnull = \"\"\n",
            "c",
        )
        .unwrap();
        assert_eq!(c.policy().unwrap().size(Dialect::Sqlite).1, 1);
    }
}
