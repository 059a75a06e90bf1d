//! Where models come from and where they run: the registry of known models with their pinned
//! checksums and the fetch that brings one into the models dir ([`registry`]), and the choice
//! of device and weight plan for a machine ([`device`]).
//!
//! Never runs a model; never prints (a fetch reports progress through a callback).

pub mod device;
pub mod registry;

use crate::llm::lora::library::{base_of, BaseIdentity};
use crate::llm::Engine;

/// The base identity of a loaded model, with its GGUF's sha256 when the registry knows the file.
pub fn base_identity(engine: &Engine) -> BaseIdentity {
    let info = engine.info();
    base_of(engine, registry::known_sha256(&info.path, info.file_size))
}
