//! `sqlora adapters …`: list, show, import, export, remove the LoRA adapters in the library,
//! and pick the one a database uses by default; the shipped adapter is installed into the
//! library first. Reads and writes the library only; applying an adapter to a model is
//! [`super::session::apply_adapter`]'s.

use anyhow::Result;

use super::session::{self, adapter_error, adapter_library, load_engine};
use crate::cli::AdaptersCommand;
use crate::{db, hub, llm};

/// Runs `sqlora adapters …`.
pub fn command(cmd: AdaptersCommand) -> Result<()> {
    let lib = adapter_library()?;
    // The shipped adapter is listed, shown and exported like any other (a removed copy comes
    // back on its next use).
    if !matches!(cmd, AdaptersCommand::Remove { .. }) {
        if let Err(e) = llm::lora::bundled::install_and_say(&lib) {
            eprintln!("sqlora: the shipped adapter could not be installed: {e}");
        }
    }
    match cmd {
        AdaptersCommand::List => {
            let defaults = lib.defaults();
            let names = lib.names();
            if names.is_empty() {
                println!(
                    "no adapters in {} (import one with `sqlora adapters import DIR`)",
                    lib.dir().display()
                );
            }
            for n in names {
                let meta = lib.meta(&n);
                let cfg = llm::lora::adapter::Adapter::load(&lib.path(&n)).map(|a| a.config);
                let dbs: Vec<&str> = defaults
                    .iter()
                    .filter(|(_, v)| **v == n)
                    .map(|(k, _)| k.as_str())
                    .collect();
                println!(
                    "{n:<24} {}  base {}  {}{}",
                    cfg.as_ref().map_or_else(
                        |e| format!("(unreadable: {e})"),
                        |c| format!("r={} alpha={} on {}", c.r, c.lora_alpha, c.target_modules)
                    ),
                    meta.as_ref().map_or_else(
                        || "?".into(),
                        |m| format!(
                            "{} h{} x{}",
                            m.base.architecture, m.base.hidden_size, m.base.layers
                        )
                    ),
                    meta.as_ref().map_or("", |m| m.created_at.as_str()),
                    if dbs.is_empty() {
                        String::new()
                    } else {
                        format!("  default for {}", dbs.join(", "))
                    }
                );
            }
            Ok(())
        }
        AdaptersCommand::Show { name } => {
            let a = llm::lora::adapter::Adapter::load(&lib.path(&name))
                .map_err(|e| anyhow::anyhow!("{e} (see `sqlora adapters list`)"))?;
            println!("{}", serde_json::to_string_pretty(&a.config)?);
            if let Some(m) = lib.meta(&name) {
                println!("{}", serde_json::to_string_pretty(&m)?);
            }
            println!(
                "{} adapted projections, scale {}, weights sha256 {}",
                a.weights.len(),
                a.config.scale(),
                a.sha256
            );
            Ok(())
        }
        AdaptersCommand::Import { path, name, model } => {
            let name = name.unwrap_or_else(|| {
                path.file_name()
                    .map_or_else(|| "adapter".into(), |n| n.to_string_lossy().into_owned())
            });
            model
                .local_only("importing an adapter")
                .map_err(anyhow::Error::msg)?;
            let engine = load_engine(&model)?;
            let dest = lib.import(&path, &name, &hub::base_identity(&engine))?;
            eprintln!("sqlora: imported `{name}` into {}", dest.display());
            Ok(())
        }
        AdaptersCommand::Export { name, dir, format } if format == "gguf-lora" => {
            let adapter = llm::lora::adapter::Adapter::load(&lib.path(&name))
                .map_err(|e| anyhow::anyhow!("{e} (see `sqlora adapters list`)"))?;
            let arch = lib
                .meta(&name)
                .map(|m| m.base.architecture)
                .ok_or_else(|| {
                    anyhow::anyhow!("adapter `{name}` has no sqlora.json naming its base model")
                })?;
            let file = if dir.is_dir() {
                dir.join(format!("{name}.gguf"))
            } else {
                dir.clone()
            };
            llm::lora::gguf::write(&adapter, &arch, &name, &file).map_err(adapter_error)?;
            eprintln!(
                "sqlora: `{name}` written to {} (llama.cpp LoRA GGUF: llama-server --lora {})",
                file.display(),
                file.display()
            );
            Ok(())
        }
        AdaptersCommand::Export { name, dir, .. } => {
            lib.export(&name, &dir).map_err(adapter_error)?;
            eprintln!(
                "sqlora: `{name}` written to {} (PEFT layout)",
                dir.display()
            );
            Ok(())
        }
        AdaptersCommand::Remove { name } => {
            lib.remove(&name).map_err(adapter_error)?;
            eprintln!("sqlora: removed `{name}`");
            Ok(())
        }
        AdaptersCommand::Use { name, db } => {
            let identity = db::identity(&session::database_url(&db)?)?;
            if name == "default" {
                lib.clear_default(&identity)?;
                eprintln!(
                    "sqlora: {identity} now uses what every database does: the adapter shipped \
                     for the model (`{}` with the default model), else the base model",
                    llm::lora::bundled::NAME
                );
                return Ok(());
            }
            let choice = (name != "none").then_some(name.as_str());
            lib.set_default(&identity, choice)?;
            eprintln!(
                "sqlora: {identity} now uses {}",
                choice.map_or("the base model".into(), |n| format!("adapter `{n}`"))
            );
            Ok(())
        }
    }
}
