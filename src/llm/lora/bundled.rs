//! The adapter shipped inside sqlora for the default model (`bundled/qwen2.5-coder-0.5b-sql/`:
//! the README recipe trained on Spider train with inference's own prompts, rounded to bf16): its
//! files are compiled into the binary, and [`install`] writes them into the adapter library
//! under [`NAME`] the first time they are needed, so `adapters list|show|export` and `eval`'s
//! records treat it like any other adapter. It is used only with the GGUF it was trained on
//! (the sha256 in its `sqlora.json`). Never chooses when it is used (the commands do) and never
//! touches another adapter's folder.

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

/// Makes sure the library holds the shipped adapter under [`NAME`], byte for byte: writes it
/// when missing or different (an older sqlora's copy), keeping the evaluations an earlier copy
/// of the same weights recorded. Returns whether it wrote.
pub fn install(lib: &Library) -> Result<bool, LlmError> {
    let dest = lib.path(NAME);
    let same = std::fs::read(dest.join(WEIGHTS_FILE)).is_ok_and(|w| w == WEIGHTS)
        && std::fs::read(dest.join(CONFIG_FILE)).is_ok_and(|c| c == CONFIG)
        && lib.meta(NAME).is_some();
    if same {
        return Ok(false);
    }
    // Written beside the library and renamed into place: a half-written copy is never loaded.
    std::fs::create_dir_all(lib.dir()).map_err(|e| io(lib.dir(), e))?;
    let tmp = lib.dir().join(format!(".{NAME}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    for (file, bytes) in [
        (CONFIG_FILE, CONFIG),
        (WEIGHTS_FILE, WEIGHTS),
        (META_FILE, META),
    ] {
        std::fs::write(tmp.join(file), bytes).map_err(|e| io(&tmp.join(file), e))?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(true),
        // Another sqlora installed it at the same moment.
        Err(_) if dest.join(WEIGHTS_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(false)
        }
        Err(e) => Err(io(&dest, e)),
    }
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
        assert!(install(&lib).unwrap(), "first use writes it");
        assert!(!install(&lib).unwrap(), "then it is there");
        assert_eq!(lib.names(), vec![NAME.to_string()]);
        let a = Adapter::load(&lib.path(NAME)).unwrap();
        assert_eq!(a.sha256, weights_sha256());
        // A damaged or older copy is replaced.
        std::fs::write(lib.path(NAME).join(WEIGHTS_FILE), b"old").unwrap();
        assert!(install(&lib).unwrap());
        assert_eq!(
            Adapter::load(&lib.path(NAME)).unwrap().sha256,
            weights_sha256()
        );
        // No temporary folder is left behind.
        assert_eq!(std::fs::read_dir(lib.dir()).unwrap().count(), 1);
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
