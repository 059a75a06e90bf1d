//! The adapter kept in the repository for the default model
//! (`src/llm/lora/bundled/qwen2.5-coder-0.5b-sql/`, the README recipe's `own`, rounded to bf16):
//! it must stay byte for byte what its sha256 says, read as a PEFT LoRA adapter (r = 16, all
//! seven projections of all 24 layers, finite weights), and fit the default 0.5B GGUF by its
//! `sqlora.json`. Needs no model and no database; never writes a file.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use sqlora::llm::lora::adapter::Adapter;
use sqlora::llm::lora::library::{mismatch, BaseIdentity, Meta};

/// sha256 of `adapter_model.safetensors` (bf16, 17,640,776 bytes).
const WEIGHTS_SHA256: &str = "34dc0342c976f08d9cc391743ae184dee9e6f8532db1326bcc14d942df552c30";
/// The default GGUF (qwen2.5-coder-0.5b-instruct-q4_k_m.gguf) it was trained on.
const BASE_GGUF_SHA256: &str = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/llm/lora/bundled/qwen2.5-coder-0.5b-sql")
}

#[test]
fn the_bundled_adapter_matches_its_sha256_and_fits_the_default_model() {
    let weights = std::fs::read(dir().join("adapter_model.safetensors")).expect("weights");
    assert_eq!(format!("{:x}", Sha256::digest(&weights)), WEIGHTS_SHA256);

    let adapter = Adapter::load(&dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(adapter.sha256, WEIGHTS_SHA256);
    assert_eq!(adapter.config.r, 16);
    assert_eq!(
        adapter.weights.len(),
        24 * 7,
        "every projection of every layer"
    );

    let meta: Meta = serde_json::from_str(
        &std::fs::read_to_string(dir().join("sqlora.json")).expect("sqlora.json"),
    )
    .expect("sqlora.json is the library's metadata");
    assert_eq!(meta.base.gguf_sha256.as_deref(), Some(BASE_GGUF_SHA256));
    let default_model = BaseIdentity {
        architecture: "qwen2".into(),
        hidden_size: 896,
        layers: 24,
        gguf_sha256: Some(BASE_GGUF_SHA256.into()),
    };
    assert_eq!(mismatch(Some(&meta), &adapter, &default_model), None);
    // Another GGUF of the same shape is refused by its sha256.
    let other = BaseIdentity {
        gguf_sha256: Some("0".repeat(64)),
        ..default_model
    };
    assert!(mismatch(Some(&meta), &adapter, &other).is_some());
}
