//! `sqlora model pull` and `model list`: the registry's models fetched (or a cached copy
//! verified, through `session::pull`) into the models dir, and what that dir holds. Downloads
//! only what the registry names, with its sha256 checked; never deletes a file.

use anyhow::{Context, Result};

use super::session::{model_label, pull};
use crate::cli::ModelCommand;
use crate::hub::registry;
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
