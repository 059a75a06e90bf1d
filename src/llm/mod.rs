//! The language model: GGUF loading and architecture facts ([`config`]), weights in their
//! inference and training forms ([`linear`]), the layer pieces ([`layers`]) and the one layer
//! body ([`block`]) that inference ([`model`]) and training ([`autograd`]) both run, the KV
//! cache, the one decoding loop ([`generate`]), the [`engine`] that ties them to a tokenizer,
//! a prompt-prefix cache and an adapter, LoRA adapters ([`lora`]), and CUDA speed-ups of the
//! layer body ([`cuda`]), and the prompt builder. [`Backend`] is what the pipeline asks of a
//! model; the engine is one, an inference server reached over HTTP ([`remote`]) the other.
//!
//! Knows nothing of databases or SQL execution; never prints (progress goes through callbacks).

pub mod autograd;
pub mod backend;
mod bench_hooks;
pub mod block;
pub mod cache;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod engine;
pub mod generate;
pub mod gguf_check;
pub mod layers;
pub mod linear;
pub mod lora;
pub mod model;
pub mod prompt;
pub mod remote;
pub mod tokenizer;

use std::path::PathBuf;

pub use backend::Backend;
pub use cache::{BatchCache, KvCache};
pub use config::{Arch, ModelConfig};
pub use engine::{Engine, Generation, LoadOptions, ModelInfo, Request};
pub use generate::{Constraint, GenOptions, Sample, StopRule, TokenMask, TokenTest};
pub use linear::{WeightFormat, WeightPlan};
pub use model::Model;
pub use prompt::{ChatTemplate, Prompt};
pub use tokenizer::TextTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The cause is part of the message (and not also a `source`: it would show twice).
    #[error("cannot read model file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("not a usable GGUF model: {0}")]
    Corrupt(String),
    /// The file's header, metadata or tensor table is malformed ([`gguf_check`]).
    #[error("model file {} is not a valid GGUF: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The device asked for cannot run the model (no CUDA in this build, no driver, no GPU).
    #[error("{0}")]
    Device(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("cancelled")]
    Cancelled,
    #[error("model fetch failed: {0}")]
    Fetch(String),
    /// An inference server's failure (`--backend`), on one line.
    #[error("{0}")]
    Server(String),
    #[error("adapter {0}")]
    Adapter(String),
    /// A training data file that cannot be read or holds something else than pairs.
    #[error("training data {0}")]
    TrainingData(String),
}

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Generation(e.to_string())
    }
}
