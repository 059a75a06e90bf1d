//! The adapter shipped inside sqlora for the default model (`bundled/qwen2.5-coder-0.5b-sql/`:
//! the README recipe trained on Spider train with inference's own prompts, rounded to bf16): its
//! files are compiled into the binary, and [`install`] writes them into the adapter library
//! under [`NAME`] the first time they are needed, so `adapters list|show|export` and `eval`'s
//! records treat it like any other adapter. It is used only with the GGUF it was trained on
//! (the sha256 in its `sqlora.json`). Never chooses when it is used (the commands do), and never
//! deletes another adapter: a user's folder that had the name before it was reserved is moved
//! aside (the one thing [`install_and_say`] prints).

use std::path::Path;

use super::adapter::{CONFIG_FILE, WEIGHTS_FILE};
use super::library::{BaseIdentity, Library, Meta, META_FILE};
use crate::llm::LlmError;

/// The library name of the shipped adapter (reserved: nothing else may be saved under it).
pub const NAME: &str = super::library::SHIPPED_NAME;

const CONFIG: &[u8] = include_bytes!("bundled/qwen2.5-coder-0.5b-sql/adapter_config.json");
const WEIGHTS: &[u8] = include_bytes!("bundled/qwen2.5-coder-0.5b-sql/adapter_model.safetensors");
const META: &[u8] = include_bytes!("bundled/qwen2.5-coder-0.5b-sql/sqlora.json");

/// The shipped adapter's `sqlora.json`.
pub fn meta() -> Meta {
    serde_json::from_slice(META)
        .expect("the shipped sqlora.json is valid (tests/bundled_adapter.rs)")
}

/// sha256 of the shipped weights file.
pub fn weights_sha256() -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(WEIGHTS))
}

/// Whether the shipped adapter was made for `base`: the same GGUF by sha256 (a model whose
/// file sqlora does not know has no sha256 here, and gets no shipped adapter).
pub fn fits(base: &BaseIdentity) -> bool {
    let made_for = meta().base;
    made_for.gguf_sha256.is_some()
        && made_for.gguf_sha256 == base.gguf_sha256
        && made_for.architecture == base.architecture
        && made_for.hidden_size == base.hidden_size
        && made_for.layers == base.layers
}

/// A file in the installed folder that says sqlora put it there (and may replace it).
const MARK: &str = "shipped-with-sqlora";

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The library held it already, byte for byte.
    Present,
    /// It was written (first use, or an older or damaged copy replaced).
    Written,
    /// It was written, and an adapter of the user's that had its name (made before the name
    /// was reserved) was moved to this name first.
    MovedAside(String),
}

/// Whether the library's folder [`NAME`] holds the shipped weights and config (its
/// `sqlora.json` may have gathered evaluations since).
fn present(lib: &Library) -> bool {
    let dest = lib.path(NAME);
    std::fs::read(dest.join(WEIGHTS_FILE)).is_ok_and(|w| w == WEIGHTS)
        && std::fs::read(dest.join(CONFIG_FILE)).is_ok_and(|c| c == CONFIG)
        && lib.meta(NAME).is_some()
}

/// Makes sure the library holds the shipped adapter under [`NAME`], byte for byte: writes it
/// when missing or different (an older sqlora's copy), keeping the evaluations an earlier copy
/// of the same weights recorded. A folder of that name that sqlora did not install is the
/// user's: it is moved aside, never deleted. Safe against another sqlora doing the same.
pub fn install(lib: &Library) -> Result<Installed, LlmError> {
    if present(lib) {
        return Ok(Installed::Present);
    }
    let dest = lib.path(NAME);
    // Written beside the library and renamed into place: a half-written copy is never loaded.
    std::fs::create_dir_all(lib.dir()).map_err(|e| io(lib.dir(), e))?;
    let pid = std::process::id();
    let tmp = lib.dir().join(format!(".{NAME}.{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    for (file, bytes) in [
        (CONFIG_FILE, CONFIG),
        (WEIGHTS_FILE, WEIGHTS),
        (META_FILE, META),
        (
            MARK,
            b"This folder is the adapter shipped with sqlora; sqlora replaces it.\n" as &[u8],
        ),
    ] {
        std::fs::write(tmp.join(file), bytes).map_err(|e| io(&tmp.join(file), e))?;
    }
    // Another sqlora may have installed it meanwhile: then its copy stays.
    if present(lib) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(Installed::Present);
    }
    let mut moved = None;
    if dest.exists() {
        // Out of the way by a rename (a reader holding the old folder's files keeps them).
        let aside = if dest.join(MARK).is_file() {
            lib.dir().join(format!(".{NAME}.old.{pid}"))
        } else {
            let name = (1..)
                .map(|k| {
                    format!(
                        "{NAME}-yours{}",
                        if k == 1 {
                            String::new()
                        } else {
                            format!("-{k}")
                        }
                    )
                })
                .find(|n| !lib.path(n).exists())
                .expect("some name is free");
            moved = Some(name.clone());
            lib.path(&name)
        };
        if let Err(e) = std::fs::rename(&dest, &aside) {
            let _ = std::fs::remove_dir_all(&tmp);
            if present(lib) {
                return Ok(Installed::Present);
            }
            return Err(io(&dest, e));
        }
        if moved.is_none() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(moved.map_or(Installed::Written, Installed::MovedAside)),
        Err(_) if present(lib) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(Installed::Present)
        }
        Err(e) => Err(io(&dest, e)),
    }
}

/// [`install`], with what it did said on stderr when the user should know (an adapter of
/// theirs moved aside); errors are returned.
pub fn install_and_say(lib: &Library) -> Result<(), LlmError> {
    if let Installed::MovedAside(to) = install(lib)? {
        eprintln!(
            "sqlora: your adapter named `{NAME}` was moved to `{to}`: that name is now the \
             adapter shipped with sqlora"
        );
    }
    Ok(())
}

fn io(path: &Path, e: impl std::fmt::Display) -> LlmError {
    LlmError::Adapter(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::lora::adapter::Adapter;

    #[test]
    fn installs_once_and_mends_a_changed_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = Library::new(tmp.path().join("adapters"));
        assert_eq!(
            install(&lib).unwrap(),
            Installed::Written,
            "first use writes it"
        );
        assert_eq!(
            install(&lib).unwrap(),
            Installed::Present,
            "then it is there"
        );
        assert_eq!(lib.names(), vec![NAME.to_string()]);
        let a = Adapter::load(&lib.path(NAME)).unwrap();
        assert_eq!(a.sha256, weights_sha256());
        // A damaged or older copy is replaced.
        std::fs::write(lib.path(NAME).join(WEIGHTS_FILE), b"old").unwrap();
        assert_eq!(install(&lib).unwrap(), Installed::Written);
        assert_eq!(
            Adapter::load(&lib.path(NAME)).unwrap().sha256,
            weights_sha256()
        );
        // No temporary folder is left behind.
        assert_eq!(std::fs::read_dir(lib.dir()).unwrap().count(), 1);
    }

    #[test]
    fn a_users_adapter_of_that_name_is_moved_aside_not_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = Library::new(tmp.path().join("adapters"));
        let mine = lib.path(NAME);
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join(CONFIG_FILE), b"{}").unwrap();
        std::fs::write(mine.join(WEIGHTS_FILE), b"my weights").unwrap();
        let to = format!("{NAME}-yours");
        assert_eq!(install(&lib).unwrap(), Installed::MovedAside(to.clone()));
        assert_eq!(
            std::fs::read(lib.path(&to).join(WEIGHTS_FILE)).unwrap(),
            b"my weights"
        );
        assert_eq!(
            Adapter::load(&lib.path(NAME)).unwrap().sha256,
            weights_sha256()
        );
        assert_eq!(lib.names(), vec![NAME.to_string(), to]);
        // The shipped copy, once damaged, is replaced in place (nothing more moved aside).
        std::fs::write(lib.path(NAME).join(WEIGHTS_FILE), b"old").unwrap();
        assert_eq!(install(&lib).unwrap(), Installed::Written);
        assert_eq!(lib.names().len(), 2);
    }

    #[test]
    fn fits_only_the_gguf_it_was_trained_on() {
        let made_for = meta().base;
        assert!(fits(&made_for));
        let unknown_file = BaseIdentity {
            gguf_sha256: None,
            ..made_for.clone()
        };
        assert!(!fits(&unknown_file));
        let other = BaseIdentity {
            gguf_sha256: Some("0".repeat(64)),
            ..made_for
        };
        assert!(!fits(&other));
    }
}
